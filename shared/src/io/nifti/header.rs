//! The NIfTI-1 and NIfTI-2 headers, in either byte order: the fields nvnet uses, the affine they
//! give (qform, sform or the Analyze fallback, as nibabel reads them) and their checks before any
//! voxel is allocated.

use super::{DataType, MAX_EXTENSIONS, MAX_PIXDIM, MAX_VOXELS, MIN_PIXDIM};

/// A little reader of fixed-layout header fields in either byte order.
pub(super) struct Fields<'a> {
    bytes: &'a [u8],
    big: bool,
}

impl Fields<'_> {
    fn take<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut b = [0u8; N];
        b.copy_from_slice(&self.bytes[at..at + N]);
        if self.big {
            b.reverse();
        }
        b
    }
    fn i16(&self, at: usize) -> i16 {
        i16::from_le_bytes(self.take(at))
    }
    fn i32(&self, at: usize) -> i32 {
        i32::from_le_bytes(self.take(at))
    }
    fn i64(&self, at: usize) -> i64 {
        i64::from_le_bytes(self.take(at))
    }
    fn f32(&self, at: usize) -> f64 {
        f32::from_le_bytes(self.take(at)) as f64
    }
    fn f64(&self, at: usize) -> f64 {
        f64::from_le_bytes(self.take(at))
    }
}

/// The header fields nvnet uses, from either NIfTI version.
pub(super) struct RawHeader {
    pub(super) version: u8,
    pub(super) big: bool,
    pub(super) dim: [i64; 8],
    pub(super) datatype: i16,
    pub(super) bitpix: i16,
    pub(super) pixdim: [f64; 8],
    pub(super) vox_offset: f64,
    pub(super) scl_slope: f64,
    pub(super) scl_inter: f64,
    pub(super) qform_code: i32,
    pub(super) sform_code: i32,
    pub(super) quatern: [f64; 6],
    pub(super) srow: [[f64; 4]; 3],
    pub(super) xyzt_units: i32,
}

const NIFTI1_HEADER: usize = 348;
pub(super) const NIFTI2_HEADER: usize = 540;

pub(super) fn parse_header(bytes: &[u8]) -> Result<RawHeader, String> {
    if bytes.len() < 4 {
        return Err(format!("too short to be NIfTI ({} bytes)", bytes.len()));
    }
    let size_le = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let size_be = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let (version, big) = match (size_le, size_be) {
        (348, _) => (1, false),
        (_, 348) => (1, true),
        (540, _) => (2, false),
        (_, 540) => (2, true),
        _ => {
            return Err(format!(
                "not a NIfTI file: the header size field is {size_le}, not 348 (NIfTI-1) or 540 (NIfTI-2)"
            ));
        }
    };
    let need = if version == 1 {
        NIFTI1_HEADER
    } else {
        NIFTI2_HEADER
    };
    if bytes.len() < need {
        return Err(format!("truncated header: {} of {need} bytes", bytes.len()));
    }
    let f = Fields { bytes, big };
    if version == 1 {
        let magic = &bytes[344..348];
        match magic {
            b"n+1\0" => {}
            b"ni1\0" => return Err("a two-file NIfTI (.hdr/.img pair) is not supported: convert it to a single .nii or .nii.gz".into()),
            _ => {
                return Err(format!(
                    "wrong magic {:?}: an Analyze 7.5 file or not NIfTI at all (nvnet reads single-file NIfTI-1/-2)",
                    String::from_utf8_lossy(magic)
                ));
            }
        }
        let mut dim = [0i64; 8];
        for (n, d) in dim.iter_mut().enumerate() {
            *d = f.i16(40 + 2 * n) as i64;
        }
        let mut pixdim = [0f64; 8];
        for (n, p) in pixdim.iter_mut().enumerate() {
            *p = f.f32(76 + 4 * n);
        }
        let mut srow = [[0f64; 4]; 3];
        for (r, row) in srow.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = f.f32(280 + 16 * r + 4 * c);
            }
        }
        Ok(RawHeader {
            version,
            big,
            dim,
            datatype: f.i16(70),
            bitpix: f.i16(72),
            pixdim,
            vox_offset: f.f32(108),
            scl_slope: f.f32(112),
            scl_inter: f.f32(116),
            qform_code: f.i16(252) as i32,
            sform_code: f.i16(254) as i32,
            quatern: [0, 1, 2, 3, 4, 5].map(|n| f.f32(256 + 4 * n)),
            srow,
            xyzt_units: bytes[123] as i32,
        })
    } else {
        if &bytes[4..12] != b"n+2\0\r\n\x1a\n" {
            return Err("wrong NIfTI-2 magic (a two-file or corrupted NIfTI-2 file)".into());
        }
        let mut dim = [0i64; 8];
        for (n, d) in dim.iter_mut().enumerate() {
            *d = f.i64(16 + 8 * n);
        }
        let mut pixdim = [0f64; 8];
        for (n, p) in pixdim.iter_mut().enumerate() {
            *p = f.f64(104 + 8 * n);
        }
        let mut srow = [[0f64; 4]; 3];
        for (r, row) in srow.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = f.f64(400 + 32 * r + 8 * c);
            }
        }
        Ok(RawHeader {
            version,
            big,
            dim,
            datatype: f.i16(12),
            bitpix: f.i16(14),
            pixdim,
            vox_offset: f.i64(168) as f64,
            scl_slope: f.f64(176),
            scl_inter: f.f64(184),
            qform_code: f.i32(344),
            sform_code: f.i32(348),
            quatern: [0, 1, 2, 3, 4, 5].map(|n| f.f64(352 + 8 * n)),
            srow,
            xyzt_units: f.i32(500),
        })
    }
}

/// How far from 0 nibabel lets 1 − (b² + c² + d²) be and still take the quaternion's w as 0:
/// three float32 epsilons (`Nifti1Header.quaternion_threshold`), the header's own precision.
const QUATERNION_THRESHOLD: f64 = 3.0 * f32::EPSILON as f64;

/// The qform quaternion's w from its b, c, d as nibabel computes it (`fillpositive`): 0 within
/// the float32 tolerance of 0 (a 180° rotation written by FSL lands a little above or below),
/// an error when b² + c² + d² exceeds 1 by more.
pub(super) fn quaternion_w(b: f64, c: f64, d: f64) -> Result<f64, String> {
    let w2 = 1.0 - (b * b + c * c + d * d);
    if w2.abs() < QUATERNION_THRESHOLD {
        Ok(0.0)
    } else if w2 < 0.0 {
        Err(format!(
            "the qform quaternion (quatern_b/c/d) has b² + c² + d² = {:.9}, more than 1",
            1.0 - w2
        ))
    } else {
        Ok(w2.sqrt())
    }
}

/// The rotation of a quaternion (w, x, y, z) as nibabel's `quat2mat` computes it: normalised by
/// its squared length (a float32 quaternion is a little off unit length), the identity for a
/// quaternion of length 0.
pub(super) fn rotation([w, x, y, z]: [f64; 4]) -> [[f64; 3]; 3] {
    let n = w * w + x * x + y * y + z * z;
    if n < f64::EPSILON {
        return [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    }
    let s = 2.0 / n;
    let (xs, ys, zs) = (x * s, y * s, z * s);
    let (wx, wy, wz) = (w * xs, w * ys, w * zs);
    let (xx, xy, xz) = (x * xs, x * ys, x * zs);
    let (yy, yz, zz) = (y * ys, y * zs, z * zs);
    [
        [1.0 - (yy + zz), xy - wz, xz + wy],
        [xy + wz, 1.0 - (xx + zz), yz - wx],
        [xz - wy, yz + wx, 1.0 - (xx + yy)],
    ]
}

/// The quaternion (b, c, d) of a proper rotation, with w = √(1 − b² − c² − d²) ≥ 0 as NIfTI
/// stores it: `rotation` undoes it. From the largest of the four squared components, for
/// precision (the NIfTI reference library's method, written from its formulas).
pub(super) fn quaternion_bcd(r: [[f64; 3]; 3]) -> [f64; 3] {
    let trace = r[0][0] + r[1][1] + r[2][2];
    let (w, x, y, z);
    if trace > 0.0 {
        let s = 2.0 * (1.0 + trace).sqrt();
        w = 0.25 * s;
        x = (r[2][1] - r[1][2]) / s;
        y = (r[0][2] - r[2][0]) / s;
        z = (r[1][0] - r[0][1]) / s;
    } else if r[0][0] > r[1][1] && r[0][0] > r[2][2] {
        let s = 2.0 * (1.0 + r[0][0] - r[1][1] - r[2][2]).sqrt();
        w = (r[2][1] - r[1][2]) / s;
        x = 0.25 * s;
        y = (r[0][1] + r[1][0]) / s;
        z = (r[0][2] + r[2][0]) / s;
    } else if r[1][1] > r[2][2] {
        let s = 2.0 * (1.0 + r[1][1] - r[0][0] - r[2][2]).sqrt();
        w = (r[0][2] - r[2][0]) / s;
        x = (r[0][1] + r[1][0]) / s;
        y = 0.25 * s;
        z = (r[1][2] + r[2][1]) / s;
    } else {
        let s = 2.0 * (1.0 + r[2][2] - r[0][0] - r[1][1]).sqrt();
        w = (r[1][0] - r[0][1]) / s;
        x = (r[0][2] + r[2][0]) / s;
        y = (r[1][2] + r[2][1]) / s;
        z = 0.25 * s;
    }
    let sign = if w < 0.0 { -1.0 } else { 1.0 };
    let n = (w * w + x * x + y * y + z * z).sqrt();
    [x, y, z].map(|v| sign * v / n)
}

/// nibabel's rule: sform when sform_code > 0, else qform when qform_code > 0, else the
/// Analyze-style base affine from the shape and pixdim (x flipped, centred).
pub(super) fn best_affine(
    h: &RawHeader,
    dims: [usize; 3],
    pixdim: &[f64; 8],
) -> Result<[[f64; 4]; 4], String> {
    let mut a = [[0.0; 4]; 4];
    a[3][3] = 1.0;
    if h.sform_code > 0 {
        a[..3].copy_from_slice(&h.srow);
    } else if h.qform_code > 0 {
        let [b, c, d, qx, qy, qz] = h.quatern;
        let r = rotation([quaternion_w(b, c, d)?, b, c, d]);
        let qfac = if pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let zooms = [pixdim[1], pixdim[2], pixdim[3] * qfac];
        for row in 0..3 {
            for col in 0..3 {
                a[row][col] = r[row][col] * zooms[col];
            }
        }
        a[0][3] = qx;
        a[1][3] = qy;
        a[2][3] = qz;
    } else {
        let zooms = [-pixdim[1], pixdim[2], pixdim[3]];
        for n in 0..3 {
            a[n][n] = zooms[n];
            a[n][3] = -((dims[n] as f64 - 1.0) / 2.0) * zooms[n];
        }
    }
    Ok(a)
}

pub(super) struct Layout {
    pub(super) dims: [usize; 3],
    pub(super) dtype: DataType,
    pub(super) data_start: usize,
    pub(super) data_end: usize,
}

pub(super) fn check_header(h: &RawHeader, max_voxels: u64) -> Result<Layout, String> {
    let ndim = h.dim[0];
    if !(1..=7).contains(&ndim) {
        return Err(format!("dim[0] = {ndim} is outside 1..7 (corrupt header)"));
    }
    for n in 1..=ndim as usize {
        if h.dim[n] < 1 {
            return Err(format!(
                "dim[{n}] = {} (every used dimension must be at least 1)",
                h.dim[n]
            ));
        }
    }
    if ndim < 3 {
        return Err(format!("a {ndim}-D image; a modality must be a 3-D volume"));
    }
    // Checked: NIfTI-2 dims are 64-bit, and 2^32 × 2^32 would wrap to 0.
    let extra = (4..=ndim as usize)
        .try_fold(1i64, |p, n| p.checked_mul(h.dim[n]))
        .unwrap_or(i64::MAX);
    if extra > 1 {
        return Err(format!(
            "a {ndim}-D image with {extra} volumes ({}); a modality must be a single 3-D volume",
            (1..=ndim as usize)
                .map(|n| h.dim[n].to_string())
                .collect::<Vec<_>>()
                .join("×")
        ));
    }
    let dtype = DataType::from_code(h.datatype)?;
    if h.bitpix as usize != dtype.size() * 8 {
        return Err(format!(
            "bitpix {} contradicts datatype {} ({} bits)",
            h.bitpix,
            dtype.name(),
            dtype.size() * 8
        ));
    }
    for n in 1..=3 {
        let p = h.pixdim[n];
        if p.is_nan() || p < 0.0 || p.is_infinite() {
            return Err(format!("pixdim[{n}] = {p}: voxel sizes must be positive"));
        }
        if p > 0.0 && p < MIN_PIXDIM {
            return Err(format!(
                "pixdim[{n}] = {p:e}: not a voxel size in mm (at least {MIN_PIXDIM:e})"
            ));
        }
        if p > MAX_PIXDIM {
            return Err(format!(
                "pixdim[{n}] = {p}: not a voxel size in mm (at most {MAX_PIXDIM})"
            ));
        }
    }
    let voxels = (h.dim[1] as u64)
        .checked_mul(h.dim[2] as u64)
        .and_then(|v| v.checked_mul(h.dim[3] as u64))
        .filter(|&v| v <= max_voxels)
        .ok_or_else(|| {
            format!(
                "the header claims {}×{}×{} voxels, more than nvnet accepts ({max_voxels}{})",
                h.dim[1],
                h.dim[2],
                h.dim[3],
                if max_voxels < MAX_VOXELS {
                    " here; the nvnet command reads larger volumes"
                } else {
                    ""
                }
            )
        })?;
    let header_size = if h.version == 1 {
        NIFTI1_HEADER
    } else {
        NIFTI2_HEADER
    };
    let off = h.vox_offset;
    if !off.is_finite() || off < header_size as f64 {
        return Err(format!(
            "vox_offset {off} lies inside the {header_size}-byte header"
        ));
    }
    if off > (header_size + MAX_EXTENSIONS) as f64 {
        return Err(format!(
            "vox_offset {off} puts the voxel data {} MiB past the header; nvnet reads at most {} \
             MiB of header extensions",
            (off as u64).saturating_sub(header_size as u64) >> 20,
            MAX_EXTENSIONS >> 20
        ));
    }
    let data_start = off.floor() as usize;
    let data_end = data_start
        .checked_add(voxels as usize * dtype.size())
        .ok_or("the data size overflows")?;
    Ok(Layout {
        dims: [h.dim[1] as usize, h.dim[2] as usize, h.dim[3] as usize],
        dtype,
        data_start,
        data_end,
    })
}
