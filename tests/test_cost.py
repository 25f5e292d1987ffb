"""The cost simulator: executed mode counts what the engine computes; paper mode by hand."""
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kryptonref as kr

from .strategies import architectures, occlusions


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_executed_mode_equals_the_engines_mac_count(data):
    """For random DAGs, positions and batch sizes: simulator MACs == engine MACs, per node."""
    graph = data.draw(architectures(dag=True))
    patch_hw, positions, fill, batch_size, seed = data.draw(occlusions(graph))
    model = kr.Model(graph, seed=1, dtype=np.float64)
    image = np.random.default_rng(seed).normal(size=graph.input_shape)
    result = kr.incremental_inference(model, image, positions, patch_hw, fill=fill,
                                      batch_size=batch_size)
    report = kr.speedup(graph, patch_hw, positions=positions, mode="executed",
                        batch_size=batch_size)
    counted = {c.name: c.incremental_macs for c in report.layers}
    for name, value in counted.items():
        assert value == result.macs[name], name
    assert report.incremental_macs == result.total_macs


def chain():
    g = kr.Graph((1, 8, 8))
    g.add(kr.Conv2d(1, 2, 3, padding=1), name="c1")      # 2 MACs... per output: 1*9
    g.add(kr.MaxPool2d(2), name="p")
    g.add(kr.Flatten(), name="f")
    g.add(kr.Linear(32, 3), name="fc")
    return g


def test_paper_mode_by_hand():
    """One 2x2 patch at (2, 2) on a 3x3/pad-1 conv: a 4x4 changed output region."""
    g = chain()
    report = kr.speedup(g, patch=2, positions=[(2, 2)])
    conv = report.layers[0]
    assert conv.full_macs == 2 * 9 * 64
    assert conv.incremental_macs == 2 * 9 * 16
    assert report.layers[1].incremental_macs == 32 * 3        # FC counted in full
    full = 2 * 9 * 64 + 96
    assert report.speedup == pytest.approx(full / (2 * 9 * 16 + 96))


def test_corner_and_border_positions_cost_less_in_paper_mode():
    g = chain()
    report = kr.speedup(g, patch=2, stride=2)
    assert report.speedup_map.shape == (4, 4)
    assert report.speedup_map[0, 0] > report.speedup_map[1, 1]
    assert report.max_speedup == report.speedup_map[0, 0]
    assert report.min_speedup == report.speedup_map[1, 1]


def test_tau_never_costs_more_and_one_is_exact():
    graph = kr.models.vgg16_demo_net(64)
    exact = kr.speedup(graph, patch=8, stride=8)
    same = kr.speedup(graph, patch=8, stride=8, tau=1.0)
    assert same.incremental_macs == exact.incremental_macs
    previous = exact.incremental_macs
    for tau in (0.9, 0.7, 0.5, 0.3):
        cheaper = kr.speedup(graph, patch=8, stride=8, tau=tau)
        assert cheaper.incremental_macs <= previous
        previous = cheaper.incremental_macs
    assert previous < exact.incremental_macs


def test_vgg16_centre_speedup_depends_on_pooling_alignment():
    """Table 2's 7.6 (text: 7.4) for VGG16, patch 16, near the centre: exact regions give
    6.5x at the exact centre and up to 7.6x one to two pixels off it (``docs/design.md``, Geometry)."""
    graph = kr.models.build_graph("vgg16")
    values = {(y, x): kr.speedup(graph, patch=16, positions=[(y, x)]).speedup
              for y in range(100, 109) for x in range(100, 109)}
    assert values[(104, 104)] == pytest.approx(6.54, abs=0.01)
    assert min(values.values()) == pytest.approx(6.52, abs=0.01)
    assert max(values.values()) == pytest.approx(7.63, abs=0.01)
    assert values[(102, 102)] == max(values.values())
    report = kr.speedup(graph, patch=16, stride=4)
    assert report.centre_position == (104, 104)
    assert report.centre_speedup == pytest.approx(values[(104, 104)])


def test_simulator_is_fast_on_every_vgg16_position():
    graph = kr.models.vgg16_demo_net(224, head=False)
    start = time.perf_counter()
    report = kr.speedup(graph, patch=16, stride=1)
    elapsed = time.perf_counter() - start
    assert report.positions == 209 * 209 == 43681
    assert report.speedup_map.shape == (209, 209)
    print(f"VGG16 body, all {report.positions} positions: {elapsed:.2f} s")


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(patch=300), ValueError, "larger than the image"),
    (dict(patch=2, stride=0), ValueError, "stride must be positive"),
    (dict(patch=2, tau=0.0), ValueError, r"tau must lie in \(0, 1\]"),
    (dict(patch=2, tau=1.5), ValueError, r"tau must lie in \(0, 1\]"),
    (dict(patch=2, mode="fast"), ValueError, "mode must be one of"),
])
def test_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        kr.speedup(chain(), **kwargs)


def global_then_merge():
    """A merge of a region branch with a branch after a global layer, which a strided
    1x1 conv leaves unchanged for patches between its samples; then a conv reads it."""
    g = kr.Graph((1, 12, 12))
    g.add(kr.Conv2d(1, 2, 3, padding=1), "input", name="near")
    g.add(kr.Conv2d(1, 2, 1, stride=4), "input", name="sparse")    # samples rows/cols 0, 4, 8
    g.add(kr.AdaptiveAvgPool2d((12, 12)), "sparse", name="global")  # every output changes
    g.add(kr.Add(), ["near", "global"], name="merge")
    g.add(kr.Conv2d(2, 2, 3, padding=1), "merge", name="after")
    return g


@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_executed_mode_on_a_merge_after_a_global_layer(batch_size):
    """When the global branch is unchanged for a whole batch, the engine merges only the
    region branch; the simulator must count the same region, not the whole map."""
    g = global_then_merge()
    positions = np.array([(1, 1), (2, 2), (5, 6), (0, 0)])  # the last one hits a sample
    model = kr.Model(g, seed=0, dtype=np.float64)
    image = np.random.default_rng(0).normal(size=g.input_shape)
    result = kr.incremental_inference(model, image, positions, (2, 2), batch_size=batch_size)
    report = kr.speedup(g, (2, 2), positions=positions, mode="executed", batch_size=batch_size)
    counted = {c.name: c.incremental_macs for c in report.layers}
    assert counted == {name: result.macs[name] for name in counted}
    if batch_size < len(positions):  # some batch leaves the global branch unchanged
        assert result.macs["after"] < len(positions) * model.graph.macs()["after"]


#: 64 px by default; the deepest modern networks at 32 px (CI time: their work is the same
#: kind at any size)
SMALL_SIZES = {"inception_v3": 75, "vit_b_16": 32, "convnext_tiny": 32,
               **{f"efficientnet_{v}": 32 for v in ("b4", "b5", "b6", "b7", "v2_s", "v2_m",
                                                    "v2_l")}}


@pytest.mark.slow
@pytest.mark.parametrize("name", kr.zoo_names())
def test_executed_mode_equals_the_engine_on_every_zoo_model(name):
    """The simulator sums the plans the engine executes: equal MACs, node by node."""
    size = SMALL_SIZES.get(name, 64)
    model = kr.zoo(name, image_size=size, num_classes=10, seed=0)
    image = np.random.default_rng(0).normal(size=model.graph.input_shape).astype(np.float32)
    positions = kr.patch_positions(model.graph.input_shape[1:], 16, 12)
    result = kr.incremental_inference(model, image, positions, 16, batch_size=8)
    report = kr.speedup(model, 16, positions=positions, mode="executed", batch_size=8)
    assert report.incremental_macs == result.total_macs
    assert {c.name: c.incremental_macs for c in report.layers} == \
        {name: macs for name, macs in result.macs.items() if model.graph.macs()[name] > 0}
