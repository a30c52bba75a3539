//! `nvnet synth`: synthetic BraTS-like cases (the library's phantoms) written as case folders.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use nvnet::data::case::Layout;
use nvnet::data::labels::RegionCounts;
use nvnet::data::synth::{self, TumourKind};

use crate::values::{parse_layout, parse_shape};

#[derive(clap::Args)]
pub struct Args {
    /// The dataset root to write case folders into.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 3)]
    cases: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Grid size i,j,k.
    #[arg(long, default_value = "240,240,155", value_parser = parse_shape)]
    shape: [usize; 3],
    /// File naming and labels: brats2018 (`_t1ce`, ET = 4) or brats2023 (`-t1c`, ET = 3).
    #[arg(long, default_value = "brats2018", value_parser = parse_layout)]
    layout: Layout,
    /// Index of the first case (case i is the same whatever the number made).
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// Keep only a window of this many voxels around the tumour (a small full-resolution case).
    #[arg(long, value_parser = parse_shape)]
    window: Option<[usize; 3]>,
    /// Also write each case as a DICOM exam (four series, one file per slice) in this folder:
    /// `<DIR>/<ID>/<modality>/IM0001...`.
    #[arg(long)]
    dicom: Option<PathBuf>,
    /// With --dicom: acquire the series as a real exam's, each on a grid of its own (T1
    /// sagittal, T2 oblique with 3 mm slices, FLAIR with 5 mm slices; the T1ce on the phantom's
    /// grid) with the head moved by a few millimetres and degrees before each.
    #[arg(long, requires = "dicom")]
    moved: bool,
    /// The whole head as a scanner sees it (CSF around the brain, skull, scalp, noise in the
    /// air), not the brain alone: an exam to skull-strip. Each case folder also holds the
    /// brain's mask, `<ID>_brainmask.nii.gz` (the truth).
    #[arg(long)]
    head: bool,
    /// Also draw axial slices of the first two cases into this PNG.
    #[arg(long)]
    preview: Option<PathBuf>,
}

impl Args {
    pub fn run(self) -> Result<()> {
        let Args {
            out,
            cases,
            seed,
            shape,
            layout,
            first,
            window,
            dicom,
            moved,
            head,
            preview,
        } = self;
        let (out, preview) = (out.as_path(), preview.as_deref());
        if layout == Layout::Loose {
            bail!("--layout must be brats2018 or brats2023");
        }
        let Some(end) = first.checked_add(cases) else {
            bail!("--first {first} with --cases {cases} runs past the largest case index");
        };
        std::fs::create_dir_all(out)
            .map_err(|e| anyhow::anyhow!("{}: cannot create the folder: {e}", out.display()))?;
        let start = Instant::now();
        let mut shown = Vec::new();
        for index in first..end {
            let t = Instant::now();
            let anatomy = if head {
                synth::Anatomy::Head
            } else {
                synth::Anatomy::Brain
            };
            let mut phantom = synth::generate_anatomy(seed, index, shape, layout.labels(), anatomy);
            if let Some(size) = window {
                phantom = phantom.window(size);
            }
            let folder = synth::write_case(&phantom, out, layout)?;
            if let Some(dir) = &dicom {
                let acquisition = if moved {
                    synth::Acquisition::Moved {
                        seed: seed ^ index as u64,
                    }
                } else {
                    synth::Acquisition::OneGrid
                };
                synth::write_exam(&phantom, dir, acquisition)?;
            }
            let counts = RegionCounts::of(&phantom.seg, phantom.labels);
            let [wt, tc, et] = counts.millilitres(phantom.geometry.spacing());
            println!(
                "{}  {:<13} WT {:6.1} mL  TC {:6.1} mL  ET {:6.1} mL{}  ({:.1} s)",
                folder.display(),
                match phantom.kind {
                    TumourKind::Typical => "glioblastoma",
                    TumourKind::Solid => "solid",
                    TumourKind::NonEnhancing => "non-enhancing",
                },
                wt,
                tc,
                et,
                if phantom.faint { ", faint" } else { "" },
                t.elapsed().as_secs_f64()
            );
            if preview.is_some() && shown.len() < 2 {
                shown.push(phantom);
            }
        }
        if let Some(path) = preview {
            crate::preview::write_phantom_preview(path, &shown)?;
            println!("preview: {}", path.display());
        }
        println!(
            "{cases} case(s) of {}×{}×{}{} in {:.1} s",
            shape[0],
            shape[1],
            shape[2],
            match window {
                Some(w) => format!(" (windows of {}×{}×{} around the tumour)", w[0], w[1], w[2]),
                None => String::new(),
            },
            start.elapsed().as_secs_f64()
        );
        Ok(())
    }
}
