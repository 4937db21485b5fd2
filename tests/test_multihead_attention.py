"""MultiheadAttention: parity with torch.nn.MultiheadAttention through its state_dict (outputs, weights,
gradients of inputs and parameters), masks, layouts, dropout, and errors."""
from __future__ import annotations

import pytest
import torch

from helpers import assert_close
from tritonprop import backend
from tritonprop.kernels import attention as K
from tritonprop.ops.attention import MultiheadAttention

E, H = 16, 4


# fp32 parity is checked in full precision (tests/conftest.py: strict_float32).
pytestmark = pytest.mark.usefixtures("strict_float32")


def pair(device, **kwargs):
    """A torch module and ours with the same weights (ours loads torch's state_dict)."""
    theirs = torch.nn.MultiheadAttention(E, H, **kwargs).to(device)
    ours = MultiheadAttention(E, H, **kwargs).to(device)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def run_both(ours, theirs, inputs, **kwargs):
    """Forward and backward of both modules on fresh leaf copies; asserts outputs and all gradients agree."""
    results = []
    for module in (ours, theirs):
        module.zero_grad()
        leaves = {}
        copies = []
        for t in inputs:
            if id(t) not in leaves:
                leaves[id(t)] = t.detach().clone().requires_grad_()
            copies.append(leaves[id(t)])
        out, weights = module(*copies, **kwargs)
        (out * torch.linspace(-1, 1, out.shape[-1], device=out.device)).sum().backward()
        grads = [leaf.grad for leaf in leaves.values()] + [p.grad for p in module.parameters()]
        results.append((out, weights, grads))
    (out, weights, grads), (t_out, t_weights, t_grads) = results
    assert_close(out, t_out, name="attn_output")
    assert (weights is None) == (t_weights is None)
    if weights is not None:
        assert_close(weights, t_weights, name="attn_output_weights")
    for k, (g, tg) in enumerate(zip(grads, t_grads)):
        assert_close(g, tg, name=f"gradient {k}")
    return out, weights


def padding_mask(batch, length, device, dtype=torch.bool):
    mask = torch.zeros(batch, length, dtype=torch.bool, device=device)
    mask[-1, length - 2:] = True  # the last sequence has two padded positions
    return mask if dtype == torch.bool else torch.zeros(batch, length, device=device).masked_fill(mask, float("-inf"))


def causal_mask(length, device, dtype=torch.bool):
    mask = torch.ones(length, length, dtype=torch.bool, device=device).triu(1)  # True = masked out
    return mask if dtype == torch.bool else torch.nn.Transformer.generate_square_subsequent_mask(length, device=device)


@pytest.mark.parametrize("masks,batch_first", [
    ("none", False), ("key_padding", True), ("key_padding_float", False), ("causal_hint_with_padding", True),
    ("float_attn_mask", False), ("bool_attn_mask_3d_and_padding", True),
])
def test_self_attention_matches_torch(device, batch_first, masks):
    ours, theirs = pair(device, batch_first=batch_first)
    B, L = 3, 7
    x = torch.randn((B, L, E) if batch_first else (L, B, E), device=device)
    kwargs = dict(need_weights=False)
    if masks in ("key_padding", "causal_hint_with_padding", "bool_attn_mask_3d_and_padding"):
        kwargs["key_padding_mask"] = padding_mask(B, L, device)
    if masks == "key_padding_float":
        kwargs["key_padding_mask"] = padding_mask(B, L, device, torch.float32)
    if masks == "causal_hint_with_padding":
        kwargs.update(attn_mask=causal_mask(L, device), is_causal=True)
    if masks == "float_attn_mask":
        kwargs["attn_mask"] = torch.randn(L, L, device=device)
    if masks == "bool_attn_mask_3d_and_padding":
        kwargs["attn_mask"] = torch.rand(B * H, L, L, device=device) > 0.8
    run_both(ours, theirs, [x, x, x], **kwargs)


@pytest.mark.parametrize("average", [True, False])
def test_need_weights_returns_torch_weights(device, average):
    ours, theirs = pair(device, batch_first=True)
    x = torch.randn(2, 5, E, device=device)
    _, weights = run_both(ours, theirs, [x, x, x], key_padding_mask=padding_mask(2, 5, device),
                          attn_mask=causal_mask(5, device, torch.float32), average_attn_weights=average)
    assert weights.shape == ((2, 5, 5) if average else (2, H, 5, 5))


def test_cross_attention_with_kdim_vdim(device):
    ours, theirs = pair(device, batch_first=True, kdim=6, vdim=10)
    query = torch.randn(2, 5, E, device=device)
    key = torch.randn(2, 9, 6, device=device)
    value = torch.randn(2, 9, 10, device=device)
    run_both(ours, theirs, [query, key, value], key_padding_mask=padding_mask(2, 9, device), need_weights=False)


@pytest.mark.parametrize("shared_key_value", [True, False])
def test_cross_attention_packed_weights(device, shared_key_value):
    ours, theirs = pair(device, bias=False)
    query = torch.randn(5, 2, E, device=device)
    memory = torch.randn(8, 2, E, device=device)
    value = memory if shared_key_value else torch.randn(8, 2, E, device=device)
    run_both(ours, theirs, [query, memory, value], need_weights=False)


def test_unbatched_input(device):
    ours, theirs = pair(device)
    x = torch.randn(6, E, device=device)
    kpm = torch.tensor([False] * 5 + [True], device=device)
    run_both(ours, theirs, [x, x, x], key_padding_mask=kpm, need_weights=False)
    run_both(ours, theirs, [x, x, x], attn_mask=causal_mask(6, device))


def test_transformer_path_uses_the_fused_kernels(device, monkeypatch):
    # What the Transformer models call: batch_first, dropout configured, bool key padding, the
    # causal hint with its mask, need_weights=False; in eval mode it matches torch exactly, and
    # it runs the fused kernel with the causal flag and the padding mask read in place.
    calls = []
    forward = K.forward

    def spy(q, k, v, mask, is_causal, *args, **kwargs):
        calls.append((is_causal, None if mask is None else mask.stride()))
        return forward(q, k, v, mask, is_causal, *args, **kwargs)

    monkeypatch.setattr(K, "forward", spy)
    ours, theirs = pair(device, dropout=0.1, batch_first=True)
    ours.eval(), theirs.eval()
    x = torch.randn(3, 7, E, device=device)
    run_both(ours, theirs, [x, x, x], key_padding_mask=padding_mask(3, 7, device), attn_mask=causal_mask(7, device),
             is_causal=True, need_weights=False)
    assert calls and calls[0][0] is True
    assert calls[0][1][1] == 0 and calls[0][1][2] == 0, "the (B, 1, 1, S) padding mask was materialised"


def test_training_dropout_is_seeded_and_active(device):
    ours, _ = pair(device, dropout=0.5, batch_first=True)
    x = torch.randn(2, 6, E, device=device)
    outputs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        outputs.append(ours(x, x, x, need_weights=False)[0])
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.equal(outputs[0], outputs[2])
    ours.eval()
    assert not torch.equal(outputs[0], ours(x, x, x, need_weights=False)[0])


def test_state_dict_round_trip_and_type(device):
    ours, theirs = pair(device, kdim=6, vdim=10)
    assert isinstance(ours, torch.nn.MultiheadAttention)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    theirs.load_state_dict(ours.state_dict())


def test_reference_backend_runs_torch_module(device, monkeypatch):
    def kernel_must_not_run(*args, **kwargs):
        raise AssertionError("the Triton kernel ran under TRITONPROP_BACKEND=reference")

    monkeypatch.setattr(K, "forward", kernel_must_not_run)
    monkeypatch.setenv(backend.BACKEND_ENV, "reference")
    ours, theirs = pair(device, batch_first=True)
    x = torch.randn(2, 4, E, device=device)
    assert_close(ours(x, x, x, need_weights=False)[0], theirs(x, x, x, need_weights=False)[0])


@pytest.mark.parametrize("option", ["add_bias_kv", "add_zero_attn"])
def test_unsupported_options_raise(option):
    with pytest.raises(NotImplementedError, match=f"{option}=True is not implemented"):
        MultiheadAttention(E, H, **{option: True})


# (case, error type (torch raises the same), our message)
BAD_ARGUMENTS = [
    ("causal_without_mask", RuntimeError, "need attn_mask if specifying the is_causal hint"),
    ("padding_mask_shape", AssertionError, r"expected key_padding_mask of shape \[2, 5\]"),
    ("padding_mask_rank", AssertionError, "expected key_padding_mask to be None or 2-D but found 1-D"),
    ("unbatched_padding_mask_rank", AssertionError, "expected key_padding_mask to be None or 1-D but found 2-D"),
    ("attn_mask_2d_shape", RuntimeError, r"the shape of the 2D attn_mask is \[5, 4\], but should be \[5, 5\]"),
    ("attn_mask_3d_shape", RuntimeError, r"the shape of the 3D attn_mask is \[2, 5, 5\], but should be \[8, 5, 5\]"),
    ("attn_mask_4d", AssertionError, "expected attn_mask to be None, 2-D or 3-D but found 4-D"),
    ("unbatched_attn_mask_3d_shape", AssertionError, r"expected attn_mask shape to be \[4, 5, 5\]"),
    ("integer_mask", AssertionError, "only bool and floating types of attn_mask"),
    ("integer_padding_mask", AssertionError, "only bool and floating types of key_padding_mask"),
    ("embed_dim", AssertionError, r"was expecting embedding dimension of 16 \(embed_dim\), but query has 8"),
    ("query_rank", AssertionError, "query should be unbatched 2D or batched 3D tensor but received 4-D"),
    ("rank", AssertionError, "for 3-D query, expected key and value to be 3-D but found 2-D and 2-D"),
    ("key_value_shapes_differ", AssertionError, r"key shape \[2, 5, 16\] does not match value shape \[2, 4, 16\]"),
    ("key_features", RuntimeError, r"key and value must have embed_dim \(16\) features, got 8"),
    ("key_value_batch_differs_from_query", RuntimeError, "key and value have batch size 3, but query has 2"),
    ("dropout_above_one", RuntimeError, "dropout probability has to be between 0 and 1, but got 1.5"),
]


def _bad_mha_call(case):
    """(module, args, kwargs) for one BAD_ARGUMENTS case."""
    module = MultiheadAttention(E, H, batch_first=True)
    x = torch.randn(2, 5, E)
    args, kwargs = [x, x, x], dict(need_weights=False)
    if case == "causal_without_mask":
        kwargs["is_causal"] = True
    elif case == "padding_mask_shape":
        kwargs["key_padding_mask"] = torch.zeros(2, 4, dtype=torch.bool)
    elif case == "padding_mask_rank":
        kwargs["key_padding_mask"] = torch.zeros(5, dtype=torch.bool)
    elif case == "unbatched_padding_mask_rank":
        args = [x[0]] * 3
        kwargs["key_padding_mask"] = torch.zeros(1, 5, dtype=torch.bool)
    elif case == "attn_mask_2d_shape":
        kwargs["attn_mask"] = torch.zeros(5, 4)
    elif case == "attn_mask_3d_shape":
        kwargs["attn_mask"] = torch.zeros(2, 5, 5)
    elif case == "attn_mask_4d":
        kwargs["attn_mask"] = torch.zeros(2, H, 5, 5)
    elif case == "unbatched_attn_mask_3d_shape":
        args = [x[0]] * 3
        kwargs["attn_mask"] = torch.zeros(2 * H, 5, 5)
    elif case == "integer_mask":
        kwargs["attn_mask"] = torch.zeros(5, 5, dtype=torch.int64)
    elif case == "integer_padding_mask":
        kwargs["key_padding_mask"] = torch.zeros(2, 5, dtype=torch.int64)
    elif case == "embed_dim":
        args = [torch.randn(2, 5, 8)] * 3
    elif case == "query_rank":
        args = [x[None]] * 3
    elif case == "rank":
        args = [x, x[0], x[0]]
    elif case == "key_value_shapes_differ":
        args = [x, x, torch.randn(2, 4, E)]
    elif case == "key_features":
        args = [x, torch.randn(2, 5, 8), torch.randn(2, 5, 8)]
    elif case == "key_value_batch_differs_from_query":
        memory = torch.randn(3, 6, E)
        args = [x, memory, memory]
    elif case == "dropout_above_one":
        module = MultiheadAttention(E, H, dropout=1.5, batch_first=True)
    return module, args, kwargs


@pytest.mark.parametrize("case,error,match", BAD_ARGUMENTS, ids=[c[0] for c in BAD_ARGUMENTS])
def test_bad_arguments_name_the_argument(case, error, match):
    module, args, kwargs = _bad_mha_call(case)
    theirs = torch.nn.MultiheadAttention(E, H, dropout=module.dropout, batch_first=True)
    theirs.load_state_dict(module.state_dict())
    with pytest.raises(error):
        theirs(*args, **kwargs)
    with pytest.raises(error, match=f"MultiheadAttention: .*{match}"):
        module(*args, **kwargs)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("separate_projections", [False, True], ids=["packed", "kdim_vdim"])
def test_key_value_batch_that_differs_from_the_query_raises_as_in_torch(batch_first, separate_projections):
    kdims = dict(kdim=6, vdim=10) if separate_projections else {}
    module = MultiheadAttention(E, H, batch_first=batch_first, **kdims)
    theirs = torch.nn.MultiheadAttention(E, H, batch_first=batch_first, **kdims)
    query = torch.randn(2, 5, E)
    key = torch.randn(3, 7, kdims.get("kdim", E))
    value = torch.randn(3, 7, kdims.get("vdim", E))
    if not batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    for need_weights in (False, True):
        with pytest.raises(RuntimeError):
            theirs(query, key, value, need_weights=need_weights)
        with pytest.raises(RuntimeError, match="MultiheadAttention: key and value have batch size 3, but query has 2"):
            module(query, key, value, need_weights=need_weights)


def test_kdim_vdim_mismatch_raises_as_in_torch():
    module = MultiheadAttention(E, H, kdim=6, vdim=10, batch_first=True)
    theirs = torch.nn.MultiheadAttention(E, H, kdim=6, vdim=10, batch_first=True)
    query = torch.randn(2, 5, E)
    for key, value, match in ((torch.randn(2, 7, E), torch.randn(2, 7, 10), "key has 16 features .* kdim=6"),
                              (torch.randn(2, 7, 6), torch.randn(2, 7, 6), "value has 6 features .* vdim=10"),
                              (torch.randn(2, 7, 6), torch.randn(2, 6, 10), "key's sequence and batch dims")):
        with pytest.raises(AssertionError):
            theirs(query, key, value, need_weights=False)
        with pytest.raises(AssertionError, match=f"MultiheadAttention: {match}"):
            module(query, key, value, need_weights=False)


@pytest.mark.parametrize("layout", ["transposed", "sliced", "expanded_bias"])
def test_strided_parameters_are_read_as_they_lie(device, layout):
    ours, theirs = pair(device, batch_first=True)
    with torch.no_grad():
        if layout == "transposed":
            for module in (ours, theirs):
                w = module.in_proj_weight.detach()
                module.in_proj_weight = torch.nn.Parameter(w.t().contiguous().t())
                w = module.out_proj.weight.detach()
                module.out_proj.weight = torch.nn.Parameter(w.t().contiguous().t())
            assert not ours.in_proj_weight.is_contiguous()
        elif layout == "sliced":
            for module in (ours, theirs):
                wide = torch.randn(3 * E, 2 * E, device=device)
                wide[:, ::2] = module.in_proj_weight
                module.in_proj_weight = torch.nn.Parameter(wide[:, ::2])
                bias = torch.randn(6 * E, device=device)
                bias[::2] = module.in_proj_bias
                module.in_proj_bias = torch.nn.Parameter(bias[::2])
            assert ours.in_proj_weight.stride() == (2 * E, 2)
        else:
            for module in (ours, theirs):
                module.in_proj_bias = torch.nn.Parameter(torch.tensor(0.25, device=device).expand(3 * E))
    x = torch.randn(2, 5, E, device=device)
    memory = torch.randn(2, 6, E, device=device)
    run_both(ours, theirs, [x, x, x], need_weights=False)
    run_both(ours, theirs, [x, memory, memory], need_weights=False)


def test_double_backward_through_the_fused_path_is_refused(device):
    ours, theirs = pair(device, batch_first=True)
    x = torch.randn(2, 5, E, device=device, requires_grad=True)
    out, _ = ours(x, x, x, need_weights=False)
    with pytest.raises(RuntimeError, match="scaled_dot_product_attention: double backward is not supported"):
        torch.autograd.grad(out.sum(), x, create_graph=True)
    run_both(ours, theirs, [x, x, x], need_weights=False)
