//! Opening a GPU through wgpu (native Vulkan/Metal/DX12, or WebGPU in the browser) with known
//! limits: the inference windows are sized from them, and a test can cap them to show that an
//! adapter offering only WebGPU's defaults still segments a whole case.

#[cfg(any(feature = "wgpu", feature = "webgpu"))]
use burn::backend::wgpu::graphics::{AutoGraphicsApi, GraphicsApi};
#[cfg(any(feature = "wgpu", feature = "webgpu"))]
use burn::backend::wgpu::{RuntimeOptions, WgpuDevice, WgpuSetup, init_device};

/// The buffer limits that bound one tensor on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GpuLimits {
    /// `maxStorageBufferBindingSize`: the largest buffer a kernel can bind.
    pub max_storage_binding: u64,
    /// `maxBufferSize`: the largest buffer that can be created.
    pub max_buffer: u64,
}

impl GpuLimits {
    /// WebGPU's defaults, what every adapter offers at least.
    pub const WEBGPU_DEFAULTS: GpuLimits = GpuLimits {
        max_storage_binding: 128 << 20,
        max_buffer: 256 << 20,
    };

    /// The largest single tensor these limits allow.
    pub fn max_tensor(&self) -> u64 {
        self.max_storage_binding.min(self.max_buffer)
    }

    /// The smaller of each limit.
    pub fn min(self, other: GpuLimits) -> GpuLimits {
        GpuLimits {
            max_storage_binding: self.max_storage_binding.min(other.max_storage_binding),
            max_buffer: self.max_buffer.min(other.max_buffer),
        }
    }
}

#[cfg(any(feature = "wgpu", feature = "webgpu"))]
/// An opened GPU: Burn's device handle, the limits the device was created with, the adapter.
pub struct Gpu {
    pub device: WgpuDevice,
    pub limits: GpuLimits,
    pub adapter: String,
    /// The wgpu device under Burn's: its error scopes and loss are watched through it
    /// ([`checked`], [`Gpu::on_lost`]).
    pub raw: wgpu::Device,
}

/// Something the GPU reported about work it was given, asynchronously: what it computed since
/// is not to be trusted. A browser only logs these to its console unless they are watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuFault {
    /// An allocation the device could not make.
    OutOfMemory(String),
    /// A command the device refused (a buffer over a limit, a kernel it cannot run).
    Refused(String),
    /// The device is gone: a driver reset, a GPU process crash, a kernel that ran too long.
    Lost(String),
}

impl std::fmt::Display for GpuFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Browsers say no more than that.
            GpuFault::OutOfMemory(m) if m.trim().eq_ignore_ascii_case("out of memory") => {
                write!(f, "out of memory")
            }
            GpuFault::OutOfMemory(m) => write!(f, "out of memory ({})", m.trim()),
            GpuFault::Refused(m) => write!(f, "a command was refused ({})", m.trim()),
            GpuFault::Lost(m) => write!(f, "the device was lost ({})", m.trim()),
        }
    }
}

#[cfg(any(feature = "wgpu", feature = "webgpu"))]
impl GpuFault {
    fn of(error: wgpu::Error) -> GpuFault {
        // The first line: browsers add the call chain below it.
        let first = |e: &dyn std::fmt::Display| {
            e.to_string().lines().next().unwrap_or_default().to_string()
        };
        match &error {
            wgpu::Error::OutOfMemory { .. } => GpuFault::OutOfMemory(first(&error)),
            _ => GpuFault::Refused(first(&error)),
        }
    }
}

#[cfg(any(feature = "wgpu", feature = "webgpu"))]
impl Gpu {
    /// Call `report` once if the device is lost.
    pub fn on_lost(&self, report: impl Fn(GpuFault) + Send + 'static) {
        self.raw.set_device_lost_callback(move |reason, message| {
            report(GpuFault::Lost(format!("{reason:?}: {message}")))
        });
    }
}

#[cfg(any(feature = "wgpu", feature = "webgpu"))]
/// Run `work` inside error scopes that catch the allocations `device` cannot make and the
/// commands it refuses, and return the first such fault with the result. Without them a
/// browser only logs the error, and the work goes on with invalid buffers: results read back
/// afterwards can be silently wrong. `work` must have read its results back (the device has
/// then seen all its commands).
pub async fn checked<T>(
    device: &wgpu::Device,
    work: impl std::future::Future<Output = T>,
) -> (T, Option<GpuFault>) {
    let memory = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let out = work.await;
    // Both popped, in reverse order of pushing as scopes must be, before either is awaited:
    // nothing else runs on this thread with them still pushed.
    let refused = validation.pop();
    let oom = memory.pop();
    let (refused, oom) = (refused.await, oom.await);
    (out, oom.or(refused).map(GpuFault::of))
}

/// Why no GPU could be opened (in a browser: WebGPU missing, blocked, or refusing a device).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    #[error("the GPU refused a device: {0}")]
    DeviceRefused(String),
}

#[cfg(any(feature = "wgpu", feature = "webgpu"))]
/// Open the preferred adapter and create a device with its limits, lowered to `cap` where
/// given (natively the device then refuses larger buffers, as a small adapter would).
pub async fn open(cap: Option<GpuLimits>) -> Result<Gpu, OpenError> {
    let backend = AutoGraphicsApi::backend();
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: backend.into(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
        })
        .await
        .map_err(|e| OpenError::NoAdapter(e.to_string()))?;
    let mut limits = adapter.limits();
    if let Some(cap) = cap {
        // WebGPU raises requests below its defaults to the defaults; native wgpu takes them.
        limits.max_storage_buffer_binding_size = limits
            .max_storage_buffer_binding_size
            .min(cap.max_storage_binding);
        limits.max_buffer_size = limits.max_buffer_size.min(cap.max_buffer);
    }
    let (device, queue) = adapter
        .request_device(&wgpu::DeviceDescriptor {
            label: Some("nvnet"),
            required_features: adapter
                .features()
                .difference(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS),
            required_limits: limits,
            memory_hints: wgpu::MemoryHints::MemoryUsage,
            trace: wgpu::Trace::Off,
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
        })
        .await
        .map_err(|e| OpenError::DeviceRefused(e.to_string()))?;
    let got = device.limits();
    let mut granted = GpuLimits {
        max_storage_binding: got.max_storage_buffer_binding_size,
        max_buffer: got.max_buffer_size,
    };
    if let Some(cap) = cap {
        // What the device reports may be above the cap (WebGPU's floor); size by the cap.
        granted = granted.min(cap);
    }
    let info = adapter.get_info();
    let raw = device.clone();
    let setup = WgpuSetup {
        instance,
        adapter,
        device,
        queue,
        backend,
    };
    Ok(Gpu {
        device: init_device(setup, RuntimeOptions::default()),
        limits: granted,
        adapter: if info.name.is_empty() {
            format!("{:?}", info.backend)
        } else {
            format!("{} ({:?})", info.name, info.backend)
        },
        raw,
    })
}

/// Device memory of a GPU backend's device: bytes held by live tensors, and bytes its memory
/// pools have reserved from the driver. `None` for backends that do not say (flex).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUsage {
    pub in_use: u64,
    pub reserved: u64,
}

/// How much memory `device` of backend `B` holds now. Work still queued is not counted: call
/// `B::sync(device)` first.
#[allow(unused_variables)]
pub fn memory_usage<B: burn::prelude::Backend>(device: &B::Device) -> Option<MemoryUsage> {
    use std::any::Any;
    let device: &dyn Any = device;
    #[allow(unused_mut)]
    let mut usage = None;
    #[cfg(feature = "wgpu")]
    if let Some(d) = device.downcast_ref::<burn::backend::wgpu::WgpuDevice>() {
        usage = cube_usage::<burn_cubecl::cubecl::wgpu::WgpuRuntime>(d);
    }
    #[cfg(feature = "cuda")]
    if let Some(d) = device.downcast_ref::<burn::backend::cuda::CudaDevice>() {
        usage = cube_usage::<burn_cubecl::cubecl::cuda::CudaRuntime>(d);
    }
    usage
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn cube_usage<R: burn_cubecl::cubecl::Runtime>(device: &R::Device) -> Option<MemoryUsage> {
    let usage = R::client(device).memory_usage().ok()?;
    Some(MemoryUsage {
        in_use: usage.bytes_in_use,
        reserved: usage.bytes_reserved,
    })
}
