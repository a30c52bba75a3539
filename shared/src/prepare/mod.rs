//! From an exam to a case: the series of a scanner's exam, each on its own grid and with the
//! head moved between them, brought onto one grid.
//!
//! - `motion`: a rigid motion in world space;
//! - `resample`: a volume sampled anywhere in world space, and resampled onto another grid;
//! - `register`: the rigid motion that lays one series on another (normalised mutual
//!   information, coarse to fine);
//! - `skull`: the brain's mask (skull stripping), and whether a series is stripped already;
//! - `morphology`: erosion, dilation, closing, connected parts, holes, by exact distances;
//! - `case`: four series made one case on one grid, and the way back to the reference's grid.

pub mod case;
pub mod morphology;
pub mod motion;
pub mod register;
pub mod resample;
pub mod skull;

pub use case::{
    Prepared, Skull, Stage, Steps, Stripping, When, load_files, nearest, prepare, prepare_images,
    prepare_images_reporting, prepared_grid, same_grid,
};
pub use motion::Rigid;
pub use register::{Options, Registration, register};
pub use resample::{Volume, resample};
