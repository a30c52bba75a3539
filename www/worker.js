// The page's Web Worker: loads the nvnet engine (Rust compiled to wasm, built by trunk) and runs
// every request off the main thread. Messages: {id, type, ...} in; {id, ok, result | error} and
// {id, type: 'progress', done, total} out.
importScripts('./nvnet-web.js');
const ready = wasm_bindgen({ module_or_path: './nvnet-web_bg.wasm' });
const nv = wasm_bindgen;

async function bytesOf(files) {
  return Promise.all(files.map(async (f) => new Uint8Array(await f.arrayBuffer())));
}

function message(err) {
  if (err && typeof err === 'object' && 'message' in err) return String(err.message);
  return String(err);
}

const handlers = {
  async init(m) {
    const info = JSON.parse(await nv.init(m.backend, m.capBinding ?? undefined, m.capBuffer ?? undefined));
    return { info, model: JSON.parse(nv.model_info()) };
  },
  async detect(m) {
    return m.names.map((n) => nv.detect_role(n));
  },
  async weights(m) {
    const bytes = new Uint8Array(await m.file.arrayBuffer());
    return JSON.parse(nv.load_weights(m.file.name, bytes, m.modalities || undefined));
  },
  async defaultWeights() {
    return JSON.parse(nv.use_default_weights());
  },
  async check(m) {
    return JSON.parse(nv.check_case(m.names, await bytesOf(m.files), m.roles));
  },
  async segment(m) {
    const files = await bytesOf(m.files);
    const result = await nv.segment(m.names, files, m.roles, m.tta, (done, total) => {
      postMessage({ id: m.id, type: 'progress', done, total });
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
    postMessage({ id: m.id, ok: false, error: message(err), crashed });
  }
};
