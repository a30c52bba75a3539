//! MONAI's sliding window: the windows of a box, their importance maps, and the blend of the
//! windows' predictions back into one volume.

use crate::data::preprocess::Crop;

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
    type Err = crate::data::names::UnknownName;
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
