//! The low-precision backward: the GPU kernels' arithmetic and rounding, in f32.
//!
//! The backward counterpart of [`crate::forward_blocked`]. For sequence `b`, query head `h` (kv head
//! `g = h / (Hq / Hk)`), query row `i`, key `j` (local indices), with `out` and `lse` the blocked
//! forward's (`out` rounded to the dtype, `lse` in f32) and `round` rounding to the problem's dtype
//! (the identity for f32 problems):
//!
//! ```text
//! x_ij    = forward_blocked's log2-domain logit           s_ij = dot(q_i, k_j) in f32; -inf where masked
//! P_ij    = exp2(x_ij - lse_i * log2 e)                   f32; 0 when lse_i = -inf
//! delta_i = sum_c round(dout_ic) * round(out_ic)          f32
//! Z_ij    = keep_ij ? rescale : 0                         rescale = 1 / (1 - p) in f32, keep as the forward
//! dV_j   += round(P_ij * Z_ij) * dout_i                   f32 accumulator
//! dP_ij   = dot(dout_i, v_j)                              f32
//! dS_ij   = P_ij * fma(dP_ij, Z_ij, -delta_i)             f32; this is dBias_ij (returned in f32)
//! dS'_ij  = dS_ij * (1 - t_ij * t_ij)                     softcap only, t_ij = tanh(s_ij * scale / cap)
//! dQ_i    = round(scale * sum_j round(dS'_ij) * k_j)      f32 accumulator, scaled once at the end
//! dK_j    = round(scale * sum_i round(dS'_ij) * q_i)      GQA: one f32 sum over the group's query heads
//! dV_j    = round(dV_j)
//! ```
//!
//! `scale` is the natural softmax scale ([`Problem::softmax_scale`]). As in the kernels, `dS` is
//! rounded to the input dtype before it multiplies `K` and `Q` (the matrix products take 16-bit
//! operands), `P·Z` before it multiplies `dout`, and each gradient once when it is stored (`dbias`
//! in the bias's dtype). The
//! kernels' `dP·Z - delta` is one fused multiply-add, hence `fma` above.
//!
//! Sums run in index order (`j` ascending for `dQ`; query head, then `i` ascending, for `dK` and
//! `dV`); a kernel's tile order differs only by f32 reassociation.
//!
//! Rows outside every sequence, keys past `seqused_k`, rows whose `lse` is `-inf` and masked
//! positions of `dbias` are 0.

use crate::blocked::Logits;
use crate::naive::{Part, assemble, check_backward_args, gather, tasks};
use crate::{Dtype, Error, Inputs, Problem, Seq, Tensor, dropout};
use rayon::prelude::*;

/// Result of [`backward_blocked`], in the kernels' precision; the layouts of [`crate::BackwardOutput`].
#[derive(Clone, Debug, PartialEq)]
pub struct BlockedBackward {
    /// `[B, Sq, Hq, D]` row-major, rounded to the problem's dtype.
    pub dq: Vec<f32>,
    /// `[B, Sk, Hk, D]` (summed over each kv head's group), rounded to the problem's dtype.
    pub dk: Vec<f32>,
    /// `[B, Sk, Hk, Dv]` (summed over each kv head's group), rounded to the problem's dtype.
    pub dv: Vec<f32>,
    /// `dS` in [`Problem::bias_shape`], full (never broadcast), in f32; `Some` when requested and
    /// the problem has a bias.
    pub dbias: Option<Vec<f32>>,
    /// `delta_i = dot(dout_i, out_i)` in f32, in the `lse` layout.
    pub delta: Vec<f32>,
}

/// The blocked low-precision backward of `sum(out * dout)`.
///
/// `dout` is `[B, Sq, Hq, Dv]` (any strides; read rounded to the problem's dtype), `out` the
/// forward's output rounded to the dtype (row-major `[B, Sq, Hq, Dv]`, as
/// [`crate::forward_blocked`] returns it) and `lse` the forward's f32 log-sum-exp in the `lse`
/// layout. `dbias` is computed when `want_dbias` and the problem has a bias. The formulas are in
/// the module docs; the errors are those of [`crate::backward`].
///
/// ```
/// use attn_ref::{Dtype, Inputs, Problem, Tensor, backward, backward_blocked, forward, forward_blocked};
/// let p = Problem::new(Dtype::F16, 1, 5, 7, 2, 1, 8, 8);
/// let x = Inputs::random(&p, 3, 1.0);
/// let dout = Tensor::from_fn(Dtype::F16, p.out_shape(), |[_, s, h, d]| ((s + h + d) % 3) as f32 - 1.0);
/// let truth = forward(&p, &x)?;
/// let g = backward(&p, &x, &dout, &truth.out, &truth.lse, false)?;
/// let lowp = forward_blocked(&p, &x, 4, 4)?;
/// let gb = backward_blocked(&p, &x, &dout, &lowp.out, &lowp.lse, false)?;
/// for (a, b) in gb.dv.iter().zip(&g.dv) {
///     assert!((*a as f64 - b).abs() < 1e-2);
/// }
/// # Ok::<(), attn_ref::Error>(())
/// ```
pub fn backward_blocked(
    p: &Problem,
    x: &Inputs,
    dout: &Tensor,
    out: &[f32],
    lse: &[f32],
    want_dbias: bool,
) -> Result<BlockedBackward, Error> {
    check_backward_args(p, x, dout, out.len(), lse.len())?;
    let want_dbias = want_dbias && p.bias.is_some();
    let delta = row_dot_f32(p, dout, out);
    let parts: Vec<Part<f32>> = tasks(p, true)
        .into_par_iter()
        .map(|(s, g)| kv_head(p, x, dout, lse, &delta, want_dbias, s, g))
        .collect();
    let (dq, dk, dv, dbias) = assemble(p, parts, want_dbias);
    Ok(BlockedBackward {
        dq,
        dk,
        dv,
        dbias,
        delta,
    })
}

/// `sum_k a[k] * b[k]` in f32, in index order.
#[inline]
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0f32, |acc, (x, y)| acc + x * y)
}

/// `y += alpha * x` in f32.
#[inline]
fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

/// Rows `start..start + rows` of head `head` as [`gather`] returns them, rounded to `dtype`.
fn gather_rounded(
    t: &Tensor,
    dtype: Dtype,
    batch: usize,
    start: usize,
    rows: usize,
    head: usize,
    dim: usize,
) -> Vec<f32> {
    let mut v = gather::<f32>(t, batch, start, rows, head, dim);
    v.iter_mut().for_each(|x| *x = dtype.round(*x));
    v
}

/// `delta_i = sum_c round(dout_ic) * round(out_ic)` in f32, in the `lse` layout (0 outside every sequence).
fn row_dot_f32(p: &Problem, dout: &Tensor, out: &[f32]) -> Vec<f32> {
    let (hq, dv) = (p.heads_q, p.head_dim_v);
    let mut delta = vec![0.0f32; p.lse_len()];
    for s in p.seqs() {
        for h in 0..hq {
            let dout_h = gather_rounded(dout, p.dtype, s.batch, s.q_start, s.sq, h, dv);
            for i in 0..s.sq {
                let base = ((s.batch * p.seqlen_q + s.q_start + i) * hq + h) * dv;
                let acc = dout_h[i * dv..(i + 1) * dv]
                    .iter()
                    .zip(&out[base..base + dv])
                    .fold(0.0f32, |acc, (d, o)| acc + d * p.dtype.round(*o));
                delta[p.lse_index(&s, h, i)] = acc;
            }
        }
    }
    delta
}

/// The gradients of one `(sequence, kv head)`: `dK`, `dV` summed over the group's query heads,
/// and `dQ` (and `dS` for dbias) of each of them.
#[allow(clippy::too_many_arguments)]
fn kv_head(
    p: &Problem,
    x: &Inputs,
    dout: &Tensor,
    lse: &[f32],
    delta: &[f32],
    want_dbias: bool,
    s: Seq,
    g: usize,
) -> Part<f32> {
    let (hq, d, dvd, grp, dtype) = (p.heads_q, p.head_dim, p.head_dim_v, p.group(), p.dtype);
    let scale = p.softmax_scale();
    let cap = p.softcap;
    let bias_dtype = p.bias.map_or(dtype, |b| b.dtype);
    let rescale = p.dropout.map_or(1.0, |dd| dd.rescale());
    let k = gather::<f32>(&x.k, s.batch, s.k_start, s.sk, g, d);
    let v = gather::<f32>(&x.v, s.batch, s.k_start, s.sk, g, dvd);
    // Scale-free f32 accumulators of dK and dV over the whole group.
    let mut dk = vec![0.0f32; s.sk * d];
    let mut dv = vec![0.0f32; s.sk * dvd];
    let mut dq = vec![0.0f32; grp * s.sq * d];
    let mut dbias = if want_dbias {
        vec![0.0f32; grp * s.sq * s.sk]
    } else {
        Vec::new()
    };
    let mut keep = vec![1u8; s.sk];
    let mut dq_acc = vec![0.0f32; d];
    for hh in 0..grp {
        let h = g * grp + hh;
        let scores = Logits::new(p, x, s, h);
        let q = gather::<f32>(&x.q, s.batch, s.q_start, s.sq, h, d);
        let dout_h = gather_rounded(dout, dtype, s.batch, s.q_start, s.sq, h, dvd);
        for i in 0..s.sq {
            let li = lse[p.lse_index(&s, h, i)];
            if li == f32::NEG_INFINITY || s.sk == 0 {
                continue;
            }
            let lse2 = li * std::f32::consts::LOG2_E;
            let di = delta[p.lse_index(&s, h, i)];
            if let Some(dd) = &p.dropout {
                dropout::keep_row(dd, hq, s.b, h, i, 0..s.sk, &mut keep);
            }
            let qi = &q[i * d..(i + 1) * d];
            let doi = &dout_h[i * dvd..(i + 1) * dvd];
            dq_acc.fill(0.0);
            for j in 0..s.sk {
                let kj = &k[j * d..(j + 1) * d];
                let (xij, t) = scores.logit(i, j, qi, kj);
                if xij == f32::NEG_INFINITY {
                    continue; // hidden (or a -inf bias): P = 0, nothing to add
                }
                let pij = (xij - lse2).exp2();
                let z = if keep[j] != 0 { rescale } else { 0.0 };
                let pz = dtype.round(pij * z);
                if pz != 0.0 {
                    axpy_f32(pz, doi, &mut dv[j * dvd..(j + 1) * dvd]);
                }
                let dp = dot_f32(doi, &v[j * dvd..(j + 1) * dvd]);
                let ds = pij * dp.mul_add(z, -di);
                if want_dbias {
                    // Stored in the bias's dtype, as the kernels store it.
                    dbias[(hh * s.sq + i) * s.sk + j] = bias_dtype.round(ds);
                }
                let ds = if cap > 0.0 { ds * (1.0 - t * t) } else { ds };
                let dsr = dtype.round(ds);
                if dsr != 0.0 {
                    axpy_f32(dsr, kj, &mut dq_acc);
                    axpy_f32(dsr, qi, &mut dk[j * d..(j + 1) * d]);
                }
            }
            let row = &mut dq[(hh * s.sq + i) * d..(hh * s.sq + i + 1) * d];
            for (o, a) in row.iter_mut().zip(&dq_acc) {
                *o = dtype.round(a * scale);
            }
        }
    }
    dk.iter_mut().for_each(|a| *a = dtype.round(*a * scale));
    dv.iter_mut().for_each(|a| *a = dtype.round(*a));
    Part {
        s,
        g,
        dq,
        dk,
        dv,
        dbias,
    }
}
