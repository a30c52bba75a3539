//! nvnet: NvNet (Myronenko, BraTS 2018) brain-tumour segmentation on Burn.
//!
//! All the math lives here once — the model, the losses, volumes, inference and metrics —
//! and the `nvnet` command-line tool and the web page call it. The modules follow the stages
//! of the work:
//!
//! - `io`: files in and out (NIfTI, weights, PyTorch checkpoints, `.npy`, safe writes);
//! - `data`: cases and their names, labels, preprocessing, phantoms;
//! - `nn`: the network, its losses and its gradients;
//! - `device`: the backends and opening a GPU;
//! - `prepare`: an exam's series brought onto one grid (resampling, rigid registration);
//! - `inference`: sliding-window segmentation and post-processing;
//! - `train`: the training loop, its cache and checkpoints, several devices;
//! - `metrics`: Dice and the Hausdorff distance.

pub mod data;
pub mod device;
pub mod inference;
pub mod io;
pub mod metrics;
pub mod nn;
pub mod prepare;
#[cfg(feature = "train")]
pub mod train;

pub use data::modality::{LabelConvention, Modality, Region};
pub use nn::model::{NvNet, NvNetConfig, TrainOutput, VaeConfig, VaeOutput};
