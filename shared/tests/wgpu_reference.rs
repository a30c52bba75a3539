//! The same reference logits on the wgpu backend (Vulkan; llvmpipe on machines without a GPU).
#![cfg(feature = "wgpu")]

use crate::common::*;
use burn::backend::Wgpu;
use burn::prelude::*;
use burn::tensor::TensorData;

#[test]
fn monai_weights_give_reference_logits_on_wgpu() {
    let device = Default::default();
    for file in ["segresnet_f8/model.pt", "segresnet_f8/model.safetensors"] {
        let diff = reference_logits_diff::<Wgpu>(file, &device);
        eprintln!("{file} on wgpu: max abs diff {diff:e}");
        // The reference's own rule (testdata/reference/README.md); 1.3e-6 seen on llvmpipe.
        assert!(diff <= 1e-4, "{file} on wgpu: max abs diff {diff}");
    }
}

/// Reductions and nvnet's GroupNorm at small network shapes (see `reductions_vs_flex`).
#[test]
fn reductions_and_group_norm_match_flex_on_wgpu() {
    let worst = reductions_vs_flex::<Wgpu>(
        &Default::default(),
        &[
            [1, 8, 16, 16, 12],
            [1, 16, 8, 8, 6],
            [2, 32, 4, 4, 3],
            [1, 64, 2, 2, 2],
        ],
    );
    assert!(worst < 1e-5, "wgpu departs from flex: {worst}");
}

/// GroupNorm's output and gradients under training (`norm_grad`'s operation), alone and with the
/// ReLU that follows it in the network, against flex, with
/// 147,456 values per group (a 48×48×32 map, 2 channels a group): longer than the single
/// reductions that llvmpipe gets wrong.
#[test]
fn group_norm_gradients_match_flex_on_wgpu() {
    for relu in [false, true] {
        let worst = group_norm_gradients_vs_flex::<burn::backend::Autodiff<Wgpu>>(
            &Default::default(),
            [1, 16, 48, 48, 32],
            relu,
        );
        // Relative to the largest value: 3.3e-7 seen on llvmpipe (dL/dx).
        assert!(
            worst < 1e-5,
            "wgpu departs from flex (ReLU {relu}): {worst}"
        );
    }
}

/// nvnet's GroupNorm + ReLU keeps less for the backward pass than Burn's composition of them:
/// x̂ alone instead of x − μ, x̂ and the ReLU's input (measured on the device's memory pools):
/// four C×V tensors fewer a residual block.
#[test]
fn group_norm_and_relu_keep_one_tensor_for_the_backward_on_wgpu() {
    // The device's memory in use is the whole process's: alone, no other test allocates on it.
    if !crate::common::alone(
        "wgpu_reference::group_norm_and_relu_keep_one_tensor_for_the_backward_on_wgpu",
    ) {
        return;
    }
    let [composed, nvnet] = residual_blocks_kept::<burn::backend::Autodiff<Wgpu>>(
        &Default::default(),
        16,
        [16, 16, 16],
        2,
    );
    assert!(
        nvnet <= composed - 3.5,
        "per block {nvnet} C×V tensors kept against {composed}: expected four fewer"
    );
}

/// Device memory of a training step on wgpu (a benchmark: prints, checks nothing).
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn training_step_memory_on_wgpu() {
    let device = Default::default();
    residual_blocks_kept::<burn::backend::Autodiff<Wgpu>>(&device, 32, [32, 32, 32], 2);
    training_step_memory::<burn::backend::Autodiff<Wgpu>>(&device, 8, [32, 32, 32], false);
    training_step_memory::<burn::backend::Autodiff<Wgpu>>(&device, 8, [32, 32, 32], true);
}

/// Test-time flips on wgpu (the page's WebGPU backend runs the same kernels): the mean and
/// variance over the 8 flips of the reference network's sigmoid, against flex.
#[test]
fn flips_match_flex_on_wgpu() {
    use burn::backend::Flex;
    fn run<B: Backend>(device: &B::Device) -> [Vec<f32>; 2] {
        let model =
            nvnet::io::weights::load_file::<B>(&reference("segresnet_f8/model.pt"), None, device)
                .expect("import")
                .model;
        let input = load_tensor::<B, 5>("segresnet_f8/input.npy", device);
        let work = nvnet::inference::window_work(std::slice::from_ref(&model), input, true);
        let v = |t: Tensor<B, 5>| t.into_data().convert::<f32>().into_vec::<f32>().unwrap();
        [
            v(work.mean),
            v(work.variance.expect("a variance with flips")),
        ]
    }
    let [flex_mean, flex_var] = run::<Flex>(&Default::default());
    let [wgpu_mean, wgpu_var] = run::<Wgpu>(&Default::default());
    let (mean, _) = worst_diff(&flex_mean, &wgpu_mean);
    let (var, _) = worst_diff(&flex_var, &wgpu_var);
    eprintln!("flips on wgpu: mean max abs diff {mean:e}, variance {var:e}");
    assert!(
        flex_var.iter().any(|v| *v > 1e-6),
        "the flips agree everywhere"
    );
    // 1.8e-7 (mean) and 2.1e-7 (variance) seen on llvmpipe.
    assert!(mean < 1e-5 && var < 1e-5, "mean {mean}, variance {var}");
}

#[test]
fn upsample_matches_pytorch_on_wgpu() {
    let diff = upsample_diff::<Wgpu>(&Default::default());
    assert!(diff <= 1e-6, "max abs diff {diff}");
}

/// The embedded default model on a whole sample-sized window, stage by stage against flex.
#[test]
fn a_64x64x48_window_matches_flex_stage_by_stage() {
    use burn::backend::Flex;
    fn run<B: Backend>(device: &B::Device) -> Vec<(String, Vec<f32>)> {
        let bytes = nvnet::io::weights::default_model().unwrap();
        let model = nvnet::io::weights::load_bytes::<B>(bytes, "default", device)
            .unwrap()
            .model;
        let shape = [1, 4, 64, 64, 48];
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|i| (((i * 7919) % 1000) as f32 / 500.0) - 1.0)
            .collect();
        stages(
            &model,
            Tensor::from_data(TensorData::new(data, shape), device),
        )
    }
    let worst = compare_stages(
        &run::<Flex>(&Default::default()),
        &run::<Wgpu>(&Default::default()),
        "wgpu",
    );
    // Relative to each stage's largest value: 9.1e-7 seen on llvmpipe (the last decoder level).
    assert!(worst < 1e-5, "wgpu departs from flex: {worst}");
}

/// A training step on wgpu (Burn's autodiff and GPU kernels: the code path of `--device cuda`)
/// against flex (nvnet's own CPU gradients), from the same weights: the loss and the gradient of
/// every parameter. No dropout and no VAE: both draw from each backend's own random numbers.
/// Burn's autodiff and GPU kernels (the code path of `--device cuda`) against nvnet's CPU
/// gradients. Burn 0.21's own weight gradient failed this at 32³ (29–38 % off); `conv_grad`'s
/// passes: 5.8e-6 and 9.4e-6 relative seen on llvmpipe, so 1e-4 allowed.
#[test]
fn a_training_step_matches_flex_on_wgpu() {
    training_step_vs_flex::<burn::backend::Autodiff<Wgpu>>(1e-4, 1e-4);
}

/// `--devices`: a batch split across two wgpu devices (on llvmpipe: the default device and the
/// software-adapter device, two separate wgpu devices) gives the one-device step.
#[test]
fn a_batch_split_across_two_wgpu_devices_gives_the_one_device_step() {
    use burn::backend::wgpu::WgpuDevice;
    split_batch_matches_one_device::<burn::backend::Autodiff<Wgpu>>(
        vec![WgpuDevice::DefaultDevice, WgpuDevice::Cpu],
        nvnet::train::parallel::Transfer::Host,
        1e-4,
    );
}

/// `gpu::checked` catches what the device refuses, instead of leaving it to wgpu's handler (a
/// panic natively, a line in the console in a browser, where the work then goes on with an
/// invalid buffer): a buffer over the device's largest is refused inside it, one within is not.
/// The browser test `gpu_faults_are_caught_and_the_page_segments_again` makes
/// the GPU run out of memory for real.
#[test]
fn checked_catches_what_the_device_refuses() {
    use futures_lite::future::block_on;
    use nvnet::device::gpu::{GpuFault, GpuLimits, checked};
    let cap = GpuLimits {
        max_storage_binding: 1 << 20,
        max_buffer: 1 << 20,
    };
    let gpu = block_on(nvnet::device::gpu::open(Some(cap))).expect("a GPU");
    let buffer = |size| {
        drop(gpu.raw.create_buffer(&wgpu::BufferDescriptor {
            label: Some("checked test"),
            size,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        }))
    };
    let ((), fault) = block_on(checked(&gpu.raw, async { buffer(2 << 20) }));
    assert!(matches!(fault, Some(GpuFault::Refused(_))), "{fault:?}");
    eprintln!("refused: {}", fault.unwrap());
    let ((), fault) = block_on(checked(&gpu.raw, async { buffer(1 << 20) }));
    assert_eq!(fault, None);
}
