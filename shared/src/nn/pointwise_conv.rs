//! The network's 1×1×1 convolutions (the decoder's channel halvings before each upsampling and
//! the final layer) in the page's wasm: a matrix product [Cout × Cin] · [Cin × voxels] on the
//! NCDHW buffers as they are, vectorised along the voxels.
//!
//! Flex computes them with the `gemm` crate, whose wasm build has only scalar kernels: V8's
//! profiler put 11 % of the page's CPU segmentation there (`--js-flags=--prof`, 240×240×155
//! phantom, docs/PERFORMANCE.md). Natively `gemm`'s AVX2 kernels stay.

use crate::nn::parallel::each_chunk_mut;

/// Output channels and voxels per register block: 4 × 8 sums (eight 128-bit vectors).
const CHANNELS: usize = 4;
const VOXELS: usize = 8;
/// Voxels per task (natively a task per core; in the page one after the other).
const CHUNK: usize = 4096;

/// y = w · x + b per voxel: `x` [n, cin, d, h, w] and the result [n, cout, d, h, w], `weight`
/// [cout, cin] (a 1×1×1 kernel's values in order).
pub fn conv1x1(
    x: &[f32],
    [n, cin, d, h, w]: [usize; 5],
    weight: &[f32],
    cout: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    assert_eq!(x.len(), n * cin * d * h * w);
    assert_eq!(weight.len(), cout * cin);
    let voxels = d * h * w;
    // The kernel as [cin][cout rounded up to CHANNELS], zeros past cout.
    let rows = cout.div_ceil(CHANNELS) * CHANNELS;
    let mut packed = vec![0f32; cin * rows];
    for co in 0..cout {
        for ci in 0..cin {
            packed[ci * rows + co] = weight[co * cin + ci];
        }
    }
    let mut out = vec![0f32; n * cout * voxels];
    for b in 0..n {
        let x = &x[b * cin * voxels..][..cin * voxels];
        let y = &mut out[b * cout * voxels..][..cout * voxels];
        // Tasks by voxel range: each writes its range of every output channel.
        let mut staged = vec![0f32; voxels.div_ceil(CHUNK) * CHUNK * cout];
        each_chunk_mut(&mut staged, CHUNK * cout, |task, block| {
            let first = task * CHUNK;
            let count = CHUNK.min(voxels.saturating_sub(first));
            products(x, voxels, first, count, &packed, rows, cout, bias, block);
        });
        // The tasks' [co][CHUNK] blocks into the output's channel planes.
        for (task, block) in staged.chunks(CHUNK * cout).enumerate() {
            let first = task * CHUNK;
            let count = CHUNK.min(voxels.saturating_sub(first));
            for co in 0..cout {
                y[co * voxels + first..][..count].copy_from_slice(&block[co * CHUNK..][..count]);
            }
        }
    }
    out
}

/// The outputs of voxels `first..first + count` as [cout][CHUNK] in `block`.
#[allow(clippy::too_many_arguments)]
fn products(
    x: &[f32],
    voxels: usize,
    first: usize,
    count: usize,
    packed: &[f32],
    rows: usize,
    cout: usize,
    bias: Option<&[f32]>,
    block: &mut [f32],
) {
    let cin = x.len() / voxels;
    let bias_of = |co: usize| bias.map_or(0.0, |b| b[co]);
    let whole = count / VOXELS * VOXELS;
    for v0 in (0..whole).step_by(VOXELS) {
        for c0 in (0..rows).step_by(CHANNELS) {
            let mut acc = [[0f32; VOXELS]; CHANNELS];
            for ci in 0..cin {
                let xs: &[f32; VOXELS] = x[ci * voxels + first + v0..][..VOXELS]
                    .try_into()
                    .expect("VOXELS values");
                let ws: &[f32; CHANNELS] = packed[ci * rows + c0..][..CHANNELS]
                    .try_into()
                    .expect("CHANNELS values");
                for (acc, w) in acc.iter_mut().zip(ws) {
                    for (acc, x) in acc.iter_mut().zip(xs) {
                        *acc += w * x;
                    }
                }
            }
            for (c, acc) in acc.iter().enumerate().take(cout.saturating_sub(c0)) {
                let co = c0 + c;
                let b = bias_of(co);
                for (out, acc) in block[co * CHUNK + v0..][..VOXELS].iter_mut().zip(acc) {
                    *out = acc + b;
                }
            }
        }
    }
    // The last voxels, fewer than a block.
    for v in whole..count {
        for co in 0..cout {
            let sum: f32 = (0..cin)
                .map(|ci| packed[ci * rows + co] * x[ci * voxels + first + v])
                .sum();
            block[co * CHUNK + v] = sum + bias_of(co);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::direct_conv::tests::{random, worst_against_flex};
    use burn::tensor::ops::ConvOptions;

    /// Against flex's own convolution: the network's shapes (16 → 3 at the end, halvings in the
    /// decoder), output channels that do not fill a register block, voxel counts that do not
    /// fill a block or a task, a batch of two, with and without a bias.
    #[test]
    fn the_pointwise_convolution_matches_flex() {
        for (n, cin, cout, [d, h, w], with_bias) in [
            (1, 16, 3, [9, 10, 11], true),
            (1, 32, 16, [5, 6, 7], true),
            (2, 8, 5, [3, 40, 37], false),
            (1, 4, 8, [1, 1, 3], true),
        ] {
            let x = random(n * cin * d * h * w);
            let wt = random(cout * cin);
            let bias = random(cout);
            let bias = with_bias.then_some(&bias[..]);
            let ours = conv1x1(&x, [n, cin, d, h, w], &wt, cout, bias);
            let options = ConvOptions::new([1, 1, 1], [0, 0, 0], [1, 1, 1], 1);
            let worst =
                worst_against_flex(&ours, &x, [n, cin, d, h, w], (&wt, cout), bias, options);
            assert!(
                worst < 1e-5,
                "({n}, {cin}→{cout}, {d}×{h}×{w}): differs by {worst}"
            );
        }
    }
}
