"""Argument checks shared by the ops. Every message starts with the op and names the argument."""
from __future__ import annotations

import torch

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
    """Parameters match the input's dtype, or are float32 beside a float16/bfloat16 input (as torch allows)."""
    check_floating(op, name, param)
    if param.dtype == input_dtype or (input_dtype in _LOW_PRECISION and param.dtype == torch.float32):
        return
    allowed = f"{input_dtype}" + (" or torch.float32" if input_dtype in _LOW_PRECISION else "")
    raise TypeError(f"{op}: {name} has dtype {param.dtype}, but input is {input_dtype}; expected {allowed}")
