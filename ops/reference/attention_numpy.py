"""Attention in numpy, with the backward derived by hand (docs/attention.md walks through it).

For one (batch, head) — leading dims broadcast through numpy's matmul — with q (Sq, D),
k (Sk, D), v (Sk, Dv) and an additive mask M (0, or -inf where a key is hidden):

    S = q k^T * scale + M        P_ij = exp(S_ij) / sum_l exp(S_il)        O = P v

Backward, from dO = dL/dO (docs/attention.md's notation; G there is the GQA group size):

    dV = P^T dO                   (O is linear in P with coefficients v)
    dP = dO v^T
    dS_ij = P_ij (dP_ij - delta_i),   delta_i = sum_j P_ij dP_ij = sum_d dO_id O_id
                                  (the softmax Jacobian dP_ij/dS_il = P_ij (1[j = l] - P_il))
    dQ = dS k * scale,  dK = dS^T q * scale
    dM = dS                       (M enters S with coefficient 1)

delta_i has two forms; the kernels use sum_d dO_id O_id, a length-Dv dot product per row, because
it needs O (stored) rather than P (never stored). A row that sees no key has P = 0 and O = 0.
"""
from __future__ import annotations

import numpy as np


def attention_forward(q, k, v, mask=None, scale=None):
    """O for arrays (..., Sq, D), (..., Sk, D), (..., Sk, Dv) and an additive (or boolean, True =
    visible) mask broadcastable to (..., Sq, Sk). Returns ``(O, cache)``, the cache for the backward."""
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    if mask is not None:
        s = np.where(mask, s, -np.inf) if mask.dtype == np.bool_ else s + mask
    row_max = s.max(axis=-1, keepdims=True)
    # A row of -inf sees no key: shift it by 0 so that its exponentials are 0, not nan.
    shifted = np.exp(s - np.where(np.isneginf(row_max), 0.0, row_max))
    total = shifted.sum(axis=-1, keepdims=True)
    p = shifted / np.where(total == 0.0, 1.0, total)
    o = p @ v
    return o, (q, k, v, p, o, scale)


def attention_backward(do, cache):
    """Returns ``(dq, dk, dv, dmask)``, with dmask = dS at full (..., Sq, Sk) size (sum it over the
    mask's broadcast dims)."""
    q, k, v, p, o, scale = cache
    dv = np.swapaxes(p, -1, -2) @ do
    dp = do @ np.swapaxes(v, -1, -2)
    delta = (do * o).sum(axis=-1, keepdims=True)
    ds = p * (dp - delta)
    dq = ds @ k * scale
    dk = np.swapaxes(ds, -1, -2) @ q * scale
    return dq, dk, dv, ds
