//! The web page in a real headless Chromium (WebGPU on SwiftShader, or no WebGPU at all), on
//! the page trunk built, served from localhost: the sample case through the file input,
//! Segment, Download, and the downloaded label map against `nvnet predict --weights default`
//! on the same files with the same options.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use nvnet_e2e::cdp::{Browser, NO_WEBGPU_FLAGS, Page, WEBGPU_FLAGS};
use nvnet_e2e::page::{
    CASE_ID, assert_matches_native, native_prediction, native_prediction_with, phantom_files,
    sample_files, segment_files, wait_ready,
};
use nvnet_e2e::server::StaticServer;
use nvnet_e2e::{BASELINE_ENGINE, RELAXED_ENGINE, WITHOUT_RELAXED_SIMD, dist, repo_root};

/// Browsers side by side where the cores allow: the CPU fallback computes in one thread (the
/// page's wasm has one), so two such pages share the two cores; a page with WebGPU runs alone,
/// as SwiftShader uses every core.
static BROWSERS: RwLock<()> = RwLock::new(());

/// A test's turn at the browsers: shared with one other CPU-fallback page, or alone.
enum Turn {
    Shared {
        _guard: RwLockReadGuard<'static, ()>,
    },
    Alone {
        _guard: RwLockWriteGuard<'static, ()>,
    },
}

fn turn(flags: &[&str]) -> Turn {
    if flags == NO_WEBGPU_FLAGS {
        let _guard = BROWSERS.read().unwrap_or_else(|e| e.into_inner());
        Turn::Shared { _guard }
    } else {
        let _guard = BROWSERS.write().unwrap_or_else(|e| e.into_inner());
        Turn::Alone { _guard }
    }
}

/// One test's page: its turn at the browsers, the server of `site`, Chromium with `flags`, its
/// downloads folder, and the page at `/<query>`, ready.
struct Session {
    _turn: Turn,
    server: StaticServer,
    b: Browser,
    downloads: tempfile::TempDir,
    page: Page,
}

fn open(site: &Path, flags: &[&str], query: &str) -> Session {
    open_with(site, flags, query, None)
}

/// As `open`, with `worker_prelude` run in the page's Web Worker before its own script.
fn open_with(site: &Path, flags: &[&str], query: &str, worker_prelude: Option<&str>) -> Session {
    let _turn = turn(flags);
    let server = StaticServer::start(site);
    let mut b = Browser::launch(flags).expect("Chromium");
    b.worker_prelude = worker_prelude.map(str::to_string);
    let downloads = tempfile::tempdir().unwrap();
    let page = b.new_page(downloads.path()).expect("page");
    page.navigate(&mut b, &format!("{}/{query}", server.url))
        .expect("navigate");
    wait_ready(&page, &mut b);
    Session {
        _turn,
        server,
        b,
        downloads,
        page,
    }
}

/// The main path on WebGPU, recording every request from load to download. Without the flips
/// (the flips in the page are the CPU fallback's test, and their arithmetic on a wgpu backend is
/// `flips_match_flex_on_wgpu`).
#[test]
fn webgpu_segments_the_sample_like_native_and_sends_nothing() {
    let sample = sample_files();
    let Session {
        _turn,
        server,
        mut b,
        downloads,
        page,
    } = open(&dist(), WEBGPU_FLAGS, "");
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
    // float16 where the adapter offers it, else float32 and saying why (SwiftShader offers none).
    let f16 = page
        .eval(
            &mut b,
            "navigator.gpu.requestAdapter().then(a => a.features.has('shader-f16'))",
        )
        .unwrap()
        .as_bool()
        .expect("a boolean");
    let precision = page.text(&mut b, "precision").unwrap();
    let expected = if f16 {
        "· float16 (the adapter offers shader-f16)"
    } else {
        "· float32 (the adapter offers no shader-f16)"
    };
    assert_eq!(precision, expected);
    assert!(
        page.text(&mut b, "result-details")
            .unwrap()
            .contains(if f16 { "webgpu (f16)" } else { "webgpu (f32)" })
    );
    // The first pass is followed stage by stage (a slow GPU's bar moves within a pass): one
    // report a stage of the network, and one for the window.
    let steps = page
        .eval(
            &mut b,
            "Number(document.getElementById('progress').dataset.steps)",
        )
        .unwrap()
        .as_f64()
        .unwrap();
    let levels =
        nvnet::io::weights::read_manifest(nvnet::io::weights::default_model().unwrap(), "default")
            .unwrap()
            .config
            .levels();
    assert_eq!(steps as usize, 2 * levels + 1 + 1, "progress reports");
    // The embedded model's post-processing (its manifest) is named, and applied as natively.
    let details = page.text(&mut b, "result-details").unwrap();
    let manifest =
        nvnet::io::weights::read_manifest(nvnet::io::weights::default_model().unwrap(), "default")
            .unwrap();
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
    // cache (what docs/PERFORMANCE.md's page weight assumes). Of its two builds, only the one
    // this browser runs (relaxed SIMD: Chromium has it).
    let fetches = |name: &str| {
        served
            .iter()
            .filter(|(_, url)| url.starts_with(&format!("/{name}")))
            .count()
    };
    let wasm_fetches = fetches(RELAXED_ENGINE[1]);
    assert_eq!(
        wasm_fetches, 1,
        "the wasm was served {wasm_fetches} times: {served:?}"
    );
    assert_eq!(
        fetches(BASELINE_ENGINE[0]) + fetches(BASELINE_ENGINE[1]),
        0,
        "{served:?}"
    );
    // The worker fetched the engine (seen through the worker's own DevTools session).
    assert!(
        b.requests
            .iter()
            .any(|r| r.url.ends_with(RELAXED_ENGINE[1])),
        "the wasm fetch was not recorded: {:?}",
        b.requests
    );

    // The page's weight: what this visit fetched, as a server's gzip would send it (the sample
    // case, fetched only when asked for, apart), against the budget docs/PERFORMANCE.md states.
    let (first_load, files) = first_load_gzip(&dist(), &served);
    eprintln!("first load: {first_load} bytes gzipped: {files:?}");
    assert!(
        first_load <= FIRST_LOAD_BUDGET,
        "the first load is {first_load} bytes gzipped, over its budget of {FIRST_LOAD_BUDGET}: \
         {files:?}"
    );
}

/// What a first visit may download, gzipped: 6 MB.
const FIRST_LOAD_BUDGET: usize = 6_000_000;

/// The distinct files of `site` that the server sent (`served`: method and URL), outside
/// sample/, each with its gzip size (level 6, what static servers use), and their sum.
fn first_load_gzip(site: &Path, served: &[(String, String)]) -> (usize, BTreeMap<String, usize>) {
    use std::io::Write;
    let mut files = BTreeMap::new();
    for (_, url) in served {
        let path = url.split(['?', '#']).next().unwrap_or_default();
        let name = match path.trim_start_matches('/') {
            "" => "index.html",
            name => name,
        };
        if name.starts_with("sample/") || files.contains_key(name) {
            continue;
        }
        let Ok(bytes) = std::fs::read(site.join(name)) else {
            continue; // a request for a file that is not there (the server answered 404)
        };
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        gz.write_all(&bytes).unwrap();
        files.insert(name.to_string(), gz.finish().unwrap().len());
    }
    (files.values().sum(), files)
}

/// Without WebGPU the page says so and segments on the CPU (flex compiled to wasm), here with
/// the 8 flips of test-time augmentation, as native does with them.
#[test]
fn without_webgpu_the_cpu_fallback_segments_like_native() {
    let sample = sample_files();
    let Session {
        _turn,
        server: _server,
        mut b,
        downloads,
        page,
    } = open(&dist(), NO_WEBGPU_FLAGS, "");
    // Every text the progress line shows, recorded as it changes.
    page.eval(
        &mut b,
        "window.progressSeen = []; new MutationObserver(() => window.progressSeen.push(\
         document.getElementById('progress').textContent)).observe(document.getElementById(\
         'progress'), { childList: true, characterData: true, subtree: true }); true",
    )
    .unwrap();
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
    assert_eq!(
        page.text(&mut b, "precision").unwrap(),
        "· wasm relaxed SIMD (fused multiply-add)"
    );
    // Progress counts network passes: the sample fits one window, and its eight flips are
    // eight steps, each shown.
    let seen = page.eval(&mut b, "window.progressSeen").unwrap();
    let passes = 8 * run.windows;
    for done in 1..=passes {
        let step = format!("{done}/{passes} network passes");
        assert!(
            seen.as_array()
                .unwrap()
                .iter()
                .any(|t| t.as_str().is_some_and(|t| t.starts_with(&step))),
            "no progress line \"{step}\": {seen}"
        );
    }
    let notice = page
        .eval(&mut b, "document.getElementById('backend-notice').hidden ? '' : document.getElementById('backend-notice').textContent")
        .unwrap();
    assert!(
        notice.as_str().unwrap_or("").contains("CPU"),
        "no visible notice of the CPU fallback: {notice}"
    );
    // The CPU engine compiled its loops before the first case (`warm_up`), and says so.
    let adapter = page
        .eval(&mut b, "document.getElementById('adapter').textContent")
        .unwrap();
    let adapter = adapter.as_str().unwrap_or("");
    assert!(adapter.contains("its loops compiled in"), "{adapter}");
    eprintln!("cpu: {:.1} s in the page; {adapter}", run.seconds);
    let native_dir = tempfile::tempdir().unwrap();
    assert_matches_native(
        &run.download,
        &native_prediction(native_dir.path(), (&sample, CASE_ID), "cpu", true, None).0,
    );
}

/// A browser without wasm's relaxed SIMD (here Chromium made to look so: `WITHOUT_RELAXED_SIMD`)
/// runs the baseline build of the engine, says so, and segments as native does. Without flips.
#[test]
fn without_relaxed_simd_the_baseline_engine_segments_like_native() {
    let sample = sample_files();
    let Session {
        _turn,
        server: _server,
        mut b,
        downloads,
        page,
    } = open_with(&dist(), NO_WEBGPU_FLAGS, "", Some(WITHOUT_RELAXED_SIMD));
    let run = segment_files(
        &mut b,
        &page,
        downloads.path(),
        (&sample, CASE_ID),
        false,
        "baseline-simd",
    );
    assert_eq!(run.backend, "cpu");
    assert_eq!(
        page.text(&mut b, "precision").unwrap(),
        "· wasm baseline SIMD"
    );
    let from_worker = |name: &str| {
        b.requests
            .iter()
            .any(|r| r.target == "worker" && r.url.ends_with(name))
    };
    assert!(
        from_worker(BASELINE_ENGINE[1]) && !from_worker(RELAXED_ENGINE[1]),
        "{:?}",
        b.requests
    );
    eprintln!("cpu, baseline SIMD: {:.1} s in the page", run.seconds);
    let native_dir = tempfile::tempdir().unwrap();
    assert_matches_native(
        &run.download,
        &native_prediction(native_dir.path(), (&sample, CASE_ID), "cpu", false, None).0,
    );
}

/// A MONAI checkpoint as `torch.save` wrote it (`model.pt`: SegResNet, the bundle's
/// architecture at F=8, random weights; testdata/reference/make.py), loaded in the page with the
/// MONAI BraTS bundle's channel order (the preset button): the page's labels equal
/// `nvnet predict --weights model.pt` with the same order. On the CPU fallback, without flips.
#[test]
fn a_pytorch_checkpoint_loads_in_the_page_and_segments_like_native() {
    let sample = sample_files();
    let checkpoint = repo_root().join("testdata/reference/segresnet_f8/model.pt");
    let Session {
        _turn,
        server: _server,
        mut b,
        downloads,
        page,
    } = open(&dist(), NO_WEBGPU_FLAGS, "");
    page.click(&mut b, "preset-monai-brats").unwrap();
    let order = page
        .eval(
            &mut b,
            "document.getElementById('weights-modalities').value",
        )
        .unwrap();
    assert_eq!(order, "t1ce,t1,t2,flair");
    page.set_files(&mut b, "weights-input", std::slice::from_ref(&checkpoint))
        .unwrap();
    let status = page
        .wait_for(
            &mut b,
            "(() => { const s = document.querySelector('[data-testid=status]').textContent; \
                      return s.startsWith('weights loaded') || s.startsWith('error:') ? s : ''; })()",
            Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(
        status, "weights loaded: model.pt",
        "console: {:?}",
        b.console
    );
    let model = page.text(&mut b, "model").unwrap();
    assert!(model.contains("model.pt"), "{model}");
    let run = segment_files(
        &mut b,
        &page,
        downloads.path(),
        (&sample, CASE_ID),
        false,
        "pt",
    );
    assert_eq!(run.backend, "cpu");
    let native_dir = tempfile::tempdir().unwrap();
    let (native, _) = native_prediction_with(
        native_dir.path(),
        (&sample, CASE_ID),
        "cpu",
        false,
        None,
        &[
            "--weights",
            checkpoint.to_str().unwrap(),
            "--modalities",
            "t1ce,t1,t2,flair",
        ],
    );
    assert_matches_native(&run.download, &native);
}

/// A DICOM exam as a scanner acquires one (a phantom exported by `nvnet synth --head --dicom
/// --moved`: skull and scalp included, four series, one file per slice, every file named
/// IM0001...; the T1 sagittal, the T2 oblique with 3 mm slices, the FLAIR with 5 mm slices, the
/// head moved before each) given to the page as files: its series are chosen by their names,
/// registered to the T1ce, resampled and skull-stripped in the worker, segmented on the CPU
/// fallback, and the download, on the T1ce's grid, equals `nvnet
/// predict` on the exam's folder. The CPU fallback: reading and registering are the same wasm on
/// either backend, and the WebGPU path is the first test's.
#[test]
fn a_moved_dicom_exam_is_registered_and_segments_like_nvnet_predict() {
    let dir = tempfile::tempdir().unwrap();
    let (nifti_root, exams) = (dir.path().join("nifti"), dir.path().join("dicom"));
    let out = std::process::Command::new(nvnet_e2e::nvnet_binary())
        .args([
            "synth", "--head", "--cases", "1", "--seed", "77", "--window", "64,64,48", "--out",
        ])
        .arg(&nifti_root)
        .arg("--dicom")
        .arg(&exams)
        .arg("--moved")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exam = exams.join("Phantom-00000");
    let files = nvnet_e2e::page::exam_files(&exam);
    assert!(files.len() > 4 * 20, "{} files", files.len());
    let Session {
        _turn,
        server: _server,
        mut b,
        downloads,
        page,
    } = open(&dist(), NO_WEBGPU_FLAGS, "");
    // Every status the page shows, kept: the check's stages pass while it runs.
    page.eval(
        &mut b,
        "window.statuses = []; new MutationObserver(() => window.statuses.push(\
           document.querySelector('[data-testid=status]').textContent))\
           .observe(document.querySelector('[data-testid=status]'), \
                    { childList: true, characterData: true, subtree: true }); true",
    )
    .unwrap();
    let run = segment_files(
        &mut b,
        &page,
        downloads.path(),
        (&files, "Phantom-00000"),
        false,
        "dicom",
    );
    assert_eq!(run.backend, "cpu");
    let statuses = page.eval(&mut b, "window.statuses.join(' | ')").unwrap();
    let statuses = statuses.as_str().unwrap_or("");
    for stage in [
        "reading the t1ce, series 2",
        "registering the flair to the t1ce",
        "stripping the skull",
    ] {
        assert!(statuses.contains(stage), "no '{stage}' in {statuses}");
    }
    // The worker segments the case its check prepared (not read, registered and stripped again).
    eprintln!("the moved exam: {:.1} s in the page's segment", run.seconds);
    let check = page.text(&mut b, "check").unwrap_or_default();
    assert!(
        check.contains("t1ce series 2 'T1 MPRAGE POST GD'")
            && check.contains("registered to the T1ce")
            && check.contains("skull stripped: a brain of"),
        "{check}"
    );
    // The quality views: the checkerboard of a registered series with the T1ce, and the T1ce
    // with its skull under the brain mask's outline (cyan, drawn only in that view).
    let options = page
        .eval(
            &mut b,
            "[...document.querySelectorAll('#view-mode option')].filter((o) => !o.disabled).map((o) => o.value).join(',')",
        )
        .unwrap();
    assert_eq!(options, "labels,checkerboard,brain");
    let outline_pixels = |page: &Page, b: &mut Browser| {
        page.eval(
            b,
            "(() => { const c = document.getElementById('view-axial'); \
                      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
                      let n = 0; for (let p = 0; p < d.length; p += 4) \
                        if (d[p] === 0 && d[p + 1] === 230 && d[p + 2] === 255) n++; return n; })()",
        )
        .unwrap()
        .as_u64()
        .unwrap()
    };
    assert_eq!(outline_pixels(&page, &mut b), 0);
    for (mode, outlined) in [("checkerboard", false), ("brain", true)] {
        page.eval(
            &mut b,
            &format!(
                "(() => {{ const s = document.getElementById('view-mode'); s.value = '{mode}'; \
                          s.dispatchEvent(new Event('change')); return s.value; }})()"
            ),
        )
        .unwrap();
        let n = outline_pixels(&page, &mut b);
        assert_eq!(n > 20, outlined, "{mode}: {n} outline pixels");
        // `NVNET_QUALITY_VIEW=DIR` keeps a picture of each view (docs/CLINICAL.md's).
        if let Ok(dir) = std::env::var("NVNET_QUALITY_VIEW") {
            page.screenshot(&mut b, &Path::new(&dir).join(format!("quality-{mode}.png")))
                .unwrap();
        }
    }
    let native_dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(nvnet_e2e::nvnet_binary())
        .args(["predict", "--weights", "default", "--no-tta", "--input"])
        .arg(&exam)
        .arg("--output")
        .arg(native_dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_matches_native(
        &run.download,
        &native_dir.path().join("Phantom-00000.nii.gz"),
    );
    // Each stage of the exam listed with its time, all done.
    assert_stages_done(
        &page,
        &mut b,
        &[
            "reading the t1ce, series 2",
            "registering the flair to the t1ce",
            "resampling onto one 1 mm grid",
            "stripping the skull",
            "segmenting",
            "post-processing, the labels onto the T1ce's own grid",
        ],
    );

    // The viewer on the T1ce's grid (BraTS's orientation: i and j run to the patient's left and
    // back).
    assert_viewer_shows(
        &page,
        &mut b,
        &nvnet::io::nifti::read_path(&run.download).unwrap(),
    );

    // The same exam registered to the FLAIR (5 mm slices): the download on the FLAIR's own
    // grid, as `nvnet predict --reference flair` writes it, and the viewer on that grid too
    // (whose i and j run to the patient's right and front).
    std::fs::remove_file(&run.download).unwrap();
    page.eval(
        &mut b,
        "(() => { const s = document.getElementById('reference'); s.value = 'flair'; \
                  s.dispatchEvent(new Event('change')); return s.value; })()",
    )
    .unwrap();
    let status = nvnet_e2e::page::wait_checked(&page, &mut b, Duration::from_secs(120)).unwrap();
    assert_eq!(status, "ready to segment");
    page.click(&mut b, "segment").unwrap();
    nvnet_e2e::page::wait_done(&page, &mut b, Duration::from_secs(600));
    let on_flair = nvnet_e2e::page::download(&page, &mut b, downloads.path(), "Phantom-00000");
    let native_flair = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(nvnet_e2e::nvnet_binary())
        .args([
            "predict",
            "--weights",
            "default",
            "--no-tta",
            "--reference",
            "flair",
        ])
        .arg("--input")
        .arg(&exam)
        .arg("--output")
        .arg(native_flair.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let expected = native_flair.path().join("Phantom-00000.nii.gz");
    assert_matches_native(&on_flair, &expected);
    let flair_grid = nvnet::io::nifti::read_path(&expected).unwrap();
    assert_eq!(
        flair_grid.geometry.spacing()[2],
        5.0,
        "not the 5 mm FLAIR's grid"
    );
    let details = page.text(&mut b, "result-details").unwrap_or_default();
    assert!(
        details.contains("Shown on the FLAIR's own grid") && details.contains("× 5.00 mm"),
        "{details}"
    );
    assert_stages_done(
        &page,
        &mut b,
        &[
            "registering the t1ce to the flair",
            "resampling onto one 1 mm grid",
            "segmenting",
            "post-processing, the labels onto the FLAIR's own grid",
        ],
    );
    assert_viewer_shows(&page, &mut b, &flair_grid);
}

/// The page's list of stages: every stage done (✓, its time given), these among them, in order.
fn assert_stages_done(page: &Page, b: &mut Browser, expected: &[&str]) {
    let items = page
        .eval(
            b,
            "[...document.querySelectorAll('#stages li')].map((li) => li.className + ': ' + li.textContent)",
        )
        .unwrap();
    let items: Vec<String> = serde_json::from_value(items).unwrap();
    assert!(
        items
            .iter()
            .all(|i| i.starts_with("done: ") && i.contains(" s")),
        "{items:#?}"
    );
    let mut at = 0;
    for stage in expected {
        let found = items[at..].iter().position(|i| i.contains(stage));
        let Some(n) = found else {
            panic!("no '{stage}' after item {at} in {items:#?}");
        };
        at += n + 1;
    }
}

/// The viewer shows `labels`' grid: its axial view is that grid's slice nearest the body's axial
/// plane, drawn as `www/viewer.js` says (the patient's right on the left, anterior up), each
/// label where the label map has it.
fn assert_viewer_shows(page: &Page, b: &mut Browser, labels: &nvnet::io::nifti::Image) {
    let g = &labels.geometry;
    // For each world axis, the grid axis nearest to it and whether it runs the same way (the
    // grids of this test lie within 15° of the world's axes: the nearest axis is unambiguous).
    let axes: Vec<(usize, bool)> = (0..3)
        .map(|w| {
            let d = (0..3)
                .max_by(|&a, &c| g.affine[w][a].abs().total_cmp(&g.affine[w][c].abs()))
                .unwrap();
            (d, g.affine[w][d] > 0.0)
        })
        .collect();
    let extent: Vec<usize> = axes.iter().map(|&(d, _)| g.dims[d]).collect();
    let shown = page
        .eval(
            b,
            "(() => { const m = document.getElementById('view-mode'); m.value = 'labels'; \
                      m.dispatchEvent(new Event('change')); \
                      const o = document.getElementById('opacity'); o.value = '1'; \
                      o.dispatchEvent(new Event('input')); \
                      const c = document.getElementById('view-axial'); \
                      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
                      const colours = { '230,40,40': 1, '40,190,60': 2, '255,220,0': 4 }; \
                      const labels = []; \
                      for (let p = 0; p < d.length; p += 4) \
                        labels.push(colours[`${d[p]},${d[p + 1]},${d[p + 2]}`] || 0); \
                      return { extent: viewer.o.extent, cursor: viewer.cursor, \
                               width: c.width, height: c.height, labels }; })()",
        )
        .unwrap();
    let seen: Vec<usize> = serde_json::from_value(shown["extent"].clone()).unwrap();
    assert_eq!(seen, extent, "the viewer's extent along x, y, z");
    let cursor: Vec<usize> = serde_json::from_value(shown["cursor"].clone()).unwrap();
    let (w, h) = (extent[0], extent[1]);
    assert_eq!(
        (shown["width"].as_u64(), shown["height"].as_u64()),
        (Some(w as u64), Some(h as u64))
    );
    let pixels: Vec<u8> = serde_json::from_value(shown["labels"].clone()).unwrap();
    // The crosshair's row and column are drawn over: left out.
    let (cx, cy) = (w - 1 - cursor[0], h - 1 - cursor[1]);
    let mut compared = [0usize; 2];
    for y in (0..h).filter(|&y| y != cy) {
        for x in (0..w).filter(|&x| x != cx) {
            let u = [w - 1 - x, h - 1 - y, cursor[2]];
            let mut v = [0usize; 3];
            for (world, &(d, same)) in axes.iter().enumerate() {
                v[d] = if same {
                    u[world]
                } else {
                    g.dims[d] - 1 - u[world]
                };
            }
            let label = labels.at(v[0], v[1], v[2]) as u8;
            assert_eq!(pixels[y * w + x], label, "pixel ({x}, {y}), voxel {v:?}");
            compared[(label != 0) as usize] += 1;
        }
    }
    assert!(
        compared[1] > 20,
        "only {} tumour pixels in the axial view",
        compared[1]
    );
}

/// WebGPU that does not answer in time (here within a millisecond; a hung driver never does) is
/// given up for the CPU, with a notice that says why; the page is then ready for a case.
#[test]
fn webgpu_that_does_not_answer_in_time_gives_way_to_the_cpu() {
    let Session {
        _turn,
        server: _server,
        mut b,
        downloads: _downloads,
        page,
    } = open(&dist(), WEBGPU_FLAGS, "?webgpu-timeout=0.001");
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

/// With the adapter's limits capped so low that a case needs windows along each axis (8 or
/// more), the page still segments, and matches native with the same window. A 48³ phantom, not
/// the sample: 8 windows of 32³ where the sample takes 18.
#[test]
fn capped_gpu_limits_use_many_windows_and_still_match_native() {
    let case = tempfile::tempdir().unwrap();
    let phantom = phantom_files(case.path(), "48,48,48", 1);
    // 1 MiB: a window of 8 filters × 32,768 voxels.
    let Session {
        _turn,
        server: _server,
        mut b,
        downloads,
        page,
    } = open(
        &dist(),
        WEBGPU_FLAGS,
        "?max-binding=1048576&max-buffer=1048576",
    );
    let run = segment_files(
        &mut b,
        &page,
        downloads.path(),
        (&phantom, CASE_ID),
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
            (&phantom, CASE_ID),
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
/// so this runs on the CPU fallback: a WebGPU engine would add its kernel compiling on
/// SwiftShader and test nothing more (the WebGPU segmentation is the first test's).
#[test]
fn bad_files_give_clear_errors_and_the_page_keeps_working() {
    let sample = sample_files();
    let Session {
        _turn,
        server: _server,
        mut b,
        downloads,
        page,
    } = open(&dist(), NO_WEBGPU_FLAGS, "");
    let bad_dir = repo_root().join("testdata/bad");
    let mut bad: Vec<PathBuf> = std::fs::read_dir(&bad_dir)
        .expect("testdata/bad")
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.is_file()
                && nvnet::data::case::nifti_stem(&p.file_name().unwrap().to_string_lossy())
                    .is_some()
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
        let status = nvnet_e2e::page::wait_checked(&page, &mut b, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
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
    let sample = sample_files();
    let Session {
        _turn,
        server: _server,
        mut b,
        downloads,
        page,
    } = open(&dist(), NO_WEBGPU_FLAGS, "");
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
/// happened, and matches native with the window it used. A 48³ phantom, not the sample: the
/// windows of a quarter of the memory are fewer and smaller.
#[test]
fn gpu_faults_are_caught_and_the_page_segments_again() {
    let case = tempfile::tempdir().unwrap();
    let phantom = phantom_files(case.path(), "48,48,48", 2);
    let Session {
        _turn,
        server: _server,
        mut b,
        downloads,
        page,
    } = open(&dist(), WEBGPU_FLAGS, "?gpu-fault=oom,lose");
    let run = segment_files(
        &mut b,
        &page,
        downloads.path(),
        (&phantom, CASE_ID),
        false,
        "gpu-faults",
    );
    let status = page.text(&mut b, "status").unwrap();
    eprintln!("gpu-fault=oom,lose: {status}");
    assert_eq!(run.backend, "webgpu");
    // Without a fault the case is one window (it is smaller than the sample, which is one).
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
            (&phantom, CASE_ID),
            "cpu",
            false,
            Some(run.roi),
        )
        .0,
    );
}

/// The library's own check of a case of four files, the last given as the FLAIR: the page's
/// `check_case` natively (each file read from its bytes under the page's voxel cap; files on
/// grids of their own registered to the T1ce, as the page does).
fn native_check(files: &[PathBuf]) -> Result<(), String> {
    use nvnet::data::case::Layout;
    use nvnet::data::modality::Modality;
    use nvnet::prepare::{Steps, prepare_images};
    let mut images = Vec::new();
    for (file, m) in files.iter().zip(Modality::DEFAULT_ORDER) {
        let bytes = std::fs::read(file).map_err(|e| e.to_string())?;
        let name = file.file_name().unwrap().to_string_lossy();
        let image =
            nvnet::io::nifti::read_bytes_within(&bytes, &name, nvnet::io::nifti::PAGE_MAX_VOXELS)
                .map_err(|e| e.to_string())?;
        images.push((m, image));
    }
    prepare_images("check", Layout::Loose, images, None, Steps::default())
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The service worker keeps one build of the page, whole: what it caches is byte for byte the
/// build its sw.js names; half a deployment (the new sw.js and glue beside the old wasm) is not
/// installed and the cached build stays; a whole rebuild replaces it once the old page is
/// closed; other apps' caches on the origin are left alone. (The old worker could cache a new
/// nvnet-web.js beside an old wasm, and deleted every cache of the origin.)
#[test]
fn the_offline_copy_is_one_build_whole_and_a_rebuild_replaces_it_whole() {
    let site = tempfile::tempdir().unwrap();
    let site = site.path();
    copy_dir(&dist(), site);
    let Session {
        _turn,
        server,
        mut b,
        downloads,
        page,
    } = open(site, NO_WEBGPU_FLAGS, "");
    let controlled = "navigator.serviceWorker.controller ? 'yes' : ''";
    page.wait_for(&mut b, controlled, Duration::from_secs(60))
        .expect("the service worker takes the page");
    // The worker's script came with the page's policy (a worker does not inherit the meta tag).
    let csp = page
        .eval(
            &mut b,
            "fetch('worker.js').then((r) => r.headers.get('content-security-policy'))",
        )
        .unwrap();
    assert!(
        csp.as_str()
            .is_some_and(|p| p.contains("connect-src 'self'")),
        "worker.js came without the page's CSP: {csp}"
    );
    let a = build_of(site);
    assert_eq!(
        offline_copy(&page, &mut b),
        (vec![format!("nvnet-{a}")], hashes(site))
    );
    page.eval(&mut b, "caches.open('other-app').then(() => true)")
        .unwrap();

    // Half a deployment: the new service worker and glue, the old wasm still in place.
    let wasm = RELAXED_ENGINE[1];
    let old_wasm = std::fs::read(site.join(wasm)).unwrap();
    let old_hashes = hashes(site);
    rebuild(site);
    let new_wasm = std::fs::read(site.join(wasm)).unwrap();
    std::fs::write(site.join(wasm), &old_wasm).unwrap();
    let b_build = build_of(site);
    assert_ne!(a, b_build);
    assert_ne!(update(&page, &mut b), "installed");
    let (keys, cached) = offline_copy(&page, &mut b);
    assert_eq!(keys, [format!("nvnet-{a}"), "other-app".into()]);
    assert_eq!(cached, old_hashes, "the cached build changed");

    // The whole rebuild: installed now, in use once the old page is gone. With other browsers
    // running in parallel the new worker can end 'redundant' and install at the next update,
    // as a browser would update at the next visit: up to three tries, each said in the log.
    std::fs::write(site.join(wasm), &new_wasm).unwrap();
    let mut tries = vec![update(&page, &mut b)];
    while tries.last().is_some_and(|t| t == "redundant") && tries.len() < 3 {
        eprintln!("the whole rebuild's worker ended redundant; updating again");
        tries.push(update(&page, &mut b));
    }
    assert_eq!(
        tries.last().map(String::as_str),
        Some("installed"),
        "{tries:?}"
    );
    page.close(&mut b).expect("close the page");
    let page = b.new_page(downloads.path()).expect("page");
    page.navigate(&mut b, &format!("{}/", server.url))
        .expect("navigate");
    wait_ready(&page, &mut b);
    page.wait_for(
        &mut b,
        &format!("caches.keys().then((k) => !k.includes('nvnet-{a}'))"),
        Duration::from_secs(60),
    )
    .expect("the old build's cache goes");
    let (keys, cached) = offline_copy(&page, &mut b);
    assert_eq!(keys, [format!("nvnet-{b_build}"), "other-app".into()]);
    assert_eq!(cached, hashes(site));
    page.close(&mut b).expect("close the page");
}

/// The files the service worker caches in Chromium: its ASSETS, of the engine's two builds the
/// relaxed-SIMD one.
const OFFLINE_FILES: [&str; 8] = [
    "index.html",
    "style.css",
    "app.js",
    "viewer.js",
    "worker.js",
    "engine.js",
    RELAXED_ENGINE[0],
    RELAXED_ENGINE[1],
];

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Each offline file of a site and its SHA-256.
fn hashes(site: &Path) -> BTreeMap<String, String> {
    OFFLINE_FILES
        .iter()
        .map(|f| {
            (
                f.to_string(),
                sha256_hex(&std::fs::read(site.join(f)).unwrap()),
            )
        })
        .collect()
}

/// The build a site's sw.js names.
fn build_of(site: &Path) -> String {
    let sw = std::fs::read_to_string(site.join("sw.js")).unwrap();
    let line = sw
        .lines()
        .find(|l| l.starts_with("const BUILD = '"))
        .expect("a BUILD line");
    let build = line
        .trim_start_matches("const BUILD = '")
        .trim_end_matches("';");
    assert_ne!(build, "unstamped", "the build did not stamp sw.js");
    build.to_string()
}

/// The origin's cache names, and each file in nvnet's cache(s) with its SHA-256.
fn offline_copy(page: &Page, b: &mut Browser) -> (Vec<String>, BTreeMap<String, String>) {
    let v = page
        .eval(
            b,
            "(async () => {
               const hex = async (r) => Array.from(new Uint8Array(await crypto.subtle.digest(
                 'SHA-256', await r.arrayBuffer())), (x) => x.toString(16).padStart(2, '0')).join('');
               const keys = (await caches.keys()).sort();
               const files = {};
               for (const k of keys.filter((k) => k.startsWith('nvnet-'))) {
                 const c = await caches.open(k);
                 for (const req of await c.keys()) {
                   files[new URL(req.url).pathname.slice(1)] = await hex(await c.match(req));
                 }
               }
               return { keys, files };
             })()",
        )
        .unwrap();
    let keys = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let files = v["files"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, h)| (k.clone(), h.as_str().unwrap().to_string()))
        .collect();
    (keys, files)
}

/// Ask the browser to look for a new service worker: "installed" when one installed.
fn update(page: &Page, b: &mut Browser) -> String {
    page.eval(
        b,
        "(async () => {
           const r = await navigator.serviceWorker.getRegistration();
           try { await r.update(); } catch (e) { return 'update failed: ' + e.message; }
           const w = r.installing || r.waiting;
           if (!w) return 'no new worker';
           return await new Promise((resolve) => {
             const check = () => {
               if (['installed', 'activating', 'activated'].includes(w.state)) resolve('installed');
               if (w.state === 'redundant') resolve('redundant');
             };
             w.addEventListener('statechange', check);
             check();
           });
         })()",
    )
    .unwrap()
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// What a rebuild changes: both builds of the engine (a custom section added to each wasm,
/// which leaves it a valid module) and their glue; then the build's own stamping of sw.js.
fn rebuild(site: &Path) {
    for [glue, wasm] in [BASELINE_ENGINE, RELAXED_ENGINE] {
        let mut bytes = std::fs::read(site.join(wasm)).unwrap();
        // Custom section (id 0), 12 bytes: the name "test" (length 4) and "rebuilt".
        bytes.extend_from_slice(&[0, 12, 4]);
        bytes.extend_from_slice(b"testrebuilt");
        std::fs::write(site.join(wasm), bytes).unwrap();
        let mut text = std::fs::read_to_string(site.join(glue)).unwrap();
        text.push_str("\n// rebuilt\n");
        std::fs::write(site.join(glue), text).unwrap();
    }
    let stamped = std::process::Command::new("bash")
        .arg(repo_root().join("scripts/stamp-sw.sh"))
        .arg(site)
        .status()
        .unwrap();
    assert!(stamped.success());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The page's Content-Security-Policy is one policy: its meta tag, the `_headers` file that
/// static hosts read (and the tests' server sends, so the worker runs under it here), and
/// `trunk serve`'s headers.
#[test]
fn the_pages_policy_is_the_same_in_its_meta_tag_its_headers_file_and_trunk_serve() {
    let root = repo_root();
    let html = std::fs::read_to_string(root.join("www/index.html")).unwrap();
    let meta = html
        .split("http-equiv=\"Content-Security-Policy\"")
        .nth(1)
        .and_then(|rest| rest.split("content=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .expect("the page's CSP meta tag");
    let headers = std::fs::read_to_string(root.join("www/_headers")).unwrap();
    assert!(
        headers.contains(&format!("Content-Security-Policy: {meta}\n")),
        "www/_headers: {headers}"
    );
    let trunk = std::fs::read_to_string(root.join("Trunk.toml")).unwrap();
    assert!(
        trunk.contains(&format!("\"Content-Security-Policy\" = \"{meta}\"")),
        "Trunk.toml"
    );
    // And the built site carries the file.
    assert_eq!(
        std::fs::read_to_string(dist().join("_headers")).unwrap(),
        headers
    );
}
