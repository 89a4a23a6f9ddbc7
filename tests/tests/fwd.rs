//! Forward kernels on a GPU against `attn-ref` under the pass rule, for every dtype, head dim
//! and mask, on ragged sizes with `Sq != Sk`. Skips (printing why) without a GPU.
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

fn check_all(name: &str, cases: Vec<FwdCase>) {
    let Some(dev) = device_or_skip(name) else {
        return;
    };
    let mut failures = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let seed = 0x5EED_0000 + n as u64 * 7919 + std::process::id() as u64;
        match run_fwd(&dev, case, seed) {
            Ok(o) if o.passed() => {}
            Ok(o) => failures.push(format!("{:?} seed {seed}:\n{}\n{}", case, o.out, o.lse)),
            Err(e) => failures.push(format!("{case:?}: error {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!(
        "{name}: {} cases passed on {}",
        cases.len(),
        dev.info().name
    );
}

#[test]
fn every_dtype_head_dim_and_mask() {
    let mut cases = Vec::new();
    for dtype in [Dtype::F16, Dtype::Bf16, Dtype::F32] {
        for d in [64, 128] {
            for (i, mask) in masks().into_iter().enumerate() {
                for (sq, sk) in [(1, 1), (17, 100), (100, 17), (1000, 1000), (129, 1000)] {
                    let (hq, hk) = [(2, 2), (4, 1), (6, 2)][i % 3];
                    let p = Problem::new(dtype, 1 + (sq < 200) as usize, sq, sk, hq, hk, d, d)
                        .with_mask(mask);
                    cases.push(FwdCase {
                        problem: p,
                        layout: if i % 2 == 0 {
                            Layout::Bmhk
                        } else {
                            Layout::Bhmk
                        },
                    });
                }
            }
        }
    }
    check_all("fwd: dtypes x head dims x masks", cases);
}

#[test]
fn other_head_dims_and_d_ne_dv() {
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
            cases.push(FwdCase {
                problem: p,
                layout: Layout::Bmhk,
            });
        }
    }
    check_all("fwd: head dims, D != Dv", cases);
}

#[test]
fn custom_scale_and_large_logits_stay_finite() {
    let cases = [0.02f32, 1.0, 30.0, 0.0, -0.5]
        .into_iter()
        .map(|s| FwdCase {
            problem: Problem::new(Dtype::Bf16, 1, 65, 300, 2, 1, 64, 64).with_scale(s),
            layout: Layout::Bmhk,
        })
        .collect();
    check_all("fwd: custom scale", cases);
}

mod properties {
    use super::*;
    use attn_ref::strategy::{Config, problem};
    use proptest::prelude::*;
    use proptest::test_runner::FileFailurePersistence;
    use std::sync::OnceLock;

    /// One device for every case (opening a context per case would dominate the run).
    fn device() -> Option<&'static attn_host::Device> {
        static DEV: OnceLock<Option<attn_host::Device>> = OnceLock::new();
        DEV.get_or_init(|| device_or_skip("fwd: proptest over attn-ref strategies"))
            .as_ref()
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
            failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
            ..ProptestConfig::default()
        })]

        /// Whole random problems from `attn-ref`'s strategies (the forward kernels' features:
        /// every mask, GQA ratio, ragged and unequal lengths, odd head dims, custom scales,
        /// BMHK and BHMK layouts), fresh inputs per case.
        #[test]
        fn random_problems_match_the_reference(
            p in problem(&Config { max_seqlen: 300, max_window: 40, ..Config::default() }.plain()),
            bhmk in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let Some(dev) = device() else { return Ok(()) };
            let case = FwdCase { problem: p, layout: if bhmk { Layout::Bhmk } else { Layout::Bmhk } };
            let o = run_fwd(dev, &case, seed).map_err(TestCaseError::fail)?;
            prop_assert!(o.passed(), "{:?} seed {seed}:\n{}\n{}", case, o.out, o.lse);
        }
    }
}
