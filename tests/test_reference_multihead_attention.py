"""The multi-head attention references: the naive autograd version against torch.nn.MultiheadAttention
and tritonprop.ops.MultiheadAttention, and the numpy version's hand-derived backward against autograd
of the naive version, in float64."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import assert_close
from tritonprop.ops import MultiheadAttention
from tritonprop.ops.reference import multihead_attention as mha
from tritonprop.ops.reference import multihead_attention_numpy as mha_numpy

E, H, B, L, S = 8, 2, 2, 5, 4

pytestmark = pytest.mark.usefixtures("strict_float32")


def _module(**kwargs):
    """A torch module in float64 with random biases (torch initialises them to 0, which would hide a
    missing or misplaced bias)."""
    module = torch.nn.MultiheadAttention(E, H, **kwargs).double()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "bias" in name:
                p.normal_()
    return module


def _padding(src_len=S):
    mask = torch.zeros(B, src_len, dtype=torch.bool)
    mask[-1, src_len - 2:] = True   # the last sequence ends with two padded keys
    return mask


def _causal(length=L):
    return torch.ones(length, length, dtype=torch.bool).triu(1)   # True = may not attend


def _leaves(*tensors):
    """Fresh leaf copies, one per distinct tensor, so that `key is query` survives the copy."""
    copies = {}
    for t in tensors:
        if id(t) not in copies:
            copies[id(t)] = t.detach().clone().requires_grad_()
    return [copies[id(t)] for t in tensors]


def _forward_backward(fn, module, inputs, upstream):
    module.zero_grad()
    leaves = _leaves(*inputs)
    out = fn(module, *leaves)
    (out * upstream).sum().backward()
    distinct = list({id(t): t for t in leaves}.values())
    return out, [t.grad for t in distinct] + [p.grad for p in module.parameters()]


def _torch(masks):
    return lambda module, q, k, v: module(q, k, v, need_weights=False, **masks)[0]


def _reference(masks):
    return lambda module, q, k, v: mha.module_forward(module, q, k, v, **masks)


CASES = {
    # name: (module kwargs, self-attention?, masks)
    "self_causal_hint": ({}, True, dict(attn_mask=_causal(), is_causal=True)),
    "self_bool_mask_and_padding": ({}, True, dict(attn_mask=_causal(), key_padding_mask=_padding(L))),
    "self_float_mask_seq_first": (dict(batch_first=False), True, dict(attn_mask=torch.randn(L, L).double())),
    "cross_padding": ({}, False, dict(key_padding_mask=_padding())),
    "cross_float_padding_3d_mask": ({}, False, dict(key_padding_mask=torch.zeros(B, S).double().masked_fill(
        _padding(), float("-inf")), attn_mask=torch.randn(B * H, L, S).double())),
    "cross_kdim_vdim_no_bias": (dict(kdim=3, vdim=6, bias=False), False, dict(key_padding_mask=_padding())),
    # Query 2 sees no key at all.
    "self_fully_masked_row": ({}, True, dict(attn_mask=torch.zeros(L, L, dtype=torch.bool).index_fill(
        0, torch.tensor(2), True))),
}


def _inputs(module_kwargs, self_attention):
    batch_first = module_kwargs.get("batch_first", True)
    shape = (lambda n, e: (B, n, e)) if batch_first else (lambda n, e: (n, B, e))
    x = torch.randn(shape(L, E), dtype=torch.float64)
    if self_attention:
        return x, x, x
    key = torch.randn(shape(S, module_kwargs.get("kdim", E)), dtype=torch.float64)
    value = torch.randn(shape(S, module_kwargs["vdim"]), dtype=torch.float64) if "vdim" in module_kwargs else key
    return x, key, value


@pytest.mark.parametrize("case", CASES)
def test_reference_matches_torch_multihead_attention(case):
    module_kwargs, self_attention, masks = CASES[case]
    module = _module(**{"batch_first": True, **module_kwargs})
    inputs = _inputs(module_kwargs, self_attention)
    upstream = torch.randn(inputs[0].shape[:-1] + (E,), dtype=torch.float64)
    theirs, their_grads = _forward_backward(_torch(masks), module, inputs, upstream)
    ours, our_grads = _forward_backward(_reference(masks), module, inputs, upstream)
    assert_close(ours, theirs)
    assert len(our_grads) == len(their_grads)
    for k, (mine, expected) in enumerate(zip(our_grads, their_grads)):
        assert_close(mine, expected, name=f"gradient {k}")
    if case == "self_fully_masked_row":
        # The query that sees no key outputs the output bias alone, as torch's need_weights=False path.
        assert torch.equal(ours[:, 2], module.out_proj.bias.detach().expand(B, E))


@pytest.mark.parametrize("case", ["self_bool_mask_and_padding", "cross_float_padding_3d_mask"])
def test_reference_matches_tritonprop_multihead_attention(case):
    module_kwargs, self_attention, masks = CASES[case]
    reference_module = _module(batch_first=True, **module_kwargs)
    ours = MultiheadAttention(E, H, batch_first=True, **module_kwargs).double()
    ours.load_state_dict(reference_module.state_dict())
    inputs = _inputs(module_kwargs, self_attention)
    upstream = torch.randn(B, L, E, dtype=torch.float64)
    expected, expected_grads = _forward_backward(_reference(masks), reference_module, inputs, upstream)
    out, grads = _forward_backward(_torch(masks), ours, inputs, upstream)
    assert_close(out, expected)
    for k, (mine, theirs) in enumerate(zip(grads, expected_grads)):
        assert_close(mine, theirs, name=f"gradient {k}")


def _numpy_params(module):
    """The numpy reference's parameter dict from a module with a packed in_proj_weight or separate ones."""
    if module.in_proj_weight is not None:
        w_q, w_k, w_v = module.in_proj_weight.chunk(3)
    else:
        w_q, w_k, w_v = module.q_proj_weight, module.k_proj_weight, module.v_proj_weight
    b_q, b_k, b_v = module.in_proj_bias.chunk(3) if module.in_proj_bias is not None else (None, None, None)
    values = (w_q, w_k, w_v, b_q, b_k, b_v, module.out_proj.weight, module.out_proj.bias)
    return {name: None if t is None else t.detach().numpy() for name, t in zip(mha_numpy.PARAMS, values)}


def _numpy(t):
    return t.detach().numpy()


@pytest.mark.parametrize("case", ["self_causal_hint", "self_bool_mask_and_padding", "cross_padding",
                                  "cross_float_padding_3d_mask", "cross_kdim_vdim_no_bias", "self_fully_masked_row"])
def test_numpy_backward_matches_autograd(case):
    module_kwargs, self_attention, masks = CASES[case]
    module = _module(batch_first=True, **module_kwargs)
    query, key, value = _leaves(*_inputs(module_kwargs, self_attention))
    out = mha.module_forward(module, query, key, value, **masks)
    dy = torch.randn_like(out)
    distinct = list({id(t): t for t in (query, key, value)}.values())
    params = [p for p in module.parameters()]
    expected = torch.autograd.grad((out * dy).sum(), distinct + params)

    # The same arrays go in where the same tensors went in: x three times, or memory as key and value.
    arrays = {id(t): _numpy(t) for t in distinct}
    mask = mha_numpy.mha_mask(B, H, L, query.shape[1] if self_attention else key.shape[1],
                              **{name: _numpy(m) if isinstance(m, torch.Tensor) else m for name, m in masks.items()})
    y, cache = mha_numpy.mha_forward(arrays[id(query)], arrays[id(key)], arrays[id(value)],
                                     _numpy_params(module), H, mask)
    np.testing.assert_allclose(y, _numpy(out), rtol=1e-12, atol=1e-12)
    (dquery, dkey, dvalue), dparams = mha_numpy.mha_backward(_numpy(dy), cache)

    # One gradient per distinct input: the repeated slots are None, their contributions already summed.
    ours = [g for g in (dquery, dkey, dvalue) if g is not None]
    assert len(ours) == len(distinct)
    for name, mine, theirs in zip(("dquery", "dkey", "dvalue"), ours, expected):
        np.testing.assert_allclose(mine, _numpy(theirs), rtol=1e-10, atol=1e-12, err_msg=name)
    by_name = dict(zip([name for name, _ in module.named_parameters()], expected[len(distinct):]))
    if module.in_proj_weight is not None:
        np.testing.assert_allclose(np.concatenate([dparams["w_q"], dparams["w_k"], dparams["w_v"]]),
                                   _numpy(by_name["in_proj_weight"]), rtol=1e-10, atol=1e-12, err_msg="in_proj_weight")
    else:
        for name in ("q", "k", "v"):
            np.testing.assert_allclose(dparams[f"w_{name}"], _numpy(by_name[f"{name}_proj_weight"]), rtol=1e-10,
                                       atol=1e-12, err_msg=f"{name}_proj_weight")
    if module.in_proj_bias is not None:
        np.testing.assert_allclose(np.concatenate([dparams["b_q"], dparams["b_k"], dparams["b_v"]]),
                                   _numpy(by_name["in_proj_bias"]), rtol=1e-10, atol=1e-12, err_msg="in_proj_bias")
        np.testing.assert_allclose(dparams["b_o"], _numpy(by_name["out_proj.bias"]), rtol=1e-10, atol=1e-12)
    else:
        assert dparams["b_q"] is None and dparams["b_o"] is None
    np.testing.assert_allclose(dparams["w_o"], _numpy(by_name["out_proj.weight"]), rtol=1e-10, atol=1e-12)


def test_self_attention_gradient_is_the_sum_of_three_paths():
    """dx of self-attention equals dquery + dkey + dvalue of the same x passed as three arrays."""
    module = _module(batch_first=True)
    x = torch.randn(B, L, E, dtype=torch.float64).numpy()
    params = _numpy_params(module)
    dy = np.random.default_rng(0).standard_normal((B, L, E))
    _, shared = mha_numpy.mha_forward(x, x, x, params, H)
    (dx, none_k, none_v), _ = mha_numpy.mha_backward(dy, shared)
    _, separate = mha_numpy.mha_forward(x, x.copy(), x.copy(), params, H)
    (dq, dk, dv), _ = mha_numpy.mha_backward(dy, separate)
    assert none_k is None and none_v is None
    np.testing.assert_allclose(dx, dq + dk + dv, rtol=1e-12, atol=1e-12)
    # Each path matters: the query path alone is not the whole gradient.
    assert np.abs(dx - dq).max() > 1e-3


def test_unsupported_arguments_are_refused():
    module = _module(batch_first=True, dropout=0.5)
    x = torch.randn(B, L, E, dtype=torch.float64)
    with pytest.raises(NotImplementedError, match="dropout"):
        mha.module_forward(module, x, x, x)
    module.eval()   # dropout is off in eval mode, as in torch
    assert_close(mha.module_forward(module, x, x, x), module(x, x, x, need_weights=False)[0])
    with pytest.raises(RuntimeError, match="attn_mask"):
        mha.module_forward(module, x, x, x, is_causal=True)
