//! Forward kernels on a GPU against `attn-ref` under the pass rule, for every dtype, head dim
//! and mask, on ragged sizes with `Sq != Sk`, and for every optional feature (varlen,
//! `seqused_k`, bias, ALiBi, softcap, dropout with its mask) alone and combined. Skips (printing
//! why) without a GPU.
use attn_ref::{Align, Dtype, Mask, Problem};
use attn_tests::{FwdCase, Layout, device_or_skip, run_fwd};

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

/// BMHK for even `i`, BHMK for odd.
fn layout(i: usize) -> Layout {
    if i.is_multiple_of(2) {
        Layout::Bmhk
    } else {
        Layout::Bhmk
    }
}

const DTYPES: [Dtype; 3] = [Dtype::F16, Dtype::Bf16, Dtype::F32];
/// Every head-dim bucket, and two `D != Dv` pairs.
const DIMS: [(usize, usize); 6] = [
    (32, 32),
    (64, 64),
    (128, 128),
    (256, 256),
    (64, 128),
    (128, 40),
];

/// Ragged varlen lengths `(Sq_b, Sk_b)` with empty sequences (no queries, no keys, neither).
const RAGGED: [(usize, usize); 7] = [
    (17, 33),
    (0, 5),
    (100, 1),
    (3, 0),
    (55, 55),
    (0, 0),
    (1, 130),
];

/// Standard ALiBi slopes `2^(-8 (h + 1) / Hq)` for `nb` sequences, each sequence's scaled
/// differently when `per_batch`.
fn slopes(nb: usize, hq: usize, per_batch: bool) -> Vec<f32> {
    let head = |h: usize| 2f32.powf(-8.0 * (h + 1) as f32 / hq as f32);
    if per_batch {
        (0..nb * hq)
            .map(|i| head(i % hq) * (1.0 + (i / hq) as f32 * 0.5))
            .collect()
    } else {
        (0..hq).map(head).collect()
    }
}

fn check_all(name: &str, cases: Vec<FwdCase>) {
    attn_tests::check_cases(name, 0x5EED_0000, &cases);
}

fn every_dtype_head_dim_and_mask_cases() -> Vec<FwdCase> {
    let mut cases = Vec::new();
    for dtype in [Dtype::F16, Dtype::Bf16, Dtype::F32] {
        for d in [64, 128] {
            for (i, mask) in masks().into_iter().enumerate() {
                for (sq, sk) in [(1, 1), (17, 100), (100, 17), (1000, 1000), (129, 1000)] {
                    let (hq, hk) = [(2, 2), (4, 1), (6, 2)][i % 3];
                    let p = Problem::new(dtype, 1 + (sq < 200) as usize, sq, sk, hq, hk, d, d)
                        .with_mask(mask);
                    cases.push(FwdCase::new(p, layout(i)));
                }
            }
        }
    }
    cases
}

#[test]
fn every_dtype_head_dim_and_mask() {
    check_all(
        "fwd: dtypes x head dims x masks",
        every_dtype_head_dim_and_mask_cases(),
    );
}

fn other_head_dims_and_d_ne_dv_cases() -> Vec<FwdCase> {
    let mut cases = Vec::new();
    for dtype in [Dtype::F16, Dtype::Bf16, Dtype::F32] {
        for (d, dv) in [
            (32, 32),
            (40, 40),
            (96, 96),
            (256, 256),
            (64, 128),
            (128, 40),
            (8, 256),
        ] {
            let p = Problem::new(dtype, 2, 77, 131, 4, 2, d, dv).with_mask(Mask::Causal {
                align: Align::BottomRight,
            });
            cases.push(FwdCase::new(p, Layout::Bmhk));
        }
    }
    cases
}

#[test]
fn other_head_dims_and_d_ne_dv() {
    check_all(
        "fwd: head dims, D != Dv",
        other_head_dims_and_d_ne_dv_cases(),
    );
}

fn custom_scale_and_large_logits_stay_finite_cases() -> Vec<FwdCase> {
    [0.02f32, 1.0, 30.0, 0.0, -0.5]
        .into_iter()
        .map(|s| {
            FwdCase::new(
                Problem::new(Dtype::Bf16, 1, 65, 300, 2, 1, 64, 64).with_scale(s),
                Layout::Bmhk,
            )
        })
        .collect()
}

#[test]
fn custom_scale_and_large_logits_stay_finite() {
    check_all(
        "fwd: custom scale",
        custom_scale_and_large_logits_stay_finite_cases(),
    );
}

fn varlen_ragged_with_empty_sequences_cases() -> Vec<FwdCase> {
    let mut cases = Vec::new();
    for dtype in DTYPES {
        for (n, (d, dv)) in DIMS.into_iter().enumerate() {
            for (i, mask) in masks().into_iter().enumerate() {
                let (hq, hk) = [(2, 2), (4, 1), (6, 2)][(n + i) % 3];
                let p = Problem::varlen(dtype, &RAGGED, hq, hk, d, dv).with_mask(mask);
                cases.push(FwdCase::new(p, Layout::Bmhk));
            }
        }
        // One sequence, and only empty sequences.
        let p = Problem::varlen(dtype, &[(300, 200)], 2, 1, 64, 64).with_mask(Mask::Causal {
            align: Align::BottomRight,
        });
        cases.push(FwdCase::new(p, Layout::Bhmk));
        let p = Problem::varlen(dtype, &[(0, 3), (4, 0), (0, 0)], 2, 1, 64, 64);
        cases.push(FwdCase::new(p, Layout::Bmhk));
    }
    cases
}

#[test]
fn varlen_ragged_with_empty_sequences() {
    check_all(
        "fwd: varlen, ragged lengths",
        varlen_ragged_with_empty_sequences_cases(),
    );
}

fn seqused_k_in_batch_and_varlen_mode_cases() -> Vec<FwdCase> {
    let mut cases = Vec::new();
    for dtype in DTYPES {
        for (i, mask) in masks().into_iter().enumerate() {
            let p = Problem::new(dtype, 3, 40, 130, 4, 2, 64, 64)
                .with_seqused_k(vec![130, 0, 37])
                .with_mask(mask);
            cases.push(FwdCase::new(p, layout(i)));
            let p = Problem::varlen(dtype, &RAGGED, 4, 2, 128, 128)
                .with_seqused_k(vec![20, 5, 0, 0, 55, 0, 64])
                .with_mask(mask);
            cases.push(FwdCase::new(p, Layout::Bmhk));
        }
    }
    cases
}

#[test]
fn seqused_k_in_batch_and_varlen_mode() {
    check_all("fwd: seqused_k", seqused_k_in_batch_and_varlen_mode_cases());
}

fn bias_broadcast_patterns_in_both_dtypes_cases() -> Vec<FwdCase> {
    // Full, and broadcast over batch / heads / both / rows / keys / all but keys.
    let patterns = [
        [false; 4],
        [true, false, false, false],
        [false, true, false, false],
        [true, true, false, false],
        [false, false, true, false],
        [false, false, false, true],
        [true, true, true, false],
    ];
    let mut cases = Vec::new();
    for dtype in DTYPES {
        let bias_dtypes: &[Dtype] = if dtype == Dtype::F32 {
            &[Dtype::F32]
        } else {
            &[dtype, Dtype::F32]
        };
        for &bdt in bias_dtypes {
            for (i, bc) in patterns.into_iter().enumerate() {
                let (d, dv) = DIMS[i % DIMS.len()];
                let mask = masks()[i % 5];
                let p = Problem::new(dtype, 2, 37, 70, 4, 2, d, dv)
                    .with_bias(bdt, bc)
                    .with_mask(mask);
                cases.push(FwdCase::new(p, layout(i)));
                let p = Problem::varlen(dtype, &RAGGED, 4, 2, d, dv)
                    .with_bias(bdt, bc)
                    .with_mask(mask);
                cases.push(FwdCase::new(p, Layout::Bmhk));
            }
        }
    }
    cases
}

#[test]
fn bias_broadcast_patterns_in_both_dtypes() {
    check_all("fwd: bias", bias_broadcast_patterns_in_both_dtypes_cases());
}

fn dropout_with_host_and_device_seeds_cases() -> Vec<FwdCase> {
    let mut cases = Vec::new();
    for dtype in DTYPES {
        for (n, (d, dv)) in DIMS.into_iter().enumerate() {
            for p_drop in [0.1, 0.5] {
                for device_rng in [false, true] {
                    // An offset just below 2^32, so that `offset + b * Hq + h` carries into the
                    // counter's high word.
                    let (seed, offset) = (0x0123_4567_89AB_CDEF ^ n as u64, (1u64 << 32) - 3);
                    let mask = masks()[n % 5];
                    let p = Problem::new(dtype, 2, 65, 130, 4, 2, d, dv)
                        .with_dropout(p_drop, seed, offset)
                        .with_mask(mask);
                    let mut c = FwdCase::new(p, layout(n));
                    c.device_rng = device_rng;
                    cases.push(c);
                    let p = Problem::varlen(dtype, &RAGGED, 4, 2, d, dv)
                        .with_dropout(p_drop, seed, offset)
                        .with_mask(mask);
                    let mut c = FwdCase::new(p, Layout::Bmhk);
                    c.device_rng = device_rng;
                    cases.push(c);
                }
            }
        }
    }
    cases
}

#[test]
fn dropout_with_host_and_device_seeds() {
    check_all("fwd: dropout", dropout_with_host_and_device_seeds_cases());
}

fn alibi_per_head_and_per_batch_cases() -> Vec<FwdCase> {
    let aligned = [
        Mask::Causal {
            align: Align::BottomRight,
        },
        Mask::Causal {
            align: Align::TopLeft,
        },
        Mask::None, // ALiBi is bottom-right aligned without a mask
        Mask::Window {
            left: Some(16),
            right: Some(4),
            align: Align::TopLeft,
        },
    ];
    let mut cases = Vec::new();
    for dtype in DTYPES {
        for (i, mask) in aligned.into_iter().enumerate() {
            for per_batch in [false, true] {
                let (d, dv) = DIMS[(i + per_batch as usize) % DIMS.len()];
                for (sq, sk) in [(50, 80), (80, 50)] {
                    let p = Problem::new(dtype, 2, sq, sk, 4, 2, d, dv)
                        .with_alibi(slopes(2, 4, per_batch), per_batch)
                        .with_mask(mask);
                    cases.push(FwdCase::new(p, layout(i)));
                }
                let p = Problem::varlen(dtype, &RAGGED, 4, 2, d, dv)
                    .with_alibi(slopes(RAGGED.len(), 4, per_batch), per_batch)
                    .with_mask(mask);
                cases.push(FwdCase::new(p, Layout::Bmhk));
            }
        }
    }
    cases
}

#[test]
fn alibi_per_head_and_per_batch() {
    check_all("fwd: ALiBi", alibi_per_head_and_per_batch_cases());
}

fn softcap_alone_and_with_bias_and_dropout_cases() -> Vec<FwdCase> {
    let mut cases = Vec::new();
    for dtype in DTYPES {
        for (i, (d, dv)) in DIMS.into_iter().enumerate() {
            for cap in [1.0, 30.0] {
                let p = Problem::new(dtype, 2, 45, 90, 4, 2, d, dv)
                    .with_softcap(cap)
                    .with_scale(0.5) // large logits, so that the cap bites
                    .with_mask(masks()[i % 5]);
                cases.push(FwdCase::new(p.clone(), layout(i)));
                let p = p
                    .with_bias(Dtype::F32, [false, true, false, false])
                    .with_dropout(0.2, 99 + i as u64, 7);
                cases.push(FwdCase::new(p, layout(i + 1)));
            }
        }
    }
    cases
}

#[test]
fn softcap_alone_and_with_bias_and_dropout() {
    check_all(
        "fwd: softcap",
        softcap_alone_and_with_bias_and_dropout_cases(),
    );
}

fn every_feature_together_cases() -> Vec<FwdCase> {
    let mut cases = Vec::new();
    for dtype in DTYPES {
        for (i, (d, dv)) in DIMS.into_iter().enumerate() {
            let mask = Mask::Window {
                left: Some(40),
                right: Some(3),
                align: if i.is_multiple_of(2) {
                    Align::BottomRight
                } else {
                    Align::TopLeft
                },
            };
            let bias_dtype = if i.is_multiple_of(2) {
                dtype
            } else {
                Dtype::F32
            };
            // Varlen, GQA 3:1.
            let p = Problem::varlen(dtype, &RAGGED, 6, 2, d, dv)
                .with_mask(mask)
                .with_seqused_k(vec![30, 5, 1, 0, 50, 0, 100])
                .with_bias(bias_dtype, [false, true, false, false])
                .with_alibi(slopes(RAGGED.len(), 6, true), true)
                .with_softcap(20.0)
                .with_dropout(0.3, 0xD20F + i as u64, 1 << 40);
            cases.push(FwdCase::new(p, Layout::Bmhk).with_device_rng());
            // Batch mode, MQA, both layouts.
            let p = Problem::new(dtype, 3, 77, 131, 4, 1, d, dv)
                .with_mask(mask)
                .with_seqused_k(vec![131, 64, 1])
                .with_bias(bias_dtype, [true, false, false, false])
                .with_alibi(slopes(3, 4, false), false)
                .with_softcap(20.0)
                .with_dropout(0.3, 0xD20F + i as u64, 5);
            cases.push(FwdCase::new(p.clone(), layout(i)));
            cases.push(FwdCase::new(p, layout(i + 1)).with_device_rng());
        }
    }
    cases
}

#[test]
fn every_feature_together() {
    check_all(
        "fwd: every feature together",
        every_feature_together_cases(),
    );
}

fn empty_problems_cases() -> Vec<FwdCase> {
    let mut cases = Vec::new();
    for dtype in DTYPES {
        // No query rows in a batch of 2 (nothing is launched), and no keys (O = 0, lse = -inf:
        // the pass rule checks both against the poisoned outputs).
        for (sq, sk) in [(0, 5), (0, 0), (7, 0)] {
            let p = Problem::new(dtype, 2, sq, sk, 2, 2, 64, 64);
            cases.push(FwdCase::new(p.clone(), Layout::Bmhk));
            cases.push(FwdCase::new(
                p.with_dropout(0.5, 3, 4).with_bias(Dtype::F32, [false; 4]),
                Layout::Bhmk,
            ));
        }
    }
    cases
}

#[test]
fn empty_problems_write_nothing_or_empty_rows() {
    check_all("fwd: empty problems", empty_problems_cases());

    // The convenience call.
    let Some(dev) = device_or_skip("fwd: empty problems through attn_host::forward") else {
        return;
    };
    let stream = dev.default_stream();
    let one = |n: usize| dev.alloc::<half::f16>(n.max(1)).expect("alloc");
    // B = 2, Sq = 0.
    let (q, k, v) = (one(0), one(2 * 5 * 2 * 64), one(2 * 5 * 2 * 64));
    let opts = attn_host::FwdOptions::default();
    let r = attn_host::forward(
        &stream,
        (&q, [2, 0, 2, 64]),
        (&k, [2, 5, 2, 64]),
        (&v, [2, 5, 2, 64]),
        &opts,
    );
    assert!(r.is_ok(), "B = 2, Sq = 0: {:?}", r.err());
    // B = 2, Sk = 0: O = 0 and lse = -inf.
    let (q, k, v) = (one(2 * 7 * 2 * 64), one(0), one(0));
    let (out, lse) = attn_host::forward(
        &stream,
        (&q, [2, 7, 2, 64]),
        (&k, [2, 0, 2, 64]),
        (&v, [2, 0, 2, 64]),
        &opts,
    )
    .expect("B = 2, Sk = 0");
    stream.synchronize().expect("sync");
    let out = out.to_host(&stream).expect("out");
    let lse = lse.to_host(&stream).expect("lse");
    assert_eq!((out.len(), lse.len()), (2 * 7 * 2 * 64, 2 * 2 * 7));
    assert!(out.iter().all(|x| x.to_f32() == 0.0), "O must be 0");
    assert!(
        lse.iter().all(|&l| l == f32::NEG_INFINITY),
        "lse must be -inf"
    );
}

/// Host-only (runs everywhere): every case above is valid for the reference and the harness
/// passes it to the host API in a form `Forward::plan` accepts, with the kernel variant and the
/// dropout-mask launch the case's features call for.
#[test]
fn every_gpu_case_plans_on_the_host() {
    use attn_abi::{FwdVariant, KernelId};
    use attn_tests::{Family, plan_fwd};
    let all = [
        (
            "every_dtype_head_dim_and_mask",
            every_dtype_head_dim_and_mask_cases(),
        ),
        (
            "other_head_dims_and_d_ne_dv",
            other_head_dims_and_d_ne_dv_cases(),
        ),
        (
            "custom_scale_and_large_logits_stay_finite",
            custom_scale_and_large_logits_stay_finite_cases(),
        ),
        (
            "varlen_ragged_with_empty_sequences",
            varlen_ragged_with_empty_sequences_cases(),
        ),
        (
            "seqused_k_in_batch_and_varlen_mode",
            seqused_k_in_batch_and_varlen_mode_cases(),
        ),
        (
            "bias_broadcast_patterns_in_both_dtypes",
            bias_broadcast_patterns_in_both_dtypes_cases(),
        ),
        (
            "dropout_with_host_and_device_seeds",
            dropout_with_host_and_device_seeds_cases(),
        ),
        (
            "alibi_per_head_and_per_batch",
            alibi_per_head_and_per_batch_cases(),
        ),
        (
            "softcap_alone_and_with_bias_and_dropout",
            softcap_alone_and_with_bias_and_dropout_cases(),
        ),
        ("every_feature_together", every_feature_together_cases()),
        ("empty_problems", empty_problems_cases()),
    ];
    let mut n = 0;
    for (name, cases) in all {
        for (i, case) in cases.iter().enumerate() {
            let p = &case.problem;
            for family in [Family::Sm80, Family::Sm90, Family::Cdna, Family::Rdna3] {
                let plan = match plan_fwd(case, i as u64, family) {
                    // A few feature kernels are not built for a family (policy::instantiated).
                    Err(e) if e.contains("is not built for") => continue,
                    r => {
                        r.unwrap_or_else(|e| panic!("{name} case {i} {case:?} on {family:?}: {e}"))
                    }
                };
                let pieces = p.bias.is_some()
                    || p.alibi.is_some()
                    || p.softcap > 0.0
                    || p.dropout.is_some_and(|d| d.p > 0.0);
                let KernelId::Fwd { variant, .. } = plan.kernel else {
                    panic!("{name} case {i}: not a forward kernel: {:?}", plan.kernel)
                };
                assert_eq!(variant == FwdVariant::Pieces, pieces, "{name} case {i}");
                let mask_elems: usize = p.bias_shape().iter().product();
                assert_eq!(
                    plan.mask_grid.is_some(),
                    p.dropout.is_some_and(|d| d.p > 0.0) && mask_elems > 0,
                    "{name} case {i}"
                );
                assert_eq!(plan.params.batch as usize, p.nseq(), "{name} case {i}");
            }
            n += 1;
        }
    }
    eprintln!("{n} GPU cases plan on the host");
}

/// Host-only: the reference runs the empty problems (B = 2 with no queries or no keys) and gives
/// O = 0, lse = -inf where there are no keys.
#[test]
fn the_reference_handles_empty_problems() {
    for case in empty_problems_cases() {
        let p = &case.problem;
        let x = attn_ref::Inputs::random(p, 1, 1.0);
        let truth = attn_ref::forward(p, &x).expect("reference");
        attn_ref::forward_blocked(p, &x, 64, 32).expect("blocked reference");
        assert!(truth.out.iter().all(|&o| o == 0.0));
        assert!(truth.lse.iter().all(|&l| l == f64::NEG_INFINITY));
        assert_eq!(truth.lse.len(), p.lse_len());
    }
}

mod properties {
    use super::*;
    use attn_ref::strategy::{Config, problem};
    use attn_tests::{Family, plan_fwd};
    use proptest::prelude::*;

    /// One device for every case (opening a context per case would dominate the run).
    fn device() -> Option<&'static attn_host::Device> {
        attn_tests::shared_device("fwd: proptest over attn-ref strategies")
    }

    proptest! {
        #![proptest_config(attn_tests::proptest_config(attn_tests::proptest_cases(64)))]

        /// Whole random problems from `attn-ref`'s strategies with every feature enabled (every
        /// mask, GQA ratio, ragged and unequal lengths, odd head dims, custom scales, varlen with
        /// empty sequences, `seqused_k`, broadcast bias in q's dtype or f32, ALiBi, softcap,
        /// dropout with host or device seeds and its mask), BMHK and BHMK layouts, fresh inputs
        /// per case.
        #[test]
        fn random_problems_match_the_reference(
            p in problem(&Config { max_seqlen: 300, max_window: 40, ..Config::default() }),
            bhmk in any::<bool>(),
            device_rng in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let Some(dev) = device() else { return Ok(()) };
            let case = FwdCase {
                problem: p,
                layout: if bhmk { Layout::Bhmk } else { Layout::Bmhk },
                device_rng,
                decode: Default::default(),
                backward: None,
            };
            let o = match run_fwd(dev, &case, seed) {
                // Not built for this target (policy::instantiated): a typed error, not a result.
                Err(e) if e.contains("is not built for") => return Ok(()),
                r => r.map_err(TestCaseError::fail)?,
            };
            prop_assert!(o.passed(), "{:?} seed {seed}:\n{}", case, o);
        }
    }

    proptest! {
        #![proptest_config(attn_tests::proptest_config(256))]

        /// Host-only: every problem the strategies draw (all features) is passed to the host
        /// API in a form `Forward::plan` accepts, on every tile family.
        #[test]
        fn random_problems_plan_on_the_host(
            p in problem(&Config { max_seqlen: 300, max_window: 40, ..Config::default() }),
            bhmk in any::<bool>(),
            device_rng in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let case = FwdCase {
                problem: p,
                layout: if bhmk { Layout::Bhmk } else { Layout::Bmhk },
                device_rng,
                decode: Default::default(),
                backward: None,
            };
            for family in [Family::Sm80, Family::Sm90, Family::Cdna, Family::Rdna3] {
                let plan = match plan_fwd(&case, seed, family) {
                    Err(e) if e.contains("is not built for") => continue,
                    r => r.map_err(TestCaseError::fail)?,
                };
                prop_assert_eq!(plan.params.batch as usize, case.problem.nseq());
            }
        }

        /// Host-only: the same problems without bias or dropout (what `attn check` pages), over
        /// a random paged cache, plan on the decode kernels of every family that builds them.
        #[test]
        fn random_paged_problems_plan_on_the_host(
            p in problem(&Config { max_seqlen: 300, max_window: 40, ..Config::default() }),
            page in 0usize..4,
            seed in any::<u64>(),
        ) {
            let pageable = p.bias.is_none() && p.dropout.is_none_or(|d| d.p == 0.0);
            prop_assume!(pageable);
            let case = FwdCase::new(p, Layout::Bmhk).with_decode(attn_tests::DecodeOpts {
                paged: Some(attn_ref::paged::PagedConfig {
                    page_size: [16, 48, 64, 256][page],
                    ..Default::default()
                }),
                ..Default::default()
            });
            for family in [Family::Sm80, Family::Sm90, Family::Cdna, Family::Rdna3] {
                let plan = match plan_fwd(&case, seed, family) {
                    Err(e) if e.contains("is not built for") => continue,
                    r => r.map_err(TestCaseError::fail)?,
                };
                let decode = matches!(
                    plan.kernel,
                    attn_host::KernelId::Fwd { variant: attn_abi::FwdVariant::Decode, .. }
                );
                prop_assert!(decode, "{:?}", plan.kernel);
                prop_assert_eq!(plan.params.flags & attn_abi::FLAG_PAGED, attn_abi::FLAG_PAGED);
            }
        }
    }
}
