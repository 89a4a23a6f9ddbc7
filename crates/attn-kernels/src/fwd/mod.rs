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
    WAVE, async_commit, async_wait_all, block_idx, copy16_async, dyn_smem, exp2, fma, lane_id,
    log2, rcp, shfl_xor_f32, sync_threads, thread_idx, wave_id,
};
use crate::atom::MmaAtom;
use crate::mask::Mask;
use crate::numeric::{Element, LN_2};
use crate::score::{Dropout, Scores};
use crate::seq::SeqInfo;
use attn_abi::{FLAG_VEC16, FwdParams};

pub mod dropout_mask;

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
struct TileCopy<E> {
    dst: *mut E,
    dst_stride: usize,
    rows: usize,
    cols: usize,
    src: *const E,
    src_stride: i64,
    rows_valid: usize,
    cols_valid: usize,
    zero_tail: bool,
}

impl<E: Element> TileCopy<E> {
    /// Issues the copy by the whole block: 16-byte chunks (asynchronous where the target can)
    /// when `vec16`, elements otherwise. Completes at `async_wait_all` + `sync_threads`.
    ///
    /// # Safety
    /// Source rows `r < rows_valid` are readable for `cols_valid` elements; `dst` holds `rows`
    /// rows of `dst_stride >= cols` elements of shared memory. With `vec16`, every source row and
    /// `dst` row start is 16-byte aligned and `cols_valid` is a multiple of `16 / size_of::<E>()`.
    #[inline(always)]
    unsafe fn issue(self, vec16: bool) {
        let threads = policy::THREADS as usize;
        if vec16 {
            let per = 16 / core::mem::size_of::<E>();
            let chunks = self.cols / per;
            let live = self.rows.min(self.rows_valid);
            let end = if self.zero_tail { self.rows } else { live };
            let mut idx = thread_idx() as usize;
            while idx < end * chunks {
                let (r, c) = (idx / chunks, (idx % chunks) * per);
                let valid = r < live && c < self.cols_valid;
                let src = if valid {
                    self.src
                        .wrapping_offset(r as isize * self.src_stride as isize + c as isize)
                } else {
                    self.src
                };
                // SAFETY: `dst` row r, chunk c is inside the tile and aligned; `src` is read only
                // when valid, and then it is in bounds and aligned (the caller's contract).
                unsafe {
                    copy16_async(
                        self.dst.add(r * self.dst_stride + c).cast(),
                        src.cast(),
                        valid,
                    )
                };
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
                        *self
                            .src
                            .offset(r as isize * self.src_stride as isize + c as isize)
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
fn row_allreduce<A: MmaAtom>(mut x: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    for i in 0..A::ROW_XOR.len() {
        x = op(x, shfl_xor_f32(x, A::ROW_XOR[i]));
    }
    x
}

/// Runs one block of the forward pass.
///
/// Generic parameters: the atom `A`, `WAVES` waves per block, `TM` accumulator fragments of query
/// rows per wave, `TN` fragments of keys per key block (`BLOCK_N = TN · A::N`), `ND` fragments
/// of the head dim (`D = ND · A::N`, the bucket: the problem's `D` and `Dv` are at most this),
/// `KK = BLOCK_N / A::K` reduction steps of `P·V`, `SPLIT_KV` (separate K and V buffers, see
/// the module docs), `VARLEN` (varlen and `seqused_k` are compiled in) and `PIECES` (the score
/// pieces and dropout are compiled in; needs `VARLEN`). What is compiled in is still enabled by its
/// parameters. Must agree with [`policy::fwd_tile`], which `instances.rs` reads.
///
/// The grid is `(ceil(max_seqlen_q / BLOCK_M), Hq, B or nseq)` with [`policy::THREADS`] threads
/// per block and [`policy::smem_bytes`] bytes of dynamic shared memory.
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
    }
    let block_m = WAVES * TM * A::M;
    let block_n = TN * A::N;
    let d = ND * A::N;
    let esize = core::mem::size_of::<A::E>();
    let dp = policy::padded(d, esize); // row stride of q_s, k_s, v_s, in elements
    let pp = policy::padded(block_n, esize); // row stride of p_s, in elements
    let vec16 = p.flags & FLAG_VEC16 != 0;

    let (m_blk, h, b) = block_idx();
    let (h, b) = (h as usize, b as usize);
    let g = h / (p.heads_q / p.heads_k) as usize;
    const { assert!(VARLEN || !PIECES) };
    let seq = SeqInfo::of::<VARLEN>(&p, b);
    let (sq, sk) = (seq.sq, seq.sk);
    let (dq, dv) = (p.head_dim as usize, p.head_dim_v as usize);
    let mask = Mask::from_params(&p, sq, sk);
    // Varlen grids cover the longest sequence; a shorter one's surplus blocks leave at once
    // (uniformly: the whole block returns before any barrier).
    let m_blocks = sq.div_ceil(block_m);
    if m_blk as usize >= m_blocks {
        return;
    }
    // With a causal/window mask the query blocks near the end of a bottom-right (or the
    // start of a top-left) diagonal see the most keys. Blocks are dispatched in launch order,
    // so hand the heaviest ones out first and let the light ones fill the tail.
    let heavy_last = mask.window && mask.right.is_some();
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
    let k_base = off(p.k, p.k_strides, seq.k0, g64);
    let v_base = off(p.v, p.v_strides, seq.k0, g64);

    // The score pieces and dropout of this (sequence, head); ALiBi's diagonal is the mask's,
    // bottom-right without a mask.
    let alibi_off = if mask.window {
        mask.off
    } else {
        sk as i64 - sq as i64
    };
    let scores = if PIECES {
        Scores::new::<A::E>(&p, b, h, alibi_off)
    } else {
        Scores::plain(&p)
    };
    let dropout = if PIECES { Dropout::new(&p, b, h) } else { None };
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

    let lane = lane_id();
    let row0 = wave_id() as usize * TM * A::M; // first query row of this wave, within the block

    let kv_copy =
        move |dst: *mut A::E, base: *const A::E, stride: i64, n0: usize, cols, zero_tail| {
            TileCopy {
                dst,
                dst_stride: dp,
                rows: block_n,
                cols: d,
                src: base.wrapping_offset((n0 as i64 * stride) as isize),
                src_stride: stride,
                rows_valid: sk.saturating_sub(n0),
                cols_valid: cols,
                zero_tail,
            }
        };
    let q_copy = TileCopy {
        dst: q_s,
        dst_stride: dp,
        rows: block_m,
        cols: d,
        src: q_base.wrapping_offset((m0 as i64 * p.q_strides[1]) as isize),
        src_stride: p.q_strides[1],
        rows_valid: sq.saturating_sub(m0),
        cols_valid: dq,
        zero_tail: false,
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
    let c = if fold { p.scale_log2 } else { 1.0 };

    let rows = m0 as i64..(m0 + block_m).min(sq.max(1)) as i64;
    let (n_lo, n_hi) = mask.key_blocks(rows, block_n as i64);
    let (n_lo, n_hi) = (n_lo as usize, n_hi as usize);

    // SAFETY: (this and every copy below) rows m0.. of q and n0.. of k/v exist up to Sq_b/Sk_b
    // and hold D/Dv elements (host validated, SeqInfo clamps, rows_valid clamps); the host sets
    // FLAG_VEC16 only when every row is 16-byte aligned; the tiles fit the dynamic shared memory.
    unsafe { q_copy.issue(vec16) };
    if SPLIT_KV && n_lo < n_hi {
        // SAFETY: as above.
        unsafe { kv_copy(k_s, k_base, p.k_strides[1], n_lo * block_n, dq, false).issue(vec16) };
    }
    async_commit();

    for nb in n_lo..n_hi {
        let n0 = nb * block_n;
        if SPLIT_KV {
            async_wait_all();
            sync_threads(); // K(nb) and Q visible; every wave is done with V(nb - 1)
            // SAFETY: as above.
            unsafe { kv_copy(v_s, v_base, p.v_strides[1], n0, dv, true).issue(vec16) };
            async_commit();
        } else {
            sync_threads(); // every wave is done with V(nb - 1)
            // SAFETY: as above.
            unsafe { kv_copy(k_s, k_base, p.k_strides[1], n0, dq, false).issue(vec16) };
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
                let bf =
                    unsafe { A::load_b_nk_smem(lane, k_s.add(tn * A::N * dp + kd * A::K), dp) };
                for t in 0..TM {
                    A::mma(&a[t], &bf, &mut s[t][tn]);
                }
            }
        }

        // Scores. With the pieces every element goes through them (the bias is read only for
        // visible elements of real rows). Otherwise only blocks that straddle the mask's edge (or
        // the end of the keys) pay for per-element visibility, and scores are scaled here only
        // when the scale is not folded into the exp2 below (see `fold`).
        let full = !PIECES
            && mask.block_is_full(
                m0 as i64..(m0 + block_m) as i64,
                n0 as i64..(n0 + block_n) as i64,
            );
        if full {
            if !fold {
                for t in 0..TM {
                    for tn in 0..TN {
                        for v in 0..A::C_VALS {
                            s[t][tn][v] *= p.scale_log2;
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
                        // Rows past Sq_b are never stored; only the pieces must not read
                        // their bias.
                        let real = !PIECES || i < sq as i64;
                        s[t][tn][v] = if !(real && mask.visible(i, j)) {
                            f32::NEG_INFINITY
                        } else if PIECES {
                            // SAFETY: i < Sq_b and j < Sk_b (visible).
                            unsafe { scores.logit::<A::E>(raw, i, j) }
                        } else if fold {
                            raw
                        } else {
                            raw * p.scale_log2
                        };
                    }
                }
            }
        }

        // Fold the block into the online softmax. The row max is kept as the exp2 offset itself,
        // `m = round(max · c)`, so that rescaling by `2^(m_old - m_new)` is exact whenever the max
        // does not move (it is 1), and stays consistent with the offset every earlier P of the
        // row was computed against.
        for t in 0..TM {
            let mut mx = A::Rows::default();
            for r in 0..A::ROW_SLOTS {
                mx[r] = f32::NEG_INFINITY;
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
                let m_new = m_run[t][r].max(row_allreduce::<A>(mx[r], f32::max) * c);
                base[r] = if m_new == f32::NEG_INFINITY {
                    0.0
                } else {
                    m_new
                };
                alpha[r] = exp2(m_run[t][r] - base[r]);
                l_run[t][r] *= alpha[r];
                m_run[t][r] = m_new;
            }
            for nd in 0..ND {
                for v in 0..A::C_VALS {
                    o[t][nd][v] *= alpha[A::row_slot(v)];
                }
            }
            for tn in 0..TN {
                let mut w = [0u32; 4]; // the Philox draw of the current key group
                for v in 0..A::C_VALS {
                    let slot = A::row_slot(v);
                    let pv = exp2(fma(s[t][tn][v], c, -base[slot]));
                    l_run[t][slot] += pv; // before dropout: lse is independent of it
                    s[t][tn][v] = pv;
                    if let Some(dr) = dropout {
                        let (r, cc) = A::c_coord(lane, v);
                        let i = (m0 + row0 + t * A::M + r) as i64;
                        let j = (n0 + tn * A::N + cc) as i64;
                        // Values of one key group are consecutive (KEY_GROUPS' contract): one
                        // draw per group. The condition is a constant once unrolled.
                        if v == 0 || A::key_group(v) != A::key_group(v - 1) {
                            w = dr.draw(i, j);
                        }
                        if !dr.keep(&w, j) {
                            s[t][tn][v] = 0.0;
                        }
                    }
                }
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
                            *p_s.add((row0 + t * A::M + r) * pp + tn * A::N + cc) =
                                A::E::from_f32(frag[v])
                        };
                    }
                }
            }
        }
        if SPLIT_KV {
            async_wait_all();
            sync_threads(); // V(nb) visible; every wave is done with K(nb)
            if nb + 1 < n_hi {
                // SAFETY: as above.
                unsafe {
                    kv_copy(k_s, k_base, p.k_strides[1], n0 + block_n, dq, false).issue(vec16)
                };
                async_commit();
            }
        } else {
            sync_threads(); // every wave is done with K(nb)
            // SAFETY: as above.
            unsafe { kv_copy(v_s, v_base, p.v_strides[1], n0, dv, true).issue(vec16) };
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
                    unsafe { A::load_a_smem(lane, p_s.add((row0 + t * A::M) * pp + kk * A::K), pp) }
                };
            }
        }
        for nd in 0..ND {
            for kk in 0..KK {
                // SAFETY: rows < BLOCK_N and cols < d index inside v_s.
                let bf =
                    unsafe { A::load_b_kn_smem(lane, v_s.add(kk * A::K * dp + nd * A::N), dp) };
                for t in 0..TM {
                    A::mma(&pa[t][kk], &bf, &mut o[t][nd]);
                }
            }
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
                (m_run[t][r] + log2(l)) * LN_2
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
