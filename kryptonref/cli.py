"""Command-line interface: ``kryptonref demo``."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def synthetic_image(size, seed=0):
    """A deterministic test image: a smooth background with a bright disc and a dark bar."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.stack([0.5 * np.sin(3 * xx + c) * np.cos(2 * yy - c) for c in range(3)])
    cy, cx, r = 0.6 * size, 0.35 * size, 0.15 * size
    disc = ((np.arange(size)[:, None] - cy) ** 2 + (np.arange(size)[None, :] - cx) ** 2) < r * r
    image[:, disc] += np.array([1.5, 0.8, -0.5])[:, None]
    image[:, int(0.2 * size):int(0.3 * size), int(0.5 * size):int(0.9 * size)] -= 1.0
    return image + 0.05 * rng.normal(size=image.shape)


def demo(args):
    """Occlusion on the built-in default: incremental vs full, checked and timed."""
    from . import Model, incremental_inference, patch_positions
    from .models import vgg16_demo_net

    graph = vgg16_demo_net(args.image_size)
    model = Model(graph, seed=args.seed, dtype=np.float32)
    image = synthetic_image(args.image_size, args.seed).astype(np.float32)
    positions = patch_positions(graph.input_shape[1:], args.patch, args.stride)
    print(f"model: VGG-16 conv body + GAP/dense head at {args.image_size} px, seeded weights")
    print(f"occlusion: patch {args.patch}, stride {args.stride}: {len(positions)} positions, "
          f"batches of {args.batch_size}")

    base = model.forward_all(image[None])           # also compiles the kernels
    label = int(np.argmax(base[graph.output][0]))
    incremental_inference(model, image, positions[:2], args.patch, base=base)  # warm-up
    start = time.perf_counter()
    result = incremental_inference(model, image, positions, args.patch, fill=0.0,
                                   batch_size=args.batch_size, base=base)
    t_incremental = time.perf_counter() - start

    start = time.perf_counter()
    full = []
    for first in range(0, len(positions), args.batch_size):
        batch = np.repeat(image[None], len(positions[first:first + args.batch_size]), axis=0)
        for i, (y, x) in enumerate(positions[first:first + args.batch_size]):
            batch[i, :, y:y + args.patch, x:x + args.patch] = 0.0
        full.append(model.forward(batch))
    full = np.concatenate(full)
    t_full = time.perf_counter() - start

    diff = float(np.max(np.abs(full - result.output)))
    full_macs = sum(graph.macs().values()) * len(positions)
    print(f"predicted class {label}, probability {base[graph.output][0, label]:.4f}")
    print(f"full inference:        {t_full:8.2f} s  ({full_macs / 1e9:8.2f} G MACs)")
    print(f"incremental inference: {t_incremental:8.2f} s  ({result.total_macs / 1e9:8.2f} G MACs)")
    print(f"speedup {t_full / t_incremental:.2f}x measured, "
          f"{full_macs / result.total_macs:.2f}x theoretical (MAC ratio)")
    print(f"max |incremental - full| over all positions and classes: {diff:.2e}")
    if diff > 1e-4:
        print("error: incremental and full inference disagree", file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="kryptonref", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="incremental vs full occlusion on a built-in default")
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--stride", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=demo)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as err:
        print(f"kryptonref: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
