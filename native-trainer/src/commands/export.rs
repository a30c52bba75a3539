//! `nvnet export`: the weights the page loads, from a training run's checkpoint.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nvnet::inference::postprocess::Postprocessing;
use nvnet::io::weights;

#[derive(clap::Args)]
pub struct Args {
    /// A weights file from training (RUN_DIR/best.bpk or last.bpk).
    from: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Store float16 (half the download); read back as float32.
    #[arg(long)]
    half: bool,
    /// Record post-processing in the manifest (as chosen by `nvnet evaluate
    /// --choose-postprocessing`): remove whole-tumour islands. Without any post-processing
    /// flag the export keeps the rules recorded in FROM.
    #[arg(long)]
    remove_islands: bool,
    /// Record post-processing in the manifest: the small-ET threshold.
    #[arg(long)]
    min_et_voxels: Option<usize>,
    /// Record no post-processing (FROM's rules are dropped).
    #[arg(long, conflicts_with_all = ["remove_islands", "min_et_voxels"])]
    no_postprocess: bool,
}

impl Args {
    pub fn run(self) -> Result<()> {
        let postprocessing = (self.no_postprocess
            || self.remove_islands
            || self.min_et_voxels.is_some())
        .then_some(Postprocessing {
            remove_islands: self.remove_islands,
            min_et_voxels: self.min_et_voxels,
        });
        export(&self.from, &self.out, self.half, postprocessing)
    }
}

/// `nvnet export`: the weights for the page, optionally as float16, manifest kept.
fn export(
    from: &Path,
    out: &Path,
    half: bool,
    postprocessing: Option<Postprocessing>,
) -> Result<()> {
    let mut inputs = nvnet::io::fsutil::Inputs::default();
    inputs.add(from);
    inputs
        .check_output(out)
        .with_context(|| format!("--out {}", out.display()))?;
    let loaded =
        weights::load_file::<nvnet::device::backend::Cpu>(from, None, &Default::default())?;
    let mut manifest = loaded.manifest.clone();
    if manifest.provenance.source == "imported" {
        bail!(
            "{}: import it first (`nvnet import`), then export",
            from.display()
        );
    }
    manifest.half = half;
    // The source's recorded rules stay unless others are given.
    if let Some(p) = postprocessing {
        manifest.postprocessing = p;
    }
    // The VAE branch is for training only: the page needs the segmentation path.
    manifest.config.vae = None;
    let model = loaded.model.without_vae();
    weights::save(&model, &manifest, out)?;
    let size = std::fs::metadata(out)?.len();
    println!(
        "wrote {} ({:.2} MB{}; post-processing: {})",
        out.display(),
        size as f64 / 1e6,
        if half { ", float16" } else { "" },
        manifest.postprocessing.flags()
    );
    Ok(())
}
