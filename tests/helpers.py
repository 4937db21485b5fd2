"""One-line checks for every op test.

    assert_gradcheck(ops.batch_norm, x, rm, rv, w, b, training=True)
        torch.autograd.gradcheck in float64 of a tritonprop op.
    assert_matches(ops.batch_norm, {"reference": ref.batch_norm, "torch": F.batch_norm}, x, rm, rv, w, b, training=True)
        forward, gradients and in-place updates of tensor arguments agree with each oracle,
        within the tolerance of the dtype.

Failures print the max abs error, where it is, and both values there.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tritonprop.tolerances import TOLERANCES  # noqa: F401  (one table for the tests and the lessons)


# The dtypes of the parity tests (float64 belongs to gradcheck). The interpreter handles all
# three, so they run on the CPU as well as on CUDA.
PARITY_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def describe_mismatch(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> str:
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    err = (a - e).abs()
    bad = ~(err <= atol + rtol * e.abs())
    bad |= a.isnan() != e.isnan()
    finite_err = torch.where(err.isnan(), torch.full_like(err, float("inf")), err)
    flat = int(finite_err.argmax()) if finite_err.numel() else 0
    where = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), a.shape)) if a.dim() else ()
    return (
        f"max abs error {finite_err.max().item():.3e} at index {where}: "
        f"actual {a.reshape(-1)[flat].item():.8g} vs expected {e.reshape(-1)[flat].item():.8g}; "
        f"{int(bad.sum())} of {a.numel()} elements outside atol={atol:g}, rtol={rtol:g}"
    )


def assert_close(actual, expected, *, name="output", dtype=None):
    """Values agree within the tolerance of `dtype` (default: the expected tensor's dtype)."""
    assert isinstance(actual, torch.Tensor) and isinstance(expected, torch.Tensor), name
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    tol = TOLERANCES[dtype or expected.dtype]
    if not torch.allclose(actual.detach().cpu().double(), expected.detach().cpu().double(), equal_nan=True, **tol):
        raise AssertionError(f"{name}: {describe_mismatch(actual, expected, **tol)}")


def _fresh(value):
    """A leaf copy of a tensor argument (keeping requires_grad and memory layout), so each call is independent."""
    if not isinstance(value, torch.Tensor):
        return value
    copy = value.detach().clone(memory_format=torch.preserve_format)
    if value.stride() != copy.stride():
        copy = torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device=value.device).copy_(value)
    return copy.requires_grad_(value.requires_grad)


def _run(fn, args, kwargs, grad_output):
    args = [_fresh(a) for a in args]
    kwargs = {k: _fresh(v) for k, v in kwargs.items()}
    out = fn(*args, **kwargs)
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    leaves += [v for v in kwargs.values() if isinstance(v, torch.Tensor) and v.requires_grad]
    grads = []
    if leaves:
        grads = torch.autograd.grad(out, leaves, grad_output(out), allow_unused=True)
    return out, grads, args, kwargs


def assert_matches(ours, oracles, *args, grad=True, **kwargs):
    """Forward, input gradients and in-place effects of `ours` agree with every oracle.

    `oracles` maps a name to a function with the same signature. Each function gets fresh copies
    of the arguments; the upstream gradient is one fixed random tensor. Tensor arguments that a
    function changes in place (running statistics, say) must end up the same as well.
    """
    upstream = {}

    def grad_output(out):
        if "g" not in upstream:
            gen = torch.Generator(device="cpu").manual_seed(1234)
            upstream["g"] = torch.randn(out.shape, generator=gen, dtype=torch.float32).to(out.device, out.dtype)
        return upstream["g"]

    if not grad:
        args = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    out, grads, a_args, a_kwargs = _run(ours, args, kwargs, grad_output)
    for oracle_name, oracle in oracles.items():
        e_out, e_grads, e_args, e_kwargs = _run(oracle, args, kwargs, grad_output)
        assert_close(out, e_out, name=f"forward vs {oracle_name}")
        for k, (g, eg) in enumerate(zip(grads, e_grads)):
            if eg is None:
                assert g is None or not g.any(), f"gradient {k} vs {oracle_name}: oracle has none"
                continue
            assert g is not None, f"gradient {k} vs {oracle_name}: tritonprop returned none"
            assert_close(g, eg, name=f"gradient of differentiable input {k} vs {oracle_name}")
        for k, (a, e) in enumerate(zip(a_args, e_args)):
            if isinstance(a, torch.Tensor):
                assert_close(a, e, name=f"argument {k} after the call vs {oracle_name}")
        for k in a_kwargs:
            if isinstance(a_kwargs[k], torch.Tensor):
                assert_close(a_kwargs[k], e_kwargs[k], name=f"argument {k!r} after the call vs {oracle_name}")
    return out


def assert_gradcheck(fn, *args, fast_mode=False, **kwargs):
    """`torch.autograd.gradcheck` of `fn` in float64: floating tensor args are converted to float64.

    Tensors that require grad are the ones checked; the rest are passed as constants.
    """
    converted = []
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            b = _fresh(a.detach().to(torch.float64)).requires_grad_(a.requires_grad)
            converted.append(b)
        else:
            converted.append(a)
    kwargs = {k: (v.detach().double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
              for k, v in kwargs.items()}
    assert any(isinstance(a, torch.Tensor) and a.requires_grad for a in converted), "nothing to check"
    assert torch.autograd.gradcheck(lambda *xs: fn(*xs, **kwargs), tuple(converted), fast_mode=fast_mode)


def record_copy_calls(monkeypatch) -> list:
    """Patch Tensor.contiguous and Tensor.clone so every call records the shape it was called on.

    A test of "this layout is read in place" runs the op and asserts the list stays empty.
    """
    calls = []
    for name in ("contiguous", "clone"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, **kwargs):
            calls.append(tuple(self.shape))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    return calls


DEMO_PACKAGES = ("faker", "matplotlib", "mlxtend", "sklearn", "tqdm")


def require_demo_packages() -> None:
    """Skip the calling test module unless the demo models' packages are installed.

    They are in requirements-dev.txt, so CI has them; the offline GPU machine does not, and there
    the kernel tests still run. Call at module level.
    """
    import pytest

    for name in DEMO_PACKAGES:
        pytest.importorskip(name, reason=f"the demo models need {name} (requirements-dev.txt)")


def assert_gradgradcheck(fn, *args, fast_mode=False, **kwargs):
    """`torch.autograd.gradgradcheck` of `fn` in float64, converting arguments as `assert_gradcheck` does.

    It proves the backward itself is differentiable: the gradient under ``create_graph=True``
    requires grad and its own gradient matches finite differences.
    """
    converted = [_fresh(a.detach().to(torch.float64)).requires_grad_(a.requires_grad)
                 if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    kwargs = {k: (v.detach().double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
              for k, v in kwargs.items()}
    assert any(isinstance(a, torch.Tensor) and a.requires_grad for a in converted), "nothing to check"
    assert torch.autograd.gradgradcheck(lambda *xs: fn(*xs, **kwargs), tuple(converted), fast_mode=fast_mode)


def _penalty_gradients(fn, inputs):
    """The WGAN-GP pattern: g = d fn(*inputs).sum() / d inputs[0] with a graph, then sum(g^2).backward().

    Returns g and the penalty's gradient for every floating input that requires grad (None for
    the others). Each call works on fresh leaves, so two implementations see the same values.
    """
    leaves = [_fresh(t) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in inputs]
    leaves[0].requires_grad_()
    g, = torch.autograd.grad(fn(*leaves).sum(), leaves[0], create_graph=True)
    assert g.requires_grad, "the gradient under create_graph=True is detached: the penalty would drop out"
    (g ** 2).sum().backward()
    return g, [t.grad if isinstance(t, torch.Tensor) and t.requires_grad else None for t in leaves]


def assert_gradient_penalty_matches(ours, theirs, *inputs):
    """A gradient penalty on the first input gives the same gradient, and the same penalty gradient
    for every input that requires grad, through `ours` as through `theirs` (torch's op)."""
    g, grads = _penalty_gradients(ours, inputs)
    g_expected, grads_expected = _penalty_gradients(theirs, inputs)
    assert_close(g, g_expected, name="first-order gradient")
    for k, (got, expected) in enumerate(zip(grads, grads_expected)):
        if expected is None:
            # torch's graph does not reach this input: ours may leave it None or give zeros.
            assert got is None or not got.any(), f"input {k}: a penalty gradient where torch has none"
            continue
        assert got is not None, f"input {k}: tritonprop returned no penalty gradient"
        assert_close(got, expected, name=f"penalty gradient of input {k}")


def seeded(fn, seed=7):
    """`fn` with torch's generator reset first, so every call draws the same dropout seed (and mask)."""
    def call(*args, **kwargs):
        torch.manual_seed(seed)
        return fn(*args, **kwargs)
    return call


@dataclass(frozen=True)
class RecurrentCase:
    """One sequence case of a recurrent layer test: sizes and torch.nn.RNN / LSTM / GRU options."""
    name: str
    T: int = 3
    B: int = 2
    I: int = 3
    H: int = 4
    options: dict = field(default_factory=dict)

    @property
    def D(self):
        return 2 if self.options.get("bidirectional") else 1

    @property
    def layers(self):
        return self.options.get("num_layers", 1)

    @property
    def kwargs(self):
        return {k: v for k, v in self.options.items() if k != "dropout"}

    def tensors(self, module_class, device, dtype=torch.float32, states=1):
        """input (batch-first when asked), `states` initial states (h0; h0 and c0 for the LSTM),
        and the flat weights of a `module_class` (torch.nn.RNN, LSTM or GRU) of these options."""
        module = module_class(self.I, self.H, **self.options).to(device, dtype)
        weights = [w.detach().clone().requires_grad_() for w in module._flat_weights]
        shape = (self.B, self.T, self.I) if self.options.get("batch_first") else (self.T, self.B, self.I)
        x = torch.randn(shape, device=device).to(dtype).requires_grad_()
        hx = [(torch.randn(self.layers * self.D, self.B, self.H, device=device) * 0.5).to(dtype).requires_grad_()
              for _ in range(states)]
        return x, hx, weights


def task_losses(task, model, layers, data, batch_size: int, steps: int, optimizer) -> torch.Tensor:
    """The losses of `steps` training steps of a models/ `Task` on `model`: the task's own batches
    (from a generator seeded 0, so twins see the same ones) and loss, stepped by `optimizer`."""
    batches = task.batches(data, batch_size, torch.Generator().manual_seed(0))
    losses = []
    for _ in range(steps):
        loss = task.loss(model, next(batches), layers)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses)
