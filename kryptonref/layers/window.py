"""Gathering read windows: compact patch + materialised activations + padding.

The incremental engine never copies a whole materialised tensor per occlusion
position (Algorithm 2 as printed does). Instead each position's read window is
assembled in one pass from three sources: the position's compact patch tensor
where the window overlaps it, the unoccluded image's activations (``M`` in
Algorithm 2) elsewhere, and the layer's padding value outside the tensor.
"""
from __future__ import annotations

import numpy as np

from .._numba import KERNEL, njit, prange

__all__ = ["gather_windows", "pad_full", "stitch"]


@njit(inline="always", **KERNEL)
def _read(base, patch, b, c, y, x, py0, px0, in_patch_rows, pad_value):
    """Element ``(y, x)`` of channel ``c`` as position ``b`` sees it: patch, base or padding."""
    if x < 0 or x >= base.shape[2]:
        return pad_value
    if in_patch_rows and px0 <= x < px0 + patch.shape[3]:
        return patch[b, c, y - py0, x - px0]
    return base[c, y, x]


@njit(inline="always", **KERNEL)
def _gather_plane(base, patch, b, c, py0, px0, wy0, wx0, pad_value, plane, accumulate):
    """Channel ``c`` of position ``b``'s window into ``plane``, written or (``accumulate``) added.

    Inlined with a constant ``accumulate``, so each kernel below compiles to its
    own branch-free loop (a flag tested per element slows the plain gather:
    ``docs/design.md``, Performance facts).
    """
    for i in range(plane.shape[0]):
        y = wy0 + i
        row = plane[i]
        if y < 0 or y >= base.shape[1]:
            if accumulate:
                row[:] += pad_value
            else:
                row[:] = pad_value
            continue
        in_patch_rows = py0 <= y < py0 + patch.shape[2]
        for j in range(plane.shape[1]):
            value = _read(base, patch, b, c, y, wx0 + j, py0, px0, in_patch_rows, pad_value)
            if accumulate:
                row[j] += value
            else:
                row[j] = value


def _gather_kernel_for(accumulate):
    """The parallel gather over (position, channel) planes, writing or (``accumulate``) adding.

    ``accumulate`` is a constant of each compiled kernel, so both compile
    branch-free (see :func:`_gather_plane`).
    """
    @njit(parallel=True, **KERNEL)
    def kernel(base, patch, patch_y0, patch_x0, win_y0, win_x0, pad_value, out, c_offset):
        n_items, n_channels = patch.shape[0], base.shape[0]
        for item_channel in prange(n_items * n_channels):
            b = item_channel // n_channels
            c = item_channel % n_channels
            _gather_plane(base, patch, b, c, patch_y0[b], patch_x0[b], win_y0[b], win_x0[b],
                          pad_value, out[b, c_offset + c], accumulate)
    return kernel


_gather_kernel = _gather_kernel_for(False)
_gather_add_kernel = _gather_kernel_for(True)


def gather_windows(base, patch, patch_y0, patch_x0, win_y0, win_x0, win_h, win_w,
                   pad_value=0.0, out=None, c_offset=0, accumulate=False):
    """Assemble one read window per occlusion position.

    Parameters
    ----------
    base : ndarray (C, H, W)
        Materialised activations of the unoccluded image.
    patch : ndarray (B, C, h, w) or None
        Per-position recomputed values; position ``b`` covers rows
        ``patch_y0[b] : patch_y0[b] + h`` and the matching columns. ``None``
        when the tensor is unchanged for the whole batch.
    patch_y0, patch_x0, win_y0, win_x0 : ndarray of int64 (B,)
        Patch and window offsets in the tensor's unpadded coordinates; windows
        may start before 0 or end past the tensor (that part is padding).
    win_h, win_w : int
        Window size, the same for every position.
    pad_value : float
        Value read outside the tensor (0, or -inf for max pooling).
    out : ndarray (B, C_out, win_h, win_w), optional
        Destination; channels ``c_offset : c_offset + C`` are written.
    accumulate : bool
        Add the windows to what ``out`` holds instead of overwriting it (a
        residual ``Add`` gathers its inputs into one array this way).

    Returns
    -------
    ndarray (B, C, win_h, win_w)
    """
    n_items = len(win_y0)
    if patch is None:
        patch = np.zeros((n_items, base.shape[0], 0, 0), base.dtype)
        patch_y0 = patch_x0 = np.zeros(n_items, np.int64)
    if out is None:
        out = np.empty((n_items, base.shape[0], win_h, win_w), base.dtype)
    kernel = _gather_add_kernel if accumulate else _gather_kernel
    kernel(base, patch, np.asarray(patch_y0, np.int64), np.asarray(patch_x0, np.int64),
           np.asarray(win_y0, np.int64), np.asarray(win_x0, np.int64),
           base.dtype.type(pad_value), out, c_offset)
    return out


def pad_full(x, layer_axes, out_hw, pad_value):
    """Pad a batch ``(N, C, H, W)`` to the read window of the whole output.

    The window is ``read_window(0, W_out)`` on each axis, which for ceil-mode
    pooling may reach past the declared right padding.
    """
    pads = []
    for dim, (kernel, stride, pad_before, _, dilation, _) in enumerate(layer_axes):
        span = dilation * (kernel - 1) + 1
        stop = (out_hw[dim] - 1) * stride - pad_before + span
        size = x.shape[2 + dim]
        pads.append((pad_before, max(stop - size, 0)))
    if not any(p for pair in pads for p in pair):
        return x
    return np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]), constant_values=pad_value)


def stitch(base, patch, patch_y0, patch_x0):
    """Full tensors ``(B, C, H, W)``: the base with each position's patch written in."""
    height, width = base.shape[1:]
    n_items = patch.shape[0]
    zeros = np.zeros(n_items, np.int64)
    return gather_windows(base, patch, patch_y0, patch_x0, zeros, zeros, height, width)
