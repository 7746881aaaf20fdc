"""Convergence analytics against hand-computed values, and the learning-curve forecaster's contracts."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pandas as pd
import pytest

from elitemon.analytics.best_forecast import BestForecast, forecast_best
from elitemon.analytics.convergence import (
    ConvergenceForecast,
    Goal,
    agent_scores,
    convergence_report,
    fit_best_curve,
    forecast_convergence,
    forecast_target,
    population_progress,
    seconds_per_generation,
    stall_generations,
)
from elitemon.analytics.learning_curves import (
    MIN_POINTS,
    LearningCurve,
    NothingToExtrapolate,
    fit_learning_curve,
    robust_noise,
)

T0 = pd.Timestamp("2026-01-01", tz="UTC")


def samples(rows: list[tuple[float, str, int | None, str, float]], kind: str = "agent") -> pd.DataFrame:
    """A samples frame from (seconds after T0, source, generation, metric, value) rows."""
    return pd.DataFrame(
        {
            "ts": [T0 + pd.Timedelta(seconds=s) for s, *_ in rows],
            "kind": kind,
            "node": "10.0.0.1",
            "source": [r[1] for r in rows],
            "generation": pd.array([r[2] for r in rows], dtype="Int64"),
            "metric": [r[3] for r in rows],
            "value": [r[4] for r in rows],
        }
    )


def scores_frame(per_agent: dict[str, list[float]], *, seconds_per_generation: float = 30.0) -> pd.DataFrame:
    """mean_return of each agent at generations 1, 2, ..., one generation every `seconds_per_generation`."""
    return samples(
        [
            (generation * seconds_per_generation, agent, generation, "mean_return", score)
            for agent, values in per_agent.items()
            for generation, score in enumerate(values, start=1)
        ]
    )


# ---------------------------------------------------------------------------------------------
# agent_scores and population_progress


def test_agent_scores_keep_the_latest_report_of_a_repeated_generation() -> None:
    frame = samples(
        [
            (3, "a", 3, "mean_return", 5.0),
            (5, "a", 3, "mean_return", 7.0),  # exploited: restored and reported generation 3 again
            (4, "a", 2, "mean_return", 1.0),
            (4, "a", 2, "episodes_per_s", 99.0),  # another metric
            (6, "b", 3, "mean_return", float("nan")),  # missing value
        ]
    )
    scores = agent_scores(frame)
    assert scores[["agent", "generation", "score"]].values.tolist() == [["a", 2, 1.0], ["a", 3, 7.0]]


def test_agent_scores_ignore_system_rows() -> None:
    frame = pd.concat([scores_frame({"a": [1.0]}), samples([(1, "10.0.0.1", None, "mean_return", 50.0)], "node")])
    assert agent_scores(frame)["score"].tolist() == [1.0]


def test_agent_scores_name_a_missing_column() -> None:
    with pytest.raises(ValueError, match="samples is missing columns \\['generation'\\]"):
        agent_scores(scores_frame({"a": [1.0]}).drop(columns="generation"))


def test_agent_scores_refuse_numeric_times_and_broken_generations() -> None:
    """A generation of 1.5 was cut to 1 (two scores for one generation), epoch-second times failed
    later in an .dt accessor."""
    frame = scores_frame({"a": [1.0, 2.0]})
    with pytest.raises(ValueError, match="column 'generation' must hold whole numbers"):
        agent_scores(frame.assign(generation=[1.0, 1.5]))
    with pytest.raises(ValueError, match="column 'ts' must hold datetimes"):
        seconds_per_generation(frame.assign(ts=[1.7e9, 1.7e9 + 30]))


def test_population_progress_by_hand() -> None:
    progress = population_progress(scores_frame({"a": [1.0, 3.0, 4.0], "b": [2.0, 2.0, 6.0]}))
    assert progress.index.tolist() == [1, 2, 3]
    assert progress["agents"].tolist() == [2, 2, 2]
    assert progress["best"].tolist() == [2.0, 3.0, 6.0]  # max(1, 2), max(3, 2), max(4, 6)
    assert progress["mean"].tolist() == [1.5, 2.5, 5.0]  # (1+2)/2, (3+2)/2, (4+6)/2
    assert progress["best_so_far"].tolist() == [2.0, 3.0, 6.0]
    assert progress["best_improvement"].tolist()[1:] == [1.0, 3.0]  # 3-2, 6-3
    assert progress["mean_improvement"].tolist()[1:] == [1.0, 2.5]  # 2.5-1.5, 5-2.5
    assert math.isnan(progress["best_improvement"].iloc[0])


def test_population_progress_divides_by_the_generation_gap_and_keeps_the_running_best() -> None:
    frame = samples([(1, "a", 1, "mean_return", 4.0), (2, "a", 3, "mean_return", 1.0), (3, "a", 4, "mean_return", 5.0)])
    progress = population_progress(frame)
    assert progress["best_improvement"].tolist()[1:] == [-1.5, 4.0]  # (1-4)/2 over generations 1->3; 5-1
    assert progress["best_so_far"].tolist() == [4.0, 4.0, 5.0]


def test_population_progress_leaves_out_a_generation_most_agents_have_not_reported() -> None:
    frame = scores_frame({"a": [1.0, 2.0, 9.0], "b": [1.0, 2.0], "c": [1.0, 2.0], "d": [1.0, 2.0]})
    assert population_progress(frame).index.tolist() == [1, 2]  # generation 3: 1 of 4 agents < half
    assert population_progress(frame, min_reporting_fraction=0.25).index.tolist() == [1, 2, 3]


def test_population_progress_of_nothing_is_an_empty_frame() -> None:
    progress = population_progress(scores_frame({}))
    assert progress.empty
    assert {"best", "mean", "best_so_far", "best_improvement", "mean_improvement"} <= set(progress.columns)


def test_population_progress_rejects_a_bad_fraction() -> None:
    with pytest.raises(ValueError, match="min_reporting_fraction"):
        population_progress(scores_frame({"a": [1.0]}), min_reporting_fraction=1.5)


# ---------------------------------------------------------------------------------------------
# stall_generations


def best(values: list[float]) -> pd.Series:
    return pd.Series(values, index=range(1, len(values) + 1), dtype=float)


def test_stall_by_hand() -> None:
    values = best([1.0, 2.0, 2.05, 2.1, 2.0])
    # tolerance 0.1: record 1.0; 2.0 > 1.1 (gen 2); 2.05, 2.1 and 2.0 are not > 2.1 -> 5 - 2 = 3
    assert stall_generations(values, tolerance=0.1) == 3
    # tolerance 0: 2.05 > 2.0 (gen 3), 2.1 > 2.05 (gen 4); 2.0 is not -> 5 - 4 = 1
    assert stall_generations(values) == 1


def test_stall_counts_a_creep_once_it_adds_up_past_the_tolerance() -> None:
    # steps of 0.06 < 0.1, but 0.12 > 0.0 + 0.1 at generation 3 -> 4 - 3 = 1
    assert stall_generations(best([0.0, 0.06, 0.12, 0.18]), tolerance=0.1) == 1


def test_stall_of_a_constant_and_of_a_single_score() -> None:
    assert stall_generations(best([3.0] * 7)) == 6
    assert stall_generations(best([3.0])) == 0


def test_stall_skips_nan_and_uses_the_generation_numbers() -> None:
    values = pd.Series([1.0, np.nan, 2.0, 1.5], index=[10, 12, 14, 20])
    assert stall_generations(values) == 6  # last record at generation 14, last generation 20


def test_stall_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        stall_generations(best([1.0]), tolerance=-1.0)
    with pytest.raises(ValueError, match="best has no finite score"):
        stall_generations(best([np.nan]))


# ---------------------------------------------------------------------------------------------
# seconds_per_generation


def test_seconds_per_generation_is_the_median_step_of_each_agent() -> None:
    frame = samples(
        [
            (0, "a", 1, "mean_return", 0.0),
            (10, "a", 2, "mean_return", 0.0),
            (20, "a", 3, "mean_return", 0.0),
            (0, "b", 1, "mean_return", 0.0),
            (14, "b", 2, "mean_return", 0.0),
            (30, "b", 3, "mean_return", 0.0),
            (31, "b", 7, "mean_return", 0.0),  # an exploit jumped b to generation 7: not a step
        ]
    )
    assert seconds_per_generation(frame) == 12.0  # median of 10, 10, 14, 16


def test_seconds_per_generation_looks_at_the_recent_window() -> None:
    frame = scores_frame({"a": [0.0] * 5})  # steps of 30 s
    slow = samples([(300, "a", 6, "mean_return", 0.0), (500, "a", 7, "mean_return", 0.0)])
    both = pd.concat([frame, slow])
    assert seconds_per_generation(both, window=2) == 175.0  # steps into generations 6 (150 s) and 7 (200 s)
    assert seconds_per_generation(both) == 30.0  # median of 30, 30, 30, 30, 150, 200


def test_seconds_per_generation_falls_back_to_time_this_iter_s() -> None:
    frame = samples([(0, "a", 1, "time_this_iter_s", 3.0), (0, "b", 1, "time_this_iter_s", 7.0)])
    frame = pd.concat([frame, samples([(0, "c", 1, "time_this_iter_s", 5.0)])])
    assert seconds_per_generation(frame) == 5.0
    assert seconds_per_generation(scores_frame({"a": [1.0]})) is None
    broken = samples([(0, "d", 1, "time_this_iter_s", math.nan), (0, "e", 1, "time_this_iter_s", math.inf)])
    assert seconds_per_generation(pd.concat([frame, broken])) == 5.0  # non-finite times are not times
    assert seconds_per_generation(broken) is None


# ---------------------------------------------------------------------------------------------
# fit_learning_curve


def saturating(generations: np.ndarray) -> np.ndarray:
    return 10.0 - 8.0 * np.exp(-generations / 10.0)


def test_a_noise_free_saturating_exponential_is_extrapolated() -> None:
    curve = fit_learning_curve(np.arange(1, 31), saturating(np.arange(1, 31.0)))
    # truth at 60: 10 - 8 e^-6 = 9.9802; observed range 2.761..9.602
    assert curve.expected(60.0) == pytest.approx(9.9802, abs=0.1)
    # no noise, but curvature leaks into second differences: 8 e^(-g/10) (1 - e^-0.1)^2 = 0.0724 e^(-g/10),
    # from 0.065 to 0.004, whose spread around its median is what the estimate sees
    assert 0.0 < curve.noise < 0.01


def test_the_interval_brackets_the_expected_value_and_widens_with_the_horizon() -> None:
    rng = np.random.default_rng(0)
    generations = np.arange(1, 41.0)
    curve = fit_learning_curve(generations, saturating(generations) + rng.normal(0, 0.3, generations.size))
    low, high = curve.interval(np.array([45.0, 80.0]))
    expected = curve.expected(np.array([45.0, 80.0]))
    assert np.all(low < expected) and np.all(expected < high)
    assert high[1] - low[1] > high[0] - low[0]


def test_probability_and_quantile_agree() -> None:
    rng = np.random.default_rng(1)
    generations = np.arange(1, 41.0)
    curve = fit_learning_curve(generations, saturating(generations) + rng.normal(0, 0.3, generations.size))
    for p in (0.1, 0.3, 0.5, 0.8, 0.9):
        value = float(curve.quantile(60.0, p))
        assert float(curve.probability_at_least(value, 60.0)) == pytest.approx(1 - p, abs=1e-9)


def test_a_constant_curve_is_not_extrapolated() -> None:
    with pytest.raises(NothingToExtrapolate, match="scores are all 4 over generations 1 to 10"):
        fit_learning_curve(np.arange(1, 11), np.full(10, 4.0))
    with pytest.raises(NothingToExtrapolate):  # NaNs dropped, what remains is constant
        fit_learning_curve(np.arange(1, 12), np.r_[np.full(10, 0.0), np.nan])


def test_nan_scores_are_dropped_and_generations_sorted() -> None:
    generations = np.array([3, 1, 2, 4, 5, 6, 7, 8, 9, 10], dtype=float)
    scores = saturating(generations)
    scores[4] = np.nan
    curve = fit_learning_curve(generations, scores)
    assert curve.points == 9 and curve.first_generation == 1.0 and curve.last_generation == 10.0


@pytest.mark.parametrize(
    ("generations", "scores", "message"),
    [
        (np.arange(3), np.arange(4.0), "differ in length"),
        (np.zeros(10), np.arange(10.0), "generations must not repeat"),
        (np.r_[np.arange(9.0), np.inf], np.arange(10.0), "generations must be finite"),
        (np.arange(10), np.r_[np.arange(9.0), np.inf], "scores must not be infinite"),
        (
            np.arange(MIN_POINTS - 1),
            np.arange(MIN_POINTS - 1.0),
            f"scores: a forecast needs at least {MIN_POINTS} scores",
        ),
        (np.arange(10), np.r_[np.full(3, np.nan), np.arange(7.0)], "but there are 7"),
        (np.array([]), np.array([]), "but there are 0"),
    ],
)
def test_fit_rejects_bad_input(generations: np.ndarray, scores: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_learning_curve(generations, scores)


def test_no_forecast_past_four_observed_spans() -> None:
    curve = fit_learning_curve(np.arange(1, 11), np.arange(10.0))
    assert curve.max_generation == 50.0  # 10 + 4 * 10
    curve.expected(50.0)
    with pytest.raises(ValueError, match="are not forecast"):
        curve.quantile(51.0, 0.5)


def test_robust_noise_by_hand() -> None:
    # second differences of 0, 1, 0, 1, 0: 2, -2, 2 -> median 2, |d - 2| = 0, 4, 0 -> MAD 0
    assert robust_noise([0.0, 1.0, 0.0, 1.0, 0.0]) == 0.0
    # 0, 0, 0, 3, 0, 0: second differences 0, 3, -6, 3 -> median 1.5, deviations 1.5, 1.5, 7.5, 1.5
    # -> MAD 1.5 -> 1.4826 * 1.5 / sqrt(6) = 0.90790
    assert robust_noise([0.0, 0.0, 0.0, 3.0, 0.0, 0.0]) == pytest.approx(0.90790, abs=1e-4)
    assert robust_noise([1.0, 2.0]) == 0.0


def test_a_hundred_point_forecast_takes_well_under_a_second() -> None:
    rng = np.random.default_rng(2)
    generations = np.arange(1, 101.0)
    scores = saturating(generations / 3) + rng.normal(0, 0.2, 100)
    started = time.process_time()  # CPU time: other processes on the machine do not count
    forecast_convergence(fit_learning_curve(generations, scores), target=9.9, horizon_generations=50)
    assert time.process_time() - started < 1.0


# ---------------------------------------------------------------------------------------------
# forecast_convergence


def test_a_straight_line_reaches_its_target_on_time() -> None:
    curve = fit_learning_curve(np.arange(1, 21), np.arange(1, 21.0))  # y = g, exactly
    forecast = forecast_convergence(curve, target=29.5, horizon_generations=15)
    # The linear member fits exactly (the others get no weight), noise and backtest error are 0, so
    # s(h) = drift = 0.1 * range 19 * h = 1.9 h with h = (g - 20) / 20; a quantile is g + 1.9 h q(h),
    # q interpolated in _CALIBRATION (these numbers change if it is recalibrated):
    # median: g = 29: 29 + 0.855 * 0.087 = 29.07 < 29.5; g = 30: >= 30 -> 10 generations
    # low (q90): g = 27: 27 + 0.665 * 2.010 = 28.34 < 29.5; g = 28: 28 + 0.76 * 2.077 = 29.58 -> 8
    # high (q10): g = 30: 30 - 0.95 * 1.153 = 28.90 < 29.5; g = 31: 31 - 1.045 * 1.143 = 29.81 -> 11
    # With no noise, a quantile path reaches the target when its quantile does, and the quantiles rise
    # with g, so P(reached by g) is the share of the 400 paths whose quantile at g is >= 29.5.
    # P at g = 35 (h = 0.75, s = 1.425; q10/q50 -1.105/0.107): the lowest path, p = 0.5 / 400, is
    # 0.107 + (ndtri(0.00125) / 1.2816 = -2.359) (0.107 + 1.105) = -2.752 s = 35 - 3.92 = 31.08 >= 29.5:
    # all 400 paths have reached it.
    assert forecast == ConvergenceForecast(Goal.TARGET, 29.5, 10, 8, 11, 1.0, 15)
    # at g = 25: expected 25, s = 0.475, (29.5 - 25) / 0.475 - 0.068 = 9.41 upper-side widths above the
    # median (1.410 each): z = 6.7 -> P = 1e-11
    assert forecast_convergence(curve, target=29.5, horizon_generations=5).probability_within_horizon == pytest.approx(
        0.0, abs=1e-9
    )


def test_a_noisy_score_reaches_a_target_its_trend_never_does() -> None:
    # A flat curve with noise: the trend stays near 9.8 and the best score so far is 11.37, 2 scatters
    # above it. A target just above that best is out of the trend's reach, but each new score has a
    # small chance to pass it, and the first that does counts.
    curve = fit_learning_curve(np.arange(1, 31), 10.0 + np.random.default_rng(0).normal(size=30))
    target = curve.best_score + 0.01
    future = np.arange(30.0, curve.max_generation + 1.0)
    assert not np.any(curve.quantile(future, 0.5) >= target)
    forecast = forecast_convergence(curve, target=target, horizon_generations=1)
    # one generation ahead: one score against a target (11.38 - 9.80) / 0.80 = 1.98 scatters above the
    # trend: 1 - Phi(1.98) = 0.024, raised by the trend's own uncertainty; the median passage is then
    # ln 2 / P(per generation) generations away, 10 to 30 for P between 0.024 and 0.066
    assert 0.024 < forecast.probability_within_horizon < 0.1
    assert forecast.generations_remaining is not None and 10 <= forecast.generations_remaining <= 30
    reached = curve.probability_reached(target, future[1:])
    assert np.all(np.diff(reached) >= 0) and reached[0] == pytest.approx(forecast.probability_within_horizon)


def test_scores_that_jump_reach_a_target_sooner_than_the_robust_noise_says() -> None:
    # y = g with two spikes of +5: the robust noise (MAD of second differences) ignores them, but the
    # scores scatter around the fitted line by sqrt(2 * 25 / 20 - (10 / 20)^2) = 1.5, and a score
    # may spike over a target 2 above the trend as these two did.
    scores = np.arange(1, 21.0)
    scores[[6, 13]] += 5.0
    curve = fit_learning_curve(np.arange(1, 21), scores)
    assert curve.noise < 1e-6
    assert curve.scatter == pytest.approx(1.5, abs=0.05)
    target = float(curve.expected(21.0)) + 2.0
    next_two = np.array([21.0, 22.0])
    with_scatter = curve.probability_reached(target, next_two)[-1]
    robust_only = dataclasses.replace(curve, scatter=0.0).probability_reached(target, next_two)[-1]
    assert with_scatter > robust_only + 0.2


def test_reaching_is_counted_over_an_increasing_grid_only() -> None:
    curve = fit_learning_curve(np.arange(1, 21), np.arange(1, 21.0))
    with pytest.raises(ValueError, match="increasing"):
        curve.probability_reached(25.0, np.array([22.0, 21.0]))


def test_a_target_already_reached_is_zero_generations_away() -> None:
    curve = fit_learning_curve(np.arange(1, 21), np.arange(1, 21.0))
    forecast = forecast_convergence(curve, target=5.0, horizon_generations=1)
    assert forecast.generations_remaining == 0 and forecast.generations_remaining_low == 0
    assert forecast.probability_within_horizon == pytest.approx(1.0)


def test_a_target_a_score_has_reached_but_the_trend_has_not_is_zero_generations_away() -> None:
    # Flat noisy scores: the trend stays near 9.8, and the best score so far is 11.37.
    curve = fit_learning_curve(np.arange(1, 31), 10.0 + np.random.default_rng(0).normal(size=30))
    target = curve.best_score - 0.01
    assert float(curve.expected(30.0)) < target - 1.0
    forecast = forecast_convergence(curve, target=target, horizon_generations=1)
    assert forecast.generations_remaining == 0  # a stop condition would have fired at that score
    assert forecast.probability_within_horizon == pytest.approx(1.0)


def test_a_target_the_trend_has_passed_but_no_score_has_reached_is_not_yet_reached() -> None:
    scores = np.arange(1, 21.0)
    scores[-1] = 17.0  # the last score falls; the robust fit gives it little weight (19.6 at generation 20)
    curve = fit_learning_curve(np.arange(1, 21), scores)
    target = 19.2
    assert curve.best_score == 19.0 and float(curve.expected(20.0)) > target + 0.3
    forecast = forecast_convergence(curve, target=target, horizon_generations=1)
    # A stop condition waits for the next score: 1 generation, likely (the trend is at 20.5) but not certain.
    assert forecast.generations_remaining == 1
    assert 0.5 < forecast.probability_within_horizon < 1.0


def test_flatness_by_hand() -> None:
    generations = np.arange(1, 16.0)
    curve = fit_learning_curve(generations, 10.0 - 8.0 * np.exp(-generations / 5.0))
    forecast = forecast_convergence(curve)
    # range 8 (e^-0.2 - e^-3) = 6.15155, tolerance 1% = 0.0615155; the gain over 10 generations
    # 8 e^(-g/5) (1 - e^-2) = 6.91735 e^(-g/5) <= 0.0615155 from g >= 5 ln(112.45) = 23.61: g = 24,
    # which is 24 - 15 = 9 generations ahead
    assert forecast.goal is Goal.FLAT
    assert forecast.generations_remaining is not None and abs(forecast.generations_remaining - 9) <= 1
    assert forecast.level == pytest.approx(10.0 - 8.0 * math.exp(-24 / 5), abs=0.05)  # 9.9342
    assert forecast.generations_remaining_low <= forecast.generations_remaining <= forecast.generations_remaining_high


def test_forecast_rejects_bad_arguments() -> None:
    curve = fit_learning_curve(np.arange(1, 11), np.arange(10.0))
    for horizon in (0, 2.5, True):
        with pytest.raises(ValueError, match="horizon_generations must be a whole number"):
            forecast_convergence(curve, target=1.0, horizon_generations=horizon)
    assert forecast_convergence(curve, target=1.0, horizon_generations=np.int64(3)).horizon_generations == 3
    with pytest.raises(ValueError, match="target"):
        forecast_convergence(curve, target=float("nan"))
    with pytest.raises(ValueError, match="flat_window"):
        forecast_convergence(curve, flat_window=0)
    with pytest.raises(ValueError, match="flat_tolerance"):
        forecast_convergence(curve, flat_tolerance=-1.0)


# ---------------------------------------------------------------------------------------------
# convergence_report


def test_the_best_is_forecast_from_its_recent_maximum_towards_a_target_and_by_its_shape_until_flat() -> None:
    generations = np.arange(1, 21)
    best = 10.0 - 8.0 * np.exp(-generations / 6.0) + 0.3 * np.sin(1.7 * generations)
    progress = pd.DataFrame({"best": best}, index=generations)

    towards_target, reason = fit_best_curve(progress, target=10.5)
    assert isinstance(towards_target, BestForecast) and reason is None
    assert towards_target.recent_max == forecast_best(progress).recent_max == pytest.approx(best[-10:].max())
    until_flat, reason = fit_best_curve(progress, target=None)
    assert isinstance(until_flat, LearningCurve) and reason is None
    assert until_flat.expected(25.0) == pytest.approx(fit_learning_curve(generations, best).expected(25.0))
    with pytest.raises(TypeError, match="LearningCurve"):
        forecast_convergence(towards_target)


def test_a_best_without_noise_is_forecast_towards_a_target_by_its_learning_curve() -> None:
    # 2g, a straight line: its robust noise is 0, so the recent maximum's interval would have no width.
    line = pd.DataFrame({"best": 2.0 * np.arange(1, 13)}, index=np.arange(1, 13))
    assert forecast_best(line).noise == 0

    curve, reason = fit_best_curve(line, target=33.0)
    assert isinstance(curve, LearningCurve) and reason is None
    assert forecast_target(curve, 33.0).generations_remaining == 5  # 2g first reaches 33 at g = 17


def test_report_by_hand() -> None:
    # Agent a scores 2g -+ 3 (down at odd generations, up at even), agent b g - 10: the best is a's, the
    # mean (3g - 10 -+ 3) / 2; one generation every 30 s.
    a = [2.0 * g + 3.0 * (-1) ** g for g in range(1, 13)]
    frame = scores_frame({"a": a, "b": [g - 10.0 for g in range(1, 13)]})
    report = convergence_report(frame, target=30.0, horizon_generations=6)
    assert (report.generations, report.last_generation) == (12, 12)
    assert (report.best_score, report.best_so_far, report.mean_score) == pytest.approx((27.0, 27.0, 14.5))
    assert report.best_improvement_per_generation == pytest.approx(2.0)  # (27 - 7) / (12 - 2)
    assert report.mean_improvement_per_generation == pytest.approx(1.5)  # (14.5 - -0.5) / 10
    assert report.stall_generations == 0
    assert report.seconds_per_generation == 30.0
    # Towards the target, the best's recent-maximum forecast: its trend, 2 a generation, is 0.28 of its
    # noise (1.4826 * 12 / sqrt(6) = 7.26), a maximum's scatter rather than a steady climb. It
    # reaches 30 in 1 to 11 generations, 2 at the median (computed), 30 s a generation.
    expected = forecast_target(forecast_best(population_progress(frame)), 30.0, horizon_generations=6)
    assert report.forecast == expected
    assert (expected.generations_remaining_low, expected.generations_remaining) == (1, 2)
    assert expected.generations_remaining_high == 11
    assert (report.hours_remaining, report.hours_remaining_high) == pytest.approx((60 / 3600, 330 / 3600))


def test_a_steadily_climbing_best_is_forecast_towards_a_target_by_its_learning_curve() -> None:
    # 2g -+ 0.3: its trend, 2 a generation, is 2.75 of its noise (1.4826 * 1.2 / sqrt(6) = 0.73):
    # more than PBT bests climb (at most 1.31 on the calibration runs), a shape the recent maximum
    # would cut short (its damped trend adds at most 2 tau = 2.4).
    zigzag = pd.DataFrame({"best": [2.0 * g + 0.3 * (-1) ** g for g in range(1, 13)]}, index=np.arange(1, 13))
    assert forecast_best(zigzag).climbs_steadily

    curve, reason = fit_best_curve(zigzag, target=33.0)
    assert isinstance(curve, LearningCurve) and reason is None
    assert curve.expected(17.0) == pytest.approx(fit_learning_curve(np.arange(1, 13), zigzag["best"]).expected(17.0))


def test_report_without_a_target_forecasts_when_the_best_flattens() -> None:
    a = [2.0 * g + 0.3 * (-1) ** g for g in range(1, 13)]
    frame = scores_frame({"a": a, "b": [float(g) for g in range(1, 13)]})
    report = convergence_report(frame)
    expected = forecast_convergence(fit_learning_curve(np.arange(1, 13), a))
    assert report.forecast == expected and report.forecast.goal == Goal.FLAT


def test_report_without_enough_generations_has_no_forecast() -> None:
    report = convergence_report(scores_frame({"a": [1.0, 2.0, 2.0]}), target=5.0)
    assert report.forecast is None and report.hours_remaining is None
    assert report.no_forecast_reason == "a forecast needs 8 complete generations; there are 3"
    assert report.stall_generations == 1  # best 1, 2, 2: last record at generation 2
    assert report.best_improvement_per_generation == pytest.approx(0.5)  # (2 - 1) / 2


def test_report_of_a_population_that_has_not_scored_yet_has_no_forecast_and_says_why() -> None:
    # FrozenLake before any agent reaches the goal: every score 0, and PBT may lift them any time
    report = convergence_report(scores_frame({"a": [0.0] * 10, "b": [0.0] * 10}), target=0.7, horizon_generations=5)
    assert report.forecast is None and report.hours_remaining is None
    assert (report.no_forecast_reason or "").startswith("scores are all 0 over generations 1 to 10")
    assert report.stall_generations == 9


def test_report_of_a_single_generation() -> None:
    report = convergence_report(scores_frame({"a": [1.0], "b": [3.0]}))
    assert (report.best_score, report.mean_score, report.stall_generations) == (3.0, 2.0, 0)
    assert report.best_improvement_per_generation is None and report.seconds_per_generation is None


def test_report_names_a_missing_metric_and_a_bad_window() -> None:
    with pytest.raises(ValueError, match="no agent scores of metric 'episode_reward_mean'"):
        convergence_report(scores_frame({"a": [1.0]}), metric="episode_reward_mean")
    with pytest.raises(ValueError, match="window"):
        convergence_report(scores_frame({"a": [1.0]}), window=0)
