"""Compile every Triton kernel ahead of time for an H100/H200 (sm_90), without a GPU.

The interpreter runs kernel source as Python and forgives things the compiler does not (types
of loop-carried values, constexpr misuse, shape errors in dead branches). Compiling each
kernel to PTX and a cubin, with Triton's bundled ptxas, catches those on a CPU-only machine.

Run as a script in a process of its own: TRITON_INTERPRET must be 0 before the kernels are
decorated. tests/test_cuda_compile.py does that.

    python tests/compile_for_cuda.py                      # every group, every variant
    python tests/compile_for_cuda.py --quick rnn_kernels  # one group (the quick subset, where it has one)

The groups are the `*_kernels` functions below that the op registry (tritonprop/registry.py)
names as its ops' compile variants; tests/test_registry.py checks that every one is named.
"""
from __future__ import annotations

import inspect
import os
import sys

os.environ["TRITON_INTERPRET"] = "0"

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from tritonprop.bench.static_sm90 import HOPPER, _jit_function  # noqa: E402

FLOAT_SCALARS = {"eps", "momentum", "inv_count", "p", "scale", "label_smoothing", "dropout_p"}


def compile_kernel(kernel, pointer_dtype, constexprs, num_warps=4):
    """Compile `kernel` for sm_90; pointer args get the type pointer_dtype(name) returns."""
    fn = _jit_function(kernel)
    signature = {}
    for name, param in inspect.signature(fn.fn).parameters.items():
        if param.annotation is tl.constexpr or param.annotation == "tl.constexpr":
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*" + pointer_dtype(name)
        elif name in FLOAT_SCALARS:
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
    missing = [n for n, t in signature.items() if t == "constexpr" and n not in constexprs]
    assert not missing, f"{fn.__name__}: no value for constexpr {missing}"
    compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs), target=HOPPER,
                              options={"num_warps": num_warps})
    assert compiled.asm.get("cubin"), f"{fn.__name__}: no cubin"
    return compiled


def sum_partials_variants(acc, out_dtype, copy_dtype=None):
    """The shared fixed-order sum of split partials (kernels/reduction.py) at the blocks its
    launcher picks: many partials of a wide column block, and many more of a narrow one; with a
    second output (`copy`) where the caller passes one. (Not a `*_kernels` group of its own: the
    ops that use it compile it with their own dtypes.)"""
    from tritonprop.kernels import reduction as K

    acc_name = "fp64" if acc == tl.float64 else "fp32"

    def pointer(name):
        return {"part_ptr": acc_name, "out_ptr": out_dtype, "copy_ptr": copy_dtype or out_dtype}[name]

    for blocks in (dict(BLOCK_P=32, BLOCK_N=128), dict(BLOCK_P=256, BLOCK_N=16)):
        for has_copy in (True, False) if copy_dtype else (False,):
            yield K.sum_partials_kernel, pointer, dict(blocks, HAS_COPY=has_copy, ACC_DTYPE=acc)


# The dtypes a group's quick subset keeps: bf16, the training dtype (tensor cores, fp32
# accumulators). fp16, fp32 and fp64 (fp64 accumulators) compile under -m slow; the default test
# run has no time for them on 2 cores.
QUICK_DTYPES = ("bf16",)


def _dtypes(variants, full):
    """The per-dtype variants of a group, all of them or (full=False) the QUICK_DTYPES."""
    return variants if full else tuple(v for v in variants if v[0] in QUICK_DTYPES)


def batch_norm_kernels(full=True):
    """Every batch_norm variant, or (full=False) the bf16 ones."""
    from tritonprop.kernels import batchnorm as K

    for x_dtype, acc in _dtypes((("bf16", tl.float32), ("fp16", tl.float32), ("fp32", tl.float32),
                                 ("fp64", tl.float64)), full):
        acc_name = "fp64" if acc == tl.float64 else "fp32"
        activations = {"x_ptr", "y_ptr", "dy_ptr", "dx_ptr"}
        params = {"weight_ptr", "bias_ptr", "dweight_ptr", "dbias_ptr", "running_mean_ptr", "running_var_ptr"}

        def pointer(name):
            if name in activations:
                return x_dtype
            return acc_name if name not in params or x_dtype == "fp64" else "fp32"

        flags = dict(HAS_WEIGHT=True, HAS_BIAS=True, FUSE_RELU=True, ACC_DTYPE=acc)
        for tiles in (dict(BLOCK_O=1, BLOCK_I=64, BLOCK_C=64), dict(BLOCK_O=4, BLOCK_I=1024, BLOCK_C=1)):
            yield K.batch_norm_partial_stats_kernel, pointer, dict(tiles, ACC_DTYPE=acc)
            yield K.batch_norm_apply_kernel, pointer, dict(tiles, **flags)
            yield K.batch_norm_backward_partial_kernel, pointer, dict(tiles, **flags)
            yield K.batch_norm_backward_input_kernel, pointer, dict(tiles, TRAINING=True, **flags)
        merge = dict(BLOCK_P=32, BLOCK_C=128, ACC_DTYPE=acc)
        yield K.batch_norm_merge_stats_kernel, pointer, dict(merge, UPDATE_RUNNING=True)
        yield K.batch_norm_eval_stats_kernel, pointer, dict(BLOCK_C=128, ACC_DTYPE=acc)
        # sum(dy) and sum(dy * xhat) in the accumulator dtype, copied to dbias and dweight.
        yield from sum_partials_variants(acc, acc_name, copy_dtype=pointer("dbias_ptr"))


def conv2d_kernels(full=True):
    """Every conv2d variant, or (full=False) the bf16 ones."""
    from tritonprop.kernels import conv2d as K

    for dtype, acc, precisions in _dtypes((("bf16", tl.float32, ["ieee"]), ("fp16", tl.float32, ["ieee"]),
                                           ("fp32", tl.float32, ["tf32", "ieee"]), ("fp64", tl.float64, ["ieee"])),
                                          full):
        acc_name = "fp64" if acc == tl.float64 else "fp32"

        def pointer(name):
            return acc_name if name.startswith("part_") else dtype

        for precision in precisions:
            gemm = dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, ACC_DTYPE=acc, INPUT_PRECISION=precision,
                        UPCAST_OPERANDS=False)
            for activation in (0, 1, 2):
                yield K.conv2d_forward_kernel, pointer, dict(gemm, HAS_BIAS=True, ACTIVATION=activation,
                                                             STORE_PREACTIVATION=activation == 2)
                # The few-channel (stem) forward: a row of 7 taps x 4 channels per step.
                yield K.conv2d_forward_taps_kernel, pointer, dict(
                    gemm, BLOCK_K=32, HAS_BIAS=True, ACTIVATION=activation, STORE_PREACTIVATION=activation == 2,
                    CHANNELS=K.TAP_CHANNELS)
            yield K.conv2d_backward_input_kernel, pointer, gemm
            for channels_inner in (True, False):
                yield K.conv2d_backward_weight_kernel, pointer, dict(gemm, COMPUTE_BIAS=True,
                                                                     CHANNELS_INNER=channels_inner)
        for activation in (0, 1, 2):
            yield K.conv2d_depthwise_forward_kernel, pointer, dict(
                HAS_BIAS=True, ACTIVATION=activation, STORE_PREACTIVATION=activation == 2, BLOCK_M=64, BLOCK_C=32,
                ACC_DTYPE=acc)
        yield K.conv2d_depthwise_backward_input_kernel, pointer, dict(BLOCK_M=64, BLOCK_C=32, ACC_DTYPE=acc)
        yield K.conv2d_depthwise_backward_weight_kernel, pointer, dict(COMPUTE_BIAS=True, BLOCK_M=64, BLOCK_C=32,
                                                                      ACC_DTYPE=acc)
        # dw and db, written through their strides (dw is channels_last beside a channels_last weight).
        yield from sum_partials_variants(acc, dtype)


def elementwise_kernels(full=True):
    """Every activation variant, or (full=False) the bf16 ones."""
    from tritonprop.kernels import elementwise as K

    for dtype, acc in _dtypes((("bf16", tl.float32), ("fp16", tl.float32), ("fp32", tl.float32),
                               ("fp64", tl.float64)), full):
        def pointer(name):
            return dtype

        # Every activation (code 0, the identity, is never launched); the backward kernel is also
        # conv2d's and linear's activation backward.
        for activation in (code for name, code in K.ACTIVATIONS.items() if name is not None):
            for flat in (True, False):
                options = dict(ACTIVATION=activation, FLAT=flat, BLOCK=K.BLOCK, ACC_DTYPE=acc)
                yield K.activation_forward_kernel, pointer, options
                yield K.activation_backward_kernel, pointer, options


def dropout_kernels(full=True):
    """Every dropout variant, or (full=False) the bf16 ones."""
    from tritonprop.kernels import dropout as K

    for dtype, acc in _dtypes((("bf16", tl.float32), ("fp16", tl.float32), ("fp32", tl.float32),
                               ("fp64", tl.float64)), full):
        def pointer(name):
            return "i64" if name == "seed_ptr" else dtype

        for flat in (True, False):
            yield K.dropout_kernel, pointer, dict(FLAT=flat, BLOCK_GROUPS=K.BLOCK_GROUPS, ACC_DTYPE=acc)


def layer_norm_kernels(full=True):
    """Every layer_norm variant, or (full=False) the bf16 ones."""
    from tritonprop.kernels import layernorm as K

    for x_dtype, acc in _dtypes((("bf16", tl.float32), ("fp16", tl.float32), ("fp32", tl.float32),
                                 ("fp64", tl.float64)), full):
        acc_name = "fp64" if acc == tl.float64 else "fp32"
        activations = {"x_ptr", "y_ptr", "dy_ptr", "dx_ptr"}
        params = {"weight_ptr", "bias_ptr", "dweight_ptr", "dbias_ptr"}

        def pointer(name):
            if name in activations:
                return x_dtype
            # mean, rstd and the partials in the accumulator dtype; parameters fp32 beside a
            # half input (mixed precision), fp64 beside fp64.
            return acc_name if name not in params or x_dtype == "fp64" else "fp32"

        # One row per block (the widest block), and many short rows per tile.
        for blocks in (dict(BLOCK_M=1, BLOCK_N=4096), dict(BLOCK_M=64, BLOCK_N=64)):
            for affine in (True, False):
                yield K.layer_norm_forward_kernel, pointer, dict(blocks, HAS_WEIGHT=affine, HAS_BIAS=affine,
                                                                 ACC_DTYPE=acc)
            for compute_dx, has_weight in ((True, True), (False, True), (True, False)):
                # Rows that fit one column block, and rows that span several (N > BLOCK_N).
                for whole_rows in (True, False) if compute_dx else (True,):
                    yield K.layer_norm_backward_kernel, pointer, dict(
                        blocks, HAS_WEIGHT=has_weight, COMPUTE_DX=compute_dx, COMPUTE_DWEIGHT=has_weight,
                        COMPUTE_DBIAS=has_weight, WHOLE_ROWS=whole_rows, ACC_DTYPE=acc)
        # dweight and dbias from the [chunks, N] partials.
        yield from sum_partials_variants(acc, pointer("dweight_ptr"))


def cross_entropy_kernels(full=True):
    """Every cross_entropy, log_softmax and nll_loss variant, or (full=False) the bf16 ones."""
    from tritonprop.kernels import cross_entropy as K

    statistics = {"lse_ptr", "part_loss_ptr", "part_weight_ptr", "weight_sum_ptr", "total_weight_ptr", "smoothing_ptr",
                  "mass_ptr"}
    for dtype, acc in _dtypes((("bf16", tl.float32), ("fp16", tl.float32), ("fp32", tl.float32),
                               ("fp64", tl.float64)), full):
        acc_name = "fp64" if acc == tl.float64 else "fp32"

        def pointer(name, target="i64"):
            if name == "target_ptr":
                return target
            return acc_name if name in statistics else dtype

        # One long row per program (class dim contiguous), and a tile of rows (NCHW-like logits);
        # each kernel with every feature flag on, and with every one off.
        for tiles in (dict(BLOCK_R=1, BLOCK_C=4096), dict(BLOCK_R=64, BLOCK_C=64)):
            yield K.log_softmax_forward_kernel, pointer, dict(tiles, ACC_DTYPE=acc)
            yield K.log_softmax_backward_kernel, pointer, dict(tiles, ACC_DTYPE=acc)
            for on in (True, False):
                yield K.cross_entropy_forward_kernel, pointer, dict(
                    tiles, HAS_WEIGHT=on, SMOOTHING=on, PER_ROW_LOSS=on, ACC_DTYPE=acc)
                yield K.cross_entropy_backward_kernel, pointer, dict(
                    tiles, HAS_WEIGHT=on, SMOOTHING=on, MEAN=on, ACC_DTYPE=acc)
                yield K.nll_loss_backward_kernel, pointer, dict(tiles, HAS_WEIGHT=on, MEAN=on, ACC_DTYPE=acc)
        # Class-probability targets: the target (and its gradient) has the logits' dtype.
        def probs_pointer(name):
            return acc_name if name in statistics else dtype

        for tiles in (dict(BLOCK_R=1, BLOCK_C=4096), dict(BLOCK_R=64, BLOCK_C=64)):
            for on in (True, False):
                yield K.cross_entropy_probs_forward_kernel, probs_pointer, dict(
                    tiles, HAS_WEIGHT=on, SMOOTHING=on, PER_ROW_LOSS=on, ACC_DTYPE=acc)
                yield K.cross_entropy_probs_backward_kernel, probs_pointer, dict(
                    tiles, HAS_WEIGHT=on, SMOOTHING=on, MEAN=on, NEED_DX=on, NEED_DTARGET=True, ACC_DTYPE=acc)
            yield K.cross_entropy_probs_backward_kernel, probs_pointer, dict(
                tiles, HAS_WEIGHT=True, SMOOTHING=True, MEAN=True, NEED_DX=True, NEED_DTARGET=False, ACC_DTYPE=acc)
        # uint8 class indices, which torch accepts as well as int64.
        yield K.cross_entropy_forward_kernel, lambda name: pointer(name, "u8"), dict(
            BLOCK_R=1, BLOCK_C=4096, HAS_WEIGHT=True, SMOOTHING=True, PER_ROW_LOSS=False, ACC_DTYPE=acc)
        for on in (True, False):
            yield K.nll_loss_forward_kernel, pointer, dict(HAS_WEIGHT=on, PER_ROW_LOSS=on, BLOCK_R=4096, ACC_DTYPE=acc)
            yield K.loss_reduce_kernel, pointer, dict(MEAN=on, BLOCK_P=1024, ACC_DTYPE=acc)


def linear_kernels(full=True):
    """Every linear variant, or (full=False) the bf16 ones."""
    from tritonprop.kernels import linear as K

    for dtype, acc, precisions in _dtypes((("bf16", tl.float32, ["ieee"]), ("fp16", tl.float32, ["ieee"]),
                                           ("fp32", tl.float32, ["tf32", "ieee"]), ("fp64", tl.float64, ["ieee"])),
                                          full):
        acc_name = "fp64" if acc == tl.float64 else "fp32"

        def pointer(name):
            return acc_name if name.startswith("part_") else dtype

        def split_k_workspace(name):
            # wgrad with several splits writes its partials (fp32, or fp64) through c_ptr and row_sums_ptr.
            return acc_name if name in ("c_ptr", "row_sums_ptr") else dtype

        for precision in precisions:
            gemm = dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, GROUP_M=8, ACC_DTYPE=acc, INPUT_PRECISION=precision,
                        UPCAST_OPERANDS=False)
            for activation in (0, 1, 2, 3):
                yield K.matmul_kernel, pointer, dict(gemm, HAS_BIAS=True, ACTIVATION=activation,
                                                     STORE_PREACTIVATION=activation >= 2, ROW_SUMS=False)
            no_epilogue = dict(gemm, HAS_BIAS=False, ACTIVATION=0, STORE_PREACTIVATION=False)
            yield K.matmul_kernel, pointer, dict(no_epilogue, ROW_SUMS=False)
            yield K.matmul_kernel, pointer, dict(no_epilogue, ROW_SUMS=True)
            yield K.matmul_kernel, split_k_workspace, dict(no_epilogue, ROW_SUMS=True)
        # dw and db of a split-K wgrad, from the fp32 (fp64) workspace.
        yield from sum_partials_variants(acc, dtype)


def rnn_kernels(full=True):
    """The RNN cell (the sequence runs on the recurrence engine: `recurrence_kernels`); with
    full=False its bf16 variants."""
    from tritonprop.kernels import rnn as K

    for dtype, acc, precisions in _dtypes((("bf16", tl.float32, ["ieee"]), ("fp16", tl.float32, ["ieee"]),
                                           ("fp32", tl.float32, ["tf32", "ieee"]), ("fp64", tl.float64, ["ieee"])),
                                          full):
        for precision in precisions:
            dot = dict(ACC_DTYPE=acc, INPUT_PRECISION=precision, UPCAST_OPERANDS=False)
            for relu in (False, True):
                yield K.rnn_cell_forward_kernel, lambda name: dtype, dict(dot, HAS_BIAS=True, RELU=relu, BLOCK_B=32,
                                                                            BLOCK_N=64, BLOCK_K=32)
        for relu in (False, True):
            yield K.rnn_cell_grad_kernel, lambda name: dtype, dict(RELU=relu, BLOCK_B=32, BLOCK_N=64, ACC_DTYPE=acc)


def recurrence_kernels(full=True):
    """The recurrence engine of the RNN, LSTM and GRU: for every cell, the persistent kernels
    (grid barrier included) and the per-step ones, at the tiles `plan` gives the RNN benchmark
    shapes, in both directions, with lengths. The quick subset: bf16, reverse with
    lengths; full: every dtype and precision, and both directions with and without lengths."""
    from tritonprop.kernels import recurrence as K

    workspaces = {"partial_ptr", "cells_ptr", "gates_ptr", "carry_ptr", "dc_ptr"}
    dtypes = (("bf16", tl.float32, ["ieee"]), ("fp16", tl.float32, ["ieee"]), ("fp32", tl.float32, ["tf32", "ieee"]),
              ("fp64", tl.float64, ["ieee"]))
    for dtype, acc, precisions in dtypes if full else (dtypes[0], dtypes[3]):
        acc_name = "fp64" if acc == tl.float64 else "fp32"
        torch_dtype = getattr(torch, {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "fp64": "float64"}[dtype])

        def pointer(name):
            if name in ("lengths_ptr", "sync_ptr"):
                return "i32"
            return acc_name if name in workspaces else dtype

        for precision in precisions:
            dot = dict(ACC_DTYPE=acc, INPUT_PRECISION=precision, UPCAST_OPERANDS=False)
            for cell in K.CELLS.values():
                # (T, B, H) of the BENCHMARKS.md RNN rows that set targets: wide and narrow batches.
                for batch, hidden in ((64, 512), (8, 256)) if full else ((8, 256),):
                    for backward in (False, True):
                        p = K.plan(cell, torch_dtype, hidden, batch, backward, target_programs=K.TARGET_PROGRAMS)
                        tiles = dict(BLOCK_M=p.BLOCK_M, BLOCK_K=p.BLOCK_K, BLOCK_B=p.BLOCK_B)
                        yield K.recurrence_product_kernel, pointer, dict(dot, **tiles)
                        for reverse, lengths in ((False, False), (True, True)) if full else ((True, True),):
                            step = dict(REVERSE=reverse, CELL=cell, HAS_LENGTHS=lengths, BLOCK_B=p.BLOCK_B,
                                        BLOCK_U=p.BLOCK_U, ACC_DTYPE=acc)
                            if backward:
                                yield K.recurrence_backward_update_kernel, pointer, step
                                yield K.recurrence_backward_persistent_kernel, pointer, dict(step, **dot, **tiles)
                            else:
                                step = dict(step, HAS_BIAS=True)
                                yield K.recurrence_forward_update_kernel, pointer, step
                                yield K.recurrence_forward_persistent_kernel, pointer, dict(step, **dot, **tiles)
                        if backward:
                            yield K.recurrence_backward_finish_kernel, pointer, dict(CELL=cell, BLOCK_B=p.BLOCK_B,
                                                                                     BLOCK_U=p.BLOCK_U)


def attention_kernels(full=True):
    """Every attention variant (full=True, about 80: minutes on a cold cache), or the quick subset
    the default test run compiles: bf16 at head dims 64 and 256 with every feature on."""
    from tritonprop.kernels import attention as K

    statistics = {"lse_ptr", "delta_ptr", "ds_ptr", "scales_ptr"}
    dtypes = _dtypes((("bf16", tl.float32, ["ieee"]), ("fp16", tl.float32, ["ieee"]),
                      ("fp32", tl.float32, ["tf32", "ieee"]), ("fp64", tl.float64, ["ieee"])), full)
    for dtype, acc, precisions in dtypes:
        acc_name = "fp64" if acc == tl.float64 else "fp32"
        size = {"bf16": 2, "fp16": 2, "fp32": 4, "fp64": 8}[dtype]

        def pointer(name, mask="i1"):
            if name == "seed_ptr":
                return "i64"
            if name == "mask_ptr":
                return mask
            return acc_name if name in statistics else dtype

        def additive(name):
            # An additive mask in the query's dtype (torch also allows float32 beside 16-bit q).
            return pointer(name, mask=dtype)

        def launches(head_block, mask_pointer, mask_kind, on, precision):
            # The tile table's (BLOCK_M, BLOCK_N, num_warps) for this dtype and head dim.
            # Tensor-descriptor (TMA) loads with every feature on, pointer loads with every one off.
            flags = dict(BLOCK_D=head_block, BLOCK_DV=head_block, ACC_DTYPE=acc, INPUT_PRECISION=precision,
                         UPCAST_OPERANDS=False, MASK_KIND=mask_kind, IS_CAUSAL=on, DROPOUT=on, TMA=on)
            for kernel, table, extra in ((K.attention_forward_kernel, K.FORWARD_TILES, {}),
                                         (K.attention_backward_dkdv_kernel, K.DKDV_TILES, {}),
                                         (K.attention_backward_dq_kernel, K.DQ_TILES,
                                          dict(STORE_DS=mask_kind == K.ADDITIVE_MASK))):
                block_m, block_n, num_warps, _ = table[size][head_block]
                yield kernel, mask_pointer, dict(flags, BLOCK_M=block_m, BLOCK_N=block_n, **extra), num_warps

        # fp64 never gets a bool mask: the launcher turns it into an additive one (kernels/attention.py).
        bool_mask = (additive, K.ADDITIVE_MASK) if dtype == "fp64" else (pointer, K.BOOL_MASK)
        for precision in precisions:
            # Head dim 64: a bool mask and an additive one with every feature on, and every feature off.
            at_64 = (bool_mask + (True,), (additive, K.ADDITIVE_MASK, True), (pointer, K.NO_MASK, False))
            for mask_pointer, mask_kind, on in at_64 if full else at_64[:1]:
                yield from launches(64, mask_pointer, mask_kind, on, precision)
            # The larger tiles of head dims 128 and 256, with every feature on.
            for head_block in (128, 256) if full else ((256,) if dtype == "bf16" else ()):
                yield from launches(head_block, *bool_mask, True, precision)
        yield K.attention_backward_preprocess_kernel, pointer, dict(
            BLOCK_M=K.PREPROCESS_BLOCK_M, BLOCK_DV=64, ACC_DTYPE=acc), 4


def kernel_groups() -> dict:
    """name -> function: every compile-variant function the op registry names, in its order."""
    from tritonprop import registry

    return {name: globals()[name] for name in registry.groups("compile_variants")}


def main(argv):
    """`compile_for_cuda.py [--quick] [GROUP ...]`: compile each group (every group when none is
    named); --quick compiles the subset of a group whose function takes `full` (attention)."""
    quick = "--quick" in argv
    names = [arg for arg in argv if arg != "--quick"]
    groups = kernel_groups()
    unknown = [name for name in names if name not in groups]
    if unknown:
        print(f"unknown kernel group {', '.join(unknown)}; the op registry names {', '.join(groups)}",
              file=sys.stderr)
        return 2
    for name in names or groups:
        function = groups[name]
        variants = function(full=False) if quick and "full" in inspect.signature(function).parameters else function()
        count = 0
        # A variant may name its num_warps as a fourth item, where the launch uses more than 4.
        for kernel, pointer, constexprs, *num_warps in variants:
            compile_kernel(kernel, pointer, constexprs, *num_warps)
            count += 1
        print(f"{name}: {count} kernel variants compiled for sm_90")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
