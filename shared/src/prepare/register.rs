//! Rigid registration of one series to another by normalised mutual information (Studholme et
//! al. 1999: NMI = (H(F) + H(M)) / H(F, M)), which rewards one image's intensities predicting the
//! other's whatever the contrasts: a T2 or a FLAIR registers to a T1ce. Coarse to fine (blocks of
//! 4, 2 and 1 mm), started from the headers' world positions and the centres of mass, on a fixed
//! sample of the fixed image's foreground; Nelder–Mead on the six parameters at each level.

use super::motion::Rigid;
use super::resample::Volume;
use crate::data::rng::Rng;

/// How a registration searches.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The levels' block sizes (mm), coarse to fine.
    pub levels_mm: Vec<f64>,
    /// The most fixed-image voxels the cost reads at a level.
    pub samples: usize,
    pub bins: usize,
    /// The most cost evaluations at a level.
    pub evaluations: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            levels_mm: vec![4.0, 2.0, 1.0],
            samples: 30_000,
            bins: 32,
            evaluations: 400,
        }
    }
}

/// What a registration found: `motion` maps the fixed image's world points to the moving
/// image's (the moving image resampled through it lies on the fixed one).
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub motion: Rigid,
    /// NMI at the end (1: independent intensities, 2: one determines the other).
    pub nmi: f64,
    /// The fraction of the fixed image's foreground sample that the motion puts inside the
    /// moving image's grid, at the finest level.
    pub overlap: f64,
    pub evaluations: usize,
}

/// A value above which a voxel is foreground: a tenth of the 99th percentile of the nonzero
/// values (read from a sample).
fn foreground_threshold(v: &Volume) -> (f32, f32) {
    let step = (v.values.len() / 200_000).max(1);
    let mut sample: Vec<f32> = v
        .values
        .iter()
        .step_by(step)
        .copied()
        .filter(|x| *x > 0.0 && x.is_finite())
        .collect();
    if sample.is_empty() {
        return (0.0, 1.0);
    }
    let k = (sample.len() * 99 / 100).min(sample.len() - 1);
    let (_, p99, _) = sample.select_nth_unstable_by(k, f32::total_cmp);
    let p99 = p99.max(f32::MIN_POSITIVE);
    (0.1 * p99, p99)
}

/// The intensity-weighted centre of the foreground (world, mm).
fn centre_of_mass(v: &Volume, threshold: f32) -> [f64; 3] {
    let [nx, ny, nz] = v.dims();
    let (mut sum, mut w) = ([0.0f64; 3], 0.0f64);
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let x = v.values[i + nx * (j + ny * k)];
                if x > threshold {
                    let p = v.world([i as f64, j as f64, k as f64]);
                    for a in 0..3 {
                        sum[a] += x as f64 * p[a];
                    }
                    w += x as f64;
                }
            }
        }
    }
    if w == 0.0 {
        return v.world(v.dims().map(|n| (n as f64 - 1.0) / 2.0));
    }
    sum.map(|s| s / w)
}

/// Blocks of about `mm` millimetres of a volume (at least one voxel).
fn at_level(v: &Volume, mm: f64) -> Volume {
    let spacing = v.geometry.spacing();
    let factor = spacing.map(|s| ((mm / s).round() as usize).max(1));
    if factor == [1, 1, 1] {
        v.clone()
    } else {
        v.downsample(factor)
    }
}

/// The cost's fixed part at one level: sampled foreground points and their intensity bins.
struct Level {
    points: Vec<[f64; 3]>,
    fixed_bins: Vec<usize>,
    moving: Volume,
    moving_scale: f32,
    bins: usize,
}

impl Level {
    fn new(fixed: &Volume, moving: &Volume, mm: f64, options: &Options, rng: &mut Rng) -> Level {
        let (f_threshold, f_max) = foreground_threshold(fixed);
        let (_, m_max) = foreground_threshold(moving);
        let coarse = at_level(fixed, mm);
        let [nx, ny, _] = coarse.dims();
        let mut chosen: Vec<usize> = (0..coarse.values.len())
            .filter(|&i| coarse.values[i] > f_threshold)
            .collect();
        // A fixed subset, the same at every evaluation: the cost is then a smooth function.
        if chosen.len() > options.samples {
            for i in 0..options.samples {
                let j = i + (rng.next_u64() % (chosen.len() - i) as u64) as usize;
                chosen.swap(i, j);
            }
            chosen.truncate(options.samples);
        }
        let bins = options.bins;
        let bin =
            |x: f32| (((x / f_max) * (bins - 1) as f32).round().max(0.0) as usize).min(bins - 1);
        Level {
            points: chosen
                .iter()
                .map(|&i| {
                    coarse.world([
                        (i % nx) as f64,
                        ((i / nx) % ny) as f64,
                        (i / (nx * ny)) as f64,
                    ])
                })
                .collect(),
            fixed_bins: chosen.iter().map(|&i| bin(coarse.values[i])).collect(),
            moving: at_level(moving, mm),
            moving_scale: (bins - 1) as f32 / m_max,
            bins,
        }
    }

    /// The fraction of the sample that `motion` puts inside the moving image.
    fn overlap(&self, motion: &Rigid) -> f64 {
        let (r, o) = motion.affine();
        let inside = self
            .points
            .iter()
            .filter(|p| {
                let q = [0, 1, 2].map(|i| r[i][0] * p[0] + r[i][1] * p[1] + r[i][2] * p[2] + o[i]);
                self.moving.at_world(q).is_some()
            })
            .count();
        inside as f64 / self.points.len().max(1) as f64
    }

    /// −NMI of the moving image through `motion` against the fixed sample; 0 when less than a
    /// tenth of the sample falls inside the moving image.
    fn cost(&self, motion: &Rigid) -> f64 {
        let b = self.bins;
        let mut joint = vec![0f64; b * b];
        let (r, o) = motion.affine();
        let mut inside = 0usize;
        for (p, &fb) in self.points.iter().zip(&self.fixed_bins) {
            let q = [0, 1, 2].map(|i| r[i][0] * p[0] + r[i][1] * p[1] + r[i][2] * p[2] + o[i]);
            let Some(v) = self.moving.at_world(q) else {
                continue;
            };
            inside += 1;
            // Split between the two nearest bins: the cost changes smoothly with the motion.
            let t = (v * self.moving_scale).clamp(0.0, (b - 1) as f32);
            let lo = (t.floor() as usize).min(b - 2);
            let w = (t - lo as f32) as f64;
            joint[fb * b + lo] += 1.0 - w;
            joint[fb * b + lo + 1] += w;
        }
        if inside * 10 < self.points.len() || inside == 0 {
            return 0.0;
        }
        let n = inside as f64;
        let (mut pf, mut pm) = (vec![0f64; b], vec![0f64; b]);
        let mut h_joint = 0.0;
        for f in 0..b {
            for m in 0..b {
                let p = joint[f * b + m] / n;
                if p > 0.0 {
                    h_joint -= p * p.ln();
                    pf[f] += p;
                    pm[m] += p;
                }
            }
        }
        let h = |ps: &[f64]| {
            -ps.iter()
                .filter(|p| **p > 0.0)
                .map(|p| p * p.ln())
                .sum::<f64>()
        };
        if h_joint <= 0.0 {
            return 0.0;
        }
        -(h(&pf) + h(&pm)) / h_joint
    }
}

/// The motion (about `centre`) of parameters u in units of `step`.
fn motion_of(u: &[f64; 6], start: &Rigid, step: [f64; 2]) -> Rigid {
    Rigid {
        angles: [0, 1, 2].map(|i| start.angles[i] + u[i] * step[0]),
        translation: [0, 1, 2].map(|i| start.translation[i] + u[i + 3] * step[1]),
        centre: start.centre,
    }
}

/// Nelder–Mead from 0 with unit steps: the minimum found and the evaluations spent.
fn nelder_mead(f: impl Fn(&[f64; 6]) -> f64, max_evaluations: usize) -> ([f64; 6], f64, usize) {
    let mut simplex: Vec<([f64; 6], f64)> = Vec::with_capacity(7);
    let mut evaluations = 0;
    let eval = |x: [f64; 6], evaluations: &mut usize| {
        *evaluations += 1;
        (x, f(&x))
    };
    simplex.push(eval([0.0; 6], &mut evaluations));
    for d in 0..6 {
        let mut x = [0.0; 6];
        x[d] = 1.0;
        simplex.push(eval(x, &mut evaluations));
    }
    while evaluations < max_evaluations {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (best, worst) = (simplex[0].1, simplex[6].1);
        let size = simplex[1..]
            .iter()
            .map(|(x, _)| {
                (0..6)
                    .map(|d| (x[d] - simplex[0].0[d]).abs())
                    .fold(0.0, f64::max)
            })
            .fold(0.0, f64::max);
        if size < 0.02 && (worst - best).abs() < 1e-6 {
            break;
        }
        let mut centroid = [0.0; 6];
        for (x, _) in &simplex[..6] {
            for d in 0..6 {
                centroid[d] += x[d] / 6.0;
            }
        }
        let along = |t: f64| -> [f64; 6] {
            let w = simplex[6].0;
            std::array::from_fn(|d| centroid[d] + t * (w[d] - centroid[d]))
        };
        let reflected = eval(along(-1.0), &mut evaluations);
        if reflected.1 < best {
            let expanded = eval(along(-2.0), &mut evaluations);
            simplex[6] = if expanded.1 < reflected.1 {
                expanded
            } else {
                reflected
            };
        } else if reflected.1 < simplex[5].1 {
            simplex[6] = reflected;
        } else {
            let contracted = if reflected.1 < worst {
                eval(along(-0.5), &mut evaluations)
            } else {
                eval(along(0.5), &mut evaluations)
            };
            if contracted.1 < worst.min(reflected.1) {
                simplex[6] = contracted;
            } else {
                let x0 = simplex[0].0;
                for s in simplex.iter_mut().skip(1) {
                    let x: [f64; 6] = std::array::from_fn(|d| x0[d] + 0.5 * (s.0[d] - x0[d]));
                    *s = eval(x, &mut evaluations);
                }
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    (simplex[0].0, simplex[0].1, evaluations)
}

/// Register `moving` to `fixed`: the motion that maps the fixed image's world points to where
/// the same anatomy lies in the moving image.
pub fn register(fixed: &Volume, moving: &Volume, options: &Options) -> Registration {
    let (f_threshold, _) = foreground_threshold(fixed);
    let (m_threshold, _) = foreground_threshold(moving);
    let (cf, cm) = (
        centre_of_mass(fixed, f_threshold),
        centre_of_mass(moving, m_threshold),
    );
    let mut motion = Rigid {
        angles: [0.0; 3],
        translation: [0, 1, 2].map(|i| cm[i] - cf[i]),
        centre: cf,
    };
    let mut rng = Rng::new(0x5EED);
    let mut evaluations = 0;
    let mut nmi = 0.0;
    let mut overlap = 0.0;
    for &mm in &options.levels_mm {
        let level = Level::new(fixed, moving, mm, options, &mut rng);
        // Steps of a level: 1.5 blocks of translation, the angle that moves a point 60 mm
        // from the centre by as much.
        let step = [(1.5 * mm / 60.0), 1.5 * mm];
        let start = motion;
        let (u, cost, n) = nelder_mead(
            |u| level.cost(&motion_of(u, &start, step)),
            options.evaluations,
        );
        motion = motion_of(&u, &start, step);
        evaluations += n;
        nmi = -cost;
        overlap = level.overlap(&motion);
    }
    Registration {
        motion,
        nmi,
        overlap,
        evaluations,
    }
}
