"""Windows: the official tile rule, the first window, multi-window cover and combination."""
from __future__ import annotations

import numpy as np
import pytest

from edge_detector.windows import (
    WINDOW_SAMPLES,
    WindowRule,
    combine_scores,
    first_window,
    make_windows,
    tile_to_length,
    window_starts,
)


def ramp(n: int) -> np.ndarray:
    return (np.arange(n, dtype=np.float32) + 1.0) / 100000.0


def test_window_is_the_official_64600():
    assert WINDOW_SAMPLES == 64600
    assert WindowRule().window == 64600 and WindowRule().mode == "first"


@pytest.mark.parametrize("n", [1, 7, 1000, 30000, 64599])
def test_tile_repeats_instead_of_zero_padding(n):
    x = ramp(n)
    y = tile_to_length(x, WINDOW_SAMPLES)
    assert y.shape == (WINDOW_SAMPLES,)
    # bit-exact: sample i is x[i mod n] (the official `np.tile(x, k)[:64600]`)
    expected = x[np.arange(WINDOW_SAMPLES) % n]
    np.testing.assert_array_equal(y, expected)
    assert np.count_nonzero(y == 0) == 0  # nothing zero-padded


def test_tile_of_long_signal_is_its_prefix():
    x = ramp(100000)
    np.testing.assert_array_equal(tile_to_length(x, WINDOW_SAMPLES), x[:WINDOW_SAMPLES])
    np.testing.assert_array_equal(tile_to_length(x[:WINDOW_SAMPLES], WINDOW_SAMPLES), x[:WINDOW_SAMPLES])


def test_tile_of_empty_signal_raises():
    with pytest.raises(ValueError):
        tile_to_length(np.zeros(0, np.float32), 10)


def test_first_window_is_float32_contiguous_and_first_samples():
    x = np.random.default_rng(0).standard_normal(200000)  # float64 in
    w = first_window(x)
    assert w.dtype == np.float32 and w.flags.c_contiguous and w.shape == (WINDOW_SAMPLES,)
    np.testing.assert_array_equal(w, x[:WINDOW_SAMPLES].astype(np.float32))
    short = ramp(20000)
    np.testing.assert_array_equal(first_window(short)[20000:40000], short)


@pytest.mark.parametrize("n", [64600, 64601, 80000, 96900, 96901, 192000, 500000])
@pytest.mark.parametrize("hop", [32300, 64600, 10000])
def test_window_starts_cover_the_whole_signal(n, hop):
    w = WINDOW_SAMPLES
    starts = window_starts(n, w, hop)
    assert starts[0] == 0
    assert starts[-1] + w == n  # last window ends at the end
    assert starts == sorted(set(starts))
    covered = np.zeros(n, bool)
    for s in starts:
        assert 0 <= s <= n - w
        covered[s : s + w] = True
    assert covered.all()
    gaps = np.diff(starts)
    assert np.all(gaps <= hop)


def test_window_starts_for_12_seconds():
    assert window_starts(192000, 64600, 32300) == [0, 32300, 64600, 96900, 127400]


def test_window_starts_short_signal():
    assert window_starts(100, 64600, 32300) == [0]
    assert window_starts(64600, 64600, 32300) == [0]


def test_make_windows_first_mode_long_signal():
    x = ramp(150000)
    batch, starts = make_windows(x, WindowRule(mode="first"))
    assert batch.shape == (1, WINDOW_SAMPLES) and starts == [0]
    np.testing.assert_array_equal(batch[0], x[:WINDOW_SAMPLES])


def test_make_windows_all_mode_short_signal_is_tiled():
    x = ramp(30000)
    batch, starts = make_windows(x, WindowRule(mode="all"))
    assert batch.shape == (1, WINDOW_SAMPLES) and starts == [0]
    np.testing.assert_array_equal(batch[0], tile_to_length(x, WINDOW_SAMPLES))


def test_make_windows_all_mode_long_signal():
    x = ramp(192000)
    batch, starts = make_windows(x, WindowRule(mode="all"))
    assert batch.dtype == np.float32 and batch.shape == (5, WINDOW_SAMPLES)
    assert starts == [0, 32300, 64600, 96900, 127400]
    for row, s in zip(batch, starts):
        np.testing.assert_array_equal(row, x[s : s + WINDOW_SAMPLES])


def test_make_windows_custom_window_and_hop():
    x = ramp(1000)
    batch, starts = make_windows(x, WindowRule(window=300, hop=250, mode="all"))
    assert starts == [0, 250, 500, 700]
    np.testing.assert_array_equal(batch[-1], x[700:1000])


def test_combine_rules():
    s = [-3.0, -1.0, -2.0, -10.0]
    assert combine_scores(s, "mean") == pytest.approx(-4.0)
    assert combine_scores(s, "median") == pytest.approx(-2.5)
    assert combine_scores(s, "min") == -10.0
    assert combine_scores([0.25], "mean") == 0.25
    with pytest.raises(ValueError):
        combine_scores([], "mean")
    with pytest.raises(ValueError):
        combine_scores(s, "max")


def test_window_rule_validation():
    with pytest.raises(ValueError):
        WindowRule(mode="last")
    with pytest.raises(ValueError):
        WindowRule(combine="max")
    with pytest.raises(ValueError):
        WindowRule(window=0)
    with pytest.raises(ValueError):
        WindowRule(hop=-1)


# --------------------------------------------------------------------------- boundaries mutation testing found unguarded


def test_window_starts_never_run_past_the_end():
    """n - window + 1 a multiple of hop: one more regular start would overrun the signal by a sample."""
    assert window_starts(14, 10, 5) == [0, 4]
    for n in range(10, 40):
        assert all(s + 10 <= n for s in window_starts(n, 10, 5)), n


def test_first_mode_uses_the_rules_window_length():
    x = np.arange(3000, dtype=np.float32)
    batch, starts = make_windows(x, WindowRule(window=1000, hop=500, mode="first"))
    assert batch.shape == (1, 1000) and starts == [0] and batch[0, -1] == 999.0


def test_smallest_valid_rule_and_the_error_messages():
    assert WindowRule(window=1, hop=1).window == 1
    with pytest.raises(ValueError, match="window and hop must be positive"):
        WindowRule(window=0)
    with pytest.raises(ValueError, match="window and hop must be positive"):
        WindowRule(hop=0)
    with pytest.raises(ValueError, match="window mode must be one of .* got 'middle'"):
        WindowRule(mode="middle")
    with pytest.raises(ValueError, match="combine rule must be one of .* got 'max'"):
        WindowRule(combine="max")
    with pytest.raises(ValueError, match="cannot tile an empty signal"):
        tile_to_length(np.zeros(0, np.float32), 5)
    with pytest.raises(ValueError, match="no window scores to combine"):
        combine_scores([], "mean")
    with pytest.raises(ValueError, match="unknown combine rule 'max'"):
        combine_scores([1.0], "max")
