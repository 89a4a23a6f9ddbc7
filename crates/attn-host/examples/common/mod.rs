//! What the two layer examples share: the problem, its inputs, the CPU reference check (the pass
//! rule of `attn_ref::tolerance`), and the GPU-or-skip convention of the tests.
use attn_ref::{Align, Dtype, Inputs, Mask, Problem, Report, Tensor};
use half::bf16;
use std::process::ExitCode;

/// Batch, sequence length (queries = keys), query heads, kv heads, head dim.
pub const B: usize = 2;
/// Sequence length of queries and keys.
pub const S: usize = 256;
/// Query heads.
pub const HQ: usize = 8;
/// KV heads (GQA: 4 query heads per kv head).
pub const HK: usize = 2;
/// Head dim (of q/k and of v).
pub const D: usize = 64;

/// `[B, S, HQ, D]`: q, out, dout, dq.
pub const Q_SHAPE: [usize; 4] = [B, S, HQ, D];
/// `[B, S, HK, D]`: k, v, dk, dv.
pub const KV_SHAPE: [usize; 4] = [B, S, HK, D];

/// One layer's problem and its host data (values already rounded to bf16).
pub struct Case {
    /// The reference's description of the call.
    pub p: Problem,
    /// q, k, v.
    pub x: Inputs,
    /// The upstream gradient, `out`'s shape.
    pub dout: Tensor,
}

/// A bf16 causal (bottom-right) GQA layer with random inputs.
pub fn case() -> Case {
    let p = Problem::new(Dtype::Bf16, B, S, S, HQ, HK, D, D).with_mask(Mask::Causal {
        align: Align::BottomRight,
    });
    let x = Inputs::random(&p, 2024, 1.0);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let dout = Tensor::from_fn(Dtype::Bf16, p.out_shape(), |_| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    });
    Case { p, x, dout }
}

/// A reference tensor's values as bf16, contiguous.
pub fn bf16s(t: &Tensor) -> Vec<bf16> {
    t.to_contiguous().into_iter().map(bf16::from_f32).collect()
}

/// What the GPU wrote, read back.
pub struct Got {
    /// `[B, S, HQ, D]`.
    pub out: Vec<bf16>,
    /// `[B, HQ, S]`.
    pub lse: Vec<f32>,
    /// `[B, S, HQ, D]`.
    pub dq: Vec<bf16>,
    /// `[B, S, HK, D]`.
    pub dk: Vec<bf16>,
    /// `[B, S, HK, D]`.
    pub dv: Vec<bf16>,
}

fn f32s(v: &[bf16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

/// Judges every element of `got` against the f64 truth with the blocked low-precision
/// reference as the noise baseline; prints one line per tensor and returns whether all passed.
pub fn judge(case: &Case, got: &Got) -> Result<bool, attn_ref::Error> {
    let Case { p, x, dout } = case;
    let truth = attn_ref::forward(p, x)?;
    let lowp = attn_ref::forward_blocked(p, x, 64, 64)?;
    let gt = attn_ref::backward(p, x, dout, &truth.out, &truth.lse, false)?;
    let gl = attn_ref::backward_blocked(p, x, dout, &lowp.out, &lowp.lse, false)?;
    let reports: Vec<Report> = vec![
        attn_ref::check(&f32s(&got.out), &truth.out, &lowp.out).named("out"),
        attn_ref::check_lse(&got.lse, &truth.lse, &lowp.lse).named("lse"),
        attn_ref::check(&f32s(&got.dq), &gt.dq, &gl.dq).named("dq"),
        attn_ref::check(&f32s(&got.dk), &gt.dk, &gl.dk).named("dk"),
        attn_ref::check(&f32s(&got.dv), &gt.dv, &gl.dv).named("dv"),
    ];
    for r in &reports {
        println!("{r}");
    }
    Ok(reports.iter().all(Report::passed))
}

/// The exit of a run without a usable GPU: 0 after saying why, or a failure with
/// `ATTN_REQUIRE_GPU=1` (the tests' convention).
pub fn skip(example: &str, why: &str) -> ExitCode {
    if std::env::var("ATTN_REQUIRE_GPU").is_ok_and(|v| v == "1") {
        eprintln!("{example}: ATTN_REQUIRE_GPU=1 but no GPU works: {why}");
        return ExitCode::FAILURE;
    }
    eprintln!("skipped: {example}: no GPU ({why})");
    ExitCode::SUCCESS
}

/// The exit of a run that reached the GPU.
pub fn verdict(example: &str, result: Result<bool, Box<dyn std::error::Error>>) -> ExitCode {
    match result {
        Ok(true) => {
            println!("{example}: PASS");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("{example}: FAIL");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{example}: error: {e}");
            ExitCode::FAILURE
        }
    }
}
