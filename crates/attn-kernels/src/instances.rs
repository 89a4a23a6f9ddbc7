//! The exported kernels. Each name follows [`attn_abi::KernelId`]; the tile shapes come from
//! [`crate::fwd::policy`], the single source the host also reads.
use crate::arch::WAVE;
use crate::atom::{MmaAtom, fma::FmaAtom};
use crate::fwd::{self, policy};
use crate::numeric::{Bf16, F16};
use attn_abi::{DType, EchoParams, FwdParams, KERNARG_WORDS, KernArgs};
use attn_macros::kernel;

/// Copies the kernel's argument image to `p.out` (ABI round-trip test).
#[kernel(threads = 32)]
pub fn attn_abi_echo(p: &EchoParams) {
    if crate::arch::thread_idx() == 0 {
        let args = KernArgs::new(p);
        let out = p.out as *mut u64;
        for w in 0..KERNARG_WORDS {
            // SAFETY: the host passes a buffer of KERNARG_WORDS u64.
            unsafe { *out.add(w) = args.0[w] };
        }
    }
}

/// Waves per forward block.
const WAVES: usize = policy::THREADS as usize / WAVE as usize;

/// Instantiates the FMA-atom forward kernel for one element type and head-dim bucket.
macro_rules! fwd_fma {
    ($name:ident, $elem:ty, $dtype:expr, $d:literal) => {
        /// Forward pass, FMA atom.
        #[kernel(threads = 128)]
        pub fn $name(p: &FwdParams) {
            type A = FmaAtom<$elem>;
            const T: policy::FwdTile = policy::fma_tile($dtype, $d);
            fwd::run::<
                A,
                WAVES,
                { T.tm },
                { T.block_n / <A as MmaAtom>::N },
                { $d / <A as MmaAtom>::N },
            >(p)
        }
    };
}

fwd_fma!(attn_fwd_f16_d32, F16, DType::F16, 32);
fwd_fma!(attn_fwd_f16_d64, F16, DType::F16, 64);
fwd_fma!(attn_fwd_f16_d128, F16, DType::F16, 128);
fwd_fma!(attn_fwd_f16_d256, F16, DType::F16, 256);
fwd_fma!(attn_fwd_bf16_d32, Bf16, DType::Bf16, 32);
fwd_fma!(attn_fwd_bf16_d64, Bf16, DType::Bf16, 64);
fwd_fma!(attn_fwd_bf16_d128, Bf16, DType::Bf16, 128);
fwd_fma!(attn_fwd_bf16_d256, Bf16, DType::Bf16, 256);
fwd_fma!(attn_fwd_f32_d32, f32, DType::F32, 32);
fwd_fma!(attn_fwd_f32_d64, f32, DType::F32, 64);
fwd_fma!(attn_fwd_f32_d128, f32, DType::F32, 128);
fwd_fma!(attn_fwd_f32_d256, f32, DType::F32, 256);
