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

    /// Gathers this lane's `A` fragment; `at(m, k)` reads the logical element.
    fn load_a(lane: u32, at: impl Fn(usize, usize) -> Self::E) -> Self::A;
    /// Gathers this lane's `B` fragment; `at(k, n)` reads the logical element.
    fn load_b(lane: u32, at: impl Fn(usize, usize) -> Self::E) -> Self::B;
    /// `c += a · b`.
    fn mma(a: &Self::A, b: &Self::B, c: &mut Self::C);
}
