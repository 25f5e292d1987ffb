"""The CUDA backend: one computation per layer spec on numba-cuda device arrays.

CUDA twin of :mod:`kryptonref.layers.ops` (same ``full``, ``region`` and
``elementwise`` contract) plus :class:`CUDABackend`, the object the engine,
:meth:`kryptonref.Model.forward` and :func:`kryptonref.occlusion` drive with
``device="cuda"``. Weights and materialised activations stay on the device;
a batch moves its packed integer offsets to the device and its outputs back.
"""
from __future__ import annotations

import math
import warnings
import weakref
from functools import lru_cache

import numpy as np

from .._cuda import SIMULATOR, cuda, cuda_error, cupy_or_none, launch, launch_rows, unravel4
from . import specs as L
from .conv_cuda import conv2d_valid, gemm
from .ops import HOST_ONLY
from .pool import avg_pool_divisors
from .pool_cuda import avg_pool_valid, max_pool_valid
from .window_cuda import gather_windows, pad_full, repeat, stitch

__all__ = ["CUDABackend", "full", "region", "elementwise", "empty", "KERNELS"]


# -- device memory ------------------------------------------------------------------
class _Memory:
    """Bytes of live kryptonref device arrays, and their peak since the last reset.

    Arrays from Numba's allocator are counted one by one (a finalizer per
    array); arrays from CuPy's pool are read off the pool's ``used_bytes()``
    at each allocation, which costs nothing per array.
    """

    counted = 0   # live bytes of Numba-allocated arrays
    peak = 0

    @classmethod
    def live(cls):
        pool = cupy_or_none()
        return cls.counted + (pool.get_default_memory_pool().used_bytes() if pool else 0)

    @classmethod
    def observe(cls):
        cls.peak = max(cls.peak, cls.live())

    @classmethod
    def allocated(cls, nbytes):
        cls.counted += nbytes
        cls.observe()

    @classmethod
    def freed(cls, nbytes):
        cls.counted -= nbytes


def _size(nbytes):
    """``nbytes`` for people: KiB below a MiB, MiB below a GiB, else GiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 2**10:.1f} KiB"


def _free_bytes():
    if SIMULATOR:
        return None
    return int(cuda.current_context().get_memory_info()[0])


def _out_of_memory(nbytes, exc):
    free = _free_bytes()
    where = "" if free is None else f"; {_size(free)} are free"
    return MemoryError(f"the GPU cannot hold a {_size(nbytes)} array ({exc}){where}. "
                       f"Use a smaller batch_size, or device='cpu'")


def _is_oom(exc):
    text = str(exc)
    return "OUT_OF_MEMORY" in text.upper() or "out of memory" in text.lower() \
        or type(exc).__name__ == "OutOfMemoryError"


#: Whether device arrays come from CuPy's pool (when CuPy is installed).
_POOL = [True]


def _pooled(shape, dtype, nbytes):
    """A Numba device array whose memory comes from CuPy's caching pool.

    Allocating and freeing through the driver (``cuMemAlloc``/``cuMemFree``) for
    every temporary of every batch stalls the GPU; the pool reuses blocks. The
    array keeps the pool's block alive, and frees it back when it dies.
    """
    block = cupy_or_none().cuda.alloc(max(nbytes, 1))
    desc = {"shape": shape, "strides": None, "typestr": np.dtype(dtype).str,
            "data": (block.ptr, False), "version": 3}
    return cuda.from_cuda_array_interface(desc, owner=block, sync=False)


def empty(shape, dtype):
    """An uninitialised device array, counted in the backend's memory statistics.

    From CuPy's memory pool when CuPy is installed, else from Numba's allocator.
    """
    shape = tuple(int(s) for s in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    try:
        array = None
        if _POOL[0] and cupy_or_none() is not None:
            try:
                array = _pooled(shape, dtype, nbytes)
            except Exception as exc:
                if _is_oom(exc):
                    raise
                _POOL[0] = False
                warnings.warn(f"CuPy's memory pool is not usable ({type(exc).__name__}: {exc}); "
                              f"kryptonref allocates through Numba instead", RuntimeWarning)
        if array is not None:
            _Memory.observe()
            return array
        array = cuda.device_array(shape, dtype)
    except Exception as exc:
        if _is_oom(exc):
            raise _out_of_memory(nbytes, exc) from None
        raise
    _Memory.allocated(nbytes)
    # the memory lives as long as Numba's pointer object, which every view shares
    weakref.finalize(getattr(array, "gpu_data", array), _Memory.freed, nbytes)
    return array


def _c_strides(shape, itemsize):
    strides, step = [], itemsize
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def upload(array):
    """Copy a host array to a new C-contiguous device array, counted like :func:`empty`.

    Device arrays pass through; anything else is a TypeError.
    """
    if not isinstance(array, np.ndarray):
        if hasattr(array, "__cuda_array_interface__") or hasattr(array, "copy_to_host"):
            return array
        raise TypeError(f"expected a NumPy or device array, got {type(array).__name__}")
    if array.strides != _c_strides(array.shape, array.itemsize):
        # also for "contiguous" arrays with odd strides on length-1 axes, which
        # Numba's device arrays cannot reshape without a copy
        array = np.array(array, order="C", copy=True)
    out = empty(array.shape, array.dtype)
    if array.size:
        out.copy_to_device(array)
    return out


@cuda.jit(cache=True)
def _fill_int(out, value):
    for idx in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[idx] = value


_CONSTS = {}


def const_int(n_items, value):
    """A device int64 vector of ``n_items`` copies of ``value`` (cached, never written)."""
    key = (int(n_items), int(value))
    if key not in _CONSTS:
        if len(_CONSTS) > 256:
            _CONSTS.clear()
        out = empty((key[0],), np.int64)
        launch(_fill_int, key[0], out, key[1])
        _CONSTS[key] = out
    return _CONSTS[key]


def zeros_int(n_items):
    """A device int64 vector of zeros (cached)."""
    return const_int(n_items, 0)


# -- element-wise, merge and dense kernels --------------------------------------------
@cuda.jit(cache=True)
def _relu(x, out):
    for idx in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        value = x[idx]
        out[idx] = value if value > 0 or value != value else 0.0


@cuda.jit(cache=True)
def _relu6(x, out):
    for idx in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        value = x[idx]
        if value < 0:
            value = 0.0
        elif value > 6:
            value = 6.0
        out[idx] = value


@cuda.jit(cache=True)
def _affine(x, scale, shift, out):
    # x, out: (rows = B*C, plane); channel decoded once per row
    n_channels, plane = scale.shape[0], x.shape[1]
    first, first_row = cuda.grid(2)
    step, row_step = cuda.gridsize(2)
    for row in range(first_row, x.shape[0], row_step):
        c = row % n_channels
        a, s = scale[c], shift[c]
        for p in range(first, plane, step):
            out[row, p] = x[row, p] * a + s


@cuda.jit(cache=True)
def _add(a, b, out):
    for idx in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        out[idx] = a[idx] + b[idx]


@cuda.jit(cache=True)
def _copy_channels(src, c_offset, out):
    # out[b, c_offset + c, p] = src[b, c, p]
    n_channels, plane = src.shape[1], src.shape[2]
    total = src.shape[0] * n_channels * plane
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        p = idx % plane
        rest = idx // plane
        c = rest % n_channels
        b = rest // n_channels
        out[b, c_offset + c, p] = src[b, c, p]


@cuda.jit(cache=True)
def _adaptive_avg(x, out):
    height, width = x.shape[2], x.shape[3]
    n_channels, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    total = out.shape[0] * n_channels * oh * ow
    for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
        b, c, i, j = unravel4(idx, n_channels, oh, ow)
        y0, y1 = (i * height) // oh, -((-(i + 1) * height) // oh)
        x0, x1 = (j * width) // ow, -((-(j + 1) * width) // ow)
        acc = 0.0
        for y in range(y0, y1):
            for xx in range(x0, x1):
                acc += x[b, c, y, xx]
        out[b, c, i, j] = acc / ((y1 - y0) * (x1 - x0))


@cuda.jit(cache=True)
def _add_bias_rows(out, bias):
    n_cols = out.shape[1]
    for idx in range(cuda.grid(1), out.shape[0] * n_cols, cuda.gridsize(1)):
        out[idx // n_cols, idx % n_cols] += bias[idx % n_cols]


@cuda.jit(cache=True)
def _softmax(x, out):
    n_cols = x.shape[1]
    for row in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        top = x[row, 0]
        for j in range(n_cols):
            if x[row, j] > top:
                top = x[row, j]
        total = 0.0
        for j in range(n_cols):
            value = math.exp(x[row, j] - top)
            out[row, j] = value
            total += value
        for j in range(n_cols):
            out[row, j] = out[row, j] / total


def _flat(x):
    return x.reshape((x.size,))


def _map(kernel, x, *args, out=None):
    if out is None:
        out = empty(x.shape, x.dtype)
    launch(kernel, x.size, _flat(x), *args, _flat(out))
    return out


def elementwise(layer, params, x, out=None):
    """Apply a region-preserving layer (ReLU, ReLU6, BatchNorm, Dropout) on the device.

    ``out``: where to write (``x`` itself computes in place); new by default.
    """
    if isinstance(layer, L.ReLU):
        return _map(_relu, x, out=out)
    if isinstance(layer, L.ReLU6):
        return _map(_relu6, x, out=out)
    if isinstance(layer, L.Dropout):
        return x
    if isinstance(layer, L.BatchNorm2d):
        plane = int(np.prod(x.shape[2:], dtype=np.int64))
        rows = x.size // max(plane, 1)
        if out is None:
            out = empty(x.shape, x.dtype)
        launch_rows(_affine, rows, plane, x.reshape((rows, plane)), params["scale"],
                    params["shift"], out.reshape((rows, plane)))
        return out
    raise TypeError(f"{type(layer).__name__} is not an element-wise layer")


@lru_cache(maxsize=512)
def _divisors(layer, in_hw, out_hw, dtype):
    host = [avg_pool_divisors(in_hw[d], out_hw[d], layer.kernel_size[d], layer.stride[d],
                              layer.padding[d][0], layer.padding[d][1],
                              layer.count_include_pad).astype(dtype) for d in (0, 1)]
    return tuple(upload(h) for h in host)


def region(layer, params, win, in_hw, out_hw, out_y0, out_x0, region_hw):
    """Outputs ``region_hw`` of a conv/pool layer for each device read window.

    Same contract as :func:`kryptonref.layers.ops.region`.
    """
    if isinstance(layer, L.Conv2d):
        return conv2d_valid(win, params["weight"], params.get("bias"), layer.stride,
                            layer.dilation, layer.groups, region_hw,
                            weight_matrix=params.get("weight_matrix"))
    if isinstance(layer, L.MaxPool2d):
        return max_pool_valid(win, layer.kernel_size, layer.stride, layer.dilation, region_hw)
    if isinstance(layer, L.AvgPool2d):
        divisors = _divisors(layer, tuple(in_hw), tuple(out_hw), np.dtype(win.dtype).str)
        return avg_pool_valid(win, layer.kernel_size, layer.stride, divisors, out_y0, out_x0,
                              region_hw)
    raise TypeError(f"{type(layer).__name__} is not a conv or pool layer")


def _linear(x, params):
    weight_t = params["weight_t"]
    out = empty((x.shape[0], weight_t.shape[1]), x.dtype)
    gemm(x, weight_t, out)
    if "bias" in params:
        launch(_add_bias_rows, out.size, out, params["bias"])
    return out


def _concat(inputs):
    n_items = inputs[0].shape[0]
    channels = sum(x.shape[1] for x in inputs)
    out = empty((n_items, channels) + tuple(inputs[0].shape[2:]), inputs[0].dtype)
    plane = int(np.prod(out.shape[2:], dtype=np.int64))
    flat_out = out.reshape((n_items, channels, plane))
    offset = 0
    for x in inputs:
        launch(_copy_channels, x.size, x.reshape((n_items, x.shape[1], plane)), offset, flat_out)
        offset += x.shape[1]
    return out


def full(layer, params, inputs, out_shape):
    """Run a layer on a batch of whole device tensors (contract of :func:`ops.full`)."""
    x = inputs[0]
    if layer.kind == "spatial":
        out_hw = tuple(out_shape[1:])
        padded = pad_full(x, [layer.axis(0), layer.axis(1)], out_hw, layer.pad_value)
        zeros = zeros_int(x.shape[0])
        return region(layer, params, padded, tuple(x.shape[2:]), out_hw, zeros, zeros, out_hw)
    if layer.kind == "elementwise":
        return elementwise(layer, params, x)
    if isinstance(layer, L.Add):
        total = x
        for other in inputs[1:]:
            out = empty(x.shape, x.dtype)
            launch(_add, x.size, _flat(total), _flat(other), _flat(out))
            total = out
        return total
    if isinstance(layer, L.Concat):
        return _concat(inputs)
    if isinstance(layer, (L.GlobalAvgPool2d, L.AdaptiveAvgPool2d)):
        out_hw = (1, 1) if isinstance(layer, L.GlobalAvgPool2d) else layer.output_size
        out = empty((x.shape[0], x.shape[1]) + tuple(out_hw), x.dtype)
        launch(_adaptive_avg, out.size, x, out)
        return out
    if isinstance(layer, L.Flatten):
        return x.reshape((x.shape[0], x.size // x.shape[0]))
    if isinstance(layer, L.Linear):
        return _linear(x, params)
    if isinstance(layer, L.Softmax):
        out = empty(x.shape, x.dtype)
        launch(_softmax, x.shape[0], x, out)
        return out
    raise TypeError(f"no CUDA computation for layer type {type(layer).__name__}")


# -- the backend ---------------------------------------------------------------------
def _device_params(layer, prepared):
    """Kernel-ready parameters of one layer as device arrays."""
    host = {k: v for k, v in prepared.items() if k not in HOST_ONLY}
    if isinstance(layer, L.Linear):
        host["weight_t"] = np.ascontiguousarray(host.pop("weight").T)
    out = {k: upload(v) for k, v in host.items()}
    if isinstance(layer, L.Conv2d) and layer.groups == 1:
        weight = out["weight"]
        out["weight_matrix"] = weight.reshape((weight.shape[0], weight.size // weight.shape[0]))
    return out


class CUDABackend:
    """numba-cuda device arrays and kernels (``device="cuda"``).

    Raises RuntimeError at construction when no GPU is usable (the simulator,
    ``NUMBA_ENABLE_CUDASIM=1``, counts as usable).
    """

    name = "cuda"
    gather_windows = staticmethod(gather_windows)
    stitch = staticmethod(stitch)
    region = staticmethod(region)
    full = staticmethod(full)
    elementwise = staticmethod(elementwise)
    repeat = staticmethod(repeat)
    empty = staticmethod(empty)

    def __init__(self):
        problem = cuda_error()
        if problem is not None:
            raise RuntimeError(f"device='cuda' is not usable: {problem}")
        self._params = weakref.WeakKeyDictionary()

    def to_device(self, array):
        """Copy a host array (made C-contiguous) to the device; device arrays pass through."""
        return upload(array)

    def to_host(self, array):
        """Copy a device array back to a NumPy array."""
        if isinstance(array, np.ndarray):
            return array
        return array.copy_to_host()

    def pack_ints(self, rows):
        """Upload a batch's integer offsets in one transfer; one device row per input row."""
        packed = self.to_device(np.stack([np.asarray(r, np.int64) for r in rows]))
        return [packed[i] for i in range(len(rows))]

    def params(self, model):
        """The model's kernel-ready parameters on the device (uploaded once, cached).

        Raises MemoryError naming the size when the weights do not fit on the GPU.
        """
        prepared = model.prepared
        cached = self._params.get(model)
        if cached is not None and cached[0] is prepared:
            return cached[1]
        needed = sum(v.nbytes for p in prepared.values() for k, v in p.items()
                     if k not in HOST_ONLY)
        free = _free_bytes()
        if free is not None and needed > free:
            raise MemoryError(f"the model's weights need {_size(needed)} of GPU memory; "
                              f"only {_size(free)} are free")
        on_device = {name: _device_params(model.graph.nodes[name].layer, prepared[name])
                     for name in model.graph.order}
        self._params[model] = (prepared, on_device)
        return on_device

    @staticmethod
    def batch_scope():
        """Defer freeing device memory to the end of a batch.

        ``cuMemFree`` synchronises the device; freeing a batch's temporaries
        one by one would stall the kernel queue many times per batch.
        """
        return cuda.defer_cleanup()

    @staticmethod
    def memory():
        """``(live, peak)`` bytes of kryptonref's device arrays (weights, activations).

        With CuPy, the pool's bytes in use (rounded up to its 512-byte blocks).
        """
        _Memory.observe()
        return _Memory.live(), _Memory.peak

    @staticmethod
    def reset_peak():
        """Start a new peak-memory measurement from the bytes live now."""
        _Memory.peak = _Memory.live()

    @staticmethod
    def synchronize():
        """Wait for every launched kernel (for timing)."""
        cuda.synchronize()


#: Kernels and their signatures (``{T}``: the float type) for the PTX compile test.
KERNELS = [
    (_fill_int, "void(int64[::1], int64)"),
    (_relu, "void({T}[::1], {T}[::1])"),
    (_relu6, "void({T}[::1], {T}[::1])"),
    (_affine, "void({T}[:,::1], {T}[::1], {T}[::1], {T}[:,::1])"),
    (_add, "void({T}[::1], {T}[::1], {T}[::1])"),
    (_copy_channels, "void({T}[:,:,::1], int64, {T}[:,:,::1])"),
    (_adaptive_avg, "void({T}[:,:,:,::1], {T}[:,:,:,::1])"),
    (_add_bias_rows, "void({T}[:,::1], {T}[::1])"),
    (_softmax, "void({T}[:,::1], {T}[:,::1])"),
]
