"""Argument checks shared by the ops. Every message starts with the op and names the argument."""
from __future__ import annotations

import numbers
import operator

import torch

from tritonprop.ops._library import in_functorch_transform

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_tensor(op: str, name: str, value) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")


def check_floating(op: str, name: str, tensor: torch.Tensor) -> None:
    if not tensor.is_floating_point():
        raise TypeError(f"{op}: {name} must be a floating-point tensor, got dtype {tensor.dtype}")


def check_numel(op: str, name: str, tensor: torch.Tensor, expected: int, what: str) -> None:
    if tensor.numel() != expected:
        raise RuntimeError(
            f"{op}: {name} should contain {expected} elements ({what}), not {tensor.numel()} (shape {tuple(tensor.shape)})"
        )


def check_param_dtype(op: str, name: str, param: torch.Tensor, input_dtype: torch.dtype) -> None:
    """Parameters match the input's dtype, or are float32 beside a float16/bfloat16 input (as torch allows).

    torch refuses any other parameter dtype, integer ones included, with a RuntimeError.
    """
    if not param.is_floating_point():
        raise RuntimeError(f"{op}: {name} must be a floating-point tensor, got dtype {param.dtype}")
    if param.dtype == input_dtype or (input_dtype in _LOW_PRECISION and param.dtype == torch.float32):
        return
    allowed = f"{input_dtype}" + (" or torch.float32" if input_dtype in _LOW_PRECISION else "")
    raise RuntimeError(f"{op}: {name} has dtype {param.dtype}, but input is {input_dtype}; expected {allowed}")


def check_same_dtype(op: str, input: torch.Tensor, named, message: str, error=RuntimeError) -> None:
    """Every (name, tensor) in `named` that is not None has input's dtype.

    `message` is torch's wording for the op, with ``{name}``, ``{input}`` (input's dtype) and
    ``{other}`` (the tensor's) to fill in; `error` is the type torch raises there.
    """
    for name, t in named:
        if t is not None and t.dtype != input.dtype:
            raise error(f"{op}: " + message.format(name=name, input=input.dtype, other=t.dtype))


def is_int_like(value) -> bool:
    """What torch's int arguments take: Python and numpy integers and integer 0-d tensors, not bool,
    float or None."""
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def real_number(op: str, name: str, value) -> float:
    """A float argument (eps, momentum) as torch parses one: any real number, or a one-element tensor."""
    if isinstance(value, numbers.Real) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        return float(value)
    raise TypeError(f"{op}: {name} must be a float, not {type(value).__name__}")


def check_probability(op: str, name: str, p) -> float:
    """A dropout probability: a real number in [0, 1] (NaN refused), as torch's dropout checks it."""
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"{op}: {name} must be a float in [0, 1], got {type(p).__name__}")
    if not 0.0 <= p <= 1.0:  # also false for NaN
        raise ValueError(f"{op}: {name} has to be between 0 and 1, but got {p}")
    return float(p)


def refuse_double_backward(op: str) -> None:
    """Call first thing in a backward that is not itself differentiable.

    Inside backward, grad mode is on exactly when the caller asked for a graph of the gradient
    (``create_graph=True``). Returning a gradient that silently does not depend on the inputs
    would drop a gradient penalty from the loss, so refuse instead, naming the op.
    """
    # Inside a torch.func transform grad mode is always on in backward; there the backward op's
    # own registered gradient raises instead, if and when it is differentiated.
    if torch.is_grad_enabled() and not in_functorch_transform():
        raise RuntimeError(
            f"{op}: double backward is not supported: the gradient of {op} cannot itself be differentiated "
            "(create_graph=True), as with FlashAttention. Use TRITONPROP_BACKEND=reference for a "
            "differentiable gradient of this op."
        )
