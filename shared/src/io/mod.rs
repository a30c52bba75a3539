//! Files in and out: volumes (NIfTI, DICOM exams), the network's weights and PyTorch checkpoints, `.npy`
//! arrays, and writing a file so that a failure leaves what was there before.

pub mod dicom;
pub mod fsutil;
pub mod nifti;
pub mod npy;
pub mod torch;
pub mod weights;
