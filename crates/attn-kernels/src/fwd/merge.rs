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
//! One block per `(i, h, b)`; its threads take the head-dim columns. A partial whose lse is
//! `-inf` is never read (a split that saw no key may leave anything there).
use crate::arch::{block_idx, exp2, log2, rcp, thread_idx};
use crate::fwd::policy::THREADS;
use crate::numeric::{Element, LN_2};
use attn_abi::MergeParams;

const LOG2_E: f32 = core::f32::consts::LOG2_E;

/// Merges the partials of one `(row, head, sequence)` block (see the module docs).
#[inline(always)]
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
    let n = p.n_parts as usize;
    let ls = p.parts_lse_strides;
    let lse_of = |s: usize| {
        let at = s as i64 * ls[0] + bt * ls[1] + h * ls[2] + row;
        // SAFETY: the host validated the partial lse for [n, B, H, S] with these strides.
        unsafe { *(p.parts_lse as *const f32).wrapping_offset(at as isize) }
    };
    let mut mx = f32::NEG_INFINITY;
    for s in 0..n {
        mx = mx.max(lse_of(s));
    }
    // Weights in the log2 domain: w_s = 2^((lse_s - M) · log2 e).
    let weight = |l: f32| {
        if l == f32::NEG_INFINITY {
            0.0
        } else {
            exp2((l - mx) * LOG2_E)
        }
    };
    let mut sum = 0.0f32;
    for s in 0..n {
        sum += weight(lse_of(s));
    }
    let inv = if sum > 0.0 { rcp(sum) } else { 0.0 };
    let os = p.parts_o_strides;
    let dv = p.head_dim_v as usize;
    let out = (p.out as *mut O).wrapping_offset(
        (bt * p.o_strides[0] + row * p.o_strides[1] + h * p.o_strides[2]) as isize,
    );
    let mut c = thread_idx() as usize;
    while c < dv {
        let mut acc = 0.0f32;
        for s in 0..n {
            let w = weight(lse_of(s));
            if w > 0.0 {
                let at = s as i64 * os[0] + bt * os[1] + row * os[2] + h * os[3];
                // SAFETY: the host validated the partials for [n, B, S, H, Dv] with these strides.
                acc += w * unsafe {
                    (*(p.parts_o as *const I).wrapping_offset(at as isize).add(c)).to_f32()
                };
            }
        }
        // SAFETY: row < S_b, h < H and c < Dv are inside `out` (host validated).
        unsafe { *out.add(c) = O::from_f32(acc * inv) };
        c += THREADS as usize;
    }
    if thread_idx() == 0 && p.lse != 0 {
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
