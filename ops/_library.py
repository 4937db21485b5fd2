"""The one place where tritonprop's kernels become torch operators, and the one path every functional takes to them.

Every functional checks its own arguments and then calls `dispatch`, which runs the same steps
in the same order for every op:

    validate (the functional) -> autocast (the registry's policy) -> the dtype checks torch makes
    after its cast -> backend choice (the naive reference, or) -> device check -> the custom op

Every kernel launch that autograd sees is a custom op in the ``tritonprop::`` namespace,
registered here with `torch.library`:

- its real implementation is an annotated wrapper around a launch function in `kernels/`;
- its fake (meta) implementation is that same wrapper run on fake tensors inside
  `kernels._common.allocations_only`, which skips every launch. The fake therefore allocates
  exactly what the kernel path allocates (shape, dtype, strides) and cannot drift from it;
- its autograd is ``register_autograd(backward, setup_context=...)``, in the setup_context form.

Why these choices, checked with torch 2.13 and Triton 3.6 on the CPU:

- ``torch.library.custom_op`` makes each op one opaque node to dynamo, AOTAutograd and
  torch.export, so ``torch.compile(fullgraph=True)`` never traces into Triton's interpreter
  (which fails on fake tensors). ``torch.library.triton_op`` with ``wrap_triton`` would let
  inductor see the kernels themselves, but under the interpreter dynamo then runs the kernel on
  fake tensors and fails; on CUDA it is unproven here (no GPU was available), so it is not used.
- ``register_autograd`` refuses an op that mutates an input ("Cannot register autograd formula
  for non-functional operator"). So every op here is functional: batch_norm returns the
  updated running statistics and its functional writes them back; in-place ReLU and dropout
  compute out of place and copy.
- The autograd.Function that ``custom_op`` generates is of the old ``forward(ctx, ...)`` form,
  which torch.func refuses ("must override the setup_context staticmethod"). So each op also
  gets an autograd.Function of the setup_context form, built from the same ``setup_context`` and
  ``backward``, with ``generate_vmap_rule``; `call` uses it inside a torch.func transform only.
- Under torch.compile and torch.export, and wherever anything may want to see the op itself (a
  dispatch mode such as a FakeTensorMode or an op recorder, a torch function mode, the JIT
  tracer, a tensor subclass, meta tensors), `call` runs the op itself, so that graphs hold one
  node per op and autograd uses the registered formula.
- In plain eager mode on plain tensors, `call` skips torch's dispatcher, whose round trip costs
  10 to 15 us of Python per op call with torch 2.13 (the Python autograd kernel, a redispatch,
  the arguments re-bound to the schema, an aliasing check): the most of the host overhead that
  bench/host_overhead.py measures, which bounds a small model's step on a GPU. It runs what
  the op would run: the wrapper itself when no gradient is recorded, and otherwise an
  autograd.Function of the old ``forward(ctx, ...)`` form (the form that ``register_autograd``
  generates) built from the wrapper and the same ``setup_context`` and ``backward``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch._library.utils import is_tensorlist_like_type

from tritonprop import backend, recording, registry
from tritonprop.kernels._common import allocations_only
from tritonprop.ops._autocast import autocasting

NAMESPACE = "tritonprop"

# op -> its setup_context-form autograd.Function, used inside torch.func transforms.
_FUNCTIONS: dict = {}
# op -> the wrapper it was registered from, which `call` runs directly in plain eager mode.
_WRAPPERS: dict = {}
# op -> its old-form autograd.Function around the wrapper, used by `call` in plain eager mode when
# a gradient is recorded. An op with tensor-list arguments or outputs has none (autograd.Function
# tracks tensors only, not lists of them), and runs as itself then.
_EAGER_FUNCTIONS: dict = {}
# Tensor types that carry no behaviour of their own (subclasses such as FakeTensor do).
_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)
# The ops whose own gradient raises (`not_differentiable`).
NOT_DIFFERENTIABLE: set = set()
# Each registry op's autocast cast (None: none) and reference, resolved once, here: dispatch also
# runs inside torch.compile's tracing, which cannot import.
AUTOCAST_CASTS = {name: registry.autocast_cast(registry.autocast_policy(name)) for name in registry.OPS}
REFERENCES = {name: registry.reference(name) for name in registry.OPS}


def kernel_op(name: str) -> Callable:
    """Decorator: register an annotated wrapper of launch functions as the op ``tritonprop::<name>``.

    The wrapper takes tensors and plain values (its annotations are the op's schema) and returns
    new tensors only, never an input or a view of one, and never None: an output that was not
    asked for is `absent` (a 0-element tensor). Its fake implementation is the wrapper itself
    with every kernel launch skipped.
    """

    def register(wrapper):
        # The op runs `run`, which counts its runs for `tritonprop.record()`; its schema comes from
        # the wrapper's own annotations, which are evaluated in the wrapper's module.
        run = recording.counted(name, wrapper)
        schema = torch.library.infer_schema(wrapper, mutates_args=())
        op = torch.library.custom_op(f"{NAMESPACE}::{name}", run, mutates_args=(), schema=schema)

        def fake(*args, **kwargs):
            with allocations_only():
                return wrapper(*args, **kwargs)

        op.register_fake(fake)
        _WRAPPERS[op] = run
        return op

    return register


def absent(like: torch.Tensor) -> torch.Tensor:
    """The stand-in for an output that was not asked for (a custom op cannot return None)."""
    return like.new_empty(0)


def wanted(outputs, needs):
    """An op's outputs with those not asked for (``needs`` false) as None again."""
    return tuple(t if need else None for t, need in zip(outputs, needs))


def differentiable(op, *, setup_context: Callable, backward: Callable) -> None:
    """Give ``op`` its autograd: ``setup_context(ctx, inputs, output)`` and ``backward(ctx, *grads)``.

    ``backward`` returns one gradient per input of the op (None for non-tensors), like an
    autograd.Function's. Inside it, grad mode is on exactly when a graph of the gradient is
    asked for (``create_graph=True``, or any torch.func transform).
    """
    op.register_autograd(backward, setup_context=setup_context)
    _FUNCTIONS[op] = type(f"{op._name}_function", (torch.autograd.Function,), {
        "forward": staticmethod(lambda *args: op(*args)),
        "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward),
        "generate_vmap_rule": True,
    })
    schema = op._opoverload._schema
    if any(is_tensorlist_like_type(a.type) for a in (*schema.arguments, *schema.returns)):
        return
    wrapper = _WRAPPERS[op]

    def forward(ctx, *args):
        output = wrapper(*args)
        setup_context(ctx, args, output)
        return output

    _EAGER_FUNCTIONS[op] = type(f"{op._name}_eager_function", (torch.autograd.Function,), {
        "forward": staticmethod(forward),
        "backward": staticmethod(backward),
    })


def not_differentiable(op, *, explanation: str) -> None:
    """For a backward kernel whose own gradient is not implemented: differentiating it raises.

    It is reached only when a caller asks for a graph of a gradient that is not differentiable
    by design (attention, RNN), or differentiates an op's raw backward directly.
    """

    def setup_context(ctx, inputs, output):
        pass

    def backward(ctx, *grads):
        raise RuntimeError(f"{NAMESPACE}::{op._name}: {explanation}")

    differentiable(op, setup_context=setup_context, backward=backward)
    NOT_DIFFERENTIABLE.add(op._name)


def in_functorch_transform() -> bool:
    """True inside torch.func.grad / vmap / jacrev / ... (outside torch.compile's tracing)."""
    return torch._C._functorch.peek_interpreter_stack() is not None


def call(op, *args):
    """Run the custom op ``op``: itself; through its autograd.Function inside a torch.func transform;
    without torch's dispatcher in plain eager mode (see the module docstring)."""
    if torch.compiler.is_compiling():
        return op(*args)
    if in_functorch_transform():
        return _FUNCTIONS[op].apply(*args)
    if not _plain_eager(args):
        return op(*args)
    if not (torch.is_grad_enabled() and torch._C._any_requires_grad(*args)):
        # What the op's autograd kernel does then: the implementation alone, no graph.
        return _WRAPPERS[op](*args)
    function = _EAGER_FUNCTIONS.get(op)
    return op(*args) if function is None else function.apply(*args)


def _plain_eager(args) -> bool:
    """Nothing needs to see the op itself: no dispatch mode, torch function mode or JIT tracer is
    active, and every tensor argument is a plain tensor (no subclass), with data (not meta)."""
    if (torch._C._len_torch_dispatch_stack() or torch._C._is_torch_function_mode_enabled()
            or torch._C._get_tracing_state() is not None):
        return False
    for a in args:
        if isinstance(a, torch.Tensor) and (type(a) not in _PLAIN_TENSORS or a.is_meta):
            return False
    return True


def dispatch(name: str, tensors: dict, *, kernels: Callable, reference: Callable, check_cast: Callable | None = None,
             autocast: bool = True):
    """Run op `name` (a registry entry) on its validated arguments, by the one path.

    ``tensors`` are the op's tensor arguments by name (None allowed), in the order its autocast
    policy casts them. ``check_cast(**tensors)`` makes the dtype checks that torch makes after
    its cast. Then either ``reference(naive, **tensors)`` runs, with ``naive`` the registry's
    reference implementation (``TRITONPROP_BACKEND=reference``), or, once every tensor is on a
    device the kernels run on, ``kernels(**tensors)``, with autocast off: the casts are done, and
    nothing inside may be cast again. (Outside an autocast region no context is entered, so that
    an exported graph holds the ops themselves, not an autocast region around them.)
    ``autocast=False`` skips the cast (log_softmax's ``dtype`` argument overrides autocast, as in
    torch).
    """
    device_type = next(t.device.type for t in tensors.values() if t is not None)
    cast = AUTOCAST_CASTS[name] if autocast else None
    casting = autocasting(device_type)
    if cast is not None and casting:
        # (Outside an autocast region every cast leaves the arguments as they are.)
        tensors = dict(zip(tensors, cast(device_type, list(tensors.values()))))
    if check_cast is not None:
        check_cast(**tensors)
    if backend.use_reference():
        return reference(REFERENCES[name], **tensors)
    backend.check_devices(name, **tensors)
    if not casting:
        return kernels(**tensors)
    with torch.autocast(device_type, enabled=False):
        return kernels(**tensors)
