"""`import_torchvision()`: torchvision's model definitions, on a torch whose build torchvision's own
operators do not match.

PyPI's torchvision 0.28.0 (the release for torch 2.13) is built against CUDA torch. Beside the CPU
build of torch 2.13 its compiled extension does not load, and ``import torchvision`` then fails
while registering fake implementations for operators that do not exist ("operator
torchvision::nms does not exist"). The model builders (resnet, mobilenet, ...) use none of those
operators (nms, roi_align, deform_conv2d). So for the duration of the import only,
``torch.library.register_fake`` is made a no-op, and torchvision imports without its detection
operators. Where the extension does load, the import takes the normal path.

Import torchvision this way before anything else does: transformers, for one, imports it when it
is installed.
"""
from __future__ import annotations

import importlib
import sys


def import_torchvision():
    """The torchvision module; ImportError, naming the cause, when it is not installed or still fails."""
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    import torch

    try:
        return importlib.import_module("torchvision")
    except RuntimeError as error:
        if "does not exist" not in str(error):
            raise
        # The half-imported package must go before the second try.
        for name in [name for name in sys.modules if name == "torchvision" or name.startswith("torchvision.")]:
            del sys.modules[name]
    register_fake = torch.library.register_fake

    def skip_registration(op, func=None, /, **kwargs):
        # Used as a decorator (register_fake("torchvision::nms")) or called with the function.
        return (lambda f: f) if func is None else func

    torch.library.register_fake = skip_registration
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as error:
        raise ImportError(f"torchvision does not import beside torch {torch.__version__}: {error}") from error
    finally:
        torch.library.register_fake = register_fake
