//! The same reference logits on the wgpu backend (Vulkan; llvmpipe on machines without a GPU).
#![cfg(feature = "wgpu")]

mod common;

use burn::backend::Wgpu;
use common::*;
use nvnet::weights;

#[test]
fn monai_weights_give_reference_logits_on_wgpu() {
    let device = Default::default();
    for file in ["segresnet_f8/model.pt", "segresnet_f8/model.safetensors"] {
        let loaded = weights::load_file::<Wgpu>(&reference(file), None, &device).expect("import");
        let input = load_tensor::<Wgpu, 5>("segresnet_f8/input.npy", &device);
        let expected = load_tensor::<Wgpu, 5>("segresnet_f8/logits.npy", &device);
        let diff = max_abs_diff(loaded.model.forward(input), expected);
        assert!(diff <= 1e-3, "{file} on wgpu: max abs diff {diff}");
        eprintln!("{file} on wgpu: max abs diff {diff:e}");
    }
}

#[test]
fn upsample_matches_pytorch_on_wgpu() {
    let device = Default::default();
    let input = load_tensor::<Wgpu, 5>("upsample/input.npy", &device);
    let expected = load_tensor::<Wgpu, 5>("upsample/output.npy", &device);
    let diff = max_abs_diff(nvnet::upsample::upsample_trilinear_x2(input), expected);
    assert!(diff <= 1e-6, "max abs diff {diff}");
}
