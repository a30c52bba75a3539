//! Rigid registration against known motions: a phantom head "acquired" as three more series on
//! grids of their own (sagittal; oblique with 3 mm slices; axial with 5 mm slices, each slice
//! the mean over its thickness), the head moved by a few millimetres and degrees before each,
//! registered back to the reference series; the target error is the mean distance, over the
//! brain, between where the found and the true motions put each point.

use nvnet::data::synth;
use nvnet::io::nifti::Geometry;
use nvnet::prepare::{Options, Rigid, Volume};
use nvnet::{LabelConvention, Modality};

fn turn(deg: [f64; 3]) -> [[f64; 3]; 3] {
    Rigid {
        angles: deg.map(f64::to_radians),
        translation: [0.0; 3],
        centre: [0.0; 3],
    }
    .rotation()
}

fn grid(r: [[f64; 3]; 3], spacing: [f64; 3], dims: [usize; 3], centre: [f64; 3]) -> Geometry {
    synth::grid_around(r, spacing, dims, centre)
}

fn acquire(head: &Volume, moved: &Rigid, g: &Geometry) -> Volume {
    Volume::new(synth::acquire(head, moved, g), g.clone())
}

#[test]
fn three_series_on_their_own_grids_register_within_a_millimetre() {
    // A whole head at 1.5 mm (160 × 160 × 104 voxels).
    let phantom = synth::generate(11, 0, [160, 160, 104], LabelConvention::Brats2018);
    let image = |i: usize| -> Vec<f32> { phantom.images[i].1.iter().map(|&v| v as f32).collect() };
    let reference = Volume::new(image(1), phantom.geometry.clone());
    let centre = reference.world([79.5, 79.5, 51.5]);
    let axial = turn([0.0, 0.0, 0.0]);
    // A sagittal grid: i along y, j along −z, k along x.
    let sagittal = [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]];
    let cases = [
        (
            0,
            "T1 sagittal 1.5 mm",
            grid(sagittal, [1.5, 1.5, 1.5], [160, 110, 160], centre),
            [3.0, -2.0, 4.0],
            [2.0, -3.0, 1.5],
        ),
        (
            2,
            "T2 oblique, 3 mm slices",
            grid(
                turn([12.0, 0.0, 8.0]),
                [1.5, 1.5, 3.0],
                [160, 160, 56],
                centre,
            ),
            [-4.0, 3.0, -2.0],
            [-1.5, 2.5, -2.0],
        ),
        (
            3,
            "FLAIR axial, 5 mm slices",
            grid(axial, [1.5, 1.5, 5.0], [160, 160, 34], centre),
            [2.0, 5.0, -3.0],
            [3.0, 1.0, -2.5],
        ),
    ];
    let brain: Vec<[f64; 3]> = (0..reference.values.len())
        .step_by(7)
        .filter(|&i| reference.values[i] > 0.0)
        .map(|i| {
            let [nx, ny, _] = reference.dims();
            reference.world([
                (i % nx) as f64,
                ((i / nx) % ny) as f64,
                (i / (nx * ny)) as f64,
            ])
        })
        .collect();
    assert!(brain.len() > 10_000);
    let mut report = Vec::new();
    for (index, name, g, degrees, translation) in cases {
        let head = Volume::new(image(index), phantom.geometry.clone());
        let truth = Rigid {
            angles: degrees.map(f64::to_radians),
            translation,
            centre,
        };
        let series = acquire(&head, &truth, &g);
        let (error, line) = crate::common::registration_error(&reference, &series, &truth, &brain);
        report.push(format!("{name}: {line}"));
        assert!(error <= 1.0, "{}", report.join("\n"));
    }
    eprintln!("{}", report.join("\n"));
}

/// A case prepared with the sagittal T1 as its reference gives its series back on that grid,
/// as the page's viewer shows them: the T1 as read, voxel for voxel, and each other series
/// where the registration put it — close to the same anatomy acquired on the T1's grid through
/// the T1's own motion.
#[test]
fn a_prepared_case_shows_its_series_on_the_references_own_grid() {
    use nvnet::data::synth::{Acquisition, acquire_series};
    use nvnet::io::nifti::{DataType, Image, Voxels};
    use nvnet::prepare::{Skull, prepare};

    let phantom = synth::generate(5, 0, [96, 96, 64], LabelConvention::Brats2018);
    let series = acquire_series(&phantom, Acquisition::Moved { seed: 3 });
    let images: Vec<_> = series
        .iter()
        .map(|(m, g, values, _)| {
            let image = Image {
                source: format!("{m}.nii"),
                dtype: DataType::F32,
                geometry: g.clone(),
                voxels: Voxels::F32(values.iter().map(|&v| v as f32).collect()),
                slope: 1.0,
                inter: 0.0,
                warnings: Vec::new(),
            };
            (*m, image)
        })
        .collect();
    let (t1_grid, t1_values, t1_motion) = (&series[0].1, &series[0].2, series[0].3);
    let prepared = prepare(
        "Phantom",
        images,
        Modality::T1,
        Skull::Stripped,
        &Options::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(&prepared.native, t1_grid);
    let shown = prepared
        .series_on_native()
        .expect("resampled, so shown on the T1's grid");
    let n: usize = t1_grid.dims.iter().product();
    assert_eq!(shown.len(), 4);
    assert!(shown.iter().all(|s| s.len() == n));
    let t1_index = prepared
        .case
        .images
        .iter()
        .position(|(m, _)| *m == Modality::T1)
        .unwrap();
    let t1: Vec<f32> = t1_values.iter().map(|&v| v as f32).collect();
    assert_eq!(shown[t1_index], t1, "the T1 is not shown as read");
    // The T1ce where the registration put it, against the T1ce's anatomy seen through the
    // T1's motion on the T1's grid.
    let t1ce_index = prepared
        .case
        .images
        .iter()
        .position(|(m, _)| *m == Modality::T1ce)
        .unwrap();
    let head = Volume::new(
        phantom.images[1].1.iter().map(|&v| v as f32).collect(),
        phantom.geometry.clone(),
    );
    let truth = synth::acquire(&head, &t1_motion, t1_grid);
    let inside: Vec<usize> = (0..n)
        .filter(|&v| shown[t1ce_index][v] > 0.0 && truth[v] > 0.0)
        .collect();
    assert!(
        inside.len() > n / 10,
        "{} of {n} voxels inside",
        inside.len()
    );
    let range = inside.iter().map(|&v| truth[v]).fold(0f32, f32::max);
    let error = inside
        .iter()
        .map(|&v| (shown[t1ce_index][v] - truth[v]).abs())
        .sum::<f32>()
        / inside.len() as f32;
    eprintln!(
        "the T1ce on the T1's grid: mean difference {:.2} % of its range",
        100.0 * error / range
    );
    assert!(error < 0.05 * range, "{error} against a range of {range}");
}
