//! Burn 0.21's GPU matrix products (cubek-matmul 0.2) at contraction lengths `k` that fill an odd
//! number of k-stages exactly. The double-buffered, ordered and specialized kernels run stages
//! in pairs, so they round the count up and run one stage past `k`; cubek-matmul 0.2 guards reads
//! past `k` only when `k` is not a multiple of one stage, so that extra stage read whatever lies
//! after the operands and added it to the result (upstream: burn#5626 on Metal, cubek#434 for the
//! tensor-core kernels). nvnet runs such products wherever Burn's matmul autotune runs: its 1×1
//! convolutions (as `conv_im2col_1x1`, k = input channels), its weight gradients (k = H·W of a
//! slice) and the VAE's linear layers. Burn's 3×3×3 convolution kernels are single-stage.
//! `vendor/cubek-matmul` carries the fix (guard unless `k` fills an even number of stages).
//!
//! Each product here is forced to one kernel, on operands at the start of larger buffers: A
//! (row-major) has two more rows of 1000s after it, so a read past `k` takes the next row's
//! values, and B has 256 more rows of 1000s, more than a stage past `k` can reach.
#![cfg(any(feature = "wgpu", feature = "cuda"))]

use burn::prelude::*;
use burn::tensor::TensorData;
use burn_cubecl::CubeRuntime;
use burn_cubecl::tensor::CubeTensor;
use cubek::cubecl::ir::StorageType;
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems};
use cubek::matmul::launch::Strategy;
use cubek::std::InputBinding;

/// An `rows`×`cols` operand whose buffer holds `extra` more rows of 1000s after it.
fn padded<R: CubeRuntime>(
    values: &[f32],
    [rows, cols]: [usize; 2],
    extra: usize,
    device: &R::Device,
) -> CubeTensor<R> {
    let mut full = values.to_vec();
    full.resize((rows + extra) * cols, 1000.0);
    let t = Tensor::<burn_cubecl::CubeBackend<R, f32, i32, u32>, 2>::from_data(
        TensorData::new(full, [rows + extra, cols]),
        device,
    );
    let t: CubeTensor<R> = t.into_primitive().tensor();
    CubeTensor::new_contiguous(
        t.client.clone(),
        t.device.clone(),
        [rows, cols].into(),
        t.handle.clone(),
        t.dtype,
    )
}

/// The largest difference between `strategy`'s A·B (A: m×k, B: k×n) and the product on the host,
/// relative to the product's largest value; `Err` when the kernel does not run for this shape
/// on this device.
pub fn padded_matmul_error<R: CubeRuntime>(
    strategy: &Strategy,
    [m, k, n]: [usize; 3],
    device: &R::Device,
) -> Result<f32, String> {
    let a: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
        .collect();
    let b: Vec<f32> = (0..k * n)
        .map(|i| ((i * 5 % 11) as f32 - 5.0) / 8.0)
        .collect();
    let lhs = padded::<R>(&a, [m, k], 2, device);
    let rhs = padded::<R>(&b, [k, n], 256, device);
    let out = Tensor::<burn_cubecl::CubeBackend<R, f32, i32, u32>, 2>::zeros([m, n], device);
    let out_t: CubeTensor<R> = out.clone().into_primitive().tensor();
    let f32_type = StorageType::from(burn::tensor::DType::F32);
    let mut dtypes = MatmulElems::from_globals(&MatmulGlobalElems {
        lhs: f32_type,
        rhs: f32_type,
        out: f32_type,
    });
    let client = lhs.client.clone();
    cubek::matmul::launch::launch_ref(
        strategy,
        &client,
        InputBinding::new(lhs.binding(), f32_type),
        InputBinding::new(rhs.binding(), f32_type),
        out_t.binding(),
        &mut dtypes,
    )
    .map_err(|e| format!("{e:?}"))?;
    let got = out.into_data().convert::<f32>().into_vec::<f32>().unwrap();
    let mut worst = 0f32;
    let mut scale = 1f32;
    for i in 0..m {
        for j in 0..n {
            let want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            scale = scale.max(want.abs());
            worst = worst.max((got[i * n + j] - want).abs());
        }
    }
    Ok(worst / scale)
}

/// Every `strategies` kernel at every contraction length in `ks` (m = 64, n = 32): prints each
/// case, returns the failures (relative error above 1e-4) and how many lengths each strategy ran.
pub fn matmul_bounds_failures<R: CubeRuntime>(
    strategies: &[Strategy],
    ks: &[usize],
    device: &R::Device,
) -> (Vec<String>, Vec<usize>) {
    let mut failures = Vec::new();
    let mut ran = vec![0; strategies.len()];
    for (strategy, ran) in strategies.iter().zip(&mut ran) {
        for &k in ks {
            match padded_matmul_error::<R>(strategy, [64, k, 32], device) {
                Ok(e) => {
                    *ran += 1;
                    eprintln!("{strategy} k={k}: relative error {e:e}");
                    if e.is_nan() || e > 1e-4 {
                        failures.push(format!("{strategy} k={k}: {e:e}"));
                    }
                }
                Err(why) => eprintln!("{strategy} k={k}: does not run here ({why})"),
            }
        }
    }
    (failures, ran)
}

/// The unit (no tensor core) kernels of Burn's matmul autotune, at both tile sizes: the
/// single-stage ones when `simple`, and the double-buffered ones.
pub fn unit_strategies(simple: bool) -> Vec<Strategy> {
    use cubek::matmul::routines::{
        BlueprintStrategy, TileSizeSelection, double_unit::DoubleUnitSelectionArgs,
        simple_unit::SimpleUnitSelectionArgs,
    };
    let mut strategies = Vec::new();
    for tile_size in [
        TileSizeSelection::MinTileSize,
        TileSizeSelection::MaxTileSize,
    ] {
        if simple {
            strategies.push(Strategy::SimpleUnit(BlueprintStrategy::Inferred(
                SimpleUnitSelectionArgs { tile_size },
            )));
        }
        strategies.push(Strategy::DoubleUnit(BlueprintStrategy::Inferred(
            DoubleUnitSelectionArgs { tile_size },
        )));
    }
    strategies
}

#[cfg(feature = "wgpu")]
#[test]
fn double_buffered_matmuls_stop_at_k_on_wgpu() {
    let strategies = unit_strategies(true);
    // Multiples of 8, 16 and 32 with odd and even quotients (nvnet's 1×1 lengths among them).
    let ks = [8, 16, 24, 32, 40, 56, 64, 96, 104, 864];
    let (failures, ran) = matmul_bounds_failures::<burn::backend::wgpu::WgpuRuntime>(
        &strategies,
        &ks,
        &Default::default(),
    );
    assert!(failures.is_empty(), "{failures:#?}");
    // Every kernel ran at every length: a kernel that did not run cannot pass.
    assert_eq!(ran, vec![ks.len(); strategies.len()]);
}
