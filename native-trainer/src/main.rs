//! `nvnet`: the trainers' command-line tool — train, predict, evaluate, export, and the tools
//! around them. A thin layer over the `nvnet` library: this file parses the command line, opens
//! nothing itself, and hands each command its arguments and the chosen device.

mod alloc;
mod commands;
mod device;
mod preview;
mod sources;
mod values;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use commands::{bench, evaluate, export, import, info, inspect, predict, prepare, synth, train};
use device::DeviceKind;

#[global_allocator]
static ALLOCATOR: alloc::ReusingAllocator = alloc::ReusingAllocator::new();

#[derive(Parser)]
#[command(
    name = "nvnet",
    version,
    about = "NvNet 3-D brain tumour segmentation (Myronenko, BraTS 2018) on Burn"
)]
struct Cli {
    /// Where tensors live: cpu (Burn's flex backend; the default), wgpu (Vulkan/Metal/DX12) or
    /// cuda.
    #[arg(long, global = true)]
    device: Option<DeviceKind>,
    /// With --device wgpu: open the GPU with at most these buffer limits, BINDING,BUFFER
    /// (e.g. 128M,256M: WebGPU's defaults); inference windows are sized to fit them.
    #[arg(long, global = true, value_parser = device::parse_gpu_limits)]
    gpu_limits: Option<nvnet::device::gpu::GpuLimits>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Architecture summary: parameters, forward GFLOP and activation memory at a shape.
    Info(info::Args),
    /// Convert a MONAI SegResNet/SegResNetVAE checkpoint (.pt or .safetensors) into an nvnet
    /// weights file with its manifest.
    Import(import::Args),
    /// Segment cases: z-score, crop to the brain, sliding window, sigmoid, test-time flips,
    /// BraTS labels on the input's grid (`DIR/<ID>.nii.gz`).
    Predict(Box<predict::Args>),
    /// BraTS metrics (Dice, HD95, sensitivity, specificity for WT, TC, ET) of predictions
    /// `<ID>.nii.gz` against `<ID>_seg.nii.gz` / `<ID>-seg.nii.gz`.
    Evaluate(evaluate::Args),
    /// Train with the paper's recipe (every setting a flag; --config run.toml for the set).
    Train(Box<train::Args>),
    /// Write weights for the page: the segmentation path only, optionally as float16.
    Export(export::Args),
    /// Write synthetic BraTS-like cases (skull-stripped T1, T1ce, T2, FLAIR and labels).
    Synth(synth::Args),
    /// Load a NIfTI file, a case folder, a dataset root or a DICOM exam exactly as nvnet would,
    /// and report; exits 0 only when nvnet accepts it.
    Inspect(inspect::Args),
    /// Write an exam (a DICOM folder, or NIfTI files on grids of their own) as a case: the
    /// series registered to the T1ce and resampled onto one 1 mm grid, with `<ID>_prepare.json`.
    Prepare(prepare::Args),
    /// Time forward passes of a network on the chosen device.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, which turns a reader that stops early (`| head`) into a panic at
    // the next println; the default ends the process quietly. Outputs are written atomically,
    // so an ended run leaves no half-written file.
    #[cfg(unix)]
    // SAFETY: at the start of main, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(0) => ExitCode::SUCCESS,
        // The number of cases that failed.
        Ok(failed) => ExitCode::from(failed.min(255) as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Run a command; the number of cases that failed (0 for commands without cases).
fn run(cli: Cli) -> Result<usize> {
    let chosen_device = cli.device;
    let device = chosen_device.unwrap_or(DeviceKind::Cpu);
    #[cfg(feature = "cuda")]
    {
        let kind = match &cli.command {
            Command::Train(a) => a.devices_kind().unwrap_or(device),
            _ => device,
        };
        if kind == DeviceKind::Cuda {
            device::keep_compiled_kernels();
        }
    }
    let cap = cli.gpu_limits;
    let none_failed = |()| 0;
    match cli.command {
        Command::Info(args) => args.run().map(none_failed),
        Command::Import(args) => args.run().map(none_failed),
        Command::Predict(args) => args.run(device, cap),
        Command::Evaluate(args) => args.run(),
        Command::Train(args) => args.run(chosen_device, device, cap).map(none_failed),
        Command::Export(args) => args.run().map(none_failed),
        Command::Synth(args) => args.run().map(none_failed),
        Command::Inspect(args) => args.run().map(none_failed),
        Command::Prepare(args) => args.run().map(none_failed),
        Command::Bench(args) => args.run(device, cap).map(none_failed),
    }
}
