//! Interop with [cudarc](https://docs.rs/cudarc)'s safe driver layer (feature `cudarc`): the
//! forward, backward and decode calls on cudarc's `CudaSlice<T>` / `CudaView<T>` /
//! `CudaViewMut<T>` memory, enqueued on the caller's `Arc<CudaStream>` with no copy and no
//! synchronisation.
//!
//! Engines such as candle and mistral.rs hold their tensors as cudarc slices and run on a cudarc
//! stream. [`Device::from_cudarc`] gives the attn-host device of a cudarc context: both use the
//! device's *primary* context (`CudaContext::new` retains it, as [`Device::cuda`] does), so
//! memory and streams are shared as they are. [`Device::cudarc_stream`] wraps one of the
//! engine's streams; every launch then goes onto that stream.
//!
//! | layer | what | `launch` |
//! |---|---|---|
//! | [`Attention`] | q/k/v as [`Tensor`]s and the options of the call (mask, scale, softcap, dropout, bias, ALiBi, varlen, `seqused_k`, paged KV, key range, split-KV, GQA packing, workspace); [`Attention::forward`] into a [`TensorMut`] (+ lse), [`Attention::backward`] into [`Grads`] | safe |
//! | [`DeviceMemory`] / [`DeviceMemoryMut`] → [`Bound`] | a device address bound to a stream (with cudarc's event guard), turned into any of the crate's `*Ref`s ([`TensorRef`], [`LseRef`], [`I32Ref`], [`BiasRef`], [`PartialsRef`], ...) for any call ([`crate::Forward`], [`crate::Backward`], [`crate::Merge`]) | `unsafe`, as in the rest of the crate |
//!
//! Element types map through [`HostElement`]: `half::f16`, `half::bf16` and `f32` (the feature
//! turns on cudarc's `f16` feature, which gives half's types cudarc's `DeviceRepr`). Both layers
//! also take this crate's own [`DeviceBuffer`]s.
//!
//! # Streams and cudarc's event tracking
//!
//! cudarc tracks which stream last read and wrote each `CudaSlice` with events (once a context
//! has more than one stream). Every address is taken through cudarc's `DevicePtr::device_ptr`
//! (inputs) or `DevicePtrMut::device_ptr_mut` (outputs): the stream first waits for the slice's
//! pending writes (and, for outputs, reads), and the returned guard records this stream's use
//! when it is dropped. [`Attention`] drops the guards after the kernels are enqueued, so a slice
//! used or freed later on another stream waits for the attention kernels, and nothing blocks the
//! host. The temporary memory of a call (the backward's `delta`, split-KV's partials when no
//! [`Attention::workspace`] is given) is allocated on the stream with cudarc (`cuMemAllocAsync`
//! where the device has memory pools) and freed in stream order.
//!
//! Outputs are taken as `&mut` ([`TensorMut`], [`DeviceMemoryMut`]): the borrow checker rejects an
//! output that aliases an input or another output, which is what makes [`Attention`] safe.
//!
//! # Example
//!
//! One attention layer, forward and backward, on an engine's cudarc buffers and stream:
//!
//! ```no_run
//! use attn_host::interop::{Attention, Grads, Tensor, TensorMut};
//! use attn_host::{Align, Device, Mask};
//! use cudarc::driver::CudaContext;
//! use half::bf16;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ctx = CudaContext::new(0)?;
//! let stream = ctx.new_stream()?; // the engine's stream
//! let dev = Device::from_cudarc(&ctx)?; // once per device: kernels are loaded once per Device
//! let on = dev.cudarc_stream(&stream)?; // cheap: launches go onto `stream`
//!
//! let (b, s, hq, hk, d) = (2, 256, 8, 2, 64);
//! let (qs, ks) = ([b, s, hq, d], [b, s, hk, d]);
//! let q = stream.alloc_zeros::<bf16>(b * s * hq * d)?;
//! let k = stream.alloc_zeros::<bf16>(b * s * hk * d)?;
//! let v = stream.alloc_zeros::<bf16>(b * s * hk * d)?;
//! let mut out = stream.alloc_zeros::<bf16>(b * s * hq * d)?;
//! let mut lse = stream.alloc_zeros::<f32>(b * hq * s)?;
//!
//! let mut attn = Attention::new(Tensor::new(&q, qs), Tensor::new(&k, ks), Tensor::new(&v, ks))
//!     .mask(Mask::Causal(Align::BottomRight));
//! attn.forward(&on, TensorMut::new(&mut out, qs), Some(&mut lse))?;
//!
//! let dout = stream.alloc_zeros::<bf16>(b * s * hq * d)?;
//! let mut dq = stream.alloc_zeros::<bf16>(b * s * hq * d)?;
//! let mut dk = stream.alloc_zeros::<bf16>(b * s * hk * d)?;
//! let mut dv = stream.alloc_zeros::<bf16>(b * s * hk * d)?;
//! let grads = Grads {
//!     dq: TensorMut::new(&mut dq, qs),
//!     dk: TensorMut::new(&mut dk, ks),
//!     dv: TensorMut::new(&mut dv, ks),
//! };
//! attn.backward(&on, Tensor::new(&out, qs), &lse, Tensor::new(&dout, qs), grads)?;
//! let dq_host: Vec<bf16> = stream.clone_dtoh(&dq)?; // cudarc orders the copy after the kernels
//! # Ok(()) }
//! ```
//!
//! The raw layer, for calls [`Attention`] does not cover (e.g. [`crate::Merge`], `dbias`, the
//! dropout mask):
//!
//! ```no_run
//! # use attn_host::interop::{DeviceMemory, DeviceMemoryMut};
//! # use attn_host::{Device, Forward};
//! # fn f(dev: &Device, stream: &std::sync::Arc<cudarc::driver::CudaStream>,
//! #      q: &cudarc::driver::CudaSlice<half::f16>, out: &mut cudarc::driver::CudaSlice<half::f16>)
//! #      -> attn_host::Result<()> {
//! let on = dev.cudarc_stream(stream)?;
//! let shape = [1, 128, 8, 64];
//! let qb = q.read_on(&on)?; // the address, and cudarc's guard
//! let ob = out.write_on(&on)?;
//! let call = Forward::new(qb.tensor(shape), qb.tensor(shape), qb.tensor(shape), ob.tensor(shape));
//! // SAFETY: every address comes from a `Bound` of `on` that is alive until after the launch;
//! // the output is an exclusive borrow, so it overlaps no input.
//! unsafe { call.launch(&on)? };
//! drop((qb, ob)); // records the uses for cudarc's tracking, after the launch
//! # Ok(()) }
//! ```
use crate::decode::{PartialLseRef, PartialsRef, Workspace};
use crate::device::{Device, DeviceBuffer, Stream};
use crate::driver::{Api, StreamHandle};
use crate::error::{Error, Result};
use crate::ops::{
    AlibiRef, BiasRef, Dropout, Forward, HostElement, I32Ref, LseRef, Mask, MaskRef, Philox,
    TensorRef,
};
use crate::{Backward, Packing, Paged, Route, Splits};
use cudarc::driver::result as cu;
use cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut,
    DeviceSlice, SyncOnDrop, sys,
};
use std::marker::PhantomData;
use std::sync::Arc;

use crate::driver::cuda::drv;

// ---------------------------------------------------------------------------------------------
// Devices and streams

/// What the context check compares: a cudarc context against an attn-host device.
#[derive(Clone, Copy, Debug)]
struct ContextFacts {
    /// The attn-host device's runtime and ordinal.
    api: Api,
    ordinal: u32,
    /// `(CUdevice, primary CUcontext)` of the device's ordinal (CUDA only).
    primary: Option<(i32, usize)>,
    /// The cudarc context.
    ctx_is_primary: bool,
    ctx_ordinal: usize,
    ctx_device: i32,
    ctx_handle: usize,
}

/// The context check, pure: the cudarc context must be the primary context of the device.
fn check_context(f: ContextFacts) -> Result<()> {
    let what = "cudarc context";
    let expected = format!(
        "the primary context of CUDA device {} (CudaContext::new({}))",
        f.ordinal, f.ordinal
    );
    if f.api != Api::Cuda {
        return Err(Error::invalid(
            what,
            "a CUDA device (cudarc is CUDA only)",
            format!("a {} device", f.api.name()),
        ));
    }
    if !f.ctx_is_primary {
        return Err(Error::invalid(
            what,
            expected,
            "a non-primary context (new_non_primary, new_cig or from_raw_context)",
        ));
    }
    if f.ctx_ordinal != f.ordinal as usize {
        return Err(Error::invalid(
            what,
            expected,
            format!("the context of CUDA device {}", f.ctx_ordinal),
        ));
    }
    match f.primary {
        Some((dev, ctx)) if dev == f.ctx_device && ctx == f.ctx_handle => Ok(()),
        Some((_, ctx)) => Err(Error::invalid(
            what,
            format!("{expected} = {ctx:#x}"),
            format!("context {:#x}", f.ctx_handle),
        )),
        None => Err(Error::invalid(what, expected, "no primary context")),
    }
}

/// `(CUdevice, primary context)` of CUDA device `ordinal`; the primary context is retained by
/// the attn-host device, so its handle is stable.
fn primary_of(ordinal: u32) -> Result<(sys::CUdevice, sys::CUcontext)> {
    let dev = cu::device::get(ordinal as i32).map_err(drv("cuDeviceGet"))?;
    // SAFETY: `dev` is a valid device handle from cuDeviceGet.
    let ctx = unsafe { cu::primary_ctx::retain(dev) }.map_err(drv("cuDevicePrimaryCtxRetain"))?;
    // SAFETY: balances the retain above; the attn-host device holds a retain of its own.
    unsafe { cu::primary_ctx::release(dev) }.map_err(drv("cuDevicePrimaryCtxRelease"))?;
    Ok((dev, ctx))
}

/// Checks that `ctx` is `dev`'s primary context.
fn check_primary(dev: &Device, ctx: &CudaContext) -> Result<()> {
    let info = dev.info();
    let primary = if info.api == Api::Cuda {
        let (d, c) = primary_of(info.ordinal)?;
        Some((d, c as usize))
    } else {
        None
    };
    check_context(ContextFacts {
        api: info.api,
        ordinal: info.ordinal,
        primary,
        ctx_is_primary: ctx.is_primary(),
        ctx_ordinal: ctx.ordinal(),
        ctx_device: ctx.cu_device(),
        ctx_handle: ctx.cu_ctx() as usize,
    })
}

impl Device {
    /// The attn-host device of a cudarc context, which must be its device's primary context
    /// (`CudaContext::new(ordinal)`); otherwise [`Error::InvalidArgument`].
    ///
    /// Create it once per device and keep it: the kernels are loaded once per `Device`.
    pub fn from_cudarc(ctx: &Arc<CudaContext>) -> Result<Device> {
        let ordinal = u32::try_from(ctx.ordinal()).map_err(|_| {
            Error::invalid("cudarc context", "an ordinal below 2^32", ctx.ordinal())
        })?;
        let dev = Device::cuda(ordinal)?;
        check_primary(&dev, ctx)?;
        Ok(dev)
    }

    /// This device's handle on a cudarc stream: every launch on the returned [`Stream`] is
    /// enqueued on `stream` (no synchronisation), and the returned value keeps `stream` alive.
    /// The stream must belong to this device's primary context; otherwise
    /// [`Error::InvalidArgument`]. Cheap (no allocation on the device).
    pub fn cudarc_stream(&self, stream: &Arc<CudaStream>) -> Result<Stream> {
        check_primary(self, stream.context())?;
        let handle = stream.cu_stream() as StreamHandle;
        // SAFETY: the stream belongs to this device's primary context (checked above) and the
        // returned stream holds an `Arc` of it, so the handle stays live as long as it does.
        Ok(unsafe { self.stream_from_raw_kept(handle, Box::new(stream.clone())) })
    }
}

impl Stream {
    /// The cudarc stream this stream wraps ([`Device::cudarc_stream`]), if any.
    pub fn cudarc(&self) -> Option<&Arc<CudaStream>> {
        self.kept()?.downcast_ref::<Arc<CudaStream>>()
    }
}

// ---------------------------------------------------------------------------------------------
// Memory

mod sealed {
    pub trait Sealed {}
}

/// Keeps cudarc's stream tracking of one use of a slice: dropping it records the use on the
/// stream (cudarc's `SyncOnDrop`). Drop it only after the work that uses the address is
/// enqueued. Holds nothing for this crate's [`DeviceBuffer`]s.
#[must_use = "dropping the guard before the launch records the use too early"]
pub struct Guard<'g> {
    _sync: Option<SyncOnDrop<'g>>,
}

impl std::fmt::Debug for Guard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("cudarc", &self._sync.is_some())
            .finish()
    }
}

/// A device address bound to a stream: `len` elements of `T` at `ptr`, with the [`Guard`] that
/// keeps cudarc's tracking; from [`DeviceMemory::read_on`] or [`DeviceMemoryMut::write_on`].
///
/// Its methods build the crate's argument types (`len` is the bound length, which the plans
/// check against the shapes).
#[must_use = "the address is only valid for work enqueued while the Bound is alive"]
pub struct Bound<'g, T> {
    ptr: u64,
    len: usize,
    guard: Guard<'g>,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Bound<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("ptr", &format_args!("{:#x}", self.ptr))
            .field("len", &self.len)
            .field("guard", &self.guard)
            .finish()
    }
}

/// Row-major element strides of `shape` (a size-0 dimension counts as 1, as in
/// [`TensorRef::contiguous`]).
fn contiguous_strides<const N: usize>(shape: [usize; N]) -> [i64; N] {
    let mut strides = [1i64; N];
    let mut acc = 1i64;
    for (s, &n) in strides.iter_mut().zip(shape.iter()).rev() {
        *s = acc;
        acc = acc.saturating_mul(i64::try_from(n.max(1)).unwrap_or(i64::MAX));
    }
    strides
}

impl<'g, T> Bound<'g, T> {
    fn new(ptr: u64, len: usize, sync: Option<SyncOnDrop<'g>>) -> Self {
        Bound {
            ptr,
            len,
            guard: Guard { _sync: sync },
            _t: PhantomData,
        }
    }
    /// The device address of element 0.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
    /// Elements addressable from [`Bound::ptr`].
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether no element is addressable.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The guard alone (e.g. to keep many in one `Vec` until the launch is enqueued).
    pub fn into_guard(self) -> Guard<'g> {
        self.guard
    }
}

impl<T: HostElement> Bound<'_, T> {
    /// A contiguous BMHK tensor `shape` (q, k, v, out, their gradients, pages of a KV cache).
    pub fn tensor(&self, shape: [usize; 4]) -> TensorRef {
        self.strided(shape, contiguous_strides(shape))
    }
    /// A BMHK tensor with element `strides` (the head-dim stride must be 1).
    pub fn strided(&self, shape: [usize; 4], strides: [i64; 4]) -> TensorRef {
        TensorRef {
            ptr: self.ptr,
            len: self.len,
            dtype: T::DTYPE,
            shape,
            strides,
        }
    }
    /// A bias (or `dbias`) `[nb, Hq, max_sq, max_sk]` with element `strides` (0 broadcasts).
    pub fn bias(&self, shape: [usize; 4], strides: [i64; 4]) -> BiasRef {
        BiasRef {
            ptr: self.ptr,
            len: self.len,
            dtype: T::DTYPE,
            shape,
            strides,
        }
    }
    /// Contiguous partial outputs `[n, batch, seq, heads, Dv]` for [`crate::Merge`].
    pub fn partials(&self, shape: [usize; 5]) -> PartialsRef {
        PartialsRef {
            ptr: self.ptr,
            len: self.len,
            dtype: T::DTYPE,
            shape,
            strides: contiguous_strides(shape),
        }
    }
}

impl Bound<'_, f32> {
    /// A contiguous log-sum-exp `[batch, heads_q, seq_q]`.
    pub fn lse(&self, shape: [usize; 3]) -> LseRef {
        LseRef {
            ptr: self.ptr,
            len: self.len,
            shape,
            strides: contiguous_strides(shape),
        }
    }
    /// Contiguous partial lse `[n, batch, heads, seq]` for [`crate::Merge`].
    pub fn partial_lse(&self, shape: [usize; 4]) -> PartialLseRef {
        PartialLseRef {
            ptr: self.ptr,
            len: self.len,
            shape,
            strides: contiguous_strides(shape),
        }
    }
    /// ALiBi slopes `[Hq]`, or `[nb, Hq]` when `per_batch`.
    pub fn alibi(&self, per_batch: bool) -> AlibiRef {
        AlibiRef {
            ptr: self.ptr,
            len: self.len,
            per_batch,
        }
    }
}

impl Bound<'_, i32> {
    /// An i32 array (`cu_seqlens`, `seqused_k`, a block table).
    pub fn i32s(&self) -> I32Ref {
        I32Ref {
            ptr: self.ptr,
            len: self.len,
        }
    }
}

impl Bound<'_, u8> {
    /// A contiguous dropout keep mask `[nb, Hq, max_sq, max_sk]`.
    pub fn dropout_mask(&self, shape: [usize; 4]) -> MaskRef {
        MaskRef {
            ptr: self.ptr,
            len: self.len,
            shape,
            strides: contiguous_strides(shape),
        }
    }
    /// Split-KV workspace of `len` bytes.
    pub fn workspace(&self) -> Workspace {
        Workspace {
            ptr: self.ptr,
            bytes: self.len,
        }
    }
}

/// Device memory the calls read: cudarc's `CudaSlice<T>`, `CudaView<T>` and `CudaViewMut<T>`,
/// and this crate's [`DeviceBuffer<T>`]. Sealed: only these types implement it, so an address
/// is always that of live memory of its context.
pub trait DeviceMemory<T>: sealed::Sealed {
    /// Number of elements.
    fn len(&self) -> usize;
    /// Whether the memory holds no element.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The address for work on `stream` that reads the memory.
    ///
    /// For cudarc memory, `stream` must come from [`Device::cudarc_stream`] and share the
    /// memory's context; `stream` then waits for the memory's pending writes (cudarc's
    /// `DevicePtr::device_ptr`), and dropping the [`Bound`] records the read. For a
    /// [`DeviceBuffer`], the stream's device must be the buffer's.
    fn read_on<'g>(&'g self, stream: &'g Stream) -> Result<Bound<'g, T>>;
}

/// Device memory the calls write (`CudaSlice<T>`, `CudaViewMut<T>`, [`DeviceBuffer<T>`]).
pub trait DeviceMemoryMut<T>: DeviceMemory<T> {
    /// The address for work on `stream` that writes the memory (as [`DeviceMemory::read_on`];
    /// the stream waits for pending reads and writes, and the write is recorded). The exclusive
    /// borrow lasts as long as the [`Bound`].
    fn write_on<'g>(&'g mut self, stream: &'g Stream) -> Result<Bound<'g, T>>;
}

/// The cudarc stream of `stream` for memory of `mem`'s context.
fn cudarc_for<'g>(stream: &'g Stream, mem: &CudaStream) -> Result<&'g CudaStream> {
    let cs = stream.cudarc().ok_or_else(|| {
        Error::invalid(
            "stream",
            "a stream from Device::cudarc_stream (cudarc memory is used through its CudaStream)",
            "a stream of this crate",
        )
    })?;
    let (want, got) = (cs.context().cu_ctx(), mem.context().cu_ctx());
    if want != got {
        return Err(Error::invalid(
            "memory",
            format!("cudarc memory of the stream's context {want:p}"),
            format!("memory of context {got:p}"),
        ));
    }
    Ok(cs)
}

macro_rules! cudarc_memory {
    (read: $($ty:ty),*; write: $($wty:ty),*) => {
        $(
            impl<T> sealed::Sealed for $ty {}
            impl<T> DeviceMemory<T> for $ty {
                fn len(&self) -> usize {
                    DeviceSlice::len(self)
                }
                fn read_on<'g>(&'g self, stream: &'g Stream) -> Result<Bound<'g, T>> {
                    let cs = cudarc_for(stream, DeviceSlice::stream(self))?;
                    let (ptr, sync) = DevicePtr::device_ptr(self, cs);
                    Ok(Bound::new(ptr, DeviceSlice::len(self), Some(sync)))
                }
            }
        )*
        $(
            impl<T> DeviceMemoryMut<T> for $wty {
                fn write_on<'g>(&'g mut self, stream: &'g Stream) -> Result<Bound<'g, T>> {
                    let cs = cudarc_for(stream, DeviceSlice::stream(self))?;
                    let len = DeviceSlice::len(self);
                    let (ptr, sync) = DevicePtrMut::device_ptr_mut(self, cs);
                    Ok(Bound::new(ptr, len, Some(sync)))
                }
            }
        )*
    };
}

cudarc_memory!(
    read: CudaSlice<T>, CudaView<'_, T>, CudaViewMut<'_, T>;
    write: CudaSlice<T>, CudaViewMut<'_, T>
);

/// Checks that a buffer of `buf` may be used on a stream of `on`.
fn same_device(buf: &Device, on: &Device) -> Result<()> {
    let (a, b) = (buf.info(), on.info());
    if a.api == b.api && a.ordinal == b.ordinal {
        Ok(())
    } else {
        Err(Error::invalid(
            "memory",
            format!(
                "a buffer of the stream's device ({} {})",
                b.api.name(),
                b.ordinal
            ),
            format!("a buffer of {} device {}", a.api.name(), a.ordinal),
        ))
    }
}

impl<T> sealed::Sealed for DeviceBuffer<T> {}
impl<T: bytemuck::Pod> DeviceMemory<T> for DeviceBuffer<T> {
    fn len(&self) -> usize {
        DeviceBuffer::len(self)
    }
    fn read_on<'g>(&'g self, stream: &'g Stream) -> Result<Bound<'g, T>> {
        same_device(self.device(), stream.device())?;
        Ok(Bound::new(self.ptr(), DeviceBuffer::len(self), None))
    }
}
impl<T: bytemuck::Pod> DeviceMemoryMut<T> for DeviceBuffer<T> {
    fn write_on<'g>(&'g mut self, stream: &'g Stream) -> Result<Bound<'g, T>> {
        same_device(self.device(), stream.device())?;
        Ok(Bound::new(self.ptr(), DeviceBuffer::len(self), None))
    }
}

// ---------------------------------------------------------------------------------------------
// The safe calls

/// An input tensor: memory and its BMHK layout `[batch, seq, heads, head_dim]` (element
/// strides; the head-dim stride must be 1).
pub struct Tensor<'a, T> {
    mem: &'a dyn DeviceMemory<T>,
    shape: [usize; 4],
    strides: [i64; 4],
}

impl<T> Clone for Tensor<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Tensor<'_, T> {}

impl<'a, T> Tensor<'a, T> {
    /// Contiguous memory of `shape` (in varlen mode `[1, total, heads, head_dim]`).
    pub fn new<M: DeviceMemory<T>>(mem: &'a M, shape: [usize; 4]) -> Self {
        Self::strided(mem, shape, contiguous_strides(shape))
    }
    /// Memory of `shape` with element `strides` (e.g. q, k and v as views of one fused qkv
    /// projection, or a `[B, H, S, D]` buffer as `strides = [H·S·D, D, S·D, 1]`).
    pub fn strided<M: DeviceMemory<T>>(mem: &'a M, shape: [usize; 4], strides: [i64; 4]) -> Self {
        Tensor {
            mem,
            shape,
            strides,
        }
    }
    /// The shape.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }
}

/// An output tensor: memory written by the call (an exclusive borrow) and its BMHK layout.
pub struct TensorMut<'a, T> {
    mem: &'a mut dyn DeviceMemoryMut<T>,
    shape: [usize; 4],
    strides: [i64; 4],
}

impl<'a, T> TensorMut<'a, T> {
    /// Contiguous memory of `shape`.
    pub fn new<M: DeviceMemoryMut<T>>(mem: &'a mut M, shape: [usize; 4]) -> Self {
        Self::strided(mem, shape, contiguous_strides(shape))
    }
    /// Memory of `shape` with element `strides` (no zero stride on a dimension longer than 1).
    pub fn strided<M: DeviceMemoryMut<T>>(
        mem: &'a mut M,
        shape: [usize; 4],
        strides: [i64; 4],
    ) -> Self {
        TensorMut {
            mem,
            shape,
            strides,
        }
    }
}

/// The gradients a backward writes: `dq` (q's shape), `dk` (k's) and `dv` (v's).
pub struct Grads<'b, T> {
    /// Gradient of q.
    pub dq: TensorMut<'b, T>,
    /// Gradient of k (summed over each kv head's query heads).
    pub dk: TensorMut<'b, T>,
    /// Gradient of v (summed likewise).
    pub dv: TensorMut<'b, T>,
}

enum BiasIn<'a, T> {
    Same(Tensor<'a, T>),
    F32(Tensor<'a, f32>),
}

struct VarlenIn<'a> {
    cu_seqlens_q: &'a dyn DeviceMemory<i32>,
    cu_seqlens_k: &'a dyn DeviceMemory<i32>,
    max_seqlen_q: usize,
    max_seqlen_k: usize,
}

/// What the forward and the backward of one call read.
struct Inputs<'a, T> {
    q: Tensor<'a, T>,
    k: Tensor<'a, T>,
    v: Tensor<'a, T>,
    /// The options without memory (mask, scale, softcap, dropout's p and host Philox, key
    /// range, splits, packing, route), on placeholder tensors; the memory is bound per launch.
    opts: Forward,
    bias: Option<BiasIn<'a, T>>,
    alibi: Option<(&'a dyn DeviceMemory<f32>, bool)>,
    varlen: Option<VarlenIn<'a>>,
    seqused_k: Option<&'a dyn DeviceMemory<i32>>,
    paged: Option<(&'a dyn DeviceMemory<i32>, usize, usize)>,
    philox: Option<(&'a dyn DeviceMemory<u64>, &'a dyn DeviceMemory<u64>)>,
}

/// Names the operand in an [`Error::InvalidArgument`] of binding it.
fn named(name: &'static str) -> impl FnOnce(Error) -> Error {
    move |e| match e {
        Error::InvalidArgument {
            what,
            expected,
            got,
        } => Error::InvalidArgument {
            what: format!("{name}: {what}"),
            expected,
            got,
        },
        other => other,
    }
}

fn read<'g, T>(
    name: &'static str,
    mem: &'g dyn DeviceMemory<T>,
    stream: &'g Stream,
) -> Result<Bound<'g, T>> {
    mem.read_on(stream).map_err(named(name))
}

fn write<'g, T>(
    name: &'static str,
    mem: &'g mut dyn DeviceMemoryMut<T>,
    stream: &'g Stream,
) -> Result<Bound<'g, T>> {
    mem.write_on(stream).map_err(named(name))
}

/// Binds an input tensor, keeping its guard.
fn bind_in<'g, T: HostElement>(
    name: &'static str,
    t: &'g Tensor<'_, T>,
    stream: &'g Stream,
    guards: &mut Vec<Guard<'g>>,
) -> Result<TensorRef> {
    let b = read(name, t.mem, stream)?;
    let r = b.strided(t.shape, t.strides);
    guards.push(b.into_guard());
    Ok(r)
}

/// Binds an output tensor, keeping its guard.
fn bind_out<'g, T: HostElement>(
    name: &'static str,
    t: &'g mut TensorMut<'_, T>,
    stream: &'g Stream,
    guards: &mut Vec<Guard<'g>>,
) -> Result<TensorRef> {
    let b = write(name, &mut *t.mem, stream)?;
    let r = b.strided(t.shape, t.strides);
    guards.push(b.into_guard());
    Ok(r)
}

impl<'a, T: HostElement> Inputs<'a, T> {
    /// The call with every input bound on `stream` (the output is a placeholder until set).
    fn bind<'g>(&'g self, stream: &'g Stream, guards: &mut Vec<Guard<'g>>) -> Result<Forward> {
        let mut call = self.opts;
        call.q = bind_in("q", &self.q, stream, guards)?;
        call.k = bind_in("k", &self.k, stream, guards)?;
        call.v = bind_in("v", &self.v, stream, guards)?;
        match &self.bias {
            None => {}
            Some(BiasIn::Same(t)) => {
                let b = read("bias", t.mem, stream)?;
                call.bias = Some(b.bias(t.shape, t.strides));
                guards.push(b.into_guard());
            }
            Some(BiasIn::F32(t)) => {
                let b = read("bias", t.mem, stream)?;
                call.bias = Some(b.bias(t.shape, t.strides));
                guards.push(b.into_guard());
            }
        }
        if let Some((mem, per_batch)) = self.alibi {
            let b = read("alibi", mem, stream)?;
            call.alibi = Some(b.alibi(per_batch));
            guards.push(b.into_guard());
        }
        if let Some(v) = &self.varlen {
            let q = read("cu_seqlens_q", v.cu_seqlens_q, stream)?;
            let k = read("cu_seqlens_k", v.cu_seqlens_k, stream)?;
            call.varlen = Some(crate::Varlen {
                cu_seqlens_q: q.i32s(),
                cu_seqlens_k: k.i32s(),
                max_seqlen_q: v.max_seqlen_q,
                max_seqlen_k: v.max_seqlen_k,
            });
            guards.push(q.into_guard());
            guards.push(k.into_guard());
        }
        if let Some(mem) = self.seqused_k {
            let b = read("seqused_k", mem, stream)?;
            call.seqused_k = Some(b.i32s());
            guards.push(b.into_guard());
        }
        if let Some((mem, max_pages, table_stride)) = self.paged {
            let b = read("block_table", mem, stream)?;
            call.paged = Some(Paged {
                block_table: b.i32s(),
                max_pages,
                table_stride,
            });
            guards.push(b.into_guard());
        }
        if let (Some((seed, offset)), Some(d)) = (self.philox, call.dropout)
            && let Philox::Device { offset: host, .. } = d.rng
        {
            let s = read("dropout seed", seed, stream)?;
            let o = read("dropout offset", offset, stream)?;
            for (what, b) in [("dropout seed", &s), ("dropout offset", &o)] {
                if b.is_empty() {
                    return Err(Error::invalid(
                        what,
                        "one u64 in device memory",
                        "0 elements",
                    ));
                }
            }
            call.dropout = Some(Dropout {
                p: d.p,
                rng: Philox::Device {
                    seed_ptr: s.ptr(),
                    offset_ptr: o.ptr(),
                    offset: host,
                },
            });
            guards.push(s.into_guard());
            guards.push(o.into_guard());
        }
        Ok(call)
    }
}

/// One attention call on device memory (cudarc's or this crate's): q, k, v and the options,
/// run forward with [`Attention::forward`] and backward with [`Attention::backward`].
///
/// The launches are safe: every address comes from memory that is borrowed for the call (so it
/// is live), of the stream's context (checked), with outputs borrowed exclusively (so they
/// overlap no input or other output), and every extent is checked against its memory's length.
/// Nothing is synchronised: results are read in stream order (e.g. cudarc's `clone_dtoh`).
///
/// The options are those of [`Forward`]; see the [module docs](self) for an example.
pub struct Attention<'a, T> {
    inputs: Inputs<'a, T>,
    workspace: Option<&'a mut dyn DeviceMemoryMut<u8>>,
}

impl<'a, T: HostElement> Attention<'a, T> {
    /// Attention of `q [B,Sq,Hq,D]` over `k [B,Sk,Hk,D]`, `v [B,Sk,Hk,Dv]`, with no mask and the
    /// default scale `1/sqrt(D)`.
    pub fn new(q: Tensor<'a, T>, k: Tensor<'a, T>, v: Tensor<'a, T>) -> Self {
        let placeholder = TensorRef::contiguous(0, T::DTYPE, [0; 4]);
        Attention {
            inputs: Inputs {
                q,
                k,
                v,
                opts: Forward::new(placeholder, placeholder, placeholder, placeholder),
                bias: None,
                alibi: None,
                varlen: None,
                seqused_k: None,
                paged: None,
                philox: None,
            },
            workspace: None,
        }
    }
    fn opt(mut self, f: impl FnOnce(Forward) -> Forward) -> Self {
        self.inputs.opts = f(self.inputs.opts);
        self
    }
    /// Softmax scale (default `1/sqrt(D)`); [`Forward::scale`].
    pub fn scale(self, scale: f32) -> Self {
        self.opt(|c| c.scale(scale))
    }
    /// The mask; [`Forward::mask`].
    pub fn mask(self, mask: Mask) -> Self {
        self.opt(|c| c.mask(mask))
    }
    /// Softcap (0 = off); [`Forward::softcap`].
    pub fn softcap(self, cap: f32) -> Self {
        self.opt(|c| c.softcap(cap))
    }
    /// Dropout with probability `p` and the Philox key `seed` and counter base `offset` passed
    /// by value ([`Philox::Host`]).
    pub fn dropout(mut self, p: f64, seed: u64, offset: u64) -> Self {
        self.inputs.philox = None;
        self.opt(|c| {
            c.dropout(Dropout {
                p,
                rng: Philox::Host { seed, offset },
            })
        })
    }
    /// Dropout with the Philox key and counter base read by the kernel from device memory
    /// (one u64 each; CUDA-graph safe), [`Philox::Device`].
    pub fn dropout_device<S: DeviceMemory<u64>, O: DeviceMemory<u64>>(
        mut self,
        p: f64,
        seed: &'a S,
        offset_ptr: &'a O,
        offset: u64,
    ) -> Self {
        self.inputs.philox = Some((seed, offset_ptr));
        self.opt(|c| {
            c.dropout(Dropout {
                p,
                rng: Philox::Device {
                    seed_ptr: 0,
                    offset_ptr: 0,
                    offset,
                },
            })
        })
    }
    /// An additive bias `[nb, Hq, max_sq, max_sk]` in q's dtype (any strides, 0 broadcasts);
    /// [`Forward::bias`].
    pub fn bias(mut self, bias: Tensor<'a, T>) -> Self {
        self.inputs.bias = Some(BiasIn::Same(bias));
        self
    }
    /// An additive f32 bias; as [`Attention::bias`].
    pub fn bias_f32(mut self, bias: Tensor<'a, f32>) -> Self {
        self.inputs.bias = Some(BiasIn::F32(bias));
        self
    }
    /// ALiBi slopes, f32 `[Hq]` or `[nb, Hq]` when `per_batch`; [`Forward::alibi`].
    pub fn alibi<M: DeviceMemory<f32>>(mut self, slopes: &'a M, per_batch: bool) -> Self {
        self.inputs.alibi = Some((slopes, per_batch));
        self
    }
    /// Varlen mode: q/k/v have batch 1 and hold the sequences back to back, delimited by the
    /// i32 `cu_seqlens_q` / `cu_seqlens_k` (`[nseq + 1]`); [`Forward::varlen`].
    pub fn varlen<Q: DeviceMemory<i32>, K: DeviceMemory<i32>>(
        mut self,
        cu_seqlens_q: &'a Q,
        cu_seqlens_k: &'a K,
        max_seqlen_q: usize,
        max_seqlen_k: usize,
    ) -> Self {
        self.inputs.varlen = Some(VarlenIn {
            cu_seqlens_q,
            cu_seqlens_k,
            max_seqlen_q,
            max_seqlen_k,
        });
        self
    }
    /// Sequence `b` uses only its first `seqused_k[b]` keys (i32 `[nb]`); [`Forward::seqused_k`].
    pub fn seqused_k<M: DeviceMemory<i32>>(mut self, seqused_k: &'a M) -> Self {
        self.inputs.seqused_k = Some(seqused_k);
        self
    }
    /// k and v are pages `[num_pages, page_size, Hk, D|Dv]` of a paged KV cache addressed by the
    /// i32 `block_table [nb, table_stride]`; see [`Paged`].
    pub fn paged<M: DeviceMemory<i32>>(
        mut self,
        block_table: &'a M,
        max_pages: usize,
        table_stride: usize,
    ) -> Self {
        self.inputs.paged = Some((block_table, max_pages, table_stride));
        self
    }
    /// Partial attention over keys `lo..hi`; [`Forward::key_range`].
    pub fn key_range(self, lo: usize, hi: usize) -> Self {
        self.opt(|c| c.key_range(lo, hi))
    }
    /// Split-KV; [`Forward::splits`].
    pub fn splits(self, splits: Splits) -> Self {
        self.opt(|c| c.splits(splits))
    }
    /// GQA packing; [`Forward::pack_gqa`].
    pub fn pack_gqa(self, packing: Packing) -> Self {
        self.opt(|c| c.pack_gqa(packing))
    }
    /// Which kernels serve the forward; [`Forward::route`].
    pub fn route(self, route: Route) -> Self {
        self.opt(|c| c.route(route))
    }
    /// Memory for split-KV's partials (at least [`crate::Plan::workspace_bytes`]). Without it,
    /// a split forward allocates its partials on the stream for the call (with cudarc,
    /// stream-ordered; with a stream of this crate, freed synchronously).
    pub fn workspace<M: DeviceMemoryMut<u8>>(mut self, workspace: &'a mut M) -> Self {
        self.workspace = Some(workspace);
        self
    }

    /// The query shape.
    fn lse_shape(&self) -> [usize; 3] {
        let [b, sq, hq, _] = self.inputs.q.shape;
        [b, hq, sq]
    }

    /// Runs the forward on `stream` (asynchronous): writes `out [B,Sq,Hq,Dv]` and, when given,
    /// the contiguous f32 `lse [B,Hq,Sq]` (which the backward needs). Every argument is checked
    /// before anything is launched.
    pub fn forward(
        &mut self,
        stream: &Stream,
        mut out: TensorMut<'_, T>,
        lse: Option<&mut dyn DeviceMemoryMut<f32>>,
    ) -> Result<()> {
        let lse_shape = self.lse_shape();
        // Declared before the guards, which may borrow it.
        let mut scratch: Option<CudaSlice<u8>> = None;
        let mut guards = Vec::new();
        let mut call = self.inputs.bind(stream, &mut guards)?;
        call.out = bind_out("out", &mut out, stream, &mut guards)?;
        if let Some(lse) = lse {
            let b = write("lse", lse, stream)?;
            call.lse = Some(b.lse(lse_shape));
            guards.push(b.into_guard());
        }
        if let Some(ws) = self.workspace.as_deref_mut() {
            let b = write("workspace", ws, stream)?;
            call.workspace = Some(b.workspace());
            guards.push(b.into_guard());
        } else if let Some(cs) = stream.cudarc() {
            let units = stream.device().info().multiprocessors;
            let bytes = call
                .plan_on(stream.device().tile_family()?, units)?
                .workspace_bytes;
            if bytes > 0 {
                // SAFETY: the forward writes the partials before the merge reads them; nothing
                // reads the uninitialised bytes.
                let buf = unsafe { cs.alloc::<u8>(bytes) }.map_err(drv("cuMemAllocAsync"))?;
                let b = write("workspace", scratch.insert(buf), stream)?;
                call.workspace = Some(b.workspace());
                guards.push(b.into_guard());
            }
        }
        // SAFETY: every address in `call` comes from a `Bound` in `guards`: memory borrowed for
        // this call (alive until the guards drop, after the launch; a cudarc slice freed later
        // waits for the recorded events, and `scratch` is freed in stream order), of the
        // stream's context or device (checked when binding). The outputs (`out`, `lse`, the
        // workspace) are exclusive borrows, so they overlap no input or each other. The plan
        // checks every extent against the bound lengths.
        unsafe { call.launch(stream) }
    }

    /// Runs the backward on `stream` (asynchronous): the gradients of the forward that wrote
    /// `out` and the contiguous `lse` with these inputs and options, for the upstream gradient
    /// `dout` (`out`'s shape), into `grads`. Deterministic; `delta` (f32 in lse's layout) is
    /// allocated for the call (stream-ordered with cudarc).
    pub fn backward(
        &self,
        stream: &Stream,
        out: Tensor<'_, T>,
        lse: &dyn DeviceMemory<f32>,
        dout: Tensor<'_, T>,
        mut grads: Grads<'_, T>,
    ) -> Result<()> {
        // Declared before the guards, which may borrow it.
        let mut delta: Option<CudaSlice<f32>> = None;
        let mut guards = Vec::new();
        let mut call = self.inputs.bind(stream, &mut guards)?;
        call.out = bind_in("out", &out, stream, &mut guards)?;
        let l = read("lse", lse, stream)?;
        call = call.lse(l.lse(self.lse_shape()));
        guards.push(l.into_guard());
        let dout = bind_in("dout", &dout, stream, &mut guards)?;
        let dq = bind_out("dq", &mut grads.dq, stream, &mut guards)?;
        let dk = bind_out("dk", &mut grads.dk, stream, &mut guards)?;
        let dv = bind_out("dv", &mut grads.dv, stream, &mut guards)?;
        let mut bwd = Backward::new(call, dout, dq, dk, dv);
        if let Some(cs) = stream.cudarc() {
            let plan = bwd.plan(stream.device().tile_family()?)?;
            if plan.pre.is_some() && plan.delta_bytes > 0 {
                // SAFETY: the `pre` kernel writes every element of `delta` before the `dq` and
                // `dkdv` kernels read it.
                let buf = unsafe { cs.alloc::<f32>(plan.delta_bytes.div_ceil(4)) }
                    .map_err(drv("cuMemAllocAsync"))?;
                let b = write("delta", delta.insert(buf), stream)?;
                bwd = bwd.delta_workspace(b.ptr(), b.len() * 4);
                guards.push(b.into_guard());
            }
        }
        // SAFETY: as in `forward`: every address comes from a live `Bound` in `guards` of the
        // stream's context or device; the gradients and `delta` are exclusive borrows, so they
        // overlap no input or each other; the plan checks every extent.
        unsafe { bwd.launch(stream) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ContextFacts {
        ContextFacts {
            api: Api::Cuda,
            ordinal: 1,
            primary: Some((1, 0xc0ffee)),
            ctx_is_primary: true,
            ctx_ordinal: 1,
            ctx_device: 1,
            ctx_handle: 0xc0ffee,
        }
    }

    fn rejected(f: ContextFacts, needle: &str) {
        match check_context(f) {
            Err(Error::InvalidArgument { what, got, .. }) => {
                assert_eq!(what, "cudarc context");
                assert!(got.contains(needle), "{got:?} should mention {needle:?}");
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn the_primary_context_of_the_device_is_accepted() {
        assert_eq!(check_context(facts()), Ok(()));
    }

    #[test]
    fn other_contexts_are_typed_errors() {
        rejected(
            ContextFacts {
                ctx_is_primary: false,
                ..facts()
            },
            "non-primary",
        );
        rejected(
            ContextFacts {
                ctx_ordinal: 0,
                ctx_device: 0,
                ..facts()
            },
            "device 0",
        );
        // A primary-flagged context that is not the device's primary context (e.g. one
        // wrapped by hand) or of another CUdevice.
        rejected(
            ContextFacts {
                ctx_handle: 0xbad,
                ..facts()
            },
            "0xbad",
        );
        rejected(
            ContextFacts {
                ctx_device: 7,
                ..facts()
            },
            "0xc0ffee",
        );
        rejected(
            ContextFacts {
                api: Api::Hip,
                primary: None,
                ..facts()
            },
            "HIP",
        );
    }

    #[test]
    fn bound_refs_carry_address_length_dtype_and_layout() {
        let b: Bound<'_, half::bf16> = Bound::new(0x1000, 2 * 3 * 4 * 8, None);
        let t = b.tensor([2, 3, 4, 8]);
        assert_eq!(
            t,
            TensorRef {
                len: 2 * 3 * 4 * 8,
                ..TensorRef::contiguous(0x1000, crate::DType::Bf16, [2, 3, 4, 8])
            }
        );
        // A view with more elements than the shape needs keeps its own length.
        let b: Bound<'_, half::f16> = Bound::new(0x2000, 1000, None);
        let t = b.strided([1, 5, 2, 8], [80, 16, 8, 1]);
        assert_eq!((t.ptr, t.len, t.dtype), (0x2000, 1000, crate::DType::F16));
        assert_eq!(t.strides, [80, 16, 8, 1]);
        let l: Bound<'_, f32> = Bound::new(0x3000, 24, None);
        assert_eq!(l.lse([2, 3, 4]), LseRef::contiguous(0x3000, [2, 3, 4]));
        assert_eq!(l.partial_lse([2, 1, 3, 4]).strides, [12, 12, 4, 1]);
        assert_eq!(
            l.alibi(true),
            AlibiRef {
                ptr: 0x3000,
                len: 24,
                per_batch: true
            }
        );
        let i: Bound<'_, i32> = Bound::new(0x4000, 3, None);
        assert_eq!(
            i.i32s(),
            I32Ref {
                ptr: 0x4000,
                len: 3
            }
        );
        let m: Bound<'_, u8> = Bound::new(0x5000, 64, None);
        assert_eq!(
            m.dropout_mask([1, 2, 4, 8]),
            MaskRef::contiguous(0x5000, [1, 2, 4, 8])
        );
        assert_eq!(
            m.workspace(),
            Workspace {
                ptr: 0x5000,
                bytes: 64
            }
        );
        let p: Bound<'_, f32> = Bound::new(0x6000, 2 * 3 * 4 * 8, None);
        let parts = p.partials([2, 1, 3, 4, 8]);
        assert_eq!(parts.strides, [96, 96, 32, 8, 1]);
        assert_eq!(parts.dtype, crate::DType::F32);
    }

    #[test]
    fn contiguous_strides_match_the_crate_layout() {
        for shape in [[2, 3, 4, 8], [1, 0, 4, 8], [0, 0, 0, 0], [7, 1, 1, 1]] {
            assert_eq!(
                contiguous_strides(shape),
                TensorRef::contiguous(0, crate::DType::F16, shape).strides,
                "{shape:?}"
            );
        }
    }

    #[test]
    fn operand_names_prefix_binding_errors() {
        let e = named("dq")(Error::invalid("memory", "x", "y"));
        assert!(matches!(e, Error::InvalidArgument { ref what, .. } if what == "dq: memory"));
        let e = named("dq")(Error::unsupported("z"));
        assert_eq!(e, Error::unsupported("z"));
    }

    /// A cudarc context and stream, or `None` (skipped) without a CUDA device.
    fn cuda_or_skip(test: &str) -> Option<Arc<CudaContext>> {
        let ok = crate::driver::cuda::device_count().is_ok_and(|n| n > 0);
        if !ok {
            if std::env::var("ATTN_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("{test}: ATTN_REQUIRE_GPU=1 but no CUDA device");
            }
            eprintln!("skipped: {test}: no CUDA device");
            return None;
        }
        CudaContext::new(0).ok()
    }

    #[test]
    fn views_and_owned_buffers_bind_their_own_address_and_length_on_a_gpu() {
        let Some(ctx) = cuda_or_skip("views_bind_their_own_address") else {
            return;
        };
        let dev = Device::from_cudarc(&ctx).expect("primary context");
        let stream = ctx.new_stream().expect("stream");
        let on = dev.cudarc_stream(&stream).expect("stream");
        let mut buf = stream.alloc_zeros::<half::bf16>(100).expect("alloc");
        let base = buf.read_on(&on).expect("bind").ptr();
        let view = buf.slice(10..30);
        let b = view.read_on(&on).expect("bind view");
        assert_eq!((b.ptr(), b.len()), (base + 20, 20));
        drop(b);
        let mut tail = buf.slice_mut(40..);
        let b = tail.write_on(&on).expect("bind view_mut");
        assert_eq!((b.ptr(), b.len()), (base + 80, 60));
        let t = b.tensor([1, 60, 1, 1]);
        assert_eq!((t.ptr, t.len, t.dtype), (base + 80, 60, crate::DType::Bf16));
        drop(b);
        // This crate's buffers work on a cudarc stream of the same device.
        let mut own = dev.alloc::<f32>(8).expect("alloc");
        let p = own.ptr();
        assert_eq!(own.write_on(&on).expect("bind").ptr(), p);
    }

    #[test]
    fn non_primary_contexts_and_foreign_streams_are_rejected_on_a_gpu() {
        let Some(ctx) = cuda_or_skip("non_primary_contexts_are_rejected") else {
            return;
        };
        let dev = Device::from_cudarc(&ctx).expect("primary context");
        let stream = ctx.new_stream().expect("stream");
        let on = dev
            .cudarc_stream(&stream)
            .expect("stream of the primary context");
        assert_eq!(on.raw(), stream.cu_stream() as u64);
        assert!(on.cudarc().is_some_and(|s| Arc::ptr_eq(s, &stream)));
        // cudarc memory on a stream of this crate: a typed error.
        let q = stream.alloc_zeros::<half::f16>(64).expect("alloc");
        let plain = dev.default_stream();
        assert!(matches!(
            q.read_on(&plain),
            Err(Error::InvalidArgument { ref what, .. }) if what == "stream"
        ));
        let other = CudaContext::new_non_primary(0, 0).expect("non-primary context");
        assert!(matches!(
            Device::from_cudarc(&other),
            Err(Error::InvalidArgument { .. })
        ));
        let foreign = other.new_stream().expect("stream");
        assert!(matches!(
            dev.cudarc_stream(&foreign),
            Err(Error::InvalidArgument { .. })
        ));
    }
}
