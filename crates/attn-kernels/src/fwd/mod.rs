//! The forward pass, written once over an [`MmaAtom`].
//!
//! For batch `b`, query head `h` (kv head `g = h / (Hq / Hk)`), query row `i`, key row `j`:
//!
//! ```text
//! s_ij  = scale · log2(e) · q_i·k_j               (log2 domain)
//! s_ij  = -inf where mask(i, j) hides j
//! m_i   = max_j s_ij,   l_i = Σ_j 2^(s_ij - m_i)
//! O_i   = Σ_j 2^(s_ij - m_i) v_j / l_i            (0 when no key is visible)
//! lse_i = ln(2) · (m_i + log2 l_i)                (-inf when no key is visible)
//! ```
//!
//! computed FlashAttention-style: one block owns `BLOCK_M` query rows of one `(b, h)`; it walks the
//! key blocks that the mask leaves visible, `BLOCK_N` keys at a time, keeping a running max `m`,
//! sum `l` and output `O` per row (online softmax: on a new max, `l` and `O` are rescaled by
//! `2^(m_old - m_new)`). Each wave owns `TM · A::M` query rows.
//!
//! Shared memory holds the Q tile, one K-or-V tile (K, then V in the same buffer) and each wave's
//! P tile, which turns P from the accumulator layout into the `A`-operand layout of `P·V`.
use crate::arch::{
    WAVE, block_idx, dyn_smem, exp2, lane_id, log2, rcp, shfl_xor_f32, sync_threads, thread_idx,
    wave_id,
};
use crate::atom::MmaAtom;
use crate::mask::Mask;
use crate::numeric::{Element, LN_2};
use attn_abi::FwdParams;

pub mod policy;

/// Copies a `[rows, cols]` tile from global memory into shared memory (row stride `dst_stride`),
/// writing zeros outside `rows_valid × cols_valid`.
///
/// # Safety
///
/// `src` row `r < rows_valid` must be readable for `cols_valid` elements at `src + r * src_stride`;
/// `dst` must hold `rows * dst_stride` elements of this block's shared memory, `cols <= dst_stride`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn load_tile<E: Element>(
    dst: *mut E,
    dst_stride: usize,
    rows: usize,
    cols: usize,
    src: *const E,
    src_stride: i64,
    rows_valid: usize,
    cols_valid: usize,
) {
    let threads = policy::THREADS as usize;
    let mut idx = thread_idx() as usize;
    while idx < rows * cols {
        let (r, c) = (idx / cols, idx % cols);
        let x = if r < rows_valid && c < cols_valid {
            // SAFETY: in bounds by the caller's contract (r < rows_valid, c < cols_valid).
            unsafe { *src.offset(r as isize * src_stride as isize + c as isize) }
        } else {
            E::ZERO
        };
        // SAFETY: r < rows and c < cols <= dst_stride.
        unsafe { *dst.add(r * dst_stride + c) = x };
        idx += threads;
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
/// Register tiles are indexed with plain `for` loops, never slice iterators: an iterator's
/// non-null assumption on a tile's address keeps the tile out of registers on AMD.
///
/// Generic parameters: the atom `A`, `WAVES` waves per block, `TM` accumulator fragments of query
/// rows per wave, `TN` fragments of keys per key block (`BLOCK_N = TN · A::N`) and `ND` fragments
/// of the head dim (`D = ND · A::N`, the bucket: the problem's `D` and `Dv` are at most this).
///
/// The grid is `(ceil(Sq / BLOCK_M), Hq, B)` with [`policy::THREADS`] threads per block and
/// [`policy::smem_bytes`] bytes of dynamic shared memory. The host has validated `p`.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
pub fn run<A: MmaAtom, const WAVES: usize, const TM: usize, const TN: usize, const ND: usize>(
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
    }
    let block_m = WAVES * TM * A::M;
    let block_n = TN * A::N;
    let d = ND * A::N;
    let esize = core::mem::size_of::<A::E>();
    let dp = policy::padded(d, esize); // row stride of q_s and kv_s, in elements
    let pp = policy::padded(block_n, esize); // row stride of p_s, in elements

    let (m_blk, h, b) = block_idx();
    let (h, b) = (h as i64, b as i64);
    let g = h / (p.heads_q / p.heads_k) as i64;
    let (sq, sk) = (p.seqlen_q as usize, p.seqlen_k as usize);
    let (dq, dv) = (p.head_dim as usize, p.head_dim_v as usize);
    let m0 = m_blk as usize * block_m;
    let mask = Mask::from_params(&p);

    let off = move |base: u64, s: [i64; 3], head: i64| {
        (base as *const A::E).wrapping_offset((b * s[0] + head * s[2]) as isize)
    };
    let q_base = off(p.q, p.q_strides, h);
    let k_base = off(p.k, p.k_strides, g);
    let v_base = off(p.v, p.v_strides, g);
    let o_base = off(p.out, p.o_strides, h).cast_mut();

    // Shared memory: q_s [BLOCK_M, dp], kv_s [BLOCK_N, dp], p_s [BLOCK_M, pp] (a slab per wave).
    let q_s = dyn_smem().cast::<A::E>();
    let kv_s = q_s.wrapping_add(block_m * dp);
    let p_s = kv_s.wrapping_add(block_n * dp);

    let lane = lane_id();
    let row0 = wave_id() as usize * TM * A::M; // first query row of this wave, within the block

    // SAFETY: rows m0..min(m0 + BLOCK_M, Sq) of q exist with `head_dim` elements each (host
    // validated); q_s holds BLOCK_M rows of dp >= d elements.
    unsafe {
        load_tile(
            q_s,
            dp,
            block_m,
            d,
            q_base.wrapping_offset((m0 as i64 * p.q_strides[1]) as isize),
            p.q_strides[1],
            sq.saturating_sub(m0),
            dq,
        )
    };

    // o: [TM][ND] fragments = [TM·M, D] f32 rows of this wave; m, l: running max / partial sum.
    let mut o = [[A::C::default(); ND]; TM];
    let mut m_run = [A::Rows::default(); TM];
    let mut l_run = [A::Rows::default(); TM];
    for t in 0..TM {
        for r in 0..A::ROW_SLOTS {
            m_run[t][r] = f32::NEG_INFINITY;
        }
    }

    let rows = m0 as i64..(m0 + block_m).min(sq.max(1)) as i64;
    let (n_lo, n_hi) = mask.key_blocks(rows, block_n as i64);
    for nb in n_lo as usize..n_hi as usize {
        let n0 = nb * block_n;
        let keys_valid = sk.saturating_sub(n0);
        sync_threads(); // the previous V tile is no longer read
        // SAFETY: key rows n0..min(n0 + BLOCK_N, Sk) exist; kv_s holds BLOCK_N rows of dp.
        unsafe {
            load_tile(
                kv_s,
                dp,
                block_n,
                d,
                k_base.wrapping_offset((n0 as i64 * p.k_strides[1]) as isize),
                p.k_strides[1],
                keys_valid,
                dq,
            )
        };
        sync_threads();

        // s: [TM][TN] fragments = S[TM·M, BLOCK_N] = Q·Kᵀ for this wave's rows.
        let mut s = [[A::C::default(); TN]; TM];
        for kd in 0..d / A::K {
            let mut a = [A::load_a(lane, |_, _| A::E::ZERO); TM];
            for t in 0..TM {
                // SAFETY: rows < BLOCK_M and cols < d index inside q_s.
                a[t] = A::load_a(lane, move |r, c| unsafe {
                    *q_s.add((row0 + t * A::M + r) * dp + kd * A::K + c)
                });
            }
            for tn in 0..TN {
                // SAFETY: rows < BLOCK_N and cols < d index inside kv_s.
                let bf = A::load_b(lane, move |k, n| unsafe {
                    *kv_s.add((tn * A::N + n) * dp + kd * A::K + k)
                });
                for t in 0..TM {
                    A::mma(&a[t], &bf, &mut s[t][tn]);
                }
            }
        }

        // Scale into the log2 domain, mask, and fold the block into the online softmax.
        for t in 0..TM {
            let mut mx = m_run[t];
            for tn in 0..TN {
                for v in 0..A::C_VALS {
                    let (r, c) = A::c_coord(lane, v);
                    let i = (m0 + row0 + t * A::M + r) as i64;
                    let j = (n0 + tn * A::N + c) as i64;
                    let x = if mask.visible(i, j) {
                        s[t][tn][v] * p.scale_log2
                    } else {
                        f32::NEG_INFINITY
                    };
                    s[t][tn][v] = x;
                    let slot = A::row_slot(v);
                    mx[slot] = mx[slot].max(x);
                }
            }
            let mut base = A::Rows::default();
            let mut alpha = A::Rows::default();
            for r in 0..A::ROW_SLOTS {
                mx[r] = row_allreduce::<A>(mx[r], f32::max);
                // A row with nothing visible yet keeps m = -inf; subtract 0 instead (no NaN).
                base[r] = if mx[r] == f32::NEG_INFINITY {
                    0.0
                } else {
                    mx[r]
                };
                alpha[r] = exp2(m_run[t][r] - base[r]);
                l_run[t][r] *= alpha[r];
                m_run[t][r] = mx[r];
            }
            for nd in 0..ND {
                for v in 0..A::C_VALS {
                    o[t][nd][v] *= alpha[A::row_slot(v)];
                }
            }
            for tn in 0..TN {
                for v in 0..A::C_VALS {
                    let slot = A::row_slot(v);
                    let pv = exp2(s[t][tn][v] - base[slot]);
                    s[t][tn][v] = pv;
                    l_run[t][slot] += pv;
                }
            }
        }

        sync_threads(); // every wave is done reading K
        // SAFETY: as for K above.
        unsafe {
            load_tile(
                kv_s,
                dp,
                block_n,
                d,
                v_base.wrapping_offset((n0 as i64 * p.v_strides[1]) as isize),
                p.v_strides[1],
                keys_valid,
                dv,
            )
        };
        // P (rounded to the input type) into this wave's slab of p_s, in the C layout.
        for t in 0..TM {
            for tn in 0..TN {
                let frag = s[t][tn];
                for v in 0..A::C_VALS {
                    let (r, c) = A::c_coord(lane, v);
                    // SAFETY: row < BLOCK_M and col < BLOCK_N <= pp index inside p_s.
                    unsafe {
                        *p_s.add((row0 + t * A::M + r) * pp + tn * A::N + c) =
                            A::E::from_f32(frag[v])
                    };
                }
            }
        }
        sync_threads();

        // o += P·V: [TM·M, BLOCK_N] · [BLOCK_N, D].
        for kn in 0..block_n / A::K {
            let mut a = [A::load_a(lane, |_, _| A::E::ZERO); TM];
            for t in 0..TM {
                // SAFETY: rows < BLOCK_M and cols < BLOCK_N index inside p_s.
                a[t] = A::load_a(lane, move |r, c| unsafe {
                    *p_s.add((row0 + t * A::M + r) * pp + kn * A::K + c)
                });
            }
            for nd in 0..ND {
                // SAFETY: rows < BLOCK_N and cols < d index inside kv_s.
                let bf = A::load_b(lane, move |k, n| unsafe {
                    *kv_s.add((kn * A::K + k) * dp + nd * A::N + n)
                });
                for t in 0..TM {
                    A::mma(&a[t], &bf, &mut o[t][nd]);
                }
            }
        }
    }

    // Epilogue: O /= l, lse = ln2 · (m + log2 l); rows with nothing visible get O = 0, lse = -inf.
    let lse_base =
        (p.lse as *mut f32).wrapping_offset((b * p.lse_strides[0] + h * p.lse_strides[1]) as isize);
    for t in 0..TM {
        let mut inv = A::Rows::default();
        let mut lse = A::Rows::default();
        for r in 0..A::ROW_SLOTS {
            let l = row_allreduce::<A>(l_run[t][r], |x, y| x + y);
            let seen = l > 0.0;
            inv[r] = if seen { rcp(l) } else { 0.0 };
            lse[r] = if seen {
                (m_run[t][r] + log2(l)) * LN_2
            } else {
                f32::NEG_INFINITY
            };
        }
        for nd in 0..ND {
            let frag = o[t][nd];
            for v in 0..A::C_VALS {
                let (r, c) = A::c_coord(lane, v);
                let i = m0 + row0 + t * A::M + r;
                let col = nd * A::N + c;
                if i < sq && col < dv {
                    let x = A::E::from_f32(frag[v] * inv[A::row_slot(v)]);
                    // SAFETY: i < Sq and col < Dv are inside `out` (host validated).
                    unsafe {
                        *o_base
                            .wrapping_offset((i as i64 * p.o_strides[1]) as isize)
                            .add(col) = x
                    };
                }
                // The lane holding column 0 of a row writes its lse.
                if nd == 0 && c == 0 && i < sq && p.lse != 0 {
                    // SAFETY: i < Sq is inside `lse` (host validated, row stride 1).
                    unsafe { *lse_base.add(i) = lse[A::row_slot(v)] };
                }
            }
        }
    }
}
