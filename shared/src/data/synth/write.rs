//! A phantom written as a scanner's outputs would be: a BraTS case folder (NIfTI), or a DICOM
//! exam of four series.

use std::path::{Path, PathBuf};

use super::Phantom;
use super::acquire::{acquire, grid_around};
use crate::data::case::Layout;
use crate::data::modality::Modality;
use crate::data::rng::Rng;
use crate::io::dicom::DicomError;
use crate::io::dicom::write::{SeriesInfo, encode_series};
use crate::io::fsutil;
use crate::io::nifti::Geometry;
use crate::io::nifti::{self, NiftiError, OutputData};
use crate::prepare::{Rigid, Volume};

/// Write a phantom as a case folder `dir/<id>/` in `layout` (BraTS 2018 or 2023 naming); a
/// head's with its brain mask, `<ID>_brainmask.nii.gz`.
pub fn write_case(phantom: &Phantom, dir: &Path, layout: Layout) -> Result<PathBuf, NiftiError> {
    let folder = dir.join(&phantom.id);
    std::fs::create_dir_all(&folder).map_err(|e| NiftiError {
        file: folder.display().to_string(),
        problem: format!("cannot create the folder: {e}"),
    })?;
    let name = |suffix: &str| match layout {
        Layout::Brats2023 => folder.join(format!("{}-{suffix}.nii.gz", phantom.id)),
        _ => folder.join(format!("{}_{suffix}.nii.gz", phantom.id)),
    };
    for (m, values) in &phantom.images {
        let suffix = match layout {
            Layout::Brats2023 => m.name_2023(),
            _ => m.name(),
        };
        nifti::write_on_grid(&name(suffix), &phantom.geometry, OutputData::Int16(values))?;
    }
    nifti::write_on_grid(
        &name("seg"),
        &phantom.geometry,
        OutputData::Labels(&phantom.seg),
    )?;
    // A head's truth for skull stripping (a name no case reader takes for a modality).
    if phantom.anatomy == super::Anatomy::Head {
        nifti::write_on_grid(
            &name("brainmask"),
            &phantom.geometry,
            OutputData::Labels(&phantom.brain),
        )?;
    }
    Ok(folder)
}

/// The series' names a scanner might give the four contrasts (`exam::classify` reads them back).
fn series_description(m: Modality) -> &'static str {
    match m {
        Modality::T1 => "T1 MPRAGE",
        Modality::T1ce => "T1 MPRAGE POST GD",
        Modality::T2 => "T2 TSE AX",
        Modality::Flair => "T2 FLAIR AX",
    }
}

/// How the series of a phantom exam are acquired.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Acquisition {
    /// All four on the phantom's grid, the head still.
    OneGrid,
    /// As a real exam's: the T1ce on the phantom's grid; the T1 sagittal, the T2 oblique with
    /// 3 mm slices, the FLAIR axial with 5 mm slices, the head moved by a few millimetres and
    /// degrees before each (drawn from `seed`).
    Moved { seed: u64 },
}

/// The series of a phantom as `acquisition` makes them: for each modality its grid, its values
/// and the motion of the head before it (maps the phantom's world to the series').
pub fn acquire_series(
    phantom: &Phantom,
    acquisition: Acquisition,
) -> Vec<(Modality, Geometry, Vec<i16>, Rigid)> {
    let g = &phantom.geometry;
    let still = Rigid::identity([0.0; 3]);
    let Acquisition::Moved { seed } = acquisition else {
        return phantom
            .images
            .iter()
            .map(|(m, v)| (*m, g.clone(), v.clone(), still))
            .collect();
    };
    let mut rng = Rng::new(seed ^ 0x4D4F_5645);
    let mut draw = |scale: f64| (rng.next_u64() as f64 / u64::MAX as f64 * 2.0 - 1.0) * scale;
    let [nx, ny, nz] = g.dims;
    let [sx, sy, sz] = g.spacing();
    let head = |i: usize| {
        Volume::new(
            phantom.images[i].1.iter().map(|&v| v as f32).collect(),
            g.clone(),
        )
    };
    let centre = head(0).world([nx, ny, nz].map(|n| (n as f64 - 1.0) / 2.0));
    let slices = |mm: f64| ((nz as f64 * sz / mm).ceil() as usize).max(8);
    let sagittal = [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]];
    let oblique = Rigid {
        angles: [12f64.to_radians(), 0.0, 8f64.to_radians()],
        translation: [0.0; 3],
        centre: [0.0; 3],
    }
    .rotation();
    let axial = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    let grids = [
        (0, grid_around(sagittal, [sy, sz, sx], [ny, nz, nx], centre)),
        (1, g.clone()),
        (
            2,
            grid_around(oblique, [sx, sy, 3.0], [nx, ny, slices(3.0)], centre),
        ),
        (
            3,
            grid_around(axial, [sx, sy, 5.0], [nx, ny, slices(5.0)], centre),
        ),
    ];
    grids
        .into_iter()
        .map(|(i, grid)| {
            let (m, values) = &phantom.images[i];
            if i == 1 {
                return (*m, grid, values.clone(), still);
            }
            let moved = Rigid {
                angles: [0; 3].map(|_| draw(4f64.to_radians())),
                translation: [0; 3].map(|_| draw(3.0)),
                centre,
            };
            let values = acquire(&head(i), &moved, &grid)
                .iter()
                .map(|v| v.round().clamp(i16::MIN as f32, i16::MAX as f32) as i16)
                .collect();
            (*m, grid, values, moved)
        })
        .collect()
}

/// Write a phantom as a DICOM exam `dir/<id>/<modality>/IM0001...`: one series per modality,
/// acquired as `acquisition` says, the patient ID the case's. Returns the exam's folder and each
/// series' motion of the head.
pub fn write_exam(
    phantom: &Phantom,
    dir: &Path,
    acquisition: Acquisition,
) -> Result<(PathBuf, Vec<(Modality, Rigid)>), DicomError> {
    let folder = dir.join(&phantom.id);
    // Deterministic UIDs under the UUID-derived root 2.25 (a number from the case ID).
    let key = phantom.id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let study = format!("2.25.{key}");
    let series = acquire_series(phantom, acquisition);
    for (n, (m, grid, values, _)) in series.iter().enumerate() {
        let series_uid = format!("{study}.{}", n + 1);
        let info = SeriesInfo {
            patient_id: &phantom.id,
            study_uid: &study,
            series_uid: &series_uid,
            number: n as i32 + 1,
            description: series_description(*m),
            contrast_agent: (*m == Modality::T1ce).then_some("GADOLINIUM"),
        };
        let files = encode_series(&info, grid, values)?;
        let sub = folder.join(m.name());
        std::fs::create_dir_all(&sub).map_err(|e| DicomError::File {
            file: sub.display().to_string(),
            problem: format!("cannot create the folder: {e}"),
        })?;
        for (name, bytes) in files {
            let path = sub.join(name);
            fsutil::write_atomic(&path, &bytes).map_err(|e| DicomError::File {
                file: path.display().to_string(),
                problem: e.to_string(),
            })?;
        }
    }
    Ok((
        folder,
        series.into_iter().map(|(m, _, _, r)| (m, r)).collect(),
    ))
}
