//! nvnet: NvNet (Myronenko, BraTS 2018) brain-tumour segmentation on Burn.
//!
//! All the math lives here once — the model, the losses, volumes, inference and metrics —
//! and the `nvnet` command-line tool and the web page call it.

pub mod backend;
pub mod case;
#[cfg(feature = "autodiff")]
pub mod conv_grad;
#[cfg(all(feature = "flex", feature = "autodiff", not(target_arch = "wasm32")))]
pub mod cpu_grad;
pub mod fsutil;
pub mod gpu;
#[cfg(feature = "autodiff")]
#[cfg_attr(
    not(all(any(feature = "wgpu", feature = "cuda"), not(test))),
    allow(dead_code)
)]
pub mod grads;
pub mod inference;
pub mod info;
pub mod labels;
pub mod loss;
pub mod metrics;
pub mod modality;
pub mod model;
pub mod names;
pub mod nifti;
#[cfg(feature = "autodiff")]
// Without a GPU backend (and in the unit tests' build: `grads`) its operation has no caller.
#[cfg_attr(
    not(all(any(feature = "wgpu", feature = "cuda"), not(test))),
    allow(dead_code)
)]
pub mod norm_grad;
pub mod npy;
#[cfg(feature = "train")]
pub mod parallel;
pub mod postprocess;
pub mod preprocess;
pub mod rng;
#[cfg(feature = "synth")]
pub mod synth;
#[cfg(feature = "pytorch")]
pub mod torch_checkpoint;
#[cfg(feature = "train")]
pub mod train;
pub mod upsample;
pub mod volume;
pub mod weights;

pub use modality::{LabelConvention, Modality, Region};
pub use model::{NvNet, NvNetConfig, TrainOutput, VaeConfig, VaeOutput};
