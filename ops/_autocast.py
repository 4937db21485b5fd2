"""torch.autocast for custom ops: cast the arguments as torch casts them for its own op."""
from __future__ import annotations

import contextlib

import torch


def autocasting(device_type: str) -> bool:
    """Whether an autocast region is active for `device_type`; never for a device type that has no
    autocast (meta, whose tensors only carry shapes)."""
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


def autocast_off(device_type: str):
    """A context that turns autocast off for `device_type` where it is on (nothing otherwise)."""
    return torch.autocast(device_type, enabled=False) if autocasting(device_type) else contextlib.nullcontext()


def cast_to_lower_precision(device_type: str, tensors):
    """For ops on autocast's lower-precision list (conv2d, linear, ...): inside an autocast region,
    floating tensors are cast to the autocast dtype; outside one, nothing changes."""
    if not autocasting(device_type):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    # As torch: float64 tensors are not eligible for the cast and keep their dtype.
    eligible = (torch.float32, torch.float16, torch.bfloat16)
    return [t.to(dtype) if t is not None and t.dtype in eligible else t for t in tensors]


def cast_to_float32(device_type: str, tensors):
    """For ops on autocast's float32 list of this device type (nll_loss, cross_entropy, ...):
    inside an autocast region, float16/bfloat16 tensors are cast to float32 (float64 stays)."""
    if not autocasting(device_type):
        return tensors
    low = (torch.float16, torch.bfloat16)
    return [t.float() if isinstance(t, torch.Tensor) and t.dtype in low else t for t in tensors]


def cast_to_float32_on_cuda(device_type: str, tensors):
    """For ops on CUDA autocast's float32 list that CPU autocast leaves alone (layer_norm,
    log_softmax): cast as `cast_to_float32` on CUDA; on the CPU arguments keep their dtypes."""
    return cast_to_float32(device_type, tensors) if device_type == "cuda" else tensors
