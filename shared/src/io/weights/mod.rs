//! The weights file (`.bpk`: Burn's burnpack record with an nvnet manifest in its metadata) and
//! the import of MONAI `SegResNet` / `SegResNetVAE` checkpoints (`.pt`, `.safetensors`).
//!
//! - `manifest`: what a weights file says about its network, and its check;
//! - `monai`: MONAI's checkpoints, their architecture and names;
//! - here: reading and writing `.bpk` files, and loading any of the three formats.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use burn::tensor::DType;
use burn_store::{ApplyResult, BurnpackStore, ModuleSnapshot, ModuleStore};
use serde::Deserialize;

use crate::data::modality::Modality;
use crate::nn::model::{ConfigError, NvNet, NvNetConfig};

mod manifest;
mod monai;

pub use manifest::{MANIFEST_KEY, MANIFEST_VERSION, Manifest, ManifestError, Provenance};
pub use monai::{
    MONAI_BRATS_BUNDLE_ORDER, burn_to_monai, import_monai, import_pytorch, import_safetensors,
    monai_to_burn,
};

/// Burnpack layout (burn-store keeps its module private): magic "BURN" (u32 LE), format version
/// (u16), CBOR metadata size (u32), then the CBOR metadata and the tensor data.
const BURNPACK_MAGIC: u32 = 0x4255_524E;
const BURNPACK_HEADER: usize = 10;

/// The largest weights file read: an F=32 network with its VAE is 75 MB in float32, a MONAI
/// checkpoint with Adam's moments three times that.
pub const MAX_WEIGHTS_BYTES: u64 = 1 << 30;

/// The part of burnpack's CBOR metadata nvnet reads: the free key/value map.
#[derive(Deserialize)]
struct BurnpackMeta {
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// Why weights could not be read, written or imported. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    // Not a `source` field: the message already holds it, and error chains would repeat it.
    #[error("{file}: {error}")]
    Io { file: String, error: std::io::Error },
    #[error("{file}: not a weights file nvnet can read: {why}")]
    Format { file: String, why: String },
    #[error("{file}: the nvnet manifest is missing or invalid: {why}")]
    Manifest { file: String, why: String },
    #[error("{file}: not a MONAI SegResNet checkpoint: {why}")]
    Architecture { file: String, why: String },
    #[error("{file}: the weights do not fit the network{}", mismatch_details(.missing, .unexpected, .errors))]
    Mismatch {
        file: String,
        missing: Vec<String>,
        unexpected: Vec<String>,
        errors: Vec<String>,
    },
    #[error("{file}: {error}")]
    Config { file: String, error: ConfigError },
    /// Burn could not serialise a network (no file yet: `save` names it).
    #[error("the weights could not be serialised: {why}")]
    Encode { why: String },
}

fn mismatch_details(missing: &[String], unexpected: &[String], errors: &[String]) -> String {
    let mut out = String::new();
    let mut part = |title: &str, items: &[String]| {
        if !items.is_empty() {
            let shown: Vec<_> = items.iter().take(12).cloned().collect();
            let more = if items.len() > 12 {
                format!(" and {} more", items.len() - 12)
            } else {
                String::new()
            };
            out.push_str(&format!(
                "; {title} ({}): {}{more}",
                items.len(),
                shown.join(", ")
            ));
        }
    };
    part("missing tensors", missing);
    part("unexpected tensors", unexpected);
    part("errors", errors);
    out
}

/// A network with the manifest that describes it.
#[derive(Debug)]
pub struct LoadedModel<B: Backend> {
    pub model: NvNet<B>,
    pub manifest: Manifest,
    /// Things the user should know (skipped VAE tensors, assumed GroupNorm groups, ...).
    pub notices: Vec<String>,
}

/// What kind of file a set of weights is, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    Burnpack,
    /// `torch.save` (zip) or a legacy pickle.
    Pytorch,
    Safetensors,
}

impl WeightsFormat {
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.len() >= BURNPACK_HEADER
            && u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) == BURNPACK_MAGIC
        {
            Some(Self::Burnpack)
        } else if bytes.starts_with(b"PK\x03\x04") || bytes.first() == Some(&0x80) {
            Some(Self::Pytorch)
        } else if bytes.len() >= 9 && bytes[8] == b'{' {
            Some(Self::Safetensors)
        } else {
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The nvnet weights file.

/// Serialise a model and its manifest to burnpack bytes, the manifest with the checksum of the
/// tensors as they are stored.
pub fn to_bytes<B: Backend>(
    model: &NvNet<B>,
    manifest: &Manifest,
) -> Result<Vec<u8>, WeightsError> {
    let encode = || -> Result<Vec<u8>, String> {
        let mut manifest = manifest.clone();
        manifest.tensors_sha256 = None;
        let first = burnpack_bytes(model, &manifest)?;
        let mut store = BurnpackStore::from_bytes(Some(burn::tensor::Bytes::from_bytes_vec(first)));
        manifest.tensors_sha256 = Some(stored_tensors(&mut store, manifest.stored_dtype())?.sha256);
        burnpack_bytes(model, &manifest)
    };
    encode().map_err(|why| WeightsError::Encode { why })
}

fn burnpack_bytes<B: Backend>(model: &NvNet<B>, manifest: &Manifest) -> Result<Vec<u8>, String> {
    let json = serde_json::to_string(manifest).map_err(|e| e.to_string())?;
    let mut store = BurnpackStore::from_bytes(None).metadata(MANIFEST_KEY, json);
    if manifest.half {
        store = store.with_to_adapter(burn_store::HalfPrecisionAdapter::new());
    }
    store.collect_from(model).map_err(|e| e.to_string())?;
    store
        .get_bytes()
        .map(|b| b.to_vec())
        .map_err(|e| e.to_string())
}

/// Write a weights file atomically (temp file in the same folder, then rename).
pub fn save<B: Backend>(
    model: &NvNet<B>,
    manifest: &Manifest,
    path: &Path,
) -> Result<(), WeightsError> {
    let file = path.display().to_string();
    let bytes = to_bytes(model, manifest).map_err(|e| match e {
        WeightsError::Encode { why } => WeightsError::Format {
            file: file.clone(),
            why,
        },
        e => e,
    })?;
    crate::io::fsutil::write_atomic(path, &bytes).map_err(|error| WeightsError::Io { file, error })
}

/// Read the manifest of a burnpack file without building the network.
pub fn read_manifest(bytes: &[u8], file: &str) -> Result<Manifest, WeightsError> {
    let format = |why: String| WeightsError::Format {
        file: file.to_string(),
        why,
    };
    if WeightsFormat::sniff(bytes) != Some(WeightsFormat::Burnpack) {
        return Err(format("it does not start with the burnpack magic".into()));
    }
    let metadata_size = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]) as usize;
    let end = BURNPACK_HEADER
        .checked_add(metadata_size)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| {
            format(format!(
                "truncated: the header announces {metadata_size} bytes of metadata"
            ))
        })?;
    let meta: BurnpackMeta = ciborium::de::from_reader(&bytes[BURNPACK_HEADER..end])
        .map_err(|e| format(format!("corrupt metadata: {e}")))?;
    let manifest_err = |why: String| WeightsError::Manifest {
        file: file.to_string(),
        why,
    };
    let json = meta.metadata.get(MANIFEST_KEY).ok_or_else(|| {
        manifest_err("this burnpack file has no nvnet manifest (was it written by nvnet?)".into())
    })?;
    let manifest: Manifest = serde_json::from_str(json).map_err(|e| manifest_err(e.to_string()))?;
    manifest
        .validate()
        .map_err(|e| manifest_err(e.to_string()))?;
    Ok(manifest)
}

/// Load an nvnet weights file from its bytes.
pub fn load_bytes<B: Backend>(
    bytes: &[u8],
    file: &str,
    device: &B::Device,
) -> Result<LoadedModel<B>, WeightsError> {
    let manifest = read_manifest(bytes, file)?;
    check_holds_weights(
        &manifest.config,
        bytes.len(),
        if manifest.half { 2 } else { 4 },
        file,
    )?;
    let mut model = manifest
        .config
        .init::<B>(device)
        .map_err(|error| WeightsError::Config {
            file: file.to_string(),
            error,
        })?;
    let mut store =
        BurnpackStore::from_bytes(Some(burn::tensor::Bytes::from_bytes_vec(bytes.to_vec())));
    check_tensors(&mut store, &manifest, file)?;
    if manifest.half {
        store = store.with_from_adapter(burn_store::HalfPrecisionAdapter::new());
    }
    let result = model
        .load_from(&mut store)
        .map_err(|e| WeightsError::Format {
            file: file.to_string(),
            why: e.to_string(),
        })?;
    check_applied(&result, file)?;
    Ok(LoadedModel {
        model,
        manifest,
        notices: Vec::new(),
    })
}

/// What the tensors of a burnpack file hold, read as they are stored.
struct StoredTensors {
    sha256: String,
    /// The first tensor holding NaN or an infinity, with that value.
    non_finite: Option<(String, f32)>,
}

/// Read every tensor of a burnpack store and checksum them (each name, then its bytes, in name
/// order). A tensor stored as another dtype than `expected`, or whose bytes do not match its
/// shape, is an error, found before its data is read.
fn stored_tensors(store: &mut BurnpackStore, expected: DType) -> Result<StoredTensors, String> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut non_finite = None;
    // A BTreeMap: in name order.
    for (name, snapshot) in store.get_all_snapshots().map_err(|e| e.to_string())? {
        if snapshot.dtype != expected {
            return Err(format!(
                "tensor {name} is stored as {:?}, where the manifest says {expected:?}",
                snapshot.dtype
            ));
        }
        let data = snapshot
            .to_data()
            .map_err(|e| format!("tensor {name}: {e}"))?;
        if data.bytes.len() != snapshot.data_len() {
            return Err(format!(
                "tensor {name} has {} bytes, where its shape {:?} needs {}",
                data.bytes.len(),
                snapshot.shape.as_slice(),
                snapshot.data_len()
            ));
        }
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update((data.bytes.len() as u64).to_le_bytes());
        hasher.update(&data.bytes[..]);
        if non_finite.is_none()
            && matches!(snapshot.dtype, DType::F32 | DType::F16)
            && let Some(v) = data.iter::<f32>().find(|v| !v.is_finite())
        {
            non_finite = Some((name.clone(), v));
        }
    }
    let sha256 = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(StoredTensors { sha256, non_finite })
}

/// Before burn-store builds anything: burn-store takes each tensor's dtype and shape from the
/// file's header as they stand (a float tensor relabelled as an integer or as f64, or given
/// fewer bytes than its shape needs, panicked or crashed inside the backend); nvnet writes every
/// tensor as f32 (f16 with `--half`). Then the manifest's checksum, and no NaN or infinity.
fn check_tensors(
    store: &mut BurnpackStore,
    manifest: &Manifest,
    file: &str,
) -> Result<(), WeightsError> {
    let format = |why: String| WeightsError::Format {
        file: file.to_string(),
        why,
    };
    let stored = stored_tensors(store, manifest.stored_dtype()).map_err(format)?;
    if let Some(recorded) = &manifest.tensors_sha256
        && *recorded != stored.sha256
    {
        return Err(format(format!(
            "its tensors are damaged: their SHA-256 is {}, where its manifest records {recorded}",
            stored.sha256
        )));
    }
    if let Some((name, v)) = stored.non_finite {
        return Err(format(format!(
            "tensor {name} holds {v}: the weights are unusable"
        )));
    }
    Ok(())
}

fn check_applied(result: &ApplyResult, file: &str) -> Result<(), WeightsError> {
    let missing: Vec<String> = result.missing.iter().map(|(p, _)| p.clone()).collect();
    if missing.is_empty() && result.unused.is_empty() && result.errors.is_empty() {
        return Ok(());
    }
    Err(WeightsError::Mismatch {
        file: file.to_string(),
        missing,
        unexpected: result.unused.clone(),
        errors: result.errors.iter().map(|e| e.to_string()).collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// Any weights: nvnet's own, or a MONAI checkpoint.

/// The embedded default model, the same bytes in the CLI and in the page: F=8, trained on
/// synthetic phantoms (`nvnet synth`) — a demonstration, not for clinical use. How it was made
/// and how well it does: docs/TRAINING.md.
pub fn default_model() -> Option<&'static [u8]> {
    Some(&DEFAULT_MODEL)
}

/// A static, not a constant in `default_model`'s body: a small function is inlined into other
/// crates, and with it a constant's bytes: each crate would keep its own copy of the model.
static DEFAULT_MODEL: [u8; include_bytes!("../../../models/default.bpk").len()] =
    *include_bytes!("../../../models/default.bpk");

/// A weights file's name (for messages) and its bytes, at most `MAX_WEIGHTS_BYTES`.
fn read_weights_file(path: &Path) -> Result<(String, Vec<u8>), WeightsError> {
    let file = path.display().to_string();
    let bytes = crate::io::fsutil::read_regular(path, MAX_WEIGHTS_BYTES).map_err(|error| {
        WeightsError::Io {
            file: file.clone(),
            error,
        }
    })?;
    Ok((file, bytes))
}

/// The manifest of an nvnet weights file, read without building its network; `None` for the
/// other formats (MONAI checkpoints carry none).
pub fn read_file_manifest(path: &Path) -> Result<Option<Manifest>, WeightsError> {
    let (file, bytes) = read_weights_file(path)?;
    match WeightsFormat::sniff(&bytes) {
        Some(WeightsFormat::Burnpack) => read_manifest(&bytes, &file).map(Some),
        _ => Ok(None),
    }
}

/// Load weights of any supported format from a file; `modalities` is the channel order of a
/// MONAI checkpoint (ignored for nvnet files, whose manifest says it).
pub fn load_file<B: Backend>(
    path: &Path,
    modalities: Option<&[Modality]>,
    device: &B::Device,
) -> Result<LoadedModel<B>, WeightsError> {
    let (file, bytes) = read_weights_file(path)?;
    load_any_bytes(&bytes, &file, modalities, device)
}

/// Before a network is built for a file: its architecture is within bounds, and the file holds
/// at least the bytes of the weights it needs (`bytes_per_param` each), so that a few bytes that
/// describe a huge network are refused rather than allocated.
pub(super) fn check_holds_weights(
    config: &NvNetConfig,
    file_bytes: usize,
    bytes_per_param: u64,
    file: &str,
) -> Result<(), WeightsError> {
    config.validate().map_err(|error| WeightsError::Config {
        file: file.to_string(),
        error,
    })?;
    let segmentation = NvNetConfig {
        vae: None,
        ..config.clone()
    };
    let shape = [config.size_multiple(); 3];
    let params = crate::nn::info::summarize(&segmentation, shape).params as u64;
    if params * bytes_per_param > file_bytes as u64 {
        return Err(WeightsError::Format {
            file: file.to_string(),
            why: format!(
                "it describes a network of {params} parameters (F={}, {} levels) but holds only \
                 {file_bytes} bytes",
                config.init_filters,
                config.levels()
            ),
        });
    }
    Ok(())
}

/// Load weights from bytes (the web page's "Load weights…"): nvnet `.bpk`, or a MONAI
/// checkpoint as `.safetensors` or PyTorch's `.pt` (read by `io::torch`, here and in the page).
pub fn load_any_bytes<B: Backend>(
    bytes: &[u8],
    file: &str,
    modalities: Option<&[Modality]>,
    device: &B::Device,
) -> Result<LoadedModel<B>, WeightsError> {
    if bytes.len() as u64 > MAX_WEIGHTS_BYTES {
        return Err(WeightsError::Format {
            file: file.to_string(),
            why: format!(
                "{} bytes, more than nvnet reads from a weights file ({} MiB)",
                bytes.len(),
                MAX_WEIGHTS_BYTES >> 20
            ),
        });
    }
    match WeightsFormat::sniff(bytes) {
        Some(WeightsFormat::Burnpack) => load_bytes(bytes, file, device),
        Some(WeightsFormat::Pytorch) => import_pytorch(bytes, file, modalities, device),
        Some(WeightsFormat::Safetensors) => import_safetensors(bytes, file, modalities, device),
        None => Err(WeightsError::Format {
            file: file.to_string(),
            why: "it is neither an nvnet .bpk, a PyTorch .pt nor a .safetensors file".into(),
        }),
    }
}

/// A content checksum for provenance (not for security).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{ModuleMapper, Param};

    type B = crate::device::backend::Cpu;

    fn small() -> (NvNet<B>, Manifest) {
        let config = NvNetConfig {
            init_filters: 8,
            blocks_down: vec![1, 1],
            blocks_up: vec![1],
            ..Default::default()
        };
        let model = config.init::<B>(&Default::default()).unwrap();
        let provenance = Provenance {
            source: "initialised".into(),
            ..Default::default()
        };
        (model, Manifest::new("small", config, provenance))
    }

    #[test]
    fn damaged_tensor_data_is_refused_by_the_manifests_checksum() {
        let (model, manifest) = small();
        let bytes = to_bytes(&model, &manifest).unwrap();
        let loaded = load_bytes::<B>(&bytes, "w.bpk", &Default::default()).unwrap();
        let recorded = loaded.manifest.tensors_sha256.clone().unwrap();
        assert_eq!(recorded.len(), 64);
        // Written twice, the same checksum: it depends on the tensors alone.
        assert_eq!(to_bytes(&model, &loaded.manifest).unwrap(), bytes);
        for half in [false, true] {
            let manifest = Manifest {
                half,
                ..manifest.clone()
            };
            let mut bad = to_bytes(&model, &manifest).unwrap();
            // One bit in the tensor data, which follows the metadata to the end of the file.
            let at = bad.len() - bad.len() / 4;
            bad[at] ^= 0x10;
            let e = load_bytes::<B>(&bad, "w.bpk", &Default::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("w.bpk") && e.contains("damaged"), "{e}");
        }
    }

    /// The CLI and the page both check the embedded model's tensors against its manifest.
    #[test]
    fn the_embedded_model_records_its_checksum_and_matches_it() {
        let bytes = default_model().unwrap();
        let manifest = read_manifest(bytes, "default").unwrap();
        assert!(manifest.tensors_sha256.is_some());
        load_bytes::<B>(bytes, "default", &Default::default()).unwrap();
    }

    #[test]
    fn weights_holding_nan_are_refused() {
        struct Poison;
        impl ModuleMapper<B> for Poison {
            fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
                p.map(|t| t.mul_scalar(f32::NAN))
            }
        }
        let (model, manifest) = small();
        let bytes = to_bytes(&model.map(&mut Poison), &manifest).unwrap();
        let e = load_bytes::<B>(&bytes, "nan.bpk", &Default::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("nan.bpk") && e.contains("NaN"), "{e}");
    }
}
