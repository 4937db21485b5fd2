"""Linear in numpy, with the backward derived by hand.

Shapes: x (M, K) (any leading dims are flattened into M rows first), W (N, K), b (N,), y (M, N).

    z[m, n] = sum_k x[m, k] * W[n, k] + b[n]          z = x W^T + b
    y[m, n] = act(z[m, n])

Backward, with g = dL/dy. The activation acts on each element alone, so the chain rule gives
one factor per element:

    dz[m, n] = g[m, n] * act'(z[m, n])

z is linear in each of x, W and b, so each gradient is dz times whatever multiplies that
variable, summed over every place the variable is used. x[m, k] meets W[n, k] in every output
z[m, n] of row m; W[n, k] meets x[m, k] in every row m; b[n] is added to every row:

    dx[m, k] = sum_n dz[m, n] * W[n, k]        dx = dz W        (M x N)(N x K) = M x K
    dW[n, k] = sum_m dz[m, n] * x[m, k]        dW = dz^T x      (N x M)(M x K) = N x K
    db[n]    = sum_m dz[m, n]                  db = dz^T 1

Each gradient has the shape of its variable, which is a quick check that the transposes are right.
The activation derivatives:

    relu'(z)      = 1 if z > 0, else 0                    (torch takes 0 at z = 0)
    gelu(z)       = z * Phi(z),   Phi(z) = (1 + erf(z / sqrt(2))) / 2, the standard normal CDF
    gelu'(z)      = Phi(z) + z * phi(z),   phi(z) = exp(-z^2 / 2) / sqrt(2 pi)
                    (the product rule, with Phi' = phi)
    gelu_tanh(z)  = z * (1 + tanh(u)) / 2,   u = sqrt(2 / pi) * (z + 0.044715 z^3)
    gelu_tanh'(z) = (1 + tanh(u)) / 2 + z * (1 - tanh(u)^2) * u' / 2,   u' = sqrt(2 / pi) * (1 + 3 * 0.044715 z^2)
                    (the product rule, with tanh' = 1 - tanh^2)
"""
from __future__ import annotations

import math

import numpy as np

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_TANH_CUBIC = 0.044715

# numpy has no erf; math.erf applied element by element is exact and plenty fast here.
_erf = np.vectorize(math.erf, otypes=[np.float64])


def _normal_cdf(z):
    return 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))


def _normal_pdf(z):
    return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _tanh_argument(z):
    return SQRT_2_OVER_PI * (z + GELU_TANH_CUBIC * z ** 3)


# activation -> (act(z), act'(z))
ACTIVATIONS = {
    None: (lambda z: z, lambda z: np.ones_like(z)),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(z.dtype)),
    "gelu": (lambda z: z * _normal_cdf(z), lambda z: _normal_cdf(z) + z * _normal_pdf(z)),
    "gelu_tanh": (
        lambda z: 0.5 * z * (1.0 + np.tanh(_tanh_argument(z))),
        lambda z: 0.5 * (1.0 + np.tanh(_tanh_argument(z)))
        + 0.5 * z * (1.0 - np.tanh(_tanh_argument(z)) ** 2) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_CUBIC * z * z),
    ),
}


def linear_forward(x, w, b=None, activation=None):
    """Returns ``(y, cache)``; ``b`` may be None. ``cache`` holds what the backward needs."""
    act, _ = ACTIVATIONS[activation]
    rows = x.reshape(-1, x.shape[-1])
    z = rows @ w.T
    if b is not None:
        z = z + b
    y = act(z).reshape(*x.shape[:-1], w.shape[0])
    return y, (rows, w, z, b is not None, activation, x.shape)


def linear_backward(dy, cache):
    """Returns ``(dx, dw, db)`` from the upstream gradient ``dy``; ``db`` is None when there was no bias."""
    rows, w, z, has_bias, activation, input_shape = cache
    _, act_grad = ACTIVATIONS[activation]
    dz = dy.reshape(z.shape) * act_grad(z)
    dx = (dz @ w).reshape(input_shape)
    dw = dz.T @ rows
    db = dz.sum(axis=0) if has_bias else None
    return dx, dw, db
