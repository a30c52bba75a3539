//! Binary morphology on a voxel grid, by exact Euclidean distances (so that a ball of any radius
//! costs the same): erosion, dilation and closing by a ball, the largest connected part, holes
//! filled. Masks are in file order (i fastest), `spacing` in mm per axis.

/// Squared distance (mm²) from each voxel to the nearest voxel where `seed` holds (infinite when
/// none does): Felzenszwalb and Huttenlocher's lower envelope of parabolas, one axis at a time.
pub fn squared_distance(seed: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> Vec<f32> {
    let mut d: Vec<f32> = seed
        .iter()
        .map(|&s| if s { 0.0 } else { f32::INFINITY })
        .collect();
    let [nx, ny, nz] = dims;
    let strides = [1, nx, nx * ny];
    let mut line = Vec::new();
    let mut out = Vec::new();
    let mut envelope = Envelope::default();
    for axis in 0..3 {
        let n = dims[axis];
        let stride = strides[axis];
        let w2 = (spacing[axis] * spacing[axis]) as f32;
        // Every line along `axis`: its first voxel runs over the other two axes.
        let [a, b] = match axis {
            0 => [(ny, nx), (nz, nx * ny)],
            1 => [(nx, 1), (nz, nx * ny)],
            _ => [(nx, 1), (ny, nx)],
        };
        let starts = (0..b.0).flat_map(|v| (0..a.0).map(move |u| u * a.1 + v * b.1));
        for start in starts {
            line.clear();
            line.extend((0..n).map(|t| d[start + t * stride]));
            envelope.transform(&line, w2, &mut out);
            for (t, v) in out.iter().enumerate() {
                d[start + t * stride] = *v;
            }
        }
    }
    d
}

/// The 1-D pass: out[q] = min over p of f[p] + w2 (q − p)².
#[derive(Default)]
struct Envelope {
    v: Vec<usize>,
    z: Vec<f32>,
}

impl Envelope {
    fn transform(&mut self, f: &[f32], w2: f32, out: &mut Vec<f32>) {
        let n = f.len();
        out.clear();
        self.v.clear();
        self.z.clear();
        // The parabolas with a finite base, in order; where each takes over from the last.
        for q in 0..n {
            if !f[q].is_finite() {
                continue;
            }
            loop {
                let Some(&p) = self.v.last() else {
                    self.v.push(q);
                    self.z.push(f32::NEG_INFINITY);
                    break;
                };
                let (qf, pf) = (q as f32, p as f32);
                let s = ((f[q] + w2 * qf * qf) - (f[p] + w2 * pf * pf)) / (2.0 * w2 * (qf - pf));
                if s <= *self.z.last().unwrap() {
                    self.v.pop();
                    self.z.pop();
                } else {
                    self.v.push(q);
                    self.z.push(s);
                    break;
                }
            }
        }
        if self.v.is_empty() {
            out.resize(n, f32::INFINITY);
            return;
        }
        let mut k = 0;
        for q in 0..n {
            let qf = q as f32;
            while k + 1 < self.v.len() && self.z[k + 1] < qf {
                k += 1;
            }
            let p = self.v[k];
            let dq = qf - p as f32;
            out.push(f[p] + w2 * dq * dq);
        }
    }
}

/// The voxels within `radius` mm of the mask.
pub fn dilate(mask: &[bool], dims: [usize; 3], spacing: [f64; 3], radius: f64) -> Vec<bool> {
    let r2 = (radius * radius) as f32;
    squared_distance(mask, dims, spacing)
        .iter()
        .map(|&d| d <= r2)
        .collect()
}

/// The voxels farther than `radius` mm from everything outside the mask. Beyond the grid counts
/// as outside, so that a mask touching the border erodes there too.
pub fn erode(mask: &[bool], dims: [usize; 3], spacing: [f64; 3], radius: f64) -> Vec<bool> {
    let (padded, pdims) = pad(mask, dims, false);
    let outside: Vec<bool> = padded.iter().map(|&m| !m).collect();
    let r2 = (radius * radius) as f32;
    let kept: Vec<bool> = squared_distance(&outside, pdims, spacing)
        .iter()
        .map(|&d| d > r2)
        .collect();
    unpad(&kept, dims)
}

/// Dilation then erosion: gaps narrower than the ball closed, the outline kept.
pub fn close(mask: &[bool], dims: [usize; 3], spacing: [f64; 3], radius: f64) -> Vec<bool> {
    // Padded by more than the radius, so that what the dilation reaches beyond the grid stays
    // inside the padding and erodes back (the padding's outer layer is never reached).
    let margin = spacing.map(|s| (radius / s).ceil() as usize + 1);
    let (padded, pdims) = pad_by(mask, dims, margin, false);
    let grown = dilate(&padded, pdims, spacing, radius);
    unpad_by(&erode(&grown, pdims, spacing, radius), dims, margin)
}

/// The largest part of the mask connected through faces (6-connectivity); empty for an empty
/// mask.
pub fn largest_component(mask: &[bool], dims: [usize; 3]) -> Vec<bool> {
    let mut label = vec![0u32; mask.len()];
    let (mut best, mut best_size) = (0u32, 0usize);
    let mut next = 0u32;
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || label[start] != 0 {
            continue;
        }
        next += 1;
        label[start] = next;
        stack.push(start);
        let mut size = 0;
        while let Some(v) = stack.pop() {
            size += 1;
            for w in neighbours(v, dims) {
                if mask[w] && label[w] == 0 {
                    label[w] = next;
                    stack.push(w);
                }
            }
        }
        if size > best_size {
            (best, best_size) = (next, size);
        }
    }
    label.iter().map(|&l| l != 0 && l == best).collect()
}

/// The mask with every enclosed hole filled: what the outside (through faces, from the grid's
/// border) cannot reach is inside.
pub fn fill_holes(mask: &[bool], dims: [usize; 3]) -> Vec<bool> {
    let [nx, ny, nz] = dims;
    let mut outside = vec![false; mask.len()];
    let mut stack = Vec::new();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let border =
                    i == 0 || j == 0 || k == 0 || i == nx - 1 || j == ny - 1 || k == nz - 1;
                let v = i + nx * (j + ny * k);
                if border && !mask[v] && !outside[v] {
                    outside[v] = true;
                    stack.push(v);
                }
            }
        }
    }
    while let Some(v) = stack.pop() {
        for w in neighbours(v, dims) {
            if !mask[w] && !outside[w] {
                outside[w] = true;
                stack.push(w);
            }
        }
    }
    outside.iter().map(|&o| !o).collect()
}

/// The face neighbours of voxel `v` inside the grid.
fn neighbours(v: usize, dims: [usize; 3]) -> impl Iterator<Item = usize> {
    let [nx, ny, nz] = dims;
    let (i, j, k) = (v % nx, (v / nx) % ny, v / (nx * ny));
    let slab = nx * ny;
    [
        (i > 0).then(|| v - 1),
        (i + 1 < nx).then(|| v + 1),
        (j > 0).then(|| v - nx),
        (j + 1 < ny).then(|| v + nx),
        (k > 0).then(|| v - slab),
        (k + 1 < nz).then(|| v + slab),
    ]
    .into_iter()
    .flatten()
}

fn pad(mask: &[bool], dims: [usize; 3], fill: bool) -> (Vec<bool>, [usize; 3]) {
    pad_by(mask, dims, [1; 3], fill)
}

fn unpad(padded: &[bool], dims: [usize; 3]) -> Vec<bool> {
    unpad_by(padded, dims, [1; 3])
}

fn pad_by(
    mask: &[bool],
    dims: [usize; 3],
    margin: [usize; 3],
    fill: bool,
) -> (Vec<bool>, [usize; 3]) {
    let p = [0, 1, 2].map(|a| dims[a] + 2 * margin[a]);
    let mut out = vec![fill; p[0] * p[1] * p[2]];
    let [nx, ny, nz] = dims;
    for k in 0..nz {
        for j in 0..ny {
            let from = nx * (j + ny * k);
            let to = margin[0] + p[0] * (j + margin[1] + p[1] * (k + margin[2]));
            out[to..to + nx].copy_from_slice(&mask[from..from + nx]);
        }
    }
    (out, p)
}

fn unpad_by(padded: &[bool], dims: [usize; 3], margin: [usize; 3]) -> Vec<bool> {
    let p = [0, 1, 2].map(|a| dims[a] + 2 * margin[a]);
    let [nx, ny, nz] = dims;
    let mut out = Vec::with_capacity(nx * ny * nz);
    for k in 0..nz {
        for j in 0..ny {
            let from = margin[0] + p[0] * (j + margin[1] + p[1] * (k + margin[2]));
            out.extend_from_slice(&padded[from..from + nx]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ball(dims: [usize; 3], centre: [f64; 3], radius: f64) -> Vec<bool> {
        let [nx, ny, nz] = dims;
        let mut m = Vec::new();
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    let d2 = (i as f64 - centre[0]).powi(2)
                        + (j as f64 - centre[1]).powi(2)
                        + (k as f64 - centre[2]).powi(2);
                    m.push(d2 <= radius * radius);
                }
            }
        }
        m
    }

    #[test]
    fn squared_distances_are_exact_against_brute_force() {
        let dims = [9, 7, 6];
        let spacing = [1.0, 2.0, 0.5];
        let mut seed = vec![false; 9 * 7 * 6];
        for v in [3, 100, 217, 300] {
            seed[v] = true;
        }
        let d = squared_distance(&seed, dims, spacing);
        let ijk = |v: usize| [v % 9, (v / 9) % 7, v / 63];
        for (v, got) in d.iter().enumerate() {
            let want = (0..seed.len())
                .filter(|&s| seed[s])
                .map(|s| {
                    let (a, b) = (ijk(v), ijk(s));
                    (0..3)
                        .map(|x| ((a[x] as f64 - b[x] as f64) * spacing[x]).powi(2))
                        .sum::<f64>()
                })
                .fold(f64::INFINITY, f64::min);
            assert!(
                (*got as f64 - want).abs() < 1e-4,
                "voxel {v}: {got} vs {want}"
            );
        }
        assert!(
            squared_distance(&[false; 8], [2, 2, 2], [1.0; 3])
                .iter()
                .all(|d| d.is_infinite())
        );
    }

    #[test]
    fn dilation_and_erosion_are_by_a_ball_against_brute_force() {
        let dims = [17, 15, 13];
        let spacing = [1.0, 1.5, 2.0];
        let mut mask = ball(dims, [8.0, 7.0, 6.0], 5.0);
        mask[3] = true;
        let position = |v: usize| {
            let ijk = [v % 17, (v / 17) % 15, v / 255];
            [0, 1, 2].map(|a| ijk[a] as f64 * spacing[a])
        };
        let within = |v: usize, set: &dyn Fn(usize) -> bool, r: f64| {
            let p = position(v);
            (0..mask.len()).any(|w| {
                let q = position(w);
                set(w) && (0..3).map(|a| (p[a] - q[a]).powi(2)).sum::<f64>() <= r * r
            })
        };
        let r = 3.2;
        let grown = dilate(&mask, dims, spacing, r);
        let shrunk = erode(&mask, dims, spacing, r);
        for v in 0..mask.len() {
            assert_eq!(grown[v], within(v, &|w| mask[w], r), "dilation at {v}");
            // Kept by the erosion: no voxel outside the mask within r. Beyond the grid is outside
            // too: the mask does not reach the border here, so the grid's own voxels decide.
            assert_eq!(shrunk[v], !within(v, &|w| !mask[w], r), "erosion at {v}");
        }
        // A mask filling the grid erodes from the grid's border.
        let full = vec![true; 5 * 5 * 5];
        let e = erode(&full, [5; 3], [1.0; 3], 1.0);
        assert_eq!(e.iter().filter(|&&x| x).count(), 27);
    }

    #[test]
    fn closing_fills_a_slit_and_holes_fill() {
        let dims = [21, 21, 21];
        let mut m = ball(dims, [10.0; 3], 8.0);
        // A slit 1 voxel wide through the ball's middle, and a hollow centre.
        for k in 0..21 {
            for j in 0..21 {
                m[10 + 21 * (j + 21 * k)] = false;
            }
        }
        let closed = close(&m, dims, [1.0; 3], 2.0);
        assert!(closed[10 + 21 * (10 + 21 * 4)], "the slit is closed");
        assert!(!closed[0], "the outside stays out");
        let mut hollow = ball(dims, [10.0; 3], 8.0);
        for v in ball(dims, [10.0; 3], 3.0)
            .iter()
            .enumerate()
            .filter(|(_, b)| **b)
            .map(|(v, _)| v)
        {
            hollow[v] = false;
        }
        assert_eq!(fill_holes(&hollow, dims), ball(dims, [10.0; 3], 8.0));
    }

    #[test]
    fn the_largest_component_is_kept() {
        let dims = [20, 10, 10];
        let a = ball(dims, [4.0, 4.0, 4.0], 3.0);
        let b = ball(dims, [14.0, 4.0, 4.0], 4.0);
        let both: Vec<bool> = a.iter().zip(&b).map(|(x, y)| *x || *y).collect();
        assert_eq!(largest_component(&both, dims), b);
        assert!(largest_component(&[false; 8], [2, 2, 2]).iter().all(|x| !x));
    }
}
