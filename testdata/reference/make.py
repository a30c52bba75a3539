"""Writes every reference vector in this folder from fixed seeds (see README.md for what each is).

Run from anywhere, in a virtualenv with the versions in README.md (torch, monai, medpy, nibabel,
safetensors, numpy):
  python testdata/reference/make.py
then, because it reads normalize/ and segresnet_f8/:
  python testdata/pipeline/make_expected.py
CI does not run this; it checks the committed outputs. versions.json records what made them.
"""

import json
import os

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from medpy.metric import binary
from monai.inferers import sliding_window_inference
from monai.losses import DiceLoss
from monai.networks.nets import SegResNet
from monai.transforms import NormalizeIntensity
from safetensors.torch import save_file
from torch.utils.flop_counter import FlopCounterMode

HERE = os.path.dirname(os.path.abspath(__file__))
# BraTS's convention for a distance with one mask empty: the diagonal of its 240x240x155 grid.
EMPTY_HD95 = 373.12866


def out(*parts):
    path = os.path.join(HERE, *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def save_npy(array, *parts):
    np.save(out(*parts), np.ascontiguousarray(array))


def save_json(value, *parts):
    with open(out(*parts), "w") as f:
        json.dump(value, f, indent=1)
        f.write("\n")


def segresnet(init_filters):
    return SegResNet(
        spatial_dims=3,
        init_filters=init_filters,
        in_channels=4,
        out_channels=3,
        blocks_down=(1, 2, 2, 4),
        blocks_up=(1, 1, 1),
        upsample_mode="nontrainable",
    )


def reference_model():
    torch.manual_seed(1810)
    net = segresnet(8).eval()
    # MONAI initialises GroupNorm to the identity; random affines make the import's mapping of
    # every weight and bias visible in the logits.
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
    return net


def make_segresnet(net):
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    torch.save(state, out("segresnet_f8", "model.pt"))
    save_file(state, out("segresnet_f8", "model.safetensors"))
    save_json(
        {
            "arch": "monai.SegResNet",
            "init_filters": 8,
            "in_channels": 4,
            "out_channels": 3,
            "blocks_down": [1, 2, 2, 4],
            "blocks_up": [1, 1, 1],
            "upsample_mode": "nontrainable",
            "norm": "group(8)",
            "input_shape": [32, 40, 48],
        },
        "segresnet_f8",
        "config.json",
    )
    g = torch.Generator().manual_seed(11)
    x = torch.randn(1, 4, 32, 40, 48, generator=g)
    with torch.no_grad():
        logits = net(x)
    save_npy(x.numpy(), "segresnet_f8", "input.npy")
    save_npy(logits.numpy(), "segresnet_f8", "logits.npy")


def make_sliding_window(net):
    g = torch.Generator().manual_seed(12)
    volume = torch.randn(1, 4, 45, 70, 50, generator=g)
    params = {
        "roi": [32, 32, 32],
        "overlap": 0.5,
        "sigma_scale": 0.125,
        "padding": "constant 0",
        "sw_batch_size": 1,
    }
    save_npy(volume.numpy(), "sliding_window", "volume.npy")
    save_json(params, "sliding_window", "params.json")
    with torch.no_grad():
        for mode in ["gaussian", "constant"]:
            logits = sliding_window_inference(
                volume,
                roi_size=params["roi"],
                sw_batch_size=1,
                predictor=net,
                overlap=params["overlap"],
                mode=mode,
                sigma_scale=params["sigma_scale"],
                padding_mode="constant",
                cval=0.0,
            )
            save_npy(logits.numpy(), "sliding_window", f"logits_{mode}.npy")


def make_upsample():
    g = torch.Generator().manual_seed(13)
    x = torch.randn(1, 3, 5, 6, 7, generator=g, requires_grad=True)
    y = F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False)
    grad_output = torch.randn(y.shape, generator=g)
    (y * grad_output).sum().backward()
    save_npy(x.detach().numpy(), "upsample", "input.npy")
    save_npy(y.detach().numpy(), "upsample", "output.npy")
    save_npy(grad_output.numpy(), "upsample", "grad_output.npy")
    save_npy(x.grad.numpy(), "upsample", "grad_input.npy")


def make_normalize():
    rng = np.random.default_rng(14)
    shape = (40, 44, 36)
    # A brain-like ellipsoid of tissue in a zero background, each channel at its own scale.
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = (z / 0.8) ** 2 + (y / 0.9) ** 2 + (x / 0.85) ** 2 < 1.0
    raw = np.zeros((4, *shape), np.float32)
    for c, (mean, sd) in enumerate([(400.0, 60.0), (650.0, 120.0), (900.0, 200.0), (300.0, 45.0)]):
        raw[c][inside] = rng.normal(mean, sd, inside.sum()).astype(np.float32)
    # A copy: MONAI's transform may work in place on a NumPy array.
    normalized = NormalizeIntensity(nonzero=True, channel_wise=True)(raw.copy())
    save_npy(raw, "normalize", "raw.npy")
    save_npy(np.asarray(normalized, dtype=np.float32), "normalize", "normalized.npy")


def make_losses():
    g = torch.Generator().manual_seed(15)
    logits = 3.0 * torch.randn(2, 3, 16, 16, 16, generator=g)
    target = (torch.rand(2, 3, 16, 16, 16, generator=g) < 0.3).float()
    loss = DiceLoss(sigmoid=True, squared_pred=True, smooth_nr=0.0, smooth_dr=1e-5, reduction="mean")
    save_npy(logits.numpy(), "losses", "logits.npy")
    save_npy(target.numpy(), "losses", "target.npy")
    save_json(
        {"monai_dice_loss_sigmoid_squared_smooth_dr_1e-5_mean": float(loss(logits, target))},
        "losses",
        "expected.json",
    )


def blob(rng, shape, centre, radii, noise):
    grid = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    r = sum(((g - c) / rd) ** 2 for g, c, rd in zip(grid, centre, radii))
    return (r + noise * rng.normal(size=shape) < 1.0).astype(np.uint8)


def make_metrics():
    rng = np.random.default_rng(16)
    shape = (48, 52, 40)
    spacings = [(0.8, 0.8, 1.0), (0.8, 2.5, 0.8), (0.8, 0.8, 1.0), (0.8, 1.0, 1.0), (1.0, 2.5, 0.8)]
    cases = []
    for spacing in spacings:
        centre = rng.uniform(18, 30, 3)
        radii = rng.uniform(5, 14, 3)
        gt = blob(rng, shape, centre, radii, 0.15)
        pred = blob(rng, shape, centre + rng.normal(0, 2, 3), radii * rng.uniform(0.7, 1.1, 3), 0.3)
        cases.append((gt, pred, spacing))
    empty = np.zeros(shape, np.uint8)
    cube = empty.copy()
    cube[20:23, 20:23, 20:23] = 1
    cube[10:13, 30:33, 5:8] = 1
    cube.flat[rng.choice(cube.size, 203, replace=False)] = 1
    voxel = empty.copy()
    voxel[24, 26, 20] = 1
    # The empty-mask conventions (nvnet's, as BraTS scores them): both empty is a perfect match;
    # one empty has Dice 0 and the diagonal distance.
    cases += [(empty, empty, (1, 1, 1)), (empty, cube, (1, 1, 1)), (cube, empty, (1, 1, 1)), (voxel, voxel, (1, 1, 1))]
    expected = []
    for i, (gt, pred, spacing) in enumerate(cases):
        name = f"case{i:02}"
        save_npy(gt, "metrics", f"{name}_gt.npy")
        save_npy(pred, "metrics", f"{name}_pred.npy")
        g, p = gt.any(), pred.any()
        tn = np.sum((gt == 0) & (pred == 0))
        fp = np.sum((gt == 0) & (pred != 0))
        if g and p:
            dice = binary.dc(pred, gt)
            hd95 = binary.hd95(pred, gt, voxelspacing=spacing)
            sensitivity = binary.sensitivity(pred, gt)
        elif not g and not p:
            dice, hd95, sensitivity = 1.0, 0.0, 1.0
        else:
            dice, hd95, sensitivity = 0.0, EMPTY_HD95, 0.0 if g else 1.0
        specificity = float(tn / (tn + fp)) if tn + fp else 1.0
        expected.append(
            {
                "dice": float(dice),
                "hd95": float(hd95),
                "sensitivity": float(sensitivity),
                "specificity": specificity,
                "name": name,
                "spacing": [float(s) for s in spacing],
            }
        )
    save_json(expected, "metrics", "expected.json")


def make_brats_case():
    """A tiny case in the BraTS 2018 layout whose files exercise the NIfTI reader: a scaled int16,
    a float32, a uint16, a float64, the uint8 labels 0/1/2/4 and a flipped affine with offsets."""
    rng = np.random.default_rng(17)
    shape = (48, 56, 40)
    case_id = "BraTS-Synth-0001"
    affine = np.array([[-1.0, 0, 0, 23.5], [0, -1.0, 0, 130.2], [0, 0, 1.0, -70.0], [0, 0, 0, 1]])
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    head = (z / 0.85) ** 2 + (y / 0.9) ** 2 + (x / 0.8) ** 2 < 1.0
    seg = np.zeros(shape, np.uint8)
    r = ((z - 0.1) / 0.35) ** 2 + ((y + 0.05) / 0.3) ** 2 + (x / 0.3) ** 2
    seg[(r < 1.0) & head] = 2
    seg[r < 0.45] = 4
    seg[r < 0.15] = 1
    folder = os.path.join(HERE, "brats_case", case_id)
    os.makedirs(folder, exist_ok=True)
    tissue = {"t1": 680.0, "t1ce": 700.0, "t2": 900.0, "flair": 450.0}
    values = {}
    probes = [(0, 0, 0), (24, 28, 20), (5, 40, 33), (47, 1, 20)]
    for m, dtype in [("t1", np.int16), ("t1ce", np.float32), ("t2", np.uint16), ("flair", np.float64)]:
        v = np.zeros(shape)
        v[head] = tissue[m] * (1 + 0.1 * rng.normal(size=head.sum()))
        v[seg == 4] *= 1.6 if m == "t1ce" else 1.1
        v[seg == 2] *= 1.5 if m in ("t2", "flair") else 0.9
        if m == "t1":
            # Stored as (value - 0.5) / 2: the reader must apply scl_slope and scl_inter.
            stored = np.round((v - 0.5) / 2.0).astype(np.int16)
            img = nib.Nifti1Image(stored, affine)
            img.header.set_slope_inter(2.0, 0.5)
            data = stored * 2.0 + 0.5
        else:
            stored = np.round(v).astype(dtype) if dtype == np.uint16 else v.astype(dtype)
            img = nib.Nifti1Image(stored, affine)
            img.header.set_slope_inter(1.0, 0.0)
            data = stored.astype(np.float64)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        nib.save(img, os.path.join(folder, f"{case_id}_{m}.nii.gz"))
        back = nib.load(os.path.join(folder, f"{case_id}_{m}.nii.gz")).get_fdata()
        assert np.array_equal(back, data), m
        values[m] = {
            "dtype": np.dtype(dtype).name,
            "values": [[list(p), float(back[p])] for p in probes],
        }
    img = nib.Nifti1Image(seg, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, os.path.join(folder, f"{case_id}_seg.nii.gz"))
    labels, counts = np.unique(seg, return_counts=True)
    save_json(
        {
            "shape": list(shape),
            "affine": affine.tolist(),
            "modalities": values,
            "label_counts": {str(int(l)): int(c) for l, c in zip(labels, counts)},
            "region_voxels": {
                "WT": int(np.sum(seg > 0)),
                "TC": int(np.sum((seg == 1) | (seg == 4))),
                "ET": int(np.sum(seg == 4)),
            },
            "note": "values are after scl_slope/scl_inter; indices are (i,j,k) in file order",
        },
        "brats_case",
        case_id,
        "expected.json",
    )


def make_counts():
    """MONAI's parameter counts and the forward FLOP PyTorch counts (2 per multiply-add of the
    convolutions), which the tests compare with nvnet's module and analytic summary."""
    counts = []
    for f, shape in [(8, [64, 64, 64]), (16, [128, 128, 128]), (16, [240, 240, 160]), (32, [160, 192, 128])]:
        net = segresnet(f).eval()
        flop = FlopCounterMode(display=False)
        # The meta device: shapes only, so the large inputs cost no memory.
        with torch.device("meta"):
            meta = segresnet(f).eval()
            x = torch.empty(1, 4, *shape)
        with flop, torch.no_grad():
            meta(x)
        counts.append(
            {
                "init_filters": f,
                "shape": shape,
                "params": sum(p.numel() for p in net.parameters()),
                "forward_flop": flop.get_total_flops(),
            }
        )
    save_json(counts, "segresnet_counts.json")


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    net = reference_model()
    make_segresnet(net)
    make_sliding_window(net)
    make_upsample()
    make_normalize()
    make_losses()
    make_metrics()
    make_brats_case()
    make_counts()
    import medpy
    import monai
    import safetensors

    save_json(
        {
            "torch": torch.__version__,
            "monai": monai.__version__,
            "medpy": getattr(medpy, "__version__", "unknown"),
            "nibabel": nib.__version__,
            "numpy": np.__version__,
            "safetensors": safetensors.__version__,
        },
        "versions.json",
    )


if __name__ == "__main__":
    main()
