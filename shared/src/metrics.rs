//! BraTS legacy metrics per region (docs/DESIGN.md §8): Dice, HD95 (medpy's), sensitivity, specificity,
//! with the BraTS rules for empty masks.
//!
//! Masks are boolean volumes in any voxel order whose axes are given by `dims` with the last axis
//! fastest (network order; pass the spacing in the same axis order).

/// HD95 when exactly one of the masks is empty (BraTS: the diagonal of the 240×240×155 grid).
pub const HD95_ONE_EMPTY: f64 = 373.12866;

/// The four numbers of one region of one case.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RegionMetrics {
    pub dice: f64,
    pub hd95: f64,
    pub sensitivity: f64,
    pub specificity: f64,
}

/// Dice, HD95 (mm), sensitivity and specificity of `pred` against `truth`.
pub fn region_metrics(
    pred: &[bool],
    truth: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
) -> RegionMetrics {
    let (tp, fp, fn_) = confusion(pred, truth);
    let tn = pred.len() - tp - fp - fn_;
    let (np, nt) = (tp + fp, tp + fn_);
    let dice = dice_of(tp, np, nt);
    let hd95 = match (np, nt) {
        (0, 0) => 0.0,
        _ if np == 0 || nt == 0 => HD95_ONE_EMPTY,
        _ => hd95(pred, truth, dims, spacing),
    };
    let sensitivity = if nt == 0 { 1.0 } else { tp as f64 / nt as f64 };
    let specificity = if tn + fp == 0 {
        1.0
    } else {
        tn as f64 / (tn + fp) as f64
    };
    RegionMetrics {
        dice,
        hd95,
        sensitivity,
        specificity,
    }
}

/// Dice of `pred` against `truth` (both empty → 1, exactly one empty → 0).
pub fn dice(pred: &[bool], truth: &[bool]) -> f64 {
    let (tp, fp, fn_) = confusion(pred, truth);
    dice_of(tp, tp + fp, tp + fn_)
}

/// True positives, false positives, false negatives.
fn confusion(pred: &[bool], truth: &[bool]) -> (usize, usize, usize) {
    assert_eq!(pred.len(), truth.len());
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    for (&p, &t) in pred.iter().zip(truth) {
        match (p, t) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            _ => {}
        }
    }
    (tp, fp, fn_)
}

/// Dice from the overlap and the two mask sizes, with the BraTS rules for empty masks.
fn dice_of(tp: usize, np: usize, nt: usize) -> f64 {
    match (np, nt) {
        (0, 0) => 1.0,
        _ if np == 0 || nt == 0 => 0.0,
        _ => 2.0 * tp as f64 / (np + nt) as f64,
    }
}

/// medpy's `hd95`: the 95th percentile (linear interpolation) of the distances, in mm, from the
/// surface voxels of each mask to the surface of the other, both directions pooled. A surface
/// voxel is one that a 6-connected erosion removes (outside the grid counts as background).
/// Both masks must be non-empty.
pub fn hd95(a: &[bool], b: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> f64 {
    let sa = surface(a, dims);
    let sb = surface(b, dims);
    let da = distance_to(&sa, dims, spacing);
    let db = distance_to(&sb, dims, spacing);
    let mut d: Vec<f64> = sa
        .iter()
        .enumerate()
        .filter(|(_, s)| **s)
        .map(|(i, _)| db[i])
        .chain(
            sb.iter()
                .enumerate()
                .filter(|(_, s)| **s)
                .map(|(i, _)| da[i]),
        )
        .collect();
    percentile(&mut d, 95.0)
}

/// numpy's default (linear) percentile.
fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    let pos = q / 100.0 * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    let t = pos - lo as f64;
    values[lo] + (values[hi] - values[lo]) * t
}

/// mask XOR erosion(mask), 6-connectivity, border as background.
fn surface(mask: &[bool], dims: [usize; 3]) -> Vec<bool> {
    let [nx, ny, nz] = dims;
    let at = |i: isize, j: isize, k: isize| -> bool {
        i >= 0
            && j >= 0
            && k >= 0
            && (i as usize) < nx
            && (j as usize) < ny
            && (k as usize) < nz
            && mask[(i as usize * ny + j as usize) * nz + k as usize]
    };
    let mut out = vec![false; mask.len()];
    for i in 0..nx as isize {
        for j in 0..ny as isize {
            for k in 0..nz as isize {
                if !at(i, j, k) {
                    continue;
                }
                let interior = at(i - 1, j, k)
                    && at(i + 1, j, k)
                    && at(i, j - 1, k)
                    && at(i, j + 1, k)
                    && at(i, j, k - 1)
                    && at(i, j, k + 1);
                out[(i as usize * ny + j as usize) * nz + k as usize] = !interior;
            }
        }
    }
    out
}

/// Exact Euclidean distance (mm) from every voxel to the nearest `true` voxel: separable squared
/// distance transforms (Felzenszwalb & Huttenlocher) along each axis with its spacing.
pub fn distance_to(target: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> Vec<f64> {
    const FAR: f64 = 1e20;
    let mut d: Vec<f64> = target.iter().map(|&t| if t { 0.0 } else { FAR }).collect();
    let [nx, ny, nz] = dims;
    let strides = [ny * nz, nz, 1];
    let mut line = Vec::new();
    let mut out = Vec::new();
    for axis in 0..3 {
        let n = dims[axis];
        let step = strides[axis];
        let w = spacing[axis] * spacing[axis];
        // Every line along `axis`: its start is any index whose coordinate on `axis` is 0.
        for start in 0..nx * ny * nz {
            let coord = (start / step) % n;
            if coord != 0 {
                continue;
            }
            line.clear();
            line.extend((0..n).map(|p| d[start + p * step]));
            squared_edt_1d(&line, w, &mut out);
            for p in 0..n {
                d[start + p * step] = out[p];
            }
        }
    }
    d.iter()
        .map(|v| if *v >= FAR { f64::INFINITY } else { v.sqrt() })
        .collect()
}

/// 1-D lower envelope of parabolas: out[p] = min_q f[q] + w·(p − q)².
fn squared_edt_1d(f: &[f64], w: f64, out: &mut Vec<f64>) {
    let n = f.len();
    out.clear();
    out.resize(n, 0.0);
    let mut v = vec![0usize; n];
    let mut z = vec![0f64; n + 1];
    let mut k = 0usize;
    // Skip leading infinities so that the envelope starts at a finite parabola.
    let first = f.iter().position(|x| *x < 1e19);
    let Some(first) = first else {
        out.copy_from_slice(f);
        return;
    };
    v[0] = first;
    z[0] = f64::NEG_INFINITY;
    z[1] = f64::INFINITY;
    for q in first + 1..n {
        if f[q] >= 1e19 {
            continue;
        }
        loop {
            let p = v[k];
            let s = ((f[q] + w * (q * q) as f64) - (f[p] + w * (p * p) as f64))
                / (2.0 * w * (q as f64 - p as f64));
            if s <= z[k] && k > 0 {
                k -= 1;
            } else {
                k += 1;
                v[k] = q;
                z[k] = s;
                z[k + 1] = f64::INFINITY;
                break;
            }
        }
    }
    let mut k = 0;
    for (p, o) in out.iter_mut().enumerate() {
        while z[k + 1] < p as f64 {
            k += 1;
        }
        let q = v[k];
        let dq = p as f64 - q as f64;
        *o = f[q] + w * dq * dq;
    }
}

/// Summary statistics of a metric over cases (NaN-free input).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub std: f64,
    pub median: f64,
    pub q25: f64,
    pub q75: f64,
}

pub fn summarize(values: &[f64]) -> Summary {
    let n = values.len();
    if n == 0 {
        return Summary {
            n,
            mean: f64::NAN,
            std: f64::NAN,
            median: f64::NAN,
            q25: f64::NAN,
            q75: f64::NAN,
        };
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    let mut sorted = values.to_vec();
    Summary {
        n,
        mean,
        std,
        median: percentile(&mut sorted, 50.0),
        q25: percentile(&mut sorted, 25.0),
        q75: percentile(&mut sorted, 75.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_transform_is_exact_with_anisotropic_spacing() {
        let dims = [7, 5, 6];
        let n = 7 * 5 * 6;
        let mut t = vec![false; n];
        let pts = [(1usize, 2usize, 3usize), (5, 0, 0), (6, 4, 5)];
        for (i, j, k) in pts {
            t[(i * 5 + j) * 6 + k] = true;
        }
        let sp = [0.8, 2.5, 1.0];
        let d = distance_to(&t, dims, sp);
        for i in 0..7 {
            for j in 0..5 {
                for k in 0..6 {
                    let brute = pts
                        .iter()
                        .map(|&(a, b, c)| {
                            let dx = (i as f64 - a as f64) * sp[0];
                            let dy = (j as f64 - b as f64) * sp[1];
                            let dz = (k as f64 - c as f64) * sp[2];
                            (dx * dx + dy * dy + dz * dz).sqrt()
                        })
                        .fold(f64::INFINITY, f64::min);
                    let got = d[(i * 5 + j) * 6 + k];
                    assert!((got - brute).abs() < 1e-9, "({i},{j},{k}) {got} vs {brute}");
                }
            }
        }
    }

    #[test]
    fn percentile_is_numpys_linear() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0];
        assert!((percentile(&mut v, 95.0) - 3.85).abs() < 1e-12);
        assert_eq!(percentile(&mut v, 50.0), 2.5);
    }
}
