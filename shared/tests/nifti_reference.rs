//! NIfTI reading against `../shared/reference/brats_case` (nibabel's values), and writing on a
//! grid read back by an independent reader (the `nifti` crate).

use crate::common::reference;
use nvnet::io::nifti::{self, OutputData};

fn expected() -> serde_json::Value {
    let path = reference("brats_case/BraTS-Synth-0001/expected.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn modality_path(m: &str) -> std::path::PathBuf {
    reference(&format!(
        "brats_case/BraTS-Synth-0001/BraTS-Synth-0001_{m}.nii.gz"
    ))
}

#[test]
fn every_reference_value_and_the_affine_are_reproduced() {
    let exp = expected();
    let shape: Vec<usize> = exp["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    for (name, m) in exp["modalities"].as_object().unwrap() {
        let image = nifti::read_path(&modality_path(name)).unwrap();
        assert_eq!(image.dims().to_vec(), shape, "{name}");
        assert_eq!(image.dtype.name(), m["dtype"].as_str().unwrap(), "{name}");
        for entry in m["values"].as_array().unwrap() {
            let ijk: Vec<usize> = entry[0]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let want = entry[1].as_f64().unwrap();
            let got = image.at(ijk[0], ijk[1], ijk[2]);
            assert!(
                (got - want).abs() <= 1e-9,
                "{name} {ijk:?}: {got} vs {want}"
            );
        }
        for (r, row) in exp["affine"].as_array().unwrap().iter().enumerate() {
            for (c, v) in row.as_array().unwrap().iter().enumerate() {
                let want = v.as_f64().unwrap();
                let got = image.geometry.affine[r][c];
                assert!(
                    (got - want).abs() <= 1e-5,
                    "{name} affine[{r}][{c}]: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn label_counts_of_the_segmentation_are_reproduced() {
    let exp = expected();
    let seg = nifti::read_path(&modality_path("seg")).unwrap();
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for i in 0..seg.voxels.len() {
        *counts
            .entry(format!("{}", seg.value(i) as i64))
            .or_default() += 1;
    }
    for (label, n) in exp["label_counts"].as_object().unwrap() {
        assert_eq!(
            counts.get(label).copied().unwrap_or(0),
            n.as_u64().unwrap(),
            "label {label}"
        );
    }
    let regions = exp["region_voxels"].as_object().unwrap();
    let count = |f: &dyn Fn(i64) -> bool| {
        (0..seg.voxels.len())
            .filter(|&i| f(seg.value(i) as i64))
            .count() as u64
    };
    assert_eq!(
        count(&|l| l == 1 || l == 2 || l == 4),
        regions["WT"].as_u64().unwrap()
    );
    assert_eq!(
        count(&|l| l == 1 || l == 4),
        regions["TC"].as_u64().unwrap()
    );
    assert_eq!(count(&|l| l == 4), regions["ET"].as_u64().unwrap());
}

#[test]
fn a_written_label_map_reads_back_on_the_same_grid() {
    let source = nifti::read_path(&modality_path("t1")).unwrap();
    let labels: Vec<u8> = (0..source.voxels.len()).map(|i| (i % 5) as u8).collect();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("labels.nii.gz");
    nifti::write_on_grid(&out, &source.geometry, OutputData::Labels(&labels)).unwrap();
    // Our reader: identical grid, values, no scaling.
    let back = nifti::read_path(&out).unwrap();
    assert_eq!(back.geometry, source.geometry);
    assert_eq!((back.slope, back.inter), (1.0, 0.0));
    assert!((0..labels.len()).all(|i| back.value(i) == labels[i] as f64));
    // An independent reader (the nifti crate) agrees on the header geometry and the data.
    use ::nifti::{NiftiObject, ReaderOptions, volume::RandomAccessNiftiVolume};
    let obj = ReaderOptions::new().read_file(&out).unwrap();
    let h = obj.header();
    let g = &source.geometry;
    assert_eq!(
        h.dim[..4],
        [3, g.dims[0] as u16, g.dims[1] as u16, g.dims[2] as u16]
    );
    assert_eq!(h.datatype, 2);
    assert_eq!((h.scl_slope, h.scl_inter), (1.0, 0.0));
    assert_eq!(
        (h.qform_code as i32, h.sform_code as i32),
        (g.qform_code, g.sform_code)
    );
    assert_eq!(h.xyzt_units as i32, g.xyzt_units);
    for n in 1..4 {
        assert_eq!(h.pixdim[n] as f64, g.pixdim[n]);
    }
    for c in 0..4 {
        assert_eq!(h.srow_x[c] as f64, g.srow[0][c]);
        assert_eq!(h.srow_y[c] as f64, g.srow[1][c]);
        assert_eq!(h.srow_z[c] as f64, g.srow[2][c]);
    }
    let vol = obj.volume();
    for (i, j, k) in [
        (0usize, 0usize, 0usize),
        (5, 7, 9),
        (47, 55, 39),
        (24, 28, 20),
    ] {
        let want = labels[source.index(i, j, k)] as f64;
        assert_eq!(
            vol.get_f64(&[i as u16, j as u16, k as u16]).unwrap(),
            want,
            "({i},{j},{k})"
        );
    }
}

#[test]
fn a_written_probability_map_is_4d_float32() {
    let source = nifti::read_path(&modality_path("t2")).unwrap();
    let n = source.voxels.len();
    let values: Vec<f32> = (0..3 * n).map(|i| (i % 1000) as f32 / 1000.0).collect();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prob.nii.gz");
    nifti::write_on_grid(
        &out,
        &source.geometry,
        OutputData::Floats {
            values: &values,
            channels: 3,
        },
    )
    .unwrap();
    use ::nifti::{NiftiObject, ReaderOptions};
    let obj = ReaderOptions::new().read_file(&out).unwrap();
    let h = obj.header();
    assert_eq!(h.dim[..5], [4, 48, 56, 40, 3]);
    assert_eq!(h.datatype, 16);
    // Our reader refuses it as a modality: several volumes.
    let err = nifti::read_path(&out).unwrap_err().to_string();
    assert!(
        err.contains("prob.nii.gz") && err.contains("3 volumes"),
        "{err}"
    );
}

/// A qform-only file as FSL writes a 180° rotation (its quaternion a float32 off unit length):
/// the affine nibabel reads from it (testdata/qform/make.py), to the last bit.
#[test]
fn a_qform_only_file_gives_nibabels_affine() {
    let dir = reference("..").join("qform");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let image = nifti::read_path(&dir.join("fsl_qform.nii.gz")).unwrap();
    assert_eq!(image.geometry.sform_code, 0);
    for (r, row) in expected["affine"].as_array().unwrap().iter().enumerate() {
        for (c, v) in row.as_array().unwrap().iter().enumerate() {
            let (got, want) = (image.geometry.affine[r][c], v.as_f64().unwrap());
            assert!(
                (got - want).abs() <= 1e-12,
                "affine[{r}][{c}]: {got} vs nibabel's {want}"
            );
        }
    }
}
