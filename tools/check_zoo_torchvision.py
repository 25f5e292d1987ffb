#!/usr/bin/env python
"""Dev-only check: kryptonref's zoo against torchvision, output for output.

For each zoo model that torchvision also provides, build torchvision's model
(``weights=None``, eval mode, float64), randomise its batch-norm statistics and
affine parameters, export the ``state_dict`` (without ``num_batches_tracked``)
as float64 NumPy arrays, load it unchanged into ``kryptonref.zoo(name, ...)`` and
compare the logits on the same random input. Parameter counts (parameters only,
as torchvision's ``num_params``; batch-norm running statistics are buffers) and
MACs (conv and linear layers, counted with forward hooks on the torch side) are
compared too. One table row per model and size.

torch and torchvision are NOT dependencies of kryptonref or of its tests; run this
from an environment that has them, with kryptonref importable, e.g.::

    PYTHONPATH=/work/main /tmp/tvenv/bin/python tools/check_zoo_torchvision.py
    PYTHONPATH=. python tools/check_zoo_torchvision.py resnet18 vgg11 --size 32
    PYTHONPATH=. python tools/check_zoo_torchvision.py alexnet resnet50 --default-size

Names that the zoo does not (yet) register are skipped with a message. The exit
status is 1 if any compared model fails (relative difference above ``--rtol``,
a parameter or MAC count mismatch, or an error while loading/running).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback

import numpy as np

#: Zoo names that torchvision provides (everything in the zoo except mobilenet_v1).
TORCHVISION_NAMES = (
    "alexnet",
    "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "squeezenet1_0", "squeezenet1_1",
    "densenet121", "densenet161", "densenet169", "densenet201",
    "googlenet", "inception_v3",
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
    "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l",
    "regnet_y_400mf", "shufflenet_v2_x1_0", "convnext_tiny", "vit_b_16",
)

#: Zoo models that torchvision lacks.
NOT_IN_TORCHVISION = ("mobilenet_v1",)

#: Architecture modules of the zoo (imported one by one, so a missing one only
#: skips its own models).
ZOO_MODULES = ("alexnet", "densenet", "googlenet", "inception", "mobilenet", "modern",
               "resnet", "squeezenet", "vgg", "vit")

#: Small but valid input size per model (default: 64).
SMALL_SIZES = {"inception_v3": 75}

#: Extra keyword arguments of torchvision's constructors.
TV_KWARGS = {
    "googlenet": dict(aux_logits=False, transform_input=False, init_weights=True),
    "inception_v3": dict(aux_logits=False, transform_input=False, init_weights=True),
}
#: Constructor arguments that follow the input size.
TV_SIZE_KWARG = {"vit_b_16": "image_size"}


# -- kryptonref side ---------------------------------------------------------------------
def _registry():
    """kryptonref's zoo registry, importing every architecture module that exists."""
    # (``kryptonref.models.zoo`` the attribute is the function; the module is in sys.modules)
    zoo_mod = importlib.import_module("kryptonref.models.zoo")
    missing = []
    for module in ZOO_MODULES:
        try:
            importlib.import_module(f"kryptonref.models.{module}")
        except ImportError as err:  # another module not written yet
            missing.append(f"{module} ({err})")
    return zoo_mod, missing


def build_ours(name, size, weights, num_classes=1000):
    """``zoo(name, ...)`` with the given weights in float64; falls back to the registry
    directly while ``zoo()`` cannot import every architecture module."""
    zoo_mod, _ = _registry()
    from kryptonref.model import Model
    try:
        return zoo_mod.zoo(name, image_size=size, num_classes=num_classes, weights=weights,
                           dtype=np.float64)
    except ImportError:
        entry = zoo_mod._REGISTRY[name]
        graph = entry.builder(size, num_classes)
        return Model(graph, weights=weights, dtype=np.float64)


def registered(name):
    zoo_mod, _ = _registry()
    return name in zoo_mod._REGISTRY


def default_size(name):
    zoo_mod, _ = _registry()
    return zoo_mod._REGISTRY[name].default_size


def our_param_count(model):
    """Parameters as torchvision counts them: batch-norm running statistics excluded."""
    return int(sum(v.size for node, ps in model.params.items() for p, v in ps.items()
                   if p not in ("running_mean", "running_var")))


def our_macs(model):
    return int(sum(model.graph.macs().values()))


# -- torchvision side --------------------------------------------------------------------
def build_torch(name, num_classes=1000, seed=0, size=None):
    import torch
    import torchvision

    torch.manual_seed(seed)
    kwargs = dict(TV_KWARGS.get(name, {}))
    if name in TV_SIZE_KWARG and size is not None:
        kwargs[TV_SIZE_KWARG[name]] = size
    net = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in net.parameters():   # ViT's zero-initialised head: logits would be 0
            if parameter.numel() > 1 and float(parameter.std()) == 0.0:
                parameter.copy_(torch.randn(parameter.shape, generator=gen) * 0.02)
        for mod in net.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                n = mod.num_features
                mod.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                mod.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                if mod.affine:
                    mod.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                    mod.bias.copy_(torch.rand(n, generator=gen) - 0.5)
    return net.double().eval()


def torch_state_dict(net):
    return {k: v.detach().cpu().numpy().astype(np.float64)
            for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}


def torch_param_count(net):
    return int(sum(p.numel() for p in net.parameters()))


def torch_forward_and_macs(net, x):
    """Logits and conv/linear MACs per image (forward hooks)."""
    import torch

    total = [0]

    def conv_hook(mod, inp, out):
        kh, kw = mod.kernel_size
        total[0] += out[0].numel() * (mod.in_channels // mod.groups) * kh * kw

    def linear_hook(mod, inp, out):
        # per output vector: a Linear on channels-last maps (ConvNeXt) runs at every position
        total[0] += mod.in_features * out[0].numel()

    def attention_hook(mod, inp, out):
        # torch's MultiheadAttention calls its projections functionally (no Linear hook):
        # the packed q/k/v and output projections, and the two products of attention
        tokens, width = inp[0].shape[-2:] if mod.batch_first else inp[0].shape[::2]
        total[0] += tokens * width * 4 * width + 2 * tokens * tokens * width

    handles = []
    for mod in net.modules():
        if isinstance(mod, torch.nn.MultiheadAttention):
            handles.append(mod.register_forward_hook(attention_hook))
        elif isinstance(mod, torch.nn.Conv2d):
            handles.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, torch.nn.Linear):
            handles.append(mod.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            net(torch.from_numpy(x[:1]))                # MACs of one image
            macs = total[0]
            for h in handles:
                h.remove()
            handles = []
            out = net(torch.from_numpy(x))
    finally:
        for h in handles:
            h.remove()
    if not isinstance(out, torch.Tensor):               # GoogLeNet/Inception named tuples
        out = out[0]
    return out.numpy(), macs


# -- the check ---------------------------------------------------------------------------
def check(name, size, batch=2, rtol=1e-9, seed=0):
    """Compare one model; returns a dict row for the table."""
    row = dict(name=name, size=size, status="", max_abs=np.nan, max_rel=np.nan,
               params_tv=0, params_ours=0, macs_tv=0, macs_ours=0, seconds=0.0, note="")
    t0 = time.perf_counter()
    net = build_torch(name, seed=seed, size=size)
    state = torch_state_dict(net)
    x = np.random.default_rng(seed).standard_normal((batch, 3, size, size))
    ref, row["macs_tv"] = torch_forward_and_macs(net, x)
    row["params_tv"] = torch_param_count(net)
    model = build_ours(name, size, state)
    row["params_ours"] = our_param_count(model)
    row["macs_ours"] = our_macs(model)
    out = model.forward(x)
    if out.shape != ref.shape:
        row.update(status="FAIL", note=f"output shape {out.shape} != torch {ref.shape}")
    else:
        diff = np.abs(out - ref)
        row["max_abs"] = float(diff.max())
        row["max_rel"] = float(diff.max() / max(np.abs(ref).max(), 1e-300))
        problems = []
        if not row["max_rel"] <= rtol:
            problems.append("outputs differ")
        if row["params_tv"] != row["params_ours"]:
            problems.append("param count")
        if row["macs_tv"] != row["macs_ours"]:
            problems.append("MACs")
        row["status"] = "FAIL" if problems else "ok"
        row["note"] = ", ".join(problems)
    row["seconds"] = time.perf_counter() - t0
    return row


HEADER = (f"{'model':<20} {'size':>4} {'status':<6} {'max_abs':>9} {'max_rel':>9} "
          f"{'params_tv':>11} {'params_ours':>11} {'GMACs_tv':>9} {'GMACs_ours':>10} "
          f"{'s':>6}  note")


def format_row(r):
    return (f"{r['name']:<20} {r['size']:>4} {r['status']:<6} {r['max_abs']:>9.2e} "
            f"{r['max_rel']:>9.2e} {r['params_tv']:>11} {r['params_ours']:>11} "
            f"{r['macs_tv'] / 1e9:>9.4f} {r['macs_ours'] / 1e9:>10.4f} {r['seconds']:>6.1f}  "
            f"{r['note']}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="zoo names (default: all that torchvision has)")
    parser.add_argument("--size", type=int, default=None,
                        help="input size for every model (default: 64, 75 for inception_v3)")
    parser.add_argument("--default-size", action="store_true",
                        help="use each model's design size (224, 299 for inception_v3)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rtol", type=float, default=1e-9,
                        help="max |ours - torch| / max |torch| for a pass (float64)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    try:
        import torch
        import torchvision
    except ImportError as err:
        sys.exit(f"this dev script needs torch and torchvision: {err}")
    torch.set_grad_enabled(False)

    names = args.names or list(TORCHVISION_NAMES)
    _, missing = _registry()
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    if missing:
        print("note: zoo modules not importable yet: " + "; ".join(missing))
    print(HEADER)
    failed = False
    for name in names:
        if name in NOT_IN_TORCHVISION:
            print(f"{name:<20} skipped: torchvision has no {name}")
            continue
        if not registered(name):
            print(f"{name:<20} skipped: not registered in the kryptonref zoo (yet)")
            continue
        if args.default_size:
            size = default_size(name)
        else:
            size = args.size if args.size is not None else SMALL_SIZES.get(name, 64)
        try:
            row = check(name, size, batch=args.batch, rtol=args.rtol, seed=args.seed)
        except Exception as err:  # report and go on with the next model
            failed = True
            print(f"{name:<20} {size:>4} ERROR  {type(err).__name__}: {err}")
            traceback.print_exc(limit=3)
            continue
        failed |= row["status"] != "ok"
        print(format_row(row), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
