//! The domain's data: a case's files and names, a scanner's exam and its series, modalities and label conventions, label maps
//! and regions, intensity preprocessing, voxel orders, and the phantoms the tests segment.

pub mod case;
pub mod exam;
pub mod labels;
pub mod modality;
pub mod names;
pub mod preprocess;
pub mod rng;
#[cfg(feature = "synth")]
pub mod synth;
pub mod volume;
