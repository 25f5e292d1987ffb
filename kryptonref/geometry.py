"""Per-axis geometry of changed regions (paper eq. 1-8, generalised).

Every function here works on one spatial axis; height and width are handled
independently, so rectangular kernels, asymmetric padding and non-square inputs
need nothing special. Regions are half-open intervals ``[start, stop)`` in a
tensor's own unpadded coordinates. All functions accept Python integers or
NumPy integer arrays (vectorised over occlusion positions).

The general rule (``changed_output`` / ``read_window``) covers kernel ``K``,
stride ``S``, padding before ``P`` (padding after only matters for the output
size), dilation ``D`` and ``ceil_mode``. The workshop paper's eq. (1)-(8) are the
special case ``P = 0, D = 1``; they are kept verbatim as ``paper_eq*`` functions
so tests can show the correspondence (and the paper's slip in eq. 8, which
bounds the read window by ``W_2`` where ``W_1`` is meant).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, overload

import numpy as np

if TYPE_CHECKING:
    from typing import TypeAlias

    import numpy.typing as npt

    #: One integer (a position, a bound).
    _Int: TypeAlias = int | np.integer[Any]
    #: Integers vectorised over occlusion positions.
    _IntArray: TypeAlias = npt.NDArray[np.integer[Any]]
    #: Either: what the vectorised rules take.
    _Ints: TypeAlias = int | np.integer[Any] | _IntArray

__all__ = [
    "effective_kernel",
    "output_size",
    "changed_output",
    "read_window",
    "fit_region",
    "union",
    "paper_eq1_out_start",
    "paper_eq2_out_stop",
    "paper_eq5_read_start",
    "paper_eq6_read_stop",
    "paper_eq8_read_stop_as_printed",
]


@overload
def _ceil_div(a: int, b: int) -> int: ...
@overload
def _ceil_div(a: np.integer[Any], b: int) -> np.integer[Any]: ...
@overload
def _ceil_div(a: _IntArray, b: int) -> _IntArray: ...
def _ceil_div(a: _Ints, b: int) -> _Ints:
    """``ceil(a / b)`` for integers (or integer arrays) with ``b > 0``."""
    return -((-a) // b)


def effective_kernel(kernel: int, dilation: int = 1) -> int:
    """Span of a dilated kernel: ``D * (K - 1) + 1``."""
    return dilation * (kernel - 1) + 1


def output_size(in_size: int, kernel: int, stride: int = 1, pad_before: int = 0,
                pad_after: int = 0, dilation: int = 1, ceil_mode: bool = False) -> int:
    """Output length of a conv or pool layer on one axis.

    ``floor((W_in + P + P_after - Ke) / S) + 1``, or with ``ceil_mode`` the ceiling,
    where a last window that would start inside the right padding is dropped
    (the PyTorch and ONNX rule).

    Returns
    -------
    int
        The output length; ``<= 0`` means the input is too small for the layer.
    """
    span = in_size + pad_before + pad_after - effective_kernel(kernel, dilation)
    if not ceil_mode:
        return span // stride + 1 if span >= 0 else 0
    # Ceil mode may keep a window that runs past the padded input (PyTorch's rule,
    # even when the kernel is longer than the padded input), but not one that
    # starts inside the right padding.
    size = _ceil_div(span, stride) + 1
    if size > 1 and (size - 1) * stride >= in_size + pad_before:
        size -= 1
    return max(size, 0)


# Overloads: integers in, ints out; arrays in (either bound), arrays out. The first
# overlaps the second by design (a scalar matches both; the first wins).
@overload
def changed_output(start: _Int, stop: _Int, kernel: int,  # type: ignore[overload-overlap]
                   stride: int, pad_before: int, dilation: int,
                   out_size: int) -> tuple[int, int]: ...
@overload
def changed_output(start: _Ints, stop: _Ints, kernel: int, stride: int, pad_before: int,
                   dilation: int, out_size: int) -> tuple[_IntArray, _IntArray]: ...
def changed_output(start: _Ints, stop: _Ints, kernel: int, stride: int, pad_before: int,
                   dilation: int, out_size: int) -> tuple[Any, Any]:
    """Output interval that an input change on ``[start, stop)`` can reach.

    Generalisation of the paper's eq. (1)-(4) to padding and dilation::

        out_start = max(ceil((start + P - Ke + 1) / S), 0)
        out_stop  = min(floor((stop - 1 + P) / S) + 1, W_out)

    Every output outside the interval is unchanged. With dilation 1 and a dense
    kernel every output inside it changes; with dilation it is a tight bound.
    An empty input interval (``start >= stop``) gives an empty output interval,
    and so can a non-empty one when the stride skips it (e.g. K=1, S=2).

    Parameters
    ----------
    start, stop : int or ndarray of int
        Changed input interval, half-open, unpadded input coordinates.
    kernel, stride, pad_before, dilation : int
        Layer geometry on this axis.
    out_size : int
        Output length ``W_out`` of the layer on this axis.

    Returns
    -------
    (out_start, out_stop)
        Half-open output interval with ``out_start <= out_stop`` (empty when equal).
    """
    span = effective_kernel(kernel, dilation)
    out_start = np.maximum(_ceil_div(start + pad_before - span + 1, stride), 0)
    out_stop = np.minimum((stop - 1 + pad_before) // stride + 1, out_size)
    empty = (np.asarray(stop) <= np.asarray(start)) | (out_stop <= out_start)
    out_stop = np.where(empty, out_start, out_stop)
    out_start, out_stop = np.minimum(out_start, out_size), np.minimum(out_stop, out_size)
    if np.ndim(out_start) == 0:
        return int(out_start), int(out_stop)
    return out_start, out_stop


@overload
def read_window(out_start: _Int, out_stop: _Int,  # type: ignore[overload-overlap]
                kernel: int, stride: int, pad_before: int,
                dilation: int = 1) -> tuple[int, int]: ...
@overload
def read_window(out_start: _Ints, out_stop: _Ints, kernel: int, stride: int, pad_before: int,
                dilation: int = 1) -> tuple[_IntArray, _IntArray]: ...
def read_window(out_start: _Ints, out_stop: _Ints, kernel: int, stride: int, pad_before: int,
                dilation: int = 1) -> tuple[Any, Any]:
    """Input window read to compute outputs ``[out_start, out_stop)``.

    Generalisation of the paper's eq. (5)-(8)::

        read_start = out_start * S - P
        read_stop  = (out_stop - 1) * S - P + Ke

    The window is in unpadded input coordinates; a negative start or a stop past
    the input length is the part of the window that lies in the padding. For an
    empty output interval the window is empty.
    """
    span = effective_kernel(kernel, dilation)
    read_start = out_start * stride - pad_before
    read_stop = (out_stop - 1) * stride - pad_before + span
    read_stop = np.where(np.asarray(out_stop) > np.asarray(out_start), read_stop, read_start)
    if np.ndim(read_start) == 0:
        return int(read_start), int(read_stop)
    return read_start, read_stop


@overload
def fit_region(start: _Int, stop: _Int, size: int,  # type: ignore[overload-overlap]
               limit: int) -> int: ...
@overload
def fit_region(start: _Ints, stop: _Ints, size: int, limit: int) -> _IntArray: ...
def fit_region(start: _Ints, stop: _Ints, size: int, limit: int) -> int | _IntArray:
    """Grow ``[start, stop)`` to ``size`` elements inside ``[0, limit)``.

    The batched engine computes one region size per layer for a whole batch of
    occlusion positions (the largest over the batch). Each position's region is
    grown to that size from its start and shifted inward where it would cross
    the border (SIGMOD 2019, appendix C); the extra outputs are recomputed with
    their unchanged values, so results stay exact. An empty region is placed at
    ``start`` clipped into range.

    Returns
    -------
    ndarray or int
        New start; the region is ``[new_start, new_start + size)`` and contains
        ``[start, stop)``.
    """
    if size > limit:
        raise ValueError(f"region size {size} exceeds the axis length {limit}")
    new_start = np.clip(start, 0, limit - size)
    if np.ndim(new_start) == 0:
        return int(new_start)
    return new_start


def union(starts: npt.ArrayLike,
          stops: npt.ArrayLike) -> tuple[int, int] | tuple[_IntArray, _IntArray]:
    """Bounding interval of several intervals (SIGMOD 2019 eq. 20, one axis).

    Empty intervals (``start >= stop``) are ignored; the union of only empty
    intervals is empty, returned as ``(0, 0)``. Works element-wise over the
    trailing axis when given 2-D arrays of shape (n_inputs, n_positions).
    """
    starts = np.asarray(starts)
    stops = np.asarray(stops)
    live = stops > starts
    big = np.iinfo(np.int64).max
    lo = np.min(np.where(live, starts, big), axis=0)
    hi = np.max(np.where(live, stops, -big), axis=0)
    any_live = np.any(live, axis=0)
    lo = np.where(any_live, lo, 0)
    hi = np.where(any_live, hi, 0)
    if lo.ndim == 0:
        return int(lo), int(hi)
    return lo, hi


# --- The workshop paper's equations, verbatim (no padding, no dilation) -----------

def paper_eq1_out_start(x_in0: int, F: int, S: int) -> int:
    """Paper eq. (1) / (3): ``x_out0 = max(ceil((x_in0 - F + 1) / S), 0)``."""
    return max(_ceil_div(x_in0 - F + 1, S), 0)


def paper_eq2_out_stop(x_in1: int, F: int, S: int, W2: int) -> int:
    """Paper eq. (2) / (4): ``x_out1 = min(floor((x_in1 - 1) / S) + 1, W_2)``."""
    return min((x_in1 - 1) // S + 1, W2)


def paper_eq5_read_start(x_in0: int, F: int, S: int) -> int:
    """Paper eq. (5) / (7): ``x_read0 = max(ceil((x_in0 - F + 1) / S) * S, 0)``."""
    return max(_ceil_div(x_in0 - F + 1, S) * S, 0)


def paper_eq6_read_stop(x_in1: int, F: int, S: int, W1: int) -> int:
    """Paper eq. (6) (and eq. 8 corrected): ``min(floor((x_in1 - 1)/S) * S + F, W_1)``."""
    return min((x_in1 - 1) // S * S + F, W1)


def paper_eq8_read_stop_as_printed(y_in1: int, F: int, S: int, W2: int) -> int:
    """Paper eq. (8) as printed: bounded by ``W_2`` (the output width).

    This is a typo for ``W_1``; with a stride above 1 the printed bound cuts
    the read window short (see ``docs/paper-notes.md`` and the tests).
    """
    return min((y_in1 - 1) // S * S + F, W2)
