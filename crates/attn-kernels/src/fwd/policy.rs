//! Tile sizes of the forward kernels: one pure function shared by the kernels and the host.
use attn_abi::DType;

/// Threads per block of every forward kernel (4 warps on NVIDIA and RDNA3, 2 waves on CDNA).
pub const THREADS: u32 = 128;

/// Padding (in bytes) added to every shared-memory row, so that rows start on different banks.
pub const ROW_PAD_BYTES: usize = 16;

/// The tile shape of one forward kernel instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FwdTile {
    /// Accumulator fragments stacked along the query rows of each wave.
    pub tm: usize,
    /// Keys per block step (`BLOCK_N`).
    pub block_n: usize,
}

/// The tile of the FMA-atom forward kernel for `dtype` and head-dim bucket `d`.
///
/// The FMA atom holds `WAVE / 4` rows per wave and `128 / WAVE` waves run per block, so a block
/// covers `32 * tm` query rows on every target. Sizes are chosen so that shared memory stays within
/// 48 KiB (CUDA's default dynamic limit, and well inside AMD's 64 KiB of LDS).
pub const fn fma_tile(dtype: DType, d: usize) -> FwdTile {
    match (dtype.size(), d) {
        (2, 256) => FwdTile { tm: 2, block_n: 16 },
        (2, 32) => FwdTile { tm: 2, block_n: 32 },
        (2, _) => FwdTile { tm: 2, block_n: 64 },
        (_, 256) => FwdTile { tm: 1, block_n: 8 },
        (_, 128) => FwdTile { tm: 1, block_n: 32 },
        (_, 64) => FwdTile { tm: 2, block_n: 32 },
        _ => FwdTile { tm: 1, block_n: 16 },
    }
}

/// Query rows per block for a tile (independent of the wave size, see [`fma_tile`]).
pub const fn block_m(tile: FwdTile) -> usize {
    32 * tile.tm
}

/// Elements per shared-memory row of width `cols` (padded by [`ROW_PAD_BYTES`]).
pub const fn padded(cols: usize, esize: usize) -> usize {
    cols + ROW_PAD_BYTES / esize
}

/// Dynamic shared memory of a forward block: the Q tile `[BLOCK_M, D]`, one K-or-V tile
/// `[BLOCK_N, D]` and the P tile `[BLOCK_M, BLOCK_N]`, each row padded.
pub const fn smem_bytes(dtype: DType, d: usize) -> usize {
    let t = fma_tile(dtype, d);
    let e = dtype.size();
    let (bm, bn) = (block_m(t), t.block_n);
    ((bm + bn) * padded(d, e) + bm * padded(bn, e)) * e
}

#[cfg(test)]
mod tests {
    use super::*;
    use attn_abi::FWD_HEAD_DIMS;

    #[test]
    fn every_instance_fits_48k_and_divides_its_atom() {
        for dtype in DType::ALL {
            for d in FWD_HEAD_DIMS {
                let d = d as usize;
                let t = fma_tile(dtype, d);
                assert!(smem_bytes(dtype, d) <= 48 * 1024, "{dtype:?} d{d}");
                assert_eq!(t.block_n % 8, 0);
                assert_eq!(d % 8, 0);
            }
        }
    }
}
