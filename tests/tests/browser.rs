//! The web page in a real headless Chromium (WebGPU on SwiftShader, or no WebGPU at all), on
//! the page trunk built, served from localhost: the sample case through the file input,
//! Segment, Download, and the downloaded label map against `nvnet predict --weights default`
//! on the same files with the same options.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use nvnet_e2e::cdp::{Browser, NO_WEBGPU_FLAGS, WEBGPU_FLAGS};
use nvnet_e2e::page::{
    CASE_ID, assert_matches_native, native_prediction, sample_files, segment_files, wait_ready,
};
use nvnet_e2e::server::StaticServer;
use nvnet_e2e::{dist, repo_root};

/// One browser at a time: there are two cores, and SwiftShader uses them all.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The main path on WebGPU, recording every request from load to download. Without the flips:
/// on SwiftShader each pass costs about half a minute more (the flips in the page are the CPU
/// fallback's test, and their arithmetic on a wgpu backend is `flips_match_flex_on_wgpu`).
#[test]
fn webgpu_segments_the_sample_like_native_and_sends_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sample = sample_files();
    let server = StaticServer::start(&dist());
    let mut b = Browser::launch(WEBGPU_FLAGS).expect("Chromium");
    let downloads = tempfile::tempdir().unwrap();
    let page = b.new_page(downloads.path()).expect("page");
    page.navigate(&mut b, &format!("{}/", server.url))
        .expect("navigate");
    wait_ready(&page, &mut b);
    let run = segment_files(
        &mut b,
        &page,
        downloads.path(),
        (&sample, CASE_ID),
        false,
        "webgpu",
    );
    assert_eq!(run.backend, "webgpu");
    assert_eq!(page.text(&mut b, "backend").unwrap(), "webgpu");
    // The embedded model's post-processing (its manifest) is named, and applied as natively.
    let details = page.text(&mut b, "result-details").unwrap();
    let manifest =
        nvnet::weights::read_manifest(nvnet::weights::default_model().unwrap(), "default").unwrap();
    assert!(
        details.contains(&format!(
            "post-processing: {}",
            manifest.postprocessing.flags()
        )),
        "{details}"
    );
    eprintln!(
        "webgpu: window {:?}, {} window(s), {:.1} s in the page",
        run.roi, run.windows, run.seconds
    );
    let native_dir = tempfile::tempdir().unwrap();
    assert_matches_native(
        &run.download,
        &native_prediction(native_dir.path(), (&sample, CASE_ID), "cpu", false, None).0,
    );

    // Privacy: from load to the page's closing, only GETs of this origin's own files (blob: is
    // the download itself, made in the page).
    page.close(&mut b).expect("close the page");
    assert!(!b.requests.is_empty(), "no request was recorded at all");
    let foreign: Vec<_> = b
        .requests
        .iter()
        .filter(|r| {
            !(r.method == "GET"
                && (r.url.starts_with(&format!("{}/", server.url))
                    || r.url.starts_with("blob:")
                    || r.url.starts_with("data:")))
        })
        .collect();
    assert!(
        foreign.is_empty(),
        "requests beyond the page's own files: {foreign:?}"
    );
    let served = server.requests.lock().unwrap().clone();
    assert!(
        served.iter().all(|(m, _)| m == "GET"),
        "non-GET requests reached the server: {served:?}"
    );
    // The engine crossed the wire once: the service worker's offline copy came from the HTTP
    // cache (what docs/PERFORMANCE.md's page weight assumes).
    let wasm_fetches = served
        .iter()
        .filter(|(_, url)| url.starts_with("/nvnet-web_bg.wasm"))
        .count();
    assert_eq!(
        wasm_fetches, 1,
        "the wasm was served {wasm_fetches} times: {served:?}"
    );
    // The worker fetched the engine (seen through the worker's own DevTools session).
    assert!(
        b.requests
            .iter()
            .any(|r| r.url.ends_with("nvnet-web_bg.wasm")),
        "the wasm fetch was not recorded: {:?}",
        b.requests
    );
}

/// Without WebGPU the page says so and segments on the CPU (flex compiled to wasm), here with
/// the 8 flips of test-time augmentation, as native does with them.
#[test]
fn without_webgpu_the_cpu_fallback_segments_like_native() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sample = sample_files();
    let server = StaticServer::start(&dist());
    let mut b = Browser::launch(NO_WEBGPU_FLAGS).expect("Chromium");
    let downloads = tempfile::tempdir().unwrap();
    let page = b.new_page(downloads.path()).expect("page");
    page.navigate(&mut b, &format!("{}/", server.url))
        .expect("navigate");
    wait_ready(&page, &mut b);
    let run = segment_files(
        &mut b,
        &page,
        downloads.path(),
        (&sample, CASE_ID),
        true,
        "cpu",
    );
    assert_eq!(run.backend, "cpu");
    assert_eq!(page.text(&mut b, "backend").unwrap(), "cpu");
    let notice = page
        .eval(&mut b, "document.getElementById('backend-notice').hidden ? '' : document.getElementById('backend-notice').textContent")
        .unwrap();
    assert!(
        notice.as_str().unwrap_or("").contains("CPU"),
        "no visible notice of the CPU fallback: {notice}"
    );
    eprintln!("cpu: {:.1} s in the page", run.seconds);
    let native_dir = tempfile::tempdir().unwrap();
    assert_matches_native(
        &run.download,
        &native_prediction(native_dir.path(), (&sample, CASE_ID), "cpu", true, None).0,
    );
}

/// WebGPU that does not answer in time (here within a millisecond; a hung driver never does) is
/// given up for the CPU, with a notice that says why; the page is then ready for a case.
#[test]
fn webgpu_that_does_not_answer_in_time_gives_way_to_the_cpu() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = StaticServer::start(&dist());
    let mut b = Browser::launch(WEBGPU_FLAGS).expect("Chromium");
    let downloads = tempfile::tempdir().unwrap();
    let page = b.new_page(downloads.path()).expect("page");
    page.navigate(&mut b, &format!("{}/?webgpu-timeout=0.001", server.url))
        .expect("navigate");
    wait_ready(&page, &mut b);
    let status = page.text(&mut b, "status").unwrap();
    assert!(
        status.starts_with("ready"),
        "status: {status}; console: {:?}",
        b.console
    );
    assert_eq!(page.text(&mut b, "backend").unwrap(), "cpu");
    let notice = page
        .eval(&mut b, "document.getElementById('backend-notice').hidden ? '' : document.getElementById('backend-notice').textContent")
        .unwrap();
    let notice = notice.as_str().unwrap_or("");
    assert!(
        notice.contains("WebGPU did not answer within 0.001 s") && notice.contains("CPU"),
        "notice: {notice}"
    );
}

/// With the adapter's limits capped so low that the sample needs at least 8 windows, the page
/// still segments, and matches native with the same window.
#[test]
fn capped_gpu_limits_use_many_windows_and_still_match_native() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sample = sample_files();
    let server = StaticServer::start(&dist());
    let mut b = Browser::launch(WEBGPU_FLAGS).expect("Chromium");
    let downloads = tempfile::tempdir().unwrap();
    let page = b.new_page(downloads.path()).expect("page");
    // 1 MiB: a window of 8 filters × 32,768 voxels.
    page.navigate(
        &mut b,
        &format!("{}/?max-binding=1048576&max-buffer=1048576", server.url),
    )
    .expect("navigate");
    wait_ready(&page, &mut b);
    let run = segment_files(
        &mut b,
        &page,
        downloads.path(),
        (&sample, CASE_ID),
        false,
        "capped",
    );
    assert_eq!(run.backend, "webgpu");
    assert!(
        run.windows >= 8,
        "only {} windows of {:?}",
        run.windows,
        run.roi
    );
    eprintln!(
        "capped: window {:?}, {} windows, {:.1} s in the page",
        run.roi, run.windows, run.seconds
    );
    let native_dir = tempfile::tempdir().unwrap();
    assert_matches_native(
        &run.download,
        &native_prediction(
            native_dir.path(),
            (&sample, CASE_ID),
            "cpu",
            false,
            Some(run.roi),
        )
        .0,
    );
}

/// Broken and hostile files get a clear `error:` naming the file, exactly those the library
/// refuses natively; the page keeps working and then segments a good case. The worker reads and
/// checks the files with the same wasm code on either backend, before anything runs on the GPU,
/// so this runs on the CPU fallback: a WebGPU engine would add its kernel compiling and tuning
/// (minutes on SwiftShader) and test nothing more (the WebGPU segmentation is the first test's).
#[test]
fn bad_files_give_clear_errors_and_the_page_keeps_working() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sample = sample_files();
    let server = StaticServer::start(&dist());
    let mut b = Browser::launch(NO_WEBGPU_FLAGS).expect("Chromium");
    let downloads = tempfile::tempdir().unwrap();
    let page = b.new_page(downloads.path()).expect("page");
    page.navigate(&mut b, &format!("{}/", server.url))
        .expect("navigate");
    wait_ready(&page, &mut b);
    let bad_dir = repo_root().join("testdata/bad");
    let mut bad: Vec<PathBuf> = std::fs::read_dir(&bad_dir)
        .expect("testdata/bad")
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.is_file()
                && nvnet::case::nifti_stem(&p.file_name().unwrap().to_string_lossy()).is_some()
        })
        .collect();
    bad.sort();
    bad.extend(
        std::fs::read_dir(repo_root().join("testdata/fuzz"))
            .expect("testdata/fuzz")
            .map(|e| e.unwrap().path()),
    );
    let good = sample.clone();
    let mut refused = Vec::new();
    let mut expected = Vec::new();
    for file in &bad {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        // The bad file takes the place of the FLAIR in an otherwise good case.
        let mut set = good[..3].to_vec();
        set.push(file.clone());
        // What the library refuses natively, read as the page reads it (bytes, the page's cap).
        if native_check(&set).is_err() {
            expected.push(name.clone());
        }
        page.set_files(&mut b, "file-input", &set)
            .expect("file input");
        // Roles: the bad file's name may not say FLAIR; the page fills the missing one.
        let status = page
            .wait_for(
                &mut b,
                "(() => { const s = document.querySelector('[data-testid=status]').textContent; \
                          return s === 'ready to segment' || s.startsWith('error:') ? s : ''; })()",
                Duration::from_secs(60),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let status = status.as_str().unwrap_or("").to_string();
        if status.starts_with("error:") {
            refused.push(name.clone());
            eprintln!("{name}: {status}");
            assert!(
                status.contains(&name),
                "the message does not name the file: {status}"
            );
        } else {
            // Accepted files (NaN values read as 0, with a warning) are legal NIfTI.
            eprintln!("{name}: accepted ({status})");
        }
        // Reset the status between files so that the next wait sees the new answer.
        page.eval(
            &mut b,
            "document.querySelector('[data-testid=status]').textContent = 'next'",
        )
        .unwrap();
    }
    eprintln!("{} of {} bad files refused", refused.len(), bad.len());
    assert!(
        expected.len() * 2 > bad.len(),
        "the native check refuses only {expected:?}"
    );
    assert_eq!(
        refused, expected,
        "the page refuses other files than the library does natively"
    );
    // The page still works: a good case segments.
    let run = segment_files(
        &mut b,
        &page,
        downloads.path(),
        (&sample, CASE_ID),
        false,
        "after-bad-files",
    );
    assert_eq!(run.backend, "cpu");
}

/// Cancel stops a segmentation mid-way (the worker is replaced), the page says so, and the next
/// Segment runs to the end. On the CPU fallback, with the 8 flips, so that there is time to cancel.
#[test]
fn cancel_stops_a_segmentation_and_the_next_one_completes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sample = sample_files();
    let server = StaticServer::start(&dist());
    let mut b = Browser::launch(NO_WEBGPU_FLAGS).expect("Chromium");
    let downloads = tempfile::tempdir().unwrap();
    let page = b.new_page(downloads.path()).expect("page");
    page.navigate(&mut b, &format!("{}/", server.url))
        .expect("navigate");
    wait_ready(&page, &mut b);
    page.set_files(&mut b, "file-input", &sample).unwrap();
    page.wait_for(
        &mut b,
        "document.querySelector('[data-testid=status]').textContent === 'ready to segment'",
        Duration::from_secs(60),
    )
    .unwrap();
    page.eval(&mut b, "document.getElementById('tta').checked = true")
        .unwrap();
    page.click(&mut b, "segment").unwrap();
    page.wait_for(
        &mut b,
        "document.querySelector('[data-testid=status]').textContent === 'segmenting…'",
        Duration::from_secs(30),
    )
    .unwrap();
    page.click(&mut b, "cancel").unwrap();
    let status = page
        .wait_for(
            &mut b,
            "(() => { const s = document.querySelector('[data-testid=status]').textContent; \
                      return s === 'cancelled' || s.endsWith('done') || s.startsWith('error:') ? s : ''; })()",
            Duration::from_secs(30),
        )
        .unwrap();
    assert_eq!(status, "cancelled");
    assert!(
        page.eval(&mut b, "result === null").unwrap() == serde_json::json!(true),
        "a result appeared although the run was cancelled"
    );
    // The fresh worker takes the next run to the end.
    let run = segment_files(
        &mut b,
        &page,
        downloads.path(),
        (&sample, CASE_ID),
        false,
        "after-cancel",
    );
    assert_eq!(run.backend, "cpu");
}

/// GPU faults during a segmentation are caught, not shown as a result: a real out-of-memory
/// error (SwiftShader cannot allocate a buffer of its own largest size), then, on the next try,
/// a real loss of the device (destroyed, as a driver reset loses it; the engine traps reading
/// back from it). After each the page starts a fresh engine and segments again: with smaller
/// windows after running out of memory, with the same after losing the device. It says what
/// happened, and matches native with the window it used.
#[test]
fn gpu_faults_are_caught_and_the_page_segments_again() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sample = sample_files();
    let server = StaticServer::start(&dist());
    let mut b = Browser::launch(WEBGPU_FLAGS).expect("Chromium");
    let downloads = tempfile::tempdir().unwrap();
    let page = b.new_page(downloads.path()).expect("page");
    page.navigate(&mut b, &format!("{}/?gpu-fault=oom,lose", server.url))
        .expect("navigate");
    wait_ready(&page, &mut b);
    let run = segment_files(
        &mut b,
        &page,
        downloads.path(),
        (&sample, CASE_ID),
        false,
        "gpu-faults",
    );
    let status = page.text(&mut b, "status").unwrap();
    eprintln!("gpu-fault=oom,lose: {status}");
    assert_eq!(run.backend, "webgpu");
    // Without a fault the sample is one window (the first test).
    assert!(
        run.windows > 1,
        "{} window(s) of {:?} after running out of memory: {status}",
        run.windows,
        run.roi
    );
    let roi = run.roi.map(|r| r.to_string()).join("×");
    let lost = format!("the GPU failed with windows of {roi}: the device was lost");
    let Some((before, after)) = status.split_once(&lost) else {
        panic!("no loss with the windows used at last ({roi}): {status}")
    };
    assert!(
        before.contains("; the last try ")
            && before.contains("the GPU failed with windows of")
            && before.contains(": out of memory; ")
            && after.ends_with("so it was segmented again): done"),
        "{status}"
    );
    let native_dir = tempfile::tempdir().unwrap();
    assert_matches_native(
        &run.download,
        &native_prediction(
            native_dir.path(),
            (&sample, CASE_ID),
            "cpu",
            false,
            Some(run.roi),
        )
        .0,
    );
}

/// The library's own check of a case of four files, the last given as the FLAIR: the page's
/// `check_case` natively (each file read from its bytes under the page's voxel cap).
fn native_check(files: &[PathBuf]) -> Result<(), String> {
    use nvnet::case::{Case, Layout};
    use nvnet::modality::Modality;
    let mut images = Vec::new();
    for (file, m) in files.iter().zip(Modality::DEFAULT_ORDER) {
        let bytes = std::fs::read(file).map_err(|e| e.to_string())?;
        let name = file.file_name().unwrap().to_string_lossy();
        let image = nvnet::nifti::read_bytes_within(&bytes, &name, nvnet::nifti::PAGE_MAX_VOXELS)
            .map_err(|e| e.to_string())?;
        images.push((m, image));
    }
    Case::from_images("check", Layout::Loose, images, None)
        .map(drop)
        .map_err(|e| e.to_string())
}
