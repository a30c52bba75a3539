//! GroupNorm, and GroupNorm followed by ReLU, as one autodiff operation on the GPU backends
//! (`Autodiff<Wgpu>`, `Autodiff<Cuda<f32|bf16|f16>>`), generic over the inner backend.
//!
//! Through Burn's autodiff, `model::normalise`, the affine map and the ReLU after them keep three
//! full-size tensors for the backward pass besides the ReLU's output (which the convolution after
//! it keeps): the centred input (saved by the square and the division), x̂ (saved by the product
//! with γ) and the ReLU's input (Burn's ReLU keeps its input). This operation keeps x̂ and σ per
//! (sample, group) and recomputes the ReLU's mask from x̂, γ and β: one tensor where there were
//! three, as PyTorch's GroupNorm followed by an in-place ReLU keeps one (its input). The backward
//! is a handful of kernels instead of the composition's chain of broadcasts. Its sums run one
//! axis at a time, as `model::normalise` does (see there why). `Autodiff<Flex>` has its own
//! fused CPU kernels (`cpu_grad`); other backends (inference, the web page) never come here.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::nn::GroupNorm;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{TensorPrimitive, activation};

use crate::nn::conv_grad::{cast, same, tensor};
use crate::nn::model::{affine, normalise};

/// `group_norm(norm, x)`, followed by a ReLU when `relu`, as one autodiff operation when `B` is
/// `Autodiff` of a GPU backend listed in `grads` and the norm is affine; `Err(x)` back otherwise.
pub fn try_group_norm<B: Backend>(
    norm: &GroupNorm<B>,
    x: Tensor<B, 5>,
    relu: bool,
) -> Result<Tensor<B, 5>, Tensor<B, 5>> {
    crate::nn::grads::on_gpu(NormOn { norm, x, relu }).map_err(|op| op.x)
}

/// A GroupNorm waiting for its backend (`grads::on_gpu`).
struct NormOn<'a, B: Backend> {
    norm: &'a GroupNorm<B>,
    x: Tensor<B, 5>,
    relu: bool,
}

impl<B: Backend> crate::nn::grads::OnAutodiff<B> for NormOn<'_, B> {
    fn on<I: crate::nn::conv_grad::ConvGrads>(self) -> Result<Tensor<B, 5>, Self> {
        let NormOn { norm, x, relu } = self;
        on::<B, I>(norm, x, relu).map_err(|x| NormOn { norm, x, relu })
    }
}

/// When `B` is `Autodiff<I>`: the GroupNorm (and ReLU) with this module's backward.
fn on<B: Backend, I: Backend>(
    norm: &GroupNorm<B>,
    x: Tensor<B, 5>,
    relu: bool,
) -> Result<Tensor<B, 5>, Tensor<B, 5>> {
    let (Some(gamma), Some(beta)) = (&norm.gamma, &norm.beta) else {
        return Err(x);
    };
    if !norm.affine {
        return Err(x);
    }
    let x: Tensor<Autodiff<I>, 5> = cast(x)?;
    let gamma: Tensor<Autodiff<I>, 1> = same(gamma.val());
    let beta: Tensor<Autodiff<I>, 1> = same(beta.val());
    let y = group_norm_ad::<I>(x, gamma, beta, norm.num_groups, norm.epsilon, relu);
    Ok(same(y))
}

/// y = γ·x̂ + β with x̂ = (x − μ)/σ per (sample, group), or ReLU(y) when `relu`, recorded as
/// one operation.
pub(crate) fn group_norm_ad<I: Backend>(
    x: Tensor<Autodiff<I>, 5>,
    gamma: Tensor<Autodiff<I>, 1>,
    beta: Tensor<Autodiff<I>, 1>,
    groups: usize,
    eps: f64,
    relu: bool,
) -> Tensor<Autodiff<I>, 5> {
    let x = x.into_primitive().tensor();
    let gamma = gamma.into_primitive().tensor();
    let beta = beta.into_primitive().tensor();
    let forward = |x, gamma: FloatTensor<I>, beta| {
        let (normed, std) = normalise::<I>(tensor(x), groups, eps);
        let y = affine(normed.clone(), tensor(gamma), tensor(beta));
        let y = if relu { activation::relu(y) } else { y };
        (y.into_primitive().tensor(), normed, std)
    };
    let out = match GroupNormOp
        .prepare::<NoCheckpointing>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (y, normed, std) =
                forward(x.primitive, gamma.primitive.clone(), beta.primitive.clone());
            let state = GroupNormState {
                normed: normed.into_primitive().tensor(),
                std: std.into_primitive().tensor(),
                gamma: gamma.primitive,
                relu_beta: relu.then_some(beta.primitive),
                groups,
            };
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(forward(x.primitive, gamma.primitive, beta.primitive).0)
        }
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

#[derive(Debug)]
struct GroupNormOp;

/// What the backward pass needs.
#[derive(Debug, Clone)]
struct GroupNormState<I: Backend> {
    /// x̂ [B, C, D, H, W].
    normed: FloatTensor<I>,
    /// σ [B·G, 1, 1, 1].
    std: FloatTensor<I>,
    /// γ [C].
    gamma: FloatTensor<I>,
    /// β [C] when a ReLU follows (its mask is where γ·x̂ + β > 0).
    relu_beta: Option<FloatTensor<I>>,
    groups: usize,
}

impl<I: Backend> Backward<I, 3> for GroupNormOp {
    type State = GroupNormState<I>;

    /// With dy the gradient at the affine map's output (through the ReLU: zero where
    /// γ·x̂ + β ≤ 0): dβ_c = Σ dy, dγ_c = Σ dy·x̂, and per group, with g = dy·γ:
    /// dx = (g − mean(g) − x̂·mean(g·x̂)) / σ, the group means taken from the channel sums. The
    /// same formula as `cpu_grad`'s, in tensor operations that stay on the GPU (why twice:
    /// docs/DESIGN.md §6).
    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let state = ops.state;
        let groups = state.groups;
        let dy = tensor::<I, 5>(grads.consume::<I>(&ops.node));
        let normed = tensor::<I, 5>(state.normed);
        let [b, c, d, h, w] = dy.dims();
        let gamma = tensor::<I, 1>(state.gamma).reshape([1, c, 1, 1, 1]);
        let dy = match state.relu_beta {
            Some(beta) => {
                let beta = tensor::<I, 1>(beta).reshape([1, c, 1, 1, 1]);
                let pre = normed.clone() * gamma.clone() + beta;
                dy.mask_fill(pre.lower_equal_elem(0.0), 0.0)
            }
            None => dy,
        };
        // Per (sample, channel), one axis at a time: [B, C, 1, 1, 1].
        let per_channel = |t: Tensor<I, 5>| t.sum_dim(4).sum_dim(3).sum_dim(2);
        let sum_dy = per_channel(dy.clone());
        let sum_dy_normed = per_channel(dy.clone() * normed.clone());
        if let Some(node) = node_beta {
            let db = sum_dy.clone().sum_dim(0).reshape([c]);
            grads.register::<I>(node.id, db.into_primitive().tensor());
        }
        if let Some(node) = node_gamma {
            let dg = sum_dy_normed.clone().sum_dim(0).reshape([c]);
            grads.register::<I>(node.id, dg.into_primitive().tensor());
        }
        if let Some(node) = node_x {
            let cg = c / groups;
            let n = (cg * d * h * w) as f64;
            // A per-(sample, group) value spread over the group's channels: [B, C, 1, 1, 1].
            let per_group = |t: Tensor<I, 3>| t.expand([b, groups, cg]).reshape([b, c, 1, 1, 1]);
            let group_mean = |s: Tensor<I, 5>| {
                per_group((s * gamma.clone()).reshape([b, groups, cg]).sum_dim(2) / n)
            };
            let std = tensor::<I, 4>(state.std).reshape([b, groups, 1]);
            let inv_std = per_group(std).recip();
            let mean_g = group_mean(sum_dy);
            let mean_g_normed = group_mean(sum_dy_normed);
            let dx = dy * (gamma * inv_std.clone())
                - mean_g * inv_std.clone()
                - normed * (mean_g_normed * inv_std);
            grads.register::<I>(node.id, dx.into_primitive().tensor());
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Tolerance;

    type Ad = Autodiff<Flex>;

    fn random<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<Ad, D> {
        let n: usize = shape.iter().product();
        let mut s = seed;
        let values: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    /// The operation against Burn's autodiff through the same forward composition (and Burn's
    /// ReLU): output and the gradients of x, γ and β under a random upstream gradient, with an
    /// offset input, γ, β far from 1, 0, and β negative enough that the ReLU cuts.
    #[test]
    fn group_norm_op_matches_burn_autodiff_on_flex() {
        let shape = [2, 16, 5, 6, 7];
        for (groups, relu) in [(8, false), (4, false), (16, false), (8, true), (4, true)] {
            let run = |fused: bool| {
                let x = (random(shape, 1) * 3.0 + 0.5).require_grad();
                let gamma = (random([16], 2) + 1.5).require_grad();
                let beta = (random([16], 3) - 0.3).require_grad();
                let upstream = random(shape, 4);
                let y = if fused {
                    group_norm_ad::<Flex>(
                        x.clone(),
                        gamma.clone(),
                        beta.clone(),
                        groups,
                        1e-5,
                        relu,
                    )
                } else {
                    let (normed, _) = normalise(x.clone(), groups, 1e-5);
                    let y = affine(normed, gamma.clone(), beta.clone());
                    if relu { activation::relu(y) } else { y }
                };
                let grads = (y.clone() * upstream).sum().backward();
                let grad = |t: &Tensor<Ad, 5>| t.grad(&grads).unwrap().into_data();
                (
                    y.into_data(),
                    grad(&x),
                    gamma.grad(&grads).unwrap().into_data(),
                    beta.grad(&grads).unwrap().into_data(),
                )
            };
            let (y0, dx0, dg0, db0) = run(false);
            let (y1, dx1, dg1, db1) = run(true);
            if relu {
                let zeros = y1.iter::<f32>().filter(|&v| v == 0.0).count();
                assert!(
                    zeros > y1.num_elements() / 5,
                    "the ReLU cuts ({zeros} zeros)"
                );
            }
            let tol = Tolerance::<f32>::absolute(2e-4);
            y1.assert_approx_eq::<f32>(&y0, tol);
            dx1.assert_approx_eq::<f32>(&dx0, tol);
            dg1.assert_approx_eq::<f32>(&dg0, Tolerance::<f32>::absolute(2e-3));
            db1.assert_approx_eq::<f32>(&db0, Tolerance::<f32>::absolute(2e-3));
        }
    }

    /// Only x needs a gradient (γ, β frozen): the operation still gives Burn's dx.
    #[test]
    fn group_norm_op_with_frozen_affine_on_flex() {
        let shape = [1, 8, 4, 4, 4];
        let run = |fused: bool| {
            let x = random(shape, 5).require_grad();
            let gamma = random([8], 6) + 1.0;
            let beta = random([8], 7);
            let y = if fused {
                group_norm_ad::<Flex>(x.clone(), gamma, beta, 4, 1e-5, true)
            } else {
                activation::relu(affine(normalise(x.clone(), 4, 1e-5).0, gamma, beta))
            };
            let grads = (y * random(shape, 8)).sum().backward();
            x.grad(&grads).unwrap().into_data()
        };
        run(true).assert_approx_eq::<f32>(&run(false), Tolerance::<f32>::absolute(2e-4));
    }
}
