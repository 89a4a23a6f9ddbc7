//! The exported kernels. Each name follows [`attn_abi::KernelId`]; the tile shapes come from
//! [`crate::fwd::policy::fwd_tile`], the single source the host also reads. f16/bf16 run on the
//! target's matrix atom ([`crate::atom::Native`]), f32 on the FMA atom.
use crate::arch::WAVE;
use crate::atom::{FAMILY, MmaAtom, Native, fma::FmaAtom};
use crate::bwd::{self, policy::BwdKernel};
use crate::fwd::{self, policy};
use crate::numeric::{Bf16, F16};
use attn_abi::{
    BwdParams, BwdVariant, DType, EchoParams, FwdParams, FwdVariant, KERNARG_WORDS, KernArgs,
    MergeParams, PhiloxAdvanceParams, ZeroParams,
};
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

/// One step of a device-resident Philox generator ([`PhiloxAdvanceParams`]):
/// `snapshot = state; state.offset += increment` (wrapping), by one thread.
#[kernel(threads = 64)]
pub fn attn_philox_advance(p: &PhiloxAdvanceParams) {
    if crate::arch::thread_idx() == 0 && crate::arch::block_idx() == (0, 0, 0) {
        let state = p.state as *mut u64;
        // SAFETY: the host passes live, 8-byte aligned `[seed, offset]` pairs that no other
        // thread of this launch touches; `snapshot` is null or distinct from `state`.
        unsafe {
            let (seed, offset) = (*state, *state.add(1));
            if p.snapshot != 0 {
                let snap = p.snapshot as *mut u64;
                *snap = seed;
                *snap.add(1) = offset;
            }
            *state.add(1) = offset.wrapping_add(p.increment);
        }
    }
}

/// Waves per forward block.
const WAVES: usize = policy::THREADS as usize / WAVE as usize;

/// Writes the hidden positions of the dropout keep mask (see [`fwd::dropout_mask`]).
#[kernel(threads = 128)]
pub fn attn_dropout_mask(p: &FwdParams) {
    fwd::dropout_mask::run(p)
}

/// Instantiates the forward kernel for one atom, element type, head-dim bucket and variant
/// ([`attn_abi::FwdVariant`]). The decode kernels are memory-bound and ask ptxas for three
/// resident blocks per SM (at most 170 registers) where their accumulators allow it: more blocks,
/// more loads in flight.
macro_rules! fwd {
    ($name:ident, $variant:ident, $atom:ty, $dtype:expr, $d:literal) => {
        fwd!($name, $variant, $atom, $dtype, $d, blocks = 1);
    };
    // `blocks`: resident blocks per SM asked of ptxas (`#[kernel(blocks = M)]`).
    ($name:ident, $variant:ident, $atom:ty, $dtype:expr, $d:literal, blocks = $b:literal) => {
        /// Forward pass.
        #[kernel(threads = 128, blocks = $b)]
        pub fn $name(p: &FwdParams) {
            type A = $atom;
            const T: policy::FwdTile =
                policy::fwd_tile_of(FAMILY, $dtype, $d, FwdVariant::$variant);
            const { assert!(T.block_m == WAVES / T.key_waves * T.tm * <A as MmaAtom>::M) };
            const { assert!(T.p_in_smem == !<A as MmaAtom>::P_IN_REGISTERS) };
            const { assert!($b == policy::min_blocks(FwdVariant::$variant, $dtype, $d)) };
            if !policy::instantiated(FAMILY, $dtype, $d, FwdVariant::$variant) {
                // A stub: the host never launches it (see `policy::instantiated`). It stores its
                // own id where no launch could ask for it, so that stubs stay distinct symbols
                // (identical empty kernels would be merged into aliases, which AMD rejects).
                if p.heads_q == 0 && p.out != 0 {
                    let id = $d as u32 * 16 + $dtype as u32 * 4 + FwdVariant::$variant as u32;
                    // SAFETY: unreachable from the host (it rejects Hq = 0 launches).
                    unsafe { *(p.out as *mut u32) = id };
                }
                return;
            }
            fwd::run::<
                A,
                WAVES,
                { T.tm },
                { T.block_n / T.key_waves / <A as MmaAtom>::N },
                { $d / <A as MmaAtom>::N },
                { T.block_n / T.key_waves / <A as MmaAtom>::K },
                { T.split_kv },
                { !matches!(FwdVariant::$variant, FwdVariant::Plain) },
                {
                    matches!(
                        FwdVariant::$variant,
                        FwdVariant::Pieces | FwdVariant::Decode
                    )
                },
                { matches!(FwdVariant::$variant, FwdVariant::Decode) },
            >(p)
        }
    };
}

fwd!(attn_fwd_f16_d32, Plain, Native<F16>, DType::F16, 32);
fwd!(attn_fwd_f16_d32_varlen, Varlen, Native<F16>, DType::F16, 32);
fwd!(attn_fwd_f16_d32_pieces, Pieces, Native<F16>, DType::F16, 32);
fwd!(attn_fwd_f16_d64, Plain, Native<F16>, DType::F16, 64);
fwd!(attn_fwd_f16_d64_varlen, Varlen, Native<F16>, DType::F16, 64);
fwd!(attn_fwd_f16_d64_pieces, Pieces, Native<F16>, DType::F16, 64);
fwd!(attn_fwd_f16_d128, Plain, Native<F16>, DType::F16, 128);
fwd!(
    attn_fwd_f16_d128_varlen,
    Varlen,
    Native<F16>,
    DType::F16,
    128
);
fwd!(
    attn_fwd_f16_d128_pieces,
    Pieces,
    Native<F16>,
    DType::F16,
    128
);
fwd!(attn_fwd_f16_d256, Plain, Native<F16>, DType::F16, 256);
fwd!(
    attn_fwd_f16_d256_varlen,
    Varlen,
    Native<F16>,
    DType::F16,
    256
);
fwd!(
    attn_fwd_f16_d256_pieces,
    Pieces,
    Native<F16>,
    DType::F16,
    256
);
fwd!(attn_fwd_bf16_d32, Plain, Native<Bf16>, DType::Bf16, 32);
fwd!(
    attn_fwd_bf16_d32_varlen,
    Varlen,
    Native<Bf16>,
    DType::Bf16,
    32
);
fwd!(
    attn_fwd_bf16_d32_pieces,
    Pieces,
    Native<Bf16>,
    DType::Bf16,
    32
);
fwd!(attn_fwd_bf16_d64, Plain, Native<Bf16>, DType::Bf16, 64);
fwd!(
    attn_fwd_bf16_d64_varlen,
    Varlen,
    Native<Bf16>,
    DType::Bf16,
    64
);
fwd!(
    attn_fwd_bf16_d64_pieces,
    Pieces,
    Native<Bf16>,
    DType::Bf16,
    64
);
fwd!(attn_fwd_bf16_d128, Plain, Native<Bf16>, DType::Bf16, 128);
fwd!(
    attn_fwd_bf16_d128_varlen,
    Varlen,
    Native<Bf16>,
    DType::Bf16,
    128
);
fwd!(
    attn_fwd_bf16_d128_pieces,
    Pieces,
    Native<Bf16>,
    DType::Bf16,
    128
);
fwd!(attn_fwd_bf16_d256, Plain, Native<Bf16>, DType::Bf16, 256);
fwd!(
    attn_fwd_bf16_d256_varlen,
    Varlen,
    Native<Bf16>,
    DType::Bf16,
    256
);
fwd!(
    attn_fwd_bf16_d256_pieces,
    Pieces,
    Native<Bf16>,
    DType::Bf16,
    256
);
fwd!(attn_fwd_f32_d32, Plain, FmaAtom<f32>, DType::F32, 32);
fwd!(
    attn_fwd_f32_d32_varlen,
    Varlen,
    FmaAtom<f32>,
    DType::F32,
    32
);
fwd!(
    attn_fwd_f32_d32_pieces,
    Pieces,
    FmaAtom<f32>,
    DType::F32,
    32
);
fwd!(attn_fwd_f32_d64, Plain, FmaAtom<f32>, DType::F32, 64);
fwd!(
    attn_fwd_f32_d64_varlen,
    Varlen,
    FmaAtom<f32>,
    DType::F32,
    64
);
fwd!(
    attn_fwd_f32_d64_pieces,
    Pieces,
    FmaAtom<f32>,
    DType::F32,
    64
);
fwd!(attn_fwd_f32_d128, Plain, FmaAtom<f32>, DType::F32, 128);
fwd!(
    attn_fwd_f32_d128_varlen,
    Varlen,
    FmaAtom<f32>,
    DType::F32,
    128
);
fwd!(
    attn_fwd_f32_d128_pieces,
    Pieces,
    FmaAtom<f32>,
    DType::F32,
    128
);
fwd!(attn_fwd_f32_d256, Plain, FmaAtom<f32>, DType::F32, 256);
fwd!(
    attn_fwd_f32_d256_varlen,
    Varlen,
    FmaAtom<f32>,
    DType::F32,
    256
);
fwd!(
    attn_fwd_f32_d256_pieces,
    Pieces,
    FmaAtom<f32>,
    DType::F32,
    256
);
fwd!(
    attn_fwd_f16_d32_decode,
    Decode,
    Native<F16>,
    DType::F16,
    32,
    blocks = 3
);
fwd!(
    attn_fwd_f16_d64_decode,
    Decode,
    Native<F16>,
    DType::F16,
    64,
    blocks = 3
);
fwd!(
    attn_fwd_f16_d128_decode,
    Decode,
    Native<F16>,
    DType::F16,
    128,
    blocks = 1
);
fwd!(
    attn_fwd_f16_d256_decode,
    Decode,
    Native<F16>,
    DType::F16,
    256,
    blocks = 1
);
fwd!(
    attn_fwd_bf16_d32_decode,
    Decode,
    Native<Bf16>,
    DType::Bf16,
    32,
    blocks = 3
);
fwd!(
    attn_fwd_bf16_d64_decode,
    Decode,
    Native<Bf16>,
    DType::Bf16,
    64,
    blocks = 3
);
fwd!(
    attn_fwd_bf16_d128_decode,
    Decode,
    Native<Bf16>,
    DType::Bf16,
    128,
    blocks = 1
);
fwd!(
    attn_fwd_bf16_d256_decode,
    Decode,
    Native<Bf16>,
    DType::Bf16,
    256,
    blocks = 1
);
fwd!(
    attn_fwd_f32_d32_decode,
    Decode,
    FmaAtom<f32>,
    DType::F32,
    32,
    blocks = 3
);
fwd!(
    attn_fwd_f32_d64_decode,
    Decode,
    FmaAtom<f32>,
    DType::F32,
    64,
    blocks = 3
);
fwd!(
    attn_fwd_f32_d128_decode,
    Decode,
    FmaAtom<f32>,
    DType::F32,
    128,
    blocks = 1
);
fwd!(
    attn_fwd_f32_d256_decode,
    Decode,
    FmaAtom<f32>,
    DType::F32,
    256,
    blocks = 1
);

/// Instantiates the merge kernel for one (partial, output) element-type pair.
macro_rules! merge {
    ($name:ident, $in:ty, $out:ty) => {
        /// Merge of partial attention outputs by their lse.
        #[kernel(threads = 128)]
        pub fn $name(p: &MergeParams) {
            fwd::merge::run::<$in, $out>(p)
        }
    };
}

merge!(attn_merge_f16_f16, F16, F16);
merge!(attn_merge_f16_bf16, F16, Bf16);
merge!(attn_merge_f16_f32, F16, f32);
merge!(attn_merge_bf16_f16, Bf16, F16);
merge!(attn_merge_bf16_bf16, Bf16, Bf16);
merge!(attn_merge_bf16_f32, Bf16, f32);
merge!(attn_merge_f32_f16, f32, F16);
merge!(attn_merge_f32_bf16, f32, Bf16);
merge!(attn_merge_f32_f32, f32, f32);

/// Instantiates a backward kernel (`Dq` or `Dkdv`, [`BwdVariant`]) for one atom, element type
/// and head-dim bucket (tiles: [`bwd::policy::bwd_tile`]; a stub where
/// [`bwd::policy::bwd_instantiated`] says the tiles do not fit).
macro_rules! bwd {
    (
        $name:ident, $kernel:ident, $variant:ident, $run:ident, $atom:ty, $dtype:expr, $d:literal,
        blocks = $b:literal, $(walks = $passes:ident,)? tail = [$($tail:tt)*]
    ) => {
        /// Backward pass.
        #[kernel(threads = 128, blocks = $b)]
        pub fn $name(p: &BwdParams) {
            type A = $atom;
            const V: BwdVariant = BwdVariant::$variant;
            const T: bwd::policy::BwdTile =
                bwd::policy::bwd_tile(FAMILY, $dtype, $d, BwdKernel::$kernel, V);
            const {
                assert!($b == bwd::policy::bwd_min_blocks($dtype, $d, BwdKernel::$kernel, V))
            };
            const { assert!(T.block_rows == WAVES * T.tm * <A as MmaAtom>::M) };
            const { assert!(T.p_in_smem == !<A as MmaAtom>::P_IN_REGISTERS) };
            if !bwd::policy::bwd_instantiated(FAMILY, $dtype, $d, BwdKernel::$kernel, V) {
                // A stub, distinct from the others (see the forward's).
                if p.fwd.heads_q == 0 && p.dq != 0 {
                    let id = $d as u32 * 16 + $dtype as u32 * 4 + BwdKernel::$kernel as u32;
                    // SAFETY: unreachable from the host (it rejects Hq = 0 launches).
                    unsafe { *(p.dq as *mut u32) = id + 0x1000 + 0x100 * V as u32 };
                }
                return;
            }
            bwd::$run::<
                A,
                WAVES,
                { T.tm },
                { T.block_cols / <A as MmaAtom>::N },
                { $d / <A as MmaAtom>::N },
                { $d / T.slices / <A as MmaAtom>::N },
                { T.block_cols / <A as MmaAtom>::K },
                $({ T.$passes },)?
                { T.prefetch },
                { matches!(V, BwdVariant::Pieces) },
                $($tail)*
            >(p)
        }
    };
}

/// The four backward kernels of one (atom, dtype, head-dim bucket): `dq` and `dk + dv`, plain
/// (asking for `blocks = (dq's, dk + dv's)` resident blocks, [`bwd::policy::bwd_min_blocks`])
/// and with the pieces.
macro_rules! bwd_set {
    (
        $dq:ident, $dkdv:ident, $dq_p:ident, $dkdv_p:ident, $atom:ty, $dtype:expr, $d:literal,
        blocks = ($bq:literal, $bk:literal)
    ) => {
        bwd!(
            $dq,
            Dq,
            Plain,
            run_dq,
            $atom,
            $dtype,
            $d,
            blocks = $bq,
            tail = []
        );
        bwd!(
            $dkdv,
            Dkdv,
            Plain,
            run_dkdv,
            $atom,
            $dtype,
            $d,
            blocks = $bk,
            walks = passes,
            tail = [false, 1, 1]
        );
        bwd!(
            $dq_p,
            Dq,
            Pieces,
            run_dq,
            $atom,
            $dtype,
            $d,
            blocks = 1,
            tail = []
        );
        bwd!(
            $dkdv_p,
            Dkdv,
            Pieces,
            run_dkdv,
            $atom,
            $dtype,
            $d,
            blocks = 1,
            walks = passes,
            tail = [false, 1, 1]
        );
    };
}

/// The fused backward kernel (`dK`, `dV` and atomic `dQ` in one walk: `BwdKernel::Fused`) of one
/// 16-bit dtype and head-dim bucket: `QM · M` queries (the step) by `D / WAVES` head-dim columns
/// of `dQ` per wave. Built where [`bwd::policy::bwd_instantiated`] says (a stub on AMD).
macro_rules! bwd_fused {
    ($name:ident, $atom:ty, $dtype:expr, $d:literal, blocks = $b:literal) => {
        bwd!(
            $name,
            Fused,
            Plain,
            run_dkdv,
            $atom,
            $dtype,
            $d,
            blocks = $b,
            walks = passes,
            // (DQ is false where the kernel is a stub: that tile need not fit the dQ step.)
            tail = [
                { bwd::policy::bwd_instantiated(FAMILY, $dtype, $d, BwdKernel::Fused, V) },
                { T.block_cols / <A as MmaAtom>::M },
                { $d / <A as MmaAtom>::N / WAVES }
            ]
        );
    };
}

bwd_fused!(
    attn_bwd_fused_f16_d32,
    Native<F16>,
    DType::F16,
    32,
    blocks = 2
);
bwd_fused!(
    attn_bwd_fused_f16_d64,
    Native<F16>,
    DType::F16,
    64,
    blocks = 2
);
bwd_fused!(
    attn_bwd_fused_f16_d128,
    Native<F16>,
    DType::F16,
    128,
    blocks = 1
);
bwd_fused!(
    attn_bwd_fused_bf16_d32,
    Native<Bf16>,
    DType::Bf16,
    32,
    blocks = 2
);
bwd_fused!(
    attn_bwd_fused_bf16_d64,
    Native<Bf16>,
    DType::Bf16,
    64,
    blocks = 2
);
bwd_fused!(
    attn_bwd_fused_bf16_d128,
    Native<Bf16>,
    DType::Bf16,
    128,
    blocks = 1
);

bwd_set!(
    attn_bwd_dq_f16_d32,
    attn_bwd_dkdv_f16_d32,
    attn_bwd_dq_f16_d32_pieces,
    attn_bwd_dkdv_f16_d32_pieces,
    Native<F16>,
    DType::F16,
    32,
    blocks = (4, 3)
);
bwd_set!(
    attn_bwd_dq_f16_d64,
    attn_bwd_dkdv_f16_d64,
    attn_bwd_dq_f16_d64_pieces,
    attn_bwd_dkdv_f16_d64_pieces,
    Native<F16>,
    DType::F16,
    64,
    blocks = (4, 3)
);
bwd_set!(
    attn_bwd_dq_f16_d128,
    attn_bwd_dkdv_f16_d128,
    attn_bwd_dq_f16_d128_pieces,
    attn_bwd_dkdv_f16_d128_pieces,
    Native<F16>,
    DType::F16,
    128,
    blocks = (3, 1)
);
bwd_set!(
    attn_bwd_dq_f16_d256,
    attn_bwd_dkdv_f16_d256,
    attn_bwd_dq_f16_d256_pieces,
    attn_bwd_dkdv_f16_d256_pieces,
    Native<F16>,
    DType::F16,
    256,
    blocks = (1, 1)
);
bwd_set!(
    attn_bwd_dq_bf16_d32,
    attn_bwd_dkdv_bf16_d32,
    attn_bwd_dq_bf16_d32_pieces,
    attn_bwd_dkdv_bf16_d32_pieces,
    Native<Bf16>,
    DType::Bf16,
    32,
    blocks = (4, 3)
);
bwd_set!(
    attn_bwd_dq_bf16_d64,
    attn_bwd_dkdv_bf16_d64,
    attn_bwd_dq_bf16_d64_pieces,
    attn_bwd_dkdv_bf16_d64_pieces,
    Native<Bf16>,
    DType::Bf16,
    64,
    blocks = (4, 3)
);
bwd_set!(
    attn_bwd_dq_bf16_d128,
    attn_bwd_dkdv_bf16_d128,
    attn_bwd_dq_bf16_d128_pieces,
    attn_bwd_dkdv_bf16_d128_pieces,
    Native<Bf16>,
    DType::Bf16,
    128,
    blocks = (3, 1)
);
bwd_set!(
    attn_bwd_dq_bf16_d256,
    attn_bwd_dkdv_bf16_d256,
    attn_bwd_dq_bf16_d256_pieces,
    attn_bwd_dkdv_bf16_d256_pieces,
    Native<Bf16>,
    DType::Bf16,
    256,
    blocks = (1, 1)
);
bwd_set!(
    attn_bwd_dq_f32_d32,
    attn_bwd_dkdv_f32_d32,
    attn_bwd_dq_f32_d32_pieces,
    attn_bwd_dkdv_f32_d32_pieces,
    FmaAtom<f32>,
    DType::F32,
    32,
    blocks = (1, 1)
);
bwd_set!(
    attn_bwd_dq_f32_d64,
    attn_bwd_dkdv_f32_d64,
    attn_bwd_dq_f32_d64_pieces,
    attn_bwd_dkdv_f32_d64_pieces,
    FmaAtom<f32>,
    DType::F32,
    64,
    blocks = (1, 1)
);
bwd_set!(
    attn_bwd_dq_f32_d128,
    attn_bwd_dkdv_f32_d128,
    attn_bwd_dq_f32_d128_pieces,
    attn_bwd_dkdv_f32_d128_pieces,
    FmaAtom<f32>,
    DType::F32,
    128,
    blocks = (1, 1)
);
bwd_set!(
    attn_bwd_dq_f32_d256,
    attn_bwd_dkdv_f32_d256,
    attn_bwd_dq_f32_d256_pieces,
    attn_bwd_dkdv_f32_d256_pieces,
    FmaAtom<f32>,
    DType::F32,
    256,
    blocks = (1, 1)
);

/// `TN` of the preprocess kernel on atom `A`: the `[M, TN·N]` tile is square.
const fn pre_tn<A: MmaAtom>() -> usize {
    A::M / A::N
}

/// `delta = rowsum(dout ∘ out)` for f16 inputs, on the atom of the f16 `dP`.
#[kernel(threads = 128)]
pub fn attn_bwd_pre_f16(p: &BwdParams) {
    bwd::preprocess::<Native<F16>, { pre_tn::<Native<F16>>() }>(p)
}

/// `delta = rowsum(dout ∘ out)` for bf16 inputs, on the atom of the bf16 `dP`.
#[kernel(threads = 128)]
pub fn attn_bwd_pre_bf16(p: &BwdParams) {
    bwd::preprocess::<Native<Bf16>, { pre_tn::<Native<Bf16>>() }>(p)
}

/// `delta = rowsum(dout ∘ out)` for f32 inputs, on the FMA atom of the f32 `dP`.
#[kernel(threads = 128)]
pub fn attn_bwd_pre_f32(p: &BwdParams) {
    bwd::preprocess::<FmaAtom<f32>, { pre_tn::<FmaAtom<f32>>() }>(p)
}

/// `dq = scale · dq_accum` in f16: the fused backward's conversion.
#[kernel(threads = 128)]
pub fn attn_bwd_post_f16(p: &BwdParams) {
    bwd::post::<F16>(p)
}

/// `dq = scale · dq_accum` in bf16: the fused backward's conversion.
#[kernel(threads = 128)]
pub fn attn_bwd_post_bf16(p: &BwdParams) {
    bwd::post::<Bf16>(p)
}

/// Zeroes a strided tensor of 16-bit elements.
#[kernel(threads = 128)]
pub fn attn_zero_b16(p: &ZeroParams) {
    bwd::zero::<u16>(p)
}

/// Zeroes a strided tensor of 32-bit elements.
#[kernel(threads = 128)]
pub fn attn_zero_b32(p: &ZeroParams) {
    bwd::zero::<u32>(p)
}
