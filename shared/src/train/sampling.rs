//! What each step trains on: the seeded split into training and validation cases, each epoch's
//! order, each sample's crop and the paper's augmentation, prepared ahead on a thread.

use std::path::PathBuf;
use std::sync::mpsc;

use serde::{Deserialize, Serialize};

use super::TrainConfig;
use super::cache::{CacheError, CachedCase, read_cached};
use crate::data::labels;
use crate::data::modality::Region;
use crate::data::preprocess::Crop;
use crate::data::rng::Rng;
use crate::train::parallel::Batch;

/// Mix numbers into one seed.
pub(super) fn mix(parts: &[u64]) -> u64 {
    let mut rng = Rng::new(0x6E76_6E65_7400_0001);
    let mut h = rng.next_u64();
    for p in parts {
        h = Rng::new(h ^ p.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64();
    }
    h
}

/// A seeded permutation.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut rng = Rng::new(seed);
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// The held-out split, written to `split.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub train: Vec<String>,
    pub val: Vec<String>,
}

/// A seeded split of case ids (sorted first, so the split does not depend on listing order).
pub fn split(ids: &[String], val_fraction: f64, seed: u64) -> Split {
    let mut sorted = ids.to_vec();
    sorted.sort();
    let order = shuffled(sorted.len(), mix(&[seed, 0x5E11]));
    let n_val =
        ((sorted.len() as f64 * val_fraction).round() as usize).min(sorted.len().saturating_sub(1));
    let mut val: Vec<String> = order[..n_val].iter().map(|&i| sorted[i].clone()).collect();
    let mut train: Vec<String> = order[n_val..].iter().map(|&i| sorted[i].clone()).collect();
    val.sort();
    train.sort();
    Split { train, val }
}

/// One training sample from a cached case: a random crop (tumour-centred with probability
/// `foreground_fraction`), the paper's augmentation, and the region targets.
pub fn sample(
    case: &CachedCase,
    config: &TrainConfig,
    outputs: &[Region],
    rng: &mut Rng,
) -> (Vec<f32>, Vec<f32>) {
    let crop = config.crop;
    let dims = case.dims;
    let n: usize = dims.iter().product();
    let centre: Option<[usize; 3]> =
        if config.foreground_fraction > 0.0 && rng.chance(config.foreground_fraction) {
            let tumour: Vec<usize> = (0..n).filter(|&v| case.labels[v] != 0).collect();
            (!tumour.is_empty()).then(|| {
                let v = tumour[(rng.next_u64() % tumour.len() as u64) as usize];
                [
                    v / (dims[1] * dims[2]),
                    (v / dims[2]) % dims[1],
                    v % dims[2],
                ]
            })
        } else {
            None
        };
    let mut start = [0isize; 3];
    for a in 0..3 {
        start[a] = if dims[a] <= crop[a] {
            -(((crop[a] - dims[a]) / 2) as isize)
        } else {
            let max = (dims[a] - crop[a]) as isize;
            match centre {
                Some(c) => (c[a] as isize - (crop[a] / 2) as isize).clamp(0, max),
                None => (rng.next_u64() % (max as u64 + 1)) as isize,
            }
        };
    }
    let window = Crop {
        full: dims,
        start,
        size: crop,
    };
    let image: Vec<f32> = case.image.iter().map(|v| v.to_f32()).collect();
    let mut input = window.crop(&image, case.channels);
    let map = window.crop(&case.labels, 1);
    let mut target = labels::region_targets(&map, outputs, case.labels_convention);
    // Drawn only when asked for, so that runs without it keep their random sequence.
    if config.thick_slices > 0.0 {
        let m: usize = crop.iter().product();
        for c in 0..case.channels {
            if rng.chance(config.thick_slices) {
                let axis = (rng.next_u64() % 3) as usize;
                let thickness = rng.range(2.0, 6.0);
                let phase = rng.range(0.0, thickness);
                let channel = &mut input[c * m..(c + 1) * m];
                super::thick_slices::simulate(channel, crop, axis, thickness, phase);
            }
        }
    }
    if config.augment {
        let m: usize = crop.iter().product();
        for c in 0..case.channels {
            let scale = 1.0 + rng.range(-0.1, 0.1) as f32;
            let shift = rng.range(-0.1, 0.1) as f32;
            for v in &mut input[c * m..(c + 1) * m] {
                *v = *v * scale + shift;
            }
        }
        for axis in 0..3 {
            if rng.chance(0.5) {
                flip_axis(&mut input, case.channels, crop, axis);
                flip_axis(&mut target, outputs.len(), crop, axis);
            }
        }
    }
    (input, target)
}

fn flip_axis(data: &mut [f32], channels: usize, dims: [usize; 3], axis: usize) {
    let [nx, ny, nz] = dims;
    let m = nx * ny * nz;
    for c in 0..channels {
        let vol = &mut data[c * m..(c + 1) * m];
        for i in 0..nx {
            for j in 0..ny {
                for k in 0..nz {
                    let (a, b) = match axis {
                        0 if i < nx / 2 => {
                            ((i * ny + j) * nz + k, ((nx - 1 - i) * ny + j) * nz + k)
                        }
                        1 if j < ny / 2 => ((i * ny + j) * nz + k, (i * ny + ny - 1 - j) * nz + k),
                        2 if k < nz / 2 => ((i * ny + j) * nz + k, (i * ny + j) * nz + nz - 1 - k),
                        _ => continue,
                    };
                    vol.swap(a, b);
                }
            }
        }
    }
}

/// The batches of one epoch, prepared on background threads (reading the cache, cropping,
/// augmenting) and delivered in order through a bounded channel.
pub fn epoch_batches(
    train: Vec<PathBuf>,
    config: TrainConfig,
    outputs: Vec<Region>,
    epoch: usize,
) -> mpsc::Receiver<Result<Batch, CacheError>> {
    let (tx, rx) = mpsc::sync_channel(config.prefetch.max(1));
    std::thread::spawn(move || {
        let per_epoch = if config.samples_per_epoch > 0 {
            config.samples_per_epoch
        } else {
            train.len()
        };
        // The order: whole permutations of the training cases, as many as needed.
        let mut order = Vec::with_capacity(per_epoch);
        let mut round = 0u64;
        while order.len() < per_epoch {
            let perm = shuffled(
                train.len(),
                mix(&[config.seed, epoch as u64, round, 0x0DE7]),
            );
            order.extend(perm.into_iter().take(per_epoch - order.len()));
            round += 1;
        }
        for (b, chunk) in order.chunks(config.batch_size).enumerate() {
            let mut batch = Batch {
                n: 0,
                input: Vec::new(),
                target: Vec::new(),
            };
            for (s, &i) in chunk.iter().enumerate() {
                let case = match read_cached(&train[i]) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let sample_index = (b * config.batch_size + s) as u64;
                let mut rng = Rng::new(mix(&[config.seed, epoch as u64, sample_index, 0x5A]));
                let (x, y) = sample(&case, &config, &outputs, &mut rng);
                batch.input.extend(x);
                batch.target.extend(y);
                batch.n += 1;
            }
            if tx.send(Ok(batch)).is_err() {
                return; // the trainer stopped
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_is_seeded_and_disjoint() {
        let ids: Vec<String> = (0..50).map(|i| format!("c{i:02}")).collect();
        let a = split(&ids, 0.2, 3);
        assert_eq!(a.val.len(), 10);
        assert_eq!(a.train.len(), 40);
        assert!(a.val.iter().all(|v| !a.train.contains(v)));
        let mut rev = ids.clone();
        rev.reverse();
        assert_eq!(split(&rev, 0.2, 3), a);
        assert_ne!(split(&ids, 0.2, 4), a);
    }

    #[test]
    fn flips_are_involutions() {
        let dims = [3, 4, 5];
        let v: Vec<f32> = (0..120).map(|i| i as f32).collect();
        for axis in 0..3 {
            let mut w = v.clone();
            flip_axis(&mut w, 2, [3, 4, 5].map(|d| d), axis);
            assert_ne!(w, v);
            flip_axis(&mut w, 2, dims, axis);
            assert_eq!(w, v);
        }
    }
}
