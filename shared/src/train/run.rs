//! The training loop: the run's data, the network and Adam on the devices, each epoch's steps,
//! validation by sliding window, weights and checkpoint after every epoch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, Optimizer, decay::WeightDecayConfig};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::TensorData;
use burn::tensor::backend::AutodiffBackend;

use super::cache::{CacheError, CachedCase, cached, fingerprint, read_cached};
use super::checkpoint::{
    CheckpointError, EpochRow, RunDir, RunState, metrics_csv, read_checkpoint, write_checkpoint,
};
use super::sampling::{Split, epoch_batches, mix, split};
use super::{ConfigError, TrainConfig, TrainError};
use crate::NvNet;
use crate::data::case::{CaseError, CaseFiles};
use crate::data::labels;
use crate::data::modality::Region;
use crate::inference::{Blend, SlidingWindow};
use crate::io::weights::{self, Manifest, Provenance};
use crate::train::parallel::{Devices, StepLosses, StepSpec, Transfer};

/// What a run tells its user.
pub trait Reporter {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize);
    fn step(&mut self, step: usize, losses: &StepLosses);
    fn validating(&mut self, done: usize, total: usize);
    fn epoch_end(&mut self, row: &EpochRow, history: &[EpochRow]);
    fn message(&mut self, text: &str);
}

/// Read every parameter once, in the module's order: Burn initialises a parameter lazily, when
/// it is first read.
fn draw_initial_weights<B: Backend>(model: &NvNet<B>) {
    struct Touch;
    impl<B: Backend> burn::module::ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    model.visit(&mut Touch);
}

/// The cases of a run: cache every case (building what is missing) and split.
pub fn prepare_data(
    config: &TrainConfig,
    reporter: &mut dyn Reporter,
) -> Result<(Vec<PathBuf>, Vec<PathBuf>, Split), TrainError> {
    let cache = config.cache_dir();
    fn list(root: &Path, reporter: &mut dyn Reporter) -> Result<Vec<CaseFiles>, CaseError> {
        let (cases, problems) = crate::data::case::discover_dataset(root)?;
        for p in problems {
            reporter.message(&format!("skipped: {p}"));
        }
        Ok(cases)
    }
    let cache_all = |cases: &[CaseFiles],
                     reporter: &mut dyn Reporter|
     -> Result<BTreeMap<String, PathBuf>, CacheError> {
        let mut out = BTreeMap::new();
        let mut built = 0;
        for (i, files) in cases.iter().enumerate() {
            let (path, new) = cached(&cache, files, &config.modalities)?;
            built += new as usize;
            if new && (built == 1 || (i + 1) % 10 == 0 || i + 1 == cases.len()) {
                reporter.message(&format!(
                    "preprocessing into the cache: {}/{}",
                    i + 1,
                    cases.len()
                ));
            }
            out.insert(files.id.clone(), path);
        }
        if built > 0 {
            reporter.message(&format!(
                "{built} case(s) preprocessed into {}",
                cache.display()
            ));
        }
        Ok(out)
    };
    let cases = list(&config.data, reporter)?;
    let data = cache_all(&cases, reporter)?;
    let (train, val, split) = match &config.val {
        Some(root) => {
            let cases = list(root, reporter)?;
            let v = cache_all(&cases, reporter)?;
            let s = Split {
                train: data.keys().cloned().collect(),
                val: v.keys().cloned().collect(),
            };
            (
                data.values().cloned().collect(),
                v.values().cloned().collect(),
                s,
            )
        }
        None => {
            let ids: Vec<String> = data.keys().cloned().collect();
            let s = split(&ids, config.val_fraction, config.seed);
            let pick = |ids: &[String]| ids.iter().map(|id| data[id].clone()).collect::<Vec<_>>();
            (pick(&s.train), pick(&s.val), s)
        }
    };
    if train.is_empty() {
        return Err(TrainError::NoTrainingCases(config.data.clone()));
    }
    if val.is_empty() && config.val_fraction > 0.0 {
        reporter.message(&format!(
            "warning: {} case(s) are too few for a validation split of {}: no validation, no \
             validation Dice and no best.bpk (last.bpk only); give more cases or a separate \
             validation root",
            train.len(),
            config.val_fraction
        ));
    }
    Ok((train, val, split))
}

/// Dice per region (WT, TC, ET) of the model on a cached validation case: sliding window over
/// its brain box (outside it both the prediction and the truth are background).
pub fn validate_case<B: Backend>(
    model: &NvNet<B>,
    case: &CachedCase,
    outputs: &[Region],
    roi: [usize; 3],
    device: &B::Device,
) -> Result<[f64; 3], TrainError> {
    let image: Vec<f32> = case.image.iter().map(|v| v.to_f32()).collect();
    let mut sw = SlidingWindow::new(case.dims, roi, 0.5, Blend::Gaussian, outputs.len());
    for w in 0..sw.len() {
        let data = sw.extract(&image, case.channels, w);
        let x = Tensor::<B, 5>::from_data(
            TensorData::new(data, [1, case.channels, roi[0], roi[1], roi[2]]),
            device,
        );
        let out = model
            .forward(x)
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| TrainError::Readback(format!("{e:?}")))?;
        sw.add(w, &out);
    }
    let prob: Vec<f32> = sw
        .finish()
        .iter()
        .map(|v| 1.0 / (1.0 + (-v).exp()))
        .collect();
    let map = labels::label_map(&prob, outputs, case.labels_convention, 0.5);
    let dice = |r: Region| {
        crate::metrics::dice(
            &labels::region_mask(&map, r, case.labels_convention),
            &labels::region_mask(&case.labels, r, case.labels_convention),
        )
    };
    Ok([dice(Region::WT), dice(Region::TC), dice(Region::ET)])
}

/// A manifest for the run's weights.
fn manifest(
    config: &TrainConfig,
    state: &RunState,
    created: &str,
    commit: &str,
    notes: &str,
) -> Manifest {
    let mut m = Manifest::new(
        format!(
            "nvnet F={}{}",
            config.init_filters,
            if config.vae { " + VAE" } else { "" }
        ),
        config.model_config(),
        Provenance {
            source: "trained".into(),
            from: state.fingerprint.clone(),
            created: created.into(),
            notes: format!(
                "{} epoch(s) of {}, seed {}, commit {commit}{}{notes}",
                state.epochs_done,
                config.epochs,
                config.seed,
                if notes.is_empty() { "" } else { "; " }
            ),
        },
    );
    m.modalities = config.modalities.clone();
    m
}

/// Everything a run needs from outside the library.
pub struct RunContext<'a> {
    pub dir: RunDir,
    /// Now, RFC 3339 (for provenance).
    pub now: &'a dyn Fn() -> String,
    /// The source commit (for provenance).
    pub commit: String,
    /// Extra provenance text ("synthetic phantoms", ...).
    pub notes: String,
}

/// Train (or resume: when `ctx.dir` holds a checkpoint) until `config.epochs`, on `devices`
/// (the first holds the model; each step's batch is split across all of them, see `parallel`).
pub fn run<B: AutodiffBackend>(
    config: &TrainConfig,
    ctx: &RunContext,
    devices: &[B::Device],
    transfer: Transfer,
    reporter: &mut dyn Reporter,
) -> Result<RunState, TrainError> {
    config.validate()?;
    config.check_devices(devices.len())?;
    if !crate::nn::grads::trains_with_own_gradients::<B>() {
        return Err(TrainError::Backend(std::any::type_name::<B>()));
    }
    let outputs = Region::DEFAULT_ORDER.to_vec();
    let devices = Devices::<B>::new(
        devices.to_vec(),
        StepSpec {
            channels: config.modalities.len(),
            regions: outputs.len(),
            crop: config.crop,
            loss: config.loss,
            dice_smooth: config.dice_smooth,
        },
        transfer,
    )?;
    let device = devices.main();
    let model_config = config.model_config();
    // The initial weights from --seed alone, drawn now in the module's order: Burn draws a
    // parameter when it is first read, which was in the first forward pass, one per device
    // thread, so one and two devices started from different networks.
    B::seed(device, mix(&[config.seed, 0x1417]));
    let mut model: NvNet<B> = model_config.init(device).map_err(ConfigError::from)?;
    draw_initial_weights(&model);
    let mut optim = AdamConfig::new()
        .with_weight_decay(Some(WeightDecayConfig::new(config.weight_decay as f32)))
        .init::<B, NvNet<B>>();
    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    let mut state = if ctx.dir.checkpoint().is_file() {
        let (state, m, o) = read_checkpoint(&ctx.dir.checkpoint())?;
        model = model.load_record(Recorder::<B>::load(&recorder, m, device).map_err(|error| {
            CheckpointError::Record {
                part: "model",
                error,
            }
        })?);
        optim = optim.load_record(Recorder::<B>::load(&recorder, o, device).map_err(|error| {
            CheckpointError::Record {
                part: "optimizer",
                error,
            }
        })?);
        reporter.message(&format!("resuming after epoch {}", state.epochs_done));
        state
    } else {
        let (train, val, split) = prepare_data(config, reporter)?;
        std::fs::create_dir_all(&ctx.dir.0).map_err(io(&ctx.dir.0))?;
        let json = serde_json::to_string_pretty(&split).expect("lists of names serialise");
        crate::io::fsutil::write_atomic(&ctx.dir.split(), json.as_bytes())
            .map_err(io(&ctx.dir.split()))?;
        let mut all = train.clone();
        all.extend(val.iter().cloned());
        RunState {
            epochs_done: 0,
            best_mean_dice: None,
            history: Vec::new(),
            fingerprint: fingerprint(&all),
            train,
            val,
        }
    };
    while state.epochs_done < config.epochs {
        let epoch = state.epochs_done;
        let start = std::time::Instant::now();
        B::seed(device, mix(&[config.seed, epoch as u64, 0xD207]));
        let lr = config.lr_at(epoch);
        let batches = epoch_batches(state.train.clone(), config.clone(), outputs.clone(), epoch);
        let steps = if config.samples_per_epoch > 0 {
            config.samples_per_epoch
        } else {
            state.train.len()
        }
        .div_ceil(config.batch_size);
        reporter.epoch_start(epoch, config.epochs, steps);
        let (mut sum, mut count) = ([0f64; 4], 0usize);
        for (step, batch) in batches.into_iter().enumerate() {
            let (grads, losses) = devices
                .gradients(&model, batch?)
                .map_err(|error| TrainError::Step { epoch, step, error })?;
            if !losses.total.is_finite() {
                return Err(TrainError::LossNotFinite {
                    epoch,
                    step,
                    loss: losses.total,
                });
            }
            model = optim.step(lr, model, grads);
            sum[0] += losses.total;
            sum[1] += losses.dice;
            sum[2] += losses.l2.unwrap_or(0.0);
            sum[3] += losses.kl.unwrap_or(0.0);
            count += 1;
            reporter.step(step, &losses);
        }
        let n = count.max(1) as f64;
        let validate = !state.val.is_empty()
            && ((epoch + 1) % config.val_every == 0 || epoch + 1 == config.epochs);
        let val_dice = if validate {
            let valid = model.valid();
            let mut per = Vec::new();
            for (i, path) in state.val.iter().enumerate() {
                reporter.validating(i, state.val.len());
                let case = read_cached(path)?;
                let roi = config.val_roi.unwrap_or(case.dims);
                per.push(validate_case(&valid, &case, &outputs, roi, device)?);
            }
            let mean = |r: usize| per.iter().map(|d| d[r]).sum::<f64>() / per.len() as f64;
            Some([mean(0), mean(1), mean(2)])
        } else {
            None
        };
        let row = EpochRow {
            epoch: epoch + 1,
            seconds: start.elapsed().as_secs_f64(),
            loss: sum[0] / n,
            dice_loss: sum[1] / n,
            l2_loss: config.vae.then_some(sum[2] / n),
            kl_loss: config.vae.then_some(sum[3] / n),
            lr,
            val_dice,
        };
        state.history.push(row.clone());
        state.epochs_done = epoch + 1;
        // Weights first, then the checkpoint that says this epoch is done.
        let valid = model.valid();
        let m = manifest(config, &state, &(ctx.now)(), &ctx.commit, &ctx.notes);
        weights::save(&valid, &m, &ctx.dir.last())?;
        if let Some(d) = val_dice {
            let mean = (d[0] + d[1] + d[2]) / 3.0;
            if state.best_mean_dice.is_none_or(|b| mean > b) {
                state.best_mean_dice = Some(mean);
                weights::save(&valid, &m, &ctx.dir.best())?;
            }
        }
        crate::io::fsutil::write_atomic(&ctx.dir.metrics(), metrics_csv(&state.history).as_bytes())
            .map_err(io(&ctx.dir.metrics()))?;
        let record = |part| move |error| CheckpointError::Record { part, error };
        let model_bytes = recorder
            .record(model.clone().into_record(), ())
            .map_err(record("model"))?;
        let optim_bytes = recorder
            .record(optim.to_record(), ())
            .map_err(record("optimizer"))?;
        write_checkpoint(&ctx.dir.checkpoint(), &state, model_bytes, optim_bytes)?;
        reporter.epoch_end(&row, &state.history);
    }
    Ok(state)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |error| TrainError::Io {
        path: path.to_path_buf(),
        error,
    }
}
