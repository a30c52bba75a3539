//! Faster gradients for training on the CPU (`Autodiff<Flex>`).
//!
//! Burn 0.21 computes a 3-D convolution's weight gradient as another convolution whose kernel
//! is the whole output gradient: on flex that builds an im2col matrix of 27 × D·H·W values per
//! input channel and spent a third of a training step there (measured with perf on F=8,
//! 64×80×64: 6.0 s a step). Here the convolution is the same flex forward, but its backward
//! computes the weight gradient as blocked im2col matrix products (flex's gemm) and, for
//! stride 1, a forward convolution with the flipped kernel for the input gradient (flex's
//! conv3d is faster than its conv_transpose3d). GroupNorm gets a fused forward and backward
//! (Burn's composition walks strided broadcasts on flex); its forward also serves flex
//! inference. The autodiff operation around the convolution gradients is `conv_grad`'s; other
//! backends never come here.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::nn::GroupNorm;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps};
use rayon::prelude::*;

use crate::nn::conv_grad::{ConvGrads, cast, same};
use crate::nn::flex_infer::floats;

type Ad = Autodiff<Flex>;

impl ConvGrads for Flex {
    #[cfg(direct_kernels)]
    fn forward(
        x: FloatTensor<Flex>,
        w: FloatTensor<Flex>,
        b: Option<FloatTensor<Flex>>,
        options: ConvOptions<3>,
    ) -> FloatTensor<Flex> {
        crate::nn::direct_conv::conv3d(x, w, b, options)
    }
    fn input_grad(
        x: FloatTensor<Flex>,
        w: FloatTensor<Flex>,
        grad: FloatTensor<Flex>,
        options: ConvOptions<3>,
    ) -> FloatTensor<Flex> {
        input_grad(x, w, grad, options)
    }
    fn weight_grad(
        x: FloatTensor<Flex>,
        grad: FloatTensor<Flex>,
        k: [usize; 3],
        options: &ConvOptions<3>,
    ) -> FloatTensor<Flex> {
        weight_grad(x, grad, k, options)
    }
}

fn flex<const D: usize>(t: FloatTensor<Flex>) -> Tensor<Flex, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// dL/dx. Stride 1: a convolution of the output gradient with the kernel flipped and its
/// channel axes swapped, padded by k − 1 − p. Otherwise Burn's transposed convolution.
fn input_grad(
    x: FloatTensor<Flex>,
    w: FloatTensor<Flex>,
    grad: FloatTensor<Flex>,
    options: ConvOptions<3>,
) -> FloatTensor<Flex> {
    let [_, _, kd, kh, kw] = flex::<5>(w.clone()).dims();
    let k = [kd, kh, kw];
    let same = options.stride == [1, 1, 1] && (0..3).all(|a| options.padding[a] < k[a]);
    if !same {
        return Flex::conv3d_x_backward(x, w, grad, options);
    }
    let flipped = flex::<5>(w).swap_dims(0, 1).flip([2, 3, 4]);
    let padding = [0, 1, 2].map(|a| k[a] - 1 - options.padding[a]);
    #[cfg(direct_kernels)]
    let conv3d = crate::nn::direct_conv::conv3d;
    #[cfg(not(direct_kernels))]
    let conv3d = Flex::conv3d;
    conv3d(
        grad,
        flipped.into_primitive().tensor(),
        None,
        ConvOptions::new([1, 1, 1], padding, [1, 1, 1], 1),
    )
}

fn to_vec(t: FloatTensor<Flex>) -> (Vec<f32>, [usize; 5]) {
    let t = flex::<5>(t);
    let dims = t.dims();
    let v = t
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("float32 data");
    (v, dims)
}

/// dL/dW[co, ci, kd, kh, kw] = Σ over outputs of grad[co, o] · x[ci, o·s + k − p] (zero outside
/// x), as matrix products: for a block of output depth slices, an im2col matrix of the input
/// (ci·k³ rows, one column per output voxel) times the output gradient's block, transposed.
/// flex's matmul is gemm with SIMD and threads; the blocks are summed in a fixed order, so the
/// result does not depend on the thread count.
fn weight_grad(
    x: FloatTensor<Flex>,
    grad: FloatTensor<Flex>,
    k: [usize; 3],
    options: &ConvOptions<3>,
) -> FloatTensor<Flex> {
    // Floats in one im2col block (16 MB): big enough for gemm, small enough to stay cheap.
    weight_grad_in_blocks(x, grad, k, options, 1 << 22)
}

fn weight_grad_in_blocks(
    x: FloatTensor<Flex>,
    grad: FloatTensor<Flex>,
    k: [usize; 3],
    options: &ConvOptions<3>,
    block_floats: usize,
) -> FloatTensor<Flex> {
    let (x, x_dims) = to_vec(x);
    let grad = flex::<5>(grad);
    let [n, co, d_o, h_o, w_o] = grad.dims();
    let cols = Im2col::new(&x, x_dims, k, options, [d_o, h_o, w_o]);
    let plane = h_o * w_o;
    let device = Default::default();
    // Σ im2col · gradᵀ: [ci·k³, co].
    let mut total: Option<Tensor<Flex, 2>> = None;
    for b in 0..n {
        let g = grad.clone().narrow(0, b, 1).reshape([co, d_o * plane]);
        for (d0, d1) in cols.blocks(block_floats) {
            let part = cols
                .block(b, d0, d1)
                .matmul(g.clone().slice([0..co, d0 * plane..d1 * plane]).transpose());
            total = Some(match total {
                Some(t) => t + part,
                None => part,
            });
        }
    }
    let total = total.unwrap_or_else(|| Tensor::zeros([cols.rows, co], &device));
    total
        .transpose()
        .reshape([co, x_dims[1], k[0], k[1], k[2]])
        .into_primitive()
        .tensor()
}

/// The im2col matrix of a 3-D convolution's input, one block of output depth slices at a time:
/// ci·k³ rows (channel, then taps), one column per output voxel, zero where a tap falls outside.
struct Im2col<'a> {
    x: &'a [f32],
    /// Input [n, ci, d, h, w].
    dims: [usize; 5],
    k: [usize; 3],
    stride: [usize; 3],
    padding: [usize; 3],
    out: [usize; 3],
    rows: usize,
    /// Per tap along the last axis: the outputs whose input is inside.
    w_range: Vec<(usize, usize)>,
}

impl<'a> Im2col<'a> {
    fn new(
        x: &'a [f32],
        dims: [usize; 5],
        k: [usize; 3],
        options: &ConvOptions<3>,
        out: [usize; 3],
    ) -> Self {
        let (s, p, wi) = (options.stride[2], options.padding[2], dims[4]);
        let w_range = (0..k[2])
            .map(|t| {
                let lo = p.saturating_sub(t).div_ceil(s);
                let hi = if wi + p > t {
                    ((wi + p - t - 1) / s + 1).min(out[2])
                } else {
                    0
                };
                (lo, hi.max(lo))
            })
            .collect();
        Im2col {
            x,
            dims,
            k,
            stride: options.stride,
            padding: options.padding,
            out,
            rows: dims[1] * k[0] * k[1] * k[2],
            w_range,
        }
    }

    /// Output depth ranges whose blocks hold about `floats` values (at least one slice each).
    fn blocks(&self, floats: usize) -> impl Iterator<Item = (usize, usize)> + use<> {
        let d_o = self.out[0];
        let per = (floats / (self.rows * self.out[1] * self.out[2]).max(1)).clamp(1, d_o.max(1));
        (0..d_o)
            .step_by(per)
            .map(move |d0| (d0, (d0 + per).min(d_o)))
    }

    /// The block of batch item `b` for output depth slices `d0..d1`: [rows, (d1 − d0)·h·w].
    fn block(&self, b: usize, d0: usize, d1: usize) -> Tensor<Flex, 2> {
        let [_, ci, di, hi, wi] = self.dims;
        let [_, h_o, w_o] = self.out;
        let (k, s, p) = (self.k, self.stride, self.padding);
        let kvol = k[0] * k[1] * k[2];
        let cols_n = (d1 - d0) * h_o * w_o;
        // For output index o and kernel tap t along an axis: the input index, if inside.
        let input_at = |o: usize, t: usize, a: usize, size: usize| -> Option<usize> {
            (o * s[a] + t).checked_sub(p[a]).filter(|&i| i < size)
        };
        let mut cols = vec![0f32; self.rows * cols_n];
        cols.par_chunks_mut(cols_n.max(1))
            .enumerate()
            .for_each(|(r, row)| {
                let (c, t) = (r / kvol, r % kvol);
                let (td, th, tw) = (t / (k[1] * k[2]), (t / k[2]) % k[1], t % k[2]);
                let (lo, hi_) = self.w_range[tw];
                if lo >= hi_ {
                    return;
                }
                let start = lo * s[2] + tw - p[2];
                for od in d0..d1 {
                    let Some(id) = input_at(od, td, 0, di) else {
                        continue;
                    };
                    for oh in 0..h_o {
                        let Some(ih) = input_at(oh, th, 1, hi) else {
                            continue;
                        };
                        let xrow = &self.x[(((b * ci + c) * di + id) * hi + ih) * wi..][..wi];
                        let out = &mut row[((od - d0) * h_o + oh) * w_o..][..w_o];
                        if s[2] == 1 {
                            out[lo..hi_].copy_from_slice(&xrow[start..start + (hi_ - lo)]);
                        } else {
                            for (j, v) in out[lo..hi_].iter_mut().enumerate() {
                                *v = xrow[start + j * s[2]];
                            }
                        }
                    }
                }
            });
        Tensor::from_data(
            TensorData::new(cols, [self.rows, cols_n]),
            &Default::default(),
        )
    }
}

/// `group_norm` with a fused forward and backward when `B` is `Autodiff<Flex>` (inference on
/// `Flex` is `flex_infer`'s): Burn's
/// composition (two reductions, broadcast subtract/divide, affine) walks strided views on flex
/// and, with its backward, took a third of a CPU training step after the convolutions were fixed.
pub fn group_norm<B: Backend>(
    norm: &GroupNorm<B>,
    x: Tensor<B, 5>,
) -> Result<Tensor<B, 5>, Tensor<B, 5>> {
    let (Some(gamma), Some(beta)) = (&norm.gamma, &norm.beta) else {
        return Err(x);
    };
    let x: Tensor<Ad, 5> = cast(x)?;
    let gamma: Tensor<Ad, 1> = same(gamma.val());
    let beta: Tensor<Ad, 1> = same(beta.val());
    let x = x.into_primitive().tensor();
    let gamma = gamma.into_primitive().tensor();
    let beta = beta.into_primitive().tensor();
    let groups = norm.num_groups;
    let eps = norm.epsilon;
    let out = match GroupNormOp
        .prepare::<NoCheckpointing>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (y, normed, rstd) = group_norm_forward(
                x.primitive,
                gamma.primitive.clone(),
                beta.primitive,
                groups,
                eps,
                true,
            );
            prep.finish((normed, rstd, gamma.primitive, groups), y)
        }
        OpsKind::UnTracked(prep) => {
            let (y, _, _) = group_norm_forward(
                x.primitive,
                gamma.primitive,
                beta.primitive,
                groups,
                eps,
                false,
            );
            prep.finish(y)
        }
    };
    Ok(same(Tensor::<Ad, 5>::from_primitive(
        TensorPrimitive::Float(out),
    )))
}

#[derive(Debug)]
struct GroupNormOp;

/// Saved for the backward: the normalised input x̂, 1/σ per (sample, group), γ, the groups.
type GroupNormState = (Vec<f32>, Vec<f32>, FloatTensor<Flex>, usize);

fn tensor5(values: Vec<f32>, dims: [usize; 5]) -> FloatTensor<Flex> {
    Tensor::<Flex, 5>::from_data(TensorData::new(values, dims), &Default::default())
        .into_primitive()
        .tensor()
}

/// y = γ·(x − μ)/σ + β per group; returns y, x̂ (when `keep_normed`, for the backward; else
/// y is written over the input's buffer) and 1/σ. Statistics in float64.
fn group_norm_forward(
    x: FloatTensor<Flex>,
    gamma: FloatTensor<Flex>,
    beta: FloatTensor<Flex>,
    groups: usize,
    eps: f64,
    keep_normed: bool,
) -> (FloatTensor<Flex>, Vec<f32>, Vec<f32>) {
    let (mut buf, dims) = to_vec(x);
    let [_, c, d, h, w] = dims;
    let gamma = floats(gamma);
    let beta = floats(beta);
    let per_channel = d * h * w;
    let per_group = c / groups * per_channel;
    // Mean and 1/σ per (sample, group), then one pass per channel.
    let stats: Vec<(f64, f64)> = buf
        .par_chunks(per_group)
        .map(|xs| {
            let n = xs.len() as f64;
            let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            (mean, 1.0 / (var + eps).sqrt())
        })
        .collect();
    let rstd = stats.iter().map(|s| s.1 as f32).collect();
    let cg = c / groups;
    // Chunk `sc` of length D·H·W is channel sc % C of sample sc / C.
    let channel = |sc: usize| {
        let (s, k) = (sc / c, sc % c);
        let (mean, inv) = stats[s * groups + k / cg];
        (mean, inv, gamma[k], beta[k])
    };
    if keep_normed {
        let mut y = vec![0f32; buf.len()];
        buf.par_chunks_mut(per_channel)
            .zip(y.par_chunks_mut(per_channel))
            .enumerate()
            .for_each(|(sc, (xs, ys))| {
                let (mean, inv, g, bt) = channel(sc);
                for (x, y) in xs.iter_mut().zip(ys) {
                    let xh = ((*x as f64 - mean) * inv) as f32;
                    *x = xh;
                    *y = xh * g + bt;
                }
            });
        (tensor5(y, dims), buf, rstd)
    } else {
        buf.par_chunks_mut(per_channel)
            .enumerate()
            .for_each(|(sc, xs)| {
                let (mean, inv, g, bt) = channel(sc);
                for x in xs.iter_mut() {
                    *x = ((*x as f64 - mean) * inv) as f32 * g + bt;
                }
            });
        (tensor5(buf, dims), Vec::new(), rstd)
    }
}

impl Backward<Flex, 3> for GroupNormOp {
    type State = GroupNormState;

    /// dβ_c = Σ dy, dγ_c = Σ dy·x̂, and per group, with g = dy·γ:
    /// dx = (g − mean(g) − x̂·mean(g·x̂)) / σ. The same formula as `norm_grad`'s, in one pass
    /// over memory for the CPU (why twice: docs/DESIGN.md §6).
    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let (normed, rstd, gamma, groups) = ops.state;
        let (dy, dims) = to_vec(grads.consume::<Flex>(&ops.node));
        let [b, c, d, h, w] = dims;
        let gamma = floats(gamma);
        let per_channel = d * h * w;
        let per_group = c / groups * per_channel;
        // Per (sample, channel): Σ dy and Σ dy·x̂.
        let sums: Vec<(f64, f64)> = dy
            .par_chunks(per_channel)
            .zip(normed.par_chunks(per_channel))
            .map(|(g, xh)| {
                let mut s = (0f64, 0f64);
                for (&gv, &xv) in g.iter().zip(xh) {
                    s.0 += gv as f64;
                    s.1 += (gv * xv) as f64;
                }
                s
            })
            .collect();
        if let Some(node) = node_beta {
            let db = (0..c)
                .map(|ch| (0..b).map(|s| sums[s * c + ch].0).sum::<f64>() as f32)
                .collect();
            grads.register::<Flex>(node.id, tensor1(db));
        }
        if let Some(node) = node_gamma {
            let dg = (0..c)
                .map(|ch| (0..b).map(|s| sums[s * c + ch].1).sum::<f64>() as f32)
                .collect();
            grads.register::<Flex>(node.id, tensor1(dg));
        }
        if let Some(node) = node_x {
            let cg = c / groups;
            let mut dx = dy;
            dx.par_chunks_mut(per_group)
                .zip(normed.par_chunks(per_group))
                .enumerate()
                .for_each(|(bg, (g, xh))| {
                    let (s, grp) = (bg / groups, bg % groups);
                    let n = per_group as f64;
                    // mean(dy·γ) and mean(dy·γ·x̂) over the group, from the channel sums.
                    let (mut m1, mut m2) = (0f64, 0f64);
                    for k in 0..cg {
                        let ch = grp * cg + k;
                        m1 += sums[s * c + ch].0 * gamma[ch] as f64;
                        m2 += sums[s * c + ch].1 * gamma[ch] as f64;
                    }
                    let (m1, m2) = ((m1 / n) as f32, (m2 / n) as f32);
                    let r = rstd[bg];
                    for (k, (gc, xc)) in g
                        .chunks_mut(per_channel)
                        .zip(xh.chunks(per_channel))
                        .enumerate()
                    {
                        let gm = gamma[grp * cg + k];
                        for (gv, &xv) in gc.iter_mut().zip(xc) {
                            *gv = (*gv * gm - m1 - xv * m2) * r;
                        }
                    }
                });
            grads.register::<Flex>(node.id, tensor5(dx, dims));
        }
    }
}

fn tensor1(values: Vec<f32>) -> FloatTensor<Flex> {
    let n = values.len();
    Tensor::<Flex, 1>::from_data(TensorData::new(values, [n]), &Default::default())
        .into_primitive()
        .tensor()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::PaddingConfig3d;
    use burn::nn::conv::{Conv3d, Conv3dConfig};
    use burn::tensor::Distribution;

    /// Gradients of x, the weight and the bias through `conv3d` equal Burn's own.
    fn check(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        bias: bool,
        dims: [usize; 3],
    ) {
        let device = Default::default();
        let conv: Conv3d<Ad> = Conv3dConfig::new([cin, cout], [k; 3])
            .with_stride([stride; 3])
            .with_padding(PaddingConfig3d::Explicit(pad, pad, pad))
            .with_bias(bias)
            .init(&device);
        let x = Tensor::<Ad, 5>::random(
            [2, cin, dims[0], dims[1], dims[2]],
            Distribution::Normal(0.0, 1.0),
            &device,
        )
        .require_grad();
        // nvnet's backward, not Burn's, must be the one under test.
        assert!(crate::nn::conv_grad::try_conv3d(&conv, x.clone()).is_ok());
        let ours = crate::nn::model::conv(&conv, x.clone());
        let burns = conv.forward(x.clone());
        let r = Tensor::<Ad, 5>::random(burns.dims(), Distribution::Normal(0.0, 1.0), &device);
        close(ours.clone().inner(), burns.clone().inner(), "output");
        let g1 = (ours * r.clone()).sum().backward();
        let g2 = (burns * r).sum().backward();
        close(x.grad(&g1).unwrap(), x.grad(&g2).unwrap(), "input gradient");
        close(
            conv.weight.val().grad(&g1).unwrap(),
            conv.weight.val().grad(&g2).unwrap(),
            "weight gradient",
        );
        if let Some(b) = &conv.bias {
            let a = b.val().grad(&g1).unwrap().reshape([1, cout, 1, 1, 1]);
            let c = b.val().grad(&g2).unwrap().reshape([1, cout, 1, 1, 1]);
            close(a, c, "bias gradient");
        }
    }

    #[test]
    fn group_norm_and_its_gradients_match_burn() {
        let device = Default::default();
        let norm: GroupNorm<Ad> = burn::nn::GroupNormConfig::new(4, 8)
            .with_epsilon(1e-5)
            .init(&device);
        // Non-trivial γ, β.
        let mut norm = norm;
        norm.gamma = Some(burn::module::Param::from_tensor(Tensor::random(
            [8],
            Distribution::Normal(1.0, 0.5),
            &device,
        )));
        norm.beta = Some(burn::module::Param::from_tensor(Tensor::random(
            [8],
            Distribution::Normal(0.0, 0.5),
            &device,
        )));
        let x = Tensor::<Ad, 5>::random([2, 8, 5, 6, 7], Distribution::Normal(3.0, 2.0), &device)
            .require_grad();
        let ours = group_norm(&norm, x.clone()).ok().unwrap();
        let burns = norm.forward(x.clone());
        let r = Tensor::<Ad, 5>::random(burns.dims(), Distribution::Normal(0.0, 1.0), &device);
        close(ours.clone().inner(), burns.clone().inner(), "output");
        let g1 = (ours * r.clone()).sum().backward();
        let g2 = (burns * r).sum().backward();
        close(x.grad(&g1).unwrap(), x.grad(&g2).unwrap(), "input gradient");
        let as5 = |t: Tensor<Flex, 1>| t.reshape([1, 8, 1, 1, 1]);
        for (p, what) in [
            (norm.gamma.as_ref().unwrap(), "gamma gradient"),
            (norm.beta.as_ref().unwrap(), "beta gradient"),
        ] {
            close(
                as5(p.val().grad(&g1).unwrap()),
                as5(p.val().grad(&g2).unwrap()),
                what,
            );
        }
    }

    #[test]
    fn group_norm_inference_on_flex_matches_burn() {
        let device = Default::default();
        let mut norm: GroupNorm<Flex> = burn::nn::GroupNormConfig::new(2, 6).init(&device);
        norm.gamma = Some(burn::module::Param::from_tensor(Tensor::random(
            [6],
            Distribution::Normal(1.0, 0.5),
            &device,
        )));
        norm.beta = Some(burn::module::Param::from_tensor(Tensor::random(
            [6],
            Distribution::Normal(0.0, 0.5),
            &device,
        )));
        let x =
            Tensor::<Flex, 5>::random([2, 6, 4, 5, 7], Distribution::Normal(-1.0, 3.0), &device);
        close(
            crate::nn::flex_infer::group_norm(&norm, x.clone(), false)
                .ok()
                .unwrap(),
            norm.forward(x.clone()),
            "output",
        );
        // With the ReLU; the input, still held here, is not written over.
        let before = x.to_data();
        close(
            crate::nn::flex_infer::group_norm(&norm, x.clone(), true)
                .ok()
                .unwrap(),
            burn::tensor::activation::relu(norm.forward(x.clone())),
            "output with ReLU",
        );
        assert_eq!(x.to_data(), before, "the input was written over");
    }

    fn close(a: Tensor<Flex, 5>, b: Tensor<Flex, 5>, what: &str) {
        let scale = b.clone().abs().max().into_scalar().max(1.0);
        let diff = (a - b).abs().max().into_scalar();
        assert!(
            diff <= 1e-4 * scale,
            "{what}: max difference {diff} (scale {scale})"
        );
    }

    #[test]
    fn same_3x3x3_convolution_gradients_match_burn() {
        check(3, 5, 3, 1, 1, false, [6, 7, 9]);
        check(8, 8, 3, 1, 1, true, [5, 4, 17]);
    }

    #[test]
    fn weight_gradient_is_the_same_in_blocks_of_one_slice() {
        let device = Default::default();
        for (stride, dims) in [(1, [5, 6, 7]), (2, [7, 6, 9])] {
            let x = Tensor::<Flex, 5>::random(
                [2, 3, dims[0], dims[1], dims[2]],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let out = [0, 1, 2].map(|a| (dims[a] + 2 - 3) / stride + 1);
            let g = Tensor::<Flex, 5>::random(
                [2, 4, out[0], out[1], out[2]],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let options = ConvOptions::new([stride; 3], [1, 1, 1], [1, 1, 1], 1);
            let whole = weight_grad(
                x.clone().into_primitive().tensor(),
                g.clone().into_primitive().tensor(),
                [3; 3],
                &options,
            );
            let sliced = weight_grad_in_blocks(
                x.into_primitive().tensor(),
                g.into_primitive().tensor(),
                [3; 3],
                &options,
                1,
            );
            close(
                flex::<5>(sliced),
                flex::<5>(whole),
                "weight gradient in blocks",
            );
        }
    }

    #[test]
    fn strided_and_pointwise_convolution_gradients_match_burn() {
        check(4, 6, 3, 2, 1, false, [8, 6, 10]);
        check(4, 6, 3, 2, 1, false, [7, 5, 9]);
        check(6, 3, 1, 1, 0, true, [4, 5, 6]);
    }
}
