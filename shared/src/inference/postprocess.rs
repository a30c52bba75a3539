//! Label-map post-processing, nnU-Net style: each rule is kept only when it raises the mean Dice
//! on validation cases (`nvnet evaluate --choose-postprocessing`), and the chosen set travels in
//! the model's manifest so that `nvnet predict` and the web page apply the same.
//!
//! Rules: *remove islands* — drop whole-tumour connected components (26-connectivity, as MONAI's
//! `KeepLargestConnectedComponent`) that hold no tumour-core voxel, since a glioma's edema
//! surrounds its core; when no component holds core, keep the largest. *Small ET* (docs/DESIGN.md §7) —
//! relabel ET as 1 when there are fewer ET voxels than a threshold.

use crate::data::labels;
use crate::data::modality::{LabelConvention, Region};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Postprocessing {
    #[serde(default)]
    pub remove_islands: bool,
    #[serde(default)]
    pub min_et_voxels: Option<usize>,
}

/// What [`Postprocessing::apply`] changed, in voxels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub island_voxels: usize,
    pub et_relabelled: usize,
}

impl Postprocessing {
    pub const NONE: Postprocessing = Postprocessing {
        remove_islands: false,
        min_et_voxels: None,
    };

    /// `map` in file order (i fastest) on a grid of `dims` = [i, j, k].
    pub fn apply(&self, map: &mut [u8], dims: [usize; 3], labels: LabelConvention) -> Applied {
        let mut applied = Applied::default();
        if self.remove_islands {
            applied.island_voxels = remove_islands(map, dims, labels);
        }
        if let Some(min) = self.min_et_voxels {
            applied.et_relabelled = labels::suppress_small_et(map, labels, min);
        }
        applied
    }

    /// The `nvnet predict` / `nvnet export` flags that ask for this set.
    pub fn flags(&self) -> String {
        let mut out = Vec::new();
        if self.remove_islands {
            out.push("--remove-islands".to_string());
        }
        if let Some(n) = self.min_et_voxels {
            out.push(format!("--min-et-voxels {n}"));
        }
        if out.is_empty() {
            "none".into()
        } else {
            out.join(" ")
        }
    }
}

/// Connected components of `mask` (26-connectivity) on a grid of `dims` = [i, j, k] in file order:
/// a component index per voxel (`u32::MAX` outside the mask) and each component's voxel count.
pub fn components(mask: &[bool], dims: [usize; 3]) -> (Vec<u32>, Vec<usize>) {
    let [nx, ny, nz] = dims;
    assert_eq!(mask.len(), nx * ny * nz, "mask and grid differ");
    let mut id = vec![u32::MAX; mask.len()];
    let mut sizes = Vec::new();
    let mut stack = Vec::new();
    for seed in 0..mask.len() {
        if !mask[seed] || id[seed] != u32::MAX {
            continue;
        }
        let c = sizes.len() as u32;
        id[seed] = c;
        stack.push(seed);
        let mut size = 0;
        while let Some(v) = stack.pop() {
            size += 1;
            let (i, j, k) = (v % nx, (v / nx) % ny, v / (nx * ny));
            for dk in -1isize..=1 {
                let kk = k as isize + dk;
                if kk < 0 || kk >= nz as isize {
                    continue;
                }
                for dj in -1isize..=1 {
                    let jj = j as isize + dj;
                    if jj < 0 || jj >= ny as isize {
                        continue;
                    }
                    for di in -1isize..=1 {
                        let ii = i as isize + di;
                        if ii < 0 || ii >= nx as isize {
                            continue;
                        }
                        let w = ii as usize + nx * (jj as usize + ny * kk as usize);
                        if mask[w] && id[w] == u32::MAX {
                            id[w] = c;
                            stack.push(w);
                        }
                    }
                }
            }
        }
        sizes.push(size);
    }
    (id, sizes)
}

/// Set to 0 every whole-tumour component without a tumour-core voxel (when none has one, all but
/// the largest). Returns the number of voxels removed.
pub fn remove_islands(map: &mut [u8], dims: [usize; 3], labels: LabelConvention) -> usize {
    let wt = labels::region_mask(map, Region::WT, labels);
    let (id, sizes) = components(&wt, dims);
    if sizes.len() < 2 {
        return 0;
    }
    let mut keep = vec![false; sizes.len()];
    for (v, &l) in map.iter().enumerate() {
        if labels::in_region(l, Region::TC, labels) {
            keep[id[v] as usize] = true;
        }
    }
    if !keep.contains(&true) {
        let largest = (0..sizes.len()).max_by_key(|&c| (sizes[c], usize::MAX - c));
        keep[largest.expect("at least two components")] = true;
    }
    let mut removed = 0;
    for (v, l) in map.iter_mut().enumerate() {
        if id[v] != u32::MAX && !keep[id[v] as usize] {
            *l = 0;
            removed += 1;
        }
    }
    removed
}

/// The ET thresholds tried (nnU-Net searched 0–750 voxels).
pub const ET_THRESHOLDS: [usize; 8] = [25, 50, 100, 200, 300, 400, 500, 750];

/// One validation case: a label map predicted without post-processing and its ground truth, in
/// file order on a grid of `dims`.
pub struct ValidationCase {
    pub predicted: Vec<u8>,
    pub truth: Vec<u8>,
    pub dims: [usize; 3],
}

/// The mean Dice of WT, TC, ET over the cases with one post-processing set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub postprocessing: Postprocessing,
    /// WT, TC, ET.
    pub dice: [f64; 3],
}

impl Candidate {
    pub fn mean(&self) -> f64 {
        self.dice.iter().sum::<f64>() / 3.0
    }
}

/// Score every candidate on the validation cases and pick, as nnU-Net does, each rule only when
/// it raises the mean Dice: islands first (judged on the mean over the three regions), then the
/// ET threshold with the best ET Dice (the smallest on ties; none unless it helps). Returns all
/// candidates (no rule first) and the choice.
pub fn choose(
    cases: &[ValidationCase],
    labels: LabelConvention,
) -> (Vec<Candidate>, Postprocessing) {
    const REGIONS: [Region; 3] = [Region::WT, Region::TC, Region::ET];
    let mut sums = Vec::new();
    for islands in [false, true] {
        for min_et in std::iter::once(None).chain(ET_THRESHOLDS.map(Some)) {
            sums.push(Candidate {
                postprocessing: Postprocessing {
                    remove_islands: islands,
                    min_et_voxels: min_et,
                },
                dice: [0.0; 3],
            });
        }
    }
    for case in cases {
        let truth = REGIONS.map(|r| labels::region_mask(&case.truth, r, labels));
        // Islands once per case (the costly rule), then each candidate's ET rule through `apply`.
        let mut kept = case.predicted.clone();
        remove_islands(&mut kept, case.dims, labels);
        for c in sums.iter_mut() {
            let rules = c.postprocessing;
            let mut map = if rules.remove_islands {
                &kept
            } else {
                &case.predicted
            }
            .clone();
            let et_only = Postprocessing {
                remove_islands: false,
                ..rules
            };
            et_only.apply(&mut map, case.dims, labels);
            for (i, t) in truth.iter().enumerate() {
                let p = labels::region_mask(&map, REGIONS[i], labels);
                c.dice[i] += crate::metrics::dice(&p, t);
            }
        }
    }
    let n = cases.len().max(1) as f64;
    for c in sums.iter_mut() {
        c.dice = c.dice.map(|d| d / n);
    }
    let find = |p: Postprocessing| *sums.iter().find(|c| c.postprocessing == p).expect("tried");
    let mut chosen = Postprocessing::NONE;
    let with_islands = Postprocessing {
        remove_islands: true,
        min_et_voxels: None,
    };
    if find(with_islands).mean() > find(chosen).mean() {
        chosen = with_islands;
    }
    let islands = chosen.remove_islands;
    let mut best_et = find(chosen).dice[2];
    for t in ET_THRESHOLDS {
        let p = Postprocessing {
            remove_islands: islands,
            min_et_voxels: Some(t),
        };
        if find(p).dice[2] > best_et {
            best_et = find(p).dice[2];
            chosen = p;
        }
    }
    (sums, chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIMS: [usize; 3] = [12, 10, 8];

    fn at(i: usize, j: usize, k: usize) -> usize {
        i + DIMS[0] * (j + DIMS[1] * k)
    }

    #[test]
    fn diagonal_neighbours_are_one_component() {
        let mut mask = vec![false; DIMS.iter().product()];
        // A diagonal chain (26-connected, not 6-connected) and a separate voxel.
        for t in 0..4 {
            mask[at(t, t, t)] = true;
        }
        mask[at(11, 0, 7)] = true;
        let (id, sizes) = components(&mask, DIMS);
        assert_eq!(sizes, vec![4, 1]);
        assert_eq!(id[at(3, 3, 3)], id[at(0, 0, 0)]);
        assert_eq!(id[at(5, 5, 5)], u32::MAX);
    }

    #[test]
    fn islands_without_core_go_and_the_tumour_stays() {
        let conv = LabelConvention::Brats2018;
        let mut map = vec![0u8; DIMS.iter().product()];
        // The tumour: edema around a core with ET, touching the far border in i.
        for i in 0..5 {
            for j in 0..5 {
                map[at(i, j, 2)] = 2;
            }
        }
        map[at(2, 2, 2)] = 1;
        map[at(2, 3, 2)] = 4;
        // An edema island of 6 voxels far away, and one on the opposite corner.
        for k in 5..8 {
            map[at(10, 8, k)] = 2;
            map[at(11, 8, k)] = 2;
        }
        map[at(11, 9, 0)] = 2;
        let mut expected = map.clone();
        for k in 5..8 {
            expected[at(10, 8, k)] = 0;
            expected[at(11, 8, k)] = 0;
        }
        expected[at(11, 9, 0)] = 0;
        assert_eq!(remove_islands(&mut map, DIMS, conv), 7);
        assert_eq!(map, expected);
    }

    #[test]
    fn without_any_core_the_largest_component_stays() {
        let conv = LabelConvention::Brats2023;
        let mut map = vec![0u8; DIMS.iter().product()];
        for i in 0..3 {
            map[at(i, 0, 0)] = 2;
        }
        map[at(8, 8, 6)] = 2;
        assert_eq!(remove_islands(&mut map, DIMS, conv), 1);
        assert_eq!(labels::label_counts(&map).get(&2), Some(&3));
        // One component, or none: nothing to do.
        assert_eq!(remove_islands(&mut map, DIMS, conv), 0);
        let mut empty = vec![0u8; DIMS.iter().product()];
        assert_eq!(remove_islands(&mut empty, DIMS, conv), 0);
    }

    #[test]
    fn both_rules_in_order() {
        let conv = LabelConvention::Brats2018;
        let mut map = vec![0u8; DIMS.iter().product()];
        map[at(1, 1, 1)] = 4;
        map[at(2, 1, 1)] = 2;
        map[at(9, 9, 7)] = 2;
        let p = Postprocessing {
            remove_islands: true,
            min_et_voxels: Some(2),
        };
        let applied = p.apply(&mut map, DIMS, conv);
        assert_eq!(
            applied,
            Applied {
                island_voxels: 1,
                et_relabelled: 1
            }
        );
        assert_eq!(map[at(1, 1, 1)], 1);
        assert_eq!(p.flags(), "--remove-islands --min-et-voxels 2");
        assert_eq!(Postprocessing::NONE.flags(), "none");
    }

    #[test]
    fn choose_keeps_a_rule_only_when_it_helps() {
        let conv = LabelConvention::Brats2018;
        let n: usize = DIMS.iter().product();
        // Case 1: a tumour (core + edema) predicted right, plus an edema island.
        let mut truth1 = vec![0u8; n];
        truth1[at(1, 1, 1)] = 1;
        truth1[at(2, 1, 1)] = 2;
        let mut pred1 = truth1.clone();
        pred1[at(9, 9, 7)] = 2;
        // Case 2: no ET in truth, 3 ET voxels predicted inside the core.
        let mut truth2 = vec![0u8; n];
        for i in 0..4 {
            truth2[at(i, 5, 5)] = 1;
        }
        let mut pred2 = truth2.clone();
        for i in 0..3 {
            pred2[at(i, 5, 5)] = 4;
        }
        let cases = [
            ValidationCase {
                predicted: pred1,
                truth: truth1,
                dims: DIMS,
            },
            ValidationCase {
                predicted: pred2,
                truth: truth2,
                dims: DIMS,
            },
        ];
        let (all, chosen) = choose(&cases, conv);
        assert_eq!(all.len(), 2 * (1 + ET_THRESHOLDS.len()));
        assert_eq!(
            chosen,
            Postprocessing {
                remove_islands: true,
                min_et_voxels: Some(25)
            }
        );
        let best = all.iter().find(|c| c.postprocessing == chosen).unwrap();
        assert_eq!(best.dice, [1.0, 1.0, 1.0]);
        assert_eq!(all[0].postprocessing, Postprocessing::NONE);
        // Without the island WT is 4/5 in case 1; ET is empty in truth 1 and predicted nowhere there.
        assert!(
            (all[0].dice[0] - (0.8 + 1.0) / 2.0).abs() < 1e-12,
            "{:?}",
            all[0]
        );
        assert!((all[0].dice[2] - 0.5).abs() < 1e-12);
        // A true ET of 3 voxels would make the threshold hurt: then none is chosen.
        let mut cases = cases;
        cases[1].truth = cases[1].predicted.clone();
        let (_, chosen) = choose(&cases, conv);
        assert_eq!(chosen.min_et_voxels, None);
    }
}
