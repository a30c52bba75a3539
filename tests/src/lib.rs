//! Helpers of nvnet's end-to-end tests: a static file server for the built page, a headless
//! Chromium driven through the DevTools protocol (CDP), and paths to what the build produced.

pub mod cdp;
pub mod page;
pub mod server;

use std::path::{Path, PathBuf};

/// The repository root: the parent of `tests/`, where the test binaries run (cargo test and
/// scripts/test.sh run them there). Not the compile-time `CARGO_MANIFEST_DIR`: that names the
/// clone that built the binary, which a warm target directory keeps for a fresh clone elsewhere
/// (its page and files would be tested instead of this one's).
pub fn repo_root() -> PathBuf {
    let here = std::env::current_dir().expect("the working directory");
    assert!(
        here.join("Cargo.toml").exists() && here.join("src/cdp.rs").exists(),
        "{}: run the end-to-end tests from tests/ (cargo test does)",
        here.display()
    );
    here.parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// The `nvnet` binary cargo built beside this test (`cargo test --workspace` builds it).
pub fn nvnet_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/<test> → target/<profile>/nvnet
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = dir.join(format!("nvnet{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p nvnet-cli` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// The engine's two builds, glue and wasm (www/engine.js picks one per browser): baseline
/// wasm SIMD, and relaxed SIMD, which Chromium here has, so its pages run that one.
pub const BASELINE_ENGINE: [&str; 2] = ["nvnet-web.js", "nvnet-web_bg.wasm"];
pub const RELAXED_ENGINE: [&str; 2] = ["nvnet-web-relaxed.js", "nvnet-web-relaxed_bg.wasm"];

/// A worker prelude (`Browser::worker_prelude`) that makes Chromium's worker look like a browser
/// without relaxed SIMD: its `WebAssembly.validate` refuses every module, so it refuses the
/// probe of www/engine.js and the page runs the baseline build.
pub const WITHOUT_RELAXED_SIMD: &str = "WebAssembly.validate = () => false;";

/// The page built by `trunk build --release` (scripts/test.sh builds it before the tests).
pub fn dist() -> PathBuf {
    let dist = repo_root().join("dist");
    assert!(
        dist.join("index.html").exists()
            && [BASELINE_ENGINE, RELAXED_ENGINE]
                .iter()
                .flatten()
                .all(|f| dist.join(f).exists()),
        "{}: the page is not built; run `trunk build --release` at the repository root",
        dist.display()
    );
    dist
}

/// Where the tests keep what a person may want to look at (screenshots): `target/e2e`.
pub fn artifacts() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("e2e");
    std::fs::create_dir_all(&dir).expect("artifacts folder");
    dir
}
