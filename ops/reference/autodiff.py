"""Reverse-mode automatic differentiation on numpy arrays, in one readable file.

This is torch's autograd in miniature, with the same names, so the two can be read side by side:

    from tritonprop.ops.reference.autodiff import Tensor
    w = Tensor(np.random.randn(3, 2), requires_grad=True)
    x = Tensor(np.random.randn(5, 3))
    loss = (x @ w).tanh().sum()
    loss.backward()
    w.grad                      # a numpy array, d loss / d w

How it works (docs/backprop.md tells the whole story):

1. **Recording.** Every operation on a Tensor that requires grad returns a new Tensor whose
   ``grad_fn`` remembers the inputs and a ``backward`` closure. The closure captures what the
   derivative needs (the forward's inputs or output): torch's "saved tensors".
2. **Ordering.** ``Tensor.backward()`` walks the graph from the output to the leaves and sorts it
   topologically, without recursion, so a graph thousands of operations deep is fine.
3. **The chain rule.** In that order each node receives dL/d(its output), summed over every use,
   and its closure turns it into dL/d(each input): a vector-Jacobian product.

Broadcasting follows numpy (and torch): an input that was stretched along a dimension gets the
gradient summed over that dimension (``_sum_to_shape``).

Data is float64 by default; float32 arrays stay float32. The only dependency is numpy.
"""
from __future__ import annotations

import numpy as np

_grad_enabled = True


class no_grad:
    """``with no_grad():`` runs operations without recording them, as ``torch.no_grad`` does."""

    def __enter__(self):
        global _grad_enabled
        self._previous = _grad_enabled
        _grad_enabled = False

    def __exit__(self, *exc_info):
        global _grad_enabled
        _grad_enabled = self._previous


def is_grad_enabled() -> bool:
    return _grad_enabled


def _as_float_array(data, dtype=None) -> np.ndarray:
    if isinstance(data, Tensor):
        data = data.data
    array = np.asarray(data, dtype=dtype)
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)
    return array


def _sum_to_shape(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Undo broadcasting: sum ``grad`` over the dimensions that broadcasting added or stretched.

    An input of shape ``shape`` was used once per position along each stretched dimension, so
    its gradient is the sum of the gradients of all those uses.
    """
    added = grad.ndim - len(shape)
    if added:
        grad = grad.sum(axis=tuple(range(added)))
    stretched = tuple(axis for axis, size in enumerate(shape) if size == 1 and grad.shape[axis] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def _normalize_axes(axis, ndim: int) -> tuple:
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    # Only negative axes are mapped here; numpy itself rejects out-of-range ones in the forward.
    return tuple(int(a) + ndim if a < 0 else int(a) for a in axes)


class GradFn:
    """The record of one operation: its inputs and the function that maps dL/d(output) to dL/d(inputs).

    ``backward(grad)`` returns one gradient per input, in the order of ``inputs`` (None where an
    input gets none). torch calls the same object ``grad_fn`` and names it like ``MulBackward0``.
    """

    def __init__(self, name: str, inputs: tuple, backward):
        self.name = name
        self.inputs = inputs
        self.backward = backward

    def __repr__(self):
        return f"<{self.name}>"


class Tensor:
    """A numpy array that can record the operations applied to it, and differentiate through them.

    ``requires_grad`` defaults to False as in torch; the result of an operation requires grad when
    any of its inputs does (and grad mode is on). After ``backward()``, ``.grad`` of every leaf
    that requires grad holds a numpy array of its own shape.
    """

    # Makes numpy hand `ndarray (op) Tensor` to Tensor's reflected operators instead of
    # converting the Tensor into an array of objects.
    __array_ufunc__ = None

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data = _as_float_array(data, dtype)
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self.grad_fn = None
        self._retains_grad = False

    # ------------------------------------------------------------------------------------------
    # Properties and conversions, named as in torch
    # ------------------------------------------------------------------------------------------

    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    def item(self) -> float:
        return self.data.item()

    def numpy(self) -> np.ndarray:
        if self.requires_grad:
            # The same rule as torch: an array handed out of the graph must not look differentiable.
            raise RuntimeError("Can't call numpy() on a Tensor that requires grad. Use tensor.detach().numpy() instead.")
        return self.data

    def detach(self) -> Tensor:
        """The same data, cut off from the graph (the array is shared, not copied)."""
        return Tensor(self.data)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if not self.is_leaf:
            raise RuntimeError("requires_grad can only be changed on leaf tensors; use .detach() first")
        self.requires_grad = requires_grad
        return self

    def retain_grad(self) -> None:
        """Keep ``.grad`` on this non-leaf too (by default only leaves keep theirs, as in torch)."""
        self._retains_grad = True

    def __repr__(self):
        extra = f", grad_fn={self.grad_fn!r}" if self.grad_fn else (", requires_grad=True" if self.requires_grad else "")
        return f"Tensor({self.data!r}{extra})"

    # ------------------------------------------------------------------------------------------
    # Building the graph
    # ------------------------------------------------------------------------------------------

    def _lift(self, other) -> Tensor:
        """Python numbers take this tensor's dtype (as in torch), so float32 code stays float32."""
        if isinstance(other, Tensor):
            return other
        if isinstance(other, (int, float)):
            return Tensor(np.asarray(other, dtype=self.dtype))
        return Tensor(other)

    @staticmethod
    def _record(data, inputs: tuple, backward, name: str) -> Tensor:
        out = Tensor(data)
        if _grad_enabled and any(t.requires_grad for t in inputs):
            out.requires_grad = True
            out.grad_fn = GradFn(name, inputs, backward)
        return out

    # ------------------------------------------------------------------------------------------
    # Elementwise arithmetic, with broadcasting
    # ------------------------------------------------------------------------------------------

    def __add__(self, other):
        other = self._lift(other)
        a, b = self.shape, other.shape
        return self._record(self.data + other.data, (self, other),
                            lambda g: (_sum_to_shape(g, a), _sum_to_shape(g, b)), "AddBackward")

    def __sub__(self, other):
        other = self._lift(other)
        a, b = self.shape, other.shape
        return self._record(self.data - other.data, (self, other),
                            lambda g: (_sum_to_shape(g, a), _sum_to_shape(-g, b)), "SubBackward")

    def __mul__(self, other):
        other = self._lift(other)
        a, b = self.data, other.data
        return self._record(a * b, (self, other),
                            lambda g: (_sum_to_shape(g * b, a.shape), _sum_to_shape(g * a, b.shape)), "MulBackward")

    def __truediv__(self, other):
        other = self._lift(other)
        a, b = self.data, other.data

        def backward(g):
            grad_a = g / b
            return _sum_to_shape(grad_a, a.shape), _sum_to_shape(-grad_a * a / b, b.shape)

        return self._record(a / b, (self, other), backward, "DivBackward")

    def __pow__(self, exponent):
        base = self.data
        if not isinstance(exponent, Tensor):
            # A constant exponent: only the base has a derivative, p * x^(p-1).
            p = exponent
            return self._record(base ** p, (self,), lambda g: (g * p * base ** (p - 1),), "PowBackward0")
        e = exponent.data
        out = base ** e
        # d(x^e)/de = x^e * log(x) exists only for x > 0; compute it only when it is wanted, so
        # that a negative base raised to a constant tensor does not produce warnings or NaNs.
        exponent_wants_grad = exponent.requires_grad

        def backward(g):
            grad_base = _sum_to_shape(g * e * base ** (e - 1), base.shape)
            grad_exponent = _sum_to_shape(g * out * np.log(base), e.shape) if exponent_wants_grad else None
            return grad_base, grad_exponent

        return self._record(out, (self, exponent), backward, "PowBackward1")

    def __neg__(self):
        return self._record(-self.data, (self,), lambda g: (-g,), "NegBackward")

    def __radd__(self, other):
        return self._lift(other) + self

    def __rsub__(self, other):
        return self._lift(other) - self

    def __rmul__(self, other):
        return self._lift(other) * self

    def __rtruediv__(self, other):
        return self._lift(other) / self

    def __rpow__(self, other):
        return self._lift(other) ** self

    # ------------------------------------------------------------------------------------------
    # Matrix product, with numpy's (and torch's) rules for 1-D operands and batch broadcasting
    # ------------------------------------------------------------------------------------------

    def __matmul__(self, other):
        other = self._lift(other)
        a, b = self.data, other.data

        def backward(g):
            # Put back the dimensions that matmul drops for 1-D operands, so that both
            # gradients are plain batched products: dA = G @ B^T and dB = A^T @ G.
            a2 = a[np.newaxis, :] if a.ndim == 1 else a
            b2 = b[:, np.newaxis] if b.ndim == 1 else b
            if b.ndim == 1:
                g = g[..., np.newaxis]
            if a.ndim == 1:
                g = np.expand_dims(g, -2)
            grad_a = _sum_to_shape(g @ np.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
            grad_b = _sum_to_shape(np.swapaxes(a2, -1, -2) @ g, b2.shape).reshape(b.shape)
            return grad_a, grad_b

        return self._record(a @ b, (self, other), backward, "MmBackward")

    def __rmatmul__(self, other):
        return self._lift(other) @ self

    # ------------------------------------------------------------------------------------------
    # Reductions
    # ------------------------------------------------------------------------------------------

    def sum(self, axis=None, keepdims: bool = False):
        shape = self.shape
        axes = _normalize_axes(axis, self.ndim)

        def backward(g):
            # Every input element contributed once to its sum: copy the gradient back over the
            # reduced axes.
            if not keepdims:
                g = np.expand_dims(g, axes)
            return (np.broadcast_to(g, shape),)

        return self._record(self.data.sum(axis=axes, keepdims=keepdims), (self,), backward, "SumBackward")

    def mean(self, axis=None, keepdims: bool = False):
        axes = _normalize_axes(axis, self.ndim)
        count = int(np.prod([self.shape[a] for a in axes]))
        return self.sum(axis=axes, keepdims=keepdims) / count

    # ------------------------------------------------------------------------------------------
    # Elementwise functions: each derivative is written in terms of the forward's output where
    # that is cheaper, which is also what torch saves for them
    # ------------------------------------------------------------------------------------------

    def exp(self):
        out = np.exp(self.data)
        return self._record(out, (self,), lambda g: (g * out,), "ExpBackward")

    def log(self):
        x = self.data
        return self._record(np.log(x), (self,), lambda g: (g / x,), "LogBackward")

    def tanh(self):
        out = np.tanh(self.data)
        return self._record(out, (self,), lambda g: (g * (1.0 - out * out),), "TanhBackward")

    def relu(self):
        x = self.data
        # The derivative at exactly 0 is taken to be 0, as torch does.
        return self._record(np.maximum(x, 0), (self,), lambda g: (g * (x > 0),), "ReluBackward")

    def sigmoid(self):
        # 1 / (1 + e^-x) written as exp(-log(1 + e^-x)): no overflow for large negative x.
        out = np.exp(-np.logaddexp(0, -self.data))
        return self._record(out, (self,), lambda g: (g * out * (1.0 - out),), "SigmoidBackward")

    def log_softmax(self, axis: int = -1):
        """log(softmax(x)) along ``axis``, computed without overflow.

        Subtracting the max first changes nothing mathematically (it cancels between the two
        terms) but keeps exp() from overflowing. Backward: dx = g - softmax(x) * sum(g).
        """
        shifted = self.data - self.data.max(axis=axis, keepdims=True)
        out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))

        def backward(g):
            return (g - np.exp(out) * g.sum(axis=axis, keepdims=True),)

        return self._record(out, (self,), backward, "LogSoftmaxBackward")

    # ------------------------------------------------------------------------------------------
    # Shape operations: the gradient is moved back, never changed
    # ------------------------------------------------------------------------------------------

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        original = self.shape
        return self._record(self.data.reshape(shape), (self,), lambda g: (g.reshape(original),), "ViewBackward")

    def permute(self, *dims):
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        inverse = np.argsort(dims)
        return self._record(self.data.transpose(dims), (self,), lambda g: (g.transpose(inverse),), "PermuteBackward")

    def transpose(self, dim0: int, dim1: int):
        """Swaps two dimensions, as ``torch.Tensor.transpose`` does."""
        dims = list(range(self.ndim))
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return self.permute(dims)

    @property
    def T(self):
        """All dimensions reversed (the matrix transpose for 2-D), as numpy's ``.T``."""
        return self.permute(tuple(reversed(range(self.ndim))))

    def __getitem__(self, index):
        if isinstance(index, tuple):
            index = tuple(i.data.astype(np.intp) if isinstance(i, Tensor) else i for i in index)
        elif isinstance(index, Tensor):
            index = index.data.astype(np.intp)
        x = self.data

        def backward(g):
            grad = np.zeros_like(x)
            # np.add.at, not `grad[index] += g`: with an integer array that repeats a position,
            # `+=` would keep only the last write, while every use must add its gradient.
            np.add.at(grad, index, g)
            return (grad,)

        return self._record(x[index], (self,), backward, "IndexBackward")

    # ------------------------------------------------------------------------------------------
    # Backward
    # ------------------------------------------------------------------------------------------

    def backward(self, gradient=None) -> None:
        """Accumulates d(self)/d(leaf) into ``.grad`` of every leaf that requires grad.

        ``gradient`` is dL/d(self) when self is not a scalar (the "v" of the vector-Jacobian
        product). As in torch, ``.grad`` accumulates across calls: set it to None between steps.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: nothing was recorded. Create the "
                "inputs with requires_grad=True, outside no_grad()."
            )
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"grad can be implicitly created only for scalar outputs; this tensor has shape "
                    f"{self.shape}, so pass backward(gradient) with a gradient of that shape"
                )
            gradient = np.ones_like(self.data)
        else:
            gradient = _as_float_array(gradient)
            if gradient.shape != self.shape:
                raise RuntimeError(
                    f"Mismatch in shape: gradient has shape {gradient.shape} but the tensor has shape {self.shape}"
                )

        grads = {id(self): gradient}
        for node in reversed(_topological_order(self)):
            grad = grads.pop(id(node))
            if node.is_leaf or node._retains_grad:
                # astype copies: .grad never aliases an array that the graph still uses.
                node.grad = (grad if node.grad is None else node.grad + grad).astype(node.dtype)
            if node.is_leaf:
                continue
            for parent, parent_grad in zip(node.grad_fn.inputs, node.grad_fn.backward(grad)):
                if parent_grad is None or not parent.requires_grad:
                    continue
                # A tensor used by several operations receives the sum of their gradients.
                key = id(parent)
                grads[key] = parent_grad if key not in grads else grads[key] + parent_grad


def _topological_order(root: Tensor) -> list:
    """Every tensor that ``root`` depends on (and that requires grad), each after all of its inputs.

    An explicit stack instead of recursion, so depth is limited by memory, not by Python's
    recursion limit. Each entry is (tensor, inputs_done); a tensor is appended to the order only
    when it is popped the second time, after everything pushed above it (its inputs) is done.
    """
    order, seen = [], set()
    stack = [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        if node.grad_fn is not None:
            stack.extend((t, False) for t in node.grad_fn.inputs if t.requires_grad and id(t) not in seen)
    return order
