//! Thick slices simulated on a 1 mm training crop: what a series acquired with 3–6 mm slices
//! looks like once `prepare` has resampled it onto the 1 mm grid. Along one axis the volume is
//! averaged over slabs of the slice thickness (the acquisition integrates across its slice) and
//! interpolated linearly between the slabs' centres (the resampling). A model trained only on
//! 1 mm inputs reads the blurred edge of an oedema in a 5 mm FLAIR as more oedema; this is the
//! augmentation that shows it such inputs (nnU-Net's low-resolution simulation does the same with
//! a zoom out and back).

/// Blur `volume` (D,H,W order, `dims`) along `axis` as slices `thickness` voxels thick would,
/// the first slab starting `phase` voxels (0 ≤ phase < thickness) before the first voxel's edge.
/// Voxels that were zero stay zero: outside the brain the chain's skull strip zeroes them again.
pub fn simulate(volume: &mut [f32], dims: [usize; 3], axis: usize, thickness: f64, phase: f64) {
    assert!(thickness >= 1.0 && (0.0..thickness).contains(&phase));
    let n = dims[axis];
    let stride: usize = dims[axis + 1..].iter().product();
    let (mut line, mut blurred) = (vec![0f32; n], vec![0f32; n]);
    let mut slabs = Slabs::new(n, thickness, phase);
    for start in line_starts(dims, axis) {
        for (i, v) in line.iter_mut().enumerate() {
            *v = volume[start + i * stride];
        }
        slabs.blur(&line, &mut blurred);
        for (i, &b) in blurred.iter().enumerate() {
            let v = &mut volume[start + i * stride];
            if *v != 0.0 {
                *v = b;
            }
        }
    }
}

/// The first voxel of every line along `axis`.
fn line_starts(dims: [usize; 3], axis: usize) -> impl Iterator<Item = usize> {
    let strides = [dims[1] * dims[2], dims[2], 1];
    let others: Vec<usize> = (0..3).filter(|&a| a != axis).collect();
    let (a, b) = (others[0], others[1]);
    (0..dims[a]).flat_map(move |i| (0..dims[b]).map(move |j| i * strides[a] + j * strides[b]))
}

/// One line's slabs: which slabs each voxel overlaps and by how much, and where each voxel sits
/// between the slabs' centres.
struct Slabs {
    /// Per voxel: (slab, weight) for the one or two slabs its extent [i − ½, i + ½] overlaps.
    overlaps: Vec<[(usize, f64); 2]>,
    /// Per voxel: the slab centres it lies between and the weight of the second.
    between: Vec<(usize, usize, f64)>,
    means: Vec<f64>,
    weights: Vec<f64>,
}

impl Slabs {
    fn new(n: usize, thickness: f64, phase: f64) -> Self {
        // Slab s covers [first + s·t, first + (s + 1)·t); the line covers [−½, n − ½].
        let first = -0.5 - phase;
        let count = ((n as f64 + phase) / thickness).ceil() as usize;
        let overlaps = (0..n)
            .map(|i| {
                let (lo, hi) = (i as f64 - 0.5, i as f64 + 0.5);
                let s = (((lo - first) / thickness).floor() as usize).min(count - 1);
                let end = first + (s + 1) as f64 * thickness;
                if end < hi && s + 1 < count {
                    [(s, end - lo), (s + 1, hi - end)]
                } else {
                    [(s, 1.0), (s, 0.0)]
                }
            })
            .collect();
        let centre = |s: usize| first + (s as f64 + 0.5) * thickness;
        let between = (0..n)
            .map(|i| {
                let x = i as f64;
                let s = (((x - first) / thickness - 0.5).floor().max(0.0) as usize).min(count - 1);
                if s + 1 >= count || x <= centre(s) {
                    (s, s, 0.0)
                } else {
                    (s, s + 1, (x - centre(s)) / thickness)
                }
            })
            .collect();
        Slabs {
            overlaps,
            between,
            means: vec![0.0; count],
            weights: vec![0.0; count],
        }
    }

    fn blur(&mut self, line: &[f32], out: &mut [f32]) {
        self.means.fill(0.0);
        self.weights.fill(0.0);
        for (&v, parts) in line.iter().zip(&self.overlaps) {
            for &(s, w) in parts {
                self.means[s] += w * v as f64;
                self.weights[s] += w;
            }
        }
        for (m, &w) in self.means.iter_mut().zip(&self.weights) {
            if w > 0.0 {
                *m /= w;
            }
        }
        for (o, &(a, b, w)) in out.iter_mut().zip(&self.between) {
            *o = ((1.0 - w) * self.means[a] + w * self.means[b]) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blur_line(line: &[f32], thickness: f64, phase: f64) -> Vec<f32> {
        let mut v = line.to_vec();
        simulate(&mut v, [1, 1, line.len()], 2, thickness, phase);
        v
    }

    #[test]
    fn one_voxel_slices_change_nothing() {
        let line: Vec<f32> = (0..17).map(|i| ((i * 7) % 5) as f32 + 1.0).collect();
        assert_eq!(blur_line(&line, 1.0, 0.0), line);
    }

    #[test]
    fn slabs_of_two_average_pairs_and_interpolate_between_them() {
        // Slabs {0,1} {2,3} {4,5}: means 2, 6, 10 at 0.5, 2.5, 4.5; the ends are held.
        let line = [1.0, 3.0, 5.0, 7.0, 9.0, 11.0];
        assert_eq!(blur_line(&line, 2.0, 0.0), [2.0, 3.0, 5.0, 7.0, 9.0, 10.0]);
        // An edge between two slabs is spread from one centre to the next.
        let step = [1.0, 1.0, 3.0, 3.0, 5.0, 5.0];
        assert_eq!(blur_line(&step, 2.0, 0.0), [1.0, 1.5, 2.5, 3.5, 4.5, 5.0]);
    }

    #[test]
    fn a_slab_edge_inside_a_voxel_splits_it_by_overlap() {
        // t = 2.5, phase 0: slabs [−½, 2), [2, 4.5): voxel 2 counts half in each.
        let line = [2.0, 2.0, 4.0, 6.0, 6.0];
        let out = blur_line(&line, 2.5, 0.0);
        let (a, b) = ((2.0 + 2.0 + 0.5 * 4.0) / 2.5, (0.5 * 4.0 + 6.0 + 6.0) / 2.5);
        let (ca, cb) = (0.75, 3.25);
        for (i, &o) in out.iter().enumerate() {
            let x = i as f64;
            let want = if x <= ca {
                a
            } else if x >= cb {
                b
            } else {
                a + (b - a) * (x - ca) / 2.5
            };
            assert!(
                (o as f64 - want).abs() < 1e-6,
                "voxel {i}: {o} against {want}"
            );
        }
    }

    #[test]
    fn a_ramp_is_kept_between_the_first_and_last_centres_and_zeros_stay() {
        let (dims, t, phase) = ([5, 40, 3], 5.0, 1.5);
        let mut v: Vec<f32> = (0..dims.iter().product::<usize>())
            .map(|i| ((i / dims[2]) % dims[1]) as f32 * 0.5 + 1.0)
            .collect();
        let plane = dims[1] * dims[2];
        // One zero, at (3, 10, 1): the line (3, ·, 1) is blurred with it.
        v[3 * plane + 10 * dims[2] + 1] = 0.0;
        let before = v.clone();
        simulate(&mut v, dims, 1, t, phase);
        // Slab centres at 0.5 + 5s; slab 0 and the last are cut short by the line's ends, so
        // the ramp is kept exactly between the centres of slabs 1 and 7 (5.5 and 35.5), except
        // on the line whose zero was averaged in (as the background is at a brain's edge).
        for (i, (&a, &b)) in before.iter().zip(&v).enumerate() {
            let (line, j) = ((i / plane, i % dims[2]), (i / dims[2]) % dims[1]);
            if a == 0.0 {
                assert_eq!(b, 0.0);
            } else if line == (3, 1) {
                // the slab [8, 13) holds the zero: lower from the centre before to the one after
                assert!(!(6..=15).contains(&j) || b < a, "voxel {i}: {a} became {b}");
            } else if (6..=35).contains(&j) {
                assert!((a - b).abs() < 1e-5, "voxel {i}: {a} became {b}");
            }
        }
        assert_ne!(before, v, "the ends are held, so something changed");
    }
}
