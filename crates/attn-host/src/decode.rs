//! The inference path: paged KV caches, split-KV (flash-decoding), GQA packing, partial attention
//! over a key range, and the merge of partial results.
//!
//! A decode step (one or a few new query tokens per sequence against a long KV cache) is
//! memory-bound: the floor is the bytes of K and V read once over the copy bandwidth. The
//! [`FwdVariant::Decode`](attn_abi::FwdVariant::Decode) kernels serve it:
//!
//! - **GQA packing**: the `G = Hq / Hk` query heads that share a KV head are rows of one block, so
//!   K and V are read once per KV head, not `G` times ([`Packing`]).
//! - **Split-KV**: when the `(query block, kv head, sequence)` blocks cannot fill the GPU, each
//!   one's keys are cut into `splits` chunks, one block per chunk; each writes a partial output
//!   (f32) and its lse to a workspace, and the merge kernel combines them by their lse
//!   ([`Splits`], [`choose_splits`], [`Workspace`]).
//! - **Paged KV** ([`Paged`]): k/v are pages `[num_pages, page_size, Hk, D|Dv]` addressed through a
//!   block table `[nb, max_pages]` (the vLLM / FlashAttention-2 `block_table` convention).
//! - **Key ranges** ([`Forward::key_range`](crate::Forward::key_range)): a partial attention over
//!   keys `lo..hi` that returns its output and lse, and [`Merge`] of any number of partials.
//!
//! [`Forward`](crate::Forward) picks the decode kernels, packing and the split count by itself
//! (see [`Forward::plan_on`](crate::Forward::plan_on)); each can be forced.
//!
//! # Context parallelism (ring attention)
//!
//! Partials and [`Merge`] are what an engine needs to spread one long sequence over GPUs: each GPU
//! holds a chunk of K/V; for its queries it runs one forward per chunk it receives (over NCCL,
//! in the engine) with `lse`, then merges the partial outputs. With a causal mask and equal chunks,
//! a (query chunk, key chunk) pair is either fully visible (no mask), hidden (skipped), or the
//! diagonal pair (causal top-left on the chunk-local k/v), so chunk-local calls suffice. The
//! merge is exact up to rounding: `out = Σ_s exp(lse_s - lse) · out_s`, `lse = ln Σ_s exp(lse_s)`.
use crate::device::Stream;
use crate::error::{Error, Result};
use crate::ops::{I32Ref, LseRef, TensorRef};
use attn_abi::{DType, KernArgs, KernelId, MergeParams};
use attn_kernels::fwd::policy;

/// Threads per block of the merge kernels (one block per `(row, head, sequence)`).
pub const MERGE_THREADS: u32 = policy::THREADS;

/// The most splits (and the most partials one merge takes).
pub const MAX_SPLITS: u32 = attn_kernels::fwd::merge::MAX_PARTS as u32;

/// Dynamic shared memory of a merge block, bytes.
pub const MERGE_SMEM_BYTES: u32 = attn_kernels::fwd::merge::SMEM_BYTES;

/// A paged KV cache: k and v are `[num_pages, page_size, Hk, D|Dv]` (any strides, head dim 1),
/// and key `j` of sequence `b` is row `j % page_size` of page `block_table[b][j / page_size]`.
///
/// Sequence `b` has `seqused_k[b]` keys ([`Forward::seqused_k`](crate::Forward::seqused_k)), or
/// `max_pages · page_size` without it; the logical key length of the call is
/// `max_pages · page_size`. `page_size` is k's `shape[1]` and must be a multiple of 16. A table
/// entry outside `0..num_pages` is clamped by the kernel (wrong keys, never a fault). In varlen
/// mode the queries are packed as usual and `cu_seqlens_k` is not read (pass `cu_seqlens_q` twice).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paged {
    /// i32 `[nb, table_stride]`, row-major; the first `max_pages` entries of each row are used.
    pub block_table: I32Ref,
    /// Pages per sequence.
    pub max_pages: usize,
    /// Entries between rows of the table (at least `max_pages`).
    pub table_stride: usize,
}

/// How many chunks each block's keys are split into (flash-decoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Splits {
    /// [`choose_splits`] from the problem and the device (1 for a plan without a device).
    #[default]
    Auto,
    /// Exactly this many (1..=[`MAX_SPLITS`]; 1 disables splitting).
    Fixed(u32),
}

/// Whether the query heads of one KV head become rows of one block (decode kernels only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Packing {
    /// Pack whenever `Hq > Hk` and no per-head piece (ALiBi) is present.
    #[default]
    Auto,
    /// Pack (an error with ALiBi).
    On,
    /// Never pack.
    Off,
}

/// Whether the call runs on the decode kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Route {
    /// Decode kernels when the call needs them (paged KV, a key range, forced splits or packing)
    /// or when it is decode-shaped: at most [`DECODE_ROWS`] query rows per KV head after packing.
    #[default]
    Auto,
    /// Always the decode kernels (an error where they cannot serve the call).
    Decode,
    /// Never (an error when the call needs them).
    Prefill,
}

/// The decode kernels serve a call automatically when each KV head has at most this many query
/// rows (`max_seqlen_q · G` packed, `max_seqlen_q` otherwise).
pub const DECODE_ROWS: usize = 32;

/// Device memory for split-KV's partial results, owned by the caller (engines preallocate, and
/// a captured CUDA/HIP graph then replays without allocations). Size:
/// [`Plan::workspace_bytes`](crate::Plan::workspace_bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workspace {
    /// Device address (16-byte aligned).
    pub ptr: u64,
    /// Bytes available at `ptr`.
    pub bytes: usize,
}

/// The split count for `blocks` blocks of `key_blocks` key blocks each on a device with `units`
/// multiprocessors (CUs) holding `per_unit` blocks each: 1 when the blocks already fill the
/// device (or no device is known, `units = 0`); otherwise the smallest count whose waves of blocks
/// reach 85% of the best efficiency over `1..=max`, where every split keeps at least two key
/// blocks (FlashAttention-2's `num_splits_heuristic`, with the waves measured in resident blocks).
pub fn choose_splits(blocks: usize, key_blocks: usize, units: u32, per_unit: u32) -> u32 {
    let slots = units as usize * per_unit.max(1) as usize;
    if slots == 0 || blocks == 0 || blocks * 5 >= slots * 4 {
        return 1;
    }
    let max = (key_blocks / 2).clamp(1, MAX_SPLITS as usize);
    let eff = |s: usize| {
        let work = blocks * s;
        work as f64 / (work.div_ceil(slots) * slots) as f64
    };
    let best = (1..=max).map(eff).fold(0.0, f64::max);
    (1..=max).find(|&s| eff(s) >= 0.85 * best).unwrap_or(1) as u32
}

/// Partial outputs `[n, batch, seq, heads, Dv]` in device memory (any strides, head dim 1): the
/// input of [`Merge`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PartialsRef {
    /// Device address of element `[0, 0, 0, 0, 0]`.
    pub ptr: u64,
    /// Elements addressable from `ptr`.
    pub len: usize,
    /// Element type (any of the three; the merge computes in f32).
    pub dtype: DType,
    /// `[n, batch, seq, heads, Dv]`.
    pub shape: [usize; 5],
    /// Element strides; the last must be 1.
    pub strides: [i64; 5],
}

/// Partial lse `[n, batch, heads, seq]` (f32, natural log, sequence stride 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PartialLseRef {
    /// Device address of element `[0, 0, 0, 0]`.
    pub ptr: u64,
    /// Elements addressable from `ptr`.
    pub len: usize,
    /// `[n, batch, heads, seq]`.
    pub shape: [usize; 4],
    /// Element strides; the last must be 1.
    pub strides: [i64; 4],
}

/// Merges `n` partial attention results (each over a disjoint set of keys, as returned by a
/// forward with `lse`, e.g. over a [key range](crate::Forward::key_range)) into one:
///
/// ```text
/// lse = ln Σ_s exp(lse_s),   out = Σ_s exp(lse_s - lse) · out_s     (0 and -inf when every
///                                                                    lse_s is -inf)
/// ```
///
/// A partial whose lse is `-inf` is not read. Varlen results merge as batch 1 (`[1, total, H, Dv]`).
#[derive(Clone, Copy, Debug)]
pub struct Merge {
    parts: PartialsRef,
    parts_lse: PartialLseRef,
    out: TensorRef,
    lse: Option<LseRef>,
}

/// A merge launch, fully decided.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MergePlan {
    /// The merge kernel.
    pub kernel: KernelId,
    /// Its parameters.
    pub params: MergeParams,
    /// `(seq, heads, batch)`, `None` when there is nothing to merge.
    pub grid: Option<[u32; 3]>,
}

impl Merge {
    /// A merge of `parts` / `parts_lse` into `out [batch, seq, heads, Dv]`.
    pub fn new(parts: PartialsRef, parts_lse: PartialLseRef, out: TensorRef) -> Self {
        Merge {
            parts,
            parts_lse,
            out,
            lse: None,
        }
    }
    /// Also write the merged lse `[batch, heads, seq]`.
    pub fn lse(mut self, lse: LseRef) -> Self {
        self.lse = Some(lse);
        self
    }

    /// Validates every argument. Pure: touches no device.
    pub fn plan(&self) -> Result<MergePlan> {
        let [n, b, s, h, dv] = self.parts.shape;
        let o = &self.out;
        if o.shape != [b, s, h, dv] {
            return Err(Error::invalid(
                "out.shape",
                format!(
                    "{:?} (the partials' [batch, seq, heads, Dv])",
                    [b, s, h, dv]
                ),
                format!("{:?}", o.shape),
            ));
        }
        if self.parts_lse.shape != [n, b, h, s] {
            return Err(Error::invalid(
                "parts_lse.shape",
                format!("{:?} ([n, batch, heads, seq])", [n, b, h, s]),
                format!("{:?}", self.parts_lse.shape),
            ));
        }
        if n == 0 || n > MAX_SPLITS as usize {
            return Err(Error::invalid(
                "parts.shape[0]",
                format!("1..={MAX_SPLITS} partials"),
                n,
            ));
        }
        for (what, stride) in [
            ("parts.strides[4]", self.parts.strides[4]),
            ("parts_lse.strides[3]", self.parts_lse.strides[3]),
            ("out.strides[3]", o.strides[3]),
        ] {
            if stride != 1 {
                return Err(Error::invalid(what, "1", stride));
            }
        }
        if dv == 0 || dv > 256 {
            return Err(Error::unsupported(format!(
                "Dv = {dv}: supported is 1..=256"
            )));
        }
        if b > 65_535 || h > 65_535 || s > i32::MAX as usize {
            return Err(Error::unsupported(format!(
                "batch {b}, heads {h} or seq {s} above the grid limits"
            )));
        }
        crate::ops::check_extent(
            "parts",
            self.parts.ptr,
            self.parts.len,
            self.parts.dtype.size(),
            &self.parts.shape,
            &self.parts.strides,
        )?;
        crate::ops::check_extent(
            "parts_lse",
            self.parts_lse.ptr,
            self.parts_lse.len,
            4,
            &self.parts_lse.shape,
            &self.parts_lse.strides,
        )?;
        crate::ops::check_extent("out", o.ptr, o.len, o.dtype.size(), &o.shape, &o.strides)?;
        crate::ops::check_no_broadcast("out", &o.shape, &o.strides)?;
        let mut lse_strides = [0i64; 2];
        if let Some(l) = &self.lse {
            if l.shape != [b, h, s] {
                return Err(Error::invalid(
                    "lse.shape",
                    format!("{:?}", [b, h, s]),
                    format!("{:?}", l.shape),
                ));
            }
            if l.strides[2] != 1 {
                return Err(Error::invalid("lse.strides[2]", "1", l.strides[2]));
            }
            crate::ops::check_extent("lse", l.ptr, l.len, 4, &l.shape, &l.strides)?;
            crate::ops::check_no_broadcast("lse", &l.shape, &l.strides)?;
            lse_strides = [l.strides[0], l.strides[1]];
        }
        let ps = self.parts.strides;
        let ls = self.parts_lse.strides;
        let params = MergeParams {
            parts_o: self.parts.ptr,
            parts_o_strides: [ps[0], ps[1], ps[2], ps[3]],
            parts_lse: self.parts_lse.ptr,
            parts_lse_strides: [ls[0], ls[1], ls[2]],
            out: o.ptr,
            o_strides: [o.strides[0], o.strides[1], o.strides[2]],
            lse: self.lse.map_or(0, |l| l.ptr),
            lse_strides,
            cu_seqlens_q: 0,
            n_parts: n as u32,
            seqlen: s as u32,
            max_seqlen: s as u32,
            head_dim_v: dv as u32,
        };
        Ok(MergePlan {
            kernel: KernelId::Merge {
                input: self.parts.dtype,
                output: o.dtype,
            },
            params,
            grid: (b > 0 && s > 0 && h > 0).then_some([s as u32, h as u32, b as u32]),
        })
    }

    /// Validates and launches on `stream` (asynchronous).
    ///
    /// # Safety
    /// Every `ptr` must be device memory of `stream`'s device valid for its `len` elements while
    /// the kernel runs, and `out`/`lse` must not overlap the partials.
    pub unsafe fn launch(&self, stream: &Stream) -> Result<()> {
        let plan = self.plan()?;
        let Some(grid) = plan.grid else { return Ok(()) };
        // SAFETY: the plan checked every extent; the caller vouches for the addresses.
        unsafe {
            stream.device().launch(
                plan.kernel,
                grid,
                MERGE_THREADS,
                MERGE_SMEM_BYTES,
                stream,
                &KernArgs::new(&plan.params),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_fill_the_device_and_keep_two_key_blocks_each() {
        // Enough blocks: no split.
        assert_eq!(choose_splits(1024, 64, 132, 2), 1);
        assert_eq!(choose_splits(256, 64, 132, 2), 1);
        // No device known: no split.
        assert_eq!(choose_splits(8, 256, 0, 2), 1);
        // B = 1, Hk = 8, Sk = 32768 (256 key blocks of 128) on 132 SMs x 2 blocks.
        let s = choose_splits(8, 256, 132, 2);
        assert!((20..=128).contains(&s), "{s}");
        let eff = |s: u32| {
            let w = 8 * s as usize;
            w as f64 / (w.div_ceil(264) * 264) as f64
        };
        assert!(eff(s) >= 0.85 * (1..=128).map(eff).fold(0.0, f64::max));
        // Few key blocks cap the count: every split keeps two.
        assert_eq!(choose_splits(8, 4, 132, 2), 2);
        assert_eq!(choose_splits(8, 1, 132, 2), 1);
        // Every choice is within 85% of the best efficiency and keeps two key blocks a split.
        for blocks in [1, 2, 4, 8, 16, 32, 64, 128, 211] {
            for key_blocks in [2, 7, 64, 512, 4096] {
                let s = choose_splits(blocks, key_blocks, 132, 2) as usize;
                let eff = |s: usize| {
                    let w = blocks * s;
                    w as f64 / (w.div_ceil(264) * 264) as f64
                };
                let max = (key_blocks / 2).clamp(1, MAX_SPLITS as usize);
                assert!(s >= 1 && s <= max, "{blocks} {key_blocks}: {s}");
                let best = (1..=max).map(eff).fold(0.0, f64::max);
                assert!(eff(s) >= 0.85 * best, "{blocks} {key_blocks}: {s}");
            }
        }
    }

    fn parts(n: usize) -> (PartialsRef, PartialLseRef, TensorRef) {
        let (b, s, h, dv) = (2, 5, 3, 64);
        let p = PartialsRef {
            ptr: 0x10000,
            len: n * b * s * h * dv,
            dtype: DType::F32,
            shape: [n, b, s, h, dv],
            strides: [
                (b * s * h * dv) as i64,
                (s * h * dv) as i64,
                (h * dv) as i64,
                dv as i64,
                1,
            ],
        };
        let l = PartialLseRef {
            ptr: 0x20000,
            len: n * b * h * s,
            shape: [n, b, h, s],
            strides: [(b * h * s) as i64, (h * s) as i64, s as i64, 1],
        };
        let o = TensorRef::contiguous(0x30000, DType::Bf16, [b, s, h, dv]);
        (p, l, o)
    }

    #[test]
    fn merge_plans_one_block_per_row_and_head() {
        let (p, l, o) = parts(3);
        let plan = Merge::new(p, l, o)
            .lse(LseRef::contiguous(0x40000, [2, 3, 5]))
            .plan()
            .unwrap();
        assert_eq!(plan.grid, Some([5, 3, 2]));
        assert_eq!(
            plan.kernel,
            KernelId::Merge {
                input: DType::F32,
                output: DType::Bf16
            }
        );
        assert_eq!(plan.params.n_parts, 3);
        assert_eq!(plan.params.parts_lse_strides, [30, 15, 5]);
    }

    #[test]
    fn bad_merges_are_typed_errors() {
        let what = |m: Merge| match m.plan() {
            Err(Error::InvalidArgument { what, .. }) => what,
            other => panic!("expected InvalidArgument, got {other:?}"),
        };
        let (p, l, o) = parts(3);
        assert_eq!(
            what(Merge::new(parts(0).0, parts(0).1, o)),
            "parts.shape[0]"
        );
        let mut l2 = l;
        l2.shape[0] = 2;
        assert_eq!(what(Merge::new(p, l2, o)), "parts_lse.shape");
        let mut o2 = o;
        o2.shape[1] = 4;
        assert_eq!(what(Merge::new(p, l, o2)), "out.shape");
        let mut p2 = p;
        p2.len -= 1;
        assert_eq!(what(Merge::new(p2, l, o)), "parts.len");
        let mut l3 = l;
        l3.strides[3] = 2;
        assert_eq!(what(Merge::new(p, l3, o)), "parts_lse.strides[3]");
        assert_eq!(
            what(Merge::new(p, l, o).lse(LseRef::contiguous(0x40000, [2, 3, 4]))),
            "lse.shape"
        );
    }
}
