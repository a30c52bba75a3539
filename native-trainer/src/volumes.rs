//! `nvnet synth` and `nvnet inspect`: thin commands over the library's volumes code.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};
use nvnet::LabelConvention;
use nvnet::case::{self, Case, Input, Layout};
use nvnet::labels::{self, RegionCounts};
use nvnet::nifti::{self, Geometry, Image};
use nvnet::synth::{self, TumourKind};
use serde_json::{Value, json};

#[allow(clippy::too_many_arguments)]
pub fn synth(
    out: &Path,
    cases: usize,
    seed: u64,
    shape: [usize; 3],
    layout: Layout,
    first: usize,
    window: Option<[usize; 3]>,
    preview: Option<&Path>,
) -> Result<()> {
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
        let mut phantom = synth::generate(seed, index, shape, layout.labels());
        if let Some(size) = window {
            phantom = phantom.window(size);
        }
        let folder = synth::write_case(&phantom, out, layout)?;
        let counts = RegionCounts::of(&phantom.seg, phantom.labels);
        let ml = phantom.geometry.spacing().iter().product::<f64>() / 1000.0;
        println!(
            "{}  {:<13} WT {:6.1} mL  TC {:6.1} mL  ET {:6.1} mL{}  ({:.1} s)",
            folder.display(),
            match phantom.kind {
                TumourKind::Typical => "glioblastoma",
                TumourKind::Solid => "solid",
                TumourKind::NonEnhancing => "non-enhancing",
            },
            counts.WT as f64 * ml,
            counts.TC as f64 * ml,
            counts.ET as f64 * ml,
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

fn geometry_json(g: &Geometry) -> Value {
    json!({
        "shape": g.dims,
        "spacing": g.spacing(),
        "affine": g.affine,
    })
}

fn file_json(image: &Image) -> Value {
    let (min, max) = image.min_max();
    json!({ "file": image.source, "dtype": image.dtype.name(), "min": min, "max": max })
}

/// "lo .. hi" of the values the network is given, or that there are none.
fn value_range(image: &Image) -> String {
    match image.min_max() {
        (lo, hi) if lo <= hi => format!("{lo} .. {hi}"),
        _ => "no usable values (all read as 0)".into(),
    }
}

fn case_json(case: &Case) -> Value {
    let mut v = geometry_json(case.geometry());
    v["id"] = json!(case.id);
    v["layout"] = json!(case.layout.to_string());
    let modalities: BTreeMap<String, Value> = case
        .images
        .iter()
        .map(|(m, img)| (m.name().to_string(), file_json(img)))
        .collect();
    v["modalities"] = json!(modalities);
    if let (Some(seg), Some(map)) = (&case.seg, case.seg_labels()) {
        let counts: BTreeMap<String, usize> = labels::label_counts(&map)
            .into_iter()
            .map(|(l, n)| (l.to_string(), n))
            .collect();
        v["segmentation"] = json!(seg.source);
        v["label_convention"] = json!(match case.labels {
            LabelConvention::Brats2018 => "brats2018",
            LabelConvention::Brats2023 => "brats2023",
        });
        v["labels"] = json!(counts);
        v["regions"] = json!(RegionCounts::of(&map, case.labels));
    }
    v
}

fn warn_all<'a>(warnings: impl Iterator<Item = &'a String>) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

/// Load PATH as nvnet would (a modality file, a case folder or a dataset root) and report.
/// Returns whether everything was accepted.
pub fn inspect(path: &Path, as_json: bool) -> Result<bool> {
    // Anything but a folder is read as a file, which says what is wrong with it (missing, a
    // named pipe, a device, ...).
    if !path.is_dir() {
        let image = nifti::read_path(path)?;
        warn_all(image.warnings.iter());
        let mut v = geometry_json(&image.geometry);
        let f = file_json(&image);
        for key in ["file", "dtype", "min", "max"] {
            v[key] = f[key].clone();
        }
        if let Some(case::Role::Image(m)) = case::detect_role(&file_name(path)) {
            v["modality"] = json!(m.name());
        }
        if as_json {
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            let g = &image.geometry;
            println!("{}", image.source);
            println!(
                "  {:?} {} voxels, spacing {:?} mm",
                g.dims,
                image.dtype.name(),
                g.spacing()
            );
            println!("  values {}", value_range(&image));
            println!("  affine {:?}", &g.affine[..3]);
            println!("accepted");
        }
        return Ok(true);
    }
    match case::discover(path)? {
        Input::Case(files) => {
            let case = Case::load(&files)?;
            warn_all(case.warnings());
            let v = case_json(&case);
            if as_json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_case(&case, &v);
                println!("accepted");
            }
            Ok(true)
        }
        Input::Dataset { cases, problems } => {
            let mut ok = Vec::new();
            let mut failed: Vec<String> = problems.iter().map(|e| e.to_string()).collect();
            for files in &cases {
                match Case::load(files) {
                    Ok(case) => {
                        warn_all(case.warnings());
                        ok.push(case_json(&case));
                    }
                    Err(e) => failed.push(e.to_string()),
                }
            }
            for f in &failed {
                eprintln!("refused: {f}");
            }
            if as_json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "cases": ok, "refused": failed }))?
                );
            } else {
                for v in &ok {
                    println!(
                        "{}  {}  {}",
                        v["id"].as_str().unwrap_or(""),
                        v["layout"],
                        v["shape"]
                    );
                }
                println!("{} case(s) accepted, {} refused", ok.len(), failed.len());
            }
            Ok(failed.is_empty())
        }
    }
}

fn print_case(case: &Case, v: &Value) {
    let g = case.geometry();
    println!("case {} ({} layout)", case.id, case.layout);
    println!("  grid {:?}, spacing {:?} mm", g.dims, g.spacing());
    for (m, img) in &case.images {
        println!(
            "  {:<6} {:<8} {}  {}",
            m.to_string(),
            img.dtype.name(),
            value_range(img),
            img.source
        );
    }
    if v.get("labels").is_some() {
        println!("  labels  {}", v["labels"]);
        println!("  regions {} ({:?})", v["regions"], case.labels);
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}
