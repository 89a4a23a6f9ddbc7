//! Tile sizes of the backward kernels: one pure function, [`bwd_tile`], shared by the kernels
//! (through `instances.rs`) and the host (grid and shared memory).
use crate::fwd::policy::{Family, THREADS, padded, waves};
use attn_abi::DType;

/// Which backward kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BwdKernel {
    /// `dq` (and `dbias`): the block owns query rows and walks the key blocks.
    Dq,
    /// `dk` and `dv`: the block owns key rows and walks the query blocks of every query head of
    /// its kv head (GQA sums stay in registers: deterministic).
    Dkdv,
}

/// Head-dim columns of one shared-memory chunk of the preprocess kernel (a multiple of every
/// atom's `K`).
pub const PRE_COLS: usize = 64;

/// Rows of `delta` per block of the preprocess kernel for `dtype`: one atom row block (`M`) per
/// wave, which is `BWD_THREADS / 4` for the f32 FMA atom (`M = WAVE / 4`) on any wave size.
pub const fn pre_rows(family: Family, dtype: DType) -> usize {
    waves(family) * atom_m(family, dtype)
}

/// Dynamic shared memory of the preprocess kernel, bytes: dO and O chunks of its rows.
pub const fn pre_smem_bytes(family: Family, dtype: DType) -> usize {
    2 * pre_rows(family, dtype) * padded(PRE_COLS, dtype.size()) * dtype.size()
}

/// The tile of one backward kernel instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BwdTile {
    /// Accumulator fragments stacked along each wave's own rows.
    pub tm: usize,
    /// The block's own rows (queries for `Dq`, keys for `Dkdv`): `waves · tm · M`.
    pub block_rows: usize,
    /// The columns of one step (keys for `Dq`, queries for `Dkdv`).
    pub block_cols: usize,
    /// Head-dim slices of the gradient accumulators (see `BwdParams::slices`).
    pub slices: usize,
    /// P and dS go through shared memory to become `A` operands.
    pub p_in_smem: bool,
    /// `Dkdv`: walks of the query blocks (2: dV first, then dK, one accumulator live).
    pub passes: usize,
    /// Two step buffers: the next step's tiles are copied while this step computes. Only useful
    /// where copies are asynchronous (NVIDIA `cp.async`; AMD's LDS would not hold them); off
    /// everywhere since it measured slower on the H200 (kept for the Hopper path, issue 11).
    pub prefetch: bool,
}

/// Rows of the family's atom for `dtype` (the FMA atom for f32: `WAVE / 4`).
const fn atom_m(family: Family, dtype: DType) -> usize {
    match (dtype, family) {
        (DType::F32, Family::Cdna) => 16,
        (DType::F32, _) => 8,
        (_, Family::Cdna) => 32,
        _ => 16,
    }
}

/// Columns of the family's atom for `dtype`.
const fn atom_n(family: Family, dtype: DType) -> usize {
    match (dtype, family) {
        (DType::F32, _) => 8,
        (_, Family::Cdna) => 32,
        (_, Family::Rdna3) => 16,
        _ => 8,
    }
}

/// The tile of `kernel` for `dtype` and head-dim bucket `d` on `family`.
///
/// One fragment of rows per wave. Columns per step: 32 for `Dq` on the 16-bit atoms, 16 where
/// the registers or AMD's shared memory need it (`Dkdv` holds two `[M, D]` accumulators beside
/// its `[M, cols]` score tiles; f32 tiles are twice as large) and the atom allows it (MFMA's
/// N is 32). The gradient accumulators of a wave (`dq`, or `dk` and `dv`) are `[M, D]` f32 each:
/// at D = 256 they are split in two head-dim slices (each block recomputes `S` and `dP` for its
/// half).
pub const fn bwd_tile(family: Family, dtype: DType, d: usize, kernel: BwdKernel) -> BwdTile {
    let m = atom_m(family, dtype);
    let nv = matches!(family, Family::Sm80 | Family::Sm90);
    let half = !matches!(dtype, DType::F32);
    let dkdv = matches!(kernel, BwdKernel::Dkdv);
    let narrow = !half
        || dkdv
        || d >= 256
        || matches!(family, Family::Rdna3)
        || (matches!(family, Family::Sm80) && d >= 128);
    let cols = if narrow && atom_n(family, dtype) <= 16 {
        16
    } else {
        32
    };
    // Head-dim slices: D = 256 always (two; four for NVIDIA's 16-bit dK + dV), and sm_80's 16-bit
    // dK + dV at D = 128 (its two passes spill a few bytes where sm_90a's do not).
    // CDNA's 16-bit dq at D = 128 too (gfx942 kept 68 bytes of it in scratch), and RDNA3's 16-bit
    // dK + dV from D = 64 in slices of 32 (one slice spilled its 256 VGPRs).
    let cdna_dq = !dkdv && half && matches!(family, Family::Cdna);
    let rdna3_dkdv = dkdv && half && matches!(family, Family::Rdna3);
    let slices = match (d, dkdv && nv && half) {
        (256, true) => 4,
        (256, false) => 2,
        (128, true) if matches!(family, Family::Sm80) => 2,
        (128, false) if cdna_dq => 2,
        (128, false) if rdna3_dkdv => 4,
        (64, false) if rdna3_dkdv => 2,
        _ => 1,
    };
    // dK and dV together: two [M, D / slices] f32 accumulators per wave. Where they do not fit
    // beside the score tiles (128 columns each, RDNA3's 256 VGPRs, CDNA's 16-bit from D = 64, f32 on
    // AMD from D = 64), the
    // walk runs twice.
    let two = d / slices >= 128
        || matches!(family, Family::Rdna3)
        || (half && matches!(family, Family::Cdna) && d >= 64)
        || (!half && !nv && d >= 64);
    BwdTile {
        tm: 1,
        block_rows: waves(family) * m,
        block_cols: cols,
        slices,
        p_in_smem: !half || matches!(family, Family::Rdna3),
        passes: if dkdv && two { 2 } else { 1 },
        // Measured on the H200 (docs/perf.md, b2/b3): the second buffer's addresses cost more
        // than the copy latency it hides, so no kernel uses it today.
        prefetch: false,
    }
}

/// Shared memory of one block of `kernel`: the block's own tiles (Q and dO for `Dq`, K and V for
/// `Dkdv`, `[rows, D]` each), each wave's P/dS slab (`[rows, cols]`, when P goes through shared
/// memory), and one step buffer (two with [`BwdTile::prefetch`]): the step's tiles (`[cols, D]`
/// each), the bias tile (`[rows or cols, ..]`, f32 at worst) and, for `Dkdv`, the step's lse and
/// delta (f32 `[cols]` each). Rows padded.
pub const fn bwd_smem_bytes(family: Family, dtype: DType, d: usize, kernel: BwdKernel) -> usize {
    let t = bwd_tile(family, dtype, d, kernel);
    let e = dtype.size();
    let (r, c) = (t.block_rows, t.block_cols);
    let p = if t.p_in_smem { r * padded(c, e) * e } else { 0 };
    // The block's own tiles, then one step buffer (two with prefetch).
    let (own, step) = match kernel {
        BwdKernel::Dq => (
            2 * r * padded(d, e) * e,
            2 * c * padded(d, e) * e + r * padded(c, 4) * 4,
        ),
        BwdKernel::Dkdv => (
            2 * r * padded(d, e) * e,
            2 * c * padded(d, e) * e + 2 * c * 4 + c * padded(r, 4) * 4,
        ),
    };
    own + p + if t.prefetch { 2 } else { 1 } * step
}

/// The shared memory a block of `family` may use.
pub const fn smem_limit(family: Family) -> usize {
    match family {
        Family::Sm80 => 163 * 1024,
        Family::Sm90 => 227 * 1024,
        Family::Cdna | Family::Rdna3 => 64 * 1024,
    }
}

/// Whether the backward kernel for (`family`, `dtype`, `d`, `kernel`) is built: its tiles fit the
/// target's shared memory. AMD's 64 KiB do not hold the D = 256 tiles (those kernels are stubs
/// that the host refuses as `Unsupported` before any launch). RDNA3's 16-bit dK + dV, which
/// spilled its 256 VGPRs from D = 64 in one slice, run in head-dim slices of 32 there
/// ([`bwd_tile`]: 200-203 VGPRs, no scratch).
pub const fn bwd_instantiated(family: Family, dtype: DType, d: usize, kernel: BwdKernel) -> bool {
    bwd_smem_bytes(family, dtype, d, kernel) <= smem_limit(family)
}

/// Threads per block of every backward kernel.
pub const BWD_THREADS: u32 = THREADS;

#[cfg(test)]
mod tests {
    use super::*;
    use attn_abi::FWD_HEAD_DIMS;

    #[test]
    fn tiles_divide_their_atoms_and_fit_below_d256() {
        for family in [Family::Sm80, Family::Sm90, Family::Cdna, Family::Rdna3] {
            for dtype in DType::ALL {
                for kernel in [BwdKernel::Dq, BwdKernel::Dkdv] {
                    for d in FWD_HEAD_DIMS {
                        let d = d as usize;
                        let t = bwd_tile(family, dtype, d, kernel);
                        assert_eq!(t.block_cols % atom_n(family, dtype), 0);
                        assert_eq!(t.block_cols % 16, 0);
                        assert_eq!((d / t.slices) % atom_n(family, dtype), 0);
                        // Everything below D = 256 is built on every target; NVIDIA builds all,
                        // AMD's LDS not the D = 256 tiles.
                        let nv = matches!(family, Family::Sm80 | Family::Sm90);
                        assert_eq!(
                            bwd_instantiated(family, dtype, d, kernel),
                            d < 256 || nv,
                            "{family:?} {dtype:?} d{d} {kernel:?}"
                        );
                    }
                }
            }
        }
    }
}
