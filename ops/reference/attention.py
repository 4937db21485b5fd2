"""Attention from scratch, in plain torch autograd: the oracle for kernels/attention.py.

    S = q k^T * scale (+ mask),   P = softmax(S) over keys,   O = dropout(P) v

Written the way attention was first built: form the whole (Sq, Sk) score matrix, scale it, hide
what the masks hide, softmax, multiply by v. Autograd derives the backward; attention_numpy.py
derives it by hand. It stores P, which the kernels never do (docs/attention.md).

Conventions shared with the kernels, so that both compute the same function:
  * is_causal is top-left aligned, as torch's: key j is visible to query i iff j <= i;
  * a boolean attn_mask is True where attention is allowed (SDPA's convention);
  * a row that sees no key at all outputs 0 and passes no gradient (torch's math backend);
  * the dropout mask is the kernels' own (`keep_mask`), drawn from a seed taken from torch's
    generator (`draw_seed`), so a seeded run drops the same elements on both backends;
  * float16/bfloat16 inputs are computed in float32 and the output rounded once.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from tritonprop.ops.reference.dropout import draw_seed, philox4x32, to_uniform

__all__ = ["scaled_dot_product_attention", "attention_probabilities", "keep_mask", "draw_seed"]


def keep_mask(seed: torch.Tensor, shape, p: float, device) -> torch.Tensor:
    """The dropout keep mask of kernels/attention.py over an attention matrix of `shape` (B, H, Sq, Sk).

    Element (b, h, i, j) takes Philox4x32-10's first word at counter ((b * H + h) * Sq + i) * Sk + j,
    the counter `tl.rand(seed, offset)` uses, and is kept when its uniform is >= p.
    """
    counters = np.arange(math.prod(shape), dtype=np.uint64)
    uniforms = to_uniform(philox4x32(int(seed.item()), counters)[0])
    return torch.from_numpy(uniforms >= np.float32(p)).reshape(tuple(shape)).to(device)


def _expand_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    # GQA: query head h reads key/value head h // (heads / t's heads).
    return t.repeat_interleave(heads // t.shape[-3], dim=-3) if t.dim() >= 3 and t.shape[-3] != heads else t


def attention_probabilities(query, key, attn_mask=None, is_causal=False, scale=None, enable_gqa=False, *,
                            zero_hidden_rows=True):
    """P = softmax(q k^T * scale + mask), with rows that see no key set to 0.

    SDPA gives such rows 0 (torch's fused kernels do). torch's MultiheadAttention forms its
    explicit weights with a plain softmax, NaN there in value and gradient; it passes
    ``zero_hidden_rows=False`` to get the same.
    """
    Sq, Sk = query.shape[-2], key.shape[-2]
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if enable_gqa:
        key = _expand_heads(key, query.shape[-3])
    scores = query @ key.transpose(-2, -1) * scale
    visible = torch.ones(Sq, Sk, dtype=torch.bool, device=query.device)
    if is_causal:
        visible = visible.tril()
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        visible = visible & attn_mask
    elif attn_mask is not None:
        scores = scores + attn_mask.to(scores.dtype)
    if not zero_hidden_rows:
        # Added, not filled in, as torch adds its mask: the gradient of a row that sees no key is
        # NaN too, not cut off at the mask.
        hide = torch.zeros(visible.shape, dtype=scores.dtype, device=scores.device).masked_fill(~visible, float("-inf"))
        return torch.softmax(scores + hide, dim=-1)
    scores = scores.masked_fill(~visible, float("-inf"))
    # softmax of a row of -inf is nan; such a row attends to nothing, so it is 0.
    hidden = torch.isneginf(scores).all(dim=-1, keepdim=True)
    return torch.softmax(scores.masked_fill(hidden, 0.0), dim=-1).masked_fill(hidden, 0.0)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False, *, seed=None):
    """F.scaled_dot_product_attention from scratch; `seed` (keyword-only) fixes the dropout mask."""
    dtype = query.dtype
    low = dtype in (torch.float16, torch.bfloat16)
    if low:
        query, key, value = query.float(), key.float(), value.float()
        if attn_mask is not None and attn_mask.is_floating_point():
            attn_mask = attn_mask.float()
    probs = attention_probabilities(query, key, attn_mask, is_causal, scale, enable_gqa)
    if dropout_p > 0:
        seed = draw_seed(query.device) if seed is None else seed
        keep = keep_mask(seed, probs.shape, dropout_p, query.device)
        probs = probs * keep / (1.0 - dropout_p) if dropout_p < 1 else probs * 0.0
    if enable_gqa:
        value = _expand_heads(value, query.shape[-3])
    out = probs @ value
    return out.to(dtype) if low else out
