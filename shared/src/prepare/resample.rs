//! A volume sampled anywhere in world space (trilinear), and resampled onto another grid through
//! a rigid motion: one world convention (NIfTI's RAS, mm, the grid's affine) for every series.

use super::motion::{Rigid, apply3};
use crate::io::nifti::Geometry;

/// Values in file order (i fastest) on a grid, with the map from world to voxel coordinates.
#[derive(Debug, Clone)]
pub struct Volume {
    pub values: Vec<f32>,
    pub geometry: Geometry,
    to_voxel: ([[f64; 3]; 3], [f64; 3]),
}

impl Volume {
    pub fn new(values: Vec<f32>, geometry: Geometry) -> Volume {
        assert_eq!(values.len(), geometry.dims.iter().product::<usize>());
        let to_voxel = invert(&geometry.affine);
        Volume {
            values,
            geometry,
            to_voxel,
        }
    }

    pub fn dims(&self) -> [usize; 3] {
        self.geometry.dims
    }

    /// The world position of voxel (i, j, k).
    pub fn world(&self, ijk: [f64; 3]) -> [f64; 3] {
        self.geometry.world(ijk)
    }

    /// The voxel coordinates of a world position.
    pub fn voxel(&self, p: [f64; 3]) -> [f64; 3] {
        let (m, o) = &self.to_voxel;
        let q = apply3(m, p);
        [q[0] + o[0], q[1] + o[1], q[2] + o[2]]
    }

    /// Trilinear value at voxel coordinates; `None` outside the grid (beyond its outer voxels'
    /// centres).
    pub fn at_voxel(&self, v: [f64; 3]) -> Option<f32> {
        let [nx, ny, nz] = self.dims();
        let mut base = [0usize; 3];
        let mut frac = [0f32; 3];
        for a in 0..3 {
            let n = [nx, ny, nz][a];
            let x = v[a];
            if !(0.0..=(n - 1) as f64).contains(&x) {
                return None;
            }
            let f = (x.floor() as usize).min(n.saturating_sub(2));
            base[a] = f;
            frac[a] = (x - f as f64) as f32;
        }
        let step = [1, nx, nx * ny];
        let at = |di: usize, dj: usize, dk: usize| {
            let (i, j, k) = (base[0] + di, base[1] + dj, base[2] + dk);
            if i < nx && j < ny && k < nz {
                self.values[i * step[0] + j * step[1] + k * step[2]]
            } else {
                0.0
            }
        };
        let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
        let x00 = lerp(at(0, 0, 0), at(1, 0, 0), frac[0]);
        let x10 = lerp(at(0, 1, 0), at(1, 1, 0), frac[0]);
        let x01 = lerp(at(0, 0, 1), at(1, 0, 1), frac[0]);
        let x11 = lerp(at(0, 1, 1), at(1, 1, 1), frac[0]);
        let y0 = lerp(x00, x10, frac[1]);
        let y1 = lerp(x01, x11, frac[1]);
        Some(lerp(y0, y1, frac[2]))
    }

    pub fn at_world(&self, p: [f64; 3]) -> Option<f32> {
        self.at_voxel(self.voxel(p))
    }

    /// The mean of blocks of `factor` voxels: a coarser grid over the same extent, for the
    /// coarse levels of registration.
    pub fn downsample(&self, factor: [usize; 3]) -> Volume {
        let [nx, ny, nz] = self.dims();
        let out = [0, 1, 2].map(|a| self.dims()[a].div_ceil(factor[a]).max(1));
        let mut sums = vec![0f32; out.iter().product()];
        let mut counts = vec![0u32; sums.len()];
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    let o = i / factor[0] + out[0] * (j / factor[1] + out[1] * (k / factor[2]));
                    sums[o] += self.values[i + nx * (j + ny * k)];
                    counts[o] += 1;
                }
            }
        }
        let values = sums
            .iter()
            .zip(&counts)
            .map(|(s, &c)| s / c.max(1) as f32)
            .collect();
        let a = &self.geometry.affine;
        let mut affine = *a;
        for r in 0..3 {
            for c in 0..3 {
                affine[r][c] = a[r][c] * factor[c] as f64;
            }
            // A block's centre: voxel (f − 1)/2 of the fine grid.
            affine[r][3] = a[r][3]
                + (0..3)
                    .map(|c| a[r][c] * (factor[c] as f64 - 1.0) / 2.0)
                    .sum::<f64>();
        }
        Volume::new(values, Geometry::from_affine(out, affine))
    }
}

/// World → voxel: the inverse of an affine's 3×3 part and offset.
pub(crate) fn invert(a: &[[f64; 4]; 4]) -> ([[f64; 3]; 3], [f64; 3]) {
    let m = |r: usize, c: usize| a[r][c];
    let det = m(0, 0) * (m(1, 1) * m(2, 2) - m(1, 2) * m(2, 1))
        - m(0, 1) * (m(1, 0) * m(2, 2) - m(1, 2) * m(2, 0))
        + m(0, 2) * (m(1, 0) * m(2, 1) - m(1, 1) * m(2, 0));
    let mut inv = [[0.0; 3]; 3];
    for (r, row) in inv.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            let (r1, r2) = ((c + 1) % 3, (c + 2) % 3);
            let (c1, c2) = ((r + 1) % 3, (r + 2) % 3);
            *v = (m(r1, c1) * m(r2, c2) - m(r1, c2) * m(r2, c1)) / det;
        }
    }
    let t = apply3(&inv, [a[0][3], a[1][3], a[2][3]]);
    (inv, t.map(|x| -x))
}

/// `source` on `target`'s grid: each target voxel takes the source's value where `motion` puts
/// it (`motion` maps target world points to source world points), 0 outside the source.
pub fn resample(source: &Volume, motion: &Rigid, target: &Geometry) -> Vec<f32> {
    let [nx, ny, nz] = target.dims;
    let (r, o) = motion.affine();
    let mut out = Vec::with_capacity(nx * ny * nz);
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let w = target.world([i as f64, j as f64, k as f64]);
                let p = apply3(&r, w);
                let p = [p[0] + o[0], p[1] + o[1], p[2] + o[2]];
                out.push(source.at_world(p).unwrap_or(0.0));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(dims: [usize; 3], spacing: f64, offset: [f64; 3]) -> Geometry {
        let mut a = [[0.0; 4]; 4];
        for r in 0..3 {
            a[r][r] = spacing;
            a[r][3] = offset[r];
        }
        a[3][3] = 1.0;
        Geometry::from_affine(dims, a)
    }

    /// A linear function of position is reproduced exactly by trilinear interpolation: resampled
    /// through a motion, each voxel holds the function at the moved position.
    #[test]
    fn a_linear_field_resamples_exactly_through_a_motion() {
        let g = grid([20, 22, 24], 1.5, [-15.0, -16.0, -17.0]);
        let f = |p: [f64; 3]| (2.0 * p[0] - 0.5 * p[1] + 0.25 * p[2] + 100.0) as f32;
        let mut values = Vec::new();
        for k in 0..24 {
            for j in 0..22 {
                for i in 0..20 {
                    let w = [
                        -15.0 + 1.5 * i as f64,
                        -16.0 + 1.5 * j as f64,
                        -17.0 + 1.5 * k as f64,
                    ];
                    values.push(f(w));
                }
            }
        }
        let source = Volume::new(values, g);
        let motion = Rigid {
            angles: [0.05, -0.03, 0.08],
            translation: [1.2, -0.7, 0.4],
            centre: [0.0; 3],
        };
        let target = grid([10, 10, 10], 1.0, [-5.0, -5.0, -5.0]);
        let out = resample(&source, &motion, &target);
        let tv = Volume::new(out, target);
        for ijk in [[0.0, 0.0, 0.0], [3.0, 7.0, 2.0], [9.0, 9.0, 9.0]] {
            let moved = motion.apply(tv.world(ijk));
            let got = tv.values[ijk[0] as usize + 10 * (ijk[1] as usize + 10 * ijk[2] as usize)];
            assert!((got - f(moved)).abs() < 1e-3, "{got} vs {}", f(moved));
        }
        // Block means of a linear field are the field at the blocks' centres.
        let coarse = source.downsample([2, 2, 2]);
        let p = coarse.world([3.0, 4.0, 5.0]);
        let got = coarse.values[3 + 10 * (4 + 11 * 5)];
        assert!((got - f(p)).abs() < 1e-3, "{got} vs {}", f(p));
    }
}
