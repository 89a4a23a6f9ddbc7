//! FlashAttention-style attention kernels, written once in Rust and compiled by rustc's LLVM
//! backends to AMDGCN (`amdgcn-amd-amdhsa`: gfx90a, gfx942, gfx1100) and NVPTX
//! (`nvptx64-nvidia-cuda`: sm_80, sm_90a).
//!
//! | module | role |
//! |---|---|
//! | [`arch`] | the hardware boundary: ids, barriers, shuffles, fast math, conversions, shared memory |
//! | [`atom`] | matrix instructions behind one trait, [`atom::MmaAtom`], with lane maps |
//! | [`numeric`] | element types (`f16`, `bf16`, `f32`) |
//! | [`mask`] | which keys a query sees, and which key blocks to visit |
//! | [`score`] | the score pieces (softcap, bias, ALiBi) and dropout's Philox mask |
//! | [`seq`] | one sequence of a call: batch or varlen, `seqused_k`, clamped device lengths |
//! | [`fwd`] | the forward pipeline (online softmax) and its tile policy |
//! | [`bwd`] | the backward pipeline (`delta`, `dq`, `dk`/`dv`) and its tile policy |
//! | [`instances`] | the exported kernels, named by [`attn_abi::KernelId`] |
//!
//! Only `arch/` and `atom/` may name a target. On the host the crate builds on stable Rust and
//! `arch::host` emulates a block with OS threads, so the kernels themselves run in `cargo test`.
//! `cargo xtask build-kernels` builds the GPU code objects.
#![cfg_attr(gpu, no_std)]
#![cfg_attr(
    gpu,
    feature(
        abi_gpu_kernel,
        abi_unadjusted,
        core_intrinsics,
        f16,
        gpu_intrinsics,
        gpu_launch_sized_workgroup_mem,
        link_llvm_intrinsics,
        simd_ffi,
    )
)]
#![cfg_attr(target_arch = "amdgpu", feature(repr_simd, stdarch_amdgpu))]
#![cfg_attr(target_arch = "nvptx64", feature(asm_experimental_arch, stdarch_nvptx))]
#![cfg_attr(gpu, allow(internal_features))]

pub mod arch;
pub mod atom;
pub mod bwd;
pub mod fwd;
pub mod instances;
pub mod mask;
pub mod numeric;
pub mod score;
pub mod seq;

/// Kernels cannot unwind; `-Cpanic=immediate-abort` turns every panic path into a trap.
#[cfg(gpu)]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
