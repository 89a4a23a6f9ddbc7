//! The seed's two entry points, `mem_eff_forward_ck` and `mem_eff_backward_ck` (PyTorch's ROCm
//! composable-kernel path, `aten/src/ATen/native/transformers/hip/flash_attn/ck/me_ck_api.h`),
//! with the seed's argument lists in Rust terms, for code ported from it.
//!
//! - An `at::Tensor` argument is a view of caller memory: [`TensorRef`] (q, k, v, out, dout, dq,
//!   dk, dv), [`LseRef`], [`BiasRef`], [`I32Ref`] (`cu_seqlens_*`, `seqstart_*`, `seqused_k`).
//!   The functions are `unsafe` because those are raw device addresses.
//! - `std::optional<at::Tensor>` is `Option<…>`. An output given (`out_`, `dq_`, `dk_`, `dv_`,
//!   `grad_bias`) is written in place; one not given is allocated and returned, contiguous.
//! - The seed's tuples are the named structs [`MemEffForward`] and [`MemEffBackward`]; each
//!   tensor is a [`CkTensor`]: the view, plus the buffer when the call allocated it.
//! - The generator is a [`PhiloxGenerator`]; none means the process's default generator (host
//!   state, [`DEFAULT_SEED`](crate::DEFAULT_SEED)). The seed's `(seed, offset)` tensors are
//!   [`MemEffForward::philox`], the [`Philox`] the backward takes back (with a device generator
//!   it points at [`MemEffForward::philox_state`], which must outlive the backward).
//!
//! These calls allocate what they return, so they cannot be captured into a graph; engines
//! that capture use the idiomatic calls ([`Forward`], [`Backward`], [`PhiloxGenerator::draw`])
//! on their own memory.
//!
//! # Argument by argument: the seed's CK path and this crate
//!
//! | argument | the seed (`USE_ROCM_CK_SDPA`) | here |
//! |---|---|---|
//! | `q`, `k`, `v` | BMHK (`[B, S, H, D]`), f16/bf16 | BMHK or varlen `[1, total, H, D]`, any strides with the head dim contiguous; f16, bf16 **and f32**; D to 256, `D != Dv` |
//! | `Hq != Hk` (GQA/MQA) | gated off (error) | supported: query head `h` reads kv head `h / (Hq / Hk)`, dK/dV sum the group |
//! | `p_dropout` | Philox of CK's own layout | semantics.md §4: the same mask on every vendor, bit for bit equal to `attn-ref` |
//! | `return_dropout_randval` | ignored | writes the u8 keep mask `[nb, Hq, max_sq, max_sk]` (1 = kept), masked positions included; `None` when `p = 0` |
//! | `is_causal` | bottom-right causal | **bottom-right** causal (`Mask::Causal(Align::BottomRight)`), as the seed; PyTorch SDPA's `is_causal=True` is top-left: use [`Forward`] with `Align::TopLeft` |
//! | `scale` | default `1/sqrt(D)` | the same |
//! | `attn_bias_` | `[B, Hq, Sq, Sk]`, q's dtype | any strides incl. 0 (broadcast), q's dtype or f32; varlen `[nseq, Hq, max_sq, max_sk]` with local indices |
//! | `out_` | written in place when given | the same; allocated (contiguous) otherwise |
//! | `cu_seqlens_q/k`, `seqstart_q/k` | rejected (no varlen on this path) | varlen: the two names are the same arrays (both given and different is an error); the forward's `max_seqlen` hints are the bias's extents when a bias is given, else the totals |
//! | `gen_` | the CUDA generator | a [`PhiloxGenerator`] (host or device state); none: the process default |
//! | `seqused_k_` | unused | sequence `b` uses its first `seqused_k[b]` keys (masks align on it) |
//! | `lse` (returned) | `[B, Hq, Sq]` | the same; varlen `[1, Hq, total_q]` |
//! | `dq_`, `dk_`, `dv_` | written in place | the same; allocated when `None` |
//! | `bias_requires_grad`, `grad_bias` | `dbias` | `dbias = dS` in the bias's logical shape and dtype (in place when `grad_bias` is given, which must not broadcast) |
//! | `max_seqlen_q/k` (backward) | varlen hints | varlen hints (ignored in batch mode) |
//! | `deterministic` | forced off | honoured: `true` is bit-identical on every run (no atomics); `false` may take the fused kernel (dQ by f32 atomics, [`crate::Backward::deterministic`]) |
//! | `zero_tensors` | zeroes the gradients first | the same |
//! | `philox_seed`, `philox_offset` | tensors from the forward | [`MemEffForward::philox`] |
//!
//! The idiomatic calls also take what the seed has no argument for: windows and top-left
//! alignment, ALiBi, softcap, partial attention, paged KV caches, split-KV decode.
use crate::device::{DeviceBuffer, Stream};
use crate::error::{Error, Result};
use crate::ops::{
    Align, BiasRef, Dropout, Forward, I32Ref, LseRef, Mask, MaskRef, Philox, TensorRef, Varlen,
    element_count,
};
use crate::rng::{PhiloxGenerator, PhiloxState};
use crate::{Backward, DType};
use std::sync::Mutex;

/// The process's default generator: host state at [`crate::DEFAULT_SEED`], offset 0.
static DEFAULT_GENERATOR: Mutex<PhiloxGenerator> =
    Mutex::new(PhiloxGenerator::host(crate::DEFAULT_SEED, 0));

/// A tensor an entry point returns: a view, and the buffer behind it when the call allocated it
/// (a given output is the caller's memory, written in place).
#[derive(Debug)]
pub struct CkTensor<R> {
    view: R,
    storage: Option<DeviceBuffer<u8>>,
}

impl<R: Copy> CkTensor<R> {
    fn given(view: R) -> Self {
        CkTensor {
            view,
            storage: None,
        }
    }

    /// The tensor's view (device address, shape, strides).
    pub fn view(&self) -> R {
        self.view
    }

    /// The buffer, when the call allocated the tensor (`None`: the caller's own memory).
    pub fn storage(&self) -> Option<&DeviceBuffer<u8>> {
        self.storage.as_ref()
    }

    /// The buffer, when the call allocated the tensor; consumes `self`.
    pub fn into_storage(self) -> Option<DeviceBuffer<u8>> {
        self.storage
    }

    /// Copies an allocated tensor's elements to the host (waits for `stream`); an error for a
    /// given tensor (read it from the caller's own buffer).
    pub fn to_host<T: bytemuck::Pod>(&self, stream: &Stream) -> Result<Vec<T>> {
        let buf = self.storage.as_ref().ok_or_else(|| {
            Error::invalid(
                "tensor",
                "a tensor the call allocated",
                "the caller's own memory",
            )
        })?;
        let bytes = buf.to_host(stream)?;
        let mut out = vec![T::zeroed(); bytes.len() / size_of::<T>()];
        let n = size_of_val(&out[..]);
        bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(&bytes[..n]);
        Ok(out)
    }
}

/// What [`mem_eff_forward_ck`] returns: the seed's `(output, q, k, v, lse, seed, offset,
/// dropout_randval)`.
#[derive(Debug)]
pub struct MemEffForward {
    /// `[B, Sq, Hq, Dv]` (varlen `[1, total_q, Hq, Dv]`): `out_`, or allocated.
    pub output: CkTensor<TensorRef>,
    /// The q the call read (the argument; no copy).
    pub q: TensorRef,
    /// The k the call read.
    pub k: TensorRef,
    /// The v the call read.
    pub v: TensorRef,
    /// f32 `[B, Hq, Sq]` (varlen `[1, Hq, total_q]`), allocated.
    pub lse: CkTensor<LseRef>,
    /// The seed's `seed` and `offset`: the key and counter base the call used (pass it to
    /// [`mem_eff_backward_ck`]); `None` without dropout.
    pub philox: Option<Philox>,
    /// With a device generator, the snapshot [`MemEffForward::philox`] reads; keep it alive
    /// until the backward has run.
    pub philox_state: Option<PhiloxState>,
    /// The u8 keep mask `[nb, Hq, max_sq, max_sk]`, with `return_dropout_randval` and `p > 0`.
    pub dropout_randval: Option<CkTensor<MaskRef>>,
}

/// What [`mem_eff_backward_ck`] returns: the seed's `(dQ, dK, dV, dBias)`.
#[derive(Debug)]
pub struct MemEffBackward {
    /// `dq_`, or allocated with q's shape.
    pub dq: CkTensor<TensorRef>,
    /// `dk_`, or allocated with k's shape.
    pub dk: CkTensor<TensorRef>,
    /// `dv_`, or allocated with v's shape.
    pub dv: CkTensor<TensorRef>,
    /// With `bias_requires_grad`: `grad_bias`, or allocated with the bias's logical shape.
    pub dbias: Option<CkTensor<BiasRef>>,
}

/// Allocates `elems` elements of `esize` bytes (at least one byte, so empty tensors have an
/// address).
fn alloc_bytes(
    stream: &Stream,
    what: &str,
    elems: usize,
    esize: usize,
) -> Result<DeviceBuffer<u8>> {
    let bytes = elems
        .checked_mul(esize)
        .ok_or_else(|| Error::invalid(what, "a size that fits in memory", elems))?;
    stream.device().alloc::<u8>(bytes.max(1))
}

/// A contiguous tensor of `shape` allocated on `stream`'s device.
fn alloc_tensor(
    stream: &Stream,
    what: &str,
    dtype: DType,
    shape: [usize; 4],
) -> Result<CkTensor<TensorRef>> {
    let n = element_count(what, &shape)?;
    let buf = alloc_bytes(stream, what, n, dtype.size())?;
    Ok(CkTensor {
        view: TensorRef {
            len: n,
            ..TensorRef::contiguous(buf.ptr(), dtype, shape)
        },
        storage: Some(buf),
    })
}

/// The mask the seed's `is_causal` means: bottom-right causal (the CK path's convention).
fn causal(is_causal: bool) -> Mask {
    if is_causal {
        Mask::Causal(Align::BottomRight)
    } else {
        Mask::None
    }
}

/// A `(q, k)` pair of varlen arrays.
type SeqPair = Option<(I32Ref, I32Ref)>;

/// The varlen arrays of a call: `cu_seqlens_*` and/or `seqstart_*`, each pair whole.
fn seq_arrays(
    cu: (Option<I32Ref>, Option<I32Ref>),
    seqstart: (Option<I32Ref>, Option<I32Ref>),
) -> Result<(SeqPair, SeqPair)> {
    let pair = |names: (&str, &str), p: (Option<I32Ref>, Option<I32Ref>)| match p {
        (Some(q), Some(k)) => Ok(Some((q, k))),
        (None, None) => Ok(None),
        (q, _) => Err(Error::invalid(
            if q.is_some() { names.1 } else { names.0 },
            format!(
                "given together with {}",
                if q.is_some() { names.0 } else { names.1 }
            ),
            "None",
        )),
    };
    Ok((
        pair(("cu_seqlens_q", "cu_seqlens_k"), cu)?,
        pair(("seqstart_q", "seqstart_k"), seqstart)?,
    ))
}

/// The seed's `mem_eff_forward_ck`: attention of `q`, `k`, `v` with the seed's options; see the
/// [module docs](self) for each argument.
///
/// `out_` is written in place when given; the output, `lse` and the dropout mask are otherwise
/// allocated on `stream`'s device. With `p_dropout > 0` the generator (`gen_`, or the process
/// default) hands the call its counter range first; a device generator's snapshot is allocated
/// here and returned in [`MemEffForward::philox_state`]. Every argument is validated (a typed
/// error) before anything is launched.
///
/// # Safety
/// Every view's address range (`ptr`, `len` elements) is live device memory of `stream`'s
/// device, outputs do not overlap inputs, and the memory stays valid until the work enqueued on
/// `stream` is done.
#[allow(clippy::too_many_arguments)]
pub unsafe fn mem_eff_forward_ck(
    stream: &Stream,
    q: TensorRef,
    k: TensorRef,
    v: TensorRef,
    p_dropout: f32,
    return_dropout_randval: bool,
    is_causal: Option<bool>,
    scale: Option<f32>,
    attn_bias: Option<BiasRef>,
    out_: Option<TensorRef>,
    cu_seqlens_q: Option<I32Ref>,
    cu_seqlens_k: Option<I32Ref>,
    seqstart_q: Option<I32Ref>,
    seqstart_k: Option<I32Ref>,
    gen_: Option<&mut PhiloxGenerator>,
    seqused_k: Option<I32Ref>,
) -> Result<MemEffForward> {
    let family = stream.device().tile_family()?;
    let (cu, starts) = seq_arrays((cu_seqlens_q, cu_seqlens_k), (seqstart_q, seqstart_k))?;
    let [b, sq, hq, _] = q.shape;
    let dv = v.shape[3];
    let varlen_arrays = cu.or(starts);
    // The sequence structure: nb sequences of at most max_sq x max_sk.
    let (nb, max_sq, max_sk) = match varlen_arrays {
        Some((cq, _)) => {
            let nseq = cq.len.saturating_sub(1);
            match attn_bias {
                Some(bias) => (nseq, bias.shape[2], bias.shape[3]),
                None => (nseq, sq, k.shape[1]),
            }
        }
        None => (b, sq, k.shape[1]),
    };
    let output = match out_ {
        Some(o) => CkTensor::given(o),
        None => alloc_tensor(stream, "out", q.dtype, [b, sq, hq, dv])?,
    };
    let lse_shape = [b, hq, sq];
    let lse_len = element_count("lse", &lse_shape)?;
    let lse_buf = alloc_bytes(stream, "lse", lse_len, 4)?;
    let lse = CkTensor {
        view: LseRef {
            len: lse_len,
            ..LseRef::contiguous(lse_buf.ptr(), lse_shape)
        },
        storage: Some(lse_buf),
    };
    let mut call = Forward::new(q, k, v, output.view())
        .lse(lse.view())
        .mask(causal(is_causal.unwrap_or(false)));
    if let Some(s) = scale {
        call = call.scale(s);
    }
    if let Some((cq, ck)) = cu {
        call = call.varlen(Varlen {
            cu_seqlens_q: cq,
            cu_seqlens_k: ck,
            max_seqlen_q: max_sq,
            max_seqlen_k: max_sk,
        });
    }
    if let Some((sq_, sk_)) = starts {
        call = call.seqstart(sq_, sk_);
        if cu.is_none() && attn_bias.is_some() {
            // seqstart alone takes the totals as hints; with a bias its extents are the hints.
            call = call.varlen(Varlen {
                cu_seqlens_q: sq_,
                cu_seqlens_k: sk_,
                max_seqlen_q: max_sq,
                max_seqlen_k: max_sk,
            });
        }
    }
    if let Some(bias) = attn_bias {
        call = call.bias(bias);
    }
    if let Some(s) = seqused_k {
        call = call.seqused_k(s);
    }
    let dropout = p_dropout != 0.0;
    let randval = if return_dropout_randval && dropout {
        let shape = [nb, hq, max_sq, max_sk];
        let n = element_count("dropout_randval", &shape)?;
        let buf = alloc_bytes(stream, "dropout_randval", n, 1)?;
        let view = MaskRef {
            len: n,
            ..MaskRef::contiguous(buf.ptr(), shape)
        };
        call = call.dropout_mask(view);
        Some(CkTensor {
            view,
            storage: Some(buf),
        })
    } else {
        None
    };
    // Validate everything with a provisional counter before the generator moves.
    let provisional = |p: f64| Dropout {
        p,
        rng: Philox::Host { seed: 0, offset: 0 },
    };
    if dropout {
        call = call.dropout(provisional(p_dropout as f64));
    }
    call.plan(family)?;
    let (philox, philox_state) = if dropout {
        let n = call.dropout_counters()?;
        let mut default;
        let generator = match gen_ {
            Some(g) => g,
            None => {
                default = DEFAULT_GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
                &mut *default
            }
        };
        let snapshot = match generator.device_state() {
            Some(_) => Some(PhiloxState::new(stream.device(), 0, 0)?),
            None => None,
        };
        let rng = generator.draw(stream, n, snapshot.as_ref())?;
        call = call.dropout(Dropout {
            p: p_dropout as f64,
            rng,
        });
        (Some(rng), snapshot)
    } else {
        (None, None)
    };
    // SAFETY: the caller vouches for every view of caller memory; the outputs allocated here
    // are live and sized by their views; the plan validated every extent.
    unsafe { call.launch(stream)? };
    Ok(MemEffForward {
        output,
        q,
        k,
        v,
        lse,
        philox,
        philox_state,
        dropout_randval: randval,
    })
}

/// The seed's `mem_eff_backward_ck`: `dq`, `dk`, `dv` (and `dbias`) of the attention of
/// [`mem_eff_forward_ck`] for the upstream gradient `dout`; see the [module docs](self) for each
/// argument.
///
/// `dq_`, `dk_`, `dv_` and `grad_bias` are written in place when given and allocated otherwise.
/// `philox` is the forward's [`MemEffForward::philox`] (required when `p_dropout > 0`).
/// Every argument is validated (a typed error) before anything is launched.
///
/// # Safety
/// As [`mem_eff_forward_ck`]: every view is live device memory of `stream`'s device, outputs
/// overlap nothing else, and `philox`'s device snapshot (if any) is still alive.
#[allow(clippy::too_many_arguments)]
pub unsafe fn mem_eff_backward_ck(
    stream: &Stream,
    dout: TensorRef,
    q: TensorRef,
    k: TensorRef,
    v: TensorRef,
    out: TensorRef,
    softmax_lse: LseRef,
    dq_: Option<TensorRef>,
    dk_: Option<TensorRef>,
    dv_: Option<TensorRef>,
    attn_bias: Option<BiasRef>,
    bias_requires_grad: bool,
    grad_bias: Option<BiasRef>,
    cu_seqlens_q: Option<I32Ref>,
    cu_seqlens_k: Option<I32Ref>,
    max_seqlen_q: usize,
    max_seqlen_k: usize,
    p_dropout: f32,
    scale: f32,
    is_causal: bool,
    deterministic: bool,
    zero_tensors: bool,
    philox: Option<Philox>,
) -> Result<MemEffBackward> {
    let family = stream.device().tile_family()?;
    let (cu, _) = seq_arrays((cu_seqlens_q, cu_seqlens_k), (None, None))?;
    let mut call = Forward::new(q, k, v, out)
        .lse(softmax_lse)
        .scale(scale)
        .mask(causal(is_causal));
    if let Some((cq, ck)) = cu {
        call = call.varlen(Varlen {
            cu_seqlens_q: cq,
            cu_seqlens_k: ck,
            max_seqlen_q,
            max_seqlen_k,
        });
    }
    if let Some(bias) = attn_bias {
        call = call.bias(bias);
    }
    if p_dropout != 0.0 {
        let rng = philox.ok_or_else(|| {
            Error::invalid(
                "philox",
                "the forward's Philox (MemEffForward::philox) when p_dropout > 0",
                "None",
            )
        })?;
        call = call.dropout(Dropout {
            p: p_dropout as f64,
            rng,
        });
    }
    let dbias_view = match (bias_requires_grad, attn_bias, grad_bias) {
        (false, _, None) => None,
        (false, _, Some(_)) => {
            return Err(Error::invalid(
                "grad_bias",
                "None unless bias_requires_grad",
                "a tensor",
            ));
        }
        (true, None, _) => {
            return Err(Error::invalid(
                "attn_bias",
                "a bias when bias_requires_grad",
                "None",
            ));
        }
        (true, Some(_), Some(g)) => Some(CkTensor::given(g)),
        (true, Some(bias), None) => {
            let n = element_count("grad_bias", &bias.shape)?;
            let buf = alloc_bytes(stream, "grad_bias", n, bias.dtype.size())?;
            let (_, strides) = crate::ops::contiguous_layout(bias.shape);
            Some(CkTensor {
                view: BiasRef {
                    ptr: buf.ptr(),
                    len: n,
                    dtype: bias.dtype,
                    shape: bias.shape,
                    strides,
                },
                storage: Some(buf),
            })
        }
    };
    let grad = |what: &str, given: Option<TensorRef>, like: TensorRef| match given {
        Some(t) => Ok(CkTensor::given(t)),
        None => alloc_tensor(stream, what, like.dtype, like.shape),
    };
    let (dq, dk, dv) = (
        grad("dq", dq_, q)?,
        grad("dk", dk_, k)?,
        grad("dv", dv_, v)?,
    );
    let mut bwd = Backward::new(call, dout, dq.view(), dk.view(), dv.view())
        .zero_tensors(zero_tensors)
        .deterministic(deterministic);
    if let Some(d) = &dbias_view {
        bwd = bwd.dbias(d.view());
    }
    bwd.plan(family)?;
    // SAFETY: the caller vouches for every view of caller memory; the gradients allocated
    // here are live and sized by their views; the plan validated every extent.
    unsafe { bwd.launch(stream)? };
    Ok(MemEffBackward {
        dq,
        dk,
        dv,
        dbias: dbias_view,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i32ref(ptr: u64) -> I32Ref {
        I32Ref { ptr, len: 3 }
    }

    #[test]
    fn varlen_arrays_come_in_pairs() {
        let (a, b) = (Some(i32ref(0x100)), Some(i32ref(0x200)));
        assert_eq!(
            seq_arrays((a, b), (None, None)).unwrap(),
            (Some((i32ref(0x100), i32ref(0x200))), None)
        );
        assert_eq!(
            seq_arrays((None, None), (a, b)).unwrap(),
            (None, Some((i32ref(0x100), i32ref(0x200))))
        );
        assert_eq!(
            seq_arrays((None, None), (None, None)).unwrap(),
            (None, None)
        );
        let what = |r: Result<_>| match r {
            Err(Error::InvalidArgument { what, .. }) => what,
            other => panic!("expected InvalidArgument, got {other:?}"),
        };
        assert_eq!(what(seq_arrays((a, None), (None, None))), "cu_seqlens_k");
        assert_eq!(what(seq_arrays((None, b), (None, None))), "cu_seqlens_q");
        assert_eq!(what(seq_arrays((None, None), (None, b))), "seqstart_q");
        assert_eq!(what(seq_arrays((None, None), (a, None))), "seqstart_k");
    }

    #[test]
    fn is_causal_is_bottom_right() {
        assert_eq!(causal(true), Mask::Causal(Align::BottomRight));
        assert_eq!(causal(false), Mask::None);
    }
}
