"""ReLU, GELU (exact and tanh) and dropout in numpy, with the backward derived by hand.

Each is elementwise, y_i = f(x_i), so the Jacobian is diagonal and with g = dL/dy the chain rule
is just dL/dx_i = g_i * f'(x_i). What remains is each f'.

ReLU, y = max(x, 0):
    f'(x) = 1 for x > 0, 0 for x < 0. At the kink x = 0 any value in [0, 1] is a subgradient;
    torch (and tritonprop) take 0. Since y > 0 exactly where x > 0, the backward can read y
    instead of x, which is what lets an in-place ReLU (x overwritten by y) still be differentiated.

GELU, y = x * Phi(x), with Phi(x) = (1 + erf(x / sqrt 2)) / 2 the standard normal CDF:
    product rule:  f'(x) = Phi(x) + x * Phi'(x) = Phi(x) + x * phi(x),
    where phi(x) = exp(-x^2 / 2) / sqrt(2 pi) is the normal density (d/dz erf(z) = 2/sqrt(pi) e^{-z^2},
    and the chain rule through z = x / sqrt 2 turns that into phi).

GELU, tanh approximation, y = x/2 * (1 + tanh(u)) with u = sqrt(2/pi) * (x + 0.044715 x^3):
    product rule, with tanh'(u) = 1 - tanh(u)^2 and du/dx = sqrt(2/pi) * (1 + 3 * 0.044715 x^2):
        f'(x) = (1 + tanh u) / 2 + x/2 * (1 - tanh(u)^2) * du/dx.

Dropout, y = x * m * s with the keep mask m in {0, 1} and s = 1 / (1 - p):
    m and s do not depend on x, so dL/dx = g * m * s: the same mask and the same scale. E[y] = x,
    which is why the kept values are scaled up.
"""
from __future__ import annotations

import math

import numpy as np

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_TANH_CUBIC = 0.044715
_erf = np.vectorize(math.erf, otypes=[np.float64])


def relu_forward(x):
    """Returns ``(y, cache)``."""
    y = np.where(x <= 0, 0.0, x).astype(x.dtype)
    return y, y


def relu_backward(dy, cache):
    y = cache
    return np.where(y > 0, dy, 0.0).astype(dy.dtype)


def gelu_forward(x, approximate="none"):
    """Returns ``(y, cache)``; `approximate` is 'none' (erf) or 'tanh'."""
    if approximate == "tanh":
        y = 0.5 * x * (1 + np.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_CUBIC * x ** 3)))
    else:
        y = 0.5 * x * (1 + _erf(x / math.sqrt(2.0)))
    return y.astype(x.dtype), (x, approximate)


def gelu_backward(dy, cache):
    x, approximate = cache
    if approximate == "tanh":
        t = np.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_CUBIC * x ** 3))
        du_dx = SQRT_2_OVER_PI * (1 + 3 * GELU_TANH_CUBIC * x ** 2)
        derivative = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du_dx
    else:
        cdf = 0.5 * (1 + _erf(x / math.sqrt(2.0)))
        pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        derivative = cdf + x * pdf
    return (dy * derivative).astype(dy.dtype)


def dropout_forward(x, keep, p):
    """Returns ``(y, cache)`` for the boolean keep mask `keep` (see reference/dropout.py for how
    tritonprop draws it) and drop probability `p` < 1."""
    scale = 1.0 / (1.0 - p)
    return x * keep * scale, (keep, scale)


def dropout_backward(dy, cache):
    keep, scale = cache
    return dy * keep * scale
