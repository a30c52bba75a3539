"""Training steps of MONAI's SegResNet (or SegResNetVAE): the PyTorch side of nvnet's training
benchmarks.

CPU, against `cargo run --release -p nvnet --features autodiff --example train_step -- F D,H,W`:

    python bench/monai_train_step.py --init-filters 8 --shape 64,80,64 --steps 4 --threads 2

GPU, against `nvnet --device cuda train` with the paper's recipe (F=32, VAE, 160x192x128 crops):

    python bench/monai_train_step.py --device cuda --vae --init-filters 32 --shape 160,192,128 \
        --steps 100 --precision bf16

Same work per step: batch 1, random input, sigmoid soft Dice (squared denominator) against a
random target (plus MONAI's VAE loss with --vae), backward, Adam. `--precision bf16` is PyTorch
AMP (autocast to bfloat16, weights and optimizer in f32). PyTorch's defaults are kept: cuDNN may
use TF32 for f32 convolutions.
"""
import argparse
import time

import torch
from monai.losses import DiceLoss
from monai.networks.nets import SegResNet, SegResNetVAE

p = argparse.ArgumentParser()
p.add_argument("--init-filters", type=int, default=8)
p.add_argument("--shape", default="64,80,64")
p.add_argument("--steps", type=int, default=4)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--device", default="cpu")
p.add_argument("--vae", action="store_true", help="SegResNetVAE (the paper's VAE branch)")
p.add_argument("--precision", choices=["f32", "bf16"], default="f32")
p.add_argument("--quiet", action="store_true", help="only the summary line")
a = p.parse_args()
torch.set_num_threads(a.threads)
dev = torch.device(a.device)
shape = [int(s) for s in a.shape.split(",")]
common = dict(spatial_dims=3, init_filters=a.init_filters, in_channels=4, out_channels=3,
              blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), dropout_prob=0.2)
if a.vae:
    net = SegResNetVAE(input_image_size=shape, vae_estimate_std=True, **common)
else:
    net = SegResNet(**common)
net = net.to(dev).train()
opt = torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=1e-5)
loss_fn = DiceLoss(sigmoid=True, squared_pred=True, smooth_nr=0, smooth_dr=1e-5)
x = torch.randn(1, 4, *shape, device=dev)
y = (torch.rand(1, 3, *shape, device=dev) < 0.1).float()


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


times = []
for step in range(a.steps):
    sync()
    t = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16"):
        out = net(x)
        if a.vae:
            seg, vae_loss = out
            loss = loss_fn(seg.float(), y) + 0.1 * vae_loss.float()
        else:
            loss = loss_fn(out.float(), y)
    loss.backward()
    opt.step()
    value = loss.item()  # as nvnet reads its loss every step
    sync()
    dt = time.perf_counter() - t
    if not a.quiet:
        print(f"step {step}: loss {value:.4f}, {dt:.3f} s")
    if step:
        times.append(dt)
times.sort()
memory = ""
if dev.type == "cuda":
    memory = (f", peak allocated {torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB"
              f", reserved {torch.cuda.max_memory_reserved(dev) / 2**30:.2f} GiB")
where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{a.threads} CPU threads"
print(f"pytorch {torch.__version__} training step {'SegResNetVAE' if a.vae else 'SegResNet'} "
      f"F={a.init_filters} at {shape} {a.precision}: median {times[len(times)//2]:.3f} s, "
      f"mean {sum(times) / len(times):.3f} s over {len(times)} steps after one warm-up{memory} ({where})")
