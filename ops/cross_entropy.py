"""Softmax cross-entropy, log-softmax and NLL loss: autograd.Functions, torch-signature functionals, modules.

`cross_entropy` is one fused kernel (log-softmax and NLL in a single pass over the logits); it
saves the logits and one fp32 log-sum-exp per row, never the probabilities. `log_softmax` and
`nll_loss` are also exposed on their own, each with its Triton forward and backward.

Targets are class indices, or class probabilities (a floating-point target shaped like the
input, as torch reads it), each with its own pair of kernels.

Double backward: every backward here is itself differentiable. Without a graph of the gradient
(the usual case) it is the fast kernel; under ``create_graph=True`` it is rebuilt from these
same differentiable Functions (log_softmax recomputed from the saved input, since the saved
log-sum-exp is a constant to autograd) plus torch elementwise ops and reductions.
"""
from __future__ import annotations

import numbers
import warnings

import torch
from torch.nn import _reduction

from tritonprop import backend
from tritonprop.kernels import cross_entropy as K
from tritonprop.ops import _checks
from tritonprop.ops._autocast import cast_to_float32, cast_to_float32_on_cuda
from tritonprop.ops.reference import cross_entropy as reference


def _log_softmax_vjp(logp, dlogp, dim):
    """dL/dx of log_softmax from its output logp: dlogp - softmax * sum(dlogp), differentiable in both."""
    return dlogp - logp.exp() * dlogp.sum(dim, keepdim=True)


def _class_view(t, ndim):
    """A (C,) tensor shaped (1, C, 1, ...) to broadcast against (N, C, *spatial)."""
    return t.reshape((1, -1) + (1,) * (ndim - 2))


def _per_row_gradient(grad, per_row_shape, reduction, denominator):
    """dL/d(loss of each row) as a (N, *spatial) tensor: 'sum' and 'mean' spread the scalar, 'mean' divided."""
    if reduction == "none":
        return grad
    grad = grad.expand(per_row_shape)
    return grad / denominator if reduction == "mean" else grad


class LogSoftmaxFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim):
        y, lse = K.log_softmax_forward(x, dim)
        ctx.save_for_backward(x, lse)
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx, dy):
        x, lse = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None
        if torch.is_grad_enabled():
            return _log_softmax_vjp(LogSoftmaxFn.apply(x, ctx.dim), dy, ctx.dim), None
        return K.log_softmax_backward(dy, x, lse, ctx.dim), None


class CrossEntropyFn(torch.autograd.Function):
    """Class-index targets."""

    @staticmethod
    def forward(ctx, logits, target, weight, reduction, ignore_index, label_smoothing):
        loss, lse, total_weight = K.cross_entropy_forward(logits, target, weight, reduction, ignore_index,
                                                          label_smoothing)
        ctx.save_for_backward(logits, target, weight, lse, total_weight)
        ctx.options = (reduction, ignore_index, label_smoothing)
        return loss

    @staticmethod
    def backward(ctx, grad):
        logits, target, weight, lse, total_weight = ctx.saved_tensors
        none = (None,) * 5
        if not ctx.needs_input_grad[0]:
            return (None, *none)
        if torch.is_grad_enabled():
            return (_cross_entropy_gradient_graph(grad, logits, target, weight, total_weight, *ctx.options), *none)
        return (K.cross_entropy_backward(grad, logits, target, weight, lse, total_weight, *ctx.options), *none)


def _cross_entropy_gradient_graph(grad, logits, target, weight, total_weight, reduction, ignore_index,
                                  label_smoothing):
    """dloss/dlogits as a differentiable graph: (1 - eps) nll_loss + (eps / C) sum_c w_c (-logp_c), through
    log_softmax's vector-Jacobian product. total_weight depends on target and weight alone, a constant."""
    logp = LogSoftmaxFn.apply(logits, 1)
    dlogp = NLLLossGradFn.apply(grad, target, weight, total_weight, logits.shape, logits.dtype, reduction,
                                ignore_index)
    if label_smoothing > 0.0:
        classes = logits.shape[1]
        rows = _per_row_gradient(grad, target.shape, reduction, total_weight)
        rows = torch.where(target != ignore_index, rows, 0.0)
        w = torch.ones(classes, device=logits.device, dtype=logits.dtype) if weight is None else weight
        smooth = -_class_view(w, logits.dim()) * rows.unsqueeze(1)
        dlogp = (1.0 - label_smoothing) * dlogp + (label_smoothing / classes) * smooth
    return _log_softmax_vjp(logp, dlogp, 1).to(logits.dtype)


class CrossEntropyProbsFn(torch.autograd.Function):
    """Targets of class probabilities, shaped like the logits; differentiable in both."""

    @staticmethod
    def forward(ctx, logits, target, weight, reduction, label_smoothing):
        loss, lse, mass, rows = K.cross_entropy_probs_forward(logits, target, weight, reduction, label_smoothing)
        ctx.save_for_backward(logits, target, weight, lse, mass, rows)
        ctx.options = (reduction, label_smoothing)
        return loss

    @staticmethod
    def backward(ctx, grad):
        logits, target, weight, lse, mass, rows = ctx.saved_tensors
        need_logits, need_target = ctx.needs_input_grad[:2]
        if not (need_logits or need_target):
            return None, None, None, None, None
        if torch.is_grad_enabled():
            dx, dt = _probs_gradients_graph(grad, logits, target, weight, rows, *ctx.options, need_logits,
                                            need_target)
        else:
            dx, dt = K.cross_entropy_probs_backward(grad, logits, target, weight, lse, mass, rows, *ctx.options,
                                                    need_logits=need_logits, need_target=need_target)
        return dx, dt, None, None, None


def _probs_gradients_graph(grad, logits, target, weight, rows, reduction, label_smoothing, need_logits,
                           need_target):
    """(dlogits, dtarget) of loss = -sum_c w_c t'_c logp_c as a differentiable graph (t' the smoothed target)."""
    classes = logits.shape[1]
    logp = LogSoftmaxFn.apply(logits, 1)
    g = _per_row_gradient(grad, (logits.shape[0], *logits.shape[2:]), reduction, rows).unsqueeze(1)
    w = 1.0 if weight is None else _class_view(weight, logits.dim())
    dx = dt = None
    if need_logits:
        smoothed = target * (1.0 - label_smoothing) + label_smoothing / classes if label_smoothing > 0.0 else target
        dx = _log_softmax_vjp(logp, -g * w * smoothed, 1).to(logits.dtype)
    if need_target:
        dt = (-(1.0 - label_smoothing) * g * w * logp).to(target.dtype)
    return dx, dt


class NLLLossFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, target, weight, reduction, ignore_index):
        loss, total_weight = K.nll_loss_forward(input, target, weight, reduction, ignore_index)
        # The gradient does not depend on the input's values, so the input is not saved.
        ctx.save_for_backward(target, weight, total_weight)
        ctx.input_meta = (input.shape, input.dtype)
        ctx.options = (reduction, ignore_index)
        return loss

    @staticmethod
    def backward(ctx, grad):
        target, weight, total_weight = ctx.saved_tensors
        dx = None
        if ctx.needs_input_grad[0]:
            args = (target, weight, total_weight, *ctx.input_meta, *ctx.options)
            # The gradient is linear in grad alone: under create_graph it is a Function of grad.
            dx = NLLLossGradFn.apply(grad, *args) if torch.is_grad_enabled() else K.nll_loss_backward(grad, *args)
        return dx, None, None, None, None


class NLLLossGradFn(torch.autograd.Function):
    """nll_loss's input gradient as a function of the upstream gradient g: -w_t g at each row's target.

    Its adjoint takes ddx to -w_t ddx[t] per row, reduced as the loss is ('mean' by the same
    total weight): nll_loss itself, so each order of derivative is the other Function.
    """

    @staticmethod
    def forward(ctx, grad, target, weight, total_weight, input_shape, dtype, reduction, ignore_index):
        ctx.save_for_backward(target, weight)
        ctx.options = (reduction, ignore_index)
        return K.nll_loss_backward(grad, target, weight, total_weight, input_shape, dtype, reduction, ignore_index)

    @staticmethod
    def backward(ctx, ddx):
        target, weight = ctx.saved_tensors
        dgrad = NLLLossFn.apply(ddx, target, weight, *ctx.options) if ctx.needs_input_grad[0] else None
        return dgrad, None, None, None, None, None, None, None


# ----------------------------------------------------------------------------------------------
# Argument checks, in the order torch makes them and with its messages, prefixed by the op
# ----------------------------------------------------------------------------------------------


def _resolve_reduction(op, size_average, reduce, reduction):
    if size_average is not None or reduce is not None:
        # The deprecated flags override `reduction`, with torch's own mapping and warning.
        reduction = _reduction.legacy_get_string(size_average, reduce)
    if reduction not in K.REDUCTIONS:
        raise ValueError(f"{op}: {reduction} is not a valid value for reduction")
    return reduction


def _check_floating_input(op, input):
    # torch has no integer kernel for these ops and says so with NotImplementedError.
    if not input.is_floating_point():
        raise NotImplementedError(f"{op}: input must be a floating-point tensor, got dtype {input.dtype}")


def _check_ignore_index(op, ignore_index):
    if not isinstance(ignore_index, numbers.Integral) or isinstance(ignore_index, bool):
        raise TypeError(f"{op}: ignore_index must be an int, got {type(ignore_index).__name__}")


def _label_smoothing(op, label_smoothing) -> float:
    """The smoothing to apply: torch checks the range only when it smooths, so a negative or nan value means none."""
    if isinstance(label_smoothing, torch.Tensor) and label_smoothing.numel() == 1:
        # torch reads a one-element tensor as its value (no gradient flows to it).
        label_smoothing = label_smoothing.item()
    if not isinstance(label_smoothing, numbers.Real) or isinstance(label_smoothing, bool):
        raise TypeError(f"{op}: label_smoothing must be a float, got {type(label_smoothing).__name__}")
    if label_smoothing > 1.0:
        raise RuntimeError(f"{op}: label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    return float(label_smoothing) if label_smoothing > 0.0 else 0.0


def _check_target(op, input, target):
    """Class-index target whose shape matches the input's: (N, *spatial) for (N, C, *spatial), () for (C,)."""
    if target.dtype not in (torch.int64, torch.uint8):
        raise RuntimeError(f"{op}: expected target dtype to be Long or Byte, but got {target.dtype}")
    if input.dim() < 1:
        raise ValueError(f"{op}: Expected 1 or more dimensions (got {input.dim()})")
    if input.dim() == 1:
        if target.dim() > 1 or (target.dim() == 1 and target.numel() != 1):
            raise ValueError(f"{op}: For 1D input, 1D target must have size 1, but got target size: "
                             f"{target.numel() if target.dim() == 1 else list(target.shape)}")
        return
    target_batch = target.shape[0] if target.dim() else 0
    if input.shape[0] != target_batch:
        raise ValueError(f"{op}: Expected input batch_size ({input.shape[0]}) to match target batch_size "
                         f"({target_batch}).")
    if input.dim() == 2 and target.dim() != 1:
        raise RuntimeError(f"{op}: 0D or 1D target tensor expected, multi-target not supported")
    expected = [input.shape[0], *input.shape[2:]]
    if target.dim() != input.dim() - 1:
        raise RuntimeError(f"{op}: Expected target size {expected}, got {list(target.shape)}")
    if list(target.shape) != expected:
        raise RuntimeError(f"{op}: size mismatch (got input: {list(input.shape)} , target: {list(target.shape)}")


def _check_weight_size(op, input, weight):
    classes = input.shape[0] if input.dim() == 1 else input.shape[1]
    if weight.dim() != 1 or weight.numel() != classes:
        raise RuntimeError(f"{op}: weight tensor should be defined either for all {classes} classes or no classes "
                           f"but got weight tensor of shape: {list(weight.shape)}")


def _check_target_range(op, target, classes, ignore_index):
    """IndexError, as torch's CPU kernels raise, for a class index outside [0, C) that is not ignore_index.

    The kernels would read out of bounds otherwise. The check costs a few tiny elementwise kernels
    and one device-to-host sync per call (to read the verdict); torch's CUDA kernels assert on
    the device instead.
    """
    out_of_range = (target != ignore_index) & ((target < 0) | (target >= classes))
    if bool(out_of_range.any()):
        raise IndexError(f"{op}: Target {int(target[out_of_range][0])} is out of bounds.")


def _loss_arguments(op, input, target, weight, ignore_index):
    """Validate class-index losses; returns (input, target, weight, unbatched) with autocast applied.

    The kernels index `weight` by class as a dense vector, so a strided or expanded weight is
    copied here (C elements, negligible beside the logits).
    """
    _check_floating_input(op, input)
    _check_target(op, input, target)
    _check_ignore_index(op, ignore_index)
    if weight is not None:
        _checks.check_tensor(op, "weight", weight)
    if not backend.use_reference():
        backend.check_devices(op, input=input, target=target, weight=weight)
    input, weight = cast_to_float32(input.device.type, [input, weight])
    if weight is not None:
        _check_weight_size(op, input, weight)
        if weight.dtype != input.dtype:
            raise RuntimeError(f"{op}: expected scalar type {input.dtype} but found {weight.dtype} for weight "
                               "(weight must have the input's dtype)")
        if weight.requires_grad:
            raise RuntimeError(f"{op} is not differentiable with respect to weight; it must not require grad")
    classes = input.shape[0] if input.dim() == 1 else input.shape[1]
    _check_target_range(op, target, classes, ignore_index)
    return input, target, weight if weight is None else weight.contiguous(), input.dim() == 1


def _as_input_dtype(op, name, t, input):
    """`t` in input's dtype when that is an exact widening; torch would promote the result otherwise."""
    if t is None or t.dtype == input.dtype:
        return t
    promoted = torch.promote_types(t.dtype, input.dtype)
    if promoted != input.dtype:
        raise NotImplementedError(f"{op}: a {name} of dtype {t.dtype} beside input of dtype {input.dtype} (a "
                                  f"{promoted} result in torch) is not implemented; cast both to one dtype")
    return t.to(input.dtype)


def _cross_entropy_probabilities(input, target, weight, ignore_index, reduction, label_smoothing):
    """cross_entropy whose target has the input's shape: torch reads it as class probabilities."""
    op = "cross_entropy"
    if not target.is_floating_point():
        raise RuntimeError(f"{op}: Expected floating point type for target with class probabilities, "
                           f"got {target.dtype}")
    _check_ignore_index(op, ignore_index)
    if ignore_index >= 0:
        raise RuntimeError(f"{op}: ignore_index is not supported for floating point target "
                           f"(got ignore_index={ignore_index})")
    _check_floating_input(op, input)
    if input.dim() == 0:
        raise IndexError(f"{op}: Dimension specified as 1 but tensor has no dimensions (input is 0-dim)")
    if weight is not None:
        _checks.check_tensor(op, "weight", weight)
    if not backend.use_reference():
        backend.check_devices(op, input=input, target=target, weight=weight)
    input, target, weight = cast_to_float32(input.device.type, [input, target, weight])
    if weight is not None:
        _check_weight_size(op, input, weight)
        if weight.requires_grad:
            raise NotImplementedError(f"{op}: the gradient with respect to weight (probability targets) is not "
                                      "implemented; weight must not require grad")
    target = _as_input_dtype(op, "target", target, input)
    weight = _as_input_dtype(op, "weight", weight, input)
    if backend.use_reference():
        return reference.cross_entropy(input, target, weight, reduction=reduction, label_smoothing=label_smoothing)
    unbatched = input.dim() == 1
    logits, target = (input.unsqueeze(0), target.unsqueeze(0)) if unbatched else (input, target)
    with torch.autocast(input.device.type, enabled=False):
        loss = CrossEntropyProbsFn.apply(logits, target, None if weight is None else weight.contiguous(),
                                         reduction, label_smoothing)
    return loss.reshape(()) if unbatched else loss


# ----------------------------------------------------------------------------------------------
# Functionals
# ----------------------------------------------------------------------------------------------


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                  label_smoothing=0.0):
    """`torch.nn.functional.cross_entropy`, class indices or class probabilities, as fused Triton kernels."""
    op = "cross_entropy"
    reduction = _resolve_reduction(op, size_average, reduce, reduction)
    label_smoothing = _label_smoothing(op, label_smoothing)
    _checks.check_tensor(op, "input", input)
    _checks.check_tensor(op, "target", target)
    if target.shape == input.shape:
        return _cross_entropy_probabilities(input, target, weight, ignore_index, reduction, label_smoothing)
    input, target, weight, unbatched = _loss_arguments(op, input, target, weight, ignore_index)
    ignore_index = int(ignore_index)
    if backend.use_reference():
        return reference.cross_entropy(input, target, weight, ignore_index=ignore_index, reduction=reduction,
                                       label_smoothing=label_smoothing)
    logits, target = (input.unsqueeze(0), target.reshape(1)) if unbatched else (input, target)
    with torch.autocast(input.device.type, enabled=False):
        loss = CrossEntropyFn.apply(logits, target, weight, reduction, ignore_index, label_smoothing)
    return loss.reshape(()) if unbatched else loss


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
    """`torch.nn.functional.nll_loss` (input: log-probabilities), computed by Triton kernels."""
    op = "nll_loss"
    reduction = _resolve_reduction(op, size_average, reduce, reduction)
    _checks.check_tensor(op, "input", input)
    _checks.check_tensor(op, "target", target)
    input, target, weight, unbatched = _loss_arguments(op, input, target, weight, ignore_index)
    ignore_index = int(ignore_index)
    if backend.use_reference():
        return reference.nll_loss(input, target, weight, ignore_index=ignore_index, reduction=reduction)
    log_probs, target = (input.unsqueeze(0), target.reshape(1)) if unbatched else (input, target)
    with torch.autocast(input.device.type, enabled=False):
        loss = NLLLossFn.apply(log_probs, target, weight, reduction, ignore_index)
    return loss.reshape(()) if unbatched else loss


def _implicit_softmax_dim(ndim, stacklevel):
    # torch.nn.functional._get_softmax_dim: the legacy default, with torch's deprecation warning.
    warnings.warn("Implicit dimension choice for log_softmax has been deprecated. "
                  "Change the call to include dim=X as an argument.", stacklevel=stacklevel)
    return 0 if ndim in (0, 1, 3) else 1


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """`torch.nn.functional.log_softmax`, computed by Triton kernels."""
    op = "log_softmax"
    _checks.check_tensor(op, "input", input)
    if dim is None:
        dim = _implicit_softmax_dim(input.dim(), _stacklevel)
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"{op}: dim must be an int, got {type(dim).__name__}")
    rank = max(input.dim(), 1)
    if not -rank <= dim < rank:
        raise IndexError(f"{op}: Dimension out of range (expected to be in range of [{-rank}, {rank - 1}], "
                         f"but got {dim})")
    if dtype is not None:
        input = input.to(dtype)
    else:
        # Autocast runs log_softmax in float32 on CUDA; CPU autocast leaves it alone.
        (input,) = cast_to_float32_on_cuda(input.device.type, [input])
    _check_floating_input(op, input)
    if backend.use_reference():
        return reference.log_softmax(input, dim)
    backend.check_devices(op, input=input)
    # A 0-dim tensor is one row of one class.
    x = input.reshape(1) if input.dim() == 0 else input
    with torch.autocast(input.device.type, enabled=False):
        y = LogSoftmaxFn.apply(x, dim % x.dim())
    return y.reshape(()) if input.dim() == 0 else y


# ----------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """Drop-in `torch.nn.CrossEntropyLoss` (class indices or class probabilities)."""

    def forward(self, input, target):
        return cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                             reduction=self.reduction, label_smoothing=self.label_smoothing)


class NLLLoss(torch.nn.NLLLoss):
    """Drop-in `torch.nn.NLLLoss`."""

    def forward(self, input, target):
        return nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction)


class LogSoftmax(torch.nn.LogSoftmax):
    """Drop-in `torch.nn.LogSoftmax`."""

    def forward(self, input):
        return log_softmax(input, self.dim, _stacklevel=5)
