//! A phantom acquired as a scanner acquires a series: on a grid of the series' own (another
//! orientation, thicker slices), after the head moved. The registration tests and the phantom
//! exams (`nvnet synth --exam`) are made of such series.

use crate::io::nifti::Geometry;
use crate::prepare::{Rigid, Volume};

/// The series a scanner records of `head` (placed in the reference's world) on `grid`, after the
/// head moved by `moved`: each voxel the mean of five samples across its slice thickness (a thick
/// slice averages what it cuts through), 0 outside the head's volume.
pub fn acquire(head: &Volume, moved: &Rigid, grid: &Geometry) -> Vec<f32> {
    // Where the anatomy at a scanner point was before the motion.
    let (back, offset) = moved.inverse_affine();
    let [nx, ny, nz] = grid.dims;
    let mut values = Vec::with_capacity(nx * ny * nz);
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let mut sum = 0.0;
                for s in [-0.4, -0.2, 0.0, 0.2, 0.4] {
                    let w = grid.world([i as f64, j as f64, k as f64 + s]);
                    let p: [f64; 3] = std::array::from_fn(|r| {
                        (0..3).map(|c| back[r][c] * w[c]).sum::<f64>() + offset[r]
                    });
                    sum += head.at_world(p).unwrap_or(0.0);
                }
                values.push(sum / 5.0);
            }
        }
    }
    values
}

/// A grid of `dims` voxels of `spacing` mm whose axes are the columns of `axes`, centred on
/// `centre` (world, mm).
pub fn grid_around(
    axes: [[f64; 3]; 3],
    spacing: [f64; 3],
    dims: [usize; 3],
    centre: [f64; 3],
) -> Geometry {
    let mut a = [[0.0; 4]; 4];
    for row in 0..3 {
        for c in 0..3 {
            a[row][c] = axes[row][c] * spacing[c];
        }
        a[row][3] = centre[row]
            - (0..3)
                .map(|c| a[row][c] * (dims[c] as f64 - 1.0) / 2.0)
                .sum::<f64>();
    }
    a[3][3] = 1.0;
    Geometry::from_affine(dims, a)
}
