//! Small numeric building blocks of the f64 reference, each checkable on its own.

/// `sum_k a[k] * b[k]` with four independent accumulators (vectorises without fast-math).
///
/// ```
/// assert_eq!(attn_ref::ops::dot(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);
/// ```
#[inline]
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    let (a4, ar) = a.split_at(a.len() & !3);
    let (b4, br) = b.split_at(a4.len());
    let mut acc = [0.0f64; 4];
    for (x, y) in a4.chunks_exact(4).zip(b4.chunks_exact(4)) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

/// `y += alpha * x`.
///
/// ```
/// let mut y = [1.0, 1.0];
/// attn_ref::ops::axpy(2.0, &[3.0, 4.0], &mut y);
/// assert_eq!(y, [7.0, 9.0]);
/// ```
#[inline]
pub fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    debug_assert_eq!(x.len(), y.len());
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

/// `C[m, n] = sum_k A[m, k] * B[n, k]` (row-major, `B` transposed: the `Q K^T` product).
///
/// ```
/// // [[1, 2]] x [[3, 4], [5, 6]]^T = [[11, 17]]
/// assert_eq!(attn_ref::ops::gemm_nt(&[1.0, 2.0], &[3.0, 4.0, 5.0, 6.0], 1, 2, 2), vec![11.0, 17.0]);
/// ```
pub fn gemm_nt(a: &[f64], b: &[f64], m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = dot(&a[i * k..(i + 1) * k], &b[j * k..(j + 1) * k]);
        }
    }
    c
}

/// `ln(sum exp(x))`, stable; `-inf` for an empty row or a row of `-inf`.
///
/// ```
/// use attn_ref::ops::logsumexp;
/// assert!((logsumexp(&[0.0, 0.0]) - 2f64.ln()).abs() < 1e-15);
/// assert_eq!(logsumexp(&[f64::NEG_INFINITY]), f64::NEG_INFINITY);
/// assert_eq!(logsumexp(&[1e4, 1e4]), 1e4 + 2f64.ln());
/// ```
pub fn logsumexp(x: &[f64]) -> f64 {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    m + x.iter().map(|&v| (v - m).exp()).sum::<f64>().ln()
}

/// Replaces a row of logits by `exp(x - lse)` and returns `lse`; a row with no finite logit becomes all
/// zeros with `lse = -inf` (never NaN).
///
/// ```
/// let mut row = [0.0, f64::NEG_INFINITY, 0.0];
/// let lse = attn_ref::ops::softmax_row(&mut row);
/// assert_eq!(row, [0.5, 0.0, 0.5]);
/// assert!((lse - 2f64.ln()).abs() < 1e-15);
/// let mut empty = [f64::NEG_INFINITY; 2];
/// assert_eq!(attn_ref::ops::softmax_row(&mut empty), f64::NEG_INFINITY);
/// assert_eq!(empty, [0.0, 0.0]);
/// ```
pub fn softmax_row(x: &mut [f64]) -> f64 {
    let lse = logsumexp(x);
    for v in x.iter_mut() {
        *v = if lse == f64::NEG_INFINITY {
            0.0
        } else {
            (*v - lse).exp()
        };
    }
    lse
}

/// Applies a mask to a row of logits: `x[j] = -inf` where `visible(j)` is false.
///
/// ```
/// let mut row = [1.0, 2.0, 3.0];
/// attn_ref::ops::apply_mask(&mut row, |j| j != 1);
/// assert_eq!(row, [1.0, f64::NEG_INFINITY, 3.0]);
/// ```
pub fn apply_mask(x: &mut [f64], visible: impl Fn(usize) -> bool) {
    for (j, v) in x.iter_mut().enumerate() {
        if !visible(j) {
            *v = f64::NEG_INFINITY;
        }
    }
}
