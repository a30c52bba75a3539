//! A series: the images of one SeriesInstanceUID, sorted along the slice normal into a volume,
//! with the grid that DICOM's geometry gives it (ImageOrientationPatient, PixelSpacing, the
//! slice positions), in NIfTI's world (RAS: DICOM's LPS with x and y negated).

use std::collections::BTreeMap;

use super::slice::{Slice, read_frames};
use super::{DicomError, Files};
use crate::io::nifti::{DataType, Geometry, Image, Voxels};

/// Largest difference between the slices' direction cosines, and the largest departure of a
/// slice from the evenly spaced line of slices (as a fraction of the spacing), that still make
/// one volume. Scanners write positions to 1e-4 mm or so; a missing slice is a whole spacing off.
const ORIENTATION_TOLERANCE: f64 = 1e-3;
const POSITION_TOLERANCE: f64 = 0.05;

/// The images of one series as found (in the order of the files).
#[derive(Debug, Clone)]
pub struct Series {
    pub slices: Vec<Slice>,
}

/// A series sorted into a volume: its slices from first to last along the normal, its grid.
#[derive(Debug, Clone)]
pub struct Stack {
    pub slices: Vec<Slice>,
    pub geometry: Geometry,
}

impl Series {
    fn first(&self) -> &Slice {
        &self.slices[0]
    }
    pub fn uid(&self) -> &str {
        &self.first().series_uid
    }
    pub fn number(&self) -> Option<i64> {
        self.first().series_number
    }
    pub fn description(&self) -> &str {
        &self.first().series_description
    }
    pub fn protocol(&self) -> &str {
        &self.first().protocol_name
    }
    pub fn patient_id(&self) -> &str {
        &self.first().patient_id
    }
    pub fn image_type(&self) -> &[String] {
        &self.first().image_type
    }
    pub fn contrast_agent(&self) -> bool {
        self.slices.iter().any(|s| s.contrast_agent)
    }

    /// "series 7 'T1 MPRAGE POST'" (the UID when there is no number).
    pub fn label(&self) -> String {
        let id = match self.number() {
            Some(n) => n.to_string(),
            None => self.uid().to_string(),
        };
        let name = if self.description().is_empty() {
            self.protocol()
        } else {
            self.description()
        };
        if name.is_empty() {
            format!("series {id}")
        } else {
            format!("series {id} '{name}'")
        }
    }

    /// A localizer or scout (ImageType says so, or its name does).
    pub fn is_localizer(&self) -> bool {
        let name = format!("{} {}", self.description(), self.protocol()).to_uppercase();
        self.image_type().iter().any(|t| t == "LOCALIZER")
            || [
                "LOCALIZER",
                "LOCALISER",
                "SCOUT",
                "SURVEY",
                "3-PLANE",
                "3PLANE",
                "AAHEAD",
            ]
            .iter()
            .any(|w| name.contains(w))
    }

    /// Computed from other images (a reformat, a subtraction, a map), not acquired.
    pub fn is_derived(&self) -> bool {
        self.image_type().first().is_some_and(|t| t == "DERIVED")
    }

    /// Sort the slices into a volume and find its grid, or say why they do not make one.
    pub fn stack(&self) -> Result<Stack, DicomError> {
        self.sorted().map_err(|problem| DicomError::Series {
            series: self.label(),
            problem,
        })
    }

    fn sorted(&self) -> Result<Stack, String> {
        let first = self.first();
        if first.samples_per_pixel != 1 {
            return Err(format!(
                "{} samples per pixel (a colour image, not an MR magnitude image)",
                first.samples_per_pixel
            ));
        }
        if let Some(s) = self.slices.iter().find(|s| !s.decodable) {
            return Err(format!(
                "its pixel data is compressed as {}, which nvnet cannot decode (export the series \
                 uncompressed, or convert it with dcm2niix)",
                s.transfer_syntax
            ));
        }
        let (Some(orientation), Some(spacing)) = (first.orientation, first.pixel_spacing) else {
            return Err(
                "no ImageOrientationPatient or PixelSpacing: its images cannot be placed in space"
                    .into(),
            );
        };
        for s in &self.slices {
            if (s.rows, s.columns) != (first.rows, first.columns) {
                return Err(format!(
                    "images of {} × {} and {} × {} pixels in one series",
                    first.rows, first.columns, s.rows, s.columns
                ));
            }
            let o = s.orientation.unwrap_or([f64::NAN; 6]);
            if (0..6).any(|i| !close(o[i], orientation[i], ORIENTATION_TOLERANCE)) {
                return Err(format!(
                    "its images are not parallel (ImageOrientationPatient {orientation:?} and \
                     {o:?}): it is not one volume"
                ));
            }
            let p = s.pixel_spacing.unwrap_or([f64::NAN; 2]);
            if (0..2).any(|i| !close(p[i], spacing[i], 1e-3 * spacing[i])) {
                return Err(format!(
                    "PixelSpacing differs between its images ({spacing:?} and {p:?})"
                ));
            }
            if s.position.is_none() {
                return Err("an image without ImagePositionPatient".into());
            }
        }
        if spacing.iter().any(|&s| s.is_nan() || s <= 0.0) {
            return Err(format!("PixelSpacing {spacing:?} is not positive"));
        }
        let row = unit([orientation[0], orientation[1], orientation[2]])?;
        let column = unit([orientation[3], orientation[4], orientation[5]])?;
        if dot(row, column).abs() > ORIENTATION_TOLERANCE {
            return Err(format!(
                "ImageOrientationPatient {orientation:?}: its row and column directions are not \
                 perpendicular"
            ));
        }
        let normal = cross(row, column);

        let mut slices = self.slices.clone();
        let along = |s: &Slice| dot(normal, s.position.unwrap_or_default());
        slices.sort_by(|a, b| along(a).total_cmp(&along(b)));
        let n = slices.len();
        let p0 = slices[0].position.unwrap_or_default();
        let step = if n > 1 {
            let last = slices[n - 1].position.unwrap_or_default();
            (0..3)
                .map(|i| (last[i] - p0[i]) / (n - 1) as f64)
                .collect::<Vec<_>>()
        } else {
            let thickness = first.slice_thickness.filter(|t| *t > 0.0).unwrap_or(1.0);
            normal.iter().map(|x| x * thickness).collect()
        };
        let step = [step[0], step[1], step[2]];
        let gap = norm(step);
        if n > 1 {
            check_spacing(&slices, p0, step, gap, normal)?;
        }

        // Voxel (i, j, k) = (column, row, slice): i along the row direction.
        let lps = [
            row.map(|x| x * spacing[1]),
            column.map(|x| x * spacing[0]),
            step,
        ];
        let mut affine = [[0.0; 4]; 4];
        for r in 0..3 {
            // LPS → RAS: x and y change sign.
            let sign = if r < 2 { -1.0 } else { 1.0 };
            for (c, axis) in lps.iter().enumerate() {
                affine[r][c] = sign * axis[r];
            }
            affine[r][3] = sign * p0[r];
        }
        affine[3][3] = 1.0;
        let geometry = Geometry::from_affine([first.columns, first.rows, n], affine);
        Ok(Stack { slices, geometry })
    }

    /// Read the series' pixels into a volume on its grid (float32, the modality's values).
    pub fn load(&self, files: &dyn Files) -> Result<Image, DicomError> {
        let stack = self.stack()?;
        let [nx, ny, nz] = stack.geometry.dims;
        let mut values = Vec::new();
        values
            .try_reserve_exact(nx * ny * nz)
            .map_err(|_| DicomError::Series {
                series: self.label(),
                problem: format!("not enough memory for {nx} × {ny} × {nz} voxels"),
            })?;
        values.resize(nx * ny * nz, 0.0);
        // Each file read and decoded once: one image, or (enhanced) every frame of the series.
        let mut by_file: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
        for (k, s) in stack.slices.iter().enumerate() {
            by_file.entry(s.file).or_default().push((k, s.frame));
        }
        for (file, frames) in by_file {
            let name = files.name(file);
            let bytes = files.read(file).map_err(|problem| DicomError::File {
                file: name.to_string(),
                problem,
            })?;
            let wanted: Vec<usize> = frames.iter().map(|&(_, f)| f).collect();
            let pixels =
                read_frames(&bytes, ny, nx, &wanted).map_err(|problem| DicomError::File {
                    file: name.to_string(),
                    problem: format!("{} (in {})", problem, self.label()),
                })?;
            for ((k, _), slice) in frames.iter().zip(pixels) {
                values[k * nx * ny..(k + 1) * nx * ny].copy_from_slice(&slice);
            }
        }
        let warnings = if self.slices.len() < 2 {
            vec![format!(
                "{} is a single image: its slice thickness was taken as the spacing",
                self.label()
            )]
        } else {
            Vec::new()
        };
        Ok(Image {
            source: self.label(),
            dtype: DataType::F32,
            geometry: stack.geometry,
            voxels: Voxels::F32(values),
            slope: 1.0,
            inter: 0.0,
            warnings,
        })
    }
}

/// Every slice on the line p0 + k·step, the k-th at its place: a slice missing, two at one
/// place, or uneven spacing make no volume.
fn check_spacing(
    slices: &[Slice],
    p0: [f64; 3],
    step: [f64; 3],
    gap: f64,
    normal: [f64; 3],
) -> Result<(), String> {
    let along = |s: &Slice| dot(normal, s.position.unwrap_or_default());
    let gaps: Vec<f64> = slices
        .windows(2)
        .map(|w| along(&w[1]) - along(&w[0]))
        .collect();
    if let Some((k, _)) = gaps
        .iter()
        .enumerate()
        .find(|(_, g)| g.abs() < POSITION_TOLERANCE * gap.max(1e-3))
    {
        return Err(format!(
            "two images at one position ({:.3} mm along the normal): several echoes or time \
             points in one series, which nvnet does not separate",
            along(&slices[k])
        ));
    }
    let smallest = gaps.iter().copied().fold(f64::INFINITY, f64::min);
    let largest = gaps.iter().copied().fold(0.0, f64::max);
    if largest > (1.0 + POSITION_TOLERANCE) * smallest {
        let k = gaps.iter().position(|&g| g == largest).unwrap_or(0);
        let (a, b) = (along(&slices[k]), along(&slices[k + 1]));
        let ratio = largest / smallest;
        return Err(
            if (ratio - ratio.round()).abs() < POSITION_TOLERANCE && ratio >= 1.5 {
                format!(
                    "{} slice(s) missing between {a:.3} and {b:.3} mm along the normal (spacing \
                 {smallest:.3} mm elsewhere)",
                    ratio.round() as i64 - 1
                )
            } else {
                format!("its slices are unevenly spaced ({smallest:.3} to {largest:.3} mm)")
            },
        );
    }
    for (k, s) in slices.iter().enumerate() {
        let p = s.position.unwrap_or_default();
        let off = norm([0, 1, 2].map(|i| p[i] - (p0[i] + k as f64 * step[i])));
        if off > POSITION_TOLERANCE * gap {
            return Err(format!(
                "its slices are not on one line: image {} is {off:.3} mm off it",
                k + 1
            ));
        }
    }
    Ok(())
}

/// Within `tolerance` (NaN is never close).
fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

fn unit(a: [f64; 3]) -> Result<[f64; 3], String> {
    let n = norm(a);
    if (n - 1.0).abs() > 0.01 {
        return Err(format!(
            "ImageOrientationPatient holds a direction of length {n:.4}, not 1"
        ));
    }
    Ok(a.map(|x| x / n))
}
