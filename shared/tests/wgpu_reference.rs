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

/// The embedded default model on a whole sample-sized window, stage by stage against flex.
#[test]
fn a_64x64x48_window_matches_flex_stage_by_stage() {
    use burn::backend::Flex;
    use burn::prelude::*;
    fn stages<B: Backend>(device: &B::Device) -> Vec<(String, Vec<f32>)> {
        let bytes = nvnet::weights::default_model().unwrap();
        let model = nvnet::weights::load_bytes::<B>(bytes, "default", device)
            .unwrap()
            .model;
        let shape = [1, 4, 64, 64, 48];
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|i| (((i * 7919) % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let x = Tensor::<B, 5>::from_data(TensorData::new(data, shape), device);
        let v = |t: &Tensor<B, 5>| {
            t.clone()
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .unwrap()
        };
        let mut out = Vec::new();
        let gn = nvnet::model::group_norm(
            &model.down[0].blocks[0].norm1,
            model.conv_init.forward(x.clone()),
        );
        out.push(("conv_init+gn".to_string(), v(&gn)));
        let mut h = model.conv_init.forward(x.clone());
        out.push(("conv_init".to_string(), v(&h)));
        let mut skips = Vec::new();
        for (i, level) in model.down.iter().enumerate() {
            h = level.forward(h);
            out.push((format!("down{i}"), v(&h)));
            skips.push(h.clone());
        }
        let mut y = skips.pop().unwrap();
        for (i, level) in model.up.iter().enumerate() {
            y = level.forward(y, Some(skips.pop().unwrap()));
            out.push((format!("up{i}"), v(&y)));
        }
        out.push(("logits".to_string(), v(&model.forward(x))));
        out
    }
    let cpu = stages::<Flex>(&Default::default());
    let gpu = stages::<Wgpu>(&Default::default());
    let mut worst = 0f32;
    for ((name, a), (_, b)) in cpu.iter().zip(&gpu) {
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        let scale = a.iter().map(|x| x.abs()).fold(0f32, f32::max);
        eprintln!("{name}: max |flex - wgpu| {d:e} (max |flex| {scale:e})");
        worst = worst.max(d / scale.max(1.0));
    }
    assert!(worst < 1e-3, "wgpu departs from flex: {worst}");
}

/// Loss and every parameter gradient of one training step, flattened, in visiting order.
fn training_step<B: burn::tensor::backend::AutodiffBackend>(
    weights: &[u8],
    device: &B::Device,
) -> (f64, Vec<Vec<f32>>) {
    use burn::module::{ModuleVisitor, Param};
    use burn::prelude::*;
    struct Grads<'a, B: burn::tensor::backend::AutodiffBackend> {
        grads: &'a B::Gradients,
        out: Vec<Vec<f32>>,
    }
    impl<B: burn::tensor::backend::AutodiffBackend> ModuleVisitor<B> for Grads<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let g = param
                .val()
                .grad(self.grads)
                .expect("every parameter gets a gradient");
            self.out
                .push(g.into_data().convert::<f32>().into_vec::<f32>().unwrap());
        }
    }
    let model = nvnet::weights::load_bytes::<B>(weights, "step", device)
        .unwrap()
        .model;
    let n = 32usize;
    let voxels = n * n * n;
    let input: Vec<f32> = (0..4 * voxels)
        .map(|i| (((i * 7919) % 1000) as f32 / 500.0) - 1.0 + ((i % voxels) as f32 * 0.01).sin())
        .collect();
    // Targets from the input, so that the loss is neither 0 nor 1.
    let target: Vec<f32> = (0..3 * voxels)
        .map(|i| (input[i] > 0.2) as u8 as f32)
        .collect();
    let x = Tensor::<B, 5>::from_data(TensorData::new(input, [1, 4, n, n, n]), device);
    let y = Tensor::<B, 5>::from_data(TensorData::new(target, [1, 3, n, n, n]), device);
    let terms = nvnet::loss::nvnet_loss(
        model.forward_train(x.clone()),
        x,
        y,
        Default::default(),
        0.0,
    );
    let loss = terms.total.clone().into_scalar().elem::<f64>();
    let grads = terms.total.backward();
    let mut visitor = Grads::<B> {
        grads: &grads,
        out: Vec::new(),
    };
    model.visit(&mut visitor);
    (loss, visitor.out)
}

/// A training step on wgpu (Burn's autodiff and GPU kernels: the code path of `--device cuda`)
/// against flex (nvnet's own CPU gradients), from the same weights: the loss and the gradient of
/// every parameter. No dropout and no VAE: both draw from each backend's own random numbers.
#[test]
fn a_training_step_matches_flex_on_wgpu() {
    use burn::backend::{Autodiff, Flex};
    use burn::prelude::Backend;
    let mut config = nvnet::NvNetConfig::default().with_init_filters(8);
    config.dropout = 0.0;
    Flex::seed(&Default::default(), 3);
    let model = config.init::<Flex>(&Default::default()).unwrap();
    let manifest = nvnet::weights::Manifest::new("step", config, Default::default());
    let bytes = nvnet::weights::to_bytes(&model, &manifest).unwrap();
    let (cpu_loss, cpu) = training_step::<Autodiff<Flex>>(&bytes, &Default::default());
    let (gpu_loss, gpu) = training_step::<Autodiff<Wgpu>>(&bytes, &Default::default());
    eprintln!("loss: flex {cpu_loss:.6}, wgpu {gpu_loss:.6}");
    assert!(
        cpu_loss > 0.05 && cpu_loss < 0.99,
        "a loss worth a gradient: {cpu_loss}"
    );
    assert!(
        (cpu_loss - gpu_loss).abs() < 1e-4,
        "{cpu_loss} vs {gpu_loss}"
    );
    assert_eq!(cpu.len(), gpu.len());
    let mut worst = 0f32;
    for (i, (a, b)) in cpu.iter().zip(&gpu).enumerate() {
        assert_eq!(a.len(), b.len(), "parameter {i}");
        let scale = a.iter().map(|v| v.abs()).fold(0f32, f32::max);
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        let rel = d / scale.max(1e-12);
        worst = worst.max(rel);
        assert!(scale > 0.0, "parameter {i}: zero gradient on flex");
        assert!(
            rel < 2e-3,
            "parameter {i}: max |flex - wgpu| {d:e} of {scale:e}"
        );
    }
    eprintln!(
        "{} parameters, worst relative gradient difference {worst:e}",
        cpu.len()
    );
}
