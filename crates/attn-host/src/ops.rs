//! The attention forward call: arguments → validated [`FwdParams`] → kernel choice → launch.
//!
//! Validation is a pure function ([`Forward::plan`]) so that every rejection is unit-tested
//! without a GPU; nothing is launched unless it succeeds.
//!
//! # Optional features
//!
//! Besides q/k/v/out, `lse`, the scale and the mask, a [`Forward`] call can carry (semantics.md
//! §1–§4):
//!
//! | builder | argument | effect |
//! |---|---|---|
//! | [`Forward::varlen`] / [`Forward::seqstart`] | [`Varlen`], [`I32Ref`] | packed ("group") sequences |
//! | [`Forward::seqused_k`] | [`I32Ref`] | per-sequence used key length |
//! | [`Forward::bias`] | [`BiasRef`] | additive bias, any strides (0 broadcasts) |
//! | [`Forward::alibi`] | [`AlibiRef`] | ALiBi slopes `[Hq]` or `[nb, Hq]` |
//! | [`Forward::softcap`] | `f32` | `s = cap · tanh(s / cap)` |
//! | [`Forward::dropout`] | [`Dropout`], [`Philox`] | Philox dropout, seed on the host or the device |
//! | [`Forward::dropout_mask`] | [`MaskRef`] | writes the u8 keep mask (the seed's `return_dropout_randval`) |
//! | [`Forward::paged`] | [`Paged`] | k/v are pages of a paged KV cache ([`crate::decode`]) |
//! | [`Forward::key_range`] | `lo, hi` | partial attention over keys `lo..hi` (merge with [`crate::decode::Merge`]) |
//! | [`Forward::splits`], [`Forward::pack_gqa`], [`Forward::route`] | [`Splits`], [`Packing`], [`Route`] | force split-KV, GQA packing, the decode kernels |
//! | [`Forward::workspace`] | [`Workspace`] | caller memory for split-KV's partials |
//!
//! Throughout, `nb` is the number of sequences (`B` in batch mode, `nseq` in varlen mode) and
//! `max_sq` / `max_sk` are `Sq` / `Sk` in batch mode and the varlen hints in varlen mode: the bias
//! and the dropout mask have the logical shape `[nb, Hq, max_sq, max_sk]`.
use crate::decode::{
    self, DECODE_ROWS, MAX_SPLITS, MERGE_SMEM_BYTES, MERGE_THREADS, MergePlan, Packing, Paged,
    Route, Splits, Workspace,
};
use crate::device::{Device, DeviceBuffer, Stream};
use crate::error::{Error, Result};
use attn_abi::{
    DType, FLAG_BIAS_F32, FLAG_BIAS_VEC16, FLAG_DROPOUT, FLAG_KEY_RANGE, FLAG_PAGED, FLAG_VARLEN,
    FLAG_VEC16, FWD_HEAD_DIMS, FwdParams, FwdVariant, KernArgs, KernelId, MASK_BOTTOM_RIGHT,
    MASK_WINDOW, MergeParams, WINDOW_UNBOUNDED,
};
use attn_kernels::fwd::policy::{self, Family};

/// Threads per block of the [`KernelId::DropoutMask`] kernel (it uses no shared memory).
pub const DROPOUT_MASK_THREADS: u32 = 128;

/// The largest grid x / y / z extent the library launches (the y and z limit of CUDA).
const GRID_LIMIT: usize = 65_535;

/// Where the diagonal of a causal or window mask sits (semantics.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// `off = 0`: query `i` sees key `i` (PyTorch SDPA's `is_causal=True`).
    TopLeft,
    /// `off = Sk - Sq`: the last query sees the last key (FlashAttention, CK `is_causal`).
    BottomRight,
}

/// Which keys each query sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mask {
    /// Every key.
    #[default]
    None,
    /// Keys up to the aligned diagonal: `Window { left: None, right: Some(0), align }`.
    Causal(Align),
    /// Keys `i + off - left ..= i + off + right`; `None` is unbounded.
    Window {
        /// Keys visible left of the diagonal.
        left: Option<u32>,
        /// Keys visible right of the diagonal.
        right: Option<u32>,
        /// Diagonal alignment.
        align: Align,
    },
}

/// Element count and row-major strides of a contiguous tensor of `shape`.
///
/// A size-0 dimension counts as size 1 for the strides of the dimensions outside it (as in
/// PyTorch), so an empty tensor still has distinct, non-zero strides. Strides and the count
/// saturate instead of overflowing; [`Forward::plan`] rejects such tensors by their extent.
pub(crate) fn contiguous_layout<const N: usize>(shape: [usize; N]) -> (usize, [i64; N]) {
    let len = if shape.contains(&0) {
        0
    } else {
        shape
            .iter()
            .try_fold(1usize, |a, &n| a.checked_mul(n))
            .unwrap_or(usize::MAX)
    };
    let mut strides = [1i64; N];
    let mut acc = 1i64;
    for (s, &n) in strides.iter_mut().zip(shape.iter()).rev() {
        *s = acc;
        acc = acc.saturating_mul(i64::try_from(n.max(1)).unwrap_or(i64::MAX));
    }
    (len, strides)
}

/// A rank-4 tensor in device memory that the caller owns, BMHK-indexed: `[batch, seq, head,
/// head_dim]` with element strides (the head-dim stride must be 1).
///
/// In varlen mode ([`Forward::varlen`]) the batch dimension is 1 and the sequence dimension holds
/// every sequence's rows back to back: `[1, total, heads, head_dim]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorRef {
    /// Device address of element `[0, 0, 0, 0]`.
    pub ptr: u64,
    /// Elements addressable from `ptr` (bounds the strided extent).
    pub len: usize,
    /// Element type.
    pub dtype: DType,
    /// `[batch, seq, heads, head_dim]`.
    pub shape: [usize; 4],
    /// Element strides of the four dimensions.
    pub strides: [i64; 4],
}

impl TensorRef {
    /// A contiguous BMHK tensor (`len` is the element count of `shape`; a size-0 dimension
    /// counts as 1 for the strides outside it).
    pub fn contiguous(ptr: u64, dtype: DType, shape: [usize; 4]) -> Self {
        let (len, strides) = contiguous_layout(shape);
        TensorRef {
            ptr,
            len,
            dtype,
            shape,
            strides,
        }
    }
}

/// The f32 log-sum-exp output `[batch, heads_q, seq_q]` (sequence stride 1); in varlen mode
/// `[1, heads_q, total_q]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LseRef {
    /// Device address of element `[0, 0, 0]`.
    pub ptr: u64,
    /// Elements addressable from `ptr`.
    pub len: usize,
    /// `[batch, heads_q, seq_q]`.
    pub shape: [usize; 3],
    /// Element strides; the last must be 1.
    pub strides: [i64; 3],
}

impl LseRef {
    /// A contiguous `[B, Hq, Sq]` tensor.
    pub fn contiguous(ptr: u64, shape: [usize; 3]) -> Self {
        let (len, strides) = contiguous_layout(shape);
        LseRef {
            ptr,
            len,
            shape,
            strides,
        }
    }
}

/// A device array of `i32` that the caller owns (`cu_seqlens`, `seqused_k`).
///
/// The host cannot read it: its values are clamped by the kernel, so malformed contents give
/// wrong numbers, never a fault (semantics.md §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct I32Ref {
    /// Device address of element 0 (non-null, 4-byte aligned).
    pub ptr: u64,
    /// Number of elements.
    pub len: usize,
}

/// Varlen ("group") mode: `nseq` sequences packed along the sequence dimension.
///
/// q is `[1, total_q, Hq, D]`, k/v `[1, total_k, Hk, D|Dv]`, out `[1, total_q, Hq, Dv]` and lse
/// `[1, Hq, total_q]`. Sequence `b` owns query rows `cu_seqlens_q[b] .. cu_seqlens_q[b + 1]` and
/// key rows likewise; positions inside a sequence are local.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Varlen {
    /// i32 `[nseq + 1]`, non-decreasing from 0 (length at least 1).
    pub cu_seqlens_q: I32Ref,
    /// i32 `[nseq + 1]`, non-decreasing from 0 (the same length as `cu_seqlens_q`).
    pub cu_seqlens_k: I32Ref,
    /// The longest query sequence, at most `total_q`. The grid covers this many rows per sequence
    /// (rows of longer sequences are not computed), and it is the row extent of the bias and of
    /// the dropout mask.
    pub max_seqlen_q: usize,
    /// The longest key sequence, at most `total_k`: the key extent of the bias and of the
    /// dropout mask.
    pub max_seqlen_k: usize,
}

/// An additive bias `[nb, Hq, max_sq, max_sk]` in device memory, in q's dtype or f32.
///
/// Any non-negative strides are allowed: a zero stride broadcasts along its dimension, and the
/// key stride need not be 1. In varlen mode the indices are local to the sequence.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BiasRef {
    /// Device address of element `[0, 0, 0, 0]`.
    pub ptr: u64,
    /// Elements addressable from `ptr`.
    pub len: usize,
    /// q's dtype, or [`DType::F32`].
    pub dtype: DType,
    /// `[nb, Hq, max_sq, max_sk]`.
    pub shape: [usize; 4],
    /// Element strides (0 = broadcast).
    pub strides: [i64; 4],
}

/// Where the Philox key and counter base of [`Dropout`] come from (semantics.md §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Philox {
    /// Passed by value.
    Host {
        /// Philox key.
        seed: u64,
        /// Counter base: `(b, h)` uses `offset + b * Hq + h` (wrapping).
        offset: u64,
    },
    /// Read by the kernel from device memory (safe to capture in a CUDA graph): the key is
    /// `*seed_ptr` and the counter base is `offset + *offset_ptr` (wrapping).
    Device {
        /// Device address of the u64 seed (non-null, 8-byte aligned).
        seed_ptr: u64,
        /// Device address of a u64 added to `offset` (non-null, 8-byte aligned).
        offset_ptr: u64,
        /// Host part of the counter base.
        offset: u64,
    },
}

/// Dropout on the attention probabilities: each `P_ij` is kept with probability `1 - p` and kept
/// values are multiplied by `1 / (1 - p)`; the mask is Philox4x32-10 of semantics.md §4.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// Drop probability in `[0, 1)`; 0 disables dropout.
    pub p: f64,
    /// The generator's key and counter base.
    pub rng: Philox,
}

/// The u8 keep-mask output `[nb, Hq, max_sq, max_sk]` (1 = kept), the seed's
/// `return_dropout_randval`. The key stride must be 1 and outputs may not broadcast.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MaskRef {
    /// Device address of element `[0, 0, 0, 0]`.
    pub ptr: u64,
    /// Bytes addressable from `ptr`.
    pub len: usize,
    /// `[nb, Hq, max_sq, max_sk]`.
    pub shape: [usize; 4],
    /// Element strides; the last must be 1.
    pub strides: [i64; 4],
}

impl MaskRef {
    /// A contiguous mask of `shape`.
    pub fn contiguous(ptr: u64, shape: [usize; 4]) -> Self {
        let (len, strides) = contiguous_layout(shape);
        MaskRef {
            ptr,
            len,
            shape,
            strides,
        }
    }
}

/// ALiBi slopes in device memory: f32 `[Hq]`, or `[nb, Hq]` when `per_batch`;
/// `logit -= slope[b, h] · |i + off_b - j|` with the mask's alignment (bottom-right without mask).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlibiRef {
    /// Device address of the first slope (non-null, 4-byte aligned).
    pub ptr: u64,
    /// Number of f32 slopes at `ptr` (at least `Hq`, or `nb · Hq` when `per_batch`).
    pub len: usize,
    /// Whether the slopes have a leading sequence dimension.
    pub per_batch: bool,
}

/// A launch, fully decided: which kernel, its parameters, and its grid.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    /// The forward kernel.
    pub kernel: KernelId,
    /// Its parameters (the dropout-mask kernel takes the same image).
    pub params: FwdParams,
    /// Forward grid `(ceil(max_sq / BLOCK_M), Hq, nb)`; `None` when there is nothing to compute.
    pub grid: Option<[u32; 3]>,
    /// Threads per block of the forward kernel.
    pub threads: u32,
    /// Dynamic shared memory per block of the forward kernel, bytes.
    pub shared_bytes: u32,
    /// Grid of the [`KernelId::DropoutMask`] kernel, launched before the forward on the same
    /// stream with [`DROPOUT_MASK_THREADS`] threads and no shared memory; `Some` only when a
    /// dropout mask is requested and not empty. It is `(x, Hq, nb)` with
    /// `x = ceil(max_sq · ceil(max_sk / 8) / 128)`: each thread writes one group of
    /// 8 keys (one Philox call).
    pub mask_grid: Option<[u32; 3]>,
    /// Split-KV: key chunks per block (1 = not split). With more, the forward writes partials to
    /// the workspace and [`Plan::merge`] combines them into `out` and `lse`.
    pub splits: u32,
    /// GQA packing: query heads per block row group (1 = not packed).
    pub pack: u32,
    /// Workspace the call needs, bytes (0 without split-KV): the caller's
    /// [`Forward::workspace`], or allocated (and freed, which waits for the stream) by `launch`.
    pub workspace_bytes: usize,
    /// Where the partial lse start in the workspace, bytes (16-byte aligned).
    pub workspace_lse_offset: usize,
    /// The merge launched after the forward when `splits > 1` (its partial addresses are the
    /// workspace's, filled in at launch when the call did not bring one).
    pub merge: Option<MergePlan>,
}

/// The forward pass `out = softmax(scale · q·kᵀ + mask) · v` (and `lse`), on caller memory,
/// with the optional features of the [module docs](self).
#[derive(Clone, Copy, Debug)]
pub struct Forward {
    pub(crate) q: TensorRef,
    pub(crate) k: TensorRef,
    pub(crate) v: TensorRef,
    pub(crate) out: TensorRef,
    pub(crate) lse: Option<LseRef>,
    pub(crate) scale: Option<f32>,
    pub(crate) mask: Mask,
    pub(crate) varlen: Option<Varlen>,
    pub(crate) seqstart: Option<(I32Ref, I32Ref)>,
    pub(crate) seqused_k: Option<I32Ref>,
    pub(crate) bias: Option<BiasRef>,
    pub(crate) alibi: Option<AlibiRef>,
    pub(crate) softcap: f32,
    pub(crate) dropout: Option<Dropout>,
    pub(crate) dropout_mask: Option<MaskRef>,
    pub(crate) paged: Option<Paged>,
    pub(crate) key_range: Option<(usize, usize)>,
    pub(crate) splits: Splits,
    pub(crate) packing: Packing,
    pub(crate) route: Route,
    pub(crate) workspace: Option<Workspace>,
}

/// Checks that `ptr` is a non-null, `align`-aligned device address (`what` names the pointer).
pub(crate) fn check_ptr(what: &str, ptr: u64, align: usize) -> Result<()> {
    if ptr == 0 {
        return Err(Error::invalid(what, "a non-null device address", "null"));
    }
    if !ptr.is_multiple_of(align as u64) {
        return Err(Error::invalid(
            what,
            format!("{align}-byte alignment"),
            format!("{ptr:#x}"),
        ));
    }
    Ok(())
}

pub(crate) fn check_extent(
    what: &str,
    ptr: u64,
    len: usize,
    esize: usize,
    shape: &[usize],
    strides: &[i64],
) -> Result<()> {
    check_ptr(&format!("{what}.ptr"), ptr, esize)?;
    if shape.contains(&0) {
        return Ok(());
    }
    let mut last: i128 = 0;
    for (d, (&n, &s)) in shape.iter().zip(strides).enumerate() {
        if s < 0 {
            return Err(Error::invalid(
                format!("{what}.strides[{d}]"),
                "a non-negative stride",
                s,
            ));
        }
        // Each term is below 2^127; the sum saturates instead of overflowing.
        last = last.saturating_add((n as i128 - 1) * s as i128);
    }
    if last >= len as i128 {
        return Err(Error::invalid(
            format!("{what}.len"),
            format!(
                "at least {} elements for its shape and strides",
                last.saturating_add(1)
            ),
            len,
        ));
    }
    if last > i64::MAX as i128 / 8 {
        return Err(Error::invalid(
            format!("{what}.strides"),
            "offsets that fit in i64",
            "larger",
        ));
    }
    // The last element's last byte must not wrap the address space (kernels add offsets).
    if ptr as i128 + (last + 1) * esize as i128 > u64::MAX as i128 + 1 {
        return Err(Error::invalid(
            format!("{what}.ptr"),
            "an address whose extent stays below 2^64",
            format!("{ptr:#x}"),
        ));
    }
    Ok(())
}

/// Whether every row of a tensor at `ptr` with outer element strides `strides` (elements of
/// `esize` bytes) starts 16-byte aligned: the condition of the kernels' 16-byte tile copies.
pub(crate) fn rows_16b_aligned(ptr: u64, strides: &[i64], esize: usize) -> bool {
    ptr.is_multiple_of(16)
        && strides
            .iter()
            .all(|&s| (s as i128 * esize as i128) % 16 == 0)
}

/// Outputs must not write one element twice: a zero stride is allowed only on a size-1 dim.
/// A tensor with a size-0 dimension has no element, so any strides are fine.
pub(crate) fn check_no_broadcast(what: &str, shape: &[usize], strides: &[i64]) -> Result<()> {
    if shape.contains(&0) {
        return Ok(());
    }
    for (d, (&n, &s)) in shape.iter().zip(strides).enumerate() {
        if s == 0 && n > 1 {
            return Err(Error::invalid(
                format!("{what}.strides[{d}]"),
                "non-zero (outputs cannot broadcast)",
                0,
            ));
        }
    }
    Ok(())
}

/// The smallest instantiated head-dim bucket that holds `d`.
pub fn head_dim_bucket(d: usize) -> Option<u32> {
    FWD_HEAD_DIMS.into_iter().find(|&b| b as usize >= d)
}

/// The dropout keep threshold `min(65536, round(p · 65536))` (semantics.md §4; the same
/// formula as `attn_ref::dropout::threshold`).
fn dropout_threshold(p: f64) -> u32 {
    ((p * 65536.0).round().clamp(0.0, 65536.0)) as u32
}

/// The multiplier of kept elements, `1 / (1 - p)` computed once in f32 (the same formula as
/// `attn_ref::dropout::rescale`).
fn dropout_rescale(p: f64) -> f32 {
    1.0f32 / (1.0f32 - p as f32)
}

/// The sequence structure a plan resolved: `nb` sequences of at most `max_sq` query rows and
/// `max_sk` key rows.
struct Seqs {
    nb: usize,
    max_sq: usize,
    max_sk: usize,
    varlen: Option<Varlen>,
}

impl Forward {
    /// A forward call on `q [B,Sq,Hq,D]`, `k [B,Sk,Hk,D]`, `v [B,Sk,Hk,Dv]` into `out [B,Sq,Hq,Dv]`,
    /// with no mask, the default scale `1/sqrt(D)`, no `lse` and none of the optional features.
    pub fn new(q: TensorRef, k: TensorRef, v: TensorRef, out: TensorRef) -> Self {
        Forward {
            q,
            k,
            v,
            out,
            lse: None,
            scale: None,
            mask: Mask::None,
            varlen: None,
            seqstart: None,
            seqused_k: None,
            bias: None,
            alibi: None,
            softcap: 0.0,
            dropout: None,
            dropout_mask: None,
            paged: None,
            key_range: None,
            splits: Splits::Auto,
            packing: Packing::Auto,
            route: Route::Auto,
            workspace: None,
        }
    }
    /// The same call writing its output to `out` instead.
    pub fn output(mut self, out: TensorRef) -> Self {
        self.out = out;
        self
    }
    /// Also write the log-sum-exp.
    pub fn lse(mut self, lse: LseRef) -> Self {
        self.lse = Some(lse);
        self
    }
    /// Softmax scale (default `1/sqrt(D)`).
    pub fn scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }
    /// The mask (default [`Mask::None`]).
    pub fn mask(mut self, mask: Mask) -> Self {
        self.mask = mask;
        self
    }
    /// Varlen ("group") mode: q/k/v/out have batch 1 and hold the sequences of `varlen` back to
    /// back; see [`Varlen`]. The grid is `(ceil(max_seqlen_q / BLOCK_M), Hq, nseq)`, and
    /// `nseq = cu_seqlens_q.len - 1` must be at most 65535.
    pub fn varlen(mut self, varlen: Varlen) -> Self {
        self.varlen = Some(varlen);
        self
    }
    /// The seed's other name for [`Varlen::cu_seqlens_q`] / [`Varlen::cu_seqlens_k`]
    /// (`seqstart_q` / `seqstart_k`).
    ///
    /// Given together with [`Forward::varlen`], the arrays must be the same (pointer and length),
    /// otherwise the plan fails. Given alone, it enables varlen mode with the hints
    /// `max_seqlen_q = total_q` and `max_seqlen_k = total_k` (always valid upper bounds; the bias
    /// and dropout mask then have those extents); use [`Forward::varlen`] for tight hints.
    pub fn seqstart(mut self, q: I32Ref, k: I32Ref) -> Self {
        self.seqstart = Some((q, k));
        self
    }
    /// Sequence `b` uses only its first `seqused_k[b]` keys (i32 `[nb]`; KV-cache style).
    pub fn seqused_k(mut self, seqused_k: I32Ref) -> Self {
        self.seqused_k = Some(seqused_k);
        self
    }
    /// Adds `bias[b, h, i, j]` to the scores; see [`BiasRef`].
    pub fn bias(mut self, bias: BiasRef) -> Self {
        self.bias = Some(bias);
        self
    }
    /// ALiBi slopes; see [`AlibiRef`].
    pub fn alibi(mut self, alibi: AlibiRef) -> Self {
        self.alibi = Some(alibi);
        self
    }
    /// Softcap `cap`: `s = cap · tanh(s / cap)` before bias and ALiBi; must be finite and `>= 0`
    /// (0, the default, disables it).
    pub fn softcap(mut self, cap: f32) -> Self {
        self.softcap = cap;
        self
    }
    /// Dropout; `p == 0` disables it.
    pub fn dropout(mut self, dropout: Dropout) -> Self {
        self.dropout = Some(dropout);
        self
    }
    /// Also write the dropout keep mask (requires dropout with `p > 0`); see [`MaskRef`] and
    /// [`Plan::mask_grid`].
    pub fn dropout_mask(mut self, mask: MaskRef) -> Self {
        self.dropout_mask = Some(mask);
        self
    }

    /// k and v are pages of a paged KV cache (shape `[num_pages, page_size, Hk, D|Dv]`); see
    /// [`Paged`]. Runs on the decode kernels.
    pub fn paged(mut self, paged: Paged) -> Self {
        self.paged = Some(paged);
        self
    }
    /// Partial attention: only keys `lo..hi` of each sequence are attended to (the masks keep
    /// their full-length alignment; `hi` may exceed the sequence). With [`Forward::lse`], partials
    /// over disjoint ranges merge into the whole result with [`crate::decode::Merge`]. Runs on the
    /// decode kernels.
    pub fn key_range(mut self, lo: usize, hi: usize) -> Self {
        self.key_range = Some((lo, hi));
        self
    }
    /// Split-KV (default [`Splits::Auto`]).
    pub fn splits(mut self, splits: Splits) -> Self {
        self.splits = splits;
        self
    }
    /// GQA packing (default [`Packing::Auto`]).
    pub fn pack_gqa(mut self, packing: Packing) -> Self {
        self.packing = packing;
        self
    }
    /// Which kernels serve the call (default [`Route::Auto`]).
    pub fn route(mut self, route: Route) -> Self {
        self.route = route;
        self
    }
    /// Caller memory for split-KV's partials (see [`Plan::workspace_bytes`]); without it,
    /// `launch` allocates and frees a workspace per split call.
    pub fn workspace(mut self, workspace: Workspace) -> Self {
        self.workspace = Some(workspace);
        self
    }

    /// Resolves batch or varlen mode (after the shapes of q/k/v/out are checked).
    fn seqs(&self, b: usize, sq: usize, sk: usize) -> Result<Seqs> {
        let varlen = match (self.varlen, self.seqstart) {
            (None, None) => None,
            (Some(v), None) => Some(v),
            (None, Some((cq, ck))) => Some(Varlen {
                cu_seqlens_q: cq,
                cu_seqlens_k: ck,
                max_seqlen_q: sq,
                max_seqlen_k: sk,
            }),
            (Some(v), Some((cq, ck))) => {
                if v.cu_seqlens_q != cq || v.cu_seqlens_k != ck {
                    return Err(Error::invalid(
                        "seqstart",
                        format!(
                            "the arrays of varlen ({:?}, {:?})",
                            v.cu_seqlens_q, v.cu_seqlens_k
                        ),
                        format!("({cq:?}, {ck:?})"),
                    ));
                }
                Some(v)
            }
        };
        let Some(v) = varlen else {
            return Ok(Seqs {
                nb: b,
                max_sq: sq,
                max_sk: sk,
                varlen: None,
            });
        };
        if b != 1 {
            return Err(Error::invalid("q.shape[0]", "1 in varlen mode", b));
        }
        let Some(nseq) = v.cu_seqlens_q.len.checked_sub(1) else {
            return Err(Error::invalid(
                "cu_seqlens_q.len",
                "nseq + 1 >= 1 entries",
                0,
            ));
        };
        if v.cu_seqlens_k.len != v.cu_seqlens_q.len {
            return Err(Error::invalid(
                "cu_seqlens_k.len",
                format!("{} (cu_seqlens_q.len)", v.cu_seqlens_q.len),
                v.cu_seqlens_k.len,
            ));
        }
        check_ptr("cu_seqlens_q.ptr", v.cu_seqlens_q.ptr, 4)?;
        check_ptr("cu_seqlens_k.ptr", v.cu_seqlens_k.ptr, 4)?;
        for (what, m, total) in [
            ("max_seqlen_q", v.max_seqlen_q, sq),
            ("max_seqlen_k", v.max_seqlen_k, sk),
        ] {
            if m > total || m > i32::MAX as usize {
                return Err(Error::invalid(
                    what,
                    format!("at most the total length {total} (and 2^31 - 1)"),
                    m,
                ));
            }
        }
        Ok(Seqs {
            nb: nseq,
            max_sq: v.max_seqlen_q,
            max_sk: v.max_seqlen_k,
            varlen: Some(v),
        })
    }

    /// [`Forward::plan_on`] without a device size: [`Splits::Auto`] plans no split.
    pub fn plan(&self, family: Family) -> Result<Plan> {
        self.plan_on(family, 0)
    }

    /// Validates every argument and decides the launch for a device of `family` with `units`
    /// multiprocessors (CUs; 0 = unknown). Pure: touches no device.
    ///
    /// Decode-shaped calls (see [`Route::Auto`]) run on the decode kernels, packed when
    /// [`Packing::Auto`] allows, and split when [`decode::choose_splits`] says the blocks do not
    /// fill the device.
    pub fn plan_on(&self, family: Family, units: u32) -> Result<Plan> {
        let (q, k, v, o) = (&self.q, &self.k, &self.v, &self.out);
        let dtype = q.dtype;
        for (name, t) in [("k", k), ("v", v), ("out", o)] {
            if t.dtype != dtype {
                return Err(Error::invalid(
                    format!("{name}.dtype"),
                    format!("{dtype:?} (q's dtype)"),
                    format!("{:?}", t.dtype),
                ));
            }
        }
        for (name, t) in [("q", q), ("k", k), ("v", v), ("out", o)] {
            if t.strides[3] != 1 {
                return Err(Error::invalid(
                    format!("{name}.strides[3]"),
                    "1 (contiguous head dim)",
                    t.strides[3],
                ));
            }
        }
        let [b, sq, hq, d] = q.shape;
        let hk = k.shape[2];
        let dv = v.shape[3];
        // Paged KV: k/v are [num_pages, page_size, Hk, D|Dv] and the logical key length is
        // max_pages · page_size.
        let sk = match &self.paged {
            None => k.shape[1],
            Some(pg) => {
                let [num_pages, ps, _, _] = k.shape;
                if ps == 0 || !ps.is_multiple_of(16) {
                    return Err(Error::invalid(
                        "k.shape[1] (page_size)",
                        "a positive multiple of 16",
                        ps,
                    ));
                }
                if num_pages == 0 || num_pages > i32::MAX as usize {
                    return Err(Error::invalid(
                        "k.shape[0] (num_pages)",
                        "1..2^31 pages",
                        num_pages,
                    ));
                }
                if pg.max_pages == 0 {
                    return Err(Error::invalid("paged.max_pages", "at least 1", 0));
                }
                if pg.table_stride < pg.max_pages {
                    return Err(Error::invalid(
                        "paged.table_stride",
                        format!("at least max_pages = {}", pg.max_pages),
                        pg.table_stride,
                    ));
                }
                pg.max_pages.checked_mul(ps).ok_or_else(|| {
                    Error::unsupported("max_pages · page_size overflows".to_string())
                })?
            }
        };
        let seqs = self.seqs(b, sq, sk)?;
        let expect = |name: &str, t: &TensorRef, want: [usize; 4]| {
            if t.shape == want {
                Ok(())
            } else {
                Err(Error::invalid(
                    format!("{name}.shape"),
                    format!("{want:?}"),
                    format!("{:?}", t.shape),
                ))
            }
        };
        match &self.paged {
            None => {
                expect("k", k, [b, sk, hk, d])?;
                expect("v", v, [b, sk, hk, dv])?;
            }
            Some(_) => {
                expect("k", k, [k.shape[0], k.shape[1], hk, d])?;
                expect("v", v, [k.shape[0], k.shape[1], hk, dv])?;
            }
        }
        expect("out", o, [b, sq, hq, dv])?;
        if hk == 0 || hq % hk != 0 {
            return Err(Error::invalid(
                "k.shape[2]",
                format!("a divisor of Hq = {hq}"),
                hk,
            ));
        }
        let (step, name) = match dtype {
            DType::F32 => (4, "a multiple of 4 in 4..=256 for f32"),
            _ => (8, "a multiple of 8 in 8..=256 for f16/bf16"),
        };
        for (what, x) in [("head_dim (D)", d), ("head_dim_v (Dv)", dv)] {
            if x == 0 || !x.is_multiple_of(step) || x > 256 {
                return Err(Error::unsupported(format!(
                    "{what} = {x}: supported is {name}"
                )));
            }
        }
        for (what, x) in [("seq_q", sq), ("seq_k", sk)] {
            if x > i32::MAX as usize {
                return Err(Error::unsupported(format!("{what} = {x} exceeds 2^31 - 1")));
            }
        }
        let Seqs {
            nb,
            max_sq,
            max_sk,
            varlen,
        } = seqs;
        if nb > GRID_LIMIT || hq > GRID_LIMIT {
            return Err(Error::unsupported(format!(
                "{} {nb} or heads {hq} above 65535 (grid limit)",
                if varlen.is_some() {
                    "sequences"
                } else {
                    "batch"
                }
            )));
        }
        let es = dtype.size();
        check_extent("q", q.ptr, q.len, es, &q.shape, &q.strides)?;
        check_extent("k", k.ptr, k.len, es, &k.shape, &k.strides)?;
        check_extent("v", v.ptr, v.len, es, &v.shape, &v.strides)?;
        check_extent("out", o.ptr, o.len, es, &o.shape, &o.strides)?;
        check_no_broadcast("out", &o.shape, &o.strides)?;
        let mut lse_strides = [0i64; 2];
        if let Some(l) = &self.lse {
            if l.shape != [b, hq, sq] {
                return Err(Error::invalid(
                    "lse.shape",
                    format!("{:?}", [b, hq, sq]),
                    format!("{:?}", l.shape),
                ));
            }
            if l.strides[2] != 1 {
                return Err(Error::invalid("lse.strides[2]", "1", l.strides[2]));
            }
            check_extent("lse", l.ptr, l.len, 4, &l.shape, &l.strides)?;
            check_no_broadcast("lse", &l.shape, &l.strides)?;
            lse_strides = [l.strides[0], l.strides[1]];
        }
        let scale = self.scale.unwrap_or(1.0 / (d as f32).sqrt());
        if !scale.is_finite() {
            return Err(Error::invalid("scale", "a finite number", scale));
        }
        // The kernels take scale · log2(e): it must not overflow to infinity in f32.
        if !(scale * std::f32::consts::LOG2_E).is_finite() {
            return Err(Error::invalid(
                "scale",
                "|scale| below f32::MAX / log2(e)",
                scale,
            ));
        }
        let side = |what: &str, w: Option<u32>| -> Result<i32> {
            match w {
                None => Ok(WINDOW_UNBOUNDED),
                Some(x) if x < WINDOW_UNBOUNDED as u32 => Ok(x as i32),
                Some(x) => Err(Error::invalid(what, "below 2^31 - 1", x)),
            }
        };
        let (mut flags, left, right) = match self.mask {
            Mask::None => (0, WINDOW_UNBOUNDED, WINDOW_UNBOUNDED),
            Mask::Causal(a) => (MASK_WINDOW | align_flag(a), WINDOW_UNBOUNDED, 0),
            Mask::Window { left, right, align } => (
                MASK_WINDOW | align_flag(align),
                side("mask.left", left)?,
                side("mask.right", right)?,
            ),
        };
        if varlen.is_some() {
            flags |= FLAG_VARLEN;
        }

        // ---- seqused_k
        if let Some(u) = &self.seqused_k {
            check_ptr("seqused_k.ptr", u.ptr, 4)?;
            if u.len != nb {
                return Err(Error::invalid(
                    "seqused_k.len",
                    format!("{nb} (one entry per sequence)"),
                    u.len,
                ));
            }
        }

        // ---- score pieces
        let logical = [nb, hq, max_sq, max_sk];
        let mut bias_strides = [0i64; 4];
        if let Some(bias) = &self.bias {
            if bias.dtype != dtype && bias.dtype != DType::F32 {
                return Err(Error::invalid(
                    "bias.dtype",
                    format!("{dtype:?} (q's dtype) or F32"),
                    format!("{:?}", bias.dtype),
                ));
            }
            if bias.shape != logical {
                return Err(Error::invalid(
                    "bias.shape",
                    format!("{logical:?} ([nb, Hq, max_sq, max_sk])"),
                    format!("{:?}", bias.shape),
                ));
            }
            check_extent(
                "bias",
                bias.ptr,
                bias.len,
                bias.dtype.size(),
                &bias.shape,
                &bias.strides,
            )?;
            if bias.dtype == DType::F32 {
                flags |= FLAG_BIAS_F32;
            }
            // Bias tiles go through shared memory by 16-byte copies when keys are contiguous
            // and every (b, h, i) row starts 16-byte aligned.
            if bias.strides[3] == 1
                && rows_16b_aligned(bias.ptr, &bias.strides[..3], bias.dtype.size())
            {
                flags |= FLAG_BIAS_VEC16;
            }
            bias_strides = bias.strides;
        }
        let mut alibi_stride = 0i64;
        if let Some(a) = &self.alibi {
            check_ptr("alibi.ptr", a.ptr, 4)?;
            let need = if a.per_batch {
                nb.saturating_mul(hq)
            } else {
                hq
            };
            if a.len < need {
                return Err(Error::invalid(
                    "alibi.len",
                    format!(
                        "at least {need} slopes ({})",
                        if a.per_batch { "[nb, Hq]" } else { "[Hq]" }
                    ),
                    a.len,
                ));
            }
            if a.per_batch {
                alibi_stride = hq as i64;
            }
        }
        let cap = self.softcap;
        if !(cap.is_finite() && cap >= 0.0) {
            return Err(Error::invalid("softcap", "finite and >= 0", cap));
        }
        let cap = if cap == 0.0 { 0.0 } else { cap }; // -0.0 → 0.0

        // ---- dropout
        let (mut threshold, mut rescale) = (0u32, 1.0f32);
        let (mut seed, mut offset, mut seed_ptr, mut offset_ptr) = (0u64, 0u64, 0u64, 0u64);
        let mut dropout_on = false;
        if let Some(dr) = &self.dropout {
            if !(dr.p >= 0.0 && dr.p < 1.0) {
                return Err(Error::invalid("dropout.p", "in [0, 1)", dr.p));
            }
            // 1 / (1 - p) is computed in f32: p within 2^-25 of 1 would make it infinite and
            // every output row 0 · inf = NaN.
            if !dropout_rescale(dr.p).is_finite() {
                return Err(Error::invalid(
                    "dropout.p",
                    "below 1 - 2^-25 (1 / (1 - p) must be finite in f32)",
                    dr.p,
                ));
            }
            match dr.rng {
                Philox::Host { seed: s, offset: o } => (seed, offset) = (s, o),
                Philox::Device {
                    seed_ptr: sp,
                    offset_ptr: op,
                    offset: o,
                } => {
                    check_ptr("dropout.seed_ptr", sp, 8)?;
                    check_ptr("dropout.offset_ptr", op, 8)?;
                    (seed_ptr, offset_ptr, offset) = (sp, op, o);
                }
            }
            if dr.p > 0.0 {
                dropout_on = true;
                flags |= FLAG_DROPOUT;
                threshold = dropout_threshold(dr.p);
                rescale = dropout_rescale(dr.p);
            }
        }
        let mut randval_strides = [0i64; 3];
        if let Some(m) = &self.dropout_mask {
            if !dropout_on {
                return Err(Error::invalid(
                    "dropout_mask",
                    "dropout with p > 0",
                    match &self.dropout {
                        None => "no dropout".to_string(),
                        Some(dr) => format!("p = {}", dr.p),
                    },
                ));
            }
            if m.shape != logical {
                return Err(Error::invalid(
                    "dropout_mask.shape",
                    format!("{logical:?} ([nb, Hq, max_sq, max_sk])"),
                    format!("{:?}", m.shape),
                ));
            }
            if m.strides[3] != 1 {
                return Err(Error::invalid(
                    "dropout_mask.strides[3]",
                    "1 (contiguous keys)",
                    m.strides[3],
                ));
            }
            check_extent("dropout_mask", m.ptr, m.len, 1, &m.shape, &m.strides)?;
            check_no_broadcast("dropout_mask", &m.shape, &m.strides)?;
            randval_strides = [m.strides[0], m.strides[1], m.strides[2]];
        }

        let bucket =
            head_dim_bucket(d.max(dv)).ok_or_else(|| Error::unsupported("head dim above 256"))?;
        // ---- the decode kernels: paged KV, key ranges, split-KV and GQA packing
        let group = (hq / hk).max(1);
        let needs_decode = self.paged.is_some()
            || self.key_range.is_some()
            || matches!(self.splits, Splits::Fixed(n) if n > 1)
            || self.packing == Packing::On;
        // What the decode kernels cannot do: bias and dropout (they are not compiled in). Where
        // they are not built, only a call that needs them fails (with the check below).
        let decode_blocker = if self.bias.is_some() {
            Some("a bias")
        } else if dropout_on {
            Some("dropout")
        } else {
            None
        };
        let decode_built = policy::instantiated(family, dtype, bucket as usize, FwdVariant::Decode);
        let pack = match self.packing {
            Packing::On if self.alibi.is_some() => {
                return Err(Error::unsupported(
                    "GQA packing with ALiBi (slopes are per query head)".to_string(),
                ));
            }
            Packing::On => group,
            Packing::Auto if self.alibi.is_none() => group,
            _ => 1,
        };
        let decode = match self.route {
            Route::Prefill if needs_decode => {
                return Err(Error::invalid(
                    "route",
                    "Auto or Decode (paged KV, key ranges, split-KV and GQA packing run on the \
                     decode kernels)",
                    "Prefill",
                ));
            }
            Route::Prefill => false,
            Route::Decode => true,
            Route::Auto => {
                needs_decode
                    || (decode_blocker.is_none() && decode_built && max_sq * pack <= DECODE_ROWS)
            }
        };
        if decode && let Some(why) = decode_blocker {
            return Err(Error::unsupported(format!(
                "the decode kernels (paged KV, key ranges, split-KV, GQA packing) with {why}"
            )));
        }
        let pack = if decode { pack } else { 1 };
        let variant = if decode {
            FwdVariant::Decode
        } else if self.bias.is_some() || self.alibi.is_some() || cap > 0.0 || dropout_on {
            FwdVariant::Pieces
        } else if varlen.is_some() || self.seqused_k.is_some() {
            FwdVariant::Varlen
        } else {
            FwdVariant::Plain
        };
        if !policy::instantiated(family, dtype, bucket as usize, variant) {
            return Err(Error::unsupported(format!(
                "the {variant:?} forward ({dtype:?}, head dim bucket {bucket}) is not built for \
                 {family:?} (it would spill registers)"
            )));
        }
        let tile = policy::fwd_tile_of(family, dtype, bucket as usize, variant);
        let (mut key_lo, mut key_hi) = (0u32, 0u32);
        if let Some((lo, hi)) = self.key_range {
            if lo > hi {
                return Err(Error::invalid(
                    "key_range",
                    "lo <= hi",
                    format!("{lo}..{hi}"),
                ));
            }
            // Both clamp to the logical key length (beyond it there is no key).
            (key_lo, key_hi) = (lo.min(max_sk) as u32, hi.min(max_sk) as u32);
            flags |= FLAG_KEY_RANGE;
        }
        let m_blocks = (max_sq * pack).div_ceil(tile.block_m);
        let blocks = m_blocks * (hq / pack) * nb;
        let keys = if self.key_range.is_some() {
            (key_hi - key_lo) as usize
        } else {
            max_sk
        };
        let splits = match self.splits {
            Splits::Fixed(n) if n == 0 || n > MAX_SPLITS => {
                return Err(Error::invalid("splits", format!("1..={MAX_SPLITS}"), n));
            }
            Splits::Fixed(n) => n,
            Splits::Auto if decode => {
                // Resident blocks per unit: what the kernel asks of the compiler, at least 2.
                let per_unit = policy::min_blocks(variant, dtype, bucket as usize).max(2);
                decode::choose_splits(blocks, keys.div_ceil(tile.block_n), units, per_unit)
            }
            Splits::Auto => 1,
        };
        if (m_blocks as u64) * splits as u64 > i32::MAX as u64 {
            return Err(Error::unsupported(format!(
                "{m_blocks} query blocks x {splits} splits (grid limit)"
            )));
        }
        // Split-KV workspace: partial O [splits, q_batch, q_rows, Hq, Dv] and lse
        // [splits, q_batch, Hq, q_rows] (f32), the second 16-byte aligned after the first.
        let (q_batch, q_rows) = (b, sq);
        let mut ws_o_strides = [0i64; 4];
        let mut ws_lse_strides = [0i64; 3];
        let mut workspace_bytes = 0usize;
        let mut ws_lse_off = 0usize;
        if splits > 1 {
            let per = q_batch
                .checked_mul(q_rows)
                .and_then(|x| x.checked_mul(hq))
                .ok_or_else(|| Error::unsupported("workspace size overflows".to_string()))?;
            let o_elems = per
                .checked_mul(dv)
                .and_then(|x| x.checked_mul(splits as usize))
                .ok_or_else(|| Error::unsupported("workspace size overflows".to_string()))?;
            ws_lse_off = o_elems
                .checked_mul(4)
                .and_then(|x| x.checked_next_multiple_of(16))
                .ok_or_else(|| Error::unsupported("workspace size overflows".to_string()))?;
            workspace_bytes = per
                .checked_mul(splits as usize * 4)
                .and_then(|x| x.checked_add(ws_lse_off))
                .ok_or_else(|| Error::unsupported("workspace size overflows".to_string()))?;
            ws_o_strides = [
                (q_batch * q_rows * hq * dv) as i64,
                (q_rows * hq * dv) as i64,
                (hq * dv) as i64,
                dv as i64,
            ];
            ws_lse_strides = [
                (q_batch * hq * q_rows) as i64,
                (hq * q_rows) as i64,
                q_rows as i64,
            ];
        }
        let (mut ws_o, mut ws_lse) = (0u64, 0u64);
        if let (Some(w), true) = (self.workspace, workspace_bytes > 0) {
            check_ptr("workspace.ptr", w.ptr, 16)?;
            if w.bytes < workspace_bytes {
                return Err(Error::invalid(
                    "workspace.bytes",
                    format!("at least {workspace_bytes}"),
                    w.bytes,
                ));
            }
            // The workspace may not wrap around the address space.
            if w.ptr.checked_add(workspace_bytes as u64).is_none() {
                return Err(Error::invalid(
                    "workspace.ptr",
                    format!("an address with {workspace_bytes} bytes below 2^64 after it"),
                    format!("{:#x}", w.ptr),
                ));
            }
            (ws_o, ws_lse) = (w.ptr, w.ptr + ws_lse_off as u64);
        }
        let (mut table, mut table_stride, mut page_size, mut num_pages) = (0u64, 0i64, 0u32, 0u32);
        if let Some(pg) = &self.paged {
            check_ptr("paged.block_table.ptr", pg.block_table.ptr, 4)?;
            // Entries the table needs, with element offsets that fit in i64 (as check_extent's).
            let need = (nb.saturating_sub(1))
                .checked_mul(pg.table_stride)
                .and_then(|x| x.checked_add(pg.max_pages))
                .filter(|_| pg.table_stride <= i64::MAX as usize / 8);
            let Some(need) = need else {
                return Err(Error::invalid(
                    "paged.table_stride",
                    "a table whose (nb - 1) · table_stride + max_pages entries fit in i64 offsets",
                    pg.table_stride,
                ));
            };
            if nb > 0 && pg.block_table.len < need {
                return Err(Error::invalid(
                    "paged.block_table.len",
                    format!("at least {need} ((nb - 1) · table_stride + max_pages)"),
                    pg.block_table.len,
                ));
            }
            flags |= FLAG_PAGED;
            table = pg.block_table.ptr;
            table_stride = pg.table_stride as i64;
            page_size = k.shape[1] as u32;
            num_pages = k.shape[0] as u32;
        }
        // 16-byte tile copies need every row of q, k, v to start 16-byte aligned.
        if [q, k, v]
            .into_iter()
            .all(|t| rows_16b_aligned(t.ptr, &t.strides[..3], es))
        {
            flags |= FLAG_VEC16;
        }
        let params = FwdParams {
            q: q.ptr,
            k: k.ptr,
            v: v.ptr,
            out: o.ptr,
            lse: self.lse.map_or(0, |l| l.ptr),
            q_strides: [q.strides[0], q.strides[1], q.strides[2]],
            k_strides: [k.strides[0], k.strides[1], k.strides[2]],
            v_strides: [v.strides[0], v.strides[1], v.strides[2]],
            o_strides: [o.strides[0], o.strides[1], o.strides[2]],
            lse_strides,
            // nb, hq <= 65535 and every length <= 2^31 - 1 (checked above).
            batch: nb as u32,
            heads_q: hq as u32,
            heads_k: hk as u32,
            seqlen_q: sq as u32,
            seqlen_k: sk as u32,
            head_dim: d as u32,
            head_dim_v: dv as u32,
            scale_log2: scale * std::f32::consts::LOG2_E,
            window_left: left,
            window_right: right,
            flags,
            _pad: 0,
            cu_seqlens_q: varlen.map_or(0, |v| v.cu_seqlens_q.ptr),
            cu_seqlens_k: varlen.map_or(0, |v| v.cu_seqlens_k.ptr),
            seqused_k: self.seqused_k.map_or(0, |u| u.ptr),
            max_seqlen_q: max_sq as u32,
            max_seqlen_k: max_sk as u32,
            bias: self.bias.map_or(0, |b| b.ptr),
            bias_strides,
            alibi: self.alibi.map_or(0, |a| a.ptr),
            alibi_stride,
            softcap: cap,
            dropout_threshold: threshold,
            dropout_rescale: rescale,
            scale_log2_lo: (scale as f64 * std::f64::consts::LOG2_E
                - (scale * std::f32::consts::LOG2_E) as f64) as f32,
            seed,
            offset,
            seed_ptr,
            offset_ptr,
            randval: self.dropout_mask.map_or(0, |m| m.ptr),
            randval_strides,
            pack_gqa: pack as u32,
            num_splits: splits,
            ws_o,
            ws_lse,
            ws_o_strides,
            ws_lse_strides,
            block_table: table,
            block_table_stride: table_stride,
            page_size,
            num_pages,
            key_lo,
            key_hi,
        };
        let grid = (nb > 0 && max_sq > 0 && hq > 0)
            .then(|| [m_blocks as u32 * splits, (hq / pack) as u32, nb as u32]);
        let merge = (splits > 1).then(|| MergePlan {
            kernel: KernelId::Merge {
                input: DType::F32,
                output: dtype,
            },
            params: MergeParams {
                parts_o: ws_o,
                parts_o_strides: ws_o_strides,
                parts_lse: ws_lse,
                parts_lse_strides: ws_lse_strides,
                out: o.ptr,
                o_strides: params.o_strides,
                lse: params.lse,
                lse_strides: params.lse_strides,
                cu_seqlens_q: params.cu_seqlens_q,
                n_parts: splits,
                seqlen: params.seqlen_q,
                max_seqlen: max_sq as u32,
                head_dim_v: dv as u32,
            },
            grid: grid.map(|_| [max_sq as u32, hq as u32, nb as u32]),
        });
        let mask_grid = match self
            .dropout_mask
            .filter(|_| nb > 0 && hq > 0 && max_sq > 0 && max_sk > 0)
        {
            None => None,
            Some(_) => {
                let groups = (max_sq as u128) * (max_sk as u128).div_ceil(8);
                let x = groups.div_ceil(DROPOUT_MASK_THREADS as u128);
                if x > i32::MAX as u128 {
                    return Err(Error::unsupported(format!(
                        "a dropout mask of {max_sq} x {max_sk} per head (grid limit)"
                    )));
                }
                Some([x as u32, hq as u32, nb as u32])
            }
        };
        Ok(Plan {
            kernel: KernelId::Fwd {
                dtype,
                head_dim: bucket,
                variant,
            },
            params,
            grid,
            threads: policy::THREADS,
            shared_bytes: policy::smem_bytes_of(family, dtype, bucket as usize, variant) as u32,
            mask_grid,
            splits,
            pack: pack as u32,
            workspace_bytes,
            workspace_lse_offset: ws_lse_off,
            merge,
        })
    }

    /// Validates and launches on `stream` (asynchronous): the dropout-mask kernel first when a
    /// mask is requested, then the forward kernel. Nothing is launched for an empty problem.
    ///
    /// # Safety
    /// Every `ptr` must be device memory of `stream`'s device, valid for `len` elements for the
    /// duration of the kernels, and `out`/`lse`/`dropout_mask` must not overlap the inputs or each
    /// other. The device arrays (`cu_seqlens`, `seqused_k`) may hold any values: the kernels
    /// clamp them.
    pub unsafe fn launch(&self, stream: &Stream) -> Result<()> {
        let family = stream.device().tile_family()?;
        let plan = self.plan_on(family, stream.device().info().multiprocessors)?;
        let mut params = plan.params;
        let mut merge = plan.merge;
        // Split-KV without a caller workspace: one for this call (freed on return; the free
        // waits for the kernels).
        let _workspace = if plan.workspace_bytes > 0 && params.ws_o == 0 {
            let buf = stream.device().alloc::<u8>(plan.workspace_bytes)?;
            params.ws_o = buf.ptr();
            params.ws_lse = buf.ptr() + plan.workspace_lse_offset as u64;
            if let Some(m) = &mut merge {
                m.params.parts_o = params.ws_o;
                m.params.parts_lse = params.ws_lse;
            }
            Some(buf)
        } else {
            None
        };
        let args = KernArgs::new(&params);
        if let Some(grid) = plan.mask_grid {
            // SAFETY: as below; the mask kernel writes only the mask, whose extent the plan
            // checked.
            unsafe {
                stream.device().launch(
                    KernelId::DropoutMask,
                    grid,
                    DROPOUT_MASK_THREADS,
                    0,
                    stream,
                    &args,
                )?;
            }
        }
        let Some(grid) = plan.grid else { return Ok(()) };
        // SAFETY: the plan checked every extent against `len`; the caller vouches that the
        // addresses are valid device memory (this function's contract); the workspace is sized
        // by the plan.
        unsafe {
            stream.device().launch(
                plan.kernel,
                grid,
                plan.threads,
                plan.shared_bytes,
                stream,
                &args,
            )?;
        }
        if let Some(m) = merge
            && let Some(grid) = m.grid
        {
            // SAFETY: the merge reads the workspace the forward wrote and writes `out` / `lse`,
            // whose extents the plan checked.
            unsafe {
                stream.device().launch(
                    m.kernel,
                    grid,
                    MERGE_THREADS,
                    MERGE_SMEM_BYTES,
                    stream,
                    &KernArgs::new(&m.params),
                )?;
            }
        }
        Ok(())
    }
}

fn align_flag(a: Align) -> u32 {
    match a {
        Align::TopLeft => 0,
        Align::BottomRight => MASK_BOTTOM_RIGHT,
    }
}

/// Options of the convenience [`forward`] call.
#[derive(Clone, Copy, Debug, Default)]
pub struct FwdOptions<'a> {
    /// Softmax scale (default `1/sqrt(D)`).
    pub scale: Option<f32>,
    /// Mask.
    pub mask: Mask,
    /// Softcap `cap` (0 = off); see [`Forward::softcap`].
    pub softcap: f32,
    /// Dropout; see [`Forward::dropout`].
    pub dropout: Option<Dropout>,
    /// ALiBi slopes: `[Hq]`, or `[B, Hq]` with `alibi_per_batch`.
    pub alibi: Option<&'a DeviceBuffer<f32>>,
    /// Whether `alibi` holds `[B, Hq]` slopes.
    pub alibi_per_batch: bool,
}

/// Host element types with a device counterpart: `half::f16`, `half::bf16`, `f32`.
pub trait HostElement: bytemuck::Pod {
    /// The matching kernel element type.
    const DTYPE: DType;
}
impl HostElement for half::f16 {
    const DTYPE: DType = DType::F16;
}
impl HostElement for half::bf16 {
    const DTYPE: DType = DType::Bf16;
}
impl HostElement for f32 {
    const DTYPE: DType = DType::F32;
}

impl Forward {
    /// The call with the convenience calls' options (mask, softcap, scale, dropout, ALiBi).
    pub(crate) fn with_options(self, opts: &FwdOptions<'_>) -> Forward {
        let mut call = self.mask(opts.mask).softcap(opts.softcap);
        if let Some(s) = opts.scale {
            call = call.scale(s);
        }
        if let Some(d) = opts.dropout {
            call = call.dropout(d);
        }
        if let Some(slopes) = opts.alibi {
            call = call.alibi(AlibiRef {
                ptr: slopes.ptr(),
                len: slopes.len(),
                per_batch: opts.alibi_per_batch,
            });
        }
        call
    }
}

/// Element count of a tensor of extents `dims`, or an error naming `what` when it overflows.
pub(crate) fn element_count(what: &str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |a, &n| a.checked_mul(n))
        .ok_or_else(|| Error::invalid(what, "a size that fits in memory", format!("{dims:?}")))
}

pub(crate) fn tensor_ref<T: HostElement>(buf: &DeviceBuffer<T>, shape: [usize; 4]) -> TensorRef {
    TensorRef {
        len: buf.len(),
        ..TensorRef::contiguous(buf.ptr(), T::DTYPE, shape)
    }
}

/// Convenience forward on owned, contiguous BMHK buffers; allocates and returns `out`
/// `[B, Sq, Hq, Dv]` and `lse` `[B, Hq, Sq]`. Shapes are checked against the buffers. An empty
/// problem returns (one-element) buffers and launches nothing.
pub fn forward<T: HostElement>(
    stream: &Stream,
    q: (&DeviceBuffer<T>, [usize; 4]),
    k: (&DeviceBuffer<T>, [usize; 4]),
    v: (&DeviceBuffer<T>, [usize; 4]),
    opts: &FwdOptions<'_>,
) -> Result<(DeviceBuffer<T>, DeviceBuffer<f32>)> {
    let dev: &Device = stream.device();
    let [b, sq, hq, _] = q.1;
    let dv = v.1[3];
    let out_len = element_count("out", &[b, sq, hq, dv])?;
    let lse_len = element_count("lse", &[b, hq, sq])?;
    let out = dev.alloc::<T>(out_len.max(1))?;
    let lse = dev.alloc::<f32>(lse_len.max(1))?;
    let call = Forward::new(
        tensor_ref(q.0, q.1),
        tensor_ref(k.0, k.1),
        tensor_ref(v.0, v.1),
        tensor_ref(&out, [b, sq, hq, dv]),
    )
    .lse(LseRef {
        len: lse.len(),
        ..LseRef::contiguous(lse.ptr(), [b, hq, sq])
    })
    .with_options(opts);
    // SAFETY: every buffer is a live allocation of this crate on this device whose `len` the
    // plan checks against its shape; `out` and `lse` are fresh.
    unsafe { call.launch(stream)? };
    Ok((out, lse))
}

/// Sends `payload` through the `attn_abi_echo` kernel and returns the argument image the GPU
/// received, so callers can check that host and kernel agree on the parameter layout.
pub fn abi_echo(stream: &Stream, payload: &FwdParams) -> Result<KernArgs> {
    let dev = stream.device();
    let out = dev.alloc::<u64>(attn_abi::KERNARG_WORDS)?;
    let args = KernArgs::new(&attn_abi::EchoParams {
        out: out.ptr(),
        payload: *payload,
    });
    // SAFETY: the echo kernel only writes KERNARG_WORDS u64 to `out`, which we own; the
    // payload's addresses are never dereferenced.
    unsafe { dev.launch(KernelId::AbiEcho, [1, 1, 1], 32, 0, stream, &args)? };
    stream.synchronize()?;
    let words = out.to_host(stream)?;
    let mut image = [0u64; attn_abi::KERNARG_WORDS];
    image.copy_from_slice(&words);
    Ok(KernArgs(image))
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: usize = 2;
    const SQ: usize = 17;
    const SK: usize = 33;
    const HQ: usize = 4;
    const HK: usize = 2;
    const D: usize = 64;

    fn t(ptr: u64, dtype: DType, shape: [usize; 4]) -> TensorRef {
        TensorRef::contiguous(ptr, dtype, shape)
    }

    fn good(dtype: DType) -> Forward {
        Forward::new(
            t(0x1000, dtype, [B, SQ, HQ, D]),
            t(0x100000, dtype, [B, SK, HK, D]),
            t(0x200000, dtype, [B, SK, HK, D]),
            t(0x300000, dtype, [B, SQ, HQ, D]),
        )
        .lse(LseRef::contiguous(0x400000, [B, HQ, SQ]))
    }

    // Varlen: 3 sequences, total_q = 40 (longest 20), total_k = 70 (longest 30).
    const NSEQ: usize = 3;
    const TQ: usize = 40;
    const TK: usize = 70;
    const MQ: usize = 20;
    const MK: usize = 30;

    fn cu(q: u64, k: u64) -> Varlen {
        Varlen {
            cu_seqlens_q: I32Ref {
                ptr: q,
                len: NSEQ + 1,
            },
            cu_seqlens_k: I32Ref {
                ptr: k,
                len: NSEQ + 1,
            },
            max_seqlen_q: MQ,
            max_seqlen_k: MK,
        }
    }

    fn good_varlen(dtype: DType) -> Forward {
        Forward::new(
            t(0x1000, dtype, [1, TQ, HQ, D]),
            t(0x100000, dtype, [1, TK, HK, D]),
            t(0x200000, dtype, [1, TK, HK, D]),
            t(0x300000, dtype, [1, TQ, HQ, D]),
        )
        .lse(LseRef::contiguous(0x400000, [1, HQ, TQ]))
        .varlen(cu(0x500000, 0x500100))
    }

    fn host_dropout(p: f64) -> Dropout {
        Dropout {
            p,
            rng: Philox::Host {
                seed: 0x1234_5678_9abc_def0,
                offset: 77,
            },
        }
    }

    fn bias(dtype: DType, shape: [usize; 4]) -> BiasRef {
        let (len, strides) = contiguous_layout(shape);
        BiasRef {
            ptr: 0x800000,
            len,
            dtype,
            shape,
            strides,
        }
    }

    fn ok(f: &Forward) -> Plan {
        f.plan(Family::Sm80).unwrap()
    }

    fn invalid_what(f: &Forward) -> String {
        match f.plan(Family::Sm80) {
            Err(Error::InvalidArgument { what, .. }) => what,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    fn unsupported(f: &Forward) {
        assert!(
            matches!(f.plan(Family::Sm80), Err(Error::Unsupported { .. })),
            "{:?}",
            f.plan(Family::Sm80)
        );
    }

    fn block_m(dtype: DType, d: usize) -> usize {
        policy::fwd_tile(Family::Sm80, dtype, d).block_m
    }

    #[test]
    fn a_valid_call_plans_the_right_kernel_and_grid() {
        let p = ok(&good(DType::Bf16).mask(Mask::Causal(Align::BottomRight)));
        assert_eq!(
            p.kernel,
            KernelId::Fwd {
                dtype: DType::Bf16,
                head_dim: 64,
                variant: FwdVariant::Plain,
            }
        );
        let bm = block_m(DType::Bf16, 64);
        assert_eq!(p.grid, Some([SQ.div_ceil(bm) as u32, HQ as u32, B as u32]));
        assert_eq!(p.mask_grid, None);
        assert_eq!(p.params.flags, MASK_WINDOW | MASK_BOTTOM_RIGHT | FLAG_VEC16);
        assert_eq!(
            p.shared_bytes as usize,
            policy::smem_bytes(Family::Sm80, DType::Bf16, 64)
        );
        assert_eq!(p.params.window_right, 0);
        assert_eq!(p.params.window_left, WINDOW_UNBOUNDED);
        assert!((p.params.scale_log2 - std::f32::consts::LOG2_E / 8.0).abs() < 1e-7);
        assert_eq!(p.params.lse_strides, [(HQ * SQ) as i64, SQ as i64]);
        // Batch mode: the max lengths are Sq / Sk, and no optional feature is on.
        assert_eq!(
            (p.params.max_seqlen_q, p.params.max_seqlen_k),
            (SQ as u32, SK as u32)
        );
        assert_eq!(p.params.batch, B as u32);
        assert_eq!(
            (
                p.params.cu_seqlens_q,
                p.params.cu_seqlens_k,
                p.params.seqused_k
            ),
            (0, 0, 0)
        );
        assert_eq!((p.params.bias, p.params.alibi, p.params.randval), (0, 0, 0));
        assert_eq!(p.params.softcap, 0.0);
        assert_eq!(
            (p.params.dropout_threshold, p.params.dropout_rescale),
            (0, 1.0)
        );
    }

    #[test]
    fn head_dims_pick_the_smallest_bucket_and_reject_unsupported() {
        assert_eq!(head_dim_bucket(8), Some(32));
        assert_eq!(head_dim_bucket(96), Some(128));
        assert_eq!(head_dim_bucket(256), Some(256));
        assert_eq!(head_dim_bucket(264), None);
        for (dtype, d, ok) in [
            (DType::F16, 8, true),
            (DType::F16, 12, false),
            (DType::F16, 264, false),
            (DType::F32, 4, true),
            (DType::F32, 6, false),
            (DType::Bf16, 0, false),
        ] {
            let f = Forward::new(
                t(0x1000, dtype, [1, 3, 1, d]),
                t(0x100000, dtype, [1, 3, 1, d]),
                t(0x200000, dtype, [1, 3, 1, d]),
                t(0x300000, dtype, [1, 3, 1, d]),
            );
            if ok {
                f.plan(Family::Sm80).unwrap();
            } else {
                unsupported(&f);
            }
        }
    }

    #[test]
    fn d_and_dv_may_differ() {
        let f = Forward::new(
            t(0x1000, DType::F16, [1, 5, 2, 32]),
            t(0x100000, DType::F16, [1, 7, 2, 32]),
            t(0x200000, DType::F16, [1, 7, 2, 96]),
            t(0x300000, DType::F16, [1, 5, 2, 96]),
        )
        .route(Route::Prefill);
        let p = ok(&f);
        assert_eq!(
            p.kernel,
            KernelId::Fwd {
                dtype: DType::F16,
                head_dim: 128,
                variant: FwdVariant::Plain,
            }
        );
        assert_eq!((p.params.head_dim, p.params.head_dim_v), (32, 96));
    }

    #[test]
    fn every_bad_argument_is_a_typed_error() {
        let mut f = good(DType::F16);
        f.k.dtype = DType::Bf16;
        assert_eq!(invalid_what(&f), "k.dtype");

        let mut f = good(DType::F16);
        f.v.shape[1] = SK + 1;
        assert_eq!(invalid_what(&f), "v.shape");

        let mut f = good(DType::F16);
        f.out.shape[2] = HQ + 1;
        assert_eq!(invalid_what(&f), "out.shape");

        let mut f = good(DType::F16);
        f.k = t(0x100000, DType::F16, [B, SK, 3, D]);
        f.v = t(0x200000, DType::F16, [B, SK, 3, D]);
        assert_eq!(invalid_what(&f), "k.shape[2]");

        let mut f = good(DType::F16);
        f.q.strides[3] = 2;
        assert_eq!(invalid_what(&f), "q.strides[3]");

        let mut f = good(DType::F16);
        f.q.ptr = 0;
        assert_eq!(invalid_what(&f), "q.ptr");

        let mut f = good(DType::F16);
        f.v.ptr = 0x200001;
        assert_eq!(invalid_what(&f), "v.ptr");

        let mut f = good(DType::F16);
        f.k.len -= 1;
        assert_eq!(invalid_what(&f), "k.len");

        let mut f = good(DType::F16);
        f.q.strides[1] = -((HQ * D) as i64);
        assert_eq!(invalid_what(&f), "q.strides[1]");

        let mut f = good(DType::F16);
        f.out.strides[2] = 0;
        assert_eq!(invalid_what(&f), "out.strides[2]");

        let f = good(DType::F16).lse(LseRef::contiguous(0x400000, [B, HQ, SQ + 1]));
        assert_eq!(invalid_what(&f), "lse.shape");

        let mut l = LseRef::contiguous(0x400000, [B, HQ, SQ]);
        l.len -= 1;
        assert_eq!(invalid_what(&good(DType::F16).lse(l)), "lse.len");

        let mut l = LseRef::contiguous(0x400002, [B, HQ, SQ]);
        l.strides[2] = 1;
        assert_eq!(invalid_what(&good(DType::F16).lse(l)), "lse.ptr");

        assert_eq!(invalid_what(&good(DType::F16).scale(f32::NAN)), "scale");
        assert_eq!(
            invalid_what(&good(DType::F16).scale(f32::INFINITY)),
            "scale"
        );

        let w = Mask::Window {
            left: Some(u32::MAX),
            right: Some(0),
            align: Align::TopLeft,
        };
        assert_eq!(invalid_what(&good(DType::F16).mask(w)), "mask.left");
    }

    #[test]
    fn every_bad_feature_argument_is_a_typed_error() {
        let g = || good(DType::F16);
        let shape = [B, HQ, SQ, SK];

        // Dropout probability.
        for p in [-0.1, 1.0, 1.5, f64::NAN, f64::INFINITY, 1.0 - 1e-9] {
            assert_eq!(
                invalid_what(&g().dropout(host_dropout(p))),
                "dropout.p",
                "{p}"
            );
        }
        // Device seed / offset pointers: null or misaligned.
        for (seed_ptr, offset_ptr, what) in [
            (0, 0x9000, "dropout.seed_ptr"),
            (0x9004, 0x9000, "dropout.seed_ptr"),
            (0x9000, 0, "dropout.offset_ptr"),
            (0x9000, 0x9001, "dropout.offset_ptr"),
        ] {
            let d = Dropout {
                p: 0.2,
                rng: Philox::Device {
                    seed_ptr,
                    offset_ptr,
                    offset: 0,
                },
            };
            assert_eq!(invalid_what(&g().dropout(d)), what);
        }

        // Bias: dtype, shape, extent, negative stride, null pointer.
        assert_eq!(
            invalid_what(&g().bias(bias(DType::Bf16, shape))),
            "bias.dtype"
        );
        assert_eq!(
            invalid_what(&g().bias(bias(DType::F16, [B, HQ, SK, SQ]))),
            "bias.shape"
        );
        assert_eq!(
            invalid_what(&g().bias(bias(DType::F32, [1, HQ, SQ, SK]))),
            "bias.shape"
        );
        let mut b = bias(DType::F16, shape);
        b.len -= 1;
        assert_eq!(invalid_what(&g().bias(b)), "bias.len");
        let mut b = bias(DType::F32, shape);
        b.strides[3] = 2; // non-unit key stride: allowed, but needs twice the memory
        assert_eq!(invalid_what(&g().bias(b)), "bias.len");
        let mut b = bias(DType::F32, shape);
        b.strides[2] = -1;
        assert_eq!(invalid_what(&g().bias(b)), "bias.strides[2]");
        let mut b = bias(DType::F32, shape);
        b.ptr = 0x800002;
        assert_eq!(invalid_what(&g().bias(b)), "bias.ptr");

        // Varlen.
        let v = || good_varlen(DType::F16);
        let mut f = v();
        f.varlen = Some(Varlen {
            cu_seqlens_q: I32Ref {
                ptr: 0x500000,
                len: 0,
            },
            ..cu(0x500000, 0x500100)
        });
        assert_eq!(invalid_what(&f), "cu_seqlens_q.len");
        let mut f = v();
        f.varlen = Some(Varlen {
            cu_seqlens_k: I32Ref {
                ptr: 0x500100,
                len: NSEQ,
            },
            ..cu(0x500000, 0x500100)
        });
        assert_eq!(invalid_what(&f), "cu_seqlens_k.len");
        let mut f = v();
        f.varlen = Some(cu(0, 0x500100));
        assert_eq!(invalid_what(&f), "cu_seqlens_q.ptr");
        let mut f = v();
        f.varlen = Some(cu(0x500000, 0x500102));
        assert_eq!(invalid_what(&f), "cu_seqlens_k.ptr");
        let mut f = v();
        f.varlen = Some(Varlen {
            max_seqlen_q: TQ + 1,
            ..cu(0x500000, 0x500100)
        });
        assert_eq!(invalid_what(&f), "max_seqlen_q");
        let mut f = v();
        f.varlen = Some(Varlen {
            max_seqlen_k: usize::MAX,
            ..cu(0x500000, 0x500100)
        });
        assert_eq!(invalid_what(&f), "max_seqlen_k");
        // seqstart must name the same arrays as varlen.
        let c = cu(0x500000, 0x500100);
        let f = v().seqstart(
            c.cu_seqlens_q,
            I32Ref {
                ptr: 0x600000,
                len: NSEQ + 1,
            },
        );
        assert_eq!(invalid_what(&f), "seqstart");
        let f = v().seqstart(
            I32Ref {
                len: NSEQ,
                ..c.cu_seqlens_q
            },
            c.cu_seqlens_k,
        );
        assert_eq!(invalid_what(&f), "seqstart");
        // Varlen needs batch 1 (q is checked first, then k/v/out against it).
        let f = g().varlen(cu(0x500000, 0x500100));
        assert_eq!(invalid_what(&f), "q.shape[0]");
        let mut f = v();
        f.k.shape[0] = 2;
        assert_eq!(invalid_what(&f), "k.shape");

        // seqused_k: one entry per sequence (B in batch mode, nseq in varlen), non-null.
        let used = |len| I32Ref { ptr: 0x700000, len };
        assert_eq!(invalid_what(&g().seqused_k(used(B + 1))), "seqused_k.len");
        assert_eq!(invalid_what(&g().seqused_k(used(B - 1))), "seqused_k.len");
        assert_eq!(
            invalid_what(&v().seqused_k(used(NSEQ + 1))),
            "seqused_k.len"
        );
        assert_eq!(invalid_what(&v().seqused_k(used(B))), "seqused_k.len");
        assert_eq!(
            invalid_what(&g().seqused_k(I32Ref { ptr: 0, len: B })),
            "seqused_k.ptr"
        );

        // ALiBi: too few slopes in either layout, bad pointer.
        let slopes = |len, per_batch| AlibiRef {
            ptr: 0x900000,
            len,
            per_batch,
        };
        assert_eq!(invalid_what(&g().alibi(slopes(HQ - 1, false))), "alibi.len");
        assert_eq!(invalid_what(&g().alibi(slopes(HQ, true))), "alibi.len");
        assert_eq!(
            invalid_what(&g().alibi(slopes(B * HQ - 1, true))),
            "alibi.len"
        );
        assert_eq!(
            invalid_what(&v().alibi(slopes(NSEQ * HQ - 1, true))),
            "alibi.len"
        );
        assert_eq!(
            invalid_what(&g().alibi(AlibiRef {
                ptr: 0,
                len: HQ,
                per_batch: false
            })),
            "alibi.ptr"
        );
        assert_eq!(
            invalid_what(&g().alibi(AlibiRef {
                ptr: 0x900002,
                len: HQ,
                per_batch: false
            })),
            "alibi.ptr"
        );

        // Softcap.
        for cap in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -1.0, -1e-30] {
            assert_eq!(invalid_what(&g().softcap(cap)), "softcap", "{cap}");
        }

        // Dropout mask: needs dropout with p > 0, the logical shape, unit key stride, room,
        // no broadcast.
        let m = MaskRef::contiguous(0xa00000, shape);
        assert_eq!(invalid_what(&g().dropout_mask(m)), "dropout_mask");
        assert_eq!(
            invalid_what(&g().dropout(host_dropout(0.0)).dropout_mask(m)),
            "dropout_mask"
        );
        let d = || g().dropout(host_dropout(0.25));
        let mut small = m;
        small.len -= 1;
        assert_eq!(invalid_what(&d().dropout_mask(small)), "dropout_mask.len");
        let mut s3 = m;
        s3.strides[3] = 2;
        assert_eq!(
            invalid_what(&d().dropout_mask(s3)),
            "dropout_mask.strides[3]"
        );
        let mut bc = m;
        bc.strides[1] = 0;
        assert_eq!(
            invalid_what(&d().dropout_mask(bc)),
            "dropout_mask.strides[1]"
        );
        assert_eq!(
            invalid_what(&d().dropout_mask(MaskRef::contiguous(0xa00000, [B, HQ, SQ, SK + 1]))),
            "dropout_mask.shape"
        );
        assert_eq!(
            invalid_what(&d().dropout_mask(MaskRef::contiguous(0, shape))),
            "dropout_mask.ptr"
        );
    }

    #[test]
    fn strided_views_are_accepted_when_they_fit() {
        // A BHMK view (heads outer, sequence inner) of the same memory.
        let mut f = good(DType::F32);
        f.q.strides = [(HQ * SQ * D) as i64, D as i64, (SQ * D) as i64, 1];
        let p = ok(&f);
        assert_eq!(
            p.params.q_strides,
            [(HQ * SQ * D) as i64, D as i64, (SQ * D) as i64]
        );
        // Broadcast (zero-stride) inputs are fine.
        let mut f = good(DType::F32);
        f.k.strides[0] = 0;
        ok(&f);
    }

    #[test]
    fn unaligned_rows_take_the_element_copy_path() {
        let aligned = good(DType::F16).plan(Family::Cdna).unwrap();
        assert_ne!(aligned.params.flags & FLAG_VEC16, 0);
        let mut f = good(DType::F16);
        f.k.ptr += 8; // 4-element offset: still element-aligned, no longer 16-byte aligned
        assert_eq!(f.plan(Family::Cdna).unwrap().params.flags & FLAG_VEC16, 0);
        let mut f = good(DType::F16);
        f.q.strides[1] = (HQ * D + 4) as i64; // padded rows of 136 bytes
        f.q.len += SQ * 4 * B;
        assert_eq!(f.plan(Family::Cdna).unwrap().params.flags & FLAG_VEC16, 0);
    }

    /// A contiguous problem of the given sizes with lse.
    fn sized(b: usize, sq: usize, sk: usize, hq: usize, hk: usize) -> Forward {
        let dt = DType::F16;
        Forward::new(
            t(0x1000, dt, [b, sq, hq, 64]),
            t(0x100000, dt, [b, sk, hk, 64]),
            t(0x200000, dt, [b, sk, hk, 64]),
            t(0x300000, dt, [b, sq, hq, 64]),
        )
        .lse(LseRef::contiguous(0x400000, [b, hq, sq]))
    }

    #[test]
    fn empty_problems_launch_nothing() {
        for (b, sq, sk, hq, hk) in [
            (0, 5, 7, 2, 2),
            (2, 0, 7, 2, 2),
            (3, 0, 0, 4, 2),
            (2, 5, 7, 0, 1),
        ] {
            let f = sized(b, sq, sk, hq, hk);
            let p = f
                .plan(Family::Sm80)
                .unwrap_or_else(|e| panic!("{:?}: {e}", (b, sq, sk, hq, hk)));
            assert_eq!(p.grid, None, "{:?}", (b, sq, sk, hq, hk));
            // With every optional output too.
            let f = f
                .dropout(host_dropout(0.5))
                .dropout_mask(MaskRef::contiguous(0xa00000, [b, hq, sq, sk]))
                .bias(bias(DType::F32, [b, hq, sq, sk]));
            let p = ok(&f);
            assert_eq!((p.grid, p.mask_grid), (None, None));
        }
        // Sk = 0 with queries: the kernel runs (it writes O = 0, lse = -inf); the mask is empty.
        let f = sized(2, 5, 0, 2, 2)
            .dropout(host_dropout(0.5))
            .dropout_mask(MaskRef::contiguous(0xa00000, [2, 2, 5, 0]));
        let p = ok(&f);
        assert!(p.grid.is_some());
        assert_eq!(p.mask_grid, None);
        // Varlen with no sequence.
        let f = Forward::new(
            t(0x1000, DType::F16, [1, 0, 2, 64]),
            t(0x100000, DType::F16, [1, 0, 2, 64]),
            t(0x200000, DType::F16, [1, 0, 2, 64]),
            t(0x300000, DType::F16, [1, 0, 2, 64]),
        )
        .varlen(Varlen {
            cu_seqlens_q: I32Ref {
                ptr: 0x500000,
                len: 1,
            },
            cu_seqlens_k: I32Ref {
                ptr: 0x500100,
                len: 1,
            },
            max_seqlen_q: 0,
            max_seqlen_k: 0,
        });
        let p = ok(&f);
        assert_eq!((p.grid, p.params.batch), (None, 0));
    }

    #[test]
    fn contiguous_strides_are_sane_for_empty_and_huge_shapes() {
        assert_eq!(
            TensorRef::contiguous(0x1000, DType::F16, [2, 0, 4, 64]).strides,
            [256, 256, 64, 1]
        );
        assert_eq!(
            TensorRef::contiguous(0x1000, DType::F16, [2, 0, 4, 64]).len,
            0
        );
        assert_eq!(LseRef::contiguous(0x1000, [2, 4, 0]).strides, [4, 1, 1]);
        assert_eq!(
            MaskRef::contiguous(0x1000, [2, 3, 5, 7]).strides,
            [105, 35, 7, 1]
        );
        // Absurd shapes saturate instead of overflowing, and the plan rejects them.
        let huge = TensorRef::contiguous(0x1000, DType::F16, [usize::MAX, usize::MAX, 1, 8]);
        assert_eq!(huge.len, usize::MAX);
        let f = Forward::new(huge, huge, huge, huge);
        assert!(f.plan(Family::Sm80).is_err());
        let big = [65_535, i32::MAX as usize, 1, 8];
        let f = Forward::new(
            t(0x1000, DType::F16, big),
            t(0x1000, DType::F16, big),
            t(0x1000, DType::F16, big),
            t(0x1000, DType::F16, big),
        )
        .dropout(host_dropout(0.5))
        .dropout_mask(MaskRef::contiguous(
            0x1000,
            [65_535, 1, i32::MAX as usize, i32::MAX as usize],
        ))
        .bias(bias(
            DType::F32,
            [65_535, 1, i32::MAX as usize, i32::MAX as usize],
        ));
        assert!(f.plan(Family::Sm80).is_err());
    }

    #[test]
    fn kernels_that_are_not_built_are_unsupported() {
        let f = Forward::new(
            t(0x1000, DType::F16, [1, 5, 2, 256]),
            t(0x100000, DType::F16, [1, 7, 2, 256]),
            t(0x200000, DType::F16, [1, 7, 2, 256]),
            t(0x300000, DType::F16, [1, 5, 2, 256]),
        )
        .softcap(10.0);
        assert!(matches!(
            f.plan(Family::Rdna3),
            Err(Error::Unsupported { .. })
        ));
        for family in [Family::Sm80, Family::Sm90, Family::Cdna] {
            f.plan(family).unwrap();
        }
        // f32 and the plain kernels are built everywhere.
        let mut g = f.softcap(0.0);
        g.q.dtype = DType::F32;
        g.k.dtype = DType::F32;
        g.v.dtype = DType::F32;
        g.out.dtype = DType::F32;
        for family in [Family::Sm80, Family::Sm90, Family::Cdna, Family::Rdna3] {
            f.softcap(0.0).plan(family).unwrap();
            g.softcap(3.0).plan(family).unwrap();
        }
    }

    #[test]
    fn varlen_plans_sequences_on_the_grid_z() {
        let p = ok(&good_varlen(DType::Bf16).mask(Mask::Causal(Align::TopLeft)));
        let bm = block_m(DType::Bf16, 64);
        assert_eq!(
            p.grid,
            Some([MQ.div_ceil(bm) as u32, HQ as u32, NSEQ as u32])
        );
        let q = &p.params;
        assert_eq!(q.flags, MASK_WINDOW | FLAG_VARLEN | FLAG_VEC16);
        assert_eq!((q.cu_seqlens_q, q.cu_seqlens_k), (0x500000, 0x500100));
        assert_eq!(q.batch, NSEQ as u32);
        assert_eq!((q.seqlen_q, q.seqlen_k), (TQ as u32, TK as u32));
        assert_eq!((q.max_seqlen_q, q.max_seqlen_k), (MQ as u32, MK as u32));
        assert_eq!(q.lse_strides, [(HQ * TQ) as i64, TQ as i64]);
        assert_eq!(
            p.kernel,
            KernelId::Fwd {
                dtype: DType::Bf16,
                head_dim: 64,
                variant: FwdVariant::Varlen
            }
        );
    }

    #[test]
    fn seqstart_is_the_same_arrays_as_varlen() {
        let c = cu(0x500000, 0x500100);
        // Equal to varlen's arrays: the same plan.
        let with = ok(&good_varlen(DType::F16).seqstart(c.cu_seqlens_q, c.cu_seqlens_k));
        assert_eq!(with, ok(&good_varlen(DType::F16)));
        // Alone: varlen with the totals as hints.
        let mut f = good_varlen(DType::F16);
        f.varlen = None;
        let p = ok(&f.seqstart(c.cu_seqlens_q, c.cu_seqlens_k));
        assert_ne!(p.params.flags & FLAG_VARLEN, 0);
        assert_eq!(
            (p.params.cu_seqlens_q, p.params.cu_seqlens_k),
            (0x500000, 0x500100)
        );
        assert_eq!(
            (p.params.max_seqlen_q, p.params.max_seqlen_k),
            (TQ as u32, TK as u32)
        );
        let bm = block_m(DType::F16, 64);
        assert_eq!(
            p.grid,
            Some([TQ.div_ceil(bm) as u32, HQ as u32, NSEQ as u32])
        );
    }

    #[test]
    fn too_many_sequences_are_unsupported() {
        let mut f = good_varlen(DType::F16);
        f.varlen = Some(Varlen {
            cu_seqlens_q: I32Ref {
                ptr: 0x500000,
                len: 65_537,
            },
            cu_seqlens_k: I32Ref {
                ptr: 0x600000,
                len: 65_537,
            },
            ..cu(0, 0)
        });
        unsupported(&f);
        f.varlen = Some(Varlen {
            cu_seqlens_q: I32Ref {
                ptr: 0x500000,
                len: 65_536,
            },
            cu_seqlens_k: I32Ref {
                ptr: 0x600000,
                len: 65_536,
            },
            ..cu(0, 0)
        });
        assert_eq!(ok(&f).grid.map(|g| g[2]), Some(65_535));
    }

    #[test]
    fn seqused_k_takes_one_entry_per_sequence() {
        let p = ok(&good(DType::F16).seqused_k(I32Ref {
            ptr: 0x700000,
            len: B,
        }));
        assert_eq!(p.params.seqused_k, 0x700000);
        assert_eq!(p.params.flags & FLAG_VARLEN, 0);
        let p = ok(&good_varlen(DType::F16).seqused_k(I32Ref {
            ptr: 0x700000,
            len: NSEQ,
        }));
        assert_eq!(p.params.seqused_k, 0x700000);
        // seqused_k alone is not a score piece: the varlen variant serves it.
        assert!(matches!(
            p.kernel,
            KernelId::Fwd {
                variant: FwdVariant::Varlen,
                ..
            }
        ));
    }

    #[test]
    fn bias_in_q_dtype_or_f32_with_any_strides() {
        let shape = [B, HQ, SQ, SK];
        // q's dtype: no f32 flag.
        let p = ok(&good(DType::F16).bias(bias(DType::F16, shape)));
        assert_eq!(p.params.bias, 0x800000);
        assert_eq!(p.params.flags & FLAG_BIAS_F32, 0);
        assert_eq!(
            p.params.bias_strides,
            [(HQ * SQ * SK) as i64, (SQ * SK) as i64, SK as i64, 1]
        );
        assert!(matches!(
            p.kernel,
            KernelId::Fwd {
                variant: FwdVariant::Pieces,
                ..
            }
        ));
        // f32 with an f16 q: the flag; with an f32 q: the flag too.
        let p = ok(&good(DType::Bf16).bias(bias(DType::F32, shape)));
        assert_ne!(p.params.flags & FLAG_BIAS_F32, 0);
        let p = ok(&good(DType::F32).bias(bias(DType::F32, shape)));
        assert_ne!(p.params.flags & FLAG_BIAS_F32, 0);
        // Broadcast over batch and heads (a [1, 1, Sq, Sk] buffer), and over rows.
        let b = BiasRef {
            ptr: 0x800000,
            len: SQ * SK,
            dtype: DType::F32,
            shape,
            strides: [0, 0, SK as i64, 1],
        };
        assert_eq!(
            ok(&good(DType::F16).bias(b)).params.bias_strides,
            [0, 0, SK as i64, 1]
        );
        let b = BiasRef {
            len: B * HQ * SK,
            strides: [(HQ * SK) as i64, SK as i64, 0, 1],
            ..b
        };
        assert_eq!(
            ok(&good(DType::F16).bias(b)).params.bias_strides,
            [(HQ * SK) as i64, SK as i64, 0, 1]
        );
        // Fully broadcast (one element), and a transposed view (key stride != 1).
        let b = BiasRef {
            len: 1,
            strides: [0; 4],
            ..b
        };
        ok(&good(DType::F16).bias(b));
        let b = BiasRef {
            len: B * HQ * SQ * SK,
            strides: [(HQ * SQ * SK) as i64, (SQ * SK) as i64, 1, SQ as i64],
            ..b
        };
        ok(&good(DType::F16).bias(b));
        // Varlen: [nseq, Hq, max_sq, max_sk].
        let p = ok(&good_varlen(DType::F16).bias(bias(DType::F16, [NSEQ, HQ, MQ, MK])));
        assert_eq!(
            p.params.bias_strides,
            [(HQ * MQ * MK) as i64, (MQ * MK) as i64, MK as i64, 1]
        );
        assert_eq!(
            invalid_what(&good_varlen(DType::F16).bias(bias(DType::F16, [1, HQ, TQ, TK]))),
            "bias.shape"
        );
    }

    #[test]
    fn dropout_with_host_and_device_generators() {
        let p = ok(&good(DType::F16).dropout(host_dropout(0.1)));
        let q = &p.params;
        assert_ne!(q.flags & FLAG_DROPOUT, 0);
        assert_eq!(q.dropout_threshold, 6554); // round(0.1 * 65536) = round(6553.6)
        assert_eq!(q.dropout_rescale, 1.0f32 / 0.9f32);
        assert_eq!((q.seed, q.offset), (0x1234_5678_9abc_def0, 77));
        assert_eq!((q.seed_ptr, q.offset_ptr), (0, 0));
        assert!(matches!(
            p.kernel,
            KernelId::Fwd {
                variant: FwdVariant::Pieces,
                ..
            }
        ));
        assert_eq!(p.mask_grid, None);

        let d = Dropout {
            p: 0.5,
            rng: Philox::Device {
                seed_ptr: 0x9000,
                offset_ptr: 0x9008,
                offset: 5,
            },
        };
        let q = ok(&good(DType::F16).dropout(d)).params;
        assert_eq!((q.dropout_threshold, q.dropout_rescale), (32768, 2.0));
        assert_eq!(
            (q.seed, q.offset, q.seed_ptr, q.offset_ptr),
            (0, 5, 0x9000, 0x9008)
        );

        // p = 0: no dropout, the plain kernel.
        let p = ok(&good(DType::F16).dropout(host_dropout(0.0)));
        assert_eq!(p.params.flags & FLAG_DROPOUT, 0);
        assert_eq!(
            (p.params.dropout_threshold, p.params.dropout_rescale),
            (0, 1.0)
        );
        assert!(matches!(
            p.kernel,
            KernelId::Fwd {
                variant: FwdVariant::Plain,
                ..
            }
        ));
        // A tiny p whose threshold rounds to 0 is still dropout (the flag is on).
        let p = ok(&good(DType::F16).dropout(host_dropout(1e-9)));
        assert_ne!(p.params.flags & FLAG_DROPOUT, 0);
        assert_eq!(p.params.dropout_threshold, 0);
    }

    #[test]
    fn dropout_formulas_match_the_reference() {
        for p in [
            0.0,
            1e-9,
            0.5 / 65536.0,
            1.5 / 65536.0,
            0.1,
            0.25,
            1.0 / 3.0,
            0.5,
            0.9,
            0.999_99,
            1.0 - 1e-12,
        ] {
            assert_eq!(dropout_threshold(p), attn_ref::dropout::threshold(p), "{p}");
            assert_eq!(
                dropout_rescale(p).to_bits(),
                attn_ref::dropout::rescale(p).to_bits(),
                "{p}"
            );
        }
    }

    #[test]
    fn dropout_mask_launches_its_own_grid() {
        let shape = [B, HQ, SQ, SK];
        let m = MaskRef::contiguous(0xa00000, shape);
        let p = ok(&good(DType::F16).dropout(host_dropout(0.3)).dropout_mask(m));
        assert_eq!(p.params.randval, 0xa00000);
        assert_eq!(
            p.params.randval_strides,
            [(HQ * SQ * SK) as i64, (SQ * SK) as i64, SK as i64]
        );
        // 17 rows x ceil(33 / 8) = 5 groups = 85 work items: one block.
        assert_eq!(p.mask_grid, Some([1, HQ as u32, B as u32]));
        assert!(p.grid.is_some());
        // A padded (strided) mask is fine.
        let padded = MaskRef {
            ptr: 0xa00000,
            len: B * HQ * SQ * 64,
            shape,
            strides: [(HQ * SQ * 64) as i64, (SQ * 64) as i64, 64, 1],
        };
        let p = ok(&good(DType::F16)
            .dropout(host_dropout(0.3))
            .dropout_mask(padded));
        assert_eq!(
            p.params.randval_strides,
            [(HQ * SQ * 64) as i64, (SQ * 64) as i64, 64]
        );
        // Bigger: 1000 rows x 125 groups / 128 = 977 blocks; huge: 100000 x 12500 / 128.
        let f = sized(1, 1000, 1000, 2, 2)
            .dropout(host_dropout(0.3))
            .dropout_mask(MaskRef::contiguous(0xa00000, [1, 2, 1000, 1000]));
        assert_eq!(ok(&f).mask_grid, Some([977, 2, 1]));
        let f = sized(1, 100_000, 100_000, 1, 1)
            .dropout(host_dropout(0.3))
            .dropout_mask(MaskRef::contiguous(0xa00000, [1, 1, 100_000, 100_000]));
        assert_eq!(ok(&f).mask_grid, Some([9_765_625, 1, 1]));
        // Varlen: [nseq, Hq, max_sq, max_sk], grid z = nseq.
        let f = good_varlen(DType::F16)
            .dropout(host_dropout(0.3))
            .dropout_mask(MaskRef::contiguous(0xa00000, [NSEQ, HQ, MQ, MK]));
        let p = ok(&f);
        assert_eq!(
            p.mask_grid,
            Some([
                (MQ * MK.div_ceil(8)).div_ceil(128) as u32,
                HQ as u32,
                NSEQ as u32
            ])
        );
    }

    #[test]
    fn alibi_per_head_and_per_batch() {
        let a = AlibiRef {
            ptr: 0x900000,
            len: HQ,
            per_batch: false,
        };
        let p = ok(&good(DType::F16).alibi(a).route(Route::Prefill));
        assert_eq!((p.params.alibi, p.params.alibi_stride), (0x900000, 0));
        assert!(matches!(
            p.kernel,
            KernelId::Fwd {
                variant: FwdVariant::Pieces,
                ..
            }
        ));
        let a = AlibiRef {
            len: B * HQ,
            per_batch: true,
            ..a
        };
        let p = ok(&good(DType::F16).alibi(a));
        assert_eq!(
            (p.params.alibi, p.params.alibi_stride),
            (0x900000, HQ as i64)
        );
        let a = AlibiRef {
            len: NSEQ * HQ,
            per_batch: true,
            ..a
        };
        assert_eq!(
            ok(&good_varlen(DType::F16).alibi(a)).params.alibi_stride,
            HQ as i64
        );
    }

    #[test]
    fn softcap_is_passed_and_selects_the_pieces_kernel() {
        let p = ok(&good(DType::F16).softcap(30.0));
        assert_eq!(p.params.softcap, 30.0);
        assert!(matches!(
            p.kernel,
            KernelId::Fwd {
                variant: FwdVariant::Pieces,
                ..
            }
        ));
        for cap in [0.0, -0.0] {
            let p = ok(&good(DType::F16).softcap(cap));
            assert_eq!(p.params.softcap.to_bits(), 0);
            assert!(matches!(
                p.kernel,
                KernelId::Fwd {
                    variant: FwdVariant::Plain,
                    ..
                }
            ));
        }
    }

    #[test]
    fn everything_together() {
        let f = good_varlen(DType::Bf16)
            .mask(Mask::Window {
                left: Some(4),
                right: Some(2),
                align: Align::BottomRight,
            })
            .seqused_k(I32Ref {
                ptr: 0x700000,
                len: NSEQ,
            })
            .bias(bias(DType::F32, [NSEQ, HQ, MQ, MK]))
            .alibi(AlibiRef {
                ptr: 0x900000,
                len: NSEQ * HQ,
                per_batch: true,
            })
            .softcap(50.0)
            .dropout(Dropout {
                p: 0.2,
                rng: Philox::Device {
                    seed_ptr: 0x9000,
                    offset_ptr: 0x9008,
                    offset: 3,
                },
            })
            .dropout_mask(MaskRef::contiguous(0xa00000, [NSEQ, HQ, MQ, MK]));
        let p = ok(&f);
        assert_eq!(
            p.params.flags,
            MASK_WINDOW
                | MASK_BOTTOM_RIGHT
                | FLAG_VEC16
                | FLAG_VARLEN
                | FLAG_BIAS_F32
                | FLAG_DROPOUT
        );
        assert!(p.grid.is_some() && p.mask_grid.is_some());
        assert_eq!(
            p.kernel,
            KernelId::Fwd {
                dtype: DType::Bf16,
                head_dim: 64,
                variant: FwdVariant::Pieces
            }
        );
    }

    // ---- decode: paged KV, key ranges, split-KV, GQA packing

    /// A decode step: B = 3, Sq = 1, Hq = 8, Hk = 2, D = 128 over a 4096-key cache.
    fn decode_call() -> Forward {
        Forward::new(
            t(0x1000, DType::Bf16, [3, 1, 8, 128]),
            t(0x100000, DType::Bf16, [3, 4096, 2, 128]),
            t(0x9000000, DType::Bf16, [3, 4096, 2, 128]),
            t(0x300000, DType::Bf16, [3, 1, 8, 128]),
        )
        .lse(LseRef::contiguous(0x400000, [3, 8, 1]))
    }

    /// The same step over a paged cache of 100 pages of 48 keys, 90 pages per sequence.
    fn paged_call() -> Forward {
        Forward::new(
            t(0x1000, DType::Bf16, [3, 1, 8, 128]),
            t(0x100000, DType::Bf16, [100, 48, 2, 128]),
            t(0x9000000, DType::Bf16, [100, 48, 2, 128]),
            t(0x300000, DType::Bf16, [3, 1, 8, 128]),
        )
        .paged(Paged {
            block_table: I32Ref {
                ptr: 0x800000,
                len: 3 * 96,
            },
            max_pages: 90,
            table_stride: 96,
        })
    }

    #[test]
    fn decode_shapes_pack_and_split_by_themselves() {
        let d = decode_call();
        // Without a device size: packed, not split.
        let p = d.plan(Family::Sm90).unwrap();
        assert!(matches!(
            p.kernel,
            KernelId::Fwd {
                variant: FwdVariant::Decode,
                ..
            }
        ));
        assert_eq!((p.pack, p.splits, p.params.pack_gqa), (4, 1, 4));
        assert_eq!(p.grid, Some([1, 2, 3]));
        assert!(p.merge.is_none() && p.workspace_bytes == 0);
        // On 132 SMs, 6 blocks split; the merge takes the partials.
        let p = d.plan_on(Family::Sm90, 132).unwrap();
        let tile = policy::fwd_tile_of(Family::Sm90, DType::Bf16, 128, FwdVariant::Decode);
        assert_eq!(
            p.splits,
            decode::choose_splits(6, 4096usize.div_ceil(tile.block_n), 132, 3)
        );
        assert!(p.splits > 1);
        assert_eq!(p.grid, Some([p.splits, 2, 3]));
        let m = p.merge.unwrap();
        assert_eq!(m.grid, Some([1, 8, 3]));
        assert_eq!(m.params.n_parts, p.splits);
        let per = 3 * 8;
        assert_eq!(
            p.workspace_lse_offset,
            (per * 128 * p.splits as usize * 4).div_ceil(16) * 16
        );
        assert_eq!(
            p.workspace_bytes,
            p.workspace_lse_offset + per * p.splits as usize * 4
        );
        // Forced choices.
        let p = d
            .pack_gqa(Packing::Off)
            .splits(Splits::Fixed(3))
            .plan(Family::Sm90)
            .unwrap();
        assert_eq!((p.pack, p.splits, p.grid), (1, 3, Some([3, 8, 3])));
        // Prefill-shaped calls stay on the prefill kernels; a forced route is honoured.
        let long = good(DType::F16);
        let p = ok(&long);
        assert!(!matches!(
            p.kernel,
            KernelId::Fwd {
                variant: FwdVariant::Decode,
                ..
            }
        ));
        let p = ok(&long.route(Route::Decode));
        assert!(matches!(
            p.kernel,
            KernelId::Fwd {
                variant: FwdVariant::Decode,
                ..
            }
        ));
        let p = ok(&decode_call().route(Route::Prefill));
        assert!(matches!(
            p.kernel,
            KernelId::Fwd {
                variant: FwdVariant::Plain,
                ..
            }
        ));
        // ALiBi is per query head: no packing on Auto, an error when forced.
        let a = AlibiRef {
            ptr: 0x900000,
            len: 8,
            per_batch: false,
        };
        let p = decode_call().alibi(a).plan(Family::Sm90).unwrap();
        assert_eq!(p.pack, 1);
        assert!(matches!(
            decode_call()
                .alibi(a)
                .pack_gqa(Packing::On)
                .plan(Family::Sm90),
            Err(Error::Unsupported { .. })
        ));
    }

    #[test]
    fn caller_workspace_is_checked_and_used() {
        let d = decode_call().splits(Splits::Fixed(4));
        let need = d.plan(Family::Sm90).unwrap().workspace_bytes;
        let w = |ptr, bytes| d.workspace(Workspace { ptr, bytes });
        let p = w(0x7000000, need).plan(Family::Sm90).unwrap();
        assert_eq!(p.params.ws_o, 0x7000000);
        assert_eq!(p.params.ws_lse, 0x7000000 + p.workspace_lse_offset as u64);
        assert_eq!(p.merge.unwrap().params.parts_lse, p.params.ws_lse);
        assert_eq!(invalid_what(&w(0x7000000, need - 1)), "workspace.bytes");
        assert_eq!(invalid_what(&w(0x7000008, need)), "workspace.ptr");
    }

    #[test]
    fn paged_calls_validate_pages_and_tables() {
        let p = paged_call().plan(Family::Sm90).unwrap();
        assert!(matches!(
            p.kernel,
            KernelId::Fwd {
                variant: FwdVariant::Decode,
                ..
            }
        ));
        assert_eq!(p.params.flags & FLAG_PAGED, FLAG_PAGED);
        assert_eq!((p.params.page_size, p.params.num_pages), (48, 100));
        assert_eq!(
            (p.params.block_table, p.params.block_table_stride),
            (0x800000, 96)
        );
        assert_eq!(p.params.seqlen_k, 90 * 48);
        assert_eq!(p.params.k_strides, [48 * 2 * 128, 2 * 128, 128]);
        // Page sizes are multiples of 16.
        let pages = |ps: usize| {
            let mut f = paged_call();
            f.k = t(0x100000, DType::Bf16, [100, ps, 2, 128]);
            f.v = t(0x9000000, DType::Bf16, [100, ps, 2, 128]);
            f
        };
        assert!(pages(16).plan(Family::Sm90).is_ok());
        assert_eq!(invalid_what(&pages(40)), "k.shape[1] (page_size)");
        assert_eq!(invalid_what(&pages(0)), "k.shape[1] (page_size)");
        // v must have k's pages.
        let mut f = paged_call();
        f.v = t(0x9000000, DType::Bf16, [99, 48, 2, 128]);
        assert_eq!(invalid_what(&f), "v.shape");
        // The table: its stride, its length, its address.
        let table = |len, max_pages, table_stride, ptr| {
            paged_call().paged(Paged {
                block_table: I32Ref { ptr, len },
                max_pages,
                table_stride,
            })
        };
        assert_eq!(
            invalid_what(&table(288, 90, 80, 0x800000)),
            "paged.table_stride"
        );
        assert_eq!(
            invalid_what(&table(2 * 96 + 89, 90, 96, 0x800000)),
            "paged.block_table.len"
        );
        assert!(
            table(2 * 96 + 90, 90, 96, 0x800000)
                .plan(Family::Sm90)
                .is_ok()
        );
        assert_eq!(
            invalid_what(&table(288, 90, 96, 0x800002)),
            "paged.block_table.ptr"
        );
        assert_eq!(
            invalid_what(&table(288, 0, 96, 0x800000)),
            "paged.max_pages"
        );
        // Not with bias or dropout, and not on the prefill route.
        let bias = BiasRef {
            ptr: 0xa00000,
            len: 3 * 8 * 90 * 48,
            dtype: DType::Bf16,
            shape: [3, 8, 1, 90 * 48],
            strides: [8 * 90 * 48, 90 * 48, 90 * 48, 1],
        };
        assert!(matches!(
            paged_call().bias(bias).plan(Family::Sm90),
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            paged_call().dropout(host_dropout(0.1)).plan(Family::Sm90),
            Err(Error::Unsupported { .. })
        ));
        assert_eq!(invalid_what(&paged_call().route(Route::Prefill)), "route");
        // RDNA3 builds no 16-bit decode kernel at D = 128.
        assert!(matches!(
            paged_call().plan(Family::Rdna3),
            Err(Error::Unsupported { .. })
        ));
    }

    #[test]
    fn key_ranges_and_split_counts_are_checked() {
        let p = decode_call()
            .key_range(100, 900)
            .plan(Family::Sm90)
            .unwrap();
        assert_eq!(p.params.flags & FLAG_KEY_RANGE, FLAG_KEY_RANGE);
        assert_eq!((p.params.key_lo, p.params.key_hi), (100, 900));
        // Clamped to the key length.
        let p = decode_call()
            .key_range(5000, 9000)
            .plan(Family::Sm90)
            .unwrap();
        assert_eq!((p.params.key_lo, p.params.key_hi), (4096, 4096));
        assert_eq!(invalid_what(&decode_call().key_range(9, 8)), "key_range");
        assert_eq!(
            invalid_what(&decode_call().splits(Splits::Fixed(0))),
            "splits"
        );
        assert_eq!(
            invalid_what(&decode_call().splits(Splits::Fixed(MAX_SPLITS + 1))),
            "splits"
        );
        // A prefill-shaped call with a forced split runs on the decode kernels.
        let p = ok(&good(DType::F16).splits(Splits::Fixed(2)));
        assert!(matches!(
            p.kernel,
            KernelId::Fwd {
                variant: FwdVariant::Decode,
                ..
            }
        ));
    }

    // ---- overflows found fuzzing the plans (fuzz/corpus/plan/bug-*) or beside it: docs/fuzz.md

    #[test]
    fn a_tensor_whose_extent_wraps_the_address_space_is_invalid() {
        let mut f = good(DType::F16);
        let n = (B * SQ * HQ * D) as u64;
        // The last byte at exactly 2^64 - 1 is fine; one element further wraps.
        f.q.ptr = u64::MAX - 2 * n + 1 - 15;
        f.q.ptr &= !15;
        ok(&f);
        f.q.ptr = (u64::MAX - 2 * n + 2 + 16) & !15;
        assert_eq!(invalid_what(&f), "q.ptr");
    }

    #[test]
    fn a_scale_whose_log2_scale_overflows_is_invalid() {
        for s in [f32::MAX, f32::MIN, 3e38] {
            assert_eq!(invalid_what(&good(DType::F16).scale(s)), "scale", "{s}");
        }
        ok(&good(DType::F16).scale(1e38));
    }

    #[test]
    fn a_block_table_beyond_i64_offsets_is_invalid() {
        let with = |table_stride: usize, len: usize| {
            let mut f = paged_call();
            f.paged = Some(Paged {
                block_table: I32Ref { ptr: 0x800000, len },
                max_pages: 90,
                table_stride,
            });
            f
        };
        // (nb - 1) · table_stride overflowed usize.
        assert_eq!(
            invalid_what(&with(usize::MAX / 2, usize::MAX)),
            "paged.table_stride"
        );
        // A stride whose offsets do not fit in i64 (one sequence never reads past row 0, but the
        // stride is passed as i64).
        let mut f = with(usize::MAX, usize::MAX);
        f.q = t(0x1000, DType::Bf16, [1, 1, 8, 128]);
        f.out = t(0x300000, DType::Bf16, [1, 1, 8, 128]);
        f.lse = None;
        assert_eq!(invalid_what(&f), "paged.table_stride");
        ok(&with(96, 3 * 96));
    }

    #[test]
    fn a_workspace_that_wraps_the_address_space_is_invalid() {
        let d = decode_call().splits(Splits::Fixed(4));
        let w = |ptr| {
            d.workspace(Workspace {
                ptr,
                bytes: usize::MAX,
            })
        };
        // `ptr + workspace_lse_offset` overflowed u64.
        assert_eq!(invalid_what(&w(!15)), "workspace.ptr");
        let need = d.plan(Family::Sm90).unwrap().workspace_bytes as u64;
        ok(&w((u64::MAX - need) & !15));
        assert_eq!(
            invalid_what(&w((u64::MAX - need + 16) & !15)),
            "workspace.ptr"
        );
    }

    #[test]
    fn a_workspace_size_beyond_usize_is_unsupported() {
        // Partial O of 65535 · 2^20 · 4096 · 256 · 128 ≈ 2^63 f32: `o_elems · 4` overflowed. The
        // tensors overlap (strides 1) so that their extents are small.
        let (b, sq, h, d) = (65_535, 1 << 20, 4096, 256);
        let view = |ptr, shape: [usize; 4]| TensorRef {
            ptr,
            len: 1 << 24,
            dtype: DType::Bf16,
            shape,
            strides: [1, 1, 1, 1],
        };
        let f = Forward::new(
            view(0x1000, [b, sq, h, d]),
            view(0x10_0000, [b, 64, h, d]),
            view(0x20_0000, [b, 64, h, d]),
            view(0x30_0000, [b, sq, h, d]),
        )
        .splits(Splits::Fixed(MAX_SPLITS));
        unsupported(&f.route(Route::Decode));
    }
}
