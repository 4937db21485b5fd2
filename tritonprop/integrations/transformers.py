"""Hugging Face transformers models on tritonprop's fused attention kernels.

    from tritonprop.integrations import transformers as tritonprop_transformers
    model = AutoModel.from_pretrained(path, attn_implementation=tritonprop_transformers.register())
    tritonprop.ops.convert(model)   # its Linear, LayerNorm and Dropout layers on our kernels too

Why a hook: a transformers attention layer does not hold its attention as a module. It looks up
a function by the name in ``config._attn_implementation`` ("sdpa" calls
F.scaled_dot_product_attention) and calls it, so `ops.convert`, which swaps modules, never sees
it. `register()` adds `attention_forward` to transformers' `AttentionInterface` under the name
"tritonprop", and, under the same name, the mask builder that "sdpa" uses to
`AttentionMaskInterface`. Without the latter, transformers builds no mask at all for a name it
does not know, and padding would be attended to.

`attention_forward` computes what transformers' ``sdpa_attention_forward`` computes, with
`tritonprop.ops.scaled_dot_product_attention` in place of torch's:
  * q, k, v arrive as (batch, heads, seq, head_dim); the output goes back as (batch, seq, heads,
    head_dim), contiguous, with None for the attention weights.
  * attention_mask is the 4-D mask of ``sdpa_mask``: bool, True where a query may attend,
    (batch, 1, q_len, kv_len), or None; a 4-D float (additive) mask a user passes goes through
    as is. The model builds padding, sliding windows and (in causal models) packed sequences into
    it, so the arguments that describe those (``sliding_window``, ``cu_seq_lens_*``,
    ``position_ids``, ...) are not read again, as sdpa does not read them.
  * is_causal (else ``module.is_causal``, else True) holds only without a mask and with more than
    one query; the kernels' causal mask is top-left aligned, as torch's is.
  * grouped-query attention (``module.num_key_value_groups`` > 1) runs as enable_gqa: the
    kernels map each query head to its key/value head, without sdpa's repeat_kv copies.
  * ``dropout`` is the probability itself (the model passes 0 in eval mode); ``scaling`` None
    means 1/sqrt(head_dim); ``position_bias`` becomes an additive mask, as sdpa builds it.
What sdpa would also accept but this function cannot compute raises NotImplementedError naming
it: output_attentions=True (the fused kernels never form the weights), softcap, attention sinks
(s_aux, sinks), and any argument not known to leave the attention unchanged.
"""
from __future__ import annotations

import importlib.util

import torch

from tritonprop import ops
from tritonprop.torchvision_import import import_torchvision

# transformers imports torchvision when it is installed, which fails beside a CPU build of torch
# unless it was imported through import_torchvision first.
if importlib.util.find_spec("torchvision") is not None:
    import_torchvision()

from transformers import AttentionInterface  # noqa: E402
from transformers.integrations.sdpa_attention import create_position_bias_mask  # noqa: E402
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask  # noqa: E402

NAME = "tritonprop"
WHO = f"{NAME} attention for transformers"

# Arguments transformers passes to every attention function that this one has no use for: the
# mask already encodes sliding windows and packed sequences, and the rest serve other layers, the
# loss or the varlen flash kernels (sdpa ignores all of them too).
IGNORED_ARGUMENTS = frozenset({
    "sliding_window", "position_ids", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx",
    "num_items_in_batch", "output_hidden_states", "output_router_logits", "use_cache",
})
# Arguments that change what attention computes, and what they are, for the error.
UNSUPPORTED_ARGUMENTS = {
    "softcap": "softcap (tanh-capped attention scores)",
    "s_aux": "attention sinks (s_aux)",
    "sinks": "attention sinks (sinks)",
}


def _refuse_unsupported(kwargs: dict) -> None:
    if kwargs.get("output_attentions"):
        raise NotImplementedError(f"{WHO}: output_attentions=True is not implemented: the fused kernels never form "
                                  "the attention weights (attn_implementation='eager' returns them)")
    for name, feature in UNSUPPORTED_ARGUMENTS.items():
        if kwargs.get(name) is not None:
            raise NotImplementedError(f"{WHO}: {feature} is not implemented")
    unknown = sorted(name for name, value in kwargs.items() if value is not None
                     and name not in IGNORED_ARGUMENTS and name not in UNSUPPORTED_ARGUMENTS
                     and name != "output_attentions")
    if unknown:
        raise NotImplementedError(f"{WHO}: argument(s) {', '.join(unknown)} not implemented (not known to leave "
                                  "the attention unchanged)")


def _check_inputs(query, key, value, attention_mask) -> None:
    for name, tensor in (("query", query), ("key", key), ("value", value)):
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 4:
            got = f"{tensor.dim()}-D tensor" if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"{WHO}: {name} must be a 4-D tensor (batch, heads, seq, head_dim), got {got}")
    if attention_mask is not None and not isinstance(attention_mask, torch.Tensor):
        # e.g. flex attention's BlockMask, which only flex attention reads.
        raise TypeError(f"{WHO}: attention_mask must be a torch.Tensor or None, got {type(attention_mask).__name__}")


def attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                      is_causal: bool | None = None, position_bias: torch.Tensor | None = None,
                      **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract (that of ``sdpa_attention_forward``), on tritonprop's kernels."""
    _refuse_unsupported(kwargs)
    _check_inputs(query, key, value, attention_mask)
    q_length = query.shape[2]
    enable_gqa = getattr(module, "num_key_value_groups", 1) > 1
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    is_causal = q_length > 1 and attention_mask is None and is_causal
    if is_causal and key.shape[2] > q_length:
        # Prefill into an empty static cache: with top-left causal alignment no query sees a key
        # past q_length, so those keys are dropped instead of computed and masked.
        key, value = key[:, :, :q_length], value[:, :, :q_length]
        if position_bias is not None:
            position_bias = position_bias[..., :q_length]
    if position_bias is not None:
        attention_mask = create_position_bias_mask(position_bias, attention_mask, is_causal, query, key)
        is_causal = False
    output = ops.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                              is_causal=is_causal, scale=scaling, enable_gqa=enable_gqa)
    return output.transpose(1, 2).contiguous(), None


def register() -> str:
    """Make ``attn_implementation="tritonprop"`` available to every transformers model; returns that name.

    Registering again changes nothing.
    """
    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME
