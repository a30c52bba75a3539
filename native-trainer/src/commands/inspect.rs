//! `nvnet inspect`: a NIfTI file, a case folder, a dataset root or a DICOM exam (a folder or
//! one file) loaded exactly as the other commands load it, and reported; for series on grids of
//! their own, what `prepare` would do with them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use nvnet::LabelConvention;
use nvnet::data::case::{self, Case, Input};
use nvnet::data::exam::{Exam, Kind};
use nvnet::data::labels::{self, RegionCounts};
use nvnet::io::dicom::{self, Files, Folder};
use nvnet::io::nifti::{self, Geometry, Image};
use nvnet::prepare::{prepared_grid, same_grid, skull};
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct Args {
    path: PathBuf,
    /// Print JSON (shape, spacing, affine, dtype, min, max; for a case also its modalities,
    /// labels and regions).
    #[arg(long)]
    json: bool,
}

impl Args {
    pub fn run(self) -> Result<()> {
        if inspect(&self.path, self.json)? {
            Ok(())
        } else {
            bail!("some cases under {} were refused", self.path.display())
        }
    }
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
fn inspect(path: &Path, as_json: bool) -> Result<bool> {
    // Anything but a folder is read as a file, which says what is wrong with it (missing, a
    // named pipe, a device, ...).
    if path.is_dir() && dicom::holds_exam(path) {
        let files = Folder::walk(path)?;
        return exam(&files, &path.display().to_string(), as_json);
    }
    if dicom::is_dicom_file(path) {
        let files = vec![(file_name(path), std::fs::read(path)?)];
        return exam(&files, &path.display().to_string(), as_json);
    }
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
            let (images, seg) = files.read()?;
            if !images
                .windows(2)
                .all(|w| same_grid(&w[0].1.geometry, &w[1].1.geometry))
            {
                return on_grids_of_their_own(&files.id, &images, as_json);
            }
            let case = Case::from_images(&files.id, files.layout, images, seg)?;
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

/// The plane a grid's slices lie in, from its slice axis.
fn plane(g: &Geometry) -> &'static str {
    let axis = [0, 1, 2].map(|r| g.affine[r][2]);
    let n = axis.iter().map(|x| x * x).sum::<f64>().sqrt();
    let largest = (0..3)
        .max_by(|&a, &b| axis[a].abs().total_cmp(&axis[b].abs()))
        .unwrap_or(2);
    if n == 0.0 || axis[largest].abs() / n < 0.99 {
        "oblique"
    } else {
        ["sagittal", "coronal", "axial"][largest]
    }
}

/// Each series of a DICOM exam: what it is, its grid and values; then the case it gives.
/// Returns whether the exam gives a case.
fn exam(files: &dyn Files, folder: &str, as_json: bool) -> Result<bool> {
    let exam = Exam::scan(files, folder)?;
    for notice in &exam.scan.notices {
        eprintln!("note: {notice}");
    }
    let mut series = Vec::new();
    for (s, kind) in exam.scan.series.iter().zip(&exam.kinds) {
        let mut v = json!({
            "uid": s.uid(),
            "number": s.number(),
            "selector": s.selector(),
            "part": s.part.as_ref().map(|p| p.to_string()),
            "description": s.description(),
            "protocol": s.protocol(),
            "images": s.slices.len(),
            "transfer_syntax": s.slices[0].transfer_syntax,
        });
        match kind {
            Kind::Modality(m) => v["modality"] = json!(m.name()),
            Kind::Other(why) => v["not_used"] = json!(why),
        }
        match s.load(files) {
            Ok(image) => {
                let g = &image.geometry;
                let (min, max) = image.min_max();
                v["shape"] = json!(g.dims);
                v["spacing"] = json!(g.spacing());
                v["plane"] = json!(plane(g));
                v["affine"] = json!(g.affine);
                v["min"] = json!(min);
                v["max"] = json!(max);
            }
            Err(e) => v["problem"] = json!(e.to_string()),
        }
        series.push(v);
    }
    let choice = exam.choose(&[]);
    if as_json {
        let mut v = json!({ "id": exam.id, "series": series, "notices": exam.scan.notices });
        match &choice {
            Ok(c) => {
                let chosen: BTreeMap<&str, Value> = c
                    .iter()
                    .map(|(m, i)| (m.name(), json!(exam.scan.series[*i].uid_selector())))
                    .collect();
                v["chosen"] = json!(chosen);
            }
            Err(e) => v["problem"] = json!(e.to_string()),
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("DICOM exam {} ({} series)", exam.id, series.len());
        for v in &series {
            let what = v["modality"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("not used: {}", v["not_used"].as_str().unwrap_or("")));
            println!(
                "  series {:>4}  {:<30} {:>4} images  {}",
                v["selector"].as_str().unwrap_or(""),
                format!("'{}'", v["description"].as_str().unwrap_or("")),
                v["images"],
                what
            );
            match v["problem"].as_str() {
                Some(p) => println!("      cannot be read: {p}"),
                None => println!(
                    "      {}  uid {}{}",
                    grid_line(v),
                    v["uid"].as_str().unwrap_or(""),
                    v["part"]
                        .as_str()
                        .map(|p| format!(", {p}"))
                        .unwrap_or_default()
                ),
            }
        }
        match &choice {
            Ok(c) => {
                for (m, i) in c {
                    println!("  {:<6} <- {}", m.name(), exam.scan.series[*i].label());
                }
                println!("accepted");
            }
            Err(e) => println!("refused: {e}"),
        }
    }
    Ok(choice.is_ok())
}

/// A case's series on grids of their own: each one's grid, and what `prepare` (and `predict`)
/// would do: register them to the T1ce, resample onto the 1 mm grid, strip the skull unless the
/// T1ce is stripped already. Accepted when the T1ce is there.
fn on_grids_of_their_own(
    id: &str,
    images: &[(nvnet::Modality, Image)],
    as_json: bool,
) -> Result<bool> {
    let reference = nvnet::Modality::T1ce;
    let files: Vec<Value> = images
        .iter()
        .map(|(m, image)| {
            let g = &image.geometry;
            let mut v = file_json(image);
            v["modality"] = json!(m.name());
            v["shape"] = json!(g.dims);
            v["spacing"] = json!(g.spacing());
            v["plane"] = json!(plane(g));
            v["affine"] = json!(g.affine);
            v
        })
        .collect();
    let Some((_, t1ce)) = images.iter().find(|(m, _)| *m == reference) else {
        let problem = format!(
            "{id}: the series are on grids of their own and there is no {reference} to register them to"
        );
        if as_json {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({ "id": id, "files": files, "problem": problem })
                )?
            );
        } else {
            println!("refused: {problem}");
        }
        return Ok(false);
    };
    let grid = prepared_grid(&t1ce.geometry);
    let g = &t1ce.geometry;
    let stripped = skull::already_stripped(&t1ce.to_f32(), g.dims, g.spacing());
    let moved: Vec<&str> = images
        .iter()
        .filter(|(m, image)| *m != reference && !same_grid(&image.geometry, g))
        .map(|(m, _)| m.name())
        .collect();
    if as_json {
        let v = json!({
            "id": id,
            "files": files,
            "prepare": {
                "reference": reference.name(),
                "registered": moved,
                "grid": { "shape": grid.dims, "spacing": grid.spacing(), "affine": grid.affine },
                "skull_stripped_already": stripped,
            },
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("case {id}: the series are on grids of their own");
        for v in &files {
            println!(
                "  {:<6} {}  {}",
                v["modality"].as_str().unwrap_or(""),
                grid_line(v),
                v["file"].as_str().unwrap_or("")
            );
        }
        println!(
            "  prepare: {} registered to the {reference} and resampled onto a 1 mm grid of {:?}; {}",
            moved.join(", "),
            grid.dims,
            if stripped {
                "the T1ce is skull-stripped already: left as it is"
            } else {
                "then skull-stripped"
            }
        );
        println!("accepted");
    }
    Ok(true)
}

/// A series' grid and values, from its JSON: plane, shape, spacing, range.
fn grid_line(v: &Value) -> String {
    format!(
        "{} {} voxels, spacing {} mm, values {} .. {}",
        v["plane"].as_str().unwrap_or(""),
        v["shape"],
        v["spacing"],
        v["min"],
        v["max"]
    )
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
