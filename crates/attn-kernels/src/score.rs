//! The score pieces: what happens to one element of the `S = Q·Kᵀ` tile between the matrix
//! product and the softmax (semantics.md §2, §4), written once for the forward, the backward,
//! decode and every atom.
//!
//! For query row `i`, key `j` (local to the sequence) and the raw product `r = q_i·k_j`, the
//! logit in the log2 domain is
//!
//! ```text
//! x_ij = log2(e) · ( s_ij + bias_ij - slope · |i + off - j| ),
//! s_ij = scale · r                           without softcap
//!      = cap · tanh(scale · r / cap)         with softcap cap > 0
//! ```
//!
//! and dropout multiplies the probability `P_ij` by `Z_ij = keep_ij / (1 - p)` (the `1/(1 - p)`
//! is applied once to the output row). Each piece is a small `Copy` value built from the kernel
//! parameters for one `(sequence, head)`, with its forward map and, for the backward, its
//! derivative. [`Scores`] holds the scale, softcap and ALiBi; the forward's score loop composes
//! them with the bias, whose tiles it stages in shared memory with the K tiles (coalesced,
//! asynchronous) and reads through the atom's lane map. Which pieces are present is a
//! compile-time choice of that loop (one straight-line instance per combination).
//!
//! Visibility (the mask) is not a score piece: it is [`crate::mask::Mask`], applied by the caller
//! before a score is computed (a hidden element's bias is never read).
use crate::arch::{exp2, rcp};
use crate::numeric::Element;
use attn_abi::{FLAG_DROPOUT, FwdParams};

const LOG2_E: f32 = core::f32::consts::LOG2_E;
const LN_2: f32 = core::f32::consts::LN_2;

/// `tanh(x)` in f32 to a few ulp, from `exp2` and `rcp` only (every target has those fast).
///
/// `|x| < 0.625`: the odd minimax polynomial of Cephes' `tanhf` (no cancellation near 0);
/// otherwise `1 - 2 / (e^{2|x|} + 1)` with the sign restored (`e^{2|x|} = inf` gives 1).
#[inline(always)]
#[allow(clippy::excessive_precision)] // Cephes' coefficients, as published
pub fn tanh(x: f32) -> f32 {
    // Both branches are computed and one is selected: no branch per element in the kernels.
    let a = x.abs();
    let z = x * x;
    let p = ((((-5.704_988_7e-3 * z + 2.063_908_9e-2) * z - 5.373_971_6e-2) * z + 1.333_144_2e-1)
        * z
        - 3.333_328_2e-1)
        * z;
    let small = p * x + x;
    let e = exp2(2.0 * LOG2_E * a);
    let t = 1.0 - 2.0 * rcp(e + 1.0);
    let large = f32::from_bits(t.to_bits() | (x.to_bits() & 0x8000_0000));
    if a < 0.625 { small } else { large }
}

/// `s = cap · tanh(scale · r / cap)`, in the log2 domain.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Softcap {
    /// `scale / cap`.
    inner: f32,
    /// `cap · log2(e)`.
    outer: f32,
}

impl Softcap {
    /// A placeholder for calls without softcap (never applied).
    pub const IDENTITY: Softcap = Softcap {
        inner: 0.0,
        outer: 0.0,
    };

    /// The softcap of `p` (`p.softcap > 0`), with the softmax scale `p.scale_log2 / log2(e)`.
    #[inline(always)]
    pub fn new(p: &FwdParams) -> Option<Self> {
        (p.softcap > 0.0).then(|| Softcap {
            inner: p.scale_log2 * LN_2 / p.softcap,
            outer: p.softcap * LOG2_E,
        })
    }
    /// The log2-domain score of the raw product `r`.
    #[inline(always)]
    pub fn apply(&self, r: f32) -> f32 {
        self.outer * tanh(r * self.inner)
    }
    /// `d s / d s_lin` with `s_lin = scale · r`: `1 - tanh²(scale · r / cap)`.
    #[inline(always)]
    pub fn grad(&self, r: f32) -> f32 {
        let t = tanh(r * self.inner);
        1.0 - t * t
    }
}

/// ALiBi: `-slope · |i + off - j|`, with the mask's diagonal offset `off`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Alibi {
    /// `slope · log2(e)`.
    slope: f32,
    off: i64,
}

impl Alibi {
    /// The ALiBi term of sequence `b`, head `h` in `p` with diagonal offset `off`, if any.
    #[inline(always)]
    pub fn new(p: &FwdParams, b: usize, h: usize, off: i64) -> Option<Self> {
        if p.alibi == 0 {
            return None;
        }
        // SAFETY: the host checked that the slopes hold `[Hq]` or `[nb, Hq]` f32 values.
        let slope = unsafe { *(p.alibi as *const f32).add(b * p.alibi_stride as usize + h) };
        Some(Alibi {
            slope: slope * LOG2_E,
            off,
        })
    }
}

/// The score pieces of one `(sequence, head)`, composed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scores {
    /// `scale · log2(e)`.
    pub scale_log2: f32,
    /// Its rounding residual (`FwdParams::scale_log2_lo`), used by f32 kernels.
    pub scale_log2_lo: f32,
    /// Softcap, if any.
    pub softcap: Option<Softcap>,
    /// ALiBi, if any.
    pub alibi: Option<Alibi>,
}

impl Scores {
    /// The pieces of sequence `b`, head `h` of `p`, with the mask's diagonal offset `off`.
    #[inline(always)]
    pub fn new(p: &FwdParams, b: usize, h: usize, off: i64) -> Self {
        Scores {
            scale_log2: p.scale_log2,
            scale_log2_lo: p.scale_log2_lo,
            softcap: Softcap::new(p),
            alibi: Alibi::new(p, b, h, off),
        }
    }

    /// ALiBi's `(slope · log2(e), off)`, `(0, 0)` without ALiBi (its term is then 0: branch-free).
    #[inline(always)]
    pub fn alibi_terms(&self) -> (f32, i64) {
        match self.alibi {
            Some(a) => (a.slope, a.off),
            None => (0.0, 0),
        }
    }

    /// Scale only: no softcap, bias or ALiBi.
    #[inline(always)]
    pub fn plain(p: &FwdParams) -> Self {
        Scores {
            scale_log2: p.scale_log2,
            scale_log2_lo: p.scale_log2_lo,
            softcap: None,
            alibi: None,
        }
    }

    /// `scale · log2(e) · r`: in f32 kernels (`E = f32`) with the scale as `hi + lo`, so that its
    /// rounding does not tilt every logit of a row by the same factor.
    #[inline(always)]
    pub fn scale<E: Element>(&self, r: f32) -> f32 {
        if matches!(E::DTYPE, attn_abi::DType::F32) {
            crate::arch::fma(r, self.scale_log2, r * self.scale_log2_lo)
        } else {
            r * self.scale_log2
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dropout.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Philox4x32-10 (Random123's constants and round function).
#[inline(always)]
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = ctr;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let p0 = M0 as u64 * c[0] as u64;
        let p1 = M1 as u64 * c[2] as u64;
        c = [
            (p1 >> 32) as u32 ^ c[1] ^ k[0],
            p1 as u32,
            (p0 >> 32) as u32 ^ c[3] ^ k[1],
            p0 as u32,
        ];
    }
    c
}

/// The dropout of one `(sequence b, head h)`: the counter scheme of semantics.md §4.
///
/// Element `(i, j)` draws `r = 16 bits of philox([j / 8, i, c, c >> 32], key)`, `c = offset +
/// b·Hq + h`, word `(j % 8) / 2`, half `j % 2`; it is kept iff `r >= threshold`. One draw serves
/// the 8 keys of an aligned key group of one row ([`crate::atom::MmaAtom::KEY_GROUPS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dropout {
    key: [u32; 2],
    c: [u32; 2],
    threshold: u32,
}

impl Dropout {
    /// The dropout of sequence `b`, head `h` of `p`, if it is active. Reads the device seed and
    /// offset when the call passed pointers (graph-safe generators).
    #[inline(always)]
    pub fn new(p: &FwdParams, b: usize, h: usize) -> Option<Self> {
        if p.flags & FLAG_DROPOUT == 0 {
            return None;
        }
        // The host checked that non-null seed/offset pointers are 8-byte aligned device addresses
        // of one u64 each.
        let seed = if p.seed_ptr != 0 {
            // SAFETY: see above.
            unsafe { *(p.seed_ptr as *const u64) }
        } else {
            p.seed
        };
        let base = if p.offset_ptr != 0 {
            // SAFETY: see above.
            unsafe { *(p.offset_ptr as *const u64) }
        } else {
            0
        };
        let c = base
            .wrapping_add(p.offset)
            .wrapping_add(b as u64 * p.heads_q as u64 + h as u64);
        Some(Dropout {
            key: [seed as u32, (seed >> 32) as u32],
            c: [c as u32, (c >> 32) as u32],
            threshold: p.dropout_threshold,
        })
    }

    /// The four Philox words of row `i`, key group `j / 8`.
    #[inline(always)]
    pub fn draw(&self, i: i64, j: i64) -> [u32; 4] {
        philox4x32_10(
            [(j as u64 / 8) as u32, i as u32, self.c[0], self.c[1]],
            self.key,
        )
    }

    /// Whether key `j` is kept, from the draw `w` of its key group.
    #[inline(always)]
    pub fn keep(&self, w: &[u32; 4], j: i64) -> bool {
        let k = (j as usize % 8) / 2;
        // A select chain, not an indexed load: `w` stays in registers.
        let word = if k == 0 {
            w[0]
        } else if k == 1 {
            w[1]
        } else if k == 2 {
            w[2]
        } else {
            w[3]
        };
        let r = if j % 2 == 0 {
            word & 0xFFFF
        } else {
            word >> 16
        };
        r >= self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tanh_matches_std_to_a_few_ulp() {
        let mut worst = 0.0f64;
        let mut x = -12.0f32;
        while x < 12.0 {
            let got = tanh(x) as f64;
            let want = (x as f64).tanh();
            let ulp = (want.abs() as f32).max(f32::MIN_POSITIVE) as f64 * f32::EPSILON as f64;
            worst = worst.max((got - want).abs() / ulp);
            x += 0.001_37;
        }
        assert!(worst < 4.0, "tanh error {worst} ulp");
        assert_eq!(tanh(100.0), 1.0);
        assert_eq!(tanh(-100.0), -1.0);
        assert_eq!(tanh(0.0), 0.0);
    }

    #[test]
    fn philox_known_answers() {
        // Random123 kat_vectors: philox4x32_10.
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0]
            ),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }
}
