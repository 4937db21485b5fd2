"""Backend selection: compiled Triton on CUDA, the Triton interpreter on CPU, or the naive references.

This module must stay importable without triton kernels having been decorated: `configure()`
runs from `tritonprop/__init__.py` before anything imports `tritonprop.kernels`, because Triton
reads ``TRITON_INTERPRET`` at the moment ``@triton.jit`` decorates a function.
"""
from __future__ import annotations

import os
import sys

import torch

from tritonprop import registry

BACKEND_ENV = "TRITONPROP_BACKEND"
BACKENDS = ("triton", "reference")


def configure() -> None:
    """Turn the interpreter on when there is no CUDA device, unless the user chose already."""
    if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
    if interpreting() and "triton.language" in sys.modules:
        _interpret_library_functions_decorated_early()


def _interpret_library_functions_decorated_early() -> None:
    """Let interpreted kernels call Triton's own library functions even if Triton came first.

    Triton decides at decoration time whether a function is interpreted. Its library functions
    (``tl.zeros``, ``tl.sum``, ``tl.rand``, ...) are decorated when ``triton.language`` is first
    imported, and torch._dynamo (imported by torchvision, transformers, ...) imports it before
    tritonprop can turn the interpreter on. Those functions are then compiled-mode JITFunctions,
    whose ``__call__`` only raises ("Cannot call @triton.jit'd outside of the scope of a
    kernel"). Here such a call runs the function as the interpreter would have: as an
    InterpretedFunction device call. The patch is made only when the interpreter is on and
    Triton's library was decorated in compiled mode; it turns that error into the call it meant.
    """
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    if not isinstance(tl.zeros, JITFunction) or getattr(JITFunction.__call__, "_tritonprop", False):
        return
    # Keyed by id: a JITFunction's own hash parses its source, which fails inside a kernel.
    interpreted: dict = {}

    def call_as_interpreted(self, *args, **kwargs):
        function = interpreted.get(id(self))
        if function is None:
            function = interpreted[id(self)] = InterpretedFunction(self.fn)
        return function(*args, **kwargs)

    call_as_interpreted._tritonprop = True
    JITFunction.__call__ = call_as_interpreted


def interpreting() -> bool:
    """True when kernels run under Triton's interpreter (decided once, at decoration time)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def selected() -> str:
    """The backend that ops dispatch to, read on every call so tests and users can switch it."""
    name = os.environ.get(BACKEND_ENV)
    if name is None:  # the usual case, answered before any string work: every op call asks
        return "triton"
    name = name.strip().lower() or "triton"
    if name not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV}={name!r} is not a backend; choose one of {', '.join(BACKENDS)}")
    return name


def use_reference() -> bool:
    return selected() == "reference"


def check_devices(op: str, **tensors) -> torch.device:
    """Check that every tensor given (None is skipped) sits on one device that the kernels can run on.

    Returns that device. The error names the op and the offending argument, so that a user never
    sees a crash from inside Triton instead.
    """
    device = None
    first = None
    for name, t in tensors.items():
        if t is None:
            continue
        if device is None:
            device, first = t.device, name
        elif t.device != device:
            raise RuntimeError(
                f"{op}: expected all tensors on one device, but {first} is on {device} and {name} is on {t.device}"
            )
    if device is None:
        raise ValueError(f"{op}: no tensor arguments")
    if device.type in ("cuda", "meta"):
        # A meta tensor carries no data: the op's fake implementation gives its outputs' shapes,
        # dtypes and strides, as torch's own ops do on meta tensors.
        return device
    if device.type == "cpu":
        if interpreting():
            return device
        raise RuntimeError(
            f"{op}: {first} is a CPU tensor, but tritonprop's Triton kernels are compiled for CUDA in this "
            f"process. Move the tensors to CUDA, or set {BACKEND_ENV}=reference (or TRITON_INTERPRET=1 "
            "before importing tritonprop) to run on the CPU."
        )
    raise RuntimeError(f"{op}: {first} is on {device}; tritonprop kernels run on CUDA, or on the CPU when interpreted")


def describe() -> dict:
    """What `tritonprop info` prints: versions, the device, and how each op will run."""
    import platform

    import numpy
    import triton

    cuda = torch.cuda.is_available()
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "numpy": numpy.__version__,
        "cuda_available": cuda,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "triton_interpret": interpreting(),
        "backend": selected(),
    }
    if selected() == "reference":
        mode = "reference (naive autograd)"
    elif interpreting():
        mode = "interpreted (Triton interpreter, CPU or CUDA tensors)"
    else:
        mode = "compiled (CUDA tensors only)"
    # Every op of the registry (tritonprop/registry.py), in its order.
    info["ops"] = {op: mode for op in registry.OPS}
    if selected() != "reference":
        from tritonprop.kernels import recurrence

        info["recurrence"] = recurrence.describe()
    return info
