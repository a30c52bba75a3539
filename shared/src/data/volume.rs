//! Voxel orders. NIfTI stores voxels with i fastest; the network (like MONAI, which reads the
//! file through nibabel into a C-order array) sees a volume as [D, H, W] = [i, j, k] with k
//! fastest. Both orders keep the file's (i, j, k) axes: nothing is reoriented.

/// File order (i fastest) → network order (k fastest).
pub fn to_network_order<T: Copy>(dims: [usize; 3], file: &[T]) -> Vec<T> {
    let [nx, ny, nz] = dims;
    assert_eq!(file.len(), nx * ny * nz, "volume size");
    let mut out = Vec::with_capacity(file.len());
    for i in 0..nx {
        for j in 0..ny {
            for k in 0..nz {
                out.push(file[i + nx * (j + ny * k)]);
            }
        }
    }
    out
}

/// Network order (k fastest) → file order (i fastest).
pub fn to_file_order<T: Copy>(dims: [usize; 3], network: &[T]) -> Vec<T> {
    let [nx, ny, nz] = dims;
    assert_eq!(network.len(), nx * ny * nz, "volume size");
    let mut out = Vec::with_capacity(network.len());
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                out.push(network[(i * ny + j) * nz + k]);
            }
        }
    }
    out
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
    }
}
