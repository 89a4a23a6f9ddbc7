//! The low-precision backward ([`backward_blocked`]) against the f64 truth ([`backward`]), and the
//! truth itself against finite differences of the f64 forward.

use attn_ref::strategy::{Config, case};
use attn_ref::{
    Align, BackwardOutput, BlockedBackward, BlockedOutput, Dtype, Error, ForwardOutput, Inputs,
    Mask, Problem, SplitMix64, Tensor, backward, backward_blocked, forward, forward_blocked,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// f32 unit roundoff.
const U32: f64 = 1.0 / (1u64 << 24) as f64;

fn amax(x: &[f32]) -> f64 {
    x.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64))
}

fn amax64(x: &[f64]) -> f64 {
    x.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

/// `max |lowp - truth|` (infinite if either is NaN).
fn max_err(lowp: &[f32], truth: &[f64]) -> f64 {
    assert_eq!(lowp.len(), truth.len());
    lowp.iter().zip(truth).fold(0.0f64, |m, (a, b)| {
        let e = (*a as f64 - b).abs();
        if e.is_nan() { f64::INFINITY } else { m.max(e) }
    })
}

fn dout_for(p: &Problem, seed: u64) -> Tensor {
    let mut rng = SplitMix64(seed ^ 0xD0);
    Tensor::from_fn(p.dtype, p.out_shape(), |_| rng.uniform(1.0))
}

/// Both forwards and both backwards of one problem (dbias requested).
struct Run {
    f: ForwardOutput,
    g: BackwardOutput,
    fb: BlockedOutput,
    gb: BlockedBackward,
}

fn run(p: &Problem, x: &Inputs, dout: &Tensor) -> Run {
    let f = forward(p, x).unwrap();
    let g = backward(p, x, dout, &f.out, &f.lse, true).unwrap();
    let fb = forward_blocked(p, x, 64, 32).unwrap();
    let gb = backward_blocked(p, x, dout, &fb.out, &fb.lse, true).unwrap();
    Run { f, g, fb, gb }
}

/// A priori bounds on `|lowp - truth|` per tensor: `[dq, dk, dv, dbias, delta]`.
///
/// With `W = rescale * Dv * max|dout| * max|v| + max|D|` (so `|dS_ij| <= P_ij W`), `dD` the error of
/// `delta` (from `out` rounded to the dtype) and `eP` the relative error of the recomputed `P`
/// (f32 logits and the f32 `lse`), each `dS_ij` is off by at most `P_ij E`,
/// `E = dD + eP W + u W` (`u W`: `dS` rounded to the dtype). Then `dQ_i` is off by
/// `scale max|k| E` (the row sums of `P` are 1), `dK_j` by `scale max|q| C E` and `dV_j` by
/// `rescale C max|dout| (eP + u)`, with `C` the largest column sum of `P` over a kv head's group,
/// plus the final rounding `u |grad|` and the f32 sums. Factor 2 on top.
fn bounds(p: &Problem, x: &Inputs, dout: &Tensor, r: &Run) -> [f64; 5] {
    let u = p.dtype.unit_roundoff();
    let (d, dv) = (p.head_dim as f64, p.head_dim_v as f64);
    let (mq, mk) = p.max_seqlens();
    let (a_q, a_k, a_v, a_do) = (
        amax(&x.q.data),
        amax(&x.k.data),
        amax(&x.v.data),
        amax(&dout.data),
    );
    let rescale = p.dropout.map_or(1.0, |dd| dd.rescale() as f64);
    let scale = p.softmax_scale().abs() as f64;
    // Logit magnitude and the relative error of P = exp(logit - lse).
    let bmax = x.bias.as_ref().map_or(0.0, |b| amax(&b.data));
    let smax = p.alibi.as_ref().map_or(0.0, |a| amax(&a.slopes));
    let l = scale * d * a_q * a_k + bmax + smax * (mq + mk) as f64 + p.softcap as f64;
    let e_p = (2.0 * d + 16.0) * U32 * l + 8.0 * U32 * (l + 1.0) + 4.0 * mk as f64 * U32;
    // C: column sums of P, from the truth's dV with dout = 1 and no dropout.
    let mut p1 = p.clone();
    p1.dropout = None;
    let ones = Tensor::from_fn(p.dtype, p.out_shape(), |_| 1.0);
    let f1 = forward(&p1, x).unwrap();
    let c = amax64(&backward(&p1, x, &ones, &f1.out, &f1.lse, false).unwrap().dv);
    let d_out = max_err(&r.fb.out, &r.f.out);
    let a_out = amax(&r.fb.out);
    let tol_delta = dv * a_do * d_out + 2.0 * dv * U32 * a_do * a_out;
    let w = rescale * dv * a_do * a_v + amax64(&r.g.d);
    let sums = (dv + (mk + mq * p.group()) as f64) * U32 * w;
    let e = tol_delta + (e_p + u) * w + sums;
    let last = |t: &[f64]| u * amax64(t);
    [
        2.0 * (scale * a_k * e + last(&r.g.dq)),
        2.0 * (scale * a_q * c * e + last(&r.g.dk)),
        2.0 * (rescale * c * a_do * (e_p + u + (mq * p.group()) as f64 * U32) + last(&r.g.dv)),
        2.0 * (tol_delta + e_p * w + sums),
        2.0 * tol_delta + 1e-30,
    ]
}

/// Checks the blocked backward against the truth: a priori bounds, exact zeros where the truth is
/// structurally zero, values representable in the dtype. Returns `max|lowp - truth| / (u max|truth|)`
/// per tensor (`[dq, dk, dv, dbias, delta]`).
fn check_against_truth(p: &Problem, x: &Inputs, dout: &Tensor) -> [f64; 5] {
    let r = run(p, x, dout);
    let (g, gb) = (&r.g, &r.gb);
    let tol = bounds(p, x, dout, &r);
    let empty: Vec<f64> = Vec::new();
    let dbias_t = g.dbias.as_ref().unwrap_or(&empty);
    let dbias_b: Vec<f32> = gb.dbias.clone().unwrap_or_default();
    assert_eq!(g.dbias.is_some(), gb.dbias.is_some());
    let named: [(&str, &[f32], &[f64]); 5] = [
        ("dq", &gb.dq, &g.dq),
        ("dk", &gb.dk, &g.dk),
        ("dv", &gb.dv, &g.dv),
        ("dbias", &dbias_b, dbias_t),
        ("delta", &gb.delta, &g.d),
    ];
    let u = p.dtype.unit_roundoff();
    let mut ratios = [0.0; 5];
    for (n, ((name, lowp, truth), tol)) in named.iter().zip(tol).enumerate() {
        assert_eq!(lowp.len(), truth.len(), "{name}: length");
        let err = max_err(lowp, truth);
        assert!(
            err <= tol,
            "{name}: max|lowp - truth| = {err:e} > a priori bound {tol:e} ({p:?})"
        );
        for (i, (a, t)) in lowp.iter().zip(truth.iter()).enumerate() {
            assert!(a.is_finite(), "{name}[{i}] = {a}");
            // Rows without a visible key, keys past seqused_k, padding: zero in both.
            if *t == 0.0 && !matches!(*name, "dbias" | "delta") {
                let hidden = lowp_structurally_zero(p, name, i, &r);
                assert!(!hidden || *a == 0.0, "{name}[{i}] = {a}, truth 0");
            }
        }
        if matches!(*name, "dq" | "dk" | "dv") {
            assert!(
                lowp.iter().all(|v| p.dtype.round(*v) == *v),
                "{name} is rounded to {}",
                p.dtype
            );
        }
        let m = amax64(truth);
        ratios[n] = if m > 0.0 { err / (u * m) } else { 0.0 };
    }
    ratios
}

/// Whether element `i` of gradient `name` is zero by construction (no sequence owns it, or its
/// query row has no visible key, or its key is past `seqused_k`).
fn lowp_structurally_zero(p: &Problem, name: &str, i: usize, r: &Run) -> bool {
    match name {
        "dq" => {
            let row = i / p.head_dim; // (b * Sq + s) * Hq + h
            let h = row % p.heads_q;
            let bs = row / p.heads_q;
            let (b, s) = (bs / p.seqlen_q, bs % p.seqlen_q);
            p.seqs().iter().all(|q| {
                q.batch != b
                    || s < q.q_start
                    || s >= q.q_start + q.sq
                    || r.fb.lse[p.lse_index(q, h, s - q.q_start)] == f32::NEG_INFINITY
            })
        }
        _ => {
            let dim = if name == "dk" {
                p.head_dim
            } else {
                p.head_dim_v
            };
            let bs = i / dim / p.heads_k;
            let (b, s) = (bs / p.seqlen_k, bs % p.seqlen_k);
            p.seqs()
                .iter()
                .all(|q| q.batch != b || s < q.k_start || s >= q.k_start + q.sk)
        }
    }
}

/// `crates/attn-kernels/tests/pieces.rs`' everything-on problem: varlen (empty sequences on either
/// side), seqused_k, bottom-right causal (rows with no visible key), a head-broadcast f32 bias,
/// per-sequence ALiBi, softcap, dropout, GQA, `D != Dv`.
fn varlen_everything(dtype: Dtype, d: usize) -> Problem {
    Problem::varlen(
        dtype,
        &[(37, 45), (0, 9), (20, 0), (50, 33)],
        4,
        2,
        d,
        d - 8,
    )
    .with_mask(Mask::Causal {
        align: Align::BottomRight,
    })
    .with_seqused_k(vec![40, 9, 0, 21])
    .with_bias(Dtype::F32, [false, true, false, false])
    .with_alibi((0..16).map(|i| 0.05 + 0.03 * i as f32).collect(), true)
    .with_softcap(8.0)
    .with_dropout(0.3, 0x1234_5678_9abc, 77)
}

/// Batch mode, a full bias in the input dtype, per-head ALiBi, a top-left window, dropout p = 0.5, MQA.
fn batch_window(dtype: Dtype, d: usize) -> Problem {
    Problem::new(dtype, 2, 41, 53, 2, 1, d, d)
        .with_mask(Mask::Window {
            left: Some(9),
            right: Some(4),
            align: Align::TopLeft,
        })
        .with_bias(dtype, [false; 4])
        .with_alibi(vec![0.1, 0.4], false)
        .with_dropout(0.5, 99, 1 << 40)
}

/// Batch mode, GQA 3:1, `Sq > Sk` bottom-right causal (the first rows see nothing), seqused_k, an
/// explicit scale, a bias broadcast over batch and query rows, `D != Dv`.
fn batch_gqa(dtype: Dtype) -> Problem {
    Problem::new(dtype, 2, 70, 40, 6, 2, 64, 32)
        .with_mask(Mask::Causal {
            align: Align::BottomRight,
        })
        .with_seqused_k(vec![40, 23])
        .with_scale(0.2)
        .with_bias(dtype, [true, false, true, false])
}

/// Plain attention, longer keys, no mask: the accumulation-length end of the bounds.
fn plain_long(dtype: Dtype) -> Problem {
    Problem::new(dtype, 1, 33, 300, 2, 2, 128, 128)
}

fn fixed_problems(dtype: Dtype) -> Vec<(&'static str, Problem)> {
    vec![
        ("varlen_everything", varlen_everything(dtype, 32)),
        ("batch_window", batch_window(dtype, 40)),
        ("batch_gqa", batch_gqa(dtype)),
        ("plain_long", plain_long(dtype)),
    ]
}

/// On fixed problems covering every feature, in every dtype, the blocked backward is within the a
/// priori bounds of the truth and, normwise, within a few units of its dtype's roundoff:
/// `max|lowp - truth| <= k u max|truth|` with `k = 4` for f16/bf16 (measured: at most 1.4) and
/// `k = 64` for f32, whose error is the f32 logits' and sums' rather than one rounding (measured: at most 14).
#[test]
fn blocked_backward_matches_truth_on_fixed_problems() {
    for dtype in Dtype::ALL {
        for (n, (name, p)) in fixed_problems(dtype).into_iter().enumerate() {
            let x = Inputs::random(&p, 11 + n as u64, 1.0);
            let dout = dout_for(&p, 5 + n as u64);
            let ratios = check_against_truth(&p, &x, &dout);
            let k = if dtype == Dtype::F32 { 64.0 } else { 4.0 };
            for (what, r) in ["dq", "dk", "dv", "dbias", "delta"].iter().zip(ratios) {
                assert!(
                    r <= k,
                    "{name} {dtype} {what}: max|lowp - truth| = {r:.2} u max|truth| > {k} u"
                );
            }
        }
    }
}

/// `dbias` follows `want_dbias` and the problem's bias; the other outputs do not depend on it.
#[test]
fn dbias_only_when_asked_and_present() {
    let p = batch_window(Dtype::Bf16, 16);
    let x = Inputs::random(&p, 1, 1.0);
    let dout = dout_for(&p, 2);
    let fb = forward_blocked(&p, &x, 16, 16).unwrap();
    let with = backward_blocked(&p, &x, &dout, &fb.out, &fb.lse, true).unwrap();
    let without = backward_blocked(&p, &x, &dout, &fb.out, &fb.lse, false).unwrap();
    assert_eq!(
        with.dbias.as_ref().unwrap().len(),
        p.bias_shape().iter().product::<usize>()
    );
    assert!(without.dbias.is_none());
    assert_eq!(
        (&with.dq, &with.dk, &with.dv),
        (&without.dq, &without.dk, &without.dv)
    );
    let mut q = Problem::new(Dtype::F16, 1, 3, 4, 1, 1, 8, 8);
    q.mask = Mask::Causal {
        align: Align::TopLeft,
    };
    let xq = Inputs::random(&q, 1, 1.0);
    let fq = forward_blocked(&q, &xq, 16, 16).unwrap();
    let g = backward_blocked(&q, &xq, &dout_for(&q, 1), &fq.out, &fq.lse, true).unwrap();
    assert!(g.dbias.is_none());
}

/// A strided (BHMK) `dout` gives bit-identical gradients, and so does a second call.
#[test]
fn strided_dout_and_repeat_are_bit_identical() {
    let p = varlen_everything(Dtype::F16, 16);
    let x = Inputs::random(&p, 3, 1.0);
    let dout = dout_for(&p, 4);
    let [b, s, h, d] = p.out_shape();
    // The same logical tensor stored as [B, H, S, D].
    let mut data = vec![0.0f32; dout.numel()];
    for bi in 0..b {
        for si in 0..s {
            for hi in 0..h {
                for di in 0..d {
                    data[((bi * h + hi) * s + si) * d + di] = dout.get([bi, si, hi, di]);
                }
            }
        }
    }
    let strided =
        Tensor::with_strides(Dtype::F16, dout.shape, [h * s * d, d, s * d, 1], data).unwrap();
    let fb = forward_blocked(&p, &x, 32, 16).unwrap();
    let a = backward_blocked(&p, &x, &dout, &fb.out, &fb.lse, true).unwrap();
    let c = backward_blocked(&p, &x, &strided, &fb.out, &fb.lse, true).unwrap();
    let again = backward_blocked(&p, &x, &dout, &fb.out, &fb.lse, true).unwrap();
    let bits = |g: &BlockedBackward| -> Vec<u32> {
        g.dq.iter()
            .chain(&g.dk)
            .chain(&g.dv)
            .chain(g.dbias.as_ref().unwrap())
            .chain(&g.delta)
            .map(|v| v.to_bits())
            .collect()
    };
    assert_eq!(bits(&a), bits(&c));
    assert_eq!(bits(&a), bits(&again));
}

/// Wrong `dout`, `out` or `lse` shapes are `InvalidArgument` errors, as for the truth.
#[test]
fn bad_shapes_are_errors() {
    let p = Problem::new(Dtype::F16, 1, 3, 4, 2, 1, 8, 8);
    let x = Inputs::random(&p, 1, 1.0);
    let dout = dout_for(&p, 1);
    let fb = forward_blocked(&p, &x, 16, 16).unwrap();
    let bad_dout = Tensor::zeros(Dtype::F16, [1, 3, 2, 16]);
    let is_invalid =
        |r: Result<BlockedBackward, Error>| matches!(r, Err(Error::InvalidArgument { .. }));
    assert!(is_invalid(backward_blocked(
        &p, &x, &bad_dout, &fb.out, &fb.lse, false
    )));
    assert!(is_invalid(backward_blocked(
        &p,
        &x,
        &dout,
        &fb.out[1..],
        &fb.lse,
        false
    )));
    assert!(is_invalid(backward_blocked(
        &p,
        &x,
        &dout,
        &fb.out,
        &fb.lse[1..],
        false
    )));
    let mut q = p.clone();
    q.heads_k = 3;
    assert!(is_invalid(backward_blocked(
        &q, &x, &dout, &fb.out, &fb.lse, false
    )));
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/blocked_bwd.txt",
        ))),
        ..ProptestConfig::default()
    })]

    /// On random problems (every dtype, mask, varlen, seqused_k, bias, ALiBi, softcap, dropout, GQA,
    /// D != Dv), the blocked backward is within the a priori bounds of the truth.
    #[test]
    fn blocked_backward_within_a_priori_bounds(c in case(&Config::default())) {
        let dout = dout_for(&c.problem, c.seed);
        check_against_truth(&c.problem, &c.inputs, &dout);
    }
}

/// Inputs of `p` on a grid of `2^-12`, so that `x ± 2^-8` and `x ± 2^-9` are exact in f32.
fn grid_inputs(p: &Problem, seed: u64) -> Inputs {
    let mut x = Inputs::random(p, seed, 1.0);
    let snap = |t: &mut Tensor| {
        t.data
            .iter_mut()
            .for_each(|v| *v = (*v * 4096.0).round() / 4096.0)
    };
    snap(&mut x.q);
    snap(&mut x.k);
    snap(&mut x.v);
    if let Some(b) = x.bias.as_mut() {
        snap(b);
    }
    x
}

/// The f64 truth's gradients equal central finite differences of `L = sum(out * dout)` through the
/// f64 forward, to 1e-6 relative, on a small problem with GQA, `D != Dv`, a bottom-right causal
/// mask, a head-broadcast bias, ALiBi, softcap and dropout (the keep mask is a fixed function of
/// the indices). Richardson extrapolation of steps `h = 2^-8, 2^-9` leaves an `O(h^4)` error.
///
/// The bias is broadcast over heads, so perturbing a stored element moves `Hq` logits at once: its
/// derivative is `dbias` summed over the heads.
#[test]
fn truth_equals_finite_differences() {
    let p = Problem::new(Dtype::F32, 2, 5, 7, 4, 2, 8, 4)
        .with_mask(Mask::Causal {
            align: Align::BottomRight,
        })
        .with_bias(Dtype::F32, [false, true, false, false])
        .with_alibi(vec![0.3, 0.1, 0.7, 0.25], false)
        .with_softcap(1.5)
        .with_scale(0.6)
        .with_dropout(0.25, 0xfeed, 3);
    let x = grid_inputs(&p, 21);
    let dout = dout_for(&p, 22);
    let dvec: Vec<f64> = dout.to_contiguous().iter().map(|v| *v as f64).collect();
    let f = forward(&p, &x).unwrap();
    let g = backward(&p, &x, &dout, &f.out, &f.lse, true).unwrap();
    let loss = |xx: &Inputs| -> f64 {
        let o = forward(&p, xx).unwrap().out;
        o.iter().zip(&dvec).map(|(a, b)| a * b).sum()
    };
    // d L / d x at storage element `e` of the tensor `sel` picks.
    let numeric = |sel: &dyn Fn(&mut Inputs) -> &mut Tensor, e: usize| -> f64 {
        let central = |h: f32| {
            let mut xp = x.clone();
            let x0 = sel(&mut xp).data[e];
            sel(&mut xp).data[e] = x0 + h;
            let up = loss(&xp);
            sel(&mut xp).data[e] = x0 - h;
            let down = loss(&xp);
            (up - down) / (2.0 * h as f64)
        };
        let (d1, d2) = (central(1.0 / 256.0), central(1.0 / 512.0));
        (4.0 * d2 - d1) / 3.0
    };
    let mut rng = SplitMix64(99);
    let mut pick = |n: usize| (rng.next_u64() % n as u64) as usize;
    let mut worst = 0.0f64;
    let mut cmp = |what: &str, analytic: f64, num: f64, gmax: f64| {
        let err = (analytic - num).abs();
        let tol = 1e-6 * analytic.abs().max(1e-2 * gmax);
        assert!(
            err <= tol,
            "{what}: analytic {analytic:e} vs numeric {num:e} (tol {tol:e})"
        );
        worst = worst.max(err / analytic.abs().max(1e-2 * gmax));
    };
    let bias_shape = p.bias_shape();
    for _ in 0..10 {
        let [qs, ks, vs] = [x.q.numel(), x.k.numel(), x.v.numel()];
        let (eq, ek, ev) = (pick(qs), pick(ks), pick(vs));
        cmp("dq", g.dq[eq], numeric(&|xx| &mut xx.q, eq), amax64(&g.dq));
        cmp("dk", g.dk[ek], numeric(&|xx| &mut xx.k, ek), amax64(&g.dk));
        cmp("dv", g.dv[ev], numeric(&|xx| &mut xx.v, ev), amax64(&g.dv));
        // A stored bias element [b, 0, i, j]: the sum of dbias over the heads.
        let (b, i, j) = (
            pick(bias_shape[0]),
            pick(bias_shape[2]),
            pick(bias_shape[3]),
        );
        let db = g.dbias.as_ref().unwrap();
        let analytic: f64 = (0..p.heads_q)
            .map(|h| db[((b * p.heads_q + h) * bias_shape[2] + i) * bias_shape[3] + j])
            .sum();
        let e = x.bias.as_ref().unwrap().offset([b, 0, i, j]);
        let num = numeric(&|xx| xx.bias.as_mut().unwrap(), e);
        cmp("dbias", analytic, num, amax64(db));
        if !p.mask.visible(i, j, p.seqlen_q, p.seqlen_k) {
            assert_eq!(analytic, 0.0, "a masked bias element has no gradient");
        }
    }
    eprintln!("finite differences: worst relative error {worst:e}");
}
