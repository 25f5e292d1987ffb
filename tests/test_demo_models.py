"""The shapes data, the shipped demo models and the localisation metrics.

The weights in ``kryptonref/data`` were trained with PyTorch by the dev-only
script ``tools/train_demo_models.py``; here only kryptonref runs them (no torch).
"""
import json
import os

import numpy as np
import pytest

import kryptonref as kr
from kryptonref import datasets
from kryptonref.analysis import cell_centres, centres_in_box, energy_in_box, pointing_game, ssim
from kryptonref.models.zoo import DATA_DIR, build_graph, zoo_entry

DEMOS = ("demo_vgg", "demo_resnet", "demo_effnet")

#: A seed used neither for training (1), validation (2) nor the recorded test set (3).
FRESH_SEED = 4
FRESH_IMAGES = 250


# -- the data ------------------------------------------------------------------------------
def test_shape_dtype_and_ground_truth_at_224():
    data = datasets.shapes(6, seed=0)
    assert data.images.shape == (6, 3, 224, 224) and data.images.dtype == np.float32
    assert data.labels.shape == (6,) and data.labels.dtype == np.int64
    assert data.masks.shape == (6, 224, 224) and data.masks.dtype == bool
    assert data.boxes.shape == (6, 4) and data.boxes.dtype == np.int64
    assert data.class_names == datasets.CLASS_NAMES and len(data.class_names) >= 4
    assert len(data) == 6 and data.num_classes == len(datasets.CLASS_NAMES)
    assert np.all(np.isfinite(data.images))
    pixels = data.pixels()
    assert pixels.shape == (6, 224, 224, 3) and pixels.min() >= 0 and pixels.max() <= 1
    np.testing.assert_allclose(datasets.normalize(np.moveaxis(pixels, -1, 1)), data.images,
                               atol=1e-5)


@pytest.mark.parametrize("size", [32, 64, 100])
def test_other_sizes(size):
    data = datasets.shapes(3, image_size=size, seed=1)
    assert data.images.shape == (3, 3, size, size)
    assert data.masks.shape == (3, size, size)
    assert np.all(data.masks.any(axis=(1, 2)))


def test_deterministic_for_a_seed_and_prefix_stable():
    a = datasets.shapes(5, image_size=64, seed=7)
    b = datasets.shapes(5, image_size=64, seed=7)
    for field in ("images", "labels", "masks", "boxes"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    # sample i of a seed does not depend on n or start
    c = datasets.shapes(2, image_size=64, seed=7, start=3)
    np.testing.assert_array_equal(c.images, a.images[3:5])
    np.testing.assert_array_equal(c.boxes, a.boxes[3:5])


def test_distinct_seeds_differ():
    a = datasets.shapes(4, image_size=64, seed=0)
    b = datasets.shapes(4, image_size=64, seed=1)
    assert not np.array_equal(a.images, b.images)
    assert not np.array_equal(a.masks, b.masks)


def test_box_is_the_masks_bounding_box():
    data = datasets.shapes(40, image_size=96, seed=3)
    for mask, (y0, x0, y1, x1) in zip(data.masks, data.boxes):
        assert 0 <= y0 < y1 <= 96 and 0 <= x0 < x1 <= 96
        assert mask[y0:y1, x0:x1].sum() == mask.sum() > 0
        assert mask[y0].any() and mask[y1 - 1].any()
        assert mask[:, x0].any() and mask[:, x1 - 1].any()


def test_object_size_and_labels_balanced():
    data = datasets.shapes(400, image_size=64, seed=5)
    counts = np.bincount(data.labels, minlength=data.num_classes)
    expected = len(data) / data.num_classes
    assert counts.min() >= 0.6 * expected and counts.max() <= 1.4 * expected
    extent = np.maximum(data.boxes[:, 2] - data.boxes[:, 0], data.boxes[:, 3] - data.boxes[:, 1])
    assert extent.min() >= 0.12 * 64 and extent.max() <= 0.55 * 64


def test_object_differs_from_its_surroundings():
    """Every object is visible: its mean colour stands out from the ring of pixels around it."""
    data = datasets.shapes(30, image_size=96, seed=6)
    pixels = data.pixels()
    for img, mask in zip(pixels, data.masks):
        grown = mask.copy()
        for axis in (0, 1):
            for shift in (-3, 3):
                grown |= np.roll(mask, shift, axis=axis)
        inside = img[mask].mean(axis=0)
        around = img[grown & ~mask].mean(axis=0)
        assert np.linalg.norm(inside - around) > 0.1


@pytest.mark.parametrize("kwargs,error", [
    (dict(n=-1), ValueError), (dict(n=2, image_size=16), ValueError),
    (dict(n=2, seed=-3), ValueError), (dict(n=2.5), TypeError),
])
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        datasets.shapes(**kwargs)


# -- the zoo entries ---------------------------------------------------------------------
@pytest.mark.parametrize("name", DEMOS)
def test_registered_with_shipped_weights(name):
    assert name in kr.zoo_names()
    entry = zoo_entry(name)
    assert entry.default_size == 224 and entry.num_classes == 5
    assert os.path.isfile(os.path.join(DATA_DIR, entry.pretrained))
    graph = build_graph(name)
    assert graph.shapes[graph.output] == (5,)
    assert 20e6 < sum(graph.macs().values()) < 300e6


def test_layer_patterns():
    vgg = build_graph("demo_vgg")
    kinds = [type(vgg.nodes[n].layer).__name__ for n in vgg.order if n.startswith("features")]
    assert kinds.count("MaxPool2d") == 5
    assert all(vgg.nodes[n].layer.kernel_size == (3, 3) for n in vgg.order
               if isinstance(vgg.nodes[n].layer, kr.Conv2d))
    res = build_graph("demo_resnet")
    assert res.nodes["conv1"].layer.kernel_size == (7, 7) and res.nodes["conv1"].layer.stride == (2, 2)
    assert isinstance(res.nodes["maxpool"].layer, kr.MaxPool2d)
    assert sum(isinstance(node.layer, kr.Add) for node in res.nodes.values()) == 8
    assert "layer2.0.downsample.0" in res.nodes and "fc" in res.nodes


def test_demo_effnet_layer_pattern():
    """EfficientNet's layout: a 3x3/2 stem, 9 MBConv blocks in 5 stages, each with a
    squeeze-excitation gate, residual adds where the shapes allow, a 1x1 head."""
    eff = build_graph("demo_effnet")
    layers = {name: eff.nodes[name].layer for name in eff.order}
    stem = layers["features.0.0"]
    assert stem.kernel_size == (3, 3) and stem.stride == (2, 2) and stem.out_channels == 16
    assert isinstance(layers["features.0.2"], kr.SiLU)
    blocks = sorted({name.rsplit(".block.", 1)[0] for name in eff.order if ".block." in name})
    assert blocks == ["features.1.0", "features.2.0", "features.2.1", "features.3.0",
                      "features.3.1", "features.4.0", "features.4.1", "features.5.0",
                      "features.5.1"]
    gates = [n for n, layer in layers.items() if isinstance(layer, kr.Mul)]
    assert len(gates) == 9 and sum(isinstance(x, kr.Sigmoid) for x in layers.values()) == 9
    assert sorted(n for n, layer in layers.items() if isinstance(layer, kr.Add)) == [
        "features.1.0.add", "features.2.1.add", "features.3.1.add", "features.4.1.add",
        "features.5.1.add"]
    # features.2.1: expand 24 -> 96, depthwise 3x3, SE to 24 // 4 = 6, project to 24
    assert layers["features.2.1.block.0.0"].out_channels == 96
    depthwise = layers["features.2.1.block.1.0"]
    assert depthwise.groups == 96 and depthwise.kernel_size == (3, 3)
    assert layers["features.2.1.block.2.fc1"].out_channels == 6
    assert isinstance(layers["features.2.1.block.2.scale_activation"], kr.Sigmoid)
    assert layers["features.2.1.block.3.0"].out_channels == 24
    assert "features.1.0.block.0.0" in layers and layers["features.1.0.block.0.0"].groups == 16
    assert layers["features.6.0"].out_channels == 256
    assert isinstance(layers["classifier.0"], kr.Dropout) and layers["classifier.0"].p == 0.2
    assert layers["classifier.1"].in_features == 256
    model = kr.zoo("demo_effnet")
    trainable = sum(v.size for node in model.params.values() for k, v in node.items()
                    if k not in ("running_mean", "running_var"))
    assert 260_000 < trainable < 280_000
    assert 80e6 < sum(eff.macs().values()) < 90e6


def test_pretrained_errors():
    with pytest.raises(ValueError, match="ships no pretrained weights"):
        kr.zoo("resnet18", weights="pretrained")
    with pytest.raises(ValueError, match="image_size 224"):
        kr.zoo("demo_vgg", image_size=112, weights="pretrained")
    with pytest.raises(ValueError, match="num_classes 5"):
        kr.zoo("demo_resnet", num_classes=10, weights="pretrained")
    assert kr.zoo("demo_vgg", image_size=64, num_classes=3).graph.shapes["classifier.3"] == (3,)


def test_the_record_matches_the_shipped_weights():
    with open(os.path.join(DATA_DIR, "demo_models.json")) as f:
        record = json.load(f)
    for name in DEMOS:
        entry = record["models"][name]
        assert entry["test_accuracy_torch"] >= 0.95
        assert entry["test_accuracy_kryptonref"] >= 0.95
        assert entry["fidelity"]["max_abs_logit_diff"] < 1e-3
        assert entry["weights_bytes"] == os.path.getsize(os.path.join(DATA_DIR, entry["weights_file"]))
        assert entry["weights_bytes"] <= 5 * 2**20
        with np.load(os.path.join(DATA_DIR, entry["weights_file"])) as weights:
            assert all(weights[k].dtype == np.float32 for k in weights.files)
            assert not any(k.endswith("num_batches_tracked") for k in weights.files)
            # every array the graph expects, of its shape, and nothing else
            expected = {f"{node}.{p}": shape
                        for node, params in kr.zoo(name).param_shapes().items()
                        for p, shape in params.items()}
            assert {k: weights[k].shape for k in weights.files} == expected


# -- fidelity: kryptonref's own inference on the shipped weights ----------------------------
@pytest.fixture(scope="module")
def fresh():
    return datasets.shapes(FRESH_IMAGES, seed=FRESH_SEED)


@pytest.mark.parametrize("name", DEMOS)
def test_accuracy_on_fresh_data(name, fresh):
    model = kr.zoo(name, weights="pretrained")
    logits = np.concatenate([model.forward(fresh.images[s:s + 50])
                             for s in range(0, len(fresh), 50)])
    accuracy = float(np.mean(logits.argmax(axis=1) == fresh.labels))
    assert accuracy >= 0.95, f"{name}: accuracy {accuracy:.3f} on {len(fresh)} fresh images"
    with open(os.path.join(DATA_DIR, "demo_models.json")) as f:
        recorded = json.load(f)["models"][name]["test_accuracy_kryptonref"]
    assert abs(accuracy - recorded) <= 0.03, f"{name}: {accuracy:.3f}, recorded {recorded}"


@pytest.mark.parametrize("name", DEMOS)
def test_incremental_equals_full_on_trained_weights(name, fresh):
    model = kr.zoo(name, weights="pretrained")
    image = fresh.images[0]
    positions = np.array([[0, 0], [96, 64], [192, 192], [40, 150]])
    result = kr.incremental_inference(model, image, positions, patch=32, fill=0.0)
    occluded = np.repeat(image[None], len(positions), axis=0)
    for k, (y, x) in enumerate(positions):
        occluded[k, :, y:y + 32, x:x + 32] = 0.0
    np.testing.assert_allclose(result.output, model.forward(occluded), rtol=1e-4, atol=1e-4)


def test_frozen_context_on_demo_effnet(fresh):
    """Freezing the squeeze-excitation gates keeps regions local: far fewer MACs than
    exact incremental inference (whose regions are whole from the first gate on) for a
    heatmap close to the exact one (patch 24, stride 20: 121 positions of one image)."""
    model = kr.zoo("demo_effnet", weights="pretrained")
    image, label = fresh.images[0], int(fresh.labels[0])   # SSIM 0.97 (0.82-0.97 on the first 6)
    exact = kr.occlusion(model, image, 24, 20, target=label)
    frozen = kr.occlusion(model, image, 24, 20, target=label, mode="approximate",
                          freeze_context=True)
    assert exact.heatmap.shape == (11, 11)
    assert frozen.macs < exact.macs / 4
    assert ssim(exact.heatmap, frozen.heatmap) > 0.8


# -- localisation metrics ---------------------------------------------------------------------
def test_cell_centres():
    cy, cx = cell_centres((3, 4), patch=(8, 4), stride=(4, 2))
    assert cy.ravel().tolist() == [4.0, 8.0, 12.0]
    assert cx.ravel().tolist() == [2.0, 4.0, 6.0, 8.0]


def test_pointing_game_hand_made():
    # 224 px, patch 32, stride 16: 13 x 13 cells, centres 16, 32, ..., 208
    heat = np.full((13, 13), 0.95)
    heat[4, 6] = 0.1                               # centre (80, 112)
    assert pointing_game(heat, (60, 90, 120, 140), 32, 16)
    assert not pointing_game(heat, (100, 90, 160, 140), 32, 16)      # 80 < 100
    assert pointing_game(heat, (100, 90, 160, 140), 32, 16, tolerance=20)
    # the box is closed in continuous coordinates: a centre on its edge counts
    assert pointing_game(heat, (80, 112, 81, 113), 32, 16)
    assert not pointing_game(heat, (81, 112, 90, 113), 32, 16)
    # the lowest value wins, not the highest; any increasing transform gives the same answer
    heat[10, 10] = 0.99
    assert pointing_game(np.log(heat), (60, 90, 120, 140), 32, 16)
    # ties: the first in row-major order
    heat[12, 12] = 0.1
    assert pointing_game(heat, (60, 90, 120, 140), 32, 16)


def test_energy_in_box_hand_made():
    heat = np.full((13, 13), 0.9)
    heat[4, 6] = 0.3            # drop 0.6, centre (80, 112), in the box
    heat[5, 6] = 0.6            # drop 0.3, centre (96, 112), in the box
    heat[0, 0] = 0.6            # drop 0.3, centre (16, 16), outside
    heat[12, 12] = 1.0          # a rise: no drop energy
    box = (60, 90, 120, 140)
    assert energy_in_box(heat, box, 32, 16, baseline=0.9) == pytest.approx(0.75)
    assert energy_in_box(heat, box, 32, 16, baseline=0.9, tolerance=100) == pytest.approx(1.0)
    assert energy_in_box(heat, (0, 0, 224, 224), 32, 16, baseline=0.9) == pytest.approx(1.0)
    assert np.isnan(energy_in_box(np.full((13, 13), 0.9), box, 32, 16, baseline=0.9))
    share = centres_in_box((13, 13), box, 32, 16)
    assert share.sum() == 4 * 3      # rows 64, 80, 96, 112; columns 96, 112, 128


@pytest.mark.parametrize("call,error", [
    (lambda: pointing_game(np.ones(5), (0, 0, 4, 4), 2, 1), ValueError),
    (lambda: pointing_game(np.ones((3, 3)), (0, 0, 4), 2, 1), ValueError),
    (lambda: pointing_game(np.ones((3, 3)), (4, 0, 4, 4), 2, 1), ValueError),
    (lambda: pointing_game(np.full((3, 3), np.nan), (0, 0, 4, 4), 2, 1), ValueError),
    (lambda: pointing_game(np.ones((3, 3)), (0, 0, 4, 4), 0, 1), ValueError),
    (lambda: energy_in_box(np.ones((3, 3)), (0, 0, 4, 4), 2, 1.5, baseline=1.0), TypeError),
    (lambda: energy_in_box(np.ones((3, 3)), (0, 0, 4, 4), 2, 1, baseline=np.inf), ValueError),
])
def test_localisation_bad_input(call, error):
    with pytest.raises(error):
        call()


def test_localisation_on_a_trained_model():
    """The most sensitive cell of an exact occlusion map lands on the object (3 images)."""
    model = kr.zoo("demo_resnet", weights="pretrained")
    data = datasets.shapes(3, seed=FRESH_SEED + 1)
    positions = kr.patch_positions((224, 224), 32, 32)
    hits = 0
    for image, label, box in zip(data.images, data.labels, data.boxes):
        out = kr.incremental_inference(model, image, positions, patch=32).output
        z = out - out.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        hits += pointing_game(logp[:, label].reshape(7, 7), box, 32, 32)
    assert hits >= 2
