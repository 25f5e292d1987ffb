"""explain_many: many images on a Dask cluster into a resumable Zarr store.

One local cluster of two single-threaded worker processes serves every test
(module scope); the images are 48-pixel generated shapes, the model the demo VGG
at that size with seeded random weights (``test_quality_target`` uses the shipped
weights at 224 and is marked slow).
"""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from .conftest import require

require("distributed", "dask")
require("zarr", "dask")
require("PIL", "image")

import kryptonref as kr  # noqa: E402
from kryptonref import cluster, datasets, many  # noqa: E402
from kryptonref.cli import main  # noqa: E402
from kryptonref.images import load_image  # noqa: E402

N = 12
SETTINGS = dict(patch=8, stride=4)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _environ():
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


@pytest.fixture(scope="module")
def environ_before():
    return _environ()


@pytest.fixture(scope="module")
def client(environ_before):
    client = cluster.local_cluster(workers=2, threads=1)
    yield client
    local = client.cluster
    client.close()
    local.close()


@pytest.fixture(scope="module")
def model():
    return kr.zoo("demo_vgg", image_size=48)


@pytest.fixture(scope="module")
def images():
    return datasets.shapes(N, image_size=48, seed=3).images


@pytest.fixture(scope="module")
def reference(model, images):
    return [kr.occlusion(model, image, **SETTINGS) for image in images]


@pytest.fixture(scope="module")
def complete(tmp_path_factory, client, model, images):
    """An uninterrupted run over the 12 images: the store's path and summary."""
    path = str(tmp_path_factory.mktemp("many") / "complete.zarr")
    summary = kr.explain_many(model, images, path, client=client, progress=False, **SETTINGS)
    return path, summary


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory, images):
    """Five PNGs of the generated images and one corrupt PNG."""
    from PIL import Image
    folder = tmp_path_factory.mktemp("pngs")
    pixels = datasets.denormalize(images[:5])
    for i, array in enumerate(pixels):
        Image.fromarray((array * 255).round().astype(np.uint8)).save(folder / f"img{i}.png")
    (folder / "img5.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return folder


def _arrays(path):
    import zarr
    group = zarr.open_group(path, mode="r")
    return {name: group[name][:] for name in group.array_keys()}


def test_import_loads_neither_dask_nor_zarr():
    code = ("import sys, kryptonref as kr; kr.explain_many; kr.store_info; "
            "print(sorted(m for m in ('dask', 'distributed', 'zarr') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=REPO), check=True).stdout
    assert out.strip() == "[]"


def test_results_equal_occlusion_image_by_image(complete, reference, environ_before):
    path, summary = complete
    assert (summary.total, summary.done, summary.skipped, summary.failed) == (N, N, 0, 0)
    stored = _arrays(path)
    assert (stored["status"] == 1).all()
    assert list(stored["image"]) == [str(i) for i in range(N)]
    for i, ref in enumerate(reference):
        np.testing.assert_allclose(stored["heatmap"][i], ref.heatmap, rtol=0, atol=1e-6)
        assert stored["label"][i] == ref.label
        assert stored["probability"][i] == pytest.approx(ref.probability, abs=1e-6)
        assert stored["macs"][i] == ref.macs
        assert stored["seconds"][i] > 0
    info = kr.store_info(path)
    assert (info.done, info.failed, info.pending) == (N, 0, 0)
    assert info.parameters["patch"] == [8, 8] and info.version == kr.__version__
    # Starting the cluster and running left the caller's environment as it was.
    assert _environ() == environ_before


def test_rerun_skips_everything_without_a_cluster(complete, model, images):
    path, _ = complete
    summary = kr.explain_many(model, images, path, client="tcp://127.0.0.1:9", **SETTINGS)
    assert (summary.done, summary.skipped, summary.failed) == (0, N, 0)


def test_changed_parameters_model_or_images_are_refused_before_any_cluster(complete, model,
                                                                           images):
    path, _ = complete
    before = _arrays(path)
    nowhere = "tcp://127.0.0.1:9"   # never reached: the check comes first
    with pytest.raises(ValueError, match=r"stride: store has \[4, 4\], this run \[2, 2\]"):
        kr.explain_many(model, images, path, client=nowhere, patch=8, stride=2)
    with pytest.raises(ValueError, match="model: store has SHA-256"):
        kr.explain_many(kr.zoo("demo_vgg", image_size=48, seed=1), images, path,
                        client=nowhere, **SETTINGS)
    changed = images.copy()
    changed[3, 0, 0, 0] += 1
    with pytest.raises(ValueError, match="same count but different images"):
        kr.explain_many(model, changed, path, client=nowhere, **SETTINGS)
    with pytest.raises(ValueError) as err:
        kr.explain_many(model, images[:5], path, client=nowhere, patch=8, stride=2,
                        fill=0.5)
    message = str(err.value)
    assert "fill" in message and "stride" in message and "images: store has 12" in message
    after = _arrays(path)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_a_path_that_is_not_a_zarr_group_is_refused_never_cleared(tmp_path, model, images):
    file = tmp_path / "results.zarr"
    file.write_text("mine")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    for target in (file, folder):
        with pytest.raises(ValueError, match="not a Zarr group; refusing"):
            kr.explain_many(model, images, str(target), client="tcp://127.0.0.1:9", **SETTINGS)
    assert file.read_text() == "mine" and (folder / "keep.txt").read_text() == "mine"


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, client, model, images,
                                                       complete):
    path = str(tmp_path / "resumed.zarr")
    calls = []

    def interrupt(completed, total):
        calls.append(completed)
        if completed == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        kr.explain_many(model, images, path, client=client, progress=interrupt, **SETTINGS)
    info = kr.store_info(path)
    assert 4 <= info.done < N and info.failed == 0
    summary = kr.explain_many(model, images, path, client=client, progress=False, **SETTINGS)
    assert summary.skipped >= 4 and summary.skipped + summary.done == N
    resumed, whole = _arrays(path), _arrays(complete[0])
    for name in whole:
        if name != "seconds":
            np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)


def test_worker_killed_mid_run_the_store_ends_complete_and_correct(tmp_path, client, model,
                                                                   images, reference,
                                                                   environ_before):
    path = str(tmp_path / "killed.zarr")
    killed = []

    def kill_one_worker(completed, total):
        if not killed:
            pids = client.run(os.getpid)
            victim = sorted(pids.values())[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    summary = kr.explain_many(model, images, path, client=client, progress=kill_one_worker,
                              **SETTINGS)
    assert killed and summary.failed == 0 and summary.done == N
    stored = _arrays(path)
    assert (stored["status"] == 1).all()
    for i, ref in enumerate(reference):
        np.testing.assert_allclose(stored["heatmap"][i], ref.heatmap, rtol=0, atol=1e-6)
        assert stored["label"][i] == ref.label
    client.wait_for_workers(2, timeout=60)
    # The nanny that restarted the worker lives in this process: it must not have written
    # the workers' thread settings into our environment (Numba then refuses to compile).
    # Dask itself marks this process as a worker's parent on every start, by pid only.
    after = _environ()
    assert after.pop("__DASK_PARENT_PID", str(os.getpid())) == str(os.getpid())
    assert after == environ_before


def test_corrupt_image_fails_alone_and_is_retried_once_fixed(tmp_path, client, model,
                                                             png_folder):
    path = str(tmp_path / "pngs.zarr")
    summary = kr.explain_many(model, str(png_folder), path, client=client, **SETTINGS)
    assert (summary.done, summary.failed) == (5, 1)
    assert "img5.png" in kr.load_result(path, 5)["image"]
    assert "cannot read image" in summary.errors[5]
    info = kr.store_info(path)
    assert info.failed == 1 and "cannot read image" in info.errors[5]
    for i in range(5):
        result = kr.load_result(path, i)
        expected = kr.occlusion(model, load_image(result["image"], size=48), **SETTINGS)
        np.testing.assert_allclose(result["heatmap"], expected.heatmap, rtol=0, atol=1e-6)
    # Fixed in place, the failed image is retried; the others are not recomputed.
    (png_folder / "img5.png").write_bytes((png_folder / "img0.png").read_bytes())
    summary = kr.explain_many(model, str(png_folder / "*.png"), path, client=client,
                              **SETTINGS)
    assert (summary.done, summary.skipped, summary.failed) == (1, 5, 0)
    np.testing.assert_array_equal(kr.load_result(path, 5)["heatmap"],
                                  kr.load_result(path, 0)["heatmap"])
    (png_folder / "img5.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")


def test_wrong_sized_array_fails_alone_and_attribution_is_stored(tmp_path, client, model,
                                                                 images):
    path = str(tmp_path / "list.zarr")
    items = [images[0], np.zeros((3, 40, 40), np.float32), images[2]]
    summary = kr.explain_many(model, items, path, client=client, attribution=True,
                              fill="mean", **SETTINGS)
    assert (summary.done, summary.failed) == (2, 1)
    assert "shape" in summary.errors[1]
    for i in (0, 2):
        expected = kr.occlusion(model, images[i], fill="mean", **SETTINGS)
        result = kr.load_result(path, i)
        np.testing.assert_allclose(result["heatmap"], expected.heatmap, rtol=0, atol=1e-6)
        np.testing.assert_allclose(result["attribution"], expected.attribution, rtol=1e-5,
                                   atol=1e-6)
    assert kr.load_result(path, 1)["status"] == "failed"


def test_model_travels_once_per_cluster_and_release_removes_it(client, model, complete):
    key = kr.store.model_digest(model)
    assert cluster._registered(client).count(cluster.plugin_name(key)) == 1
    assert cluster._deliver(client, key, model) is False
    assert cluster.plugin_name(key) in cluster.release(client, model)
    assert cluster.plugin_name(key) not in cluster._registered(client)
    assert cluster._deliver(client, key, model) is True


def test_a_task_whose_workers_died_is_recorded_failed_by_the_client(tmp_path, client, model,
                                                                   images):
    import distributed
    path = str(tmp_path / "died.zarr")
    kr.explain_many(model, images[:2], path, client=client, **SETTINGS)
    group = many.zstore._zarr().open_group(path, mode="r+")

    def died():
        import types
        raise distributed.KilledWorker("task", types.SimpleNamespace(address="worker"), 3)

    future = client.submit(died, key="kryptonref-test-1", pure=False)
    distributed.wait(future)
    state, error = many._record(future, group)
    assert state == 2 and error.startswith("KilledWorker")
    info = kr.store_info(path)
    assert info.failed == 1 and info.errors[1].startswith("KilledWorker")


def test_cluster_layout():
    cpu = cluster.cluster_layout(cores=16)
    assert len(cpu) == 16 and all(w["nthreads"] == 1 for w in cpu)
    assert cpu[0]["env"]["NUMBA_NUM_THREADS"] == "1" == cpu[0]["env"]["OPENBLAS_NUM_THREADS"]
    assert len(cluster.cluster_layout(cores=16, threads=2)) == 8
    assert len(cluster.cluster_layout(cores=16, threads=4)) == 4
    assert len(cluster.cluster_layout(cores=2, workers=2, threads=1)) == 2
    cuda = cluster.cluster_layout("cuda", gpus=["0", "1", "2"], threads=4)
    assert [w["env"]["CUDA_VISIBLE_DEVICES"] for w in cuda] == ["0", "1", "2"]
    assert all(w["env"]["NUMBA_NUM_THREADS"] == "4" for w in cuda) or os.cpu_count() < 4
    with pytest.raises(ValueError, match="one worker per GPU"):
        cluster.cluster_layout("cuda", gpus=["0", "1"], workers=3)
    with pytest.raises(ValueError, match="threads"):
        cluster.cluster_layout(threads=0)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(mode="fast"), ValueError, "mode must be one of"),
    (dict(tau=0.5), ValueError, "need mode='approximate'"),
    (dict(quality=0.9, tau=0.5), ValueError, "not both"),
    (dict(quality=1.5), ValueError, "quality must lie in"),
    (dict(mode="approximate", drilldown=True, attribution=True), ValueError, "attribution"),
    (dict(mode="approximate", drilldown={"speed": 2}), ValueError, "unknown keys"),
    (dict(attribution="yes"), TypeError, "attribution"),
    (dict(threads=0), ValueError, "threads"),
    (dict(workers=-1), ValueError, "workers"),
    (dict(progress="bar"), TypeError, "progress"),
    (dict(patch=64), ValueError, "larger than the image"),
    (dict(device="tpu"), ValueError, "device"),
])
def test_argument_checks(tmp_path, model, images, kwargs, error, match):
    settings = dict(SETTINGS, **kwargs)
    with pytest.raises(error, match=match):
        kr.explain_many(model, images, str(tmp_path / "s.zarr"), **settings)
    assert not (tmp_path / "s.zarr").exists()


def test_image_arguments_are_checked(tmp_path, model, images):
    store = str(tmp_path / "s.zarr")
    with pytest.raises(ValueError, match="shape"):
        kr.explain_many(model, images[:, :, :40, :40], store)
    with pytest.raises(ValueError, match="empty"):
        kr.explain_many(model, [], store)
    with pytest.raises(ValueError, match="matches no file"):
        kr.explain_many(model, str(tmp_path / "*.png"), store)
    with pytest.raises(FileNotFoundError):
        kr.explain_many(model, str(tmp_path / "missing"), store)
    with pytest.raises(TypeError, match="Model"):
        kr.explain_many("vgg", images, store)


def test_cli_on_a_folder_then_show(tmp_path, capsys, client, png_folder):
    store = str(tmp_path / "cli.zarr")
    argv = ["occlude", str(png_folder), "--store", store, "--model", "demo_vgg",
            "--image-size", "48", "--patch", "8", "--stride", "4",
            "--scheduler", client.scheduler.address, "--no-progress"]
    assert main(argv) == 1   # the corrupt image failed
    out, err = capsys.readouterr()
    assert "5 explained" in out and "1 failed" in out and "img5.png" not in out
    assert "cannot read image" in err
    assert main(argv + ["--json"]) == 1   # rerun: the failed image is retried, and fails again
    summary = json.loads(capsys.readouterr().out)
    assert (summary["skipped"], summary["failed"]) == (5, 1)

    assert main(["show", store]) == 0
    out = capsys.readouterr().out
    assert "5 done, 1 failed" in out
    overlay = tmp_path / "overlay.png"
    assert main(["show", store, "--index", "2", "--out", str(overlay)]) == 0
    assert "overlay written" in capsys.readouterr().out and overlay.stat().st_size > 0
    assert main(["show", store, "--index", "5", "--out", str(tmp_path / "x.png")]) == 1
    assert "failed" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
    assert main(["show", str(tmp_path / "none.zarr")]) == 1
    assert "no such store" in capsys.readouterr().err
    assert main(argv + ["--out", "o.png"]) == 1
    assert "--out goes with one image" in capsys.readouterr().err


def test_cli_ctrl_c_says_how_far_it_got_and_exits_130(tmp_path, capsys, monkeypatch,
                                                       complete, png_folder):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(many, "explain_many", interrupted)
    code = main(["occlude", str(png_folder), "--store", complete[0], "--model", "demo_vgg",
                 "--image-size", "48"])
    assert code == 130
    assert "12 of 12 complete, rerun to resume" in capsys.readouterr().err


def test_show_draws_the_heatmap_alone_without_the_image(capsys, tmp_path, complete):
    out = tmp_path / "heat.png"
    assert main(["show", complete[0], "--index", "1", "--out", str(out)]) == 0
    assert "heatmap written" in capsys.readouterr().out and out.stat().st_size > 0


def test_summary_and_result_are_json_ready(complete):
    path, summary = complete
    json.dumps(summary.to_dict())
    result = kr.load_result(path, -1)
    assert result["index"] == N - 1 and result["status"] == "done"
    with pytest.raises(ValueError, match="index must be"):
        kr.load_result(path, N)


@pytest.mark.slow
def test_quality_target(tmp_path, client):
    """quality=0.9 on the trained demo model: the chosen setting's SSIM against exact
    heatmaps, over images outside the tuning sample, reaches the target on average."""
    from kryptonref.analysis.quality import ssim
    model = kr.zoo("demo_vgg", weights="pretrained")
    data = datasets.shapes(9, image_size=224, seed=11).images
    path = str(tmp_path / "quality.zarr")
    summary = kr.explain_many(model, data, path, client=client, patch=16, stride=8,
                              quality=0.9, quality_sample=6)
    assert summary.done == 9 and summary.failed == 0
    record = kr.store_info(path).quality
    assert record["target"] == 0.9 and len(record["sample"]) == 6
    assert record["choice"]["mode"] in ("exact", "approximate")
    outside = [i for i in range(9) if i not in record["sample"]]
    values = [ssim(kr.occlusion(model, data[i], patch=16, stride=8).heatmap,
                   kr.load_result(path, i)["heatmap"]) for i in outside]
    assert np.mean(values) >= 0.9
    again = kr.explain_many(model, data, path, client=client, patch=16, stride=8,
                            quality=0.9, quality_sample=6)
    assert again.skipped == 9 and again.quality == record
