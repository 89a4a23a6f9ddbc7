//! The pass rule of semantics.md §6.
//!
//! A kernel output passes when `max|kernel - truth| <= RTOL_FACTOR * max|lowp - truth| + atol`, with
//! `atol = 1e-6 * max(1, max|truth|)`, no NaN/Inf where the truth is finite, and (for LSE) `-inf`
//! exactly where the truth is `-inf`.
//!
//! ```
//! use attn_ref::tolerance::check;
//! let truth = [1.0, 2.0, 3.0];
//! let lowp = [1.001f32, 2.0, 3.0];
//! assert!(check(&[1.0015, 2.0, 3.0], &truth, &lowp).passed());
//! let r = check(&[1.0, 2.0, 3.1], &truth, &lowp);
//! assert!(!r.passed());
//! assert_eq!(r.worst_index, Some(2));
//! println!("{r}");
//! ```

use std::fmt;

/// The kernel may be this many times noisier than the blocked low-precision reference.
pub const RTOL_FACTOR: f64 = 2.0;
/// Absolute slack, relative to `max(1, max|truth|)`.
pub const ATOL_REL: f64 = 1e-6;

/// Outcome of [`check`] / [`check_lse`].
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Name of the tensor, for messages (empty by default; see [`Report::named`]).
    pub name: String,
    /// Logical shape, to print the worst index as a multi-index (see [`Report::with_shape`]).
    pub shape: Option<Vec<usize>>,
    /// Number of elements compared.
    pub len: usize,
    /// `max|kernel - truth|` over elements where both are finite (the compared set).
    pub max_abs_err: f64,
    /// Index of that maximum.
    pub worst_index: Option<usize>,
    /// `(kernel, truth, lowp)` at the worst index.
    pub worst_values: Option<(f32, f64, f32)>,
    /// `max|lowp - truth|`, the noise baseline.
    pub lowp_err: f64,
    /// `max|truth|` over finite elements.
    pub max_abs_truth: f64,
    /// The allowed error: `RTOL_FACTOR * lowp_err + ATOL_REL * max(1, max_abs_truth)`.
    pub tolerance: f64,
    /// Number of elements where the kernel is NaN/Inf but the truth is finite (or, for LSE, where
    /// the kernel is not `-inf` but the truth is, or vice versa); the first such index is kept.
    pub nonfinite_mismatches: usize,
    /// First non-finite mismatch: `(index, kernel, truth)`.
    pub first_nonfinite: Option<(usize, f32, f64)>,
    /// Whether the lengths of the three slices agreed.
    pub lengths_match: bool,
    /// The worst few elements `(index, kernel, truth, |err|)`, largest error first.
    pub worst: Vec<(usize, f32, f64, f64)>,
}

impl Report {
    /// Whether the rule holds.
    pub fn passed(&self) -> bool {
        self.lengths_match && self.nonfinite_mismatches == 0 && self.max_abs_err <= self.tolerance
    }

    /// Sets the name shown by `Display`.
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// Sets the logical shape, so that indices print as multi-indices.
    pub fn with_shape(mut self, shape: &[usize]) -> Self {
        self.shape = Some(shape.to_vec());
        self
    }

    /// Panics with the report's `Display` when the rule fails.
    #[track_caller]
    pub fn assert_passed(&self) {
        assert!(self.passed(), "{self}");
    }

    /// `index` as a multi-index of [`Report::shape`] (or the flat index).
    pub fn multi_index(&self, index: usize) -> String {
        match &self.shape {
            None => format!("[{index}]"),
            Some(shape) => {
                let mut rest = index;
                let mut idx = vec![0; shape.len()];
                for d in (0..shape.len()).rev() {
                    let n = shape[d].max(1);
                    idx[d] = rest % n;
                    rest /= n;
                }
                format!("{idx:?}")
            }
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.name.is_empty() {
            "tensor"
        } else {
            &self.name
        };
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        if !self.lengths_match {
            return write!(f, "{verdict} {name}: kernel/truth/lowp lengths differ");
        }
        write!(
            f,
            "{verdict} {name} ({} elements): max|kernel - truth| = {:.3e} <= {:.3e} = {RTOL_FACTOR} * {:.3e} (lowp) + {:.1e} * max(1, {:.3e})",
            self.len, self.max_abs_err, self.tolerance, self.lowp_err, ATOL_REL, self.max_abs_truth
        )?;
        if let (Some(i), Some((k, t, l))) = (self.worst_index, self.worst_values) {
            write!(
                f,
                "\n  worst at {}: kernel {k:e}, truth {t:e}, lowp {l:e}",
                self.multi_index(i)
            )?;
        }
        if self.nonfinite_mismatches > 0 {
            let (i, k, t) = self.first_nonfinite.unwrap_or((0, 0.0, 0.0));
            write!(
                f,
                "\n  {} non-finite mismatches (NaN/Inf or -inf parity), first at {}: kernel {k}, truth {t}",
                self.nonfinite_mismatches,
                self.multi_index(i)
            )?;
        }
        if std::env::var("ATTN_TEST_PRINT").is_ok_and(|v| v == "1") {
            for &(i, k, t, e) in &self.worst {
                write!(
                    f,
                    "\n    {}: kernel {k:e} truth {t:e} err {e:.3e}",
                    self.multi_index(i)
                )?;
            }
        }
        Ok(())
    }
}

fn check_impl(kernel: &[f32], truth: &[f64], lowp: &[f32], lse: bool) -> Report {
    let lengths_match = kernel.len() == truth.len() && lowp.len() == truth.len();
    let mut r = Report {
        name: String::new(),
        shape: None,
        len: truth.len(),
        max_abs_err: 0.0,
        worst_index: None,
        worst_values: None,
        lowp_err: 0.0,
        max_abs_truth: 0.0,
        tolerance: 0.0,
        nonfinite_mismatches: 0,
        first_nonfinite: None,
        lengths_match,
        worst: Vec::new(),
    };
    if !lengths_match {
        return r;
    }
    const KEEP: usize = 10;
    for (idx, ((&k, &t), &l)) in kernel.iter().zip(truth).zip(lowp).enumerate() {
        let (k64, l64) = (k as f64, l as f64);
        let mismatch = if t.is_finite() {
            !k.is_finite()
        } else if lse && t == f64::NEG_INFINITY {
            k != f32::NEG_INFINITY
        } else {
            // A non-finite truth (not expected from finite inputs): require the same class.
            !(k64 == t || (k.is_nan() && t.is_nan()))
        };
        if mismatch {
            r.nonfinite_mismatches += 1;
            r.first_nonfinite.get_or_insert((idx, k, t));
            continue;
        }
        if !t.is_finite() {
            continue;
        }
        r.max_abs_truth = r.max_abs_truth.max(t.abs());
        if l.is_finite() {
            r.lowp_err = r.lowp_err.max((l64 - t).abs());
        }
        let e = (k64 - t).abs();
        if r.worst_index.is_none() || e > r.max_abs_err {
            r.max_abs_err = e;
            r.worst_index = Some(idx);
            r.worst_values = Some((k, t, l));
        }
        if r.worst.len() < KEEP || e > r.worst.last().map_or(0.0, |w| w.3) {
            r.worst.push((idx, k, t, e));
            r.worst.sort_by(|a, b| b.3.total_cmp(&a.3));
            r.worst.truncate(KEEP);
        }
    }
    r.tolerance = RTOL_FACTOR * r.lowp_err + ATOL_REL * r.max_abs_truth.max(1.0);
    r
}

/// The pass rule for an output tensor (`out`, `dq`, ...): `kernel` and `lowp` in their (rounded) f32
/// values, `truth` from the f64 reference, all in the same layout.
pub fn check(kernel: &[f32], truth: &[f64], lowp: &[f32]) -> Report {
    check_impl(kernel, truth, lowp, false)
}

/// The pass rule for LSE: as [`check`], and additionally the kernel must be `-inf` exactly where the truth
/// is `-inf` (rows with no visible key).
///
/// ```
/// use attn_ref::tolerance::check_lse;
/// let ninf = f64::NEG_INFINITY;
/// assert!(check_lse(&[f32::NEG_INFINITY, 1.0], &[ninf, 1.0], &[f32::NEG_INFINITY, 1.0]).passed());
/// assert!(!check_lse(&[-1e30, 1.0], &[ninf, 1.0], &[f32::NEG_INFINITY, 1.0]).passed());
/// assert!(!check_lse(&[f32::NEG_INFINITY, f32::NEG_INFINITY], &[ninf, 1.0], &[0.0, 1.0]).passed());
/// ```
pub fn check_lse(kernel: &[f32], truth: &[f64], lowp: &[f32]) -> Report {
    check_impl(kernel, truth, lowp, true)
}

/// Converts an `f64` slice to `f32` (to feed a second f64 result as `kernel` or `lowp`).
pub fn to_f32(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}
