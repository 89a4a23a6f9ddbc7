//! The inference path on a GPU against `attn-ref` under the pass rule: split-KV against no split,
//! GQA packing against none, paged KV caches (shuffled, repeated and partly used pages, out-of-range
//! entries past the used length, page sizes 16 / 48 / 256, `seqused_k` shorter than the pages,
//! varlen queries) against their contiguous equivalent, and partial attentions over key ranges
//! merged with `Merge` against the one-shot result. Skips (printing why) without a GPU.
use attn_host::{Packing, Route, Splits};
use attn_ref::paged::PagedConfig;
use attn_ref::{Align, Dtype, Mask, Problem};
use attn_tests::{DecodeOpts, Family, FwdCase, Layout, plan_fwd};

const DTYPES: [Dtype; 3] = [Dtype::F16, Dtype::Bf16, Dtype::F32];

fn masks() -> [Mask; 4] {
    [
        Mask::None,
        Mask::Causal {
            align: Align::BottomRight,
        },
        Mask::Window {
            left: Some(300),
            right: Some(0),
            align: Align::BottomRight,
        },
        Mask::Causal {
            align: Align::TopLeft,
        },
    ]
}

fn check_all(name: &str, cases: Vec<FwdCase>) {
    attn_tests::check_cases(name, 0xDEC0_0000, &cases);
}

fn opts(splits: Splits, packing: Packing) -> DecodeOpts {
    DecodeOpts {
        route: Route::Decode,
        splits,
        packing,
        ..Default::default()
    }
}

fn split_and_packed_decode_match_the_reference_cases() -> Vec<FwdCase> {
    let mut cases = Vec::new();
    for (t, dtype) in DTYPES.into_iter().enumerate() {
        for (i, (sq, sk, hq, hk, d)) in [
            (1, 4099, 8, 2, 128),
            (4, 1000, 8, 2, 64),
            (1, 777, 4, 4, 128),
            (3, 2050, 6, 1, 256),
            (8, 513, 8, 1, 32),
            (1, 1, 4, 2, 64),
        ]
        .into_iter()
        .enumerate()
        {
            let mask = masks()[(t + i) % 4];
            let used = vec![sk as i32, (sk / 3) as i32, 0];
            let p = Problem::new(dtype, 3, sq, sk, hq, hk, d, d)
                .with_mask(mask)
                .with_seqused_k(used);
            for (splits, packing) in [
                (Splits::Fixed(1), Packing::Off),
                (Splits::Fixed(1), Packing::Auto),
                (Splits::Fixed(5), Packing::Off),
                (Splits::Fixed(7), Packing::Auto),
                (Splits::Auto, Packing::Auto),
            ] {
                let layout = if i % 2 == 0 {
                    Layout::Bmhk
                } else {
                    Layout::Bhmk
                };
                cases.push(FwdCase::new(p.clone(), layout).with_decode(opts(splits, packing)));
            }
        }
    }
    cases
}

#[test]
fn split_and_packed_decode_match_the_reference() {
    check_all(
        "decode: split-KV x GQA packing",
        split_and_packed_decode_match_the_reference_cases(),
    );
}

fn decode_kernels_serve_any_shape_and_the_score_pieces_cases() -> Vec<FwdCase> {
    let mut cases = Vec::new();
    for dtype in DTYPES {
        // Prefill-shaped and varlen calls forced onto the decode kernels, split.
        for (n, mask) in masks().into_iter().enumerate() {
            let p = Problem::new(dtype, 2, 100, 301, 4, 2, 64, 40).with_mask(mask);
            cases.push(
                FwdCase::new(p, Layout::Bmhk).with_decode(opts(Splits::Fixed(3), Packing::Auto)),
            );
            let p = Problem::varlen(
                dtype,
                &[(17, 33), (0, 5), (100, 1), (3, 0), (55, 400)],
                6,
                2,
                128,
                128,
            )
            .with_mask(mask);
            let splits = if n % 2 == 0 {
                Splits::Fixed(4)
            } else {
                Splits::Auto
            };
            cases.push(FwdCase::new(p, Layout::Bmhk).with_decode(opts(splits, Packing::Auto)));
        }
        // ALiBi (never packed) and softcap (packed), split.
        let slopes: Vec<f32> = (0..8).map(|h| 2f32.powf(-(h + 1) as f32)).collect();
        let p = Problem::new(dtype, 2, 2, 1500, 8, 2, 128, 128)
            .with_mask(masks()[1])
            .with_alibi(slopes, false);
        cases
            .push(FwdCase::new(p, Layout::Bmhk).with_decode(opts(Splits::Fixed(6), Packing::Auto)));
        let p = Problem::new(dtype, 2, 4, 1500, 8, 2, 128, 128)
            .with_mask(masks()[2])
            .with_softcap(20.0);
        cases.push(FwdCase::new(p, Layout::Bhmk).with_decode(opts(Splits::Fixed(6), Packing::On)));
    }
    cases
}

#[test]
fn decode_kernels_serve_any_shape_and_the_score_pieces() {
    check_all(
        "decode: any shape, ALiBi, softcap",
        decode_kernels_serve_any_shape_and_the_score_pieces_cases(),
    );
}

fn paged_kv_matches_its_contiguous_equivalent_cases() -> Vec<FwdCase> {
    let mut cases = Vec::new();
    for (t, dtype) in DTYPES.into_iter().enumerate() {
        for (i, page_size) in [16usize, 48, 256].into_iter().enumerate() {
            let mask = masks()[(t + i) % 4];
            // Decode over a ragged cache (seqused_k shorter than the pages; one empty sequence).
            let p = Problem::new(dtype, 4, 1 + i, 1300, 8, 2, 128, 128)
                .with_mask(mask)
                .with_seqused_k(vec![1300, 1, 0, 1299 - 17 * i as i32]);
            let cfg = PagedConfig {
                page_size,
                extra_pages: 2,
                repeat: 0.3,
                bad_past_used: true,
                table_stride: Some(1300usize.div_ceil(page_size) + 5),
                ..PagedConfig::default()
            };
            for splits in [Splits::Fixed(1), Splits::Auto, Splits::Fixed(9)] {
                cases.push(
                    FwdCase::new(p.clone(), Layout::Bmhk).with_decode(DecodeOpts {
                        splits,
                        paged: Some(cfg.clone()),
                        ..Default::default()
                    }),
                );
            }
            // Chunked prefill: varlen queries over the cache, GQA, softcap.
            let p = Problem::varlen(dtype, &[(40, 700), (1, 1), (9, 200)], 6, 3, 64, 64)
                .with_mask(masks()[(t + i + 1) % 4])
                .with_softcap(if i == 1 { 15.0 } else { 0.0 });
            cases.push(FwdCase::new(p, Layout::Bmhk).with_decode(DecodeOpts {
                paged: Some(cfg.clone()),
                ..Default::default()
            }));
            // ALiBi over pages.
            let slopes: Vec<f32> = (0..4).map(|h| 2f32.powf(-2.0 * (h + 1) as f32)).collect();
            let p = Problem::new(dtype, 2, 2, 600, 4, 1, 64, 64)
                .with_mask(masks()[1])
                .with_alibi(slopes, false);
            cases.push(FwdCase::new(p, Layout::Bmhk).with_decode(DecodeOpts {
                paged: Some(cfg),
                ..Default::default()
            }));
        }
    }
    cases
}

#[test]
fn paged_kv_matches_its_contiguous_equivalent() {
    check_all(
        "decode: paged KV",
        paged_kv_matches_its_contiguous_equivalent_cases(),
    );
}

fn merged_partials_equal_the_one_shot_result_cases() -> Vec<FwdCase> {
    let mut cases = Vec::new();
    for dtype in DTYPES {
        for (i, mask) in masks().into_iter().enumerate() {
            let p = Problem::new(dtype, 2, [1, 4, 33, 7][i], 900, 8, 2, 128, 128).with_mask(mask);
            // Disjoint ranges covering every key, one of them empty and one past the end.
            let ranges = vec![(0, 130), (130, 130), (130, 611), (611, 5000)];
            cases.push(
                FwdCase::new(p.clone(), Layout::Bmhk).with_decode(DecodeOpts {
                    key_ranges: ranges,
                    ..Default::default()
                }),
            );
            let ranges = vec![(0, 450), (450, 900)];
            cases.push(FwdCase::new(p, Layout::Bhmk).with_decode(DecodeOpts {
                key_ranges: ranges,
                splits: Splits::Fixed(2),
                ..Default::default()
            }));
        }
    }
    cases
}

#[test]
fn merged_partials_equal_the_one_shot_result() {
    check_all(
        "decode: partial attention + merge",
        merged_partials_equal_the_one_shot_result_cases(),
    );
}

/// Every GPU case above plans on the host (no GPU needed): the harness passes each option in a
/// form the API accepts, on the decode kernels, for NVIDIA and CDNA tiles.
#[test]
fn every_decode_case_plans_on_the_host() {
    let all = [
        split_and_packed_decode_match_the_reference_cases(),
        decode_kernels_serve_any_shape_and_the_score_pieces_cases(),
        paged_kv_matches_its_contiguous_equivalent_cases(),
        merged_partials_equal_the_one_shot_result_cases(),
    ];
    let mut n = 0;
    for case in all.iter().flatten() {
        for family in [Family::Sm90, Family::Cdna] {
            let plan = plan_fwd(case, 7, family).unwrap_or_else(|e| panic!("{case:?}: {e}"));
            assert!(
                matches!(
                    plan.kernel,
                    attn_host::KernelId::Fwd {
                        variant: attn_abi::FwdVariant::Decode,
                        ..
                    }
                ),
                "{case:?}: {:?}",
                plan.kernel
            );
            n += 1;
        }
    }
    assert!(n > 200, "{n}");
}
