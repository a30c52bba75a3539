//! Synthetic phantoms: multimodal brain MRI with a glioma, skull-stripped in the BraTS layout or
//! as the whole head a scanner records.
//!
//! Every case is built from smooth random fields, so that anatomy, tumour and contrast vary:
//! an irregular brain outline; cortex with gyri and sulci, white matter, deep grey matter,
//! ventricles and the midline fissure; a tumour of random size, place and shape made of necrosis,
//! an enhancing rim and edema (or a non-enhancing core), each with its contrast in each modality;
//! then a bias field, texture and Rician noise. Every case has a tumour, as in BraTS; some are
//! small, some faint. Labels are thresholds of the same soft memberships that set the intensities, so
//! boundaries are partial-volume blurred as in real scans.
//!
//! Geometry is laid out in a reference space of 240×240×155 mm and sampled on the requested
//! grid (the voxel spacing is 240/nx, 240/ny, 155/nz mm), so a small phantom is the same brain at a
//! coarser resolution. Everything is a function of (seed, case index): deterministic, and case
//! `i` does not depend on how many cases are made.

mod acquire;
mod write;
pub use acquire::{acquire, grid_around};
pub use write::{Acquisition, acquire_series, write_case, write_exam};

use crate::data::modality::{LabelConvention, Modality};
use crate::data::rng::Rng;
use crate::io::nifti::Geometry;

/// The BraTS grid.
pub const BRATS_SHAPE: [usize; 3] = [240, 240, 155];
const REFERENCE_MM: [f64; 3] = [240.0, 240.0, 155.0];

/// Smooth value noise: random values on a lattice of `cell` mm, interpolated with smoothstep
/// weights. Values in about [-1, 1].
struct Lattice {
    n: [usize; 3],
    cell: f64,
    values: Vec<f32>,
}

impl Lattice {
    fn new(rng: &mut Rng, cell: f64) -> Self {
        let n = REFERENCE_MM.map(|e| (e / cell).ceil() as usize + 3);
        let values = (0..n[0] * n[1] * n[2])
            .map(|_| rng.range(-1.0, 1.0) as f32)
            .collect();
        Lattice { n, cell, values }
    }

    /// At a point in reference mm (origin at the volume's corner).
    fn at(&self, p: [f64; 3]) -> f64 {
        let mut base = [0usize; 3];
        let mut w = [0f64; 3];
        for a in 0..3 {
            let g = (p[a] / self.cell + 1.0).clamp(0.0, (self.n[a] - 2) as f64 - 1e-9);
            base[a] = g as usize;
            let t = g - base[a] as f64;
            w[a] = t * t * (3.0 - 2.0 * t);
        }
        let idx = |x: usize, y: usize, z: usize| {
            self.values[(base[0] + x) + self.n[0] * ((base[1] + y) + self.n[1] * (base[2] + z))]
                as f64
        };
        let lerp = |a: f64, b: f64, t: f64| a + (b - a) * t;
        let c00 = lerp(idx(0, 0, 0), idx(1, 0, 0), w[0]);
        let c10 = lerp(idx(0, 1, 0), idx(1, 1, 0), w[0]);
        let c01 = lerp(idx(0, 0, 1), idx(1, 0, 1), w[0]);
        let c11 = lerp(idx(0, 1, 1), idx(1, 1, 1), w[0]);
        lerp(lerp(c00, c10, w[1]), lerp(c01, c11, w[1]), w[2])
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Tissue classes with their own contrast.
#[derive(Clone, Copy)]
enum Tissue {
    Csf,
    Gm,
    Wm,
    Edema,
    Necrosis,
    Enhancing,
    NonEnhancing,
}
const TISSUES: usize = 7;

/// Typical relative intensities (white matter on T1 ≈ 0.8), per modality in DEFAULT_ORDER:
/// T1, T1ce, T2, FLAIR. Cortex is a little brighter than white matter on FLAIR (≈ 1.17×); edema
/// is bright on T2 and FLAIR; the enhancing rim on T1ce; necrosis is dark on T1/T1ce and bright
/// on T2; CSF is suppressed on FLAIR; a non-enhancing core is dark on T1 and brighter on T2 than
/// on FLAIR (the T2–FLAIR mismatch of lower-grade gliomas).
fn base_contrast(t: Tissue) -> [f64; 4] {
    match t {
        Tissue::Csf => [0.25, 0.27, 1.00, 0.10],
        Tissue::Gm => [0.55, 0.57, 0.62, 0.56],
        Tissue::Wm => [0.80, 0.82, 0.42, 0.48],
        Tissue::Edema => [0.48, 0.50, 0.84, 0.95],
        Tissue::Necrosis => [0.26, 0.24, 0.95, 0.42],
        Tissue::Enhancing => [0.55, 1.15, 0.66, 0.76],
        Tissue::NonEnhancing => [0.36, 0.38, 0.90, 0.70],
    }
}

/// What kind of case a phantom is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TumourKind {
    /// Necrotic core, enhancing rim, edema (a glioblastoma).
    Typical,
    /// Enhancing but no necrosis.
    Solid,
    /// A core without enhancement (a lower-grade glioma): labels 1 and 2 only.
    NonEnhancing,
}

/// The random choices of one case (all in reference mm).
struct Plan {
    centre: [f64; 3],
    axes: [f64; 3],
    kind: TumourKind,
    tumour_centre: [f64; 3],
    tumour_stretch: [f64; 3],
    r_edema: f64,
    r_core: f64,
    r_necrosis: f64,
    /// 1 = full contrast; lower = faint tumour.
    contrast: f64,
    ventricle_offset: f64,
    noise_sigma: f64,
    scale: [f64; 4],
    table: [[f64; 4]; TISSUES],
    fields: Fields,
}

struct Fields {
    outline: Lattice,
    gyri: Lattice,
    fine: Lattice,
    tumour: Lattice,
    tumour2: Lattice,
    edema: Lattice,
    bias: [Lattice; 4],
}

/// What a phantom shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Anatomy {
    /// The brain alone, zero around it: a case prepared the BraTS way.
    #[default]
    Brain,
    /// The whole head as the scanner sees it: CSF around the brain, the skull (inner table,
    /// marrow, outer table), muscle, fat and skin, and noise in the air around.
    Head,
}

/// One phantom case, in file order (i fastest).
pub struct Phantom {
    pub id: String,
    pub geometry: Geometry,
    /// The four images in [`Modality::DEFAULT_ORDER`].
    pub images: Vec<(Modality, Vec<i16>)>,
    pub seg: Vec<u8>,
    /// The brain (1) and what is not (0): the truth a skull stripping is measured against.
    pub brain: Vec<u8>,
    pub anatomy: Anatomy,
    pub kind: TumourKind,
    pub faint: bool,
    pub labels: LabelConvention,
}

/// The case id of phantom `index`.
pub fn case_id(index: usize) -> String {
    format!("Phantom-{index:05}")
}

fn plan(seed: u64, index: usize) -> Plan {
    let mut rng = Rng::new(seed ^ (index as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F));
    // Burn a few values so that nearby seeds diverge at once.
    for _ in 0..4 {
        rng.next_u64();
    }
    let centre = [
        120.0 + rng.range(-5.0, 5.0),
        120.0 + rng.range(-6.0, 6.0),
        77.5 + rng.range(-3.0, 3.0),
    ];
    let axes = [
        68.0 * rng.range(0.93, 1.06),
        86.0 * rng.range(0.93, 1.06),
        62.0 * rng.range(0.93, 1.05),
    ];
    // Every case has a glioma, as every BraTS case does; most are glioblastomas.
    let roll = rng.unit();
    let kind = if roll < 0.62 {
        TumourKind::Typical
    } else if roll < 0.87 {
        TumourKind::Solid
    } else {
        TumourKind::NonEnhancing
    };
    // BraTS whole tumours are rarely under a few cm³: "small" is 9–14 mm, not a speck.
    let small = rng.chance(0.12);
    let faint = rng.chance(0.18);
    // A point well inside the brain, in one hemisphere or the other.
    let dir = loop {
        let d = [
            rng.range(-1.0, 1.0),
            rng.range(-1.0, 1.0),
            rng.range(-1.0, 1.0),
        ];
        let n = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
        if n <= 1.0 && d[0].abs() > 0.12 {
            break d;
        }
    };
    let depth = rng.range(0.15, 0.6);
    let tumour_centre = [0, 1, 2].map(|a| centre[a] + dir[a] * depth * axes[a]);
    let tumour_stretch = [0; 3].map(|_| rng.range(0.75, 1.3));
    let r_edema = if small {
        rng.range(9.0, 14.0)
    } else {
        rng.range(14.0, 36.0)
    };
    let r_core = r_edema * rng.range(0.5, 0.8);
    let r_necrosis = match kind {
        TumourKind::Typical => r_core * rng.range(0.35, 0.75),
        _ => 0.0,
    };
    // Faint: the tumour's tissues 60–80 % of the way from white matter to their own contrast,
    // so that edema stays brighter than cortex on FLAIR (as in lower-grade gliomas), if less so.
    let contrast = if faint {
        rng.range(0.6, 0.8)
    } else {
        rng.range(0.85, 1.15)
    };
    let mut table = [[0.0; 4]; TISSUES];
    for (t, tissue) in [
        Tissue::Csf,
        Tissue::Gm,
        Tissue::Wm,
        Tissue::Edema,
        Tissue::Necrosis,
        Tissue::Enhancing,
        Tissue::NonEnhancing,
    ]
    .into_iter()
    .enumerate()
    {
        let base = base_contrast(tissue);
        for m in 0..4 {
            table[t][m] = base[m] * rng.range(0.92, 1.08);
        }
    }
    // Faint tumours: their tissues move towards white matter.
    for t in [
        Tissue::Edema,
        Tissue::Necrosis,
        Tissue::Enhancing,
        Tissue::NonEnhancing,
    ] {
        let wm = table[Tissue::Wm as usize];
        for (v, w) in table[t as usize].iter_mut().zip(wm) {
            *v = w + (*v - w) * contrast;
        }
    }
    let noise_sigma = rng.range(0.015, 0.045);
    let scale = [0; 4].map(|_| rng.range(350.0, 1400.0));
    let ventricle_offset = rng.range(-4.0, 4.0);
    let fields = Fields {
        outline: Lattice::new(&mut rng, 34.0),
        gyri: Lattice::new(&mut rng, 5.5),
        fine: Lattice::new(&mut rng, 2.5),
        tumour: Lattice::new(&mut rng, 9.0),
        tumour2: Lattice::new(&mut rng, 4.0),
        edema: Lattice::new(&mut rng, 13.0),
        bias: [0; 4].map(|_| Lattice::new(&mut rng, 70.0)),
    };
    Plan {
        centre,
        axes,
        kind,
        tumour_centre,
        tumour_stretch,
        r_edema,
        r_core,
        r_necrosis,
        contrast,
        ventricle_offset,
        noise_sigma,
        scale,
        table,
        fields,
    }
}

/// Soft memberships at one point.
struct Membership {
    brain: bool,
    /// Outside the brain: about how far from its surface (mm).
    outside_mm: f64,
    gm: f64,
    csf: f64,
    edema: f64,
    core: f64,
    necrosis: f64,
}

impl Plan {
    fn membership(&self, p: [f64; 3]) -> Membership {
        let f = &self.fields;
        let q = [0, 1, 2].map(|a| (p[a] - self.centre[a]) / self.axes[a]);
        let r = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2]).sqrt();
        let r_eff = r * (1.0 + 0.07 * f.outline.at(p));
        // The brain is flatter underneath.
        let r_eff = if q[2] < -0.55 {
            r_eff + (-0.55 - q[2]) * 0.9
        } else {
            r_eff
        };
        let brain = r_eff < 1.0;
        let mut m = Membership {
            brain,
            outside_mm: (r_eff - 1.0).max(0.0) * 66.0,
            gm: 0.0,
            csf: 0.0,
            edema: 0.0,
            core: 0.0,
            necrosis: 0.0,
        };
        if !brain {
            return m;
        }
        // Approximate depth below the surface in mm.
        let depth = (1.0 - r_eff) * 66.0;
        let g = f.gyri.at(p);
        // Cortex 4–13 mm deep, following the gyral pattern (white-matter fingers where it is
        // thin); sulci of CSF run into it where the pattern peaks.
        let gm_depth = 4.0 + 9.0 * (0.5 + 0.5 * g);
        let cortex = sigmoid((gm_depth - depth) / 0.8);
        let sulcus = ((g - 0.25) / 0.3).clamp(0.0, 1.0) * sigmoid((0.75 * gm_depth - depth) / 0.8);
        let rim = 0.7 * sigmoid((1.0 - depth) / 0.5);
        let x = p[0] - self.centre[0];
        let fissure = sigmoid((1.3 + 0.6 * g - x.abs()) / 0.4) * sigmoid((q[2] + 0.1) / 0.05);
        // Lateral ventricles (two bent ellipsoids) and deep grey matter beside them.
        let mut ventricle: f64 = 0.0;
        let mut deep_gm: f64 = 0.0;
        for side in [-1.0, 1.0] {
            let y = p[1] - self.centre[1] - self.ventricle_offset;
            let z = p[2] - self.centre[2] - 8.0 + 0.004 * y * y;
            let vx = (x - side * 8.0) / 4.8;
            let vr = (vx * vx + (y / 24.0).powi(2) + (z / 8.5).powi(2)).sqrt()
                * (1.0 + 0.12 * f.gyri.at([p[0], p[1], p[2] + 50.0]));
            ventricle = ventricle.max(sigmoid((1.0 - vr) / 0.08));
            let dx = (x - side * 19.0) / 9.0;
            let dy = (p[1] - self.centre[1] + 4.0) / 14.0;
            let dz = (p[2] - self.centre[2] + 2.0) / 9.5;
            let dr = (dx * dx + dy * dy + dz * dz).sqrt();
            deep_gm = deep_gm.max(0.8 * sigmoid((1.0 - dr) / 0.1));
        }
        m.gm = cortex.max(deep_gm);
        m.csf = sulcus.max(rim).max(fissure).max(ventricle);
        let d = [0, 1, 2].map(|a| (p[a] - self.tumour_centre[a]) / self.tumour_stretch[a]);
        let dist = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
        if dist < self.r_edema * 1.9 + 6.0 {
            let lobes = f.tumour.at(p);
            let rho = dist / (1.0 + 0.25 * lobes);
            let rho_edema = dist / (1.0 + 0.42 * f.edema.at(p));
            // Edema spreads through white matter, not through CSF or cortex.
            m.edema =
                sigmoid((self.r_edema - rho_edema) / 1.0) * (1.0 - m.csf) * (1.0 - 0.6 * m.gm);
            m.core = sigmoid((self.r_core - rho) / 0.6);
            if self.r_necrosis > 0.0 {
                let r_n = self.r_necrosis * (1.0 + 0.3 * f.tumour2.at(p));
                m.necrosis = sigmoid((r_n - rho) / 0.6);
            }
            // The tumour displaces what was there.
            let tumour = m.edema.max(m.core);
            m.gm *= 1.0 - tumour;
            m.csf *= 1.0 - tumour;
        }
        m
    }

    fn label(&self, m: &Membership, labels: LabelConvention) -> u8 {
        if !m.brain {
            0
        } else if m.necrosis > 0.5 {
            1
        } else if m.core > 0.5 {
            match self.kind {
                TumourKind::NonEnhancing => 1,
                _ => labels.et_label(),
            }
        } else if m.edema > 0.5 {
            2
        } else {
            0
        }
    }

    /// Noise-free intensity per modality.
    fn intensity(&self, m: &Membership, p: [f64; 3]) -> [f64; 4] {
        let t = &self.table;
        let lerp = |a: &[f64; 4], b: &[f64; 4], w: f64| -> [f64; 4] {
            [0, 1, 2, 3].map(|i| a[i] + (b[i] - a[i]) * w)
        };
        let mut v = t[Tissue::Wm as usize];
        v = lerp(&v, &t[Tissue::Gm as usize], m.gm);
        v = lerp(&v, &t[Tissue::Csf as usize], m.csf);
        if m.edema > 0.0 || m.core > 0.0 {
            v = lerp(&v, &t[Tissue::Edema as usize], m.edema);
            let core = match self.kind {
                TumourKind::NonEnhancing => Tissue::NonEnhancing,
                _ => Tissue::Enhancing,
            };
            v = lerp(&v, &t[core as usize], m.core);
            v = lerp(&v, &t[Tissue::Necrosis as usize], m.necrosis);
            // Heterogeneous tumour tissue.
            let h = 1.0 + 0.12 * self.contrast * self.fields.tumour2.at([p[0] + 31.0, p[1], p[2]]);
            let w = m.core.max(m.edema);
            v = v.map(|x| x * (1.0 + (h - 1.0) * w));
        }
        let texture = 1.0 + 0.035 * self.fields.fine.at(p);
        v.map(|x| x * texture)
    }

    /// Noise-free intensity per modality outside the brain, `d` mm from its surface: the layers
    /// of the head, their thickness varying smoothly around it (drawn from the fields the case
    /// has already, so that a head's brain is the brain of the same case without one).
    fn head_intensity(&self, d: f64, p: [f64; 3]) -> [f64; 4] {
        let t = &self.table;
        let g = 0.5 + 0.5 * self.fields.gyri.at([p[0] + 17.0, p[1] - 23.0, p[2]]);
        let h = 0.5 + 0.5 * self.fields.outline.at([p[0], p[1] + 41.0, p[2]]);
        let bone = [0.03; 4];
        let layers: [(f64, [f64; 4]); 7] = [
            (1.6 + 1.6 * g, t[Tissue::Csf as usize]),
            (1.2 + 0.6 * h, bone),
            (2.0 + 2.0 * h, [0.72, 0.74, 0.48, 0.58]),
            (1.2 + 0.5 * g, bone),
            (1.5 + 1.0 * g, [0.42, 0.48, 0.36, 0.40]),
            (2.5 + 2.0 * h, [0.98, 0.98, 0.82, 0.90]),
            (1.2, [0.55, 0.60, 0.50, 0.55]),
        ];
        // Each layer's share at d: a smooth step in, a smooth step out (0.35 mm edges).
        let mut v = [0.0; 4];
        let mut start = f64::NEG_INFINITY;
        for (thickness, value) in layers {
            let end = if start.is_finite() {
                start + thickness
            } else {
                thickness
            };
            let inside = if start.is_finite() {
                sigmoid((d - start) / 0.35)
            } else {
                1.0
            } - sigmoid((d - end) / 0.35);
            for c in 0..4 {
                v[c] += inside * value[c];
            }
            start = end;
        }
        let texture = 1.0 + 0.05 * self.fields.fine.at(p);
        v.map(|x| x * texture)
    }
}

/// Make phantom `index` for `seed` on a grid of `shape`, labels in `labels`' convention: the
/// brain alone, as BraTS prepares a case.
pub fn generate(seed: u64, index: usize, shape: [usize; 3], labels: LabelConvention) -> Phantom {
    generate_anatomy(seed, index, shape, labels, Anatomy::Brain)
}

/// As [`generate`], showing `anatomy`: the same brain, tumour and noise level either way.
pub fn generate_anatomy(
    seed: u64,
    index: usize,
    shape: [usize; 3],
    labels: LabelConvention,
    anatomy: Anatomy,
) -> Phantom {
    let plan = plan(seed, index);
    let [nx, ny, nz] = shape;
    let spacing = [0, 1, 2].map(|a| REFERENCE_MM[a] / shape[a] as f64);
    let n = nx * ny * nz;
    let mut images = vec![vec![0i16; n]; 4];
    let mut seg = vec![0u8; n];
    let mut brain = vec![0u8; n];
    let slab = nx * ny;
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .clamp(1, 16);
    let per = nz.div_ceil(threads).max(1);
    // Split every output into runs of whole k-slabs, one run per thread; each slab draws its
    // noise from its own generator, so the result does not depend on the thread count.
    let mut seg_chunks: Vec<&mut [u8]> = seg.chunks_mut(per * slab).collect();
    let mut brain_chunks: Vec<&mut [u8]> = brain.chunks_mut(per * slab).collect();
    let mut image_chunks: Vec<Vec<&mut [i16]>> = images
        .iter_mut()
        .map(|img| img.chunks_mut(per * slab).collect())
        .collect();
    std::thread::scope(|s| {
        for (t, seg_chunk) in seg_chunks.iter_mut().enumerate() {
            let mut mine: Vec<&mut [i16]> = image_chunks
                .iter_mut()
                .map(|chunks| std::mem::take(&mut chunks[t]))
                .collect();
            let plan = &plan;
            let brain_chunk = std::mem::take(&mut brain_chunks[t]);
            s.spawn(move || {
                let k0 = t * per;
                let slabs = seg_chunk.len() / slab;
                for dk in 0..slabs {
                    let k = k0 + dk;
                    let mut rng = Rng::new(
                        seed.rotate_left(17)
                            ^ (index as u64).wrapping_mul(0x9E37_79B9)
                            ^ (k as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
                    );
                    for j in 0..ny {
                        for i in 0..nx {
                            let p = [
                                (i as f64 + 0.5) * spacing[0],
                                (j as f64 + 0.5) * spacing[1],
                                (k as f64 + 0.5) * spacing[2],
                            ];
                            let v = dk * slab + i + nx * j;
                            let m = plan.membership(p);
                            let clean = if m.brain {
                                brain_chunk[v] = 1;
                                seg_chunk[v] = plan.label(&m, labels);
                                plan.intensity(&m, p)
                            } else if anatomy == Anatomy::Head {
                                plan.head_intensity(m.outside_mm, p)
                            } else {
                                continue;
                            };
                            // Brain voxels stay nonzero (zero means background); the air
                            // around a head is noise, as a scanner records it.
                            let least = if m.brain { 1.0 } else { 0.0 };
                            for (c, img) in mine.iter_mut().enumerate() {
                                let bias = (0.16 * plan.fields.bias[c].at(p)).exp();
                                let s = clean[c] * bias;
                                let (g1, g2) = (rng.normal(), rng.normal());
                                // Rician: the magnitude of a complex signal with Gaussian noise.
                                let r = ((s + plan.noise_sigma * g1).powi(2)
                                    + (plan.noise_sigma * g2).powi(2))
                                .sqrt();
                                img[v] = (r * plan.scale[c]).round().clamp(least, 32767.0) as i16;
                            }
                        }
                    }
                }
            });
        }
    });
    let geometry = brats_like_geometry(shape, spacing);
    Phantom {
        id: case_id(index),
        geometry,
        images: Modality::DEFAULT_ORDER.into_iter().zip(images).collect(),
        seg,
        brain,
        anatomy,
        kind: plan.kind,
        faint: plan.contrast < 0.82,
        labels,
    }
}

impl Phantom {
    /// Cut a window of `size` voxels centred on the tumour (or the brain centre when there is
    /// none), kept inside the grid: a small case at full resolution (the page's sample). The
    /// affine moves with the window, so world positions are unchanged.
    pub fn window(self, size: [usize; 3]) -> Phantom {
        let dims = self.geometry.dims;
        let size = [0, 1, 2].map(|a| size[a].min(dims[a]));
        let [nx, ny, _] = dims;
        let (mut sum, mut n) = ([0f64; 3], 0usize);
        for (v, &l) in self.seg.iter().enumerate() {
            if l != 0 {
                let ijk = [v % nx, (v / nx) % ny, v / (nx * ny)];
                for a in 0..3 {
                    sum[a] += ijk[a] as f64;
                }
                n += 1;
            }
        }
        let centre = if n > 0 {
            sum.map(|s| s / n as f64)
        } else {
            dims.map(|d| d as f64 / 2.0)
        };
        let start = [0, 1, 2].map(|a| {
            ((centre[a] - size[a] as f64 / 2.0).round().max(0.0) as usize).min(dims[a] - size[a])
        });
        let cut = |v: &[i16]| -> Vec<i16> { cut_window(v, dims, start, size) };
        let images = self.images.iter().map(|(m, v)| (*m, cut(v))).collect();
        let seg = cut_window(&self.seg, dims, start, size);
        let brain = cut_window(&self.brain, dims, start, size);
        let mut g = self.geometry.clone();
        let a = g.affine;
        let offset: [f64; 3] =
            [0, 1, 2].map(|r| a[r][3] + (0..3).map(|c| a[r][c] * start[c] as f64).sum::<f64>());
        for (r, &offset) in offset.iter().enumerate() {
            // As stored (float32), like the rest of the header.
            let o = offset as f32 as f64;
            g.srow[r][3] = o;
            g.affine[r][3] = o;
            g.quatern[3 + r] = o;
        }
        g.dims = size;
        Phantom {
            images,
            seg,
            brain,
            geometry: g,
            ..self
        }
    }
}

fn cut_window<T: Copy>(v: &[T], dims: [usize; 3], start: [usize; 3], size: [usize; 3]) -> Vec<T> {
    let [nx, ny, _] = dims;
    let mut out = Vec::with_capacity(size.iter().product());
    for k in start[2]..start[2] + size[2] {
        for j in start[1]..start[1] + size[1] {
            let row = nx * (j + ny * k);
            out.extend_from_slice(&v[row + start[0]..row + start[0] + size[0]]);
        }
    }
    out
}

/// BraTS's orientation: x and y flipped (LPS-like), diag(−sx, −sy, sz), as qform and sform.
fn brats_like_geometry(dims: [usize; 3], spacing: [f64; 3]) -> Geometry {
    // As stored (float32), so that the geometry in memory is the one written.
    let [x, y, z] = spacing.map(|s| s as f32 as f64);
    Geometry::from_affine(
        dims,
        [
            [-x, 0.0, 0.0, 0.0],
            [0.0, -y, 0.0, (dims[1] as f64 - 1.0) * y],
            [0.0, 0.0, z, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ],
    )
}

#[cfg(test)]
mod tests {
    /// The phantoms' header is BraTS's own, field for field: qfac 1, a rotation of 180° about z
    /// (quaternion b, c, d = 0, 0, 1), the y axis running from 239 mm down, qform and sform both
    /// set. The committed sample and test cases carry it.
    #[test]
    fn the_phantom_grid_is_bratss() {
        let g = super::brats_like_geometry([240, 240, 155], [1.0; 3]);
        assert_eq!(g.pixdim, [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
        assert_eq!(g.quatern, [0.0, 0.0, 1.0, 0.0, 239.0, 0.0]);
        assert_eq!(
            g.srow,
            [
                [-1.0, 0.0, 0.0, 0.0],
                [0.0, -1.0, 0.0, 239.0],
                [0.0, 0.0, 1.0, 0.0]
            ]
        );
        assert_eq!((g.qform_code, g.sform_code, g.xyzt_units), (1, 1, 2));
        // Other spacings exactly as float32 stores them.
        let s = [0.9f32, 1.1, 3.0].map(f64::from);
        let g = super::brats_like_geometry([64, 48, 20], [0.9, 1.1, 3.0]);
        assert_eq!(g.pixdim[..4], [1.0, s[0], s[1], s[2]]);
        assert_eq!(g.quatern, [0.0, 0.0, 1.0, 0.0, 47.0 * s[1], 0.0]);
    }
}
