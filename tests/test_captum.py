"""kryptonref.captum.Occlusion against captum.attr.Occlusion itself, and its refusals.

Float64 modules: Captum divides in float32 (``format_result`` calls ``.float()``), so
the two agree to float32 rounding of the attributions, 1e-5 of their largest value.
(measured: 3e-8). Float32 modules: each attribution is a difference of two nearly equal
float32 scores computed in a different order (im2col + BLAS against oneDNN), so the two
differ by a few float32 ulps of the scores, which relative to the largest attribution
(scores minus scores) is larger: 2.4e-6 measured here; 1e-4 leaves room for other BLAS
builds.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")

import kryptonref as kr  # noqa: E402
from kryptonref.captum import Occlusion  # noqa: E402

from . import torch_models  # noqa: E402

SHAPE = (3, 12, 14)


def images(n=3, dtype=torch.float64, seed=0, shape=SHAPE):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n,) + shape, generator=g, dtype=dtype)


def captum(module, x, **kwargs):
    kwargs.setdefault("perturbations_per_eval", 8)
    with torch.no_grad():
        return captum_attr.Occlusion(module).attribute(x, **kwargs)


def assert_close(ours, theirs, rtol=1e-5):
    ours = ours.detach().double().numpy() if torch.is_tensor(ours) else np.asarray(ours)
    theirs = theirs.detach().double().numpy()
    assert ours.shape == theirs.shape
    scale = np.abs(theirs).max()
    assert scale > 0
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("build", [torch_models.chain, torch_models.residual])
def test_equals_captum_per_example_targets_truncated_windows(build):
    """Batch of 3, a target per example, windows truncated at both borders (12 - 4 = 8
    is no multiple of 3, 14 - 5 = 9 no multiple of 4), non-square images."""
    module = build(dtype=torch.float64)
    x = images()
    kwargs = dict(sliding_window_shapes=(3, 4, 5), strides=(3, 3, 4), target=[0, 3, 1])
    ours = Occlusion(module).attribute(x, perturbations_per_eval=16, **kwargs)
    assert isinstance(ours, torch.Tensor) and ours.dtype == torch.float64
    assert_close(ours, captum(module, x, **kwargs))


def test_equals_captum_with_tensor_baselines_and_targets():
    module = torch_models.residual(dtype=torch.float64)
    x = images(seed=1)
    baselines = torch.tensor([0.5, -1.0, 0.25], dtype=torch.float64).reshape(1, 3, 1, 1)
    kwargs = dict(sliding_window_shapes=((3, 3, 3),), strides=2, baselines=baselines,
                  target=torch.tensor([2, 0, 3]))
    assert_close(Occlusion(module).attribute(x, **kwargs), captum(module, x, **kwargs))
    ours, = Occlusion(module).attribute((x,), **kwargs)              # Captum's tuple form
    theirs, = captum(module, (x,), **kwargs)
    assert_close(ours, theirs)
    per_image = torch.tensor([[0.1, 0.2, 0.3], [0.0, 0.0, 0.0], [-0.5, 1, 2]],
                             dtype=torch.float64)[:, :, None, None]
    kwargs.update(baselines=per_image, strides=(3, 3, 3))
    assert_close(Occlusion(module).attribute(x, **kwargs), captum(module, x, **kwargs))


def test_equals_captum_scalar_baseline_negative_target_default_stride():
    module = torch_models.residual(dtype=torch.float64)
    x = images(n=2, seed=2, shape=(3, 9, 7))
    kwargs = dict(sliding_window_shapes=(3, 4, 3), baselines=0.5, target=-1)
    assert_close(Occlusion(module).attribute(x, **kwargs), captum(module, x, **kwargs))


def test_numpy_in_numpy_out_and_a_kryptonref_model():
    module = torch_models.chain(dtype=torch.float64)
    model = kr.from_torch(module, SHAPE, dtype=np.float64)
    x = images(n=2, seed=3)
    kwargs = dict(sliding_window_shapes=(3, 5, 5), strides=(3, 4, 4), target=2)
    ours = Occlusion(model).attribute(x.numpy(), **kwargs)
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float64
    assert_close(ours, captum(module, x, **kwargs))
    as_float32 = Occlusion(model).attribute(x.numpy().astype(np.float32), **kwargs)
    assert as_float32.dtype == np.float32


def test_one_output_model_needs_no_target():
    module = torch_models.one_output(dtype=torch.float64)
    x = images(n=2, seed=4)
    kwargs = dict(sliding_window_shapes=(3, 4, 4), strides=(3, 4, 4))
    assert_close(Occlusion(module).attribute(x, **kwargs), captum(module, x, **kwargs))


def test_float32_module_and_input():
    module = torch_models.residual()
    x = images(dtype=torch.float32, seed=5).requires_grad_(True)
    kwargs = dict(sliding_window_shapes=(3, 4, 4), strides=(3, 4, 4), target=[1, 1, 2])
    ours = Occlusion(module).attribute(x, **kwargs)
    assert ours.dtype == torch.float32 and not ours.requires_grad
    assert_close(ours, captum(module, x.detach(), **kwargs), rtol=1e-4)


def test_conversion_is_cached_and_redone_when_the_weights_change(monkeypatch):
    import kryptonref.models.torch_io as torch_io
    calls = []
    real = torch_io.from_torch

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)
    monkeypatch.setattr(torch_io, "from_torch", counting)
    module = torch_models.chain(dtype=torch.float64)
    occ = Occlusion(module)
    x = images(n=1, seed=6)
    kwargs = dict(sliding_window_shapes=(3, 6, 7), strides=(3, 6, 7), target=0)
    occ.attribute(x, **kwargs)
    occ.attribute(x, **kwargs)
    assert len(calls) == 1
    occ.attribute(images(n=1, shape=(3, 12, 12)), **kwargs)          # another shape
    assert len(calls) == 2
    optimiser = torch.optim.SGD(module.parameters(), lr=0.5)
    module(x).sum().backward()
    optimiser.step()
    assert_close(occ.attribute(x, **kwargs), captum(module, x, **kwargs))
    assert len(calls) == 3
    state = torch_models.chain(dtype=torch.float64, seed=9).state_dict()
    module.load_state_dict(state)
    assert_close(occ.attribute(x, **kwargs), captum(module, x, **kwargs))
    assert len(calls) == 4
    module[0].train()
    with pytest.raises(ValueError, match=r"submodule '0' \(Conv2d\) is in training mode"):
        occ.attribute(x, **kwargs)


@pytest.fixture(scope="module")
def occ():
    return Occlusion(torch_models.chain(dtype=torch.float64))


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(sliding_window_shapes=(1, 4, 4)), ValueError,
     r"covers 1 of the 3 channels; kryptonref occludes all channels at once: use \(3, 4, 4\)"),
    (dict(sliding_window_shapes=(4, 4)), ValueError, r"must be \(C, h, w\)"),
    (dict(sliding_window_shapes=(3, 13, 4)), ValueError, "larger than the images"),
    (dict(strides=(3, 5, 2)), ValueError, "a stride cannot be larger than the window"),
    (dict(target=[1, 2]), ValueError, "target has 2 entries for 3 examples"),
    (dict(target=5), ValueError, r"target\[0\] must be an output index in -5..4, got 5"),
    (dict(target=(0, 1)), ValueError, "tuple targets"),
    (dict(target=None), ValueError, "target=None needs a model with one output per example"),
    (dict(target="cat"), TypeError, "target must be an int, a list or a tensor"),
    (dict(baselines=torch.zeros(2, 3, 1, 1)), ValueError,
     r"baselines of shape \(2, 3, 1, 1\) do not broadcast to the inputs \(3, 3, 12, 14\)"),
    (dict(baselines=torch.rand(3, 12, 14)), ValueError, "baselines that vary over the image"),
    (dict(baselines="grey"), TypeError, "baselines must be a number"),
    (dict(additional_forward_args=(1,)), ValueError, "additional_forward_args is not supported"),
    (dict(perturbations_per_eval=0), ValueError, "perturbations_per_eval must be a positive"),
])
def test_bad_calls_give_one_clear_error(occ, kwargs, err, match):
    call = dict(sliding_window_shapes=(3, 4, 4), strides=(3, 4, 4), target=0)
    call.update(kwargs)
    with pytest.raises(err, match=match):
        occ.attribute(images(), **call)


def test_bad_inputs_and_forward_funcs(occ):
    with pytest.raises(TypeError, match="a Python function cannot be recomputed"):
        Occlusion(lambda x: x)
    window = dict(sliding_window_shapes=(3, 4, 4), target=0)
    with pytest.raises(ValueError, match="inputs holds 2 tensors"):
        occ.attribute((images(), images()), **window)
    with pytest.raises(ValueError, match=r"batch of images \(N, C, H, W\), got shape \(3, 12, 14\)"):
        occ.attribute(images()[0], **window)
    with pytest.raises(TypeError, match="floating-point"):
        occ.attribute(torch.zeros((1,) + SHAPE, dtype=torch.int64), **window)
    with pytest.raises(TypeError, match="a torch tensor or a NumPy array"):
        occ.attribute([[1.0]], **window)
    model = kr.from_torch(torch_models.chain(), SHAPE)
    with pytest.raises(ValueError, match=r"the model takes \(3, 12, 14\)"):
        Occlusion(model).attribute(images(shape=(3, 12, 12)), **window)
