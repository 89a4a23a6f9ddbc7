//! Storage element types and their conversions to the `f32` compute type.
use crate::arch::cvt;
use attn_abi::DType;

/// An element type of `q`, `k`, `v`, `out`: stored in memory as itself, computed in `f32`.
pub trait Element: Copy + 'static {
    /// The runtime tag of this type.
    const DTYPE: DType;
    /// Zero.
    const ZERO: Self;
    /// Widens to `f32` (exact for every supported type).
    fn to_f32(self) -> f32;
    /// Rounds an `f32` to this type (round to nearest even).
    fn from_f32(x: f32) -> Self;
}

/// IEEE binary16, carried as its bit pattern.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct F16(pub u16);

/// bfloat16, carried as its bit pattern.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bf16(pub u16);

impl Element for F16 {
    const DTYPE: DType = DType::F16;
    const ZERO: Self = F16(0);
    #[inline(always)]
    fn to_f32(self) -> f32 {
        cvt::f16_to_f32(self.0)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        F16(cvt::f32_to_f16(x))
    }
}

impl Element for Bf16 {
    const DTYPE: DType = DType::Bf16;
    const ZERO: Self = Bf16(0);
    #[inline(always)]
    fn to_f32(self) -> f32 {
        cvt::bf16_to_f32(self.0)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        Bf16(cvt::f32_to_bf16(x))
    }
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    const ZERO: Self = 0.0;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
}

/// `ln(2)`: converts a log2-domain log-sum-exp to the natural log.
pub const LN_2: f32 = core::f32::consts::LN_2;
