"""Approximate inference: the projective-field threshold tau and adaptive drill-down.

The engine with ``tau < 1`` must equal a plain per-position implementation of
the definition (``tests/naive.py: naive_approximate``) at every node, whatever
the batch; ``tau = 1`` must be exact; a smaller tau never computes more; and
the cost simulator's executed mode counts exactly the engine's MACs.
"""
import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kryptonref as kr

from .conftest import require
from .naive import naive_approximate
from .strategies import architectures, occlusions
from .test_registry import NORMALISING
from .test_engine import SETTINGS, small_net

TAUS = st.sampled_from([0.2, 0.35, 0.5, 0.75, 0.9])


def check_against_the_oracle(graph, occlusion, tau, device="cpu", freeze_context=False):
    patch_hw, positions, fill, batch_size, seed = occlusion
    model = kr.Model(graph, seed=seed % 1000, dtype=np.float64)
    image = np.random.default_rng(seed).normal(size=graph.input_shape)
    occluder = kr.Occluder(model, image, patch_hw, fill=fill, tau=tau, device=device,
                           freeze_context=freeze_context)
    result = occluder.run(positions, batch_size, nodes=graph.order)
    # (a normalising layer amplifies the oracle's different rounding: wider tolerance after it)
    normalises = any(type(n.layer).__name__ in NORMALISING for n in graph.nodes.values())
    for p, (y, x) in enumerate(positions):
        expected = naive_approximate(graph, model.params, image, int(y), int(x), patch_hw,
                                     np.broadcast_to(np.asarray(fill, np.float64),
                                                     np.asarray(fill).shape), tau,
                                     freeze_context)
        for name in graph.order:
            if freeze_context and name not in _read_nodes(graph):
                continue  # a node only a frozen gate read is not computed (left at M)
            # (1e-8 was too tight: a LayerNorm over nearly equal values amplified float64
            # rounding to 1.4e-8 on a value of 0.08 in CI-like draws; any wrong region or
            # formula errs by orders of magnitude more)
            tol = 1e-7 if normalises else 1e-10
            np.testing.assert_allclose(result[name][p], expected[name][0], rtol=tol,
                                       atol=tol, err_msg=f"{name} at position {p}")
    return result


@settings(max_examples=60, **SETTINGS)
@given(st.data())
def test_approximate_engine_equals_the_definition(data):
    graph = data.draw(architectures(dag=True, max_size=32))
    check_against_the_oracle(graph, data.draw(occlusions(graph)), data.draw(TAUS))


def _read_nodes(graph):
    """Nodes whose values reach the output other than through a gate a merge broadcasts."""
    read, stack = set(), [graph.output]
    while stack:
        name = stack.pop()
        if name in read or name == graph.input_name:
            continue
        read.add(name)
        node = graph.nodes[name]
        stack += [i for i in node.inputs if not (len(graph.shapes[i]) == 3 and
                  graph.shapes[i][1:] == (1, 1) and graph.shapes[name][1:] != (1, 1)
                  and isinstance(node.layer, kr.Mul))]
    return read


@settings(max_examples=60, **SETTINGS)
@given(st.data())
def test_frozen_context_equals_the_definition(data):
    """Squeeze-excitation gates kept at their unoccluded value: the engine equals the
    definition, with tau and without."""
    graph = data.draw(architectures(dag=True, max_size=32))
    tau = data.draw(st.sampled_from([1.0, 0.5]))
    check_against_the_oracle(graph, data.draw(occlusions(graph)), tau, freeze_context=True)


def test_frozen_context_keeps_squeeze_excitation_local():
    """With the gate frozen, a block's region stays local and nothing feeds the gate."""
    g = kr.Graph((4, 16, 16))
    g.add(kr.Conv2d(4, 4, 3, padding=1), name="conv")
    g.add(kr.GlobalAvgPool2d(), name="pool")
    g.add(kr.Conv2d(4, 2, 1), name="fc1")
    g.add(kr.ReLU(), name="act")
    g.add(kr.Conv2d(2, 4, 1), name="fc2")
    g.add(kr.Sigmoid(), name="gate")
    g.add(kr.Mul(), inputs=["conv", "gate"], name="scale")
    g.add(kr.Conv2d(4, 4, 3, padding=1), name="after")
    exact = kr.speedup(g, 4, 4)
    frozen = kr.speedup(g, 4, 4, freeze_context=True)
    assert exact.first_whole == "scale" and "squeeze-excitation" in exact.why_whole
    assert frozen.first_whole is None      # nothing is whole, the gate is not even computed
    after = {c.name: c for c in exact.layers}["after"]
    assert after.incremental_macs == after.full_macs          # whole after the gate
    after = {c.name: c for c in frozen.layers}["after"]
    assert after.incremental_macs < after.full_macs / 4       # local again
    assert {c.name: c for c in frozen.layers}["fc1"].incremental_macs == 0
    assert "the region becomes whole at 'scale'" in exact.table()


def test_frozen_context_computes_the_nodes_asked_for_when_their_change_dies_out():
    """A change that never reaches the output (two stride-2 1x1 convs skip the patch's
    column) was not computed with freeze_context, so the nodes asked for came back as the
    unoccluded activations: hypothesis found it (conv2d_0 off by 0.29)."""
    g = kr.Graph((1, 8, 8))
    g.add(kr.Conv2d(1, 1, 3, padding=1), name="conv")
    g.add(kr.Conv2d(1, 1, 1, stride=2), name="down1")
    g.add(kr.Conv2d(1, 1, 1, stride=2), name="down2")
    g.add(kr.Flatten(), name="flat")
    model = kr.Model(g, seed=0, dtype=np.float64)
    image = np.random.default_rng(0).normal(size=g.input_shape)
    at = np.array([[0, 7]])
    exact = kr.Occluder(model, image, 1).run(at, 1, nodes=g.order)
    frozen = kr.Occluder(model, image, 1, tau=0.99, mode="incremental",
                         freeze_context=True).run(at, 1, nodes=g.order)
    assert not np.allclose(exact["conv"][0], model.forward_all(image[None])["conv"][0])
    for name in g.order:
        np.testing.assert_allclose(frozen[name], exact[name], rtol=1e-12, atol=1e-12,
                                   err_msg=name)


@settings(max_examples=40, **SETTINGS)
@given(st.data())
def test_simulator_counts_the_approximate_engines_macs(data):
    graph = data.draw(architectures(dag=True))
    patch_hw, positions, fill, batch_size, seed = data.draw(occlusions(graph))
    tau = data.draw(TAUS)
    model = kr.Model(graph, seed=1, dtype=np.float64)
    image = np.random.default_rng(seed).normal(size=graph.input_shape)
    result = kr.incremental_inference(model, image, positions, patch_hw, fill=fill,
                                      batch_size=batch_size, tau=tau)
    exact = kr.incremental_inference(model, image, positions, patch_hw, fill=fill,
                                     batch_size=batch_size)
    report = kr.speedup(graph, patch_hw, positions=positions, mode="executed",
                        batch_size=batch_size, tau=tau)
    for layer in report.layers:
        assert layer.incremental_macs == result.macs[layer.name], layer.name
        assert result.macs[layer.name] <= exact.macs[layer.name], layer.name


def test_tau_one_is_exact_and_the_batch_does_not_matter():
    graph = small_net()
    model = kr.Model(graph, seed=2, dtype=np.float64)
    image = np.random.default_rng(2).normal(size=graph.input_shape)
    positions = kr.patch_positions(graph.input_shape[1:], 3, 2)
    exact = kr.incremental_inference(model, image, positions, 3)
    one = kr.incremental_inference(model, image, positions, 3, tau=1.0)
    np.testing.assert_array_equal(one.output, exact.output)
    outs = [kr.incremental_inference(model, image, positions, 3, tau=0.4, batch_size=b).output
            for b in (1, 4, len(positions))]
    for out in outs[1:]:  # equal up to BLAS rounding (GEMM shapes differ with the batch)
        np.testing.assert_allclose(out, outs[0], rtol=1e-12, atol=1e-14)
    assert not np.allclose(outs[0], exact.output)  # tau = 0.4 does approximate here


@pytest.mark.parametrize("tau", [0.0, -0.5, 1.5, float("nan")])
def test_tau_outside_the_range_is_rejected(tau):
    model = kr.Model(small_net())
    with pytest.raises(ValueError, match=r"tau must lie in \(0, 1\]"):
        kr.incremental_inference(model, np.zeros((2, 12, 10), np.float32), [(0, 0)], 3,
                                 tau=tau)


# -- occlusion(mode="approximate") and drill-down ---------------------------------------
from kryptonref.analysis import drilldown_speedup  # noqa: E402
from kryptonref.drilldown import drilldown  # noqa: E402

from .test_occlusion import image_for, small_classifier, softmax  # noqa: E402


def test_approximate_heatmap_equals_the_definition():
    graph = small_classifier(shape=(3, 24, 22))
    model = kr.Model(graph, seed=3, dtype=np.float64)
    image = image_for(graph)
    exact = kr.occlusion(model, image, 6, 3)
    same = kr.occlusion(model, image, 6, 3, mode="approximate", tau=1.0)
    np.testing.assert_allclose(same.heatmap, exact.heatmap, rtol=1e-12, atol=1e-15)
    approx = kr.occlusion(model, image, 6, 3, mode="approximate", tau=0.3)
    target = approx.label
    expected = [softmax(naive_approximate(graph, model.params, image, int(y), int(x), 6, 0.0,
                                          0.3)[graph.output][0])[target]
                for y, x in approx.positions]
    np.testing.assert_allclose(approx.heatmap.ravel(), expected, rtol=1e-10, atol=1e-12)
    assert approx.macs < exact.macs and approx.tau == 0.3
    assert not np.allclose(approx.heatmap, exact.heatmap)


def test_drilldown_refines_the_largest_drops():
    from scipy.interpolate import RegularGridInterpolator
    fine = np.random.default_rng(0).random((10, 11))
    calls = []

    def evaluate(cells):
        calls.append(cells.copy())
        return fine[cells[:, 0], cells[:, 1]]

    heatmap, computed = drilldown(evaluate, fine.shape, (3, 4), 0.25, baseline=1.0)
    coarse = calls[0]
    rows, cols = [0, 3, 6, 9], [0, 4, 8]
    assert [tuple(c) for c in coarse] == [(i, j) for i in rows for j in cols]
    # not refined: bilinear between coarse positions, the nearest one beyond the last
    interp = RegularGridInterpolator((rows, cols), fine[np.ix_(rows, cols)])
    ys, xs = np.meshgrid(np.arange(10), np.minimum(np.arange(11), 8), indexing="ij")
    expected = interp(np.stack([ys, xs], axis=-1))
    np.testing.assert_allclose(heatmap[~computed], expected[~computed], rtol=1e-12)
    # refined: the ceil(0.25 * 12) = 3 coarse cells with the largest drop, fully
    drops = 1.0 - fine[coarse[:, 0], coarse[:, 1]]
    refined = coarse[np.argsort(-drops, kind="stable")[:3]]
    for i, j in refined:
        cell = (slice(max(0, i - 1), i + 2), slice(max(0, j - 2), j + 2))
        assert computed[cell].all()
        np.testing.assert_array_equal(heatmap[cell], fine[cell])
    np.testing.assert_array_equal(heatmap[computed], fine[computed])
    assert computed.sum() == len(coarse) + sum(len(c) for c in calls[1:])


def test_occlusion_drilldown_matches_the_exact_heatmap_where_it_occludes():
    graph = small_classifier(shape=(3, 40, 36))
    model = kr.Model(graph, seed=5, dtype=np.float64)
    image = image_for(graph, seed=5)
    exact = kr.occlusion(model, image, 4, 2)
    drill = kr.occlusion(model, image, 4, 2, mode="approximate", drilldown=True,
                         coarse_stride=6, r_drill=0.3)
    assert drill.heatmap.shape == exact.heatmap.shape and drill.attribution is None
    assert drill.coarse_stride == (6, 6)
    np.testing.assert_allclose(drill.heatmap[drill.computed], exact.heatmap[drill.computed],
                               rtol=1e-12, atol=1e-15)
    assert 0 < drill.computed.sum() < drill.computed.size
    assert drill.macs < exact.macs
    summary = drill.to_dict()
    assert summary["coarse_stride"] == [6, 6]
    assert summary["evaluated_positions"] == int(drill.computed.sum())


@pytest.mark.parametrize("kwargs,match", [
    (dict(mode="incremental", tau=0.5), "need mode='approximate'"),
    (dict(mode="approximate", tau=0.0), r"tau must lie in \(0, 1\]"),
    (dict(mode="approximate", drilldown=True, r_drill=1.0), r"r_drill must lie in \(0, 1\)"),
    (dict(mode="approximate", drilldown=True, r_drill=0.0), r"r_drill must lie in \(0, 1\)"),
    (dict(mode="approximate", drilldown=True, target_speedup=4.0),
     r"target speedup 4.0 cannot be reached .* must lie in \(1, 3.85\)"),
    (dict(mode="approximate", drilldown=True, coarse_stride=1),
     r"coarse stride \(1, 1\) must be at least the fine stride \(2, 2\)"),
    (dict(mode="approximate", drilldown=True, coarse_stride=5), "a multiple of it"),
])
def test_bad_approximate_arguments(kwargs, match):
    graph = small_classifier()
    model = kr.Model(graph, seed=0)
    with pytest.raises(ValueError, match=match):
        kr.occlusion(model, image_for(graph, dtype=np.float32), 4, 2, **kwargs)


# -- command line -------------------------------------------------------------------------
def _cli(capsys, *argv):
    from kryptonref.cli import main
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_occlude_approximate_with_drilldown(capsys):
    require("PIL", "image")
    from kryptonref.images import sample_image_path
    code, out, _ = _cli(capsys, "occlude", sample_image_path(), "--model", "demo_vgg",
                        "--weights", "pretrained", "--patch", "32", "--stride", "16",
                        "--mode", "approximate", "--tau", "0.6", "--drilldown",
                        "--target-speedup", "2", "--json", "--no-progress")
    assert code == 0
    summary = json.loads(out)
    assert summary["mode"] == "approximate" and summary["tau"] == 0.6
    assert summary["heatmap_shape"] == [13, 13]
    assert summary["coarse_stride"] == [32, 32]   # 16 sqrt(2 / 0.5) = 32
    assert 0 < summary["evaluated_positions"] < 169


@pytest.mark.parametrize("argv,match", [
    (["--tau", "0.5"], "--tau and --drilldown need --mode approximate"),
    (["--mode", "approximate", "--drilldown", "--r-drill", "1.5"], r"r_drill must lie in \(0, 1\)"),
    (["--mode", "approximate", "--coarse-stride", "32"], "--coarse-stride needs --drilldown"),
    (["--mode", "approximate", "--drilldown", "--coarse-stride", "8"],
     "must be at least the fine stride"),
])
def test_cli_approximate_errors(capsys, argv, match):
    require("PIL", "image")
    from kryptonref.images import sample_image_path
    code, _, err = _cli(capsys, "occlude", sample_image_path(), "--model", "demo_vgg",
                        "--weights", "pretrained", "--patch", "32", "--stride", "16", *argv)
    assert code == 1 and re.search(match, err)


def test_cli_analyze_predicts_drilldown(capsys):
    code, out, _ = _cli(capsys, "analyze", "resnet18", "--image-size", "64", "--patch", "8",
                        "--stride", "4", "--tau", "0.7", "--drilldown", "--json")
    assert code == 0
    summary = json.loads(out)
    drill = summary["drilldown"]
    assert drill["coarse_stride"] == [16, 16]     # 4 sqrt(3 / 0.25) = 13.9 -> 16
    assert drill["speedup"] == pytest.approx(drilldown_speedup(16, 4, 0.25))
    assert drill["combined"] == pytest.approx(drill["speedup"] * summary["speedup"])
    code, _, err = _cli(capsys, "analyze", "--all", "--drilldown")
    assert code == 1 and "not with --all" in err
