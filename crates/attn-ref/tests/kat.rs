//! Philox known-answer tests and dropout-mask properties.

use attn_ref::dropout::{self, keep, mask_block, mask_tensor, philox4x32_10};
use attn_ref::{Dropout, Dtype, Problem};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Failures persist in `crates/attn-ref/proptest-regressions/` (cargo runs tests from the crate root).
fn persisted(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/kat.txt",
        ))),
        ..ProptestConfig::default()
    }
}

/// Random123 `tests/kat_vectors`, the three `philox4x32 10` lines (CTR[4], KEY[2], EXPECTED[4]).
#[test]
fn philox4x32_10_random123_kat() {
    let kat: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
        (
            [0; 4],
            [0; 2],
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
        ),
        (
            [u32::MAX; 4],
            [u32::MAX; 2],
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
        ),
        (
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
        ),
    ];
    for (ctr, key, want) in kat {
        assert_eq!(
            philox4x32_10(ctr, key),
            want,
            "ctr {ctr:08x?} key {key:08x?}"
        );
    }
}

#[test]
fn counter_layout_matches_semantics() {
    // bh = 1 * 4 + 2 = 6, c = offset + bh with a carry into the high word.
    let d = Dropout {
        p: 0.5,
        seed: 0x1234_5678_9abc_def0,
        offset: u32::MAX as u64 - 3,
    };
    let c = d.offset + 6;
    let ctr = [(13 / 8) as u32, 9, c as u32, (c >> 32) as u32];
    assert_eq!(ctr, [1, 9, 2, 1]);
    let w = philox4x32_10(ctr, [0x9abc_def0, 0x1234_5678]);
    let r = (w[(13 % 8) / 2] >> 16) & 0xFFFF;
    assert_eq!(keep(&d, 4, 1, 2, 9, 13), r >= 32768);
    assert_eq!(dropout::threshold(1.0 - 1e-9), 65536);
    assert_eq!(dropout::threshold(0.1), 6554);
}

#[test]
fn p_zero_keeps_everything() {
    let d = Dropout {
        p: 0.0,
        seed: 5,
        offset: 9,
    };
    assert!(
        mask_block(&d, 3, 1, 2, 0..17, 0..33)
            .iter()
            .all(|&k| k == 1)
    );
}

proptest! {
    #![proptest_config(persisted(48))]

    /// Kept fraction is within a binomial 5-sigma band of 1 - p (plus the 1/65536 quantisation of p).
    #[test]
    fn kept_fraction_binomial(p in 0.0f64..0.95, seed in any::<u64>(), offset in any::<u64>()) {
        let d = Dropout { p, seed, offset };
        let mut kept = 0usize;
        let mut n = 0usize;
        for b in 0..2 {
            for h in 0..3 {
                let m = mask_block(&d, 3, b, h, 0..40, 0..97);
                kept += m.iter().map(|&x| x as usize).sum::<usize>();
                n += m.len();
            }
        }
        let n = n as f64;
        let mean = n * (1.0 - p);
        let sigma = (n * p * (1.0 - p)).sqrt();
        let slack = 5.0 * sigma + n / 65536.0 + 1.0;
        prop_assert!((kept as f64 - mean).abs() <= slack, "kept {kept} of {n}, expected {mean} +- {slack}");
    }

    /// The mask depends only on (seed, offset, b, h, i, j, p): any sub-block computed alone, and the same
    /// positions inside a problem of another size, give the same bytes.
    #[test]
    fn mask_depends_only_on_indices(
        p in 0.0f64..0.9, seed in any::<u64>(), offset in any::<u64>(),
        b in 0usize..2, h in 0usize..3,
        (sq, i0, i1) in (1usize..40).prop_flat_map(|s| (Just(s), 0..s)).prop_flat_map(|(s, a)| (Just(s), Just(a), a..=s)),
        (sk, j0, j1) in (1usize..70).prop_flat_map(|s| (Just(s), 0..s)).prop_flat_map(|(s, a)| (Just(s), Just(a), a..=s)),
        extra_q in 0usize..9, extra_k in 0usize..20,
    ) {
        let prob = Problem::new(Dtype::F16, 2, sq, sk, 3, 1, 8, 8).with_dropout(p, seed, offset);
        let full = mask_tensor(&prob).unwrap();
        let big = Problem::new(Dtype::F16, 2, sq + extra_q, sk + extra_k, 3, 3, 16, 8).with_dropout(p, seed, offset);
        let full_big = mask_tensor(&big).unwrap();
        let d = prob.dropout.unwrap();
        let block = mask_block(&d, 3, b, h, i0..i1, j0..j1);
        let w = j1 - j0;
        for i in i0..i1 {
            for j in j0..j1 {
                let a = full[((b * 3 + h) * sq + i) * sk + j];
                let a_big = full_big[((b * 3 + h) * (sq + extra_q) + i) * (sk + extra_k) + j];
                prop_assert_eq!(a, block[(i - i0) * w + (j - j0)]);
                prop_assert_eq!(a, a_big);
                prop_assert_eq!(a == 1, keep(&d, 3, b, h, i, j));
            }
        }
    }
}
