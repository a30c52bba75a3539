//! Skull stripping: the brain's mask on the prepared grid, and whether a series was stripped
//! already.
//!
//! A classical morphological method (in the family of Brainsuite's BSE, without its edge
//! detector): on T1, T1ce and FLAIR — where CSF and bone are dark and brain tissue is not — the
//! tissue is what lies above a threshold found by Otsu's method; an erosion by a few millimetres
//! cuts the thin bridges between the brain and the scalp (across the dark CSF and inner table of
//! the skull), the largest part left is the brain, it grows back inside the tissue, and a
//! closing and hole filling take in the sulci, the ventricles and a necrotic core. The choice,
//! its numbers and its limits are in docs/CLINICAL.md.

use super::morphology::{close, dilate, erode, fill_holes, largest_component};
use crate::data::modality::Modality;

/// How far the erosion reaches (mm): wider than a bridge of tissue between brain and scalp,
/// narrower than the brain's smallest part worth keeping.
const CUT_MM: f64 = 3.0;
/// The closing's radius (mm): the widest sulcus or fissure taken into the brain is twice this.
const CLOSE_MM: f64 = 6.0;
/// The layer of CSF over the brain's surface (mm), below the tissue threshold.
const SURFACE_MM: f64 = 1.0;
/// A skull-stripped brain holds at most this (mL); a head from the scanner more.
const MAX_BRAIN_ML: f64 = 2500.0;
/// On a stripped brain, the voxels on the outline are brain (a good fraction of the tissue's);
/// on an image from the scanner, air or noise.
const MIN_OUTLINE_RATIO: f32 = 0.2;

/// Whether `values` (one series on its grid of `spacing` mm) was skull-stripped already: zero
/// outside a region no larger than a brain, whose outline is tissue, not air.
pub fn already_stripped(values: &[f32], dims: [usize; 3], spacing: [f64; 3]) -> bool {
    let [nx, ny, nz] = dims;
    let nonzero: Vec<f32> = values.iter().copied().filter(|&v| v != 0.0).collect();
    let voxel_ml = spacing.iter().product::<f64>() / 1000.0;
    if nonzero.is_empty() || nonzero.len() == values.len() {
        return false;
    }
    if nonzero.len() as f64 * voxel_ml > MAX_BRAIN_ML {
        return false;
    }
    let mut outline = Vec::new();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let v = i + nx * (j + ny * k);
                if values[v] == 0.0 {
                    continue;
                }
                let zero_beside = (i > 0 && values[v - 1] == 0.0)
                    || (i + 1 < nx && values[v + 1] == 0.0)
                    || (j > 0 && values[v - nx] == 0.0)
                    || (j + 1 < ny && values[v + nx] == 0.0)
                    || (k > 0 && values[v - nx * ny] == 0.0)
                    || (k + 1 < nz && values[v + nx * ny] == 0.0);
                if zero_beside {
                    outline.push(values[v]);
                }
            }
        }
    }
    if outline.is_empty() {
        return false;
    }
    // Against the tissue's level: the brighter class of the nonzero values (a head's noise
    // outnumbers its tissue).
    let split = otsu(&nonzero);
    let mut tissue: Vec<f32> = nonzero.into_iter().filter(|&v| v >= split).collect();
    median(&mut outline) >= MIN_OUTLINE_RATIO * median(&mut tissue)
}

/// The least share of the head's foreground a brain found in it holds: a whole head holds about
/// half brain (Colin 27: 1.8 L in 3.9 L), less with its neck, a window around a tumour more.
/// Below it, what the method found is not a brain (an exam of another body part, or an image
/// the method cannot read).
const MIN_BRAIN_OF_HEAD: f64 = 0.1;

/// Stripping found no brain: the mask's and the head's volumes (mL).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoBrain {
    pub brain_ml: f64,
    pub head_ml: f64,
}

impl std::fmt::Display for NoBrain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "skull stripping found no brain (a brain of {:.0} mL in a head of {:.0} mL; at least \
             {:.0} % expected): not an MRI of a head, or a contrast the stripping cannot read; \
             if the series are skull-stripped already, say so (--skull-stripped)",
            self.brain_ml,
            self.head_ml,
            100.0 * MIN_BRAIN_OF_HEAD
        )
    }
}

/// The brain's mask as [`brain_mask`] finds it, refused when it is too small a part of the head
/// (or empty) to be one.
pub fn find_brain(
    series: &[(Modality, &[f32])],
    dims: [usize; 3],
    spacing: [f64; 3],
) -> Result<Vec<bool>, NoBrain> {
    let (brain, head) = brain_in_head(series, dims, spacing);
    let voxel_ml = spacing.iter().product::<f64>() / 1000.0;
    let voxels = brain.iter().filter(|&&b| b).count();
    if voxels == 0 || (voxels as f64) < MIN_BRAIN_OF_HEAD * head as f64 {
        return Err(NoBrain {
            brain_ml: voxels as f64 * voxel_ml,
            head_ml: head as f64 * voxel_ml,
        });
    }
    Ok(brain)
}

/// The brain's mask from the case's series on one grid (`dims`, `spacing` mm), in file order.
/// T2 is left out: CSF is bright on it, as brain tissue is.
pub fn brain_mask(series: &[(Modality, &[f32])], dims: [usize; 3], spacing: [f64; 3]) -> Vec<bool> {
    brain_in_head(series, dims, spacing).0
}

/// The brain's mask, and how many voxels the head's foreground holds.
fn brain_in_head(
    series: &[(Modality, &[f32])],
    dims: [usize; 3],
    spacing: [f64; 3],
) -> (Vec<bool>, usize) {
    let n: usize = dims.iter().product();
    // Each series on a common scale: its values over its 99th percentile.
    let mut feature = vec![0f32; n];
    let mut used = 0;
    for (m, values) in series {
        if *m == Modality::T2 {
            continue;
        }
        let mut nonzero: Vec<f32> = values.iter().copied().filter(|&v| v > 0.0).collect();
        if nonzero.is_empty() {
            continue;
        }
        let k = nonzero.len() * 99 / 100;
        let scale = nonzero
            .select_nth_unstable_by(k, f32::total_cmp)
            .1
            .max(f32::MIN_POSITIVE);
        for (f, v) in feature.iter_mut().zip(values.iter()) {
            *f += v.max(0.0) / scale;
        }
        used += 1;
    }
    if used == 0 {
        return (vec![false; n], 0);
    }
    // The head (above a tenth of the bright end, as the registration's foreground) in three
    // classes: CSF, bone and air at its edge; grey matter and muscle; white matter and fat. The
    // tissue is above the first threshold.
    let head: Vec<f32> = feature
        .iter()
        .copied()
        .filter(|&v| v > 0.1 * used as f32)
        .collect();
    let tissue_threshold = otsu_classes(&head, 3)[0];
    let tissue: Vec<bool> = feature.iter().map(|&v| v > tissue_threshold).collect();

    let core = largest_component(&erode(&tissue, dims, spacing, CUT_MM), dims);
    let grown = dilate(&core, dims, spacing, CUT_MM + 0.5);
    let brain: Vec<bool> = grown.iter().zip(&tissue).map(|(g, t)| *g && *t).collect();
    // Back to one piece: the regrowth may touch a few voxels of tissue across a thin gap.
    let brain = largest_component(&brain, dims);
    let brain = fill_holes(&close(&brain, dims, spacing, CLOSE_MM), dims);
    // The threshold leaves out the CSF on the brain's surface, which is the brain's.
    (dilate(&brain, dims, spacing, SURFACE_MM), head.len())
}

/// Otsu's threshold: the value that splits `values` into two classes of least within-class
/// variance.
pub fn otsu(values: &[f32]) -> f32 {
    otsu_classes(values, 2)[0]
}

/// Otsu's method for two or three classes: the thresholds (ascending) that split `values` into
/// classes of greatest between-class variance, on a histogram of 256 bins up to the 99.9th
/// percentile.
pub fn otsu_classes(values: &[f32], classes: usize) -> Vec<f32> {
    assert!((2..=3).contains(&classes));
    if values.is_empty() {
        return vec![0.0; classes - 1];
    }
    let mut sorted: Vec<f32> = values.to_vec();
    let top_k = (sorted.len() * 999 / 1000).min(sorted.len() - 1);
    let (_, top, _) = sorted.select_nth_unstable_by(top_k, f32::total_cmp);
    let top = *top;
    let lo = values.iter().copied().fold(f32::INFINITY, f32::min);
    if top <= lo {
        return vec![lo; classes - 1];
    }
    const BINS: usize = 256;
    let width = (top - lo) / BINS as f32;
    let mut hist = [0f64; BINS];
    for &v in values {
        let b = (((v - lo) / width) as usize).min(BINS - 1);
        hist[b] += 1.0;
    }
    // Prefix sums: the weight and first moment of bins [0, b).
    let mut w = [0f64; BINS + 1];
    let mut m = [0f64; BINS + 1];
    for b in 0..BINS {
        w[b + 1] = w[b] + hist[b];
        m[b + 1] = m[b] + b as f64 * hist[b];
    }
    // A class of bins [a, b): its weight times its squared mean, summed over the classes, is
    // largest where the between-class variance is.
    let score = |a: usize, b: usize| {
        let wc = w[b] - w[a];
        if wc > 0.0 {
            let mc = m[b] - m[a];
            mc * mc / wc
        } else {
            0.0
        }
    };
    let at = |b: usize| lo + width * b as f32;
    if classes == 2 {
        let best = (1..BINS)
            .max_by(|&x, &y| {
                (score(0, x) + score(x, BINS)).total_cmp(&(score(0, y) + score(y, BINS)))
            })
            .unwrap();
        return vec![at(best)];
    }
    let (mut best, mut cut) = (f64::NEG_INFINITY, (1, 2));
    for x in 1..BINS - 1 {
        for y in x + 1..BINS {
            let s = score(0, x) + score(x, y) + score(y, BINS);
            if s > best {
                (best, cut) = (s, (x, y));
            }
        }
    }
    vec![at(cut.0), at(cut.1)]
}

fn median(values: &mut [f32]) -> f32 {
    if values.is_empty() {
        return 0.0;
    }
    let k = values.len() / 2;
    *values.select_nth_unstable_by(k, f32::total_cmp).1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otsu_splits_two_clusters() {
        let v: Vec<f32> = (0..1000)
            .map(|i| {
                if i % 2 == 0 {
                    10.0 + (i % 7) as f32
                } else {
                    100.0 + (i % 11) as f32
                }
            })
            .collect();
        let t = otsu(&v);
        assert!(t > 16.0 && t < 100.0, "{t}");
        let three: Vec<f32> = (0..900)
            .map(|i| [5.0, 50.0, 95.0][i % 3] + (i % 5) as f32)
            .collect();
        let t = otsu_classes(&three, 3);
        assert!(
            t[0] > 9.0 && t[0] < 50.0 && t[1] > 54.0 && t[1] < 95.0,
            "{t:?}"
        );
    }

    #[test]
    fn a_zero_background_with_a_bright_outline_is_stripped_and_noise_is_not() {
        let dims = [40, 40, 40];
        let ball = |v: usize| {
            let (i, j, k) = (v % 40, (v / 40) % 40, v / 1600);
            let d2 = [i, j, k]
                .iter()
                .map(|&x| (x as f64 - 19.5).powi(2))
                .sum::<f64>();
            d2 < 15.0 * 15.0
        };
        let stripped: Vec<f32> = (0..64_000)
            .map(|v| if ball(v) { 500.0 } else { 0.0 })
            .collect();
        assert!(already_stripped(&stripped, dims, [1.0; 3]));
        // The same brain in noise, with a few zeros where the noise rounded to nothing.
        let raw: Vec<f32> = (0..64_000)
            .map(|v| {
                if ball(v) {
                    500.0
                } else if v % 13 == 0 {
                    0.0
                } else {
                    12.0
                }
            })
            .collect();
        assert!(!already_stripped(&raw, dims, [1.0; 3]));
        // A region the size of a head (7 L at 8 mm voxels) is not a brain.
        assert!(!already_stripped(&stripped, dims, [8.0; 3]));
    }

    #[test]
    fn a_brain_is_found_in_a_head_and_none_in_beads_or_nothing() {
        let dims = [40, 40, 40];
        let at = |v: usize| [v % 40, (v / 40) % 40, v / 1600].map(|x| x as f64);
        // A head in layers, in noise: white matter, grey matter (to 12 mm: 7.2 mL), CSF, bone,
        // scalp. Its brain is found, with the CSF on its surface.
        let head: Vec<f32> = (0..64_000)
            .map(|v| {
                let r: f64 = at(v).iter().map(|x| (x - 19.5).powi(2)).sum::<f64>().sqrt();
                match r {
                    r if r < 8.0 => 600.0,
                    r if r < 12.0 => 400.0,
                    r if r < 14.0 => 100.0,
                    r if r < 16.0 => 20.0,
                    r if r < 18.0 => 450.0,
                    _ => 5.0 + (v % 7) as f32,
                }
            })
            .collect();
        let brain = find_brain(&[(Modality::T1ce, &head)], dims, [1.0; 3]).unwrap();
        let ml = brain.iter().filter(|&&b| b).count() as f64 / 1000.0;
        assert!((7.0..11.0).contains(&ml), "{ml} mL for a brain of 7.2 mL");
        // Beads of 2 mm radius every 8 mm: no part survives the cut between brain and scalp.
        let beads: Vec<f32> = (0..64_000)
            .map(|v| {
                let d2: f64 = at(v).iter().map(|x| (x % 8.0 - 4.0).powi(2)).sum();
                if d2 <= 4.0 {
                    500.0
                } else {
                    5.0 + (v % 7) as f32
                }
            })
            .collect();
        let none = find_brain(&[(Modality::T1ce, &beads)], dims, [1.0; 3]).unwrap_err();
        assert_eq!(none.brain_ml, 0.0);
        assert!(none.head_ml > 1.0, "{none:?}");
        assert!(none.to_string().contains("found no brain"), "{none}");
        // Nothing at all.
        let zeros = vec![0f32; 64_000];
        assert!(find_brain(&[(Modality::T1ce, &zeros)], dims, [1.0; 3]).is_err());
    }
}
