//! The body of the `plan` fuzz target, shared with `crates/attn-host/tests/fuzz_corpus.rs`.
//!
//! [`run`] decodes the bytes (a hand-written decoder: missing bytes read as 0, which gives a
//! small, valid call) into a forward call with every option, its backward and a merge, and plans
//! them for every target family. It asserts what must hold: planning returns (no panic, no
//! arithmetic overflow: the replay test builds with overflow checks, and so does
//! `cargo fuzz run -a`), every rejection is `InvalidArgument` or `Unsupported`, and every accepted
//! plan launches grids that are non-zero and within the driver's limits, over tensors that fit
//! the lengths the input gave.
//!
//! Most fields are decoded as "the consistent value, or sometimes an arbitrary one", so that a
//! random input reaches deep into the checks instead of failing the first shape test.

use attn_host::decode::MAX_SPLITS;
use attn_host::{
    AlibiRef, Align, Backward, BiasRef, DType, Dropout, Error, Forward, I32Ref, LseRef, Mask,
    MaskRef, Merge, MergePlan, Packing, Paged, PartialLseRef, PartialsRef, Philox, Plan, Route,
    Splits, TensorRef, Varlen, Workspace,
};
use attn_kernels::fwd::policy::Family;

/// Every target family.
const FAMILIES: [Family; 4] = [Family::Sm80, Family::Sm90, Family::Cdna, Family::Rdna3];

/// The largest grid x extent the library launches (2^31 - 1) and the y / z limit (65535).
const GRID_X: u32 = i32::MAX as u32;
const GRID_YZ: u32 = 65_535;

/// Sizes near the limits that the plans test against.
const HUGE: [usize; 16] = [
    65_535,
    65_536,
    i32::MAX as usize - 1,
    i32::MAX as usize,
    1 << 31,
    u32::MAX as usize,
    1 << 32,
    1 << 40,
    (i64::MAX / 8) as usize,
    (i64::MAX / 8) as usize + 1,
    (i64::MAX / 4) as usize,
    i64::MAX as usize,
    1 << 63,
    usize::MAX / 4 + 1,
    usize::MAX - 1,
    usize::MAX,
];

/// A cursor over the fuzz bytes; past the end every read is 0.
struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        b
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        (self.u32() as u64) | ((self.u32() as u64) << 32)
    }
    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.u8() as usize % xs.len()]
    }
    /// `x` most of the time (the byte is below 160), otherwise an arbitrary value from `f`.
    fn or_else<T>(&mut self, x: T, f: impl FnOnce(&mut Self) -> T) -> T {
        if self.u8() < 160 { x } else { f(self) }
    }
    /// A size: mostly small, sometimes a common or a huge one, sometimes raw.
    fn dim(&mut self) -> usize {
        match self.u8() {
            s @ 0..=159 => s as usize % 40,
            160..=199 => self.pick(&[
                48, 64, 100, 127, 128, 129, 255, 256, 257, 1000, 4096, 32_768, 65_535, 65_536,
            ]),
            200..=247 => self.pick(&HUGE),
            _ => self.u64() as usize,
        }
    }
    /// A head dimension: mostly a supported one.
    fn head_dim(&mut self) -> usize {
        match self.u8() {
            0..=223 => self.pick(&[
                4, 8, 16, 32, 40, 64, 72, 80, 96, 128, 160, 192, 256, 8, 64, 128, 0, 12, 260, 6,
            ]),
            _ => self.dim(),
        }
    }
    /// A size next to `x` or an arbitrary one.
    fn near(&mut self, x: usize) -> usize {
        match self.u8() % 6 {
            0 => x.saturating_sub(1),
            1 => x.saturating_add(1),
            2 => x / 2,
            3 => x.saturating_mul(2),
            _ => self.dim(),
        }
    }
    /// An element stride (any sign).
    fn stride(&mut self) -> i64 {
        match self.u8() {
            0..=199 => self.pick(&[
                0,
                1,
                -1,
                2,
                -2,
                3,
                8,
                16,
                64,
                1 << 20,
                i32::MAX as i64,
                1 << 32,
                i64::MAX / 8,
                i64::MAX / 8 + 1,
                i64::MAX,
                i64::MIN,
                i64::MIN + 1,
            ]),
            _ => self.u64() as i64,
        }
    }
    /// A device address: null, unaligned, near `u64::MAX`, or raw.
    fn ptr(&mut self) -> u64 {
        match self.u8() {
            0..=199 => self.pick(&[
                0,
                1,
                2,
                3,
                4,
                8,
                16,
                0x1000,
                0x1002,
                1 << 40,
                1 << 63,
                u64::MAX,
                u64::MAX - 1,
                u64::MAX - 3,
                u64::MAX - 7,
                u64::MAX - 15,
                !0xff,
            ]),
            _ => self.u64(),
        }
    }
    fn u32_value(&mut self) -> u32 {
        match self.u8() {
            0..=199 => self.pick(&[
                0,
                1,
                2,
                16,
                127,
                128,
                129,
                i32::MAX as u32 - 1,
                i32::MAX as u32,
                1 << 31,
                u32::MAX,
            ]),
            _ => self.u32(),
        }
    }
    fn f32_value(&mut self) -> f32 {
        match self.u8() {
            0..=199 => self.pick(&[
                0.0,
                -0.0,
                1.0,
                0.125,
                30.0,
                -1.0,
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::MAX,
                f32::MIN,
                f32::MIN_POSITIVE,
                1e-45,
                1e30,
            ]),
            _ => f32::from_bits(self.u32()),
        }
    }
    fn f64_value(&mut self) -> f64 {
        match self.u8() {
            0..=199 => self.pick(&[
                0.0,
                -0.0,
                0.1,
                0.5,
                0.999,
                1.0 - 1e-7,
                1.0 - 1e-9,
                1.0,
                1.5,
                -0.1,
                f64::NAN,
                f64::INFINITY,
                f64::MIN_POSITIVE,
                5e-324,
            ]),
            _ => f64::from_bits(self.u64()),
        }
    }
    /// An i32 array of `len` entries (usually) at `ptr` (usually).
    fn i32_ref(&mut self, ptr: u64, len: usize) -> I32Ref {
        let ptr = self.or_else(ptr, Self::ptr);
        let len = self.or_else(len, |u| u.near(len));
        I32Ref { ptr, len }
    }
    /// A shape, each dimension sometimes replaced.
    fn shape<const N: usize>(&mut self, mut shape: [usize; N]) -> [usize; N] {
        if self.u8() >= 224 {
            for n in &mut shape {
                *n = self.or_else(*n, Self::dim);
            }
        }
        shape
    }
    /// Length, strides and address of a contiguous layout, sometimes replaced.
    fn layout<const N: usize>(&mut self, ptr: u64, shape: [usize; N]) -> (u64, usize, [i64; N]) {
        let (len, mut strides) = contiguous(shape);
        if self.u8() < 176 {
            return (ptr, len, strides);
        }
        let ptr = self.or_else(ptr, Self::ptr);
        let len = self.or_else(len, |u| u.near(len));
        for s in &mut strides {
            *s = self.or_else(*s, Self::stride);
        }
        (ptr, len, strides)
    }
    fn dtype(&mut self, dtype: DType) -> DType {
        self.or_else(dtype, |u| u.pick(&DType::ALL))
    }
    fn tensor(&mut self, ptr: u64, dtype: DType, shape: [usize; 4]) -> TensorRef {
        let dtype = self.dtype(dtype);
        let shape = self.shape(shape);
        let (ptr, len, strides) = self.layout(ptr, shape);
        TensorRef {
            ptr,
            len,
            dtype,
            shape,
            strides,
        }
    }
    fn lse(&mut self, ptr: u64, shape: [usize; 3]) -> LseRef {
        let shape = self.shape(shape);
        let (ptr, len, strides) = self.layout(ptr, shape);
        LseRef {
            ptr,
            len,
            shape,
            strides,
        }
    }
    fn bias(&mut self, ptr: u64, dtype: DType, shape: [usize; 4]) -> BiasRef {
        let dtype = self.dtype(dtype);
        let shape = self.shape(shape);
        let (ptr, len, strides) = self.layout(ptr, shape);
        BiasRef {
            ptr,
            len,
            dtype,
            shape,
            strides,
        }
    }
}

/// Element count and row-major strides of `shape` (saturating, like the crate's own).
fn contiguous<const N: usize>(shape: [usize; N]) -> (usize, [i64; N]) {
    let len = if shape.contains(&0) {
        0
    } else {
        shape.iter().fold(1usize, |a, &n| a.saturating_mul(n))
    };
    let mut strides = [1i64; N];
    let mut acc = 1i64;
    for (s, &n) in strides.iter_mut().zip(shape.iter()).rev() {
        *s = acc;
        acc = acc.saturating_mul(i64::try_from(n.max(1)).unwrap_or(i64::MAX));
    }
    (len, strides)
}

/// Asserts that a tensor of `shape` at `ptr` with element strides `strides` (as the plan hands
/// them to the kernel) stays within `len` elements of `esize` bytes, on an aligned, non-null
/// address with offsets that fit in i64.
fn assert_within(what: &str, ptr: u64, len: usize, esize: usize, shape: &[usize], strides: &[i64]) {
    assert!(
        ptr != 0 && ptr.is_multiple_of(esize as u64),
        "{what}: ptr {ptr:#x}"
    );
    if shape.contains(&0) {
        return;
    }
    let mut last: i128 = 0;
    for (&n, &s) in shape.iter().zip(strides) {
        assert!(s >= 0, "{what}: stride {s}");
        last += (n as i128 - 1) * s as i128;
    }
    assert!(last < len as i128, "{what}: offset {last} beyond len {len}");
    assert!(last <= i64::MAX as i128 / 8, "{what}: offset {last}");
}

fn assert_grid(what: &str, grid: [u32; 3]) {
    assert!(
        grid.iter().all(|&g| g > 0)
            && grid[0] <= GRID_X
            && grid[1] <= GRID_YZ
            && grid[2] <= GRID_YZ,
        "{what}: grid {grid:?}"
    );
}

fn assert_typed(e: &Error) {
    assert!(
        matches!(e, Error::InvalidArgument { .. } | Error::Unsupported { .. }),
        "a plan failed with a non-argument error: {e:?}"
    );
    assert!(!e.to_string().is_empty());
}

/// The parts of a decoded forward call that the checks of its plan need.
struct FwdInput {
    q: TensorRef,
    k: TensorRef,
    v: TensorRef,
    out: TensorRef,
    lse: Option<LseRef>,
    workspace: Option<Workspace>,
}

fn check_forward(input: &FwdInput, plan: &Plan) {
    let p = &plan.params;
    let es = input.q.dtype.size();
    for (what, t, ptr, st) in [
        ("q", &input.q, p.q, p.q_strides),
        ("k", &input.k, p.k, p.k_strides),
        ("v", &input.v, p.v, p.v_strides),
        ("out", &input.out, p.out, p.o_strides),
    ] {
        assert_eq!(ptr, t.ptr, "{what}.ptr");
        assert_within(what, ptr, t.len, es, &t.shape, &[st[0], st[1], st[2], 1]);
    }
    if let Some(l) = &input.lse {
        assert_eq!(p.lse, l.ptr);
        let st = [p.lse_strides[0], p.lse_strides[1], 1];
        assert_within("lse", p.lse, l.len, 4, &l.shape, &st);
    }
    assert!(p.block_table_stride >= 0 && p.num_pages <= i32::MAX as u32);
    assert!(p.scale_log2.is_finite(), "scale_log2 {}", p.scale_log2);
    assert!(p.softcap.is_finite() && p.softcap >= 0.0);
    assert!(p.dropout_rescale.is_finite() && p.dropout_threshold <= 65_536);
    assert!(plan.threads > 0);
    assert!(
        (1..=MAX_SPLITS).contains(&plan.splits),
        "splits {}",
        plan.splits
    );
    assert!(plan.pack >= 1 && p.heads_q.is_multiple_of(plan.pack));
    if let Some(g) = plan.grid {
        assert_grid("forward", g);
    }
    if let Some(g) = plan.mask_grid {
        assert_grid("dropout mask", g);
    }
    if plan.splits > 1 {
        let merge = plan.merge.expect("a split plan merges");
        check_merge(&merge);
        assert_eq!(merge.params.n_parts, plan.splits);
        assert!(plan.workspace_lse_offset.is_multiple_of(16));
        assert!(plan.workspace_lse_offset <= plan.workspace_bytes);
        if let (Some(w), true) = (&input.workspace, plan.workspace_bytes > 0) {
            assert!(w.bytes >= plan.workspace_bytes);
            assert_eq!(p.ws_o, w.ptr);
            assert_eq!(
                Some(p.ws_lse),
                w.ptr.checked_add(plan.workspace_lse_offset as u64)
            );
        }
    } else {
        assert!(plan.merge.is_none() && plan.workspace_bytes == 0);
    }
}

fn check_merge(plan: &MergePlan) {
    assert!((1..=MAX_SPLITS).contains(&plan.params.n_parts));
    if let Some(g) = plan.grid {
        assert_grid("merge", g);
    }
}

/// Decodes `data` and plans its forward (every family), backward (every family) and merge.
pub fn run(data: &[u8]) {
    let u = &mut Bytes { data, pos: 0 };
    let family = u.pick(&FAMILIES);
    let units = match u.u8() {
        0..=127 => 0,
        128..=239 => u.pick(&[1, 2, 8, 108, 132, 304, 1 << 16, u32::MAX]),
        _ => u.u32(),
    };
    let dtype = u.pick(&DType::ALL);
    let opts = u.u32();
    let on = |bit: u32| opts & (1 << bit) != 0;

    // ---- shapes
    let (b, sq, sk) = (u.dim().max(1), u.dim(), u.dim());
    let hk = u.dim().max(1);
    let group = u.dim().max(1);
    let hq = hk.saturating_mul(group);
    let d = u.head_dim();
    let dv = if u.bool() { d } else { u.head_dim() };
    // Varlen mode: 0 batch, 1 varlen, 2 seqstart, 3 both (the same arrays, or not).
    let varlen_mode = if on(0) { 1 + u.u8() % 3 } else { 0 };
    let qb = if varlen_mode > 0 { 1 } else { b };
    let nb = if varlen_mode > 0 { b } else { qb };
    let paged = on(1);
    let (kb, ks) = if paged {
        let ps = u.pick(&[16, 16, 32, 64, 128, 256, 0, 8, 17, 48]);
        let ps = u.or_else(ps, Bytes::dim);
        (u.dim().max(1), ps)
    } else {
        (qb, sk)
    };

    // ---- tensors
    let q = u.tensor(0x1000_0000, dtype, [qb, sq, hq, d]);
    let k = u.tensor(0x2000_0000, dtype, [kb, ks, hk, d]);
    let v = u.tensor(0x3000_0000, dtype, [kb, ks, hk, dv]);
    let out = u.tensor(0x4000_0000, dtype, [qb, sq, hq, dv]);
    let mut call = Forward::new(q, k, v, out);
    let lse = (!on(2)).then(|| u.lse(0x5000_0000, [qb, hq, sq]));
    if let Some(l) = lse {
        call = call.lse(l);
    }
    if on(3) {
        call = call.scale(u.f32_value());
    }
    if on(4) {
        let align = u.pick(&[Align::TopLeft, Align::BottomRight]);
        call = call.mask(match u.u8() % 3 {
            0 => Mask::None,
            1 => Mask::Causal(align),
            _ => Mask::Window {
                left: u.bool().then(|| u.u32_value()),
                right: u.bool().then(|| u.u32_value()),
                align,
            },
        });
    }

    // ---- varlen: nb sequences, max lengths at most the totals (usually)
    let (mut max_sq, mut max_sk) = (sq, if paged { 0 } else { sk });
    if varlen_mode > 0 {
        let cq = u.i32_ref(0x6000_0000, nb.saturating_add(1));
        let ck = u.i32_ref(0x6000_1000, nb.saturating_add(1));
        if varlen_mode != 2 {
            max_sq = u.or_else(sq / 2 + 1, Bytes::dim);
            max_sk = u.or_else(sk / 2 + 1, Bytes::dim);
            call = call.varlen(Varlen {
                cu_seqlens_q: cq,
                cu_seqlens_k: ck,
                max_seqlen_q: max_sq,
                max_seqlen_k: max_sk,
            });
        }
        if varlen_mode != 1 {
            let (sq_, sk_) = if u.bool() { (cq, ck) } else { (ck, cq) };
            call = call.seqstart(sq_, sk_);
        }
    }

    // ---- paged KV
    if paged {
        let max_pages = u.or_else(sk.div_ceil(ks.max(1)).max(1), Bytes::dim);
        let table_stride = u.or_else(max_pages, |u| u.near(max_pages));
        max_sk = max_pages.saturating_mul(ks);
        let block_table = u.i32_ref(0x7000_0000, nb.saturating_mul(table_stride));
        call = call.paged(Paged {
            block_table,
            max_pages,
            table_stride,
        });
    }

    // ---- score pieces
    let logical = [nb, hq, max_sq, max_sk];
    if on(5) {
        call = call.seqused_k(u.i32_ref(0x8000_0000, nb));
    }
    let bias = on(6).then(|| {
        let bd = if u.bool() { DType::F32 } else { dtype };
        u.bias(0x9000_0000, bd, logical)
    });
    if let Some(bias) = bias {
        call = call.bias(bias);
    }
    if on(7) {
        let per_batch = u.bool();
        let len = if per_batch { nb.saturating_mul(hq) } else { hq };
        let a = u.i32_ref(0xa000_0000, len);
        call = call.alibi(AlibiRef {
            ptr: a.ptr,
            len: a.len,
            per_batch,
        });
    }
    if on(8) {
        call = call.softcap(u.f32_value());
    }
    if on(9) {
        let p = u.f64_value();
        let rng = if u.bool() {
            Philox::Host {
                seed: u.u64(),
                offset: u.u64(),
            }
        } else {
            Philox::Device {
                seed_ptr: u.or_else(0xb000_0000, Bytes::ptr),
                offset_ptr: u.or_else(0xb000_0008, Bytes::ptr),
                offset: u.u64(),
            }
        };
        call = call.dropout(Dropout { p, rng });
    }
    if on(10) {
        let shape = u.shape(logical);
        let (ptr, len, strides) = u.layout(0xc000_0000, shape);
        call = call.dropout_mask(MaskRef {
            ptr,
            len,
            shape,
            strides,
        });
    }

    // ---- inference options
    if on(11) {
        let (lo, hi) = (u.dim(), u.dim());
        call = call.key_range(lo.min(hi), if u.bool() { hi.max(lo) } else { hi });
    }
    if on(12) {
        let few = u32::from(u.u8() % 9);
        call = call.splits(Splits::Fixed(u.or_else(few, Bytes::u32_value)));
    }
    if on(13) {
        call = call.pack_gqa(u.pick(&[Packing::Auto, Packing::On, Packing::Off]));
    }
    if on(14) {
        call = call.route(u.pick(&[Route::Auto, Route::Decode, Route::Prefill]));
    }
    let workspace = on(15).then(|| Workspace {
        ptr: u.or_else(0xd000_0000, Bytes::ptr),
        bytes: u.or_else(usize::MAX, |u| u.pick(&HUGE).min(u.dim())),
    });
    if let Some(w) = workspace {
        call = call.workspace(w);
    }

    let input = FwdInput {
        q,
        k,
        v,
        out,
        lse,
        workspace,
    };
    let forward = |family: Family, units: u32| match call.plan_on(family, units) {
        Ok(plan) => check_forward(&input, &plan),
        Err(e) => assert_typed(&e),
    };
    for f in FAMILIES {
        forward(f, units);
    }
    match call.plan(family) {
        Ok(plan) => check_forward(&input, &plan),
        Err(e) => assert_typed(&e),
    }

    // ---- backward
    let dout = u.tensor(0x1_1000_0000, dtype, out.shape);
    let dq = u.tensor(0x1_2000_0000, dtype, q.shape);
    let dk = u.tensor(0x1_3000_0000, dtype, k.shape);
    let dvt = u.tensor(0x1_4000_0000, dtype, v.shape);
    let mut bwd = Backward::new(call, dout, dq, dk, dvt)
        .zero_tensors(on(16))
        .deterministic(on(17));
    if on(18) {
        let shape = bias.map_or(logical, |b| b.shape);
        let db = u.bias(0x1_5000_0000, bias.map_or(dtype, |b| b.dtype), shape);
        bwd = bwd.dbias(db);
    }
    if on(19) {
        let ptr = u.or_else(0x1_6000_0000, Bytes::ptr);
        let bytes = u.or_else(usize::MAX, Bytes::dim);
        bwd = bwd.delta_workspace(ptr, bytes);
    }
    for f in FAMILIES {
        match bwd.plan(f) {
            Ok(plan) => {
                for (l, zp) in &plan.zeros {
                    assert_grid("zero", l.grid);
                    assert!(zp.grid_x == l.grid[0] && zp.dims.iter().all(|&n| n > 0));
                }
                for l in [plan.pre, plan.dq, plan.dkdv].into_iter().flatten() {
                    assert_grid("backward", l.grid);
                }
                assert!(plan.delta_bytes >= 4 && plan.delta_bytes % 4 == 0);
                if let Some(l) = &lse {
                    assert!(plan.delta_bytes / 4 >= l.len);
                }
            }
            Err(e) => assert_typed(&e),
        }
    }

    // ---- merge
    let few = usize::from(u.u8() % 5);
    let n = u.or_else(few, Bytes::dim);
    let (mb, ms, mh, mdv) = (u.dim(), u.dim(), u.dim(), u.head_dim());
    let pshape = u.shape([n, mb, ms, mh, mdv]);
    let (pptr, plen, pstrides) = u.layout(0x2_1000_0000, pshape);
    let parts = PartialsRef {
        ptr: pptr,
        len: plen,
        dtype: u.dtype(DType::F32),
        shape: pshape,
        strides: pstrides,
    };
    let lshape = u.shape([n, mb, mh, ms]);
    let (lptr, llen, lstrides) = u.layout(0x2_2000_0000, lshape);
    let parts_lse = PartialLseRef {
        ptr: lptr,
        len: llen,
        shape: lshape,
        strides: lstrides,
    };
    let mout = u.tensor(0x2_3000_0000, dtype, [mb, ms, mh, mdv]);
    let mut merge = Merge::new(parts, parts_lse, mout);
    if u.bool() {
        merge = merge.lse(u.lse(0x2_4000_0000, [mb, mh, ms]));
    }
    match merge.plan() {
        Ok(plan) => {
            check_merge(&plan);
            assert_within(
                "parts",
                plan.params.parts_o,
                parts.len,
                parts.dtype.size(),
                &parts.shape,
                &parts.strides,
            );
            let o = plan.params.o_strides;
            assert_within(
                "merge out",
                plan.params.out,
                mout.len,
                mout.dtype.size(),
                &mout.shape,
                &[o[0], o[1], o[2], 1],
            );
        }
        Err(e) => assert_typed(&e),
    }
}
