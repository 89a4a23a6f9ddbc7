//! AMD (`amdgcn-amd-amdhsa`): CDNA2/3 (gfx90a, gfx942; wave64) and RDNA3 (gfx1100; wave32).
//!
//! No inline assembly exists on this target: everything goes through LLVM intrinsics. The RDNA3
//! build passes `--cfg gfx11`.
use core::arch::amdgpu as a;
use core::sync::atomic::{Ordering, compiler_fence};

/// Lanes per wavefront.
#[cfg(gfx11)]
pub const WAVE: u32 = 32;
/// Lanes per wavefront.
#[cfg(not(gfx11))]
pub const WAVE: u32 = 64;

/// `s_waitcnt lgkmcnt(0)` (everything else left at its maximum).
#[cfg(not(gfx11))]
const WAIT_LGKM0: i32 = 0xC07F;
/// `s_waitcnt lgkmcnt(0)` in the gfx11 encoding.
#[cfg(gfx11)]
const WAIT_LGKM0: i32 = 0xFC07;

unsafe extern "unadjusted" {
    #[link_name = "llvm.amdgcn.s.waitcnt"]
    fn s_waitcnt(imm: i32);
    #[link_name = "llvm.amdgcn.exp2.f32"]
    fn amdgcn_exp2(x: f32) -> f32;
    #[link_name = "llvm.amdgcn.log.f32"]
    fn amdgcn_log(x: f32) -> f32;
    #[link_name = "llvm.amdgcn.rcp.f32"]
    fn amdgcn_rcp(x: f32) -> f32;
}

/// Work-item index in the (1-D) workgroup.
#[inline(always)]
pub fn thread_idx() -> u32 {
    a::workitem_id_x()
}

/// Workgroup index `(x, y, z)` in the grid.
#[inline(always)]
pub fn block_idx() -> (u32, u32, u32) {
    (
        a::workgroup_id_x(),
        a::workgroup_id_y(),
        a::workgroup_id_z(),
    )
}

/// `s_waitcnt lgkmcnt(0); s_barrier`.
///
/// `s_barrier` alone does not wait for outstanding LDS writes on the back-off-barrier targets, so
/// the explicit wait is required (gpu-codegen.md §4.1); the compiler fences keep LLVM from moving
/// memory operations across it. A system-scope `atomic::fence` would add L2 write-back/invalidate.
#[doc(alias = "s_barrier")]
#[inline(always)]
pub fn sync_threads() {
    compiler_fence(Ordering::SeqCst);
    // SAFETY: `s_waitcnt` with a valid immediate only stalls the wave.
    unsafe { s_waitcnt(WAIT_LGKM0) };
    a::s_barrier();
    compiler_fence(Ordering::SeqCst);
}

/// Lane index from `mbcnt` (the hardware has no lane-id register).
#[inline(always)]
fn lane() -> u32 {
    a::mbcnt_hi(!0, a::mbcnt_lo(!0, 0))
}

/// Butterfly shuffle through `ds_bpermute_b32`: the value of lane `lane ^ mask`.
#[doc(alias = "ds_bpermute_b32")]
#[inline(always)]
pub fn shfl_xor_f32(v: f32, mask: u32) -> f32 {
    // SAFETY: the byte address selects a lane of this wave; all lanes are active (uniform flow).
    f32::from_bits(unsafe { a::ds_bpermute((lane() ^ mask) << 2, v.to_bits()) })
}

/// Indexed shuffle through `ds_bpermute_b32`: the value of `v` held by lane `src`
/// (`0 <= src < WAVE`) of the same wave.
#[doc(alias = "ds_bpermute_b32")]
#[inline(always)]
pub fn shfl_idx_u32(v: u32, src: u32) -> u32 {
    // SAFETY: the byte address selects a lane of this wave; all lanes are active (uniform flow).
    unsafe { a::ds_bpermute(src << 2, v) }
}

/// `2^x` (`v_exp_f32`); `exp2(-inf) = 0`.
#[inline(always)]
pub fn exp2(x: f32) -> f32 {
    // SAFETY: pure arithmetic intrinsic.
    unsafe { amdgcn_exp2(x) }
}

/// `log2(x)` (`v_log_f32`).
#[inline(always)]
pub fn log2(x: f32) -> f32 {
    // SAFETY: pure arithmetic intrinsic.
    unsafe { amdgcn_log(x) }
}

/// `1/x` (`v_rcp_f32`).
#[inline(always)]
pub fn rcp(x: f32) -> f32 {
    // SAFETY: pure arithmetic intrinsic.
    unsafe { amdgcn_rcp(x) }
}

/// 16-byte aligned type used to request the dynamic LDS base.
#[repr(C, align(16))]
struct Align16([u8; 16]);

/// Base of the launch-sized LDS allocation.
#[inline(always)]
pub fn dyn_smem() -> *mut u8 {
    core::intrinsics::gpu::gpu_launch_sized_workgroup_mem::<Align16>().cast()
}

/// Fused multiply-add `a * b + c`, rounded once.
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    core::intrinsics::fmaf32(a, b, c)
}

pub use super::soft::{
    BULK_REDUCE, async_commit, async_wait_all, async_wait_prior, atomic_add_f32, bulk_commit,
    bulk_reduce_add_f32, bulk_wait_all, bulk_wait_read, copy4_async, copy16_async,
    copy16_async_part, fence_proxy_async, pack_bf16x2, pack_f16x2,
};
