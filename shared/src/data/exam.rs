//! An exam from the scanner (a DICOM folder): which series is which MRI contrast, read from the
//! names the scanner gave them, and the case that the four chosen series make.
//!
//! The names are the protocol's (SeriesDescription, ProtocolName): "T1 MPRAGE", "AX T1 POST GD",
//! "t2_tse_tra", "T2 FLAIR". A series is a candidate for at most one modality; two candidates
//! for one modality, or none, is an error that lists the series, never a guess: the user names
//! the series (`nvnet predict --series t1ce=7`).

use std::fmt;

use crate::data::case::{CaseError, Layout};
use crate::data::modality::Modality;
use crate::io::dicom::{self, DicomError, Files, Scan, Series};
use crate::prepare::{Prepared, Stage, Steps, prepare_images_reporting};

/// Why an exam gives no case. Every message names the folder and lists its series.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExamError {
    #[error(transparent)]
    Dicom(#[from] DicomError),
    #[error("{folder}: {problem}\nseries found:\n{series}")]
    Choice {
        folder: String,
        problem: String,
        series: String,
    },
    #[error(transparent)]
    Case(#[from] CaseError),
}

/// What a series is for nvnet: one of the four modalities, or why it is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Modality(Modality),
    Other(String),
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Modality(m) => write!(f, "{m}"),
            Kind::Other(why) => write!(f, "not used: {why}"),
        }
    }
}

/// Words of other MR contrasts and maps: such a series is none of the four, even when its name
/// also says T1 or T2 (a "T2*" gradient echo, a "DWI" with "T2" in it).
const OTHER_CONTRASTS: [&str; 22] = [
    "DWI",
    "DIFF",
    "DIFFUSION",
    "ADC",
    "TRACE",
    "DTI",
    "SWI",
    "SWAN",
    "PERF",
    "PERFUSION",
    "DSC",
    "DCE",
    "ASL",
    "PCASL",
    "BOLD",
    "T2*",
    "T2STAR",
    "MRA",
    "TOF",
    "ANGIO",
    "PD",
    "FA",
];
/// Post-contrast markers (a whole word, or inside one: "T1+C", "T1POST").
const POST_WORDS: [&str; 9] = [
    "POST",
    "GD",
    "GAD",
    "GADO",
    "CE",
    "C",
    "CONTRAST",
    "KM",
    "GADOLINIUM",
];
const POST_INSIDE: [&str; 5] = ["+C", "C+", "+GD", "GD+", "POST"];
/// T1-weighted sequences known by their name alone.
const T1_SEQUENCES: [&str; 8] = [
    "MPRAGE", "MP-RAGE", "SPGR", "FSPGR", "BRAVO", "VIBE", "TFE", "MP2RAGE",
];

/// The modality a series' names and header say, or why it has none.
pub fn classify(series: &Series) -> Kind {
    if series.is_localizer() {
        return Kind::Other("a localizer".into());
    }
    if series.is_derived() {
        return Kind::Other("derived from other images (ImageType DERIVED)".into());
    }
    let dicom_modality = &series.slices[0].modality;
    if !dicom_modality.is_empty() && dicom_modality != "MR" {
        return Kind::Other(format!("a {dicom_modality} series, not MR"));
    }
    kind_of_names(
        &format!("{} {}", series.description(), series.protocol()),
        series.contrast_agent(),
    )
}

/// As [`classify`], for one echo of a multi-echo series too: of a T2, or of a dual-echo
/// proton-density/T2 acquisition ("PD+T2 TSE"), the last echo is the T2 and the earlier ones are
/// left out.
pub fn classify_echo(series: &Series) -> Kind {
    let kind = classify(series);
    let Some(part) = series.part.as_ref().filter(|p| p.echo.is_some()) else {
        return kind;
    };
    let name = format!("{} {}", series.description(), series.protocol());
    let t2 = kind == Kind::Modality(Modality::T2)
        || (says_pd_and_t2(&name) && !series.is_localizer() && !series.is_derived());
    match (t2, part.is_last_echo()) {
        (true, true) => Kind::Modality(Modality::T2),
        (true, false) => Kind::Other(
            "an earlier echo of a multi-echo T2 series (proton-density weighted): its last echo \
             is the T2"
                .into(),
        ),
        (false, _) => kind,
    }
}

/// A name of a proton-density and T2 acquisition: "PD+T2", "PD/T2 TSE", "t2_pd_tse".
fn says_pd_and_t2(name: &str) -> bool {
    let name = name.to_uppercase();
    let words: Vec<&str> = name
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '*'))
        .filter(|w| !w.is_empty())
        .collect();
    words.contains(&"PD")
        && words
            .iter()
            .any(|w| w.starts_with("T2") && !w.contains('*') && *w != "T2STAR")
}

/// The modality that a series' names say (`contrast_agent`: the header names one).
fn kind_of_names(name: &str, contrast_agent: bool) -> Kind {
    let name = name.to_uppercase();
    let words: Vec<&str> = name
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '*' || c == '-'))
        .flat_map(|w| w.split('-').chain(std::iter::once(w)))
        .filter(|w| !w.is_empty())
        .collect();
    let has = |w: &str| words.contains(&w);
    if let Some(w) = OTHER_CONTRASTS.iter().find(|w| has(w)) {
        return Kind::Other(format!("its name says {w}"));
    }
    let t1 = words.iter().any(|w| w.starts_with("T1")) || T1_SEQUENCES.iter().any(|w| has(w));
    let t2 = words.iter().any(|w| w.starts_with("T2"));
    let flair = has("FLAIR") || has("TIRM") || name.contains("DARK FLUID") || has("DARKFLUID");
    let post = contrast_agent
        || POST_WORDS.iter().any(|w| has(w))
        || words
            .iter()
            .any(|w| POST_INSIDE.iter().any(|p| w.contains(p)));
    let pre = has("PRE") || has("NATIVE");
    if t1 {
        // A T1-weighted FLAIR is a T1.
        if post && !pre {
            Kind::Modality(Modality::T1ce)
        } else {
            Kind::Modality(Modality::T1)
        }
    } else if flair {
        Kind::Modality(Modality::Flair)
    } else if t2 {
        Kind::Modality(Modality::T2)
    } else if name.trim().is_empty() {
        Kind::Other("it has no SeriesDescription or ProtocolName".into())
    } else {
        Kind::Other("its name says none of T1, T1 post-contrast, T2, FLAIR".into())
    }
}

/// A DICOM exam: its series, what each is, and the case ID.
#[derive(Debug, Clone)]
pub struct Exam {
    /// The folder (for messages).
    pub folder: String,
    /// The PatientID made safe for a file name, or the folder's name.
    pub id: String,
    pub scan: Scan,
    pub kinds: Vec<Kind>,
}

impl Exam {
    /// Read an exam's headers.
    pub fn scan(files: &dyn Files, folder: &str) -> Result<Self, ExamError> {
        let scan = dicom::scan(files, folder)?;
        let kinds = scan.series.iter().map(classify_echo).collect();
        let patient = scan.series[0].patient_id();
        let id = if patient.is_empty() {
            file_safe(
                std::path::Path::new(folder)
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default()
                    .as_str(),
            )
        } else {
            file_safe(patient)
        };
        let id = if id.is_empty() { "exam".into() } else { id };
        Ok(Exam {
            folder: folder.to_string(),
            id,
            scan,
            kinds,
        })
    }

    /// One line per series: number, description, size, what it is.
    pub fn listing(&self) -> String {
        self.scan
            .series
            .iter()
            .zip(&self.kinds)
            .map(|(s, k)| {
                format!(
                    "  {:>5}  {:<32} {:>4} images  {}",
                    s.selector(),
                    format!("'{}'", s.description()),
                    s.slices.len(),
                    k
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn choice_error(&self, problem: String) -> ExamError {
        ExamError::Choice {
            folder: self.folder.clone(),
            problem,
            series: self.listing(),
        }
    }

    /// The series for each modality (in `Modality::DEFAULT_ORDER`): those given in `chosen`
    /// (a SeriesNumber or SeriesInstanceUID), the others by their names.
    pub fn choose(
        &self,
        chosen: &[(Modality, String)],
    ) -> Result<Vec<(Modality, usize)>, ExamError> {
        let mut out = Vec::new();
        for m in Modality::DEFAULT_ORDER {
            let given: Vec<&String> = chosen
                .iter()
                .filter(|(x, _)| *x == m)
                .map(|(_, s)| s)
                .collect();
            let index = match given.as_slice() {
                [one] => self.find(one).ok_or_else(|| {
                    self.choice_error(format!("no series '{one}' (given for {m})"))
                })?,
                [] => {
                    let candidates: Vec<usize> = (0..self.kinds.len())
                        .filter(|&i| self.kinds[i] == Kind::Modality(m))
                        .filter(|&i| !chosen.iter().any(|(_, s)| self.find(s) == Some(i)))
                        .collect();
                    match candidates.as_slice() {
                        [one] => *one,
                        [] => {
                            return Err(self.choice_error(format!(
                                "no series is {m} by its name: name the one to use"
                            )));
                        }
                        many => {
                            let list = many
                                .iter()
                                .map(|&i| self.scan.series[i].label())
                                .collect::<Vec<_>>()
                                .join(", ");
                            return Err(self.choice_error(format!(
                                "{} series could be {m} ({list}): name the one to use",
                                many.len()
                            )));
                        }
                    }
                }
                _ => return Err(self.choice_error(format!("{m} given more than once"))),
            };
            if let Some((other, _)) = out.iter().find(|(_, i)| *i == index) {
                return Err(self.choice_error(format!(
                    "{} given as both {other} and {m}",
                    self.scan.series[index].label()
                )));
            }
            out.push((m, index));
        }
        Ok(out)
    }

    /// A series by its SeriesNumber or SeriesInstanceUID (with `_e2`, `_t3` for one echo or time
    /// point of a series that holds several).
    fn find(&self, selector: &str) -> Option<usize> {
        let selector = selector.trim();
        self.scan.series.iter().position(|s| s.is_named(selector))
    }

    /// The case that the chosen series make, prepared as `steps` say: by default series on one
    /// grid make it as they are, series on grids of their own are registered to the T1ce,
    /// resampled onto one grid and skull-stripped (`prepare::prepare`).
    pub fn load_case(
        &self,
        files: &dyn Files,
        chosen: &[(Modality, String)],
        steps: Steps,
    ) -> Result<Prepared, ExamError> {
        self.load_case_within(
            files,
            chosen,
            steps,
            crate::io::nifti::MAX_VOXELS,
            &mut |_| {},
        )
    }

    /// As `load_case`, each chosen series refused before its pixels are read when it holds more
    /// than `max_voxels` (the page's memory is that of one tab), each stage said as it starts.
    pub fn load_case_within(
        &self,
        files: &dyn Files,
        chosen: &[(Modality, String)],
        steps: Steps,
        max_voxels: u64,
        on_stage: &mut dyn FnMut(Stage),
    ) -> Result<Prepared, ExamError> {
        let choice = self.choose(chosen)?;
        for (_, i) in &choice {
            let s = &self.scan.series[*i];
            let first = &s.slices[0];
            let voxels = (first.rows * first.columns) as u64 * s.slices.len() as u64;
            if voxels > max_voxels {
                return Err(DicomError::Series {
                    series: s.label(),
                    problem: format!(
                        "{} images of {} × {} pixels: {voxels} voxels, more than the {max_voxels} \
                         read here",
                        s.slices.len(),
                        first.rows,
                        first.columns
                    ),
                }
                .into());
            }
        }
        let mut images = Vec::new();
        for (m, i) in &choice {
            let series = &self.scan.series[*i];
            on_stage(Stage::Reading(format!("the {m}, {}", series.label())));
            images.push((*m, series.load(files)?));
        }
        Ok(prepare_images_reporting(
            &self.id,
            Layout::Loose,
            images,
            None,
            steps,
            on_stage,
        )?)
    }
}

/// Letters, digits, '-' and '_' kept; anything else made '_'.
fn file_safe(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names_as_scanners_write_them() {
        let m = |name: &str| match kind_of_names(name, false) {
            Kind::Modality(m) => Some(m),
            Kind::Other(_) => None,
        };
        use Modality::*;
        for (name, expected) in [
            ("T1 MPRAGE", Some(T1)),
            ("t1_mprage_sag_p2_iso", Some(T1)),
            ("AX T1 PRE", Some(T1)),
            ("T1 SE AX", Some(T1)),
            ("Sag T1 FLAIR", Some(T1)),
            ("AX T1 POST GD", Some(T1ce)),
            ("T1+C AX", Some(T1ce)),
            ("t1_fl3d_tra_CE", Some(T1ce)),
            ("MPRAGE POST", Some(T1ce)),
            ("Ax 3D BRAVO +C", Some(T1ce)),
            ("T1W_3D_TFE_KM", Some(T1ce)),
            ("T1POST", Some(T1ce)),
            ("t2_tse_tra", Some(T2)),
            ("AX T2 FSE", Some(T2)),
            ("T2_SPACE", Some(T2)),
            ("T2 FLAIR AX", Some(Flair)),
            ("t2_tirm_tra_dark-fluid", Some(Flair)),
            ("FLAIR 3D", Some(Flair)),
            ("ep2d_diff_3scan_trace", None),
            ("T2* GRE", None),
            ("SWI", None),
            ("ADC", None),
            ("PD/T2 TSE", None),
            ("AAHead_Scout", None),
            ("", None),
        ] {
            assert_eq!(m(name), expected, "{name}");
        }
        for (name, expected) in [
            ("PD+T2 TSE TRA", true),
            ("PD/T2 TSE", true),
            ("t2_pd_tse_tra", true),
            ("PD TSE", false),
            ("T2* PD", false),
            ("T2 FLAIR", false),
        ] {
            assert_eq!(says_pd_and_t2(name), expected, "{name}");
        }
        // The header's ContrastBolusAgent makes a T1 a post-contrast one.
        assert_eq!(kind_of_names("T1 3D", true), Kind::Modality(T1ce));
    }
}
