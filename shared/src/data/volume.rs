//! Voxel orders. NIfTI stores voxels with i fastest; the network (like MONAI, which reads the
//! file through nibabel into a C-order array) sees a volume as [D, H, W] = [i, j, k] with k
//! fastest. Both orders keep the file's (i, j, k) axes: nothing is reoriented.

/// File order (i fastest) → network order (k fastest).
pub fn to_network_order<T: Copy>(dims: [usize; 3], file: &[T]) -> Vec<T> {
    let [nx, ny, nz] = dims;
    assert_eq!(file.len(), nx * ny * nz, "volume size");
    let mut out = file.to_vec();
    // For each j a transpose between i and k, in blocks: one value at a time, one of the two
    // sides would be read or written a whole plane apart (a cache miss per voxel).
    for j in 0..ny {
        for (i0, k0) in blocks(nx, nz) {
            for i in i0..(i0 + BLOCK).min(nx) {
                for k in k0..(k0 + BLOCK).min(nz) {
                    out[(i * ny + j) * nz + k] = file[i + nx * (j + ny * k)];
                }
            }
        }
    }
    out
}

/// Network order (k fastest) → file order (i fastest).
pub fn to_file_order<T: Copy>(dims: [usize; 3], network: &[T]) -> Vec<T> {
    let [nx, ny, nz] = dims;
    assert_eq!(network.len(), nx * ny * nz, "volume size");
    let mut out = network.to_vec();
    for j in 0..ny {
        for (i0, k0) in blocks(nx, nz) {
            for k in k0..(k0 + BLOCK).min(nz) {
                for i in i0..(i0 + BLOCK).min(nx) {
                    out[i + nx * (j + ny * k)] = network[(i * ny + j) * nz + k];
                }
            }
        }
    }
    out
}

/// Voxels per side of the blocks the orders are exchanged in.
const BLOCK: usize = 16;

/// The corners of the BLOCK × BLOCK blocks covering an a × b plane.
fn blocks(a: usize, b: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..a)
        .step_by(BLOCK)
        .flat_map(move |i| (0..b).step_by(BLOCK).map(move |k| (i, k)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_inverse_and_keep_axes() {
        let dims = [3, 4, 5];
        let file: Vec<usize> = (0..60).collect();
        let net = to_network_order(dims, &file);
        // voxel (i, j, k) = (2, 1, 3): file index 2 + 3·(1 + 4·3) = 41, network (2·4 + 1)·5 + 3 = 48
        assert_eq!(net[48], 41);
        assert_eq!(to_file_order(dims, &net), file);
        // Sides that the blocks do not divide, every voxel against the definition.
        let dims = [37, 3, 21];
        let file: Vec<usize> = (0..37 * 3 * 21).collect();
        let net = to_network_order(dims, &file);
        for (i, j, k) in
            (0..37).flat_map(|i| (0..3).flat_map(move |j| (0..21).map(move |k| (i, j, k))))
        {
            assert_eq!(net[(i * 3 + j) * 21 + k], i + 37 * (j + 3 * k));
        }
        assert_eq!(to_file_order(dims, &net), file);
    }
}
