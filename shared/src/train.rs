//! Training with the paper's recipe (docs/DESIGN.md §6): data cache, background loading with
//! augmentation, the Adam loop with poly decay, validation by sliding window, crash-safe
//! checkpoints and exact resume.
//!
//! Determinism: every random choice is a function of (seed, epoch, sample): the epoch's case
//! order, each sample's crop and augmentation, and the backend RNG (dropout, VAE noise), which is
//! re-seeded at the start of every epoch. So a run resumed from its last checkpoint ends with the
//! same weights as one that was never interrupted (on a deterministic backend such as flex).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, Optimizer, decay::WeightDecayConfig};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::TensorData;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::case::{Case, CaseFiles};
use crate::inference::{Blend, SlidingWindow};
use crate::labels;
use crate::modality::{LabelConvention, Modality, Region};
use crate::parallel::{Devices, StepSpec, Transfer};
use crate::preprocess::Crop;
use crate::rng::Rng;
use crate::weights::{self, Manifest, Provenance};
use crate::{NvNet, NvNetConfig};

/// Every setting of a run; `Default` is the paper's recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// The dataset root (case folders in either BraTS layout).
    pub data: PathBuf,
    /// A separate validation root; none: a held-out split of `data`.
    pub val: Option<PathBuf>,
    /// Where preprocessed cases are cached (default: `<data>/.nvnet-cache`).
    pub cache: Option<PathBuf>,
    pub init_filters: usize,
    pub vae: bool,
    /// The random training crop D,H,W (padded where a case is smaller).
    pub crop: [usize; 3],
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// lr(epoch) = lr·(1 − epoch/epochs)^poly_power.
    pub poly_power: f64,
    pub epochs: usize,
    pub dropout: f64,
    /// The paper's augmentation: per-channel scale 1 ± 0.1 and shift ± 0.1, random axis flips.
    pub augment: bool,
    /// Fraction of crops centred on a tumour voxel (nnU-Net's oversampling); the paper's
    /// uniform crops are 0.
    pub foreground_fraction: f64,
    /// Training samples per epoch; 0: each training case once (the paper).
    pub samples_per_epoch: usize,
    pub seed: u64,
    pub val_fraction: f64,
    /// Validate every N epochs (and after the last).
    pub val_every: usize,
    /// The validation window (default: each case's whole brain box, one window).
    pub val_roi: Option<[usize; 3]>,
    pub modalities: Vec<Modality>,
    /// Batches prepared ahead by the loader threads.
    pub prefetch: usize,
    /// The segmentation loss (the paper: soft Dice).
    pub loss: crate::loss::SegLoss,
    /// Dice smoothing in numerator and denominator (MONAI's smooth_nr = smooth_dr); 0: the
    /// paper's (0 and 1e-5).
    pub dice_smooth: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            data: PathBuf::new(),
            val: None,
            cache: None,
            init_filters: 32,
            vae: true,
            crop: [160, 192, 128],
            batch_size: 1,
            lr: 1e-4,
            weight_decay: 1e-5,
            poly_power: 0.9,
            epochs: 300,
            dropout: 0.2,
            augment: true,
            foreground_fraction: 0.0,
            samples_per_epoch: 0,
            seed: 0,
            val_fraction: 0.2,
            val_every: 5,
            val_roi: None,
            modalities: Modality::DEFAULT_ORDER.to_vec(),
            prefetch: 4,
            loss: crate::loss::SegLoss::Dice,
            dice_smooth: 0.0,
        }
    }
}

impl TrainConfig {
    pub fn model_config(&self) -> NvNetConfig {
        let mut c = NvNetConfig::default()
            .with_init_filters(self.init_filters)
            .with_vae(self.vae.then_some(self.crop));
        c.dropout = self.dropout;
        c.in_channels = self.modalities.len();
        c
    }

    pub fn validate(&self) -> Result<(), String> {
        let m = self.model_config();
        m.validate().map_err(|e| e.to_string())?;
        let k = m.size_multiple();
        if self.crop.iter().any(|c| *c == 0 || c % k != 0) {
            return Err(format!(
                "--crop {:?}: each size must be a positive multiple of {k}",
                self.crop
            ));
        }
        if let Some(roi) = self.val_roi
            && roi.iter().any(|c| *c == 0 || c % k != 0)
        {
            return Err(format!(
                "--val-roi {roi:?}: each size must be a positive multiple of {k}"
            ));
        }
        if self.batch_size == 0 || self.epochs == 0 || self.val_every == 0 {
            return Err("batch size, epochs and val-every must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("lr {} must be positive", self.lr));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(format!(
                "val-fraction {} must be in [0, 1)",
                self.val_fraction
            ));
        }
        if !(self.dice_smooth >= 0.0 && self.dice_smooth.is_finite()) {
            return Err(format!(
                "dice-smooth {} must be 0 or more",
                self.dice_smooth
            ));
        }
        if !(0.0..=1.0).contains(&self.foreground_fraction) {
            return Err("foreground-fraction must be in [0, 1]".into());
        }
        Ok(())
    }

    /// Each step's batch is split across the devices: at least one sample each.
    pub fn check_devices(&self, devices: usize) -> Result<(), String> {
        if devices > self.batch_size {
            return Err(format!(
                "{devices} devices need a batch of at least {devices} (--batch-size {}): each \
                 step's batch is split across the devices",
                self.batch_size
            ));
        }
        Ok(())
    }

    /// The learning rate of an epoch (poly decay).
    pub fn lr_at(&self, epoch: usize) -> f64 {
        self.lr * (1.0 - epoch as f64 / self.epochs as f64).powf(self.poly_power)
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.cache
            .clone()
            .unwrap_or_else(|| self.data.join(".nvnet-cache"))
    }
}

/// Mix numbers into one seed.
fn mix(parts: &[u64]) -> u64 {
    let mut rng = Rng::new(0x6E76_6E65_7400_0001);
    let mut h = rng.next_u64();
    for p in parts {
        h = Rng::new(h ^ p.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64();
    }
    h
}

/// A seeded permutation.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut rng = Rng::new(seed);
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// The held-out split, written to `split.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub train: Vec<String>,
    pub val: Vec<String>,
}

/// A seeded split of case ids (sorted first, so the split does not depend on listing order).
pub fn split(ids: &[String], val_fraction: f64, seed: u64) -> Split {
    let mut sorted = ids.to_vec();
    sorted.sort();
    let order = shuffled(sorted.len(), mix(&[seed, 0x5E11]));
    let n_val =
        ((sorted.len() as f64 * val_fraction).round() as usize).min(sorted.len().saturating_sub(1));
    let mut val: Vec<String> = order[..n_val].iter().map(|&i| sorted[i].clone()).collect();
    let mut train: Vec<String> = order[n_val..].iter().map(|&i| sorted[i].clone()).collect();
    val.sort();
    train.sort();
    Split { train, val }
}

// ---------------------------------------------------------------------------------------------
// The cache of preprocessed cases.

const CACHE_MAGIC: &[u8; 8] = b"NVNCACH1";

/// The largest cached case or checkpoint read back: a full BraTS case in float16 is 72 MB, an
/// F=32 checkpoint with Adam's moments 230 MB.
const MAX_CACHE_BYTES: u64 = 4 << 30;

/// One case, z-scored and cropped to its brain box, in network order.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedCase {
    pub id: String,
    pub dims: [usize; 3],
    pub spacing: [f64; 3],
    pub labels_convention: LabelConvention,
    /// `channels` volumes as f16.
    pub image: Vec<half::f16>,
    pub channels: usize,
    /// BraTS labels (0 where there is no segmentation).
    pub labels: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct CacheHeader {
    id: String,
    dims: [usize; 3],
    spacing: [f64; 3],
    labels: LabelConvention,
    channels: usize,
}

impl CacheHeader {
    /// The header at the start of a cache file, and where the body starts; `bytes` may be only
    /// the beginning of the file.
    fn parse(bytes: &[u8]) -> Result<(CacheHeader, usize), &'static str> {
        if bytes.len() < 16 || &bytes[..8] != CACHE_MAGIC {
            return Err("magic");
        }
        let hlen = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let start = usize::try_from(hlen)
            .ok()
            .and_then(|h| h.checked_add(16))
            .ok_or("truncated header")?;
        let header = bytes
            .get(16..start)
            .ok_or("truncated header")
            .and_then(|h| serde_json::from_slice(h).map_err(|_| "header"))?;
        Ok((header, start))
    }

    /// Bytes of the body: the float16 image, then the labels.
    fn body_len(&self) -> usize {
        let n: usize = self.dims.iter().product();
        n * self.channels * 2 + n
    }
}

impl CachedCase {
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&CacheHeader {
            id: self.id.clone(),
            dims: self.dims,
            spacing: self.spacing,
            labels: self.labels_convention,
            channels: self.channels,
        })
        .expect("serialisable");
        let mut out =
            Vec::with_capacity(16 + header.len() + self.image.len() * 2 + self.labels.len());
        out.extend_from_slice(CACHE_MAGIC);
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        for v in &self.image {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.labels);
        out
    }

    pub fn from_bytes(bytes: &[u8], file: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("{file}: not a valid nvnet cache file ({why})");
        let (header, start) = CacheHeader::parse(bytes).map_err(bad)?;
        let n: usize = header.dims.iter().product();
        let body = &bytes[start..];
        if body.len() != header.body_len() {
            return Err(bad("size"));
        }
        let (img, lab) = body.split_at(n * header.channels * 2);
        Ok(CachedCase {
            id: header.id,
            dims: header.dims,
            spacing: header.spacing,
            labels_convention: header.labels,
            image: img
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]))
                .collect(),
            channels: header.channels,
            labels: lab.to_vec(),
        })
    }

    /// Build from a loaded case: z-score, crop to the brain box.
    pub fn build(case: &Case, modalities: &[Modality]) -> Result<Self, String> {
        let prepared = crate::inference::prepare(case, modalities).map_err(|e| e.to_string())?;
        let labels = match case.seg_labels() {
            Some(map) => {
                let net = crate::volume::to_network_order(case.dims(), &map);
                prepared.crop.crop(&net, 1)
            }
            None => vec![0; prepared.crop.voxels()],
        };
        Ok(CachedCase {
            id: case.id.clone(),
            dims: prepared.crop.size,
            spacing: case.geometry().spacing(),
            labels_convention: case.labels,
            image: prepared
                .input
                .iter()
                .map(|v| half::f16::from_f32(*v))
                .collect(),
            channels: prepared.channels,
            labels,
        })
    }
}

/// The cache file of a case: keyed by its files (path, size, modification time) and the
/// channel order, so that a changed file or order is preprocessed again.
pub fn cache_path(dir: &Path, files: &CaseFiles, modalities: &[Modality]) -> PathBuf {
    let mut key = format!("v1|{modalities:?}|");
    for p in files.modalities.values().chain(files.seg.iter()) {
        let meta = std::fs::metadata(p).ok();
        let mtime = meta
            .as_ref()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        key.push_str(&format!(
            "{}|{}|{mtime}|",
            p.display(),
            meta.map(|m| m.len()).unwrap_or(0)
        ));
    }
    dir.join(format!(
        "{}-{:016x}.nvc",
        files.id,
        weights::fnv1a64(key.as_bytes())
    ))
}

/// Whether a cache file is whole: its header, and the length the header announces, read from
/// its first bytes only.
fn cache_file_whole(path: &Path) -> bool {
    use std::io::Read;
    let check = || -> Option<bool> {
        let file = crate::fsutil::open_regular(path).ok()?;
        let len = file.metadata().ok()?.len();
        // The header is a few hundred bytes of JSON.
        let mut head = Vec::new();
        file.take(64 << 10).read_to_end(&mut head).ok()?;
        let (header, start) = CacheHeader::parse(&head).ok()?;
        Some(len == (start + header.body_len()) as u64)
    };
    check().unwrap_or(false)
}

/// Read a case from the cache, building (and writing) it first when it is not there.
pub fn cached(
    dir: &Path,
    files: &CaseFiles,
    modalities: &[Modality],
) -> Result<(PathBuf, bool), String> {
    let path = cache_path(dir, files, modalities);
    // A damaged cache file (cut short on a full disk or by a copy) is built again, not trusted.
    if path.is_file() && cache_file_whole(&path) {
        return Ok((path, false));
    }
    let case = Case::load(files).map_err(|e| e.to_string())?;
    let c = CachedCase::build(&case, modalities)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    crate::fsutil::write_atomic(&path, &c.to_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path, true))
}

pub fn read_cached(path: &Path) -> Result<CachedCase, String> {
    let bytes = crate::fsutil::read_regular(path, MAX_CACHE_BYTES)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    CachedCase::from_bytes(&bytes, &path.display().to_string())
}

/// A dataset fingerprint for provenance: the case ids and their cache keys.
pub fn fingerprint(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string()
        })
        .collect();
    format!(
        "{} cases, fnv1a64 {:016x}",
        paths.len(),
        weights::fnv1a64(names.join("|").as_bytes())
    )
}

// ---------------------------------------------------------------------------------------------
// Samples.

pub use crate::parallel::{Batch, StepLosses};

/// One training sample from a cached case: a random crop (tumour-centred with probability
/// `foreground_fraction`), the paper's augmentation, and the region targets.
pub fn sample(
    case: &CachedCase,
    config: &TrainConfig,
    outputs: &[Region],
    rng: &mut Rng,
) -> (Vec<f32>, Vec<f32>) {
    let crop = config.crop;
    let dims = case.dims;
    let n: usize = dims.iter().product();
    let centre: Option<[usize; 3]> =
        if config.foreground_fraction > 0.0 && rng.chance(config.foreground_fraction) {
            let tumour: Vec<usize> = (0..n).filter(|&v| case.labels[v] != 0).collect();
            (!tumour.is_empty()).then(|| {
                let v = tumour[(rng.next_u64() % tumour.len() as u64) as usize];
                [
                    v / (dims[1] * dims[2]),
                    (v / dims[2]) % dims[1],
                    v % dims[2],
                ]
            })
        } else {
            None
        };
    let mut start = [0isize; 3];
    for a in 0..3 {
        start[a] = if dims[a] <= crop[a] {
            -(((crop[a] - dims[a]) / 2) as isize)
        } else {
            let max = (dims[a] - crop[a]) as isize;
            match centre {
                Some(c) => (c[a] as isize - (crop[a] / 2) as isize).clamp(0, max),
                None => (rng.next_u64() % (max as u64 + 1)) as isize,
            }
        };
    }
    let window = Crop {
        full: dims,
        start,
        size: crop,
    };
    let image: Vec<f32> = case.image.iter().map(|v| v.to_f32()).collect();
    let mut input = window.crop(&image, case.channels);
    let map = window.crop(&case.labels, 1);
    let mut target = labels::region_targets(&map, outputs, case.labels_convention);
    if config.augment {
        let m: usize = crop.iter().product();
        for c in 0..case.channels {
            let scale = 1.0 + rng.range(-0.1, 0.1) as f32;
            let shift = rng.range(-0.1, 0.1) as f32;
            for v in &mut input[c * m..(c + 1) * m] {
                *v = *v * scale + shift;
            }
        }
        for axis in 0..3 {
            if rng.chance(0.5) {
                flip_axis(&mut input, case.channels, crop, axis);
                flip_axis(&mut target, outputs.len(), crop, axis);
            }
        }
    }
    (input, target)
}

fn flip_axis(data: &mut [f32], channels: usize, dims: [usize; 3], axis: usize) {
    let [nx, ny, nz] = dims;
    let m = nx * ny * nz;
    for c in 0..channels {
        let vol = &mut data[c * m..(c + 1) * m];
        for i in 0..nx {
            for j in 0..ny {
                for k in 0..nz {
                    let (a, b) = match axis {
                        0 if i < nx / 2 => {
                            ((i * ny + j) * nz + k, ((nx - 1 - i) * ny + j) * nz + k)
                        }
                        1 if j < ny / 2 => ((i * ny + j) * nz + k, (i * ny + ny - 1 - j) * nz + k),
                        2 if k < nz / 2 => ((i * ny + j) * nz + k, (i * ny + j) * nz + nz - 1 - k),
                        _ => continue,
                    };
                    vol.swap(a, b);
                }
            }
        }
    }
}

/// The batches of one epoch, prepared on background threads (reading the cache, cropping,
/// augmenting) and delivered in order through a bounded channel.
pub fn epoch_batches(
    train: Vec<PathBuf>,
    config: TrainConfig,
    outputs: Vec<Region>,
    epoch: usize,
) -> mpsc::Receiver<Result<Batch, String>> {
    let (tx, rx) = mpsc::sync_channel(config.prefetch.max(1));
    std::thread::spawn(move || {
        let per_epoch = if config.samples_per_epoch > 0 {
            config.samples_per_epoch
        } else {
            train.len()
        };
        // The order: whole permutations of the training cases, as many as needed.
        let mut order = Vec::with_capacity(per_epoch);
        let mut round = 0u64;
        while order.len() < per_epoch {
            let perm = shuffled(
                train.len(),
                mix(&[config.seed, epoch as u64, round, 0x0DE7]),
            );
            order.extend(perm.into_iter().take(per_epoch - order.len()));
            round += 1;
        }
        for (b, chunk) in order.chunks(config.batch_size).enumerate() {
            let mut batch = Batch {
                n: 0,
                input: Vec::new(),
                target: Vec::new(),
            };
            for (s, &i) in chunk.iter().enumerate() {
                let case = match read_cached(&train[i]) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let sample_index = (b * config.batch_size + s) as u64;
                let mut rng = Rng::new(mix(&[config.seed, epoch as u64, sample_index, 0x5A]));
                let (x, y) = sample(&case, &config, &outputs, &mut rng);
                batch.input.extend(x);
                batch.target.extend(y);
                batch.n += 1;
            }
            if tx.send(Ok(batch)).is_err() {
                return; // the trainer stopped
            }
        }
    });
    rx
}

// ---------------------------------------------------------------------------------------------
// The loop.

/// One epoch's row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    pub epoch: usize,
    pub seconds: f64,
    pub loss: f64,
    pub dice_loss: f64,
    pub l2_loss: Option<f64>,
    pub kl_loss: Option<f64>,
    pub lr: f64,
    /// Validation Dice per region (WT, TC, ET) when measured this epoch.
    pub val_dice: Option<[f64; 3]>,
}

/// What a run tells its user.
pub trait Reporter {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize);
    fn step(&mut self, step: usize, losses: &StepLosses);
    fn validating(&mut self, done: usize, total: usize);
    fn epoch_end(&mut self, row: &EpochRow, history: &[EpochRow]);
    fn message(&mut self, text: &str);
}

/// The state saved with every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    /// Epochs completed.
    pub epochs_done: usize,
    pub best_mean_dice: Option<f64>,
    pub history: Vec<EpochRow>,
    pub train: Vec<PathBuf>,
    pub val: Vec<PathBuf>,
    pub fingerprint: String,
}

const CHECKPOINT_MAGIC: &[u8; 8] = b"NVNCKPT1";

/// Where a run keeps its files.
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn config(&self) -> PathBuf {
        self.0.join("config.toml")
    }
    pub fn checkpoint(&self) -> PathBuf {
        self.0.join("checkpoint.nvck")
    }
    pub fn last(&self) -> PathBuf {
        self.0.join("last.bpk")
    }
    pub fn best(&self) -> PathBuf {
        self.0.join("best.bpk")
    }
    pub fn metrics(&self) -> PathBuf {
        self.0.join("metrics.csv")
    }
    pub fn split(&self) -> PathBuf {
        self.0.join("split.json")
    }
}

/// Model, optimizer and state in one file, written atomically: a kill at any moment leaves the
/// previous checkpoint or the new one, never a mix.
fn write_checkpoint(
    path: &Path,
    state: &RunState,
    model: Vec<u8>,
    optim: Vec<u8>,
) -> Result<(), String> {
    let json = serde_json::to_vec(state).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(32 + json.len() + model.len() + optim.len());
    out.extend_from_slice(CHECKPOINT_MAGIC);
    for part in [&json, &model, &optim] {
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend_from_slice(part);
    }
    crate::fsutil::write_atomic(path, &out).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_checkpoint(path: &Path) -> Result<(RunState, Vec<u8>, Vec<u8>), String> {
    let file = path.display().to_string();
    let bytes =
        crate::fsutil::read_regular(path, MAX_CACHE_BYTES).map_err(|e| format!("{file}: {e}"))?;
    let bad = || format!("{file}: not a complete nvnet checkpoint");
    if bytes.len() < 8 || &bytes[..8] != CHECKPOINT_MAGIC {
        return Err(bad());
    }
    let mut at = 8;
    let mut parts = Vec::new();
    for _ in 0..3 {
        let len = bytes
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
            .ok_or_else(bad)?;
        let part = bytes
            .get(at + 8..(at + 8).saturating_add(len))
            .ok_or_else(bad)?;
        parts.push(part.to_vec());
        at += 8 + len;
    }
    let state: RunState = serde_json::from_slice(&parts[0]).map_err(|e| format!("{file}: {e}"))?;
    let optim = parts.pop().unwrap();
    let model = parts.pop().unwrap();
    Ok((state, model, optim))
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
) -> Result<(Vec<PathBuf>, Vec<PathBuf>, Split), String> {
    let cache = config.cache_dir();
    fn list(root: &Path, reporter: &mut dyn Reporter) -> Result<Vec<CaseFiles>, String> {
        let (cases, problems) = crate::case::discover_dataset(root).map_err(|e| e.to_string())?;
        for p in problems {
            reporter.message(&format!("skipped: {p}"));
        }
        Ok(cases)
    }
    let cache_all = |cases: &[CaseFiles],
                     reporter: &mut dyn Reporter|
     -> Result<BTreeMap<String, PathBuf>, String> {
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
        return Err(format!("{}: no training cases", config.data.display()));
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
) -> Result<[f64; 3], String> {
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
            .map_err(|e| format!("{e:?}"))?;
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
) -> Result<RunState, String> {
    config.validate()?;
    config.check_devices(devices.len())?;
    if !crate::grads::trains_with_own_gradients::<B>() {
        return Err(format!(
            "nvnet does not train on {}: its convolution and GroupNorm gradients are written \
             for flex, wgpu and cuda (shared/src/grads.rs)",
            std::any::type_name::<B>()
        ));
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
    let mut model: NvNet<B> = model_config.init(device).map_err(|e| e.to_string())?;
    draw_initial_weights(&model);
    let mut optim = AdamConfig::new()
        .with_weight_decay(Some(WeightDecayConfig::new(config.weight_decay as f32)))
        .init::<B, NvNet<B>>();
    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    let mut state = if ctx.dir.checkpoint().is_file() {
        let (state, m, o) = read_checkpoint(&ctx.dir.checkpoint())?;
        model = model.load_record(
            Recorder::<B>::load(&recorder, m, device)
                .map_err(|e| format!("checkpoint model: {e}"))?,
        );
        optim = optim.load_record(
            Recorder::<B>::load(&recorder, o, device)
                .map_err(|e| format!("checkpoint optimizer: {e}"))?,
        );
        reporter.message(&format!("resuming after epoch {}", state.epochs_done));
        state
    } else {
        let (train, val, split) = prepare_data(config, reporter)?;
        std::fs::create_dir_all(&ctx.dir.0).map_err(|e| format!("{}: {e}", ctx.dir.0.display()))?;
        crate::fsutil::write_atomic(
            &ctx.dir.split(),
            serde_json::to_string_pretty(&split)
                .map_err(|e| e.to_string())?
                .as_bytes(),
        )
        .map_err(|e| e.to_string())?;
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
                .map_err(|e| format!("epoch {epoch}, step {step}: {e}"))?;
            if !losses.total.is_finite() {
                return Err(format!(
                    "epoch {epoch}, step {step}: the loss is {}; stopping (lower --lr?)",
                    losses.total
                ));
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
        weights::save(&valid, &m, &ctx.dir.last()).map_err(|e| e.to_string())?;
        if let Some(d) = val_dice {
            let mean = (d[0] + d[1] + d[2]) / 3.0;
            if state.best_mean_dice.is_none_or(|b| mean > b) {
                state.best_mean_dice = Some(mean);
                weights::save(&valid, &m, &ctx.dir.best()).map_err(|e| e.to_string())?;
            }
        }
        crate::fsutil::write_atomic(&ctx.dir.metrics(), metrics_csv(&state.history).as_bytes())
            .map_err(|e| e.to_string())?;
        let model_bytes = recorder
            .record(model.clone().into_record(), ())
            .map_err(|e| format!("checkpoint: {e}"))?;
        let optim_bytes = recorder
            .record(optim.to_record(), ())
            .map_err(|e| format!("checkpoint: {e}"))?;
        write_checkpoint(&ctx.dir.checkpoint(), &state, model_bytes, optim_bytes)?;
        reporter.epoch_end(&row, &state.history);
    }
    Ok(state)
}

/// `metrics.csv`: one row per epoch.
pub fn metrics_csv(history: &[EpochRow]) -> String {
    let mut s = String::from(
        "epoch,seconds,loss,dice_loss,l2_loss,kl_loss,lr,val_dice_WT,val_dice_TC,val_dice_ET\n",
    );
    let opt = |v: Option<f64>| v.map(|x| format!("{x}")).unwrap_or_default();
    for r in history {
        s.push_str(&format!(
            "{},{:.3},{},{},{},{},{},{},{},{}\n",
            r.epoch,
            r.seconds,
            r.loss,
            r.dice_loss,
            opt(r.l2_loss),
            opt(r.kl_loss),
            r.lr,
            opt(r.val_dice.map(|d| d[0])),
            opt(r.val_dice.map(|d| d[1])),
            opt(r.val_dice.map(|d| d[2])),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_is_seeded_and_disjoint() {
        let ids: Vec<String> = (0..50).map(|i| format!("c{i:02}")).collect();
        let a = split(&ids, 0.2, 3);
        assert_eq!(a.val.len(), 10);
        assert_eq!(a.train.len(), 40);
        assert!(a.val.iter().all(|v| !a.train.contains(v)));
        let mut rev = ids.clone();
        rev.reverse();
        assert_eq!(split(&rev, 0.2, 3), a);
        assert_ne!(split(&ids, 0.2, 4), a);
    }

    #[test]
    fn poly_decay() {
        let c = TrainConfig {
            epochs: 10,
            ..Default::default()
        };
        assert_eq!(c.lr_at(0), 1e-4);
        assert!((c.lr_at(5) - 1e-4 * 0.5f64.powf(0.9)).abs() < 1e-15);
    }

    #[test]
    fn flips_are_involutions() {
        let dims = [3, 4, 5];
        let v: Vec<f32> = (0..120).map(|i| i as f32).collect();
        for axis in 0..3 {
            let mut w = v.clone();
            flip_axis(&mut w, 2, [3, 4, 5].map(|d| d), axis);
            assert_ne!(w, v);
            flip_axis(&mut w, 2, dims, axis);
            assert_eq!(w, v);
        }
    }
}
