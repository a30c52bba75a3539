//! File-system helpers shared by every reader and writer.

use std::io::{Error, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

/// What a path that is not a regular file is, for messages.
fn kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a named pipe";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

fn not_regular(meta: &std::fs::Metadata) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!("{}, not a regular file", kind(meta)),
    )
}

/// Open a file for reading, refusing what is not a regular file before opening it: a named
/// pipe would block for ever and a device such as /dev/zero never ends.
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    std::fs::File::open(path)
}

/// Read a whole regular file of at most `max` bytes (a larger one is refused before anything
/// is allocated).
pub fn read_regular(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let len = file.metadata()?.len();
    if len > max {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} bytes, more than nvnet reads from such a file ({} MiB)",
                len,
                max >> 20
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // The length may have changed since: never read more than `max`.
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("grew past {} MiB while being read", max >> 20),
        ));
    }
    Ok(bytes)
}

/// Where writing to `path` must put its file: a symbolic link is followed (the link stays and
/// points to the new file); anything there that is not a regular file (a device such as
/// /dev/null, a named pipe, a folder) is refused rather than replaced.
fn write_target(path: &Path) -> std::io::Result<PathBuf> {
    let path = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    };
    match std::fs::metadata(&path) {
        Ok(m) if !m.is_file() => Err(Error::new(
            ErrorKind::InvalidInput,
            format!("exists and is {}, which nvnet does not replace", kind(&m)),
        )),
        _ => Ok(path),
    }
}

/// Write `bytes` to `path` atomically: a temp file in the same folder, synced, then renamed, so
/// that a crash or a full disk never leaves a half-written file under the final name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_all_atomic(&[(path, bytes)]).map_err(|(_, e)| e)
}

/// Write several files as one unit: each is first written to a temp file beside it (synced);
/// only when all are written are they renamed into place. A failure while writing (a full disk,
/// a folder standing where a file goes) leaves every earlier file under those names as it was.
/// Should a rename fail after others succeeded, those are rolled back to the earlier files.
pub fn write_all_atomic(files: &[(&Path, &[u8])]) -> Result<(), (PathBuf, Error)> {
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
    let clean = |staged: &[(PathBuf, PathBuf)]| {
        for (tmp, _) in staged {
            let _ = std::fs::remove_file(tmp);
        }
    };
    for (path, bytes) in files {
        let staging = write_target(path).and_then(|target| {
            let tmp = temp_name(&target);
            let written = (|| {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(bytes)?;
                f.sync_all()
            })();
            match written {
                Ok(()) => Ok((tmp, target)),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    Err(e)
                }
            }
        });
        match staging {
            Ok(pair) => staged.push(pair),
            Err(e) => {
                clean(&staged);
                return Err((path.to_path_buf(), e));
            }
        }
    }
    // Keep what stands under each name (a hard link costs nothing) until all renames succeed.
    let backups: Vec<Option<PathBuf>> = staged
        .iter()
        .map(|(_, target)| {
            let mut backup = temp_name(target).into_os_string();
            backup.push(".bak");
            let backup = PathBuf::from(backup);
            std::fs::hard_link(target, &backup).ok().map(|()| backup)
        })
        .collect();
    let mut result = Ok(());
    for (n, (tmp, target)) in staged.iter().enumerate() {
        if let Err(e) = std::fs::rename(tmp, target) {
            for ((_, done), backup) in staged[..n].iter().zip(&backups) {
                match backup {
                    Some(b) => drop(std::fs::rename(b, done)),
                    None => drop(std::fs::remove_file(done)),
                }
            }
            clean(&staged[n..]);
            result = Err((target.clone(), e));
            break;
        }
    }
    for b in backups.into_iter().flatten() {
        let _ = std::fs::remove_file(b);
    }
    result
}

/// The temp file nvnet writes before renaming it to `target`: hidden, beside it, named with
/// the writer's process id (so that [`remove_stale_temps`] knows whose it is).
fn temp_name(target: &Path) -> PathBuf {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "out".into());
    dir.join(format!(".{name}.tmp-{}", std::process::id()))
}

/// Remove the temp files that a killed nvnet left in `dir` (`.NAME.tmp-PID`, `.bak` too) whose
/// process is gone. Where process ids cannot be checked (no /proc), only those a day old go.
/// Returns how many were removed.
pub fn remove_stale_temps(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let proc_fs = Path::new("/proc/self").exists();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = temp_owner(&name) else {
            continue;
        };
        let stale = if proc_fs {
            pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 24 * 3600)
        };
        if stale && entry.file_type().is_ok_and(|t| t.is_file()) {
            removed += usize::from(std::fs::remove_file(entry.path()).is_ok());
        }
    }
    removed
}

/// The process id in a temp file's name `.NAME.tmp-PID` or `.NAME.tmp-PID.bak`.
fn temp_owner(file_name: &str) -> Option<u32> {
    if !file_name.starts_with('.') {
        return None;
    }
    let (_, tail) = file_name.rsplit_once(".tmp-")?;
    tail.strip_suffix(".bak").unwrap_or(tail).parse().ok()
}

/// A file's identity, whatever path or link leads to it: its device and inode on Unix, its
/// canonical path elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileId(#[cfg(unix)] (u64, u64), #[cfg(not(unix))] PathBuf);

impl FileId {
    /// `None` when nothing (or a dangling link) is there.
    pub fn of(path: &Path) -> Option<FileId> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(path).ok()?;
            Some(FileId((m.dev(), m.ino())))
        }
        #[cfg(not(unix))]
        {
            std::fs::canonicalize(path).ok().map(FileId)
        }
    }
}

/// The files a run reads: an output that would replace one of them — under its own name, through
/// a link, or as a hard link — is refused.
#[derive(Debug, Default)]
pub struct Inputs(std::collections::HashMap<FileId, PathBuf>);

impl Inputs {
    pub fn add(&mut self, path: &Path) {
        if let Some(id) = FileId::of(path) {
            self.0.entry(id).or_insert_with(|| path.to_path_buf());
        }
    }

    /// An error naming the input when writing `output` would replace it.
    pub fn check_output(&self, output: &Path) -> std::io::Result<()> {
        match FileId::of(output).and_then(|id| self.0.get(&id)) {
            Some(input) => Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "writing it would replace {}, an input of this run; choose another output",
                    input.display()
                ),
            )),
            None => Ok(()),
        }
    }
}

/// A lock on an output folder for one run: a second nvnet writing into the same folder is told
/// so instead of mixing its files with this one's. Held until dropped (or the process ends).
/// On Unix the folder itself is locked (flock), leaving nothing in it; elsewhere a
/// `.nvnet.lock` file in it.
#[derive(Debug)]
pub struct FolderLock(#[allow(dead_code)] std::fs::File);

impl FolderLock {
    pub fn take(dir: &Path) -> std::io::Result<FolderLock> {
        #[cfg(unix)]
        let file = std::fs::File::open(dir)?;
        #[cfg(not(unix))]
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".nvnet.lock"))?;
        match file.try_lock() {
            Ok(()) => Ok(FolderLock(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::new(
                ErrorKind::WouldBlock,
                "another nvnet run is writing into this folder; wait for it to end or choose another output folder",
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn special_files_are_refused_and_links_followed() {
        let dir = tempfile::tempdir().unwrap();
        // Reading: a folder, a device, a named pipe (which would block if opened).
        let fifo = dir.path().join("pipe");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        for (p, what) in [
            (dir.path(), "a folder"),
            (Path::new("/dev/zero"), "a device"),
            (fifo.as_path(), "a named pipe"),
        ] {
            let e = read_regular(p, 1 << 20).unwrap_err().to_string();
            assert!(e.contains(what), "{p:?}: {e}");
        }
        let big = dir.path().join("big");
        std::fs::write(&big, vec![0u8; 2000]).unwrap();
        assert!(
            read_regular(&big, 1000)
                .unwrap_err()
                .to_string()
                .contains("2000 bytes")
        );
        assert_eq!(read_regular(&big, 2000).unwrap().len(), 2000);
        // Writing: no device or pipe replaced; a link keeps pointing at the new file.
        for p in [Path::new("/dev/null"), fifo.as_path()] {
            let e = write_atomic(p, b"x").unwrap_err().to_string();
            assert!(e.contains("does not replace"), "{p:?}: {e}");
        }
        assert!(
            std::fs::metadata("/dev/null")
                .unwrap()
                .file_type()
                .is_char_device()
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&big, &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&big).unwrap(), b"new");
    }

    #[test]
    fn a_failed_unit_of_writes_leaves_the_earlier_files_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"old a").unwrap();
        // b cannot be written: a folder stands there.
        std::fs::create_dir(&b).unwrap();
        let (failed, e) = write_all_atomic(&[(&a, b"new a"), (&b, b"new b")]).unwrap_err();
        assert_eq!(failed, b);
        assert!(e.to_string().contains("a folder"), "{e}");
        assert_eq!(std::fs::read(&a).unwrap(), b"old a");
        std::fs::remove_dir(&b).unwrap();
        write_all_atomic(&[(&a, b"new a"), (&b, b"new b")]).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"new a");
        assert_eq!(std::fs::read(&b).unwrap(), b"new b");
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b"], "no temp file or backup left");
    }

    #[test]
    fn temp_files_of_dead_processes_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        // No process has an id this high (Linux caps them at 2^22).
        let dead = dir.path().join(".P.nii.gz.tmp-4294967294");
        let dead_backup = dir.path().join(".P.nii.gz.tmp-4294967294.bak");
        let ours = dir
            .path()
            .join(format!(".Q.nii.gz.tmp-{}", std::process::id()));
        let other = dir.path().join("P.nii.gz");
        for p in [&dead, &dead_backup, &ours, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        assert_eq!(remove_stale_temps(dir.path()), 2);
        assert!(!dead.exists() && !dead_backup.exists());
        assert!(ours.exists() && other.exists());
        assert_eq!(temp_owner(".a.tmp-12"), Some(12));
        assert_eq!(temp_owner("a.tmp-12"), None);
    }

    #[test]
    fn an_input_is_recognised_through_a_link_or_another_name() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("flair.nii.gz");
        std::fs::write(&input, b"image").unwrap();
        let mut inputs = Inputs::default();
        inputs.add(&input);
        let link = dir.path().join("P.nii.gz");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        let hard = dir.path().join("hard.nii.gz");
        std::fs::hard_link(&input, &hard).unwrap();
        for out in [&input, &link, &hard] {
            let e = inputs.check_output(out).unwrap_err().to_string();
            assert!(e.contains("flair.nii.gz") && e.contains("an input"), "{e}");
        }
        assert!(inputs.check_output(&dir.path().join("new.nii.gz")).is_ok());
    }

    #[test]
    fn a_folder_is_locked_by_one_run_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = FolderLock::take(dir.path()).unwrap();
        let e = FolderLock::take(dir.path()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WouldBlock);
        assert!(e.to_string().contains("another nvnet run"), "{e}");
        drop(held);
        FolderLock::take(dir.path()).unwrap();
    }
}
