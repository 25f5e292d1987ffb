"""Heatmap quality and drill-down's cost model (kryptonref.analysis.quality)."""
import numpy as np
import pytest

from .conftest import require
from kryptonref.analysis import coarse_stride_for, drilldown_speedup, mean_absolute_error, ssim


def test_ssim_equals_scikit_image():
    metrics = require("skimage.metrics", "test")
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


def test_drilldown_speedup_formula_and_coarse_stride():
    assert drilldown_speedup(16, 4, 0.25) == pytest.approx(256 / (16 + 64))
    assert coarse_stride_for(3.0, 4, 0.25, 224) == 16    # 4 sqrt(3 / 0.25) = 13.9 -> 16
    assert drilldown_speedup(coarse_stride_for(3.0, 4, 0.25, 224), 4, 0.25) >= 3.0
