//! Exchanges between channel planes (NCDHW, one channel's voxels consecutive) and interleaved
//! channels (one voxel's channels consecutive), four channels at a time through 4×4 SIMD
//! transposes: the direct convolution reads its input interleaved and writes its output in
//! planes, and one value at a time these copies were a tenth of its time in the page. Built
//! where `direct_conv` is: x86-64 (SSE is part of it) and wasm with SIMD.

/// `dst[x·stride + i] = rows[i][x]` for every x < `len` and i < 4; with `norm`, the value
/// `relu(rows[i][x]·a_i + b_i)` instead (a GroupNorm and its ReLU applied as the values are
/// copied: `flex_infer::channel_affine`).
pub fn interleave4(
    rows: [&[f32]; 4],
    len: usize,
    dst: &mut [f32],
    stride: usize,
    norm: Option<[(f32, f32); 4]>,
) {
    assert!(rows.iter().all(|r| r.len() >= len));
    assert!(stride >= 4 && (len == 0 || dst.len() >= (len - 1) * stride + 4));
    let quads = len / 4;
    let affine = norm.map(|n| n.map(|(a, b)| (splat(a), splat(b))));
    for q in 0..quads {
        let x = 4 * q;
        // SAFETY: x + 3 < len ≤ each row's length; the stores end at (x + 3)·stride + 4 ≤
        // dst.len().
        unsafe {
            let t = transpose(std::array::from_fn(|i| {
                let v = load(rows[i].as_ptr().add(x));
                match affine {
                    Some(affine) => norm_relu(v, affine[i]),
                    None => v,
                }
            }));
            for (j, t) in t.into_iter().enumerate() {
                store(dst.as_mut_ptr().add((x + j) * stride), t);
            }
        }
    }
    for x in 4 * quads..len {
        for (i, row) in rows.iter().enumerate() {
            dst[x * stride + i] = match norm {
                Some(norm) => relu_of(row[x] * norm[i].0 + norm[i].1),
                None => row[x],
            };
        }
    }
}

/// `rows[i][x] = src[x·stride + i]` for every x < `len` and i < 4: `interleave4`'s inverse.
pub fn deinterleave4(src: &[f32], stride: usize, len: usize, mut rows: [&mut [f32]; 4]) {
    assert!(rows.iter().all(|r| r.len() >= len));
    assert!(stride >= 4 && (len == 0 || src.len() >= (len - 1) * stride + 4));
    let quads = len / 4;
    for q in 0..quads {
        let x = 4 * q;
        // SAFETY: as in `interleave4`, with loads and stores exchanged.
        unsafe {
            let t = transpose(std::array::from_fn(|j| {
                load(src.as_ptr().add((x + j) * stride))
            }));
            for (row, t) in rows.iter_mut().zip(t) {
                store(row.as_mut_ptr().add(x), t);
            }
        }
    }
    for x in 4 * quads..len {
        for (i, row) in rows.iter_mut().enumerate() {
            row[x] = src[x * stride + i];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    pub use std::arch::x86_64::__m128 as V;
    use std::arch::x86_64::*;

    pub unsafe fn load(p: *const f32) -> V {
        unsafe { _mm_loadu_ps(p) }
    }

    pub unsafe fn store(p: *mut f32, v: V) {
        unsafe { _mm_storeu_ps(p, v) }
    }

    pub fn splat(a: f32) -> V {
        // SAFETY: SSE is part of x86-64.
        unsafe { _mm_set1_ps(a) }
    }

    /// `relu_of(x·a + b)` per lane: a multiply and an add, as the scalar form (no fused
    /// multiply-add), and 0 where the sum is not above 0 (NaN included).
    pub fn norm_relu(x: V, (a, b): (V, V)) -> V {
        // SAFETY: SSE is part of x86-64.
        unsafe {
            let y = _mm_add_ps(_mm_mul_ps(x, a), b);
            _mm_and_ps(_mm_cmpgt_ps(y, _mm_setzero_ps()), y)
        }
    }

    /// Row i, lane j → row j, lane i (SSE, which every x86-64 CPU has).
    pub fn transpose([a, b, c, d]: [V; 4]) -> [V; 4] {
        // SAFETY: SSE is part of x86-64.
        unsafe {
            let (ab_lo, ab_hi) = (_mm_unpacklo_ps(a, b), _mm_unpackhi_ps(a, b));
            let (cd_lo, cd_hi) = (_mm_unpacklo_ps(c, d), _mm_unpackhi_ps(c, d));
            [
                _mm_movelh_ps(ab_lo, cd_lo),
                _mm_movehl_ps(cd_lo, ab_lo),
                _mm_movelh_ps(ab_hi, cd_hi),
                _mm_movehl_ps(cd_hi, ab_hi),
            ]
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod simd {
    pub use core::arch::wasm32::v128 as V;
    use core::arch::wasm32::*;

    pub unsafe fn load(p: *const f32) -> V {
        unsafe { v128_load(p as *const V) }
    }

    pub unsafe fn store(p: *mut f32, v: V) {
        unsafe { v128_store(p as *mut V, v) }
    }

    pub fn splat(a: f32) -> V {
        f32x4_splat(a)
    }

    /// `relu_of(x·a + b)` per lane (see the x86-64 version).
    pub fn norm_relu(x: V, (a, b): (V, V)) -> V {
        let y = f32x4_add(f32x4_mul(x, a), b);
        v128_and(f32x4_gt(y, f32x4_splat(0.0)), y)
    }

    /// Row i, lane j → row j, lane i.
    pub fn transpose([a, b, c, d]: [V; 4]) -> [V; 4] {
        let (ab_lo, ab_hi) = (
            i32x4_shuffle::<0, 4, 1, 5>(a, b),
            i32x4_shuffle::<2, 6, 3, 7>(a, b),
        );
        let (cd_lo, cd_hi) = (
            i32x4_shuffle::<0, 4, 1, 5>(c, d),
            i32x4_shuffle::<2, 6, 3, 7>(c, d),
        );
        [
            i32x4_shuffle::<0, 1, 4, 5>(ab_lo, cd_lo),
            i32x4_shuffle::<2, 3, 6, 7>(ab_lo, cd_lo),
            i32x4_shuffle::<0, 1, 4, 5>(ab_hi, cd_hi),
            i32x4_shuffle::<2, 3, 6, 7>(ab_hi, cd_hi),
        ]
    }
}

use crate::nn::flex_infer::relu_of;
use simd::{load, norm_relu, splat, store, transpose};

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length's SIMD quads and scalar tail, with strides wider than four, give the
    /// one-value-at-a-time result, and `deinterleave4` undoes `interleave4`.
    #[test]
    fn the_copies_match_the_definition_and_undo_each_other() {
        for len in [0, 1, 3, 4, 5, 8, 11] {
            for stride in [4, 8, 12] {
                let rows: Vec<Vec<f32>> = (0..4)
                    .map(|i| (0..len).map(|x| (100 * i + x) as f32).collect())
                    .collect();
                let mut dst = vec![-1f32; len * stride + 4];
                interleave4(
                    std::array::from_fn(|i| &rows[i][..]),
                    len,
                    &mut dst,
                    stride,
                    None,
                );
                for (k, v) in dst.iter().enumerate() {
                    let (x, i) = (k / stride, k % stride);
                    let want = if x < len && i < 4 { rows[i][x] } else { -1.0 };
                    assert_eq!(*v, want, "len {len} stride {stride} at {k}");
                }
                let mut back = vec![vec![0f32; len]; 4];
                {
                    let [a, b, c, d] = &mut back[..] else {
                        unreachable!()
                    };
                    deinterleave4(&dst, stride, len, [a, b, c, d]);
                }
                assert_eq!(back, rows, "len {len} stride {stride}");
            }
        }
    }

    /// With a normalisation, each value is relu(x·a + b) of its row's (a, b), exactly the
    /// scalar `relu_of`, NaN, -0 and values that land on either side of 0 included.
    #[test]
    fn the_normalised_copy_is_the_scalar_formula() {
        let len = 11;
        let values = [
            -2.0,
            -0.0,
            0.0,
            0.25,
            1.0,
            f32::NAN,
            3.5,
            -0.5,
            7.0,
            0.1,
            -1e-30,
        ];
        let rows: Vec<Vec<f32>> = (0..4)
            .map(|i| values.iter().map(|v| v * (i as f32 + 1.0)).collect())
            .collect();
        let norm = [(1.5, -0.2), (-0.8, 0.3), (0.0, 0.0), (2.0, f32::NAN)];
        let mut dst = vec![0f32; len * 5];
        interleave4(
            std::array::from_fn(|i| &rows[i][..]),
            len,
            &mut dst,
            5,
            Some(norm),
        );
        for x in 0..len {
            for (i, row) in rows.iter().enumerate() {
                let want = relu_of(row[x] * norm[i].0 + norm[i].1);
                let got = dst[x * 5 + i];
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "row {i}, x {x}: {got} vs {want}"
                );
            }
        }
    }
}
