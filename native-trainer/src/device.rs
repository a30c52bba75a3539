//! `--device`: which Burn backend runs the work.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Wgpu,
    Cuda,
}

impl FromStr for DeviceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" | "flex" => Ok(Self::Cpu),
            "wgpu" | "vulkan" | "metal" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(format!(
                "unknown device '{other}' (expected cpu, wgpu or cuda)"
            )),
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        })
    }
}

/// Run `$body` with `$B` bound to the backend type of `$kind` and `$dev` to its default device.
/// A backend that was not compiled in is a clear error, not a panic.
macro_rules! with_backend {
    ($kind:expr, |$B:ident, $dev:ident| $body:expr) => {{
        match $kind {
            $crate::device::DeviceKind::Cpu => {
                type $B = nvnet::backend::Cpu;
                let $dev: burn::tensor::Device<$B> = Default::default();
                $body
            }
            #[cfg(feature = "wgpu")]
            $crate::device::DeviceKind::Wgpu => {
                type $B = nvnet::backend::Wgpu;
                let $dev: burn::tensor::Device<$B> = $crate::device::open_wgpu()?;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::device::DeviceKind::Cuda => {
                $crate::device::check_cuda()?;
                type $B = nvnet::backend::Cuda;
                let $dev: burn::tensor::Device<$B> = Default::default();
                $body
            }
            #[allow(unreachable_patterns)]
            other => anyhow::bail!(
                "--device {other} is not compiled into this nvnet; rebuild with `cargo build --release --features {other}`"
            ),
        }
    }};
}
pub(crate) use with_backend;

/// `--gpu-limits`: open the wgpu device with at most these buffer limits.
pub static GPU_CAP: std::sync::OnceLock<nvnet::gpu::GpuLimits> = std::sync::OnceLock::new();
/// The limits of the wgpu device opened by `open_wgpu` (the windows are sized from them).
pub static GPU_LIMITS: std::sync::OnceLock<nvnet::gpu::GpuLimits> = std::sync::OnceLock::new();

/// Open the wgpu device (with `--gpu-limits` applied) and remember its limits.
#[cfg(feature = "wgpu")]
pub fn open_wgpu() -> anyhow::Result<burn::backend::wgpu::WgpuDevice> {
    let gpu = futures_lite::future::block_on(nvnet::gpu::open(GPU_CAP.get().copied()))
        .map_err(|e| anyhow::anyhow!("--device wgpu: {e}"))?;
    let _ = GPU_LIMITS.set(gpu.limits);
    Ok(gpu.device)
}

/// "128M,256M": the storage-binding and buffer-size limits.
pub fn parse_gpu_limits(s: &str) -> Result<nvnet::gpu::GpuLimits, String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("'{s}': expected BINDING,BUFFER such as 128M,256M"))?;
    Ok(nvnet::gpu::GpuLimits {
        max_storage_binding: crate::predict::parse_bytes(a)?,
        max_buffer: crate::predict::parse_bytes(b)?,
    })
}

/// burn-cuda loads libcuda at run time and panics without it: check first, say it plainly.
#[cfg(feature = "cuda")]
pub fn check_cuda() -> anyhow::Result<()> {
    for lib in ["libcuda.so.1", "libcuda.so"] {
        // SAFETY: dlopen of a system library with no initialisers we depend on.
        let handle = unsafe { libc_dlopen(lib) };
        if handle {
            return Ok(());
        }
    }
    anyhow::bail!("--device cuda: the CUDA driver (libcuda.so) was not found on this machine")
}

#[cfg(feature = "cuda")]
unsafe fn libc_dlopen(name: &str) -> bool {
    unsafe extern "C" {
        fn dlopen(
            filename: *const std::ffi::c_char,
            flag: std::ffi::c_int,
        ) -> *mut std::ffi::c_void;
    }
    let c = std::ffi::CString::new(name).expect("no NUL");
    // RTLD_LAZY = 1
    unsafe { !dlopen(c.as_ptr(), 1).is_null() }
}

/// Floating-point precision of training on a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    F16,
    Bf16,
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "bf16" => Ok(Self::Bf16),
            other => Err(format!("unknown precision '{other}' (f32, f16 or bf16)")),
        }
    }
}

/// Like `with_backend!`, with `$B` the autodiff backend for training at `$precision`
/// (f16/bf16: CUDA only).
macro_rules! with_train_backend {
    ($kind:expr, $precision:expr, |$B:ident, $dev:ident| $body:expr) => {{
        use $crate::device::{DeviceKind, Precision};
        match ($kind, $precision) {
            (DeviceKind::Cpu, Precision::F32) => {
                type $B = burn::backend::Autodiff<nvnet::backend::Cpu>;
                let $dev: burn::tensor::Device<$B> = Default::default();
                $body
            }
            #[cfg(feature = "wgpu")]
            (DeviceKind::Wgpu, Precision::F32) => {
                type $B = burn::backend::Autodiff<nvnet::backend::Wgpu>;
                let $dev: burn::tensor::Device<$B> = Default::default();
                $body
            }
            #[cfg(feature = "cuda")]
            (DeviceKind::Cuda, p) => {
                $crate::device::check_cuda()?;
                match p {
                    Precision::F32 => {
                        type $B = burn::backend::Autodiff<burn::backend::Cuda<f32>>;
                        let $dev: burn::tensor::Device<$B> = Default::default();
                        $body
                    }
                    Precision::F16 => {
                        type $B = burn::backend::Autodiff<burn::backend::Cuda<half::f16>>;
                        let $dev: burn::tensor::Device<$B> = Default::default();
                        $body
                    }
                    Precision::Bf16 => {
                        type $B = burn::backend::Autodiff<burn::backend::Cuda<half::bf16>>;
                        let $dev: burn::tensor::Device<$B> = Default::default();
                        $body
                    }
                }
            }
            #[allow(unreachable_patterns)]
            (other, p) => anyhow::bail!(
                "--device {other} with --precision {p:?} is not available in this nvnet (f16/bf16 need --device cuda, built with `--features cuda`)"
            ),
        }
    }};
}
pub(crate) use with_train_backend;
