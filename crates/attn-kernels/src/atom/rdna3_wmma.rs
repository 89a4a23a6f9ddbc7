//! AMD RDNA3 (gfx1100) `v_wmma_f32_16x16x16_f16` / `v_wmma_f32_16x16x16_bf16` in wave32:
//! `C[16×16] += A[16×16] · B[16×16]`, f32 accumulation, issued with the operands swapped so that
//! each lane owns one row of C.
//!
//! The hardware computes `D[i][j] = Σ_k HA[i][k]·HB[k][j] + C` with, in wave32 (RDNA3 ISA §7.9
//! "Wave Matrix Multiply-Accumulate"; AMD GPUOpen "How to accelerate AI applications on RDNA 3
//! using WMMA"; LLVM's `llvm.amdgcn.wmma.f32.16x16x16.f16` takes `<16 x half>` and returns
//! `<8 x float>` in wave32):
//!
//! ```text
//! HA[i][k]: lanes i and i + 16, value k        (16 halves per lane; lanes 16-31 replicate 0-15)
//! HB[k][j]: lanes j and j + 16, value k        (likewise replicated)
//! D[i][j]:  lane j + 16·(i % 2), value i / 2   (lane l, value v: i = 2v + l / 16, j = l % 16)
//! ```
//!
//! Issued as written, each lane would hold one column of `D` and eight of its rows (8 row slots,
//! 4 butterfly steps each for a reduction over the keys of S = Q·Kᵀ). Feeding `HA = Bᵀ`,
//! `HB = Aᵀ` gives `D = (A·B)ᵀ`: lane `l` holds logical row `m = l % 16` of `C` and its 8
//! columns of one parity, the other 8 sit in lane `l ^ 16` (`ROW_XOR = [16]`, `ROW_SLOTS = 1`).
//!
//! Logical maps (this atom, after the swap):
//!
//! | operand | per lane | value `v` holds |
//! |---|---|---|
//! | `A` (16×16) | 8 × b32 = 16 halves | `(m, k) = (l % 16, v)` (lanes `l`, `l ^ 16` hold the same) |
//! | `B` (16×16) | 8 × b32 = 16 halves | `(k, n) = (v, l % 16)` (likewise) |
//! | `C` (16×16) | 8 × f32 | `(m, n) = (l % 16, 2v + l / 16)` |
//!
//! The intrinsic part is compiled under `cfg(all(target_arch = "amdgpu", gfx11))` and requires
//! wave32 (the default on gfx1100; the `<8 x float>` signature is the wave32 one). On the host,
//! [`MmaAtom::mma`] is an emulation over the (default, 32-lane) emulated wave.
#[cfg(any(all(target_arch = "amdgpu", gfx11), not(gpu)))]
use super::{
    MmaAtom,
    frag::{Half, load_packed},
};
use core::marker::PhantomData;

/// `v_wmma_f32_16x16x16_{f16,bf16}` (wave32) for `E` in [`F16`](crate::numeric::F16),
/// [`Bf16`](crate::numeric::Bf16), operands swapped (one row of `C` per lane).
pub struct Rdna3Wmma16x16x16<E>(PhantomData<E>);

/// Lanes of the instruction (one wave32).
pub const LANES: u32 = 32;
/// Rows of `A` and `C`.
pub const M: usize = 16;
/// Columns of `B` and `C`.
pub const N: usize = 16;
/// The reduction dimension.
pub const K: usize = 16;
/// 16-bit values of `A` per lane (in 8 registers).
pub const A_VALS: usize = 16;
/// 16-bit values of `B` per lane (in 8 registers).
pub const B_VALS: usize = 16;
/// f32 values of `C` per lane.
pub const C_VALS: usize = 8;
/// Rows of `C` per lane.
pub const ROW_SLOTS: usize = 1;
/// Butterfly masks over the lanes that share a row of `C`.
pub const ROW_XOR: [u32; 1] = [16];

/// `(row m, col k)` of `A` held in value `v` of `lane` (lanes `l` and `l ^ 16` agree).
#[inline(always)]
pub const fn a_coord(lane: u32, v: usize) -> (usize, usize) {
    ((lane % 16) as usize, v)
}

/// `(row k, col n)` of `B` held in value `v` of `lane` (lanes `l` and `l ^ 16` agree).
#[inline(always)]
pub const fn b_coord(lane: u32, v: usize) -> (usize, usize) {
    (v, (lane % 16) as usize)
}

/// `(row m, col n)` of `C` held in value `v` of `lane`.
#[inline(always)]
pub const fn c_coord(lane: u32, v: usize) -> (usize, usize) {
    ((lane % 16) as usize, 2 * v + (lane / 16) as usize)
}

/// Every value of `C` in a lane belongs to its single row.
#[inline(always)]
pub const fn row_slot(_v: usize) -> usize {
    0
}

#[cfg(any(all(target_arch = "amdgpu", gfx11), not(gpu)))]
impl<E: Half> MmaAtom for Rdna3Wmma16x16x16<E> {
    type E = E;
    const M: usize = M;
    const N: usize = N;
    const K: usize = K;
    const A_VALS: usize = A_VALS;
    const B_VALS: usize = B_VALS;
    const C_VALS: usize = C_VALS;
    const ROW_SLOTS: usize = ROW_SLOTS;
    const ROW_XOR: &'static [u32] = &ROW_XOR;

    type A = [u32; 8];
    type B = [u32; 8];
    type C = [f32; 8];
    type Rows = [f32; 1];

    #[inline(always)]
    fn a_coord(lane: u32, v: usize) -> (usize, usize) {
        a_coord(lane, v)
    }
    #[inline(always)]
    fn b_coord(lane: u32, v: usize) -> (usize, usize) {
        b_coord(lane, v)
    }
    #[inline(always)]
    fn c_coord(lane: u32, v: usize) -> (usize, usize) {
        c_coord(lane, v)
    }
    #[inline(always)]
    fn row_slot(v: usize) -> usize {
        row_slot(v)
    }
    // One row per lane; value v holds column 2v + lane / 16, in key group v / 4.
    const KEY_GROUPS: usize = 2;
    #[inline(always)]
    fn key_group(v: usize) -> usize {
        v / 4
    }

    #[inline(always)]
    fn load_a(lane: u32, at: impl Fn(usize, usize) -> E) -> [u32; 8] {
        load_packed(lane, a_coord, at)
    }
    #[inline(always)]
    fn load_b(lane: u32, at: impl Fn(usize, usize) -> E) -> [u32; 8] {
        load_packed(lane, b_coord, at)
    }

    #[inline(always)]
    fn mma(a: &[u32; 8], b: &[u32; 8], c: &mut [f32; 8]) {
        #[cfg(all(target_arch = "amdgpu", gfx11))]
        hw::mma::<E>(a, b, c);
        #[cfg(not(gpu))]
        super::frag::emulate::<E, 8, 8, 8>(&SHAPE, a, b, c);
    }
}

/// The atom's shape for the host emulation.
#[cfg(not(gpu))]
const SHAPE: super::frag::Shape = super::frag::Shape {
    lanes: LANES,
    m: M,
    n: N,
    k: K,
    a_coord,
    b_coord,
    c_coord,
};

/// One `mma` on fragments read from `buf` (`[A (8 words), B (8 words), C (8 f32)]` per lane,
/// lane-major), result written back over `C`. Only for disassembly probes.
///
/// # Safety
///
/// `buf` must address `32 × 24` readable and writable `u32` words.
#[doc(hidden)]
#[cfg(any(all(target_arch = "amdgpu", gfx11), not(gpu)))]
#[inline(always)]
#[allow(clippy::needless_range_loop)]
pub unsafe fn probe<E: Half>(buf: u64) {
    let p = (buf as *mut u32).wrapping_add(crate::arch::lane_id() as usize * 24);
    // SAFETY: the caller provides 24 words per lane.
    unsafe {
        let mut a = [0u32; 8];
        let mut b = [0u32; 8];
        let mut c = [0.0f32; 8];
        for v in 0..8 {
            a[v] = *p.add(v);
            b[v] = *p.add(8 + v);
            c[v] = f32::from_bits(*p.add(16 + v));
        }
        <Rdna3Wmma16x16x16<E> as MmaAtom>::mma(&a, &b, &mut c);
        for v in 0..8 {
            *p.add(16 + v) = c[v].to_bits();
        }
    }
}

/// The LLVM WMMA intrinsics (gfx11, wave32).
#[cfg(all(target_arch = "amdgpu", gfx11))]
mod hw {
    use crate::atom::frag::Half;

    const _: () = assert!(crate::arch::WAVE == 32, "this WMMA atom needs wave32");

    /// `<16 x half>`.
    #[repr(simd)]
    #[derive(Clone, Copy)]
    struct F16x16([f16; 16]);
    /// `<16 x i16>` (bf16 bit patterns).
    #[repr(simd)]
    #[derive(Clone, Copy)]
    struct I16x16([i16; 16]);
    /// `<8 x float>`.
    #[repr(simd)]
    #[derive(Clone, Copy)]
    struct F32x8([f32; 8]);

    #[allow(improper_ctypes)]
    unsafe extern "unadjusted" {
        #[link_name = "llvm.amdgcn.wmma.f32.16x16x16.f16"]
        fn wmma_f32_16x16x16_f16(a: F16x16, b: F16x16, c: F32x8) -> F32x8;
        #[link_name = "llvm.amdgcn.wmma.f32.16x16x16.bf16"]
        fn wmma_f32_16x16x16_bf16(a: I16x16, b: I16x16, c: F32x8) -> F32x8;
    }

    /// `c += a·b` (logical operands; the hardware gets `b` as its A and `a` as its B).
    #[inline(always)]
    pub(super) fn mma<E: Half>(a: &[u32; 8], b: &[u32; 8], c: &mut [f32; 8]) {
        if E::IS_BF16 {
            mma_bf16(a, b, c)
        } else {
            mma_f16(a, b, c)
        }
    }

    /// `c += a·b`, f16 inputs.
    #[doc(alias = "v_wmma_f32_16x16x16_f16")]
    #[doc(alias = "llvm.amdgcn.wmma.f32.16x16x16.f16")]
    #[inline(always)]
    fn mma_f16(a: &[u32; 8], b: &[u32; 8], c: &mut [f32; 8]) {
        // SAFETY: the transmutes reinterpret plain data of equal size (32 bytes; every bit
        // pattern is valid); the instruction exists on the gfx11 targets this cfg selects, in
        // wave32 (asserted above), and all lanes execute it (uniform control flow).
        unsafe {
            let d = wmma_f32_16x16x16_f16(
                core::mem::transmute::<[u32; 8], F16x16>(*b),
                core::mem::transmute::<[u32; 8], F16x16>(*a),
                core::mem::transmute::<[f32; 8], F32x8>(*c),
            );
            *c = core::mem::transmute::<F32x8, [f32; 8]>(d);
        }
    }

    /// `c += a·b`, bf16 inputs.
    #[doc(alias = "v_wmma_f32_16x16x16_bf16")]
    #[doc(alias = "llvm.amdgcn.wmma.f32.16x16x16.bf16")]
    #[inline(always)]
    fn mma_bf16(a: &[u32; 8], b: &[u32; 8], c: &mut [f32; 8]) {
        // SAFETY: as for `mma_f16`.
        unsafe {
            let d = wmma_f32_16x16x16_bf16(
                core::mem::transmute::<[u32; 8], I16x16>(*b),
                core::mem::transmute::<[u32; 8], I16x16>(*a),
                core::mem::transmute::<[f32; 8], F32x8>(*c),
            );
            *c = core::mem::transmute::<F32x8, [f32; 8]>(d);
        }
    }
}
