//! Harness for running the kernels on a GPU and judging them with `attn-ref`'s pass rule
//! (semantics.md §6), shared by the integration tests in `tests/` and by `attn check`.
//!
//! Every check draws fresh random inputs, poisons the outputs (all bytes `0xFF`, a NaN in every
//! float format) before the launch so that unwritten elements show, and compares `out` and `lse`
//! with the f64 truth and the blocked low-precision reference.
use attn_abi::DType;
use attn_host::{Align, Device, DeviceBuffer, Forward, LseRef, Mask, TensorRef};
use attn_ref::{Dtype, Inputs, Problem, Report, Tensor};

/// A device for a GPU test, or `None` after printing why the test is skipped.
///
/// With `ATTN_REQUIRE_GPU=1` a missing device is a failure instead (for GPU CI jobs).
pub fn device_or_skip(test: &str) -> Option<Device> {
    match Device::best() {
        Ok(d) => Some(d),
        Err(e) => {
            if std::env::var("ATTN_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("{test}: ATTN_REQUIRE_GPU=1 but no GPU works: {e}");
            }
            eprintln!("skipped: {test}: no CUDA/HIP device ({e})");
            None
        }
    }
}

/// Converts between the reference's dtype tag and the kernels'.
pub fn ref_dtype(d: DType) -> Dtype {
    match d {
        DType::F16 => Dtype::F16,
        DType::Bf16 => Dtype::Bf16,
        DType::F32 => Dtype::F32,
    }
}

/// The host API's mask for a reference mask.
pub fn host_mask(m: attn_ref::Mask) -> Mask {
    let a = |a: attn_ref::Align| match a {
        attn_ref::Align::TopLeft => Align::TopLeft,
        attn_ref::Align::BottomRight => Align::BottomRight,
    };
    match m {
        attn_ref::Mask::None => Mask::None,
        attn_ref::Mask::Causal { align } => Mask::Causal(a(align)),
        attn_ref::Mask::Window { left, right, align } => Mask::Window {
            left: left.map(|x| x as u32),
            right: right.map(|x| x as u32),
            align: a(align),
        },
    }
}

/// How `q` is laid out in device memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `[B, S, H, D]` contiguous.
    Bmhk,
    /// `[B, H, S, D]` contiguous memory, passed as a strided BMHK view.
    Bhmk,
}

/// One forward check.
#[derive(Clone, Debug)]
pub struct FwdCase {
    /// The problem (only the features the forward kernels implement are used).
    pub problem: Problem,
    /// Layout of q/k/v/out in device memory.
    pub layout: Layout,
}

/// Outcome of one check.
#[derive(Debug)]
pub struct FwdOutcome {
    /// `out` against the pass rule.
    pub out: Report,
    /// `lse` against the pass rule (with `-inf` parity).
    pub lse: Report,
}

impl FwdOutcome {
    /// Both tensors pass.
    pub fn passed(&self) -> bool {
        self.out.passed() && self.lse.passed()
    }
}

/// Element bits of a rounded reference tensor, contiguous in `layout`.
fn device_bits(t: &Tensor, dtype: DType, layout: Layout) -> Vec<u32> {
    let [b, s, h, d] = t.shape;
    let mut v = Vec::with_capacity(t.numel());
    let mut push = |x: f32| {
        v.push(match dtype {
            DType::F16 => half::f16::from_f32(x).to_bits() as u32,
            DType::Bf16 => half::bf16::from_f32(x).to_bits() as u32,
            DType::F32 => x.to_bits(),
        })
    };
    match layout {
        Layout::Bmhk => (0..b).for_each(|bi| {
            (0..s).for_each(|si| {
                (0..h).for_each(|hi| (0..d).for_each(|di| push(t.get([bi, si, hi, di]))))
            })
        }),
        Layout::Bhmk => (0..b).for_each(|bi| {
            (0..h).for_each(|hi| {
                (0..s).for_each(|si| (0..d).for_each(|di| push(t.get([bi, si, hi, di]))))
            })
        }),
    }
    v
}

/// Element strides of a `[B, S, H, D]` tensor stored in `layout`.
fn strides(shape: [usize; 4], layout: Layout) -> [i64; 4] {
    let [_, s, h, d] = shape.map(|x| x as i64);
    match layout {
        Layout::Bmhk => [s * h * d, h * d, d, 1],
        Layout::Bhmk => [s * h * d, d, s * d, 1],
    }
}

/// A device buffer of raw element storage (u16 for f16/bf16, u32 for f32).
enum Raw {
    Half(DeviceBuffer<u16>),
    Single(DeviceBuffer<u32>),
}

impl Raw {
    fn upload(dev: &Device, bits: &[u32], dtype: DType) -> attn_host::Result<Raw> {
        Ok(match dtype {
            DType::F32 => Raw::Single(dev.clone_htod(bits)?),
            _ => Raw::Half(dev.clone_htod(&bits.iter().map(|&b| b as u16).collect::<Vec<_>>())?),
        })
    }
    fn poisoned(
        dev: &Device,
        len: usize,
        dtype: DType,
        s: &attn_host::Stream,
    ) -> attn_host::Result<Raw> {
        let mut r = match dtype {
            DType::F32 => Raw::Single(dev.alloc(len.max(1))?),
            _ => Raw::Half(dev.alloc(len.max(1))?),
        };
        match &mut r {
            Raw::Half(b) => b.fill_bytes(0xFF, s)?,
            Raw::Single(b) => b.fill_bytes(0xFF, s)?,
        }
        Ok(r)
    }
    fn ptr(&self) -> u64 {
        match self {
            Raw::Half(b) => b.ptr(),
            Raw::Single(b) => b.ptr(),
        }
    }
    fn len(&self) -> usize {
        match self {
            Raw::Half(b) => b.len(),
            Raw::Single(b) => b.len(),
        }
    }
    fn to_f32(&self, dtype: DType, s: &attn_host::Stream) -> attn_host::Result<Vec<f32>> {
        Ok(match self {
            Raw::Half(b) => b
                .to_host(s)?
                .into_iter()
                .map(|x| match dtype {
                    DType::F16 => half::f16::from_bits(x).to_f32(),
                    _ => half::bf16::from_bits(x).to_f32(),
                })
                .collect(),
            Raw::Single(b) => b.to_host(s)?.into_iter().map(f32::from_bits).collect(),
        })
    }
}

/// Reorders a `[B, S, H, D]` tensor read back in `layout` into BMHK order.
fn to_bmhk(x: &[f32], shape: [usize; 4], layout: Layout) -> Vec<f32> {
    if layout == Layout::Bmhk {
        return x.to_vec();
    }
    let [b, s, h, d] = shape;
    let mut out = vec![0.0; x.len()];
    for bi in 0..b {
        for si in 0..s {
            for hi in 0..h {
                for di in 0..d {
                    out[((bi * s + si) * h + hi) * d + di] = x[((bi * h + hi) * s + si) * d + di];
                }
            }
        }
    }
    out
}

/// The kernel's tile on `dev` (for the blocked reference) for a problem.
fn kernel_tile(dev: &Device, p: &Problem, dtype: DType) -> (usize, usize) {
    use attn_kernels::fwd::policy::{Family, fwd_tile};
    let bucket = attn_host::ops::head_dim_bucket(p.head_dim.max(p.head_dim_v)).unwrap_or(256);
    let target = dev.code_object_target().unwrap_or_default();
    let family = Family::of_arch(&target).unwrap_or(Family::Sm80);
    let t = fwd_tile(family, dtype, bucket as usize);
    (t.block_m, t.block_n)
}

/// Runs one forward check on `dev` with inputs drawn from `seed`.
pub fn run_fwd(dev: &Device, case: &FwdCase, seed: u64) -> Result<FwdOutcome, String> {
    let p = &case.problem;
    let dtype = match p.dtype {
        Dtype::F16 => DType::F16,
        Dtype::Bf16 => DType::Bf16,
        Dtype::F32 => DType::F32,
    };
    let x = Inputs::random(p, seed, 1.0);
    let stream = dev.default_stream();
    let e = |e: attn_host::Error| e.to_string();
    let (qs, ks, vs, os) = (p.q_shape(), p.k_shape(), p.v_shape(), p.out_shape());
    let q = Raw::upload(dev, &device_bits(&x.q, dtype, case.layout), dtype).map_err(e)?;
    let k = Raw::upload(dev, &device_bits(&x.k, dtype, case.layout), dtype).map_err(e)?;
    let v = Raw::upload(dev, &device_bits(&x.v, dtype, case.layout), dtype).map_err(e)?;
    let out = Raw::poisoned(dev, os.iter().product(), dtype, &stream).map_err(e)?;
    let lse_shape = p.lse_shape();
    let mut lse: DeviceBuffer<f32> = dev
        .alloc(lse_shape.iter().product::<usize>().max(1))
        .map_err(e)?;
    lse.fill_bytes(0xFF, &stream).map_err(e)?;
    let tref = |r: &Raw, shape| TensorRef {
        ptr: r.ptr(),
        len: r.len(),
        dtype,
        shape,
        strides: strides(shape, case.layout),
    };
    let mut call = Forward::new(tref(&q, qs), tref(&k, ks), tref(&v, vs), tref(&out, os))
        .lse(LseRef {
            len: lse.len(),
            ..LseRef::contiguous(lse.ptr(), lse_shape)
        })
        .mask(host_mask(p.mask));
    if let Some(s) = p.scale {
        call = call.scale(s);
    }
    // SAFETY: every buffer above is a live allocation on `dev` whose length the plan checks.
    unsafe { call.launch(&stream) }.map_err(e)?;
    stream.synchronize().map_err(e)?;
    let got_out = to_bmhk(&out.to_f32(dtype, &stream).map_err(e)?, os, case.layout);
    let got_lse = lse.to_host(&stream).map_err(e)?;
    let got_lse = &got_lse[..lse_shape.iter().product()];

    let truth = attn_ref::forward(p, &x).map_err(|e| e.to_string())?;
    let (bm, bn) = kernel_tile(dev, p, dtype);
    let lowp = attn_ref::forward_blocked(p, &x, bm, bn).map_err(|e| e.to_string())?;
    Ok(FwdOutcome {
        out: attn_ref::check(&got_out, &truth.out, &lowp.out)
            .named("out")
            .with_shape(&os),
        lse: attn_ref::check_lse(got_lse, &truth.lse, &lowp.lse)
            .named("lse")
            .with_shape(&lse_shape),
    })
}
