//! Host side of the attention kernels: devices, memory, streams and the forward call, for CUDA
//! and HIP GPUs, on stable Rust with no GPU toolkit at build time.
//!
//! | concept | type |
//! |---|---|
//! | a GPU (CUDA or HIP, chosen at run time) | [`Device`] (`Device::best()`) |
//! | ordered work | [`Stream`] |
//! | memory this crate owns | [`DeviceBuffer`] |
//! | memory the caller owns | [`TensorRef`], [`LseRef`] (raw device addresses + shape + strides) |
//! | the forward pass | [`Forward`] (builder; [`Forward::plan`] validates, `launch` runs) |
//! | the backward pass | [`Backward`] of a `Forward` (`dq`, `dk`, `dv`, `dbias`; deterministic or fused) |
//! | its optional features | [`Varlen`] + [`I32Ref`] (varlen, `seqused_k`), [`BiasRef`], [`AlibiRef`], softcap, [`Dropout`] + [`Philox`], [`MaskRef`] (dropout mask) |
//! | inference ([`decode`]) | [`Paged`] (paged KV cache), [`Splits`] / [`Packing`] / [`Route`] (split-KV, GQA packing), [`Workspace`], key ranges and [`Merge`] (partial attention) |
//! | errors | [`Error`]: `LibraryNotFound`, `Driver`, `NoDevice`, `InvalidArgument`, `Unsupported` |
//!
//! The kernels are prebuilt by `cargo xtask build-kernels` and embedded; the runtime libraries
//! (`libcuda`, `libamdhip64`) are opened when a device is first asked for, and their absence is
//! an error, never a panic.
//!
//! ```no_run
//! use attn_host::{Device, FwdOptions, Mask, Align, forward};
//! # fn main() -> attn_host::Result<()> {
//! let dev = Device::best()?;
//! let stream = dev.default_stream();
//! let (b, s, h, d) = (2, 1024, 16, 128);
//! let data: Vec<half::bf16> = (0..b * s * h * d).map(|i| half::bf16::from_f32((i % 7) as f32 * 0.1)).collect();
//! let q = dev.clone_htod(&data)?;
//! let k = dev.clone_htod(&data)?;
//! let v = dev.clone_htod(&data)?;
//! let shape = [b, s, h, d];
//! let opts = FwdOptions { mask: Mask::Causal(Align::BottomRight), ..Default::default() };
//! let (out, lse) = forward(&stream, (&q, shape), (&k, shape), (&v, shape), &opts)?;
//! let out = out.to_host(&stream)?;
//! # Ok(()) }
//! ```
pub mod bwd;
pub mod ck;
pub mod code_objects;
pub mod decode;
pub mod device;
pub mod driver;
pub mod error;
pub mod graph;
#[cfg(feature = "cudarc")]
pub mod interop;
pub mod ops;
pub mod rng;

pub use attn_abi::{DType, KernelId};
pub use bwd::{Backward, BwdLaunch, BwdPlan, backward};
pub use ck::{CkTensor, MemEffBackward, MemEffForward, mem_eff_backward_ck, mem_eff_forward_ck};
pub use decode::{
    Merge, MergePlan, Packing, Paged, PartialLseRef, PartialsRef, Route, Splits, Workspace,
};
pub use device::{Device, DeviceBuffer, Stream};
pub use driver::{Api, DeviceInfo};
pub use error::{Error, Result};
pub use graph::Graph;
pub use ops::{
    AlibiRef, Align, BiasRef, DROPOUT_MASK_THREADS, Dropout, Forward, FwdOptions, HostElement,
    I32Ref, LseRef, Mask, MaskRef, Philox, Plan, TensorRef, Varlen, abi_echo, forward,
};
pub use rng::{DEFAULT_SEED, PhiloxGenerator, PhiloxState};
