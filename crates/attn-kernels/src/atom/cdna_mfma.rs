//! AMD CDNA2/3 (gfx90a, gfx942) `v_mfma_f32_32x32x8_f16` / `v_mfma_f32_32x32x8_bf16` (gfx90a
//! spells the latter `v_mfma_f32_32x32x8bf16_1k`): `C[32×32] += A[32×8] · B[8×32]` over one
//! wave64, f32 accumulation, issued with the operands swapped so that each lane owns one row of C.
//!
//! **Why 32x32x8, and why swapped.** The hardware computes `D[i][j] = Σ_k HA[i][k]·HB[k][j] + C`
//! with (AMD Matrix Instruction Calculator, `v_mfma_f32_32x32x8f16`; CK's
//! `WarpGemmAttributeMfmaImplF16F16F32M32N32K8`):
//!
//! ```text
//! HA[i][k]: lane i + 32·(k / 4), value k % 4          (lane l: i = l % 32, k = 4·(l / 32) + v)
//! HB[k][j]: lane j + 32·(k / 4), value k % 4          (lane l: j = l % 32, k = 4·(l / 32) + v)
//! D[i][j]:  lane j + 32·((i / 4) % 2), value i % 4 + 4·(i / 8)
//!                                         (lane l, value v: i = 8·(v / 4) + 4·(l / 32) + v % 4)
//! ```
//!
//! So every lane holds one *column* `j` of `D` and 16 of its 32 rows. Issued as written, a row
//! reduction of S = Q·Kᵀ (over keys) would need 16 row slots and five butterfly steps each.
//! Feeding `HA = Bᵀ`, `HB = Aᵀ` instead gives `D = (A·B)ᵀ`: lane `l` holds logical row
//! `m = l % 32` of `C` and 16 of its 32 columns, the other 16 sit in lane `l ^ 32`. A row reduction
//! is then 15 in-lane operations and **one** cross-lane step (`ROW_XOR = [32]`, `ROW_SLOTS = 1`);
//! this is ck_tile's "TransposedCDistribution" used by its FlashAttention forward on gfx9.
//! `16x16x16` runs at the same rate (8 passes for 4096 MACs against 16 passes for 8192), but it
//! needs twice the A/B operand traffic per MAC (each lane feeds 8 halves for 4096 MACs instead of
//! 8192) and, swapped, two cross-lane steps per row reduction (`ROW_XOR = [16, 32]`).
//!
//! Logical maps (this atom, after the swap):
//!
//! | operand | per lane | value `v` holds |
//! |---|---|---|
//! | `A` (32×8) | 2 × b32 = 4 halves | `(m, k) = (l % 32, 4·(l / 32) + v)` |
//! | `B` (8×32) | 2 × b32 = 4 halves | `(k, n) = (4·(l / 32) + v, l % 32)` |
//! | `C` (32×32) | 16 × f32 | `(m, n) = (l % 32, 8·(v / 4) + 4·(l / 32) + v % 4)` |
//!
//! The instruction exists only on gfx9 (CDNA); the intrinsic part is compiled under
//! `cfg(all(target_arch = "amdgpu", gfx9))` (the xtask passes `--cfg gfx9` for gfx90a/gfx942; an
//! MFMA intrinsic on gfx1100 is an LLVM abort). On the host, [`MmaAtom::mma`] is an emulation over
//! a 64-lane emulated wave (feature `host-wave64`).
#[cfg(any(all(target_arch = "amdgpu", gfx9), not(gpu)))]
use super::{
    MmaAtom,
    frag::{Half, load_packed},
};
use core::marker::PhantomData;

/// `v_mfma_f32_32x32x8_{f16,bf16}` for `E` in [`F16`](crate::numeric::F16),
/// [`Bf16`](crate::numeric::Bf16), operands swapped (one row of `C` per lane).
pub struct CdnaMfma32x32x8<E>(PhantomData<E>);

/// Lanes of the instruction (one wave64).
pub const LANES: u32 = 64;
/// Rows of `A` and `C`.
pub const M: usize = 32;
/// Columns of `B` and `C`.
pub const N: usize = 32;
/// The reduction dimension.
pub const K: usize = 8;
/// 16-bit values of `A` per lane (in 2 registers).
pub const A_VALS: usize = 4;
/// 16-bit values of `B` per lane (in 2 registers).
pub const B_VALS: usize = 4;
/// f32 values of `C` per lane.
pub const C_VALS: usize = 16;
/// Rows of `C` per lane.
pub const ROW_SLOTS: usize = 1;
/// Butterfly masks over the lanes that share a row of `C`.
pub const ROW_XOR: [u32; 1] = [32];

/// `(row m, col k)` of `A` held in value `v` of `lane`.
#[inline(always)]
pub const fn a_coord(lane: u32, v: usize) -> (usize, usize) {
    ((lane % 32) as usize, 4 * (lane / 32) as usize + v)
}

/// `(row k, col n)` of `B` held in value `v` of `lane`.
#[inline(always)]
pub const fn b_coord(lane: u32, v: usize) -> (usize, usize) {
    (4 * (lane / 32) as usize + v, (lane % 32) as usize)
}

/// `(row m, col n)` of `C` held in value `v` of `lane`.
#[inline(always)]
pub const fn c_coord(lane: u32, v: usize) -> (usize, usize) {
    (
        (lane % 32) as usize,
        8 * (v / 4) + 4 * (lane / 32) as usize + v % 4,
    )
}

/// Every value of `C` in a lane belongs to its single row.
#[inline(always)]
pub const fn row_slot(_v: usize) -> usize {
    0
}

#[cfg(any(all(target_arch = "amdgpu", gfx9), not(gpu)))]
impl<E: Half> MmaAtom for CdnaMfma32x32x8<E> {
    type E = E;
    const M: usize = M;
    const N: usize = N;
    const K: usize = K;
    const A_VALS: usize = A_VALS;
    const B_VALS: usize = B_VALS;
    const C_VALS: usize = C_VALS;
    const ROW_SLOTS: usize = ROW_SLOTS;
    const ROW_XOR: &'static [u32] = &ROW_XOR;

    type A = [u32; 2];
    type B = [u32; 2];
    type C = [f32; 16];
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
    // One row per lane; values 4g..4g+4 hold columns 8g + 4·(lane / 32) + 0..4.
    const KEY_GROUPS: usize = 4;
    #[inline(always)]
    fn key_group(v: usize) -> usize {
        v / 4
    }

    #[inline(always)]
    fn load_a(lane: u32, at: impl Fn(usize, usize) -> E) -> [u32; 2] {
        load_packed(lane, a_coord, at)
    }
    #[inline(always)]
    fn load_b(lane: u32, at: impl Fn(usize, usize) -> E) -> [u32; 2] {
        load_packed(lane, b_coord, at)
    }

    #[inline(always)]
    fn mma(a: &[u32; 2], b: &[u32; 2], c: &mut [f32; 16]) {
        #[cfg(all(target_arch = "amdgpu", gfx9))]
        hw::mma::<E>(a, b, c);
        #[cfg(not(gpu))]
        super::frag::emulate::<E, 2, 2, 16>(&SHAPE, a, b, c);
    }

    /// Issued transposed, each lane owns one row of `C`, and the 4 consecutive columns an `A`
    /// fragment needs (`8kk + 4·(lane/32) + v`) are values `4·(kk % 4) + v` of fragment `kk / 4`.
    const P_IN_REGISTERS: bool = true;

    #[inline(always)]
    fn p_to_a<const TN: usize>(s: &[[f32; 16]; TN], kk: usize) -> [u32; 2] {
        let (f, o) = (&s[kk / 4], 4 * (kk % 4));
        let p = E::pack2;
        [p(f[o], f[o + 1]), p(f[o + 2], f[o + 3])]
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

/// One `mma` on fragments read from `buf` (`[A (2 words), B (2 words), C (16 f32)]` per lane,
/// lane-major), result written back over `C`. Only for disassembly probes.
///
/// # Safety
///
/// `buf` must address `64 × 20` readable and writable `u32` words.
#[doc(hidden)]
#[cfg(any(all(target_arch = "amdgpu", gfx9), not(gpu)))]
#[inline(always)]
#[allow(clippy::needless_range_loop)]
pub unsafe fn probe<E: Half>(buf: u64) {
    let p = (buf as *mut u32).wrapping_add(crate::arch::lane_id() as usize * 20);
    // SAFETY: the caller provides 20 words per lane.
    unsafe {
        let a = [*p, *p.add(1)];
        let b = [*p.add(2), *p.add(3)];
        let mut c = [0.0f32; 16];
        for v in 0..16 {
            c[v] = f32::from_bits(*p.add(4 + v));
        }
        <CdnaMfma32x32x8<E> as MmaAtom>::mma(&a, &b, &mut c);
        for v in 0..16 {
            *p.add(4 + v) = c[v].to_bits();
        }
    }
}

/// The LLVM MFMA intrinsics (gfx90a, gfx942).
#[cfg(all(target_arch = "amdgpu", gfx9))]
mod hw {
    use crate::atom::frag::Half;

    const _: () = assert!(crate::arch::WAVE == 64, "MFMA needs wave64");

    /// `<4 x half>`.
    #[repr(simd)]
    #[derive(Clone, Copy)]
    struct F16x4([f16; 4]);
    /// `<4 x i16>` (bf16 bit patterns).
    #[repr(simd)]
    #[derive(Clone, Copy)]
    struct I16x4([i16; 4]);
    /// `<16 x float>`.
    #[repr(simd)]
    #[derive(Clone, Copy)]
    struct F32x16([f32; 16]);

    #[allow(improper_ctypes)]
    unsafe extern "unadjusted" {
        #[link_name = "llvm.amdgcn.mfma.f32.32x32x8f16"]
        fn mfma_f32_32x32x8f16(
            a: F16x4,
            b: F16x4,
            c: F32x16,
            cbsz: i32,
            abid: i32,
            blgp: i32,
        ) -> F32x16;
        #[link_name = "llvm.amdgcn.mfma.f32.32x32x8bf16.1k"]
        fn mfma_f32_32x32x8bf16_1k(
            a: I16x4,
            b: I16x4,
            c: F32x16,
            cbsz: i32,
            abid: i32,
            blgp: i32,
        ) -> F32x16;
    }

    /// `c += a·b` (logical operands; the hardware gets `b` as its A and `a` as its B).
    #[inline(always)]
    pub(super) fn mma<E: Half>(a: &[u32; 2], b: &[u32; 2], c: &mut [f32; 16]) {
        if E::IS_BF16 {
            mma_bf16(a, b, c)
        } else {
            mma_f16(a, b, c)
        }
    }

    /// `c += a·b`, f16 inputs.
    #[doc(alias = "v_mfma_f32_32x32x8_f16")]
    #[doc(alias = "v_mfma_f32_32x32x8f16")]
    #[doc(alias = "llvm.amdgcn.mfma.f32.32x32x8f16")]
    #[inline(always)]
    fn mma_f16(a: &[u32; 2], b: &[u32; 2], c: &mut [f32; 16]) {
        // SAFETY: the transmutes reinterpret plain data of equal size (8 and 64 bytes; every bit
        // pattern is valid); the instruction exists on every gfx9 target this cfg selects, all
        // lanes execute it (uniform control flow), and cbsz/abid/blgp = 0 is the plain form.
        unsafe {
            let d = mfma_f32_32x32x8f16(
                core::mem::transmute::<[u32; 2], F16x4>(*b),
                core::mem::transmute::<[u32; 2], F16x4>(*a),
                core::mem::transmute::<[f32; 16], F32x16>(*c),
                0,
                0,
                0,
            );
            *c = core::mem::transmute::<F32x16, [f32; 16]>(d);
        }
    }

    /// `c += a·b`, bf16 inputs.
    #[doc(alias = "v_mfma_f32_32x32x8_bf16")]
    #[doc(alias = "v_mfma_f32_32x32x8bf16_1k")]
    #[doc(alias = "llvm.amdgcn.mfma.f32.32x32x8bf16.1k")]
    #[inline(always)]
    fn mma_bf16(a: &[u32; 2], b: &[u32; 2], c: &mut [f32; 16]) {
        // SAFETY: as for `mma_f16`.
        unsafe {
            let d = mfma_f32_32x32x8bf16_1k(
                core::mem::transmute::<[u32; 2], I16x4>(*b),
                core::mem::transmute::<[u32; 2], I16x4>(*a),
                core::mem::transmute::<[f32; 16], F32x16>(*c),
                0,
                0,
                0,
            );
            *c = core::mem::transmute::<F32x16, [f32; 16]>(d);
        }
    }
}
