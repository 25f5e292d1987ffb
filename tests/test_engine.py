"""The central identity: incremental inference equals full inference, at every node.

Hypothesis draws random architectures (chains and DAGs with residual adds,
projections, concats, whole-tensor layers, every registered layer type) and
random occlusion batches; for every position the engine's stitched output of
every node must equal full inference on the occluded image (float64 rtol 1e-10;
float32 rtol 1e-4, atol 1e-5). Each property runs once per backend: on the CPU,
and on CUDA (Numba's simulator on CPU-only machines, with tiny shapes and fewer
examples), always against CPU full inference.
"""
import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kryptonref as kr
from kryptonref import validate

from .conftest import SIMULATOR
from .strategies import architectures, occlusions

TOLERANCES = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=1e-4, atol=1e-5)}
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.data_too_large])
DEVICES = ["cpu", "cuda"]
#: Architecture size per backend: the simulator runs every CUDA thread in Python; the
#: CUDA backend refuses transformer operators (TensorOp), so its architectures have none.
SIZES = {"cpu": dict(), "cuda": dict(max_blocks=3, max_size=16 if SIMULATOR else 40,
                                    tensor_ops=False)}
#: Examples of the CUDA runs (the CPU runs take the count each test names).
CUDA_EXAMPLES = 15 if SIMULATOR else 30


def over_backends(cpu_examples):
    """A hypothesis property ``body(data, device)`` run once per backend, each with its
    own number of examples (``cpu_examples`` on the CPU, :data:`CUDA_EXAMPLES` on CUDA)."""
    def decorate(body):
        @pytest.mark.parametrize("device", DEVICES)
        @functools.wraps(body)
        def test(device):
            examples = cpu_examples if device == "cpu" else CUDA_EXAMPLES

            @settings(max_examples=examples, **SETTINGS)
            @given(st.data())
            def run(data):
                body(data, device)

            run()
        del test.__wrapped__  # pytest must see the (device) signature, not body's
        return test
    return decorate


def occlude(image, positions, patch_hw, fill):
    """The occluded images, built the obvious way (one copy per position)."""
    patch = validate.fill_patch(fill, image.shape[0], patch_hw, np.float64)
    batch = np.repeat(image[None], len(positions), axis=0)
    for i, (y, x) in enumerate(positions):
        batch[i, :, y:y + patch_hw[0], x:x + patch_hw[1]] = patch
    return batch


def check_identity(graph, occlusion, dtype, device="cpu", every_node=True):
    """Incremental inference on ``device`` equals CPU full inference at every node.

    ``every_node=False`` keeps only the output (position-wise layers may then work in
    place) and checks it alone.
    """
    patch_hw, positions, fill, batch_size, seed = occlusion
    model = kr.Model(graph, seed=seed % 1000, dtype=dtype)
    rng = np.random.default_rng(seed)
    image = rng.normal(size=graph.input_shape)
    nodes = graph.order if every_node else ()
    result = kr.incremental_inference(model, image, positions, patch_hw, fill=fill,
                                      batch_size=batch_size, nodes=nodes, device=device)
    expected = model.forward_all(occlude(image, positions, patch_hw, fill))
    for name in nodes:
        np.testing.assert_allclose(result.nodes[name], expected[name], err_msg=name,
                                   **TOLERANCES[dtype])
    np.testing.assert_allclose(result.output, expected[graph.output], **TOLERANCES[dtype])
    return result, model


@over_backends(cpu_examples=120)
def test_chains_float64(data, device):
    graph = data.draw(architectures(dag=False, **SIZES[device]))
    check_identity(graph, data.draw(occlusions(graph)), np.float64, device)


@over_backends(cpu_examples=120)
def test_dags_float64(data, device):
    graph = data.draw(architectures(dag=True, **SIZES[device]))
    check_identity(graph, data.draw(occlusions(graph)), np.float64, device)


@over_backends(cpu_examples=80)
def test_dags_output_only_float64(data, device):
    """Only the output kept, so position-wise layers work in place where nothing else reads."""
    graph = data.draw(architectures(dag=True, **SIZES[device]))
    check_identity(graph, data.draw(occlusions(graph)), np.float64, device, every_node=False)


@over_backends(cpu_examples=40)
def test_dags_float32(data, device):
    graph = data.draw(architectures(dag=True, **SIZES[device]))
    check_identity(graph, data.draw(occlusions(graph)), np.float32, device)


@settings(max_examples=40, **SETTINGS)
@given(st.data())
def test_region_never_exceeds_the_full_cost(data):
    """Per position, the engine never computes more MACs in a node than full inference."""
    graph = data.draw(architectures(dag=True))
    result, model = check_identity(graph, data.draw(occlusions(graph)), np.float64)
    full = graph.macs()
    for name in graph.order:
        assert result.macs[name] <= full[name] * len(result.positions), name


def small_net():
    g = kr.Graph((2, 12, 10))
    g.add(kr.Conv2d(2, 4, 3, padding=1), name="c1")
    g.add(kr.ReLU(), name="r1")
    g.add(kr.MaxPool2d(2), name="p1")
    g.add(kr.Conv2d(4, 4, 3, padding=1), name="c2")
    g.add(kr.Add(), inputs=["c2", "p1"], name="add")
    g.add(kr.Flatten(), name="flat")
    g.add(kr.Linear(4 * 6 * 5, 3), name="fc")
    g.add(kr.Softmax(), name="prob")
    return g


def aliasing_net():
    """Position-wise layers that may overwrite their input in place, and ones that must not.

    ``c1`` is read by four nodes; ``drop`` (Dropout) returns its input, so ``r1``
    reading it must not overwrite ``c1`` either. ``r2`` and ``r3`` may work in place.
    """
    g = kr.Graph((2, 10, 9))
    g.add(kr.Conv2d(2, 3, 3, padding=1), name="c1")
    g.add(kr.Dropout(), name="drop")
    g.add(kr.ReLU(), name="r1")
    g.add(kr.BatchNorm2d(3), inputs=["c1"], name="bn")
    g.add(kr.ReLU(), name="r2")
    g.add(kr.ReLU6(), name="r3")
    g.add(kr.Add(), inputs=["r1", "r3", "c1"], name="add")
    g.add(kr.Concat(), inputs=["add", "c1", "r1"], name="cat")
    g.add(kr.MaxPool2d(2), name="pool")
    g.add(kr.Flatten(), name="flat")
    g.add(kr.Linear(9 * 5 * 4, 4), name="fc")
    return g


def dropout_alias_net():
    """``d`` (Dropout) returns ``c``'s array; ``r``, ``c``'s last direct reader, must not
    overwrite it."""
    g = kr.Graph((2, 8, 8))
    g.add(kr.Conv2d(2, 3, 3, padding=1), name="c")
    g.add(kr.Dropout(), inputs=["c"], name="d")
    g.add(kr.ReLU(), inputs=["c"], name="r")
    g.add(kr.Add(), inputs=["d", "r"], name="add")
    g.add(kr.Flatten(), name="flat")
    g.add(kr.Linear(3 * 8 * 8, 4), name="fc")
    return g


def flatten_alias_net():
    """``f`` (Flatten of a whole tensor) is a view of ``a``; ``bn`` must not overwrite ``a``."""
    g = kr.Graph((2, 8, 8))
    g.add(kr.Conv2d(2, 3, 3, padding=1), name="conv")
    g.add(kr.GlobalAvgPool2d(), name="gap")
    g.add(kr.Add(), inputs=["gap", "gap"], name="a")
    g.add(kr.Flatten(), inputs=["a"], name="f")
    g.add(kr.BatchNorm2d(3), inputs=["a"], name="bn")
    g.add(kr.Flatten(), inputs=["bn"], name="fr")
    g.add(kr.Add(), inputs=["f", "fr"], name="out")
    return g


def check_output_only(graph, device="cpu", patch=3, stride=2):
    """Incremental output, with no other node kept (in-place layers allowed), equals full."""
    model = kr.Model(graph, seed=5, dtype=np.float64)
    image = np.random.default_rng(5).normal(size=graph.input_shape)
    positions = kr.patch_positions(graph.input_shape[1:], patch, stride)
    result = kr.incremental_inference(model, image, positions, patch, fill=0.5, batch_size=4,
                                      device=device)
    expected = model.forward(occlude(image, positions, (patch, patch), 0.5))
    np.testing.assert_allclose(result.output, expected, **TOLERANCES[np.float64])


def pointwise_net():
    """1x1 convolutions (stride 1, no padding) reading a conv, a concat and a whole tensor.

    Their read window is their input's computed region, so the engine reads the
    input's data as is (no gather). So does ``padded`` (its padding shifts its
    output, not its read window); ``strided`` (stride 2) reads a different window.
    """
    g = kr.Graph((2, 10, 9))
    g.add(kr.Conv2d(2, 3, 3, padding=1), name="c1")
    g.add(kr.ReLU(), name="r1")
    g.add(kr.Conv2d(3, 4, 1), name="p1")
    g.add(kr.Conv2d(3, 2, 1), inputs=["r1"], name="p2")
    g.add(kr.Concat(), inputs=["p1", "p2", "r1"], name="cat")
    g.add(kr.Conv2d(9, 3, 1), name="p3")
    g.add(kr.ReLU(), inputs=["cat"], name="r2")  # may work in place after p3 read "cat"
    g.add(kr.Conv2d(9, 3, 1, stride=2), inputs=["r2"], name="strided")
    g.add(kr.Conv2d(3, 3, 1, padding=1), inputs=["p3"], name="padded")
    g.add(kr.AdaptiveAvgPool2d((2, 2)), inputs=["p3"], name="gap")
    g.add(kr.Conv2d(3, 2, 1), name="p4")
    for k, src in enumerate(["strided", "padded", "p4"]):
        g.add(kr.Flatten(), inputs=[src], name=f"f{k}")
        g.add(kr.Linear(int(np.prod(g.shapes[f"f{k}"])), 4), name=f"fc{k}")
    g.add(kr.Add(), inputs=["fc0", "fc1", "fc2"], name="out")
    return g


@pytest.mark.parametrize("every_node", [True, False])
def test_pointwise_convolutions_read_their_input_as_is(monkeypatch, every_node):
    """A 1x1 convolution whose window is its input's region skips the gather, same results."""
    from kryptonref.backends.cpu import CPUBackend

    gathered = []
    gather = CPUBackend.gather_windows

    def counting_gather(base, *args, **kwargs):
        gathered.append(base.shape)
        return gather(base, *args, **kwargs)

    monkeypatch.setattr(CPUBackend, "gather_windows", staticmethod(counting_gather))
    graph = pointwise_net()
    positions = kr.patch_positions(graph.input_shape[1:], 3, 2)
    if every_node:
        check_identity(graph, ((3, 3), positions, 0.5, 4, 3), np.float64)
    else:
        check_output_only(graph)
    n_batches = -(-len(positions) // 4)
    # per batch: c1, strided and the concat's three inputs gather; the 1x1 convolutions
    # p1, p2, p3, p4 and padded do not
    assert len(gathered) == 5 * n_batches


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("net", [aliasing_net, dropout_alias_net, flatten_alias_net])
def test_in_place_layers_never_overwrite_what_is_read_later(net, device):
    check_output_only(net(), device)


def test_a_kept_alias_is_not_overwritten():
    graph = dropout_alias_net()
    model = kr.Model(graph, seed=5, dtype=np.float64)
    image = np.random.default_rng(5).normal(size=graph.input_shape)
    positions = kr.patch_positions(graph.input_shape[1:], 3, 2)
    result = kr.incremental_inference(model, image, positions, 3, nodes=["d"])
    expected = model.forward_all(occlude(image, positions, (3, 3), 0.0))
    np.testing.assert_allclose(result.nodes["d"], expected["d"], **TOLERANCES[np.float64])


@pytest.mark.parametrize("device", DEVICES)
def test_batch_norm_straight_on_the_input(device):
    """The GPU run's falsifying example: BatchNorm2d of the (1, 8, 8) input, one pixel."""
    g = kr.Graph((1, 8, 8))
    g.add(kr.BatchNorm2d(1), name="bn")
    check_identity(g, ((1, 1), np.array([[0, 0]]), 0.0, 1, 0), np.float64, device)


@pytest.mark.parametrize("patch", [(1, 1), (12, 10), (3, 7), (12, 1)])
def test_whole_image_one_pixel_and_strips(patch):
    graph = small_net()
    positions = kr.patch_positions(graph.input_shape[1:], patch, (2, 3))
    check_identity(graph, (patch, positions, 0.0, 5, 7), np.float64)


def test_batch_size_does_not_change_the_result():
    graph = small_net()
    model = kr.Model(graph, seed=3, dtype=np.float64)
    image = np.random.default_rng(1).normal(size=graph.input_shape)
    positions = kr.patch_positions((12, 10), 4, 2)
    outs = [kr.incremental_inference(model, image, positions, 4, batch_size=b).output
            for b in (1, 3, len(positions))]
    for out in outs[1:]:
        np.testing.assert_allclose(out, outs[0], rtol=1e-12, atol=1e-14)


def test_unchanged_when_the_stride_skips_the_patch():
    """A 1x1/stride-2 conv never reads odd pixels: a patch there changes nothing."""
    g = kr.Graph((1, 8, 8))
    g.add(kr.Conv2d(1, 2, 1, stride=2), name="c")
    g.add(kr.Conv2d(2, 2, 3, padding=1), name="c2")
    model = kr.Model(g, seed=0, dtype=np.float64)
    image = np.random.default_rng(0).normal(size=(1, 8, 8))
    result = kr.incremental_inference(model, image, [(1, 1), (3, 5)], 1, fill=9.0, nodes=["c"])
    base = model.forward(image[None])
    np.testing.assert_array_equal(result.output, np.repeat(base, 2, axis=0))
    assert result.macs["c"] == 0 and result.macs["c2"] == 0


def test_patch_positions_count_matches_the_corrected_formula():
    """floor((W - w) / S) + 1 per axis; the paper's floor((W - w + 1) / S) drops one."""
    pos = kr.patch_positions((224, 224), 16, 4)
    assert len(pos) == 53 * 53 == 2809
    pos = kr.patch_positions((10, 7), (3, 2), (3, 5))
    assert sorted({int(y) for y in pos[:, 0]}) == [0, 3, 6]
    assert sorted({int(x) for x in pos[:, 1]}) == [0, 5]
    # The paper's count for W=10, w=3, S=3 is floor(8/3) = 2 and misses y = 6.
    assert (10 - 3 + 1) // 3 == 2


@pytest.mark.parametrize("pool", [kr.MaxPool2d(3, 2, ceil_mode=True),
                                  kr.AvgPool2d(3, 2, ceil_mode=True),
                                  kr.AvgPool2d(3, 2, ceil_mode=True, count_include_pad=False)])
def test_ceil_mode_window_longer_than_the_input(pool):
    """PyTorch keeps a ceil-mode window that runs past a 2-pixel input (SqueezeNet at 21 px)."""
    g = kr.Graph((2, 5, 6))
    g.add(kr.Conv2d(2, 3, 3, stride=2), name="c")          # (3, 2, 2)
    g.add(pool, name="p")                                   # (3, 1, 1)
    assert g.shapes["p"] == (3, 1, 1)
    positions = kr.patch_positions((5, 6), 2, 1)
    check_identity(g, ((2, 2), positions, 0.7, 4, 3), np.float64)


def test_results_come_back_in_the_callers_order(monkeypatch):
    """Batches follow schedule.batch_order, not the caller's order; results do not."""
    from kryptonref import explain as occlusion_module
    from kryptonref.schedule import batch_order

    graph = small_net()
    positions = kr.patch_positions(graph.input_shape[1:], 3, 1)[::-1]
    order = batch_order(graph, positions, (3, 3))
    assert not np.array_equal(order, np.arange(len(positions)))
    result, _ = check_identity(graph, ((3, 3), positions, 0.5, 4, 11), np.float64)
    np.testing.assert_array_equal(result.positions, positions)

    # occlusion: the heatmap and attribution equal full re-inference's, and the
    # progress bar counts every position once.
    counted = []

    class Bar:
        def update(self, n):
            counted.append(n)

        def close(self):
            pass

    monkeypatch.setattr(occlusion_module, "_progress_bar", lambda total, enabled: Bar())
    grid = kr.patch_positions(graph.input_shape[1:], 3, 2)
    assert not np.array_equal(batch_order(graph, grid, (3, 3)), np.arange(len(grid)))
    model = kr.Model(graph, seed=4, dtype=np.float64)
    image = np.random.default_rng(4).normal(size=graph.input_shape)
    runs = {mode: kr.occlusion(model, image, patch=3, stride=2, mode=mode, batch_size=4,
                               progress=True) for mode in ("incremental", "full")}
    np.testing.assert_allclose(runs["incremental"].heatmap, runs["full"].heatmap, rtol=1e-10)
    np.testing.assert_allclose(runs["incremental"].attribution, runs["full"].attribution,
                               rtol=1e-9, atol=1e-12)
    windows = [occlusion_module.captum_windows(n, 3, 2)[0] for n in graph.input_shape[1:]]
    assert sum(counted) == 2 * len(windows[0]) * len(windows[1])


# -- the driver --------------------------------------------------------------------------
def test_one_occluder_serves_patch_sizes_and_modes():
    """The Occluder behind occlusion, incremental_inference and the full baseline: its
    incremental and full runs agree, a smaller patch reads the fill's top-left corner."""
    graph = small_net()
    model = kr.Model(graph, seed=2, dtype=np.float64)
    image = np.random.default_rng(2).normal(size=graph.input_shape)
    fill = np.random.default_rng(3).normal(size=(2, 4, 3))
    positions = kr.patch_positions(graph.input_shape[1:], (4, 3), 3)
    incremental = kr.Occluder(model, image, (4, 3), fill)
    full = kr.Occluder(model, image, (4, 3), fill, mode="full")
    for patch in ((4, 3), (2, 3), (1, 1)):
        want = model.forward(occlude(image, positions, patch, fill[:, :patch[0], :patch[1]]))
        np.testing.assert_allclose(incremental.scores(positions, 5, patch), want, rtol=1e-10)
        np.testing.assert_allclose(full.scores(positions, 5, patch), want, rtol=1e-10)
    assert 0 < incremental.macs < full.macs
    assert full.macs == 3 * len(positions) * full.base_macs
    with pytest.raises(ValueError, match="larger than the occluder's patch"):
        incremental.scores(positions[:1], 5, (5, 3))
    with pytest.raises(ValueError, match="incremental mode only"):
        full.run(positions, 5, nodes=["c1"])


def test_fill_mean_is_the_images_channel_mean():
    graph = small_net()
    model = kr.Model(graph, seed=2, dtype=np.float64)
    image = np.random.default_rng(2).normal(size=graph.input_shape)
    positions = kr.patch_positions(graph.input_shape[1:], 3, 3)
    mean = image.reshape(2, -1).mean(axis=1)
    got = kr.incremental_inference(model, image, positions, 3, fill="mean").output
    want = kr.incremental_inference(model, image, positions, 3, fill=mean).output
    np.testing.assert_array_equal(got, want)


# -- base= (the unoccluded image's activations, passed in) ---------------------------------
def _small_model():
    g = kr.Graph((2, 8, 8))
    g.add(kr.Conv2d(2, 3, 3, padding=1), name="conv")
    g.add(kr.ReLU(), name="relu")
    g.add(kr.MaxPool2d(2), name="pool")
    return kr.Model(g, seed=0)


def test_base_of_the_same_image_gives_the_same_outputs():
    model = _small_model()
    image = np.random.default_rng(0).normal(size=(2, 8, 8)).astype(np.float32)
    positions = kr.patch_positions((8, 8), 3, 2)
    plain = kr.incremental_inference(model, image, positions, 3)
    given = kr.incremental_inference(model, image, positions, 3,
                                     base=model.forward_all(image[None]))
    np.testing.assert_array_equal(given.output, plain.output)


def test_base_of_another_image_or_model_is_refused():
    """Another image's activations gave wrong outputs without a word."""
    model = _small_model()
    rng = np.random.default_rng(0)
    image, other = (rng.normal(size=(2, 8, 8)).astype(np.float32) for _ in range(2))
    positions = kr.patch_positions((8, 8), 3, 2)
    with pytest.raises(ValueError, match="activations of another image"):
        kr.incremental_inference(model, image, positions, 3, base=model.forward_all(other[None]))
    base = model.forward_all(image[None])
    del base["relu"]
    with pytest.raises(ValueError, match="base lacks the activations of 1 node"):
        kr.incremental_inference(model, image, positions, 3, base=base)
    base = model.forward_all(np.stack([image, image]))
    with pytest.raises(ValueError, match=r"base\['input'\] has shape \(2, 2, 8, 8\)"):
        kr.incremental_inference(model, image, positions, 3, base=base)
    with pytest.raises(TypeError, match="base must be the dict"):
        kr.incremental_inference(model, image, positions, 3, base=[1, 2])
