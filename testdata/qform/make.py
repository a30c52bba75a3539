"""A qform-only NIfTI (sform_code 0) as FSL writes a 180-degree rotation about y: quatern_c is
the float32 just below 1, so 1 - (b^2 + c^2 + d^2) = 1.2e-7, which nibabel reads as w = 0. Writes
fsl_qform.nii.gz and expected.json (nibabel's affine). Run: python3 make.py (nibabel 5.4.2 made the
committed files)."""
import json

import nibabel as nib
import numpy as np

img = nib.Nifti1Image(np.arange(24, dtype=np.uint8).reshape(4, 3, 2), None)
h = img.header
h.set_sform(None, code=0)
h["qform_code"] = 1
h["quatern_b"], h["quatern_c"], h["quatern_d"] = 0.0, np.float32(0.99999994), 0.0
h["qoffset_x"], h["qoffset_y"], h["qoffset_z"] = 10.0, -20.0, 30.0
h["pixdim"][0] = -1.0
h["pixdim"][1:4] = [1.5, 2.0, 2.5]
nib.save(img, "fsl_qform.nii.gz")
affine = nib.load("fsl_qform.nii.gz").affine
with open("expected.json", "w") as f:
    json.dump({"nibabel": nib.__version__, "affine": affine.tolist()}, f, indent=1)
    f.write("\n")
