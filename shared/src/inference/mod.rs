//! Inference (docs/DESIGN.md §7): z-score → crop to the brain box → sliding window (MONAI semantics) →
//! sigmoid → test-time flips → label map → pasted back on the full grid.
//!
//! The sliding window keeps the volume on the host and sends one window at a time to the device,
//! so that the largest device buffer is set by the window, not by the case: a browser whose GPU
//! offers 128 MiB storage buffers still segments a 240×240×155 case.
//!
//! - `window`: MONAI's sliding window and its blending;
//! - `fit`: the window a device can take (memory budget, largest buffer);
//! - `segment`: the network over the windows, flips, read-back, labels.
//! - `postprocess`: the label-map rules chosen on validation cases (islands, small ET).

mod fit;
pub mod postprocess;
mod segment;
mod window;

pub use fit::{check_buffer, check_roi, check_weights_fit, choose_roi, window_bytes};
pub use segment::{
    Segmentation, Segmenter, WindowPasses, WindowWork, finish, passes_per_window, read_async,
    segment, window_work,
};
pub use window::{Blend, SlidingWindow, importance_map};

use crate::data::case::Case;
use crate::data::modality::{LabelConvention, Modality};
use crate::data::preprocess::{Crop, normalize_nonzero};
use crate::inference::postprocess::Postprocessing;
use crate::nn::precision::Precision;

/// The options of a prediction.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InferenceOptions {
    /// The window; `None`: the whole cropped box when it fits `memory_budget`, else the largest
    /// window of the network's size multiple that does.
    pub roi: Option<[usize; 3]>,
    pub overlap: f64,
    pub blend: Blend,
    /// The mean over the 8 axis-flip combinations.
    pub tta: bool,
    pub labels: LabelConvention,
    /// Applied to the label map (the model's manifest holds the set chosen on validation).
    #[serde(default)]
    pub postprocessing: Postprocessing,
    /// Bytes of device memory one window may use (activations, estimated).
    pub memory_budget: u64,
    /// The largest single buffer the device can bind (WebGPU's `maxStorageBufferBindingSize`
    /// and `maxBufferSize`, the smaller): no tensor of a window may exceed it.
    #[serde(default)]
    pub max_buffer: Option<u64>,
    /// The float type the network runs in: float16 on GPUs that offer it halves a window's
    /// activations (`nn::precision`).
    #[serde(default)]
    pub precision: Precision,
}

impl Default for InferenceOptions {
    fn default() -> Self {
        InferenceOptions {
            roi: None,
            overlap: 0.5,
            blend: Blend::Gaussian,
            tta: true,
            labels: LabelConvention::Brats2018,
            postprocessing: Postprocessing::NONE,
            memory_budget: 4 << 30,
            max_buffer: None,
            precision: Precision::F32,
        }
    }
}

/// A case ready for the network: normalized, cropped to the brain box.
pub struct Prepared {
    pub crop: Crop,
    /// Channels in the model's modality order, network order, crop-sized.
    pub input: Vec<f32>,
    pub channels: usize,
}

/// Why a case cannot be segmented, or a segmentation stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InferenceError {
    #[error(
        "{case}: after normalisation every voxel of every modality is zero (each is empty or one \
         constant value): there is no brain to segment"
    )]
    NoBrain { case: String },
    #[error("{case}: the brain box {size:?} is too large to segment")]
    BoxTooLarge { case: String, size: [usize; 3] },
    #[error(
        "window {roi:?}: each size must be a positive multiple of {multiple} (the network halves \
         it {} times)", multiple.trailing_zeros()
    )]
    WindowSize { roi: [usize; 3], multiple: usize },
    #[error(
        "window {roi:?} needs about {} of activations, more than the memory budget ({}): choose a \
         smaller window, or raise the budget", size(*needs), size(*budget as f64)
    )]
    OverBudget {
        roi: [usize; 3],
        needs: f64,
        budget: u64,
    },
    /// `subject` names what set the window (`window`, or a flag); `advice` what to do.
    #[error(
        "{subject} {roi:?}: its largest tensor ({}) exceeds the device's largest buffer ({}): \
         {advice}", size(*largest), size(*max as f64)
    )]
    TensorOverBuffer {
        subject: String,
        advice: String,
        roi: [usize; 3],
        largest: f64,
        max: u64,
    },
    #[error(
        "the network's largest weight tensor ({}, F={init_filters}) exceeds the device's largest \
         buffer ({}): the device, with these limits, cannot hold the network",
        size(*bytes), size(*max as f64)
    )]
    WeightsOverBuffer {
        bytes: f64,
        init_filters: usize,
        max: u64,
    },
    #[error(
        "window {window} of {windows}: the network's output holds {value} (broken weights or a \
         device fault)"
    )]
    NotFinite {
        window: usize,
        windows: usize,
        value: f32,
    },
    #[error("reading a window back from the device: {0}")]
    ReadBack(String),
}

/// z-score (nonzero, per channel) and crop to the brain box padded to a multiple of 8 (MONAI
/// `CropForeground(select_fn = x ≠ 0, k_divisible = 8)`: centred, reaching outside the grid
/// where needed). Errors when every voxel is zero.
pub fn prepare(case: &Case, modalities: &[Modality]) -> Result<Prepared, InferenceError> {
    let mut data = case.channels(modalities);
    let channels = modalities.len();
    normalize_nonzero(&mut data, channels);
    let crop = Crop::brain_box(&data, channels, case.dims(), 8).ok_or_else(|| {
        InferenceError::NoBrain {
            case: case.id.clone(),
        }
    })?;
    // Each axis grows by less than 8 and is at least 8: the box is within 8× the grid, which
    // the readers cap; checked all the same, in 64 bits, before it is allocated.
    let voxels = crop.size.iter().map(|&s| s as u64).product::<u64>();
    if voxels * channels as u64 > 4 * crate::io::nifti::MAX_VOXELS {
        return Err(InferenceError::BoxTooLarge {
            case: case.id.clone(),
            size: crop.size,
        });
    }
    Ok(Prepared {
        input: crop.crop(&data, channels),
        crop,
        channels,
    })
}

/// Bytes in the unit that reads best (KiB, MiB or GiB).
fn size(bytes: f64) -> String {
    let units = [("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (unit, shift) in units {
        let v = bytes / (1u64 << shift) as f64;
        if v >= 1.0 {
            return format!("{v:.1} {unit}");
        }
    }
    format!("{bytes:.0} bytes")
}
