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

/// The images of one series as found (in the order of the files): a whole SeriesInstanceUID,
/// or one echo or time point of a series that holds several at each slice position.
#[derive(Debug, Clone)]
pub struct Series {
    pub slices: Vec<Slice>,
    pub part: Option<Part>,
}

/// Which echo and time point of its series a [`Series`] is, as dcm2niix separates them: by
/// EchoNumbers (else EchoTime), and by TemporalPositionIdentifier.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// (this echo, of how many), from 1, in the order of the echo times.
    pub echo: Option<(usize, usize)>,
    pub echo_time: Option<f64>,
    /// (this time point, of how many), from 1.
    pub time: Option<(usize, usize)>,
}

impl Part {
    /// `_e2`, `_t3`, `_e2_t3`: what a series number or UID takes to name this part.
    pub fn suffix(&self) -> String {
        let mut s = String::new();
        if let Some((e, _)) = self.echo {
            s.push_str(&format!("_e{e}"));
        }
        if let Some((t, _)) = self.time {
            s.push_str(&format!("_t{t}"));
        }
        s
    }

    /// Whether this is the last of several echoes.
    pub fn is_last_echo(&self) -> bool {
        self.echo.is_some_and(|(e, n)| e == n)
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut words = Vec::new();
        if let Some((e, n)) = self.echo {
            words.push(match self.echo_time {
                Some(te) => format!("echo {e} of {n} (TE {te} ms)"),
                None => format!("echo {e} of {n}"),
            });
        }
        if let Some((t, n)) = self.time {
            words.push(format!("time point {t} of {n}"));
        }
        write!(f, "{}", words.join(", "))
    }
}

/// The images of one SeriesInstanceUID as series: the whole of it, or, when it holds several
/// images at a slice position and their echoes or time points tell them apart, one series each.
/// Images at one position that nothing tells apart stay together, and `stack` refuses them.
pub fn split(slices: Vec<Slice>) -> Vec<Series> {
    type Key = fn(&Slice) -> Option<i64>;
    let place = |s: &Slice| s.position.map(|p| p.map(|x| (x * 100.0).round() as i64));
    let mut places: Vec<_> = slices.iter().map(|s| (place(s), s.file, s.frame)).collect();
    places.sort();
    let shared = places
        .windows(2)
        .any(|w| w[0].0 == w[1].0 && w[0].0.is_some());
    if !shared {
        return vec![Series { slices, part: None }];
    }
    // Echo: EchoNumbers where they differ, else EchoTime (to 0.01 ms); time: the position.
    let distinct = |key: Key| {
        let mut v: Vec<Option<i64>> = slices.iter().map(key).collect();
        v.sort();
        v.dedup();
        v
    };
    let by_number: Key = |s| s.echo_number;
    let by_time: Key = |s| s.echo_time.map(|t| (t * 100.0).round() as i64);
    let echo_key = [by_number, by_time]
        .into_iter()
        .find(|&k| distinct(k).len() > 1);
    let times = distinct(|s| s.temporal_position);
    let echoes = echo_key.map(distinct).unwrap_or_default();
    if echoes.len() < 2 && times.len() < 2 {
        return vec![Series { slices, part: None }];
    }
    let mut groups: BTreeMap<(usize, usize), Vec<Slice>> = BTreeMap::new();
    for s in slices {
        let e = echo_key.map_or(0, |k| echoes.binary_search(&k(&s)).unwrap_or(0));
        let t = if times.len() > 1 {
            times.binary_search(&s.temporal_position).unwrap_or(0)
        } else {
            0
        };
        groups.entry((e, t)).or_default().push(s);
    }
    groups
        .into_iter()
        .map(|((e, t), slices)| {
            let echo_time = slices[0].echo_time;
            Series {
                part: Some(Part {
                    echo: (echoes.len() > 1).then_some((e + 1, echoes.len())),
                    echo_time,
                    time: (times.len() > 1).then_some((t + 1, times.len())),
                }),
                slices,
            }
        })
        .collect()
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

    /// "series 7 'T1 MPRAGE POST'" (the UID when there is no number); one echo or time point
    /// of a series: "series 4_e2 'PD+T2 TSE' echo 2 of 2 (TE 95 ms)".
    pub fn label(&self) -> String {
        let id = self.selector();
        let name = if self.description().is_empty() {
            self.protocol()
        } else {
            self.description()
        };
        let part = self
            .part
            .as_ref()
            .map(|p| format!(" {p}"))
            .unwrap_or_default();
        if name.is_empty() {
            format!("series {id}{part}")
        } else {
            format!("series {id} '{name}'{part}")
        }
    }

    /// What names this series to `--series`: its number, else its UID, with its part's suffix.
    pub fn selector(&self) -> String {
        let id = match self.number() {
            Some(n) => n.to_string(),
            None => self.uid().to_string(),
        };
        format!("{id}{}", self.suffix())
    }

    /// Its UID with its part's suffix: what names it to `--series` in any exam.
    pub fn uid_selector(&self) -> String {
        format!("{}{}", self.uid(), self.suffix())
    }

    /// Whether `selector` (a SeriesNumber or SeriesInstanceUID, with the part's suffix for one
    /// echo or time point) names this series.
    pub fn is_named(&self, selector: &str) -> bool {
        let suffix = self.suffix();
        let Some(id) = selector.strip_suffix(suffix.as_str()) else {
            return false;
        };
        id == self.uid() || self.number().is_some_and(|n| n.to_string() == id)
    }

    fn suffix(&self) -> String {
        self.part.as_ref().map(Part::suffix).unwrap_or_default()
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
            "two images at one position ({:.3} mm along the normal), and nothing in their \
             headers (EchoNumbers, EchoTime, TemporalPositionIdentifier) tells them apart",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(z: f64, echo: Option<i64>, te: Option<f64>, time: Option<i64>) -> Slice {
        Slice {
            file: 0,
            frame: 0,
            series_uid: "1.2.3".into(),
            series_number: Some(9),
            series_description: "dyn".into(),
            protocol_name: String::new(),
            patient_id: "P".into(),
            modality: "MR".into(),
            image_type: vec![],
            contrast_agent: false,
            instance_number: None,
            rows: 4,
            columns: 4,
            frames: 1,
            samples_per_pixel: 1,
            pixel_spacing: Some([1.0, 1.0]),
            orientation: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
            position: Some([0.0, 0.0, z]),
            slice_thickness: Some(2.0),
            echo_number: echo,
            echo_time: te,
            temporal_position: time,
            transfer_syntax: String::new(),
            decodable: true,
        }
    }

    /// Time points part a series by TemporalPositionIdentifier, echoes by EchoTime where
    /// EchoNumbers says nothing; one image per position is one series whatever its headers;
    /// images at one position that nothing tells apart stay together, for `stack` to refuse.
    #[test]
    fn a_series_is_split_by_what_tells_its_images_at_one_position_apart() {
        let dynamic: Vec<Slice> = (0..3)
            .flat_map(|t| (0..4).map(move |z| slice(2.0 * z as f64, None, Some(5.0), Some(t + 1))))
            .collect();
        let parts = split(dynamic);
        assert_eq!(parts.len(), 3);
        for (t, part) in parts.iter().enumerate() {
            assert_eq!(part.slices.len(), 4);
            assert_eq!(part.part.as_ref().unwrap().time, Some((t + 1, 3)));
            assert_eq!(part.part.as_ref().unwrap().echo, None);
            assert!(part.stack().is_ok());
        }
        assert_eq!(parts[2].selector(), "9_t3");
        assert!(
            parts[2].label().ends_with("'dyn' time point 3 of 3"),
            "{}",
            parts[2].label()
        );

        let by_te: Vec<Slice> = [30.0, 10.0]
            .into_iter()
            .flat_map(|te| (0..4).map(move |z| slice(2.0 * z as f64, None, Some(te), None)))
            .collect();
        let parts = split(by_te);
        assert_eq!(parts.len(), 2);
        // In the order of the echo times.
        assert_eq!(parts[0].slices[0].echo_time, Some(10.0));
        assert_eq!(parts[1].part.as_ref().unwrap().echo, Some((2, 2)));

        // One image per position: varying echo numbers do not split it.
        let single: Vec<Slice> = (0..4)
            .map(|z| slice(2.0 * z as f64, Some(z + 1), None, None))
            .collect();
        let parts = split(single);
        assert_eq!(parts.len(), 1);
        assert!(parts[0].part.is_none());

        let twins: Vec<Slice> = (0..8)
            .map(|k| slice(2.0 * (k % 4) as f64, Some(1), Some(5.0), None))
            .collect();
        let parts = split(twins);
        assert_eq!(parts.len(), 1);
        let err = parts[0].stack().unwrap_err().to_string();
        assert!(err.contains("nothing in their headers"), "{err}");
    }
}
