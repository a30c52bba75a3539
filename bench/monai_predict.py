"""MONAI's side of the `nvnet predict` benchmark: the same pipeline on the same case and network.

    python bench/monai_predict.py --case DIR --weights model.pt --roi 144,176,136 --threads 2

NormalizeIntensity(nonzero, channel_wise) -> CropForeground(x != 0, k_divisible=8) ->
sliding_window_inference(roi, overlap 0.5, gaussian) -> sigmoid, without test-time flips, on a
BraTS-layout case folder read with nibabel. Prints the wall time of the pipeline (reading the files
included, as for nvnet) and the peak resident memory of the process.
With --save-model PATH it only writes a seeded random SegResNet state dict (for nvnet import).
"""
import argparse
import glob
import os
import resource
import time

import torch
from monai.networks.nets import SegResNet

p = argparse.ArgumentParser()
p.add_argument("--case")
p.add_argument("--weights")
p.add_argument("--init-filters", type=int, default=16)
p.add_argument("--roi", default="144,176,136")
p.add_argument("--threads", type=int, default=2)
p.add_argument("--save-model")
a = p.parse_args()
torch.set_num_threads(a.threads)

net = SegResNet(spatial_dims=3, init_filters=a.init_filters, in_channels=4, out_channels=3,
                blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), upsample_mode="nontrainable")
if a.save_model:
    torch.manual_seed(0)
    net = SegResNet(spatial_dims=3, init_filters=a.init_filters, in_channels=4, out_channels=3,
                    blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), upsample_mode="nontrainable")
    torch.save(net.state_dict(), a.save_model)
    raise SystemExit(0)

import nibabel as nib
import numpy as np
from monai.inferers import sliding_window_inference
from monai.transforms import CropForeground, NormalizeIntensity

net.load_state_dict(torch.load(a.weights))
net.eval()
roi = tuple(int(v) for v in a.roi.split(","))
t = time.perf_counter()
files = {m: glob.glob(os.path.join(a.case, f"*_{m}.nii*"))[0] for m in ["t1", "t1ce", "t2", "flair"]}
x = np.stack([nib.load(files[m]).get_fdata(dtype=np.float32) for m in ["t1", "t1ce", "t2", "flair"]])
x = NormalizeIntensity(nonzero=True, channel_wise=True)(torch.from_numpy(x))
crop = CropForeground(select_fn=lambda v: v != 0, k_divisible=8)
box = crop(x)
with torch.no_grad():
    prob = torch.sigmoid(sliding_window_inference(box[None].float(), roi, 1, net, overlap=0.5,
                                                  mode="gaussian"))
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"monai {__import__('monai').__version__} torch {torch.__version__}: box {tuple(box.shape[1:])} "
      f"roi {roi}: {dt:.1f} s, peak RSS {peak:.0f} MiB ({a.threads} threads)")
