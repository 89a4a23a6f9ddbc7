//! The `attn_dropout_mask` kernel: the `return_dropout_randval` tensor.
//!
//! It writes every position of the logical `[nb, Hq, max_sq, max_sk]` u8 tensor: `keep_ij`
//! (1 = kept) where `i < Sq_b` and `j` is below the sequence's key count (batch: `Sk`, varlen: its
//! `cu_seqlens_k` length; masked positions and keys past `seqused_k` included), 0 in the varlen
//! padding past a sequence's lengths. The bits come from the same [`Dropout`] piece the forward
//! applies through its atom's lane map (the forward does not write the tensor: the registers its
//! writes took spilled the D = 256 kernels).
//!
//! Grid `(ceil(max_sq · ceil(max_sk / 8) / 128), Hq, nb)`, 128 threads: one thread per row and
//! aligned 8-key group, one Philox draw each (the same [`Dropout`] piece as the forward).
use crate::arch::{block_idx, thread_idx};
use crate::score::Dropout;
use crate::seq::SeqInfo;
use attn_abi::FwdParams;

/// Threads per block of the mask kernel.
pub const THREADS: u32 = 128;

/// Writes the hidden positions of the keep mask for one block of `(row, key group)` pairs.
#[inline(always)]
pub fn run(p: &FwdParams) {
    let p = *p;
    let (x, h, b) = block_idx();
    let (h, b) = (h as usize, b as usize);
    let Some(dr) = Dropout::new(&p, b, h) else {
        return;
    };
    let seq = SeqInfo::resolve(&p, b);
    let (mq, mk) = (p.max_seqlen_q as u64, p.max_seqlen_k as u64);
    let groups = mk.div_ceil(8);
    let idx = x as u64 * THREADS as u64 + thread_idx() as u64;
    if idx >= mq * groups {
        return;
    }
    let (i, g) = ((idx / groups) as i64, (idx % groups) as i64);
    let w = dr.draw(i, 8 * g);
    let s = p.randval_strides;
    let row = (p.randval as *mut u8)
        .wrapping_offset((b as i64 * s[0] + h as i64 * s[1] + i * s[2]) as isize);
    let in_rows = i < seq.sq as i64;
    for j in 8 * g..(8 * g + 8).min(mk as i64) {
        let bit = in_rows && j < seq.sk_total as i64 && dr.keep(&w, j);
        // SAFETY: i < max_sq and j < max_sk index the mask tensor, whose extent the host
        // checked for that logical shape (key stride 1).
        unsafe { *row.offset(j as isize) = bit as u8 };
    }
}
