"""Activation functions and their derivatives as @triton.jit helpers, shared by every kernel.

Each works elementwise in the dtype it is given (call it on fp32 or fp64 values). Derivatives
follow torch at the kinks: relu'(0) = 0.
"""
import triton
import triton.language as tl

# Globals read inside @triton.jit must be constexpr.
SQRT_HALF = tl.constexpr(0.7071067811865476)  # 1/sqrt(2)
INV_SQRT_2PI = tl.constexpr(0.3989422804014327)  # 1/sqrt(2*pi)
SQRT_2_OVER_PI = tl.constexpr(0.7978845608028654)  # sqrt(2/pi)
GELU_TANH_CUBIC = tl.constexpr(0.044715)


@triton.jit
def relu(z):
    # Compiled tl.maximum returns 0 for NaN by default; torch's relu keeps the NaN.
    return tl.maximum(z, 0.0, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def relu_grad(z):
    # As torch's threshold_backward: 0 where z <= 0 (so 0 exactly at 0), 1 elsewhere, NaN included.
    return tl.where(z <= 0.0, 0.0, 1.0)


@triton.jit
def gelu(z):
    # Exact GELU, torch's approximation='none': z * Phi(z), Phi the standard normal CDF.
    return 0.5 * z * (1.0 + tl.erf(z * SQRT_HALF))


@triton.jit
def gelu_grad(z):
    # d/dz [z * Phi(z)] = Phi(z) + z * phi(z), phi the standard normal density.
    cdf = 0.5 * (1.0 + tl.erf(z * SQRT_HALF))
    pdf = INV_SQRT_2PI * tl.exp(-0.5 * z * z)
    return cdf + z * pdf


@triton.jit
def tanh(x):
    # Triton 3.6 has no tl.tanh and libdevice fails under the interpreter; 2*sigmoid(2x) - 1 is
    # tanh exactly, and tl.sigmoid saturates cleanly at both ends.
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def gelu_tanh(z):
    # torch's approximation='tanh': 0.5 * z * (1 + tanh(sqrt(2/pi) * (z + 0.044715 z^3))).
    inner = SQRT_2_OVER_PI * (z + GELU_TANH_CUBIC * z * z * z)
    return 0.5 * z * (1.0 + tanh(inner))


@triton.jit
def gelu_tanh_grad(z):
    inner = SQRT_2_OVER_PI * (z + GELU_TANH_CUBIC * z * z * z)
    t = tanh(inner)
    d_inner = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_CUBIC * z * z)
    return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * d_inner
