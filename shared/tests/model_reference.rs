//! The network against MONAI: parameter counts, imported weights, logits, upsampling, losses.

use crate::common::*;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use nvnet::io::weights::{self, WeightsError};
use nvnet::{Modality, NvNetConfig};

type B = Flex;
type AD = Autodiff<Flex>;

/// MONAI's parameter counts and PyTorch's FLOP count of the forward pass (2 per multiply-add of the
/// convolutions), written by `testdata/reference/make.py`.
fn monai_counts() -> Vec<(usize, [usize; 3], usize, f64)> {
    let counts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference("segresnet_counts.json")).unwrap())
            .unwrap();
    counts
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let shape: Vec<usize> = serde_json::from_value(c["shape"].clone()).unwrap();
            (
                c["init_filters"].as_u64().unwrap() as usize,
                [shape[0], shape[1], shape[2]],
                c["params"].as_u64().unwrap() as usize,
                c["forward_flop"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn parameter_counts_equal_monai() {
    let device = Default::default();
    let counts = monai_counts();
    assert_eq!(counts.len(), 4);
    for (f, shape, expected, _) in counts {
        let config = NvNetConfig::default().with_init_filters(f);
        let model = config.init::<B>(&device).unwrap();
        assert_eq!(model.num_params(), expected, "F={f}");
        assert_eq!(
            nvnet::nn::info::summarize(&config, shape).params,
            expected,
            "analytic count, F={f}"
        );
    }
}

/// Both count 2 FLOP per multiply-add of the convolutions: the same number.
#[test]
fn analytic_flop_match_pytorchs_count() {
    for (f, shape, _, expected) in monai_counts() {
        let got = nvnet::nn::info::summarize(&NvNetConfig::default().with_init_filters(f), shape)
            .seg_flop;
        assert_eq!(got, expected, "F={f} {shape:?}: FLOP");
    }
}

#[test]
fn vae_parameters_match_the_module() {
    let device = Default::default();
    let config = NvNetConfig::default()
        .with_init_filters(8)
        .with_vae(Some([64, 64, 48]));
    let model = config.init::<B>(&device).unwrap();
    assert_eq!(
        nvnet::nn::info::summarize(&config, [64, 64, 48]).params,
        model.num_params()
    );
    assert_eq!(
        model.config(),
        NvNetConfig {
            dropout: 0.2,
            ..config
        }
    );
}

fn check_reference_logits(file: &str) {
    let device = Default::default();
    let loaded = weights::load_file::<B>(&reference(file), None, &device).expect("import");
    let config = &loaded.manifest.config;
    assert_eq!(
        (config.init_filters, config.in_channels, config.out_channels),
        (8, 4, 3)
    );
    assert_eq!(config.blocks_down, vec![1, 2, 2, 4]);
    assert_eq!(config.blocks_up, vec![1, 1, 1]);
    assert_eq!(loaded.manifest.modalities, Modality::DEFAULT_ORDER.to_vec());
    let diff = reference_logits_diff::<B>(file, &device);
    assert!(diff <= 1e-4, "{file}: max abs diff {diff}");
}

#[test]
fn monai_pt_checkpoint_gives_reference_logits() {
    check_reference_logits("segresnet_f8/model.pt");
}

#[test]
fn monai_safetensors_checkpoint_gives_reference_logits() {
    check_reference_logits("segresnet_f8/model.safetensors");
}

#[test]
fn upsample_matches_pytorch_trilinear_and_its_gradient() {
    let device = Default::default();
    let diff = upsample_diff::<B>(&device);
    assert!(diff <= 1e-6, "output diff {diff}");
    let input = load_tensor::<AD, 5>("upsample/input.npy", &device).require_grad();
    let grad_output = load_tensor::<AD, 5>("upsample/grad_output.npy", &device);
    let output = nvnet::nn::upsample::upsample_trilinear_x2(input.clone());
    let grads = (output * grad_output).sum().backward();
    let grad = input.grad(&grads).expect("gradient reaches the input");
    let grad: Vec<f32> = grad.into_data().to_vec().unwrap();
    let torch = nvnet::io::npy::read(reference("upsample/grad_input.npy"))
        .unwrap()
        .values;
    let go = nvnet::io::npy::read(reference("upsample/grad_output.npy")).unwrap();
    let exact = trilinear_x2_adjoint_f64(
        &go.values,
        [go.shape[2], go.shape[3], go.shape[4]],
        go.shape[0] * go.shape[1],
    );
    let max_diff = |a: &[f64], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - *y as f64).abs())
            .fold(0.0, f64::max)
    };
    let to_exact = max_diff(&exact, &grad);
    let torch_f32: Vec<f32> = torch.iter().map(|&v| v as f32).collect();
    let torch_to_exact = max_diff(&exact, &torch_f32);
    let to_torch = max_diff(&torch, &grad);
    eprintln!(
        "gradient: nvnet-exact {to_exact:e}, torch-exact {torch_to_exact:e}, nvnet-torch {to_torch:e}"
    );
    // The reference gradient is itself 1.6e-6 from the exact adjoint (PyTorch's float32 scatter
    // order); ours is held to 1e-6 of the exact one, and to PyTorch within both errors.
    assert!(
        to_exact <= 1e-6,
        "gradient diff to the exact adjoint {to_exact}"
    );
    assert!(
        torch_to_exact > 1e-6,
        "the reference became exact ({torch_to_exact}): tighten the next bound to 1e-6"
    );
    assert!(to_torch <= 2e-6, "gradient diff to PyTorch {to_torch}");
}

#[test]
fn dice_loss_matches_monai() {
    let device = Default::default();
    let logits = load_tensor::<B, 5>("losses/logits.npy", &device);
    let target = load_tensor::<B, 5>("losses/target.npy", &device);
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference("losses/expected.json")).unwrap())
            .unwrap();
    let expected = expected["monai_dice_loss_sigmoid_squared_smooth_dr_1e-5_mean"]
        .as_f64()
        .unwrap();
    let got = scalar(nvnet::nn::loss::dice_loss(logits, target));
    assert!(
        (got - expected).abs() <= 1e-5,
        "dice {got} vs MONAI {expected}"
    );
}

#[test]
fn dice_loss_is_zero_for_a_perfect_confident_prediction() {
    let device = Default::default();
    let target = Tensor::<B, 5>::from_data(
        TensorData::new(vec![1.0f32, 0.0, 1.0, 0.0], [1, 1, 1, 2, 2]),
        &device,
    );
    let logits = target.clone().mul_scalar(40.0).sub_scalar(20.0);
    // Only the 1e-5 smoothing keeps it from 0: 1 − 4 / (4 + 1e-5) = 2.5e-6.
    let loss = scalar(nvnet::nn::loss::dice_loss(logits, target));
    assert!((loss - 2.5e-6).abs() < 2e-7, "loss {loss}");
}

#[test]
fn l2_and_kl_terms_equal_hand_computed_values() {
    let device = Default::default();
    let input = Tensor::<B, 5>::from_data(
        TensorData::new(vec![1.0f32, 2.0, -1.0, 0.5], [1, 1, 1, 2, 2]),
        &device,
    );
    let recon = Tensor::<B, 5>::from_data(
        TensorData::new(vec![0.0f32, 2.5, -1.0, 1.5], [1, 1, 1, 2, 2]),
        &device,
    );
    // (1 + 0.25 + 0 + 1) / 4
    let l2 = scalar(nvnet::nn::loss::l2_loss(input, recon));
    assert!((l2 - 0.5625).abs() < 1e-7, "l2 {l2}");
    let mu = Tensor::<B, 2>::from_data(TensorData::new(vec![0.5f32, -1.0], [1, 2]), &device);
    let sigma = Tensor::<B, 2>::from_data(TensorData::new(vec![1.0f32, 2.0], [1, 2]), &device);
    // (0.25 + 1 - 0 - 1) + (1 + 4 - ln 4 - 1), over N = 8 input values
    let expected = (0.25 + (4.0 - 4f64.ln())) / 8.0;
    let kl = scalar(nvnet::nn::loss::kl_loss(mu, sigma, 8));
    assert!((kl - expected).abs() < 1e-6, "kl {kl} vs {expected}");
}

#[test]
fn gradients_reach_mu_and_sigma_through_the_sampled_latent() {
    let device = Default::default();
    let config = NvNetConfig::default()
        .with_init_filters(8)
        .with_vae(Some([16, 16, 16]));
    let model = config.init::<AD>(&device).unwrap();
    let input = Tensor::<AD, 5>::random(
        [1, 4, 16, 16, 16],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let vae = model.forward_train(input.clone()).vae.expect("VAE output");
    // Only the reconstruction term: the encoder's dense layer, which outputs [μ | σ-logits], can
    // get a gradient only through the sampled z = μ + σ·ε.
    let l2 = nvnet::nn::loss::l2_loss(input, vae.reconstruction);
    let grads = l2.backward();
    let encode = &model.vae.as_ref().unwrap().encode;
    let g = encode
        .weight
        .grad(&grads)
        .expect("the encoder gets a gradient"); // [in, 2·128]
    let [inputs, outputs] = g.dims();
    assert_eq!(outputs, 2 * nvnet::nn::model::VAE_LATENT);
    let g_mu = g
        .clone()
        .slice([0..inputs, 0..128])
        .abs()
        .sum()
        .into_scalar();
    let g_sigma = g.slice([0..inputs, 128..256]).abs().sum().into_scalar();
    assert!(g_mu > 0.0, "no gradient reaches mu");
    assert!(g_sigma > 0.0, "no gradient reaches sigma");
}

#[test]
fn weights_file_round_trip_keeps_outputs_and_manifest() {
    let device = Default::default();
    let loaded =
        weights::load_file::<B>(&reference("segresnet_f8/model.safetensors"), None, &device)
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f8.bpk");
    weights::save(&loaded.model, &loaded.manifest, &path).unwrap();
    let again = weights::load_file::<B>(&path, None, &device).unwrap();
    // The written file records its tensors' checksum (an import has none to carry).
    assert!(again.manifest.tensors_sha256.is_some());
    let without_checksum = weights::Manifest {
        tensors_sha256: None,
        ..again.manifest.clone()
    };
    assert_eq!(without_checksum, loaded.manifest);
    let input = load_tensor::<B, 5>("segresnet_f8/input.npy", &device);
    assert_eq!(
        max_abs_diff(
            loaded.model.forward(input.clone()),
            again.model.forward(input)
        ),
        0.0
    );
    // No temp file is left beside it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

fn expect_error(result: Result<weights::LoadedModel<B>, WeightsError>, words: &[&str]) -> String {
    let message = match result {
        Ok(_) => panic!("bad weights were accepted"),
        Err(e) => e.to_string(),
    };
    for w in words {
        assert!(message.contains(w), "message '{message}' lacks '{w}'");
    }
    message
}

#[test]
fn truncated_weight_files_are_refused_with_a_message() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let loaded =
        weights::load_file::<B>(&reference("segresnet_f8/model.safetensors"), None, &device)
            .unwrap();
    let bpk = dir.path().join("full.bpk");
    weights::save(&loaded.model, &loaded.manifest, &bpk).unwrap();
    for (name, source) in [
        ("half.pt", reference("segresnet_f8/model.pt")),
        (
            "half.safetensors",
            reference("segresnet_f8/model.safetensors"),
        ),
        ("half.bpk", bpk.clone()),
    ] {
        let bytes = std::fs::read(&source).unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let msg = expect_error(weights::load_file::<B>(&path, None, &device), &[name]);
        eprintln!("{msg}");
    }
    let path = dir.path().join("empty.pt");
    std::fs::write(&path, b"").unwrap();
    expect_error(
        weights::load_file::<B>(&path, None, &device),
        &["empty.pt", "neither"],
    );
}

fn safetensors_file(
    dir: &std::path::Path,
    name: &str,
    tensors: Vec<(String, Vec<usize>)>,
) -> std::path::PathBuf {
    use safetensors::tensor::{Dtype, TensorView};
    let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, shape)| {
            let count: usize = shape.iter().product();
            (n, shape, vec![0u8; count * 4])
        })
        .collect();
    let views: Vec<(String, TensorView)> = buffers
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::tensor::serialize(views, None).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn reference_tensors() -> Vec<(String, Vec<usize>)> {
    let bytes = std::fs::read(reference("segresnet_f8/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec()))
        .collect()
}

#[test]
fn wrong_shapes_are_listed() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = reference_tensors();
    for (name, shape) in tensors.iter_mut() {
        if name == "down_layers.2.1.conv1.conv.weight" {
            shape[1] = 8;
        }
    }
    let path = safetensors_file(dir.path(), "wrong_shape.safetensors", tensors);
    expect_error(
        weights::load_file::<B>(&path, None, &device),
        &["wrong_shape.safetensors", "down.2.blocks.0.conv1.weight"],
    );
}

#[test]
fn missing_and_unexpected_tensors_are_listed() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let mut tensors: Vec<_> = reference_tensors()
        .into_iter()
        .filter(|(n, _)| n != "up_layers.1.0.norm2.bias")
        .collect();
    tensors.push(("up_samples.0.1.deconv.weight".into(), vec![2, 2]));
    let path = safetensors_file(dir.path(), "odd.safetensors", tensors);
    expect_error(
        weights::load_file::<B>(&path, None, &device),
        &[
            "odd.safetensors",
            "missing",
            "up_layers.1.0.norm2.bias",
            "unexpected",
            "up_samples.0.1.deconv.weight",
        ],
    );
}

#[test]
fn a_checkpoint_of_another_network_is_refused() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let path = safetensors_file(
        dir.path(),
        "resnet.safetensors",
        vec![
            ("conv1.weight".into(), vec![64, 3, 7, 7]),
            ("fc.weight".into(), vec![1000, 512]),
            ("fc.bias".into(), vec![1000]),
        ],
    );
    expect_error(
        weights::load_file::<B>(&path, None, &device),
        &["resnet.safetensors", "not a MONAI SegResNet", "convInit"],
    );
}

#[test]
fn vae_tensors_of_a_segresnetvae_checkpoint_are_skipped_with_a_notice() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = reference_tensors();
    tensors.push(("vae_down.0.weight".into(), vec![8, 4]));
    tensors.push(("vae_fc1.weight".into(), vec![16, 16]));
    let path = safetensors_file(dir.path(), "vae.safetensors", tensors);
    let loaded = weights::load_file::<B>(&path, None, &device).expect("VAE checkpoint imports");
    assert!(
        loaded.notices.iter().any(|n| n.contains("2 vae_* tensors")),
        "{:?}",
        loaded.notices
    );
}

#[test]
fn a_manifest_that_does_not_fit_is_refused() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let config = NvNetConfig::default().with_init_filters(8);
    let model = config.init::<B>(&device).unwrap();
    let mut manifest = weights::Manifest::new("m", config, Default::default());
    manifest.modalities = vec![Modality::T1, Modality::T2, Modality::Flair];
    let bytes = weights::to_bytes(&model, &manifest).unwrap();
    let path = dir.path().join("three.bpk");
    std::fs::write(&path, bytes).unwrap();
    expect_error(
        weights::load_file::<B>(&path, None, &device),
        &["three.bpk", "3 modalities", "4 input channels"],
    );
}

/// The adjoint of PyTorch's trilinear ×2 (align_corners = false), by its own index formula, in
/// f64: what the float32 gradients approximate.
fn trilinear_x2_adjoint_f64(grad_out: &[f64], out: [usize; 3], planes: usize) -> Vec<f64> {
    let input = out.map(|o| o / 2);
    let taps = |o: usize, n: usize| {
        let src = ((o as f64 + 0.5) / 2.0 - 0.5).max(0.0);
        let i0 = src.floor() as usize;
        let i1 = (i0 + 1).min(n - 1);
        let l1 = src - i0 as f64;
        [(i0, 1.0 - l1), (i1, l1)]
    };
    let mut g = vec![0f64; planes * input.iter().product::<usize>()];
    for p in 0..planes {
        for od in 0..out[0] {
            for oh in 0..out[1] {
                for ow in 0..out[2] {
                    let v = grad_out[((p * out[0] + od) * out[1] + oh) * out[2] + ow];
                    for (d, wd) in taps(od, input[0]) {
                        for (h, wh) in taps(oh, input[1]) {
                            for (w, ww) in taps(ow, input[2]) {
                                g[((p * input[0] + d) * input[1] + h) * input[2] + w] +=
                                    wd * wh * ww * v;
                            }
                        }
                    }
                }
            }
        }
    }
    g
}

/// A few bytes that describe a huge network are refused before it is built (it was built
/// first, and a 200-byte file could ask for 10⁹ levels or gigabytes of weights).
#[test]
fn files_that_describe_huge_networks_are_refused_before_building_them() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    type Named = (String, Vec<usize>);
    let with = |rename: &dyn Fn(&mut Named), extra: Vec<Named>| {
        let mut tensors = reference_tensors();
        tensors.iter_mut().for_each(rename);
        tensors.extend(extra);
        tensors
    };
    let first_conv = |f: usize| {
        move |t: &mut (String, Vec<usize>)| {
            if t.0 == "convInit.conv.weight" {
                t.1[0] = f;
            }
        }
    };
    for (name, tensors, words) in [
        (
            "wide.safetensors",
            with(&first_conv(8192), vec![]),
            &["wide.safetensors", "init_filters = 8192", "beyond"][..],
        ),
        (
            "deep.safetensors",
            with(
                &|_| {},
                vec![("down_layers.1000000000.1.conv1.conv.weight".into(), vec![1])],
            ),
            &["deep.safetensors", "levels", "beyond"],
        ),
        (
            "thin.safetensors",
            with(&first_conv(128), vec![]),
            &[
                "thin.safetensors",
                "describes a network of",
                "F=128",
                "holds only",
            ],
        ),
    ] {
        let path = safetensors_file(dir.path(), name, tensors);
        expect_error(weights::load_file::<B>(&path, None, &device), words);
    }
}

/// The tensors' types and sizes are checked against the manifest before anything is built: a
/// header edited to call a float tensor an integer (or f64, or f16) crashed the process, and one
/// giving a tensor fewer bytes than its shape read past them.
#[test]
fn weights_whose_tensor_headers_lie_are_refused() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let loaded =
        weights::load_file::<B>(&reference("segresnet_f8/model.safetensors"), None, &device)
            .unwrap();
    let good = weights::to_bytes(&loaded.model, &loaded.manifest).unwrap();
    // burnpack's header is CBOR: a dtype is the text "F32" (0x63 = a 3-byte string), and a
    // tensor's shape follows its name. The edits keep every length, so only the meaning changes.
    let edit = |from: &[u8], to: &[u8]| {
        let mut bytes = good.clone();
        let at = bytes
            .windows(from.len())
            .position(|w| w == from)
            .expect("the pattern is in the header");
        bytes[at..at + to.len()].copy_from_slice(to);
        bytes
    };
    for (name, bytes, words) in [
        (
            "int.bpk",
            edit(b"\x63F32", b"\x63I32"),
            &["int.bpk", "I32", "F32"][..],
        ),
        ("f64.bpk", edit(b"\x63F32", b"\x63F64"), &["f64.bpk", "F64"]),
        ("f16.bpk", edit(b"\x63F32", b"\x63F16"), &["f16.bpk", "F16"]),
        // The first convolution's [8, 4, 3, 3, 3] made [16, 4, 3, 3, 3].
        (
            "shape.bpk",
            edit(b"\x85\x08\x04\x03\x03\x03", b"\x85\x10\x04\x03\x03\x03"),
            &["shape.bpk", "[16, 4, 3, 3, 3] needs"],
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let msg = expect_error(weights::load_file::<B>(&path, None, &device), words);
        eprintln!("{msg}");
    }
    // The original still loads.
    let path = dir.path().join("good.bpk");
    std::fs::write(&path, &good).unwrap();
    weights::load_file::<B>(&path, None, &device).unwrap();
}

/// A `.pt` whose zip members declare more than nvnet reads is refused before any is inflated (a
/// zip bomb: a few bytes that declare gigabytes).
#[test]
fn a_pytorch_checkpoint_declaring_gigabytes_is_refused_before_reading() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(reference("segresnet_f8/model.pt")).unwrap();
    // The central directory's first entry says its member inflates to 3.75 GiB.
    let mut bomb = good.clone();
    let entry = bomb
        .windows(4)
        .position(|w| w == [0x50, 0x4b, 0x01, 0x02])
        .expect("a central directory");
    bomb[entry + 24..entry + 28].copy_from_slice(&0xF000_0000u32.to_le_bytes());
    // Offsets at the end of the address space are refused with a message (no overflow, no
    // panic). `torch.save` writes zip64 records: a locator 20 bytes before the end record points
    // to the zip64 end record, which holds the central directory's offset.
    let eocd = good
        .windows(4)
        .rposition(|w| w == [0x50, 0x4b, 0x05, 0x06])
        .unwrap();
    let locator = eocd - 20;
    assert_eq!(good[locator..locator + 4], [0x50, 0x4b, 0x06, 0x07]);
    let record = u64::from_le_bytes(good[locator + 8..locator + 16].try_into().unwrap()) as usize;
    for (at, value) in [(locator + 8, u64::MAX), (record + 48, u64::MAX - 1)] {
        let mut far = good.clone();
        // The end record's own offset says "see zip64" (0xFFFFFFFF), as in archives past 4 GiB.
        far[eocd + 16..eocd + 20].copy_from_slice(&u32::MAX.to_le_bytes());
        far[at..at + 8].copy_from_slice(&value.to_le_bytes());
        let path = dir.path().join("far.pt");
        std::fs::write(&path, &far).unwrap();
        let msg = expect_error(
            weights::load_file::<B>(&path, None, &device),
            &["far.pt", "zip"],
        );
        eprintln!("{msg}");
    }
    let path = dir.path().join("bomb.pt");
    std::fs::write(&path, &bomb).unwrap();
    let msg = expect_error(
        weights::load_file::<B>(&path, None, &device),
        &["bomb.pt", "once inflated", "MiB"],
    );
    eprintln!("{msg}");
}

/// `model.pt` rewritten member by member (stored), with `edit` applied to each member's bytes.
fn rezip(edit: impl Fn(&str, Vec<u8>) -> Vec<u8>) -> Vec<u8> {
    rezip_with(zip::CompressionMethod::Stored, edit)
}

fn rezip_with(method: zip::CompressionMethod, edit: impl Fn(&str, Vec<u8>) -> Vec<u8>) -> Vec<u8> {
    use std::io::{Read, Write};
    let good = std::fs::read(reference("segresnet_f8/model.pt")).unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(good)).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).unwrap();
        let name = member.name().to_string();
        let mut bytes = Vec::new();
        member.read_to_end(&mut bytes).unwrap();
        let options = zip::write::SimpleFileOptions::default().compression_method(method);
        out.start_file(name.as_str(), options).unwrap();
        out.write_all(&edit(&name, bytes)).unwrap();
    }
    out.finish().unwrap().into_inner()
}

fn load_pt(
    dir: &tempfile::TempDir,
    name: &str,
    bytes: &[u8],
) -> Result<weights::LoadedModel<B>, WeightsError> {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    weights::load_file::<B>(&path, None, &Default::default())
}

/// A hostile pickle inside a `.pt`. A tree reader that clones, formats and drops its objects
/// recursively overflows its stack on a list nested 100,000 deep (a crash), and builds 2^40
/// objects from a list doubled through the memo 40 times. nvnet's reader (`io::torch`) reads
/// both in time and memory proportional to their bytes and refuses them by name, as it does
/// dicts nested 100,000 deep, which it would otherwise walk.
#[test]
fn hostile_pickles_in_a_pytorch_checkpoint_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The rewritten checkpoint itself still loads.
    load_pt(&dir, "rezipped.pt", &rezip(|_, b| b)).unwrap();
    let depth = 100_000;
    let mut deep = vec![0x80, 2];
    deep.extend(std::iter::repeat_n(b'(', depth));
    deep.extend(std::iter::repeat_n(b'l', depth));
    deep.push(b'.');
    // As a legacy pickle file, and as the pickle of a zip checkpoint.
    let msg = expect_error(
        load_pt(&dir, "deep.pt", &deep),
        &["deep.pt", "not a torch.save checkpoint"],
    );
    eprintln!("{msg}");
    let zipped = rezip(|name, b| {
        if name.ends_with("data.pkl") {
            deep.clone()
        } else {
            b
        }
    });
    let msg = expect_error(
        load_pt(&dir, "deep-zip.pt", &zipped),
        &["deep-zip.pt", "holds no tensors", "a list"],
    );
    eprintln!("{msg}");
    let mut doubling = vec![0x80, 2, b']', b'q', 0];
    for _ in 0..40 {
        doubling.extend([b'(', b'h', 0, b'h', 0, b'l', b'q', 0]);
    }
    doubling.push(b'.');
    let zipped = rezip(|name, b| {
        if name.ends_with("data.pkl") {
            doubling.clone()
        } else {
            b
        }
    });
    let msg = expect_error(
        load_pt(&dir, "doubling.pt", &zipped),
        &["doubling.pt", "holds no tensors", "a list"],
    );
    eprintln!("{msg}");
    // {"a": {"a": ...}}: each level a mark, a key; the innermost dict; then DICT, level by level.
    let mut dicts = vec![0x80, 2];
    for _ in 0..depth {
        dicts.extend(b"(X\x01\x00\x00\x00a");
    }
    dicts.push(b'}');
    dicts.extend(std::iter::repeat_n(b'd', depth));
    dicts.push(b'.');
    let zipped = rezip(|name, b| {
        if name.ends_with("data.pkl") {
            dicts.clone()
        } else {
            b
        }
    });
    let msg = expect_error(
        load_pt(&dir, "dicts.pt", &zipped),
        &["dicts.pt", "nest more than 16 deep"],
    );
    eprintln!("{msg}");
}

/// A zip member that inflates past the size it declares (deflate expands up to 1032 times) is
/// refused: nothing is inflated past a declared size. Here the real checkpoint, deflated, with
/// its first storage declaring 100 bytes (a reader trusting the stream would read all 3,456).
#[test]
fn a_zip_member_inflating_past_its_declared_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = rezip_with(zip::CompressionMethod::Deflated, |_, b| b);
    load_pt(&dir, "deflated.pt", &bytes).unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.clone())).unwrap();
    let member = archive.by_name("model/data/0").unwrap();
    assert_eq!(member.size(), 3456);
    let (local, central) = (
        member.header_start() as usize,
        member.central_header_start() as usize,
    );
    drop(member);
    bytes[local + 22..local + 26].copy_from_slice(&100u32.to_le_bytes());
    bytes[central + 24..central + 28].copy_from_slice(&100u32.to_le_bytes());
    let msg = expect_error(
        load_pt(&dir, "liar.pt", &bytes),
        &[
            "liar.pt",
            "model/data/0",
            "inflates past the 100 bytes it declares",
        ],
    );
    eprintln!("{msg}");
}

/// A tensor's shape that its storage cannot hold (4.6·10^18 values, or more than a 64-bit count)
/// is refused before anything is allocated for it.
#[test]
fn a_tensor_shape_larger_than_the_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let huge = [0x4a, 0xff, 0xff, 0xff, 0x7f]; // BININT 2^31 - 1
    for dims in [2, 3] {
        let zipped = rezip(|name, b| {
            if !name.ends_with("data.pkl") {
                return b;
            }
            // conv_final.0.weight (a GroupNorm weight) has shape (8,): BININT1 8, TUPLE1.
            let key = b
                .windows(19)
                .position(|w| w == b"conv_final.0.weight")
                .unwrap();
            let at = key
                + b[key..]
                    .windows(3)
                    .position(|w| w == [b'K', 8, 0x85])
                    .unwrap();
            let mut shape: Vec<u8> = huge.repeat(dims);
            shape.push(0x84 + dims as u8); // TUPLE2 / TUPLE3
            [&b[..at], &shape[..], &b[at + 3..]].concat()
        });
        let msg = expect_error(
            load_pt(&dir, "huge-shape.pt", &zipped),
            &[
                "huge-shape.pt",
                "conv_final.0.weight",
                "holds more values than its storage",
            ],
        );
        eprintln!("{msg}");
    }
}
