//! The training loss (docs/DESIGN.md §5): L = L_dice + 0.1·L_L2 + 0.1·L_KL.

use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid};
use serde::{Deserialize, Serialize};

use crate::nn::model::TrainOutput;

/// Weight of the reconstruction and KL terms (the paper's 0.1 each).
pub const VAE_WEIGHT: f64 = 0.1;
/// The Dice denominator's smoothing (MONAI `smooth_dr`).
pub const DICE_SMOOTH: f64 = 1e-5;

/// Soft Dice loss on sigmoid probabilities with squared terms in the denominator, averaged over
/// batch and channels: MONAI `DiceLoss(sigmoid=True, squared_pred=True, smooth_nr=0,
/// smooth_dr=1e-5)`.
pub fn dice_loss<B: Backend>(logits: Tensor<B, 5>, target: Tensor<B, 5>) -> Tensor<B, 1> {
    dice_loss_smoothed(logits, target, 0.0, DICE_SMOOTH)
}

/// The same with MONAI's `smooth_nr` and `smooth_dr`. With `smooth_nr` = 0 a crop without a
/// region has loss 1 whatever is predicted (no gradient); with `smooth_nr` > 0 its loss is
/// Σp²/(Σp² + s), so false positives in tumour-free crops are pushed down.
pub fn dice_loss_smoothed<B: Backend>(
    logits: Tensor<B, 5>,
    target: Tensor<B, 5>,
    smooth_nr: f64,
    smooth_dr: f64,
) -> Tensor<B, 1> {
    let p = sigmoid(logits);
    let dims = [2usize, 3, 4];
    let intersection = (p.clone() * target.clone()).sum_dims(&dims);
    let denominator = p.square().sum_dims(&dims) + target.square().sum_dims(&dims);
    let dice =
        intersection.mul_scalar(2.0).add_scalar(smooth_nr) / denominator.add_scalar(smooth_dr);
    dice.neg().add_scalar(1.0).mean()
}

/// The segmentation term of the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SegLoss {
    /// The paper's soft Dice.
    #[default]
    Dice,
    /// Soft Dice plus binary cross-entropy per voxel (nnU-Net's Dice + CE, MONAI `DiceCELoss`
    /// with sigmoid): every voxel gets a gradient, so false positives far from the tumour are
    /// pushed down from the first steps.
    DiceBce,
}

impl std::str::FromStr for SegLoss {
    type Err = crate::data::names::UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dice" => Ok(SegLoss::Dice),
            "dice-bce" => Ok(SegLoss::DiceBce),
            _ => Err(Self::Err::new("loss", s, "dice or dice-bce")),
        }
    }
}

/// Binary cross-entropy of sigmoid(logits) against the target, averaged over every value;
/// written as max(z, 0) − z·y + log(1 + e^−|z|), which never overflows.
pub fn bce_loss<B: Backend>(logits: Tensor<B, 5>, target: Tensor<B, 5>) -> Tensor<B, 1> {
    let softplus_neg_abs = logits.clone().abs().neg().exp().log1p();
    (relu(logits.clone()) - logits * target + softplus_neg_abs).mean()
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
    seg: SegLoss,
    dice_smooth: f64,
) -> LossTerms<B> {
    // 0: the paper's smoothing (numerator 0, denominator 1e-5).
    let (nr, dr) = if dice_smooth > 0.0 {
        (dice_smooth, dice_smooth)
    } else {
        (0.0, DICE_SMOOTH)
    };
    let dice = match seg {
        SegLoss::Dice => dice_loss_smoothed(out.logits, target, nr, dr),
        SegLoss::DiceBce => {
            dice_loss_smoothed(out.logits.clone(), target.clone(), nr, dr)
                + bce_loss(out.logits, target)
        }
    };
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

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::Flex;

    /// Against hand values: z = 0 → ln 2 for either target; z = 2, y = 0 → ln(1 + e²);
    /// z = −30, y = 1 → 30 (no overflow); z = 40, y = 1 → e⁻⁴⁰ ≈ 0.
    #[test]
    fn bce_matches_hand_values() {
        let device = Default::default();
        let z = Tensor::<Flex, 5>::from_data(
            TensorData::new(vec![0f32, 0., 2., -30., 40.], [1, 1, 1, 1, 5]),
            &device,
        );
        let y = Tensor::<Flex, 5>::from_data(
            TensorData::new(vec![1f32, 0., 0., 1., 1.], [1, 1, 1, 1, 5]),
            &device,
        );
        let expected = (2.0 * 2f64.ln() + (1.0 + 2f64.exp()).ln() + 30.0) / 5.0;
        let got = bce_loss(z, y).into_scalar() as f64;
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
        assert_eq!("dice-bce".parse::<SegLoss>(), Ok(SegLoss::DiceBce));
        assert!("ce".parse::<SegLoss>().is_err());
    }

    /// With smoothing 1, a crop without the region scores Σp²/(Σp² + 1): near 0 for a confident
    /// empty prediction, near 1 for confident false positives; without it, 1 either way.
    #[test]
    fn smoothed_dice_penalises_false_positives_on_empty_targets() {
        let device = Default::default();
        let target = Tensor::<Flex, 5>::zeros([1, 1, 2, 2, 2], &device);
        let logits = |v: f32| Tensor::<Flex, 5>::full([1, 1, 2, 2, 2], v, &device);
        let loss = |v: f32, nr: f64, dr: f64| {
            dice_loss_smoothed(logits(v), target.clone(), nr, dr).into_scalar() as f64
        };
        assert!(loss(-10.0, 1.0, 1.0) < 1e-6);
        assert!(loss(10.0, 1.0, 1.0) > 0.88); // 8/9
        assert!((loss(-10.0, 0.0, DICE_SMOOTH) - 1.0).abs() < 1e-6);
        assert!((loss(10.0, 0.0, DICE_SMOOTH) - 1.0).abs() < 1e-6);
    }
}
