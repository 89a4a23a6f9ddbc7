//! [`Device`], [`Stream`] and [`DeviceBuffer`]: RAII over a [`Backend`], written once for both
//! runtimes.
use crate::code_objects;
use crate::driver::{Api, Backend, DeviceInfo, FunctionHandle, ModuleHandle, Ptr, StreamHandle};
use crate::error::{Error, Result};
use attn_abi::{KernArgs, KernelId};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, OnceLock};

struct Inner {
    backend: Box<dyn Backend>,
    /// The code object loaded for this device: `(target name, module)`.
    module: OnceLock<std::result::Result<(String, ModuleHandle), Error>>,
    functions: Mutex<HashMap<KernelId, FunctionHandle>>,
}

/// A GPU, CUDA or HIP. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct Device {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device").field("info", self.info()).finish()
    }
}

impl Device {
    fn from_backend(backend: Box<dyn Backend>) -> Self {
        Device {
            inner: Arc::new(Inner {
                backend,
                module: OnceLock::new(),
                functions: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// CUDA device `ordinal`.
    pub fn cuda(ordinal: u32) -> Result<Self> {
        Ok(Self::from_backend(Box::new(
            crate::driver::cuda::CudaDevice::new(ordinal)?,
        )))
    }

    /// HIP device `ordinal`.
    pub fn hip(ordinal: u32) -> Result<Self> {
        Ok(Self::from_backend(Box::new(
            crate::driver::hip::HipDevice::new(ordinal)?,
        )))
    }

    /// The first device that works and has a matching code object: CUDA device 0, then HIP
    /// device 0. The error says why each runtime was not usable.
    pub fn best() -> Result<Self> {
        let mut why = Vec::new();
        for api in [Api::Cuda, Api::Hip] {
            let dev = match api {
                Api::Cuda => Self::cuda(0),
                Api::Hip => Self::hip(0),
            };
            match dev.and_then(|d| d.code_object_target().map(|_| d)) {
                Ok(d) => return Ok(d),
                Err(e) => why.push(format!("{}: {e}", api.name())),
            }
        }
        Err(Error::NoDevice {
            reason: why.join("; "),
        })
    }

    /// What this device is.
    pub fn info(&self) -> &DeviceInfo {
        self.inner.backend.info()
    }

    pub(crate) fn backend(&self) -> &dyn Backend {
        &*self.inner.backend
    }

    /// Loads (once) the embedded code object for this device's architecture and returns its
    /// target name, e.g. `"sm_90a"` or `"gfx942"`.
    pub fn code_object_target(&self) -> Result<String> {
        self.module().map(|(t, _)| t.clone())
    }

    /// Loads `image` as this device's code object instead of the embedded one: a cubin, PTX or
    /// hsaco that `cargo xtask build-kernels` (or `ptxas` on its PTX) built for `target` from
    /// this version's kernels, whose tile policy is `target`'s ([`Device::tile_family`]). For
    /// trying a retuned code object without rebuilding the host (`attn --code-object`). The
    /// runtime copies the image.
    ///
    /// Must come before anything that loads the code object (a launch, [`Device::best`]'s
    /// probe, [`Device::code_object_target`]); afterwards it is an `InvalidArgument`.
    pub fn load_code_object(&self, target: &str, image: &[u8]) -> Result<()> {
        self.load_instead(target, [image])
    }

    /// Loads the embedded code object of `target` instead of the device's own (e.g. `"sm_80"` on
    /// a Hopper GPU, whose own is `sm_90a`): its cubin where that runs, else its PTX (JIT). Same
    /// rules as [`Device::load_code_object`].
    pub fn load_embedded(&self, target: &str) -> Result<()> {
        use code_objects::Format;
        let images: Vec<&[u8]> = [Format::Cubin, Format::Hsaco, Format::Ptx]
            .into_iter()
            .flat_map(|f| {
                code_objects::CODE_OBJECTS
                    .iter()
                    .filter(move |c| c.target == target && c.format == f)
            })
            .map(|c| c.bytes)
            .collect();
        if images.is_empty() {
            return Err(Error::unsupported(format!(
                "no embedded code object for {target}"
            )));
        }
        self.load_instead(target, images)
    }

    /// Loads the first of `images` (code objects of `target`) that the runtime accepts as this
    /// device's code object, before the embedded one is.
    fn load_instead<'a>(
        &self,
        target: &str,
        images: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<()> {
        attn_kernels::fwd::policy::Family::of_arch(target)
            .ok_or_else(|| Error::unsupported(format!("no tile policy for target {target}")))?;
        let loaded = |got| {
            Error::invalid(
                "code object",
                "a device whose code object is not loaded yet",
                got,
            )
        };
        if self.inner.module.get().is_some() {
            return Err(loaded("one already loaded"));
        }
        let module = self
            .first_loading(images.into_iter().map(|image| (target, image)))
            .map_err(|errors| {
                Error::unsupported(format!("no code object loads here: {}", errors.join("; ")))
            })?;
        self.inner
            .module
            .set(Ok(module))
            .map_err(|_| loaded("one loaded meanwhile"))
    }

    /// The first of `candidates` (`(target, image)`) that the runtime loads, with its target;
    /// otherwise why each did not (`"target: error"`).
    fn first_loading<'a>(
        &self,
        candidates: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> std::result::Result<(String, ModuleHandle), Vec<String>> {
        let mut errors = Vec::new();
        for (target, image) in candidates {
            match self.inner.backend.load_module(image) {
                Ok(m) => return Ok((target.to_string(), m)),
                Err(e) => errors.push(format!("{target}: {e}")),
            }
        }
        Err(errors)
    }

    fn module(&self) -> Result<&(String, ModuleHandle)> {
        self.inner
            .module
            .get_or_init(|| {
                let info = self.info();
                let candidates = match info.api {
                    Api::Cuda => {
                        let (major, minor) = info.compute_capability;
                        code_objects::cuda_candidates(major, minor)
                    }
                    Api::Hip => code_objects::hip_code_object(&info.arch)
                        .into_iter()
                        .collect(),
                };
                self.first_loading(candidates.iter().map(|c| (c.target, c.bytes)))
                    .map_err(|errors| {
                        Error::unsupported(if candidates.is_empty() {
                            format!("no embedded code object for {} ({})", info.arch, info.name)
                        } else {
                            format!(
                                "no embedded code object loads on {}: {}",
                                info.arch,
                                errors.join("; ")
                            )
                        })
                    })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The tile family of the code object loaded for this device (not of the device name: a
    /// newer GPU may be running the sm_80 PTX): what every plan of a launch on it uses.
    pub fn tile_family(&self) -> Result<attn_kernels::fwd::policy::Family> {
        let target = self.code_object_target()?;
        attn_kernels::fwd::policy::Family::of_arch(&target)
            .ok_or_else(|| Error::unsupported(format!("no tile policy for code object {target}")))
    }

    /// The kernel `id` of this device's code object (looked up once).
    pub(crate) fn function(&self, id: KernelId, shared_bytes: u32) -> Result<FunctionHandle> {
        let mut fns = self
            .inner
            .functions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(&f) = fns.get(&id) {
            return Ok(f);
        }
        let (_, module) = self.module()?;
        let f = self.inner.backend.get_function(*module, &id.to_string())?;
        if shared_bytes > 48 * 1024 {
            self.inner.backend.set_max_dynamic_shared(f, shared_bytes)?;
        }
        fns.insert(id, f);
        Ok(f)
    }

    /// Launches kernel `id`.
    ///
    /// # Safety
    /// `args` must be valid parameters for the kernel: every device address in it valid for
    /// the accesses the kernel makes with those shapes.
    pub(crate) unsafe fn launch(
        &self,
        id: KernelId,
        grid: [u32; 3],
        threads: u32,
        shared_bytes: u32,
        stream: &Stream,
        args: &KernArgs,
    ) -> Result<()> {
        let f = self.function(id, shared_bytes)?;
        // SAFETY: forwarded from the caller.
        unsafe {
            self.backend()
                .launch(f, grid, [threads, 1, 1], shared_bytes, stream.handle, args)
        }
    }

    /// The runtime's default stream.
    pub fn default_stream(&self) -> Stream {
        Stream {
            device: self.clone(),
            handle: 0,
            owned: false,
            keep: None,
        }
    }

    /// A new non-blocking stream.
    pub fn new_stream(&self) -> Result<Stream> {
        Ok(Stream {
            device: self.clone(),
            handle: self.backend().stream_create()?,
            owned: true,
            keep: None,
        })
    }

    /// Wraps a stream created by the caller's own runtime code (e.g. a `CUstream`).
    ///
    /// # Safety
    /// `handle` must be a live stream of this device's context and outlive the returned value.
    pub unsafe fn stream_from_raw(&self, handle: StreamHandle) -> Stream {
        Stream {
            device: self.clone(),
            handle,
            owned: false,
            keep: None,
        }
    }

    /// [`Device::stream_from_raw`] that also holds `keep` (the owner of the stream, e.g. a
    /// cudarc `Arc<CudaStream>`) for as long as the returned stream lives.
    ///
    /// # Safety
    /// `handle` must be a live stream of this device's context while `keep` is alive.
    #[cfg_attr(not(feature = "cudarc"), allow(dead_code))]
    pub(crate) unsafe fn stream_from_raw_kept(
        &self,
        handle: StreamHandle,
        keep: Box<dyn std::any::Any + Send + Sync>,
    ) -> Stream {
        Stream {
            device: self.clone(),
            handle,
            owned: false,
            keep: Some(keep),
        }
    }

    /// Allocates `len` elements of device memory (contents unspecified).
    pub fn alloc<T: bytemuck::Pod>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        let bytes = len
            .checked_mul(size_of::<T>())
            .ok_or_else(|| Error::invalid("len", "a size that fits in memory", len))?;
        let ptr = self.backend().malloc(bytes)?;
        Ok(DeviceBuffer {
            device: self.clone(),
            ptr,
            len,
            _t: PhantomData,
        })
    }

    /// Allocates and copies `data` to the device.
    pub fn clone_htod<T: bytemuck::Pod>(&self, data: &[T]) -> Result<DeviceBuffer<T>> {
        let buf = self.alloc::<T>(data.len())?;
        // SAFETY: `buf` is a fresh allocation of exactly `size_of_val(data)` bytes.
        unsafe {
            self.backend()
                .htod(buf.ptr, data.as_ptr().cast(), size_of_val(data), 0)?;
        }
        Ok(buf)
    }
}

/// A stream of work on one device.
pub struct Stream {
    device: Device,
    handle: StreamHandle,
    owned: bool,
    /// The owner of a borrowed stream, kept alive with it (see `Device::stream_from_raw_kept`).
    keep: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Stream {
    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }
    /// The runtime handle (`CUstream` / `hipStream_t`).
    pub fn raw(&self) -> StreamHandle {
        self.handle
    }
    /// What [`Device::stream_from_raw_kept`] keeps alive with this stream.
    #[cfg_attr(not(feature = "cudarc"), allow(dead_code))]
    pub(crate) fn kept(&self) -> Option<&(dyn std::any::Any + Send + Sync)> {
        self.keep.as_deref()
    }
    /// Waits for all work on the stream; reports asynchronous kernel failures.
    pub fn synchronize(&self) -> Result<()> {
        self.device.backend().stream_synchronize(self.handle)
    }
    /// Times `f`'s work on this stream with device events, in milliseconds.
    pub fn time_ms(&self, f: impl FnOnce(&Stream) -> Result<()>) -> Result<f32> {
        let b = self.device.backend();
        let (start, end) = (b.event_create()?, b.event_create()?);
        let r = (|| {
            b.event_record(start, self.handle)?;
            f(self)?;
            b.event_record(end, self.handle)?;
            b.event_elapsed_ms(start, end)
        })();
        // SAFETY: both events came from `event_create` above and are no longer used.
        unsafe {
            let _ = b.event_destroy(start);
            let _ = b.event_destroy(end);
        }
        r
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: we created the stream and nothing else refers to it.
            let _ = unsafe { self.device.backend().stream_destroy(self.handle) };
        }
    }
}

/// Device memory owned by this crate: `len` elements of `T`, freed on drop.
pub struct DeviceBuffer<T> {
    device: Device,
    ptr: Ptr,
    len: usize,
    _t: PhantomData<T>,
}

impl<T> std::fmt::Debug for DeviceBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceBuffer")
            .field("ptr", &format_args!("{:#x}", self.ptr))
            .field("len", &self.len)
            .finish()
    }
}

impl<T> DeviceBuffer<T> {
    /// The device the buffer lives on.
    #[cfg_attr(not(feature = "cudarc"), allow(dead_code))]
    pub(crate) fn device(&self) -> &Device {
        &self.device
    }
}

impl<T: bytemuck::Pod> DeviceBuffer<T> {
    /// The device address.
    pub fn ptr(&self) -> Ptr {
        self.ptr
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Copies the buffer to the host (waits for `stream` first).
    pub fn to_host(&self, stream: &Stream) -> Result<Vec<T>> {
        let mut v = vec![T::zeroed(); self.len];
        // SAFETY: `v` holds exactly the buffer's bytes; the buffer is live.
        unsafe {
            self.device.backend().dtoh(
                v.as_mut_ptr().cast(),
                self.ptr,
                size_of_val(&v[..]),
                stream.raw(),
            )?;
        }
        Ok(v)
    }
    /// Fills every byte with `value` (asynchronous on `stream`), e.g. to poison outputs.
    pub fn fill_bytes(&mut self, value: u8, stream: &Stream) -> Result<()> {
        // SAFETY: the range is exactly this live buffer.
        unsafe {
            self.device.backend().memset_d8(
                self.ptr,
                value,
                self.len * size_of::<T>(),
                stream.raw(),
            )
        }
    }
}

impl<T> Drop for DeviceBuffer<T> {
    fn drop(&mut self) {
        // SAFETY: we allocated `ptr`; synchronous free waits for pending work on it.
        let _ = unsafe { self.device.backend().free(self.ptr) };
    }
}
