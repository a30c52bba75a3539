//! `nvnet`: the command-line tool for trainers — inspect, import, benchmark (and, as the project
//! grows, predict, evaluate, train, export). A thin layer over the `nvnet` library.

mod device;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use clap::{Parser, Subcommand};
use nvnet::weights::{self, Manifest, Provenance};
use nvnet::{Modality, NvNetConfig};

use device::DeviceKind;

#[derive(Parser)]
#[command(
    name = "nvnet",
    version,
    about = "NvNet 3-D brain tumour segmentation (Myronenko, BraTS 2018) on Burn"
)]
struct Cli {
    /// Where tensors live: cpu (Burn's flex backend), wgpu (Vulkan/Metal/DX12) or cuda.
    #[arg(long, global = true, default_value = "cpu")]
    device: DeviceKind,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Architecture summary: parameters, forward GFLOP and activation memory at a shape.
    Info {
        /// Init filters F (channels at full resolution).
        #[arg(long, default_value_t = 32)]
        init_filters: usize,
        /// Include the VAE branch (its crop is --shape).
        #[arg(long)]
        vae: bool,
        /// Input shape D,H,W.
        #[arg(long, default_value = "160,192,128", value_parser = parse_shape)]
        shape: [usize; 3],
        /// Describe the network of this weights file instead (nvnet .bpk or MONAI .pt/.safetensors).
        #[arg(long)]
        weights: Option<PathBuf>,
    },
    /// Convert a MONAI SegResNet/SegResNetVAE checkpoint (.pt or .safetensors) into an nvnet
    /// weights file with its manifest.
    Import {
        /// The checkpoint.
        from: PathBuf,
        /// The nvnet weights file to write (.bpk).
        #[arg(long)]
        out: PathBuf,
        /// The modality of each input channel, in order.
        #[arg(long, default_value = "t1,t1ce,t2,flair")]
        modalities: String,
        /// A name for the model (default: the checkpoint's file name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Time forward passes of a network on the chosen device.
    Bench {
        #[arg(long, default_value_t = 16)]
        init_filters: usize,
        #[arg(long, default_value = "128,128,128", value_parser = parse_shape)]
        shape: [usize; 3],
        /// Timed runs after one warm-up run.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
}

fn parse_shape(text: &str) -> Result<[usize; 3], String> {
    let parts: Vec<usize> = text
        .split([',', 'x', '×'])
        .map(|p| {
            p.trim()
                .parse::<usize>()
                .map_err(|_| format!("'{text}' is not a shape like 160,192,128"))
        })
        .collect::<Result<_, _>>()?;
    match parts.as_slice() {
        [d, h, w] if *d > 0 && *h > 0 && *w > 0 => Ok([*d, *h, *w]),
        _ => Err(format!(
            "'{text}' is not a shape of three positive sizes like 160,192,128"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info {
            init_filters,
            vae,
            shape,
            weights,
        } => info(init_filters, vae, shape, weights),
        Command::Import {
            from,
            out,
            modalities,
            name,
        } => import(&from, &out, &modalities, name),
        Command::Bench {
            init_filters,
            shape,
            runs,
        } => {
            device::with_backend!(cli.device, |B, dev| bench::<B>(
                &dev,
                init_filters,
                shape,
                runs
            ))
        }
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn info(
    init_filters: usize,
    vae: bool,
    shape: [usize; 3],
    weights_file: Option<PathBuf>,
) -> Result<()> {
    let config = match &weights_file {
        Some(path) => {
            let loaded =
                weights::load_file::<nvnet::backend::Cpu>(path, None, &Default::default())?;
            print_manifest(&loaded.manifest);
            loaded.manifest.config
        }
        None => {
            let m = 2 * NvNetConfig::default().size_multiple();
            NvNetConfig::default()
                .with_init_filters(init_filters)
                .with_vae(vae.then(|| shape.map(|s| s.div_ceil(m) * m)))
        }
    };
    config.validate()?;
    let s = nvnet::info::summarize(&config, shape);
    let rounded = shape.map(|v| v.div_ceil(config.size_multiple()) * config.size_multiple());
    println!(
        "NvNet F={} blocks_down={:?} blocks_up={:?} GroupNorm({}) in={} out={}{}",
        config.init_filters,
        config.blocks_down,
        config.blocks_up,
        config.norm_groups,
        config.in_channels,
        config.out_channels,
        match &config.vae {
            Some(v) => format!(" + VAE (crop {:?})", v.input_shape),
            None => String::new(),
        }
    );
    println!(
        "input {}×{}×{} (padded to a multiple of {}: {rounded:?})",
        shape[0],
        shape[1],
        shape[2],
        config.size_multiple()
    );
    println!();
    println!(
        "{:<24} {:>8} {:>16} {:>12} {:>10}",
        "stage", "channels", "shape", "params", "GFLOP"
    );
    for st in &s.stages {
        println!(
            "{:<24} {:>8} {:>16} {:>12} {:>10.2}",
            st.name,
            st.channels,
            format!("{}×{}×{}", st.shape[0], st.shape[1], st.shape[2]),
            st.params,
            st.flop / 1e9
        );
    }
    println!();
    println!("parameters:                 {}", group_digits(s.params));
    println!("forward, segmentation:      {:.1} GFLOP", s.seg_flop / 1e9);
    if config.vae.is_some() {
        println!("forward, VAE branch:        {:.1} GFLOP", s.vae_flop / 1e9);
    }
    println!(
        "activations, inference:     {:.2} GiB (f32, estimated peak)",
        s.inference_bytes / (1u64 << 30) as f64
    );
    println!(
        "activations, training step: {:.2} GiB (f32, kept for backward, estimated)",
        s.training_bytes / (1u64 << 30) as f64
    );
    Ok(())
}

fn group_digits(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print_manifest(m: &Manifest) {
    println!("model:      {}", m.name);
    println!(
        "inputs:     {}",
        m.modalities
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "outputs:    {}",
        m.outputs
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("labels:     {:?} (ET = {})", m.labels, m.labels.et_label());
    println!(
        "provenance: {} from {} ({})",
        m.provenance.source, m.provenance.from, m.provenance.created
    );
    if !m.provenance.notes.is_empty() {
        println!("notes:      {}", m.provenance.notes);
    }
}

fn import(from: &PathBuf, out: &PathBuf, modalities: &str, name: Option<String>) -> Result<()> {
    let modalities = Modality::parse_list(modalities)
        .map_err(anyhow::Error::msg)
        .context("--modalities")?;
    let mut loaded =
        weights::load_file::<nvnet::backend::Cpu>(from, Some(&modalities), &Default::default())?;
    if loaded.manifest.provenance.source != "imported" {
        bail!(
            "{} is already an nvnet weights file; nothing to import",
            from.display()
        );
    }
    for notice in &loaded.notices {
        eprintln!("note: {notice}");
    }
    let manifest: &mut Manifest = &mut loaded.manifest;
    manifest.provenance = Provenance {
        created: now_rfc3339(),
        ..manifest.provenance.clone()
    };
    if let Some(name) = name {
        manifest.name = name;
    }
    manifest.validate().map_err(anyhow::Error::msg)?;
    let c = &manifest.config;
    println!(
        "inferred: SegResNet F={} in={} out={} blocks_down={:?} blocks_up={:?}, {} parameters",
        c.init_filters,
        c.in_channels,
        c.out_channels,
        c.blocks_down,
        c.blocks_up,
        group_digits(loaded.model.num_params())
    );
    println!(
        "inputs:   {}",
        manifest
            .modalities
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    weights::save(&loaded.model, manifest, out)?;
    println!("wrote {}", out.display());
    Ok(())
}

fn bench<B: Backend>(
    device: &B::Device,
    init_filters: usize,
    shape: [usize; 3],
    runs: usize,
) -> Result<()> {
    let config = NvNetConfig::default().with_init_filters(init_filters);
    let model = config.init::<B>(device)?;
    let m = config.size_multiple();
    let shape = shape.map(|s| s.div_ceil(m) * m);
    let input = Tensor::<B, 5>::random(
        [1, 4, shape[0], shape[1], shape[2]],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        device,
    );
    let flop = nvnet::info::summarize(&config, shape).seg_flop;
    let mut times = Vec::new();
    for run in 0..=runs {
        let start = Instant::now();
        let out = model.forward(input.clone());
        // Reading one value forces the queued work to finish.
        let _ = out.slice([0..1, 0..1, 0..1, 0..1, 0..1]).into_data();
        let t = start.elapsed().as_secs_f64();
        if run > 0 {
            times.push(t);
        }
        eprintln!(
            "run {run}{}: {t:.3} s",
            if run == 0 { " (warm-up)" } else { "" }
        );
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "forward F={init_filters} at {}×{}×{}: median {median:.3} s over {runs} runs ({:.1} GFLOP/s)",
        shape[0],
        shape[1],
        shape[2],
        flop / 1e9 / median
    );
    Ok(())
}
