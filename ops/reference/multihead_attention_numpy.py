"""Multi-head attention in numpy (float64), with the backward derived by hand.

The forward is that of multihead_attention.py (batch first, torch's mask conventions, no dropout).
With E = embed_dim, H heads of D = E / H features, batch B, L queries and S keys:

    q = x_q W_qᵀ + b_q,   k = x_k W_kᵀ + b_k,   v = x_v W_vᵀ + b_v       (B, L, E), (B, S, E), (B, S, E)
    q_h = split(q)        (B, L, E) -> (B, L, H, D) -> (B, H, L, D)      (k_h, v_h alike)
    S_h = q_h k_hᵀ / √D + M        P_h = softmax(S_h) over the keys        O_h = P_h v_h
    c = merge(O_h)        (B, H, L, D) -> (B, L, H, D) -> (B, L, E)
    y = c W_oᵀ + b_o

M is the additive mask: 0 where a query may attend, -inf where attn_mask, key_padding_mask or the
causal mask hides the key (`mha_mask`).

Backward, from dy = dL/dy (B, L, E), one step at a time in reverse; every adjoint has the shape of
its variable:

1. Output projection, a linear layer (linear_numpy.py derives it):
       dc = dy W_o,   dW_o = Σ_rows dyᵀ c,   db_o = Σ_rows dy            (rows: all B·L positions)
2. Merge. c only moves each element of O_h to a new place (a transpose and a reshape), so its
   adjoint moves each element back: dO_h = split(dc).
3. Attention, per (batch, head) (attention_numpy.py derives it; with dO = dO_h):
       dV_h = P_hᵀ dO                 dP = dO v_hᵀ
       dS = P ∘ (dP − rowsum(dP ∘ P))   the softmax Jacobian-vector product: ∂P_ij/∂S_il =
                                        P_ij (1[j = l] − P_il), so dS_il = P_il (dP_il − Σ_j P_ij dP_ij);
                                        the row sum equals Σ_d dO_id O_id, which needs no P
       dq_h = dS k_h / √D,   dk_h = dSᵀ q_h / √D      (S is bilinear in q_h and k_h; the scale
                                                      multiplies both adjoints)
   M is a constant here, so a hidden key (P = 0) passes no gradient, and a row that sees no key
   (all of its P = 0, O = 0) passes none at all.
4. Head split. Again only a permutation of elements: dq = merge(dq_h), dk = merge(dk_h), dv = merge(dv_h).
5. Input projections, three linear layers:
       dx_q = dq W_q,   dW_q = Σ_rows dqᵀ x_q,   db_q = Σ_rows dq          (and k, v alike)
6. Shared inputs. In self-attention x_q = x_k = x_v = x: x reaches y along three paths, and the
   chain rule adds the contributions of the paths (docs/backprop.md, "the sum over uses"):
       dx = dq W_q + dk W_k + dv W_v
   In cross-attention the decoder passes the same memory as key and value: d(memory) = dk W_k + dv W_v.

`mha_forward` returns ``(y, cache)``; `mha_backward(dy, cache)` returns ``(dinputs, dparams)``.
dinputs is ``(dquery, dkey, dvalue)``; when the forward received the same array object twice
(``key is query``, ``value is key``), the sum of step 6 is in the first slot that names it and the
repeated slots are None, so that no contribution is counted twice.
"""
from __future__ import annotations

import numpy as np

from tritonprop.ops.reference.attention_numpy import attention_backward, attention_forward
from tritonprop.ops.reference.linear_numpy import linear_backward, linear_forward

PARAMS = ("w_q", "w_k", "w_v", "b_q", "b_k", "b_v", "w_o", "b_o")


def split_heads(x, num_heads):
    """(B, L, E) -> (B, H, L, D)."""
    B, L, E = x.shape
    return x.reshape(B, L, num_heads, E // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x):
    """(B, H, L, D) -> (B, L, E), the inverse of split_heads (and its adjoint)."""
    B, H, L, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, L, H * D)


def mha_mask(batch, num_heads, tgt_len, src_len, attn_mask=None, key_padding_mask=None, is_causal=False):
    """The additive mask M, broadcastable to (B, H, L, S), from torch's MHA masks (boolean True =
    may not attend; a float mask is added as it is). None when nothing is masked."""
    def additive(mask):
        return np.where(mask, -np.inf, 0.0) if mask.dtype == np.bool_ else mask.astype(np.float64)

    total = np.zeros((1, 1, tgt_len, src_len))
    if is_causal:
        # Query i sees key j iff j <= i; torch takes is_causal as a hint in place of attn_mask.
        total = total + additive(np.triu(np.ones((tgt_len, src_len), dtype=bool), k=1))
    elif attn_mask is not None:
        mask = additive(attn_mask)
        total = total + (mask.reshape(batch, num_heads, tgt_len, src_len) if mask.ndim == 3 else mask)
    if key_padding_mask is not None:
        total = total + additive(key_padding_mask).reshape(batch, 1, 1, src_len)
    return None if attn_mask is None and key_padding_mask is None and not is_causal else total


def mha_forward(query, key, value, params, num_heads, mask=None):
    """y (B, L, E) for query (B, L, E), key (B, S, kdim), value (B, S, vdim), `params` a dict of the
    arrays named in PARAMS (W_q (E, E), W_k (E, kdim), W_v (E, vdim), biases (E,), W_o (E, E), b_o
    (E,); a bias may be None) and M from `mha_mask`. Returns ``(y, cache)``."""
    q, cache_q = linear_forward(query, params["w_q"], params["b_q"])
    k, cache_k = linear_forward(key, params["w_k"], params["b_k"])
    v, cache_v = linear_forward(value, params["w_v"], params["b_v"])
    heads, cache_attention = attention_forward(split_heads(q, num_heads), split_heads(k, num_heads),
                                               split_heads(v, num_heads), mask)
    y, cache_o = linear_forward(merge_heads(heads), params["w_o"], params["b_o"])
    shared = (key is query, value is key, value is query)
    return y, (cache_q, cache_k, cache_v, cache_attention, cache_o, num_heads, shared)


def mha_backward(dy, cache):
    """``((dquery, dkey, dvalue), dparams)``: the steps of the module docstring, in reverse order."""
    cache_q, cache_k, cache_v, cache_attention, cache_o, num_heads, shared = cache
    # 1. The output projection.
    dmerged, dw_o, db_o = linear_backward(dy, cache_o)
    # 2. The merge's adjoint is the split.
    dheads = split_heads(dmerged, num_heads)
    # 3. Attention, every (batch, head) at once.
    dq_h, dk_h, dv_h, _ = attention_backward(dheads, cache_attention)
    # 4. The split's adjoint is the merge.
    dq, dk, dv = merge_heads(dq_h), merge_heads(dk_h), merge_heads(dv_h)
    # 5. The input projections.
    dquery, dw_q, db_q = linear_backward(dq, cache_q)
    dkey, dw_k, db_k = linear_backward(dk, cache_k)
    dvalue, dw_v, db_v = linear_backward(dv, cache_v)
    # 6. An array passed in more than once gets the sum of its paths' gradients.
    key_is_query, value_is_key, value_is_query = shared
    if value_is_key:
        dkey, dvalue = dkey + dvalue, None
    elif value_is_query:
        dquery, dvalue = dquery + dvalue, None
    if key_is_query:
        dquery, dkey = dquery + dkey, None
    dparams = dict(zip(PARAMS, (dw_q, dw_k, dw_v, db_q, db_k, db_v, dw_o, db_o)))
    return (dquery, dkey, dvalue), dparams
