//! What every test of the `nvnet` binary needs: running it, its output, test data paths.
#![allow(dead_code)] // each test file uses its own part of this

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Run the `nvnet` binary built for these tests and wait for it.
pub fn nvnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nvnet"))
        .args(args)
        .output()
        .expect("run nvnet")
}

/// Start the `nvnet` binary with its output captured (`wait_with_output` collects it).
pub fn nvnet_start(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_nvnet"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nvnet")
}

/// Standard output then standard error, as one text for assertions and failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A path in the repository's `testdata/`, from the package's folder, where test binaries run
/// (cargo test and scripts/test.sh run them there): the compile-time `CARGO_MANIFEST_DIR` names
/// the clone that built the binary, which a warm target directory keeps for a fresh clone
/// elsewhere.
pub fn testdata(path: &str) -> PathBuf {
    PathBuf::from("../testdata").join(path)
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `nvnet synth` into `root`: `cases` phantoms on a grid `shape` ("40,40,32") from `seed`.
pub fn synth(root: &Path, cases: usize, shape: &str, seed: u64) {
    let (cases, seed) = (cases.to_string(), seed.to_string());
    let out = nvnet(&[
        "synth",
        "--out",
        s(root),
        "--cases",
        &cases,
        "--shape",
        shape,
        "--seed",
        &seed,
    ]);
    assert!(out.status.success(), "nvnet synth: {}", text(&out));
}

/// Make a named pipe (which a reader that opened it would wait on for ever).
#[cfg(unix)]
pub fn mkfifo(path: &Path) {
    let made = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo {}", path.display());
}
