"""Small DICOM exams written by pydicom (an implementation independent of nvnet's dicom-rs), and
dcm2niix's conversion of the good series, the field's reference for DICOM → NIfTI.

    python testdata/dicom/make.py    # needs pydicom, numpy; dcm2niix on the PATH

Writes, in this folder:
- exam/: one patient's exam as a PACS export: files named IM0001..., in two sub-folders, in a
  shuffled order, a README.txt beside them. Series:
    1 'localizer'            three planes, ImageType LOCALIZER
    2 'T1 MPRAGE SAG'        sagittal, explicit VR little endian, uint16, slope 2 intercept -100
    3 'AX T1 POST GD'        axial, implicit VR little endian, int16, ContrastBolusAgent set
    4 't2_tse_tra'           oblique (tilted 15 deg about x, 10 deg about z), explicit VR big
                             endian, RescaleSlope different on every slice
    5 'T2 FLAIR AX 5mm'      axial, 5 mm slices, RLE lossless
    6 'ep2d_diff DWI'        diffusion (not one of the four)
    7 'ADC map'              ImageType DERIVED
- expected/: dcm2niix's NIfTI of series 2-5 (`<number>.nii`), and expected.json: for each, the
  series number, its modality as nvnet should read it, the file.
- bad/<case>/: exams that must be refused, each named by what is wrong with it; expected.json
  says which words the refusal must hold.
- single/IM0001: one 2-D image (a series of one slice).

Everything is seeded: the same files each run (pydicom writes no time stamps here).
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    MRImageStorage,
    RLELossless,
)

HERE = Path(__file__).resolve().parent
ROOT_UID = "1.2.826.0.1.3680043.8.498.4242."
STUDY = ROOT_UID + "1"
rng = np.random.default_rng(20261205)


def rot(axis, deg):
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    m = {"x": [[1, 0, 0], [0, c, -s], [0, s, c]],
         "y": [[c, 0, s], [0, 1, 0], [-s, 0, c]],
         "z": [[c, -s, 0], [s, c, 0], [0, 0, 1]]}[axis]
    return np.array(m, dtype=float)


AXIAL = np.eye(3)  # rows along L (x), columns along P (y), slices along S (z): LPS
# Columns: the row direction, the column direction, their cross product (the slice normal).
SAGITTAL = np.column_stack([(0, 1, 0), (0, 0, -1), (-1, 0, 0)]).astype(float)
CORONAL = np.column_stack([(1, 0, 0), (0, 0, -1), (0, 1, 0)]).astype(float)


def intensity(p):
    """A smooth function of the patient position (LPS, mm): every voxel's value says where it is."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    return 1000 + 300 * np.sin(x / 7.0) + 200 * np.cos(y / 5.0) + 4.0 * z


def base(patient="NVNET^PHANTOM", pid="PHANTOM-042"):
    ds = Dataset()
    ds.PatientName = patient
    ds.PatientID = pid
    ds.StudyInstanceUID = STUDY
    ds.Modality = "MR"
    ds.SOPClassUID = MRImageStorage
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    return ds


def write(path, ds, ts):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = ROOT_UID + "99"
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    little = ts != ExplicitVRBigEndian
    implicit = ts == ImplicitVRLittleEndian
    if ts in (RLELossless, JPEG2000Lossless):
        little, implicit = True, False
    ds.save_as(path, enforce_file_format=True, little_endian=little, implicit_vr=implicit)


def series(number, description, frame, spacing, dims, center, *, ts=ExplicitVRLittleEndian,
           dtype="<u2", slope=1.0, intercept=0.0, slope_per_slice=None, image_type=None,
           contrast=None, positions=None, orientations=None, pid="PHANTOM-042"):
    """The datasets of one series. frame: columns = row direction, column direction, normal
    (LPS); spacing: (between columns, between rows, between slices); dims: (columns, rows,
    slices); center: the volume's centre (LPS mm)."""
    cols, rows, n = dims
    uid = f"{ROOT_UID}2.{number}"
    offsets = (np.array(dims) - 1) / 2.0 * np.array(spacing)
    origin = np.asarray(center, float) - frame @ offsets
    out = []
    for k in range(n):
        r = frame if orientations is None else orientations[k]
        p0 = origin + k * spacing[2] * frame[:, 2] if positions is None else np.asarray(positions[k])
        ii, jj = np.meshgrid(np.arange(cols), np.arange(rows))  # [row, column]
        world = (p0[None, None, :] + ii[..., None] * spacing[0] * r[:, 0]
                 + jj[..., None] * spacing[1] * r[:, 1])
        s = slope if slope_per_slice is None else slope_per_slice[k]
        stored = np.round((intensity(world) - intercept) / s)
        ds = base(pid=pid)
        ds.SeriesInstanceUID = uid
        ds.SeriesNumber = number
        ds.SeriesDescription = description
        ds.ProtocolName = description
        ds.SOPInstanceUID = f"{uid}.{k + 1}"
        ds.InstanceNumber = k + 1
        ds.ImageType = image_type or ["ORIGINAL", "PRIMARY", "M", "NORM"]
        if contrast:
            ds.ContrastBolusAgent = contrast
        ds.Rows, ds.Columns = rows, cols
        ds.PixelSpacing = [f"{spacing[1]:.6g}", f"{spacing[0]:.6g}"]
        ds.SliceThickness = f"{spacing[2]:.6g}"
        ds.ImageOrientationPatient = [f"{v:.10f}" for v in np.concatenate([r[:, 0], r[:, 1]])]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in p0]
        ds.RescaleSlope = f"{s:.6g}"
        ds.RescaleIntercept = f"{intercept:.6g}"
        signed = dtype[1] == "i"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if signed else 0
        arr = stored.astype(dtype)
        if ts == ExplicitVRBigEndian:
            ds.PixelData = arr.astype(">" + dtype[1:]).tobytes()
        else:
            ds.PixelData = arr.astype("<" + dtype[1:]).tobytes()
        if ts == RLELossless:
            ds.compress(RLELossless, arr.astype("<" + dtype[1:]), encoding_plugin="pydicom")
        if ts == JPEG2000Lossless:
            ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(60)])
            ds["PixelData"].VR = "OB"
        out.append((ds, ts))
    return out


def localizer(number):
    out = []
    for k, frame in enumerate([AXIAL, SAGITTAL, CORONAL]):
        [(ds, ts)] = series(number, "localizer", frame, (4, 4, 1), (16, 16, 1), (0, 0, 0),
                            image_type=["ORIGINAL", "PRIMARY", "LOCALIZER"])
        ds.SOPInstanceUID = f"{ROOT_UID}2.{number}.{k + 1}"
        ds.InstanceNumber = k + 1
        out.append((ds, ts))
    return out


OBLIQUE = rot("z", 10) @ rot("x", 15)


def exam_series():
    return {
        1: localizer(1),
        2: series(2, "T1 MPRAGE SAG", SAGITTAL, (1.0, 1.0, 1.2), (24, 20, 16), (2, -3, 5),
                  dtype="<u2", slope=2.0, intercept=-100.0),
        3: series(3, "AX T1 POST GD", AXIAL, (0.9, 0.9, 1.0), (22, 26, 18), (1, 0, 2),
                  ts=ImplicitVRLittleEndian, dtype="<i2", contrast="GADOBUTROL"),
        4: series(4, "t2_tse_tra", OBLIQUE, (1.1, 1.1, 3.0), (20, 22, 8), (0, 2, 0),
                  ts=ExplicitVRBigEndian, dtype="<i2",
                  slope_per_slice=[0.5 + 0.125 * k for k in range(8)]),
        5: series(5, "T2 FLAIR AX 5mm", AXIAL, (1.0, 1.0, 5.0), (20, 20, 6), (0, 0, 0),
                  ts=RLELossless, dtype="<u2"),
        6: series(6, "ep2d_diff DWI", AXIAL, (2.0, 2.0, 4.0), (12, 12, 5), (0, 0, 0)),
        7: series(7, "ADC map", AXIAL, (2.0, 2.0, 4.0), (12, 12, 5), (0, 0, 0),
                  image_type=["DERIVED", "PRIMARY", "ADC"]),
    }


def write_exam(folder, all_series, shuffle=True):
    items = [item for s in all_series.values() for item in s]
    order = rng.permutation(len(items)) if shuffle else np.arange(len(items))
    for n, idx in enumerate(order):
        ds, ts = items[idx]
        sub = "DICOM/A" if n % 2 == 0 else "DICOM/B"
        write(folder / sub / f"IM{n + 1:04d}", ds, ts)


def main():
    for sub in ["exam", "expected", "bad", "single"]:
        shutil.rmtree(HERE / sub, ignore_errors=True)
    exam = exam_series()
    write_exam(HERE / "exam", exam)
    (HERE / "exam" / "README.txt").write_text("Exported by a PACS viewer.\n")

    # dcm2niix's conversion, series by series (each alone in a folder, so that its output
    # names are its own).
    expected = HERE / "expected"
    expected.mkdir()
    modality = {2: "t1", 3: "t1ce", 4: "t2", 5: "flair"}
    tmp = HERE / "tmp"
    for number in modality:
        shutil.rmtree(tmp, ignore_errors=True)
        for k, (ds, ts) in enumerate(exam[number]):
            write(tmp / f"{k}.dcm", ds, ts)
        subprocess.run(["dcm2niix", "-b", "n", "-z", "n", "-f", str(number), "-o", str(expected),
                        str(tmp)], check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(tmp)
    (expected / "expected.json").write_text(json.dumps({
        "dcm2niix": subprocess.run(["dcm2niix", "--version"], capture_output=True,
                                   text=True).stdout.strip().splitlines()[-1],
        "pydicom": pydicom.__version__,
        "series": [{"number": n, "modality": m, "file": f"{n}.nii"} for n, m in modality.items()],
    }, indent=1) + "\n")

    bad = HERE / "bad"
    refusals = {}

    def bad_exam(name, words, all_series):
        write_exam(bad / name, all_series, shuffle=False)
        refusals[name] = words

    good = {n: exam[n] for n in (2, 3, 4, 5)}
    bad_exam("missing_slice", ["series 3", "missing"],
             {**good, 3: [x for k, x in enumerate(exam[3]) if k != 7]})
    uneven = [k * 3.0 + (0.9 if k >= 4 else 0) for k in range(8)]
    bad_exam("mixed_spacing", ["series 4", "unevenly spaced"],
             {**good, 4: series(4, "t2_tse_tra", AXIAL, (1.1, 1.1, 3.0), (20, 22, 8), (0, 0, 0),
                                positions=[(-10.45, -11.55, z) for z in uneven])})
    tilted = [AXIAL] * 8
    tilted[5] = rot("x", 20)
    bad_exam("varying_orientation", ["series 4", "not parallel"],
             {**good, 4: series(4, "t2_tse_tra", AXIAL, (1.1, 1.1, 3.0), (20, 22, 8), (0, 0, 0),
                                orientations=tilted)})
    bad_exam("two_patients", ["2 patients", "PHANTOM-042", "PHANTOM-043"],
             {**good, 5: series(5, "T2 FLAIR AX 5mm", AXIAL, (1.0, 1.0, 5.0), (20, 20, 6),
                                (0, 0, 0), pid="PHANTOM-043")})
    bad_exam("ambiguous", ["2 series could be t2", "series 4 't2_tse_tra'", "series 8 'T2 COR'"],
             {**good, 8: series(8, "T2 COR", CORONAL, (1.0, 1.0, 3.0), (20, 20, 6), (0, 0, 0))})
    bad_exam("jpeg2000", ["series 5", "JPEG 2000"],
             {**good, 5: series(5, "T2 FLAIR AX 5mm", AXIAL, (1.0, 1.0, 5.0), (20, 20, 6),
                                (0, 0, 0), ts=JPEG2000Lossless)})
    # A file cut short (its pixel data half there), and a file named .dcm that is not DICOM.
    bad_exam("truncated", ["IM0020"], good)
    cut = bad / "truncated" / "DICOM" / "B" / "IM0020"
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) - 300])
    refusals["truncated"] = ["IM0020"]
    bad_exam("not_dicom", ["IM0099.dcm", "not a DICOM file"], good)
    (bad / "not_dicom" / "DICOM" / "IM0099.dcm").write_bytes(bytes(rng.integers(0, 256, 600,
                                                                                dtype=np.uint8)))
    (bad / "expected.json").write_text(json.dumps(refusals, indent=1) + "\n")

    [(ds, ts)] = series(9, "T1 single slice", AXIAL, (1.0, 1.0, 2.0), (16, 12, 1), (0, 0, 0))
    write(HERE / "single" / "IM0001", ds, ts)


if __name__ == "__main__":
    main()
