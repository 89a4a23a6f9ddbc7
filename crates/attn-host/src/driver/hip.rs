//! [`Backend`] over the HIP runtime (`libamdhip64`, loaded at run time through `hip-sys`).
//!
//! HIP keeps a *current device* per host thread (there are no explicit contexts), and
//! allocations, module loads, streams and the default stream all belong to the current device.
//! So every method first calls `hipSetDevice(ordinal)`: the backend can be used from any thread.
//!
//! Kernel arguments travel through `kernelParams`: an array of [`attn_abi::KERNARG_WORDS`] pointers, one to
//! each `u64` word of the [`KernArgs`] image. The kernels' kernarg segment is exactly that many
//! 8-byte `by_value` arguments, so the runtime copies word `i` to offset `8 * i`.
use std::ffi::{CString, c_int, c_void};

use attn_abi::KernArgs;
use hip_sys::{Hip, LoadError, hipError_t};

use super::{
    Api, Backend, DeviceInfo, EventHandle, FunctionHandle, GraphHandle, ModuleHandle, Ptr,
    StreamHandle, kernel_param_pointers,
};
use crate::error::{Error, Result};

const API: &str = "HIP";

/// One AMD GPU driven through the HIP runtime.
#[derive(Debug)]
pub struct HipDevice {
    hip: &'static Hip,
    ordinal: c_int,
    info: DeviceInfo,
}

/// Maps a library-loading failure to [`Error::LibraryNotFound`]: the names tried, followed by one
/// entry with the last `dlerror` (or the missing symbol).
fn library_error(e: LoadError) -> Error {
    let mut tried = e.tried;
    match e.missing_symbol {
        Some(sym) => tried.push(format!("(missing symbol {sym}: {})", e.last_error)),
        None => tried.push(format!("(last error: {})", e.last_error)),
    }
    Error::LibraryNotFound { api: API, tried }
}

/// [`Error::Driver`] for a failed call; the name comes from the runtime when it is loaded.
fn driver_error(hip: Option<&Hip>, call: &'static str, e: hipError_t) -> Error {
    let name = match hip {
        Some(hip) => hip.error_name(e),
        None => e
            .static_name()
            .map_or_else(|| format!("hipError({})", e.0), str::to_string),
    };
    Error::Driver {
        api: API,
        call,
        code: e.0,
        name,
    }
}

fn load() -> Result<&'static Hip> {
    Hip::load().map_err(library_error)
}

/// `Ok` on `hipSuccess`, else the [`Error::Driver`] for `call`.
fn check(hip: &Hip, call: &'static str, e: hipError_t) -> Result<()> {
    if e.is_success() {
        Ok(())
    } else {
        Err(driver_error(Some(hip), call, e))
    }
}

/// `hipInit(0)` and `hipGetDeviceCount`, with "no GPU" (`hipErrorNoDevice`) reported as 0.
fn device_count(hip: &Hip) -> Result<u32> {
    // SAFETY: hipInit takes no pointers; 0 is the only valid flag value and repeated calls are
    // allowed.
    let e = unsafe { (hip.hipInit)(0) };
    if e == hipError_t::NO_DEVICE {
        return Ok(0);
    }
    check(hip, "hipInit", e)?;
    let mut n: c_int = 0;
    // SAFETY: `n` is a valid out-pointer for one int.
    let e = unsafe { (hip.hipGetDeviceCount)(&mut n) };
    if e == hipError_t::NO_DEVICE {
        return Ok(0);
    }
    check(hip, "hipGetDeviceCount", e)?;
    Ok(n.max(0) as u32)
}

fn to_ptr(handle: u64) -> *mut c_void {
    std::ptr::with_exposed_provenance_mut(handle as usize)
}

fn to_handle(p: *mut c_void) -> u64 {
    p.expose_provenance() as u64
}

const EM_AMDGPU: u16 = 224;

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Whether `[offset, offset + count * size)` lies inside `len` bytes.
fn table_fits(len: usize, offset: u64, count: u64, size: u64) -> bool {
    count
        .checked_mul(size)
        .and_then(|n| n.checked_add(offset))
        .is_some_and(|end| end <= len as u64)
}

/// Checks that `image` is a complete little-endian ELF64 AMDGPU code object before it is handed
/// to `hipModuleLoadData`, which takes no length and would read past a truncated buffer.
fn validate_code_object(image: &[u8]) -> std::result::Result<(), String> {
    const EHDR: usize = 64;
    if image.len() < EHDR || &image[..4] != b"\x7fELF" {
        return Err(format!(
            "{} bytes that do not start with an ELF header",
            image.len()
        ));
    }
    if image[4] != 2 || image[5] != 1 {
        return Err("an ELF file that is not 64-bit little-endian".into());
    }
    let bad = || "a truncated ELF file".to_string();
    let machine = read_u16(image, 18).ok_or_else(bad)?;
    if machine != EM_AMDGPU {
        return Err(format!(
            "an ELF file for machine {machine}, not AMDGPU ({EM_AMDGPU})"
        ));
    }
    let phoff = read_u64(image, 32).ok_or_else(bad)?;
    let shoff = read_u64(image, 40).ok_or_else(bad)?;
    let phentsize = u64::from(read_u16(image, 54).ok_or_else(bad)?);
    let phnum = u64::from(read_u16(image, 56).ok_or_else(bad)?);
    let shentsize = u64::from(read_u16(image, 58).ok_or_else(bad)?);
    let shnum = u64::from(read_u16(image, 60).ok_or_else(bad)?);
    let len = image.len();
    if !table_fits(len, phoff, phnum, phentsize) || !table_fits(len, shoff, shnum, shentsize) {
        return Err(bad());
    }
    for i in 0..phnum {
        let at = (phoff + i * phentsize) as usize;
        let off = read_u64(image, at + 8).ok_or_else(bad)?;
        let filesz = read_u64(image, at + 32).ok_or_else(bad)?;
        if !table_fits(len, off, 1, filesz) {
            return Err(bad());
        }
    }
    const SHT_NOBITS: u32 = 8;
    for i in 0..shnum {
        let at = (shoff + i * shentsize) as usize;
        let ty = read_u32(image, at + 4).ok_or_else(bad)?;
        let off = read_u64(image, at + 24).ok_or_else(bad)?;
        let size = read_u64(image, at + 32).ok_or_else(bad)?;
        if ty != SHT_NOBITS && !table_fits(len, off, 1, size) {
            return Err(bad());
        }
    }
    Ok(())
}

impl HipDevice {
    /// Number of HIP devices (0 when the runtime finds no GPU).
    ///
    /// Fails with [`Error::LibraryNotFound`] when `libamdhip64` cannot be loaded.
    pub fn count() -> Result<u32> {
        device_count(load()?)
    }

    /// Opens device `ordinal`.
    ///
    /// Fails with [`Error::LibraryNotFound`] when `libamdhip64` cannot be loaded,
    /// [`Error::NoDevice`] when the runtime sees no GPU, [`Error::InvalidArgument`] when
    /// `ordinal` is out of range, and [`Error::Driver`] when a runtime call fails.
    pub fn new(ordinal: u32) -> Result<HipDevice> {
        let hip = load()?;
        let count = device_count(hip)?;
        if count == 0 {
            return Err(Error::NoDevice {
                reason: format!("HIP ({}) reports no AMD GPU", hip.library),
            });
        }
        if ordinal >= count {
            return Err(Error::invalid(
                "device ordinal",
                format!("less than {count}"),
                ordinal,
            ));
        }
        let dev = ordinal as c_int;
        // SAFETY: `dev` is a valid ordinal (checked above).
        check(hip, "hipSetDevice", unsafe { (hip.hipSetDevice)(dev) })?;
        let props = hip.device_props(dev).map_err(|e| {
            let call = if hip.hipGetDevicePropertiesR0600.is_some() {
                "hipGetDevicePropertiesR0600"
            } else {
                "hipGetDeviceProperties"
            };
            driver_error(Some(hip), call, e)
        })?;
        let mut name = props.name;
        if name.is_empty() {
            let mut buf = [0 as std::ffi::c_char; 256];
            // SAFETY: `buf` is writable for the 256 bytes passed as its length.
            let e = unsafe { (hip.hipDeviceGetName)(buf.as_mut_ptr(), buf.len() as c_int, dev) };
            check(hip, "hipDeviceGetName", e)?;
            name = hip_sys::c_chars_to_string(&buf);
        }
        let shared = props
            .shared_mem_per_block
            .max(props.shared_mem_per_block_optin);
        let info = DeviceInfo {
            api: Api::Hip,
            ordinal,
            name,
            arch: props.gcn_arch_name,
            compute_capability: (0, 0),
            multiprocessors: props.multi_processor_count.max(0) as u32,
            total_memory: props.total_global_mem,
            max_shared_per_block: shared.min(u64::from(u32::MAX)) as u32,
        };
        Ok(HipDevice {
            hip,
            ordinal: dev,
            info,
        })
    }

    /// The loaded runtime.
    pub fn hip(&self) -> &'static Hip {
        self.hip
    }

    /// Makes this device current on the calling thread.
    fn set(&self) -> Result<()> {
        // SAFETY: the ordinal was validated in `new`.
        self.check("hipSetDevice", unsafe {
            (self.hip.hipSetDevice)(self.ordinal)
        })
    }

    fn check(&self, call: &'static str, e: hipError_t) -> Result<()> {
        check(self.hip, call, e)
    }

    fn sync(&self, stream: StreamHandle) -> Result<()> {
        // SAFETY: `stream` is 0 (the default stream) or a stream handle from this backend.
        self.check("hipStreamSynchronize", unsafe {
            (self.hip.hipStreamSynchronize)(to_ptr(stream))
        })
    }
}

impl Backend for HipDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn malloc(&self, bytes: usize) -> Result<Ptr> {
        self.set()?;
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: `p` is a valid out-pointer; hipMalloc returns memory aligned to at least 256
        // bytes.
        self.check("hipMalloc", unsafe { (self.hip.hipMalloc)(&mut p, bytes) })?;
        Ok(to_handle(p))
    }

    unsafe fn free(&self, ptr: Ptr) -> Result<()> {
        self.set()?;
        // SAFETY: the caller guarantees `ptr` came from `malloc` and is no longer in use.
        self.check("hipFree", unsafe { (self.hip.hipFree)(to_ptr(ptr)) })
    }

    unsafe fn htod(
        &self,
        dst: Ptr,
        src: *const u8,
        bytes: usize,
        stream: StreamHandle,
    ) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.set()?;
        // SAFETY: the caller guarantees `src` is readable and `dst` writable for `bytes`; the
        // runtime only reads through `src` (the C prototype lacks `const`), and we wait for the
        // copy below before `src` may be released.
        let e = unsafe {
            (self.hip.hipMemcpyHtoDAsync)(to_ptr(dst), src.cast_mut().cast(), bytes, to_ptr(stream))
        };
        self.check("hipMemcpyHtoDAsync", e)?;
        self.sync(stream)
    }

    unsafe fn dtoh(
        &self,
        dst: *mut u8,
        src: Ptr,
        bytes: usize,
        stream: StreamHandle,
    ) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.set()?;
        // SAFETY: the caller guarantees `dst` is writable and `src` readable for `bytes`; we wait
        // for the copy below before returning.
        let e = unsafe {
            (self.hip.hipMemcpyDtoHAsync)(dst.cast(), to_ptr(src), bytes, to_ptr(stream))
        };
        self.check("hipMemcpyDtoHAsync", e)?;
        self.sync(stream)
    }

    unsafe fn memset_d8(
        &self,
        dst: Ptr,
        value: u8,
        bytes: usize,
        stream: StreamHandle,
    ) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.set()?;
        // SAFETY: the caller guarantees `dst` is device memory writable for `bytes`.
        let e = unsafe { (self.hip.hipMemsetD8Async)(to_ptr(dst), value, bytes, to_ptr(stream)) };
        self.check("hipMemsetD8Async", e)
    }

    fn load_module(&self, image: &[u8]) -> Result<ModuleHandle> {
        validate_code_object(image).map_err(|got| {
            Error::invalid("code object", "a complete AMDGPU ELF code object", got)
        })?;
        self.set()?;
        let mut m: hip_sys::hipModule_t = std::ptr::null_mut();
        // SAFETY: `image` is a complete ELF file (validated above: every header, segment and
        // section lies inside the slice), so the runtime's reads stay in bounds; it copies what it
        // keeps. `m` is a valid out-pointer.
        let e = unsafe { (self.hip.hipModuleLoadData)(&mut m, image.as_ptr().cast()) };
        self.check("hipModuleLoadData", e)?;
        Ok(to_handle(m))
    }

    fn get_function(&self, module: ModuleHandle, name: &str) -> Result<FunctionHandle> {
        let cname = CString::new(name)
            .map_err(|_| Error::invalid("kernel name", "a name without NUL bytes", name))?;
        self.set()?;
        let mut f: hip_sys::hipFunction_t = std::ptr::null_mut();
        // SAFETY: `f` is a valid out-pointer, `cname` is NUL-terminated, and `module` is a handle
        // from `load_module` (the runtime validates it).
        let e = unsafe { (self.hip.hipModuleGetFunction)(&mut f, to_ptr(module), cname.as_ptr()) };
        self.check("hipModuleGetFunction", e)?;
        Ok(to_handle(f))
    }

    /// No runtime call: AMD GPUs need no opt-in for dynamic LDS up to the device limit (and
    /// `hipFuncSetAttribute` does not accept module functions). Requests above the limit are
    /// rejected here rather than at launch.
    fn set_max_dynamic_shared(&self, _func: FunctionHandle, bytes: u32) -> Result<()> {
        if bytes > self.info.max_shared_per_block {
            return Err(Error::unsupported(format!(
                "{bytes} bytes of dynamic LDS requested; {} ({}) allows at most {} per block",
                self.info.name, self.info.arch, self.info.max_shared_per_block
            )));
        }
        Ok(())
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
        self.set()?;
        let mut params = kernel_param_pointers(args);
        // SAFETY: `func` is a kernel from this backend whose arguments are `KERNARG_WORDS` u64
        // values; `params` holds one pointer to each word of `args`, which outlives the call (the
        // runtime copies the arguments before returning). The caller guarantees the addresses in
        // `args` are valid for the kernel.
        let e = unsafe {
            (self.hip.hipModuleLaunchKernel)(
                to_ptr(func),
                grid[0],
                grid[1],
                grid[2],
                block[0],
                block[1],
                block[2],
                shared_bytes,
                to_ptr(stream),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        self.check("hipModuleLaunchKernel", e)
    }

    fn stream_create(&self) -> Result<StreamHandle> {
        self.set()?;
        let mut s: hip_sys::hipStream_t = std::ptr::null_mut();
        // SAFETY: `s` is a valid out-pointer.
        self.check("hipStreamCreate", unsafe {
            (self.hip.hipStreamCreate)(&mut s)
        })?;
        Ok(to_handle(s))
    }

    unsafe fn stream_destroy(&self, stream: StreamHandle) -> Result<()> {
        self.set()?;
        // SAFETY: the caller guarantees `stream` came from `stream_create` and is not used again.
        self.check("hipStreamDestroy", unsafe {
            (self.hip.hipStreamDestroy)(to_ptr(stream))
        })
    }

    fn stream_synchronize(&self, stream: StreamHandle) -> Result<()> {
        self.set()?;
        self.sync(stream)
    }

    fn event_create(&self) -> Result<EventHandle> {
        self.set()?;
        let mut ev: hip_sys::hipEvent_t = std::ptr::null_mut();
        // SAFETY: `ev` is a valid out-pointer.
        self.check("hipEventCreate", unsafe {
            (self.hip.hipEventCreate)(&mut ev)
        })?;
        Ok(to_handle(ev))
    }

    fn event_record(&self, event: EventHandle, stream: StreamHandle) -> Result<()> {
        self.set()?;
        // SAFETY: the runtime validates both handles (an event from `event_create`, a stream from
        // `stream_create` or 0).
        let e = unsafe { (self.hip.hipEventRecord)(to_ptr(event), to_ptr(stream)) };
        self.check("hipEventRecord", e)
    }

    fn event_elapsed_ms(&self, start: EventHandle, end: EventHandle) -> Result<f32> {
        self.set()?;
        // SAFETY: the runtime validates the event handle.
        self.check("hipEventSynchronize", unsafe {
            (self.hip.hipEventSynchronize)(to_ptr(end))
        })?;
        let mut ms: f32 = 0.0;
        // SAFETY: `ms` is a valid out-pointer; the runtime validates the event handles.
        let e = unsafe { (self.hip.hipEventElapsedTime)(&mut ms, to_ptr(start), to_ptr(end)) };
        self.check("hipEventElapsedTime", e)?;
        Ok(ms)
    }

    unsafe fn event_destroy(&self, event: EventHandle) -> Result<()> {
        self.set()?;
        // SAFETY: the caller guarantees `event` came from `event_create` and is not used again.
        self.check("hipEventDestroy", unsafe {
            (self.hip.hipEventDestroy)(to_ptr(event))
        })
    }

    unsafe fn capture_begin(&self, stream: StreamHandle) -> Result<()> {
        self.set()?;
        let begin = self.graph_fn("hipStreamBeginCapture", self.hip.hipStreamBeginCapture)?;
        // SAFETY: the caller guarantees a non-default stream of this device, not capturing.
        self.check("hipStreamBeginCapture", unsafe {
            begin(to_ptr(stream), hip_sys::hipStreamCaptureModeRelaxed)
        })
    }

    unsafe fn capture_end(&self, stream: StreamHandle) -> Result<GraphHandle> {
        self.set()?;
        let end = self.graph_fn("hipStreamEndCapture", self.hip.hipStreamEndCapture)?;
        let instantiate = self.graph_fn("hipGraphInstantiate", self.hip.hipGraphInstantiate)?;
        let destroy = self.graph_fn("hipGraphDestroy", self.hip.hipGraphDestroy)?;
        let mut graph: hip_sys::hipGraph_t = std::ptr::null_mut();
        // SAFETY: the caller guarantees `stream` is capturing; `graph` is a valid out-pointer.
        self.check("hipStreamEndCapture", unsafe {
            end(to_ptr(stream), &mut graph)
        })?;
        let mut exec: hip_sys::hipGraphExec_t = std::ptr::null_mut();
        // SAFETY: `graph` came from the capture; the error node and log are optional (null, 0).
        let made = self.check("hipGraphInstantiate", unsafe {
            instantiate(
                &mut exec,
                graph,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        });
        // SAFETY: the template graph is no longer needed once instantiated (or on failure).
        let _ = unsafe { destroy(graph) };
        made.map(|()| to_handle(exec))
    }

    unsafe fn graph_launch(&self, graph: GraphHandle, stream: StreamHandle) -> Result<()> {
        self.set()?;
        let launch = self.graph_fn("hipGraphLaunch", self.hip.hipGraphLaunch)?;
        // SAFETY: the caller guarantees a live graph of this backend and valid addresses.
        self.check("hipGraphLaunch", unsafe {
            launch(to_ptr(graph), to_ptr(stream))
        })
    }

    unsafe fn graph_destroy(&self, graph: GraphHandle) -> Result<()> {
        self.set()?;
        let destroy = self.graph_fn("hipGraphExecDestroy", self.hip.hipGraphExecDestroy)?;
        // SAFETY: the caller guarantees a live graph of this backend, not used afterwards.
        self.check("hipGraphExecDestroy", unsafe { destroy(to_ptr(graph)) })
    }
}

impl HipDevice {
    /// An optional graph entry point, or `Unsupported` when this runtime lacks it.
    fn graph_fn<F>(&self, name: &str, f: Option<F>) -> Result<F> {
        f.ok_or_else(|| {
            Error::unsupported(format!(
                "{name} is missing from {}: this HIP runtime cannot capture graphs",
                self.hip.library
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip() {
        for h in [0u64, 0x1000, 0x7fff_dead_b000] {
            assert_eq!(to_handle(to_ptr(h)), h);
        }
        assert!(to_ptr(0).is_null());
    }

    #[test]
    fn driver_error_names() {
        let e = driver_error(None, "hipModuleLoadData", hipError_t::INVALID_IMAGE);
        assert_eq!(
            e,
            Error::Driver {
                api: "HIP",
                call: "hipModuleLoadData",
                code: 200,
                name: "hipErrorInvalidImage".into()
            }
        );
        let e = driver_error(None, "hipMalloc", hipError_t(2));
        assert!(
            matches!(e, Error::Driver { code: 2, ref name, .. } if name == "hipErrorOutOfMemory")
        );
        let e = driver_error(None, "hipInit", hipError_t(12345));
        assert!(matches!(e, Error::Driver { ref name, .. } if name == "hipError(12345)"));
    }

    #[test]
    fn load_error_maps_to_library_not_found() {
        let e = library_error(LoadError {
            tried: vec!["libamdhip64.so".into()],
            last_error: "libamdhip64.so: cannot open shared object file".into(),
            missing_symbol: None,
        });
        let Error::LibraryNotFound { api, tried } = e else {
            panic!("{e:?}")
        };
        assert_eq!(api, "HIP");
        assert_eq!(tried[0], "libamdhip64.so");
        assert!(tried[1].contains("cannot open shared object file"));
    }

    /// Without ROCm (this project's build host) both entry points fail cleanly with
    /// `LibraryNotFound`; with ROCm they must not panic either.
    #[test]
    fn no_library_no_panic() {
        match HipDevice::count() {
            Err(Error::LibraryNotFound { api, tried }) => {
                assert_eq!(api, "HIP");
                assert!(tried.iter().any(|t| t.ends_with("libamdhip64.so")));
                assert!(matches!(
                    HipDevice::new(0),
                    Err(Error::LibraryNotFound { .. })
                ));
            }
            Ok(0) => assert!(matches!(HipDevice::new(0), Err(Error::NoDevice { .. }))),
            Ok(n) => {
                let d = HipDevice::new(0).expect("device 0");
                assert_eq!(d.info().api, Api::Hip);
                assert!(d.info().arch.starts_with("gfx"), "{}", d.info().arch);
                assert!(matches!(
                    HipDevice::new(n),
                    Err(Error::InvalidArgument { .. })
                ));
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// A minimal AMDGPU ELF64 header with no segments or sections.
    fn elf_header(machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[6] = 1;
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h
    }

    #[test]
    fn code_object_validation() {
        assert!(validate_code_object(&elf_header(EM_AMDGPU)).is_ok());
        assert!(validate_code_object(&[]).is_err());
        assert!(
            validate_code_object(b"not an elf file at all, but long enough to be one........")
                .is_err()
        );
        assert!(
            validate_code_object(&elf_header(62))
                .unwrap_err()
                .contains("machine 62")
        );
        // A section table that runs past the end of the image.
        let mut h = elf_header(EM_AMDGPU);
        h[40..48].copy_from_slice(&64u64.to_le_bytes());
        h[58..60].copy_from_slice(&64u16.to_le_bytes());
        h[60..62].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(
            validate_code_object(&h).unwrap_err(),
            "a truncated ELF file"
        );
        // The same table present, describing a section whose bytes are missing.
        h.resize(128, 0);
        h[64 + 4..64 + 8].copy_from_slice(&1u32.to_le_bytes());
        h[64 + 24..64 + 32].copy_from_slice(&100u64.to_le_bytes());
        h[64 + 32..64 + 40].copy_from_slice(&100u64.to_le_bytes());
        assert!(validate_code_object(&h).is_err());
        // A NOBITS section occupies no file bytes.
        h[64 + 4..64 + 8].copy_from_slice(&8u32.to_le_bytes());
        assert!(validate_code_object(&h).is_ok());
        // Overflowing offsets are rejected, not wrapped.
        h[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(validate_code_object(&h).is_err());
    }
}
