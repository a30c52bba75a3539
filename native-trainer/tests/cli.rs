//! The `nvnet` binary on real files: info, import, and bad weights.

use std::process::Output;

mod common;
#[cfg(unix)]
use common::mkfifo;
use common::{nvnet, testdata, text};

#[test]
fn info_reports_parameters_flop_and_memory() {
    let out = nvnet(&["info", "--init-filters", "16", "--shape", "240,240,160"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("parameters:                 4,702,227"), "{t}");
    assert!(
        t.contains("forward, segmentation:      1300.9 GFLOP"),
        "{t}"
    );
    assert!(t.contains("activations, inference:"), "{t}");

    let out = nvnet(&[
        "info",
        "--init-filters",
        "32",
        "--vae",
        "--shape",
        "160,192,128",
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("+ VAE (crop [160, 192, 128])"), "{t}");
    assert!(
        t.contains("forward, segmentation:      2192.2 GFLOP"),
        "{t}"
    );
    assert!(t.contains("forward, VAE branch:"), "{t}");
}

#[test]
fn import_writes_weights_that_info_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("f8.bpk");
    let out = nvnet(&[
        "import",
        testdata("reference/segresnet_f8/model.pt")
            .to_str()
            .unwrap(),
        "--out",
        out_file.to_str().unwrap(),
        "--modalities",
        "flair,t1,t1ce,t2",
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("inferred: SegResNet F=8 in=4 out=3 blocks_down=[1, 2, 2, 4] blocks_up=[1, 1, 1], 1,176,843 parameters"), "{t}");
    let out = nvnet(&[
        "info",
        "--weights",
        out_file.to_str().unwrap(),
        "--shape",
        "64,64,64",
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("inputs:     flair, t1, t1ce, t2"), "{t}");
    assert!(
        t.contains("provenance: imported from MONAI SegResNet checkpoint model.pt"),
        "{t}"
    );
    assert!(t.contains("parameters:                 1,176,843"), "{t}");

    // The MONAI BraTS bundle's preset: its channel order and a name.
    let bundle = dir.path().join("bundle.bpk");
    let out = nvnet(&[
        "import",
        testdata("reference/segresnet_f8/model.pt")
            .to_str()
            .unwrap(),
        "--out",
        bundle.to_str().unwrap(),
        "--preset",
        "monai-brats",
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("inputs:   t1ce, t1, t2, flair"), "{t}");
    let out = nvnet(&["info", "--weights", bundle.to_str().unwrap()]);
    let t = text(&out);
    assert!(t.contains("MONAI brats_mri_segmentation"), "{t}");
}

#[test]
fn bad_weights_fail_with_a_message_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("garbage.pt");
    std::fs::write(&bad, b"this is not a checkpoint at all").unwrap();
    let out = nvnet(&[
        "import",
        bad.to_str().unwrap(),
        "--out",
        dir.path().join("x.bpk").to_str().unwrap(),
    ]);
    let t = text(&out);
    assert!(!out.status.success());
    assert!(t.contains("error:") && t.contains("garbage.pt"), "{t}");
    assert!(!t.contains("panicked"), "{t}");
    assert!(
        !dir.path().join("x.bpk").exists(),
        "no output is written on failure"
    );

    let out = nvnet(&[
        "import",
        testdata("reference/segresnet_f8/model.pt")
            .to_str()
            .unwrap(),
        "--out",
        "/x.bpk",
        "--modalities",
        "t1,t1,t2,flair",
    ]);
    let t = text(&out);
    assert!(!out.status.success() && t.contains("listed twice"), "{t}");
}

/// `--device cuda` where it cannot run: a clear message, never burn-cuda's panic.
#[test]
fn cuda_without_the_feature_or_the_driver_is_a_clear_error() {
    let out = nvnet(&[
        "--device",
        "cuda",
        "bench",
        "--init-filters",
        "8",
        "--shape",
        "16,16,16",
        "--runs",
        "1",
    ]);
    let t = text(&out);
    assert!(!t.contains("panicked"), "{t}");
    if !cfg!(feature = "cuda") {
        assert!(
            !out.status.success() && t.contains("not compiled into this nvnet"),
            "{t}"
        );
    } else if !out.status.success() {
        // The CUDA build on a machine without the CUDA driver: burn-cuda would panic when it
        // first loads libcuda; nvnet checks first. CI type-checks the CUDA build without running
        // it: the check's message is tested in device.rs, in the build CI runs.
        assert!(
            t.contains("the CUDA driver (libcuda.so) was not found"),
            "{t}"
        );
    } else {
        // A machine with a GPU.
        assert!(t.contains("forward F=8 at 16×16×16"), "{t}");
    }
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

#[test]
fn inspect_json_of_the_reference_case_reproduces_its_expected_values() {
    let folder = testdata("reference/brats_case/BraTS-Synth-0001");
    let out = nvnet(&["inspect", "--json", folder.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let got = json_of(&out);
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("expected.json")).unwrap())
            .unwrap();
    assert_eq!(got["id"], "BraTS-Synth-0001");
    assert_eq!(got["layout"], "brats2018");
    assert_eq!(got["shape"], want["shape"]);
    assert_eq!(got["spacing"], serde_json::json!([1.0, 1.0, 1.0]));
    for r in 0..4 {
        for c in 0..4 {
            let (g, w) = (
                got["affine"][r][c].as_f64().unwrap(),
                want["affine"][r][c].as_f64().unwrap(),
            );
            assert!((g - w).abs() < 1e-5, "affine[{r}][{c}] {g} vs {w}");
        }
    }
    assert_eq!(got["labels"], want["label_counts"]);
    assert_eq!(got["regions"], want["region_voxels"]);
    for (m, exp) in want["modalities"].as_object().unwrap() {
        assert_eq!(got["modalities"][m]["dtype"], exp["dtype"], "{m}");
        assert!(
            got["modalities"][m]["file"]
                .as_str()
                .unwrap()
                .ends_with(&format!("_{m}.nii.gz"))
        );
        let max = got["modalities"][m]["max"].as_f64().unwrap();
        let sample = exp["values"][1][1].as_f64().unwrap();
        assert!(max >= sample, "{m}: max {max} < a voxel value {sample}");
    }
}

#[test]
fn inspect_accepts_a_good_file_and_refuses_a_bad_one_with_its_name() {
    let good = testdata("reference/brats_case/BraTS-Synth-0001/BraTS-Synth-0001_t1.nii.gz");
    let out = nvnet(&["inspect", "--json", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let v = json_of(&out);
    assert_eq!(v["dtype"], "int16");
    assert_eq!(v["shape"], serde_json::json!([48, 56, 40]));
    assert_eq!(v["modality"], "t1");
    assert_eq!(v["min"], 0.5);

    let bad = testdata("bad/two_d.nii");
    let out = nvnet(&["inspect", "--json", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("two_d.nii") && t.contains("2-D"), "{t}");
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout for a refused file: {t}"
    );

    // A NaN voxel: accepted, with the warning on stderr.
    let nan = testdata("bad/warn_nan_values.nii.gz");
    let out = nvnet(&["inspect", "--json", nan.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NaN"));
    json_of(&out);
}

#[test]
fn synth_writes_cases_that_inspect_accepts_in_both_layouts() {
    let dir = tempfile::tempdir().unwrap();
    for layout in ["brats2018", "brats2023"] {
        let root = dir.path().join(layout);
        let out = nvnet(&[
            "synth",
            "--out",
            root.to_str().unwrap(),
            "--cases",
            "2",
            "--seed",
            "5",
            "--shape",
            "48,48,32",
            "--layout",
            layout,
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let out = nvnet(&["inspect", "--json", root.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
        let v = json_of(&out);
        assert_eq!(v["cases"].as_array().unwrap().len(), 2);
        assert_eq!(v["cases"][0]["layout"], layout);
        assert_eq!(v["cases"][0]["shape"], serde_json::json!([48, 48, 32]));
        let suffix = if layout == "brats2023" {
            "-t2f.nii.gz"
        } else {
            "_flair.nii.gz"
        };
        assert!(
            v["cases"][0]["modalities"]["flair"]["file"]
                .as_str()
                .unwrap()
                .ends_with(suffix)
        );
    }
    // A case folder with a modality missing: refused, non-zero exit, the folder named.
    let case = dir.path().join("brats2018/Phantom-00001");
    std::fs::remove_file(case.join("Phantom-00001_t2.nii.gz")).unwrap();
    let out = nvnet(&["inspect", case.to_str().unwrap()]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("Phantom-00001") && t.contains("missing modality: t2"),
        "{t}"
    );
}

/// Arguments and paths that once panicked, aborted in the allocator, hung, or said the wrong
/// thing: each gets a message now.
#[cfg(unix)]
#[test]
fn bad_arguments_and_special_files_get_messages_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let fifo = dir.path().join("pipe.bpk");
    mkfifo(&fifo);
    let fifo = fifo.to_str().unwrap();
    let missing = format!("{d}/missing_t1.nii.gz");
    let cases: &[(&[&str], &[&str])] = &[
        (
            &[
                "bench",
                "--runs",
                "0",
                "--init-filters",
                "8",
                "--shape",
                "16,16,16",
            ],
            &["--runs must be at least 1"],
        ),
        // Sized past any machine's memory (once an abort in the allocator).
        (
            &[
                "--device",
                "cpu",
                "bench",
                "--init-filters",
                "64",
                "--shape",
                "512,512,1024",
            ],
            &["512×512×1024", "GiB for a forward pass", "memory available"],
        ),
        (
            &["synth", "--out", d, "--shape", "5000,5000,5000"],
            &["more than the 268435456 voxels"],
        ),
        (
            &["info", "--shape", "18446744073709551615,2,2"],
            &["more than the 268435456 voxels"],
        ),
        (
            &[
                "synth",
                "--out",
                d,
                "--cases",
                "2",
                "--first",
                "18446744073709551614",
            ],
            &["runs past the largest case index"],
        ),
        (
            &["inspect", &missing],
            &["missing_t1.nii.gz", "No such file"],
        ),
        (&["inspect", "/dev/zero"], &["/dev/zero", "a device"]),
        (
            &["import", "/dev/zero", "--out", d],
            &["/dev/zero", "a device"],
        ),
        (&["info", "--weights", fifo], &["pipe.bpk", "a named pipe"]),
        (&["export", d, "--out", "x.bpk"], &["a folder"]),
        (
            &[
                "--device",
                "cpu",
                "predict",
                "--weights",
                "default",
                "--input",
                d,
                "--output",
                d,
                "--precision",
                "f16",
            ],
            &["--precision f16 is for GPUs"],
        ),
        (
            &[
                "predict",
                "--weights",
                "default",
                "--input",
                d,
                "--output",
                d,
                "--precision",
                "f8",
            ],
            &["unknown precision \"f8\""],
        ),
    ];
    for (args, words) in cases {
        let out = nvnet(args);
        let t = text(&out);
        // 2: refused by the argument parser; 1: by nvnet.
        assert!(matches!(out.status.code(), Some(1 | 2)), "{args:?}: {t}");
        assert!(t.matches("(os error").count() <= 1, "said twice: {t}");
        assert!(
            !t.contains("panicked") && !t.contains("memory allocation"),
            "{args:?}: {t}"
        );
        assert!(words.iter().all(|w| t.contains(w)), "{args:?}: {t}");
    }
}
