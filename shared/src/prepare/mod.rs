//! From an exam to a case: the series of a scanner's exam, each on its own grid and with the
//! head moved between them, brought onto one grid.
//!
//! - `motion`: a rigid motion in world space;
//! - `resample`: a volume sampled anywhere in world space, and resampled onto another grid;
//! - `register`: the rigid motion that lays one series on another (normalised mutual
//!   information, coarse to fine);
//! - `case`: four series made one case on one grid, and the way back to the reference's grid.

pub mod case;
pub mod motion;
pub mod register;
pub mod resample;

pub use case::{
    Prepared, When, load_files, nearest, prepare, prepare_images, prepared_grid, same_grid,
};
pub use motion::Rigid;
pub use register::{Options, Registration, register};
pub use resample::{Volume, resample};
