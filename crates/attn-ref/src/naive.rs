//! The f64 ground truth (semantics.md §2 and §5): materialises one row of `S` and `P` at a time.

use crate::ops::{axpy, dot};
use crate::{Error, Inputs, Problem, Seq, Tensor, dropout};
use rayon::prelude::*;
use std::ops::Range;

/// Result of [`forward`].
#[derive(Clone, Debug, PartialEq)]
pub struct ForwardOutput {
    /// `[B, Sq, Hq, Dv]` row-major (varlen: `[1, total_q, Hq, Dv]`); rows outside every sequence are 0.
    pub out: Vec<f64>,
    /// `[B, Hq, Sq]` (varlen: `[Hq, total_q]`); `-inf` for rows with no visible key (and rows outside every sequence).
    pub lse: Vec<f64>,
    /// The dropout keep mask ([`dropout::mask_tensor`]), when requested and dropout is on.
    pub dropout_mask: Option<Vec<u8>>,
}

/// Result of [`backward`]: gradients in `f64`, row-major in their tensors' logical shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct BackwardOutput {
    /// `[B, Sq, Hq, D]`.
    pub dq: Vec<f64>,
    /// `[B, Sk, Hk, D]` (summed over each kv head's group of query heads).
    pub dk: Vec<f64>,
    /// `[B, Sk, Hk, Dv]` (summed over each kv head's group).
    pub dv: Vec<f64>,
    /// [`Problem::bias_shape`], full (never broadcast), when requested and the problem has a bias.
    pub dbias: Option<Vec<f64>>,
    /// `D_i = dot(dout_i, out_i)`, in the `lse` layout.
    pub d: Vec<f64>,
}

/// One (sequence, query head) with its operands gathered into contiguous f64 rows.
pub(crate) struct Head<'a> {
    p: &'a Problem,
    x: &'a Inputs,
    pub s: Seq,
    pub h: usize,
    pub q: Vec<f64>,
    pub k: Vec<f64>,
    pub v: Vec<f64>,
    scale: f64,
    cap: f64,
    slope: f64,
    off: i64,
    pub rescale: f64,
}

/// Rows `start..start + rows` of head `head` in batch `batch`, `dim` values each, row-major, in
/// the precision `T` (f64 for the truth, f32 for the blocked path).
pub(crate) fn gather<T: From<f32>>(
    t: &Tensor,
    batch: usize,
    start: usize,
    rows: usize,
    head: usize,
    dim: usize,
) -> Vec<T> {
    let mut out = Vec::with_capacity(rows * dim);
    for r in 0..rows {
        let base = t.offset([batch, start + r, head, 0]);
        out.extend((0..dim).map(|d| T::from(t.data[base + d * t.strides[3]])));
    }
    out
}

impl<'a> Head<'a> {
    pub(crate) fn new(p: &'a Problem, x: &'a Inputs, s: Seq, h: usize) -> Self {
        let g = h / p.group();
        Head {
            p,
            x,
            s,
            h,
            q: gather(&x.q, s.batch, s.q_start, s.sq, h, p.head_dim),
            k: gather(&x.k, s.batch, s.k_start, s.sk, g, p.head_dim),
            v: gather(&x.v, s.batch, s.k_start, s.sk, g, p.head_dim_v),
            scale: p.softmax_scale() as f64,
            cap: p.softcap as f64,
            slope: p
                .alibi
                .as_ref()
                .map_or(0.0, |a| a.slope(p.heads_q, s.b, h) as f64),
            off: p.mask.align().offset(s.sq, s.sk),
            rescale: p.dropout.map_or(1.0, |d| d.rescale() as f64),
        }
    }

    /// Logits of row `i` for `j < sk` (`-inf` where masked); `tanh_out[j]` gets `tanh(s_raw / cap)` with softcap.
    pub(crate) fn logits(&self, i: usize, logits: &mut [f64], tanh_out: &mut [f64]) {
        let d = self.p.head_dim;
        let qi = &self.q[i * d..(i + 1) * d];
        for j in 0..self.s.sk {
            if !self.p.mask.visible(i, j, self.s.sq, self.s.sk) {
                logits[j] = f64::NEG_INFINITY;
                continue;
            }
            let mut s = self.scale * dot(qi, &self.k[j * d..(j + 1) * d]);
            if self.cap > 0.0 {
                let t = (s / self.cap).tanh();
                tanh_out[j] = t;
                s = self.cap * t;
            }
            if let Some(b) = &self.x.bias {
                s += b.get([self.s.b, self.h, i, j]) as f64;
            }
            if self.slope != 0.0 {
                s -= self.slope * (i as i64 + self.off - j as i64).abs() as f64;
            }
            logits[j] = s;
        }
    }

    /// Dropout multipliers `Z_ij` of row `i` (all `1` without dropout).
    pub(crate) fn z(&self, i: usize, keep: &mut [u8], z: &mut [f64]) {
        match &self.p.dropout {
            None => z.fill(1.0),
            Some(d) => {
                dropout::keep_row(d, self.p.heads_q, self.s.b, self.h, i, 0..self.s.sk, keep);
                for (z, &k) in z.iter_mut().zip(keep.iter()) {
                    *z = if k != 0 { self.rescale } else { 0.0 };
                }
            }
        }
    }
}

/// The parallel tasks: every `(sequence, query head)`, or every `(sequence, kv head)` when `by_kv_head`.
pub(crate) fn tasks(p: &Problem, by_kv_head: bool) -> Vec<(Seq, usize)> {
    let n = if by_kv_head { p.heads_k } else { p.heads_q };
    p.seqs()
        .into_iter()
        .flat_map(|s| (0..n).map(move |h| (s, h)))
        .collect()
}

/// The f64 forward of semantics.md §2 (no dropout mask returned).
///
/// ```
/// use attn_ref::{Dtype, Inputs, Problem, forward};
/// let p = Problem::new(Dtype::F32, 1, 2, 3, 1, 1, 4, 4);
/// let x = Inputs::random(&p, 1, 1.0);
/// let f = forward(&p, &x).unwrap();
/// // Every output is a convex combination of rows of v.
/// let vmax = x.v.data.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
/// assert!(f.out.iter().all(|o| o.abs() <= vmax + 1e-12));
/// assert!(f.lse.iter().all(|l| l.is_finite()));
/// ```
pub fn forward(p: &Problem, x: &Inputs) -> Result<ForwardOutput, Error> {
    forward_impl(p, x, false, None)
}

/// [`forward`], also returning the dropout keep mask ([`dropout::mask_tensor`]) when dropout is on.
pub fn forward_with_mask(p: &Problem, x: &Inputs) -> Result<ForwardOutput, Error> {
    forward_impl(p, x, true, None)
}

/// The local key range of a sequence that a partial forward may see, on top of the mask.
pub(crate) type KeyRange<'a> = &'a (dyn Fn(&Seq) -> Range<usize> + Sync);

/// The forward restricted to the keys `keys(s)` of each sequence `s` (all keys when `None`); the mask,
/// ALiBi and dropout keep the indices and alignment of the full problem.
pub(crate) fn forward_impl(
    p: &Problem,
    x: &Inputs,
    want_mask: bool,
    keys: Option<KeyRange<'_>>,
) -> Result<ForwardOutput, Error> {
    p.validate_inputs(x)?;
    let (hq, dv) = (p.heads_q, p.head_dim_v);
    let results: Vec<(Seq, usize, Vec<f64>, Vec<f64>)> = tasks(p, false)
        .into_par_iter()
        .map(|(s, h)| {
            let hd = Head::new(p, x, s, h);
            let range = keys.map(|f| f(&s));
            let mut o = vec![0.0; s.sq * dv];
            let mut lse = vec![f64::NEG_INFINITY; s.sq];
            let (mut logits, mut th, mut keep, mut z) = (
                vec![0.0; s.sk],
                vec![0.0; s.sk],
                vec![0u8; s.sk],
                vec![0.0; s.sk],
            );
            for i in 0..s.sq {
                hd.logits(i, &mut logits, &mut th);
                if let Some(r) = &range {
                    crate::ops::apply_mask(&mut logits, |j| r.contains(&j));
                }
                let l = crate::ops::softmax_row(&mut logits);
                lse[i] = l;
                if l == f64::NEG_INFINITY {
                    continue;
                }
                hd.z(i, &mut keep, &mut z);
                let oi = &mut o[i * dv..(i + 1) * dv];
                for j in 0..s.sk {
                    let w = logits[j] * z[j];
                    if w != 0.0 {
                        axpy(w, &hd.v[j * dv..(j + 1) * dv], oi);
                    }
                }
            }
            (s, h, o, lse)
        })
        .collect();
    let mut out = vec![0.0; p.out_shape().iter().product()];
    let mut lse = vec![f64::NEG_INFINITY; p.lse_len()];
    for (s, h, o, l) in results {
        for i in 0..s.sq {
            let base = ((s.batch * p.seqlen_q + s.q_start + i) * hq + h) * dv;
            out[base..base + dv].copy_from_slice(&o[i * dv..(i + 1) * dv]);
            lse[p.lse_index(&s, h, i)] = l[i];
        }
    }
    let dropout_mask = if want_mask {
        dropout::mask_tensor(p)
    } else {
        None
    };
    Ok(ForwardOutput {
        out,
        lse,
        dropout_mask,
    })
}

/// `D_i = dot(dout_i, out_i)` in the `lse` layout (rows outside every sequence are 0).
pub fn row_dot(p: &Problem, dout: &Tensor, out: &[f64]) -> Vec<f64> {
    let dv = p.head_dim_v;
    let mut d = vec![0.0; p.lse_len()];
    for s in p.seqs() {
        for h in 0..p.heads_q {
            for i in 0..s.sq {
                let base = ((s.batch * p.seqlen_q + s.q_start + i) * p.heads_q + h) * dv;
                let doi = gather(dout, s.batch, s.q_start + i, 1, h, dv);
                d[p.lse_index(&s, h, i)] = dot(&doi, &out[base..base + dv]);
            }
        }
    }
    d
}

/// The f64 backward of semantics.md §5, from `dout` (`[B, Sq, Hq, Dv]`, any strides), the forward's
/// `out` (row-major) and `lse`. `dbias` is computed when `want_dbias` and the problem has a bias.
///
/// ```
/// use attn_ref::{Dtype, Inputs, Problem, Tensor, backward, forward};
/// let p = Problem::new(Dtype::F32, 1, 3, 3, 2, 1, 4, 4);
/// let x = Inputs::random(&p, 1, 1.0);
/// let f = forward(&p, &x).unwrap();
/// // d(sum(out))/dv: each key row receives its total attention weight, so dv sums to Sq * Hq per column.
/// let dout = Tensor::from_fn(Dtype::F32, p.out_shape(), |_| 1.0);
/// let g = backward(&p, &x, &dout, &f.out, &f.lse, false).unwrap();
/// let col0: f64 = (0..3).map(|j| g.dv[j * 4]).sum();
/// assert!((col0 - 6.0).abs() < 1e-12);
/// ```
pub fn backward(
    p: &Problem,
    x: &Inputs,
    dout: &Tensor,
    out: &[f64],
    lse: &[f64],
    want_dbias: bool,
) -> Result<BackwardOutput, Error> {
    check_backward_args(p, x, dout, out.len(), lse.len())?;
    let want_dbias = want_dbias && p.bias.is_some();
    let (d, dvd, grp) = (p.head_dim, p.head_dim_v, p.group());
    let dvec = row_dot(p, dout, out);
    let parts: Vec<Part<f64>> = tasks(p, true)
        .into_par_iter()
        .map(|(s, g)| {
            let mut dk = vec![0.0; s.sk * d];
            let mut dv = vec![0.0; s.sk * dvd];
            let mut dq = vec![0.0; grp * s.sq * d];
            let mut dbias = if want_dbias {
                vec![0.0; grp * s.sq * s.sk]
            } else {
                Vec::new()
            };
            let (mut pr, mut th, mut keep, mut z) = (
                vec![0.0; s.sk],
                vec![0.0; s.sk],
                vec![0u8; s.sk],
                vec![0.0; s.sk],
            );
            for hh in 0..grp {
                let h = g * grp + hh;
                let hd = Head::new(p, x, s, h);
                let dout_h = gather(dout, s.batch, s.q_start, s.sq, h, dvd);
                for i in 0..s.sq {
                    let li = lse[p.lse_index(&s, h, i)];
                    if li == f64::NEG_INFINITY || s.sk == 0 {
                        continue;
                    }
                    let di = dvec[p.lse_index(&s, h, i)];
                    hd.logits(i, &mut pr, &mut th);
                    hd.z(i, &mut keep, &mut z);
                    let doi = &dout_h[i * dvd..(i + 1) * dvd];
                    let qi = &hd.q[i * d..(i + 1) * d];
                    let dqi = &mut dq[(hh * s.sq + i) * d..(hh * s.sq + i + 1) * d];
                    for j in 0..s.sk {
                        if pr[j] == f64::NEG_INFINITY {
                            continue;
                        }
                        let pij = (pr[j] - li).exp();
                        let dp = z[j] * dot(doi, &hd.v[j * dvd..(j + 1) * dvd]);
                        let mut ds = pij * (dp - di);
                        if want_dbias {
                            dbias[(hh * s.sq + i) * s.sk + j] = ds;
                        }
                        if p.softcap > 0.0 {
                            ds *= 1.0 - th[j] * th[j];
                        }
                        let ds = ds * hd_scale(p);
                        axpy(ds, &hd.k[j * d..(j + 1) * d], dqi);
                        axpy(ds, qi, &mut dk[j * d..(j + 1) * d]);
                        let w = pij * z[j];
                        if w != 0.0 {
                            axpy(w, doi, &mut dv[j * dvd..(j + 1) * dvd]);
                        }
                    }
                }
            }
            Part {
                s,
                g,
                dq,
                dk,
                dv,
                dbias,
            }
        })
        .collect();
    let (dq, dk, dv, dbias) = assemble(p, parts, want_dbias);
    Ok(BackwardOutput {
        dq,
        dk,
        dv,
        dbias,
        d: dvec,
    })
}

/// Checks a backward call's tensors against `p`: the inputs, `dout`'s shape, and the element counts
/// of `out` (`[B, Sq, Hq, Dv]`) and `lse` (the lse layout).
pub(crate) fn check_backward_args(
    p: &Problem,
    x: &Inputs,
    dout: &Tensor,
    out_len: usize,
    lse_len: usize,
) -> Result<(), Error> {
    p.validate_inputs(x)?;
    dout.check("dout", p.out_shape())?;
    let n_out: usize = p.out_shape().iter().product();
    if out_len != n_out {
        return Err(Error::invalid("out", format!("{n_out} elements"), out_len));
    }
    if lse_len != p.lse_len() {
        return Err(Error::invalid(
            "lse",
            format!("{} elements", p.lse_len()),
            lse_len,
        ));
    }
    Ok(())
}

/// The gradients of one `(sequence, kv head)` task, local and row-major.
pub(crate) struct Part<T> {
    /// The sequence.
    pub s: Seq,
    /// The kv head.
    pub g: usize,
    /// `[group, Sq_b, D]`: the group's query heads in order.
    pub dq: Vec<T>,
    /// `[Sk_b, D]` (used keys only).
    pub dk: Vec<T>,
    /// `[Sk_b, Dv]`.
    pub dv: Vec<T>,
    /// `[group, Sq_b, Sk_b]`, or empty without dbias.
    pub dbias: Vec<T>,
}

/// Full gradient tensors `(dq, dk, dv, dbias)`, as [`BackwardOutput`] lays them out.
pub(crate) type Grads<T> = (Vec<T>, Vec<T>, Vec<T>, Option<Vec<T>>);

/// Scatters the tasks' [`Part`]s into the full gradient tensors; everything no part covers (rows
/// outside every sequence, keys past `seqused_k`, bias padding) is `T::default()`, i.e. 0.
pub(crate) fn assemble<T: Copy + Default>(
    p: &Problem,
    parts: Vec<Part<T>>,
    want_dbias: bool,
) -> Grads<T> {
    let (hq, d, dvd, grp) = (p.heads_q, p.head_dim, p.head_dim_v, p.group());
    let zeros = |n: usize| vec![T::default(); n];
    let mut dq = zeros(p.q_shape().iter().product());
    let mut dk = zeros(p.k_shape().iter().product());
    let mut dv = zeros(p.v_shape().iter().product());
    let bshape = p.bias_shape();
    let mut dbias = want_dbias.then(|| zeros(bshape.iter().product()));
    for part in parts {
        let s = part.s;
        for hh in 0..grp {
            let h = part.g * grp + hh;
            for i in 0..s.sq {
                let base = ((s.batch * p.seqlen_q + s.q_start + i) * hq + h) * d;
                dq[base..base + d]
                    .copy_from_slice(&part.dq[(hh * s.sq + i) * d..(hh * s.sq + i + 1) * d]);
                if let Some(db) = dbias.as_mut() {
                    let row = ((s.b * hq + h) * bshape[2] + i) * bshape[3];
                    db[row..row + s.sk].copy_from_slice(
                        &part.dbias[(hh * s.sq + i) * s.sk..(hh * s.sq + i + 1) * s.sk],
                    );
                }
            }
        }
        for j in 0..s.sk {
            let bk = ((s.batch * p.seqlen_k + s.k_start + j) * p.heads_k + part.g) * d;
            dk[bk..bk + d].copy_from_slice(&part.dk[j * d..(j + 1) * d]);
            let bv = ((s.batch * p.seqlen_k + s.k_start + j) * p.heads_k + part.g) * dvd;
            dv[bv..bv + dvd].copy_from_slice(&part.dv[j * dvd..(j + 1) * dvd]);
        }
    }
    (dq, dk, dv, dbias)
}

#[inline]
fn hd_scale(p: &Problem) -> f64 {
    p.softmax_scale() as f64
}
