//! Raw bindings to the HIP runtime (`libamdhip64`), loaded at run time with `libloading`.
//!
//! Only the handful of calls `attn-host` needs are bound, by hand (no bindgen). Nothing here links
//! against ROCm: [`Hip::load`] `dlopen`s the library on first use and reports a [`LoadError`] when
//! it is missing, so binaries built with this crate run (without AMD support) on machines without
//! ROCm.
//!
//! The function pointers are the C entry points verbatim: every call is `unsafe` and returns a
//! [`hipError_t`]. [`Hip::device_props`] is the one safe helper; it hides the two layouts of
//! `hipDeviceProp_t` (see [`types`]).
#![allow(non_snake_case)]

use std::ffi::{CStr, c_char, c_float, c_int, c_uchar, c_uint, c_void};
use std::fmt;
use std::sync::OnceLock;

use libloading::Library;

mod error;
pub mod types;

pub use error::{LoadError, error_name};
pub use types::*;

/// Library file names tried, in order, in each directory (and bare, for the `dlopen` search path).
pub const LIBRARY_NAMES: [&str; 4] = [
    "libamdhip64.so",
    "libamdhip64.so.6",
    "libamdhip64.so.7",
    "libamdhip64.so.5",
];

/// The library names [`Hip::load`] tries, in order: `$ROCM_PATH/lib/…` (when `ROCM_PATH` is set),
/// then the bare names (resolved by `dlopen` through `LD_LIBRARY_PATH` and the `ld.so` cache), then
/// `/opt/rocm/lib/…`.
pub fn library_candidates() -> Vec<String> {
    candidates_for(std::env::var("ROCM_PATH").ok().as_deref())
}

fn candidates_for(rocm_path: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    if let Some(root) = rocm_path
        .map(|p| p.trim_end_matches('/'))
        .filter(|p| !p.is_empty())
    {
        for name in LIBRARY_NAMES {
            push(format!("{root}/lib/{name}"));
        }
    }
    for name in LIBRARY_NAMES {
        push(name.to_string());
    }
    for name in LIBRARY_NAMES {
        push(format!("/opt/rocm/lib/{name}"));
    }
    out
}

/// Declares the [`Hip`] struct (one field per C function) and the code that resolves the fields.
macro_rules! hip_api {
    (
        required {
            $( $(#[doc = $doc:literal])*
               fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> $ret:ty ; )*
        }
        optional {
            $( $(#[doc = $odoc:literal])*
               fn $oname:ident ( $($oarg:ident : $oty:ty),* $(,)? ) -> $oret:ty ; )*
        }
    ) => {
        /// The loaded HIP runtime: one C function pointer per bound entry point.
        ///
        /// Obtain it with [`Hip::load`]; the library stays loaded for the life of the process, so
        /// the pointers never dangle. Calling any of them is `unsafe`: the caller upholds the C
        /// API's contract (valid pointers, handles from this runtime, sizes that match).
        pub struct Hip {
            /// Keeps the shared object mapped.
            _lib: Library,
            /// The name or path the library was opened by.
            pub library: String,
            $( $(#[doc = $doc])* pub $name: unsafe extern "C" fn($($arg: $ty),*) -> $ret, )*
            $( $(#[doc = $odoc])* pub $oname: Option<unsafe extern "C" fn($($oarg: $oty),*) -> $oret>, )*
        }

        impl Hip {
            /// Resolves every symbol in `lib`; `Err` names the first required symbol missing.
            fn resolve(lib: Library, library: String) -> Result<Hip, (&'static str, String)> {
                // SAFETY: each symbol is looked up with the exact C signature declared in
                // `hip_runtime_api.h` (transcribed above), and the copied function pointers are
                // stored next to the `Library` that keeps them mapped.
                unsafe {
                    Ok(Hip {
                        $( $name: *lib
                            .get::<unsafe extern "C" fn($($ty),*) -> $ret>(
                                concat!(stringify!($name), "\0").as_bytes(),
                            )
                            .map_err(|e| (stringify!($name), e.to_string()))?, )*
                        $( $oname: lib
                            .get::<unsafe extern "C" fn($($oty),*) -> $oret>(
                                concat!(stringify!($oname), "\0").as_bytes(),
                            )
                            .ok()
                            .map(|s| *s), )*
                        _lib: lib,
                        library,
                    })
                }
            }
        }
    };
}

hip_api! {
    required {
        /// `hipError_t hipInit(unsigned int flags)` (flags must be 0).
        fn hipInit(flags: c_uint) -> hipError_t;
        /// `hipError_t hipGetDeviceCount(int* count)`.
        fn hipGetDeviceCount(count: *mut c_int) -> hipError_t;
        /// `hipError_t hipSetDevice(int deviceId)`: makes the device current on this thread.
        fn hipSetDevice(device: c_int) -> hipError_t;
        /// `hipError_t hipDeviceGetAttribute(int* pi, hipDeviceAttribute_t attr, int deviceId)`;
        /// attribute values in [`attr`].
        fn hipDeviceGetAttribute(
            value: *mut c_int,
            attr: hipDeviceAttribute_t,
            device: c_int,
        ) -> hipError_t;
        /// `hipError_t hipDeviceGetName(char* name, int len, hipDevice_t device)`.
        fn hipDeviceGetName(name: *mut c_char, len: c_int, device: hipDevice_t) -> hipError_t;
        /// `hipError_t hipDeviceTotalMem(size_t* bytes, hipDevice_t device)`.
        fn hipDeviceTotalMem(bytes: *mut usize, device: hipDevice_t) -> hipError_t;
        /// `hipError_t hipRuntimeGetVersion(int* runtimeVersion)`.
        fn hipRuntimeGetVersion(version: *mut c_int) -> hipError_t;
        /// `hipError_t hipDeviceSynchronize(void)`.
        fn hipDeviceSynchronize() -> hipError_t;
        /// `const char* hipGetErrorName(hipError_t)`: a static string.
        fn hipGetErrorName(error: hipError_t) -> *const c_char;
        /// `const char* hipGetErrorString(hipError_t)`: a static string.
        fn hipGetErrorString(error: hipError_t) -> *const c_char;
        /// `hipError_t hipModuleLoadData(hipModule_t* module, const void* image)`: loads an
        /// AMDGPU code object (ELF) or offload bundle on the current device.
        fn hipModuleLoadData(module: *mut hipModule_t, image: *const c_void) -> hipError_t;
        /// `hipError_t hipModuleUnload(hipModule_t module)`.
        fn hipModuleUnload(module: hipModule_t) -> hipError_t;
        /// `hipError_t hipModuleGetFunction(hipFunction_t* f, hipModule_t m, const char* name)`.
        fn hipModuleGetFunction(
            function: *mut hipFunction_t,
            module: hipModule_t,
            name: *const c_char,
        ) -> hipError_t;
        /// `hipError_t hipModuleLaunchKernel(hipFunction_t f, unsigned gridDimX, gridDimY,
        /// gridDimZ, blockDimX, blockDimY, blockDimZ, unsigned sharedMemBytes, hipStream_t stream,
        /// void** kernelParams, void** extra)`.
        ///
        /// Exactly one of `kernelParams` (one pointer per kernel argument, read with the size
        /// the code object's metadata gives it) and `extra` (`[HIP_LAUNCH_PARAM_BUFFER_POINTER,
        /// buf, HIP_LAUNCH_PARAM_BUFFER_SIZE, &size, HIP_LAUNCH_PARAM_END]`) is non-null.
        fn hipModuleLaunchKernel(
            f: hipFunction_t,
            grid_x: c_uint,
            grid_y: c_uint,
            grid_z: c_uint,
            block_x: c_uint,
            block_y: c_uint,
            block_z: c_uint,
            shared_mem_bytes: c_uint,
            stream: hipStream_t,
            kernel_params: *mut *mut c_void,
            extra: *mut *mut c_void,
        ) -> hipError_t;
        /// `hipError_t hipMalloc(void** ptr, size_t size)` on the current device.
        fn hipMalloc(ptr: *mut *mut c_void, size: usize) -> hipError_t;
        /// `hipError_t hipFree(void* ptr)`.
        fn hipFree(ptr: *mut c_void) -> hipError_t;
        /// `hipError_t hipMemcpyHtoDAsync(hipDeviceptr_t dst, void* src, size_t sizeBytes,
        /// hipStream_t stream)`.
        fn hipMemcpyHtoDAsync(
            dst: hipDeviceptr_t,
            src: *mut c_void,
            bytes: usize,
            stream: hipStream_t,
        ) -> hipError_t;
        /// `hipError_t hipMemcpyDtoHAsync(void* dst, hipDeviceptr_t src, size_t sizeBytes,
        /// hipStream_t stream)`.
        fn hipMemcpyDtoHAsync(
            dst: *mut c_void,
            src: hipDeviceptr_t,
            bytes: usize,
            stream: hipStream_t,
        ) -> hipError_t;
        /// `hipError_t hipMemsetD8Async(hipDeviceptr_t dest, unsigned char value, size_t count,
        /// hipStream_t stream)`.
        fn hipMemsetD8Async(
            dst: hipDeviceptr_t,
            value: c_uchar,
            count: usize,
            stream: hipStream_t,
        ) -> hipError_t;
        /// `hipError_t hipStreamCreate(hipStream_t* stream)` on the current device.
        fn hipStreamCreate(stream: *mut hipStream_t) -> hipError_t;
        /// `hipError_t hipStreamDestroy(hipStream_t stream)`.
        fn hipStreamDestroy(stream: hipStream_t) -> hipError_t;
        /// `hipError_t hipStreamSynchronize(hipStream_t stream)`.
        fn hipStreamSynchronize(stream: hipStream_t) -> hipError_t;
        /// `hipError_t hipEventCreate(hipEvent_t* event)`.
        fn hipEventCreate(event: *mut hipEvent_t) -> hipError_t;
        /// `hipError_t hipEventRecord(hipEvent_t event, hipStream_t stream)`.
        fn hipEventRecord(event: hipEvent_t, stream: hipStream_t) -> hipError_t;
        /// `hipError_t hipEventSynchronize(hipEvent_t event)`.
        fn hipEventSynchronize(event: hipEvent_t) -> hipError_t;
        /// `hipError_t hipEventElapsedTime(float* ms, hipEvent_t start, hipEvent_t stop)`.
        fn hipEventElapsedTime(ms: *mut c_float, start: hipEvent_t, stop: hipEvent_t)
            -> hipError_t;
        /// `hipError_t hipEventDestroy(hipEvent_t event)`.
        fn hipEventDestroy(event: hipEvent_t) -> hipError_t;
    }
    optional {
        /// `hipError_t hipGetDevicePropertiesR0600(hipDeviceProp_tR0600* prop, int deviceId)`:
        /// ROCm 6 and later. Pass a buffer of at least [`HIP_DEVICE_PROP_R0600_SIZE`] bytes.
        fn hipGetDevicePropertiesR0600(prop: *mut hipDeviceProp_tR0600, device: c_int)
            -> hipError_t;
        /// The unversioned exported `hipGetDeviceProperties`, which fills the *legacy*
        /// `hipDeviceProp_tR0000` layout (ROCm 5's `hipDeviceProp_t`, still exported by ROCm 6
        /// and 7 for old binaries). Pass a buffer of at least [`HIP_DEVICE_PROP_R0000_SIZE`]
        /// bytes.
        fn hipGetDeviceProperties(prop: *mut hipDeviceProp_tR0000Head, device: c_int)
            -> hipError_t;
        /// `hipError_t hipFuncSetAttribute(const void* func, hipFuncAttribute attr, int value)`.
        ///
        /// Takes a *host stub* pointer of a kernel compiled into the program, not a
        /// `hipFunction_t` from a module: ROCm/clr resolves `func` through its table of
        /// registered host functions and fails for module functions. On AMD no opt-in is needed
        /// for dynamic LDS up to the device limit, so module launches do not need it.
        fn hipFuncSetAttribute(func: *const c_void, attr: hipFuncAttribute, value: c_int)
            -> hipError_t;
        /// `hipError_t hipStreamBeginCapture(hipStream_t stream, hipStreamCaptureMode mode)`.
        fn hipStreamBeginCapture(stream: hipStream_t, mode: hipStreamCaptureMode) -> hipError_t;
        /// `hipError_t hipStreamEndCapture(hipStream_t stream, hipGraph_t* pGraph)`.
        fn hipStreamEndCapture(stream: hipStream_t, graph: *mut hipGraph_t) -> hipError_t;
        /// `hipError_t hipGraphInstantiate(hipGraphExec_t* pGraphExec, hipGraph_t graph,
        /// hipGraphNode_t* pErrorNode, char* pLogBuffer, size_t bufferSize)`.
        fn hipGraphInstantiate(
            exec: *mut hipGraphExec_t,
            graph: hipGraph_t,
            error_node: *mut hipGraphNode_t,
            log: *mut c_char,
            log_size: usize,
        ) -> hipError_t;
        /// `hipError_t hipGraphLaunch(hipGraphExec_t graphExec, hipStream_t stream)`.
        fn hipGraphLaunch(exec: hipGraphExec_t, stream: hipStream_t) -> hipError_t;
        /// `hipError_t hipGraphExecDestroy(hipGraphExec_t graphExec)`.
        fn hipGraphExecDestroy(exec: hipGraphExec_t) -> hipError_t;
        /// `hipError_t hipGraphDestroy(hipGraph_t graph)`.
        fn hipGraphDestroy(graph: hipGraph_t) -> hipError_t;
    }
}

impl fmt::Debug for Hip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hip")
            .field("library", &self.library)
            .finish_non_exhaustive()
    }
}

impl hipError_t {
    /// `Ok(())` for `hipSuccess`, `Err(self)` otherwise.
    pub fn ok(self) -> Result<(), hipError_t> {
        if self.is_success() { Ok(()) } else { Err(self) }
    }
}

/// Which `hipDeviceProp_t` layout [`Hip::device_props`] read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropsLayout {
    /// `hipDeviceProp_tR0600` through `hipGetDevicePropertiesR0600` (ROCm 6+).
    R0600,
    /// `hipDeviceProp_tR0000` through the unversioned `hipGetDeviceProperties` (ROCm 5).
    R0000,
}

/// The device properties `attn-host` uses, read from whichever struct layout the library has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceProps {
    /// Marketing name, e.g. `"AMD Instinct MI300X"`.
    pub name: String,
    /// `gcnArchName`, e.g. `"gfx942:sramecc+:xnack-"`.
    pub gcn_arch_name: String,
    /// `totalGlobalMem` in bytes.
    pub total_global_mem: u64,
    /// `sharedMemPerBlock` (LDS) in bytes.
    pub shared_mem_per_block: u64,
    /// `sharedMemPerBlockOptin` in bytes (0 with the R0000 layout, which lacks it).
    pub shared_mem_per_block_optin: u64,
    /// `multiProcessorCount`.
    pub multi_processor_count: i32,
    /// `maxSharedMemoryPerMultiProcessor` in bytes.
    pub max_shared_memory_per_multiprocessor: u64,
    /// `warpSize`.
    pub warp_size: i32,
    /// The layout that was read.
    pub layout: PropsLayout,
}

/// An 8-aligned, zeroed buffer larger than either props struct, so that a runtime writing a few
/// more bytes than this crate knows of cannot overrun it.
#[repr(C, align(8))]
struct DevicePropsBuf([u8; 4096]);

const _: () = assert!(size_of::<DevicePropsBuf>() >= 2 * HIP_DEVICE_PROP_R0600_SIZE);
const _: () = assert!(align_of::<DevicePropsBuf>() >= align_of::<hipDeviceProp_tR0600>());

/// The text of a fixed-size, NUL-terminated C char array (lossy UTF-8; stops at the array's end
/// when there is no NUL).
pub fn c_chars_to_string(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

static HIP: OnceLock<Result<Hip, LoadError>> = OnceLock::new();

impl Hip {
    /// Loads the HIP runtime once per process (trying [`library_candidates`] in order) and
    /// returns it, or why it could not be loaded. Never panics; the outcome is cached.
    pub fn load() -> Result<&'static Hip, LoadError> {
        HIP.get_or_init(|| Hip::open(&library_candidates()))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Opens the first of `candidates` that loads and has every required symbol.
    fn open(candidates: &[String]) -> Result<Hip, LoadError> {
        let mut last_error = String::from("no library names to try");
        let mut missing_symbol = None;
        for name in candidates {
            // SAFETY: loading libamdhip64 runs its initialisers, which only set up the HIP
            // runtime's own state; we never load an arbitrary user-supplied library here.
            match unsafe { Library::new(name) } {
                Ok(lib) => match Hip::resolve(lib, name.clone()) {
                    Ok(hip) => return Ok(hip),
                    Err((sym, err)) => {
                        missing_symbol = Some(sym);
                        last_error = format!("{name}: {err}");
                    }
                },
                Err(err) => last_error = err.to_string(),
            }
        }
        Err(LoadError {
            tried: candidates.to_vec(),
            last_error,
            missing_symbol,
        })
    }

    /// The runtime's name for `error` (`hipGetErrorName`), falling back to the header's name and
    /// then to `"hipError(<code>)"`.
    pub fn error_name(&self, error: hipError_t) -> String {
        // SAFETY: hipGetErrorName accepts any value and returns null or a pointer to a static
        // NUL-terminated string.
        let p = unsafe { (self.hipGetErrorName)(error) };
        let from_runtime = (!p.is_null())
            // SAFETY: `p` is non-null and points to a static NUL-terminated string (see above).
            .then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned());
        match from_runtime {
            // clr answers "hipErrorUnknown" for values it does not know; prefer our table then.
            Some(name) if name != "hipErrorUnknown" || error == hipError_t::UNKNOWN => name,
            _ => error
                .static_name()
                .map(str::to_string)
                .unwrap_or_else(|| format!("hipError({})", error.0)),
        }
    }

    /// The runtime's description of `error` (`hipGetErrorString`), or an empty string.
    pub fn error_string(&self, error: hipError_t) -> String {
        // SAFETY: hipGetErrorString accepts any value and returns null or a pointer to a static
        // NUL-terminated string.
        let p = unsafe { (self.hipGetErrorString)(error) };
        if p.is_null() {
            return String::new();
        }
        // SAFETY: `p` is non-null and points to a static NUL-terminated string.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// Reads the properties of `device` with `hipGetDevicePropertiesR0600` when the library has
    /// it, else with the legacy `hipGetDeviceProperties` layout.
    pub fn device_props(&self, device: c_int) -> Result<DeviceProps, hipError_t> {
        let mut buf = DevicePropsBuf([0; 4096]);
        if let Some(get) = self.hipGetDevicePropertiesR0600 {
            // SAFETY: `buf` is zeroed, 8-aligned and larger than `hipDeviceProp_tR0600`, which is
            // what this entry point writes.
            unsafe { get(buf.0.as_mut_ptr().cast(), device) }.ok()?;
            // SAFETY: the buffer is aligned and large enough for the struct, every field is an
            // integer, a char array or a raw pointer (any bit pattern is valid), and the runtime
            // has filled it.
            let p = unsafe { &*buf.0.as_ptr().cast::<hipDeviceProp_tR0600>() };
            return Ok(DeviceProps {
                name: c_chars_to_string(&p.name),
                gcn_arch_name: c_chars_to_string(&p.gcnArchName),
                total_global_mem: p.totalGlobalMem as u64,
                shared_mem_per_block: p.sharedMemPerBlock as u64,
                shared_mem_per_block_optin: p.sharedMemPerBlockOptin as u64,
                multi_processor_count: p.multiProcessorCount,
                max_shared_memory_per_multiprocessor: p.maxSharedMemoryPerMultiProcessor as u64,
                warp_size: p.warpSize,
                layout: PropsLayout::R0600,
            });
        }
        let Some(get) = self.hipGetDeviceProperties else {
            return Err(hipError_t::NOT_SUPPORTED);
        };
        // SAFETY: `buf` is zeroed, 8-aligned and larger than the complete legacy struct
        // (`HIP_DEVICE_PROP_R0000_SIZE` bytes), which is what this entry point writes.
        unsafe { get(buf.0.as_mut_ptr().cast(), device) }.ok()?;
        // SAFETY: as above; the transcribed head is a prefix of the legacy struct.
        let p = unsafe { &*buf.0.as_ptr().cast::<hipDeviceProp_tR0000Head>() };
        Ok(DeviceProps {
            name: c_chars_to_string(&p.name),
            gcn_arch_name: c_chars_to_string(&p.gcnArchName),
            total_global_mem: p.totalGlobalMem as u64,
            shared_mem_per_block: p.sharedMemPerBlock as u64,
            shared_mem_per_block_optin: 0,
            multi_processor_count: p.multiProcessorCount,
            max_shared_memory_per_multiprocessor: p.maxSharedMemoryPerMultiProcessor as u64,
            warp_size: p.warpSize,
            layout: PropsLayout::R0000,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_without_rocm_path() {
        let c = candidates_for(None);
        assert_eq!(c.len(), 8);
        assert_eq!(&c[..4], &LIBRARY_NAMES.map(String::from));
        assert_eq!(c[4], "/opt/rocm/lib/libamdhip64.so");
        assert_eq!(c[7], "/opt/rocm/lib/libamdhip64.so.5");
    }

    #[test]
    fn candidates_with_rocm_path() {
        let c = candidates_for(Some("/opt/rocm-6.4.0/"));
        assert_eq!(c.len(), 12);
        assert_eq!(c[0], "/opt/rocm-6.4.0/lib/libamdhip64.so");
        assert_eq!(c[4], "libamdhip64.so");
        // `/opt/rocm` itself is not listed twice.
        assert_eq!(candidates_for(Some("/opt/rocm")).len(), 8);
        assert_eq!(candidates_for(Some("")).len(), 8);
    }

    #[test]
    fn missing_library_is_an_error_not_a_panic() {
        let names = vec![
            "/nonexistent/libamdhip64.so".to_string(),
            "libamdhip64-nope.so.0".into(),
        ];
        let err = Hip::open(&names).unwrap_err();
        assert_eq!(err.tried, names);
        assert_eq!(err.missing_symbol, None);
        assert!(
            err.last_error.contains("libamdhip64-nope.so.0"),
            "{}",
            err.last_error
        );
        assert!(err.to_string().starts_with("HIP runtime library not found"));
    }

    #[test]
    fn no_candidates() {
        let err = Hip::open(&[]).unwrap_err();
        assert!(err.tried.is_empty());
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn library_without_the_symbols_reports_the_missing_one() {
        let names = vec!["libc.so.6".to_string()];
        let err = Hip::open(&names).unwrap_err();
        assert_eq!(err.missing_symbol, Some("hipInit"));
        assert!(err.to_string().contains("lacks symbol hipInit"));
    }

    /// On a machine without ROCm (CI, this project's build host) this checks the error path of
    /// the real entry point; with ROCm it checks that loading succeeds and is cached.
    #[test]
    fn load_is_cached_and_never_panics() {
        let a = Hip::load();
        let b = Hip::load();
        match (a, b) {
            (Ok(a), Ok(b)) => {
                assert!(std::ptr::eq(a, b));
                assert!(LIBRARY_NAMES.iter().any(|n| a.library.ends_with(n)));
            }
            (Err(a), Err(b)) => {
                assert_eq!(a, b);
                assert_eq!(a.tried, library_candidates());
                assert!(!a.last_error.is_empty());
            }
            _ => panic!("Hip::load is not cached"),
        }
    }

    #[test]
    fn c_chars() {
        let mut a = [0 as c_char; 8];
        for (d, s) in a.iter_mut().zip(b"gfx942") {
            *d = *s as c_char;
        }
        assert_eq!(c_chars_to_string(&a), "gfx942");
        let full = [b'x' as c_char; 4];
        assert_eq!(c_chars_to_string(&full), "xxxx");
    }

    #[test]
    fn launch_param_markers() {
        assert_eq!(HIP_LAUNCH_PARAM_BUFFER_POINTER as usize, 1);
        assert_eq!(HIP_LAUNCH_PARAM_BUFFER_SIZE as usize, 2);
        assert_eq!(HIP_LAUNCH_PARAM_END as usize, 3);
    }

    #[test]
    fn gcn_arch_name_offsets() {
        // The two fields attn-host depends on, spelled out as a runtime test as well.
        assert_eq!(
            std::mem::offset_of!(hipDeviceProp_tR0600, gcnArchName),
            1160
        );
        assert_eq!(
            std::mem::offset_of!(hipDeviceProp_tR0000Head, gcnArchName),
            396
        );
    }
}
