"""docs/real-anatomy.png: Colin 27's head (MRIcron's ch2) with two brain outlines, nvnet's mask
(red) and FSL BET's brain (ch2bet, green), on three axial, one sagittal and one coronal slice.

    nvnet prepare --t1 ch2.nii.gz --t1ce ch2.nii.gz --t2 ch2.nii.gz --flair ch2.nii.gz --output out
    python scripts/real_anatomy_picture.py out/<ID>/<ID>_brainmask.nii.gz docs/real-anatomy.png

Needs nibabel, numpy and pillow.
"""
import sys

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to
from PIL import Image

TEMPLATES = "/usr/share/mricron/templates/"
head_img = nib.load(TEMPLATES + "ch2.nii.gz")
head = np.asarray(head_img.dataobj).astype(float)
bet = np.asarray(nib.load(TEMPLATES + "ch2bet.nii.gz").dataobj) > 0
# nvnet's mask lies on the prepared grid (x and y reversed): back onto ch2's, voxel for voxel.
ours = np.asarray(resample_from_to(nib.load(sys.argv[1]), head_img, order=0).dataobj) > 0


def outline(mask):
    edge = np.zeros_like(mask)
    inner = mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    edge[1:-1, 1:-1] = mask[1:-1, 1:-1] & ~inner
    return edge


tiles = []
for axis, index in [(2, 40), (2, 70), (2, 110), (0, 90), (1, 150)]:
    planes = [np.rot90(np.take(a, index, axis=axis)) for a in (head, bet, ours)]
    grey = np.clip(planes[0] / 200 * 255, 0, 255).astype(np.uint8)
    rgb = np.stack([grey] * 3, -1)
    rgb[outline(planes[1])] = [0, 255, 0]
    rgb[outline(planes[2])] = [255, 0, 0]
    tile = Image.fromarray(rgb)
    tiles.append(tile.resize((tile.width * 2, tile.height * 2), Image.NEAREST))
picture = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)))
x = 0
for tile in tiles:
    picture.paste(tile, (x, 0))
    x += tile.width
picture.quantize(32).save(sys.argv[2], optimize=True)
