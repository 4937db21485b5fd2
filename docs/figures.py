"""Draws every picture of the docs into docs/figures/, from code, so that each one can be redrawn.

    python docs/figures.py                     # all of them (5 to 6 minutes on 2 CPU cores)
    python docs/figures.py --only im2col,dgrad_gather
    python docs/figures.py --tiny --out DIR    # 2-step training runs on tiny data (tests/test_figures.py)

Two kinds of picture:

- Diagrams (`primer_tiles`, `im2col`, `dgrad_gather`, `bn_stats_layout`, `online_softmax`,
  `bptt_unrolled`). Where a diagram shows numbers or index sets, they are computed here by the
  same rule the kernels use, and checked against an independent computation (F.unfold, a
  brute-force window scan, a two-pass softmax, the batch-norm launcher's own tile plan), so a
  picture cannot drift from the code without this script failing.
- Real training runs through `tritonprop train` (models/train.py) with `--inspect`
  (models/inspection.py draws those pictures; this script only copies them): `inspect_*` from a
  small CNN, and `clipping` from two runs of the name classifier, without and with `--clip-grad`,
  read from their metrics.json (`grad_norm`, `losses`). `RUNS` lists their exact options.

On a CPU the training runs go through Triton's interpreter.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

FIGURES_DIR = Path(__file__).resolve().parent / "figures"
DPI = 100
# One light colour per program / window / row, and strong ones for what the eye should follow.
LIGHT = ("#fbb4ae", "#b3cde3", "#ccebc5", "#decbe4", "#fed9a6", "#ffffcc", "#e5d8bd", "#fddaec",
         "#b3e2cd", "#fdcdac", "#cbd5e8", "#f4cae4")
STRONG = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:red", "tab:brown")
MASKED = "#dddddd"

# The training runs behind the inspect_* and clipping pictures: `tritonprop train` arguments, then
# what --tiny changes (2 steps, the smallest widths and data that still exercise everything).
CNN_RUN = ["cnn", "--data", "digits8x8", "--widths", "8,16", "--strides", "2,2", "--steps", "100",
           "--batch-size", "16", "--seed", "0", "--device", "cpu"]
CNN_TINY = ["--widths", "4,8", "--steps", "2", "--batch-size", "4"]
# A learning rate 100 times the default (3e-3) on purpose: it makes the gradient norm spike.
NAMES_RUN = ["names", "--embed", "16", "--hidden", "32", "--steps", "80", "--batch-size", "32", "--lr", "0.3",
             "--seed", "0", "--device", "cpu"]
NAMES_TINY = ["--embed", "8", "--hidden", "8", "--steps", "2", "--batch-size", "4"]
CLIP_AT = 5.0
# --inspect's pictures of the CNN run, copied as inspect_<name>.
INSPECT_PICTURES = ("activations", "gradients", "update_ratio", "bn_stats")


# ------------------------------------------------------------------------------------------------
# Drawing helpers
# ------------------------------------------------------------------------------------------------


def _canvas(width: float, height: float, x_range, y_range):
    """A figure with one frameless axis in data units (y grows upwards, equal aspect)."""
    figure, axis = plt.subplots(figsize=(width, height))
    axis.set_xlim(*x_range)
    axis.set_ylim(*y_range)
    axis.set_aspect("equal")
    axis.axis("off")
    return figure, axis


def _cell(axis, x, y, text="", face="white", edge="#555555", size=1.0, fontsize=8, hatch=None, weight="normal",
          text_colour="black", linewidth=0.8):
    """A square cell with its lower-left corner at (x, y) and its text centred."""
    axis.add_patch(Rectangle((x, y), size, size, facecolor=face, edgecolor=edge, hatch=hatch, linewidth=linewidth))
    if text != "":
        axis.text(x + size / 2, y + size / 2, str(text), ha="center", va="center", fontsize=fontsize,
                  fontweight=weight, color=text_colour)


def _outline(axis, x, y, width, height, colour, linewidth=2.5, inset=0.0, style="-"):
    axis.add_patch(Rectangle((x + inset, y + inset), width - 2 * inset, height - 2 * inset, fill=False,
                             edgecolor=colour, linewidth=linewidth, linestyle=style))


def _arrow(axis, start, end, colour="black", style="-|>", linewidth=1.2, linestyle="-", rad=0.0, scale=12):
    axis.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=scale, color=colour,
                                   linewidth=linewidth, linestyle=linestyle,
                                   connectionstyle=f"arc3,rad={rad}", shrinkA=0, shrinkB=0))


def _compact(path: Path) -> Path:
    """Re-encodes a PNG with a 64-colour palette: about a third of the bytes, and for flat diagrams
    and line plots no visible change."""
    from PIL import Image

    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette.save(path, optimize=True)
    return path


def _save(figure, out: Path, name: str) -> Path:
    path = out / f"{name}.png"
    figure.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.1)
    plt.close(figure)
    return _compact(path)


def _copy(source: Path, out: Path, name: str) -> Path:
    return _compact(Path(shutil.copyfile(source, out / f"{name}.png")))


# ------------------------------------------------------------------------------------------------
# Diagrams
# ------------------------------------------------------------------------------------------------


def primer_tiles(out: Path) -> Path:
    """A 10 x 13 matrix in 4 x 4 tiles: the program that owns each tile, the masked ragged edges,
    and the offsets and mask of one edge program (docs/triton_primer.md)."""
    M, N, BLOCK_M, BLOCK_N = 10, 13, 4, 4
    grid_m, grid_n = -(-M // BLOCK_M), -(-N // BLOCK_N)  # triton.cdiv
    rows_drawn, cols_drawn = grid_m * BLOCK_M, grid_n * BLOCK_N
    figure, axis = _canvas(13, 7.2, (-2.0, cols_drawn + 12.5), (-3.2, rows_drawn + 1.6))
    top = rows_drawn  # matrix row i is drawn at y = top - i - 1

    for pid_m in range(grid_m):
        for pid_n in range(grid_n):
            colour = LIGHT[(pid_m * grid_n + pid_n) % len(LIGHT)]
            for i in range(pid_m * BLOCK_M, (pid_m + 1) * BLOCK_M):
                for j in range(pid_n * BLOCK_N, (pid_n + 1) * BLOCK_N):
                    inside = i < M and j < N
                    _cell(axis, j, top - i - 1, face=colour if inside else MASKED,
                          edge="#bbbbbb", hatch=None if inside else "///")
            _outline(axis, pid_n * BLOCK_N, top - (pid_m + 1) * BLOCK_M, BLOCK_N, BLOCK_M, "#333333", linewidth=1.5)
            axis.text(pid_n * BLOCK_N + BLOCK_N / 2, top - pid_m * BLOCK_M - BLOCK_M / 2, f"({pid_m}, {pid_n})",
                      ha="center", va="center", fontsize=10, fontweight="bold",
                      bbox=dict(facecolor="white", edgecolor="none", alpha=0.75, pad=1.5))
    _outline(axis, 0, top - M, N, M, "black", linewidth=2.5)
    for j in range(cols_drawn):
        axis.text(j + 0.5, top + 0.3, str(j), ha="center", va="bottom", fontsize=7,
                  color="black" if j < N else "#999999")
    for i in range(rows_drawn):
        axis.text(-0.3, top - i - 0.5, str(i), ha="right", va="center", fontsize=7,
                  color="black" if i < M else "#999999")
    axis.text(N / 2, top + 1.1, f"cols = pid_n·BLOCK_N + arange(BLOCK_N)      (N = {N}, BLOCK_N = {BLOCK_N})",
              ha="center", fontsize=9)
    axis.text(-1.5, top - rows_drawn / 2, f"rows = pid_m·BLOCK_M + arange(BLOCK_M)\n(M = {M}, BLOCK_M = {BLOCK_M})",
              rotation=90, ha="center", va="center", fontsize=9)
    axis.add_patch(Rectangle((0, -2.4), 1, 1, facecolor=MASKED, edgecolor="#bbbbbb", hatch="///"))
    axis.text(1.4, -1.9, "masked: not loaded, not stored (rows ≥ M or cols ≥ N)", va="center", fontsize=9)
    axis.text(0, -3.1, f"grid = (cdiv(M, BLOCK_M), cdiv(N, BLOCK_N)) = ({grid_m}, {grid_n}): "
                       f"{grid_m * grid_n} programs, labelled (pid_m, pid_n)", fontsize=9)

    # One program's offsets: the bottom-right one, ragged in both directions.
    pid_m, pid_n = grid_m - 1, grid_n - 1
    rows = pid_m * BLOCK_M + np.arange(BLOCK_M)
    cols = pid_n * BLOCK_N + np.arange(BLOCK_N)
    mask = (rows < M)[:, None] & (cols < N)[None, :]
    x0 = cols_drawn + 2.5
    lines = [
        f"program (pid_m, pid_n) = ({pid_m}, {pid_n}):",
        "",
        f"rows = {pid_m}·{BLOCK_M} + arange({BLOCK_M}) = {rows.tolist()}",
        f"cols = {pid_n}·{BLOCK_N} + arange({BLOCK_N}) = {cols.tolist()}",
        "",
        f"rows < M  →  [{', '.join('T' if v else 'F' for v in rows < M)}]",
        f"cols < N  →  [{', '.join('T' if v else 'F' for v in cols < N)}]",
        "",
        "mask = (rows < M)[:, None] & (cols < N)[None, :]",
    ]
    for k, line in enumerate(lines):
        axis.text(x0, top - 0.2 - 0.85 * k, line, fontsize=9, family="monospace", va="top")
    # The mask itself, as a small grid: which of the program's 16 elements are touched.
    mx, my = x0 + 2.5, top - 0.85 * len(lines) - 5.0
    for a in range(BLOCK_M):
        axis.text(mx - 0.3, my + BLOCK_M - a - 0.5, str(rows[a]), ha="right", va="center", fontsize=7)
        for b in range(BLOCK_N):
            _cell(axis, mx + b, my + BLOCK_M - a - 1, "T" if mask[a, b] else "F",
                  face=LIGHT[(pid_m * grid_n + pid_n) % len(LIGHT)] if mask[a, b] else MASKED,
                  hatch=None if mask[a, b] else "///", fontsize=8, weight="bold")
    for b in range(BLOCK_N):
        axis.text(mx + b + 0.5, my + BLOCK_M + 0.15, str(cols[b]), ha="center", va="bottom", fontsize=7)
    axis.text(mx + BLOCK_N + 0.4, my + BLOCK_M / 2, f"{int(mask.sum())} of {mask.size}\nelements\nare real",
              va="center", fontsize=9)
    return _save(figure, out, "primer_tiles")


def im2col(out: Path) -> Path:
    """The 4 x 4 input holding 1..16, a 3 x 3 kernel, stride 1: the window of output (0, 0), the
    unfolded matrix A (one row per output position, one column per tap (r, s)) and A·B
    (docs/conv2d.md's worked example)."""
    import torch
    import torch.nn.functional as F

    H = W = 4
    R = S = 3
    Ho, Wo = H - R + 1, W - S + 1
    x = torch.arange(1, H * W + 1, dtype=torch.float64).reshape(1, 1, H, W)
    # F.unfold is what the reference conv2d_unfold builds A with: one column per window, hence A = its transpose.
    A = F.unfold(x, (R, S))[0].T.long().numpy()  # [Ho*Wo, R*S]
    for oh in range(Ho):  # the same matrix, by the definition A[(oh, ow), (r, s)] = x[oh + r, ow + s]
        for ow in range(Wo):
            expected = [int(x[0, 0, oh + r, ow + s]) for r in range(R) for s in range(S)]
            assert A[oh * Wo + ow].tolist() == expected
    shared = 6  # a pixel in every window: it is copied into all four rows of A
    assert (A == shared).any(axis=1).all()

    figure, axis = _canvas(14, 4.4, (-0.3, 29.0), (-1.4, 7.0))
    window, repeated = "tab:orange", "tab:red"

    def pixel(x0, y0, value, highlighted):
        _cell(axis, x0, y0, value, face="#ffe0b3" if highlighted else "white", fontsize=10,
              weight="bold" if value == shared else "normal", text_colour=repeated if value == shared else "black")

    # The input.
    top = 5.0
    axis.text(W / 2, top + 0.9, f"input x ({H} × {W})", ha="center", fontsize=10)
    for i in range(H):
        for j in range(W):
            pixel(j, top - i - 1, int(x[0, 0, i, j]), i < R and j < S)
    _outline(axis, 0, top - R, S, R, window)
    axis.text(W / 2, top - H - 0.5, "window of output (0, 0)", ha="center", va="top", fontsize=9, color=window)

    # A: one row per output position, one column per tap.
    ax0 = 8.2
    axis.text(ax0 + R * S / 2, top + 0.9, f"A = im2col(x): {Ho * Wo} output positions × {R * S} taps",
              ha="center", fontsize=10)
    for c in range(R * S):
        axis.text(ax0 + c + 0.5, top + 0.1, f"({c // S},{c % S})", ha="center", va="bottom", fontsize=7)
    axis.text(ax0 - 0.15, top + 0.35, "output (oh,ow) \\ tap (r,s)", ha="right", va="center", fontsize=7)
    for m in range(Ho * Wo):
        axis.text(ax0 - 0.15, top - m - 0.5, f"({m // Wo},{m % Wo})", ha="right", va="center", fontsize=8)
        for c in range(R * S):
            pixel(ax0 + c, top - m - 1, int(A[m, c]), m == 0)
    _outline(axis, ax0, top - 1, R * S, 1, window)
    _arrow(axis, (W + 0.15, top - 0.5), (ax0 - 1.3, top - 0.5), colour=window)
    axis.text(ax0 + R * S / 2, top - Ho * Wo - 0.5,
              f"pixel {shared} (red) lies in every window, so A holds it {int((A == shared).sum())} times",
              ha="center", va="top", fontsize=9, color=repeated)

    # A times the flattened kernel B (one column per output channel; one here) is z, one output per row.
    bx, size = ax0 + R * S + 1.5, 0.7
    axis.text(bx - 0.75, top - 2, "·", ha="center", va="center", fontsize=22)
    b_top = top - 2 + R * S * size / 2
    axis.text(bx + size / 2, b_top + 0.2, "B", ha="center", fontsize=10)
    for c in range(R * S):
        _cell(axis, bx, b_top - (c + 1) * size, f"w{c // S}{c % S}", face="#e6f0ff", fontsize=7, size=size)
    axis.text(bx + size + 0.15, b_top - R * S * size / 2, "kernel\nflattened\nby (r, s)", va="center", fontsize=7)
    zx = bx + size + 2.4
    axis.text(zx - 0.7, top - 2, "=", ha="center", va="center", fontsize=16)
    axis.text(zx + 0.5, top + 0.3, "z = A·B", ha="center", fontsize=10)
    for m in range(Ho * Wo):
        _cell(axis, zx, top - m - 1, f"z{m // Wo}{m % Wo}", face="#ffe0b3" if m == 0 else "#e8f5e9", fontsize=8)
    ox = zx + 3.2
    _arrow(axis, (zx + 1.2, top - 2), (ox - 0.3, top - 2))
    axis.text((zx + 1.2 + ox) / 2, top - 1.75, "reshape", ha="center", fontsize=8)
    axis.text(ox + Wo / 2, top - 0.6, f"output ({Ho} × {Wo})", ha="center", fontsize=10)
    for oh in range(Ho):
        for ow in range(Wo):
            _cell(axis, ox + ow, top - 1 - oh - 1, f"z{oh}{ow}", face="#ffe0b3" if (oh, ow) == (0, 0) else "#e8f5e9",
                  fontsize=8)
    return _save(figure, out, "im2col")


def dgrad_gather(out: Path) -> Path:
    """A 3 x 3 conv, stride 2, padding 1, on a 7 x 7 input: one input pixel, the output positions
    whose windows read it and the tap each used, found by the kernel's stride test (docs/conv2d.md)."""
    H = W = 7
    R = S = 3
    sh = sw = 2
    ph = pw = 1
    Ho, Wo = (H + 2 * ph - R) // sh + 1, (W + 2 * pw - S) // sw + 1
    ih, iw = 3, 3

    def stride_test(i, pad, taps, stride, size_out):
        """The kernel's test per tap: th = i + pad - r must be >= 0, a multiple of the stride, and th // stride < Ho."""
        rows = []
        for r in range(taps):
            th = i + pad - r
            ok = th >= 0 and th % stride == 0 and th // stride < size_out
            rows.append((r, th, th % stride, th // stride, ok))
        return rows

    rows_test = stride_test(ih, ph, R, sh, Ho)
    cols_test = stride_test(iw, pw, S, sw, Wo)
    gathered = [((oh, ow), (r, s)) for r, _, _, oh, r_ok in rows_test if r_ok
                for s, _, _, ow, s_ok in cols_test if s_ok]
    # The same pairs by brute force, read forwards: every window, every tap, which pixel it reads.
    scanned = [((oh, ow), (r, s)) for oh in range(Ho) for ow in range(Wo) for r in range(R) for s in range(S)
               if (oh * sh - ph + r, ow * sw - pw + s) == (ih, iw)]
    assert sorted(gathered) == sorted(scanned) and len(gathered) == 4

    figure, axis = _canvas(14, 5.6, (-1.0, 31.0), (-1.6, 11.4))
    # Left: one small copy of the padded input per (output, tap) pair that reads the pixel, with
    # that output's window. Padded coordinate p = i + pad; cell size `size`.
    size, padded = 0.5, H + 2 * ph
    axis.text(padded * size + 0.8, 10.9, f"input x ({H} × {W}), padding {ph} (dotted), the pixel "
              f"(ih, iw) = ({ih}, {iw}) in red", ha="center", fontsize=9.5)
    for k, ((oh, ow), (r, s)) in enumerate(sorted(gathered)):
        colour = STRONG[k]
        x0 = (k % 2) * (padded * size + 1.6)
        y0 = (1 - k // 2) * (padded * size + 1.6)
        for p in range(padded):
            for q in range(W + 2 * pw):
                inside = ph <= p < H + ph and pw <= q < W + pw
                in_window = oh * sh <= p < oh * sh + R and ow * sw <= q < ow * sw + S
                target = (p - ph, q - pw) == (ih, iw)
                face = "tab:red" if target else (matplotlib.colors.to_rgba(colour, 0.25) if in_window
                                                 else ("white" if inside else MASKED))
                _cell(axis, x0 + q * size, y0 + (padded - p - 1) * size, face=face, edge="#bbbbbb", size=size,
                      hatch=None if inside or in_window else "..", linewidth=0.5)
        _outline(axis, x0 + ow * sw * size, y0 + (padded - oh * sh - R) * size, S * size, R * size, colour, 2.2)
        axis.text(x0 + padded * size / 2, y0 - 0.1, f"output ({oh},{ow})\ntap (r,s) = ({r},{s})",
                  ha="center", va="top", fontsize=8, color=colour, fontweight="bold")

    # Middle: the output grid, the same colours.
    ox, oy_top = 2 * (padded * size + 1.6) + 1.3, 8.0
    axis.text(ox + Wo / 2, oy_top + 0.9, f"dz ({Ho} × {Wo})", ha="center", fontsize=10)
    colour_of = {pair[0]: STRONG[k] for k, pair in enumerate(sorted(gathered))}
    tap_of = dict(gathered)
    for oh in range(Ho):
        axis.text(ox - 0.2, oy_top - oh - 0.5, str(oh), ha="right", va="center", fontsize=7)
        for ow in range(Wo):
            _cell(axis, ox + ow, oy_top - oh - 1, face=colour_of.get((oh, ow), "white"), edge="#aaaaaa")
            if (oh, ow) in colour_of:
                r, s = tap_of[(oh, ow)]
                axis.text(ox + ow + 0.5, oy_top - oh - 0.5, f"({r},{s})", ha="center", va="center", fontsize=7,
                          color="white", fontweight="bold")
    for ow in range(Wo):
        axis.text(ox + ow + 0.5, oy_top + 0.15, str(ow), ha="center", va="bottom", fontsize=7)
    axis.text(ox + Wo / 2, oy_top - Ho - 0.4, "the outputs whose\nwindows hold the pixel,\nand the tap (r, s)\n"
              "each one read it by", ha="center", va="top", fontsize=8)

    # The stride test, as the kernel evaluates it.
    tx = ox + Wo + 1.3
    lines = [f"dx[{ih},{iw}] = Σ dz[oh,ow] · w[r,s] over the pairs that pass:", "",
             f"rows: th = ih + ph − r = {ih} + {ph} − r",
             " r   th   th % 2   oh = th // 2",
             *[f" {r}   {th:>2}     {rem}        {oh if ok else '–':<3}{'  ✓' if ok else '  ✗ no output row'}"
               for r, th, rem, oh, ok in rows_test],
             "",
             f"cols: tw = iw + pw − s = {iw} + {pw} − s",
             " s   tw   tw % 2   ow = tw // 2",
             *[f" {s}   {tw:>2}     {rem}        {ow if ok else '–':<3}{'  ✓' if ok else '  ✗ no output col'}"
               for s, tw, rem, ow, ok in cols_test],
             "",
             f"{sum(ok for *_, ok in rows_test)} rows × {sum(ok for *_, ok in cols_test)} cols = "
             f"{len(gathered)} (output, tap) pairs;",
             "the other taps are masked (they would",
             "need an output between two real ones)"]
    for k, line in enumerate(lines):
        axis.text(tx, 9.6 - 0.62 * k, line, fontsize=8.5, family="monospace", va="top")
    return _save(figure, out, "dgrad_gather")


def bn_stats_layout(out: Path) -> Path:
    """BatchNorm's statistics: per channel, all N·H·W values reduce to one mean and variance; the
    kernels split those positions into chunks (batch_norm_partial_stats_kernel), then merge the
    partials (batch_norm_merge_stats_kernel). The tile plan is the launcher's own (`Layout`)."""
    import torch

    from tritonprop.kernels import batchnorm

    N, C, H, W = 2, 3, 3, 3
    BLOCK_I, BLOCK_C, CHUNKS = 4, 2, 2
    x = torch.empty(N, C, H, W).contiguous(memory_format=torch.channels_last)
    layout = batchnorm.Layout(x.shape, [x], tiles=(1, BLOCK_I, BLOCK_C), chunks=CHUNKS)
    num_i_chunks, tiles_per_chunk = layout.split(x.device)
    # channels_last: the reduction dims merge into one axis of N·H·W positions, channels adjacent.
    assert (layout.O, layout.I, layout.C) == (1, N * H * W, C)
    I = layout.I
    P = layout.num_o_blocks * num_i_chunks  # rows of the partials workspace

    def program(c_block, i_chunk):  # the inverse of _split_program_id (one outer block here)
        return c_block * layout.num_o_blocks * num_i_chunks + i_chunk

    figure = plt.figure(figsize=(12, 7.4))
    top_axis = figure.add_axes([0.0, 0.6, 1.0, 0.4])
    axis = figure.add_axes([0.0, 0.0, 1.0, 0.6])
    for a in (top_axis, axis):
        a.set_aspect("equal")
        a.axis("off")
    highlight, mark = 1, "tab:orange"
    sub = "₀₁₂₃₄₅₆₇₈₉"[highlight]

    # Top: the tensor, one channel followed through every image.
    top_axis.set_xlim(-2.0, 34.0)
    top_axis.set_ylim(-1.4, N * (H + 1) + 1.0)
    for n in range(N):
        y0 = (N - n - 1) * (H + 1)
        top_axis.text(-0.3, y0 + H / 2, f"n = {n}", ha="right", va="center", fontsize=9)
        for c in range(C):
            x0 = c * (W + 1)
            for h in range(H):
                for w in range(W):
                    _cell(top_axis, x0 + w, y0 + H - h - 1, face=mark if c == highlight else "white", edge="#888888")
            if n == 0:
                top_axis.text(x0 + W / 2, N * (H + 1) - 0.2, f"c = {c}", ha="center", fontsize=9)
    top_axis.text(C * (W + 1) / 2 - 0.5, -1.1, f"x: (N, C, H, W) = ({N}, {C}, {H}, {W})", ha="center", fontsize=10)
    mx = C * (W + 1) + 0.3
    _arrow(top_axis, (mx - 0.6, N * (H + 1) / 2 - 0.5), (mx + 1.4, N * (H + 1) / 2 - 0.5), colour=mark)
    top_axis.text(mx + 1.7, N * (H + 1) / 2 - 0.5,
                  f"channel {highlight}: all its N·H·W = {N * H * W} values, from every image and every position,\n"
                  f"reduce to one mean μ{sub} and one variance σ{sub}²; each channel has its own pair.\n\n"
                  "Below: how the kernels split that reduction between programs.", va="center", fontsize=9.5)

    # Bottom: the kernels' view, channels_last: positions (I = N·H·W) across, channels down.
    axis.set_xlim(-2.0, 34.0)
    axis.set_ylim(-5.6, 6.2)
    y_top = 4.0
    axis.text(-1.8, y_top + 1.6, "channels_last: the reduction dims merge into one axis of N·H·W positions. "
              f"Tiles (thin boxes): BLOCK_C = {BLOCK_C} channels × BLOCK_I = {BLOCK_I} positions.\n"
              f"batch_norm_partial_stats_kernel: each program (thick box) reduces {tiles_per_chunk} tiles, a chunk of "
              "positions, for its block of channels.", fontsize=9, va="center")
    c_rows = layout.num_c_blocks * BLOCK_C
    for c in range(c_rows):
        axis.text(-0.3, y_top - c - 0.5, f"c = {c}", ha="right", va="center", fontsize=8,
                  color=mark if c == highlight else ("black" if c < C else "#999999"),
                  fontweight="bold" if c == highlight else "normal")
        for i in range(layout.num_i_tiles * BLOCK_I):
            c_block, tile = c // BLOCK_C, i // BLOCK_I
            inside = c < C and i < I
            colour = LIGHT[program(c_block, tile // tiles_per_chunk) % len(LIGHT)]
            _cell(axis, i, y_top - c - 1, face=colour if inside else MASKED, edge="#aaaaaa",
                  hatch=None if inside else "///")
    for tile in range(layout.num_i_tiles):
        for c_block in range(layout.num_c_blocks):
            _outline(axis, tile * BLOCK_I, y_top - (c_block + 1) * BLOCK_C, BLOCK_I, BLOCK_C, "#666666",
                     linewidth=1.0)
    _outline(axis, 0, y_top - highlight - 1, I, 1, mark, linewidth=2.0, style="--")
    for c_block in range(layout.num_c_blocks):
        for i_chunk in range(num_i_chunks):
            first = i_chunk * tiles_per_chunk * BLOCK_I
            last = min((i_chunk + 1) * tiles_per_chunk, layout.num_i_tiles) * BLOCK_I
            _outline(axis, first, y_top - (c_block + 1) * BLOCK_C, last - first, BLOCK_C, "black", linewidth=2.2)
            axis.text((first + min(last, I)) / 2, y_top - c_block * BLOCK_C - BLOCK_C / 2,
                      f"program {program(c_block, i_chunk)}", ha="center", va="center", fontsize=9,
                      fontweight="bold", bbox=dict(facecolor="white", edgecolor="none", alpha=0.7, pad=1))
    for n in range(N):
        axis.plot([n * H * W + 0.1, (n + 1) * H * W - 0.1], [y_top - c_rows - 0.3] * 2, color="#333333",
                  linewidth=1.0)
        axis.text(n * H * W + H * W / 2, y_top - c_rows - 0.45, f"image n = {n}: positions {n * H * W}..{(n + 1) * H * W - 1}",
                  ha="center", va="top", fontsize=8)
    axis.text(I / 2, y_top - c_rows - 1.2, "position = n·H·W + h·W + w;  hatched: masked (c ≥ C or position ≥ N·H·W)",
              ha="center", va="top", fontsize=8)
    axis.text(-1.8, y_top - c_rows - 2.5,
              f"Channel {highlight} (dashed) is reduced by programs {program(0, 0)} and {program(0, 1)}, each over its "
              "own positions, to (count n, mean μ, M2 = Σ(x − μ)²).\n"
              "NCHW instead: O = N, I = H·W, one channel per tile (the spatial axis is then the contiguous one).",
              fontsize=8.5, va="top")

    # The workspace of partials, then the merge.
    cell = 1.3
    wx = layout.num_i_tiles * BLOCK_I + 2.3
    axis.text(wx + C * cell / 2, y_top + 0.3, f"partials [P = {P}, C]", ha="center", fontsize=9)
    for p in range(P):
        for c in range(C):
            _cell(axis, wx + c * cell, y_top - (p + 1) * cell, "n, μ,\nM2", size=cell, fontsize=7,
                  face=LIGHT[program(c // BLOCK_C, p) % len(LIGHT)])
        axis.text(wx - 0.15, y_top - (p + 0.5) * cell, f"row {p}", ha="right", va="center", fontsize=7)
    _outline(axis, wx + highlight * cell, y_top - P * cell, cell, P * cell, mark, linewidth=2.0, style="--")
    axis.text(wx + C * cell / 2, y_top - P * cell - 0.2, "program (channel block b, chunk k)\nwrites row k, "
              "columns of block b", ha="center", va="top", fontsize=7.5)
    _arrow(axis, (wx + C * cell / 2, y_top - P * cell - 1.3), (wx + C * cell / 2, y_top - P * cell - 2.3))
    axis.text(wx + C * cell / 2, y_top - P * cell - 2.4,
              "batch_norm_merge_stats_kernel: one\nprogram per block of channels reads\nthe P partials in a fixed order "
              "and\nmerges them (Chan's formula) into\nμ_c and 1/√(σ²_c + ε) per channel,\nand the running estimates",
              ha="center", va="top", fontsize=8.5)
    return _save(figure, out, "bn_stats_layout")


def online_softmax(out: Path) -> Path:
    """One query block walking over four key blocks, as `_forward_tiles` does: the scores of each
    block, the running max m, the rescale factor alpha = 2^(m_old - m_new), the running sum l;
    the result checked against the two-pass softmax."""
    rng = np.random.default_rng(3)
    rows, keys, BLOCK_N, Dv = 3, 16, 4, 4
    blocks = keys // BLOCK_N
    # Scores already multiplied by scale·log2(e), as in the kernel (so exp2 gives the softmax).
    s = rng.normal(0.0, 1.5, size=(rows, keys)) + np.linspace(-2.0, 2.0, keys)[None, :] * np.array([[1.5], [0.2], [-0.8]])
    v = rng.normal(size=(keys, Dv))

    m = np.full(rows, -np.inf)
    l = np.zeros(rows)
    acc = np.zeros((rows, Dv))
    history = {"m": [], "l": [], "alpha": []}
    for j in range(blocks):
        block = s[:, j * BLOCK_N:(j + 1) * BLOCK_N]
        m_new = np.maximum(m, block.max(axis=1))
        p = np.exp2(block - m_new[:, None])
        alpha = np.exp2(m - m_new)  # 0 on the first block: m = -inf
        l = l * alpha + p.sum(axis=1)
        acc = acc * alpha[:, None] + p @ v[j * BLOCK_N:(j + 1) * BLOCK_N]
        m = m_new
        for key, value in (("m", m), ("l", l), ("alpha", alpha)):
            history[key].append(value.copy())
    two_pass = np.exp2(s - s.max(axis=1, keepdims=True))
    two_pass /= two_pass.sum(axis=1, keepdims=True)
    error = np.abs(acc / l[:, None] - two_pass @ v).max()
    assert error < 1e-12, error

    figure, (ax_s, ax_a, ax_l) = plt.subplots(3, 1, figsize=(10, 8.4), sharex=True,
                                              gridspec_kw={"height_ratios": [2.2, 1, 1]})
    colours = STRONG[:rows]
    for j in range(blocks):
        for axis in (ax_s, ax_a, ax_l):
            axis.axvspan(j * BLOCK_N - 0.5, (j + 1) * BLOCK_N - 0.5, color="#f0f0f0" if j % 2 == 0 else "white",
                         zorder=0)
        ax_s.text((j + 0.5) * BLOCK_N - 0.5, 1.02, f"key block j = {j}", ha="center", va="bottom", fontsize=9,
                  transform=ax_s.get_xaxis_transform())
    centres = np.arange(blocks) * BLOCK_N + BLOCK_N / 2 - 0.5
    edges = np.arange(blocks + 1) * BLOCK_N - 0.5
    for r, colour in enumerate(colours):
        ax_s.plot(np.arange(keys), s[r], "o", color=colour, markersize=5, label=f"row {r}: scores s")
        # The running max after each block, as a step over that block.
        ax_s.stairs(np.array(history["m"])[:, r], edges, color=colour, linewidth=2, baseline=None,
                    label=f"row {r}: running max $m_j$")
        offsets = centres + (r - 1) * 0.6
        ax_a.plot(offsets, np.array(history["alpha"])[:, r], "s", color=colour, markersize=7)
        ax_l.plot(centres, np.array(history["l"])[:, r], "-o", color=colour)
        for j in range(blocks):
            a = history["alpha"][j][r]
            ax_a.text(offsets[j], a + 0.08, f"{a:.2f}", ha="center", va="bottom", fontsize=7, color=colour)
    ax_s.set_ylabel("score s (base 2, as in the kernel)")
    ax_s.legend(fontsize=7.5, ncol=3, loc="lower right")
    ax_s.set_title("the online softmax of one query block (3 rows) over 4 key blocks of 4 keys", pad=22)
    ax_a.set_ylim(-0.15, 1.4)
    ax_a.set_ylabel(r"$\alpha_j = 2^{m_{j-1} - m_j}$")
    ax_a.set_title(r"the rescale factor: $l$ and acc are multiplied by $\alpha_j$ before block $j$'s terms are added; "
                   r"$\alpha_j = 1$ if the max did not grow, $\alpha_0 = 0$ ($m_{-1} = -\infty$)", fontsize=8.5)
    ax_l.set_ylabel(r"$l_j$")
    ax_l.set_title(r"the running sum: $l_j = l_{j-1}\,\alpha_j + \sum_{k \in \mathrm{block}\ j} 2^{s_k - m_j}$",
                   fontsize=8.5)
    ax_l.set_xlabel(f"key index.  After the last block, acc / l equals the two-pass softmax(S)·v "
                    f"(largest difference {error:.0e})", fontsize=8.5)
    ax_l.set_xticks(range(keys))
    figure.tight_layout()
    return _save(figure, out, "online_softmax")


def bptt_unrolled(out: Path) -> Path:
    """The RNN unrolled over T = 4 steps in docs/rnn_bptt.md's notation: the forward graph, one
    shared W_hh, the backward arrows dh_t → dz_t → dh_{t-1}, and dW_hh as a sum over steps."""
    T = 4
    step = 5.0
    figure, axis = _canvas(13, 6.8, (-3.4, step * T + 2.0), (-2.8, 9.8))
    box = dict(boxstyle="round,pad=0.35", facecolor="white", edgecolor="black", linewidth=1.2)
    grad, shared = "tab:red", "tab:purple"
    y_x, y_z, y_h = 0.0, 3.0, 6.0
    xs = [1.6 + step * t for t in range(T)]

    def node(x, y, text, face="white"):
        axis.text(x, y, text, ha="center", va="center", fontsize=13, bbox={**box, "facecolor": face}, zorder=3)

    node(-2.0, y_h, r"h0 $= h_{-1}$", "#f2f2f2")
    for t, x in enumerate(xs):
        node(x, y_x, f"$x_{t}$", "#e6f0ff")
        node(x, y_z, f"$z_{t}$")
        node(x, y_h, f"$h_{t}$", "#e8f5e9")
        _arrow(axis, (x, y_x + 0.45), (x, y_z - 0.45))
        axis.text(x - 0.12, (y_x + y_z) / 2, r"$W_{ih}$", fontsize=10, va="center", ha="right")
        _arrow(axis, (x - 0.2, y_z + 0.45), (x - 0.2, y_h - 0.45))
        axis.text(x - 0.32, (y_z + y_h) / 2, "act", fontsize=9, va="center", ha="right")
        # Backward inside the step: dh_t -> dz_t, times act'(z_t) elementwise.
        _arrow(axis, (x + 0.25, y_h - 0.45), (x + 0.25, y_z + 0.45), colour=grad, linestyle="--")
        axis.text(x + 0.38, (y_z + y_h) / 2, rf"$\odot\,\mathrm{{act}}'(z_{t})$", fontsize=9, va="center",
                  color=grad)
        # Across steps: h_{t-1} -> z_t through W_hh (forward), dz_t W_hh -> dh_{t-1} (backward).
        previous = xs[t - 1] if t else -1.5
        start, end = (previous + 0.5, y_h - 0.3), (x - 0.5, y_z + 0.2)
        _arrow(axis, start, end)
        mid = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        axis.text(mid[0] - 0.35, mid[1] - 0.3, r"$W_{hh}$", fontsize=10, ha="center", va="center",
                  color=shared, fontweight="bold")
        _arrow(axis, (x - 0.45, y_z + 0.6), (previous + 0.55, y_h + 0.35), colour=grad, linestyle="--", rad=0.3)
        axis.text(mid[0] + 0.6, y_h + 0.75, rf"$dz_{t}\,W_{{hh}}$", fontsize=9, ha="center", va="center", color=grad,
                  bbox=dict(facecolor="white", edgecolor="none", pad=0.5))
    # Many:1: the loss reads the last state; the other steps get no direct gradient.
    loss_at = (xs[-1] + 0.3, y_h + 2.3)
    node(*loss_at, "L", "#fff3e0")
    _arrow(axis, (xs[-1] - 0.15, y_h + 0.45), (loss_at[0] - 0.3, loss_at[1] - 0.4))
    axis.text(xs[-1] - 0.6, y_h + 1.3, "head", fontsize=9, ha="right")
    _arrow(axis, (loss_at[0] + 0.3, loss_at[1] - 0.4), (xs[-1] + 0.3, y_h + 0.45), colour=grad, linestyle="--")
    axis.text(loss_at[0] + 0.6, y_h + 1.3, r"$dy_{T-1}$", fontsize=10, color=grad)
    for x in xs[:-1]:
        _arrow(axis, (x, y_h + 1.4), (x, y_h + 0.45), colour="#aaaaaa", linestyle=":")
        axis.text(x, y_h + 1.5, r"$dy_t = 0$ (many:1)", fontsize=8, color="#888888", ha="center", va="bottom")

    axis.text(-3.3, -1.5, r"forward (black):   $z_t = x_t W_{ih}^\top + h_{t-1} W_{hh}^\top + b, \quad h_t = "
              r"\mathrm{act}(z_t)$", fontsize=10.5, va="center")
    axis.text(-3.3, -2.4, r"backward (red, right to left):   $dz_t = dh_t \odot \mathrm{act}'(z_t), \quad "
              r"dh_{t-1} = dy_{t-1} + dz_t W_{hh}$", fontsize=10.5, va="center", color=grad)
    axis.text(xs[-1] + 1.5, -1.5, r"one $W_{hh}$, shared by every step:", fontsize=10.5, ha="right", va="center",
              color=shared)
    axis.text(xs[-1] + 1.5, -2.4, r"$dW_{hh} = \sum_t dz_t^\top h_{t-1}$", fontsize=11, ha="right", va="center",
              color=shared)
    axis.text((xs[0] + xs[-1]) / 2, 9.4, f"an RNN unrolled over T = {T} steps (t = 0 … {T - 1}), read as many:1; "
              "a loss at every step would add its $dy_t$ at every $h_t$", ha="center", fontsize=10.5)
    return _save(figure, out, "bptt_unrolled")


DIAGRAMS = {
    "primer_tiles": primer_tiles,
    "im2col": im2col,
    "dgrad_gather": dgrad_gather,
    "bn_stats_layout": bn_stats_layout,
    "online_softmax": online_softmax,
    "bptt_unrolled": bptt_unrolled,
}


# ------------------------------------------------------------------------------------------------
# Training runs
# ------------------------------------------------------------------------------------------------


def _train(argv: list[str], out: Path) -> dict:
    """One `tritonprop train` run in this process (the CLI's own parser and loop); its metrics."""
    from tritonprop.cli import build_parser
    from tritonprop.models import registry, train

    args = build_parser().parse_args(["train", *argv, "--inspect", "--out", str(out)])
    return train.run(registry.load_task(argv[0]), args)


def _tiny_names_dir(directory: Path) -> Path:
    """A few names in two languages, in the PyTorch tutorial's format: evaluating the model is then instant."""
    directory.mkdir(parents=True, exist_ok=True)
    for language, names in {"English": "Smith Jones Taylor Brown Wilson Evans",
                            "German": "Muller Schmidt Weber Meyer Wagner Becker"}.items():
        (directory / f"{language}.txt").write_text("\n".join(names.split()) + "\n", encoding="utf-8")
    return directory


def inspect_pictures(out: Path, work: Path, tiny: bool) -> list[Path]:
    """The CNN's --inspect pictures, copied as inspect_<name>.png."""
    metrics = _train(CNN_RUN + (CNN_TINY if tiny else []), work / "cnn")
    written = []
    for name in INSPECT_PICTURES:
        if f"{name}.png" not in metrics["inspect"]:
            raise RuntimeError(f"the CNN run drew no {name}.png (it drew {metrics['inspect']})")
        written.append(_copy(work / "cnn" / f"{name}.png", out, f"inspect_{name}"))
    print(f"cnn: held-out accuracy {metrics['accuracy']:.1%}, loss {metrics['initial_loss']:.2f} → "
          f"{metrics['final_loss']:.2f}")
    return written


def clipping(out: Path, work: Path, tiny: bool) -> list[Path]:
    """The name classifier twice from one seed, without and with --clip-grad: the gradient norm per step
    (metrics.json's grad_norm, before clipping) and the loss; plus the unclipped run's activations
    (a tanh RNN pushed into saturation by the high learning rate) as inspect_activations_rnn.png, and
    the clipped run's own grad_norm.png as inspect_grad_norm.png."""
    extra = NAMES_TINY + ["--data", str(_tiny_names_dir(work / "names-data"))] if tiny else []
    runs = {"without clipping": _train(NAMES_RUN + extra, work / "noclip"),
            f"--clip-grad {CLIP_AT:g}": _train(NAMES_RUN + extra + ["--clip-grad", str(CLIP_AT)], work / "clip")}
    for label, metrics in runs.items():
        if "grad_norm" not in metrics:
            raise RuntimeError("metrics.json has no grad_norm: this training loop does not record the gradient norm "
                               "under --inspect")
        print(f"names, {label}: held-out accuracy {metrics['accuracy']:.1%}, final loss {metrics['final_loss']:.2f}, "
              f"gradient norm median {np.median(metrics['grad_norm']):.2f}, max {max(metrics['grad_norm']):.1f}")

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.4), gridspec_kw={"width_ratios": [1, 1, 1]})
    ax_loss = axes[2]
    colours = ("tab:blue", "tab:orange")
    highest = max(max(metrics["grad_norm"]) for metrics in runs.values())
    lowest = min(min(metrics["grad_norm"]) for metrics in runs.values())
    for axis, (label, metrics), colour in zip(axes[:2], runs.items(), colours):
        norms = np.asarray(metrics["grad_norm"])
        steps = np.arange(1, len(norms) + 1)
        above = int((norms > CLIP_AT).sum())
        axis.plot(steps, norms, color=colour, linewidth=1.2, label="‖g‖, before any clipping")
        if label == "without clipping":
            axis.set_title(f"without clipping: ‖g‖ above {CLIP_AT:g} at {above} of {len(norms)} steps", fontsize=10)
        else:
            axis.plot(steps, np.minimum(norms, CLIP_AT), color="black", linewidth=1.0,
                      label=f"the norm the step used, min(‖g‖, {CLIP_AT:g})")
            axis.set_title(f"{label}: {above} of {len(norms)} steps scaled down to {CLIP_AT:g}", fontsize=10)
        axis.axhline(CLIP_AT, color="black", linestyle="--", linewidth=1, label=f"max_norm = {CLIP_AT:g}")
        axis.set_yscale("log")
        axis.set_ylim(lowest * 0.8, highest * 1.3)
        axis.set_xlabel("step")
        axis.set_ylabel("‖g‖ = sqrt(Σ_p ‖dL/dp‖²)")
        axis.legend(fontsize=7.5, loc="best")
        ax_loss.plot(steps, metrics["losses"], color=colour, linewidth=1.1,
                     label=f"{label} (held-out accuracy {metrics['accuracy']:.0%})")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss (cross-entropy)")
    ax_loss.set_title("the loss of both runs", fontsize=10)
    ax_loss.legend(fontsize=7.5)
    from tritonprop.models import registry

    lr = float(NAMES_RUN[NAMES_RUN.index("--lr") + 1])
    figure.suptitle(f"name classifier (tanh RNN, hidden 32), Adam at lr {lr:g} ({lr / registry.load_task('names').default_lr:g} "
                    "× the default, on purpose), both runs from the same seed", fontsize=10.5)
    figure.tight_layout()
    written = [_save(figure, out, "clipping")]
    written.append(_copy(work / "noclip" / "activations.png", out, "inspect_activations_rnn"))
    written.append(_copy(work / "clip" / "grad_norm.png", out, "inspect_grad_norm"))
    return written


RUNS = {"inspect": inspect_pictures, "clipping": clipping}
# Every picture this script writes, by the part that draws it.
OUTPUTS = {**{name: [name] for name in DIAGRAMS},
           "inspect": [f"inspect_{name}" for name in INSPECT_PICTURES],
           "clipping": ["clipping", "inspect_activations_rnn", "inspect_grad_norm"]}


def main(argv=None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=FIGURES_DIR, help=f"where the PNGs go (default {FIGURES_DIR})")
    parser.add_argument("--tiny", action="store_true",
                        help="2-step training runs on tiny data: the same pictures in seconds (for the test)")
    parser.add_argument("--only", default=None, metavar="PART[,PART]",
                        help=f"draw only these parts, of: {', '.join(OUTPUTS)}")
    args = parser.parse_args(argv)
    parts = list(OUTPUTS) if args.only is None else args.only.split(",")
    unknown = [part for part in parts if part not in OUTPUTS]
    if unknown:
        parser.error(f"--only: unknown part(s) {', '.join(unknown)}; choose from {', '.join(OUTPUTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="tritonprop-figures-") as work:
        for part in parts:
            if part in DIAGRAMS:
                written.append(DIAGRAMS[part](args.out))
            else:
                written += RUNS[part](args.out, Path(work), args.tiny)
    for path in written:
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    return written


if __name__ == "__main__":
    main(sys.argv[1:])
