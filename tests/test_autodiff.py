"""The numpy autodiff engine: gradients against torch.autograd and finite differences, the graph
mechanics (accumulation, no_grad, errors, depth), and the MLP it trains on the digits."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from helpers import TOLERANCES, assert_close
from tritonprop.ops.reference import autodiff
from tritonprop.ops.reference.autodiff import Tensor, no_grad

ROOT = Path(__file__).resolve().parents[1]

# The autouse `seed` fixture only seeds global generators, which these tests do not use inside
# @given: every example draws its own seed, so examples are independent and reproducible.
EXAMPLES = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
nonscalar_shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)
seeds = st.integers(0, 2**32 - 1)


def sample(rng, shape, domain="any"):
    """float64 values; "positive" keeps them in [0.5, 2] for log, division and a tensor power's base."""
    # np.asarray: for shape () the generators return a Python float.
    if domain == "positive":
        return np.asarray(rng.uniform(0.5, 2.0, shape))
    return np.asarray(rng.standard_normal(shape))


def to_torch(array):
    return torch.from_numpy(np.array(array, dtype=np.float64))  # np.array keeps 0-d arrays 0-d


def assert_matches_torch(fn, *arrays, upstream_seed=0):
    """fn (written once, for both engines) agrees with torch: forward and every input's gradient.

    The upstream gradient is random rather than ones, so that each output element's gradient
    is weighted differently and a mixed-up element cannot hide.
    """
    ours = [Tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out, expected = fn(*ours), fn(*theirs)
    upstream = np.random.default_rng(upstream_seed).standard_normal(out.shape)
    out.backward(upstream)
    expected.backward(to_torch(upstream))
    assert_close(to_torch(out.data), expected.detach(), name="forward")
    for k, (mine, reference) in enumerate(zip(ours, theirs)):
        assert mine.grad is not None, f"input {k} got no gradient"
        assert_close(to_torch(mine.grad), reference.grad, name=f"gradient of input {k}")


# ------------------------------------------------------------------------------------------------
# Every operation against torch.autograd, on hypothesis-drawn shapes
# ------------------------------------------------------------------------------------------------

# name -> (fn, domain of each input)
BINARY = {
    "add": (lambda a, b: a + b, ("any", "any")),
    "sub": (lambda a, b: a - b, ("any", "any")),
    "mul": (lambda a, b: a * b, ("any", "any")),
    "div": (lambda a, b: a / b, ("any", "positive")),
    "pow": (lambda a, b: a ** b, ("positive", "any")),
}

UNARY = {
    "exp": (lambda x: x.exp(), "any"),
    "log": (lambda x: x.log(), "positive"),
    "tanh": (lambda x: x.tanh(), "any"),
    "relu": (lambda x: x.relu(), "any"),
    "sigmoid": (lambda x: x.sigmoid(), "any"),
    "neg": (lambda x: -x, "any"),
    "pow-constant": (lambda x: x ** 3, "any"),
    "constant-pow": (lambda x: 2.0 ** x, "any"),
    "constant-sub": (lambda x: 2.0 - x, "any"),
    "constant-div": (lambda x: 3.0 / x, "positive"),
    "constant-mul-add": (lambda x: 0.5 * x + 1.0, "any"),
}


@pytest.mark.parametrize("name", BINARY)
@EXAMPLES
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=4), seed=seeds)
def test_binary_ops_broadcast_like_torch(name, shapes, seed):
    fn, domains = BINARY[name]
    rng = np.random.default_rng(seed)
    a, b = (sample(rng, shape, domain) for shape, domain in zip(shapes.input_shapes, domains))
    assert_matches_torch(fn, a, b)


@pytest.mark.parametrize("name", UNARY)
@EXAMPLES
@given(shape=shapes, seed=seeds)
def test_elementwise_ops_match_torch(name, shape, seed):
    fn, domain = UNARY[name]
    assert_matches_torch(fn, sample(np.random.default_rng(seed), shape, domain))


@EXAMPLES
@given(batch=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, max_side=3),
       sizes=st.tuples(*[st.integers(1, 4)] * 3), vectors=st.tuples(st.booleans(), st.booleans()), seed=seeds)
def test_matmul_matches_torch(batch, sizes, vectors, seed):
    n, k, m = sizes
    a_is_vector, b_is_vector = vectors
    # A 1-D operand has no batch dims (numpy and torch promote it to a matrix, then drop the dim).
    a_shape = (k,) if a_is_vector else batch.input_shapes[0] + (n, k)
    b_shape = (k,) if b_is_vector else batch.input_shapes[1] + (k, m)
    rng = np.random.default_rng(seed)
    assert_matches_torch(lambda a, b: a @ b, rng.standard_normal(a_shape), rng.standard_normal(b_shape))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@EXAMPLES
@given(data=st.data(), shape=nonscalar_shapes, keepdims=st.booleans(), seed=seeds)
def test_reductions_match_torch(reduction, data, shape, keepdims, seed):
    ndim = len(shape)
    axis = data.draw(st.one_of(
        st.none(),
        st.integers(-ndim, ndim - 1),
        # torch reads an empty tuple as "every dim" and numpy as "no dim", so leave it out.
        st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple),
    ), label="axis")
    assert_matches_torch(lambda x: getattr(x, reduction)(axis=axis, keepdims=keepdims),
                         np.random.default_rng(seed).standard_normal(shape))


@EXAMPLES
@given(data=st.data(), shape=nonscalar_shapes, seed=seeds)
def test_log_softmax_matches_torch(data, shape, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    # Large offsets: exp() of them would overflow without the subtraction of the max.
    x = np.random.default_rng(seed).standard_normal(shape) * 3 + 800.0
    assert_matches_torch(lambda t: t.log_softmax(axis=axis), x)


@EXAMPLES
@given(data=st.data(), shape=nonscalar_shapes, seed=seeds)
def test_shape_ops_match_torch(data, shape, seed):
    x = np.random.default_rng(seed).standard_normal(shape)
    dims = tuple(data.draw(st.permutations(range(len(shape))), label="dims"))
    dim0, dim1 = data.draw(st.tuples(*[st.integers(-len(shape), len(shape) - 1)] * 2), label="dims swapped")
    assert_matches_torch(lambda t: t.reshape(tuple(reversed(shape))), x)
    assert_matches_torch(lambda t: t.reshape(-1), x)
    assert_matches_torch(lambda t: t.permute(dims), x)
    assert_matches_torch(lambda t: t.transpose(dim0, dim1), x)


@EXAMPLES
@given(rows=st.integers(1, 4), cols=st.integers(1, 4), seed=seeds)
def test_matrix_transpose_T_matches_torch(rows, cols, seed):
    assert_matches_torch(lambda t: t.T, np.random.default_rng(seed).standard_normal((rows, cols)))


@EXAMPLES
@given(data=st.data(), shape=st.tuples(st.integers(1, 5), st.integers(1, 4), st.integers(1, 3)), seed=seeds)
def test_indexing_matches_torch(data, shape, seed):
    x = np.random.default_rng(seed).standard_normal(shape)
    rows = data.draw(st.lists(st.integers(0, shape[0] - 1), min_size=1, max_size=7), label="rows")  # repeats likely
    cols = data.draw(st.lists(st.integers(0, shape[1] - 1), min_size=len(rows), max_size=len(rows)), label="cols")
    start = data.draw(st.integers(0, shape[0] - 1), label="start")
    last = data.draw(st.integers(-shape[2], shape[2] - 1), label="last")
    assert_matches_torch(lambda t: t[start:, :, last], x)          # basic: slice and integer
    assert_matches_torch(lambda t: t[rows], x)                     # integer array along dim 0
    assert_matches_torch(lambda t: t[rows, cols], x)               # paired integer arrays
    assert_matches_torch(lambda t: t[rows, 1:, last], x)           # mixed
    assert_matches_torch(lambda t: t[..., None, last], x)          # ellipsis and a new axis


def test_sigmoid_and_log_softmax_do_not_overflow():
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is expected
        np.testing.assert_array_equal(Tensor([-1000.0, 0.0, 1000.0]).sigmoid().data, [0.0, 0.5, 1.0])
        np.testing.assert_allclose(Tensor([1000.0, 1000.0]).log_softmax().data, np.log([0.5, 0.5]),
                                   **TOLERANCES[torch.float64])


def every_op(x, y, pos, w):
    """One expression that uses every operation, broadcasting x, y and pos against each other.

    Written once for both engines: the method names are shared (torch accepts `axis` and
    `keepdims` as aliases of `dim` and `keepdim`).
    """
    u = x * y - y / pos + x ** 2 + pos ** y + 1.0 / pos - 2.0 * x   # (..., n)
    v = (u @ w).tanh() + u.sum(axis=-1, keepdims=True).sigmoid()    # (..., k)
    v = v.relu() + (v * 0.5).exp() - pos.log().mean(axis=-1, keepdims=True)
    z = v.reshape(-1, v.shape[-1]).log_softmax(axis=-1)             # (rows, k)
    picked = z[[0, 0, -1]]                                          # row 0 used twice
    return picked.T.transpose(0, 1).permute(1, 0).mean() + z[:, 0].sum() - picked[1:, -1].sum()


def every_op_inputs(shapes, k, seed):
    rng = np.random.default_rng(seed)
    x_shape, y_shape, pos_shape = shapes.input_shapes
    return (rng.standard_normal(x_shape), rng.standard_normal(y_shape), sample(rng, pos_shape, "positive"),
            rng.standard_normal((shapes.result_shape[-1], k)))


@EXAMPLES
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=1, max_dims=3, max_side=4),
       k=st.integers(1, 4), seed=seeds)
def test_expression_with_every_op_matches_torch(shapes, k, seed):
    assert_matches_torch(every_op, *every_op_inputs(shapes, k, seed))


# ------------------------------------------------------------------------------------------------
# Against finite differences: no torch involved
# ------------------------------------------------------------------------------------------------


def finite_difference_gradient(f, arrays, step=1e-4):
    """d f / d arrays[i] elementwise, by the fourth-order central stencil.

    Its error is O(step^4) plus rounding of order 1e-16 / step, about 1e-12 here, so the float64
    tolerance of tests/helpers.py holds without widening it (the two-point stencil's O(step^2)
    error would not).
    """
    grads = []
    for array in arrays:
        grad = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            original = array[index]
            values = []
            for offset in (2 * step, step, -step, -2 * step):
                array[index] = original + offset
                values.append(f(*arrays))
            array[index] = original
            grad[index] = (-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * step)
        grads.append(grad)
    return grads


def assert_matches_finite_differences(fn, *arrays):
    leaves = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    fn(*leaves).backward()
    numeric = finite_difference_gradient(lambda *xs: fn(*(Tensor(x) for x in xs)).item(), [a.copy() for a in arrays])
    for k, (leaf, expected) in enumerate(zip(leaves, numeric)):
        assert_close(to_torch(leaf.grad), to_torch(expected), name=f"gradient of input {k} vs finite differences")


@pytest.mark.parametrize("shapes", [((3, 4), (4,), (3, 1)), ((2, 1, 3), (4, 1), (3,))], ids=["2d", "3d"])
def test_every_op_matches_finite_differences(shapes):
    broadcast = np.broadcast_shapes(*shapes)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    pos, w = sample(rng, shapes[2], "positive"), rng.standard_normal((broadcast[-1], 3))
    assert_matches_finite_differences(every_op, x, y, pos, w)


def test_cross_entropy_through_indexing_matches_finite_differences():
    from tritonprop.models.mlp_numpy import cross_entropy

    rng = np.random.default_rng(2)
    labels = np.array([3, 0, 3, 1, 2])  # a repeated class
    x, weight, bias = rng.standard_normal((5, 6)), rng.standard_normal((4, 6)), rng.standard_normal(4)
    assert_matches_finite_differences(lambda x, w, b: cross_entropy((x @ w.T + b).tanh(), labels), x, weight, bias)


def test_engine_reproduces_the_hand_derived_batchnorm_backward():
    """Batch norm written as engine operations gets, automatically, the backward derived by hand."""
    from tritonprop.ops.reference import batchnorm_numpy

    rng = np.random.default_rng(3)
    x_np, weight_np, bias_np = rng.standard_normal((4, 3, 2, 5)), rng.uniform(0.5, 1.5, 3), rng.standard_normal(3)
    upstream = rng.standard_normal(x_np.shape)
    x, weight, bias = (Tensor(a, requires_grad=True) for a in (x_np, weight_np, bias_np))
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = ((x - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    y = (x - mean) / (var + 1e-5) ** 0.5 * weight.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)
    y.backward(upstream)

    y_expected, cache = batchnorm_numpy.batch_norm_forward(x_np, weight_np, bias_np, eps=1e-5)
    by_hand = batchnorm_numpy.batch_norm_backward(upstream, cache)
    assert_close(to_torch(y.data), to_torch(y_expected), name="forward")
    for name, leaf, expected in zip(("dx", "dweight", "dbias"), (x, weight, bias), by_hand):
        assert_close(to_torch(leaf.grad), to_torch(expected), name=name)


# ------------------------------------------------------------------------------------------------
# The graph: accumulation, no_grad, detach, dtypes, depth
# ------------------------------------------------------------------------------------------------


def test_a_tensor_used_twice_gets_the_sum_of_both_gradients():
    x = Tensor(np.array([0.3, -1.2, 2.0]), requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data, **TOLERANCES[torch.float64])

    x.grad = None
    h = x.tanh()
    (h * h + h).sum().backward()  # h feeds three uses
    tanh = np.tanh(x.data)
    np.testing.assert_allclose(x.grad, (2 * tanh + 1) * (1 - tanh ** 2), **TOLERANCES[torch.float64])


def test_repeated_indices_accumulate():
    x = Tensor(np.arange(4.0), requires_grad=True)
    x[[0, 0, 2, 0]].sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 0.0, 1.0, 0.0])


def test_grad_accumulates_across_backward_calls_until_reset():
    x = Tensor(np.ones(3), requires_grad=True)
    (x * 2.0).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [5.0, 5.0, 5.0])
    x.grad = None
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0, 3.0])


def test_only_leaves_keep_grad_unless_retained():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    hidden, kept = x * 3.0, x * 4.0
    kept.retain_grad()
    (hidden * kept).sum().backward()
    assert hidden.grad is None
    np.testing.assert_array_equal(kept.grad, hidden.data)
    np.testing.assert_array_equal(x.grad, 2 * 12.0 * x.data)


def test_no_grad_records_nothing_and_restores_the_mode():
    x = Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(ValueError):
        with no_grad():
            y = x * 2.0
            with no_grad():
                pass
            assert not autodiff.is_grad_enabled(), "leaving a nested no_grad must not re-enable grad"
            raise ValueError("leaves the block early")
    assert autodiff.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()
    assert (x * 2.0).requires_grad


def test_requires_grad_follows_torch_semantics():
    constant, leaf = Tensor([1.0, 2.0]), Tensor([3.0, 4.0], requires_grad=True)
    assert not constant.requires_grad
    assert not (constant * 2.0).requires_grad
    product = constant * leaf
    assert product.requires_grad and not product.is_leaf and product.grad_fn.inputs == (constant, leaf)
    product.sum().backward()
    assert constant.grad is None
    np.testing.assert_array_equal(leaf.grad, constant.data)


def test_detach_stops_the_gradient_and_shares_the_data():
    x = Tensor(np.array([1.5, -2.0]), requires_grad=True)
    frozen = x.detach()
    assert frozen.data is x.data and not frozen.requires_grad
    (x * frozen).sum().backward()
    np.testing.assert_array_equal(x.grad, x.data)  # not 2x: the detached factor is a constant


def test_float32_stays_float32():
    x = Tensor(np.array([0.5, -1.0], dtype=np.float32), requires_grad=True)
    y = (x * 2.0).sigmoid().log_softmax(axis=0).sum()
    assert y.dtype == np.float32
    y.backward()
    assert x.grad.dtype == np.float32
    assert Tensor([1, 2]).dtype == np.float64  # integers become float64


def test_a_graph_deeper_than_the_recursion_limit():
    depth = 5000
    assert depth > sys.getrecursionlimit()
    ours = Tensor(np.array([0.7, -0.2]), requires_grad=True)
    theirs = torch.tensor([0.7, -0.2], dtype=torch.float64, requires_grad=True)
    y, z = ours, theirs
    for _ in range(depth):
        y, z = (y * 1.01).tanh() + 0.01, (z * 1.01).tanh() + 0.01
    y.sum().backward()
    z.sum().backward()
    assert_close(to_torch(ours.grad), theirs.grad, name=f"gradient through {3 * depth} ops")
    assert np.all(ours.grad != 0)


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


def test_backward_on_a_non_scalar_needs_a_gradient():
    y = Tensor(np.ones((2, 3)), requires_grad=True) * 2.0
    with pytest.raises(RuntimeError, match=r"grad can be implicitly created only for scalar outputs.*\(2, 3\)"):
        y.backward()


def test_backward_with_a_gradient_of_the_wrong_shape():
    y = Tensor(np.ones((2, 3)), requires_grad=True) * 2.0
    with pytest.raises(RuntimeError, match=r"Mismatch in shape: gradient has shape \(3,\) but the tensor has shape \(2, 3\)"):
        y.backward(np.ones(3))


def test_backward_on_a_tensor_that_does_not_require_grad():
    with pytest.raises(RuntimeError, match="does not require grad"):
        (Tensor([1.0]) * 2.0).sum().backward()


def test_numpy_refuses_a_tensor_that_requires_grad():
    x = Tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=re.escape("Use tensor.detach().numpy() instead")):
        x.numpy()
    assert x.detach().numpy() is x.data


def test_engine_and_demo_do_not_import_torch():
    for path in ("ops/reference/autodiff.py", "models/mlp_numpy.py"):
        tree = ast.parse((ROOT / path).read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
        assert "torch" not in imported, f"{path} imports torch"


# ------------------------------------------------------------------------------------------------
# The MLP demo
# ------------------------------------------------------------------------------------------------


def test_stratified_split_is_disjoint_complete_and_balanced():
    from tritonprop.models.mlp_numpy import stratified_split

    y = np.repeat(np.arange(10), 50)
    train, held_out = stratified_split(y, 0.2, seed=0)
    assert len(np.intersect1d(train, held_out)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, held_out])), np.arange(len(y)))
    np.testing.assert_array_equal(np.bincount(y[held_out]), np.full(10, 10))
    np.testing.assert_array_equal(stratified_split(y, 0.2, seed=0)[1], held_out)


def test_mlp_reaches_95_percent_on_held_out_digits():
    pytest.importorskip("sklearn", reason="the digits data ships with scikit-learn")
    from tritonprop.models import mlp_numpy

    result = mlp_numpy.train(mlp_numpy.Config(), log=None)
    assert result.held_out_accuracy >= 0.95, result
    assert result.losses[-1] < 0.1 * result.losses[0], result.losses


def test_cli_trains_the_numpy_mlp():
    pytest.importorskip("sklearn", reason="the digits data ships with scikit-learn")
    run = subprocess.run([sys.executable, "-m", "tritonprop", "train", "mlp-numpy", "--epochs", "3"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert len(re.findall(r"^epoch +\d+ +train loss \d+\.\d+$", run.stdout, flags=re.M)) == 3, run.stdout
    accuracy = re.search(r"held-out accuracy (\d\.\d+)", run.stdout)
    assert accuracy and 0.5 < float(accuracy.group(1)) <= 1.0, run.stdout


def test_cli_train_lists_its_models_and_rejects_unknown_ones(capsys):
    from tritonprop import cli

    args = cli.build_parser().parse_args(["train", "mlp-numpy", "--epochs", "2", "--lr", "0.1"])
    assert (args.epochs, args.lr, args.run) == (2, 0.1, cli._train_mlp_numpy)
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["train", "no-such-model"])
    assert exit_info.value.code == 2
    assert "mlp-numpy" in capsys.readouterr().err
