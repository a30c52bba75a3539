//! `nvnet bench`: the median time of forward passes on the chosen device, and its GFLOP/s.

use std::time::Instant;

use anyhow::{Result, bail};
use burn::prelude::*;
use nvnet::NvNetConfig;
use nvnet::device::gpu::GpuLimits;

use crate::device::{DeviceKind, with_backend};
use crate::values::{gib, parse_shape};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 16)]
    init_filters: usize,
    #[arg(long, default_value = "128,128,128", value_parser = parse_shape)]
    shape: [usize; 3],
    /// Timed runs after one warm-up run.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

impl Args {
    pub fn run(self, device: DeviceKind, cap: Option<GpuLimits>) -> Result<()> {
        // On the CPU a forward pass's memory comes out of the machine's RAM.
        let available = (device == DeviceKind::Cpu)
            .then(nvnet::nn::info::available_memory)
            .flatten();
        with_backend!(device, cap, |B, dev, limits| bench::<B>(
            &dev, limits, self, available
        ))
    }
}

fn bench<B: Backend>(
    device: &B::Device,
    limits: Option<GpuLimits>,
    Args {
        init_filters,
        shape,
        runs,
    }: Args,
    available_memory: Option<u64>,
) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1 (the median of the timed runs is reported)");
    }
    let config = NvNetConfig::default().with_init_filters(init_filters);
    config.validate()?;
    let m = config.size_multiple();
    let shape = shape.map(|s| s.div_ceil(m) * m);
    let needs = nvnet::nn::info::summarize(&config, shape).inference_bytes;
    if let Some(available) = available_memory
        && needs > available as f64
    {
        bail!(
            "--shape {}×{}×{} at F={init_filters} needs about {:.1} GiB for a forward pass, more \
             than the {:.1} GiB of memory available",
            shape[0],
            shape[1],
            shape[2],
            needs / (1u64 << 30) as f64,
            gib(available)
        );
    }
    if let Some(limits) = limits {
        nvnet::inference::check_buffer(
            &config,
            shape,
            Some(limits.max_tensor()),
            ("--shape", "choose a smaller --shape"),
        )
        .map_err(anyhow::Error::msg)?;
    }
    let model = config.init::<B>(device)?;
    let input = Tensor::<B, 5>::random(
        [1, 4, shape[0], shape[1], shape[2]],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        device,
    );
    let flop = nvnet::nn::info::summarize(&config, shape).seg_flop;
    let mut times = Vec::new();
    for run in 0..=runs {
        let start = Instant::now();
        let out = model.forward(input.clone());
        // Reading one value forces the queued work to finish.
        let _ = out.slice([0..1, 0..1, 0..1, 0..1, 0..1]).into_data();
        let t = start.elapsed().as_secs_f64();
        if run > 0 {
            times.push(t);
        }
        eprintln!(
            "run {run}{}: {t:.3} s",
            if run == 0 { " (warm-up)" } else { "" }
        );
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "forward F={init_filters} at {}×{}×{}: median {median:.3} s over {runs} runs ({:.1} GFLOP/s)",
        shape[0],
        shape[1],
        shape[2],
        flop / 1e9 / median
    );
    Ok(())
}
