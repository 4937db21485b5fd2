"""log_softmax and cross-entropy in numpy, with the backward derived by hand (docs/cross_entropy.md).

log_softmax, along the last axis. With lse = log sum_k exp(x_k) and p = softmax(x) = exp(x - lse):

    y_c = x_c - lse,   d lse / d x_k = p_k,   so   d y_c / d x_k = [c = k] - p_k

and for an upstream gradient dy:

    dx_k = sum_c dy_c ([c = k] - p_k) = dy_k - p_k * sum_c dy_c

Cross-entropy of (N, C) logits x against class indices t, with class weights w (all 1 when
absent), label smoothing eps, and m_i = 1 for rows that count (t_i != ignore_index), else 0.
The smoothed one-hot target of row i is q_ik = (1 - eps) [k = t_i] + eps / C, and

    loss_i = m_i * sum_k w_k q_ik (lse_i - x_ik)
           = m_i * ((1 - eps) w_t (lse_i - x_it) + (eps / C) sum_k w_k (lse_i - x_ik))

which is torch's formula: (1 - eps) * nll_loss(log_softmax) + eps * (the weighted mean of
-log_softmax over the classes). Differentiating, with d lse_i / d x_ic = p_ic:

    d loss_i / d x_ic = m_i * sum_k w_k q_ik (p_ic - [k = c])
                      = m_i * (a_i p_ic - w_c q_ic),     a_i = sum_k w_k q_ik = (1 - eps) w_t + (eps / C) sum_k w_k

the softmax, scaled by the total weight of the row's target distribution, minus the weighted
smoothed one-hot. With no weights and no smoothing it is the familiar p - onehot(t). Ignored
rows get 0.

Reductions: 'none' returns loss_i (and dx_i = g_i * d loss_i / d x_i); 'sum' returns sum_i loss_i;
'mean' divides that by W = sum_i m_i w_{t_i}, the summed weights of the rows that count (also
for the smoothing part, as torch does). W does not depend on x, so 'mean' only scales dx by g / W.
"""
from __future__ import annotations

import numpy as np


def _logsumexp(x):
    m = x.max(axis=-1, keepdims=True)
    return m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def log_softmax_forward(x):
    """log_softmax along the last axis. Returns ``(y, cache)``."""
    y = x - _logsumexp(x)
    return y, y


def log_softmax_backward(dy, cache):
    """dx = dy - softmax * sum(dy), softmax = exp(y)."""
    y = cache
    return dy - np.exp(y) * dy.sum(axis=-1, keepdims=True)


def cross_entropy_forward(x, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Cross-entropy of (N, C) logits. Returns ``(loss, cache)``; loss per row for 'none', else a scalar."""
    n, classes = x.shape
    w = np.ones(classes, dtype=x.dtype) if weight is None else weight
    counts = target != ignore_index
    safe_target = np.where(counts, target, 0)
    lse = _logsumexp(x)
    p = np.exp(x - lse)
    q = np.full((n, classes), label_smoothing / classes, dtype=x.dtype)
    q[np.arange(n), safe_target] += 1.0 - label_smoothing
    weighted_q = w[None, :] * q * counts[:, None]  # w_k q_ik, zero on ignored rows
    losses = (weighted_q * (lse - x)).sum(axis=1)
    total_weight = (w[safe_target] * counts).sum()
    if reduction == "none":
        loss = losses
    elif reduction == "sum":
        loss = losses.sum()
    else:
        loss = losses.sum() / total_weight
    return loss, (p, weighted_q, reduction, total_weight)


def cross_entropy_backward(dloss, cache):
    """dx = g * (a * p - w q), per row, with g the upstream gradient of that row's loss."""
    p, weighted_q, reduction, total_weight = cache
    if reduction == "none":
        g = dloss[:, None]
    elif reduction == "sum":
        g = dloss
    else:
        g = dloss / total_weight
    a = weighted_q.sum(axis=1, keepdims=True)
    return g * (a * p - weighted_q)
