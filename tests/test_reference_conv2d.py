"""Conv2d references: the loop, unfold and numpy versions agree with F.conv2d; the geometry follows torch's rules."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import assert_close, assert_matches
from tritonprop.ops.reference import conv2d_numpy
from tritonprop.ops.reference.conv2d import conv2d_geometry, conv2d_loop, conv2d_unfold

# torch's own 'same' with an even kernel warns that it copies the input; nothing to act on here.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")

REFERENCES = [pytest.param(conv2d_loop, id="loop"), pytest.param(conv2d_unfold, id="unfold")]

# (input shape, weight shape, has bias, conv kwargs): odd and prime sizes throughout.
CASES = [
    pytest.param((2, 3, 7, 5), (4, 3, 3, 3), True, {}, id="3x3"),
    pytest.param((2, 3, 7, 5), (4, 3, 3, 3), True, dict(padding=1), id="padding1"),
    pytest.param((2, 3, 7, 5), (4, 3, 3, 3), True, dict(stride=2, padding=1), id="stride2"),
    pytest.param((1, 3, 11, 7), (2, 3, 3, 3), True, dict(stride=(3, 2), padding=(2, 1)), id="stride(3,2)-padding(2,1)"),
    pytest.param((2, 3, 7, 5), (2, 3, 2, 2), True, dict(stride=3), id="stride3-leaves-rows-unread"),
    pytest.param((2, 3, 7, 5), (4, 3, 3, 3), True, dict(dilation=2, padding=2), id="dilation2"),
    pytest.param((1, 3, 9, 7), (3, 3, 3, 2), True, dict(dilation=(2, 1), stride=(1, 2)),
                 id="dilation(2,1)-stride(1,2)"),
    pytest.param((2, 4, 7, 5), (6, 2, 3, 3), True, dict(groups=2, padding=1), id="groups2"),
    pytest.param((2, 3, 7, 5), (3, 1, 3, 3), True, dict(groups=3, padding=1), id="depthwise"),
    pytest.param((2, 3, 7, 5), (6, 1, 3, 3), True, dict(groups=3), id="depthwise-multiplier2"),
    pytest.param((2, 3, 7, 5), (5, 3, 1, 1), True, {}, id="1x1"),
    pytest.param((1, 3, 7, 7), (2, 3, 5, 5), True, dict(padding=2), id="5x5"),
    pytest.param((2, 3, 7, 5), (4, 3, 3, 1), True, dict(padding=(1, 0)), id="3x1"),
    pytest.param((2, 3, 7, 5), (4, 3, 2, 5), True, dict(padding="same"), id="2x5-same"),
    pytest.param((2, 3, 7, 5), (4, 3, 3, 3), True, dict(padding="same"), id="same-odd"),
    pytest.param((2, 3, 7, 5), (2, 3, 4, 2), True, dict(padding="same"), id="same-even"),
    pytest.param((1, 3, 7, 8), (2, 3, 4, 2), True, dict(padding="same", dilation=(1, 3)), id="same-even-dilated"),
    pytest.param((2, 3, 7, 5), (4, 3, 3, 3), True, dict(padding="valid"), id="valid"),
    pytest.param((2, 3, 7, 5), (4, 3, 3, 3), False, dict(stride=2), id="no-bias"),
    pytest.param((1, 2, 3, 4), (3, 2, 3, 4), True, {}, id="kernel-covers-image"),
    pytest.param((2, 4, 9, 8), (4, 2, 3, 2), True, dict(stride=2, padding=(2, 1), dilation=2, groups=2),
                 id="stride-dilation-groups-padding"),
]


def make_args(input_shape, weight_shape, has_bias, dtype=torch.float64):
    x = torch.randn(input_shape, dtype=dtype, requires_grad=True)
    w = torch.randn(weight_shape, dtype=dtype, requires_grad=True)
    b = torch.randn(weight_shape[0], dtype=dtype, requires_grad=True) if has_bias else None
    return x, w, b


def torch_conv_then_activation(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation):
    y = F.conv2d(input, weight, bias, stride, padding, dilation, groups)
    return torch.relu(y) if activation == "relu" else F.gelu(y)


@pytest.mark.parametrize("reference", REFERENCES)
@pytest.mark.parametrize("input_shape,weight_shape,has_bias,kwargs", CASES)
def test_torch_reference_matches_torch(reference, input_shape, weight_shape, has_bias, kwargs):
    x, w, b = make_args(input_shape, weight_shape, has_bias)
    assert_matches(reference, {"F.conv2d": F.conv2d}, x, w, b, **kwargs)


@pytest.mark.parametrize("reference", REFERENCES)
def test_unbatched_input(reference):
    x, w, b = make_args((3, 7, 5), (4, 3, 3, 3), True)
    out = assert_matches(reference, {"F.conv2d": F.conv2d}, x, w, b, stride=2, padding=1)
    assert out.shape == (4, 4, 3)


@pytest.mark.parametrize("reference", REFERENCES)
def test_empty_batch(reference):
    x, w, b = make_args((0, 3, 7, 5), (4, 3, 3, 3), True)
    out = assert_matches(reference, {"F.conv2d": F.conv2d}, x, w, b, padding=1)
    assert out.shape == (0, 4, 7, 5)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("reference", REFERENCES)
def test_activation_matches_conv_then_activation(reference, activation):
    x, w, b = make_args((2, 4, 7, 5), (6, 2, 3, 3), True)
    out = assert_matches(reference, {f"F.conv2d then {activation}": torch_conv_then_activation}, x, w, b,
                         stride=2, padding=1, groups=2, activation=activation)
    # Both activations bend on the negative side; without outputs there the test would prove little.
    negative_side = (out < 0) if activation == "gelu" else (out == 0)
    assert negative_side.any(), f"no pre-activation was negative, so {activation} was never really exercised"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reference", REFERENCES)
def test_low_precision_is_computed_in_float32(reference, dtype):
    x, w, b = (t.detach() for t in make_args((2, 3, 7, 5), (4, 3, 3, 3), True, dtype=dtype))
    out = reference(x, w, b, padding=1)
    expected = F.conv2d(x.float(), w.float(), b.float(), padding=1).to(dtype)
    assert_close(out, expected, name=f"{dtype} output")


@pytest.mark.parametrize("input_shape,weight_shape,has_bias,kwargs", CASES)
def test_numpy_reference_matches_autograd(input_shape, weight_shape, has_bias, kwargs):
    x, w, b = make_args(input_shape, weight_shape, has_bias)
    y = F.conv2d(x, w, b, **kwargs)
    dy = torch.randn_like(y)
    y.backward(dy)

    geometry = conv2d_geometry(x.shape, w.shape, kwargs.get("stride", 1), kwargs.get("padding", 0),
                               kwargs.get("dilation", 1))
    y_np, cache = conv2d_numpy.conv2d_forward(x.detach().numpy(), w.detach().numpy(),
                                              None if b is None else b.detach().numpy(), geometry.stride,
                                              geometry.padding, geometry.dilation, kwargs.get("groups", 1))
    dx, dw, db = conv2d_numpy.conv2d_backward(dy.numpy(), cache)
    results = [("y", y_np, y), ("dx", dx, x.grad), ("dweight", dw, w.grad)]
    if has_bias:
        results.append(("dbias", db, b.grad))
    else:
        assert db is None, "no bias, yet conv2d_backward returned a bias gradient"
    for name, ours, expected in results:
        assert_close(torch.from_numpy(np.ascontiguousarray(ours)), expected.detach(), name=name)


def test_numpy_reference_takes_symmetric_padding_pairs():
    x, w, b = (t.detach() for t in make_args((2, 3, 7, 5), (4, 3, 3, 3), True))
    y_np, _ = conv2d_numpy.conv2d_forward(x.numpy(), w.numpy(), b.numpy(), (2, 1), (2, 1), (1, 2), 1)
    expected = F.conv2d(x, w, b, stride=(2, 1), padding=(2, 1), dilation=(1, 2))
    assert_close(torch.from_numpy(y_np), expected)


@pytest.mark.parametrize(
    "weight_shape,dilation,expected_padding",
    [((3, 5), 1, (1, 1, 2, 2)), ((4, 2), 1, (1, 2, 0, 1)), ((4, 2), (1, 3), (1, 2, 1, 2)), ((2, 2), 2, (1, 1, 1, 1))],
)
def test_same_padding_puts_the_odd_row_last(weight_shape, dilation, expected_padding):
    geometry = conv2d_geometry((1, 1, 7, 6), (1, 1, *weight_shape), 1, "same", dilation)
    assert geometry.padding == expected_padding
    assert geometry.output_size == (7, 6)
    assert geometry.stride == (1, 1)
    assert geometry.dilation == ((dilation, dilation) if isinstance(dilation, int) else dilation)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(padding="same", stride=2), "padding='same' is not supported for strided convolutions"),
        (dict(padding="same", stride=(1, 2)), "padding='same' is not supported for strided convolutions"),
        (dict(padding="full"), "Invalid padding string: 'full'"),
        (dict(padding=(1, 2, 3)), "padding"),
        (dict(padding=-1), "negative padding"),
        (dict(stride=0), "non-positive stride"),
        (dict(dilation=(1, 0)), "dilation should be greater than zero"),
        (dict(dilation=5), "Kernel size can't be greater than actual input size"),
    ],
    ids=["same-stride2", "same-stride(1,2)", "unknown-string", "three-paddings", "negative-padding", "stride0",
         "dilation0", "kernel-too-big"],
)
def test_bad_geometry_is_rejected_as_torch_rejects_it(kwargs, message):
    x, w = torch.randn(1, 2, 7, 5), torch.randn(3, 2, 2, 2)
    with pytest.raises(RuntimeError):
        F.conv2d(x, w, **kwargs)
    with pytest.raises(RuntimeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        conv2d_geometry(x.shape, w.shape, kwargs.get("stride", 1), kwargs.get("padding", 0), kwargs.get("dilation", 1))
    for reference in (conv2d_loop, conv2d_unfold):
        with pytest.raises(RuntimeError, match="conv2d"):
            reference(x, w, **kwargs)


@pytest.mark.parametrize(
    "input_shape,weight_shape,kwargs,message",
    [
        ((1, 2, 5, 5), (3, 3, 1, 1), {}, "to have 3 channels, but got 2"),
        ((1, 4, 5, 5), (3, 2, 1, 1), dict(groups=2), "groups=2 must divide"),
        ((5, 5), (3, 2, 3, 3), {}, "Expected 3D \\(unbatched\\) or 4D \\(batched\\) input"),
        ((1, 2, 5, 5), (3, 2, 1, 1), dict(activation="tanh"), "activation must be None, 'relu' or 'gelu'"),
    ],
    ids=["channels", "groups", "2-D-input", "activation"],
)
@pytest.mark.parametrize("reference", REFERENCES)
def test_bad_arguments_name_the_problem(reference, input_shape, weight_shape, kwargs, message):
    error = ValueError if "activation" in kwargs else RuntimeError
    with pytest.raises(error, match=message):
        reference(torch.randn(input_shape), torch.randn(weight_shape), **kwargs)
