"""Multi-head attention from scratch, in plain torch autograd: the oracle for `ops.MultiheadAttention`.

It computes what `torch.nn.MultiheadAttention(batch_first=True)` computes with need_weights=False,
one readable step at a time (E = embed_dim, H = num_heads, D = E / H the head dim, B the batch,
L the query length, S the key length):

    q = x_q W_qᵀ + b_q     k = x_k W_kᵀ + b_k     v = x_v W_vᵀ + b_v          (B, L, E), (B, S, E), (B, S, E)
    split heads            (B, L, E) -> (B, L, H, D) -> (B, H, L, D)          (and the same for k, v)
    O_h = softmax(q_h k_hᵀ / √D + M) v_h                                      (B, H, L, D), one per head
    merge heads            (B, H, L, D) -> (B, L, H, D) -> (B, L, E)
    y = merged W_oᵀ + b_o                                                     (B, L, E)

The inner attention is `scaled_dot_product_attention` of ops/reference/attention.py, the same
oracle the fused kernels are tested against; this file adds only the projections, the head split
and merge, and torch's mask conventions. Autograd derives the backward; multihead_attention_numpy.py
derives it by hand, and docs/transformer.md explains every step.

Conventions, those of `torch.nn.functional.multi_head_attention_forward`:
  * Layout: batch first, (B, L, E), as models/transformer.py uses it. `module_forward` transposes a
    module built with batch_first=False. Batched (3-D) inputs only.
  * Weights: torch's packed `in_proj_weight` (3E, E) and `in_proj_bias` (3E,) hold W_q, W_k, W_v
    stacked in that order; a module built with kdim or vdim != E stores `q_proj_weight`,
    `k_proj_weight` and `v_proj_weight` instead (pass `in_proj_weight=None` and those).
  * Masks: a boolean True means "may NOT attend" (the opposite of SDPA's boolean). Each mask is
    turned into its additive form (0 where allowed, -inf where hidden) and the masks are added:
    attn_mask (L, S), or (B * H, L, S) with one mask per (batch, head), and key_padding_mask (B, S),
    the same for every query and head. A float mask is added as it is.
  * is_causal is a hint that attn_mask is the causal mask (torch refuses it without attn_mask):
    query i then sees key j iff j <= i, built here instead of reading attn_mask.
  * A query that sees no key outputs 0 (the bias b_o after the output projection) and passes no
    gradient, as torch's need_weights=False path does.
  * No dropout: dropout_p > 0 raises NotImplementedError.
"""
from __future__ import annotations

import torch

from tritonprop.ops.reference.attention import scaled_dot_product_attention

__all__ = ["multi_head_attention", "module_forward", "split_heads", "merge_heads", "additive_mask"]


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, L, E) -> (B, H, L, D): the E features of each position are H heads of D features each."""
    B, L, E = x.shape
    return x.reshape(B, L, num_heads, E // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, L, D) -> (B, L, E): the inverse of split_heads, the heads side by side again."""
    B, H, L, D = x.shape
    return x.transpose(1, 2).reshape(B, L, H * D)


def additive_mask(mask: torch.Tensor, dtype) -> torch.Tensor:
    """torch's MHA mask as a number to add to the scores: bool True (hidden) -> -inf, False -> 0."""
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))


def _merged_mask(attn_mask, key_padding_mask, batch, num_heads, tgt_len, src_len, dtype):
    """One additive mask broadcastable to (B, H, L, S), the sum of the masks given (None if none)."""
    total = None
    if attn_mask is not None:
        total = additive_mask(attn_mask, dtype)
        if total.dim() == 3:    # (B * H, L, S): one mask per (batch, head), batch-major as torch stores it
            total = total.view(batch, num_heads, tgt_len, src_len)
    if key_padding_mask is not None:
        padding = additive_mask(key_padding_mask, dtype).view(batch, 1, 1, src_len)
        total = padding if total is None else total + padding
    return total


def multi_head_attention(query, key, value, num_heads, in_proj_weight, in_proj_bias, out_proj_weight,
                         out_proj_bias, *, q_proj_weight=None, k_proj_weight=None, v_proj_weight=None,
                         key_padding_mask=None, attn_mask=None, is_causal=False, dropout_p=0.0):
    """y (B, L, E) for query (B, L, E), key (B, S, kdim), value (B, S, vdim); see the module docstring."""
    if dropout_p > 0:
        raise NotImplementedError("reference multi_head_attention: dropout_p > 0 is not implemented")
    if is_causal and attn_mask is None:
        raise RuntimeError("reference multi_head_attention: is_causal is a hint that attn_mask is causal; "
                           "it needs attn_mask, as torch does")
    if in_proj_weight is not None:
        w_q, w_k, w_v = in_proj_weight.chunk(3)
    else:
        w_q, w_k, w_v = q_proj_weight, k_proj_weight, v_proj_weight
    b_q, b_k, b_v = in_proj_bias.chunk(3) if in_proj_bias is not None else (0.0, 0.0, 0.0)

    # 1. The input projections. In self-attention query, key and value are the same x, so x is used
    #    three times and autograd sums its three gradients.
    q = query @ w_q.T + b_q
    k = key @ w_k.T + b_k
    v = value @ w_v.T + b_v

    # 2. Split each projection into heads. Each head attends with its own D = E / H features, and the
    #    default scale is 1 / sqrt(D), D the head dim, not E.
    q, k, v = (split_heads(t, num_heads) for t in (q, k, v))

    # 3. One scaled dot-product attention per (batch, head), all at once.
    batch, tgt_len, src_len = query.shape[0], query.shape[1], key.shape[1]
    mask = _merged_mask(None if is_causal else attn_mask, key_padding_mask, batch, num_heads, tgt_len, src_len,
                        q.dtype)
    heads = scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)

    # 4. Merge the heads back side by side, then the output projection mixes them.
    merged = merge_heads(heads)
    out = merged @ out_proj_weight.T
    return out if out_proj_bias is None else out + out_proj_bias


def module_forward(module: torch.nn.MultiheadAttention, query, key, value, *, key_padding_mask=None,
                   attn_mask=None, is_causal=False):
    """`module(query, key, value, need_weights=False, ...)[0]` recomputed by `multi_head_attention`
    from the module's own parameters (a torch or a tritonprop MultiheadAttention, either layout)."""
    if module.bias_k is not None or module.add_zero_attn:
        raise NotImplementedError("reference multi_head_attention: add_bias_kv and add_zero_attn are not implemented")
    if not module.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    out = multi_head_attention(
        query, key, value, module.num_heads, module.in_proj_weight, module.in_proj_bias, module.out_proj.weight,
        module.out_proj.bias, q_proj_weight=module.q_proj_weight, k_proj_weight=module.k_proj_weight,
        v_proj_weight=module.v_proj_weight, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
        is_causal=is_causal, dropout_p=module.dropout if module.training else 0.0)
    return out if module.batch_first else out.transpose(0, 1)
