//! Philox4x32-10 and the dropout mask of semantics.md §4.
//!
//! For `(b, h, i, j)` with `bh = b * Hq + h` and `c = offset + bh` (u64, wrapping):
//!
//! ```text
//! counter = [ (j / 8) as u32, i as u32, c as u32, (c >> 32) as u32 ]
//! key     = [ seed as u32, (seed >> 32) as u32 ]
//! w       = philox4x32_10(counter, key)
//! r       = (w[(j % 8) / 2] >> (16 * (j % 2))) & 0xFFFF
//! keep    = r >= min(65536, round(p * 65536))
//! ```
//!
//! ```
//! use attn_ref::dropout::{keep, mask_block};
//! use attn_ref::Dropout;
//! let d = Dropout { p: 0.25, seed: 7, offset: 3 };
//! let block = mask_block(&d, 4, 1, 2, 10..12, 5..9);
//! assert_eq!(block.len(), 8);
//! assert_eq!(block[1] == 1, keep(&d, 4, 1, 2, 10, 6));
//! ```

use crate::{Dropout, Problem};
use std::ops::Range;

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// Philox4x32 with 10 rounds (Random123's constants and round function).
///
/// ```
/// use attn_ref::dropout::philox4x32_10;
/// assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
/// ```
#[inline]
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = ctr;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// `t = min(65536, round(p * 65536))` (`p` in f64, rounded half away from zero).
///
/// ```
/// assert_eq!(attn_ref::dropout::threshold(0.5), 32768);
/// assert_eq!(attn_ref::dropout::threshold(0.0), 0);
/// ```
#[inline]
pub fn threshold(p: f64) -> u32 {
    ((p * 65536.0).round().clamp(0.0, 65536.0)) as u32
}

/// `rescale = 1 / (1 - p)`, computed once in f32: `1.0f32 / (1.0f32 - p as f32)`.
///
/// ```
/// assert_eq!(attn_ref::dropout::rescale(0.5), 2.0);
/// ```
#[inline]
pub fn rescale(p: f64) -> f32 {
    1.0f32 / (1.0f32 - p as f32)
}

/// The Philox key of a seed.
#[inline]
pub fn key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// The Philox counter of element `(bh, i, j)` with `bh = b * Hq + h`.
#[inline]
pub fn counter(offset: u64, bh: u64, i: usize, j: usize) -> [u32; 4] {
    let c = offset.wrapping_add(bh);
    [(j / 8) as u32, i as u32, c as u32, (c >> 32) as u32]
}

/// The 16-bit random value of element `(bh, i, j)`.
///
/// ```
/// use attn_ref::dropout::{counter, key, philox4x32_10, random16};
/// let w = philox4x32_10(counter(5, 3, 2, 11), key(9));
/// assert_eq!(random16(9, 5, 3, 2, 11), (w[1] >> 16) & 0xFFFF);
/// ```
#[inline]
pub fn random16(seed: u64, offset: u64, bh: u64, i: usize, j: usize) -> u32 {
    let w = philox4x32_10(counter(offset, bh, i, j), key(seed));
    (w[(j % 8) / 2] >> (16 * (j % 2))) & 0xFFFF
}

/// Whether element `(b, h, i, j)` is kept, for a problem with `heads_q` query heads.
#[inline]
pub fn keep(d: &Dropout, heads_q: usize, b: usize, h: usize, i: usize, j: usize) -> bool {
    let bh = (b as u64)
        .wrapping_mul(heads_q as u64)
        .wrapping_add(h as u64);
    random16(d.seed, d.offset, bh, i, j) >= d.threshold()
}

/// Writes `keep` (1 = kept) for row `i` of `(b, h)`, columns `cols`, into `out` (length `cols.len()`).
/// One Philox call per 8 columns.
pub fn keep_row(
    d: &Dropout,
    heads_q: usize,
    b: usize,
    h: usize,
    i: usize,
    cols: Range<usize>,
    out: &mut [u8],
) {
    assert_eq!(out.len(), cols.len(), "keep_row: output length");
    let t = d.threshold();
    let k = key(d.seed);
    let bh = (b as u64)
        .wrapping_mul(heads_q as u64)
        .wrapping_add(h as u64);
    let mut j = cols.start;
    while j < cols.end {
        let w = philox4x32_10(counter(d.offset, bh, i, j), k);
        let group_end = ((j / 8 + 1) * 8).min(cols.end);
        for jj in j..group_end {
            let r = (w[(jj % 8) / 2] >> (16 * (jj % 2))) & 0xFFFF;
            out[jj - cols.start] = (r >= t) as u8;
        }
        j = group_end;
    }
}

/// The keep mask of a block `rows x cols` of `(b, h)`, row-major, 1 = kept.
pub fn mask_block(
    d: &Dropout,
    heads_q: usize,
    b: usize,
    h: usize,
    rows: Range<usize>,
    cols: Range<usize>,
) -> Vec<u8> {
    let w = cols.len();
    let mut out = vec![0u8; rows.len() * w];
    for (r, i) in rows.enumerate() {
        keep_row(
            d,
            heads_q,
            b,
            h,
            i,
            cols.clone(),
            &mut out[r * w..(r + 1) * w],
        );
    }
    out
}

/// The whole `dropout_mask` tensor of a problem (`None` without dropout), with the shape
/// [`Problem::bias_shape`], row-major.
///
/// Batch mode: every `(b, h, i, j)` is written, masked positions and keys past `seqused_k` included.
/// Varlen mode: `(b, h, i, j)` is written for `i < Sq_b`, `j < Sk_b` (before `seqused_k`); the padding
/// of shorter sequences up to `max_sq`/`max_sk` is 0.
pub fn mask_tensor(p: &Problem) -> Option<Vec<u8>> {
    use rayon::prelude::*;
    let d = p.dropout?;
    let [nb, hq, mq, mk] = p.bias_shape();
    let seqs = p.seqs();
    let mut out = vec![0u8; nb * hq * mq * mk];
    if mq * mk == 0 {
        return Some(out);
    }
    out.par_chunks_mut(mq * mk)
        .enumerate()
        .for_each(|(bh, chunk)| {
            let (b, h) = (bh / hq, bh % hq);
            let s = &seqs[b];
            for i in 0..s.sq {
                keep_row(
                    &d,
                    hq,
                    b,
                    h,
                    i,
                    0..s.sk_total,
                    &mut chunk[i * mk..i * mk + s.sk_total],
                );
            }
        });
    Some(out)
}
