//! The reference logits on burn-cuda. Built with `--features cuda` (CI builds it: the test command
//! turns the feature on, so that these keep compiling); every test is ignored, and runs only where
//! there is a GPU (the device machine), with `--ignored`.
#![cfg(feature = "cuda")]

use crate::common::*;
use burn::backend::Cuda;

#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the device machine"]
fn monai_weights_give_reference_logits_on_cuda() {
    let device = Default::default();
    for file in ["segresnet_f8/model.pt", "segresnet_f8/model.safetensors"] {
        let diff = reference_logits_diff::<Cuda>(file, &device);
        eprintln!("{file} on cuda: max abs diff {diff:e}");
        // Autotuned convolutions run on tensor cores in TF32 (as cuDNN does by default for
        // PyTorch): seen 1.28e-3 on an H200, against 3.0e-6 with the f32 direct kernel.
        assert!(diff <= 2e-3, "{file} on cuda: max abs diff {diff}");
    }
}

/// The reference network on its reference input, stage by stage against flex: where the logits
/// above depart from MONAI's, this names the first stage that differs. On an H200 (2026-11-28,
/// kernels autotuned while three trainings compiled beside it) the logits differed by 1.56.
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the device machine"]
fn the_reference_network_matches_flex_stage_by_stage_on_cuda() {
    use burn::backend::Flex;
    fn run<B: burn::prelude::Backend>(device: &B::Device) -> Vec<(String, Vec<f32>)> {
        let file = reference("segresnet_f8/model.pt");
        let model = nvnet::io::weights::load_file::<B>(&file, None, device)
            .expect("import")
            .model;
        stages(
            &model,
            load_tensor::<B, 5>("segresnet_f8/input.npy", device),
        )
    }
    let worst = compare_stages(
        &run::<Flex>(&Default::default()),
        &run::<Cuda>(&Default::default()),
        "cuda",
    );
    assert!(worst < 2e-3, "cuda departs from flex: {worst}");
}

/// Reductions and nvnet's GroupNorm at the shapes of the paper's network (F=32 on a
/// 160×192×128 crop, every level) and of the F=8 default model on a 128³ window, where CUDA's
/// autotune picks among plane and cube reductions that CPU adapters cannot run (see
/// `reductions_vs_flex`).
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the device machine"]
fn reductions_and_group_norm_match_flex_on_cuda() {
    let worst = reductions_vs_flex::<Cuda>(
        &Default::default(),
        &[
            [1, 32, 160, 192, 128],
            [1, 64, 80, 96, 64],
            [1, 128, 40, 48, 32],
            [1, 256, 20, 24, 16],
            [1, 8, 128, 128, 128],
            [1, 16, 64, 64, 64],
            [1, 32, 32, 32, 32],
            [1, 64, 16, 16, 16],
        ],
    );
    assert!(worst < 1e-5, "cuda departs from flex: {worst}");
}

#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the device machine"]
fn upsample_matches_pytorch_on_cuda() {
    let diff = upsample_diff::<Cuda>(&Default::default());
    assert!(diff <= 1e-6, "max abs diff {diff}");
}

/// One training step on burn-cuda against flex (see the wgpu test). Looser: CUDA's autotuned
/// convolutions run in TF32 (1.28e-3 on the logits above).
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the device machine"]
fn a_training_step_matches_flex_on_cuda() {
    training_step_vs_flex::<burn::backend::Autodiff<Cuda>>(2e-3, 5e-2);
}

/// GroupNorm's output and gradients under training (`norm_grad`'s operation) against flex, at
/// a level-0 block of the F=8 network and at F=32's deepest level with a batch of two.
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the device machine"]
fn group_norm_gradients_match_flex_on_cuda() {
    let device = Default::default();
    for shape in [[1, 16, 48, 48, 32], [2, 256, 20, 24, 16]] {
        for relu in [false, true] {
            let worst =
                group_norm_gradients_vs_flex::<burn::backend::Autodiff<Cuda>>(&device, shape, relu);
            assert!(
                worst < 1e-4,
                "CUDA departs from flex at {shape:?} (ReLU {relu}): {worst}"
            );
        }
    }
}

/// Device memory of training on CUDA at the paper's recipe (F=32 + VAE, 160×192×128), and what
/// nvnet's GroupNorm saves per residual block at its full resolution. Prints; the check is
/// the one of the wgpu test (four C×V tensors fewer a block).
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the device machine"]
fn training_step_memory_on_cuda() {
    let device = Default::default();
    let [composed, nvnet] =
        residual_blocks_kept::<burn::backend::Autodiff<Cuda>>(&device, 32, [160, 192, 128], 1);
    training_step_memory::<burn::backend::Autodiff<Cuda>>(&device, 32, [160, 192, 128], true);
    assert!(nvnet <= composed - 3.5, "{nvnet} against {composed}");
}

/// The tensor-core and double-buffered matrix products that Burn's matmul autotune picks among
/// on CUDA, at contraction lengths that fill an odd number of k-stages (see `matmul_bounds`):
/// without the fix in `vendor/cubek-matmul`, the extra stage adds whatever lies after the operands.
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on the device machine"]
fn tensor_core_matmuls_stop_at_k_on_cuda() {
    use crate::matmul_bounds::{matmul_bounds_failures, unit_strategies};
    use cubek::matmul::components::tile::TileMatmulKind;
    use cubek::matmul::launch::Strategy;
    use cubek::matmul::routines::ordered_double_buffering::OrderedSelectionArgs;
    use cubek::matmul::routines::{BlueprintStrategy, double_buffering::DoubleBufferingArgs};
    let mut strategies = vec![
        Strategy::SpecializedCyclicCmma(BlueprintStrategy::Inferred(().into())),
        Strategy::SpecializedCyclicMma(BlueprintStrategy::Inferred(().into())),
        Strategy::SpecializedStridedCmma(BlueprintStrategy::Inferred(().into())),
    ];
    for tile_matmul in [TileMatmulKind::Cmma, TileMatmulKind::Mma] {
        for specialized in [false, true] {
            let args = DoubleBufferingArgs {
                tile_matmul,
                specialized,
            };
            strategies.push(match tile_matmul {
                TileMatmulKind::Cmma => {
                    Strategy::DoubleCyclicCmma(BlueprintStrategy::Inferred(args))
                }
                _ => Strategy::DoubleCyclicMma(BlueprintStrategy::Inferred(args)),
            });
        }
        for row_count in [4, 8] {
            let args = OrderedSelectionArgs {
                partition_k: Some(2),
                row_count: Some(row_count),
                rows_per_plane: Some(2),
                tile_matmul,
            };
            strategies.push(match tile_matmul {
                TileMatmulKind::Cmma => {
                    Strategy::OrderedDoubleCmma(BlueprintStrategy::Inferred(args))
                }
                _ => Strategy::OrderedDoubleMma(BlueprintStrategy::Inferred(args)),
            });
        }
    }
    let tensor_core = strategies.len();
    strategies.extend(unit_strategies(false));
    let ks = [8, 16, 24, 32, 48, 64, 96, 160, 224, 864];
    let (failures, ran) = matmul_bounds_failures::<cubek::cubecl::cuda::CudaRuntime>(
        &strategies,
        &ks,
        &Default::default(),
    );
    for (strategy, ran) in strategies.iter().zip(&ran) {
        eprintln!("{strategy}: ran at {ran} of {} lengths", ks.len());
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        ran[..tensor_core].iter().any(|&r| r > 0),
        "no tensor-core kernel ran: {ran:?}"
    );
    assert!(ran[tensor_core..].iter().all(|&r| r == ks.len()), "{ran:?}");
}
