"""Forward time of MONAI's SegResNet on the CPU, the PyTorch side of `nvnet bench`.

    python bench/monai_forward.py --init-filters 16 --shape 128,128,128 --runs 3 --threads 2
"""
import argparse
import time

import torch
from monai.networks.nets import SegResNet

p = argparse.ArgumentParser()
p.add_argument("--init-filters", type=int, default=16)
p.add_argument("--shape", default="128,128,128")
p.add_argument("--runs", type=int, default=3)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--device", default="cpu")
a = p.parse_args()
torch.set_num_threads(a.threads)
shape = [int(s) for s in a.shape.split(",")]
net = SegResNet(spatial_dims=3, init_filters=a.init_filters, in_channels=4, out_channels=3,
                blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1)).eval().to(a.device)
x = torch.randn(1, 4, *shape, device=a.device)
sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
times = []
with torch.no_grad():
    for run in range(a.runs + 1):
        t = time.perf_counter()
        net(x)
        sync()
        dt = time.perf_counter() - t
        print(f"run {run}{' (warm-up)' if run == 0 else ''}: {dt:.3f} s")
        if run:
            times.append(dt)
times.sort()
print(f"pytorch {torch.__version__} forward F={a.init_filters} at {shape}: median {times[len(times)//2]:.3f} s "
      f"over {a.runs} runs on {a.device} ({a.threads} CPU threads)")
