"""2-D convolution in numpy, with the backward derived by hand.

Shapes: x (N, C, H, W), w (K, C/G, kh, kw) with G groups, b (K,), y (N, K, Ho, Wo). Write
(sh, sw) for the stride, (dh, dw) for the dilation and (pt, pl) for the top and left padding. Take
one group (G = 1; with more groups each group is this same conv on its own slice of channels):

    y[n,k,oh,ow] = b[k] + sum_{c,r,s} w[k,c,r,s] * x[n, c, oh*sh - pt + r*dh, ow*sw - pl + s*dw]

where x is zero outside the image. It is easier to work on the padded input xp, which holds x
at offset (pt, pl) and zeros around it, so that the index becomes oh*sh + r*dh. y is linear in
each of b, w and xp, so each gradient is dy times whatever multiplies that variable, summed over
every place the variable is used. With g = dL/dy:

    db[k]         = sum_{n,oh,ow} g[n,k,oh,ow]

    dw[k,c,r,s]   = sum_{n,oh,ow} g[n,k,oh,ow] * xp[n, c, oh*sh + r*dh, ow*sw + s*dw]

dw is a correlation of the input with the output gradient: g plays the kernel, dilated by the
stride (its taps oh are sh rows apart in xp), and the conv's dilation is this correlation's stride.

    dxp[n,c,i,j]  = sum over (k, r, s, oh, ow) with oh*sh + r*dh = i and ow*sw + s*dw = j
                    of g[n,k,oh,ow] * w[k,c,r,s]

Read forwards, this is a scatter: output (oh, ow) read the input window at (oh*sh + r*dh,
ow*sw + s*dw), so it sends g times the weight back to each position it read. Read backwards,
it is a gather: for each tap r, input row i receives from output row oh = (i - r*dh) / sh when
that is a whole number in [0, Ho), and from no row otherwise. Substituting r' = kh-1-r turns the
sum into a correlation of g with the kernel flipped in both spatial dims and with in and out
channels swapped, where g has sh-1 zero rows inserted between its rows (the stride) and
dh*(kh-1) zero rows padded on each side: a transposed convolution. Rows of xp that no window
reached (when the stride does not divide the padded size evenly) get zero gradient. The padding
itself is not an input, so dx is dxp with the padding cropped off:

    dx = dxp[:, :, pt : pt+H, pl : pl+W]

Both passes loop over the kh*kw taps; each tap is one einsum over a strided slice of xp, which is
exactly the scatter/gather above done for a whole image at once.
"""
from __future__ import annotations

import numpy as np


def _padding_4(padding):
    """(pad_h, pad_w) or (top, bottom, left, right) -> (top, bottom, left, right)."""
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    if len(padding) == 4:
        return padding
    raise ValueError(f"conv2d_forward: padding must be (pad_h, pad_w) or (top, bottom, left, right), got {padding}")


def _tap_window(r, s, out_size, stride, dilation):
    """The slices of the padded input that tap (r, s) reads for every output position at once."""
    (out_h, out_w), (stride_h, stride_w), (dilation_h, dilation_w) = out_size, stride, dilation
    first_row, first_col = r * dilation_h, s * dilation_w
    rows = slice(first_row, first_row + stride_h * (out_h - 1) + 1, stride_h)
    cols = slice(first_col, first_col + stride_w * (out_w - 1) + 1, stride_w)
    return rows, cols


def conv2d_forward(x, w, b, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """Returns ``(y, cache)``; ``b`` may be None. ``cache`` holds what the backward needs."""
    pad_top, pad_bottom, pad_left, pad_right = _padding_4(padding)
    padded = np.pad(x, ((0, 0), (0, 0), (pad_top, pad_bottom), (pad_left, pad_right)))
    batch, channels, padded_h, padded_w = padded.shape
    out_channels, channels_per_group, kernel_h, kernel_w = w.shape
    out_size = tuple((p - d * (k - 1) - 1) // s + 1
                     for p, d, k, s in zip((padded_h, padded_w), dilation, (kernel_h, kernel_w), stride))

    grouped_x = padded.reshape(batch, groups, channels_per_group, padded_h, padded_w)
    grouped_w = w.reshape(groups, out_channels // groups, channels_per_group, kernel_h, kernel_w)
    y = np.zeros((batch, groups, out_channels // groups, *out_size), dtype=np.result_type(x, w))
    for r in range(kernel_h):
        for s in range(kernel_w):
            rows, cols = _tap_window(r, s, out_size, stride, dilation)
            y += np.einsum("ngchw,gkc->ngkhw", grouped_x[..., rows, cols], grouped_w[..., r, s])
    y = y.reshape(batch, out_channels, *out_size)
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1)
    cache = (grouped_x, grouped_w, b is not None, x.shape, (pad_top, pad_left), stride, dilation)
    return y, cache


def conv2d_backward(dy, cache):
    """Returns ``(dx, dw, db)`` from the upstream gradient ``dy``; ``db`` is None when there was no bias."""
    grouped_x, grouped_w, has_bias, input_shape, (pad_top, pad_left), stride, dilation = cache
    batch, groups, channels_per_group, padded_h, padded_w = grouped_x.shape
    _, out_per_group, _, kernel_h, kernel_w = grouped_w.shape
    out_size = dy.shape[2:]
    grouped_dy = dy.reshape(batch, groups, out_per_group, *out_size)

    grouped_dx = np.zeros_like(grouped_x, dtype=np.result_type(grouped_x, dy))
    grouped_dw = np.zeros_like(grouped_w, dtype=np.result_type(grouped_w, dy))
    for r in range(kernel_h):
        for s in range(kernel_w):
            rows, cols = _tap_window(r, s, out_size, stride, dilation)
            # wgrad: the window this tap read, weighted by dy and summed over batch and positions.
            grouped_dw[..., r, s] = np.einsum("ngkhw,ngchw->gkc", grouped_dy, grouped_x[..., rows, cols])
            # dgrad: each output position scatters dy * w back to the input position this tap read.
            # Windows of different outputs overlap, hence +=.
            grouped_dx[..., rows, cols] += np.einsum("ngkhw,gkc->ngchw", grouped_dy, grouped_w[..., r, s])

    height, width = input_shape[2:]
    dx = grouped_dx.reshape(batch, groups * channels_per_group, padded_h, padded_w)
    dx = dx[:, :, pad_top:pad_top + height, pad_left:pad_left + width]
    dw = grouped_dw.reshape(groups * out_per_group, channels_per_group, kernel_h, kernel_w)
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dw, db
