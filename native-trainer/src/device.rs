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

/// Run `$body` with `$B` bound to the backend type of `$kind`, `$dev` to its device opened with
/// `--gpu-limits` `$cap` (see [`DeviceFromSpec::open_default`]) and `$limits` to the buffer limits
/// it was opened with (wgpu; `None` elsewhere). A backend that was not compiled in is a clear
/// error, not a panic.
macro_rules! with_backend {
    ($kind:expr, $cap:expr, |$B:ident, $dev:ident, $limits:ident| $body:expr) => {{
        match $kind {
            $crate::device::DeviceKind::Cpu => {
                type $B = nvnet::device::backend::Cpu;
                let ($dev, $limits) = $crate::device::open::<$B>($cap)?;
                $body
            }
            #[cfg(feature = "wgpu")]
            $crate::device::DeviceKind::Wgpu => {
                type $B = nvnet::device::backend::Wgpu;
                let ($dev, $limits) = $crate::device::open::<$B>($cap)?;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::device::DeviceKind::Cuda => {
                $crate::device::check_cuda()?;
                type $B = nvnet::device::backend::Cuda;
                let ($dev, $limits) = $crate::device::open::<$B>($cap)?;
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

/// The default device of backend `B`, opened with `--gpu-limits` `cap`, and the limits it has.
pub fn open<B: burn::prelude::Backend>(
    cap: Option<nvnet::device::gpu::GpuLimits>,
) -> anyhow::Result<(B::Device, Option<nvnet::device::gpu::GpuLimits>)>
where
    B::Device: DeviceFromSpec,
{
    B::Device::open_default(cap).map_err(anyhow::Error::msg)
}

/// `--gpu-limits` names a wgpu device's buffer limits; other backends have none to lower.
fn no_cap(cap: Option<nvnet::device::gpu::GpuLimits>, kind: &str) -> Result<(), String> {
    match cap {
        Some(_) => Err(format!(
            "--gpu-limits lowers a wgpu device's buffer limits; --device {kind} has none"
        )),
        None => Ok(()),
    }
}

/// "128M,256M": the storage-binding and buffer-size limits.
pub fn parse_gpu_limits(s: &str) -> Result<nvnet::device::gpu::GpuLimits, String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("'{s}': expected BINDING,BUFFER such as 128M,256M"))?;
    Ok(nvnet::device::gpu::GpuLimits {
        max_storage_binding: crate::values::parse_bytes(a)?,
        max_buffer: crate::values::parse_bytes(b)?,
    })
}

/// burn-cuda loads libcuda at run time and panics without it: check first, say it plainly.
/// Compiled without the `cuda` feature too, so that the tests that CI runs check it.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
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

/// burn-cuda compiles every kernel with NVRTC when first used (on an H200 no training step had
/// finished after minutes of it, docs/PERFORMANCE.md). cubecl can keep the compiled PTX on disk,
/// beside its autotune cache (`target/` of the nearest Cargo.toml, else the user's cache
/// directory), but does not by default: turn it on, so that a resumed run, the next run or a
/// `predict` after `train` skip the compiling. A cubecl.toml / burn.toml that sets a cache, or
/// NVNET_KERNEL_CACHE=0, wins. The cache is for one GPU model: its keys do not name the
/// architecture. Call before any tensor exists.
#[cfg(feature = "cuda")]
pub fn keep_compiled_kernels() {
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig, cache::CacheConfig};
    if std::env::var("NVNET_KERNEL_CACHE").is_ok_and(|v| v == "0") {
        return;
    }
    let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
    if config.compilation.cache.is_none() {
        // cubecl panics where it cannot write its cache: leave it off there.
        let dir = CacheConfig::Target.root().join("cuda");
        let probe = dir.join(format!(".nvnet-probe-{}", std::process::id()));
        let writable = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&probe, b""))
            .and_then(|()| std::fs::remove_file(&probe))
            .is_ok();
        if writable {
            config.compilation.cache = Some(CacheConfig::Target);
        } else {
            eprintln!(
                "note: {} cannot be written; compiled CUDA kernels are not kept for later runs",
                dir.display()
            );
        }
    }
    CubeClRuntimeConfig::set(config);
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
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

/// `--devices`: a comma-separated list of one kind, `cuda:0,cuda:1`; for wgpu `wgpu:N` (the N-th
/// discrete GPU), `wgpu:integrated:N`, `wgpu:cpu` (a software adapter) or `wgpu:default`.
/// Returns the kind and each entry's part after the kind.
pub fn parse_device_list(list: &str) -> Result<(DeviceKind, Vec<String>), String> {
    let mut kind = None;
    let mut rest = Vec::new();
    for entry in list.split(',').map(str::trim) {
        let (k, r) = entry.split_once(':').unwrap_or((entry, ""));
        let k: DeviceKind = k.parse().map_err(|e| format!("--devices {list}: {e}"))?;
        if kind.is_some_and(|first| first != k) {
            return Err(format!(
                "--devices {list}: all devices must be of one kind (one backend)"
            ));
        }
        kind = Some(k);
        rest.push(r.to_string());
    }
    Ok((kind.expect("split yields one entry"), rest))
}

/// A backend's device from the part of a `--devices` entry after its kind, or its default.
pub trait DeviceFromSpec: Sized {
    fn from_spec(spec: &str) -> Result<Self, String>;
    /// The default device, opened with at most the buffer limits `cap` (`--gpu-limits`), with
    /// the limits it has where the backend has such limits.
    fn open_default(
        cap: Option<nvnet::device::gpu::GpuLimits>,
    ) -> Result<(Self, Option<nvnet::device::gpu::GpuLimits>), String>;
}

/// The device number `n` of the `--devices` entry `prefix:n` (GPU backends only).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn index(n: &str, prefix: &str) -> Result<usize, String> {
    n.parse()
        .map_err(|_| format!("'{prefix}:{n}': expected a device number, as in {prefix}:0"))
}

impl DeviceFromSpec for burn::backend::flex::FlexDevice {
    fn from_spec(spec: &str) -> Result<Self, String> {
        match spec {
            "" | "0" => Ok(Default::default()),
            other => Err(format!(
                "'cpu:{other}': the CPU backend (flex) is one device; it already uses every core"
            )),
        }
    }

    fn open_default(
        cap: Option<nvnet::device::gpu::GpuLimits>,
    ) -> Result<(Self, Option<nvnet::device::gpu::GpuLimits>), String> {
        no_cap(cap, "cpu")?;
        Ok((Default::default(), None))
    }
}

#[cfg(feature = "wgpu")]
impl DeviceFromSpec for burn::backend::wgpu::WgpuDevice {
    fn from_spec(spec: &str) -> Result<Self, String> {
        use burn::backend::wgpu::WgpuDevice;
        Ok(match spec.split_once(':') {
            None if spec.is_empty() || spec == "default" => WgpuDevice::DefaultDevice,
            None if spec == "cpu" => WgpuDevice::Cpu,
            None if spec == "integrated" => {
                return Err("'wgpu:integrated': expected wgpu:integrated:N".into());
            }
            None => WgpuDevice::DiscreteGpu(index(spec, "wgpu")?),
            Some(("integrated", n)) => WgpuDevice::IntegratedGpu(index(n, "wgpu:integrated")?),
            Some(_) => {
                return Err(format!(
                    "'wgpu:{spec}': expected wgpu:N, wgpu:integrated:N, wgpu:cpu or wgpu:default"
                ));
            }
        })
    }

    /// Through `nvnet::device::gpu::open`, as the page opens WebGPU: the windows and crops are then
    /// sized from the limits the device really has.
    fn open_default(
        cap: Option<nvnet::device::gpu::GpuLimits>,
    ) -> Result<(Self, Option<nvnet::device::gpu::GpuLimits>), String> {
        let gpu = futures_lite::future::block_on(nvnet::device::gpu::open(cap))
            .map_err(|e| format!("--device wgpu: {e}"))?;
        Ok((gpu.device, Some(gpu.limits)))
    }
}

#[cfg(feature = "cuda")]
impl DeviceFromSpec for burn::backend::cuda::CudaDevice {
    fn from_spec(spec: &str) -> Result<Self, String> {
        let i = if spec.is_empty() {
            0
        } else {
            index(spec, "cuda")?
        };
        // A device that does not exist makes burn-cuda panic when it is first used; ask the
        // driver (check_cuda has found libcuda).
        let count = cudarc::driver::result::init()
            .and_then(|()| cudarc::driver::result::device::get_count())
            .map_err(|e| format!("'cuda:{i}': the CUDA driver cannot count devices: {e:?}"))?
            as usize;
        if i >= count {
            return Err(match count {
                0 => format!("'cuda:{i}': the CUDA driver reports no device"),
                1 => format!("'cuda:{i}': this machine has one CUDA device, cuda:0"),
                n => format!(
                    "'cuda:{i}': this machine has {n} CUDA devices, cuda:0 to cuda:{}",
                    n - 1
                ),
            });
        }
        Ok(Self::new(i))
    }

    fn open_default(
        cap: Option<nvnet::device::gpu::GpuLimits>,
    ) -> Result<(Self, Option<nvnet::device::gpu::GpuLimits>), String> {
        no_cap(cap, "cuda")?;
        Ok((Default::default(), None))
    }
}

/// The training devices: `--devices` when given, else the backend's default device opened with
/// `--gpu-limits` `cap`; and the buffer limits of that one device (wgpu).
pub fn training_devices<D: DeviceFromSpec>(
    specs: Option<&[String]>,
    cap: Option<nvnet::device::gpu::GpuLimits>,
) -> Result<(Vec<D>, Option<nvnet::device::gpu::GpuLimits>), String> {
    match specs {
        None => D::open_default(cap).map(|(d, limits)| (vec![d], limits)),
        Some(_) if cap.is_some() => Err(
            "--gpu-limits lowers the limits of the one device a run opens; it does not apply to --devices"
                .into(),
        ),
        Some(specs) => Ok((specs.iter().map(|s| D::from_spec(s)).collect::<Result<_, _>>()?, None)),
    }
}

/// How tensors move between the training devices of `kind` (see `nvnet::train::parallel`).
pub fn transfer(
    kind: DeviceKind,
    devices: usize,
) -> Result<nvnet::train::parallel::Transfer, String> {
    use nvnet::train::parallel::Transfer;
    let _ = devices; // only CUDA asks
    Ok(match kind {
        // Burn 0.21 cannot copy between wgpu devices.
        DeviceKind::Wgpu => Transfer::Host,
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda if devices > 1 => {
            // burn-cuda copies between GPUs with NCCL, which cudarc loads at run time; without
            // it the copy panics on a device thread.
            // SAFETY: only tries to dlopen NCCL under cudarc's own candidate names.
            if !unsafe { cudarc::nccl::sys::is_culib_present() } {
                return Err(format!(
                    "--devices: {devices} CUDA devices need NCCL, which Burn uses to copy between \
                     GPUs, and it was not found on the library path (install NCCL; where only \
                     libnccl.so.2 exists, link libnccl.so to it in a directory on LD_LIBRARY_PATH)"
                ));
            }
            Transfer::Burn
        }
        _ => Transfer::Burn,
    })
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

/// Run `$body` with `$B` the autodiff backend of `$kind` for training at `$precision` (f16/bf16:
/// CUDA only); the body opens its devices ([`training_devices`]).
macro_rules! with_train_backend {
    ($kind:expr, $precision:expr, |$B:ident| $body:expr) => {{
        use $crate::device::{DeviceKind, Precision};
        match ($kind, $precision) {
            (DeviceKind::Cpu, Precision::F32) => {
                type $B = burn::backend::Autodiff<nvnet::device::backend::Cpu>;
                $body
            }
            #[cfg(feature = "wgpu")]
            (DeviceKind::Wgpu, Precision::F32) => {
                type $B = burn::backend::Autodiff<nvnet::device::backend::Wgpu>;
                $body
            }
            #[cfg(feature = "cuda")]
            (DeviceKind::Cuda, p) => {
                $crate::device::check_cuda()?;
                match p {
                    Precision::F32 => {
                        type $B = burn::backend::Autodiff<burn::backend::Cuda<f32>>;
                        $body
                    }
                    Precision::F16 => {
                        type $B = burn::backend::Autodiff<burn::backend::Cuda<half::f16>>;
                        $body
                    }
                    Precision::Bf16 => {
                        type $B = burn::backend::Autodiff<burn::backend::Cuda<half::bf16>>;
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

#[cfg(test)]
mod tests {
    /// What `--device cuda` of the CUDA build says where the driver is missing, before burn-cuda
    /// could panic (CI only type-checks the CUDA build; cli.rs runs the build without it).
    #[test]
    fn without_the_cuda_driver_the_check_names_it() {
        // SAFETY: as in check_cuda.
        let present = ["libcuda.so.1", "libcuda.so"]
            .iter()
            .any(|lib| unsafe { super::libc_dlopen(lib) });
        match super::check_cuda() {
            Ok(()) => assert!(present, "the check passed without libcuda"),
            Err(e) => {
                assert!(!present, "libcuda is there: {e}");
                assert!(
                    e.to_string()
                        .contains("the CUDA driver (libcuda.so) was not found"),
                    "{e}"
                );
            }
        }
    }
}
