"""The CLI's dataset commands: ``kryptonref occlude DIR_OR_GLOB --store results.zarr`` and
``kryptonref show results.zarr`` (:mod:`kryptonref.many`, :mod:`kryptonref.store`)."""
from __future__ import annotations

import json
import os
import sys

import numpy as np

__all__ = ["add_store_arguments", "add_show_parser", "occlude_many", "show"]

#: Exit status of an interrupted run (Ctrl-C), as a shell reports SIGINT.
INTERRUPTED = 130


def add_store_arguments(parser):
    """``occlude``'s options for a dataset run into a Zarr store."""
    group = parser.add_argument_group(
        "many images (extra kryptonref[dask])",
        "with --store, IMAGE may be a folder or a glob; each image is a Dask task and the "
        "results go to a resumable Zarr store")
    group.add_argument("--store", metavar="results.zarr",
                       help="Zarr store (path or URL) for a folder/glob of images; a rerun "
                            "resumes")
    group.add_argument("--scheduler", metavar="ADDRESS",
                       help="a Dask scheduler's address (default: a local cluster)")
    group.add_argument("--workers", type=int, default=None,
                       help="local cluster: worker processes (default cores / threads)")
    group.add_argument("--threads", type=int, default=None,
                       help="Numba/BLAS threads per worker (default 2)")
    group.add_argument("--quality", type=float, default=None, metavar="SSIM",
                       help="target heatmap SSIM: tune tau and drill-down on a sample of "
                            "the images, then explain them all with the choice")
    group.add_argument("--attribution", action="store_true",
                       help="also store Captum's attribution (N, C, H, W)")


def add_show_parser(sub):
    """The ``show`` command."""
    p = sub.add_parser("show", help="summary of a results store, or one image's heatmap")
    p.add_argument("store", help="a Zarr store written by occlude --store")
    p.add_argument("--index", type=int, default=None, help="an image's index")
    p.add_argument("--out", metavar="overlay.png",
                   help="write the heatmap (over its image when the image is reachable)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=show)
    return p


def _images_argument(args):
    value = getattr(args, "images", None) or getattr(args, "image", None)
    if isinstance(value, (list, tuple)):
        return value[0] if len(value) == 1 else list(value)
    return value


def occlude_many(args):
    """``kryptonref occlude DIR_OR_GLOB --store results.zarr``: every image, on Dask."""
    from .cli import _load_cli_model, _show_progress
    from .many import explain_many
    from .store import store_info

    for flag, value in (("--out", args.out), ("--save", args.save),
                        ("--target", args.target)):
        if value is not None:
            raise ValueError(f"{flag} goes with one image; with --store, read results with "
                             f"`kryptonref show`")
    if args.scheduler and args.workers is not None:
        raise ValueError("give --scheduler ADDRESS or --workers N, not both")
    if args.mode != "approximate" and (args.tau != 1.0 or args.drilldown):
        raise ValueError("--tau and --drilldown need --mode approximate")
    drilldown = None
    if args.drilldown:
        drilldown = {"r_drill": args.r_drill, "target_speedup": args.target_speedup}
        if args.coarse_stride is not None:
            drilldown["coarse_stride"] = args.coarse_stride
    model, model_name = _load_cli_model(args)
    mode = "exact" if args.mode == "incremental" else args.mode
    try:
        summary = explain_many(
            model, _images_argument(args), args.store, patch=args.patch, stride=args.stride,
            fill=args.fill, mode=mode, tau=args.tau, drilldown=drilldown, quality=args.quality,
            device=args.device, client=args.scheduler, workers=args.workers,
            threads=args.threads, batch_size=args.batch_size,
            progress=_show_progress(args.progress), attribution=args.attribution)
    except KeyboardInterrupt:
        try:
            info = store_info(args.store)
            print(f"interrupted: {info.done} of {info.total} complete, rerun to resume",
                  file=sys.stderr)
        except (OSError, ValueError, ImportError):
            print("interrupted; rerun to resume", file=sys.stderr)
        return INTERRUPTED
    except OSError as err:
        print(f"kryptonref: error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(dict(summary.to_dict(), model=model_name), indent=2))
    else:
        print(f"{model_name}: {summary.total} images: {summary.done} explained, "
              f"{summary.skipped} already done, {summary.failed} failed "
              f"({summary.seconds:.1f} s) -> {summary.store}")
        if summary.quality is not None:
            choice = summary.quality["choice"]
            print(f"quality {summary.quality['target']}: {choice['mode']}"
                  + (f" (tau {choice['tau']:g}, coarse stride {choice['coarse_stride']}, "
                     f"r_drill {choice['r_drill']:g})" if choice["mode"] == "approximate"
                     else "")
                  + f", held-out SSIM {summary.quality['held_out_ssim']}")
        for index, error in sorted(summary.errors.items())[:10]:
            print(f"  failed {index}: {error}", file=sys.stderr)
    return 1 if summary.failed else 0


def show(args):
    """``kryptonref show results.zarr [--index I] [--out overlay.png]``."""
    from .store import load_result, store_info

    try:
        info = store_info(args.store)
        if args.index is None and args.out is None:
            if args.json:
                print(json.dumps(dict(info), indent=2, default=str))
                return 0
            print(f"{args.store}: {info.total} images: {info.done} done, {info.failed} failed, "
                  f"{info.pending} pending (kryptonref {info.version})")
            print(f"parameters: {json.dumps(info.parameters)}")
            if info.quality:
                print(f"quality: {json.dumps(info.quality)}")
            for index, error in sorted(info.errors.items())[:10]:
                print(f"  failed {index}: {error}")
            return 0
        index = 0 if args.index is None else args.index
        result = load_result(args.store, index)
        if args.json or args.out is None:
            summary = {k: v for k, v in result.items() if k not in ("heatmap", "attribution")}
            if args.json:
                print(json.dumps(summary, indent=2))
            else:
                print(" ".join(f"{k}={v}" for k, v in summary.items() if k != "parameters"))
        if args.out is None:
            return 0
        if result["status"] != "done":
            raise ValueError(f"image {result['index']} is {result['status']}"
                             + (f": {result['error']}" if result["error"] else ""))
        where = _draw(result, args.out)
    except OSError as err:
        print(f"kryptonref: error: {err}", file=sys.stderr)
        return 1
    if not args.json:
        print(f"{where} written to {args.out}")
    return 0


def _draw(result, out):
    """Write the overlay (image reachable) or the heatmap alone; returns which."""
    params = result["parameters"]
    patch, stride = tuple(params["patch"]), tuple(params["stride"])
    title = (f"image {result['index']}: class {result['label']} "
             f"(p = {result['probability']:.3f})")
    path = result["image"]
    if os.path.isfile(path) and path.lower().endswith((".png", ".jpg", ".jpeg")):
        try:
            from .analysis.plots import save_overlay
            from .images import load_image, to_display
            image = to_display(load_image(path, size=tuple(result["input_shape"][1:])))
            save_overlay(image, result["heatmap"], out, patch, stride, title=title,
                         score=float(result["probability"]),
                         score_name=f"probability of class {result['label']}")
            return "overlay"
        except ValueError:
            pass
    from .cli import _pyplot, _write_plot
    plt = _pyplot()

    def draw(target, fmt):
        fig, ax = plt.subplots(figsize=(5, 4.5))
        drop = float(result["probability"]) - np.asarray(result["heatmap"], np.float64)
        shown = ax.imshow(drop, cmap="inferno", vmin=min(0.0, float(np.nanmin(drop))))
        ax.set_title(f"{title}\ndrop {np.nanmin(drop):.3g} to {np.nanmax(drop):.3g}")
        fig.colorbar(shown, ax=ax, label=f"drop in the probability of class "
                                         f"{result['label']} when covered")
        fig.savefig(target, dpi=120, bbox_inches="tight", format=fmt)

    _write_plot(out, draw)        # (in the format of its extension; whole or not at all)
    return "heatmap"
