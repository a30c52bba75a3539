//! nvnet's own backward for the 3-D convolutions of training: one autodiff operation, generic
//! over the backend, whose input and weight gradients each backend supplies (`ConvGrads`).
//!
//! - `Autodiff<Flex>` (`cpu_grad`): faster gradients than Burn's on the CPU.
//! - `Autodiff<Wgpu>`, `Autodiff<Cuda<f32|bf16|f16>>` (listed in `grads`): a correct weight
//!   gradient. Burn 0.21 (burn-cubecl) computes it as a convolution of the input by the output
//!   gradient, a kernel as large as the feature map; on wgpu (llvmpipe here) that came out wrong
//!   once the map was larger than 16³ (at 32³ the error exceeded the gradient itself) while the
//!   forward pass and the input gradient stayed right (`tests/wgpu_reference.rs`, against flex).
//!   Here the weight gradient is one batched matrix product per kernel tap, batched over output
//!   depth slices so that each product is a moderate contraction over one H·W plane; the input
//!   gradient is Burn's.
//!
//! Other backends (inference, the web page) never come here.

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::nn::conv::Conv3d;
use burn::prelude::*;
use burn::tensor::ops::{ConvOptions, FloatTensor};
use burn::tensor::{Slice, TensorPrimitive};

pub(crate) use crate::nn::typecast::{cast, same};

/// The gradients of a convolution `y = conv3d(x, w)` given dL/dy, for one backend.
pub trait ConvGrads: Backend {
    /// y itself (the backend's own convolution unless it has a faster one).
    fn forward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: Option<FloatTensor<Self>>,
        options: ConvOptions<3>,
    ) -> FloatTensor<Self> {
        Self::conv3d(x, w, b, options)
    }
    /// dL/dx.
    fn input_grad(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<3>,
    ) -> FloatTensor<Self>;
    /// dL/dw for a kernel of size `k`.
    fn weight_grad(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        k: [usize; 3],
        options: &ConvOptions<3>,
    ) -> FloatTensor<Self>;
}

/// `conv.forward(x)` with nvnet's backward when `B` is `Autodiff` of a backend with
/// `ConvGrads` (flex, or a GPU backend listed in `grads`); `Err(x)` back otherwise.
pub fn try_conv3d<B: Backend>(
    conv: &Conv3d<B>,
    x: Tensor<B, 5>,
) -> Result<Tensor<B, 5>, Tensor<B, 5>> {
    #[cfg(all(feature = "flex", not(target_arch = "wasm32")))]
    let x = match on::<B, burn::backend::Flex>(conv, x) {
        Ok(y) => return Ok(y),
        Err(x) => x,
    };
    crate::nn::grads::on_gpu(ConvOn { conv, x }).map_err(|op| op.x)
}

/// A convolution waiting for its backend (`grads::on_gpu`; unread without a GPU backend).
#[cfg_attr(
    not(all(any(feature = "wgpu", feature = "cuda"), not(test))),
    allow(dead_code)
)]
struct ConvOn<'a, B: Backend> {
    conv: &'a Conv3d<B>,
    x: Tensor<B, 5>,
}

impl<B: Backend> crate::nn::grads::OnAutodiff<B> for ConvOn<'_, B> {
    fn on<I: ConvGrads>(self) -> Result<Tensor<B, 5>, Self> {
        let conv = self.conv;
        on::<B, I>(conv, self.x).map_err(|x| ConvOn { conv, x })
    }
}

/// When `B` is `Autodiff<I>`: the convolution with `I`'s gradients.
fn on<B: Backend, I: ConvGrads>(
    conv: &Conv3d<B>,
    x: Tensor<B, 5>,
) -> Result<Tensor<B, 5>, Tensor<B, 5>> {
    let Some(padding) = crate::nn::model::explicit_padding(conv) else {
        return Err(x);
    };
    if conv.groups != 1 || conv.dilation != [1, 1, 1] {
        return Err(x);
    }
    let x: Tensor<Autodiff<I>, 5> = cast(x)?;
    let weight: Tensor<Autodiff<I>, 5> = same(conv.weight.val());
    let bias: Option<Tensor<Autodiff<I>, 1>> = conv.bias.as_ref().map(|b| same(b.val()));
    let options = ConvOptions::new(conv.stride, padding, [1, 1, 1], 1);
    let out = conv3d_ad::<I>(x, weight, bias, options);
    Ok(same(out))
}

fn conv3d_ad<I: ConvGrads>(
    x: Tensor<Autodiff<I>, 5>,
    weight: Tensor<Autodiff<I>, 5>,
    bias: Option<Tensor<Autodiff<I>, 1>>,
    options: ConvOptions<3>,
) -> Tensor<Autodiff<I>, 5> {
    let x = x.into_primitive().tensor();
    let w = weight.into_primitive().tensor();
    let b = bias.map(|b| b.into_primitive().tensor());
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
                    I::forward(x.primitive, w.primitive, Some(b.primitive), options),
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(I::forward(
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
                    I::forward(x.primitive, w.primitive, None, options),
                )
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(I::forward(x.primitive, w.primitive, None, options))
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

impl<I: ConvGrads> Backward<I, 3> for ConvBias {
    type State = ConvState;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w, node_b] = ops.parents;
        let grad = grads.consume::<I>(&ops.node);
        if let Some(node) = node_b {
            let g = tensor::<I, 5>(grad.clone());
            let c = g.dims()[1];
            let gb = g
                .swap_dims(0, 1)
                .reshape([c as i32, -1])
                .sum_dim(1)
                .reshape([c]);
            grads.register::<I>(node.id, gb.into_primitive().tensor());
        }
        backward::<I>(
            ops.state,
            node_x.map(|n| n.id),
            node_w.map(|n| n.id),
            grad,
            grads,
            checkpointer,
        );
    }
}

impl<I: ConvGrads> Backward<I, 2> for ConvNoBias {
    type State = ConvState;

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<I>(&ops.node);
        backward::<I>(
            ops.state,
            node_x.map(|n| n.id),
            node_w.map(|n| n.id),
            grad,
            grads,
            checkpointer,
        );
    }
}

pub(crate) fn tensor<I: Backend, const D: usize>(t: FloatTensor<I>) -> Tensor<I, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

fn backward<I: ConvGrads>(
    (x_state, w_state, options): ConvState,
    node_x: Option<NodeId>,
    node_w: Option<NodeId>,
    grad: FloatTensor<I>,
    grads: &mut Gradients,
    checkpointer: &mut Checkpointer,
) {
    let x = checkpointer.retrieve_node_output::<FloatTensor<I>>(x_state);
    let w = checkpointer.retrieve_node_output::<FloatTensor<I>>(w_state);
    let [_, _, kd, kh, kw] = tensor::<I, 5>(w.clone()).dims();
    if let Some(id) = node_x {
        let gx = I::input_grad(x.clone(), w, grad.clone(), options.clone());
        grads.register::<I>(id, gx);
    }
    if let Some(id) = node_w {
        grads.register::<I>(id, I::weight_grad(x, grad, [kd, kh, kw], &options));
    }
}

/// dL/dW [co, ci, kd, kh, kw]: per tap, Σ over batch items and output depth slices of
/// grad[co, plane] · x_tap[ci, plane]ᵀ (x_tap: the zero-padded input at that tap's offset,
/// strided like the output).
pub fn weight_grad_by_taps<I: Backend>(
    x: Tensor<I, 5>,
    grad: Tensor<I, 5>,
    k: [usize; 3],
    options: &ConvOptions<3>,
) -> Tensor<I, 5> {
    let [n, ci, d, h, w] = x.dims();
    let [_, co, od, oh, ow] = grad.dims();
    let (p, s) = (options.padding, options.stride);
    let device = x.device();
    let padded = if p == [0, 0, 0] {
        x
    } else {
        Tensor::zeros([n, ci, d + 2 * p[0], h + 2 * p[1], w + 2 * p[2]], &device).slice_assign(
            [0..n, 0..ci, p[0]..p[0] + d, p[1]..p[1] + h, p[2]..p[2] + w],
            x,
        )
    };
    let plane = oh * ow;
    // [n·od, co, plane]: one matrix product per (batch item, output depth slice).
    let g = grad
        .reshape([n, co, od, plane])
        .swap_dims(1, 2)
        .reshape([n * od, co, plane]);
    let along = |t: usize, stride: usize, size: usize| {
        Slice::new(
            t as isize,
            Some((t + stride * (size - 1) + 1) as isize),
            stride as isize,
        )
    };
    let mut taps = Vec::with_capacity(k[0] * k[1] * k[2]);
    for td in 0..k[0] {
        for th in 0..k[1] {
            for tw in 0..k[2] {
                let xt = padded
                    .clone()
                    .slice([
                        Slice::new(0, Some(n as isize), 1),
                        Slice::new(0, Some(ci as isize), 1),
                        along(td, s[0], od),
                        along(th, s[1], oh),
                        along(tw, s[2], ow),
                    ])
                    .reshape([n, ci, od, plane])
                    .swap_dims(1, 2)
                    .reshape([n * od, ci, plane]);
                // [n·od, co, ci] summed over the batch of slices.
                let t = g
                    .clone()
                    .matmul(xt.swap_dims(1, 2))
                    .sum_dim(0)
                    .reshape([co, ci, 1]);
                taps.push(t);
            }
        }
    }
    Tensor::cat(taps, 2).reshape([co, ci, k[0], k[1], k[2]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::nn::PaddingConfig3d;
    use burn::nn::conv::Conv3dConfig;
    use burn::tensor::Distribution;

    /// The tap-by-tap weight gradient equals Burn's own on flex (which is right at these sizes).
    #[test]
    fn weight_gradient_by_taps_matches_burn_on_flex() {
        type Ad = Autodiff<Flex>;
        let device = Default::default();
        for (cin, cout, k, stride, pad, dims) in [
            (3, 5, 3, 1, 1, [6, 7, 9]),
            (4, 6, 3, 2, 1, [8, 6, 10]),
            (4, 6, 3, 2, 1, [7, 5, 9]),
            (6, 3, 1, 1, 0, [4, 5, 6]),
            (2, 4, 3, 1, 0, [5, 6, 7]),
        ] {
            let conv: Conv3d<Ad> = Conv3dConfig::new([cin, cout], [k; 3])
                .with_stride([stride; 3])
                .with_padding(PaddingConfig3d::Explicit(pad, pad, pad))
                .with_bias(false)
                .init(&device);
            let x = Tensor::<Ad, 5>::random(
                [2, cin, dims[0], dims[1], dims[2]],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let y = conv.forward(x.clone());
            let r = Tensor::<Ad, 5>::random(y.dims(), Distribution::Normal(0.0, 1.0), &device);
            let burns = conv
                .weight
                .val()
                .grad(&(y * r.clone()).sum().backward())
                .unwrap();
            let options = ConvOptions::new([stride; 3], [pad; 3], [1, 1, 1], 1);
            let ours = weight_grad_by_taps::<Flex>(x.inner(), r.inner(), [k; 3], &options);
            assert_eq!(ours.dims(), burns.dims());
            let scale = burns.clone().abs().max().into_scalar();
            let diff = (ours - burns).abs().max().into_scalar();
            assert!(
                diff <= 1e-4 * scale,
                "k {k} stride {stride} pad {pad} {dims:?}: max difference {diff} of {scale}"
            );
        }
    }
}
