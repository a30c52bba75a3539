//! Skull stripping and registration on a real head: the Colin 27 average (one person scanned 27
//! times, Holmes et al. 1998, a T1 at 1 mm with its skull, scalp and neck), as MRIcron ships it
//! (Debian's `mricron-data`, which scripts/setup.sh installs): `ch2.nii.gz` and `ch2bet.nii.gz`,
//! the brain FSL's BET extracted from it — the field's reference method, not a truth drawn by
//! hand. No real T2 or FLAIR ships with it: their contrasts are made from the T1 by a mapping of
//! its values (mutual information asks only that one image's values predict the other's).

use std::path::PathBuf;

use nvnet::Modality;
use nvnet::data::synth;
use nvnet::io::nifti::{self, Geometry};
use nvnet::prepare::skull::{already_stripped, brain_mask};
use nvnet::prepare::{Rigid, Volume};

/// Where MRIcron's templates are: Debian's path, or `NVNET_COLIN27_DIR`.
fn template(name: &str) -> (Vec<f32>, Geometry) {
    let dir = std::env::var_os("NVNET_COLIN27_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/mricron/templates"));
    let path = dir.join(name);
    let image = nifti::read_path(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; install Debian's mricron-data (scripts/setup.sh does) or set \
             NVNET_COLIN27_DIR",
            path.display()
        )
    });
    (image.to_f32(), image.geometry.clone())
}

fn dice(a: &[bool], b: &[bool]) -> f64 {
    let both = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let na = a.iter().filter(|x| **x).count();
    let nb = b.iter().filter(|y| **y).count();
    2.0 * both as f64 / (na + nb) as f64
}

#[test]
fn a_real_head_is_stripped_as_bet_strips_it() {
    let (head, g) = template("ch2.nii.gz");
    let (bet, bet_grid) = template("ch2bet.nii.gz");
    assert_eq!(g.dims, bet_grid.dims);
    assert!(g.affine_difference(&bet_grid) < 1e-4);
    assert!(
        !already_stripped(&head, g.dims, g.spacing()),
        "Colin 27's head taken for a stripped brain"
    );
    assert!(
        already_stripped(&bet, g.dims, g.spacing()),
        "BET's brain of Colin 27 not found stripped"
    );
    // The one contrast there is, as the T1ce: the mask is made from T1, T1ce and FLAIR alike.
    let t = std::time::Instant::now();
    let mask = brain_mask(&[(Modality::T1ce, head.as_slice())], g.dims, g.spacing());
    let seconds = t.elapsed().as_secs_f64();
    let truth: Vec<bool> = bet.iter().map(|&v| v > 0.0).collect();
    let ml = |m: &[bool]| m.iter().filter(|x| **x).count() as f64 / 1000.0;
    let d = dice(&mask, &truth);
    eprintln!(
        "Colin 27: brain-mask Dice {d:.4} against BET's ({:.0} mL against {:.0} mL, {seconds:.1} s)",
        ml(&mask),
        ml(&truth)
    );
    assert!(d >= 0.95, "brain-mask Dice {d:.4} against BET's");
}

/// T2's contrast from a T1's values (Colin 27: CSF 30–60, grey matter about 85, white matter
/// about 112, fat and marrow up to 250): CSF brightest, white matter darkest, fat dark; air
/// stays dark.
fn t2_like(v: f32) -> f32 {
    if v < 20.0 { v } else { (220.0 - v).max(0.0) }
}

/// FLAIR's: CSF dark, grey matter brighter than white, fat dark.
fn flair_like(v: f32) -> f32 {
    if v < 90.0 { v } else { (180.0 - v).max(0.0) }
}

#[test]
fn a_real_head_on_three_grids_registers_within_a_millimetre() {
    let (t1, g) = template("ch2.nii.gz");
    let (bet, _) = template("ch2bet.nii.gz");
    let reference = Volume::new(t1.clone(), g.clone());
    let [nx, ny, nz] = g.dims;
    let centre = reference.world([90.0, 108.0, 90.0]);
    let turn = |deg: [f64; 3]| {
        Rigid {
            angles: deg.map(f64::to_radians),
            translation: [0.0; 3],
            centre: [0.0; 3],
        }
        .rotation()
    };
    // A sagittal grid: i along y, j along −z, k along x.
    let sagittal = [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]];
    // (name, contrast, grid, the head's rotation in degrees, its translation in mm)
    type Acquisition = (&'static str, fn(f32) -> f32, Geometry, [f64; 3], [f64; 3]);
    let cases: [Acquisition; 3] = [
        (
            "T1 sagittal 1.2 mm",
            |v| v,
            synth::grid_around(sagittal, [1.2, 1.2, 1.2], [190, 160, 150], centre),
            [3.0, -2.0, 4.0],
            [2.0, -3.0, 1.5],
        ),
        (
            "T2-like oblique, 3 mm slices",
            t2_like,
            synth::grid_around(
                turn([12.0, 0.0, 8.0]),
                [1.0, 1.0, 3.0],
                [190, 220, 60],
                centre,
            ),
            [-4.0, 3.0, -2.0],
            [-1.5, 2.5, -2.0],
        ),
        (
            "FLAIR-like axial, 5 mm slices",
            flair_like,
            synth::grid_around(turn([0.0; 3]), [1.0, 1.0, 5.0], [190, 220, 36], centre),
            [2.0, 5.0, -3.0],
            [3.0, 1.0, -2.5],
        ),
    ];
    // Where the error is measured: every seventh voxel of BET's brain.
    let brain: Vec<[f64; 3]> = (0..bet.len())
        .step_by(7)
        .filter(|&i| bet[i] > 0.0)
        .map(|i| {
            reference.world([
                (i % nx) as f64,
                ((i / nx) % ny) as f64,
                (i / (nx * ny)) as f64,
            ])
        })
        .collect();
    assert!(brain.len() > 100_000 && nz > 0);
    let mut report = Vec::new();
    for (name, contrast, grid, degrees, translation) in cases {
        let head = Volume::new(t1.iter().map(|&v| contrast(v)).collect(), g.clone());
        let truth = Rigid {
            angles: degrees.map(f64::to_radians),
            translation,
            centre,
        };
        let series = Volume::new(synth::acquire(&head, &truth, &grid), grid);
        let (error, line) = crate::common::registration_error(&reference, &series, &truth, &brain);
        report.push(format!("Colin 27, {name}: {line}"));
        assert!(error <= 1.0, "{}", report.join("\n"));
    }
    eprintln!("{}", report.join("\n"));
}
