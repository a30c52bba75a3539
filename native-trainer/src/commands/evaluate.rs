//! `nvnet evaluate`: BraTS metrics of predicted label maps against ground truth.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nvnet::data::case::{AFFINE_TOLERANCE, nifti_stem};
use nvnet::data::labels;
use nvnet::inference::postprocess::{self, ValidationCase};
use nvnet::io::nifti::{self, Image};
use nvnet::metrics::{self, RegionMetrics};
use nvnet::{LabelConvention, Region};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pred: PathBuf,
    #[arg(long)]
    gt: PathBuf,
    /// Label values (default: read from the ground truth).
    #[arg(long)]
    labels: Option<nvnet::LabelConvention>,
    /// Per-case CSV.
    #[arg(long)]
    out: Option<PathBuf>,
    /// On validation predictions made with `--no-postprocess`: the mean Dice of each
    /// post-processing candidate, and the set to record with `nvnet export`.
    #[arg(long)]
    choose_postprocessing: bool,
}

impl Args {
    /// Returns how many cases failed.
    pub fn run(self) -> Result<usize> {
        if self.choose_postprocessing {
            choose_postprocessing(&self.pred, &self.gt, self.labels)
        } else {
            run(&self.pred, &self.gt, self.labels, self.out.as_deref())
        }
    }
}

const REGIONS: [Region; 3] = [Region::WT, Region::TC, Region::ET];

/// The ground truth of case `id`: `<ID>_seg.nii.gz` / `<ID>-seg.nii.gz` (or `.nii`), loose in
/// `gt` or in `gt/<ID>/`. Two different files that both could be it are refused, with their names.
fn find_truth(gt: &Path, id: &str) -> Result<Option<PathBuf>, String> {
    let mut found: Vec<PathBuf> = Vec::new();
    for dir in [gt.to_path_buf(), gt.join(id)] {
        for sep in ['_', '-'] {
            for ext in ["nii.gz", "nii"] {
                let p = dir.join(format!("{id}{sep}seg.{ext}"));
                // Whatever stands there (a pipe, a folder) is read and refused by name, not
                // passed over as "no ground truth".
                if p.exists() {
                    found.push(p);
                }
            }
        }
    }
    let Some(first) = found.first().cloned() else {
        return Ok(None);
    };
    let id_of = nvnet::io::fsutil::FileId::of;
    if let Some(other) = found.iter().find(|p| id_of(p) != id_of(&first)) {
        return Err(format!(
            "two ground truths, {} and {}: keep one",
            first.display(),
            other.display()
        ));
    }
    Ok(Some(first))
}

/// A text field of a CSV row as RFC 4180 writes it (quoted when it holds a comma, a quote or a
/// line break), with a leading `= + - @` (or tab, carriage return) made inert by a `'`, as
/// OWASP advises, so that a spreadsheet shows a case name and never runs it as a formula.
fn csv_text(field: &str) -> String {
    let field = if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{field}")
    } else {
        field.to_string()
    };
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}

/// The predictions in `pred`: `<ID>.nii.gz`, leaving out `_prob` and `_uncertainty` maps.
fn predictions(pred: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(pred).with_context(|| format!("{}", pred.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let Some(stem) = nifti_stem(&name) else {
            continue;
        };
        if stem.ends_with("_prob") || stem.ends_with("_uncertainty") || path.is_dir() {
            continue;
        }
        out.push((stem.to_string(), path));
    }
    out.sort();
    if out.is_empty() {
        bail!("{}: no predictions (<ID>.nii.gz) here", pred.display());
    }
    Ok(out)
}

fn labels_of(image: &Image) -> Result<Vec<u8>, String> {
    (0..image.voxels.len())
        .map(|i| {
            let v = image.value(i);
            if v.is_finite() && (0.0..=255.0).contains(&v) && v.fract() == 0.0 {
                Ok(v as u8)
            } else {
                Err(format!(
                    "{}: value {v} at voxel {i} is not a label",
                    image.source
                ))
            }
        })
        .collect()
}

/// A prediction and its ground truth, checked to share a grid.
struct Pair {
    predicted: Vec<u8>,
    truth: Vec<u8>,
    labels: LabelConvention,
    /// The grid [i, j, k] (file order, i fastest) and its spacing (mm).
    dims: [usize; 3],
    spacing: [f64; 3],
}

fn load_pair(pred_path: &Path, truth_path: &Path, labels: Option<LabelConvention>) -> Result<Pair> {
    let pred = nifti::read_path(pred_path)?;
    let truth = nifti::read_path(truth_path)?;
    if pred.dims() != truth.dims() {
        bail!(
            "{} is {:?} but {} is {:?}: not the same grid",
            pred.source,
            pred.dims(),
            truth.source,
            truth.dims()
        );
    }
    let d = pred.geometry.affine_difference(&truth.geometry);
    if d.is_nan() || d > AFFINE_TOLERANCE {
        bail!(
            "the affine of {} differs from that of {} by {d:.3e} mm: not the same grid",
            pred.source,
            truth.source
        );
    }
    let p = labels_of(&pred).map_err(anyhow::Error::msg)?;
    let t = labels_of(&truth).map_err(anyhow::Error::msg)?;
    // The convention: given, else the ground truth's (its ET label, else its file naming:
    // `<ID>-seg` from BraTS 2023 on, `<ID>_seg` before).
    let conv = labels.unwrap_or_else(|| {
        let named_2023 = truth_path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains("-seg."));
        if t.contains(&3) || (!t.contains(&4) && named_2023) {
            LabelConvention::Brats2023
        } else {
            LabelConvention::Brats2018
        }
    });
    for (map, image) in [(&p, &pred), (&t, &truth)] {
        if let Some(bad) = map.iter().find(|l| !conv.labels().contains(l)) {
            let hint = if [3, 4].contains(bad) {
                ": do the prediction and the ground truth use different conventions? (--labels)"
            } else {
                ""
            };
            bail!(
                "{}: label {bad} is not a label of {}{hint}",
                image.source,
                conv.name()
            );
        }
    }
    Ok(Pair {
        predicted: p,
        truth: t,
        labels: conv,
        dims: pred.dims(),
        spacing: truth.geometry.spacing(),
    })
}

/// One case: the metrics of WT, TC, ET.
fn evaluate_case(
    pred_path: &Path,
    truth_path: &Path,
    labels: Option<LabelConvention>,
) -> Result<[RegionMetrics; 3]> {
    let pair = load_pair(pred_path, truth_path, labels)?;
    // File order is i fastest: as a C-order volume its axes are (k, j, i).
    let [nx, ny, nz] = pair.dims;
    let s = pair.spacing;
    let dims = [nz, ny, nx];
    let spacing = [s[2], s[1], s[0]];
    Ok(REGIONS.map(|r| {
        metrics::region_metrics(
            &labels::region_mask(&pair.predicted, r, pair.labels),
            &labels::region_mask(&pair.truth, r, pair.labels),
            dims,
            spacing,
        )
    }))
}

/// A case's id, its prediction and its ground truth.
type Matched = (String, PathBuf, PathBuf);

/// The (id, prediction, truth) of every prediction in `pred` with a ground truth in `gt`, and how
/// many have none (each reported).
fn matched(pred: &Path, gt: &Path) -> Result<(Vec<Matched>, usize)> {
    let mut out = Vec::new();
    let mut failed = 0;
    for (id, path) in predictions(pred)? {
        match find_truth(gt, &id) {
            Ok(Some(truth)) => out.push((id, path, truth)),
            Err(e) => {
                failed += 1;
                eprintln!("failed: {id}: {e}");
            }
            Ok(None) => {
                failed += 1;
                eprintln!(
                    "failed: {id}: no ground truth {id}_seg.nii.gz or {id}-seg.nii.gz in {} or {}",
                    gt.display(),
                    gt.join(&id).display()
                );
            }
        }
    }
    // Said, not failed: scoring a subset (the validation split of a dataset root) is common.
    let missing: Vec<String> = truth_ids(gt)
        .into_iter()
        .filter(|id| !out.iter().any(|(p, _, _)| p == id))
        .collect();
    if !missing.is_empty() {
        const SHOWN: usize = 10;
        eprintln!(
            "note: {} ground-truth case(s) in {} have no prediction and are not scored: {}{}",
            missing.len(),
            gt.display(),
            missing[..missing.len().min(SHOWN)].join(", "),
            if missing.len() > SHOWN { ", ..." } else { "" }
        );
    }
    Ok((out, failed))
}

/// The ids of the ground truths in `gt`: loose `<ID>_seg.nii.gz` / `<ID>-seg.nii.gz`, or in
/// `gt/<ID>/`.
fn truth_ids(gt: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(gt) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            if e.path().is_dir() {
                // An ambiguous truth is still a truth (refused by name when scored).
                (!matches!(find_truth(gt, &name), Ok(None))).then_some(name)
            } else {
                let stem = nifti_stem(&name)?;
                let id = stem.strip_suffix("_seg").or(stem.strip_suffix("-seg"))?;
                Some(id.to_string())
            }
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// `--choose-postprocessing`: score the candidates on validation predictions, print them and the
/// choice. Returns how many cases failed.
fn choose_postprocessing(pred: &Path, gt: &Path, labels: Option<LabelConvention>) -> Result<usize> {
    let (pairs, mut failed) = matched(pred, gt)?;
    let mut cases = Vec::new();
    let mut conv = None;
    for (id, p, t) in &pairs {
        match load_pair(p, t, labels) {
            Ok(pair) => {
                if conv.is_some_and(|c| c != pair.labels) {
                    bail!(
                        "{id}: its labels follow another BraTS convention than the other cases'; give --labels"
                    );
                }
                conv = Some(pair.labels);
                cases.push(ValidationCase {
                    predicted: pair.predicted,
                    truth: pair.truth,
                    dims: pair.dims,
                });
            }
            Err(e) => {
                failed += 1;
                eprintln!("failed: {id}: {e:#}");
            }
        }
    }
    let Some(conv) = conv else {
        bail!(
            "{}: no prediction could be compared with a ground truth",
            pred.display()
        );
    };
    let (candidates, chosen) = postprocess::choose(&cases, conv);
    println!(
        "{:<40} {:>8} {:>8} {:>8} {:>8}   ({} case(s))",
        "post-processing",
        "WT",
        "TC",
        "ET",
        "mean",
        cases.len()
    );
    for c in &candidates {
        println!(
            "{:<40} {:>8.4} {:>8.4} {:>8.4} {:>8.4}{}",
            c.postprocessing.flags(),
            c.dice[0],
            c.dice[1],
            c.dice[2],
            c.mean(),
            if c.postprocessing == chosen {
                "   <- chosen"
            } else {
                ""
            }
        );
    }
    println!("chosen: {}", chosen.flags());
    Ok(failed)
}

/// Run; returns how many cases failed.
fn run(
    pred: &Path,
    gt: &Path,
    labels: Option<LabelConvention>,
    out: Option<&Path>,
) -> Result<usize> {
    let mut rows: Vec<(String, [RegionMetrics; 3])> = Vec::new();
    let (pairs, mut failed) = matched(pred, gt)?;
    if let Some(out) = out {
        let mut inputs = nvnet::io::fsutil::Inputs::default();
        for (_, path, truth) in &pairs {
            inputs.add(path);
            inputs.add(truth);
        }
        inputs
            .check_output(out)
            .with_context(|| format!("--out {}", out.display()))?;
    }
    for (id, path, truth) in pairs {
        match evaluate_case(&path, &truth, labels) {
            Ok(m) => rows.push((id, m)),
            Err(e) => {
                failed += 1;
                eprintln!("failed: {id}: {e:#}");
            }
        }
    }
    let mut csv = String::from("case");
    for r in REGIONS {
        for m in ["dice", "hd95", "sens", "spec"] {
            csv.push_str(&format!(",{r}_{m}"));
        }
    }
    csv.push('\n');
    for (id, m) in &rows {
        csv.push_str(&csv_text(id));
        for rm in m {
            csv.push_str(&format!(
                ",{},{},{},{}",
                rm.dice, rm.hd95, rm.sensitivity, rm.specificity
            ));
        }
        csv.push('\n');
    }
    if let Some(out) = out {
        nvnet::io::fsutil::write_atomic(out, csv.as_bytes())
            .with_context(|| format!("{}: cannot write", out.display()))?;
    }
    // The summary table.
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9}   ({} case(s){})",
        "",
        "mean",
        "std",
        "median",
        "q25",
        "q75",
        rows.len(),
        if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        }
    );
    for (ri, r) in REGIONS.iter().enumerate() {
        for (name, pick) in [
            (
                "dice",
                (|m: &RegionMetrics| m.dice) as fn(&RegionMetrics) -> f64,
            ),
            ("hd95", |m| m.hd95),
            ("sens", |m| m.sensitivity),
            ("spec", |m| m.specificity),
        ] {
            let v: Vec<f64> = rows.iter().map(|(_, m)| pick(&m[ri])).collect();
            let s = metrics::summarize(&v);
            println!(
                "{:<10} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4}",
                format!("{r}_{name}"),
                s.mean,
                s.std,
                s.median,
                s.q25,
                s.q75
            );
        }
    }
    if let Some(out) = out {
        println!("per case: {}", out.display());
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::csv_text;

    #[test]
    fn case_names_stay_one_inert_csv_field() {
        assert_eq!(csv_text("BraTS-GLI-00001-000"), "BraTS-GLI-00001-000");
        assert_eq!(csv_text("a,b"), "\"a,b\"");
        assert_eq!(
            csv_text("a,b=HYPERLINK(\"x\")"),
            "\"a,b=HYPERLINK(\"\"x\"\")\""
        );
        assert_eq!(csv_text("=1+2"), "'=1+2");
        assert_eq!(csv_text("-2,3"), "\"'-2,3\"");
        assert_eq!(csv_text("@x"), "'@x");
    }
}
