//! nvnet's integration tests, one module per file, built as one test binary: built as eight,
//! each instantiated Burn's generic backends (flex, autodiff, wgpu) again at opt-level 3, and
//! their compilation took about 17 of the 44 CPU-minutes of the workspace's own crates
//! (cargo --timings, 2026-12-01).

mod common;
#[cfg(feature = "cuda")]
mod cuda_reference;
mod inference_reference;
mod learning;
mod matmul_bounds;
mod model_reference;
mod nifti_bad_input;
mod nifti_reference;
mod volumes;
mod wgpu_reference;
