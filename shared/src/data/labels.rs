//! BraTS label maps ↔ nested tumour regions (docs/DESIGN.md §7–8).
//!
//! Labels: 0 background, 1 necrosis / non-enhancing core, 2 edema, ET = 4 (2018–2021) or 3
//! (2023+). Regions: WT = {1, 2, ET}, TC = {1, ET}, ET = {ET}.

use crate::data::modality::{LabelConvention, Region};

/// Whether a voxel with `label` belongs to `region`.
pub fn in_region(label: u8, region: Region, labels: LabelConvention) -> bool {
    let et = labels.et_label();
    match region {
        Region::WT => label == 1 || label == 2 || label == et,
        Region::TC => label == 1 || label == et,
        Region::ET => label == et,
    }
}

/// The mask of one region.
pub fn region_mask(map: &[u8], region: Region, labels: LabelConvention) -> Vec<bool> {
    map.iter().map(|&l| in_region(l, region, labels)).collect()
}

/// Voxel counts of WT, TC and ET.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[allow(non_snake_case)]
pub struct RegionCounts {
    pub WT: usize,
    pub TC: usize,
    pub ET: usize,
}

impl RegionCounts {
    pub fn of(map: &[u8], labels: LabelConvention) -> Self {
        let count = |r| map.iter().filter(|&&l| in_region(l, r, labels)).count();
        RegionCounts {
            WT: count(Region::WT),
            TC: count(Region::TC),
            ET: count(Region::ET),
        }
    }

    pub fn get(&self, r: Region) -> usize {
        match r {
            Region::WT => self.WT,
            Region::TC => self.TC,
            Region::ET => self.ET,
        }
    }

    /// The regions' volumes in millilitres, [WT, TC, ET], on voxels of `spacing` mm.
    pub fn millilitres(&self, spacing: [f64; 3]) -> [f64; 3] {
        let ml = spacing.iter().product::<f64>() / 1000.0;
        [self.WT, self.TC, self.ET].map(|n| n as f64 * ml)
    }
}

/// Training targets: one 0/1 channel per output region, in `outputs` order, each of the length
/// of `map` (any voxel order; the order is kept).
pub fn region_targets(map: &[u8], outputs: &[Region], labels: LabelConvention) -> Vec<f32> {
    let mut out = Vec::with_capacity(outputs.len() * map.len());
    for &r in outputs {
        out.extend(map.iter().map(|&l| in_region(l, r, labels) as u8 as f32));
    }
    out
}

/// Probabilities (one channel per output region, in `outputs` order, each `n` voxels) → labels:
/// ET > t → ET label; else TC > t → 1; else WT > t → 2; else 0 (docs/DESIGN.md §7).
pub fn label_map(
    probabilities: &[f32],
    outputs: &[Region],
    labels: LabelConvention,
    threshold: f32,
) -> Vec<u8> {
    let n = probabilities.len() / outputs.len();
    let channel = |r: Region| {
        let c = outputs
            .iter()
            .position(|&x| x == r)
            .expect("outputs hold TC, WT and ET (checked by the manifest)");
        &probabilities[c * n..(c + 1) * n]
    };
    let (tc, wt, et) = (
        channel(Region::TC),
        channel(Region::WT),
        channel(Region::ET),
    );
    (0..n)
        .map(|v| {
            if et[v] > threshold {
                labels.et_label()
            } else if tc[v] > threshold {
                1
            } else if wt[v] > threshold {
                2
            } else {
                0
            }
        })
        .collect()
}

/// The small-ET rule: when fewer than `min_voxels` voxels are ET, relabel them as 1 (necrosis /
/// non-enhancing core), as nnU-Net and most BraTS winners do. Returns how many were relabelled.
pub fn suppress_small_et(map: &mut [u8], labels: LabelConvention, min_voxels: usize) -> usize {
    let et = labels.et_label();
    let count = map.iter().filter(|&&l| l == et).count();
    if count == 0 || count >= min_voxels {
        return 0;
    }
    for l in map.iter_mut().filter(|l| **l == et) {
        *l = 1;
    }
    count
}

/// Voxel counts per label value present.
pub fn label_counts(map: &[u8]) -> std::collections::BTreeMap<u8, usize> {
    let mut counts = [0usize; 256];
    for &l in map {
        counts[l as usize] += 1;
    }
    (0..=255u8)
        .filter(|&l| counts[l as usize] > 0)
        .map(|l| (l, counts[l as usize]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Region::*;

    #[test]
    fn regions_of_both_conventions() {
        let map = [0u8, 1, 2, 4, 3];
        let c18 = RegionCounts::of(&map, LabelConvention::Brats2018);
        assert_eq!((c18.WT, c18.TC, c18.ET), (3, 2, 1));
        let c23 = RegionCounts::of(&map, LabelConvention::Brats2023);
        assert_eq!((c23.WT, c23.TC, c23.ET), (3, 2, 1));
        assert!(in_region(4, ET, LabelConvention::Brats2018));
        assert!(!in_region(4, WT, LabelConvention::Brats2023));
    }

    #[test]
    fn label_map_is_the_inverse_of_region_targets() {
        for conv in [LabelConvention::Brats2018, LabelConvention::Brats2023] {
            let et = conv.et_label();
            let map = vec![0u8, 1, 2, et, 2, 0, et, 1];
            let outputs = [TC, WT, ET];
            let targets = region_targets(&map, &outputs, conv);
            assert_eq!(label_map(&targets, &outputs, conv, 0.5), map);
            // Another channel order gives the same labels.
            let outputs = [ET, WT, TC];
            let targets = region_targets(&map, &outputs, conv);
            assert_eq!(label_map(&targets, &outputs, conv, 0.5), map);
        }
    }

    #[test]
    fn label_map_priority_and_threshold() {
        // voxel: ET wins over TC and WT; exactly 0.5 is not above the threshold.
        let probs = [
            0.9, 0.5, 0.2, 0.6, // TC
            0.9, 0.9, 0.9, 0.5, // WT
            0.6, 0.1, 0.5, 0.0, // ET
        ];
        let map = label_map(&probs, &[TC, WT, ET], LabelConvention::Brats2018, 0.5);
        assert_eq!(map, vec![4, 2, 2, 1]);
    }

    #[test]
    fn small_et_is_relabelled() {
        let mut map = vec![4u8, 4, 2, 1, 0];
        assert_eq!(
            suppress_small_et(&mut map, LabelConvention::Brats2018, 3),
            2
        );
        assert_eq!(map, vec![1, 1, 2, 1, 0]);
        let mut map = vec![3u8, 3, 3, 2];
        assert_eq!(
            suppress_small_et(&mut map, LabelConvention::Brats2023, 3),
            0
        );
        assert_eq!(map, vec![3, 3, 3, 2]);
    }
}
