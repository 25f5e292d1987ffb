"""Many images: a plain loop over ``kr.occlusion`` against ``kr.explain_many`` on Dask.

What is measured
----------------
Zoo models with seeded random weights (``kryptonref.zoo(name, image_size=S, seed=0)``,
1000 classes, float32): VGG16 at 112 px and ResNet18 at 224 px by default; ``--images N``
generated shapes images (``kryptonref.datasets.shapes``) at the model's size; a 16 x 16
zero patch at ``--stride`` (default 8). Throughput is images per minute.

(a) loop: ``for image in images: kr.occlusion(model, image, ...)`` in this process,
    after one warm-up call (the kernels compiled or loaded from Numba's cache).
(b) explain_many on the default local cluster (``kryptonref.cluster.local_cluster()``:
    one single-threaded worker per core; two on 2 cores):
    cold: one call that starts the cluster, delivers the model, warms each worker
    and writes a new store;
    warm: the cluster started beforehand and warmed by a first run, then a second
    run into a new store (what a long run's steady state costs).
(c) explain_many, warm, on a local cluster of two single-threaded workers (the default
    on 2 cores; until 2026-12-05 the default was one two-threaded worker there).

Overhead of (b) warm against (a): ``(a's images/min) / (b's) - 1`` (target: at most
10 %). Also: the store's write time per image (``kryptonref.store.write_result`` of
one heatmap into a local store, mean over ``--writes`` writes), and the scheduler's
task rate (``client.submit`` of ``--tasks`` no-op tasks on the default cluster,
submit to last result), whose inverse is the per-task scheduling overhead.

Usage
-----
    python benchmarks/many_images.py                        # VGG16 112 px, ResNet18 224 px
    python benchmarks/many_images.py --images 4 --stride 16 # quicker
    python benchmarks/many_images.py --models vgg16 --size 64 --images 2 --stride 16  # smoke
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kryptonref.runtime import prepare_command_process  # noqa: E402
prepare_command_process()  # before NumPy: OpenBLAS reads its thread timeout when it loads
import kryptonref as kr  # noqa: E402
import numpy as np  # noqa: E402
from common import machine_info  # noqa: E402

#: Model -> image size measured by default (the issue's setting).
MODELS = {"vgg16": 112, "resnet18": 224}


def _noop(i):
    return i


def loop(model, images, settings):
    """(a): a plain Python loop; returns seconds."""
    kr.occlusion(model, images[0], **settings)   # warm-up, not timed
    start = time.perf_counter()
    for image in images:
        kr.occlusion(model, image, **settings)
    return time.perf_counter() - start


def many_run(model, images, settings, folder, name, client=None, **kwargs):
    """One explain_many call into a new store; returns (seconds, summary)."""
    store = os.path.join(folder, f"{name}.zarr")
    start = time.perf_counter()
    summary = kr.explain_many(model, images, store, client=client, progress=False,
                              **settings, **kwargs)
    seconds = time.perf_counter() - start
    if summary.done != len(images):
        raise RuntimeError(f"{name}: {summary.failed} images failed: {summary.errors}")
    return seconds, summary


def warm_cluster(model, images, settings, folder, name, **cluster):
    """(b)/(c) warm: a cluster started and warmed beforehand; returns seconds."""
    from kryptonref.cluster import local_cluster
    client = local_cluster(**cluster)
    try:
        many_run(model, images[:max(1, len(client.scheduler_info()["workers"]))], settings,
                 folder, f"{name}-warmup", client=client)
        seconds, _ = many_run(model, images, settings, folder, name, client=client)
    finally:
        cluster_ = client.cluster
        client.close()
        cluster_.close()
    return seconds


def store_write_seconds(model, settings, folder, writes):
    """Mean seconds of writing one image's results into a local store."""
    from kryptonref import store as zstore
    from kryptonref.many import _heatmap_shape
    shape = _heatmap_shape(model, {"patch": (settings["patch"],) * 2,
                                   "stride": (settings["stride"],) * 2})
    identity = {"parameters": {}, "model": "bench", "images": {"count": writes, "digest": "-"}}
    group = zstore.open_run(os.path.join(folder, "writes.zarr"), identity,
                            {"heatmap": shape, "dtype": np.float32, "attribution": None,
                             "input_shape": model.graph.input_shape},
                            [str(i) for i in range(writes)])

    class Result:
        heatmap = np.random.default_rng(0).random(shape).astype(np.float32)
        label, probability, seconds, macs, attribution = 1, 0.5, 1.0, 10, None

    start = time.perf_counter()
    for i in range(writes):
        zstore.write_result(group, i, Result, False)
    return (time.perf_counter() - start) / writes


def task_rate(tasks):
    """No-op tasks per second through the default local cluster's scheduler."""
    from kryptonref.cluster import local_cluster
    client = local_cluster()
    try:
        client.gather(client.map(_noop, range(100)))   # warm the connections
        start = time.perf_counter()
        futures = client.map(_noop, range(tasks), pure=False)
        client.gather(futures)
        return tasks / (time.perf_counter() - start)
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()


def bench_model(name, size, args, folder):
    model = kr.zoo(name, image_size=size, seed=0)
    images = list(kr.datasets.shapes(args.images, image_size=size, seed=1).images)
    settings = dict(patch=16, stride=args.stride)
    n = len(images)
    row = {"model": name, "size": size, "images": n, "stride": args.stride}
    row["loop_s"] = loop(model, images, settings)
    row["cold_s"], _ = many_run(model, images, settings, folder, f"{name}-cold")
    row["warm_default_s"] = warm_cluster(model, images, settings, folder, f"{name}-default")
    row["warm_2x1_s"] = warm_cluster(model, images, settings, folder, f"{name}-2x1",
                                     workers=2, threads=1)
    row["write_ms"] = 1e3 * store_write_seconds(model, settings, folder, args.writes)
    for key in ("loop", "cold", "warm_default", "warm_2x1"):
        row[f"{key}_per_min"] = 60.0 * n / row[f"{key}_s"]
    row["overhead_warm"] = row["warm_default_s"] / row["loop_s"] - 1.0
    row["overhead_cold"] = row["cold_s"] / row["loop_s"] - 1.0
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated zoo models (default {','.join(MODELS)})")
    parser.add_argument("--size", type=int, default=None,
                        help="image size for every model (default: 112 VGG16, 224 ResNet18)")
    parser.add_argument("--images", type=int, default=8, help="images per run (default 8)")
    parser.add_argument("--stride", type=int, default=8, help="occlusion stride (default 8)")
    parser.add_argument("--writes", type=int, default=50, help="store writes timed (50)")
    parser.add_argument("--tasks", type=int, default=2000, help="no-op tasks timed (2000)")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = parser.parse_args(argv)
    machine_info()
    folder = tempfile.mkdtemp(prefix="kr-many-")
    rows = []
    try:
        for name in args.models.split(","):
            size = args.size or MODELS.get(name, 224)
            row = bench_model(name, size, args, folder)
            rows.append(row)
            print(f"\n{name} at {size} px, {row['images']} images, patch 16, stride "
                  f"{row['stride']}:")
            print(f"  (a) loop over kr.occlusion        {row['loop_per_min']:8.2f} images/min "
                  f"({row['loop_s']:.1f} s)")
            print(f"  (b) explain_many, default, cold  {row['cold_per_min']:8.2f} images/min "
                  f"({row['cold_s']:.1f} s; overhead {100 * row['overhead_cold']:+.1f} % vs (a))")
            print(f"  (b) explain_many, default, warm  {row['warm_default_per_min']:8.2f} "
                  f"images/min ({row['warm_default_s']:.1f} s; overhead "
                  f"{100 * row['overhead_warm']:+.1f} % vs (a); target <= 10 %)")
            print(f"  (c) explain_many, 2 x 1 thread   {row['warm_2x1_per_min']:8.2f} images/min "
                  f"({row['warm_2x1_s']:.1f} s; {row['warm_default_s'] / row['warm_2x1_s']:.2f}x "
                  f"the default's throughput)")
            print(f"  store write per image: {row['write_ms']:.2f} ms")
        rate = task_rate(args.tasks)
        print(f"\nscheduler: {rate:.0f} no-op tasks/s on the default local cluster "
              f"({1e3 / rate:.2f} ms per task)")
        if args.json:
            print(json.dumps({"models": rows, "task_rate": rate}, indent=2))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
