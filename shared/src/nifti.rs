//! NIfTI-1 and NIfTI-2 reading and NIfTI-1 writing, on bytes (for the browser) and on paths.
//!
//! The reader trusts nothing in a header: every size is checked against the data actually
//! present before anything is allocated, and `.nii.gz` is decompressed with a cap, so that a
//! hostile or broken file gets a [`NiftiError`] naming it and the problem, never a panic or an
//! allocation the file cannot back.

use std::io::{BufRead, Read};

/// The largest volume accepted: 2^28 voxels, e.g. 1024×1024×256 (BraTS is 240×240×155 ≈ 9·10⁶).
/// With float64 that is 2 GiB of decompressed data at most, which a browser tab can hold.
pub const MAX_VOXELS: u64 = 1 << 28;

/// The largest voxel size accepted, mm: larger ones make volumes and distances infinite.
const MAX_PIXDIM: f64 = 1e4;
/// The smallest (other than 0, read as 1 mm): outputs store float32, and must keep the grid.
const MIN_PIXDIM: f64 = 1e-4;

/// The most bytes of header extensions (between the header and `vox_offset`) read; real ones
/// (DICOM fields, CIFTI XML) are far smaller.
const MAX_EXTENSIONS: usize = 64 << 20;

/// Why a file was refused. The message names the file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct NiftiError {
    pub file: String,
    pub problem: String,
}

/// A NIfTI datatype nvnet reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl DataType {
    pub(crate) fn from_code(code: i16) -> Result<Self, String> {
        Ok(match code {
            2 => Self::U8,
            256 => Self::I8,
            512 => Self::U16,
            4 => Self::I16,
            768 => Self::U32,
            8 => Self::I32,
            1280 => Self::U64,
            1024 => Self::I64,
            16 => Self::F32,
            64 => Self::F64,
            32 | 1792 | 2048 => {
                return Err(format!(
                    "complex datatype (code {code}) is not an MRI intensity image"
                ));
            }
            128 | 2304 => {
                return Err(format!(
                    "RGB datatype (code {code}) is not an MRI intensity image"
                ));
            }
            1536 => return Err("128-bit float datatype (code 1536) is not supported".into()),
            other => return Err(format!("unknown datatype code {other}")),
        })
    }

    pub fn code(self) -> i16 {
        match self {
            Self::U8 => 2,
            Self::I8 => 256,
            Self::U16 => 512,
            Self::I16 => 4,
            Self::U32 => 768,
            Self::I32 => 8,
            Self::U64 => 1280,
            Self::I64 => 1024,
            Self::F32 => 16,
            Self::F64 => 64,
        }
    }

    pub fn size(self) -> usize {
        match self {
            Self::U8 | Self::I8 => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
        }
    }

    /// numpy's name, as `nvnet inspect` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::U8 => "uint8",
            Self::I8 => "int8",
            Self::U16 => "uint16",
            Self::I16 => "int16",
            Self::U32 => "uint32",
            Self::I32 => "int32",
            Self::U64 => "uint64",
            Self::I64 => "int64",
            Self::F32 => "float32",
            Self::F64 => "float64",
        }
    }
}

/// The geometry of a volume: everything a writer needs to put a result on exactly its grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Geometry {
    pub dims: [usize; 3],
    /// pixdim[0..8] (pixdim[0] is qfac).
    pub pixdim: [f64; 8],
    pub qform_code: i32,
    pub sform_code: i32,
    /// quatern_b, c, d, qoffset_x, y, z.
    pub quatern: [f64; 6],
    pub srow: [[f64; 4]; 3],
    pub xyzt_units: i32,
    /// The voxel-to-world affine by nibabel's rule.
    pub affine: [[f64; 4]; 4],
}

impl Geometry {
    /// Voxel spacing in mm (|pixdim[1..=3]|, a zero read as 1).
    pub fn spacing(&self) -> [f64; 3] {
        [1, 2, 3].map(|i| {
            if self.pixdim[i] == 0.0 {
                1.0
            } else {
                self.pixdim[i].abs()
            }
        })
    }

    /// Largest absolute difference between two affines (mm).
    pub fn affine_difference(&self, other: &Geometry) -> f64 {
        (0..3)
            .flat_map(|r| (0..4).map(move |c| (r, c)))
            .map(|(r, c)| (self.affine[r][c] - other.affine[r][c]).abs())
            .fold(0.0, f64::max)
    }
}

/// Voxel values as stored in the file, in file order (i fastest).
#[derive(Debug, Clone, PartialEq)]
pub enum Voxels {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Voxels {
    pub fn len(&self) -> usize {
        match self {
            Voxels::U8(v) => v.len(),
            Voxels::I8(v) => v.len(),
            Voxels::U16(v) => v.len(),
            Voxels::I16(v) => v.len(),
            Voxels::U32(v) => v.len(),
            Voxels::I32(v) => v.len(),
            Voxels::U64(v) => v.len(),
            Voxels::I64(v) => v.len(),
            Voxels::F32(v) => v.len(),
            Voxels::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stored value at a linear index, widened to f64 (before scaling).
    pub fn raw(&self, i: usize) -> f64 {
        match self {
            Voxels::U8(v) => v[i] as f64,
            Voxels::I8(v) => v[i] as f64,
            Voxels::U16(v) => v[i] as f64,
            Voxels::I16(v) => v[i] as f64,
            Voxels::U32(v) => v[i] as f64,
            Voxels::I32(v) => v[i] as f64,
            Voxels::U64(v) => v[i] as f64,
            Voxels::I64(v) => v[i] as f64,
            Voxels::F32(v) => v[i] as f64,
            Voxels::F64(v) => v[i],
        }
    }
}

/// A 3-D image read from a NIfTI file.
#[derive(Debug, Clone)]
pub struct Image {
    /// The file it came from (for messages).
    pub source: String,
    pub dtype: DataType,
    pub geometry: Geometry,
    pub voxels: Voxels,
    /// scl_slope / scl_inter as applied (1 / 0 when the header says no scaling).
    pub slope: f64,
    pub inter: f64,
    /// Things the user should know (NaN replaced, zero pixdim read as 1 mm, ...).
    pub warnings: Vec<String>,
}

impl Image {
    pub fn dims(&self) -> [usize; 3] {
        self.geometry.dims
    }

    /// The linear index of voxel (i, j, k) in file order.
    pub fn index(&self, i: usize, j: usize, k: usize) -> usize {
        let [nx, ny, _] = self.geometry.dims;
        i + nx * (j + ny * k)
    }

    /// The value at a linear index after scaling, NaN/Inf as stored.
    pub fn value(&self, index: usize) -> f64 {
        self.voxels.raw(index) * self.slope + self.inter
    }

    pub fn at(&self, i: usize, j: usize, k: usize) -> f64 {
        self.value(self.index(i, j, k))
    }

    /// Scaled values in file order as f32, with NaN, Inf and values beyond the f32 range
    /// replaced by 0 (the network never sees them; the count is reported in `warnings` when the
    /// image is read).
    pub fn to_f32(&self) -> Vec<f32> {
        (0..self.voxels.len())
            .map(|i| usable_f32(self.value(i)).unwrap_or(0.0))
            .collect()
    }

    /// Minimum and maximum of the finite scaled values.
    pub fn min_max(&self) -> (f64, f64) {
        (0..self.voxels.len())
            .map(|i| self.value(i))
            // What the network is given: values that are not usable are read as 0.
            .filter(|&v| usable_f32(v).is_some())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
    }
}

/// A value the network can take: finite in f32.
fn usable_f32(v: f64) -> Option<f32> {
    let f = v as f32;
    f.is_finite().then_some(f)
}

/// A little reader of fixed-layout header fields in either byte order.
struct Fields<'a> {
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
struct RawHeader {
    version: u8,
    big: bool,
    dim: [i64; 8],
    datatype: i16,
    bitpix: i16,
    pixdim: [f64; 8],
    vox_offset: f64,
    scl_slope: f64,
    scl_inter: f64,
    qform_code: i32,
    sform_code: i32,
    quatern: [f64; 6],
    srow: [[f64; 4]; 3],
    xyzt_units: i32,
}

const NIFTI1_HEADER: usize = 348;
const NIFTI2_HEADER: usize = 540;

fn parse_header(bytes: &[u8]) -> Result<RawHeader, String> {
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
fn quaternion_w(b: f64, c: f64, d: f64) -> Result<f64, String> {
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
fn rotation([w, x, y, z]: [f64; 4]) -> [[f64; 3]; 3] {
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

/// nibabel's rule: sform when sform_code > 0, else qform when qform_code > 0, else the
/// Analyze-style base affine from the shape and pixdim (x flipped, centred).
fn best_affine(
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

/// Read a NIfTI image from its bytes (`.nii` or `.nii.gz`); `name` is used in messages.
pub fn read_bytes(bytes: &[u8], name: &str) -> Result<Image, NiftiError> {
    read_from(bytes, name, MAX_VOXELS)
}

/// The largest volume the web page reads: 2^24 voxels (e.g. 256×256×256; BraTS is 240×240×155).
/// A case's files, decoded images and working copies must fit wasm32's 4 GiB with the model.
pub const PAGE_MAX_VOXELS: u64 = 1 << 24;

/// [`read_bytes`] with a lower cap on the voxels (the web page, in a 4 GiB memory), checked on
/// the header before anything is decoded.
pub fn read_bytes_within(bytes: &[u8], name: &str, max_voxels: u64) -> Result<Image, NiftiError> {
    read_from(bytes, name, max_voxels.min(MAX_VOXELS))
}

/// Read a NIfTI image from a path. Only a regular file is read (a named pipe or a device is
/// refused), and of a `.nii` only what its header announces.
pub fn read_path(path: &std::path::Path) -> Result<Image, NiftiError> {
    let name = path.display().to_string();
    let file = crate::fsutil::open_regular(path).map_err(|e| NiftiError {
        file: name.clone(),
        problem: e.to_string(),
    })?;
    read_from(std::io::BufReader::new(file), &name, MAX_VOXELS)
}

/// Read from a stream: the header first, then exactly the bytes it announces, never more, so
/// that a small file that claims 10¹² voxels, puts its data a terabyte in, or inflates without
/// end is refused, not allocated.
fn read_from<R: BufRead>(mut source: R, name: &str, max_voxels: u64) -> Result<Image, NiftiError> {
    let err = |problem: String| NiftiError {
        file: name.to_string(),
        problem,
    };
    let gzip = source
        .fill_buf()
        .map_err(|e| err(e.to_string()))?
        .starts_with(&[0x1f, 0x8b]);
    let corrupt = |e: std::io::Error| {
        err(if gzip {
            format!("truncated or corrupt gzip stream ({e})")
        } else {
            e.to_string()
        })
    };
    let mut stream: Box<dyn Read + '_> = if gzip {
        Box::new(flate2::bufread::MultiGzDecoder::new(source))
    } else {
        Box::new(source)
    };
    let mut all = Vec::with_capacity(NIFTI2_HEADER);
    (&mut stream)
        .take(NIFTI2_HEADER as u64)
        .read_to_end(&mut all)
        .map_err(corrupt)?;
    let header = parse_header(&all).map_err(err)?;
    let layout = check_header(&header, max_voxels).map_err(err)?;
    let remaining = (layout.data_end as u64).saturating_sub(all.len() as u64);
    (&mut stream)
        .take(remaining)
        .read_to_end(&mut all)
        .map_err(corrupt)?;
    if gzip {
        // Read on to the end of the stream (bounded) so that a cut-off or corrupted trailer
        // (CRC, length) is noticed even when the voxel data itself came through.
        (&mut stream)
            .take(1 << 20)
            .read_to_end(&mut Vec::new())
            .map_err(corrupt)?;
    }
    decode(&all, header, layout, name)
}

struct Layout {
    dims: [usize; 3],
    dtype: DataType,
    data_start: usize,
    data_end: usize,
}

fn check_header(h: &RawHeader, max_voxels: u64) -> Result<Layout, String> {
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

fn decode(bytes: &[u8], h: RawHeader, layout: Layout, name: &str) -> Result<Image, NiftiError> {
    let err = |problem: String| NiftiError {
        file: name.to_string(),
        problem,
    };
    if layout.data_start > bytes.len() {
        return Err(err(format!(
            "vox_offset {} is past the end of the data ({} bytes)",
            layout.data_start,
            bytes.len()
        )));
    }
    if layout.data_end > bytes.len() {
        return Err(err(format!(
            "truncated: the header announces {} bytes of voxel data, the file holds {}",
            layout.data_end - layout.data_start,
            bytes.len() - layout.data_start
        )));
    }
    let data = &bytes[layout.data_start..layout.data_end];
    let size = layout.dtype.size();
    macro_rules! values {
        ($t:ty, $variant:ident) => {
            Voxels::$variant(
                data.chunks_exact(size)
                    .map(|c| {
                        let mut b = [0u8; std::mem::size_of::<$t>()];
                        b.copy_from_slice(c);
                        if h.big {
                            <$t>::from_be_bytes(b)
                        } else {
                            <$t>::from_le_bytes(b)
                        }
                    })
                    .collect(),
            )
        };
    }
    let voxels = match layout.dtype {
        DataType::U8 => Voxels::U8(data.to_vec()),
        DataType::I8 => Voxels::I8(data.iter().map(|&b| b as i8).collect()),
        DataType::U16 => values!(u16, U16),
        DataType::I16 => values!(i16, I16),
        DataType::U32 => values!(u32, U32),
        DataType::I32 => values!(i32, I32),
        DataType::U64 => values!(u64, U64),
        DataType::I64 => values!(i64, I64),
        DataType::F32 => values!(f32, F32),
        DataType::F64 => values!(f64, F64),
    };
    let mut warnings = Vec::new();
    let mut pixdim = h.pixdim;
    for (n, p) in pixdim.iter_mut().enumerate().take(4).skip(1) {
        if *p == 0.0 {
            warnings.push(format!("{name}: pixdim[{n}] is 0; read as 1 mm"));
            *p = 1.0;
        }
    }
    let (slope, inter) = if h.scl_slope == 0.0 || !h.scl_slope.is_finite() {
        (1.0, 0.0)
    } else {
        (
            h.scl_slope,
            if h.scl_inter.is_finite() {
                h.scl_inter
            } else {
                0.0
            },
        )
    };
    let geometry = Geometry {
        dims: layout.dims,
        pixdim,
        qform_code: h.qform_code,
        sform_code: h.sform_code,
        quatern: h.quatern,
        srow: h.srow,
        xyzt_units: h.xyzt_units,
        affine: best_affine(&h, layout.dims, &pixdim).map_err(&err)?,
    };
    if geometry.affine.iter().flatten().any(|v| !v.is_finite()) {
        let which = if h.sform_code > 0 {
            "sform (srow_x/y/z)"
        } else {
            "qform (quatern_b/c/d, qoffset_x/y/z)"
        };
        return Err(err(format!(
            "the {which} holds NaN or Inf: the voxel-to-world transform is unusable"
        )));
    }
    let image = Image {
        source: name.to_string(),
        dtype: layout.dtype,
        geometry,
        voxels,
        slope,
        inter,
        warnings,
    };
    let non_finite = (0..image.voxels.len())
        .filter(|&i| usable_f32(image.value(i)).is_none())
        .count();
    let mut image = image;
    if non_finite > 0 {
        image.warnings.push(format!(
            "{name}: {non_finite} NaN/Inf (or beyond float32) voxel values are read as 0"
        ));
    }
    Ok(image)
}

// ---------------------------------------------------------------------------------------------
// Writing.

/// What to write on a reference grid.
#[derive(Clone, Copy)]
pub enum OutputData<'a> {
    /// A label map (uint8), one value per voxel in file order.
    Labels(&'a [u8]),
    /// Intensities stored as int16 (as most BraTS images are), one per voxel in file order.
    Int16(&'a [i16]),
    /// Float volumes (float32): `channels` volumes one after the other, written as a 4-D image
    /// when there are several.
    Floats { values: &'a [f32], channels: usize },
}

/// Encode `data` as a gzipped NIfTI-1 file on exactly `grid`: same dims, pixdim, qform/sform
/// and their codes, units; scl_slope 1, scl_inter 0.
pub fn encode_on_grid(grid: &Geometry, data: OutputData<'_>) -> Result<Vec<u8>, EncodeError> {
    let voxels: usize = grid.dims.iter().product();
    let length = |values: usize, channels: usize| EncodeError::Length {
        values,
        channels,
        voxels,
    };
    let (dtype, channels, payload): (DataType, usize, Vec<u8>) = match data {
        OutputData::Labels(v) => {
            if v.len() != voxels {
                return Err(length(v.len(), 1));
            }
            (DataType::U8, 1, v.to_vec())
        }
        OutputData::Int16(v) => {
            if v.len() != voxels {
                return Err(length(v.len(), 1));
            }
            (
                DataType::I16,
                1,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        }
        OutputData::Floats { values, channels } => {
            if channels == 0 || values.len() != voxels * channels {
                return Err(length(values.len(), channels));
            }
            (
                DataType::F32,
                channels,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        }
    };
    let mut h = vec![0u8; 352];
    let put_i16 =
        |h: &mut Vec<u8>, at: usize, v: i16| h[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put_f32 = |h: &mut Vec<u8>, at: usize, v: f64| {
        h[at..at + 4].copy_from_slice(&(v as f32).to_le_bytes())
    };
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    let dim: [i16; 8] = [
        if channels > 1 { 4 } else { 3 },
        grid.dims[0] as i16,
        grid.dims[1] as i16,
        grid.dims[2] as i16,
        channels as i16,
        1,
        1,
        1,
    ];
    if grid.dims.iter().any(|&d| d > i16::MAX as usize) {
        return Err(EncodeError::TooLarge(grid.dims));
    }
    for (n, d) in dim.iter().enumerate() {
        put_i16(&mut h, 40 + 2 * n, *d);
    }
    put_i16(&mut h, 70, dtype.code());
    put_i16(&mut h, 72, (dtype.size() * 8) as i16);
    let mut pixdim = grid.pixdim;
    if pixdim[0] == 0.0 {
        pixdim[0] = 1.0;
    }
    pixdim[4] = if channels > 1 { 1.0 } else { pixdim[4] };
    for (n, p) in pixdim.iter().enumerate() {
        put_f32(&mut h, 76 + 4 * n, *p);
    }
    put_f32(&mut h, 108, 352.0);
    put_f32(&mut h, 112, 1.0);
    put_f32(&mut h, 116, 0.0);
    h[123] = grid.xyzt_units as u8;
    put_i16(&mut h, 252, grid.qform_code as i16);
    put_i16(&mut h, 254, grid.sform_code as i16);
    for (n, q) in grid.quatern.iter().enumerate() {
        put_f32(&mut h, 256 + 4 * n, *q);
    }
    for (r, row) in grid.srow.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            put_f32(&mut h, 280 + 16 * r + 4 * c, *v);
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    h.extend_from_slice(&payload);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Into memory: the writer cannot fail.
    std::io::Write::write_all(&mut gz, &h).expect("gzip into memory");
    Ok(gz.finish().expect("gzip into memory"))
}

/// Data that does not fit the grid it is to be written on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{values} values for {channels} channel(s) of {voxels} voxels")]
    Length {
        values: usize,
        channels: usize,
        voxels: usize,
    },
    #[error("dimensions {0:?} too large for NIfTI-1")]
    TooLarge([usize; 3]),
}

/// Write an image on `grid` to `path` atomically.
pub fn write_on_grid(
    path: &std::path::Path,
    grid: &Geometry,
    data: OutputData<'_>,
) -> Result<(), NiftiError> {
    let file = path.display().to_string();
    let bytes = encode_on_grid(grid, data).map_err(|e| NiftiError {
        file: file.clone(),
        problem: e.to_string(),
    })?;
    crate::fsutil::write_atomic(path, &bytes).map_err(|e| NiftiError {
        file,
        problem: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A qform-only file (sform_code 0) rotated 180° about y, as FSL writes one: its quatern_c is
    /// the float32 just below 1, so 1 − c² = 1.2e-7, which nibabel reads as w = 0 (taking its
    /// square root put the affine off nibabel's, and a case with one such copy was refused as
    /// not co-registered).
    #[test]
    fn a_qform_quaternion_within_float32_of_unit_length_is_read_as_nibabel_reads_it() {
        let c = f64::from(0.999_999_94_f32);
        let grid = Geometry {
            dims: [4, 3, 2],
            pixdim: [-1.0, 1.5, 2.0, 2.5, 0.0, 0.0, 0.0, 0.0],
            qform_code: 1,
            sform_code: 0,
            quatern: [0.0, c, 0.0, 10.0, -20.0, 30.0],
            srow: [[0.0; 4]; 3],
            xyzt_units: 2,
            affine: [[0.0; 4]; 4],
        };
        let bytes = encode_on_grid(&grid, OutputData::Labels(&[0; 24])).unwrap();
        let read = read_bytes(&bytes, "qform.nii.gz").unwrap().geometry;
        // w = 0, b = d = 0: R = diag(−1, 1, −1) (normalised); columns scaled by (1.5, 2.0, −2.5)
        // (qfac −1). testdata/qform holds nibabel's own reading of such a file.
        let expected = [
            [-1.5, 0.0, 0.0, 10.0],
            [0.0, 2.0, 0.0, -20.0],
            [0.0, 0.0, 2.5, 30.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        for (row, want) in read.affine.iter().zip(&expected) {
            for (v, w) in row.iter().zip(want) {
                assert!((v - w).abs() < 1e-12, "{:?}", read.affine);
            }
        }
        assert_eq!(quaternion_w(0.0, 0.0, 0.0).unwrap(), 1.0);
        assert!((quaternion_w(0.6, 0.0, 0.0).unwrap() - 0.8).abs() < 1e-15);
        let e = quaternion_w(0.6, 0.6, 0.6).unwrap_err();
        assert!(e.contains("more than 1"), "{e}");
    }
}
