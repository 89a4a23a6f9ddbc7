//! Tile sizes of the forward kernels: one pure function, [`fwd_tile`], shared by the kernels
//! (through `instances.rs`) and the host (to size the grid and shared memory).
use attn_abi::{DType, FwdVariant};

/// Threads per block of every forward kernel (4 warps on NVIDIA and RDNA3, 2 waves on CDNA).
pub const THREADS: u32 = 128;

/// Padding (in bytes) added to every shared-memory row, so that the 8 rows an `ldmatrix` (or a
/// column of lanes) reads start on different banks.
pub const ROW_PAD_BYTES: usize = 16;

/// The matrix-instruction family of a target; it decides the atom and the tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// NVIDIA sm_80 code (runs on every sm_8x, and is the PTX fallback beyond): `mma.sync.m16n8k16`,
    /// `ldmatrix`, `cp.async`.
    Sm80,
    /// NVIDIA sm_90a code (H100/H200): the same instructions, tiles tuned for Hopper.
    Sm90,
    /// AMD CDNA2/3 (gfx90a, gfx942): `v_mfma_f32_32x32x8`, wave64, 64 KiB LDS.
    Cdna,
    /// AMD RDNA3 (gfx11): `v_wmma_f32_16x16x16`, wave32, 64 KiB LDS.
    Rdna3,
}

impl Family {
    /// The family of a code-object target (`"sm_80"`, `"sm_90a"`, `"gfx942"`) or device
    /// architecture name (`"gfx942:sramecc+:xnack-"`). The host asks with the target of the code
    /// object it loaded, so that the tiles it launches are the ones that object was built with.
    pub fn of_arch(arch: &str) -> Option<Family> {
        if let Some(sm) = arch.strip_prefix("sm_") {
            let cc: u32 = sm
                .trim_end_matches(|c: char| c.is_ascii_alphabetic())
                .parse()
                .ok()?;
            return match cc {
                90 => Some(Family::Sm90),
                80.. => Some(Family::Sm80),
                _ => None,
            };
        }
        let gfx = arch.split(':').next()?.strip_prefix("gfx")?;
        if gfx == "90a" || gfx.starts_with("94") || gfx.starts_with("95") {
            Some(Family::Cdna)
        } else if gfx.starts_with("11") {
            Some(Family::Rdna3)
        } else {
            None
        }
    }
}

/// The tile shape of one forward kernel instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FwdTile {
    /// Accumulator fragments stacked along the query rows of each wave.
    pub tm: usize,
    /// Query rows per block (`BLOCK_M`).
    pub block_m: usize,
    /// Keys per block step (`BLOCK_N`).
    pub block_n: usize,
    /// Separate K and V buffers: V(j) is copied while `S = Q·K(j)ᵀ` runs and K(j+1) while
    /// `O += P·V(j)` runs. Only worth it where copies are asynchronous (NVIDIA `cp.async`).
    pub split_kv: bool,
    /// P goes through shared memory to become an `A` operand (the atom cannot do it in
    /// registers).
    pub p_in_smem: bool,
    /// Waves that split each key block between them and share the query rows: 1, or every wave
    /// of the block ([`FwdVariant::Decode`]).
    pub key_waves: usize,
}

/// Whether the kernel for (`family`, `dtype`, head-dim bucket `d`, `variant`) is built.
///
/// Every kernel symbol exists on every target, but these few are empty stubs: their tiles do not
/// fit the register file without spilling (`cargo xtask build-kernels` refuses spills), so the
/// host rejects such a call as `Unsupported` before any launch. RDNA3's 16-bit pieces at D >= 128
/// and varlen at D = 256 (f32 builds everywhere; see also [`spills_allowed`]).
pub const fn instantiated(family: Family, dtype: DType, d: usize, variant: FwdVariant) -> bool {
    let half = !matches!(dtype, DType::F32);
    !match (family, variant) {
        (Family::Rdna3, FwdVariant::Pieces | FwdVariant::Decode) => half && d >= 128,
        (Family::Rdna3, FwdVariant::Varlen) => half && d >= 256,
        _ => false,
    }
}

/// Whether the kernel for (`family`, `dtype`, `d`, `variant`) may spill registers to local
/// memory: NVIDIA's 16-bit pieces at D = 256, whose output accumulator alone takes 128 of the
/// 255 registers (ptxas spills ~100 bytes per thread, L1-resident). Building them with a small
/// spill beats refusing the call: `cargo xtask build-kernels` reports these spills as notes and
/// fails on any other.
pub const fn spills_allowed(family: Family, dtype: DType, d: usize, variant: FwdVariant) -> bool {
    matches!(family, Family::Sm80 | Family::Sm90)
        && !matches!(dtype, DType::F32)
        && d >= 256
        && matches!(variant, FwdVariant::Pieces)
}

/// Resident blocks per SM that a forward kernel asks of ptxas (`#[kernel(blocks = M)]`, NVIDIA's
/// `minctasm`; checked against `instances.rs` at compile time): 3 for the memory-bound decode
/// kernels whose accumulators fit 170 registers (D <= 64), 1 for every other kernel (up to 255
/// registers). The host sizes split-KV's waves of blocks with it.
pub const fn min_blocks(variant: FwdVariant, dtype: DType, d: usize) -> u32 {
    // (At D = 128 the 16-bit decode kernels would spill ~150 B under 170 registers, and measured
    // slower that way: docs/perf.md.)
    let _ = dtype;
    match variant {
        FwdVariant::Decode if d <= 64 => 3,
        _ => 1,
    }
}

/// Waves per block on `family` (wave64 on CDNA).
pub const fn waves(family: Family) -> usize {
    match family {
        Family::Cdna => THREADS as usize / 64,
        _ => THREADS as usize / 32,
    }
}

/// The [`FwdVariant::Decode`] tile: one fragment of query rows shared by every wave (16 rows on
/// mma.sync and WMMA, 32 on MFMA, 8 / 16 on the f32 FMA atom), each wave taking `TN` fragments of
/// every key block. Decode is memory-bound: few rows keep the matrix work per key byte low, and
/// the waves' separate key slices keep every wave busy without more rows.
const fn decode_tile(family: Family, dtype: DType, d: usize) -> FwdTile {
    let kw = waves(family);
    let (m, n) = match (dtype, family) {
        (DType::F32, Family::Cdna) => (16, 8),
        (DType::F32, _) => (8, 8),
        (_, Family::Cdna) => (32, 32),
        (_, Family::Rdna3) => (16, 16),
        _ => (16, 8),
    };
    let tn = match (dtype, family, d) {
        (DType::F32, _, 256) => 1,
        (DType::F32, _, 128) => 2,
        (DType::F32, _, _) => 4,
        (_, Family::Cdna | Family::Rdna3, _) => 1,
        (_, _, 256) => 2,
        _ => 4,
    };
    FwdTile {
        tm: 1,
        block_m: m,
        block_n: kw * tn * n,
        split_kv: matches!(family, Family::Sm80 | Family::Sm90),
        p_in_smem: matches!(dtype, DType::F32) || matches!(family, Family::Rdna3),
        key_waves: kw,
    }
}

/// The tile of the plain variant ([`fwd_tile_of`] with [`FwdVariant::Plain`]).
pub const fn fwd_tile(family: Family, dtype: DType, d: usize) -> FwdTile {
    fwd_tile_of(family, dtype, d, FwdVariant::Plain)
}

/// The tile for `dtype`, head-dim bucket `d` and kernel variant on `family`.
///
/// The score pieces (bias loads, Philox draws, mask bytes) need registers of their own, so the
/// [`FwdVariant::Pieces`] kernels take one fragment of rows per wave and fewer keys per block
/// (32 on CDNA, 16 at D = 256 elsewhere): the largest tiles with no spill on any target
/// (`cargo xtask build-kernels`).
///
/// f32 runs on the FMA atom (`WAVE/4` rows per wave, `128/WAVE` waves: `32·tm` rows per block on
/// every target); f16/bf16 on the family's matrix atom (16 rows × 4 warps, 32 rows × 2 waves,
/// 16 rows × 4 waves: `64·tm` rows per block). Shared memory stays within 64 KiB on AMD.
pub const fn fwd_tile_of(family: Family, dtype: DType, d: usize, variant: FwdVariant) -> FwdTile {
    if matches!(variant, FwdVariant::Decode) {
        return decode_tile(family, dtype, d);
    }
    let nv = matches!(family, Family::Sm80 | Family::Sm90);
    // Varlen keeps sequence lengths and offsets in registers, the pieces more: both take
    // smaller tiles than the plain kernels (`lean`), varlen the larger of them where it fits.
    let lean = !matches!(variant, FwdVariant::Plain);
    let varlen = matches!(variant, FwdVariant::Varlen);
    if matches!(dtype, DType::F32) {
        let (tm, block_n) = match d {
            256 => (1, 8),
            128 => (1, 32),
            64 => (2, 32),
            _ => (1, 16),
        };
        // The pieces take one fragment of rows (registers).
        let tm = if lean { 1 } else { tm };
        return FwdTile {
            tm,
            block_m: 32 * tm,
            block_n,
            split_kv: nv,
            p_in_smem: true,
            key_waves: 1,
        };
    }
    let (tm, block_n) = match (family, d) {
        // Varlen: the plain tiles where the sequence's registers fit beside them.
        (Family::Sm90, 128) if varlen => (1, 64),
        (Family::Sm90, 32 | 64) if varlen => (2, 64),
        (Family::Sm80, 32 | 64) if varlen => (1, 64),
        (Family::Cdna, _) if lean => (1, 32),
        (Family::Rdna3, 128 | 256) if lean => (1, 16),
        (Family::Rdna3, 64) if matches!(variant, FwdVariant::Pieces) => (1, 16),
        (Family::Sm80 | Family::Sm90, 256) if lean => (1, 16),
        (Family::Sm80, 128) if lean => (1, 16),
        (Family::Rdna3, _) if lean => (1, 32),
        _ if lean => (1, 32),
        // H100, measured (docs/perf.md): two 16-row fragments per warp halve the shared-memory
        // operand traffic per MMA, and are worth 30% at D = 128 over (1, 64).
        (Family::Sm90, 256) => (1, 32),
        (Family::Sm90, 128) => (2, 32),
        (Family::Sm90, _) => (2, 64),
        // sm_80 code: ptxas spills (2, 32) at D = 128 for bf16, so one fragment per warp there.
        (Family::Sm80, 256) => (1, 32),
        (Family::Sm80, 128) => (1, 64),
        (Family::Sm80, _) => (2, 64),
        (Family::Rdna3, 256) | (Family::Cdna, 256) => (1, 32),
        (Family::Rdna3, _) | (Family::Cdna, 128) => (1, 64),
        (Family::Cdna, _) => (2, 64),
    };
    FwdTile {
        tm,
        block_m: 64 * tm,
        block_n,
        split_kv: nv,
        p_in_smem: matches!(family, Family::Rdna3),
        key_waves: 1,
    }
}

/// Elements per shared-memory row of width `cols` (padded by [`ROW_PAD_BYTES`]).
pub const fn padded(cols: usize, esize: usize) -> usize {
    cols + ROW_PAD_BYTES / esize
}

/// Dynamic shared memory of a forward block: the Q tile `[BLOCK_M, D]`, one or two K/V tiles
/// `[BLOCK_N, D]`, and the P tile `[BLOCK_M, BLOCK_N]` when P goes through shared memory; every
/// row padded.
pub const fn smem_bytes(family: Family, dtype: DType, d: usize) -> usize {
    smem_bytes_of(family, dtype, d, FwdVariant::Plain)
}

/// [`smem_bytes`] of a kernel variant.
pub const fn smem_bytes_of(family: Family, dtype: DType, d: usize, variant: FwdVariant) -> usize {
    let t = fwd_tile_of(family, dtype, d, variant);
    let e = dtype.size();
    let kv = if t.split_kv { 2 } else { 1 };
    let p = if t.p_in_smem {
        t.block_m * padded(t.block_n, e)
    } else {
        0
    };
    // The Pieces kernels stage the bias tile [BLOCK_M, BLOCK_N] (f32 at worst) after P.
    let bias = if matches!(variant, FwdVariant::Pieces) {
        t.block_m * padded(t.block_n, 4) * 4
    } else {
        0
    };
    let main = ((t.block_m + kv * t.block_n) * padded(d, e) + p) * e + bias;
    // Decode merges its waves' states through the same memory afterwards: m and l per wave and
    // row, then the O of all waves but the first, [BLOCK_M, D + 4] f32 each.
    let merge = if matches!(variant, FwdVariant::Decode) {
        (2 * t.key_waves * t.block_m + (t.key_waves - 1) * t.block_m * (d + 4)) * 4
    } else {
        0
    };
    if main > merge { main } else { merge }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attn_abi::FWD_HEAD_DIMS;

    #[test]
    fn every_instance_fits_its_target_and_divides_its_atoms() {
        for family in [Family::Sm80, Family::Sm90, Family::Cdna, Family::Rdna3] {
            let limit = match family {
                Family::Sm80 => 163 * 1024,
                Family::Sm90 => 227 * 1024,
                _ => 64 * 1024,
            };
            for (dtype, variant) in DType::ALL
                .into_iter()
                .flat_map(|t| FwdVariant::ALL.map(|v| (t, v)))
            {
                for d in FWD_HEAD_DIMS {
                    let d = d as usize;
                    let t = fwd_tile_of(family, dtype, d, variant);
                    assert!(
                        smem_bytes_of(family, dtype, d, variant) <= limit,
                        "{family:?} {dtype:?} d{d}"
                    );
                    // Key blocks split into whole atoms: N and K of mma.sync (8, 16) and WMMA
                    // (16, 16) divide 16, MFMA's (32, 8) divide 32, FMA's (8, 4) divide 8.
                    let atoms = match (dtype, family) {
                        (DType::F32, _) => 8,
                        (_, Family::Cdna) => 32,
                        _ => 16,
                    };
                    assert_eq!(t.block_n % atoms, 0, "{family:?} {dtype:?} d{d}");
                    assert_eq!(d % 32, 0);
                    if variant == FwdVariant::Decode {
                        assert_eq!(t.block_m * waves(family) / t.key_waves % 8, 0);
                        assert_eq!(t.key_waves, waves(family));
                    } else {
                        assert_eq!(t.block_m % 32, 0);
                        assert_eq!(t.key_waves, 1);
                    }
                }
            }
        }
    }

    #[test]
    fn families_are_recognised_from_arch_names() {
        assert_eq!(Family::of_arch("sm_80"), Some(Family::Sm80));
        assert_eq!(Family::of_arch("sm_90"), Some(Family::Sm90));
        assert_eq!(Family::of_arch("sm_90a"), Some(Family::Sm90));
        assert_eq!(Family::of_arch("sm_120"), Some(Family::Sm80));
        assert_eq!(Family::of_arch("sm_75"), None);
        assert_eq!(
            Family::of_arch("gfx942:sramecc+:xnack-"),
            Some(Family::Cdna)
        );
        assert_eq!(Family::of_arch("gfx90a"), Some(Family::Cdna));
        assert_eq!(Family::of_arch("gfx1100"), Some(Family::Rdna3));
        assert_eq!(Family::of_arch("gfx1030"), None);
        assert_eq!(Family::of_arch("gfx908"), None);
    }
}
