//! NIfTI-1 and NIfTI-2 reading and NIfTI-1 writing, on bytes (for the browser) and on paths.
//!
//! The reader trusts nothing in a header: every size is checked against the data actually
//! present before anything is allocated, and `.nii.gz` is decompressed with a cap, so that a
//! hostile or broken file gets a [`NiftiError`] naming it and the problem, never a panic or an
//! allocation the file cannot back.

use std::io::{BufRead, Read};

mod header;
mod write;

use header::{Layout, NIFTI2_HEADER, RawHeader, best_affine, check_header, parse_header};
pub use write::{EncodeError, OutputData, encode_on_grid, write_on_grid};

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
    /// The world position (RAS, mm) of voxel coordinates (i, j, k), through the affine.
    pub fn world(&self, ijk: [f64; 3]) -> [f64; 3] {
        let a = &self.affine;
        [0, 1, 2].map(|r| a[r][0] * ijk[0] + a[r][1] * ijk[1] + a[r][2] * ijk[2] + a[r][3])
    }

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

    /// The grid of a voxel-to-world affine (RAS, mm), as a NIfTI header states it: the sform
    /// (scanner frame) and the qform that says the same (the rotation as a quaternion, the
    /// handedness in pixdim[0]), so that every reader, whichever form it takes, finds this grid.
    /// An affine with shear keeps it in the sform; the qform holds its nearest rotation.
    pub fn from_affine(dims: [usize; 3], affine: [[f64; 4]; 4]) -> Geometry {
        let column = |c: usize| [affine[0][c], affine[1][c], affine[2][c]];
        let zooms = [0, 1, 2].map(|c| {
            let v = column(c);
            (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
        });
        // The rotation's columns: the axes' directions (an axis of length 0 read as the identity's).
        let mut r = [[0.0; 3]; 3];
        for c in 0..3 {
            for (row, out) in r.iter_mut().enumerate() {
                out[c] = if zooms[c] > 0.0 {
                    affine[row][c] / zooms[c]
                } else if row == c {
                    1.0
                } else {
                    0.0
                };
            }
        }
        let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
            - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
            + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
        // A left-handed grid: NIfTI negates the third axis and says so with qfac = −1.
        let qfac = if det < 0.0 { -1.0 } else { 1.0 };
        for row in &mut r {
            row[2] *= qfac;
        }
        let [b, c, d] = header::quaternion_bcd(r);
        let srow = [affine[0], affine[1], affine[2]];
        Geometry {
            dims,
            pixdim: [qfac, zooms[0], zooms[1], zooms[2], 1.0, 0.0, 0.0, 0.0],
            qform_code: 1,
            sform_code: 1,
            quatern: [b, c, d, affine[0][3], affine[1][3], affine[2][3]],
            srow,
            xyzt_units: 2, // mm
            affine: [srow[0], srow[1], srow[2], [0.0, 0.0, 0.0, 1.0]],
        }
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

    /// `f` of every stored value widened to f64 (before scaling), in order: one match for the
    /// volume, where `raw` matches per value.
    pub fn map_raw<T>(&self, f: impl Fn(f64) -> T) -> Vec<T> {
        macro_rules! each {
            ($($variant:ident),*) => {
                match self {
                    $(Voxels::$variant(v) => v.iter().map(|&x| f(x as f64)).collect(),)*
                }
            };
        }
        each!(U8, I8, U16, I16, U32, I32, U64, I64, F32, F64)
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
        let (slope, inter) = (self.slope, self.inter);
        self.voxels
            .map_raw(|v| usable_f32(v * slope + inter).unwrap_or(0.0))
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
    let file = crate::io::fsutil::open_regular(path).map_err(|e| NiftiError {
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

#[cfg(test)]
mod tests {
    use super::header::{quaternion_w, rotation};
    use super::*;

    /// A grid made from an affine states it twice, as the sform and as the qform (quaternion,
    /// pixdim, qfac), and both say the affine: for rotations about every axis, with the 180°
    /// turns where the quaternion's w is 0, right- and left-handed.
    #[test]
    fn the_qform_of_a_grid_made_from_an_affine_is_its_affine() {
        let turn = |axis: usize, deg: f64| {
            let (c, s) = (deg.to_radians().cos(), deg.to_radians().sin());
            let (a, b) = ((axis + 1) % 3, (axis + 2) % 3);
            let mut r = [[0.0; 3]; 3];
            r[axis][axis] = 1.0;
            r[a][a] = c;
            r[b][b] = c;
            r[a][b] = -s;
            r[b][a] = s;
            r
        };
        let mul = |x: [[f64; 3]; 3], y: [[f64; 3]; 3]| {
            let mut m = [[0.0; 3]; 3];
            for r in 0..3 {
                for c in 0..3 {
                    m[r][c] = (0..3).map(|k| x[r][k] * y[k][c]).sum();
                }
            }
            m
        };
        for (a, b, c) in [
            (0.0, 0.0, 0.0),
            (15.0, -10.0, 33.0),
            (180.0, 0.0, 0.0),
            (0.0, 180.0, 0.0),
            (0.0, 0.0, 180.0),
            (90.0, 90.0, 0.0),
            (-170.0, 45.0, 100.0),
        ] {
            for handed in [1.0, -1.0] {
                let r = mul(mul(turn(0, a), turn(1, b)), turn(2, c));
                let zooms = [0.9, 1.1, 3.0 * handed];
                let mut affine = [[0.0; 4]; 4];
                for row in 0..3 {
                    for col in 0..3 {
                        affine[row][col] = r[row][col] * zooms[col];
                    }
                    affine[row][3] = [12.5, -7.0, 3.25][row];
                }
                affine[3][3] = 1.0;
                let g = Geometry::from_affine([10, 11, 12], affine);
                assert_eq!(g.affine, affine);
                let [qb, qc, qd, x, y, z] = g.quatern;
                let q = rotation([quaternion_w(qb, qc, qd).unwrap(), qb, qc, qd]);
                for row in 0..3 {
                    for col in 0..3 {
                        let from_qform = q[row][col]
                            * g.pixdim[col + 1]
                            * if col == 2 { g.pixdim[0] } else { 1.0 };
                        assert!(
                            (from_qform - affine[row][col]).abs() < 1e-12,
                            "({a}, {b}, {c}) handed {handed}: [{row}][{col}] {from_qform} vs {}",
                            affine[row][col]
                        );
                    }
                }
                assert_eq!([x, y, z], [12.5, -7.0, 3.25]);
                let spacing = g.spacing();
                assert!(
                    (0..3).all(|i| (spacing[i] - [0.9, 1.1, 3.0][i]).abs() < 1e-12),
                    "{spacing:?}"
                );
            }
        }
    }

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
