//! The reference logits on burn-cuda. Built with `--features cuda`; runs only where there is a
//! GPU (the device machine), never in CI.
#![cfg(feature = "cuda")]

mod common;

use burn::backend::Cuda;
use common::*;
use nvnet::weights;

#[test]
fn monai_weights_give_reference_logits_on_cuda() {
    let device = Default::default();
    for file in ["segresnet_f8/model.pt", "segresnet_f8/model.safetensors"] {
        let loaded = weights::load_file::<Cuda>(&reference(file), None, &device).expect("import");
        let input = load_tensor::<Cuda, 5>("segresnet_f8/input.npy", &device);
        let expected = load_tensor::<Cuda, 5>("segresnet_f8/logits.npy", &device);
        let diff = max_abs_diff(loaded.model.forward(input), expected);
        eprintln!("{file} on cuda: max abs diff {diff:e}");
        assert!(diff <= 1e-3, "{file} on cuda: max abs diff {diff}");
    }
}

#[test]
fn upsample_matches_pytorch_on_cuda() {
    let device = Default::default();
    let input = load_tensor::<Cuda, 5>("upsample/input.npy", &device);
    let expected = load_tensor::<Cuda, 5>("upsample/output.npy", &device);
    let diff = max_abs_diff(nvnet::upsample::upsample_trilinear_x2(input), expected);
    assert!(diff <= 1e-6, "max abs diff {diff}");
}
