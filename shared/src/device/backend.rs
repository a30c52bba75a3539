//! The backends nvnet runs on, chosen by cargo features. The model is generic; these are the
//! concrete types the binaries instantiate.

/// Burn's pure-Rust CPU backend (`--device cpu`).
#[cfg(feature = "flex")]
pub type Cpu = burn::backend::Flex;

/// wgpu on Vulkan/Metal/DX12 (`--device wgpu`).
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu;

/// CUDA through cubecl (`--device cuda`), loaded at run time.
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;

/// WebGPU in the browser.
#[cfg(feature = "webgpu")]
pub type WebGpu = burn::backend::WebGpu;
