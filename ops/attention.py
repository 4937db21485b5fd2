"""Fused attention: the custom ops with their autograd, `scaled_dot_product_attention` with F.sdpa's
signature, and `MultiheadAttention` (a subclass of torch's).

What follows torch, and where it stops:
  * q/k/v may be any strided views (slices of a fused QKV projection): the kernels read them in
    place. Leading dims beyond (B, H) are flattened with `reshape`, a copy only when they do not
    merge.
  * attn_mask: bool (True = may attend) or additive (float32 or the query's dtype), broadcast to
    (..., Hq, Sq, Sk) with stride 0 on broadcast dims, so a (B, 1, 1, Sk) key-padding mask is never
    materialised. An additive mask that requires grad gets its gradient dS, which the backward
    builds as a dense (B, Hq, Sq, Sk) buffer (one extra attention-matrix of memory) and sums over
    the broadcast dims.
  * is_causal is top-left aligned (torch's tril(ones(Sq, Sk))). With an attn_mask as well, both
    apply, as torch's fused CPU kernel computes; torch's math backend (and its documentation)
    refuse the pair instead, so torch's answer depends on the backend it picks.
  * A query row that sees no key outputs 0 with zero gradients, as torch's math backend does.
  * The leading (batch and head) dims of q, k and v broadcast as in torch's math backend (a 3-D
    query against 4-D key and value, a batch of 1, one key/value head): expanded views with
    stride 0, read in place; autograd sums the gradients over the broadcast dims.
  * dropout_p > 0 draws a seed from torch's generator (reproducible under torch.manual_seed); the
    mask is Triton's Philox, not torch's, and is regenerated in the backward, never stored. As in
    torch, p > 1 is refused and p <= 0 (or nan) means no dropout.
  * Double backward is refused (an error naming the op), as with FlashAttention.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

import torch
from torch import Tensor

from tritonprop import backend
from tritonprop.kernels import attention as K
from tritonprop.ops import _checks
from tritonprop.ops._autocast import autocast_off
from tritonprop.ops._library import absent, call, differentiable, dispatch, kernel_op, not_differentiable
from tritonprop.ops.dropout import dropout
from tritonprop.ops.linear import linear
from tritonprop.ops.reference import attention as reference

OP = "scaled_dot_product_attention"
MHA = "MultiheadAttention"


@kernel_op("attention")
def attention_op(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], is_causal: bool, scale: float,
                 dropout_p: float, seed: Tensor, out_order: list[int]) -> tuple[Tensor, Tensor]:
    """(o, lse) for 4-D q (B, Hq, Sq, D), k (B, Hkv, Sk, D), v (B, Hkv, Sk, Dv); lse is kept for the backward."""
    return K.forward(q, k, v, mask, is_causal, scale, dropout_p, seed, tuple(out_order))


@kernel_op("attention_backward")
def attention_backward_op(do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, mask: Optional[Tensor],
                          is_causal: bool, scale: float, dropout_p: float, seed: Tensor, needs: list[bool]
                          ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(dq, dk, dv, dmask); ``needs`` is (q, k and v, mask), and what was not asked for is `absent`."""
    grads = K.backward(do, q, k, v, o, lse, mask, is_causal, scale, dropout_p, seed, need_q=needs[0],
                       need_kv=needs[1], need_mask=needs[2])
    return tuple(g if g is not None else absent(q) for g in grads)


def _setup_context(ctx, inputs, output):
    q, k, v, mask, is_causal, scale, dropout_p, seed, out_order = inputs
    o, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(q, k, v, o, lse, mask, seed)
    ctx.options = (is_causal, scale, dropout_p)


def _backward(ctx, do, _dlse):
    if do is None:  # o did not reach the loss (grads are not materialized)
        return (None,) * 9
    _checks.refuse_double_backward(OP)
    q, k, v, o, lse, mask, seed = ctx.saved_tensors
    need_q, need_k, need_v, need_mask = ctx.needs_input_grad[:4]
    needs = [need_q, need_k or need_v, need_mask]
    dq, dk, dv, dmask = call(attention_backward_op, do, q, k, v, o, lse, mask, *ctx.options, seed, needs)
    return (dq if need_q else None, dk if need_k else None, dv if need_v else None,
            dmask.to(mask.dtype) if need_mask else None, None, None, None, None, None)


differentiable(attention_op, setup_context=_setup_context, backward=_backward)
not_differentiable(attention_backward_op, explanation="double backward is not supported: the gradient of "
                   "scaled_dot_product_attention cannot itself be differentiated, as with FlashAttention")


def _attention(q, k, v, mask, dropout_p, is_causal, scale, out_order=(0, 1, 2, 3)):
    """The attention op on validated 4-D tensors; `mask` broadcastable to (B, Hq, Sq, Sk) or None.

    dropout_p <= 0 (or nan) means no dropout, as in torch, which drops only when p > 0.
    """
    B, Hq, Sq, D = q.shape
    Sk = k.shape[2]
    if mask is not None:
        # stride 0 on broadcast dims: the kernels read the mask in place.
        mask = mask.expand(B, Hq, Sq, Sk)
    dropout_p = float(dropout_p) if dropout_p > 0 else 0.0
    seed = reference.draw_seed(q.device) if dropout_p > 0 else torch.zeros(1, dtype=torch.int64, device=q.device)
    if D == 0:
        # An empty dot product is 0 whatever the scale: torch's 1 / sqrt(0) meets an empty matmul
        # and every score is 0 (uniform attention), which scale 0 reproduces without an inf.
        scale = 0.0
    else:
        scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    with autocast_off(q.device.type):
        return call(attention_op, q, k, v, mask, bool(is_causal), scale, dropout_p, seed, list(out_order))[0]


def _check_dropout_p(op, dropout_p):
    """torch's SDPA takes any real p, rejects p > 1 and drops nothing unless p > 0."""
    if not isinstance(dropout_p, numbers.Real):
        raise TypeError(f"{op}: dropout_p must be a float, got {type(dropout_p).__name__}")
    if dropout_p > 1.0:
        raise RuntimeError(f"{op}: dropout probability has to be between 0 and 1, but got {dropout_p}")


def _check_scale(scale):
    # torch reads scale as a Python float: any real number, or a one-element tensor converted by value.
    if scale is None or isinstance(scale, numbers.Real):
        return scale
    if isinstance(scale, torch.Tensor) and scale.numel() == 1:
        return float(scale)
    raise TypeError(f"{OP}: scale must be a float or None, got {type(scale).__name__}")


def _broadcast(query, key, value, enable_gqa):
    """q, k, v expanded (stride 0, no copy) to common leading dims, as torch's math backend broadcasts them.

    With enable_gqa, key and value heads must divide the query's. When both have the same count,
    the kernels map query head h to key/value head h // G without a copy; when they differ, the
    one unlike the query's is repeated (a copy), as torch's repeat_interleave does.
    """
    grouped = False
    if enable_gqa and min(query.dim(), key.dim(), value.dim()) >= 3:
        heads_q, heads_k, heads_v = query.shape[-3], key.shape[-3], value.shape[-3]
        for heads in (heads_k, heads_v):
            if heads != heads_q and (heads == 0 or heads_q % heads):
                raise RuntimeError(f"{OP}: number of heads in key and value ({heads_k} and {heads_v}) must divide "
                                   f"the number of heads in query ({heads_q}) with enable_gqa=True")
        grouped = heads_k == heads_v != heads_q
        if heads_k != heads_v:
            key, value = (t if t.shape[-3] == heads_q else t.repeat_interleave(heads_q // t.shape[-3], dim=-3)
                          for t in (key, value))
    try:
        if grouped:
            batch = _broadcast_shapes(query.shape[:-3], key.shape[:-3], value.shape[:-3])
            lead_q, lead_kv = (*batch, query.shape[-3]), (*batch, key.shape[-3])
        else:
            lead_q = lead_kv = _broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    except RuntimeError:
        raise RuntimeError(f"{OP}: the leading (batch and head) dims of query {list(query.shape[:-2])}, key "
                           f"{list(key.shape[:-2])} and value {list(value.shape[:-2])} do not broadcast") from None
    return (_expand(query, (*lead_q, *query.shape[-2:])), _expand(key, (*lead_kv, *key.shape[-2:])),
            _expand(value, (*lead_kv, *value.shape[-2:])))


def _broadcast_shapes(*shapes):
    """torch.broadcast_shapes, answered at once when the shapes are equal (the usual q, k, v):
    torch's is Python that costs 10 to 30 us a call."""
    if all(shape == shapes[0] for shape in shapes[1:]):
        return shapes[0]
    return torch.broadcast_shapes(*shapes)


def _expand(t, shape):
    """t.expand(shape), or t itself when it has that shape already (an expand is a call into torch)."""
    return t if t.shape == shape else t.expand(shape)


def _validate(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa):
    for name, t in (("query", query), ("key", key), ("value", value)):
        _checks.check_tensor(OP, name, t)
    for name, flag in (("is_causal", is_causal), ("enable_gqa", enable_gqa)):
        if not isinstance(flag, bool):
            raise TypeError(f"{OP}: {name} must be a bool, got {type(flag).__name__}")
    if min(query.dim(), key.dim(), value.dim()) < 2:
        raise RuntimeError(f"{OP}: expected query, key, and value to all be at least 2 dimensional, but got "
                           f"query.dim: {query.dim()} key.dim: {key.dim()} and value.dim: {value.dim()} instead.")
    if not query.dtype == key.dtype == value.dtype:
        raise RuntimeError(f"{OP}: expected query, key, and value to have the same dtype, but got query.dtype: "
                           f"{query.dtype} key.dtype: {key.dtype} and value.dtype: {value.dtype} instead.")
    if not query.is_floating_point():
        # torch's matmul has no integer kernel here and raises RuntimeError.
        raise RuntimeError(f"{OP}: query, key and value must be floating-point tensors, got {query.dtype}")
    if key.shape[-1] != query.shape[-1]:
        raise RuntimeError(f"{OP}: key's head dim ({key.shape[-1]}) must equal query's ({query.shape[-1]})")
    if value.shape[-2] != key.shape[-2]:
        raise RuntimeError(f"{OP}: value's sequence length ({value.shape[-2]}) must equal key's ({key.shape[-2]})")
    _check_dropout_p(OP, dropout_p)
    scale = _check_scale(scale)
    if attn_mask is not None:
        _checks.check_tensor(OP, "attn_mask", attn_mask)
        if attn_mask.dtype != torch.bool and attn_mask.dtype not in (torch.float32, query.dtype):
            raise RuntimeError(f"{OP}: expected attn_mask dtype to be bool or float or to match query dtype, but got "
                               f"attn_mask.dtype: {attn_mask.dtype} and query.dtype: {query.dtype} instead.")
    return scale


def _check_mask_shape(attn_mask, scores):
    # The mask broadcasts to the scores' shape exactly when each of its dims, aligned from the
    # right, is 1 or the scores' own (what torch.broadcast_shapes(mask, scores) == scores says).
    shape = attn_mask.shape
    broadcasts = len(shape) <= len(scores) and all(
        size in (1, full) for size, full in zip(shape, scores[len(scores) - len(shape):]))
    if not broadcasts:
        raise RuntimeError(f"{OP}: attn_mask of shape {list(attn_mask.shape)} does not broadcast to the "
                           f"attention scores' shape {list(scores)} (..., heads, Sq, Sk)")


def _as_4d(t: torch.Tensor) -> torch.Tensor:
    """(..., H, S, E) -> (B, H, S, E): leading dims merged (a view when their strides allow)."""
    if t.dim() == 2:
        return t[None, None]
    if t.dim() == 3:
        return t.unsqueeze(0)
    if t.dim() == 4:
        return t  # already (B, H, S, E)
    return t.reshape(math.prod(t.shape[:-3]), *t.shape[-3:])


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """`torch.nn.functional.scaled_dot_product_attention`, computed by fused Triton kernels."""
    scale = _validate(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)

    def kernels(query, key, value, attn_mask):
        query, key, value = _broadcast(query, key, value, enable_gqa)
        scores = (*query.shape[:-1], key.shape[-2])
        mask = None
        if attn_mask is not None:
            _check_mask_shape(attn_mask, scores)
            # Expanded first, so that merging the leading dims is a view for every mask of <= 4 dims.
            mask = _as_4d(attn_mask.expand(scores))
        out = _attention(_as_4d(query), _as_4d(key), _as_4d(value), mask, dropout_p, is_causal, scale)
        return out.reshape(*query.shape[:-1], value.shape[-1])

    return dispatch(OP, dict(query=query, key=key, value=value, attn_mask=attn_mask), kernels=kernels,
                    reference=lambda naive, **tensors: naive(**tensors, dropout_p=dropout_p, is_causal=is_causal,
                                                             scale=scale, enable_gqa=enable_gqa))


# ----------------------------------------------------------------------------------------------
# MultiheadAttention
# ----------------------------------------------------------------------------------------------


def _heads(t: torch.Tensor, num_heads: int, parts: int):
    """(B, L, parts * E) -> `parts` views (B, H, L, E / H): a packed projection split without copies."""
    B, L, width = t.shape
    split = t.view(B, L, parts, num_heads, width // (parts * num_heads))
    return [split[:, :, i].transpose(1, 2) for i in range(parts)]


def _additive(mask: torch.Tensor, dtype) -> torch.Tensor:
    """torch's canonical form of an MHA mask: bool (True = masked out) -> 0 / -inf."""
    if mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))


def _merge_masks(key_padding_mask, attn_mask, batch, num_heads, tgt_len, src_len, dtype):
    """One SDPA-style mask (bool True = may attend, or additive) broadcastable to (B, H, L, S).

    MHA's bool masks mean the opposite of SDPA's (True = masked out). Two bool masks combine into
    one bool mask; otherwise both take torch's additive form and add, as
    F.multi_head_attention_forward does.
    """
    masks = []
    if attn_mask is not None:
        masks.append(attn_mask.view(batch, num_heads, tgt_len, src_len) if attn_mask.dim() == 3 else attn_mask)
    if key_padding_mask is not None:
        masks.append(key_padding_mask.view(batch, 1, 1, src_len))
    if not masks:
        return None
    if all(m.dtype == torch.bool for m in masks):
        allowed = ~masks[0]
        for m in masks[1:]:
            allowed = allowed & ~m
        return allowed
    total = _additive(masks[0], dtype)
    for m in masks[1:]:
        total = total + _additive(m, dtype)
    return total


class MultiheadAttention(torch.nn.MultiheadAttention):
    """Drop-in `torch.nn.MultiheadAttention` on the fused attention kernels (projections on tritonprop's linear).

    need_weights=False runs the fused kernels. need_weights=True (torch's default) must return
    the (B, [H,] L, S) attention weights, which the fused kernels never form; that path computes
    them explicitly, softmax(q k^T * scale + mask) as ops/reference/attention.py does, and costs
    the memory of the whole attention matrix. is_causal=True is a hint that attn_mask is the causal
    mask, as in torch: the kernels' own causal masking is used instead of reading attn_mask.
    add_bias_kv and add_zero_attn are not implemented.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False, add_zero_attn=False,
                 kdim=None, vdim=None, batch_first=False, device=None, dtype=None):
        super().__init__(embed_dim, num_heads, dropout, bias, add_bias_kv, add_zero_attn, kdim, vdim, batch_first,
                         device=device, dtype=dtype)
        self._check_supported()

    def _check_supported(self):
        """NotImplementedError for a configuration these kernels do not compute (`ops.convert` then
        leaves a torch.nn.MultiheadAttention as it is, with this message as the reason)."""
        for name, value in (("add_bias_kv", self.bias_k is not None), ("add_zero_attn", self.add_zero_attn)):
            if value:
                raise NotImplementedError(f"tritonprop {MHA}: {name}=True is not implemented")

    def _project(self, query, key, value):
        """q, k, v as (B, H, L, E / H) views of the projections (one packed matmul for self-attention)."""
        E, H = self.embed_dim, self.num_heads
        if not self._qkv_same_embed_dim:
            b_q, b_k, b_v = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
            return (_heads(linear(query, self.q_proj_weight, b_q), H, 1)[0],
                    _heads(linear(key, self.k_proj_weight, b_k), H, 1)[0],
                    _heads(linear(value, self.v_proj_weight, b_v), H, 1)[0])
        w, b = self.in_proj_weight, self.in_proj_bias
        bias = (lambda lo, hi: None) if b is None else (lambda lo, hi: b[lo:hi])
        if query is key and key is value:
            return tuple(_heads(linear(query, w, b), H, 3))
        q = _heads(linear(query, w[:E], bias(0, E)), H, 1)[0]
        if key is value:
            k, v = _heads(linear(key, w[E:], bias(E, 3 * E)), H, 2)
            return q, k, v
        return (q, _heads(linear(key, w[E:2 * E], bias(E, 2 * E)), H, 1)[0],
                _heads(linear(value, w[2 * E:], bias(2 * E, 3 * E)), H, 1)[0])

    def _check_shapes(self, query, key, value, key_padding_mask, attn_mask):
        """torch's own checks of F.multi_head_attention_forward, on the caller's layout, with its types:
        AssertionError for ranks, dtypes of masks, embedding sizes and key/value agreement."""
        if query.dim() not in (2, 3):
            raise AssertionError(f"{MHA}: query should be unbatched 2D or batched 3D tensor but received "
                                 f"{query.dim()}-D query tensor")
        batched = query.dim() == 3
        if key.dim() != query.dim() or value.dim() != query.dim():
            raise AssertionError(f"{MHA}: for {query.dim()}-D query, expected key and value to be {query.dim()}-D "
                                 f"but found {key.dim()}-D and {value.dim()}-D tensors respectively")
        for name, mask in (("key_padding_mask", key_padding_mask), ("attn_mask", attn_mask)):
            if mask is None:
                continue
            _checks.check_tensor(MHA, name, mask)
            if mask.dtype != torch.bool and not mask.is_floating_point():
                raise AssertionError(f"{MHA}: only bool and floating types of {name} are supported, got {mask.dtype}")
        if key_padding_mask is not None and key_padding_mask.dim() != (2 if batched else 1):
            raise AssertionError(f"{MHA}: for {query.dim()}-D query, expected key_padding_mask to be None or "
                                 f"{2 if batched else 1}-D but found {key_padding_mask.dim()}-D tensor instead")
        if attn_mask is not None and attn_mask.dim() not in (2, 3):
            raise AssertionError(f"{MHA}: expected attn_mask to be None, 2-D or 3-D but found {attn_mask.dim()}-D "
                                 "tensor instead")
        if query.shape[-1] != self.embed_dim:
            raise AssertionError(f"{MHA}: was expecting embedding dimension of {self.embed_dim} (embed_dim), but "
                                 f"query has {query.shape[-1]}")
        if self._qkv_same_embed_dim:
            if key.shape != value.shape:
                raise AssertionError(f"{MHA}: key shape {list(key.shape)} does not match value shape "
                                     f"{list(value.shape)}")
            if key.shape[-1] != self.embed_dim:
                # torch's packed projection fails in its matmul here.
                raise RuntimeError(f"{MHA}: key and value must have embed_dim ({self.embed_dim}) features, got "
                                   f"{key.shape[-1]}")
        else:
            if key.shape[:-1] != value.shape[:-1]:
                raise AssertionError(f"{MHA}: key's sequence and batch dims {list(key.shape[:-1])} do not match "
                                     f"value's {list(value.shape[:-1])}")
            for name, t, size in (("key", key, self.kdim), ("value", value, self.vdim)):
                if t.shape[-1] != size:
                    raise AssertionError(f"{MHA}: {name} has {t.shape[-1]} features but the module was built with "
                                         f"{'kdim' if name == 'key' else 'vdim'}={size}")
        if not batched and attn_mask is not None and attn_mask.dim() == 3:
            expected = (self.num_heads, query.shape[0], key.shape[0])
            if tuple(attn_mask.shape) != expected:
                raise AssertionError(f"{MHA}: expected attn_mask shape to be {list(expected)} but got "
                                     f"{list(attn_mask.shape)}")

    def _check_masks(self, key_padding_mask, attn_mask, is_causal, batch, tgt_len, src_len):
        """The checks that follow the layout change: (B, L, E) tensors, 3-D masks for B * H."""
        if attn_mask is not None:
            if attn_mask.dim() == 2 and tuple(attn_mask.shape) != (tgt_len, src_len):
                raise RuntimeError(f"{MHA}: the shape of the 2D attn_mask is {list(attn_mask.shape)}, but should be "
                                   f"{[tgt_len, src_len]}.")
            if attn_mask.dim() == 3 and tuple(attn_mask.shape) != (batch * self.num_heads, tgt_len, src_len):
                raise RuntimeError(f"{MHA}: the shape of the 3D attn_mask is {list(attn_mask.shape)}, but should be "
                                   f"{[batch * self.num_heads, tgt_len, src_len]}.")
        if key_padding_mask is not None and tuple(key_padding_mask.shape) != (batch, src_len):
            raise AssertionError(f"{MHA}: expected key_padding_mask of shape {[batch, src_len]} (batch, source "
                                 f"length), got {list(key_padding_mask.shape)}")
        if is_causal and attn_mask is None:
            raise RuntimeError(f"{MHA}: need attn_mask if specifying the is_causal hint. You may use the Transformer "
                               "module method `generate_square_subsequent_mask` to create this mask.")

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if backend.use_reference():
            return super().forward(query, key, value, key_padding_mask, need_weights, attn_mask,
                                   average_attn_weights, is_causal)
        for name, t in (("query", query), ("key", key), ("value", value)):
            _checks.check_tensor(MHA, name, t)
        self._check_shapes(query, key, value, key_padding_mask, attn_mask)
        batched = query.dim() == 3
        # Everything below is batch first: (B, L, E). Transposes are views, taken once per distinct
        # tensor so that `query is key` still tells self-attention apart.
        if not batched:
            query, key, value = _same_views(lambda t: t.unsqueeze(0), query, key, value)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = _same_views(lambda t: t.transpose(0, 1), query, key, value)
        batch, tgt_len, src_len = query.shape[0], query.shape[1], key.shape[1]
        if key.shape[0] != batch:
            # torch fails in a reshape here; the kernels would read past the end of key and value.
            raise RuntimeError(f"{MHA}: key and value have batch size {key.shape[0]}, but query has {batch}; "
                               "they must match")
        self._check_masks(key_padding_mask, attn_mask, is_causal, batch, tgt_len, src_len)
        dropout_p = self.dropout if self.training else 0.0
        if not need_weights:
            _check_dropout_p(MHA, dropout_p)

        q, k, v = self._project(query, key, value)
        mask = _merge_masks(key_padding_mask, None if is_causal else attn_mask, batch, self.num_heads, tgt_len,
                            src_len, q.dtype)
        if need_weights:
            # As torch's explicit softmax: a query that sees no key gets NaN weights and output
            # (the fused path, like torch's, gives 0).
            weights = reference.attention_probabilities(q, k, mask, is_causal, zero_hidden_rows=False)
            weights = dropout(weights, dropout_p, self.training)
            heads_out = weights @ v
            attended = heads_out.transpose(1, 2).reshape(batch, tgt_len, self.embed_dim)
            if average_attn_weights:
                weights = weights.mean(dim=1)
        else:
            weights = None
            # Stored as (B, L, H, E / H), so the output projection reads it as (B, L, E) without a copy.
            heads_out = _attention(q, k, v, mask, dropout_p, is_causal, None, out_order=(0, 2, 1, 3))
            attended = heads_out.transpose(1, 2).reshape(batch, tgt_len, self.embed_dim)
        out = linear(attended, self.out_proj.weight, self.out_proj.bias)
        if not batched:
            return out.squeeze(0), None if weights is None else weights.squeeze(0)
        return (out if self.batch_first else out.transpose(0, 1)), weights


def _same_views(view, query, key, value):
    """view(t) for each of query, key, value, computed once per distinct tensor (keeps `is` relations)."""
    q = view(query)
    k = q if key is query else view(key)
    v = k if value is key else (q if value is query else view(value))
    return q, k, v
