//! Driving the nvnet page: load a case through its file input, segment, download; and the
//! native `nvnet predict` to compare with.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nvnet::io::nifti;

use crate::cdp::{Browser, Page};
use crate::{artifacts, nvnet_binary, repo_root};

/// The sample case shipped with the page (`www/sample`).
pub const CASE_ID: &str = "Phantom-00000";

/// The four modality files of case `id` in `dir` (BraTS 2018 names), T1 T1ce T2 FLAIR.
pub fn case_files(dir: &Path, id: &str) -> Vec<PathBuf> {
    ["t1", "t1ce", "t2", "flair"]
        .iter()
        .map(|m| dir.join(format!("{id}_{m}.nii.gz")))
        .collect()
}

pub fn sample_files() -> Vec<PathBuf> {
    case_files(&repo_root().join("www/sample"), CASE_ID)
}

/// A phantom case `nvnet synth` makes in `dir`: `shape` voxels around its tumour (`i,j,k`), its
/// four files (T1 T1ce T2 FLAIR), named as the sample's. For tests whose property does not need
/// the sample's size: on SwiftShader a window's time grows with its voxels.
pub fn phantom_files(dir: &Path, shape: &str, seed: u64) -> Vec<PathBuf> {
    let out = Command::new(nvnet_binary())
        .args(["synth", "--cases", "1", "--window", shape, "--seed"])
        .arg(seed.to_string())
        .arg("--out")
        .arg(dir)
        .output()
        .expect("run nvnet synth");
    assert!(
        out.status.success(),
        "nvnet synth: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    case_files(&dir.join(CASE_ID), CASE_ID)
}

/// The files of a DICOM exam `nvnet synth --dicom` wrote (`<exam>/<modality>/IM0001...`), in
/// name order.
pub fn exam_files(exam: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(exam)
        .expect("the exam's folder")
        .flat_map(|series| std::fs::read_dir(series.expect("a series").path()).expect("a series"))
        .map(|f| f.expect("a file").path())
        .collect();
    files.sort();
    files
}

/// What one segmentation in the page gave.
pub struct PageRun {
    pub download: PathBuf,
    pub backend: String,
    pub roi: [usize; 3],
    pub windows: usize,
    pub seconds: f64,
}

pub fn wait_ready(page: &Page, b: &mut Browser) {
    page.wait_for(
        b,
        "(() => { const s = document.querySelector('[data-testid=status]').textContent; \
                  return s.startsWith('ready') || s.startsWith('error:') ? s : ''; })()",
        Duration::from_secs(120),
    )
    .expect("the page starts");
}

/// Wait for the page's check of the files given: the status, "ready to segment" or an
/// `error:` (what `wait_for` says if neither comes within `timeout`).
pub fn wait_checked(page: &Page, b: &mut Browser, timeout: Duration) -> crate::cdp::Result<String> {
    let status = page.wait_for(
        b,
        "(() => { const s = document.querySelector('[data-testid=status]').textContent; \
                  return s === 'ready to segment' || s.startsWith('error:') ? s : ''; })()",
        timeout,
    )?;
    Ok(status.as_str().unwrap_or("").to_string())
}

/// Wait for `done` (or fail on `error:`); the status text.
pub fn wait_done(page: &Page, b: &mut Browser, timeout: Duration) -> String {
    let status = page
        .wait_for(
            b,
            "(() => { const s = document.querySelector('[data-testid=status]').textContent; \
                      return s.endsWith('done') || s.startsWith('error:') ? s : ''; })()",
            timeout,
        )
        .unwrap_or_else(|e| panic!("{e}; console: {:?}", b.console));
    let status = status.as_str().unwrap_or("").to_string();
    assert!(
        status.ends_with("done"),
        "status: {status}; console: {:?}",
        b.console
    );
    status
}

pub fn download(page: &Page, b: &mut Browser, downloads: &Path, id: &str) -> PathBuf {
    page.click(b, "download").expect("click download");
    let file = downloads.join(format!("{id}_seg.nii.gz"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(file.exists()
        && std::fs::metadata(&file)
            .map(|m| m.len() > 0)
            .unwrap_or(false))
    {
        assert!(
            Instant::now() < deadline,
            "no {} after Download: {:?}",
            file.display(),
            std::fs::read_dir(downloads).map(|d| d.count())
        );
        b.pump(Duration::from_millis(300)).expect("cdp");
    }
    file
}

/// Load a case through the file input, set TTA, Segment, wait, Download.
pub fn segment_files(
    b: &mut Browser,
    page: &Page,
    downloads: &Path,
    (files, id): (&[PathBuf], &str),
    tta: bool,
    shots: &str,
) -> PageRun {
    page.screenshot(b, &artifacts().join(format!("{shots}-before.png")))
        .expect("screenshot");
    page.set_files(b, "file-input", files).expect("file input");
    let status = wait_checked(page, b, Duration::from_secs(120)).expect("the files are checked");
    assert_eq!(status, "ready to segment", "console: {:?}", b.console);
    page.eval(
        b,
        &format!("document.getElementById('tta').checked = {tta}"),
    )
    .expect("tta");
    page.click(b, "segment").expect("segment");
    // A Segment that did nothing (a disabled button, a check that started meanwhile) fails here
    // and says so, instead of waiting out the run's whole time.
    page.wait_for(
        b,
        "document.querySelector('[data-testid=status]').textContent !== 'ready to segment'",
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| {
        panic!(
            "Segment was clicked and nothing started: {e}; console: {:?}",
            b.console
        )
    });
    wait_done(page, b, Duration::from_secs(1500));
    page.screenshot(b, &artifacts().join(format!("{shots}-after.png")))
        .expect("screenshot");
    let info = page
        .eval(
            b,
            "({roi: result.roi, windows: result.windows, seconds: result.seconds, backend: result.backend})",
        )
        .expect("result");
    let roi: Vec<usize> = serde_json::from_value(info["roi"].clone()).expect("roi");
    PageRun {
        download: download(page, b, downloads, id),
        backend: info["backend"].as_str().unwrap_or("").to_string(),
        roi: [roi[0], roi[1], roi[2]],
        windows: info["windows"].as_u64().unwrap_or(0) as usize,
        seconds: info["seconds"].as_f64().unwrap_or(0.0),
    }
}

/// `nvnet [--device D] predict --weights default` on a case's files; the label map it wrote and
/// the seconds the command took.
pub fn native_prediction(
    out: &Path,
    case: (&[PathBuf], &str),
    device: &str,
    tta: bool,
    roi: Option<[usize; 3]>,
) -> (PathBuf, f64) {
    native_prediction_with(out, case, device, tta, roi, &["--weights", "default"])
}

/// `nvnet predict` as [`native_prediction`], with other weights: `weights` are the arguments
/// that name them (`--weights FILE`, `--modalities ORDER`).
pub fn native_prediction_with(
    out: &Path,
    (files, id): (&[PathBuf], &str),
    device: &str,
    tta: bool,
    roi: Option<[usize; 3]>,
    weights: &[&str],
) -> (PathBuf, f64) {
    let t = Instant::now();
    let mut cmd = Command::new(nvnet_binary());
    cmd.args(["--device", device, "predict"])
        .args(weights)
        .arg("--output")
        .arg(out)
        .arg("--t1")
        .arg(&files[0])
        .arg("--t1ce")
        .arg(&files[1])
        .arg("--t2")
        .arg(&files[2])
        .arg("--flair")
        .arg(&files[3]);
    if !tta {
        cmd.arg("--no-tta");
    }
    if let Some(r) = roi {
        cmd.arg("--roi").arg(format!("{},{},{}", r[0], r[1], r[2]));
    }
    let o = cmd.output().expect("run nvnet");
    assert!(
        o.status.success(),
        "nvnet predict: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (out.join(format!("{id}.nii.gz")), t.elapsed().as_secs_f64())
}

/// The page's download against native: same grid and header geometry, ≥ 99.9 % equal labels.
pub fn assert_matches_native(page_file: &Path, native_file: &Path) -> f64 {
    let a = nifti::read_path(page_file).expect("the downloaded file is a NIfTI");
    let b = nifti::read_path(native_file).expect("native output");
    assert_eq!(a.geometry, b.geometry, "the grids differ");
    assert_eq!(a.dtype, b.dtype);
    let (la, lb) = (a.to_f32(), b.to_f32());
    let agreement = agreement(&la, &lb);
    let tumour = la.iter().filter(|v| **v != 0.0).count();
    eprintln!(
        "page vs native: {:.4} % of {} voxels agree; {} tumour voxels in the page's map",
        100.0 * agreement,
        la.len(),
        tumour
    );
    assert!(tumour > 0, "the page found no tumour at all");
    assert!(agreement >= 0.999, "only {:.4} % agree", 100.0 * agreement);
    agreement
}

/// The fraction of voxels with equal labels.
pub fn agreement(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "different voxel counts");
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}
