"""Write the hand-made bad NIfTI files of nvnet's test data (stdlib only; deterministic).

    python3 testdata/bad/make_bad.py      # rewrites the files beside this script

Each file breaks one rule; nvnet must refuse it (or, for the `warn_*` files, accept it with a
warning) with a message naming the file and the problem.
"""
import gzip
import math
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
DIMS = (4, 5, 6)


def header(dim=(3,) + DIMS, datatype=16, bitpix=32, pixdim=(1, 1, 1, 1), vox_offset=352.0,
           magic=b"n+1\0", sizeof_hdr=348, endian="<", slope=0.0, inter=0.0):
    h = bytearray(348)
    struct.pack_into(endian + "i", h, 0, sizeof_hdr)
    d = list(dim) + [1] * (8 - len(dim))
    struct.pack_into(endian + "8h", h, 40, *d)
    struct.pack_into(endian + "hh", h, 70, datatype, bitpix)
    p = list(pixdim) + [1.0] * (8 - len(pixdim))
    struct.pack_into(endian + "8f", h, 76, *p)
    struct.pack_into(endian + "fff", h, 108, vox_offset, slope, inter)
    h[123] = 2  # mm
    struct.pack_into(endian + "hh", h, 252, 1, 1)  # qform, sform codes
    struct.pack_into(endian + "4f", h, 280, -1, 0, 0, 10)
    struct.pack_into(endian + "4f", h, 296, 0, 1, 0, -20)
    struct.pack_into(endian + "4f", h, 312, 0, 0, 1, 5)
    h[344:348] = magic
    return bytes(h) + b"\0\0\0\0"


def floats(n, endian="<", values=None):
    values = values if values is not None else [float(i % 7) for i in range(n)]
    return struct.pack(endian + "%df" % n, *values)


N = DIMS[0] * DIMS[1] * DIMS[2]


def write(name, data, gz=None):
    gz = name.endswith(".gz") if gz is None else gz
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(gzip.compress(data, mtime=0) if gz else data)


def nifti2_header():
    h = bytearray(540)
    struct.pack_into("<i", h, 0, 540)
    h[4:12] = b"n+2\0\r\n\x1a\n"
    struct.pack_into("<hh", h, 12, 16, 32)
    struct.pack_into("<8q", h, 16, 3, *DIMS, 1, 1, 1, 1)
    struct.pack_into("<8d", h, 104, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<q", h, 168, 544)
    return bytes(h) + b"\0\0\0\0"


good = header() + floats(N)
write("good_le.nii", good)  # a control: must be accepted
write("good_be.nii.gz", header(endian=">") + floats(N, ">"))  # control: big-endian
write("good_nifti2.nii", nifti2_header() + floats(N))  # control: NIfTI-2

write("two_d.nii", header(dim=(2, 4, 5)) + floats(20))
write("four_d_several_volumes.nii.gz", header(dim=(4,) + DIMS + (2,)) + floats(2 * N))
write("dim0_zero.nii", header(dim=(0,) + DIMS) + floats(N))
write("dim0_eight.nii", header(dim=(8,) + DIMS + (1, 1, 1, 1)) + floats(N))
write("dim_zero.nii", header(dim=(3, 4, 0, 6)) + floats(N))
write("dim_negative.nii", header(dim=(3, -4, 5, 6)) + floats(N))
write("complex.nii", header(datatype=32, bitpix=64) + floats(2 * N))
write("rgb.nii", header(datatype=128, bitpix=24) + bytes(3 * N))
write("unknown_datatype.nii", header(datatype=999, bitpix=32) + floats(N))
write("bitpix_contradicts_datatype.nii", header(datatype=16, bitpix=16) + floats(N))
write("vox_offset_inside_header.nii", header(vox_offset=100.0) + floats(N))
write("vox_offset_past_end.nii", header(vox_offset=1e7) + floats(N))
write("pixdim_negative.nii", header(pixdim=(1, 1, -2, 1)) + floats(N))
write("pixdim_nan.nii", header(pixdim=(1, math.nan, 1, 1)) + floats(N))
write("wrong_magic.nii", header(magic=b"xyz\0") + floats(N))
write("analyze75.img.nii", header(magic=b"\0\0\0\0") + floats(N))
write("hdr_img_pair.nii", header(magic=b"ni1\0") + floats(N))
write("wrong_header_size.nii", header(sizeof_hdr=123) + floats(N))
write("truncated_data.nii", good[: 352 + 2 * N])
write("truncated_header.nii", good[:200])
full_gz = gzip.compress(good, mtime=0)
write("truncated_gzip.nii.gz", full_gz[: len(full_gz) - 6], gz=False)  # cut inside the trailer
write("truncated_gzip_data.nii.gz", gzip.compress(header() + floats(N, values=[i * 0.37 for i in range(N)]), mtime=0)[:300], gz=False)
write("corrupt_gzip.nii.gz", b"\x1f\x8b\x08\x00" + bytes(range(200)), gz=False)
write("claims_1e12_voxels.nii.gz", header(dim=(3, 10000, 10000, 10000)) + floats(N))
write("claims_more_than_present.nii.gz", header(dim=(3, 512, 512, 512)) + floats(N))
write("not_nifti.nii", b"This is a text file, not an image.\n" * 20)
write("empty.nii", b"")
write("nifti2_truncated.nii", nifti2_header()[:300])
write("warn_nan_values.nii.gz", header() + floats(N, values=[math.nan if i % 11 == 0 else 1.0 for i in range(N)]))
write("warn_zero_pixdim.nii", header(pixdim=(1, 0, 1, 1)) + floats(N))

# Voxel data a terabyte past the header: refused from the header, before anything is inflated.
write("vox_offset_huge.nii.gz", header(vox_offset=1e12) + floats(N))
# A transform that cannot place a voxel anywhere.
sform_nan = bytearray(header())
struct.pack_into("<f", sform_nan, 292, math.nan)  # srow_x[3]
write("sform_nan.nii", bytes(sform_nan) + floats(N))
qform_nan = bytearray(header())
struct.pack_into("<hh", qform_nan, 252, 1, 0)  # qform only
struct.pack_into("<f", qform_nan, 256, math.nan)  # quatern_b
write("qform_nan.nii", bytes(qform_nan) + floats(N))
# Bytes after the voxel data are not read (a control: accepted).
write("good_trailing_bytes.nii", good + b"\0" * 4096)
# NIfTI-2 with 2^32 × 2^32 further volumes: their count overflows 64 bits (once wrapped to 0).
many = bytearray(nifti2_header())
struct.pack_into("<8q", many, 16, 5, *DIMS, 2**32, 2**32, 1, 1)
write("nifti2_volumes_overflow.nii", bytes(many) + floats(N))
# A voxel a light-year wide: volumes in mL would be infinite.
write("pixdim_huge.nii", header(pixdim=(1, 1, 1e30, 1)) + floats(N))
# A voxel size that float32 outputs cannot keep (it would be written as 0).
write("pixdim_tiny.nii", header(pixdim=(1, 1e-30, 1, 1)) + floats(N))
