//! `nvnet import`: a MONAI SegResNet checkpoint as an nvnet weights file with its manifest.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use nvnet::Modality;
use nvnet::io::weights::{self, Manifest, Provenance};

use crate::values::{group_digits, now_rfc3339};

#[derive(clap::Args)]
pub struct Args {
    /// The checkpoint.
    from: PathBuf,
    /// The nvnet weights file to write (.bpk).
    #[arg(long)]
    out: PathBuf,
    /// The modality of each input channel, in order (default: t1,t1ce,t2,flair, or the
    /// preset's).
    #[arg(long)]
    modalities: Option<String>,
    /// A known checkpoint's conventions: `monai-brats` is MONAI's brats_mri_segmentation
    /// bundle (`model.pt`), whose channels are T1ce, T1, T2, FLAIR.
    #[arg(long, value_enum, conflicts_with = "modalities")]
    preset: Option<Preset>,
    /// A name for the model (default: the checkpoint's file name, or the preset's).
    #[arg(long)]
    name: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Preset {
    MonaiBrats,
}

impl Args {
    pub fn run(self) -> Result<()> {
        let Args {
            from,
            out,
            modalities,
            preset,
            name,
        } = self;
        let modalities = match (modalities, preset) {
            (Some(list), _) => Modality::parse_list(&list)
                .map_err(anyhow::Error::msg)
                .context("--modalities")?,
            (None, Some(Preset::MonaiBrats)) => weights::MONAI_BRATS_BUNDLE_ORDER.to_vec(),
            (None, None) => Modality::DEFAULT_ORDER.to_vec(),
        };
        let name = name.or_else(|| {
            preset.map(|Preset::MonaiBrats| "MONAI brats_mri_segmentation".to_string())
        });
        let mut loaded = weights::load_file::<nvnet::device::backend::Cpu>(
            &from,
            Some(&modalities),
            &Default::default(),
        )?;
        if loaded.manifest.provenance.source != "imported" {
            bail!(
                "{} is already an nvnet weights file; nothing to import",
                from.display()
            );
        }
        for notice in &loaded.notices {
            eprintln!("note: {notice}");
        }
        let manifest: &mut Manifest = &mut loaded.manifest;
        manifest.provenance = Provenance {
            created: now_rfc3339(),
            ..manifest.provenance.clone()
        };
        if let Some(name) = name {
            manifest.name = name;
        }
        manifest.validate().map_err(anyhow::Error::msg)?;
        let c = &manifest.config;
        println!(
            "inferred: SegResNet F={} in={} out={} blocks_down={:?} blocks_up={:?}, {} parameters",
            c.init_filters,
            c.in_channels,
            c.out_channels,
            c.blocks_down,
            c.blocks_up,
            group_digits(loaded.model.num_params())
        );
        println!(
            "inputs:   {}",
            manifest
                .modalities
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        weights::save(&loaded.model, manifest, &out)?;
        println!("wrote {}", out.display());
        Ok(())
    }
}
