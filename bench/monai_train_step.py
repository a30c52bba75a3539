"""One training step of MONAI's SegResNet on the CPU: the PyTorch side of
`cargo run --release -p nvnet --features autodiff --example train_step -- F D,H,W`.

    python bench/monai_train_step.py --init-filters 8 --shape 64,80,64 --steps 4 --threads 2

Same work per step: batch 1, random input, sigmoid soft Dice (squared denominator) against a
random target, backward, Adam.
"""
import argparse
import time

import torch
from monai.losses import DiceLoss
from monai.networks.nets import SegResNet

p = argparse.ArgumentParser()
p.add_argument("--init-filters", type=int, default=8)
p.add_argument("--shape", default="64,80,64")
p.add_argument("--steps", type=int, default=4)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)
shape = [int(s) for s in a.shape.split(",")]
net = SegResNet(spatial_dims=3, init_filters=a.init_filters, in_channels=4, out_channels=3,
                blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), dropout_prob=0.2).train()
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
loss_fn = DiceLoss(sigmoid=True, squared_pred=True, smooth_nr=0, smooth_dr=1e-5)
x = torch.randn(1, 4, *shape)
y = (torch.rand(1, 3, *shape) < 0.1).float()
times = []
for step in range(a.steps):
    t = time.perf_counter()
    opt.zero_grad()
    loss = loss_fn(net(x), y)
    fwd = time.perf_counter() - t
    loss.backward()
    opt.step()
    dt = time.perf_counter() - t
    print(f"step {step}: forward {fwd:.2f} s, total {dt:.2f} s")
    if step:
        times.append(dt)
times.sort()
print(f"pytorch {torch.__version__} training step F={a.init_filters} at {shape}: median {times[len(times)//2]:.3f} s "
      f"({a.threads} CPU threads)")
