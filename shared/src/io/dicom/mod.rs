//! DICOM exams as a scanner or PACS exports them: a folder of any depth, files of any name,
//! several series mixed. The headers are read first (every file), the pixels only of the series
//! that are used.
//!
//! - `slice`: one file's header fields and its pixels (Part 10; uncompressed little/big endian,
//!   explicit/implicit VR, deflated, RLE and JPEG: dicom-rs's pure-Rust codecs, which build
//!   for wasm; another compression is refused by its name), one image or the frames of an
//!   enhanced multi-frame image;
//! - `series`: the images of one series sorted along the slice normal into a volume and its grid;
//! - `write`: a volume written as a series (the phantoms' exams).

mod series;
mod slice;
#[cfg(feature = "synth")]
pub mod write;

pub use series::{Part, Series, Stack};
pub use slice::Slice;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The most files nvnet looks at in one exam: an exam is some thousands; a whole archive is not.
pub const MAX_FILES: usize = 100_000;

/// Why an exam could not be read. Every message names the file or the series.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DicomError {
    #[error("{file}: {problem}")]
    File { file: String, problem: String },
    #[error("{series}: {problem}")]
    Series { series: String, problem: String },
    #[error("{folder}: {problem}")]
    Exam { folder: String, problem: String },
}

/// The files of an exam, read when needed: from a folder natively, from memory in the page.
pub trait Files {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The file's name as the user knows it (its path below the exam's folder).
    fn name(&self, i: usize) -> &str;
    fn read(&self, i: usize) -> Result<Cow<'_, [u8]>, String>;
}

/// Files already in memory (the page's dropped files), as (name, bytes).
impl Files for Vec<(String, Vec<u8>)> {
    fn len(&self) -> usize {
        <[_]>::len(self)
    }
    fn name(&self, i: usize) -> &str {
        &self[i].0
    }
    fn read(&self, i: usize) -> Result<Cow<'_, [u8]>, String> {
        Ok(Cow::Borrowed(&self[i].1))
    }
}

/// The files below a folder, at any depth, in name order; hidden files (a leading dot) left out.
pub struct Folder {
    root: PathBuf,
    paths: Vec<PathBuf>,
    names: Vec<String>,
}

impl Folder {
    pub fn walk(root: &Path) -> Result<Self, DicomError> {
        let err = |problem: String| DicomError::Exam {
            folder: root.display().to_string(),
            problem,
        };
        let mut paths = Vec::new();
        let mut pending = vec![root.to_path_buf()];
        while let Some(dir) = pending.pop() {
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| err(format!("cannot list {}: {e}", dir.display())))?;
            for entry in entries {
                let entry =
                    entry.map_err(|e| err(format!("cannot list {}: {e}", dir.display())))?;
                if entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                // Not followed: a link could lead out of the exam or round in a loop.
                let kind = entry
                    .file_type()
                    .map_err(|e| err(format!("{}: {e}", entry.path().display())))?;
                if kind.is_dir() {
                    pending.push(entry.path());
                } else if kind.is_file() {
                    paths.push(entry.path());
                    if paths.len() > MAX_FILES {
                        return Err(err(format!(
                            "more than {MAX_FILES} files: give the folder of one exam"
                        )));
                    }
                }
            }
        }
        paths.sort();
        let names = paths
            .iter()
            .map(|p| p.strip_prefix(root).unwrap_or(p).display().to_string())
            .collect();
        Ok(Folder {
            root: root.to_path_buf(),
            paths,
            names,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, i: usize) -> &Path {
        &self.paths[i]
    }
}

/// Whether a folder holds a DICOM exam: no NIfTI file in it, and a DICOM file among the first
/// files found below it.
pub fn holds_exam(root: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(root) else {
        return false;
    };
    let mut pending = Vec::new();
    let mut looked = 0;
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().to_ascii_lowercase();
        if name.ends_with(".nii") || name.ends_with(".nii.gz") {
            return false;
        }
        pending.push(e.path());
    }
    while let Some(p) = pending.pop() {
        looked += 1;
        if looked > 256 {
            return false;
        }
        // Links are not followed and only regular files opened (a named pipe would never answer).
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                pending.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        } else if is_dicom_file(&p) {
            return true;
        }
    }
    false
}

/// Whether a path is a regular file that starts as a DICOM file does (only its first 132 bytes
/// are read; a device or a named pipe is not opened).
pub fn is_dicom_file(path: &Path) -> bool {
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut head = [0u8; 132];
    std::io::Read::read_exact(&mut f, &mut head).is_ok() && is_dicom(&head)
}

impl Files for Folder {
    fn len(&self) -> usize {
        self.paths.len()
    }
    fn name(&self, i: usize) -> &str {
        &self.names[i]
    }
    fn read(&self, i: usize) -> Result<Cow<'_, [u8]>, String> {
        std::fs::read(&self.paths[i])
            .map(Cow::Owned)
            .map_err(|e| format!("cannot read: {e}"))
    }
}

/// Whether bytes start as a DICOM Part 10 file does (a preamble, then "DICM").
pub fn is_dicom(bytes: &[u8]) -> bool {
    bytes.get(128..132) == Some(b"DICM")
}

/// What the headers of an exam's files hold.
#[derive(Debug, Clone)]
pub struct Scan {
    /// In SeriesNumber order (then UID).
    pub series: Vec<Series>,
    /// Files left out, and why (a DICOMDIR, a report).
    pub notices: Vec<String>,
}

/// Read every file's header and group the images into series. A DICOM file that cannot be read
/// (cut short, damaged) is an error naming it: an exam with a damaged file is not segmented in
/// part. Files that are not DICOM are left out with a notice.
pub fn scan(files: &dyn Files, folder: &str) -> Result<Scan, DicomError> {
    let mut by_uid: BTreeMap<String, Vec<Slice>> = BTreeMap::new();
    let mut notices = Vec::new();
    for i in 0..files.len() {
        let name = files.name(i);
        let file_err = |problem: String| DicomError::File {
            file: name.to_string(),
            problem,
        };
        let bytes = files.read(i).map_err(file_err)?;
        if !is_dicom(&bytes) {
            // An export holds other files too (a viewer, an index, a report): left out, unless
            // the name says DICOM, when it is a damaged one.
            let lower = name.to_ascii_lowercase();
            if [".dcm", ".dicom", ".ima"]
                .iter()
                .any(|e| lower.ends_with(e))
            {
                return Err(file_err(
                    "not a DICOM file: no 'DICM' marker at byte 128 (damaged or cut short?)".into(),
                ));
            }
            notices.push(format!("{name} left out: not a DICOM file"));
            continue;
        }
        match slice::read_header(i, &bytes).map_err(file_err)? {
            slice::Parsed::Slices(images) => {
                for s in images {
                    by_uid.entry(s.series_uid.clone()).or_default().push(s);
                }
            }
            slice::Parsed::NotImage(why) => notices.push(format!("{name} left out: {why}")),
        }
    }
    if by_uid.is_empty() {
        return Err(DicomError::Exam {
            folder: folder.to_string(),
            problem: "no DICOM images here".into(),
        });
    }
    let mut series: Vec<Series> = by_uid.into_values().flat_map(series::split).collect();
    // Split series stay in their order of echoes and time points (a stable sort).
    series.sort_by(|a, b| (a.number(), a.uid()).cmp(&(b.number(), b.uid())));
    let mut patients: Vec<&str> = series
        .iter()
        .flat_map(|s| s.slices.iter().map(|x| x.patient_id.as_str()))
        .collect();
    patients.sort();
    patients.dedup();
    if patients.len() > 1 {
        let list = patients
            .iter()
            .map(|p| format!("'{p}'"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(DicomError::Exam {
            folder: folder.to_string(),
            problem: format!(
                "images of {} patients ({list}): give the folder of one patient's exam",
                patients.len()
            ),
        });
    }
    Ok(Scan { series, notices })
}
