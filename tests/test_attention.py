"""scaled_dot_product_attention: gradcheck, parity with torch and the from-scratch reference, masks,
GQA, dropout, strided views, empty inputs, errors, and the numpy reference's hand-derived backward."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from helpers import assert_close, assert_gradcheck, assert_matches, record_copy_calls
from tritonprop import backend
from tritonprop.kernels import attention as K
from tritonprop.ops.attention import scaled_dot_product_attention as sdpa
from tritonprop.ops.reference import attention as reference
from tritonprop.ops.reference import attention_numpy


# fp32 parity is checked in full precision (tests/conftest.py: strict_float32).
pytestmark = pytest.mark.usefixtures("strict_float32")


@dataclass(frozen=True)
class Config:
    name: str
    batch: int
    heads_q: int
    heads_kv: int
    sq: int
    sk: int
    d: int
    dv: int = 0  # 0: same as d
    causal: bool = False
    mask: str = "none"  # none | bool | key_padding | additive | additive_grad | additive_2d

    def tensors(self, device="cpu", dtype=torch.float32):
        B, dv = self.batch, self.dv or self.d
        q = torch.randn(B, self.heads_q, self.sq, self.d, device=device).to(dtype).requires_grad_()
        k = torch.randn(B, self.heads_kv, self.sk, self.d, device=device).to(dtype).requires_grad_()
        v = torch.randn(B, self.heads_kv, self.sk, dv, device=device).to(dtype).requires_grad_()
        return q, k, v, self.attn_mask(device, dtype)

    def attn_mask(self, device, dtype):
        B, H, Sq, Sk = self.batch, self.heads_q, self.sq, self.sk
        if self.mask == "bool":
            mask = torch.rand(B, H, Sq, Sk, device=device) > 0.3
            mask[0, 0, Sq // 2] = False  # a row that sees no key at all
            return mask
        if self.mask == "key_padding":
            lengths = torch.arange(B, device=device) % Sk + max(1, Sk - 3)
            return (torch.arange(Sk, device=device) < lengths[:, None]).view(B, 1, 1, Sk)
        if self.mask.startswith("additive"):
            shape = (Sq, Sk) if self.mask == "additive_2d" else (B, 1, Sq, Sk)
            mask = torch.randn(shape, device=device).to(dtype)
            return mask.requires_grad_(self.mask == "additive_grad")
        return None

    @property
    def kwargs(self):
        return dict(is_causal=self.causal, enable_gqa=self.heads_q != self.heads_kv)


def _bind_bool_mask(ours, oracles, mask):
    """(ours, oracles, extra args) for assert_matches. A boolean mask is bound into every function
    instead of passed: assert_matches compares tensor arguments after the call by a float
    tolerance, which bool tensors have not. Float masks stay arguments, so their gradients are
    compared too."""
    if mask is None or mask.is_floating_point():
        return ours, oracles, (mask,)
    def bind(fn):
        return lambda *args, **kwargs: fn(*args, mask, **kwargs)
    return bind(ours), {name: bind(fn) for name, fn in oracles.items()}, ()


CONFIGS = [
    Config("s1", 1, 1, 1, 1, 1, 8),
    Config("s17_causal", 1, 2, 2, 17, 17, 8, causal=True),
    Config("cross_sq5_sk17_causal_d40", 1, 1, 1, 5, 17, 40, causal=True),
    Config("cross_sq17_sk5_causal", 1, 1, 1, 17, 5, 8, causal=True),
    Config("s130_d8", 1, 1, 1, 130, 130, 8),
    Config("s130_cross_causal", 1, 1, 1, 130, 17, 8, causal=True, mask="bool"),
    Config("d64_key_padding", 2, 1, 1, 9, 13, 64, mask="key_padding"),
    Config("bool_with_empty_row", 1, 2, 2, 7, 9, 16, mask="bool"),
    Config("bool_and_causal", 1, 1, 1, 17, 17, 8, causal=True, mask="bool"),
    Config("additive_2d", 1, 2, 2, 6, 10, 16, mask="additive_2d"),
    Config("additive_grad", 2, 1, 1, 6, 10, 8, mask="additive_grad"),
    Config("gqa_causal_d40", 1, 4, 2, 9, 11, 40, causal=True),
    Config("mqa_additive_grad", 2, 2, 1, 5, 7, 8, mask="additive_grad"),
    Config("dv24_d40", 1, 2, 2, 6, 9, 40, dv=24),
]
IDS = [c.name for c in CONFIGS]


# ------------------------------------------------------------------------------------------------
# gradcheck (float64): fast mode over the grid, the full Jacobian on tiny cases (and the grid under -m slow)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_gradcheck(device, config):
    q, k, v, mask = config.tensors(device)
    assert_gradcheck(sdpa, q, k, v, mask, fast_mode=True, **config.kwargs)


@pytest.mark.parametrize("config", [
    Config("tiny_gqa_additive_grad", 1, 2, 1, 2, 3, 2, mask="additive_grad"),
    Config("tiny_causal_bool", 1, 1, 1, 3, 2, 2, causal=True, mask="bool"),
], ids=lambda c: c.name)
def test_gradcheck_full_jacobian_small(device, config):
    q, k, v, mask = config.tensors(device)
    assert_gradcheck(sdpa, q, k, v, mask, **config.kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_gradcheck_full_jacobian_grid(device, config):
    q, k, v, mask = config.tensors(device)
    assert_gradcheck(sdpa, q, k, v, mask, **config.kwargs)


# ------------------------------------------------------------------------------------------------
# Parity with F.scaled_dot_product_attention and the from-scratch reference
# ------------------------------------------------------------------------------------------------


def _torch_sdpa(query, key, value, attn_mask=None, *args, **kwargs):
    # torch refuses an attn_mask that requires grad together with is_causal (the math backend
    # combines them otherwise); the grid never asks for both.
    return F.scaled_dot_product_attention(query, key, value, attn_mask, *args, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_matches_torch_and_reference(device, config, dtype):
    q, k, v, mask = config.tensors(device, dtype)
    ours, oracles, extra = _bind_bool_mask(
        sdpa, {"torch": _torch_sdpa, "reference": reference.scaled_dot_product_attention}, mask)
    out = assert_matches(ours, oracles, q, k, v, *extra, **config.kwargs)
    assert out.dtype == dtype and out.shape == (*q.shape[:-1], v.shape[-1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[6], CONFIGS[11]], ids=lambda c: c.name)
def test_forward_matches_float32_math_in_low_precision(device, config, dtype):
    # The reference computes low-precision inputs in float32 and rounds the output once; the
    # forward kernel rounds P to the input dtype for its P v product, as FlashAttention does,
    # and stays within the dtype's tolerance. (Gradients are not compared here: dQ and dK sum
    # dS rounded to 16 bits over every key or query, which drifts past two ulps of the result
    # in a few elements; fp32 and fp64 gradients are compared above.)
    q, k, v, mask = config.tensors(device, dtype)
    ours, oracles, extra = _bind_bool_mask(sdpa, {"reference (fp32 math)": reference.scaled_dot_product_attention},
                                           mask)
    out = assert_matches(ours, oracles, q, k, v, *extra, grad=False, **config.kwargs)
    assert out.dtype == dtype


@pytest.mark.parametrize("config", [CONFIGS[2], CONFIGS[3], CONFIGS[8], CONFIGS[12]], ids=lambda c: c.name)
def test_many_small_tiles(device, config, monkeypatch):
    # 16 x 16 tiles: several key and query blocks, blocks wholly left of the causal diagonal,
    # blocks across it, and ragged tails in both lengths.
    monkeypatch.setattr(K, "INTERPRETER_BLOCK", 16)
    if device.type == "cuda":
        tables = {name: {size: {d: (16, 16, 4, 1) for d in by_head} for size, by_head in getattr(K, name).items()}
                  for name in ("FORWARD_TILES", "DKDV_TILES", "DQ_TILES")}
        for name, table in tables.items():
            monkeypatch.setattr(K, name, table)
    q, k, v, mask = config.tensors(device, torch.float64)
    ours, oracles, extra = _bind_bool_mask(sdpa, {"torch": _torch_sdpa}, mask)
    assert_matches(ours, oracles, q, k, v, *extra, **config.kwargs)


def test_fully_masked_rows_output_zero_with_zero_gradient(device):
    q, k, v, _ = Config("rows", 1, 1, 1, 4, 6, 8).tensors(device)
    mask = torch.ones(4, 6, dtype=torch.bool, device=device)
    mask[2] = False
    out = sdpa(q, k, v, mask)
    expected = F.scaled_dot_product_attention(q, k, v, mask)
    assert torch.equal(out[0, 0, 2], torch.zeros_like(out[0, 0, 2]))
    assert_close(out, expected)
    out.sum().backward()
    assert torch.equal(q.grad[0, 0, 2], torch.zeros_like(q.grad[0, 0, 2]))


def test_rows_masked_by_the_float32_minimum_average_as_torchs_do(device):
    # A finite "masked" value, as many models write it: every score of row 2 is equally minimal, so
    # torch's softmax averages the values uniformly, with a gradient; -inf would hide the row.
    q, k, v, _ = Config("rows", 1, 1, 1, 4, 6, 8).tensors(device)
    mask = torch.zeros(4, 6, device=device)
    mask[2] = torch.finfo(torch.float32).min
    mask[3, :2] = torch.finfo(torch.float32).min
    assert_matches(sdpa, {"torch": _torch_sdpa}, q, k, v, mask)
    assert_close(sdpa(q, k, v, mask)[0, 0, 2], v[0, 0].mean(0).detach(), name="the uniform average")


def test_causal_is_top_left_aligned(device):
    # With Sq > Sk, query i sees keys 0..min(i, Sk - 1): the first query sees key 0 only.
    q, k, v, _ = Config("tl", 1, 1, 1, 6, 3, 8).tensors(device)
    out = sdpa(q, k, v, is_causal=True)
    assert_close(out[0, 0, 0], v[0, 0, 0].detach(), name="query 0 = value 0")
    assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))


@pytest.mark.parametrize("dims", [2, 3, 5])
def test_other_ranks_match_torch(device, dims):
    shape = {2: (), 3: (2,), 5: (2, 3, 2)}[dims]
    q = torch.randn(*shape, 5, 8, device=device, requires_grad=True)
    k = torch.randn(*shape, 7, 8, device=device, requires_grad=True)
    v = torch.randn(*shape, 7, 8, device=device, requires_grad=True)
    mask = torch.randn(5, 7, device=device)
    assert_matches(sdpa, {"torch": F.scaled_dot_product_attention}, q, k, v, mask, scale=0.3)


def test_scale_argument(device):
    q, k, v, mask = Config("scale", 1, 2, 2, 5, 6, 16, mask="additive").tensors(device)
    assert_matches(sdpa, {"torch": F.scaled_dot_product_attention}, q, k, v, mask, scale=0.17)


def test_backward_is_deterministic_with_gqa(device):
    q, k, v, mask = Config("det", 1, 4, 1, 19, 23, 8, mask="additive_grad").tensors(device)
    grads = []
    for _ in range(2):
        for t in (q, k, v, mask):
            t.grad = None
        sdpa(q, k, v, mask, enable_gqa=True).square().sum().backward()
        grads.append([t.grad.clone() for t in (q, k, v, mask)])
    for first, second in zip(*grads):
        assert torch.equal(first, second)


# ------------------------------------------------------------------------------------------------
# Dropout
# ------------------------------------------------------------------------------------------------


def _seeded(fn, seed=11):
    def call(*args, **kwargs):
        torch.manual_seed(seed)
        return fn(*args, **kwargs)
    return call


def test_dropout_same_seed_same_output(device):
    q, k, v, _ = (t.detach() if t is not None else t for t in Config("d", 1, 2, 2, 9, 13, 8).tensors(device))
    first = _seeded(sdpa, 3)(q, k, v, dropout_p=0.4)
    again = _seeded(sdpa, 3)(q, k, v, dropout_p=0.4)
    other = _seeded(sdpa, 4)(q, k, v, dropout_p=0.4)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first, sdpa(q, k, v))


@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[12]], ids=lambda c: c.name)
def test_dropout_forward_and_backward_match_the_reference_mask(device, config):
    # The reference rebuilds the kernels' Philox mask from the same seed, so forward and every
    # gradient (the backward regenerates the mask tile by tile) must agree with it.
    q, k, v, mask = config.tensors(device, torch.float64)
    oracles = {"reference": _seeded(reference.scaled_dot_product_attention)}
    ours, oracles, extra = _bind_bool_mask(_seeded(sdpa), oracles, mask)
    assert_matches(ours, oracles, q, k, v, *extra, dropout_p=0.3, **config.kwargs)


def test_gradcheck_with_dropout(device):
    q, k, v, mask = Config("gd", 1, 2, 1, 7, 9, 8, causal=True, mask="additive_grad").tensors(device)
    # Every regenerating path at once: both backward kernels, causal, GQA and the mask's gradient.
    assert_gradcheck(_seeded(sdpa), q, k, v, mask, dropout_p=0.25, is_causal=True, enable_gqa=True, fast_mode=True)


def test_dropout_kept_fraction_and_mask_from_the_kernel(device):
    # With q = 0 every key gets P = 1/Sk; with v = identity, O[i, j] = P_ij Z_ij = keep_ij / (Sk (1 - p)):
    # the output is the kernel's keep mask itself.
    B, H, S, p = 1, 2, 64, 0.3
    q = torch.zeros(B, H, S, 16, device=device)
    k = torch.randn(B, H, S, 16, device=device)
    v = torch.eye(S, device=device).expand(B, H, S, S)
    torch.manual_seed(5)
    keep = sdpa(q, k, v, dropout_p=p) * (S * (1 - p))
    assert torch.allclose(keep, keep.round(), atol=1e-5) and set(keep.round().unique().tolist()) <= {0.0, 1.0}
    torch.manual_seed(5)
    expected = reference.keep_mask(reference.draw_seed(device), (B, H, S, S), p, device)
    assert torch.equal(keep.round().bool(), expected)
    n = keep.numel()
    kept = keep.round().mean().item()
    assert abs(kept - (1 - p)) < 4 * (p * (1 - p) / n) ** 0.5, f"kept fraction {kept} for p={p} over {n} draws"


def test_dropout_p_one_outputs_zero(device):
    q, k, v, _ = Config("p1", 1, 1, 1, 4, 5, 8).tensors(device)
    out = sdpa(q, k, v, dropout_p=1.0)
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.equal(v.grad, torch.zeros_like(v))


# ------------------------------------------------------------------------------------------------
# Layouts, empty inputs, autocast, backend
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("head_dim", [16, 5], ids=["rows-16-byte-aligned", "rows-unaligned"])
def test_slices_of_a_fused_qkv_projection_are_read_in_place(device, monkeypatch, head_dim):
    B, S, H, D = 2, 7, 2, head_dim
    qkv = torch.randn(B, S, 3, H, D, device=device, requires_grad=True)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (B, H, S, D), strided
    # Tensor-descriptor (TMA) loads where every row step is a multiple of 16 bytes, pointer loads
    # otherwise: both read the views in place.
    assert K.tma_eligible(q, k, v) == (D == 16)
    mask = torch.randn(B, 1, 1, S, device=device)
    copies = record_copy_calls(monkeypatch)
    out = sdpa(q, k, v, mask)
    assert copies == []
    monkeypatch.undo()
    assert_close(out, F.scaled_dot_product_attention(q, k, v, mask))
    assert_matches(sdpa, {"torch": F.scaled_dot_product_attention}, q, k, v, mask)


def test_head_dim_stride_not_one(device):
    base = torch.randn(1, 2, 6, 32, device=device)
    q, k, v = base[..., ::2], base[..., 1::2], base[..., 16:]
    assert q.stride(-1) == 2
    assert not K.tma_eligible(q, k, v)  # pointer loads
    assert_matches(sdpa, {"torch": F.scaled_dot_product_attention}, q.requires_grad_(), k, v, is_causal=True)


@pytest.mark.parametrize("shape", [(0, 2, 5, 5), (2, 2, 0, 5), (2, 2, 5, 0)], ids=["batch0", "sq0", "sk0"])
def test_empty_inputs(device, shape):
    B, H, Sq, Sk = shape
    q = torch.randn(B, H, Sq, 8, device=device, requires_grad=True)
    k = torch.randn(B, H, Sk, 8, device=device, requires_grad=True)
    v = torch.randn(B, H, Sk, 8, device=device, requires_grad=True)
    out = sdpa(q, k, v)
    expected = F.scaled_dot_product_attention(q, k, v)
    assert out.shape == expected.shape
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    for t in (q, k, v):
        assert t.grad.shape == t.shape and not t.grad.any()


# (query, key, value) leading dims that torch's math backend broadcasts, and enable_gqa.
BROADCASTS = {
    "3d_query_4d_key_value": ((3,), (2, 3), (2, 3), False),
    "4d_query_3d_key_value": ((2, 3), (3,), (3,), False),
    "key_value_batch_of_one": ((2, 3), (1, 3), (1, 3), False),
    "one_key_value_head": ((2, 3), (2, 1), (2, 1), False),
    "5d_query_4d_key_value": ((2, 2, 3), (2, 3), (2, 3), False),
    "gqa_with_batch_of_one": ((2, 4), (1, 2), (1, 2), True),
    "gqa_key_and_value_heads_differ": ((2, 4), (2, 1), (2, 4), True),
}


@pytest.mark.parametrize("case", list(BROADCASTS))
def test_leading_dims_broadcast_as_in_torch(device, case):
    lead_q, lead_k, lead_v, gqa = BROADCASTS[case]
    q = torch.randn(*lead_q, 5, 8, device=device, requires_grad=True)
    k = torch.randn(*lead_k, 6, 8, device=device, requires_grad=True)
    v = torch.randn(*lead_v, 6, 4, device=device, requires_grad=True)
    mask = torch.randn(5, 6, device=device, requires_grad=True)
    assert_matches(sdpa, {"torch": F.scaled_dot_product_attention}, q, k, v, mask, enable_gqa=gqa)


def test_broadcast_key_and_value_are_read_in_place(device, monkeypatch):
    q = torch.randn(2, 3, 5, 8, device=device, requires_grad=True)
    k, v = torch.randn(3, 6, 8, device=device), torch.randn(3, 6, 8, device=device)
    copies = record_copy_calls(monkeypatch)
    sdpa(q, k, v).sum().backward()
    assert copies == []


def test_gradcheck_broadcast_query(device):
    q = torch.randn(3, 4, 8, device=device, requires_grad=True)
    k = torch.randn(2, 3, 5, 8, device=device, requires_grad=True)
    v = torch.randn(1, 3, 5, 8, device=device, requires_grad=True)
    assert_gradcheck(sdpa, q, k, v, fast_mode=True)


def test_head_dim_zero_is_uniform_attention_as_in_torch(device):
    q = torch.randn(1, 2, 4, 0, device=device, requires_grad=True)
    k = torch.randn(1, 2, 5, 0, device=device, requires_grad=True)
    v = torch.randn(1, 2, 5, 3, device=device, requires_grad=True)
    for scale in (None, 0.5):
        assert_matches(sdpa, {"torch": F.scaled_dot_product_attention}, q, k, v, scale=scale)


@pytest.mark.parametrize("dropout_p", [-0.5, float("nan"), 0])
def test_dropout_p_that_is_not_positive_drops_nothing_as_in_torch(device, dropout_p):
    q, k, v, _ = Config("p0", 1, 2, 2, 4, 5, 8).tensors(device)

    def torch_math(*args, **kwargs):
        # torch's fused CPU backward refuses any p != 0; its math backend is the semantics.
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(*args, **kwargs)

    assert_matches(sdpa, {"torch": torch_math}, q, k, v, dropout_p=dropout_p)


def test_scale_as_int_bool_or_one_element_tensor_as_in_torch(device):
    q, k, v, _ = Config("scale_types", 1, 2, 2, 4, 5, 8).tensors(device)
    for scale in (2, True, torch.tensor(0.3)):
        assert_matches(sdpa, {"torch": F.scaled_dot_product_attention}, q, k, v, scale=scale)


def test_user_expanded_mask_is_read_in_place(device, monkeypatch):
    q, k, v, _ = Config("expanded_mask", 2, 2, 2, 4, 5, 8).tensors(device)
    mask = torch.randn(5, device=device).expand(2, 2, 4, 5)
    assert mask.stride() == (0, 0, 0, 1)
    copies = record_copy_calls(monkeypatch)
    out = sdpa(q, k, v, mask)
    assert copies == []
    monkeypatch.undo()
    assert_close(out, F.scaled_dot_product_attention(q, k, v, mask))


@pytest.mark.parametrize("mask", ["none", "additive_grad"])
def test_double_backward_is_refused_naming_the_op(device, mask):
    q, k, v, attn_mask = Config("double", 1, 2, 2, 4, 5, 8, mask=mask).tensors(device)
    out = sdpa(q, k, v, attn_mask)
    with pytest.raises(RuntimeError, match="scaled_dot_product_attention: double backward is not supported"):
        torch.autograd.grad(out.sum(), q, create_graph=True)
    # First-order gradients are unchanged (and still what torch computes).
    leaves = [t for t in (q, k, v, attn_mask) if t is not None]
    ours = torch.autograd.grad(sdpa(q, k, v, attn_mask).sum(), leaves)
    theirs = torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, attn_mask).sum(), leaves)
    for g, tg in zip(ours, theirs):
        assert_close(g, tg)


def test_autocast_casts_like_torch(device):
    q, k, v, mask = (t.detach() for t in Config("ac", 1, 2, 2, 5, 6, 16, mask="additive").tensors(device))
    with torch.autocast(device.type, dtype=torch.bfloat16):
        ours = sdpa(q, k, v, mask)
        theirs = F.scaled_dot_product_attention(q, k, v, mask)
    assert ours.dtype == theirs.dtype == torch.bfloat16
    assert_close(ours, reference.scaled_dot_product_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask))


def test_reference_backend_routes_to_the_reference(device, monkeypatch):
    def kernel_must_not_run(*args, **kwargs):
        raise AssertionError("the Triton kernel ran under TRITONPROP_BACKEND=reference")

    monkeypatch.setattr(K, "forward", kernel_must_not_run)
    monkeypatch.setenv(backend.BACKEND_ENV, "reference")
    q, k, v, mask = Config("ref", 1, 2, 1, 5, 6, 8, mask="bool").tensors(device)
    assert_close(sdpa(q, k, v, mask, enable_gqa=True), F.scaled_dot_product_attention(q, k, v, mask, enable_gqa=True))


def test_float32_dot_precision_follows_the_matmul_tf32_flag(monkeypatch):
    from tritonprop.kernels import _common

    monkeypatch.setattr(backend, "interpreting", lambda: False)
    for flag, expected in ((True, "tf32"), (False, "ieee")):
        torch.backends.cuda.matmul.allow_tf32 = flag
        assert _common.dot_options(torch.float32, K._allow_tf32(K.TF32_FLAG))["INPUT_PRECISION"] == expected


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case,error,match", [
    ("head_dim_mismatch", RuntimeError, r"key's head dim \(4\) must equal query's \(8\)"),
    ("kv_length_mismatch", RuntimeError, r"value's sequence length \(3\) must equal key's \(6\)"),
    ("gqa_heads_do_not_divide", RuntimeError,
     r"number of heads in key and value \(2 and 2\) must divide .* query \(3\)"),
    ("heads_do_not_broadcast", RuntimeError, r"leading \(batch and head\) dims of query \[2, 4\], key \[2, 2\]"),
    ("mask_does_not_broadcast", RuntimeError, r"attn_mask of shape \[3, 5, 6\] does not broadcast"),
    ("mask_integer", RuntimeError, "expected attn_mask dtype to be bool or float"),
    ("dtype_mismatch", RuntimeError, "expected query, key, and value to have the same dtype"),
    ("one_dimensional", RuntimeError, "at least 2 dimensional"),
    ("batch_mismatch", RuntimeError, r"leading \(batch and head\) dims of query \[2, 4\], key \[3, 4\]"),
    ("integer_query", RuntimeError, "query, key and value must be floating-point tensors"),
    ("dropout_p_above_one", RuntimeError, "dropout probability has to be between 0 and 1, but got 1.5"),
    ("dropout_p_not_a_number", TypeError, "dropout_p must be a float, got str"),
    ("scale_not_a_number", TypeError, "scale must be a float or None, got str"),
    ("is_causal_not_bool", TypeError, "is_causal must be a bool, got int"),
    ("enable_gqa_not_bool", TypeError, "enable_gqa must be a bool, got int"),
    ("not_a_tensor", TypeError, "value must be a torch.Tensor"),
])
def test_bad_arguments_name_the_argument(case, error, match):
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 8)
    kwargs = dict(query=q, key=k, value=v)
    if case == "head_dim_mismatch":
        kwargs["key"] = torch.randn(2, 4, 6, 4)
    elif case == "kv_length_mismatch":
        kwargs["value"] = torch.randn(2, 4, 3, 8)
    elif case == "gqa_heads_do_not_divide":
        kwargs.update(query=torch.randn(2, 3, 5, 8), key=torch.randn(2, 2, 6, 8), value=torch.randn(2, 2, 6, 8),
                      enable_gqa=True)
    elif case == "heads_do_not_broadcast":
        kwargs.update(key=torch.randn(2, 2, 6, 8), value=torch.randn(2, 2, 6, 8))
    elif case == "mask_does_not_broadcast":
        kwargs["attn_mask"] = torch.ones(3, 5, 6, dtype=torch.bool)
    elif case == "mask_integer":
        kwargs["attn_mask"] = torch.ones(5, 6, dtype=torch.int64)
    elif case == "dtype_mismatch":
        kwargs["key"] = k.double()
    elif case == "one_dimensional":
        kwargs["query"] = torch.randn(8)
    elif case == "batch_mismatch":
        kwargs.update(key=torch.randn(3, 4, 6, 8), value=torch.randn(3, 4, 6, 8))
    elif case == "integer_query":
        kwargs.update(query=q.long(), key=k.long(), value=v.long())
    elif case == "dropout_p_above_one":
        kwargs["dropout_p"] = 1.5
    elif case == "dropout_p_not_a_number":
        kwargs["dropout_p"] = "0.1"
    elif case == "scale_not_a_number":
        kwargs["scale"] = "0.1"
    elif case == "is_causal_not_bool":
        kwargs["is_causal"] = 1
    elif case == "enable_gqa_not_bool":
        kwargs["enable_gqa"] = 1
    elif case == "not_a_tensor":
        kwargs["value"] = v.tolist()
    # torch raises the same type. Its math backend is the one asked: the fused CPU kernel it would
    # pick for some of these inputs skips checks (it returns a value for a short `value`).
    with pytest.raises(error), sdpa_kernel(SDPBackend.MATH):
        F.scaled_dot_product_attention(**kwargs)
    with pytest.raises(error, match=f"scaled_dot_product_attention: .*{match}"):
        sdpa(**kwargs)


# ------------------------------------------------------------------------------------------------
# The numpy reference: the hand-derived backward agrees with autograd
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_numpy_reference_backward_matches_autograd(mask_kind):
    q, k, v = (torch.randn(2, 3, n, 5, dtype=torch.float64, requires_grad=True) for n in (4, 6, 6))
    mask = {"none": None, "bool": torch.rand(2, 1, 4, 6) > 0.3,
            "additive": torch.randn(4, 6, dtype=torch.float64, requires_grad=True)}[mask_kind]
    if mask_kind == "bool":
        mask[0, 0, 1] = False
    out = reference.scaled_dot_product_attention(q, k, v, mask, scale=0.4)
    do = torch.randn_like(out)
    out.backward(do)
    numpy_mask = None if mask is None else mask.detach().numpy()
    o, cache = attention_numpy.attention_forward(q.detach().numpy(), k.detach().numpy(), v.detach().numpy(),
                                                 numpy_mask, scale=0.4)
    dq, dk, dv, ds = attention_numpy.attention_backward(do.numpy(), cache)
    np.testing.assert_allclose(o, out.detach().numpy(), atol=1e-12)
    for ours, theirs in ((dq, q.grad), (dk, k.grad), (dv, v.grad)):
        np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-12)
    if mask_kind == "additive":
        np.testing.assert_allclose(ds.sum(axis=(0, 1)), mask.grad.numpy(), atol=1e-12)
