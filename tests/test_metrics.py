"""Tests of edge_detector.metrics: EER / DET, min t-DCF, ASV score files, threshold rates."""
from __future__ import annotations

import numpy as np
import pytest

from edge_detector.errors import DataError, MissingFileError
from edge_detector.metrics import (
    ASVSPOOF2019_COSTS,
    TDCFCosts,
    asv_error_rates,
    compute_det_curve,
    compute_eer,
    compute_min_tdcf,
    load_asv_scores,
    threshold_rates,
)


# --------------------------------------------------------------------------- EER


def test_eer_hand_computed() -> None:
    # bona = [0.9, 0.8, 0.3], spoof = [0.1, 0.4, 0.2, 0.7]
    # Sorted (b = bona fide, s = spoof): 0.1s 0.2s 0.3b 0.4s 0.7s 0.8b 0.9b
    # k = trials rejected so far, frr = bona rejected / 3, far = spoof left / 4
    #   k=0 thr 0.099: frr 0    far 4/4  |d| = 1
    #   k=1 thr 0.1  : frr 0    far 3/4  |d| = 3/4
    #   k=2 thr 0.2  : frr 0    far 2/4  |d| = 1/2
    #   k=3 thr 0.3  : frr 1/3  far 2/4  |d| = 1/6
    #   k=4 thr 0.4  : frr 1/3  far 1/4  |d| = 1/12   <- minimum
    #   k=5 thr 0.7  : frr 1/3  far 0    |d| = 1/3
    #   k=6 thr 0.8  : frr 2/3  far 0
    #   k=7 thr 0.9  : frr 1    far 0
    # EER = (1/3 + 1/4) / 2 = 7/24, threshold 0.4
    eer, thr = compute_eer([0.9, 0.8, 0.3], [0.1, 0.4, 0.2, 0.7])
    assert eer == pytest.approx(7 / 24, abs=1e-12)
    assert thr == pytest.approx(0.4)


def test_det_curve_hand_computed() -> None:
    frr, far, thr = compute_det_curve([0.9, 0.8, 0.3], [0.1, 0.4, 0.2, 0.7])
    np.testing.assert_allclose(frr, [0, 0, 0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(far, [1, 3 / 4, 2 / 4, 2 / 4, 1 / 4, 0, 0, 0])
    np.testing.assert_allclose(thr, [0.099, 0.1, 0.2, 0.3, 0.4, 0.7, 0.8, 0.9])


def test_perfect_separation_gives_zero() -> None:
    eer, thr = compute_eer([2.0, 3.0, 5.0], [-1.0, 0.0, 1.0])
    assert eer == 0.0
    # The first point with frr = far = 0 rejects every spoof: threshold = top spoof.
    assert thr == 1.0


def test_fully_inverted_gives_one() -> None:
    eer, _ = compute_eer([-1.0, 0.0, 1.0], [2.0, 3.0, 5.0])
    assert eer == 1.0


def test_ties_resolved_pessimistically() -> None:
    # With 0.5 tied, bona fide is sorted first: rejecting it before the spoof gives
    # frr = far = 1/2. The optimistic order would have reached frr = far = 0.
    eer, thr = compute_eer([0.9, 0.5], [0.5, 0.1])
    assert eer == pytest.approx(0.5)
    assert thr == 0.5
    # A constant model cannot look good.
    assert compute_eer([0.3] * 5, [0.3] * 7)[0] == 1.0


def test_eer_invariant_under_monotone_transform() -> None:
    rng = np.random.default_rng(3)
    bona = rng.normal(1.0, 1.0, 60)
    spoof = rng.normal(-1.0, 1.0, 90)
    eer, thr = compute_eer(bona, spoof)
    eer2, thr2 = compute_eer(3.0 * bona + 7.0, 3.0 * spoof + 7.0)
    assert eer2 == pytest.approx(eer)
    assert thr2 == pytest.approx(3.0 * thr + 7.0)


def test_eer_symmetric_under_class_swap_and_negation() -> None:
    # Negating all scores and swapping the class roles mirrors the DET curve
    # (frr <-> far), so the EER is unchanged.
    rng = np.random.default_rng(11)
    bona = rng.normal(0.8, 1.0, 41)
    spoof = rng.normal(-0.5, 1.0, 67)
    assert compute_eer(-spoof, -bona)[0] == pytest.approx(compute_eer(bona, spoof)[0])


def _brute_force_eer(bona: np.ndarray, spoof: np.ndarray) -> tuple[float, float]:
    """O(n^2) reference for untied scores: try every threshold, reject score <= t."""
    candidates = [min(bona.min(), spoof.min()) - 0.001] + sorted(
        np.concatenate([bona, spoof]).tolist()
    )
    best = None
    for t in candidates:
        frr = sum(1 for b in bona if b <= t) / len(bona)
        far = sum(1 for s in spoof if s > t) / len(spoof)
        gap = abs(frr - far)
        if best is None or gap < best[0]:
            best = (gap, (frr + far) / 2, t)
    assert best is not None
    return best[1], best[2]


@pytest.mark.parametrize("seed", range(6))
def test_eer_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_bona, n_spoof = rng.integers(5, 80, size=2)
    bona = rng.normal(rng.uniform(0, 2), 1.0, n_bona)
    spoof = rng.normal(0.0, rng.uniform(0.5, 2), n_spoof)
    eer, thr = compute_eer(bona, spoof)
    ref_eer, ref_thr = _brute_force_eer(bona, spoof)
    assert eer == pytest.approx(ref_eer, abs=1e-12)
    assert thr == pytest.approx(ref_thr, abs=1e-12)


def test_det_curve_shapes_and_monotonicity() -> None:
    rng = np.random.default_rng(0)
    frr, far, thr = compute_det_curve(rng.normal(size=20), rng.normal(size=30))
    assert frr.shape == far.shape == thr.shape == (51,)
    assert frr[0] == 0 and far[0] == 1 and frr[-1] == 1 and far[-1] == 0
    assert np.all(np.diff(frr) >= 0) and np.all(np.diff(far) <= 0)
    assert np.all(np.diff(thr) >= 0)


def test_scalar_and_list_inputs() -> None:
    assert compute_eer(1.0, 0.0) == (0.0, 0.0)


@pytest.mark.parametrize(
    "bona, spoof, match",
    [
        ([], [0.1], "no bona fide scores"),
        ([0.1], [], "no spoof scores"),
        ([0.1, np.nan], [0.2], "not finite"),
        ([0.1], [np.inf], "not finite"),
        ([[0.1, 0.2]], [0.2], "1-D"),
    ],
)
def test_eer_rejects_bad_input(bona: list, spoof: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compute_eer(bona, spoof)


# --------------------------------------------------------------------------- t-DCF


def _asv_scores(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tar = rng.normal(4.0, 1.0, 300)
    non = rng.normal(-4.0, 1.0, 300)
    spoof = rng.normal(2.0, 2.0, 300)  # spoofs fool the ASV most of the time
    return tar, non, spoof


def test_tdcf_hand_computed() -> None:
    # ASV: tar [2, 3], non [-1, 0] -> EER threshold 0 (the top non-target score).
    # Accept iff >= 0: Pfa_asv = 1/2 (the 0.0), Pmiss_asv = 0, spoof [1, -2] ->
    # Pmiss_spoof_asv = 1/2.
    # C1 = 0.9405 * (1 - 0) - 0.0095 * 10 * 0.5 = 0.893, C2 = 10 * 0.05 * 0.5 = 0.25
    # t-DCF_norm = (C1 frr + C2 far) / 0.25 = 3.572 frr + far; over the DET of the EER
    # case above (frr, far) the values are 1, .75, .5, 1.69, 1.44, 1.19, 2.38, 3.57:
    # minimum 0.5 at threshold 0.2.
    tar, non, spf = [2.0, 3.0], [-1.0, 0.0], [1.0, -2.0]
    assert asv_error_rates(tar, non, spf, 0.0) == (0.5, 0.0, 0.5)
    value, thr = compute_min_tdcf([0.9, 0.8, 0.3], [0.1, 0.4, 0.2, 0.7], tar, non, spf)
    assert value == pytest.approx(0.5)
    assert thr == pytest.approx(0.2)


def test_tdcf_perfect_cm_is_zero_and_worse_cm_is_higher() -> None:
    rng = np.random.default_rng(5)
    tar, non, spf = _asv_scores(rng)
    perfect, _ = compute_min_tdcf(rng.normal(5, 0.1, 200), rng.normal(-5, 0.1, 200),
                                  tar, non, spf)
    assert perfect == 0.0
    good, _ = compute_min_tdcf(rng.normal(2, 1, 200), rng.normal(-2, 1, 200),
                               tar, non, spf)
    poor, _ = compute_min_tdcf(rng.normal(0.5, 1, 200), rng.normal(-0.5, 1, 200),
                               tar, non, spf)
    useless, _ = compute_min_tdcf(rng.normal(0, 1, 200), rng.normal(0, 1, 200),
                                  tar, non, spf)
    assert 0.0 < good < poor < 1.0
    # The normalisation makes the best trivial CM cost 1: the minimum never exceeds it.
    assert poor < useless <= 1.0


def test_tdcf_rejects_degenerate_asv() -> None:
    # ASV rejects every spoof: C2 = 0 and the normalised t-DCF is undefined.
    with pytest.raises(ValueError, match="normalised"):
        compute_min_tdcf([1.0], [0.0], [2.0, 3.0], [-2.0, -1.0], [-5.0, -6.0])
    with pytest.raises(ValueError, match="no ASV spoof scores"):
        compute_min_tdcf([1.0], [0.0], [2.0], [-2.0], [])


def test_costs_validation() -> None:
    assert ASVSPOOF2019_COSTS.p_tar + ASVSPOOF2019_COSTS.p_non + ASVSPOOF2019_COSTS.p_spoof \
        == pytest.approx(1.0)
    with pytest.raises(ValueError, match="sum to 1"):
        TDCFCosts(0.5, 0.5, 0.5, 1, 10, 1, 10)
    with pytest.raises(ValueError, match=">= 0"):
        TDCFCosts(1.1, -0.15, 0.05, 1, 10, 1, 10)


# --------------------------------------------------------------------------- ASV file


def test_load_asv_scores(tmp_path) -> None:
    path = tmp_path / "asv.txt"
    path.write_text(
        "# organisers' ASV scores\n"
        "LA_0001 target 3.5\n"
        "LA_0001 nontarget -2.0\n"
        "\n"
        "LA_0002 spoof 1.25\n"
        "LA_0002 target 4\n"
    )
    tar, non, spf = load_asv_scores(path)
    np.testing.assert_array_equal(tar, [3.5, 4.0])
    np.testing.assert_array_equal(non, [-2.0])
    np.testing.assert_array_equal(spf, [1.25])


@pytest.mark.parametrize(
    "line, match",
    [
        ("LA_0002 target", "line 2: expected 3 fields"),
        ("LA_0002 bonafide 1.0", "line 2: key must be one of"),
        ("LA_0002 spoof abc", "line 2: score is not a number"),
        ("LA_0002 spoof nan", "line 2: score is not finite"),
    ],
)
def test_load_asv_scores_malformed(tmp_path, line: str, match: str) -> None:
    path = tmp_path / "asv.txt"
    path.write_text(f"LA_0001 target 1.0\n{line}\n")
    with pytest.raises(DataError, match=match) as info:
        load_asv_scores(path)
    assert "asv.txt" in str(info.value)


def test_load_asv_scores_missing_and_empty(tmp_path) -> None:
    with pytest.raises(MissingFileError):
        load_asv_scores(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(DataError, match="no scores"):
        load_asv_scores(empty)


# --------------------------------------------------------------------------- threshold


def test_threshold_rates() -> None:
    rates = threshold_rates([0.9, 0.8, 0.3], [0.1, 0.4, 0.2, 0.7], 0.4)
    # Accept iff >= 0.4: bona fide 0.3 rejected (frr 1/3); spoofs 0.4 and 0.7
    # accepted (far 2/4); correct = 2 bona + 2 spoof = 4 of 7.
    assert rates["frr"] == pytest.approx(1 / 3)
    assert rates["far"] == pytest.approx(0.5)
    assert rates["accuracy"] == pytest.approx(4 / 7)
    assert rates["n_bonafide"] == 3 and rates["n_spoof"] == 4
    assert rates["threshold"] == 0.4


def test_threshold_rates_errors() -> None:
    with pytest.raises(ValueError, match="finite"):
        threshold_rates([1.0], [0.0], float("nan"))
    with pytest.raises(ValueError, match="no spoof"):
        threshold_rates([1.0], [], 0.5)


def test_metrics_module_is_numpy_only() -> None:
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, edge_detector.metrics\n"
        "bad = [m for m in ('torch', 'scipy', 'onnx') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
