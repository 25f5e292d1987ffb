"""The CUDA backend (numba-cuda): its kernels, memory, API and bad input.

The engine's incremental-equals-full properties run on both backends in
``tests/test_engine.py``; this file holds what is CUDA's own. On CPU-only
machines these run under Numba's CUDA simulator (``tests/conftest.py`` sets
``NUMBA_ENABLE_CUDASIM=1``) with tiny shapes; on a GPU,
``NUMBA_ENABLE_CUDASIM=0 python -m pytest -m "cuda or gpu"`` runs the real
kernels. Every kernel is also compiled to PTX (``test_every_kernel_compiles_to_ptx``),
which type-checks it without a GPU.
"""
import json
import sys
import textwrap

import numba
import numpy as np
import pytest

import kryptonref as kr
from kryptonref import backends as backends_module
from kryptonref.backends import get_backend

from .conftest import SIMULATOR, require
from .naive import naive_forward
from .processes import run_python
from .test_engine import check_identity, small_net

pytestmark = pytest.mark.cuda

CUDA = get_backend("cuda")
from kryptonref._cuda import cupy_or_none  # noqa: E402  (after the backend checks)
from kryptonref.backends import cuda as cuda_backend_module, cuda_memory  # noqa: E402
from kryptonref.layers import conv_cuda  # noqa: E402
from kryptonref.layers.registry import registered  # noqa: E402


def one_layer(layer, shape=(3, 7, 6)):
    g = kr.Graph(shape)
    g.add(layer, name="layer")
    return g


def merge(layer, shape=(3, 6, 5)):
    g = kr.Graph(shape)
    g.add(kr.Conv2d(shape[0], 2, 3, padding=1), g.input_name, name="a")
    g.add(kr.Conv2d(shape[0], 2, 1), g.input_name, name="b")
    g.add(kr.Conv2d(shape[0], 3, 3, padding=1), g.input_name, name="c")
    g.add(layer, ["a", "b"] if isinstance(layer, kr.Add) else ["a", "c", "b"], name="merge")
    return g


def head(layer_factory, shape=(3, 5, 4)):
    g = kr.Graph(shape)
    g.add(kr.Flatten(), name="flat")
    g.add(layer_factory(shape[0] * shape[1] * shape[2]), name="layer")
    return g


GRAPHS = {
    "conv3x3": one_layer(kr.Conv2d(3, 4, 3, padding=1)),
    "conv_strided_asymmetric": one_layer(kr.Conv2d(3, 2, (3, 2), stride=(2, 1),
                                                   padding=((1, 0), (2, 1)), bias=False)),
    "conv_dilated": one_layer(kr.Conv2d(3, 2, 3, padding=2, dilation=2)),
    "conv_1x1": one_layer(kr.Conv2d(3, 5, 1)),
    "conv_groups": one_layer(kr.Conv2d(4, 6, 3, padding=1, groups=2), (4, 6, 5)),
    "conv_depthwise": one_layer(kr.Conv2d(3, 3, 3, stride=2, padding=1, groups=3)),
    "maxpool_ceil": one_layer(kr.MaxPool2d(3, 2, 1, ceil_mode=True)),
    "maxpool_dilated": one_layer(kr.MaxPool2d(2, 1, dilation=2)),
    "avgpool_include_pad": one_layer(kr.AvgPool2d(3, 2, 1, ceil_mode=True)),
    "avgpool_exclude_pad": one_layer(kr.AvgPool2d(3, 2, 1, count_include_pad=False)),
    "global_avg": one_layer(kr.GlobalAvgPool2d()),
    "adaptive_avg": one_layer(kr.AdaptiveAvgPool2d((3, 4))),
    "relu": one_layer(kr.ReLU()),
    "relu6": one_layer(kr.ReLU6()),
    "batchnorm": one_layer(kr.BatchNorm2d(3)),
    "dropout": one_layer(kr.Dropout()),
    "add": merge(kr.Add()),
    "concat": merge(kr.Concat()),
    "linear": head(lambda n: kr.Linear(n, 7)),
    "softmax": head(lambda n: kr.Softmax()),
}


@pytest.fixture(params=["direct", "gemm"])
def conv_method(request, monkeypatch):
    """Run dense convolutions with the direct kernel, then with im2col + GEMM."""
    monkeypatch.setattr(conv_cuda, "DEFAULT_METHOD", request.param)
    return request.param


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_full_inference_of_each_layer_matches_the_oracle(name, conv_method):
    graph = GRAPHS[name]
    model = kr.Model(graph, seed=1, dtype=np.float64)
    x = np.random.default_rng(2).normal(size=(2,) + graph.input_shape) * 3
    expected = naive_forward(graph, model.params, x)[graph.output]
    np.testing.assert_allclose(model.forward(x, device="cuda"), expected, rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("which", ["tiled", "simple"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5, 7, 3), (1, 13, 1), (9, 1, 6), (4, 8, 4)])
def test_numba_gemms_match_numpy(shape, dtype, which):
    m, k, n = shape
    rng = np.random.default_rng(sum(shape))
    a, b = rng.normal(size=(m, k)).astype(dtype), rng.normal(size=(k, n)).astype(dtype)
    out = CUDA.to_device(np.full((m, n), np.nan, dtype))
    try:
        conv_cuda.gemm_backend(which)
        conv_cuda.gemm(CUDA.to_device(a), CUDA.to_device(b), out)
    finally:
        conv_cuda.gemm_backend("auto")
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(CUDA.to_host(out), a.astype(np.float64) @ b, rtol=tol, atol=tol)


def test_im2col_in_chunks_gives_the_same_convolution(monkeypatch):
    """A batch larger than the im2col budget is split; a short last chunk included."""
    graph = one_layer(kr.Conv2d(3, 4, 3, padding=1))
    model = kr.Model(graph, seed=4, dtype=np.float64)
    x = np.random.default_rng(5).normal(size=(5,) + graph.input_shape)
    monkeypatch.setattr(conv_cuda, "DEFAULT_METHOD", "gemm")
    monkeypatch.setattr(conv_cuda, "IM2COL_BYTES", 2 * 27 * 42 * 8)  # two images per chunk
    np.testing.assert_allclose(model.forward(x, device="cuda"), model.forward(x), rtol=1e-12,
                               atol=1e-12)


def test_engine_with_the_gemm_convolution(conv_method):
    graph = small_net()
    positions = kr.patch_positions(graph.input_shape[1:], (3, 4), (4, 3))[:5]
    result, _ = check_identity(graph, ((3, 4), positions, 0.5, 2, 11), np.float64,
                               device="cuda")
    cpu = kr.incremental_inference(kr.Model(graph, seed=11, dtype=np.float64),
                                   np.random.default_rng(11).normal(size=graph.input_shape),
                                   positions, (3, 4), fill=0.5, batch_size=2)
    assert result.macs == cpu.macs and result.region_sizes == cpu.region_sizes


#: Zoo models with real kernels; the simulator (far too slow for them) runs a small net.
ZOO = ([("small_net", 12)] if SIMULATOR else
       [pytest.param(name, size, marks=pytest.mark.gpu)
        for name, size in [("resnet18", 64), ("mobilenet_v2", 64), ("densenet121", 64),
                           ("googlenet", 64), ("inception_v3", 75), ("vgg11_bn", 64),
                           ("squeezenet1_1", 64)]])


@pytest.mark.slow
@pytest.mark.parametrize("name,size", ZOO)
def test_zoo_models_incremental_on_cuda_equal_full_inference(name, size):
    """float32, 1e-4 relative to the output's scale, against CPU full inference."""
    if name == "small_net":
        model = kr.Model(small_net(), seed=3)
    else:
        model = kr.zoo(name, image_size=size, num_classes=10, seed=3)
    image = np.random.default_rng(3).normal(size=model.graph.input_shape).astype(np.float32)
    positions = kr.patch_positions(model.graph.input_shape[1:], 8, 8)[::3]
    got = kr.incremental_inference(model, image, positions, 8, batch_size=16, device="cuda")
    occluded = np.repeat(image[None], len(positions), axis=0)
    for i, (y, x) in enumerate(positions):
        occluded[i, :, y:y + 8, x:x + 8] = 0
    expected = model.forward(occluded)
    np.testing.assert_allclose(got.output, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    np.testing.assert_allclose(model.forward(occluded, device="cuda"), expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("mode", ["incremental", "full"])
def test_occlusion_on_cuda_equals_the_cpu(mode):
    graph = small_net()
    model = kr.Model(graph, seed=6, dtype=np.float64)
    image = np.random.default_rng(6).normal(size=graph.input_shape)
    cpu = kr.occlusion(model, image, patch=(4, 3), stride=(3, 4), mode=mode, batch_size=4)
    gpu = kr.occlusion(model, image, patch=(4, 3), stride=(3, 4), mode=mode, batch_size=4,
                       device="cuda")
    np.testing.assert_allclose(gpu.heatmap, cpu.heatmap, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gpu.attribution, cpu.attribution, rtol=1e-10, atol=1e-13)
    assert gpu.macs == cpu.macs and gpu.label == cpu.label


def test_forward_all_and_non_contiguous_input_on_cuda():
    graph = small_net()
    model = kr.Model(graph, seed=2, dtype=np.float32)
    x = np.asfortranarray(np.random.default_rng(0).normal(size=(2,) + graph.input_shape))
    x = x.astype(np.float32, order="F")
    cpu, gpu = model.forward_all(x), model.forward_all(x, device="cuda")
    assert set(cpu) == set(gpu)
    for name in cpu:
        np.testing.assert_allclose(gpu[name], cpu[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_peak_memory_is_counted():
    CUDA.reset_peak()
    live_before, _ = CUDA.memory()
    model = kr.Model(small_net(), seed=0, dtype=np.float64)
    weights = sum(v.nbytes for p in model.params.values() for v in p.values())
    model.forward(np.zeros((3,) + model.graph.input_shape), device="cuda")
    live, peak = CUDA.memory()
    assert live >= live_before + weights                     # the weights stay on the device
    assert peak >= live_before + weights + 3 * 2 * 12 * 10 * 8  # and the input batch was there


def test_cpu_only_parameters_stay_on_the_host(monkeypatch):
    """Winograd filters and row taps are neither uploaded nor counted as device weights."""
    from kryptonref.layers import winograd
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    monkeypatch.delenv("KRYPTONREF_WINOGRAD", raising=False)
    graph = kr.Graph((2, 6, 5))
    graph.add(kr.Conv2d(2, 3, 3, padding=1), name="conv")
    model = kr.Model(graph, seed=0)
    assert {"taps", "winograd"} <= set(model.prepared["conv"])
    on_device = CUDA.params(model)["conv"]
    assert not {"taps", "winograd"} & set(on_device)
    x = np.random.default_rng(0).normal(size=(2, 2, 6, 5)).astype(np.float32)
    np.testing.assert_allclose(model.forward(x, device="cuda"), model.forward(x), rtol=1e-4,
                               atol=1e-5)


# -- bad input ------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["gpu", "CUDA", None, 0])
def test_unknown_device_is_rejected(device):
    model = kr.Model(small_net(), seed=0)
    with pytest.raises(ValueError, match="device must be one of"):
        model.forward(np.zeros((1, 2, 12, 10), np.float32), device=device)
    with pytest.raises(ValueError, match="device must be one of"):
        kr.occlusion(model, np.zeros((2, 12, 10), np.float32), patch=4, device=device)


def test_no_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(cuda_backend_module, "cuda_error", lambda: "no CUDA GPU is available")
    monkeypatch.setattr(backends_module, "_BACKENDS", {})
    with pytest.raises(RuntimeError, match="device='cuda' is not usable: no CUDA GPU"):
        kr.incremental_inference(kr.Model(small_net()), np.zeros((2, 12, 10), np.float32),
                                 [(0, 0)], 3, device="cuda")


def test_missing_numba_cuda_names_the_extra(monkeypatch):
    monkeypatch.setattr(backends_module, "_BACKENDS", {})
    for name in list(sys.modules):
        if name.startswith("kryptonref.") and (name.endswith("_cuda") or name.endswith(".cuda")
                                               or name.endswith("cuda_memory")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "numba.cuda", None)
    monkeypatch.delattr(numba, "cuda", raising=False)
    with pytest.raises(ImportError, match=r"kryptonref\[cuda\]"):
        get_backend("cuda")


def test_a_model_too_large_for_the_gpu_says_how_much_it_needs(monkeypatch):
    monkeypatch.setattr(cuda_memory, "free_bytes", lambda: 1000)
    model = kr.Model(small_net(), seed=0)
    with pytest.raises(MemoryError, match=r"weights need [\d.]+ KiB of GPU memory; only 1.0 KiB are free"):
        model.forward(np.zeros((1, 2, 12, 10), np.float32), device="cuda")


def test_wrong_dtype_and_shape_on_cuda():
    model = kr.Model(small_net(), seed=0)
    with pytest.raises(TypeError, match="floating-point"):
        model.forward(np.zeros((1, 2, 12, 10), np.int32), device="cuda")
    with pytest.raises(ValueError):
        model.forward(np.zeros((1, 3, 12, 10), np.float32), device="cuda")
    with pytest.raises(TypeError, match="expected a NumPy or device array"):
        CUDA.to_device([1.0, 2.0])


# -- PTX ------------------------------------------------------------------------------
#: Every module holding CUDA kernels: each layer type's (from the registry), the gather
#: kernels and the device memory's.
KERNEL_MODULES = sorted({record.cuda.partition(":")[0] for record in registered() if record.cuda}
                        | {"kryptonref.layers.window_cuda", "kryptonref.backends.cuda_memory"})

PTX_SCRIPT = textwrap.dedent("""
    import importlib, json, os, sys
    os.environ["NUMBA_ENABLE_CUDASIM"] = "0"
    from numba import cuda
    results = {}
    for module in (importlib.import_module(name) for name in sys.argv[1:]):
        for index, (kernel, signature) in enumerate(module.KERNELS):
            for ftype in ("float32", "float64") if "{T}" in signature else ("fixed",):
                name = (f"{module.__name__.rsplit('.', 1)[1]}.{index}."
                        f"{kernel.py_func.__name__}[{ftype}]")
                try:
                    ptx, _ = cuda.compile_ptx(kernel.py_func, signature.format(T=ftype),
                                              cc=(8, 0))
                    results[name] = "ok" if ".entry" in ptx else "no .entry in the PTX"
                except Exception as exc:
                    results[name] = f"{type(exc).__name__}: {exc}"[:2000]
    print(json.dumps(results))
""")


@pytest.fixture(scope="module")
def ptx_results():
    out = run_python(PTX_SCRIPT, env={"NUMBA_ENABLE_CUDASIM": "0"}, timeout=900,
                     args=KERNEL_MODULES)
    return json.loads(out.strip().splitlines()[-1])


def test_every_kernel_compiles_to_ptx(ptx_results):
    """``cuda.compile_ptx`` type-checks each kernel for float32 and float64 (no GPU needed)."""
    import importlib
    expected = sum(2 if "{T}" in signature else 1
                   for m in map(importlib.import_module, KERNEL_MODULES)
                   for _, signature in m.KERNELS)
    assert len(ptx_results) == expected
    failed = {k: v for k, v in ptx_results.items() if v != "ok"}
    assert not failed, failed


def test_gemm_backend_choices():
    with pytest.raises(ValueError, match="GEMM backend must be"):
        conv_cuda.gemm_backend("magma")
    if not cupy_or_none():
        with pytest.raises(ImportError, match=r"kryptonref\[cupy\]"):
            conv_cuda.gemm_backend("cublas")
    assert conv_cuda.gemm_backend() in conv_cuda.GEMM_BACKENDS


# -- command line ---------------------------------------------------------------------
def tiny_onnx_classifier(path):
    require("onnx", "onnx")
    g = kr.Graph((3, 12, 12))
    g.add(kr.Conv2d(3, 4, 3, padding=1), name="conv")
    g.add(kr.ReLU(), name="relu")
    g.add(kr.MaxPool2d(2), name="pool")
    g.add(kr.Flatten(), name="flat")
    g.add(kr.Linear(4 * 6 * 6, 5), name="fc")
    kr.to_onnx(kr.Model(g, seed=8), path)
    return path


def test_cli_occlude_on_cuda_equals_the_cpu(tmp_path, capsys):
    from kryptonref.cli import main
    require("PIL", "image")
    from kryptonref.images import sample_image_path
    onnx_path = tiny_onnx_classifier(str(tmp_path / "tiny.onnx"))
    results = {}
    for device in ("cpu", "cuda"):
        heat = str(tmp_path / f"{device}.npy")
        code = main(["occlude", sample_image_path(), "--onnx", onnx_path, "--patch", "4",
                     "--stride", "4", "--device", device, "--save", heat, "--json",
                     "--no-progress"])
        assert code == 0
        results[device] = (json.loads(capsys.readouterr().out), np.load(heat))
    (cpu, cpu_heat), (gpu, gpu_heat) = results["cpu"], results["cuda"]
    assert gpu["device"] == "cuda" and gpu["label"] == cpu["label"]
    np.testing.assert_allclose(gpu_heat, cpu_heat, rtol=1e-4, atol=1e-6)


def test_cli_without_a_gpu_exits_non_zero_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from kryptonref.cli import main
    require("PIL", "image")
    from kryptonref.images import sample_image_path
    monkeypatch.setattr(cuda_backend_module, "cuda_error", lambda: "no CUDA GPU is available")
    monkeypatch.setattr(backends_module, "_BACKENDS", {})
    onnx_path = tiny_onnx_classifier(str(tmp_path / "tiny.onnx"))
    heat = tmp_path / "heat.npy"
    code = main(["occlude", sample_image_path(), "--onnx", onnx_path, "--device", "cuda",
                 "--patch", "4", "--save", str(heat)])
    assert code == 1
    assert "device='cuda' is not usable: no CUDA GPU" in capsys.readouterr().err
    assert not heat.exists()


def test_upload_gives_reshapeable_arrays_whatever_the_host_strides():
    """Length-1 axes may carry any stride in NumPy; Numba's reshape then refused (GPU bug)."""
    host = np.lib.stride_tricks.as_strided(np.arange(64.0), shape=(1, 1, 8, 8),
                                           strides=(8, 8, 64, 8))
    device_array = CUDA.to_device(host)
    np.testing.assert_array_equal(CUDA.to_host(device_array.reshape((64,))), np.arange(64.0))


def test_approximate_occlusion_on_cuda_equals_the_cpu():
    """tau and drill-down run on the same plan on both backends."""
    graph = small_net()
    model = kr.Model(graph, seed=9, dtype=np.float64)
    image = np.random.default_rng(9).normal(size=graph.input_shape)
    settings = dict(patch=3, stride=1, mode="approximate", tau=0.4, drilldown=True,
                    coarse_stride=2, batch_size=8)
    cpu = kr.occlusion(model, image, **settings)
    gpu = kr.occlusion(model, image, device="cuda", **settings)
    np.testing.assert_array_equal(gpu.computed, cpu.computed)
    np.testing.assert_allclose(gpu.heatmap, cpu.heatmap, rtol=1e-12, atol=1e-14)
    assert gpu.macs == cpu.macs


def test_gather_accumulate_and_in_place_elementwise_on_cuda():
    """The CUDA twins of ``accumulate=True`` and ``apply(..., out=x)``."""
    from kryptonref.layers.window import gather_windows as cpu_gather
    rng = np.random.default_rng(21)
    base, patch = rng.normal(size=(2, 5, 4)), rng.normal(size=(3, 2, 2, 2))
    offsets = [np.array(v, np.int64) for v in ([0, 3, 1], [2, 0, 1], [-1, 2, 4], [-2, 1, 3])]
    start = rng.normal(size=(3, 2, 4, 3))
    want = cpu_gather(base, patch, *offsets, 4, 3, 0.5, out=start.copy(), accumulate=True)
    out = CUDA.to_device(start)
    got = CUDA.gather_windows(CUDA.to_device(base), CUDA.to_device(patch),
                              *(CUDA.to_device(v) for v in offsets), 4, 3, 0.5, out=out,
                              accumulate=True)
    np.testing.assert_array_equal(CUDA.to_host(got), want)
    model = kr.Model(one_layer(kr.BatchNorm2d(3)), seed=2, dtype=np.float64)
    x = rng.normal(size=(2, 3, 7, 6))
    params = CUDA.params(model)["layer"]
    x_device = CUDA.to_device(x)
    same = CUDA.apply(model.graph.nodes["layer"].layer, params, x_device, out=x_device)
    assert same is x_device
    np.testing.assert_allclose(CUDA.to_host(same), model.forward(x), rtol=1e-12)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # simulator threads
@pytest.mark.parametrize("layer", [
    kr.ReLU(), kr.ReLU6(), kr.AvgPool2d(3, 1, 1), kr.AvgPool2d(2), kr.AdaptiveAvgPool2d((2, 3)),
    kr.MaxPool2d(3, 1, 1), kr.Conv2d(3, 4, 3, padding=1, bias=False)], ids=str)
def test_non_finite_values_on_cuda_as_on_the_cpu(layer, conv_method):
    """inf and NaN arising inside a network: no typed zero made as ``x * 0`` (inf * 0 = NaN)."""
    x = np.random.default_rng(8).normal(size=(2, 3, 7, 8))
    x[0, 0, 0, 0] = x[1, 2, 3, 3] = np.inf
    x[0, 1, 0, 0] = x[1, 0, 4, 4] = -np.inf
    x[1, 1, 6, 7] = np.nan
    graph = one_layer(layer, (3, 7, 8))
    model = kr.Model(graph, seed=1, dtype=np.float64)
    shape = graph.shapes["layer"]
    with np.errstate(invalid="ignore"):  # inf - inf (and, in the simulator, in the kernels)
        want = get_backend("cpu").full(layer, model.prepared["layer"], [x], shape)
        got = CUDA.to_host(CUDA.full(layer, CUDA.params(model)["layer"], [CUDA.to_device(x)],
                                     shape))
    assert np.isinf(want).any() or np.isnan(want).any()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_frozen_context_on_cuda_equals_the_cpu():
    """The squeeze-excitation gate kept at its unoccluded value, on both backends."""
    g = kr.Graph((3, 9, 8))
    g.add(kr.Conv2d(3, 4, 3, padding=1), name="conv")
    g.add(kr.GlobalAvgPool2d(), name="pool")
    g.add(kr.Conv2d(4, 2, 1), name="fc1")
    g.add(kr.SiLU(), name="act")
    g.add(kr.Conv2d(2, 4, 1), name="fc2")
    g.add(kr.HardSigmoid(), name="gate")
    g.add(kr.Mul(), inputs=["gate", "conv"], name="scale")
    g.add(kr.GlobalAvgPool2d(), name="head_pool")
    g.add(kr.Flatten(), name="flat")
    g.add(kr.Linear(4, 5), name="fc")
    model = kr.Model(g, seed=4, dtype=np.float64)
    image = np.random.default_rng(4).normal(size=g.input_shape)
    for freeze in (False, True):
        settings = dict(patch=3, stride=2, mode="approximate", freeze_context=freeze,
                        batch_size=4)
        cpu = kr.occlusion(model, image, **settings)
        gpu = kr.occlusion(model, image, device="cuda", **settings)
        np.testing.assert_allclose(gpu.heatmap, cpu.heatmap, rtol=1e-12, atol=1e-14)
        assert gpu.macs == cpu.macs
