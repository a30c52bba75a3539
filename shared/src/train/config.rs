//! Every setting of a run, the paper's recipe by default, and their checks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::NvNetConfig;
use crate::data::modality::Modality;

/// Every setting of a run; `Default` is the paper's recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// The dataset root (case folders in either BraTS layout).
    pub data: PathBuf,
    /// A separate validation root; none: a held-out split of `data`.
    pub val: Option<PathBuf>,
    /// Where preprocessed cases are cached (default: `<data>/.nvnet-cache`).
    pub cache: Option<PathBuf>,
    pub init_filters: usize,
    pub vae: bool,
    /// The random training crop D,H,W (padded where a case is smaller).
    pub crop: [usize; 3],
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// lr(epoch) = lr·(1 − epoch/epochs)^poly_power.
    pub poly_power: f64,
    pub epochs: usize,
    pub dropout: f64,
    /// The paper's augmentation: per-channel scale 1 ± 0.1 and shift ± 0.1, random axis flips.
    pub augment: bool,
    /// Per channel of each crop, the chance that it is seen as if acquired with slices 2–6 mm
    /// thick along a random axis and resampled to 1 mm (`thick_slices.rs`): what `prepare`
    /// makes of a 3 mm T2 or a 5 mm FLAIR. The paper's recipe has none (0).
    pub thick_slices: f64,
    /// Fraction of crops centred on a tumour voxel (nnU-Net's oversampling); the paper's
    /// uniform crops are 0.
    pub foreground_fraction: f64,
    /// Training samples per epoch; 0: each training case once (the paper).
    pub samples_per_epoch: usize,
    pub seed: u64,
    pub val_fraction: f64,
    /// Validate every N epochs (and after the last).
    pub val_every: usize,
    /// The validation window (default: each case's whole brain box, one window).
    pub val_roi: Option<[usize; 3]>,
    pub modalities: Vec<Modality>,
    /// Batches prepared ahead by the loader threads.
    pub prefetch: usize,
    /// The segmentation loss (the paper: soft Dice).
    pub loss: crate::nn::loss::SegLoss,
    /// Dice smoothing in numerator and denominator (MONAI's smooth_nr = smooth_dr); 0: the
    /// paper's (0 and 1e-5).
    pub dice_smooth: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            data: PathBuf::new(),
            val: None,
            cache: None,
            init_filters: 32,
            vae: true,
            crop: [160, 192, 128],
            batch_size: 1,
            lr: 1e-4,
            weight_decay: 1e-5,
            poly_power: 0.9,
            epochs: 300,
            dropout: 0.2,
            augment: true,
            thick_slices: 0.0,
            foreground_fraction: 0.0,
            samples_per_epoch: 0,
            seed: 0,
            val_fraction: 0.2,
            val_every: 5,
            val_roi: None,
            modalities: Modality::DEFAULT_ORDER.to_vec(),
            prefetch: 4,
            loss: crate::nn::loss::SegLoss::Dice,
            dice_smooth: 0.0,
        }
    }
}

impl TrainConfig {
    pub fn model_config(&self) -> NvNetConfig {
        let mut c = NvNetConfig::default()
            .with_init_filters(self.init_filters)
            .with_vae(self.vae.then_some(self.crop));
        c.dropout = self.dropout;
        c.in_channels = self.modalities.len();
        c
    }

    /// The settings checked against each other and the network; the first problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let m = self.model_config();
        m.validate()?;
        let k = m.size_multiple();
        let multiple = |key, size: [usize; 3]| {
            if size.iter().any(|c| *c == 0 || c % k != 0) {
                return Err(ConfigError::invalid(
                    key,
                    format!("{size:?}"),
                    format!("each size must be a positive multiple of {k}"),
                ));
            }
            Ok(())
        };
        multiple("crop", self.crop)?;
        if let Some(roi) = self.val_roi {
            multiple("val_roi", roi)?;
        }
        for (key, value) in [
            ("batch_size", self.batch_size),
            ("epochs", self.epochs),
            ("val_every", self.val_every),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "0", "must be at least 1"));
            }
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(ConfigError::invalid("lr", self.lr, "must be positive"));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(ConfigError::invalid(
                "val_fraction",
                self.val_fraction,
                "must be in [0, 1)",
            ));
        }
        if !(self.dice_smooth >= 0.0 && self.dice_smooth.is_finite()) {
            return Err(ConfigError::invalid(
                "dice_smooth",
                self.dice_smooth,
                "must be 0 or more",
            ));
        }
        if !(0.0..=1.0).contains(&self.thick_slices) {
            return Err(ConfigError::invalid(
                "thick_slices",
                self.thick_slices,
                "must be in [0, 1]",
            ));
        }
        if !(0.0..=1.0).contains(&self.foreground_fraction) {
            return Err(ConfigError::invalid(
                "foreground_fraction",
                self.foreground_fraction,
                "must be in [0, 1]",
            ));
        }
        Ok(())
    }

    /// Each step's batch is split across the devices: at least one sample each.
    pub fn check_devices(&self, devices: usize) -> Result<(), ConfigError> {
        if devices > self.batch_size {
            return Err(ConfigError::invalid(
                "batch_size",
                self.batch_size,
                format!(
                    "{devices} devices need a batch of at least {devices}: each step's batch is \
                     split across the devices"
                ),
            ));
        }
        Ok(())
    }

    /// The learning rate of an epoch (poly decay).
    pub fn lr_at(&self, epoch: usize) -> f64 {
        self.lr * (1.0 - epoch as f64 / self.epochs as f64).powf(self.poly_power)
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.cache
            .clone()
            .unwrap_or_else(|| self.data.join(".nvnet-cache"))
    }
}

/// A setting that cannot be used: its key in config.toml (the CLI's flag, with dashes), its
/// value and the rule it breaks.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("{key} {value}: {rule}")]
    Invalid {
        key: &'static str,
        value: String,
        rule: String,
    },
    #[error(transparent)]
    Model(#[from] crate::nn::model::ConfigError),
}

impl ConfigError {
    fn invalid(key: &'static str, value: impl ToString, rule: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key,
            value: value.to_string(),
            rule: rule.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poly_decay() {
        let c = TrainConfig {
            epochs: 10,
            ..Default::default()
        };
        assert_eq!(c.lr_at(0), 1e-4);
        assert!((c.lr_at(5) - 1e-4 * 0.5f64.powf(0.9)).abs() < 1e-15);
    }

    #[test]
    fn a_chance_outside_zero_to_one_is_named_by_its_key() {
        for (c, key) in [
            (
                TrainConfig {
                    thick_slices: 1.5,
                    ..Default::default()
                },
                "thick_slices",
            ),
            (
                TrainConfig {
                    foreground_fraction: -0.1,
                    ..Default::default()
                },
                "foreground_fraction",
            ),
        ] {
            let e = c.validate().unwrap_err();
            assert!(e.to_string().starts_with(key), "{e}");
        }
    }

    #[test]
    fn a_crop_off_the_networks_multiple_is_named_by_its_key() {
        let c = TrainConfig {
            crop: [16, 20, 16],
            vae: false,
            ..Default::default()
        };
        let e = c.validate().unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { key: "crop", .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "crop [16, 20, 16]: each size must be a positive multiple of 8"
        );
    }
}
