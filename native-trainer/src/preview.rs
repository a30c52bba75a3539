//! PNG previews: axial slices of each modality and the label map.

use std::path::Path;

use anyhow::{Context, Result};
use nvnet::data::synth::Phantom;

/// BraTS label colours: 1 necrosis red, 2 edema green, ET yellow.
pub fn label_colour(label: u8, et: u8) -> [u8; 3] {
    match label {
        0 => [0, 0, 0],
        1 => [220, 40, 40],
        2 => [40, 200, 60],
        l if l == et => [250, 220, 40],
        _ => [80, 80, 255],
    }
}

/// An RGB canvas.
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize, background: [u8; 3]) -> Self {
        let rgb = background.repeat(width * height);
        Canvas { width, height, rgb }
    }

    pub fn set(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.width && y < self.height {
            let at = 3 * (y * self.width + x);
            self.rgb[at..at + 3].copy_from_slice(&c);
        }
    }

    /// Write as PNG, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut bytes, self.width as u32, self.height as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header()?;
            w.write_image_data(&self.rgb)?;
        }
        nvnet::io::fsutil::write_atomic(path, &bytes)
            .with_context(|| format!("{}: cannot write", path.display()))
    }
}

/// Rows of phantoms, each: T1, T1ce, T2, FLAIR and the label map at the axial slice through the
/// middle of the tumour (or of the brain), in radiological view (as BraTS viewers show it).
pub fn write_phantom_preview(path: &Path, phantoms: &[Phantom]) -> Result<()> {
    let Some(first) = phantoms.first() else {
        return Ok(());
    };
    let [nx, ny, _] = first.geometry.dims;
    let gap = 4;
    let mut canvas = Canvas::new(
        5 * (nx + gap) + gap,
        phantoms.len() * (ny + gap) + gap,
        [255; 3],
    );
    for (row, p) in phantoms.iter().enumerate() {
        let [nx, ny, nz] = p.geometry.dims;
        let slab = nx * ny;
        // The slice with the most tumour, else the middle.
        let k = (0..nz)
            .max_by_key(|&k| {
                p.seg[k * slab..(k + 1) * slab]
                    .iter()
                    .filter(|&&l| l > 0)
                    .count()
            })
            .filter(|&k| p.seg[k * slab..(k + 1) * slab].iter().any(|&l| l > 0))
            .unwrap_or(nz / 2);
        let y0 = gap + row * (ny + gap);
        for (col, (_, img)) in p.images.iter().enumerate() {
            let s = &img[k * slab..(k + 1) * slab];
            let mut sorted: Vec<i16> = s.iter().copied().filter(|&v| v > 0).collect();
            sorted.sort_unstable();
            let hi = sorted
                .get(sorted.len() * 995 / 1000)
                .copied()
                .unwrap_or(1)
                .max(1) as f64;
            let x0 = gap + col * (nx + gap);
            for j in 0..ny {
                for i in 0..nx {
                    let g = (s[i + nx * j] as f64 / hi * 255.0).clamp(0.0, 255.0) as u8;
                    // Image rows run anterior (top) to posterior; the file's i and j are flipped
                    // (LPS), so file order already shows the patient's right on the left.
                    canvas.set(x0 + i, y0 + j, [g, g, g]);
                }
            }
        }
        let x0 = gap + 4 * (nx + gap);
        let et = p.labels.et_label();
        for j in 0..ny {
            for i in 0..nx {
                let l = p.seg[k * slab + i + nx * j];
                let base = if p.images[3].1[k * slab + i + nx * j] > 0 {
                    [40, 40, 40]
                } else {
                    [0, 0, 0]
                };
                canvas.set(
                    x0 + i,
                    y0 + j,
                    if l > 0 { label_colour(l, et) } else { base },
                );
            }
        }
    }
    canvas.save(path)
}

/// A 5×7 bitmap glyph (rows top to bottom, 5 bits each, most significant on the left).
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        _ => [0; 7],
    }
}

/// Draw text (upper case) with its top-left corner at (x, y).
pub fn text(c: &mut Canvas, x: usize, y: usize, s: &str, colour: [u8; 3]) {
    for (n, ch) in s.chars().enumerate() {
        let g = glyph(ch);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) != 0 {
                    c.set(x + n * 6 + col, y + row, colour);
                }
            }
        }
    }
}

/// A straight line (Bresenham).
pub fn line(c: &mut Canvas, from: (usize, usize), to: (usize, usize), colour: [u8; 3]) {
    let (mut x, mut y) = (from.0 as isize, from.1 as isize);
    let (x1, y1) = (to.0 as isize, to.1 as isize);
    let (dx, dy) = ((x1 - x).abs(), -(y1 - y).abs());
    let (sx, sy) = (if x < x1 { 1 } else { -1 }, if y < y1 { 1 } else { -1 });
    let mut err = dx + dy;
    loop {
        if x >= 0 && y >= 0 {
            c.set(x as usize, y as usize, colour);
        }
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}
