//! Learning signal: a few Adam steps of the full NvNet loss (Dice + VAE terms) must lower its
//! Dice term as MONAI's does.

use burn::backend::{Autodiff, Flex};
use burn::optim::{AdamConfig, GradientsParams, Optimizer, decay::WeightDecayConfig};
use burn::prelude::*;
use nvnet::NvNetConfig;

use crate::common::alone;

type AD = Autodiff<Flex>;

/// The case's side in voxels. 32³ costs an eighth of 64³ (55 s for the test at 64³ on two
/// cores, 2026-12-04); the picture is the same, drawn in a 64³ grid's coordinates.
const N: usize = 32;

/// A fixed N³ "scan": four channels of smooth structure, and a sphere whose voxels are brighter
/// in some channels than in others; the targets are nested spheres like TC ⊂ WT, ET.
fn fixed_case<B: Backend>(device: &B::Device) -> (Tensor<B, 5>, Tensor<B, 5>) {
    let n = N;
    let at = |i: usize| i as f32 * (64.0 / n as f32);
    let mut input = vec![0f32; 4 * n * n * n];
    let mut target = vec![0f32; 3 * n * n * n];
    let idx = |c: usize, z: usize, y: usize, x: usize| ((c * n + z) * n + y) * n + x;
    for z in 0..n {
        for y in 0..n {
            for x in 0..n {
                let (fz, fy, fx) = (at(z), at(y), at(x));
                let d = |cz: f32, cy: f32, cx: f32| {
                    ((fz - cz).powi(2) + (fy - cy).powi(2) + (fx - cx).powi(2)).sqrt()
                };
                let r = d(30.0, 34.0, 28.0);
                let wt = r < 14.0;
                let tc = r < 8.0;
                let et = (5.0..8.0).contains(&r);
                let texture = (fx * 0.3).sin() * (fy * 0.2).cos() * 0.3;
                input[idx(0, z, y, x)] = texture - if tc { 0.8 } else { 0.0 };
                input[idx(1, z, y, x)] = texture + if et { 1.5 } else { 0.0 };
                input[idx(2, z, y, x)] = texture + if wt { 1.0 } else { 0.0 };
                input[idx(3, z, y, x)] = -texture + if wt && !tc { 1.2 } else { 0.0 };
                target[idx(0, z, y, x)] = tc as u8 as f32;
                target[idx(1, z, y, x)] = wt as u8 as f32;
                target[idx(2, z, y, x)] = et as u8 as f32;
            }
        }
    }
    (
        Tensor::from_data(TensorData::new(input, [1, 4, n, n, n]), device),
        Tensor::from_data(TensorData::new(target, [1, 3, n, n, n]), device),
    )
}

#[test]
fn twenty_adam_steps_lower_the_dice_loss() {
    // The initial weights and the dropout masks come from flex's one random-number generator,
    // which every other test that builds a model draws from and reseeds: alone, this run is the
    // same every time.
    if !alone("learning::twenty_adam_steps_lower_the_dice_loss") {
        return;
    }
    let device = Default::default();
    AD::seed(&device, 7);
    let config = NvNetConfig::default()
        .with_init_filters(8)
        .with_vae(Some([N; 3]));
    let mut model = config.init::<AD>(&device).unwrap();
    let mut optim = AdamConfig::new()
        .with_weight_decay(Some(WeightDecayConfig::new(1e-5)))
        .init();
    let (input, target) = fixed_case::<AD>(&device);
    let mut losses = Vec::new();
    let mut dice = Vec::new();
    for _ in 0..20 {
        let out = model.forward_train(input.clone());
        let terms = nvnet::nn::loss::nvnet_loss(
            out,
            input.clone(),
            target.clone(),
            Default::default(),
            0.0,
        );
        losses.push(terms.total.clone().into_scalar().elem::<f64>());
        dice.push(terms.dice.clone().into_scalar().elem::<f64>());
        let grads = GradientsParams::from_grads(terms.total.backward(), &model);
        model = optim.step(3e-3, model, grads);
    }
    eprintln!("total: {losses:.4?}");
    eprintln!("dice: {dice:.4?}");
    assert!(
        losses.iter().chain(&dice).all(|l| l.is_finite()),
        "non-finite loss: {losses:?} {dice:?}"
    );
    // Calibration (`python bench/monai_learning.py 3e-3 32`): MONAI's SegResNet F=8 with the
    // same case, Dice loss, dropout and optimiser goes from 0.949 to 0.879 (last three) in these
    // 20 steps (at 64³: 0.953 to 0.878); a Dice loss leaves its ~0.95 start slowly while the
    // background is still uncertain. Ask for two thirds of that drop in the Dice term, and for a
    // downward trend rather than one lucky step. nvnet's run (alone, the same every run;
    // 2026-12-04): the Dice term from 0.924 to 0.404 (last three), the total from 0.941 to 0.397.
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (first, last_mean) = (dice[0], mean(&dice[dice.len() - 3..]));
    assert!(
        last_mean < first - 0.047,
        "the Dice loss went from {first:.4} to {last_mean:.4}: no real drop"
    );
    assert!(
        mean(&dice[15..]) < mean(&dice[5..10]),
        "no downward trend: {dice:?}"
    );
}
