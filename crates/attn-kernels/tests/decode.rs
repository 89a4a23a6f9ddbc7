//! Host emulation of the `Decode` forward (`fwd::run` with `DECODE`: waves splitting the keys,
//! GQA packing, split-KV with the merge kernel, paged KV, key ranges) against an f64 attention on
//! the same rounded inputs, through `arch::host::launch` (one OS thread per lane).
//!
//! The 32-lane mma.sync (separate K/V buffers, as on NVIDIA) and WMMA (one K/V buffer, as on AMD)
//! atoms run by default, the 64-lane MFMA atom (one buffer) with
//! `cargo test -p attn-kernels --features host-wave64`.
use attn_abi::{
    FLAG_KEY_RANGE, FLAG_PAGED, FLAG_VARLEN, FLAG_VEC16, FwdParams, MASK_BOTTOM_RIGHT, MASK_WINDOW,
    MergeParams, WINDOW_UNBOUNDED,
};
use attn_kernels::arch::host::launch;
use attn_kernels::atom::MmaAtom;
use attn_kernels::fwd::{self, policy};
use attn_kernels::numeric::{Element, F16};

/// A fresh seed per test run (printed in every failure message).
fn fresh_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0xdec0de_u64)
}

/// xorshift64 state.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-2, 2).
    fn value(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One decode configuration.
#[derive(Clone, Copy, Debug)]
struct Case {
    batch: usize,
    hq: usize,
    hk: usize,
    sq: usize,
    pack: bool,
    splits: u32,
    paged: bool,
    varlen_q: bool,
    causal: bool,
    key_range: Option<(u32, u32)>,
}

/// Runs `Case` on the `Decode` pipeline of atom `A` (f16, `D = Dv = ND · A::N`) and checks every
/// output row and lse against the f64 truth.
fn decode_matches_reference<
    A: MmaAtom<E = F16>,
    const WAVES: usize,
    const TN: usize,
    const ND: usize,
    const KK: usize,
    const SPLIT_KV: bool,
>(
    c: Case,
    seed: u64,
) {
    let mut rng = Rng(seed | 1);
    let d = ND * A::N;
    let (block_m, block_n) = (A::M, WAVES * TN * A::N);
    let (nb, hq, hk) = (c.batch, c.hq, c.hk);
    let ps = 16usize;
    let max_pages = 9usize; // Sk = 144 keys per sequence at most: several key blocks
    let sk_max = max_pages * ps;
    // Used lengths: one full, the others ragged (one of them 0 when there are 3+ sequences).
    let used: Vec<i32> = (0..nb)
        .map(|b| match b {
            0 => sk_max as i32,
            2 => 0,
            _ => 1 + rng.below(sk_max) as i32,
        })
        .collect();
    // Queries: batch `[nb, sq]`, or varlen with per-sequence lengths 1..=sq.
    let sq_of: Vec<usize> = (0..nb)
        .map(|b| {
            if c.varlen_q {
                1 + (b * 7 + 3) % c.sq
            } else {
                c.sq
            }
        })
        .collect();
    let cu_q: Vec<i32> = std::iter::once(0)
        .chain(sq_of.iter().scan(0, |acc, &s| {
            *acc += s as i32;
            Some(*acc)
        }))
        .collect();
    let total_q = *cu_q.last().unwrap() as usize;
    let (q_rows, q_batch) = if c.varlen_q { (total_q, 1) } else { (c.sq, nb) };
    let round = |n: usize, rng: &mut Rng| -> Vec<F16> {
        (0..n).map(|_| F16::from_f32(rng.value())).collect()
    };
    let q = round(q_batch * q_rows * hq * d, &mut rng);
    // The keys of sequence b, position j, head g: contiguous [nb, sk_max, hk, d], or pages.
    let num_pages = nb * max_pages + 3;
    let kc = round(nb * sk_max * hk * d, &mut rng);
    let vc = round(nb * sk_max * hk * d, &mut rng);
    let mut table = vec![0i32; nb * max_pages];
    let (mut kp, mut vp) = (
        vec![F16::from_f32(f32::NAN); num_pages * ps * hk * d],
        vec![F16::from_f32(f32::NAN); num_pages * ps * hk * d],
    );
    if c.paged {
        // A shuffled assignment of distinct pages, then the pages filled from the contiguous
        // keys; entries past the used length point anywhere (also out of range: clamped).
        let mut order: Vec<usize> = (0..num_pages).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        for b in 0..nb {
            for pg in 0..max_pages {
                let used_pages = (used[b] as usize).div_ceil(ps);
                table[b * max_pages + pg] = if pg < used_pages {
                    order[b * max_pages + pg] as i32
                } else {
                    [-5, num_pages as i32 + 7, 0][pg % 3]
                };
            }
        }
        for b in 0..nb {
            for j in 0..used[b] as usize {
                let page = table[b * max_pages + j / ps] as usize;
                for g in 0..hk {
                    for e in 0..d {
                        let src = ((b * sk_max + j) * hk + g) * d + e;
                        let dst = ((page * ps + j % ps) * hk + g) * d + e;
                        kp[dst] = kc[src];
                        vp[dst] = vc[src];
                    }
                }
            }
        }
    }
    let pack = if c.pack { hq / hk } else { 1 };
    let splits = c.splits as usize;
    let mut out = vec![F16(0x7e00); q_batch * q_rows * hq * d];
    let mut lse = vec![f32::NAN; q_batch * hq * q_rows];
    let mut ws_o = vec![f32::NAN; splits * q_batch * q_rows * hq * d];
    let mut ws_lse = vec![f32::NAN; splits * q_batch * hq * q_rows];
    let scale = 1.0 / (d as f32).sqrt();
    let st = |s: usize, h: usize| [(s * h * d) as i64, (h * d) as i64, d as i64];
    let mut flags = FLAG_VEC16;
    if c.causal {
        flags |= MASK_WINDOW | MASK_BOTTOM_RIGHT;
    }
    if c.paged {
        flags |= FLAG_PAGED;
    }
    if c.varlen_q {
        flags |= FLAG_VARLEN;
    }
    if c.key_range.is_some() {
        flags |= FLAG_KEY_RANGE;
    }
    let (key_lo, key_hi) = c.key_range.unwrap_or((0, 0));
    // Varlen queries over contiguous keys use cu_seqlens_k = b · sk_max.
    let cu_k: Vec<i32> = (0..=nb).map(|b| (b * sk_max) as i32).collect();
    let (k_ptr, v_ptr, k_strides) = if c.paged {
        (kp.as_ptr(), vp.as_ptr(), st(ps, hk))
    } else if c.varlen_q {
        (kc.as_ptr(), vc.as_ptr(), [0, (hk * d) as i64, d as i64])
    } else {
        (kc.as_ptr(), vc.as_ptr(), st(sk_max, hk))
    };
    let k_rows = if c.varlen_q && !c.paged {
        nb * sk_max
    } else {
        sk_max
    };
    let p = FwdParams {
        q: q.as_ptr() as u64,
        k: k_ptr as u64,
        v: v_ptr as u64,
        out: out.as_mut_ptr() as u64,
        lse: lse.as_mut_ptr() as u64,
        q_strides: st(q_rows, hq),
        k_strides,
        v_strides: k_strides,
        o_strides: st(q_rows, hq),
        lse_strides: [(hq * q_rows) as i64, q_rows as i64],
        batch: nb as u32,
        heads_q: hq as u32,
        heads_k: hk as u32,
        seqlen_q: q_rows as u32,
        seqlen_k: k_rows as u32,
        head_dim: d as u32,
        head_dim_v: d as u32,
        scale_log2: scale * std::f32::consts::LOG2_E,
        window_left: WINDOW_UNBOUNDED,
        window_right: if c.causal { 0 } else { WINDOW_UNBOUNDED },
        flags,
        cu_seqlens_q: if c.varlen_q { cu_q.as_ptr() as u64 } else { 0 },
        cu_seqlens_k: if c.varlen_q { cu_k.as_ptr() as u64 } else { 0 },
        seqused_k: used.as_ptr() as u64,
        max_seqlen_q: c.sq as u32,
        max_seqlen_k: sk_max as u32,
        pack_gqa: pack as u32,
        num_splits: splits as u32,
        ws_o: ws_o.as_mut_ptr() as u64,
        ws_lse: ws_lse.as_mut_ptr() as u64,
        ws_o_strides: [
            (q_batch * q_rows * hq * d) as i64,
            (q_rows * hq * d) as i64,
            (hq * d) as i64,
            d as i64,
        ],
        ws_lse_strides: [
            (q_batch * hq * q_rows) as i64,
            (hq * q_rows) as i64,
            q_rows as i64,
        ],
        block_table: table.as_ptr() as u64,
        block_table_stride: max_pages as i64,
        page_size: ps as u32,
        num_pages: num_pages as u32,
        key_lo,
        key_hi,
        ..Default::default()
    };
    let esize = 2;
    let dp = policy::padded(d, esize);
    let main = ((block_m + 2 * block_n) * dp + block_m * policy::padded(block_n, esize)) * esize
        + block_m * policy::padded(block_n, 4) * 4;
    let merge = (2 * WAVES * block_m + (WAVES - 1) * block_m * (d + 4)) * 4;
    let grid = (
        ((c.sq * pack).div_ceil(block_m) * splits) as u32,
        (hq / pack) as u32,
        nb as u32,
    );
    launch(grid, policy::THREADS, main.max(merge), || {
        fwd::run::<A, WAVES, 1, TN, ND, KK, SPLIT_KV, true, true, true>(&p)
    });
    if splits > 1 {
        let mp = MergeParams {
            parts_o: ws_o.as_ptr() as u64,
            parts_o_strides: p.ws_o_strides,
            parts_lse: ws_lse.as_ptr() as u64,
            parts_lse_strides: p.ws_lse_strides,
            out: out.as_mut_ptr() as u64,
            o_strides: p.o_strides,
            lse: lse.as_mut_ptr() as u64,
            lse_strides: p.lse_strides,
            cu_seqlens_q: p.cu_seqlens_q,
            n_parts: splits as u32,
            seqlen: q_rows as u32,
            max_seqlen: c.sq as u32,
            head_dim_v: d as u32,
        };
        launch(
            (c.sq as u32, hq as u32, nb as u32),
            policy::THREADS,
            fwd::merge::SMEM_BYTES as usize,
            || fwd::merge::run::<f32, F16>(&mp),
        );
    }

    for b in 0..nb {
        let (sq, sk) = (sq_of[b], used[b] as usize);
        let (qb, q0) = if c.varlen_q {
            (0, cu_q[b] as usize)
        } else {
            (b, 0)
        };
        for h in 0..hq {
            let g = h / (hq / hk);
            for i in 0..sq {
                let row = q0 + i;
                let qv = |e: usize| q[((qb * q_rows + row) * hq + h) * d + e].to_f32() as f64;
                let kv = |t: &[F16], j: usize, e: usize| {
                    t[((b * sk_max + j) * hk + g) * d + e].to_f32() as f64
                };
                let off = sk as i64 - sq as i64;
                let visible = |j: usize| {
                    (!c.causal || j as i64 <= i as i64 + off)
                        && c.key_range
                            .is_none_or(|(lo, hi)| j >= lo as usize && j < hi as usize)
                };
                let keys: Vec<usize> = (0..sk).filter(|&j| visible(j)).collect();
                let logits: Vec<f64> = keys
                    .iter()
                    .map(|&j| scale as f64 * (0..d).map(|e| qv(e) * kv(&kc, j, e)).sum::<f64>())
                    .collect();
                let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let l: f64 = logits.iter().map(|s| (s - m).exp()).sum();
                let got_lse = lse[(qb * hq + h) * q_rows + row] as f64;
                let want_lse = if keys.is_empty() {
                    f64::NEG_INFINITY
                } else {
                    m + l.ln()
                };
                let ctx = format!("{c:?} b{b} h{h} i{i} (seed {seed:#x})");
                if keys.is_empty() {
                    assert_eq!(got_lse, f64::NEG_INFINITY, "lse {ctx}");
                } else {
                    assert!(
                        (got_lse - want_lse).abs() < 2e-3,
                        "lse {ctx}: {got_lse} vs {want_lse}"
                    );
                }
                for e in 0..d {
                    let want: f64 = keys
                        .iter()
                        .zip(&logits)
                        .map(|(&j, s)| (s - m).exp() / l * kv(&vc, j, e))
                        .sum();
                    let got = out[((qb * q_rows + row) * hq + h) * d + e].to_f32() as f64;
                    assert!((got - want).abs() < 1e-2, "out {ctx} e{e}: {got} vs {want}");
                }
            }
        }
    }
}

fn cases() -> Vec<Case> {
    let base = Case {
        batch: 3,
        hq: 4,
        hk: 2,
        sq: 3,
        pack: false,
        splits: 1,
        paged: false,
        varlen_q: false,
        causal: false,
        key_range: None,
    };
    // Each case is a few seconds of emulation: every feature appears, most of them combined.
    vec![
        Case {
            splits: 3,
            paged: true,
            ..base
        },
        Case {
            pack: true,
            splits: 4,
            causal: true,
            ..base
        },
        Case {
            varlen_q: true,
            paged: true,
            pack: true,
            splits: 3,
            sq: 5,
            causal: true,
            ..base
        },
        Case {
            key_range: Some((21, 100)),
            splits: 2,
            pack: true,
            ..base
        },
        Case {
            batch: 2,
            key_range: Some((70, 70)),
            paged: true,
            ..base
        },
        Case {
            batch: 2,
            hq: 6,
            hk: 1,
            sq: 1,
            pack: true,
            splits: 5,
            causal: true,
            ..base
        },
    ]
}

#[cfg(not(feature = "host-wave64"))]
#[test]
fn decode_runs_on_the_sm80_atom() {
    use attn_kernels::atom::sm80_m16n8k16::Sm80M16N8K16;
    let seed = fresh_seed();
    for c in cases() {
        // 4 warps × 16 keys, one 16-row fragment; D = 4 · 8; separate K/V buffers (NVIDIA).
        decode_matches_reference::<Sm80M16N8K16<F16>, 4, 2, 4, 1, true>(c, seed);
    }
}

#[cfg(not(feature = "host-wave64"))]
#[test]
fn decode_runs_on_the_wmma_atom() {
    use attn_kernels::atom::rdna3_wmma::Rdna3Wmma16x16x16;
    let seed = fresh_seed();
    for c in cases() {
        // 4 waves × 16 keys, one 16-row fragment; D = 2 · 16; one K/V buffer (AMD).
        decode_matches_reference::<Rdna3Wmma16x16x16<F16>, 4, 1, 2, 1, false>(c, seed);
    }
}

#[cfg(feature = "host-wave64")]
#[test]
fn decode_runs_on_the_mfma_atom() {
    use attn_kernels::atom::cdna_mfma::CdnaMfma32x32x8;
    let seed = fresh_seed();
    for c in cases() {
        // 2 waves × 32 keys, one 32-row fragment; D = 32; one K/V buffer (AMD).
        decode_matches_reference::<CdnaMfma32x32x8<F16>, 2, 1, 1, 4, false>(c, seed);
    }
}
