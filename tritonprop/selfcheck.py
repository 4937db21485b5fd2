"""A quick kernel self-check: every op, forward and backward, against torch's own op on small inputs.

It is what `tritonprop selfcheck` runs; the test suite (tests/) is the real proof.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tritonprop import ops


def _batch_norm_case(device):
    x = torch.randn(4, 3, 6, 5, device=device).to(memory_format=torch.channels_last) * 2 + 1
    weight = torch.rand(3, device=device) + 0.5
    bias = torch.randn(3, device=device)
    upstream = torch.randn(x.shape, device=device)
    results = []
    for fn in (ops.batch_norm, F.batch_norm):
        leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
        running = [torch.zeros(3, device=device), torch.ones(3, device=device)]
        y = fn(leaves[0], *running, leaves[1], leaves[2], training=True)
        grads = torch.autograd.grad(y, leaves, upstream)
        results.append([y, *grads, *running])
    names = ["output", "dx", "dweight", "dbias", "running_mean", "running_var"]
    return [(name, ours, theirs) for name, ours, theirs in zip(names, *results)]


def _conv2d_case(device):
    x = torch.randn(2, 3, 9, 8, device=device).to(memory_format=torch.channels_last)
    weight = torch.randn(4, 3, 3, 3, device=device) * 0.3
    bias = torch.randn(4, device=device)
    upstream = torch.randn(2, 4, 5, 4, device=device)
    results = []
    for fn in (ops.conv2d, F.conv2d):
        leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
        y = fn(leaves[0], leaves[1], leaves[2], stride=2, padding=1)
        results.append([y, *torch.autograd.grad(y, leaves, upstream)])
    names = ["output", "dx", "dweight", "dbias"]
    return [(name, ours, theirs) for name, ours, theirs in zip(names, *results)]


CASES = {"batch_norm": _batch_norm_case, "conv2d": _conv2d_case}


def run(device=None, atol=1e-4, rtol=1e-4) -> bool:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    # Full-precision fp32 on both sides: TF32 would need a looser bound than this check uses.
    torch.backends.cudnn.allow_tf32 = False
    all_ok = True
    for op, case in CASES.items():
        worst = 0.0
        ok = True
        for name, ours, theirs in case(device):
            err = (ours.double() - theirs.double()).abs().max().item()
            worst = max(worst, err)
            if not torch.allclose(ours, theirs, atol=atol, rtol=rtol):
                ok = False
                print(f"  {op}: {name} differs from torch by up to {err:.3e}")
        print(f"{op:<12} forward+backward vs torch on {device}: {'ok' if ok else 'FAILED'} (max abs diff {worst:.2e})")
        all_ok &= ok
    return all_ok
