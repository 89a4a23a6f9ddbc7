//! The forward mainloop with every score piece, dropout (its mask written through each atom's
//! lane map), varlen and `seqused_k`, run on the emulated atoms (`arch::host`, one OS thread per
//! lane) against `attn-ref` under the pass rule; the keep mask must equal attn-ref's byte for byte.
//!
//! The 32-lane atoms (sm80 `mma.sync`, RDNA3 WMMA) run by default, CDNA's 64-lane MFMA atom with
//! `cargo test -p attn-kernels --features host-wave64`.
use attn_abi::{
    FLAG_BIAS_F32, FLAG_BIAS_VEC16, FLAG_DROPOUT, FLAG_VARLEN, FwdParams, MASK_BOTTOM_RIGHT,
    MASK_WINDOW, WINDOW_UNBOUNDED,
};
use attn_kernels::arch::host::launch;
use attn_kernels::atom::MmaAtom;
use attn_kernels::fwd::{self, policy};
use attn_kernels::numeric::{Element, F16};
use attn_ref::{Align, Dtype, Inputs, Mask, Problem};

fn f16s(t: &attn_ref::Tensor) -> Vec<F16> {
    t.to_contiguous().into_iter().map(F16::from_f32).collect()
}

/// Runs `fwd::run::<A, .., PIECES = true>` and the mask kernel on `p` and checks out, lse and
/// the keep mask against attn-ref. `device_seed` passes seed/offset through pointers.
fn check<
    A: MmaAtom<E = F16>,
    const WAVES: usize,
    const TM: usize,
    const TN: usize,
    const ND: usize,
    const KK: usize,
    const SPLIT_KV: bool,
>(
    p: &Problem,
    input_seed: u64,
    device_seed: bool,
    bias_tile: bool,
) {
    let x = Inputs::random(p, input_seed, 1.0);
    let (q, k, v) = (f16s(&x.q), f16s(&x.k), f16s(&x.v));
    let [_, sq, hq, dq] = p.q_shape();
    let [_, sk, hk, _] = p.k_shape();
    let dv = p.head_dim_v;
    let nb = p.nseq();
    let (mq, mk) = p.max_seqlens();
    let mut out = vec![F16(0x7e00); p.out_shape().iter().product()];
    let mut lse = vec![f32::NAN; p.lse_len().max(1)];
    let [mb, mh, mr, mc] = p.bias_shape();
    let mut randval = vec![0xAAu8; (mb * mh * mr * mc).max(1)];
    // The bias keeps the reference tensor's broadcast (zero) strides; with `bias_tile` its rows
    // are padded to 16 bytes in a 16-byte aligned buffer, so the kernel stages it in shared
    // memory (FLAG_BIAS_VEC16), otherwise every element is read from global memory.
    let (bias_buf, bias_strides) = match (&x.bias, &p.bias) {
        (Some(t), Some(spec)) => {
            let es = if spec.dtype == Dtype::F32 { 4 } else { 2 };
            let row = if bias_tile {
                mc.next_multiple_of(16 / es) + 16 / es
            } else {
                mc
            };
            let mut st = [0i64, 0, 0, 1];
            let mut span = row as i64;
            for dim in [2usize, 1, 0] {
                if t.strides[dim] != 0 {
                    st[dim] = span;
                    span *= t.shape[dim] as i64;
                }
            }
            let mut buf = vec![0u128; (span as usize * es).div_ceil(16) + 1];
            let base = buf.as_mut_ptr().cast::<u8>();
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
                // SAFETY: `at` < span elements of `es` bytes, inside `buf`.
                unsafe {
                    if es == 4 {
                        *base.cast::<f32>().add(at) = val;
                    } else {
                        *base.cast::<F16>().add(at) = F16::from_f32(val);
                    }
                }
            }
            (buf, st)
        }
        _ => (vec![], [0; 4]),
    };
    let bias_f32 = p.bias.is_some_and(|b| b.dtype == Dtype::F32);
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
    let seed_cell = [dr.map_or(0, |d| d.seed)];
    let off_cell = [dr.map_or(0, |d| d.offset / 2)];
    let (left, right) = p.mask.bounds();
    let st = |s: usize, h: usize, d: usize| [(s * h * d) as i64, (h * d) as i64, d as i64];
    let params = FwdParams {
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
            | if bias_tile && p.bias.is_some() {
                FLAG_BIAS_VEC16
            } else {
                0
            }
            | if dr.is_some_and(|d| d.p > 0.0) {
                FLAG_DROPOUT
            } else {
                0
            },
        cu_seqlens_q: if cq.is_empty() { 0 } else { cq.as_ptr() as u64 },
        cu_seqlens_k: if ck.is_empty() { 0 } else { ck.as_ptr() as u64 },
        seqused_k: if used.is_empty() {
            0
        } else {
            used.as_ptr() as u64
        },
        max_seqlen_q: mq as u32,
        max_seqlen_k: mk as u32,
        bias: if p.bias.is_some() {
            bias_buf.as_ptr() as u64
        } else {
            0
        },
        bias_strides,
        alibi: if slopes.is_empty() {
            0
        } else {
            slopes.as_ptr() as u64
        },
        alibi_stride: if p.alibi.as_ref().is_some_and(|a| a.per_batch) {
            hq as i64
        } else {
            0
        },
        softcap: p.softcap,
        dropout_threshold: dr.map_or(0, |d| d.threshold()),
        dropout_rescale: dr.map_or(1.0, |d| d.rescale()),
        seed: if device_seed { 0 } else { seed_cell[0] },
        offset: dr.map_or(0, |d| d.offset) - if device_seed { off_cell[0] } else { 0 },
        seed_ptr: if device_seed {
            seed_cell.as_ptr() as u64
        } else {
            0
        },
        offset_ptr: if device_seed {
            off_cell.as_ptr() as u64
        } else {
            0
        },
        randval: if dr.is_some() {
            randval.as_mut_ptr() as u64
        } else {
            0
        },
        randval_strides: [(mh * mr * mc) as i64, (mr * mc) as i64, mc as i64],
        ..Default::default()
    };
    let (block_m, block_n) = (WAVES * TM * A::M, TN * A::N);
    let d = ND * A::N;
    assert!(dq.max(dv) <= d);
    let dp = policy::padded(d, 2);
    let smem = ((block_m + 2 * block_n) * dp + block_m * policy::padded(block_n, 2)) * 2
        + block_m * policy::padded(block_n, 4) * 4;
    if dr.is_some() {
        let pairs = mq * mk.div_ceil(8);
        let grid = (pairs.div_ceil(128).max(1) as u32, hq as u32, nb as u32);
        launch(grid, fwd::dropout_mask::THREADS, 0, || {
            fwd::dropout_mask::run(&params)
        });
    }
    let grid = (mq.div_ceil(block_m).max(1) as u32, hq as u32, nb as u32);
    launch(grid, policy::THREADS, smem, || {
        fwd::run::<A, WAVES, TM, TN, ND, KK, SPLIT_KV, true, true, false>(&params)
    });

    let truth = attn_ref::forward(p, &x).unwrap();
    let lowp = attn_ref::forward_blocked(p, &x, block_m, block_n).unwrap();
    let got: Vec<f32> = out.iter().map(|e| e.to_f32()).collect();
    let what = format!("{p:?} seed {input_seed:#x}");
    attn_ref::check(&got, &truth.out, &lowp.out)
        .named("out")
        .assert_passed();
    attn_ref::check_lse(&lse[..p.lse_len()], &truth.lse, &lowp.lse)
        .named("lse")
        .assert_passed();
    if let Some(want) = attn_ref::dropout::mask_tensor(p) {
        let bad = want.iter().zip(&randval).filter(|(a, b)| a != b).count();
        assert_eq!(bad, 0, "{bad} keep-mask bytes differ: {what}");
    }
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// Varlen (ragged, an empty query and an empty key sequence), `seqused_k`, f32 bias broadcast
/// over heads, per-batch ALiBi, softcap, dropout, causal bottom-right, GQA.
fn varlen_everything(d: usize) -> Problem {
    let nseq = 4;
    Problem::varlen(
        Dtype::F16,
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
    .with_alibi(
        (0..nseq * 4).map(|i| 0.05 + 0.03 * i as f32).collect(),
        true,
    )
    .with_softcap(8.0)
    .with_dropout(0.3, 0x1234_5678_9abc, 77)
}

/// Batch mode, a full f16 bias, per-head ALiBi, a top-left window, dropout p = 0.5.
fn batch_window(d: usize) -> Problem {
    Problem::new(Dtype::F16, 2, 41, 53, 2, 1, d, d)
        .with_mask(Mask::Window {
            left: Some(9),
            right: Some(4),
            align: Align::TopLeft,
        })
        .with_bias(Dtype::F16, [false; 4])
        .with_alibi(vec![0.1, 0.4], false)
        .with_dropout(0.5, 99, 1 << 40)
}

#[cfg(not(feature = "host-wave64"))]
#[test]
fn pieces_on_the_sm80_atom() {
    use attn_kernels::atom::sm80_m16n8k16::Sm80M16N8K16;
    // 4 warps × 16 rows; BLOCK_N = 2 · 8; D = 4 · 8.
    check::<Sm80M16N8K16<F16>, 4, 1, 2, 4, 1, true>(&varlen_everything(32), seed(), false, true);
    check::<Sm80M16N8K16<F16>, 4, 1, 2, 4, 1, false>(&batch_window(32), seed(), true, false);
}

#[cfg(not(feature = "host-wave64"))]
#[test]
fn pieces_on_the_wmma_atom() {
    use attn_kernels::atom::rdna3_wmma::Rdna3Wmma16x16x16;
    // 4 waves × 16 rows; BLOCK_N = 16; D = 2 · 16.
    check::<Rdna3Wmma16x16x16<F16>, 4, 1, 1, 2, 1, false>(
        &varlen_everything(32),
        seed(),
        true,
        false,
    );
    check::<Rdna3Wmma16x16x16<F16>, 4, 1, 1, 2, 1, false>(&batch_window(32), seed(), false, true);
}

#[cfg(feature = "host-wave64")]
#[test]
fn pieces_on_the_mfma_atom() {
    use attn_kernels::atom::cdna_mfma::CdnaMfma32x32x8;
    // 2 waves × 32 rows; BLOCK_N = 32; D = 32.
    check::<CdnaMfma32x32x8<F16>, 2, 1, 1, 1, 4, false>(
        &varlen_everything(32),
        seed(),
        false,
        true,
    );
    check::<CdnaMfma32x32x8<F16>, 2, 1, 1, 1, 4, false>(&batch_window(32), seed(), true, false);
}
