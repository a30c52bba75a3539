//! The network's 3×3×3 convolutions (padding 1, stride 1 or 2) on the CPU, computed directly: no
//! im2col matrix. Flex builds, for every tile of 512 output voxels, a matrix of 27·Cin values per
//! voxel and multiplies it by the kernel; at 16 channels that matrix is 27 times the input, and
//! building it took as long as the products (perf on `nvnet predict`, 240×240×155, F=16).
//!
//! Here the input is laid out channels-last with a border of zeros, so that the 3 taps along x
//! of one (z, y) kernel row read one contiguous run of 3·Cin values per output voxel; a block of
//! voxels along x keeps its output channels in SIMD registers while each input value is
//! broadcast against a row of the kernel (a register-tiled matrix product whose left operand is
//! read in place). Natively on x86-64 with AVX2 and FMA (checked at run time: 6 voxels × 16
//! channels, or 12 × 8), on both cores; in the page's wasm with SIMD (4 voxels × 8 channels, one
//! thread). Any other case goes to flex. A ResBlock's GroupNorm and ReLU are applied as the
//! input is copied into that layout (`try_norm_relu_forward`), so the normalised map is never
//! written out.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::nn::flex_infer::relu_of;
use crate::nn::layout::{deinterleave4, interleave4};
use crate::nn::parallel::each;
use crate::nn::typecast::{cast, same};
use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::nn::GroupNorm;
use burn::nn::conv::Conv3d;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps};

/// `conv.forward(x)` for inference on flex, the 3×3×3 convolutions computed here; `Err(x)` back
/// for another backend.
pub fn try_forward<B: Backend>(
    conv: &Conv3d<B>,
    x: Tensor<B, 5>,
) -> Result<Tensor<B, 5>, Tensor<B, 5>> {
    forward(conv, x, None)
}

/// `conv.forward(relu(norm.forward(x)))` for inference on flex, with the GroupNorm and its
/// ReLU applied as the convolution copies its input (`layout::interleave4`): the normalised
/// map is never written, and `x` (which a ResBlock keeps for its sum) is not copied. The same
/// float32 operations as `flex_infer::group_norm`, so the same values. `Err(x)` back where the
/// direct kernel does not apply.
pub fn try_norm_relu_forward<B: Backend>(
    norm: &GroupNorm<B>,
    conv: &Conv3d<B>,
    x: Tensor<B, 5>,
) -> Result<Tensor<B, 5>, Tensor<B, 5>> {
    forward(conv, x, Some(norm))
}

fn forward<B: Backend>(
    conv: &Conv3d<B>,
    x: Tensor<B, 5>,
    norm: Option<&GroupNorm<B>>,
) -> Result<Tensor<B, 5>, Tensor<B, 5>> {
    let Some(padding) = crate::nn::model::explicit_padding(conv) else {
        return Err(x);
    };
    let options = ConvOptions::new(conv.stride, padding, conv.dilation, conv.groups);
    let [cout, _, kd, kh, kw] = conv.weight.dims();
    if norm.is_some() && !direct_applies([kd, kh, kw], &options, cout) {
        return Err(x);
    }
    let x: Tensor<Flex, 5> = cast(x)?;
    let dims = x.dims();
    let x = x.into_primitive().tensor().to_contiguous();
    let affine = match norm {
        None => None,
        Some(norm) => {
            let affine = x
                .as_slice::<f32>()
                .and_then(|xv| crate::nn::flex_infer::channel_affine(norm, xv, dims));
            let Some(affine) = affine else {
                return Err(same(Tensor::<Flex, 5>::from_primitive(
                    TensorPrimitive::Float(x),
                )));
            };
            Some(affine)
        }
    };
    let w: Tensor<Flex, 5> = same(conv.weight.val());
    let b: Option<Tensor<Flex, 1>> = conv.bias.as_ref().map(|b| same(b.val()));
    let y = conv3d_normed(
        x,
        w.into_primitive().tensor(),
        b.map(|b| b.into_primitive().tensor()),
        options,
        affine.as_deref(),
    );
    Ok(same(Tensor::<Flex, 5>::from_primitive(
        TensorPrimitive::Float(y),
    )))
}

/// Whether this CPU runs the direct kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    #[cfg(target_arch = "wasm32")]
    return true;
}

/// Whether `conv3x3x3` computes a convolution: 3×3×3 kernels, stride 1 or 2, padding 1, a
/// multiple of 8 output channels, on a CPU that runs it.
fn direct_applies(kernel: [usize; 3], options: &ConvOptions<3>, cout: usize) -> bool {
    let stride = options.stride[0];
    kernel == [3, 3, 3]
        && (stride == 1 || stride == 2)
        && options.stride == [stride; 3]
        && options.padding == [1, 1, 1]
        && options.dilation == [1, 1, 1]
        && options.groups == 1
        && cout.is_multiple_of(8)
        && available()
}

/// Output channels per register block, and voxels per block, for `cout` output channels.
fn blocking(cout: usize) -> (usize, usize) {
    if cfg!(target_arch = "wasm32") {
        (8, 4)
    } else if cout.is_multiple_of(16) {
        (16, 6)
    } else {
        (8, 12)
    }
}

/// `Flex::conv3d`, with 3×3×3 kernels at stride 1 or 2 and padding 1 computed directly where the
/// CPU can (output channels a multiple of 8), and in wasm 1×1×1 kernels by `pointwise_conv`.
pub fn conv3d(
    x: FloatTensor<Flex>,
    w: FloatTensor<Flex>,
    b: Option<FloatTensor<Flex>>,
    options: ConvOptions<3>,
) -> FloatTensor<Flex> {
    conv3d_normed(x, w, b, options, None)
}

/// `conv3d`, with `norm` ((a, b) per sample and input channel: `conv3x3x3`) for a convolution
/// the direct kernel computes.
fn conv3d_normed(
    x: FloatTensor<Flex>,
    w: FloatTensor<Flex>,
    b: Option<FloatTensor<Flex>>,
    options: ConvOptions<3>,
    norm: Option<&[(f32, f32)]>,
) -> FloatTensor<Flex> {
    let wt = Tensor::<Flex, 5>::from_primitive(TensorPrimitive::Float(w.clone()));
    let [cout, _, kd, kh, kw] = wt.dims();
    let stride = options.stride[0];
    let direct = direct_applies([kd, kh, kw], &options, cout);
    assert!(
        direct || norm.is_none(),
        "a normalised input needs the direct kernel"
    );
    // In the page also the 1×1×1 convolutions (`pointwise_conv`); natively flex's own.
    let pointwise = cfg!(target_arch = "wasm32")
        && [kd, kh, kw] == [1, 1, 1]
        && options.stride == [1, 1, 1]
        && options.padding == [0, 0, 0]
        && options.dilation == [1, 1, 1]
        && options.groups == 1;
    if !direct && !pointwise {
        return Flex::conv3d(x, w, b, options);
    }
    // The input read in place (flex keeps float32 tensors contiguous after a convolution).
    let x = x.to_contiguous();
    let Some(xv) = x.as_slice::<f32>() else {
        // `forward` read the same buffer as float32 to normalise it.
        assert!(norm.is_none(), "a normalised input is float32");
        return Flex::conv3d(x, w, b, options);
    };
    let dims: [usize; 5] = std::array::from_fn(|i| x.layout().shape()[i]);
    let values = |t: TensorData| t.convert::<f32>().into_vec::<f32>().expect("float32 data");
    let wv = values(wt.into_data());
    let bv =
        b.map(|b| values(Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(b)).into_data()));
    let y = if direct {
        conv3x3x3(xv, dims, &wv, cout, bv.as_deref(), stride, norm)
    } else {
        crate::nn::pointwise_conv::conv1x1(xv, dims, &wv, cout, bv.as_deref())
    };
    let [n, _, d, h, w] = dims;
    let [od, oh, ow] = if direct {
        [d, h, w].map(|s| (s - 1) / stride + 1)
    } else {
        [d, h, w]
    };
    FlexTensor::from_data(TensorData::new(y, [n, cout, od, oh, ow]))
}

/// y = x ⊛ w + b: `x` [n, cin, d, h, w] and the result [n, cout, d', h', w'] (NCDHW), `w`
/// [cout, cin, 3, 3, 3], zero padding of 1, `stride` 1 (d' = d) or 2 (the encoder's
/// downsampling: d' = ⌈d/2⌉). With `norm` ((a, b) per sample and input channel), x is first
/// replaced by relu(x·a + b) (a GroupNorm and its ReLU). Needs [`available`] and `cout` a
/// multiple of 8.
pub fn conv3x3x3(
    x: &[f32],
    [n, cin, d, h, w]: [usize; 5],
    weight: &[f32],
    cout: usize,
    bias: Option<&[f32]>,
    stride: usize,
    norm: Option<&[(f32, f32)]>,
) -> Vec<f32> {
    assert!(available() && cout.is_multiple_of(8) && cout > 0);
    assert!(stride == 1 || stride == 2);
    assert_eq!(x.len(), n * cin * d * h * w);
    assert_eq!(weight.len(), cout * cin * 27);
    assert!(norm.is_none_or(|norm| norm.len() == n * cin));
    let (lanes, voxels) = blocking(cout);
    let (hp, wp) = (h + 2, w + 2);
    let plane = hp * wp * cin;
    // The kernel as [block][tap][cin][lanes].
    let blocks = cout / lanes;
    let mut packed = vec![0f32; cout * cin * 27];
    for cb in 0..blocks {
        for t in 0..27 {
            for ci in 0..cin {
                for l in 0..lanes {
                    packed[((cb * 27 + t) * cin + ci) * lanes + l] =
                        weight[((cb * lanes + l) * cin + ci) * 27 + t];
                }
            }
        }
    }
    let [od, oh, ow] = [d, h, w].map(|s| (s - 1) / stride + 1);
    let spatial = od * oh * ow;
    let mut out = vec![0f32; n * cout * spatial];
    let width = ow.div_ceil(voxels) * voxels;
    // Between two output voxels' inputs along x.
    let step = stride * cin;
    for b in 0..n {
        // Channels last, a border of zeros, and room past the end for the last block's overrun.
        let mut xp = vec![0f32; (d + 2) * plane + (stride * voxels + 2) * cin];
        let padded = SendPtr(xp.as_mut_ptr());
        each(d, |z| {
            let padded = &padded;
            // SAFETY: plane z + 1 of `xp` is written by this task only.
            let dst =
                unsafe { std::slice::from_raw_parts_mut(padded.0.add((z + 1) * plane), plane) };
            let src = |c: usize, y: usize| &x[(((b * cin + c) * d + z) * h + y) * w..][..w];
            for y in 0..h {
                let row = ((y + 1) * wp + 1) * cin;
                if cin.is_multiple_of(4) {
                    for c in (0..cin).step_by(4) {
                        let rows = std::array::from_fn(|i| src(c + i, y));
                        let affine =
                            norm.map(|norm| std::array::from_fn(|i| norm[b * cin + c + i]));
                        interleave4(rows, w, &mut dst[row + c..], cin, affine);
                    }
                } else {
                    for c in 0..cin {
                        let affine = norm.map(|norm| norm[b * cin + c]);
                        for (i, v) in src(c, y).iter().enumerate() {
                            dst[row + i * cin + c] = match affine {
                                Some((a, s)) => relu_of(*v * a + s),
                                None => *v,
                            };
                        }
                    }
                }
            }
        });
        let outb = &mut out[b * cout * spatial..(b + 1) * cout * spatial];
        let dst = SendPtr(outb.as_mut_ptr());
        each(od, |z| {
            let dst = &dst;
            let mut line = vec![0f32; width * cout];
            for y in 0..oh {
                for cb in 0..blocks {
                    let wk = &packed[cb * 27 * cin * lanes..(cb + 1) * 27 * cin * lanes];
                    let bias = bias.map(|bias| &bias[cb * lanes..(cb + 1) * lanes]);
                    for x0 in (0..ow).step_by(voxels) {
                        let rows: [usize; 9] = std::array::from_fn(|r| {
                            (((stride * z + r / 3) * hp + stride * y + r % 3) * wp + stride * x0)
                                * cin
                        });
                        let at = &mut line[x0 * cout + cb * lanes..];
                        // SAFETY: `available()` was checked (and the relaxed-SIMD build runs
                        // only where the browser took its module: www/engine.js); every read
                        // lies in `xp` (the rows end within its border and slack), every write
                        // in `line`.
                        unsafe {
                            #[cfg(target_arch = "x86_64")]
                            if lanes == 16 {
                                block::<2, 6>(&xp, &rows, (cin, step), wk, bias, at, cout);
                            } else {
                                block::<1, 12>(&xp, &rows, (cin, step), wk, bias, at, cout);
                            }
                            #[cfg(target_arch = "wasm32")]
                            block_wasm::<2, 4>(&xp, &rows, (cin, step), wk, bias, at, cout);
                        }
                    }
                }
                // The line's voxels × channels into the output's channel planes.
                for co in (0..cout).step_by(4) {
                    let planes = std::array::from_fn(|i| {
                        let base = (co + i) * spatial + (z * oh + y) * ow;
                        // SAFETY: each (z, y) line of each channel is written by one task.
                        unsafe { std::slice::from_raw_parts_mut(dst.0.add(base), ow) }
                    });
                    deinterleave4(&line[co..], cout, ow, planes);
                }
            }
        });
    }
    out
}

struct SendPtr(*mut f32);
// SAFETY: the tasks write disjoint parts of the buffer.
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

/// MV voxels along x × NB·8 output channels: the sum over the 27 taps and the input channels,
/// kept in registers, then stored at `out` (voxel v's channels at `out[v·cout..]`). `(cin,
/// step)`: the input channels, and the floats between two output voxels' inputs (cin × stride).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block<const NB: usize, const MV: usize>(
    xp: &[f32],
    rows: &[usize; 9],
    (cin, step): (usize, usize),
    wk: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    cout: usize,
) {
    let init: [__m256; NB] = std::array::from_fn(|nb| match bias {
        Some(b) => unsafe { _mm256_loadu_ps(b.as_ptr().add(nb * 8)) },
        None => _mm256_setzero_ps(),
    });
    let mut acc = [init; MV];
    let lanes = NB * 8;
    debug_assert!(
        rows.iter()
            .all(|&r| r + (MV - 1) * step + 3 * cin <= xp.len())
    );
    debug_assert!(wk.len() == 27 * cin * lanes);
    debug_assert!(out.len() >= (MV - 1) * cout + lanes);
    let xp = xp.as_ptr();
    let wk = wk.as_ptr();
    for (r, &row) in rows.iter().enumerate() {
        // The row's three taps along x read 3·cin consecutive inputs against 3·cin consecutive
        // rows of the packed kernel: one loop.
        let taps = unsafe { wk.add(r * 3 * cin * lanes) };
        let from = unsafe { xp.add(row) };
        for ci in 0..3 * cin {
            let wv: [__m256; NB] =
                std::array::from_fn(|nb| unsafe { _mm256_loadu_ps(taps.add(ci * lanes + nb * 8)) });
            for (v, acc) in acc.iter_mut().enumerate() {
                let a = unsafe { _mm256_broadcast_ss(&*from.add(v * step + ci)) };
                for (acc, w) in acc.iter_mut().zip(&wv) {
                    *acc = _mm256_fmadd_ps(a, *w, *acc);
                }
            }
        }
    }
    let out = out.as_mut_ptr();
    for (v, acc) in acc.iter().enumerate() {
        for (nb, acc) in acc.iter().enumerate() {
            unsafe { _mm256_storeu_ps(out.add(v * cout + nb * 8), *acc) };
        }
    }
}

/// As `block`, with wasm's 128-bit SIMD: MV voxels × NB·4 output channels. Baseline SIMD has
/// no fused multiply-add (a multiply and an add); the relaxed-SIMD build's `relaxed_madd` is one
/// where the CPU has it, else the same two steps (the page's CPU segmentation of a 240×240×155
/// case 4.3 → 3.6 s: docs/PERFORMANCE.md).
#[cfg(target_arch = "wasm32")]
#[cfg_attr(feature = "relaxed-simd", target_feature(enable = "relaxed-simd"))]
unsafe fn block_wasm<const NB: usize, const MV: usize>(
    xp: &[f32],
    rows: &[usize; 9],
    (cin, step): (usize, usize),
    wk: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    cout: usize,
) {
    use core::arch::wasm32::*;
    let lanes = NB * 4;
    debug_assert!(
        rows.iter()
            .all(|&r| r + (MV - 1) * step + 3 * cin <= xp.len())
    );
    debug_assert!(wk.len() == 27 * cin * lanes);
    debug_assert!(out.len() >= (MV - 1) * cout + lanes);
    let init: [v128; NB] = std::array::from_fn(|nb| match bias {
        Some(b) => unsafe { v128_load(b.as_ptr().add(nb * 4) as *const v128) },
        None => f32x4_splat(0.0),
    });
    let mut acc = [init; MV];
    let xp = xp.as_ptr();
    let wk = wk.as_ptr();
    for (r, &row) in rows.iter().enumerate() {
        let taps = unsafe { wk.add(r * 3 * cin * lanes) };
        let from = unsafe { xp.add(row) };
        for ci in 0..3 * cin {
            let wv: [v128; NB] = std::array::from_fn(|nb| unsafe {
                v128_load(taps.add(ci * lanes + nb * 4) as *const v128)
            });
            for (v, acc) in acc.iter_mut().enumerate() {
                let a = f32x4_splat(unsafe { *from.add(v * step + ci) });
                for (acc, w) in acc.iter_mut().zip(&wv) {
                    #[cfg(feature = "relaxed-simd")]
                    {
                        *acc = f32x4_relaxed_madd(a, *w, *acc);
                    }
                    #[cfg(not(feature = "relaxed-simd"))]
                    {
                        *acc = f32x4_add(*acc, f32x4_mul(a, *w));
                    }
                }
            }
        }
    }
    let out = out.as_mut_ptr();
    for (v, acc) in acc.iter().enumerate() {
        for (nb, acc) in acc.iter().enumerate() {
            unsafe { v128_store(out.add(v * cout + nb * 4) as *mut v128, *acc) };
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn random(n: usize) -> Vec<f32> {
        Tensor::<Flex, 1>::random(
            [n],
            burn::tensor::Distribution::Uniform(-1.0, 1.0),
            &Default::default(),
        )
        .into_data()
        .into_vec::<f32>()
        .unwrap()
    }

    /// The largest difference between `ours` and flex's own convolution of `x` [n, cin, d, h,
    /// w] by `weight` [cout, cin, k, k, k] (k from its length) with `options`.
    pub(crate) fn worst_against_flex(
        ours: &[f32],
        x: &[f32],
        [n, cin, d, h, w]: [usize; 5],
        (weight, cout): (&[f32], usize),
        bias: Option<&[f32]>,
        options: ConvOptions<3>,
    ) -> f32 {
        let device = Default::default();
        let k = (weight.len() / (cout * cin)) as f64;
        let k = k.cbrt().round() as usize;
        let tensor = |v: &[f32], dims: Vec<usize>| {
            Tensor::<Flex, 5>::from_data(TensorData::new(v.to_vec(), dims), &device)
                .into_primitive()
                .tensor()
        };
        let b = bias.map(|bias| {
            Tensor::<Flex, 1>::from_data(TensorData::new(bias.to_vec(), [cout]), &device)
                .into_primitive()
                .tensor()
        });
        let theirs = Flex::conv3d(
            tensor(x, vec![n, cin, d, h, w]),
            tensor(weight, vec![cout, cin, k, k, k]),
            b,
            options,
        );
        let theirs = Tensor::<Flex, 5>::from_primitive(TensorPrimitive::Float(theirs))
            .into_data()
            .into_vec::<f32>()
            .unwrap();
        assert_eq!(ours.len(), theirs.len());
        ours.iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
    }

    /// Against flex's own convolution, on shapes that exercise both register blocks, a batch
    /// of two, widths that do not divide into blocks, with and without a bias.
    #[test]
    fn the_direct_convolution_matches_flex() {
        if !available() {
            eprintln!("no AVX2/FMA on this CPU: the direct kernel is not used here");
            return;
        }
        for (n, cin, cout, [d, h, w], with_bias, stride) in [
            (1, 4, 16, [5, 7, 9], true, 1),
            (2, 16, 8, [4, 6, 13], false, 1),
            (1, 8, 32, [3, 5, 6], true, 1),
            (1, 3, 24, [2, 3, 4], false, 1),
            // The encoder's downsampling: even and odd sizes, both register blocks.
            (1, 16, 32, [6, 9, 14], true, 2),
            (2, 8, 8, [5, 4, 27], false, 2),
            (1, 4, 16, [1, 2, 3], true, 2),
        ] {
            let x = random(n * cin * d * h * w);
            let wt = random(cout * cin * 27);
            let bias = random(cout);
            let bias = with_bias.then_some(&bias[..]);
            let ours = conv3x3x3(&x, [n, cin, d, h, w], &wt, cout, bias, stride, None);
            let options = ConvOptions::new([stride; 3], [1, 1, 1], [1, 1, 1], 1);
            let worst =
                worst_against_flex(&ours, &x, [n, cin, d, h, w], (&wt, cout), bias, options);
            assert!(
                worst < 1e-4,
                "({n}, {cin}→{cout}, {d}×{h}×{w}, stride {stride}): differs by {worst}"
            );
        }
    }

    /// The fused GroupNorm + ReLU + convolution gives the two steps' values exactly (the same
    /// float32 operations), with 4 and 3 input channels (the SIMD and the scalar copies), a
    /// batch of two, and γ and β away from 1 and 0.
    #[test]
    fn the_fused_normalisation_gives_the_separate_steps_values() {
        if !available() {
            return;
        }
        use burn::nn::GroupNormConfig;
        use burn::nn::conv::Conv3dConfig;
        let device = Default::default();
        for (n, c, groups, [d, h, w]) in [
            (2, 8, 4, [3, 5, 9]),
            (1, 12, 4, [4, 4, 6]),
            (1, 3, 3, [2, 3, 5]),
        ] {
            let cout = 8;
            let mut norm = GroupNormConfig::new(groups, c).init::<Flex>(&device);
            let affine = |k: f32| {
                Tensor::<Flex, 1>::from_data(
                    TensorData::new(
                        (0..c).map(|i| k * (i as f32 - 1.5)).collect::<Vec<f32>>(),
                        [c],
                    ),
                    &device,
                )
            };
            norm.gamma = Some(burn::module::Param::from_tensor(affine(0.7)));
            norm.beta = Some(burn::module::Param::from_tensor(affine(-0.3)));
            let conv = Conv3dConfig::new([c, cout], [3, 3, 3])
                .with_padding(burn::nn::PaddingConfig3d::Explicit(1, 1, 1))
                .init::<Flex>(&device);
            let x = Tensor::<Flex, 5>::from_data(
                TensorData::new(random(n * c * d * h * w), [n, c, d, h, w]),
                &device,
            )
            .mul_scalar(3.0)
            .add_scalar(0.5);
            let Ok(fused) = try_norm_relu_forward(&norm, &conv, x.clone()) else {
                panic!("the direct kernel does not apply");
            };
            let separate =
                crate::nn::model::conv(&conv, crate::nn::model::group_norm_relu(&norm, x));
            assert_eq!(
                fused.into_data().into_vec::<f32>().unwrap(),
                separate.into_data().into_vec::<f32>().unwrap(),
                "n {n}, {c} channels, {d}×{h}×{w}"
            );
        }
    }
}
