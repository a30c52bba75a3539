"""Calibration for nvnet's learning-signal test: the same fixed case (n³ voxels, 32 by default,
drawn in the coordinates of a 64³ grid), MONAI SegResNet F=8 (segmentation path, spatial
dropout 0.2) with MONAI's Dice loss, 20 Adam steps.

    python bench/monai_learning.py [LR] [N]
"""
import sys

import torch
from monai.losses import DiceLoss
from monai.networks.nets import SegResNet

torch.manual_seed(7)
torch.set_num_threads(2)
lr = float(sys.argv[1]) if len(sys.argv) > 1 else 3e-3
n = int(sys.argv[2]) if len(sys.argv) > 2 else 32
grid = torch.arange(n) * (64.0 / n)
z, y, x = torch.meshgrid(grid, grid, grid, indexing="ij")
r = ((z - 30.0) ** 2 + (y - 34.0) ** 2 + (x - 28.0) ** 2).sqrt()
wt, tc, et = r < 14, r < 8, (r >= 5) & (r < 8)
tex = torch.sin(x * 0.3) * torch.cos(y * 0.2) * 0.3
img = torch.stack([tex - 0.8 * tc, tex + 1.5 * et, tex + 1.0 * wt, -tex + 1.2 * (wt & ~tc)])[None].float()
tgt = torch.stack([tc, wt, et])[None].float()
net = SegResNet(spatial_dims=3, init_filters=8, in_channels=4, out_channels=3, dropout_prob=0.2)
opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-5)
loss_fn = DiceLoss(sigmoid=True, squared_pred=True, smooth_nr=0, smooth_dr=1e-5)
losses = []
for _ in range(20):
    opt.zero_grad()
    loss = loss_fn(net(img), tgt)
    loss.backward()
    opt.step()
    losses.append(round(loss.item(), 4))
print("lr", lr, "n", n, "dice losses", losses)
