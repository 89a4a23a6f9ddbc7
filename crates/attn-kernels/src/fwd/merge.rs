//! Merge of partial attention outputs: split-KV's combine step and the public merge.
//!
//! For sequence `b`, row `i`, head `h`, and partials `s = 0..n` that each attended to a disjoint
//! set of keys (`o_s` normalised by its own softmax sum, `lse_s` its log-sum-exp):
//!
//! ```text
//! M   = max_s lse_s
//! w_s = exp(lse_s - M)                       (0 for lse_s = -inf)
//! lse = M + ln Σ_s w_s                       (-inf when every lse_s is -inf)
//! out = Σ_s w_s o_s / Σ_s w_s                (0 when every lse_s is -inf)
//! ```
//!
//! One block per `(i, h, b)`: the partials' lse go to shared memory once, every thread reduces
//! them, then its threads take the head-dim columns, eight partials' loads in flight at a time. A
//! partial whose lse is `-inf` has weight 0 and its values are ignored (a split that saw no key
//! may leave anything there).
use crate::arch::{block_idx, dyn_smem, exp2, log2, rcp, sync_threads, thread_idx};
use crate::fwd::policy::THREADS;
use crate::numeric::{Element, LN_2};
use attn_abi::MergeParams;

const LOG2_E: f32 = core::f32::consts::LOG2_E;

/// The most partials one merge takes (`attn-host`'s `MAX_SPLITS`).
pub const MAX_PARTS: usize = 256;

/// Dynamic shared memory of a merge block: one f32 per partial.
pub const SMEM_BYTES: u32 = MAX_PARTS as u32 * 4;

/// Merges the partials of one `(row, head, sequence)` block (see the module docs).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
pub fn run<I: Element, O: Element>(p: &MergeParams) {
    let p = *p;
    let (x, h, b) = block_idx();
    let (i, h, b) = (x as usize, h as i64, b as usize);
    // The sequence: batch entry b, or varlen sequence b of packed rows (clamped like SeqInfo).
    let (bt, q0, sq) = if p.cu_seqlens_q != 0 {
        let total = p.seqlen as i64;
        // SAFETY: the host checked that cu_seqlens_q holds nseq + 1 entries and b < nseq (grid).
        let read = |idx: usize| unsafe { *(p.cu_seqlens_q as *const i32).add(idx) as i64 };
        let q0 = read(b).clamp(0, total);
        let q1 = read(b + 1).clamp(q0, total);
        (0i64, q0, (q1 - q0).min(p.max_seqlen as i64))
    } else {
        (b as i64, 0, p.seqlen as i64)
    };
    if i as i64 >= sq {
        return;
    }
    let row = q0 + i as i64;
    let n = (p.n_parts as usize).min(MAX_PARTS);
    let tid = thread_idx() as usize;
    let threads = THREADS as usize;
    let ls = p.parts_lse_strides;
    // w [MAX_PARTS] f32 in shared memory: the partials' lse, then their weights.
    let w = dyn_smem().cast::<f32>();
    let mut s = tid;
    while s < n {
        let at = s as i64 * ls[0] + bt * ls[1] + h * ls[2] + row;
        // SAFETY: the host validated the partial lse for [n, B, H, S] with these strides; s <
        // n <= MAX_PARTS indexes inside w.
        unsafe { *w.add(s) = *(p.parts_lse as *const f32).wrapping_offset(at as isize) };
        s += threads;
    }
    sync_threads();
    // Every thread reduces the (few, shared-memory) lse itself: no second round trip.
    let mut mx = f32::NEG_INFINITY;
    for s in 0..n {
        // SAFETY: s < n <= MAX_PARTS.
        mx = mx.max(unsafe { *w.add(s) });
    }
    // Weights in the log2 domain: w_s = 2^((lse_s - M) · log2 e), 0 for -inf.
    let weight = |l: f32| {
        if l == f32::NEG_INFINITY {
            0.0
        } else {
            exp2((l - mx) * LOG2_E)
        }
    };
    let mut sum = 0.0f32;
    for s in 0..n {
        // SAFETY: as above.
        sum += weight(unsafe { *w.add(s) });
    }
    sync_threads(); // every thread has read the lse
    let mut s = tid;
    while s < n {
        // SAFETY: as above.
        unsafe { *w.add(s) = weight(*w.add(s)) };
        s += threads;
    }
    sync_threads();
    let inv = if sum > 0.0 { rcp(sum) } else { 0.0 };
    let os = p.parts_o_strides;
    let dv = p.head_dim_v as usize;
    let out = (p.out as *mut O).wrapping_offset(
        (bt * p.o_strides[0] + row * p.o_strides[1] + h * p.o_strides[2]) as isize,
    );
    let part = |s: usize, c: usize| {
        let at = s as i64 * os[0] + bt * os[1] + row * os[2] + h * os[3];
        // SAFETY: the host validated the partials for [n, B, S, H, Dv] with these strides, so
        // every (s < n, c < Dv) is in bounds (read even when its weight is 0: independent loads).
        unsafe { (*(p.parts_o as *const I).wrapping_offset(at as isize).add(c)).to_f32() }
    };
    let mut c = tid;
    while c < dv {
        // Eight independent chains: the loads of eight partials are in flight together (past
        // the last partial a lane re-reads partial n - 1 with weight 0). A zero weight selects 0
        // (its partial may hold anything, NaN included).
        let mut acc = [0.0f32; 8];
        let mut s = 0;
        while s < n {
            for u in 0..8 {
                let k = (s + u).min(n - 1);
                // SAFETY: k < n <= MAX_PARTS.
                let wt = if s + u < n { unsafe { *w.add(k) } } else { 0.0 };
                let x = part(k, c);
                acc[u] += if wt > 0.0 { wt * x } else { 0.0 };
            }
            s += 8;
        }
        let total =
            ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        // SAFETY: row < S_b, h < H and c < Dv are inside `out` (host validated).
        unsafe { *out.add(c) = O::from_f32(total * inv) };
        c += threads;
    }
    if tid == 0 && p.lse != 0 {
        let lse = if sum > 0.0 {
            mx + log2(sum) * LN_2
        } else {
            f32::NEG_INFINITY
        };
        let at = bt * p.lse_strides[0] + h * p.lse_strides[1] + row;
        // SAFETY: inside `lse` (host validated, sequence stride 1).
        unsafe { *(p.lse as *mut f32).wrapping_offset(at as isize) = lse };
    }
}
