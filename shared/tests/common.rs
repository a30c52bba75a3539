//! Helpers shared by the library's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::prelude::*;
use burn::tensor::TensorData;

/// `testdata/reference`, the repository's copy of the project's reference outputs; `NVNET_TESTDATA` names the `testdata` folder
/// where the test binary runs on another machine than it was built on (the GPU scripts in bench/).
pub fn reference(path: &str) -> PathBuf {
    std::env::var_os("NVNET_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| testdata(""))
        .join("reference")
        .join(path)
}

/// A path in the repository's `testdata/`. Test binaries run in their package's folder (cargo
/// test runs them there, as scripts/test.sh does), so the path is taken from there: the
/// compile-time `CARGO_MANIFEST_DIR` names the clone that built the binary, which a warm target
/// directory keeps when a fresh clone elsewhere reuses it.
pub fn testdata(path: &str) -> PathBuf {
    PathBuf::from("../testdata").join(path)
}

/// Run a test alone in a child process of this test binary, for a test that reads process-wide
/// state other tests change while it runs: burn-flex's random-number generator (shared by every
/// test that initialises a model), a device's memory pools. Call it first with the test's path
/// (`module::name`): in the parent it runs the child, checks that it passed and returns false;
/// in the child it returns true and the test's body runs.
pub fn alone(test: &str) -> bool {
    const CHILD: &str = "NVNET_TEST_ALONE";
    if std::env::var_os(CHILD).is_some_and(|t| t == test) {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD, test)
        .output()
        .expect("run the test binary again");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{text}");
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{test}, run alone, failed"
    );
    false
}

pub fn load_tensor<B: Backend, const D: usize>(path: &str, device: &B::Device) -> Tensor<B, D> {
    let npy = nvnet::io::npy::read(reference(path)).expect("reference array");
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
    let loaded =
        nvnet::io::weights::load_file::<B>(&reference(file), None, device).expect("import");
    let input = load_tensor::<B, 5>("segresnet_f8/input.npy", device);
    let expected = load_tensor::<B, 5>("segresnet_f8/logits.npy", device);
    max_abs_diff(loaded.model.forward(input), expected)
}

/// The network's output after each stage on `x`, flattened: the first convolution, its
/// GroupNorm, each encoder and decoder level, the logits. A backend that departs from flex is
/// then traced to the first stage that differs.
pub fn stages<B: Backend>(model: &nvnet::NvNet<B>, x: Tensor<B, 5>) -> Vec<(String, Vec<f32>)> {
    let v = |t: &Tensor<B, 5>| {
        t.clone()
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap()
    };
    let mut out = Vec::new();
    model.forward_traced(x, &mut |stage, t| {
        out.push((stage.to_string(), v(t)));
        // The first GroupNorm on its own, right after the convolution it normalises.
        if stage == "conv_init" {
            let gn = nvnet::nn::model::group_norm(&model.down[0].blocks[0].norm1, t.clone());
            out.push(("conv_init+gn".to_string(), v(&gn)));
        }
    });
    out
}

/// Prints each stage's max abs difference between flex (`cpu`) and `other`; returns the worst,
/// relative to the stage's largest flex value (or 1, if that is smaller).
pub fn compare_stages(cpu: &[(String, Vec<f32>)], other: &[(String, Vec<f32>)], name: &str) -> f32 {
    assert_eq!(cpu.len(), other.len());
    let mut worst = 0f32;
    for ((stage, a), (_, b)) in cpu.iter().zip(other) {
        assert_eq!(a.len(), b.len(), "{stage}");
        let (d, at) = worst_diff(a, b);
        let scale = a.iter().map(|x| x.abs()).fold(0f32, f32::max);
        // Where: a fault confined to a few elements (index 0, a window's edge) points at a
        // kernel's bounds handling rather than at arithmetic.
        eprintln!(
            "{stage}: max |flex - {name}| {d:e}{} (max |flex| {scale:e})",
            where_(d, at)
        );
        worst = worst.max(d / scale.max(1.0));
    }
    worst
}

/// " at flat index N" where there is a difference at all.
fn where_(d: f32, at: usize) -> String {
    if d > 0.0 {
        format!(" at flat index {at}")
    } else {
        String::new()
    }
}

/// The largest absolute difference and its index (0 when there is none); NaN counts as
/// infinitely far.
pub fn worst_diff(a: &[f32], b: &[f32]) -> (f32, usize) {
    assert_eq!(a.len(), b.len());
    let mut worst = (0f32, 0);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let d = (x - y).abs();
        let d = if d.is_nan() { f32::INFINITY } else { d };
        if d > worst.0 {
            worst = (d, i);
        }
    }
    worst
}

fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn vec_of<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// Reductions after element-wise work, against flex: `c = x + 1` (x consumed, so `c` may be
/// written in place) then `sum(c²)` over the last axis, at row widths around the GPU's
/// vector, plane and cube sizes; and nvnet's GroupNorm of a residual sum `a + b` at each of
/// `gn_shapes`, as the network runs it. Written for a lead on the CUDA logits (Burn 0.21's
/// fused reduce rewrites element 0 when a masked lane re-runs a side-effecting fused read;
/// fixed upstream after 0.21, burn#5268, cubek#446). Burn's fusion log (`BURN_FUSION_LOG=full`)
/// shows that on wgpu these sequences, and nvnet's whole forward and training step, run no fused
/// reduction at all: the reduce fuser scores no better than the element-wise one, which wins
/// ties (the same is expected on CUDA). So this checks GroupNorm and plain reductions at the
/// network's shapes, not that bug.
/// Prints every case; returns the worst difference relative to the case's largest value (or 1,
/// if that is smaller).
pub fn reductions_vs_flex<B: Backend>(device: &B::Device, gn_shapes: &[[usize; 5]]) -> f32 {
    let cpu = burn_flex::FlexDevice;
    let mut worst = 0f32;
    let mut note = |what: String, a: &[f32], b: &[f32]| {
        let (d, at) = worst_diff(a, b);
        let scale = a.iter().map(|x| x.abs()).fold(1f32, f32::max);
        eprintln!(
            "{what}: max abs diff {d:e}{} (max |flex| {scale:e})",
            where_(d, at)
        );
        worst = worst.max(d / scale);
    };
    fn simple<B: Backend>(rows: usize, w: usize, device: &B::Device) -> (Vec<f32>, Vec<f32>) {
        let x = Tensor::<B, 2>::from_data(
            TensorData::new(pseudo_random(rows * w, 7), [rows, w]),
            device,
        );
        let c = x + 1.0;
        let s = c.clone().square().sum_dim(1);
        (vec_of(c), vec_of(s))
    }
    for rows in [1, 8, 32, 64, 100] {
        for w in [12, 24, 40, 96, 130, 1000] {
            let (c0, s0) = simple::<burn::backend::Flex>(rows, w, &cpu);
            let (c1, s1) = simple::<B>(rows, w, device);
            note(format!("x + 1 of {rows}×{w}"), &c0, &c1);
            note(format!("sum((x + 1)²) of {rows}×{w}"), &s0, &s1);
        }
    }
    fn residual_gn<B: Backend>(shape: [usize; 5], device: &B::Device) -> Vec<f32> {
        let n: usize = shape.iter().product();
        let norm = burn::nn::GroupNormConfig::new(8, shape[1])
            .with_epsilon(1e-5)
            .init::<B>(device);
        let a = Tensor::<B, 5>::from_data(TensorData::new(pseudo_random(n, 11), shape), device);
        let b = Tensor::<B, 5>::from_data(TensorData::new(pseudo_random(n, 13), shape), device);
        let h = a * 2.0 + b;
        let y = nvnet::nn::model::group_norm(&norm, h.clone()).clamp_min(0.0) + h;
        vec_of(y)
    }
    for &shape in gn_shapes {
        let a = residual_gn::<burn::backend::Flex>(shape, &cpu);
        let b = residual_gn::<B>(shape, device);
        note(format!("GroupNorm of a residual sum {shape:?}"), &a, &b);
    }
    worst
}

/// nvnet's GroupNorm (then ReLU when `relu`) under autodiff on backend `G` against
/// `Autodiff<Flex>` (`cpu_grad`'s fused kernels, statistics in float64): the output and the gradients of x, γ and β under a
/// pseudo-random upstream gradient, at `shape` with 8 groups and γ, β away from 1, 0. On the GPU
/// backends this is `norm_grad`'s operation. Prints each; returns the worst difference relative
/// to the largest flex value of each.
pub fn group_norm_gradients_vs_flex<G: burn::tensor::backend::AutodiffBackend>(
    device: &G::Device,
    shape: [usize; 5],
    relu: bool,
) -> f32 {
    fn run<B: burn::tensor::backend::AutodiffBackend>(
        shape: [usize; 5],
        relu: bool,
        device: &B::Device,
    ) -> Vec<Vec<f32>> {
        use burn::module::Param;
        let n: usize = shape.iter().product();
        let c = shape[1];
        let mut norm = burn::nn::GroupNormConfig::new(8, c)
            .with_epsilon(1e-5)
            .init::<B>(device);
        let vector = |seed, offset: f32| {
            Tensor::<B, 1>::from_data(TensorData::new(pseudo_random(c, seed), [c]), device) + offset
        };
        norm.gamma = Some(Param::from_tensor(vector(21, 1.5)));
        norm.beta = Some(Param::from_tensor(vector(22, 0.0)));
        let x = Tensor::<B, 5>::from_data(TensorData::new(pseudo_random(n, 23), shape), device)
            * 3.0
            + 0.5;
        let x = x.require_grad();
        let upstream =
            Tensor::<B, 5>::from_data(TensorData::new(pseudo_random(n, 24), shape), device);
        let y = if relu {
            nvnet::nn::model::group_norm_relu(&norm, x.clone())
        } else {
            nvnet::nn::model::group_norm(&norm, x.clone())
        };
        let grads = (y.clone() * upstream).sum().backward();
        let gamma = norm.gamma.as_ref().unwrap().val();
        let beta = norm.beta.as_ref().unwrap().val();
        vec![
            vec_of(y.inner()),
            vec_of(x.grad(&grads).unwrap()),
            vec_of(gamma.grad(&grads).unwrap()),
            vec_of(beta.grad(&grads).unwrap()),
        ]
    }
    // The GPU backends' GroupNorm is `norm_grad`'s operation, not Burn's composition.
    let norm = burn::nn::GroupNormConfig::new(8, shape[1]).init::<G>(device);
    let x = Tensor::<G, 5>::zeros(shape, device).require_grad();
    assert!(
        nvnet::nn::norm_grad::try_group_norm(&norm, x, relu).is_ok(),
        "norm_grad does not take this backend"
    );
    let cpu = run::<burn::backend::Autodiff<burn::backend::Flex>>(shape, relu, &Default::default());
    let other = run::<G>(shape, relu, device);
    let mut worst = 0f32;
    for (what, (a, b)) in ["y", "dL/dx", "dL/dγ", "dL/dβ"]
        .iter()
        .zip(cpu.iter().zip(&other))
    {
        let (d, at) = worst_diff(a, b);
        let scale = a.iter().map(|v| v.abs()).fold(0f32, f32::max);
        eprintln!(
            "GroupNorm{} {shape:?}, {what}: max abs diff {d:e}{} (max |flex| {scale:e})",
            if relu { " + ReLU" } else { "" },
            where_(d, at)
        );
        worst = worst.max(d / scale.max(1e-12));
    }
    worst
}

/// Device memory that the forward pass of training keeps for the backward pass, through
/// `blocks` residual blocks (GN → ReLU → conv3 → GN → ReLU → conv3, plus the identity) of
/// `channels` channels at `shape`: with GroupNorm and ReLU written as Burn's tensor operations
/// (`normalise`, `affine`, `relu`: what Burn's autodiff records op by op) and with nvnet's
/// (`model::group_norm_relu`). In units of one C×D×H×W float32 tensor, per block: `[composed, nvnet]`.
/// Measured as the device's bytes in use once the forward pass has run, less those before it.
pub fn residual_blocks_kept<G: burn::tensor::backend::AutodiffBackend>(
    device: &G::Device,
    channels: usize,
    shape: [usize; 3],
    blocks: usize,
) -> [f64; 2] {
    use burn::nn::conv::{Conv3d, Conv3dConfig};
    use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig3d};
    use burn::tensor::activation::relu;
    let norms: Vec<GroupNorm<G>> = (0..2 * blocks)
        .map(|_| GroupNormConfig::new(8, channels).init(device))
        .collect();
    let convs: Vec<Conv3d<G>> = (0..2 * blocks)
        .map(|_| {
            Conv3dConfig::new([channels, channels], [3, 3, 3])
                .with_padding(PaddingConfig3d::Explicit(1, 1, 1))
                .with_bias(false)
                .init(device)
        })
        .collect();
    let in_use = || {
        G::sync(device).expect("the device runs");
        nvnet::device::gpu::memory_usage::<G>(device)
            .expect("a GPU backend")
            .in_use
    };
    let tensor_bytes = 4.0 * (channels * shape.iter().product::<usize>()) as f64;
    let mut kept = [0f64; 2];
    for (k, nvnet_norm) in [false, true].into_iter().enumerate() {
        let gn_relu = |i: usize, t: Tensor<G, 5>| {
            let norm = &norms[i];
            if nvnet_norm {
                nvnet::nn::model::group_norm_relu(norm, t)
            } else {
                let (normed, _) = nvnet::nn::model::normalise(t, norm.num_groups, norm.epsilon);
                let gamma = norm.gamma.as_ref().expect("affine").val();
                let beta = norm.beta.as_ref().expect("affine").val();
                relu(nvnet::nn::model::affine(normed, gamma, beta))
            }
        };
        let [d, h, w] = shape;
        let x = Tensor::<G, 5>::random(
            [1, channels, d, h, w],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            device,
        )
        .require_grad();
        let before = in_use();
        let mut y = x.clone();
        for b in 0..blocks {
            let z = nvnet::nn::model::conv(&convs[2 * b], gn_relu(2 * b, y.clone()));
            let z = nvnet::nn::model::conv(&convs[2 * b + 1], gn_relu(2 * b + 1, z));
            y = z + y;
        }
        let loss = y.sum();
        kept[k] = (in_use() - before) as f64 / tensor_bytes / blocks as f64;
        // The backward pass frees what the graph kept before the next variant.
        let grads = loss.backward();
        assert!(x.grad(&grads).is_some());
    }
    eprintln!(
        "{blocks} residual block(s), {channels} channels at {shape:?}: per block the forward \
         pass keeps {:.2} C×V tensors with Burn's composed GroupNorm, {:.2} with nvnet's",
        kept[0], kept[1]
    );
    kept
}

/// Device memory in use after the forward pass of one training step of NvNet (the recipe's
/// loss, batch 1, `vae` for the VAE branch) and after the step, in bytes; printed with the
/// estimate of `nvnet info` beside it.
pub fn training_step_memory<G: burn::tensor::backend::AutodiffBackend>(
    device: &G::Device,
    init_filters: usize,
    shape: [usize; 3],
    vae: bool,
) -> [u64; 2] {
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};
    let config = nvnet::NvNetConfig::default()
        .with_init_filters(init_filters)
        .with_vae(vae.then_some(shape));
    let mut model = config.init::<G>(device).unwrap();
    let mut optim = AdamConfig::new().init::<G, nvnet::NvNet<G>>();
    let [d, h, w] = shape;
    let x = Tensor::<G, 5>::random(
        [1, 4, d, h, w],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        device,
    );
    let y = Tensor::<G, 5>::random(
        [1, 3, d, h, w],
        burn::tensor::Distribution::Bernoulli(0.1),
        device,
    );
    let in_use = || {
        G::sync(device).expect("the device runs");
        nvnet::device::gpu::memory_usage::<G>(device).expect("a GPU backend")
    };
    let mut seen = [0u64; 2];
    // Two steps: the second holds Adam's moments too.
    for _ in 0..2 {
        let out = model.forward_train(x.clone());
        let loss = nvnet::nn::loss::nvnet_loss(out, x.clone(), y.clone(), Default::default(), 0.0);
        seen[0] = in_use().in_use;
        let grads = GradientsParams::from_grads(loss.total.backward(), &model);
        model = optim.step(1e-4, model, grads);
        seen[1] = in_use().in_use;
    }
    let reserved = in_use().reserved;
    let estimate = nvnet::nn::info::summarize(&config, shape).training_bytes;
    let gib = |b: f64| b / (1u64 << 30) as f64;
    eprintln!(
        "training step F={init_filters} {shape:?}{}: {:.3} GiB in use after the forward pass, \
         {:.3} GiB after the step, {:.3} GiB reserved by the memory pools (nvnet info's estimate \
         of the activations: {:.3} GiB)",
        if vae { " + VAE" } else { "" },
        gib(seen[0] as f64),
        gib(seen[1] as f64),
        gib(reserved as f64),
        gib(estimate)
    );
    seen
}

/// Max abs difference of the trilinear ×2 upsampling to PyTorch's.
pub fn upsample_diff<B: Backend>(device: &B::Device) -> f32 {
    let input = load_tensor::<B, 5>("upsample/input.npy", device);
    let expected = load_tensor::<B, 5>("upsample/output.npy", device);
    max_abs_diff(nvnet::nn::upsample::upsample_trilinear_x2(input), expected)
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
    let model = nvnet::io::weights::load_bytes::<B>(weights, "step", device)
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
    let terms = nvnet::nn::loss::nvnet_loss(
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

/// A fresh F=8 network without dropout or VAE (both draw from each backend's own random numbers),
/// as nvnet weight bytes, from flex seeded with `seed`.
fn f8_weights(seed: u64) -> Vec<u8> {
    use burn::backend::Flex;
    let mut config = nvnet::NvNetConfig::default().with_init_filters(8);
    config.dropout = 0.0;
    Flex::seed(&Default::default(), seed);
    let model = config.init::<Flex>(&Default::default()).unwrap();
    let manifest = nvnet::io::weights::Manifest::new("f8", config, Default::default());
    nvnet::io::weights::to_bytes(&model, &manifest).unwrap()
}

/// One training step on the GPU backend `G` against flex from the same weights: the loss and the
/// gradient of every parameter (relative to its largest value) within the tolerances. No dropout
/// and no VAE: both draw from each backend's own random numbers. Returns the worst relative
/// gradient difference.
pub fn training_step_vs_flex<G: burn::tensor::backend::AutodiffBackend>(
    loss_tolerance: f64,
    tolerance: f32,
) -> f32 {
    use burn::backend::{Autodiff, Flex};
    let bytes = f8_weights(3);
    let (cpu_loss, cpu) = training_step::<Autodiff<Flex>>(&bytes, &Default::default());
    let (gpu_loss, gpu) = training_step::<G>(&bytes, &Default::default());
    eprintln!("loss: flex {cpu_loss:.6}, other {gpu_loss:.6}");
    assert!(
        cpu_loss > 0.05 && cpu_loss < 0.99,
        "a loss worth a gradient: {cpu_loss}"
    );
    assert!(
        (cpu_loss - gpu_loss).abs() < loss_tolerance,
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
            rel < tolerance,
            "parameter {i}: max |flex - other| {d:e} of {scale:e}"
        );
    }
    eprintln!(
        "{} parameters, worst relative gradient difference {worst:e}",
        cpu.len()
    );
    worst
}

/// Every parameter's gradient in `grads`, flattened, in visiting order.
fn gradients_of<B: burn::tensor::backend::AutodiffBackend>(
    model: &nvnet::NvNet<B>,
    grads: &burn::optim::GradientsParams,
) -> Vec<Vec<f32>> {
    use burn::module::{Module, ModuleVisitor, Param};
    struct Collect<'a> {
        grads: &'a burn::optim::GradientsParams,
        out: Vec<Vec<f32>>,
    }
    impl<B: burn::tensor::backend::AutodiffBackend> ModuleVisitor<B> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let g = self
                .grads
                .get::<B::InnerBackend, D>(param.id)
                .expect("every parameter gets a gradient");
            self.out
                .push(g.into_data().convert::<f32>().into_vec::<f32>().unwrap());
        }
    }
    let mut visitor = Collect {
        grads,
        out: Vec::new(),
    };
    model.visit(&mut visitor);
    visitor.out
}

/// A batch of two different samples split across `devices` (the first holds the model) gives
/// the gradients and losses of the whole batch on the first device alone, within `tolerance`
/// (relative to each parameter's largest gradient). Returns the worst relative difference.
pub fn split_batch_matches_one_device<G: burn::tensor::backend::AutodiffBackend>(
    devices: Vec<G::Device>,
    transfer: nvnet::train::parallel::Transfer,
    tolerance: f32,
) -> f32 {
    use nvnet::train::parallel::{Batch, Devices, StepSpec};
    let bytes = f8_weights(5);
    let model = nvnet::io::weights::load_bytes::<G>(&bytes, "split", &devices[0])
        .unwrap()
        .model;
    let n = 16usize;
    let voxels = n * n * n;
    let sample = |k: usize| {
        let input: Vec<f32> = (0..4 * voxels)
            .map(|i| {
                ((((i + 31 * k) * 7919) % 1000) as f32 / 500.0) - 1.0
                    + ((i % voxels) as f32 * 0.013 * (k + 1) as f32).sin()
            })
            .collect();
        let target: Vec<f32> = (0..3 * voxels)
            .map(|i| (input[i] > 0.1 * k as f32) as u8 as f32)
            .collect();
        (input, target)
    };
    let (x0, y0) = sample(0);
    let (x1, y1) = sample(1);
    let batch = Batch {
        n: 2,
        input: [x0.clone(), x1].concat(),
        target: [y0.clone(), y1].concat(),
    };
    let spec = StepSpec {
        channels: 4,
        regions: 3,
        crop: [n; 3],
        loss: Default::default(),
        dice_smooth: 0.0,
    };
    let one = Devices::<G>::new(vec![devices[0].clone()], spec, transfer).unwrap();
    let (whole, whole_loss) = one.gradients(&model, batch.clone()).unwrap();
    let (first, first_loss) = one
        .gradients(
            &model,
            Batch {
                n: 1,
                input: x0,
                target: y0,
            },
        )
        .unwrap();
    let many = Devices::<G>::new(devices, spec, transfer).unwrap();
    let (split, split_loss) = many.gradients(&model, batch).unwrap();
    eprintln!(
        "loss: whole batch {:.6}, split {:.6}, first sample {:.6}",
        whole_loss.total, split_loss.total, first_loss.total
    );
    assert!((whole_loss.total - split_loss.total).abs() < 1e-5);
    assert!((whole_loss.dice - split_loss.dice).abs() < 1e-5);
    let (whole, split, first) = (
        gradients_of(&model, &whole),
        gradients_of(&model, &split),
        gradients_of(&model, &first),
    );
    assert_eq!(whole.len(), split.len());
    let mut worst = 0f32;
    let mut first_off = 0f32;
    for (i, ((a, b), c)) in whole.iter().zip(&split).zip(&first).enumerate() {
        let scale = a.iter().map(|v| v.abs()).fold(0f32, f32::max).max(1e-12);
        let diff = |o: &[f32]| {
            a.iter()
                .zip(o)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
                / scale
        };
        let rel = diff(b);
        worst = worst.max(rel);
        first_off = first_off.max(diff(c));
        assert!(rel < tolerance, "parameter {i}: {rel:e} relative");
    }
    // Both samples matter: one alone gives other gradients, so the check can fail.
    assert!(
        first_off > 100.0 * tolerance,
        "one sample's gradients: {first_off:e}"
    );
    eprintln!(
        "{} parameters: split vs whole worst {worst:e}; one sample alone differs by {first_off:e}",
        whole.len()
    );
    worst
}

/// `series` registered to `reference`: the mean distance over `points` (world, mm) between
/// where the found and the true motions put them, and a line saying so with the registration's
/// NMI, overlap, evaluations and time.
pub fn registration_error(
    reference: &nvnet::prepare::Volume,
    series: &nvnet::prepare::Volume,
    truth: &nvnet::prepare::Rigid,
    points: &[[f64; 3]],
) -> (f64, String) {
    let t = std::time::Instant::now();
    let found = nvnet::prepare::register(reference, series, &nvnet::prepare::Options::default());
    let seconds = t.elapsed().as_secs_f64();
    let error = points
        .iter()
        .map(|&p| {
            let (a, b) = (found.motion.apply(p), truth.apply(p));
            ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
        })
        .sum::<f64>()
        / points.len() as f64;
    let line = format!(
        "mean target error {error:.3} mm (NMI {:.3}, overlap {:.3}, {} evaluations, \
         {seconds:.1} s)",
        found.nmi, found.overlap, found.evaluations
    );
    assert!(found.overlap >= 0.9, "{line}");
    (error, line)
}
