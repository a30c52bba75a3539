//! `nvnet train` and `nvnet export`: flags and files around the library's training loop.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};
use nvnet::train::{self, EpochRow, Reporter, RunContext, RunDir, StepLosses, TrainConfig};
use nvnet::weights;

use crate::preview::Canvas;

/// The progress bar and the files redrawn every epoch.
struct CliReporter {
    bar: ProgressBar,
    run_dir: PathBuf,
    last: Option<StepLosses>,
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
        self.last = Some(*l);
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

pub fn run<B: AutodiffBackend>(
    devices: &[B::Device],
    limits: Option<nvnet::gpu::GpuLimits>,
    transfer: nvnet::parallel::Transfer,
    config: TrainConfig,
    out: &Path,
    notes: String,
    gpu: bool,
) -> Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
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
        nvnet::fsutil::write_atomic(&dir.config(), text.as_bytes())
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
        last: None,
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
    let now = crate::now_rfc3339;
    let ctx = RunContext {
        dir,
        now: &now,
        commit: commit(),
        notes,
    };
    let state = train::run::<B>(&config, &ctx, devices, transfer, &mut reporter)
        .map_err(anyhow::Error::msg)?;
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

/// The effective configuration: defaults < --config file < --resume's config.toml < flags.
pub fn load_config(path: &Path) -> Result<TrainConfig> {
    let bytes = nvnet::fsutil::read_regular(path, 1 << 20)
        .with_context(|| format!("{}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", path.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("{}: not a valid training configuration", path.display()))
}

/// `nvnet export`: the weights for the page, optionally as float16, manifest kept.
pub fn export(
    from: &Path,
    out: &Path,
    half: bool,
    postprocessing: Option<nvnet::postprocess::Postprocessing>,
) -> Result<()> {
    let mut inputs = nvnet::fsutil::Inputs::default();
    inputs.add(from);
    inputs
        .check_output(out)
        .with_context(|| format!("--out {}", out.display()))?;
    let loaded = weights::load_file::<nvnet::backend::Cpu>(from, None, &Default::default())?;
    let mut manifest = loaded.manifest.clone();
    if manifest.provenance.source == "imported" {
        bail!(
            "{}: import it first (`nvnet import`), then export",
            from.display()
        );
    }
    manifest.half = half;
    // The source's recorded rules stay unless others are given.
    if let Some(p) = postprocessing {
        manifest.postprocessing = p;
    }
    // The VAE branch is for training only: the page needs the segmentation path.
    manifest.config.vae = None;
    let model = loaded.model.without_vae();
    weights::save(&model, &manifest, out)?;
    let size = std::fs::metadata(out)?.len();
    println!(
        "wrote {} ({:.2} MB{}; post-processing: {})",
        out.display(),
        size as f64 / 1e6,
        if half { ", float16" } else { "" },
        manifest.postprocessing.flags()
    );
    Ok(())
}

/// curves.png: loss terms (left) and validation Dice (right) against epochs.
pub fn draw_curves(path: &Path, history: &[EpochRow]) -> Result<()> {
    let (w, h) = (900usize, 360usize);
    let mut c = Canvas::new(w, h, [255, 255, 255]);
    let panels = [(10usize, 440usize), (460, 890)];
    let series_loss: Vec<(&str, [u8; 3], Vec<Option<f64>>)> = vec![
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
    let series_dice: Vec<(&str, [u8; 3], Vec<Option<f64>>)> = vec![
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
