//! C types, constants and structs of the HIP runtime API, transcribed by hand.
//!
//! Source: `include/hip/hip_runtime_api.h` and `include/hip/hip_deprecated.h` of
//! <https://github.com/ROCm/HIP> at commit `c5e11fcac8249ce4f7e70157588ff9661a870b59`
//! (2024-10-16, ROCm 6.3 era). The `hipDeviceProp_tR0600` struct, the `hipDeviceAttribute_t`
//! values used here and the `hipError_t` values are unchanged in
//! `projects/hip/include/hip/hip_runtime_api.h` of <https://github.com/ROCm/rocm-systems> at
//! commit `003a5d106dc36c137c76d6c8bb51f7fa5564bdfc` (ROCm 7 era; it only appends new error codes
//! and attributes). The offsets asserted at the bottom of this file were produced by compiling the
//! header's struct definitions with GCC (x86-64 Linux, LP64) and printing `offsetof`.
#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals)]

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::mem::offset_of;

/// `hipError_t`: the status every runtime call returns (a C enum, 32 bits).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct hipError_t(pub c_int);

impl hipError_t {
    /// `hipSuccess`.
    pub const SUCCESS: Self = Self(0);
    /// `hipErrorInvalidValue`.
    pub const INVALID_VALUE: Self = Self(1);
    /// `hipErrorOutOfMemory`.
    pub const OUT_OF_MEMORY: Self = Self(2);
    /// `hipErrorNotInitialized`.
    pub const NOT_INITIALIZED: Self = Self(3);
    /// `hipErrorInvalidDeviceFunction`.
    pub const INVALID_DEVICE_FUNCTION: Self = Self(98);
    /// `hipErrorNoDevice`: returned by `hipInit`/`hipGetDeviceCount` when there is no GPU.
    pub const NO_DEVICE: Self = Self(100);
    /// `hipErrorInvalidDevice`.
    pub const INVALID_DEVICE: Self = Self(101);
    /// `hipErrorInvalidImage`.
    pub const INVALID_IMAGE: Self = Self(200);
    /// `hipErrorNoBinaryForGpu`: the code object has no code for this GPU.
    pub const NO_BINARY_FOR_GPU: Self = Self(209);
    /// `hipErrorNotFound` (e.g. a kernel symbol missing from a module).
    pub const NOT_FOUND: Self = Self(500);
    /// `hipErrorNotReady`.
    pub const NOT_READY: Self = Self(600);
    /// `hipErrorIllegalAddress`.
    pub const ILLEGAL_ADDRESS: Self = Self(700);
    /// `hipErrorLaunchOutOfResources`.
    pub const LAUNCH_OUT_OF_RESOURCES: Self = Self(701);
    /// `hipErrorLaunchFailure`.
    pub const LAUNCH_FAILURE: Self = Self(719);
    /// `hipErrorNotSupported`.
    pub const NOT_SUPPORTED: Self = Self(801);
    /// `hipErrorUnknown`.
    pub const UNKNOWN: Self = Self(999);

    /// Whether this is `hipSuccess`.
    pub const fn is_success(self) -> bool {
        self.0 == 0
    }

    /// The enumerator name from the header, without calling the runtime (see
    /// [`crate::error_name`]).
    pub fn static_name(self) -> Option<&'static str> {
        crate::error_name(self.0)
    }
}

/// `hipDevice_t`: a device ordinal.
pub type hipDevice_t = c_int;
/// `hipDeviceptr_t`: a device address.
pub type hipDeviceptr_t = *mut c_void;
/// `hipModule_t`: an opaque loaded code object.
pub type hipModule_t = *mut c_void;
/// `hipFunction_t`: an opaque kernel handle inside a module.
pub type hipFunction_t = *mut c_void;
/// `hipStream_t`: an opaque stream (null is the default stream).
pub type hipStream_t = *mut c_void;
/// `hipEvent_t`: an opaque event.
pub type hipEvent_t = *mut c_void;
/// `hipGraph_t`: an opaque captured graph.
pub type hipGraph_t = *mut c_void;
/// `hipGraphExec_t`: an opaque instantiated (launchable) graph.
pub type hipGraphExec_t = *mut c_void;
/// `hipGraphNode_t`: an opaque graph node.
pub type hipGraphNode_t = *mut c_void;
/// `hipStreamCaptureMode`: a C enum passed as `int`.
pub type hipStreamCaptureMode = c_int;
/// `hipStreamCaptureModeRelaxed`: capture does not forbid unsafe calls on other threads.
pub const hipStreamCaptureModeRelaxed: hipStreamCaptureMode = 2;
/// `hipDeviceAttribute_t`: a C enum passed as `int`; values in [`attr`].
pub type hipDeviceAttribute_t = c_int;
/// `hipFuncAttribute`: a C enum passed as `int`.
pub type hipFuncAttribute = c_int;

/// `hipFuncAttributeMaxDynamicSharedMemorySize`.
pub const hipFuncAttributeMaxDynamicSharedMemorySize: hipFuncAttribute = 8;

/// `HIP_LAUNCH_PARAM_BUFFER_POINTER`: `extra[0]` of `hipModuleLaunchKernel`.
pub const HIP_LAUNCH_PARAM_BUFFER_POINTER: *mut c_void = std::ptr::without_provenance_mut(0x01);
/// `HIP_LAUNCH_PARAM_BUFFER_SIZE`: `extra[2]` of `hipModuleLaunchKernel`.
pub const HIP_LAUNCH_PARAM_BUFFER_SIZE: *mut c_void = std::ptr::without_provenance_mut(0x02);
/// `HIP_LAUNCH_PARAM_END`: `extra[4]` of `hipModuleLaunchKernel`.
pub const HIP_LAUNCH_PARAM_END: *mut c_void = std::ptr::without_provenance_mut(0x03);

/// Values of `hipDeviceAttribute_t` (for `hipDeviceGetAttribute`).
///
/// The CUDA-compatible block is a plain sequence starting at 0, the AMD-specific block starts at
/// 10000; the numbers were computed by compiling the header's enum with GCC.
pub mod attr {
    use super::hipDeviceAttribute_t;

    /// `hipDeviceAttributeClockRate`: peak clock in kHz.
    pub const CLOCK_RATE: hipDeviceAttribute_t = 5;
    /// `hipDeviceAttributeL2CacheSize`: bytes.
    pub const L2_CACHE_SIZE: hipDeviceAttribute_t = 19;
    /// `hipDeviceAttributeComputeCapabilityMajor`.
    pub const COMPUTE_CAPABILITY_MAJOR: hipDeviceAttribute_t = 23;
    /// `hipDeviceAttributeMaxBlockDimX`.
    pub const MAX_BLOCK_DIM_X: hipDeviceAttribute_t = 26;
    /// `hipDeviceAttributeMaxGridDimX`.
    pub const MAX_GRID_DIM_X: hipDeviceAttribute_t = 29;
    /// `hipDeviceAttributeMaxThreadsPerBlock`.
    pub const MAX_THREADS_PER_BLOCK: hipDeviceAttribute_t = 56;
    /// `hipDeviceAttributeComputeCapabilityMinor`.
    pub const COMPUTE_CAPABILITY_MINOR: hipDeviceAttribute_t = 61;
    /// `hipDeviceAttributeMultiprocessorCount`: compute units (or WGPs in WGP mode).
    pub const MULTIPROCESSOR_COUNT: hipDeviceAttribute_t = 63;
    /// `hipDeviceAttributePciBusId`.
    pub const PCI_BUS_ID: hipDeviceAttribute_t = 67;
    /// `hipDeviceAttributeMaxRegistersPerBlock`.
    pub const MAX_REGISTERS_PER_BLOCK: hipDeviceAttribute_t = 71;
    /// `hipDeviceAttributeMaxSharedMemoryPerBlock`: bytes.
    pub const MAX_SHARED_MEMORY_PER_BLOCK: hipDeviceAttribute_t = 74;
    /// `hipDeviceAttributeSharedMemPerBlockOptin`: bytes.
    pub const SHARED_MEM_PER_BLOCK_OPTIN: hipDeviceAttribute_t = 75;
    /// `hipDeviceAttributeSharedMemPerMultiprocessor`: bytes.
    pub const SHARED_MEM_PER_MULTIPROCESSOR: hipDeviceAttribute_t = 76;
    /// `hipDeviceAttributeTotalGlobalMem` (an `int`: truncated above 2 GiB; prefer
    /// `hipDeviceTotalMem`).
    pub const TOTAL_GLOBAL_MEM: hipDeviceAttribute_t = 84;
    /// `hipDeviceAttributeWarpSize`: 32 or 64.
    pub const WARP_SIZE: hipDeviceAttribute_t = 87;
    /// `hipDeviceAttributeMaxSharedMemoryPerMultiprocessor` (AMD specific): bytes.
    pub const MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: hipDeviceAttribute_t = 10002;
    /// `hipDeviceAttributeAsicRevision` (AMD specific).
    pub const ASIC_REVISION: hipDeviceAttribute_t = 10012;
}

/// `hipUUID`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct hipUUID {
    /// The 16 UUID bytes.
    pub bytes: [c_char; 16],
}

/// `hipDeviceArch_t`: 17 one-bit feature flags in one `unsigned int`.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct hipDeviceArch_t(pub c_uint);

/// `hipDeviceProp_tR0600`: the device-property struct of ROCm 6 and later, filled by
/// `hipGetDevicePropertiesR0600`. Field-for-field copy of the header; do not reorder.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct hipDeviceProp_tR0600 {
    /// Device name (NUL-terminated).
    pub name: [c_char; 256],
    /// UUID of the device.
    pub uuid: hipUUID,
    /// 8-byte LUID (Windows only).
    pub luid: [c_char; 8],
    /// LUID node mask.
    pub luidDeviceNodeMask: c_uint,
    /// Global memory in bytes.
    pub totalGlobalMem: usize,
    /// Shared memory (LDS) per block in bytes.
    pub sharedMemPerBlock: usize,
    /// Registers per block.
    pub regsPerBlock: c_int,
    /// Warp (wavefront) size.
    pub warpSize: c_int,
    /// Maximum pitch of memory copies.
    pub memPitch: usize,
    /// Maximum threads per block.
    pub maxThreadsPerBlock: c_int,
    /// Maximum block dimensions.
    pub maxThreadsDim: [c_int; 3],
    /// Maximum grid dimensions.
    pub maxGridSize: [c_int; 3],
    /// Clock in kHz.
    pub clockRate: c_int,
    /// Constant memory in bytes.
    pub totalConstMem: usize,
    /// "Major compute capability" (an approximation on AMD).
    pub major: c_int,
    /// "Minor compute capability" (an approximation on AMD).
    pub minor: c_int,
    /// Texture alignment.
    pub textureAlignment: usize,
    /// Texture pitch alignment.
    pub texturePitchAlignment: usize,
    /// Deprecated.
    pub deviceOverlap: c_int,
    /// Number of multiprocessors (compute units).
    pub multiProcessorCount: c_int,
    /// Kernel run-time limit.
    pub kernelExecTimeoutEnabled: c_int,
    /// APU vs dGPU.
    pub integrated: c_int,
    /// Host memory can be mapped.
    pub canMapHostMemory: c_int,
    /// Compute mode.
    pub computeMode: c_int,
    /// Texture limit.
    pub maxTexture1D: c_int,
    /// Texture limit.
    pub maxTexture1DMipmap: c_int,
    /// Texture limit.
    pub maxTexture1DLinear: c_int,
    /// Texture limit.
    pub maxTexture2D: [c_int; 2],
    /// Texture limit.
    pub maxTexture2DMipmap: [c_int; 2],
    /// Texture limit.
    pub maxTexture2DLinear: [c_int; 3],
    /// Texture limit.
    pub maxTexture2DGather: [c_int; 2],
    /// Texture limit.
    pub maxTexture3D: [c_int; 3],
    /// Texture limit.
    pub maxTexture3DAlt: [c_int; 3],
    /// Texture limit.
    pub maxTextureCubemap: c_int,
    /// Texture limit.
    pub maxTexture1DLayered: [c_int; 2],
    /// Texture limit.
    pub maxTexture2DLayered: [c_int; 3],
    /// Texture limit.
    pub maxTextureCubemapLayered: [c_int; 2],
    /// Surface limit.
    pub maxSurface1D: c_int,
    /// Surface limit.
    pub maxSurface2D: [c_int; 2],
    /// Surface limit.
    pub maxSurface3D: [c_int; 3],
    /// Surface limit.
    pub maxSurface1DLayered: [c_int; 2],
    /// Surface limit.
    pub maxSurface2DLayered: [c_int; 3],
    /// Surface limit.
    pub maxSurfaceCubemap: c_int,
    /// Surface limit.
    pub maxSurfaceCubemapLayered: [c_int; 2],
    /// Surface alignment.
    pub surfaceAlignment: usize,
    /// Concurrent kernels supported.
    pub concurrentKernels: c_int,
    /// ECC enabled.
    pub ECCEnabled: c_int,
    /// PCI bus id.
    pub pciBusID: c_int,
    /// PCI device id.
    pub pciDeviceID: c_int,
    /// PCI domain id.
    pub pciDomainID: c_int,
    /// TCC driver (CUDA only).
    pub tccDriver: c_int,
    /// Async engines.
    pub asyncEngineCount: c_int,
    /// Unified addressing.
    pub unifiedAddressing: c_int,
    /// Memory clock in kHz.
    pub memoryClockRate: c_int,
    /// Memory bus width in bits.
    pub memoryBusWidth: c_int,
    /// L2 cache in bytes.
    pub l2CacheSize: c_int,
    /// Persisting L2 maximum.
    pub persistingL2CacheMaxSize: c_int,
    /// Maximum resident threads per multiprocessor.
    pub maxThreadsPerMultiProcessor: c_int,
    /// Stream priorities supported.
    pub streamPrioritiesSupported: c_int,
    /// Globals cached in L1.
    pub globalL1CacheSupported: c_int,
    /// Locals cached in L1.
    pub localL1CacheSupported: c_int,
    /// Shared memory per multiprocessor in bytes.
    pub sharedMemPerMultiprocessor: usize,
    /// Registers per multiprocessor.
    pub regsPerMultiprocessor: c_int,
    /// Managed memory supported.
    pub managedMemory: c_int,
    /// On a multi-GPU board.
    pub isMultiGpuBoard: c_int,
    /// Multi-GPU board group id.
    pub multiGpuBoardGroupID: c_int,
    /// Native host atomics.
    pub hostNativeAtomicSupported: c_int,
    /// Deprecated (CUDA only).
    pub singleToDoublePrecisionPerfRatio: c_int,
    /// Pageable memory access.
    pub pageableMemoryAccess: c_int,
    /// Concurrent managed access.
    pub concurrentManagedAccess: c_int,
    /// Compute preemption.
    pub computePreemptionSupported: c_int,
    /// Host pointer usable for registered memory.
    pub canUseHostPointerForRegisteredMem: c_int,
    /// Cooperative launch.
    pub cooperativeLaunch: c_int,
    /// Cooperative multi-device launch.
    pub cooperativeMultiDeviceLaunch: c_int,
    /// Shared memory per block with opt-in, in bytes.
    pub sharedMemPerBlockOptin: usize,
    /// Pageable memory via host page tables.
    pub pageableMemoryAccessUsesHostPageTables: c_int,
    /// Direct managed memory access from host.
    pub directManagedMemAccessFromHost: c_int,
    /// Maximum blocks per CU.
    pub maxBlocksPerMultiProcessor: c_int,
    /// Access policy window maximum.
    pub accessPolicyMaxWindowSize: c_int,
    /// Shared memory reserved per block.
    pub reservedSharedMemPerBlock: usize,
    /// `hipHostRegister` supported.
    pub hostRegisterSupported: c_int,
    /// Sparse arrays supported.
    pub sparseHipArraySupported: c_int,
    /// Read-only host registration supported.
    pub hostRegisterReadOnlySupported: c_int,
    /// Timeline semaphore interop.
    pub timelineSemaphoreInteropSupported: c_int,
    /// Memory pools supported.
    pub memoryPoolsSupported: c_int,
    /// GPUDirect RDMA supported.
    pub gpuDirectRDMASupported: c_int,
    /// GPUDirect RDMA flush options.
    pub gpuDirectRDMAFlushWritesOptions: c_uint,
    /// GPUDirect RDMA write ordering.
    pub gpuDirectRDMAWritesOrdering: c_int,
    /// Memory pool handle types.
    pub memoryPoolSupportedHandleTypes: c_uint,
    /// Deferred mapping arrays supported.
    pub deferredMappingHipArraySupported: c_int,
    /// IPC events supported.
    pub ipcEventSupported: c_int,
    /// Cluster launch supported.
    pub clusterLaunch: c_int,
    /// Unified function pointers.
    pub unifiedFunctionPointers: c_int,
    /// CUDA reserved.
    pub reserved: [c_int; 63],
    /// HIP reserved.
    pub hipReserved: [c_int; 32],
    /// AMD architecture name, e.g. `gfx942:sramecc+:xnack-` (NUL-terminated).
    pub gcnArchName: [c_char; 256],
    /// Maximum shared memory (LDS) per CU in bytes.
    pub maxSharedMemoryPerMultiProcessor: usize,
    /// Frequency of the device `clock*` timer in kHz.
    pub clockInstructionRate: c_int,
    /// Architecture feature flags.
    pub arch: hipDeviceArch_t,
    /// Address of `HDP_MEM_COHERENCY_FLUSH_CNTL`.
    pub hdpMemFlushCntl: *mut c_uint,
    /// Address of `HDP_REG_COHERENCY_FLUSH_CNTL`.
    pub hdpRegFlushCntl: *mut c_uint,
    /// Cooperative multi-device launch with unmatched functions.
    pub cooperativeMultiDeviceUnmatchedFunc: c_int,
    /// Cooperative multi-device launch with unmatched grid dims.
    pub cooperativeMultiDeviceUnmatchedGridDim: c_int,
    /// Cooperative multi-device launch with unmatched block dims.
    pub cooperativeMultiDeviceUnmatchedBlockDim: c_int,
    /// Cooperative multi-device launch with unmatched shared memory.
    pub cooperativeMultiDeviceUnmatchedSharedMem: c_int,
    /// Large-BAR device.
    pub isLargeBar: c_int,
    /// ASIC revision.
    pub asicRevision: c_int,
}

/// `hipDeviceProp_tR0000`: the pre-ROCm-6 device-property struct (from `hip_deprecated.h`), which
/// the unversioned exported symbol `hipGetDeviceProperties` still fills in ROCm 6 and later
/// (ROCm/clr `hipamd/src/hip_device.cpp`: `extern "C" hipError_t
/// hipGetDeviceProperties(hipDeviceProp_tR0000*, hipDevice_t)`).
///
/// Only the leading fields up to and including `gcnArchName` are transcribed; callers must pass a
/// buffer at least [`HIP_DEVICE_PROP_R0000_SIZE`] bytes large (see `crate::DevicePropsBuf`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct hipDeviceProp_tR0000Head {
    /// Device name (NUL-terminated).
    pub name: [c_char; 256],
    /// Global memory in bytes.
    pub totalGlobalMem: usize,
    /// Shared memory (LDS) per block in bytes.
    pub sharedMemPerBlock: usize,
    /// Registers per block.
    pub regsPerBlock: c_int,
    /// Warp (wavefront) size.
    pub warpSize: c_int,
    /// Maximum threads per block.
    pub maxThreadsPerBlock: c_int,
    /// Maximum block dimensions.
    pub maxThreadsDim: [c_int; 3],
    /// Maximum grid dimensions.
    pub maxGridSize: [c_int; 3],
    /// Clock in kHz.
    pub clockRate: c_int,
    /// Memory clock in kHz.
    pub memoryClockRate: c_int,
    /// Memory bus width in bits.
    pub memoryBusWidth: c_int,
    /// Constant memory in bytes.
    pub totalConstMem: usize,
    /// "Major compute capability".
    pub major: c_int,
    /// "Minor compute capability".
    pub minor: c_int,
    /// Number of multiprocessors (compute units).
    pub multiProcessorCount: c_int,
    /// L2 cache in bytes.
    pub l2CacheSize: c_int,
    /// Maximum resident threads per multiprocessor.
    pub maxThreadsPerMultiProcessor: c_int,
    /// Compute mode.
    pub computeMode: c_int,
    /// Frequency of the device `clock*` timer in kHz.
    pub clockInstructionRate: c_int,
    /// Architecture feature flags.
    pub arch: hipDeviceArch_t,
    /// Concurrent kernels supported.
    pub concurrentKernels: c_int,
    /// PCI domain id.
    pub pciDomainID: c_int,
    /// PCI bus id.
    pub pciBusID: c_int,
    /// PCI device id.
    pub pciDeviceID: c_int,
    /// Maximum shared memory (LDS) per CU in bytes.
    pub maxSharedMemoryPerMultiProcessor: usize,
    /// On a multi-GPU board.
    pub isMultiGpuBoard: c_int,
    /// Host memory can be mapped.
    pub canMapHostMemory: c_int,
    /// Deprecated numeric architecture.
    pub gcnArch: c_int,
    /// AMD architecture name (NUL-terminated).
    pub gcnArchName: [c_char; 256],
}

/// `sizeof(hipDeviceProp_tR0600)` on LP64 (GCC).
pub const HIP_DEVICE_PROP_R0600_SIZE: usize = 1472;
/// `sizeof(hipDeviceProp_tR0000)` on LP64 (GCC), for the complete legacy struct.
pub const HIP_DEVICE_PROP_R0000_SIZE: usize = 792;

// Offsets printed by GCC for the header's own struct definitions (see the module docs).
#[cfg(target_pointer_width = "64")]
const _: () = {
    type P = hipDeviceProp_tR0600;
    assert!(size_of::<P>() == HIP_DEVICE_PROP_R0600_SIZE);
    assert!(align_of::<P>() == 8);
    assert!(offset_of!(P, name) == 0);
    assert!(offset_of!(P, uuid) == 256);
    assert!(offset_of!(P, luid) == 272);
    assert!(offset_of!(P, luidDeviceNodeMask) == 280);
    assert!(offset_of!(P, totalGlobalMem) == 288);
    assert!(offset_of!(P, sharedMemPerBlock) == 296);
    assert!(offset_of!(P, regsPerBlock) == 304);
    assert!(offset_of!(P, warpSize) == 308);
    assert!(offset_of!(P, memPitch) == 312);
    assert!(offset_of!(P, maxThreadsPerBlock) == 320);
    assert!(offset_of!(P, clockRate) == 348);
    assert!(offset_of!(P, totalConstMem) == 352);
    assert!(offset_of!(P, major) == 360);
    assert!(offset_of!(P, minor) == 364);
    assert!(offset_of!(P, textureAlignment) == 368);
    assert!(offset_of!(P, multiProcessorCount) == 388);
    assert!(offset_of!(P, surfaceAlignment) == 568);
    assert!(offset_of!(P, l2CacheSize) == 616);
    assert!(offset_of!(P, sharedMemPerMultiprocessor) == 640);
    assert!(offset_of!(P, cooperativeMultiDeviceLaunch) == 692);
    assert!(offset_of!(P, sharedMemPerBlockOptin) == 696);
    assert!(offset_of!(P, reservedSharedMemPerBlock) == 720);
    assert!(offset_of!(P, unifiedFunctionPointers) == 776);
    assert!(offset_of!(P, reserved) == 780);
    assert!(offset_of!(P, hipReserved) == 1032);
    assert!(offset_of!(P, gcnArchName) == 1160);
    assert!(offset_of!(P, maxSharedMemoryPerMultiProcessor) == 1416);
    assert!(offset_of!(P, clockInstructionRate) == 1424);
    assert!(offset_of!(P, arch) == 1428);
    assert!(offset_of!(P, hdpMemFlushCntl) == 1432);
    assert!(offset_of!(P, hdpRegFlushCntl) == 1440);
    assert!(offset_of!(P, cooperativeMultiDeviceUnmatchedFunc) == 1448);
    assert!(offset_of!(P, isLargeBar) == 1464);
    assert!(offset_of!(P, asicRevision) == 1468);

    type L = hipDeviceProp_tR0000Head;
    assert!(size_of::<L>() <= HIP_DEVICE_PROP_R0000_SIZE);
    assert!(offset_of!(L, name) == 0);
    assert!(offset_of!(L, totalGlobalMem) == 256);
    assert!(offset_of!(L, sharedMemPerBlock) == 264);
    assert!(offset_of!(L, regsPerBlock) == 272);
    assert!(offset_of!(L, clockRate) == 308);
    assert!(offset_of!(L, totalConstMem) == 320);
    assert!(offset_of!(L, multiProcessorCount) == 336);
    assert!(offset_of!(L, l2CacheSize) == 340);
    assert!(offset_of!(L, clockInstructionRate) == 352);
    assert!(offset_of!(L, arch) == 356);
    assert!(offset_of!(L, concurrentKernels) == 360);
    assert!(offset_of!(L, pciDeviceID) == 372);
    assert!(offset_of!(L, maxSharedMemoryPerMultiProcessor) == 376);
    assert!(offset_of!(L, isMultiGpuBoard) == 384);
    assert!(offset_of!(L, gcnArch) == 392);
    assert!(offset_of!(L, gcnArchName) == 396);

    assert!(size_of::<hipDeviceArch_t>() == 4);
    assert!(size_of::<hipUUID>() == 16);
    assert!(size_of::<hipError_t>() == 4);
};
