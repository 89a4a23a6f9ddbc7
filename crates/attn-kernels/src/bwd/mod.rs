//! The backward pass (semantics.md §5), written once over an [`MmaAtom`].
//!
//! For sequence `b`, query head `h` (kv head `g`), query row `i`, key row `j`, with `x_ij` the
//! forward's log2-domain logit (the same score pieces, mask and dropout: [`crate::score`]) and
//! `lse_i` the forward's:
//!
//! ```text
//! P_ij   = 2^(x_ij - log2(e) · lse_i)                 (0 where hidden or lse_i = -inf)
//! D_i    = Σ_c dout_ic · out_ic                        (preprocess)
//! dV_j   = Σ_i P_ij Z_ij dout_i                        (Z = dropout's keep / (1 - p))
//! dP_ij  = Z_ij · dout_i · v_j
//! dS_ij  = P_ij (dP_ij - D_i)                          (= dBias_ij)
//! dS'_ij = dS_ij · (1 - tanh²(scale · q_i·k_j / cap))  (softcap only)
//! dQ_i   = scale Σ_j dS'_ij k_j,   dK_j = scale Σ_i dS'_ij q_i
//! ```
//!
//! Two main kernels, each recomputing `P` and `dP` and each writing its gradients exactly once,
//! so the backward is deterministic by construction (no atomics, no f32 workspace):
//!
//! - [`run_dq`]: one block per (query block, query head); every wave owns `TM · M` query rows and
//!   walks the visible key blocks: `S = Q·Kᵀ`, `dP = dO·Vᵀ` (both `[rows, keys]`, the forward's
//!   orientation and score loop), then `dQ += dS'·K` and `dbias = dS`.
//! - [`run_dkdv`]: one block per (key block, kv head); every wave owns `TM · M` key rows and walks
//!   the visible query blocks of each of the group's query heads: `Sᵀ = K·Qᵀ`, `dPᵀ = V·dOᵀ`
//!   (`[keys, queries]`: the same score pieces, transposed), then `dV += (P∘Z)ᵀ·dO` and
//!   `dK += dS'ᵀ·Q`. GQA's sum over the group stays in registers.
//!
//! Both use only the forward's operand forms (`A` from shared memory or from an accumulator, `B`
//! as `[n, k]` or `[k, n]` rows), so every atom serves them unchanged. At D = 256 the gradient
//! accumulators are split into head-dim slices across blocks (`BwdParams::slices`).
//! The cost is one extra `S` and `dP` (7 matrix products instead of 5).
//!
//! The fused kernel (`run_dkdv` with `DQ`: the non-deterministic backward, plain problems) walks
//! as `run_dkdv` and adds each step's `dQ = dS·K` over the block's keys to an f32 workspace by
//! atomics (`fused_dq`; zeroed by [`preprocess`], scaled and rounded by [`post`]): 5 products.
use crate::arch::{
    BULK_REDUCE, WAVE, async_commit, async_wait_all, atomic_add_f32, block_idx, bulk_commit,
    bulk_reduce_add_f32, bulk_wait_all, bulk_wait_read, copy4_async, dyn_smem, exp2,
    fence_proxy_async, fma, lane_id, sync_threads, thread_idx, wave_id,
};
use crate::atom::MmaAtom;
use crate::fwd::{RowMap, ScoreTile, TileCopy, apply_dropout, policy::padded, slot_row};
use crate::mask::Mask;
use crate::numeric::{Element, LN_2};
use crate::score::{Dropout, Scores};
use crate::seq::SeqInfo;
use attn_abi::{
    BWD_DBIAS, BWD_DBIAS_F32, BwdParams, FLAG_BIAS_F32, FLAG_BIAS_VEC16, FLAG_VEC16, FwdParams,
    ZeroParams,
};

pub mod policy;

const LOG2_E: f32 = core::f32::consts::LOG2_E;

/// `delta_i = Σ_c dout_ic · out_ic` (f32, in `lse`'s layout), computed as the diagonal of
/// `dO·Oᵀ` on the atom `A` that computes `dP = dO·Vᵀ` in the main kernels, over the same head-dim
/// chunks in the same order: a row that sees one key (`P = 1`, so `out_i = v_j` bit for bit)
/// gets `delta_i = dP_ij` bit for bit, and `dS = P·(dP - delta)` is exactly 0 there, as in
/// exact arithmetic (a dot product's bits depend only on its two vectors' element order, not on
/// which operand each is nor on its place in the tile).
///
/// Each wave owns `A::M` rows (`TN · N == M`: the square tile whose diagonal is its rows'
/// `delta`); the head dim goes through shared memory in chunks of [`policy::PRE_COLS`].
/// Grid: `(ceil(max_seqlen_q / pre_rows), Hq, B or nseq)`, [`policy::BWD_THREADS`] threads.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
pub fn preprocess<A: MmaAtom, const TN: usize>(bp: &BwdParams) {
    let p = bp.fwd;
    const {
        assert!(TN * A::N == A::M);
        assert!(policy::PRE_COLS.is_multiple_of(A::K));
    }
    let rows = policy::BWD_THREADS as usize / WAVE as usize * A::M;
    let (x, h, b) = block_idx();
    let seq = SeqInfo::resolve(&p, b as usize);
    let m0 = x as usize * rows;
    if m0 >= seq.sq {
        return; // (uniform: a varlen sequence shorter than the grid's longest)
    }
    if bp.dq_accum != 0 {
        // The fused kernel's dQ workspace: this block's rows of (b, h), zeroed.
        let w = bp.dq_accum_strides;
        let ws = (bp.dq_accum as *mut f32)
            .wrapping_offset((seq.batch as i64 * w[0] + h as i64 * w[2]) as isize);
        // (whole rows: the row stride is the head-dim bucket, every column of which the fused
        // kernel adds to)
        let d = w[1] as usize;
        let n = rows.min(seq.sq - m0) * d;
        let mut t = thread_idx() as usize;
        while t < n {
            let (r, c) = (t / d, t % d);
            // SAFETY: row m0 + r < Sq_b and column c < bucket of (b, h) are inside the
            // workspace (the host sized it [B, Hq, Sq, bucket]).
            unsafe { *ws.wrapping_offset(((m0 + r) as i64 * w[1]) as isize).add(c) = 0.0 };
            t += policy::BWD_THREADS as usize;
        }
    }
    let dv = p.head_dim_v as usize;
    let esize = core::mem::size_of::<A::E>();
    let cp = padded(policy::PRE_COLS, esize);
    let (bt, h64) = (seq.batch as i64, h as i64);
    let at = |base: u64, s: [i64; 3]| {
        (base as *const A::E)
            .wrapping_offset((bt * s[0] + seq.q0 as i64 * s[1] + h64 * s[2]) as isize)
    };
    let o_base = at(p.out, p.o_strides);
    let do_base = at(bp.dout, bp.do_strides);
    // Shared memory: do_s, o_s [rows, cp] (one head-dim chunk of the block's rows).
    let do_s = dyn_smem().cast::<A::E>();
    let o_s = do_s.wrapping_add(rows * cp);
    let lane = lane_id();
    let row0 = wave_id() as usize * A::M;
    // The wave's [M, TN·N] tile of dO·Oᵀ over its own rows.
    let mut s = [A::C::default(); TN];
    let mut c0 = 0;
    while c0 < dv {
        let cols = (dv - c0).min(policy::PRE_COLS);
        sync_threads(); // every wave is done with the previous chunk
        // SAFETY: rows below Sq_b of this (b, h) hold Dv elements of out and dout (host
        // validated, SeqInfo clamps); the tiles fit the dynamic shared memory.
        unsafe {
            let (o_c, do_c) = (o_base.wrapping_add(c0), do_base.wrapping_add(c0));
            let sq = seq.sq;
            tile(
                o_s,
                o_c,
                p.o_strides[1],
                (m0, rows, sq),
                (cp, policy::PRE_COLS, cols),
            )
            .issue(false);
            tile(
                do_s,
                do_c,
                bp.do_strides[1],
                (m0, rows, sq),
                (cp, policy::PRE_COLS, cols),
            )
            .issue(false);
        }
        async_commit();
        async_wait_all();
        sync_threads();
        // (A run-time trip count keeps the loop rolled, as in `product_nt`.)
        for kd in 0..cols.div_ceil(A::K) {
            // SAFETY: rows < block rows and cols < PRE_COLS index inside do_s and o_s.
            let a = unsafe { A::load_a_smem(lane, do_s.add(row0 * cp + kd * A::K), cp) };
            for tn in 0..TN {
                // SAFETY: as above (the B rows are the wave's own rows).
                let bf = unsafe {
                    A::load_b_nk_smem(lane, o_s.add((row0 + tn * A::N) * cp + kd * A::K), cp)
                };
                A::mma(&a, &bf, &mut s[tn]);
            }
        }
        c0 += policy::PRE_COLS;
    }
    for tn in 0..TN {
        for v in 0..A::C_VALS {
            let (r, c) = A::c_coord(lane, v);
            let i = m0 + row0 + r;
            if r == tn * A::N + c && i < seq.sq {
                let at = bt * p.lse_strides[0] + h64 * p.lse_strides[1] + (seq.q0 + i) as i64;
                // SAFETY: `delta` has lse's layout, which holds row i < Sq_b of (b, h).
                unsafe { *(bp.delta as *mut f32).wrapping_offset(at as isize) = s[tn][v] };
            }
        }
    }
}

/// Zeroes a strided 4-d tensor of `T` ([`ZeroParams`]): block `(x, y, z)` clears rows
/// `x, x + grid_x, …` of the flattened `(n2, chunk of 128 along n3)` index of `[z, y]`.
#[inline(always)]
pub fn zero<T: Copy + Default>(zp: &ZeroParams) {
    let zp = *zp;
    let (x, y, z) = block_idx();
    let chunks = (zp.dims[3] as u64).div_ceil(policy::BWD_THREADS as u64);
    let total = zp.dims[2] as u64 * chunks;
    let mut t = x as u64;
    while t < total {
        let (i2, c) = (t / chunks, t % chunks);
        let i3 = c * policy::BWD_THREADS as u64 + thread_idx() as u64;
        if i3 < zp.dims[3] as u64 {
            let at = z as i64 * zp.strides[0]
                + y as i64 * zp.strides[1]
                + i2 as i64 * zp.strides[2]
                + i3 as i64 * zp.strides[3];
            // SAFETY: every index is inside the extents the host validated for this tensor.
            unsafe { *(zp.ptr as *mut T).wrapping_offset(at as isize) = T::default() };
        }
        t += zp.grid_x.max(1) as u64;
    }
}

/// `dq = scale · dq_accum`, rounded to `E`: the fused backward's last step. Block `(x, h, b)`
/// converts query rows `x · POST_ROWS ..` of `(b, h)` (rows below `Sq_b`, `D` columns each).
///
/// Grid: `(ceil(max_seqlen_q / POST_ROWS), Hq, B)`, [`policy::BWD_THREADS`] threads.
#[inline(always)]
pub fn post<E: Element>(bp: &BwdParams) {
    let p = bp.fwd;
    let (x, h, b) = block_idx();
    let seq = SeqInfo::resolve(&p, b as usize);
    let m0 = x as usize * policy::POST_ROWS;
    if m0 >= seq.sq {
        return; // (uniform)
    }
    let d = p.head_dim as usize;
    let n = policy::POST_ROWS.min(seq.sq - m0) * d;
    let (bt, h64) = (seq.batch as i64, h as i64);
    let (w, o) = (bp.dq_accum_strides, bp.dq_strides);
    let ws = (bp.dq_accum as *const f32).wrapping_offset((bt * w[0] + h64 * w[2]) as isize);
    let dq =
        (bp.dq as *mut E).wrapping_offset((bt * o[0] + seq.q0 as i64 * o[1] + h64 * o[2]) as isize);
    let scale = scale_of(&p);
    let mut t = thread_idx() as usize;
    while t < n {
        let (i, c) = (m0 + t / d, t % d);
        // SAFETY: row i < Sq_b and column c < D of (b, h) are inside the workspace and dq
        // (host validated).
        unsafe {
            let g = *ws.wrapping_offset((i as i64 * w[1]) as isize).add(c);
            *dq.wrapping_offset((i as i64 * o[1]) as isize).add(c) = E::from_f32(g * scale);
        }
        t += policy::BWD_THREADS as usize;
    }
}

/// Stages the bias of query rows `m0..m0 + rows` and keys `n0..n0 + cols` of `(b, h)` in
/// `b_s [rows, padded(cols)]` (the bias's element type): the tile layout the forward's score loop
/// reads, in either orientation.
///
/// # Safety
/// `b_s` holds the tile; the bias holds rows `< sq` and keys `< sk` of `(b, h)` (host validated).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn stage_bias<E: Element>(
    p: &FwdParams,
    b: usize,
    h: usize,
    b_s: *mut u8,
    (m0, rows, sq): (usize, usize, usize),
    (n0, cols, sk): (usize, usize, usize),
) {
    let bias_f32 = p.flags & FLAG_BIAS_F32 != 0;
    let bes = if bias_f32 {
        4
    } else {
        core::mem::size_of::<E>()
    };
    let s = &p.bias_strides;
    let off =
        (b as i64 * s[0] + h as i64 * s[1] + m0 as i64 * s[2] + n0 as i64 * s[3]) * bes as i64;
    let tile = TileCopy::<u8> {
        dst: b_s,
        dst_stride: padded(cols, bes),
        rows,
        cols,
        src: (p.bias as *const u8).wrapping_offset(off as isize),
        src_stride: s[2],
        src_col: s[3],
        rows_valid: sq.saturating_sub(m0),
        cols_valid: sk.saturating_sub(n0),
        zero_tail: false,
        part_cols: true,
        map: RowMap::Strided,
        stepped: false,
    };
    let vec16 = p.flags & FLAG_BIAS_VEC16 != 0;
    // SAFETY: the caller's contract.
    unsafe {
        if bias_f32 {
            tile.retyped::<f32>().issue(vec16)
        } else {
            tile.retyped::<E>().issue(vec16)
        }
    }
}

/// A `[rows, cols]` tile copy of `cols_valid` columns from rows `first..` of a `(b, h)` base,
/// zero-filled past `rows_valid` (the backward's tiles are all operands of some product whose
/// other side may be zero: a stale NaN must not meet it).
#[inline(always)]
fn tile<E: Element>(
    dst: *mut E,
    base: *const E,
    stride: i64,
    (first, rows, rows_valid): (usize, usize, usize),
    (dp, cols, cols_valid): (usize, usize, usize),
) -> TileCopy<E> {
    TileCopy {
        dst,
        dst_stride: dp,
        rows,
        cols,
        src: base.wrapping_offset((first as i64 * stride) as isize),
        src_stride: stride,
        src_col: 1,
        rows_valid: rows_valid.saturating_sub(first),
        cols_valid,
        zero_tail: true,
        part_cols: false,
        map: RowMap::Strided,
        stepped: false,
    }
}

/// Applies the score pieces of `tile` to `s` (raw products in, log2-domain logits or `-inf`
/// out), one straight-line instance per (softcap, ALiBi, bias type) as in the forward.
#[inline(always)]
fn pieces<A: MmaAtom, const TM: usize, const TN: usize, const TRANS: bool>(
    tile: ScoreTile,
    bias_on: bool,
    bias_f32: bool,
    s: &mut [[A::C; TN]; TM],
) {
    match (tile.scores.softcap.is_some(), tile.scores.alibi.is_some()) {
        (false, false) => tile.apply_bias::<A, TM, TN, false, false, TRANS>(bias_on, bias_f32, s),
        (true, false) => tile.apply_bias::<A, TM, TN, true, false, TRANS>(bias_on, bias_f32, s),
        (false, true) => tile.apply_bias::<A, TM, TN, false, true, TRANS>(bias_on, bias_f32, s),
        (true, true) => tile.apply_bias::<A, TM, TN, true, true, TRANS>(bias_on, bias_f32, s),
    }
}

/// The score tile of queries `m0..m0 + bm` and keys `n0..n0 + bn` of one wave (rows from `row0`;
/// `TRANS` tiles have keys as rows), with its full-block test, for [`score`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn score_tile(
    row0: usize,
    (m0, bm): (usize, usize),
    (n0, bn): (usize, usize),
    sq: usize,
    mask: Mask,
    scores: Scores,
    b_s: *const u8,
    bp: usize,
) -> ScoreTile {
    ScoreTile {
        lane: lane_id(),
        row0,
        m0,
        pack: 1,
        n0,
        k_lo: 0,
        sq,
        full: mask.block_is_full(m0 as i64..(m0 + bm) as i64, n0 as i64..(n0 + bn) as i64),
        mask,
        scores,
        b_s,
        bp,
    }
}

/// Raw products `s` in, log2-domain logits (or `-inf`) out, through the score pieces of `st`;
/// returns softcap's derivative `1 - tanh²` per element when `grad` (zeros otherwise).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn score<A: MmaAtom, const TM: usize, const TN: usize, const TRANS: bool>(
    st: ScoreTile,
    s: &mut [[A::C; TN]; TM],
    grad: bool,
    bias_on: bool,
    bias_f32: bool,
) -> [[A::C; TN]; TM] {
    let mut gs = [[A::C::default(); TN]; TM];
    if let (Some(c), true) = (st.scores.softcap, grad) {
        for t in 0..TM {
            for tn in 0..TN {
                for v in 0..A::C_VALS {
                    gs[t][tn][v] = c.grad(s[t][tn][v]);
                }
            }
        }
    }
    pieces::<A, TM, TN, TRANS>(st, bias_on, bias_f32, s);
    gs
}

/// `A` fragments of a `[TM·M, TN·N]` accumulator tile `s` rounded to the input type: in
/// registers where the atom allows it, otherwise through this wave's slab of `p_s` (row stride
/// `pp`; block barriers inside, so every wave must call it together).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn to_a<A: MmaAtom, const TM: usize, const TN: usize, const KK: usize>(
    s: &[[A::C; TN]; TM],
    p_s: *mut A::E,
    pp: usize,
    row0: usize,
) -> [[A::A; KK]; TM] {
    let lane = lane_id();
    let mut pa = [[A::load_a(lane, |_, _| A::E::ZERO); KK]; TM];
    if !A::P_IN_REGISTERS {
        sync_threads(); // every wave is done reading its slab's previous contents
        for t in 0..TM {
            for tn in 0..TN {
                for v in 0..A::C_VALS {
                    let (r, cc) = A::c_coord(lane, v);
                    // SAFETY: row < block rows and col < block cols <= pp index inside p_s.
                    unsafe {
                        *p_s.add((row0 + t * A::M + r) * pp + tn * A::N + cc) =
                            A::E::from_f32(s[t][tn][v])
                    };
                }
            }
        }
        sync_threads();
    }
    for t in 0..TM {
        for kk in 0..KK {
            pa[t][kk] = if A::P_IN_REGISTERS {
                A::p_to_a::<TN>(&s[t], kk)
            } else {
                // SAFETY: rows < block rows and cols < block cols index inside p_s.
                unsafe { A::load_a_smem(lane, p_s.add((row0 + t * A::M) * pp + kk * A::K), pp) }
            };
        }
    }
    pa
}

#[allow(clippy::needless_range_loop)]
/// `c[t][tn] += A(rows of a_s) · B(rows of b_s as [n, k])` over the first `k_len` columns: the
/// `S`-shaped products (`Q·Kᵀ`, `dO·Vᵀ`, `K·Qᵀ`, `V·dOᵀ`), `A` rows from `row0`, `B` rows from 0.
#[inline(always)]
fn product_nt<A: MmaAtom, const TM: usize, const TN: usize>(
    a_s: *const A::E,
    b_s: *const A::E,
    dp: usize,
    row0: usize,
    k_len: usize,
) -> [[A::C; TN]; TM] {
    let lane = lane_id();
    let mut s = [[A::C::default(); TN]; TM];
    // (A run-time trip count keeps the loop rolled: see the forward.)
    for kd in 0..k_len.div_ceil(A::K) {
        let mut a = [A::load_a(lane, |_, _| A::E::ZERO); TM];
        for t in 0..TM {
            // SAFETY: rows < block rows and cols < d index inside a_s.
            a[t] = unsafe { A::load_a_smem(lane, a_s.add((row0 + t * A::M) * dp + kd * A::K), dp) };
        }
        for tn in 0..TN {
            // SAFETY: rows < block cols and cols < d index inside b_s.
            let bf = unsafe { A::load_b_nk_smem(lane, b_s.add(tn * A::N * dp + kd * A::K), dp) };
            for t in 0..TM {
                A::mma(&a[t], &bf, &mut s[t][tn]);
            }
        }
    }
    s
}

#[allow(clippy::needless_range_loop)]
/// `acc[t][ns] += pa[t] · B` with `B = b_s[k, col0 + ns·N ..]` (`[k, n]` rows, `KK · K` of them):
/// the `P`-shaped products (`dS·K`, `(P∘Z)ᵀ·dO`, `dSᵀ·Q`).
#[inline(always)]
fn product_pn<A: MmaAtom, const TM: usize, const NS: usize, const KK: usize>(
    pa: &[[A::A; KK]; TM],
    b_s: *const A::E,
    dp: usize,
    col0: usize,
    acc: &mut [[A::C; NS]; TM],
) {
    let lane = lane_id();
    for ns in 0..NS {
        for kk in 0..KK {
            // SAFETY: rows < block cols and cols < d index inside b_s.
            let bf =
                unsafe { A::load_b_kn_smem(lane, b_s.add(kk * A::K * dp + col0 + ns * A::N), dp) };
            for t in 0..TM {
                A::mma(&pa[t][kk], &bf, &mut acc[t][ns]);
            }
        }
    }
}

/// The natural-log softmax scale of `p` (`scale_log2 / log2(e)`, with its f32 residual).
#[inline(always)]
fn scale_of(p: &FwdParams) -> f32 {
    (p.scale_log2 + p.scale_log2_lo) * LN_2
}

/// Stores `scale · acc` (a wave's `[TM·M, NS·N]` gradient slice at column `col0`) to the rows
/// `row0 + ..` of `base` (row stride `stride`) that are below `rows` and columns below `cols`.
#[inline(always)]
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
fn store_rows<A: MmaAtom, const TM: usize, const NS: usize>(
    acc: &[[A::C; NS]; TM],
    scale: f32,
    base: *mut A::E,
    stride: i64,
    row0: usize,
    rows: usize,
    col0: usize,
    cols: usize,
) {
    let lane = lane_id();
    for t in 0..TM {
        for ns in 0..NS {
            for v in 0..A::C_VALS {
                let (r, cc) = A::c_coord(lane, v);
                let (i, col) = (row0 + t * A::M + r, col0 + ns * A::N + cc);
                if i < rows && col < cols {
                    // SAFETY: i < rows and col < cols are inside the gradient (host validated).
                    unsafe {
                        *base.wrapping_offset((i as i64 * stride) as isize).add(col) =
                            A::E::from_f32(acc[t][ns][v] * scale)
                    };
                }
            }
        }
    }
}

/// The fused kernel's `dQ` step: `dQ[m0.., :] += dS·K` over the block's `n_keys` keys, this
/// wave's share (all `QM · M` queries, head-dim columns `wave · QN · N ..`), added to the f32
/// workspace `ws` (rows below `sq`; row stride `ws_stride`, which is the bucket `QN · N ·
/// WAVES`, so a step's rows are one contiguous run).
///
/// `s` is the wave's `dSᵀ` (`[TM·M keys, TN·N queries]`, rows from `row0`); it goes to `ds_s`
/// (`[TN·N, pk]`, queries as rows, rounded to the input type as for `dK`) so that every wave
/// reads the whole block's `dS` as `A` operands. With [`BULK_REDUCE`] the partial sums go to
/// `dq_s` (`[QM·M, ws_stride]` f32, the workspace's layout) and thread 0 adds the step's rows
/// with one bulk instruction; otherwise each lane adds its elements atomically (columns below
/// `d`). Block barriers inside: every wave calls it; `ds_s` is free again after the caller's
/// next barrier, `dq_s` after the next call's first.
#[inline(always)]
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
fn fused_dq<A: MmaAtom, const TM: usize, const TN: usize, const QM: usize, const QN: usize>(
    s: &[[A::C; TN]; TM],
    ds_s: *mut A::E,
    pk: usize,
    dq_s: *mut f32,
    k_s: *const A::E,
    dp: usize,
    row0: usize,
    n_keys: usize,
    (ws, ws_stride, m0, sq, d): (*mut f32, i64, usize, usize, usize),
) {
    let lane = lane_id();
    if BULK_REDUCE && thread_idx() == 0 {
        bulk_wait_read(); // the previous step's bulk add has read dq_s (the barrier below orders it)
    }
    for t in 0..TM {
        for tn in 0..TN {
            for v in 0..A::C_VALS {
                let (r, cc) = A::c_coord(lane, v);
                // SAFETY: query tn·N + cc < BLOCK_M rows and key row0 + t·M + r < BLOCK_N <= pk
                // columns index inside ds_s.
                unsafe {
                    *ds_s.add((tn * A::N + cc) * pk + row0 + t * A::M + r) =
                        A::E::from_f32(s[t][tn][v])
                };
            }
        }
    }
    sync_threads(); // the whole block's dS is in ds_s
    let c0 = wave_id() as usize * QN * A::N;
    // accq: [QM][QN] = this wave's [QM·M queries, QN·N columns] of the step's dS·K.
    let mut accq = [[A::C::default(); QN]; QM];
    // (A run-time trip count keeps the loop rolled: see the forward.)
    for kd in 0..n_keys.div_ceil(A::K) {
        let mut a = [A::load_a(lane, |_, _| A::E::ZERO); QM];
        for qm in 0..QM {
            // SAFETY: rows < BLOCK_M and keys < BLOCK_N index inside ds_s.
            a[qm] = unsafe { A::load_a_smem(lane, ds_s.add(qm * A::M * pk + kd * A::K), pk) };
        }
        for ns in 0..QN {
            // SAFETY: keys < BLOCK_N rows and columns < D index inside k_s.
            let bf =
                unsafe { A::load_b_kn_smem(lane, k_s.add(kd * A::K * dp + c0 + ns * A::N), dp) };
            for qm in 0..QM {
                A::mma(&a[qm], &bf, &mut accq[qm][ns]);
            }
        }
    }
    if BULK_REDUCE {
        let stride = ws_stride as usize;
        for qm in 0..QM {
            for ns in 0..QN {
                for v in 0..A::C_VALS {
                    let (r, cc) = A::c_coord(lane, v);
                    // SAFETY: row < QM·M and column < QN·N·WAVES = stride index inside dq_s.
                    unsafe {
                        *dq_s.add((qm * A::M + r) * stride + c0 + ns * A::N + cc) = accq[qm][ns][v]
                    };
                }
            }
        }
        fence_proxy_async();
        sync_threads(); // dq_s is whole
        let rows = (QM * A::M).min(sq.saturating_sub(m0));
        if thread_idx() == 0 && rows > 0 {
            // SAFETY: rows m0.. m0 + rows < Sq_b of (b, h) are inside the workspace (host sized
            // it [B, Hq, Sq, bucket], 16-byte aligned; a row is a multiple of 16 bytes), and
            // their dq_s rows are written.
            unsafe {
                bulk_reduce_add_f32(
                    ws.wrapping_offset((m0 as i64 * ws_stride) as isize),
                    dq_s,
                    (rows * stride * 4) as u32,
                )
            };
            bulk_commit();
        }
        return;
    }
    for qm in 0..QM {
        for ns in 0..QN {
            for v in 0..A::C_VALS {
                let (r, cc) = A::c_coord(lane, v);
                let (i, c) = (m0 + qm * A::M + r, c0 + ns * A::N + cc);
                if i < sq && c < d {
                    // SAFETY: row i < Sq_b and column c < D of this (b, h) are inside the
                    // workspace (host sized it [B, Hq, Sq, bucket]).
                    unsafe {
                        atomic_add_f32(
                            ws.wrapping_offset((i as i64 * ws_stride) as isize).add(c),
                            accq[qm][ns][v],
                        )
                    };
                }
            }
        }
    }
}

/// `dQ` (and `dbias`) for one block of `WAVES · TM · M` query rows of one (sequence, query head),
/// head-dim slice `x % slices` of `dq`; see the module docs. `TN · N` keys per step, `ND · N` the
/// head-dim bucket, `NS · N` the accumulator slice, `KK = TN · N / K`.
///
/// Grid: `(ceil(max_seqlen_q / BLOCK_M) · slices, Hq, B or nseq)`, [`policy::BWD_THREADS`]
/// threads, [`policy::bwd_smem_bytes`] of dynamic shared memory.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
pub fn run_dq<
    A: MmaAtom,
    const WAVES: usize,
    const TM: usize,
    const TN: usize,
    const ND: usize,
    const NS: usize,
    const KK: usize,
    const PREFETCH: bool,
    const PIECES: bool,
>(
    bp: &BwdParams,
) {
    // One by-value copy of the forward's parameters; the gradients' few fields are read through
    // the reference (a second copy of the whole struct splits the forward's fields across
    // 8-byte words in a way LLVM's SROA cannot promote: 16 bytes of stack).
    let p = bp.fwd;
    const {
        assert!(WAVES * WAVE as usize == policy::BWD_THREADS as usize);
        assert!(KK * A::K == TN * A::N);
        assert!(ND.is_multiple_of(NS));
    }
    let block_m = WAVES * TM * A::M;
    let block_n = TN * A::N;
    let d = ND * A::N;
    let esize = core::mem::size_of::<A::E>();
    let dp = padded(d, esize);
    let pp = padded(block_n, esize);
    let vec16 = p.flags & FLAG_VEC16 != 0;
    let slices = (ND / NS) as u32;
    let (x, y, z) = block_idx();
    let (m_blk, slice) = ((x / slices) as usize, (x % slices) as usize);
    let (b, h) = (z as usize, y as usize);
    let g = h / (p.heads_q / p.heads_k) as usize;
    let seq = SeqInfo::of::<PIECES>(&p, b);
    let (sq, sk) = (seq.sq, seq.sk);
    let (dq, dv) = (p.head_dim as usize, p.head_dim_v as usize);
    let m0 = m_blk * block_m;
    if m0 >= sq {
        return; // (uniform: a varlen sequence shorter than the grid's longest)
    }
    let mask = Mask::from_params(&p, sq, sk);
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
    let dropout = if PIECES { Dropout::new(&p, b, h) } else { None };
    let (bt, h64, g64) = (seq.batch as i64, h as i64, g as i64);
    let at = |base: u64, s: [i64; 3], row0: usize, head: i64| {
        (base as *const A::E)
            .wrapping_offset((bt * s[0] + row0 as i64 * s[1] + head * s[2]) as isize)
    };
    let q_base = at(p.q, p.q_strides, seq.q0, h64);
    let do_base = at(bp.dout, bp.do_strides, seq.q0, h64);
    let k_base = at(p.k, p.k_strides, seq.k0, g64);
    let v_base = at(p.v, p.v_strides, seq.k0, g64);

    // Shared memory: q_s, do_s [BLOCK_M, dp]; p_s [BLOCK_M, pp] (dS as A operands, when the
    // atom needs it); then one step buffer per key block in flight (two with PREFETCH: the next
    // block's copies land while this one computes), each k_s, v_s [BLOCK_N, dp] and
    // b_s [BLOCK_M, padded(BLOCK_N)] (the bias tile, f32 at worst; `PIECES` only).
    let q_s = dyn_smem().cast::<A::E>();
    let do_s = q_s.wrapping_add(block_m * dp);
    let p_s = do_s.wrapping_add(block_m * dp);
    let p_bytes = if A::P_IN_REGISTERS {
        0
    } else {
        block_m * pp * esize
    };
    let bufs = if PREFETCH { 2 } else { 1 };
    let step_bytes = 2 * block_n * dp * esize + policy::bias_tile_bytes(PIECES, block_m, block_n);
    let step0 = p_s.cast::<u8>().wrapping_add(p_bytes);
    // (k_s, v_s, b_s) of key block `nb`.
    let buf = move |nb: usize| {
        let base = step0.wrapping_add(nb % bufs * step_bytes);
        let k_s = base.cast::<A::E>();
        (
            k_s,
            k_s.wrapping_add(block_n * dp),
            base.wrapping_add(2 * block_n * dp * esize),
        )
    };
    let bias_on = PIECES && p.bias != 0;
    let bias_f32 = p.flags & FLAG_BIAS_F32 != 0;
    let bes = if bias_f32 { 4 } else { esize };

    let lane = lane_id();
    let row0 = wave_id() as usize * TM * A::M;
    // SAFETY: (every copy) rows below Sq_b / Sk_b of this (b, h) hold D / Dv elements (host
    // validated, SeqInfo clamps); FLAG_VEC16 only when every row of q, k, v, dout is 16-byte
    // aligned; the tiles fit the dynamic shared memory.
    unsafe {
        tile(q_s, q_base, p.q_strides[1], (m0, block_m, sq), (dp, d, dq)).issue(vec16);
        tile(
            do_s,
            do_base,
            bp.do_strides[1],
            (m0, block_m, sq),
            (dp, d, dv),
        )
        .issue(vec16);
    }
    async_commit();

    // This wave's rows: lse (log2 units; -inf where nothing is visible or past Sq_b) and delta.
    let mut lse2 = [A::Rows::default(); TM];
    let mut dl = [A::Rows::default(); TM];
    let lse_at = bt * p.lse_strides[0] + h64 * p.lse_strides[1] + seq.q0 as i64;
    for t in 0..TM {
        for r in 0..A::ROW_SLOTS {
            let i = m0 + row0 + t * A::M + slot_row::<A>(lane, r);
            let (l, dd) = if i < sq {
                let at = (lse_at + i as i64) as isize;
                // SAFETY: row i < Sq_b of (b, h) is inside lse and delta (same layout).
                unsafe {
                    (
                        *(p.lse as *const f32).wrapping_offset(at),
                        *(bp.delta as *const f32).wrapping_offset(at),
                    )
                }
            } else {
                (f32::NEG_INFINITY, 0.0)
            };
            lse2[t][r] = l * LOG2_E;
            dl[t][r] = dd;
        }
    }
    let rescale = if dropout.is_some() {
        p.dropout_rescale
    } else {
        1.0
    };
    let cap = scores.softcap;
    let dbias_on = PIECES && bp.bwd_flags & BWD_DBIAS != 0;
    let dbias_f32 = bp.bwd_flags & BWD_DBIAS_F32 != 0;
    let dbs = bp.dbias_strides;
    let dbes = if dbias_f32 { 4 } else { esize as i64 };
    let dbias_base =
        (bp.dbias as *mut u8).wrapping_offset(((b as i64 * dbs[0] + h64 * dbs[1]) * dbes) as isize);

    let mut acc = [[A::C::default(); NS]; TM];
    let rows = m0 as i64..(m0 + block_m).min(sq) as i64;
    let (n_lo, n_hi) = mask.key_blocks(rows, block_n as i64);
    let (n_lo, n_hi) = (n_lo as usize, n_hi as usize);
    // SAFETY: the copies as above: rows below Sq_b / Sk_b of (b, h) only, into this step's buffer.
    let issue = move |nb: usize| unsafe {
        let (k_s, v_s, b_s) = buf(nb);
        let n0 = nb * block_n;
        tile(k_s, k_base, p.k_strides[1], (n0, block_n, sk), (dp, d, dq)).issue(vec16);
        tile(v_s, v_base, p.v_strides[1], (n0, block_n, sk), (dp, d, dv)).issue(vec16);
        if bias_on {
            stage_bias::<A::E>(&p, b, h, b_s, (m0, block_m, sq), (n0, block_n, sk));
        }
    };
    // Iteration `it` issues key block `n_lo + it` and computes block `n_lo + it - PREFETCH` (one
    // call site per copy: AMD does not inline a closure called twice, and its captures then
    // live in scratch).
    let pre = PREFETCH as usize;
    for it in 0..(n_hi - n_lo) + pre * usize::from(n_hi > n_lo) {
        let issue_nb = n_lo + it;
        if PREFETCH {
            if it > 0 {
                async_wait_all();
            }
            sync_threads(); // block it - 1 visible; every wave is done with block it - 2's buffer
            if issue_nb < n_hi {
                issue(issue_nb);
                async_commit();
            }
            if it == 0 {
                continue;
            }
        } else {
            sync_threads(); // every wave is done with the previous K, V and bias tiles
            issue(issue_nb);
            async_commit();
            async_wait_all();
            sync_threads();
        }
        let nb = issue_nb - pre;
        let n0 = nb * block_n;
        let (k_s, v_s, b_s) = buf(nb);

        // s: [TM][TN] = S = Q·Kᵀ for this wave's rows; gs: softcap's derivative.
        let mut s = product_nt::<A, TM, TN>(q_s, k_s, dp, row0, dq);
        let st = score_tile(
            row0,
            (m0, block_m),
            (n0, block_n),
            sq,
            mask,
            scores,
            b_s,
            padded(block_n, bes),
        );
        let gs = score::<A, TM, TN, false>(st, &mut s, true, bias_on, bias_f32);
        // P = 2^(x - lse), in place.
        for t in 0..TM {
            for tn in 0..TN {
                for v in 0..A::C_VALS {
                    let l = lse2[t][A::row_slot(v)];
                    s[t][tn][v] = if l == f32::NEG_INFINITY {
                        0.0
                    } else {
                        exp2(s[t][tn][v] - l)
                    };
                }
            }
        }
        // dp: [TM][TN] = dO·Vᵀ, then Z (dropped → 0, kept → · rescale), then dS in place.
        let mut dpt = product_nt::<A, TM, TN>(do_s, v_s, dp, row0, dv);
        for t in 0..TM {
            if let Some(dr) = dropout {
                apply_dropout::<A, TN>(&dr, &mut dpt[t], lane, (m0 + row0 + t * A::M) as i64, n0);
            }
            for tn in 0..TN {
                for v in 0..A::C_VALS {
                    let ds = s[t][tn][v] * fma(dpt[t][tn][v], rescale, -dl[t][A::row_slot(v)]);
                    if dbias_on && slice == 0 {
                        let (r, cc) = A::c_coord(lane, v);
                        let (i, j) = (m0 + row0 + t * A::M + r, n0 + tn * A::N + cc);
                        if i < sq && j < sk {
                            let off = i as i64 * dbs[2] + j as i64 * dbs[3];
                            // SAFETY: (i, j) of (b, h) is inside dbias (host validated).
                            unsafe {
                                if dbias_f32 {
                                    *dbias_base.cast::<f32>().wrapping_offset(off as isize) = ds;
                                } else {
                                    *dbias_base.cast::<A::E>().wrapping_offset(off as isize) =
                                        A::E::from_f32(ds);
                                }
                            }
                        }
                    }
                    s[t][tn][v] = if cap.is_some() { ds * gs[t][tn][v] } else { ds };
                }
            }
        }
        // dQ += dS'·K over this slice's columns.
        let pa = to_a::<A, TM, TN, KK>(&s, p_s, pp, row0);
        product_pn::<A, TM, NS, KK>(&pa, k_s, dp, slice * NS * A::N, &mut acc);
    }
    async_wait_all();

    let dq_base = (bp.dq as *mut A::E).wrapping_offset(
        (bt * bp.dq_strides[0] + seq.q0 as i64 * bp.dq_strides[1] + h64 * bp.dq_strides[2])
            as isize,
    );
    store_rows::<A, TM, NS>(
        &acc,
        scale_of(&p),
        dq_base,
        bp.dq_strides[1],
        m0 + row0,
        sq,
        slice * NS * A::N,
        dq,
    );
}

/// `dK` and `dV` for one block of `WAVES · TM · M` key rows of one (sequence, kv head), head-dim
/// slice `x % slices`; see the module docs. `TN · N` queries per step, `ND · N` the head-dim
/// bucket, `NS · N` the accumulator slice, `KK = TN · N / K`; `PASSES = 2` walks the query
/// blocks twice (dV, then dK) to keep one accumulator live.
///
/// Grid: `(ceil(max_seqlen_k / BLOCK_N) · slices, Hk, B or nseq)`, [`policy::BWD_THREADS`]
/// threads, [`policy::bwd_smem_bytes`] of dynamic shared memory. Every key row present in the
/// sequence is written (0 past `seqused_k` or where no query sees it).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
pub fn run_dkdv<
    A: MmaAtom,
    const WAVES: usize,
    const TM: usize,
    const TN: usize,
    const ND: usize,
    const NS: usize,
    const KK: usize,
    const PASSES: usize,
    const PREFETCH: bool,
    const PIECES: bool,
    const DQ: bool,
    const QM: usize,
    const QN: usize,
>(
    bp: &BwdParams,
) {
    // One by-value copy of the forward's parameters; the gradients' few fields are read through
    // the reference (a second copy of the whole struct splits the forward's fields across
    // 8-byte words in a way LLVM's SROA cannot promote: 16 bytes of stack).
    let p = bp.fwd;
    const {
        assert!(WAVES * WAVE as usize == policy::BWD_THREADS as usize);
        assert!(KK * A::K == TN * A::N);
        assert!(ND.is_multiple_of(NS));
        assert!(TM * TN * A::C_VALS <= 32);
        assert!(PASSES == 1 || PASSES == 2);
        // The fused dQ: each wave owns all `QM · M` queries of the step and `QN · N` of the
        // head-dim columns, over every key of the block.
        assert!(!DQ || (QM * A::M == TN * A::N && QN * WAVES == ND && PASSES == 1 && !PIECES));
        assert!(!DQ || (WAVES * TM * A::M).is_multiple_of(A::K));
    }
    let block_n = WAVES * TM * A::M; // the block's keys
    let block_m = TN * A::N; // queries per step
    let d = ND * A::N;
    let esize = core::mem::size_of::<A::E>();
    let dp = padded(d, esize);
    let pp = padded(block_m, esize);
    let vec16 = p.flags & FLAG_VEC16 != 0;
    let slices = (ND / NS) as u32;
    let (x, y, z) = block_idx();
    let (n_blk, slice) = ((x / slices) as usize, (x % slices) as usize);
    let (b, g) = (z as usize, y as usize);
    let group = (p.heads_q / p.heads_k) as usize;
    let seq = SeqInfo::of::<PIECES>(&p, b);
    let (sq, sk) = (seq.sq, seq.sk);
    let (dq, dv) = (p.head_dim as usize, p.head_dim_v as usize);
    let n0 = n_blk * block_n;
    if n0 >= seq.sk_total {
        return;
    }
    let mask = Mask::from_params(&p, sq, sk);
    let alibi_off = if mask.window {
        mask.off
    } else {
        sk as i64 - sq as i64
    };
    let (bt, g64) = (seq.batch as i64, g as i64);
    let at = |base: u64, s: [i64; 3], row0: usize, head: i64| {
        (base as *const A::E)
            .wrapping_offset((bt * s[0] + row0 as i64 * s[1] + head * s[2]) as isize)
    };
    let k_base = at(p.k, p.k_strides, seq.k0, g64);
    let v_base = at(p.v, p.v_strides, seq.k0, g64);

    // Shared memory: k_s, v_s [BLOCK_N, dp] (the block's keys, resident); p_s [BLOCK_N, pp] (Pᵀ
    // and dSᵀ as A operands, when the atom needs it); then one step buffer per query block in
    // flight (two with PREFETCH), each q_s, do_s [BLOCK_M, dp], ls, dls [BLOCK_M] f32 (the step's
    // lse and delta) and b_s [BLOCK_M, padded(BLOCK_N)] (the bias tile,
    // [queries, keys]).
    let k_s = dyn_smem().cast::<A::E>();
    let v_s = k_s.wrapping_add(block_n * dp);
    let p_s = v_s.wrapping_add(block_n * dp);
    let p_bytes = if A::P_IN_REGISTERS {
        0
    } else {
        block_n * pp * esize
    };
    let bufs = if PREFETCH { 2 } else { 1 };
    let step_bytes = 2 * block_m * dp * esize
        + 2 * block_m * 4
        + policy::bias_tile_bytes(PIECES, block_m, block_n);
    let step0 = p_s.cast::<u8>().wrapping_add(p_bytes);
    // (DQ) ds_s [BLOCK_M, padded(BLOCK_N)]: the step's dS with queries as rows, after the step
    // buffers; then (BULK_REDUCE) dq_s [BLOCK_M, D] f32, the step's dQ partial sums.
    let pk = padded(block_n, esize);
    let ds_s = step0.wrapping_add(bufs * step_bytes).cast::<A::E>();
    // (q_s, do_s, ls, dls, b_s) of step `st`.
    let buf = move |st: usize| {
        let base = step0.wrapping_add(st % bufs * step_bytes);
        let q_s = base.cast::<A::E>();
        let do_s = q_s.wrapping_add(block_m * dp);
        let ls = do_s.wrapping_add(block_m * dp).cast::<f32>();
        let dls = ls.wrapping_add(block_m);
        (q_s, do_s, ls, dls, dls.wrapping_add(block_m).cast::<u8>())
    };
    let bias_on = PIECES && p.bias != 0;
    let bias_f32 = p.flags & FLAG_BIAS_F32 != 0;
    let bes = if bias_f32 { 4 } else { esize };

    let lane = lane_id();
    let row0 = wave_id() as usize * TM * A::M;
    // SAFETY: (every copy) as in run_dq.
    unsafe {
        tile(k_s, k_base, p.k_strides[1], (n0, block_n, sk), (dp, d, dq)).issue(vec16);
        tile(v_s, v_base, p.v_strides[1], (n0, block_n, sk), (dp, d, dv)).issue(vec16);
    }
    async_commit();

    // Single pass: dv_acc and dk_acc, both live. Two passes (PASSES = 2): the walk runs twice,
    // first for dV (S and P only), then for dK (S, P, dP, dS), each into `acc`: one [M, D]
    // accumulator live at a time, for one more `S` product.
    let out = |base: u64, s: [i64; 3]| {
        (base as *mut A::E)
            .wrapping_offset((bt * s[0] + seq.k0 as i64 * s[1] + g64 * s[2]) as isize)
    };
    let col0 = slice * NS * A::N;
    let cols = n0 as i64..(n0 + block_n) as i64;
    let (m_lo, m_hi) = mask.query_blocks(cols, block_m as i64, sq as i64);
    for pass in 0..PASSES {
        let want_dv = PASSES == 1 || pass == 0;
        let want_dk = PASSES == 1 || pass == 1;
        let mut acc = [[A::C::default(); NS]; TM]; // dV (single pass, or pass 0), else dK
        let mut acc_k = [[A::C::default(); NS]; TM]; // dK of the single pass
        // Steps: every query block of every query head of the group, in one flat walk (so that
        // the next step's copies can be in flight across heads).
        let nmb = (m_hi - m_lo).max(0) as usize;
        let steps = group * nmb;
        let at_step = move |st: usize| (g * group + st / nmb, (m_lo as usize + st % nmb) * block_m);
        // (The gradient fields the closure needs, by value: a captured `bp` would keep the whole
        // parameter image in scratch on AMD.)
        let (dout_ptr, do_strides, delta_ptr) = (bp.dout, bp.do_strides, bp.delta);
        // SAFETY: the copies as in run_dq (rows below Sq_b of (b, h), into this step's buffer).
        let issue = move |st: usize| unsafe {
            let (h, m0) = at_step(st);
            let h64 = h as i64;
            let (q_s, do_s, ls, dls, b_s) = buf(st);
            let q_base = at(p.q, p.q_strides, seq.q0, h64);
            let do_base = at(dout_ptr, do_strides, seq.q0, h64);
            tile(q_s, q_base, p.q_strides[1], (m0, block_m, sq), (dp, d, dq)).issue(vec16);
            tile(do_s, do_base, do_strides[1], (m0, block_m, sq), (dp, d, dv)).issue(vec16);
            if bias_on {
                stage_bias::<A::E>(&p, b, h, b_s, (m0, block_m, sq), (n0, block_n, sk));
            }
            // lse and delta of the step's rows, 4 bytes a thread asynchronously (rows past Sq_b
            // read 0: their scores are hidden, their P is 0).
            let tid = thread_idx() as usize;
            if tid < 2 * block_m {
                let (r, which) = (tid % block_m, tid / block_m);
                let i = m0 + r;
                let lse_at = bt * p.lse_strides[0] + h64 * p.lse_strides[1] + seq.q0 as i64;
                let base = if which == 0 { p.lse } else { delta_ptr };
                let src = (base as *const f32).wrapping_offset((lse_at + i as i64) as isize);
                let dst = if which == 0 { ls } else { dls };
                // Row i < Sq_b of (b, h) is inside lse and delta (read only then); r < BLOCK_M
                // indexes inside ls and dls.
                copy4_async(dst.add(r).cast(), src.cast(), i < sq);
            }
        };
        // Iteration `it` issues step `it` and computes step `it - PREFETCH` (one call site per
        // copy, as in run_dq).
        let pre = PREFETCH as usize;
        for it in 0..steps + pre * usize::from(steps > 0) {
            if PREFETCH {
                if it > 0 {
                    async_wait_all();
                }
                // Step it - 1 visible; every wave is done with step it - 2 (or the last pass).
                sync_threads();
                if it < steps {
                    issue(it);
                    async_commit();
                }
                if it == 0 {
                    continue;
                }
            } else {
                sync_threads(); // every wave is done with the previous step (or pass)
                issue(it);
                async_commit();
                async_wait_all();
                sync_threads();
            }
            let st = it - pre;
            let (h, m0) = at_step(st);
            let (q_s, do_s, ls, dls, b_s) = buf(st);
            let scores = if PIECES {
                Scores::new(&p, b, h, alibi_off)
            } else {
                Scores::plain(&p)
            };
            let dropout = if PIECES { Dropout::new(&p, b, h) } else { None };
            let cap = scores.softcap;
            let rescale = if dropout.is_some() {
                p.dropout_rescale
            } else {
                1.0
            };
            {
                // Each element's dropout multiplier as one bit of `keep`.
                let mut keep = u32::MAX;
                if let Some(dr) = dropout {
                    for t in 0..TM {
                        for tn in 0..TN {
                            for v in 0..A::C_VALS {
                                let (r, cc) = A::c_coord(lane, v);
                                let i = (m0 + tn * A::N + cc) as i64;
                                let j = (n0 + row0 + t * A::M + r) as i64;
                                if !dr.keep(&dr.draw(i, j), j) {
                                    keep &= !(1 << ((t * TN + tn) * A::C_VALS + v));
                                }
                            }
                        }
                    }
                }

                // s: [TM][TN] = Sᵀ = K·Qᵀ (rows: this wave's keys; columns: the step's queries).
                let mut s = product_nt::<A, TM, TN>(k_s, q_s, dp, row0, dq);
                let st = score_tile(
                    row0,
                    (m0, block_m),
                    (n0, block_n),
                    sq,
                    mask,
                    scores,
                    b_s,
                    padded(block_n, bes),
                );
                let gs = score::<A, TM, TN, true>(st, &mut s, want_dk, bias_on, bias_f32);
                // Pᵀ in place.
                for t in 0..TM {
                    for tn in 0..TN {
                        for v in 0..A::C_VALS {
                            let col = tn * A::N + A::c_coord(lane, v).1;
                            // SAFETY: col < BLOCK_M indexes inside ls.
                            let l = unsafe { *ls.add(col) };
                            s[t][tn][v] = if l == f32::NEG_INFINITY {
                                0.0
                            } else {
                                exp2(fma(-l, LOG2_E, s[t][tn][v]))
                            };
                        }
                    }
                }
                let kept = |t: usize, tn: usize, v: usize| {
                    keep >> ((t * TN + tn) * A::C_VALS + v) & 1 != 0
                };
                if want_dv {
                    // dV += (P∘Z)ᵀ·dO.
                    let mut pz = s;
                    for t in 0..TM {
                        for tn in 0..TN {
                            for v in 0..A::C_VALS {
                                pz[t][tn][v] = if kept(t, tn, v) {
                                    s[t][tn][v] * rescale
                                } else {
                                    0.0
                                };
                            }
                        }
                    }
                    let pa = to_a::<A, TM, TN, KK>(&pz, p_s, pp, row0);
                    product_pn::<A, TM, NS, KK>(&pa, do_s, dp, col0, &mut acc);
                }
                if want_dk {
                    // dPᵀ = V·dOᵀ, dSᵀ = Pᵀ∘(dPᵀ∘Z - delta), softcap's factor, dK += dS'ᵀ·Q.
                    let dpt = product_nt::<A, TM, TN>(v_s, do_s, dp, row0, dv);
                    for t in 0..TM {
                        for tn in 0..TN {
                            for v in 0..A::C_VALS {
                                let cc = A::c_coord(lane, v).1;
                                // SAFETY: col < BLOCK_M indexes inside dls.
                                let dd = unsafe { *dls.add(tn * A::N + cc) };
                                let z = if kept(t, tn, v) { rescale } else { 0.0 };
                                let ds = s[t][tn][v] * fma(dpt[t][tn][v], z, -dd);
                                s[t][tn][v] = if cap.is_some() { ds * gs[t][tn][v] } else { ds };
                            }
                        }
                    }
                    let pa = to_a::<A, TM, TN, KK>(&s, p_s, pp, row0);
                    if PASSES == 1 {
                        product_pn::<A, TM, NS, KK>(&pa, q_s, dp, col0, &mut acc_k);
                    } else {
                        product_pn::<A, TM, NS, KK>(&pa, q_s, dp, col0, &mut acc);
                    }
                    if DQ {
                        let dq_s = ds_s.wrapping_add(block_m * pk).cast::<f32>();
                        fused_dq::<A, TM, TN, QM, QN>(
                            &s,
                            ds_s,
                            pk,
                            dq_s,
                            k_s,
                            dp,
                            row0,
                            block_n,
                            {
                                let h64 = h as i64;
                                let w = bp.dq_accum_strides;
                                let base = (bp.dq_accum as *mut f32)
                                    .wrapping_offset((bt * w[0] + h64 * w[2]) as isize);
                                (base, w[1], m0, sq, dq)
                            },
                        );
                    }
                }
            }
        }
        // (Plain references per branch: an `Option<&tile>` would keep the tile out of registers
        // on AMD.)
        let rows = seq.sk_total;
        let dk_ptr = out(bp.dk, bp.dk_strides);
        let dv_ptr = out(bp.dv, bp.dv_strides);
        let sc = scale_of(&p);
        let (dks, dvs) = (bp.dk_strides[1], bp.dv_strides[1]);
        if PASSES == 1 {
            store_rows::<A, TM, NS>(&acc, 1.0, dv_ptr, dvs, n0 + row0, rows, col0, dv);
            store_rows::<A, TM, NS>(&acc_k, sc, dk_ptr, dks, n0 + row0, rows, col0, dq);
        } else if pass == 0 {
            store_rows::<A, TM, NS>(&acc, 1.0, dv_ptr, dvs, n0 + row0, rows, col0, dv);
        } else {
            store_rows::<A, TM, NS>(&acc, sc, dk_ptr, dks, n0 + row0, rows, col0, dq);
        }
    }
    async_wait_all();
    if DQ && BULK_REDUCE && thread_idx() == 0 {
        bulk_wait_all(); // the block's last dQ adds are done before it exits
    }
}
