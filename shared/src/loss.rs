//! The training loss of SPEC §1.3: L = L_dice + 0.1·L_L2 + 0.1·L_KL.

use burn::prelude::*;
use burn::tensor::activation::sigmoid;

use crate::model::TrainOutput;

/// Weight of the reconstruction and KL terms (the paper's 0.1 each).
pub const VAE_WEIGHT: f64 = 0.1;
/// The Dice denominator's smoothing (MONAI `smooth_dr`).
pub const DICE_SMOOTH: f64 = 1e-5;

/// Soft Dice loss on sigmoid probabilities with squared terms in the denominator, averaged over
/// batch and channels: MONAI `DiceLoss(sigmoid=True, squared_pred=True, smooth_nr=0,
/// smooth_dr=1e-5)`.
pub fn dice_loss<B: Backend>(logits: Tensor<B, 5>, target: Tensor<B, 5>) -> Tensor<B, 1> {
    let p = sigmoid(logits);
    let dims = [2usize, 3, 4];
    let intersection = (p.clone() * target.clone()).sum_dims(&dims);
    let denominator = p.square().sum_dims(&dims) + target.square().sum_dims(&dims);
    let dice = intersection.mul_scalar(2.0) / denominator.add_scalar(DICE_SMOOTH);
    dice.neg().add_scalar(1.0).mean()
}

/// Mean squared error between the (normalised) input and its reconstruction.
pub fn l2_loss<B: Backend>(input: Tensor<B, 5>, reconstruction: Tensor<B, 5>) -> Tensor<B, 1> {
    (input - reconstruction).square().mean()
}

/// KL divergence to N(0, 1): (1/N)·Σ(μ² + σ² − log σ² − 1), N = values of one input image
/// (C·D·H·W); averaged over the batch.
pub fn kl_loss<B: Backend>(
    mu: Tensor<B, 2>,
    sigma: Tensor<B, 2>,
    input_values: usize,
) -> Tensor<B, 1> {
    let [batch, _] = mu.dims();
    let var = sigma.square();
    let terms = mu.square() + var.clone() - var.log() - 1.0;
    terms.sum().div_scalar((input_values * batch) as f64)
}

/// Every term of the loss, kept apart for logging.
#[derive(Debug, Clone)]
pub struct LossTerms<B: Backend> {
    pub total: Tensor<B, 1>,
    pub dice: Tensor<B, 1>,
    pub l2: Option<Tensor<B, 1>>,
    pub kl: Option<Tensor<B, 1>>,
}

/// The NvNet loss of a training forward pass against the region targets `[B, 3, D, H, W]`.
pub fn nvnet_loss<B: Backend>(
    out: TrainOutput<B>,
    input: Tensor<B, 5>,
    target: Tensor<B, 5>,
) -> LossTerms<B> {
    let dice = dice_loss(out.logits, target);
    match out.vae {
        None => LossTerms {
            total: dice.clone(),
            dice,
            l2: None,
            kl: None,
        },
        Some(vae) => {
            let [_, c, d, h, w] = input.dims();
            let l2 = l2_loss(input, vae.reconstruction);
            let kl = kl_loss(vae.mu, vae.sigma, c * d * h * w);
            let total = dice.clone()
                + l2.clone().mul_scalar(VAE_WEIGHT)
                + kl.clone().mul_scalar(VAE_WEIGHT);
            LossTerms {
                total,
                dice,
                l2: Some(l2),
                kl: Some(kl),
            }
        }
    }
}
