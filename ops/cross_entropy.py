"""Softmax cross-entropy, log-softmax and NLL loss: custom ops with their autograd, functionals, modules.

`cross_entropy` is one fused kernel (log-softmax and NLL in a single pass over the logits); it
saves the logits and one fp32 log-sum-exp per row, never the probabilities. `log_softmax` and
`nll_loss` are also exposed on their own, each with its Triton forward and backward.

Targets are class indices, or class probabilities (a floating-point target shaped like the
input, as torch reads it), each with its own pair of kernels.

Double backward: every backward here is itself differentiable. Without a graph of the gradient
(the usual case) it is the fast kernel; under ``create_graph=True`` it is rebuilt from these
same differentiable ops (log_softmax recomputed from the saved input, since the saved
log-sum-exp is a constant to autograd) plus torch elementwise ops and reductions.
"""
from __future__ import annotations

import numbers
import warnings
from typing import Optional

import torch
from torch import Tensor
from torch.nn import _reduction

from tritonprop.kernels import cross_entropy as K
from tritonprop.ops import _checks
from tritonprop.ops._library import absent, call, differentiable, dispatch, kernel_op, not_differentiable, wanted


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


# ----------------------------------------------------------------------------------------------
# The custom ops and their autograd
# ----------------------------------------------------------------------------------------------


@kernel_op("log_softmax")
def log_softmax_op(x: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """(log_softmax(x, dim), the fp32 log-sum-exp of each row, kept for the backward)."""
    return K.log_softmax_forward(x, dim)


@kernel_op("log_softmax_backward")
def log_softmax_backward_op(dy: Tensor, x: Tensor, lse: Tensor, dim: int) -> Tensor:
    return K.log_softmax_backward(dy, x, lse, dim)


def _log_softmax_setup_context(ctx, inputs, output):
    x, dim = inputs
    _, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, lse)
    ctx.dim = dim


def _log_softmax_backward(ctx, dy, _dlse):
    if dy is None or not ctx.needs_input_grad[0]:
        return None, None
    x, lse = ctx.saved_tensors
    if torch.is_grad_enabled():
        # A graph of the gradient: log_softmax recomputed (the saved lse is a constant to autograd).
        return _log_softmax_vjp(call(log_softmax_op, x, ctx.dim)[0], dy, ctx.dim), None
    return call(log_softmax_backward_op, dy, x, lse, ctx.dim), None


@kernel_op("cross_entropy")
def cross_entropy_op(logits: Tensor, target: Tensor, weight: Optional[Tensor], reduction: str, ignore_index: int,
                     label_smoothing: float) -> tuple[Tensor, Tensor, Tensor]:
    """Class-index targets: (loss, the per-row log-sum-exp, the total weight of the counted rows)."""
    return K.cross_entropy_forward(logits, target, weight, reduction, ignore_index, label_smoothing)


@kernel_op("cross_entropy_backward")
def cross_entropy_backward_op(grad: Tensor, logits: Tensor, target: Tensor, weight: Optional[Tensor], lse: Tensor,
                              total_weight: Tensor, reduction: str, ignore_index: int, label_smoothing: float
                              ) -> Tensor:
    return K.cross_entropy_backward(grad, logits, target, weight, lse, total_weight, reduction, ignore_index,
                                    label_smoothing)


def _cross_entropy_setup_context(ctx, inputs, output):
    logits, target, weight, reduction, ignore_index, label_smoothing = inputs
    _, lse, total_weight = output
    ctx.mark_non_differentiable(lse, total_weight)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(logits, target, weight, lse, total_weight)
    ctx.options = (reduction, ignore_index, label_smoothing)


def _cross_entropy_backward(ctx, grad, _dlse, _dtotal):
    none = (None,) * 5
    if grad is None or not ctx.needs_input_grad[0]:
        return (None, *none)
    logits, target, weight, lse, total_weight = ctx.saved_tensors
    if torch.is_grad_enabled():
        return (_cross_entropy_gradient_graph(grad, logits, target, weight, total_weight, *ctx.options), *none)
    return (call(cross_entropy_backward_op, grad, logits, target, weight, lse, total_weight, *ctx.options), *none)


def _cross_entropy_gradient_graph(grad, logits, target, weight, total_weight, reduction, ignore_index,
                                  label_smoothing):
    """dloss/dlogits as a differentiable graph: (1 - eps) nll_loss + (eps / C) sum_c w_c (-logp_c), through
    log_softmax's vector-Jacobian product. total_weight depends on target and weight alone, a constant."""
    logp = call(log_softmax_op, logits, 1)[0]
    dlogp = call(nll_loss_backward_op, grad, target, weight, total_weight, list(logits.shape), logits.dtype,
                 reduction, ignore_index)
    if label_smoothing > 0.0:
        classes = logits.shape[1]
        rows = _per_row_gradient(grad, target.shape, reduction, total_weight)
        rows = torch.where(target != ignore_index, rows, 0.0)
        w = torch.ones(classes, device=logits.device, dtype=logits.dtype) if weight is None else weight
        smooth = -_class_view(w, logits.dim()) * rows.unsqueeze(1)
        dlogp = (1.0 - label_smoothing) * dlogp + (label_smoothing / classes) * smooth
    return _log_softmax_vjp(logp, dlogp, 1).to(logits.dtype)


@kernel_op("cross_entropy_probs")
def cross_entropy_probs_op(logits: Tensor, target: Tensor, weight: Optional[Tensor], reduction: str,
                           label_smoothing: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Targets of class probabilities, shaped like the logits: (loss, lse, mass, rows) as the kernel gives them."""
    return K.cross_entropy_probs_forward(logits, target, weight, reduction, label_smoothing)


@kernel_op("cross_entropy_probs_backward")
def cross_entropy_probs_backward_op(grad: Tensor, logits: Tensor, target: Tensor, weight: Optional[Tensor],
                                    lse: Tensor, mass: Tensor, rows: Tensor, reduction: str, label_smoothing: float,
                                    needs: list[bool]) -> tuple[Tensor, Tensor]:
    """(dlogits, dtarget), each `absent` unless asked for."""
    dx, dt = K.cross_entropy_probs_backward(grad, logits, target, weight, lse, mass, rows, reduction,
                                            label_smoothing, need_logits=needs[0], need_target=needs[1])
    return (dx if dx is not None else absent(logits)), (dt if dt is not None else absent(logits))


def _probs_setup_context(ctx, inputs, output):
    logits, target, weight, reduction, label_smoothing = inputs
    _, lse, mass, rows = output
    ctx.mark_non_differentiable(lse, mass, rows)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(logits, target, weight, lse, mass, rows)
    ctx.options = (reduction, label_smoothing)


def _probs_backward(ctx, grad, *_statistics):
    need_logits, need_target = ctx.needs_input_grad[:2]
    if grad is None or not (need_logits or need_target):
        return None, None, None, None, None
    logits, target, weight, lse, mass, rows = ctx.saved_tensors
    if torch.is_grad_enabled():
        dx, dt = _probs_gradients_graph(grad, logits, target, weight, rows, *ctx.options, need_logits,
                                        need_target)
    else:
        grads = call(cross_entropy_probs_backward_op, grad, logits, target, weight, lse, mass, rows, *ctx.options,
                     [need_logits, need_target])
        dx, dt = wanted(grads, (need_logits, need_target))
    return dx, dt, None, None, None


def _probs_gradients_graph(grad, logits, target, weight, rows, reduction, label_smoothing, need_logits,
                           need_target):
    """(dlogits, dtarget) of loss = -sum_c w_c t'_c logp_c as a differentiable graph (t' the smoothed target)."""
    classes = logits.shape[1]
    logp = call(log_softmax_op, logits, 1)[0]
    g = _per_row_gradient(grad, (logits.shape[0], *logits.shape[2:]), reduction, rows).unsqueeze(1)
    w = 1.0 if weight is None else _class_view(weight, logits.dim())
    dx = dt = None
    if need_logits:
        smoothed = target * (1.0 - label_smoothing) + label_smoothing / classes if label_smoothing > 0.0 else target
        dx = _log_softmax_vjp(logp, -g * w * smoothed, 1).to(logits.dtype)
    if need_target:
        dt = (-(1.0 - label_smoothing) * g * w * logp).to(target.dtype)
    return dx, dt


@kernel_op("nll_loss")
def nll_loss_op(input: Tensor, target: Tensor, weight: Optional[Tensor], reduction: str, ignore_index: int
                ) -> tuple[Tensor, Tensor]:
    """(loss, the total weight of the counted rows)."""
    return K.nll_loss_forward(input, target, weight, reduction, ignore_index)


@kernel_op("nll_loss_backward")
def nll_loss_backward_op(grad: Tensor, target: Tensor, weight: Optional[Tensor], total_weight: Tensor,
                         input_shape: list[int], dtype: torch.dtype, reduction: str, ignore_index: int) -> Tensor:
    """nll_loss's input gradient, a function of the upstream gradient alone: -w_t grad at each row's target."""
    return K.nll_loss_backward(grad, target, weight, total_weight, tuple(input_shape), dtype, reduction,
                               ignore_index)


def _nll_loss_setup_context(ctx, inputs, output):
    input, target, weight, reduction, ignore_index = inputs
    _, total_weight = output
    ctx.mark_non_differentiable(total_weight)
    ctx.set_materialize_grads(False)
    # The gradient does not depend on the input's values, so the input is not saved.
    ctx.save_for_backward(target, weight, total_weight)
    ctx.input_meta = (list(input.shape), input.dtype)
    ctx.options = (reduction, ignore_index)


def _nll_loss_backward(ctx, grad, _dtotal):
    if grad is None or not ctx.needs_input_grad[0]:
        return None, None, None, None, None
    target, weight, total_weight = ctx.saved_tensors
    # Linear in grad, and differentiable: its own backward is nll_loss again.
    dx = call(nll_loss_backward_op, grad, target, weight, total_weight, *ctx.input_meta, *ctx.options)
    return dx, None, None, None, None


def _nll_loss_grad_setup_context(ctx, inputs, output):
    grad, target, weight, total_weight, input_shape, dtype, reduction, ignore_index = inputs
    ctx.save_for_backward(target, weight)
    ctx.options = (reduction, ignore_index)


def _nll_loss_grad_backward(ctx, ddx):
    """The adjoint takes ddx to -w_t ddx[t] per row, reduced as the loss is ('mean' by the same total
    weight): nll_loss itself, so each order of derivative is the other op."""
    target, weight = ctx.saved_tensors
    dgrad = call(nll_loss_op, ddx, target, weight, *ctx.options)[0] if ctx.needs_input_grad[0] else None
    return dgrad, None, None, None, None, None, None, None


differentiable(log_softmax_op, setup_context=_log_softmax_setup_context, backward=_log_softmax_backward)
differentiable(cross_entropy_op, setup_context=_cross_entropy_setup_context, backward=_cross_entropy_backward)
differentiable(cross_entropy_probs_op, setup_context=_probs_setup_context, backward=_probs_backward)
differentiable(nll_loss_op, setup_context=_nll_loss_setup_context, backward=_nll_loss_backward)
differentiable(nll_loss_backward_op, setup_context=_nll_loss_grad_setup_context, backward=_nll_loss_grad_backward)
_WHY_NOT = ("the kernel's gradient is not differentiable; under create_graph=True the gradient is built from "
            "differentiable ops instead")
not_differentiable(log_softmax_backward_op, explanation=_WHY_NOT)
not_differentiable(cross_entropy_backward_op, explanation=_WHY_NOT)
not_differentiable(cross_entropy_probs_backward_op, explanation=_WHY_NOT)


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

    The kernels would read out of bounds otherwise. The check costs three tiny kernels and a
    device-to-host read of the two bounds per call, which waits for the device; torch's CUDA
    kernels assert on the device instead.
    """
    if target.device.type == "meta":
        return  # no values to check
    if torch.compiler.is_compiling():
        # A compiled graph cannot branch on a value; the check stays in it as an assertion (on
        # CUDA a device-side one, as torch's own kernels make).
        out_of_range = _out_of_range(target, classes, ignore_index)
        torch._assert_async(~out_of_range.any(), f"{op}: a target is out of bounds [0, {classes})")
        return
    if target.numel() == 0:
        return
    # With the ignored targets read as class 0, every target is in range exactly when the
    # smallest and the largest are: one reduction, where the elementwise test takes five ops.
    # (Both bounds in one read from the device: each int() of a CUDA tensor waits for it.)
    low, high = torch.stack(torch.aminmax(target.masked_fill(target == ignore_index, 0))).tolist()
    if low < 0 or high >= classes:
        raise IndexError(f"{op}: Target {int(target[_out_of_range(target, classes, ignore_index)][0])} is out of "
                         "bounds.")


def _out_of_range(target, classes, ignore_index):
    """Where a target is neither ignore_index nor a class in [0, classes)."""
    return (target != ignore_index) & ((target < 0) | (target >= classes))


def _check_loss_arguments(op, input, target, weight, ignore_index):
    """Class-index losses: the checks torch makes before its autocast cast."""
    _check_floating_input(op, input)
    _check_target(op, input, target)
    _check_ignore_index(op, ignore_index)
    if weight is not None:
        _checks.check_tensor(op, "weight", weight)


def _check_cast_loss_arguments(op, input, target, weight, ignore_index):
    """Class-index losses: the checks torch makes after its cast (the weight's dtype, the targets' range)."""
    if weight is not None:
        _check_weight_size(op, input, weight)
        if weight.dtype != input.dtype:
            raise RuntimeError(f"{op}: expected scalar type {input.dtype} but found {weight.dtype} for weight "
                               "(weight must have the input's dtype)")
        if weight.requires_grad:
            raise RuntimeError(f"{op} is not differentiable with respect to weight; it must not require grad")
    classes = input.shape[0] if input.dim() == 1 else input.shape[1]
    _check_target_range(op, target, classes, ignore_index)


def _class_index_loss(loss_op, input, target, weight, options):
    """Run `loss_op` on a batch: an unbatched (C,) input is one row. The kernels index `weight` by
    class as a dense vector, so a strided or expanded weight is copied (C elements)."""
    unbatched = input.dim() == 1
    rows, target = (input.unsqueeze(0), target.reshape(1)) if unbatched else (input, target)
    loss = call(loss_op, rows, target, None if weight is None else weight.contiguous(), *options)[0]
    return loss.reshape(()) if unbatched else loss


def _check_widens_to_input(op, name, t, input):
    """`t` may be cast to input's dtype only as an exact widening; torch would promote the result otherwise."""
    if t is None:
        return
    promoted = torch.promote_types(t.dtype, input.dtype)
    if promoted != input.dtype:
        raise NotImplementedError(f"{op}: a {name} of dtype {t.dtype} beside input of dtype {input.dtype} (a "
                                  f"{promoted} result in torch) is not implemented; cast both to one dtype")


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

    def in_input_dtype(input, target, weight):
        # check_cast has made sure that each cast is an exact widening (a no-op for equal dtypes).
        return input, target.to(input.dtype), None if weight is None else weight.to(input.dtype)

    def check_cast(input, target, weight):
        if weight is not None:
            _check_weight_size(op, input, weight)
            if weight.requires_grad:
                raise NotImplementedError(f"{op}: the gradient with respect to weight (probability targets) is not "
                                          "implemented; weight must not require grad")
        _check_widens_to_input(op, "target", target, input)
        _check_widens_to_input(op, "weight", weight, input)

    def kernels(input, target, weight):
        input, target, weight = in_input_dtype(input, target, weight)
        unbatched = input.dim() == 1
        logits, target = (input.unsqueeze(0), target.unsqueeze(0)) if unbatched else (input, target)
        loss = call(cross_entropy_probs_op, logits, target, None if weight is None else weight.contiguous(),
                    reduction, label_smoothing)[0]
        return loss.reshape(()) if unbatched else loss

    return dispatch(op, dict(input=input, target=target, weight=weight), check_cast=check_cast, kernels=kernels,
                    reference=lambda naive, **tensors: naive(*in_input_dtype(**tensors), reduction=reduction,
                                                             label_smoothing=label_smoothing))


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
    _check_loss_arguments(op, input, target, weight, ignore_index)
    ignore_index = int(ignore_index)
    return dispatch(op, dict(input=input, target=target, weight=weight),
                    check_cast=lambda **t: _check_cast_loss_arguments(op, **t, ignore_index=ignore_index),
                    kernels=lambda **t: _class_index_loss(cross_entropy_op, **t, options=(reduction, ignore_index,
                                                                                          label_smoothing)),
                    reference=lambda naive, **t: naive(**t, ignore_index=ignore_index, reduction=reduction,
                                                       label_smoothing=label_smoothing))


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
    """`torch.nn.functional.nll_loss` (input: log-probabilities), computed by Triton kernels."""
    op = "nll_loss"
    reduction = _resolve_reduction(op, size_average, reduce, reduction)
    _checks.check_tensor(op, "input", input)
    _checks.check_tensor(op, "target", target)
    _check_loss_arguments(op, input, target, weight, ignore_index)
    ignore_index = int(ignore_index)
    return dispatch(op, dict(input=input, target=target, weight=weight),
                    check_cast=lambda **t: _check_cast_loss_arguments(op, **t, ignore_index=ignore_index),
                    kernels=lambda **t: _class_index_loss(nll_loss_op, **t, options=(reduction, ignore_index)),
                    reference=lambda naive, **t: naive(**t, ignore_index=ignore_index, reduction=reduction))


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
        # A requested dtype overrides autocast, as in torch (which runs log_softmax in float32 on
        # CUDA under autocast, and leaves it alone on the CPU).
        input = input.to(dtype)
    dim = dim % max(input.dim(), 1)

    def kernels(input):
        # A 0-dim tensor is one row of one class.
        x = input.reshape(1) if input.dim() == 0 else input
        y = call(log_softmax_op, x, dim)[0]
        return y.reshape(()) if input.dim() == 0 else y

    return dispatch(op, dict(input=input), autocast=dtype is None,
                    check_cast=lambda input: _check_floating_input(op, input), kernels=kernels,
                    reference=lambda naive, input: naive(input, dim))


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
