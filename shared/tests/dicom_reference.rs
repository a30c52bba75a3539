//! DICOM exams read against dcm2niix, the field's reference converter (testdata/dicom/make.py
//! writes the exams with pydicom, a writer independent of dicom-rs, and keeps dcm2niix's
//! NIfTI of each series): every voxel's value at every voxel's world position.

use crate::common::testdata;
use nvnet::Modality;
use nvnet::data::exam::{Exam, Kind};
use nvnet::io::dicom::{Files, Folder};
use nvnet::io::nifti::{self, Image};
use nvnet::prepare::{Steps, Volume, When};

fn exam(folder: &str) -> (Exam, Folder) {
    let path = testdata(folder);
    let files = Folder::walk(&path).unwrap();
    let exam = Exam::scan(&files, &path.display().to_string()).unwrap();
    (exam, files)
}

/// Every voxel of `reference` has a voxel of `image` at the same world position (to a
/// thousandth of a voxel) with the same value.
fn same_in_world(image: &Image, reference: &Image) {
    let [nx, ny, nz] = reference.dims();
    assert_eq!(
        image.dims().iter().product::<usize>(),
        nx * ny * nz,
        "{}: voxel count",
        image.source
    );
    let ours_grid = Volume::new(vec![0.0; image.voxels.len()], image.geometry.clone());
    let a = &reference.geometry.affine;
    let [mx, my, mz] = image.dims();
    let mut worst_position: f64 = 0.0;
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let ijk = [i as f64, j as f64, k as f64, 1.0];
                let world: Vec<f64> = (0..3)
                    .map(|r| (0..4).map(|c| a[r][c] * ijk[c]).sum())
                    .collect();
                let ours = ours_grid.voxel([world[0], world[1], world[2]]);
                let idx = ours.iter().map(|x| x.round()).collect::<Vec<_>>();
                for d in 0..3 {
                    worst_position = worst_position.max((ours[d] - idx[d]).abs());
                }
                assert!(
                    idx.iter()
                        .zip([mx, my, mz])
                        .all(|(&x, n)| x >= 0.0 && (x as usize) < n),
                    "{}: voxel ({i},{j},{k}) of dcm2niix's falls outside nvnet's grid at {ours:?}",
                    image.source
                );
                let v = image.at(idx[0] as usize, idx[1] as usize, idx[2] as usize);
                let expected = reference.at(i, j, k);
                assert!(
                    (v - expected).abs() <= 1e-4 * expected.abs().max(1.0),
                    "{}: at ({i},{j},{k}) nvnet reads {v}, dcm2niix {expected}",
                    image.source
                );
            }
        }
    }
    assert!(
        worst_position < 1e-3,
        "{}: positions differ from dcm2niix's by up to {worst_position} voxel",
        image.source
    );
}

#[test]
fn every_series_matches_dcm2niix_voxel_by_voxel_in_world_space() {
    let (exam, files) = exam("dicom/exam");
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(testdata("dicom/expected/expected.json")).unwrap(),
    )
    .unwrap();
    for s in expected["series"].as_array().unwrap() {
        let number = s["number"].as_i64().unwrap();
        let index = exam
            .scan
            .series
            .iter()
            .position(|x| x.number() == Some(number))
            .unwrap();
        let modality: Modality = s["modality"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            exam.kinds[index],
            Kind::Modality(modality),
            "series {number}"
        );
        let image = exam.scan.series[index].load(&files).unwrap();
        let reference = nifti::read_path(&testdata(&format!(
            "dicom/expected/{}",
            s["file"].as_str().unwrap()
        )))
        .unwrap();
        same_in_world(&image, &reference);
    }
}

#[test]
fn an_export_is_read_as_its_series_and_the_others_are_named() {
    let (exam, _) = exam("dicom/exam");
    let listing: Vec<(Option<i64>, &Kind)> = exam
        .scan
        .series
        .iter()
        .map(|s| s.number())
        .zip(&exam.kinds)
        .collect();
    assert_eq!(listing.len(), 7, "{}", exam.listing());
    assert!(matches!(listing[0], (Some(1), Kind::Other(w)) if w.contains("localizer")));
    assert!(matches!(listing[5], (Some(6), Kind::Other(w)) if w.contains("DWI")));
    assert!(matches!(listing[6], (Some(7), Kind::Other(w)) if w.contains("DERIVED")));
    assert_eq!(exam.id, "PHANTOM-042");
    assert!(
        exam.scan.notices.iter().any(|n| n.contains("README.txt")),
        "{:?}",
        exam.scan.notices
    );
    // By the names: T1 2, T1ce 3, T2 4, FLAIR 5.
    let chosen = exam.choose(&[]).unwrap();
    let numbers: Vec<(Modality, Option<i64>)> = chosen
        .iter()
        .map(|(m, i)| (*m, exam.scan.series[*i].number()))
        .collect();
    assert_eq!(
        numbers,
        [
            (Modality::T1, Some(2)),
            (Modality::T1ce, Some(3)),
            (Modality::T2, Some(4)),
            (Modality::Flair, Some(5))
        ]
    );
    // Given: the user's choice wins, by number or by UID.
    let uid = exam.scan.series[1].uid().to_string();
    let chosen = exam
        .choose(&[(Modality::T1, "3".into()), (Modality::T1ce, uid)])
        .unwrap();
    assert_eq!(exam.scan.series[chosen[0].1].number(), Some(3));
    assert_eq!(exam.scan.series[chosen[1].1].number(), Some(2));
    let err = exam.choose(&[(Modality::T2, "42".into())]).unwrap_err();
    assert!(err.to_string().contains("no series '42'"), "{err}");
}

/// The export's series are each on a grid of their own, so they are registered to the T1ce
/// before they make a case; but each holds a field of view of about 2 cm (a smooth pattern, no
/// head), too little to place one series on another: the series that registration cannot lay
/// over most of the T1ce's foreground is refused by name, not resampled into a wrong case.
#[test]
fn series_too_small_to_register_are_refused_by_name() {
    let (exam, files) = exam("dicom/exam");
    let err = exam
        .load_case(&files, &[], Steps::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("series ") && err.contains("once registered") && err.contains("field of view"),
        "{err}"
    );
    // A series larger than the reader's cap (the page's is one tab's memory) is refused by name
    // before its pixels are read.
    let err = exam
        .load_case_within(&files, &[], Steps::default(), 1_000, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("series 2 'T1 MPRAGE SAG'") && err.contains("7680 voxels"),
        "{err}"
    );
    // Not registered, the series stay on their grids: refused as such.
    let err = exam
        .load_case(&files, &[], Steps::when(When::Never))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not co-registered") || err.contains("one grid"),
        "{err}"
    );
}

#[test]
fn a_single_image_is_a_series_of_one_slice() {
    let (exam, files) = exam("dicom/single");
    let image = exam.scan.series[0].load(&files).unwrap();
    assert_eq!(image.dims(), [16, 12, 1]);
    assert_eq!(image.geometry.spacing(), [1.0, 1.0, 2.0]);
}

#[test]
fn each_bad_exam_is_refused_naming_the_series_or_file() {
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(testdata("dicom/bad/expected.json")).unwrap(),
    )
    .unwrap();
    let cases = expected.as_object().unwrap();
    assert_eq!(cases.len(), 9);
    for (name, words) in cases {
        let path = testdata(&format!("dicom/bad/{name}"));
        let files = Folder::walk(&path).unwrap();
        assert!(files.len() > 0);
        let result = Exam::scan(&files, &path.display().to_string())
            .and_then(|exam| exam.load_case(&files, &[], Steps::default()).map(|_| ()));
        let message = match result {
            Err(e) => e.to_string(),
            Ok(()) => panic!("{name}: accepted"),
        };
        for w in words.as_array().unwrap() {
            let w = w.as_str().unwrap();
            assert!(message.contains(w), "{name}: '{w}' not in: {message}");
        }
    }
}

/// An enhanced multi-frame image (every slice a frame of one file, stored out of order, each
/// with its own rescale) reads as dcm2niix reads it, voxel by voxel in world space, and is
/// taken for the T1ce its name says.
#[test]
fn an_enhanced_multi_frame_image_matches_dcm2niix() {
    let (exam, files) = exam("dicom/enhanced");
    assert_eq!(files.len(), 1);
    assert_eq!(exam.scan.series.len(), 1, "{}", exam.listing());
    let series = &exam.scan.series[0];
    assert_eq!(series.slices.len(), 12);
    assert_eq!(exam.kinds[0], Kind::Modality(Modality::T1ce));
    let image = series.load(&files).unwrap();
    assert_eq!(image.dims(), [18, 16, 12]);
    let reference = nifti::read_path(&testdata("dicom/expected/enhanced.nii")).unwrap();
    same_in_world(&image, &reference);
}

/// A dual-echo PD/T2 series (one SeriesInstanceUID, two images at each position) is separated
/// into its echoes as dcm2niix separates them: each echo equals dcm2niix's NIfTI of it, the late
/// echo is taken for the T2 and equals the single-echo exam's T2, the early one is named and
/// left out, and `_e1` names it to `--series`.
#[test]
fn a_multi_echo_series_is_separated_into_its_echoes_as_dcm2niix_does() {
    let (exam, files) = exam("dicom/multiecho");
    let listing = exam.listing();
    let echoes: Vec<usize> = (0..exam.scan.series.len())
        .filter(|&i| exam.scan.series[i].number() == Some(4))
        .collect();
    assert_eq!(echoes.len(), 2, "{listing}");
    for (e, &i) in echoes.iter().enumerate() {
        let series = &exam.scan.series[i];
        assert_eq!(series.slices.len(), 8);
        assert_eq!(series.selector(), format!("4_e{}", e + 1));
        let image = series.load(&files).unwrap();
        let reference = nifti::read_path(&testdata(&format!(
            "dicom/expected/multiecho_e{}.nii",
            e + 1
        )))
        .unwrap();
        same_in_world(&image, &reference);
    }
    let [early, late] = [echoes[0], echoes[1]];
    assert!(
        exam.scan.series[late]
            .label()
            .contains("echo 2 of 2 (TE 95 ms)"),
        "{listing}"
    );
    assert!(
        matches!(&exam.kinds[early], Kind::Other(w) if w.contains("earlier echo")),
        "{listing}"
    );
    assert!(listing.contains("4_e1"), "{listing}");
    let chosen = exam.choose(&[]).unwrap();
    assert_eq!(chosen[2], (Modality::T2, late));
    let t2 = exam.scan.series[late].load(&files).unwrap();
    same_in_world(
        &t2,
        &nifti::read_path(&testdata("dicom/expected/4.nii")).unwrap(),
    );
    // Named: the early echo, by number or by UID with its suffix; the bare number names neither.
    let uid = exam.scan.series[early].uid().to_string();
    for selector in ["4_e1".to_string(), format!("{uid}_e1")] {
        let chosen = exam.choose(&[(Modality::T2, selector)]).unwrap();
        assert_eq!(chosen[2], (Modality::T2, early));
    }
    let err = exam.choose(&[(Modality::T2, "4".into())]).unwrap_err();
    assert!(err.to_string().contains("no series '4'"), "{err}");
}
