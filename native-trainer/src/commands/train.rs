//! `nvnet train`: flags and files around the library's training loop.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};
use nvnet::Modality;
use nvnet::device::gpu::GpuLimits;
use nvnet::train::{
    self, ConfigError, EpochRow, Reporter, RunContext, RunDir, StepLosses, TrainConfig, TrainError,
};

use crate::device::{
    DeviceKind, Precision, parse_device_list, training_devices, transfer, with_train_backend,
};
use crate::preview::Canvas;
use crate::values::parse_shape;

#[derive(clap::Args)]
pub struct Args {
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
    loss: Option<nvnet::nn::loss::SegLoss>,
    /// Dice smoothing (MONAI's smooth_nr = smooth_dr); 0 = the paper's (0 and 1e-5).
    #[arg(long)]
    dice_smooth: Option<f64>,
    /// Per channel of each crop, the chance that it is blurred as a series with 2-6 mm slices
    /// resampled to 1 mm would be (0 = the paper's recipe).
    #[arg(long)]
    thick_slices: Option<f64>,
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
    precision: Precision,
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
fn train_config(a: &Args) -> Result<(nvnet::train::TrainConfig, Option<PathBuf>)> {
    if let Some(dir) = &a.resume {
        let path = dir.join("config.toml");
        let config = load_config(&path)?;
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
        Some(p) => load_config(p)?,
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
        thick_slices,
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

impl Args {
    /// The backend --devices names, if it names one.
    #[cfg(feature = "cuda")]
    pub fn devices_kind(&self) -> Option<DeviceKind> {
        let list = self.devices.as_deref()?;
        parse_device_list(list).ok().map(|(kind, _)| kind)
    }

    /// `chosen`: the --device given, if any; `device`: the one to use without --devices.
    pub fn run(
        self,
        chosen_device: Option<DeviceKind>,
        device: DeviceKind,
        cap: Option<GpuLimits>,
    ) -> Result<()> {
        let (config, out) = train_config(&self)?;
        if self.print_config {
            print!("{}", toml::to_string_pretty(&config)?);
            return Ok(());
        }
        if config.data.as_os_str().is_empty() {
            bail!("--data ROOT is required (or a --config that sets data)");
        }
        let out = out.context("--out RUN_DIR is required")?;
        // --devices names the backend too; a different --device is a contradiction.
        let (device, specs) = match &self.devices {
            None => (device, None),
            Some(list) => {
                let (kind, specs) = parse_device_list(list).map_err(anyhow::Error::msg)?;
                if let Some(d) = chosen_device.filter(|d| *d != kind) {
                    bail!("--device {d} and --devices {list} name different backends");
                }
                // Refused here, before the run folder is made.
                for (i, spec) in specs.iter().enumerate() {
                    if specs[..i].contains(spec) {
                        bail!("--devices {list}: {kind}:{spec} is listed twice");
                    }
                }
                if let Err(e) = config.check_devices(specs.len()).map_err(as_flag) {
                    let resume = if self.resume.is_some() {
                        "; a resumed run keeps its batch size"
                    } else {
                        ""
                    };
                    bail!("--devices {list}: {e}{resume}");
                }
                (kind, Some(specs))
            }
        };
        config.validate().map_err(as_flag)?;
        let notes = self.notes.clone();
        with_train_backend!(device, self.precision, |B| {
            let (devices, limits) =
                training_devices::<burn::tensor::Device<B>>(specs.as_deref(), cap)
                    .map_err(anyhow::Error::msg)?;
            let transfer = transfer(device, devices.len()).map_err(anyhow::Error::msg)?;
            run::<B>(
                &devices,
                limits,
                transfer,
                config,
                &out,
                notes,
                device != DeviceKind::Cpu,
            )
        })
    }
}

/// The progress bar and the files redrawn every epoch.
struct CliReporter {
    bar: ProgressBar,
    run_dir: PathBuf,
    epoch: usize,
    epochs: usize,
    steps: usize,
    started: Instant,
    /// Where stderr is no terminal (a log file, nohup, a batch job) the bar draws nothing:
    /// then a plain line every `PLAIN_EVERY`, and one after the first step.
    plain: Option<PlainLog>,
}

struct PlainLog {
    last_line: Instant,
    /// When the step now running began (the end of the previous one).
    step_started: Instant,
    steps_done: usize,
}

const PLAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

impl Reporter for CliReporter {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        self.epoch = epoch;
        self.epochs = epochs;
        self.steps = steps;
        if let Some(p) = &mut self.plain {
            p.step_started = Instant::now();
        }
        self.bar.reset();
        self.bar.set_length(steps as u64);
        self.bar.set_prefix(format!("epoch {}/{epochs}", epoch + 1));
    }

    fn step(&mut self, step: usize, l: &StepLosses) {
        let vae = match (l.l2, l.kl) {
            (Some(a), Some(b)) => format!(" l2 {a:.4} kl {b:.4}"),
            _ => String::new(),
        };
        self.bar
            .set_message(format!("loss {:.4} dice {:.4}{vae}", l.total, l.dice));
        self.bar.inc(1);
        if let Some(p) = &mut self.plain {
            let now = Instant::now();
            let took = now - p.step_started;
            p.step_started = now;
            p.steps_done += 1;
            if p.steps_done == 1 || now - p.last_line >= PLAIN_EVERY {
                p.last_line = now;
                eprintln!(
                    "epoch {}/{} step {}/{}  {:.2} s/step  {:.0} s in all  loss {:.4} dice {:.4}{vae}",
                    self.epoch + 1,
                    self.epochs,
                    step + 1,
                    self.steps,
                    took.as_secs_f64(),
                    self.started.elapsed().as_secs_f64(),
                    l.total,
                    l.dice
                );
            }
        }
    }

    fn validating(&mut self, done: usize, total: usize) {
        self.bar
            .set_message(format!("validating {}/{total}", done + 1));
    }

    fn epoch_end(&mut self, row: &EpochRow, history: &[EpochRow]) {
        let val = row
            .val_dice
            .map(|d| format!("  val Dice WT {:.3} TC {:.3} ET {:.3}", d[0], d[1], d[2]))
            .unwrap_or_default();
        let line = format!(
            "epoch {:>4}  {:>7.1} s  loss {:.4}  dice {:.4}{}  lr {:.2e}{val}",
            row.epoch,
            row.seconds,
            row.loss,
            row.dice_loss,
            match (row.l2_loss, row.kl_loss) {
                (Some(a), Some(b)) => format!("  l2 {a:.4}  kl {b:.4}"),
                _ => String::new(),
            },
            row.lr
        );
        self.bar.suspend(|| println!("{line}"));
        if let Err(e) = draw_curves(&self.run_dir.join("curves.png"), history) {
            self.bar.suspend(|| eprintln!("warning: curves.png: {e:#}"));
        }
    }

    fn message(&mut self, text: &str) {
        self.bar.suspend(|| eprintln!("{text}"));
    }
}

/// The commit of this source tree (set by build.rs from git; "unknown" outside a checkout).
fn commit() -> String {
    env!("NVNET_COMMIT").to_string()
}

fn run<B: AutodiffBackend>(
    devices: &[B::Device],
    limits: Option<nvnet::device::gpu::GpuLimits>,
    transfer: nvnet::train::parallel::Transfer,
    config: TrainConfig,
    out: &Path,
    notes: String,
    gpu: bool,
) -> Result<()> {
    config.validate().map_err(as_flag)?;
    // A wgpu device: the network and a crop within its largest buffer (its own or as lowered by
    // --gpu-limits), before anything is built there (its allocator panics otherwise).
    if let Some(limits) = limits {
        nvnet::inference::check_buffer(
            &config.model_config(),
            config.crop,
            Some(limits.max_tensor()),
            ("--crop", "choose a smaller --crop"),
        )
        .map_err(anyhow::Error::msg)?;
    }
    let dir = RunDir(out.to_path_buf());
    std::fs::create_dir_all(out).with_context(|| format!("{}", out.display()))?;
    if !dir.checkpoint().exists() {
        let text = toml::to_string_pretty(&config)?;
        nvnet::io::fsutil::write_atomic(&dir.config(), text.as_bytes())
            .with_context(|| format!("{}", dir.config().display()))?;
    }
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>14} [{bar:25}] {pos}/{len} {elapsed_precise} eta {eta_precise}  {msg}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    let plain = bar.is_hidden().then(|| PlainLog {
        last_line: Instant::now(),
        step_started: Instant::now(),
        steps_done: 0,
    });
    let mut reporter = CliReporter {
        bar,
        run_dir: out.to_path_buf(),
        epoch: 0,
        epochs: config.epochs,
        steps: 0,
        started: Instant::now(),
        plain,
    };
    if gpu {
        // Seen on an H200 with burn-cuda 0.21: no step finished within minutes while one CPU core
        // compiled kernels; say so rather than look hung.
        reporter.message(
            "note: on a GPU the first steps compile and autotune every kernel of the network (minutes \
             with CUDA; the autotuning choices are cached for later runs); the steps after that are fast",
        );
    }
    let now = crate::values::now_rfc3339;
    let ctx = RunContext {
        dir,
        now: &now,
        commit: commit(),
        notes,
    };
    let state =
        train::run::<B>(&config, &ctx, devices, transfer, &mut reporter).map_err(|e| match e {
            TrainError::Config(e) => as_flag(e),
            e @ TrainError::LossNotFinite { .. } => anyhow!("{e} (lower --lr?)"),
            e => e.into(),
        })?;
    reporter.bar.finish_and_clear();
    println!(
        "{} epoch(s) in {:.1} min; weights: {}{}",
        state.epochs_done,
        reporter.started.elapsed().as_secs_f64() / 60.0,
        ctx.dir.last().display(),
        match state.best_mean_dice {
            Some(d) => format!(
                ", best mean validation Dice {d:.4}: {}",
                ctx.dir.best().display()
            ),
            None => String::new(),
        }
    );
    Ok(())
}

/// A setting refused by the library, named by the flag that sets it.
fn as_flag(e: ConfigError) -> anyhow::Error {
    match e {
        ConfigError::Invalid { key, value, rule } => {
            anyhow!("--{} {value}: {rule}", key.replace('_', "-"))
        }
        e => e.into(),
    }
}

/// The effective configuration: defaults < --config file < --resume's config.toml < flags.
fn load_config(path: &Path) -> Result<TrainConfig> {
    let bytes = nvnet::io::fsutil::read_regular(path, 1 << 20)
        .with_context(|| format!("{}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", path.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("{}: not a valid training configuration", path.display()))
}

/// A curve: its name, colour and value per epoch (none where not measured).
type Series<'a> = (&'a str, [u8; 3], Vec<Option<f64>>);

/// curves.png: loss terms (left) and validation Dice (right) against epochs.
pub fn draw_curves(path: &Path, history: &[EpochRow]) -> Result<()> {
    let (w, h) = (900usize, 360usize);
    let mut c = Canvas::new(w, h, [255, 255, 255]);
    let panels = [(10usize, 440usize), (460, 890)];
    let series_loss: Vec<Series> = vec![
        (
            "LOSS",
            [0, 0, 0],
            history.iter().map(|r| Some(r.loss)).collect(),
        ),
        (
            "DICE",
            [200, 30, 30],
            history.iter().map(|r| Some(r.dice_loss)).collect(),
        ),
        (
            "L2",
            [30, 30, 200],
            history.iter().map(|r| r.l2_loss).collect(),
        ),
        (
            "KL",
            [30, 150, 30],
            history.iter().map(|r| r.kl_loss).collect(),
        ),
    ];
    let series_dice: Vec<Series> = vec![
        (
            "WT",
            [40, 170, 60],
            history.iter().map(|r| r.val_dice.map(|d| d[0])).collect(),
        ),
        (
            "TC",
            [210, 40, 40],
            history.iter().map(|r| r.val_dice.map(|d| d[1])).collect(),
        ),
        (
            "ET",
            [220, 170, 0],
            history.iter().map(|r| r.val_dice.map(|d| d[2])).collect(),
        ),
    ];
    for (p, (series, fixed)) in [(series_loss, None), (series_dice, Some((0.0, 1.0)))]
        .into_iter()
        .enumerate()
    {
        let (x0, x1) = panels[p];
        let (y0, y1) = (40usize, h - 30);
        let values: Vec<f64> = series
            .iter()
            .flat_map(|s| s.2.iter().flatten().copied())
            .collect();
        let (lo, hi) = fixed.unwrap_or_else(|| {
            let hi = values.iter().copied().fold(0.0, f64::max);
            (0.0, if hi > 0.0 { hi * 1.05 } else { 1.0 })
        });
        // Axes and a grid at quarters.
        for q in 0..=4 {
            let y = y1 - (y1 - y0) * q / 4;
            for x in x0..x1 {
                c.set(x, y, if q == 0 { [0, 0, 0] } else { [225, 225, 225] });
            }
            crate::preview::text(
                &mut c,
                x0 + 2,
                y - 9,
                &format!("{:.2}", lo + (hi - lo) * q as f64 / 4.0),
                [90, 90, 90],
            );
        }
        for y in y0..=y1 {
            c.set(x0, y, [0, 0, 0]);
        }
        let n = history.len().max(2);
        let px = |i: usize| x0 + (x1 - x0) * i / (n - 1).max(1);
        let py = |v: f64| {
            let t = ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
            y1 - ((y1 - y0) as f64 * t) as usize
        };
        let mut legend_x = x0 + 4;
        for (name, colour, vals) in &series {
            if vals.iter().all(|v| v.is_none()) {
                continue;
            }
            crate::preview::text(&mut c, legend_x, 12, name, *colour);
            legend_x += 8 * name.len() + 16;
            let pts: Vec<(usize, usize)> = vals
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (px(i), py(v))))
                .collect();
            for pair in pts.windows(2) {
                crate::preview::line(&mut c, pair[0], pair[1], *colour);
            }
            for &(x, y) in &pts {
                for dx in 0..3 {
                    for dy in 0..3 {
                        c.set(x + dx - 1, y + dy - 1, *colour);
                    }
                }
            }
        }
        crate::preview::text(
            &mut c,
            x1 - 120,
            h - 20,
            &format!("EPOCH 1-{}", history.len()),
            [90, 90, 90],
        );
    }
    c.save(path)
}
