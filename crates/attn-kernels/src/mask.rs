//! Visibility of key `j` to query `i` (semantics.md §3) and the key-block range it implies.
use attn_abi::{FwdParams, MASK_BOTTOM_RIGHT, MASK_WINDOW, WINDOW_UNBOUNDED};

/// A window mask with its diagonal offset resolved for one sequence.
///
/// `j` is visible to `i` iff `0 <= j < sk` and, when `window` is set,
/// `i + off - left <= j <= i + off + right` (an unbounded side is skipped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mask {
    /// Keys in this sequence.
    pub sk: i64,
    /// Diagonal offset: 0 (top-left) or `sk - sq` (bottom-right).
    pub off: i64,
    /// Whether the window applies at all.
    pub window: bool,
    /// Left extent, `None` = unbounded.
    pub left: Option<i64>,
    /// Right extent, `None` = unbounded.
    pub right: Option<i64>,
}

impl Mask {
    /// The mask of `p` for a sequence of `sq` queries and `sk` (used) keys.
    #[inline(always)]
    pub fn from_params(p: &FwdParams, sq: usize, sk: usize) -> Self {
        let (sq, sk) = (sq as i64, sk as i64);
        let bound = |w: i32| (w != WINDOW_UNBOUNDED).then_some(w as i64);
        Mask {
            sk,
            off: if p.flags & MASK_BOTTOM_RIGHT != 0 {
                sk - sq
            } else {
                0
            },
            window: p.flags & MASK_WINDOW != 0,
            left: bound(p.window_left),
            right: bound(p.window_right),
        }
    }

    /// Whether key `j` is visible to query `i`.
    #[inline(always)]
    pub fn visible(&self, i: i64, j: i64) -> bool {
        if j < 0 || j >= self.sk {
            return false;
        }
        if !self.window {
            return true;
        }
        let d = i + self.off;
        self.left.is_none_or(|l| j >= d - l) && self.right.is_none_or(|r| j <= d + r)
    }

    /// `(lo, hi)` such that `j` is visible to `i` iff `i + lo <= j <= i + hi` and `0 <= j < sk`,
    /// for branch-free tests (an unbounded side is a bound no sequence reaches, `±2^40`).
    #[inline(always)]
    pub fn diagonal_bounds(&self) -> (i64, i64) {
        const FAR: i64 = 1 << 40;
        if !self.window {
            return (-FAR, FAR);
        }
        (
            self.left.map_or(-FAR, |l| self.off - l),
            self.right.map_or(FAR, |r| self.off + r),
        )
    }

    /// Whether every key of `cols` is visible to every query of `rows` (both non-empty): such a
    /// block needs no per-element masking.
    #[inline(always)]
    pub fn block_is_full(&self, rows: core::ops::Range<i64>, cols: core::ops::Range<i64>) -> bool {
        if cols.start < 0 || cols.end > self.sk {
            return false;
        }
        if !self.window {
            return true;
        }
        // The tightest row for each side: the last row for the left bound, the first row for
        // the right bound.
        self.left
            .is_none_or(|l| cols.start >= rows.end - 1 + self.off - l)
            && self
                .right
                .is_none_or(|r| cols.end - 1 <= rows.start + self.off + r)
    }

    /// Half-open range of key blocks (of `bn` keys) that hold a visible key for some query row in
    /// `rows` (`rows.start < rows.end`). Blocks outside it are skipped, not masked.
    #[inline(always)]
    pub fn key_blocks(&self, rows: core::ops::Range<i64>, bn: i64) -> (i64, i64) {
        let mut lo = 0;
        let mut hi = self.sk - 1;
        if self.window {
            if let Some(l) = self.left {
                lo = lo.max(rows.start + self.off - l);
            }
            if let Some(r) = self.right {
                hi = hi.min(rows.end - 1 + self.off + r);
            }
        }
        if hi < lo {
            (0, 0)
        } else {
            (lo / bn, hi / bn + 1)
        }
    }
}

impl Mask {
    /// Half-open range of query blocks (of `bm` rows, `sq` rows in all) that see some key of
    /// `cols`: the backward's key-major walk (the transpose of [`Mask::key_blocks`]). Blocks
    /// outside it are skipped, not masked.
    #[inline(always)]
    pub fn query_blocks(&self, cols: core::ops::Range<i64>, bm: i64, sq: i64) -> (i64, i64) {
        let (c0, c1) = (cols.start.max(0), cols.end.min(self.sk));
        if c0 >= c1 || sq <= 0 {
            return (0, 0);
        }
        // j - i in [lo, hi]  <=>  i in [j - hi, j - lo].
        let (lo, hi) = self.diagonal_bounds();
        let first = (c0 - hi).max(0);
        let last = (c1 - 1 - lo).min(sq - 1);
        if last < first {
            (0, 0)
        } else {
            (first / bm, last / bm + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masks() -> impl Iterator<Item = Mask> {
        let sides = [None, Some(0), Some(1), Some(5)];
        [
            (1i64, 1i64),
            (7, 3),
            (3, 7),
            (17, 17),
            (1, 40),
            (40, 1),
            (33, 65),
        ]
        .into_iter()
        .flat_map(move |(sq, sk)| {
            [false, true].into_iter().flat_map(move |br| {
                sides.into_iter().flat_map(move |left| {
                    sides.into_iter().flat_map(move |right| {
                        [false, true].into_iter().map(move |window| {
                            (
                                sq,
                                Mask {
                                    sk,
                                    off: if br { sk - sq } else { 0 },
                                    window,
                                    left,
                                    right,
                                },
                            )
                        })
                    })
                })
            })
        })
        .map(|(_, m)| m)
    }

    #[test]
    fn key_blocks_cover_every_visible_key() {
        for m in masks() {
            for sq in [1i64, 5, 16, 40] {
                for bm in [1i64, 4, 16] {
                    for bn in [1i64, 3, 8, 16] {
                        let mut r0 = 0;
                        while r0 < sq {
                            let rows = r0..(r0 + bm).min(sq);
                            let (lo, hi) = m.key_blocks(rows.clone(), bn);
                            for i in rows.clone() {
                                for j in -2..m.sk + 2 {
                                    if m.visible(i, j) {
                                        assert!(
                                            j / bn >= lo && j / bn < hi,
                                            "{m:?} i={i} j={j} bn={bn} -> {lo}..{hi}"
                                        );
                                    }
                                }
                            }
                            // The range is tight at its ends: its first and last blocks hold a
                            // visible key (blocks are skipped, not masked).
                            if hi > lo {
                                for blk in [lo, hi - 1] {
                                    let any = rows.clone().any(|i| {
                                        (blk * bn..(blk + 1) * bn).any(|j| m.visible(i, j))
                                    });
                                    assert!(any, "{m:?} rows {rows:?} block {blk} empty");
                                }
                            }
                            r0 += bm;
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn query_blocks_cover_every_visible_query_and_are_tight() {
        for m in masks() {
            for sq in [1i64, 5, 16, 40] {
                for bm in [1i64, 4, 16] {
                    for bn in [1i64, 3, 8, 16] {
                        let mut c0 = 0;
                        while c0 < m.sk + 3 {
                            let cols = c0..c0 + bn;
                            let (lo, hi) = m.query_blocks(cols.clone(), bm, sq);
                            for i in 0..sq {
                                for j in cols.clone() {
                                    if m.visible(i, j) {
                                        assert!(
                                            i / bm >= lo && i / bm < hi,
                                            "{m:?} i={i} j={j} bm={bm} -> {lo}..{hi}"
                                        );
                                    }
                                }
                            }
                            if hi > lo {
                                for blk in [lo, hi - 1] {
                                    let any = (blk * bm..((blk + 1) * bm).min(sq))
                                        .any(|i| cols.clone().any(|j| m.visible(i, j)));
                                    assert!(any, "{m:?} cols {cols:?} block {blk} empty");
                                }
                            }
                            c0 += bn;
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn full_blocks_are_exactly_those_with_every_key_visible() {
        for m in masks() {
            for (r0, r1) in [(0i64, 1i64), (0, 4), (3, 9), (10, 26), (30, 40)] {
                for (c0, c1) in [(0i64, 1i64), (0, 8), (5, 13), (16, 32), (60, 70)] {
                    let all = (r0..r1).all(|i| (c0..c1).all(|j| m.visible(i, j)));
                    assert_eq!(
                        m.block_is_full(r0..r1, c0..c1),
                        all,
                        "{m:?} rows {r0}..{r1} cols {c0}..{c1}"
                    );
                }
            }
        }
    }

    #[test]
    fn diagonal_bounds_agree_with_visible() {
        for m in masks() {
            let (lo, hi) = m.diagonal_bounds();
            for i in 0..45 {
                for j in 0..m.sk + 3 {
                    let fast = j >= i + lo && j <= i + hi && j < m.sk;
                    assert_eq!(fast, m.visible(i, j), "{m:?} i={i} j={j}");
                }
            }
        }
    }

    #[test]
    fn causal_is_window_left_unbounded_right_zero() {
        let m = Mask {
            sk: 10,
            off: 3,
            window: true,
            left: None,
            right: Some(0),
        };
        for i in 0..7 {
            for j in 0..10 {
                assert_eq!(m.visible(i, j), j <= i + 3);
            }
        }
    }
}
