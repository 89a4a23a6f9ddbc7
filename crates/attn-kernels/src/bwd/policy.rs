//! Tile sizes of the backward kernels: one pure function, [`bwd_tile`], shared by the kernels
//! (through `instances.rs`) and the host (grid and shared memory).
use crate::fwd::policy::{Family, THREADS, padded, waves};
use attn_abi::{BwdVariant, DType};

/// Which backward kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BwdKernel {
    /// `dq` (and `dbias`): the block owns query rows and walks the key blocks.
    Dq,
    /// `dk` and `dv`: the block owns key rows and walks the query blocks of every query head of
    /// its kv head (GQA sums stay in registers: deterministic).
    Dkdv,
    /// `Dkdv`'s walk and tile, plus each step's `dQ` partial sums (`dS·K`) added atomically to
    /// an f32 workspace: the non-deterministic backward, without `dq`'s recomputation of `S`
    /// and `dP` (5 matrix products instead of 7). Plain variant on NVIDIA's 16-bit atom only
    /// ([`bwd_instantiated`]).
    Fused,
}

impl BwdKernel {
    /// The kernel whose walk and tile this one shares (`Fused` is `Dkdv`'s).
    pub const fn walk(self) -> BwdKernel {
        match self {
            BwdKernel::Fused => BwdKernel::Dkdv,
            k => k,
        }
    }
}

/// Head-dim columns of one shared-memory chunk of the preprocess kernel (a multiple of every
/// atom's `K`).
pub const PRE_COLS: usize = 64;

/// Query rows per block of the fused backward's `dq` conversion (`attn_bwd_post_*`).
pub const POST_ROWS: usize = 64;

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

/// Whether (`family`, `dtype`, `d`, `variant`) takes [`plain_nv16_tile`]: the plain kernels on
/// NVIDIA's 16-bit atom up to D = 128.
const fn plain_nv16(family: Family, dtype: DType, d: usize, variant: BwdVariant) -> bool {
    matches!(variant, BwdVariant::Plain)
        && matches!(family, Family::Sm80 | Family::Sm90)
        && !matches!(dtype, DType::F32)
        && d <= 128
}

/// The plain kernels' tile on NVIDIA's 16-bit atom up to D = 128. The registers the pieces would
/// hold (bias, ALiBi, softcap, dropout, varlen: 240-255 of them on sm_90a at every head dim) buy
/// wider steps: 64 keys per `dq` step (32 on sm_80), 64 queries per `dK + dV` step up to D = 64
/// (32 on sm_80) and 32 at D = 128, where both accumulators stay live in one walk (no second
/// pass, no slices); and three or four resident blocks per SM ([`bwd_min_blocks`]). Chosen by
/// sweeps on the H200 (docs/perf.md, b7 and b8): 2.0-2.5x the pieces' tile.
const fn plain_nv16_tile(family: Family, dtype: DType, d: usize, kernel: BwdKernel) -> BwdTile {
    BwdTile {
        tm: 1,
        block_rows: waves(family) * atom_m(family, dtype),
        block_cols: match (kernel.walk(), d, family) {
            // (sm_80's 64-key step spilled 4-24 bytes under sm_90a's block counts.)
            (BwdKernel::Dq, _, Family::Sm80) => 32,
            (BwdKernel::Dq, _, _) => 64,
            (BwdKernel::Dkdv, 128, _) => 32,
            // (sm_80's 64-query step spilled 4-16 bytes under the 168 registers of three blocks.)
            (BwdKernel::Dkdv, _, Family::Sm80) => 32,
            (BwdKernel::Dkdv | BwdKernel::Fused, _, _) => 64,
        },
        slices: 1,
        p_in_smem: false,
        passes: 1,
        prefetch: false,
    }
}

/// Resident blocks per SM that the NVIDIA backward kernel asks of `ptxas` (`#[kernel(blocks)]`,
/// which caps its registers at `65536 / (blocks · 128)`), for the plain 16-bit kernels: `dq` 4
/// up to D = 64 (128 registers) and 3 at D = 128 (168), `dK + dV` 3 up to D = 64 (168) and 1 at
/// D = 128 (its one walk needs 254); no spills in any. The fused kernel: 2 up to D = 64 (its dQ
/// step spilled 4-24 bytes under three blocks' 168 registers), 1 at D = 128. 1 (up to 255
/// registers) elsewhere. The sweeps' best (docs/perf.md, b7 and b8).
pub const fn bwd_min_blocks(dtype: DType, d: usize, kernel: BwdKernel, variant: BwdVariant) -> u32 {
    if !matches!(variant, BwdVariant::Plain) || matches!(dtype, DType::F32) {
        return 1;
    }
    match (kernel, d) {
        // (The fused kernel at three blocks spilled 4-24 bytes at D <= 64 on sm_90a.)
        (BwdKernel::Fused, ..=64) => 2,
        (BwdKernel::Dq, ..=64) => 4,
        (BwdKernel::Dq, 128) => 3,
        (BwdKernel::Dkdv, ..=64) => 3,
        _ => 1,
    }
}

/// The tile of `kernel` (`variant`) for `dtype` and head-dim bucket `d` on `family`.
///
/// One fragment of rows per wave. Columns per step: 32 for `Dq` on the 16-bit atoms, 16 where
/// the registers or AMD's shared memory need it (`Dkdv` holds two `[M, D]` accumulators beside
/// its `[M, cols]` score tiles; f32 tiles are twice as large) and the atom allows it (MFMA's
/// N is 32). The gradient accumulators of a wave (`dq`, or `dk` and `dv`) are `[M, D]` f32 each:
/// at D = 256 they are split in two head-dim slices (each block recomputes `S` and `dP` for its
/// half).
pub const fn bwd_tile(
    family: Family,
    dtype: DType,
    d: usize,
    kernel: BwdKernel,
    variant: BwdVariant,
) -> BwdTile {
    if plain_nv16(family, dtype, d, variant) {
        return plain_nv16_tile(family, dtype, d, kernel);
    }
    let m = atom_m(family, dtype);
    let nv = matches!(family, Family::Sm80 | Family::Sm90);
    let half = !matches!(dtype, DType::F32);
    let dkdv = matches!(kernel.walk(), BwdKernel::Dkdv);
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
/// each), the bias tile (`[rows or cols, ..]`, f32 at worst; the pieces' kernels only) and, for
/// `Dkdv`, the step's lse and delta (f32 `[cols]` each). Rows padded.
pub const fn bwd_smem_bytes(
    family: Family,
    dtype: DType,
    d: usize,
    kernel: BwdKernel,
    variant: BwdVariant,
) -> usize {
    let t = bwd_tile(family, dtype, d, kernel, variant);
    let e = dtype.size();
    let (r, c) = (t.block_rows, t.block_cols);
    let p = if t.p_in_smem { r * padded(c, e) * e } else { 0 };
    let pieces = matches!(variant, BwdVariant::Pieces);
    // The block's own tiles, then one step buffer (two with prefetch); `Fused` adds the step's
    // dS with queries as rows (`[cols, padded(rows)]`).
    // (and on sm_90 the step's dQ partial sums, `[cols, d]` f32, for the bulk add)
    let ds = match (kernel, family) {
        (BwdKernel::Fused, Family::Sm90) => c * padded(r, e) * e + c * d * 4,
        (BwdKernel::Fused, _) => c * padded(r, e) * e,
        _ => 0,
    };
    let (own, step) = match kernel.walk() {
        BwdKernel::Dq => (
            2 * r * padded(d, e) * e,
            2 * c * padded(d, e) * e + bias_tile_bytes(pieces, r, c),
        ),
        BwdKernel::Dkdv | BwdKernel::Fused => (
            2 * r * padded(d, e) * e,
            2 * c * padded(d, e) * e + 2 * c * 4 + bias_tile_bytes(pieces, c, r),
        ),
    };
    own + p + if t.prefetch { 2 } else { 1 } * step + ds
}

/// The step's bias tile `[rows, padded(cols)]` (f32 at worst), bytes: only the pieces' kernels
/// have one.
pub const fn bias_tile_bytes(pieces: bool, rows: usize, cols: usize) -> usize {
    if pieces {
        rows * padded(cols, 4) * 4
    } else {
        0
    }
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
/// ([`bwd_tile`]: 200-203 VGPRs, no scratch). The fused kernel is built for the plain variant on
/// NVIDIA's 16-bit atom up to D = 128 (elsewhere the host runs `Dq` and `Dkdv`).
pub const fn bwd_instantiated(
    family: Family,
    dtype: DType,
    d: usize,
    kernel: BwdKernel,
    variant: BwdVariant,
) -> bool {
    let fused_ok = !matches!(kernel, BwdKernel::Fused) || plain_nv16(family, dtype, d, variant);
    fused_ok && bwd_smem_bytes(family, dtype, d, kernel, variant) <= smem_limit(family)
}

/// Threads per block of every backward kernel.
pub const BWD_THREADS: u32 = THREADS;

#[cfg(test)]
mod tests {
    use super::*;
    use attn_abi::FWD_HEAD_DIMS;

    /// The plain 16-bit NVIDIA kernels' block counts are only reached if that many blocks' shared
    /// memory (plus the 1 KiB the runtime reserves per block) fits one SM.
    #[test]
    fn plain_block_counts_fit_the_shared_memory() {
        for (family, per_sm) in [(Family::Sm80, 164 * 1024), (Family::Sm90, 228 * 1024)] {
            for dtype in [DType::F16, DType::Bf16] {
                for d in [32, 64, 128] {
                    for kernel in [BwdKernel::Dq, BwdKernel::Dkdv, BwdKernel::Fused] {
                        let v = BwdVariant::Plain;
                        assert!(bwd_instantiated(family, dtype, d, kernel, v));
                        let blocks = bwd_min_blocks(dtype, d, kernel, v) as usize;
                        let smem = bwd_smem_bytes(family, dtype, d, kernel, v);
                        assert!(
                            blocks * (smem + 1024) <= per_sm,
                            "{family:?} {dtype:?} d{d} {kernel:?}: {blocks} x {smem} B"
                        );
                        assert_eq!(bwd_tile(family, dtype, d, kernel, v).passes, 1);
                    }
                }
            }
        }
    }

    /// The fused kernel exists exactly where the plain 16-bit NVIDIA tile does, on its `Dkdv`
    /// tile.
    #[test]
    fn the_fused_kernel_is_the_plain_nvidia_dkdv() {
        for family in [Family::Sm80, Family::Sm90, Family::Cdna, Family::Rdna3] {
            for dtype in DType::ALL {
                for v in BwdVariant::ALL {
                    for d in FWD_HEAD_DIMS {
                        let d = d as usize;
                        let f = BwdKernel::Fused;
                        assert_eq!(
                            bwd_instantiated(family, dtype, d, f, v),
                            plain_nv16(family, dtype, d, v),
                            "{family:?} {dtype:?} d{d} {v:?}"
                        );
                        let t = bwd_tile(family, dtype, d, BwdKernel::Dkdv, v);
                        assert_eq!(bwd_tile(family, dtype, d, f, v), t);
                        let extra = bwd_smem_bytes(family, dtype, d, f, v)
                            - bwd_smem_bytes(family, dtype, d, BwdKernel::Dkdv, v);
                        let e = dtype.size();
                        let bulk = if matches!(family, Family::Sm90) {
                            t.block_cols * d * 4
                        } else {
                            0
                        };
                        assert_eq!(extra, t.block_cols * padded(t.block_rows, e) * e + bulk);
                    }
                }
            }
        }
    }

    #[test]
    fn tiles_divide_their_atoms_and_fit_below_d256() {
        for family in [Family::Sm80, Family::Sm90, Family::Cdna, Family::Rdna3] {
            for dtype in DType::ALL {
                for (kernel, v) in [BwdKernel::Dq, BwdKernel::Dkdv]
                    .into_iter()
                    .flat_map(|k| BwdVariant::ALL.map(|v| (k, v)))
                {
                    for d in FWD_HEAD_DIMS {
                        let d = d as usize;
                        let t = bwd_tile(family, dtype, d, kernel, v);
                        assert_eq!(t.block_cols % atom_n(family, dtype), 0);
                        assert_eq!(t.block_cols % 16, 0);
                        assert_eq!((d / t.slices) % atom_n(family, dtype), 0);
                        // Everything below D = 256 is built on every target; NVIDIA builds all,
                        // AMD's LDS not the D = 256 tiles.
                        let nv = matches!(family, Family::Sm80 | Family::Sm90);
                        assert_eq!(
                            bwd_instantiated(family, dtype, d, kernel, v),
                            d < 256 || nv,
                            "{family:?} {dtype:?} d{d} {kernel:?} {v:?}"
                        );
                    }
                }
            }
        }
    }
}
