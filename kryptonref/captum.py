"""Captum's ``Occlusion``, computed by kryptonref's incremental inference.

A Captum user changes two lines::

    from kryptonref.captum import Occlusion        # was: from captum.attr import Occlusion
    attr = Occlusion(model).attribute(x, sliding_window_shapes=(3, 16, 16),
                                      strides=(3, 8, 8), target=t, baselines=0,
                                      perturbations_per_eval=16)

and gets Captum 0.9's attributions (``docs/design.md``, Occlusion output): for each
input element, the mean over the windows covering it of ``f(x)[t] - f(x_occluded)[t]``
on the model's raw outputs, windows starting at multiples of the stride with the last
one truncated at the border. The model is converted once with
:func:`kryptonref.from_torch` (cached per input shape and dtype, and converted again
when its weights change) and each image runs through :func:`kryptonref.occlusion`.

What Captum accepts and kryptonref cannot compute raises a clear error instead of
giving a different answer: a Python function as ``forward_func``,
``additional_forward_args``, windows over part of the channels, inputs that are not one
batch of images ``(N, C, H, W)``, tuple targets, and baselines that vary over the image
(kryptonref's patch has one value per channel). torch is imported only when a torch
module or tensor is given.
"""
from __future__ import annotations

import numbers
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Union, cast

import numpy as np
import numpy.typing as npt

from . import validate

if TYPE_CHECKING:
    from .model import Model

    #: What a converted model depends on (:func:`_state`): per parameter and buffer its
    #: name, id, storage address, version counter, shape and dtype; each submodule's
    #: training flag.
    _State = tuple[tuple[tuple[str, int, int, int, tuple[int, ...], str], ...],
                   tuple[bool, ...]]
    #: The occluding patch's value for one image: a scalar, or one value per channel.
    _Fill = Union[float, npt.NDArray[np.float64]]

__all__ = ["Occlusion"]


def _torch() -> ModuleType | None:
    """The torch module if the caller has imported it (no import otherwise)."""
    return sys.modules.get("torch")


def _is_tensor(value: object) -> bool:
    torch = _torch()
    return torch is not None and isinstance(value, torch.Tensor)


def _is_module(value: object) -> bool:
    torch = _torch()
    return torch is not None and isinstance(value, torch.nn.Module)


class Occlusion:
    """Captum's ``captum.attr.Occlusion`` for CNNs on images, computed incrementally.

    Parameters
    ----------
    forward_func : torch.nn.Module or kryptonref.Model
        The network. A module is read with :func:`kryptonref.from_torch` on the first
        call for each input shape and dtype (and again after its weights change);
        it must be in eval mode, take one image batch and return ``(N, K)`` scores.
    device : {"cpu", "cuda"}
        Where kryptonref computes (:func:`kryptonref.occlusion`); the result is
        returned on the input's own device either way.

    Examples
    --------
    >>> from kryptonref.captum import Occlusion                  # doctest: +SKIP
    >>> attr = Occlusion(net.eval()).attribute(
    ...     x, sliding_window_shapes=(3, 16, 16), strides=(3, 8, 8), target=t,
    ...     perturbations_per_eval=16)                           # doctest: +SKIP
    """

    # forward_func: a torch.nn.Module (typed Any: torch is optional) or a Model.
    def __init__(self, forward_func: Model | Any, device: str = "cpu") -> None:
        from .model import Model
        if not isinstance(forward_func, Model) and not _is_module(forward_func):
            what = type(forward_func).__name__
            raise TypeError(
                f"kryptonref.captum.Occlusion needs a torch.nn.Module or a kryptonref Model as "
                f"forward_func, got {what}: a Python function cannot be recomputed "
                "incrementally (pass the module itself, or use captum.attr.Occlusion)")
        self.forward_func: Model | Any = forward_func
        self.device: str = validate.one_of(device, ("cpu", "cuda"), "device")
        self._models: dict[tuple[tuple[int, ...], np.dtype[Any]], tuple[_State, Model]] = {}

    # inputs and the result: a torch.Tensor (typed Any: torch is optional), an ndarray,
    # or a tuple of one of them.
    def attribute(self, inputs: Any,
                  sliding_window_shapes: Sequence[int] | tuple[Sequence[int]],
                  strides: Union[None, int, Sequence[int], tuple[int | Sequence[int]]] = None,
                  baselines: npt.ArrayLike | None = None, target: npt.ArrayLike | None = None,
                  additional_forward_args: object = None, perturbations_per_eval: int = 1,
                  show_progress: bool = False) -> Any:
        """Occlusion attributions, as ``captum.attr.Occlusion.attribute`` computes them.

        Parameters
        ----------
        inputs : torch.Tensor or ndarray (N, C, H, W), or a tuple holding one
            The images.
        sliding_window_shapes : (C, h, w), or a tuple holding one
            The window; its channel entry must be C (windows over all channels).
        strides : int, (s_c, s_h, s_w), or a tuple holding one; optional
            Window steps (1 by default, as Captum); the channel step is irrelevant.
            A step larger than the window is refused, as Captum does.
        baselines : scalar, or tensor/array broadcastable to ``inputs``; optional
            The value occluded elements take (0 by default): a scalar, per-channel
            values (``(C, 1, 1)``, ``(1, C, 1, 1)``) or per image and channel
            ``(N, C, 1, 1)``. Values that vary over the image are refused.
        target : int, list of int, or tensor; optional
            The output index per example: one for all (negative counts from the end)
            or one per example. None only for models with one output per example.
        additional_forward_args : None
            Refused unless None (kryptonref models take one input).
        perturbations_per_eval : int
            Occluded images per batch (kryptonref's ``batch_size``). Captum's default
            of 1 is slow here as there; 16-64 is a good range.
        show_progress : bool
            A progress bar (when tqdm is installed).

        Returns
        -------
        torch.Tensor or ndarray (N, C, H, W)
            The type given: a tensor on the input's device with its dtype, or an
            array of the input's dtype (in a tuple of one if ``inputs`` was one).
        """
        if additional_forward_args is not None:
            raise ValueError("additional_forward_args is not supported: kryptonref models take "
                             "one image batch (fold the arguments into the module)")
        x, restore = _images(inputs)
        n, channels, height, width = x.shape
        window = _window(sliding_window_shapes, channels, (height, width))
        stride = _strides(strides, window, (height, width))
        batch_size = validate.positive_int(perturbations_per_eval, "perturbations_per_eval")
        model = self._model(x.shape[1:], x.dtype)
        n_outputs = model.graph.shapes[model.graph.output]
        if len(n_outputs) != 1:
            raise ValueError(f"the model returns shape {n_outputs} per example; Occlusion needs "
                             "a vector of outputs (N, K)")
        targets = _targets(target, n, n_outputs[0])
        fills = _baselines(baselines, x.shape)
        attribution = _attribute(model, x.astype(model.dtype, copy=False), window, stride,
                                 fills, targets, batch_size, _progress(show_progress),
                                 self.device)
        return restore(attribution)

    def _model(self, shape: tuple[int, ...], dtype: npt.DTypeLike) -> Model:
        """The kryptonref model for inputs of ``shape`` (C, H, W)."""
        from .model import Model
        if isinstance(self.forward_func, Model):
            if tuple(shape) != tuple(self.forward_func.graph.input_shape):
                raise ValueError(f"inputs have images of shape {tuple(shape)}; the model takes "
                                 f"{tuple(self.forward_func.graph.input_shape)}")
            return self.forward_func
        module = self.forward_func
        key = (tuple(shape), np.dtype(dtype))
        state = _state(module)
        cached = self._models.get(key)
        if cached is None or cached[0] != state:
            from .models.torch_io import from_torch
            model_dtype = np.float64 if _module_is_float64(module) else np.float32
            self._models[key] = (state, from_torch(module, tuple(shape), dtype=model_dtype))
        return self._models[key][1]


def _state(module: Any) -> _State:
    """What the converted model depends on: each parameter's and buffer's identity,
    storage and version counter (bumped by in-place updates: an optimiser's step,
    ``load_state_dict``), and every submodule's training flag."""
    tensors = [(name, id(t), t.data_ptr(), t._version, tuple(t.shape), str(t.dtype))
               for name, t in list(module.named_parameters()) + list(module.named_buffers())]
    return tuple(tensors), tuple(m.training for m in module.modules())


def _module_is_float64(module: Any) -> bool:
    torch = cast(ModuleType, _torch())   # imported: module is a torch.nn.Module
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            is_float64: bool = t.dtype == torch.float64
            return is_float64
    return False


def _images(inputs: Any) -> tuple[npt.NDArray[np.floating[Any]],
                                   Callable[[npt.NDArray[np.floating[Any]]], Any]]:
    """``inputs`` as an (N, C, H, W) float array, and a function giving the result back
    in the input's type (a tensor on its device with its dtype, or an array; a tuple of
    one for a tuple of one, as Captum)."""
    if isinstance(inputs, tuple):
        if len(inputs) != 1:
            raise ValueError(f"inputs holds {len(inputs)} tensors; kryptonref models take one "
                             "image batch (N, C, H, W)")
        x, restore = _images(inputs[0])
        return x, lambda result: (restore(result),)
    if _is_tensor(inputs):
        torch = cast(ModuleType, _torch())   # imported: inputs is a tensor
        if not inputs.is_floating_point():
            raise TypeError(f"inputs must hold floating-point values, got {inputs.dtype}")
        device, dtype = inputs.device, inputs.dtype
        x = inputs.detach().cpu().numpy()

        def restore(result: npt.NDArray[np.floating[Any]]) -> Any:
            return torch.from_numpy(np.ascontiguousarray(result)).to(device=device, dtype=dtype)
    elif isinstance(inputs, np.ndarray):
        if inputs.dtype.kind != "f":
            raise TypeError(f"inputs must hold floating-point values, got {inputs.dtype}")
        x, out_dtype = inputs, inputs.dtype

        def restore(result: npt.NDArray[np.floating[Any]]) -> Any:
            return result.astype(out_dtype)
    else:
        raise TypeError(f"inputs must be a torch tensor or a NumPy array (N, C, H, W), got "
                        f"{type(inputs).__name__}")
    if x.ndim != 4 or 0 in x.shape:
        raise ValueError(f"inputs must be a batch of images (N, C, H, W), got shape "
                         f"{tuple(x.shape)}; kryptonref occludes images only")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    return x, restore


def _one_input(value: object, name: str) -> object:
    """Captum's one-input tuple forms: ``((3, 16, 16),)`` is ``(3, 16, 16)``."""
    if isinstance(value, tuple) and len(value) == 1 and isinstance(value[0], tuple):
        return value[0]
    if isinstance(value, tuple) and value and all(isinstance(v, tuple) for v in value):
        raise ValueError(f"{name} has {len(value)} entries (one per input); kryptonref models "
                         "take one image batch")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool)


def _window(shapes: object, channels: int, image_hw: tuple[int, int]) -> tuple[int, int]:
    shapes = _one_input(shapes, "sliding_window_shapes")
    if not isinstance(shapes, (tuple, list)) or len(shapes) != 3 \
            or not all(_is_int(v) and v >= 1 for v in shapes):
        raise ValueError(f"sliding_window_shapes must be (C, h, w) with positive integers for "
                         f"images (N, C, H, W), got {shapes!r}")
    if shapes[0] != channels:
        raise ValueError(f"sliding_window_shapes {tuple(shapes)} covers {shapes[0]} of the "
                         f"{channels} channels; kryptonref occludes all channels at once: use "
                         f"({channels}, {shapes[1]}, {shapes[2]})")
    window = (int(shapes[1]), int(shapes[2]))
    if window[0] > image_hw[0] or window[1] > image_hw[1]:
        raise ValueError(f"sliding window {window} is larger than the images {tuple(image_hw)}")
    return window


def _strides(strides: object, window: tuple[int, int],
             image_hw: tuple[int, int]) -> tuple[int, int]:
    if strides is None:
        return 1, 1
    if isinstance(strides, tuple) and len(strides) == 1:
        strides = strides[0]
    if _is_int(strides):
        pair = (strides, strides)
    elif isinstance(strides, (tuple, list)) and len(strides) == 3 \
            and all(_is_int(v) for v in strides):
        pair = tuple(strides[1:])
    else:
        raise ValueError(f"strides must be an int or (s_c, s_h, s_w), got {strides!r}")
    stride: tuple[int, int] = validate.int_pair(pair, "strides")
    for s, w, size in zip(stride, window, image_hw):
        if w < size and s > w:
            raise ValueError(f"strides {stride} step over pixels: a stride cannot be larger "
                             f"than the window {window} (as in Captum)")
    return stride


def _targets(target: Any, n: int, n_outputs: int) -> list[int]:
    """One output index per example."""
    if target is None:
        if n_outputs != 1:
            raise ValueError(f"target=None needs a model with one output per example; this one "
                             f"has {n_outputs}: give a target (an int, or one per example)")
        return [0] * n
    if _is_tensor(target):
        target = target.detach().cpu().numpy()
    if isinstance(target, np.ndarray):
        if target.ndim == 0 or target.size == 1:
            target = target.reshape(-1)[0]
        elif target.ndim != 1:
            raise ValueError(f"target must be an int or one per example, got shape "
                             f"{target.shape}")
    if isinstance(target, tuple):
        raise ValueError("tuple targets (for outputs with more than two dimensions) are not "
                         "supported: kryptonref models return (N, K)")
    values = [target] * n if _is_int(target) else target
    if not isinstance(values, (list, np.ndarray)):
        raise TypeError(f"target must be an int, a list or a tensor, got "
                        f"{type(target).__name__}")
    if len(values) != n:
        raise ValueError(f"target has {len(values)} entries for {n} examples")
    out = []
    for i, t in enumerate(values):
        if not _is_int(t) or not -n_outputs <= t < n_outputs:
            raise ValueError(f"target[{i}] must be an output index in {-n_outputs}.."
                             f"{n_outputs - 1}, got {t!r}")
        out.append(int(t) % n_outputs)
    return out


def _baselines(baselines: Any, shape: tuple[int, ...]) -> list[_Fill]:
    """Per-image fills: a scalar or (C,) values per image (N entries)."""
    n, channels = shape[:2]
    if baselines is None:
        return [0.0] * n
    if isinstance(baselines, tuple):
        if len(baselines) != 1:
            raise ValueError(f"baselines holds {len(baselines)} entries; kryptonref models take "
                             "one input")
        baselines = baselines[0]
    if _is_tensor(baselines):
        baselines = baselines.detach().cpu().double().numpy()
    if isinstance(baselines, bool) or not isinstance(
            baselines, (numbers.Real, np.ndarray, np.generic)):
        raise TypeError(f"baselines must be a number, a tensor or an array, got "
                        f"{type(baselines).__name__}")
    b = np.asarray(baselines, np.float64)
    if b.ndim == 0:
        return [float(b)] * n
    try:
        full = np.broadcast_to(b, shape)
    except ValueError:
        raise ValueError(f"baselines of shape {b.shape} do not broadcast to the inputs "
                         f"{tuple(shape)}") from None
    corner = full[:, :, :1, :1]
    if not np.array_equal(full, np.broadcast_to(corner, shape)):
        raise ValueError("baselines that vary over the image are not supported: kryptonref's "
                         "occluding patch has one value per channel; give a scalar or "
                         f"per-channel values ((1, {channels}, 1, 1) or (N, {channels}, 1, 1))")
    return [np.ascontiguousarray(corner[i, :, 0, 0]) for i in range(n)]


def _progress(show: object) -> bool:
    if not show:
        return False
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


def _attribute(model: Model, x: npt.NDArray[np.floating[Any]], window: tuple[int, int],
               stride: tuple[int, int], fills: Sequence[_Fill], targets: list[int],
               batch_size: int, progress: bool, device: str) -> npt.NDArray[np.floating[Any]]:
    """kryptonref's attribution (N, C, H, W): one batched call when the fill is shared."""
    from .explain import occlusion

    def run(images: npt.NDArray[np.floating[Any]], fill: _Fill,
            target: int | list[int]) -> npt.NDArray[np.floating[Any]]:
        # not None: mode="incremental" (no drill-down) computes the attribution
        return cast("npt.NDArray[np.floating[Any]]", occlusion(
            model, images, patch=window, stride=stride, fill=fill, target=target,
            mode="incremental", batch_size=batch_size, progress=progress,
            device=device).attribution)

    if all(np.array_equal(f, fills[0]) for f in fills):
        return run(x, fills[0], targets)
    return np.stack([run(x[i], fills[i], targets[i]) for i in range(len(x))])
