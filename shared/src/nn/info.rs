//! Architecture summary: parameters, forward FLOP and activation memory at a given input
//! shape, computed from the configuration alone (no tensors are allocated).

use crate::nn::model::{NvNetConfig, VAE_CHANNELS, VAE_LATENT};

/// One stage of the network at a given input shape.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    pub channels: usize,
    pub shape: [usize; 3],
    pub params: usize,
    /// 2 × multiply-accumulates of the stage's convolutions and dense layers.
    pub flop: f64,
}

/// What `nvnet info` prints.
#[derive(Debug, Clone)]
pub struct Summary {
    pub stages: Vec<Stage>,
    pub params: usize,
    pub seg_flop: f64,
    pub vae_flop: f64,
    /// Estimated peak activation memory of an inference forward pass, bytes (f32).
    pub inference_bytes: f64,
    /// Estimated activations kept for the backward pass of one training step, bytes (f32).
    pub training_bytes: f64,
}

struct Walk {
    stages: Vec<Stage>,
}

impl Walk {
    fn stage(&mut self, name: String, channels: usize, shape: [usize; 3]) -> &mut Stage {
        self.stages.push(Stage {
            name,
            channels,
            shape,
            params: 0,
            flop: 0.0,
        });
        self.stages.last_mut().expect("just pushed")
    }
}

fn voxels(s: [usize; 3]) -> f64 {
    s.iter().map(|&v| v as f64).product()
}

fn conv(
    stage: &mut Stage,
    walk_kept: &mut f64,
    cin: usize,
    cout: usize,
    k: usize,
    bias: bool,
    out: [usize; 3],
) {
    let k3 = k * k * k;
    stage.params += cin * cout * k3 + if bias { cout } else { 0 };
    stage.flop += 2.0 * (cin * cout * k3) as f64 * voxels(out);
    *walk_kept += cout as f64 * voxels(out);
}

fn resblock(stage: &mut Stage, kept: &mut f64, c: usize, s: [usize; 3]) {
    stage.params += 4 * c; // two GroupNorms
    // GN, ReLU, conv, GN, ReLU, conv, add: seven tensors of C×V.
    *kept += 5.0 * c as f64 * voxels(s);
    conv(stage, kept, c, c, 3, false, s);
    conv(stage, kept, c, c, 3, false, s);
}

/// Bytes of the largest single tensor of an inference forward pass at `shape` (f32): the
/// widest of the input, the full-resolution feature maps, the output and the weights. A GPU
/// must bind it as one storage buffer, so this is what WebGPU's binding limit caps.
pub fn largest_tensor_bytes(config: &NvNetConfig, shape: [usize; 3]) -> f64 {
    let m = config.size_multiple();
    let shape = shape.map(|s| s.div_ceil(m) * m);
    // Deeper levels have 2× the channels on 1/8 of the voxels: the full resolution dominates.
    let widest = config
        .in_channels
        .max(config.init_filters)
        .max(config.out_channels);
    (4.0 * widest as f64 * voxels(shape)).max(largest_weight_bytes(config))
}

/// Bytes of the largest weight tensor (f32): a 3×3×3 convolution of the deepest level, C×C×27,
/// or, in a network that carries its VAE branch (training's weights files), the VAE's linear
/// layers, (16 · crop/16³) × 256. Small windows are bound by it rather than by their feature maps.
pub fn largest_weight_bytes(config: &NvNetConfig) -> f64 {
    let c = config.channels_at(config.levels().saturating_sub(1)) as f64;
    let conv = 4.0 * c * c * 27.0;
    let vae = config.vae.as_ref().map_or(0.0, |v| {
        let factor = 2 * config.size_multiple();
        let flat = VAE_CHANNELS * v.input_shape.iter().map(|s| s / factor).product::<usize>();
        4.0 * (flat * 2 * VAE_LATENT) as f64
    });
    conv.max(vae)
}

/// Summarise `config` for an input of `shape` (D, H, W; rounded up to the size multiple).
pub fn summarize(config: &NvNetConfig, shape: [usize; 3]) -> Summary {
    let m = config.size_multiple();
    let shape = shape.map(|s| s.div_ceil(m) * m);
    let at = |level: usize| shape.map(|s| s >> level);
    let mut w = Walk { stages: Vec::new() };
    // Values of every intermediate tensor of the forward pass (what autodiff keeps).
    let mut kept = config.in_channels as f64 * voxels(shape);
    let f = config.init_filters;
    {
        let st = w.stage("InitConv".into(), f, shape);
        conv(st, &mut kept, config.in_channels, f, 3, false, shape);
    }
    for (i, &n) in config.blocks_down.iter().enumerate() {
        let c = config.channels_at(i);
        let st = w.stage(
            format!("Encoder {i} ({n} block{})", if n == 1 { "" } else { "s" }),
            c,
            at(i),
        );
        if i > 0 {
            conv(st, &mut kept, c / 2, c, 3, false, at(i));
        }
        for _ in 0..n {
            resblock(st, &mut kept, c, at(i));
        }
    }
    let levels = config.levels();
    for (k, &n) in config.blocks_up.iter().enumerate() {
        let level = levels - 1 - k;
        let c = config.channels_at(level);
        let st = w.stage(
            format!(
                "Decoder {} ({n} block{})",
                level - 1,
                if n == 1 { "" } else { "s" }
            ),
            c / 2,
            at(level - 1),
        );
        conv(st, &mut kept, c, c / 2, 1, false, at(level));
        kept += 2.0 * (c / 2) as f64 * voxels(at(level - 1)); // upsampled, then the skip added
        for _ in 0..n {
            resblock(st, &mut kept, c / 2, at(level - 1));
        }
    }
    {
        let st = w.stage("Head".into(), config.out_channels, shape);
        st.params += 2 * f;
        kept += 2.0 * f as f64 * voxels(shape);
        conv(st, &mut kept, f, config.out_channels, 1, true, shape);
    }
    let seg_flop: f64 = w.stages.iter().map(|s| s.flop).sum();
    let seg_stages = w.stages.len();
    if config.vae.is_some() {
        let top = config.channels_at(levels - 1);
        let grid = shape.map(|s| s >> levels);
        let flat = VAE_CHANNELS * grid.iter().product::<usize>();
        let st = w.stage("VAE encoder (VD)".into(), 2 * VAE_LATENT, grid);
        st.params += 2 * top;
        conv(st, &mut kept, top, VAE_CHANNELS, 3, false, grid);
        st.params += flat * 2 * VAE_LATENT + 2 * VAE_LATENT;
        st.flop += 2.0 * (flat * 2 * VAE_LATENT) as f64;
        let st = w.stage("VAE decoder (VU)".into(), top, at(levels - 1));
        st.params += VAE_LATENT * flat + flat;
        st.flop += 2.0 * (VAE_LATENT * flat) as f64;
        conv(st, &mut kept, VAE_CHANNELS, top, 1, false, grid);
        for k in 0..levels - 1 {
            let level = levels - 1 - k;
            let c = config.channels_at(level);
            let st = w.stage(format!("VAE up {}", level - 1), c / 2, at(level - 1));
            conv(st, &mut kept, c, c / 2, 1, false, at(level));
            resblock(st, &mut kept, c / 2, at(level - 1));
        }
        let st = w.stage("VAE end".into(), config.in_channels, shape);
        conv(st, &mut kept, f, config.in_channels, 1, true, shape);
    }
    let vae_flop: f64 = w.stages[seg_stages..].iter().map(|s| s.flop).sum();
    let params = w.stages.iter().map(|s| s.params).sum();
    // Inference keeps every encoder output for the skips; the working set at full resolution is
    // about four F-channel tensors (input of a block, GN output, conv output, the sum).
    let skips: f64 = (0..levels)
        .map(|i| config.channels_at(i) as f64 * voxels(at(i)))
        .sum();
    let working = 4.0 * f as f64 * voxels(shape) + config.in_channels as f64 * voxels(shape);
    Summary {
        stages: w.stages,
        params,
        seg_flop,
        vae_flop,
        inference_bytes: 4.0 * (skips + working),
        training_bytes: 4.0 * kept,
    }
}

/// Memory the operating system says new allocations can still get without swapping (Linux's
/// `MemAvailable`), in bytes; `None` where it cannot tell. A CPU run sized past it is killed or
/// aborts in the allocator, so nvnet checks its estimate against this first.
#[cfg(not(target_arch = "wasm32"))]
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kib| kib.saturating_mul(1024))
}
