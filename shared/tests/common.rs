//! Helpers shared by the library's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::prelude::*;
use burn::tensor::TensorData;

/// The repository's copy of `../shared/reference`.
pub fn reference(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/reference")
        .join(path)
}

pub fn load_tensor<B: Backend, const D: usize>(path: &str, device: &B::Device) -> Tensor<B, D> {
    let npy = nvnet::npy::read(reference(path)).expect("reference array");
    Tensor::from_data(TensorData::new(npy.to_f32(), npy.shape.clone()), device)
}

pub fn max_abs_diff<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b).abs().max().into_scalar().elem::<f32>()
}

pub fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_scalar().elem::<f64>()
}

/// Import a reference MONAI checkpoint, run the reference input, return the max abs difference
/// to MONAI's logits.
pub fn reference_logits_diff<B: Backend>(file: &str, device: &B::Device) -> f32 {
    let loaded = nvnet::weights::load_file::<B>(&reference(file), None, device).expect("import");
    let input = load_tensor::<B, 5>("segresnet_f8/input.npy", device);
    let expected = load_tensor::<B, 5>("segresnet_f8/logits.npy", device);
    max_abs_diff(loaded.model.forward(input), expected)
}

/// Max abs difference of the trilinear ×2 upsampling to PyTorch's.
pub fn upsample_diff<B: Backend>(device: &B::Device) -> f32 {
    let input = load_tensor::<B, 5>("upsample/input.npy", device);
    let expected = load_tensor::<B, 5>("upsample/output.npy", device);
    max_abs_diff(nvnet::upsample::upsample_trilinear_x2(input), expected)
}
