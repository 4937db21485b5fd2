"""The test helpers themselves: they must catch what they claim to catch, and say where."""
from __future__ import annotations

import pytest
import torch

from helpers import TOLERANCES, assert_close, assert_gradcheck, assert_matches


class _WrongBackward(torch.autograd.Function):
    """y = x**2 with a backward that forgets the factor 2."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return dy * x


def test_assert_close_reports_the_worst_element_and_where():
    expected = torch.zeros(2, 3)
    actual = expected.clone()
    actual[1, 2] = 0.5
    with pytest.raises(AssertionError, match=r"max abs error 5\.000e-01 at index \(1, 2\).*1 of 6 elements"):
        assert_close(actual, expected, name="probe")


def test_assert_close_uses_the_dtype_tolerance():
    expected = torch.ones(4, dtype=torch.bfloat16)
    assert_close(expected + 0.0078125, expected)  # one bf16 ulp at 1.0 is within tolerance
    with pytest.raises(AssertionError):
        assert_close(expected.float() + 1e-4, expected.float())  # 1e-4 is far outside fp32's
    assert TOLERANCES[torch.float32]["atol"] < 1e-4


def test_assert_gradcheck_catches_a_wrong_backward():
    x = torch.randn(3, requires_grad=True)
    with pytest.raises(Exception, match="Jacobian mismatch"):
        assert_gradcheck(_WrongBackward.apply, x)


def test_assert_matches_catches_a_wrong_gradient_and_a_missed_in_place_update():
    x = torch.randn(5, requires_grad=True)
    with pytest.raises(AssertionError, match="gradient of differentiable input 0 vs square"):
        assert_matches(_WrongBackward.apply, {"square": lambda t: t * t}, x)

    def forgets_update(t, state):
        return t + 1

    def updates(t, state):
        state.add_(1)
        return t + 1

    with pytest.raises(AssertionError, match="argument 1 after the call vs updates"):
        assert_matches(forgets_update, {"updates": updates}, x, torch.zeros(2))
