//! Matrix-multiply atoms: one hardware (or software) instruction that computes `C += A·B` on an
//! `M×N×K` tile cooperatively across one wave, with its operand fragments and lane maps.
//!
//! The lane maps are plain functions, so the host can check that they cover their tiles and can
//! emulate an atom lane by lane. The forward pipeline is written once against [`MmaAtom`].
use crate::numeric::Element;
use core::ops::{Index, IndexMut};

pub mod cdna_mfma;
pub mod fma;
pub mod frag;
pub mod rdna3_wmma;
pub mod sm80_m16n8k16;

/// One matrix instruction executed by a whole wave: `C[M×N] += A[M×K] · B[K×N]`.
///
/// Fragment `v` of lane `lane` holds the logical element given by the `*_coord` maps.
pub trait MmaAtom {
    /// Input element type of `A` and `B`.
    type E: Element;
    /// Rows of `A` and `C`.
    const M: usize;
    /// Columns of `B` and `C`.
    const N: usize;
    /// The reduction dimension.
    const K: usize;
    /// Values of `A` per lane.
    const A_VALS: usize;
    /// Values of `B` per lane.
    const B_VALS: usize;
    /// Values of `C` per lane.
    const C_VALS: usize;
    /// Distinct rows of `C` per lane (`row_slot` maps a value to one of them).
    const ROW_SLOTS: usize;
    /// Butterfly masks that visit every lane holding the same `C` rows (row reductions).
    const ROW_XOR: &'static [u32];

    /// Per-lane `A` fragment.
    type A: Copy;
    /// Per-lane `B` fragment.
    type B: Copy;
    /// Per-lane `C` accumulator fragment (`C_VALS` f32 values).
    type C: Copy + Default + Index<usize, Output = f32> + IndexMut<usize>;
    /// Per-lane row statistics (`ROW_SLOTS` f32 values).
    type Rows: Copy + Default + Index<usize, Output = f32> + IndexMut<usize>;

    /// `(row m, col k)` of `A` held in value `v` of `lane`.
    fn a_coord(lane: u32, v: usize) -> (usize, usize);
    /// `(row k, col n)` of `B` held in value `v` of `lane`.
    fn b_coord(lane: u32, v: usize) -> (usize, usize);
    /// `(row m, col n)` of `C` held in value `v` of `lane`.
    fn c_coord(lane: u32, v: usize) -> (usize, usize);
    /// Which of the lane's `ROW_SLOTS` rows value `v` of `C` belongs to.
    fn row_slot(v: usize) -> usize;

    /// Groups of a lane's `C` values that share one row and one aligned 8-key column group
    /// (`col / 8`), for every lane: the values one Philox draw (8 keys of one row, semantics.md
    /// §4) serves. [`MmaAtom::key_group`] maps a value to its group, independently of the lane.
    /// The default, one group per value, is always valid; atoms override it to share draws.
    const KEY_GROUPS: usize = Self::C_VALS;
    /// The key group of value `v` of `C` (see [`MmaAtom::KEY_GROUPS`]).
    #[inline(always)]
    fn key_group(v: usize) -> usize {
        v
    }

    /// Gathers this lane's `A` fragment; `at(m, k)` reads the logical element.
    fn load_a(lane: u32, at: impl Fn(usize, usize) -> Self::E) -> Self::A;
    /// Gathers this lane's `B` fragment; `at(k, n)` reads the logical element.
    fn load_b(lane: u32, at: impl Fn(usize, usize) -> Self::E) -> Self::B;
    /// `c += a · b`.
    fn mma(a: &Self::A, b: &Self::B, c: &mut Self::C);

    /// Whether [`MmaAtom::p_to_a`] builds `A` fragments from `C` fragments in registers (the
    /// accumulator and operand layouts line up); otherwise P goes through shared memory.
    const P_IN_REGISTERS: bool = false;

    /// The `A` fragment of columns `kk·K .. (kk+1)·K` of a `[M, TN·N]` tile held as `TN`
    /// accumulator fragments, rounded to `E` (only called when `P_IN_REGISTERS`).
    #[inline(always)]
    fn p_to_a<const TN: usize>(_s: &[Self::C; TN], _kk: usize) -> Self::A {
        unreachable!("p_to_a on an atom whose accumulator does not map onto its A operand")
    }

    /// `A` fragment of the `[M, K]` shared-memory tile at `base` (row stride `stride` elements).
    ///
    /// # Safety
    /// `base + m * stride + k` is readable shared memory for `m < M`, `k < K`.
    #[inline(always)]
    unsafe fn load_a_smem(lane: u32, base: *const Self::E, stride: usize) -> Self::A {
        // SAFETY: in bounds by the caller's contract.
        Self::load_a(lane, move |m, k| unsafe { *base.add(m * stride + k) })
    }

    /// `B` fragment of a `[K, N]` operand stored transposed, `[N, K]` (rows are `n`): the K tile
    /// of `Q·Kᵀ`.
    ///
    /// # Safety
    /// `base + n * stride + k` is readable shared memory for `n < N`, `k < K`.
    #[inline(always)]
    unsafe fn load_b_nk_smem(lane: u32, base: *const Self::E, stride: usize) -> Self::B {
        // SAFETY: in bounds by the caller's contract.
        Self::load_b(lane, move |k, n| unsafe { *base.add(n * stride + k) })
    }

    /// `B` fragment of a `[K, N]` operand stored as is (rows are `k`): the V tile of `P·V`.
    ///
    /// # Safety
    /// `base + k * stride + n` is readable shared memory for `k < K`, `n < N`.
    #[inline(always)]
    unsafe fn load_b_kn_smem(lane: u32, base: *const Self::E, stride: usize) -> Self::B {
        // SAFETY: in bounds by the caller's contract.
        Self::load_b(lane, move |k, n| unsafe { *base.add(k * stride + n) })
    }
}

/// The family of the target this crate is being compiled for, and its native matrix atom for
/// 16-bit inputs. (The host build emulates NVIDIA's atom, or CDNA's under `host-wave64`.)
#[cfg(target_arch = "nvptx64")]
mod native {
    /// This target's family.
    #[cfg(target_feature = "sm_90a")]
    pub const FAMILY: crate::fwd::policy::Family = crate::fwd::policy::Family::Sm90;
    /// This target's family.
    #[cfg(not(target_feature = "sm_90a"))]
    pub const FAMILY: crate::fwd::policy::Family = crate::fwd::policy::Family::Sm80;
    /// This target's matrix atom.
    pub type Native<E> = super::sm80_m16n8k16::Sm80M16N8K16<E>;
}
#[cfg(all(target_arch = "amdgpu", gfx9))]
mod native {
    /// This target's family.
    pub const FAMILY: crate::fwd::policy::Family = crate::fwd::policy::Family::Cdna;
    /// This target's matrix atom.
    pub type Native<E> = super::cdna_mfma::CdnaMfma32x32x8<E>;
}
#[cfg(all(target_arch = "amdgpu", gfx11))]
mod native {
    /// This target's family.
    pub const FAMILY: crate::fwd::policy::Family = crate::fwd::policy::Family::Rdna3;
    /// This target's matrix atom.
    pub type Native<E> = super::rdna3_wmma::Rdna3Wmma16x16x16<E>;
}
#[cfg(all(not(gpu), not(feature = "host-wave64")))]
mod native {
    /// This target's family.
    pub const FAMILY: crate::fwd::policy::Family = crate::fwd::policy::Family::Sm80;
    /// This target's matrix atom.
    pub type Native<E> = super::sm80_m16n8k16::Sm80M16N8K16<E>;
}
#[cfg(all(not(gpu), feature = "host-wave64"))]
mod native {
    /// This target's family.
    pub const FAMILY: crate::fwd::policy::Family = crate::fwd::policy::Family::Cdna;
    /// This target's matrix atom.
    pub type Native<E> = super::cdna_mfma::CdnaMfma32x32x8<E>;
}
pub use native::{FAMILY, Native};
