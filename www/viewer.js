// The result viewer: axial, coronal and sagittal slices of one modality under the label map,
// with crosshair navigation, window/level, and a read-out of the voxel under the cursor. Two
// quality views for an exam the page prepared: the chosen series and the reference in a
// checkerboard (misregistration breaks edges at the tiles' borders), and the reference with its
// skull under the brain mask's outline.
// Volumes are in NIfTI file order (i fastest): index = i + nx * (j + ny * k), on a grid in any
// orientation (an exam's reference series may be sagittal or oblique). The views show the
// grid's own voxels in the planes nearest to the body's: the display axes are the world's (x
// to the patient's right, y anterior, z superior; radiological convention: the patient's
// right on the left of the axial and coronal views, anterior up in the axial view and to the
// left in the sagittal one), each taken by the grid axis nearest to it.
'use strict';

const TILE = 12;  // voxels per checkerboard tile
const OUTLINE = [0, 230, 255];

const LABEL_COLOURS = {
  1: [230, 40, 40],   // necrosis / non-enhancing core
  2: [40, 190, 60],   // oedema
  3: [255, 220, 0],   // enhancing tumour (BraTS 2023+)
  4: [255, 220, 0],   // enhancing tumour (BraTS 2018-2021)
};

class Viewer {
  constructor(root, onReadout) {
    this.root = root;
    this.onReadout = onReadout;
    this.views = ['axial', 'coronal', 'sagittal'].map((name) => ({
      name,
      canvas: root.querySelector(`#view-${name}`),
      slider: root.querySelector(`#slider-${name}`),
    }));
    this.opacity = 0.5;
    this.showLabels = true;
    this.showUncertainty = false;
    this.mode = 'labels';
    for (const v of this.views) this.bind(v);
  }

  // result: {dims, spacing, affine, images[], modalities[], labels, uncertainty?}
  show(result) {
    this.r = result;
    this.o = orientation(result.affine, result.dims);
    const o = this.o;
    const [wx, wy, wz] = o.extent;
    this.cursor = [wx >> 1, wy >> 1, wz >> 1];
    // Start the crosshair in the tumour when there is one.
    let sum = [0, 0, 0], count = 0;
    for (let uz = 0; uz < wz; uz++) for (let uy = 0; uy < wy; uy++) for (let ux = 0; ux < wx; ux++) {
      if (result.labels[o.index(ux, uy, uz)] !== 0) { sum[0] += ux; sum[1] += uy; sum[2] += uz; count++; }
    }
    if (count) this.cursor = sum.map((s) => Math.round(s / count));
    this.windows = result.images.map((img) => robustRange(img));
    this.reference = Math.max(0, result.modalities.indexOf(result.reference));
    this.skullWindow = result.referenceWithSkull ? robustRange(result.referenceWithSkull) : null;
    this.mode = 'labels';
    this.modality = 0;
    const [sx, sy, sz] = o.spacing;
    const scale = Math.max(1, Math.min(3, 300 / Math.max(wx * sx, wy * sy, wz * sz)));
    const sizes = { axial: [wx, wy, sx, sy], coronal: [wx, wz, sx, sz], sagittal: [wy, wz, sy, sz] };
    for (const v of this.views) {
      const [w, h, px, py] = sizes[v.name];
      v.canvas.width = w; v.canvas.height = h;
      v.canvas.style.width = `${Math.round(w * px * scale)}px`;
      v.canvas.style.height = `${Math.round(h * py * scale)}px`;
      v.image = new ImageData(w, h);
      v.slider.max = String(o.extent[this.axisOf(v)] - 1);
    }
    this.draw();
  }

  setModality(i) { this.modality = i; this.draw(); }
  setOpacity(o) { this.opacity = o; this.draw(); }
  setShowLabels(b) { this.showLabels = b; this.draw(); }
  setShowUncertainty(b) { this.showUncertainty = b; this.draw(); }
  // 'labels', 'checkerboard' or 'brain' (the last two only where the page prepared the exam).
  setMode(m) { this.mode = m; this.draw(); }

  // The window/level of the image shown: the reference with its skull in the brain view.
  shownWindow() {
    return this.mode === 'brain' && this.skullWindow ? this.skullWindow : this.windows[this.modality];
  }
  setShownWindow(w) {
    if (this.mode === 'brain' && this.skullWindow) this.skullWindow = w;
    else this.windows[this.modality] = w;
  }

  axisOf(v) { return { axial: 2, coronal: 1, sagittal: 0 }[v.name]; }

  // Canvas pixel (x, y) of view v → display position [ux, uy, uz] (see `orientation`).
  displayAt(v, x, y) {
    const [wx, wy, wz] = this.o.extent;
    const c = this.cursor.slice();
    if (v.name === 'axial') { c[0] = wx - 1 - x; c[1] = wy - 1 - y; }
    else if (v.name === 'coronal') { c[0] = wx - 1 - x; c[2] = wz - 1 - y; }
    else { c[1] = wy - 1 - x; c[2] = wz - 1 - y; }
    return [clamp(c[0], 0, wx - 1), clamp(c[1], 0, wy - 1), clamp(c[2], 0, wz - 1)];
  }

  // Display position → canvas pixel (x, y) in view v.
  pixelOf(v, [ux, uy, uz]) {
    const [wx, wy, wz] = this.o.extent;
    if (v.name === 'axial') return [wx - 1 - ux, wy - 1 - uy];
    if (v.name === 'coronal') return [wx - 1 - ux, wz - 1 - uz];
    return [wy - 1 - uy, wz - 1 - uz];
  }

  bind(v) {
    let drag = null;
    const pixel = (e) => {
      const rect = v.canvas.getBoundingClientRect();
      return [Math.floor((e.clientX - rect.left) / rect.width * v.canvas.width),
        Math.floor((e.clientY - rect.top) / rect.height * v.canvas.height)];
    };
    v.canvas.addEventListener('mousedown', (e) => {
      if (!this.r) return;
      drag = { x: e.clientX, y: e.clientY, moved: false, window: this.shownWindow().slice() };
      e.preventDefault();
    });
    window.addEventListener('mouseup', (e) => {
      if (!drag) return;
      if (!drag.moved && e.target === v.canvas) {
        const [x, y] = pixel(e);
        this.cursor = this.displayAt(v, x, y);
        this.draw();
        this.readout(this.cursor);
      }
      drag = null;
    });
    v.canvas.addEventListener('mousemove', (e) => {
      if (!this.r) return;
      if (drag) {
        const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
        if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
        if (drag.moved) {
          // Horizontal: window width; vertical: level.
          const [lo, hi] = drag.window;
          const width = Math.max(1e-6, (hi - lo) * Math.exp(dx / 150));
          const level = (lo + hi) / 2 - dy / 150 * (hi - lo);
          this.setShownWindow([level - width / 2, level + width / 2]);
          this.draw();
        }
      }
      const [x, y] = pixel(e);
      this.readout(this.displayAt(v, x, y));
    });
    v.canvas.addEventListener('wheel', (e) => {
      if (!this.r) return;
      e.preventDefault();
      const a = this.axisOf(v);
      this.cursor[a] = clamp(this.cursor[a] + (e.deltaY > 0 ? -1 : 1), 0, this.o.extent[a] - 1);
      this.draw();
    }, { passive: false });
    v.slider.addEventListener('input', () => {
      if (!this.r) return;
      this.cursor[this.axisOf(v)] = Number(v.slider.value);
      this.draw();
    });
  }

  readout(u) {
    const r = this.r;
    const idx = this.o.index(...u);
    const [i, j, k] = this.o.voxel(u);
    const a = r.affine;
    const mm = [0, 1, 2].map((row) => a[row][0] * i + a[row][1] * j + a[row][2] * k + a[row][3]);
    const value = r.images[this.modality][idx];
    const label = r.labels[idx];
    const u2 = r.uncertainty ? `  flip variance ${r.uncertainty[idx].toFixed(3)}` : '';
    this.onReadout(`voxel (${i}, ${j}, ${k})  ${mm.map((x) => x.toFixed(1)).join(', ')} mm  `
      + `${r.modalities[this.modality]} ${formatValue(value)}  label ${label}${u2}`);
  }

  draw() {
    if (!this.r) return;
    for (const v of this.views) this.drawView(v);
  }

  drawView(v) {
    const r = this.r;
    const o = this.o;
    const [wx, wy, wz] = o.extent;
    const brainView = this.mode === 'brain' && r.brainMask;
    const checker = this.mode === 'checkerboard';
    const img = brainView ? r.referenceWithSkull : r.images[this.modality];
    const [lo, hi] = brainView ? this.skullWindow : this.windows[this.modality];
    const span = hi - lo || 1;
    const ref = r.images[this.reference];
    const [rlo, rhi] = this.windows[this.reference];
    const rspan = rhi - rlo || 1;
    // Beyond the grid counts as brain: the outline is the mask's, not the field of view's.
    const inMask = (u) => u[0] < 0 || u[1] < 0 || u[2] < 0 || u[0] >= wx || u[1] >= wy || u[2] >= wz
      || r.brainMask[o.index(u[0], u[1], u[2])] !== 0;
    // The display axes along the view's rows and columns (for the outline's neighbours).
    const inPlane = v.name === 'axial' ? [0, 1] : v.name === 'coronal' ? [0, 2] : [1, 2];
    const w = v.canvas.width, h = v.canvas.height;
    const px = v.image.data;
    const alpha = this.opacity;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const u = this.displayAt(v, x, y);
        const idx = o.index(u[0], u[1], u[2]);
        let g = clamp((img[idx] - lo) / span * 255, 0, 255);
        if (checker && (Math.floor(x / TILE) + Math.floor(y / TILE)) % 2 === 1) {
          g = clamp((ref[idx] - rlo) / rspan * 255, 0, 255);
        }
        let rgb = [g, g, g];
        if (brainView) {
          // The outline: brain voxels with a neighbour outside in this view's plane.
          if (r.brainMask[idx] !== 0) {
            const edge = inPlane.some((a) => [-1, 1].some((d) => {
              const n = u.slice();
              n[a] += d;
              return !inMask(n);
            }));
            if (edge) rgb = OUTLINE.slice();
          }
        } else if (this.showLabels && !checker) {
          const c = LABEL_COLOURS[r.labels[idx]];
          if (c) rgb = rgb.map((g0, n) => g0 * (1 - alpha) + c[n] * alpha);
        }
        if (this.showUncertainty && r.uncertainty) {
          // Variance of a probability is at most 0.25; show its square root, in magenta.
          const t = Math.min(1, Math.sqrt(r.uncertainty[idx] / 0.25)) * 0.9;
          rgb = [rgb[0] * (1 - t) + 255 * t, rgb[1] * (1 - t), rgb[2] * (1 - t) + 255 * t];
        }
        const p = 4 * (y * w + x);
        px[p] = rgb[0]; px[p + 1] = rgb[1]; px[p + 2] = rgb[2]; px[p + 3] = 255;
      }
    }
    const ctx = v.canvas.getContext('2d');
    ctx.putImageData(v.image, 0, 0);
    // Crosshair.
    ctx.strokeStyle = 'rgba(80, 160, 255, 0.8)';
    ctx.lineWidth = 1;
    const [cx, cy] = this.pixelOf(v, this.cursor);
    ctx.beginPath();
    ctx.moveTo(cx + 0.5, 0); ctx.lineTo(cx + 0.5, h);
    ctx.moveTo(0, cy + 0.5); ctx.lineTo(w, cy + 0.5);
    ctx.stroke();
    v.slider.value = String(this.cursor[this.axisOf(v)]);
  }
}

// How a grid is shown: for each world axis (x, y, z), the grid axis nearest to it (of the six
// assignments, the one whose axes lie closest to the world's) and its direction. Returns the
// display extent and spacing along x, y, z, the voxel index of a display position (each
// display coordinate growing with its world coordinate) and the grid voxel [i, j, k] of one.
function orientation(affine, dims) {
  const norm = [0, 1, 2].map((d) => Math.hypot(affine[0][d], affine[1][d], affine[2][d]) || 1);
  const cos = (w, d) => Math.abs(affine[w][d]) / norm[d];
  let best = null;
  for (const p of [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]]) {
    const score = cos(0, p[0]) + cos(1, p[1]) + cos(2, p[2]);
    if (!best || score > best.score) best = { p, score };
  }
  const axis = best.p;  // axis[w]: the grid axis shown along world axis w
  const sign = axis.map((d, w) => (affine[w][d] < 0 ? -1 : 1));
  const stride = [1, dims[0], dims[0] * dims[1]];
  const step = axis.map((d, w) => sign[w] * stride[d]);
  const base = axis.reduce((b, d, w) => b + (sign[w] < 0 ? stride[d] * (dims[d] - 1) : 0), 0);
  return {
    extent: axis.map((d) => dims[d]),
    spacing: axis.map((d) => norm[d]),
    index: (ux, uy, uz) => base + ux * step[0] + uy * step[1] + uz * step[2],
    voxel: (u) => {
      const v = [0, 0, 0];
      axis.forEach((d, w) => { v[d] = sign[w] > 0 ? u[w] : dims[d] - 1 - u[w]; });
      return v;
    },
  };
}

// The 0.5th and 99.5th percentiles of the nonzero voxels: a window that ignores outliers.
function robustRange(img) {
  const sample = [];
  const step = Math.max(1, Math.floor(img.length / 200000));
  for (let n = 0; n < img.length; n += step) if (img[n] !== 0) sample.push(img[n]);
  if (sample.length === 0) return [0, 1];
  sample.sort((a, b) => a - b);
  const at = (q) => sample[Math.min(sample.length - 1, Math.floor(q * sample.length))];
  const lo = at(0.005), hi = at(0.995);
  return hi > lo ? [lo, hi] : [lo, lo + 1];
}

function clamp(v, lo, hi) { return v < lo ? lo : v > hi ? hi : v; }

function formatValue(v) {
  return Math.abs(v) >= 100 || Number.isInteger(v) ? v.toFixed(0) : v.toPrecision(4);
}

window.Viewer = Viewer;
