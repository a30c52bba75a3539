//! The cache of preprocessed cases: each case z-scored and cropped to its brain box once, kept
//! as float16 in one file keyed by its source files, so that an epoch reads instead of
//! preprocessing again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::case::{Case, CaseFiles};
use crate::data::modality::{LabelConvention, Modality};
use crate::io::weights;

const CACHE_MAGIC: &[u8; 8] = b"NVNCACH1";

/// The largest cached case or checkpoint read back: a full BraTS case in float16 is 72 MB, an
/// F=32 checkpoint with Adam's moments 230 MB.
pub(super) const MAX_CACHE_BYTES: u64 = 4 << 30;

/// One case, z-scored and cropped to its brain box, in network order.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedCase {
    pub id: String,
    pub dims: [usize; 3],
    pub spacing: [f64; 3],
    pub labels_convention: LabelConvention,
    /// `channels` volumes as f16.
    pub image: Vec<half::f16>,
    pub channels: usize,
    /// BraTS labels (0 where there is no segmentation).
    pub labels: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct CacheHeader {
    id: String,
    dims: [usize; 3],
    spacing: [f64; 3],
    labels: LabelConvention,
    channels: usize,
}

impl CacheHeader {
    /// The header at the start of a cache file, and where the body starts; `bytes` may be only
    /// the beginning of the file.
    fn parse(bytes: &[u8]) -> Result<(CacheHeader, usize), &'static str> {
        if bytes.len() < 16 || &bytes[..8] != CACHE_MAGIC {
            return Err("magic");
        }
        let hlen = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let start = usize::try_from(hlen)
            .ok()
            .and_then(|h| h.checked_add(16))
            .ok_or("truncated header")?;
        let header = bytes
            .get(16..start)
            .ok_or("truncated header")
            .and_then(|h| serde_json::from_slice(h).map_err(|_| "header"))?;
        Ok((header, start))
    }

    /// Bytes of the body: the float16 image, then the labels.
    fn body_len(&self) -> usize {
        let n: usize = self.dims.iter().product();
        n * self.channels * 2 + n
    }
}

impl CachedCase {
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&CacheHeader {
            id: self.id.clone(),
            dims: self.dims,
            spacing: self.spacing,
            labels: self.labels_convention,
            channels: self.channels,
        })
        .expect("serialisable");
        let mut out =
            Vec::with_capacity(16 + header.len() + self.image.len() * 2 + self.labels.len());
        out.extend_from_slice(CACHE_MAGIC);
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        for v in &self.image {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.labels);
        out
    }

    pub fn from_bytes(bytes: &[u8], file: &str) -> Result<Self, CacheError> {
        let bad = |why: &'static str| CacheError::Invalid {
            file: file.to_string(),
            why,
        };
        let (header, start) = CacheHeader::parse(bytes).map_err(bad)?;
        let n: usize = header.dims.iter().product();
        let body = &bytes[start..];
        if body.len() != header.body_len() {
            return Err(bad("size"));
        }
        let (img, lab) = body.split_at(n * header.channels * 2);
        Ok(CachedCase {
            id: header.id,
            dims: header.dims,
            spacing: header.spacing,
            labels_convention: header.labels,
            image: img
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]))
                .collect(),
            channels: header.channels,
            labels: lab.to_vec(),
        })
    }

    /// Build from a loaded case: z-score, crop to the brain box.
    pub fn build(case: &Case, modalities: &[Modality]) -> Result<Self, CacheError> {
        let prepared = crate::inference::prepare(case, modalities)?;
        let labels = match case.seg_labels() {
            Some(map) => {
                let net = crate::data::volume::to_network_order(case.dims(), &map);
                prepared.crop.crop(&net, 1)
            }
            None => vec![0; prepared.crop.voxels()],
        };
        Ok(CachedCase {
            id: case.id.clone(),
            dims: prepared.crop.size,
            spacing: case.geometry().spacing(),
            labels_convention: case.labels,
            image: prepared
                .input
                .iter()
                .map(|v| half::f16::from_f32(*v))
                .collect(),
            channels: prepared.channels,
            labels,
        })
    }
}

/// The cache file of a case: keyed by its files (path, size, modification time) and the
/// channel order, so that a changed file or order is preprocessed again.
pub fn cache_path(dir: &Path, files: &CaseFiles, modalities: &[Modality]) -> PathBuf {
    let mut key = format!("v1|{modalities:?}|");
    for p in files.modalities.values().chain(files.seg.iter()) {
        let meta = std::fs::metadata(p).ok();
        let mtime = meta
            .as_ref()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        key.push_str(&format!(
            "{}|{}|{mtime}|",
            p.display(),
            meta.map(|m| m.len()).unwrap_or(0)
        ));
    }
    dir.join(format!(
        "{}-{:016x}.nvc",
        files.id,
        weights::fnv1a64(key.as_bytes())
    ))
}

/// Whether a cache file is whole: its header, and the length the header announces, read from
/// its first bytes only.
fn cache_file_whole(path: &Path) -> bool {
    use std::io::Read;
    let check = || -> Option<bool> {
        let file = crate::io::fsutil::open_regular(path).ok()?;
        let len = file.metadata().ok()?.len();
        // The header is a few hundred bytes of JSON.
        let mut head = Vec::new();
        file.take(64 << 10).read_to_end(&mut head).ok()?;
        let (header, start) = CacheHeader::parse(&head).ok()?;
        Some(len == (start + header.body_len()) as u64)
    };
    check().unwrap_or(false)
}

/// Read a case from the cache, building (and writing) it first when it is not there.
pub fn cached(
    dir: &Path,
    files: &CaseFiles,
    modalities: &[Modality],
) -> Result<(PathBuf, bool), CacheError> {
    let path = cache_path(dir, files, modalities);
    // A damaged cache file (cut short on a full disk or by a copy) is built again, not trusted.
    if path.is_file() && cache_file_whole(&path) {
        return Ok((path, false));
    }
    let case = Case::load(files)?;
    let c = CachedCase::build(&case, modalities)?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    crate::io::fsutil::write_atomic(&path, &c.to_bytes()).map_err(io(&path))?;
    Ok((path, true))
}

pub fn read_cached(path: &Path) -> Result<CachedCase, CacheError> {
    let bytes = crate::io::fsutil::read_regular(path, MAX_CACHE_BYTES).map_err(io(path))?;
    CachedCase::from_bytes(&bytes, &path.display().to_string())
}

/// A dataset fingerprint for provenance: the case ids and their cache keys.
pub fn fingerprint(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string()
        })
        .collect();
    format!(
        "{} cases, fnv1a64 {:016x}",
        paths.len(),
        weights::fnv1a64(names.join("|").as_bytes())
    )
}

/// A cache file that cannot be read or written, or a case that cannot be preprocessed into it.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{file}: not a valid nvnet cache file ({why})")]
    Invalid { file: String, why: &'static str },
    #[error(transparent)]
    Case(#[from] crate::data::case::CaseError),
    #[error(transparent)]
    Prepare(#[from] crate::inference::InferenceError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |error| CacheError::Io {
        path: path.to_path_buf(),
        error,
    }
}
