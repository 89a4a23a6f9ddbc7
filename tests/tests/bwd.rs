//! The backward on a GPU against `attn-ref` under the pass rule (semantics.md §5-6): every
//! dtype, head dims 8 to 256 with `D != Dv`, every mask kind and alignment, GQA ratios 1-8,
//! ragged and unequal lengths, varlen with empty sequences, `seqused_k`, bias broadcast and full
//! with `dbias`, dropout, ALiBi, softcap, both layouts, `zero_tensors`, and determinism (20
//! repeats, bit for bit). Each case runs the forward first and differentiates that very call.
//! Skips (printing why) without a GPU.
use attn_ref::{Align, Dtype, Mask, Problem};
use attn_tests::{BwdOpts, FwdCase, Layout, check_cases};

/// The default backward (`deterministic = false`: the fused kernel where it is built).
fn bwd(p: Problem, layout: Layout, dbias: bool) -> FwdCase {
    bwd_det(p, layout, dbias, false)
}

fn bwd_det(p: Problem, layout: Layout, dbias: bool, deterministic: bool) -> FwdCase {
    FwdCase::new(p, layout).with_backward(BwdOpts {
        dbias,
        zero_tensors: false,
        repeats: 0,
        deterministic,
    })
}

fn masks() -> [Mask; 5] {
    [
        Mask::None,
        Mask::Causal {
            align: Align::TopLeft,
        },
        Mask::Causal {
            align: Align::BottomRight,
        },
        Mask::Window {
            left: Some(7),
            right: Some(3),
            align: Align::BottomRight,
        },
        Mask::Window {
            left: None,
            right: Some(5),
            align: Align::TopLeft,
        },
    ]
}

const DTYPES: [Dtype; 3] = [Dtype::F16, Dtype::Bf16, Dtype::F32];

#[test]
fn backward_dtypes_head_dims_and_masks() {
    let mut cases = Vec::new();
    let dims = [
        (8, 8),
        (32, 32),
        (64, 64),
        (128, 128),
        (256, 256),
        (64, 128),
        (128, 40),
        (96, 72),
    ];
    for (n, dt) in DTYPES.into_iter().enumerate() {
        for (i, &(d, dv)) in dims.iter().enumerate() {
            let mask = masks()[(i + n) % 5];
            let (sq, sk) = [(17, 100), (129, 33), (64, 64), (1, 77), (100, 129)][(i + 2 * n) % 5];
            let layout = if (i + n) % 2 == 0 {
                Layout::Bmhk
            } else {
                Layout::Bhmk
            };
            // Every other case on the deterministic kernels, the rest on the default (fused).
            cases.push(bwd_det(
                Problem::new(dt, 2, sq, sk, 4, [1, 2, 4][i % 3], d, dv).with_mask(mask),
                layout,
                false,
                i % 2 == 1,
            ));
        }
    }
    check_cases("backward_dtypes_head_dims_and_masks", 0xb0, &cases);
}

#[test]
fn backward_gqa_ragged_and_long() {
    let mut cases = Vec::new();
    for (i, (hq, hk)) in [(8, 1), (8, 2), (6, 3), (8, 8)].into_iter().enumerate() {
        for (j, (sq, sk)) in [(1, 1), (17, 1000), (1000, 17), (129, 129)]
            .into_iter()
            .enumerate()
        {
            let dt = DTYPES[(i + j) % 3];
            let mask = masks()[(i + 2 * j) % 5];
            cases.push(bwd_det(
                Problem::new(dt, 1, sq, sk, hq, hk, 64, 64).with_mask(mask),
                Layout::Bmhk,
                false,
                (i + j) % 2 == 1,
            ));
        }
    }
    // One key for every row (P = 1): the truth's dq and dk are exactly 0, and so must be ours
    // up to the pass rule's 1e-6 floor however many rows and group heads sum into dk.
    for (n, dt) in DTYPES.into_iter().enumerate() {
        for (sq, d) in [(70, 40), (1000, 64), (333, 128)] {
            cases.push(bwd(
                Problem::new(dt, 2, sq, 1, 8, [1, 2, 8][n], d, d),
                [Layout::Bmhk, Layout::Bhmk][n % 2],
                false,
            ));
        }
    }
    check_cases("backward_gqa_ragged_and_long", 0xb1, &cases);
}

#[test]
fn backward_every_feature() {
    let ragged = [
        (17, 33),
        (0, 5),
        (100, 1),
        (3, 0),
        (55, 55),
        (0, 0),
        (1, 130),
    ];
    let mut cases = Vec::new();
    for (n, dt) in DTYPES.into_iter().enumerate() {
        let nseq = ragged.len();
        // Varlen with empty sequences, seqused_k, a bias broadcast over heads (its own dtype),
        // per-sequence ALiBi, softcap, dropout, causal bottom-right, GQA; with zero_tensors.
        let bias_dt = if n == 1 { Dtype::F32 } else { dt };
        let p = Problem::varlen(dt, &ragged, 4, 2, 64, 48)
            .with_mask(Mask::Causal {
                align: Align::BottomRight,
            })
            .with_seqused_k(vec![20, 5, 1, 0, 40, 0, 77])
            .with_bias(bias_dt, [false, true, false, false])
            .with_alibi(
                (0..nseq * 4).map(|i| 0.02 + 0.01 * i as f32).collect(),
                true,
            )
            .with_softcap(20.0)
            .with_dropout(0.2, 0x5eed + n as u64, 1000);
        cases.push(FwdCase::new(p, Layout::Bmhk).with_backward(BwdOpts {
            dbias: true,
            zero_tensors: true,
            repeats: 0,
            deterministic: false,
        }));
        // Batch mode: full bias with dbias, window, dropout, device Philox, BHMK.
        let p = Problem::new(dt, 2, 77, 130, 4, 1, 128, 128)
            .with_mask(Mask::Window {
                left: Some(30),
                right: Some(10),
                align: Align::TopLeft,
            })
            .with_bias(dt, [false; 4])
            .with_dropout(0.5, 77, 1 << 33);
        cases.push(bwd(p, Layout::Bhmk, true).with_device_rng());
        // Each piece alone.
        let base = Problem::new(dt, 2, 65, 97, 4, 2, 32, 32);
        cases.push(bwd(base.clone().with_softcap(5.0), Layout::Bmhk, false));
        cases.push(bwd(
            base.clone().with_alibi(vec![0.1, 0.2, 0.3, 0.4], false),
            Layout::Bmhk,
            false,
        ));
        cases.push(bwd(
            base.clone().with_dropout(0.1, 9, 0),
            Layout::Bmhk,
            false,
        ));
        cases.push(bwd(
            base.clone().with_bias(dt, [true, false, true, false]),
            Layout::Bmhk,
            true,
        ));
        cases.push(bwd(
            base.clone().with_seqused_k(vec![50, 0]),
            Layout::Bhmk,
            false,
        ));
        // D = 256 with every piece (two head-dim slices).
        let p = Problem::new(dt, 1, 40, 70, 2, 1, 256, 256)
            .with_mask(Mask::Causal {
                align: Align::BottomRight,
            })
            .with_bias(dt, [false, false, false, false])
            .with_softcap(10.0)
            .with_alibi(vec![0.1, 0.2], false)
            .with_dropout(0.3, 1, 2);
        cases.push(bwd(p, Layout::Bmhk, true));
    }
    check_cases("backward_every_feature", 0xb2, &cases);
}

#[test]
fn backward_is_deterministic() {
    let mut cases = Vec::new();
    for dt in [Dtype::Bf16, Dtype::F32] {
        let p = Problem::new(dt, 2, 200, 300, 8, 2, 64, 64)
            .with_mask(Mask::Causal {
                align: Align::BottomRight,
            })
            .with_bias(dt, [false, true, false, false])
            .with_dropout(0.1, 3, 4);
        cases.push(FwdCase::new(p, Layout::Bmhk).with_backward(BwdOpts {
            dbias: true,
            zero_tensors: false,
            repeats: 19,
            deterministic: true,
        }));
    }
    // The plain kernels (no pieces: their own, wider tiles) at both of their step widths.
    for (dt, d) in [(Dtype::F16, 64), (Dtype::Bf16, 128)] {
        let p = Problem::new(dt, 2, 150, 260, 8, 2, d, d).with_mask(Mask::Causal {
            align: Align::TopLeft,
        });
        cases.push(FwdCase::new(p, Layout::Bmhk).with_backward(BwdOpts {
            dbias: false,
            zero_tensors: false,
            repeats: 19,
            deterministic: true,
        }));
    }
    check_cases("backward_is_deterministic", 0xb3, &cases);
}

/// A few small cases with every piece, for `compute-sanitizer` (memcheck, racecheck) runs.
#[test]
fn backward_sanitizer_smoke() {
    let p16 = Problem::varlen(Dtype::F16, &[(17, 33), (0, 5), (40, 20)], 4, 2, 64, 64)
        .with_mask(Mask::Causal {
            align: Align::BottomRight,
        })
        .with_seqused_k(vec![30, 5, 11])
        .with_bias(Dtype::F16, [false, true, false, false])
        .with_softcap(10.0)
        .with_dropout(0.2, 5, 6);
    let pbf = Problem::new(Dtype::Bf16, 1, 70, 90, 2, 1, 128, 128)
        .with_bias(Dtype::F32, [false; 4])
        .with_alibi(vec![0.1, 0.3], false)
        .with_dropout(0.3, 1, 1);
    let p32 = Problem::new(Dtype::F32, 2, 33, 47, 2, 2, 64, 40).with_mask(Mask::Window {
        left: Some(5),
        right: Some(2),
        align: Align::TopLeft,
    });
    let cases = [
        FwdCase::new(p16, Layout::Bmhk).with_backward(BwdOpts {
            dbias: true,
            zero_tensors: true,
            repeats: 0,
            deterministic: false,
        }),
        bwd(pbf, Layout::Bhmk, true),
        bwd(p32, Layout::Bmhk, false),
        // The plain kernels' tiles (64 keys per dq step; 64 / 32 queries per dK + dV step).
        bwd(
            Problem::new(Dtype::Bf16, 2, 75, 140, 4, 2, 64, 64),
            Layout::Bmhk,
            false,
        ),
        bwd(
            Problem::new(Dtype::F16, 1, 130, 70, 2, 1, 128, 96).with_mask(Mask::Causal {
                align: Align::BottomRight,
            }),
            Layout::Bhmk,
            false,
        ),
        // The same shape on the deterministic plain kernels (the two above are fused).
        bwd_det(
            Problem::new(Dtype::F16, 1, 130, 70, 2, 1, 128, 96).with_mask(Mask::Causal {
                align: Align::BottomRight,
            }),
            Layout::Bhmk,
            false,
            true,
        ),
    ];
    check_cases("backward_sanitizer_smoke", 0xb4, &cases);
}

/// The convenience calls on owned buffers: `attn_host::forward`, then `attn_host::backward`, on a
/// causal bf16 problem, against the reference under the pass rule.
#[test]
fn backward_on_owned_buffers() {
    use attn_host::{Align as HAlign, FwdOptions, Mask as HMask};
    use half::bf16;
    let Some(dev) = attn_tests::device_or_skip("backward_on_owned_buffers") else {
        return;
    };
    let p = Problem::new(Dtype::Bf16, 2, 150, 150, 4, 2, 64, 64).with_mask(Mask::Causal {
        align: Align::BottomRight,
    });
    let x = attn_ref::Inputs::random(&p, 0xabc, 1.0);
    let mut s = 7u64;
    let dout = attn_ref::Tensor::from_fn(p.dtype, p.out_shape(), |_| {
        s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    });
    let up = |t: &attn_ref::Tensor| {
        let v: Vec<bf16> = t.to_contiguous().into_iter().map(bf16::from_f32).collect();
        dev.clone_htod(&v).unwrap()
    };
    let (q, k, v, d_o) = (up(&x.q), up(&x.k), up(&x.v), up(&dout));
    let stream = dev.default_stream();
    let opts = FwdOptions {
        mask: HMask::Causal(HAlign::BottomRight),
        ..Default::default()
    };
    let (qs, ks) = (p.q_shape(), p.k_shape());
    let (out, lse) = attn_host::forward(&stream, (&q, qs), (&k, ks), (&v, ks), &opts).unwrap();
    let (dq, dk, dv) = attn_host::backward(
        &stream,
        (&q, qs),
        (&k, ks),
        (&v, ks),
        &out,
        &lse,
        &d_o,
        &opts,
    )
    .unwrap();
    let host = |b: &attn_host::DeviceBuffer<bf16>| -> Vec<f32> {
        b.to_host(&stream)
            .unwrap()
            .into_iter()
            .map(f32::from)
            .collect()
    };
    let truth_f = attn_ref::forward(&p, &x).unwrap();
    let lowp_f = attn_ref::forward_blocked(&p, &x, 64, 64).unwrap();
    let truth = attn_ref::backward(&p, &x, &dout, &truth_f.out, &truth_f.lse, false).unwrap();
    let lowp = attn_ref::backward_blocked(&p, &x, &dout, &lowp_f.out, &lowp_f.lse, false).unwrap();
    for (name, got, t, l) in [
        ("dq", host(&dq), &truth.dq, &lowp.dq),
        ("dk", host(&dk), &truth.dk, &lowp.dk),
        ("dv", host(&dv), &truth.dv, &lowp.dv),
    ] {
        attn_ref::check(&got, t, l).named(name).assert_passed();
    }
}

mod properties {
    use super::*;
    use attn_ref::strategy::{Config, problem};
    use attn_tests::run_fwd;
    use proptest::prelude::*;

    /// One device for every case.
    fn device() -> Option<&'static attn_host::Device> {
        attn_tests::shared_device("bwd: proptest over attn-ref strategies")
    }

    proptest! {
        #![proptest_config(attn_tests::proptest_config(attn_tests::proptest_cases(48)))]

        /// Whole random problems from `attn-ref`'s strategies with every feature (every mask,
        /// GQA ratio, ragged lengths, odd head dims, scales, varlen with empty sequences,
        /// `seqused_k`, broadcast bias with or without `dbias`, ALiBi, softcap, dropout with host
        /// or device seeds), both layouts, `zero_tensors` or not: the forward, then its backward,
        /// judged against the f64 truth and the blocked low-precision backward.
        #[test]
        fn random_problems_backward_matches_the_reference(
            p in problem(&Config { max_seqlen: 200, max_window: 40, ..Config::default() }),
            bhmk in any::<bool>(),
            device_rng in any::<bool>(),
            dbias in any::<bool>(),
            zero_tensors in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let Some(dev) = device() else { return Ok(()) };
            let mut case = FwdCase::new(p, if bhmk { Layout::Bhmk } else { Layout::Bmhk })
                .with_backward(BwdOpts {
                dbias,
                zero_tensors,
                repeats: 0,
                deterministic: false,
            });
            if device_rng {
                case = case.with_device_rng();
            }
            let o = match run_fwd(dev, &case, seed) {
                // Not built for this target (a typed Unsupported), not a result.
                Err(e) if e.contains("is not built for") => return Ok(()),
                r => r.map_err(TestCaseError::fail)?,
            };
            prop_assert!(!o.grads.is_empty(), "{case:?}: no gradients were judged");
            prop_assert!(o.passed(), "{:?} seed {seed}:\n{}", case, o);
        }
    }
}
