"""Softmax cross-entropy, log-softmax and NLL loss: autograd.Functions, torch-signature functionals, modules.

`cross_entropy` is one fused kernel (log-softmax and NLL in a single pass over the logits); it
saves the logits and one fp32 log-sum-exp per row, never the probabilities. `log_softmax` and
`nll_loss` are also exposed on their own, each with its Triton forward and backward.

Class-index targets only: a floating-point target of class probabilities raises NotImplementedError.
"""
from __future__ import annotations

import numbers
import warnings

import torch
from torch.autograd.function import once_differentiable
from torch.nn import _reduction

from tritonprop import backend
from tritonprop.kernels import cross_entropy as K
from tritonprop.ops import _checks
from tritonprop.ops._autocast import cast_to_float32, cast_to_float32_on_cuda
from tritonprop.ops.reference import cross_entropy as reference



class LogSoftmaxFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim):
        y, lse = K.log_softmax_forward(x, dim)
        ctx.save_for_backward(x, lse)
        ctx.dim = dim
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, lse = ctx.saved_tensors
        dx = K.log_softmax_backward(dy, x, lse, ctx.dim) if ctx.needs_input_grad[0] else None
        return dx, None


class CrossEntropyFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, weight, reduction, ignore_index, label_smoothing):
        loss, lse, total_weight = K.cross_entropy_forward(logits, target, weight, reduction, ignore_index,
                                                          label_smoothing)
        ctx.save_for_backward(logits, target, weight, lse, total_weight)
        ctx.options = (reduction, ignore_index, label_smoothing)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        logits, target, weight, lse, total_weight = ctx.saved_tensors
        dx = None
        if ctx.needs_input_grad[0]:
            dx = K.cross_entropy_backward(grad, logits, target, weight, lse, total_weight, *ctx.options)
        return dx, None, None, None, None, None


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
    @once_differentiable
    def backward(ctx, grad):
        target, weight, total_weight = ctx.saved_tensors
        dx = None
        if ctx.needs_input_grad[0]:
            dx = K.nll_loss_backward(grad, target, weight, total_weight, *ctx.input_meta, *ctx.options)
        return dx, None, None, None, None


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


def _check_target(op, input, target):
    """Class-index target whose shape matches the input's: (N, *spatial) for (N, C, *spatial), () for (C,)."""
    _checks.check_tensor(op, "target", target)
    if target.is_floating_point():
        raise NotImplementedError(
            f"{op}: probability targets (a floating-point target of class probabilities) are not implemented; "
            "pass class indices (an int64 or uint8 target) instead"
        )
    if op == "cross_entropy" and target.shape == input.shape:
        # torch reads a target shaped like the input as class probabilities.
        raise RuntimeError(f"{op}: Expected floating point type for target with class probabilities, "
                           f"got {target.dtype}")
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


def _check_weight(op, input, weight):
    if weight is None:
        return
    classes = input.shape[0] if input.dim() == 1 else input.shape[1]
    if weight.dim() != 1 or weight.numel() != classes:
        raise RuntimeError(f"{op}: weight tensor should be defined either for all {classes} classes or no classes "
                           f"but got weight tensor of shape: {list(weight.shape)}")
    if weight.dtype != input.dtype:
        raise TypeError(f"{op}: weight has dtype {weight.dtype}, but input is {input.dtype}; they must match")
    if weight.requires_grad:
        raise RuntimeError(f"{op} is not differentiable with respect to weight; it must not require grad")


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
    """Validate; returns (input, target, weight, unbatched) with autocast applied and weight contiguous."""
    _checks.check_tensor(op, "input", input)
    _checks.check_floating(op, "input", input)
    _check_target(op, input, target)
    if not isinstance(ignore_index, numbers.Integral) or isinstance(ignore_index, bool):
        raise TypeError(f"{op}: ignore_index must be an int, got {type(ignore_index).__name__}")
    if weight is not None:
        _checks.check_tensor(op, "weight", weight)
    if not backend.use_reference():
        backend.check_devices(op, input=input, target=target, weight=weight)
    input, weight = cast_to_float32(input.device.type, [input, weight])
    _check_weight(op, input, weight)
    classes = input.shape[0] if input.dim() == 1 else input.shape[1]
    _check_target_range(op, target, classes, ignore_index)
    return input, target, weight if weight is None else weight.contiguous(), input.dim() == 1


# ----------------------------------------------------------------------------------------------
# Functionals
# ----------------------------------------------------------------------------------------------


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                  label_smoothing=0.0):
    """`torch.nn.functional.cross_entropy` with class-index targets, as one fused Triton kernel."""
    op = "cross_entropy"
    reduction = _resolve_reduction(op, size_average, reduce, reduction)
    if not isinstance(label_smoothing, (int, float)) or isinstance(label_smoothing, bool):
        raise TypeError(f"{op}: label_smoothing must be a float, got {type(label_smoothing).__name__}")
    if label_smoothing > 1.0:
        raise RuntimeError(f"{op}: label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    # torch checks the range only on its smoothing path, so a negative value means no smoothing.
    label_smoothing = max(float(label_smoothing), 0.0)
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
    _checks.check_floating(op, "input", input)
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
    """Drop-in `torch.nn.CrossEntropyLoss` (class-index targets)."""

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
