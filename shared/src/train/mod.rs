//! Training with the paper's recipe (docs/DESIGN.md §6): data cache, background loading with
//! augmentation, the Adam loop with poly decay, validation by sliding window, crash-safe
//! checkpoints and exact resume.
//!
//! - `config`: every setting of a run (`TrainConfig`; `Default` is the paper's recipe);
//! - `cache`: each case preprocessed once into a float16 file;
//! - `sampling`: the split, each epoch's order, crops and augmentation, prepared on a thread;
//! - `thick_slices`: the augmentation that simulates a thick-slice series resampled to 1 mm;
//! - `checkpoint`: the run's folder, its checkpoint and `metrics.csv`;
//! - `run`: the loop itself and what it reports.
//! - `parallel`: one step split over several devices, gradients summed.
//!
//! Determinism: every random choice is a function of (seed, epoch, sample): the epoch's case
//! order, each sample's crop and augmentation, and the backend RNG (dropout, VAE noise), which is
//! re-seeded at the start of every epoch. So a run resumed from its last checkpoint ends with the
//! same weights as one that was never interrupted (on a deterministic backend such as flex).

mod cache;
mod checkpoint;
mod config;
pub mod parallel;
mod run;
mod sampling;
pub mod thick_slices;

use std::path::PathBuf;

pub use crate::train::parallel::{Batch, DeviceError, StepLosses};
pub use cache::{CacheError, CachedCase, cache_path, cached, fingerprint, read_cached};
pub use checkpoint::{CheckpointError, EpochRow, RunDir, RunState, metrics_csv};
pub use config::{ConfigError, TrainConfig};
pub use run::{Reporter, RunContext, prepare_data, run, validate_case};
pub use sampling::{Split, epoch_batches, sample, split};

/// Why a run stopped or could not start. Causes are `error` fields, not `source`: each message
/// already holds its cause, and error chains would repeat it (as in this module's other errors).
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "nvnet does not train on {0}: its convolution and GroupNorm gradients are written for \
         flex, wgpu and cuda (shared/src/nn/grads.rs)"
    )]
    Backend(&'static str),
    #[error(transparent)]
    Devices(#[from] DeviceError),
    #[error(transparent)]
    Data(#[from] crate::data::case::CaseError),
    #[error("{}: no training cases", .0.display())]
    NoTrainingCases(PathBuf),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Weights(#[from] crate::io::weights::WeightsError),
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("epoch {epoch}, step {step}: {error}")]
    Step {
        epoch: usize,
        step: usize,
        error: DeviceError,
    },
    #[error("epoch {epoch}, step {step}: the loss is {loss}; stopping")]
    LossNotFinite {
        epoch: usize,
        step: usize,
        loss: f64,
    },
    #[error("reading the network's output back: {0}")]
    Readback(String),
}
