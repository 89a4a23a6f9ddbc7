//! NVIDIA (`nvptx64-nvidia-cuda`, sm_80 and up).
use core::arch::nvptx as n;

/// Lanes per warp.
pub const WAVE: u32 = 32;

unsafe extern "unadjusted" {
    #[link_name = "llvm.nvvm.shfl.sync.bfly.f32"]
    fn shfl_bfly_f32(mask: u32, v: f32, lane_mask: u32, clamp: u32) -> f32;
    #[link_name = "llvm.nvvm.shfl.sync.idx.i32"]
    fn shfl_idx_i32(mask: u32, v: i32, lane: u32, clamp: u32) -> i32;
    #[link_name = "llvm.nvvm.ex2.approx.ftz.f32"]
    fn ex2_approx_ftz(x: f32) -> f32;
    #[link_name = "llvm.nvvm.lg2.approx.ftz.f"]
    fn lg2_approx_ftz(x: f32) -> f32;
    #[link_name = "llvm.nvvm.rcp.approx.ftz.f"]
    fn rcp_approx_ftz(x: f32) -> f32;
}

/// Thread index in the (1-D) block.
#[inline(always)]
pub fn thread_idx() -> u32 {
    // SAFETY: reads the %tid.x special register; always valid inside a kernel.
    unsafe { n::_thread_idx_x() as u32 }
}

/// Block index `(x, y, z)` in the grid.
#[inline(always)]
pub fn block_idx() -> (u32, u32, u32) {
    // SAFETY: reads the %ctaid special registers; always valid inside a kernel.
    unsafe {
        (
            n::_block_idx_x() as u32,
            n::_block_idx_y() as u32,
            n::_block_idx_z() as u32,
        )
    }
}

/// `bar.sync 0`: block barrier with CTA-scope memory ordering of shared memory.
#[doc(alias = "bar.sync")]
#[inline(always)]
pub fn sync_threads() {
    // SAFETY: every thread of the block reaches each call site (callers keep it in uniform
    // control flow).
    unsafe { n::_syncthreads() }
}

/// Butterfly shuffle: the value of lane `lane ^ mask`.
#[doc(alias = "shfl.sync.bfly.b32")]
#[inline(always)]
pub fn shfl_xor_f32(v: f32, mask: u32) -> f32 {
    // SAFETY: full-warp mask; all 32 lanes execute the shuffle (uniform control flow).
    unsafe { shfl_bfly_f32(0xffff_ffff, v, mask, 0x1f) }
}

/// Indexed shuffle: the value of `v` held by lane `src` (`0 <= src < 32`) of the same warp.
#[doc(alias = "shfl.sync.idx.b32")]
#[inline(always)]
pub fn shfl_idx_u32(v: u32, src: u32) -> u32 {
    // SAFETY: full-warp mask; all 32 lanes execute the shuffle (uniform control flow).
    unsafe { shfl_idx_i32(0xffff_ffff, v as i32, src, 0x1f) as u32 }
}

/// `2^x` (`ex2.approx.ftz.f32`, one MUFU.EX2); `exp2(-inf) = 0`.
#[inline(always)]
pub fn exp2(x: f32) -> f32 {
    // SAFETY: pure arithmetic intrinsic.
    unsafe { ex2_approx_ftz(x) }
}

/// `log2(x)` (`lg2.approx.ftz.f32`).
#[inline(always)]
pub fn log2(x: f32) -> f32 {
    // SAFETY: pure arithmetic intrinsic.
    unsafe { lg2_approx_ftz(x) }
}

/// `1/x` (`rcp.approx.ftz.f32`).
#[inline(always)]
pub fn rcp(x: f32) -> f32 {
    // SAFETY: pure arithmetic intrinsic.
    unsafe { rcp_approx_ftz(x) }
}

/// 16-byte aligned type used to request the dynamic shared-memory base.
#[repr(C, align(16))]
struct Align16([u8; 16]);

/// Base of the launch-sized dynamic shared memory.
#[inline(always)]
pub fn dyn_smem() -> *mut u8 {
    core::intrinsics::gpu::gpu_launch_sized_workgroup_mem::<Align16>().cast()
}

/// Fused multiply-add `a * b + c`, rounded once.
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    core::intrinsics::fmaf32(a, b, c)
}

/// The 32-bit shared-window address of the dynamic shared-memory base.
#[inline(always)]
fn smem_base_u32() -> u32 {
    let r: u32;
    // SAFETY: pure address conversion of the dynamic shared-memory symbol. `pure` + `nomem` with
    // an unchanging input lets LLVM compute it once per kernel.
    unsafe {
        core::arch::asm!(
            "{{ .reg .u64 t; cvta.to.shared.u64 t, {p}; cvt.u32.u64 {r}, t; }}",
            r = out(reg32) r,
            p = in(reg64) dyn_smem(),
            options(pure, nomem, nostack)
        );
    }
    r
}

/// The 32-bit shared-window address of a generic pointer into the dynamic shared memory (the
/// form `cp.async`, `ldmatrix` and friends take): the base's window address plus the byte offset,
/// so each access costs an integer add instead of its own `cvta.to.shared`.
///
/// Every shared pointer in these kernels is derived from [`dyn_smem`].
#[inline(always)]
pub fn smem_u32<T>(p: *const T) -> u32 {
    smem_base_u32().wrapping_add((p as usize).wrapping_sub(dyn_smem() as usize) as u32)
}

/// Copies 16 bytes from global `src` to shared `dst` asynchronously (`cp.async.cg`), or writes
/// 16 zero bytes when `valid` is false (then `src` is not read). Completes at [`async_wait_all`].
///
/// # Safety
/// `dst` is 16-byte aligned shared memory; when `valid`, `src` is 16-byte aligned and readable.
#[doc(alias = "cp.async.cg.shared.global")]
#[inline(always)]
pub unsafe fn copy16_async(dst: *mut u8, src: *const u8, valid: bool) {
    let n: u32 = if valid { 16 } else { 0 };
    // SAFETY: forwarded from the caller; with src-size 0 the source is not read.
    unsafe {
        core::arch::asm!(
            "cp.async.cg.shared.global [{d}], [{s}], 16, {n};",
            d = in(reg32) smem_u32(dst),
            s = in(reg64) src,
            n = in(reg32) n,
            options(nostack)
        );
    }
}

/// Copies the first `bytes` (0..=16) of a 16-byte chunk from global `src` to shared `dst`
/// asynchronously (`cp.async.cg` with a source size) and zero-fills the rest of the chunk.
/// Completes at [`async_wait_all`].
///
/// # Safety
/// `dst` and `src` are 16-byte aligned; `src` is readable for `bytes` bytes; `bytes <= 16`.
#[inline(always)]
pub unsafe fn copy16_async_part(dst: *mut u8, src: *const u8, bytes: u32) {
    // SAFETY: forwarded from the caller; only `bytes` source bytes are read.
    unsafe {
        core::arch::asm!(
            "cp.async.cg.shared.global [{d}], [{s}], 16, {n};",
            d = in(reg32) smem_u32(dst),
            s = in(reg64) src,
            n = in(reg32) bytes,
            options(nostack)
        );
    }
}

/// Copies 4 bytes from global `src` to shared `dst` asynchronously (`cp.async.ca`), or writes 4
/// zero bytes when `valid` is false (then `src` is not read). Completes at [`async_wait_all`].
///
/// # Safety
/// `dst` is 4-byte aligned shared memory; when `valid`, `src` is 4-byte aligned and readable.
#[doc(alias = "cp.async.ca.shared.global")]
#[inline(always)]
pub unsafe fn copy4_async(dst: *mut u8, src: *const u8, valid: bool) {
    let n: u32 = if valid { 4 } else { 0 };
    // SAFETY: forwarded from the caller; with src-size 0 the source is not read.
    unsafe {
        core::arch::asm!(
            "cp.async.ca.shared.global [{d}], [{s}], 4, {n};",
            d = in(reg32) smem_u32(dst),
            s = in(reg64) src,
            n = in(reg32) n,
            options(nostack)
        );
    }
}

/// Closes the group of copies issued since the last commit (`cp.async.commit_group`).
#[inline(always)]
pub fn async_commit() {
    // SAFETY: no operands; only groups this thread's earlier copies.
    unsafe { core::arch::asm!("cp.async.commit_group;", options(nostack)) };
}

/// Waits until every asynchronous copy group of this thread but the most recently committed one
/// has landed (`cp.async.wait_group 1`): a two-deep pipeline's wait.
#[inline(always)]
pub fn async_wait_prior() {
    // SAFETY: waits on this thread's own copy groups; no memory is named.
    unsafe { core::arch::asm!("cp.async.wait_group 1;", options(nostack)) };
}

/// Waits until every asynchronous copy of this thread has landed (`cp.async.wait_all`). Other
/// threads' copies become visible after a following [`sync_threads`].
#[inline(always)]
pub fn async_wait_all() {
    // SAFETY: no operands; blocks this thread until its copies complete.
    unsafe { core::arch::asm!("cp.async.wait_all;", options(nostack)) };
}

/// `*p += v` as one atomic reduction in device memory (`red.global.add.f32`: no value returns,
/// so the SM does not wait for L2).
///
/// # Safety
/// `p` is a 4-byte aligned, writable f32 of global memory.
#[inline(always)]
pub unsafe fn atomic_add_f32(p: *mut f32, v: f32) {
    // SAFETY: the caller's contract; `cvta.to.global` maps the generic address to the global
    // window the instruction takes.
    unsafe {
        core::arch::asm!(
            "{{ .reg .u64 g; cvta.to.global.u64 g, {p}; red.global.add.f32 [g], {v}; }}",
            p = in(reg64) p,
            v = in(reg32) v,
            options(nostack)
        )
    };
}

/// Whether this target adds a shared-memory tile into global memory with one bulk instruction
/// ([`bulk_reduce_add_f32`]: `cp.reduce.async.bulk`, sm_90); elsewhere callers add element by
/// element ([`atomic_add_f32`]).
pub const BULK_REDUCE: bool = cfg!(target_feature = "sm_90a");

/// `dst[i] += src[i]` for the `bytes / 4` f32 of shared `src`, into global `dst`, by the bulk
/// copy engine (sm_90: one `cp.reduce.async.bulk ... .add.f32`, issued by the calling thread and
/// completed asynchronously; [`bulk_commit`] closes the group, [`bulk_wait_read`] waits until
/// `src` may be rewritten, [`bulk_wait_all`] until `dst` is written). The threads that wrote
/// `src` call [`fence_proxy_async`] and meet at a barrier before it is issued. Without
/// [`BULK_REDUCE`], the calling thread adds element by element.
///
/// # Safety
/// `src` is 16-byte aligned shared memory and `dst` 16-byte aligned writable global memory,
/// both `bytes` long (a multiple of 16).
#[inline(always)]
pub unsafe fn bulk_reduce_add_f32(dst: *mut f32, src: *const f32, bytes: u32) {
    #[cfg(target_feature = "sm_90a")]
    // SAFETY: the caller's contract.
    unsafe {
        core::arch::asm!(
            "{{ .reg .u64 g; cvta.to.global.u64 g, {d}; \
             cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [g], [{s}], {n}; }}",
            d = in(reg64) dst,
            s = in(reg32) smem_u32(src),
            n = in(reg32) bytes,
            options(nostack)
        )
    };
    #[cfg(not(target_feature = "sm_90a"))]
    for i in 0..bytes as usize / 4 {
        // SAFETY: the caller's contract (element i < bytes / 4 of both).
        unsafe { atomic_add_f32(dst.add(i), *src.add(i)) };
    }
}

/// Closes this thread's group of bulk operations (`cp.async.bulk.commit_group`; nothing without
/// [`BULK_REDUCE`]).
#[inline(always)]
pub fn bulk_commit() {
    #[cfg(target_feature = "sm_90a")]
    // SAFETY: no operands.
    unsafe {
        core::arch::asm!("cp.async.bulk.commit_group;", options(nostack))
    };
}

/// Waits until this thread's bulk operations have read their shared sources
/// (`cp.async.bulk.wait_group.read 0`; nothing without [`BULK_REDUCE`]).
#[inline(always)]
pub fn bulk_wait_read() {
    #[cfg(target_feature = "sm_90a")]
    // SAFETY: no operands.
    unsafe {
        core::arch::asm!("cp.async.bulk.wait_group.read 0;", options(nostack))
    };
}

/// Waits until this thread's bulk operations are complete (`cp.async.bulk.wait_group 0`;
/// nothing without [`BULK_REDUCE`]).
#[inline(always)]
pub fn bulk_wait_all() {
    #[cfg(target_feature = "sm_90a")]
    // SAFETY: no operands.
    unsafe {
        core::arch::asm!("cp.async.bulk.wait_group 0;", options(nostack))
    };
}

/// Orders this thread's shared-memory writes before later bulk (async-proxy) reads of them
/// (`fence.proxy.async.shared::cta`; nothing without [`BULK_REDUCE`]).
#[inline(always)]
pub fn fence_proxy_async() {
    #[cfg(target_feature = "sm_90a")]
    // SAFETY: no operands.
    unsafe {
        core::arch::asm!("fence.proxy.async.shared::cta;", options(nostack))
    };
}

/// Rounds `lo`, `hi` to f16 (nearest even) and packs them, `lo` in bits 0..16
/// (`cvt.rn.f16x2.f32`, one instruction).
#[doc(alias = "cvt.rn.f16x2.f32")]
#[inline(always)]
pub fn pack_f16x2(lo: f32, hi: f32) -> u32 {
    let r: u32;
    // SAFETY: pure register conversion. The first source goes to the upper half.
    unsafe {
        core::arch::asm!("cvt.rn.f16x2.f32 {}, {}, {};", out(reg32) r, in(reg32) hi, in(reg32) lo,
            options(pure, nomem, nostack));
    }
    r
}

/// Rounds `lo`, `hi` to bf16 (nearest even) and packs them, `lo` in bits 0..16
/// (`cvt.rn.bf16x2.f32`, one instruction).
#[doc(alias = "cvt.rn.bf16x2.f32")]
#[inline(always)]
pub fn pack_bf16x2(lo: f32, hi: f32) -> u32 {
    let r: u32;
    // SAFETY: pure register conversion. The first source goes to the upper half.
    unsafe {
        core::arch::asm!("cvt.rn.bf16x2.f32 {}, {}, {};", out(reg32) r, in(reg32) hi, in(reg32) lo,
            options(pure, nomem, nostack));
    }
    r
}

/// `f32` to bf16 bits, round to nearest even (`cvt.rn.bf16.f32`, sm_80+).
#[doc(alias = "cvt.rn.bf16.f32")]
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    let r: u16;
    // SAFETY: pure register conversion.
    unsafe {
        core::arch::asm!("cvt.rn.bf16.f32 {}, {};", out(reg16) r, in(reg32) x,
            options(pure, nomem, nostack));
    }
    r
}
