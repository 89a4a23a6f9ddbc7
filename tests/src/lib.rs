//! Harness for running the kernels on a GPU and judging them with `attn-ref`'s pass rule
//! (semantics.md §6), shared by the integration tests in `tests/` and by `attn check`.
//!
//! Every check draws fresh random inputs, poisons the outputs (all bytes `0xFF`, a NaN in every
//! float format) before the launch so that unwritten elements show, and compares `out` and `lse`
//! with the f64 truth and the blocked low-precision reference, and the dropout mask (requested
//! whenever dropout is on) byte for byte with `attn_ref::dropout::mask_tensor`.
//!
//! Every feature an [`attn_ref::Problem`] can hold is passed to the kernel: varlen (`cu_seqlens`
//! uploaded as i32 arrays), `seqused_k`, the bias (in its dtype, with the reference tensor's
//! strides, zero strides included), ALiBi slopes, softcap and dropout (host or device Philox
//! seed, [`FwdCase::device_rng`]). The inference options ([`DecodeOpts`]) run the same check
//! through a paged KV cache (the reference evaluates its contiguous equivalent), with forced
//! split-KV / GQA packing / decode route, or as partial attentions over key ranges merged by
//! [`attn_host::Merge`].
use attn_abi::DType;
use attn_host::{
    AlibiRef, Align, Backward, BiasRef, CkTensor, Device, DeviceBuffer, Forward, I32Ref, LseRef,
    Mask, MaskRef, MemEffForward, Merge, Packing, Paged, PartialLseRef, PartialsRef, Philox,
    PhiloxGenerator, Plan, Route, Splits, TensorRef,
};
pub use attn_kernels::fwd::policy::Family;
use attn_ref::paged::{PagedConfig, PagedKv};
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

/// The device that every case of a binary's GPU proptest shares (opening a context per case
/// would dominate the run), opened by the first call; `None` after [`device_or_skip`]'s message.
pub fn shared_device(test: &str) -> Option<&'static Device> {
    static DEV: std::sync::OnceLock<Option<Device>> = std::sync::OnceLock::new();
    DEV.get_or_init(|| device_or_skip(test)).as_ref()
}

/// `PROPTEST_CASES` if set (and a number), else `default`: the GPU proptests' case count.
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The proptests' configuration: `cases` cases, failures persisted in `regressions/` beside the
/// test's source.
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..proptest::test_runner::Config::default()
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
    /// The problem: every feature it holds is passed to the kernel.
    pub problem: Problem,
    /// Layout of q/k/v/out in device memory.
    pub layout: Layout,
    /// With dropout: pass the Philox seed and (part of) the offset in device memory
    /// ([`Philox::Device`]) instead of by value.
    pub device_rng: bool,
    /// The inference path's options.
    pub decode: DecodeOpts,
    /// After the forward, run the backward of the same call on its `out` and `lse`.
    pub backward: Option<BwdOpts>,
}

/// How a case runs the backward ([`FwdCase::with_backward`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct BwdOpts {
    /// Also compute `dbias` (when the problem has a bias).
    pub dbias: bool,
    /// Zero the gradients first ([`Backward::zero_tensors`]); otherwise rows outside every
    /// sequence are not compared (they are never written).
    pub zero_tensors: bool,
    /// Run the backward this many more times on the same inputs and count the bits in which
    /// any run's `dq`/`dk`/`dv`/`dbias` differ from the first (determinism: with
    /// `deterministic` only).
    pub repeats: usize,
    /// [`Backward::deterministic`] (and the seed's `deterministic`): `false`, the default, takes
    /// the fused kernel where it is built (dQ by f32 atomics).
    pub deterministic: bool,
}

/// How a case goes through the seed's entry points, `mem_eff_forward_ck` and
/// `mem_eff_backward_ck` ([`run_ck`]), instead of the idiomatic calls.
#[derive(Clone, Copy, Debug, Default)]
pub struct CkOpts {
    /// Pass `out_` (and `dq_`, `dk_`, `dv_`, `grad_bias`) as the case's poisoned buffers in its
    /// layout; otherwise the calls allocate them.
    pub give_outputs: bool,
    /// Pass the varlen arrays as `seqstart_q/k` instead of `cu_seqlens_q/k`, or (`Both`) as both.
    pub seq_names: SeqNames,
    /// Which generator the forward draws from.
    pub generator: CkGenerator,
    /// Pass `return_dropout_randval` (compared byte for byte when dropout is on).
    pub randval: bool,
}

/// Under which names [`run_ck`] passes the varlen arrays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SeqNames {
    /// `cu_seqlens_q/k`.
    #[default]
    CuSeqlens,
    /// `seqstart_q/k`.
    Seqstart,
    /// Both (the same arrays).
    Both,
}

/// The generator of a [`run_ck`] case with dropout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CkGenerator {
    /// None given: the process default (its `(seed, offset)` is read from the result).
    #[default]
    Default,
    /// A host generator at the problem's seed and offset.
    Host,
    /// A device generator at the problem's seed and offset.
    Device,
}

/// How a case goes through the inference path (all off by default: the call decides).
#[derive(Clone, Debug, Default)]
pub struct DecodeOpts {
    /// Which kernels.
    pub route: Route,
    /// Split-KV.
    pub splits: Splits,
    /// GQA packing.
    pub packing: Packing,
    /// k/v as a random paged cache (`PagedKv::random` of the problem) instead of contiguous:
    /// the reference then evaluates the cache's contiguous equivalent (k/v are BMHK pages).
    pub paged: Option<PagedConfig>,
    /// Partial attentions over these key ranges (each a separate forward with `lse`, into
    /// contiguous partial buffers), merged into `out`/`lse` by [`Merge`]; empty = one call.
    pub key_ranges: Vec<(usize, usize)>,
}

impl FwdCase {
    /// A case with the seed passed by value.
    pub fn new(problem: Problem, layout: Layout) -> Self {
        FwdCase {
            problem,
            layout,
            device_rng: false,
            decode: DecodeOpts::default(),
            backward: None,
        }
    }

    /// The same case followed by its backward.
    pub fn with_backward(mut self, opts: BwdOpts) -> Self {
        self.backward = Some(opts);
        self
    }

    /// The same case with inference options.
    pub fn with_decode(mut self, decode: DecodeOpts) -> Self {
        self.decode = decode;
        self
    }

    /// The same case with the Philox seed and offset in device memory.
    pub fn with_device_rng(mut self) -> Self {
        self.device_rng = true;
        self
    }
}

/// Outcome of one check.
#[derive(Debug)]
pub struct FwdOutcome {
    /// `out` against the pass rule.
    pub out: Report,
    /// `lse` against the pass rule (with `-inf` parity).
    pub lse: Report,
    /// With dropout (`p > 0`): the number of dropout-mask bytes that differ from
    /// `attn_ref::dropout::mask_tensor` (see [`mask_mismatches`]); `None` without dropout.
    pub mask_mismatches: Option<usize>,
    /// With [`FwdCase::backward`]: `dq`, `dk`, `dv` (and `dbias`) against the pass rule.
    pub grads: Vec<Report>,
    /// With [`BwdOpts::repeats`]: gradient elements whose bits differ between runs.
    pub nondeterministic: Option<usize>,
}

impl FwdOutcome {
    /// Both tensors pass and the dropout mask (if any) matches exactly.
    pub fn passed(&self) -> bool {
        self.out.passed()
            && self.lse.passed()
            && self.mask_mismatches.unwrap_or(0) == 0
            && self.grads.iter().all(Report::passed)
            && self.nondeterministic.unwrap_or(0) == 0
    }
}

impl std::fmt::Display for FwdOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n{}", self.out, self.lse)?;
        if let Some(n) = self.mask_mismatches {
            write!(f, "\ndropout mask: {n} bytes differ")?;
        }
        for g in &self.grads {
            write!(f, "\n{g}")?;
        }
        if let Some(n) = self.nondeterministic {
            write!(f, "\nbackward repeats: {n} elements differ")?;
        }
        Ok(())
    }
}

/// The kernel element type of a reference dtype.
pub fn host_dtype(d: Dtype) -> DType {
    match d {
        Dtype::F16 => DType::F16,
        Dtype::Bf16 => DType::Bf16,
        Dtype::F32 => DType::F32,
    }
}

/// Element bits of a value rounded to `dtype` (u16 payloads for f16/bf16).
fn bits(x: f32, dtype: DType) -> u32 {
    match dtype {
        DType::F16 => half::f16::from_f32(x).to_bits() as u32,
        DType::Bf16 => half::bf16::from_f32(x).to_bits() as u32,
        DType::F32 => x.to_bits(),
    }
}

/// Element bits of a rounded reference tensor, contiguous in `layout`.
fn device_bits(t: &Tensor, dtype: DType, layout: Layout) -> Vec<u32> {
    let [b, s, h, d] = t.shape;
    let mut v = Vec::with_capacity(t.numel());
    let mut push = |x: f32| v.push(bits(x, dtype));
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

/// Element strides of a `[B, S, H, D]` tensor stored in `layout` (a size-0 dimension counts as
/// 1, so that strides stay distinct).
fn strides(shape: [usize; 4], layout: Layout) -> [i64; 4] {
    let [_, s, h, d] = shape.map(|x| x.max(1) as i64);
    match layout {
        Layout::Bmhk => [s * h * d, h * d, d, 1],
        Layout::Bhmk => [s * h * d, d, s * d, 1],
    }
}

/// Copies `data` to the device; an empty slice gets a one-element buffer (zeroed), since
/// runtimes refuse zero-byte allocations.
fn upload<T: bytemuck::Pod>(dev: &Device, data: &[T]) -> attn_host::Result<DeviceBuffer<T>> {
    if data.is_empty() {
        dev.clone_htod(&[T::zeroed()])
    } else {
        dev.clone_htod(data)
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
            DType::F32 => Raw::Single(upload(dev, bits)?),
            _ => Raw::Half(upload(
                dev,
                &bits.iter().map(|&b| b as u16).collect::<Vec<_>>(),
            )?),
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
fn kernel_tile(dev: &Device, call: &attn_host::Forward) -> (usize, usize) {
    use attn_kernels::fwd::policy::{Family, fwd_tile_of};
    let family = dev.tile_family().unwrap_or(Family::Sm80);
    match call.plan(family) {
        Ok(plan) => match plan.kernel {
            attn_host::KernelId::Fwd {
                dtype,
                head_dim,
                variant,
            } => {
                let t = fwd_tile_of(family, dtype, head_dim as usize, variant);
                (t.block_m, t.block_n)
            }
            _ => (64, 64),
        },
        Err(_) => (64, 64),
    }
}

/// Compares a dropout mask read back from the device (`[nb, Hq, max_sq, max_sk]`, contiguous)
/// with `attn_ref::dropout::mask_tensor`.
///
/// Every position the contract covers (semantics.md §4: batch mode every `(b, h, i, j)`; varlen
/// `i < Sq_b`, `j < Sk_b` before `seqused_k`) must match byte for byte. The padding of shorter
/// varlen sequences up to `max_sq` / `max_sk` is outside the contract: the reference writes 0
/// there, and the kernel may write 0 or leave it untouched (the harness poisons it with `0xFF`);
/// anything else counts as a mismatch. Returns the number of mismatching bytes.
pub fn mask_mismatches(p: &Problem, got: &[u8], want: &[u8]) -> usize {
    let [nb, hq, mq, mk] = p.bias_shape();
    let n = nb * hq * mq * mk;
    if got.len() < n || want.len() < n {
        return n.max(1);
    }
    let seqs = p.seqs();
    let mut bad = 0;
    for (b, s) in seqs.iter().enumerate().take(nb) {
        for h in 0..hq {
            for i in 0..mq {
                let row = ((b * hq + h) * mq + i) * mk;
                for j in 0..mk {
                    let (g, w) = (got[row + j], want[row + j]);
                    let in_range = i < s.sq && j < s.sk_total;
                    let ok = if in_range {
                        g == w
                    } else {
                        g == w || g == 0xFF
                    };
                    bad += usize::from(!ok);
                }
            }
        }
    }
    bad
}

/// The address and length of one buffer of a check (`len` in elements; for the i32 arrays and
/// the slopes, their logical length).
#[derive(Clone, Copy, Debug, Default)]
struct Buf {
    ptr: u64,
    len: usize,
}

/// Every buffer of one check, real or (for [`plan_fwd`]) made up.
#[derive(Clone, Copy, Debug, Default)]
struct Bufs {
    q: Buf,
    k: Buf,
    v: Buf,
    out: Buf,
    lse: Buf,
    cu_seqlens: Option<(Buf, Buf)>,
    seqused_k: Option<Buf>,
    bias: Option<Buf>,
    slopes: Option<Buf>,
    /// Two u64 words: the seed and the device part of the offset.
    rng: Option<Buf>,
    mask: Option<Buf>,
    /// Paged KV: the block table, and the cache's shape `[num_pages, page_size]`, max_pages and
    /// table stride.
    paged: Option<(Buf, [usize; 4])>,
}

/// Whether a case requests the dropout mask (dropout with `p > 0`).
fn wants_mask(p: &Problem) -> bool {
    p.dropout.is_some_and(|d| d.p > 0.0)
}

/// The host part of the offset with a device generator (the device holds the rest).
fn host_offset_part(offset: u64) -> u64 {
    offset / 2
}

/// The forward call of a case on `b`'s buffers: every feature of the problem.
fn forward_call(case: &FwdCase, p: &Problem, x: &Inputs, b: &Bufs) -> Forward {
    let dtype = host_dtype(p.dtype);
    let tref = |r: Buf, shape| TensorRef {
        ptr: r.ptr,
        len: r.len,
        dtype,
        shape,
        strides: strides(shape, case.layout),
    };
    // Paged k/v are BMHK pages [num_pages, page_size, Hk, D|Dv].
    let (k_shape, v_shape) = match b.paged {
        None => (p.k_shape(), p.v_shape()),
        Some((_, [np, ps, _, _])) => (
            [np, ps, p.heads_k, p.head_dim],
            [np, ps, p.heads_k, p.head_dim_v],
        ),
    };
    let kvref = |r: Buf, shape| match b.paged {
        None => tref(r, shape),
        Some(_) => TensorRef {
            len: r.len,
            ..TensorRef::contiguous(r.ptr, dtype, shape)
        },
    };
    let mut call = Forward::new(
        tref(b.q, p.q_shape()),
        kvref(b.k, k_shape),
        kvref(b.v, v_shape),
        tref(b.out, p.out_shape()),
    )
    .lse(LseRef {
        len: b.lse.len,
        ..LseRef::contiguous(b.lse.ptr, p.lse_shape())
    })
    .mask(host_mask(p.mask))
    .softcap(p.softcap);
    if let Some(s) = p.scale {
        call = call.scale(s);
    }
    let i32s = |r: Buf| I32Ref {
        ptr: r.ptr,
        len: r.len,
    };
    if let Some((cq, ck)) = b.cu_seqlens {
        let (mq, mk) = p.max_seqlens();
        call = call.varlen(attn_host::Varlen {
            cu_seqlens_q: i32s(cq),
            cu_seqlens_k: i32s(ck),
            max_seqlen_q: mq,
            max_seqlen_k: mk,
        });
    }
    if let Some(u) = b.seqused_k {
        call = call.seqused_k(i32s(u));
    }
    if let (Some(buf), Some(t)) = (b.bias, &x.bias) {
        call = call.bias(BiasRef {
            ptr: buf.ptr,
            len: buf.len,
            dtype: host_dtype(t.dtype),
            shape: t.shape,
            strides: t.strides.map(|s| s as i64),
        });
    }
    if let (Some(buf), Some(a)) = (b.slopes, &p.alibi) {
        call = call.alibi(AlibiRef {
            ptr: buf.ptr,
            len: buf.len,
            per_batch: a.per_batch,
        });
    }
    if let Some(d) = &p.dropout {
        let rng = match b.rng {
            Some(words) => Philox::Device {
                seed_ptr: words.ptr,
                offset_ptr: words.ptr + 8,
                offset: host_offset_part(d.offset),
            },
            None => Philox::Host {
                seed: d.seed,
                offset: d.offset,
            },
        };
        call = call.dropout(attn_host::Dropout { p: d.p, rng });
    }
    if let Some(m) = b.mask {
        call = call.dropout_mask(MaskRef {
            len: m.len,
            ..MaskRef::contiguous(m.ptr, p.bias_shape())
        });
    }
    if let Some((t, [_, _, max_pages, table_stride])) = b.paged {
        call = call.paged(Paged {
            block_table: i32s(t),
            max_pages,
            table_stride,
        });
    }
    call.route(case.decode.route)
        .splits(case.decode.splits)
        .pack_gqa(case.decode.packing)
}

/// `call` writing its output and lse to `out` / `lse` instead.
fn part_outputs(call: Forward, out: TensorRef, lse: LseRef) -> Forward {
    call.output(out).lse(lse)
}

/// Plans a case's forward call for `family` on made-up (but consistently sized, aligned and
/// disjoint) device addresses, without a device: checks on any machine that the harness passes
/// every feature in a form the host API accepts, and shows which kernel and grids a case gets.
pub fn plan_fwd(case: &FwdCase, seed: u64, family: Family) -> Result<Plan, String> {
    let p = &case.problem;
    p.validate().map_err(|e| e.to_string())?;
    let (pc, x, cache) = match &case.decode.paged {
        None => (p.clone(), Inputs::random(p, seed, 1.0), None),
        Some(cfg) => {
            let kv = PagedKv::random(p, cfg, seed).map_err(|e| e.to_string())?;
            let (pc, x) = kv.random_inputs(p, seed, 1.0).map_err(|e| e.to_string())?;
            (pc, x, Some(kv))
        }
    };
    let p = &pc;
    let mut next = 0x1_0000_0000u64;
    let mut at = |len: usize, esize: usize| {
        let ptr = next;
        next += ((len.max(1) * esize) as u64).div_ceil(256) * 256 + 256;
        Buf { ptr, len }
    };
    let es = host_dtype(p.dtype).size();
    let numel = |s: [usize; 4]| s.iter().product::<usize>().max(1);
    let (k_len, v_len) = match &cache {
        None => (numel(p.k_shape()), numel(p.v_shape())),
        Some(kv) => (kv.k_pages.data.len(), kv.v_pages.data.len()),
    };
    let bufs = Bufs {
        q: at(numel(p.q_shape()), es),
        k: at(k_len, es),
        v: at(v_len, es),
        out: at(numel(p.out_shape()), es),
        lse: at(p.lse_len().max(1), 4),
        cu_seqlens: p
            .varlen
            .as_ref()
            .map(|v| (at(v.cu_seqlens_q.len(), 4), at(v.cu_seqlens_k.len(), 4))),
        seqused_k: p.seqused_k.as_ref().map(|u| at(u.len(), 4)),
        bias: x
            .bias
            .as_ref()
            .map(|t| at(t.data.len(), host_dtype(t.dtype).size())),
        slopes: p.alibi.as_ref().map(|a| at(a.slopes.len(), 4)),
        rng: (p.dropout.is_some() && case.device_rng).then(|| at(2, 8)),
        mask: wants_mask(p).then(|| at(numel(p.bias_shape()), 1)),
        paged: cache.as_ref().map(|kv| {
            let [np, ps, _, _] = kv.k_pages.shape;
            (
                at(kv.block_table.len(), 4),
                [np, ps, kv.max_pages, kv.table_stride],
            )
        }),
    };
    let mut call = forward_call(case, p, &x, &bufs);
    // Partial attentions: the first range's call.
    if let Some(&(lo, hi)) = case.decode.key_ranges.first() {
        call = call.key_range(lo, hi);
    }
    call.plan(family).map_err(|e| e.to_string())
}

/// Runs every case on a GPU (or prints why the test is skipped) and panics with every failure.
///
/// Case `n` draws its inputs from `seed_base + 7919 n + pid`. A case whose kernel this target does
/// not build (`policy::instantiated`) must give the typed `Unsupported` error; those are counted
/// and printed, not failed.
pub fn check_cases(name: &str, seed_base: u64, cases: &[FwdCase]) {
    check_with(name, seed_base, cases.len(), |dev, n, seed| {
        (format!("{:?}", cases[n]), run_fwd(dev, &cases[n], seed))
    });
}

/// [`check_cases`] through the seed's entry points ([`run_ck`]).
pub fn check_ck_cases(name: &str, seed_base: u64, cases: &[(FwdCase, CkOpts)]) {
    check_with(name, seed_base, cases.len(), |dev, n, seed| {
        let (case, ck) = &cases[n];
        (format!("{case:?} {ck:?}"), run_ck(dev, case, *ck, seed))
    });
}

/// Runs `count` checks (`run(dev, n, seed)` names case `n` and runs it) and asserts they pass.
fn check_with(
    name: &str,
    seed_base: u64,
    count: usize,
    run: impl Fn(&Device, usize, u64) -> (String, Result<FwdOutcome, String>),
) {
    let Some(dev) = device_or_skip(name) else {
        return;
    };
    let mut failures = Vec::new();
    let mut not_built = 0;
    for n in 0..count {
        let seed = seed_base + n as u64 * 7919 + std::process::id() as u64;
        match run(&dev, n, seed) {
            (_, Ok(o)) if o.passed() => {}
            (case, Ok(o)) => failures.push(format!("{case} seed {seed}:\n{o}")),
            (_, Err(e)) if e.contains("is not built for") => not_built += 1,
            (case, Err(e)) => failures.push(format!("{case}: error {e}")),
        }
    }
    if not_built > 0 {
        eprintln!(
            "{name}: {not_built} cases are Unsupported here (kernel not built for this target)"
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        count,
        failures.join("\n")
    );
    eprintln!(
        "{name}: {} cases passed on {}",
        count - not_built,
        dev.info().name
    );
}

/// Runs one forward check on `dev` with inputs drawn from `seed`.
pub fn run_fwd(dev: &Device, case: &FwdCase, seed: u64) -> Result<FwdOutcome, String> {
    run_case(dev, case, None, seed)
}

/// [`run_fwd`] through the seed's entry points: `mem_eff_forward_ck`, then (with
/// [`FwdCase::backward`]) `mem_eff_backward_ck`, each argument present or absent as `ck` says.
/// The problem may use what the seed's arguments can say: no mask or bottom-right causal, no
/// ALiBi or softcap, no inference options, and no `seqused_k` with a backward.
pub fn run_ck(dev: &Device, case: &FwdCase, ck: CkOpts, seed: u64) -> Result<FwdOutcome, String> {
    let p = &case.problem;
    let seed_mask = matches!(
        p.mask,
        attn_ref::Mask::None
            | attn_ref::Mask::Causal {
                align: attn_ref::Align::BottomRight
            }
    );
    if !seed_mask || p.alibi.is_some() || p.softcap != 0.0 {
        return Err("run_ck: the seed's arguments cannot express this problem".into());
    }
    if case.backward.is_some() && p.seqused_k.is_some() {
        return Err("run_ck: mem_eff_backward_ck has no seqused_k".into());
    }
    if case.decode.paged.is_some() || !case.decode.key_ranges.is_empty() {
        return Err("run_ck: no inference options on the seed's entry points".into());
    }
    run_case(dev, case, Some(ck), seed)
}

fn run_case(
    dev: &Device,
    case: &FwdCase,
    ck: Option<CkOpts>,
    seed: u64,
) -> Result<FwdOutcome, String> {
    case.problem.validate().map_err(|e| e.to_string())?;
    // A paged case: a random cache, and its contiguous equivalent for the reference.
    let (pc, x, cache) = match &case.decode.paged {
        None => (
            case.problem.clone(),
            Inputs::random(&case.problem, seed, 1.0),
            None,
        ),
        Some(cfg) => {
            let kv = PagedKv::random(&case.problem, cfg, seed).map_err(|e| e.to_string())?;
            let (pc, x) = kv
                .random_inputs(&case.problem, seed ^ 0x9a9e, 1.0)
                .map_err(|e| e.to_string())?;
            (pc, x, Some(kv))
        }
    };
    let p = &pc;
    let dtype = host_dtype(p.dtype);
    let stream = dev.default_stream();
    let e = |e: attn_host::Error| e.to_string();
    let os = p.out_shape();
    let q = Raw::upload(dev, &device_bits(&x.q, dtype, case.layout), dtype).map_err(e)?;
    let (k, v) = match &cache {
        None => (
            Raw::upload(dev, &device_bits(&x.k, dtype, case.layout), dtype).map_err(e)?,
            Raw::upload(dev, &device_bits(&x.v, dtype, case.layout), dtype).map_err(e)?,
        ),
        Some(kv) => (
            Raw::upload(dev, &device_bits(&kv.k_pages, dtype, Layout::Bmhk), dtype).map_err(e)?,
            Raw::upload(dev, &device_bits(&kv.v_pages, dtype, Layout::Bmhk), dtype).map_err(e)?,
        ),
    };
    let out_len: usize = os.iter().product();
    let out = Raw::poisoned(dev, out_len, dtype, &stream).map_err(e)?;
    let lse_shape = p.lse_shape();
    let lse_len: usize = lse_shape.iter().product();
    let mut lse: DeviceBuffer<f32> = dev.alloc(lse_len.max(1)).map_err(e)?;
    lse.fill_bytes(0xFF, &stream).map_err(e)?;
    let raw = |r: &Raw| Buf {
        ptr: r.ptr(),
        len: r.len(),
    };
    let mut bufs = Bufs {
        q: raw(&q),
        k: raw(&k),
        v: raw(&v),
        out: raw(&out),
        lse: Buf {
            ptr: lse.ptr(),
            len: lse.len(),
        },
        ..Bufs::default()
    };
    // The i32 arrays, with their logical lengths (an empty one still gets a buffer).
    let mut arrays: Vec<DeviceBuffer<i32>> = Vec::new();
    let mut array = |data: &[i32]| -> attn_host::Result<Buf> {
        let b = upload(dev, data)?;
        let buf = Buf {
            ptr: b.ptr(),
            len: data.len(),
        };
        arrays.push(b);
        Ok(buf)
    };
    if let Some(vl) = &p.varlen {
        bufs.cu_seqlens = Some((
            array(&vl.cu_seqlens_q).map_err(e)?,
            array(&vl.cu_seqlens_k).map_err(e)?,
        ));
    }
    if let Some(used) = &p.seqused_k {
        bufs.seqused_k = Some(array(used).map_err(e)?);
    }
    if let Some(kv) = &cache {
        let t = array(&kv.block_table).map_err(e)?;
        let [np, ps, _, _] = kv.k_pages.shape;
        bufs.paged = Some((t, [np, ps, kv.max_pages, kv.table_stride]));
    }
    // The bias: the reference tensor's storage (zero strides included), in its dtype.
    let bias = match &x.bias {
        Some(t) => {
            let bdt = host_dtype(t.dtype);
            let data: Vec<u32> = t.data.iter().map(|&v| bits(v, bdt)).collect();
            let r = Raw::upload(dev, &data, bdt).map_err(e)?;
            bufs.bias = Some(Buf {
                ptr: r.ptr(),
                len: t.data.len(),
            });
            Some(r)
        }
        None => None,
    };
    let slopes = match &p.alibi {
        Some(a) => {
            let s = upload(dev, &a.slopes).map_err(e)?;
            bufs.slopes = Some(Buf {
                ptr: s.ptr(),
                len: a.slopes.len(),
            });
            Some(s)
        }
        None => None,
    };
    // A device generator: the seed, and the offset split between the device and the host.
    let rng = match &p.dropout {
        Some(d) if case.device_rng => {
            let words = upload(dev, &[d.seed, d.offset - host_offset_part(d.offset)]).map_err(e)?;
            bufs.rng = Some(Buf {
                ptr: words.ptr(),
                len: 2,
            });
            Some(words)
        }
        _ => None,
    };
    let mask_len: usize = p.bias_shape().iter().product();
    let mask = if wants_mask(p) {
        let mut m: DeviceBuffer<u8> = dev.alloc(mask_len.max(1)).map_err(e)?;
        m.fill_bytes(0xFF, &stream).map_err(e)?;
        bufs.mask = Some(Buf {
            ptr: m.ptr(),
            len: m.len(),
        });
        Some(m)
    } else {
        None
    };

    let call = forward_call(case, p, &x, &bufs);
    let ranges = &case.decode.key_ranges;
    let ck_run = match ck {
        Some(opts) => Some(ck_forward(dev, case, p, &x, &bufs, opts)?),
        None => None,
    };
    if ck_run.is_some() {
        // Launched by `mem_eff_forward_ck` above.
    } else if ranges.is_empty() {
        // SAFETY: every buffer above is a live allocation on `dev` whose length the plan checks,
        // and they all outlive the synchronisation below.
        unsafe { call.launch(&stream) }.map_err(e)?;
    } else {
        // Partials [n, B, S, H, Dv] (q's dtype) and [n, B, H, S] (f32), poisoned, then merged.
        let n = ranges.len();
        let lse_len: usize = p.lse_shape().iter().product();
        let parts = Raw::poisoned(dev, n * out_len, dtype, &stream).map_err(e)?;
        let mut parts_lse: DeviceBuffer<f32> = dev.alloc((n * lse_len).max(1)).map_err(e)?;
        parts_lse.fill_bytes(0xFF, &stream).map_err(e)?;
        let es = dtype.size() as u64;
        for (r, &(lo, hi)) in ranges.iter().enumerate() {
            let mut part = call;
            let o = TensorRef::contiguous(parts.ptr() + (r * out_len) as u64 * es, dtype, os);
            let l = LseRef::contiguous(parts_lse.ptr() + (r * lse_len * 4) as u64, p.lse_shape());
            part = part.key_range(lo, hi);
            part = part_outputs(part, o, l);
            // SAFETY: as above; the partial buffers are live and sized for their shapes.
            unsafe { part.launch(&stream) }.map_err(e)?;
        }
        let [b_, s_, h_, dv_] = os;
        let pr = PartialsRef {
            ptr: parts.ptr(),
            len: parts.len(),
            dtype,
            shape: [n, b_, s_, h_, dv_],
            strides: [
                out_len as i64,
                (s_ * h_ * dv_) as i64,
                (h_ * dv_) as i64,
                dv_ as i64,
                1,
            ],
        };
        let lr = PartialLseRef {
            ptr: parts_lse.ptr(),
            len: parts_lse.len(),
            shape: [n, b_, h_, s_],
            strides: [lse_len as i64, (h_ * s_) as i64, s_ as i64, 1],
        };
        let out_ref = TensorRef {
            ptr: bufs.out.ptr,
            len: bufs.out.len,
            dtype,
            shape: os,
            strides: strides(os, case.layout),
        };
        let merge = Merge::new(pr, lr, out_ref).lse(LseRef {
            len: bufs.lse.len,
            ..LseRef::contiguous(bufs.lse.ptr, p.lse_shape())
        });
        // SAFETY: the partials are live until the synchronisation below; out/lse as above.
        unsafe { merge.launch(&stream) }.map_err(e)?;
        stream.synchronize().map_err(e)?;
        drop((parts, parts_lse));
    }
    stream.synchronize().map_err(e)?;
    let given_out = ck_run
        .as_ref()
        .is_none_or(|r| r.result.output.storage().is_none());
    let got_out = match &ck_run {
        Some(r) if !given_out => to_bmhk(
            &ck_f32(&r.result.output, dtype, &stream)?[..out_len],
            os,
            Layout::Bmhk,
        ),
        _ => to_bmhk(
            &out.to_f32(dtype, &stream).map_err(e)?[..out_len],
            os,
            case.layout,
        ),
    };
    let got_lse = match &ck_run {
        Some(r) => r.result.lse.to_host::<f32>(&stream).map_err(e)?,
        None => lse.to_host(&stream).map_err(e)?,
    };
    let got_lse = &got_lse[..lse_len];
    let got_mask = match (&ck_run, &mask) {
        (Some(r), _) => match &r.result.dropout_randval {
            Some(m) => Some(ck_mask(p, m, &stream)?),
            None if ck.is_some_and(|o| o.randval) && wants_mask(p) => {
                return Err("mem_eff_forward_ck returned no dropout_randval".into());
            }
            None => None,
        },
        (None, Some(m)) => Some(m.to_host(&stream).map_err(e)?),
        (None, None) => None,
    };
    // The default generator's draw decides the mask: judge with the (seed, offset) it used.
    let drawn;
    let p = match ck_run.as_ref().and_then(|r| r.drawn) {
        Some((seed, offset)) => {
            drawn = p
                .clone()
                .with_dropout(p.dropout.map_or(0.0, |d| d.p), seed, offset);
            &drawn
        }
        None => p,
    };
    let bwd = match case.backward {
        Some(opts) if cache.is_none() && ranges.is_empty() => Some(run_backward(
            dev,
            case,
            p,
            &x,
            call,
            &bufs,
            ck.zip(ck_run.as_ref().map(|r| &r.result)),
            opts,
            seed,
        )?),
        _ => None,
    };
    drop(ck_run);
    drop((arrays, bias, slopes, rng, mask));

    let truth = attn_ref::forward(p, &x).map_err(|e| e.to_string())?;
    let (bm, bn) = kernel_tile(dev, &call);
    let mut lowp = attn_ref::forward_blocked(p, &x, bm, bn).map_err(|e| e.to_string())?;
    if !ranges.is_empty() {
        // Partial attentions store their outputs in q's dtype before the merge: the reference
        // rounds each range's exact partial there too, merges in f64 and rounds once more.
        let es = |e: attn_ref::Error| e.to_string();
        let mut parts = Vec::with_capacity(ranges.len());
        for &(lo, hi) in ranges {
            let mut part = attn_ref::paged::forward_partial(p, &x, lo..hi.max(lo)).map_err(es)?;
            for o in &mut part.out {
                *o = p.dtype.round_f64(*o) as f64;
            }
            parts.push(part);
        }
        let refs: Vec<&attn_ref::ForwardOutput> = parts.iter().collect();
        let merged = attn_ref::paged::merge(p, &refs).map_err(es)?;
        lowp.out = merged.out.iter().map(|&o| p.dtype.round_f64(o)).collect();
    }
    let mask_mismatches = got_mask.map(|got| {
        let want = attn_ref::dropout::mask_tensor(p).unwrap_or_default();
        mask_mismatches(p, &got, &want)
    });
    let (grads, nondeterministic) = match bwd {
        None => (Vec::new(), None),
        Some(g) => judge_backward(p, &x, &truth, &lowp, g)?,
    };
    Ok(FwdOutcome {
        out: attn_ref::check(&got_out, &truth.out, &lowp.out)
            .named("out")
            .with_shape(&os),
        lse: attn_ref::check_lse(got_lse, &truth.lse, &lowp.lse)
            .named("lse")
            .with_shape(&lse_shape),
        mask_mismatches,
        grads,
        nondeterministic,
    })
}

/// A forward run through `mem_eff_forward_ck`.
struct CkRun {
    result: MemEffForward,
    /// With the default generator: the `(seed, offset)` it drew (the mask's).
    drawn: Option<(u64, u64)>,
}

/// A caller view of one of the case's q/k/v buffers.
fn call_view(r: Buf, shape: [usize; 4], dtype: DType, layout: Layout) -> TensorRef {
    TensorRef {
        ptr: r.ptr,
        len: r.len,
        dtype,
        shape,
        strides: strides(shape, layout),
    }
}

/// The case's bias as a view of its buffer.
fn bias_ref(b: &Bufs, x: &Inputs) -> Option<BiasRef> {
    match (b.bias, &x.bias) {
        (Some(buf), Some(t)) => Some(BiasRef {
            ptr: buf.ptr,
            len: buf.len,
            dtype: host_dtype(t.dtype),
            shape: t.shape,
            strides: t.strides.map(|s| s as i64),
        }),
        _ => None,
    }
}

/// An allocated tensor of `dtype` elements, read back as f32.
fn ck_f32<R: Copy>(
    t: &CkTensor<R>,
    dtype: DType,
    s: &attn_host::Stream,
) -> Result<Vec<f32>, String> {
    let e = |e: attn_host::Error| e.to_string();
    Ok(match dtype {
        DType::F32 => t.to_host::<f32>(s).map_err(e)?,
        DType::F16 => t
            .to_host::<u16>(s)
            .map_err(e)?
            .into_iter()
            .map(|x| half::f16::from_bits(x).to_f32())
            .collect(),
        DType::Bf16 => t
            .to_host::<u16>(s)
            .map_err(e)?
            .into_iter()
            .map(|x| half::bf16::from_bits(x).to_f32())
            .collect(),
    })
}

/// The forward's `dropout_randval` `[nb, Hq, max_sq', max_sk']` (the call's own extents: the
/// totals in varlen mode without a bias) cut to the problem's `[nb, Hq, max_sq, max_sk]`.
fn ck_mask(p: &Problem, m: &CkTensor<MaskRef>, s: &attn_host::Stream) -> Result<Vec<u8>, String> {
    let all = m.to_host::<u8>(s).map_err(|e| e.to_string())?;
    let [nb, hq, mq, mk] = p.bias_shape();
    let [_, _, cq, ckk] = m.view().shape;
    if cq < mq || ckk < mk {
        return Err(format!(
            "dropout_randval is [.., {cq}, {ckk}], smaller than the problem's [.., {mq}, {mk}]"
        ));
    }
    let mut out = Vec::with_capacity(nb * hq * mq * mk);
    for bh in 0..nb * hq {
        for i in 0..mq {
            let row = (bh * cq + i) * ckk;
            out.extend_from_slice(&all[row..row + mk]);
        }
    }
    Ok(out)
}

/// Runs the case's forward through `mem_eff_forward_ck` on the harness's buffers.
fn ck_forward(
    dev: &Device,
    case: &FwdCase,
    p: &Problem,
    x: &Inputs,
    b: &Bufs,
    ck: CkOpts,
) -> Result<CkRun, String> {
    let e = |e: attn_host::Error| e.to_string();
    let stream = dev.default_stream();
    let dtype = host_dtype(p.dtype);
    let view = |r: Buf, shape| call_view(r, shape, dtype, case.layout);
    let i32s = |r: Buf| I32Ref {
        ptr: r.ptr,
        len: r.len,
    };
    let (cu, starts) = match (b.cu_seqlens, ck.seq_names) {
        (None, _) => ((None, None), (None, None)),
        (Some((q, k)), SeqNames::CuSeqlens) => ((Some(i32s(q)), Some(i32s(k))), (None, None)),
        (Some((q, k)), SeqNames::Seqstart) => ((None, None), (Some(i32s(q)), Some(i32s(k)))),
        (Some((q, k)), SeqNames::Both) => (
            (Some(i32s(q)), Some(i32s(k))),
            (Some(i32s(q)), Some(i32s(k))),
        ),
    };
    let d = p.dropout.filter(|d| d.p > 0.0);
    let mut generator = match (ck.generator, d) {
        (CkGenerator::Host, Some(d)) => Some(PhiloxGenerator::host(d.seed, d.offset)),
        (CkGenerator::Device, Some(d)) => {
            Some(PhiloxGenerator::device(dev, d.seed, d.offset).map_err(e)?)
        }
        _ => None,
    };
    // SAFETY: every view is of a live allocation on `dev` sized by the plan's checks; the
    // buffers outlive the synchronisation after this call.
    let result = unsafe {
        attn_host::mem_eff_forward_ck(
            &stream,
            view(b.q, p.q_shape()),
            view(b.k, p.k_shape()),
            view(b.v, p.v_shape()),
            d.map_or(0.0, |d| d.p as f32),
            ck.randval,
            Some(p.mask != attn_ref::Mask::None),
            p.scale,
            bias_ref(b, x),
            ck.give_outputs.then(|| view(b.out, p.out_shape())),
            cu.0,
            cu.1,
            starts.0,
            starts.1,
            generator.as_mut(),
            b.seqused_k.map(i32s),
        )
    }
    .map_err(e)?;
    stream.synchronize().map_err(e)?;
    // The Philox the call used must be the generator's draw at the problem's (seed, offset).
    let drawn = match (result.philox, &result.philox_state, ck.generator, d) {
        (None, _, _, None) => None,
        (Some(Philox::Host { seed, offset }), None, CkGenerator::Default, Some(_)) => {
            Some((seed, offset))
        }
        (Some(Philox::Host { seed, offset }), None, CkGenerator::Host, Some(d)) => {
            if (seed, offset) != (d.seed, d.offset) {
                return Err(format!("host generator drew {seed}/{offset}"));
            }
            None
        }
        (Some(Philox::Device { .. }), Some(snap), CkGenerator::Device, Some(d)) => {
            let got = snap.read(&stream).map_err(e)?;
            if got != (d.seed, d.offset) {
                return Err(format!("device generator's snapshot holds {got:?}"));
            }
            None
        }
        (got, _, g, _) => return Err(format!("generator {g:?} returned {got:?}")),
    };
    Ok(CkRun { result, drawn })
}

/// What the backward of a case wrote (BMHK order), and its repeat differences.
struct BwdGot {
    dout: Tensor,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    dbias: Option<Vec<f32>>,
    zero_tensors: bool,
    differ: Option<usize>,
}

/// Runs the backward of `call` (whose forward just ran on `b`'s buffers) on a fresh random
/// `dout`, into poisoned gradients in the case's layout (`dbias` contiguous in the bias's shape
/// and dtype), `1 + repeats` times.
#[allow(clippy::too_many_arguments)]
fn run_backward(
    dev: &Device,
    case: &FwdCase,
    p: &Problem,
    x: &Inputs,
    call: Forward,
    b: &Bufs,
    ck: Option<(CkOpts, &MemEffForward)>,
    opts: BwdOpts,
    seed: u64,
) -> Result<BwdGot, String> {
    let e = |e: attn_host::Error| e.to_string();
    let dtype = host_dtype(p.dtype);
    let stream = dev.default_stream();
    let mut state = seed ^ 0xd0d0_5eed_0000_0001;
    let dout = Tensor::from_fn(p.dtype, p.out_shape(), |_| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    });
    let d_o = Raw::upload(dev, &device_bits(&dout, dtype, case.layout), dtype).map_err(e)?;
    let numel = |s: [usize; 4]| s.iter().product::<usize>();
    let (qs, ks, vs) = (p.q_shape(), p.k_shape(), p.v_shape());
    let tref = |r: &Raw, shape| TensorRef {
        ptr: r.ptr(),
        len: r.len(),
        dtype,
        shape,
        strides: strides(shape, case.layout),
    };
    let want_dbias = opts.dbias && p.bias.is_some();
    let bias_dtype = p.bias.map_or(dtype, |bs| host_dtype(bs.dtype));
    let bshape = p.bias_shape();
    let runs = 1 + opts.repeats;
    let mut first: Option<Vec<Vec<f32>>> = None;
    let mut differ = 0usize;
    let mut result = None;
    for _ in 0..runs {
        let dq = Raw::poisoned(dev, numel(qs), dtype, &stream).map_err(e)?;
        let dk = Raw::poisoned(dev, numel(ks), dtype, &stream).map_err(e)?;
        let dv = Raw::poisoned(dev, numel(vs), dtype, &stream).map_err(e)?;
        let db = if want_dbias {
            Some(Raw::poisoned(dev, numel(bshape), bias_dtype, &stream).map_err(e)?)
        } else {
            None
        };
        let dbias_ref = db.as_ref().map(|r| {
            let (len, st) = contiguous4(bshape);
            BiasRef {
                ptr: r.ptr(),
                len: len.min(r.len()),
                dtype: bias_dtype,
                shape: bshape,
                strides: st,
            }
        });
        let all = match ck {
            None => {
                let mut bwd = Backward::new(
                    call,
                    tref(&d_o, p.out_shape()),
                    tref(&dq, qs),
                    tref(&dk, ks),
                    tref(&dv, vs),
                )
                .zero_tensors(opts.zero_tensors)
                .deterministic(opts.deterministic);
                if let Some(d) = dbias_ref {
                    bwd = bwd.dbias(d);
                }
                // SAFETY: every buffer is a live allocation on `dev` whose length the plan
                // checks; they outlive the synchronisation below.
                unsafe { bwd.launch(&stream) }.map_err(e)?;
                stream.synchronize().map_err(e)?;
                let read = |r: &Raw, shape| -> Result<Vec<f32>, String> {
                    let v = r.to_f32(dtype, &stream).map_err(e)?;
                    Ok(to_bmhk(&v[..numel(shape)], shape, case.layout))
                };
                let mut all = vec![read(&dq, qs)?, read(&dk, ks)?, read(&dv, vs)?];
                if let Some(r) = &db {
                    let v = r.to_f32(bias_dtype, &stream).map_err(e)?;
                    all.push(v[..numel(bshape)].to_vec());
                }
                all
            }
            Some((ck, fwd)) => {
                let give = ck.give_outputs;
                let (mq, mk) = p.max_seqlens();
                let cu = |q: bool| {
                    b.cu_seqlens.map(|(cq, ck_)| {
                        let r = if q { cq } else { ck_ };
                        I32Ref {
                            ptr: r.ptr,
                            len: r.len,
                        }
                    })
                };
                // SAFETY: every view is of a live allocation on `dev` (the harness's buffers
                // or the forward's), sized by the plan's checks; they outlive the
                // synchronisation below; `fwd` keeps a device generator's snapshot alive.
                let r = unsafe {
                    attn_host::mem_eff_backward_ck(
                        &stream,
                        tref(&d_o, p.out_shape()),
                        call_view(b.q, p.q_shape(), dtype, case.layout),
                        call_view(b.k, p.k_shape(), dtype, case.layout),
                        call_view(b.v, p.v_shape(), dtype, case.layout),
                        fwd.output.view(),
                        fwd.lse.view(),
                        give.then(|| tref(&dq, qs)),
                        give.then(|| tref(&dk, ks)),
                        give.then(|| tref(&dv, vs)),
                        bias_ref(b, x),
                        want_dbias,
                        dbias_ref.filter(|_| give),
                        cu(true),
                        cu(false),
                        mq,
                        mk,
                        p.dropout.map_or(0.0, |d| d.p as f32),
                        p.softmax_scale(),
                        p.mask != attn_ref::Mask::None,
                        opts.deterministic,
                        opts.zero_tensors,
                        fwd.philox,
                    )
                }
                .map_err(e)?;
                stream.synchronize().map_err(e)?;
                let read = |given: &Raw, t: &CkTensor<TensorRef>, shape| {
                    let (v, layout) = match t.storage() {
                        None => (given.to_f32(dtype, &stream).map_err(e)?, case.layout),
                        Some(_) => (ck_f32(t, dtype, &stream)?, Layout::Bmhk),
                    };
                    Ok::<_, String>(to_bmhk(&v[..numel(shape)], shape, layout))
                };
                let mut all = vec![
                    read(&dq, &r.dq, qs)?,
                    read(&dk, &r.dk, ks)?,
                    read(&dv, &r.dv, vs)?,
                ];
                match (&r.dbias, &db) {
                    (Some(t), Some(given)) => {
                        let v = match t.storage() {
                            None => given.to_f32(bias_dtype, &stream).map_err(e)?,
                            Some(_) => ck_f32(t, bias_dtype, &stream)?,
                        };
                        all.push(v[..numel(bshape)].to_vec());
                    }
                    (None, None) => {}
                    _ => return Err("mem_eff_backward_ck: dbias presence mismatch".into()),
                }
                all
            }
        };

        match &first {
            None => first = Some(all.clone()),
            Some(f) => {
                for (a, b) in f.iter().zip(&all) {
                    differ += a
                        .iter()
                        .zip(b)
                        .filter(|(x, y)| x.to_bits() != y.to_bits())
                        .count();
                }
            }
        }
        result = Some(all);
    }
    let mut all = result.unwrap_or_default().into_iter();
    let (dq, dk, dv) = (
        all.next().unwrap_or_default(),
        all.next().unwrap_or_default(),
        all.next().unwrap_or_default(),
    );
    let _ = x;
    Ok(BwdGot {
        dout,
        dq,
        dk,
        dv,
        dbias: all.next(),
        zero_tensors: opts.zero_tensors,
        differ: (opts.repeats > 0).then_some(differ),
    })
}

/// `(len, strides)` of a contiguous 4-d tensor.
fn contiguous4(shape: [usize; 4]) -> (usize, [i64; 4]) {
    let [_, h, s, d] = shape.map(|x| x.max(1) as i64);
    (shape.iter().product(), [h * s * d, s * d, d, 1])
}

/// Judges a backward against the f64 truth (from the truth forward) and the blocked
/// low-precision backward (from the blocked forward), as the forward is judged. Without
/// `zero_tensors`, rows outside every sequence (never written) are taken from the truth.
fn judge_backward(
    p: &Problem,
    x: &Inputs,
    truth_f: &attn_ref::ForwardOutput,
    lowp_f: &attn_ref::BlockedOutput,
    g: BwdGot,
) -> Result<(Vec<Report>, Option<usize>), String> {
    let want_dbias = g.dbias.is_some();
    let truth = attn_ref::backward(p, x, &g.dout, &truth_f.out, &truth_f.lse, want_dbias)
        .map_err(|e| e.to_string())?;
    let lowp = attn_ref::backward_blocked(p, x, &g.dout, &lowp_f.out, &lowp_f.lse, want_dbias)
        .map_err(|e| e.to_string())?;
    let inside = |queries: bool| {
        let (b, s) = if queries {
            (p.q_shape()[0], p.q_shape()[1])
        } else {
            (p.k_shape()[0], p.k_shape()[1])
        };
        let mut v = vec![g.zero_tensors; b * s];
        for seq in p.seqs() {
            let (start, len) = if queries {
                (seq.q_start, seq.sq)
            } else {
                (seq.k_start, seq.sk_total)
            };
            for r in start..start + len {
                v[seq.batch * s + r] = true;
            }
        }
        v
    };
    let fill = |got: &[f32], want: &[f64], rows: &[bool], w: usize| -> Vec<f32> {
        got.chunks(w)
            .zip(want.chunks(w))
            .zip(rows)
            .flat_map(|((gr, wr), &ok)| {
                if ok {
                    gr.to_vec()
                } else {
                    wr.iter().map(|&v| v as f32).collect()
                }
            })
            .collect()
    };
    let (hq, hk, d, dv) = (p.heads_q, p.heads_k, p.head_dim, p.head_dim_v);
    let (iq, ik) = (inside(true), inside(false));
    let mut reports = vec![
        attn_ref::check(&fill(&g.dq, &truth.dq, &iq, hq * d), &truth.dq, &lowp.dq)
            .named("dq")
            .with_shape(&p.q_shape()),
        attn_ref::check(&fill(&g.dk, &truth.dk, &ik, hk * d), &truth.dk, &lowp.dk)
            .named("dk")
            .with_shape(&p.k_shape()),
        attn_ref::check(&fill(&g.dv, &truth.dv, &ik, hk * dv), &truth.dv, &lowp.dv)
            .named("dv")
            .with_shape(&p.v_shape()),
    ];
    if let (Some(got), Some(t), Some(l)) = (&g.dbias, &truth.dbias, &lowp.dbias) {
        reports.push(
            attn_ref::check(got, t, l)
                .named("dbias")
                .with_shape(&p.bias_shape()),
        );
    }
    Ok((reports, g.differ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_comparison_covers_the_contract_and_tolerates_untouched_padding() {
        // Varlen: sequence 0 is 2x3, sequence 1 is 1x1; the tensor is [2, 1, 2, 3].
        let p = Problem::varlen(Dtype::F16, &[(2, 3), (1, 1)], 1, 1, 8, 8).with_dropout(0.5, 7, 9);
        let want = attn_ref::dropout::mask_tensor(&p).unwrap();
        assert_eq!(want.len(), 12);
        assert_eq!(mask_mismatches(&p, &want, &want), 0);
        // Padding (sequence 1 beyond 1x1) left poisoned: fine.
        let mut got = want.clone();
        for x in &mut got[7..] {
            *x = 0xFF;
        }
        assert_eq!(mask_mismatches(&p, &got, &want), 0);
        // Padding with another value, or an in-range byte poisoned: mismatches.
        got[8] = 1;
        got[0] = 0xFF;
        assert_eq!(mask_mismatches(&p, &got, &want), 2);
        // Too short a buffer fails.
        assert!(mask_mismatches(&p, &got[..3], &want) > 0);
    }

    #[test]
    fn strides_stay_distinct_for_empty_dimensions() {
        assert_eq!(strides([2, 0, 3, 8], Layout::Bmhk), [24, 24, 8, 1]);
        assert_eq!(strides([2, 0, 3, 8], Layout::Bhmk), [24, 8, 8, 1]);
    }
}
