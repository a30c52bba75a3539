//! The network (NvNet: encoder, decoder, VAE branch), its losses, its architecture summary,
//! and the gradients nvnet computes itself where Burn's are slow or wrong (docs/DESIGN.md).

#[cfg(feature = "autodiff")]
pub mod conv_grad;
#[cfg(all(feature = "flex", feature = "autodiff", not(target_arch = "wasm32")))]
pub mod cpu_grad;
// nvnet's own CPU kernels: where, shared/build.rs says (`direct_kernels`).
#[cfg(direct_kernels)]
pub mod direct_conv;
#[cfg(all(feature = "flex", any(feature = "autodiff", target_arch = "wasm32")))]
pub mod flex_infer;
#[cfg(feature = "autodiff")]
#[cfg_attr(
    not(all(any(feature = "wgpu", feature = "cuda"), not(test))),
    allow(dead_code)
)]
pub mod grads;
pub mod info;
#[cfg(direct_kernels)]
pub(crate) mod layout;
pub mod loss;
pub mod model;
#[cfg(feature = "autodiff")]
// Without a GPU backend (and in the unit tests' build: `grads`) its operation has no caller.
#[cfg_attr(
    not(all(any(feature = "wgpu", feature = "cuda"), not(test))),
    allow(dead_code)
)]
pub mod norm_grad;
#[cfg(any(feature = "autodiff", target_arch = "wasm32"))]
pub(crate) mod parallel;
// The page's 1×1×1 convolutions (wasm); natively only its test runs it.
#[cfg(direct_kernels)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) mod pointwise_conv;
pub mod precision;
pub(crate) mod typecast;
pub mod upsample;
