#!/usr/bin/env python
"""Dev-only: draw ``kryptonref/data/sample.png``, the small sample image of the package.

A deterministic, procedurally drawn 256x256 RGB scene: a sky gradient with soft
clouds, a bright sun disc, a mountain (triangle), a red square "house" and a
textured green meadow. The textures are smooth value noise from a seeded NumPy
generator, the shapes are drawn with Pillow at 4x and downsampled (antialiased
edges). Only NumPy and Pillow are used; running it again rewrites the same pixels::

    python tools/make_sample_image.py                 # writes kryptonref/data/sample.png
    python tools/make_sample_image.py --out /tmp/x.png
"""
from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image, ImageDraw

SIZE = 256
SCALE = 4            # shapes are drawn at SCALE x SIZE and downsampled
SEED = 20240601


def value_noise(rng, size, cells):
    """Smooth noise in [0, 1]: a random ``cells x cells`` grid, bicubically upsampled."""
    grid = rng.random((cells, cells)).astype(np.float32)
    image = Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(image), 0.0, 1.0)


def fractal_noise(rng, size, octaves=(4, 8, 16, 32)):
    """A few octaves of value noise, each half the amplitude of the last, in [0, 1]."""
    total = np.zeros((size, size), np.float32)
    weight = 1.0
    for cells in octaves:
        total += weight * value_noise(rng, size, cells)
        weight *= 0.5
    total -= total.min()
    return total / total.max()


def draw_scene(seed=SEED):
    """The scene as a ``(SIZE, SIZE, 3)`` uint8 array."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE

    # sky: blue at the top, paler at the horizon, with soft clouds
    sky = np.stack([0.35 + 0.45 * yy, 0.55 + 0.35 * yy, 0.95 - 0.05 * yy], axis=-1)
    clouds = np.clip((fractal_noise(rng, SIZE) - 0.55) * 2.5, 0.0, 1.0)[..., None]
    sky = sky * (1 - 0.7 * clouds) + 0.97 * 0.7 * clouds

    # meadow: green with a grainy texture, darker towards the bottom
    grass_tex = fractal_noise(rng, SIZE, octaves=(8, 16, 32, 64))[..., None]
    grass = np.array([0.25, 0.55, 0.18]) * (0.75 + 0.45 * grass_tex) * (1.15 - 0.35 * yy[..., None])
    horizon = 0.62 + 0.03 * np.sin(2 * np.pi * (xx * 1.3 + 0.2))
    scene = np.where((yy > horizon)[..., None], grass, sky)

    # shapes: drawn as masks at SCALE x resolution, downsampled to antialiased coverage
    big = SIZE * SCALE

    def mask(draw_fn):
        layer = Image.new("L", (big, big), 0)
        draw_fn(ImageDraw.Draw(layer), big)
        small = layer.resize((SIZE, SIZE), Image.Resampling.BOX)
        return (np.asarray(small, np.float32) / 255.0)[..., None]

    def paint(base, coverage, colour):
        return base * (1 - coverage) + coverage * colour

    rock = fractal_noise(rng, SIZE, octaves=(16, 32, 64))[..., None]
    mountain = mask(lambda d, s: d.polygon([(0.08 * s, 0.66 * s), (0.36 * s, 0.22 * s),
                                            (0.66 * s, 0.66 * s)], fill=255))
    scene = paint(scene, mountain, np.array([0.42, 0.38, 0.40]) * (0.8 + 0.4 * rock))
    snow = mask(lambda d, s: d.polygon([(0.296 * s, 0.32 * s), (0.36 * s, 0.22 * s),
                                        (0.424 * s, 0.32 * s)], fill=255))
    scene = paint(scene, snow * mountain, np.array([0.95, 0.96, 0.98]))

    sun = mask(lambda d, s: d.ellipse([0.70 * s, 0.08 * s, 0.90 * s, 0.28 * s], fill=255))
    glow = np.exp(-(((xx - 0.80) ** 2 + (yy - 0.18) ** 2) / 0.012))[..., None]
    scene = paint(scene, 0.35 * glow, np.array([1.0, 0.95, 0.7]))
    scene = paint(scene, sun, np.array([1.0, 0.93, 0.35]))

    brick = 0.85 + 0.3 * fractal_noise(rng, SIZE, octaves=(32, 64))[..., None]
    house = mask(lambda d, s: d.rectangle([0.62 * s, 0.56 * s, 0.86 * s, 0.80 * s], fill=255))
    scene = paint(scene, house, np.array([0.78, 0.20, 0.15]) * brick)
    door = mask(lambda d, s: d.rectangle([0.71 * s, 0.68 * s, 0.77 * s, 0.80 * s], fill=255))
    scene = paint(scene, door, np.array([0.30, 0.18, 0.10]))

    return np.clip(np.round(scene * 255.0), 0, 255).astype(np.uint8)


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    default = os.path.join(here, os.pardir, "kryptonref", "data", "sample.png")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.normpath(default), help="output PNG")
    args = parser.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    Image.fromarray(draw_scene()).save(args.out, format="PNG", optimize=True)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
