//! Half precision for GPU inference: weights and activations stored and multiplied in float16,
//! which halves a window's memory and traffic; GroupNorm's statistics, the logits and the
//! blending stay in float32 (float16 sums of squares overflow at 65,504, and its 11-bit
//! mantissa would round the means).

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

use burn::nn::GroupNorm;

use crate::nn::model::{NvNet, affine};

/// The float type a model runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F16,
}

impl Precision {
    /// Bytes of one activation value.
    pub fn bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F16 => 2,
        }
    }

    pub fn dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::F16 => FloatDType::F16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            _ => Err(format!("unknown precision {s:?} (f32 or f16)")),
        }
    }
}

/// Whether `device` computes in float16 (a GPU whose adapter offers it: WebGPU's `shader-f16`,
/// Vulkan's `shaderFloat16` with 16-bit storage, CUDA).
pub fn supports_f16<B: Backend>(device: &B::Device) -> bool {
    B::supports_dtype(device, DType::F16)
}

/// `model` with its weights in `precision` (GroupNorm casts its own back to float32).
pub fn with_precision<B: Backend>(model: NvNet<B>, precision: Precision) -> NvNet<B> {
    struct Cast(FloatDType);
    impl<B: Backend> ModuleMapper<B> for Cast {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            Param::from_mapped_value(id, tensor.cast(self.0), mapper)
        }
    }
    if precision_of(&model) == precision {
        return model;
    }
    model.map(&mut Cast(precision.dtype()))
}

/// The precision `model`'s weights are in.
pub fn precision_of<B: Backend>(model: &NvNet<B>) -> Precision {
    match model.conv_init.weight.val().dtype() {
        DType::F16 => Precision::F16,
        _ => Precision::F32,
    }
}

/// `x` in `dtype`; no operation when it is already.
pub fn cast_to<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: FloatDType) -> Tensor<B, D> {
    if x.dtype() == DType::from(dtype) {
        x
    } else {
        x.cast(dtype)
    }
}

/// GroupNorm of a half-precision map with its statistics and its arithmetic in float32, the
/// result in float16. Each use casts the map anew, so that a fusing backend (wgpu, CUDA) can read
/// float16 into each kernel rather than keep a float32 copy of a full-resolution map (not
/// observed directly: on llvmpipe its memory grew 0.52× float32's, `wgpu_reference.rs`).
pub fn group_norm_f32<B: Backend>(norm: &GroupNorm<B>, x: Tensor<B, 5>) -> Tensor<B, 5> {
    let f32 = FloatDType::F32;
    let [b, c, d, h, w] = x.dims();
    let groups = norm.num_groups;
    let n = (c / groups * d * h * w) as f64;
    let grouped = x.reshape([b * groups, c / groups * d, h, w]);
    // One axis at a time, as `model::normalise` sums.
    let sum = |t: Tensor<B, 4>| t.sum_dim(3).sum_dim(2).sum_dim(1);
    let mean = sum(grouped.clone().cast(f32)) / n;
    let var = sum((grouped.clone().cast(f32) - mean.clone()).square()) / n;
    let std = (var + norm.epsilon).sqrt();
    let normed = ((grouped.cast(f32) - mean) / std).reshape([b, c, d, h, w]);
    let y = match (&norm.gamma, &norm.beta) {
        (Some(gamma), Some(beta)) if norm.affine => {
            affine(normed, cast_to(gamma.val(), f32), cast_to(beta.val(), f32))
        }
        _ => normed,
    };
    y.cast(FloatDType::F16)
}
