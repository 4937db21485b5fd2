"""torch's Transformer layers on tritonprop's kernels: `TransformerEncoderLayer`, `TransformerDecoderLayer`,
`TransformerEncoder`, `TransformerDecoder` and `Transformer`, subclasses of torch's.

These hold no computation of their own: torch's forward runs, and its MultiheadAttention,
LayerNorm, Linear and Dropout are ours (each module converts its children when built, as
`ops.convert` does). Two things differ from torch's classes:

- **The activation.** torch stores ``activation='relu'`` or ``'gelu'`` as the function F.relu
  or F.gelu, which the layer calls; here it is tritonprop's `relu` or `gelu`. An activation given
  as a module (nn.ReLU(), nn.GELU()) is a child, converted with the rest; any other callable is
  kept as given.
- **torch's fast paths are off.** In eval mode, torch's encoder layer calls one fused native
  kernel (``torch._transformer_encoder_layer_fwd``) and its encoder packs padded batches into
  nested tensors, both without calling the submodules, so our kernels would silently not run.
  torch itself turns both off for a layer whose activation is not its own relu or gelu
  (``activation_relu_or_gelu = 0``, ``use_nested_tensor = False``); so do we.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from tritonprop.ops.activations import gelu, relu

# torch's activation functions (as its layers store them) -> ours.
_ACTIVATIONS = {F.relu: relu, F.gelu: gelu}
# The start of the warning torch's TransformerEncoder gives when its layer's fast path is off.
_NESTED_TENSOR_REFUSED = ("enable_nested_tensor is True, but self.use_nested_tensor is False because "
                          "encoder_layer.activation_relu_or_gelu was not True")


def _convert_children(module: torch.nn.Module) -> None:
    from tritonprop.ops.convert import convert  # convert's table lists the classes of this module

    for child in module.children():
        convert(child, strict=True)


class _TransformerLayer:
    """What the encoder and decoder layers share: our children and activation, no fused fast path."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _convert_children(self)
        self._finish_convert()

    def _finish_convert(self):
        """What construction does beyond torch's; `ops.convert` runs it on a converted torch layer."""
        self.activation = _ACTIVATIONS.get(self.activation, self.activation)
        # torch's encoder layer reads this at every forward: 0 sends it down the path that calls
        # the submodules. (The decoder layer has no fast path; the flag is harmless there.)
        self.activation_relu_or_gelu = 0


class TransformerEncoderLayer(_TransformerLayer, torch.nn.TransformerEncoderLayer):
    """Drop-in `torch.nn.TransformerEncoderLayer`, in train and eval mode alike on our kernels."""


class TransformerDecoderLayer(_TransformerLayer, torch.nn.TransformerDecoderLayer):
    """Drop-in `torch.nn.TransformerDecoderLayer` on our kernels."""


class TransformerEncoder(torch.nn.TransformerEncoder):
    """Drop-in `torch.nn.TransformerEncoder`: torch's stack of (deep-copied) layers, never packed into
    nested tensors. Give it a `TransformerEncoderLayer` of ours, or a torch one, which is converted."""

    def __init__(self, *args, **kwargs):
        with warnings.catch_warnings():
            # torch warns that enable_nested_tensor cannot be honoured for a layer of ours, whose
            # fast path is off by design. (Its other reasons still warn, as torch's class does.)
            warnings.filterwarnings("ignore", message=_NESTED_TENSOR_REFUSED)
            super().__init__(*args, **kwargs)
        _convert_children(self)
        self._finish_convert()

    def _finish_convert(self):
        """What construction does beyond torch's; `ops.convert` runs it on a converted torch encoder."""
        self.use_nested_tensor = False


class TransformerDecoder(torch.nn.TransformerDecoder):
    """Drop-in `torch.nn.TransformerDecoder` on our kernels."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _convert_children(self)


class Transformer(torch.nn.Transformer):
    """Drop-in `torch.nn.Transformer` (encoder, decoder and their norms) on our kernels."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _convert_children(self)
