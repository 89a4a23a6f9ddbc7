"""Peer forward (or backward) timings for `attn bench --compare torch [--pass bwd]`: PyTorch SDPA's
flash, efficient and cudnn backends on the same shapes, in the same run. A shape with
"pass": "bwd" times torch.autograd.grad of the output with respect to q, k, v (FLOPs 2.5x the
forward's).

usage: python3 torch_peers.py SHAPES_JSON OUT_JSON
SHAPES_JSON: [{"dtype": "bf16", "d": 128, "causal": true, "seqlen": 1024, "batch": 16, "heads": 16}, ...]
Inputs are BMHK (as ours) viewed as BHMK; causal is top-left (SDPA's), which equals bottom-right
for these square shapes. Timing: triton.testing.do_bench median (CUDA events, L2 flushed)."""
import json, sys
import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
from triton.testing import do_bench

shapes = json.load(open(sys.argv[1]))
backends = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION}
dtypes = {"bf16": torch.bfloat16, "f16": torch.float16}
rows = []
for sh in shapes:
    b, s, h, d = sh["batch"], sh["seqlen"], sh["heads"], sh["d"]
    bwd = sh.get("pass") == "bwd"
    q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=dtypes[sh["dtype"]]).transpose(1, 2)
               .requires_grad_(bwd) for _ in range(3))
    flops = 4 * b * h * s * s * d / (2 if sh["causal"] else 1) * (2.5 if bwd else 1)
    for name, be in backends.items():
        r = dict(sh, backend=name)
        try:
            with sdpa_kernel([be]):
                if bwd:
                    out = F.scaled_dot_product_attention(q, k, v, is_causal=sh["causal"])
                    dout = torch.randn_like(out)
                    fn = lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
                else:
                    fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=sh["causal"])
                ms = do_bench(fn, warmup=25, rep=100, return_mode="median")
            r.update(ms=ms, tflops=flops / ms / 1e9)
        except Exception as e:  # a backend that does not support the shape
            r.update(error=str(e)[:200])
        rows.append(r)
    del q, k, v
json.dump(rows, open(sys.argv[2], "w"), indent=1)
