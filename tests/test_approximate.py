"""Approximate inference (projective-field threshold tau, DESIGN.md section 6).

The engine with ``tau < 1`` must equal a plain per-position implementation of
the definition (``tests/naive.py: naive_approximate``) at every node, whatever
the batch; ``tau = 1`` must be exact; a smaller tau never computes more; and
the cost simulator's executed mode counts exactly the engine's MACs.
"""
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
