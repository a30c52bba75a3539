// The page: files in, roles, checks, segmentation in a Web Worker, progress, cancel, viewer,
// download. The computing is the nvnet engine's (web/ → wasm, in worker.js); this file only
// moves files and results between the page and the worker.
'use strict';

const $ = (id) => document.getElementById(id);
const ROLES = [['t1', 'T1'], ['t1ce', 'T1ce (contrast)'], ['t2', 'T2'], ['flair', 'FLAIR'],
  ['seg', 'Segmentation (ignored)'], ['ignore', 'Ignore']];
const SAMPLE = ['Phantom-00000_t1.nii.gz', 'Phantom-00000_t1ce.nii.gz', 'Phantom-00000_t2.nii.gz',
  'Phantom-00000_flair.nii.gz'];

// Settings from the address: ?backend=cpu, ?precision=f32 (no float16 on a GPU that offers it),
// ?max-binding=BYTES&max-buffer=BYTES (size the
// inference windows as for an adapter with these limits), ?webgpu-timeout=SECONDS,
// ?gpu-fault=oom|lose[,…] (the GPU runs out of memory, or loses its device, in the first window:
// one fault a try, in order, from the first segmentation on; see `provoke` in web/src/lib.rs).
const params = new URLSearchParams(location.search);
const settings = {
  backend: params.get('backend') === 'cpu' ? 'cpu' : 'webgpu',
  capBinding: params.has('max-binding') ? Number(params.get('max-binding')) : null,
  capBuffer: params.has('max-buffer') ? Number(params.get('max-buffer')) : null,
  precision: params.get('precision'),
  // Opening WebGPU takes well under a second; a driver that never answers must not leave the
  // page waiting for ever.
  webgpuTimeout: params.has('webgpu-timeout') ? Number(params.get('webgpu-timeout')) : 20,
  // Why the page runs on the CPU when it was not asked to (shown instead of the engine's notice).
  notice: null,
  gpuFaults: (params.get('gpu-fault') || '').split(',').filter(Boolean),
  // Bytes of GPU memory a window may use, once the GPU ran out of memory with larger ones
  // (null: the engine's default). Kept for the page's later cases.
  gpuBudget: null,
};

// ---------------------------------------------------------------------------------------------
// The worker, with request/response ids. A crashed or cancelled worker is replaced.

let worker = null;
let ready = null;
let nextId = 1;
const pending = new Map();
// Weights the user loaded: a fresh worker (after a crash or Cancel) loads them again.
let userWeights = null;
// Workers started since one last came up: an engine that cannot start is not restarted for ever.
let failedStarts = 0;
// What the current worker's GPU reported (its device lost), if anything.
let workerFault = null;

function startWorker() {
  const me = new Worker('worker.js');
  worker = me;
  workerFault = null;
  worker.onmessage = (event) => {
    // A replaced worker's last messages and errors (a trapped engine can throw several) are
    // not the new one's: they must not replace it in turn.
    if (worker !== me) return;
    const m = event.data;
    if (m.type === 'gpuFault') { workerFault = { kind: 'lost', message: m.message }; return; }
    const p = pending.get(m.id);
    if (!p) return;
    if (m.type === 'progress') { p.onProgress?.(m.done, m.total, m.roi, m.windowBytes); return; }
    if (m.type === 'stage') { p.onProgress?.(m.stage); return; }
    pending.delete(m.id);
    if (m.ok) p.resolve(m.result);
    else {
      const err = Object.assign(new Error(m.error), {
        webgpuTimeout: Boolean(m.webgpuTimeout), crashed: Boolean(m.crashed),
        gpuFault: m.gpuFault ? { kind: m.gpuFaultKind, message: m.gpuFault } : workerFault,
        roi: m.roi, windowBytes: m.windowBytes,
      });
      if (m.crashed) restartWorker();
      p.reject(err);
    }
  };
  worker.onerror = (event) => {
    event.preventDefault();
    if (worker !== me || me.stopping) return;
    // An engine that traps reading back from a lost GPU may do so before the loss is reported
    // (two messages from the worker, in no guaranteed order): a moment to hear of it.
    me.stopping = true;
    setTimeout(() => {
      if (worker !== me) return;
      const err = Object.assign(new Error(`the engine stopped: ${event.message || 'out of memory?'}`),
        { crashed: true, gpuFault: workerFault });
      for (const p of pending.values()) p.reject(err);
      pending.clear();
      restartWorker();
    }, 200);
  };
  failedStarts += 1;
  ready = call('init', settings).then(async (r) => {
    failedStarts = 0;
    if (settings.notice) r.info.notice = settings.notice;
    if (userWeights) r.model = await call('weights', userWeights);
    showEngine(r);
    // After "ready": a case dropped meanwhile waits for it in the worker's queue.
    if (r.info.backend === 'cpu') {
      call('warmUp').then((seconds) => {
        if (seconds > 0) $('adapter').textContent = `(its loops compiled in ${seconds.toFixed(2)} s)`;
      }, () => { /* a replaced worker: its successor warms up */ });
    }
    return r;
  }, (err) => {
    if (!err.webgpuTimeout) throw err;
    // The worker may be stuck inside the driver: a fresh one runs on the CPU from now on, and
    // whoever waits for this engine gets that one.
    settings.backend = 'cpu';
    settings.notice = `${err.message}, so the page runs on the CPU, which is much slower `
      + '(reload the page to try WebGPU again)';
    restartWorker();
    return ready;
  });
  ready.catch((e) => setStatus(`error: the engine did not start: ${e.message}`));
}

function restartWorker() {
  if (worker) worker.terminate();
  for (const p of pending.values()) p.reject(new Error('cancelled'));
  pending.clear();
  if (failedStarts >= 3) {
    worker = null;
    ready = Promise.reject(new Error('the engine failed to start three times; reload the page'));
    ready.catch(() => {});
    setStatus('error: the engine failed to start three times; reload the page');
    return;
  }
  startWorker();
}

function call(type, message = {}, onProgress = null, transfer = []) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject, onProgress });
    worker.postMessage({ ...message, id, type }, transfer);
  });
}

// ---------------------------------------------------------------------------------------------
// Model and engine.

function showEngine({ info, model }) {
  $('backend').textContent = info.backend;
  $('adapter').textContent = info.adapter ? `(${info.adapter})` : '';
  $('precision').textContent = `· ${info.backend === 'webgpu' ? info.precisionNote : `wasm ${info.cpuBuild}`}`;
  const notice = $('backend-notice');
  notice.hidden = !info.notice;
  notice.textContent = info.notice || '';
  showModel(model);
  // After a crash the error stays on the page: it is the only account of what happened. While
  // files are being read or checked (`checked` empty), their check will say where things stand:
  // an older "ready to segment" shown meanwhile would offer a Segment that does nothing.
  if (!busy && !$('status').textContent.startsWith('error')) {
    if (!files.length) setStatus('ready: drop the four modalities of a case');
    else if (checked) setStatus(statusAfterCheck);
  }
}

function showModel(model) {
  $('model-name').textContent = model.file ? `${model.name} (${model.file})` : model.name;
  const p = model.provenance || {};
  $('model-details').textContent = `inputs ${model.modalities.join(', ')} → ${model.outputs.join(', ')}; `
    + `${model.init_filters} filters${model.half ? ', float16' : ''}; ${p.source || ''} ${p.created || ''}. `
    + `${p.notes || ''}${model.notices?.length ? ' ' + model.notices.join(' ') : ''}`;
  $('demo-warning').hidden = !model.embedded;
  $('default-weights').hidden = model.embedded;
}

$('weights-input').addEventListener('change', async (e) => {
  const file = e.target.files[0];
  e.target.value = '';
  if (!file) return;
  setStatus(`loading weights ${file.name}…`);
  try {
    await ready;
    const request = { file, modalities: $('weights-modalities').value.trim() };
    showModel(await call('weights', request));
    userWeights = request;
    setStatus(`weights loaded: ${file.name}`);
  } catch (err) {
    setStatus(`error: ${err.message}`);
  }
});

// MONAI's brats_mri_segmentation bundle reads T1ce, T1, T2, FLAIR (nvnet's
// MONAI_BRATS_BUNDLE_ORDER, which `nvnet import --preset monai-brats` uses).
$('preset-monai-brats').addEventListener('click', () => {
  $('weights-modalities').value = 't1ce,t1,t2,flair';
});

$('default-weights').addEventListener('click', async () => {
  try {
    await ready;
    showModel(await call('defaultWeights'));
    userWeights = null;
    setStatus('using the embedded default model');
  } catch (err) {
    setStatus(`error: ${err.message}`);
  }
});

// ---------------------------------------------------------------------------------------------
// Files and roles.

let files = [];          // [{file, role}]
let checked = null;      // the last successful check
let statusAfterCheck = '';
let busy = false;

function setStatus(text) { $('status').textContent = text; }

// A DICOM file: "DICM" after its 128-byte preamble.
async function isDicom(file) {
  if (file.size < 132) return false;
  const head = new Uint8Array(await file.slice(128, 132).arrayBuffer());
  return String.fromCharCode(...head) === 'DICM';
}

async function addFiles(given) {
  // A copy: the file input's list empties when the input is reset, as it is after a choice.
  const list = [...given];
  // The case on the page is being replaced: nothing to segment until the new one is checked.
  checked = null;
  $('segment').disabled = true;
  setStatus('reading the files…');
  const nifti = list.filter((f) => /\.nii(\.gz)?$/i.test(f.name));
  if (nifti.length === 0) {
    // No NIfTI file: a DICOM exam (a folder from the scanner or PACS) is read as one case, its
    // series chosen by their names in the worker, as `nvnet predict` chooses them.
    const dicom = [];
    for (const f of list) if (await isDicom(f)) dicom.push(f);
    if (dicom.length === 0) {
      setStatus(`error: ${list.map((f) => f.name).join(', ') || 'nothing'}: no NIfTI file (.nii or .nii.gz) and no DICOM file`);
      return;
    }
    await ready;
    files = dicom.map((file) => ({ file, role: 'dicom' }));
    renderFiles();
    await check();
    return;
  }
  await ready;
  const roles = await call('detect', { names: nifti.map((f) => f.name) });
  files = nifti.map((file, n) => ({ file, role: roles[n] || '' }));
  // Undetected files take the modalities still missing, in order.
  for (const f of files.filter((f) => !f.role)) {
    const free = ['t1', 't1ce', 't2', 'flair'].find((m) => !files.some((g) => g.role === m));
    f.role = free || 'ignore';
  }
  renderFiles();
  await check();
}

function renderFiles() {
  const body = $('files').querySelector('tbody');
  body.replaceChildren();
  const exam = files.filter((f) => f.role === 'dicom');
  if (exam.length) {
    const tr = document.createElement('tr');
    const size = exam.reduce((n, f) => n + f.file.size, 0);
    tr.append(cell(`DICOM exam: ${exam.length} file(s)`), cell(formatBytes(size)), cell('series chosen by their names'));
    body.append(tr);
  }
  for (const f of files.filter((f) => f.role !== 'dicom')) {
    const tr = document.createElement('tr');
    const select = document.createElement('select');
    for (const [value, text] of ROLES) select.add(new Option(text, value, false, value === f.role));
    select.addEventListener('change', () => { f.role = select.value; check(); });
    tr.append(cell(f.file.webkitRelativePath || f.file.name), cell(formatBytes(f.file.size)));
    const td = document.createElement('td'); td.append(select); tr.append(td);
    body.append(tr);
  }
  $('files').hidden = files.length === 0;
}

function cell(text) { const td = document.createElement('td'); td.textContent = text; return td; }

function formatBytes(n) {
  return n > 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MB` : `${Math.max(1, Math.round(n / 1024))} kB`;
}

function request() {
  const used = files.filter((f) => f.role !== 'ignore' && f.role !== 'seg');
  // A DICOM file's path in its folder names it in messages (its name alone, IM0001, says little).
  return { files: used.map((f) => f.file), names: used.map((f) => (f.role === 'dicom' && f.file.webkitRelativePath) || f.file.name), roles: used.map((f) => f.role), reference: $('reference').value };
}

// A modality as radiologists write it: T1, T1ce, T2, FLAIR.
function seriesName(m) {
  return { t1: 'T1', t1ce: 'T1ce', t2: 'T2', flair: 'FLAIR' }[m] || m;
}

// What registration did, in words a reader can check: each series' rotation and shift.
function registrationText(r) {
  const moved = r.registered.map((g) => {
    const angle = Math.max(...g.angles.map(Math.abs));
    const shift = Math.hypot(...g.translation);
    return `${g.modality} ${angle.toFixed(1)}° and ${shift.toFixed(1)} mm (NMI ${g.nmi.toFixed(3)})`;
  });
  const name = seriesName(r.reference);
  return `the series were registered to the ${name} (${moved.join('; ') || 'none moved'}) and resampled `
    + `onto this 1 mm grid; ${r.skull}; the download lies on the ${name}'s grid (${r.referenceDims.join(' × ')}).`;
}

// The stages of an exam the page prepares (reading each series, registering, resampling,
// stripping the skull, then segmenting and carrying the labels onto the reference's grid),
// each with its time: done, running (its time counting) or failed.
const stages = {
  list: [],
  // How many of them the check made (the rest are a segmentation's).
  checked: 0,
  timer: null,
  reset() {
    this.list = [];
    this.checked = 0;
    $('stages').replaceChildren();
    $('stages').hidden = true;
  },
  start(name) {
    this.settle('done');
    const li = document.createElement('li');
    li.className = 'running';
    const stage = { name, li, started: performance.now() };
    this.list.push(stage);
    $('stages').append(li);
    $('stages').hidden = false;
    this.render(stage, '…');
    this.timer ??= setInterval(() => {
      const last = this.list.at(-1);
      if (last?.li.className === 'running') this.render(last, '…');
    }, 1000);
  },
  truncate(n) {
    this.settle('done');
    while (this.list.length > n) this.list.pop().li.remove();
  },
  // The running stage, if any, ends as `how`: 'done', 'failed' or 'cancelled'.
  settle(how) {
    const last = this.list.at(-1);
    if (!last || last.li.className !== 'running') return;
    last.li.className = how === 'done' ? 'done' : 'failed';
    this.render(last, how === 'done' ? '' : `: ${how}`);
    clearInterval(this.timer);
    this.timer = null;
  },
  render(stage, suffix) {
    const s = (performance.now() - stage.started) / 1000;
    stage.li.textContent = `${stage.name} — ${s.toFixed(1)} s${suffix}`;
  },
};

// Each check has a number: only the latest one's answer is shown (an earlier one can finish
// later, and must not show another case or re-enable Segment over a newer error).
let checkNumber = 0;

async function check() {
  const mine = ++checkNumber;
  // Also tells a segmentation still running that its files are no longer the page's.
  checked = null;
  $('segment').disabled = true;
  const dicom = files.some((f) => f.role === 'dicom');
  const missing = dicom ? [] : ['t1', 't1ce', 't2', 'flair'].filter((m) => !files.some((f) => f.role === m));
  if (missing.length) {
    $('check').textContent = '';
    setStatus(`error: missing modality: ${missing.join(', ')} (choose it in the table)`);
    return;
  }
  // A dropped dataset (many cases) is one case too many: refused before anything is read.
  for (const m of ['t1', 't1ce', 't2', 'flair']) {
    const given = files.filter((f) => f.role === m);
    if (given.length > 1) {
      $('check').textContent = '';
      setStatus(`error: ${given.length} files given as ${m} (${given.slice(0, 3).map((f) => f.file.name).join(', ')}`
        + `${given.length > 3 ? ', …' : ''}): drop the files of one case, or set the others to Ignore`);
      return;
    }
  }
  setStatus('checking the files…');
  stages.reset();
  try {
    // An exam to prepare says each stage as it starts (reading a series, registering, stripping).
    const r = await call('check', request(), (stage) => {
      if (mine !== checkNumber) return;
      setStatus(`checking the files: ${stage}…`);
      stages.start(stage);
    });
    if (mine !== checkNumber) return;
    stages.settle('done');
    stages.checked = stages.list.length;
    checked = r;
    $('check').textContent = `${r.id}: ${r.dims.join(' × ')} voxels of ${r.spacing.map((s) => s.toFixed(2)).join(' × ')} mm; `
      + (r.resampled || r.registered.length ? registrationText(r) : 'the four modalities share one grid.')
      + (r.series ? ` Series: ${r.series}.` : '')
      + (r.warnings.length ? ` Warnings: ${r.warnings.join('; ')}` : '');
    statusAfterCheck = 'ready to segment';
    setStatus(statusAfterCheck);
    $('segment').disabled = busy;
  } catch (err) {
    if (mine !== checkNumber) return;
    stages.settle('failed');
    $('check').textContent = '';
    setStatus(`error: ${err.message}`);
  }
}

$('reference').addEventListener('change', () => { if (files.length) check(); });
$('file-input').addEventListener('change', (e) => { addFilesReporting(e.target.files); e.target.value = ''; });
$('folder-input').addEventListener('change', (e) => { addFilesReporting(e.target.files); e.target.value = ''; });

// Every way in reports its errors on the page (none is left to an unhandled rejection).
async function addFilesReporting(list) {
  try {
    await addFiles(list);
  } catch (err) {
    setStatus(`error: ${err.message}`);
  }
}

const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', async (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  const collected = [];
  const entries = [...e.dataTransfer.items].map((i) => i.webkitGetAsEntry?.()).filter(Boolean);
  if (entries.length) {
    try {
      for (const entry of entries) await collect(entry, collected);
    } catch (err) {
      setStatus(`error: ${err.message}`);
      return;
    }
    addFilesReporting(collected);
  } else {
    addFilesReporting(e.dataTransfer.files);
  }
});

// A dropped folder: its files, recursively.
async function collect(entry, out) {
  const named = (err) => new Error(`${entry.fullPath}: cannot be read (${err?.message || err})`);
  if (entry.isFile) {
    out.push(await new Promise((res, rej) => entry.file(res, (err) => rej(named(err)))));
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((res, rej) => reader.readEntries(res, (err) => rej(named(err))));
      if (batch.length === 0) break;
      for (const e of batch) await collect(e, out);
    }
  }
}

$('sample').addEventListener('click', async () => {
  setStatus('loading the sample case…');
  try {
    const loaded = await Promise.all(SAMPLE.map(async (name) => {
      const response = await fetch(`sample/${name}`);
      if (!response.ok) throw new Error(`sample/${name}: HTTP ${response.status}`);
      return new File([await response.blob()], name);
    }));
    await addFiles(loaded);
  } catch (err) {
    setStatus(`error: ${err.message}`);
  }
});

// ---------------------------------------------------------------------------------------------
// Segmenting.

let result = null;
const viewer = new Viewer($('result'), (text) => { $('readout').textContent = text; });

// Counts segmentations and cancels: a retry after a GPU fault does not outlive a Cancel.
let segmentRun = 0;

$('segment').addEventListener('click', async () => {
  if (!checked || busy) return;
  const forCheck = checkNumber;
  const mine = ++segmentRun;
  busy = true;
  $('segment').disabled = true;
  $('cancel').disabled = false;
  const started = performance.now();
  const bar = $('progress-bar');
  bar.value = 0;
  $('progress').textContent = 'preparing…';
  setStatus('segmenting…');
  const tick = setInterval(() => {
    const s = (performance.now() - started) / 1000;
    if (!$('progress').dataset.done) $('progress').textContent = `preparing… ${s.toFixed(0)} s`;
  }, 1000);
  delete $('progress').dataset.done;
  // How many progress reports this segmentation gave (the browser tests read it).
  $('progress').dataset.steps = '0';
  // An exam the page prepared goes on in its list of stages (a case on one grid has none); a
  // second segmentation of it replaces the last one's.
  const prepared = stages.checked > 0;
  stages.truncate(stages.checked);
  if (prepared) stages.start('segmenting');
  const referenceName = seriesName(checked.reference);
  // What the GPU reported on earlier tries, for the status.
  const faults = [];
  try {
    await ready;
    // The same files and options on every try (files dropped meanwhile are another case).
    const base = { ...request(), tta: $('tta').checked };
    let r;
    for (let lastBytes = Infinity, lastLost = null; ;) {
      // The window of this try, from the engine's first progress report.
      const plan = {};
      try {
        const message = { ...base, budget: settings.gpuBudget, gpuFault: settings.gpuFaults.shift() };
        r = await call('segment', message, (done, total, roi, windowBytes) => {
          if (roi) Object.assign(plan, { roi, windowBytes });
          if (done === 0) return;
          const s = (performance.now() - started) / 1000;
          const eta = done < total ? `, about ${Math.ceil(s / done * (total - done))} s left` : '';
          $('progress').dataset.done = '1';
          $('progress').dataset.steps = String(Number($('progress').dataset.steps || 0) + 1);
          // Network passes (windows × flips), so that a case of one window still moves; on a
          // slow GPU, within a pass too (`done` then counts its stages as a fraction).
          const whole = Math.floor(done);
          const within = done > whole ? ` (${Math.round((done - whole) * 100)} % of the next)` : '';
          $('progress').textContent = `${whole}/${total} network passes${within}, ${s.toFixed(0)} s${eta}`;
          bar.value = done / total;
          if (prepared && done === total) stages.start(`post-processing, the labels onto the ${referenceName}'s own grid`);
        });
        break;
      } catch (err) {
        if (!err.gpuFault || mine !== segmentRun) throw err;
        const { kind, message } = err.gpuFault;
        const roi = err.roi || plan.roi;
        const bytes = err.windowBytes || plan.windowBytes;
        faults.push(`the GPU failed${roi ? ` with windows of ${roi.join('×')}` : ''}: ${message}`);
        // What the GPU did after a fault is not to be trusted: a fresh engine (a crashed one
        // is already being replaced).
        if (!err.crashed) restartWorker();
        // Out of memory or a refused command: windows of a quarter of the memory. A lost
        // device (a driver reset, a GPU process restarted) is tried again as it was, then,
        // lost again with the same windows, with smaller ones. A fault before any window (no
        // window size known) is tried again as it was, until the fourth fault.
        const shrink = bytes && (kind !== 'lost' || lastLost === bytes);
        lastLost = kind === 'lost' ? bytes : null;
        if (faults.length >= 4 || (shrink && bytes >= lastBytes)) {
          throw new Error(`${faults.join('; ')}. The page cannot segment this case on this GPU: `
            + 'close other tabs and try again, or run on the CPU (add ?backend=cpu to the address)');
        }
        if (shrink) {
          lastBytes = bytes;
          settings.gpuBudget = bytes / 4;
        }
        setStatus(`${faults.at(-1)}; trying again${shrink ? ' with smaller windows' : ''}…`);
        delete $('progress').dataset.done;
        bar.value = 0;
        await ready;
        if (mine !== segmentRun) throw new Error('cancelled');
      }
    }
    // After a fault the time is the whole wait since the click (fresh engines included), and
    // the last try's own time is given beside it.
    const seconds = faults.length ? (performance.now() - started) / 1000 : r.seconds;
    stages.settle('done');
    result = r;
    showResult(r);
    // Files dropped meanwhile were checked: their status stays; the result is still shown.
    if (forCheck !== checkNumber) return;
    const retried = faults.length
      ? `; the last try took ${r.seconds.toFixed(1)} s; ${faults.join('; ')}, so it was segmented again` : '';
    setStatus(`${r.id}: segmented in ${seconds.toFixed(1)} s on ${r.backend}${r.precision === 'f16' ? ' in float16' : ''} (${r.windows} window${r.windows === 1 ? '' : 's'} of ${r.roi.join('×')}${retried}): done`);
  } catch (err) {
    stages.settle(err.message === 'cancelled' ? 'cancelled' : 'failed');
    setStatus(err.message === 'cancelled' ? 'cancelled' : `error: ${err.message}`);
  } finally {
    clearInterval(tick);
    busy = false;
    $('cancel').disabled = true;
    $('segment').disabled = !checked;
  }
});

$('cancel').addEventListener('click', () => {
  segmentRun += 1;
  // The worker is stopped mid-computation and a fresh one started: nothing half-done remains.
  restartWorker();
  $('progress').textContent = '';
  $('progress-bar').value = 0;
});

function showResult(r) {
  $('result').hidden = false;
  $('result-id').textContent = r.id;
  const select = $('view-modality');
  select.replaceChildren(...r.modalities.map((m, n) => new Option(m, String(n))));
  const flair = r.modalities.indexOf('flair');
  viewer.show(r);
  if (flair >= 0) { select.value = String(flair); viewer.setModality(flair); }
  $('show-uncertainty').disabled = !r.uncertainty;
  // The quality views, where the page registered or stripped the exam.
  const mode = $('view-mode');
  mode.value = 'labels';
  mode.querySelector('option[value=checkerboard]').disabled = !r.registered;
  mode.querySelector('option[value=brain]').disabled = !r.brainMask;
  $('vol-wt').textContent = `${r.volumes.WT.toFixed(1)} mL`;
  $('vol-tc').textContent = `${r.volumes.TC.toFixed(1)} mL`;
  $('vol-et').textContent = `${r.volumes.ET.toFixed(1)} mL`;
  const grid = `${r.dims.join(' × ')} voxels of ${r.spacing.map((x) => x.toFixed(2)).join(' × ')} mm`;
  $('result-details').textContent = `Shown on ${r.native ? `the ${seriesName(r.reference)}'s own grid (as read; the other series where registration put them)` : 'the case\'s grid'}: ${grid}. `
    + `Labels: BraTS (${r.labelConvention}); model ${r.model}; post-processing: ${r.postprocessing}; window ${r.roi.join('×')}, ${r.windows} window(s); ${r.backend} (${r.precision}).`;
}

$('view-modality').addEventListener('change', (e) => viewer.setModality(Number(e.target.value)));
$('opacity').addEventListener('input', (e) => viewer.setOpacity(Number(e.target.value)));
$('show-labels').addEventListener('change', (e) => viewer.setShowLabels(e.target.checked));
$('show-uncertainty').addEventListener('change', (e) => viewer.setShowUncertainty(e.target.checked));
$('view-mode').addEventListener('change', (e) => viewer.setMode(e.target.value));

$('download').addEventListener('click', () => {
  if (!result) return;
  const url = URL.createObjectURL(new Blob([result.nifti], { type: 'application/gzip' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = `${result.id}_seg.nii.gz`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
});

startWorker();
// Offline use: registered once the engine has loaded, so that the service worker copies the
// files from the HTTP cache instead of downloading them a second time.
if ('serviceWorker' in navigator && !params.has('no-offline')) {
  ready.then(() => navigator.serviceWorker.register('sw.js')).catch(() => { /* a bonus */ });
}
