//! The gradients of a training batch, on one device or split across several of one backend
//! (`nvnet train --devices cuda:0,cuda:1`).
//!
//! Several devices use Burn's own multi-device training, the scheme of burn-train's
//! `MultiDevicesTrainStep` with its optimizer on the main device: one thread per device runs the
//! forward and backward pass of its share of the batch on a fork of the model
//! (`Module::fork`), `GradientsParams::to_device` brings each device's gradients to the first
//! device and `GradientsAccumulator` sums them there for one optimizer step. Each share's loss is
//! weighted by its share of the samples, so the sum is the gradient of the batch-mean loss: the
//! same step as the whole batch on one device (every loss term is a mean over samples, and
//! GroupNorm works per sample). `--batch-size` stays the whole batch, so a recipe means the same
//! on any number of devices.
//!
//! Moving the model and the gradients between devices is Burn's `to_device` (burn-cuda copies
//! device to device with NCCL), except on wgpu: Burn 0.21's wgpu server has no device-to-device
//! copy (its `comm_init`/`send`/`recv` are `unimplemented!`, and burn-cubecl's `to_device` calls
//! them regardless), so there the tensors go through host memory ([`Transfer::Host`]).
//!
//! Backends keep one random generator for all devices, so with dropout or the VAE the devices'
//! draws interleave in thread order: a multi-device run is not bit-repeatable (one device is).

use std::sync::mpsc;
use std::thread::JoinHandle;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::backend::AutodiffBackend;

use crate::NvNet;
use crate::nn::loss::SegLoss;

/// The shape of a step's samples and its loss.
#[derive(Debug, Clone, Copy)]
pub struct StepSpec {
    pub channels: usize,
    pub regions: usize,
    pub crop: [usize; 3],
    pub loss: SegLoss,
    pub dice_smooth: f64,
}

/// The losses of a step (batch means).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLosses {
    pub total: f64,
    pub dice: f64,
    pub l2: Option<f64>,
    pub kl: Option<f64>,
}

/// A batch: `n` inputs (channels × crop) and targets (regions × crop), network order. A
/// device's share of a batch is a batch too.
#[derive(Clone)]
pub struct Batch {
    pub n: usize,
    pub input: Vec<f32>,
    pub target: Vec<f32>,
}

impl Batch {
    /// Split into at most `parts` consecutive shares of near-equal size (none empty).
    pub fn split(self, parts: usize, spec: &StepSpec) -> Vec<Batch> {
        let m: usize = spec.crop.iter().product();
        let (xs, ys) = (spec.channels * m, spec.regions * m);
        let parts = parts.clamp(1, self.n.max(1));
        let (base, extra) = (self.n / parts, self.n % parts);
        let mut out = Vec::with_capacity(parts);
        let mut at = 0;
        for p in 0..parts {
            let n = base + usize::from(p < extra);
            out.push(Batch {
                n,
                input: self.input[at * xs..(at + n) * xs].to_vec(),
                target: self.target[at * ys..(at + n) * ys].to_vec(),
            });
            at += n;
        }
        out
    }
}

/// Forward and backward of one share on `device`, its loss scaled by `weight`; the losses
/// reported unscaled.
fn share_gradients<B: AutodiffBackend>(
    model: &NvNet<B>,
    share: Batch,
    weight: f64,
    spec: &StepSpec,
    device: &B::Device,
) -> (GradientsParams, StepLosses) {
    let [cx, cy, cz] = spec.crop;
    let x = Tensor::<B, 5>::from_data(
        TensorData::new(share.input, [share.n, spec.channels, cx, cy, cz]),
        device,
    );
    let y = Tensor::<B, 5>::from_data(
        TensorData::new(share.target, [share.n, spec.regions, cx, cy, cz]),
        device,
    );
    let out = model.forward_train(x.clone());
    let terms = crate::nn::loss::nvnet_loss(out, x, y, spec.loss, spec.dice_smooth);
    let scalar = |t: &Tensor<B, 1>| t.clone().into_scalar().elem::<f64>();
    let losses = StepLosses {
        total: scalar(&terms.total),
        dice: scalar(&terms.dice),
        l2: terms.l2.as_ref().map(scalar),
        kl: terms.kl.as_ref().map(scalar),
    };
    let total = if weight == 1.0 {
        terms.total
    } else {
        terms.total.mul_scalar(weight)
    };
    (GradientsParams::from_grads(total.backward(), model), losses)
}

/// How the model and the gradients move between devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// Burn's `Module::fork` and `GradientsParams::to_device`.
    Burn,
    /// Through host memory, for backends whose device-to-device copy Burn 0.21 lacks (wgpu).
    Host,
}

/// `Module::fork` through host memory: each parameter read back and uploaded to `device`, still
/// a leaf that takes gradients.
struct ForkThroughHost<'a, B: Backend> {
    device: &'a B::Device,
}

impl<B: AutodiffBackend> ModuleMapper<B> for ForkThroughHost<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.map(|tensor| {
            let require_grad = tensor.is_require_grad();
            let moved = if tensor.device() == *self.device {
                tensor.detach()
            } else {
                Tensor::<B, D>::from_data(tensor.into_data(), self.device)
            };
            if require_grad {
                moved.require_grad()
            } else {
                moved
            }
        })
    }
}

/// `GradientsParams::to_device` through host memory.
struct GradientsThroughHost<'a, B: AutodiffBackend> {
    device: &'a B::Device,
    grads: &'a mut GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradientsThroughHost<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            if grad.device() == *self.device {
                self.grads.register::<B::InnerBackend, D>(param.id, grad);
                return;
            }
            let moved = Tensor::<B::InnerBackend, D>::from_data(grad.into_data(), self.device);
            self.grads.register::<B::InnerBackend, D>(param.id, moved);
        }
    }
}

impl Transfer {
    fn fork<B: AutodiffBackend>(self, model: NvNet<B>, device: &B::Device) -> NvNet<B> {
        match self {
            Transfer::Burn => model.fork(device),
            Transfer::Host => model.map(&mut ForkThroughHost { device }),
        }
    }

    fn gradients_to<B: AutodiffBackend>(
        self,
        mut grads: GradientsParams,
        device: &B::Device,
        model: &NvNet<B>,
    ) -> GradientsParams {
        match self {
            Transfer::Burn => grads.to_device(device, model),
            Transfer::Host => {
                model.visit(&mut GradientsThroughHost::<B> {
                    device,
                    grads: &mut grads,
                });
                grads
            }
        }
    }
}

/// A training device that could not be used or failed during a step.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("no device to train on")]
    None,
    #[error("device {0} is listed twice")]
    Twice(String),
    #[error("a thread for {device}: {error}")]
    Thread {
        device: String,
        error: std::io::Error,
    },
    #[error("a training device's thread has stopped")]
    Stopped,
    /// A backend panic (out of memory, a driver error) during the step on that device.
    #[error("device {device}: {message}")]
    Failed { device: String, message: String },
    #[error("moving gradients to {device}: {message}")]
    Transfer { device: String, message: String },
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

struct Job<B: AutodiffBackend> {
    model: NvNet<B>,
    share: Batch,
    weight: f64,
}

type Outcome = Result<(GradientsParams, StepLosses), DeviceError>;

/// A thread that owns one device.
struct Worker<B: AutodiffBackend> {
    jobs: Option<mpsc::Sender<Job<B>>>,
    results: mpsc::Receiver<Outcome>,
    thread: Option<JoinHandle<()>>,
}

impl<B: AutodiffBackend> Worker<B> {
    fn start(
        index: usize,
        device: B::Device,
        spec: StepSpec,
        transfer: Transfer,
    ) -> Result<Self, DeviceError> {
        let (jobs, inbox) = mpsc::channel::<Job<B>>();
        let (outbox, results) = mpsc::channel();
        let device_name = format!("{device:?}");
        // Named, so that a panic message says which device.
        let thread = std::thread::Builder::new()
            .name(format!("nvnet-device-{index}"))
            .spawn(move || {
                while let Ok(job) = inbox.recv() {
                    // A backend panic (out of memory, a driver error) becomes this step's error
                    // instead of a hung trainer.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let model = transfer.fork(job.model, &device);
                        share_gradients(&model, job.share, job.weight, &spec, &device)
                    }))
                    .map_err(|panic| DeviceError::Failed {
                        device: format!("{device:?}"),
                        message: panic_text(panic.as_ref()),
                    });
                    if outbox.send(outcome).is_err() {
                        return;
                    }
                }
            })
            .map_err(|error| DeviceError::Thread {
                device: device_name,
                error,
            })?;
        Ok(Worker {
            jobs: Some(jobs),
            results,
            thread: Some(thread),
        })
    }
}

impl<B: AutodiffBackend> Drop for Worker<B> {
    fn drop(&mut self) {
        self.jobs.take(); // closes the channel: the thread ends after its job
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The devices of a run; the first holds the model and the optimizer.
pub struct Devices<B: AutodiffBackend> {
    devices: Vec<B::Device>,
    spec: StepSpec,
    transfer: Transfer,
    /// One per device when there are several; none for one device (it runs in the caller's
    /// thread).
    workers: Vec<Worker<B>>,
}

impl<B: AutodiffBackend> Devices<B> {
    pub fn new(
        devices: Vec<B::Device>,
        spec: StepSpec,
        transfer: Transfer,
    ) -> Result<Self, DeviceError> {
        if devices.is_empty() {
            return Err(DeviceError::None);
        }
        for (i, d) in devices.iter().enumerate() {
            if devices[..i].contains(d) {
                return Err(DeviceError::Twice(format!("{d:?}")));
            }
        }
        let workers = if devices.len() > 1 {
            devices
                .iter()
                .enumerate()
                .map(|(i, d)| Worker::start(i, d.clone(), spec, transfer))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        Ok(Devices {
            devices,
            spec,
            transfer,
            workers,
        })
    }

    /// Where the model, the optimizer state and validation live.
    pub fn main(&self) -> &B::Device {
        &self.devices[0]
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The gradients of the batch-mean loss, on the main device, and the batch-mean losses.
    pub fn gradients(
        &self,
        model: &NvNet<B>,
        batch: Batch,
    ) -> Result<(GradientsParams, StepLosses), DeviceError> {
        if self.workers.is_empty() {
            return Ok(share_gradients(model, batch, 1.0, &self.spec, self.main()));
        }
        let n = batch.n as f64;
        let shares = batch.split(self.workers.len(), &self.spec);
        let mut sent = Vec::with_capacity(shares.len());
        for (worker, share) in self.workers.iter().zip(shares) {
            let weight = share.n as f64 / n;
            let job = Job {
                model: model.clone(),
                share,
                weight,
            };
            let jobs = worker.jobs.as_ref().expect("open until drop");
            jobs.send(job).map_err(|_| DeviceError::Stopped)?;
            sent.push((worker, weight));
        }
        // Collected in device order, so that the sum is the same every run.
        let mut accumulator = GradientsAccumulator::<NvNet<B>>::new();
        let mut losses = StepLosses {
            total: 0.0,
            dice: 0.0,
            l2: None,
            kl: None,
        };
        let mut first_error = None;
        for (worker, weight) in sent {
            match worker.results.recv() {
                Ok(Ok((grads, l))) => {
                    // Reading gradients back can fail in the backend (a panic): make it this
                    // step's error.
                    let moved = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let grads = self.transfer.gradients_to(grads, self.main(), model);
                        accumulator.accumulate(model, grads);
                    }));
                    if let Err(panic) = moved {
                        first_error.get_or_insert(DeviceError::Transfer {
                            device: format!("{:?}", self.main()),
                            message: panic_text(panic.as_ref()),
                        });
                        continue;
                    }
                    losses.total += weight * l.total;
                    losses.dice += weight * l.dice;
                    losses.l2 = l.l2.map(|v| losses.l2.unwrap_or(0.0) + weight * v);
                    losses.kl = l.kl.map(|v| losses.kl.unwrap_or(0.0) + weight * v);
                }
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(DeviceError::Stopped);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok((accumulator.grads(), losses)),
        }
    }
}

#[cfg(all(test, feature = "flex", feature = "autodiff"))]
mod tests {
    use super::*;

    #[test]
    fn shares_are_consecutive_and_near_equal() {
        let spec = StepSpec {
            channels: 1,
            regions: 1,
            crop: [1, 1, 2],
            loss: SegLoss::Dice,
            dice_smooth: 0.0,
        };
        let batch = Batch {
            n: 5,
            input: (0..10).map(|v| v as f32).collect(),
            target: (10..20).map(|v| v as f32).collect(),
        };
        let shares = batch.split(3, &spec);
        assert_eq!(
            shares.iter().map(|s| s.n).collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
        assert_eq!(shares[1].input, vec![4.0, 5.0, 6.0, 7.0]);
        assert_eq!(shares[2].target, vec![18.0, 19.0]);
        // More devices than samples: no empty share.
        let one = Batch {
            n: 1,
            input: vec![0.0; 2],
            target: vec![0.0; 2],
        };
        assert_eq!(one.split(4, &spec).len(), 1);
    }
}
