//! What nvnet promises about files, under the conditions that once broke it: an output never
//! replaces an input (by any name or link), a failed run leaves what was there before, two runs
//! never mix their outputs, damaged weights are refused, CSV fields stay in their columns,
//! a reader that stops early ends the run quietly, and temp files of killed runs are cleaned.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{nvnet, s, synth, text};

/// One synthetic case (40×40×32) under `dir/data`; returns its folder.
fn phantom(dir: &Path) -> PathBuf {
    let root = dir.join("data");
    synth(&root, 1, "40,40,32", 0);
    root.join("Phantom-00000")
}

fn predict(input: &[&str], output: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["predict", "--weights", "default", "--no-tta"];
    args.extend_from_slice(input);
    args.extend_from_slice(&["--output", s(output)]);
    args.extend_from_slice(extra);
    nvnet(&args)
}

fn refused(out: &Output, words: &[&str]) {
    let t = text(out);
    assert!(!out.status.success(), "{t}");
    assert!(words.iter().all(|w| t.contains(w)), "{words:?}: {t}");
    assert!(!t.contains("panicked"), "{t}");
    eprintln!("refused as expected: {}", t.trim_end());
}

#[cfg(unix)]
#[test]
fn an_output_never_replaces_an_input_by_a_link_or_by_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let case = phantom(dir.path());
    let flair = case.join("Phantom-00000_flair.nii.gz");
    let before = std::fs::read(&flair).unwrap();

    // The label map's name in the output folder is a link to the case's FLAIR.
    let pred = dir.path().join("pred");
    std::fs::create_dir_all(&pred).unwrap();
    std::os::unix::fs::symlink(&flair, pred.join("Phantom-00000.nii.gz")).unwrap();
    let out = predict(&["--input", s(&case)], &pred, &[]);
    refused(
        &out,
        &["Phantom-00000_flair.nii.gz", "an input of this run"],
    );
    assert_eq!(
        std::fs::read(&flair).unwrap(),
        before,
        "the FLAIR was replaced"
    );

    // Loose files whose case ID is the FLAIR's own name: the label map would be L/P.nii.gz.
    let loose = dir.path().join("L");
    std::fs::create_dir_all(&loose).unwrap();
    let mut args: Vec<String> = Vec::new();
    for (flag, from, to) in [
        ("--t1", "t1", "P_t1.nii.gz"),
        ("--t1ce", "t1ce", "P_t1ce.nii.gz"),
        ("--t2", "t2", "P_t2.nii.gz"),
        ("--flair", "flair", "P.nii.gz"),
    ] {
        let target = loose.join(to);
        std::fs::copy(case.join(format!("Phantom-00000_{from}.nii.gz")), &target).unwrap();
        args.push(flag.into());
        args.push(target.to_str().unwrap().into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = predict(&args, &loose, &[]);
    refused(&out, &["P.nii.gz", "an input of this run"]);
    assert_eq!(std::fs::read(loose.join("P.nii.gz")).unwrap(), before);

    // `export --out` onto its own source.
    let weights = dir.path().join("w.bpk");
    let out = nvnet(&["export", s(&default_weights()), "--out", s(&weights)]);
    assert!(out.status.success(), "{}", text(&out));
    let out = nvnet(&["export", s(&weights), "--out", s(&weights), "--half"]);
    refused(&out, &["w.bpk", "an input of this run"]);
}

/// The embedded model as a file.
fn default_weights() -> PathBuf {
    PathBuf::from("../shared/models/default.bpk") // from the package's folder, as testdata()
}

#[test]
fn a_failed_rerun_leaves_the_earlier_outputs_and_stale_temp_files_go() {
    let dir = tempfile::tempdir().unwrap();
    let case = phantom(dir.path());
    let pred = dir.path().join("pred");
    std::fs::create_dir_all(&pred).unwrap();
    // What an earlier run left: its label map, and the temp file of a run killed at the
    // rename (no process has this id).
    let labels = pred.join("Phantom-00000.nii.gz");
    std::fs::write(&labels, b"an earlier run's label map").unwrap();
    let stale = pred.join(".Phantom-00000_prob.nii.gz.tmp-4294967294");
    std::fs::write(&stale, b"half").unwrap();
    // This run's probability map cannot be written (a folder stands there).
    std::fs::create_dir(pred.join("Phantom-00000_prob.nii.gz")).unwrap();
    let out = predict(&["--input", s(&case)], &pred, &["--save-probabilities"]);
    refused(&out, &["Phantom-00000_prob.nii.gz", "a folder"]);
    assert_eq!(
        std::fs::read(&labels).unwrap(),
        b"an earlier run's label map",
        "the earlier label map was replaced or removed"
    );
    assert!(!stale.exists(), "the stale temp file is still there");
    let mut names: Vec<String> = std::fs::read_dir(&pred)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["Phantom-00000.nii.gz", "Phantom-00000_prob.nii.gz"]);
}

#[test]
fn a_second_run_into_a_busy_folder_is_told_so() {
    let dir = tempfile::tempdir().unwrap();
    let case = phantom(dir.path());
    let pred = dir.path().join("pred");
    std::fs::create_dir_all(&pred).unwrap();
    // Another process holds the folder (this test's process, through the same lock).
    let held = nvnet::io::fsutil::FolderLock::take(&pred).unwrap();
    let out = predict(&["--input", s(&case)], &pred, &[]);
    refused(
        &out,
        &["pred", "another nvnet run is writing into this folder"],
    );
    assert!(!pred.join("Phantom-00000.nii.gz").exists());
    drop(held);
    let out = predict(&["--input", s(&case)], &pred, &[]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn damaged_weights_are_refused_with_the_files_name() {
    let dir = tempfile::tempdir().unwrap();
    let case = phantom(dir.path());
    let weights = dir.path().join("model.bpk");
    let out = nvnet(&["export", s(&default_weights()), "--out", s(&weights)]);
    assert!(out.status.success(), "{}", text(&out));
    // 4 KiB overwritten in the middle of the tensor data.
    let mut bytes = std::fs::read(&weights).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid..mid + 4096].fill(0x3c);
    std::fs::write(&weights, &bytes).unwrap();
    let pred = dir.path().join("pred");
    let out = nvnet(&[
        "predict",
        "--weights",
        s(&weights),
        "--input",
        s(&case),
        "--output",
        s(&pred),
        "--no-tta",
    ]);
    refused(&out, &["model.bpk", "damaged", "SHA-256"]);
    assert!(!pred.join("Phantom-00000.nii.gz").exists());
}

#[test]
fn export_keeps_the_sources_post_processing_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let source = nvnet::io::weights::read_file_manifest(&default_weights())
        .unwrap()
        .unwrap()
        .postprocessing;
    assert!(
        source.remove_islands,
        "the default model records --remove-islands"
    );
    let out_of = |extra: &[&str]| {
        let path = dir.path().join("out.bpk");
        let mut args: Vec<String> = vec![
            "export".into(),
            s(&default_weights()).into(),
            "--out".into(),
            s(&path).into(),
        ];
        args.extend(extra.iter().map(|e| e.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = nvnet(&args);
        assert!(out.status.success(), "{}", text(&out));
        nvnet::io::weights::read_file_manifest(&path)
            .unwrap()
            .unwrap()
            .postprocessing
    };
    assert_eq!(out_of(&[]), source);
    assert_eq!(
        out_of(&["--no-postprocess"]),
        nvnet::inference::postprocess::Postprocessing::NONE
    );
    let chosen = out_of(&["--min-et-voxels", "50"]);
    assert_eq!(
        (chosen.remove_islands, chosen.min_et_voxels),
        (false, Some(50))
    );
}

/// Split one CSV line as RFC 4180 reads it.
fn csv_fields(line: &str) -> Vec<String> {
    let (mut fields, mut field, mut quoted, mut chars) =
        (Vec::new(), String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[cfg(unix)]
#[test]
fn evaluate_keeps_odd_case_names_in_their_column_refuses_two_truths_and_ends_quietly_in_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let case = phantom(dir.path());
    let truth = case.join("Phantom-00000_seg.nii.gz");
    let (pred, gt) = (dir.path().join("pred"), dir.path().join("gt"));
    std::fs::create_dir_all(&pred).unwrap();
    std::fs::create_dir_all(&gt).unwrap();
    let id = "a,b=HYPERLINK(\"x\")";
    std::fs::copy(&truth, pred.join(format!("{id}.nii.gz"))).unwrap();
    std::fs::copy(&truth, gt.join(format!("{id}_seg.nii.gz"))).unwrap();
    let csv = dir.path().join("metrics.csv");
    let out = nvnet(&[
        "evaluate",
        "--pred",
        s(&pred),
        "--gt",
        s(&gt),
        "--out",
        s(&csv),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let table = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<Vec<String>> = table.lines().map(csv_fields).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert_eq!(rows[1].len(), rows[0].len(), "{table}");
    assert_eq!(rows[1][0], id, "{table}");
    assert_eq!(
        rows[1][1], "1",
        "WT Dice of a label map against itself: {table}"
    );

    // `--out` onto a ground truth (through a link) is refused.
    let link = dir.path().join("link.csv");
    std::os::unix::fs::symlink(gt.join(format!("{id}_seg.nii.gz")), &link).unwrap();
    let out = nvnet(&[
        "evaluate",
        "--pred",
        s(&pred),
        "--gt",
        s(&gt),
        "--out",
        s(&link),
    ]);
    refused(&out, &["an input of this run"]);

    // A reader that closes its end at once: no panic (it was "failed printing to stdout").
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nvnet"))
        .args(["evaluate", "--pred", s(&pred), "--gt", s(&gt)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {}",
        out.status,
        text(&out)
    );
    assert!(!text(&out).contains("panicked"), "{}", text(&out));

    // Two different ground truths for one case: both named, the case not scored.
    let other = gt.join(format!("{id}-seg.nii.gz"));
    std::fs::write(&other, b"another truth").unwrap();
    let out = nvnet(&["evaluate", "--pred", s(&pred), "--gt", s(&gt)]);
    refused(&out, &["two ground truths", "_seg.nii.gz", "-seg.nii.gz"]);
}
