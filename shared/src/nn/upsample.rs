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
    #[cfg(all(feature = "flex", feature = "autodiff", not(target_arch = "wasm32")))]
    let x = match on_flex(x) {
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

/// On flex (inference): the same three passes written on the buffers, a channel's volume per
/// task (the slicing and concatenation above copy the feature map several times per axis on
/// the CPU: 13 % of a forward pass at 144×176×112, perf).
#[cfg(all(feature = "flex", feature = "autodiff", not(target_arch = "wasm32")))]
fn on_flex<B: Backend>(x: Tensor<B, 5>) -> Result<Tensor<B, 5>, Tensor<B, 5>> {
    use crate::nn::conv_grad::{cast, same};
    use burn::backend::Flex;
    use burn::tensor::TensorPrimitive;
    use rayon::prelude::*;

    let x: Tensor<Flex, 5> = cast(x)?;
    let [n, c, d, h, w] = x.dims();
    let t = x.into_primitive().tensor().to_contiguous();
    let Some(src) = t.as_slice::<f32>() else {
        return Err(same(Tensor::<Flex, 5>::from_primitive(
            TensorPrimitive::Float(t),
        )));
    };
    let volume = d * h * w;
    let mut out = vec![0f32; n * c * 8 * volume];
    out.par_chunks_mut(8 * volume)
        .zip(src.par_chunks(volume))
        .for_each(|(dst, src)| {
            // D, then H, then W, as the tensor version (the rounding follows the order).
            let mut along_d = vec![0f32; 2 * volume];
            linear_x2(src, &mut along_d, 1, d, h * w);
            let mut along_h = vec![0f32; 4 * volume];
            linear_x2(&along_d, &mut along_h, 2 * d, h, w);
            linear_x2(&along_h, dst, 4 * d * h, w, 1);
        });
    let y = burn::backend::flex::FlexTensor::from_data(TensorData::new(
        out,
        [n, c, 2 * d, 2 * h, 2 * w],
    ));
    Ok(same(Tensor::<Flex, 5>::from_primitive(
        TensorPrimitive::Float(y),
    )))
}

/// Linear ×2 along an axis of `len` values `inner` apart, in `outer` blocks: as
/// [`upsample_axis`], value for value.
#[cfg(all(feature = "flex", feature = "autodiff", not(target_arch = "wasm32")))]
fn linear_x2(src: &[f32], dst: &mut [f32], outer: usize, len: usize, inner: usize) {
    for o in 0..outer {
        for i in 0..len {
            let (prev, next) = (i.saturating_sub(1), (i + 1).min(len - 1));
            let at = |j: usize| (o * len + j) * inner;
            let (even, odd) = (
                (o * 2 * len + 2 * i) * inner,
                (o * 2 * len + 2 * i + 1) * inner,
            );
            for k in 0..inner {
                let x = src[at(i) + k];
                dst[even + k] = x * 0.75 + src[at(prev) + k] * 0.25;
                dst[odd + k] = x * 0.75 + src[at(next) + k] * 0.25;
            }
        }
    }
}

#[cfg(all(
    test,
    feature = "flex",
    feature = "autodiff",
    not(target_arch = "wasm32")
))]
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
