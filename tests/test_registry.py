"""The op registry (tritonprop/registry.py) and every place that lists ops agree with it.

Each op is declared once; the CLI's info and selfcheck, the sm_90 compile check and the bench
cases derive from its entry. These tests fail when an op is missing from the registry or from
one of those places, or when one of them names an op the registry does not know. No kernel runs.
"""
from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from tritonprop import backend, ops, registry, selfcheck
from tritonprop.ops import _library
from tritonprop.bench import cases as bench_cases
from tritonprop.bench import report as bench_report

OPS = list(registry.OPS)
COMPILE_SCRIPT = Path(__file__).with_name("compile_for_cuda.py")
# Lowercase public names of tritonprop.ops that are functions but no op of their own.
NOT_OPS = {"fuse_conv_bn_eval": "folds an eval-mode BatchNorm2d into a Conv2d; it returns a module",
           "convert": "swaps a model's torch layers for ours; it returns the model"}


def _functional(name):
    return getattr(ops, name)


def _module_of(function) -> types.ModuleType:
    return sys.modules[function.__module__]


# ------------------------------------------------------------------------------------------------
# The registry itself
# ------------------------------------------------------------------------------------------------

def test_registry_module_imports_nothing_heavy():
    # Loaded as a plain file in a fresh interpreter: neither torch, triton, tritonprop.ops nor the
    # bench may come with it (ops import the registry; compile_for_cuda.py reads it).
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('op_registry', {str(Path(registry.__file__))!r})\n"
            "module = sys.modules['op_registry'] = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(module)\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'triton', 'numpy', 'tritonprop'))\n"
            "print(len(module.OPS), heavy)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(" ", 1) == [str(len(OPS)), "[]\n"]


def test_entries_are_keyed_by_their_names_and_frozen():
    for name, spec in registry.OPS.items():
        assert spec.name == name
    with pytest.raises(AttributeError):
        registry.OPS["conv2d"].kernels = "elsewhere"


def test_unknown_op_is_an_error_naming_the_ops():
    with pytest.raises(KeyError, match="'conv3d' is not a tritonprop op; the ops are conv2d"):
        registry.reference("conv3d")


def test_a_bad_autocast_policy_is_refused():
    with pytest.raises(ValueError, match="autocast policy 'fp16'"):
        registry.OpSpec("x", "tritonprop.kernels.x", "fp16", "tritonprop.ops.reference.x:x", "case_x", "x_kernels",
                        None)


def test_every_public_functional_has_an_entry():
    functionals = {name for name in ops.__all__
                   if name.islower() and inspect.isfunction(getattr(ops, name)) and name not in NOT_OPS}
    assert functionals - set(OPS) == set(), "public functionals of tritonprop.ops without a registry entry"
    assert set(OPS) - functionals == set(), "registry entries that tritonprop.ops does not export"


@pytest.mark.parametrize("name", OPS)
def test_kernels_module_imports_and_is_the_ones_the_op_runs(name):
    module = registry.kernels(name)
    assert module.__name__ == registry.OPS[name].kernels
    # The functional's module holds that kernels module (as `K`, or under any other name).
    used = {value for value in vars(_module_of(_functional(name))).values() if isinstance(value, types.ModuleType)}
    assert module in used, f"{name}: {_module_of(_functional(name)).__name__} does not import {module.__name__}"


@pytest.mark.parametrize("name", OPS)
def test_reference_resolves_to_a_callable(name):
    fn = registry.reference(name)
    assert callable(fn)
    module_name = registry.OPS[name].reference.partition(":")[0]
    assert module_name.startswith("tritonprop.ops.reference.") and fn.__module__ == module_name


def _run_case(name):
    """The op's self-check sample, forward only."""
    sample = getattr(selfcheck, registry.OPS[name].selfcheck)(torch.device("cpu"))
    with torch.no_grad():
        sample.ours(*sample.tensors)


@pytest.mark.parametrize("name", OPS)
def test_the_functional_takes_the_one_dispatch_path_under_its_name(name, monkeypatch):
    """The registry's autocast policy and reference are applied by ops._library.dispatch, which
    looks them up by name: a functional that dispatched under another name, or not at all, fails."""
    policies, references = [], []

    class Recording(dict):
        def __init__(self, entries, seen):
            super().__init__(entries)
            self.seen = seen

        def __getitem__(self, op):
            self.seen.append(op)
            return super().__getitem__(op)

    monkeypatch.setattr(_library, "AUTOCAST_CASTS", Recording(_library.AUTOCAST_CASTS, policies))
    monkeypatch.setattr(_library, "REFERENCES", Recording(_library.REFERENCES, references))
    _run_case(name)
    assert name in policies
    monkeypatch.setenv(backend.BACKEND_ENV, "reference")
    _run_case(name)
    assert name in references


def test_groups_collect_the_ops_that_share_a_value():
    assert registry.groups("selfcheck")[registry.OPS["gelu"].selfcheck] == ("relu", "gelu")
    assert None not in registry.groups("bench")
    assert registry.groups("bench")["elementwise"] == ("gelu", "dropout")
    with pytest.raises(ValueError):
        registry.groups("color")


# ------------------------------------------------------------------------------------------------
# tritonprop info (backend.describe)
# ------------------------------------------------------------------------------------------------

def test_info_lists_every_op_of_the_registry():
    assert list(backend.describe()["ops"]) == OPS


# ------------------------------------------------------------------------------------------------
# tritonprop selfcheck
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", OPS)
def test_every_op_has_a_selfcheck_case(name):
    case = getattr(selfcheck, registry.OPS[name].selfcheck, None)
    assert callable(case), f"{name}: tritonprop/selfcheck.py has no case {registry.OPS[name].selfcheck}"
    labels = [label for label, fn in selfcheck.CASES.items() if name in label.split(", ")]
    assert len(labels) == 1 and selfcheck.CASES[labels[0]] is case


def test_selfcheck_checks_only_registry_ops_each_case_once():
    checked = [op for label in selfcheck.CASES for op in label.split(", ")]
    assert sorted(checked) == sorted(OPS)
    assert len(set(map(id, selfcheck.CASES.values()))) == len(selfcheck.CASES)
    # A case function no entry names would never run.
    defined = {name for name, value in vars(selfcheck).items() if name.startswith("case_") and callable(value)}
    assert defined == set(registry.groups("selfcheck"))


def test_selfcheck_selects_the_cases_of_the_ops_asked_for():
    assert list(selfcheck.cases_for(["gelu", "rnn"])) == ["relu, gelu", "rnn"]
    with pytest.raises(KeyError, match="'softmax' is not a tritonprop op"):
        selfcheck.cases_for(["softmax"])


# ------------------------------------------------------------------------------------------------
# The sm_90 compile check (tests/compile_for_cuda.py, run by tests/test_cuda_compile.py)
# ------------------------------------------------------------------------------------------------

def _compile_functions() -> set[str]:
    # Parsed, not imported: the script sets TRITON_INTERPRET=0 for its own process at import.
    tree = ast.parse(COMPILE_SCRIPT.read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.endswith("_kernels")}


@pytest.mark.parametrize("name", OPS)
def test_every_op_has_compile_variants(name):
    variants = registry.OPS[name].compile_variants
    assert variants in _compile_functions(), f"{name}: tests/compile_for_cuda.py has no function {variants}"


def test_every_compile_function_is_named_by_the_registry():
    assert _compile_functions() == set(registry.groups("compile_variants"))


# ------------------------------------------------------------------------------------------------
# The benchmark cases (bench/cases.py) and report (bench/report.py)
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", OPS)
def test_every_op_has_bench_cases_unless_its_entry_says_none(name):
    group = registry.OPS[name].bench
    if group is None:  # the entry says outright that the op has no benchmark
        return
    assert group in bench_cases.CASES, f"{name}: bench/cases.py has no case group {group}"
    timed = {case.op for case in bench_cases.CASES[group](torch.device("cpu"))}
    assert name in timed, f"{name}: the bench group {group} has no case of this op (its ops: {sorted(timed)})"


def test_bench_groups_time_only_the_registry_ops_that_name_them():
    op_groups = registry.groups("bench")
    assert set(op_groups).isdisjoint(bench_cases.NON_OP_GROUPS)
    assert list(bench_cases.CASES) == [*op_groups, *bench_cases.NON_OP_GROUPS]
    for group, names in op_groups.items():
        # Building the case list makes no tensors; `op` is the name each case is reported under.
        timed = {case.op for case in bench_cases.CASES[group](torch.device("cpu"))}
        assert timed == set(names), f"bench group {group} times {sorted(timed)}; the registry says {sorted(names)}"


def test_every_case_function_of_the_bench_is_a_group():
    # A `<group>_cases` function that no registry entry (and no non-op group) names would never run.
    defined = {value for name, value in vars(bench_cases).items() if name.endswith("_cases") and callable(value)}
    assert defined == set(bench_cases.CASES.values())


def test_bench_report_takes_groups_and_ops():
    assert bench_report.groups_of(["gelu", "dropout", "conv2d", "elementwise"]) == ["elementwise", "conv2d"]
    assert bench_report.parse_args([]).ops == list(bench_cases.CASES)
    no_bench = [name for name, spec in registry.OPS.items() if spec.bench is None]
    for name in no_bench:
        with pytest.raises(ValueError, match=f"the op {name} has no benchmark cases"):
            bench_report.groups_of([name])
    with pytest.raises(ValueError, match="unknown softmax"):
        bench_report.groups_of(["softmax"])


@pytest.mark.parametrize("name", OPS)
def test_dispatch_applies_the_registry_entry(name):
    assert _library.AUTOCAST_CASTS[name] is registry.autocast_cast(registry.autocast_policy(name))
    assert _library.REFERENCES[name] is registry.reference(name)
