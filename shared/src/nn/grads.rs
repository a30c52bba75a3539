//! The backends that train with nvnet's own gradients, listed once.
//!
//! Training takes two backward passes from nvnet rather than from Burn 0.21: the 3-D
//! convolution's (`conv_grad`: Burn's weight gradient is wrong on wgpu beyond 16³ maps) and
//! GroupNorm's (`norm_grad`: a third of the memory). The model calls them through
//! `conv_grad::try_conv3d` and `norm_grad::try_group_norm`, generic over the backend; those ask
//! `on_gpu` here to run the operation on `Autodiff<I>` for the listed backend `I` that the model's
//! backend is. `Autodiff<Flex>` has its own CPU kernels (`cpu_grad`). Any other autodiff backend
//! would train with Burn's gradients: `train::run` refuses it (`trains_with_own_gradients`).
//!
//! The library's unit tests run on flex only, so their build leaves the GPU backends out: the
//! GPU kernels instantiated here are most of the library's compile time, and the unit-test
//! harness would compile them a second time (docs/PERFORMANCE.md, "Tests and CI").

use std::any::TypeId;

use burn::backend::Autodiff;
use burn::prelude::*;

use crate::nn::conv_grad::ConvGrads;

/// An operation with nvnet's backward, on whatever backend `B` turns out to be.
pub(crate) trait OnAutodiff<B: Backend>: Sized {
    /// The operation on `Autodiff<I>` when `B` is that type; `Err(self)` back otherwise.
    fn on<I: ConvGrads>(self) -> Result<Tensor<B, 5>, Self>;
}

macro_rules! gpu_backends {
    ($($feature:literal: $backend:ty),* $(,)?) => {
        $(
            /// Burn's input gradient, nvnet's weight gradient by taps.
            #[cfg(all(feature = $feature, not(test)))]
            impl ConvGrads for $backend {
                fn input_grad(
                    x: burn::tensor::ops::FloatTensor<Self>,
                    w: burn::tensor::ops::FloatTensor<Self>,
                    grad: burn::tensor::ops::FloatTensor<Self>,
                    options: burn::tensor::ops::ConvOptions<3>,
                ) -> burn::tensor::ops::FloatTensor<Self> {
                    <$backend as burn::tensor::ops::ModuleOps<$backend>>::conv3d_x_backward(
                        x, w, grad, options,
                    )
                }
                fn weight_grad(
                    x: burn::tensor::ops::FloatTensor<Self>,
                    grad: burn::tensor::ops::FloatTensor<Self>,
                    k: [usize; 3],
                    options: &burn::tensor::ops::ConvOptions<3>,
                ) -> burn::tensor::ops::FloatTensor<Self> {
                    crate::nn::conv_grad::weight_grad_by_taps::<$backend>(
                        crate::nn::conv_grad::tensor(x),
                        crate::nn::conv_grad::tensor(grad),
                        k,
                        options,
                    )
                    .into_primitive()
                    .tensor()
                }
            }
        )*

        /// `op` on the listed GPU backend that `B` is `Autodiff` of; `Err(op)` when none is.
        pub(crate) fn on_gpu<B: Backend, Op: OnAutodiff<B>>(op: Op) -> Result<Tensor<B, 5>, Op> {
            $(
                #[cfg(all(feature = $feature, not(test)))]
                let op = match op.on::<$backend>() {
                    Ok(y) => return Ok(y),
                    Err(op) => op,
                };
            )*
            Err(op)
        }

        /// Whether training on `B` takes nvnet's gradients: `Autodiff` of flex (native) or of a
        /// listed GPU backend.
        pub fn trains_with_own_gradients<B: Backend>() -> bool {
            let b = TypeId::of::<B>();
            #[cfg(all(feature = "flex", not(target_arch = "wasm32")))]
            if b == TypeId::of::<Autodiff<burn::backend::Flex>>() {
                return true;
            }
            $(
                #[cfg(all(feature = $feature, not(test)))]
                if b == TypeId::of::<Autodiff<$backend>>() {
                    return true;
                }
            )*
            false
        }
    };
}

gpu_backends!(
    "wgpu": crate::device::backend::Wgpu,
    "cuda": burn::backend::Cuda<f32>,
    "cuda": burn::backend::Cuda<burn::tensor::bf16>,
    "cuda": burn::backend::Cuda<burn::tensor::f16>,
);

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;

    #[test]
    fn flex_trains_with_own_gradients_and_inference_backends_do_not() {
        assert!(trains_with_own_gradients::<Autodiff<burn::backend::Flex>>());
        assert!(!trains_with_own_gradients::<burn::backend::Flex>());
    }
}
