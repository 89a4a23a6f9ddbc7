//! Paged KV cache, partial attention and merge (semantics.md §8): the oracles of paged and split-KV kernels.
//!
//! - [`PagedKv`]: a KV cache in pages with a `block_table` (the vLLM / FlashAttention-2 convention). It
//!   turns into the equivalent contiguous problem ([`PagedKv::inputs`]), which the ordinary
//!   [`forward`](crate::forward) evaluates. [`PagedKv::random`] builds the page tables that GPU tests
//!   need: shuffled, with repeated pages, and optionally with out-of-range entries to exercise the
//!   kernel's clamp.
//! - [`forward_partial`] / [`forward_partial_seqs`]: the truth restricted to a range of (logical, local) key
//!   indices, and [`merge`] / [`merge_rows`] / [`merge_row`]: the log-sum-exp merge of such partials
//!   (flash-decoding's split-KV, ring attention, xformers' `merge_attentions`).
//!
//! ```text
//! key j of sequence b  =  row j % page_size of page clamp(block_table[b * table_stride + j / page_size], 0, num_pages - 1)
//! lse = ln sum_r exp(lse_r)            O = sum_r exp(lse_r - lse) O_r      (max-subtracted; -inf parts add nothing)
//! ```
//!
//! Merging the partials of a split of the keys gives the one-shot result:
//!
//! ```
//! use attn_ref::paged::{forward_partial, merge};
//! use attn_ref::{Align, Dtype, Inputs, Mask, Problem, forward};
//! let p = Problem::new(Dtype::F16, 2, 3, 20, 4, 2, 16, 8)
//!     .with_mask(Mask::Causal { align: Align::BottomRight })
//!     .with_seqused_k(vec![20, 9]);
//! let x = Inputs::random(&p, 5, 1.0);
//! let a = forward_partial(&p, &x, 0..7)?;
//! let b = forward_partial(&p, &x, 7..20)?;
//! let m = merge(&p, &[&a, &b])?;
//! let f = forward(&p, &x)?;
//! for (x, y) in m.out.iter().zip(&f.out) {
//!     assert!((x - y).abs() < 1e-12);
//! }
//! # Ok::<(), attn_ref::Error>(())
//! ```
//!
//! ## Decisions where semantics.md is silent
//!
//! - The clamp of a page index is `clamp(entry, 0, num_pages - 1)` for every entry that is read, so a
//!   paged cache needs `num_pages >= 1` and `page_size >= 1`.
//! - [`PagedKv::to_contiguous`] fills all `max_pages * page_size` rows of every sequence (through the
//!   clamp), also the rows past `seqused_k[b]` that no mask lets through.
//! - In varlen mode (packed queries) the contiguous keys are `[1, nseq * capacity, Hk, D]` with
//!   `cu_seqlens_k[b] = b * capacity`: the same memory as `[nseq, capacity, Hk, D]`.
//! - A partial's key range is in the local key indices of each sequence, like the mask; the mask's
//!   alignment, ALiBi's `off_b` and the dropout counter all use the full sequence, so a split changes
//!   nothing but which keys are summed.

use crate::naive::forward_impl;
use crate::ops::axpy;
use crate::{Error, ForwardOutput, Inputs, Problem, Seq, SplitMix64, Tensor};
use std::ops::Range;

/// A paged KV cache: pages of keys and values and a table mapping each sequence's logical key blocks to
/// pages (semantics.md §8).
///
/// Key `j < seqused_k[b]` of sequence `b` is row `j % page_size` of page
/// [`clamp_page`]`(block_table[b * table_stride + j / page_size], num_pages)`.
///
/// ```
/// use attn_ref::paged::PagedKv;
/// use attn_ref::{Dtype, Tensor};
/// // 3 pages of 2 rows, 1 head of dim 1; key value = 10 * page + row.
/// let k = Tensor::from_fn(Dtype::F32, [3, 2, 1, 1], |[pg, r, _, _]| (10 * pg + r) as f32);
/// let v = k.clone();
/// // One sequence of 3 keys in pages 2 then 0 (the third table entry is past the used length).
/// let kv = PagedKv::new(k, v, vec![2, 0, -1], 3, vec![3])?;
/// assert_eq!(kv.locate(0, 2), (0, 0));
/// let (kc, _) = kv.to_contiguous()?;
/// assert_eq!(kc.shape, [1, 6, 1, 1]);
/// assert_eq!(kc.data, [20.0, 21.0, 0.0, 1.0, 0.0, 1.0]); // entry -1 is clamped to page 0
/// # Ok::<(), attn_ref::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct PagedKv {
    /// `[num_pages, page_size, Hk, D]`, any strides.
    pub k_pages: Tensor,
    /// `[num_pages, page_size, Hk, Dv]`, any strides.
    pub v_pages: Tensor,
    /// Row-major `[B, max_pages]` with row stride `table_stride` (at least `(B - 1) * table_stride + max_pages`
    /// entries).
    pub block_table: Vec<i32>,
    /// Elements between consecutive rows of `block_table` (`>= max_pages`).
    pub table_stride: usize,
    /// Rows per page (`k_pages.shape[1]`).
    pub page_size: usize,
    /// Table entries per sequence; a sequence holds at most `max_pages * page_size` keys.
    pub max_pages: usize,
    /// Keys used by each sequence (`[B]`, each in `0..=max_pages * page_size`): the problem's `seqused_k`.
    pub seqused_k: Vec<i32>,
}

/// The page that a block-table entry names, after the kernel's clamp to `0..num_pages`.
///
/// ```
/// use attn_ref::paged::clamp_page;
/// assert_eq!(clamp_page(2, 4), 2);
/// assert_eq!(clamp_page(-7, 4), 0);
/// assert_eq!(clamp_page(i32::MAX, 4), 3);
/// ```
#[inline]
pub fn clamp_page(entry: i32, num_pages: usize) -> usize {
    (entry.max(0) as usize).min(num_pages.saturating_sub(1))
}

impl PagedKv {
    /// A paged cache with a dense table (`table_stride = max_pages`, `page_size = k_pages.shape[1]`), validated.
    pub fn new(
        k_pages: Tensor,
        v_pages: Tensor,
        block_table: Vec<i32>,
        max_pages: usize,
        seqused_k: Vec<i32>,
    ) -> Result<Self, Error> {
        let kv = PagedKv {
            page_size: k_pages.shape[1],
            k_pages,
            v_pages,
            block_table,
            table_stride: max_pages,
            max_pages,
            seqused_k,
        };
        kv.validate()?;
        Ok(kv)
    }

    /// Sets the row stride of `block_table`, validated.
    pub fn with_table_stride(mut self, table_stride: usize) -> Result<Self, Error> {
        self.table_stride = table_stride;
        self.validate()?;
        Ok(self)
    }

    /// Number of sequences `B` (`seqused_k.len()`).
    pub fn batch(&self) -> usize {
        self.seqused_k.len()
    }

    /// Number of pages in the pool.
    pub fn num_pages(&self) -> usize {
        self.k_pages.shape[0]
    }

    /// Key/value heads `Hk`.
    pub fn heads_k(&self) -> usize {
        self.k_pages.shape[2]
    }

    /// Keys a sequence can hold: `max_pages * page_size`, the `Sk` of the contiguous equivalent.
    pub fn capacity(&self) -> usize {
        self.max_pages * self.page_size
    }

    /// Keys used by sequence `b` (panics if `b >= B`).
    pub fn used(&self, b: usize) -> usize {
        self.seqused_k[b].max(0) as usize
    }

    /// The raw table entry of sequence `b`, block `c` (panics if out of the table).
    #[inline]
    pub fn entry(&self, b: usize, c: usize) -> i32 {
        self.block_table[b * self.table_stride + c]
    }

    /// The (clamped) page holding block `c` of sequence `b`.
    #[inline]
    pub fn page(&self, b: usize, c: usize) -> usize {
        clamp_page(self.entry(b, c), self.num_pages())
    }

    /// `(page, row)` of key `j < capacity` of sequence `b`.
    #[inline]
    pub fn locate(&self, b: usize, j: usize) -> (usize, usize) {
        (self.page(b, j / self.page_size), j % self.page_size)
    }

    /// Checks shapes, dtypes, the table's size and stride, and `seqused_k`.
    pub fn validate(&self) -> Result<(), Error> {
        let [np, ps, hk, d] = self.k_pages.shape;
        self.k_pages.check("k_pages", [np, ps, hk, d])?;
        self.v_pages
            .check("v_pages", [np, ps, hk, self.v_pages.shape[3]])?;
        if self.v_pages.dtype != self.k_pages.dtype {
            return Err(Error::invalid(
                "v_pages",
                format!("dtype {}", self.k_pages.dtype),
                self.v_pages.dtype,
            ));
        }
        if np == 0 || ps == 0 || hk == 0 || d == 0 || self.v_pages.shape[3] == 0 {
            return Err(Error::invalid(
                "k_pages",
                "num_pages, page_size, Hk, D, Dv all > 0",
                format!("{:?} and {:?}", self.k_pages.shape, self.v_pages.shape),
            ));
        }
        if self.page_size != ps {
            return Err(Error::invalid(
                "page_size",
                format!("k_pages.shape[1] = {ps}"),
                self.page_size,
            ));
        }
        if self.table_stride < self.max_pages {
            return Err(Error::invalid(
                "table_stride",
                format!(">= max_pages = {}", self.max_pages),
                self.table_stride,
            ));
        }
        let b = self.batch();
        let need = if b == 0 {
            0
        } else {
            (b - 1) * self.table_stride + self.max_pages
        };
        if self.block_table.len() < need {
            return Err(Error::invalid(
                "block_table",
                format!(
                    ">= {need} entries for {b} rows of stride {}",
                    self.table_stride
                ),
                self.block_table.len(),
            ));
        }
        let cap = self.capacity();
        if self.seqused_k.iter().any(|&u| u < 0 || u as usize > cap) {
            return Err(Error::invalid(
                "seqused_k",
                format!("entries in 0..={cap} (max_pages * page_size)"),
                format!("{:?}", self.seqused_k),
            ));
        }
        Ok(())
    }

    /// Rows `0..n` of sequence `b` of `t` (k or v pages), row-major `[n, Hk, dim]`.
    fn rows(&self, t: &Tensor, b: usize, n: usize) -> Vec<f32> {
        let [_, _, hk, dim] = t.shape;
        let mut out = Vec::with_capacity(n * hk * dim);
        for j in 0..n {
            let (page, row) = self.locate(b, j);
            for g in 0..hk {
                out.extend((0..dim).map(|e| t.get([page, row, g, e])));
            }
        }
        out
    }

    /// The used keys and values of sequence `b`: `[1, seqused_k[b], Hk, D]` and `[1, seqused_k[b], Hk, Dv]`.
    pub fn gather(&self, b: usize) -> Result<(Tensor, Tensor), Error> {
        self.validate()?;
        if b >= self.batch() {
            return Err(Error::invalid(
                "b",
                format!("< {} sequences", self.batch()),
                b,
            ));
        }
        let n = self.used(b);
        let mk = |t: &Tensor| {
            let shape = [1, n, t.shape[2], t.shape[3]];
            Tensor::contiguous(t.dtype, shape, self.rows(t, b, n))
        };
        Ok((mk(&self.k_pages)?, mk(&self.v_pages)?))
    }

    /// The equivalent contiguous cache: k `[B, capacity, Hk, D]`, v `[B, capacity, Hk, Dv]` (every row
    /// through the clamped table, also the rows past `seqused_k[b]`).
    pub fn to_contiguous(&self) -> Result<(Tensor, Tensor), Error> {
        self.validate()?;
        let (b, cap) = (self.batch(), self.capacity());
        let mk = |t: &Tensor| {
            let data = (0..b).flat_map(|s| self.rows(t, s, cap)).collect();
            Tensor::contiguous(t.dtype, [b, cap, t.shape[2], t.shape[3]], data)
        };
        Ok((mk(&self.k_pages)?, mk(&self.v_pages)?))
    }

    /// The contiguous problem equivalent to `p` over this cache: `p` with its key side replaced. Batch
    /// mode: `Sk = capacity`; varlen mode: `cu_seqlens_k[b] = b * capacity`, `total_k = nseq * capacity`;
    /// both with `seqused_k` from the cache. `p`'s own `seqlen_k`, `cu_seqlens_k` and `seqused_k` are
    /// ignored; its sequences, heads, head dims and dtype must match the cache.
    pub fn problem(&self, p: &Problem) -> Result<Problem, Error> {
        self.validate()?;
        let (n, cap) = (p.nseq(), self.capacity());
        if n != self.batch() {
            return Err(Error::invalid(
                "paged batch",
                format!("{n} sequences (the problem's)"),
                self.batch(),
            ));
        }
        let dims = (p.heads_k, p.head_dim, p.head_dim_v, p.dtype);
        let have = (
            self.heads_k(),
            self.k_pages.shape[3],
            self.v_pages.shape[3],
            self.k_pages.dtype,
        );
        if dims != have {
            return Err(Error::invalid(
                "paged heads/dims/dtype",
                format!("(Hk, D, Dv, dtype) = {dims:?}"),
                format!("{have:?}"),
            ));
        }
        let mut pc = p.clone();
        match &mut pc.varlen {
            None => pc.seqlen_k = cap,
            Some(v) => {
                v.cu_seqlens_k = (0..=n).map(|b| (b * cap) as i32).collect();
                pc.seqlen_k = n * cap;
            }
        }
        pc.seqused_k = Some(self.seqused_k.clone());
        pc.validate()?;
        Ok(pc)
    }

    /// The contiguous problem ([`PagedKv::problem`]) and its inputs: `q` (`p.q_shape()`), `bias` (the
    /// contiguous problem's [`Problem::bias_shape`], whose last dimension is `capacity`) and the gathered
    /// k/v. Evaluate it with [`forward`](crate::forward) or any other entry point of the crate.
    pub fn inputs(
        &self,
        p: &Problem,
        q: Tensor,
        bias: Option<Tensor>,
    ) -> Result<(Problem, Inputs), Error> {
        let pc = self.problem(p)?;
        let (mut k, mut v) = self.to_contiguous()?;
        if pc.varlen.is_some() {
            for t in [&mut k, &mut v] {
                t.shape = [1, t.shape[0] * t.shape[1], t.shape[2], t.shape[3]];
                t.strides = crate::contiguous_strides(t.shape);
            }
        }
        let x = Inputs { q, k, v, bias };
        pc.validate_inputs(&x)?;
        Ok((pc, x))
    }

    /// [`PagedKv::inputs`] with `q` and the bias drawn as [`Inputs::random`] draws them for the contiguous problem.
    pub fn random_inputs(
        &self,
        p: &Problem,
        seed: u64,
        value_scale: f32,
    ) -> Result<(Problem, Inputs), Error> {
        let x = Inputs::random(&self.problem(p)?, seed, value_scale);
        self.inputs(p, x.q, x.bias)
    }

    /// A random paged cache for the key side of `p`: its dtype, `Hk`, `D`, `Dv`, and as `seqused_k` the used
    /// key length `Sk_b` of each sequence ([`Seq::sk`]: the varlen or batch key length, cut by `p.seqused_k`),
    /// with values drawn as [`Inputs::random`] draws them.
    ///
    /// The used entries of the table name distinct pages of a shuffled pool, except that each repeats an
    /// earlier page (of any sequence) with probability `cfg.repeat`, and that with `cfg.bad_within_used` about
    /// a quarter of them (at least one) are out of range. The last page of a sequence is partly used
    /// whenever `Sk_b % page_size != 0`. The other entries (the columns past the used pages, the row
    /// padding up to `table_stride`) name random pages, or, with `cfg.bad_past_used`, are out of range with
    /// probability 1/2 (at least one when there is such an entry). Out-of-range entries are drawn from
    /// `-1`, other negatives, `i32::MIN`, `num_pages`, larger values and `i32::MAX`.
    ///
    /// ```
    /// use attn_ref::paged::{PagedConfig, PagedKv};
    /// use attn_ref::{Dtype, Problem, forward};
    /// let p = Problem::new(Dtype::F16, 2, 3, 13, 4, 2, 16, 16).with_seqused_k(vec![13, 5]);
    /// let cfg = PagedConfig { page_size: 4, ..PagedConfig::default() };
    /// let kv = PagedKv::random(&p, &cfg, 11)?;
    /// assert_eq!(kv.max_pages, 4 + cfg.extra_pages);
    /// let (pc, x) = kv.random_inputs(&p, 12, 1.0)?;
    /// assert_eq!(pc.seqlen_k, kv.capacity());
    /// let truth = forward(&pc, &x)?;
    /// assert!(truth.lse.iter().all(|l| l.is_finite()));
    /// # Ok::<(), attn_ref::Error>(())
    /// ```
    pub fn random(p: &Problem, cfg: &PagedConfig, seed: u64) -> Result<PagedKv, Error> {
        p.validate()?;
        let ps = cfg.page_size;
        if ps == 0 {
            return Err(Error::invalid("page_size", "> 0", ps));
        }
        let used: Vec<usize> = p.seqs().iter().map(|s: &Seq| s.sk).collect();
        let need: Vec<usize> = used.iter().map(|u| u.div_ceil(ps)).collect();
        let max_pages = need.iter().copied().max().unwrap_or(0) + cfg.extra_pages;
        let stride = cfg.table_stride.unwrap_or(max_pages);
        if stride < max_pages {
            return Err(Error::invalid(
                "table_stride",
                format!(">= max_pages = {max_pages}"),
                stride,
            ));
        }
        let num_pages = cfg
            .num_pages
            .unwrap_or(need.iter().sum::<usize>() + cfg.spare_pages)
            .max(1);
        if num_pages > i32::MAX as usize / 2 {
            return Err(Error::invalid("num_pages", "< 2^30", num_pages));
        }
        let mut rng = SplitMix64(seed);
        let below = |rng: &mut SplitMix64, n: usize| (rng.next_u64() % n as u64) as usize;
        let chance = |rng: &mut SplitMix64, prob: f64| {
            ((rng.next_u64() >> 11) as f64) < prob * (1u64 << 53) as f64
        };
        let bad = |rng: &mut SplitMix64| -> i32 {
            let n = num_pages as i32;
            match below(rng, 6) {
                0 => -1,
                1 => (-1i32).saturating_sub(below(rng, 2 * num_pages) as i32),
                2 => i32::MIN,
                3 => n,
                4 => n.saturating_add(below(rng, 2 * num_pages) as i32),
                _ => i32::MAX,
            }
        };
        // A shuffled pool (Fisher-Yates), handed out in order.
        let mut pool: Vec<i32> = (0..num_pages as i32).collect();
        for i in (1..num_pages).rev() {
            pool.swap(i, below(&mut rng, i + 1));
        }
        let nseq = used.len();
        let mut table = vec![0i32; nseq * stride];
        let mut handed = 0; // pool[..handed] are in the table
        for (b, &nb) in need.iter().enumerate() {
            for c in 0..nb {
                table[b * stride + c] =
                    if handed == num_pages || (handed > 0 && chance(&mut rng, cfg.repeat)) {
                        pool[below(&mut rng, handed)]
                    } else {
                        handed += 1;
                        pool[handed - 1]
                    };
            }
        }
        let used_pos: Vec<usize> = (0..nseq)
            .flat_map(|b| (0..need[b]).map(move |c| b * stride + c))
            .collect();
        let past_pos: Vec<usize> = (0..nseq)
            .flat_map(|b| (need[b]..stride).map(move |c| b * stride + c))
            .collect();
        for &i in &past_pos {
            table[i] = if cfg.bad_past_used && chance(&mut rng, 0.5) {
                bad(&mut rng)
            } else {
                below(&mut rng, num_pages) as i32
            };
        }
        let n_pages = num_pages as i32;
        let out_of_range = |e: i32| e < 0 || e >= n_pages;
        if cfg.bad_past_used
            && !past_pos.is_empty()
            && !past_pos.iter().any(|&i| out_of_range(table[i]))
        {
            table[past_pos[below(&mut rng, past_pos.len())]] = bad(&mut rng);
        }
        if cfg.bad_within_used && !used_pos.is_empty() {
            for &i in &used_pos {
                if chance(&mut rng, 0.25) {
                    table[i] = bad(&mut rng);
                }
            }
            if !used_pos.iter().any(|&i| out_of_range(table[i])) {
                table[used_pos[below(&mut rng, used_pos.len())]] = bad(&mut rng);
            }
        }
        let mut gen_t = |dim| {
            Tensor::from_fn(p.dtype, [num_pages, ps, p.heads_k, dim], |_| {
                rng.uniform(cfg.value_scale)
            })
        };
        let k_pages = gen_t(p.head_dim);
        let v_pages = gen_t(p.head_dim_v);
        let kv = PagedKv {
            k_pages,
            v_pages,
            block_table: table,
            table_stride: stride,
            page_size: ps,
            max_pages,
            seqused_k: used.iter().map(|&u| u as i32).collect(),
        };
        kv.validate()?;
        Ok(kv)
    }
}

/// What [`PagedKv::random`] generates.
#[derive(Clone, Debug, PartialEq)]
pub struct PagedConfig {
    /// Rows per page (>= 1).
    pub page_size: usize,
    /// Table columns beyond what the longest sequence needs.
    pub extra_pages: usize,
    /// Pool size; `None`: the number of used table entries plus `spare_pages`.
    pub num_pages: Option<usize>,
    /// Pages in the pool beyond the used entries when `num_pages` is `None` (never read by a correct kernel).
    pub spare_pages: usize,
    /// Row stride of the table; `None`: `max_pages`.
    pub table_stride: Option<usize>,
    /// Probability that a used entry repeats an earlier page (a shared prefix, or a page read twice).
    pub repeat: f64,
    /// Out-of-range entries past the used length (unused columns and row padding).
    pub bad_past_used: bool,
    /// Out-of-range entries within the used length (the kernel's clamp decides which page is read).
    pub bad_within_used: bool,
    /// k/v values are uniform in `[-value_scale, value_scale)`, rounded to the dtype.
    pub value_scale: f32,
}

impl Default for PagedConfig {
    /// Pages of 16 rows, one extra column, two spare pages, dense table, 20% repeats, out-of-range
    /// entries past the used length only, values in `[-1, 1)`.
    fn default() -> Self {
        PagedConfig {
            page_size: 16,
            extra_pages: 1,
            num_pages: None,
            spare_pages: 2,
            table_stride: None,
            repeat: 0.2,
            bad_past_used: true,
            bad_within_used: false,
            value_scale: 1.0,
        }
    }
}

/// The f64 truth restricted to the keys `j in keys` (local key indices, the same range for every
/// sequence) on top of the problem's own visibility (semantics.md §8): `O_R` normalised over the range,
/// `lse_R`, and `O = 0`, `lse = -inf` for rows that see no key of the range. Masks, ALiBi and dropout keep
/// the alignment and indices of the full sequences. No dropout mask is returned.
pub fn forward_partial(
    p: &Problem,
    x: &Inputs,
    keys: Range<usize>,
) -> Result<ForwardOutput, Error> {
    forward_impl(p, x, false, Some(&move |_: &Seq| keys.clone()))
}

/// [`forward_partial`] with one key range per sequence (`keys.len() == nseq`), as split-KV decode picks
/// them from each sequence's length.
///
/// ```
/// use attn_ref::paged::{forward_partial_seqs, merge};
/// use attn_ref::{Dtype, Inputs, Problem, forward};
/// let p = Problem::varlen(Dtype::Bf16, &[(1, 9), (2, 4)], 2, 1, 8, 8);
/// let x = Inputs::random(&p, 3, 1.0);
/// let lo = forward_partial_seqs(&p, &x, &[0..5, 0..2])?;
/// let hi = forward_partial_seqs(&p, &x, &[5..9, 2..4])?;
/// let m = merge(&p, &[&lo, &hi])?;
/// let f = forward(&p, &x)?;
/// assert!(m.lse.iter().zip(&f.lse).all(|(a, b)| (a - b).abs() < 1e-12));
/// # Ok::<(), attn_ref::Error>(())
/// ```
pub fn forward_partial_seqs(
    p: &Problem,
    x: &Inputs,
    keys: &[Range<usize>],
) -> Result<ForwardOutput, Error> {
    if keys.len() != p.nseq() {
        return Err(Error::invalid(
            "keys",
            format!("{} ranges (one per sequence)", p.nseq()),
            keys.len(),
        ));
    }
    forward_impl(p, x, false, Some(&|s: &Seq| keys[s.b].clone()))
}

/// Merges one row of partials `(O_r, lse_r)` into `out` and returns `lse = ln sum_r exp(lse_r)`;
/// `out = sum_r exp(lse_r - lse) O_r`, computed with the largest `lse_r = m` subtracted (the weights as
/// `exp(lse_r - m) / sum_t exp(lse_t - m)`). A part with `lse_r = -inf` contributes nothing, whatever
/// its `O_r` holds; with no finite `lse_r`, `out = 0` and `lse = -inf`. `lse_r = +inf` is outside the
/// contract.
///
/// ```
/// use attn_ref::paged::merge_row;
/// let mut out = [0.0; 2];
/// let lse = merge_row(&[(&[1.0, 0.0], 1e4), (&[0.0, 1.0], 1e4), (&[f64::NAN; 2], f64::NEG_INFINITY)], &mut out);
/// assert_eq!(out, [0.5, 0.5]);
/// assert_eq!(lse, 1e4 + 2f64.ln());
/// let lse = merge_row(&[(&[f64::NAN; 2], f64::NEG_INFINITY)], &mut out);
/// assert_eq!((out, lse), ([0.0, 0.0], f64::NEG_INFINITY));
/// ```
pub fn merge_row(parts: &[(&[f64], f64)], out: &mut [f64]) -> f64 {
    out.fill(0.0);
    let m = parts
        .iter()
        .map(|&(_, l)| l)
        .fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let sum: f64 = parts
        .iter()
        .filter(|&&(_, l)| l != f64::NEG_INFINITY)
        .map(|&(_, l)| (l - m).exp())
        .sum();
    // exp(lse_r - lse) as exp(lse_r - m) / sum: no rounding of a large lse leaks into the weights.
    for &(o, l) in parts {
        if l != f64::NEG_INFINITY {
            axpy((l - m).exp() / sum, o, out);
        }
    }
    m + sum.ln()
}

/// Merges partials laid out as rows: part `r` is `(out_r, lse_r)` with row `i`'s output at
/// `out_r[i * dv..(i + 1) * dv]` and its lse at `lse_r[i]` (every part the same number of rows).
/// Returns `(out, lse)` in the same layout; see [`merge_row`].
pub fn merge_rows(parts: &[(&[f64], &[f64])], dv: usize) -> Result<(Vec<f64>, Vec<f64>), Error> {
    let Some(&(_, lse0)) = parts.first() else {
        return Err(Error::invalid("parts", "at least one part", 0));
    };
    let n = lse0.len();
    for (r, &(o, l)) in parts.iter().enumerate() {
        if l.len() != n || o.len() != n * dv {
            return Err(Error::invalid(
                "parts",
                format!("{n} lse and {} out values in every part", n * dv),
                format!("part {r}: {} and {}", l.len(), o.len()),
            ));
        }
    }
    let mut out = vec![0.0; n * dv];
    let mut lse = vec![f64::NEG_INFINITY; n];
    let mut row = Vec::with_capacity(parts.len());
    for i in 0..n {
        row.clear();
        row.extend(parts.iter().map(|&(o, l)| (&o[i * dv..(i + 1) * dv], l[i])));
        lse[i] = merge_row(&row, &mut out[i * dv..(i + 1) * dv]);
    }
    Ok((out, lse))
}

/// Merges partial forwards of `p` (each in [`ForwardOutput`]'s layout, e.g. from [`forward_partial`]
/// over disjoint key ranges) into one (semantics.md §8); see [`merge_row`]. No parts gives `out = 0` and
/// `lse = -inf` everywhere. The result carries no dropout mask.
pub fn merge(p: &Problem, parts: &[&ForwardOutput]) -> Result<ForwardOutput, Error> {
    p.validate()?;
    let (b, hq, sq, dv) = (p.batch, p.heads_q, p.seqlen_q, p.head_dim_v);
    let (n_out, n_lse) = (b * sq * hq * dv, p.lse_len());
    for (r, f) in parts.iter().enumerate() {
        if f.out.len() != n_out || f.lse.len() != n_lse {
            return Err(Error::invalid(
                "parts",
                format!("{n_out} out and {n_lse} lse values in every part"),
                format!("part {r}: {} and {}", f.out.len(), f.lse.len()),
            ));
        }
    }
    let mut out = vec![0.0; n_out];
    let mut lse = vec![f64::NEG_INFINITY; n_lse];
    let mut row = Vec::with_capacity(parts.len());
    for bb in 0..b {
        for h in 0..hq {
            for i in 0..sq {
                let li = (bb * hq + h) * sq + i;
                let oi = ((bb * sq + i) * hq + h) * dv;
                row.clear();
                row.extend(parts.iter().map(|f| (&f.out[oi..oi + dv], f.lse[li])));
                lse[li] = merge_row(&row, &mut out[oi..oi + dv]);
            }
        }
    }
    Ok(ForwardOutput {
        out,
        lse,
        dropout_mask: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Align, BiasSpec, Dtype, Mask, forward};

    fn close(what: &str, a: &ForwardOutput, b: &ForwardOutput, tol: f64) {
        assert_eq!(a.out.len(), b.out.len(), "{what}: out length");
        assert_eq!(a.lse.len(), b.lse.len(), "{what}: lse length");
        for (i, (x, y)) in a.lse.iter().zip(&b.lse).enumerate() {
            if *y == f64::NEG_INFINITY {
                assert_eq!(*x, f64::NEG_INFINITY, "{what}: lse[{i}] = {x}, truth -inf");
            } else {
                assert!(
                    (x - y).abs() <= tol * y.abs().max(1.0),
                    "{what}: lse[{i}] = {x} vs {y}"
                );
            }
        }
        for (i, (x, y)) in a.out.iter().zip(&b.out).enumerate() {
            assert!(
                (x - y).abs() <= tol * y.abs().max(1.0),
                "{what}: out[{i}] = {x} vs {y}"
            );
        }
    }

    fn below(rng: &mut SplitMix64, n: usize) -> usize {
        (rng.next_u64() % n as u64) as usize
    }

    /// A small random problem: batch or varlen, every mask kind, GQA, seqused_k, bias, ALiBi, softcap, dropout.
    fn random_problem(rng: &mut SplitMix64) -> Problem {
        let dtype = Dtype::ALL[below(rng, 3)];
        let hk = 1 + below(rng, 2);
        let hq = hk * [1, 2, 3][below(rng, 3)];
        let d = [4, 8, 16][below(rng, 3)];
        let dv = [4, 8, 12][below(rng, 3)];
        let mut p = if below(rng, 3) == 0 {
            let n = 1 + below(rng, 3);
            let lens: Vec<(usize, usize)> =
                (0..n).map(|_| (below(rng, 6), below(rng, 13))).collect();
            Problem::varlen(dtype, &lens, hq, hk, d, dv)
        } else {
            let (b, sq, sk) = (1 + below(rng, 2), 1 + below(rng, 8), 1 + below(rng, 14));
            Problem::new(dtype, b, sq, sk, hq, hk, d, dv)
        };
        let align = if below(rng, 2) == 0 {
            Align::TopLeft
        } else {
            Align::BottomRight
        };
        p.mask = match below(rng, 6) {
            0 => Mask::None,
            1 | 2 => Mask::Causal { align },
            3 => Mask::Window {
                left: Some(below(rng, 4)),
                right: Some(below(rng, 3)),
                align,
            },
            4 => Mask::Window {
                left: None,
                right: Some(1 + below(rng, 2)),
                align,
            },
            _ => Mask::Window {
                left: Some(below(rng, 3)),
                right: None,
                align,
            },
        };
        if below(rng, 3) == 0 {
            let used = p
                .seqs()
                .iter()
                .map(|s| below(rng, s.sk_total + 1) as i32)
                .collect();
            p.seqused_k = Some(used);
        }
        if below(rng, 4) == 0 {
            let bd = if below(rng, 2) == 0 {
                Dtype::F32
            } else {
                dtype
            };
            p.bias = Some(BiasSpec {
                dtype: bd,
                broadcast: std::array::from_fn(|_| below(rng, 3) == 0),
            });
        }
        if below(rng, 4) == 0 {
            let per_batch = below(rng, 2) == 0;
            let n = if per_batch { p.nseq() * hq } else { hq };
            let slopes = (0..n).map(|_| rng.uniform(0.5).abs()).collect();
            p = p.with_alibi(slopes, per_batch);
        }
        if below(rng, 4) == 0 {
            p.softcap = 5.0;
        }
        if below(rng, 4) == 0 {
            p = p.with_dropout(0.2, rng.next_u64(), rng.next_u64());
        }
        p.validate().unwrap();
        p
    }

    /// A random partition of `0..end` into `1..=5` consecutive ranges (empty ranges included).
    fn partition(rng: &mut SplitMix64, end: usize) -> Vec<Range<usize>> {
        let mut cuts: Vec<usize> = (0..below(rng, 5)).map(|_| below(rng, end + 1)).collect();
        cuts.sort();
        let mut r = Vec::new();
        let mut lo = 0;
        for c in cuts {
            r.push(lo..c);
            lo = c;
        }
        r.push(lo..end);
        r
    }

    #[test]
    fn to_contiguous_places_every_key_by_the_convention() {
        // 3 pages of 2 rows, Hk = 2, D = 2, Dv = 1; k = 100 page + 10 row + 2 g + d, v = -(100 page + 10 row + g).
        let k = Tensor::from_fn(Dtype::F32, [3, 2, 2, 2], |[pg, r, g, d]| {
            (100 * pg + 10 * r + 2 * g + d) as f32
        });
        let v = Tensor::from_fn(Dtype::F32, [3, 2, 2, 1], |[pg, r, g, _]| {
            -((100 * pg + 10 * r + g) as f32)
        });
        // Rows of stride 4; the 4th entry of each row is padding; 7 and -3 and -5 are out of range.
        let table = vec![2, 0, 7, 99, -3, 1, 1, -5];
        let kv = PagedKv::new(k, v, table, 3, vec![5, 4])
            .unwrap()
            .with_table_stride(4)
            .unwrap();
        assert_eq!(kv.capacity(), 6);
        // (page, row) of every key, by hand: seq 0 reads pages 2, 0, clamp(7) = 2; seq 1 clamp(-3) = 0, 1, 1.
        let expect = [
            [(2, 0), (2, 1), (0, 0), (0, 1), (2, 0), (2, 1)],
            [(0, 0), (0, 1), (1, 0), (1, 1), (1, 0), (1, 1)],
        ];
        for (b, row) in expect.iter().enumerate() {
            for (j, &pr) in row.iter().enumerate() {
                assert_eq!(kv.locate(b, j), pr, "b={b} j={j}");
            }
        }
        let (kc, vc) = kv.to_contiguous().unwrap();
        assert_eq!(kc.shape, [2, 6, 2, 2]);
        assert_eq!(vc.shape, [2, 6, 2, 1]);
        #[rustfmt::skip]
        let k_expect: [f32; 2 * 6 * 4] = [
            200., 201., 202., 203.,  210., 211., 212., 213.,  0., 1., 2., 3.,  10., 11., 12., 13.,
            200., 201., 202., 203.,  210., 211., 212., 213.,
            0., 1., 2., 3.,  10., 11., 12., 13.,  100., 101., 102., 103.,  110., 111., 112., 113.,
            100., 101., 102., 103.,  110., 111., 112., 113.,
        ];
        #[rustfmt::skip]
        let v_expect: [f32; 2 * 6 * 2] = [
            -200., -201., -210., -211., -0., -1., -10., -11., -200., -201., -210., -211.,
            -0., -1., -10., -11., -100., -101., -110., -111., -100., -101., -110., -111.,
        ];
        assert_eq!(kc.data, k_expect);
        assert_eq!(vc.data, v_expect);
        let (k0, v0) = kv.gather(0).unwrap();
        assert_eq!(k0.shape, [1, 5, 2, 2]);
        assert_eq!(k0.data, k_expect[..5 * 4]);
        assert_eq!(v0.data, v_expect[..5 * 2]);
        let (k1, _) = kv.gather(1).unwrap();
        assert_eq!(k1.data, k_expect[24..24 + 4 * 4]);
        assert!(kv.gather(2).is_err());

        // The equivalent problems, batch and varlen.
        let p = Problem::new(Dtype::F32, 2, 3, 0, 4, 2, 2, 1);
        let (pc, x) = kv.random_inputs(&p, 1, 1.0).unwrap();
        assert_eq!(
            (pc.seqlen_k, pc.seqused_k.as_deref()),
            (6, Some(&[5, 4][..]))
        );
        assert_eq!(x.k, kc);
        let pv = Problem::varlen(Dtype::F32, &[(2, 0), (1, 0)], 4, 2, 2, 1);
        let (pc, x) = kv.random_inputs(&pv, 1, 1.0).unwrap();
        assert_eq!(pc.varlen.as_ref().unwrap().cu_seqlens_k, [0, 6, 12]);
        assert_eq!((x.k.shape, &x.k.data), ([1, 12, 2, 2], &kc.data));
        assert_eq!(x.v.data, vc.data);
        // Mismatches are errors.
        assert!(
            kv.problem(&Problem::new(Dtype::F32, 3, 3, 0, 4, 2, 2, 1))
                .is_err()
        );
        assert!(
            kv.problem(&Problem::new(Dtype::F16, 2, 3, 0, 4, 2, 2, 1))
                .is_err()
        );
        assert!(
            kv.problem(&Problem::new(Dtype::F32, 2, 3, 0, 4, 1, 2, 1))
                .is_err()
        );
        let mut bad = kv.clone();
        bad.seqused_k[1] = 7;
        assert!(bad.validate().is_err());
        bad.seqused_k[1] = 4;
        bad.block_table.truncate(6);
        assert!(bad.validate().is_err());
        bad.table_stride = 3;
        bad.validate().unwrap();
        bad.table_stride = 2;
        assert!(bad.validate().is_err());
    }

    /// Direct evaluation from the pages, element by element (no bias, no ALiBi, no dropout), reading the
    /// raw table with its own clamp.
    fn direct_paged(p: &Problem, kv: &PagedKv, q: &Tensor) -> ForwardOutput {
        let pc = kv.problem(p).unwrap();
        let last = kv.k_pages.shape[0] as i32 - 1;
        let locate = |b: usize, j: usize| {
            let e = kv.block_table[b * kv.table_stride + j / kv.page_size];
            (e.clamp(0, last) as usize, j % kv.page_size)
        };
        let (hq, d, dv) = (p.heads_q, p.head_dim, p.head_dim_v);
        let scale = p.softmax_scale() as f64;
        let mut out = vec![0.0; p.out_shape().iter().product()];
        let mut lse = vec![f64::NEG_INFINITY; p.lse_len()];
        for s in pc.seqs() {
            let sk = kv.used(s.b);
            for h in 0..hq {
                let g = h / p.group();
                for i in 0..s.sq {
                    let logit = |j: usize| {
                        let (page, row) = locate(s.b, j);
                        let mut x = scale
                            * (0..d)
                                .map(|e| {
                                    q.get([s.batch, s.q_start + i, h, e]) as f64
                                        * kv.k_pages.get([page, row, g, e]) as f64
                                })
                                .sum::<f64>();
                        if p.softcap > 0.0 {
                            x = p.softcap as f64 * (x / p.softcap as f64).tanh();
                        }
                        x
                    };
                    let vis: Vec<usize> = (0..sk)
                        .filter(|&j| p.mask.visible(i, j, s.sq, sk))
                        .collect();
                    if vis.is_empty() {
                        continue;
                    }
                    let l: Vec<f64> = vis.iter().map(|&j| logit(j)).collect();
                    let m = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = l.iter().map(|x| (x - m).exp()).sum();
                    let li = m + z.ln();
                    lse[p.lse_index(&s, h, i)] = li;
                    let base = ((s.batch * p.seqlen_q + s.q_start + i) * hq + h) * dv;
                    for (&j, x) in vis.iter().zip(&l) {
                        let (page, row) = locate(s.b, j);
                        for e in 0..dv {
                            out[base + e] +=
                                (x - li).exp() * kv.v_pages.get([page, row, g, e]) as f64;
                        }
                    }
                }
            }
        }
        ForwardOutput {
            out,
            lse,
            dropout_mask: None,
        }
    }

    #[test]
    fn paged_forward_equals_direct_evaluation_from_pages() {
        let mut rng = SplitMix64(0x9A6E);
        for case in 0..24 {
            let (hk, grp) = (1 + case % 2, 1 + case % 3);
            let mask = [
                Mask::None,
                Mask::Causal {
                    align: Align::BottomRight,
                },
                Mask::Window {
                    left: Some(3),
                    right: Some(1),
                    align: Align::TopLeft,
                },
            ][case % 3];
            let mut p = if case % 4 == 3 {
                Problem::varlen(
                    Dtype::Bf16,
                    &[(3, 7), (0, 0), (4, 13), (1, 1)],
                    hk * grp,
                    hk,
                    8,
                    16,
                )
            } else {
                Problem::new(Dtype::F16, 3, 1 + case % 5, 13, hk * grp, hk, 16, 8)
                    .with_seqused_k(vec![7, 0, 13])
            };
            p.mask = mask;
            if case % 5 == 0 {
                p.softcap = 4.0;
            }
            let cfg = PagedConfig {
                page_size: 1 + below(&mut rng, 5),
                extra_pages: below(&mut rng, 3),
                table_stride: if case % 2 == 0 { None } else { Some(17) },
                repeat: 0.3,
                bad_within_used: case % 3 != 0,
                ..PagedConfig::default()
            };
            let kv = PagedKv::random(&p, &cfg, rng.next_u64()).unwrap();
            let (pc, x) = kv.random_inputs(&p, rng.next_u64(), 1.0).unwrap();
            let truth = forward(&pc, &x).unwrap();
            let direct = direct_paged(&p, &kv, &x.q);
            close(
                &format!("case {case}: {p:?} {cfg:?}"),
                &direct,
                &truth,
                1e-12,
            );
        }
    }

    #[test]
    fn random_tables_are_shuffled_repeated_and_out_of_range_where_asked() {
        let p = Problem::new(Dtype::F16, 3, 2, 64, 2, 1, 8, 8).with_seqused_k(vec![37, 5, 64]);
        let ps = 8;
        let need = [5, 1, 8];
        let used_pos = |kv: &PagedKv| -> Vec<i32> {
            (0..3)
                .flat_map(|b| (0..need[b]).map(move |c| (b, c)))
                .map(|(b, c)| kv.entry(b, c))
                .collect()
        };
        let past_pos = |kv: &PagedKv| -> Vec<i32> {
            (0..3)
                .flat_map(|b| (need[b]..kv.table_stride).map(move |c| (b, c)))
                .map(|(b, c)| kv.entry(b, c))
                .collect()
        };
        for seed in 0..20u64 {
            let base = PagedConfig {
                page_size: ps,
                extra_pages: 2,
                table_stride: Some(12),
                ..PagedConfig::default()
            };
            // Clean: everything in range, used entries distinct and not in pool order.
            let clean = PagedConfig {
                repeat: 0.0,
                bad_past_used: false,
                ..base.clone()
            };
            let kv = PagedKv::random(&p, &clean, seed).unwrap();
            assert_eq!(kv, PagedKv::random(&p, &clean, seed).unwrap());
            assert_eq!(
                (kv.max_pages, kv.table_stride, kv.num_pages()),
                (10, 12, 16)
            );
            assert_eq!(kv.block_table.len(), 36);
            assert_eq!(kv.seqused_k, [37, 5, 64]);
            assert!(kv.block_table.iter().all(|&e| (0..16).contains(&e)));
            let mut u = used_pos(&kv);
            assert_ne!(u, (0..14).collect::<Vec<_>>(), "seed {seed}: not shuffled");
            u.sort();
            u.dedup();
            assert_eq!(u.len(), 14, "seed {seed}: repeated page with repeat = 0");
            // Repeats and bad entries everywhere.
            let wild = PagedConfig {
                repeat: 0.5,
                bad_within_used: true,
                ..base.clone()
            };
            let kv = PagedKv::random(&p, &wild, seed).unwrap();
            let oor = |e: &i32| !(0..kv.num_pages() as i32).contains(e);
            let u = used_pos(&kv);
            assert!(u.iter().any(oor), "seed {seed}: no bad used entry");
            assert!(
                past_pos(&kv).iter().any(oor),
                "seed {seed}: no bad entry past used"
            );
            let mut valid: Vec<i32> = u.iter().copied().filter(|e| !oor(e)).collect();
            let n = valid.len();
            valid.sort();
            valid.dedup();
            if seed < 5 {
                assert!(valid.len() < n, "seed {seed}: no repeated page ({u:?})");
            }
            // Past the used length only.
            let kv = PagedKv::random(&p, &base, seed).unwrap();
            assert!(
                !used_pos(&kv)
                    .iter()
                    .any(|e| !(0..kv.num_pages() as i32).contains(e))
            );
            assert!(
                past_pos(&kv)
                    .iter()
                    .any(|e| !(0..kv.num_pages() as i32).contains(e))
            );
        }
        // A pool smaller than the used entries forces repeats; a zero page size is an error.
        let small = PagedConfig {
            page_size: ps,
            num_pages: Some(3),
            ..PagedConfig::default()
        };
        let kv = PagedKv::random(&p, &small, 1).unwrap();
        assert_eq!(kv.num_pages(), 3);
        assert!(used_pos(&kv).iter().all(|e| (0..3).contains(e)));
        let zero = PagedConfig {
            page_size: 0,
            ..PagedConfig::default()
        };
        assert!(PagedKv::random(&p, &zero, 1).is_err());
    }

    #[test]
    fn merged_partials_equal_the_forward() {
        let mut rng = SplitMix64(0x5EED);
        for case in 0..300 {
            let p = random_problem(&mut rng);
            let x = Inputs::random(&p, rng.next_u64(), [1.0, 3.0][case % 2]);
            let truth = forward(&p, &x).unwrap();
            let end = p.max_seqlens().1 + below(&mut rng, 2);
            let mut ranges = partition(&mut rng, end);
            if case % 3 == 0 {
                ranges.push(end + 1..end + 4); // past every key
            }
            // Shuffle the order of the parts: merge does not depend on it.
            for i in (1..ranges.len()).rev() {
                ranges.swap(i, below(&mut rng, i + 1));
            }
            let parts: Vec<ForwardOutput> = ranges
                .iter()
                .map(|r| forward_partial(&p, &x, r.clone()).unwrap())
                .collect();
            let refs: Vec<&ForwardOutput> = parts.iter().collect();
            let m = merge(&p, &refs).unwrap();
            close(&format!("case {case}: {p:?} {ranges:?}"), &m, &truth, 1e-12);
            assert!(m.out.iter().chain(&m.lse).all(|v| !v.is_nan()));
        }
    }

    #[test]
    fn merged_per_sequence_partials_equal_the_forward() {
        let mut rng = SplitMix64(0xBEEF);
        for case in 0..150 {
            let p = random_problem(&mut rng);
            let x = Inputs::random(&p, rng.next_u64(), 1.0);
            let truth = forward(&p, &x).unwrap();
            let per_seq: Vec<Vec<Range<usize>>> =
                p.seqs().iter().map(|s| partition(&mut rng, s.sk)).collect();
            let n = per_seq.iter().map(Vec::len).max().unwrap_or(0);
            let parts: Vec<ForwardOutput> = (0..n)
                .map(|r| {
                    let keys: Vec<Range<usize>> = per_seq
                        .iter()
                        .map(|v| v.get(r).cloned().unwrap_or(0..0))
                        .collect();
                    forward_partial_seqs(&p, &x, &keys).unwrap()
                })
                .collect();
            let refs: Vec<&ForwardOutput> = parts.iter().collect();
            let m = merge(&p, &refs).unwrap();
            close(
                &format!("case {case}: {p:?} {per_seq:?}"),
                &m,
                &truth,
                1e-12,
            );
        }
        let p = Problem::new(Dtype::F16, 2, 3, 4, 1, 1, 8, 8);
        let x = Inputs::random(&p, 1, 1.0);
        assert!(forward_partial_seqs(&p, &x, &[0..4, 0..4, 0..4]).is_err());
    }

    #[test]
    fn a_partial_is_the_forward_with_minus_inf_bias_outside_the_range() {
        let mut rng = SplitMix64(0xB1A5);
        for case in 0..60 {
            let p = random_problem(&mut rng);
            let x = Inputs::random(&p, rng.next_u64(), 1.0);
            let mk = p.max_seqlens().1;
            let lo = below(&mut rng, mk + 1);
            let keys = lo..lo + below(&mut rng, mk + 2);
            let partial = forward_partial(&p, &x, keys.clone()).unwrap();
            // The same keys hidden by a -inf bias (an f32 copy of the bias, or 0).
            let mut pb = p.clone();
            pb.bias = Some(BiasSpec {
                dtype: Dtype::F32,
                broadcast: [false; 4],
            });
            let bias = Tensor::from_fn(Dtype::F32, p.bias_shape(), |[b, h, i, j]| {
                if !keys.contains(&j) {
                    f32::NEG_INFINITY
                } else {
                    x.bias.as_ref().map_or(0.0, |t| t.get([b, h, i, j]))
                }
            });
            let xb = Inputs {
                bias: Some(bias),
                ..x.clone()
            };
            let hidden = forward(&pb, &xb).unwrap();
            close(
                &format!("case {case}: {p:?} {keys:?}"),
                &partial,
                &hidden,
                1e-15,
            );
        }
    }

    #[test]
    fn whole_and_empty_ranges() {
        let mut rng = SplitMix64(7);
        for _ in 0..30 {
            let p = random_problem(&mut rng);
            let x = Inputs::random(&p, rng.next_u64(), 1.0);
            let f = forward(&p, &x).unwrap();
            assert_eq!(forward_partial(&p, &x, 0..usize::MAX).unwrap(), f);
            let reversed = Range { start: 5, end: 2 };
            for r in [0..0, 3..3, reversed, usize::MAX - 1..usize::MAX] {
                let e = forward_partial(&p, &x, r).unwrap();
                assert!(e.out.iter().all(|&o| o == 0.0));
                assert!(e.lse.iter().all(|&l| l == f64::NEG_INFINITY));
            }
            // Merging a forward with nothing, or with an empty part, changes nothing.
            let empty = forward_partial(&p, &x, 0..0).unwrap();
            let m = merge(&p, &[&f, &empty]).unwrap();
            assert_eq!((&m.out, &m.lse), (&f.out, &f.lse));
            let none = merge(&p, &[]).unwrap();
            assert_eq!((&none.out, &none.lse), (&empty.out, &empty.lse));
        }
    }

    #[test]
    fn merge_rows_is_stable_and_checks_lengths() {
        let ninf = f64::NEG_INFINITY;
        // Row 0: two parts at a large lse (exp overflows); row 1: all empty, garbage out; row 2: one part
        // only; row 3: two parts at a very negative lse (exp underflows).
        let o1 = [1.0, 2.0, f64::NAN, f64::NAN, 5.0, 6.0, 1.0, 0.0];
        let l1 = [1e4, ninf, 3.0, -1e4];
        let o2 = [3.0, 4.0, f64::INFINITY, 0.0, 9.0, 9.0, 0.0, 1.0];
        let l2 = [1e4, ninf, ninf, -1e4];
        let (out, lse) = merge_rows(&[(&o1[..], &l1[..]), (&o2[..], &l2[..])], 2).unwrap();
        let expect_lse = [1e4 + 2f64.ln(), ninf, 3.0, -1e4 + 2f64.ln()];
        let expect_out = [2.0, 3.0, 0.0, 0.0, 5.0, 6.0, 0.5, 0.5];
        for (a, b) in lse.iter().zip(&expect_lse) {
            assert!(a == b || (a - b).abs() < 1e-12 * b.abs(), "{lse:?}");
        }
        for (a, b) in out.iter().zip(&expect_out) {
            assert!((a - b).abs() < 1e-12, "{out:?}");
        }
        // Unequal weights: exp(1) : exp(0).
        let (out, lse) =
            merge_rows(&[(&[1.0][..], &[1.0][..]), (&[0.0][..], &[0.0][..])], 1).unwrap();
        let w = 1.0f64.exp() / (1.0 + 1.0f64.exp());
        assert!((out[0] - w).abs() < 1e-15);
        assert!((lse[0] - (1.0 + (1.0 + (-1.0f64).exp()).ln())).abs() < 1e-15);
        assert!(merge_rows(&[], 2).is_err());
        assert!(merge_rows(&[(&o1[..], &l1[..]), (&o2[..6], &l2[..3])], 2).is_err());
        assert!(merge_rows(&[(&o1[..], &l1[..])], 3).is_err());
        let p = Problem::new(Dtype::F16, 1, 2, 3, 1, 1, 8, 8);
        let x = Inputs::random(&p, 1, 1.0);
        let mut f = forward(&p, &x).unwrap();
        f.lse.pop();
        assert!(merge(&p, &[&f]).is_err());
    }
}
