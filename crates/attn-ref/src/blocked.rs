//! The low-precision blocked forward: the kernel's algorithm and rounding, tile by tile.
//!
//! Per `(sequence, head)`, for each tile of `block_m` query rows and each tile of `block_n` keys:
//!
//! ```text
//! x_ij  = s_ij * (scale * log2 e)                 f32, s_ij = dot(q_i, k_j) accumulated in f32
//!       (softcap: x_ij = cap * tanh(s_ij * scale / cap) * log2 e)
//!       + bias_ij * log2 e - slope * log2 e * |i + off - j|,   -inf where masked
//! m_new = max(m, max_j x_ij)                      (0 is used in place of -inf: no NaN from -inf - -inf)
//! P_ij  = exp2(x_ij - m_new)                      f32
//! l     = l * exp2(m - m_new) + sum_j P_ij        (before dropout: lse is independent of it)
//! acc   = acc * exp2(m - m_new) + sum_j round_dtype(P_ij) * keep_ij * v_j     f32
//!         (f32: each tile's two sums are formed first and then added, as the f32 kernels do)
//! O_i   = round_dtype(acc * (rescale / l)),   lse_i = (m + log2 l) * ln 2;  O_i = 0, lse_i = -inf if l = 0
//! ```

use crate::naive::gather;
use crate::{Error, Inputs, Problem, Seq, Tensor, dropout};
use rayon::prelude::*;

/// Result of [`forward_blocked`], in the kernel's precision.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockedOutput {
    /// `[B, Sq, Hq, Dv]` row-major, rounded to the problem's dtype.
    pub out: Vec<f32>,
    /// `[B, Hq, Sq]` (varlen `[Hq, total_q]`), f32.
    pub lse: Vec<f32>,
}

/// The blocked low-precision forward with tiles of `block_m` query rows and `block_n` keys (both >= 1).
///
/// ```
/// use attn_ref::{Dtype, Inputs, Problem, forward, forward_blocked};
/// let p = Problem::new(Dtype::F16, 1, 5, 7, 2, 2, 8, 8);
/// let x = Inputs::random(&p, 3, 1.0);
/// let truth = forward(&p, &x).unwrap();
/// let lowp = forward_blocked(&p, &x, 2, 3).unwrap();
/// for (a, b) in lowp.out.iter().zip(&truth.out) {
///     assert!((*a as f64 - b).abs() < 4e-3);
/// }
/// ```
pub fn forward_blocked(
    p: &Problem,
    x: &Inputs,
    block_m: usize,
    block_n: usize,
) -> Result<BlockedOutput, Error> {
    p.validate_inputs(x)?;
    if block_m == 0 || block_n == 0 {
        return Err(Error::invalid(
            "block sizes",
            ">= 1",
            format!("{block_m}x{block_n}"),
        ));
    }
    let (hq, d, dv) = (p.heads_q, p.head_dim, p.head_dim_v);
    let dtype = p.dtype;
    let tasks: Vec<(Seq, usize)> = p
        .seqs()
        .into_iter()
        .flat_map(|s| (0..hq).map(move |h| (s, h)))
        .collect();
    let results: Vec<(Seq, usize, Vec<f32>, Vec<f32>)> = tasks
        .into_par_iter()
        .map(|(s, h)| {
            let g = h / p.group();
            let q = gather::<f32>(&x.q, s.batch, s.q_start, s.sq, h, d);
            let k = gather::<f32>(&x.k, s.batch, s.k_start, s.sk, g, d);
            let v = gather::<f32>(&x.v, s.batch, s.k_start, s.sk, g, dv);
            let scores = Logits::new(p, x, s, h);
            let rescale = p.dropout.map_or(1.0, |dd| dd.rescale());
            let mut o = vec![0.0f32; s.sq * dv];
            let mut lse = vec![f32::NEG_INFINITY; s.sq];
            let mut xt = vec![0.0f32; block_n];
            let mut keep = vec![1u8; block_n];
            for i0 in (0..s.sq).step_by(block_m) {
                let i1 = (i0 + block_m).min(s.sq);
                for i in i0..i1 {
                    // Rows of one tile are independent; iterate the key tiles per row in tile order.
                    let qi = &q[i * d..(i + 1) * d];
                    let mut m = f32::NEG_INFINITY;
                    let mut l = 0.0f32;
                    let mut acc = vec![0.0f32; dv];
                    let mut blk = vec![0.0f32; dv];
                    for j0 in (0..s.sk).step_by(block_n) {
                        let j1 = (j0 + block_n).min(s.sk);
                        let n = j1 - j0;
                        let mut tile_max = f32::NEG_INFINITY;
                        for (t, j) in (j0..j1).enumerate() {
                            let val = scores.logit(i, j, qi, &k[j * d..(j + 1) * d]).0;
                            xt[t] = val;
                            tile_max = tile_max.max(val);
                        }
                        let m_new = m.max(tile_max);
                        let m_use = if m_new == f32::NEG_INFINITY {
                            0.0
                        } else {
                            m_new
                        };
                        let corr = (m - m_use).exp2();
                        l *= corr;
                        acc.iter_mut().for_each(|a| *a *= corr);
                        if let Some(dd) = &p.dropout {
                            dropout::keep_row(dd, hq, s.b, h, i, j0..j1, &mut keep[..n]);
                        }
                        // f32, as the f32 kernels: the tile's row sum and P·V are summed
                        // into fresh values and then added (two-level summation); 16-bit
                        // kernels accumulate in place.
                        let two_level = dtype == crate::Dtype::F32;
                        let mut l_blk = 0.0f32;
                        blk.iter_mut().for_each(|a| *a = 0.0);
                        for t in 0..n {
                            let pij = (xt[t] - m_use).exp2();
                            if two_level {
                                l_blk += pij;
                            } else {
                                l += pij;
                            }
                            let pr = dtype.round(pij);
                            if pr != 0.0 && keep[t] != 0 {
                                let vj = &v[(j0 + t) * dv..(j0 + t + 1) * dv];
                                let dst = if two_level { &mut blk } else { &mut acc };
                                for (a, &vv) in dst.iter_mut().zip(vj) {
                                    *a += pr * vv;
                                }
                            }
                        }
                        if two_level {
                            l += l_blk;
                            acc.iter_mut().zip(&blk).for_each(|(a, b)| *a += b);
                        }
                        m = m_new;
                    }
                    if l > 0.0 {
                        let f = rescale / l;
                        for (c, a) in acc.iter().enumerate() {
                            o[i * dv + c] = dtype.round(a * f);
                        }
                        lse[i] = (m + l.log2()) * std::f32::consts::LN_2;
                    }
                }
            }
            (s, h, o, lse)
        })
        .collect();
    let mut out = vec![0.0f32; p.out_shape().iter().product()];
    let mut lse = vec![f32::NEG_INFINITY; p.lse_len()];
    for (s, h, o, l) in results {
        for i in 0..s.sq {
            let base = ((s.batch * p.seqlen_q + s.q_start + i) * hq + h) * dv;
            out[base..base + dv].copy_from_slice(&o[i * dv..(i + 1) * dv]);
            lse[p.lse_index(&s, h, i)] = l[i];
        }
    }
    Ok(BlockedOutput { out, lse })
}

/// The blocked path's log2-domain logits `x_ij` of one (sequence, query head), shared by
/// [`forward_blocked`] and [`crate::backward_blocked`] so that both see bit-identical scores.
pub(crate) struct Logits<'a> {
    p: &'a Problem,
    bias: Option<&'a Tensor>,
    s: Seq,
    h: usize,
    /// The natural softmax scale.
    scale: f32,
    /// `scale * log2(e)` rounded to f32 (the 16-bit kernels' factor).
    scale_log2: f32,
    /// `scale * log2(e)` in f64 (the f32 kernels apply it without rounding the factor).
    scale_log2_exact: f64,
    /// ALiBi slope times `log2(e)` (0 without ALiBi).
    slope_log2: f32,
    /// The mask's (and ALiBi's) diagonal offset `off_b`.
    off: i64,
}

impl<'a> Logits<'a> {
    /// The logits of query head `h` of sequence `s`.
    pub(crate) fn new(p: &'a Problem, x: &'a Inputs, s: Seq, h: usize) -> Self {
        let log2e = std::f32::consts::LOG2_E;
        let scale = p.softmax_scale();
        Logits {
            p,
            bias: x.bias.as_ref(),
            s,
            h,
            scale,
            scale_log2: scale * log2e,
            scale_log2_exact: scale as f64 * std::f64::consts::LOG2_E,
            slope_log2: p
                .alibi
                .as_ref()
                .map_or(0.0, |a| a.slope(p.heads_q, s.b, h) * log2e),
            off: p.mask.align().offset(s.sq, s.sk),
        }
    }

    /// `(x_ij, t_ij)` for query row `qi` (local row `i`) and key row `kj` (local key `j`): the
    /// log2-domain logit (`-inf` where the mask hides `j`), and with softcap
    /// `t_ij = tanh(s_ij * scale / cap)` (0 without softcap), `s_ij = dot(q_i, k_j)` in f32.
    #[inline]
    pub(crate) fn logit(&self, i: usize, j: usize, qi: &[f32], kj: &[f32]) -> (f32, f32) {
        let p = self.p;
        if !p.mask.visible(i, j, self.s.sq, self.s.sk) {
            return (f32::NEG_INFINITY, 0.0);
        }
        let log2e = std::f32::consts::LOG2_E;
        let cap = p.softcap;
        let mut acc_s = 0.0f32;
        for (a, b) in qi.iter().zip(kj) {
            acc_s += a * b;
        }
        let mut t = 0.0;
        let mut xv = if cap > 0.0 {
            t = (acc_s * self.scale / cap).tanh();
            cap * t * log2e
        } else if p.dtype == crate::Dtype::F32 {
            // f32 kernels scale by scale·log2(e) in two parts (no systematic rounding of the
            // scale): one rounding here.
            (acc_s as f64 * self.scale_log2_exact) as f32
        } else {
            acc_s * self.scale_log2
        };
        if let Some(b) = self.bias {
            xv += b.get([self.s.b, self.h, i, j]) * log2e;
        }
        if self.slope_log2 != 0.0 {
            xv -= self.slope_log2 * (i as i64 + self.off - j as i64).unsigned_abs() as f32;
        }
        (xv, t)
    }
}
