//! Loops over independent parts of a buffer: on the CPU's cores natively (rayon), in turn in the
//! page (its wasm runs on one thread).

#[cfg(not(target_arch = "wasm32"))]
use rayon::prelude::*;

/// `f(i)` for every i < n.
pub fn each(n: usize, f: impl Fn(usize) + Send + Sync) {
    #[cfg(not(target_arch = "wasm32"))]
    (0..n).into_par_iter().for_each(f);
    #[cfg(target_arch = "wasm32")]
    (0..n).for_each(f);
}

/// `f(i, chunk)` for each chunk of `size` values of `buf`.
pub fn each_chunk_mut(buf: &mut [f32], size: usize, f: impl Fn(usize, &mut [f32]) + Send + Sync) {
    #[cfg(not(target_arch = "wasm32"))]
    buf.par_chunks_mut(size)
        .enumerate()
        .for_each(|(i, c)| f(i, c));
    #[cfg(target_arch = "wasm32")]
    buf.chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
}

/// `f(chunk)` of each chunk of `size` values of `buf`, in order.
pub fn map_chunks<T: Send>(
    buf: &[f32],
    size: usize,
    f: impl Fn(&[f32]) -> T + Send + Sync,
) -> Vec<T> {
    #[cfg(not(target_arch = "wasm32"))]
    return buf.par_chunks(size).map(f).collect();
    #[cfg(target_arch = "wasm32")]
    return buf.chunks(size).map(f).collect();
}
