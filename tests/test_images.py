"""Image loading (kryptonref.images) and the heatmap overlay (kryptonref.analysis.plots)."""
import os

import numpy as np
import pytest

from .conftest import require

from kryptonref.analysis.plots import save_overlay, upsample_heatmap
from kryptonref.images import (IMAGENET_MEAN, IMAGENET_STD, load_image, sample_image_path,
                               to_display)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def Image():
    return require("PIL.Image", "image")


def save(Image, tmp_path, array_or_image, name="img.png", **kwargs):
    image = array_or_image if isinstance(array_or_image, Image.Image) \
        else Image.fromarray(np.asarray(array_or_image))
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def plain(path, **kwargs):
    """The [0, 1] image without resizing (size = the image's own), channels last."""
    return np.transpose(load_image(path, mean=None, std=None, **kwargs), (1, 2, 0))


# ---------------------------------------------------------------- the sample image


def test_sample_image_is_shipped_and_loads(Image):
    path = sample_image_path()
    assert path.endswith(os.path.join("kryptonref", "data", "sample.png"))
    assert os.path.getsize(path) < 100_000
    with Image.open(path) as im:
        assert (im.mode, im.size) == ("RGB", (256, 256))
    x = load_image(path)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32 and x.flags.c_contiguous
    assert np.all(np.isfinite(x))
    raw = load_image(path, mean=None, std=None)
    assert raw.min() >= 0.0 and raw.max() <= 1.0 and raw.std() > 0.1
    expected = (raw - np.array(IMAGENET_MEAN)[:, None, None]) / np.array(IMAGENET_STD)[:, None, None]
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)


def test_sample_image_at_other_sizes(Image):
    assert load_image(sample_image_path(), size=112).shape == (3, 112, 112)
    assert load_image(sample_image_path(), size=(96, 128)).shape == (3, 96, 128)
    assert load_image(sample_image_path(), size=(64, 32), resize=64).shape == (3, 64, 32)


# ---------------------------------------------------------------- modes


def test_rgb_without_resampling_is_exact(Image, tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    path = save(Image, tmp_path, rgb)
    np.testing.assert_allclose(plain(path, size=24, resize=24), rgb / 255.0, atol=1e-7)


def test_grayscale_modes_become_three_equal_channels(Image, tmp_path):
    gray = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)
    path = save(Image, tmp_path, Image.fromarray(gray).convert("L"), "l.png")
    out = plain(path, size=16, resize=16)
    for c in range(3):
        np.testing.assert_allclose(out[..., c], gray / 255.0, atol=1e-7)

    bits = np.zeros((16, 16), bool)
    bits[:, 8:] = True
    path = save(Image, tmp_path, Image.fromarray(bits), "one.png")
    with Image.open(path) as im:
        assert im.mode == "1"
    out = plain(path, size=16, resize=16)
    np.testing.assert_array_equal(out[:, :8], 0.0)
    np.testing.assert_array_equal(out[:, 8:], 1.0)


def test_16_bit_grayscale_is_scaled_not_clipped(Image, tmp_path):
    levels = np.array([[0, 16384, 32768, 65535]], dtype=np.uint16).repeat(4, axis=0)
    path = save(Image, tmp_path, Image.fromarray(levels), "g16.png")
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    out = plain(path, size=4, resize=4)
    for c in range(3):
        np.testing.assert_allclose(out[..., c], levels / 65535.0, atol=1e-6)


def test_palette_image(Image, tmp_path):
    index = np.array([[0, 1], [2, 1]], dtype=np.uint8).repeat(4, 0).repeat(4, 1)
    im = Image.fromarray(index).convert("L").convert("P")
    im.putdata(index.ravel().tolist())
    im.putpalette([255, 0, 0, 0, 255, 0, 10, 20, 30] + [0] * (3 * 253))
    path = save(Image, tmp_path, im, "p.png")
    with Image.open(path) as reread:
        assert reread.mode == "P"
    out = plain(path, size=8, resize=8)
    colours = np.array([[255, 0, 0], [0, 255, 0], [10, 20, 30]]) / 255.0
    np.testing.assert_allclose(out, colours[index], atol=1e-7)


def test_alpha_is_composited_over_white(Image, tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255                       # red ...
    rgba[:, :2, 3] = 255                     # ... opaque on the left,
    rgba[:, 2, 3] = 128                      # half transparent,
    rgba[:, 3, 3] = 0                        # fully transparent on the right
    path = save(Image, tmp_path, rgba, "rgba.png")
    out = plain(path, size=4, resize=4)
    a = 128 / 255
    np.testing.assert_allclose(out[:, :2], np.broadcast_to([1, 0, 0], (4, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(out[:, 2], np.broadcast_to([1, 1 - a, 1 - a], (4, 3)), atol=1e-6)
    np.testing.assert_allclose(out[:, 3], 1.0, atol=1e-6)

    la = np.stack([np.full((4, 4), 51, np.uint8), np.full((4, 4), 0, np.uint8)], -1)
    la[:, :2, 1] = 255
    path = save(Image, tmp_path, Image.fromarray(la, "LA"), "la.png")
    out = plain(path, size=4, resize=4)
    np.testing.assert_allclose(out[:, :2], 0.2, atol=1e-6)
    np.testing.assert_allclose(out[:, 2:], 1.0, atol=1e-6)


def test_palette_transparency_and_pa_mode(Image, tmp_path):
    from kryptonref.images import _to_rgb_float

    index = np.array([[0, 1]], dtype=np.uint8).repeat(2, 0)
    im = Image.new("P", (2, 2))
    im.putdata(index.ravel().tolist())
    im.putpalette([0, 0, 255, 0, 0, 0] + [0] * (3 * 254))
    path = save(Image, tmp_path, im, "ptrns.png", transparency=1)   # entry 1: transparent
    out = plain(path, size=2, resize=2)
    np.testing.assert_allclose(out[:, 0], np.broadcast_to([0, 0, 1], (2, 3)), atol=1e-7)
    np.testing.assert_allclose(out[:, 1], 1.0, atol=1e-7)

    pa = Image.new("PA", (2, 1))
    pa.putpalette([0, 255, 0] + [0] * (3 * 255))
    pa.putpixel((0, 0), (0, 255))
    pa.putpixel((1, 0), (0, 0))
    np.testing.assert_allclose(_to_rgb_float(pa)[0], [[0, 1, 0], [1, 1, 1]], atol=1e-7)


# ---------------------------------------------------------------- geometry


def thirds(Image, tmp_path, height, width, axis):
    """An image in three bands along ``axis`` (1: columns, 0: rows): red, green, blue."""
    rgb = np.zeros((height, width, 3), np.uint8)
    n = rgb.shape[axis] // 3
    for c in range(3):
        index = [slice(None)] * 2
        index[axis] = slice(c * n, (c + 1) * n)
        rgb[tuple(index) + (c,)] = 255
    return save(Image, tmp_path, rgb, f"thirds{axis}.png"), rgb


def test_centre_crop_without_resize_keeps_the_middle(Image, tmp_path):
    path, rgb = thirds(Image, tmp_path, 20, 60, axis=1)    # 60 wide, 20 high
    out = plain(path, size=20, resize=20)                   # no resampling
    np.testing.assert_allclose(out, rgb[:, 20:40] / 255.0, atol=1e-7)     # the green third
    path, rgb = thirds(Image, tmp_path, 61, 20, axis=0)    # portrait, odd margin 41
    out = plain(path, size=20, resize=20)
    top = int(round((61 - 20) / 2.0))
    np.testing.assert_allclose(out, rgb[top:top + 20] / 255.0, atol=1e-7)


def test_resize_then_crop_geometry(Image, tmp_path):
    # 300x100 -> shorter side 50 -> 150x50 -> centre 50x50 = the green middle third
    path, _ = thirds(Image, tmp_path, 100, 300, axis=1)
    out = plain(path, size=50, resize=50)
    assert out.shape == (50, 50, 3)
    np.testing.assert_allclose(out[:, 3:-3], np.broadcast_to([0, 1, 0], (50, 44, 3)), atol=1e-5)
    assert out[..., 1].mean() > 0.9 and out[..., 0].mean() < 0.05 and out[..., 2].mean() < 0.05
    # default resize: round(56 * 256 / 224) = 64 -> 192x64, crop offsets 68 and 4
    out = plain(path, size=56)
    assert out.shape == (56, 56, 3)
    np.testing.assert_allclose(out[:, :, 1], 1.0, atol=1e-5)
    # portrait, rectangular output: the middle band of rows
    path, _ = thirds(Image, tmp_path, 300, 90, axis=0)
    out = plain(path, size=(30, 24), resize=30)            # 30x100 -> rows 35..65
    assert out.shape == (30, 24, 3)
    np.testing.assert_allclose(out[..., 1], 1.0, atol=1e-5)
    np.testing.assert_allclose(out[..., [0, 2]], 0.0, atol=1e-5)


def test_downscaling_is_antialiased(Image, tmp_path):
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::2] = 255                                   # 1-px columns: average 0.5
    out = plain(save(Image, tmp_path, stripes), size=16, resize=16)
    np.testing.assert_allclose(out[:, 1:-1], 0.5, atol=1e-5)  # not aliased to 0 or 1
    np.testing.assert_allclose(out[:, [0, -1]], 0.5, atol=0.05)  # the filter's edge


def test_normalisation_values(Image, tmp_path):
    rgb = np.empty((40, 30, 3), np.uint8)
    rgb[...] = (255, 128, 0)
    path = save(Image, tmp_path, rgb)
    x = load_image(path, size=16)
    expected = (np.array([255, 128, 0]) / 255.0 - IMAGENET_MEAN) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(x, np.broadcast_to(expected[:, None, None], x.shape), atol=1e-5)
    x = load_image(path, size=16, mean=0.5, std=None)
    np.testing.assert_allclose(x[:, 0, 0], np.array([255, 128, 0]) / 255.0 - 0.5, atol=1e-6)
    x = load_image(path, size=16, mean=None, std=(0.5, 0.25, 2.0))
    np.testing.assert_allclose(x[:, 0, 0], np.array([255, 128, 0]) / 255.0 / [0.5, 0.25, 2.0],
                               atol=1e-5)


def test_to_display_round_trip(Image):
    x = load_image(sample_image_path(), size=64)
    shown = to_display(x)
    assert shown.shape == (64, 64, 3) and shown.dtype == np.float32
    raw = load_image(sample_image_path(), size=64, mean=None, std=None)
    np.testing.assert_allclose(shown, np.transpose(raw, (1, 2, 0)), atol=1e-6)
    np.testing.assert_allclose(to_display(x[None]), shown)
    custom = load_image(sample_image_path(), size=64, mean=0.3, std=(0.2, 0.3, 0.4))
    np.testing.assert_allclose(to_display(custom, 0.3, (0.2, 0.3, 0.4)), shown, atol=1e-6)
    assert to_display(np.full((3, 2, 2), 100.0)).max() == 1.0         # clipped
    with pytest.raises(ValueError, match="shape"):
        to_display(np.zeros((4, 4, 3)))


# ---------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(missing)


def test_corrupt_and_truncated_files(Image, tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="junk.png"):
        load_image(junk)
    rgb = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    good = save(Image, tmp_path, rgb, "good.png")
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="cut.png"):
        load_image(cut)
    good = save(Image, tmp_path, rgb, "good.jpg")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="cut.jpg"):
        load_image(cut)


@pytest.mark.parametrize("size", [0, -3, 2.5, True, "224", (1, 2, 3), (0, 4), None])
def test_bad_size(Image, size):
    with pytest.raises(ValueError, match="size"):
        load_image(sample_image_path(), size=size)


@pytest.mark.parametrize("kwargs, match", [
    ({"resize": 0}, "resize"), ({"resize": 1.5}, "resize"),
    ({"resize": 100}, "smaller than the crop"),              # 100 < 224
    ({"mean": (0.1, 0.2)}, "mean"), ({"std": 0.0}, "std"), ({"std": "x"}, "std"),
])
def test_bad_options(Image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_image(sample_image_path(), **kwargs)


# ---------------------------------------------------------------- heatmap upsampling


def test_one_hot_cell_covers_its_patch_when_stride_equals_patch():
    heat = np.zeros((4, 4))
    heat[1, 2] = 1.0
    up = upsample_heatmap(heat, (32, 32), patch=8, stride=8)
    expected = np.zeros((32, 32))
    expected[8:16, 16:24] = 1.0
    np.testing.assert_array_equal(up, expected)


def test_one_hot_cell_with_overlapping_patches():
    # patch 8, stride 4 on 32 px: 7x7 positions; cell (2, 3) = rows 8..15, cols 12..19
    heat = np.zeros((7, 7))
    heat[2, 3] = 1.0
    up = upsample_heatmap(heat, (32, 32), patch=8, stride=4)
    assert np.all(np.isfinite(up))
    support = np.argwhere(up > 0)
    assert support.min(0).tolist() == [8, 12] and support.max(0).tolist() == [15, 19]
    # every pixel inside is covered by 2 cells per axis: the mean is 1 / 4
    np.testing.assert_allclose(up[8:16, 12:20], 0.25)
    ys, xs = np.nonzero(up)
    centre = (np.average(ys, weights=up[ys, xs]), np.average(xs, weights=up[ys, xs]))
    np.testing.assert_allclose(centre, (8 + 3.5, 12 + 3.5))  # the patch centre


def test_upsampling_is_the_mean_of_covering_cells():
    rng = np.random.default_rng(0)
    patch, stride, hw = (6, 5), (2, 3), (21, 26)
    ny, nx = (hw[0] - 6) // 2 + 1, (hw[1] - 5) // 3 + 1
    heat = rng.normal(size=(ny, nx))
    up = upsample_heatmap(heat, hw, patch, stride)
    for y in range(hw[0]):
        for x in range(hw[1]):
            cells = [heat[i, j] for i in range(ny) for j in range(nx)
                     if i * 2 <= y < i * 2 + 6 and j * 3 <= x < j * 3 + 5]
            if cells:
                assert up[y, x] == pytest.approx(np.mean(cells))
            else:
                assert np.isnan(up[y, x])
    np.testing.assert_allclose(upsample_heatmap(heat.ravel(), hw, patch, stride), up)


def test_uncovered_pixels_are_nan_and_constant_maps_stay_constant():
    up = upsample_heatmap(np.full((6, 6), 3.0), (30, 30), patch=8, stride=4)  # covers 0..27
    np.testing.assert_allclose(up[:28, :28], 3.0)
    assert np.all(np.isnan(up[28:])) and np.all(np.isnan(up[:, 28:]))
    up = upsample_heatmap(np.ones((2, 2)), (12, 12), patch=4, stride=8)      # gaps
    assert np.isnan(up[5, 5]) and up[0, 0] == 1.0 and up[8, 8] == 1.0
    heat = np.ones((3, 3))
    heat[1, 1] = np.nan                                         # NaN cells are skipped
    up = upsample_heatmap(heat, (16, 16), patch=8, stride=4)
    np.testing.assert_allclose(up, 1.0)


def test_upsampling_checks_the_shape():
    with pytest.raises(ValueError, match=r"expected \(7, 7\)"):
        upsample_heatmap(np.zeros((6, 7)), (32, 32), patch=8, stride=4)
    with pytest.raises(ValueError, match="larger than the image"):
        upsample_heatmap(np.zeros((1, 1)), (8, 8), patch=9, stride=1)


# ---------------------------------------------------------------- the overlay PNG


def overlay_inputs(size=32, patch=8, stride=4):
    rng = np.random.default_rng(0)
    n = (size - patch) // stride + 1
    return rng.random((size, size, 3)), rng.random((n, n))


def test_overlay_writes_a_png(tmp_path):
    require("matplotlib", "plot")
    image, heat = overlay_inputs()
    out = tmp_path / "overlay.png"
    figure = save_overlay(image, heat, out, patch=8, stride=4, title="a title")
    assert type(figure).__name__ == "Figure"          # for notebooks
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert sorted(os.listdir(tmp_path)) == ["overlay.png"]
    # uint8 images, rectangular patches and a flat heatmap are accepted too
    out2 = tmp_path / "overlay2.png"
    image8 = (np.random.default_rng(1).random((24, 40, 3)) * 255).astype(np.uint8)
    ny, nx = (24 - 8) // 4 + 1, (40 - 4) // 4 + 1
    save_overlay(image8, np.arange(ny * nx, dtype=float), out2, patch=(8, 4), stride=4,
                 alpha=1.0, cmap="viridis")
    assert out2.read_bytes()[:8] == PNG_MAGIC
    PIL = require("PIL.Image", "image")
    with PIL.open(out) as im:
        assert im.size[0] > im.size[1] > 50                  # two panels side by side


def test_overlay_shows_the_drop_in_score_hot_where_important(tmp_path):
    """The overlay coloured the probability with jet (important regions blue) and
    stretched 0.993-0.999 to the full scale."""
    require("matplotlib", "plot")
    image, _ = overlay_inputs()
    heat = np.full((7, 7), 0.999)
    heat[3, 3] = 0.993                               # the one important region
    figure = save_overlay(image, heat, tmp_path / "o.png", patch=8, stride=4, score=0.999,
                          score_name="probability of 'cat'")
    right = figure.axes[1]
    shown = right.images[-1]
    drop = np.ma.masked_invalid(shown.get_array())    # (pixels: the mean of their patches)
    assert np.isclose(drop.max(), 0.006 / 4) and np.isclose(drop.min(), 0.0)
    low, high = shown.get_clim()
    assert low == 0.0 and np.isclose(high, 0.006 / 4)  # from no drop, not stretched
    assert shown.get_cmap().name == "inferno"         # large drop = hot
    assert "drop 0 to 0.006" in right.get_title()
    assert figure.axes[-1].get_ylabel() == "drop in probability of 'cat' when covered"


def test_overlay_leaves_no_partial_file_on_error(tmp_path, monkeypatch):
    require("matplotlib", "plot")
    from matplotlib.figure import Figure

    image, heat = overlay_inputs()
    out = tmp_path / "overlay.png"
    with pytest.raises(ValueError):
        save_overlay(image, heat, out, patch=8, stride=4, cmap="no-such-colormap")
    assert os.listdir(tmp_path) == []

    def broken_savefig(self, fname, *args, **kwargs):
        with open(fname, "wb") as handle:
            handle.write(PNG_MAGIC + b"partial")
        raise RuntimeError("disk full")

    out.write_bytes(b"previous")
    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        save_overlay(image, heat, out, patch=8, stride=4)
    assert os.listdir(tmp_path) == ["overlay.png"]
    assert out.read_bytes() == b"previous"                  # untouched


def test_overlay_argument_errors(tmp_path):
    image, heat = overlay_inputs()
    out = tmp_path / "x.png"
    with pytest.raises(ValueError, match=r"\(H, W, 3\).*to_display"):
        save_overlay(np.transpose(image, (2, 0, 1)), heat, out, patch=8, stride=4)
    with pytest.raises(ValueError, match="expected"):
        save_overlay(image, heat, out, patch=8, stride=8)
    with pytest.raises(ValueError, match="alpha"):
        save_overlay(image, heat, out, patch=8, stride=4, alpha=1.5)
    with pytest.raises(ValueError, match="no finite"):
        save_overlay(image, np.full_like(heat, np.nan), out, patch=8, stride=4)
    assert os.listdir(tmp_path) == []


def test_exif_orientation_is_applied(Image, tmp_path):
    rgb = np.zeros((10, 30, 3), np.uint8)
    rgb[:, :10, 0] = 255                                    # red on the left
    exif = Image.Exif()
    exif[0x0112] = 6                                        # "rotate 90 degrees clockwise"
    path = save(Image, tmp_path, rgb, "exif.png", exif=exif)
    out = plain(path, size=(30, 10), resize=10)             # displayed upright: 10 wide, 30 high
    assert out.shape == (30, 10, 3)
    np.testing.assert_allclose(out[:10, :, 0], 1.0)         # the left end is now the top
    np.testing.assert_allclose(out[10:, :, 0], 0.0)


def test_missing_optional_dependencies_name_the_extra(monkeypatch, tmp_path):
    import sys

    for name in ("PIL", "PIL.Image", "PIL.ImageOps"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"kryptonref\[image\]"):
        load_image(sample_image_path())
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.cm",
                 "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    image, heat = overlay_inputs()
    with pytest.raises(ImportError, match=r"kryptonref\[plot\]"):
        save_overlay(image, heat, tmp_path / "x.png", patch=8, stride=4)
    assert os.listdir(tmp_path) == []
