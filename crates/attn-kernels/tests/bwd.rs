//! The backward kernels (`delta`, `dq`, `dk`/`dv`, the zero fill) run on the emulated atoms
//! (`arch::host`, one OS thread per lane) after the forward kernel, against attn-ref's f64
//! backward from the same rounded inputs and the low-precision blocked backward (the pass rule of
//! semantics.md §6).
//!
//! The 32-lane atoms (sm80 `mma.sync`, RDNA3 WMMA, the f32 FMA atom) run by default, CDNA's
//! 64-lane MFMA atom with `cargo test -p attn-kernels --features host-wave64`.
use attn_abi::{
    BWD_DBIAS, BWD_DBIAS_F32, BwdParams, FLAG_BIAS_F32, FLAG_DROPOUT, FLAG_VARLEN, FwdParams,
    MASK_BOTTOM_RIGHT, MASK_WINDOW, WINDOW_UNBOUNDED, ZeroParams,
};
use attn_kernels::arch::host::launch;
use attn_kernels::atom::MmaAtom;
use attn_kernels::bwd;
use attn_kernels::fwd::{self, policy};
use attn_kernels::numeric::Element;
use attn_ref::{Align, Dtype, Inputs, Mask, Problem, Tensor};

fn elems<E: Element>(t: &Tensor) -> Vec<E> {
    t.to_contiguous().into_iter().map(E::from_f32).collect()
}

fn to_f32<E: Element>(x: &[E]) -> Vec<f32> {
    x.iter().map(|e| e.to_f32()).collect()
}

/// The poison every output starts as: NaN in every element type.
fn nan<E: Element>() -> E {
    E::from_f32(f32::NAN)
}

/// Shapes of one backward instance: `(TN of the forward, KK of the forward)` and the backward's
/// `(TN, NS, KK)` are generic parameters; `WAVES` and `ND` are shared.
#[allow(clippy::too_many_lines)]
fn check<
    A: MmaAtom,
    const WAVES: usize,
    const ND: usize,
    const FTN: usize,
    const FKK: usize,
    const BTN: usize,
    const NS: usize,
    const BKK: usize,
    const PASSES: usize,
    const PREFETCH: bool,
    const PTN: usize,
>(
    p: &Problem,
    input_seed: u64,
    want_dbias: bool,
    fused: Option<&(dyn Fn(&BwdParams) + Sync)>,
) {
    let x = Inputs::random(p, input_seed, 1.0);
    let (q, k, v) = (
        elems::<A::E>(&x.q),
        elems::<A::E>(&x.k),
        elems::<A::E>(&x.v),
    );
    let mut state = input_seed ^ 0x5eed_0000_0001;
    let dout_t = Tensor::from_fn(p.dtype, p.out_shape(), |_| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    });
    let dout = elems::<A::E>(&dout_t);
    let [_, sq, hq, dq] = p.q_shape();
    let [_, sk, hk, _] = p.k_shape();
    let dv = p.head_dim_v;
    let nb = p.nseq();
    let (mq, mk) = p.max_seqlens();
    let esize = core::mem::size_of::<A::E>();
    let mut out = vec![nan::<A::E>(); p.out_shape().iter().product()];
    let mut lse = vec![f32::NAN; p.lse_len().max(1)];
    let [mb, mh, mr, mc] = p.bias_shape();
    // The bias: contiguous in the problem's logical shape, broadcast dimensions kept as stride 0.
    let (bias_buf, bias_strides, bias_f32) = match (&x.bias, &p.bias) {
        (Some(t), Some(spec)) => {
            let f32_bias = spec.dtype == Dtype::F32;
            let mut st = [0i64, 0, 0, 1];
            let mut span = mc as i64;
            for dim in [2usize, 1, 0] {
                if t.strides[dim] != 0 {
                    st[dim] = span;
                    span *= t.shape[dim] as i64;
                }
            }
            let mut buf = vec![0u32; span as usize];
            for idx in 0..mb * mh * mr * mc {
                let (bb, hh, ii, jj) = (
                    idx / (mh * mr * mc),
                    idx / (mr * mc) % mh,
                    idx / mc % mr,
                    idx % mc,
                );
                let at = (bb as i64 * st[0] + hh as i64 * st[1] + ii as i64 * st[2] + jj as i64)
                    as usize;
                let val = t.get([bb, hh, ii, jj]);
                // SAFETY: `at` < span elements, inside `buf` (4 bytes each, 2 used for 16-bit).
                unsafe {
                    if f32_bias {
                        *buf.as_mut_ptr().cast::<f32>().add(at) = val;
                    } else {
                        *buf.as_mut_ptr().cast::<A::E>().add(at) = A::E::from_f32(val);
                    }
                }
            }
            (buf, st, f32_bias)
        }
        _ => (vec![], [0; 4], false),
    };
    let slopes = p
        .alibi
        .as_ref()
        .map(|a| a.slopes.clone())
        .unwrap_or_default();
    let (cq, ck) = p
        .varlen
        .as_ref()
        .map(|v| (v.cu_seqlens_q.clone(), v.cu_seqlens_k.clone()))
        .unwrap_or_default();
    let used = p.seqused_k.clone().unwrap_or_default();
    let dr = p.dropout;
    let (left, right) = p.mask.bounds();
    let st = |s: usize, h: usize, d: usize| [(s * h * d) as i64, (h * d) as i64, d as i64];
    let ptr_or_0 = |empty: bool, ptr: u64| if empty { 0 } else { ptr };
    let fp = FwdParams {
        q: q.as_ptr() as u64,
        k: k.as_ptr() as u64,
        v: v.as_ptr() as u64,
        out: out.as_mut_ptr() as u64,
        lse: lse.as_mut_ptr() as u64,
        q_strides: st(sq, hq, dq),
        k_strides: st(sk, hk, dq),
        v_strides: st(sk, hk, dv),
        o_strides: st(sq, hq, dv),
        lse_strides: [(hq * sq) as i64, sq as i64],
        batch: nb as u32,
        heads_q: hq as u32,
        heads_k: hk as u32,
        seqlen_q: sq as u32,
        seqlen_k: sk as u32,
        head_dim: dq as u32,
        head_dim_v: dv as u32,
        scale_log2: p.softmax_scale() * std::f32::consts::LOG2_E,
        window_left: left.map_or(WINDOW_UNBOUNDED, |l| l as i32),
        window_right: right.map_or(WINDOW_UNBOUNDED, |r| r as i32),
        flags: match p.mask {
            Mask::None => 0,
            _ => MASK_WINDOW,
        } | if p.mask.align() == Align::BottomRight {
            MASK_BOTTOM_RIGHT
        } else {
            0
        } | if p.varlen.is_some() { FLAG_VARLEN } else { 0 }
            | if bias_f32 { FLAG_BIAS_F32 } else { 0 }
            | if dr.is_some_and(|d| d.p > 0.0) {
                FLAG_DROPOUT
            } else {
                0
            },
        cu_seqlens_q: ptr_or_0(cq.is_empty(), cq.as_ptr() as u64),
        cu_seqlens_k: ptr_or_0(ck.is_empty(), ck.as_ptr() as u64),
        seqused_k: ptr_or_0(used.is_empty(), used.as_ptr() as u64),
        max_seqlen_q: mq as u32,
        max_seqlen_k: mk as u32,
        bias: ptr_or_0(p.bias.is_none(), bias_buf.as_ptr() as u64),
        bias_strides,
        alibi: ptr_or_0(slopes.is_empty(), slopes.as_ptr() as u64),
        alibi_stride: if p.alibi.as_ref().is_some_and(|a| a.per_batch) {
            hq as i64
        } else {
            0
        },
        softcap: p.softcap,
        dropout_threshold: dr.map_or(0, |d| d.threshold()),
        dropout_rescale: dr.map_or(1.0, |d| d.rescale()),
        seed: dr.map_or(0, |d| d.seed),
        offset: dr.map_or(0, |d| d.offset),
        ..Default::default()
    };
    let d = ND * A::N;
    assert!(dq.max(dv) <= d);
    let dp = policy::padded(d, esize);
    let p_smem = |rows: usize, cols: usize| {
        if A::P_IN_REGISTERS {
            0
        } else {
            rows * policy::padded(cols, esize) * esize
        }
    };

    // The forward (the pieces kernel, one K/V buffer).
    let (fm, fnn) = (WAVES * A::M, FTN * A::N);
    let smem = (fm + fnn) * dp * esize + p_smem(fm, fnn) + fm * policy::padded(fnn, 4) * 4;
    let grid = (mq.div_ceil(fm).max(1) as u32, hq as u32, nb as u32);
    launch(grid, policy::THREADS, smem, || {
        fwd::run::<A, WAVES, 1, FTN, ND, FKK, false, true, true, false>(&fp)
    });

    // The backward, on poisoned gradients.
    let mut dqg = vec![nan::<A::E>(); q.len()];
    let mut dkg = vec![nan::<A::E>(); k.len()];
    let mut dvg = vec![nan::<A::E>(); v.len()];
    let mut delta = vec![f32::NAN; lse.len()];
    let dbias_f32 = bias_f32;
    let dbias_len = mb * mh * mr * mc;
    // (u32 words; 16-bit elements are packed two to a word, all bits set: NaN either way)
    let words = if dbias_f32 {
        dbias_len
    } else {
        dbias_len.div_ceil(2)
    };
    let mut dbias = vec![0xFFFF_FFFFu32; if want_dbias { words } else { 0 }];
    let dbias_strides = [(mh * mr * mc) as i64, (mr * mc) as i64, mc as i64, 1];
    let bp = BwdParams {
        fwd: fp,
        dout: dout.as_ptr() as u64,
        do_strides: st(sq, hq, dv),
        dq: dqg.as_mut_ptr() as u64,
        dq_strides: st(sq, hq, dq),
        dk: dkg.as_mut_ptr() as u64,
        dk_strides: st(sk, hk, dq),
        dv: dvg.as_mut_ptr() as u64,
        dv_strides: st(sk, hk, dv),
        dbias: if want_dbias {
            dbias.as_mut_ptr() as u64
        } else {
            0
        },
        dbias_strides,
        bwd_flags: if want_dbias { BWD_DBIAS } else { 0 }
            | if dbias_f32 { BWD_DBIAS_F32 } else { 0 },
        slices: (ND / NS) as u32,
        delta: delta.as_mut_ptr() as u64,
        ..Default::default()
    };
    let slices = ND / NS;
    if want_dbias {
        let zp = ZeroParams {
            ptr: dbias.as_mut_ptr() as u64,
            strides: dbias_strides,
            dims: [mb as u32, mh as u32, mr as u32, mc as u32],
            grid_x: 3,
            _pad: 0,
        };
        launch((3, mh as u32, mb as u32), 128, 0, || {
            if dbias_f32 {
                bwd::zero::<u32>(&zp)
            } else {
                bwd::zero::<u16>(&zp)
            }
        });
    }
    // The plain kernels (BwdVariant::Plain) where the problem needs no feature of the pieces',
    // as the host dispatches them; with `fused`, the fused kernel (dQ through a NaN-poisoned f32
    // workspace that the preprocess zeroes) instead of dq.
    let plain = p.varlen.is_none()
        && p.seqused_k.is_none()
        && p.bias.is_none()
        && p.alibi.is_none()
        && p.softcap == 0.0
        && p.dropout.is_none()
        && !want_dbias;
    assert!(plain || fused.is_none(), "the fused kernel is plain only");
    let mut ws = vec![
        f32::NAN;
        if fused.is_some() {
            nb * hq * mq * dq
        } else {
            0
        }
    ];
    let mut bp = bp;
    if fused.is_some() {
        bp.dq_accum = ws.as_mut_ptr() as u64;
        bp.dq_accum_strides = [(hq * mq * dq) as i64, dq as i64, (mq * dq) as i64];
    }
    let pre_rows = WAVES * A::M;
    let grid = (mq.div_ceil(pre_rows).max(1) as u32, hq as u32, nb as u32);
    let pre_smem = 2 * pre_rows * policy::padded(bwd::policy::PRE_COLS, esize) * esize;
    launch(grid, 128, pre_smem, || bwd::preprocess::<A, PTN>(&bp));
    // dq: block rows = queries, step = keys.
    let (r, c) = (WAVES * A::M, BTN * A::N);
    let bufs = if PREFETCH { 2 } else { 1 };
    let smem = 2 * r * dp * esize
        + p_smem(r, c)
        + bufs * (2 * c * dp * esize + r * policy::padded(c, 4) * 4);
    let grid = (
        (mq.div_ceil(r) * slices).max(1) as u32,
        hq as u32,
        nb as u32,
    );
    launch(grid, 128, smem, || {
        if fused.is_some() {
            // (dq comes from the fused kernel and the conversion below)
        } else if plain {
            bwd::run_dq::<A, WAVES, 1, BTN, ND, NS, BKK, PREFETCH, false>(&bp)
        } else {
            bwd::run_dq::<A, WAVES, 1, BTN, ND, NS, BKK, PREFETCH, true>(&bp)
        }
    });
    // dkdv: block rows = keys, step = queries.
    let smem = 2 * r * dp * esize
        + p_smem(r, c)
        + bufs * (2 * c * dp * esize + 2 * c * 4 + c * policy::padded(r, 4) * 4)
        + c * policy::padded(r, esize) * esize;
    let grid = (
        (mk.div_ceil(r) * slices).max(1) as u32,
        hk as u32,
        nb as u32,
    );
    launch(grid, 128, smem, || {
        if let Some(f) = fused {
            f(&bp)
        } else if plain {
            bwd::run_dkdv::<A, WAVES, 1, BTN, ND, NS, BKK, PASSES, PREFETCH, false, false, 1, 1>(
                &bp,
            )
        } else {
            bwd::run_dkdv::<A, WAVES, 1, BTN, ND, NS, BKK, PASSES, PREFETCH, true, false, 1, 1>(&bp)
        }
    });
    if fused.is_some() {
        let post_rows = bwd::policy::POST_ROWS;
        let grid = (mq.div_ceil(post_rows).max(1) as u32, hq as u32, nb as u32);
        launch(grid, 128, 0, || bwd::post::<A::E>(&bp));
    }

    // The truth: attn-ref's f64 forward and backward from the same rounded inputs.
    let truth_f = attn_ref::forward(p, &x).unwrap();
    let truth = attn_ref::backward(p, &x, &dout_t, &truth_f.out, &truth_f.lse, want_dbias).unwrap();
    let what = format!("{p:?} seed {input_seed:#x}");
    let close = |name: &str, got: &[f32], want: &[f64], tol: f64| {
        let scale = want.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        let mut worst = (0.0f64, 0usize);
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let e = (g as f64 - w).abs();
            assert!(!e.is_nan(), "{name}[{i}] = {g}, want {w}: {what}");
            if e > worst.0 {
                worst = (e, i);
            }
        }
        assert!(
            worst.0 <= tol * scale,
            "{name}: max error {:.3e} at {} (got {}, want {}) > {tol:e} · {scale:.3}: {what}",
            worst.0,
            worst.1,
            got[worst.1],
            want[worst.1]
        );
    };
    let tol = match p.dtype {
        Dtype::F32 => 1e-4,
        _ => 2e-2,
    };
    // Rows outside every sequence are never written (no zero_tensors here): compare only the
    // rows the reference marks as inside some sequence.
    let inside_q = rows_inside(p, true);
    let inside_k = rows_inside(p, false);
    let keep = |x: Vec<f32>, inside: &[bool], w: usize| -> Vec<f32> {
        x.chunks(w)
            .zip(inside)
            .flat_map(|(r, &ok)| if ok { r.to_vec() } else { vec![0.0; r.len()] })
            .collect()
    };
    close(
        "delta",
        &keep(delta[..p.lse_len()].to_vec(), &lse_inside(p), 1),
        &truth.d,
        tol,
    );
    close(
        "dq",
        &keep(to_f32(&dqg), &inside_q, hq * dq),
        &truth.dq,
        tol,
    );
    close(
        "dk",
        &keep(to_f32(&dkg), &inside_k, hk * dq),
        &truth.dk,
        tol,
    );
    close(
        "dv",
        &keep(to_f32(&dvg), &inside_k, hk * dv),
        &truth.dv,
        tol,
    );
    // One key per row and no dropout: P = 1 and delta = dP bit for bit, so dS, dq and dk are
    // exactly 0 (the truth), not rounding noise.
    if p.seqlen_k == 1 && p.varlen.is_none() && p.dropout.is_none() && p.mask == Mask::None {
        assert!(
            to_f32(&dqg).iter().all(|&x| x == 0.0),
            "dq not exactly 0: {what}"
        );
        assert!(
            to_f32(&dkg).iter().all(|&x| x == 0.0),
            "dk not exactly 0: {what}"
        );
    }
    if let Some(want) = truth.dbias.as_ref() {
        let got: Vec<f32> = (0..dbias_len)
            .map(|i| {
                if dbias_f32 {
                    f32::from_bits(dbias[i])
                } else {
                    // SAFETY: element i of 2 bytes lies inside the words.
                    unsafe { (*dbias.as_ptr().cast::<A::E>().add(i)).to_f32() }
                }
            })
            .collect();
        close("dbias", &got, want, tol);
    }
}

/// Whether each (batch, row) of q (`queries`) or k lies inside some sequence.
fn rows_inside(p: &Problem, queries: bool) -> Vec<bool> {
    let (b, s) = if queries {
        (p.q_shape()[0], p.q_shape()[1])
    } else {
        (p.k_shape()[0], p.k_shape()[1])
    };
    let mut inside = vec![false; b * s];
    for seq in p.seqs() {
        let (start, len) = if queries {
            (seq.q_start, seq.sq)
        } else {
            (seq.k_start, seq.sk_total)
        };
        for r in start..start + len {
            inside[seq.batch * s + r] = true;
        }
    }
    inside
}

/// Whether each entry of the lse layout belongs to a row inside some sequence.
fn lse_inside(p: &Problem) -> Vec<bool> {
    let mut inside = vec![false; p.lse_len()];
    for seq in p.seqs() {
        for h in 0..p.heads_q {
            for i in 0..seq.sq {
                inside[p.lse_index(&seq, h, i)] = true;
            }
        }
    }
    inside
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// Varlen (ragged, an empty query and an empty key sequence), `seqused_k`, a bias broadcast over
/// heads, per-batch ALiBi, softcap, dropout, causal bottom-right, GQA 2.
fn varlen_everything(dtype: Dtype, d: usize, bias: Dtype) -> Problem {
    let nseq = 4;
    Problem::varlen(dtype, &[(13, 17), (0, 5), (6, 0), (18, 11)], 4, 2, d, d - 8)
        .with_mask(Mask::Causal {
            align: Align::BottomRight,
        })
        .with_seqused_k(vec![15, 5, 0, 9])
        .with_bias(bias, [false, true, false, false])
        .with_alibi(
            (0..nseq * 4).map(|i| 0.05 + 0.03 * i as f32).collect(),
            true,
        )
        .with_softcap(8.0)
        .with_dropout(0.3, 0x1234_5678_9abc, 77)
}

/// Batch mode, a full bias, per-head ALiBi, a top-left window, dropout p = 0.5, MQA.
fn batch_window(dtype: Dtype, d: usize) -> Problem {
    Problem::new(dtype, 1, 23, 37, 2, 1, d, d)
        .with_mask(Mask::Window {
            left: Some(9),
            right: Some(4),
            align: Align::TopLeft,
        })
        .with_bias(dtype, [false; 4])
        .with_alibi(vec![0.1, 0.4], false)
        .with_dropout(0.5, 99, 1 << 40)
}

/// Batch mode, nothing but a ragged shape.
/// One key for every row, GQA 4:1, a head dim that is not a multiple of the atom's `K`: the
/// truth's dq and dk are exactly 0.
fn one_key(dtype: Dtype, d: usize) -> Problem {
    Problem::new(dtype, 2, 70, 1, 4, 1, d, d)
}

fn plain(dtype: Dtype, d: usize) -> Problem {
    Problem::new(dtype, 1, 20, 33, 2, 2, d, d)
}

#[cfg(not(feature = "host-wave64"))]
#[test]
fn backward_on_the_sm80_atom() {
    use attn_kernels::atom::sm80_m16n8k16::Sm80M16N8K16;
    use attn_kernels::numeric::F16;
    type A = Sm80M16N8K16<F16>;
    // 4 warps × 16 rows; D = 4 · 8 (two slices of 2 · 8 in the second case); 32 keys per step.
    check::<A, 4, 4, 2, 1, 4, 4, 2, 1, true, 2>(&plain(Dtype::F16, 32), seed(), false, None);
    check::<A, 4, 4, 2, 1, 4, 4, 2, 2, false, 2>(
        &varlen_everything(Dtype::F16, 32, Dtype::F32),
        seed(),
        true,
        None,
    );
    check::<A, 4, 4, 2, 1, 4, 2, 2, 1, true, 2>(&batch_window(Dtype::F16, 32), seed(), true, None);
    check::<A, 4, 4, 2, 1, 4, 4, 2, 1, true, 2>(&one_key(Dtype::F16, 24), seed(), false, None);
}

/// The fused kernel (dK, dV and atomic dQ in one walk; `BwdKernel::Fused`) on the plain
/// problems: dQ through the f32 workspace, zeroed by the preprocess and converted by `post`.
#[cfg(not(feature = "host-wave64"))]
#[test]
fn fused_backward_on_the_sm80_atom() {
    use attn_kernels::atom::sm80_m16n8k16::Sm80M16N8K16;
    use attn_kernels::numeric::{Bf16, F16};
    type A = Sm80M16N8K16<F16>;
    type B = Sm80M16N8K16<Bf16>;
    // 32 queries per step (QM = 2) by D / 4 = 8 columns of dQ per warp (QN = 1).
    let f32q =
        |bp: &BwdParams| bwd::run_dkdv::<A, 4, 1, 4, 4, 4, 2, 1, false, false, true, 2, 1>(bp);
    check::<A, 4, 4, 2, 1, 4, 4, 2, 1, false, 2>(
        &plain(Dtype::F16, 32),
        seed(),
        false,
        Some(&f32q),
    );
    check::<A, 4, 4, 2, 1, 4, 4, 2, 1, false, 2>(
        &one_key(Dtype::F16, 24),
        seed(),
        false,
        Some(&f32q),
    );
    // 64 queries per step (QM = 4), D = 64 (QN = 2), Dv = 48, causal bottom-right, GQA 2:1,
    // ragged lengths, Sq > Sk (the first rows see no key; small: this runs unoptimised in CI).
    let causal = Problem::new(Dtype::Bf16, 1, 77, 70, 2, 1, 64, 48).with_mask(Mask::Causal {
        align: Align::BottomRight,
    });
    let f64q =
        |bp: &BwdParams| bwd::run_dkdv::<B, 4, 1, 8, 8, 8, 4, 1, false, false, true, 4, 2>(bp);
    check::<B, 4, 8, 2, 1, 8, 8, 4, 1, false, 2>(&causal, seed(), false, Some(&f64q));
}

#[cfg(not(feature = "host-wave64"))]
#[test]
fn backward_on_the_fma_atom() {
    use attn_kernels::atom::fma::FmaAtom;
    type A = FmaAtom<f32>;
    // 4 waves × 8 rows; D = 4 · 8; 16 or 32 keys per step.
    check::<A, 4, 4, 2, 4, 4, 4, 8, 2, false, 1>(&plain(Dtype::F32, 32), seed(), false, None);
    check::<A, 4, 4, 2, 4, 2, 2, 4, 1, true, 1>(
        &varlen_everything(Dtype::F32, 32, Dtype::F32),
        seed(),
        true,
        None,
    );
    check::<A, 4, 4, 2, 4, 4, 4, 8, 2, false, 1>(&batch_window(Dtype::F32, 32), seed(), true, None);
    check::<A, 4, 4, 2, 4, 4, 4, 8, 2, false, 1>(&one_key(Dtype::F32, 28), seed(), false, None);
}

#[cfg(not(feature = "host-wave64"))]
#[test]
fn backward_on_the_wmma_atom() {
    use attn_kernels::atom::rdna3_wmma::Rdna3Wmma16x16x16;
    use attn_kernels::numeric::F16;
    type A = Rdna3Wmma16x16x16<F16>;
    // 4 waves × 16 rows; D = 2 · 16; 32 keys per step.
    check::<A, 4, 2, 1, 1, 2, 2, 2, 1, true, 1>(
        &varlen_everything(Dtype::F16, 32, Dtype::F16),
        seed(),
        true,
        None,
    );
    check::<A, 4, 2, 1, 1, 2, 1, 2, 2, false, 1>(&batch_window(Dtype::F16, 32), seed(), true, None);
    check::<A, 4, 2, 1, 1, 2, 2, 2, 1, true, 1>(&one_key(Dtype::F16, 24), seed(), false, None);
    // gfx1100's dK + dV at D = 64: 16 keys per step, two head-dim slices of 32, two passes.
    check::<A, 4, 4, 1, 1, 1, 2, 1, 2, false, 1>(
        &varlen_everything(Dtype::F16, 64, Dtype::F16),
        seed(),
        true,
        None,
    );
}

#[cfg(feature = "host-wave64")]
#[test]
fn backward_on_the_mfma_atom() {
    use attn_kernels::atom::cdna_mfma::CdnaMfma32x32x8;
    use attn_kernels::numeric::F16;
    type A = CdnaMfma32x32x8<F16>;
    // 2 waves × 32 rows; D = 2 · 32 (two slices of 32 in the second case); 32 keys per step.
    check::<A, 2, 2, 1, 4, 1, 2, 4, 1, true, 1>(
        &varlen_everything(Dtype::F16, 64, Dtype::F32),
        seed(),
        true,
        None,
    );
    check::<A, 2, 2, 1, 4, 1, 1, 4, 2, false, 1>(&batch_window(Dtype::F16, 64), seed(), true, None);
    check::<A, 2, 2, 1, 4, 1, 2, 4, 1, true, 1>(&one_key(Dtype::F16, 40), seed(), false, None);
}
