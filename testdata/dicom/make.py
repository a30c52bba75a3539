"""Small DICOM exams written by pydicom (an implementation independent of nvnet's dicom-rs), and
dcm2niix's conversion of the good series, the field's reference for DICOM → NIfTI.

    python testdata/dicom/make.py              # needs pydicom, numpy, nibabel; dcm2niix
    python testdata/dicom/make.py multiecho    # the multi-echo exam alone

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
- multiecho/: the exam with a dual-echo PD/T2 series in place of its T2 (see multiecho_exam),
  and expected/multiecho_e1.nii, multiecho_e2.nii: dcm2niix's NIfTI of each echo.
- enhanced/IM0001: an Enhanced MR Image (all slices as frames of one file, out of order, each
  with its own rescale), and expected/enhanced.nii: dcm2niix's NIfTI of it, its values set to
  each frame's own rescale (dcm2niix applies the first frame's to all).

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

    enhanced_series()


def enhanced_series():
    """enhanced/IM0001: an Enhanced MR Image (one file, all slices as frames), and dcm2niix's
    NIfTI of it in expected/enhanced.nii. An oblique (tilted 12 deg about y, 20 about x) T1
    post-contrast volume; its frames stored out of order, each with a PlanePositionSequence and
    its own RescaleSlope (PixelValueTransformationSequence), the orientation and the pixel
    spacing shared."""
    from pydicom.sequence import Sequence
    from pydicom.uid import EnhancedMRImageStorage

    frame = rot("y", 12) @ rot("x", 20)
    spacing, dims, center = (0.8, 0.9, 1.5), (18, 16, 12), (3.0, -2.0, 1.0)
    cols, rows, n = dims
    offsets = (np.array(dims) - 1) / 2.0 * np.array(spacing)
    origin = np.asarray(center, float) - frame @ offsets
    uid = f"{ROOT_UID}2.20"
    ds = base()
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SeriesInstanceUID = uid
    ds.SOPInstanceUID = uid + ".1"
    ds.SeriesNumber = 20
    ds.SeriesDescription = "t1_mprage_tra_p2 POST"
    ds.ProtocolName = "t1_mprage_tra_p2 POST"
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.ContrastBolusAgent = "GADOBUTROL"
    ds.Rows, ds.Columns = rows, cols
    ds.NumberOfFrames = n
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    measures, orientation = Dataset(), Dataset()
    measures.PixelSpacing = [f"{spacing[1]:.6g}", f"{spacing[0]:.6g}"]
    measures.SliceThickness = f"{spacing[2]:.6g}"
    orientation.ImageOrientationPatient = [f"{v:.10f}" for v in
                                           np.concatenate([frame[:, 0], frame[:, 1]])]
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    order = [3, 0, 7, 11, 1, 5, 9, 2, 10, 4, 6, 8]
    per_frame, pixels = [], []
    for stack_position, k in enumerate(order):
        p0 = origin + k * spacing[2] * frame[:, 2]
        ii, jj = np.meshgrid(np.arange(cols), np.arange(rows))
        world = (p0[None, None, :] + ii[..., None] * spacing[0] * frame[:, 0]
                 + jj[..., None] * spacing[1] * frame[:, 1])
        slope, intercept = 0.25 + 0.05 * k, -20.0
        pixels.append(np.round((intensity(world) - intercept) / slope).astype("<u2"))
        position, transform, content = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [f"{v:.6f}" for v in p0]
        transform.RescaleSlope = f"{slope:.6g}"
        transform.RescaleIntercept = f"{intercept:.6g}"
        transform.RescaleType = "US"
        content.InStackPositionNumber = k + 1
        content.StackID = "1"
        content.DimensionIndexValues = [1, k + 1]
        group = Dataset()
        group.PlanePositionSequence = Sequence([position])
        group.PixelValueTransformationSequence = Sequence([transform])
        group.FrameContentSequence = Sequence([content])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = np.stack(pixels).tobytes()
    shutil.rmtree(HERE / "enhanced", ignore_errors=True)
    write(HERE / "enhanced" / "IM0001", ds, ExplicitVRLittleEndian)
    tmp = HERE / "tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    subprocess.run(["dcm2niix", "-b", "n", "-z", "n", "-f", "enhanced", "-o", str(tmp),
                    str(HERE / "enhanced")], check=True, stdout=subprocess.DEVNULL)
    # dcm2niix (v1.0.20220720) places the frames right but applies the first frame's rescale to
    # every frame of an enhanced image: its grid is kept, and each voxel's value is the stored
    # value at that place times its own frame's slope, plus the intercept.
    import nibabel
    converted = nibabel.load(tmp / "enhanced.nii")
    ijk = np.indices(converted.shape).reshape(3, -1)
    ras = converted.affine[:3, :3] @ ijk + converted.affine[:3, 3:4]
    lps = ras * np.array([[-1.0], [-1.0], [1.0]])
    ours = np.rint((frame.T @ (lps - origin[:, None])) / np.array(spacing)[:, None]).astype(int)
    stack = np.stack(pixels)[np.argsort(order)]  # [slice k, row, column]
    slopes = 0.25 + 0.05 * ours[2]
    values = stack[ours[2], ours[1], ours[0]] * slopes - 20.0
    truth = nibabel.Nifti1Image(values.reshape(converted.shape).astype(np.float32),
                                converted.affine, converted.header)
    truth.header.set_data_dtype(np.float32)
    truth.header.set_slope_inter(1.0, 0.0)
    nibabel.save(truth, HERE / "expected" / "enhanced.nii")
    shutil.rmtree(tmp)

    # The same image without its per-frame functional groups: frames nothing places in space.
    del ds.PerFrameFunctionalGroupsSequence
    ds.SOPInstanceUID = uid + ".2"
    write(HERE / "bad" / "enhanced_unplaced" / "DICOM" / "IM0001", ds, ExplicitVRLittleEndian)
    refusals = json.loads((HERE / "bad" / "expected.json").read_text())
    refusals["enhanced_unplaced"] = ["IM0001", "12 frames", "dcm2niix"]
    (HERE / "bad" / "expected.json").write_text(json.dumps(refusals, indent=1) + "\n")


def multiecho_exam():
    """multiecho/: the exam's T1, T1ce and FLAIR, and in place of its T2 a dual-echo series 4
    'PD+T2 TSE TRA' (one SeriesInstanceUID, two images at each slice position: echo 1 at TE 12 ms,
    proton-density-like values, and echo 2 at TE 95 ms, the values of the exam's series 4, so
    that expected/4.nii is its T2 too), its images interleaved and numbered 1-16; and
    expected/multiecho_e1.nii, _e2.nii: dcm2niix's NIfTI of each echo."""
    exam = exam_series()
    echoes = []
    for echo, te in [(1, 12.0), (2, 95.0)]:
        images = series(4, "PD+T2 TSE TRA", OBLIQUE, (1.1, 1.1, 3.0), (20, 22, 8), (0, 2, 0),
                        ts=ExplicitVRLittleEndian, dtype="<i2",
                        slope_per_slice=[0.5 + 0.125 * k for k in range(8)])
        for k, (ds, ts) in enumerate(images):
            ds.EchoNumbers = echo
            ds.EchoTime = f"{te:g}"
            ds.SOPInstanceUID = f"{ds.SeriesInstanceUID}.{2 * k + echo}"
            ds.InstanceNumber = 2 * k + echo
            if echo == 1:
                stored = np.frombuffer(ds.PixelData, dtype="<i2").astype(np.float64)
                ds.PixelData = (stored * 0.6 + 400).round().astype("<i2").tobytes()
        echoes.append(images)
    dual = [item for pair in zip(*echoes) for item in pair]
    shutil.rmtree(HERE / "multiecho", ignore_errors=True)
    write_exam(HERE / "multiecho", {2: exam[2], 3: exam[3], 4: dual, 5: exam[5]}, shuffle=False)
    tmp = HERE / "tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for k, (ds, ts) in enumerate(dual):
        write(tmp / f"{k}.dcm", ds, ts)
    out = HERE / "tmp_out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    subprocess.run(["dcm2niix", "-b", "n", "-z", "n", "-f", "multiecho", "-o", str(out),
                    str(tmp)], check=True, stdout=subprocess.DEVNULL)
    for f in sorted(out.iterdir()):
        shutil.move(f, HERE / "expected" / f.name)
    shutil.rmtree(tmp)
    shutil.rmtree(out)


if __name__ == "__main__":
    import sys
    if sys.argv[1:] == ["multiecho"]:
        multiecho_exam()
    else:
        main()
        multiecho_exam()
