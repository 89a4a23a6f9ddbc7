//! The attention forward call: arguments → validated [`FwdParams`] → kernel choice → launch.
//!
//! Validation is a pure function ([`Forward::plan`]) so that every rejection is unit-tested
//! without a GPU; nothing is launched unless it succeeds.
use crate::device::{Device, DeviceBuffer, Stream};
use crate::error::{Error, Result};
use attn_abi::{
    DType, FLAG_VEC16, FWD_HEAD_DIMS, FwdParams, KernArgs, KernelId, MASK_BOTTOM_RIGHT,
    MASK_WINDOW, WINDOW_UNBOUNDED,
};
use attn_kernels::fwd::policy::{self, Family};

/// Where the diagonal of a causal or window mask sits (semantics.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// `off = 0`: query `i` sees key `i` (PyTorch SDPA's `is_causal=True`).
    TopLeft,
    /// `off = Sk - Sq`: the last query sees the last key (FlashAttention, CK `is_causal`).
    BottomRight,
}

/// Which keys each query sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mask {
    /// Every key.
    #[default]
    None,
    /// Keys up to the aligned diagonal: `Window { left: None, right: Some(0), align }`.
    Causal(Align),
    /// Keys `i + off - left ..= i + off + right`; `None` is unbounded.
    Window {
        /// Keys visible left of the diagonal.
        left: Option<u32>,
        /// Keys visible right of the diagonal.
        right: Option<u32>,
        /// Diagonal alignment.
        align: Align,
    },
}

/// A rank-4 tensor in device memory that the caller owns, BMHK-indexed: `[batch, seq, head,
/// head_dim]` with element strides (the head-dim stride must be 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorRef {
    /// Device address of element `[0, 0, 0, 0]`.
    pub ptr: u64,
    /// Elements addressable from `ptr` (bounds the strided extent).
    pub len: usize,
    /// Element type.
    pub dtype: DType,
    /// `[batch, seq, heads, head_dim]`.
    pub shape: [usize; 4],
    /// Element strides of the four dimensions.
    pub strides: [i64; 4],
}

impl TensorRef {
    /// A contiguous BMHK tensor.
    pub fn contiguous(ptr: u64, dtype: DType, shape: [usize; 4]) -> Self {
        let [_, s, h, d] = shape;
        TensorRef {
            ptr,
            len: shape.iter().product(),
            dtype,
            shape,
            strides: [(s * h * d) as i64, (h * d) as i64, d as i64, 1],
        }
    }
}

/// The f32 log-sum-exp output `[batch, heads_q, seq_q]` (sequence stride 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LseRef {
    /// Device address of element `[0, 0, 0]`.
    pub ptr: u64,
    /// Elements addressable from `ptr`.
    pub len: usize,
    /// `[batch, heads_q, seq_q]`.
    pub shape: [usize; 3],
    /// Element strides; the last must be 1.
    pub strides: [i64; 3],
}

impl LseRef {
    /// A contiguous `[B, Hq, Sq]` tensor.
    pub fn contiguous(ptr: u64, shape: [usize; 3]) -> Self {
        LseRef {
            ptr,
            len: shape.iter().product(),
            shape,
            strides: [(shape[1] * shape[2]) as i64, shape[2] as i64, 1],
        }
    }
}

/// A launch, fully decided: which kernel, its parameters, and its grid.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    /// The kernel.
    pub kernel: KernelId,
    /// Its parameters.
    pub params: FwdParams,
    /// Grid `(ceil(Sq / BLOCK_M), Hq, B)`; `None` when there is nothing to compute.
    pub grid: Option<[u32; 3]>,
    /// Threads per block.
    pub threads: u32,
    /// Dynamic shared memory per block, bytes.
    pub shared_bytes: u32,
}

/// The forward pass `out = softmax(scale · q·kᵀ + mask) · v` (and `lse`), on caller memory.
#[derive(Clone, Copy, Debug)]
pub struct Forward {
    q: TensorRef,
    k: TensorRef,
    v: TensorRef,
    out: TensorRef,
    lse: Option<LseRef>,
    scale: Option<f32>,
    mask: Mask,
}

fn check_extent(
    what: &str,
    ptr: u64,
    len: usize,
    esize: usize,
    shape: &[usize],
    strides: &[i64],
) -> Result<()> {
    if ptr == 0 {
        return Err(Error::invalid(
            format!("{what}.ptr"),
            "a non-null device address",
            "null",
        ));
    }
    if !ptr.is_multiple_of(esize as u64) {
        return Err(Error::invalid(
            format!("{what}.ptr"),
            format!("{esize}-byte alignment"),
            format!("{ptr:#x}"),
        ));
    }
    if shape.contains(&0) {
        return Ok(());
    }
    let mut last: i128 = 0;
    for (d, (&n, &s)) in shape.iter().zip(strides).enumerate() {
        if s < 0 {
            return Err(Error::invalid(
                format!("{what}.strides[{d}]"),
                "a non-negative stride",
                s,
            ));
        }
        last += (n as i128 - 1) * s as i128;
    }
    if last >= len as i128 {
        return Err(Error::invalid(
            format!("{what}.len"),
            format!("at least {} elements for its shape and strides", last + 1),
            len,
        ));
    }
    if last > i64::MAX as i128 / 8 {
        return Err(Error::invalid(
            format!("{what}.strides"),
            "offsets that fit in i64",
            "larger",
        ));
    }
    Ok(())
}

/// Outputs must not write one element twice: a zero stride is allowed only on a size-1 dim.
fn check_no_broadcast(what: &str, shape: &[usize], strides: &[i64]) -> Result<()> {
    for (d, (&n, &s)) in shape.iter().zip(strides).enumerate() {
        if s == 0 && n > 1 {
            return Err(Error::invalid(
                format!("{what}.strides[{d}]"),
                "non-zero (outputs cannot broadcast)",
                0,
            ));
        }
    }
    Ok(())
}

/// The smallest instantiated head-dim bucket that holds `d`.
pub fn head_dim_bucket(d: usize) -> Option<u32> {
    FWD_HEAD_DIMS.into_iter().find(|&b| b as usize >= d)
}

impl Forward {
    /// A forward call on `q [B,Sq,Hq,D]`, `k [B,Sk,Hk,D]`, `v [B,Sk,Hk,Dv]` into `out [B,Sq,Hq,Dv]`,
    /// with no mask, the default scale `1/sqrt(D)` and no `lse`.
    pub fn new(q: TensorRef, k: TensorRef, v: TensorRef, out: TensorRef) -> Self {
        Forward {
            q,
            k,
            v,
            out,
            lse: None,
            scale: None,
            mask: Mask::None,
        }
    }
    /// Also write the log-sum-exp.
    pub fn lse(mut self, lse: LseRef) -> Self {
        self.lse = Some(lse);
        self
    }
    /// Softmax scale (default `1/sqrt(D)`).
    pub fn scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }
    /// The mask (default [`Mask::None`]).
    pub fn mask(mut self, mask: Mask) -> Self {
        self.mask = mask;
        self
    }

    /// Validates every argument and decides the launch for a device of `family`. Pure: touches
    /// no device.
    pub fn plan(&self, family: Family) -> Result<Plan> {
        let (q, k, v, o) = (&self.q, &self.k, &self.v, &self.out);
        let dtype = q.dtype;
        for (name, t) in [("k", k), ("v", v), ("out", o)] {
            if t.dtype != dtype {
                return Err(Error::invalid(
                    format!("{name}.dtype"),
                    format!("{dtype:?} (q's dtype)"),
                    format!("{:?}", t.dtype),
                ));
            }
        }
        for (name, t) in [("q", q), ("k", k), ("v", v), ("out", o)] {
            if t.strides[3] != 1 {
                return Err(Error::invalid(
                    format!("{name}.strides[3]"),
                    "1 (contiguous head dim)",
                    t.strides[3],
                ));
            }
        }
        let [b, sq, hq, d] = q.shape;
        let [_, sk, hk, _] = k.shape;
        let dv = v.shape[3];
        let expect = |name: &str, t: &TensorRef, want: [usize; 4]| {
            if t.shape == want {
                Ok(())
            } else {
                Err(Error::invalid(
                    format!("{name}.shape"),
                    format!("{want:?}"),
                    format!("{:?}", t.shape),
                ))
            }
        };
        expect("k", k, [b, sk, hk, d])?;
        expect("v", v, [b, sk, hk, dv])?;
        expect("out", o, [b, sq, hq, dv])?;
        if hk == 0 || hq % hk != 0 {
            return Err(Error::invalid(
                "k.shape[2]",
                format!("a divisor of Hq = {hq}"),
                hk,
            ));
        }
        let (step, name) = match dtype {
            DType::F32 => (4, "a multiple of 4 in 4..=256 for f32"),
            _ => (8, "a multiple of 8 in 8..=256 for f16/bf16"),
        };
        for (what, x) in [("head_dim (D)", d), ("head_dim_v (Dv)", dv)] {
            if x == 0 || !x.is_multiple_of(step) || x > 256 {
                return Err(Error::unsupported(format!(
                    "{what} = {x}: supported is {name}"
                )));
            }
        }
        for (what, x) in [("seq_q", sq), ("seq_k", sk)] {
            if x > i32::MAX as usize {
                return Err(Error::unsupported(format!("{what} = {x} exceeds 2^31 - 1")));
            }
        }
        if b > 65_535 || hq > 65_535 {
            return Err(Error::unsupported(format!(
                "batch {b} or heads {hq} above 65535 (grid limit)"
            )));
        }
        let es = dtype.size();
        check_extent("q", q.ptr, q.len, es, &q.shape, &q.strides)?;
        check_extent("k", k.ptr, k.len, es, &k.shape, &k.strides)?;
        check_extent("v", v.ptr, v.len, es, &v.shape, &v.strides)?;
        check_extent("out", o.ptr, o.len, es, &o.shape, &o.strides)?;
        check_no_broadcast("out", &o.shape, &o.strides)?;
        let mut lse_strides = [0i64; 2];
        if let Some(l) = &self.lse {
            if l.shape != [b, hq, sq] {
                return Err(Error::invalid(
                    "lse.shape",
                    format!("{:?}", [b, hq, sq]),
                    format!("{:?}", l.shape),
                ));
            }
            if l.strides[2] != 1 {
                return Err(Error::invalid("lse.strides[2]", "1", l.strides[2]));
            }
            check_extent("lse", l.ptr, l.len, 4, &l.shape, &l.strides)?;
            check_no_broadcast("lse", &l.shape, &l.strides)?;
            lse_strides = [l.strides[0], l.strides[1]];
        }
        let scale = self.scale.unwrap_or(1.0 / (d as f32).sqrt());
        if !scale.is_finite() {
            return Err(Error::invalid("scale", "a finite number", scale));
        }
        let side = |what: &str, w: Option<u32>| -> Result<i32> {
            match w {
                None => Ok(WINDOW_UNBOUNDED),
                Some(x) if x < WINDOW_UNBOUNDED as u32 => Ok(x as i32),
                Some(x) => Err(Error::invalid(what, "below 2^31 - 1", x)),
            }
        };
        let (flags, left, right) = match self.mask {
            Mask::None => (0, WINDOW_UNBOUNDED, WINDOW_UNBOUNDED),
            Mask::Causal(a) => (MASK_WINDOW | align_flag(a), WINDOW_UNBOUNDED, 0),
            Mask::Window { left, right, align } => (
                MASK_WINDOW | align_flag(align),
                side("mask.left", left)?,
                side("mask.right", right)?,
            ),
        };
        let bucket =
            head_dim_bucket(d.max(dv)).ok_or_else(|| Error::unsupported("head dim above 256"))?;
        let tile = policy::fwd_tile(family, dtype, bucket as usize);
        // 16-byte tile copies need every row of q, k, v to start 16-byte aligned.
        let rows_aligned = |t: &TensorRef| {
            t.ptr.is_multiple_of(16)
                && t.strides[..3]
                    .iter()
                    .all(|&s| (s as i128 * es as i128) % 16 == 0)
        };
        let vec16 = if [q, k, v].into_iter().all(rows_aligned) {
            FLAG_VEC16
        } else {
            0
        };
        let params = FwdParams {
            q: q.ptr,
            k: k.ptr,
            v: v.ptr,
            out: o.ptr,
            lse: self.lse.map_or(0, |l| l.ptr),
            q_strides: [q.strides[0], q.strides[1], q.strides[2]],
            k_strides: [k.strides[0], k.strides[1], k.strides[2]],
            v_strides: [v.strides[0], v.strides[1], v.strides[2]],
            o_strides: [o.strides[0], o.strides[1], o.strides[2]],
            lse_strides,
            batch: b as u32,
            heads_q: hq as u32,
            heads_k: hk as u32,
            seqlen_q: sq as u32,
            seqlen_k: sk as u32,
            head_dim: d as u32,
            head_dim_v: dv as u32,
            scale_log2: scale * std::f32::consts::LOG2_E,
            window_left: left,
            window_right: right,
            flags: flags | vec16,
            _pad: 0,
        };
        let grid = (b > 0 && sq > 0 && hq > 0)
            .then(|| [sq.div_ceil(tile.block_m) as u32, hq as u32, b as u32]);
        Ok(Plan {
            kernel: KernelId::Fwd {
                dtype,
                head_dim: bucket,
            },
            params,
            grid,
            threads: policy::THREADS,
            shared_bytes: policy::smem_bytes(family, dtype, bucket as usize) as u32,
        })
    }

    /// Validates and launches on `stream` (asynchronous).
    ///
    /// # Safety
    /// Every `ptr` must be device memory of `stream`'s device, valid for `len` elements for the
    /// duration of the kernel, and `out`/`lse` must not overlap the inputs.
    pub unsafe fn launch(&self, stream: &Stream) -> Result<()> {
        // The tiles are those of the code object actually loaded (not of the device name: a
        // newer GPU may be running the sm_80 PTX).
        let target = stream.device().code_object_target()?;
        let family = Family::of_arch(&target).ok_or_else(|| {
            Error::unsupported(format!("no tile policy for code object {target}"))
        })?;
        let plan = self.plan(family)?;
        let Some(grid) = plan.grid else { return Ok(()) };
        let args = KernArgs::new(&plan.params);
        // SAFETY: the plan checked every extent against `len`; the caller vouches that the
        // addresses are valid device memory (this function's contract).
        unsafe {
            stream.device().launch(
                plan.kernel,
                grid,
                plan.threads,
                plan.shared_bytes,
                stream,
                &args,
            )
        }
    }
}

fn align_flag(a: Align) -> u32 {
    match a {
        Align::TopLeft => 0,
        Align::BottomRight => MASK_BOTTOM_RIGHT,
    }
}

/// Options of the convenience [`forward`] call.
#[derive(Clone, Copy, Debug, Default)]
pub struct FwdOptions {
    /// Softmax scale (default `1/sqrt(D)`).
    pub scale: Option<f32>,
    /// Mask.
    pub mask: Mask,
}

/// Host element types with a device counterpart: `half::f16`, `half::bf16`, `f32`.
pub trait HostElement: bytemuck::Pod {
    /// The matching kernel element type.
    const DTYPE: DType;
}
impl HostElement for half::f16 {
    const DTYPE: DType = DType::F16;
}
impl HostElement for half::bf16 {
    const DTYPE: DType = DType::Bf16;
}
impl HostElement for f32 {
    const DTYPE: DType = DType::F32;
}

fn tensor_ref<T: HostElement>(buf: &DeviceBuffer<T>, shape: [usize; 4]) -> TensorRef {
    TensorRef {
        len: buf.len(),
        ..TensorRef::contiguous(buf.ptr(), T::DTYPE, shape)
    }
}

/// Convenience forward on owned, contiguous BMHK buffers; allocates and returns `out`
/// `[B, Sq, Hq, Dv]` and `lse` `[B, Hq, Sq]`. Shapes are checked against the buffers.
pub fn forward<T: HostElement>(
    stream: &Stream,
    q: (&DeviceBuffer<T>, [usize; 4]),
    k: (&DeviceBuffer<T>, [usize; 4]),
    v: (&DeviceBuffer<T>, [usize; 4]),
    opts: &FwdOptions,
) -> Result<(DeviceBuffer<T>, DeviceBuffer<f32>)> {
    let dev: &Device = stream.device();
    let [b, sq, hq, _] = q.1;
    let dv = v.1[3];
    let out = dev.alloc::<T>((b * sq * hq * dv).max(1))?;
    let lse = dev.alloc::<f32>((b * hq * sq).max(1))?;
    let mut call = Forward::new(
        tensor_ref(q.0, q.1),
        tensor_ref(k.0, k.1),
        tensor_ref(v.0, v.1),
        tensor_ref(&out, [b, sq, hq, dv]),
    )
    .lse(LseRef {
        len: lse.len(),
        ..LseRef::contiguous(lse.ptr(), [b, hq, sq])
    })
    .mask(opts.mask);
    if let Some(s) = opts.scale {
        call = call.scale(s);
    }
    // SAFETY: every buffer is a live allocation of this crate on this device whose `len` the
    // plan checks against its shape; `out` and `lse` are fresh.
    unsafe { call.launch(stream)? };
    Ok((out, lse))
}

/// Sends `payload` through the `attn_abi_echo` kernel and returns the argument image the GPU
/// received, so callers can check that host and kernel agree on the parameter layout.
pub fn abi_echo(stream: &Stream, payload: &FwdParams) -> Result<KernArgs> {
    let dev = stream.device();
    let out = dev.alloc::<u64>(attn_abi::KERNARG_WORDS)?;
    let args = KernArgs::new(&attn_abi::EchoParams {
        out: out.ptr(),
        payload: *payload,
    });
    // SAFETY: the echo kernel only writes KERNARG_WORDS u64 to `out`, which we own; the
    // payload's addresses are never dereferenced.
    unsafe { dev.launch(KernelId::AbiEcho, [1, 1, 1], 32, 0, stream, &args)? };
    stream.synchronize()?;
    let words = out.to_host(stream)?;
    let mut image = [0u64; attn_abi::KERNARG_WORDS];
    image.copy_from_slice(&words);
    Ok(KernArgs(image))
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: usize = 2;
    const SQ: usize = 17;
    const SK: usize = 33;
    const HQ: usize = 4;
    const HK: usize = 2;
    const D: usize = 64;

    fn t(ptr: u64, dtype: DType, shape: [usize; 4]) -> TensorRef {
        TensorRef::contiguous(ptr, dtype, shape)
    }

    fn good(dtype: DType) -> Forward {
        Forward::new(
            t(0x1000, dtype, [B, SQ, HQ, D]),
            t(0x100000, dtype, [B, SK, HK, D]),
            t(0x200000, dtype, [B, SK, HK, D]),
            t(0x300000, dtype, [B, SQ, HQ, D]),
        )
        .lse(LseRef::contiguous(0x400000, [B, HQ, SQ]))
    }

    fn invalid_what(f: &Forward) -> String {
        match f.plan(Family::Sm80) {
            Err(Error::InvalidArgument { what, .. }) => what,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    fn unsupported(f: &Forward) {
        assert!(
            matches!(f.plan(Family::Sm80), Err(Error::Unsupported { .. })),
            "{:?}",
            f.plan(Family::Sm80)
        );
    }

    #[test]
    fn a_valid_call_plans_the_right_kernel_and_grid() {
        let p = good(DType::Bf16)
            .mask(Mask::Causal(Align::BottomRight))
            .plan(Family::Sm80)
            .unwrap();
        assert_eq!(
            p.kernel,
            KernelId::Fwd {
                dtype: DType::Bf16,
                head_dim: 64
            }
        );
        let bm = policy::fwd_tile(Family::Sm80, DType::Bf16, 64).block_m;
        assert_eq!(p.grid, Some([SQ.div_ceil(bm) as u32, HQ as u32, B as u32]));
        assert_eq!(p.params.flags, MASK_WINDOW | MASK_BOTTOM_RIGHT | FLAG_VEC16);
        assert_eq!(
            p.shared_bytes as usize,
            policy::smem_bytes(Family::Sm80, DType::Bf16, 64)
        );
        assert_eq!(p.params.window_right, 0);
        assert_eq!(p.params.window_left, WINDOW_UNBOUNDED);
        assert!((p.params.scale_log2 - std::f32::consts::LOG2_E / 8.0).abs() < 1e-7);
        assert_eq!(p.params.lse_strides, [(HQ * SQ) as i64, SQ as i64]);
    }

    #[test]
    fn head_dims_pick_the_smallest_bucket_and_reject_unsupported() {
        assert_eq!(head_dim_bucket(8), Some(32));
        assert_eq!(head_dim_bucket(96), Some(128));
        assert_eq!(head_dim_bucket(256), Some(256));
        assert_eq!(head_dim_bucket(264), None);
        for (dtype, d, ok) in [
            (DType::F16, 8, true),
            (DType::F16, 12, false),
            (DType::F16, 264, false),
            (DType::F32, 4, true),
            (DType::F32, 6, false),
            (DType::Bf16, 0, false),
        ] {
            let f = Forward::new(
                t(0x1000, dtype, [1, 3, 1, d]),
                t(0x100000, dtype, [1, 3, 1, d]),
                t(0x200000, dtype, [1, 3, 1, d]),
                t(0x300000, dtype, [1, 3, 1, d]),
            );
            if ok {
                f.plan(Family::Sm80).unwrap();
            } else {
                unsupported(&f);
            }
        }
    }

    #[test]
    fn d_and_dv_may_differ() {
        let f = Forward::new(
            t(0x1000, DType::F16, [1, 5, 2, 32]),
            t(0x100000, DType::F16, [1, 7, 2, 32]),
            t(0x200000, DType::F16, [1, 7, 2, 96]),
            t(0x300000, DType::F16, [1, 5, 2, 96]),
        );
        let p = f.plan(Family::Sm80).unwrap();
        assert_eq!(
            p.kernel,
            KernelId::Fwd {
                dtype: DType::F16,
                head_dim: 128
            }
        );
        assert_eq!((p.params.head_dim, p.params.head_dim_v), (32, 96));
    }

    #[test]
    fn every_bad_argument_is_a_typed_error() {
        let mut f = good(DType::F16);
        f.k.dtype = DType::Bf16;
        assert_eq!(invalid_what(&f), "k.dtype");

        let mut f = good(DType::F16);
        f.v.shape[1] = SK + 1;
        assert_eq!(invalid_what(&f), "v.shape");

        let mut f = good(DType::F16);
        f.out.shape[2] = HQ + 1;
        assert_eq!(invalid_what(&f), "out.shape");

        let mut f = good(DType::F16);
        f.k = t(0x100000, DType::F16, [B, SK, 3, D]);
        f.v = t(0x200000, DType::F16, [B, SK, 3, D]);
        assert_eq!(invalid_what(&f), "k.shape[2]");

        let mut f = good(DType::F16);
        f.q.strides[3] = 2;
        assert_eq!(invalid_what(&f), "q.strides[3]");

        let mut f = good(DType::F16);
        f.q.ptr = 0;
        assert_eq!(invalid_what(&f), "q.ptr");

        let mut f = good(DType::F16);
        f.v.ptr = 0x200001;
        assert_eq!(invalid_what(&f), "v.ptr");

        let mut f = good(DType::F16);
        f.k.len -= 1;
        assert_eq!(invalid_what(&f), "k.len");

        let mut f = good(DType::F16);
        f.q.strides[1] = -((HQ * D) as i64);
        assert_eq!(invalid_what(&f), "q.strides[1]");

        let mut f = good(DType::F16);
        f.out.strides[2] = 0;
        assert_eq!(invalid_what(&f), "out.strides[2]");

        let f = good(DType::F16).lse(LseRef::contiguous(0x400000, [B, HQ, SQ + 1]));
        assert_eq!(invalid_what(&f), "lse.shape");

        let mut l = LseRef::contiguous(0x400000, [B, HQ, SQ]);
        l.len -= 1;
        assert_eq!(invalid_what(&good(DType::F16).lse(l)), "lse.len");

        let mut l = LseRef::contiguous(0x400002, [B, HQ, SQ]);
        l.strides[2] = 1;
        assert_eq!(invalid_what(&good(DType::F16).lse(l)), "lse.ptr");

        assert_eq!(invalid_what(&good(DType::F16).scale(f32::NAN)), "scale");
        assert_eq!(
            invalid_what(&good(DType::F16).scale(f32::INFINITY)),
            "scale"
        );

        let w = Mask::Window {
            left: Some(u32::MAX),
            right: Some(0),
            align: Align::TopLeft,
        };
        assert_eq!(invalid_what(&good(DType::F16).mask(w)), "mask.left");
    }

    #[test]
    fn strided_views_are_accepted_when_they_fit() {
        // A BHMK view (heads outer, sequence inner) of the same memory.
        let mut f = good(DType::F32);
        f.q.strides = [(HQ * SQ * D) as i64, D as i64, (SQ * D) as i64, 1];
        let p = f.plan(Family::Sm80).unwrap();
        assert_eq!(
            p.params.q_strides,
            [(HQ * SQ * D) as i64, D as i64, (SQ * D) as i64]
        );
        // Broadcast (zero-stride) inputs are fine.
        let mut f = good(DType::F32);
        f.k.strides[0] = 0;
        f.plan(Family::Sm80).unwrap();
    }

    #[test]
    fn unaligned_rows_take_the_element_copy_path() {
        let aligned = good(DType::F16).plan(Family::Cdna).unwrap();
        assert_ne!(aligned.params.flags & FLAG_VEC16, 0);
        let mut f = good(DType::F16);
        f.k.ptr += 8; // 4-element offset: still element-aligned, no longer 16-byte aligned
        assert_eq!(f.plan(Family::Cdna).unwrap().params.flags & FLAG_VEC16, 0);
        let mut f = good(DType::F16);
        f.q.strides[1] = (HQ * D + 4) as i64; // padded rows of 136 bytes
        f.q.len += SQ * 4 * B;
        assert_eq!(f.plan(Family::Cdna).unwrap().params.flags & FLAG_VEC16, 0);
    }

    #[test]
    fn empty_problems_launch_nothing() {
        let f = Forward::new(
            t(0x1000, DType::F16, [0, 5, 2, 64]),
            t(0x100000, DType::F16, [0, 7, 2, 64]),
            t(0x200000, DType::F16, [0, 7, 2, 64]),
            t(0x300000, DType::F16, [0, 5, 2, 64]),
        );
        assert_eq!(f.plan(Family::Sm80).unwrap().grid, None);
    }
}
