//! `nvnet`: the command-line tool for trainers — inspect, import, benchmark (and, as the project
//! grows, predict, evaluate, train, export). A thin layer over the `nvnet` library.

mod device;
mod evaluate;
mod predict;
mod preview;
mod train_cmd;
mod volumes;

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
    /// Where tensors live: cpu (Burn's flex backend; the default), wgpu (Vulkan/Metal/DX12) or
    /// cuda.
    #[arg(long, global = true)]
    device: Option<DeviceKind>,
    /// With --device wgpu: open the GPU with at most these buffer limits, BINDING,BUFFER
    /// (e.g. 128M,256M: WebGPU's defaults); inference windows are sized to fit them.
    #[arg(long, global = true, value_parser = device::parse_gpu_limits)]
    gpu_limits: Option<nvnet::gpu::GpuLimits>,
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
    /// Segment cases: z-score, crop to the brain, sliding window, sigmoid, test-time flips,
    /// BraTS labels on the input's grid (`DIR/<ID>.nii.gz`).
    Predict {
        /// nvnet weights (.bpk), a MONAI checkpoint (.pt/.safetensors), or `default` (the
        /// embedded model). Several: an ensemble (mean of the probabilities).
        #[arg(long, required = true)]
        weights: Vec<String>,
        /// A case folder, a dataset root of case folders, or loose files (repeat --input).
        #[arg(long)]
        input: Vec<PathBuf>,
        #[arg(long)]
        t1: Option<PathBuf>,
        #[arg(long)]
        t1ce: Option<PathBuf>,
        #[arg(long)]
        t2: Option<PathBuf>,
        #[arg(long)]
        flair: Option<PathBuf>,
        /// Where to write `<ID>.nii.gz` (and the optional maps).
        #[arg(long)]
        output: PathBuf,
        /// The channel order of a MONAI checkpoint.
        #[arg(long)]
        modalities: Option<String>,
        /// Window D,H,W (default: the whole cropped brain when it fits --memory-budget).
        #[arg(long, value_parser = parse_shape)]
        roi: Option<[usize; 3]>,
        #[arg(long, default_value_t = 0.5)]
        overlap: f64,
        /// gaussian or constant.
        #[arg(long, default_value = "gaussian")]
        blend: nvnet::inference::Blend,
        /// Turn the 8 test-time flips off.
        #[arg(long)]
        no_tta: bool,
        /// Label values: brats2018 (ET = 4) or brats2023 (ET = 3); default: the model's.
        #[arg(long)]
        labels: Option<nvnet::LabelConvention>,
        /// Relabel ET as necrosis (1) when it has fewer voxels than this (default: the model's).
        #[arg(long)]
        min_et_voxels: Option<usize>,
        /// Remove whole-tumour islands: connected components without tumour core (default: the
        /// model's).
        #[arg(long)]
        remove_islands: bool,
        /// Ignore the post-processing recorded in the model's manifest (flags given still apply).
        #[arg(long)]
        no_postprocess: bool,
        /// Also write `<ID>_prob.nii.gz` (float32, 4-D: TC, WT, ET).
        #[arg(long)]
        save_probabilities: bool,
        /// Also write `<ID>_uncertainty.nii.gz` (variance over the test-time flips).
        #[arg(long)]
        save_uncertainty: bool,
        /// Device memory a window may use, e.g. 4G (default: cpu 6G, wgpu 2G, cuda 8G).
        #[arg(long, value_parser = predict::parse_bytes)]
        memory_budget: Option<u64>,
        /// Show the window size and its memory estimate.
        #[arg(long)]
        verbose: bool,
    },
    /// BraTS metrics (Dice, HD95, sensitivity, specificity for WT, TC, ET) of predictions
    /// `<ID>.nii.gz` against `<ID>_seg.nii.gz` / `<ID>-seg.nii.gz`.
    Evaluate {
        #[arg(long)]
        pred: PathBuf,
        #[arg(long)]
        gt: PathBuf,
        /// Label values (default: read from the ground truth).
        #[arg(long)]
        labels: Option<nvnet::LabelConvention>,
        /// Per-case CSV.
        #[arg(long)]
        out: Option<PathBuf>,
        /// On validation predictions made with `--no-postprocess`: the mean Dice of each
        /// post-processing candidate, and the set to record with `nvnet export`.
        #[arg(long)]
        choose_postprocessing: bool,
    },
    /// Train with the paper's recipe (every setting a flag; --config run.toml for the set).
    Train(Box<TrainArgs>),
    /// Write weights for the page: the segmentation path only, optionally as float16.
    Export {
        /// A weights file from training (RUN_DIR/best.bpk or last.bpk).
        from: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Store float16 (half the download); read back as float32.
        #[arg(long)]
        half: bool,
        /// Record post-processing in the manifest (as chosen by `nvnet evaluate
        /// --choose-postprocessing`): remove whole-tumour islands. Without any post-processing
        /// flag the export keeps the rules recorded in FROM.
        #[arg(long)]
        remove_islands: bool,
        /// Record post-processing in the manifest: the small-ET threshold.
        #[arg(long)]
        min_et_voxels: Option<usize>,
        /// Record no post-processing (FROM's rules are dropped).
        #[arg(long, conflicts_with_all = ["remove_islands", "min_et_voxels"])]
        no_postprocess: bool,
    },
    /// Write synthetic BraTS-like cases (skull-stripped T1, T1ce, T2, FLAIR and labels).
    Synth {
        /// The dataset root to write case folders into.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 3)]
        cases: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Grid size i,j,k.
        #[arg(long, default_value = "240,240,155", value_parser = parse_shape)]
        shape: [usize; 3],
        /// File naming and labels: brats2018 (`_t1ce`, ET = 4) or brats2023 (`-t1c`, ET = 3).
        #[arg(long, default_value = "brats2018", value_parser = parse_layout)]
        layout: nvnet::case::Layout,
        /// Index of the first case (case i is the same whatever the number made).
        #[arg(long, default_value_t = 0)]
        first: usize,
        /// Keep only a window of this many voxels around the tumour (a small full-resolution case).
        #[arg(long, value_parser = parse_shape)]
        window: Option<[usize; 3]>,
        /// Also draw axial slices of the first two cases into this PNG.
        #[arg(long)]
        preview: Option<PathBuf>,
    },
    /// Load a NIfTI file, a case folder or a dataset root exactly as nvnet would, and report;
    /// exits 0 only when nvnet accepts it.
    Inspect {
        path: PathBuf,
        /// Print JSON (shape, spacing, affine, dtype, min, max; for a case also its modalities,
        /// labels and regions).
        #[arg(long)]
        json: bool,
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
    let shape = match parts.as_slice() {
        [d, h, w] if *d > 0 && *h > 0 && *w > 0 => [*d, *h, *w],
        _ => {
            return Err(format!(
                "'{text}' is not a shape of three positive sizes like 160,192,128"
            ));
        }
    };
    // The volumes nvnet reads are capped; no shape here needs more (and sizes this large would
    // fail in the allocator, not with a message).
    let voxels = shape.iter().try_fold(1u64, |n, &s| n.checked_mul(s as u64));
    match voxels {
        Some(v) if v <= nvnet::nifti::MAX_VOXELS => Ok(shape),
        _ => Err(format!(
            "{text}: more than the {} voxels nvnet handles",
            nvnet::nifti::MAX_VOXELS
        )),
    }
}

#[derive(clap::Args)]
struct TrainArgs {
    /// The dataset root (case folders, BraTS 2018 or 2023 layout).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The run folder (config.toml, split.json, metrics.csv, curves.png, last.bpk, best.bpk).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this folder from its last checkpoint.
    #[arg(long, conflicts_with_all = ["data", "out", "config"])]
    resume: Option<PathBuf>,
    /// A TOML file with the whole configuration (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the effective configuration and stop.
    #[arg(long)]
    print_config: bool,
    /// A separate validation root (default: a held-out split of --data).
    #[arg(long)]
    val: Option<PathBuf>,
    /// Where preprocessed cases are cached (default: DATA/.nvnet-cache).
    #[arg(long)]
    cache: Option<PathBuf>,
    #[arg(long)]
    init_filters: Option<usize>,
    /// Train without the VAE branch.
    #[arg(long)]
    no_vae: bool,
    #[arg(long, value_parser = parse_shape)]
    crop: Option<[usize; 3]>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    weight_decay: Option<f64>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    dropout: Option<f64>,
    /// Turn the paper's augmentation off.
    #[arg(long)]
    no_augment: bool,
    /// The segmentation loss: dice (the paper) or dice-bce (Dice + per-voxel cross-entropy).
    #[arg(long)]
    loss: Option<nvnet::loss::SegLoss>,
    /// Dice smoothing (MONAI's smooth_nr = smooth_dr); 0 = the paper's (0 and 1e-5).
    #[arg(long)]
    dice_smooth: Option<f64>,
    /// Fraction of crops centred on tumour (0 = the paper's uniform crops).
    #[arg(long)]
    foreground_fraction: Option<f64>,
    /// Samples per epoch (default: each training case once).
    #[arg(long)]
    samples_per_epoch: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    val_fraction: Option<f64>,
    #[arg(long)]
    val_every: Option<usize>,
    /// The validation window (default: each case's whole brain box).
    #[arg(long, value_parser = parse_shape)]
    val_roi: Option<[usize; 3]>,
    /// The input channel order.
    #[arg(long)]
    modalities: Option<String>,
    /// f32, or f16 / bf16 on CUDA.
    #[arg(long, default_value = "f32")]
    precision: device::Precision,
    /// Several GPUs of one backend, e.g. cuda:0,cuda:1 (wgpu:0,wgpu:1): each step's batch is
    /// split across them (--batch-size at least the number of devices); the first holds the
    /// model, the optimizer and validation.
    #[arg(long)]
    devices: Option<String>,
    /// Provenance text for the weights' manifest (e.g. "synthetic phantoms").
    #[arg(long, default_value = "")]
    notes: String,
}

/// The run's effective configuration (a config file, then the flags over it) and its folder,
/// which `--print-config` does not need.
fn train_config(a: &TrainArgs) -> Result<(nvnet::train::TrainConfig, Option<PathBuf>)> {
    if let Some(dir) = &a.resume {
        let path = dir.join("config.toml");
        let config = train_cmd::load_config(&path)?;
        // Every run's config.toml names its data: an empty one was damaged, not left out.
        if config.data.as_os_str().is_empty() {
            bail!(
                "{}: names no training data (empty or damaged); this is the configuration \
                 --resume continues",
                path.display()
            );
        }
        return Ok((config, Some(dir.clone())));
    }
    let mut c = match &a.config {
        Some(p) => train_cmd::load_config(p)?,
        None => nvnet::train::TrainConfig::default(),
    };
    if let Some(v) = &a.data {
        c.data = v.clone();
    }
    if let Some(v) = &a.val {
        c.val = Some(v.clone());
    }
    if let Some(v) = &a.cache {
        c.cache = Some(v.clone());
    }
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = a.$f { c.$f = v; } )* };
    }
    set!(
        init_filters,
        crop,
        batch_size,
        lr,
        weight_decay,
        epochs,
        dropout,
        foreground_fraction,
        loss,
        dice_smooth,
        samples_per_epoch,
        seed,
        val_fraction,
        val_every
    );
    if a.val_roi.is_some() {
        c.val_roi = a.val_roi;
    }
    if a.no_vae {
        c.vae = false;
    }
    if a.no_augment {
        c.augment = false;
    }
    if let Some(m) = &a.modalities {
        c.modalities = Modality::parse_list(m).map_err(anyhow::Error::msg)?;
    }
    Ok((c, a.out.clone()))
}

fn parse_layout(text: &str) -> Result<nvnet::case::Layout, String> {
    use nvnet::case::Layout;
    match text.to_ascii_lowercase().as_str() {
        "brats2018" | "brats2019" | "brats2020" | "brats2021" => Ok(Layout::Brats2018),
        "brats2023" | "brats2024" => Ok(Layout::Brats2023),
        other => Err(format!(
            "unknown layout '{other}' (expected brats2018 or brats2023)"
        )),
    }
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, which turns a reader that stops early (`| head`) into a panic at
    // the next println; the default ends the process quietly. Outputs are written atomically,
    // so an ended run leaves no half-written file.
    #[cfg(unix)]
    // SAFETY: at the start of main, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(0) => ExitCode::SUCCESS,
        // The number of cases that failed.
        Ok(failed) => ExitCode::from(failed.min(255) as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Run a command; the number of cases that failed (0 for commands without cases).
fn run(cli: Cli) -> Result<usize> {
    let chosen_device = cli.device;
    let device = chosen_device.unwrap_or(DeviceKind::Cpu);
    #[cfg(feature = "cuda")]
    {
        let kind = match &cli.command {
            Command::Train(a) => a
                .devices
                .as_deref()
                .and_then(|list| device::parse_device_list(list).ok())
                .map_or(device, |(kind, _)| kind),
            _ => device,
        };
        if kind == DeviceKind::Cuda {
            device::keep_compiled_kernels();
        }
    }
    let cap = cli.gpu_limits;
    match cli.command {
        Command::Predict {
            weights,
            input,
            t1,
            t1ce,
            t2,
            flair,
            output,
            modalities,
            roi,
            overlap,
            blend,
            no_tta,
            labels,
            min_et_voxels,
            remove_islands,
            no_postprocess,
            save_probabilities,
            save_uncertainty,
            memory_budget,
            verbose,
        } => {
            if !(0.0..1.0).contains(&overlap) {
                bail!("--overlap must be in [0, 1)");
            }
            let given = [
                (Modality::T1, t1),
                (Modality::T1ce, t1ce),
                (Modality::T2, t2),
                (Modality::Flair, flair),
            ]
            .into_iter()
            .filter_map(|(m, p)| p.map(|p| (m, p)))
            .collect();
            let modalities = modalities
                .map(|m| Modality::parse_list(&m).map_err(anyhow::Error::msg))
                .transpose()
                .context("--modalities")?;
            let args = predict::PredictArgs {
                weights,
                inputs: input,
                given,
                output,
                modalities,
                options: nvnet::inference::InferenceOptions {
                    roi,
                    overlap,
                    blend,
                    tta: !no_tta,
                    labels: labels.unwrap_or_default(),
                    postprocessing: nvnet::postprocess::Postprocessing {
                        remove_islands,
                        min_et_voxels,
                    },
                    memory_budget: cpu_memory_cap(
                        device,
                        memory_budget.unwrap_or(match device {
                            DeviceKind::Cpu => 6 << 30,
                            DeviceKind::Wgpu => 2 << 30,
                            DeviceKind::Cuda => 8 << 30,
                        }),
                    ),
                    // Set from the opened device's limits (wgpu).
                    max_buffer: None,
                },
                labels_given: labels.is_some(),
                postprocess_from_model: !no_postprocess,
                save_probabilities,
                save_uncertainty,
                verbose,
            };
            device::with_backend!(device, cap, |B, dev, limits| predict::run::<B>(
                &dev, limits, args
            ))
        }
        Command::Train(args) => {
            let (config, out) = train_config(&args)?;
            if args.print_config {
                print!("{}", toml::to_string_pretty(&config)?);
                return Ok(0);
            }
            if config.data.as_os_str().is_empty() {
                bail!("--data ROOT is required (or a --config that sets data)");
            }
            let out = out.context("--out RUN_DIR is required")?;
            // --devices names the backend too; a different --device is a contradiction.
            let (device, specs) = match &args.devices {
                None => (device, None),
                Some(list) => {
                    let (kind, specs) =
                        device::parse_device_list(list).map_err(anyhow::Error::msg)?;
                    if let Some(d) = chosen_device.filter(|d| *d != kind) {
                        bail!("--device {d} and --devices {list} name different backends");
                    }
                    // Refused here, before the run folder is made.
                    for (i, spec) in specs.iter().enumerate() {
                        if specs[..i].contains(spec) {
                            bail!("--devices {list}: {kind}:{spec} is listed twice");
                        }
                    }
                    if let Err(e) = config.check_devices(specs.len()) {
                        let resume = if args.resume.is_some() {
                            "; a resumed run keeps its batch size"
                        } else {
                            ""
                        };
                        bail!("--devices {list}: {e}{resume}");
                    }
                    (kind, Some(specs))
                }
            };
            config.validate().map_err(anyhow::Error::msg)?;
            let notes = args.notes.clone();
            device::with_train_backend!(device, args.precision, |B| {
                let (devices, limits) =
                    device::training_devices::<burn::tensor::Device<B>>(specs.as_deref(), cap)
                        .map_err(anyhow::Error::msg)?;
                let transfer =
                    device::transfer(device, devices.len()).map_err(anyhow::Error::msg)?;
                train_cmd::run::<B>(
                    &devices,
                    limits,
                    transfer,
                    config,
                    &out,
                    notes,
                    device != DeviceKind::Cpu,
                )
            })
            .map(|()| 0)
        }
        Command::Export {
            from,
            out,
            half,
            remove_islands,
            min_et_voxels,
            no_postprocess,
        } => train_cmd::export(
            &from,
            &out,
            half,
            (no_postprocess || remove_islands || min_et_voxels.is_some()).then_some(
                nvnet::postprocess::Postprocessing {
                    remove_islands,
                    min_et_voxels,
                },
            ),
        )
        .map(|()| 0),
        Command::Evaluate {
            pred,
            gt,
            labels,
            out,
            choose_postprocessing,
        } => {
            if choose_postprocessing {
                evaluate::choose_postprocessing(&pred, &gt, labels)
            } else {
                evaluate::run(&pred, &gt, labels, out.as_deref())
            }
        }
        Command::Synth {
            out,
            cases,
            seed,
            shape,
            layout,
            first,
            window,
            preview,
        } => volumes::synth(
            &out,
            cases,
            seed,
            shape,
            layout,
            first,
            window,
            preview.as_deref(),
        )
        .map(|()| 0),
        Command::Inspect { path, json } => {
            if volumes::inspect(&path, json)? {
                Ok(0)
            } else {
                bail!("some cases under {} were refused", path.display())
            }
        }
        Command::Info {
            init_filters,
            vae,
            shape,
            weights,
        } => info(init_filters, vae, shape, weights).map(|()| 0),
        Command::Import {
            from,
            out,
            modalities,
            name,
        } => import(&from, &out, &modalities, name).map(|()| 0),
        Command::Bench {
            init_filters,
            shape,
            runs,
        } => {
            let available = (device == DeviceKind::Cpu)
                .then(nvnet::info::available_memory)
                .flatten();
            device::with_backend!(device, cap, |B, dev, limits| bench::<B>(
                &dev,
                limits,
                init_filters,
                shape,
                runs,
                available
            ))
            .map(|()| 0)
        }
    }
}

/// On the CPU a window's memory comes out of the machine's RAM: a budget above what is available
/// (`--memory-budget 1T`) would let a window through that the allocator then aborts on.
fn cpu_memory_cap(device: DeviceKind, budget: u64) -> u64 {
    match (device, nvnet::info::available_memory()) {
        (DeviceKind::Cpu, Some(available)) if budget > available => {
            eprintln!(
                "note: --memory-budget {:.1} GiB is more than the {:.1} GiB of memory available; \
                 using {:.1} GiB",
                gib(budget),
                gib(available),
                gib(available)
            );
            available
        }
        _ => budget,
    }
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

pub(crate) fn now_rfc3339() -> String {
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
    limits: Option<nvnet::gpu::GpuLimits>,
    init_filters: usize,
    shape: [usize; 3],
    runs: usize,
    available_memory: Option<u64>,
) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1 (the median of the timed runs is reported)");
    }
    let config = NvNetConfig::default().with_init_filters(init_filters);
    config.validate()?;
    let m = config.size_multiple();
    let shape = shape.map(|s| s.div_ceil(m) * m);
    let needs = nvnet::info::summarize(&config, shape).inference_bytes;
    if let Some(available) = available_memory
        && needs > available as f64
    {
        bail!(
            "--shape {}×{}×{} at F={init_filters} needs about {:.1} GiB for a forward pass, more \
             than the {:.1} GiB of memory available",
            shape[0],
            shape[1],
            shape[2],
            needs / (1u64 << 30) as f64,
            gib(available)
        );
    }
    if let Some(limits) = limits {
        nvnet::inference::check_buffer(
            &config,
            shape,
            Some(limits.max_tensor()),
            ("--shape", "choose a smaller --shape"),
        )
        .map_err(anyhow::Error::msg)?;
    }
    let model = config.init::<B>(device)?;
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
