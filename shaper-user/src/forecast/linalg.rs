//! Least squares for the AR fits: normal equations accumulated row by row on the stack, with a
//! tiny ridge, solved by Cholesky. Systems are (p+1) x (p+1) with p < [`MAX_COLS`], so a hand
//! solver beats pulling in LAPACK, and a fit allocates nothing: 100,000 tenants refit on two
//! threads, and a design matrix per fit (two allocations and a matrix product) had the
//! threads queueing on the allocator's lock.
use ndarray::{ArrayViewMut1, ArrayViewMut2};

/// The most columns (intercept + lags) a fit may have.
pub const MAX_COLS: usize = 17;

/// X^T X and X^T y of a least-squares fit, grown one row at a time.
pub struct Normal {
    cols: usize,
    a: [f64; MAX_COLS * MAX_COLS],
    b: [f64; MAX_COLS],
}

impl Normal {
    /// An empty system of `cols` (clamped to 1..=[`MAX_COLS`]) unknowns.
    pub fn new(cols: usize) -> Normal {
        Normal {
            cols: cols.clamp(1, MAX_COLS),
            a: [0.0; MAX_COLS * MAX_COLS],
            b: [0.0; MAX_COLS],
        }
    }

    /// Adds the row `x` (its first `cols` values) with target `y`. Only the lower triangle is
    /// accumulated: the solver reads no other.
    #[inline]
    pub fn add(&mut self, x: &[f64], y: f64) {
        let n = self.cols.min(x.len());
        for i in 0..n {
            let xi = x[i];
            let row = &mut self.a[i * MAX_COLS..i * MAX_COLS + i + 1];
            for (a, xj) in row.iter_mut().zip(&x[..=i]) {
                *a += xi * xj;
            }
            self.b[i] += xi * y;
        }
    }

    /// argmin |X b - y|^2 (+ 1e-9 * trace-scaled ridge for stability); `None` if singular.
    pub fn solve(mut self) -> Option<[f64; MAX_COLS]> {
        let n = self.cols;
        let scale = (0..n).map(|i| self.a[i * MAX_COLS + i]).sum::<f64>() / n as f64;
        for i in 0..n {
            self.a[i * MAX_COLS + i] += 1e-9 * scale.max(1e-12);
        }
        let a = ArrayViewMut2::from_shape((MAX_COLS, MAX_COLS), &mut self.a).ok()?;
        let b = ArrayViewMut1::from(&mut self.b[..]);
        cholesky_solve(a, b, n)?;
        Some(self.b)
    }
}

/// Solves the leading `n` x `n` system in place (`b` becomes the answer), reading the lower
/// triangle of `a` only.
fn cholesky_solve(mut a: ArrayViewMut2<f64>, mut b: ArrayViewMut1<f64>, n: usize) -> Option<()> {
    // In place: the lower triangle becomes L with A = L L^T.
    for j in 0..n {
        let mut d = a[[j, j]];
        for k in 0..j {
            d -= a[[j, k]] * a[[j, k]];
        }
        // Not positive, or NaN: not positive definite.
        if d.is_nan() || d <= 0.0 {
            return None;
        }
        let d = d.sqrt();
        a[[j, j]] = d;
        for i in j + 1..n {
            let mut s = a[[i, j]];
            for k in 0..j {
                s -= a[[i, k]] * a[[j, k]];
            }
            a[[i, j]] = s / d;
        }
    }
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= a[[i, k]] * b[k];
        }
        b[i] = s / a[[i, i]];
    }
    for i in (0..n).rev() {
        let mut s = b[i];
        for k in i + 1..n {
            s -= a[[k, i]] * b[k];
        }
        b[i] = s / a[[i, i]];
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_an_exact_linear_fit() {
        // y = 3 + 2x
        let mut s = Normal::new(2);
        for r in 0..5 {
            s.add(&[1.0, r as f64], 3.0 + 2.0 * r as f64);
        }
        let b = s.solve().expect("solvable");
        assert!(
            (b[0] - 3.0).abs() < 1e-6 && (b[1] - 2.0).abs() < 1e-6,
            "{b:?}"
        );
    }

    /// The same answer as the textbook: (X^T X)^-1 X^T y on a small overdetermined system.
    #[test]
    fn matches_the_closed_form_on_a_noisy_fit() {
        let rows: Vec<([f64; 3], f64)> = (0..40)
            .map(|r| {
                let (u, v) = (r as f64, ((r * 7) % 11) as f64);
                let noise = ((r * 13) % 5) as f64 - 2.0;
                ([1.0, u, v], 1.5 + 0.25 * u - 3.0 * v + 0.1 * noise)
            })
            .collect();
        let mut s = Normal::new(3);
        rows.iter().for_each(|(x, y)| s.add(x, *y));
        let b = s.solve().expect("solvable");
        // Residuals are orthogonal to every column at the optimum.
        for c in 0..3 {
            let g: f64 = rows
                .iter()
                .map(|(x, y)| x[c] * (y - (0..3).map(|j| x[j] * b[j]).sum::<f64>()))
                .sum();
            // Zero but for the ridge (1e-9 of the mean diagonal, about 7e-6 here).
            assert!(g.abs() < 1e-3, "column {c}: gradient {g}");
        }
    }

    #[test]
    fn singular_system_is_none_not_nan() {
        let mut s = Normal::new(2);
        for _ in 0..4 {
            s.add(&[0.0, 0.0], 0.0);
        }
        // The ridge keeps an all-zero design solvable, with a zero answer.
        let b = s.solve().expect("ridge makes it solvable");
        assert_eq!(&b[..2], &[0.0, 0.0]);
    }
}
