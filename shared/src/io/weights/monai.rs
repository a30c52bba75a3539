//! MONAI `SegResNet` / `SegResNetVAE` checkpoints: the architecture inferred from the tensor
//! names and shapes, and the names mapped between MONAI's module tree and nvnet's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::module::ParamId;
use burn::prelude::*;
use burn::tensor::DType;
use burn_store::{ModuleSnapshot, ModuleStore, SafetensorsStore, TensorSnapshot};

use super::{LoadedModel, Manifest, Provenance, WeightsError, check_holds_weights, fnv1a64};
use crate::data::modality::Modality;
use crate::nn::model::NvNetConfig;

/// The input channels of MONAI's `brats_mri_segmentation` bundle (its `model.pt`): T1ce, T1,
/// T2, FLAIR, in that order (nvnet's own order is T1, T1ce, T2, FLAIR). Its outputs are TC, WT,
/// ET, as nvnet's.
pub const MONAI_BRATS_BUNDLE_ORDER: [Modality; 4] =
    [Modality::T1ce, Modality::T1, Modality::T2, Modality::Flair];

/// Import a MONAI checkpoint in safetensors format from its bytes (works without a file system).
pub fn import_safetensors<B: Backend>(
    bytes: &[u8],
    file: &str,
    modalities: Option<&[Modality]>,
    device: &B::Device,
) -> Result<LoadedModel<B>, WeightsError> {
    let mut store = SafetensorsStore::from_bytes(Some(bytes.to_vec()));
    let tensors = store
        .get_all_snapshots()
        .map_err(|e| WeightsError::Format {
            file: file.to_string(),
            why: format!("cannot read the safetensors file: {e}"),
        })?
        .clone();
    import_monai(tensors, file, bytes, modalities, device)
}

/// Import a MONAI checkpoint saved by `torch.save` (`.pt`) from its bytes (works without a file
/// system: the page reads it too).
pub fn import_pytorch<B: Backend>(
    bytes: &[u8],
    file: &str,
    modalities: Option<&[Modality]>,
    device: &B::Device,
) -> Result<LoadedModel<B>, WeightsError> {
    let tensors = crate::io::torch::read(bytes, super::MAX_WEIGHTS_BYTES).map_err(|why| {
        WeightsError::Format {
            file: file.to_string(),
            why,
        }
    })?;
    let tensors = tensors
        .into_iter()
        .map(|(name, data)| {
            let stack = name.split('.').map(String::from).collect();
            let snapshot = TensorSnapshot::from_data(data, stack, Vec::new(), ParamId::new());
            (name, snapshot)
        })
        .collect();
    import_monai(tensors, file, bytes, modalities, device)
}

/// Build an NvNet from the tensors of a MONAI `SegResNet`/`SegResNetVAE` state dict, inferring
/// the architecture from the names and shapes.
pub fn import_monai<B: Backend>(
    tensors: BTreeMap<String, TensorSnapshot>,
    file: &str,
    bytes: &[u8],
    modalities: Option<&[Modality]>,
    device: &B::Device,
) -> Result<LoadedModel<B>, WeightsError> {
    // Checkpoints saved from DataParallel or wrapped in a dict carry a prefix.
    let tensors: BTreeMap<String, TensorSnapshot> = tensors
        .into_iter()
        .map(|(k, v)| {
            let key = ["module.", "state_dict.", "model.", "network."]
                .iter()
                .fold(k.as_str(), |k, p| k.strip_prefix(p).unwrap_or(k))
                .to_string();
            (key, v)
        })
        .collect();
    let mut notices = Vec::new();
    let vae: Vec<&String> = tensors.keys().filter(|k| k.starts_with("vae_")).collect();
    if !vae.is_empty() {
        notices.push(format!(
            "skipped the {} vae_* tensors of this SegResNetVAE checkpoint: the VAE branch is only used in training",
            vae.len()
        ));
    }
    let config = infer_monai_config(&tensors).map_err(|why| WeightsError::Architecture {
        file: file.to_string(),
        why,
    })?;
    notices.push(format!(
        "GroupNorm groups cannot be read from a checkpoint; assumed {} (MONAI's default)",
        config.norm_groups
    ));
    // float16 checkpoints hold 2 bytes a parameter.
    check_holds_weights(&config, bytes.len(), 2, file)?;
    let mut model = config
        .init::<B>(device)
        .map_err(|error| WeightsError::Config {
            file: file.to_string(),
            error,
        })?;
    let mut snapshots = Vec::new();
    let mut unexpected = Vec::new();
    let mut errors = Vec::new();
    for (name, snap) in &tensors {
        if name.starts_with("vae_") || name.ends_with("num_batches_tracked") {
            continue;
        }
        let Some(path) = monai_to_burn(name) else {
            unexpected.push(name.clone());
            continue;
        };
        // burn-store allocates what the shape says (zeros past the stored data): a shape
        // the file cannot hold is refused before that.
        let values = snap
            .shape
            .as_slice()
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d));
        if values.is_none_or(|n| n > bytes.len()) {
            errors.push(format!(
                "{name}: its shape {:?} holds more values than the file has bytes",
                snap.shape.as_slice()
            ));
            continue;
        }
        match snap.to_data() {
            Ok(data) => {
                let data = if data.dtype == DType::F32 {
                    data
                } else {
                    data.convert::<f32>()
                };
                let stack: Vec<String> = path.split('.').map(String::from).collect();
                snapshots.push(TensorSnapshot::from_data(
                    data,
                    stack,
                    Vec::new(),
                    ParamId::new(),
                ));
            }
            Err(e) => errors.push(format!("{name}: {e:?}")),
        }
    }
    let result = model.apply(snapshots, None, None, false);
    let mut all_unexpected = unexpected;
    all_unexpected.extend(result.unused.iter().cloned());
    let missing: Vec<String> = result
        .missing
        .iter()
        .map(|(p, _)| burn_to_monai(p))
        .collect();
    errors.extend(result.errors.iter().map(|e| e.to_string()));
    if !missing.is_empty() || !all_unexpected.is_empty() || !errors.is_empty() {
        return Err(WeightsError::Mismatch {
            file: file.to_string(),
            missing,
            unexpected: all_unexpected,
            errors,
        });
    }
    let modalities = modalities
        .map(<[Modality]>::to_vec)
        .unwrap_or_else(|| Modality::DEFAULT_ORDER.to_vec());
    let name = Path::new(file)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut manifest = Manifest::new(
        name.clone(),
        config,
        Provenance {
            source: "imported".into(),
            from: format!(
                "MONAI SegResNet checkpoint {name} (fnv1a64 {:016x}, {} bytes)",
                fnv1a64(bytes),
                bytes.len()
            ),
            created: String::new(),
            notes: String::new(),
        },
    );
    manifest.modalities = modalities;
    manifest.validate().map_err(|e| WeightsError::Manifest {
        file: file.to_string(),
        why: e.to_string(),
    })?;
    Ok(LoadedModel {
        model,
        manifest,
        notices,
    })
}

/// Infer the SegResNet architecture from MONAI tensor names and shapes.
fn infer_monai_config(tensors: &BTreeMap<String, TensorSnapshot>) -> Result<NvNetConfig, String> {
    let shape = |name: &str| tensors.get(name).map(|t| t.shape.to_vec());
    let init = shape("convInit.conv.weight").ok_or_else(|| {
        let sample: Vec<&String> = tensors.keys().take(5).collect();
        format!(
            "it has no convInit.conv.weight (it holds {} tensors, such as {})",
            tensors.len(),
            sample
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    if init.len() != 5 || init[2..] != [3, 3, 3] {
        return Err(format!(
            "convInit.conv.weight has shape {init:?}, expected [F, C, 3, 3, 3] of a 3-D network"
        ));
    }
    let head = shape("conv_final.2.conv.weight")
        .ok_or("it has no conv_final.2.conv.weight (the 1×1×1 output convolution)")?;
    let count_blocks = |prefix: &str| -> Vec<usize> {
        let mut per_level: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
        for name in tensors.keys() {
            let parts: Vec<&str> = name.split('.').collect();
            if parts.len() >= 4
                && parts[0] == prefix
                && parts[3] == "conv1"
                && let (Ok(i), Ok(j)) = (parts[1].parse::<usize>(), parts[2].parse::<usize>())
            {
                per_level.entry(i).or_default().insert(j);
            }
        }
        let levels = per_level
            .keys()
            .next_back()
            .map_or(0, |&l| l.saturating_add(1));
        // An index far past any real network is refused by `validate`; the list stays short.
        (0..levels.min(64))
            .map(|l| per_level.get(&l).map_or(0, |s| s.len()))
            .collect()
    };
    let blocks_down = count_blocks("down_layers");
    let blocks_up = count_blocks("up_layers");
    if blocks_down.is_empty() {
        return Err("it has no down_layers.*.conv1 tensors (no encoder ResBlocks)".into());
    }
    Ok(NvNetConfig {
        in_channels: init[1],
        out_channels: head[0],
        init_filters: init[0],
        blocks_down,
        blocks_up,
        norm_groups: 8,
        dropout: 0.0,
        vae: None,
    })
}

/// The path of a MONAI SegResNet tensor in the nvnet module, or `None` if it has none.
pub fn monai_to_burn(name: &str) -> Option<String> {
    let p: Vec<&str> = name.split('.').collect();
    let block = |rest: &[&str]| -> Option<String> {
        match rest {
            [n @ ("norm1" | "norm2"), "weight"] => Some(format!("{n}.gamma")),
            [n @ ("norm1" | "norm2"), "bias"] => Some(format!("{n}.beta")),
            [c @ ("conv1" | "conv2"), "conv", "weight"] => Some(format!("{c}.weight")),
            _ => None,
        }
    };
    let index = |s: &str| s.parse::<usize>().ok();
    match p.as_slice() {
        ["convInit", "conv", "weight"] => Some("conv_init.weight".into()),
        ["down_layers", i, "0", "conv", "weight"] => {
            Some(format!("down.{}.downsample.weight", index(i)?))
        }
        ["down_layers", i, j, rest @ ..] => {
            let j = index(j)?.checked_sub(1)?;
            Some(format!("down.{}.blocks.{j}.{}", index(i)?, block(rest)?))
        }
        ["up_samples", k, "0", "conv", "weight"] => Some(format!("up.{}.reduce.weight", index(k)?)),
        ["up_layers", k, j, rest @ ..] => Some(format!(
            "up.{}.blocks.{}.{}",
            index(k)?,
            index(j)?,
            block(rest)?
        )),
        ["conv_final", "0", "weight"] => Some("head_norm.gamma".into()),
        ["conv_final", "0", "bias"] => Some("head_norm.beta".into()),
        ["conv_final", "2", "conv", "weight"] => Some("head_conv.weight".into()),
        ["conv_final", "2", "conv", "bias"] => Some("head_conv.bias".into()),
        _ => None,
    }
}

/// The MONAI name of an nvnet module path (for messages about missing tensors).
pub fn burn_to_monai(path: &str) -> String {
    let p: Vec<&str> = path.split('.').collect();
    let block = |rest: &[&str]| -> String {
        match rest {
            [n, "gamma"] => format!("{n}.weight"),
            [n, "beta"] => format!("{n}.bias"),
            [c, "weight"] => format!("{c}.conv.weight"),
            other => other.join("."),
        }
    };
    let shifted = |j: &str| {
        j.parse::<usize>()
            .map(|j| (j + 1).to_string())
            .unwrap_or_else(|_| j.to_string())
    };
    match p.as_slice() {
        ["conv_init", "weight"] => "convInit.conv.weight".into(),
        ["down", i, "downsample", "weight"] => format!("down_layers.{i}.0.conv.weight"),
        ["down", i, "blocks", j, rest @ ..] => {
            format!("down_layers.{i}.{}.{}", shifted(j), block(rest))
        }
        ["up", k, "reduce", "weight"] => format!("up_samples.{k}.0.conv.weight"),
        ["up", k, "blocks", j, rest @ ..] => format!("up_layers.{k}.{j}.{}", block(rest)),
        ["head_norm", "gamma"] => "conv_final.0.weight".into(),
        ["head_norm", "beta"] => "conv_final.0.bias".into(),
        ["head_conv", w] => format!("conv_final.2.conv.{w}"),
        _ => path.to_string(),
    }
}
