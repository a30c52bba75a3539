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

/// The default model in float16 on a phantom case: the labels against float32's (the issue's
/// bar: 99.9 % equal). llvmpipe offers float16 (Vulkan's `shaderFloat16`), as GPUs do.
#[test]
fn half_precision_labels_match_single_precision_on_wgpu() {
    use nvnet::data::case::{Case, discover_case};
    use nvnet::data::modality::{LabelConvention, Modality, Region};
    use nvnet::data::synth;
    use nvnet::inference::{InferenceOptions, segment};
    use nvnet::nn::precision::{Precision, supports_f16, with_precision};
    let device = Default::default();
    assert!(
        supports_f16::<Wgpu>(&device),
        "the adapter offers no float16"
    );
    let dir = tempfile::tempdir().unwrap();
    let phantom = synth::generate(3, 0, [80, 80, 56], LabelConvention::Brats2018);
    let folder =
        synth::write_case(&phantom, dir.path(), nvnet::data::case::Layout::Brats2018).unwrap();
    let case = Case::load(&discover_case(&folder).unwrap()).unwrap();
    let bytes = nvnet::io::weights::default_model().unwrap();
    let model = nvnet::io::weights::load_bytes::<Wgpu>(bytes, "default", &device)
        .unwrap()
        .model;
    let options = InferenceOptions {
        tta: false,
        ..InferenceOptions::default()
    };
    let run = |precision| {
        let t = std::time::Instant::now();
        let m = with_precision(model.clone(), precision);
        let seg = segment(
            std::slice::from_ref(&m),
            &Region::DEFAULT_ORDER,
            &case,
            &Modality::DEFAULT_ORDER,
            &options,
            &device,
            |_, _| {},
        )
        .unwrap();
        eprintln!("{precision:?}: {:.1} s", t.elapsed().as_secs_f64());
        seg
    };
    let single = run(Precision::F32);
    let half = run(Precision::F16);
    let same = single
        .labels
        .iter()
        .zip(&half.labels)
        .filter(|(a, b)| a == b)
        .count();
    let tumour = single.labels.iter().filter(|l| **l != 0).count();
    let worst = single
        .probabilities
        .iter()
        .zip(&half.probabilities)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!(
        "labels equal {same}/{} ({tumour} tumour voxels), probabilities differ by {worst:e} at most",
        single.labels.len()
    );
    assert!(tumour > 500, "too little tumour to compare: {tumour}");
    assert!(same as f64 >= 0.999 * single.labels.len() as f64);
}

/// GroupNorm+ReLU of a float16 map, on a fresh device, against float32 on another: the memory the
/// pools reserve for it grows by about half as much (its statistics are still float32's).
#[test]
fn half_precision_group_norm_takes_about_half_the_memory() {
    use burn::backend::wgpu::WgpuDevice;
    use burn::nn::GroupNormConfig;
    use burn::tensor::FloatDType;
    let shape = [1, 16, 128, 128, 96];
    let mut grown = vec![];
    for (dtype, device) in [
        (FloatDType::F32, WgpuDevice::DefaultDevice),
        (FloatDType::F16, WgpuDevice::Cpu),
    ] {
        let norm = GroupNormConfig::new(8, 16).init::<Wgpu>(&device);
        // Made from host values in its own type: no float32 tensor has passed the pools.
        let n: usize = shape.iter().product();
        let values = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0);
        let data = match dtype {
            FloatDType::F16 => {
                TensorData::new(values.map(burn::tensor::f16::from_f32).collect(), shape)
            }
            _ => TensorData::new(values.collect(), shape),
        };
        let x = Tensor::<Wgpu, 5>::from_data(data, (&device, dtype.into()));
        assert_eq!(x.dtype(), dtype.into());
        let reserved = || {
            <Wgpu as Backend>::sync(&device).unwrap();
            nvnet::device::gpu::memory_usage::<Wgpu>(&device).unwrap()
        };
        let before = reserved();
        let y = nvnet::nn::model::group_norm_relu(&norm, x);
        let after = reserved();
        assert_eq!(y.dtype(), dtype.into());
        eprintln!("{dtype:?}: before {before:?}, after {after:?}");
        grown.push((after.reserved - before.reserved) as f64);
    }
    let ratio = grown[1] / grown[0];
    eprintln!("float16 grew {ratio:.2}× float32's");
    // 0.52 seen on llvmpipe.
    assert!(
        ratio <= 0.6,
        "float16 GroupNorm took {ratio:.2}× float32's memory"
    );
}

/// A benchmark, not a test (run with `--ignored`): one window's device memory at each stage of
/// the forward pass, float32 against float16, each on its own device (its pools empty).
#[test]
#[ignore]
fn window_memory_by_precision() {
    use burn::backend::wgpu::WgpuDevice;
    use nvnet::nn::precision::{Precision, cast_to, with_precision};
    let shape = [1, 4, 128, 128, 96];
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|i| (((i * 7919) % 1000) as f32 / 500.0) - 1.0)
        .collect();
    for (precision, device) in [
        (Precision::F32, WgpuDevice::DefaultDevice),
        (Precision::F16, WgpuDevice::Cpu),
    ] {
        let bytes = nvnet::io::weights::default_model().unwrap();
        let model = nvnet::io::weights::load_bytes::<Wgpu>(bytes, "default", &device)
            .unwrap()
            .model;
        let model = with_precision(model, precision);
        let x = Tensor::<Wgpu, 5>::from_data(TensorData::new(data.clone(), shape), &device);
        let mut peak = 0u64;
        let (logits, _) = model.forward_traced(cast_to(x, precision.dtype()), &mut |_, _| {
            <Wgpu as Backend>::sync(&device).unwrap();
            let usage = nvnet::device::gpu::memory_usage::<Wgpu>(&device).unwrap();
            peak = peak.max(usage.in_use);
        });
        logits.into_data();
        let usage = nvnet::device::gpu::memory_usage::<Wgpu>(&device).unwrap();
        eprintln!(
            "{precision:?}: at most {} MiB in use between stages; {} MiB reserved at the end",
            peak >> 20,
            usage.reserved >> 20
        );
    }
}
