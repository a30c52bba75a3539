//! Writing an image on a case's grid: the label map and probabilities nvnet outputs, as gzipped
//! NIfTI-1 with the input's geometry.

use super::{DataType, Geometry, NiftiError};

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
    crate::io::fsutil::write_atomic(path, &bytes).map_err(|e| NiftiError {
        file,
        problem: e.to_string(),
    })
}
