//! # attn-ref: the CPU reference every attention kernel is judged against
//!
//! This crate is the executable form of `docs/semantics.md`. It provides
//!
//! - [`forward`] / [`forward_with_mask`]: the **ground truth** in `f64` (semantics.md §2), materialising one
//!   row of `S` and `P` at a time;
//! - [`forward_blocked`]: the **low-precision** forward, tile by tile with an online softmax in the
//!   log2 domain, rounding where a kernel rounds: the pass rule's noise baseline;
//! - [`backward`]: the `f64` gradients `dq`, `dk`, `dv`, `dbias` and `D` (semantics.md §5);
//! - [`backward_blocked`]: the **low-precision** backward, in f32 with the kernels' roundings (`P·Z` and
//!   `dS` rounded to the dtype before their matrix products), from [`forward_blocked`]'s `out` and `lse`;
//! - [`dropout`]: Philox4x32-10 and the exact counter scheme of semantics.md §4, per element or whole tensor;
//! - [`paged`]: the paged KV cache ([`PagedKv`], with random page tables for GPU tests), partial attention
//!   over a key range ([`forward_partial`]) and the log-sum-exp [`merge`] of partials (semantics.md §8);
//! - [`tolerance`]: the pass rule of semantics.md §6, returning a printable [`Report`];
//! - `strategy` (feature `proptest`): proptest strategies for whole problems.
//!
//! ## The maths
//!
//! For sequence `b`, query head `h`, kv head `g = h / (Hq / Hk)`, query row `i`, key row `j` (local indices):
//!
//! ```text
//! s_ij     = scale * dot(q[b,i,h,:], k[b,j,g,:])             scale = 1/sqrt(D) (in f32) by default
//! s_ij     = cap * tanh(s_ij / cap)                           softcap cap > 0 only
//! logit_ij = s_ij + bias[b,h,i,j] - slope[b,h] * |i + off_b - j|
//! visible  = i + off_b - left <= j <= i + off_b + right  and  j < Sk_b
//! lse_i    = ln sum_{visible j} exp(logit_ij)                 -inf when nothing is visible
//! P_ij     = exp(logit_ij - lse_i)   (0 when not visible)
//! O_i      = sum_j P_ij Z_ij v[b,j,g,:]                       Z_ij = keep_ij / (1 - p)
//! ```
//!
//! with `off_b = 0` (top-left) or `Sk_b - Sq_b` (bottom-right; also ALiBi's alignment when there is no
//! mask), `Sk_b` the used key length (`seqused_k`). A row with no visible key (or whose logits are all
//! `-inf` through the bias) gives `O_i = 0`, `lse_i = -inf`, zero gradients, and no NaN.
//!
//! The backward, with `P` recomputed from `lse`:
//!
//! ```text
//! D_i   = dot(dout_i, O_i)
//! dV_j  = sum_i P_ij Z_ij dout_i
//! dS_ij = P_ij (Z_ij dot(dout_i, V_j) - D_i)        = dBias_ij
//! dS'   = dS (1 - tanh^2(s_raw / cap))               softcap only
//! dQ_i  = scale sum_j dS'_ij K_j,   dK_j = scale sum_i dS'_ij Q_i   (dK, dV summed over each GQA group)
//! ```
//!
//! ## Decisions where semantics.md is silent
//!
//! - Tensors are rank 4 with explicit strides; in varlen mode q/k/v have a leading dimension of 1
//!   (`[1, total, H, D]`), and `lse` is `[Hq, total_q]` (as `[1, Hq, total_q]`). Rows outside every sequence
//!   get `out = 0` and `lse = -inf`.
//! - Values are stored as `f32` already rounded to their [`Dtype`]; the truth reads them exactly as `f64`.
//! - The dropout threshold is `min(65536, round(p * 65536))` with `p: f64` rounded half away from zero;
//!   `rescale = 1.0f32 / (1.0f32 - p as f32)`.
//! - The dropout mask tensor has the bias's logical shape; see [`dropout::mask_tensor`] for which entries are written.
//! - A `+inf` bias is outside the contract (it would produce NaN, as in PyTorch).
//!
//! ## Example
//!
//! ```
//! use attn_ref::{Align, Dtype, Inputs, Mask, Problem, Tensor, backward, forward, forward_blocked};
//! use attn_ref::tolerance::{check, check_lse};
//!
//! let p = Problem::new(Dtype::F16, 2, 17, 33, 4, 2, 16, 8)
//!     .with_mask(Mask::Causal { align: Align::BottomRight })
//!     .with_dropout(0.1, 1234, 0);
//! let x = Inputs::random(&p, 7, 1.0);
//! let truth = forward(&p, &x)?;
//! let lowp = forward_blocked(&p, &x, 64, 32)?;
//! // A "kernel" that equals the blocked reference passes trivially:
//! check(&lowp.out, &truth.out, &lowp.out).assert_passed();
//! check_lse(&lowp.lse, &truth.lse, &lowp.lse).named("lse").assert_passed();
//! // Gradients of sum(out * dout):
//! let dout = Tensor::from_fn(Dtype::F16, p.out_shape(), |[b, s, h, d]| ((b + s + h + d) % 5) as f32 - 2.0);
//! let grads = backward(&p, &x, &dout, &truth.out, &truth.lse, false)?;
//! assert_eq!(grads.dk.len(), 2 * 33 * 2 * 16);
//! # Ok::<(), attn_ref::Error>(())
//! ```
//!
//! ## Performance
//!
//! The `f64` paths run in parallel (rayon) over `(sequence, head)` (forward) and `(sequence, kv head)`
//! (backward). Measured on this project's 2-core build machine (opt-level 3):
//! B = 2, Hq = 8, Sq = Sk = 1024, D = Dv = 128 (bf16 inputs, no mask): forward 1.7 s, forward + backward
//! 5.2 s on 2 rayon threads
//! (see the `perf_reference_1024` test, `cargo test -p attn-ref -- --ignored`).

mod blocked;
mod blocked_bwd;
pub mod dropout;
mod dtype;
mod error;
mod naive;
pub mod ops;
pub mod paged;
mod problem;
#[cfg(feature = "proptest")]
pub mod strategy;
mod tensor;
pub mod tolerance;

pub use blocked::{BlockedOutput, forward_blocked};
pub use blocked_bwd::{BlockedBackward, backward_blocked};
pub use dropout::philox4x32_10;
pub use dtype::Dtype;
pub use error::Error;
pub use naive::{BackwardOutput, ForwardOutput, backward, forward, forward_with_mask, row_dot};
pub use paged::{
    PagedConfig, PagedKv, forward_partial, forward_partial_seqs, merge, merge_row, merge_rows,
};
pub use problem::{
    Alibi, Align, BiasSpec, Dropout, Inputs, Mask, Problem, Seq, SplitMix64, Varlen,
};
pub use tensor::{Tensor, contiguous_strides};
pub use tolerance::{Report, check, check_lse};
