//! The command line's values: the parsers clap calls, and the numbers and times the commands
//! print.

use std::time::SystemTime;

/// "160,192,128" (or 160x192x128): three positive sizes within the voxels nvnet reads.
pub fn parse_shape(text: &str) -> Result<[usize; 3], String> {
    let parts: Vec<usize> = text
        .split([',', 'x', '×'])
        .map(|p| {
            p.trim()
                .parse::<usize>()
                .map_err(|_| format!("'{text}' is not a shape like 160,192,128"))
        })
        .collect::<Result<_, _>>()?;
    let shape = match parts.as_slice() {
        [d, h, w] if *d > 0 && *h > 0 && *w > 0 => [*d, *h, *w],
        _ => {
            return Err(format!(
                "'{text}' is not a shape of three positive sizes like 160,192,128"
            ));
        }
    };
    // The volumes nvnet reads are capped; no shape here needs more (and sizes this large would
    // fail in the allocator, not with a message).
    let voxels = shape.iter().try_fold(1u64, |n, &s| n.checked_mul(s as u64));
    match voxels {
        Some(v) if v <= nvnet::io::nifti::MAX_VOXELS => Ok(shape),
        _ => Err(format!(
            "{text}: more than the {} voxels nvnet handles",
            nvnet::io::nifti::MAX_VOXELS
        )),
    }
}

/// `t1ce=7`: a modality and a DICOM series (its SeriesNumber or SeriesInstanceUID).
pub fn parse_series(text: &str) -> Result<(nvnet::Modality, String), String> {
    let (m, series) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not MODALITY=SERIES, like t1ce=7"))?;
    let m = m.parse().map_err(|e| format!("{e}"))?;
    let series = series.trim();
    if series.is_empty() {
        return Err(format!("'{text}' names no series"));
    }
    Ok((m, series.to_string()))
}

/// A case layout's name: brats2018 (also 2019–2021) or brats2023 (also 2024).
pub fn parse_layout(text: &str) -> Result<nvnet::data::case::Layout, String> {
    use nvnet::data::case::Layout;
    match text.to_ascii_lowercase().as_str() {
        "brats2018" | "brats2019" | "brats2020" | "brats2021" => Ok(Layout::Brats2018),
        "brats2023" | "brats2024" => Ok(Layout::Brats2023),
        other => Err(format!(
            "unknown layout '{other}' (expected brats2018 or brats2023)"
        )),
    }
}

/// "4G", "512M", "1.5GiB", or bytes.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.trim_end_matches("ib").trim_end_matches('b');
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a size like 4G or 512M"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("'{text}' is not a positive size"));
    }
    Ok((v * mult as f64) as u64)
}

/// Bytes as GiB.
pub fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// Now, as RFC 3339 to the second (manifests, run records).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// 18798627 → "18,798,627".
pub fn group_digits(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
