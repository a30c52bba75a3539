//! One patient's four MRI modalities (and an optional segmentation), found on disk or handed over
//! as bytes, checked to share one grid.
//!
//! Discovery understands the BraTS 2018–2021 layout (`<ID>/<ID>_t1.nii.gz`, `_t1ce`, `_t2`,
//! `_flair`, `_seg`), the 2023+ layout (`<ID>/<ID>-t1n.nii.gz`, `-t1c`, `-t2w`, `-t2f`, `-seg`),
//! loose files whose names say their modality (the web page uses the same [`detect_role`]), and a
//! dataset root: a folder of case folders.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::data::modality::{LabelConvention, Modality};
use crate::io::nifti::{self, Geometry, Image, NiftiError};

/// Largest affine difference (mm) between the files of one case.
pub const AFFINE_TOLERANCE: f64 = 1e-4;

/// How a case's files are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `<ID>_t1`, `_t1ce`, `_t2`, `_flair`, `_seg` (BraTS 2018–2021).
    Brats2018,
    /// `<ID>-t1n`, `-t1c`, `-t2w`, `-t2f`, `-seg` (BraTS 2023+).
    Brats2023,
    /// Files named some other way, their modality read from their names or given.
    Loose,
}

impl Layout {
    /// The label convention that goes with the layout (loose files: BraTS 2018 unless the labels
    /// say otherwise).
    pub fn labels(self) -> LabelConvention {
        match self {
            Layout::Brats2023 => LabelConvention::Brats2023,
            _ => LabelConvention::Brats2018,
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Brats2018 => "brats2018",
            Layout::Brats2023 => "brats2023",
            Layout::Loose => "loose",
        })
    }
}

/// What a file of a case holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Image(Modality),
    Segmentation,
}

/// Why a case was refused. Every message names the files or folder concerned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CaseError {
    #[error(transparent)]
    Nifti(#[from] NiftiError),
    #[error("{folder}: {problem}")]
    Folder { folder: String, problem: String },
    #[error("{case}: {problem}")]
    Invalid { case: String, problem: String },
}

/// A NIfTI file name without its extension (`None` when it is not `.nii` / `.nii.gz`).
pub fn nifti_stem(file_name: &str) -> Option<&str> {
    let lower = file_name.to_ascii_lowercase();
    if lower.ends_with(".nii.gz") {
        Some(&file_name[..file_name.len() - 7])
    } else if lower.ends_with(".nii") {
        Some(&file_name[..file_name.len() - 4])
    } else {
        None
    }
}

/// A BraTS-named file: `(case id, layout, role)` for `<ID>_t1ce.nii.gz`, `<ID>-t2f.nii`, ...
pub fn parse_brats_name(file_name: &str) -> Option<(String, Layout, Role)> {
    let stem = nifti_stem(file_name)?;
    let lower = stem.to_ascii_lowercase();
    for (layout, sep) in [(Layout::Brats2018, '_'), (Layout::Brats2023, '-')] {
        let Some(at) = lower.rfind(sep) else { continue };
        let (id, suffix) = (&stem[..at], &lower[at + 1..]);
        if id.is_empty() {
            continue;
        }
        let role = match (layout, suffix) {
            (_, "seg") => Role::Segmentation,
            (Layout::Brats2018, "t1") => Role::Image(Modality::T1),
            (Layout::Brats2018, "t1ce") => Role::Image(Modality::T1ce),
            (Layout::Brats2018, "t2") => Role::Image(Modality::T2),
            (Layout::Brats2018, "flair") => Role::Image(Modality::Flair),
            (Layout::Brats2023, "t1n") => Role::Image(Modality::T1),
            (Layout::Brats2023, "t1c") => Role::Image(Modality::T1ce),
            (Layout::Brats2023, "t2w") => Role::Image(Modality::T2),
            (Layout::Brats2023, "t2f") => Role::Image(Modality::Flair),
            _ => continue,
        };
        return Some((id.to_string(), layout, role));
    }
    None
}

/// The role of a loose file from its name, as a person would read it: BraTS names first, then
/// words such as `flair`, `t2w`, `T1_Gd`, `t1-ce`, `t1post`, `seg`, `label`. `None` when the
/// name says nothing (the user then picks it).
pub fn detect_role(file_name: &str) -> Option<Role> {
    if let Some((_, _, role)) = parse_brats_name(file_name) {
        return Some(role);
    }
    let stem = nifti_stem(file_name)
        .unwrap_or(file_name)
        .to_ascii_lowercase();
    let tokens: Vec<&str> = stem
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .collect();
    let has = |words: &[&str]| tokens.iter().any(|t| words.contains(t));
    let contrast = |t: &&str| matches!(*t, "ce" | "gd" | "c" | "post" | "contrast" | "gad");
    // "t1" followed by a contrast word ("T1_Gd", "t1-ce") is T1ce.
    let t1_then_contrast = tokens
        .windows(2)
        .any(|w| matches!(w[0], "t1" | "t1w") && contrast(&w[1]));
    if has(&[
        "seg",
        "segmentation",
        "label",
        "labels",
        "mask",
        "truth",
        "gt",
    ]) {
        Some(Role::Segmentation)
    } else if has(&["flair", "t2f", "t2flair"]) || tokens.iter().any(|t| t.ends_with("flair")) {
        Some(Role::Image(Modality::Flair))
    } else if t1_then_contrast
        || has(&[
            "t1ce",
            "t1c",
            "t1gd",
            "t1post",
            "t1wce",
            "t1cegd",
            "ce",
            "gd",
            "t1contrast",
        ])
    {
        Some(Role::Image(Modality::T1ce))
    } else if has(&["t2", "t2w"]) {
        Some(Role::Image(Modality::T2))
    } else if has(&["t1", "t1n", "t1w", "t1native"]) {
        Some(Role::Image(Modality::T1))
    } else {
        None
    }
}

/// A case's images, each with its modality.
pub type Images = Vec<(Modality, Image)>;

/// The files of one case, before they are read.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseFiles {
    pub id: String,
    pub layout: Layout,
    pub modalities: BTreeMap<Modality, PathBuf>,
    pub seg: Option<PathBuf>,
}

impl CaseFiles {
    /// Read the files (each checked as a NIfTI image; nothing checked across them yet).
    pub fn read(&self) -> Result<(Images, Option<Image>), CaseError> {
        let mut images = Vec::new();
        for (m, path) in &self.modalities {
            images.push((*m, nifti::read_path(path)?));
        }
        let seg = match &self.seg {
            Some(p) => Some(nifti::read_path(p)?),
            None => None,
        };
        Ok((images, seg))
    }

    /// Loose files with their modalities given or read from their names.
    pub fn from_loose(
        files: &[PathBuf],
        given: &BTreeMap<Modality, PathBuf>,
    ) -> Result<Self, CaseError> {
        let mut modalities = given.clone();
        let mut seg = None;
        for file in files {
            let name = file_name(file);
            match detect_role(&name) {
                Some(Role::Image(m)) => {
                    if let Some(other) = modalities.get(&m)
                        && other != file
                    {
                        return Err(CaseError::Invalid {
                            case: name,
                            problem: format!(
                                "both this file and {} look like {m}; give the modalities with --{m}",
                                other.display()
                            ),
                        });
                    }
                    modalities.insert(m, file.clone());
                }
                Some(Role::Segmentation) => seg = Some(file.clone()),
                None => {
                    return Err(CaseError::Invalid {
                        case: name,
                        problem: "the file name does not say which modality it is \
                                  (t1, t1ce, t2 or flair); give it with --t1/--t1ce/--t2/--flair"
                            .into(),
                    });
                }
            }
        }
        let id = loose_case_id(modalities.values().chain(seg.iter()));
        let files = CaseFiles {
            id,
            layout: Layout::Loose,
            modalities,
            seg,
        };
        files.check_complete()?;
        Ok(files)
    }

    fn check_complete(&self) -> Result<(), CaseError> {
        let missing: Vec<String> = Modality::DEFAULT_ORDER
            .iter()
            .filter(|m| !self.modalities.contains_key(m))
            .map(|m| match self.layout {
                Layout::Brats2023 => format!("{} (-{})", m, m.name_2023()),
                Layout::Brats2018 => format!("{m} (_{m})"),
                Layout::Loose => m.to_string(),
            })
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(CaseError::Invalid {
                case: self.id.clone(),
                problem: format!("missing modality: {}", missing.join(", ")),
            })
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| path.display().to_string())
}

fn loose_case_id<'a>(paths: impl Iterator<Item = &'a PathBuf>) -> String {
    let names: Vec<String> = paths.map(|p| file_name(p)).collect();
    case_id_of_names(&names)
}

/// A case id from the names of its files: the BraTS id when they all carry the same one, else
/// the common start of their names trimmed of separators, else `case`.
pub fn case_id_of_names(names: &[String]) -> String {
    let brats: Vec<Option<String>> = names
        .iter()
        .map(|n| parse_brats_name(n).map(|(id, _, _)| id))
        .collect();
    if let Some(Some(first)) = brats.first()
        && brats.iter().all(|b| b.as_ref() == Some(first))
    {
        return first.clone();
    }
    let stems: Vec<String> = names
        .iter()
        .map(|n| nifti_stem(n).unwrap_or(n).to_string())
        .collect();
    let Some(first) = stems.first() else {
        return "case".into();
    };
    let mut len = first.len();
    for s in &stems[1..] {
        len = len.min(
            first
                .bytes()
                .zip(s.bytes())
                .take_while(|(a, b)| a == b)
                .count(),
        );
    }
    while !first.is_char_boundary(len) {
        len -= 1;
    }
    let id = first[..len].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if id.is_empty() || stems.len() == 1 && detect_role(&format!("{id}.nii")).is_some() {
        "case".into()
    } else {
        id.to_string()
    }
}

/// The case in a folder of BraTS-named files.
pub fn discover_case(folder: &Path) -> Result<CaseFiles, CaseError> {
    let folder_name = folder.display().to_string();
    let err = |problem: String| CaseError::Folder {
        folder: folder_name.clone(),
        problem,
    };
    let entries = std::fs::read_dir(folder).map_err(|e| err(e.to_string()))?;
    let mut found: Vec<(String, Layout, Role, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| err(e.to_string()))?;
        let raw = entry.file_name();
        let name = raw.to_string_lossy().to_string();
        if let Some((id, layout, role)) = parse_brats_name(&name) {
            // The id names the outputs and finds the ground truth: it must survive as text.
            if raw.to_str().is_none() {
                return Err(err(format!(
                    "{name}: the file name is not valid UTF-8; rename the case's files"
                )));
            }
            found.push((id, layout, role, entry.path()));
        }
    }
    found.sort_by(|a, b| a.3.cmp(&b.3));
    let Some((id, layout, ..)) = found.first().cloned() else {
        return Err(err(
            "no BraTS-named NIfTI files here (<ID>_t1.nii.gz ... or <ID>-t1n.nii.gz ...)".into(),
        ));
    };
    let mut files = CaseFiles {
        id: id.clone(),
        layout,
        modalities: BTreeMap::new(),
        seg: None,
    };
    for (other_id, other_layout, role, path) in found {
        if other_id != id || other_layout != layout {
            return Err(err(format!(
                "files of more than one case or naming scheme: '{id}' ({layout}) and '{other_id}' ({other_layout})"
            )));
        }
        let slot = match role {
            Role::Image(m) => files.modalities.insert(m, path.clone()),
            Role::Segmentation => files.seg.replace(path.clone()),
        };
        if let Some(previous) = slot {
            return Err(err(format!(
                "two files for the same role: {} and {}",
                file_name(&previous),
                file_name(&path)
            )));
        }
    }
    files.check_complete().map_err(|e| match e {
        CaseError::Invalid { problem, .. } => err(problem),
        other => other,
    })?;
    Ok(files)
}

/// The case folders under a dataset root, sorted by name. Sub-folders that are not cases are
/// returned with the reason, so that a caller can report them and go on.
pub fn discover_dataset(root: &Path) -> Result<(Vec<CaseFiles>, Vec<CaseError>), CaseError> {
    let err = |problem: String| CaseError::Folder {
        folder: root.display().to_string(),
        problem,
    };
    let mut folders: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| err(e.to_string()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        // Hidden folders (the training cache, .git, ...) are not cases.
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    folders.sort();
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    for folder in folders {
        match discover_case(&folder) {
            Ok(c) => cases.push(c),
            Err(e) => problems.push(e),
        }
    }
    if cases.is_empty() && problems.is_empty() {
        return Err(err("no case folders here".into()));
    }
    Ok((cases, problems))
}

/// What a path given on the command line holds.
#[derive(Debug)]
pub enum Input {
    Case(CaseFiles),
    Dataset {
        cases: Vec<CaseFiles>,
        problems: Vec<CaseError>,
    },
}

/// A case folder (it holds BraTS-named files) or a dataset root (its sub-folders do).
pub fn discover(path: &Path) -> Result<Input, CaseError> {
    if !path.is_dir() {
        return Err(CaseError::Folder {
            folder: path.display().to_string(),
            problem: if path.exists() {
                "not a folder".into()
            } else {
                "no such folder".into()
            },
        });
    }
    let has_case_files = std::fs::read_dir(path)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .any(|e| parse_brats_name(&e.file_name().to_string_lossy()).is_some())
        })
        .unwrap_or(false);
    if has_case_files {
        discover_case(path).map(Input::Case)
    } else {
        let (cases, problems) = discover_dataset(path)?;
        Ok(Input::Dataset { cases, problems })
    }
}

/// The fewest voxels along an axis: the network halves each axis three times.
pub const MIN_AXIS: usize = 8;

/// A loaded case: four images on one grid, an optional segmentation on the same grid.
#[derive(Debug, Clone)]
pub struct Case {
    pub id: String,
    pub layout: Layout,
    /// The images in [`Modality::DEFAULT_ORDER`].
    pub images: Vec<(Modality, Image)>,
    pub seg: Option<Image>,
    /// Read from the segmentation's values when there is one, else from the layout.
    pub labels: LabelConvention,
}

impl Case {
    /// Read and check the files of a case.
    pub fn load(files: &CaseFiles) -> Result<Self, CaseError> {
        let (images, seg) = files.read()?;
        Self::from_images(&files.id, files.layout, images, seg)
    }

    /// Check images already read (from files or from bytes in the browser).
    pub fn from_images(
        id: &str,
        layout: Layout,
        images: Vec<(Modality, Image)>,
        seg: Option<Image>,
    ) -> Result<Self, CaseError> {
        let invalid = |problem: String| CaseError::Invalid {
            case: id.to_string(),
            problem,
        };
        for m in Modality::DEFAULT_ORDER {
            let mut of_m = images.iter().filter(|(x, _)| *x == m);
            match (of_m.next(), of_m.next()) {
                (Some(_), None) => {}
                (None, _) => return Err(invalid(format!("missing modality: {m}"))),
                (Some((_, a)), Some((_, b))) => {
                    return Err(invalid(format!(
                        "two files given as {m}: {} and {}",
                        a.source, b.source
                    )));
                }
            }
        }
        // Moved, not copied: a case can be gigabytes (in the browser, of a 4 GiB memory).
        let mut ordered = images;
        ordered.sort_by_key(|(m, _)| Modality::DEFAULT_ORDER.iter().position(|x| x == m));
        let (_, first) = &ordered[0];
        let reference = first.geometry.clone();
        // Outputs are NIfTI-1, whose axes hold at most 32767 voxels: said now, not after the
        // segmentation has run.
        if let Some(&d) = reference.dims.iter().find(|&&d| d > i16::MAX as usize) {
            return Err(invalid(format!(
                "{} has an axis of {d} voxels; nvnet's outputs (NIfTI-1) hold at most 32767",
                first.source
            )));
        }
        if reference.dims.iter().any(|&d| d < MIN_AXIS) {
            return Err(invalid(format!(
                "{} is {:?}: a modality must be a 3-D volume of at least {MIN_AXIS} voxels along \
                 each axis (a 2-D slice or a thin slab cannot be segmented)",
                first.source, reference.dims
            )));
        }
        let others = ordered.iter().skip(1).map(|(_, i)| i).chain(seg.iter());
        for other in others {
            check_same_grid(first, &reference, other).map_err(invalid)?;
        }
        let labels = match &seg {
            Some(s) => seg_convention(s, layout)?,
            None => layout.labels(),
        };
        Ok(Case {
            id: id.to_string(),
            layout,
            images: ordered,
            seg,
            labels,
        })
    }

    pub fn geometry(&self) -> &Geometry {
        &self.images[0].1.geometry
    }

    pub fn dims(&self) -> [usize; 3] {
        self.geometry().dims
    }

    pub fn image(&self, m: Modality) -> &Image {
        &self
            .images
            .iter()
            .find(|(x, _)| *x == m)
            .expect("checked")
            .1
    }

    /// The channels in `order`, each as f32 in network order (see [`crate::data::volume`]), NaN/Inf
    /// read as 0.
    pub fn channels(&self, order: &[Modality]) -> Vec<f32> {
        let dims = self.dims();
        let mut out = Vec::with_capacity(order.len() * dims.iter().product::<usize>());
        for m in order {
            out.extend(crate::data::volume::to_network_order(
                dims,
                &self.image(*m).to_f32(),
            ));
        }
        out
    }

    /// The segmentation's labels in file order (checked to be whole numbers in 0..=255).
    pub fn seg_labels(&self) -> Option<Vec<u8>> {
        self.seg
            .as_ref()
            .map(|s| (0..s.voxels.len()).map(|i| s.value(i) as u8).collect())
    }

    /// Every warning from reading the files.
    pub fn warnings(&self) -> impl Iterator<Item = &String> {
        self.images
            .iter()
            .map(|(_, i)| i)
            .chain(self.seg.iter())
            .flat_map(|i| i.warnings.iter())
    }
}

fn check_same_grid(first: &Image, reference: &Geometry, other: &Image) -> Result<(), String> {
    let g = &other.geometry;
    if g.dims != reference.dims {
        return Err(format!(
            "{} is {:?} but {} is {:?}: the modalities must share one grid",
            other.source, g.dims, first.source, reference.dims
        ));
    }
    let d = g.affine_difference(reference);
    if d.is_nan() || d > AFFINE_TOLERANCE {
        return Err(format!(
            "the affine of {} differs from that of {} by {d:.3e} mm (tolerance {AFFINE_TOLERANCE:e}): \
             the modalities are not co-registered on one grid",
            other.source, first.source
        ));
    }
    Ok(())
}

/// Check a segmentation's values and read its label convention from them.
fn seg_convention(seg: &Image, layout: Layout) -> Result<LabelConvention, CaseError> {
    let mut seen = [false; 256];
    for i in 0..seg.voxels.len() {
        let v = seg.value(i);
        if !(v.is_finite() && (0.0..=255.0).contains(&v) && v.fract() == 0.0) {
            return Err(CaseError::Invalid {
                case: seg.source.clone(),
                problem: format!(
                    "segmentation value {v} at voxel {i} is not a label (a whole number 0..255)"
                ),
            });
        }
        seen[v as usize] = true;
    }
    let labels: Vec<usize> = (0..256).filter(|&l| seen[l]).collect();
    let convention = match (seen[3], seen[4]) {
        (true, true) => {
            return Err(CaseError::Invalid {
                case: seg.source.clone(),
                problem: "segmentation has both label 3 and label 4: neither BraTS convention \
                          (ET = 4 up to 2021, ET = 3 from 2023)"
                    .into(),
            });
        }
        (false, true) => LabelConvention::Brats2018,
        (true, false) => LabelConvention::Brats2023,
        (false, false) => layout.labels(),
    };
    if let Some(bad) = labels.iter().find(|&&l| l > 4) {
        return Err(CaseError::Invalid {
            case: seg.source.clone(),
            problem: format!("segmentation has label {bad}; BraTS labels are 0, 1, 2 and 4 (or 3)"),
        });
    }
    Ok(convention)
}
