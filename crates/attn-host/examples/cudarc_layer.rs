//! One attention layer, forward and backward, the way an engine built on cudarc (candle,
//! mistral.rs) runs it: the engine owns a cudarc context, its own stream and its buffers as
//! `CudaSlice`s; attn-host enqueues its kernels on that stream with no copy and no
//! synchronisation, and the engine reads the results back with cudarc.
//!
//! bf16, B = 2, S = 256, Hq = 8, Hk = 2 (GQA), D = 64, causal (bottom-right). Every element of
//! `out`, `lse`, `dq`, `dk` and `dv` is judged against `attn-ref` (f64 truth, blocked
//! low-precision baseline). Exits non-zero on failure; without a CUDA device it says why and
//! exits 0 (`ATTN_REQUIRE_GPU=1` makes that a failure).
//!
//! ```sh
//! cargo run --release -p attn-host --features cudarc --example cudarc_layer
//! ```
mod common;

use attn_host::interop::{Attention, Grads, Tensor, TensorMut};
use attn_host::{Align, Device, Mask};
use common::{KV_SHAPE, Q_SHAPE};
use cudarc::driver::CudaContext;
use half::bf16;
use std::process::ExitCode;

const NAME: &str = "cudarc_layer";

fn main() -> ExitCode {
    // cudarc panics when libcuda is missing: ask attn-host (which checks first) whether it is.
    match attn_host::driver::cuda::device_count() {
        Ok(n) if n > 0 => {}
        Ok(_) => return common::skip(NAME, "no CUDA device"),
        Err(e) => return common::skip(NAME, &e.to_string()),
    }
    common::verdict(NAME, run())
}

fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let case = common::case();
    let (q_len, kv_len) = (Q_SHAPE.iter().product(), KV_SHAPE.iter().product());
    let lse_len = common::B * common::HQ * common::S;

    // ---- the engine: a cudarc context, its own stream, its buffers
    let ctx = CudaContext::new(0)?;
    let stream = ctx.new_stream()?;
    let q = stream.clone_htod(&common::bf16s(&case.x.q))?;
    let k = stream.clone_htod(&common::bf16s(&case.x.k))?;
    let v = stream.clone_htod(&common::bf16s(&case.x.v))?;
    let dout = stream.clone_htod(&common::bf16s(&case.dout))?;
    // Outputs poisoned with NaN, so that an element the kernels do not write shows.
    let mut out = stream.clone_htod(&vec![bf16::NAN; q_len])?;
    let mut lse = stream.clone_htod(&vec![f32::NAN; lse_len])?;
    let mut dq = stream.clone_htod(&vec![bf16::NAN; q_len])?;
    let mut dk = stream.clone_htod(&vec![bf16::NAN; kv_len])?;
    let mut dv = stream.clone_htod(&vec![bf16::NAN; kv_len])?;

    // ---- attn-host on the engine's context and stream
    let dev = Device::from_cudarc(&ctx)?;
    let on = dev.cudarc_stream(&stream)?;
    println!(
        "{NAME}: {} ({}), code object {}, on the engine's stream {:#x}",
        dev.info().name,
        dev.info().arch,
        dev.code_object_target()?,
        on.raw()
    );
    let mut attn = Attention::new(
        Tensor::new(&q, Q_SHAPE),
        Tensor::new(&k, KV_SHAPE),
        Tensor::new(&v, KV_SHAPE),
    )
    .mask(Mask::Causal(Align::BottomRight));
    attn.forward(&on, TensorMut::new(&mut out, Q_SHAPE), Some(&mut lse))?;
    let grads = Grads {
        dq: TensorMut::new(&mut dq, Q_SHAPE),
        dk: TensorMut::new(&mut dk, KV_SHAPE),
        dv: TensorMut::new(&mut dv, KV_SHAPE),
    };
    attn.backward(
        &on,
        Tensor::new(&out, Q_SHAPE),
        &lse,
        Tensor::new(&dout, Q_SHAPE),
        grads,
    )?;

    // ---- back with cudarc, in stream order after the kernels
    let got = common::Got {
        out: stream.clone_dtoh(&out)?,
        lse: stream.clone_dtoh(&lse)?,
        dq: stream.clone_dtoh(&dq)?,
        dk: stream.clone_dtoh(&dk)?,
        dv: stream.clone_dtoh(&dv)?,
    };
    // Asynchronous kernel failures surface here.
    on.synchronize()?;
    Ok(common::judge(&case, &got)?)
}
