//! Properties of the reference (semantics.md and style-anchors §12.4).

use attn_ref::strategy::{Config, case};
use attn_ref::{
    Align, BackwardOutput, Dtype, Inputs, Mask, Problem, SplitMix64, Tensor, backward, dropout,
    forward, forward_blocked, forward_with_mask,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Failures persist in `crates/attn-ref/proptest-regressions/` (cargo runs tests from the crate root).
fn persisted(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/properties.txt",
        ))),
        ..ProptestConfig::default()
    }
}
use proptest::sample;

const U32: f64 = 1.0 / (1u64 << 24) as f64;

fn amax(x: &[f32]) -> f64 {
    x.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64))
}

/// A priori rounding bounds of the blocked path against the truth: `(out, lse)`.
fn lowp_tol(p: &Problem, x: &Inputs) -> (f64, f64) {
    let u = p.dtype.unit_roundoff();
    let d = p.head_dim as f64;
    let qk = p.softmax_scale().abs() as f64 * d * amax(&x.q.data) * amax(&x.k.data);
    let bmax = x.bias.as_ref().map_or(0.0, |b| amax(&b.data));
    let smax = p.alibi.as_ref().map_or(0.0, |a| amax(&a.slopes));
    let (mq, mk) = p.max_seqlens();
    let l = qk + bmax + smax * (mq + mk) as f64 + p.softcap as f64;
    let logit_err = (2.0 * d + 16.0) * U32 * l;
    let vmax = amax(&x.v.data);
    let rescale = p.dropout.map_or(1.0, |dd| dd.rescale() as f64);
    let out = vmax * rescale * (3.0 * u + 2.0 * logit_err + 4.0 * (mk as f64 + d) * U32) + 1e-30;
    let lse = logit_err + 8.0 * U32 * (l + 1.0) + 4.0 * mk as f64 * U32 + 1e-6;
    (out, lse)
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0, |m, (x, y)| {
        if x == y {
            m
        } else {
            m.max((x - y).abs()).max(if x.is_nan() || y.is_nan() {
                f64::INFINITY
            } else {
                0.0
            })
        }
    })
}

fn assert_close(what: &str, a: &[f64], b: &[f64], tol: f64) -> Result<(), TestCaseError> {
    let scale = a
        .iter()
        .chain(b)
        .filter(|v| v.is_finite())
        .fold(1.0f64, |m, v| m.max(v.abs()));
    let e = max_diff(a, b);
    prop_assert!(
        e <= tol * scale,
        "{what}: max diff {e:e} > {tol:e} * {scale}"
    );
    Ok(())
}

fn dout_for(p: &Problem, seed: u64) -> Tensor {
    let mut rng = SplitMix64(seed ^ 0xD0);
    Tensor::from_fn(p.dtype, p.out_shape(), |_| rng.uniform(1.0))
}

fn fwd_bwd(p: &Problem, x: &Inputs, dout: &Tensor) -> (attn_ref::ForwardOutput, BackwardOutput) {
    let f = forward_with_mask(p, x).unwrap();
    let g = backward(p, x, dout, &f.out, &f.lse, true).unwrap();
    (f, g)
}

fn all_finite_or_neg_inf(f: &attn_ref::ForwardOutput, g: &BackwardOutput) -> bool {
    f.out.iter().all(|v| v.is_finite())
        && f.lse
            .iter()
            .all(|v| v.is_finite() || *v == f64::NEG_INFINITY)
        && g.dq
            .iter()
            .chain(&g.dk)
            .chain(&g.dv)
            .chain(&g.d)
            .all(|v| v.is_finite())
        && g.dbias
            .as_ref()
            .is_none_or(|d| d.iter().all(|v| v.is_finite()))
}

fn cases() -> ProptestConfig {
    persisted(64)
}

/// A full (never broadcast) f32 copy of the bias with `f(b, h, i, j, value)` applied.
fn full_bias(p: &Problem, x: &Inputs, mut f: impl FnMut([usize; 4], f32) -> f32) -> Tensor {
    Tensor::from_fn(Dtype::F32, p.bias_shape(), |idx| {
        f(idx, x.bias.as_ref().map_or(0.0, |b| b.get(idx)))
    })
}

proptest! {
    #![proptest_config(cases())]

    /// The blocked low-precision forward equals the f64 forward within rounding, for every tile size.
    #[test]
    fn blocked_equals_truth_for_every_tile(
        c in case(&Config::default()),
        bm in sample::select(vec![1usize, 2, 3, 16, 64, 128]),
        bn in sample::select(vec![1usize, 3, 8, 16, 64, 128]),
    ) {
        let (p, x) = (&c.problem, &c.inputs);
        let truth = forward(p, x).unwrap();
        let lowp = forward_blocked(p, x, bm, bn).unwrap();
        let (tol_o, tol_l) = lowp_tol(p, x);
        for (i, (a, b)) in lowp.out.iter().zip(&truth.out).enumerate() {
            prop_assert!(a.is_finite() && (*a as f64 - b).abs() <= tol_o, "out[{i}]: {a} vs {b} (tol {tol_o:e})");
        }
        for (i, (a, b)) in lowp.lse.iter().zip(&truth.lse).enumerate() {
            if *b == f64::NEG_INFINITY {
                prop_assert_eq!(*a, f32::NEG_INFINITY, "lse[{}] -inf parity", i);
            } else {
                prop_assert!((*a as f64 - b).abs() <= tol_l * (1.0 + b.abs()), "lse[{i}]: {a} vs {b} (tol {tol_l:e})");
            }
        }
        // The pass rule accepts the blocked path as a kernel against itself.
        attn_ref::check(&lowp.out, &truth.out, &lowp.out).assert_passed();
        attn_ref::check_lse(&lowp.lse, &truth.lse, &lowp.lse).assert_passed();
    }

    /// Varlen equals running each sequence alone in batch mode (forward, backward, dropout mask).
    #[test]
    fn varlen_equals_one_by_one(c in case(&Config { p_varlen: 1.0, ..Config::default() })) {
        let (p, x) = (&c.problem, &c.inputs);
        prop_assume!(p.varlen.is_some());
        let dout = dout_for(p, c.seed);
        let (f, g) = fwd_bwd(p, x, &dout);
        let [_, hq, mq, mk] = p.bias_shape();
        let (d, dv) = (p.head_dim, p.head_dim_v);
        for s in p.seqs() {
            let mut q1 = Problem::new(p.dtype, 1, s.sq, s.sk_total, hq, p.heads_k, d, dv);
            q1.mask = p.mask;
            q1.scale = p.scale;
            q1.softcap = p.softcap;
            q1.bias = p.bias;
            q1.seqused_k = p.seqused_k.as_ref().map(|u| vec![u[s.b]]);
            q1.alibi = p.alibi.as_ref().map(|a| {
                attn_ref::Alibi { slopes: (0..hq).map(|h| a.slope(hq, s.b, h)).collect(), per_batch: false }
            });
            q1.dropout = p.dropout.map(|dd| attn_ref::Dropout { offset: dd.offset.wrapping_add((s.b * hq) as u64), ..dd });
            let sub = |t: &Tensor, start: usize, rows: usize| {
                Tensor::from_fn(t.dtype, [1, rows, t.shape[2], t.shape[3]], |[_, r, h, e]| t.get([0, start + r, h, e]))
            };
            let x1 = Inputs {
                q: sub(&x.q, s.q_start, s.sq),
                k: sub(&x.k, s.k_start, s.sk_total),
                v: sub(&x.v, s.k_start, s.sk_total),
                bias: x.bias.as_ref().map(|b| {
                    Tensor::from_fn(b.dtype, [1, hq, s.sq, s.sk_total], |[_, h, i, j]| b.get([s.b, h, i, j]))
                }),
            };
            let dout1 = sub(&dout, s.q_start, s.sq);
            let (f1, g1) = fwd_bwd(&q1, &x1, &dout1);
            for h in 0..hq {
                for i in 0..s.sq {
                    prop_assert_eq!(f.lse[p.lse_index(&s, h, i)], f1.lse[h * s.sq + i]);
                    let a = ((s.q_start + i) * hq + h) * dv;
                    let b = (i * hq + h) * dv;
                    prop_assert_eq!(&f.out[a..a + dv], &f1.out[b..b + dv]);
                    let a = ((s.q_start + i) * hq + h) * d;
                    let b = (i * hq + h) * d;
                    prop_assert_eq!(&g.dq[a..a + d], &g1.dq[b..b + d]);
                    for j in 0..s.sk_total {
                        let big = ((s.b * hq + h) * mq + i) * mk + j;
                        let small = (h * s.sq + i) * s.sk_total + j;
                        if let (Some(m), Some(m1)) = (&f.dropout_mask, &f1.dropout_mask) {
                            prop_assert_eq!(m[big], m1[small]);
                        }
                        if let (Some(db), Some(db1)) = (&g.dbias, &g1.dbias) {
                            prop_assert_eq!(db[big], db1[small]);
                        }
                    }
                }
            }
            for j in 0..s.sk_total {
                for hk in 0..p.heads_k {
                    let a = ((s.k_start + j) * p.heads_k + hk) * d;
                    let b = (j * p.heads_k + hk) * d;
                    prop_assert_eq!(&g.dk[a..a + d], &g1.dk[b..b + d]);
                    let a = ((s.k_start + j) * p.heads_k + hk) * dv;
                    let b = (j * p.heads_k + hk) * dv;
                    prop_assert_eq!(&g.dv[a..a + dv], &g1.dv[b..b + dv]);
                }
            }
        }
    }

    /// `seqused_k` equals truncating K, V (and the bias columns).
    #[test]
    fn seqused_k_equals_truncation(c in case(&Config { p_varlen: 0.0, p_seqused_k: 1.0, max_batch: 1, ..Config::default() })) {
        let (p, x) = (&c.problem, &c.inputs);
        let used = p.seqused_k.as_ref().map_or(p.seqlen_k, |u| u[0] as usize);
        let dout = dout_for(p, c.seed);
        let (f, g) = fwd_bwd(p, x, &dout);
        let mut pt = p.clone();
        pt.seqused_k = None;
        pt.seqlen_k = used;
        let trunc = |t: &Tensor| Tensor::from_fn(t.dtype, [1, used, t.shape[2], t.shape[3]], |i| t.get(i));
        let xt = Inputs {
            q: x.q.clone(),
            k: trunc(&x.k),
            v: trunc(&x.v),
            bias: x.bias.as_ref().map(|b| Tensor::from_fn(b.dtype, pt.bias_shape(), |i| b.get(i))),
        };
        let (ft, gt) = fwd_bwd(&pt, &xt, &dout);
        prop_assert_eq!(&f.out, &ft.out);
        prop_assert_eq!(&f.lse, &ft.lse);
        prop_assert_eq!(&g.dq, &gt.dq);
        let (kd, vd) = (p.heads_k * p.head_dim, p.heads_k * p.head_dim_v);
        prop_assert_eq!(&g.dk[..used * kd], &gt.dk[..]);
        prop_assert_eq!(&g.dv[..used * vd], &gt.dv[..]);
        prop_assert!(g.dk[used * kd..].iter().chain(&g.dv[used * vd..]).all(|&v| v == 0.0));
    }

    /// GQA/MQA equals MHA with repeated K/V heads, forward and backward (dK, dV summed over the group).
    #[test]
    fn gqa_equals_repeated_mha(c in case(&Config { groups: vec![2, 3, 4], ..Config::default() })) {
        let (p, x) = (&c.problem, &c.inputs);
        let grp = p.group();
        let dout = dout_for(p, c.seed);
        let (f, g) = fwd_bwd(p, x, &dout);
        let mut pm = p.clone();
        pm.heads_k = p.heads_q;
        let rep = |t: &Tensor| {
            Tensor::from_fn(t.dtype, [t.shape[0], t.shape[1], p.heads_q, t.shape[3]], |[b, s, h, e]| t.get([b, s, h / grp, e]))
        };
        let xm = Inputs { q: x.q.clone(), k: rep(&x.k), v: rep(&x.v), bias: x.bias.clone() };
        let (fm, gm) = fwd_bwd(&pm, &xm, &dout);
        prop_assert_eq!(&f.out, &fm.out);
        prop_assert_eq!(&f.lse, &fm.lse);
        prop_assert_eq!(&g.dq, &gm.dq);
        prop_assert_eq!(&g.dbias, &gm.dbias);
        let sum_group = |v: &[f64], dim: usize| -> Vec<f64> {
            let rows = v.len() / (p.heads_q * dim);
            let mut out = vec![0.0; rows * p.heads_k * dim];
            for r in 0..rows {
                for h in 0..p.heads_q {
                    for e in 0..dim {
                        out[(r * p.heads_k + h / grp) * dim + e] += v[(r * p.heads_q + h) * dim + e];
                    }
                }
            }
            out
        };
        assert_close("dk", &g.dk, &sum_group(&gm.dk, p.head_dim), 1e-12)?;
        assert_close("dv", &g.dv, &sum_group(&gm.dv, p.head_dim_v), 1e-12)?;
    }

    /// causal == window(None, 0) == a -inf bias above the aligned diagonal; softmax rows sum to 1.
    #[test]
    fn causal_equals_window_equals_bias(c in case(&Config::default()), align in attn_ref::strategy::align()) {
        let mut p = c.problem.clone();
        if align == Align::TopLeft {
            p.alibi = None; // ALiBi follows the mask's alignment, and Mask::None is bottom-right.
        }
        p.mask = Mask::Causal { align };
        let x = Inputs { bias: if p.bias.is_some() { c.inputs.bias.clone() } else { None }, ..c.inputs.clone() };
        let dout = dout_for(&p, c.seed);
        let (f, g) = fwd_bwd(&p, &x, &dout);
        prop_assert!(all_finite_or_neg_inf(&f, &g));
        let mut pw = p.clone();
        pw.mask = Mask::Window { left: None, right: Some(0), align };
        let (fw, gw) = fwd_bwd(&pw, &x, &dout);
        prop_assert_eq!(&f.out, &fw.out);
        prop_assert_eq!(&f.lse, &fw.lse);
        prop_assert_eq!(&g, &gw);
        let mut pb = p.clone();
        pb.mask = Mask::None;
        pb.bias = Some(attn_ref::BiasSpec { dtype: Dtype::F32, broadcast: [false; 4] });
        let seqs = p.seqs();
        let bias = full_bias(&p, &x, |[b, _, i, j], v| {
            let s = &seqs[b];
            let off = align.offset(s.sq, s.sk);
            if j as i64 > i as i64 + off { f32::NEG_INFINITY } else { v }
        });
        let xb = Inputs { bias: Some(bias), ..x.clone() };
        let (fb, gb) = fwd_bwd(&pb, &xb, &dout);
        prop_assert_eq!(&f.out, &fb.out);
        prop_assert_eq!(&f.lse, &fb.lse);
        prop_assert_eq!(&g.dq, &gb.dq);
        prop_assert_eq!(&g.dk, &gb.dk);
        prop_assert_eq!(&g.dv, &gb.dv);
        // Rows sum to one: with v = 1 and no dropout, every row with a visible key outputs exactly 1.
        let mut p1 = p.clone();
        p1.dropout = None;
        let x1 = Inputs { v: Tensor::from_fn(p.dtype, p.v_shape(), |_| 1.0), ..x.clone() };
        let f1 = forward(&p1, &x1).unwrap();
        for s in p.seqs() {
            for h in 0..p.heads_q {
                for i in 0..s.sq {
                    let row = ((s.batch * p.seqlen_q + s.q_start + i) * p.heads_q + h) * p.head_dim_v;
                    let want = if f1.lse[p.lse_index(&s, h, i)] == f64::NEG_INFINITY { 0.0 } else { 1.0 };
                    prop_assert!((f1.out[row] - want).abs() < 1e-12);
                }
            }
        }
    }

    /// With Sq == Sk (batch mode, no seqused_k), top-left and bottom-right alignments agree for every mask.
    #[test]
    fn top_left_equals_bottom_right_when_square(c in case(&Config { p_varlen: 0.0, p_seqused_k: 0.0, ..Config::default() }), m in attn_ref::strategy::mask(8)) {
        let mut p = c.problem.clone();
        p.seqlen_k = p.seqlen_q;
        let x = Inputs::random(&p, c.seed, c.value_scale);
        let (left, right) = m.bounds();
        let mk = |align| Mask::Window { left, right, align };
        p.mask = mk(Align::TopLeft);
        let dout = dout_for(&p, c.seed);
        let (f, g) = fwd_bwd(&p, &x, &dout);
        p.mask = mk(Align::BottomRight);
        let (f2, g2) = fwd_bwd(&p, &x, &dout);
        prop_assert_eq!(&f.out, &f2.out);
        prop_assert_eq!(&f.lse, &f2.lse);
        prop_assert_eq!(&g, &g2);
    }

    /// A fully masked row gives out = 0, lse = -inf, zero gradients and no NaN, in both forwards.
    #[test]
    fn fully_masked_rows(c in case(&Config { p_varlen: 0.0, p_seqused_k: 0.0, ..Config::default() }), extra in 1usize..5, window in any::<bool>()) {
        let mut p = c.problem.clone();
        p.seqlen_q = p.seqlen_k + extra; // bottom-right: rows i < extra see nothing
        p.mask = if window {
            Mask::Window { left: Some(1), right: Some(0), align: Align::BottomRight }
        } else {
            Mask::Causal { align: Align::BottomRight }
        };
        let x = Inputs::random(&p, c.seed, c.value_scale);
        let dout = dout_for(&p, c.seed);
        let (f, g) = fwd_bwd(&p, &x, &dout);
        prop_assert!(all_finite_or_neg_inf(&f, &g));
        let lowp = forward_blocked(&p, &x, 16, 16).unwrap();
        let (hq, d, dv) = (p.heads_q, p.head_dim, p.head_dim_v);
        for s in p.seqs() {
            for h in 0..hq {
                for i in 0..extra.min(s.sq) {
                    let li = p.lse_index(&s, h, i);
                    prop_assert_eq!(f.lse[li], f64::NEG_INFINITY);
                    prop_assert_eq!(lowp.lse[li], f32::NEG_INFINITY);
                    let o = ((s.batch * p.seqlen_q + i) * hq + h) * dv;
                    prop_assert!(f.out[o..o + dv].iter().all(|&v| v == 0.0));
                    prop_assert!(lowp.out[o..o + dv].iter().all(|&v| v == 0.0));
                    let q = ((s.batch * p.seqlen_q + i) * hq + h) * d;
                    prop_assert!(g.dq[q..q + d].iter().all(|&v| v == 0.0));
                }
            }
        }
    }

    /// With no mask, ALiBi or dropout, permuting the keys with their values and bias columns leaves out unchanged.
    #[test]
    fn key_permutation_invariance(c in case(&Config { p_varlen: 0.0, p_seqused_k: 0.0, p_alibi: 0.0, p_dropout: 0.0, masks: false, ..Config::default() })) {
        let (p, x) = (&c.problem, &c.inputs);
        let sk = p.seqlen_k;
        let mut perm: Vec<usize> = (0..sk).collect();
        let mut rng = SplitMix64(c.seed);
        for i in (1..sk).rev() {
            perm.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        let pk = |t: &Tensor| Tensor::from_fn(t.dtype, t.shape, |[b, j, h, e]| t.get([b, perm[j], h, e]));
        let xp = Inputs {
            q: x.q.clone(),
            k: pk(&x.k),
            v: pk(&x.v),
            bias: x.bias.as_ref().map(|b| Tensor::from_fn(b.dtype, b.shape, |[bb, h, i, j]| b.get([bb, h, i, perm[j]]))),
        };
        let f = forward(p, x).unwrap();
        let fp = forward(p, &xp).unwrap();
        assert_close("out", &f.out, &fp.out, 1e-12)?;
        assert_close("lse", &f.lse, &fp.lse, 1e-12)?;
    }

    /// Dropout with p = 0 equals no dropout, forward and backward.
    #[test]
    fn dropout_p0_equals_none(c in case(&Config::default()), seed in any::<u64>(), offset in any::<u64>()) {
        let mut p = c.problem.clone();
        p.dropout = None;
        let dout = dout_for(&p, c.seed);
        let (f, g) = fwd_bwd(&p, &c.inputs, &dout);
        p.dropout = Some(attn_ref::Dropout { p: 0.0, seed, offset });
        let (f0, g0) = fwd_bwd(&p, &c.inputs, &dout);
        prop_assert_eq!(&f.out, &f0.out);
        prop_assert_eq!(&f.lse, &f0.lse);
        prop_assert_eq!(&g, &g0);
        let m = f0.dropout_mask.unwrap();
        let [_, hq, mq, mk] = p.bias_shape();
        for s in p.seqs() {
            for h in 0..hq {
                for i in 0..s.sq {
                    let row = ((s.b * hq + h) * mq + i) * mk;
                    prop_assert!(m[row..row + s.sk_total].iter().all(|&k| k == 1));
                }
            }
        }
        let b = forward_blocked(&p, &c.inputs, 16, 16).unwrap();
        p.dropout = None;
        let b0 = forward_blocked(&p, &c.inputs, 16, 16).unwrap();
        prop_assert_eq!(b, b0);
    }

    /// Large logits (|s| up to ~1e4) stay finite in every path.
    #[test]
    fn large_logits_stay_finite(c in case(&Config { value_scales: vec![100.0], head_dims: vec![8, 16], ..Config::default() })) {
        let (p, x) = (&c.problem, &c.inputs);
        let dout = dout_for(p, c.seed);
        let (f, g) = fwd_bwd(p, x, &dout);
        prop_assert!(all_finite_or_neg_inf(&f, &g));
        let lowp = forward_blocked(p, x, 16, 32).unwrap();
        prop_assert!(lowp.out.iter().all(|v| v.is_finite()));
        for (a, b) in lowp.lse.iter().zip(&f.lse) {
            prop_assert!(a.is_finite() || (*a == f32::NEG_INFINITY && *b == f64::NEG_INFINITY));
        }
    }
}

proptest! {
    #![proptest_config(persisted(32))]

    /// The backward equals central finite differences of the f64 forward (loss = sum(out * dout)), with and
    /// without softcap, bias, ALiBi and dropout (the mask is a fixed function of the indices).
    #[test]
    fn backward_equals_finite_differences(c in case(&Config { p_bias: 0.5, p_alibi: 0.4, p_softcap: 0.4, p_dropout: 0.4, ..Config::tiny() })) {
        let mut p = c.problem.clone();
        if let Some(b) = p.bias.as_mut() {
            b.broadcast = [false; 4]; // dbias is full; compare element by element
        }
        let x = Inputs::random(&p, c.seed, 1.0);
        let dout = dout_for(&p, c.seed);
        let (f, g) = fwd_bwd(&p, &x, &dout);
        let dvec = dout.to_contiguous();
        let loss = |xx: &Inputs| -> f64 {
            forward(&p, xx).unwrap().out.iter().zip(&dvec).map(|(o, d)| o * *d as f64).sum()
        };
        let _ = f;
        let h = 1e-3f32;
        let fd = |sel: &dyn Fn(&mut Inputs) -> &mut Tensor, n: usize| -> Vec<f64> {
            (0..n).map(|e| {
                let mut xp = x.clone();
                let x0 = sel(&mut xp).data[e];
                let up = x0 + h;
                let dn = x0 - h;
                sel(&mut xp).data[e] = up;
                let lp = loss(&xp);
                sel(&mut xp).data[e] = dn;
                let lm = loss(&xp);
                (lp - lm) / (up as f64 - dn as f64)
            }).collect()
        };
        let cmp = |what: &str, an: &[f64], num: &[f64]| -> Result<(), TestCaseError> {
            for (i, (a, n)) in an.iter().zip(num).enumerate() {
                prop_assert!((a - n).abs() <= 2e-5 * (1.0 + a.abs()), "{what}[{i}]: analytic {a} vs numeric {n} ({p:?})");
            }
            Ok(())
        };
        cmp("dq", &g.dq, &fd(&|xx| &mut xx.q, x.q.numel()))?;
        cmp("dk", &g.dk, &fd(&|xx| &mut xx.k, x.k.numel()))?;
        cmp("dv", &g.dv, &fd(&|xx| &mut xx.v, x.v.numel()))?;
        if let Some(db) = &g.dbias {
            cmp("dbias", db, &fd(&|xx| xx.bias.as_mut().unwrap(), x.bias.as_ref().unwrap().numel()))?;
        }
    }
}

/// f32 / f16 / bf16 inputs with D != Dv, checked deterministically (the strategies also cover them).
#[test]
fn every_dtype_and_head_dim_pair() {
    for dt in Dtype::ALL {
        for (d, dv) in [(8, 8), (8, 16), (32, 8), (64, 128), (256, 8)] {
            let p = Problem::new(dt, 2, 19, 37, 4, 2, d, dv)
                .with_mask(Mask::Window {
                    left: Some(5),
                    right: Some(2),
                    align: Align::TopLeft,
                })
                .with_dropout(0.2, 11, 3);
            let x = Inputs::random(&p, 5, 2.0);
            let t = forward(&p, &x).unwrap();
            let (tol, _) = lowp_tol(&p, &x);
            for (bm, bn) in [(1, 1), (16, 16), (64, 128)] {
                let b = forward_blocked(&p, &x, bm, bn).unwrap();
                for (a, e) in b.out.iter().zip(&t.out) {
                    assert!(
                        (*a as f64 - e).abs() <= tol,
                        "{dt} D={d} Dv={dv}: {a} vs {e}"
                    );
                }
            }
        }
    }
}

/// The forward's dropout mask equals the whole-tensor generator, and the output uses it.
#[test]
fn forward_mask_is_the_generator() {
    let p = Problem::varlen(Dtype::Bf16, &[(5, 9), (0, 3), (7, 2)], 2, 1, 8, 8).with_dropout(
        0.3,
        77,
        1 << 40,
    );
    let x = Inputs::random(&p, 1, 1.0);
    let f = forward_with_mask(&p, &x).unwrap();
    assert_eq!(f.dropout_mask, dropout::mask_tensor(&p));
}

/// The pass rule flags NaN/Inf where the truth is finite, and -inf LSE parity, and prints the location.
#[test]
fn pass_rule_reports() {
    let truth = [0.5, -1.0, 2.0, 0.0];
    let lowp = [0.5f32, -1.0, 2.001, 0.0];
    let r = attn_ref::check(&[0.5, f32::NAN, 2.0, 0.0], &truth, &lowp)
        .named("out")
        .with_shape(&[2, 2]);
    assert!(!r.passed());
    assert_eq!(r.nonfinite_mismatches, 1);
    let s = r.to_string();
    assert!(s.contains("FAIL out") && s.contains("[0, 1]"), "{s}");
    let ok = attn_ref::check(&[0.5, -1.0, 2.0015, 0.0], &truth, &lowp);
    assert!(ok.passed(), "{ok}");
    let bad = attn_ref::check(&[0.5, -1.0, 2.003, 0.0], &truth, &lowp);
    assert!(!bad.passed());
    assert_eq!(bad.worst_index, Some(2));
}

/// B=2, Hq=8, Sq=Sk=1024, D=128 forward + backward (run with `--ignored`; timing in the crate docs).
#[test]
#[ignore]
fn perf_reference_1024() {
    let p = Problem::new(Dtype::Bf16, 2, 1024, 1024, 8, 8, 128, 128).with_mask(Mask::None);
    let x = Inputs::random(&p, 1, 1.0);
    let dout = dout_for(&p, 2);
    let t0 = std::time::Instant::now();
    let f = forward(&p, &x).unwrap();
    let t1 = t0.elapsed();
    let g = backward(&p, &x, &dout, &f.out, &f.lse, false).unwrap();
    let t2 = t0.elapsed();
    eprintln!(
        "forward {t1:?}, forward + backward {t2:?} on {} threads",
        rayon::current_num_threads()
    );
    assert!(g.dq.iter().all(|v| v.is_finite()));
}

/// Strided views (BHMK memory for q, k, v; a transposed, partly broadcast bias) give the same answer as BMHK.
#[test]
fn strided_layouts_match_contiguous() {
    let p = Problem::new(Dtype::F16, 2, 7, 9, 4, 2, 8, 16)
        .with_bias(Dtype::F32, [false; 4])
        .with_mask(Mask::Causal {
            align: Align::TopLeft,
        });
    let x = Inputs::random(&p, 9, 1.0);
    let bhmk = |t: &Tensor| {
        let [b, s, h, d] = t.shape;
        let mut data = vec![0.0; t.numel()];
        for bb in 0..b {
            for ss in 0..s {
                for hh in 0..h {
                    for dd in 0..d {
                        data[((bb * h + hh) * s + ss) * d + dd] = t.get([bb, ss, hh, dd]);
                    }
                }
            }
        }
        Tensor::with_strides(t.dtype, t.shape, [h * s * d, d, s * d, 1], data).unwrap()
    };
    let b = x.bias.as_ref().unwrap();
    let [nb, hq, sq, sk] = b.shape;
    // Bias stored as [Sk, Sq] per batch, broadcast over heads (stride 0): use head 0's values.
    let mut bdata = vec![0.0; nb * sq * sk];
    for bb in 0..nb {
        for i in 0..sq {
            for j in 0..sk {
                bdata[(bb * sk + j) * sq + i] = b.get([bb, 0, i, j]);
            }
        }
    }
    let bias_t =
        Tensor::with_strides(Dtype::F32, [nb, hq, sq, sk], [sq * sk, 0, 1, sq], bdata).unwrap();
    let xc = Inputs {
        bias: Some(Tensor::from_fn(
            Dtype::F32,
            [nb, hq, sq, sk],
            |[bb, _, i, j]| b.get([bb, 0, i, j]),
        )),
        ..x.clone()
    };
    let xs = Inputs {
        q: bhmk(&x.q),
        k: bhmk(&x.k),
        v: bhmk(&x.v),
        bias: Some(bias_t),
    };
    let dout = Tensor::from_fn(Dtype::F16, p.out_shape(), |[a, s, h, d]| {
        ((a + 2 * s + 3 * h + d) % 7) as f32 - 3.0
    });
    let fc = forward(&p, &xc).unwrap();
    let fs = forward(&p, &xs).unwrap();
    assert_eq!(fc, fs);
    assert_eq!(
        forward_blocked(&p, &xc, 4, 4).unwrap(),
        forward_blocked(&p, &xs, 4, 4).unwrap()
    );
    let gc = backward(&p, &xc, &dout, &fc.out, &fc.lse, true).unwrap();
    let gs = backward(&p, &xs, &bhmk(&dout), &fs.out, &fs.lse, true).unwrap();
    assert_eq!(gc, gs);
}

/// Bad input is a typed error, never a panic.
#[test]
fn invalid_arguments_are_errors() {
    let p = Problem::new(Dtype::F32, 1, 3, 3, 3, 2, 4, 4);
    assert!(matches!(
        p.validate(),
        Err(attn_ref::Error::InvalidArgument {
            what: "heads_k",
            ..
        })
    ));
    let p = Problem::new(Dtype::F32, 1, 3, 3, 2, 1, 4, 4).with_dropout(1.0, 0, 0);
    assert!(matches!(
        p.validate(),
        Err(attn_ref::Error::InvalidArgument {
            what: "dropout p",
            ..
        })
    ));
    let p = Problem::new(Dtype::F32, 1, 3, 3, 2, 1, 4, 4).with_dropout(f64::NAN, 0, 0);
    assert!(p.validate().is_err());
    let mut p = Problem::varlen(Dtype::F32, &[(2, 2), (1, 1)], 2, 1, 4, 4);
    p.varlen.as_mut().unwrap().cu_seqlens_q = vec![0, 2, 1];
    assert!(p.validate().is_err());
    let p = Problem::new(Dtype::F32, 1, 3, 3, 2, 1, 4, 4);
    let mut x = Inputs::random(&p, 0, 1.0);
    x.k = Tensor::zeros(Dtype::F32, [1, 4, 1, 4]);
    assert!(forward(&p, &x).is_err());
    assert!(forward_blocked(&p, &Inputs::random(&p, 0, 1.0), 0, 4).is_err());
    assert!(Tensor::with_strides(Dtype::F32, [1, 2, 2, 2], [8, 4, 2, 1], vec![0.0; 7]).is_err());
}
