//! The NvNet network (docs/DESIGN.md §3–4): MONAI-`SegResNet`-compatible segmentation path and the
//! paper's VAE regularisation branch. Generic over the Burn backend.

use burn::module::Module;
use burn::nn::conv::{Conv3d, Conv3dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig, PaddingConfig3d};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::{relu, softplus};
use serde::{Deserialize, Serialize};

use crate::nn::upsample::upsample_trilinear_x2;

/// Size of the VAE latent space (the paper's 128).
pub const VAE_LATENT: usize = 128;
/// Channels of the VAE's bottleneck feature map (the paper's 16).
pub const VAE_CHANNELS: usize = 16;
/// GroupNorm epsilon, as in PyTorch/MONAI.
pub const GN_EPS: f64 = 1e-5;

/// The VAE branch of the paper: needs a fixed training crop because of its dense layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeConfig {
    /// The training crop, `[D, H, W]` (paper: 160×192×128); each a multiple of 16.
    pub input_shape: [usize; 3],
}

/// Architecture of an NvNet; everything needed to build the module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NvNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// F: channels at full resolution (paper 32, MONAI's BraTS bundle 16).
    pub init_filters: usize,
    pub blocks_down: Vec<usize>,
    pub blocks_up: Vec<usize>,
    pub norm_groups: usize,
    /// Spatial (channel-wise) dropout after the initial convolution, in training only.
    pub dropout: f64,
    pub vae: Option<VaeConfig>,
}

impl Default for NvNetConfig {
    fn default() -> Self {
        Self {
            in_channels: 4,
            out_channels: 3,
            init_filters: 32,
            blocks_down: vec![1, 2, 2, 4],
            blocks_up: vec![1, 1, 1],
            norm_groups: 8,
            dropout: 0.2,
            vae: None,
        }
    }
}

/// Why a configuration cannot be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("blocks_down must have one more level than blocks_up (got {down} and {up})")]
    Levels { down: usize, up: usize },
    #[error("init_filters ({0}) must be a positive multiple of the GroupNorm groups ({1})")]
    Filters(usize, usize),
    #[error("the VAE crop {0:?} must be positive multiples of {1} on every axis")]
    VaeShape([usize; 3], usize),
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("dropout must be in [0, 1), got {0}")]
    Dropout(f64),
    #[error("{what} = {value} is beyond what nvnet builds (at most {max})")]
    TooLarge {
        what: &'static str,
        value: usize,
        max: usize,
    },
}

/// Bounds on a configuration read from a file: far above any real NvNet (the paper's is F=32,
/// 4 levels, 4 blocks), low enough that sizes computed from them cannot overflow (also in the
/// 32-bit wasm build) and that a few bytes of manifest cannot ask for gigabytes of weights.
const MAX_FILTERS: usize = 512;
const MAX_LEVELS: usize = 8;
const MAX_BLOCKS: usize = 16;
/// Channels of the deepest level (the paper's: 256). Keeps parameter counts within 32 bits.
const MAX_WIDTH: usize = 1024;
const MAX_CHANNELS: usize = 64;
const MAX_VAE_SIZE: usize = 4096;

impl NvNetConfig {
    pub fn with_init_filters(mut self, f: usize) -> Self {
        self.init_filters = f;
        self
    }

    pub fn with_vae(mut self, input_shape: Option<[usize; 3]>) -> Self {
        self.vae = input_shape.map(|input_shape| VaeConfig { input_shape });
        self
    }

    /// Number of resolution levels of the encoder.
    pub fn levels(&self) -> usize {
        self.blocks_down.len()
    }

    /// Spatial sizes must be multiples of this (2^(levels-1)).
    pub fn size_multiple(&self) -> usize {
        1 << (self.levels().saturating_sub(1))
    }

    /// Channels at encoder level `i`.
    pub fn channels_at(&self, level: usize) -> usize {
        self.init_filters << level
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bounded = |what, value: usize, max| {
            (value <= max)
                .then_some(())
                .ok_or(ConfigError::TooLarge { what, value, max })
        };
        bounded("init_filters", self.init_filters, MAX_FILTERS)?;
        bounded("in_channels", self.in_channels, MAX_CHANNELS)?;
        bounded("out_channels", self.out_channels, MAX_CHANNELS)?;
        bounded("levels (blocks_down)", self.blocks_down.len(), MAX_LEVELS)?;
        bounded(
            "channels of the deepest level",
            self.init_filters << self.levels().saturating_sub(1),
            MAX_WIDTH,
        )?;
        for &n in self.blocks_down.iter().chain(&self.blocks_up) {
            bounded("blocks per level", n, MAX_BLOCKS)?;
        }
        if let Some(vae) = &self.vae {
            for s in vae.input_shape {
                bounded("VAE crop size", s, MAX_VAE_SIZE)?;
            }
        }
        if self.in_channels == 0 {
            return Err(ConfigError::Zero("in_channels"));
        }
        if self.out_channels == 0 {
            return Err(ConfigError::Zero("out_channels"));
        }
        if self.norm_groups == 0 {
            return Err(ConfigError::Zero("norm_groups"));
        }
        if self.blocks_down.is_empty() || self.blocks_down.len() != self.blocks_up.len() + 1 {
            return Err(ConfigError::Levels {
                down: self.blocks_down.len(),
                up: self.blocks_up.len(),
            });
        }
        if self.init_filters == 0 || !self.init_filters.is_multiple_of(self.norm_groups) {
            return Err(ConfigError::Filters(self.init_filters, self.norm_groups));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ConfigError::Dropout(self.dropout));
        }
        if let Some(vae) = &self.vae {
            let m = 2 * self.size_multiple();
            if vae.input_shape.iter().any(|&s| s == 0 || s % m != 0) {
                return Err(ConfigError::VaeShape(vae.input_shape, m));
            }
        }
        Ok(())
    }

    /// Build the module with freshly initialised weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<NvNet<B>, ConfigError> {
        self.validate()?;
        let f = self.init_filters;
        let g = self.norm_groups;
        let down = self
            .blocks_down
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let c = self.channels_at(i);
                EncoderLevel {
                    downsample: (i > 0).then(|| conv3(c / 2, c, 2, device)),
                    blocks: (0..n).map(|_| ResBlock::new(c, g, device)).collect(),
                }
            })
            .collect();
        let n_up = self.blocks_up.len();
        let up = self
            .blocks_up
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let c = self.channels_at(n_up - i);
                DecoderLevel {
                    reduce: conv1(c, c / 2, false, device),
                    blocks: (0..n).map(|_| ResBlock::new(c / 2, g, device)).collect(),
                }
            })
            .collect();
        let vae = self.vae.as_ref().map(|v| VaeBranch::new(self, v, device));
        Ok(NvNet {
            conv_init: conv3(self.in_channels, f, 1, device),
            down,
            up,
            head_norm: GroupNormConfig::new(g, f).with_epsilon(GN_EPS).init(device),
            head_conv: head(f, self.out_channels, device),
            vae,
            dropout: self.dropout,
        })
    }
}

fn conv3<B: Backend>(cin: usize, cout: usize, stride: usize, device: &B::Device) -> Conv3d<B> {
    Conv3dConfig::new([cin, cout], [3, 3, 3])
        .with_stride([stride; 3])
        .with_padding(PaddingConfig3d::Explicit(1, 1, 1))
        .with_bias(false)
        .init(device)
}

/// The prior probability of a tumour voxel that a fresh head starts from.
pub const HEAD_PRIOR: f64 = 0.02;

/// The head: a 1×1×1 convolution whose bias starts at logit(HEAD_PRIOR). Starting at p = 0.5
/// everywhere, the soft Dice loss is stuck near 1 (Σp² over the background swamps it) and Adam
/// moves the bias only ~lr per step: thousands of steps are lost before anything is learnt.
/// The prior start (as RetinaNet's) lets training begin at once.
fn head<B: Backend>(cin: usize, cout: usize, device: &B::Device) -> Conv3d<B> {
    let mut conv = conv1(cin, cout, true, device);
    let prior = (HEAD_PRIOR / (1.0 - HEAD_PRIOR)).ln() as f32;
    conv.bias = Some(burn::module::Param::from_tensor(Tensor::full(
        [cout],
        prior,
        device,
    )));
    conv
}

fn conv1<B: Backend>(cin: usize, cout: usize, bias: bool, device: &B::Device) -> Conv3d<B> {
    Conv3dConfig::new([cin, cout], [1, 1, 1])
        .with_bias(bias)
        .init(device)
}

/// `conv.forward(x)`; training takes nvnet's own backward (`conv_grad`): faster on the CPU, a
/// correct weight gradient on the GPU backends. On flex (x86-64) the 3×3×3 convolutions are
/// computed directly (`direct_conv`).
pub fn conv<B: Backend>(conv: &Conv3d<B>, x: Tensor<B, 5>) -> Tensor<B, 5> {
    #[cfg(feature = "autodiff")]
    let x = match crate::nn::conv_grad::try_conv3d(conv, x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    #[cfg(direct_kernels)]
    let x = match crate::nn::direct_conv::try_forward(conv, x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    conv.forward(x)
}

/// `conv(conv_, group_norm_relu(norm, x))`; for inference on flex in one pass over the feature
/// map where the direct kernel applies (`direct_conv::try_norm_relu_forward`).
pub fn norm_relu_conv<B: Backend>(
    norm: &GroupNorm<B>,
    conv_: &Conv3d<B>,
    x: Tensor<B, 5>,
) -> Tensor<B, 5> {
    #[cfg(direct_kernels)]
    let x = match crate::nn::direct_conv::try_norm_relu_forward(norm, conv_, x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    conv(conv_, group_norm_relu(norm, x))
}

/// A convolution's padding in voxels per axis (`None` for "same", which nvnet's own kernels do
/// not take).
pub fn explicit_padding<B: Backend>(conv: &Conv3d<B>) -> Option<[usize; 3]> {
    match conv.padding {
        PaddingConfig3d::Explicit(d, h, w) => Some([d, h, w]),
        PaddingConfig3d::Valid => Some([0, 0, 0]),
        PaddingConfig3d::Same => None,
    }
}

/// `norm.forward(x)` computed with the statistics summed one axis at a time (`normalise`). On
/// flex, fused kernels take over (statistics in float64): `cpu_grad` when training, `flex_infer`
/// for inference; when training on a GPU backend `norm_grad` records it as one operation with
/// its own backward.
pub fn group_norm<B: Backend>(norm: &GroupNorm<B>, x: Tensor<B, 5>) -> Tensor<B, 5> {
    #[cfg(all(feature = "flex", feature = "autodiff", not(target_arch = "wasm32")))]
    let x = match crate::nn::cpu_grad::group_norm(norm, x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    // Inference on flex: in place.
    #[cfg(all(feature = "flex", any(feature = "autodiff", target_arch = "wasm32")))]
    let x = match crate::nn::flex_infer::group_norm(norm, x, false) {
        Ok(y) => return y,
        Err(x) => x,
    };
    #[cfg(feature = "autodiff")]
    let x = match crate::nn::norm_grad::try_group_norm(norm, x, false) {
        Ok(y) => return y,
        Err(x) => x,
    };
    if x.dtype() == burn::tensor::DType::F16 {
        return crate::nn::precision::group_norm_f32(norm, x);
    }
    let (normed, _) = normalise(x, norm.num_groups, norm.epsilon);
    match (&norm.gamma, &norm.beta) {
        (Some(gamma), Some(beta)) if norm.affine => affine(normed, gamma.val(), beta.val()),
        _ => normed,
    }
}

/// `relu(group_norm(norm, x))`; when training on a GPU backend one operation that keeps a
/// third of what the two keep for the backward pass (`norm_grad`).
pub fn group_norm_relu<B: Backend>(norm: &GroupNorm<B>, x: Tensor<B, 5>) -> Tensor<B, 5> {
    #[cfg(feature = "autodiff")]
    let x = match crate::nn::norm_grad::try_group_norm(norm, x, true) {
        Ok(y) => return y,
        Err(x) => x,
    };
    // Inference on flex: both in one pass, in place.
    #[cfg(all(feature = "flex", any(feature = "autodiff", target_arch = "wasm32")))]
    let x = match crate::nn::flex_infer::group_norm(norm, x, true) {
        Ok(y) => return y,
        Err(x) => x,
    };
    relu(group_norm(norm, x))
}

/// x̂ = (x − μ)/σ per (sample, group) of `groups` channel groups, and σ [B·G, 1, 1, 1]. The sums
/// run one axis at a time: Burn's GroupNorm sums each group in one reduction over C/G·D·H·W
/// values, which wgpu on llvmpipe gets wrong beyond about 10⁵ values (a 64×64×48 window gave
/// errors of 10² after the first norm; tested in wgpu_reference.rs). Short reductions are also
/// more accurate in float32.
pub fn normalise<B: Backend>(
    x: Tensor<B, 5>,
    groups: usize,
    eps: f64,
) -> (Tensor<B, 5>, Tensor<B, 4>) {
    let [b, c, d, h, w] = x.dims();
    let n = (c / groups * d * h * w) as f64;
    let grouped = x.reshape([b * groups, c / groups * d, h, w]);
    let sum = |t: Tensor<B, 4>| t.sum_dim(3).sum_dim(2).sum_dim(1);
    let mean = sum(grouped.clone()) / n;
    let centred = grouped - mean;
    let var = sum(centred.clone().square()) / n;
    let std = (var + eps).sqrt();
    let normed = (centred / std.clone()).reshape([b, c, d, h, w]);
    (normed, std)
}

/// γ·x̂ + β per channel.
pub fn affine<B: Backend>(
    normed: Tensor<B, 5>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
) -> Tensor<B, 5> {
    let c = gamma.dims()[0];
    normed * gamma.reshape([1, c, 1, 1, 1]) + beta.reshape([1, c, 1, 1, 1])
}

/// GN → ReLU → conv3 → GN → ReLU → conv3, plus the identity.
#[derive(Module, Debug)]
pub struct ResBlock<B: Backend> {
    pub norm1: GroupNorm<B>,
    pub conv1: Conv3d<B>,
    pub norm2: GroupNorm<B>,
    pub conv2: Conv3d<B>,
}

impl<B: Backend> ResBlock<B> {
    fn new(c: usize, groups: usize, device: &B::Device) -> Self {
        Self {
            norm1: GroupNormConfig::new(groups, c)
                .with_epsilon(GN_EPS)
                .init(device),
            conv1: conv3(c, c, 1, device),
            norm2: GroupNormConfig::new(groups, c)
                .with_epsilon(GN_EPS)
                .init(device),
            conv2: conv3(c, c, 1, device),
        }
    }

    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let y = norm_relu_conv(&self.norm1, &self.conv1, x.clone());
        let y = norm_relu_conv(&self.norm2, &self.conv2, y);
        y + x
    }
}

/// One encoder level: an optional stride-2 convolution, then ResBlocks.
#[derive(Module, Debug)]
pub struct EncoderLevel<B: Backend> {
    pub downsample: Option<Conv3d<B>>,
    pub blocks: Vec<ResBlock<B>>,
}

impl<B: Backend> EncoderLevel<B> {
    pub fn forward(&self, mut x: Tensor<B, 5>) -> Tensor<B, 5> {
        if let Some(conv) = &self.downsample {
            x = self::conv(conv, x);
        }
        self.blocks.iter().fold(x, |x, b| b.forward(x))
    }
}

/// One decoder level: conv 1×1×1 halving the channels, trilinear ×2, add the skip (the VAE's
/// decoder has none), ResBlocks.
#[derive(Module, Debug)]
pub struct DecoderLevel<B: Backend> {
    pub reduce: Conv3d<B>,
    pub blocks: Vec<ResBlock<B>>,
}

impl<B: Backend> DecoderLevel<B> {
    pub fn forward(&self, x: Tensor<B, 5>, skip: Option<Tensor<B, 5>>) -> Tensor<B, 5> {
        let mut x = upsample_trilinear_x2(conv(&self.reduce, x));
        if let Some(skip) = skip {
            x = x + skip;
        }
        self.blocks.iter().fold(x, |x, b| b.forward(x))
    }
}

/// The VAE branch (paper Table 3); its own decoder, not shared with the segmentation path.
#[derive(Module, Debug)]
pub struct VaeBranch<B: Backend> {
    pub down_norm: GroupNorm<B>,
    pub down_conv: Conv3d<B>,
    pub encode: Linear<B>,
    pub decode: Linear<B>,
    pub up_conv: Conv3d<B>,
    pub up: Vec<DecoderLevel<B>>,
    pub end: Conv3d<B>,
    /// Bottleneck grid `[D/16, H/16, W/16]` for the fixed crop.
    pub grid: [usize; 3],
}

impl<B: Backend> VaeBranch<B> {
    fn new(cfg: &NvNetConfig, vae: &VaeConfig, device: &B::Device) -> Self {
        let levels = cfg.levels();
        let top = cfg.channels_at(levels - 1);
        let factor = 2 * cfg.size_multiple();
        let grid = vae.input_shape.map(|s| s / factor);
        let flat = VAE_CHANNELS * grid.iter().product::<usize>();
        let up = (0..levels - 1)
            .map(|i| {
                let c = cfg.channels_at(levels - 1 - i);
                DecoderLevel {
                    reduce: conv1(c, c / 2, false, device),
                    blocks: vec![ResBlock::new(c / 2, cfg.norm_groups, device)],
                }
            })
            .collect();
        Self {
            down_norm: GroupNormConfig::new(cfg.norm_groups, top)
                .with_epsilon(GN_EPS)
                .init(device),
            down_conv: conv3(top, VAE_CHANNELS, 2, device),
            encode: LinearConfig::new(flat, 2 * VAE_LATENT).init(device),
            decode: LinearConfig::new(VAE_LATENT, flat).init(device),
            up_conv: conv1(VAE_CHANNELS, top, false, device),
            up,
            end: conv1(cfg.init_filters, cfg.in_channels, true, device),
            grid,
        }
    }

    /// Encode the deepest feature map into (μ, σ), sample z, decode to the input's shape.
    pub fn forward(&self, deepest: Tensor<B, 5>) -> VaeOutput<B> {
        let [b, _, _, _, _] = deepest.dims();
        let x = conv(&self.down_conv, group_norm_relu(&self.down_norm, deepest));
        let stats = self.encode.forward(x.flatten::<2>(1, 4));
        let mu = stats.clone().narrow(1, 0, VAE_LATENT);
        // σ = softplus(v) + 1e-6: smooth, positive, and its gradient never vanishes as exp's can explode.
        let sigma = softplus(stats.narrow(1, VAE_LATENT, VAE_LATENT), 1.0).add_scalar(1e-6);
        let eps = mu.random_like(Distribution::Normal(0.0, 1.0));
        let z = mu.clone() + sigma.clone() * eps;
        let [gd, gh, gw] = self.grid;
        let y = relu(self.decode.forward(z)).reshape([b, VAE_CHANNELS, gd, gh, gw]);
        let y = upsample_trilinear_x2(conv(&self.up_conv, y));
        let y = self.up.iter().fold(y, |y, level| level.forward(y, None));
        VaeOutput {
            reconstruction: conv(&self.end, y),
            mu,
            sigma,
        }
    }
}

/// What the VAE branch returns: the reconstructed input and the latent distribution.
#[derive(Debug, Clone)]
pub struct VaeOutput<B: Backend> {
    pub reconstruction: Tensor<B, 5>,
    pub mu: Tensor<B, 2>,
    pub sigma: Tensor<B, 2>,
}

/// The training-time forward result.
#[derive(Debug, Clone)]
pub struct TrainOutput<B: Backend> {
    pub logits: Tensor<B, 5>,
    pub vae: Option<VaeOutput<B>>,
}

/// NvNet: encoder, decoder with additive skips, 1×1×1 head, and the optional VAE branch.
#[derive(Module, Debug)]
pub struct NvNet<B: Backend> {
    pub conv_init: Conv3d<B>,
    pub down: Vec<EncoderLevel<B>>,
    pub up: Vec<DecoderLevel<B>>,
    pub head_norm: GroupNorm<B>,
    pub head_conv: Conv3d<B>,
    pub vae: Option<VaeBranch<B>>,
    pub dropout: f64,
}

impl<B: Backend> NvNet<B> {
    /// Segmentation logits `[B, out, D, H, W]` (no sigmoid). Sizes must be multiples of
    /// `2^(levels-1)`; inference pads for the user.
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let (logits, _) = self.forward_features(x);
        logits
    }

    /// Segmentation logits plus, when the model has its VAE branch, the reconstruction and
    /// latent statistics (used by the training loss).
    pub fn forward_train(&self, x: Tensor<B, 5>) -> TrainOutput<B> {
        let (logits, deepest) = self.forward_features(x);
        let vae = self.vae.as_ref().map(|v| v.forward(deepest));
        TrainOutput { logits, vae }
    }

    fn forward_features(&self, x: Tensor<B, 5>) -> (Tensor<B, 5>, Tensor<B, 5>) {
        self.forward_traced(x, &mut |_, _| {})
    }

    /// The forward pass, `trace` shown each stage's output as it is made: `conv_init`, `down0`,
    /// `down1`, ..., `up0`, ..., `logits` (a backend that departs from another is then traced to
    /// the first stage that differs). Returns the logits and the deepest encoder level.
    pub fn forward_traced(
        &self,
        x: Tensor<B, 5>,
        trace: &mut dyn FnMut(&str, &Tensor<B, 5>),
    ) -> (Tensor<B, 5>, Tensor<B, 5>) {
        let mut stages = self.stages(x);
        while !stages.is_done() {
            let (name, y) = stages.step();
            trace(&name, &y);
        }
        stages.finish()
    }

    /// The forward pass, to be run one stage at a time ([`Stages`]).
    pub fn stages(&self, x: Tensor<B, 5>) -> Stages<'_, B> {
        Stages {
            model: self,
            current: Some(x),
            skips: Vec::with_capacity(self.down.len()),
            deepest: None,
            done: 0,
        }
    }

    /// Channel-wise (Dropout3d) dropout, only while gradients are tracked (training).
    fn spatial_dropout(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        if self.dropout <= 0.0 || !B::ad_enabled(&x.device()) {
            return x;
        }
        let [b, c, _, _, _] = x.dims();
        let keep = 1.0 - self.dropout;
        let mask =
            Tensor::<B, 5>::random([b, c, 1, 1, 1], Distribution::Bernoulli(keep), &x.device());
        x * mask.div_scalar(keep)
    }

    /// The architecture of this module, read back from its shapes.
    /// The segmentation network alone: the VAE branch dropped (it only regularises training).
    pub fn without_vae(mut self) -> Self {
        self.vae = None;
        self
    }

    pub fn config(&self) -> NvNetConfig {
        let [f, cin, _, _, _] = self.conv_init.weight.dims();
        let [cout, _, _, _, _] = self.head_conv.weight.dims();
        NvNetConfig {
            in_channels: cin,
            out_channels: cout,
            init_filters: f,
            blocks_down: self.down.iter().map(|l| l.blocks.len()).collect(),
            blocks_up: self.up.iter().map(|l| l.blocks.len()).collect(),
            norm_groups: self.head_norm.num_groups,
            dropout: self.dropout,
            vae: self.vae.as_ref().map(|v| VaeConfig {
                input_shape: v.grid.map(|g| g * 2 * (1 << (self.down.len() - 1))),
            }),
        }
    }
}

/// A forward pass run one stage at a time (`conv_init`, each encoder level, each decoder level,
/// the head): a caller on an asynchronous device (WebGPU in the page) can wait for each stage
/// and say how far a long pass has got. The same operations as [`NvNet::forward`], in order.
pub struct Stages<'m, B: Backend> {
    model: &'m NvNet<B>,
    current: Option<Tensor<B, 5>>,
    skips: Vec<Tensor<B, 5>>,
    deepest: Option<Tensor<B, 5>>,
    done: usize,
}

impl<B: Backend> Stages<'_, B> {
    /// How many stages the pass has.
    pub fn len(&self) -> usize {
        2 + self.model.down.len() + self.model.up.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn is_done(&self) -> bool {
        self.done == self.len()
    }

    /// How many stages have run.
    pub fn done(&self) -> usize {
        self.done
    }

    /// Run the next stage (on a lazy device: queue it); its name and output.
    pub fn step(&mut self) -> (String, Tensor<B, 5>) {
        assert!(!self.is_done(), "every stage has run");
        let m = self.model;
        let (down, k) = (m.down.len(), self.done);
        let x = self.current.take().expect("the last stage's output");
        let (name, y) = if k == 0 {
            (
                "conv_init".to_string(),
                m.spatial_dropout(conv(&m.conv_init, x)),
            )
        } else if k <= down {
            let y = m.down[k - 1].forward(x);
            // The deepest level is the decoder's input, not a skip.
            if k < down {
                self.skips.push(y.clone());
            } else {
                self.deepest = Some(y.clone());
            }
            (format!("down{}", k - 1), y)
        } else if k < self.len() - 1 {
            let skip = self.skips.pop().expect("one skip per decoder level");
            (
                format!("up{}", k - 1 - down),
                m.up[k - 1 - down].forward(x, Some(skip)),
            )
        } else {
            (
                "logits".to_string(),
                conv(&m.head_conv, group_norm_relu(&m.head_norm, x)),
            )
        };
        self.current = Some(y.clone());
        self.done += 1;
        (name, y)
    }

    /// The logits and the deepest encoder level, once every stage has run.
    pub fn finish(self) -> (Tensor<B, 5>, Tensor<B, 5>) {
        assert!(self.is_done(), "a stage has not run");
        (
            self.current.expect("the logits"),
            self.deepest.expect("the deepest level"),
        )
    }
}
