//! Inference (docs/DESIGN.md §7): z-score → crop to the brain box → sliding window (MONAI semantics) →
//! sigmoid → test-time flips → label map → pasted back on the full grid.
//!
//! The sliding window keeps the volume on the host and sends one window at a time to the device,
//! so that the largest device buffer is set by the window, not by the case: a browser whose GPU
//! offers 128 MiB storage buffers still segments a 240×240×155 case.

use burn::prelude::*;
use burn::tensor::TensorData;

use crate::case::Case;
use crate::labels;
use crate::modality::{LabelConvention, Modality, Region};
use crate::model::NvNet;
use crate::postprocess::Postprocessing;
use crate::preprocess::{Crop, normalize_nonzero};

/// How overlapping windows are weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Blend {
    /// All ones.
    Constant,
    /// exp(−x²/2σ²) per axis, σ = 0.125·roi (MONAI's default sigma_scale).
    Gaussian,
}

impl std::str::FromStr for Blend {
    type Err = crate::names::UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "constant" => Ok(Blend::Constant),
            "gaussian" => Ok(Blend::Gaussian),
            other => Err(Self::Err::new("blending", other, "gaussian or constant")),
        }
    }
}

/// MONAI's importance map for a window: `roi` values in network order.
pub fn importance_map(roi: [usize; 3], blend: Blend, sigma_scale: f64) -> Vec<f32> {
    let n: usize = roi.iter().product();
    match blend {
        Blend::Constant => vec![1.0; n],
        Blend::Gaussian => {
            // float32 as MONAI computes it, so that the clamp lands on the same values.
            let axis = |a: usize| -> Vec<f32> {
                let sigma = (roi[a] as f64 * sigma_scale) as f32;
                (0..roi[a])
                    .map(|i| {
                        let x = i as f32 - (roi[a] as f32 - 1.0) / 2.0;
                        (x * x / (-2.0 * sigma * sigma)).exp()
                    })
                    .collect()
            };
            let (x, y, z) = (axis(0), axis(1), axis(2));
            let mut map = Vec::with_capacity(n);
            for a in &x {
                for b in &y {
                    for c in &z {
                        map.push(a * b * c);
                    }
                }
            }
            let min = map.iter().copied().fold(f32::INFINITY, f32::min).max(1e-3);
            for v in &mut map {
                *v = v.max(min);
            }
            map
        }
    }
}

/// A sliding-window pass over one volume, MONAI's `sliding_window_inference` semantics:
/// volumes smaller than the window are zero-padded (centred, diff//2 before), the step is
/// int(roi·(1−overlap)) (at least 1; the whole axis when roi equals it), and the last window
/// of an axis is shifted back to end at the border. Predictions are blended as Σ w·p / Σ w.
pub struct SlidingWindow {
    dims: [usize; 3],
    padded: [usize; 3],
    pad_before: [usize; 3],
    roi: [usize; 3],
    starts: Vec<[usize; 3]>,
    weights: Vec<f32>,
    out_channels: usize,
    sum: Vec<f32>,
    count: Vec<f32>,
}

impl SlidingWindow {
    pub fn new(
        dims: [usize; 3],
        roi: [usize; 3],
        overlap: f64,
        blend: Blend,
        out_channels: usize,
    ) -> Self {
        let padded = [0, 1, 2].map(|a| dims[a].max(roi[a]));
        let pad_before = [0, 1, 2].map(|a| (padded[a] - dims[a]) / 2);
        let mut axis_starts = [vec![], vec![], vec![]];
        for a in 0..3 {
            let interval = if roi[a] == padded[a] {
                roi[a]
            } else {
                ((roi[a] as f64 * (1.0 - overlap)) as usize).max(1)
            };
            // dense_patch_slices: the first d with d·interval + roi ≥ size, and one more.
            let num = padded[a].div_ceil(interval);
            let last = (0..num)
                .find(|d| d * interval + roi[a] >= padded[a])
                .map(|d| d + 1)
                .unwrap_or(1);
            for d in 0..last {
                let s = d * interval;
                axis_starts[a].push(s - (s + roi[a]).saturating_sub(padded[a]));
            }
        }
        let mut starts = Vec::new();
        for &x in &axis_starts[0] {
            for &y in &axis_starts[1] {
                for &z in &axis_starts[2] {
                    starts.push([x, y, z]);
                }
            }
        }
        let n: usize = padded.iter().product();
        SlidingWindow {
            dims,
            padded,
            pad_before,
            roi,
            starts,
            weights: importance_map(roi, blend, 0.125),
            out_channels,
            sum: vec![0.0; out_channels * n],
            count: vec![0.0; n],
        }
    }

    pub fn roi(&self) -> [usize; 3] {
        self.roi
    }

    /// How many windows there are.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Window `w` of `channels` volumes of the original dims: `channels` × roi values.
    pub fn extract(&self, input: &[f32], channels: usize, w: usize) -> Vec<f32> {
        let crop = Crop {
            full: self.dims,
            start: [0, 1, 2].map(|a| self.starts[w][a] as isize - self.pad_before[a] as isize),
            size: self.roi,
        };
        crop.crop(input, channels)
    }

    /// Add the prediction for window `w` (`out_channels` × roi values).
    pub fn add(&mut self, w: usize, prediction: &[f32]) {
        let [rx, ry, rz] = self.roi;
        let [_, py, pz] = self.padded;
        let n_win = rx * ry * rz;
        let n_pad: usize = self.padded.iter().product();
        assert_eq!(
            prediction.len(),
            self.out_channels * n_win,
            "window prediction size"
        );
        let s = self.starts[w];
        for x in 0..rx {
            for y in 0..ry {
                let row = ((s[0] + x) * py + s[1] + y) * pz + s[2];
                let wrow = (x * ry + y) * rz;
                for z in 0..rz {
                    self.count[row + z] += self.weights[wrow + z];
                }
                for c in 0..self.out_channels {
                    let dst = &mut self.sum[c * n_pad + row..c * n_pad + row + rz];
                    let src = &prediction[c * n_win + wrow..c * n_win + wrow + rz];
                    for z in 0..rz {
                        dst[z] += src[z] * self.weights[wrow + z];
                    }
                }
            }
        }
    }

    /// Σ w·p / Σ w over the original dims: `out_channels` volumes.
    pub fn finish(self) -> Vec<f32> {
        let n_pad: usize = self.padded.iter().product();
        let mut blended = self.sum;
        for c in 0..self.out_channels {
            for (v, w) in blended[c * n_pad..(c + 1) * n_pad]
                .iter_mut()
                .zip(&self.count)
            {
                *v /= *w;
            }
        }
        let crop = Crop {
            full: self.padded,
            start: self.pad_before.map(|p| p as isize),
            size: self.dims,
        };
        crop.crop(&blended, self.out_channels)
    }
}

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
    if voxels * channels as u64 > 4 * crate::nifti::MAX_VOXELS {
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

/// The window size for a box: the whole box, rounded up to a multiple of the network's size
/// multiple (8 for four levels), when its estimated activation memory fits `budget` and its
/// largest tensor fits `max_buffer`; else the largest such window that does, shrinking the
/// longest axis first.
pub fn choose_roi(
    config: &crate::NvNetConfig,
    box_size: [usize; 3],
    budget: u64,
    max_buffer: Option<u64>,
) -> [usize; 3] {
    // What the network can take: 8 for the paper's four levels, more for a deeper import.
    let m = config.size_multiple().max(1);
    let mut roi = box_size.map(|s| s.div_ceil(m).max(2) * m);
    loop {
        let bytes = crate::info::summarize(config, roi).inference_bytes;
        let largest = crate::info::largest_tensor_bytes(config, roi);
        let fits = bytes <= budget as f64 && max_buffer.is_none_or(|b| largest <= b as f64);
        if fits || roi.iter().all(|&r| r <= 2 * m) {
            return roi;
        }
        let a = (0..3).max_by_key(|&a| roi[a]).unwrap();
        roi[a] -= m;
    }
}

/// A window the user chose: sizes the network can take, and within the memory budget and the
/// device's largest buffer (a window that does not fit fails before any work, with a message,
/// rather than in the allocator).
pub fn check_roi(
    config: &crate::NvNetConfig,
    roi: [usize; 3],
    options: &InferenceOptions,
) -> Result<(), InferenceError> {
    let k = config.size_multiple();
    if roi.iter().any(|r| *r == 0 || r % k != 0) {
        return Err(InferenceError::WindowSize { roi, multiple: k });
    }
    let bytes = crate::info::summarize(config, roi).inference_bytes;
    if bytes > options.memory_budget as f64 {
        return Err(InferenceError::OverBudget {
            roi,
            needs: bytes,
            budget: options.memory_budget,
        });
    }
    check_buffer(
        config,
        roi,
        options.max_buffer,
        ("window", "choose a smaller window"),
    )
}

/// The network's weights and a window's largest tensor within the device's largest buffer, a
/// hard limit (the memory budget is an estimate: the smallest window may exceed it). A message
/// about the window names it `subject` (`window`, or the option that set it: `--shape`,
/// `--crop`) and ends with `advice`.
pub fn check_buffer(
    config: &crate::NvNetConfig,
    roi: [usize; 3],
    max_buffer: Option<u64>,
    (subject, advice): (&str, &str),
) -> Result<(), InferenceError> {
    let Some(max) = max_buffer else {
        return Ok(());
    };
    check_weights_fit(config, max)?;
    let largest = crate::info::largest_tensor_bytes(config, roi);
    if largest > max as f64 {
        return Err(InferenceError::TensorOverBuffer {
            subject: subject.to_string(),
            advice: advice.to_string(),
            roi,
            largest,
            max,
        });
    }
    Ok(())
}

/// The network's largest weight tensor within a device's largest buffer (`max_buffer`): checked
/// before a model is built on a GPU, whose allocator fails on its own thread otherwise.
pub fn check_weights_fit(
    config: &crate::NvNetConfig,
    max_buffer: u64,
) -> Result<(), InferenceError> {
    let weights = crate::info::largest_weight_bytes(config);
    if weights > max_buffer as f64 {
        return Err(InferenceError::WeightsOverBuffer {
            bytes: weights,
            init_filters: config.init_filters,
            max: max_buffer,
        });
    }
    Ok(())
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

/// What a prediction gives, on the case's full grid, in file order (i fastest).
pub struct Segmentation {
    /// One volume per output region, in `outputs` order.
    pub probabilities: Vec<f32>,
    pub outputs: Vec<Region>,
    /// BraTS labels.
    pub labels: Vec<u8>,
    /// Variance over the flips of each region's probability (with TTA), `outputs` order.
    pub uncertainty: Option<Vec<f32>>,
    pub roi: [usize; 3],
    pub windows: usize,
}

/// The eight axis-flip combinations of the spatial axes of a [1, C, D, H, W] tensor.
const FLIPS: [&[isize]; 8] = [&[], &[2], &[3], &[4], &[2, 3], &[2, 4], &[3, 4], &[2, 3, 4]];

fn flip<B: Backend>(t: Tensor<B, 5>, axes: &[isize]) -> Tensor<B, 5> {
    match axes {
        [] => t,
        [a] => t.flip([*a]),
        [a, b] => t.flip([*a, *b]),
        [a, b, c] => t.flip([*a, *b, *c]),
        _ => unreachable!(),
    }
}

/// The device work for one window: logits of a single model without TTA (MONAI blends logits),
/// else the mean sigmoid over models × flips and, with TTA, its variance over the flips.
pub struct WindowWork<B: Backend> {
    pub mean: Tensor<B, 5>,
    pub variance: Option<Tensor<B, 5>>,
}

pub fn window_work<B: Backend>(
    models: &[NvNet<B>],
    window: Tensor<B, 5>,
    tta: bool,
) -> WindowWork<B> {
    if models.len() == 1 && !tta {
        return WindowWork {
            mean: models[0].forward(window),
            variance: None,
        };
    }
    let flips: &[&[isize]] = if tta { &FLIPS } else { &FLIPS[..1] };
    let mut sum: Option<Tensor<B, 5>> = None;
    let mut sum_sq: Option<Tensor<B, 5>> = None;
    for model in models {
        for axes in flips {
            let p = burn::tensor::activation::sigmoid(flip(
                model.forward(flip(window.clone(), axes)),
                axes,
            ));
            sum_sq = Some(match sum_sq {
                Some(s) => s + p.clone() * p.clone(),
                None => p.clone() * p.clone(),
            });
            sum = Some(match sum {
                Some(s) => s + p,
                None => p,
            });
        }
    }
    let n = (models.len() * flips.len()) as f32;
    let mean = sum.expect("at least one model") / n;
    let variance =
        tta.then(|| (sum_sq.expect("set") / n - mean.clone() * mean.clone()).clamp_min(0.0));
    WindowWork { mean, variance }
}

/// One prediction in progress: the prepared case and the blending buffers, fed one window at a
/// time. Native code drives it synchronously (`segment`); the web page drives it asynchronously
/// (WebGPU reads back with `into_data_async`), with the same arithmetic.
pub struct Segmenter {
    prepared: Prepared,
    roi: [usize; 3],
    mean: SlidingWindow,
    variance: Option<SlidingWindow>,
    blend_logits: bool,
}

impl Segmenter {
    pub fn new(
        config: &crate::NvNetConfig,
        models: usize,
        outputs: &[Region],
        case: &Case,
        modalities: &[Modality],
        options: &InferenceOptions,
    ) -> Result<Self, InferenceError> {
        if let Some(roi) = options.roi {
            check_roi(config, roi, options)?;
        }
        let prepared = prepare(case, modalities)?;
        let roi = match options.roi {
            Some(roi) => roi,
            None => {
                let roi = choose_roi(
                    config,
                    prepared.crop.size,
                    options.memory_budget,
                    options.max_buffer,
                );
                // choose_roi gives its smallest window when none fits: refused here, before
                // any device work, rather than by the device's allocator (a panic natively,
                // a lost worker in the browser).
                check_buffer(
                    config,
                    roi,
                    options.max_buffer,
                    (
                        "window",
                        "it is the smallest window tried; a smaller one can be given (--roi)",
                    ),
                )?;
                roi
            }
        };
        let window = || {
            SlidingWindow::new(
                prepared.crop.size,
                roi,
                options.overlap,
                options.blend,
                outputs.len(),
            )
        };
        Ok(Segmenter {
            mean: window(),
            variance: options.tta.then(window),
            blend_logits: models == 1 && !options.tta,
            roi,
            prepared,
        })
    }

    pub fn roi(&self) -> [usize; 3] {
        self.roi
    }

    /// How many windows.
    pub fn len(&self) -> usize {
        self.mean.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mean.is_empty()
    }

    /// Window `w` of the input as a [1, C, D, H, W] tensor on `device`.
    pub fn window<B: Backend>(&self, w: usize, device: &B::Device) -> Tensor<B, 5> {
        let data = self
            .mean
            .extract(&self.prepared.input, self.prepared.channels, w);
        let shape = [
            1,
            self.prepared.channels,
            self.roi[0],
            self.roi[1],
            self.roi[2],
        ];
        Tensor::from_data(TensorData::new(data, shape), device)
    }

    /// The network's results for window `w`, read back from the device. NaN or an infinity
    /// there (damaged weights, a faulty device or kernel) is an error, never blended into a
    /// label map that looks like an answer.
    pub fn add(
        &mut self,
        w: usize,
        mean: &[f32],
        variance: Option<&[f32]>,
    ) -> Result<(), InferenceError> {
        if let Some(v) = mean
            .iter()
            .chain(variance.unwrap_or_default())
            .find(|v| !v.is_finite())
        {
            return Err(InferenceError::NotFinite {
                window: w + 1,
                windows: self.len(),
                value: *v,
            });
        }
        self.mean.add(w, mean);
        if let (Some(sw), Some(v)) = (self.variance.as_mut(), variance) {
            sw.add(w, v);
        }
        Ok(())
    }

    /// Blend, paste back on the case's grid, threshold.
    pub fn finish(
        self,
        case: &Case,
        outputs: &[Region],
        options: &InferenceOptions,
    ) -> Result<Segmentation, InferenceError> {
        let windows = self.mean.len();
        let mut boxed = self.mean.finish();
        if self.blend_logits {
            for v in &mut boxed {
                *v = 1.0 / (1.0 + (-*v).exp());
            }
        }
        finish(
            case,
            outputs,
            options,
            &self.prepared.crop,
            boxed,
            self.variance.map(|s| s.finish()),
            self.roi,
            windows,
        )
    }
}

/// Run the models over a case (synchronously: native backends), calling `progress` with
/// (windows done, total) after each window.
pub fn segment<B: Backend>(
    models: &[NvNet<B>],
    outputs: &[Region],
    case: &Case,
    modalities: &[Modality],
    options: &InferenceOptions,
    device: &B::Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<Segmentation, InferenceError> {
    let mut run = Segmenter::new(
        &models[0].config(),
        models.len(),
        outputs,
        case,
        modalities,
        options,
    )?;
    let total = run.len();
    for w in 0..total {
        let work = window_work(models, run.window(w, device), options.tta);
        let mean = to_vec(work.mean)?;
        let variance = work.variance.map(to_vec).transpose()?;
        run.add(w, &mean, variance.as_deref())?;
        progress(w + 1, total);
    }
    run.finish(case, outputs, options)
}

/// A window's result read back from a device that reads back asynchronously (WebGPU in the
/// browser, whose page drives a [`Segmenter`] itself: it checks the GPU between windows).
pub async fn read_async<B: Backend>(t: Tensor<B, 5>) -> Result<Vec<f32>, InferenceError> {
    t.into_data_async()
        .await
        .map_err(|e| InferenceError::ReadBack(format!("{e:?}")))?
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| InferenceError::ReadBack(format!("{e:?}")))
}

fn to_vec<B: Backend>(t: Tensor<B, 5>) -> Result<Vec<f32>, InferenceError> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| InferenceError::ReadBack(format!("{e:?}")))
}

/// Paste the box results back on the full grid, threshold, post-process.
#[allow(clippy::too_many_arguments)]
pub fn finish(
    case: &Case,
    outputs: &[Region],
    options: &InferenceOptions,
    crop: &Crop,
    boxed_probabilities: Vec<f32>,
    boxed_variance: Option<Vec<f32>>,
    roi: [usize; 3],
    windows: usize,
) -> Result<Segmentation, InferenceError> {
    let dims = case.dims();
    let c = outputs.len();
    let n: usize = dims.iter().product();
    let to_file = |boxed: Vec<f32>| -> Vec<f32> {
        let full = crop.paste(&boxed, c, 0.0);
        (0..c)
            .flat_map(|ch| crate::volume::to_file_order(dims, &full[ch * n..(ch + 1) * n]))
            .collect()
    };
    let probabilities = to_file(boxed_probabilities);
    let mut map = labels::label_map(&probabilities, outputs, options.labels, 0.5);
    options.postprocessing.apply(&mut map, dims, options.labels);
    Ok(Segmentation {
        probabilities,
        outputs: outputs.to_vec(),
        labels: map,
        uncertainty: boxed_variance.map(to_file),
        roi,
        windows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_starts_follow_monai() {
        // 45 with roi 32, overlap 0.5: interval 16, starts 0 and 13 (the last shifted back).
        let sw = SlidingWindow::new([45, 70, 50], [32, 32, 32], 0.5, Blend::Constant, 1);
        assert_eq!(sw.len(), 2 * 4 * 3);
        assert_eq!(sw.starts[0], [0, 0, 0]);
        assert_eq!(*sw.starts.last().unwrap(), [13, 38, 18]);
        // Smaller than the window: padded, one window.
        let sw = SlidingWindow::new([20, 32, 8], [32, 32, 32], 0.5, Blend::Constant, 1);
        assert_eq!(sw.len(), 1);
        assert_eq!(sw.pad_before, [6, 0, 12]);
    }

    #[test]
    fn the_window_shrinks_to_fit_the_memory_budget() {
        let config = crate::NvNetConfig::default().with_init_filters(16);
        let whole = [144, 176, 112];
        let big = crate::info::summarize(&config, whole).inference_bytes;
        assert_eq!(choose_roi(&config, whole, big as u64 + 1, None), whole);
        let budget = (big / 4.0) as u64;
        let roi = choose_roi(&config, whole, budget, None);
        assert!(roi.iter().all(|r| r % 8 == 0), "{roi:?}");
        assert!(crate::info::summarize(&config, roi).inference_bytes <= budget as f64);
        assert!(roi.iter().zip(whole).all(|(r, w)| *r <= w) && roi != whole);
        // The longest axis gave way first.
        assert!(roi[1] < whole[1]);
        // A five-level network halves four times: its windows are multiples of 16.
        let deep = crate::NvNetConfig {
            blocks_down: vec![1, 2, 2, 4, 4],
            blocks_up: vec![1, 1, 1, 1],
            ..Default::default()
        };
        assert_eq!(
            choose_roi(&deep, [40, 44, 36], u64::MAX, None),
            [48, 48, 48]
        );
    }

    #[test]
    fn a_device_buffer_too_small_for_the_weights_or_the_window_is_refused_by_name() {
        let config = crate::NvNetConfig::default().with_init_filters(8);
        // The deepest level's 3×3×3 convolution: 64 × 64 × 27 float32.
        assert_eq!(crate::info::largest_weight_bytes(&config), 442_368.0);
        let options = |max_buffer| InferenceOptions {
            max_buffer: Some(max_buffer),
            memory_budget: u64::MAX,
            ..InferenceOptions::default()
        };
        let e = check_roi(&config, [16, 16, 16], &options(200 << 10))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("largest weight tensor (432.0 KiB, F=8)") && e.contains("(200.0 KiB)"),
            "{e}"
        );
        // A window's own feature maps: 8 × 64³ float32 = 8 MiB.
        let e = check_roi(&config, [64, 64, 64], &options(1 << 20))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("window [64, 64, 64]: its largest tensor (8.0 MiB)")
                && e.contains("(1.0 MiB): choose a smaller window"),
            "{e}"
        );
        assert_eq!(check_roi(&config, [32, 32, 32], &options(1 << 20)), Ok(()));
        // What the window chooser falls back to when nothing fits is refused the same way.
        let roi = choose_roi(&config, [64, 64, 64], u64::MAX, Some(200 << 10));
        assert_eq!(roi, [16, 16, 16]);
        assert!(check_buffer(&config, roi, Some(200 << 10), ("window", "x")).is_err());
        // Training's weights files carry the VAE: its encoder is 16·(160·192·128/16³)×256.
        let paper = crate::NvNetConfig::default().with_vae(Some([160, 192, 128]));
        assert_eq!(
            crate::info::largest_weight_bytes(&paper),
            4.0 * (16 * 10 * 12 * 8 * 256) as f64
        );
        let e = check_weights_fit(&paper, 8 << 20).unwrap_err().to_string();
        assert!(e.contains("(15.0 MiB, F=32)"), "{e}");
    }

    /// The flips' mean and variance of one window against a hand computation: each flip made by
    /// reversing indices, the sigmoid, the statistics in f64.
    #[cfg(feature = "flex")]
    #[test]
    fn a_windows_flip_mean_and_variance_are_those_of_the_eight_flipped_predictions() {
        type B = crate::backend::Cpu;
        let device = Default::default();
        let model = crate::NvNetConfig::default()
            .with_init_filters(8)
            .init::<B>(&device)
            .unwrap();
        let [d, h, w] = [16usize, 8, 8];
        let n = d * h * w;
        let input: Vec<f32> = (0..4 * n)
            .map(|i| ((i * 7919 % 1013) as f32 / 506.0) - 1.0)
            .collect();
        let tensor = |v: Vec<f32>, c: usize| {
            Tensor::<B, 5>::from_data(TensorData::new(v, [1, c, d, h, w]), &device)
        };
        // Voxel (z, y, x) of channel c, with the axes in `flip` reversed.
        let flipped = |v: &[f32], c: usize, flip: [bool; 3]| -> Vec<f32> {
            let mut out = vec![0f32; c * n];
            for ch in 0..c {
                for z in 0..d {
                    for y in 0..h {
                        for x in 0..w {
                            let (fz, fy, fx) = (
                                if flip[0] { d - 1 - z } else { z },
                                if flip[1] { h - 1 - y } else { y },
                                if flip[2] { w - 1 - x } else { x },
                            );
                            out[ch * n + (z * h + y) * w + x] = v[ch * n + (fz * h + fy) * w + fx];
                        }
                    }
                }
            }
            out
        };
        let mut sum = vec![0f64; 3 * n];
        let mut sum_sq = vec![0f64; 3 * n];
        for k in 0..8 {
            let flip = [k & 1 != 0, k & 2 != 0, k & 4 != 0];
            let logits = model.forward(tensor(flipped(&input, 4, flip), 4));
            let logits: Vec<f32> = logits.into_data().convert::<f32>().into_vec().unwrap();
            for (i, l) in flipped(&logits, 3, flip).into_iter().enumerate() {
                let p = 1.0 / (1.0 + (-(l as f64)).exp());
                sum[i] += p;
                sum_sq[i] += p * p;
            }
        }
        let work = window_work(std::slice::from_ref(&model), tensor(input, 4), true);
        let mean: Vec<f32> = work.mean.into_data().convert::<f32>().into_vec().unwrap();
        let variance: Vec<f32> = work
            .variance
            .expect("a variance with flips")
            .into_data()
            .convert::<f32>()
            .into_vec()
            .unwrap();
        let (mut worst_mean, mut worst_var, mut largest_var) = (0f64, 0f64, 0f64);
        for i in 0..3 * n {
            let m = sum[i] / 8.0;
            let v = (sum_sq[i] / 8.0 - m * m).max(0.0);
            worst_mean = worst_mean.max((mean[i] as f64 - m).abs());
            worst_var = worst_var.max((variance[i] as f64 - v).abs());
            largest_var = largest_var.max(v);
        }
        // A random network's flips disagree: the variance is there to be checked.
        assert!(
            largest_var > 1e-6,
            "the flips agree everywhere: {largest_var}"
        );
        assert!(worst_mean < 1e-5, "flip mean off by {worst_mean}");
        assert!(worst_var < 1e-5, "flip variance off by {worst_var}");
    }

    #[test]
    fn constant_blending_of_an_identity_prediction_returns_the_input() {
        let dims = [19, 23, 17];
        let n: usize = dims.iter().product();
        let input: Vec<f32> = (0..n).map(|i| (i % 97) as f32).collect();
        for blend in [Blend::Constant, Blend::Gaussian] {
            let mut sw = SlidingWindow::new(dims, [8, 16, 24], 0.25, blend, 1);
            for w in 0..sw.len() {
                let win = sw.extract(&input, 1, w);
                sw.add(w, &win);
            }
            let out = sw.finish();
            let err = out
                .iter()
                .zip(&input)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-4, "{blend:?}: {err}");
        }
    }
}
