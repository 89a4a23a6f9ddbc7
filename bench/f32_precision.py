"""The f32 peer's accuracy for tests/tests/precision.rs: PyTorch's memory-efficient SDPA in f32
against the f64 truth (SDPA's math backend in float64 on the same inputs), in the same regimes and
with the same input distribution (uniform in [-1, 1)) as our test. Prints one line per case.

usage: python3 bench/f32_precision.py"""
import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend

torch.manual_seed(0)
for d, sk, scale in [(64, 2048, None), (128, 4096, None), (240, 3000, None), (96, 4096, None),
                     (64, 2048, 40.0), (128, 4096, 25.0), (240, 2500, 20.0)]:
    errs = []
    for rep in range(5):
        q = torch.rand(1, 2, 77, d, device="cuda", dtype=torch.float32) * 2 - 1
        k = torch.rand(1, 2, sk, d, device="cuda", dtype=torch.float32) * 2 - 1
        v = torch.rand(1, 2, sk, d, device="cuda", dtype=torch.float32) * 2 - 1
        k = k.repeat_interleave(1, dim=1)
        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
            o = F.scaled_dot_product_attention(q, k, v, scale=scale)
        with sdpa_kernel([SDPBackend.MATH]):
            t = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), scale=scale)
        errs.append((o.double() - t).abs().max().item())
    print(f"torch efficient f32 D={d} Sk={sk} scale={scale}: max abs err over 5 draws "
          f"median {sorted(errs)[2]:.3e} max {max(errs):.3e}")
