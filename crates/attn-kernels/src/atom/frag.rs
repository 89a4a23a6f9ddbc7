//! Pieces shared by the hardware atoms: 16-bit input elements packed two to a 32-bit register,
//! and (on the host) the emulation of a matrix instruction through the emulated wave.
//!
//! Packing convention (the same on every target): value `2w` of a fragment lives in bits `0..16`
//! of register `w`, value `2w + 1` in bits `16..32`. That is PTX's `.f16x2`/`.bf16x2` order
//! (`a0` in the low half) and the element order of AMD's `<N x half>` / `<N x i16>` operands.
use crate::numeric::{Bf16, Element, F16};

/// A 16-bit input element of a matrix instruction (`f16` or `bf16`), carried as its bits.
pub trait Half: Element {
    /// `true` for bf16: selects the bf16 form of an instruction (folded at compile time).
    const IS_BF16: bool;
    /// The bit pattern.
    fn to_bits(self) -> u16;
    /// From a bit pattern.
    fn from_bits(bits: u16) -> Self;
    /// Rounds two `f32` to this type and packs them, `lo` in bits `0..16` (one instruction
    /// where the target has it).
    fn pack2(lo: f32, hi: f32) -> u32;
}

impl Half for F16 {
    const IS_BF16: bool = false;
    #[inline(always)]
    fn to_bits(self) -> u16 {
        self.0
    }
    #[inline(always)]
    fn from_bits(bits: u16) -> Self {
        F16(bits)
    }
    #[inline(always)]
    fn pack2(lo: f32, hi: f32) -> u32 {
        crate::arch::pack_f16x2(lo, hi)
    }
}

impl Half for Bf16 {
    const IS_BF16: bool = true;
    #[inline(always)]
    fn to_bits(self) -> u16 {
        self.0
    }
    #[inline(always)]
    fn from_bits(bits: u16) -> Self {
        Bf16(bits)
    }
    #[inline(always)]
    fn pack2(lo: f32, hi: f32) -> u32 {
        crate::arch::pack_bf16x2(lo, hi)
    }
}

/// Packs two values into one register: `lo` (the lower-indexed value) in bits `0..16`.
#[inline(always)]
pub fn pack<E: Half>(lo: E, hi: E) -> u32 {
    lo.to_bits() as u32 | (hi.to_bits() as u32) << 16
}

/// Value `v` of a packed fragment.
#[inline(always)]
pub fn unpack<E: Half, const W: usize>(words: &[u32; W], v: usize) -> E {
    E::from_bits((words[v / 2] >> (16 * (v % 2))) as u16)
}

/// Gathers a packed fragment of `2 * W` values through a lane map: value `v` of `lane` is
/// `at(coord(lane, v))`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // slice iterators would pin the fragment to scratch
pub fn load_packed<E: Half, const W: usize>(
    lane: u32,
    coord: impl Fn(u32, usize) -> (usize, usize),
    at: impl Fn(usize, usize) -> E,
) -> [u32; W] {
    let mut f = [0u32; W];
    for w in 0..W {
        let (r0, c0) = coord(lane, 2 * w);
        let (r1, c1) = coord(lane, 2 * w + 1);
        f[w] = pack(at(r0, c0), at(r1, c1));
    }
    f
}

/// The logical shape and lane maps of an atom, as the host emulation needs them.
#[cfg(not(gpu))]
pub(crate) struct Shape {
    /// Lanes of the instruction's wave.
    pub lanes: u32,
    /// Rows of `A` and `C`.
    pub m: usize,
    /// Columns of `B` and `C`.
    pub n: usize,
    /// The reduction dimension.
    pub k: usize,
    /// Lane map of `A` (`(m, k)`).
    pub a_coord: fn(u32, usize) -> (usize, usize),
    /// Lane map of `B` (`(k, n)`).
    pub b_coord: fn(u32, usize) -> (usize, usize),
    /// Lane map of `C` (`(m, n)`).
    pub c_coord: fn(u32, usize) -> (usize, usize),
}

/// Gathers the full `rows × cols` tile held by a packed fragment across the emulated wave, one
/// indexed shuffle per register and source lane. Replicated entries (the same element held by
/// several lanes) must agree; every element must be held by some lane.
#[cfg(not(gpu))]
#[allow(clippy::needless_range_loop)] // the same indexing style as the GPU code
fn gather<E: Half, const W: usize>(
    lanes: u32,
    rows: usize,
    cols: usize,
    coord: fn(u32, usize) -> (usize, usize),
    frag: &[u32; W],
) -> Vec<f32> {
    let mut tile: Vec<Option<u16>> = vec![None; rows * cols];
    for src in 0..lanes {
        for w in 0..W {
            let x = crate::arch::shfl_idx_u32(frag[w], src);
            for h in 0..2 {
                let (r, c) = coord(src, 2 * w + h);
                let bits = (x >> (16 * h)) as u16;
                let slot = &mut tile[r * cols + c];
                assert!(
                    slot.is_none_or(|old| old == bits),
                    "lanes disagree on the replicated element ({r}, {c})"
                );
                *slot = Some(bits);
            }
        }
    }
    tile.into_iter()
        .map(|b| E::from_bits(b.expect("an operand element is held by no lane")).to_f32())
        .collect()
}

/// Host emulation of one matrix instruction: gathers `A` and `B` from every lane of the emulated
/// wave through the lane maps, then computes this lane's `C` values with `f32` FMAs in `k` order
/// (products of 16-bit inputs are exact in `f32`). All lanes of the wave must call it together.
#[cfg(not(gpu))]
#[allow(clippy::needless_range_loop)] // the same indexing style as the GPU code
pub(crate) fn emulate<E: Half, const AW: usize, const BW: usize, const CV: usize>(
    s: &Shape,
    a: &[u32; AW],
    b: &[u32; BW],
    c: &mut [f32; CV],
) {
    use crate::arch::{WAVE, fma, lane_id};
    assert_eq!(
        WAVE, s.lanes,
        "this atom needs a {}-lane wave; the host emulates {WAVE} (feature `host-wave64`)",
        s.lanes
    );
    let ta = gather::<E, AW>(s.lanes, s.m, s.k, s.a_coord, a);
    let tb = gather::<E, BW>(s.lanes, s.k, s.n, s.b_coord, b);
    let lane = lane_id();
    for v in 0..CV {
        let (m, n) = (s.c_coord)(lane, v);
        let mut acc = c[v];
        for k in 0..s.k {
            acc = fma(ta[m * s.k + k], tb[k * s.n + n], acc);
        }
        c[v] = acc;
    }
}
