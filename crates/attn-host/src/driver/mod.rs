//! One device API over two runtimes.
//!
//! [`Backend`] is the narrow, handle-based interface each runtime implements (`cuda.rs` through
//! cudarc's thin `result` layer, `hip.rs` through `hip-sys`); everything above it — buffers,
//! streams, module caching, kernel launch — is written once in terms of it.
//!
//! Handles (`Ptr`, `ModuleHandle`, …) are the runtime's own pointers carried as `u64`.
use crate::error::Result;
use attn_abi::{KERNARG_WORDS, KernArgs};
use std::ffi::c_void;

pub mod cuda;
pub mod hip;

/// Which runtime a device belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Api {
    /// NVIDIA CUDA driver API.
    Cuda,
    /// AMD HIP runtime.
    Hip,
}

impl Api {
    /// `"CUDA"` or `"HIP"`.
    pub fn name(self) -> &'static str {
        match self {
            Api::Cuda => "CUDA",
            Api::Hip => "HIP",
        }
    }
}

/// What a device is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The runtime.
    pub api: Api,
    /// Device ordinal within its runtime.
    pub ordinal: u32,
    /// Marketing name, e.g. `"NVIDIA H100 80GB HBM3"`.
    pub name: String,
    /// Architecture: `"sm_90"` (from the compute capability) or the HIP `gcnArchName`,
    /// e.g. `"gfx942:sramecc+:xnack-"`.
    pub arch: String,
    /// CUDA compute capability `(major, minor)`; `(0, 0)` on HIP.
    pub compute_capability: (u32, u32),
    /// Multiprocessors (SMs / CUs).
    pub multiprocessors: u32,
    /// Device memory in bytes.
    pub total_memory: u64,
    /// Largest dynamic shared memory (LDS) a block may opt into, in bytes.
    pub max_shared_per_block: u32,
}

/// The `kernelParams` array both runtimes' launch calls take for an argument image: pointer `i`
/// points at word `i` (each kernel parameter is one `u64`). The runtimes only read through it.
pub(crate) fn kernel_param_pointers(args: &KernArgs) -> [*mut c_void; KERNARG_WORDS] {
    std::array::from_fn(|i| (&args.0[i] as *const u64).cast_mut().cast::<c_void>())
}

/// A device address.
pub type Ptr = u64;
/// A loaded code object.
pub type ModuleHandle = u64;
/// A kernel function in a loaded module.
pub type FunctionHandle = u64;
/// A stream (0 is the runtime's default stream).
pub type StreamHandle = u64;
/// An event.
pub type EventHandle = u64;
/// An instantiated (launchable) graph of captured stream work.
pub type GraphHandle = u64;

/// The runtime interface. Every method makes the device current on the calling thread first
/// where the runtime needs that (CUDA contexts), so callers may use any thread.
///
/// Methods are `unsafe` where they read or write device memory through raw handles.
pub trait Backend: Send + Sync {
    /// What this device is.
    fn info(&self) -> &DeviceInfo;
    /// Allocates `bytes` of device memory (at least 256-byte aligned).
    fn malloc(&self, bytes: usize) -> Result<Ptr>;
    /// Frees memory from [`Backend::malloc`].
    ///
    /// # Safety
    /// `ptr` came from `malloc` on this backend and no pending work uses it.
    unsafe fn free(&self, ptr: Ptr) -> Result<()>;
    /// Copies `bytes` from host `src` to device `dst`, ordered on `stream`, and waits for it.
    ///
    /// # Safety
    /// `src` is readable for `bytes`; `dst` is device memory writable for `bytes`.
    unsafe fn htod(
        &self,
        dst: Ptr,
        src: *const u8,
        bytes: usize,
        stream: StreamHandle,
    ) -> Result<()>;
    /// Copies `bytes` from device `src` to host `dst`, ordered on `stream`, and waits for it.
    ///
    /// # Safety
    /// `dst` is writable for `bytes`; `src` is device memory readable for `bytes`.
    unsafe fn dtoh(&self, dst: *mut u8, src: Ptr, bytes: usize, stream: StreamHandle)
    -> Result<()>;
    /// Fills `bytes` of device memory with `value`, ordered on `stream` (asynchronous).
    ///
    /// # Safety
    /// `dst` is device memory writable for `bytes`.
    unsafe fn memset_d8(
        &self,
        dst: Ptr,
        value: u8,
        bytes: usize,
        stream: StreamHandle,
    ) -> Result<()>;
    /// Loads a code object: a cubin or NUL-terminated PTX (CUDA) or an AMDGPU ELF (HIP).
    fn load_module(&self, image: &[u8]) -> Result<ModuleHandle>;
    /// Looks up a kernel by symbol name.
    fn get_function(&self, module: ModuleHandle, name: &str) -> Result<FunctionHandle>;
    /// Allows `func` to use up to `bytes` of dynamic shared memory (CUDA needs this above 48 KiB).
    fn set_max_dynamic_shared(&self, func: FunctionHandle, bytes: u32) -> Result<()>;
    /// Launches `func` asynchronously on `stream` with a 256-byte argument image.
    ///
    /// # Safety
    /// `args` must be valid parameters for `func`: every device address in it must be valid for
    /// the accesses the kernel makes.
    unsafe fn launch(
        &self,
        func: FunctionHandle,
        grid: [u32; 3],
        block: [u32; 3],
        shared_bytes: u32,
        stream: StreamHandle,
        args: &KernArgs,
    ) -> Result<()>;
    /// Creates a non-default stream.
    fn stream_create(&self) -> Result<StreamHandle>;
    /// Destroys a stream from [`Backend::stream_create`].
    ///
    /// # Safety
    /// `stream` came from `stream_create` on this backend and is not used afterwards.
    unsafe fn stream_destroy(&self, stream: StreamHandle) -> Result<()>;
    /// Waits until all work on `stream` is done; reports asynchronous launch failures.
    fn stream_synchronize(&self, stream: StreamHandle) -> Result<()>;
    /// Creates an event that records time.
    fn event_create(&self) -> Result<EventHandle>;
    /// Records `event` on `stream`.
    fn event_record(&self, event: EventHandle, stream: StreamHandle) -> Result<()>;
    /// Milliseconds between two recorded events (waits for `end`).
    fn event_elapsed_ms(&self, start: EventHandle, end: EventHandle) -> Result<f32>;
    /// Destroys an event.
    ///
    /// # Safety
    /// `event` came from `event_create` on this backend and is not used afterwards.
    unsafe fn event_destroy(&self, event: EventHandle) -> Result<()>;
    /// Starts capturing the work enqueued on `stream` into a graph (relaxed mode: other
    /// threads may keep making unsafe calls).
    ///
    /// # Safety
    /// `stream` is a non-default stream of this device, not already capturing.
    unsafe fn capture_begin(&self, stream: StreamHandle) -> Result<()>;
    /// Ends the capture begun on `stream` and instantiates the graph.
    ///
    /// # Safety
    /// `stream` is capturing (begun by [`Backend::capture_begin`]).
    unsafe fn capture_end(&self, stream: StreamHandle) -> Result<GraphHandle>;
    /// Enqueues one replay of `graph` on `stream`.
    ///
    /// # Safety
    /// `graph` came from `capture_end` on this backend and is live; every device address the
    /// captured work uses is still valid.
    unsafe fn graph_launch(&self, graph: GraphHandle, stream: StreamHandle) -> Result<()>;
    /// Destroys an instantiated graph.
    ///
    /// # Safety
    /// `graph` came from `capture_end` on this backend and is not used afterwards.
    unsafe fn graph_destroy(&self, graph: GraphHandle) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_params_point_at_each_word_in_order() {
        let args = KernArgs(std::array::from_fn(|i| 0x1000 + i as u64));
        let params = kernel_param_pointers(&args);
        let base = args.0.as_ptr() as usize;
        for (i, p) in params.iter().enumerate() {
            assert_eq!(*p as usize, base + 8 * i, "word {i}");
            // SAFETY: `p` points at word `i` of `args`, which is alive and 8-aligned.
            assert_eq!(unsafe { p.cast::<u64>().read() }, 0x1000 + i as u64);
        }
        assert_eq!(params.len() * 8, size_of::<KernArgs>());
        assert_eq!(align_of::<KernArgs>(), 8);
    }
}
