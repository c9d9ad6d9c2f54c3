//! Least squares for the AR fits: normal equations with a tiny ridge, solved by Cholesky.
//! Systems are (p+1) x (p+1) with p <= 16, so a hand solver beats pulling in LAPACK.
use ndarray::{Array1, Array2};

/// argmin |X b - y|^2 (+ 1e-9 * trace-scaled ridge for stability); `None` if singular.
pub fn least_squares(x: &Array2<f64>, y: &Array1<f64>) -> Option<Array1<f64>> {
    let mut a = x.t().dot(x);
    let b = x.t().dot(y);
    let n = a.nrows();
    let scale = (0..n).map(|i| a[[i, i]]).sum::<f64>() / n.max(1) as f64;
    for i in 0..n {
        a[[i, i]] += 1e-9 * scale.max(1e-12);
    }
    cholesky_solve(a, b)
}

fn cholesky_solve(mut a: Array2<f64>, mut b: Array1<f64>) -> Option<Array1<f64>> {
    let n = a.nrows();
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
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_an_exact_linear_fit() {
        // y = 3 + 2x
        let x = Array2::from_shape_fn((5, 2), |(r, c)| if c == 0 { 1.0 } else { r as f64 });
        let y = Array1::from_iter((0..5).map(|r| 3.0 + 2.0 * r as f64));
        let b = least_squares(&x, &y).expect("solvable");
        assert!(
            (b[0] - 3.0).abs() < 1e-6 && (b[1] - 2.0).abs() < 1e-6,
            "{b}"
        );
    }

    #[test]
    fn singular_system_is_none_not_nan() {
        let x = Array2::zeros((4, 2));
        let y = Array1::zeros(4);
        // The ridge keeps an all-zero design solvable, with a zero answer.
        let b = least_squares(&x, &y).expect("ridge makes it solvable");
        assert_eq!(b.to_vec(), vec![0.0, 0.0]);
    }
}
