"""The tail metrics of vdfzip.metrics on hand-made arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from vdfzip import metrics

THRESHOLD = 1e-15


def blocks() -> tuple[np.ndarray, np.ndarray]:
    """Three 4-voxel blocks: a content block, a content block that dies, an empty block that wakes."""
    original = np.array(
        [
            [1e-12, 1e-14, 1e-15, 0.0],
            [2e-15, 1e-16, 0.0, 0.0],
            [1e-16, 1e-17, 0.0, -1e-20],
        ]
    )
    decoded = np.array(
        [
            [1e-11, 1e-14, 5e-16, 0.0],
            [0.0, 1e-16, 0.0, 0.0],
            [3e-15, 1e-17, 0.0, 0.0],
        ]
    )
    return decoded, original


def test_relative_l2_is_the_codec_metric():
    a = np.array([3.0, 4.0])
    assert metrics.relative_l2(a + np.array([0.3, 0.4]), a) == pytest.approx(0.1)


def test_log10_errors_over_content_voxels_with_floor():
    decoded, original = blocks()
    errors = metrics.log10_errors(decoded, original, THRESHOLD)
    # content voxels: 1e-12 -> 1e-11 (1 decade), 1e-14 exact, 1e-15 -> 5e-16, 2e-15 -> 0 (floored at 1e-18)
    expected = [1.0, 0.0, np.log10(2.0), np.log10(2e-15 / 1e-18)]
    np.testing.assert_allclose(errors, expected, rtol=1e-12, atol=1e-12)
    p = metrics.log10_error_percentiles(errors)
    assert p["p50"] == pytest.approx(np.percentile(expected, 50))
    assert p["p95"] == pytest.approx(np.percentile(expected, 95))


def test_log10_percentiles_without_content_are_zero():
    assert metrics.log10_error_percentiles(np.empty(0)) == {"p50": 0.0, "p95": 0.0}


def test_content_lost_fraction():
    decoded, original = blocks()
    # 4 content voxels; 5e-16 and 0 fell below the threshold
    assert metrics.content_lost_fraction(decoded, original, THRESHOLD) == pytest.approx(0.5)
    assert metrics.content_lost_fraction(original, original, THRESHOLD) == 0.0


def test_content_blocks_lost_and_gained():
    decoded, original = blocks()
    lost, gained = metrics.content_blocks_changed(decoded, original, THRESHOLD)
    assert lost == pytest.approx(0.5)  # block 1 of the 2 content blocks
    assert gained == pytest.approx(1.0)  # block 2, the only block without content
    assert metrics.content_blocks_changed(original, original, THRESHOLD) == (0.0, 0.0)


def test_tail_metrics_keys_and_pooling():
    decoded, original = blocks()
    m = metrics.tail_metrics(decoded, original, THRESHOLD)
    assert set(m) == {
        "rel_l2",
        "log10_err",
        "content_lost_fraction",
        "content_blocks_lost_fraction",
        "content_blocks_gained_fraction",
    }
    assert m["content_lost_fraction"] == pytest.approx(0.5)
    # metrics over two cells are the same calls on their concatenated rows
    pooled = metrics.content_lost_fraction(np.vstack([decoded, original]), np.vstack([original, original]), THRESHOLD)
    assert pooled == pytest.approx(2 / 8)


def test_target_checks_rel_l2_and_tails_and_tightens():
    from vdfzip.codecs import Target, relative_l2

    f = np.array([[1.0, 1e-3, 1e-5, 1e-9]])  # threshold 1e-6: three voxels with content
    half = f * np.array([[1.0, 1.0, 0.5, 1.0]])  # the 1e-5 voxel off by log10(2) = 0.30 decades
    assert Target(1e-2).met(half, f)  # rel L2 5e-6: no tail bound, met
    assert Target(1e-2, tail_tol=0.35, threshold=1e-6).met(half, f)
    assert not Target(1e-2, tail_tol=0.25, threshold=1e-6).met(half, f)
    assert not Target(1e-7, tail_tol=0.35, threshold=1e-6).met(half, f)
    assert Target(1e-2, tail_tol=0.25, threshold=1e-6).tail_p95(half, f) == pytest.approx(0.9 * np.log10(2), rel=0.02)
    tighter = Target(1e-2, tail_tol=0.3, threshold=1e-6).tighter(0.5, 0.8)
    assert tighter.rel_l2 == pytest.approx(5e-3) and tighter.tail_tol == pytest.approx(0.24)
    assert tighter.threshold == 1e-6 and Target(1e-2).tighter(0.5, 0.8).tail_tol is None
    assert Target(1e-2, tail_tol=0.25, threshold=1e-6).excess(half, f) == pytest.approx(0.9 * np.log10(2) / 0.25, rel=0.02)
    assert Target(1e-7).excess(half, f) == pytest.approx(relative_l2(half, f) / 1e-7)
    assert Target.of(3e-2) == Target(3e-2) and Target.of(tighter) is tighter


def test_percentile_95_is_numpys_bit_for_bit():
    """The rate control's p95 against np.percentile (linear method), sizes 1 to 300 and large."""
    rng = np.random.default_rng(0)
    for n in [*range(1, 300), 4097]:
        x = rng.lognormal(0, 2, n) * (rng.random(n) < 0.8)  # ties at 0 as decoded tails have
        assert metrics.percentile_95(x) == np.percentile(x, 95), n
    assert metrics.percentile_95(np.zeros(0)) == 0.0
