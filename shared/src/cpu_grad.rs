//! Faster gradients for training on the CPU (`Autodiff<Flex>`).
//!
//! Burn 0.21 computes a 3-D convolution's weight gradient as another convolution whose kernel
//! is the whole output gradient: on flex that builds an im2col matrix of 27 × D·H·W values per
//! input channel and spent a third of a training step there (measured with perf on F=8,
//! 64×80×64: 6.0 s a step). Here the convolution is the same flex forward, but its backward is
//! a direct loop for the weight gradient (small accumulators that stay in cache) and, for
//! stride 1, a forward convolution with the flipped kernel for the input gradient (flex's
//! conv3d is faster than its conv_transpose3d). GroupNorm gets a fused forward and backward
//! (Burn's composition walks strided broadcasts on flex); its forward also serves flex
//! inference. Other backends never come here.

use std::any::Any;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::nn::GroupNorm;
use burn::nn::PaddingConfig3d;
use burn::nn::conv::Conv3d;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps};
use rayon::prelude::*;

type Ad = Autodiff<Flex>;

/// Move a value to another type when the two are the same type (a checked, safe cast).
fn cast<T: 'static, U: 'static>(value: T) -> Result<U, T> {
    let mut slot = Some(value);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>() {
        Some(u) => Ok(u.take().expect("just filled")),
        None => Err(slot.expect("untouched")),
    }
}

/// `conv.forward(x)`, with this module's backward when `B` is `Autodiff<Flex>`.
pub fn conv3d<B: Backend>(conv: &Conv3d<B>, x: Tensor<B, 5>) -> Tensor<B, 5> {
    let x = match cast::<Tensor<B, 5>, Tensor<Ad, 5>>(x) {
        Ok(x) => x,
        Err(x) => return conv.forward(x),
    };
    let weight: Tensor<Ad, 5> = cast(conv.weight.val()).ok().expect("same backend as x");
    let bias: Option<Tensor<Ad, 1>> = conv
        .bias
        .as_ref()
        .map(|b| cast(b.val()).ok().expect("same backend as x"));
    let padding = match conv.padding {
        PaddingConfig3d::Explicit(d, h, w) => [d, h, w],
        PaddingConfig3d::Valid => [0, 0, 0],
        // Not used by NvNet: Burn's own path.
        PaddingConfig3d::Same => {
            let x = cast(x).ok().expect("the same type back");
            return conv.forward(x);
        }
    };
    let options = ConvOptions::new(conv.stride, padding, conv.dilation, conv.groups);
    let out = conv3d_ad(x, weight, bias, options);
    cast(out).ok().expect("the same type back")
}

fn conv3d_ad(
    x: Tensor<Ad, 5>,
    weight: Tensor<Ad, 5>,
    bias: Option<Tensor<Ad, 1>>,
    options: ConvOptions<3>,
) -> Tensor<Ad, 5> {
    let supported = options.groups == 1 && options.dilation == [1, 1, 1];
    let x = x.into_primitive().tensor();
    let w = weight.into_primitive().tensor();
    let b = bias.map(|b| b.into_primitive().tensor());
    if !supported {
        return Tensor::from_primitive(TensorPrimitive::Float(Ad::conv3d(x, w, b, options)));
    }
    let out = match b {
        Some(b) => match ConvBias
            .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone(), b.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let xs = prep.checkpoint(&x);
                let ws = prep.checkpoint(&w);
                prep.finish(
                    (xs, ws, options.clone()),
                    Flex::conv3d(x.primitive, w.primitive, Some(b.primitive), options),
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::conv3d(
                x.primitive,
                w.primitive,
                Some(b.primitive),
                options,
            )),
        },
        None => match ConvNoBias
            .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let xs = prep.checkpoint(&x);
                let ws = prep.checkpoint(&w);
                prep.finish(
                    (xs, ws, options.clone()),
                    Flex::conv3d(x.primitive, w.primitive, None, options),
                )
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(Flex::conv3d(x.primitive, w.primitive, None, options))
            }
        },
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

#[derive(Debug)]
struct ConvBias;
#[derive(Debug)]
struct ConvNoBias;

type ConvState = (NodeId, NodeId, ConvOptions<3>);

impl Backward<Flex, 3> for ConvBias {
    type State = ConvState;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w, node_b] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node_b {
            grads.register::<Flex>(node.id, bias_grad(grad.clone()));
        }
        conv_backward(
            ops.state,
            node_x.map(|n| n.id),
            node_w.map(|n| n.id),
            grad,
            grads,
            checkpointer,
        );
    }
}

impl Backward<Flex, 2> for ConvNoBias {
    type State = ConvState;

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        conv_backward(
            ops.state,
            node_x.map(|n| n.id),
            node_w.map(|n| n.id),
            grad,
            grads,
            checkpointer,
        );
    }
}

fn flex<const D: usize>(t: FloatTensor<Flex>) -> Tensor<Flex, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

fn bias_grad(grad: FloatTensor<Flex>) -> FloatTensor<Flex> {
    let g = flex::<5>(grad);
    let [_, c, _, _, _] = g.dims();
    g.swap_dims(0, 1)
        .reshape([c as i32, -1])
        .sum_dim(1)
        .reshape([c])
        .into_primitive()
        .tensor()
}

fn conv_backward(
    (x_state, w_state, options): ConvState,
    node_x: Option<NodeId>,
    node_w: Option<NodeId>,
    grad: FloatTensor<Flex>,
    grads: &mut Gradients,
    checkpointer: &mut Checkpointer,
) {
    let x = checkpointer.retrieve_node_output::<FloatTensor<Flex>>(x_state);
    let w = checkpointer.retrieve_node_output::<FloatTensor<Flex>>(w_state);
    if let Some(id) = node_x {
        let gx = input_grad(x.clone(), w.clone(), grad.clone(), options.clone());
        grads.register::<Flex>(id, gx);
    }
    if let Some(id) = node_w {
        let [_, _, kd, kh, kw] = flex::<5>(w).dims();
        grads.register::<Flex>(id, weight_grad(x, grad, [kd, kh, kw], &options));
    }
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
    Flex::conv3d(
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
/// x). Rows of the output gradient and of the input are dotted along the last axis; the work
/// is split over output depth slices, each with its own accumulator, summed in a fixed order
/// (the result does not depend on the thread count).
pub fn weight_grad(
    x: FloatTensor<Flex>,
    grad: FloatTensor<Flex>,
    k: [usize; 3],
    options: &ConvOptions<3>,
) -> FloatTensor<Flex> {
    let (x, [n, ci, di, hi, wi]) = to_vec(x);
    let (g, [_, co, d_o, h_o, w_o]) = to_vec(grad);
    let s = options.stride;
    let p = options.padding;
    let kvol = k[0] * k[1] * k[2];
    let len = co * ci * kvol;
    // For output index o and kernel tap t along an axis: the input index, if inside.
    let input_at = |o: usize, t: usize, a: usize, size: usize| -> Option<usize> {
        (o * s[a] + t).checked_sub(p[a]).filter(|&i| i < size)
    };
    // Along the last axis, the range of outputs whose input is inside, for tap t.
    let w_range: Vec<(usize, usize)> = (0..k[2])
        .map(|t| {
            let lo = (p[2].saturating_sub(t)).div_ceil(s[2]);
            let hi = if wi + p[2] > t {
                ((wi + p[2] - t - 1) / s[2] + 1).min(w_o)
            } else {
                0
            };
            (lo, hi.max(lo))
        })
        .collect();
    let slices: Vec<(usize, usize)> = (0..n).flat_map(|b| (0..d_o).map(move |d| (b, d))).collect();
    let partial: Vec<Vec<f32>> = slices
        .par_chunks(slices.len().div_ceil(16).max(1))
        .map(|chunk| {
            let mut acc = vec![0f32; len];
            for &(b, od) in chunk {
                for td in 0..k[0] {
                    let Some(id) = input_at(od, td, 0, di) else {
                        continue;
                    };
                    for oh in 0..h_o {
                        for th in 0..k[1] {
                            let Some(ih) = input_at(oh, th, 1, hi) else {
                                continue;
                            };
                            for o in 0..co {
                                let gs = (((b * co + o) * d_o + od) * h_o + oh) * w_o;
                                let grow = &g[gs..gs + w_o];
                                for c in 0..ci {
                                    let xs = (((b * ci + c) * di + id) * hi + ih) * wi;
                                    let xrow = &x[xs..xs + wi];
                                    let base = ((o * ci + c) * k[0] + td) * k[1] + th;
                                    for (tw, &(lo, hi_)) in w_range.iter().enumerate() {
                                        if lo >= hi_ {
                                            continue;
                                        }
                                        let start = lo * s[2] + tw - p[2];
                                        let v = if s[2] == 1 {
                                            dot(&grow[lo..hi_], &xrow[start..start + (hi_ - lo)])
                                        } else {
                                            grow[lo..hi_]
                                                .iter()
                                                .enumerate()
                                                .map(|(j, &gv)| gv * xrow[start + j * s[2]])
                                                .sum()
                                        };
                                        acc[base * k[2] + tw] += v;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            acc
        })
        .collect();
    let mut total = vec![0f32; len];
    for part in partial {
        total.iter_mut().zip(part).for_each(|(t, v)| *t += v);
    }
    Tensor::<Flex, 5>::from_data(
        TensorData::new(total, [co, ci, k[0], k[1], k[2]]),
        &Default::default(),
    )
    .into_primitive()
    .tensor()
}

/// A dot product with eight independent sums, which the compiler turns into vector code.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, ar) = a.split_at(a.len() / 8 * 8);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(8).zip(bc.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `group_norm` with a fused forward and backward when `B` is `Autodiff<Flex>`, and the fused
/// forward when it is `Flex` (inference): Burn's
/// composition (two reductions, broadcast subtract/divide, affine) walks strided views on flex
/// and, with its backward, took a third of a CPU training step after the convolutions were fixed.
pub fn group_norm<B: Backend>(
    norm: &GroupNorm<B>,
    x: Tensor<B, 5>,
) -> Result<Tensor<B, 5>, Tensor<B, 5>> {
    let (Some(gamma), Some(beta)) = (&norm.gamma, &norm.beta) else {
        return Err(x);
    };
    let x: Tensor<Ad, 5> = match cast(x) {
        Ok(x) => x,
        // Inference on flex: the same fused forward.
        Err(x) => {
            let x: Tensor<Flex, 5> = cast(x)?;
            let gamma: Tensor<Flex, 1> = cast(gamma.val()).ok().expect("same backend as x");
            let beta: Tensor<Flex, 1> = cast(beta.val()).ok().expect("same backend as x");
            let (y, _, _) = group_norm_forward(
                x.into_primitive().tensor(),
                gamma.into_primitive().tensor(),
                beta.into_primitive().tensor(),
                norm.num_groups,
                norm.epsilon,
                false,
            );
            return Ok(cast(flex::<5>(y)).ok().expect("the same type back"));
        }
    };
    let gamma: Tensor<Ad, 1> = cast(gamma.val()).ok().expect("same backend as x");
    let beta: Tensor<Ad, 1> = cast(beta.val()).ok().expect("same backend as x");
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
    Ok(
        cast(Tensor::<Ad, 5>::from_primitive(TensorPrimitive::Float(out)))
            .ok()
            .expect("the same type back"),
    )
}

#[derive(Debug)]
struct GroupNormOp;

/// Saved for the backward: the normalised input x̂, 1/σ per (sample, group), γ, the groups.
type GroupNormState = (Vec<f32>, Vec<f32>, FloatTensor<Flex>, usize);

fn floats(t: FloatTensor<Flex>) -> Vec<f32> {
    Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(t))
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("float32 data")
}

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
    /// dx = (g − mean(g) − x̂·mean(g·x̂)) / σ.
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
    use burn::nn::conv::Conv3dConfig;
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
        let ours = conv3d(&conv, x.clone());
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
            group_norm(&norm, x.clone()).ok().unwrap(),
            norm.forward(x),
            "output",
        );
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
    fn strided_and_pointwise_convolution_gradients_match_burn() {
        check(4, 6, 3, 2, 1, false, [8, 6, 10]);
        check(4, 6, 3, 2, 1, false, [7, 5, 9]);
        check(6, 3, 1, 1, 0, true, [4, 5, 6]);
    }
}
