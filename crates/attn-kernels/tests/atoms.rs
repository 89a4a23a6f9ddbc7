//! Host tests of the hardware matrix atoms (`atom::sm80_m16n8k16`, `atom::cdna_mfma`,
//! `atom::rdna3_wmma`): their lane maps against their tiles and against the documented hardware
//! layouts, their emulations (run through `arch::host::launch`, one OS thread per lane) against a
//! scalar f32 GEMM, and the row reductions that the forward pass builds on `ROW_XOR`.
//!
//! The pure map tests run in every configuration. The emulation tests need the emulated wave to
//! have the instruction's width: the 32-lane atoms run by default, the 64-lane MFMA atom with
//! `cargo test -p attn-kernels --features host-wave64`.
use attn_kernels::atom::{MmaAtom, cdna_mfma, rdna3_wmma, sm80_m16n8k16 as sm80};
use std::collections::BTreeSet;

type Coord = fn(u32, usize) -> (usize, usize);

/// Asserts that `(lane, v)` over `lanes × 0..vals` hits every element of a `rows × cols` tile
/// exactly once.
fn assert_bijection(
    what: &str,
    lanes: std::ops::Range<u32>,
    vals: usize,
    rows: usize,
    cols: usize,
    coord: Coord,
) {
    let mut hits = vec![Vec::new(); rows * cols];
    for lane in lanes.clone() {
        for v in 0..vals {
            let (r, c) = coord(lane, v);
            assert!(
                r < rows && c < cols,
                "{what}: lane {lane} value {v} -> ({r}, {c}) outside {rows}x{cols}"
            );
            hits[r * cols + c].push((lane, v));
        }
    }
    for (i, h) in hits.iter().enumerate() {
        assert_eq!(
            h.len(),
            1,
            "{what}: element ({}, {}) is held by {h:?} (lanes {lanes:?})",
            i / cols,
            i % cols
        );
    }
}

/// The lanes reached from `lane` by the butterfly over `masks` (all XOR combinations).
fn butterfly_group(lane: u32, masks: &[u32]) -> BTreeSet<u32> {
    let mut g = BTreeSet::from([lane]);
    for &m in masks {
        g = g.iter().flat_map(|&l| [l, l ^ m]).collect();
    }
    g
}

/// Checks, from the maps alone, that the butterfly over `A::ROW_XOR` is exactly a row reduction:
/// every value of a row slot is in the same row; the butterfly from a lane reaches exactly the
/// lanes that hold any of its rows, each once (no lane counted twice), with the same row in the
/// same slot; and together those lanes hold each column of each of those rows exactly once.
fn check_row_groups<A: MmaAtom>(lanes: u32) {
    let n_masks = A::ROW_XOR.len();
    let rows_of = |lane: u32| -> Vec<usize> {
        let mut rows = vec![usize::MAX; A::ROW_SLOTS];
        for v in 0..A::C_VALS {
            let s = A::row_slot(v);
            let r = A::c_coord(lane, v).0;
            assert!(
                rows[s] == usize::MAX || rows[s] == r,
                "lane {lane}: slot {s} holds rows {} and {r}",
                rows[s]
            );
            rows[s] = r;
        }
        assert!(
            !rows.contains(&usize::MAX),
            "lane {lane}: an empty row slot"
        );
        rows
    };
    for lane in 0..lanes {
        let mine = rows_of(lane);
        let group = butterfly_group(lane, A::ROW_XOR);
        assert_eq!(
            group.len(),
            1 << n_masks,
            "ROW_XOR masks are not independent"
        );
        let sharing: BTreeSet<u32> = (0..lanes)
            .filter(|&l| rows_of(l).iter().any(|r| mine.contains(r)))
            .collect();
        assert_eq!(
            group, sharing,
            "lane {lane}: butterfly group != lanes sharing its rows"
        );
        for &l in &group {
            assert_eq!(
                rows_of(l),
                mine,
                "lane {l} holds lane {lane}'s rows in other slots"
            );
        }
        for s in 0..A::ROW_SLOTS {
            let mut cols = vec![0u32; A::N];
            for &l in &group {
                for v in (0..A::C_VALS).filter(|&v| A::row_slot(v) == s) {
                    cols[A::c_coord(l, v).1] += 1;
                }
            }
            assert!(
                cols.iter().all(|&c| c == 1),
                "lane {lane} slot {s}: the group holds the row's columns {cols:?} times"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lane maps: bijections and the documented hardware layouts.

#[test]
fn sm80_maps_are_bijections() {
    assert_bijection(
        "sm80 A",
        0..32,
        sm80::A_VALS,
        sm80::M,
        sm80::K,
        sm80::a_coord,
    );
    assert_bijection(
        "sm80 B",
        0..32,
        sm80::B_VALS,
        sm80::K,
        sm80::N,
        sm80::b_coord,
    );
    assert_bijection(
        "sm80 C",
        0..32,
        sm80::C_VALS,
        sm80::M,
        sm80::N,
        sm80::c_coord,
    );
}

/// Entries read off the PTX ISA figures "MMA .m16n8k16 fragment layout for matrix A / B /
/// accumulator C" (f16/bf16), written out rather than computed.
#[test]
fn sm80_maps_match_ptx_figures() {
    // A: lane 0 holds a0..a7 at rows 0,0,8,8,0,0,8,8 and cols 0,1,0,1,8,9,8,9.
    let a0: Vec<_> = (0..8).map(|v| sm80::a_coord(0, v)).collect();
    assert_eq!(
        a0,
        [
            (0, 0),
            (0, 1),
            (8, 0),
            (8, 1),
            (0, 8),
            (0, 9),
            (8, 8),
            (8, 9)
        ]
    );
    // A: lane 5 (group 1, thread 1) and lane 30 (group 7, thread 2).
    let a5: Vec<_> = (0..8).map(|v| sm80::a_coord(5, v)).collect();
    assert_eq!(
        a5,
        [
            (1, 2),
            (1, 3),
            (9, 2),
            (9, 3),
            (1, 10),
            (1, 11),
            (9, 10),
            (9, 11)
        ]
    );
    assert_eq!(sm80::a_coord(30, 7), (15, 13));
    // B: lane 6 (group 1, thread 2) holds k = 4, 5, 12, 13 of column 1.
    let b6: Vec<_> = (0..4).map(|v| sm80::b_coord(6, v)).collect();
    assert_eq!(b6, [(4, 1), (5, 1), (12, 1), (13, 1)]);
    assert_eq!(sm80::b_coord(31, 3), (15, 7));
    // C: lane 31 holds (7,6) (7,7) (15,6) (15,7); lane 0 holds (0,0) (0,1) (8,0) (8,1).
    let c31: Vec<_> = (0..4).map(|v| sm80::c_coord(31, v)).collect();
    assert_eq!(c31, [(7, 6), (7, 7), (15, 6), (15, 7)]);
    let c0: Vec<_> = (0..4).map(|v| sm80::c_coord(0, v)).collect();
    assert_eq!(c0, [(0, 0), (0, 1), (8, 0), (8, 1)]);
    assert_eq!((0..4).map(sm80::row_slot).collect::<Vec<_>>(), [0, 0, 1, 1]);
}

#[test]
fn mfma_maps_are_bijections() {
    use cdna_mfma as f;
    assert_bijection("mfma A", 0..64, f::A_VALS, f::M, f::K, f::a_coord);
    assert_bijection("mfma B", 0..64, f::B_VALS, f::K, f::N, f::b_coord);
    assert_bijection("mfma C", 0..64, f::C_VALS, f::M, f::N, f::c_coord);
}

/// The logical maps are the hardware layout of `v_mfma_f32_32x32x8f16` (AMD Matrix Instruction
/// Calculator, written in its element -> (lane, item) form) with the operands swapped:
/// logical `A = HBᵀ`, `B = HAᵀ`, `C = Dᵀ`.
#[test]
fn mfma_maps_are_the_swapped_hardware_layout() {
    use cdna_mfma as f;
    // HA[i][k] and HB[k][j]: lane = i (or j) + 32 * (k / 4), item = k % 4.
    let ab = |ij: usize, k: usize| ((ij + 32 * (k / 4)) as u32, k % 4);
    // D[i][j]: lane = j + 32 * ((i / 4) % 2), item = i % 4 + 4 * (i / 8).
    let d = |i: usize, j: usize| ((j + 32 * ((i / 4) % 2)) as u32, i % 4 + 4 * (i / 8));
    for lane in 0..64 {
        for v in 0..f::A_VALS {
            let (m, k) = f::a_coord(lane, v);
            assert_eq!(ab(m, k), (lane, v), "A = HBᵀ at lane {lane} value {v}");
            let (k, n) = f::b_coord(lane, v);
            assert_eq!(ab(n, k), (lane, v), "B = HAᵀ at lane {lane} value {v}");
        }
        for v in 0..f::C_VALS {
            let (m, n) = f::c_coord(lane, v);
            assert_eq!(d(n, m), (lane, v), "C = Dᵀ at lane {lane} value {v}");
        }
    }
}

#[test]
fn wmma_maps_replicate_a_b_and_cover_every_tile() {
    use rdna3_wmma as w;
    assert_bijection("wmma C", 0..32, w::C_VALS, w::M, w::N, w::c_coord);
    for (what, vals, rows, cols, coord) in [
        ("wmma A", w::A_VALS, w::M, w::K, w::a_coord as Coord),
        ("wmma B", w::B_VALS, w::K, w::N, w::b_coord as Coord),
    ] {
        assert_bijection(what, 0..16, vals, rows, cols, coord);
        assert_bijection(what, 16..32, vals, rows, cols, coord);
        for lane in 0..16 {
            for v in 0..vals {
                assert_eq!(
                    coord(lane, v),
                    coord(lane + 16, v),
                    "{what}: lanes {lane}, +16"
                );
            }
        }
    }
}

/// The logical maps are the wave32 layout of `v_wmma_f32_16x16x16_f16` (RDNA3 ISA; GPUOpen's WMMA
/// example) with the operands swapped: logical `A = HBᵀ`, `B = HAᵀ`, `C = Dᵀ`.
#[test]
fn wmma_maps_are_the_swapped_hardware_layout() {
    use rdna3_wmma as w;
    for lane in 0..32u32 {
        for v in 0..16 {
            // HB[k][j] is in lanes j, j + 16 at item k; HA[i][k] in lanes i, i + 16 at item k.
            let (m, k) = w::a_coord(lane, v);
            assert_eq!((m as u32, k), (lane % 16, v), "A = HBᵀ");
            let (k, n) = w::b_coord(lane, v);
            assert_eq!((n as u32, k), (lane % 16, v), "B = HAᵀ");
        }
        for v in 0..w::C_VALS {
            // D[i][j]: lane j + 16 * (i % 2), item i / 2.
            let (m, n) = w::c_coord(lane, v);
            assert_eq!(((m + 16 * (n % 2)) as u32, n / 2), (lane, v), "C = Dᵀ");
        }
    }
}

#[test]
fn row_xor_butterflies_reach_exactly_the_lanes_sharing_rows() {
    use attn_kernels::numeric::{Bf16, F16};
    check_row_groups::<sm80::Sm80M16N8K16<F16>>(sm80::LANES);
    check_row_groups::<sm80::Sm80M16N8K16<Bf16>>(sm80::LANES);
    check_row_groups::<cdna_mfma::CdnaMfma32x32x8<F16>>(cdna_mfma::LANES);
    check_row_groups::<rdna3_wmma::Rdna3Wmma16x16x16<Bf16>>(rdna3_wmma::LANES);
}

/// A wrong `ROW_XOR` must fail the group check (the check is able to fail).
#[test]
#[should_panic(expected = "butterfly group")]
fn row_group_check_rejects_a_wrong_mask() {
    struct Bad;
    impl MmaAtom for Bad {
        type E = attn_kernels::numeric::F16;
        const M: usize = 16;
        const N: usize = 8;
        const K: usize = 16;
        const A_VALS: usize = 8;
        const B_VALS: usize = 4;
        const C_VALS: usize = 4;
        const ROW_SLOTS: usize = 2;
        const ROW_XOR: &'static [u32] = &[1, 4];
        type A = [u32; 4];
        type B = [u32; 2];
        type C = [f32; 4];
        type Rows = [f32; 2];
        fn a_coord(lane: u32, v: usize) -> (usize, usize) {
            sm80::a_coord(lane, v)
        }
        fn b_coord(lane: u32, v: usize) -> (usize, usize) {
            sm80::b_coord(lane, v)
        }
        fn c_coord(lane: u32, v: usize) -> (usize, usize) {
            sm80::c_coord(lane, v)
        }
        fn row_slot(v: usize) -> usize {
            sm80::row_slot(v)
        }
        fn load_a(_: u32, _: impl Fn(usize, usize) -> Self::E) -> [u32; 4] {
            [0; 4]
        }
        fn load_b(_: u32, _: impl Fn(usize, usize) -> Self::E) -> [u32; 2] {
            [0; 2]
        }
        fn mma(_: &[u32; 4], _: &[u32; 2], _: &mut [f32; 4]) {}
    }
    check_row_groups::<Bad>(32);
}

// ---------------------------------------------------------------------------------------------
// Emulations through the emulated wave.

mod emulated {
    use attn_kernels::arch::{self, host::launch};
    use attn_kernels::atom::MmaAtom;
    use attn_kernels::numeric::Element;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh seed per test run (printed in every failure message).
    pub fn fresh_seed() -> u64 {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
    }

    /// xorshift64 values in [-2, 2).
    pub fn fill(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    fn to_atomics(v: &[f32]) -> Vec<AtomicU32> {
        v.iter().map(|x| AtomicU32::new(x.to_bits())).collect()
    }

    /// Two chained `mma`s (`C = A1·B1 + C0`, then `+= A2·B2`) on one emulated wave of `lanes`
    /// lanes, with fragments loaded and stored through the lane maps, against a scalar f32 GEMM
    /// with the same FMA order (inputs rounded to `A::E` first). Bit-exact.
    pub fn mma_matches_scalar_gemm<A: MmaAtom>(lanes: u32)
    where
        A::E: Sync,
    {
        let seed = fresh_seed();
        let (m, n, k) = (A::M, A::N, A::K);
        let round = |v: Vec<f32>| -> Vec<A::E> { v.into_iter().map(A::E::from_f32).collect() };
        let a1 = round(fill(m * k, seed));
        let b1 = round(fill(k * n, seed ^ 1));
        let a2 = round(fill(m * k, seed ^ 2));
        let b2 = round(fill(k * n, seed ^ 3));
        let c0 = fill(m * n, seed ^ 4);
        let out = to_atomics(&vec![f32::NAN; m * n]);
        launch((1, 1, 1), lanes, 0, || {
            let lane = arch::lane_id();
            let (a1, b1, a2, b2, c0, out) = (&a1, &b1, &a2, &b2, &c0, &out);
            let fa1 = A::load_a(lane, move |r, c| a1[r * k + c]);
            let fb1 = A::load_b(lane, move |r, c| b1[r * n + c]);
            let fa2 = A::load_a(lane, move |r, c| a2[r * k + c]);
            let fb2 = A::load_b(lane, move |r, c| b2[r * n + c]);
            let mut acc = A::C::default();
            for v in 0..A::C_VALS {
                let (r, c) = A::c_coord(lane, v);
                acc[v] = c0[r * n + c];
            }
            A::mma(&fa1, &fb1, &mut acc);
            A::mma(&fa2, &fb2, &mut acc);
            for v in 0..A::C_VALS {
                let (r, c) = A::c_coord(lane, v);
                out[r * n + c].store(acc[v].to_bits(), Ordering::Relaxed);
            }
        });
        for i in 0..m {
            for j in 0..n {
                let mut want = c0[i * n + j];
                for (a, b) in [(&a1, &b1), (&a2, &b2)] {
                    for p in 0..k {
                        want = a[i * k + p].to_f32().mul_add(b[p * n + j].to_f32(), want);
                    }
                }
                let got = f32::from_bits(out[i * n + j].load(Ordering::Relaxed));
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "C[{i}][{j}]: {got} vs {want} (seed {seed:#x})"
                );
            }
        }
    }

    /// Row max and row sum of a random `C` tile: in-lane over each row slot, then the butterfly
    /// over `A::ROW_XOR` with `arch::shfl_xor_f32` (as `fwd::run` does), against scalar row
    /// reductions. Every value of every lane must see its own row's result.
    pub fn row_reduction_matches_scalar<A: MmaAtom>(lanes: u32) {
        let seed = fresh_seed();
        let (m, n) = (A::M, A::N);
        let tile = fill(m * n, seed);
        let got_max = to_atomics(&vec![f32::NAN; lanes as usize * A::C_VALS]);
        let got_sum = to_atomics(&vec![f32::NAN; lanes as usize * A::C_VALS]);
        launch((1, 1, 1), lanes, 0, || {
            let lane = arch::lane_id();
            let mut c = A::C::default();
            for v in 0..A::C_VALS {
                let (r, col) = A::c_coord(lane, v);
                c[v] = tile[r * n + col];
            }
            let mut mx = A::Rows::default();
            let mut sum = A::Rows::default();
            for s in 0..A::ROW_SLOTS {
                mx[s] = f32::NEG_INFINITY;
            }
            for v in 0..A::C_VALS {
                let s = A::row_slot(v);
                mx[s] = mx[s].max(c[v]);
                sum[s] += c[v];
            }
            for s in 0..A::ROW_SLOTS {
                for i in 0..A::ROW_XOR.len() {
                    mx[s] = mx[s].max(arch::shfl_xor_f32(mx[s], A::ROW_XOR[i]));
                    sum[s] += arch::shfl_xor_f32(sum[s], A::ROW_XOR[i]);
                }
            }
            for v in 0..A::C_VALS {
                let at = lane as usize * A::C_VALS + v;
                got_max[at].store(mx[A::row_slot(v)].to_bits(), Ordering::Relaxed);
                got_sum[at].store(sum[A::row_slot(v)].to_bits(), Ordering::Relaxed);
            }
        });
        for lane in 0..lanes {
            for v in 0..A::C_VALS {
                let r = A::c_coord(lane, v).0;
                let row = &tile[r * n..(r + 1) * n];
                let want_max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let want_sum: f64 = row.iter().map(|&x| x as f64).sum();
                let at = (lane as usize) * A::C_VALS + v;
                let gm = f32::from_bits(got_max[at].load(Ordering::Relaxed));
                let gs = f32::from_bits(got_sum[at].load(Ordering::Relaxed));
                assert_eq!(
                    gm, want_max,
                    "max of row {r} at lane {lane} (seed {seed:#x})"
                );
                assert!(
                    (gs as f64 - want_sum).abs() <= 1e-5 * (n as f64) * 2.0,
                    "sum of row {r} at lane {lane}: {gs} vs {want_sum} (seed {seed:#x})"
                );
            }
        }
    }
}

#[cfg(not(feature = "host-wave64"))]
mod wave32 {
    use super::emulated::*;
    use attn_kernels::atom::{rdna3_wmma::Rdna3Wmma16x16x16, sm80_m16n8k16::Sm80M16N8K16};
    use attn_kernels::numeric::{Bf16, F16};

    #[test]
    fn sm80_f16_emulation_matches_scalar_gemm() {
        mma_matches_scalar_gemm::<Sm80M16N8K16<F16>>(32);
    }
    #[test]
    fn sm80_bf16_emulation_matches_scalar_gemm() {
        mma_matches_scalar_gemm::<Sm80M16N8K16<Bf16>>(32);
    }
    #[test]
    fn wmma_f16_emulation_matches_scalar_gemm() {
        mma_matches_scalar_gemm::<Rdna3Wmma16x16x16<F16>>(32);
    }
    #[test]
    fn wmma_bf16_emulation_matches_scalar_gemm() {
        mma_matches_scalar_gemm::<Rdna3Wmma16x16x16<Bf16>>(32);
    }
    #[test]
    fn sm80_row_reduction_matches_scalar() {
        row_reduction_matches_scalar::<Sm80M16N8K16<F16>>(32);
    }
    #[test]
    fn wmma_row_reduction_matches_scalar() {
        row_reduction_matches_scalar::<Rdna3Wmma16x16x16<F16>>(32);
    }
}

#[cfg(feature = "host-wave64")]
mod wave64 {
    use super::emulated::*;
    use attn_kernels::atom::cdna_mfma::CdnaMfma32x32x8;
    use attn_kernels::numeric::{Bf16, F16};

    #[test]
    fn mfma_f16_emulation_matches_scalar_gemm() {
        mma_matches_scalar_gemm::<CdnaMfma32x32x8<F16>>(64);
    }
    #[test]
    fn mfma_bf16_emulation_matches_scalar_gemm() {
        mma_matches_scalar_gemm::<CdnaMfma32x32x8<Bf16>>(64);
    }
    #[test]
    fn mfma_row_reduction_matches_scalar() {
        row_reduction_matches_scalar::<CdnaMfma32x32x8<F16>>(64);
    }
}

// ---------------------------------------------------------------------------------------------
// The forward mainloop (`fwd::run`) on the emulated atoms.

mod mainloop {
    use super::emulated::{fill, fresh_seed};
    use attn_abi::{FwdParams, WINDOW_UNBOUNDED};
    use attn_kernels::arch::host::launch;
    use attn_kernels::atom::MmaAtom;
    use attn_kernels::fwd::{self, policy};
    use attn_kernels::numeric::{Element, F16};

    /// Runs `fwd::run::<A, WAVES, TM, TN, ND, KK, SPLIT_KV>` (f16, `D = Dv = ND · A::N`) on a small problem
    /// with partial query and key blocks and grouped heads, against an f64 attention on the same
    /// rounded inputs.
    pub fn fwd_matches_reference<
        A: MmaAtom<E = F16>,
        const WAVES: usize,
        const TM: usize,
        const TN: usize,
        const ND: usize,
        const KK: usize,
        const SPLIT_KV: bool,
    >(
        vec16: bool,
    ) {
        let seed = fresh_seed();
        let (b, hq, hk, sq, sk) = (1usize, 2usize, 1usize, 40usize, 20usize);
        let d = ND * A::N;
        let (block_m, block_n) = (WAVES * TM * A::M, TN * A::N);
        let round = |v: Vec<f32>| -> Vec<F16> { v.into_iter().map(F16::from_f32).collect() };
        let q = round(fill(b * sq * hq * d, seed));
        let k = round(fill(b * sk * hk * d, seed ^ 1));
        let v = round(fill(b * sk * hk * d, seed ^ 2));
        let mut out = vec![F16(0x7e00); b * sq * hq * d];
        let mut lse = vec![f32::NAN; b * hq * sq];
        let scale = 1.0 / (d as f32).sqrt();
        let st = |s: usize, h: usize| [(s * h * d) as i64, (h * d) as i64, d as i64];
        let p = FwdParams {
            q: q.as_ptr() as u64,
            k: k.as_ptr() as u64,
            v: v.as_ptr() as u64,
            out: out.as_mut_ptr() as u64,
            lse: lse.as_mut_ptr() as u64,
            q_strides: st(sq, hq),
            k_strides: st(sk, hk),
            v_strides: st(sk, hk),
            o_strides: st(sq, hq),
            lse_strides: [(hq * sq) as i64, sq as i64],
            batch: b as u32,
            heads_q: hq as u32,
            heads_k: hk as u32,
            seqlen_q: sq as u32,
            seqlen_k: sk as u32,
            head_dim: d as u32,
            head_dim_v: d as u32,
            scale_log2: scale * std::f32::consts::LOG2_E,
            window_left: WINDOW_UNBOUNDED,
            window_right: WINDOW_UNBOUNDED,
            flags: if vec16 { attn_abi::FLAG_VEC16 } else { 0 },
            ..Default::default()
        };
        let dp = policy::padded(d, 2);
        // Room for split K/V and a P tile whatever the configuration.
        let smem = ((block_m + 2 * block_n) * dp + block_m * policy::padded(block_n, 2)) * 2;
        let grid = (sq.div_ceil(block_m) as u32, hq as u32, b as u32);
        launch(grid, policy::THREADS, smem, || {
            fwd::run::<A, WAVES, TM, TN, ND, KK, SPLIT_KV, false, false, false>(&p)
        });

        for h in 0..hq {
            let g = h / (hq / hk);
            for i in 0..sq {
                let at = |t: &[F16], s: usize, hh: usize, heads: usize, e: usize| {
                    t[(s * heads + hh) * d + e].to_f32() as f64
                };
                let logits: Vec<f64> = (0..sk)
                    .map(|j| {
                        scale as f64
                            * (0..d)
                                .map(|e| at(&q, i, h, hq, e) * at(&k, j, g, hk, e))
                                .sum::<f64>()
                    })
                    .collect();
                let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let l: f64 = logits.iter().map(|s| (s - m).exp()).sum();
                let got_lse = lse[h * sq + i] as f64;
                assert!(
                    (got_lse - (m + l.ln())).abs() < 2e-3,
                    "lse h{h} i{i}: {got_lse} vs {} (seed {seed:#x})",
                    m + l.ln()
                );
                for e in 0..d {
                    let want: f64 = (0..sk)
                        .map(|j| (logits[j] - m).exp() / l * at(&v, j, g, hk, e))
                        .sum();
                    let got = out[(i * hq + h) * d + e].to_f32() as f64;
                    assert!(
                        (got - want).abs() < 1e-2,
                        "out h{h} i{i} e{e}: {got} vs {want} (seed {seed:#x})"
                    );
                }
            }
        }
    }
}

#[cfg(not(feature = "host-wave64"))]
#[test]
fn fwd_runs_on_the_sm80_atom() {
    use attn_kernels::numeric::F16;
    // 4 warps × 16 rows; BLOCK_N = 2 · 8; D = 4 · 8; both K/V buffer schemes, both copy paths.
    mainloop::fwd_matches_reference::<sm80::Sm80M16N8K16<F16>, 4, 1, 2, 4, 1, true>(true);
    mainloop::fwd_matches_reference::<sm80::Sm80M16N8K16<F16>, 4, 1, 2, 4, 1, false>(false);
}

#[cfg(not(feature = "host-wave64"))]
#[test]
fn fwd_runs_on_the_wmma_atom() {
    use attn_kernels::numeric::F16;
    // 4 waves × 16 rows; BLOCK_N = 16; D = 2 · 16.
    mainloop::fwd_matches_reference::<rdna3_wmma::Rdna3Wmma16x16x16<F16>, 4, 1, 1, 2, 1, false>(
        true,
    );
}

#[cfg(feature = "host-wave64")]
#[test]
fn fwd_runs_on_the_mfma_atom() {
    use attn_kernels::numeric::F16;
    // 2 waves × 32 rows; BLOCK_N = 32; D = 32.
    mainloop::fwd_matches_reference::<cdna_mfma::CdnaMfma32x32x8<F16>, 2, 1, 1, 1, 4, false>(true);
}

/// Checks `A::KEY_GROUPS` / `A::key_group` from the maps alone: on every lane, the values of one
/// group share their row and their aligned 8-key column group (so one Philox draw serves them),
/// and every group is non-empty.
fn check_key_groups<A: MmaAtom>(lanes: u32) {
    for lane in 0..lanes {
        let mut seen = vec![None; A::KEY_GROUPS];
        for v in 0..A::C_VALS {
            let g = A::key_group(v);
            assert!(
                g < A::KEY_GROUPS,
                "value {v}: group {g} >= {}",
                A::KEY_GROUPS
            );
            if v > 0 {
                assert!(
                    g >= A::key_group(v - 1),
                    "value {v}: groups are not consecutive runs"
                );
            }
            let (r, c) = A::c_coord(lane, v);
            match seen[g] {
                None => seen[g] = Some((r, c / 8)),
                Some(rc) => assert_eq!(
                    rc,
                    (r, c / 8),
                    "lane {lane}: group {g} mixes rows/key groups"
                ),
            }
        }
        assert!(seen.iter().all(Option::is_some), "lane {lane}: empty group");
    }
}

#[test]
fn key_groups_share_row_and_eight_key_group() {
    use attn_kernels::atom::fma::FmaAtom;
    use attn_kernels::numeric::{Bf16, F16};
    check_key_groups::<sm80::Sm80M16N8K16<F16>>(32);
    check_key_groups::<cdna_mfma::CdnaMfma32x32x8<Bf16>>(64);
    check_key_groups::<rdna3_wmma::Rdna3Wmma16x16x16<F16>>(32);
    check_key_groups::<FmaAtom<f32>>(attn_kernels::arch::WAVE);
}

/// A group that mixes two rows must fail the check (the check is able to fail).
#[test]
#[should_panic(expected = "mixes rows")]
fn a_wrong_key_group_is_caught() {
    struct Bad;
    impl MmaAtom for Bad {
        type E = f32;
        const M: usize = sm80::M;
        const N: usize = sm80::N;
        const K: usize = 16;
        const A_VALS: usize = 8;
        const B_VALS: usize = 4;
        const C_VALS: usize = 4;
        const ROW_SLOTS: usize = 2;
        const ROW_XOR: &'static [u32] = &[1, 2];
        const KEY_GROUPS: usize = 1;
        type A = [f32; 8];
        type B = [f32; 4];
        type C = [f32; 4];
        type Rows = [f32; 2];
        fn a_coord(lane: u32, v: usize) -> (usize, usize) {
            sm80::a_coord(lane, v)
        }
        fn b_coord(lane: u32, v: usize) -> (usize, usize) {
            sm80::b_coord(lane, v)
        }
        fn c_coord(lane: u32, v: usize) -> (usize, usize) {
            sm80::c_coord(lane, v)
        }
        fn row_slot(v: usize) -> usize {
            v >> 1
        }
        fn key_group(_v: usize) -> usize {
            0
        }
        fn load_a(_: u32, _: impl Fn(usize, usize) -> f32) -> [f32; 8] {
            [0.0; 8]
        }
        fn load_b(_: u32, _: impl Fn(usize, usize) -> f32) -> [f32; 4] {
            [0.0; 4]
        }
        fn mma(_: &[f32; 8], _: &[f32; 4], _: &mut [f32; 4]) {}
    }
    check_key_groups::<Bad>(32);
}
