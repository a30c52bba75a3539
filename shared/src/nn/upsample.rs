//! Trilinear ×2 upsampling with PyTorch's `align_corners = false` semantics.
//!
//! Burn has no 3-D interpolation, so this is written with slicing, concatenation and
//! reshapes only: it runs on every backend (flex, wgpu, webgpu, cuda) and under autodiff.
//!
//! For a scale factor of exactly 2 the source coordinate of output `j` is `(j + 0.5) / 2 - 0.5`,
//! so output `2i` blends `0.75·x[i] + 0.25·x[i-1]` and output `2i+1` blends
//! `0.75·x[i] + 0.25·x[i+1]`, with indices clamped at the borders (PyTorch clamps a negative
//! source coordinate to 0 and the upper neighbour to `n-1`). Trilinear is separable, so the
//! three axes are upsampled one after the other.

use burn::prelude::*;

/// Upsample a `[B, C, D, H, W]` tensor by 2 along the three spatial axes.
pub fn upsample_trilinear_x2<B: Backend>(x: Tensor<B, 5>) -> Tensor<B, 5> {
    #[cfg(all(feature = "flex", any(feature = "autodiff", target_arch = "wasm32")))]
    let x = match crate::nn::flex_infer::upsample_trilinear_x2(x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let x = upsample_axis(x, 2);
    let x = upsample_axis(x, 3);
    upsample_axis(x, 4)
}

/// Linear ×2 upsampling along one axis (`align_corners = false`).
pub fn upsample_axis<B: Backend>(x: Tensor<B, 5>, axis: usize) -> Tensor<B, 5> {
    let dims = x.dims();
    let n = dims[axis];
    let (prev, next) = if n > 1 {
        (
            Tensor::cat(
                vec![
                    x.clone().narrow(axis, 0, 1),
                    x.clone().narrow(axis, 0, n - 1),
                ],
                axis,
            ),
            Tensor::cat(
                vec![
                    x.clone().narrow(axis, 1, n - 1),
                    x.clone().narrow(axis, n - 1, 1),
                ],
                axis,
            ),
        )
    } else {
        (x.clone(), x.clone())
    };
    let even = x.clone().mul_scalar(0.75) + prev.mul_scalar(0.25);
    let odd = x.mul_scalar(0.75) + next.mul_scalar(0.25);
    // Interleave: [.., n, 2, ..] read in C order is [.., 2n, ..].
    let pairs: Tensor<B, 6> = Tensor::stack(vec![even, odd], axis + 1);
    let mut out = dims;
    out[axis] = 2 * n;
    pairs.reshape(out)
}

#[cfg(all(test, feature = "flex", feature = "autodiff"))]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    /// The buffer version gives the tensor version's values exactly, on odd sizes and a length
    /// of one.
    #[test]
    fn upsampling_on_flex_buffers_equals_the_tensor_version() {
        let device = Default::default();
        for dims in [[1, 3, 4, 5, 6], [2, 2, 1, 3, 2]] {
            let x = Tensor::<Flex, 5>::random(dims, Distribution::Normal(0.0, 1.0), &device);
            let ours = upsample_trilinear_x2(x.clone());
            let theirs = upsample_axis(upsample_axis(upsample_axis(x, 2), 3), 4);
            assert_eq!(ours.dims(), theirs.dims());
            assert_eq!(ours.into_data(), theirs.into_data(), "{dims:?}");
        }
    }
}
