//! The web page's engine. It runs in a Web Worker (`www/worker.js`), so that the page stays
//! responsive: the worker hands it the dropped files' bytes, and it answers with the checked
//! case, the segmentation and the NIfTI to download. Everything it computes is the nvnet
//! library's — reading NIfTI, preprocessing, the sliding window, thresholding, writing NIfTI —
//! on Burn's WebGPU backend, or on the flex CPU backend when the browser has no WebGPU.

use std::cell::RefCell;
use std::sync::Mutex;

use burn::prelude::Backend;
use js_sys::{Array, Float32Array, Function, Object, Reflect, Uint8Array};
use nvnet::data::case::{self, Case, Layout, Role};
use nvnet::data::exam::Exam;
use nvnet::data::labels::RegionCounts;
use nvnet::device::gpu::{self, GpuFault, GpuLimits};
use nvnet::inference::Segmentation;
use nvnet::inference::{self, InferenceOptions, Segmenter};
use nvnet::io::nifti::{self, DataType, Geometry, Image, OutputData, Voxels};
use nvnet::io::weights::{self, Manifest};
use nvnet::nn::precision::{Precision, supports_f16, with_precision};
use nvnet::prepare::{Prepared, Stage, Steps, prepare_images_reporting};
use nvnet::{Modality, NvNet};
use serde_json::json;
use wasm_bindgen::prelude::*;

type Gpu = nvnet::device::backend::WebGpu;
type Cpu = nvnet::device::backend::Cpu;

/// Where the network runs.
enum Engine {
    Gpu {
        device: burn::backend::wgpu::WgpuDevice,
        limits: GpuLimits,
        raw: wgpu::Device,
        /// float16 where the adapter offers `shader-f16` (unless the page asked for float32).
        precision: Precision,
    },
    Cpu,
}

/// The device's loss, reported by WebGPU's `lost` promise (possibly between two windows).
static LOST: Mutex<Option<GpuFault>> = Mutex::new(None);

#[wasm_bindgen]
extern "C" {
    /// `worker.js` tells the page at once: a read-back on a lost device traps the engine, and
    /// the page must still know why it stopped.
    #[wasm_bindgen(js_name = nvnetGpuFault)]
    fn report_gpu_fault(message: &str);
}

/// Weights chosen with "Load weights…"; `None` is the embedded default model.
struct Loaded {
    name: String,
    bytes: Vec<u8>,
    manifest: Manifest,
    notices: Vec<String>,
}

#[derive(Default)]
struct State {
    engine: Option<Engine>,
    weights: Option<Loaded>,
    /// The case the last check made, and the key of the files it made it from: Segment takes it
    /// instead of reading, registering and stripping the same files again.
    checked: Option<(u64, Prepared, Option<String>)>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Device memory one window may use on the GPU (activations, estimated). Browsers do not say
/// how much memory the GPU has; 1 GiB is what integrated GPUs spare without trouble.
const GPU_BUDGET: u64 = 1 << 30;
/// Memory one window may use on the CPU path (wasm32 memory tops out at 4 GiB).
const CPU_BUDGET: u64 = 1 << 30;

fn error(message: impl std::fmt::Display) -> JsError {
    JsError::new(&message.to_string())
}

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// Whether this global scope (window or worker) has `navigator.gpu`.
fn has_webgpu() -> bool {
    let navigator = Reflect::get(&js_sys::global(), &"navigator".into()).unwrap_or(JsValue::NULL);
    !navigator.is_undefined()
        && !navigator.is_null()
        && Reflect::get(&navigator, &"gpu".into()).is_ok_and(|g| !g.is_undefined() && !g.is_null())
}

/// Open the backend: `prefer` is `"webgpu"` (fall back to the CPU when WebGPU is missing or
/// refuses) or `"cpu"`. `cap_binding` / `cap_buffer` lower the adapter's limits (a test
/// setting: the windows are then sized as for a smaller GPU). `precision` `"f32"` keeps the GPU
/// in float32 where it offers float16. Returns JSON: `{backend, adapter, limits, precision,
/// precisionNote, notice}`.
#[wasm_bindgen]
pub async fn init(
    prefer: String,
    cap_binding: Option<f64>,
    cap_buffer: Option<f64>,
    precision: Option<String>,
) -> Result<String, JsError> {
    let f32_asked = match precision.as_deref() {
        None | Some("") | Some("auto") => false,
        Some("f32") => true,
        Some(other) => {
            return Err(error(format!("precision = {other}: expected f32 or auto")));
        }
    };
    // A test setting from the page's URL: anything but a positive size is refused.
    for (name, v) in [("max-binding", cap_binding), ("max-buffer", cap_buffer)] {
        if let Some(v) = v
            && !(v.is_finite() && v >= 1.0)
        {
            return Err(error(format!(
                "{name} = {v}: not a positive number of bytes"
            )));
        }
    }
    let cap = match (cap_binding, cap_buffer) {
        (None, None) => None,
        (a, b) => {
            let defaults = GpuLimits {
                max_storage_binding: u64::MAX,
                max_buffer: u64::MAX,
            };
            Some(GpuLimits {
                max_storage_binding: a.map_or(defaults.max_storage_binding, |v| v as u64),
                max_buffer: b.map_or(defaults.max_buffer, |v| v as u64),
            })
        }
    };
    let mut notice = String::new();
    let mut adapter = String::new();
    let engine = if prefer == "cpu" {
        notice = "running on the CPU (asked for): slower than WebGPU".into();
        Engine::Cpu
    } else if !has_webgpu() {
        notice = "this browser offers no WebGPU: running on the CPU, which is much slower".into();
        Engine::Cpu
    } else {
        match nvnet::device::gpu::open(cap).await {
            Ok(gpu) => {
                gpu.on_lost(|fault| {
                    let message = fault.to_string();
                    *LOST.lock().unwrap_or_else(|e| e.into_inner()) = Some(fault);
                    report_gpu_fault(&message);
                });
                adapter = gpu.adapter;
                let precision = if !f32_asked && supports_f16::<Gpu>(&gpu.device) {
                    Precision::F16
                } else {
                    Precision::F32
                };
                Engine::Gpu {
                    device: gpu.device,
                    limits: gpu.limits,
                    raw: gpu.raw,
                    precision,
                }
            }
            Err(e) => {
                notice =
                    format!("WebGPU is not usable here ({e}): running on the CPU, much slower");
                Engine::Cpu
            }
        }
    };
    let (backend, limits, precision, precision_note) = match &engine {
        Engine::Gpu {
            limits, precision, ..
        } => (
            "webgpu",
            Some(*limits),
            *precision,
            match precision {
                Precision::F16 => "float16 (the adapter offers shader-f16)",
                Precision::F32 if f32_asked => "float32 (asked for)",
                Precision::F32 => "float32 (the adapter offers no shader-f16)",
            },
        ),
        Engine::Cpu => ("cpu", None, Precision::F32, "float32"),
    };
    STATE.with(|s| s.borrow_mut().engine = Some(engine));
    Ok(json!({
        "backend": backend,
        "adapter": adapter,
        "limits": limits,
        "precision": precision.name(),
        "precisionNote": precision_note,
        "notice": notice,
    })
    .to_string())
}

/// On the CPU engine, a small made-up case segmented the whole way (cropping, normalising, the
/// window, the network, blending, labels, the download's encoding), so that the browser
/// compiles the engine's hot loops with its optimising compiler before the user's first case.
/// V8 starts wasm in a baseline compiler and swaps in optimised code for a function only at its
/// next call: the loops that run once per case (normalising, blending) would otherwise run
/// their whole first case unoptimised. The first CPU segmentation of a 240×240×155 phantom took
/// 7.0 s with no warm-up, 6.0 s after one forward pass at 64³, and 5.6 s after this (5.4–5.6 s
/// with the engine warm). Seconds spent (0 on the GPU, where shapes are compiled as they come).
#[wasm_bindgen]
pub fn warm_up() -> Result<f64, JsError> {
    let on_cpu = STATE.with(|s| matches!(s.borrow().engine, Some(Engine::Cpu)));
    if !on_cpu {
        return Ok(0.0);
    }
    let started = js_sys::Date::now();
    let device = Default::default();
    let (model, manifest) = load_model::<Cpu>(&device)?;
    let case = warm_up_case()?;
    let options = InferenceOptions {
        tta: false,
        labels: manifest.labels,
        memory_budget: CPU_BUDGET,
        ..InferenceOptions::default()
    };
    let seg = inference::segment(
        &[model],
        &manifest.outputs,
        &case,
        &manifest.modalities,
        &options,
        &device,
        |_, _| {},
    )
    .map_err(error)?;
    nifti::encode_on_grid(case.geometry(), OutputData::Labels(&seg.labels))
        .map_err(|e| error(format!("warming up: {e}")))?;
    Ok((js_sys::Date::now() - started) / 1000.0)
}

/// A made-up case for [`warm_up`]: an ellipsoid of varied values in each modality, whose brain
/// box is one 64×64×48 window.
fn warm_up_case() -> Result<Case, JsError> {
    let dims = [72usize, 72, 56];
    let mut affine = [[0.0; 4]; 4];
    (0..4).for_each(|i| affine[i][i] = 1.0);
    let [nx, ny, nz] = dims;
    let values: Vec<f32> = (0..nx * ny * nz)
        .map(|v| {
            let (i, j, k) = (v % nx, v / nx % ny, v / (nx * ny));
            let r = |p: usize, n: usize, half: f64| (p as f64 - n as f64 / 2.0) / half;
            let inside = r(i, nx, 31.0).powi(2) + r(j, ny, 31.0).powi(2) + r(k, nz, 23.0).powi(2);
            if inside < 1.0 {
                100.0 + (v * 31 % 17) as f32
            } else {
                0.0
            }
        })
        .collect();
    let images = Modality::DEFAULT_ORDER
        .iter()
        .map(|&m| {
            let image = Image {
                source: format!("warm-up {m}"),
                dtype: DataType::F32,
                geometry: Geometry::from_affine(dims, affine),
                voxels: Voxels::F32(values.clone()),
                slope: 1.0,
                inter: 0.0,
                warnings: vec![],
            };
            (m, image)
        })
        .collect();
    Case::from_images("warm-up", Layout::Loose, images, None).map_err(error)
}

/// The model in use, as JSON: name, provenance, modalities, outputs, filters, whether it is the
/// embedded demonstration model, and notices from importing it.
#[wasm_bindgen]
pub fn model_info() -> Result<String, JsError> {
    STATE.with(|s| {
        let s = s.borrow();
        let (manifest, embedded, notices) = match &s.weights {
            Some(w) => (w.manifest.clone(), false, w.notices.clone()),
            None => (default_manifest()?, true, Vec::new()),
        };
        Ok(json!({
            "name": manifest.name,
            "file": s.weights.as_ref().map(|w| w.name.clone()),
            "embedded": embedded,
            "provenance": manifest.provenance,
            "modalities": manifest.modalities,
            "outputs": manifest.outputs,
            "init_filters": manifest.config.init_filters,
            "half": manifest.half,
            "notices": notices,
        })
        .to_string())
    })
}

fn default_manifest() -> Result<Manifest, JsError> {
    let bytes = weights::default_model().ok_or_else(|| error("no embedded default model"))?;
    weights::read_manifest(bytes, "the embedded default model").map_err(error)
}

/// Use other weights (nvnet `.bpk` or a MONAI `.safetensors`; `modalities`, comma separated,
/// is the channel order of a MONAI file). They are checked by loading them once.
#[wasm_bindgen]
pub fn load_weights(
    name: String,
    bytes: Vec<u8>,
    modalities: Option<String>,
) -> Result<String, JsError> {
    let order = parse_modalities(modalities.as_deref())?;
    let loaded =
        weights::load_any_bytes::<Cpu>(&bytes, &name, order.as_deref(), &Default::default())
            .map_err(error)?;
    STATE.with(|s| {
        s.borrow_mut().weights = Some(Loaded {
            name,
            bytes,
            manifest: loaded.manifest,
            notices: loaded.notices,
        })
    });
    model_info()
}

/// Back to the embedded default model.
#[wasm_bindgen]
pub fn use_default_weights() -> Result<String, JsError> {
    STATE.with(|s| s.borrow_mut().weights = None);
    model_info()
}

fn parse_modalities(text: Option<&str>) -> Result<Option<Vec<Modality>>, JsError> {
    text.filter(|t| !t.trim().is_empty())
        .map(|t| {
            t.split(',')
                .map(|m| m.trim().parse::<Modality>().map_err(error))
                .collect()
        })
        .transpose()
}

/// What a file name says it holds: `t1`, `t1ce`, `t2`, `flair`, `seg`, or `""` (unknown).
#[wasm_bindgen]
pub fn detect_role(name: &str) -> String {
    match case::detect_role(name) {
        Some(Role::Image(m)) => m.to_string(),
        Some(Role::Segmentation) => "seg".into(),
        None => String::new(),
    }
}

/// What identifies a check's input: every file's name, role and bytes.
fn files_key(names: &Array, files: &Array, roles: &Array, reference: Modality) -> u64 {
    let mut keys = reference.name().as_bytes().to_vec();
    for i in 0..names.length() {
        let name = names.get(i).as_string().unwrap_or_default();
        let role = roles.get(i).as_string().unwrap_or_default();
        let bytes = files
            .get(i)
            .dyn_into::<Uint8Array>()
            .map(|a| a.to_vec())
            .unwrap_or_default();
        for part in [name.as_bytes(), role.as_bytes(), &bytes] {
            keys.extend(nvnet::io::weights::fnv1a64(part).to_le_bytes());
        }
    }
    nvnet::io::weights::fnv1a64(&keys)
}

/// The case of these files: the last check's when it was made of the same files (taken, so
/// that it is not kept twice), else read and prepared now.
fn checked_or_read(
    names: &Array,
    files: &Array,
    roles: &Array,
    reference: Modality,
) -> Result<(Prepared, Option<String>), JsError> {
    let key = files_key(names, files, roles, reference);
    let cached = STATE.with(|s| s.borrow_mut().checked.take());
    match cached {
        Some((k, prepared, series)) if k == key => Ok((prepared, series)),
        _ => read_case(names, files, roles, reference, None),
    }
}

/// Read the files (`names[i]` with bytes `files[i]`, as role `roles[i]`: a modality, `seg`,
/// `dicom` or `ignore`) and check them as one case, with the library's checks. The files of
/// role `dicom` are one exam, its series chosen by their names as `nvnet predict` chooses them.
/// Series on grids of their own are registered to the `reference` series and resampled onto
/// one grid, as `nvnet predict --reference` does.
fn read_case(
    names: &Array,
    files: &Array,
    roles: &Array,
    reference: Modality,
    progress: Option<&Function>,
) -> Result<(Prepared, Option<String>), JsError> {
    let steps = Steps {
        reference,
        ..Steps::default()
    };
    // Each stage told to the page as it starts: a worker busy in wasm can still post messages.
    let mut on_stage = |stage: Stage| {
        if let Some(f) = progress {
            let _ = f.call1(&JsValue::NULL, &stage.to_string().into());
        }
    };
    let n = names.length();
    if files.length() != n || roles.length() != n {
        return Err(error("names, files and roles differ in length"));
    }
    let role = |i: u32| roles.get(i).as_string().unwrap_or_default();
    if (0..n).any(|i| role(i) == "dicom") {
        let mut exam_files = Vec::new();
        for i in (0..n).filter(|&i| role(i) == "dicom") {
            let name = names.get(i).as_string().unwrap_or_default();
            let bytes = files
                .get(i)
                .dyn_into::<Uint8Array>()
                .map_err(|_| error(format!("{name}: not a byte array")))?
                .to_vec();
            exam_files.push((name, bytes));
        }
        let exam = Exam::scan(&exam_files, "the dropped exam").map_err(error)?;
        let chosen = exam
            .choose(&[])
            .map_err(error)?
            .iter()
            .map(|(m, i)| format!("{m} {}", exam.scan.series[*i].label()))
            .collect::<Vec<_>>()
            .join(", ");
        let prepared = exam
            .load_case_within(
                &exam_files,
                &[],
                steps,
                nifti::PAGE_MAX_VOXELS,
                &mut on_stage,
            )
            .map_err(error)?;
        return Ok((prepared, Some(chosen)));
    }
    let mut images = Vec::new();
    let mut seg = None;
    let mut used_names = Vec::new();
    for i in 0..n {
        let name = names.get(i).as_string().unwrap_or_default();
        let role = roles.get(i).as_string().unwrap_or_default();
        if role == "ignore" || role.is_empty() {
            continue;
        }
        let bytes = files
            .get(i)
            .dyn_into::<Uint8Array>()
            .map_err(|_| error(format!("{name}: not a byte array")))?
            .to_vec();
        let image =
            nifti::read_bytes_within(&bytes, &name, nifti::PAGE_MAX_VOXELS).map_err(error)?;
        if role == "seg" {
            seg = Some(image);
        } else {
            let m: Modality = role.parse().map_err(error)?;
            images.push((m, image));
        }
        used_names.push(name);
    }
    let id = case::case_id_of_names(&used_names);
    let prepared = prepare_images_reporting(&id, Layout::Loose, images, seg, steps, &mut on_stage)
        .map_err(error)?;
    Ok((prepared, None))
}

/// Read and check a case without segmenting it: JSON `{id, dims, spacing, warnings}`, or an
/// error naming the file and the problem. `reference` (t1, t1ce, t2 or flair; T1ce when not
/// given) is the series an exam is registered to, on whose grid the label map lies.
/// `progress(stage)` is told each stage of preparing an exam as it starts (reading a series,
/// registering one, resampling, stripping the skull).
#[wasm_bindgen]
pub fn check_case(
    names: Array,
    files: Array,
    roles: Array,
    reference: Option<String>,
    progress: Option<Function>,
) -> Result<String, JsError> {
    // A new check replaces the last one's case.
    STATE.with(|s| s.borrow_mut().checked = None);
    let reference = reference_of(reference)?;
    let key = files_key(&names, &files, &roles, reference);
    let (prepared, series) = read_case(&names, &files, &roles, reference, progress.as_ref())?;
    let case = &prepared.case;
    let registered: Vec<_> = prepared
        .registrations
        .iter()
        .map(|(m, r)| {
            json!({
                "modality": m.name(),
                "angles": r.motion.angles.map(f64::to_degrees),
                "translation": r.motion.translation,
                "nmi": r.nmi,
            })
        })
        .collect();
    let report = json!({
        "series": &series,
        "resampled": prepared.resampled(),
        "registered": registered,
        "skull": prepared.stripping.to_string(),
        "referenceDims": prepared.native.dims,
        "reference": prepared.reference.to_string(),
        "id": case.id,
        "dims": case.dims(),
        "spacing": case.geometry().spacing(),
        "warnings": case.warnings().collect::<Vec<_>>(),
    })
    .to_string();
    STATE.with(|s| s.borrow_mut().checked = Some((key, prepared, series)));
    Ok(report)
}

/// The reference series the page names (T1ce when it names none).
fn reference_of(name: Option<String>) -> Result<Modality, JsError> {
    name.filter(|n| !n.is_empty())
        .map_or(Ok(Modality::T1ce), |n| n.parse().map_err(error))
}

fn set(obj: &Object, key: &str, value: impl Into<JsValue>) -> Result<(), JsError> {
    Reflect::set(obj, &key.into(), &value.into())
        .map(|_| ())
        .map_err(|_| error(format!("cannot set {key}")))
}

fn load_model<B: Backend>(device: &B::Device) -> Result<(NvNet<B>, Manifest), JsError> {
    let loaded = STATE
        .with(|s| -> Result<_, JsError> {
            let s = s.borrow();
            Ok(match &s.weights {
                Some(w) => weights::load_any_bytes::<B>(
                    &w.bytes,
                    &w.name,
                    Some(&w.manifest.modalities),
                    device,
                ),
                None => weights::load_bytes::<B>(
                    weights::default_model().ok_or_else(|| error("no embedded default model"))?,
                    "the embedded default model",
                    device,
                ),
            })
        })?
        .map_err(error)?;
    Ok((loaded.model, loaded.manifest))
}

/// Segment a case (an exam registered to `reference`, as [`check_case`] says). Returns an object:
/// `id`, `dims`, `spacing`, `affine` (4×4, rows) of the grid everything below lies on: the
/// reference series' own (`native`: true where the case was resampled; the reference as read,
/// the other series carried there from the prepared grid); `images` (the four modalities as
/// Float32Arrays in file order, T1 T1ce T2 FLAIR), `modalities`, `labels` (Uint8Array),
/// `uncertainty` (Float32Array: the largest flip variance over the regions, with TTA),
/// `reference` (the series the others were registered to), `registered` (whether any was moved
/// or resampled), `brainMask` (Uint8Array) and `referenceWithSkull` (Float32Array) where the
/// skull was stripped in the page,
/// `nifti` (the gzipped label map `nvnet predict` writes), `volumes` ({WT, TC, ET} in mL),
/// `labelConvention`, `postprocessing` (the flags of the model's rules, or "none"), `roi`, `windows`,
/// `seconds`, `backend`.
///
/// - `budget`: bytes of GPU memory one window may use (estimated) instead of the engine's
///   default; the page lowers it after running out of memory (see `www/app.js`).
/// - `fault_test`, a test setting: `"oom"` or `"lose"` make the GPU fail for real in the first
///   window ([`provoke`]).
/// - `progress(done, total, roi, windowBytes)` is called after each network pass (windows ×
///   flips: a case of one window with flips is eight steps), and on the GPU also before the
///   first (`done` = 0; `roi` and `windowBytes`, the window's estimated memory, are given on
///   the GPU only).
///
/// A fault the GPU reports rejects with an Error whose `gpuFault` says what happened, with
/// the window's `roi` and `windowBytes`: nothing computed after a fault is returned.
// The worker calls it with plain values, one per setting.
#[allow(clippy::too_many_arguments)]
#[wasm_bindgen]
pub async fn segment(
    names: Array,
    files: Array,
    roles: Array,
    reference: Option<String>,
    tta: bool,
    budget: Option<f64>,
    fault_test: Option<String>,
    progress: Function,
) -> Result<JsValue, JsValue> {
    let started = js_sys::Date::now();
    if let Some(b) = budget
        && !(b.is_finite() && b >= 1.0)
    {
        return Err(error(format!("budget = {b}: not a positive number of bytes")).into());
    }
    let fault_test = fault_test.filter(|f| !f.is_empty());
    if let Some(f) = fault_test.as_deref()
        && !matches!(f, "oom" | "lose")
    {
        return Err(error(format!("gpu-fault = {f}: expected oom or lose")).into());
    }
    let (prepared, _) = checked_or_read(&names, &files, &roles, reference_of(reference)?)?;
    let read = js_sys::Date::now();
    let case = &prepared.case;
    enum Which {
        Gpu(
            burn::backend::wgpu::WgpuDevice,
            GpuLimits,
            wgpu::Device,
            Precision,
        ),
        Cpu,
    }
    let which = STATE.with(|s| match &s.borrow().engine {
        Some(Engine::Gpu {
            device,
            limits,
            raw,
            precision,
        }) => Ok(Which::Gpu(device.clone(), *limits, raw.clone(), *precision)),
        Some(Engine::Cpu) => Ok(Which::Cpu),
        None => Err(error("the engine is not initialised (call init first)")),
    })?;
    let mut options = InferenceOptions {
        tta,
        ..InferenceOptions::default()
    };
    let (seg, manifest, backend) = match which {
        Which::Gpu(device, limits, raw, precision) => {
            // Before the model is built on the GPU, whose allocator fails otherwise.
            let config = STATE.with(|s| {
                s.borrow()
                    .weights
                    .as_ref()
                    .map(|w| w.manifest.config.clone())
            });
            let config = match config {
                Some(c) => c,
                None => default_manifest()?.config,
            };
            inference::check_weights_fit(&config, limits.max_tensor()).map_err(error)?;
            let (loaded, fault) = gpu::checked(&raw, async { load_model::<Gpu>(&device) }).await;
            if let Some(f) = fault.or_else(lost) {
                return Err(fault_error(&f, None));
            }
            let (model, manifest) = loaded?;
            let model = with_precision(model, precision);
            options.labels = manifest.labels;
            options.postprocessing = manifest.postprocessing;
            options.memory_budget = budget.map_or(GPU_BUDGET, |b| b as u64);
            options.max_buffer = Some(limits.max_tensor());
            options.precision = precision;
            let on_window = |done: f64, total: usize, roi: [usize; 3], bytes: f64| {
                let args = Array::new();
                args.push(&done.into());
                args.push(&(total as u32).into());
                args.push(&roi_array(roi));
                args.push(&bytes.into());
                let _ = progress.apply(&JsValue::NULL, &args);
            };
            let seg = segment_on_gpu(
                model,
                &manifest,
                case,
                &options,
                (&device, &raw),
                fault_test.as_deref(),
                on_window,
            )
            .await?;
            (seg, manifest, "webgpu")
        }
        Which::Cpu => {
            let device = Default::default();
            let (model, manifest) = load_model::<Cpu>(&device)?;
            options.labels = manifest.labels;
            options.postprocessing = manifest.postprocessing;
            options.memory_budget = CPU_BUDGET;
            let on_window = |done: usize, total: usize| {
                let _ = progress.call2(
                    &JsValue::NULL,
                    &(done as u32).into(),
                    &(total as u32).into(),
                );
            };
            let seg = inference::segment(
                &[model],
                &manifest.outputs,
                case,
                &manifest.modalities,
                &options,
                &device,
                on_window,
            )
            .map_err(error)?;
            (seg, manifest, "cpu")
        }
    };
    // The download lies on the reference series' own grid, as `nvnet predict` writes it, and
    // the viewer shows that grid: the reference as read, the other series where the
    // registration put them.
    let segmented = js_sys::Date::now();
    let native_labels = prepared.to_native(&seg.labels, 1, 0u8);
    let nifti_bytes = nifti::encode_on_grid(&prepared.native, OutputData::Labels(&native_labels))
        .map_err(|e| error(format!("{}: writing the label map: {e}", case.id)))?;
    let counts = RegionCounts::of(&native_labels, options.labels);
    let [wt, tc, et] = counts.millilitres(prepared.native.spacing());
    let n: usize = case.dims().iter().product();
    let grid = &prepared.native;

    let out = Object::new();
    set(&out, "id", case.id.as_str())?;
    set(&out, "dims", serde_to_js(&grid.dims)?)?;
    set(&out, "spacing", serde_to_js(&grid.spacing())?)?;
    set(&out, "affine", serde_to_js(&grid.affine)?)?;
    set(&out, "native", prepared.resampled())?;
    let shown = prepared.series_on_native().unwrap_or_else(|| {
        case.images
            .iter()
            .map(|(_, image)| image.to_f32())
            .collect()
    });
    let images = Array::new();
    let modalities = Array::new();
    for ((m, _), values) in case.images.iter().zip(&shown) {
        images.push(&Float32Array::from(values.as_slice()));
        modalities.push(&m.to_string().into());
    }
    drop(shown);
    set(&out, "images", images)?;
    set(&out, "modalities", modalities)?;
    set(&out, "labels", Uint8Array::from(native_labels.as_slice()))?;
    // The quality view's: the series registered to, and the brain's mask over it with its skull.
    set(&out, "reference", prepared.reference.to_string())?;
    set(
        &out,
        "registered",
        prepared.resampled() || !prepared.registrations.is_empty(),
    )?;
    if let (Some(mask), Some(with_skull)) = (&prepared.brain_mask, &prepared.reference_with_skull) {
        let mask = prepared.to_native(mask, 1, 0u8);
        set(&out, "brainMask", Uint8Array::from(mask.as_slice()))?;
        // On the native grid the reference as read has its skull.
        let with_skull = prepared.reference_native.as_deref().unwrap_or(with_skull);
        set(&out, "referenceWithSkull", Float32Array::from(with_skull))?;
    }
    if let Some(u) = &seg.uncertainty {
        let c = seg.outputs.len();
        let max: Vec<f32> = (0..n)
            .map(|v| (0..c).map(|ch| u[ch * n + v]).fold(0f32, f32::max))
            .collect();
        let max = prepared.to_native(&max, 1, 0f32);
        set(&out, "uncertainty", Float32Array::from(max.as_slice()))?;
    }
    set(&out, "nifti", Uint8Array::from(nifti_bytes.as_slice()))?;
    set(
        &out,
        "volumes",
        serde_to_js(&json!({
            "WT": wt,
            "TC": tc,
            "ET": et,
        }))?,
    )?;
    set(&out, "labelConvention", serde_to_js(&options.labels)?)?;
    set(
        &out,
        "postprocessing",
        options.postprocessing.flags().as_str(),
    )?;
    set(&out, "roi", serde_to_js(&seg.roi)?)?;
    set(&out, "windows", seg.windows as u32)?;
    let now = js_sys::Date::now();
    set(&out, "seconds", (now - started) / 1000.0)?;
    // Where the time went: the case read (or taken from the check), the network with its
    // windows and blending, the results made for the page.
    set(
        &out,
        "timings",
        serde_to_js(&json!({
            "read": (read - started) / 1000.0,
            "segment": (segmented - read) / 1000.0,
            "results": (now - segmented) / 1000.0,
        }))?,
    )?;
    set(&out, "backend", backend)?;
    set(&out, "precision", options.precision.name())?;
    set(&out, "model", manifest.name.as_str())?;
    Ok(out.into())
}

/// The sliding window on WebGPU, each window inside error scopes ([`gpu::checked`]): a fault
/// stops the run with an error the page acts on (a fresh engine, smaller windows after running
/// out of memory), never with a result computed from buffers the GPU could not allocate.
async fn segment_on_gpu(
    model: NvNet<Gpu>,
    manifest: &Manifest,
    case: &Case,
    options: &InferenceOptions,
    (device, raw): (&burn::backend::wgpu::WgpuDevice, &wgpu::Device),
    fault_test: Option<&str>,
    progress: impl Fn(f64, usize, [usize; 3], f64),
) -> Result<Segmentation, JsValue> {
    let config = model.config();
    let mut run = Segmenter::new(
        &config,
        1,
        &manifest.outputs,
        case,
        &manifest.modalities,
        options,
    )
    .map_err(error)?;
    let roi = run.roi();
    let window_bytes = inference::window_bytes(&config, roi, options.precision);
    let models = [model];
    let per_window = inference::passes_per_window(models.len(), options.tta);
    let total = run.len() * per_window;
    // The plan first: if the device is lost in the first window the engine traps, and the
    // page sizes its next try from this.
    progress(0.0, total, roi, window_bytes);
    // Passes slower than this are followed stage by stage (a value of each stage read back), so
    // that a slow GPU's progress moves within a pass; the first pass is, to measure.
    const SLOW_PASS_MS: f64 = 2000.0;
    let mut staged = true;
    for w in 0..run.len() {
        let (read, fault) = gpu::checked(raw, async {
            if w == 0 {
                provoke(raw, fault_test);
            }
            let mut passes =
                inference::WindowPasses::new(&models, run.window(w, device), options.tta);
            for p in 0..per_window {
                let started = js_sys::Date::now();
                let before = (w * per_window + p) as f64;
                let mut stages = passes.begin_pass();
                let n = stages.len() as f64;
                while !stages.is_done() {
                    let (_, out) = stages.step();
                    if staged {
                        wait_for(out).await?;
                        progress(before + stages.done() as f64 / n, total, roi, window_bytes);
                    }
                }
                let (logits, _) = stages.finish();
                let timed = staged;
                if timed {
                    staged = js_sys::Date::now() - started > SLOW_PASS_MS;
                }
                let out = passes.end_pass(logits);
                // The window's last pass is counted once the window is read back.
                if p + 1 < per_window {
                    wait_for(out).await?;
                    progress(before + 1.0, total, roi, window_bytes);
                    if !timed {
                        staged = js_sys::Date::now() - started > SLOW_PASS_MS;
                    }
                }
            }
            let work = passes.finish();
            let mean = inference::read_async(work.mean).await?;
            let variance = match work.variance {
                Some(v) => Some(inference::read_async(v).await?),
                None => None,
            };
            Ok::<_, inference::InferenceError>((mean, variance))
        })
        .await;
        if let Some(f) = fault.or_else(lost) {
            return Err(fault_error(&f, Some((roi, window_bytes))));
        }
        let (mean, variance) = read.map_err(error)?;
        run.add(w, &mean, variance.as_deref()).map_err(error)?;
        progress(
            (w * per_window + per_window) as f64,
            total,
            roi,
            window_bytes,
        );
    }
    Ok(run
        .finish(case, &manifest.outputs, options)
        .map_err(error)?)
}

/// Wait for the GPU to have computed `t`: one value of it read back (WebGPU runs its queue in
/// order, so everything queued before it is done when it arrives).
async fn wait_for(t: burn::tensor::Tensor<Gpu, 5>) -> Result<(), inference::InferenceError> {
    let one = t.slice([0..1, 0..1, 0..1, 0..1, 0..1]);
    inference::read_async(nvnet::nn::precision::cast_to(
        one,
        burn::tensor::FloatDType::F32,
    ))
    .await
    .map(|_| ())
}

/// The device's loss, if WebGPU has reported it.
fn lost() -> Option<GpuFault> {
    LOST.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The `gpu-fault` test setting: the GPU fails for real, on purpose. `"oom"` asks for a buffer
/// of the device's largest size, which SwiftShader (the tests' adapter) cannot allocate (a GPU
/// that can, allocates it and nothing fails); `"lose"` destroys the device, as a driver reset
/// or a crashed GPU process would lose it.
fn provoke(raw: &wgpu::Device, fault_test: Option<&str>) {
    match fault_test {
        // Destroyed at once: a dropped buffer waits for the garbage collector in a browser.
        Some("oom") => raw
            .create_buffer(&wgpu::BufferDescriptor {
                label: Some("nvnet gpu-fault=oom"),
                size: raw.limits().max_buffer_size,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
            .destroy(),
        Some("lose") => raw.destroy(),
        _ => {}
    }
}

/// The error of a GPU fault: `gpuFault` (what happened), `gpuFaultKind` (`out-of-memory`,
/// `refused` or `lost`), and the window it happened in, `roi` and `windowBytes` (its estimated
/// memory), from which the page sizes the next try.
fn fault_error(fault: &GpuFault, window: Option<([usize; 3], f64)>) -> JsValue {
    let e = js_sys::Error::new(&format!("the GPU failed: {fault}"));
    let kind = match fault {
        GpuFault::OutOfMemory(_) => "out-of-memory",
        GpuFault::Refused(_) => "refused",
        GpuFault::Lost(_) => "lost",
    };
    let _ = Reflect::set(&e, &"gpuFault".into(), &fault.to_string().into());
    let _ = Reflect::set(&e, &"gpuFaultKind".into(), &kind.into());
    if let Some((roi, window_bytes)) = window {
        let _ = Reflect::set(&e, &"roi".into(), &roi_array(roi));
        let _ = Reflect::set(&e, &"windowBytes".into(), &window_bytes.into());
    }
    e.into()
}

/// A window's size as a JS array.
fn roi_array(roi: [usize; 3]) -> Array {
    roi.iter().map(|&r| JsValue::from(r as u32)).collect()
}

/// Plain data to a JS value through JSON (small values only: the volumes are typed arrays).
fn serde_to_js<T: serde::Serialize>(value: &T) -> Result<JsValue, JsError> {
    let text = serde_json::to_string(value).map_err(error)?;
    js_sys::JSON::parse(&text).map_err(|_| error("JSON"))
}
