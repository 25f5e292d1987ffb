"""Gathering read windows on the GPU (CUDA twin of :mod:`kryptonref.layers.window`).

One pass assembles each position's read window from its compact patch tensor,
the materialised activations ``M`` and the padding value; no whole materialised
tensor is copied per position (``docs/design.md``, Executing a plan).
"""
from __future__ import annotations

from .._cuda import cuda, launch, launch_rows, unravel3
from ..backends.cuda_memory import const_int, empty, zeros_int

__all__ = ["gather_windows", "stitch", "pad_full", "repeat", "KERNELS"]


@cuda.jit(cache=True)
def _gather(base, patch, patch_h, patch_w, patch_y0, patch_x0, win_y0, win_x0, pad_value,
            out, c_offset, accumulate):
    # one row per (item b, channel c, window row i): decoded once per row
    n_channels, height, width = base.shape[0], base.shape[1], base.shape[2]
    win_h, win_w = out.shape[2], out.shape[3]
    first, first_row = cuda.grid(2)
    step, row_step = cuda.gridsize(2)
    for row in range(first_row, out.shape[0] * n_channels * win_h, row_step):
        b, c, i = unravel3(row, n_channels, win_h)
        y = win_y0[b] + i
        wx0, px0 = win_x0[b], patch_x0[b]
        py = y - patch_y0[b]
        row_in_tensor = 0 <= y < height
        row_in_patch = 0 <= py < patch_h
        for j in range(first, win_w, step):
            x = wx0 + j
            value = pad_value
            if row_in_tensor and 0 <= x < width:
                px = x - px0
                if row_in_patch and 0 <= px < patch_w:
                    value = patch[b, c, py, px]
                else:
                    value = base[c, y, x]
            if accumulate:
                out[b, c_offset + c, i, j] += value
            else:
                out[b, c_offset + c, i, j] = value


@cuda.jit(cache=True)
def _repeat(src, out):
    size = src.shape[0]
    total = out.shape[0]
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        out[idx] = src[idx % size]


def gather_windows(base, patch, patch_y0, patch_x0, win_y0, win_x0, win_h, win_w,
                   pad_value=0.0, out=None, c_offset=0, accumulate=False):
    """Assemble one read window per occlusion position on the device.

    Same contract as :func:`kryptonref.layers.window.gather_windows`, with
    device arrays: ``base`` ``(C, H, W)``, ``patch`` ``(B, C, h, w)`` or None,
    int64 offset vectors ``(B,)``.
    """
    n_items = len(win_y0)
    if out is None:
        out = empty((n_items, base.shape[0], win_h, win_w), base.dtype)
    if patch is None:
        patch, patch_h, patch_w = base.reshape((1,) + base.shape), 0, 0
        patch_y0 = patch_x0 = win_y0
    else:
        patch_h, patch_w = patch.shape[2], patch.shape[3]
    launch_rows(_gather, n_items * base.shape[0] * win_h, win_w, base, patch, patch_h, patch_w,
                patch_y0, patch_x0, win_y0, win_x0, base.dtype.type(pad_value), out, c_offset,
                bool(accumulate))
    return out


def stitch(base, patch, patch_y0, patch_x0):
    """Full tensors ``(B, C, H, W)`` on the device: the base with each patch written in."""
    zeros = zeros_int(patch.shape[0])
    return gather_windows(base, patch, patch_y0, patch_x0, zeros, zeros, base.shape[1],
                          base.shape[2])


def pad_full(x, layer_axes, out_hw, pad_value):
    """A batch ``(N, C, H, W)`` padded to the read window of the whole output.

    The window is ``read_window(0, W_out)`` per axis, as in the CPU twin
    :func:`kryptonref.layers.window.pad_full`; the batch is read as every
    position's "patch", so one gather pass does the padding.
    """
    sizes, starts = [], []
    for dim, (kernel, stride, pad_before, _, dilation, _) in enumerate(layer_axes):
        span = dilation * (kernel - 1) + 1
        stop = (out_hw[dim] - 1) * stride - pad_before + span
        size = x.shape[2 + dim]
        starts.append(-pad_before)
        sizes.append(max(stop, size) + pad_before)
    if starts == [0, 0] and sizes == list(x.shape[2:]):
        return x
    n_items = x.shape[0]
    zeros = const_int(n_items, 0)
    return gather_windows(x[0], x, zeros, zeros, const_int(n_items, starts[0]),
                          const_int(n_items, starts[1]), sizes[0], sizes[1], pad_value)


def repeat(array, n_items):
    """``(n_items,) + array.shape`` on the device: ``array`` repeated along a new axis."""
    out = empty((n_items,) + tuple(array.shape), array.dtype)
    launch(_repeat, out.size, array.reshape(array.size), out.reshape(out.size))
    return out


#: Kernels and their signatures (``{T}``: the float type) for the PTX compile test.
KERNELS = [
    (_gather, "void({T}[:,:,::1], {T}[:,:,:,::1], int64, int64, int64[::1], int64[::1], "
              "int64[::1], int64[::1], {T}, {T}[:,:,:,::1], int64, boolean)"),
    (_repeat, "void({T}[::1], {T}[::1])"),
]
