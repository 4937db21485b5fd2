"""`convert(module)`: run an existing torch model on tritonprop's kernels, as
`torch.nn.SyncBatchNorm.convert_sync_batchnorm` runs one on SyncBatchNorm.

    model = torchvision.models.resnet18()
    model = ops.convert(model)              # Conv2d, BatchNorm2d, ReLU, Linear are now ours

Every module of ours subclasses the torch.nn class it replaces and adds no state of its own, so a
layer is converted in place: its class becomes ours, and it keeps its `__dict__`, so the very same
Parameter and buffer objects (an optimizer built before still trains it), its hooks, its device,
dtype, training flag and `state_dict` keys. A module held in two places is converted once, for
both. What our classes set beyond torch's constructor is a class default (Conv2d.activation =
None, BatchNorm.fuse_relu = False) or done by their `_finish_convert`, which convert runs too.

Which torch class each of ours replaces is not written down here: it is the torch.nn base class of
each module class that `tritonprop.ops` exports (see `SWAPS`).
"""
from __future__ import annotations

import inspect
import warnings

import torch

import tritonprop.ops as _ops


def _torch_base(cls: type) -> type | None:
    """The torch.nn class that our module class ``cls`` subclasses (its first such base)."""
    for base in cls.__mro__[1:]:
        if base.__module__.startswith("torch.nn."):
            return base
    return None


def _swaps() -> dict:
    table = {}
    for name in _ops.__all__:
        cls = getattr(_ops, name, None)  # (None for convert itself, which ops imports last)
        if inspect.isclass(cls) and issubclass(cls, torch.nn.Module):
            base = _torch_base(cls)
            if base is None or base in table:
                raise TypeError(f"tritonprop.ops.{name} must subclass exactly one torch.nn class of its own "
                                f"(found {base}, already {table.get(base)})")
            table[base] = cls
    return table


# torch.nn class -> the tritonprop.ops class that `convert` gives its instances.
SWAPS: dict = _swaps()
_OURS = tuple(SWAPS.values())


def _classes(argument: str, classes) -> tuple:
    """``include`` / ``exclude`` as a tuple of torch.nn classes that convert swaps (or () for None)."""
    if classes is None:
        return ()
    if inspect.isclass(classes):
        classes = (classes,)
    try:
        classes = tuple(classes)
    except TypeError:
        raise TypeError(f"convert: {argument} must be a module class or an iterable of them, "
                        f"not {type(classes).__name__}") from None
    for cls in classes:
        if not (inspect.isclass(cls) and issubclass(cls, torch.nn.Module)):
            raise TypeError(f"convert: {argument} must hold torch.nn.Module classes, got {cls!r}")
        if not any(issubclass(torch_class, cls) or issubclass(cls, torch_class) for torch_class in SWAPS):
            raise ValueError(f"convert: {argument} holds {cls.__module__}.{cls.__qualname__}, which convert never "
                             f"swaps; it swaps {', '.join(sorted(c.__name__ for c in SWAPS))}")
    return classes


def _walk(module: torch.nn.Module, prefix: str = ""):
    """(qualified name, module) for ``module`` and its descendants, each module once."""
    seen = set()

    def visit(name, m):
        if id(m) in seen:
            return
        seen.add(id(m))
        yield name, m
        if isinstance(m, torch.nn.MultiheadAttention):
            # Its out_proj only holds weights: the forward (torch's and ours) reads them directly and
            # never calls it.
            return
        for child_name, child in m.named_children():
            yield from visit(f"{name}.{child_name}" if name else child_name, child)

    yield from visit(prefix, module)


def _reason_kept(module: torch.nn.Module, ours: type | None) -> str | None:
    """Why a module of a class convert swaps stays torch's, or None if it can be converted."""
    if ours is None:
        base = next(c for c in SWAPS if isinstance(module, c))
        return (f"a subclass of torch.nn.{base.__name__} ({type(module).__module__}.{type(module).__qualname__}); "
                "its own forward is kept")
    check = getattr(ours, "_check_supported", None)
    if check is not None:
        try:
            check(module)
        except NotImplementedError as refusal:
            return str(refusal)
    return None


def convert(module: torch.nn.Module, *, strict: bool = False, include=None, exclude=None) -> torch.nn.Module:
    """Run ``module`` and every layer inside it that tritonprop implements on tritonprop's kernels.

    Each instance of a torch.nn class in `SWAPS` (Conv2d, BatchNorm1d/2d/3d, Linear, LayerNorm,
    MultiheadAttention, RNN, LSTM, GRU and their cells, ReLU, GELU, Dropout, CrossEntropyLoss,
    LogSoftmax, NLLLoss, and the Transformer layers) becomes the tritonprop.ops class of the same
    name, in place, keeping its parameters, buffers and hooks. Layers of other classes (pooling,
    embedding, ReLU6, ...) stay torch's, silently. A layer in a configuration we do not compute
    (padding_mode='reflect', add_bias_kv, proj_size, ...) and a subclass of a swapped class (whose
    own forward may differ) stay torch's too: ``strict=False`` warns once, listing each with its
    reason; ``strict=True`` raises NotImplementedError, before anything is converted.

    ``include`` converts only layers of these classes (e.g. ``include=[nn.Conv2d, nn.BatchNorm2d]``);
    ``exclude`` leaves layers of these classes as they are. Returns ``module`` (converted itself
    when it is such a layer), so ``model = ops.convert(model)`` reads as torch's converters do.
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"convert: module must be a torch.nn.Module, not {type(module).__name__}")
    if not isinstance(strict, bool):
        raise TypeError(f"convert: strict must be a bool, not {type(strict).__name__}")
    include, exclude = _classes("include", include), _classes("exclude", exclude)
    chosen, kept = [], []
    for name, m in _walk(module):
        if isinstance(m, _OURS) or not isinstance(m, tuple(SWAPS)):
            continue
        if (include and not isinstance(m, include)) or (exclude and isinstance(m, exclude)):
            continue
        ours = SWAPS.get(type(m))
        reason = _reason_kept(m, ours)
        if reason is None:
            chosen.append((m, ours))
        else:
            kept.append(f"  {name or '(the root)'} ({type(m).__name__}): {reason}")
    if kept and strict:
        raise NotImplementedError("convert(strict=True): these layers cannot run on tritonprop's kernels, and "
                                  "nothing was converted:\n" + "\n".join(kept))
    for m, ours in chosen:
        m.__class__ = ours
        finish = getattr(ours, "_finish_convert", None)
        if finish is not None:
            finish(m)
    if kept:
        warnings.warn("tritonprop.ops.convert: these layers stay torch's:\n" + "\n".join(kept), stacklevel=2)
    return module
