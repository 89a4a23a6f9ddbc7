//! Runs the real forward kernel bodies on the CPU through `arch::host` (one OS thread per GPU
//! thread, real barriers and shuffles) and compares them with a naive f64 attention.
//!
//! This is the kernel algorithm itself (index maths, online softmax, masking, barriers, lane
//! exchanges), exercised without a GPU. The full tolerance rule lives in the GPU tests; here the
//! inputs are f32 and the bound is a plain absolute one.
use attn_abi::{FwdParams, MASK_BOTTOM_RIGHT, MASK_WINDOW, WINDOW_UNBOUNDED};
use attn_kernels::arch::host::launch;
use attn_kernels::fwd::policy;
use attn_kernels::instances;
use attn_kernels::mask::Mask;

struct Case {
    b: usize,
    hq: usize,
    hk: usize,
    sq: usize,
    sk: usize,
    d: usize,
    dv: usize,
    window: Option<(i32, i32, bool)>,
    /// Softmax scale; `None` is `1/sqrt(D)`.
    scale: Option<f32>,
}

/// Deterministic pseudo-random values in [-2, 2).
fn fill(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

fn run_case(c: &Case, seed: u64) {
    // BMHK contiguous layouts.
    let q = fill(c.b * c.sq * c.hq * c.d, seed);
    let k = fill(c.b * c.sk * c.hk * c.d, seed + 1);
    let v = fill(c.b * c.sk * c.hk * c.dv, seed + 2);
    let mut out = vec![f32::NAN; c.b * c.sq * c.hq * c.dv];
    let mut lse = vec![f32::NAN; c.b * c.hq * c.sq];
    let scale = c.scale.unwrap_or(1.0 / (c.d as f32).sqrt());
    let (left, right, br) = c
        .window
        .unwrap_or((WINDOW_UNBOUNDED, WINDOW_UNBOUNDED, false));
    let p = FwdParams {
        q: q.as_ptr() as u64,
        k: k.as_ptr() as u64,
        v: v.as_ptr() as u64,
        out: out.as_mut_ptr() as u64,
        lse: lse.as_mut_ptr() as u64,
        q_strides: [(c.sq * c.hq * c.d) as i64, (c.hq * c.d) as i64, c.d as i64],
        k_strides: [(c.sk * c.hk * c.d) as i64, (c.hk * c.d) as i64, c.d as i64],
        v_strides: [
            (c.sk * c.hk * c.dv) as i64,
            (c.hk * c.dv) as i64,
            c.dv as i64,
        ],
        o_strides: [
            (c.sq * c.hq * c.dv) as i64,
            (c.hq * c.dv) as i64,
            c.dv as i64,
        ],
        lse_strides: [(c.hq * c.sq) as i64, c.sq as i64],
        batch: c.b as u32,
        heads_q: c.hq as u32,
        heads_k: c.hk as u32,
        seqlen_q: c.sq as u32,
        seqlen_k: c.sk as u32,
        head_dim: c.d as u32,
        head_dim_v: c.dv as u32,
        scale_log2: scale * std::f32::consts::LOG2_E,
        window_left: left,
        window_right: right,
        flags: if c.window.is_some() { MASK_WINDOW } else { 0 }
            | if br { MASK_BOTTOM_RIGHT } else { 0 },
        ..Default::default()
    };
    let family = attn_kernels::atom::FAMILY;
    let tile = policy::fwd_tile(family, attn_abi::DType::F32, 64);
    let grid = (c.sq.div_ceil(tile.block_m) as u32, c.hq as u32, c.b as u32);
    let smem = policy::smem_bytes(family, attn_abi::DType::F32, 64);
    launch(grid, policy::THREADS, smem, || {
        instances::__body_attn_fwd_f32_d64(&p)
    });

    let mask = Mask::from_params(&p, c.sq, c.sk);
    for b in 0..c.b {
        for h in 0..c.hq {
            let g = h / (c.hq / c.hk);
            for i in 0..c.sq {
                let qi = &q[((b * c.sq + i) * c.hq + h) * c.d..][..c.d];
                let logits: Vec<Option<f64>> = (0..c.sk)
                    .map(|j| {
                        mask.visible(i as i64, j as i64).then(|| {
                            let kj = &k[((b * c.sk + j) * c.hk + g) * c.d..][..c.d];
                            scale as f64
                                * qi.iter()
                                    .zip(kj)
                                    .map(|(&a, &b)| a as f64 * b as f64)
                                    .sum::<f64>()
                        })
                    })
                    .collect();
                let m = logits
                    .iter()
                    .flatten()
                    .cloned()
                    .fold(f64::NEG_INFINITY, f64::max);
                let l: f64 = logits.iter().flatten().map(|&s| (s - m).exp()).sum();
                let lse_ref = if l > 0.0 {
                    m + l.ln()
                } else {
                    f64::NEG_INFINITY
                };
                let got_lse = lse[(b * c.hq + h) * c.sq + i];
                if lse_ref.is_finite() {
                    assert!(
                        (got_lse as f64 - lse_ref).abs() < 1e-4,
                        "lse b{b} h{h} i{i}: {got_lse} vs {lse_ref}"
                    );
                } else {
                    assert_eq!(got_lse, f32::NEG_INFINITY, "lse b{b} h{h} i{i}");
                }
                for e in 0..c.dv {
                    let want: f64 = if l > 0.0 {
                        logits
                            .iter()
                            .enumerate()
                            .filter_map(|(j, s)| s.map(|s| (j, s)))
                            .map(|(j, s)| {
                                (s - m).exp() / l * v[((b * c.sk + j) * c.hk + g) * c.dv + e] as f64
                            })
                            .sum()
                    } else {
                        0.0
                    };
                    let got = out[((b * c.sq + i) * c.hq + h) * c.dv + e];
                    assert!(
                        (got as f64 - want).abs() < 1e-4,
                        "out b{b} h{h} i{i} e{e}: {got} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn emulated_forward_matches_naive_attention() {
    let cases = [
        // Ragged sizes, GQA, D != Dv, Sq != Sk.
        Case {
            b: 1,
            hq: 2,
            hk: 1,
            sq: 17,
            sk: 40,
            d: 24,
            dv: 64,
            window: None,
            scale: None,
        },
        Case {
            b: 2,
            hq: 1,
            hk: 1,
            sq: 70,
            sk: 33,
            d: 64,
            dv: 40,
            window: None,
            scale: None,
        },
        // Causal top-left and bottom-right, Sq > Sk (fully masked rows), sliding window.
        Case {
            b: 1,
            hq: 1,
            hk: 1,
            sq: 45,
            sk: 30,
            d: 16,
            dv: 16,
            window: Some((WINDOW_UNBOUNDED, 0, false)),
            scale: None,
        },
        Case {
            b: 1,
            hq: 1,
            hk: 1,
            sq: 45,
            sk: 30,
            d: 16,
            dv: 8,
            window: Some((WINDOW_UNBOUNDED, 0, true)),
            scale: None,
        },
        Case {
            b: 1,
            hq: 1,
            hk: 1,
            sq: 20,
            sk: 100,
            d: 8,
            dv: 8,
            window: Some((5, 3, true)),
            scale: None,
        },
        // Scales that cannot be folded into exp2 (negative with a mask, zero).
        Case {
            b: 1,
            hq: 2,
            hk: 1,
            sq: 33,
            sk: 47,
            d: 16,
            dv: 16,
            window: Some((WINDOW_UNBOUNDED, 0, true)),
            scale: Some(-0.7),
        },
        Case {
            b: 1,
            hq: 1,
            hk: 1,
            sq: 9,
            sk: 40,
            d: 8,
            dv: 8,
            window: None,
            scale: Some(0.0),
        },
    ];
    for (n, c) in cases.iter().enumerate() {
        run_case(c, 7 + n as u64 * 13);
    }
}

/// `attn_philox_advance` snapshots the state and adds its increment once per launch (whatever
/// the grid), wrapping; a null snapshot only advances.
#[test]
fn philox_advance_snapshots_then_adds_once_and_wraps() {
    for (start, inc) in [(5u64, 7u64), (u64::MAX - 2, 5), (0, 0), (1 << 40, u64::MAX)] {
        let mut state = [0x1234_5678_9abc_def0u64, start];
        let mut snap = [1u64, 2];
        let mut p = attn_abi::PhiloxAdvanceParams {
            state: state.as_mut_ptr() as u64,
            snapshot: snap.as_mut_ptr() as u64,
            increment: inc,
            _pad: 0,
        };
        launch((3, 2, 1), 64, 0, || {
            instances::__body_attn_philox_advance(&p)
        });
        assert_eq!(snap, [0x1234_5678_9abc_def0, start]);
        assert_eq!(state, [0x1234_5678_9abc_def0, start.wrapping_add(inc)]);
        p.snapshot = 0;
        launch((1, 1, 1), 64, 0, || {
            instances::__body_attn_philox_advance(&p)
        });
        assert_eq!(
            snap,
            [0x1234_5678_9abc_def0, start],
            "null snapshot untouched"
        );
        assert_eq!(state[1], start.wrapping_add(inc).wrapping_add(inc));
    }
}
