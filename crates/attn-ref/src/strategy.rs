//! proptest strategies for whole problems (feature `proptest`).
//!
//! Shapes lean towards the edges kernels get wrong: sequence lengths 1, 3, 17, 55, 100 (not multiples of
//! any tile), `Sq != Sk`, ragged varlen batches (empty sequences included), GQA/MQA ratios, `D != Dv`,
//! every mask/bias/ALiBi/softcap/dropout combination. Shrinking goes towards small shapes and no features.
//!
//! Tensor values come from a seeded generator ([`Inputs::random`]) rather than element-wise strategies,
//! so a failing case prints as its problem, seed and value scale.
//!
//! ```
//! use attn_ref::strategy::{Config, case};
//! use proptest::strategy::{Strategy, ValueTree};
//! use proptest::test_runner::TestRunner;
//! let mut runner = TestRunner::deterministic();
//! let c = case(&Config::default()).new_tree(&mut runner).unwrap().current();
//! c.problem.validate_inputs(&c.inputs).unwrap();
//! ```

use crate::{Align, Dtype, Inputs, Mask, Problem};
use proptest::prelude::*;
use proptest::{collection::vec, option, sample};

/// What [`problem`] may generate.
#[derive(Clone, Debug)]
pub struct Config {
    /// Largest `B` (batch mode) or `nseq` (varlen).
    pub max_batch: usize,
    /// Largest `Hk`.
    pub max_heads_k: usize,
    /// Group sizes `Hq / Hk` to pick from.
    pub groups: Vec<usize>,
    /// Largest sequence length (the edge lengths above it are dropped).
    pub max_seqlen: usize,
    /// Head dimensions to pick `D` and `Dv` from (rounded up to a multiple of 8 for f16/bf16).
    pub head_dims: Vec<usize>,
    /// Dtypes to pick from.
    pub dtypes: Vec<Dtype>,
    /// Largest finite window bound.
    pub max_window: usize,
    /// Value scales for q, k, v to pick from (uniform in `[-s, s)`).
    pub value_scales: Vec<f32>,
    /// Probability of varlen mode.
    pub p_varlen: f64,
    /// Probability of `seqused_k`.
    pub p_seqused_k: f64,
    /// Probability of a bias.
    pub p_bias: f64,
    /// Probability of ALiBi.
    pub p_alibi: f64,
    /// Probability of softcap.
    pub p_softcap: f64,
    /// Probability of dropout.
    pub p_dropout: f64,
    /// Probability of an explicit scale.
    pub p_scale: f64,
    /// Whether masks other than [`Mask::None`] may be generated.
    pub masks: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_batch: 3,
            max_heads_k: 2,
            groups: vec![1, 2, 3, 4],
            max_seqlen: 100,
            head_dims: vec![8, 16, 24, 40, 64],
            dtypes: Dtype::ALL.to_vec(),
            max_window: 8,
            value_scales: vec![1.0, 0.5, 3.0],
            p_varlen: 0.3,
            p_seqused_k: 0.2,
            p_bias: 0.3,
            p_alibi: 0.2,
            p_softcap: 0.2,
            p_dropout: 0.3,
            p_scale: 0.2,
            masks: true,
        }
    }
}

impl Config {
    /// Tiny shapes (for finite differences and other per-element loops): `Sq, Sk <= 5`, `D <= 8`, `B <= 2`.
    pub fn tiny() -> Self {
        Config {
            max_batch: 2,
            max_heads_k: 2,
            groups: vec![1, 2],
            max_seqlen: 5,
            head_dims: vec![4, 8],
            dtypes: vec![Dtype::F32],
            max_window: 3,
            ..Config::default()
        }
    }

    /// No optional feature: plain attention with the given masks allowed or not.
    pub fn plain(mut self) -> Self {
        self.p_varlen = 0.0;
        self.p_seqused_k = 0.0;
        self.p_bias = 0.0;
        self.p_alibi = 0.0;
        self.p_softcap = 0.0;
        self.p_dropout = 0.0;
        self
    }
}

/// Any dtype.
pub fn dtype() -> impl Strategy<Value = Dtype> {
    prop_oneof![Just(Dtype::F16), Just(Dtype::Bf16), Just(Dtype::F32)]
}

/// Either alignment.
pub fn align() -> impl Strategy<Value = Align> {
    prop_oneof![Just(Align::TopLeft), Just(Align::BottomRight)]
}

/// Any mask, windows bounded by `max_window` (or unbounded).
pub fn mask(max_window: usize) -> BoxedStrategy<Mask> {
    prop_oneof![
        Just(Mask::None),
        align().prop_map(|align| Mask::Causal { align }),
        (
            option::of(0..=max_window),
            option::of(0..=max_window),
            align()
        )
            .prop_map(|(left, right, align)| Mask::Window { left, right, align }),
    ]
    .boxed()
}

/// A sequence length in `min..=max`, biased towards 1, 3, 17, 55, 100.
pub fn seqlen(min: usize, max: usize) -> BoxedStrategy<usize> {
    let edges: Vec<usize> = [1, 3, 17, 55, 100]
        .into_iter()
        .filter(|&s| s >= min && s <= max)
        .collect();
    if edges.is_empty() {
        (min..=max).boxed()
    } else {
        prop_oneof![sample::select(edges), min..=max].boxed()
    }
}

/// `Some(s)` with probability `p` (exactly `None` for `p <= 0`, exactly `Some` for `p >= 1`).
pub fn maybe<S: Strategy + 'static>(p: f64, s: S) -> BoxedStrategy<Option<S::Value>>
where
    S::Value: Clone,
{
    if p <= 0.0 {
        Just(None).boxed()
    } else if p >= 1.0 {
        s.prop_map(Some).boxed()
    } else {
        option::weighted(p, s).boxed()
    }
}

fn fix_dim(dt: Dtype, d: usize) -> usize {
    if dt == Dtype::F32 {
        d.max(1)
    } else {
        d.div_ceil(8).max(1) * 8
    }
}

/// A whole problem (no tensor data).
pub fn problem(cfg: &Config) -> BoxedStrategy<Problem> {
    let c = cfg.clone();
    let varlen = maybe(c.p_varlen, Just(())).prop_map(|o| o.is_some());
    (
        1..=c.max_batch,
        1..=c.max_heads_k,
        sample::select(c.groups.clone()),
        sample::select(c.dtypes.clone()),
        sample::select(c.head_dims.clone()),
        sample::select(c.head_dims.clone()),
        any::<bool>(),
        varlen,
    )
        .prop_flat_map(move |(nb, hk, grp, dt, d, dv, same_dv, varlen)| {
            let c = c.clone();
            let d = fix_dim(dt, d);
            let dv = if same_dv { d } else { fix_dim(dt, dv) };
            let hq = hk * grp;
            let min_len = if varlen { 0 } else { 1 };
            let lens = vec(
                (seqlen(min_len, c.max_seqlen), seqlen(min_len, c.max_seqlen)),
                nb,
            );
            let used = maybe(c.p_seqused_k, vec(0.0f64..=1.0, nb));
            let m = if c.masks {
                mask(c.max_window)
            } else {
                Just(Mask::None).boxed()
            };
            let bias = maybe(
                c.p_bias,
                (prop_oneof![Just(dt), Just(Dtype::F32)], any::<[bool; 4]>()),
            );
            let alibi = maybe(c.p_alibi, (any::<bool>(), vec(0.0f32..1.0, nb * hq)));
            let softcap = maybe(c.p_softcap, 1.0f32..50.0);
            let dropout = maybe(c.p_dropout, (0.0f64..0.9, any::<u64>(), any::<u64>()));
            let scale = maybe(c.p_scale, 0.01f32..1.0);
            (
                Just((nb, hk, hq, dt, d, dv, varlen)),
                lens,
                used,
                m,
                bias,
                alibi,
                softcap,
                dropout,
                scale,
            )
                .prop_map(
                    |(
                        (nb, hk, hq, dt, d, dv, varlen),
                        lens,
                        used,
                        mask,
                        bias,
                        alibi,
                        softcap,
                        dropout,
                        scale,
                    )| {
                        let mut p = if varlen {
                            Problem::varlen(dt, &lens, hq, hk, d, dv)
                        } else {
                            Problem::new(dt, nb, lens[0].0, lens[0].1, hq, hk, d, dv)
                        };
                        if let Some(u) = used {
                            let used = p
                                .seqs()
                                .iter()
                                .zip(&u)
                                .map(|(s, f)| (s.sk_total as f64 * f).round() as i32)
                                .collect();
                            p.seqused_k = Some(used);
                        }
                        p.mask = mask;
                        if let Some((bdt, bc)) = bias {
                            p = p.with_bias(bdt, bc);
                        }
                        if let Some((per_batch, slopes)) = alibi {
                            let slopes = if per_batch {
                                slopes
                            } else {
                                slopes[..hq].to_vec()
                            };
                            p = p.with_alibi(slopes, per_batch);
                        }
                        if let Some(cap) = softcap {
                            p.softcap = cap;
                        }
                        if let Some((pr, seed, offset)) = dropout {
                            p = p.with_dropout(pr, seed, offset);
                        }
                        p.scale = scale;
                        p
                    },
                )
        })
        .boxed()
}

/// A problem with its inputs.
#[derive(Clone)]
pub struct Case {
    /// The problem.
    pub problem: Problem,
    /// Its inputs, from [`Inputs::random`]`(&problem, seed, value_scale)`.
    pub inputs: Inputs,
    /// Seed of the inputs.
    pub seed: u64,
    /// Value scale of the inputs.
    pub value_scale: f32,
}

impl Case {
    /// A case with inputs from [`Inputs::random`].
    pub fn new(problem: Problem, seed: u64, value_scale: f32) -> Self {
        let inputs = Inputs::random(&problem, seed, value_scale);
        Case {
            problem,
            inputs,
            seed,
            value_scale,
        }
    }
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Case {{ problem: {:?}, seed: {:#x}, value_scale: {} }} (rebuild with Case::new)",
            self.problem, self.seed, self.value_scale
        )
    }
}

/// A problem from [`problem`] with seeded random inputs.
pub fn case(cfg: &Config) -> BoxedStrategy<Case> {
    let scales = cfg.value_scales.clone();
    problem(cfg)
        .prop_flat_map(move |p| (Just(p), any::<u64>(), sample::select(scales.clone())))
        .prop_map(|(p, seed, vs)| Case::new(p, seed, vs))
        .boxed()
}
