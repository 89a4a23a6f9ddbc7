//! NVIDIA `mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32` (sm_80 and up):
//! `C[16×8] += A[16×16] · B[16×8]` over one warp, f32 accumulation.
//!
//! Fragments (PTX ISA, "Matrix Fragments for `mma.m16n8k16` with floating point type"; the same
//! as CUTLASS's `SM80_16x8x16_F32F16F16F32_TN` in `cute/atom/mma_traits_sm80.hpp`), with
//! `g = lane >> 2` (groupID) and `t = lane % 4` (threadID_in_group):
//!
//! | operand | per lane | value `v` holds |
//! |---|---|---|
//! | `A` | 4 × b32 = 8 halves `a0..a7` | row `g + 8·((v >> 1) & 1)`, col `2t + (v & 1) + 8·(v >> 2)` |
//! | `B` | 2 × b32 = 4 halves `b0..b3` | row (k) `2t + (v & 1) + 8·(v >> 1)`, col (n) `g` |
//! | `C` | 4 × f32 `c0..c3` | row `g + 8·(v >> 1)`, col `2t + (v & 1)` |
//!
//! Each lane holds two rows of `C` (`g` and `g + 8`, [`row_slot`]`(v) = v >> 1`); a row is spread
//! over the 4 lanes of a group, so row reductions are the butterfly over `lane ^ 1`, `lane ^ 2`.
//!
//! The instruction is emitted through the NVVM intrinsics `llvm.nvvm.mma.m16n8k16.row.col.f32.f32`
//! (f16, `<2 x half>` operands) and `llvm.nvvm.mma.m16n8k16.row.col.bf16` (bf16, `i32` operands);
//! on the host, [`MmaAtom::mma`] is an emulation over the emulated warp.
#[cfg(any(target_arch = "nvptx64", not(gpu)))]
use super::{
    MmaAtom,
    frag::{Half, load_packed},
};
use core::marker::PhantomData;

/// `mma.sync.aligned.m16n8k16.row.col.f32.E.E.f32` for `E` in [`F16`](crate::numeric::F16),
/// [`Bf16`](crate::numeric::Bf16).
pub struct Sm80M16N8K16<E>(PhantomData<E>);

/// Lanes of the instruction (one warp).
pub const LANES: u32 = 32;
/// Rows of `A` and `C`.
pub const M: usize = 16;
/// Columns of `B` and `C`.
pub const N: usize = 8;
/// The reduction dimension.
pub const K: usize = 16;
/// 16-bit values of `A` per lane (in 4 registers).
pub const A_VALS: usize = 8;
/// 16-bit values of `B` per lane (in 2 registers).
pub const B_VALS: usize = 4;
/// f32 values of `C` per lane.
pub const C_VALS: usize = 4;
/// Rows of `C` per lane.
pub const ROW_SLOTS: usize = 2;
/// Butterfly masks over the lanes that share a row of `C`.
pub const ROW_XOR: [u32; 2] = [1, 2];

/// `(row m, col k)` of `A` held in value `v` (`a0..a7`) of `lane`.
#[inline(always)]
pub const fn a_coord(lane: u32, v: usize) -> (usize, usize) {
    let (g, t) = ((lane >> 2) as usize, (lane % 4) as usize);
    (g + 8 * ((v >> 1) & 1), 2 * t + (v & 1) + 8 * (v >> 2))
}

/// `(row k, col n)` of `B` held in value `v` (`b0..b3`) of `lane`.
#[inline(always)]
pub const fn b_coord(lane: u32, v: usize) -> (usize, usize) {
    let (g, t) = ((lane >> 2) as usize, (lane % 4) as usize);
    (2 * t + (v & 1) + 8 * (v >> 1), g)
}

/// `(row m, col n)` of `C` held in value `v` (`c0..c3`) of `lane`.
#[inline(always)]
pub const fn c_coord(lane: u32, v: usize) -> (usize, usize) {
    let (g, t) = ((lane >> 2) as usize, (lane % 4) as usize);
    (g + 8 * (v >> 1), 2 * t + (v & 1))
}

/// Which of the lane's two `C` rows (`g`, `g + 8`) value `v` belongs to.
#[inline(always)]
pub const fn row_slot(v: usize) -> usize {
    v >> 1
}

#[cfg(any(target_arch = "nvptx64", not(gpu)))]
impl<E: Half> MmaAtom for Sm80M16N8K16<E> {
    type E = E;
    const M: usize = M;
    const N: usize = N;
    const K: usize = K;
    const A_VALS: usize = A_VALS;
    const B_VALS: usize = B_VALS;
    const C_VALS: usize = C_VALS;
    const ROW_SLOTS: usize = ROW_SLOTS;
    const ROW_XOR: &'static [u32] = &ROW_XOR;

    type A = [u32; 4];
    type B = [u32; 2];
    type C = [f32; 4];
    type Rows = [f32; 2];

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
    // Values 0, 1 sit in row g, 2, 3 in row g + 8; all eight columns are one key group.
    const KEY_GROUPS: usize = 2;
    #[inline(always)]
    fn key_group(v: usize) -> usize {
        v >> 1
    }

    #[inline(always)]
    fn load_a(lane: u32, at: impl Fn(usize, usize) -> E) -> [u32; 4] {
        load_packed(lane, a_coord, at)
    }
    #[inline(always)]
    fn load_b(lane: u32, at: impl Fn(usize, usize) -> E) -> [u32; 2] {
        load_packed(lane, b_coord, at)
    }

    #[inline(always)]
    fn mma(a: &[u32; 4], b: &[u32; 2], c: &mut [f32; 4]) {
        #[cfg(target_arch = "nvptx64")]
        hw::mma::<E>(a, b, c);
        #[cfg(not(gpu))]
        super::frag::emulate::<E, 4, 2, 4>(&SHAPE, a, b, c);
    }

    /// Two adjacent `C` fragments (columns `16kk .. 16kk + 16`) are exactly one `A` fragment:
    /// `c0,c1 → a0,a1`, `c2,c3 → a2,a3` of the first and `a4..a7` of the second.
    const P_IN_REGISTERS: bool = true;

    #[inline(always)]
    fn p_to_a<const TN: usize>(s: &[[f32; 4]; TN], kk: usize) -> [u32; 4] {
        let (lo, hi) = (&s[2 * kk], &s[2 * kk + 1]);
        let p = E::pack2;
        [
            p(lo[0], lo[1]),
            p(lo[2], lo[3]),
            p(hi[0], hi[1]),
            p(hi[2], hi[3]),
        ]
    }

    #[cfg(target_arch = "nvptx64")]
    #[inline(always)]
    unsafe fn load_a_smem(lane: u32, base: *const E, stride: usize) -> [u32; 4] {
        // Lanes 8j..8j+7 address the rows of 8x8 matrix j: rows 0-7 / 8-15 (j % 2), columns
        // 0-7 / 8-15 (j / 2); matrix j lands in register j = a(2j), a(2j+1).
        let (j, r) = ((lane / 8) as usize, (lane % 8) as usize);
        // SAFETY: the row is inside the tile by the caller's contract; rows are 16-byte aligned.
        unsafe { hw::ldmatrix_x4(base.add((r + 8 * (j % 2)) * stride + 8 * (j / 2))) }
    }

    #[cfg(target_arch = "nvptx64")]
    #[inline(always)]
    unsafe fn load_b_nk_smem(lane: u32, base: *const E, stride: usize) -> [u32; 2] {
        // Rows are n: matrix 0 holds k 0-7, matrix 1 k 8-15; thread t receives row g = t/4,
        // columns 2(t%4), +1, which is b0,b1 (and b2,b3 from matrix 1).
        let (j, r) = (((lane / 8) % 2) as usize, (lane % 8) as usize);
        // SAFETY: as above.
        unsafe { hw::ldmatrix_x2(base.add(r * stride + 8 * j), false) }
    }

    #[cfg(target_arch = "nvptx64")]
    #[inline(always)]
    unsafe fn load_b_kn_smem(lane: u32, base: *const E, stride: usize) -> [u32; 2] {
        // Rows are k: matrix 0 is k 0-7, matrix 1 is k 8-15; `.trans` hands thread t the
        // elements (k = 2(t%4), 2(t%4)+1; n = t/4) of each, which is b0,b1 / b2,b3.
        let (j, r) = (((lane / 8) % 2) as usize, (lane % 8) as usize);
        // SAFETY: as above.
        unsafe { hw::ldmatrix_x2(base.add((r + 8 * j) * stride), true) }
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

/// One `mma` on fragments read from `buf` (`[A (4 words), B (2 words), C (4 f32)]` per lane,
/// lane-major), result written back over `C`. Only for disassembly probes.
///
/// # Safety
///
/// `buf` must address `32 × 10` readable and writable `u32` words.
#[doc(hidden)]
#[cfg(any(target_arch = "nvptx64", not(gpu)))]
#[inline(always)]
#[allow(clippy::needless_range_loop)]
pub unsafe fn probe<E: Half>(buf: u64) {
    let p = (buf as *mut u32).wrapping_add(crate::arch::lane_id() as usize * 10);
    // SAFETY: the caller provides 10 words per lane.
    unsafe {
        let a = [*p, *p.add(1), *p.add(2), *p.add(3)];
        let b = [*p.add(4), *p.add(5)];
        let mut c = [0.0f32; 4];
        for v in 0..4 {
            c[v] = f32::from_bits(*p.add(6 + v));
        }
        <Sm80M16N8K16<E> as MmaAtom>::mma(&a, &b, &mut c);
        for v in 0..4 {
            *p.add(6 + v) = c[v].to_bits();
        }
    }
}

/// The NVVM intrinsics, and `ldmatrix` (whose intrinsic takes an addrspace(3) pointer that Rust
/// cannot declare, so it is inline assembly).
#[cfg(target_arch = "nvptx64")]
mod hw {
    use crate::arch::smem_u32;

    /// Four 8x8 b16 matrices from shared memory (`ldmatrix.sync.aligned.m8n8.x4.shared.b16`).
    ///
    /// # Safety
    /// Each lane's `p` is a 16-byte aligned row of 8 b16 values in shared memory.
    #[doc(alias = "ldmatrix.sync.aligned.m8n8.x4.shared.b16")]
    #[inline(always)]
    pub(super) unsafe fn ldmatrix_x4<T>(p: *const T) -> [u32; 4] {
        let (r0, r1, r2, r3): (u32, u32, u32, u32);
        // SAFETY: forwarded from the caller; executed by the whole warp (uniform flow).
        unsafe {
            core::arch::asm!(
                "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {{{}, {}, {}, {}}}, [{}];",
                out(reg32) r0, out(reg32) r1, out(reg32) r2, out(reg32) r3,
                in(reg32) smem_u32(p),
                options(nostack, readonly)
            );
        }
        [r0, r1, r2, r3]
    }

    /// Two 8x8 b16 matrices (`ldmatrix…x2`, `.trans` when `trans`); lanes 0-15 give the rows.
    ///
    /// # Safety
    /// As [`ldmatrix_x4`].
    #[doc(alias = "ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16")]
    #[inline(always)]
    pub(super) unsafe fn ldmatrix_x2<T>(p: *const T, trans: bool) -> [u32; 2] {
        let (r0, r1): (u32, u32);
        // SAFETY: forwarded from the caller; executed by the whole warp (uniform flow).
        unsafe {
            if trans {
                core::arch::asm!(
                    "ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {{{}, {}}}, [{}];",
                    out(reg32) r0, out(reg32) r1, in(reg32) smem_u32(p),
                    options(nostack, readonly)
                );
            } else {
                core::arch::asm!(
                    "ldmatrix.sync.aligned.m8n8.x2.shared.b16 {{{}, {}}}, [{}];",
                    out(reg32) r0, out(reg32) r1, in(reg32) smem_u32(p),
                    options(nostack, readonly)
                );
            }
        }
        [r0, r1]
    }

    use crate::atom::frag::Half;
    use core::arch::nvptx::f16x2;

    #[allow(improper_ctypes)]
    unsafe extern "unadjusted" {
        #[link_name = "llvm.nvvm.mma.m16n8k16.row.col.f32.f32"]
        fn mma_m16n8k16_f16(
            a0: f16x2,
            a1: f16x2,
            a2: f16x2,
            a3: f16x2,
            b0: f16x2,
            b1: f16x2,
            c0: f32,
            c1: f32,
            c2: f32,
            c3: f32,
        ) -> (f32, f32, f32, f32);
        #[link_name = "llvm.nvvm.mma.m16n8k16.row.col.bf16"]
        fn mma_m16n8k16_bf16(
            a0: i32,
            a1: i32,
            a2: i32,
            a3: i32,
            b0: i32,
            b1: i32,
            c0: f32,
            c1: f32,
            c2: f32,
            c3: f32,
        ) -> (f32, f32, f32, f32);
    }

    /// Reinterprets a packed register as `<2 x half>`.
    #[inline(always)]
    fn h2(x: u32) -> f16x2 {
        // SAFETY: both are 4 bytes of plain data; every bit pattern is a valid pair of halves.
        unsafe { core::mem::transmute::<u32, f16x2>(x) }
    }

    /// `c += a·b` with the form of the instruction for `E`.
    #[inline(always)]
    pub(super) fn mma<E: Half>(a: &[u32; 4], b: &[u32; 2], c: &mut [f32; 4]) {
        if E::IS_BF16 {
            mma_bf16(a, b, c)
        } else {
            mma_f16(a, b, c)
        }
    }

    /// `c += a·b`, f16 inputs.
    #[doc(alias = "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32")]
    #[doc(alias = "llvm.nvvm.mma.m16n8k16.row.col.f32.f32")]
    #[inline(always)]
    fn mma_f16(a: &[u32; 4], b: &[u32; 2], c: &mut [f32; 4]) {
        // SAFETY: sm_80+ instruction (this module is compiled for NVPTX only, whose targets here
        // are sm_80 and sm_90a); the whole warp executes it (uniform control flow, as for every
        // `MmaAtom::mma`).
        let d = unsafe {
            mma_m16n8k16_f16(
                h2(a[0]),
                h2(a[1]),
                h2(a[2]),
                h2(a[3]),
                h2(b[0]),
                h2(b[1]),
                c[0],
                c[1],
                c[2],
                c[3],
            )
        };
        *c = [d.0, d.1, d.2, d.3];
    }

    /// `c += a·b`, bf16 inputs.
    #[doc(alias = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32")]
    #[doc(alias = "llvm.nvvm.mma.m16n8k16.row.col.bf16")]
    #[inline(always)]
    fn mma_bf16(a: &[u32; 4], b: &[u32; 2], c: &mut [f32; 4]) {
        // SAFETY: as for `mma_f16`.
        let d = unsafe {
            mma_m16n8k16_bf16(
                a[0] as i32,
                a[1] as i32,
                a[2] as i32,
                a[3] as i32,
                b[0] as i32,
                b[1] as i32,
                c[0],
                c[1],
                c[2],
                c[3],
            )
        };
        *c = [d.0, d.1, d.2, d.3];
    }
}
