"""Anomaly detectors: hand-computed baselines and scores, re-baselining, edge cases, the forest compiler,
and the benchmark's scoring rules."""

from __future__ import annotations

import functools
import importlib.util
import math
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import IsolationForest

from elitemon.analytics.anomaly import (
    RESULT_COLUMNS,
    CompiledForest,
    IsolationForestDetector,
    RobustDetector,
    Severity,
    SeverityThresholds,
    _Window,
    average_path_length,
    detect_anomalies,
    points_frame,
    robust_baseline,
)

SIGMA_PER_IQR = 1 / 1.349
#: The warm-up values of the small-window tests: sorted [9, 9, 10, 10, 10, 11, 11, 11], median 10,
#: nearest-rank quartiles at indices 2 and 5 (10 and 11), so IQR 1 and scale 1 / 1.349 = 0.741290.
PATTERN = [10.0, 11.0, 9.0, 10.0, 11.0, 9.0, 10.0, 11.0]


def small_detector(**overrides) -> RobustDetector:
    settings = {"window": 8, "min_history": 8, "trend": False} | overrides
    return RobustDetector(**settings)


def feed(detector, values, start: int = 0):
    return [detector.update(float(start + i), v) for i, v in enumerate(values)]


# --------------------------------------------------------------------------------------------
# Thresholds and the window.


def test_thresholds_classify_at_their_boundaries() -> None:
    thresholds = SeverityThresholds(info=1.0, warning=2.0, critical=3.0)
    assert thresholds.classify(0.99) is Severity.OK
    assert thresholds.classify(1.0) is Severity.INFO
    assert thresholds.classify(2.0) is Severity.WARNING
    assert thresholds.classify(3.0) is Severity.CRITICAL
    assert thresholds.classify(math.inf) is Severity.CRITICAL
    assert thresholds.classify(math.nan) is Severity.OK


@pytest.mark.parametrize("args", [(2.0, 1.0, 3.0), (1.0, 3.0, 2.0), (1.0, math.nan, 3.0), (1.0, 2.0, math.inf)])
def test_thresholds_reject_disorder_and_non_finite(args) -> None:
    with pytest.raises(ValueError, match="thresholds"):
        SeverityThresholds(*args)


def test_window_keeps_the_last_values_in_a_fixed_buffer() -> None:
    window = _Window(3)
    for value in range(10):
        window.append(float(value))
    assert window.values().tolist() == [7.0, 8.0, 9.0]
    assert len(window._buffer) == 6  # 2 * capacity, however many values went through
    window.reset([1.0, 2.0])
    assert window.values().tolist() == [1.0, 2.0]


# --------------------------------------------------------------------------------------------
# robust_baseline


def test_baseline_ignores_an_outlier() -> None:
    # sorted [1, 2, 3, 4, 5, 100]: median (3 + 4) / 2 = 3.5; quartile ranks floor(1.25 + .5) = 1 and
    # floor(3.75 + .5) = 4, values 2 and 5: IQR 3, scale 3 / 1.349 = 2.22387. The 100 changes neither.
    fitted = robust_baseline(np.array([1.0, 2.0, 3.0, 4.0, 5.0, 100.0]), with_slope=False)
    assert fitted.expected == 3.5
    assert fitted.slope == 0.0
    assert fitted.scale == pytest.approx(3 * SIGMA_PER_IQR)


def test_baseline_extrapolates_a_line() -> None:
    # [0, 2, ..., 14]: newer half median (10 + 12) / 2 = 11, older (2 + 4) / 2 = 3, centres 4 apart:
    # slope (11 - 3) / 4 = 2. Detrended w_i - 2 (i - 3.5) = 7 everywhere: level 7, scale 0 (constant).
    # Next point, 4.5 steps past the centre: 7 + 2 * 4.5 = 16.
    fitted = robust_baseline(np.arange(0.0, 16.0, 2.0), with_slope=True)
    assert fitted.slope == 2.0
    assert fitted.expected == 16.0
    assert fitted.scale == 0.0


def test_baseline_without_slope_lags_a_line() -> None:
    # median (6 + 8) / 2 = 7; ranks 2 and 5 hold 4 and 10: IQR 6, scale 6 / 1.349 = 4.44774.
    fitted = robust_baseline(np.arange(0.0, 16.0, 2.0), with_slope=False)
    assert fitted.expected == 7.0
    assert fitted.scale == pytest.approx(6 * SIGMA_PER_IQR)


def test_baseline_falls_back_to_mean_absolute_deviation_when_iqr_is_zero() -> None:
    # sorted [2, 5, 5, 5, 5, 5, 8]: median 5, quartiles (ranks 2 and 5) both 5. Mean |x - 5| = 6 / 7,
    # divided by sqrt(2 / pi) = 0.79788: 1.07427.
    fitted = robust_baseline(np.array([5.0, 5.0, 5.0, 5.0, 5.0, 8.0, 2.0]), with_slope=False)
    assert fitted.expected == 5.0
    assert fitted.scale == pytest.approx((6 / 7) / math.sqrt(2 / math.pi))
    assert fitted.scale == pytest.approx(1.07427, abs=1e-5)


def test_baseline_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="window"):
        robust_baseline(np.array([]), with_slope=True)


# --------------------------------------------------------------------------------------------
# RobustDetector


def test_warm_up_points_are_not_scored() -> None:
    points = feed(small_detector(), PATTERN)
    assert all(math.isnan(p.score) and not p.is_anomaly and p.severity is Severity.OK for p in points)
    assert [p.expected for p in points[:3]] == [10.0, 10.5, 10.0]  # running medians
    assert math.isnan(points[-1].lower) and math.isnan(points[-1].upper)


def test_spike_is_critical_and_does_not_drag_the_baseline() -> None:
    detector = small_detector()
    feed(detector, PATTERN)
    spike, after = feed(detector, [30.0, 10.0], start=8)
    # expected 10, scale 0.741290: z = 20 / 0.741290 = 26.980; band 10 +- 6 * 0.741290 = [5.55226, 14.44774].
    assert spike.expected == 10.0
    assert spike.score == pytest.approx(20 / SIGMA_PER_IQR)
    assert spike.severity is Severity.CRITICAL and spike.is_anomaly
    assert (spike.lower, spike.upper) == pytest.approx((10 - 6 * SIGMA_PER_IQR, 10 + 6 * SIGMA_PER_IQR))
    # The spike entered the window clipped to 14.44774: window [11, 9, 10, 11, 9, 10, 11, 14.45], sorted
    # [9, 9, 10, 10, 11, 11, 11, 14.45]: median 10.5, quartiles 10 and 11, scale unchanged.
    assert after.expected == 10.5
    assert (after.upper - after.expected) == pytest.approx(6 * SIGMA_PER_IQR)
    # |z| = 0.5 / 0.741290 = 0.67449. Volatility CUSUM: after the spike min(26.98, 6) - 1.5 = 4.5, now
    # 4.5 + 0.67449 - 1.5 = 3.67449, i.e. 6 * 3.67449 / 12 = 1.83725 in score units: the larger, so the score.
    assert after.score == pytest.approx(6 * (4.5 + 0.5 / SIGMA_PER_IQR - 1.5) / 12)
    assert after.severity is Severity.OK


def test_level_shift_is_flagged_confirm_times_then_rebaselined() -> None:
    detector = small_detector(confirm=3)
    feed(detector, PATTERN)
    points = feed(detector, [20.0, 20.0, 20.0, 21.0, 19.0, 20.0, 21.0, 19.0, 20.0, 21.0], start=8)
    assert [p.is_anomaly for p in points] == [True] * 3 + [False] * 7
    assert [p.rebaselined for p in points] == [False, False, True] + [False] * 7
    # Second shifted point: window [11, 9, 10, 11, 9, 10, 11, 14.45]: expected 10.5, z = 9.5 / 0.741290.
    assert points[1].score == pytest.approx(9.5 / SIGMA_PER_IQR)
    # After the shift the window is [20, 20, 20] with the old scale carried over: 21 scores 1 / 0.741290.
    assert points[3].expected == 20.0
    assert points[3].score == pytest.approx(1 / SIGMA_PER_IQR)


def test_without_rebaselining_a_shift_keeps_being_flagged() -> None:
    stuck = small_detector(confirm=1000)
    feed(stuck, PATTERN)
    points = feed(stuck, [20.0, 20.0, 20.0, 21.0, 19.0, 20.0, 21.0, 19.0, 20.0, 21.0], start=8)
    assert sum(p.is_anomaly for p in points) >= 6
    assert not any(p.rebaselined for p in points)


def test_a_noiseless_trend_is_predicted_exactly() -> None:
    points = feed(small_detector(trend=True), [2.0 * i for i in range(100)])
    scored = points[8:]
    assert all(p.expected == p.value and p.score == 0.0 and not p.is_anomaly for p in scored)


def test_without_trend_a_line_is_expected_at_the_window_median() -> None:
    point = feed(small_detector(trend=False), [2.0 * i for i in range(9)])[-1]
    # window [0 .. 14]: expected 7, scale 4.44774; z = (16 - 7) / 4.44774 = 2.02350.
    assert point.expected == 7.0
    assert point.score == pytest.approx(9 / (6 * SIGMA_PER_IQR))
    assert point.score == pytest.approx(2.02350, abs=1e-5)


def test_a_lasting_burst_of_noise_inside_the_band_is_flagged_by_the_volatility_cusum() -> None:
    rng = np.random.default_rng(0)
    calm = 100 + rng.normal(0, 1, 400)
    burst = 100 + rng.normal(0, 4, 60)
    points = feed(RobustDetector(), np.concatenate([calm, burst]))
    flagged_inside_band = [p for p in points[400:] if p.is_anomaly and p.lower <= p.value <= p.upper]
    assert flagged_inside_band, "noise four times larger should be flagged even where each point is in the band"
    assert not any(p.is_anomaly for p in points[:400])


def test_constant_stream_scores_zero_and_any_change_is_critical() -> None:
    detector = RobustDetector()
    points = feed(detector, [5.0] * 40)
    assert all(p.score == 0.0 and p.lower == p.upper == 5.0 for p in points[30:])
    change = detector.update(40.0, 6.0)
    assert change.score == math.inf and change.severity is Severity.CRITICAL


def test_min_scale_floors_the_scale_of_a_constant_stream() -> None:
    detector = RobustDetector(min_scale=0.5)
    feed(detector, [5.0] * 40)
    change = detector.update(40.0, 6.0)
    # z = 1 / 0.5 = 2; CUSUM min(2, 6) - 1.5 = 0.5 -> 6 * 0.5 / 12 = 0.25; score 2.
    assert change.score == 2.0
    assert change.severity is Severity.OK
    assert (change.lower, change.upper) == (2.0, 8.0)


def test_missing_values_leave_the_state_untouched() -> None:
    with_gap, without_gap = small_detector(), small_detector()
    feed(with_gap, PATTERN)
    feed(without_gap, PATTERN)
    missing = with_gap.update(8.0, math.nan)
    assert math.isnan(missing.score) and math.isnan(missing.value) and not missing.is_anomaly
    a, b = with_gap.update(9.0, 12.0), without_gap.update(9.0, 12.0)
    assert (a.expected, a.score, a.lower, a.upper) == (b.expected, b.score, b.lower, b.upper)


def test_update_rejects_infinite_values_and_time_going_backwards() -> None:
    detector = RobustDetector()
    with pytest.raises(ValueError, match="value"):
        detector.update(0.0, math.inf)
    with pytest.raises(ValueError, match="value: 'fast' is not a number"):
        detector.update(0.0, "fast")
    assert math.isnan(detector.update(0.0, None).value)  # missing, as detect_anomalies takes None
    detector.update(10.0, 1.0)
    detector.update(10.0, 1.0)  # the same timestamp twice is fine
    with pytest.raises(ValueError, match="ts"):
        detector.update(9.0, 1.0)
    with pytest.raises(ValueError, match="ts"):
        detector.update(datetime(2030, 1, 1), 1.0)  # naive


def test_update_accepts_aware_datetimes() -> None:
    point = RobustDetector().update(datetime(2026, 1, 1, tzinfo=UTC), 1.0)
    assert point.ts == 1767225600.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"window": 3}, "window"),
        ({"min_history": 1}, "min_history"),
        ({"window": 10, "min_history": 11}, "min_history must be at most window \\(10\\)"),
        ({"window": 10.5}, "window must be a whole number >= 4, but got window=10.5"),
        ({"window": "10"}, "window must be a whole number"),
        ({"confirm": 0}, "confirm"),
        ({"thresholds": None}, "thresholds must be a SeverityThresholds"),
        ({"min_scale": -1.0}, "min_scale"),
        ({"min_scale": math.nan}, "min_scale"),
        ({"spread_allowance": 0.0}, "spread_allowance"),
        ({"spread_limit": math.inf}, "spread_limit"),
    ],
)
def test_robust_detector_checks_its_arguments(kwargs, name) -> None:
    with pytest.raises(ValueError, match=name):
        RobustDetector(**kwargs)


# --------------------------------------------------------------------------------------------
# The compiled isolation forest and its detector.


def test_average_path_length_by_hand() -> None:
    # c(3) = 2 (ln 2 + 0.5772157) - 2 * 2 / 3 = 2.5407257 - 1.3333333 = 1.2073924
    # c(256) = 2 (ln 255 + 0.5772157) = 2 (5.5412635 + 0.5772157) = 12.2369584, minus 2 * 255 / 256 = 1.9921875:
    # 10.2447709
    lengths = average_path_length(np.array([0, 1, 2, 3, 256]))
    assert lengths.tolist()[:3] == [0.0, 0.0, 1.0]
    assert lengths[3] == pytest.approx(1.2073924, abs=1e-7)
    assert lengths[4] == pytest.approx(10.2447709, abs=1e-7)


def test_compiled_forest_scores_like_scikit_learn() -> None:
    rng = np.random.default_rng(1)
    train = rng.standard_t(3, size=(400, 4))
    forest = IsolationForest(n_estimators=30, max_samples=128, max_features=0.5, random_state=7).fit(train)
    probe = np.vstack([rng.normal(0, 3, size=(200, 4)), train[:50]])
    compiled = CompiledForest(forest)
    np.testing.assert_allclose(compiled.score(probe), -forest.score_samples(probe), rtol=0, atol=1e-12)
    assert compiled.score(probe[0]).shape == (1,)


def small_forest_detector(**overrides) -> IsolationForestDetector:
    settings = {
        "baseline": RobustDetector(window=20, min_history=10),
        "train_window": 40,
        "min_train": 20,
        "refit_every": 10,
        "n_estimators": 10,
        "max_samples": 32,
    } | overrides
    return IsolationForestDetector(**settings)


def test_forest_warms_up_then_refits_on_schedule() -> None:
    detector = small_forest_detector()
    points = feed(detector, 100 + np.random.default_rng(2).normal(0, 1, 100))
    scored = [i for i, p in enumerate(points) if not math.isnan(p.score)]
    # 10 baseline warm-up points, then 20 feature rows before the first fit: index 30 is the first score.
    assert scored[0] == 30 and scored == list(range(30, 100))
    # Fitted at 30, then every 10 scored points: 30, 40, ..., 90.
    assert detector.fits == 7
    assert all(0.0 < points[i].score <= 1.0 and points[i].lower < points[i].upper for i in scored)


def test_forest_flags_a_spike_and_is_reproducible() -> None:
    values = 100 + np.random.default_rng(3).normal(0, 1, 1200)
    values[1000] += 15
    first = detect_anomalies(values, detector=IsolationForestDetector(seed=5))
    second = detect_anomalies(values, detector=IsolationForestDetector(seed=5))
    pd.testing.assert_frame_equal(first, second)
    assert first["is_anomaly"].iloc[1000]
    assert first["score"].idxmax() == 1000
    assert first["is_anomaly"].mean() < 0.02


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"feature_window": 1}, "feature_window"),
        ({"min_train": 1}, "min_train"),
        ({"train_window": 100, "min_train": 101}, "min_train"),
        ({"refit_every": 0}, "refit_every"),
        ({"n_estimators": 0}, "n_estimators"),
        ({"max_samples": 1}, "max_samples"),
        ({"train_window": 99.5}, "train_window must be a whole number"),
        ({"thresholds": (0.6, 0.7, 0.8)}, "thresholds must be a SeverityThresholds"),
    ],
)
def test_forest_detector_checks_its_arguments(kwargs, name) -> None:
    with pytest.raises(ValueError, match=name):
        IsolationForestDetector(**kwargs)


# --------------------------------------------------------------------------------------------
# detect_anomalies


def test_batch_equals_streaming() -> None:
    values = 50 + np.random.default_rng(4).normal(0, 2, 300)
    values[200] = 90
    streamed = points_frame(feed(RobustDetector(), values))
    batch = detect_anomalies(values)
    pd.testing.assert_frame_equal(batch, streamed)
    assert list(batch.columns) == list(RESULT_COLUMNS)
    assert batch["is_anomaly"].iloc[200] and batch["severity"].iloc[200] == "critical"
    assert batch["severity"].cat.ordered
    assert list(batch["severity"].cat.categories) == ["ok", "info", "warning", "critical"]


def test_batch_takes_times_from_an_aware_datetime_index_and_keeps_it() -> None:
    index = pd.date_range("2026-01-01", periods=40, freq="min", tz="UTC")
    result = detect_anomalies(pd.Series(np.arange(40.0), index=index))
    assert result.index.equals(index)
    assert result["ts"].iloc[:2].tolist() == [1767225600.0, 1767225660.0]


def test_batch_edge_cases() -> None:
    empty = detect_anomalies([])
    assert empty.empty and list(empty.columns) == list(RESULT_COLUMNS)
    one = detect_anomalies([3.0])
    assert len(one) == 1 and math.isnan(one["score"].iloc[0]) and not one["is_anomaly"].iloc[0]
    gap = detect_anomalies([1.0, None, 2.0])
    assert math.isnan(gap["value"].iloc[1]) and not gap["is_anomaly"].any()


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: detect_anomalies([1.0, math.inf]), "values"),
        (lambda: detect_anomalies(np.zeros((2, 2))), "values"),
        (lambda: detect_anomalies(["a", 1.0]), "values"),
        (lambda: detect_anomalies([1.0, 2.0], ts=[0.0]), "ts"),
        (lambda: detect_anomalies(pd.Series([1.0], index=pd.date_range("2026-01-01", periods=1))), "ts"),
        (lambda: detect_anomalies([1.0, 2.0], ts=pd.DatetimeIndex(["2026-01-01", None], tz="UTC")), "ts: 1 missing"),
    ],
)
def test_batch_rejects_bad_input_naming_the_argument(call, name) -> None:
    with pytest.raises(ValueError, match=name):
        call()


# --------------------------------------------------------------------------------------------
# The benchmark's scoring rules (benchmarks/anomaly_eval.py), on hand-made flags.


@functools.cache
def _evaluation():
    """benchmarks/anomaly_eval.py, imported once (registered, as its dataclasses need)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "anomaly_eval.py"
    spec = importlib.util.spec_from_file_location("anomaly_eval", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_alarm_runs_merge_flags_up_to_five_points_apart() -> None:
    evaluation = _evaluation()
    flags = np.zeros(20, dtype=bool)
    flags[[0, 1, 7, 14]] = True  # 0-1 and 7 are 5 points apart (2..6): one run; 14 is 6 apart: a second
    assert evaluation._alarm_runs(flags) == [(0, 8), (14, 15)]
    assert evaluation._alarm_runs(np.zeros(5, dtype=bool)) == []


def test_point_and_event_scores_by_hand() -> None:
    evaluation = _evaluation()
    prefix = evaluation.PREFIX
    labels = np.zeros(prefix + 100, dtype=bool)
    labels[prefix + 10 : prefix + 20] = True  # a level shift, labelled 10 points
    labels[prefix + 40] = True  # a spike
    events = (
        evaluation.Event("level_shift", prefix + 10, prefix + 20),
        evaluation.Event("spike", prefix + 40, prefix + 41),
    )
    stream = evaluation.LabelledStream(np.zeros(len(labels)), labels, events)
    flags = np.zeros(len(labels), dtype=bool)
    flags[[5, prefix + 12, prefix + 13, prefix + 30]] = True  # 5 is in the prefix: not scored
    tally = evaluation.Tally()
    tally.add(stream, flags)
    # Points: TP 2 (12, 13), FP 1 (30), FN 11 - 2 = 9. P 2/3, R 2/11, F1 = 2 * 2 / (2 * 2 + 1 + 9) = 4/14.
    assert tally.point_prf() == pytest.approx((2 / 3, 2 / 11, 4 / 14))
    # Events: the shift is detected 2 points after onset; the flag at 30 lies outside [10, 25): one
    # false alarm; the spike is missed. P = 1 / (1 + 1), R = 1 / 2, F1 0.5.
    assert tally.event_prf() == pytest.approx((0.5, 0.5, 0.5))
    assert tally.delays_by_kind["level_shift"] == [2]
    assert tally.median_delay() == 2.0


def test_baselines_by_hand() -> None:
    evaluation = _evaluation()
    # previous 3 values [1, 2, 3]: mean 2, sample std 1, so 10 has z = 8.
    assert evaluation.rolling_zscore_flags(np.array([1.0, 2.0, 3.0, 10.0]), 3.0, 3).tolist() == [False] * 3 + [True]
    values = np.zeros(evaluation.PREFIX + 2)
    values[: evaluation.PREFIX : 2] = 1.0  # prefix alternates 1, 0: mean 0.5, std 0.5, band [-1, 2] at k = 3
    values[-2:] = [1.9, 2.1]
    assert evaluation.static_threshold_flags(values, 3.0)[-2:].tolist() == [False, True]
