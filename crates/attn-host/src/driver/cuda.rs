//! CUDA backend: the driver API through cudarc's thin `result` layer, with `libcuda` opened at
//! run time (`dynamic-loading`), so nothing CUDA is needed to build.
//!
//! cudarc panics when a library or symbol is missing; we check for the library first and map
//! that to [`Error::LibraryNotFound`], and every call's status to [`Error::Driver`].
use super::{
    Api, Backend, DeviceInfo, EventHandle, FunctionHandle, GraphHandle, ModuleHandle, Ptr,
    StreamHandle, kernel_param_pointers,
};
use crate::error::{Error, Result};
use attn_abi::KernArgs;
use cudarc::driver::result::{self as cu, DriverError};
use cudarc::driver::sys;
use std::ffi::{CString, c_void};

/// Library names cudarc tries (reported when none can be opened).
const LIB_NAMES: &[&str] = &["libcuda.so", "libcuda.so.1", "nvcuda.dll"];

/// Maps a driver status of `call` to [`Error::Driver`].
pub(crate) fn drv(call: &'static str) -> impl FnOnce(DriverError) -> Error {
    move |e| Error::Driver {
        api: "CUDA",
        call,
        code: e.0 as i32,
        name: e
            .error_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

/// Opens the driver library and initialises it, or says why not.
fn init() -> Result<()> {
    // SAFETY: only tries to dlopen the library names; no symbol is called.
    if !unsafe { sys::is_culib_present() } {
        return Err(Error::LibraryNotFound {
            api: "CUDA",
            tried: LIB_NAMES.iter().map(|s| s.to_string()).collect(),
        });
    }
    cu::init().map_err(drv("cuInit"))
}

/// Runs `f`, turning a panic inside cudarc (it panics when the driver lacks a symbol it expects,
/// e.g. an older `libcuda`) into [`Error::LibraryNotFound`] with the panic's message.
fn guarded<T>(f: impl FnOnce() -> Result<T> + std::panic::UnwindSafe) -> Result<T> {
    std::panic::catch_unwind(f).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unusable CUDA driver library".to_string());
        Err(Error::LibraryNotFound {
            api: "CUDA",
            tried: vec![msg],
        })
    })
}

/// Number of CUDA devices, or why none can be used.
pub fn device_count() -> Result<u32> {
    guarded(|| {
        init()?;
        Ok(cu::device::get_count().map_err(drv("cuDeviceGetCount"))? as u32)
    })
}

/// One CUDA device with its retained primary context.
#[derive(Debug)]
pub struct CudaDevice {
    info: DeviceInfo,
    ctx: sys::CUcontext,
    dev: sys::CUdevice,
}

// SAFETY: a CUDA context handle may be used from any thread once made current there, which
// every method does first (`bind`).
unsafe impl Send for CudaDevice {}
// SAFETY: as above; the driver API is thread-safe.
unsafe impl Sync for CudaDevice {}

impl CudaDevice {
    /// Opens device `ordinal`.
    pub fn new(ordinal: u32) -> Result<Self> {
        guarded(|| Self::open(ordinal))
    }

    fn open(ordinal: u32) -> Result<Self> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(Error::NoDevice {
                reason: format!("CUDA device {ordinal} requested, {count} present"),
            });
        }
        let dev = cu::device::get(ordinal as i32).map_err(drv("cuDeviceGet"))?;
        // SAFETY: `dev` is a valid device handle from cuDeviceGet.
        let ctx =
            unsafe { cu::primary_ctx::retain(dev) }.map_err(drv("cuDevicePrimaryCtxRetain"))?;
        let attr = |a| {
            // SAFETY: `dev` is valid and `a` is a defined attribute.
            unsafe { cu::device::get_attribute(dev, a) }.map_err(drv("cuDeviceGetAttribute"))
        };
        use sys::CUdevice_attribute_enum as A;
        let major = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)? as u32;
        let minor = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)? as u32;
        let info = DeviceInfo {
            api: Api::Cuda,
            ordinal,
            name: cu::device::get_name(dev).map_err(drv("cuDeviceGetName"))?,
            arch: format!("sm_{major}{minor}"),
            compute_capability: (major, minor),
            multiprocessors: attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32,
            // SAFETY: `dev` is valid.
            total_memory: unsafe { cu::device::total_mem(dev) }.map_err(drv("cuDeviceTotalMem"))?
                as u64,
            max_shared_per_block: attr(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?
                as u32,
        };
        Ok(CudaDevice { info, ctx, dev })
    }

    /// Makes this device's context current on the calling thread.
    fn bind(&self) -> Result<()> {
        // SAFETY: `ctx` is the retained primary context of this device.
        unsafe { cu::ctx::set_current(self.ctx) }.map_err(drv("cuCtxSetCurrent"))
    }
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        // SAFETY: balances the retain in `new`; the device handle is valid.
        let _ = unsafe { cu::primary_ctx::release(self.dev) };
    }
}

impl Backend for CudaDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn malloc(&self, bytes: usize) -> Result<Ptr> {
        self.bind()?;
        // SAFETY: plain allocation in the current context (at least 256-byte aligned).
        unsafe { cu::malloc_sync(bytes.max(1)) }.map_err(drv("cuMemAlloc"))
    }

    unsafe fn free(&self, ptr: Ptr) -> Result<()> {
        self.bind()?;
        // SAFETY: the caller guarantees `ptr` came from `malloc` and is unused.
        unsafe { cu::free_sync(ptr) }.map_err(drv("cuMemFree"))
    }

    unsafe fn htod(
        &self,
        dst: Ptr,
        src: *const u8,
        bytes: usize,
        stream: StreamHandle,
    ) -> Result<()> {
        self.bind()?;
        // SAFETY: the caller guarantees `src` is readable and `dst` writable for `bytes`; we wait
        // for the copy before returning, so `src` outlives it.
        unsafe {
            let host = std::slice::from_raw_parts(src, bytes);
            cu::memcpy_htod_async(dst, host, stream as sys::CUstream)
                .map_err(drv("cuMemcpyHtoDAsync"))?;
            cu::stream::synchronize(stream as sys::CUstream).map_err(drv("cuStreamSynchronize"))
        }
    }

    unsafe fn dtoh(
        &self,
        dst: *mut u8,
        src: Ptr,
        bytes: usize,
        stream: StreamHandle,
    ) -> Result<()> {
        self.bind()?;
        // SAFETY: the caller guarantees `dst` is writable and `src` readable for `bytes`; we wait
        // for the copy before returning.
        unsafe {
            let host = std::slice::from_raw_parts_mut(dst, bytes);
            cu::memcpy_dtoh_async(host, src, stream as sys::CUstream)
                .map_err(drv("cuMemcpyDtoHAsync"))?;
            cu::stream::synchronize(stream as sys::CUstream).map_err(drv("cuStreamSynchronize"))
        }
    }

    unsafe fn memset_d8(
        &self,
        dst: Ptr,
        value: u8,
        bytes: usize,
        stream: StreamHandle,
    ) -> Result<()> {
        self.bind()?;
        // SAFETY: the caller guarantees `dst` is writable for `bytes`.
        unsafe { cu::memset_d8_async(dst, value, bytes, stream as sys::CUstream) }
            .map_err(drv("cuMemsetD8Async"))
    }

    fn load_module(&self, image: &[u8]) -> Result<ModuleHandle> {
        self.bind()?;
        // cuModuleLoadData reads PTX as a C string: make sure it is terminated.
        let mut owned;
        let image = if image.starts_with(b"\x7fELF") || image.last() == Some(&0) {
            image
        } else {
            owned = image.to_vec();
            owned.push(0);
            &owned[..]
        };
        // SAFETY: `image` is a complete cubin or NUL-terminated PTX that outlives the call.
        let m = unsafe { cu::module::load_data(image.as_ptr() as *const c_void) }
            .map_err(drv("cuModuleLoadData"))?;
        Ok(m as ModuleHandle)
    }

    fn get_function(&self, module: ModuleHandle, name: &str) -> Result<FunctionHandle> {
        self.bind()?;
        let cname =
            CString::new(name).map_err(|_| Error::invalid("kernel name", "no NUL", name))?;
        // SAFETY: `module` is a loaded module of this context.
        let f = unsafe { cu::module::get_function(module as sys::CUmodule, cname) }
            .map_err(drv("cuModuleGetFunction"))?;
        Ok(f as FunctionHandle)
    }

    fn set_max_dynamic_shared(&self, func: FunctionHandle, bytes: u32) -> Result<()> {
        self.bind()?;
        // SAFETY: `func` is a function of a loaded module.
        unsafe {
            cu::function::set_function_attribute(
                func as sys::CUfunction,
                sys::CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                bytes as i32,
            )
        }
        .map_err(drv("cuFuncSetAttribute"))
    }

    unsafe fn launch(
        &self,
        func: FunctionHandle,
        grid: [u32; 3],
        block: [u32; 3],
        shared_bytes: u32,
        stream: StreamHandle,
        args: &KernArgs,
    ) -> Result<()> {
        self.bind()?;
        // cuLaunchKernel wants one pointer per kernel parameter: the 32 words of the image.
        let mut params = kernel_param_pointers(args);
        // SAFETY: `func` is valid, `params` points at 32 u64 values that live until the call
        // returns (the driver copies them), and the caller vouches for the addresses inside.
        unsafe {
            cu::launch_kernel(
                func as sys::CUfunction,
                (grid[0], grid[1], grid[2]),
                (block[0], block[1], block[2]),
                shared_bytes,
                stream as sys::CUstream,
                &mut params,
            )
        }
        .map_err(drv("cuLaunchKernel"))
    }

    fn stream_create(&self) -> Result<StreamHandle> {
        self.bind()?;
        let s = cu::stream::create(cu::stream::StreamKind::NonBlocking)
            .map_err(drv("cuStreamCreate"))?;
        Ok(s as StreamHandle)
    }

    unsafe fn stream_destroy(&self, stream: StreamHandle) -> Result<()> {
        self.bind()?;
        // SAFETY: the caller guarantees `stream` came from `stream_create` and is unused.
        unsafe { cu::stream::destroy(stream as sys::CUstream) }.map_err(drv("cuStreamDestroy"))
    }

    fn stream_synchronize(&self, stream: StreamHandle) -> Result<()> {
        self.bind()?;
        // SAFETY: `stream` is 0 or a stream of this context.
        unsafe { cu::stream::synchronize(stream as sys::CUstream) }
            .map_err(drv("cuStreamSynchronize"))
    }

    fn event_create(&self) -> Result<EventHandle> {
        self.bind()?;
        let e = cu::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT)
            .map_err(drv("cuEventCreate"))?;
        Ok(e as EventHandle)
    }

    fn event_record(&self, event: EventHandle, stream: StreamHandle) -> Result<()> {
        self.bind()?;
        // SAFETY: `event` and `stream` belong to this context.
        unsafe { cu::event::record(event as sys::CUevent, stream as sys::CUstream) }
            .map_err(drv("cuEventRecord"))
    }

    fn event_elapsed_ms(&self, start: EventHandle, end: EventHandle) -> Result<f32> {
        self.bind()?;
        // SAFETY: both events belong to this context and were recorded.
        unsafe {
            cu::event::synchronize(end as sys::CUevent).map_err(drv("cuEventSynchronize"))?;
            cu::event::elapsed(start as sys::CUevent, end as sys::CUevent)
                .map_err(drv("cuEventElapsedTime"))
        }
    }

    unsafe fn event_destroy(&self, event: EventHandle) -> Result<()> {
        self.bind()?;
        // SAFETY: the caller guarantees `event` came from `event_create` and is unused.
        unsafe { cu::event::destroy(event as sys::CUevent) }.map_err(drv("cuEventDestroy"))
    }

    unsafe fn capture_begin(&self, stream: StreamHandle) -> Result<()> {
        self.bind()?;
        let mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED;
        // SAFETY: the caller guarantees a non-default stream of this context, not capturing.
        unsafe { cu::stream::begin_capture(stream as sys::CUstream, mode) }
            .map_err(drv("cuStreamBeginCapture"))
    }

    unsafe fn capture_end(&self, stream: StreamHandle) -> Result<GraphHandle> {
        self.bind()?;
        // SAFETY: the caller guarantees `stream` is capturing.
        let graph = unsafe { cu::stream::end_capture(stream as sys::CUstream) }
            .map_err(drv("cuStreamEndCapture"))?;
        // SAFETY: `graph` was just returned by the capture; it is destroyed once instantiated
        // (the executable graph is independent of it).
        unsafe {
            let exec = cu::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0))
                .map_err(drv("cuGraphInstantiateWithFlags"));
            let _ = cu::graph::destroy(graph);
            Ok(exec? as GraphHandle)
        }
    }

    unsafe fn graph_launch(&self, graph: GraphHandle, stream: StreamHandle) -> Result<()> {
        self.bind()?;
        // SAFETY: the caller guarantees a live graph of this backend and valid addresses.
        unsafe { cu::graph::launch(graph as sys::CUgraphExec, stream as sys::CUstream) }
            .map_err(drv("cuGraphLaunch"))
    }

    unsafe fn graph_destroy(&self, graph: GraphHandle) -> Result<()> {
        self.bind()?;
        // SAFETY: the caller guarantees a live graph of this backend, not used afterwards.
        unsafe { cu::graph::exec_destroy(graph as sys::CUgraphExec) }
            .map_err(drv("cuGraphExecDestroy"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_driver_call_becomes_an_error() {
        let r: Result<()> = guarded(|| panic!("Missing symbol cuFoo_v2"));
        match r {
            Err(Error::LibraryNotFound { api: "CUDA", tried }) => {
                assert!(tried[0].contains("cuFoo_v2"), "{tried:?}")
            }
            other => panic!("expected LibraryNotFound, got {other:?}"),
        }
        assert_eq!(guarded(|| Ok(7)), Ok(7));
    }

    #[test]
    fn no_driver_here_is_an_error_not_a_panic() {
        // This machine has no libcuda: both entry points must return an error.
        if device_count().is_ok() {
            return; // a machine with a driver: nothing to check here
        }
        assert!(matches!(
            CudaDevice::new(0),
            Err(Error::LibraryNotFound { .. } | Error::NoDevice { .. })
        ));
    }
}
