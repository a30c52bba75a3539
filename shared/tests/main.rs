//! nvnet's integration tests, one module per file, built as one test binary: built as eight,
//! each instantiated Burn's generic backends (flex, autodiff, wgpu) again at opt-level 3, and
//! their compilation took about 17 of the 44 CPU-minutes of the workspace's own crates
//! (cargo --timings, 2026-12-01).

mod common;
#[cfg(feature = "cuda")]
mod cuda_reference;
mod dicom_reference;
mod inference_reference;
mod learning;
mod matmul_bounds;
mod model_reference;
mod nifti_bad_input;
mod nifti_reference;
mod real_anatomy;
mod registration;
mod skull_strip;
mod volumes;
mod wgpu_reference;

/// Without the `wgpu` feature the wgpu tests are not compiled at all; this says so in the
/// test run's own output (`cargo test -p nvnet` alone does not turn the feature on).
#[cfg(not(feature = "wgpu"))]
#[test]
#[ignore = "the wgpu tests are compiled out: run with --features nvnet/wgpu (scripts/test.sh does)"]
fn wgpu_tests_compiled_out() {}
