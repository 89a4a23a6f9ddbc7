//! Problem descriptions: shapes, masks, bias, ALiBi, softcap, dropout, varlen.

use crate::{Dtype, Error, Tensor};

/// Diagonal alignment of a causal/window mask (semantics.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Align {
    /// `off_b = 0`: query row `i` lines up with key `i` (PyTorch SDPA's `is_causal`).
    TopLeft,
    /// `off_b = Sk_b - Sq_b`: the last query row lines up with the last key (the seed's CK `is_causal`).
    BottomRight,
}

impl Align {
    /// The diagonal offset `off_b` for a sequence with `sq` queries and `sk` (used) keys.
    ///
    /// ```
    /// use attn_ref::Align;
    /// assert_eq!(Align::TopLeft.offset(5, 8), 0);
    /// assert_eq!(Align::BottomRight.offset(5, 8), 3);
    /// assert_eq!(Align::BottomRight.offset(8, 5), -3);
    /// ```
    #[inline]
    pub fn offset(self, sq: usize, sk: usize) -> i64 {
        match self {
            Align::TopLeft => 0,
            Align::BottomRight => sk as i64 - sq as i64,
        }
    }
}

/// Which keys a query may see (semantics.md §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mask {
    /// Every key `j < Sk_b` is visible.
    None,
    /// `j <= i + off_b`: the same as `Window { left: None, right: Some(0), align }`.
    Causal {
        /// Diagonal alignment.
        align: Align,
    },
    /// `i + off_b - left <= j <= i + off_b + right` (a `None` bound is unbounded).
    Window {
        /// Keys visible to the left of the diagonal (`None` = unbounded).
        left: Option<usize>,
        /// Keys visible to the right of the diagonal (`None` = unbounded).
        right: Option<usize>,
        /// Diagonal alignment.
        align: Align,
    },
}

impl Mask {
    /// The alignment used for `off_b`, by the mask and by ALiBi (bottom-right when there is no mask).
    pub fn align(&self) -> Align {
        match *self {
            Mask::None => Align::BottomRight,
            Mask::Causal { align } | Mask::Window { align, .. } => align,
        }
    }

    /// The mask as `(left, right)` window bounds (both `None` for [`Mask::None`]).
    pub fn bounds(&self) -> (Option<usize>, Option<usize>) {
        match *self {
            Mask::None => (None, None),
            Mask::Causal { .. } => (None, Some(0)),
            Mask::Window { left, right, .. } => (left, right),
        }
    }

    /// Whether key `j` is visible to query `i` in a sequence of `sq` queries and `sk` used keys.
    ///
    /// ```
    /// use attn_ref::{Align, Mask};
    /// let causal = Mask::Causal { align: Align::BottomRight };
    /// assert!(causal.visible(0, 1, 2, 3)); // off = 1: j <= i + 1
    /// assert!(!causal.visible(0, 2, 2, 3));
    /// assert!(!causal.visible(0, 3, 2, 4)); // off = 2, j = 3 > 0 + 2
    /// assert!(!Mask::None.visible(0, 3, 1, 3)); // j >= sk
    /// ```
    #[inline]
    pub fn visible(&self, i: usize, j: usize, sq: usize, sk: usize) -> bool {
        if j >= sk {
            return false;
        }
        let (left, right) = self.bounds();
        let d = i as i64 + self.align().offset(sq, sk);
        let j = j as i64;
        left.is_none_or(|l| j >= d - l as i64) && right.is_none_or(|r| j <= d + r as i64)
    }
}

/// ALiBi slopes: `logit -= slope[b, h] * |i + off_b - j|`.
#[derive(Clone, Debug, PartialEq)]
pub struct Alibi {
    /// `[Hq]` slopes, or `[B, Hq]` (varlen: `[nseq, Hq]`) when `per_batch`.
    pub slopes: Vec<f32>,
    /// Whether `slopes` has a batch dimension.
    pub per_batch: bool,
}

impl Alibi {
    /// The slope of `(b, h)`.
    #[inline]
    pub fn slope(&self, heads_q: usize, b: usize, h: usize) -> f32 {
        if self.per_batch {
            self.slopes[b * heads_q + h]
        } else {
            self.slopes[h]
        }
    }
}

/// Dropout parameters (semantics.md §4).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// Drop probability in `[0, 1)`.
    pub p: f64,
    /// Philox key: `key = (seed as u32, (seed >> 32) as u32)`.
    pub seed: u64,
    /// Counter base: `(b, h)` uses `offset + b * Hq + h` (wrapping).
    pub offset: u64,
}

impl Dropout {
    /// Threshold `t = min(65536, round(p * 65536))`; a 16-bit draw `r` is kept iff `r >= t`.
    pub fn threshold(&self) -> u32 {
        crate::dropout::threshold(self.p)
    }

    /// `1 / (1 - p)` computed in `f32`, the multiplier of kept elements.
    pub fn rescale(&self) -> f32 {
        crate::dropout::rescale(self.p)
    }
}

/// Varlen ("group") mode: sequences packed along the sequence dimension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Varlen {
    /// `nseq + 1` non-decreasing query row starts, beginning at 0.
    pub cu_seqlens_q: Vec<i32>,
    /// `nseq + 1` non-decreasing key row starts, beginning at 0.
    pub cu_seqlens_k: Vec<i32>,
}

/// The bias that a problem carries: its dtype and (as a generation hint) which dimensions broadcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BiasSpec {
    /// `q`'s dtype or `f32`.
    pub dtype: Dtype,
    /// For generated inputs: `broadcast[d]` gives the bias a zero stride along dimension `d`.
    /// The reference itself reads whatever strides the bias tensor has.
    pub broadcast: [bool; 4],
}

/// One sequence of a problem, with everything resolved (batch or varlen mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seq {
    /// Sequence index `b` (batch index, or varlen sequence index).
    pub b: usize,
    /// Index into the leading dimension of q/k/v (`b` in batch mode, 0 in varlen mode).
    pub batch: usize,
    /// First query row of the sequence in q's sequence dimension.
    pub q_start: usize,
    /// Query rows `Sq_b`.
    pub sq: usize,
    /// First key row in k's sequence dimension.
    pub k_start: usize,
    /// Key rows present (before `seqused_k`).
    pub sk_total: usize,
    /// Key rows used, `Sk_b` of the mask (after `seqused_k`).
    pub sk: usize,
}

/// Everything that describes an attention call except the tensor data.
///
/// Build one with [`Problem::new`] and the `with_*` setters:
///
/// ```
/// use attn_ref::{Align, Dtype, Mask, Problem};
/// let p = Problem::new(Dtype::Bf16, 2, 17, 33, 8, 2, 64, 64)
///     .with_mask(Mask::Causal { align: Align::BottomRight })
///     .with_softcap(30.0);
/// p.validate().unwrap();
/// assert_eq!(p.q_shape(), [2, 17, 8, 64]);
/// assert_eq!(p.lse_len(), 2 * 8 * 17);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// Element type of q, k, v, out.
    pub dtype: Dtype,
    /// `B` (must be 1 in varlen mode).
    pub batch: usize,
    /// `Sq` (varlen: `total_q`).
    pub seqlen_q: usize,
    /// `Sk` (varlen: `total_k`).
    pub seqlen_k: usize,
    /// Query heads `Hq`.
    pub heads_q: usize,
    /// Key/value heads `Hk` (`Hq % Hk == 0`).
    pub heads_k: usize,
    /// Head dimension `D` of q and k.
    pub head_dim: usize,
    /// Head dimension `Dv` of v and out.
    pub head_dim_v: usize,
    /// Varlen mode when `Some`.
    pub varlen: Option<Varlen>,
    /// Keys used per sequence (`[B]` or `[nseq]`).
    pub seqused_k: Option<Vec<i32>>,
    /// Softmax scale; `None` means `1/sqrt(D)` (computed in `f32`).
    pub scale: Option<f32>,
    /// Softcap `cap`; `0` disables it.
    pub softcap: f32,
    /// Mask.
    pub mask: Mask,
    /// Additive bias, if any (the data is [`Inputs::bias`]).
    pub bias: Option<BiasSpec>,
    /// ALiBi slopes, if any.
    pub alibi: Option<Alibi>,
    /// Dropout, if any.
    pub dropout: Option<Dropout>,
}

impl Problem {
    /// A batch-mode problem with no mask, bias, ALiBi, softcap or dropout, and the default scale.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dtype: Dtype,
        batch: usize,
        seqlen_q: usize,
        seqlen_k: usize,
        heads_q: usize,
        heads_k: usize,
        head_dim: usize,
        head_dim_v: usize,
    ) -> Self {
        Problem {
            dtype,
            batch,
            seqlen_q,
            seqlen_k,
            heads_q,
            heads_k,
            head_dim,
            head_dim_v,
            varlen: None,
            seqused_k: None,
            scale: None,
            softcap: 0.0,
            mask: Mask::None,
            bias: None,
            alibi: None,
            dropout: None,
        }
    }

    /// A varlen problem: sequence `b` has `seqlens[b] = (Sq_b, Sk_b)`; `total_q`/`total_k` are the sums.
    ///
    /// ```
    /// use attn_ref::{Dtype, Problem};
    /// let p = Problem::varlen(Dtype::F16, &[(3, 5), (1, 0)], 4, 2, 16, 8);
    /// assert_eq!(p.varlen.as_ref().unwrap().cu_seqlens_q, vec![0, 3, 4]);
    /// assert_eq!(p.lse_shape(), [1, 4, 4]);
    /// ```
    pub fn varlen(
        dtype: Dtype,
        seqlens: &[(usize, usize)],
        heads_q: usize,
        heads_k: usize,
        head_dim: usize,
        head_dim_v: usize,
    ) -> Self {
        let mut cq = vec![0i32];
        let mut ck = vec![0i32];
        for &(q, k) in seqlens {
            cq.push(cq.last().unwrap() + q as i32);
            ck.push(ck.last().unwrap() + k as i32);
        }
        let (tq, tk) = (*cq.last().unwrap() as usize, *ck.last().unwrap() as usize);
        let mut p = Problem::new(dtype, 1, tq, tk, heads_q, heads_k, head_dim, head_dim_v);
        p.varlen = Some(Varlen {
            cu_seqlens_q: cq,
            cu_seqlens_k: ck,
        });
        p
    }

    /// Sets the mask.
    pub fn with_mask(mut self, mask: Mask) -> Self {
        self.mask = mask;
        self
    }
    /// Sets the softmax scale.
    pub fn with_scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }
    /// Sets the softcap (0 disables).
    pub fn with_softcap(mut self, cap: f32) -> Self {
        self.softcap = cap;
        self
    }
    /// Adds a bias of the given dtype and broadcast pattern.
    pub fn with_bias(mut self, dtype: Dtype, broadcast: [bool; 4]) -> Self {
        self.bias = Some(BiasSpec { dtype, broadcast });
        self
    }
    /// Adds ALiBi slopes (`[Hq]`, or `[nseq, Hq]` when `per_batch`).
    pub fn with_alibi(mut self, slopes: Vec<f32>, per_batch: bool) -> Self {
        self.alibi = Some(Alibi { slopes, per_batch });
        self
    }
    /// Adds dropout.
    pub fn with_dropout(mut self, p: f64, seed: u64, offset: u64) -> Self {
        self.dropout = Some(Dropout { p, seed, offset });
        self
    }
    /// Sets `seqused_k`.
    pub fn with_seqused_k(mut self, used: Vec<i32>) -> Self {
        self.seqused_k = Some(used);
        self
    }

    /// The scale actually used: `scale`, or `1/sqrt(D)` in `f32`.
    pub fn softmax_scale(&self) -> f32 {
        self.scale.unwrap_or(1.0 / (self.head_dim as f32).sqrt())
    }

    /// Number of sequences: `B`, or `nseq` in varlen mode.
    pub fn nseq(&self) -> usize {
        match &self.varlen {
            Some(v) => v.cu_seqlens_q.len().saturating_sub(1),
            None => self.batch,
        }
    }

    /// `Hq / Hk`.
    pub fn group(&self) -> usize {
        self.heads_q / self.heads_k.max(1)
    }

    /// Shape of `q` and `dq`: `[B, Sq, Hq, D]`.
    pub fn q_shape(&self) -> [usize; 4] {
        [self.batch, self.seqlen_q, self.heads_q, self.head_dim]
    }
    /// Shape of `k` and `dk`: `[B, Sk, Hk, D]`.
    pub fn k_shape(&self) -> [usize; 4] {
        [self.batch, self.seqlen_k, self.heads_k, self.head_dim]
    }
    /// Shape of `v` and `dv`: `[B, Sk, Hk, Dv]`.
    pub fn v_shape(&self) -> [usize; 4] {
        [self.batch, self.seqlen_k, self.heads_k, self.head_dim_v]
    }
    /// Shape of `out` and `dout`: `[B, Sq, Hq, Dv]`.
    pub fn out_shape(&self) -> [usize; 4] {
        [self.batch, self.seqlen_q, self.heads_q, self.head_dim_v]
    }
    /// Shape of `lse` and `D`: `[B, Hq, Sq]` (batch), or `[1, Hq, total_q]` in varlen mode (the packed
    /// `[Hq, total_q]` of semantics.md with a leading 1).
    pub fn lse_shape(&self) -> [usize; 3] {
        [self.batch, self.heads_q, self.seqlen_q]
    }
    /// Number of `lse` elements.
    pub fn lse_len(&self) -> usize {
        self.batch * self.heads_q * self.seqlen_q
    }
    /// Index into `lse` of query row `i` (local) of head `h` in sequence `s`.
    #[inline]
    pub fn lse_index(&self, s: &Seq, h: usize, i: usize) -> usize {
        (s.batch * self.heads_q + h) * self.seqlen_q + s.q_start + i
    }
    /// Longest query and (present) key sequence: `(Sq, Sk)` in batch mode, `(max_sq, max_sk)` in varlen mode.
    pub fn max_seqlens(&self) -> (usize, usize) {
        match &self.varlen {
            None => (self.seqlen_q, self.seqlen_k),
            Some(v) => {
                let m = |c: &[i32]| {
                    c.windows(2)
                        .map(|w| (w[1] - w[0]).max(0) as usize)
                        .max()
                        .unwrap_or(0)
                };
                (m(&v.cu_seqlens_q), m(&v.cu_seqlens_k))
            }
        }
    }
    /// Logical shape of the bias, `dbias` and the dropout mask: `[B, Hq, Sq, Sk]` or `[nseq, Hq, max_sq, max_sk]`.
    pub fn bias_shape(&self) -> [usize; 4] {
        let (mq, mk) = self.max_seqlens();
        [self.nseq(), self.heads_q, mq, mk]
    }

    /// The sequences, resolved. Call [`Problem::validate`] first.
    pub fn seqs(&self) -> Vec<Seq> {
        (0..self.nseq())
            .map(|b| {
                let (batch, q_start, sq, k_start, sk_total) = match &self.varlen {
                    None => (b, 0, self.seqlen_q, 0, self.seqlen_k),
                    Some(v) => {
                        let (q0, q1) = (v.cu_seqlens_q[b] as usize, v.cu_seqlens_q[b + 1] as usize);
                        let (k0, k1) = (v.cu_seqlens_k[b] as usize, v.cu_seqlens_k[b + 1] as usize);
                        (0, q0, q1 - q0, k0, k1 - k0)
                    }
                };
                let sk = match &self.seqused_k {
                    Some(u) => (u[b].max(0) as usize).min(sk_total),
                    None => sk_total,
                };
                Seq {
                    b,
                    batch,
                    q_start,
                    sq,
                    k_start,
                    sk_total,
                    sk,
                }
            })
            .collect()
    }

    /// Checks every field against semantics.md (shapes, heads, cu_seqlens, seqused_k, slopes, dropout, softcap).
    ///
    /// The reference accepts any positive head dimension; the kernels' `D`/`Dv` restrictions are not checked here.
    pub fn validate(&self) -> Result<(), Error> {
        if self.heads_q == 0 || self.heads_k == 0 || !self.heads_q.is_multiple_of(self.heads_k) {
            return Err(Error::invalid(
                "heads_k",
                "heads_q % heads_k == 0, both > 0",
                format!("heads_q={}, heads_k={}", self.heads_q, self.heads_k),
            ));
        }
        if self.head_dim == 0 || self.head_dim_v == 0 {
            return Err(Error::invalid(
                "head_dim",
                "> 0",
                format!("{}/{}", self.head_dim, self.head_dim_v),
            ));
        }
        if let Some(v) = &self.varlen {
            if self.batch != 1 {
                return Err(Error::invalid("batch", "1 in varlen mode", self.batch));
            }
            if v.cu_seqlens_q.len() != v.cu_seqlens_k.len() || v.cu_seqlens_q.len() < 2 {
                return Err(Error::invalid(
                    "cu_seqlens",
                    "equal lengths nseq + 1 >= 2",
                    format!("{} and {}", v.cu_seqlens_q.len(), v.cu_seqlens_k.len()),
                ));
            }
            for (name, c, total) in [
                ("cu_seqlens_q", &v.cu_seqlens_q, self.seqlen_q),
                ("cu_seqlens_k", &v.cu_seqlens_k, self.seqlen_k),
            ] {
                if c[0] != 0
                    || c.windows(2).any(|w| w[1] < w[0])
                    || *c.last().unwrap() as usize > total
                {
                    return Err(Error::invalid(
                        name,
                        format!("non-decreasing from 0 to <= {total}"),
                        format!("{c:?}"),
                    ));
                }
            }
        }
        let nseq = self.nseq();
        if let Some(u) = &self.seqused_k
            && (u.len() != nseq || u.iter().any(|&x| x < 0))
        {
            return Err(Error::invalid(
                "seqused_k",
                format!("{nseq} non-negative entries"),
                format!("{u:?}"),
            ));
        }
        if let Some(a) = &self.alibi {
            let n = if a.per_batch {
                nseq * self.heads_q
            } else {
                self.heads_q
            };
            if a.slopes.len() != n || a.slopes.iter().any(|s| !s.is_finite()) {
                return Err(Error::invalid(
                    "alibi slopes",
                    format!("{n} finite slopes"),
                    a.slopes.len(),
                ));
            }
        }
        if let Some(d) = &self.dropout
            && !(0.0..1.0).contains(&d.p)
        {
            return Err(Error::invalid("dropout p", "in [0, 1)", d.p));
        }
        if !(self.softcap >= 0.0 && self.softcap.is_finite()) {
            return Err(Error::invalid("softcap", "finite and >= 0", self.softcap));
        }
        if let Some(s) = self.scale
            && !s.is_finite()
        {
            return Err(Error::invalid("scale", "finite", s));
        }
        if let Some(b) = &self.bias
            && (b.dtype != self.dtype && b.dtype != Dtype::F32)
        {
            return Err(Error::invalid(
                "bias dtype",
                format!("{} or f32", self.dtype),
                b.dtype,
            ));
        }
        Ok(())
    }

    /// Validates the problem and the tensors of `x` against it.
    pub fn validate_inputs(&self, x: &Inputs) -> Result<(), Error> {
        self.validate()?;
        x.q.check("q", self.q_shape())?;
        x.k.check("k", self.k_shape())?;
        x.v.check("v", self.v_shape())?;
        for (n, t) in [("q", &x.q), ("k", &x.k), ("v", &x.v)] {
            if t.dtype != self.dtype {
                return Err(Error::invalid(n, format!("dtype {}", self.dtype), t.dtype));
            }
        }
        match (&self.bias, &x.bias) {
            (None, None) => {}
            (Some(spec), Some(b)) => {
                b.check("bias", self.bias_shape())?;
                if b.dtype != spec.dtype {
                    return Err(Error::invalid(
                        "bias",
                        format!("dtype {}", spec.dtype),
                        b.dtype,
                    ));
                }
            }
            (Some(_), None) => return Err(Error::invalid("bias", "a bias tensor", "none")),
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "bias",
                    "no bias tensor (problem.bias is None)",
                    "one",
                ));
            }
        }
        Ok(())
    }
}

/// The tensor data of a problem.
#[derive(Clone, Debug, PartialEq)]
pub struct Inputs {
    /// `[B, Sq, Hq, D]`.
    pub q: Tensor,
    /// `[B, Sk, Hk, D]`.
    pub k: Tensor,
    /// `[B, Sk, Hk, Dv]`.
    pub v: Tensor,
    /// [`Problem::bias_shape`], any strides, present iff `problem.bias` is.
    pub bias: Option<Tensor>,
}

/// A tiny deterministic generator (SplitMix64) for reproducible inputs.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[-a, a)`.
    pub fn uniform(&mut self, a: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        (2.0 * u - 1.0) * a
    }
}

impl Inputs {
    /// Random inputs for `p`: q, k, v uniform in `[-value_scale, value_scale)`, bias uniform in `[-2, 2)`,
    /// all rounded to their dtype; contiguous BMHK, the bias with zero strides where `broadcast` says.
    ///
    /// ```
    /// use attn_ref::{Dtype, Inputs, Problem};
    /// let p = Problem::new(Dtype::F16, 1, 3, 5, 2, 1, 8, 8).with_bias(Dtype::F32, [true, false, false, false]);
    /// let x = Inputs::random(&p, 42, 1.0);
    /// assert_eq!(x.bias.as_ref().unwrap().strides[0], 0);
    /// p.validate_inputs(&x).unwrap();
    /// ```
    pub fn random(p: &Problem, seed: u64, value_scale: f32) -> Inputs {
        let mut rng = SplitMix64(seed);
        let mut gen_t = |dtype, shape| Tensor::from_fn(dtype, shape, |_| rng.uniform(value_scale));
        let q = gen_t(p.dtype, p.q_shape());
        let k = gen_t(p.dtype, p.k_shape());
        let v = gen_t(p.dtype, p.v_shape());
        let bias = p.bias.map(|spec| {
            let shape = p.bias_shape();
            let stored: [usize; 4] =
                std::array::from_fn(|d| if spec.broadcast[d] { 1 } else { shape[d] });
            let mut t = Tensor::from_fn(spec.dtype, stored, |_| rng.uniform(2.0));
            for d in 0..4 {
                if spec.broadcast[d] {
                    t.strides[d] = 0;
                }
            }
            t.shape = shape;
            t
        });
        Inputs { q, k, v, bias }
    }
}
