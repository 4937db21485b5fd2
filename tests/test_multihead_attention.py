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


@pytest.fixture(autouse=True)
def strict_float32():
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved


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


@pytest.mark.parametrize("case,error,match", [
    ("causal_without_mask", RuntimeError, "need attn_mask if specifying the is_causal hint"),
    ("padding_mask_shape", RuntimeError, r"expected key_padding_mask of shape \[2, 5\]"),
    ("attn_mask_2d_shape", RuntimeError, r"the shape of the 2D attn_mask is \[5, 4\], but should be \[5, 5\]"),
    ("attn_mask_3d_shape", RuntimeError, r"the shape of the 3D attn_mask is \[2, 5, 5\], but should be \[8, 5, 5\]"),
    ("integer_mask", TypeError, "only bool and floating types of attn_mask"),
    ("embed_dim", RuntimeError, r"query's last dim \(8\) must be embed_dim \(16\)"),
    ("rank", RuntimeError, "must all be 3-D \\(batched\\) or all 2-D"),
])
def test_bad_arguments_name_the_argument(case, error, match):
    module = MultiheadAttention(E, H, batch_first=True)
    x = torch.randn(2, 5, E)
    args, kwargs = [x, x, x], dict(need_weights=False)
    if case == "causal_without_mask":
        kwargs["is_causal"] = True
    elif case == "padding_mask_shape":
        kwargs["key_padding_mask"] = torch.zeros(2, 4, dtype=torch.bool)
    elif case == "attn_mask_2d_shape":
        kwargs["attn_mask"] = torch.zeros(5, 4)
    elif case == "attn_mask_3d_shape":
        kwargs["attn_mask"] = torch.zeros(2, 5, 5)
    elif case == "integer_mask":
        kwargs["attn_mask"] = torch.zeros(5, 5, dtype=torch.int64)
    elif case == "embed_dim":
        args = [torch.randn(2, 5, 8)] * 3
    elif case == "rank":
        args = [x, x[0], x[0]]
    with pytest.raises(error, match=match):
        module(*args, **kwargs)
