//! Four series on grids of their own made one case: each registered to the reference series
//! (T1ce by default, on which radiologists read the tumour) and resampled onto one 1 mm grid in
//! BraTS's orientation that covers the reference's field of view, then skull-stripped; the
//! label map goes back onto the reference series' own grid.

use std::sync::OnceLock;

use super::motion::{Rigid, apply3};
use super::register::{Options, Registration, register};
use super::resample::{Volume, invert, resample};
use super::skull::{NoBrain, already_stripped, find_brain};
use crate::data::case::{AFFINE_TOLERANCE, Case, CaseError, CaseFiles, Layout};
use crate::data::modality::Modality;
use crate::io::nifti::{DataType, Geometry, Image, Voxels};

/// The least fraction of the reference's foreground a registered series must cover.
pub const MIN_OVERLAP: f64 = 0.5;

/// A case made from series on several grids, and the way back to the reference's grid.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// On the prepared grid.
    pub case: Case,
    /// The reference series' own grid, where the label map is written.
    pub native: Geometry,
    pub reference: Modality,
    /// Each other series' registration to the reference.
    pub registrations: Vec<(Modality, Registration)>,
    /// What was done about the skull.
    pub stripping: Stripping,
    /// The brain (1) on the prepared grid, where the skull was stripped here.
    pub brain_mask: Option<Vec<u8>>,
    /// The reference series on the prepared grid before stripping, where the skull was stripped
    /// here: what a reader checks the mask against.
    pub reference_with_skull: Option<Vec<f32>>,
    /// The reference series as read, on its own grid, where the case was resampled: what a
    /// reader sees the label map over.
    pub reference_native: Option<Vec<f32>>,
    /// For each native voxel, the prepared voxel nearest to it: made once, when first needed.
    native_map: OnceLock<Vec<Option<usize>>>,
}

impl Prepared {
    /// A case whose series already share a grid: nothing moved, written on its own grid.
    pub fn as_it_is(case: Case, reference: Modality) -> Prepared {
        Prepared {
            native: case.geometry().clone(),
            case,
            reference,
            registrations: Vec::new(),
            stripping: Stripping::NotPrepared,
            brain_mask: None,
            reference_with_skull: None,
            reference_native: None,
            native_map: OnceLock::new(),
        }
    }

    /// Whether the label map must be carried back onto the native grid.
    pub fn resampled(&self) -> bool {
        !same_grid(self.case.geometry(), &self.native)
    }

    /// Per-voxel values on the prepared grid (file order) carried onto the native grid by
    /// nearest neighbour (`fill` outside the prepared grid); `channels` blocks of one grid each.
    pub fn to_native<T: Copy>(&self, values: &[T], channels: usize, fill: T) -> Vec<T> {
        if !self.resampled() {
            return values.to_vec();
        }
        let map = self
            .native_map
            .get_or_init(|| nearest(self.case.geometry(), &self.native));
        let n: usize = self.case.geometry().dims.iter().product();
        (0..channels)
            .flat_map(|c| {
                let block = &values[c * n..(c + 1) * n];
                map.iter().map(move |i| i.map_or(fill, |i| block[i]))
            })
            .collect()
    }

    /// The case's series on the native grid, in the case's order, where it was resampled: the
    /// reference as read, the others carried from the prepared grid (trilinear; 0 outside it).
    pub fn series_on_native(&self) -> Option<Vec<Vec<f32>>> {
        // Held exactly when the case was resampled.
        let reference = self.reference_native.as_ref()?;
        let grid = self.case.geometry();
        let still = Rigid::identity([0.0; 3]);
        Some(
            self.case
                .images
                .iter()
                .map(|(m, image)| {
                    if *m == self.reference {
                        reference.clone()
                    } else {
                        resample(
                            &Volume::new(image.to_f32(), grid.clone()),
                            &still,
                            &self.native,
                        )
                    }
                })
                .collect(),
        )
    }
}

/// When a case's series are registered and resampled onto one grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum When {
    /// When they are not on one grid already (a case prepared elsewhere stays as it is).
    #[default]
    Auto,
    /// Always: every case onto a 1 mm grid in BraTS's orientation.
    Always,
    /// Never: series on several grids are refused.
    Never,
}

impl std::str::FromStr for When {
    type Err = crate::data::names::UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(When::Auto),
            "always" => Ok(When::Always),
            "never" => Ok(When::Never),
            _ => Err(crate::data::names::UnknownName::new(
                "preparation",
                s,
                "auto, always or never",
            )),
        }
    }
}

/// Whether a prepared case is skull-stripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Skull {
    /// Stripped, unless the reference series is found stripped already.
    #[default]
    Auto,
    /// The series are stripped already (the user says so): left as they are.
    Stripped,
}

/// What was done about the skull.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stripping {
    /// Nothing: the case was not prepared here (its series shared a grid already).
    NotPrepared,
    /// The reference series was found stripped already.
    FoundStripped,
    /// The series were said to be stripped already.
    SaidStripped,
    /// Stripped here, leaving a brain of this volume (mL).
    Stripped { brain_ml: f64 },
}

impl std::fmt::Display for Stripping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stripping::NotPrepared => write!(f, "not prepared here: left as it is"),
            Stripping::FoundStripped => write!(f, "the reference series is skull-stripped already"),
            Stripping::SaidStripped => write!(f, "skull-stripped already, as said"),
            Stripping::Stripped { brain_ml } => {
                write!(f, "skull stripped: a brain of {brain_ml:.0} mL")
            }
        }
    }
}

/// How an exam is made a case: when its series are brought onto one grid, the series the others
/// are registered to (whose grid the label map is written on), and whether the skull is then
/// stripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steps {
    pub when: When,
    pub reference: Modality,
    pub skull: Skull,
}

impl Default for Steps {
    /// The T1ce as the reference: radiologists read the tumour on it.
    fn default() -> Self {
        Steps {
            when: When::Auto,
            reference: Modality::T1ce,
            skull: Skull::Auto,
        }
    }
}

impl Steps {
    pub fn when(when: When) -> Steps {
        Steps {
            when,
            ..Steps::default()
        }
    }
}

/// A stage of making an exam a case, said as it starts (the page shows it while it waits).
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// A DICOM series' pixels read (its label).
    Reading(String),
    Registering {
        series: Modality,
        to: Modality,
    },
    Resampling,
    Stripping,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stage::Reading(series) => write!(f, "reading {series}"),
            Stage::Registering { series, to } => write!(f, "registering the {series} to the {to}"),
            Stage::Resampling => write!(f, "resampling onto one 1 mm grid"),
            Stage::Stripping => write!(f, "stripping the skull"),
        }
    }
}

/// Four series (and a segmentation on the first's grid, kept only when nothing is resampled)
/// made a case as `steps` say.
pub fn prepare_images(
    id: &str,
    layout: Layout,
    images: Vec<(Modality, Image)>,
    seg: Option<Image>,
    steps: Steps,
) -> Result<Prepared, CaseError> {
    prepare_images_reporting(id, layout, images, seg, steps, &mut |_| {})
}

/// As [`prepare_images`], saying each stage as it starts.
pub fn prepare_images_reporting(
    id: &str,
    layout: Layout,
    images: Vec<(Modality, Image)>,
    seg: Option<Image>,
    steps: Steps,
    on_stage: &mut dyn FnMut(Stage),
) -> Result<Prepared, CaseError> {
    let one_grid = images
        .windows(2)
        .all(|w| same_grid(&w[0].1.geometry, &w[1].1.geometry));
    if steps.when == When::Never || (steps.when == When::Auto && one_grid) {
        return Ok(Prepared::as_it_is(
            Case::from_images(id, layout, images, seg)?,
            steps.reference,
        ));
    }
    prepare(
        id,
        images,
        steps.reference,
        steps.skull,
        &Options::default(),
        on_stage,
    )
}

/// Read a case's NIfTI files and make them a case as `steps` say.
pub fn load_files(files: &CaseFiles, steps: Steps) -> Result<Prepared, CaseError> {
    let (images, seg) = files.read()?;
    prepare_images(&files.id, files.layout, images, seg, steps)
}

/// Whether two grids are one (dims and affine).
pub fn same_grid(a: &Geometry, b: &Geometry) -> bool {
    a.dims == b.dims && a.affine_difference(b) <= AFFINE_TOLERANCE
}

/// The 1 mm grid in BraTS's orientation (x and y flipped: i from right to left, j from front to
/// back, k upwards) that holds every corner of `reference`'s grid.
pub fn prepared_grid(reference: &Geometry) -> Geometry {
    let (mut lo, mut hi) = ([f64::INFINITY; 3], [f64::NEG_INFINITY; 3]);
    for corner in 0..8 {
        // The outer faces of the corner voxels, not their centres.
        let ijk = [0, 1, 2].map(|a| {
            if corner & (1 << a) == 0 {
                -0.5
            } else {
                reference.dims[a] as f64 - 0.5
            }
        });
        let w = reference.world(ijk);
        for r in 0..3 {
            lo[r] = lo[r].min(w[r]);
            hi[r] = hi[r].max(w[r]);
        }
    }
    let dims = [0, 1, 2].map(|r| ((hi[r] - lo[r]).round() as usize).max(1));
    let mut affine = [[0.0; 4]; 4];
    // Voxel 0 in the right, front, bottom corner: x and y decrease along i and j.
    affine[0][0] = -1.0;
    affine[1][1] = -1.0;
    affine[2][2] = 1.0;
    affine[0][3] = hi[0] - 0.5;
    affine[1][3] = hi[1] - 0.5;
    affine[2][3] = lo[2] + 0.5;
    affine[3][3] = 1.0;
    Geometry::from_affine(dims, affine)
}

fn volume(image: &Image) -> Volume {
    Volume::new(image.to_f32(), image.geometry.clone())
}

/// Bring the four series onto one grid and strip the skull as `skull` says. Series already on
/// the reference's grid are taken as they are (a case prepared elsewhere is not moved).
pub fn prepare(
    id: &str,
    images: Vec<(Modality, Image)>,
    reference: Modality,
    skull: Skull,
    options: &Options,
    on_stage: &mut dyn FnMut(Stage),
) -> Result<Prepared, CaseError> {
    let missing = |m: Modality| CaseError::Invalid {
        case: id.to_string(),
        problem: format!("missing modality: {m}"),
    };
    let fixed_image = &images
        .iter()
        .find(|(m, _)| *m == reference)
        .ok_or_else(|| missing(reference))?
        .1;
    let native = fixed_image.geometry.clone();
    let fixed = volume(fixed_image);
    let stripped = match skull {
        Skull::Stripped => Some(Stripping::SaidStripped),
        Skull::Auto if already_stripped(&fixed.values, native.dims, native.spacing()) => {
            Some(Stripping::FoundStripped)
        }
        Skull::Auto => None,
    };
    let grid = prepared_grid(&native);
    // Each series registered to the reference, then all resampled: the stages in the order a
    // reader expects them.
    let mut registrations = Vec::new();
    let mut motions = Vec::new();
    for (m, image) in &images {
        if *m == reference || same_grid(&image.geometry, &native) {
            motions.push(Rigid::identity([0.0; 3]));
            continue;
        }
        on_stage(Stage::Registering {
            series: *m,
            to: reference,
        });
        let r = register(&fixed, &volume(image), options);
        // A series that does not cover the reference's head once registered is another head,
        // another body part, or a slab too thin to place: not a case.
        if r.overlap < MIN_OVERLAP {
            return Err(CaseError::Invalid {
                case: id.to_string(),
                problem: format!(
                    "{} ({m}) covers {:.0} % of the {reference}'s foreground once registered \
                     (at least {:.0} % needed): not the same head, or too small a field of view",
                    image.source,
                    100.0 * r.overlap,
                    100.0 * MIN_OVERLAP
                ),
            });
        }
        motions.push(r.motion);
        registrations.push((*m, r));
    }
    on_stage(Stage::Resampling);
    let mut prepared = Vec::new();
    for ((m, image), motion) in images.iter().zip(&motions) {
        let values = if *m == reference {
            resample(&fixed, motion, &grid)
        } else {
            resample(&volume(image), motion, &grid)
        };
        prepared.push((
            *m,
            Image {
                source: image.source.clone(),
                dtype: DataType::F32,
                geometry: grid.clone(),
                voxels: Voxels::F32(values),
                slope: 1.0,
                inter: 0.0,
                warnings: image.warnings.clone(),
            },
        ));
    }
    let (stripping, brain, with_skull) = match stripped {
        Some(how) => (how, None, None),
        None => {
            on_stage(Stage::Stripping);
            let with_skull = prepared
                .iter()
                .find(|(m, _)| *m == reference)
                .map(|(_, image)| image.to_f32());
            let (how, mask) = strip(&mut prepared, &grid).map_err(|e| CaseError::Invalid {
                case: id.to_string(),
                problem: e.to_string(),
            })?;
            (how, mask, with_skull)
        }
    };
    let case = Case::from_images(id, Layout::Loose, prepared, None)?;
    let reference_native = (!same_grid(&grid, &native)).then_some(fixed.values);
    Ok(Prepared {
        case,
        native,
        reference,
        registrations,
        stripping,
        brain_mask: brain,
        reference_with_skull: with_skull,
        reference_native,
        native_map: OnceLock::new(),
    })
}

/// The brain's mask of series on one 1 mm grid, and the series with zero outside it.
fn strip(
    series: &mut [(Modality, Image)],
    grid: &Geometry,
) -> Result<(Stripping, Option<Vec<u8>>), NoBrain> {
    let values: Vec<(Modality, &[f32])> = series
        .iter()
        .filter_map(|(m, image)| match &image.voxels {
            Voxels::F32(v) => Some((*m, v.as_slice())),
            _ => None,
        })
        .collect();
    let mask = find_brain(&values, grid.dims, grid.spacing())?;
    for (_, image) in series.iter_mut() {
        if let Voxels::F32(v) = &mut image.voxels {
            for (x, inside) in v.iter_mut().zip(&mask) {
                if !inside {
                    *x = 0.0;
                }
            }
        }
    }
    let voxel_ml = grid.spacing().iter().product::<f64>() / 1000.0;
    let brain_ml = mask.iter().filter(|&&b| b).count() as f64 * voxel_ml;
    Ok((
        Stripping::Stripped { brain_ml },
        Some(mask.iter().map(|&b| b as u8).collect()),
    ))
}

/// For each voxel of `to`, the voxel of `from` nearest to its centre (None outside `from`): the
/// map that carries a label map back onto the native grid.
pub fn nearest(from: &Geometry, to: &Geometry) -> Vec<Option<usize>> {
    let (m, o) = invert(&from.affine);
    let [nx, ny, nz] = to.dims;
    let [fx, fy, fz] = from.dims;
    let mut out = Vec::with_capacity(nx * ny * nz);
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let w = to.world([i as f64, j as f64, k as f64]);
                let p = apply3(&m, w);
                let r = [0, 1, 2].map(|d| (p[d] + o[d]).round());
                let inside = r
                    .iter()
                    .zip([fx, fy, fz])
                    .all(|(&x, n)| x >= 0.0 && x < n as f64);
                out.push(inside.then(|| r[0] as usize + fx * (r[1] as usize + fy * r[2] as usize)));
            }
        }
    }
    out
}
