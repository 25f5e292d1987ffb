"""Geometry of changed regions: the general rule, the paper's eq. (1)-(8), brute force."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kryptonref import geometry as G


def conv1d(x, weight, stride, pad_before, pad_after, dilation, out_size, pad_value=0.0):
    """Plain 1-D correlation over a padded signal (test oracle for one axis)."""
    k = len(weight)
    span = G.effective_kernel(k, dilation)
    need = (out_size - 1) * stride + span
    padded = np.full(pad_before + max(len(x) + pad_after, need - pad_before), pad_value)
    padded[pad_before:pad_before + len(x)] = x
    return np.array([sum(weight[j] * padded[o * stride + j * dilation] for j in range(k))
                     for o in range(out_size)])


axis_layers = st.tuples(
    st.integers(1, 7),   # kernel
    st.integers(1, 4),   # stride
    st.integers(0, 3),   # pad before
    st.integers(0, 3),   # pad after
    st.integers(1, 3),   # dilation
    st.booleans(),       # ceil mode
    st.integers(1, 40),  # input length
)


def test_paper_figure4_example():
    """Figure 4: 4x4 input, F=3, S=1, P=1: the top-left change reaches the 2x2 top-left outputs."""
    w_out = G.output_size(4, 3, 1, 1, 1)
    assert w_out == 4
    assert G.changed_output(0, 1, 3, 1, 1, 1, w_out) == (0, 2)
    rng = np.random.default_rng(0)
    image, kernel = rng.normal(size=(4, 4)), rng.normal(size=(3, 3))
    changed = image.copy()
    changed[0, 0] += 1.0

    def conv2d_same(img):
        padded = np.pad(img, 1)
        return np.array([[np.sum(padded[i:i + 3, j:j + 3] * kernel) for j in range(4)]
                         for i in range(4)])

    diff = conv2d_same(changed) != conv2d_same(image)
    expected = np.zeros((4, 4), bool)
    expected[:2, :2] = True
    np.testing.assert_array_equal(diff, expected)


@settings(max_examples=300, deadline=None)
@given(axis_layers, st.data())
def test_changed_output_contains_every_changed_output(layer, data):
    """Brute force: no output outside changed_output() changes; with D=1 all inside do."""
    k, s, p0, p1, d, ceil, w_in = layer
    w_out = G.output_size(w_in, k, s, p0, p1, d, ceil)
    if w_out < 1:
        return
    a = data.draw(st.integers(0, w_in - 1))
    b = data.draw(st.integers(a + 1, w_in))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    x = rng.normal(size=w_in)
    weight = rng.uniform(0.5, 1.5, size=k)
    changed = x.copy()
    changed[a:b] += rng.uniform(1, 2, size=b - a)
    before = conv1d(x, weight, s, p0, p1, d, w_out)
    after = conv1d(changed, weight, s, p0, p1, d, w_out)
    o0, o1 = G.changed_output(a, b, k, s, p0, d, w_out)
    moved = np.flatnonzero(~np.isclose(before, after, rtol=0, atol=1e-12))
    assert np.all((moved >= o0) & (moved < o1))
    if d == 1:  # dense kernel with positive weights: every output in the range changes
        assert set(moved) == set(range(o0, o1))


@settings(max_examples=300, deadline=None)
@given(axis_layers, st.data())
def test_read_window_is_sufficient(layer, data):
    """Outputs [o0, o1) computed from the read window alone equal the full computation."""
    k, s, p0, p1, d, ceil, w_in = layer
    w_out = G.output_size(w_in, k, s, p0, p1, d, ceil)
    if w_out < 1:
        return
    o0 = data.draw(st.integers(0, w_out - 1))
    o1 = data.draw(st.integers(o0 + 1, w_out))
    r0, r1 = G.read_window(o0, o1, k, s, p0, d)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    x, weight = rng.normal(size=w_in), rng.normal(size=k)
    full = conv1d(x, weight, s, p0, p1, d, w_out)
    # Build the window by hand: input inside [0, w_in), zero padding outside.
    window = np.array([x[i] if 0 <= i < w_in else 0.0 for i in range(r0, r1)])
    part = conv1d(window, weight, s, 0, 0, d, o1 - o0)
    np.testing.assert_allclose(part, full[o0:o1], rtol=1e-12, atol=1e-12)
    assert r1 - r0 == (o1 - o0 - 1) * s + G.effective_kernel(k, d)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 7), st.integers(1, 4), st.integers(1, 50), st.data())
def test_paper_equations_are_the_unpadded_case(F, S, W1, data):
    """Eq. (1)-(8) equal the general rule with P = 0, D = 1 (eq. 8 read with W_1)."""
    if F > W1:
        return
    W2 = G.output_size(W1, F, S)
    a = data.draw(st.integers(0, W1 - 1))
    b = data.draw(st.integers(a + 1, W1))
    o0, o1 = G.changed_output(a, b, F, S, 0, 1, W2)
    if o1 > o0:  # a change the stride does not skip
        assert o0 == G.paper_eq1_out_start(a, F, S)
        assert o1 == G.paper_eq2_out_stop(b, F, S, W2)
        r0, r1 = G.read_window(o0, o1, F, S, 0, 1)
        assert r0 == G.paper_eq5_read_start(a, F, S)
        paper_stop = G.paper_eq6_read_stop(b, F, S, W1)
        # Eq. 6 clamps at W_1; the general rule stops at the last window actually used,
        # so it never reads more, and reads the same whenever no output clamp applies.
        assert r1 <= paper_stop
        if (b - 1) // S + 1 <= W2:
            assert r1 == paper_stop


def test_paper_eq8_as_printed_cuts_the_window_short():
    """Eq. (8) bounds y_read1 by W_2; with S = 2 that drops input the outputs need."""
    W1, F, S = 8, 3, 2
    W2 = G.output_size(W1, F, S)
    o0, o1 = G.changed_output(6, 8, F, S, 0, 1, W2)
    _, needed = G.read_window(o0, o1, F, S, 0, 1)
    assert needed == 7
    assert G.paper_eq8_read_stop_as_printed(8, F, S, W2) == 3 < needed
    assert G.paper_eq6_read_stop(8, F, S, W1) >= needed


def test_paper_equations_ignore_padding():
    """Taken literally with P > 0, eq. (1)-(2) shift the region and miss changed outputs."""
    # 3x3 conv, stride 1, padding 1, on 8 pixels: a change at pixel 0 reaches outputs 0 and 1.
    assert G.changed_output(0, 1, 3, 1, 1, 1, 8) == (0, 2)
    paper = (G.paper_eq1_out_start(0, 3, 1), G.paper_eq2_out_stop(1, 3, 1, 8))
    assert paper == (0, 1)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 30), st.data())
def test_fit_region(limit, data):
    size = data.draw(st.integers(1, limit))
    start = data.draw(st.integers(0, limit - 1))
    stop = data.draw(st.integers(start, min(limit, start + size)))
    new = G.fit_region(start, stop, size, limit)
    assert 0 <= new and new + size <= limit
    if stop > start:
        assert new <= start and stop <= new + size


def test_fit_region_vectorised_and_too_large():
    starts, stops = np.array([0, 5, 9]), np.array([2, 7, 10])
    np.testing.assert_array_equal(G.fit_region(starts, stops, 3, 10), [0, 5, 7])
    with pytest.raises(ValueError, match="exceeds"):
        G.fit_region(0, 1, 11, 10)


def test_union_ignores_empty_inputs():
    assert G.union([2, 0], [4, 0]) == (2, 4)
    assert G.union([2, 5], [4, 9]) == (2, 9)
    assert G.union([3, 3], [3, 1]) == (0, 0)
    lo, hi = G.union(np.array([[1, 4], [0, 4]]), np.array([[3, 4], [2, 4]]))
    np.testing.assert_array_equal(lo, [0, 0])
    np.testing.assert_array_equal(hi, [3, 0])


def test_empty_input_region_and_skipped_stride():
    o0, o1 = G.changed_output(3, 3, 3, 1, 1, 1, 8)
    assert o0 == o1
    # K = 1, S = 2: a change at an odd pixel reaches no output.
    o0, o1 = G.changed_output(1, 2, 1, 2, 0, 1, 4)
    assert o0 == o1


@pytest.mark.parametrize("w_in,k,s,p0,p1,d,ceil,expected", [
    (224, 3, 1, 1, 1, 1, False, 224),
    (224, 2, 2, 0, 0, 1, False, 112),
    (112, 3, 2, 1, 1, 1, False, 56),
    (6, 3, 2, 0, 0, 1, True, 3),      # ceil: a partial last window counts
    (5, 2, 2, 1, 1, 1, True, 3),      # ceil: a window starting in the right padding is dropped
    (55, 3, 2, 0, 0, 1, True, 27),    # squeezenet-style
    (10, 3, 1, 0, 0, 3, False, 4),    # dilation 3: span 7
    (2, 5, 1, 0, 0, 1, False, 0),     # too small
    (1, 2, 2, 0, 0, 1, True, 1),      # ceil: a window longer than the input still counts
    (2, 3, 2, 0, 0, 1, True, 1),      # (PyTorch: MaxPool2d(3, 2, ceil_mode=True) on 2 px)
    (1, 4, 2, 0, 0, 1, True, 0),      # ... but not one that would start past the input
])
def test_output_size(w_in, k, s, p0, p1, d, ceil, expected):
    assert G.output_size(w_in, k, s, p0, p1, d, ceil) == expected
