"""PyTorch import: :func:`from_torch` turns an ``nn.Module`` into a kryptonref Model.

The module is exported to ONNX in memory (never a file) and read by
:func:`~kryptonref.models.onnx_import.from_onnx`; the result is then checked
against the module itself on random inputs, so a module kryptonref would read
wrongly raises here instead of explaining wrongly later. torch is an optional
dependency (``pip install 'kryptonref[torch]'``), imported on the first call.

Exporters: the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``,
opset 17) needs nothing beyond torch; where it fails and ``onnxscript`` is
installed, the dynamo exporter (opset 18) is tried. Their warnings and progress
messages are silenced: the user asked for a model, not an exporter's log.
"""
from __future__ import annotations

import contextlib
import importlib.util
import inspect
import io
import logging
import warnings
from collections.abc import Collection, Iterator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .. import validate

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["from_torch", "import_torch"]

#: Relative tolerance of the check against the module (of the outputs' largest magnitude).
CHECK_RTOL = {np.dtype(np.float32): 1e-3, np.dtype(np.float64): 1e-8}
#: Examples in the check's random batch.
CHECK_BATCH = 2


# Any, as onnx_export.import_onnx: what `import torch` gives is Any without torch installed.
def import_torch() -> Any:
    """``torch``, or ImportError saying which extra installs it."""
    from .._optional import optional_module
    return optional_module("torch", "from_torch", "torch", "PyTorch")


# module: a torch.nn.Module (typed Any, as torch's objects here: torch is optional).
def from_torch(module: Any, input_shape: Sequence[int],
               dtype: npt.DTypeLike = np.float32) -> Model:
    """Read a PyTorch image classifier into a kryptonref :class:`~kryptonref.model.Model`.

    Parameters
    ----------
    module : torch.nn.Module
        The network, in eval mode (``module.eval()``), taking one image batch
        ``(N, C, H, W)`` and returning one tensor ``(N, K)`` of class scores.
    input_shape : (C, H, W)
        The image size to import it at (kryptonref models have a fixed input size).
    dtype : float32 or float64
        Computation dtype of the returned model.

    Returns
    -------
    Model
        Node names follow the exporter's, which carry the module paths
        (``/features/features.0/Conv``).

    Raises
    ------
    ImportError
        Without torch (``pip install 'kryptonref[torch]'``) or onnx.
    TypeError
        If ``module`` is not an ``nn.Module`` (a plain function, a lambda).
    ValueError
        For a module in training mode (naming the submodule), one taking several
        inputs or returning several outputs, one the exporters cannot export, an
        operator kryptonref does not support (naming the module, the operator and
        the ONNX node), or a converted model that does not reproduce the module.

    Examples
    --------
    >>> import torch, kryptonref as kr                          # doctest: +SKIP
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(),
    ...     torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()
    >>> model = kr.from_torch(net, (3, 32, 32))                 # doctest: +SKIP
    """
    torch = import_torch()
    _check_module(torch, module)
    shape = _input_shape(input_shape)
    dtype = validate.dtype(dtype)
    name = type(module).__name__
    param_dtype, device = _module_dtype_device(torch, module)
    example = torch.zeros((1,) + shape, dtype=param_dtype, device=device)
    _check_single_output(torch, module, example, name)
    onnx_bytes = _export(torch, module, example, name)
    from .onnx_import import from_onnx
    try:
        model = from_onnx(onnx_bytes, dtype=dtype, input_shape=shape)
    except ValueError as err:
        message = str(err).removeprefix("from_onnx: ")
        raise ValueError(f"from_torch: cannot import {name}: {message}") from None
    _check_reproduces(torch, module, model, param_dtype, device, name)
    return model


def _check_module(torch: ModuleType, module: Any) -> None:
    if not isinstance(module, torch.nn.Module):
        what = type(module).__name__
        if callable(module):
            what = f"the {what} {getattr(module, '__name__', what)!r}"
        raise TypeError(f"from_torch: expected a torch.nn.Module, got {what}; wrap the "
                        "function in an nn.Module, or export it with torch.onnx.export and "
                        "read it with kr.from_onnx")
    training = [(sub, m) for sub, m in module.named_modules() if m.training]
    if training:
        sub, m = training[0]
        where = f"submodule {sub!r} ({type(m).__name__})" if sub else \
            f"the module ({type(m).__name__})"
        raise ValueError(f"from_torch: {where} is in training mode (batch norm and dropout "
                         "behave differently there); call module.eval() first")
    parameters: Collection[inspect.Parameter]
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):   # a compiled forward without a signature
        parameters = []
    required = [p for p in parameters if p.default is p.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(required) > 1:
        raise ValueError(f"from_torch: {type(module).__name__}.forward takes several inputs "
                         f"({', '.join(p.name for p in required)}); kryptonref models take "
                         "one image batch")


def _input_shape(value: object) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise ValueError(f"from_torch: input_shape must be (C, H, W), got {value!r}")
    return tuple(validate.positive_int(v, "input_shape") for v in value)


def _module_dtype_device(torch: ModuleType, module: Any) -> tuple[Any, Any]:
    """The dtype and device of the module's floating-point parameters (float32, CPU if none)."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype, tensor.device
    return torch.float32, torch.device("cpu")


def _check_single_output(torch: ModuleType, module: Any, example: Any, name: str) -> None:
    with torch.no_grad():
        try:
            output = module(example)
        except Exception as err:
            raise ValueError(f"from_torch: {name} fails on an input of shape "
                             f"{tuple(example.shape)}: {type(err).__name__}: {err}") from None
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"from_torch: {name} returns {type(output).__name__}; kryptonref "
                         "models have one output tensor (N, K) of class scores")
    if output.ndim != 2 or output.shape[0] != 1:
        raise ValueError(f"from_torch: {name} returns shape {tuple(output.shape)} for one "
                         "image; kryptonref models return a vector of class scores (N, K)")


@contextlib.contextmanager
def _quiet(torch: ModuleType) -> Iterator[None]:
    """No warnings, no exporter log lines, no progress prints."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo",
                                              "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            for lg in loggers:
                lg.setLevel(logging.ERROR)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _export(torch: ModuleType, module: Any, example: Any, name: str) -> bytes:
    """The module as ONNX bytes: TorchScript exporter, else dynamo (with onnxscript)."""
    errors: list[str] = []
    with _quiet(torch), torch.no_grad():
        buffer = io.BytesIO()
        try:
            torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["output"])
            return buffer.getvalue()
        except Exception as err:  # noqa: BLE001 - any exporter failure is reported below
            errors.append(f"TorchScript exporter: {type(err).__name__}: {err}")
        if importlib.util.find_spec("onnxscript") is not None:
            buffer = io.BytesIO()
            try:
                program = torch.onnx.export(module, (example,), dynamo=True, opset_version=18,
                                            input_names=["input"], output_names=["output"])
                program.save(buffer)
                return buffer.getvalue()
            except Exception as err:  # noqa: BLE001
                errors.append(f"dynamo exporter: {type(err).__name__}: {err}")
        else:
            errors.append("dynamo exporter: not tried (needs onnxscript)")
    detail = "; ".join(" ".join(e.split())[:400] for e in errors)
    raise ValueError(f"from_torch: torch.onnx.export cannot export {name}: {detail}")


def _check_reproduces(torch: ModuleType, module: Any, model: Model, param_dtype: Any,
                      device: Any, name: str) -> None:
    """ValueError unless ``model`` gives the module's outputs on a random batch."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((CHECK_BATCH,) + tuple(model.graph.input_shape))
    with torch.no_grad():
        expected = module(torch.as_tensor(x, dtype=param_dtype, device=device))
    expected = expected.detach().cpu().double().numpy()
    got = np.asarray(model.forward(x.astype(model.dtype)), np.float64)
    if got.shape != expected.shape:
        raise ValueError(f"from_torch: the converted {name} returns shape {got.shape}, the "
                         f"module {expected.shape}")
    rtol = CHECK_RTOL[np.dtype(model.dtype)]
    if param_dtype != torch.float64:
        rtol = CHECK_RTOL[np.dtype(np.float32)]
    scale = max(float(np.abs(expected).max()), 1e-30)
    error = float(np.abs(got - expected).max())
    if not error <= rtol * scale:
        raise ValueError(f"from_torch: the converted {name} does not reproduce the module: "
                         f"largest difference {error:.3g} on outputs up to {scale:.3g} "
                         f"(tolerance {rtol:g} of that); please report it")
