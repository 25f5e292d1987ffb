"""Approximate inference (projective-field threshold tau, DESIGN.md section 6).

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

from .naive import naive_approximate
from .strategies import architectures, occlusions
from .test_incremental import SETTINGS, small_net

TAUS = st.sampled_from([0.2, 0.35, 0.5, 0.75, 0.9])


def check_against_the_oracle(graph, occlusion, tau, device="cpu"):
    patch_hw, positions, fill, batch_size, seed = occlusion
    model = kr.Model(graph, seed=seed % 1000, dtype=np.float64)
    image = np.random.default_rng(seed).normal(size=graph.input_shape)
    result = kr.incremental_inference(model, image, positions, patch_hw, fill=fill,
                                      batch_size=batch_size, nodes=graph.order, tau=tau,
                                      device=device)
    for p, (y, x) in enumerate(positions):
        expected = naive_approximate(graph, model.params, image, int(y), int(x), patch_hw,
                                     np.broadcast_to(np.asarray(fill, np.float64),
                                                     np.asarray(fill).shape), tau)
        for name in graph.order:
            np.testing.assert_allclose(result.nodes[name][p], expected[name][0], rtol=1e-10,
                                       atol=1e-10, err_msg=f"{name} at position {p}")
    return result


@settings(max_examples=60, **SETTINGS)
@given(st.data())
def test_approximate_engine_equals_the_definition(data):
    graph = data.draw(architectures(dag=True, max_size=32))
    check_against_the_oracle(graph, data.draw(occlusions(graph)), data.draw(TAUS))


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
from kryptonref.analysis import coarse_stride_for, drilldown_speedup, mean_absolute_error, ssim  # noqa: E402
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


def test_drilldown_speedup_formula_and_coarse_stride():
    assert drilldown_speedup(16, 4, 0.25) == pytest.approx(256 / (16 + 64))
    assert coarse_stride_for(3.0, 4, 0.25, 224) == 16    # 4 sqrt(3 / 0.25) = 13.9 -> 16
    assert drilldown_speedup(coarse_stride_for(3.0, 4, 0.25, 224), 4, 0.25) >= 3.0


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


# -- SSIM -----------------------------------------------------------------------------
def test_ssim_equals_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(1)
    for shape in [(11, 11), (13, 17), (53, 53)]:
        a = rng.random(shape)
        for b in (a, a + 0.05 * rng.normal(size=shape), rng.random(shape),
                  np.clip(a * 0.7 + 0.2, 0, 1)):
            for data_range in (None, 1.0):
                ours = ssim(a, b, data_range=data_range)
                theirs = metrics.structural_similarity(
                    a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                    data_range=np.ptp(a) if data_range is None else data_range)
                assert ours == pytest.approx(theirs, rel=1e-10, abs=1e-12)
    assert ssim(a, a) == pytest.approx(1.0)
    assert mean_absolute_error(a, a + 0.5) == pytest.approx(0.5)


def test_ssim_bad_input():
    with pytest.raises(ValueError, match="at least 11 x 11"):
        ssim(np.zeros((10, 20)), np.zeros((10, 20)))
    with pytest.raises(ValueError, match="same shape"):
        ssim(np.zeros((12, 12)), np.zeros((12, 13)))


# -- tune_tau ---------------------------------------------------------------------------
def test_tune_tau_follows_the_papers_procedure():
    graph = small_classifier(shape=(3, 40, 36))
    model = kr.Model(graph, seed=7, dtype=np.float64)
    images = [image_for(graph, seed=s) for s in range(4)]
    tuned = kr.tune_tau(model, images, target_ssim=0.95, patch=4, stride=2,
                        grid=(1.0, 0.8, 0.6, 0.4))
    assert tuned.n_fit == 3 and tuned.n_held_out == 1
    np.testing.assert_array_equal(tuned.grid, [1.0, 0.8, 0.6, 0.4])
    assert tuned.mean_ssim[0] == 1.0
    # the per-image SSIM is the plain definition
    exact = kr.occlusion(model, images[1], 4, 2)
    approx = kr.occlusion(model, images[1], 4, 2, mode="approximate", tau=0.6,
                          target=exact.label)
    assert tuned.ssim_per_image[1][2] == pytest.approx(ssim(exact.heatmap, approx.heatmap))
    np.testing.assert_allclose(tuned.mean_ssim, np.mean(tuned.ssim_per_image, axis=0))
    np.testing.assert_allclose(tuned.coefficients, np.polyfit(tuned.grid, tuned.mean_ssim, 2))
    # the chosen tau: the fit reaches the target there and stays above it up to 1
    above = np.linspace(tuned.tau, 1.0, 50)
    assert np.all(tuned.fitted(above) >= 0.95 - 1e-9)
    if tuned.reached and tuned.tau > 0.4 + 1e-3:
        assert tuned.fitted(tuned.tau - 2e-3) < 0.95
    held = images[3]
    exact = kr.occlusion(model, held, 4, 2)
    approx = kr.occlusion(model, held, 4, 2, mode="approximate", tau=tuned.tau,
                          target=exact.label)
    assert tuned.held_out_ssim == pytest.approx(ssim(exact.heatmap, approx.heatmap))
    assert tuned.to_dict()["tau"] == tuned.tau


@pytest.mark.parametrize("kwargs,match", [
    (dict(target_ssim=0.0), r"target_ssim must lie in \(0, 1\]"),
    (dict(target_ssim=1.5), r"target_ssim must lie in \(0, 1\]"),
    (dict(grid=(1.0, 0.5)), "at least 3 distinct taus"),
    (dict(grid=(1.0, 0.5, 0.0)), r"in \(0, 1\]"),
    (dict(stride=4), r"5 x 4 heatmap .* SSIM needs at least 11 x 11"),
])
def test_tune_tau_bad_arguments(kwargs, match):
    graph = small_classifier()
    model = kr.Model(graph, seed=0)
    with pytest.raises(ValueError, match=match):
        kr.tune_tau(model, [image_for(graph, dtype=np.float32)],
                    **{"patch": 4, "stride": 1, **kwargs})
    with pytest.raises(ValueError, match="at least one image"):
        kr.tune_tau(model, [], patch=4, stride=1)


# -- tune_drilldown ------------------------------------------------------------------------
@pytest.mark.parametrize("tau", [1.0, 0.3, (0.3, 1.0, 0.3)])
def test_tune_drilldown_keeps_the_cheapest_setting_at_the_target(tau):
    """The search's SSIM and cell counts are what kr.occlusion's drill-down gives, and it
    keeps the passing setting the cost model predicts fastest (tau 0.3 changes this
    model's heatmaps and MACs; target 0.6 lets some settings pass and others not)."""
    graph = small_classifier(shape=(3, 40, 36))
    model = kr.Model(graph, seed=7, dtype=np.float64)
    images = [image_for(graph, seed=s) for s in range(4)]
    steps, fractions = (2, 3), (0.1, 0.3)
    taus = sorted(set(tau if isinstance(tau, tuple) else (tau,)), reverse=True)
    tuned = kr.tune_drilldown(model, images, target_ssim=0.6, patch=4, stride=2, tau=tau,
                              steps=steps, fractions=fractions)
    assert tuned.n_fit == 3 and tuned.n_held_out == 1 and tuned.tau in taus
    assert [(row["tau"], row["steps"], row["r_drill"]) for row in tuned.table] == [
        (t, k, r) for t in taus for k in steps for r in fractions]
    exact_macs = kr.speedup(model, 4, 2, mode="executed").incremental_macs
    for row in tuned.table:  # each row: kr.occlusion with that setting, on the fitting images
        runs = []
        for image in images[:3]:
            exact = kr.occlusion(model, image, 4, 2)
            drill = kr.occlusion(model, image, 4, 2, mode="approximate", tau=row["tau"],
                                 drilldown=True, r_drill=row["r_drill"],
                                 coarse_stride=2 * row["steps"], target=exact.label)
            runs.append((ssim(exact.heatmap, drill.heatmap), drill.computed.sum(),
                         drill.computed.size))
        values = np.array([v for v, _, _ in runs])
        assert row["mean_ssim"] == pytest.approx(values.mean(), rel=1e-9)
        assert row["min_ssim"] == pytest.approx(values.min(), rel=1e-9)
        assert row["lower_ssim"] == pytest.approx(
            values.mean() - 1.645 * values.std(ddof=1) / np.sqrt(3), rel=1e-9)
        assert row["speedup"] == pytest.approx(sum(n for _, _, n in runs)
                                               / sum(c for _, c, _ in runs))
        tau_macs = kr.speedup(model, 4, 2, tau=row["tau"], mode="executed").incremental_macs
        assert row["predicted_speedup"] == pytest.approx(row["speedup"] * exact_macs / tau_macs)
    passing = [row for row in tuned.table if row["lower_ssim"] >= 0.6]
    assert passing and len(passing) < len(tuned.table) and tuned.reached
    assert tuned.predicted_speedup == max(row["predicted_speedup"] for row in passing)
    chosen = [row for row in tuned.table if (row["tau"], 2 * row["steps"], row["r_drill"])
              == (tuned.tau, tuned.coarse_stride[0], tuned.r_drill)]
    assert len(chosen) == 1 and chosen[0]["mean_ssim"] == tuned.mean_ssim
    assert chosen[0]["lower_ssim"] == tuned.lower_ssim
    assert chosen[0]["speedup"] == tuned.speedup
    exact = kr.occlusion(model, images[3], 4, 2)
    drill = kr.occlusion(model, images[3], 4, 2, mode="approximate", tau=tuned.tau,
                         drilldown=True, r_drill=tuned.r_drill,
                         coarse_stride=tuned.coarse_stride, target=exact.label)
    assert tuned.held_out_ssim == pytest.approx(ssim(exact.heatmap, drill.heatmap))
    summary = json.loads(json.dumps(tuned.to_dict()))
    assert summary["coarse_stride"] == list(tuned.coarse_stride)
    assert summary["predicted_speedup"] == tuned.predicted_speedup


def test_tune_drilldown_trades_tau_against_positions():
    """A tau whose SSIM passes and whose MACs are fewer wins over the same drill-down at
    tau 1: its prediction is the cells saved times its MAC saving."""
    graph = small_classifier(shape=(3, 40, 36))
    model = kr.Model(graph, seed=7, dtype=np.float64)
    images = [image_for(graph, seed=s) for s in range(3)]
    tuned = kr.tune_drilldown(model, images, target_ssim=0.6, patch=4, stride=2,
                              tau=(1.0, 0.3), steps=(2,), fractions=(0.1,), held_out=[])
    by_tau = {row["tau"]: row for row in tuned.table}
    macs = {t: kr.speedup(model, 4, 2, tau=t, mode="executed").incremental_macs
            for t in (1.0, 0.3)}
    assert macs[0.3] < macs[1.0]
    assert by_tau[0.3]["predicted_speedup"] / by_tau[0.3]["speedup"] == pytest.approx(
        macs[1.0] / macs[0.3])
    assert by_tau[0.3]["mean_ssim"] != by_tau[1.0]["mean_ssim"]   # tau 0.3's own heatmaps
    assert by_tau[0.3]["predicted_speedup"] > by_tau[1.0]["predicted_speedup"]
    assert min(row["lower_ssim"] for row in tuned.table) >= 0.6
    assert tuned.tau == 0.3 and tuned.reached


@pytest.mark.parametrize("tau,taus", [(0.5, [0.5]), (np.array(0.5), [0.5]),
                                      (np.array([0.5, 1.0, 0.5]), [1.0, 0.5]),
                                      ({0.3, 0.9}, [0.9, 0.3]), ((t for t in (0.7,)), [0.7])])
def test_tune_drilldown_reads_tau_as_a_number_or_any_iterable(tau, taus):
    from kryptonref.tuning import _check_taus
    assert _check_taus(tau) == taus


def test_tune_drilldown_without_a_passing_setting_keeps_the_best_ssim():
    graph = small_classifier(shape=(3, 40, 36))
    model = kr.Model(graph, seed=7, dtype=np.float64)
    images = [image_for(graph, seed=s) for s in range(2)]
    tuned = kr.tune_drilldown(model, images, target_ssim=1.0, patch=4, stride=2, steps=(4, 6),
                              fractions=(0.05,))
    assert not tuned.reached and tuned.held_out_ssim is None and tuned.n_held_out == 0
    assert tuned.lower_ssim == max(row["lower_ssim"] for row in tuned.table) < 1.0


@pytest.mark.parametrize("kwargs,match", [
    (dict(target_ssim=0.0), r"target_ssim must lie in \(0, 1\]"),
    (dict(steps=(1, 2)), "steps must be integers >= 2"),
    (dict(steps=(2.5,)), "steps must be integers >= 2"),
    (dict(stride=4), r"5 x 4 heatmap .* SSIM needs at least 11 x 11"),
    (dict(fractions=(0.2, 1.0)), r"r_drill must lie in \(0, 1\)"),
    (dict(fractions=()), "at least one r_drill"),
    (dict(tau=0.0), r"tau must lie in \(0, 1\]"),
    (dict(tau=(1.0, 1.2)), r"tau must lie in \(0, 1\]"),
    (dict(tau=()), "tau needs at least one value"),
])
def test_tune_drilldown_bad_arguments(kwargs, match):
    graph = small_classifier()
    model = kr.Model(graph, seed=0)
    with pytest.raises(ValueError, match=match):
        kr.tune_drilldown(model, [image_for(graph, dtype=np.float32)],
                          **{"patch": 4, "stride": 1, **kwargs})
    with pytest.raises(ValueError, match="at least one image"):
        kr.tune_drilldown(model, [], patch=4, stride=1)


# -- command line -------------------------------------------------------------------------
def _cli(capsys, *argv):
    from kryptonref.cli import main
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_occlude_approximate_with_drilldown(capsys):
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
    from kryptonref.images import sample_image_path
    code, _, err = _cli(capsys, "occlude", sample_image_path(), "--model", "demo_vgg",
                        "--weights", "pretrained", "--patch", "32", "--stride", "16", *argv)
    assert code == 2 and re.search(match, err)


def test_cli_tune_on_generated_images(capsys):
    code, out, _ = _cli(capsys, "tune", "demo_vgg", "--images", "demo", "--count", "1",
                        "--patch", "32", "--stride", "16", "--json", "--no-progress")
    assert code == 0
    summary = json.loads(out)
    assert 0.4 <= summary["tau"] <= 1.0 and summary["grid"][0] == 1.0
    assert summary["mean_ssim"][0] == 1.0 and summary["n_held_out"] == 0
    code, _, err = _cli(capsys, "tune", "demo_vgg", "--images", "/no/such/folder")
    assert code == 2 and "neither a folder nor 'demo'" in err


def test_cli_tune_drilldown(capsys):
    argv = ("tune", "demo_vgg", "--images", "demo", "--count", "1", "--patch", "32",
            "--stride", "8", "--drilldown", "--no-progress")
    code, out, _ = _cli(capsys, *argv, "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["tau"] == 1.0 and summary["n_held_out"] == 0
    assert len(summary["table"]) == 5 * 7   # DRILL_STEPS x DRILL_FRACTIONS
    assert summary["coarse_stride"][0] % 8 == 0 and summary["coarse_stride"][0] >= 16
    if summary["reached"]:
        assert summary["lower_ssim"] == summary["mean_ssim"] >= 0.9   # one image: the mean
    code, out, _ = _cli(capsys, *argv, "--tau", "0.7")
    assert code == 0 and "tau 0.7" in out and "coarse stride" in out
    code, out, _ = _cli(capsys, *argv, "--tau", "1,0.6", "--json")
    summary = json.loads(out)
    assert code == 0 and sorted({row["tau"] for row in summary["table"]}) == [0.6, 1.0]
    passing = [row for row in summary["table"] if row["lower_ssim"] >= 0.9]
    chosen = (max(passing, key=lambda row: row["predicted_speedup"]) if passing
              else max(summary["table"], key=lambda row: row["lower_ssim"]))
    assert (summary["tau"], summary["r_drill"]) == (chosen["tau"], chosen["r_drill"])
    assert summary["coarse_stride"][0] == 8 * chosen["steps"]
    with pytest.raises(SystemExit) as exit_info:
        _cli(capsys, *argv, "--tau", "1,x")
    assert exit_info.value.code == 2 and "expected T or T,T" in capsys.readouterr().err
    code, _, err = _cli(capsys, "tune", "demo_vgg", "--images", "demo", "--count", "1",
                        "--tau", "0.7")
    assert code == 2 and "--tau goes with --drilldown" in err


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
    assert code == 2 and "not with --all" in err
