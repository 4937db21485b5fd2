"""conv2d: gradcheck, parity with both references and torch, layouts, epilogue, BN folding, errors."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import assert_close, assert_gradcheck, assert_matches, record_copy_calls
from tritonprop import backend, ops
from tritonprop.kernels import conv2d as K
from tritonprop.ops.reference import conv2d as reference


# fp32 parity is checked in full precision (tests/conftest.py: strict_float32).
pytestmark = pytest.mark.usefixtures("strict_float32")


@dataclass(frozen=True)
class Config:
    name: str
    input: tuple  # (N, C, H, W)
    out_channels: int
    kernel: tuple  # (R, S)
    stride: object = 1
    padding: object = 0
    dilation: object = 1
    groups: int = 1
    bias: bool = True

    def tensors(self, device="cpu", dtype=torch.float32):
        C = self.input[1]
        x = torch.randn(self.input, device=device).to(dtype).requires_grad_()
        w = (torch.randn(self.out_channels, C // self.groups, *self.kernel, device=device) * 0.5).to(dtype).requires_grad_()
        b = torch.randn(self.out_channels, device=device).to(dtype).requires_grad_() if self.bias else None
        return x, w, b

    @property
    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)


CONFIGS = [
    Config("odd_primes", (2, 3, 7, 5), 5, (3, 3), padding=1),
    Config("stride2", (2, 4, 9, 7), 6, (3, 3), stride=2, padding=1),
    Config("stride3_rect_kernel", (1, 3, 11, 8), 4, (3, 2), stride=(3, 2), padding=(1, 0)),
    Config("dilation2", (2, 3, 9, 9), 4, (3, 3), padding=2, dilation=2),
    Config("groups2", (2, 4, 6, 7), 6, (3, 3), padding=1, groups=2),
    Config("depthwise", (2, 4, 6, 5), 4, (3, 3), padding=1, groups=4),
    Config("depthwise_multiplier2", (1, 3, 5, 5), 6, (3, 3), groups=3),
    Config("depthwise_stride2_dilated", (2, 3, 9, 8), 3, (3, 2), stride=2, padding=(2, 1), dilation=(2, 1), groups=3),
    Config("single_input_channel", (2, 1, 7, 6), 4, (3, 3), stride=2),
    Config("1x1", (2, 5, 4, 3), 7, (1, 1)),
    Config("5x5_same", (1, 2, 8, 7), 3, (5, 5), padding="same"),
    Config("even_kernel_same_dilated", (1, 2, 6, 7), 3, (4, 2), padding="same", dilation=(1, 2)),
    Config("valid_no_bias", (2, 3, 6, 6), 4, (3, 3), padding="valid", bias=False),
]
IDS = [c.name for c in CONFIGS]


# ------------------------------------------------------------------------------------------------
# gradcheck (float64): fast mode over the grid, the full Jacobian on small cases (and the grid under -m slow)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_gradcheck_input_weight_bias(device, config):
    x, w, b = config.tensors(device)
    assert_gradcheck(ops.conv2d, x, w, b, fast_mode=True, **config.kwargs)


@pytest.mark.parametrize("config", [
    Config("tiny_stride2", (1, 2, 5, 4), 2, (3, 2), stride=2, padding=1),
    Config("tiny_groups", (1, 2, 4, 4), 2, (2, 2), groups=2),
], ids=lambda c: c.name)
def test_gradcheck_full_jacobian_small(device, config):
    x, w, b = config.tensors(device)
    assert_gradcheck(ops.conv2d, x, w, b, **config.kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_gradcheck_full_jacobian_grid(device, config):
    x, w, b = config.tensors(device)
    assert_gradcheck(ops.conv2d, x, w, b, **config.kwargs)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_gradcheck_fused_epilogue(device, activation):
    x, w, b = Config("epilogue", (2, 3, 5, 5), 4, (3, 3), padding=1).tensors(device)
    assert_gradcheck(ops.conv2d, x, w, b, padding=1, activation=activation, fast_mode=True)


# ------------------------------------------------------------------------------------------------
# Parity with the loop and unfold references and with F.conv2d
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_matches_both_references_and_torch_fp32(device, config):
    x, w, b = config.tensors(device)
    oracles = {"loop": reference.conv2d_loop, "unfold": reference.conv2d_unfold, "torch": F.conv2d}
    out = assert_matches(ops.conv2d, oracles, x, w, b, **config.kwargs)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("channels_last", [False, True], ids=["NCHW", "channels_last"])
@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[4], CONFIGS[5]], ids=lambda c: c.name)
def test_compiled_tile_plans_match_torch(device, config, channels_last, compiled_plans):
    x, w, b = config.tensors(device)
    if channels_last:
        x = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    # The GPU's plan indeed: 64 output positions per tile, where the interpreter's takes 256.
    assert K.gemm_configs(x, 4096, config.out_channels, x.shape[1])[0]["BLOCK_M"] == 64
    assert_matches(ops.conv2d, {"torch": F.conv2d}, x, w, b, **config.kwargs)


def _torch_in_float32(input, weight, bias=None, *args, **kwargs):
    # The semantics of our low-precision conv: fp32 accumulation, one rounding at the end.
    return F.conv2d(input.float(), weight.float(), None if bias is None else bias.float(), *args, **kwargs).to(input.dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[1], CONFIGS[5]], ids=lambda c: c.name)
def test_matches_torch_in_low_precision(device, config, dtype):
    x, w, b = config.tensors(device, dtype)
    out = assert_matches(ops.conv2d, {"torch (fp32 math)": _torch_in_float32, "unfold": reference.conv2d_unfold},
                         x, w, b, **config.kwargs)
    assert out.dtype == dtype


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_fused_epilogue_matches_conv_then_activation(device, activation):
    x, w, b = CONFIGS[1].tensors(device)
    act = {"relu": torch.relu, "gelu": F.gelu}[activation]

    def conv_then_activation(input, weight, bias, *, activation, **kwargs):
        return act(F.conv2d(input, weight, bias, **kwargs))

    out = assert_matches(ops.conv2d, {"torch": conv_then_activation, "unfold": reference.conv2d_unfold},
                         x, w, b, activation=activation, **CONFIGS[1].kwargs)
    if activation == "relu":
        assert (out == 0).any() and (out > 0).any()


@pytest.mark.parametrize("splits", [1, 2, 5])
def test_weight_gradient_split_k_is_exact_and_deterministic(device, splits):
    x = torch.randn(3, 4, 7, 6, device=device)
    w = torch.randn(5, 4, 3, 3, device=device)
    dz = torch.randn(3, 5, 7, 6, device=device)
    geometry = ((1, 1), (1, 1), (1, 1), 1)
    dw, db = K.backward_weight(dz, x, w, *geometry, splits=splits)
    again = K.backward_weight(dz, x, w, *geometry, splits=splits)
    assert torch.equal(dw, again[0]) and torch.equal(db, again[1])
    wr = w.clone().requires_grad_()
    F.conv2d(x, wr, padding=1).backward(dz)
    assert_close(dw, wr.grad, name="dweight")
    assert_close(db, dz.sum(dim=(0, 2, 3)), name="dbias")


@pytest.mark.parametrize("config", [CONFIGS[5], CONFIGS[7]], ids=lambda c: c.name)
def test_one_channel_per_group_runs_the_direct_kernels(device, config, monkeypatch):
    def gemm_must_not_run(*args, **kwargs):
        raise AssertionError("a GEMM kernel ran for a depthwise convolution")

    for name in ("conv2d_forward_kernel", "conv2d_backward_input_kernel", "conv2d_backward_weight_kernel"):
        monkeypatch.setattr(K, name, type("Guard", (), {"__getitem__": lambda self, grid: gemm_must_not_run})())
    x, w, b = config.tensors(device)
    assert_matches(ops.conv2d, {"torch": F.conv2d}, x, w, b, **config.kwargs)


@pytest.mark.parametrize("splits", [1, 3])
def test_depthwise_weight_gradient_split_k(device, splits):
    x = torch.randn(2, 4, 6, 5, device=device)
    w = torch.randn(8, 1, 3, 3, device=device)
    dz = torch.randn(2, 8, 6, 5, device=device)
    dw, db = K.backward_weight(dz, x, w, (1, 1), (1, 1), (1, 1), 4, splits=splits)
    wr = w.clone().requires_grad_()
    F.conv2d(x, wr, padding=1, groups=4).backward(dz)
    assert_close(dw, wr.grad, name="dweight")
    assert_close(db, dz.sum(dim=(0, 2, 3)), name="dbias")


# ------------------------------------------------------------------------------------------------
# Layouts and views
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["input", "weight", "both"])
def test_channels_last_matches_and_keeps_torch_layout(device, which):
    x, w, b = CONFIGS[0].tensors(device)
    if which in ("input", "both"):
        x = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    if which in ("weight", "both"):
        w = w.detach().to(memory_format=torch.channels_last).requires_grad_()
    out = assert_matches(ops.conv2d, {"torch": F.conv2d}, x, w, b, padding=1)
    expected = F.conv2d(x.detach(), w.detach(), b.detach(), padding=1)
    assert out.stride() == expected.stride()


@pytest.mark.parametrize("config", [c for c in CONFIGS if c.groups == 1 or c.input[1] // c.groups > 1],
                         ids=lambda c: c.name)
def test_channels_last_input_gradients_every_geometry(device, config):
    # A channels_last input makes the wgrad take its columns as (r, s, c), channels innermost, and
    # sum its partials into dw seen as (K, R, S, C/groups) (kernels/conv2d.py): the taps of every
    # geometry must still land on their own weights.
    x, w, b = config.tensors(device, torch.float64)
    x = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    assert_matches(ops.conv2d, {"torch": F.conv2d}, x, w, b, **config.kwargs)
    if config.name in ("groups2", "stride3_rect_kernel"):
        assert_gradcheck(ops.conv2d, x, w, b, fast_mode=True, **config.kwargs)


def test_channels_last_input_is_not_copied(device, monkeypatch):
    # More channels than the stem kernel takes (K.TAP_CHANNELS): read in place.
    x, w, b = (t.detach() for t in Config("wide", (2, 6, 7, 5), 5, (3, 3)).tensors(device))
    x = x.to(memory_format=torch.channels_last)
    assert not K.takes_taps_kernel(x, w, 1, (1, 1))
    copies = record_copy_calls(monkeypatch)
    ops.conv2d(x, w, b, padding=1)
    assert copies == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
def test_stem_runs_the_taps_kernel_and_matches_torch(device, dtype, activation):
    # A 3-channel channels_last input, 7x7 stride 2 padding 3 (a ResNet stem, small): the forward
    # reads a zero-padded 4-channel copy, a whole row of taps per step (conv2d_forward_taps_kernel).
    x = torch.randn(2, 3, 13, 11, device=device).to(dtype).to(memory_format=torch.channels_last).requires_grad_()
    w = (torch.randn(5, 3, 7, 7, device=device) * 0.1).to(dtype).requires_grad_()
    b = torch.randn(5, device=device).to(dtype).requires_grad_()
    assert K.takes_taps_kernel(x, w, 1, (1, 1))
    act = {None: lambda y: y, "relu": torch.relu, "gelu": F.gelu}[activation]

    def oracle(input, weight, bias, *, activation, **kwargs):
        # bf16: torch's conv in fp32 on the same bf16 values, rounded once, as our fp32 accumulator is.
        y = act(F.conv2d(input.float(), weight.float(), bias.float(), **kwargs))
        return y.to(dtype)

    out = assert_matches(ops.conv2d, {"torch": oracle}, x, w, b, stride=2, padding=3, activation=activation,
                         grad=dtype == torch.float32)
    assert out.shape == (2, 5, 7, 6) and out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("view", ["strided_w", "cropped_h", "channel_slice", "transposed_hw"])
def test_sliced_views_as_input(device, view):
    base = torch.randn(2, 6, 9, 12, device=device)
    x = {
        "strided_w": lambda t: t[:, :3, :, ::2],
        "cropped_h": lambda t: t[:, :3, 1:8],
        "channel_slice": lambda t: t[:, 1:4],
        "transposed_hw": lambda t: t[:, :3].transpose(2, 3),
    }[view](base)
    assert not x.is_contiguous()
    _, w, b = Config("view", (2, 3, 1, 1), 4, (3, 3)).tensors(device)
    assert_matches(ops.conv2d, {"torch": F.conv2d}, x.requires_grad_(), w, b, padding=1, stride=(1, 2))


def test_non_contiguous_weight(device):
    x, _, b = CONFIGS[0].tensors(device)
    w = torch.randn(3, 3, 5, 3, device=device).transpose(0, 2).requires_grad_()  # (5, 3, 3, 3), strided
    assert_matches(ops.conv2d, {"torch": F.conv2d}, x, w, b, padding=1)


def test_expanded_upstream_gradient(device):
    x, w, b = CONFIGS[1].tensors(device)
    xr, wr, br = (t.detach().clone().requires_grad_() for t in (x, w, b))
    ops.conv2d(x, w, b, stride=2, padding=1, activation="gelu").sum().backward()
    F.gelu(F.conv2d(xr, wr, br, stride=2, padding=1)).sum().backward()
    for ours, theirs, name in ((x.grad, xr.grad, "dx"), (w.grad, wr.grad, "dweight"), (b.grad, br.grad, "dbias")):
        assert_close(ours, theirs, name=name)


# ------------------------------------------------------------------------------------------------
# Module, BN folding, autocast, empty and unbatched input
# ------------------------------------------------------------------------------------------------


def test_module_loads_a_torch_state_dict_and_matches(device):
    theirs = torch.nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2)).to(device)
    ours = ops.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2)).to(device)
    assert isinstance(ours, torch.nn.Conv2d)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 7, 8, device=device)
    assert_close(ours(x), theirs(x))
    assert ours.state_dict().keys() == theirs.state_dict().keys()


def test_module_padding_same_and_fused_activation(device):
    theirs = torch.nn.Conv2d(2, 3, 4, padding="same").to(device)
    ours = ops.Conv2d(2, 3, 4, padding="same", activation="relu").to(device)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(1, 2, 6, 5, device=device)
    assert_close(ours(x), torch.relu(theirs(x)))
    assert "activation='relu'" in repr(ours)


def test_module_rejects_other_padding_modes():
    with pytest.raises(NotImplementedError, match="padding_mode='reflect' is not implemented"):
        ops.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
    module = ops.Conv2d(3, 4, 3, padding=1)
    module.padding_mode = "circular"
    with pytest.raises(NotImplementedError, match="padding_mode='circular' is not implemented"):
        module(torch.randn(1, 3, 5, 5))


@pytest.mark.parametrize("activation", [None, "relu"])
def test_fuse_conv_bn_eval_matches_conv_then_bn(device, activation):
    conv = torch.nn.Conv2d(3, 5, 3, padding=1, bias=activation is None).to(device).eval()
    bn = torch.nn.BatchNorm2d(5).to(device).eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
    fused = ops.fuse_conv_bn_eval(conv, bn, activation=activation)
    assert isinstance(fused, ops.Conv2d) and fused.activation == activation
    x = torch.randn(2, 3, 6, 7, device=device)
    expected = bn(conv(x))
    assert_close(fused(x), torch.relu(expected) if activation else expected)


def test_fuse_conv_bn_eval_requires_eval_mode():
    with pytest.raises(ValueError, match="must be in eval mode"):
        ops.fuse_conv_bn_eval(torch.nn.Conv2d(3, 5, 3), torch.nn.BatchNorm2d(5))


def test_autocast_casts_like_torch(device):
    x, w, b = (t.detach() for t in CONFIGS[0].tensors(device))
    with torch.autocast(device.type, dtype=torch.bfloat16):
        ours = ops.conv2d(x, w, b, padding=1)
        theirs = F.conv2d(x, w, b, padding=1)
    assert ours.dtype == theirs.dtype == torch.bfloat16
    assert_close(ours, _torch_in_float32(x.bfloat16(), w.bfloat16(), b.bfloat16(), padding=1))


def test_autocast_takes_a_lower_precision_activation_beside_fp32_weights(device):
    # The second layer of an autocast model: its input is already bf16, its weights are fp32.
    x, w, b = (t.detach() for t in CONFIGS[0].tensors(device))
    with torch.autocast(device.type, dtype=torch.bfloat16):
        ours = ops.conv2d(x.bfloat16(), w, b, padding=1)
        theirs = F.conv2d(x.bfloat16(), w, b, padding=1)
    assert ours.dtype == theirs.dtype == torch.bfloat16
    assert_close(ours, _torch_in_float32(x.bfloat16(), w.bfloat16(), b.bfloat16(), padding=1))


def test_empty_batch(device):
    x = torch.randn(0, 3, 5, 5, device=device, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, device=device, requires_grad=True)
    b = torch.randn(4, device=device, requires_grad=True)
    y = ops.conv2d(x, w, b, stride=2)
    assert y.shape == F.conv2d(x.detach(), w.detach(), b.detach(), stride=2).shape == (0, 4, 2, 2)
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))


def test_unbatched_input(device):
    x = torch.randn(3, 6, 5, device=device, requires_grad=True)
    _, w, b = CONFIGS[0].tensors(device)
    out = assert_matches(ops.conv2d, {"torch": F.conv2d}, x, w, b, padding=1)
    assert out.shape == (5, 6, 5)


def test_reference_backend_routes_to_unfold(device, monkeypatch):
    def kernel_must_not_run(*args, **kwargs):
        raise AssertionError("the Triton kernel ran under TRITONPROP_BACKEND=reference")

    monkeypatch.setattr(K, "forward", kernel_must_not_run)
    monkeypatch.setenv(backend.BACKEND_ENV, "reference")
    x, w, b = CONFIGS[0].tensors(device)
    assert_close(ops.conv2d(x, w, b, padding=1), F.conv2d(x, w, b, padding=1))


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case,error,match", [
    ("channel_mismatch", RuntimeError, r"expected input\[2, 4, 5, 5\] to have 3 channels, but got 4"),
    ("groups_do_not_divide_out_channels", RuntimeError, "expected weight to be divisible by 2 at dimension 0"),
    ("groups_do_not_divide_in_channels", RuntimeError, "to have 4 channels, but got 5 channels"),
    ("kernel_larger_than_padded_input", RuntimeError, "Kernel size can't be greater than actual input size"),
    ("input_5d", RuntimeError, "expected 3D \\(unbatched\\) or 4D \\(batched\\) input"),
    ("weight_3d", RuntimeError, "expected a 4D weight"),
    ("integer_input", RuntimeError, "input dtype torch.int64 and weight dtype torch.float32 should be the same"),
    ("integer_input_and_weight", NotImplementedError, "input of dtype torch.int64 is not supported"),
    ("dtype_mismatch", RuntimeError, "weight dtype torch.float64 should be the same"),
    ("bias_size", RuntimeError, "expected bias to be 1-dimensional with 6 elements"),
    ("zero_stride", RuntimeError, "non-positive stride is not supported"),
    ("negative_padding", RuntimeError, "negative padding is not supported"),
    ("same_with_stride", RuntimeError, "padding='same' is not supported for strided convolutions"),
    ("unknown_padding_string", RuntimeError, "Invalid padding string: 'full'"),
    ("three_strides", RuntimeError, "expected stride to be a single integer value or a list of 2 values"),
    ("zero_groups", RuntimeError, "non-positive groups is not supported"),
    ("unknown_activation", ValueError, "activation must be one of None, 'relu', 'gelu'"),
])
def test_bad_arguments_name_the_argument(case, error, match):
    x = torch.randn(2, 4, 5, 5)
    w = torch.randn(6, 2, 3, 3)
    kwargs = dict(input=x, weight=w, groups=2)
    if case == "channel_mismatch":
        kwargs.update(weight=torch.randn(6, 3, 3, 3), groups=1)
    elif case == "groups_do_not_divide_out_channels":
        kwargs["weight"] = torch.randn(5, 2, 3, 3)
    elif case == "groups_do_not_divide_in_channels":
        kwargs["input"] = torch.randn(2, 5, 5, 5)
    elif case == "kernel_larger_than_padded_input":
        kwargs.update(weight=torch.randn(6, 4, 7, 7), groups=1)
    elif case == "input_5d":
        kwargs["input"] = torch.randn(1, 2, 4, 5, 5)
    elif case == "weight_3d":
        kwargs["weight"] = torch.randn(6, 2, 3)
    elif case == "integer_input":
        kwargs["input"] = x.long()
    elif case == "integer_input_and_weight":
        kwargs.update(input=x.long(), weight=w.long())
    elif case == "dtype_mismatch":
        kwargs["weight"] = w.double()
    elif case == "bias_size":
        kwargs["bias"] = torch.randn(5)
    elif case == "zero_stride":
        kwargs["stride"] = 0
    elif case == "negative_padding":
        kwargs["padding"] = -1
    elif case == "same_with_stride":
        kwargs.update(padding="same", stride=2)
    elif case == "unknown_padding_string":
        kwargs["padding"] = "full"
    elif case == "three_strides":
        kwargs["stride"] = (1, 1, 1)
    elif case == "zero_groups":
        kwargs["groups"] = 0
    elif case == "unknown_activation":
        kwargs["activation"] = "tanh"
    with pytest.raises(error, match=match):
        ops.conv2d(**kwargs)


@pytest.mark.parametrize("name,kwargs", [
    ("stride", dict(stride=1.0)), ("stride", dict(stride=None)), ("stride", dict(stride=True)),
    ("stride", dict(stride=(1, 1.0))), ("stride", dict(stride="1")), ("stride", dict(stride=())),
    ("stride", dict(stride=-1)), ("padding", dict(padding=1.0)), ("padding", dict(padding=None)),
    ("padding", dict(padding=(1, 1, 1))), ("padding", dict(padding=(0, -1))), ("padding", dict(padding="full")),
    ("padding", dict(padding="same", stride=(1, 2))), ("dilation", dict(dilation=1.5)),
    ("dilation", dict(dilation=None)), ("dilation", dict(dilation=0)), ("groups", dict(groups=1.0)),
    ("groups", dict(groups=None)), ("groups", dict(groups=True)), ("groups", dict(groups=-1)),
    ("bias", dict(bias=[0.0] * 6)), ("bias", dict(bias=torch.zeros(6, dtype=torch.float64))),
    ("bias", dict(bias=torch.zeros(6, 1))), ("weight", dict(weight=torch.randn(6, 4, 3, 3, dtype=torch.float64))),
    ("weight", dict(weight=torch.randn(0, 4, 3, 3))), ("input", dict(input=torch.randn(2, 4, 0, 5))),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_arguments_raise_the_type_torch_raises(name, kwargs):
    call = dict(input=torch.randn(2, 4, 5, 5), weight=torch.randn(6, 4, 3, 3))
    call.update(kwargs)
    with pytest.raises(Exception) as theirs:
        F.conv2d(**call)
    with pytest.raises(type(theirs.value), match=f"^conv2d: .*{name}") as ours:
        ops.conv2d(**call)
    assert type(ours.value) is type(theirs.value)


@pytest.mark.parametrize("kwargs", [
    dict(stride=[2, 1]), dict(stride=(2,)), dict(padding=np.int64(1)),
    dict(dilation=(np.int32(2), 1), padding=2), dict(groups=np.int64(2)),
], ids=["list", "one_tuple", "numpy_padding", "numpy_dilation", "numpy_groups"])
def test_int_arguments_torch_accepts_are_accepted(device, kwargs):
    x, w, b = Config("ints", (1, 4, 6, 5), 4, (3, 3), groups=2 if "groups" in kwargs else 1).tensors(device)
    assert_matches(ops.conv2d, {"torch": F.conv2d}, x, w, b, **kwargs)


def test_zero_input_channels_match_torch(device):
    # torch's answer: an output with no channels (not out_channels of them), and zero gradients.
    x = torch.randn(2, 0, 4, 4, device=device, requires_grad=True)
    w = torch.randn(3, 0, 3, 3, device=device, requires_grad=True)
    b = torch.randn(3, device=device, requires_grad=True)
    out = assert_matches(ops.conv2d, {"torch": F.conv2d}, x, w, b, padding=1)
    assert out.shape == (2, 0, 4, 4)


@pytest.mark.parametrize("view", ["strided", "expanded"])
def test_bias_is_read_by_its_stride(device, view):
    x, w, _ = CONFIGS[0].tensors(device)
    base = torch.randn(10, device=device, requires_grad=True) if view == "strided" else \
        torch.tensor(0.75, device=device, requires_grad=True)
    make_bias = (lambda t: t[::2]) if view == "strided" else (lambda t: t.expand(5))
    for activation, torch_activation in ((None, lambda y: y), ("gelu", F.gelu)):
        ours = ops.conv2d(x, w, make_bias(base), padding=1, activation=activation)
        theirs = torch_activation(F.conv2d(x, w, make_bias(base), padding=1))
        assert_close(ours, theirs)
        g = torch.randn_like(ours)
        for name, a, e in zip(("x", "weight", "bias base"), torch.autograd.grad(ours, (x, w, base), g),
                              torch.autograd.grad(theirs, (x, w, base), g)):
            assert_close(a, e, name=f"gradient of {name} ({activation})")


@pytest.mark.parametrize("layout", ["channels_last", "strided_in_channels", "expanded"])
@pytest.mark.parametrize("groups", [1, 3], ids=["dense", "depthwise"])
def test_weight_with_any_strides(device, layout, groups):
    x = torch.randn(2, 3, 6, 5, device=device, requires_grad=True)
    cg = 3 // groups
    if layout == "channels_last":
        w = torch.randn(4 if groups == 1 else 3, cg, 3, 3, device=device).to(memory_format=torch.channels_last)
    elif layout == "strided_in_channels":
        w = torch.randn(4 if groups == 1 else 3, 2 * cg, 3, 3, device=device)[:, ::2]
    else:
        w = torch.randn(1, cg, 3, 3, device=device).expand(4 if groups == 1 else 3, cg, 3, 3)
    w.requires_grad_()
    b = torch.randn(w.shape[0], device=device)
    ours = ops.conv2d(x, w, b, padding=1, groups=groups)
    theirs = F.conv2d(x, w, b, padding=1, groups=groups)
    assert_close(ours, theirs)
    g = torch.randn_like(ours)
    for name, a, e in zip(("x", "weight"), torch.autograd.grad(ours, (x, w), g), torch.autograd.grad(theirs, (x, w), g)):
        assert_close(a, e, name=f"gradient of {name}")


def test_weight_gradient_of_a_permuted_weight(device):
    x = torch.randn(2, 3, 5, 5, device=device)
    w = torch.randn(4, 3, 3, 3, device=device).to(memory_format=torch.channels_last).requires_grad_()
    assert not w.is_contiguous()
    assert_matches(ops.conv2d, {"torch": F.conv2d}, x, w, None, padding=1)


def test_module_with_non_contiguous_parameters(device):
    theirs = torch.nn.Conv2d(3, 4, 3, padding=1).to(device)
    ours = ops.Conv2d(3, 4, 3, padding=1).to(device)
    weight = torch.randn(4, 6, 3, 3, device=device)[:, ::2]
    bias = torch.randn(8, device=device)[1::2]
    for module in (ours, theirs):
        module.weight = torch.nn.Parameter(weight)
        module.bias = torch.nn.Parameter(bias)
    assert not ours.bias.is_contiguous() and not ours.weight.is_contiguous()
    x = torch.randn(2, 3, 5, 4, device=device)
    y_ours, y_theirs = ours(x), theirs(x)
    assert_close(y_ours, y_theirs)
    g = torch.randn_like(y_ours)
    grads = torch.autograd.grad(y_ours, (ours.weight, ours.bias), g)
    expected = torch.autograd.grad(y_theirs, (theirs.weight, theirs.bias), g)
    for name, a, e in zip(("weight", "bias"), grads, expected):
        assert_close(a, e, name=f"gradient of {name}")


def test_float32_dot_precision_follows_the_cudnn_tf32_flag(monkeypatch):
    # Compiled kernels use TF32 exactly when torch's conv would; the interpreter is always exact.
    from tritonprop.kernels import _common

    monkeypatch.setattr(backend, "interpreting", lambda: False)
    for flag, expected in ((True, "tf32"), (False, "ieee")):
        torch.backends.cudnn.allow_tf32 = flag
        assert _common.dot_options(torch.float32, K._allow_tf32(K.TF32_FLAG))["INPUT_PRECISION"] == expected
    assert _common.dot_options(torch.bfloat16, True) == dict(INPUT_PRECISION="ieee", UPCAST_OPERANDS=False)


def test_fused_relu_keeps_nan_like_torch(device):
    # torch's relu keeps NaN (and passes its gradient); compiled tl.maximum would turn it into 0.
    x, w, b = (t.detach() for t in CONFIGS[0].tensors(device))
    x[0, 1, 3, 2] = float("nan")
    ours = ops.conv2d(x, w, b, padding=1, activation="relu")
    theirs = torch.relu(F.conv2d(x, w, b, padding=1))
    assert ours.isnan().sum() == theirs.isnan().sum() > 0
    assert_close(ours, theirs)


def test_autocast_leaves_float64_alone_like_torch(device):
    x, w, b = (t.detach().double() for t in CONFIGS[0].tensors(device))
    with torch.autocast(device.type, dtype=torch.bfloat16):
        assert ops.conv2d(x, w, b, padding=1).dtype == F.conv2d(x, w, b, padding=1).dtype == torch.float64
