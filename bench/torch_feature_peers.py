"""Peer forward timings for `attn bench --features`: PyTorch on the feature rows, in the same run,
on the same shapes.

usage: python3 torch_feature_peers.py FEATURES_JSON OUT_JSON

FEATURES_JSON is the list of rows `attn bench --features` times, e.g.
  [{"row": "dropout", "dtype": "bf16", "d": 128, "heads": 16, "seqlen": 1024, "batch": 16,
    "causal": false, "flops": 5.5e11, "dropout_p": 0.1, "note": "..."}, ...]
with "softcap" (softcap row), "alibi_slopes" (alibi row) and "seqlens" (varlen rows; there
"seqlen" is the longest and "batch" the count). FLOPs come from the caller, so both sides divide
by the same number.

OUT_JSON gets one object per (row, seqlen, peer): {"row", "seqlen", "peer", "ms", "tflops",
"timer"} or {"row", "seqlen", "peer", "error"}. It is rewritten after every peer, so a crash
part-way keeps what was timed; every peer call is in try/except, so an unsupported case is an
"error" string, never an abort.

Peers per row (q, k, v are BSHD like ours; SDPA gets the BHSD views, as in torch_peers.py):
  dropout            SDPA flash, efficient, cudnn with dropout_p
  bias-bcast         SDPA efficient, cudnn; attn_mask = the bf16 [1,H,S,S] tensor expanded to
                     [B,H,S,S] (a stride-0 view)
  bias-full          SDPA efficient, cudnn; attn_mask = a bf16 [B,H,S,S] tensor
  alibi              efficient: SDPA efficient reading a materialised bf16 [1,H,S,S] bias
                     (slope*(j-i), -inf above the diagonal: causal folded in); flash:
                     aten._flash_attention_forward with alibi_slopes and is_causal (FA2's own
                     ALiBi; PyTorch 2.11's build rejects it, so this is an error there)
  softcap            flex: torch.compile(flex_attention) with a tanh score_mod (contiguous BHSD)
  varlen(-causal)    efficient: aten._efficient_attention_forward, q [1,total,H,D], cu_seqlens,
                     custom_mask_type 0 (2 = causal from bottom right); flash:
                     aten._flash_attention_forward, q [total,H,D], is_causal
Timing: triton.testing.do_bench median (CUDA events, L2 flushed), warm-up 25 ms, rep 100 ms, after
one untimed call (which also compiles flex)."""
import gc
import itertools
import json
import sys
import time

from peers_common import Results, log, short

PEERS = {
    "dropout": ["flash", "efficient", "cudnn"],
    "bias-bcast": ["efficient", "cudnn"],
    "bias-full": ["efficient", "cudnn"],
    "alibi": ["efficient", "flash"],
    "softcap": ["flex"],
    "varlen": ["efficient", "flash"],
    "varlen-causal": ["efficient", "flash"],
}


def main():
    specs = json.load(open(sys.argv[1]))
    out_path = sys.argv[2]
    emit = Results(out_path).emit

    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    try:
        from triton.testing import do_bench

        timer = "triton.do_bench"
    except Exception as e:  # no triton: CUDA events, median, no L2 flush
        log(f"triton not importable ({short(e)}): timing with CUDA events, without L2 flush")
        timer = "cuda-events"

        def do_bench(fn, warmup=25, rep=100, return_mode="median"):
            for _ in range(5):
                fn()
            torch.cuda.synchronize()
            times = []
            t_end = time.time() + rep / 1000
            while len(times) < 10 or (time.time() < t_end and len(times) < 1000):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b))
            times.sort()
            return times[len(times) // 2]

    backends = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                "cudnn": SDPBackend.CUDNN_ATTENTION}
    dt = torch.bfloat16
    dev = "cuda"
    log(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, timer {timer}")

    def sdpa(name, q, k, v, **kw):
        be = backends[name]

        def f():
            with sdpa_kernel([be]):
                return F.scaled_dot_product_attention(q, k, v, **kw)
        return f

    flex_state = {}

    def flex_fn():
        """torch.compile(flex_attention), built once (raises if it does not import)."""
        if "fn" not in flex_state:
            from torch.nn.attention.flex_attention import flex_attention
            flex_state["fn"] = torch.compile(flex_attention, dynamic=False)
        return flex_state["fn"]

    softcap_mods = {}

    def softcap_mod(cap):
        # One function object per cap, so that recompiles are by shape only.
        if cap not in softcap_mods:
            def mod(score, b, h, q_idx, kv_idx):
                return cap * torch.tanh(score / cap)
            softcap_mods[cap] = mod
        return softcap_mods[cap]

    def build(sp):
        """The peers of row `sp`: name -> zero-argument callable (the tensors live in its closure)."""
        row, b, s, h, d = sp["row"], sp["batch"], sp["seqlen"], sp["heads"], sp["d"]
        if row.startswith("varlen"):
            lens = sp["seqlens"]
            total, mx, causal = sum(lens), max(lens), bool(sp["causal"])
            q, k, v = (torch.randn(total, h, d, device=dev, dtype=dt) for _ in range(3))
            cu = torch.tensor([0] + list(itertools.accumulate(lens)), device=dev, dtype=torch.int32)
            q4, k4, v4 = q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)
            mask_type = 2 if causal else 0  # CausalFromBottomRight / NoCustomMask
            return {
                "efficient": lambda: torch.ops.aten._efficient_attention_forward(
                    q4, k4, v4, None, cu, cu, mx, mx, 0.0, mask_type, False, scale=None),
                "flash": lambda: torch.ops.aten._flash_attention_forward(
                    q, k, v, cu, cu, mx, mx, 0.0, causal, False, scale=None),
            }
        qb, kb, vb = (torch.randn(b, s, h, d, device=dev, dtype=dt) for _ in range(3))
        q, k, v = (x.transpose(1, 2) for x in (qb, kb, vb))
        if row == "dropout":
            p = float(sp["dropout_p"])
            return {n: sdpa(n, q, k, v, dropout_p=p) for n in PEERS[row]}
        if row in ("bias-bcast", "bias-full"):
            bias = torch.randn(1 if row == "bias-bcast" else b, h, s, s, device=dev, dtype=dt)
            mask = bias.expand(b, h, s, s)
            return {n: sdpa(n, q, k, v, attn_mask=mask) for n in PEERS[row]}
        if row == "alibi":
            slopes = torch.tensor(sp["alibi_slopes"], device=dev, dtype=torch.float32)
            # Ours: logit -= slope * |i - j| with causal bottom-right (Sq = Sk: off = 0), i.e.
            # slope * (j - i) on and below the diagonal and masked above it.
            bias = torch.empty(1, h, s, s, device=dev, dtype=dt)
            i = torch.arange(s, device=dev)
            rel = (i[None, :] - i[:, None]).to(torch.float32)
            above = rel > 0
            for hh in range(h):
                bias[0, hh] = (slopes[hh] * rel).masked_fill_(above, float("-inf")).to(dt)
            del rel, above
            mask = bias.expand(b, h, s, s)
            return {
                "efficient": sdpa("efficient", q, k, v, attn_mask=mask),
                "flash": lambda: torch.ops.aten._flash_attention_forward(
                    qb, kb, vb, None, None, s, s, 0.0, True, False, scale=None,
                    alibi_slopes=slopes),
            }
        if row == "softcap":
            mod = softcap_mod(float(sp["softcap"]))
            qc, kc, vc = (x.contiguous() for x in (q, k, v))
            return {"flex": lambda: flex_fn()(qc, kc, vc, score_mod=mod)}
        raise ValueError(f"unknown row {row!r}")

    def cleanup():
        try:
            gc.collect()
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        except Exception as e:
            log(f"  cleanup: {short(e)}")

    for idx, sp in enumerate(specs):
        key = {"row": sp["row"], "seqlen": sp["seqlen"]}
        names = PEERS.get(sp["row"], [])
        log(f"peers [{idx + 1}/{len(specs)}] {sp['row']} S={sp['seqlen']}: {', '.join(names) or 'none'}")
        try:
            fns = build(sp)
        except Exception as e:
            for n in names:
                emit(dict(key, peer=n, error="setup: " + short(e)))
            cleanup()
            continue
        for n in names:
            r = dict(key, peer=n)
            t0 = time.time()
            try:
                fn = fns[n]
                fn()  # support check (and flex's compile), untimed
                torch.cuda.synchronize()
                ms = do_bench(fn, warmup=25, rep=100, return_mode="median")
                if not ms > 0:
                    raise RuntimeError(f"timer returned {ms}")
                r.update(ms=ms, tflops=sp["flops"] / ms / 1e9, timer=timer)
                log(f"  {n}: {ms:.3f} ms, {r['tflops']:.1f} TFLOP/s ({time.time() - t0:.1f} s)")
            except Exception as e:
                r.update(error=short(e))
                log(f"  {n}: {r['error'][:200]}")
                cleanup()
            emit(r)
        del fns
        cleanup()


if __name__ == "__main__":
    main()
