"""Argument validation for every public function, in one place.

Each checker returns the value in the form the code uses (an ``int``, an
``(h, w)`` pair, a contiguous array in the model's dtype) or raises
``TypeError`` (wrong kind of value) or ``ValueError`` (wrong value) with a
message naming the argument, so the error points at what the caller wrote.
"""
from __future__ import annotations

import numbers
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from .graph import Graph
    from .model import Model

__all__ = ["positive_int", "non_negative_int", "int_pair", "tau", "open_fraction",
           "unit_interval", "one_of", "dtype", "image_batch", "image", "patch_fits",
           "positions", "fill_patch", "class_targets", "node_names", "drilldown_options", "SUPPORTED_DTYPES"]

#: The computation dtypes of models.
SUPPORTED_DTYPES = (np.float32, np.float64)

#: A real floating-point array (the model's dtype, float32 or float64).
FloatArray = npt.NDArray[np.floating[Any]]
#: A shape or an (h, w) extent.
Shape = Sequence[int]


def _is_int(value: object) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(
        value, (bool, np.bool_))


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int >= 1 (``batch_size``, ``count``...)."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def non_negative_int(value: Any, name: str) -> int:
    """``value`` as an int >= 0 (seeds)."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def int_pair(value: Any, name: str) -> tuple[int, int]:
    """A positive int or a pair of them as ``(h, w)`` (patch sizes, strides)."""
    if isinstance(value, (tuple, list, np.ndarray)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (h, w), got {value!r}")
        pair = tuple(value)
    else:
        pair = (value, value)
    for v in pair:
        if not _is_int(v):
            raise TypeError(f"{name} must be a positive integer or a pair, got {value!r}")
        if v < 1:
            raise ValueError(f"{name} must be positive, got {value!r}")
    return int(pair[0]), int(pair[1])


def _real(value: Any, name: str, what: str) -> float:
    if isinstance(value, (bool, np.bool_, str, bytes)) or isinstance(value, complex):
        raise TypeError(f"{name} must be {what}, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be {what}, got {value!r}") from None
    return number


def tau(value: Any) -> float:
    """The projective-field threshold as a float in (0, 1]."""
    number = _real(value, "tau", "a number in (0, 1]")
    if not 0.0 < number <= 1.0:
        raise ValueError(f"tau must lie in (0, 1], got {value!r}")
    return number


def open_fraction(value: Any, name: str) -> float:
    """A float in the open interval (0, 1) (``r_drill``)."""
    number = _real(value, name, "a number in (0, 1)")
    if not 0.0 < number < 1.0:
        raise ValueError(f"{name} must lie in (0, 1), got {value!r}")
    return number


def unit_interval(value: Any, name: str) -> float:
    """A float in (0, 1] (a target SSIM)."""
    number = _real(value, name, "a number in (0, 1]")
    if not 0.0 < number <= 1.0:
        raise ValueError(f"{name} must lie in (0, 1], got {value!r}")
    return number


def one_of(value: Any, choices: Collection[str], name: str) -> str:
    """``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def dtype(value: Any) -> np.dtype[Any]:
    """``value`` as a NumPy dtype if it is float32 or float64, else TypeError."""
    try:
        dt: np.dtype[Any] = np.dtype(value)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {value!r}") from None
    if dt.type not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def image_batch(x: Any, shape: Shape, dtype_: npt.DTypeLike, name: str = "x") -> FloatArray:
    """Validate a batch ``(N, C, H, W)`` and return it as a contiguous ``dtype_`` array.

    Raises
    ------
    TypeError
        If ``x`` is not a real floating-point NumPy array.
    ValueError
        On a wrong shape, an empty batch or NaN/Inf values.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{name} must hold floating-point values (float32 or float64), "
                        f"got dtype {x.dtype}")
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{name} must have shape (N, {', '.join(map(str, shape))}), "
                         f"got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or Inf values")
    return np.ascontiguousarray(x, dtype=dtype_)


def image(x: Any, shape: Shape, dtype_: npt.DTypeLike, name: str = "image") -> FloatArray:
    """One image ``(C, H, W)`` of ``shape``, as a contiguous ``dtype_`` array."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(x).__name__}")
    if x.ndim != 3:
        raise ValueError(f"{name} must have shape {tuple(shape)} (C, H, W), got {x.shape}")
    batch = image_batch(x[None], shape, dtype_, name)
    one: FloatArray = batch[0]
    return one


def patch_fits(patch_hw: Shape, image_hw: Shape) -> None:
    """ValueError if the patch is larger than the image on either axis."""
    if patch_hw[0] > image_hw[0] or patch_hw[1] > image_hw[1]:
        raise ValueError(f"patch {tuple(patch_hw)} is larger than the image {tuple(image_hw)}")


def positions(value: npt.ArrayLike, image_hw: Shape, patch_hw: Shape) -> npt.NDArray[np.int64]:
    """Top-left patch positions as a ``(P, 2)`` int64 array lying inside the image."""
    pos = np.asarray(value)
    if pos.ndim == 1 and pos.shape == (2,):
        pos = pos[None]
    if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] == 0:
        raise ValueError(f"positions must be a non-empty (P, 2) array of (y, x), got shape "
                         f"{pos.shape}")
    if pos.dtype.kind not in "iu":
        if pos.dtype.kind == "f" and np.all(pos == np.round(pos)):
            pos = pos.astype(np.int64)
        else:
            raise TypeError(f"positions must be integers, got dtype {pos.dtype}")
    pos = pos.astype(np.int64)
    limit = np.array(image_hw) - np.array(patch_hw)
    bad = np.any((pos < 0) | (pos > limit), axis=1)
    if bad.any():
        first = tuple(int(v) for v in pos[np.argmax(bad)])
        raise ValueError(f"patch {tuple(patch_hw)} at position {first} lies outside the image "
                         f"{tuple(image_hw)}; valid (y, x) are 0..{tuple(int(v) for v in limit)}")
    return pos


def fill_patch(fill: Any, channels: int, patch_hw: Shape, dtype_: npt.DTypeLike,
               image_: Optional[FloatArray] = None) -> FloatArray:
    """The occluding patch ``(C, h, w)`` in ``dtype_``.

    ``fill`` is a number, ``C`` per-channel values, an array of the patch's
    shape, or ``"mean"``: the per-channel mean of ``image_``.
    """
    if isinstance(fill, str):
        if fill != "mean" or image_ is None:
            raise ValueError(f"fill must be a number, an array or 'mean', got {fill!r}")
        fill = image_.reshape(image_.shape[0], -1).mean(axis=1)
    try:
        arr = np.asarray(fill)
    except Exception:
        raise TypeError(f"fill must be a number or an array, got {type(fill).__name__}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"fill must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim == 0:
        arr = np.full((channels,) + tuple(patch_hw), float(arr))
    elif arr.shape == (channels,):
        arr = np.broadcast_to(arr[:, None, None], (channels,) + tuple(patch_hw))
    elif arr.shape != (channels,) + tuple(patch_hw):
        raise ValueError(f"fill must be a scalar, {channels} per-channel values or an array of "
                         f"shape {(channels,) + tuple(patch_hw)}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("fill contains NaN or Inf values")
    return np.ascontiguousarray(arr, dtype=dtype_)


def class_targets(target: Any, count: int, n_classes: int,
                  name: str = "target") -> list[Optional[int]]:
    """One class index (or None: the predicted class) per image of a batch of ``count``.

    ``target`` is None, one class index for every image, or a sequence (list, tuple,
    1-D array) of ``count`` indices; each must lie in ``0..n_classes-1``.
    """
    if target is None:
        return [None] * count
    if isinstance(target, np.ndarray) and target.ndim == 0:
        target = target[()]
    if _is_int(target):
        targets = [target] * count
    elif isinstance(target, (list, tuple, np.ndarray)):
        if isinstance(target, np.ndarray) and target.ndim != 1:
            raise ValueError(f"{name} must be a class index or one per image, got an array "
                             f"of shape {target.shape}")
        targets = list(target)
        if len(targets) != count:
            raise ValueError(f"{name} has {len(targets)} entries for {count} images; give one "
                             "class for all images or one per image")
    else:
        raise TypeError(f"{name} must be a class index or a sequence of them (one per image), "
                        f"got {type(target).__name__}")
    for index, value in enumerate(targets):
        if not _is_int(value) or not 0 <= value < n_classes:
            where = name if _is_int(target) else f"{name}[{index}]"
            raise ValueError(f"{where} must be a class index in 0..{n_classes - 1}, "
                             f"got {value!r}")
    return [int(v) for v in targets]


def node_names(nodes: Iterable[str], graph: Graph, name: str = "nodes") -> tuple[str, ...]:
    """A sequence of node names of ``graph`` as a tuple (a single string is refused)."""
    if isinstance(nodes, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of node names, got the string {nodes!r} "
                        f"(write [{nodes!r}] for one node)")
    try:
        names = tuple(nodes)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of node names, got {nodes!r}") from None
    for node in names:
        if not isinstance(node, str) or node not in graph.shapes:
            raise ValueError(f"{name}: {node!r} is not a node of the graph")
    return names


#: The keys a drill-down options dict may hold (:func:`kryptonref.explain_many`).
DRILLDOWN_KEYS = ("r_drill", "coarse_stride", "target_speedup")


def drilldown_options(value: Union[None, bool, dict[str, Any]],
                      name: str = "drilldown") -> Optional[dict[str, Any]]:
    """``None``/``False`` (no drill-down), ``True`` (the defaults) or a dict of
    ``r_drill``, ``coarse_stride`` and ``target_speedup``, as a JSON-ready dict or None."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be None, True or a dict of {DRILLDOWN_KEYS}, "
                        f"got {value!r}")
    unknown = sorted(set(value) - set(DRILLDOWN_KEYS))
    if unknown:
        raise ValueError(f"{name}: unknown keys {unknown}; known: {DRILLDOWN_KEYS}")
    options: dict[str, Any] = {}
    if "r_drill" in value:
        options["r_drill"] = open_fraction(value["r_drill"], "r_drill")
    if "coarse_stride" in value:
        options["coarse_stride"] = list(int_pair(value["coarse_stride"], "coarse_stride"))
    if "target_speedup" in value:
        speed = _real(value["target_speedup"], "target_speedup", "a number > 1")
        if not speed > 1.0:
            raise ValueError(f"target_speedup must be > 1, got {value['target_speedup']!r}")
        options["target_speedup"] = speed
    return options


def model(value: object, name: str = "model") -> Model:
    """A :class:`kryptonref.Model` (``TypeError`` naming what was given otherwise)."""
    from .model import Model
    if not isinstance(value, Model):
        raise TypeError(f"{name} must be a kryptonref Model (kr.zoo, kr.from_onnx, "
                        f"kr.Model(graph)), got {type(value).__name__}")
    return value


def seed(value: Any, name: str = "seed") -> int:
    """A seed for NumPy's generator: a non-negative integer."""
    if not _is_int(value) or int(value) < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def image_list(images: Any, shape: Shape, dtype_: npt.DTypeLike,
               name: str = "images") -> list[FloatArray]:
    """A list of images ``(C, H, W)`` of ``shape`` (as ``dtype_``) from a sequence of them
    or an ``(N, C, H, W)`` array, each checked now (its index named), not after a long run.

    A single ``(C, H, W)`` array is refused: it would read as C images of shape (H, W).
    """
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            raise ValueError(f"{name} must be a list of images or an (N, C, H, W) array; got "
                             f"one image of shape {images.shape} (write [image])")
        if images.ndim != 4:
            raise ValueError(f"{name} must be an (N, C, H, W) array, got shape {images.shape}")
    elif images is None or isinstance(images, (str, bytes)) or not hasattr(images, "__iter__"):
        raise TypeError(f"{name} must be a list of (C, H, W) arrays or an (N, C, H, W) array, "
                        f"got {type(images).__name__}")
    return [image(np.asarray(value), shape, dtype_, f"{name}[{index}]")
            for index, value in enumerate(images)]
