"""The comparison tolerance of each dtype: what "agrees" means in the tests and in the lessons.

Chosen per dtype once, from the precision of the dtype itself (about two ulps for fp16/bf16);
never widened to make a test pass.
"""
from __future__ import annotations

import torch

TOLERANCES = {
    torch.float64: dict(atol=1e-9, rtol=1e-7),
    torch.float32: dict(atol=2e-5, rtol=2e-5),
    torch.float16: dict(atol=1e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=1e-2, rtol=1.6e-2),
}
