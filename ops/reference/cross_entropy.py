"""log_softmax, nll_loss and cross_entropy by their formulas, in plain torch autograd: the oracles.

For logits x of one row, C classes, target class t, class weights w (all 1 without a weight):

    log_softmax(x)_c = x_c - log sum_k exp(x_k)
    nll_loss         = -w_t * logp_t                                    (logp = log_softmax(x))
    cross_entropy    = (1 - eps) * w_t * (-logp_t) + (eps / C) * sum_c w_c * (-logp_c)

with eps = label_smoothing. Rows whose target is ignore_index contribute 0. 'mean' divides the
sum over rows by the summed w_t of the rows that count (with label smoothing too, as torch does);
'sum' does not divide. Low-precision inputs are computed in float32 and cast back.

A floating-point target shaped like the input holds class probabilities t (no ignore_index):

    cross_entropy    = -sum_c w_c * t'_c * logp_c,       t' = (1 - eps) * t + eps / C

and 'mean' divides by the number of rows (N times the spatial size), whatever the weights.
"""
from __future__ import annotations

import torch
from torch.nn import _reduction


def _compute_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    if dtype is not None:
        input = input.to(dtype)
    x = input.to(_compute_dtype(input.dtype))
    if dim is None:
        dim = 0 if x.dim() in (0, 1, 3) else 1  # torch's legacy implicit choice
    if x.dim() == 0 or x.shape[dim] == 0:
        return (x - x).to(input.dtype)  # a single class has log-probability 0; no classes, no values
    # Shifting by the row max keeps exp() from overflowing; the result does not depend on the shift,
    # so the max is a constant for autograd.
    shifted = x - x.amax(dim=dim, keepdim=True).detach()
    return (shifted - shifted.exp().sum(dim=dim, keepdim=True).log()).to(input.dtype)


def _per_row(logp, target, weight, ignore_index):
    """The rows that count, each row's w_t, its log-probability of the target, and the (1, C, 1...) weights."""
    classes = logp.shape[1]
    class_shape = (1, classes) + (1,) * (logp.dim() - 2)
    counts = target != ignore_index
    classes_here = torch.arange(classes, device=logp.device).reshape(class_shape)
    one_hot = (classes_here == target.unsqueeze(1)) & counts.unsqueeze(1)
    w = torch.ones(classes, device=logp.device, dtype=logp.dtype) if weight is None else weight.to(logp.dtype)
    w = w.reshape(class_shape)
    # where, not a product with the one-hot: a -inf log-probability off the target must not give nan.
    logp_target = torch.where(one_hot, logp, 0.0).sum(dim=1)
    w_target = torch.where(one_hot, w, 0.0).sum(dim=1)
    return counts, w_target, logp_target, w


def _reduce(losses, w_target, reduction):
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / w_target.sum()


def _batched(input, target):
    if input.dim() == 1:
        return input.unsqueeze(0), target.reshape(1), True
    return input, target, False


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
    if size_average is not None or reduce is not None:
        reduction = _reduction.legacy_get_string(size_average, reduce)
    x, target, unbatched = _batched(input, target)
    logp = x.to(_compute_dtype(x.dtype))
    counts, w_target, logp_target, _ = _per_row(logp, target, weight, ignore_index)
    losses = torch.where(counts, -w_target * logp_target, 0.0)
    loss = _reduce(losses, w_target, reduction).to(input.dtype)
    return loss.reshape(()) if unbatched else loss


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                  label_smoothing=0.0):
    if size_average is not None or reduce is not None:
        reduction = _reduction.legacy_get_string(size_average, reduce)
    if target.shape == input.shape:
        return _cross_entropy_probabilities(input, target, weight, reduction, label_smoothing)
    x, target, unbatched = _batched(input, target)
    logp = log_softmax(x.to(_compute_dtype(x.dtype)), 1)
    counts, w_target, logp_target, w = _per_row(logp, target, weight, ignore_index)
    losses = -w_target * logp_target
    if label_smoothing > 0.0:
        classes = x.shape[1]
        smooth = -(w * logp).sum(dim=1)
        losses = (1.0 - label_smoothing) * losses + (label_smoothing / classes) * smooth
    losses = torch.where(counts, losses, 0.0)
    loss = _reduce(losses, w_target, reduction).to(input.dtype)
    return loss.reshape(()) if unbatched else loss


def _cross_entropy_probabilities(input, target, weight, reduction, label_smoothing):
    unbatched = input.dim() == 1
    x, t = (input.unsqueeze(0), target.unsqueeze(0)) if unbatched else (input, target)
    compute = _compute_dtype(x.dtype)
    logp = log_softmax(x.to(compute), 1)
    classes = x.shape[1]
    t = t.to(compute)
    if label_smoothing > 0.0:
        t = t * (1.0 - label_smoothing) + label_smoothing / classes
    w = 1.0 if weight is None else weight.to(compute).reshape((1, classes) + (1,) * (x.dim() - 2))
    losses = -(w * t * logp).sum(dim=1)
    if reduction == "none":
        loss = losses
    elif reduction == "sum":
        loss = losses.sum()
    else:
        # torch's denominator is numel / C: with no element at all (C = 0 included) the mean is nan.
        loss = losses.sum() / (losses.numel() if x.numel() else 0)
    loss = loss.to(input.dtype)
    return loss.reshape(()) if unbatched and reduction == "none" else loss
