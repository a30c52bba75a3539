//! `nvnet prepare`: an exam (a DICOM folder, or NIfTI files on grids of their own) written as the
//! case that `predict`, `train` and `evaluate` take: the four series registered to the reference
//! (the T1ce unless `--reference` says another), resampled onto one 1 mm grid and skull-stripped,
//! the brain's mask, and `<ID>_prepare.json` saying what was done to each.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nvnet::io::fsutil;
use nvnet::io::nifti::{self, OutputData};
use nvnet::prepare::{Stripping, When};
use serde_json::json;

use crate::sources::ExamArgs;

#[derive(clap::Args)]
pub struct Args {
    /// The exam: a DICOM folder, a case folder, or NIfTI files.
    #[command(flatten)]
    exam: ExamArgs,
    /// The folder to write the case folder `<ID>/` into.
    #[arg(long)]
    output: PathBuf,
}

fn degrees(r: [f64; 3]) -> [f64; 3] {
    r.map(f64::to_degrees)
}

impl Args {
    pub fn run(self) -> Result<()> {
        let (sources, refused) = self.exam.collect()?;
        if let Some(r) = refused.first() {
            bail!("{r}");
        }
        let [source] = sources.as_slice() else {
            bail!(
                "{} cases given: prepare takes one exam at a time",
                sources.len()
            );
        };
        let prepared = source.load(&self.exam.series, self.exam.steps(When::Always))?;
        let case = &prepared.case;
        let folder = self.output.join(&case.id);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("{}: cannot create the folder", folder.display()))?;
        let mut inputs = fsutil::Inputs::default();
        for path in source.paths() {
            inputs.add(path);
        }
        let grid = case.geometry();
        let mut files = Vec::new();
        for (m, image) in &case.images {
            let path = folder.join(format!("{}_{}.nii.gz", case.id, m.name()));
            inputs
                .check_output(&path)
                .with_context(|| path.display().to_string())?;
            let bytes = nifti::encode_on_grid(
                grid,
                OutputData::Floats {
                    values: &image.to_f32(),
                    channels: 1,
                },
            )
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            files.push((path, bytes));
        }
        if let Some(mask) = &prepared.brain_mask {
            let path = folder.join(format!("{}_brainmask.nii.gz", case.id));
            inputs
                .check_output(&path)
                .with_context(|| path.display().to_string())?;
            let bytes = nifti::encode_on_grid(grid, OutputData::Labels(mask))
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            files.push((path, bytes));
        }
        let series: Vec<_> = case
            .images
            .iter()
            .map(|(m, image)| {
                let registration = prepared.registrations.iter().find(|(r, _)| r == m);
                json!({
                    "modality": m.name(),
                    "source": image.source,
                    "reference": *m == prepared.reference,
                    "motion": registration.map(|(_, r)| json!({
                        "angles_degrees": degrees(r.motion.angles),
                        "translation_mm": r.motion.translation,
                        "centre_mm": r.motion.centre,
                        "nmi": r.nmi,
                        "evaluations": r.evaluations,
                    })),
                })
            })
            .collect();
        let report = json!({
            "id": case.id,
            "reference": prepared.reference.name(),
            "grid": { "shape": grid.dims, "spacing": grid.spacing(), "affine": grid.affine },
            "reference_grid": {
                "shape": prepared.native.dims,
                "spacing": prepared.native.spacing(),
                "affine": prepared.native.affine,
            },
            "series": series,
            "skull": {
                "done": prepared.stripping.to_string(),
                "stripped_here": matches!(prepared.stripping, Stripping::Stripped { .. }),
                "brain_ml": match prepared.stripping {
                    Stripping::Stripped { brain_ml } => Some(brain_ml),
                    _ => None,
                },
            },
            "warnings": case.warnings().collect::<Vec<_>>(),
        });
        let json_path = folder.join(format!("{}_prepare.json", case.id));
        files.push((json_path, serde_json::to_vec_pretty(&report)?));
        let unit: Vec<(&Path, &[u8])> = files
            .iter()
            .map(|(p, b)| (p.as_path(), b.as_slice()))
            .collect();
        fsutil::write_all_atomic(&unit)
            .map_err(|(path, e)| anyhow::anyhow!("{}: {e}", path.display()))?;
        for (m, r) in &prepared.registrations {
            let [a, b, c] = degrees(r.motion.angles);
            let [x, y, z] = r.motion.translation;
            println!(
                "{m:<6} registered to {}: rotated {a:.2}°, {b:.2}°, {c:.2}°, moved {x:.2}, {y:.2}, \
                 {z:.2} mm (NMI {:.3})",
                prepared.reference, r.nmi
            );
        }
        println!(
            "{}: {:?} voxels of 1 mm -> {}",
            case.id,
            grid.dims,
            folder.display()
        );
        println!("{}: {}", case.id, prepared.stripping);
        Ok(())
    }
}
