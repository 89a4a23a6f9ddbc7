//! The FMA atom: `C[M×8] += A[M×4] · B[4×8]` in plain `f32` fused multiply-adds, on every target.
//!
//! It is the reference implementation of the [`MmaAtom`] interface and the f32 path. Lane `l`
//! owns row `l / 4` of `C` and columns `l % 4` and `l % 4 + 4` (the same shape as NVIDIA's
//! `mma.sync` accumulator), so `M = WAVE / 4` and rows are reduced over lanes `l ^ 1`, `l ^ 2`.
//! `A` is replicated across the four lanes of a row (the other maps are bijections).
use super::MmaAtom;
use crate::arch::{WAVE, fma};
use crate::numeric::Element;
use core::marker::PhantomData;

/// Software matrix atom over element type `E`.
pub struct FmaAtom<E>(PhantomData<E>);

/// `K` of the FMA atom.
const FK: usize = 4;

impl<E: Element> MmaAtom for FmaAtom<E> {
    type E = E;
    const M: usize = WAVE as usize / 4;
    const N: usize = 8;
    const K: usize = FK;
    const A_VALS: usize = FK;
    const B_VALS: usize = 2 * FK;
    const C_VALS: usize = 2;
    const ROW_SLOTS: usize = 1;
    const ROW_XOR: &'static [u32] = &[1, 2];

    type A = [f32; FK];
    type B = [f32; 2 * FK];
    type C = [f32; 2];
    type Rows = [f32; 1];

    #[inline(always)]
    fn a_coord(lane: u32, v: usize) -> (usize, usize) {
        (lane as usize / 4, v)
    }
    #[inline(always)]
    fn b_coord(lane: u32, v: usize) -> (usize, usize) {
        (v / 2, lane as usize % 4 + 4 * (v % 2))
    }
    #[inline(always)]
    fn c_coord(lane: u32, v: usize) -> (usize, usize) {
        (lane as usize / 4, lane as usize % 4 + 4 * v)
    }
    #[inline(always)]
    fn row_slot(_v: usize) -> usize {
        0
    }
    // Both values sit in row lane / 4, columns lane % 4 and lane % 4 + 4: one key group.
    const KEY_GROUPS: usize = 1;
    #[inline(always)]
    fn key_group(_v: usize) -> usize {
        0
    }

    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // slice iterators would pin the fragment to scratch
    fn load_a(lane: u32, at: impl Fn(usize, usize) -> E) -> [f32; FK] {
        let mut a = [0.0; FK];
        for v in 0..FK {
            let (m, k) = Self::a_coord(lane, v);
            a[v] = at(m, k).to_f32();
        }
        a
    }
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // slice iterators would pin the fragment to scratch
    fn load_b(lane: u32, at: impl Fn(usize, usize) -> E) -> [f32; 2 * FK] {
        let mut b = [0.0; 2 * FK];
        for v in 0..2 * FK {
            let (k, n) = Self::b_coord(lane, v);
            b[v] = at(k, n).to_f32();
        }
        b
    }
    #[inline(always)]
    fn mma(a: &[f32; FK], b: &[f32; 2 * FK], c: &mut [f32; 2]) {
        for k in 0..FK {
            c[0] = fma(a[k], b[2 * k], c[0]);
            c[1] = fma(a[k], b[2 * k + 1], c[1]);
        }
    }
}
