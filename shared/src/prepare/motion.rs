//! A rigid motion of the head in world space (mm, NIfTI's RAS): a rotation about a centre, then
//! a translation. Registration finds one for each series; resampling follows it.

/// x ↦ R·(x − centre) + centre + translation, R = Rz·Ry·Rx of `angles` (radians).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rigid {
    pub angles: [f64; 3],
    pub translation: [f64; 3],
    pub centre: [f64; 3],
}

impl Rigid {
    pub fn identity(centre: [f64; 3]) -> Rigid {
        Rigid {
            angles: [0.0; 3],
            translation: [0.0; 3],
            centre,
        }
    }

    /// The rotation matrix.
    pub fn rotation(&self) -> [[f64; 3]; 3] {
        let [a, b, c] = self.angles;
        let (sa, ca) = a.sin_cos();
        let (sb, cb) = b.sin_cos();
        let (sc, cc) = c.sin_cos();
        let rx = [[1.0, 0.0, 0.0], [0.0, ca, -sa], [0.0, sa, ca]];
        let ry = [[cb, 0.0, sb], [0.0, 1.0, 0.0], [-sb, 0.0, cb]];
        let rz = [[cc, -sc, 0.0], [sc, cc, 0.0], [0.0, 0.0, 1.0]];
        mul(rz, mul(ry, rx))
    }

    /// The motion as an affine map: (matrix, offset) with x ↦ M·x + o.
    pub fn affine(&self) -> ([[f64; 3]; 3], [f64; 3]) {
        let r = self.rotation();
        let rc = apply3(&r, self.centre);
        let offset = [0, 1, 2].map(|i| self.centre[i] - rc[i] + self.translation[i]);
        (r, offset)
    }

    pub fn apply(&self, p: [f64; 3]) -> [f64; 3] {
        let (r, o) = self.affine();
        let q = apply3(&r, p);
        [q[0] + o[0], q[1] + o[1], q[2] + o[2]]
    }

    /// The motion that undoes this one, as an affine map.
    pub fn inverse_affine(&self) -> ([[f64; 3]; 3], [f64; 3]) {
        let (r, o) = self.affine();
        let rt = [0, 1, 2].map(|i| [0, 1, 2].map(|j| r[j][i]));
        let back = apply3(&rt, o);
        (rt, back.map(|x| -x))
    }
}

pub(crate) fn mul(a: [[f64; 3]; 3], b: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut m = [[0.0; 3]; 3];
    for (r, row) in m.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    m
}

pub(crate) fn apply3(m: &[[f64; 3]; 3], p: [f64; 3]) -> [f64; 3] {
    [0, 1, 2].map(|r| m[r][0] * p[0] + m[r][1] * p[1] + m[r][2] * p[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inverse_undoes_the_motion_and_the_centre_stays_where_it_is_moved() {
        let m = Rigid {
            angles: [0.1, -0.2, 0.3],
            translation: [1.0, -2.0, 3.5],
            centre: [10.0, 20.0, -5.0],
        };
        let p = [3.0, -4.0, 7.0];
        let q = m.apply(p);
        let (r, o) = m.inverse_affine();
        let back = apply3(&r, q);
        let close = |a: [f64; 3], b: [f64; 3]| (0..3).all(|i| (a[i] - b[i]).abs() < 1e-12);
        assert!(close([0, 1, 2].map(|i| back[i] + o[i]), p));
        let c = m.apply(m.centre);
        assert!(close(c, [0, 1, 2].map(|i| m.centre[i] + m.translation[i])));
    }
}
