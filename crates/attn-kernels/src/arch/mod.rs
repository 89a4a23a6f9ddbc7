//! The hardware boundary: the **only** module (with `atom/`) that names a target architecture.
//!
//! Everything above it (tiles, softmax, masks, the forward pipeline) is written once against this
//! surface, which every target implements with the same names and signatures:
//!
//! | item | meaning |
//! |---|---|
//! | `WAVE` | lanes per warp (NVIDIA, RDNA3: 32) or wavefront (CDNA: 64) |
//! | `thread_idx()`, `block_idx()` | work-item id in the block; block id `(x, y, z)` in the grid |
//! | `sync_threads()` | block-wide barrier that also orders shared-memory (LDS) accesses |
//! | `shfl_xor_f32(v, m)` | value of `v` held by lane `lane ^ m` of the same wave |
//! | `shfl_idx_u32(v, s)` | value of `v` held by lane `s` of the same wave |
//! | `exp2`, `log2`, `rcp` | fast special functions (`ex2.approx.ftz`, `v_exp_f32`, …) |
//! | `f16_to_f32`, … | conversions between `f32` and the 16-bit storage formats |
//! | `dyn_smem()` | base of the launch-sized shared memory / LDS (16-byte aligned) |
//! | `atomic_add_f32(p, v)` | `*p += v` on device memory, atomically (`red.global.add.f32`, a CAS loop elsewhere) |
//! | `bulk_reduce_add_f32`, `bulk_*`, `fence_proxy_async` | a shared tile added into global memory by one instruction (sm_90's `cp.reduce.async.bulk`; `BULK_REDUCE`), element by element elsewhere |
//!
//! `host.rs` emulates a block with OS threads, so the same kernel bodies run in `cargo test`.

#[cfg(target_arch = "amdgpu")]
mod amdgpu;
#[cfg(target_arch = "amdgpu")]
pub use amdgpu::*;

#[cfg(target_arch = "nvptx64")]
mod nvptx;

#[cfg(not(target_arch = "nvptx64"))]
mod soft;
#[cfg(target_arch = "nvptx64")]
pub use nvptx::*;

#[cfg(not(any(target_arch = "amdgpu", target_arch = "nvptx64")))]
pub mod host;
#[cfg(not(any(target_arch = "amdgpu", target_arch = "nvptx64")))]
pub use host::{
    BULK_REDUCE, WAVE, async_commit, async_wait_all, async_wait_prior, atomic_add_f32, block_idx,
    bulk_commit, bulk_reduce_add_f32, bulk_wait_all, bulk_wait_read, copy4_async, copy16_async,
    copy16_async_part, dyn_smem, exp2, fence_proxy_async, fma, log2, pack_bf16x2, pack_f16x2, rcp,
    shfl_idx_u32, shfl_xor_f32, sync_threads, thread_idx,
};

/// Lane index within the wave.
#[inline(always)]
pub fn lane_id() -> u32 {
    thread_idx() % WAVE
}

/// Wave (warp) index within the block.
#[inline(always)]
pub fn wave_id() -> u32 {
    thread_idx() / WAVE
}

/// Portable conversions between `f32` and the 16-bit formats.
///
/// bf16 is converted with integer round-to-nearest-even on every target (gfx942 has no bf16
/// convert instruction; the three integer ops are as cheap as NVIDIA's `cvt.rn.bf16.f32`).
pub mod cvt {
    /// bf16 bits to `f32` (exact).
    #[inline(always)]
    pub fn bf16_to_f32(x: u16) -> f32 {
        f32::from_bits((x as u32) << 16)
    }

    #[cfg(target_arch = "nvptx64")]
    pub use super::nvptx::f32_to_bf16;

    /// `f32` to bf16 bits, round to nearest even; NaN stays NaN.
    #[cfg(not(target_arch = "nvptx64"))]
    #[inline(always)]
    pub fn f32_to_bf16(x: f32) -> u16 {
        let u = x.to_bits();
        if x.is_nan() {
            return ((u >> 16) | 0x0040) as u16;
        }
        ((u + 0x7fff + ((u >> 16) & 1)) >> 16) as u16
    }

    #[cfg(any(target_arch = "amdgpu", target_arch = "nvptx64"))]
    pub use super::gpu_f16::{f16_to_f32, f32_to_f16};
    #[cfg(not(any(target_arch = "amdgpu", target_arch = "nvptx64")))]
    pub use super::host::{f16_to_f32, f32_to_f16};
}

/// IEEE half conversions through the nightly `f16` primitive: one `cvt` on NVIDIA,
/// `v_cvt_f16_f32` / `v_cvt_f32_f16` on AMD.
#[cfg(any(target_arch = "amdgpu", target_arch = "nvptx64"))]
mod gpu_f16 {
    /// f16 bits to `f32` (exact).
    #[inline(always)]
    pub fn f16_to_f32(x: u16) -> f32 {
        f16::from_bits(x) as f32
    }
    /// `f32` to f16 bits, round to nearest even.
    #[inline(always)]
    pub fn f32_to_f16(x: f32) -> u16 {
        (x as f16).to_bits()
    }
}
