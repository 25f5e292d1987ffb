"""Occlusion end to end: incremental == full, Captum's attribution, fills, bad input."""
import numpy as np
import pytest

import kryptonref as kr
from kryptonref.explain import captum_windows

from . import naive


def small_classifier(shape=(3, 20, 17), classes=5, softmax=False):
    g = kr.Graph(shape)
    g.add(kr.Conv2d(shape[0], 6, 3, padding=1), name="c1")
    g.add(kr.ReLU(), name="r1")
    g.add(kr.MaxPool2d(2, ceil_mode=True), name="p1")
    g.add(kr.Conv2d(6, 6, 3, padding=1), name="c2")
    g.add(kr.Add(), inputs=["c2", "p1"], name="add")
    g.add(kr.GlobalAvgPool2d(), name="gap")
    g.add(kr.Flatten(), name="flat")
    g.add(kr.Linear(6, classes), name="fc")
    if softmax:
        g.add(kr.Softmax(), name="prob")
    return g


def image_for(graph, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).normal(size=graph.input_shape).astype(dtype)


def softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


@pytest.mark.parametrize("patch,stride", [(5, 3), ((4, 7), (2, 5)), ((20, 17), 1), (1, 4)])
def test_heatmap_and_attribution_match_the_plain_definitions(patch, stride):
    graph = small_classifier()
    model = kr.Model(graph, seed=2, dtype=np.float64)
    image = image_for(graph)
    result = kr.occlusion(model, image, patch=patch, stride=stride, fill=0.25, batch_size=3)
    forward = lambda img: model.forward(img[None])[0]   # noqa: E731
    (ph, pw), (sh, sw) = kr.validate.int_pair(patch, "p"), kr.validate.int_pair(stride, "s")
    ys = range(0, 20 - ph + 1, sh)
    xs = range(0, 17 - pw + 1, sw)
    expected = np.array([[softmax(forward(naive.naive_occlude(image, y, x, (ph, pw), 0.25)))
                          [result.label] for x in xs] for y in ys])
    np.testing.assert_allclose(result.heatmap, expected, rtol=1e-10, atol=1e-12)
    assert result.label == int(np.argmax(forward(image)))
    assert result.probability == pytest.approx(softmax(forward(image))[result.label])
    captum = naive.naive_captum_occlusion(forward, image, (ph, pw), (sh, sw), 0.25, result.label)
    uncovered = np.isnan(captum)            # stride > patch: Captum divides 0 by 0 there
    assert np.all(result.attribution[uncovered] == 0)
    np.testing.assert_allclose(result.attribution[~uncovered], captum[~uncovered],
                               rtol=1e-9, atol=1e-12)
    assert result.attribution.shape == image.shape


@pytest.mark.parametrize("name,size", [("resnet18", 48), ("mobilenet_v2", 32),
                                       ("squeezenet1_1", 48), ("googlenet", 40)])
def test_incremental_equals_full_on_zoo_models(name, size):
    model = kr.zoo(name, image_size=size, num_classes=7, seed=1)
    image = image_for(model.graph, seed=3, dtype=np.float32)
    inc = kr.occlusion(model, image, patch=8, stride=6, mode="incremental")
    full = kr.occlusion(model, image, patch=8, stride=6, mode="full", batch_size=8)
    np.testing.assert_allclose(inc.heatmap, full.heatmap, atol=1e-5, rtol=0)
    np.testing.assert_allclose(inc.attribution, full.attribution, atol=1e-4 * max(
        1.0, float(np.abs(full.attribution).max())), rtol=0)
    assert inc.label == full.label
    assert inc.macs < full.macs


def test_softmax_output_is_not_applied_twice():
    plain, with_softmax = small_classifier(), small_classifier(softmax=True)
    a = kr.Model(plain, seed=4, dtype=np.float64)
    b = kr.Model(with_softmax, weights=a.weights(), dtype=np.float64)
    image = image_for(plain)
    ra, rb = kr.occlusion(a, image, 6, 4), kr.occlusion(b, image, 6, 4)
    np.testing.assert_allclose(ra.heatmap, rb.heatmap, rtol=1e-12)


@pytest.mark.parametrize("fill", [0.0, -1.5, np.array([0.1, -0.2, 0.3]), "mean", "array"])
def test_fill_values(fill):
    graph = small_classifier()
    model = kr.Model(graph, seed=5, dtype=np.float64)
    image = image_for(graph, seed=1)
    if isinstance(fill, str) and fill == "array":
        fill = np.random.default_rng(0).normal(size=(3, 4, 4))
    result = kr.occlusion(model, image, patch=4, stride=4, fill=fill)
    if isinstance(fill, str):
        patch = np.broadcast_to(image.reshape(3, -1).mean(axis=1)[:, None, None], (3, 4, 4))
    else:
        patch = kr.validate.fill_patch(fill, 3, (4, 4), np.float64)
    y, x = result.positions[7]
    occluded = image.copy()
    occluded[:, y:y + 4, x:x + 4] = patch
    expected = softmax(model.forward(occluded[None])[0])[result.label]
    assert result.heatmap.reshape(-1)[7] == pytest.approx(expected, rel=1e-10)


def test_explicit_target_and_result_summary():
    graph = small_classifier()
    model = kr.Model(graph, seed=6)
    result = kr.occlusion(model, image_for(graph, dtype=np.float32), 5, 5, target=3)
    assert result.label == 3
    summary = result.to_dict()
    assert summary["heatmap_shape"] == [4, 3] and summary["positions"] == 12
    assert summary["mode"] == "incremental" and summary["macs"] > 0


def test_captum_windows_truncate_the_last_one():
    starts, sizes = captum_windows(10, 4, 4)
    np.testing.assert_array_equal(starts, [0, 4, 8])
    np.testing.assert_array_equal(sizes, [4, 4, 2])
    starts, sizes = captum_windows(224, 16, 4)
    assert len(starts) == 53 and sizes.min() == 16


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(target=5), ValueError, r"target must be a class index in 0\.\.4"),
    (dict(target=-1), ValueError, "target must be a class index"),
    (dict(mode="fast"), ValueError, "mode must be one of"),
    (dict(patch=21), ValueError, "larger than the image"),
    (dict(stride=0), ValueError, "stride must be positive"),
    (dict(batch_size=0), ValueError, "batch_size must be a positive integer"),
    (dict(fill="median"), ValueError, "fill must be a number, an array or 'mean'"),
])
def test_bad_arguments(kwargs, err, match):
    graph = small_classifier()
    model = kr.Model(graph, seed=0)
    with pytest.raises(err, match=match):
        kr.occlusion(model, image_for(graph, dtype=np.float32), **kwargs)


def test_model_without_class_scores_is_rejected():
    g = kr.Graph((1, 8, 8))
    g.add(kr.Conv2d(1, 2, 3))
    with pytest.raises(ValueError, match="vector of class scores"):
        kr.occlusion(kr.Model(g), np.zeros((1, 8, 8), np.float32), 2, 2)


def test_a_batch_stacks_what_each_image_gives():
    """A 4-D input: one result with per-image fields, equal to one call per image."""
    graph = small_classifier(shape=(3, 12, 10))
    model = kr.Model(graph, seed=3, dtype=np.float64)
    images = np.stack([image_for(graph, seed=s) for s in range(3)])
    batch = kr.occlusion(model, images, patch=4, stride=3, target=[1, 4, 0], batch_size=5)
    assert batch.batched and batch.heatmap.shape[0] == 3
    assert batch.attribution.shape == (3,) + graph.input_shape
    assert batch.label.tolist() == [1, 4, 0] and batch.probability.shape == (3,)
    assert batch.seconds.shape == (3,) and batch.macs.shape == (3,)
    for i in range(3):
        one = kr.occlusion(model, images[i], patch=4, stride=3, target=[1, 4, 0][i])
        assert not one.batched
        np.testing.assert_allclose(batch.heatmap[i], one.heatmap, rtol=1e-12)
        np.testing.assert_allclose(batch.attribution[i], one.attribution, rtol=1e-12,
                                   atol=1e-14)
        assert batch.macs[i] == one.macs and batch.probability[i] == one.probability
    summary = batch.to_dict()
    assert summary["images"] == 3 and summary["label"] == [1, 4, 0]
    same = kr.occlusion(model, images[:2], patch=4, stride=3, target=2)
    assert same.label.tolist() == [2, 2]
    predicted = kr.occlusion(model, images[:2], patch=4, stride=3)
    for i in range(2):
        assert predicted.label[i] == int(np.argmax(model.forward(images[i:i + 1])[0]))


def test_a_batch_with_drilldown_stacks_the_computed_cells():
    graph = small_classifier(shape=(3, 16, 16))
    model = kr.Model(graph, seed=3)
    images = np.stack([image_for(graph, seed=s, dtype=np.float32) for s in range(2)])
    batch = kr.occlusion(model, images, patch=4, stride=2, mode="approximate", drilldown=True,
                         coarse_stride=4)
    assert batch.attribution is None and batch.computed.shape == (2,) + batch.heatmap.shape[1:]
    assert len(batch.to_dict()["evaluated_positions"]) == 2


@pytest.mark.parametrize("target,err,match", [
    ([1, 2], ValueError, "target has 2 entries for 3 images"),
    ([1, 2, 9], ValueError, r"target\[2\] must be a class index in 0\.\.4, got 9"),
    (7, ValueError, r"target must be a class index in 0\.\.4, got 7"),
    ("cat", TypeError, "target must be a class index or a sequence"),
    (np.zeros((3, 1), int), ValueError, r"got an array of shape \(3, 1\)"),
])
def test_bad_batch_targets_are_refused_before_computing(target, err, match):
    graph = small_classifier(shape=(3, 12, 10))
    model = kr.Model(graph, seed=0)
    images = np.zeros((3,) + graph.input_shape, np.float32)
    with pytest.raises(err, match=match):
        kr.occlusion(model, images, patch=4, stride=4, target=target)


def test_a_batch_of_the_wrong_shape_is_refused():
    graph = small_classifier(shape=(3, 12, 10))
    model = kr.Model(graph, seed=0)
    with pytest.raises(ValueError, match=r"or a batch \(N, 3, 12, 10\), got \(2, 3, 10, 12\)"):
        kr.occlusion(model, np.zeros((2, 3, 10, 12), np.float32), patch=4, stride=4)
