//! What the commands that read cases take: case folders, dataset roots, loose NIfTI files and
//! DICOM exams, resolved into sources that are read when their case is processed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use nvnet::Modality;
use nvnet::data::case::{self, CaseFiles, Input};
use nvnet::data::exam::Exam;
use nvnet::io::dicom::{self, Folder};
use nvnet::prepare::{self, Options, Prepared, When};

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

    pub fn load(&self, series: &[(Modality, String)], when: When) -> Result<Prepared> {
        Ok(match self {
            Source::Files(f) => prepare::load_files(f, when, &Options::default())?,
            Source::Dicom { exam, files } => exam.load_case(files, series, when)?,
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
