"""The planner (kryptonref.schedule): the batch order, plans, and putting results back."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kryptonref as kr
from kryptonref.schedule import REGION, UNCHANGED, WHOLE, batch_order, plan, run_in_order

from .strategies import architectures, occlusions
from .test_cost import chain


def signatures(graph, positions, patch_hw, tau):
    """Per position: its region heights and widths over all changed feature maps."""
    whole_batch = plan(graph, positions, patch_hw, tau)
    sizes = [(p.exact[1] - p.exact[0], p.exact[3] - p.exact[2])
             for name, p in whole_batch.nodes.items()
             if name != graph.input_name and p.state != UNCHANGED and p.exact is not None]
    return [tuple(int(v) for pair in sizes for v in (pair[0][i], pair[1][i]))
            for i in range(len(positions))]




@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_batch_order_groups_equal_regions(data):
    """A permutation; equal signatures are consecutive; with every signature's count a
    multiple of the batch size, the batches waste nothing: executed == paper conv MACs."""
    graph = data.draw(architectures(dag=True))
    patch_hw, positions, _, batch_size, _ = data.draw(occlusions(graph))
    tau = data.draw(st.sampled_from([1.0, 0.6, 0.3]))
    positions = np.asarray(positions, np.int64)
    order = batch_order(graph, positions, patch_hw, tau)
    assert order.dtype == np.int64
    assert sorted(order.tolist()) == list(range(len(positions)))
    ordered = [signatures(graph, positions, patch_hw, tau)[i] for i in order]
    runs = 1 + sum(a != b for a, b in zip(ordered, ordered[1:]))
    assert runs == len(set(ordered))

    repeated = np.repeat(positions, batch_size, axis=0)
    kwargs = dict(positions=repeated, tau=tau, batch_size=batch_size)
    executed = kr.speedup(graph, patch_hw, mode="executed", **kwargs)
    paper = kr.speedup(graph, patch_hw, mode="paper", **kwargs)
    for ex, pa in zip(executed.layers, paper.layers):
        if ex.type == "Conv2d":
            assert ex.incremental_macs == pa.incremental_macs, ex.name
        else:   # paper mode counts dense layers for unchanged positions too
            assert ex.incremental_macs <= pa.incremental_macs, ex.name


def test_batch_order_on_the_vgg16_grid():
    """Row-major batches of 16 give 8.14x (paper: 9.14x); batches in batch_order 8.91x."""
    graph = kr.models.build_graph("vgg16")
    positions = kr.patch_positions((224, 224), 16, 4)
    order = batch_order(graph, positions, (16, 16))
    assert not np.array_equal(order, np.arange(len(positions)))
    paper = kr.speedup(graph, 16, 4)
    assert paper.speedup == pytest.approx(9.14, abs=0.01)
    report = kr.speedup(graph, 16, 4, mode="executed", batch_size=16)
    assert report.speedup == pytest.approx(8.91, abs=0.01)
    # Per-position costs come back in row-major order: no position computes less than
    # its own exact regions (the classifier changes at every position).
    assert np.all(report.speedup_map <= paper.speedup_map * (1 + 1e-12))
    assert np.any(report.speedup_map < paper.speedup_map)


@pytest.mark.parametrize("side", [1, 2, 4, 8, 16])
def test_hilbert_index_is_a_curve_through_the_grid(side):
    """On a 2^k square the indices are 0..n-1, and each step moves to a neighbouring cell."""
    from kryptonref.schedule import _hilbert_index

    y, x = (v.ravel() for v in np.meshgrid(np.arange(side), np.arange(side), indexing="ij"))
    index = _hilbert_index(y, x)
    np.testing.assert_array_equal(np.sort(index), np.arange(side * side))
    path = np.argsort(index)
    steps = np.abs(np.diff(y[path])) + np.abs(np.diff(x[path]))
    assert np.all(steps == 1)


def test_run_in_order_puts_every_row_back():
    order = np.array([3, 0, 4, 1, 2])
    seen = []

    def compute(batch):
        seen.append(list(batch))
        return {"twice": 2 * batch[:, None] * np.ones((1, 2)), "id": batch.copy()}

    out = run_in_order(order, 2, compute)
    assert seen == [[3, 0], [4, 1], [2]]
    np.testing.assert_array_equal(out["id"], np.arange(5))
    np.testing.assert_array_equal(out["twice"], 2 * np.arange(5)[:, None] * np.ones((1, 2)))


def test_a_plan_by_hand():
    """Two 2x2 patches on a 3x3/pad-1 conv, 2x2 pooling, flatten and a dense layer."""
    g = chain()
    p = plan(g, np.array([(2, 2), (0, 5)]), (2, 2))
    conv = p.nodes["c1"]
    assert conv.state == REGION and (conv.h, conv.w) == (4, 4)
    np.testing.assert_array_equal(conv.exact[0], [1, 0])     # rows 1..5, and 0..3 at the top
    np.testing.assert_array_equal(conv.exact[1], [5, 3])
    np.testing.assert_array_equal(conv.y0, [1, 0])           # the batch's 4 rows, shifted in
    np.testing.assert_array_equal(conv.x0, [1, 4])           # columns 4..8 at the right border
    ry0, rx0, rh, rw = conv.window
    assert (rh, rw) == (6, 6) and list(ry0) == [0, -1] and list(rx0) == [0, 3]
    assert conv.macs == 2 * 16 * 2 * 9
    assert p.nodes["p"].state == REGION and p.nodes["p"].size == (3, 3)  # outputs 0..3
    assert p.nodes["f"].state == WHOLE and p.nodes["fc"].macs == 2 * 32 * 3
    assert p.macs == {"input": 0, "c1": 2 * 16 * 18, "p": 0, "f": 0, "fc": 2 * 96}


def test_a_stride_that_skips_the_patch_leaves_everything_unchanged():
    g = kr.Graph((1, 8, 8))
    g.add(kr.Conv2d(1, 2, 1, stride=2), name="c")
    g.add(kr.GlobalAvgPool2d(), name="gap")
    p = plan(g, np.array([(1, 1), (3, 5)]), (1, 1))
    assert p.nodes["c"].state == UNCHANGED and p.nodes["gap"].state == UNCHANGED
    assert p.nodes["c"].size == (0, 0) and sum(p.macs.values()) == 0
