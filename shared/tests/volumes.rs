//! Cases, discovery, labels ↔ regions, preprocessing and phantoms, on real files:
//! `../shared/reference/brats_case` and `normalize`, and phantoms written to disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::reference;
use nvnet::data::case::{self, Case, CaseFiles, Input, Layout, Role};
use nvnet::data::labels::{self, RegionCounts};
use nvnet::data::preprocess::{Crop, normalize_nonzero};
use nvnet::data::synth;
use nvnet::io::nifti::{self, OutputData};
use nvnet::{LabelConvention, Modality, Region};

fn brats_case() -> PathBuf {
    reference("brats_case/BraTS-Synth-0001")
}

fn expected() -> serde_json::Value {
    let path = brats_case().join("expected.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn the_reference_case_is_discovered_loaded_and_its_regions_counted() {
    let files = case::discover_case(&brats_case()).unwrap();
    assert_eq!(files.id, "BraTS-Synth-0001");
    assert_eq!(files.layout, Layout::Brats2018);
    assert_eq!(files.modalities.len(), 4);
    assert!(files.seg.is_some());
    let case = Case::load(&files).unwrap();
    let exp = expected();
    assert_eq!(
        case.dims().to_vec(),
        serde_json::from_value::<Vec<usize>>(exp["shape"].clone()).unwrap()
    );
    assert_eq!(case.labels, LabelConvention::Brats2018);
    let map = case.seg_labels().unwrap();
    let counts: BTreeMap<String, usize> = labels::label_counts(&map)
        .into_iter()
        .map(|(l, n)| (l.to_string(), n))
        .collect();
    let want: BTreeMap<String, usize> =
        serde_json::from_value(exp["label_counts"].clone()).unwrap();
    assert_eq!(counts, want);
    let regions = RegionCounts::of(&map, case.labels);
    let r = &exp["region_voxels"];
    assert_eq!(regions.WT as u64, r["WT"].as_u64().unwrap());
    assert_eq!(regions.TC as u64, r["TC"].as_u64().unwrap());
    assert_eq!(regions.ET as u64, r["ET"].as_u64().unwrap());
    // Channels come in the requested order, in network order (k fastest), scaled.
    let ch = case.channels(&[Modality::Flair, Modality::T1]);
    let [nx, ny, nz] = case.dims();
    let n = nx * ny * nz;
    let net = |i: usize, j: usize, k: usize| (i * ny + j) * nz + k;
    // nibabel's values at the probe voxels (expected.json): the float64 FLAIR to 1e-4 (it
    // becomes float32), the scaled int16 T1 exactly.
    let probes = |m: &str| -> Vec<([usize; 3], f64)> {
        serde_json::from_value(exp["modalities"][m]["values"].clone()).unwrap()
    };
    for ([i, j, k], want) in probes("flair") {
        let got = ch[net(i, j, k)] as f64;
        assert!(
            (got - want).abs() < 1e-4,
            "flair at ({i}, {j}, {k}): {got} vs {want}"
        );
    }
    for ([i, j, k], want) in probes("t1") {
        assert_eq!(ch[n + net(i, j, k)] as f64, want, "t1 at ({i}, {j}, {k})");
    }
}

#[test]
fn normalize_matches_monai_to_1e5() {
    let raw = nvnet::io::npy::read(reference("normalize/raw.npy")).unwrap();
    let want = nvnet::io::npy::read(reference("normalize/normalized.npy")).unwrap();
    assert_eq!(raw.shape, vec![4, 40, 44, 36]);
    let mut v = raw.to_f32();
    normalize_nonzero(&mut v, 4);
    let diff = v
        .iter()
        .zip(want.to_f32())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff <= 1e-5, "max abs diff {diff}");
}

#[test]
fn crop_to_the_brain_box_and_paste_back_is_exact_on_a_real_case() {
    let case = Case::load(&case::discover_case(&brats_case()).unwrap()).unwrap();
    let dims = case.dims();
    let mut ch = case.channels(&Modality::DEFAULT_ORDER);
    // t1 has scl_inter 0.5 (background 0.5): the box is the whole grid there; zero the
    // background as a skull-stripped scan has it to see a real crop.
    let n: usize = dims.iter().product();
    for v in &mut ch[..n] {
        if *v == 0.5 {
            *v = 0.0;
        }
    }
    let crop = Crop::brain_box(&ch, 4, dims, 8).unwrap();
    assert!(crop.size.iter().all(|s| s % 8 == 0), "{crop:?}");
    assert!(
        crop.voxels() < n,
        "{crop:?} should be smaller than {dims:?}"
    );
    let boxed = crop.crop(&ch, 4);
    assert_eq!(crop.paste(&boxed, 4, 0.0), ch);
    // Labels too (any Copy type), and outside the box the fill value.
    let map = nvnet::data::volume::to_network_order(dims, &case.seg_labels().unwrap());
    let back = crop.paste(&crop.crop(&map, 1), 1, 0u8);
    assert_eq!(back, map);
}

/// Copy the reference case into a temp folder, optionally renamed to the 2023 layout.
fn copy_case(to: &Path, layout: Layout) -> PathBuf {
    let folder = to.join("BraTS-Synth-0001");
    std::fs::create_dir_all(&folder).unwrap();
    for (m, n23) in [
        ("t1", "t1n"),
        ("t1ce", "t1c"),
        ("t2", "t2w"),
        ("flair", "t2f"),
        ("seg", "seg"),
    ] {
        let from = brats_case().join(format!("BraTS-Synth-0001_{m}.nii.gz"));
        let name = match layout {
            Layout::Brats2023 => format!("BraTS-Synth-0001-{n23}.nii.gz"),
            _ => format!("BraTS-Synth-0001_{m}.nii.gz"),
        };
        std::fs::copy(from, folder.join(name)).unwrap();
    }
    folder
}

#[test]
fn the_2023_layout_and_a_dataset_root_are_discovered() {
    let dir = tempfile::tempdir().unwrap();
    let folder = copy_case(dir.path(), Layout::Brats2023);
    let files = case::discover_case(&folder).unwrap();
    assert_eq!(files.layout, Layout::Brats2023);
    assert_eq!(files.id, "BraTS-Synth-0001");
    // The labels (ET = 4) win over the layout's convention.
    assert_eq!(
        Case::load(&files).unwrap().labels,
        LabelConvention::Brats2018
    );
    std::fs::create_dir(dir.path().join("not-a-case")).unwrap();
    std::fs::create_dir(dir.path().join(".nvnet-cache")).unwrap(); // hidden: ignored
    match case::discover(dir.path()).unwrap() {
        Input::Dataset { cases, problems } => {
            assert_eq!(cases.len(), 1);
            assert_eq!(problems.len(), 1);
            assert!(problems[0].to_string().contains("not-a-case"));
        }
        other => panic!("expected a dataset, got {other:?}"),
    }
    assert!(matches!(case::discover(&folder).unwrap(), Input::Case(_)));
}

#[test]
fn a_missing_modality_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let folder = copy_case(dir.path(), Layout::Brats2023);
    std::fs::remove_file(folder.join("BraTS-Synth-0001-t2f.nii.gz")).unwrap();
    let err = case::discover_case(&folder).unwrap_err().to_string();
    assert!(err.contains("missing modality: flair (-t2f)"), "{err}");
    assert!(err.contains("BraTS-Synth-0001"), "{err}");
}

#[test]
fn modalities_on_different_grids_are_refused_naming_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let folder = copy_case(dir.path(), Layout::Brats2018);
    let t2 = folder.join("BraTS-Synth-0001_t2.nii.gz");
    let img = nifti::read_path(&t2).unwrap();
    let values: Vec<i16> = (0..img.voxels.len()).map(|i| img.value(i) as i16).collect();

    // An affine shifted by 0.5 mm.
    let mut g = img.geometry.clone();
    g.srow[0][3] += 0.5;
    g.affine[0][3] += 0.5;
    nifti::write_on_grid(&t2, &g, OutputData::Int16(&values)).unwrap();
    let err = Case::load(&case::discover_case(&folder).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("BraTS-Synth-0001_t2.nii.gz")
            && err.contains("BraTS-Synth-0001_t1.nii.gz")
            && err.contains("affine")
            && err.contains("5.000e-1"),
        "{err}"
    );

    // Other dims.
    let mut g = img.geometry.clone();
    g.dims = [48, 56, 20];
    nifti::write_on_grid(&t2, &g, OutputData::Int16(&values[..48 * 56 * 20])).unwrap();
    let err = Case::load(&case::discover_case(&folder).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("BraTS-Synth-0001_t2.nii.gz is [48, 56, 20]") && err.contains("[48, 56, 40]"),
        "{err}"
    );
}

/// A slab too thin for the network (it halves each axis three times) is refused when the case
/// is checked, not when its brain box, padded eightfold, is allocated.
#[test]
fn a_slab_thinner_than_eight_voxels_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let folder = copy_case(dir.path(), Layout::Brats2018);
    std::fs::remove_file(folder.join("BraTS-Synth-0001_seg.nii.gz")).unwrap();
    for m in ["t1", "t1ce", "t2", "flair"] {
        let path = folder.join(format!("BraTS-Synth-0001_{m}.nii.gz"));
        let img = nifti::read_path(&path).unwrap();
        let mut g = img.geometry.clone();
        g.dims = [48, 56, 3];
        let values: Vec<i16> = (0..48 * 56 * 3).map(|i| img.value(i) as i16).collect();
        nifti::write_on_grid(&path, &g, OutputData::Int16(&values)).unwrap();
    }
    let err = Case::load(&case::discover_case(&folder).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("BraTS-Synth-0001_t1.nii.gz is [48, 56, 3]") && err.contains("at least 8"),
        "{err}"
    );
}

#[test]
fn a_segmentation_that_is_not_a_label_map_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let folder = copy_case(dir.path(), Layout::Brats2018);
    let seg = folder.join("BraTS-Synth-0001_seg.nii.gz");
    let img = nifti::read_path(&seg).unwrap();
    let mut labels: Vec<u8> = (0..img.voxels.len()).map(|i| img.value(i) as u8).collect();
    labels[7] = 3; // 3 and 4 together: neither convention
    nifti::write_on_grid(&seg, &img.geometry, OutputData::Labels(&labels)).unwrap();
    let err = Case::load(&case::discover_case(&folder).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("_seg.nii.gz") && err.contains("both label 3 and label 4"),
        "{err}"
    );
}

#[test]
fn modality_detection_from_loose_file_names() {
    use Modality::*;
    let cases: &[(&str, Option<Role>)] = &[
        ("BraTS20_Training_001_t1ce.nii.gz", Some(Role::Image(T1ce))),
        ("BraTS20_Training_001_t1.nii.gz", Some(Role::Image(T1))),
        ("BraTS-GLI-00000-000-t2f.nii.gz", Some(Role::Image(Flair))),
        ("BraTS-GLI-00000-000-t1n.nii.gz", Some(Role::Image(T1))),
        ("BraTS-GLI-00000-000-seg.nii.gz", Some(Role::Segmentation)),
        ("patient7_FLAIR.nii", Some(Role::Image(Flair))),
        ("sub-01_T2w.nii.gz", Some(Role::Image(T2))),
        ("sub-01_T1w.nii.gz", Some(Role::Image(T1))),
        ("T1_Gd.nii.gz", Some(Role::Image(T1ce))),
        ("t1-ce.nii", Some(Role::Image(T1ce))),
        ("T1post.nii.gz", Some(Role::Image(T1ce))),
        ("t2_flair_axial.nii.gz", Some(Role::Image(Flair))),
        ("tumor_labels.nii.gz", Some(Role::Segmentation)),
        ("scan.nii.gz", None),
    ];
    for (name, want) in cases {
        assert_eq!(case::detect_role(name), *want, "{name}");
    }
    // Loose files: the id is their common start.
    let files: Vec<PathBuf> = ["p7_t1.nii", "p7_t1ce.nii", "p7_t2.nii", "p7_flair.nii"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let c = CaseFiles::from_loose(&files, &BTreeMap::new()).unwrap();
    assert_eq!(c.id, "p7");
    assert_eq!(c.modalities[&Flair], PathBuf::from("p7_flair.nii"));
    let err = CaseFiles::from_loose(&files[..3], &BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing modality: flair"), "{err}");
    let err = CaseFiles::from_loose(&[PathBuf::from("scan.nii.gz")], &BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("scan.nii.gz") && err.contains("does not say"),
        "{err}"
    );
}

#[test]
fn phantoms_are_deterministic_realistic_and_load_as_cases() {
    let shape = [64, 64, 48];
    let a = synth::generate(7, 3, shape, LabelConvention::Brats2018);
    let b = synth::generate(7, 3, shape, LabelConvention::Brats2018);
    assert_eq!(a.images, b.images);
    assert_eq!(a.seg, b.seg);
    let c = synth::generate(8, 3, shape, LabelConvention::Brats2018);
    assert_ne!(a.images, c.images);

    // Over a set of cases: every kind appears, every case has a tumour, and each tissue has its
    // contrast.
    let mut kinds = std::collections::HashSet::new();
    let (mut flair_edema, mut flair_wm) = (Vec::new(), Vec::new());
    let (mut t1ce_et, mut t1ce_wm) = (Vec::new(), Vec::new());
    let (mut t2_ncr, mut t2_wm) = (Vec::new(), Vec::new());
    for index in 0..24 {
        let p = synth::generate(1, index, shape, LabelConvention::Brats2018);
        kinds.insert(format!("{:?}", p.kind));
        // Every case has a tumour, as every BraTS case does.
        assert!(p.seg.iter().any(|&l| l != 0), "case {index} has no tumour");
        let mean = |m: usize, label: u8| {
            let (s, n) = p
                .seg
                .iter()
                .zip(&p.images[m].1)
                .filter(|(l, v)| **l == label && **v > 0)
                .fold((0f64, 0usize), |(s, n), (_, v)| (s + *v as f64, n + 1));
            (n > 50).then(|| s / n as f64)
        };
        // Healthy tissue = background label inside the brain.
        if let (Some(e), Some(w)) = (mean(3, 2), mean(3, 0)) {
            flair_edema.push(e / w);
            flair_wm.push(1.0);
        }
        if let (Some(e), Some(w)) = (mean(1, 4), mean(1, 0)) {
            t1ce_et.push(e / w);
            t1ce_wm.push(1.0);
        }
        if let (Some(e), Some(w)) = (mean(2, 1), mean(2, 0)) {
            t2_ncr.push(e / w);
            t2_wm.push(1.0);
        }
        // Background is zero in every modality exactly where the label map is outside the brain.
        for (_, img) in &p.images {
            assert!(p.seg.iter().zip(img).all(|(l, v)| *l == 0 || *v > 0));
        }
    }
    for k in ["Typical", "Solid", "NonEnhancing"] {
        assert!(kinds.contains(k), "no {k} tumour in 24 cases: {kinds:?}");
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    assert!(
        median(&mut flair_edema) > 1.3,
        "edema bright on FLAIR: {flair_edema:?}"
    );
    assert!(median(&mut t1ce_et) > 1.3, "ET bright on T1ce: {t1ce_et:?}");
    // Healthy tissue includes CSF, the brightest on T2: necrosis is only somewhat brighter.
    assert!(
        median(&mut t2_ncr) > 1.15,
        "necrosis bright on T2: {t2_ncr:?}"
    );
    let _ = (flair_wm, t1ce_wm, t2_wm);

    // Written in both layouts, discovered, loaded, with the right label convention.
    let dir = tempfile::tempdir().unwrap();
    for (layout, conv) in [
        (Layout::Brats2018, LabelConvention::Brats2018),
        (Layout::Brats2023, LabelConvention::Brats2023),
    ] {
        let p = (0..)
            .map(|i| synth::generate(7, i, shape, conv))
            .find(|p| p.kind == synth::TumourKind::Typical)
            .unwrap();
        let root = dir.path().join(layout.to_string());
        let folder = synth::write_case(&p, &root, layout).unwrap();
        let case = Case::load(&case::discover_case(&folder).unwrap()).unwrap();
        assert_eq!(case.layout, layout);
        assert_eq!(case.dims(), shape);
        assert_eq!(case.seg_labels().unwrap(), p.seg);
        assert_eq!(case.labels, conv, "{layout}");
        let counts = RegionCounts::of(&p.seg, conv);
        assert!(
            counts.WT > counts.TC && counts.TC >= counts.ET,
            "{counts:?}"
        );
        let t1 = case.image(Modality::T1);
        assert_eq!(t1.dtype.name(), "int16");
        let want = [240.0 / 64.0, 240.0 / 64.0, 155.0 / 48.0];
        let spacing = t1.geometry.spacing();
        assert!(
            (0..3).all(|a| (spacing[a] - want[a]).abs() < 1e-6),
            "{spacing:?}"
        );
        assert_eq!(t1.geometry, p.geometry);
        assert!(labels::in_region(conv.et_label(), Region::ET, conv));
    }
}
