"""Activation functions and their derivatives as @triton.jit helpers, shared by every kernel.

Each works elementwise in the dtype it is given (call it on fp32 or fp64 values). Derivatives
follow torch at the kinks: relu'(0) = 0.

One table, ACTIVATIONS, gives each activation its integer code, the constexpr ACTIVATION of every
kernel that applies one: the conv2d and linear epilogues and the elementwise kernels. They apply
it through `apply_activation` and take its derivative through `apply_activation_grad`, so a code
means the same function, with the same NaN and kink rules, everywhere (attorch's apply_act_func).

The backward needs a saved tensor: for ReLU the output y is enough (y > 0 exactly where z > 0),
for the GELUs it is the pre-activation z (SAVES_PREACTIVATION), since GELU is not one-to-one.
"""
import triton
import triton.language as tl

# The constexpr ACTIVATION of every kernel; 0 is no activation (the identity).
ACTIVATIONS = {None: 0, "relu": 1, "gelu": 2, "gelu_tanh": 3}
# Activations whose backward needs the pre-activation z rather than the output y.
SAVES_PREACTIVATION = ("gelu", "gelu_tanh")

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


@triton.jit
def apply_activation(z, ACTIVATION: tl.constexpr):
    """act(z) for the activation with code ACTIVATION (see ACTIVATIONS)."""
    if ACTIVATION == 1:
        out = relu(z)
    elif ACTIVATION == 2:
        out = gelu(z)
    elif ACTIVATION == 3:
        out = gelu_tanh(z)
    else:
        out = z
    return out


@triton.jit
def apply_activation_grad(dy, saved, ACTIVATION: tl.constexpr):
    """dz = dy * act'(z): `saved` is y = relu(z) for ReLU and z itself for the GELUs."""
    if ACTIVATION == 1:
        # y <= 0 exactly where z <= 0, and torch's gradient at 0 is 0. A select, not dy * mask, as
        # torch's threshold_backward: an infinite dy where y <= 0 gives 0, not nan; and as it tests
        # y <= 0, dy passes where y is nan.
        dz = tl.where(saved <= 0.0, 0.0, dy)
    elif ACTIVATION == 2:
        dz = dy * gelu_grad(saved)
    elif ACTIVATION == 3:
        dz = dy * gelu_tanh_grad(saved)
    else:
        dz = dy
    return dz
