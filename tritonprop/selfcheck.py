"""A quick kernel self-check: each op, forward and backward, against torch's own op on small inputs.

It is what `tritonprop selfcheck` runs; the test suite (tests/) is the real proof. Every op of
the registry (tritonprop/registry.py) names its case here, and ops that share one (gelu and relu)
are checked together. Each case is a `Sample`, which the tests also compile and opcheck
(tests/test_compile.py). Dropout is random: both sides run from the same seed, and the kernel is
checked against torch's arithmetic on the reference's mask (the tests check the mask's statistics).

By default every case runs in float32 against torch's float32 op, elementwise within 1e-4. With
`dtypes` (`python -m tritonprop.selfcheck --dtypes bf16,fp16,fp32`, as bench/device_check.sh runs
it on the GPU) each case also runs in bfloat16 and float16: its tensors (and an RNN's weights) are
rounded to the dtype, our op runs in it, and torch's op runs in float32 on the same rounded values,
so the oracle is the float32 math of the 16-bit inputs. A 16-bit result is checked by its
relative error in norm, ||ours - torch|| / ||torch||, for the output and each gradient, within a
bound per dtype (`RELATIVE_ERROR`: eight units of the dtype's roundoff), far below the error of a
wrong index or a missing mask. NaN or infinity where torch has none always fails.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from tritonprop import ops, registry
from tritonprop.ops.reference import dropout as reference_dropout


# --dtypes names -> dtypes, and the bound on the relative error in norm of a 16-bit result against
# torch's float32 math on the same rounded inputs: eight units of the dtype's roundoff (2**-8 for
# bfloat16, 2**-11 for float16). A result rounded once is within one; the rest is room for the
# roundings inside the kernels (attention rounds its probabilities to the input dtype before the
# P @ V product, an RNN rounds its hidden state at every step) and for Triton's interpreter, which
# rounds float32 to bfloat16 by truncation. Under the interpreter the cases reach at most 1.2e-2
# in bfloat16 (rnn_cell) and 6.6e-4 in float16 (rnn); a wrong index or a missing mask is off by
# tens of percent.
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
RELATIVE_ERROR = {torch.bfloat16: 8 * 2**-8, torch.float16: 8 * 2**-11}


class Sample(NamedTuple):
    """One case: our op and torch's on the same tensors; gradients are taken for `grad_of` (indices).

    A case function builds it as `case(device, dtype=torch.float32)`, with its floating tensors in
    `dtype`; integer and boolean tensors (targets, masks) keep theirs."""
    ours: Callable
    theirs: Callable
    tensors: list
    grad_of: list


def _compare(device, sample: Sample):
    """Run both sides on fresh leaf copies, each from the same seed (dropout draws one); returns
    (name, ours, theirs) for the output and each gradient.

    Our op gets the sample's tensors as they are; torch's op gets its floating tensors in float32
    (the same values: a 16-bit tensor widens exactly), so that for a 16-bit sample it computes the
    float32 math of the rounded inputs. The upstream gradient is drawn once, rounded to the
    sample's dtype, and given to each side in its output's dtype."""
    dtype = next((t.dtype for t in sample.tensors if t.is_floating_point()), torch.float32)
    results = []
    for fn, widen in ((sample.ours, False), (sample.theirs, True)):
        leaves = [(t.float() if widen and t.is_floating_point() else t).detach().clone()
                  .requires_grad_(k in sample.grad_of) for k, t in enumerate(sample.tensors)]
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(7)
            y = fn(*leaves)
        if y.dim() == 0:
            upstream = torch.ones_like(y)
        else:
            upstream = torch.randn(y.shape, device=device, generator=torch.Generator(device).manual_seed(1))
            upstream = upstream.to(dtype).to(y.dtype)
        results.append([y, *torch.autograd.grad(y, [leaves[k] for k in sample.grad_of], upstream)])
    names = ["output"] + [f"grad of input {k}" for k in sample.grad_of]
    return [(name, a, b) for name, a, b in zip(names, *results)]


def _to(dtype, *tensors) -> list:
    """The tensors, rounded to `dtype` (memory layout kept)."""
    return [t.to(dtype) for t in tensors]


def case_batch_norm(device, dtype=torch.float32):
    x = torch.randn(4, 3, 6, 5, device=device).to(memory_format=torch.channels_last) * 2 + 1
    weight, bias = torch.rand(3, device=device) + 0.5, torch.randn(3, device=device)
    return Sample(lambda x, w, b: ops.batch_norm(x, None, None, w, b, training=True),
                    lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), _to(dtype, x, weight, bias),
                    [0, 1, 2])


def case_conv2d(device, dtype=torch.float32):
    x = torch.randn(2, 3, 9, 8, device=device).to(memory_format=torch.channels_last)
    weight, bias = torch.randn(4, 3, 3, 3, device=device) * 0.3, torch.randn(4, device=device)
    return Sample(lambda x, w, b: ops.conv2d(x, w, b, stride=2, padding=1),
                    lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), _to(dtype, x, weight, bias), [0, 1, 2])


def case_layer_norm(device, dtype=torch.float32):
    x = torch.randn(3, 5, 40, device=device)
    weight, bias = torch.rand(40, device=device) + 0.5, torch.randn(40, device=device)
    return Sample(lambda x, w, b: ops.layer_norm(x, (40,), w, b),
                    lambda x, w, b: F.layer_norm(x, (40,), w, b), _to(dtype, x, weight, bias), [0, 1, 2])


def case_linear(device, dtype=torch.float32):
    x = torch.randn(3, 7, 20, device=device)
    weight, bias = torch.randn(18, 20, device=device) * 0.2, torch.randn(18, device=device)
    return Sample(lambda x, w, b: ops.linear(x, w, b, activation="gelu"),
                    lambda x, w, b: F.gelu(F.linear(x, w, b)), _to(dtype, x, weight, bias), [0, 1, 2])


def case_losses(device, dtype=torch.float32):
    # cross_entropy (with label smoothing and an ignored row) beside nll_loss of log_softmax.
    logits = torch.randn(6, 11, device=device) * 3
    target = torch.tensor([0, 3, 10, -100, 5, 3], device=device)
    return Sample(lambda x, t: ops.cross_entropy(x, t, label_smoothing=0.1)
                    + ops.nll_loss(ops.log_softmax(x, dim=1), t),
                    lambda x, t: F.cross_entropy(x, t, label_smoothing=0.1) + F.nll_loss(F.log_softmax(x, dim=1), t),
                    [logits.to(dtype), target], [0])


def case_activations(device, dtype=torch.float32):
    x = torch.randn(4, 33, device=device) * 3
    return Sample(lambda x: ops.gelu(x, approximate="tanh") + ops.relu(x),
                    lambda x: F.gelu(x, approximate="tanh") + F.relu(x), _to(dtype, x), [0])


def case_rnn(device, dtype=torch.float32):
    x, h0 = torch.randn(6, 3, 5, device=device), torch.randn(4, 3, 7, device=device)
    theirs = torch.nn.RNN(5, 7, num_layers=2, bidirectional=True).to(device)
    ours = ops.RNN(5, 7, num_layers=2, bidirectional=True).to(device, dtype)
    ours.load_state_dict(theirs.state_dict())  # rounds the weights to dtype
    theirs.load_state_dict(ours.state_dict())  # torch's float32 module gets the same rounded values
    return Sample(lambda x, h0: ours(x, h0)[0], lambda x, h0: theirs(x, h0)[0], _to(dtype, x, h0), [0, 1])


def case_lstm(device, dtype=torch.float32):
    x, h0, c0 = torch.randn(6, 3, 5, device=device), torch.randn(4, 3, 7, device=device), torch.randn(4, 3, 7, device=device)
    theirs = torch.nn.LSTM(5, 7, num_layers=2, bidirectional=True).to(device)
    ours = ops.LSTM(5, 7, num_layers=2, bidirectional=True).to(device, dtype)
    ours.load_state_dict(theirs.state_dict())  # rounds the weights to dtype
    theirs.load_state_dict(ours.state_dict())  # torch's float32 module gets the same rounded values

    def outputs(module):
        return lambda x, h0, c0: torch.cat([module(x, (h0, c0))[0].flatten(), *(s.flatten() for s in module(x, (h0, c0))[1])])

    return Sample(outputs(ours), outputs(theirs), _to(dtype, x, h0, c0), [0, 1, 2])


def case_gru(device, dtype=torch.float32):
    x, h0 = torch.randn(3, 6, 5, device=device), torch.randn(2, 3, 7, device=device)  # batch-first
    theirs = torch.nn.GRU(5, 7, bidirectional=True, batch_first=True).to(device)
    ours = ops.GRU(5, 7, bidirectional=True, batch_first=True).to(device, dtype)
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    return Sample(lambda x, h0: ours(x, h0)[0], lambda x, h0: theirs(x, h0)[0], _to(dtype, x, h0), [0, 1])


def case_gated_cells(device, dtype=torch.float32):
    # One LSTM step and one GRU step from the same input and state, their outputs side by side.
    x, h, c = torch.randn(3, 5, device=device), torch.randn(3, 7, device=device), torch.randn(3, 7, device=device)
    lstm_weights = (torch.randn(28, 5, device=device) * 0.4, torch.randn(28, 7, device=device) * 0.4,
                    torch.randn(28, device=device), torch.randn(28, device=device))
    gru_weights = (torch.randn(21, 5, device=device) * 0.4, torch.randn(21, 7, device=device) * 0.4,
                   torch.randn(21, device=device), torch.randn(21, device=device))

    def both(lstm_cell, gru_cell):
        def run(x, h, c, *weights):
            return torch.cat([*lstm_cell(x, (h, c), *weights[:4]), gru_cell(x, h, *weights[4:])], dim=1)
        return run

    return Sample(both(ops.lstm_cell, ops.gru_cell), both(torch.lstm_cell, torch.gru_cell),
                  _to(dtype, x, h, c, *lstm_weights, *gru_weights), list(range(11)))


def case_rnn_cell(device, dtype=torch.float32):
    x, h = torch.randn(3, 5, device=device), torch.randn(3, 7, device=device)
    w_ih, w_hh = torch.randn(7, 5, device=device) * 0.4, torch.randn(7, 7, device=device) * 0.4
    b_ih, b_hh = torch.randn(7, device=device), torch.randn(7, device=device)
    return Sample(lambda *args: ops.rnn_cell(*args, nonlinearity="tanh"), torch.rnn_tanh_cell,
                    _to(dtype, x, h, w_ih, w_hh, b_ih, b_hh), [0, 1, 2, 3, 4, 5])


def case_dropout(device, dtype=torch.float32):
    # Random, so both sides draw the same seed: the oracle is torch's arithmetic on the mask that
    # the reference rebuilds from it (the kernel's Philox stream, in numpy).
    x, p = torch.randn(5, 37, device=device), 0.3

    def theirs(x):
        keep = reference_dropout.keep_mask(x.shape, reference_dropout.draw_seed(x.device), p, x.device)
        return x * keep / (1 - p)

    return Sample(lambda x: ops.dropout(x, p), theirs, _to(dtype, x), [0])


def case_attention(device, dtype=torch.float32):
    # Cross-attention with a key-padding mask and GQA (4 query heads share 2 key/value heads).
    q, k, v = (torch.randn(2, heads, length, 24, device=device) for heads, length in ((4, 9), (2, 13), (2, 13)))
    keep = torch.arange(13, device=device) < torch.tensor([[13], [7]], device=device)
    mask = keep[:, None, None, :]
    return Sample(lambda q, k, v: ops.scaled_dot_product_attention(q, k, v, mask, enable_gqa=True),
                    lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask, enable_gqa=True), _to(dtype, q, k, v),
                    [0, 1, 2])


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


def _check(dtype, ours, theirs, atol, rtol) -> tuple[bool, float, float]:
    """(within bounds, max abs diff, relative error in norm) of one result. float32 (and the
    default run) is elementwise allclose; a 16-bit result is bounded by RELATIVE_ERROR[dtype] in
    norm, and NaN or infinity where torch's result is finite fails it."""
    a, b = ours.detach().double(), theirs.detach().double()
    diff = a - b
    worst = diff.abs().max().item() if diff.numel() else 0.0
    relative = (diff.norm() / b.norm()).item() if b.norm() > 0 else diff.norm().item()
    if dtype not in RELATIVE_ERROR:
        return torch.allclose(ours, theirs.to(ours.dtype), atol=atol, rtol=rtol), worst, relative
    finite = bool((a.isfinite() | ~b.isfinite()).all())
    return finite and relative <= RELATIVE_ERROR[dtype], worst, relative


def run(device=None, atol=1e-4, rtol=1e-4, op_names=None, dtypes=None) -> bool:
    """Run the cases of `op_names` (every op when None); prints one line per case, True when all pass.

    `dtypes` (names of DTYPES, or torch dtypes) runs each case in each of them (see the module
    docstring); None runs the float32 check alone, as `tritonprop selfcheck` does, with `atol` and
    `rtol` its elementwise tolerance (also that of float32 among `dtypes`)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    # Full-precision fp32 on both sides: TF32 would need a looser bound than this check uses.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    cases = cases_for(op_names)
    runs = [None] if dtypes is None else [DTYPES.get(d, d) for d in dtypes]
    width = max(map(len, cases), default=0)
    all_ok = True
    for label, case in cases.items():
        for dtype in runs:
            worst = relative = 0.0
            ok = True
            sample = case(device) if dtype is None else case(device, dtype)
            for name, ours, theirs in _compare(device, sample):
                within, err, rel = _check(dtype, ours, theirs, atol, rtol)
                worst, relative = max(worst, err), max(relative, rel)
                if not within:
                    ok = False
                    print(f"  {label}: {name} differs from torch by up to {err:.3e} (relative error in norm {rel:.2e})")
            verdict = "ok" if ok else "FAILED"
            if dtype is None:
                print(f"{label:<{width}} forward+backward vs torch on {device}: {verdict} (max abs diff {worst:.2e})")
            else:
                oracle, bound = (("torch (fp32 math)", f", bound {RELATIVE_ERROR[dtype]:g}") if dtype in RELATIVE_ERROR
                                 else ("torch", f", atol {atol:g}, rtol {rtol:g}"))
                print(f"{label:<{width}} {_dtype_name(dtype):<4} forward+backward vs {oracle} on {device}: {verdict} "
                      f"(max abs diff {worst:.2e}, relative error {relative:.2e}{bound})")
            all_ok &= ok
    return all_ok


def _dtype_name(dtype) -> str:
    return next((name for name, value in DTYPES.items() if value == dtype), str(dtype))


def parse_dtypes(text: str) -> list[str]:
    """--dtypes: comma-separated names of DTYPES (bf16, fp16, fp32)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in DTYPES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown dtype {', '.join(unknown) or '(none given)'}; "
                                         f"choose from {', '.join(DTYPES)}")
    return names


def main(argv=None) -> int:
    """`python -m tritonprop.selfcheck [--device D] [--ops OP,...] [--dtypes bf16,fp16,fp32]`."""
    parser = argparse.ArgumentParser(prog="python -m tritonprop.selfcheck",
                                     description="each op forward and backward against torch on small inputs")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--ops", default=None, metavar="OP[,OP...]",
                        help="check only these ops of the registry (default: every op)")
    parser.add_argument("--dtypes", type=parse_dtypes, default=None, metavar="DTYPE[,DTYPE...]",
                        help=f"run each case in each of these ({', '.join(DTYPES)}); 16-bit cases are "
                             "checked against torch's float32 math on the same rounded inputs "
                             "(default: float32 alone)")
    args = parser.parse_args(argv)
    op_names = None if args.ops is None else [name.strip() for name in args.ops.split(",") if name.strip()]
    try:
        cases_for(op_names)
    except KeyError as error:
        parser.error(f"--ops: {error.args[0]}")
    return 0 if run(args.device, op_names=op_names, dtypes=args.dtypes) else 1


if __name__ == "__main__":
    sys.exit(main())
