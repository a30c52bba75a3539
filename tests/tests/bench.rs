//! The page's speed against native, on one phantom with the default model (not a test: run it
//! by hand, it takes minutes):
//!
//! ```sh
//! trunk build --release
//! NVNET_BENCH_SHAPE=240,240,155 NVNET_BENCH_TTA=0 \
//!   cargo test -p nvnet-e2e --test bench -- --ignored --nocapture
//! ```
//!
//! `NVNET_BENCH_CPU_ONLY=1`: only the page's CPU fallback and `--device cpu` (SwiftShader and
//! llvmpipe take most of the minutes).
//!
//! Chromium's WebGPU (SwiftShader here), the page's CPU fallback (flex in wasm; the engine's
//! relaxed-SIMD build, which Chromium runs, and its baseline build), `nvnet predict
//! --device wgpu` (llvmpipe here) and `--device cpu` (flex), one after the other on the same
//! case with the same options; seconds as each reports them, and the ratios. Each page segments
//! the case twice: in a fresh profile, then again with its engine warm.

use std::path::PathBuf;
use std::process::Command;

use nvnet_e2e::cdp::{Browser, NO_WEBGPU_FLAGS, WEBGPU_FLAGS};
use nvnet_e2e::page::{agreement, case_files, native_prediction, segment_files, wait_ready};
use nvnet_e2e::server::StaticServer;
use nvnet_e2e::{WITHOUT_RELAXED_SIMD, dist, nvnet_binary};

#[test]
#[ignore = "a benchmark: minutes; run by hand (see the file's header)"]
fn page_against_native() {
    let shape = std::env::var("NVNET_BENCH_SHAPE").unwrap_or_else(|_| "240,240,155".into());
    let tta = std::env::var("NVNET_BENCH_TTA").is_ok_and(|v| v == "1");
    let cpu_only = std::env::var("NVNET_BENCH_CPU_ONLY").is_ok_and(|v| v == "1");
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let o = Command::new(nvnet_binary())
        .args([
            "synth", "--cases", "1", "--seed", "5", "--shape", &shape, "--out",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let id = "Phantom-00000";
    let files: Vec<PathBuf> = case_files(&data.join(id), id);
    let server = StaticServer::start(&dist());
    let mut rows = Vec::new();
    let mut downloads_kept = Vec::new();
    let pages = [
        ("page webgpu", WEBGPU_FLAGS, None),
        ("page cpu (wasm, relaxed SIMD)", NO_WEBGPU_FLAGS, None),
        (
            "page cpu (wasm, baseline SIMD)",
            NO_WEBGPU_FLAGS,
            Some(WITHOUT_RELAXED_SIMD),
        ),
    ];
    for (name, flags, prelude) in pages.into_iter().skip(cpu_only as usize) {
        let mut b = Browser::launch(flags).expect("Chromium");
        b.worker_prelude = prelude.map(str::to_string);
        let downloads = tempfile::tempdir().unwrap();
        let page = b.new_page(downloads.path()).expect("page");
        page.navigate(&mut b, &format!("{}/", server.url)).unwrap();
        wait_ready(&page, &mut b);
        let run = segment_files(
            &mut b,
            &page,
            downloads.path(),
            (&files, id),
            tta,
            &format!("bench-{}", name.replace([' ', '(', ')'], "")),
        );
        eprintln!(
            "{name}: {:.1} s ({}; window {:?}, {} windows; {})",
            run.seconds,
            run.backend,
            run.roi,
            run.windows,
            page.eval(&mut b, "JSON.stringify(result.timings)").unwrap()
        );
        rows.push((name.to_string(), run.seconds));
        // The same case again in the same page: a warm engine (its shaders compiled, its
        // buffers allocated once already), as a user's second case meets it.
        page.eval(
            &mut b,
            "document.querySelector('[data-testid=status]').textContent = ''",
        )
        .unwrap();
        page.click(&mut b, "segment").unwrap();
        nvnet_e2e::page::wait_done(&page, &mut b, std::time::Duration::from_secs(1500));
        let warm = page
            .eval(&mut b, "result.seconds")
            .unwrap()
            .as_f64()
            .unwrap_or(0.0);
        eprintln!(
            "{name}, warm engine: {warm:.1} s ({})",
            page.eval(&mut b, "JSON.stringify(result.timings)").unwrap()
        );
        rows.push((format!("{name}, warm engine"), warm));
        downloads_kept.push((run.download, downloads));
    }
    for device in ["wgpu", "cpu"].into_iter().skip(cpu_only as usize) {
        let out = work.path().join(device);
        let (file, seconds) = native_prediction(&out, (&files, id), device, tta, None);
        eprintln!("native {device}: {seconds:.1} s (the whole command)");
        rows.push((format!("nvnet predict --device {device}"), seconds));
        if device == "cpu" {
            let native = nvnet::io::nifti::read_path(&file).unwrap().to_f32();
            for (download, _) in &downloads_kept {
                let page = nvnet::io::nifti::read_path(download).unwrap().to_f32();
                eprintln!(
                    "{}: {:.4} % of voxels as native cpu",
                    download.display(),
                    100.0 * agreement(&page, &native)
                );
            }
        }
    }
    let cpu = rows.last().unwrap().1;
    eprintln!("\n| {shape}, TTA {tta} | seconds | × native cpu |\n|---|---|---|");
    for (name, s) in &rows {
        eprintln!("| {name} | {s:.1} | {:.2} |", s / cpu);
    }
}

/// The page preparing a full-size exam (reading its DICOM files, registering three series,
/// resampling, stripping the skull) against `nvnet prepare` on the same folder (not a test: run
/// it by hand):
///
/// ```sh
/// trunk build --release
/// cargo test -p nvnet-e2e --test bench -- --ignored --nocapture page_prepares
/// ```
///
/// The exam: `nvnet synth --head --seed 5 --dicom DIR --moved`, a whole phantom head of
/// 240×240×155 (the T1ce) acquired as four series. The page's time runs from the files given to
/// "ready to segment" (its check, on the CPU fallback: reading and registering are the same
/// wasm whatever the backend); native's is the whole `nvnet prepare` command.
#[test]
#[ignore = "a benchmark: a minute or more; run by hand (see its comment)"]
fn page_prepares_an_exam_against_native() {
    let work = tempfile::tempdir().unwrap();
    let (nifti_root, exams) = (work.path().join("nifti"), work.path().join("dicom"));
    let o = Command::new(nvnet_binary())
        .args(["synth", "--head", "--cases", "1", "--seed", "5", "--out"])
        .arg(&nifti_root)
        .arg("--dicom")
        .arg(&exams)
        .arg("--moved")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let exam = exams.join("Phantom-00000");
    let files = nvnet_e2e::page::exam_files(&exam);

    let t = std::time::Instant::now();
    let o = Command::new(nvnet_binary())
        .args(["prepare", "--input"])
        .arg(&exam)
        .arg("--output")
        .arg(work.path().join("prepared"))
        .output()
        .unwrap();
    let native = t.elapsed().as_secs_f64();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    eprintln!(
        "nvnet prepare: {native:.1} s\n{}",
        String::from_utf8_lossy(&o.stdout)
    );

    let server = StaticServer::start(&dist());
    let mut b = Browser::launch(NO_WEBGPU_FLAGS).expect("Chromium");
    let downloads = tempfile::tempdir().unwrap();
    let page = b.new_page(downloads.path()).expect("page");
    page.navigate(&mut b, &format!("{}/", server.url)).unwrap();
    wait_ready(&page, &mut b);
    let t = std::time::Instant::now();
    page.set_files(&mut b, "file-input", &files)
        .expect("file input");
    let status = nvnet_e2e::page::wait_checked(&page, &mut b, std::time::Duration::from_secs(900))
        .expect("the exam is checked");
    let in_page = t.elapsed().as_secs_f64();
    assert_eq!(status, "ready to segment");
    let stages = page
        .eval(
            &mut b,
            "[...document.querySelectorAll('#stages li')].map((li) => li.textContent).join('\\n')",
        )
        .unwrap();
    eprintln!("the page's stages:\n{}", stages.as_str().unwrap_or(""));
    eprintln!(
        "\n| preparing the exam | seconds | × native |\n|---|---|---|\n\
         | page, CPU fallback (one thread) | {in_page:.1} | {:.2} |\n\
         | `nvnet prepare` | {native:.1} | 1.00 |",
        in_page / native
    );
}
