//! Element types and rounding.

use half::{bf16, f16};

/// Element type of `q`, `k`, `v`, `out` (and optionally the bias).
///
/// The reference stores every tensor as `f32` values that are already rounded to their dtype, so a
/// value of dtype [`Dtype::F16`] is an `f32` that is exactly representable in IEEE binary16.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// IEEE 754 binary16.
    F16,
    /// bfloat16 (8 exponent bits, 7 mantissa bits).
    Bf16,
    /// IEEE 754 binary32.
    F32,
}

impl Dtype {
    /// Every dtype, in a fixed order.
    pub const ALL: [Dtype; 3] = [Dtype::F16, Dtype::Bf16, Dtype::F32];

    /// Rounds `x` to the nearest value of this dtype (round to nearest even), returned as `f32`.
    ///
    /// ```
    /// use attn_ref::Dtype;
    /// assert_eq!(Dtype::F16.round(1.0 + 1e-4), 1.0);
    /// assert_eq!(Dtype::Bf16.round(1.0 + 1e-3), 1.0);
    /// assert_eq!(Dtype::F32.round(1.0 + 1e-4), 1.0 + 1e-4);
    /// ```
    #[inline]
    pub fn round(self, x: f32) -> f32 {
        match self {
            Dtype::F16 => f16::from_f32(x).to_f32(),
            Dtype::Bf16 => bf16::from_f32(x).to_f32(),
            Dtype::F32 => x,
        }
    }

    /// Rounds an `f64` once (no double rounding through `f32`) to this dtype.
    ///
    /// ```
    /// use attn_ref::Dtype;
    /// assert_eq!(Dtype::F16.round_f64(0.1), Dtype::F16.round(0.1));
    /// ```
    #[inline]
    pub fn round_f64(self, x: f64) -> f32 {
        match self {
            Dtype::F16 => f16::from_f64(x).to_f32(),
            Dtype::Bf16 => bf16::from_f64(x).to_f32(),
            Dtype::F32 => x as f32,
        }
    }

    /// Unit roundoff (half the machine epsilon): the largest relative error of one rounding.
    ///
    /// ```
    /// use attn_ref::Dtype;
    /// assert_eq!(Dtype::F16.unit_roundoff(), 2f64.powi(-11));
    /// ```
    pub fn unit_roundoff(self) -> f64 {
        match self {
            Dtype::F16 => 2f64.powi(-11),
            Dtype::Bf16 => 2f64.powi(-8),
            Dtype::F32 => 2f64.powi(-24),
        }
    }

    /// Size of one element in bytes.
    pub fn size_bytes(self) -> usize {
        match self {
            Dtype::F16 | Dtype::Bf16 => 2,
            Dtype::F32 => 4,
        }
    }

    /// Short lowercase name (`"f16"`, `"bf16"`, `"f32"`).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
            Dtype::F32 => "f32",
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
