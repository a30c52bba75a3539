//! `nvnet info`: the network's parameters, forward FLOP and activation memory at a shape, from
//! the library's analytic summary (or of a weights file's network).

use std::path::PathBuf;

use anyhow::Result;
use nvnet::NvNetConfig;
use nvnet::io::weights::{self, Manifest};

use crate::values::{group_digits, parse_shape};

#[derive(clap::Args)]
pub struct Args {
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
}

impl Args {
    pub fn run(self) -> Result<()> {
        let Args {
            init_filters,
            vae,
            shape,
            weights: weights_file,
        } = self;
        let config = match &weights_file {
            Some(path) => {
                let loaded = weights::load_file::<nvnet::device::backend::Cpu>(
                    path,
                    None,
                    &Default::default(),
                )?;
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
        let s = nvnet::nn::info::summarize(&config, shape);
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
