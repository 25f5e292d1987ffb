"""Synthetic labelled images with known ground truth, for the demo models.

:func:`shapes` draws RGB images that each hold one object of one of
:data:`CLASS_NAMES` (a disc, a square, a triangle, a cross or a ring) at a
random position, scale, rotation and colour, on a textured, noisy background
with clutter that is none of those shapes (thin line segments, small soft
blobs and Gabor-like stripe patches, in random colours). The object is drawn
last, over the clutter, so its mask is exact: every pixel of the mask shows
the object, and the class is decidable only from the object's shape.

Every sample is drawn from its own random stream, ``SeedSequence(seed,
spawn_key=(index,))``, so sample ``i`` of a seed is the same whatever ``n``
and ``start`` are (``shapes(10, seed=3).images[5]`` equals
``shapes(1, seed=3, start=5).images[0]``), and a training stream of any
length is one seed.

Images are normalised per channel with :data:`MEAN` and :data:`STD`
(torchvision's ImageNet constants) from pixel values in ``[0, 1]``, so a fill
of ``0.0`` (the default of :func:`kryptonref.incremental_inference`) is the
mean grey.

Examples
--------
>>> from kryptonref.datasets import shapes
>>> data = shapes(4, image_size=64, seed=0)
>>> data.images.shape, data.images.dtype
((4, 3, 64, 64), dtype('float32'))
>>> data.class_names
('circle', 'square', 'triangle', 'cross', 'ring')
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt

__all__ = ["ShapesData", "shapes", "CLASS_NAMES", "MEAN", "STD", "normalize", "denormalize"]

#: The object classes, in label order.
CLASS_NAMES = ("circle", "square", "triangle", "cross", "ring")

#: Per-channel mean (R, G, B) subtracted from pixel values in [0, 1] (torchvision's ImageNet mean).
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)

#: Per-channel standard deviation dividing them (torchvision's ImageNet std).
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

#: Object size (the diameter of the circle the shape is inscribed in) as a
#: fraction of the image size: uniform in this range.
OBJECT_SCALE = (0.26, 0.5)

#: Smallest RGB distance between the object's colour and the mean background
#: under it (colours in [0, 1]), so that every object is visible.
MIN_CONTRAST = 0.35


@dataclass
class ShapesData:
    """A batch of labelled synthetic images with their ground truth.

    Attributes
    ----------
    images : ndarray (N, 3, H, W) float32
        Normalised images: ``(pixel - MEAN) / STD`` per channel, pixels in [0, 1].
    labels : ndarray (N,) int64
        Class index of each image's object, into ``class_names``.
    masks : ndarray (N, H, W) bool
        The pixels of the object.
    boxes : ndarray (N, 4) int64
        The mask's bounding box ``(y0, x0, y1, x1)``, half-open as NumPy slices:
        ``masks[i, y0:y1, x0:x1]`` holds every object pixel, and each of its
        four border rows/columns holds at least one.
    class_names : tuple of str
        Name of each class index.
    seed, start : int
        The arguments the batch was drawn with (sample ``k`` is index ``start + k``).
    """

    images: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]
    masks: npt.NDArray[np.bool_]
    boxes: npt.NDArray[np.int64]
    class_names: tuple[str, ...]
    seed: int = 0
    start: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def pixels(self) -> npt.NDArray[np.float32]:
        """The images as pixel values in [0, 1], ``(N, H, W, 3)`` float32 (for plotting)."""
        return denormalize(self.images)


def normalize(pixels: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """``(pixels - MEAN) / STD`` per channel for ``(..., 3, H, W)`` pixel values in [0, 1]."""
    pixels = np.asarray(pixels, dtype=np.float32)
    return (pixels - MEAN[:, None, None]) / STD[:, None, None]


def denormalize(images: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Pixel values ``(..., H, W, 3)`` in [0, 1] of normalised ``(..., 3, H, W)`` images."""
    images = np.asarray(images, dtype=np.float32)
    pixels = images * STD[:, None, None] + MEAN[:, None, None]
    return cast("npt.NDArray[np.float32]", np.clip(np.moveaxis(pixels, -3, -1), 0.0, 1.0))


def _check_int(value: object, what: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value!r}")
    return int(value)


def shapes(n: int, image_size: int = 224, seed: int = 0, start: int = 0) -> ShapesData:
    """Draw ``n`` labelled images of one shape each on a cluttered, textured background.

    Parameters
    ----------
    n : int
        Number of images.
    image_size : int
        Height and width in pixels (at least 32); every size in the drawing scales
        with it, so the images look alike at any size.
    seed : int
        Seed of the random streams (non-negative).
    start : int
        Index of the first sample: the batch holds samples ``start .. start+n-1``
        of the seed's stream.

    Returns
    -------
    ShapesData
        Images ``(n, 3, image_size, image_size)`` float32 (normalised with
        :data:`MEAN`/:data:`STD`), labels, object masks, boxes and class names.

    Notes
    -----
    Each image is composed as follows (sizes are fractions of ``image_size``,
    colours are RGB in [0, 1]):

    1. background: a random base colour plus a smooth colour field (noise on a
       5x5 grid, bilinearly upsampled) and a finer grey-level texture (noise on
       a grid of ``image_size / 8`` cells);
    2. clutter, none of it one of the classes: 3-8 line segments 1-3 px wide,
       4-10 small Gaussian blobs (sigma 1-2.5 % of the size) and 1-2 stripe
       patches (a sinusoidal grating under a Gaussian envelope);
    3. the object: its class uniform over :data:`CLASS_NAMES`, its diameter
       uniform in :data:`OBJECT_SCALE`, a uniform rotation, a position keeping it
       inside the image, and a uniform random colour at least
       :data:`MIN_CONTRAST` away from the mean background under it, shaded by a
       faint linear gradient;
    4. per-pixel Gaussian noise (std 0.04), clipping to [0, 1] and normalising.

    Examples
    --------
    >>> data = shapes(2, image_size=96, seed=1)
    >>> y0, x0, y1, x1 = data.boxes[0]
    >>> bool(data.masks[0, y0:y1, x0:x1].sum() == data.masks[0].sum())
    True
    """
    n = _check_int(n, "n", 0)
    size = _check_int(image_size, "image_size", 32)
    seed = _check_int(seed, "seed", 0)
    start = _check_int(start, "start", 0)
    images = np.empty((n, 3, size, size), dtype=np.float32)
    labels = np.empty(n, dtype=np.int64)
    masks = np.zeros((n, size, size), dtype=bool)
    boxes = np.empty((n, 4), dtype=np.int64)
    grid = _Grid(size)
    for k in range(n):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(start + k,)))
        labels[k] = _draw_sample(rng, grid, images[k], masks[k])
        ys = np.flatnonzero(masks[k].any(axis=1))
        xs = np.flatnonzero(masks[k].any(axis=0))
        boxes[k] = (ys[0], xs[0], ys[-1] + 1, xs[-1] + 1)
    images -= MEAN[:, None, None]
    images /= STD[:, None, None]
    return ShapesData(images, labels, masks, boxes, CLASS_NAMES, seed, start)


class _Grid:
    """Per-size constants: pixel coordinates and the upsampling matrices."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.coords = np.arange(size, dtype=np.float32)
        self.fine_cells = max(4, size // 8)
        self.up_coarse = _upsample_matrix(5, size)
        self.up_fine = _upsample_matrix(self.fine_cells, size)


def _upsample_matrix(cells: int, size: int) -> npt.NDArray[np.float32]:
    """``(size, cells)`` bilinear interpolation matrix from a ``cells`` grid to ``size`` pixels."""
    pos = (np.arange(size) + 0.5) * cells / size - 0.5
    pos = np.clip(pos, 0, cells - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, cells - 1)
    frac = pos - lo
    mat = np.zeros((size, cells), dtype=np.float32)
    mat[np.arange(size), lo] += 1 - frac
    mat[np.arange(size), hi] += frac
    return mat


def _draw_sample(rng: np.random.Generator, grid: _Grid, image: npt.NDArray[np.float32],
                 mask: npt.NDArray[np.bool_]) -> int:
    """Draw one sample into ``image`` (3, S, S) (pixels in [0, 1]) and ``mask``; return the label."""
    size = grid.size
    # 1. background
    base = rng.uniform(0.2, 0.8, size=3).astype(np.float32)
    coarse = rng.normal(0.0, 0.15, size=(3, 5, 5)).astype(np.float32)
    fine = rng.normal(0.0, 0.06, size=(grid.fine_cells, grid.fine_cells)).astype(np.float32)
    image[...] = grid.up_coarse @ coarse @ grid.up_coarse.T
    image += (grid.up_fine @ fine @ grid.up_fine.T)[None]
    image += base[:, None, None]
    # 2. clutter
    for _ in range(rng.integers(3, 9)):
        _draw_line(rng, grid, image)
    for _ in range(rng.integers(4, 11)):
        _draw_blob(rng, grid, image)
    for _ in range(rng.integers(1, 3)):
        _draw_stripes(rng, grid, image)
    # 3. the object
    label = int(rng.integers(len(CLASS_NAMES)))
    radius = 0.5 * size * rng.uniform(*OBJECT_SCALE)
    margin = radius + 2
    cy, cx = rng.uniform(margin, size - margin, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    detail = rng.uniform(0, 1)
    lo, hi = int(np.floor(cy - radius)), int(np.ceil(cy + radius)) + 1
    left, right = int(np.floor(cx - radius)), int(np.ceil(cx + radius)) + 1
    lo, left = max(lo, 0), max(left, 0)
    hi, right = min(hi, size), min(right, size)
    dy, dx = _offsets(grid, (lo, hi, left, right), cy, cx)
    inside = _shape_mask(label, dy, dx, radius, angle, detail)
    mask[lo:hi, left:right] = inside
    under = image[:, lo:hi, left:right][:, inside].mean(axis=1)
    for _ in range(20):
        colour = rng.uniform(0, 1, size=3).astype(np.float32)
        if np.linalg.norm(colour - under) >= MIN_CONTRAST:
            break
    else:  # pragma: no cover - practically unreachable: take the far corner of the cube
        colour = (under < 0.5).astype(np.float32)
    gy, gx = rng.normal(0, 0.08 / radius, size=2).astype(np.float32)
    shade = (dy * gy + dx * gx)[inside]
    window = image[:, lo:hi, left:right]
    window[:, inside] = colour[:, None] + shade[None]
    # 4. noise, clip
    image += rng.standard_normal(size=image.shape, dtype=np.float32) * np.float32(0.04)
    np.clip(image, 0.0, 1.0, out=image)
    return label


def _shape_mask(label: int, dy: npt.NDArray[np.float32], dx: npt.NDArray[np.float32],
                radius: float, angle: float, detail: float) -> npt.NDArray[np.bool_]:
    """Boolean mask of class ``label`` on the offsets ``dy`` (h, 1), ``dx`` (1, w)."""
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u = dx * c + dy * s
    v = -dx * s + dy * c
    name = CLASS_NAMES[label]
    if name == "circle":
        return cast("npt.NDArray[np.bool_]", u * u + v * v <= radius ** 2)
    if name == "ring":
        r2 = u * u + v * v
        inner = radius * (0.45 + 0.2 * detail)
        return cast("npt.NDArray[np.bool_]", (r2 <= radius ** 2) & (r2 >= inner ** 2))
    if name == "square":
        half = radius * (0.62 + 0.08 * detail)
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if name == "triangle":
        # equilateral, vertices on the circle of the radius: inradius radius / 2
        inside = np.ones(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
        for k in range(3):
            phi = 2 * np.pi * k / 3
            inside &= u * np.float32(np.cos(phi)) + v * np.float32(np.sin(phi)) <= radius / 2
        return inside
    # cross (a plus sign)
    arm = radius * (0.22 + 0.1 * detail)
    length = radius * 0.95
    au, av = np.abs(u), np.abs(v)
    return ((au <= arm) & (av <= length)) | ((av <= arm) & (au <= length))


def _window(grid: _Grid, cy: float, cx: float, reach: float) -> tuple[int, int, int, int]:
    """Clipped slice bounds of a square window of half-size ``reach`` around (cy, cx)."""
    size = grid.size
    lo, hi = max(int(cy - reach), 0), min(int(cy + reach) + 2, size)
    left, right = max(int(cx - reach), 0), min(int(cx + reach) + 2, size)
    return lo, hi, left, right


def _offsets(grid: _Grid, bounds: tuple[int, int, int, int], cy: float,
             cx: float) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Row and column offsets ``(H, 1)``, ``(1, W)`` of a window's pixels from (cy, cx)."""
    lo, hi, left, right = bounds
    return (grid.coords[lo:hi, None] - np.float32(cy),
            grid.coords[None, left:right] - np.float32(cx))


def _blend(rng: np.random.Generator, image: npt.NDArray[np.float32],
           bounds: tuple[int, int, int, int], alpha: npt.NDArray[np.floating[Any]]) -> None:
    """Blend a random colour into ``image`` over a window, with opacity ``alpha``."""
    lo, hi, left, right = bounds
    colour = rng.uniform(0, 1, size=3).astype(np.float32)
    window = image[:, lo:hi, left:right]
    window += alpha[None] * (colour[:, None, None] - window)


def _draw_line(rng: np.random.Generator, grid: _Grid, image: npt.NDArray[np.float32]) -> None:
    """A line segment 1-3 px wide in a random colour, blended in."""
    size = grid.size
    length = size * rng.uniform(0.08, 0.5)
    width = rng.uniform(0.6, 1.6) * max(1.0, size / 224)
    y0, x0 = rng.uniform(0, size, size=2)
    theta = rng.uniform(0, np.pi)
    y1, x1 = y0 + length * np.sin(theta), x0 + length * np.cos(theta)
    top, bottom = max(int(min(y0, y1) - width) - 1, 0), min(int(max(y0, y1) + width) + 2, size)
    left, right = max(int(min(x0, x1) - width) - 1, 0), min(int(max(x0, x1) + width) + 2, size)
    if top >= bottom or left >= right:
        return
    py = grid.coords[top:bottom, None] - np.float32(y0)
    px = grid.coords[None, left:right] - np.float32(x0)
    ey, ex = np.float32(y1 - y0), np.float32(x1 - x0)
    t = np.clip((py * ey + px * ex) / np.float32(length ** 2), 0, 1)
    dist = np.hypot(py - t * ey, px - t * ex)
    alpha = np.clip(width - dist + 0.5, 0, 1) * np.float32(rng.uniform(0.5, 1.0))
    _blend(rng, image, (top, bottom, left, right), alpha)


def _draw_blob(rng: np.random.Generator, grid: _Grid, image: npt.NDArray[np.float32]) -> None:
    """A small soft Gaussian blob in a random colour (no hard edge: not a disc)."""
    size = grid.size
    sigma = size * rng.uniform(0.01, 0.025)
    cy, cx = rng.uniform(0, size, size=2)
    lo, hi, left, right = _window(grid, cy, cx, 3 * sigma)
    if lo >= hi or left >= right:
        return
    dy, dx = _offsets(grid, (lo, hi, left, right), cy, cx)
    sy, sx = sigma * rng.uniform(0.6, 1.4, size=2)
    alpha = np.exp(-0.5 * (dy * dy / np.float32(sy * sy) + dx * dx / np.float32(sx * sx)))
    alpha *= np.float32(rng.uniform(0.5, 0.9))
    _blend(rng, image, (lo, hi, left, right), alpha)


def _draw_stripes(rng: np.random.Generator, grid: _Grid, image: npt.NDArray[np.float32]) -> None:
    """A patch of parallel stripes: a sinusoidal grating under a Gaussian envelope."""
    size = grid.size
    sigma = size * rng.uniform(0.04, 0.1)
    period = size * rng.uniform(0.02, 0.05)
    cy, cx = rng.uniform(0, size, size=2)
    lo, hi, left, right = _window(grid, cy, cx, 2.5 * sigma)
    if lo >= hi or left >= right:
        return
    dy, dx = _offsets(grid, (lo, hi, left, right), cy, cx)
    theta = rng.uniform(0, np.pi)
    phase = dy * np.float32(np.sin(theta)) + dx * np.float32(np.cos(theta))
    wave = 0.5 + 0.5 * np.cos(phase * np.float32(2 * np.pi / period))
    envelope = np.exp(-(dy * dy + dx * dx) / np.float32(2 * sigma * sigma))
    alpha = wave * envelope * np.float32(rng.uniform(0.5, 0.9))
    _blend(rng, image, (lo, hi, left, right), alpha)
