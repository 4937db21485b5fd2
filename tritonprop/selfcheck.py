"""A quick kernel self-check: each op, forward and backward, against torch's own op on small inputs.

It is what `tritonprop selfcheck` runs; the test suite (tests/) is the real proof. Every op of
the registry (tritonprop/registry.py) names its case here, and ops that share one (gelu and relu)
are checked together. Each case is a `Sample`, which the tests also compile and opcheck
(tests/test_compile.py). Dropout is random: both sides run from the same seed, and the kernel is
checked against torch's arithmetic on the reference's mask (the tests check the mask's statistics).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from tritonprop import ops, registry
from tritonprop.ops.reference import dropout as reference_dropout


class Sample(NamedTuple):
    """One case: our op and torch's on the same tensors; gradients are taken for `grad_of` (indices)."""
    ours: Callable
    theirs: Callable
    tensors: list
    grad_of: list


def _compare(device, sample: Sample):
    """Run both sides on fresh leaf copies, each from the same seed (dropout draws one); returns
    (name, ours, theirs) for the output and each gradient."""
    results = []
    for fn in (sample.ours, sample.theirs):
        leaves = [t.detach().clone().requires_grad_(k in sample.grad_of) for k, t in enumerate(sample.tensors)]
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(7)
            y = fn(*leaves)
        upstream = torch.ones_like(y) if y.dim() == 0 else torch.randn(y.shape, device=device,
                                                                          generator=torch.Generator(device).manual_seed(1))
        results.append([y, *torch.autograd.grad(y, [leaves[k] for k in sample.grad_of], upstream)])
    names = ["output"] + [f"grad of input {k}" for k in sample.grad_of]
    return [(name, a, b) for name, a, b in zip(names, *results)]


def case_batch_norm(device):
    x = torch.randn(4, 3, 6, 5, device=device).to(memory_format=torch.channels_last) * 2 + 1
    weight, bias = torch.rand(3, device=device) + 0.5, torch.randn(3, device=device)
    return Sample(lambda x, w, b: ops.batch_norm(x, None, None, w, b, training=True),
                    lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), [x, weight, bias], [0, 1, 2])


def case_conv2d(device):
    x = torch.randn(2, 3, 9, 8, device=device).to(memory_format=torch.channels_last)
    weight, bias = torch.randn(4, 3, 3, 3, device=device) * 0.3, torch.randn(4, device=device)
    return Sample(lambda x, w, b: ops.conv2d(x, w, b, stride=2, padding=1),
                    lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), [x, weight, bias], [0, 1, 2])


def case_layer_norm(device):
    x = torch.randn(3, 5, 40, device=device)
    weight, bias = torch.rand(40, device=device) + 0.5, torch.randn(40, device=device)
    return Sample(lambda x, w, b: ops.layer_norm(x, (40,), w, b),
                    lambda x, w, b: F.layer_norm(x, (40,), w, b), [x, weight, bias], [0, 1, 2])


def case_linear(device):
    x = torch.randn(3, 7, 20, device=device)
    weight, bias = torch.randn(18, 20, device=device) * 0.2, torch.randn(18, device=device)
    return Sample(lambda x, w, b: ops.linear(x, w, b, activation="gelu"),
                    lambda x, w, b: F.gelu(F.linear(x, w, b)), [x, weight, bias], [0, 1, 2])


def case_losses(device):
    # cross_entropy (with label smoothing and an ignored row) beside nll_loss of log_softmax.
    logits = torch.randn(6, 11, device=device) * 3
    target = torch.tensor([0, 3, 10, -100, 5, 3], device=device)
    return Sample(lambda x, t: ops.cross_entropy(x, t, label_smoothing=0.1)
                    + ops.nll_loss(ops.log_softmax(x, dim=1), t),
                    lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1) + F.nll_loss(F.log_softmax(x, dim=1), t),
                    [logits, target], [0])


def case_activations(device):
    x = torch.randn(4, 33, device=device) * 3
    return Sample(lambda x: ops.gelu(x, approximate="tanh") + ops.relu(x),
                    lambda x: F.gelu(x, approximate="tanh") + F.relu(x), [x], [0])


def case_rnn(device):
    x, h0 = torch.randn(6, 3, 5, device=device), torch.randn(4, 3, 7, device=device)
    theirs = torch.nn.RNN(5, 7, num_layers=2, bidirectional=True).to(device)
    ours = ops.RNN(5, 7, num_layers=2, bidirectional=True).to(device)
    ours.load_state_dict(theirs.state_dict())
    return Sample(lambda x, h0: ours(x, h0)[0], lambda x, h0: theirs(x, h0)[0], [x, h0], [0, 1])


def case_rnn_cell(device):
    x, h = torch.randn(3, 5, device=device), torch.randn(3, 7, device=device)
    w_ih, w_hh = torch.randn(7, 5, device=device) * 0.4, torch.randn(7, 7, device=device) * 0.4
    b_ih, b_hh = torch.randn(7, device=device), torch.randn(7, device=device)
    return Sample(lambda *args: ops.rnn_cell(*args, nonlinearity="tanh"), torch.rnn_tanh_cell,
                    [x, h, w_ih, w_hh, b_ih, b_hh], [0, 1, 2, 3, 4, 5])


def case_dropout(device):
    # Random, so both sides draw the same seed: the oracle is torch's arithmetic on the mask that
    # the reference rebuilds from it (the kernel's Philox stream, in numpy).
    x, p = torch.randn(5, 37, device=device), 0.3

    def theirs(x):
        keep = reference_dropout.keep_mask(x.shape, reference_dropout.draw_seed(x.device), p, x.device)
        return x * keep / (1 - p)

    return Sample(lambda x: ops.dropout(x, p), theirs, [x], [0])


def case_attention(device):
    # Cross-attention with a key-padding mask and GQA (4 query heads share 2 key/value heads).
    q, k, v = (torch.randn(2, heads, length, 24, device=device) for heads, length in ((4, 9), (2, 13), (2, 13)))
    keep = torch.arange(13, device=device) < torch.tensor([[13], [7]], device=device)
    mask = keep[:, None, None, :]
    return Sample(lambda q, k, v: ops.scaled_dot_product_attention(q, k, v, mask, enable_gqa=True),
                    lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask, enable_gqa=True), [q, k, v], [0, 1, 2])


def _cases() -> dict:
    """label -> case: each case function once, labelled by the registry's ops that share it."""
    groups = registry.groups("selfcheck")
    missing = [case for case in groups if case not in globals()]
    if missing:
        raise ImportError(f"the op registry names self-check cases that tritonprop/selfcheck.py lacks: "
                          f"{', '.join(missing)}")
    return {", ".join(names): globals()[case] for case, names in groups.items()}


CASES = _cases()


def cases_for(op_names=None) -> dict:
    """The cases (label -> case) that check any of `op_names` (every case when None)."""
    if op_names is None:
        return dict(CASES)
    for name in op_names:
        registry.get(name)  # a KeyError naming the ops, for an unknown one
    return {label: case for label, case in CASES.items() if set(label.split(", ")) & set(op_names)}


def run(device=None, atol=1e-4, rtol=1e-4, op_names=None) -> bool:
    """Run the cases of `op_names` (every op when None); prints one line per case, True when all pass."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    # Full-precision fp32 on both sides: TF32 would need a looser bound than this check uses.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    cases = cases_for(op_names)
    width = max(map(len, cases), default=0)
    all_ok = True
    for label, case in cases.items():
        worst = 0.0
        ok = True
        for name, ours, theirs in _compare(device, case(device)):
            err = (ours.double() - theirs.double()).abs().max().item()
            worst = max(worst, err)
            if not torch.allclose(ours, theirs, atol=atol, rtol=rtol):
                ok = False
                print(f"  {label}: {name} differs from torch by up to {err:.3e}")
        print(f"{label:<{width}} forward+backward vs torch on {device}: {'ok' if ok else 'FAILED'} "
              f"(max abs diff {worst:.2e})")
        all_ok &= ok
    return all_ok
