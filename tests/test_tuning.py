"""Tuning approximate inference (kryptonref.tuning): tune_tau, tune_drilldown, and
``kryptonref tune``."""
import json

import numpy as np
import pytest

import kryptonref as kr
from kryptonref.analysis import ssim

from .test_occlusion import image_for, small_classifier


def _cli(capsys, *argv):
    from kryptonref.cli import main
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


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


@pytest.mark.parametrize("tuner", ["tune_tau", "tune_drilldown"])
def test_tuners_check_the_model_and_every_image_first(tuner):
    """tune_tau(None, ...) was an AttributeError; one (C, H, W) image read as C images; a
    NaN in the second image was found after the first one's run, without its index."""
    graph = small_classifier()
    model = kr.Model(graph, seed=0)
    image = image_for(graph, dtype=np.float32)
    tune = getattr(kr, tuner)
    with pytest.raises(TypeError, match="model must be a kryptonref Model .*got NoneType"):
        tune(None, [image], patch=4, stride=1)
    with pytest.raises(ValueError, match=r"got one image of shape .* \(write \[image\]\)"):
        tune(model, image, patch=4, stride=1)
    spoiled = image.copy()
    spoiled[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"images\[1\] contains NaN"):
        tune(model, [image, spoiled, image], patch=4, stride=1)
    with pytest.raises(TypeError, match="images must be a list"):
        tune(model, None, patch=4, stride=1)


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



def test_cli_tune_on_generated_images(capsys):
    code, out, _ = _cli(capsys, "tune", "demo_vgg", "--images", "demo", "--count", "1",
                        "--patch", "32", "--stride", "16", "--json", "--no-progress")
    assert code == 0
    summary = json.loads(out)
    assert 0.4 <= summary["tau"] <= 1.0 and summary["grid"][0] == 1.0
    assert summary["mean_ssim"][0] == 1.0 and summary["n_held_out"] == 0
    code, _, err = _cli(capsys, "tune", "demo_vgg", "--images", "/no/such/folder")
    assert code == 1 and "neither a folder nor 'demo'" in err


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
    assert code == 1 and "--tau goes with --drilldown" in err


# -- freeze_context ------------------------------------------------------------------------
def se_classifier(shape=(3, 32, 32), classes=4):
    """A tiny classifier with one squeeze-excitation gate (exact regions become whole at
    ``se.scale``; frozen, they stay local)."""
    from kryptonref.models.modern import squeeze_excitation
    g = kr.Graph(shape)
    g.add(kr.Conv2d(shape[0], 6, 3, padding=1), name="c1")
    g.add(kr.SiLU(), name="a1")
    last = g.add(kr.Conv2d(6, 6, 3, padding=1), name="c2")
    squeeze_excitation(g, "se", last, 6, 2, act=kr.SiLU)
    g.add(kr.Conv2d(6, 6, 3, stride=2, padding=1), name="c3")
    g.add(kr.GlobalAvgPool2d(), name="gap")
    g.add(kr.Flatten(), name="flat")
    g.add(kr.Linear(6, classes), name="fc")
    return g


def _se_model_and_images(count):
    graph = se_classifier()
    model = kr.Model(graph, seed=3, dtype=np.float64)
    return model, [image_for(graph, seed=s) for s in range(count)]


def test_tune_tau_with_frozen_context_measures_every_tau_against_exact():
    model, images = _se_model_and_images(3)
    tuned = kr.tune_tau(model, images, target_ssim=0.5, patch=4, stride=2,
                        grid=(1.0, 0.7, 0.4), freeze_context=True, batch_size=32)
    assert tuned.freeze_context and tuned.to_dict()["freeze_context"] is True
    assert tuned.n_fit == 2 and tuned.n_held_out == 1
    for i in range(2):
        exact = kr.occlusion(model, images[i], 4, 2, batch_size=32)
        for j, tau in enumerate(tuned.grid):   # tau 1 frozen is approximate: measured
            frozen = kr.occlusion(model, images[i], 4, 2, mode="approximate", tau=tau,
                                  freeze_context=True, target=exact.label, batch_size=32)
            assert tuned.ssim_per_image[i][j] == pytest.approx(ssim(exact.heatmap,
                                                                    frozen.heatmap))
    assert tuned.mean_ssim[0] < 1.0
    exact = kr.occlusion(model, images[2], 4, 2, batch_size=32)
    frozen = kr.occlusion(model, images[2], 4, 2, mode="approximate", tau=tuned.tau,
                          freeze_context=True, target=exact.label, batch_size=32)
    assert tuned.held_out_ssim == pytest.approx(ssim(exact.heatmap, frozen.heatmap))
    plain = kr.tune_tau(model, images[:1], target_ssim=0.5, patch=4, stride=2,
                        grid=(1.0, 0.7, 0.4), batch_size=32)
    assert not plain.freeze_context and plain.mean_ssim[0] == 1.0


def test_tune_drilldown_with_frozen_context_counts_the_frozen_macs():
    model, images = _se_model_and_images(3)
    tuned = kr.tune_drilldown(model, images, target_ssim=0.3, patch=4, stride=2,
                              tau=(1.0, 0.5), steps=(2,), fractions=(0.2,),
                              freeze_context=True, batch_size=32)
    assert tuned.freeze_context and tuned.to_dict()["freeze_context"] is True
    exact_macs = kr.speedup(model, 4, 2, mode="executed", batch_size=32).incremental_macs
    for row in tuned.table:
        frozen_macs = kr.speedup(model, 4, 2, tau=row["tau"], mode="executed", batch_size=32,
                                 freeze_context=True).incremental_macs
        assert frozen_macs < exact_macs      # the gate no longer makes the region whole
        assert row["predicted_speedup"] == pytest.approx(row["speedup"] * exact_macs
                                                         / frozen_macs)
        values = []
        for image in images[:2]:   # each row: frozen drill-down against the exact heatmap
            exact = kr.occlusion(model, image, 4, 2, batch_size=32)
            drill = kr.occlusion(model, image, 4, 2, mode="approximate", tau=row["tau"],
                                 drilldown=True, r_drill=row["r_drill"], coarse_stride=4,
                                 freeze_context=True, target=exact.label, batch_size=32)
            values.append(ssim(exact.heatmap, drill.heatmap))
        assert row["mean_ssim"] == pytest.approx(np.mean(values), rel=1e-9)
    exact = kr.occlusion(model, images[2], 4, 2, batch_size=32)
    drill = kr.occlusion(model, images[2], 4, 2, mode="approximate", tau=tuned.tau,
                         drilldown=True, r_drill=tuned.r_drill, coarse_stride=tuned.coarse_stride,
                         freeze_context=True, target=exact.label, batch_size=32)
    assert tuned.held_out_ssim == pytest.approx(ssim(exact.heatmap, drill.heatmap))
