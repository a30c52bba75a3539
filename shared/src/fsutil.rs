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
    let path = &write_target(path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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
}
