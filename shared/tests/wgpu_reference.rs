//! The same reference logits on the wgpu backend (Vulkan; llvmpipe on machines without a GPU).
#![cfg(feature = "wgpu")]

mod common;

use burn::backend::Wgpu;
use common::*;

#[test]
fn monai_weights_give_reference_logits_on_wgpu() {
    let device = Default::default();
    for file in ["segresnet_f8/model.pt", "segresnet_f8/model.safetensors"] {
        let diff = reference_logits_diff::<Wgpu>(file, &device);
        eprintln!("{file} on wgpu: max abs diff {diff:e}");
        assert!(diff <= 1e-3, "{file} on wgpu: max abs diff {diff}");
    }
}

#[test]
fn upsample_matches_pytorch_on_wgpu() {
    let diff = upsample_diff::<Wgpu>(&Default::default());
    assert!(diff <= 1e-6, "max abs diff {diff}");
}
