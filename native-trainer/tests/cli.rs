//! The `nvnet` binary on real files: info, import, and bad weights.

use std::path::PathBuf;
use std::process::{Command, Output};

fn nvnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nvnet"))
        .args(args)
        .output()
        .expect("run nvnet")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn reference(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/reference")
        .join(path)
}

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
        reference("segresnet_f8/model.pt").to_str().unwrap(),
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
        reference("segresnet_f8/model.pt").to_str().unwrap(),
        "--out",
        "/x.bpk",
        "--modalities",
        "t1,t1,t2,flair",
    ]);
    let t = text(&out);
    assert!(!out.status.success() && t.contains("listed twice"), "{t}");
}

#[test]
fn a_backend_not_compiled_in_is_a_clear_error() {
    if cfg!(feature = "cuda") {
        return;
    }
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
    assert!(
        !out.status.success() && t.contains("not compiled into this nvnet"),
        "{t}"
    );
}
