//! Hand-made bad files (`testdata/bad`, written by its `make_bad.py`): each is refused with a
//! message that names the file and the problem — never a panic, never a huge allocation.

use std::path::PathBuf;

use nvnet::io::nifti;

fn bad(name: &str) -> PathBuf {
    crate::common::testdata("bad").join(name)
}

/// (file, words its error must contain)
const REFUSED: &[(&str, &[&str])] = &[
    ("two_d.nii", &["2-D", "3-D volume"]),
    ("four_d_several_volumes.nii.gz", &["4-D", "2 volumes"]),
    ("dim0_zero.nii", &["dim[0] = 0", "outside 1..7"]),
    ("dim0_eight.nii", &["dim[0] = 8", "outside 1..7"]),
    ("dim_zero.nii", &["dim[2] = 0"]),
    ("dim_negative.nii", &["dim[1] = -4"]),
    ("complex.nii", &["complex datatype"]),
    ("rgb.nii", &["RGB datatype"]),
    ("unknown_datatype.nii", &["unknown datatype code 999"]),
    (
        "bitpix_contradicts_datatype.nii",
        &["bitpix 16 contradicts datatype float32"],
    ),
    (
        "vox_offset_inside_header.nii",
        &["vox_offset 100", "inside"],
    ),
    (
        "vox_offset_past_end.nii",
        &["vox_offset 10000000", "past the end"],
    ),
    ("pixdim_negative.nii", &["pixdim[2] = -2", "positive"]),
    ("pixdim_nan.nii", &["pixdim[1] = NaN"]),
    ("wrong_magic.nii", &["wrong magic", "Analyze 7.5"]),
    ("analyze75.img.nii", &["wrong magic", "Analyze 7.5"]),
    ("hdr_img_pair.nii", &["two-file NIfTI"]),
    (
        "wrong_header_size.nii",
        &["not a NIfTI file", "header size field is 123"],
    ),
    ("truncated_data.nii", &["truncated", "480 bytes", "240"]),
    ("truncated_header.nii", &["truncated header", "200 of 348"]),
    (
        "truncated_gzip.nii.gz",
        &["truncated or corrupt gzip stream"],
    ),
    (
        "truncated_gzip_data.nii.gz",
        &["truncated or corrupt gzip stream"],
    ),
    ("corrupt_gzip.nii.gz", &["truncated or corrupt gzip stream"]),
    (
        "claims_1e12_voxels.nii.gz",
        &["10000×10000×10000 voxels", "more than nvnet accepts"],
    ),
    (
        "claims_more_than_present.nii.gz",
        &["truncated", "536870912 bytes"],
    ),
    ("not_nifti.nii", &["not a NIfTI file"]),
    ("empty.nii", &["too short to be NIfTI", "0 bytes"]),
    ("nifti2_truncated.nii", &["truncated header", "300 of 540"]),
    (
        "vox_offset_huge.nii.gz",
        &["vox_offset 999999995904", "header extensions"],
    ),
    ("sform_nan.nii", &["sform", "NaN or Inf"]),
    ("qform_nan.nii", &["qform", "NaN or Inf"]),
    ("nifti2_volumes_overflow.nii", &["5-D image", "volumes"]),
    (
        "pixdim_huge.nii",
        &["pixdim[2] = 1", "not a voxel size in mm"],
    ),
    ("pixdim_tiny.nii", &["pixdim[1] = 1", "at least 1e-4"]),
];

#[test]
fn every_bad_file_is_refused_with_a_clear_message() {
    assert!(REFUSED.len() >= 28);
    for (name, words) in REFUSED {
        let path = bad(name);
        let err = match nifti::read_path(&path) {
            Ok(_) => panic!("{name} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(name),
            "{name}: the message does not name the file: {err}"
        );
        for w in *words {
            assert!(err.contains(w), "{name}: '{err}' lacks '{w}'");
        }
        // The same bytes through the in-memory reader (what the web page uses).
        let bytes = std::fs::read(&path).unwrap();
        let again = nifti::read_bytes(&bytes, name).unwrap_err();
        assert_eq!(
            again.to_string(),
            format!("{name}: {}", err.split_once(": ").unwrap().1)
        );
    }
}

#[test]
fn the_controls_are_accepted_in_every_byte_order_and_version() {
    for name in [
        "good_le.nii",
        "good_be.nii.gz",
        "good_nifti2.nii",
        "good_trailing_bytes.nii",
    ] {
        let image = nifti::read_path(&bad(name)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(image.dims(), [4, 5, 6], "{name}");
        assert_eq!(image.at(1, 0, 0), 1.0, "{name}");
        assert_eq!(image.at(3, 4, 5), (119 % 7) as f64, "{name}");
        assert!(image.warnings.is_empty(), "{name}: {:?}", image.warnings);
    }
    let le = nifti::read_path(&bad("good_le.nii")).unwrap();
    assert_eq!(le.geometry.affine[0], [-1.0, 0.0, 0.0, 10.0]);
}

#[test]
fn nan_voxels_and_zero_pixdim_are_accepted_with_a_warning() {
    let image = nifti::read_path(&bad("warn_nan_values.nii.gz")).unwrap();
    assert!(
        image
            .warnings
            .iter()
            .any(|w| w.contains("11 NaN/Inf") && w.contains("read as 0")),
        "{:?}",
        image.warnings
    );
    assert!(image.to_f32().iter().all(|v| v.is_finite()));
    let image = nifti::read_path(&bad("warn_zero_pixdim.nii")).unwrap();
    assert!(
        image
            .warnings
            .iter()
            .any(|w| w.contains("pixdim[1] is 0; read as 1 mm")),
        "{:?}",
        image.warnings
    );
    assert_eq!(image.geometry.spacing(), [1.0, 1.0, 1.0]);
}

/// Only regular files are read: a named pipe would block for ever, a device never ends.
#[cfg(unix)]
#[test]
fn pipes_devices_and_folders_are_refused_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("case_t1.nii.gz");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    for (path, what) in [
        (fifo.as_path(), "a named pipe"),
        (std::path::Path::new("/dev/zero"), "a device"),
        (dir.path(), "a folder"),
    ] {
        let e = nifti::read_path(path).unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains(what),
            "{e}"
        );
    }
}

/// Inputs the fuzzer found (`testdata/fuzz`, from `fuzz/`): each once broke an invariant.
#[test]
fn fuzzer_findings_stay_fixed() {
    let dir = crate::common::testdata("fuzz");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        seen += 1;
        // The fuzz target's invariants: accepted images are consistent and finite as f32.
        if let Ok(image) = nifti::read_bytes(&bytes, "finding") {
            let [x, y, z] = image.dims();
            assert_eq!(image.voxels.len(), x * y * z, "{}", path.display());
            assert!(
                image.to_f32().iter().all(|v| v.is_finite()),
                "{}: a non-finite value reaches the network",
                path.display()
            );
        }
    }
    assert!(seen > 0);
}
