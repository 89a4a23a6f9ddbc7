//! One sequence of a call, resolved from the parameters: batch mode or varlen ("group") mode,
//! with `seqused_k` (semantics.md §1).
//!
//! The arrays `cu_seqlens_q`, `cu_seqlens_k` and `seqused_k` live on the device, where the host
//! cannot check them, so every value read from them is clamped here: a malformed array gives
//! wrong numbers, never an access outside the tensors the host validated.
use attn_abi::{FLAG_VARLEN, FwdParams};

/// Where sequence `b` lives and how long it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqInfo {
    /// Index into the leading (batch) dimension of q/k/v/out/lse: `b` in batch mode, 0 in varlen.
    pub batch: usize,
    /// First query row of the sequence in q's sequence dimension.
    pub q0: usize,
    /// Query rows `Sq_b` (varlen: at most `max_seqlen_q`).
    pub sq: usize,
    /// First key row in k's sequence dimension.
    pub k0: usize,
    /// Key rows present (varlen: at most `max_seqlen_k`).
    pub sk_total: usize,
    /// Key rows used, `Sk_b` of the masks (`seqused_k[b]`, clamped to `sk_total`).
    pub sk: usize,
}

impl SeqInfo {
    /// [`SeqInfo::resolve`] when the kernel supports varlen and `seqused_k`, else
    /// [`SeqInfo::batch`].
    #[inline(always)]
    pub fn of<const VARLEN: bool>(p: &FwdParams, b: usize) -> SeqInfo {
        if VARLEN {
            Self::resolve(p, b)
        } else {
            Self::batch(p, b)
        }
    }

    /// Batch entry `b` of a batch-mode call without `seqused_k`: everything comes from the
    /// parameters (which the compiler can re-read instead of keeping in registers).
    #[inline(always)]
    pub fn batch(p: &FwdParams, b: usize) -> SeqInfo {
        SeqInfo {
            batch: b,
            q0: 0,
            sq: p.seqlen_q as usize,
            k0: 0,
            sk_total: p.seqlen_k as usize,
            sk: p.seqlen_k as usize,
        }
    }

    /// Sequence `b` (`b < p.batch`, which the grid guarantees) of the call `p`.
    #[inline(always)]
    pub fn resolve(p: &FwdParams, b: usize) -> SeqInfo {
        Self::resolve_with(p, b, false)
    }

    /// [`SeqInfo::resolve`], where with `paged` the keys of every sequence come from its row of
    /// the block table: `k0 = 0` and `Sk` (the table's `max_pages · page_size`) present, whatever
    /// `cu_seqlens_k` says.
    #[inline(always)]
    pub fn resolve_with(p: &FwdParams, b: usize, paged: bool) -> SeqInfo {
        let (total_q, total_k) = (p.seqlen_q as i64, p.seqlen_k as i64);
        let read = |ptr: u64, idx: usize| -> i64 {
            // SAFETY: the host checked that the array holds `nseq + 1` (cu_seqlens) or `nseq`/`B`
            // (seqused_k) elements, and `b < nseq` (grid z).
            unsafe { *(ptr as *const i32).add(idx) as i64 }
        };
        let (batch, q0, sq, k0, sk_total) = if p.flags & FLAG_VARLEN != 0 {
            let q0 = read(p.cu_seqlens_q, b).clamp(0, total_q);
            let q1 = read(p.cu_seqlens_q, b + 1).clamp(q0, total_q);
            let (k0, sk) = if paged {
                (0, total_k)
            } else {
                let k0 = read(p.cu_seqlens_k, b).clamp(0, total_k);
                let k1 = read(p.cu_seqlens_k, b + 1).clamp(k0, total_k);
                (k0, (k1 - k0).min(p.max_seqlen_k as i64))
            };
            (0, q0, (q1 - q0).min(p.max_seqlen_q as i64), k0, sk)
        } else {
            (b, 0, total_q, 0, total_k)
        };
        let sk = if p.seqused_k != 0 {
            read(p.seqused_k, b).clamp(0, sk_total)
        } else {
            sk_total
        };
        SeqInfo {
            batch,
            q0: q0 as usize,
            sq: sq as usize,
            k0: k0 as usize,
            sk_total: sk_total as usize,
            sk: sk as usize,
        }
    }
}
