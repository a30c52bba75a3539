// Which build of the engine this browser runs, for the worker (worker.js) and the service
// worker (sw.js), which must agree. Two builds of the same code: nvnet-web-relaxed uses wasm's
// relaxed SIMD (a fused multiply-add in the 3×3×3 convolution: 3.6 s against 4.3 s for a whole
// case on the CPU, docs/PERFORMANCE.md), but a module using it does not load where the browser
// lacks it, so the page asks first with a 37-byte module: one function, f32x4.relaxed_madd of
// its three v128 arguments.
self.nvnetEngine = (() => {
  const probe = new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // "\0asm", version 1
    0x01, 0x08, 0x01, 0x60, 0x03, 0x7b, 0x7b, 0x7b, 0x01, 0x7b, // type: (v128 ×3) → v128
    0x03, 0x02, 0x01, 0x00, // one function of that type
    0x0a, 0x0d, 0x01, 0x0b, 0x00, // its code, no locals:
    0x20, 0x00, 0x20, 0x01, 0x20, 0x02, // local.get 0, 1, 2
    0xfd, 0x85, 0x02, // f32x4.relaxed_madd
    0x0b, // end
  ]);
  let relaxed = false;
  try {
    relaxed = WebAssembly.validate(probe);
  } catch (_) {
    // No WebAssembly at all: the worker says so when it loads the engine.
  }
  const name = relaxed ? 'nvnet-web-relaxed' : 'nvnet-web';
  return { relaxed, glue: `${name}.js`, wasm: `${name}_bg.wasm` };
})();
