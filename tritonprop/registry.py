"""The op registry: every op tritonprop implements, declared once.

Each entry of `OPS` names one op, by its `torch.nn.functional` name, and says where everything
about it lives:

    kernels           the kernels module (kernels/<module>.py)
    autocast          how its functional casts under torch.autocast (a policy below)
    reference         its naive autograd oracle, "module:attr" in tritonprop.ops.reference
    selfcheck         the case function in tritonprop/selfcheck.py that checks it
    compile_variants  the function in tests/compile_for_cuda.py that yields its kernels for sm_90
    bench             its case group in tritonprop.bench.cases.CASES, or None: no benchmark

Several ops may share a selfcheck case, a compile function or a bench group (gelu and relu run
the same kernels). Everything that lists ops derives from here: `tritonprop info` and
`tritonprop selfcheck` (tritonprop/backend.py, tritonprop/selfcheck.py), the sm_90 compile
check (tests/compile_for_cuda.py, tests/test_cuda_compile.py) and the benchmark cases and
report (bench/cases.py, bench/report.py). tests/test_registry.py checks that they agree.

This module imports neither torch, triton, tritonprop.ops nor the bench: everything is a string,
resolved when asked for. So anything may import it, first or last, cheaply and without a cycle;
tests/compile_for_cuda.py reads it in a process whose kernels compile for CUDA.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

# The autocast policies. Each stands for one cast of tritonprop/ops/_autocast.py (AUTOCAST_CASTS):
# - LOWER_PRECISION, cast_to_lower_precision: ops on torch's lower-precision list (conv2d, linear,
#   attention, the RNNs); inside an autocast region, floating arguments go to the autocast dtype.
# - FLOAT32, cast_to_float32: ops on autocast's float32 list of every device type (cross_entropy,
#   nll_loss); inside an autocast region, float16 and bfloat16 arguments go to float32.
# - FLOAT32_ON_CUDA, cast_to_float32_on_cuda: ops on CUDA autocast's float32 list that CPU autocast
#   leaves alone (layer_norm, log_softmax).
# - NONE, no cast: ops on no autocast list run in their input's dtype (relu, gelu, dropout, batch_norm).
LOWER_PRECISION = "lower_precision"
FLOAT32 = "float32"
FLOAT32_ON_CUDA = "float32_on_cuda"
NONE = "none"

# policy -> the cast function ("module:attr"), None for NONE.
AUTOCAST_CASTS: dict[str, str | None] = {
    LOWER_PRECISION: "tritonprop.ops._autocast:cast_to_lower_precision",
    FLOAT32: "tritonprop.ops._autocast:cast_to_float32",
    FLOAT32_ON_CUDA: "tritonprop.ops._autocast:cast_to_float32_on_cuda",
    NONE: None,
}


@dataclass(frozen=True)
class OpSpec:
    """One op: its name and where its kernels, reference, self-check, compile variants and
    benchmarks live (see the module docstring). Every field is a plain string, or None for
    `bench` where the op has no benchmark; none has a default, so an entry says each outright."""

    name: str
    kernels: str
    autocast: str
    reference: str
    selfcheck: str
    compile_variants: str
    bench: str | None

    def __post_init__(self):
        if self.autocast not in AUTOCAST_CASTS:
            raise ValueError(f"{self.name}: autocast policy {self.autocast!r} is not one of {', '.join(AUTOCAST_CASTS)}")
        if ":" not in self.reference:
            raise ValueError(f"{self.name}: reference {self.reference!r} is not 'module:attr'")


def _op(name, kernels, autocast, reference, selfcheck, compile_variants, bench) -> tuple[str, OpSpec]:
    return name, OpSpec(name, "tritonprop.kernels." + kernels, autocast, "tritonprop.ops.reference." + reference,
                        selfcheck, compile_variants, bench)


OPS: dict[str, OpSpec] = dict([
    # name, kernels module, autocast, reference, selfcheck case, compile variants, bench group
    _op("conv2d", "conv2d", LOWER_PRECISION, "conv2d:conv2d_unfold", "case_conv2d", "conv2d_kernels", "conv2d"),
    _op("batch_norm", "batchnorm", NONE, "batchnorm:batch_norm", "case_batch_norm", "batch_norm_kernels",
        "batch_norm"),
    _op("layer_norm", "layernorm", FLOAT32_ON_CUDA, "layernorm:layer_norm", "case_layer_norm", "layer_norm_kernels",
        "layer_norm"),
    _op("linear", "linear", LOWER_PRECISION, "linear:linear", "case_linear", "linear_kernels", "linear"),
    _op("relu", "elementwise", NONE, "activations:relu", "case_activations", "elementwise_kernels", None),
    _op("gelu", "elementwise", NONE, "activations:gelu", "case_activations", "elementwise_kernels", "elementwise"),
    _op("dropout", "dropout", NONE, "dropout:dropout", "case_dropout", "dropout_kernels", "elementwise"),
    _op("cross_entropy", "cross_entropy", FLOAT32, "cross_entropy:cross_entropy", "case_losses",
        "cross_entropy_kernels", "cross_entropy"),
    _op("log_softmax", "cross_entropy", FLOAT32_ON_CUDA, "cross_entropy:log_softmax", "case_losses",
        "cross_entropy_kernels", None),
    _op("nll_loss", "cross_entropy", FLOAT32, "cross_entropy:nll_loss", "case_losses", "cross_entropy_kernels",
        None),
    _op("scaled_dot_product_attention", "attention", LOWER_PRECISION, "attention:scaled_dot_product_attention",
        "case_attention", "attention_kernels", "attention"),
    _op("rnn_cell", "rnn", LOWER_PRECISION, "rnn:rnn_cell", "case_rnn_cell", "rnn_kernels", None),
    _op("rnn", "recurrence", LOWER_PRECISION, "rnn:rnn", "case_rnn", "recurrence_kernels", "rnn"),
    _op("lstm_cell", "recurrence", LOWER_PRECISION, "lstm:lstm_cell", "case_gated_cells", "recurrence_kernels", None),
    _op("gru_cell", "recurrence", LOWER_PRECISION, "gru:gru_cell", "case_gated_cells", "recurrence_kernels", None),
    _op("lstm", "recurrence", LOWER_PRECISION, "lstm:lstm", "case_lstm", "recurrence_kernels", "lstm"),
    _op("gru", "recurrence", LOWER_PRECISION, "gru:gru", "case_gru", "recurrence_kernels", "gru"),
])


def get(name: str) -> OpSpec:
    """The entry of op `name`; a KeyError that lists the ops otherwise."""
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a tritonprop op; the ops are {', '.join(OPS)}") from None


def _resolve(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def autocast_policy(name: str) -> str:
    """The autocast policy of op `name`: LOWER_PRECISION, FLOAT32, FLOAT32_ON_CUDA or NONE."""
    return get(name).autocast


def autocast_cast(policy: str) -> Callable | None:
    """The cast function of tritonprop/ops/_autocast.py that `policy` stands for (None for NONE)."""
    path = AUTOCAST_CASTS[policy]
    return None if path is None else _resolve(path)


def reference(name: str) -> Callable:
    """The naive autograd implementation of op `name` (imported on first use)."""
    return _resolve(get(name).reference)


def kernels(name: str):
    """The kernels module of op `name` (imported on first use)."""
    return importlib.import_module(get(name).kernels)


def groups(field: str) -> dict[str, tuple[str, ...]]:
    """The ops that share each value of `field` ("selfcheck", "compile_variants", "bench"), in
    registry order: e.g. groups("selfcheck")["case_activations"] == ("relu", "gelu"). An op whose
    field is None belongs to no group."""
    if field not in OpSpec.__dataclass_fields__ or field == "name":
        raise ValueError(f"{field!r} is not a field of OpSpec to group by")
    grouped: dict[str, list[str]] = {}
    for spec in OPS.values():
        value = getattr(spec, field)
        if value is not None:
            grouped.setdefault(value, []).append(spec.name)
    return {value: tuple(names) for value, names in grouped.items()}
