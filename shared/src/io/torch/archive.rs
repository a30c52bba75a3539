//! The zip archive `torch.save` writes: its members, inflated within bounds.

use std::io::{Cursor, Read};

/// Every member of a zip archive, by name, inflated. The sizes the members declare add up to
/// at most `max_inflated` bytes, and no member inflates past its own declared size (deflate
/// expands up to 1032 times), so a few bytes cannot become gigabytes. The error says what is
/// wrong, without the file's name (the caller adds it).
pub fn members(bytes: &[u8], max_inflated: u64) -> Result<Vec<(String, Vec<u8>)>, String> {
    let zip_error = |e: zip::result::ZipError| format!("a broken zip archive ({e})");
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(zip_error)?;
    let mut declared = 0u64;
    for i in 0..archive.len() {
        declared = declared.saturating_add(archive.by_index_raw(i).map_err(zip_error)?.size());
    }
    if declared > max_inflated {
        return Err(format!(
            "its zip members hold {} MiB once inflated, more than nvnet reads from a weights \
             file ({} MiB)",
            declared >> 20,
            max_inflated >> 20
        ));
    }
    let mut out = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).map_err(zip_error)?;
        let (name, size) = (member.name().to_string(), member.size());
        let mut data = Vec::with_capacity(size as usize);
        (&mut member)
            .take(size.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| format!("zip member {name} cannot be inflated ({e})"))?;
        if data.len() as u64 > size {
            return Err(format!(
                "zip member {name} inflates past the {size} bytes it declares"
            ));
        }
        out.push((name, data));
    }
    Ok(out)
}
