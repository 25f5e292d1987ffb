#!/usr/bin/env python
"""Dev-only: train the demo models on the synthetic shapes data and ship their weights.

For each of ``demo_vgg``, ``demo_resnet`` and ``demo_effnet`` (:mod:`kryptonref.models.demo`) this

1. builds the architecture's kryptonref graph and a PyTorch twin of it, generated
   node by node from the same graph, with module paths equal to the node names
   (``features.0``, ``layer1.0.conv1``, ...), so its ``state_dict`` is kryptonref's
   weight mapping;
2. generates the data with :func:`kryptonref.datasets.shapes` (training, validation
   and test sets from distinct seeds), trains the twin on the CPU (seeded, 2 torch
   threads, AdamW with a one-cycle schedule, random flips and grey occluder squares
   pasted off the object, see :func:`add_occluders`), and measures its test
   accuracy;
3. exports the weights (float32, without ``num_batches_tracked``) to
   ``kryptonref/data/<name>.npz``, loads them into ``kryptonref.zoo(name,
   weights="pretrained")`` and checks fidelity: kryptonref's full inference on a
   fixed test batch against torch's logits (max abs difference), and kryptonref's
   own test accuracy;
4. measures localisation with exact occlusion through kryptonref's incremental
   engine (no torch): a grey patch (fill 0, the normalised mean) slid with
   ``--patch``/``--stride`` over the first ``--loc-images`` test images; per image
   the heatmap of the true class's probability (softmax of the logits), the
   pointing game and the energy in the box
   (:mod:`kryptonref.analysis.localisation`); for a model with squeeze-excitation
   gates (``demo_effnet``) the same again with the frozen-context approximation
   (``localisation_frozen_context``, with the SSIM of its log-probability maps
   against the exact ones);
5. writes everything to ``kryptonref/data/demo_models.json``.

torch is NOT a dependency of kryptonref or of its tests; run this from an
environment that has it, with kryptonref importable, e.g.::

    PYTHONPATH=/work/main /tmp/tvenv/bin/python tools/train_demo_models.py
    PYTHONPATH=. python tools/train_demo_models.py --models demo_resnet
    PYTHONPATH=. python tools/train_demo_models.py --skip-train      # re-measure only (no torch)
    PYTHONPATH=. python tools/train_demo_models.py --models demo_effnet --exact-engine onnxruntime

Everything is seeded; with the same library versions and thread count a rerun
reproduces the weights (up to the non-associativity of threaded float sums).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import kryptonref as kr  # noqa: E402
from kryptonref import datasets  # noqa: E402
from kryptonref.analysis.localisation import energy_in_box, pointing_game  # noqa: E402
from kryptonref.analysis.quality import ssim  # noqa: E402
from kryptonref.models.zoo import DATA_DIR, build_graph, zoo_entry  # noqa: E402

MODELS = ("demo_vgg", "demo_resnet", "demo_effnet")
JSON_PATH = os.path.join(DATA_DIR, "demo_models.json")

#: Data: one seed per split; the test in tests/test_demo_models.py uses yet another.
DATA = dict(image_size=224, train_seed=1, train_images=8000, val_seed=2, val_images=500,
            test_seed=3, test_images=1000)

#: Per-model training settings.
TRAIN = {
    "demo_vgg": dict(seed=0, epochs=4, batch_size=64, lr=3e-3, weight_decay=5e-4),
    "demo_resnet": dict(seed=0, epochs=4, batch_size=64, lr=3e-3, weight_decay=5e-4),
    "demo_effnet": dict(seed=0, epochs=4, batch_size=64, lr=3e-3, weight_decay=5e-4),
}

#: Training augmentation: 0..OCCLUDERS grey squares of OCCLUDER_SIZES px per image, off the object.
OCCLUDERS = 2
OCCLUDER_SIZES = (16, 48)

FIDELITY_BATCH = 32

#: Tolerance (px) of the second pointing-game number (Zhang et al.'s 15 px; 0 for the first).
TOLERANCE = 15
TORCH_THREADS = 2


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


# -- data -------------------------------------------------------------------------------
def generate(n, seed, image_size, chunk=500, dtype=np.float32):
    """``shapes(n, image_size, seed)`` generated in chunks: (images as ``dtype``, labels, boxes)."""
    images = np.empty((n, 3, image_size, image_size), dtype=dtype)
    labels = np.empty(n, dtype=np.int64)
    boxes = np.empty((n, 4), dtype=np.int64)
    for start in range(0, n, chunk):
        part = datasets.shapes(min(chunk, n - start), image_size, seed=seed, start=start)
        images[start:start + len(part)] = part.images
        labels[start:start + len(part)] = part.labels
        boxes[start:start + len(part)] = part.boxes
    return images, labels, boxes


def add_occluders(images, boxes, rng, sizes=OCCLUDER_SIZES, most=OCCLUDERS):
    """Paste 0..``most`` grey squares (fill 0, the normalised mean) per image, off the object's box.

    Without them a grey occluding patch on the background is an object the model
    never saw, and it can move the prediction more than occluding the object does
    (it reads as a small square or cross); with them the occlusion heatmaps show
    the object. ``images`` (B, C, H, W) is changed in place.
    """
    _, _, height, width = images.shape
    for b in range(len(images)):
        y0, x0, y1, x1 = boxes[b]
        for _ in range(rng.integers(0, most + 1)):
            side = int(rng.integers(sizes[0], sizes[1] + 1))
            for _attempt in range(10):
                y, x = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
                if y + side <= y0 or y >= y1 or x + side <= x0 or x >= x1:
                    images[b, :, y:y + side, x:x + side] = 0.0
                    break
    return images


# -- the torch twin ---------------------------------------------------------------------
def torch_twin(graph):
    """A ``torch.nn.Module`` computing ``graph``, its module paths equal to the node names."""
    import torch
    from torch import nn

    from kryptonref import layers as L

    class Add(nn.Module):
        def forward(self, *xs):
            out = xs[0]
            for x in xs[1:]:
                out = out + x
            return out

    class Mul(nn.Module):  # a squeeze-excitation product: (N, C, 1, 1) gate broadcast
        def forward(self, a, b):
            return a * b

    def symmetric(padding, name):
        (top, bottom), (left, right) = padding
        if top != bottom or left != right:
            raise ValueError(f"{name}: asymmetric padding has no torch twin here")
        return (top, left)

    def make(name, layer):
        if isinstance(layer, L.Conv2d):
            return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                             layer.stride, symmetric(layer.padding, name), layer.dilation,
                             layer.groups, layer.bias)
        if isinstance(layer, L.BatchNorm2d):
            return nn.BatchNorm2d(layer.num_features, eps=layer.eps)
        if isinstance(layer, L.ReLU):
            return nn.ReLU()
        if isinstance(layer, L.MaxPool2d):
            return nn.MaxPool2d(layer.kernel_size, layer.stride, symmetric(layer.padding, name),
                                layer.dilation, ceil_mode=layer.ceil_mode)
        if isinstance(layer, L.AdaptiveAvgPool2d):
            return nn.AdaptiveAvgPool2d(layer.output_size)
        if isinstance(layer, L.Flatten):
            return nn.Flatten()
        if isinstance(layer, L.Linear):
            return nn.Linear(layer.in_features, layer.out_features, layer.bias)
        if isinstance(layer, L.Dropout):
            return nn.Dropout(layer.p)
        if isinstance(layer, L.Add):
            return Add()
        if isinstance(layer, L.Mul):
            return Mul()
        if isinstance(layer, L.SiLU):
            return nn.SiLU()
        if isinstance(layer, L.Sigmoid):
            return nn.Sigmoid()
        raise TypeError(f"{name}: no torch twin for {type(layer).__name__}")

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            for name in graph.order:
                parent = self
                *path, leaf = name.split(".")
                for part in path:
                    if part not in parent._modules:
                        parent.add_module(part, nn.Module())
                    parent = parent._modules[part]
                parent.add_module(leaf, make(name, graph.nodes[name].layer))
            self._plan = [(name, self.get_submodule(name), graph.nodes[name].inputs)
                          for name in graph.order]

        def forward(self, x):
            values = {graph.input_name: x}
            for name, module, inputs in self._plan:
                values[name] = module(*[values[i] for i in inputs])
            return values[graph.output]

    torch.manual_seed(0)
    return Twin()


def export_state(model):
    """The twin's ``state_dict`` as float32 NumPy arrays, without ``num_batches_tracked``."""
    return {key: value.detach().cpu().numpy().astype(np.float32)
            for key, value in model.state_dict().items()
            if not key.endswith("num_batches_tracked")}


def torch_logits(model, images, batch=128):
    import torch
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch],
                                                      dtype=np.float32))
            out.append(model(x.contiguous(memory_format=torch.channels_last)).numpy())
    return np.concatenate(out)


def kr_logits(model, images, batch=32):
    return np.concatenate([model.forward(np.ascontiguousarray(images[s:s + batch], np.float32))
                           for s in range(0, len(images), batch)])


def train_one(name, data, settings):
    """Train the torch twin of ``name``; returns (model, record)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(TORCH_THREADS)
    torch.manual_seed(settings["seed"])
    graph = build_graph(name)
    model = torch_twin(graph)
    torch.manual_seed(settings["seed"])
    for module in model.modules():  # He init as torchvision's ResNet/VGG
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
    model = model.to(memory_format=torch.channels_last)
    (train_x, train_y, train_boxes), (val_x, val_y, _) = data["train"], data["val"]
    n, bs, epochs = len(train_y), settings["batch_size"], settings["epochs"]
    steps = epochs * (n // bs)
    opt = torch.optim.AdamW(model.parameters(), lr=settings["lr"],
                            weight_decay=settings["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings["lr"], total_steps=steps,
                                                pct_start=0.15)
    gen = torch.Generator().manual_seed(settings["seed"])
    occluder_rng = np.random.default_rng(settings["seed"])
    labels = torch.from_numpy(train_y)
    history = []
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        seen = correct = 0
        loss_sum = 0.0
        for step in range(n // bs):
            idx = order[step * bs:(step + 1) * bs]
            batch = train_x[idx.numpy()].astype(np.float32)
            add_occluders(batch, train_boxes[idx.numpy()], occluder_rng)
            x = torch.from_numpy(batch)
            flips = torch.rand(2, bs, 1, 1, 1, generator=gen) < 0.5
            x = torch.where(flips[0], x.flip(3), x)
            x = torch.where(flips[1], x.flip(2), x)
            x = x.contiguous(memory_format=torch.channels_last)
            y = labels[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * bs
            correct += int((logits.argmax(1) == y).sum())
            seen += bs
        val_acc = float((torch_logits(model, val_x).argmax(1) == val_y).mean())
        history.append(dict(epoch=epoch + 1, loss=round(loss_sum / seen, 4),
                            train_acc=round(correct / seen, 4), val_acc=round(val_acc, 4),
                            seconds=round(time.perf_counter() - start, 1)))
        log(name, history[-1])
    seconds = time.perf_counter() - start
    model.eval()
    record = dict(torch_seed=settings["seed"], epochs=epochs, batch_size=bs,
                  optimizer=f"AdamW(weight_decay={settings['weight_decay']}), OneCycleLR("
                            f"max_lr={settings['lr']}, pct_start=0.15)",
                  augmentation=f"random horizontal and vertical flips; 0-{OCCLUDERS} grey squares "
                               f"(fill 0.0, sides {OCCLUDER_SIZES[0]}-{OCCLUDER_SIZES[1]} px) "
                               f"per image off the object's box",
                  torch_threads=TORCH_THREADS, training_seconds=round(seconds, 1),
                  history=history)
    return model, record


def export_and_check(name, model, data):
    """Export the weights, load them in kryptonref, compare; returns a record."""
    test_x, test_y, _ = data["test"]
    weights = export_state(model)
    path = os.path.join(DATA_DIR, zoo_entry(name).pretrained)
    np.savez_compressed(path, **weights)
    ours = kr.zoo(name, weights="pretrained")
    fixed = test_x[:FIDELITY_BATCH].astype(np.float32)
    diff = np.abs(torch_logits(model, fixed) - ours.forward(fixed))
    torch_acc = float((torch_logits(model, test_x).argmax(1) == test_y).mean())
    log(name, f"torch test accuracy {torch_acc:.4f}; fidelity max abs diff {diff.max():.3g}")
    return dict(test_accuracy_torch=round(torch_acc, 4),
                fidelity=dict(images=FIDELITY_BATCH, source=f"first {FIDELITY_BATCH} test images",
                              max_abs_logit_diff=float(diff.max()),
                              max_logit=float(np.abs(ours.forward(fixed)).max())),
                weights_file=os.path.basename(path), weights_bytes=os.path.getsize(path),
                parameters=int(sum(v.size for k, v in weights.items()
                                   if not k.endswith(("running_mean", "running_var")))))


def kryptonref_accuracy(name, data):
    test_x, test_y, _ = data["test"]
    model = kr.zoo(name, weights="pretrained")
    start = time.perf_counter()
    pred = kr_logits(model, test_x).argmax(1)
    acc = float((pred == test_y).mean())
    log(name, f"kryptonref test accuracy {acc:.4f} ({time.perf_counter() - start:.1f} s)")
    return dict(test_accuracy_kryptonref=round(acc, 4), test_images_kryptonref=len(test_y))


# -- localisation -------------------------------------------------------------------------
def log_softmax(logits):
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class OrtExact:
    """Exact occluded logits by onnxruntime full re-inference of ``kr.to_onnx(model)``.

    For ``demo_effnet``: its squeeze-excitation gates make every changed region whole,
    so kryptonref's exact incremental inference is full re-inference, and on the
    shared 2-core machine it ran at about 0.8 s per position (``docs/demo-models.md``);
    onnxruntime's logits are the same (checked per image on a few positions against
    kryptonref's exact engine, ``max_abs_logit_diff_vs_kryptonref``).
    """

    def __init__(self, model):
        import tempfile

        import onnxruntime as ort
        options = ort.SessionOptions()
        options.log_severity_level = 3
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.onnx")
            kr.to_onnx(model, path)
            self.session = ort.InferenceSession(path, options,
                                                providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.max_diff = 0.0

    def __call__(self, model, image, positions, patch, batch_size, base):
        out = []
        for first in range(0, len(positions), batch_size):
            part = positions[first:first + batch_size]
            batch = np.repeat(image[None], len(part), axis=0).astype(np.float32)
            for k, (y, x) in enumerate(part):
                batch[k, :, y:y + patch, x:x + patch] = 0.0
            out.append(self.session.run(None, {self.input: batch})[0])
        out = np.concatenate(out)
        check = np.linspace(0, len(positions) - 1, 4).round().astype(int)
        ours = kr.incremental_inference(model, image, positions[check], patch, fill=0.0,
                                        base=base).output
        self.max_diff = max(self.max_diff, float(np.abs(ours - out[check]).max()))
        return out


def localisation(name, count, patch, stride, seed, batch_size=64, freeze_context=False,
                 exact_engine="kryptonref"):
    """Pointing game and energy in the box over ``count`` images of ``shapes(seed=seed)``.

    With ``freeze_context`` the heatmaps are the frozen-context approximation's
    (squeeze-excitation gates kept at their unoccluded values, ``docs/approximate.md``)
    instead of exact ones. ``exact_engine="onnxruntime"``: exact maps by
    :class:`OrtExact`. The returned record's ``"_heatmaps"`` (log p of the true
    class, one grid per image) is for the caller, not for the json.
    """
    from kryptonref.engine import Occluder
    model = kr.zoo(name, weights="pretrained")
    data = datasets.shapes(count, DATA["image_size"], seed=seed)
    size = DATA["image_size"]
    positions = kr.patch_positions((size, size), patch, stride)
    grid = (len(range(0, size - patch + 1, stride)),) * 2
    hits_true, hits_pred, hits_tol, energies, box_shares, correct = [], [], [], [], [], []
    heatmaps, macs = [], 0
    ort = OrtExact(model) if exact_engine == "onnxruntime" and not freeze_context else None
    start = time.perf_counter()
    for i in range(count):
        image, label = data.images[i], int(data.labels[i])
        base = model.forward_all(image[None])
        logits0 = base[model.graph.output][0]
        pred = int(np.argmax(logits0))
        if ort is not None:
            out = ort(model, image, positions, patch, batch_size, base)
            macs += len(positions) * int(sum(model.graph.macs().values()))
        else:
            occluder = Occluder(model, image, patch, fill=0.0, base=base,
                                freeze_context=freeze_context)
            out = occluder.run(positions, batch_size)[model.graph.output]
            macs += int(sum(occluder.node_macs.values()))
        logp = log_softmax(out)                       # (P, K), float64: no saturation at 1
        logp0 = log_softmax(logits0[None])[0]
        box = data.boxes[i]
        # the pointing game on log p (same argmin as p, unbroken by p rounding to 1)
        hits_true.append(pointing_game(logp[:, label].reshape(grid), box, patch, stride))
        hits_pred.append(pointing_game(logp[:, pred].reshape(grid), box, patch, stride))
        hits_tol.append(pointing_game(logp[:, label].reshape(grid), box, patch, stride,
                                      tolerance=TOLERANCE))
        energies.append(energy_in_box(np.exp(logp[:, label]).reshape(grid), box, patch, stride,
                                      baseline=float(np.exp(logp0[label]))))
        box_shares.append(energy_in_box(np.zeros(grid), box, patch, stride, baseline=1.0))
        correct.append(pred == label)
        heatmaps.append(logp[:, label].reshape(grid))
    seconds = time.perf_counter() - start
    energies = np.asarray(energies, dtype=float)
    full_macs = count * len(positions) * int(sum(model.graph.macs().values()))
    result = dict(
        images=count, data_seed=seed, patch=patch, stride=stride, fill=0.0,
        freeze_context=bool(freeze_context),
        engine=("onnxruntime full re-inference (kr.to_onnx), checked against kryptonref's "
                "exact engine on 4 positions per image" if ort is not None else
                "kryptonref " + ("approximate (freeze_context)" if freeze_context
                                 else "exact incremental")),
        macs_over_full_reinference=round(macs / full_macs, 4),
        positions_per_image=len(positions),
        target="true class; probability = softmax of the logits (pointing on log p)",
        pointing_accuracy_true_class=round(float(np.mean(hits_true)), 4),
        pointing_accuracy_predicted_class=round(float(np.mean(hits_pred)), 4),
        pointing_tolerance_px=TOLERANCE,
        pointing_accuracy_true_class_with_tolerance=round(float(np.mean(hits_tol)), 4),
        energy_in_box_mean=round(float(np.nanmean(energies)), 4),
        energy_in_box_median=round(float(np.nanmedian(energies)), 4),
        images_without_drop=int(np.isnan(energies).sum()),
        box_share_of_centres_mean=round(float(np.mean(box_shares)), 4),
        accuracy_on_these_images=round(float(np.mean(correct)), 4),
        seconds=round(seconds, 1))
    if ort is not None:
        result["max_abs_logit_diff_vs_kryptonref"] = float(ort.max_diff)
    log(name, "localisation", result)
    result["_heatmaps"] = heatmaps
    return result


def has_context_gates(name):
    """Whether ``name``'s graph has a per-channel gate broadcast over a map (``Mul``)."""
    graph = build_graph(name)
    return any(isinstance(graph.nodes[n].layer, kr.Mul) for n in graph.order)


# -- main ----------------------------------------------------------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs")
    parser.add_argument("--train-images", type=int, default=DATA["train_images"])
    parser.add_argument("--test-images", type=int, default=DATA["test_images"])
    parser.add_argument("--skip-train", action="store_true",
                        help="keep the shipped weights; only re-measure (no torch needed)")
    parser.add_argument("--skip-localisation", action="store_true")
    parser.add_argument("--loc-images", type=int, default=100)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--exact-engine", choices=("kryptonref", "onnxruntime"),
                        default="kryptonref",
                        help="what computes the exact localisation maps (default kryptonref)")
    args = parser.parse_args(argv)

    record = {}
    if os.path.exists(JSON_PATH):
        with open(JSON_PATH) as f:
            record = json.load(f)
    data_params = dict(DATA, train_images=args.train_images, test_images=args.test_images,
                       generator="kryptonref.datasets.shapes",
                       classes=list(datasets.CLASS_NAMES),
                       mean=[round(float(v), 6) for v in datasets.MEAN],
                       std=[round(float(v), 6) for v in datasets.STD])
    record.setdefault("models", {})

    data = {}
    log("generating the test set")
    data["test"] = generate(args.test_images, DATA["test_seed"], DATA["image_size"])
    if not args.skip_train:
        import torch
        log("generating the training and validation sets")
        data["train"] = generate(args.train_images, DATA["train_seed"], DATA["image_size"],
                                 dtype=np.float16)
        data["val"] = generate(DATA["val_images"], DATA["val_seed"], DATA["image_size"])
        record["data"] = data_params
        environment = dict(torch=torch.__version__, numpy=np.__version__,
                           python=platform.python_version(),
                           machine=platform.machine(), cpu_threads=TORCH_THREADS)
        # the top-level record is the first run's; a model trained later keeps its own
        record.setdefault("environment", environment)
    for name in args.models:
        entry = record["models"].setdefault(name, {})
        if not args.skip_train:
            settings = dict(TRAIN[name])
            if args.epochs is not None:
                settings["epochs"] = args.epochs
            model, train_record = train_one(name, data, settings)
            entry.update(train_record)
            if environment != record["environment"]:
                entry["environment"] = environment
            entry.update(export_and_check(name, model, data))
            graph = build_graph(name)
            entry["macs_per_image"] = int(sum(graph.macs().values()))
            entry["description"] = zoo_entry(name).description
        entry.update(kryptonref_accuracy(name, data))
        if not args.skip_localisation:
            exact = localisation(name, args.loc_images, args.patch, args.stride, DATA["test_seed"],
                                 exact_engine=args.exact_engine)
            exact_maps = exact.pop("_heatmaps")
            entry["localisation"] = exact
            if has_context_gates(name):
                frozen = localisation(name, args.loc_images, args.patch, args.stride,
                                      DATA["test_seed"], freeze_context=True)
                values = [ssim(e, f) for e, f in zip(exact_maps, frozen.pop("_heatmaps"))]
                frozen["ssim_vs_exact_log_p_mean"] = round(float(np.mean(values)), 4)
                frozen["ssim_vs_exact_log_p_min"] = round(float(np.min(values)), 4)
                entry["localisation_frozen_context"] = frozen
        with open(JSON_PATH, "w") as f:
            json.dump(record, f, indent=2)
            f.write("\n")
    log("wrote", JSON_PATH)


if __name__ == "__main__":
    main()
