//! What the commands that read cases take: case folders, dataset roots, loose NIfTI files and
//! DICOM exams, resolved into sources that are read when their case is processed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use nvnet::Modality;
use nvnet::data::case::{self, CaseFiles, Input};
use nvnet::data::exam::Exam;
use nvnet::io::dicom::{self, Folder};
use nvnet::prepare::{self, Prepared, Skull, Steps, When};

use crate::values::parse_series;

/// Where the cases are and how their series are read: the flags `predict` and `prepare` share.
#[derive(clap::Args)]
pub struct ExamArgs {
    /// A case folder, a dataset root of case folders, loose files (repeat --input), or a DICOM
    /// exam's folder (any depth, several series mixed).
    #[arg(long)]
    pub input: Vec<PathBuf>,
    #[arg(long)]
    t1: Option<PathBuf>,
    #[arg(long)]
    t1ce: Option<PathBuf>,
    #[arg(long)]
    t2: Option<PathBuf>,
    #[arg(long)]
    flair: Option<PathBuf>,
    /// A DICOM exam's series for a modality, by SeriesNumber or SeriesInstanceUID, where the
    /// series' names do not say it: `--series t1ce=7` (repeat for others). One echo or time
    /// point of a series that holds several: `--series t2=4_e2` (as `inspect` lists it).
    #[arg(long, value_parser = parse_series)]
    pub series: Vec<(Modality, String)>,
    /// The series the others are registered to, whose grid the label map is written on: t1,
    /// t1ce, t2 or flair.
    #[arg(long, default_value = "t1ce")]
    reference: Modality,
    /// The series are skull-stripped already: a prepared case is not stripped again (without
    /// it, the skull is stripped unless the T1ce is found stripped already).
    #[arg(long)]
    skull_stripped: bool,
}

impl ExamArgs {
    /// The cases to run, and the inputs refused before any work.
    pub fn collect(&self) -> Result<(Vec<Source>, Vec<String>)> {
        let given: BTreeMap<Modality, PathBuf> = [
            (Modality::T1, &self.t1),
            (Modality::T1ce, &self.t1ce),
            (Modality::T2, &self.t2),
            (Modality::Flair, &self.flair),
        ]
        .into_iter()
        .filter_map(|(m, p)| p.clone().map(|p| (m, p)))
        .collect();
        collect(&self.input, &given, &self.series)
    }

    /// How a case is made of the series, when they are brought onto one grid as `when` says.
    pub fn steps(&self, when: When) -> Steps {
        Steps {
            when,
            reference: self.reference,
            skull: if self.skull_stripped {
                Skull::Stripped
            } else {
                Skull::Auto
            },
        }
    }
}

/// What one case is read from.
pub enum Source {
    /// BraTS-style NIfTI files.
    Files(CaseFiles),
    /// A DICOM exam: its headers read, its pixels read when it is segmented.
    Dicom { exam: Box<Exam>, files: Folder },
}

impl Source {
    pub fn id(&self) -> &str {
        match self {
            Source::Files(f) => &f.id,
            Source::Dicom { exam, .. } => &exam.id,
        }
    }

    pub fn load(&self, series: &[(Modality, String)], steps: Steps) -> Result<Prepared> {
        Ok(match self {
            Source::Files(f) => prepare::load_files(f, steps)?,
            Source::Dicom { exam, files } => exam.load_case(files, series, steps)?,
        })
    }

    pub fn paths(&self) -> Vec<&Path> {
        match self {
            Source::Files(f) => f
                .modalities
                .values()
                .chain(&f.seg)
                .map(|p| p.as_path())
                .collect(),
            Source::Dicom { files, .. } => (0..dicom::Files::len(files))
                .map(|i| files.path(i))
                .collect(),
        }
    }
}

/// The cases to run, and the inputs refused before any work.
pub fn collect(
    inputs: &[PathBuf],
    given: &BTreeMap<Modality, PathBuf>,
    series: &[(Modality, String)],
) -> Result<(Vec<Source>, Vec<String>)> {
    let (dirs, files): (Vec<&PathBuf>, Vec<&PathBuf>) = inputs.iter().partition(|p| p.is_dir());
    let mut cases = Vec::new();
    let mut refused = Vec::new();
    for dir in dirs {
        if dicom::holds_exam(dir) {
            let files = Folder::walk(dir)?;
            let exam = Exam::scan(&files, &dir.display().to_string())?;
            for notice in &exam.scan.notices {
                eprintln!("note: {notice}");
            }
            // The choice of series is checked now, before any work.
            if let Err(e) = exam.choose(series) {
                bail!("{e}\nname a modality's series with --series MODALITY=NUMBER (or its UID)");
            }
            cases.push(Source::Dicom {
                exam: Box::new(exam),
                files,
            });
            continue;
        }
        match case::discover(dir)? {
            Input::Case(c) => cases.push(Source::Files(c)),
            Input::Dataset {
                cases: cs,
                problems,
            } => {
                cases.extend(cs.into_iter().map(Source::Files));
                refused.extend(problems.iter().map(|e| e.to_string()));
            }
        }
    }
    if !files.is_empty() || !given.is_empty() {
        for f in &files {
            if !f.exists() {
                bail!("{}: no such file", f.display());
            }
        }
        let owned: Vec<PathBuf> = files.into_iter().cloned().collect();
        cases.push(Source::Files(CaseFiles::from_loose(&owned, given)?));
    }
    if cases.is_empty() && refused.is_empty() {
        bail!(
            "nothing given: give --input (a case folder, a dataset root or files) or --t1/--t1ce/--t2/--flair"
        );
    }
    Ok((cases, refused))
}
