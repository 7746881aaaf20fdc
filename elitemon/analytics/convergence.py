"""Convergence of a PBT population: progress per generation, stall length, and time to convergence.

The score is one agent metric (by default `mean_return`, higher is better). Everything starts from
one score per (agent, generation): an exploited agent restores its source's checkpoint and may
report a generation a second time, and then its latest report (by `ts`) is the one that counts.

- `population_progress`: per generation, the best and mean score over the agents and their change
  per generation. Generations that fewer than half of the agents have reported yet are left out:
  under asynchronous PBT the newest generation fills in over time, and its best and mean would
  otherwise look like a drop.
- `stall_generations`: generations since the best score last improved by more than a tolerance
  (what the `convergence_stall` alert compares with `no_improvement_for_generations`).
- `seconds_per_generation`: the median wall-clock time between an agent's consecutive generations.
- `forecast_convergence`: generations until a target, or until the curve flattens, with an 80%
  interval and the probability of reaching the target within a horizon; `fit_best_curve` forecasts
  the population's best, or says why it cannot: towards a target from its recent maximum
  (best_forecast.py), and until it flattens with a fitted `LearningCurve` (learning_curves.py).
- `convergence_report`: all of it from the samples table, with the forecast also in hours.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from elitemon.analytics._frames import is_whole_number, require_columns
from elitemon.analytics.best_forecast import BestForecast, forecast_best
from elitemon.analytics.learning_curves import MIN_POINTS, LearningCurve, NothingToExtrapolate, fit_learning_curve
from elitemon.analytics.population import _agent_rows

DEFAULT_METRIC = "mean_return"
#: A generation counts once at least this fraction of the agents (the most seen at any one
#: generation) has reported it.
MIN_REPORTING_FRACTION = 0.5
#: Flatness: the expected score gains less than FLAT_FRACTION of the observed score range over the
#: next FLAT_WINDOW generations.
FLAT_WINDOW = 10
FLAT_FRACTION = 0.01


class Goal(enum.StrEnum):
    """What a convergence forecast counts the generations to."""

    TARGET = "target"  # a reported best score reaches a given target
    FLAT = "flat"  # the expected best score stops improving (see FLAT_WINDOW, FLAT_FRACTION)


@dataclass(frozen=True)
class ConvergenceForecast:
    """Generations until the goal, counted from the last observed generation.

    `generations_remaining` is the median forecast; `low` and `high` bound the 80% interval. None
    means "not within the forecast range" (the forecast's `max_generation`): for `high`, that the
    goal may never be reached; for all three, that it is not expected to be. `level` is the target,
    or for Goal.FLAT the score at which the curve flattens (None if it does not within range).
    """

    goal: Goal
    level: float | None
    generations_remaining: int | None
    generations_remaining_low: int | None
    generations_remaining_high: int | None
    probability_within_horizon: float | None  # Goal.TARGET with a horizon only
    horizon_generations: int | None


@dataclass(frozen=True)
class ConvergenceReport:
    """The convergence of one metric's population best, as of the last complete generation."""

    metric: str
    generations: int
    last_generation: int
    best_score: float
    best_so_far: float
    mean_score: float
    best_improvement_per_generation: float | None  # over the last `window` generations
    mean_improvement_per_generation: float | None
    stall_generations: int
    seconds_per_generation: float | None
    forecast: ConvergenceForecast | None  # None when `no_forecast_reason` says why
    no_forecast_reason: str | None
    hours_remaining: float | None
    hours_remaining_low: float | None
    hours_remaining_high: float | None


def agent_scores(samples: pd.DataFrame, *, metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """One score per (agent, generation): the latest report by `ts`. Columns: agent, generation, ts, score.

    Only agent rows of `metric` with a generation and a finite value count. Raises ValueError naming
    the column when `samples` lacks one, its `ts` are not datetimes, or a generation is not whole.
    """
    rows = _agent_rows(samples, metric)  # in ts order
    latest = rows[rows["generation"].notna()].groupby(["agent", "generation"], sort=True).tail(1)
    return (
        latest.rename(columns={"value": "score"})[["agent", "generation", "ts", "score"]]
        .astype({"generation": "int64"})
        .sort_values(["agent", "generation"])
        .reset_index(drop=True)
    )


def population_progress(
    samples: pd.DataFrame, *, metric: str = DEFAULT_METRIC, min_reporting_fraction: float = MIN_REPORTING_FRACTION
) -> pd.DataFrame:
    """Per generation (the index): agents, best, mean, best_so_far, best_improvement, mean_improvement.

    best and mean are over the agents' scores at that generation (`agent_scores`); best_so_far is
    the running maximum of best; the improvements are the change from the previous listed
    generation divided by the generations between them (NaN for the first). Generations reported
    by fewer than `min_reporting_fraction` of the agents are left out (see the module docstring).
    Empty input gives an empty frame with these columns.
    """
    return progress_from_scores(agent_scores(samples, metric=metric), min_reporting_fraction=min_reporting_fraction)


def progress_from_scores(
    scores: pd.DataFrame, *, min_reporting_fraction: float = MIN_REPORTING_FRACTION
) -> pd.DataFrame:
    """`population_progress` from the `agent_scores` table (columns agent, generation, score)."""
    if not 0.0 <= min_reporting_fraction <= 1.0:
        raise ValueError(f"min_reporting_fraction must be in [0, 1], but got {min_reporting_fraction=}.")
    require_columns(scores, "scores", ("agent", "generation", "score"))
    by_generation = scores.groupby("generation")["score"]
    progress = pd.DataFrame({"agents": by_generation.size(), "best": by_generation.max(), "mean": by_generation.mean()})
    if not progress.empty:
        progress = progress[progress["agents"] >= min_reporting_fraction * progress["agents"].max()]
    gaps = np.diff(progress.index.to_numpy(), prepend=np.nan)
    progress["best_so_far"] = progress["best"].cummax()
    progress["best_improvement"] = progress["best"].diff() / gaps
    progress["mean_improvement"] = progress["mean"].diff() / gaps
    return progress.astype({"agents": "int64"})


def stall_generations(best: pd.Series, *, tolerance: float = 0.0) -> int:
    """Generations since the best score last improved by more than `tolerance` (absolute).

    `best` is the population's best score indexed by generation. Walking forward, the record is
    the first score; a score above record + tolerance becomes the new record (an improvement). The
    stall is the last generation minus the generation of the last record. Comparing with the last
    *record* rather than the previous generation means that a slow creep of many small steps still
    counts once it adds up to more than the tolerance, while noise below it never does.
    NaN scores are skipped. Raises ValueError for a negative tolerance or no finite score.
    """
    if tolerance < 0 or not np.isfinite(tolerance):
        raise ValueError(f"tolerance must be a finite number >= 0, but got {tolerance=}.")
    series = best.dropna().sort_index()
    if series.empty:
        raise ValueError("best has no finite score.")
    generations, values = series.index.to_numpy(), series.to_numpy(dtype=float)
    record, record_generation = values[0], generations[0]
    for generation, value in zip(generations[1:], values[1:], strict=True):
        if value > record + tolerance:
            record, record_generation = value, generation
    return int(generations[-1] - record_generation)


def seconds_per_generation(samples: pd.DataFrame, *, metric: str = DEFAULT_METRIC, window: int = 20) -> float | None:
    """Median wall-clock seconds per generation over the last `window` generations.

    From the samples' `ts`: for each agent, the time between its reports (`agent_scores`) of
    generation g - 1 and g, for the g within the last `window` generations; pairs across a jump in
    generation (an exploit restoring another agent's checkpoint) are left out. This is the time a
    generation takes the population, waits for CPUs included. Without two consecutive generations,
    the median of `time_this_iter_s` (Tune's time per iteration, without waits) stands in; None
    when there is neither.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, but got {window=}.")
    scores = agent_scores(samples, metric=metric).sort_values(["agent", "ts"])
    if not scores.empty:
        same_agent = scores["agent"].eq(scores["agent"].shift())
        step = scores["generation"].diff().eq(1) & same_agent
        recent = scores["generation"] > scores["generation"].max() - window
        seconds = scores["ts"].diff().dt.total_seconds()[step & recent]
        if not seconds.empty:
            return float(seconds.median())
    iteration_times = _agent_rows(samples, "time_this_iter_s")["value"]  # the finite ones
    return float(iteration_times.median()) if not iteration_times.empty else None


def forecast_convergence(
    curve: LearningCurve | BestForecast,
    *,
    target: float | None = None,
    horizon_generations: int | None = None,
    flat_window: int = FLAT_WINDOW,
    flat_tolerance: float | None = None,
) -> ConvergenceForecast:
    """Generations from `curve.last_generation` until a score reaches `target`, or, without a
    target, until the curve flattens.

    Target: what a stop condition such as Tune's `stop={metric: target}` waits for, the first
    observed score at or above the target. A target an observed score has already reached
    (`curve.best_score`) is 0 generations away, as a stop condition would have fired; otherwise,
    even where the fitted trend is past it, P(reached by generation g) is the probability
    that a score observed after the last generation, up to g, reaches it
    (`probability_reached`: the calibrated trend plus the curve's noise). The median
    forecast is the first g where that probability reaches the middle of the curve's
    `passage_levels`; the 80% interval runs from the first g where it reaches the lowest (the
    earliest plausible) to the first where it reaches the highest (the latest; None if not within
    range). Those are 0.1, 0.5 and 0.9 for a `LearningCurve`, and recalibrated on PBT runs for the
    population's best (`best_forecast.PASSAGE_LEVELS`). `probability_within_horizon` is that probability at
    last_generation + horizon_generations (capped to the forecast range).

    Flat: the first generation g where expected(g + flat_window) - expected(g) <= flat_tolerance
    (default: FLAT_FRACTION of the observed score range; so a tolerance of 0 means no gain at all);
    the level is expected(g). Its interval comes from the ensemble members' own flattening
    generations (weighted 10% and 90% quantiles): model spread only, not calibrated like the target's.
    It needs a `LearningCurve` (a TypeError otherwise): when a curve flattens is a question of shape.
    """
    if flat_window < 1:
        raise ValueError(f"flat_window must be at least 1, but got {flat_window=}.")
    if target is None:
        if not isinstance(curve, LearningCurve):
            raise TypeError(f"when a curve flattens needs a LearningCurve's shape, but got a {type(curve).__name__}.")
        _require_horizon(horizon_generations)
        tolerance = FLAT_FRACTION * curve.observed_range if flat_tolerance is None else flat_tolerance
        if tolerance < 0:
            raise ValueError(f"flat_tolerance must be >= 0, but got {flat_tolerance=}.")
        future = np.arange(curve.last_generation, np.floor(curve.max_generation) + 1.0)
        return _forecast_flat(curve, future, flat_window, tolerance)
    return forecast_target(curve, target, horizon_generations=horizon_generations)


class ScoreForecast(Protocol):
    """What a target forecast needs: a `LearningCurve`, the population best's `BestForecast`, or an
    agent's population-aware forecast (`population_forecast.AgentForecast`)."""

    @property
    def last_generation(self) -> float: ...

    @property
    def max_generation(self) -> float: ...

    @property
    def best_score(self) -> float: ...

    def probability_reached(self, value: float, generations: ArrayLike) -> np.ndarray: ...

    @property
    def passage_levels(self) -> tuple[float, float, float]: ...


def forecast_target(
    curve: ScoreForecast, target: float, *, horizon_generations: int | None = None
) -> ConvergenceForecast:
    """Generations until a reported score reaches `target`: the Goal.TARGET part of
    `forecast_convergence` (its docstring has the rule), for any `ScoreForecast`, at its
    `passage_levels`."""
    _require_horizon(horizon_generations)
    if not np.isfinite(target):
        raise ValueError(f"target must be a finite number, but got {target=}.")
    future = np.arange(curve.last_generation, np.floor(curve.max_generation) + 1.0)
    if curve.best_score >= target:
        reached = np.ones(future.size)
    else:
        later = curve.probability_reached(target, future[1:]) if future.size > 1 else np.empty(0)
        reached = np.concatenate([[0.0], later])
    probability = None
    if horizon_generations is not None:
        probability = float(reached[min(int(horizon_generations), reached.size - 1)])
    low, middle, high = curve.passage_levels
    return ConvergenceForecast(
        goal=Goal.TARGET,
        level=float(target),
        generations_remaining=_first_at_least(reached, middle),
        generations_remaining_low=_first_at_least(reached, low),
        generations_remaining_high=_first_at_least(reached, high),
        probability_within_horizon=probability,
        horizon_generations=horizon_generations,
    )


def _require_horizon(horizon_generations: int | None) -> None:
    if horizon_generations is not None and (not is_whole_number(horizon_generations) or horizon_generations < 1):
        raise ValueError(f"horizon_generations must be a whole number >= 1, but got {horizon_generations=}.")


def _forecast_flat(curve: LearningCurve, future: np.ndarray, window: int, tolerance: float) -> ConvergenceForecast:
    remaining = _first_flat(curve.expected(future), window, tolerance)
    never = float(future.size)  # a member that does not flatten within range sorts last
    member_remaining = [_first_flat(member, window, tolerance) for member in curve.member_curves(future)]
    low, high = _weighted_quantiles(
        np.array([never if r is None else r for r in member_remaining]), np.asarray(curve.weights), (0.1, 0.9)
    )
    return ConvergenceForecast(
        goal=Goal.FLAT,
        level=None if remaining is None else float(curve.expected(future[remaining])),
        generations_remaining=remaining,
        generations_remaining_low=None if low >= never else int(low),
        generations_remaining_high=None if high >= never else int(high),
        probability_within_horizon=None,
        horizon_generations=None,
    )


def _first_at_least(values: np.ndarray, level: float) -> int | None:
    """Index of the first value >= level (= generations after the first), or None."""
    hits = np.flatnonzero(values >= level)
    return int(hits[0]) if hits.size else None


def _first_flat(values: np.ndarray, window: int, tolerance: float) -> int | None:
    """Index of the first value from which the next `window` values gain at most `tolerance`, or None."""
    if values.size <= window:
        return None
    return _first_at_least(-(values[window:] - values[:-window]), -tolerance)


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, probabilities: tuple[float, ...]) -> list[float]:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order]) / weights.sum()
    return [float(values[order][np.searchsorted(cumulative, p)]) for p in probabilities]


def fit_best_curve(
    progress: pd.DataFrame, *, target: float | None
) -> tuple[BestForecast | LearningCurve | None, str | None]:
    """The forecast of the population's best score (`population_progress`'s `best`) for
    `forecast_convergence` towards `target`, or with target None until it flattens; or None and
    the reason there is none: fewer than MIN_POINTS complete generations, or a best score that has
    not moved (`NothingToExtrapolate`).

    Towards a target: the recent-maximum forecast (best_forecast.py). On the evaluation's PBT runs
    its final value has 0.76 and 0.67 of the last score's error (30% and 50% of a run observed),
    where the learning curve fitted to the best score had 1.04 and 0.99 (README, Known limits).
    A best whose robust noise is 0 (a straight line, a staircase, a long plateau) leaves its
    interval nothing to scale by, and one that climbs more than a noise a generation is a shape
    rather than a noisy maximum: both get the learning curve (`best_target_forecast`). Without a
    target: the learning curve, because when a curve flattens is a question about its shape, which
    the recent maximum does not model."""
    scored = progress["best"].count()
    if scored < MIN_POINTS:
        return None, f"a forecast needs {MIN_POINTS} complete generations; there are {scored}"
    try:
        return (_best_learning_curve(progress) if target is None else best_target_forecast(progress)), None
    except NothingToExtrapolate as flat:
        return None, str(flat)


def best_target_forecast(progress: pd.DataFrame) -> BestForecast | LearningCurve:
    """`fit_best_curve`'s forecast towards a target: the recent-maximum forecast, or the learning
    curve for a best whose robust noise is 0 or that climbs steadily (`BestForecast.climbs_steadily`).
    Raises as `forecast_best` does."""
    towards_target = forecast_best(progress)
    if towards_target.noise == 0 or towards_target.climbs_steadily:
        return _best_learning_curve(progress)
    return towards_target


def _best_learning_curve(progress: pd.DataFrame) -> LearningCurve:
    """The learning curve of the best scores there are (`fit_learning_curve` sorts the generations)."""
    best = progress["best"].dropna()
    return fit_learning_curve(best.index.to_numpy(), best.to_numpy())


def convergence_report(
    samples: pd.DataFrame,
    *,
    metric: str = DEFAULT_METRIC,
    target: float | None = None,
    tolerance: float = 0.0,
    horizon_generations: int | None = None,
    window: int = 10,
) -> ConvergenceReport:
    """Progress, stall and forecast of the population's best `metric`, from the samples table.

    The improvements per generation are averaged over the last `window` generations; the forecast
    is of the best score per generation, converted to hours at `seconds_per_generation`. Its "already
    reached" looks at the generations `population_progress` keeps, so a score in a newest generation
    that too few agents have reported yet counts only once that generation is complete. There is
    none, and `no_forecast_reason` says so, with fewer than MIN_POINTS complete generations or a
    best score that has not moved (`NothingToExtrapolate`). Raises ValueError when `samples` has no
    score.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, but got {window=}.")
    progress = population_progress(samples, metric=metric)
    if progress.empty:
        raise ValueError(f"samples has no agent scores of metric {metric!r}.")
    last = progress.iloc[-1]
    recent = progress.iloc[-(window + 1) :]
    gap = float(recent.index[-1] - recent.index[0])
    curve, no_forecast_reason = fit_best_curve(progress, target=target)
    forecast = None
    if curve is not None:
        forecast = forecast_convergence(curve, target=target, horizon_generations=horizon_generations)
    seconds = seconds_per_generation(samples, metric=metric)

    def hours(generations: int | None) -> float | None:
        return None if generations is None or seconds is None else generations * seconds / 3600.0

    return ConvergenceReport(
        metric=metric,
        generations=len(progress),
        last_generation=int(progress.index[-1]),
        best_score=float(last["best"]),
        best_so_far=float(last["best_so_far"]),
        mean_score=float(last["mean"]),
        best_improvement_per_generation=(recent["best"].iloc[-1] - recent["best"].iloc[0]) / gap if gap else None,
        mean_improvement_per_generation=(recent["mean"].iloc[-1] - recent["mean"].iloc[0]) / gap if gap else None,
        stall_generations=stall_generations(progress["best"], tolerance=tolerance),
        seconds_per_generation=seconds,
        forecast=forecast,
        no_forecast_reason=no_forecast_reason,
        hours_remaining=hours(forecast.generations_remaining) if forecast else None,
        hours_remaining_low=hours(forecast.generations_remaining_low) if forecast else None,
        hours_remaining_high=hours(forecast.generations_remaining_high) if forecast else None,
    )
