//! The binary interface between `attn-host` (CPU) and `attn-kernels` (GPU).
//!
//! Every kernel takes exactly one `#[repr(C)]` parameter struct from this crate. The struct is
//! compiled into both the host and the kernel, so the two can never disagree on a field.
//!
//! # Transport: a fixed 1024-byte kernel-argument image
//!
//! rustc lowers a struct passed by value to an `extern "gpu-kernel"` function differently per
//! target: NVPTX gets a `.param .b8 [N]` byval parameter, but AMDGPU gets a *pointer* (a
//! `global_buffer` kernel argument), which would force a device allocation per launch. So every
//! kernel entry instead takes [`KERNARG_WORDS`] `u64` arguments, which both targets lay out as a
//! contiguous kernel-argument segment of 1024 bytes (AMD: 128 `by_value` args at offsets 0, 8, …;
//! NVIDIA: 128 `.param .u64`). The image grew from 256 bytes when the forward gained its score
//! pieces, varlen and dropout, and from 512 when the backward's parameters came to hold the
//! forward's whole set plus the gradients (`docs/design.md`). The host writes the struct's bytes into that image with
//! [`KernArgs::new`] and the kernel reads them back with [`KernArgs::params`]. The bytes the kernel
//! sees are therefore exactly `bytes_of(&params)`, which `tests/tests/abi.rs` checks on a GPU with
//! the `attn_abi_echo` kernel.
#![no_std]

/// Number of `u64` words in a kernel-argument image (1024 bytes).
pub const KERNARG_WORDS: usize = 128;

/// Marker for structs that may travel as a kernel-argument image.
///
/// # Safety
///
/// Implementors must be `#[repr(C)]`, contain only integers and floats (every bit pattern valid,
/// no references or pointers with provenance requirements), have no implicit padding whose
/// content matters, be at most `8 * KERNARG_WORDS` bytes large and have an alignment of at most 8.
pub unsafe trait KernelParams: Copy {}

/// The fixed-size argument image of one kernel launch: the bytes of a [`KernelParams`] struct,
/// zero-padded to 1024 bytes.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernArgs(pub [u64; KERNARG_WORDS]);

impl KernArgs {
    /// Serialises `params` into an argument image.
    #[inline(always)]
    pub fn new<P: KernelParams>(params: &P) -> Self {
        const { assert!(core::mem::size_of::<P>() <= 8 * KERNARG_WORDS) };
        const { assert!(core::mem::align_of::<P>() <= 8) };
        let mut words = [0u64; KERNARG_WORDS];
        // SAFETY: `P: KernelParams` is plain old data no larger than the 1024-byte, 8-aligned
        // destination (checked at compile time above), and the two regions do not overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(
                (params as *const P).cast::<u8>(),
                words.as_mut_ptr().cast::<u8>(),
                core::mem::size_of::<P>(),
            );
        }
        Self(words)
    }

    /// Reads the parameter struct back out of the image (the kernel side of [`KernArgs::new`]).
    #[inline(always)]
    pub fn params<P: KernelParams>(&self) -> P {
        const { assert!(core::mem::size_of::<P>() <= 8 * KERNARG_WORDS) };
        const { assert!(core::mem::align_of::<P>() <= 8) };
        // SAFETY: the image is 8-aligned and large enough for `P` (checked at compile time), and
        // every bit pattern is a valid `P` by the `KernelParams` contract.
        unsafe { core::ptr::read(self.0.as_ptr().cast::<P>()) }
    }
}

/// Element type of `q`, `k`, `v` and `out`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// IEEE binary16.
    F16 = 0,
    /// bfloat16.
    Bf16 = 1,
    /// IEEE binary32.
    F32 = 2,
}

impl DType {
    /// All element types, in kernel-name order.
    pub const ALL: [DType; 3] = [DType::F16, DType::Bf16, DType::F32];

    /// Size of one element in bytes.
    pub const fn size(self) -> usize {
        match self {
            DType::F16 | DType::Bf16 => 2,
            DType::F32 => 4,
        }
    }

    /// The name used in kernel symbols and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
            DType::F32 => "f32",
        }
    }
}

/// `flags` bit: every row of `q`, `k`, `v` starts 16-byte aligned (base addresses and row
/// strides), so tiles may be copied 16 bytes at a time.
pub const FLAG_VEC16: u32 = 4;
/// `flags` bit: a window/causal mask is active (otherwise every key `j < Sk` is visible).
pub const MASK_WINDOW: u32 = 1;
/// `flags` bit: the mask and ALiBi diagonal are bottom-right aligned (`off = Sk - Sq`).
pub const MASK_BOTTOM_RIGHT: u32 = 2;
/// `flags` bit: varlen ("group") mode: `cu_seqlens_q` / `cu_seqlens_k` give each sequence's rows,
/// the grid's z index is the sequence, and the batch strides are unused.
pub const FLAG_VARLEN: u32 = 8;
/// `flags` bit: the bias is f32 (otherwise it has q's dtype).
pub const FLAG_BIAS_F32: u32 = 16;
/// `flags` bit: dropout is active (`p > 0`, even when the threshold rounds to 0).
pub const FLAG_DROPOUT: u32 = 32;
/// `flags` bit: the bias's keys are contiguous and every bias row starts 16-byte aligned, so the
/// forward stages its bias tiles in shared memory with asynchronous 16-byte copies (otherwise
/// with element copies).
pub const FLAG_BIAS_VEC16: u32 = 64;
/// `flags` bit: only the keys `key_lo..key_hi` are attended to (the `Decode` variant).
pub const FLAG_KEY_RANGE: u32 = 128;
/// `flags` bit: k and v are pages of a paged KV cache addressed through `block_table` (the
/// `Decode` variant).
pub const FLAG_PAGED: u32 = 256;
/// `window_left` / `window_right` value meaning "unbounded on this side".
pub const WINDOW_UNBOUNDED: i32 = i32::MAX;

/// Parameters of the forward kernels `attn_fwd_{dtype}_d{D}`.
///
/// All strides are in elements; the head-dim stride is always 1. Logical shapes (batch mode):
/// `q [B, Sq, Hq, D]`, `k [B, Sk, Hk, D]`, `v [B, Sk, Hk, Dv]`, `out [B, Sq, Hq, Dv]`,
/// `lse [B, Hq, Sq]` (f32, row stride 1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FwdParams {
    /// Device address of `q`.
    pub q: u64,
    /// Device address of `k`.
    pub k: u64,
    /// Device address of `v`.
    pub v: u64,
    /// Device address of `out`.
    pub out: u64,
    /// Device address of `lse`, or 0 to skip writing it.
    pub lse: u64,
    /// `q` strides: batch, sequence, head.
    pub q_strides: [i64; 3],
    /// `k` strides: batch, sequence, head.
    pub k_strides: [i64; 3],
    /// `v` strides: batch, sequence, head.
    pub v_strides: [i64; 3],
    /// `out` strides: batch, sequence, head.
    pub o_strides: [i64; 3],
    /// `lse` strides: batch, head (the sequence stride is 1).
    pub lse_strides: [i64; 2],
    /// Batch size `B`.
    pub batch: u32,
    /// Query heads `Hq`.
    pub heads_q: u32,
    /// Key/value heads `Hk` (`Hq % Hk == 0`).
    pub heads_k: u32,
    /// Query length `Sq`.
    pub seqlen_q: u32,
    /// Key length `Sk`.
    pub seqlen_k: u32,
    /// Head dim of `q`/`k` (`D`), at most the kernel's `D`.
    pub head_dim: u32,
    /// Head dim of `v`/`out` (`Dv`), at most the kernel's `D`.
    pub head_dim_v: u32,
    /// `scale * log2(e)`: the logits are computed in the log2 domain.
    pub scale_log2: f32,
    /// Keys visible left of the aligned diagonal, or [`WINDOW_UNBOUNDED`].
    pub window_left: i32,
    /// Keys visible right of the aligned diagonal, or [`WINDOW_UNBOUNDED`].
    pub window_right: i32,
    /// [`MASK_WINDOW`] | [`MASK_BOTTOM_RIGHT`] | [`FLAG_VEC16`] | [`FLAG_VARLEN`] |
    /// [`FLAG_BIAS_F32`] | [`FLAG_DROPOUT`].
    pub flags: u32,
    /// Explicit padding (keeps the layout free of implicit padding).
    pub _pad: u32,

    // ---- Varlen and KV-cache lengths (semantics.md §1). Device arrays the host cannot read;
    // the kernel clamps every value it reads from them.
    /// Varlen: device address of `cu_seqlens_q` (i32 `[nseq + 1]`); the grid's z is `nseq`.
    pub cu_seqlens_q: u64,
    /// Varlen: device address of `cu_seqlens_k` (i32 `[nseq + 1]`).
    pub cu_seqlens_k: u64,
    /// Device address of `seqused_k` (i32 `[nseq or B]`), or 0: sequence `b` uses only its first
    /// `seqused_k[b]` keys.
    pub seqused_k: u64,
    /// Varlen: the longest query sequence the grid covers (and the bias / mask tensors' row
    /// extent); batch mode: `Sq`.
    pub max_seqlen_q: u32,
    /// Varlen: the bias / mask tensors' key extent; batch mode: `Sk`.
    pub max_seqlen_k: u32,

    // ---- Score pieces (semantics.md §2).
    /// Device address of the additive bias `[B, Hq, Sq, Sk]` (q's dtype, or f32 with
    /// [`FLAG_BIAS_F32`]), or 0.
    pub bias: u64,
    /// Bias strides in elements: batch (varlen: sequence), head, query row, key (any may be 0).
    pub bias_strides: [i64; 4],
    /// Device address of the ALiBi slopes (f32 `[Hq]` or `[B, Hq]`), or 0.
    pub alibi: u64,
    /// Batch stride of the slopes: 0 for `[Hq]`, `Hq` for `[B, Hq]`.
    pub alibi_stride: i64,
    /// Softcap `cap` (`s = cap · tanh(s / cap)`), or 0 for none.
    pub softcap: f32,

    // ---- Dropout (semantics.md §4).
    /// Keep threshold `t = min(65536, round(p · 65536))`: a 16-bit draw `r` is kept iff `r >= t`.
    pub dropout_threshold: u32,
    /// `1 / (1 - p)` in f32, the multiplier of kept elements.
    pub dropout_rescale: f32,
    /// `scale · log2(e) - scale_log2` (the rounding residual of `scale_log2`, computed in f64):
    /// the f32 kernels scale by `scale_log2 + scale_log2_lo`, so that the systematic rounding of
    /// the scale does not tilt every softmax row.
    pub scale_log2_lo: f32,
    /// Philox key, used when `seed_ptr` is 0.
    pub seed: u64,
    /// Counter base added to `*offset_ptr` (or to 0 when `offset_ptr` is 0).
    pub offset: u64,
    /// Device address of a u64 seed (graph-safe generators), or 0.
    pub seed_ptr: u64,
    /// Device address of a u64 counter base, or 0.
    pub offset_ptr: u64,
    /// Device address of the u8 keep mask `[B, Hq, Sq, Sk]` to write (the seed's
    /// `return_dropout_randval`), or 0.
    pub randval: u64,
    /// Mask strides in elements: batch (varlen: sequence), head, query row (the key stride is 1).
    pub randval_strides: [i64; 3],

    // ---- inference (the `Decode` variant; see `docs/design.md`)
    /// GQA packing: the `G = pack_gqa` query heads of one kv head are rows of one block (packed
    /// row `r` is query `r / G` of head `y·G + r % G`, `y` the grid's kv-head index). 1 = off.
    pub pack_gqa: u32,
    /// Split-KV: each (query block, head, sequence) walks its keys in `num_splits` chunks, one
    /// block per chunk (grid x = query blocks · splits); with more than one, the blocks write
    /// partial `O` and lse to the workspace and a merge kernel combines them. 1 = off.
    pub num_splits: u32,
    /// Split-KV workspace: partial `O` (f32, normalised by its own row sum), addressed as
    /// `[split, batch, seq, head]` by [`FwdParams::ws_o_strides`] (head-dim stride 1).
    pub ws_o: u64,
    /// Split-KV workspace: partial lse (f32, natural log), `[split, batch, head, seq]` by
    /// [`FwdParams::ws_lse_strides`] (sequence stride 1).
    pub ws_lse: u64,
    /// Strides of `ws_o`: split, batch, sequence, head.
    pub ws_o_strides: [i64; 4],
    /// Strides of `ws_lse`: split, batch, head.
    pub ws_lse_strides: [i64; 3],
    /// Paged KV: device address of the block table (i32 `[nseq or B, max_pages]`), or 0. Key `j`
    /// of sequence `b` is row `j % page_size` of page `table[b][j / page_size]` (clamped to
    /// `num_pages - 1`); k/v's batch stride is then the page stride.
    pub block_table: u64,
    /// Row stride of the block table, in entries.
    pub block_table_stride: i64,
    /// Keys per page (a multiple of 16).
    pub page_size: u32,
    /// Pages in k/v (the clamp of every table entry).
    pub num_pages: u32,
    /// With [`FLAG_KEY_RANGE`], only keys `key_lo <= j < key_hi` (of each sequence) are attended
    /// to and read: partial attention over a key range.
    pub key_lo: u32,
    /// See [`FwdParams::key_lo`].
    pub key_hi: u32,
}

// SAFETY: `#[repr(C)]`, only integers and floats, explicit padding, 480 bytes, align 8.
unsafe impl KernelParams for FwdParams {}

/// Parameters of the `attn_abi_echo` kernel: it copies the argument image it received, all
/// [`KERNARG_WORDS`] words, to `out`, so the host can compare bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EchoParams {
    /// Device address of a `[u64; KERNARG_WORDS]` output buffer.
    pub out: u64,
    /// An arbitrary forward-parameter payload to round-trip.
    pub payload: FwdParams,
}

// SAFETY: `#[repr(C)]` of a u64 and a `KernelParams` struct; 488 bytes, align 8, no padding.
unsafe impl KernelParams for EchoParams {}

/// Parameters of the merge kernels `attn_merge_{in}_{out}`: for every (sequence, row, head),
///
/// ```text
/// lse = ln Σ_s exp(lse_s),   out = Σ_s exp(lse_s - lse) · o_s     (out = 0, lse = -inf when
///                                                                  every lse_s is -inf)
/// ```
///
/// over the `n_parts` partials `o_s [batch, seq, head, Dv]`, `lse_s [batch, head, seq]`. The
/// grid is `(seq rows, heads, batch or nseq)`; in varlen mode (`cu_seqlens_q` non-zero) the
/// batch index is the sequence and rows are packed tokens, as in [`FwdParams`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MergeParams {
    /// Device address of the partial outputs (`input` dtype).
    pub parts_o: u64,
    /// Strides of the partial outputs: part, batch, sequence, head (head dim: 1).
    pub parts_o_strides: [i64; 4],
    /// Device address of the partial lse (f32, natural log).
    pub parts_lse: u64,
    /// Strides of the partial lse: part, batch, head (sequence: 1).
    pub parts_lse_strides: [i64; 3],
    /// Device address of the merged output (`output` dtype).
    pub out: u64,
    /// Strides of the merged output: batch, sequence, head (head dim: 1).
    pub o_strides: [i64; 3],
    /// Device address of the merged lse (f32), or 0.
    pub lse: u64,
    /// Strides of the merged lse: batch, head (sequence: 1).
    pub lse_strides: [i64; 2],
    /// Varlen: device address of `cu_seqlens_q` (i32 `[nseq + 1]`), or 0 (batch mode).
    pub cu_seqlens_q: u64,
    /// Number of partials.
    pub n_parts: u32,
    /// Rows per sequence (batch mode) or total rows (varlen: the clamp of `cu_seqlens_q`).
    pub seqlen: u32,
    /// Varlen: the longest sequence (the grid's x); batch mode: `seqlen`.
    pub max_seqlen: u32,
    /// Head dim of the outputs.
    pub head_dim_v: u32,
}

// SAFETY: `#[repr(C)]`, only integers, 152 bytes, align 8, no padding.
unsafe impl KernelParams for MergeParams {}

/// `flags` bit of [`BwdParams::bwd_flags`]: write `dbias` (the bias's gradient, `dS`).
pub const BWD_DBIAS: u32 = 1;
/// `flags` bit of [`BwdParams::bwd_flags`]: `dbias` is f32 (otherwise it has q's dtype).
pub const BWD_DBIAS_F32: u32 = 2;

/// Parameters of the backward kernels `attn_bwd_{pre,dq,dkdv}_*` (semantics.md §5).
///
/// `fwd` is the forward call being differentiated, field for field (its inference fields stay
/// zero): the kernels recompute `P` from it with the forward's own score pieces, mask and dropout.
/// `out` and `lse` are the forward's outputs. Gradients have their inputs' logical shapes and
/// strides in elements (head-dim stride 1): `dq` like `q`, `dk` like `k`, `dv` like `v`, `dout`
/// like `out`; `dbias` has the bias's logical shape `[B, Hq, Sq, Sk]` (varlen: `[nseq, Hq,
/// max_sq, max_sk]`) with its own strides. `delta` (f32, the `lse` layout and strides) holds
/// `D_i = dot(dout_i, out_i)`, written by the preprocess kernel and read by the others.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BwdParams {
    /// The forward call (inputs, options, `out`, `lse`).
    pub fwd: FwdParams,
    /// Device address of `dout`.
    pub dout: u64,
    /// `dout` strides: batch, sequence, head.
    pub do_strides: [i64; 3],
    /// Device address of `dq` (written).
    pub dq: u64,
    /// `dq` strides: batch, sequence, head.
    pub dq_strides: [i64; 3],
    /// Device address of `dk` (written).
    pub dk: u64,
    /// `dk` strides: batch, sequence, head.
    pub dk_strides: [i64; 3],
    /// Device address of `dv` (written).
    pub dv: u64,
    /// `dv` strides: batch, sequence, head.
    pub dv_strides: [i64; 3],
    /// Device address of `dbias` (with [`BWD_DBIAS`]), or 0.
    pub dbias: u64,
    /// `dbias` strides: batch (varlen: sequence), head, query row, key.
    pub dbias_strides: [i64; 4],
    /// [`BWD_DBIAS`] | [`BWD_DBIAS_F32`].
    pub bwd_flags: u32,
    /// Head-dim slices of the gradient accumulators: the `dq` and `dkdv` grids' x holds
    /// `slices` blocks per row block, block `x % slices` accumulating columns
    /// `slice · D/slices ..` of its gradients (wide heads whose accumulators would not fit the
    /// registers at once; 1 otherwise).
    pub slices: u32,
    /// Device address of `delta` (f32, `lse`'s layout).
    pub delta: u64,
    /// Device address of the f32 `dQ` workspace of the fused kernel (`attn_bwd_fused_*`: `dS·K`
    /// summed over the key blocks by atomic adds, unscaled), or 0. `attn_bwd_pre_*` zeroes it,
    /// `attn_bwd_post_*` scales and converts it into `dq`.
    pub dq_accum: u64,
    /// `dq_accum` element strides: batch, query row, head (the head dim contiguous).
    pub dq_accum_strides: [i64; 3],
}

// SAFETY: `#[repr(C)]` of a `KernelParams` struct, integers and floats; 696 bytes, align 8, no
// padding.
unsafe impl KernelParams for BwdParams {}

/// Parameters of `attn_zero_b{16,32}`: zeroes the `[n0, n1, n2, n3]` elements of 2 or 4 bytes at
/// `ptr` with element strides `strides`. The grid is `(grid_x, n1, n0)` with 128 threads; block
/// `x` clears the rows `x, x + grid_x, …` of the flattened `(n2, chunk of 128 along n3)` index.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ZeroParams {
    /// Device address of the first element.
    pub ptr: u64,
    /// Element strides of the four dimensions.
    pub strides: [i64; 4],
    /// Extents of the four dimensions.
    pub dims: [u32; 4],
    /// The grid's x extent (the stride of the kernel's row loop).
    pub grid_x: u32,
    /// Explicit padding.
    pub _pad: u32,
}

// SAFETY: `#[repr(C)]`, only integers, 64 bytes, align 8, explicit padding.
unsafe impl KernelParams for ZeroParams {}

/// Parameters of `attn_philox_advance`, the step of a graph-safe Philox generator whose
/// `(seed, offset)` pair lives in device memory (semantics.md §4): one thread copies the pair at
/// `state` to `snapshot` (when non-null), which the next call reads its key and counter base
/// from, then adds `increment` (wrapping) to the state's offset. Enqueued on the stream before
/// that call, it is captured into a CUDA/HIP graph like any kernel, so every replay draws a
/// fresh mask.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhiloxAdvanceParams {
    /// Device address of the generator's `[seed, offset]` (two u64, 8-byte aligned).
    pub state: u64,
    /// Device address of the call's `[seed, offset]` copy (two u64), or 0 for none.
    pub snapshot: u64,
    /// The counter bases the call consumes.
    pub increment: u64,
    /// Explicit padding.
    pub _pad: u64,
}

// SAFETY: `#[repr(C)]`, four u64, 32 bytes, align 8, no padding.
unsafe impl KernelParams for PhiloxAdvanceParams {}

const _: () = {
    assert!(core::mem::size_of::<PhiloxAdvanceParams>() == 32);
    assert!(core::mem::size_of::<FwdParams>() == 480);
    assert!(core::mem::align_of::<FwdParams>() == 8);
    assert!(core::mem::offset_of!(FwdParams, q_strides) == 40);
    assert!(core::mem::offset_of!(FwdParams, lse_strides) == 136);
    assert!(core::mem::offset_of!(FwdParams, batch) == 152);
    assert!(core::mem::offset_of!(FwdParams, scale_log2) == 180);
    assert!(core::mem::offset_of!(FwdParams, flags) == 192);
    assert!(core::mem::offset_of!(FwdParams, cu_seqlens_q) == 200);
    assert!(core::mem::offset_of!(FwdParams, bias_strides) == 240);
    assert!(core::mem::offset_of!(FwdParams, seed) == 304);
    assert!(core::mem::offset_of!(FwdParams, randval_strides) == 344);
    assert!(core::mem::offset_of!(FwdParams, pack_gqa) == 368);
    assert!(core::mem::offset_of!(FwdParams, ws_o_strides) == 392);
    assert!(core::mem::offset_of!(FwdParams, key_hi) == 476);
    assert!(core::mem::size_of::<MergeParams>() == 152);
    assert!(core::mem::size_of::<EchoParams>() == 488);
    assert!(core::mem::size_of::<KernArgs>() == 1024);
    assert!(core::mem::size_of::<BwdParams>() == 696);
    assert!(core::mem::offset_of!(BwdParams, dout) == 480);
    assert!(core::mem::offset_of!(BwdParams, delta) == 656);
    assert!(core::mem::size_of::<ZeroParams>() == 64);
};

/// Which kernel: the symbol-name grammar shared by `xtask`, `attn-kernels` and `attn-host`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelId {
    /// `attn_abi_echo`: copies its argument image to memory.
    AbiEcho,
    /// `attn_fwd_{dtype}_d{head_dim}[_varlen|_pieces]`: the forward pass for head dims up to `head_dim`.
    Fwd {
        /// Element type.
        dtype: DType,
        /// Largest `D`/`Dv` the kernel handles (the tile width).
        head_dim: u32,
        /// Which score pieces the kernel compiles in.
        variant: FwdVariant,
    },
    /// `attn_dropout_mask`: writes the keep mask of the positions the mask hides (the forward
    /// kernel writes the visible ones), so that `return_dropout_randval` covers every position.
    DropoutMask,
    /// `attn_merge_{input}_{output}`: merges partial attention outputs by their lse
    /// ([`MergeParams`]): split-KV's combine step, and the public merge.
    Merge {
        /// Element type of the partial outputs.
        input: DType,
        /// Element type of the merged output.
        output: DType,
    },
    /// `attn_bwd_pre_{dtype}`: `delta = rowsum(dout ∘ out)` ([`BwdParams`]).
    BwdPre {
        /// Element type of `dout` and `out`.
        dtype: DType,
    },
    /// `attn_bwd_dq_{dtype}_d{head_dim}[_pieces]`: `dq` (and `dbias`), one block per query block.
    BwdDq {
        /// Element type.
        dtype: DType,
        /// Largest `D`/`Dv` the kernel handles.
        head_dim: u32,
        /// Which features the kernel compiles in.
        variant: BwdVariant,
    },
    /// `attn_bwd_dkdv_{dtype}_d{head_dim}[_pieces]`: `dk` and `dv`, one block per key block.
    BwdDkdv {
        /// Element type.
        dtype: DType,
        /// Largest `D`/`Dv` the kernel handles.
        head_dim: u32,
        /// Which features the kernel compiles in.
        variant: BwdVariant,
    },
    /// `attn_bwd_fused_{dtype}_d{head_dim}`: `dk` and `dv` as `attn_bwd_dkdv_*` (plain), plus
    /// each key block's share of `dQ` added atomically to `BwdParams::dq_accum` (the
    /// non-deterministic backward: 5 matrix products instead of 7).
    BwdFused {
        /// Element type.
        dtype: DType,
        /// Largest `D`/`Dv` the kernel handles.
        head_dim: u32,
    },
    /// `attn_bwd_post_{dtype}`: `dq = scale · dq_accum`, rounded to `dtype` ([`BwdParams`]).
    BwdPost {
        /// Element type of `dq`.
        dtype: DType,
    },
    /// `attn_zero_b{bits}`: zeroes a strided 4-d tensor of 16- or 32-bit elements
    /// ([`ZeroParams`]).
    Zero {
        /// Bits per element: 16 or 32.
        bits: u32,
    },
    /// `attn_philox_advance`: adds to a device-resident Philox counter base
    /// ([`PhiloxAdvanceParams`]).
    PhiloxAdvance,
}

/// The compile-time variants of the forward kernel. Masks and GQA are run-time in all three;
/// what a variant compiles in is enabled at run time by its parameters. The plain forward pays
/// nothing for the others: sequence lengths read from device arrays cannot be rematerialised from
/// the parameters, and cost it ~30 registers (`docs/design.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FwdVariant {
    /// Batch mode; no `seqused_k`, bias, ALiBi, softcap or dropout.
    Plain,
    /// Varlen and `seqused_k` (each optional); no score pieces.
    Varlen,
    /// Varlen, `seqused_k`, bias, ALiBi, softcap and dropout (each optional).
    Pieces,
    /// Varlen, `seqused_k`, softcap and ALiBi, plus split-KV, GQA packing, paged KV and key
    /// ranges (no bias, no dropout), on a tile whose waves share the query rows and split the
    /// keys (decode: few query rows, many keys).
    Decode,
}

impl FwdVariant {
    /// All variants, in kernel-name order.
    pub const ALL: [FwdVariant; 4] = [
        FwdVariant::Plain,
        FwdVariant::Varlen,
        FwdVariant::Pieces,
        FwdVariant::Decode,
    ];
}

/// The compile-time variants of the backward kernels. Masks and GQA are run-time in both; the
/// plain kernels pay no registers for the features they leave out (the pieces' kernels hold
/// 240-255 registers on sm_90a at every head dim, the plain ones far fewer: `docs/perf.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BwdVariant {
    /// Batch mode; no `seqused_k`, bias, `dbias`, ALiBi, softcap or dropout.
    Plain,
    /// Varlen, `seqused_k`, bias and `dbias`, ALiBi, softcap and dropout (each optional).
    Pieces,
}

impl BwdVariant {
    /// Both variants, in kernel-name order.
    pub const ALL: [BwdVariant; 2] = [BwdVariant::Plain, BwdVariant::Pieces];

    /// The kernel-name suffix: `""` or `"_pieces"`.
    pub const fn suffix(self) -> &'static str {
        match self {
            BwdVariant::Plain => "",
            BwdVariant::Pieces => "_pieces",
        }
    }
}

/// Head-dim buckets the forward kernels are instantiated for.
pub const FWD_HEAD_DIMS: [u32; 4] = [32, 64, 128, 256];

impl KernelId {
    /// Writes the kernel's symbol name, e.g. `attn_fwd_bf16_d128`.
    pub fn write_symbol(&self, w: &mut impl core::fmt::Write) -> core::fmt::Result {
        match self {
            KernelId::AbiEcho => w.write_str("attn_abi_echo"),
            KernelId::Fwd {
                dtype,
                head_dim,
                variant,
            } => {
                write!(w, "attn_fwd_{}_d{}", dtype.name(), head_dim)?;
                match variant {
                    FwdVariant::Plain => Ok(()),
                    FwdVariant::Varlen => w.write_str("_varlen"),
                    FwdVariant::Pieces => w.write_str("_pieces"),
                    FwdVariant::Decode => w.write_str("_decode"),
                }
            }
            KernelId::DropoutMask => w.write_str("attn_dropout_mask"),
            KernelId::Merge { input, output } => {
                write!(w, "attn_merge_{}_{}", input.name(), output.name())
            }
            KernelId::BwdPre { dtype } => write!(w, "attn_bwd_pre_{}", dtype.name()),
            KernelId::BwdDq {
                dtype,
                head_dim,
                variant,
            } => {
                let (t, v) = (dtype.name(), variant.suffix());
                write!(w, "attn_bwd_dq_{t}_d{head_dim}{v}")
            }
            KernelId::BwdDkdv {
                dtype,
                head_dim,
                variant,
            } => {
                let (t, v) = (dtype.name(), variant.suffix());
                write!(w, "attn_bwd_dkdv_{t}_d{head_dim}{v}")
            }
            KernelId::BwdFused { dtype, head_dim } => {
                write!(w, "attn_bwd_fused_{}_d{head_dim}", dtype.name())
            }
            KernelId::BwdPost { dtype } => write!(w, "attn_bwd_post_{}", dtype.name()),
            KernelId::Zero { bits } => write!(w, "attn_zero_b{bits}"),
            KernelId::PhiloxAdvance => w.write_str("attn_philox_advance"),
        }
    }
}

impl core::fmt::Display for KernelId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.write_symbol(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernargs_round_trip_preserves_every_field() {
        let p = FwdParams {
            q: 0x1122_3344_5566_7788,
            lse: 42,
            q_strides: [-1, 2, 3],
            lse_strides: [7, 8],
            batch: 3,
            head_dim_v: 96,
            scale_log2: 0.125,
            window_left: WINDOW_UNBOUNDED,
            window_right: -5,
            flags: MASK_WINDOW | MASK_BOTTOM_RIGHT,
            randval_strides: [1, 2, -3],
            offset_ptr: u64::MAX,
            softcap: 30.0,
            ..Default::default()
        };
        let args = KernArgs::new(&p);
        assert_eq!(args.params::<FwdParams>(), p);
        // Bytes past the struct are zero.
        assert!(args.0[60..].iter().all(|&w| w == 0));
        let b = BwdParams {
            fwd: p,
            dq: 7,
            dbias_strides: [1, -2, 3, 4],
            delta: 9,
            slices: 2,
            ..Default::default()
        };
        let args = KernArgs::new(&b);
        assert_eq!(args.params::<BwdParams>(), b);
        assert!(args.0[87..].iter().all(|&w| w == 0));
    }
}
