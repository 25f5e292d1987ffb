"""Loading real images for occlusion experiments, and showing them again.

``load_image`` turns a PNG or JPEG file into the ``(3, H, W)`` float32 array that
``Model.forward`` and ``incremental_inference`` take, with torchvision's ImageNet
evaluation preprocessing (resize the shorter side to 256, centre-crop 224, scale to
[0, 1], normalise with the ImageNet mean and standard deviation); ``to_display`` undoes
the normalisation for plotting; ``sample_image_path`` is a small image shipped with the
package. Pillow is needed (``pip install 'kryptonref[image]'``) and imported only when an
image is loaded.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "load_image", "to_display", "sample_image_path"]

#: Per-channel (R, G, B) mean of ImageNet, on the [0, 1] scale (torchvision's constants).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: Per-channel (R, G, B) standard deviation of ImageNet, on the [0, 1] scale.
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Modes whose alpha channel is composited over white.
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _pillow() -> tuple[Any, Any]:
    from ._optional import optional_module
    return (optional_module("PIL.Image", "loading images", "image", "Pillow"),
            optional_module("PIL.ImageOps", "loading images", "image", "Pillow"))


def _size_pair(size: int | tuple[int, int] | list[int] | npt.NDArray[np.integer[Any]],
               what: str = "size") -> tuple[int, int]:
    """``224`` or ``(224, 192)`` -> ``(h, w)`` positive ints; anything else is a ValueError."""
    if isinstance(size, (tuple, list, np.ndarray)):
        values = tuple(size)
        if len(values) != 2:
            raise ValueError(f"{what} must be an int or a pair (h, w), got {size!r}")
    else:
        values = (size, size)
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{what} must be a positive integer or a pair (h, w) of them, "
                             f"got {size!r}")
    return int(values[0]), int(values[1])


def _channel_values(values: npt.ArrayLike | None,
                    what: str) -> npt.NDArray[np.float64] | None:
    """``None``, a scalar or three values -> ``None`` or a ``(3, 1, 1)`` float64 array."""
    if values is None:
        return None
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be None, a number or three numbers (R, G, B), "
                         f"got {values!r}") from None
    if arr.ndim == 0:
        arr = np.full(3, float(arr))
    if arr.shape != (3,):
        raise ValueError(f"{what} must be None, a number or three numbers (R, G, B), "
                         f"got {values!r}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} must be finite, got {values!r}")
    if what == "std" and np.any(arr <= 0):
        raise ValueError(f"std must be positive, got {values!r}")
    return arr.reshape(3, 1, 1)


def _to_rgb_float(image: Any) -> npt.NDArray[np.float32]:
    """A Pillow image -> ``(H, W, 3)`` float32 RGB in [0, 1], alpha composited over white."""
    Image, _ = _pillow()
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit (and 32-bit integer) grayscale: Pillow's own conversion to 8 bits clips
        # rather than scales, so scale here. "I" is read as 16-bit (0..65535) data, as
        # older Pillow versions open 16-bit PNGs; "F" is taken to be on the [0, 1] scale.
        arr = np.asarray(image).astype(np.float64)
        scale = 1.0 if mode == "F" else 65535.0
        gray = np.clip(arr / scale, 0.0, 1.0)
        rgb = np.repeat(gray[..., None], 3, axis=-1)
        key = image.info.get("transparency")
        if isinstance(key, (int, np.integer)):              # a transparent grey level
            alpha = (arr != key).astype(np.float64)[..., None]
            rgb = rgb * alpha + (1.0 - alpha)
        return rgb.astype(np.float32)
    if mode in _ALPHA_MODES or "transparency" in image.info:
        # Alpha (or a transparent colour / palette entries) is composited over white.
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255.0
        alpha = rgba[..., 3:]
        return cast("npt.NDArray[np.float32]",
                    (rgba[..., :3] * alpha + (1.0 - alpha)).astype(np.float32))
    if mode != "RGB":
        image = image.convert("RGB")        # "1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV"
    return (np.asarray(image, dtype=np.float32) / np.float32(255.0))


def _resize_crop(rgb: npt.NDArray[np.float32], size: tuple[int, int],
                 resize: int) -> npt.NDArray[np.float32]:
    """Resize the shorter side of ``(H, W, 3)`` to ``resize`` (bilinear, antialiased), crop."""
    Image, _ = _pillow()
    height, width = rgb.shape[:2]
    crop_h, crop_w = size
    # torchvision's Resize(int): the shorter side becomes `resize`, the longer side
    # int(resize * long / short) (truncated), so the aspect ratio is kept.
    if height <= width:
        new_h, new_w = resize, int(resize * width / height)
    else:
        new_h, new_w = int(resize * height / width), resize
    if new_h < crop_h or new_w < crop_w:
        raise ValueError(f"resize={resize} makes the {width}x{height} image {new_w}x{new_h}, "
                         f"smaller than the crop {crop_w}x{crop_h} (size={size})")
    if (new_h, new_w) != (height, width):
        # Pillow's BILINEAR widens its filter by the scale factor when shrinking
        # (antialiasing), as torchvision's PIL path does; resampled in float32, per channel.
        channels = [np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., c]))
                               .resize((new_w, new_h), Image.Resampling.BILINEAR))
                    for c in range(3)]
        rgb = np.stack(channels, axis=-1)
    top = int(round((new_h - crop_h) / 2.0))               # torchvision's CenterCrop
    left = int(round((new_w - crop_w) / 2.0))
    return rgb[top:top + crop_h, left:left + crop_w]


def _open_rgb(path: str) -> npt.NDArray[np.float32]:
    """Read ``path`` with Pillow -> ``(H, W, 3)`` float32 in [0, 1]; errors name the path."""
    Image, ImageOps = _pillow()
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, f"no such image file: {path!r}", path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"expected an image file, got a directory: "
                                f"{path!r}", path)
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb_float(image)
    except OSError as err:
        if err.errno is not None:           # a file-system error (permissions, I/O): as is
            raise
        raise ValueError(f"cannot read image {path!r}: {err}") from err
    except (SyntaxError, ValueError, TypeError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {path!r}: {err}") from err


def load_image(path: os.PathLike[str] | str, size: int | tuple[int, int] = 224,
               mean: npt.ArrayLike | None = IMAGENET_MEAN,
               std: npt.ArrayLike | None = IMAGENET_STD,
               resize: int | None = None) -> npt.NDArray[np.float32]:
    """Load a PNG or JPEG image as a normalised ``(3, H, W)`` float32 array.

    The steps are torchvision's ImageNet evaluation transform, ``Resize(256)``,
    ``CenterCrop(224)``, ``ToTensor()``, ``Normalize(mean, std)``, at any size:

    1. read the file with Pillow (first frame; the EXIF orientation tag is applied, so
       the image is upright as a viewer shows it);
    2. convert to RGB: grayscale (``"1"``, ``"L"``, 16-bit ``"I;16"``/``"I"``) is
       replicated into three channels, palette images (``"P"``) are expanded, and any
       transparency (``"RGBA"``, ``"LA"``, ``"PA"``, or a transparent colour/palette
       entry) is **composited over white**: ``rgb * alpha + 1 * (1 - alpha)``;
    3. resize so that the shorter side is ``resize`` pixels, keeping the aspect ratio
       (bilinear, antialiased when shrinking, computed in float32);
    4. crop the centre ``size`` (offsets ``round((resized - size) / 2)``);
    5. scale to [0, 1] and normalise per channel: ``(x - mean) / std``.

    Parameters
    ----------
    path : str or os.PathLike
        The image file (any format Pillow reads; PNG and JPEG are the intended ones).
    size : int or (int, int), default 224
        The output height and width (an int is a square).
    mean : None, float or sequence of 3 floats, default IMAGENET_MEAN
        Subtracted per channel (R, G, B), on the [0, 1] scale; ``None`` subtracts nothing.
    std : None, float or sequence of 3 floats, default IMAGENET_STD
        Divides per channel after the mean is subtracted; ``None`` divides by nothing.
        With ``mean=None, std=None`` the result is the plain [0, 1] image.
    resize : int, optional
        The length of the shorter side after resizing, before the crop. Default:
        ``round(s * 256 / 224)`` with ``s`` the size (the larger of ``(h, w)``), which is
        torchvision's 256 for 224. ``resize`` equal to the image's shorter side skips
        the resampling (a pure centre crop).

    Returns
    -------
    ndarray of float32, shape (3, h, w)
        Channels first, RGB order, ready for ``Model.forward(image[None])``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not an image Pillow can read (corrupt, truncated, unsupported),
        if ``size``, ``resize``, ``mean`` or ``std`` is invalid, or if ``resize`` leaves
        the image smaller than the crop.
    ImportError
        If Pillow is not installed (``pip install 'kryptonref[image]'``).

    Examples
    --------
    >>> from kryptonref.images import load_image, sample_image_path
    >>> load_image(sample_image_path()).shape
    (3, 224, 224)
    """
    size = _size_pair(size)
    if resize is None:
        resize = int(round(max(size) * 256 / 224))
    elif isinstance(resize, (bool, np.bool_)) or not isinstance(resize, (int, np.integer)) \
            or resize < 1:
        raise ValueError(f"resize must be a positive integer or None, got {resize!r}")
    mean = _channel_values(mean, "mean")
    std = _channel_values(std, "std")
    path = os.fspath(path)
    rgb = _open_rgb(path)
    rgb = _resize_crop(rgb, size, int(resize))
    image = np.transpose(rgb, (2, 0, 1)).astype(np.float64)
    if mean is not None:
        image = image - mean
    if std is not None:
        image = image / std
    return np.ascontiguousarray(image, dtype=np.float32)


def to_display(image: npt.ArrayLike, mean: npt.ArrayLike | None = IMAGENET_MEAN,
               std: npt.ArrayLike | None = IMAGENET_STD) -> npt.NDArray[np.float32]:
    """Undo ``load_image``'s normalisation: ``(3, H, W)`` -> ``(H, W, 3)`` in [0, 1].

    Parameters
    ----------
    image : array_like, shape (3, H, W) or (1, 3, H, W)
        A normalised image, as ``load_image`` returns it.
    mean, std : None, float or sequence of 3 floats
        The values it was normalised with (ImageNet's by default; ``None`` for none).

    Returns
    -------
    ndarray of float32, shape (H, W, 3)
        ``image * std + mean``, channels last, clipped to [0, 1]: what ``imshow`` and
        ``kryptonref.analysis.plots.save_overlay`` take.
    """
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"image must have shape (3, H, W), got {np.shape(image)}")
    mean = _channel_values(mean, "mean")
    std = _channel_values(std, "std")
    if std is not None:
        arr = arr * std
    if mean is not None:
        arr = arr + mean
    return np.clip(np.transpose(arr, (1, 2, 0)), 0.0, 1.0).astype(np.float32)


def sample_image_path() -> str:
    """The path of the sample image shipped with the package.

    A 256x256 RGB PNG, drawn procedurally by ``tools/make_sample_image.py``: a sky with
    clouds, a sun disc, a mountain (triangle), a red square house on a green meadow.

    Returns
    -------
    str
        ``.../kryptonref/data/sample.png``.
    """
    path = Path(__file__).resolve().parent / "data" / "sample.png"
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "the sample image is missing from the "
                                "installation (package data kryptonref/data/*)", str(path))
    return str(path)
