//! Sliding-window inference and metrics against `../shared/reference` (MONAI's
//! `sliding_window_inference`, medpy's metrics).

use crate::common::reference;
use burn::prelude::*;
use burn::tensor::TensorData;
use nvnet::device::backend::Cpu;
use nvnet::inference::{Blend, SlidingWindow};
use nvnet::metrics;

fn sliding_window_diff(blend: Blend, expected: &str) -> f32 {
    let device = Default::default();
    let model =
        nvnet::io::weights::load_file::<Cpu>(&reference("segresnet_f8/model.pt"), None, &device)
            .unwrap()
            .model;
    let volume = nvnet::io::npy::read(reference("sliding_window/volume.npy")).unwrap();
    assert_eq!(volume.shape, vec![1, 4, 45, 70, 50]);
    let dims = [45, 70, 50];
    let input = volume.to_f32();
    let mut sw = SlidingWindow::new(dims, [32, 32, 32], 0.5, blend, 3);
    for w in 0..sw.len() {
        let data = sw.extract(&input, 4, w);
        let t = Tensor::<Cpu, 5>::from_data(TensorData::new(data, [1, 4, 32, 32, 32]), &device);
        let out = model.forward(t).into_data().into_vec::<f32>().unwrap();
        sw.add(w, &out);
    }
    let got = sw.finish();
    let want = nvnet::io::npy::read(reference(expected)).unwrap();
    assert_eq!(want.shape, vec![1, 3, 45, 70, 50]);
    got.iter()
        .zip(want.to_f32())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
}

#[test]
fn sliding_window_gaussian_matches_monai() {
    let d = sliding_window_diff(Blend::Gaussian, "sliding_window/logits_gaussian.npy");
    assert!(d <= 1e-4, "max abs diff {d}");
}

#[test]
fn sliding_window_constant_matches_monai() {
    let d = sliding_window_diff(Blend::Constant, "sliding_window/logits_constant.npy");
    assert!(d <= 1e-4, "max abs diff {d}");
}

#[test]
fn metrics_match_medpy_on_every_reference_case() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference("metrics/expected.json")).unwrap())
            .unwrap();
    let cases = expected.as_array().unwrap();
    assert_eq!(cases.len(), 9);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let load = |what: &str| {
            let a = nvnet::io::npy::read(reference(&format!("metrics/{name}_{what}.npy"))).unwrap();
            assert_eq!(a.shape, vec![48, 52, 40]);
            a.to_f32().iter().map(|v| *v != 0.0).collect::<Vec<bool>>()
        };
        let spacing: Vec<f64> = serde_json::from_value(case["spacing"].clone()).unwrap();
        let m = metrics::region_metrics(
            &load("pred"),
            &load("gt"),
            [48, 52, 40],
            [spacing[0], spacing[1], spacing[2]],
        );
        let check = |what: &str, got: f64, tol: f64| {
            let want = case[what].as_f64().unwrap();
            assert!((got - want).abs() <= tol, "{name} {what}: {got} vs {want}");
        };
        check("dice", m.dice, 1e-9);
        check("sensitivity", m.sensitivity, 1e-9);
        check("specificity", m.specificity, 1e-9);
        check("hd95", m.hd95, 1e-6);
    }
}
