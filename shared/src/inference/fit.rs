//! The window a device can take: within the memory budget and the device's largest buffer,
//! checked before any work so that a window that does not fit is refused with a message.

use super::{InferenceError, InferenceOptions};
use crate::nn::precision::Precision;

/// The estimated activation memory of one window in `precision` (`nn::info` counts float32).
pub fn window_bytes(config: &crate::NvNetConfig, roi: [usize; 3], precision: Precision) -> f64 {
    crate::nn::info::summarize(config, roi).inference_bytes * precision.bytes() as f64 / 4.0
}

/// The window size for a box: the whole box, rounded up to a multiple of the network's size
/// multiple (8 for four levels), when its estimated activation memory in `precision` fits
/// `budget` and its largest tensor fits `max_buffer`; else the largest such window that does,
/// shrinking the longest axis first. The largest tensor is counted in float32 whatever the
/// precision: GroupNorm works in float32 (a hard limit is not left to a kernel fusion).
pub fn choose_roi(
    config: &crate::NvNetConfig,
    box_size: [usize; 3],
    budget: u64,
    max_buffer: Option<u64>,
    precision: Precision,
) -> [usize; 3] {
    // What the network can take: 8 for the paper's four levels, more for a deeper import.
    let m = config.size_multiple().max(1);
    let mut roi = box_size.map(|s| s.div_ceil(m).max(2) * m);
    loop {
        let bytes = window_bytes(config, roi, precision);
        let largest = crate::nn::info::largest_tensor_bytes(config, roi);
        let fits = bytes <= budget as f64 && max_buffer.is_none_or(|b| largest <= b as f64);
        if fits || roi.iter().all(|&r| r <= 2 * m) {
            return roi;
        }
        let a = (0..3).max_by_key(|&a| roi[a]).unwrap();
        roi[a] -= m;
    }
}

/// A window the user chose: sizes the network can take, and within the memory budget and the
/// device's largest buffer (a window that does not fit fails before any work, with a message,
/// rather than in the allocator).
pub fn check_roi(
    config: &crate::NvNetConfig,
    roi: [usize; 3],
    options: &InferenceOptions,
) -> Result<(), InferenceError> {
    let k = config.size_multiple();
    if roi.iter().any(|r| *r == 0 || r % k != 0) {
        return Err(InferenceError::WindowSize { roi, multiple: k });
    }
    let bytes = window_bytes(config, roi, options.precision);
    if bytes > options.memory_budget as f64 {
        return Err(InferenceError::OverBudget {
            roi,
            needs: bytes,
            budget: options.memory_budget,
        });
    }
    check_buffer(
        config,
        roi,
        options.max_buffer,
        ("window", "choose a smaller window"),
    )
}

/// The network's weights and a window's largest tensor within the device's largest buffer, a
/// hard limit (the memory budget is an estimate: the smallest window may exceed it). A message
/// about the window names it `subject` (`window`, or the option that set it: `--shape`,
/// `--crop`) and ends with `advice`.
pub fn check_buffer(
    config: &crate::NvNetConfig,
    roi: [usize; 3],
    max_buffer: Option<u64>,
    (subject, advice): (&str, &str),
) -> Result<(), InferenceError> {
    let Some(max) = max_buffer else {
        return Ok(());
    };
    check_weights_fit(config, max)?;
    let largest = crate::nn::info::largest_tensor_bytes(config, roi);
    if largest > max as f64 {
        return Err(InferenceError::TensorOverBuffer {
            subject: subject.to_string(),
            advice: advice.to_string(),
            roi,
            largest,
            max,
        });
    }
    Ok(())
}

/// The network's largest weight tensor within a device's largest buffer (`max_buffer`): checked
/// before a model is built on a GPU, whose allocator fails on its own thread otherwise.
pub fn check_weights_fit(
    config: &crate::NvNetConfig,
    max_buffer: u64,
) -> Result<(), InferenceError> {
    let weights = crate::nn::info::largest_weight_bytes(config);
    if weights > max_buffer as f64 {
        return Err(InferenceError::WeightsOverBuffer {
            bytes: weights,
            init_filters: config.init_filters,
            max: max_buffer,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_shrinks_to_fit_the_memory_budget() {
        let config = crate::NvNetConfig::default().with_init_filters(16);
        let whole = [144, 176, 112];
        let big = crate::nn::info::summarize(&config, whole).inference_bytes;
        assert_eq!(
            choose_roi(&config, whole, big as u64 + 1, None, Precision::F32),
            whole
        );
        let budget = (big / 4.0) as u64;
        let roi = choose_roi(&config, whole, budget, None, Precision::F32);
        assert!(roi.iter().all(|r| r % 8 == 0), "{roi:?}");
        assert!(crate::nn::info::summarize(&config, roi).inference_bytes <= budget as f64);
        assert!(roi.iter().zip(whole).all(|(r, w)| *r <= w) && roi != whole);
        // The longest axis gave way first.
        assert!(roi[1] < whole[1]);
        // In float16 the budget that halved the window takes the whole box again.
        assert_eq!(
            choose_roi(&config, whole, (big / 2.0) as u64 + 1, None, Precision::F16),
            whole
        );
        assert!(window_bytes(&config, whole, Precision::F16) * 2.0 == big);
        // A five-level network halves four times: its windows are multiples of 16.
        let deep = crate::NvNetConfig {
            blocks_down: vec![1, 2, 2, 4, 4],
            blocks_up: vec![1, 1, 1, 1],
            ..Default::default()
        };
        assert_eq!(
            choose_roi(&deep, [40, 44, 36], u64::MAX, None, Precision::F32),
            [48, 48, 48]
        );
    }

    #[test]
    fn a_device_buffer_too_small_for_the_weights_or_the_window_is_refused_by_name() {
        let config = crate::NvNetConfig::default().with_init_filters(8);
        // The deepest level's 3×3×3 convolution: 64 × 64 × 27 float32.
        assert_eq!(crate::nn::info::largest_weight_bytes(&config), 442_368.0);
        let options = |max_buffer| InferenceOptions {
            max_buffer: Some(max_buffer),
            memory_budget: u64::MAX,
            ..InferenceOptions::default()
        };
        let e = check_roi(&config, [16, 16, 16], &options(200 << 10))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("largest weight tensor (432.0 KiB, F=8)") && e.contains("(200.0 KiB)"),
            "{e}"
        );
        // A window's own feature maps: 8 × 64³ float32 = 8 MiB.
        let e = check_roi(&config, [64, 64, 64], &options(1 << 20))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("window [64, 64, 64]: its largest tensor (8.0 MiB)")
                && e.contains("(1.0 MiB): choose a smaller window"),
            "{e}"
        );
        assert_eq!(check_roi(&config, [32, 32, 32], &options(1 << 20)), Ok(()));
        // What the window chooser falls back to when nothing fits is refused the same way.
        let roi = choose_roi(
            &config,
            [64, 64, 64],
            u64::MAX,
            Some(200 << 10),
            Precision::F32,
        );
        assert_eq!(roi, [16, 16, 16]);
        assert!(check_buffer(&config, roi, Some(200 << 10), ("window", "x")).is_err());
        // Training's weights files carry the VAE: its encoder is 16·(160·192·128/16³)×256.
        let paper = crate::NvNetConfig::default().with_vae(Some([160, 192, 128]));
        assert_eq!(
            crate::nn::info::largest_weight_bytes(&paper),
            4.0 * (16 * 10 * 12 * 8 * 256) as f64
        );
        let e = check_weights_fit(&paper, 8 << 20).unwrap_err().to_string();
        assert!(e.contains("(15.0 MiB, F=32)"), "{e}");
    }
}
