//! A segmentation, window by window: the network on each window (with its test-time flips),
//! read back, blended, then pasted back on the case's grid and thresholded into labels.

use burn::prelude::*;
use burn::tensor::{FloatDType, TensorData};

use super::{
    InferenceError, InferenceOptions, Prepared, SlidingWindow, check_buffer, check_roi, choose_roi,
    prepare,
};
use crate::data::case::Case;
use crate::data::labels;
use crate::data::modality::{Modality, Region};
use crate::data::preprocess::Crop;
use crate::nn::model::{NvNet, Stages};
use crate::nn::precision::{cast_to, precision_of};

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
    let mut passes = WindowPasses::new(models, window, tta);
    for _ in 0..passes.len() {
        passes.run_next();
    }
    passes.finish()
}

/// How many network passes one window takes: each model on each flip.
pub fn passes_per_window(models: usize, tta: bool) -> usize {
    models * if tta { FLIPS.len() } else { 1 }
}

/// One window's passes (each model on each flip), run one at a time, so that a caller can say
/// how far a window has got: a case that fits one window with eight flips is eight steps, not
/// one. The sums are the same as `window_work`'s, in the same order.
pub struct WindowPasses<'m, B: Backend> {
    models: &'m [NvNet<B>],
    window: Tensor<B, 5>,
    tta: bool,
    done: usize,
    sum: Option<Tensor<B, 5>>,
    sum_sq: Option<Tensor<B, 5>>,
}

impl<'m, B: Backend> WindowPasses<'m, B> {
    pub fn new(models: &'m [NvNet<B>], window: Tensor<B, 5>, tta: bool) -> Self {
        assert!(!models.is_empty(), "at least one model");
        // A half-precision model takes its window in float16 and gives its logits back in
        // float32, where the sigmoid, the flip statistics and the blending run.
        let window = cast_to(window, precision_of(&models[0]).dtype());
        Self {
            models,
            window,
            tta,
            done: 0,
            sum: None,
            sum_sq: None,
        }
    }

    pub fn len(&self) -> usize {
        passes_per_window(self.models.len(), self.tta)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next pass, queued on the device. Its output is returned so that a caller on a lazy
    /// device (wgpu, CUDA) can wait for it, by reading a value of it back or syncing.
    pub fn run_next(&mut self) -> Tensor<B, 5> {
        let mut stages = self.begin_pass();
        while !stages.is_done() {
            stages.step();
        }
        let (logits, _) = stages.finish();
        self.end_pass(logits)
    }

    /// The next pass begun: its network's stages, to run one by one (a caller on a slow device
    /// can wait for each and say so), then their logits to [`Self::end_pass`].
    pub fn begin_pass(&mut self) -> Stages<'m, B> {
        assert!(self.done < self.len(), "every pass of the window has run");
        let (model, axes) = self.pass(self.done);
        model.stages(flip(self.window.clone(), axes))
    }

    /// The pass begun by [`Self::begin_pass`] ended with its `logits`: summed into the window's
    /// result, and returned (see `run_next`).
    pub fn end_pass(&mut self, logits: Tensor<B, 5>) -> Tensor<B, 5> {
        let (_, axes) = self.pass(self.done);
        self.done += 1;
        // A single model without TTA: its logits, which MONAI blends.
        if self.models.len() == 1 && !self.tta {
            let logits = cast_to(logits, FloatDType::F32);
            self.sum = Some(logits.clone());
            return logits;
        }
        let p = burn::tensor::activation::sigmoid(flip(cast_to(logits, FloatDType::F32), axes));
        self.sum_sq = Some(match self.sum_sq.take() {
            Some(s) => s + p.clone() * p.clone(),
            None => p.clone() * p.clone(),
        });
        self.sum = Some(match self.sum.take() {
            Some(s) => s + p.clone(),
            None => p.clone(),
        });
        p
    }

    /// Pass `k`'s model and flip.
    fn pass(&self, k: usize) -> (&'m NvNet<B>, &'static [isize]) {
        let flips = if self.tta { &FLIPS[..] } else { &FLIPS[..1] };
        (&self.models[k / flips.len()], flips[k % flips.len()])
    }

    /// The window's result, once every pass has run.
    pub fn finish(self) -> WindowWork<B> {
        assert_eq!(self.done, self.len(), "a pass of the window has not run");
        let n = self.len() as f32;
        let sum = self.sum.expect("at least one pass");
        if self.models.len() == 1 && !self.tta {
            return WindowWork {
                mean: sum,
                variance: None,
            };
        }
        let mean = sum / n;
        let variance = self
            .tta
            .then(|| (self.sum_sq.expect("set") / n - mean.clone() * mean.clone()).clamp_min(0.0));
        WindowWork { mean, variance }
    }
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
                    options.precision,
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
/// (network passes done, total) after each pass: windows × models × flips. On a lazy device
/// each pass is waited for, so that the count is what has been computed.
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
    let per_window = passes_per_window(models.len(), options.tta);
    let total = run.len() * per_window;
    for w in 0..run.len() {
        let mut passes = WindowPasses::new(models, run.window(w, device), options.tta);
        for p in 0..per_window {
            passes.run_next();
            B::sync(device).map_err(|e| InferenceError::ReadBack(format!("{e:?}")))?;
            progress(w * per_window + p + 1, total);
        }
        let work = passes.finish();
        let mean = to_vec(work.mean)?;
        let variance = work.variance.map(to_vec).transpose()?;
        run.add(w, &mean, variance.as_deref())?;
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
        // Whole volumes appended (collecting a flat_map went value by value: 3 % of the page's
        // CPU segmentation in V8's profile).
        let mut out = Vec::with_capacity(c * n);
        for ch in 0..c {
            out.extend(crate::data::volume::to_file_order(
                dims,
                &full[ch * n..(ch + 1) * n],
            ));
        }
        out
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

    /// The flips' mean and variance of one window against a hand computation: each flip made by
    /// reversing indices, the sigmoid, the statistics in f64.
    #[cfg(feature = "flex")]
    #[test]
    fn a_windows_flip_mean_and_variance_are_those_of_the_eight_flipped_predictions() {
        type B = crate::device::backend::Cpu;
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

    /// Progress is told once per network pass, in order, windows × flips in all: a case of two
    /// windows with the eight flips is sixteen steps.
    #[cfg(feature = "flex")]
    #[test]
    fn progress_counts_each_network_pass() {
        use crate::data::case::{Case, Layout};
        use crate::data::modality::Modality;
        use crate::io::nifti::{DataType, Geometry, Image, Voxels};
        type B = crate::device::backend::Cpu;
        let device = Default::default();
        let model = crate::NvNetConfig::default()
            .with_init_filters(8)
            .init::<B>(&device)
            .unwrap();
        let dims = [16usize, 16, 24];
        let mut affine = [[0.0; 4]; 4];
        (0..4).for_each(|i| affine[i][i] = 1.0);
        let images = Modality::DEFAULT_ORDER
            .iter()
            .map(|&m| {
                let values = (0..dims.iter().product::<usize>())
                    .map(|i| 1.0 + (i * 31 % 17) as f32)
                    .collect();
                let image = Image {
                    source: format!("{m}.nii"),
                    dtype: DataType::F32,
                    geometry: Geometry::from_affine(dims, affine),
                    voxels: Voxels::F32(values),
                    slope: 1.0,
                    inter: 0.0,
                    warnings: vec![],
                };
                (m, image)
            })
            .collect();
        let case = Case::from_images("passes", Layout::Loose, images, None).unwrap();
        for (tta, per_window) in [(true, 8), (false, 1)] {
            let options = InferenceOptions {
                roi: Some([16, 16, 16]),
                overlap: 0.0,
                tta,
                ..InferenceOptions::default()
            };
            let mut seen = vec![];
            let seg = segment(
                std::slice::from_ref(&model),
                &Region::DEFAULT_ORDER,
                &case,
                &Modality::DEFAULT_ORDER,
                &options,
                &device,
                |done, total| seen.push((done, total)),
            )
            .unwrap();
            assert_eq!(seg.windows, 2, "the case is two windows of 16³");
            let total = 2 * per_window;
            assert_eq!(
                seen,
                (1..=total).map(|d| (d, total)).collect::<Vec<_>>(),
                "tta = {tta}"
            );
        }
    }
}
