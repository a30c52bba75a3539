//! `nvnet predict`: segment cases with one model or an ensemble. The pipeline is the library's
//! (`nvnet::inference`); this file finds the cases, loads the weights, shows progress and writes.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use nvnet::data::labels::RegionCounts;
use nvnet::device::gpu::GpuLimits;
use nvnet::inference::{self, InferenceOptions};
use nvnet::io::nifti::{self, OutputData};
use nvnet::io::weights::{self, Manifest};
use nvnet::nn::precision::{Precision, supports_f16, with_precision};
use nvnet::prepare::{Prepared, When};
use nvnet::{Modality, NvNet};

use crate::device::{DeviceKind, with_backend};
use crate::sources::{ExamArgs, Source};
use crate::values::{gib, parse_bytes, parse_shape};

#[derive(clap::Args)]
pub struct Args {
    /// nvnet weights (.bpk), a MONAI checkpoint (.pt/.safetensors), or `default` (the
    /// embedded model). Several: an ensemble (mean of the probabilities).
    #[arg(long, required = true)]
    weights: Vec<String>,
    /// The cases: folders, files or DICOM exams.
    #[command(flatten)]
    exam: ExamArgs,
    /// When the four series are registered to the reference (--reference) and resampled onto one
    /// 1 mm grid: auto (when they are not on one grid already), always, or never (refuse series
    /// on several grids).
    #[arg(long, default_value = "auto")]
    prepare: When,
    /// Where the label map is written for a prepared case: native (the reference series' own
    /// grid) or prepared (the 1 mm grid it was segmented on).
    #[arg(long, default_value = "native", value_parser = ["native", "prepared"])]
    output_space: String,
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
    #[arg(long, value_parser = parse_bytes)]
    memory_budget: Option<u64>,
    /// The float type of the network on a GPU: f32, or f16 (weights and activations in float16,
    /// GroupNorm and the blending in float32; half the memory per window).
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Show the window size and its memory estimate.
    #[arg(long)]
    verbose: bool,
}

impl Args {
    pub fn run(self, device: DeviceKind, cap: Option<GpuLimits>) -> Result<usize> {
        let Args {
            weights,
            exam,
            prepare,
            output_space,
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
            precision,
            verbose,
        } = self;
        if precision == Precision::F16 && device == DeviceKind::Cpu {
            bail!(
                "--precision f16 is for GPUs (--device wgpu or cuda): on the CPU float16 is not faster"
            );
        }
        if !(0.0..1.0).contains(&overlap) {
            bail!("--overlap must be in [0, 1)");
        }
        let modalities = modalities
            .map(|m| Modality::parse_list(&m).map_err(anyhow::Error::msg))
            .transpose()
            .context("--modalities")?;
        let args = Request {
            weights,
            exam,
            prepare,
            native_output: output_space == "native",
            output,
            modalities,
            options: nvnet::inference::InferenceOptions {
                roi,
                overlap,
                blend,
                tta: !no_tta,
                labels: labels.unwrap_or_default(),
                postprocessing: nvnet::inference::postprocess::Postprocessing {
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
                precision,
            },
            labels_given: labels.is_some(),
            postprocess_from_model: !no_postprocess,
            save_probabilities,
            save_uncertainty,
            verbose,
        };
        with_backend!(device, cap, |B, dev, limits| run::<B>(&dev, limits, args))
    }
}

/// On the CPU a window's memory comes out of the machine's RAM: a budget above what is available
/// (`--memory-budget 1T`) would let a window through that the allocator then aborts on.
fn cpu_memory_cap(device: DeviceKind, budget: u64) -> u64 {
    match (device, nvnet::nn::info::available_memory()) {
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

/// Everything `nvnet predict` was asked, resolved.
struct Request {
    weights: Vec<String>,
    exam: ExamArgs,
    prepare: When,
    /// Write a prepared case's outputs on the reference series' own grid (else on the prepared grid).
    native_output: bool,
    output: PathBuf,
    modalities: Option<Vec<Modality>>,
    options: InferenceOptions,
    labels_given: bool,
    /// Add the manifest's post-processing to the flags'.
    postprocess_from_model: bool,
    save_probabilities: bool,
    save_uncertainty: bool,
    verbose: bool,
}

/// On a GPU opened with known limits (wgpu): an nvnet weights file whose network the device
/// cannot hold is refused before the model is built there. (A MONAI checkpoint's architecture
/// is known only once imported: the window check refuses it, after the device has complained.)
fn check_device_holds(args: &Request, limits: Option<nvnet::device::gpu::GpuLimits>) -> Result<()> {
    let Some(limits) = limits else {
        return Ok(());
    };
    for w in &args.weights {
        let manifest = if w == "default" {
            match weights::default_model() {
                Some(bytes) => Some(weights::read_manifest(bytes, "the embedded default model")?),
                None => None,
            }
        } else {
            weights::read_file_manifest(Path::new(w))?
        };
        if let Some(m) = manifest {
            nvnet::inference::check_weights_fit(&m.config, limits.max_tensor())
                .map_err(|e| anyhow::anyhow!("--weights {w}: {e}"))?;
        }
    }
    Ok(())
}

/// Load every --weights; they must agree on inputs and outputs to be averaged.
fn load_models<B: Backend>(
    args: &Request,
    device: &B::Device,
) -> Result<(Vec<NvNet<B>>, Manifest)> {
    let mut models = Vec::new();
    let mut first: Option<Manifest> = None;
    for w in &args.weights {
        let loaded = if w == "default" {
            match weights::default_model() {
                Some(bytes) => {
                    weights::load_bytes::<B>(bytes, "the embedded default model", device)?
                }
                None => bail!("--weights default: this nvnet has no embedded default model"),
            }
        } else {
            weights::load_file::<B>(Path::new(w), args.modalities.as_deref(), device)?
        };
        for notice in &loaded.notices {
            eprintln!("note: {notice}");
        }
        if let Some(f) = &first {
            if f.modalities != loaded.manifest.modalities || f.outputs != loaded.manifest.outputs {
                bail!(
                    "{w}: its inputs {:?} / outputs {:?} differ from the first model's {:?} / {:?}; an ensemble needs the same",
                    loaded.manifest.modalities,
                    loaded.manifest.outputs,
                    f.modalities,
                    f.outputs
                );
            }
        } else {
            first = Some(loaded.manifest.clone());
        }
        models.push(loaded.model);
    }
    Ok((models, first.context("no --weights given")?))
}

/// Run; returns how many cases failed.
fn run<B: Backend>(
    device: &B::Device,
    limits: Option<nvnet::device::gpu::GpuLimits>,
    mut args: Request,
) -> Result<usize> {
    let (cases, refused) = args.exam.collect()?;
    check_device_holds(&args, limits)?;
    let (models, manifest) = load_models::<B>(&args, device)?;
    let precision = args.options.precision;
    if precision == Precision::F16 && !supports_f16::<B>(device) {
        bail!(
            "--precision f16: this device does not compute in float16 (its adapter lacks the shader-f16 feature); use --precision f32"
        );
    }
    let models: Vec<_> = models
        .into_iter()
        .map(|m| with_precision(m, precision))
        .collect();
    if let Some(limits) = limits {
        args.options.max_buffer = Some(limits.max_tensor());
    }
    if !args.labels_given {
        args.options.labels = manifest.labels;
    }
    if args.postprocess_from_model {
        let (given, model) = (&mut args.options.postprocessing, manifest.postprocessing);
        given.remove_islands |= model.remove_islands;
        given.min_et_voxels = given.min_et_voxels.or(model.min_et_voxels);
    }
    eprintln!("post-processing: {}", args.options.postprocessing.flags());
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("{}: cannot create the output folder", args.output.display()))?;
    let _lock = nvnet::io::fsutil::FolderLock::take(&args.output)
        .with_context(|| format!("{}", args.output.display()))?;
    nvnet::io::fsutil::remove_stale_temps(&args.output);
    // Every file this run reads: no output may replace one (by any name or link).
    let mut inputs = nvnet::io::fsutil::Inputs::default();
    for source in &cases {
        for path in source.paths() {
            inputs.add(path);
        }
    }
    for w in args.weights.iter().filter(|w| *w != "default") {
        inputs.add(Path::new(w));
    }
    let mut failed = refused.len();
    for r in &refused {
        eprintln!("skipped: {r}");
    }
    let cases_bar = ProgressBar::new(cases.len() as u64);
    cases_bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} cases {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    cases_bar.set_prefix("predict");
    let start = Instant::now();
    for source in &cases {
        cases_bar.set_message(source.id().to_string());
        match predict_case(
            &models, &manifest, source, &args, &inputs, device, &cases_bar,
        ) {
            Ok(line) => cases_bar.suspend(|| println!("{line}")),
            Err(e) => {
                failed += 1;
                cases_bar.suspend(|| eprintln!("failed: {e:#}"));
            }
        }
        cases_bar.inc(1);
    }
    cases_bar.finish_and_clear();
    eprintln!(
        "{} case(s) segmented, {failed} failed, in {:.1} s",
        cases.len() + refused.len() - failed,
        start.elapsed().as_secs_f64()
    );
    Ok(failed)
}

fn predict_case<B: Backend>(
    models: &[NvNet<B>],
    manifest: &Manifest,
    source: &Source,
    args: &Request,
    inputs: &nvnet::io::fsutil::Inputs,
    device: &B::Device,
    bar: &ProgressBar,
) -> Result<String> {
    let t = Instant::now();
    let out = |suffix: &str| args.output.join(format!("{}{suffix}.nii.gz", source.id()));
    // Refused before any work: an output that would replace one of the run's inputs.
    for suffix in ["", "_prob", "_uncertainty"] {
        let path = out(suffix);
        inputs
            .check_output(&path)
            .with_context(|| path.display().to_string())?;
    }
    let prepared = source.load(&args.exam.series, args.exam.steps(args.prepare))?;
    let case = &prepared.case;
    for w in case.warnings() {
        bar.suspend(|| eprintln!("warning: {w}"));
    }
    for (m, r) in &prepared.registrations {
        bar.suspend(|| {
            eprintln!(
                "{}: {m} registered to {} (NMI {:.3}, {} evaluations)",
                case.id, prepared.reference, r.nmi, r.evaluations
            )
        });
    }
    if prepared.resampled() || !prepared.registrations.is_empty() {
        bar.suspend(|| eprintln!("{}: {}", case.id, prepared.stripping));
    }
    let passes_bar = bar.clone();
    let seg = inference::segment(
        models,
        &manifest.outputs,
        case,
        &manifest.modalities,
        &args.options,
        device,
        |done, total| {
            passes_bar.set_message(format!("{}: network pass {done}/{total}", case.id));
        },
    )
    .map_err(anyhow::Error::msg)?;
    if args.verbose {
        let est =
            nvnet::inference::window_bytes(&models[0].config(), seg.roi, args.options.precision);
        bar.suspend(|| {
            eprintln!(
                "{}: window {:?} ({} windows), estimated {:.2} GiB of {} activations per window (budget {:.2} GiB), largest tensor {:.1} MiB (limit {})",
                case.id,
                seg.roi,
                seg.windows,
                est / (1u64 << 30) as f64,
                args.options.precision.name(),
                args.options.memory_budget as f64 / (1u64 << 30) as f64,
                nvnet::nn::info::largest_tensor_bytes(&models[0].config(), seg.roi) / (1u64 << 20) as f64,
                args.options
                    .max_buffer
                    .map_or("none".to_string(), |m| format!("{:.1} MiB", m as f64 / (1u64 << 20) as f64))
            )
        });
    }
    // On the reference series' own grid (the case's, unless it was resampled), or on the grid
    // the case was segmented on.
    let channels = seg.outputs.len();
    // Only the maps that are written are carried back.
    let native = args.native_output;
    let grid = if native {
        &prepared.native
    } else {
        case.geometry()
    };
    fn placed<'a, T: Copy>(
        prepared: &Prepared,
        native: bool,
        values: &'a [T],
        channels: usize,
        fill: T,
    ) -> Cow<'a, [T]> {
        if native {
            Cow::Owned(prepared.to_native(values, channels, fill))
        } else {
            Cow::Borrowed(values)
        }
    }
    let on_grid = |values| placed(&prepared, native, values, channels, 0f32);
    let labels = placed(&prepared, native, &seg.labels, 1, 0u8);
    let probabilities = args.save_probabilities.then(|| on_grid(&seg.probabilities));
    let uncertainty = match (&seg.uncertainty, args.save_uncertainty) {
        (Some(u), true) => Some(on_grid(u)),
        _ => None,
    };
    let mut files = vec![(out(""), OutputData::Labels(&labels))];
    let floats = |values| OutputData::Floats { values, channels };
    if let Some(p) = &probabilities {
        files.push((out("_prob"), floats(p)));
    }
    if args.save_uncertainty {
        match &uncertainty {
            Some(u) => files.push((out("_uncertainty"), floats(u))),
            None => bar.suspend(|| {
                eprintln!(
                    "{}: no uncertainty without test-time flips (--no-tta)",
                    case.id
                )
            }),
        }
    }
    // A case's outputs come all or not at all, and a failure leaves the files of an earlier run
    // as they were: never a label map of one run beside a probability map of another.
    let encoded = files
        .iter()
        .map(|(path, data)| {
            nifti::encode_on_grid(grid, *data)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let unit: Vec<(&Path, &[u8])> = files
        .iter()
        .zip(&encoded)
        .map(|((path, _), bytes)| (path.as_path(), bytes.as_slice()))
        .collect();
    nvnet::io::fsutil::write_all_atomic(&unit)
        .map_err(|(path, e)| anyhow::anyhow!("{}: {e}", path.display()))?;
    let counts = RegionCounts::of(&labels, args.options.labels);
    let [wt, tc, et] = counts.millilitres(grid.spacing());
    Ok(format!(
        "{}: {:.1} s  WT {wt:.1} mL  TC {tc:.1} mL  ET {et:.1} mL  -> {}",
        case.id,
        t.elapsed().as_secs_f64(),
        out("").display()
    ))
}
