//! The manifest an nvnet weights file carries: what the network is, what it reads and writes,
//! where it came from; and its check.

use std::collections::BTreeSet;

use burn::tensor::DType;
use serde::{Deserialize, Serialize};

use crate::data::modality::{LabelConvention, Modality, Region};
use crate::inference::postprocess::Postprocessing;
use crate::nn::model::{ConfigError, NvNetConfig};

/// Key of the manifest in the burnpack metadata.
pub const MANIFEST_KEY: &str = "nvnet.manifest";
/// Version of the manifest layout; bumped on incompatible changes.
pub const MANIFEST_VERSION: u32 = 1;

/// Where a set of weights came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Provenance {
    /// What produced them: `"imported"`, `"trained"`, `"exported"` or `"initialised"`.
    pub source: String,
    /// From what: a checkpoint's file name and checksum, a dataset fingerprint, ...
    pub from: String,
    /// When (RFC 3339, UTC).
    pub created: String,
    /// Free text: training data, epochs, seed, commit, caveats ("synthetic phantoms").
    #[serde(default)]
    pub notes: String,
}

/// What a weights file says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub name: String,
    pub config: NvNetConfig,
    /// The modality of each input channel.
    pub modalities: Vec<Modality>,
    /// The region of each output channel.
    pub outputs: Vec<Region>,
    /// The label values a label map made from this model uses.
    pub labels: LabelConvention,
    pub provenance: Provenance,
    /// Stored as float16 (`nvnet export --half`, half the download); read back as float32.
    #[serde(default)]
    pub half: bool,
    /// The label-map post-processing chosen for this model on validation cases
    /// (`nvnet evaluate --choose-postprocessing`, recorded by `nvnet export`).
    #[serde(default)]
    pub postprocessing: Postprocessing,
    /// SHA-256 of the tensors as stored (each tensor's name, then its bytes, in name order),
    /// checked on load: a file damaged inside its tensor data is refused, never run. Absent in
    /// files written before nvnet recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensors_sha256: Option<String>,
}

impl Manifest {
    pub fn new(name: impl Into<String>, config: NvNetConfig, provenance: Provenance) -> Self {
        Self {
            version: MANIFEST_VERSION,
            name: name.into(),
            config,
            modalities: Modality::DEFAULT_ORDER.to_vec(),
            outputs: Region::DEFAULT_ORDER.to_vec(),
            labels: LabelConvention::Brats2018,
            provenance,
            half: false,
            postprocessing: Postprocessing::NONE,
            tensors_sha256: None,
        }
    }

    /// How the file stores every tensor: float32, or float16 with `--half`.
    pub(super) fn stored_dtype(&self) -> DType {
        if self.half { DType::F16 } else { DType::F32 }
    }

    /// The manifest must describe a network nvnet can run as a BraTS segmenter.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.version != MANIFEST_VERSION {
            return Err(ManifestError::Version(self.version));
        }
        self.config.validate()?;
        if self.modalities.len() != self.config.in_channels {
            return Err(ManifestError::Modalities {
                listed: list(&self.modalities),
                count: self.modalities.len(),
                channels: self.config.in_channels,
            });
        }
        let distinct: BTreeSet<_> = self.modalities.iter().collect();
        if distinct.len() != self.modalities.len() {
            return Err(ManifestError::Repeated(list(&self.modalities)));
        }
        let mut outputs = self.outputs.clone();
        outputs.sort_by_key(|r| *r as u8);
        if self.outputs.len() != self.config.out_channels
            || outputs != [Region::TC, Region::WT, Region::ET]
        {
            return Err(ManifestError::Outputs {
                listed: list(&self.outputs),
                channels: self.config.out_channels,
            });
        }
        Ok(())
    }
}

/// A manifest that does not describe a network nvnet can run as a BraTS segmenter.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest version {0} is not supported (this nvnet reads {MANIFEST_VERSION})")]
    Version(u32),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{count} modalities listed ({listed}) for a network with {channels} input channels")]
    Modalities {
        listed: String,
        count: usize,
        channels: usize,
    },
    #[error("a modality is listed twice ({0})")]
    Repeated(String),
    #[error(
        "outputs must be TC, WT and ET once each, one per output channel ({channels} channels, \
         outputs {listed})"
    )]
    Outputs { listed: String, channels: usize },
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
