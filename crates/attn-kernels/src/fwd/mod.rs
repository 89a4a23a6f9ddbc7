//! The forward pass, written once over an [`MmaAtom`].
//!
//! For sequence `b` (a batch entry, or a varlen sequence), query head `h` (kv head
//! `g = h / (Hq / Hk)`), query row `i`, key row `j` (local to the sequence):
//!
//! ```text
//! x_ij  = log2(e) · logit_ij                      (log2 domain; the score pieces of
//!                                                  crate::score: scale, softcap, bias, ALiBi)
//! x_ij  = -inf where mask(i, j) hides j           (j >= Sk_b = seqused_k[b] is hidden too)
//! m_i   = max_j x_ij,   l_i = Σ_j 2^(x_ij - m_i)
//! O_i   = Σ_j 2^(x_ij - m_i) Z_ij v_j / l_i       (0 when no key is visible; Z = dropout)
//! lse_i = ln(2) · (m_i + log2 l_i)                (-inf when no key is visible)
//! ```
//!
//! computed FlashAttention-style: one block owns `BLOCK_M` query rows of one `(b, h)`; it walks the
//! key blocks that the mask leaves visible, `BLOCK_N` keys at a time, keeping a running max `m`,
//! sum `l` and output `O` per row (online softmax: on a new max, `l` and `O` are rescaled by
//! `2^(m_old - m_new)`). Each wave owns `TM · A::M` query rows.
//!
//! Shared memory holds the Q tile, the K and V tiles (two buffers where copies are asynchronous,
//! so that V(j) lands while `S = Q·K(j)ᵀ` runs and K(j+1) while `O += P·V(j)` runs; one shared
//! buffer otherwise) and, for atoms whose accumulator layout is not their `A` layout, each wave's
//! P tile. Tiles are copied 16 bytes at a time when every row is 16-byte aligned
//! ([`attn_abi::FLAG_VEC16`]), element by element otherwise.
use crate::arch::{
    WAVE, async_commit, async_wait_all, async_wait_prior, block_idx, copy16_async,
    copy16_async_part, dyn_smem, exp2, fma, lane_id, log2, rcp, shfl_idx_u32, shfl_xor_f32,
    sync_threads, thread_idx, wave_id,
};
use crate::atom::MmaAtom;
use crate::mask::Mask;
use crate::numeric::{Element, LN_2};
const LOG2_E: f32 = core::f32::consts::LOG2_E;
use crate::score::{Dropout, Scores, Softcap};
use crate::seq::SeqInfo;
use attn_abi::{FLAG_BIAS_F32, FLAG_BIAS_VEC16, FLAG_KEY_RANGE, FLAG_PAGED, FLAG_VEC16, FwdParams};

pub mod dropout_mask;

pub mod merge;

pub mod policy;

/// A tile copy from global to shared memory: `rows × cols` elements from `src` (row stride
/// `src_stride`) into `dst` (row stride `dst_stride`), zeros in the columns past `cols_valid`.
///
/// Rows past `rows_valid` are zero-filled only when `zero_tail`: V needs it (a zero probability
/// times a stale NaN would poison O), while the contents of Q rows past `Sq` (independent rows,
/// never stored) and K rows past `Sk` (masked by a select) do not matter. The loops then run to
/// the run-time `min(rows, rows_valid)`, which also keeps them rolled: unrolled copies would hold
/// every chunk's address live at once.
#[derive(Clone, Copy)]
pub(crate) struct TileCopy<E> {
    pub(crate) dst: *mut E,
    pub(crate) dst_stride: usize,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) src: *const E,
    pub(crate) src_stride: i64,
    /// Element stride of the source columns in the element path (1 except for some biases; the
    /// 16-byte path needs 1).
    pub(crate) src_col: i64,
    pub(crate) rows_valid: usize,
    pub(crate) cols_valid: usize,
    pub(crate) zero_tail: bool,
    /// `cols_valid` need not be a multiple of a chunk: the chunk that straddles it is copied in
    /// part (the bias tile, whose columns are keys).
    pub(crate) part_cols: bool,
    /// Where source row `r` starts relative to `src`.
    pub(crate) map: RowMap,
    /// Walk each thread's chunks with pointer increments (its column is fixed, its rows step by
    /// `THREADS / chunks`) instead of re-deriving every address: fewer instructions per chunk,
    /// which is what the memory-bound decode kernels are limited by (the others keep the
    /// generic loop, whose register use they are tuned to).
    pub(crate) stepped: bool,
}

/// Where a tile copy finds its source rows (the `Decode` variant's row layouts; every other
/// tile is [`RowMap::Strided`], which compiles to plain `r · src_stride`).
#[derive(Clone, Copy)]
pub(crate) enum RowMap {
    /// Row `r` at `r · src_stride`.
    Strided,
    /// GQA-packed query rows: packed row `x = first + r` is query `x / g` of the `x % g`-th head
    /// after `src`'s: at `(x / g) · src_stride + (x % g) · head_stride`.
    Packed {
        first: usize,
        g: usize,
        head_stride: i64,
    },
    /// Paged keys: key `j = first + r` is row `j % page` of page `table[j / page]` (clamped into
    /// `0..pages`): at `page_index · page_stride + (j % page) · src_stride`.
    Paged {
        first: usize,
        table: *const i32,
        page: usize,
        pages: u32,
        page_stride: i64,
    },
}

impl RowMap {
    /// The element offset of source row `r` (row stride `stride`).
    ///
    /// # Safety
    /// For [`RowMap::Paged`], `table` holds an entry for page `(first + r) / page`.
    #[inline(always)]
    unsafe fn offset(self, r: usize, stride: i64) -> isize {
        match self {
            RowMap::Strided => r as isize * stride as isize,
            RowMap::Packed {
                first,
                g,
                head_stride,
            } => {
                let x = first + r;
                ((x / g) as i64 * stride + (x % g) as i64 * head_stride) as isize
            }
            RowMap::Paged {
                first,
                table,
                page,
                pages,
                page_stride,
            } => {
                let j = first + r;
                // SAFETY: the caller's contract. The entry itself is device data the host cannot
                // check: clamped, so that a bad table gives wrong keys, never a bad address.
                let e = unsafe { *table.add(j / page) };
                let idx = (e as i64).clamp(0, pages as i64 - 1);
                (idx * page_stride + (j % page) as i64 * stride) as isize
            }
        }
    }
}

impl TileCopy<u8> {
    /// The same copy over elements of type `T` (every extent and stride is in elements).
    #[inline(always)]
    pub(crate) fn retyped<T>(self) -> TileCopy<T> {
        TileCopy {
            dst: self.dst.cast(),
            dst_stride: self.dst_stride,
            rows: self.rows,
            cols: self.cols,
            src: self.src.cast(),
            src_stride: self.src_stride,
            src_col: self.src_col,
            rows_valid: self.rows_valid,
            cols_valid: self.cols_valid,
            zero_tail: self.zero_tail,
            part_cols: self.part_cols,
            map: self.map,
            stepped: self.stepped,
        }
    }
}

impl<E: Element> TileCopy<E> {
    /// Issues the copy by the whole block: 16-byte chunks (asynchronous where the target can)
    /// when `vec16`, elements otherwise. Completes at `async_wait_all` + `sync_threads`.
    ///
    /// # Safety
    /// Source rows `r < rows_valid` (where `map` puts them) are readable for `cols_valid`
    /// elements, and `map`'s own contract holds for them; `dst` holds `rows`
    /// rows of `dst_stride >= cols` elements of shared memory. With `vec16`, every source row and
    /// `dst` row start is 16-byte aligned and `cols_valid` is a multiple of `16 / size_of::<E>()`
    /// unless `part_cols`.
    #[inline(always)]
    pub(crate) unsafe fn issue(self, vec16: bool) {
        let threads = policy::THREADS as usize;
        if vec16 {
            let per = 16 / core::mem::size_of::<E>();
            let chunks = self.cols / per;
            let live = self.rows.min(self.rows_valid);
            let end = if self.zero_tail { self.rows } else { live };
            if self.stepped && !self.part_cols && threads.is_multiple_of(chunks) {
                let step = threads / chunks;
                let me = thread_idx() as usize;
                let c = (me % chunks) * per;
                let col_ok = c < self.cols_valid;
                let strided = matches!(self.map, RowMap::Strided);
                let mut r = me / chunks;
                let src_step = step as isize * self.src_stride as isize;
                let mut src_row = self
                    .src
                    .wrapping_offset(r as isize * self.src_stride as isize + c as isize);
                let mut dst = self.dst.wrapping_add(r * self.dst_stride + c);
                while r < end {
                    let valid = r < live && col_ok;
                    let src = if !valid {
                        self.src
                    } else if strided {
                        src_row
                    } else {
                        // SAFETY: r < rows_valid (the map's contract is the caller's).
                        let row = unsafe { self.map.offset(r, self.src_stride) };
                        self.src.wrapping_offset(row + c as isize)
                    };
                    // SAFETY: as in the generic loop below.
                    unsafe { copy16_async(dst.cast(), src.cast(), valid) };
                    r += step;
                    src_row = src_row.wrapping_offset(src_step);
                    dst = dst.wrapping_add(step * self.dst_stride);
                }
                return;
            }
            let mut idx = thread_idx() as usize;
            while idx < end * chunks {
                let (r, c) = (idx / chunks, (idx % chunks) * per);
                let valid = r < live && c < self.cols_valid;
                let src = if valid {
                    // SAFETY: r < rows_valid (the map's contract is the caller's).
                    let row = unsafe { self.map.offset(r, self.src_stride) };
                    self.src.wrapping_offset(row + c as isize)
                } else {
                    self.src
                };
                let dst = self.dst.wrapping_add(r * self.dst_stride + c).cast();
                if self.part_cols {
                    let n = if valid {
                        (self.cols_valid - c).min(per)
                    } else {
                        0
                    };
                    let bytes = (n * core::mem::size_of::<E>()) as u32;
                    // SAFETY: as below; only the `n` valid elements of the chunk are read.
                    unsafe { copy16_async_part(dst, src.cast(), bytes) };
                } else {
                    // SAFETY: `dst` row r, chunk c is inside the tile and aligned; `src` is read
                    // only when valid, and then it is in bounds and aligned (the caller's
                    // contract).
                    unsafe { copy16_async(dst, src.cast(), valid) };
                }
                idx += threads;
            }
        } else {
            let live = self.rows.min(self.rows_valid);
            let end = if self.zero_tail { self.rows } else { live };
            let mut idx = thread_idx() as usize;
            while idx < end * self.cols {
                let (r, c) = (idx / self.cols, idx % self.cols);
                let x = if r < live && c < self.cols_valid {
                    // SAFETY: in bounds by the caller's contract.
                    unsafe {
                        *self.src.offset(
                            self.map.offset(r, self.src_stride)
                                + c as isize * self.src_col as isize,
                        )
                    }
                } else {
                    E::ZERO
                };
                // SAFETY: r < rows and c < cols <= dst_stride.
                unsafe { *self.dst.add(r * self.dst_stride + c) = x };
                idx += threads;
            }
        }
    }
}

/// Butterfly all-reduce of `x` over the lanes that share a row of `A`'s accumulator.
#[inline(always)]
pub(crate) fn row_allreduce<A: MmaAtom>(mut x: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    for i in 0..A::ROW_XOR.len() {
        x = op(x, shfl_xor_f32(x, A::ROW_XOR[i]));
    }
    x
}

/// What the score pieces of one key block need: where the block sits, its mask, the pieces, and
/// the bias tile in shared memory.
#[derive(Clone, Copy)]
pub(crate) struct ScoreTile {
    pub(crate) lane: u32,
    pub(crate) row0: usize,
    pub(crate) m0: usize,
    /// Rows per query (GQA packing; 1 otherwise): block row `m0 + r` is query `(m0 + r) / pack`.
    pub(crate) pack: usize,
    /// The wave's first key.
    pub(crate) n0: usize,
    /// Keys below this are hidden (a key range; 0 otherwise).
    pub(crate) k_lo: u32,
    pub(crate) sq: usize,
    pub(crate) full: bool,
    pub(crate) mask: Mask,
    pub(crate) scores: Scores,
    pub(crate) b_s: *const u8,
    pub(crate) bp: usize,
}

impl ScoreTile {
    /// [`ScoreTile::apply`] with the bias type (none, q's type, f32) as its `BIAS`.
    #[inline(always)]
    pub(crate) fn apply_bias<
        A: MmaAtom,
        const TM: usize,
        const TN: usize,
        const SOFTCAP: bool,
        const ALIBI: bool,
        const TRANS: bool,
    >(
        self,
        bias_on: bool,
        bias_f32: bool,
        s: &mut [[A::C; TN]; TM],
    ) {
        match (bias_on, bias_f32) {
            (false, _) => self.apply::<A, TM, TN, SOFTCAP, ALIBI, 0, TRANS>(s),
            (true, false) => self.apply::<A, TM, TN, SOFTCAP, ALIBI, 1, TRANS>(s),
            (true, true) => self.apply::<A, TM, TN, SOFTCAP, ALIBI, 2, TRANS>(s),
        }
    }

    /// `s = logit(s)` on visible elements, `-inf` elsewhere, for a `[TM][TN]` fragment tile;
    /// `SOFTCAP`, `ALIBI` and `BIAS` (0 none, 1 in the element type, 2 f32) are the pieces
    /// present (compile-time: a piece that is off costs nothing per element).
    ///
    /// `TRANS` (the backward's key-major tiles, `Sᵀ = K·Qᵀ`): the tile's rows are keys and its
    /// columns queries, so `row0` and `n0` are key offsets (the wave's first key row, the block's
    /// first key) and `m0` is the first query column; the bias tile `b_s` keeps its
    /// `[queries, keys]` layout. Packing is off (`pack = 1`).
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    fn apply<
        A: MmaAtom,
        const TM: usize,
        const TN: usize,
        const SOFTCAP: bool,
        const ALIBI: bool,
        const BIAS: u8,
        const TRANS: bool,
    >(
        self,
        s: &mut [[A::C; TN]; TM],
    ) {
        // 32-bit indices (registers): `d = j - i` lies in (-2^31, 2^31) for any valid lengths,
        // so the diagonal bounds clamp to i32 without changing any comparison.
        let (lo, hi) = self.mask.diagonal_bounds();
        let clamp = |x: i64| x.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        let (lo, hi) = (clamp(lo), clamp(hi));
        let (sk, sq) = (self.mask.sk as i32, self.sq as i32);
        let (slope, a_off) = self.scores.alibi_terms();
        // ALiBi's |i + off - j| in f32 adds: `i + off - j = base + (t·M - tn·N) + (r - cc)`, one
        // conversion per block and one per lane value (shared by every fragment after GVN);
        // exact while the distances stay below 2^24.
        let a_base = ((self.m0 + self.row0) as i64 + a_off - self.n0 as i64) as f32;
        let cap = self.scores.softcap.unwrap_or(Softcap::IDENTITY);
        for t in 0..TM {
            for tn in 0..TN {
                for v in 0..A::C_VALS {
                    let (r, cc) = A::c_coord(self.lane, v);
                    let (ri, cj) = (self.row0 + t * A::M + r, tn * A::N + cc);
                    let (i, j) = if TRANS {
                        ((self.m0 + cj) as i32, (self.n0 + ri) as i32)
                    } else {
                        (((self.m0 + ri) / self.pack) as i32, (self.n0 + cj) as i32)
                    };
                    let d = j - i;
                    // Rows past Sq_b are never stored; `&` and `|`, not `&&`: no branches.
                    // (`j >= k_lo` unsigned: always true, and folded, when k_lo = 0.)
                    let in_range = j as u32 >= self.k_lo;
                    let vis =
                        (i < sq) & (self.full | ((d >= lo) & (d <= hi) & (j < sk) & in_range));
                    let raw = s[t][tn][v];
                    let mut x = if SOFTCAP {
                        cap.apply(raw)
                    } else {
                        self.scores.scale::<A::E>(raw)
                    };
                    // ri < BLOCK_M and cj < BLOCK_N index inside b_s (Pieces kernels always
                    // reserve it), which holds this block's bias when BIAS > 0.
                    let at = if TRANS {
                        cj * self.bp + ri
                    } else {
                        ri * self.bp + cj
                    };
                    if BIAS == 1 {
                        // SAFETY: see above.
                        x += unsafe { (*self.b_s.cast::<A::E>().add(at)).to_f32() } * LOG2_E;
                    } else if BIAS == 2 {
                        // SAFETY: see above.
                        x += unsafe { *self.b_s.cast::<f32>().add(at) } * LOG2_E;
                    }
                    if ALIBI && TRANS {
                        x -= slope * ((i as i64 + a_off - j as i64) as f32).abs();
                    } else if ALIBI {
                        let k = (t * A::M) as f32 - (tn * A::N) as f32;
                        let lane_part = (r as i32 - cc as i32) as f32;
                        x -= slope * (a_base + k + lane_part).abs();
                    }
                    s[t][tn][v] = if vis { x } else { f32::NEG_INFINITY };
                }
            }
        }
    }
}

/// Zeroes the dropped elements of one `[A::M, TN · A::N]` row tile of P (first row `i0`, first
/// key `n0`).
///
/// One Philox draw covers the 8 keys of one row's aligned key group, and the lanes of a row
/// group (`A::ROW_XOR`: the lanes that together hold a row) all need the same draws. So each of
/// the `G` lanes of a group computes every `G`-th draw and the group exchanges the four words of
/// each draw by shuffles: `1/G` of the Philox work (4 for mma.sync and FMA, 2 for MFMA and WMMA)
/// for four shuffles per draw.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
pub(crate) fn apply_dropout<A: MmaAtom, const TN: usize>(
    dr: &Dropout,
    s: &mut [A::C; TN],
    lane: u32,
    i0: i64,
    n0: usize,
) {
    let nx = A::ROW_XOR.len();
    let g = 1usize << nx;
    let mut all = 0u32; // the lane bits that the group's members differ in
    let mut me = 0usize; // this lane's index in its group
    for b in 0..nx {
        all |= A::ROW_XOR[b];
        if lane & A::ROW_XOR[b] != 0 {
            me |= 1 << b;
        }
    }
    let draws = TN * A::KEY_GROUPS;
    // The (row, key) of value `v0`, the first of key group `kg`, in fragment `tn`.
    let at = move |tn: usize, kg: usize| {
        let mut v0 = 0;
        for v in (0..A::C_VALS).rev() {
            if A::key_group(v) == kg {
                v0 = v;
            }
        }
        let (r, cc) = A::c_coord(lane, v0);
        (i0 + r as i64, (n0 + tn * A::N + cc) as i64)
    };
    for round in 0..draws.div_ceil(g) {
        // This lane's draw of the round (past the last draw it is computed and unused).
        let d = (round * g + me).min(draws - 1);
        let (i, j) = at(d / A::KEY_GROUPS, d % A::KEY_GROUPS);
        let own = dr.draw(i, j);
        for o in 0..g {
            let d = round * g + o;
            if d >= draws {
                break;
            }
            let (tn, kg) = (d / A::KEY_GROUPS, d % A::KEY_GROUPS);
            let mut src = lane & !all;
            for b in 0..nx {
                if o & (1 << b) != 0 {
                    src |= A::ROW_XOR[b];
                }
            }
            let w = [
                shfl_idx_u32(own[0], src),
                shfl_idx_u32(own[1], src),
                shfl_idx_u32(own[2], src),
                shfl_idx_u32(own[3], src),
            ];
            for v in 0..A::C_VALS {
                if A::key_group(v) == kg {
                    let j = (n0 + tn * A::N + A::c_coord(lane, v).1) as i64;
                    if !dr.keep(&w, j) {
                        s[tn][v] = 0.0;
                    }
                }
            }
        }
    }
}

/// Runs one block of the forward pass.
///
/// Generic parameters: the atom `A`, `WAVES` waves per block, `TM` accumulator fragments of query
/// rows per wave, `TN` fragments of keys per wave and key block, `ND` fragments of the head dim
/// (`D = ND · A::N`, the bucket: the problem's `D` and `Dv` are at most this), `KK = TN · A::N /
/// A::K` reduction steps of `P·V`, `SPLIT_KV` (separate K and V buffers, see the module docs),
/// `VARLEN` (varlen and `seqused_k` are compiled in), `PIECES` (the score pieces and dropout;
/// needs `VARLEN`) and `DECODE` (needs `PIECES`: split-KV, GQA packing, paged KV and key ranges,
/// on a tile whose `WAVES` waves share `TM · A::M` query rows and split each key block between
/// them, `BLOCK_N = WAVES · TN · A::N`; their partial softmax states are merged through shared
/// memory at the end). What is compiled in is still enabled by its parameters. Must agree with
/// [`policy::fwd_tile_of`], which `instances.rs` reads.
///
/// The grid is `(ceil(rows / BLOCK_M) · splits, Hq / pack, B or nseq)` with [`policy::THREADS`]
/// threads per block and [`policy::smem_bytes_of`] bytes of dynamic shared memory, where `rows`
/// is `max_seqlen_q · pack` and `splits`, `pack` are 1 outside `DECODE`.
///
/// Register tiles are indexed with plain `for` loops, never slice iterators: an iterator's
/// non-null assumption on a tile's address keeps the tile out of registers on AMD.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
pub fn run<
    A: MmaAtom,
    const WAVES: usize,
    const TM: usize,
    const TN: usize,
    const ND: usize,
    const KK: usize,
    const SPLIT_KV: bool,
    const VARLEN: bool,
    const PIECES: bool,
    const DECODE: bool,
>(
    p: &FwdParams,
) {
    // Work on a by-value copy: no pointer to the parameters (or to any register tile) may be
    // captured, or LLVM keeps them in scratch memory on AMD (non-null assumes on private-space
    // allocas block their promotion to registers).
    let p = *p;
    const {
        assert!(WAVES * WAVE as usize == policy::THREADS as usize);
        assert!((ND * A::N).is_multiple_of(A::K));
        assert!((TN * A::N).is_multiple_of(A::K));
        assert!(KK * A::K == TN * A::N);
        assert!(VARLEN || !PIECES);
        assert!(PIECES || !DECODE);
    }
    // Waves along the keys (KW) and along the rows.
    let kw = if DECODE { WAVES } else { 1 };
    let block_m = WAVES / kw * TM * A::M;
    let block_n = kw * TN * A::N;
    let d = ND * A::N;
    let esize = core::mem::size_of::<A::E>();
    let dp = policy::padded(d, esize); // row stride of q_s, k_s, v_s, in elements
    let pp = policy::padded(block_n, esize); // row stride of p_s, in elements
    let vec16 = p.flags & FLAG_VEC16 != 0;

    let (x_blk, y_blk, b) = block_idx();
    let b = b as usize;
    // Decode: `pack` query heads per kv head are rows of the block (head0 its first), and the
    // grid's x holds `splits` blocks per query block, each with its own chunk of the keys.
    let pack = if DECODE {
        p.pack_gqa.max(1) as usize
    } else {
        1
    };
    let splits = if DECODE { p.num_splits.max(1) } else { 1 };
    let (m_blk, split) = if DECODE {
        (x_blk / splits, (x_blk % splits) as usize)
    } else {
        (x_blk, 0)
    };
    let h = y_blk as usize * pack;
    let g = h / (p.heads_q / p.heads_k) as usize;
    let seq = if DECODE {
        SeqInfo::resolve_with(&p, b, p.flags & FLAG_PAGED != 0)
    } else {
        SeqInfo::of::<VARLEN>(&p, b)
    };
    let (sq, sk) = (seq.sq, seq.sk);
    let (dq, dv) = (p.head_dim as usize, p.head_dim_v as usize);
    let mut mask = Mask::from_params(&p, sq, sk);
    // A key range (Decode) hides the keys outside it; the alignment above keeps the full length.
    let key_range = DECODE && p.flags & FLAG_KEY_RANGE != 0;
    let k_lo = if key_range { p.key_lo as usize } else { 0 };
    if key_range {
        mask.sk = mask.sk.min(p.key_hi as i64);
    }
    // Packed rows: `rows_total = Sq_b · pack` rows, row `r` is query `r / pack`.
    let rows_total = sq * pack;
    // Varlen grids cover the longest sequence; a shorter one's surplus blocks leave at once
    // (uniformly: the whole block returns before any barrier).
    let m_blocks = rows_total.div_ceil(block_m);
    if VARLEN && m_blk as usize >= m_blocks {
        return; // (batch grids have exactly m_blocks blocks)
    }
    // With a causal/window mask the query blocks near the end of a bottom-right (or the
    // start of a top-left) diagonal see the most keys. Blocks are dispatched in launch order,
    // so hand the heaviest ones out first and let the light ones fill the tail.
    let heavy_last = !DECODE && mask.window && mask.right.is_some();
    let m_blk = if heavy_last {
        m_blocks - 1 - m_blk as usize
    } else {
        m_blk as usize
    };
    let m0 = m_blk * block_m;

    let (bt, h64, g64) = (seq.batch as i64, h as i64, g as i64);
    let off = move |base: u64, s: [i64; 3], row0: usize, head: i64| {
        (base as *const A::E)
            .wrapping_offset((bt * s[0] + row0 as i64 * s[1] + head * s[2]) as isize)
    };
    let q_base = off(p.q, p.q_strides, seq.q0, h64);
    // (Paged: the page term replaces the batch and sequence terms.)
    let (k_base, v_base) = if DECODE && p.flags & FLAG_PAGED != 0 {
        let head =
            |base: u64, s: [i64; 3]| (base as *const A::E).wrapping_offset((g64 * s[2]) as isize);
        (head(p.k, p.k_strides), head(p.v, p.v_strides))
    } else {
        (
            off(p.k, p.k_strides, seq.k0, g64),
            off(p.v, p.v_strides, seq.k0, g64),
        )
    };

    // The score pieces and dropout of this (sequence, head); ALiBi's diagonal is the mask's,
    // bottom-right without a mask.
    let alibi_off = if mask.window {
        mask.off
    } else {
        sk as i64 - sq as i64
    };
    let scores = if PIECES {
        Scores::new(&p, b, h, alibi_off)
    } else {
        Scores::plain(&p)
    };
    // (Decode kernels compile in softcap and ALiBi but neither dropout nor bias: registers.)
    let dropout = if PIECES && !DECODE {
        Dropout::new(&p, b, h)
    } else {
        None
    };
    // Shared memory: q_s [BLOCK_M, dp], k_s and v_s [BLOCK_N, dp] (the same buffer unless
    // SPLIT_KV), p_s [BLOCK_M, pp] (one slab per wave; only for atoms without P_IN_REGISTERS).
    let q_s = dyn_smem().cast::<A::E>();
    let k_s = q_s.wrapping_add(block_m * dp);
    let v_s = if SPLIT_KV {
        k_s.wrapping_add(block_n * dp)
    } else {
        k_s
    };
    let p_s = v_s.wrapping_add(block_n * dp);
    // b_s [BLOCK_M, bp]: the bias tile of the current key block, in the bias's type (Pieces with
    // a bias). 16-byte asynchronous copies when the host set FLAG_BIAS_VEC16 (keys contiguous,
    // every row 16-byte aligned), element copies otherwise.
    let p_bytes = if A::P_IN_REGISTERS {
        0
    } else {
        block_m * pp * esize
    };
    let b_s = p_s.cast::<u8>().wrapping_add(p_bytes);
    let bias_on = PIECES && !DECODE && p.bias != 0;
    let bias_vec16 = p.flags & FLAG_BIAS_VEC16 != 0;
    let bias_f32 = p.flags & FLAG_BIAS_F32 != 0;
    let bes = if bias_f32 { 4 } else { esize };
    let bp = policy::padded(block_n, bes); // row stride of b_s, in bias elements
    let bias_base = (p.bias as *const u8).wrapping_offset(
        ((b as i64 * p.bias_strides[0] + h64 * p.bias_strides[1]) * bes as i64) as isize,
    );
    // SAFETY (of calls): rows m0.. < Sq_b and keys n0.. < Sk_b of this (b, h) lie inside the
    // bias the host validated for its logical shape; with FLAG_BIAS_VEC16 every row is 16-byte
    // aligned and keys are contiguous.
    let bias_copy = move |n0: usize| {
        let off = (m0 as i64 * p.bias_strides[2] + n0 as i64 * p.bias_strides[3]) * bes as i64;
        let src = bias_base.wrapping_offset(off as isize);
        let (rows_valid, cols_valid) = (sq.saturating_sub(m0), sk.saturating_sub(n0));
        // One tile copy, issued in the bias's element type (the same fields either way).
        let tile = TileCopy::<u8> {
            dst: b_s,
            dst_stride: bp,
            rows: block_m,
            cols: block_n,
            src,
            src_stride: p.bias_strides[2],
            src_col: p.bias_strides[3],
            rows_valid,
            cols_valid,
            zero_tail: false,
            part_cols: true,
            map: RowMap::Strided,
            stepped: false,
        };
        // SAFETY: see above.
        unsafe {
            if bias_f32 {
                tile.retyped::<f32>().issue(bias_vec16)
            } else {
                tile.retyped::<A::E>().issue(bias_vec16)
            }
        };
    };

    let lane = lane_id();
    // This wave's first query row within the block, and its first key within each key block.
    let wave = wave_id() as usize;
    let row0 = wave / kw * TM * A::M;
    let kw0 = wave % kw * TN * A::N;

    // Paged KV (Decode): key rows come through this sequence's row of the block table, and
    // k/v's batch stride is the page stride.
    let paged = DECODE && p.flags & FLAG_PAGED != 0;
    let table =
        (p.block_table as *const i32).wrapping_offset((b as i64 * p.block_table_stride) as isize);
    // SAFETY (of the Paged map): the keys copied are below Sk_b <= max_pages · page_size (the
    // host's Sk of a paged call), so `j / page` indexes inside the table's row.
    let kv_copy =
        move |dst: *mut A::E, base: *const A::E, strides: [i64; 3], n0: usize, cols, zero_tail| {
            let stride = strides[1];
            let (src, map) = if paged {
                let map = RowMap::Paged {
                    first: n0,
                    table,
                    page: p.page_size as usize,
                    pages: p.num_pages,
                    page_stride: strides[0],
                };
                (base, map)
            } else {
                (
                    base.wrapping_offset((n0 as i64 * stride) as isize),
                    RowMap::Strided,
                )
            };
            TileCopy {
                dst,
                dst_stride: dp,
                rows: block_n,
                cols: d,
                src,
                src_stride: stride,
                src_col: 1,
                rows_valid: sk.saturating_sub(n0),
                cols_valid: cols,
                zero_tail,
                part_cols: false,
                map,
                stepped: DECODE,
            }
        };
    // Decode packs the G query heads of a kv head into the rows (G = 1 unpacked).
    let (q_src, q_map) = if DECODE {
        let map = RowMap::Packed {
            first: m0,
            g: pack,
            head_stride: p.q_strides[2],
        };
        (q_base, map)
    } else {
        (
            q_base.wrapping_offset((m0 as i64 * p.q_strides[1]) as isize),
            RowMap::Strided,
        )
    };
    let q_copy = TileCopy {
        dst: q_s,
        dst_stride: dp,
        rows: block_m,
        cols: d,
        src: q_src,
        src_stride: p.q_strides[1],
        src_col: 1,
        rows_valid: rows_total.saturating_sub(m0),
        cols_valid: dq,
        zero_tail: false,
        part_cols: false,
        map: q_map,
        stepped: DECODE,
    };

    // o: [TM][ND] fragments = [TM·M, D] f32 rows of this wave; m: running row max in exp2 units
    // (the `base` every P of the row was computed against); l: running partial row sum.
    let mut o = [[A::C::default(); ND]; TM];
    let mut m_run = [A::Rows::default(); TM];
    let mut l_run = [A::Rows::default(); TM];
    for t in 0..TM {
        for r in 0..A::ROW_SLOTS {
            m_run[t][r] = f32::NEG_INFINITY;
        }
    }

    // Plain kernels with a positive scale keep the scores unscaled (the row max of raw scores is
    // the row max of scaled ones) and fold the scale into the exp2 argument, one FFMA per score:
    // `2^(s·c - m)`. Other scales (0, negative) and the score pieces produce log2-domain logits
    // first, and `c = 1`.
    let fold = !PIECES && p.scale_log2 > 0.0;
    // f32 outputs resolve the online softmax's rounding: exact rescales and block sums below.
    let exact = matches!(A::E::DTYPE, attn_abi::DType::F32);
    let c = if fold { p.scale_log2 } else { 1.0 };
    // f32: the scale as `hi + lo` (its f32 rounding would otherwise scale every logit of a row
    // by the same `1 + 2^-24`-size factor: a systematic tilt of the softmax at large logits).
    let c_lo = if exact && fold { p.scale_log2_lo } else { 0.0 };
    let scale_x = move |raw: f32| scores.scale::<A::E>(raw);

    // The queries of this block's rows (packed rows r0..r1 hold queries r0 / pack ..).
    let rows = if DECODE {
        (m0 / pack) as i64..(m0 + block_m).div_ceil(pack).min(sq.max(1)) as i64
    } else {
        m0 as i64..(m0 + block_m).min(sq.max(1)) as i64
    };
    let (n_lo, n_hi) = mask.key_blocks(rows.clone(), block_n as i64);
    let (mut n_lo, mut n_hi) = (n_lo as usize, n_hi as usize);
    if DECODE {
        // The key range, then this split's chunk of what is left (an empty chunk still writes
        // its partial: O = 0, lse = -inf).
        n_lo = n_lo.max(k_lo / block_n);
        n_hi = n_hi.min((mask.sk.max(0) as usize).div_ceil(block_n));
        let n = n_hi.saturating_sub(n_lo);
        let chunk = n.div_ceil(splits as usize);
        n_lo += (split * chunk).min(n);
        n_hi = n_hi.min(n_lo + chunk);
        if n_hi < n_lo {
            n_hi = n_lo;
        }
    }

    // SAFETY: (this and every copy below) rows m0.. of q and n0.. of k/v exist up to Sq_b/Sk_b
    // and hold D/Dv elements (host validated, SeqInfo clamps, rows_valid clamps); the host sets
    // FLAG_VEC16 only when every row is 16-byte aligned; the tiles fit the dynamic shared memory.
    unsafe { q_copy.issue(vec16) };
    // Decode is memory-bound: with separate K and V buffers it keeps two tiles in flight (the
    // next K while it waits for V, the next V while it waits for K) and waits for the older.
    let two_deep = DECODE && SPLIT_KV;
    if SPLIT_KV && n_lo < n_hi {
        // SAFETY: as above.
        unsafe { kv_copy(k_s, k_base, p.k_strides, n_lo * block_n, dq, false).issue(vec16) };
        if bias_on {
            bias_copy(n_lo * block_n);
        }
    }
    async_commit();
    if two_deep && n_lo < n_hi {
        // SAFETY: as above.
        unsafe { kv_copy(v_s, v_base, p.v_strides, n_lo * block_n, dv, true).issue(vec16) };
        async_commit();
    }

    for nb in n_lo..n_hi {
        let n0 = nb * block_n;
        if two_deep {
            async_wait_prior();
            sync_threads(); // Q and K(nb) visible (V(nb) may still be in flight)
        } else if SPLIT_KV {
            async_wait_all();
            sync_threads(); // K(nb) and Q visible; every wave is done with V(nb - 1)
            // SAFETY: as above.
            unsafe { kv_copy(v_s, v_base, p.v_strides, n0, dv, true).issue(vec16) };
            async_commit();
        } else {
            sync_threads(); // every wave is done with V(nb - 1) and the bias of nb - 1
            // SAFETY: as above.
            unsafe { kv_copy(k_s, k_base, p.k_strides, n0, dq, false).issue(vec16) };
            if bias_on {
                bias_copy(n0);
            }
            async_commit();
            async_wait_all();
            sync_threads();
        }

        // s: [TM][TN] fragments = S[TM·M, BLOCK_N] = Q·Kᵀ for this wave's rows.
        // The reduction runs over the problem's D, not the bucket (the columns past D are zero):
        // a run-time trip count also keeps this loop rolled, so the compiler cannot hoist every
        // step's operand loads at once and run out of registers.
        let mut s = [[A::C::default(); TN]; TM];
        for kd in 0..dq.div_ceil(A::K) {
            let mut a = [A::load_a(lane, |_, _| A::E::ZERO); TM];
            for t in 0..TM {
                // SAFETY: rows < BLOCK_M and cols < d index inside q_s.
                a[t] = unsafe {
                    A::load_a_smem(lane, q_s.add((row0 + t * A::M) * dp + kd * A::K), dp)
                };
            }
            for tn in 0..TN {
                // SAFETY: rows < BLOCK_N and cols < d index inside k_s.
                let bf = unsafe {
                    A::load_b_nk_smem(lane, k_s.add((kw0 + tn * A::N) * dp + kd * A::K), dp)
                };
                for t in 0..TM {
                    A::mma(&a[t], &bf, &mut s[t][tn]);
                }
            }
        }

        // Scores. Only blocks that straddle the mask's edge (or the end of the keys) pay for
        // per-element visibility. Without pieces, scores are scaled here only when the scale is
        // not folded into the exp2 below (see `fold`); with them, every element goes through
        // `Scores::logit` (a hidden element's bias is never read).
        let full = if DECODE {
            n0 >= k_lo && mask.block_is_full(rows.clone(), n0 as i64..(n0 + block_n) as i64)
        } else {
            mask.block_is_full(
                m0 as i64..(m0 + block_m) as i64,
                n0 as i64..(n0 + block_n) as i64,
            )
        };
        if PIECES {
            // One straight-line instance of the score loop per (softcap, ALiBi, bias type): no branch
            // per element (a branchy per-element body cuts the MMAs into hundreds of tiny basic
            // blocks that ptxas cannot schedule together).
            let tile = ScoreTile {
                lane,
                row0,
                m0,
                pack,
                n0: n0 + kw0,
                k_lo: k_lo as u32,
                sq,
                full,
                mask,
                scores,
                b_s: b_s.wrapping_add(kw0 * bes),
                bp,
            };
            match (scores.softcap.is_some(), scores.alibi.is_some()) {
                (false, false) => {
                    tile.apply_bias::<A, TM, TN, false, false, false>(bias_on, bias_f32, &mut s)
                }
                (true, false) => {
                    tile.apply_bias::<A, TM, TN, true, false, false>(bias_on, bias_f32, &mut s)
                }
                (false, true) => {
                    tile.apply_bias::<A, TM, TN, false, true, false>(bias_on, bias_f32, &mut s)
                }
                (true, true) => {
                    tile.apply_bias::<A, TM, TN, true, true, false>(bias_on, bias_f32, &mut s)
                }
            }
        } else if full {
            if !fold {
                for t in 0..TM {
                    for tn in 0..TN {
                        for v in 0..A::C_VALS {
                            s[t][tn][v] = scale_x(s[t][tn][v]);
                        }
                    }
                }
            }
        } else {
            for t in 0..TM {
                for tn in 0..TN {
                    for v in 0..A::C_VALS {
                        let (r, cc) = A::c_coord(lane, v);
                        let i = (m0 + row0 + t * A::M + r) as i64;
                        let j = (n0 + tn * A::N + cc) as i64;
                        let raw = s[t][tn][v];
                        s[t][tn][v] = if !mask.visible(i, j) {
                            f32::NEG_INFINITY
                        } else if fold {
                            raw
                        } else {
                            scale_x(raw)
                        };
                    }
                }
            }
        }

        // Fold the block into the online softmax. In f32 the row max is kept as the exp2 offset
        // itself, `m = round(max · c)`, so that rescaling by `2^(m_old - m_new)` is exact whenever
        // the max does not move (it is 1), and stays consistent with the offset every earlier P
        // of the row was computed against.
        for t in 0..TM {
            // f32 keeps the row max as the exp2 offset itself (`exact`, see above); 16-bit
            // kernels keep the raw max and rescale by `2^(m_old · c - base)`, whose rounding
            // residual (a few ulp of the logits per block) is far below their output rounding.
            let mut mx = m_run[t];
            if exact {
                for r in 0..A::ROW_SLOTS {
                    mx[r] = f32::NEG_INFINITY;
                }
            }
            for tn in 0..TN {
                for v in 0..A::C_VALS {
                    let slot = A::row_slot(v);
                    mx[slot] = mx[slot].max(s[t][tn][v]);
                }
            }
            // base = the row's new exp2 offset (0 while nothing is visible: no NaN).
            let mut base = A::Rows::default();
            let mut alpha = A::Rows::default();
            for r in 0..A::ROW_SLOTS {
                let red = row_allreduce::<A>(mx[r], f32::max);
                if exact {
                    let m_new = m_run[t][r].max(red * c);
                    base[r] = if m_new == f32::NEG_INFINITY {
                        0.0
                    } else {
                        m_new
                    };
                    alpha[r] = exp2(m_run[t][r] - base[r]);
                    m_run[t][r] = m_new;
                } else {
                    base[r] = if red == f32::NEG_INFINITY {
                        0.0
                    } else {
                        red * c
                    };
                    alpha[r] = exp2(fma(m_run[t][r], c, -base[r]));
                    m_run[t][r] = red;
                }
                l_run[t][r] *= alpha[r];
            }
            for nd in 0..ND {
                for v in 0..A::C_VALS {
                    o[t][nd][v] *= alpha[A::row_slot(v)];
                }
            }
            // l += the block's row sums (before dropout: lse is independent of it). In f32 they
            // are summed per block first, so that the rounding error of l grows with the number
            // of blocks rather than of keys (its relative error scales every output of the
            // row); 16-bit outputs cannot see the difference and keep the register.
            let mut bsum = A::Rows::default();
            for tn in 0..TN {
                for v in 0..A::C_VALS {
                    let slot = A::row_slot(v);
                    let x = s[t][tn][v];
                    let pv = if exact {
                        // (a hidden -inf must not meet c_lo: -inf · lo - base is not -inf)
                        let lo = if x == f32::NEG_INFINITY {
                            0.0
                        } else {
                            x * c_lo
                        };
                        exp2(fma(x, c, lo - base[slot]))
                    } else {
                        exp2(fma(x, c, -base[slot]))
                    };
                    if exact {
                        bsum[slot] += pv;
                    } else {
                        l_run[t][slot] += pv;
                    }
                    s[t][tn][v] = pv;
                }
            }
            if exact {
                for r in 0..A::ROW_SLOTS {
                    l_run[t][r] += bsum[r];
                }
            }
            if let Some(dr) = dropout {
                apply_dropout::<A, TN>(
                    &dr,
                    &mut s[t],
                    lane,
                    (m0 + row0 + t * A::M) as i64,
                    n0 + kw0,
                );
            }
        }

        if !A::P_IN_REGISTERS {
            // P (rounded to the input type) into this wave's slab of p_s, in the C layout.
            for t in 0..TM {
                for tn in 0..TN {
                    let frag = s[t][tn];
                    for v in 0..A::C_VALS {
                        let (r, cc) = A::c_coord(lane, v);
                        // SAFETY: row < BLOCK_M and col < BLOCK_N <= pp index inside p_s.
                        unsafe {
                            *p_s.add((row0 + t * A::M + r) * pp + kw0 + tn * A::N + cc) =
                                A::E::from_f32(frag[v])
                        };
                    }
                }
            }
        }
        if two_deep {
            sync_threads(); // every wave is done with K(nb)
            if nb + 1 < n_hi {
                // SAFETY: as above.
                unsafe { kv_copy(k_s, k_base, p.k_strides, n0 + block_n, dq, false).issue(vec16) };
                async_commit();
                async_wait_prior();
            } else {
                async_wait_all();
            }
            sync_threads(); // V(nb) visible
        } else if SPLIT_KV {
            async_wait_all();
            sync_threads(); // V(nb) visible; every wave is done with K(nb)
            if nb + 1 < n_hi {
                // SAFETY: as above.
                unsafe { kv_copy(k_s, k_base, p.k_strides, n0 + block_n, dq, false).issue(vec16) };
                if bias_on {
                    bias_copy(n0 + block_n); // every wave is done with this block's bias too
                }
                async_commit();
            }
        } else {
            sync_threads(); // every wave is done with K(nb)
            // SAFETY: as above.
            unsafe { kv_copy(v_s, v_base, p.v_strides, n0, dv, true).issue(vec16) };
            async_commit();
            async_wait_all();
            sync_threads();
        }

        // o += P·V: [TM·M, BLOCK_N] · [BLOCK_N, D]. P becomes A operands once (S is dead after
        // this), then each head-dim fragment needs only its own V fragments: this loop order keeps
        // one fragment column of V live instead of the whole tile.
        let mut pa = [[A::load_a(lane, |_, _| A::E::ZERO); KK]; TM];
        for t in 0..TM {
            for kk in 0..KK {
                pa[t][kk] = if A::P_IN_REGISTERS {
                    A::p_to_a::<TN>(&s[t], kk)
                } else {
                    // SAFETY: rows < BLOCK_M and cols < BLOCK_N index inside p_s.
                    unsafe {
                        A::load_a_smem(lane, p_s.add((row0 + t * A::M) * pp + kw0 + kk * A::K), pp)
                    }
                };
            }
        }
        // f32 sums each block's P·V into a fresh fragment and adds it to O (two-level
        // summation: the rounding error grows with the number of blocks, not of keys; one
        // fragment column of temporaries at a time); 16-bit accumulates in place.
        for nd in 0..ND {
            let mut blk = [A::C::default(); TM];
            for kk in 0..KK {
                // SAFETY: rows < BLOCK_N and cols < d index inside v_s.
                let bf = unsafe {
                    A::load_b_kn_smem(lane, v_s.add((kw0 + kk * A::K) * dp + nd * A::N), dp)
                };
                for t in 0..TM {
                    if exact {
                        A::mma(&pa[t][kk], &bf, &mut blk[t]);
                    } else {
                        A::mma(&pa[t][kk], &bf, &mut o[t][nd]);
                    }
                }
            }
            if exact {
                for t in 0..TM {
                    for v in 0..A::C_VALS {
                        o[t][nd][v] += blk[t][v];
                    }
                }
            }
        }
        if two_deep && nb + 1 < n_hi {
            sync_threads(); // every wave is done with V(nb)
            // SAFETY: as above.
            unsafe { kv_copy(v_s, v_base, p.v_strides, n0 + block_n, dv, true).issue(vec16) };
            async_commit();
        }
    }
    // No copy may be in flight when the block exits (a block with no key block issued Q only).
    async_wait_all();

    // Epilogue: O *= rescale / l, lse = ln2 · (m + log2 l); rows with nothing visible get O = 0,
    // lse = -inf. `rescale = 1 / (1 - p)` with dropout, 1 otherwise.
    let rescale = if dropout.is_some() {
        p.dropout_rescale
    } else {
        1.0
    };
    if DECODE {
        // The waves of a block hold partial softmax states of the same rows: merge them.
        let m_fin = core::array::from_fn(|t| {
            let mut m = A::Rows::default();
            for r in 0..A::ROW_SLOTS {
                m[r] = if exact { m_run[t][r] } else { m_run[t][r] * c };
            }
            m
        });
        let (o, l) = merge_waves::<A, TM, ND>(o, m_fin, l_run, kw, block_m, d);
        if !wave.is_multiple_of(kw) {
            return;
        }
        let Some((m, l)) = l else { return };
        store_decode::<A, TM, ND>(&p, &o, &m, &l, rescale, m0 + row0, pack, split);
        return;
    }
    // The sequence is resolved again (not kept live through the main loop: registers).
    let (_, h, b) = block_idx();
    let seq = SeqInfo::of::<VARLEN>(&p, b as usize);
    let (bt, h64) = (seq.batch as i64, h as i64);
    let o_base = (p.out as *mut A::E).wrapping_offset(
        (bt * p.o_strides[0] + seq.q0 as i64 * p.o_strides[1] + h64 * p.o_strides[2]) as isize,
    );
    let lse_base = (p.lse as *mut f32)
        .wrapping_offset((bt * p.lse_strides[0] + h64 * p.lse_strides[1] + seq.q0 as i64) as isize);
    for t in 0..TM {
        let mut inv = A::Rows::default();
        let mut lse = A::Rows::default();
        for r in 0..A::ROW_SLOTS {
            let l = row_allreduce::<A>(l_run[t][r], |x, y| x + y);
            let seen = l > 0.0;
            inv[r] = if seen { rcp(l) * rescale } else { 0.0 };
            lse[r] = if seen {
                (if exact { m_run[t][r] } else { m_run[t][r] * c } + log2(l)) * LN_2
            } else {
                f32::NEG_INFINITY
            };
        }
        for nd in 0..ND {
            let frag = o[t][nd];
            for v in 0..A::C_VALS {
                let (r, cc) = A::c_coord(lane, v);
                let i = m0 + row0 + t * A::M + r;
                let col = nd * A::N + cc;
                if i < sq && col < dv {
                    let x = A::E::from_f32(frag[v] * inv[A::row_slot(v)]);
                    // SAFETY: i < Sq_b and col < Dv are inside `out` (host validated).
                    unsafe {
                        *o_base
                            .wrapping_offset((i as i64 * p.o_strides[1]) as isize)
                            .add(col) = x
                    };
                }
                // The lane holding column 0 of a row writes its lse.
                if nd == 0 && cc == 0 && i < sq && p.lse != 0 {
                    // SAFETY: i < Sq_b is inside `lse` (host validated, row stride 1).
                    unsafe { *lse_base.add(i) = lse[A::row_slot(v)] };
                }
            }
        }
    }
}

/// The query row (within the block) of accumulator row slot `r` on `lane`.
#[inline(always)]
pub(crate) fn slot_row<A: MmaAtom>(lane: u32, r: usize) -> usize {
    let mut row = 0;
    for v in (0..A::C_VALS).rev() {
        if A::row_slot(v) == r {
            row = A::c_coord(lane, v).0;
        }
    }
    row
}

/// Merges the partial softmax states of the `kw` waves that share each block row (the `Decode`
/// tile) through shared memory: wave `w` holds, per row, its max `m_w` (exp2 units, `-inf` when it
/// saw nothing), its per-lane partial row sums `l` and its unnormalised `O_w` (against `m_w`).
/// With `M = max_w m_w`,
///
/// ```text
/// l = Σ_w l_w 2^(m_w - M),   O = Σ_w O_w 2^(m_w - M)
/// ```
///
/// The first wave of each row group gets `(O, Some((M, l)))` (`l` summed over the row); the others
/// get their input back and `None`. Every wave must call it (it has block barriers); shared memory
/// is reused, so the main loop must be done with it.
#[inline(always)]
#[allow(clippy::needless_range_loop, clippy::type_complexity)]
fn merge_waves<A: MmaAtom, const TM: usize, const ND: usize>(
    mut o: [[A::C; ND]; TM],
    m_w: [A::Rows; TM],
    l_part: [A::Rows; TM],
    kw: usize,
    block_m: usize,
    d: usize,
) -> ([[A::C; ND]; TM], Option<([A::Rows; TM], [A::Rows; TM])>) {
    let lane = lane_id();
    let wave = wave_id() as usize;
    let (wn, row0) = (wave % kw, wave / kw * TM * A::M);
    // Shared memory (f32): ml [2][kw][block_m] (each wave's m, then l, per row) and
    // os [kw - 1][block_m][d + 4] (the O of waves 1.. of each group, scaled to M).
    let ml = dyn_smem().cast::<f32>();
    let osp = d + 4;
    let os = ml.wrapping_add(2 * kw * block_m);
    sync_threads(); // every wave is done with the tiles
    let mut l_w = [A::Rows::default(); TM];
    for t in 0..TM {
        for r in 0..A::ROW_SLOTS {
            l_w[t][r] = row_allreduce::<A>(l_part[t][r], |x, y| x + y);
        }
        for v in 0..A::C_VALS {
            let (r, cc) = A::c_coord(lane, v);
            if cc == 0 {
                // One lane per row writes (the one holding its column 0).
                let row = row0 + t * A::M + r;
                let slot = A::row_slot(v);
                let m = if l_w[t][slot] > 0.0 {
                    m_w[t][slot]
                } else {
                    f32::NEG_INFINITY
                };
                // SAFETY: wn < kw and row < block_m index inside ml.
                unsafe {
                    *ml.add(wn * block_m + row) = m;
                    *ml.add((kw + wn) * block_m + row) = l_w[t][slot];
                }
            }
        }
    }
    sync_threads();
    let mut m_all = [A::Rows::default(); TM];
    let mut l_all = [A::Rows::default(); TM];
    let mut own = [A::Rows::default(); TM];
    for t in 0..TM {
        for r in 0..A::ROW_SLOTS {
            let row = row0 + t * A::M + slot_row::<A>(lane, r);
            let at = |w: usize| {
                // SAFETY: w < kw and row < block_m index inside ml.
                unsafe {
                    (
                        *ml.add(w * block_m + row),
                        *ml.add((kw + w) * block_m + row),
                    )
                }
            };
            let mut mx = f32::NEG_INFINITY;
            for w in 0..kw {
                mx = mx.max(at(w).0);
            }
            let mut l = 0.0;
            for w in 0..kw {
                let (m, lw) = at(w);
                if m != f32::NEG_INFINITY {
                    l += lw * exp2(m - mx);
                }
            }
            let mine = at(wn).0;
            own[t][r] = if mine == f32::NEG_INFINITY {
                0.0
            } else {
                exp2(mine - mx)
            };
            m_all[t][r] = mx;
            l_all[t][r] = l;
        }
        for nd in 0..ND {
            for v in 0..A::C_VALS {
                o[t][nd][v] *= own[t][A::row_slot(v)];
            }
        }
    }
    if kw > 1 {
        if wn > 0 {
            for t in 0..TM {
                for nd in 0..ND {
                    for v in 0..A::C_VALS {
                        let (r, cc) = A::c_coord(lane, v);
                        let at = ((wn - 1) * block_m + row0 + t * A::M + r) * osp + nd * A::N + cc;
                        // SAFETY: inside os (rows < block_m, cols < d).
                        unsafe { *os.add(at) = o[t][nd][v] };
                    }
                }
            }
        }
        sync_threads();
        if wn == 0 {
            for w in 1..kw {
                for t in 0..TM {
                    for nd in 0..ND {
                        for v in 0..A::C_VALS {
                            let (r, cc) = A::c_coord(lane, v);
                            let at =
                                ((w - 1) * block_m + row0 + t * A::M + r) * osp + nd * A::N + cc;
                            // SAFETY: as above.
                            o[t][nd][v] += unsafe { *os.add(at) };
                        }
                    }
                }
            }
        }
    }
    if wn == 0 {
        (o, Some((m_all, l_all)))
    } else {
        (o, None)
    }
}

/// Stores the rows of one `Decode` wave, whose first packed row is `m0`: packed row `m0 + r` is
/// query `i = (m0 + r) / pack` of head `h0 + (m0 + r) % pack`. One split writes `O · rescale / l` and lse to `out` and
/// `lse`; with more, the f32 partial of `split` goes to the workspace for the merge kernel.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
fn store_decode<A: MmaAtom, const TM: usize, const ND: usize>(
    p: &FwdParams,
    o: &[[A::C; ND]; TM],
    m: &[A::Rows; TM],
    l: &[A::Rows; TM],
    rescale: f32,
    m0: usize,
    pack: usize,
    split: usize,
) {
    let lane = lane_id();
    let (_, y, b) = block_idx();
    let seq = SeqInfo::resolve_with(p, b as usize, p.flags & FLAG_PAGED != 0);
    let h0 = y as usize * pack;
    let dv = p.head_dim_v as usize;
    let rows_total = seq.sq * pack;
    let partial = p.num_splits > 1;
    let bt = seq.batch as i64;
    for t in 0..TM {
        let mut inv = A::Rows::default();
        let mut lse = A::Rows::default();
        for r in 0..A::ROW_SLOTS {
            let seen = l[t][r] > 0.0;
            inv[r] = if seen { rcp(l[t][r]) * rescale } else { 0.0 };
            lse[r] = if seen {
                (m[t][r] + log2(l[t][r])) * LN_2
            } else {
                f32::NEG_INFINITY
            };
        }
        for nd in 0..ND {
            for v in 0..A::C_VALS {
                let (r, cc) = A::c_coord(lane, v);
                let pr = m0 + t * A::M + r;
                let col = nd * A::N + cc;
                if pr >= rows_total {
                    continue;
                }
                let (i, h) = ((seq.q0 + pr / pack) as i64, (h0 + pr % pack) as i64);
                let x = o[t][nd][v] * inv[A::row_slot(v)];
                if col < dv {
                    if partial {
                        let s = &p.ws_o_strides;
                        let at = split as i64 * s[0] + bt * s[1] + i * s[2] + h * s[3];
                        // SAFETY: the host sized the workspace for [splits, B, Sq, Hq, Dv].
                        unsafe { *(p.ws_o as *mut f32).wrapping_offset(at as isize).add(col) = x };
                    } else {
                        let s = &p.o_strides;
                        let at = bt * s[0] + i * s[1] + h * s[2];
                        // SAFETY: i < Sq_b and col < Dv are inside `out` (host validated).
                        unsafe {
                            *(p.out as *mut A::E).wrapping_offset(at as isize).add(col) =
                                A::E::from_f32(x)
                        };
                    }
                }
                // The lane holding column 0 of a row writes its lse.
                if nd == 0 && cc == 0 {
                    let lv = lse[A::row_slot(v)];
                    if partial {
                        let s = &p.ws_lse_strides;
                        let at = split as i64 * s[0] + bt * s[1] + h * s[2] + i;
                        // SAFETY: the host sized the workspace for [splits, B, Hq, Sq].
                        unsafe { *(p.ws_lse as *mut f32).wrapping_offset(at as isize) = lv };
                    } else if p.lse != 0 {
                        let s = &p.lse_strides;
                        let at = bt * s[0] + h * s[1] + i;
                        // SAFETY: i < Sq_b is inside `lse` (host validated, row stride 1).
                        unsafe { *(p.lse as *mut f32).wrapping_offset(at as isize) = lv };
                    }
                }
            }
        }
    }
}
