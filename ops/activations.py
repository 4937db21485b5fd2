"""ReLU and GELU: the custom ops with their autograd, `relu` and `gelu` with F.relu's and F.gelu's signatures,
and the modules `ReLU` and `GELU` (subclasses of torch's).

Neither op is on an autocast cast list, so both run in their input's dtype inside an autocast
region, as torch's do.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from tritonprop.kernels import elementwise as K
from tritonprop.ops import _checks
from tritonprop.ops._library import call, differentiable, dispatch, kernel_op, not_differentiable

GELU_APPROXIMATIONS = {"none": "gelu", "tanh": "gelu_tanh"}
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_TANH_CUBIC = 0.044715


def activation_grad(dy: torch.Tensor, z: torch.Tensor, activation: str) -> torch.Tensor:
    """``dy * act'(z)`` for act in 'relu', 'gelu', 'gelu_tanh', written in torch ops.

    The kernels compute this product in their backward epilogues; this form is for a backward that
    must itself be differentiable (``create_graph=True``): every op here has a derivative, so the
    result is differentiable to any order in both ``dy`` and the pre-activation ``z``.
    """
    if activation == "relu":
        # torch's own ReLU backward: a select (0 where z <= 0, so an infinite dy there gives 0,
        # not nan; dy elsewhere, a NaN z included) whose derivative in z is zero, not absent, so
        # the result requires grad when z does, as torch's does. z may also be the output relu(z).
        return torch.ops.aten.threshold_backward(dy, z, 0.0)
    # 16-bit inputs are differentiated in float32 and rounded once, as torch's gelu_backward does.
    compute = torch.float32 if z.dtype in (torch.float16, torch.bfloat16) else z.dtype
    z = z.to(compute)
    if activation == "gelu":
        cdf = 0.5 * (1.0 + torch.erf(z * (1.0 / math.sqrt(2.0))))
        pdf = torch.exp(-0.5 * z * z) * (1.0 / math.sqrt(2.0 * math.pi))
        slope = cdf + z * pdf
    elif activation == "gelu_tanh":
        # With u = sqrt(2/pi) (z + 0.044715 z^3): 0.5 (1 + tanh u) = sigmoid(2u) and
        # 1 - tanh(u)^2 = 4 sigmoid(2u) sigmoid(-2u). Written so, neither 1 + tanh nor 1 - tanh^2
        # cancels where |z| is a few units, and the derivatives autograd takes of this slope stay
        # as accurate as torch's own double backward in float32 (10x better than the tanh form).
        two_u = 2.0 * _SQRT_2_OVER_PI * (z + _GELU_TANH_CUBIC * z * z * z)
        two_du = 2.0 * _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_TANH_CUBIC * z * z)
        sigmoid_plus, sigmoid_minus = torch.sigmoid(two_u), torch.sigmoid(-two_u)
        slope = sigmoid_plus + z * (sigmoid_plus * sigmoid_minus) * two_du
    else:
        raise ValueError(f"activation_grad: unknown activation {activation!r}")
    return (dy.to(compute) * slope).to(dy.dtype)


@kernel_op("activation")
def activation_op(input: Tensor, activation: str) -> Tensor:
    """act(input) for 'relu', 'gelu' or 'gelu_tanh', in a new tensor laid out like input."""
    return K.forward(input, activation)


@kernel_op("activation_backward")
def activation_backward_op(dy: Tensor, saved: Tensor, activation: str) -> Tensor:
    """dy * act'(.), from the forward's output for 'relu' and its input for the GELUs."""
    return K.backward(dy, saved, activation)


def _setup_context(ctx, inputs, output):
    input, activation = inputs
    # ReLU's backward needs only where the output is positive, so it keeps y (as torch does);
    # the GELUs need x.
    ctx.save_for_backward(output if activation == "relu" else input)
    ctx.activation = activation


def _backward(ctx, dy):
    saved, = ctx.saved_tensors
    if torch.is_grad_enabled():
        # A graph of the gradient is asked for: the same product in differentiable torch ops. The
        # GELUs' saved x carries the graph; ReLU's saved y has the mask of x, which has no derivative.
        return activation_grad(dy, saved, ctx.activation), None
    return call(activation_backward_op, dy, saved, ctx.activation), None


differentiable(activation_op, setup_context=_setup_context, backward=_backward)
not_differentiable(activation_backward_op, explanation="the kernel's gradient is not differentiable; a graph of "
                   "an activation's gradient is built from differentiable ops instead")


def apply_activation(input: Tensor, activation: str, inplace: bool) -> Tensor:
    """act(input), or, with ``inplace``, input overwritten by it and returned (as torch's in-place ops).

    The op is functional (torch.library cannot register autograd for an op that writes its
    input), so the in-place form computes out of place and copies: autograd records the copy, and
    torch.compile may fuse it back into an in-place write.
    """
    output = call(activation_op, input, activation)
    if not inplace:
        return output
    return input.copy_(output)


def check_in_place_target(op: str, input: torch.Tensor) -> None:
    """torch's checks before writing into `input`, made before the kernel runs, with messages that
    name the op. The final ``copy_`` would refuse the same inputs; a compiled graph leaves the
    autograd checks to it (dynamo cannot trace ``_is_view``)."""
    if torch.is_grad_enabled() and input.requires_grad and not torch.compiler.is_compiling():
        if input.is_leaf:
            raise RuntimeError(f"{op}: a leaf Variable that requires grad is being used in an in-place operation.")
        if input._is_view() and input._base.is_leaf:
            raise RuntimeError(f"{op}: a view of a leaf Variable that requires grad is being used in an in-place "
                               "operation.")
    if K.has_internal_overlap(input):
        raise RuntimeError(
            f"{op}: unsupported operation: more than one element of the written-to tensor (input, shape "
            f"{tuple(input.shape)}, strides {input.stride()}) refers to a single memory location. Please "
            "clone() the tensor before performing the operation."
        )


def _check_input(op: str, input) -> None:
    _checks.check_tensor(op, "input", input)
    if op == "relu" and input.dtype == torch.bool:
        # torch's relu refuses bool with a RuntimeError (its gelu, like every other dtype
        # below, with a NotImplementedError).
        raise RuntimeError(f"{op}: Boolean inputs not supported for relu (input has dtype torch.bool)")
    if not input.is_floating_point():
        # torch's relu also takes integer tensors; these kernels compute in floating point only.
        raise NotImplementedError(f"{op}: input of dtype {input.dtype} is not supported; tritonprop's "
                                  f"{op} takes floating-point tensors")


def relu(input, inplace=False):
    """`torch.nn.functional.relu`, computed by a Triton kernel; ``inplace=True`` overwrites input."""
    _check_input("relu", input)
    inplace = bool(inplace)

    def kernels(input):
        if inplace:
            check_in_place_target("relu", input)
        return apply_activation(input, "relu", inplace)

    return dispatch("relu", dict(input=input), kernels=kernels,
                    reference=lambda naive, input: naive(input, inplace))


def gelu(input, approximate="none"):
    """`torch.nn.functional.gelu`, computed by a Triton kernel; `approximate` is 'none' or 'tanh'."""
    if not isinstance(approximate, str):
        raise TypeError(f"gelu: approximate must be a str, 'none' or 'tanh', not {type(approximate).__name__}")
    if approximate not in GELU_APPROXIMATIONS:
        # The same error, and type, as torch.nn.functional.gelu.
        raise RuntimeError(f"gelu: approximate argument must be either none or tanh, got {approximate!r}")
    _check_input("gelu", input)
    return dispatch("gelu", dict(input=input),
                    kernels=lambda input: apply_activation(input, GELU_APPROXIMATIONS[approximate], False),
                    reference=lambda naive, input: naive(input, approximate))


class ReLU(torch.nn.ReLU):
    """Drop-in `torch.nn.ReLU` (``inplace=True`` included)."""

    def forward(self, input):
        return relu(input, inplace=self.inplace)


class GELU(torch.nn.GELU):
    """Drop-in `torch.nn.GELU`, exact or with ``approximate='tanh'``."""

    def forward(self, input):
        return gelu(input, approximate=self.approximate)
