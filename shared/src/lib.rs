//! nvnet: NvNet (Myronenko, BraTS 2018) brain-tumour segmentation on Burn.
//!
//! All the math lives here once — the model, the losses, volumes, inference and metrics —
//! and the `nvnet` command-line tool and the web page call it.

pub mod backend;
pub mod fsutil;
pub mod info;
pub mod loss;
pub mod modality;
pub mod model;
pub mod nifti;
pub mod npy;
pub mod upsample;
pub mod weights;

pub use modality::{LabelConvention, Modality, Region};
pub use model::{NvNet, NvNetConfig, TrainOutput, VaeConfig, VaeOutput};
