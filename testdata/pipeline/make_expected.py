"""The expectation for nvnet's whole inference pipeline, computed with PyTorch + MONAI.

Writes a NIfTI case (BraTS 2018 layout) from ../reference/normalize/raw.npy (4 channels with a
zero background), then runs MONAI's pipeline on the same array:
  NormalizeIntensity(nonzero, channel_wise) -> CropForeground(x != 0, k_divisible=8)
  -> sliding_window_inference(roi 24^3, overlap 0.5, gaussian) with the reference SegResNet
  -> sigmoid -> pasted back on the full grid (0 outside the box).
and saves the probabilities as expected_prob.npy [3, D, H, W] (channels TC, WT, ET).

Run once, from this folder, in a virtualenv with torch, monai and nibabel:
  python make_expected.py
"""

import json
import os

import nibabel as nib
import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import SegResNet
from monai.transforms import CropForeground, NormalizeIntensity

HERE = os.path.dirname(os.path.abspath(__file__))
REF = os.path.join(HERE, "..", "reference")
CASE = "Pipeline-0001"
ROI = (24, 24, 24)

raw = np.load(os.path.join(REF, "normalize", "raw.npy")).astype(np.float32)  # [4, D, H, W]
assert raw.shape[0] == 4
# Put a little tissue on the first plane of the grid, so the brain box (0..37 on the first axis)
# grown to 40 reaches one voxel before the grid: the crop's padding and the paste back are used.
raw[:, 0, 20:24, 15:20] = raw[:, 20, 20:24, 15:20]

# An oblique-free but non-trivial grid: anisotropic spacing, flipped axes, offsets.
affine = np.array(
    [[-1.2, 0.0, 0.0, 30.5], [0.0, -1.0, 0.0, 40.25], [0.0, 0.0, 1.5, -20.0], [0, 0, 0, 1]]
)
folder = os.path.join(HERE, CASE)
os.makedirs(folder, exist_ok=True)
for c, name in enumerate(["t1", "t1ce", "t2", "flair"]):
    img = nib.Nifti1Image(raw[c], affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, os.path.join(folder, f"{CASE}_{name}.nii.gz"))

torch.manual_seed(0)
model = SegResNet(
    spatial_dims=3,
    init_filters=8,
    in_channels=4,
    out_channels=3,
    blocks_down=(1, 2, 2, 4),
    blocks_up=(1, 1, 1),
    upsample_mode="nontrainable",
)
model.load_state_dict(torch.load(os.path.join(REF, "segresnet_f8", "model.pt")))
model.eval()

x = NormalizeIntensity(nonzero=True, channel_wise=True)(torch.from_numpy(raw))
crop = CropForeground(select_fn=lambda v: v != 0, k_divisible=8)
box_start, box_end = crop.compute_bounding_box(x)
boxed = crop(x)
with torch.no_grad():
    logits = sliding_window_inference(
        boxed[None].float(), ROI, 1, model, overlap=0.5, mode="gaussian", sigma_scale=0.125
    )
prob_box = torch.sigmoid(logits)[0].numpy()

full = np.zeros((3,) + raw.shape[1:], dtype=np.float32)
src = []
dst = []
for a in range(3):
    s, e = int(box_start[a]), int(box_end[a])
    lo, hi = max(s, 0), min(e, raw.shape[1 + a])
    dst.append(slice(lo, hi))
    src.append(slice(lo - s, hi - s))
full[(slice(None), *dst)] = prob_box[(slice(None), *src)]
np.save(os.path.join(HERE, "expected_prob.npy"), full)
with open(os.path.join(HERE, "params.json"), "w") as f:
    json.dump(
        {
            "case": CASE,
            "roi": ROI,
            "overlap": 0.5,
            "blend": "gaussian",
            "box_start": [int(v) for v in box_start],
            "box_end": [int(v) for v in box_end],
            "torch": torch.__version__,
            "monai": __import__("monai").__version__,
        },
        f,
        indent=1,
    )
print("box", box_start, box_end, "prob range", full.min(), full.max())
