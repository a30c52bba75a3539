//! Preprocessing (docs/DESIGN.md §2): per-channel z-score over the nonzero voxels, and the crop to the
//! brain box with its exact inverse.
//!
//! Volumes here are in network order (see [`crate::data::volume`]): `channels` volumes of `dims`
//! one after the other, k fastest.

/// MONAI `NormalizeIntensity(nonzero=True, channel_wise=True)`: in each channel the nonzero
/// voxels become (v − mean) / std (population std, 1 when it is 0); zeros stay 0.
pub fn normalize_nonzero(data: &mut [f32], channels: usize) {
    let n = data.len() / channels;
    for c in 0..channels {
        let ch = &mut data[c * n..(c + 1) * n];
        // f64 sums: a 240×240×155 channel has ~9·10⁶ voxels.
        let (mut count, mut sum) = (0usize, 0f64);
        for &v in ch.iter().filter(|v| **v != 0.0) {
            count += 1;
            sum += v as f64;
        }
        if count == 0 {
            continue;
        }
        let mean = sum / count as f64;
        let var = ch
            .iter()
            .filter(|v| **v != 0.0)
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / count as f64;
        let std = if var > 0.0 { var.sqrt() } else { 1.0 };
        for v in ch.iter_mut().filter(|v| **v != 0.0) {
            *v = ((*v as f64 - mean) / std) as f32;
        }
    }
}

/// A box in a full grid, possibly reaching outside it (those voxels are zero padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Crop {
    pub full: [usize; 3],
    pub start: [isize; 3],
    pub size: [usize; 3],
}

impl Crop {
    /// The box of the voxels that are nonzero in any channel (the brain, for skull-stripped
    /// MRI), grown to a multiple of `multiple` on each axis and centred on the brain (start =
    /// lo − ⌊growth/2⌋), reaching outside the grid when it must, as MONAI's
    /// `CropForeground(k_divisible=…)` places it. `None` when every voxel is zero.
    pub fn brain_box(
        data: &[f32],
        channels: usize,
        dims: [usize; 3],
        multiple: usize,
    ) -> Option<Crop> {
        let [_, ny, nz] = dims;
        let n = dims.iter().product::<usize>();
        let mut lo = [usize::MAX; 3];
        let mut hi = [0usize; 3];
        let mut any = false;
        for v in 0..n {
            if (0..channels).any(|c| data[c * n + v] != 0.0) {
                let ijk = [v / (ny * nz), (v / nz) % ny, v % nz];
                for a in 0..3 {
                    lo[a] = lo[a].min(ijk[a]);
                    hi[a] = hi[a].max(ijk[a] + 1);
                }
                any = true;
            }
        }
        if !any {
            return None;
        }
        let mut start = [0isize; 3];
        let mut size = [0usize; 3];
        for a in 0..3 {
            let s = hi[a] - lo[a];
            let p = s.div_ceil(multiple) * multiple;
            start[a] = lo[a] as isize - ((p - s) / 2) as isize;
            size[a] = p;
        }
        Some(Crop {
            full: dims,
            start,
            size,
        })
    }

    /// The whole grid padded (centred) to a multiple of `multiple`.
    pub fn whole(dims: [usize; 3], multiple: usize) -> Crop {
        let size = dims.map(|d| d.div_ceil(multiple) * multiple);
        let start = [0, 1, 2].map(|a| -(((size[a] - dims[a]) / 2) as isize));
        Crop {
            full: dims,
            start,
            size,
        }
    }

    pub fn voxels(&self) -> usize {
        self.size.iter().product()
    }

    /// Where the box meets the grid, as runs along z: (offset in a full volume, offset in a box
    /// volume, length). Crop and paste copy the same runs in opposite directions.
    fn runs(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let [sx, sy, sz] = self.size;
        let [_, fy, fz] = self.full;
        // The run of z inside the grid, the same for every (x, y).
        let z0 = (-self.start[2]).max(0) as usize;
        let z1 = ((fz as isize - self.start[2]).min(sz as isize)).max(0) as usize;
        let k0 = (self.start[2] + z0 as isize).max(0) as usize;
        (0..sx)
            .filter_map(move |x| self.inside(0, x).map(|i| (x, i)))
            .flat_map(move |(x, i)| {
                (0..sy).filter_map(move |y| self.inside(1, y).map(|j| (x, i, y, j)))
            })
            .filter(move |_| z0 < z1)
            .map(move |(x, i, y, j)| ((i * fy + j) * fz + k0, (x * sy + y) * sz + z0, z1 - z0))
    }

    /// Cut the box out of `channels` full volumes (zeros outside the grid).
    pub fn crop<T: Copy + Default>(&self, data: &[T], channels: usize) -> Vec<T> {
        let n_full: usize = self.full.iter().product();
        let mut out = vec![T::default(); channels * self.voxels()];
        for c in 0..channels {
            let (full, boxed) = (c * n_full, c * self.voxels());
            for (f, b, len) in self.runs() {
                out[boxed + b..boxed + b + len].copy_from_slice(&data[full + f..full + f + len]);
            }
        }
        out
    }

    /// The inverse of [`Crop::crop`]: put `channels` box volumes back into full volumes, `fill`
    /// outside the box.
    pub fn paste<T: Copy>(&self, boxed: &[T], channels: usize, fill: T) -> Vec<T> {
        let n_full: usize = self.full.iter().product();
        let mut out = vec![fill; channels * n_full];
        for c in 0..channels {
            let (full, bx) = (c * n_full, c * self.voxels());
            for (f, b, len) in self.runs() {
                out[full + f..full + f + len].copy_from_slice(&boxed[bx + b..bx + b + len]);
            }
        }
        out
    }

    /// The full-grid index on `axis` of box position `p`, if it is inside the grid.
    fn inside(&self, axis: usize, p: usize) -> Option<usize> {
        let g = self.start[axis] + p as isize;
        (g >= 0 && (g as usize) < self.full[axis]).then_some(g as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phantom(dims: [usize; 3], lo: [usize; 3], hi: [usize; 3]) -> Vec<f32> {
        let [nx, ny, nz] = dims;
        let mut v = vec![0f32; 2 * nx * ny * nz];
        for c in 0..2 {
            for i in lo[0]..hi[0] {
                for j in lo[1]..hi[1] {
                    for k in lo[2]..hi[2] {
                        v[c * nx * ny * nz + (i * ny + j) * nz + k] =
                            1.0 + (c * 7 + i * 3 + j * 5 + k) as f32;
                    }
                }
            }
        }
        v
    }

    #[test]
    fn brain_box_is_a_multiple_of_8_and_paste_inverts_crop() {
        for (dims, lo, hi) in [
            ([30, 41, 23], [3, 5, 2], [20, 40, 21]),
            ([12, 9, 7], [0, 0, 0], [12, 9, 7]), // box larger than the grid
            ([50, 50, 50], [47, 0, 10], [50, 3, 11]), // at the borders
        ] {
            let v = phantom(dims, lo, hi);
            let crop = Crop::brain_box(&v, 2, dims, 8).unwrap();
            for a in 0..3 {
                assert_eq!(crop.size[a] % 8, 0);
                assert!(crop.start[a] <= lo[a] as isize);
                assert!(crop.start[a] + crop.size[a] as isize >= hi[a] as isize);
                assert!(crop.size[a] < hi[a] - lo[a] + 8);
            }
            let boxed = crop.crop(&v, 2);
            assert_eq!(boxed.len(), 2 * crop.voxels());
            assert_eq!(crop.paste(&boxed, 2, 0.0), v, "{dims:?}");
        }
        assert_eq!(Crop::brain_box(&vec![0.0; 64], 1, [4, 4, 4], 8), None);
    }

    /// Crop and paste against their voxel-by-voxel definition, on boxes that stick out of the
    /// grid on either side of every axis or miss it entirely.
    #[test]
    fn crop_and_paste_match_their_definition_on_boxes_partly_outside() {
        let full = [5, 6, 7];
        let n: usize = full.iter().product();
        let data: Vec<i32> = (0..2 * n as i32).collect();
        for start in [
            [-2, 0, -3],
            [1, -1, 2],
            [3, 4, 5],
            [0, 0, -9],
            [6, 1, 1],
            [-1, -1, -1],
        ] {
            let crop = Crop {
                start,
                size: [4, 3, 5],
                full,
            };
            let boxed = crop.crop(&data, 2);
            let pasted = crop.paste(&boxed, 2, -1);
            let mut want_box = vec![0; 2 * crop.voxels()];
            let mut want_full = vec![-1; 2 * n];
            for c in 0..2 {
                for (x, y, z) in
                    (0..4).flat_map(|x| (0..3).flat_map(move |y| (0..5).map(move |z| (x, y, z))))
                {
                    let g = [
                        start[0] + x as isize,
                        start[1] + y as isize,
                        start[2] + z as isize,
                    ];
                    if (0..3).all(|a| g[a] >= 0 && (g[a] as usize) < full[a]) {
                        let f = c * n
                            + ((g[0] as usize * full[1]) + g[1] as usize) * full[2]
                            + g[2] as usize;
                        let b = c * crop.voxels() + (x * 3 + y) * 5 + z;
                        want_box[b] = data[f];
                        want_full[f] = data[f];
                    }
                }
            }
            assert_eq!(boxed, want_box, "{start:?}");
            assert_eq!(pasted, want_full, "{start:?}");
        }
    }

    #[test]
    fn whole_grid_crop_pads_centred() {
        let c = Crop::whole([45, 70, 50], 8);
        assert_eq!(c.size, [48, 72, 56]);
        assert_eq!(c.start, [-1, -1, -3]);
    }

    #[test]
    fn normalize_keeps_zeros_and_standardises_the_rest() {
        let mut v = vec![0.0, 1.0, 2.0, 3.0, 0.0, 5.0, 5.0, 0.0];
        normalize_nonzero(&mut v, 2);
        assert_eq!(v[0], 0.0);
        assert!((v[1] + 1.2247449).abs() < 1e-6 && (v[3] - 1.2247449).abs() < 1e-6);
        // a constant channel: std 0 is read as 1
        assert_eq!(&v[4..], &[0.0, 0.0, 0.0, 0.0]);
    }
}
