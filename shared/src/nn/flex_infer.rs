//! Inference on flex written on its buffers, natively and in the page: GroupNorm (and ReLU) in
//! place, and trilinear ×2 upsampling. Burn's compositions of tensor operations, which nvnet
//! uses on every other backend, copy the feature map several times on the CPU: these were a
//! fifth of a forward pass at 144×176×112 (perf).

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::nn::GroupNorm;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::ops::FloatTensor;

use crate::nn::parallel::{each_chunk_mut, map_chunks};
use crate::nn::typecast::{cast, same};

/// A float tensor's values as float32.
pub(crate) fn floats(t: FloatTensor<Flex>) -> Vec<f32> {
    Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(t))
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("float32 data")
}

fn flex<const D: usize>(t: FloatTensor<Flex>) -> Tensor<Flex, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// `group_norm` (then ReLU, when `relu`) for inference on flex, written over the input's
/// buffer where no other tensor shares it: one read and one write of the feature map, where
/// Burn's composition and a separate ReLU take several, each into a new buffer.
pub fn group_norm<B: Backend>(
    norm: &GroupNorm<B>,
    x: Tensor<B, 5>,
    relu: bool,
) -> Result<Tensor<B, 5>, Tensor<B, 5>> {
    let x: Tensor<Flex, 5> = cast(x)?;
    let dims = x.dims();
    let mut t = x.into_primitive().tensor().to_contiguous();
    let Some(affine) = t
        .as_slice::<f32>()
        .and_then(|buf| channel_affine(norm, buf, dims))
    else {
        return Err(same(flex::<5>(t)));
    };
    let [_, _, d, h, w] = dims;
    // Copies first only if another tensor shares the buffer.
    let buf: &mut [f32] = t.storage_mut::<f32>();
    each_chunk_mut(buf, d * h * w, |sc, xs| {
        let (a, b) = affine[sc];
        for x in xs.iter_mut() {
            let y = *x * a + b;
            *x = if relu { relu_of(y) } else { y };
        }
    });
    Ok(same(flex::<5>(t)))
}

/// max(y, 0), with 0 for NaN as `f32::max` gives; a comparison rather than `f32::max`, which in
/// wasm (whose `max` propagates NaN) went through a call per value.
#[inline(always)]
pub(crate) fn relu_of(y: f32) -> f32 {
    if y <= 0.0 || y.is_nan() { 0.0 } else { y }
}

/// GroupNorm as y = x·a + b per (sample, channel) of the float32 feature map `buf` of `dims`,
/// in that order (a = γ/σ, b = β − μ·a, as PyTorch computes it): the statistics in float64, a
/// and b in float32. `None` without γ and β.
pub(crate) fn channel_affine<B: Backend>(
    norm: &GroupNorm<B>,
    buf: &[f32],
    [n, c, d, h, w]: [usize; 5],
) -> Option<Vec<(f32, f32)>> {
    let (Some(gamma), Some(beta)) = (&norm.gamma, &norm.beta) else {
        return None;
    };
    let gamma = floats(
        same::<_, Tensor<Flex, 1>>(gamma.val())
            .into_primitive()
            .tensor(),
    );
    let beta = floats(
        same::<_, Tensor<Flex, 1>>(beta.val())
            .into_primitive()
            .tensor(),
    );
    let groups = norm.num_groups;
    let per_group = c / groups * d * h * w;
    let stats: Vec<(f64, f64)> = map_chunks(buf, per_group, |xs| {
        let n = xs.len() as f64;
        let mean = lane_sum(xs, |v| v) / n;
        let var = lane_sum(xs, |v| (v - mean) * (v - mean)) / n;
        (mean, 1.0 / (var + norm.epsilon).sqrt())
    });
    let cg = c / groups;
    Some(
        (0..n * c)
            .map(|sc| {
                let (s, k) = (sc / c, sc % c);
                let (mean, inv) = stats[s * groups + k / cg];
                let a = inv * gamma[k] as f64;
                (a as f32, (beta[k] as f64 - mean * a) as f32)
            })
            .collect(),
    )
}

/// Σ f(x) in float64, in eight interleaved sums added at the end: independent sums the compiler
/// can keep in SIMD registers (one running sum would wait on each addition; a group is up to
/// millions of values).
fn lane_sum(xs: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut lanes = [0f64; 8];
    let mut blocks = xs.chunks_exact(8);
    for block in &mut blocks {
        for (lane, &v) in lanes.iter_mut().zip(block) {
            *lane += f(v as f64);
        }
    }
    let rest: f64 = blocks.remainder().iter().map(|&v| f(v as f64)).sum();
    lanes.iter().sum::<f64>() + rest
}

/// `upsample::upsample_trilinear_x2` on flex (inference): the same three passes written on the
/// buffers, a channel's volume per
/// task (the slicing and concatenation above copy the feature map several times per axis on
/// the CPU: 13 % of a forward pass at 144×176×112, perf).
pub fn upsample_trilinear_x2<B: Backend>(x: Tensor<B, 5>) -> Result<Tensor<B, 5>, Tensor<B, 5>> {
    let x: Tensor<Flex, 5> = cast(x)?;
    let [n, c, d, h, w] = x.dims();
    let t = x.into_primitive().tensor().to_contiguous();
    let Some(src) = t.as_slice::<f32>() else {
        return Err(same(Tensor::<Flex, 5>::from_primitive(
            TensorPrimitive::Float(t),
        )));
    };
    let volume = d * h * w;
    let mut out = vec![0f32; n * c * 8 * volume];
    each_chunk_mut(&mut out, 8 * volume, |i, dst| {
        let src = &src[i * volume..(i + 1) * volume];
        // D, then H, then W, as the tensor version (the rounding follows the order).
        let mut along_d = vec![0f32; 2 * volume];
        linear_x2(src, &mut along_d, 1, d, h * w);
        let mut along_h = vec![0f32; 4 * volume];
        linear_x2(&along_d, &mut along_h, 2 * d, h, w);
        linear_x2(&along_h, dst, 4 * d * h, w, 1);
    });
    let y = FlexTensor::from_data(TensorData::new(out, [n, c, 2 * d, 2 * h, 2 * w]));
    Ok(same(Tensor::<Flex, 5>::from_primitive(
        TensorPrimitive::Float(y),
    )))
}

/// Linear ×2 along an axis of `len` values `inner` apart, in `outer` blocks: as
/// `upsample::upsample_axis`, value for value.
fn linear_x2(src: &[f32], dst: &mut [f32], outer: usize, len: usize, inner: usize) {
    for o in 0..outer {
        for i in 0..len {
            let (prev, next) = (i.saturating_sub(1), (i + 1).min(len - 1));
            let at = |j: usize| (o * len + j) * inner;
            let (even, odd) = (
                (o * 2 * len + 2 * i) * inner,
                (o * 2 * len + 2 * i + 1) * inner,
            );
            for k in 0..inner {
                let x = src[at(i) + k];
                dst[even + k] = x * 0.75 + src[at(prev) + k] * 0.25;
                dst[odd + k] = x * 0.75 + src[at(next) + k] * 0.25;
            }
        }
    }
}
