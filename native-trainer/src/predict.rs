//! `nvnet predict`: segment cases with one model or an ensemble. The pipeline is the library's
//! (`nvnet::inference`); this file finds the cases, loads the weights, shows progress and writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use nvnet::case::{self, Case, CaseFiles, Input};
use nvnet::inference::{self, InferenceOptions};
use nvnet::labels::RegionCounts;
use nvnet::nifti::{self, OutputData};
use nvnet::weights::{self, Manifest};
use nvnet::{Modality, NvNet};

/// Everything `nvnet predict` was asked.
pub struct PredictArgs {
    pub weights: Vec<String>,
    pub inputs: Vec<PathBuf>,
    pub given: BTreeMap<Modality, PathBuf>,
    pub output: PathBuf,
    pub modalities: Option<Vec<Modality>>,
    pub options: InferenceOptions,
    pub labels_given: bool,
    /// Add the manifest's post-processing to the flags'.
    pub postprocess_from_model: bool,
    pub save_probabilities: bool,
    pub save_uncertainty: bool,
    pub verbose: bool,
}

/// The cases to run, and the inputs refused before any work.
fn collect_cases(args: &PredictArgs) -> Result<(Vec<CaseFiles>, Vec<String>)> {
    let (dirs, files): (Vec<&PathBuf>, Vec<&PathBuf>) =
        args.inputs.iter().partition(|p| p.is_dir());
    let mut cases = Vec::new();
    let mut refused = Vec::new();
    for dir in dirs {
        match case::discover(dir)? {
            Input::Case(c) => cases.push(c),
            Input::Dataset {
                cases: cs,
                problems,
            } => {
                cases.extend(cs);
                refused.extend(problems.iter().map(|e| e.to_string()));
            }
        }
    }
    if !files.is_empty() || !args.given.is_empty() {
        for f in &files {
            if !f.exists() {
                bail!("{}: no such file", f.display());
            }
        }
        let owned: Vec<PathBuf> = files.into_iter().cloned().collect();
        cases.push(CaseFiles::from_loose(&owned, &args.given)?);
    }
    if cases.is_empty() && refused.is_empty() {
        bail!(
            "nothing to segment: give --input (a case folder, a dataset root or files) or --t1/--t1ce/--t2/--flair"
        );
    }
    Ok((cases, refused))
}

/// On a GPU opened with known limits (wgpu): an nvnet weights file whose network the device
/// cannot hold is refused before the model is built there. (A MONAI checkpoint's architecture
/// is known only once imported: the window check refuses it, after the device has complained.)
fn check_device_holds(args: &PredictArgs, limits: Option<nvnet::gpu::GpuLimits>) -> Result<()> {
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
    args: &PredictArgs,
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
pub fn run<B: Backend>(
    device: &B::Device,
    limits: Option<nvnet::gpu::GpuLimits>,
    mut args: PredictArgs,
) -> Result<usize> {
    let (cases, refused) = collect_cases(&args)?;
    check_device_holds(&args, limits)?;
    let (models, manifest) = load_models::<B>(&args, device)?;
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
    let _lock = nvnet::fsutil::FolderLock::take(&args.output)
        .with_context(|| format!("{}", args.output.display()))?;
    nvnet::fsutil::remove_stale_temps(&args.output);
    // Every file this run reads: no output may replace one (by any name or link).
    let mut inputs = nvnet::fsutil::Inputs::default();
    for files in &cases {
        for path in files.modalities.values().chain(&files.seg) {
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
    for files in &cases {
        cases_bar.set_message(files.id.clone());
        match predict_case(
            &models, &manifest, files, &args, &inputs, device, &cases_bar,
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
    files: &CaseFiles,
    args: &PredictArgs,
    inputs: &nvnet::fsutil::Inputs,
    device: &B::Device,
    bar: &ProgressBar,
) -> Result<String> {
    let t = Instant::now();
    let out = |suffix: &str| args.output.join(format!("{}{suffix}.nii.gz", files.id));
    // Refused before any work: an output that would replace one of the run's inputs.
    for suffix in ["", "_prob", "_uncertainty"] {
        let path = out(suffix);
        inputs
            .check_output(&path)
            .with_context(|| path.display().to_string())?;
    }
    let case = Case::load(files)?;
    for w in case.warnings() {
        bar.suspend(|| eprintln!("warning: {w}"));
    }
    let windows_bar = bar.clone();
    let seg = inference::segment(
        models,
        &manifest.outputs,
        &case,
        &manifest.modalities,
        &args.options,
        device,
        |done, total| {
            windows_bar.set_message(format!("{}: window {done}/{total}", case.id));
        },
    )
    .map_err(anyhow::Error::msg)?;
    if args.verbose {
        let est = nvnet::info::summarize(&models[0].config(), seg.roi).inference_bytes;
        bar.suspend(|| {
            eprintln!(
                "{}: window {:?} ({} windows), estimated {:.2} GiB of activations per window (budget {:.2} GiB), largest tensor {:.1} MiB (limit {})",
                case.id,
                seg.roi,
                seg.windows,
                est / (1u64 << 30) as f64,
                args.options.memory_budget as f64 / (1u64 << 30) as f64,
                nvnet::info::largest_tensor_bytes(&models[0].config(), seg.roi) / (1u64 << 20) as f64,
                args.options
                    .max_buffer
                    .map_or("none".to_string(), |m| format!("{:.1} MiB", m as f64 / (1u64 << 20) as f64))
            )
        });
    }
    let grid = case.geometry();
    let mut files = vec![(out(""), OutputData::Labels(&seg.labels))];
    let floats = |values| OutputData::Floats {
        values,
        channels: seg.outputs.len(),
    };
    if args.save_probabilities {
        files.push((out("_prob"), floats(&seg.probabilities)));
    }
    if args.save_uncertainty {
        match &seg.uncertainty {
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
    nvnet::fsutil::write_all_atomic(&unit)
        .map_err(|(path, e)| anyhow::anyhow!("{}: {e}", path.display()))?;
    let counts = RegionCounts::of(&seg.labels, args.options.labels);
    let ml = grid.spacing().iter().product::<f64>() / 1000.0;
    Ok(format!(
        "{}: {:.1} s  WT {:.1} mL  TC {:.1} mL  ET {:.1} mL  -> {}",
        case.id,
        t.elapsed().as_secs_f64(),
        counts.WT as f64 * ml,
        counts.TC as f64 * ml,
        counts.ET as f64 * ml,
        out("").display()
    ))
}

/// "4G", "512M", "1.5GiB", or bytes.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.trim_end_matches("ib").trim_end_matches('b');
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a size like 4G or 512M"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("'{text}' is not a positive size"));
    }
    Ok((v * mult as f64) as u64)
}
