//! Fuzz the NIfTI reader on bytes, as the web page calls it on a dropped file.
//!
//! The reader's own source files are compiled in (not the `nvnet` crate), so that the fuzzer
//! builds in seconds instead of instrumenting Burn.
#![no_main]

#[path = "../../shared/src/io/fsutil.rs"]
#[allow(dead_code)]
mod fsutil;
#[path = "../../shared/src/io/nifti/mod.rs"]
#[allow(dead_code, unused_imports)] // the writer and its re-exports: not fuzzed here
mod nifti;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(image) = nifti::read_bytes(data, "fuzz.nii") {
        // Everything a caller does with an accepted image must hold too.
        let n = image.voxels.len();
        let [x, y, z] = image.dims();
        assert_eq!(n, x * y * z);
        let values = image.to_f32();
        assert!(values.iter().all(|v| v.is_finite()));
        let _ = image.min_max();
        let _ = image.geometry.spacing();
        if n > 0 {
            let _ = image.at(x - 1, y - 1, z - 1);
        }
    }
});
