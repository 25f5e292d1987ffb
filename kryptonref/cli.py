"""Command-line interface: ``kryptonref demo | models | analyze | occlude | show | tune``."""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from .backends import DEVICES
from .images import IMAGENET_MEAN, IMAGENET_STD


#: The demo's image: this sample of ``kryptonref.datasets.shapes`` (seed, index).
DEMO_SAMPLE = (2026, 7)
#: Seed of the generated images ``kryptonref tune --images demo`` uses.
TUNE_SEED = 4242


def demo(args):
    """Occlusion on the embedded default: the shipped demo model and a generated image.

    Runs exact incremental and full occlusion, checks that they agree, prints both
    times with the measured speedup next to the simulator's, and writes the overlay.
    """
    from . import datasets
    from .analysis import speedup
    from .explain import occlusion
    from .analysis.localisation import energy_in_box, pointing_game
    from .models.zoo import zoo
    from .explain import DEFAULT_BATCH

    model = zoo(args.model, weights="pretrained")
    seed, index = DEMO_SAMPLE
    sample = datasets.shapes(1, image_size=model.graph.input_shape[1], seed=seed, start=index)
    image, box = sample.images[0], tuple(int(v) for v in sample.boxes[0])
    truth = sample.class_names[int(sample.labels[0])]
    print(f"model: {args.model} (shipped weights), image: generated sample {index} of seed "
          f"{seed}, a {truth} in box {box}")

    # Compile (or load from Numba's cache) every kernel both timed runs use: several
    # positions per batch, as they will have, and a full-mode batch.
    warm = dict(patch=args.patch, stride=max(args.patch, image.shape[1] // 4),
                batch_size=args.batch_size, device=args.device)
    _compile_notice()
    occlusion(model, image, **warm)
    occlusion(model, image, mode="full", **warm)
    exact = occlusion(model, image, patch=args.patch, stride=args.stride,
                      batch_size=args.batch_size, progress=_show_progress(None),
                      device=args.device)
    full = occlusion(model, image, patch=args.patch, stride=args.stride, mode="full",
                     batch_size=args.batch_size, progress=_show_progress(None),
                     device=args.device)
    diff = float(np.max(np.abs(exact.heatmap - full.heatmap)))
    batches = {mode: DEFAULT_BATCH[mode] if args.batch_size is None else args.batch_size
               for mode in ("incremental", "full")}
    theory = speedup(model, args.patch, args.stride, mode="executed",
                     batch_size=batches["incremental"])
    predicted = sample.class_names[exact.label]
    print(f"prediction: {predicted} (class {exact.label}), probability {exact.probability:.4f}")
    print(f"occlusion: patch {args.patch}, stride {args.stride}, {len(exact.positions)} positions, "
          f"batches of {batches['incremental']} (incremental) and {batches['full']} (full), "
          f"device {args.device}")
    print(f"full re-inference:     {full.seconds:7.2f} s  {full.macs / 1e9:8.2f} G MACs")
    print(f"incremental inference: {exact.seconds:7.2f} s  {exact.macs / 1e9:8.2f} G MACs")
    print(f"speedup: {full.seconds / exact.seconds:.2f}x measured, {theory.speedup:.2f}x "
          f"theoretical (simulator, executed regions; {full.macs / exact.macs:.2f}x in MACs "
          f"performed)")
    ort_seconds = _onnxruntime_seconds(model, image, exact.positions, exact.patch,
                                       batches["full"])
    if ort_seconds is not None:
        print(f"onnxruntime full re-inference: {ort_seconds:7.2f} s  (the same positions "
              f"and batches; kryptonref's own full re-inference above is slower)")
        print(f"incremental inference is {ort_seconds / exact.seconds:.2f}x vs onnxruntime")
    print(f"max |incremental - full| over the heatmap: {diff:.2e}")
    inside = pointing_game(exact.heatmap, box, args.patch, args.stride)
    energy = energy_in_box(exact.heatmap, box, args.patch, args.stride, exact.probability)
    print(f"most sensitive patch {'inside' if inside else 'OUTSIDE'} the object's box; "
          f"{100 * energy:.0f}% of the probability drop inside it")
    if diff > 1e-4:
        print("error: incremental and full occlusion disagree", file=sys.stderr)
        return 1
    if args.out:
        from .analysis.plots import save_overlay
        try:
            save_overlay(sample.pixels()[0], exact.heatmap, args.out, args.patch, args.stride,
                         title=f"{args.model}: {predicted} (p = {exact.probability:.3f})",
                         score=exact.probability, score_name=f"probability of {predicted}")
        except ImportError as err:
            print(f"overlay not written: {err}")
        else:
            print(f"overlay written to {args.out}")
    return 0


def _onnxruntime_seconds(model, image, positions, patch, batch_size, fill=0.0):
    """Seconds onnxruntime takes for full re-inference of every occluded image (after a
    warm-up batch), or None without onnx and onnxruntime: the demo's fair baseline."""
    import time
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        return None
    from .models.onnx_export import to_onnx
    session = onnxruntime.InferenceSession(to_onnx(model).SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    height, width = patch

    def occluded(start):
        chunk = positions[start:start + batch_size]
        batch = np.repeat(image[None], len(chunk), axis=0)
        for occluded_image, (y, x) in zip(batch, chunk):
            occluded_image[:, y:y + height, x:x + width] = fill
        return batch
    session.run(None, {name: occluded(0)})
    begin = time.perf_counter()
    for start in range(0, len(positions), batch_size):
        session.run(None, {name: occluded(start)})
    return time.perf_counter() - begin


#: Batch-norm statistics are buffers, not learned parameters (torchvision does not count them).
_BUFFERS = ("running_mean", "running_var")


def _parameter_count(graph):
    """Learned parameters of a graph, counted as torchvision counts ``num_params``."""
    total = 0
    for name in graph.order:
        node = graph.nodes[name]
        shapes = node.layer.param_shapes([graph.shapes[i] for i in node.inputs])
        total += sum(int(np.prod(shape)) for key, shape in shapes.items() if key not in _BUFFERS)
    return total


def models(args):
    """List the zoo: name, input size, parameters, full MACs."""
    from .models.zoo import build_graph, zoo_entry, zoo_names

    rows = []
    for name in zoo_names():
        graph = build_graph(name)
        rows.append({"name": name, "image_size": zoo_entry(name).default_size,
                     "parameters": _parameter_count(graph),
                     "full_macs": int(sum(graph.macs().values())),
                     "description": zoo_entry(name).description})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max([len("model")] + [len(r["name"]) for r in rows])
    print(f"{'model':<{width}} {'input':>7} {'parameters':>12} {'full MACs':>12}  description")
    for r in rows:
        print(f"{r['name']:<{width}} {r['image_size']:>4} px {r['parameters'] / 1e6:10.2f} M "
              f"{r['full_macs'] / 1e6:10.1f} M  {r['description']}")
    return 0


def _pair_arg(text):
    """``16`` or ``16x8`` / ``16,8`` -> int or (int, int)."""
    parts = text.replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return tuple(values)
    raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}")


def _taus_arg(text):
    """``0.7`` or ``1,0.8,0.6`` -> a tuple of floats (checked by the tuner)."""
    try:
        return tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected T or T,T,..., got {text!r}") from None


def analyze(args):
    """Theoretical speedup of one zoo model (or, with --all, of the whole zoo)."""
    from .analysis import speedup
    from .models.zoo import build_graph, zoo_names

    if args.all:
        if args.model:
            raise ValueError("give a model name or --all, not both")
        if args.drilldown:
            raise ValueError("--drilldown predicts for one model, not with --all")
        reports = [speedup(build_graph(name, args.image_size), args.patch, args.stride,
                           tau=args.tau, mode=args.mode, batch_size=args.batch_size, name=name,
                           freeze_context=args.freeze_context)
                   for name in zoo_names()]
        if args.plot:
            _write_plot(args.plot, lambda path, fmt: _plot_zoo(reports, path, fmt))
        if args.json:
            print(json.dumps([r.to_dict() for r in reports], indent=2))
        else:
            print(_zoo_table(reports))
        return 0
    if not args.model:
        raise ValueError("give a model name (see `kryptonref models`) or --all")
    graph = _onnx_or_zoo(args.model, args.image_size, args.input_shape).graph \
        if _is_onnx(args.model) else build_graph(args.model, args.image_size)
    report = speedup(graph, args.patch, args.stride, tau=args.tau, mode=args.mode,
                     batch_size=args.batch_size, name=os.path.basename(args.model),
                     freeze_context=args.freeze_context)
    drill = _drilldown_prediction(args, graph, report) if args.drilldown else None
    if args.plot:
        _write_plot(args.plot, lambda path, fmt: _plot_map(report, path, fmt))
    if args.json:
        print(json.dumps(dict(report.to_dict(), **({"drilldown": drill} if drill else {})),
                         indent=2))
    else:
        print(report.table())
        if drill:
            print(f"drill-down: coarse stride {drill['coarse_stride'][0]}x"
                  f"{drill['coarse_stride'][1]}, r_drill {drill['r_drill']:g}: "
                  f"{drill['speedup']:.2f}x predicted over the fine grid; with tau "
                  f"{report.tau:g}: {drill['combined']:.2f}x over full re-inference")
    return 0


def _is_onnx(name):
    """Whether a model argument names an ONNX file rather than a zoo model."""
    return name.lower().endswith(".onnx") or os.path.isfile(name)


def _onnx_or_zoo(name, image_size=None, input_shape=None, weights=None):
    """A model from an ``.onnx`` path (``--input-shape`` for dynamic sizes) or the zoo."""
    if _is_onnx(name):
        if image_size is not None:
            raise ValueError("--image-size goes with zoo models; give an ONNX model's size "
                             "with --input-shape C,H,W")
        from . import from_onnx
        return from_onnx(name, input_shape=input_shape)
    from .models.zoo import zoo
    return zoo(name, image_size=image_size, weights=weights)


def _shape_arg(text):
    """``3,224,224`` -> (3, 224, 224)."""
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W, got {text!r}") from None
    if len(shape) != 3:
        raise argparse.ArgumentTypeError(f"expected C,H,W, got {text!r}")
    return shape


def _drilldown_prediction(args, graph, report):
    """Drill-down's predicted speedup, alone and times the incremental one."""
    from .analysis import drilldown_speedup
    from .drilldown import choose_coarse_stride

    fine = _pair(args.stride)
    coarse = choose_coarse_stride(fine, graph.input_shape[1:], _pair(args.patch), args.r_drill,
                                  args.target_speedup,
                                  None if args.coarse_stride is None else _pair(args.coarse_stride))
    factor = drilldown_speedup(coarse, fine, args.r_drill)
    return {"coarse_stride": list(coarse), "r_drill": args.r_drill, "speedup": factor,
            "combined": factor * report.speedup}


def _zoo_table(reports):
    first = reports[0]
    width = max([len("model")] + [len(r.model) for r in reports])   # names line up
    lines = [f"theoretical speedup (MACs), patch {first.patch[0]}x{first.patch[1]}, stride "
             f"{first.stride[0]}x{first.stride[1]}, tau {first.tau:g}, mode {first.mode}",
             f"{'model':<{width}} {'input':>7} {'positions':>9} {'full GMACs':>11} "
             f"{'aggregate':>9} {'centre':>7} {'min':>6} {'max':>6}"]
    for r in reports:
        lines.append(f"{r.model:<{width}} {r.image_size[0]:>4} px {r.positions:>9} "
                     f"{r.full_macs / r.positions / 1e9:11.3f} {r.speedup:9.2f} "
                     f"{r.centre_speedup:7.2f} {r.min_speedup:6.2f} {r.max_speedup:6.2f}")
    return "\n".join(lines)


def _pyplot(option="--plot"):
    try:
        import matplotlib
    except ImportError:
        raise ValueError(f"{option} needs matplotlib: pip install 'kryptonref[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _write_plot(path, draw):
    """Draw a figure to ``path`` atomically, in the format its extension names: no partial
    file is left on an error."""
    from .files import figure_format
    plt = _pyplot()
    fmt = figure_format(path)
    try:
        _write_atomically(path, lambda tmp: draw(tmp, fmt), None)
    finally:
        plt.close("all")


def _plot_map(report, path, fmt="png"):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(report.speedup_map, cmap="viridis")
    ax.set_title(f"{report.model}: theoretical speedup per patch position\n"
                 f"patch {report.patch[0]}, stride {report.stride[0]}, aggregate "
                 f"{report.speedup:.2f}x")
    ax.set_xlabel("position x")
    ax.set_ylabel("position y")
    fig.colorbar(image, ax=ax, label="speedup (MACs)")
    fig.savefig(path, dpi=120, bbox_inches="tight", format=fmt)


def _plot_zoo(reports, path, fmt="png"):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 4))
    where = np.arange(len(reports))
    ax.bar(where - 0.2, [r.speedup for r in reports], 0.4, label="aggregate (all positions)")
    ax.bar(where + 0.2, [r.centre_speedup for r in reports], 0.4, label="centre position")
    ax.set_xticks(where, [r.model for r in reports], rotation=60, ha="right")
    ax.set_ylabel("theoretical speedup (MACs)")
    ax.set_title(f"Incremental inference, patch {reports[0].patch[0]}, stride "
                 f"{reports[0].stride[0]}, tau {reports[0].tau:g} (paper Figure 6)")
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight", format=fmt)


def _fill_arg(text):
    """``0``, ``0.5``, ``mean`` or per-channel ``0.1,0.2,0.3``."""
    if text == "mean":
        return text
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, 'mean' or per-channel values "
                                         f"a,b,c; got {text!r}") from None
    return values[0] if len(values) == 1 else np.array(values)


def _load_cli_model(args):
    from .models.zoo import zoo

    if args.onnx:
        if args.model or args.weights:
            raise ValueError("give either --model [--weights] or --onnx, not both")
        from . import from_onnx
        return from_onnx(args.onnx), os.path.basename(args.onnx)
    if not args.model:
        raise ValueError("give a model: --model NAME (see `kryptonref models`) or --onnx PATH")
    return zoo(args.model, image_size=args.image_size, num_classes=args.num_classes,
               weights=args.weights, seed=args.seed), args.model


def _show_progress(requested):
    if requested is not None:
        return requested
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return sys.stderr.isatty()


def _channel_values(text):
    """``--mean``/``--std``: ``none``, one number, or three per-channel ``r,g,b``."""
    if text.lower() == "none":
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError(f"expected 'none', one value or three (r,g,b), "
                                         f"got {text!r}")
    if not all(np.isfinite(values)):
        raise argparse.ArgumentTypeError(f"expected finite values, got {text!r}")
    return values[0] if len(values) == 1 else values


def _std_values(text):
    values = _channel_values(text)
    if values is not None and min(np.atleast_1d(values)) <= 0:
        raise argparse.ArgumentTypeError(f"std must be positive, got {text!r}")
    return values


def _read_labels(path, model):
    """Class names, one per line (blank lines ignored), as many as the model has classes."""
    with open(path, encoding="utf-8") as file:
        names = [line.strip() for line in file if line.strip()]
    classes = int(np.prod(model.graph.shapes[model.graph.output]))
    if len(names) != classes:
        raise ValueError(f"--labels {path}: {len(names)} names for a model with "
                         f"{classes} classes")
    return names


def _class_name(label, labels):
    return f"class {label}" if labels is None else f"{labels[label]} (class {label})"


def _warn_random_weights(args):
    """A zoo model without --weights has seeded random weights: say so before its
    prediction is taken for one."""
    if args.model and not args.onnx and args.weights is None:
        print(f"kryptonref: warning: --model {args.model} has random weights (seed "
              f"{args.seed}); its prediction and heatmap are meaningless. Give --weights "
              f"FILE.npz (or 'pretrained' for the demo models).", file=sys.stderr)


def _compile_notice():
    """One line on stderr when Numba has to compile the kernels (the first run after an
    install, or every run without a disk cache): it takes tens of seconds, silently."""
    from . import _numba
    from .layers import conv, pool
    if not _numba.kernels_cold([conv._im2col_batched, conv._unpack_gemm, pool._max_pool]):
        return
    later = ("later runs load them from Numba's cache" if _numba.KERNEL["cache"] else
             "no writable cache folder, so every run compiles; set NUMBA_CACHE_DIR")
    print(f"kryptonref: compiling kernels (tens of seconds; {later})", file=sys.stderr)


def occlude(args):
    """Occlusion heatmaps of image files (with --store: of many, :mod:`.cli_store`)."""
    if args.store:
        ignored = [flag for flag, given in (("--mean", args.mean != IMAGENET_MEAN),
                                            ("--std", args.std != IMAGENET_STD),
                                            ("--labels", args.labels)) if given]
        if ignored:
            raise ValueError(f"{', '.join(ignored)} cannot go with --store yet (its images "
                             f"are normalised the ImageNet way)")
        from .cli_store import occlude_many
        return occlude_many(args)
    from . import explain
    from .images import load_image

    paths = args.image if isinstance(args.image, list) else [args.image]
    model, model_name = _load_cli_model(args)
    labels = _read_labels(args.labels, model) if args.labels else None
    if args.out:
        _pyplot("--out")                  # before the computation, not after it
    _, height, width = model.graph.input_shape
    images = [load_image(path, size=(height, width), mean=args.mean, std=args.std)
              for path in paths]
    outs, saves = _occlude_outputs(paths, args.out, ".png"), _occlude_outputs(paths, args.save,
                                                                              ".npy")
    approximate = {}
    if args.mode == "approximate":
        approximate = dict(tau=args.tau, drilldown=args.drilldown, r_drill=args.r_drill,
                           target_speedup=args.target_speedup, coarse_stride=args.coarse_stride)
    elif args.tau is not None and args.tau != 1.0 or args.drilldown:
        raise ValueError("--tau and --drilldown need --mode approximate")
    if args.coarse_stride is not None and not args.drilldown:
        raise ValueError("--coarse-stride needs --drilldown")
    _warn_random_weights(args)            # after every check of the user's input
    _compile_notice()
    batch = np.stack([image.astype(model.dtype) for image in images])
    result = explain.occlusion(model, batch, patch=args.patch, stride=args.stride,
                               fill=args.fill, target=args.target, mode=args.mode,
                               batch_size=args.batch_size,
                               progress=_show_progress(args.progress),
                               device=args.device, **approximate)
    summaries = []
    for i, path in enumerate(paths):
        one = _one_result(result, i)
        class_name = _class_name(one.label, labels)
        _write_occlusion(one, images[i], args, model_name, class_name, outs[i], saves[i])
        summary = one.to_dict()
        if labels is not None:
            summary["class_name"] = labels[one.label]
        summary["model"] = model_name
        summary["device"] = args.device
        if len(paths) > 1:
            summary["image"] = path
        summaries.append(summary)
        if not args.json:
            _print_occlusion(one, model_name, class_name, outs[i], saves[i],
                             path if len(paths) > 1 else None)
    if args.json:
        print(json.dumps(summaries[0] if len(paths) == 1 else
                         {"model": model_name, "images": summaries}, indent=2))
    return 0


def _occlude_outputs(paths, target, suffix):
    """Where ``occlude`` writes each image's file (``--out``/``--save``), checked before
    computing: for several images ``target`` is an existing folder and each image gets
    ``<stem><suffix>`` there; no output may be an input image or another image's output."""
    from .files import check_writable, figure_format

    if not target:
        return [None] * len(paths)
    if len(paths) == 1:
        outputs = [target]
    else:
        if not os.path.isdir(target):
            flag = "--out" if suffix == ".png" else "--save"
            raise ValueError(f"with several images, {flag} must be an existing folder, got "
                             f"{target!r}")
        outputs = [os.path.join(target, os.path.splitext(os.path.basename(p))[0] + suffix)
                   for p in paths]
    inputs = {os.path.realpath(p): p for p in paths}
    seen = {}
    for path, output in zip(paths, outputs):
        real = check_writable(output)
        if suffix == ".png":
            figure_format(output)
        if real in inputs:
            raise ValueError(f"refusing to overwrite the input image {inputs[real]!r} with "
                             f"{'an overlay' if suffix == '.png' else 'a heatmap'}")
        if real in seen:
            raise ValueError(f"{seen[real]!r} and {path!r} would both be written to "
                             f"{output!r}; give the images different names")
        seen[real] = path
    return outputs


def _one_result(result, index):
    """Image ``index`` of a batched :class:`~kryptonref.explain.OcclusionResult`."""
    import dataclasses
    fields = {name: getattr(result, name)[index]
              for name in ("heatmap", "label", "probability", "attribution", "seconds", "macs",
                           "computed") if getattr(result, name) is not None}
    for name, kind in (("label", int), ("probability", float), ("seconds", float),
                       ("macs", int)):
        fields[name] = kind(fields[name])
    return dataclasses.replace(result, batched=False, **fields)


def _write_occlusion(result, image, args, model_name, class_name, out, save):
    from .images import to_display
    if save:
        _write_atomically(save, lambda path: np.save(path, result.heatmap), ".npy")
    if out:
        from .analysis.plots import save_overlay
        title = (f"{model_name}: {class_name} (p = {result.probability:.3f}), "
                 f"patch {result.patch[0]}, stride {result.stride[0]}")
        save_overlay(to_display(image, mean=args.mean, std=args.std), result.heatmap,
                     out, result.patch, result.stride, title=title,
                     score=result.probability, score_name=f"probability of {class_name}")


def _print_occlusion(result, model_name, class_name, out, save, image_path=None):
    where = f"{image_path}: " if image_path else ""
    print(f"{where}{model_name}: {class_name}, probability {result.probability:.4f}")
    print(f"{len(result.positions)} positions ({result.heatmap.shape[0]} x "
          f"{result.heatmap.shape[1]}), mode {result.mode}: {result.seconds:.2f} s, "
          f"{result.macs / 1e9:.2f} G MACs")
    low = np.unravel_index(np.argmin(result.heatmap), result.heatmap.shape)
    print(f"largest drop at position {tuple(int(v) for v in result.positions[np.argmin(result.heatmap)])}"
          f" (cell {tuple(int(v) for v in low)}): probability {result.heatmap.min():.4f}")
    for label, path in (("heatmap", save), ("overlay", out)):
        if path:
            print(f"{label} written to {path}")


def _tune_images(source, count, model):
    """``count`` images for tuning: generated shapes ('demo') or a folder's PNG/JPEG files."""
    _, height, width = model.graph.input_shape
    if source == "demo":
        from . import datasets
        return list(datasets.shapes(count, image_size=height, seed=TUNE_SEED).images)
    if not os.path.isdir(source):
        raise FileNotFoundError(f"--images: {source!r} is neither a folder nor 'demo'")
    from .images import load_image
    names = sorted(n for n in os.listdir(source)
                   if n.lower().endswith((".png", ".jpg", ".jpeg")))[:count]
    if not names:
        raise ValueError(f"--images: no PNG or JPEG files in {source!r}")
    return [load_image(os.path.join(source, n), size=(height, width)).astype(model.dtype)
            for n in names]


def tune(args):
    """Tune tau (the paper's quadratic fit) or drill-down on sample images for a target SSIM."""
    from .tuning import tune_tau

    if args.count < 1:
        raise ValueError(f"--count must be positive, got {args.count}")
    weights = args.weights
    if weights is None and args.model.startswith("demo_"):
        weights = "pretrained"
    if _is_onnx(args.model) and weights is not None:
        raise ValueError("--weights goes with zoo models; an ONNX file holds its weights")
    model = _onnx_or_zoo(args.model, input_shape=args.input_shape, weights=weights)
    images = _tune_images(args.images, args.count, model)
    _compile_notice()
    if args.drilldown:
        return _tune_drilldown(args, model, images)
    if args.tau is not None:
        raise ValueError("--tau goes with --drilldown (tune without it chooses tau)")
    tuned = tune_tau(model, images, target_ssim=args.target_ssim, patch=args.patch,
                     stride=args.stride, batch_size=args.batch_size, device=args.device,
                     progress=_show_progress(args.progress),
                     freeze_context=args.freeze_context)
    summary = dict(tuned.to_dict(), model=args.model, images=args.images,
                   patch=list(_pair(args.patch)), stride=list(_pair(args.stride)))
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{args.model}: tau on {tuned.n_fit} images, patch {args.patch}, stride {args.stride}")
    print("  tau    mean SSIM   fitted")
    for tau, value in zip(tuned.grid, tuned.mean_ssim):
        print(f"  {tau:4.2f}   {value:8.4f}   {float(tuned.fitted(tau)):7.4f}")
    verdict = "" if tuned.reached else " (the fit does not reach the target below 1: exact)"
    print(f"tau = {tuned.tau:.3f} for SSIM >= {tuned.target_ssim}{verdict}")
    if tuned.held_out_ssim is not None:
        print(f"held-out check on {tuned.n_held_out} images: mean SSIM {tuned.held_out_ssim:.4f}")
    return 0


def _tune_drilldown(args, model, images):
    """``kryptonref tune --drilldown``: coarse stride, r_drill (and tau) for the target SSIM."""
    from .tuning import tune_drilldown

    taus = (1.0,) if args.tau is None else args.tau
    tuned = tune_drilldown(model, images, target_ssim=args.target_ssim, patch=args.patch,
                           stride=args.stride, tau=taus, batch_size=args.batch_size,
                           device=args.device, progress=_show_progress(args.progress),
                           freeze_context=args.freeze_context)
    if args.json:
        print(json.dumps(dict(tuned.to_dict(), model=args.model, images=args.images,
                              patch=list(_pair(args.patch)), stride=list(_pair(args.stride))),
                         indent=2))
        return 0
    print(f"{args.model}: drill-down on {tuned.n_fit} images, patch {args.patch}, "
          f"stride {args.stride}, tau "
          f"{', '.join(f'{t:g}' for t in sorted({row['tau'] for row in tuned.table}, reverse=True))}")
    print("    tau  S1/S2  r_drill  mean SSIM  lower 95%  min SSIM  cells ratio  predicted")
    for row in sorted(tuned.table, key=lambda row: -row["predicted_speedup"]):
        print(f"  {row['tau']:>5g}  {row['steps']:5d}  {row['r_drill']:7.2f}  "
              f"{row['mean_ssim']:9.4f}  {row['lower_ssim']:9.4f}  {row['min_ssim']:8.4f}  "
              f"{row['speedup']:10.2f}x  {row['predicted_speedup']:8.2f}x")
    print("(cells ratio: heatmap cells / cells occluded; predicted: that times tau's MAC "
          "saving, over exact incremental inference)")
    verdict = "" if tuned.reached else " (no setting reaches the target: the best SSIM)"
    print(f"tau {tuned.tau:g}, coarse stride {tuned.coarse_stride}, r_drill {tuned.r_drill} for "
          f"SSIM >= {tuned.target_ssim} (95% lower bound {tuned.lower_ssim:.4f}, mean "
          f"{tuned.mean_ssim:.4f}): {tuned.speedup:.2f}x fewer positions, "
          f"{tuned.predicted_speedup:.2f}x predicted{verdict}")
    if tuned.held_out_ssim is not None:
        print(f"held-out check on {tuned.n_held_out} images: mean SSIM {tuned.held_out_ssim:.4f}")
    return 0


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _write_atomically(path, write, suffix):
    """Write ``path`` whole or not at all (:func:`kryptonref.files.atomic_write`)."""
    from .files import atomic_write
    atomic_write(path, write, suffix)


def _add_drilldown_arguments(parser, help_drilldown):
    """``--drilldown`` and its parameters (shared by ``analyze`` and ``occlude``)."""
    parser.add_argument("--drilldown", action="store_true", help=help_drilldown)
    parser.add_argument("--r-drill", type=float, default=0.25,
                        help="drill-down: fraction of coarse cells refined, in (0, 1) (0.25)")
    parser.add_argument("--target-speedup", type=float, default=3.0,
                        help="drill-down: predicted speedup that sets the coarse stride (3)")
    parser.add_argument("--coarse-stride", type=_pair_arg, default=None,
                        help="drill-down: explicit coarse stride, a multiple of --stride")


def main(argv=None):
    from . import __version__
    parser = argparse.ArgumentParser(
        prog="kryptonref",
        description="Occlusion explanations of CNNs with KRYPTON's incremental inference "
                    "(Nakandala & Kumar): heatmaps, speedup analysis, tuning and whole "
                    "datasets. 'kryptonref COMMAND --help' describes each command.")
    parser.add_argument("--version", action="version", version=f"kryptonref {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("demo", help="incremental vs full occlusion on the embedded default")
    p.add_argument("--model", default="demo_vgg", choices=("demo_vgg", "demo_resnet", "demo_effnet"),
                   help="a shipped demo model (default demo_vgg)")
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--stride", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=None,
                   help="positions per batch (default: 64 incremental, 16 full)")
    p.add_argument("--out", default="kryptonref-demo.png", metavar="FILE.png",
                   help="overlay PNG (default kryptonref-demo.png; '' to skip)")
    p.add_argument("--device", choices=DEVICES, default="cpu",
                   help="where to compute (cuda: numba-cuda on a GPU, extra kryptonref[cuda])")
    p.set_defaults(func=demo)

    p = sub.add_parser("models", help="list the zoo: input size, parameters, full MACs")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=models)

    p = sub.add_parser("analyze", help="theoretical speedup per layer and patch position")
    p.add_argument("model", nargs="?",
                   help="a zoo model (see `kryptonref models`) or an .onnx file")
    p.add_argument("--all", action="store_true", help="every zoo model (paper Figure 6)")
    p.add_argument("--patch", type=_pair_arg, default=16, help="N or HxW (default 16)")
    p.add_argument("--stride", type=_pair_arg, default=4, help="N or HxW (default 4)")
    p.add_argument("--image-size", type=int, default=None,
                   help="input size (default: the model's own)")
    p.add_argument("--tau", type=float, default=1.0, help="projective-field threshold (0, 1]")
    p.add_argument("--input-shape", type=_shape_arg, default=None, metavar="C,H,W",
                   help="an ONNX model's input size where it is dynamic")
    p.add_argument("--freeze-context", action="store_true",
                   help="count squeeze-excitation gates frozen at their unoccluded value "
                        "(the global-context approximation)")
    _add_drilldown_arguments(p, "also predict adaptive drill-down's speedup (one model)")
    p.add_argument("--mode", choices=("paper", "executed"), default="paper")
    p.add_argument("--batch-size", type=int, default=64,
                   help="positions per batch in executed mode (default 64)")
    p.add_argument("--plot", metavar="FILE.png", help="write the speedup map (or bar chart)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=analyze)

    p = sub.add_parser("occlude", help="occlusion heatmaps of images (PNG/JPEG)")
    p.add_argument("image", nargs="+",
                   help="PNG or JPEG file(s); with several, --out and --save name folders")
    p.add_argument("--model", help="a zoo model (see `kryptonref models`)")
    p.add_argument("--weights", help="weights .npz for --model, or 'pretrained'")
    p.add_argument("--onnx", metavar="PATH", help="an ONNX model instead of --model")
    p.add_argument("--image-size", type=int, default=None, help="input size for --model")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes for --model (default: the model's own, 1000 for ImageNet ones)")
    p.add_argument("--seed", type=int, default=0, help="random weights' seed for --model")
    p.add_argument("--patch", type=_pair_arg, default=16, help="N or HxW (default 16)")
    p.add_argument("--stride", type=_pair_arg, default=4, help="N or HxW (default 4)")
    p.add_argument("--fill", type=_fill_arg, default=0.0,
                   help="patch value: a number, 'mean' or per-channel a,b,c (default 0)")
    p.add_argument("--target", type=int, default=None, help="class to explain (default: predicted)")
    p.add_argument("--mean", type=_channel_values, default=IMAGENET_MEAN, metavar="R,G,B",
                   help="subtracted per channel on the [0, 1] scale: 'none', one value or "
                        "three (default ImageNet's 0.485,0.456,0.406)")
    p.add_argument("--std", type=_std_values, default=IMAGENET_STD, metavar="R,G,B",
                   help="divides per channel after --mean: 'none', one value or three "
                        "(default ImageNet's 0.229,0.224,0.225)")
    p.add_argument("--labels", metavar="FILE.txt",
                   help="class names, one per line, in the model's class order")
    p.add_argument("--mode", choices=("incremental", "full", "approximate"),
                   default="incremental")
    p.add_argument("--tau", type=float, default=1.0,
                   help="approximate: projective-field threshold in (0, 1] (default 1)")
    _add_drilldown_arguments(p, "approximate: adaptive drill-down (coarse stride, then refine)")
    p.add_argument("--batch-size", type=int, default=None, help="positions per batch (64; 16 with --mode full)")
    p.add_argument("--out", metavar="overlay.png",
                   help="write the heatmap over the image (several images: an existing "
                        "folder, one <stem>.png each)")
    p.add_argument("--save", metavar="heatmap.npy",
                   help="write the raw heatmap (several images: an existing folder, one "
                        "<stem>.npy each)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when tqdm is installed and stderr is a terminal)")
    p.add_argument("--device", choices=DEVICES, default="cpu",
                   help="where to compute (cuda: numba-cuda on a GPU, extra kryptonref[cuda])")
    from .cli_store import add_show_parser, add_store_arguments
    add_store_arguments(p)
    p.set_defaults(func=occlude)
    add_show_parser(sub)

    p = sub.add_parser("tune", help="choose tau, or drill-down's settings, for a target heatmap "
                                    "SSIM (approximate mode)")
    p.add_argument("model", help="a zoo model (see `kryptonref models`) or an .onnx file")
    p.add_argument("--input-shape", type=_shape_arg, default=None, metavar="C,H,W",
                   help="an ONNX model's input size where it is dynamic")
    p.add_argument("--images", required=True,
                   help="a folder of PNG/JPEG images, or 'demo' for generated shapes images")
    p.add_argument("--count", type=int, default=12,
                   help="images to use (default 12; a third are held out)")
    p.add_argument("--weights", help="weights .npz, or 'pretrained' (default for demo models)")
    p.add_argument("--target-ssim", type=float, default=0.9)
    p.add_argument("--patch", type=_pair_arg, default=16, help="N or HxW (default 16)")
    p.add_argument("--stride", type=_pair_arg, default=8, help="N or HxW (default 8)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="positions per batch (default 64)")
    p.add_argument("--device", choices=DEVICES, default="cpu")
    p.add_argument("--drilldown", action="store_true",
                   help="choose drill-down's coarse stride and r_drill (with --tau T,T,...: "
                        "and tau among those) instead of tau by the paper's fit")
    p.add_argument("--tau", type=_taus_arg, default=None, metavar="T[,T...]",
                   help="with --drilldown: the tau to combine it with, or several to choose "
                        "among (default 1: exact)")
    p.add_argument("--freeze-context", action="store_true",
                   help="tune with squeeze-excitation gates kept at their unoccluded value "
                        "(docs/approximate.md; the reference heatmaps stay exact)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when tqdm is installed and stderr is a terminal)")
    p.set_defaults(func=tune)
    args = parser.parse_args(argv)
    return _error_boundary(args.func, args)


def _error_boundary(function, args):
    """Run a subcommand; a user's mistake or a fault of the environment is one line on
    stderr, never a traceback: exit 1 (argparse itself exits 2 for malformed command
    lines), 130 for Ctrl-C (``DESIGN.md`` section 14)."""
    import zipfile

    try:
        return function(args)
    except KeyboardInterrupt:
        print("kryptonref: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, ImportError, FileNotFoundError, RuntimeError) as err:
        print(f"kryptonref: error: {err}", file=sys.stderr)
        return 1
    except zipfile.BadZipFile as err:
        print(f"kryptonref: error: not a readable .npz weights file ({err})", file=sys.stderr)
        return 1
    except OSError as err:   # a directory, permissions, a full disk...
        where = f": {err.filename}" if getattr(err, "filename", None) else ""
        print(f"kryptonref: error: {err.strerror or err}{where}", file=sys.stderr)
        return 1
    except MemoryError:
        print("kryptonref: error: out of memory (try a smaller --batch-size)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
