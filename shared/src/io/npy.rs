//! A small reader and writer for NumPy `.npy` arrays (C order), used for reference vectors,
//! test data and debugging dumps.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    // Not a `source` field: the message already holds it, and error chains would repeat it.
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{0}: not a .npy file ({1})")]
    Format(String, String),
}

/// A loaded array: its shape and its values widened to f64.
#[derive(Debug, Clone)]
pub struct Npy {
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

impl Npy {
    pub fn to_f32(&self) -> Vec<f32> {
        self.values.iter().map(|&v| v as f32).collect()
    }
}

pub fn read(path: impl AsRef<Path>) -> Result<Npy, NpyError> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|error| NpyError::Io {
        path: name.clone(),
        error,
    })?;
    parse(&bytes).map_err(|why| NpyError::Format(name, why))
}

fn parse(bytes: &[u8]) -> Result<Npy, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("missing the \\x93NUMPY magic".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported version {v}")),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("truncated header")?;
    let field = |key: &str| -> Result<&str, String> {
        let at = header
            .find(&format!("'{key}'"))
            .ok_or(format!("no '{key}' in header"))?;
        Ok(header[at + key.len() + 2..].trim_start_matches([':', ' ']))
    };
    let descr = field("descr")?;
    let descr = descr
        .trim_start_matches('\'')
        .split('\'')
        .next()
        .unwrap_or("");
    if field("fortran_order")?.starts_with("True") {
        return Err("Fortran order is not supported".into());
    }
    let shape_text = field("shape")?;
    let shape_text = shape_text
        .trim_start_matches('(')
        .split(')')
        .next()
        .unwrap_or("");
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|e| format!("bad shape '{shape_text}': {e}"))
        })
        .collect::<Result<_, _>>()?;
    let count: usize = shape.iter().product();
    let (endian, kind) = descr.split_at(1);
    let big = endian == ">";
    let data = &bytes[start + header_len..];
    let size = kind[1..]
        .parse::<usize>()
        .map_err(|_| format!("bad dtype '{descr}'"))?;
    if data.len() < count * size {
        return Err(format!(
            "truncated data: {} bytes for {count} values of {size}",
            data.len()
        ));
    }
    let word = |i: usize| -> [u8; 8] {
        let mut w = [0u8; 8];
        let mut chunk = data[i * size..(i + 1) * size].to_vec();
        if big {
            chunk.reverse();
        }
        w[..size].copy_from_slice(&chunk);
        w
    };
    let conv: Box<dyn Fn([u8; 8]) -> f64> = match kind {
        "f4" => Box::new(|w| f32::from_le_bytes([w[0], w[1], w[2], w[3]]) as f64),
        "f8" => Box::new(f64::from_le_bytes),
        "u1" | "b1" => Box::new(|w| w[0] as f64),
        "i1" => Box::new(|w| w[0] as i8 as f64),
        "u2" => Box::new(|w| u16::from_le_bytes([w[0], w[1]]) as f64),
        "i2" => Box::new(|w| i16::from_le_bytes([w[0], w[1]]) as f64),
        "u4" => Box::new(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as f64),
        "i4" => Box::new(|w| i32::from_le_bytes([w[0], w[1], w[2], w[3]]) as f64),
        "i8" => Box::new(|w| i64::from_le_bytes(w) as f64),
        "u8" => Box::new(|w| u64::from_le_bytes(w) as f64),
        _ => return Err(format!("unsupported dtype '{descr}'")),
    };
    let values = (0..count).map(|i| conv(word(i))).collect();
    Ok(Npy { shape, values })
}
