//! Times one training step of NvNet on flex (CPU): `cargo run --release -p nvnet --example train_step -- F D,H,W`.
use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use nvnet::nn::model::NvNetConfig;

type B = Autodiff<Flex>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let f: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(8);
    let shape: Vec<usize> = args
        .get(2)
        .map(|s| s.split(',').map(|v| v.parse().unwrap()).collect())
        .unwrap_or(vec![64, 80, 64]);
    let device = Default::default();
    let mut model = NvNetConfig::default()
        .with_init_filters(f)
        .init::<B>(&device)
        .unwrap();
    let mut optim = AdamConfig::new().init::<B, nvnet::nn::model::NvNet<B>>();
    let dims = [1, 4, shape[0], shape[1], shape[2]];
    let x = Tensor::<B, 5>::random(dims, burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let y = Tensor::<B, 5>::random(
        [1, 3, shape[0], shape[1], shape[2]],
        burn::tensor::Distribution::Bernoulli(0.1),
        &device,
    );
    for i in 0..4 {
        let t = Instant::now();
        let out = model.forward_train(x.clone());
        let loss =
            nvnet::nn::loss::nvnet_loss(out, x.clone(), y.clone(), Default::default(), 0.0).total;
        let _ = loss.clone().into_scalar();
        let fwd = t.elapsed().as_secs_f64();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let bwd = t.elapsed().as_secs_f64() - fwd;
        model = optim.step(1e-3, model, grads);
        let total = t.elapsed().as_secs_f64();
        println!("step {i}: forward {fwd:.2} s, backward {bwd:.2} s, total {total:.2} s");
    }
    let valid = model.valid();
    let t = Instant::now();
    let xi = Tensor::<Flex, 5>::random(dims, burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let _ = valid.forward(xi).into_data();
    println!("inference forward {:.2} s", t.elapsed().as_secs_f64());
}
