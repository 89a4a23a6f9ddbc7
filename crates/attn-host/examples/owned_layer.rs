//! One attention layer, forward and backward, on attn-host's own buffers: the convenience calls
//! `attn_host::forward` / `attn_host::backward` on `DeviceBuffer`s (CUDA or HIP, whichever works).
//!
//! bf16, B = 2, S = 256, Hq = 8, Hk = 2 (GQA), D = 64, causal (bottom-right). Every element of
//! `out`, `lse`, `dq`, `dk` and `dv` is judged against `attn-ref` (f64 truth, blocked
//! low-precision baseline). Exits non-zero on failure; without a GPU it says why and exits 0
//! (`ATTN_REQUIRE_GPU=1` makes that a failure).
//!
//! ```sh
//! cargo run --release -p attn-host --example owned_layer
//! ```
mod common;

use attn_host::{Align, Device, FwdOptions, Mask};
use common::{KV_SHAPE, Q_SHAPE};
use std::process::ExitCode;

const NAME: &str = "owned_layer";

fn main() -> ExitCode {
    match Device::best() {
        Ok(dev) => common::verdict(NAME, run(&dev)),
        Err(e) => common::skip(NAME, &e.to_string()),
    }
}

fn run(dev: &Device) -> Result<bool, Box<dyn std::error::Error>> {
    let case = common::case();
    println!(
        "{NAME}: {} {} ({}), code object {}",
        dev.info().api.name(),
        dev.info().name,
        dev.info().arch,
        dev.code_object_target()?
    );
    let stream = dev.new_stream()?;
    let q = dev.clone_htod(&common::bf16s(&case.x.q))?;
    let k = dev.clone_htod(&common::bf16s(&case.x.k))?;
    let v = dev.clone_htod(&common::bf16s(&case.x.v))?;
    let dout = dev.clone_htod(&common::bf16s(&case.dout))?;
    let opts = FwdOptions {
        mask: Mask::Causal(Align::BottomRight),
        ..Default::default()
    };
    let (q_, k_, v_) = ((&q, Q_SHAPE), (&k, KV_SHAPE), (&v, KV_SHAPE));
    let (out, lse) = attn_host::forward(&stream, q_, k_, v_, &opts)?;
    let (dq, dk, dv) = attn_host::backward(&stream, q_, k_, v_, &out, &lse, &dout, &opts)?;
    stream.synchronize()?;
    let got = common::Got {
        out: out.to_host(&stream)?,
        lse: lse.to_host(&stream)?,
        dq: dq.to_host(&stream)?,
        dk: dk.to_host(&stream)?,
        dv: dv.to_host(&stream)?,
    };
    Ok(common::judge(&case, &got)?)
}
