// The page's Web Worker: loads the nvnet engine (Rust compiled to wasm, built by trunk) and runs
// every request off the main thread. Messages: {id, type, ...} in; {id, ok, result | error (with
// gpuFault, gpuFaultKind, roi, windowBytes after a GPU fault)}, {id, type: 'progress', done,
// total, roi, windowBytes} and {type: 'gpuFault', message} (the GPU device lost) out.
// The engine reports the GPU's loss here at once: if it then traps reading back from the lost
// device, the page still knows why (it starts a fresh engine and segments again).
self.nvnetGpuFault = (message) => postMessage({ type: 'gpuFault', message });
// The engine's build for this browser (engine.js): with relaxed SIMD where the browser has it.
importScripts('./engine.js');
importScripts(`./${nvnetEngine.glue}`);
const ready = wasm_bindgen({ module_or_path: `./${nvnetEngine.wasm}` });
const nv = wasm_bindgen;

// The page reads files of at most this size: its volumes are capped at 2^24 voxels (8 bytes
// each at most, plus header extensions). A larger file is refused before it is read.
const MAX_FILE_BYTES = 512 * 1024 * 1024;

async function readFile(f, max = MAX_FILE_BYTES) {
  if (f.size > max) {
    throw new Error(`${f.name}: ${(f.size / 1048576).toFixed(0)} MB, more than the page reads `
      + `(${max / 1048576} MB); the nvnet command reads larger files`);
  }
  try {
    return new Uint8Array(await f.arrayBuffer());
  } catch (err) {
    throw new Error(`${f.name}: cannot be read (${message(err)})`);
  }
}

// One after the other, so that a bad file is named before the others are read.
async function bytesOf(files) {
  const out = [];
  for (const f of files) out.push(await readFile(f));
  return out;
}

// A browser whose GPU driver hangs never settles WebGPU's promises. The page replaces this
// worker on `webgpuTimeout`: the pending call cannot be cancelled.
function withTimeout(promise, seconds) {
  let timer;
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(
      new Error(`WebGPU did not answer within ${seconds} s`), { webgpuTimeout: true })), seconds * 1000);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

function message(err) {
  if (err && typeof err === 'object' && 'message' in err) return String(err.message);
  return String(err);
}

const handlers = {
  async init(m) {
    let opened = nv.init(m.backend, m.capBinding ?? undefined, m.capBuffer ?? undefined,
      m.precision ?? undefined);
    if (m.backend === 'webgpu') opened = withTimeout(opened, m.webgpuTimeout);
    const info = JSON.parse(await opened);
    info.cpuBuild = nvnetEngine.relaxed ? 'relaxed SIMD (fused multiply-add)' : 'baseline SIMD';
    return { info, model: JSON.parse(nv.model_info()) };
  },
  // The CPU engine's hot loops compiled before the user's first case (under a second).
  async warmUp() {
    return nv.warm_up();
  },
  async detect(m) {
    return m.names.map((n) => nv.detect_role(n));
  },
  async weights(m) {
    const bytes = await readFile(m.file, 1024 * 1024 * 1024);
    return JSON.parse(nv.load_weights(m.file.name, bytes, m.modalities || undefined));
  },
  async defaultWeights() {
    return JSON.parse(nv.use_default_weights());
  },
  async check(m) {
    const files = await bytesOf(m.files);
    return JSON.parse(nv.check_case(m.names, files, m.roles, m.reference, (stage) => {
      postMessage({ id: m.id, type: 'stage', stage });
    }));
  },
  async segment(m) {
    const files = await bytesOf(m.files);
    const result = await nv.segment(m.names, files, m.roles, m.reference, m.tta, m.budget ?? undefined,
      m.gpuFault ?? undefined, (done, total, roi, windowBytes) => {
        postMessage({ id: m.id, type: 'progress', done, total, roi, windowBytes });
      });
    const transfer = [result.labels.buffer, result.nifti.buffer, ...result.images.map((a) => a.buffer)];
    if (result.uncertainty) transfer.push(result.uncertainty.buffer);
    return [result, transfer];
  },
};

onmessage = async (event) => {
  const m = event.data;
  try {
    await ready;
    const handler = handlers[m.type];
    if (!handler) throw new Error(`unknown request ${m.type}`);
    const out = await handler(m);
    if (m.type === 'segment') {
      postMessage({ id: m.id, ok: true, result: out[0] }, out[1]);
    } else {
      postMessage({ id: m.id, ok: true, result: out });
    }
  } catch (err) {
    // A Rust panic leaves the wasm instance unusable: the page starts a fresh worker.
    const crashed = err instanceof WebAssembly.RuntimeError;
    // A trap reading back from a lost GPU can come before the loss is reported: a moment for
    // that report to go first, so that the page knows why the engine stopped.
    if (crashed) await new Promise((resolve) => setTimeout(resolve, 200));
    postMessage({
      id: m.id, ok: false, error: message(err), crashed, webgpuTimeout: Boolean(err?.webgpuTimeout),
      gpuFault: err?.gpuFault, gpuFaultKind: err?.gpuFaultKind, roi: err?.roi, windowBytes: err?.windowBytes,
    });
  }
};
