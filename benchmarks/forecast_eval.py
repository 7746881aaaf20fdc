"""How well the convergence forecast predicts, against two naive baselines, on curves it has not seen.

    python benchmarks/forecast_eval.py               # the full run (8 min on 2 cores)
    python benchmarks/forecast_eval.py --quick       # a smoke test (under 30 s): few curves, no Q-learning
    python benchmarks/forecast_eval.py --synthetic-best   # the best's target forecast on smooth curves (75 s)
    python benchmarks/forecast_eval.py --calibrate --per-family 100   # learning_curves._CALIBRATION (3.5 min)
    python benchmarks/forecast_eval.py --calibrate --per-family 100 --with-pbt   # pooled with real PBT curves
    python benchmarks/forecast_eval.py --calibrate-population   # population_forecast's and best_forecast's (15 min)

Curves (benchmarks/_curves.py): synthetic ones from six families with random parameters (seed 1;
the calibration uses seed 0, other curves), and real ones: the best, mean and per-agent scores of
small Q-learning PBT runs (Taxi and FrozenLake, the demo's agent, without Tune).

For each curve of T generations and each observed fraction f (30% and 50%), the forecaster sees
generations 1..n = round(f T) and predicts:
- the final value: the expected score at generation T (the truth: the curve's trend without noise;
  for a real curve, the exact expected return of the greedy policies, see `_curves.GreedyReturn`,
  and for a real best curve the expected best reported score);
- generations to a target: a target between the best of the truth so far (and of the observed
  scores, which would otherwise have reached it already) and 25% past the truth's final best (so
  some are not reached by T); the truth is the first generation after n at which an observed score
  reaches it, what a stop condition such as Tune's reacts to (with
  `--generations-truth trend`: at which the trend does). Any prediction past T counts as T (the run
  ends there), for every method alike; the error is measured over the targets that are reached.
Three forecasters: the learning-curve ensemble (`ensemble`: learning_curves.py, the curve alone)
on every curve; for a real agent or mean curve also the population-aware forecast (`population`:
population_forecast.py, from every agent's scores and the exploits up to n); and for a real best
curve also the forecast `convergence_report` makes towards a target (`recent max`:
best_forecast.py, or the learning curve for a best without noise or one that climbs steadily), each
on the same target.
Baselines: the last observed value (it predicts no further change), and a straight line through
the last k = 10 observed points. Two columns say how much room there is to beat the last value:
`now/last` is the error of the truth at the cut (a perfect nowcast, which no forecaster has) over
the last value's error, the best any forecast of "no further change" can do; `change rho` is the
rank (Spearman) correlation of the forecast's change from the cut to the end, expected(T) -
expected(n), with the truth's. Beating the nowcast takes foreseeing change: a `change rho` well
above 0. Errors of the final value are in units of the curve's range (the
truth's max - min over 1..T), so that curves of every scale weigh the same. Also reported: how often
the 80% intervals contain the truth, and the Brier score of the probability of reaching the target
by T (the baselines' probabilities are 0 or 1). The ensemble abstains on a curve whose observed
part is constant (`NothingToExtrapolate`); those cases are counted ("abstained") and left out of
every other column of its rows, the baselines' included, so that all three are compared on the same
forecasts; so does `recent max`. The population-aware forecast does not abstain (a constant agent
still has a population), so its rows hold those cases too, and its baselines' errors are over them.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from _curves import FAMILIES, Curve, qlearning_pbt_curves, synthetic_curves
from sklearn.linear_model import QuantileRegressor

from elitemon.analytics.best_forecast import BestForecast, forecast_best
from elitemon.analytics.convergence import ConvergenceForecast, ScoreForecast, best_target_forecast, forecast_target
from elitemon.analytics.learning_curves import (
    MAX_RELATIVE_HORIZON,
    MIN_POINTS,
    LearningCurve,
    NothingToExtrapolate,
    fit_learning_curve,
)
from elitemon.analytics.population_forecast import AgentForecast, forecast_population

FRACTIONS = (0.3, 0.5)
LINEAR_POINTS = 10
CALIBRATION_CUTS = 4
CALIBRATION_HORIZONS = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
#: Q-learning PBT runs evaluated on: 24 seeds and 2 environments, 48 runs and 480 curves. The curves
#: of a run share its luck, so what counts is the number of runs: on 8 runs alone (seeds 0-3) the
#: coverages moved by up to 15 points from one set of seeds to another.
EVALUATION_PBT_SEEDS = (*range(0, 4), *range(20, 32), *range(40, 48))
#: Q-learning PBT runs for the calibration: other seeds than the evaluation's.
CALIBRATION_PBT_SEEDS = (10, 11, 12, 13)
#: Q-learning PBT runs for the population-aware forecast's calibration: 36 seeds, none evaluated on.
#: Its errors are shared by every agent of a run (where the population goes), so what counts is the
#: number of runs: with the 8 runs of seeds 10-13 alone, the final value's coverage on the evaluation
#: seeds ranged from 0.56 to 0.75 by seed set.
POPULATION_CALIBRATION_SEEDS = (*range(10, 20), *range(50, 76))
QUANTILES = (0.1, 0.5, 0.9)
#: Resamples of whole runs behind the 90% intervals of `intervals`.
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Case:
    """One forecast and its truth; errors of values are in units of the curve's range."""

    family: str
    method: str
    fraction: float
    seconds: float
    final_error: float
    final_error_last: float
    final_error_linear: float
    final_error_nowcast: float
    predicted_change: float
    true_change: float
    final_covered: bool
    target_reached: bool
    generations_error: float
    generations_error_last: float
    generations_error_linear: float
    generations_covered: bool
    brier: float
    brier_last: float
    brier_linear: float


@dataclass(frozen=True)
class Abstention:
    """A curve cut the forecaster declined: its observed part is constant."""

    family: str
    method: str
    fraction: float


def evaluate(
    curve: Curve,
    fraction: float,
    rng: np.random.Generator,
    generations_truth: str = "observed",
    methods: Callable[[Curve], dict[str, Callable[[int], ScoreForecast]]] | None = None,
) -> list[Case | Abstention]:
    """The cases of one curve cut at `fraction`, each method's forecast on the same target: by
    default (`_forecasters`) the ensemble's, and for a real agent or mean curve also the
    population-aware one, for a best curve the recent maximum's."""
    length = curve.scores.size
    n = int(round(fraction * length))
    if n < MIN_POINTS:
        return []
    truth = curve.trend(np.arange(1, length + 1, dtype=float))
    observed = curve.scores[:n]
    # A target a score has already reached would have stopped the run: above those too, when they count.
    reached_so_far = float(observed.max()) if generations_truth == "observed" else -np.inf
    target = _target(truth, n, rng, reached_so_far)
    crossing = curve.scores if generations_truth == "observed" else truth
    reached_at = _first_at_least(crossing[n:], target)  # generations after n, 1-based
    true_steps = None if reached_at is None else reached_at + 1
    cases: list[Case | Abstention] = []
    for method, forecaster in (methods or _forecasters)(curve).items():
        started = time.process_time()  # CPU time: the machine may be shared, and wall time then says little
        try:
            fit = forecaster(n)
        except NothingToExtrapolate:
            cases.append(Abstention(curve.family, method, fraction))
            continue
        forecast = forecast_target(fit, target, horizon_generations=length - n)
        seconds = time.process_time() - started
        cases.append(_case(curve, method, fraction, seconds, fit, forecast, truth, target, true_steps))
    return cases


def _forecasters(curve: Curve) -> dict[str, Callable[[int], ScoreForecast]]:
    """The forecasts to evaluate for `curve`, by method, each from its first n generations."""

    def ensemble(n: int) -> LearningCurve:
        return fit_learning_curve(np.arange(1, n + 1, dtype=float), curve.scores[:n])

    methods: dict[str, Callable[[int], ScoreForecast]] = {"ensemble": ensemble}
    if curve.member == "best":
        # A PBT population's best towards a target, as `convergence_report` and the report forecast it.
        methods["recent max"] = lambda n: best_target_forecast(
            pd.DataFrame({"best": curve.scores[:n]}, index=range(1, n + 1))
        )
    population, member = curve.population, curve.member
    if population is not None and member is not None:

        def population_aware(n: int) -> AgentForecast:
            forecast = forecast_population(population.scores_frame(n), exploit_rate=population.exploit_rate(n))
            return forecast.mean if member == "mean" else forecast.agents[member]

        methods["population"] = population_aware
    return methods


def _case(
    curve: Curve,
    method: str,
    fraction: float,
    seconds: float,
    fit: LearningCurve | AgentForecast | BestForecast,
    forecast: ConvergenceForecast,
    truth: np.ndarray,
    target: float,
    true_steps: int | None,
) -> Case:
    length = truth.size
    n = int(fit.last_generation)
    unit = float(truth.max() - truth.min()) or 1.0
    observed = curve.scores[:n]
    generations = np.arange(1, n + 1, dtype=float)
    remaining = length - n

    def steps_error(predicted: int | None) -> float:
        if true_steps is None:
            return np.nan
        return abs(min(remaining if predicted is None else predicted, remaining) - true_steps)

    final = float(fit.expected(float(length)))
    line = np.polyfit(generations[-LINEAR_POINTS:], observed[-LINEAR_POINTS:], 1)
    future = np.arange(n, length + 1, dtype=float)
    low, high = fit.interval(float(length))
    linear_steps = _first_at_least(np.polyval(line, future), target)
    last_steps = 0 if observed[-1] >= target else None
    lowest = forecast.generations_remaining_low
    highest = forecast.generations_remaining_high
    reached = float(true_steps is not None)
    return Case(
        family=curve.family,
        method=method,
        fraction=fraction,
        seconds=seconds,
        final_error=abs(final - truth[-1]) / unit,
        final_error_last=abs(observed[-1] - truth[-1]) / unit,
        final_error_linear=abs(float(np.polyval(line, length)) - truth[-1]) / unit,
        final_error_nowcast=abs(truth[n - 1] - truth[-1]) / unit,
        predicted_change=(final - float(fit.expected(float(n)))) / unit,
        true_change=(truth[-1] - truth[n - 1]) / unit,
        final_covered=bool(low <= truth[-1] <= high),
        target_reached=true_steps is not None,
        generations_error=steps_error(forecast.generations_remaining),
        generations_error_last=steps_error(last_steps),
        generations_error_linear=steps_error(linear_steps),
        generations_covered=true_steps is not None
        and (lowest is not None and lowest <= true_steps)
        and (highest is None or true_steps <= highest),
        brier=(float(forecast.probability_within_horizon) - reached) ** 2,
        brier_last=(float(last_steps is not None) - reached) ** 2,
        brier_linear=(float(linear_steps is not None and linear_steps <= remaining) - reached) ** 2,
    )


def _target(truth: np.ndarray, n: int, rng: np.random.Generator, reached_so_far: float) -> float:
    """A target above everything the truth (and `reached_so_far`) has reached by n, up to 25% past
    the truth's final best."""
    so_far, best = max(float(truth[:n].max()), reached_so_far), float(truth.max())
    gap = max(best - so_far, 0.02 * float(truth.max() - truth.min()) or 1.0)
    return so_far + rng.uniform(0.02, 1.25) * gap


def _first_at_least(values: np.ndarray, level: float) -> int | None:
    hits = np.flatnonzero(values >= level)
    return int(hits[0]) if hits.size else None


def run(
    curves: list[Curve],
    seed: int,
    generations_truth: str = "observed",
    methods: Callable[[Curve], dict[str, Callable[[int], ScoreForecast]]] | None = None,
) -> pd.DataFrame:
    """Every case of every curve (`evaluate`), with the run it comes from (a curve without one is
    its own)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        [
            {**case.__dict__, "abstained": isinstance(case, Abstention), "run": curve.run or f"curve {index}"}
            for index, curve in enumerate(curves)
            for fraction in FRACTIONS
            for case in evaluate(curve, fraction, rng, generations_truth, methods)
        ]
    )


def table(cases: pd.DataFrame, group: str) -> pd.DataFrame:
    """Per group and fraction: errors, their ratios to the baselines, coverage, Brier scores, over
    the cases forecast (the abstentions are counted apart)."""
    rows = []
    for (name, method, fraction), group_cases in cases.groupby([group, "method", "fraction"], sort=False):
        part = group_cases[~group_cases["abstained"]]
        reached = part[part["target_reached"].astype(bool)]
        rows.append(
            {
                group: name,
                "method": method,
                "obs": f"{fraction:.0%}",
                "n": len(part),
                "abstained": len(group_cases) - len(part),
                "final MAE": part["final_error"].mean(),
                "/last": part["final_error"].mean() / part["final_error_last"].mean(),
                "/linear": part["final_error"].mean() / part["final_error_linear"].mean(),
                "now/last": part["final_error_nowcast"].mean() / part["final_error_last"].mean(),
                "change rho": part["predicted_change"].corr(part["true_change"], method="spearman"),
                "final cover80": part["final_covered"].mean(),
                "gens MAE": reached["generations_error"].mean(),
                "g/last": reached["generations_error"].mean() / reached["generations_error_last"].mean(),
                "g/linear": reached["generations_error"].mean() / reached["generations_error_linear"].mean(),
                "gens cover80": reached["generations_covered"].mean(),
                "Brier": part["brier"].mean(),
                "B last": part["brier_last"].mean(),
                "B linear": part["brier_linear"].mean(),
            }
        )
    return pd.DataFrame(rows)


def intervals(cases: pd.DataFrame, group: str, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """Per group, method and fraction: `table`'s ratios and coverages, each with its 90% interval
    by a bootstrap over runs, as "value [5%, 95%]".

    The curves of one PBT run share its luck (where its population went), so their forecasts are
    not independent draws, and an interval that resampled forecasts would be too narrow. This one
    resamples whole runs with replacement and recomputes every figure as `table` does: a ratio of
    sums over the cases of the resampled runs (the generations' over those whose target was reached).
    """
    figures = {
        "/last": ("final_error", "final_error_last"),
        "/linear": ("final_error", "final_error_linear"),
        "final cover80": ("final_covered", "forecasts"),
        "g/last": ("generations_error", "generations_error_last"),
        "g/linear": ("generations_error", "generations_error_linear"),
        "gens cover80": ("generations_covered", "reached"),
    }
    rng = np.random.default_rng(seed)
    rows = []
    for (name, method, fraction), group_cases in cases[~cases["abstained"]].groupby(
        [group, "method", "fraction"], sort=False
    ):
        reached = group_cases["target_reached"].astype(bool)
        columns = {"forecasts": np.ones(len(group_cases)), "reached": reached.astype(float)}
        for column in ("final_error", "final_error_last", "final_error_linear", "final_covered"):
            columns[column] = group_cases[column].astype(float)
        for column in (
            "generations_error",
            "generations_error_last",
            "generations_error_linear",
            "generations_covered",
        ):
            columns[column] = group_cases[column].astype(float).where(reached, 0.0)
        per_run = pd.DataFrame(columns).groupby(group_cases["run"].to_numpy()).sum()
        runs = len(per_run)
        counts = rng.multinomial(runs, np.full(runs, 1.0 / runs), size=resamples)
        totals = pd.DataFrame(np.vstack([np.ones(runs), counts]) @ per_run.to_numpy(), columns=per_run.columns)
        row = {group: name, "method": method, "obs": f"{fraction:.0%}", "runs": runs}
        with np.errstate(divide="ignore", invalid="ignore"):
            for figure, (numerator, denominator) in figures.items():
                values = (totals[numerator] / totals[denominator]).to_numpy()
                resampled = values[1:][np.isfinite(values[1:])]  # a resample without a reached target has none
                if resampled.size:
                    low, high = np.quantile(resampled, (0.05, 0.95))
                    row[figure] = f"{values[0]:.2f} [{low:.2f}, {high:.2f}]"
                else:
                    row[figure] = "-"
        rows.append(row)
    return pd.DataFrame(rows)


def calibrate(curve_sets: dict[str, list[Curve]], seed: int) -> np.ndarray:
    """Quantiles 10/50/90% of (truth - expected) / s(h) per relative horizon h, pooled over the
    curve sets with equal weight per set (each set's forecasts at a horizon weigh 1/their count).

    Each curve is cut at CALIBRATION_CUTS random points (15% to 85% of its length) and forecast at
    the horizons of CALIBRATION_HORIZONS that stay within its length, as in the evaluation (a
    forecast made during a run, of that run): a horizon of h spans is seen from curves cut before
    1 / (1 + h). The truth is the curve's trend.
    """
    rng = np.random.default_rng(seed)
    normalised: dict[float, dict[str, list[float]]] = {
        h: {name: [] for name in curve_sets} for h in CALIBRATION_HORIZONS
    }
    for name, curves in curve_sets.items():
        for curve in curves:
            length = curve.scores.size
            for n in _calibration_cuts(length, rng):
                try:
                    fit = fit_learning_curve(np.arange(1, n + 1, dtype=float), curve.scores[:n])
                except NothingToExtrapolate:
                    continue
                for h in CALIBRATION_HORIZONS:
                    generation = n + h * fit.span
                    s = float(fit.uncertainty(generation)) if generation <= length else 0.0
                    if s > 0:
                        value = float(curve.trend(np.array([generation]))[0])
                        normalised[h][name].append((value - float(fit.expected(generation))) / s)
    rows = []
    for h in CALIBRATION_HORIZONS:
        parts = [np.asarray(values) for values in normalised[h].values() if values]
        values = np.concatenate(parts)
        if len(parts) == 1:
            quantiles = list(np.quantile(values, QUANTILES))
        else:
            weights = np.concatenate([np.full(part.size, 1.0 / part.size) for part in parts])
            quantiles = _weighted_quantiles(values, weights, QUANTILES)
        rows.append([h, *quantiles, values.size])
    return np.array(rows)


def calibrate_population(curves: list[Curve], seed: int, *, best: bool = False) -> np.ndarray:
    """population_forecast._CALIBRATION, or with `best` best_forecast._CALIBRATION: rows q10, q50,
    q90 of coefficients (the intercept, then one per variable) of the quantiles of (truth -
    expected) / s, by linear quantile regression (scikit-learn's QuantileRegressor, without
    penalty) on the forecast's `calibration_variables`: for the population-aware forecast the
    expected exploits per agent rho h and the relative horizon h / span (span: the generations
    observed); for the best's, the relative horizon.

    Every real agent and mean curve (with `best`, every best curve) is cut at CALIBRATION_CUTS random
    points (15% to 85% of its length) and forecast at every later generation; the truth is the
    curve's trend. Cuts whose forecast has no scale (s = 0) or is refused are left out.
    """
    rng = np.random.default_rng(seed)
    features, normalised = [], []
    for curve in curves:
        forecaster = _calibration_forecaster(curve, best=best)
        if forecaster is None:
            continue
        length = curve.scores.size
        for n in _calibration_cuts(length, rng):
            fit = forecaster(n)
            if fit is None:
                continue
            later = np.arange(n + 1, min(length, fit.max_generation) + 1, dtype=float)
            scale = fit.uncertainty(later)
            if not np.all(scale > 0):
                continue
            features.append(fit.calibration_variables(later)[:, 1:])  # the regression adds the intercept
            normalised.append((curve.trend(later) - fit.expected(later)) / scale)
    x, z = np.concatenate(features), np.concatenate(normalised)
    rows = []
    for quantile in QUANTILES:
        model = QuantileRegressor(quantile=quantile, alpha=0.0, solver="highs").fit(x, z)
        rows.append([model.intercept_, *model.coef_])
    return np.array(rows)


def calibrate_passage(curves: list[Curve], seed: int, *, best: bool = False) -> tuple[float, float, float]:
    """population_forecast.PASSAGE_LEVELS, or with `best` best_forecast.PASSAGE_LEVELS: the 10%,
    50% and 90% quantiles of the probability the forecast gave to a passage by the generation at
    which an observed score first reached the target (the probability integral transform of the
    truth). Were that probability calibrated, they would be 0.1, 0.5 and 0.9.

    The forecasts are the population-aware one of every real agent and mean curve, or with `best`
    the recent-maximum forecast of every real best curve. Each curve is cut at CALIBRATION_CUTS random points
    (15% to 85% of its length) and given a target as the evaluation draws them (`_target`); the cuts
    whose target an observed score reaches within the run count, as in the evaluation's coverage.
    The forecasts are their modules', with their current `_CALIBRATION`.
    """
    rng = np.random.default_rng(seed)
    reached_by_then = []
    for curve in curves:
        forecaster = _calibration_forecaster(curve, best=best)
        if forecaster is None:
            continue
        length = curve.scores.size
        truth = curve.trend(np.arange(1, length + 1, dtype=float))
        for n in _calibration_cuts(length, rng):
            target = _target(truth, n, rng, float(curve.scores[:n].max()))
            steps = _first_at_least(curve.scores[n:], target)
            if steps is None:
                continue
            fit = forecaster(n)
            if fit is None:
                continue
            reached_at = min(n + steps + 1, np.floor(fit.max_generation))
            probabilities = fit.probability_reached(target, np.arange(n + 1, reached_at + 1, dtype=float))
            reached_by_then.append(float(probabilities[-1]))
    low, middle, high = np.quantile(reached_by_then, QUANTILES)
    return float(low), float(middle), float(high)


def _calibration_forecaster(curve: Curve, *, best: bool) -> Callable[[int], AgentForecast | BestForecast | None] | None:
    """What `calibrate_population` and `calibrate_passage` forecast `curve` with, from its first n
    generations: the population-aware forecast of a real agent or mean curve, or with `best` the
    recent maximum of a real best curve; None for any other curve. The forecaster gives None for a
    cut the calibration leaves out: one refused (`NothingToExtrapolate`), or a best that
    `best_target_forecast` gives the learning curve (without noise, or climbing steadily)."""
    forecaster = _forecasters(curve).get("recent max" if best else "population")
    if forecaster is None:
        return None

    def calibrated(n: int) -> AgentForecast | BestForecast | None:
        try:
            fit = forecaster(n)
        except NothingToExtrapolate:
            return None
        return fit if isinstance(fit, AgentForecast | BestForecast) else None

    return calibrated


def _calibration_cuts(length: int, rng: np.random.Generator) -> list[int]:
    """The generations observed at CALIBRATION_CUTS random cuts of a curve of `length` (15% to 85%
    of it), leaving out those with fewer than MIN_POINTS: where every calibration cuts its curves."""
    cuts = (int(round(fraction * length)) for fraction in rng.uniform(0.15, 0.85, size=CALIBRATION_CUTS))
    return [n for n in cuts if n >= MIN_POINTS]


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, probabilities: tuple[float, ...]) -> list[float]:
    """Quantiles of the distribution that puts `weights` on `values` (midpoint interpolation)."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order]) - weights[order] / 2
    return [float(np.interp(p * weights.sum(), cumulative, values[order])) for p in probabilities]


def print_synthetic_best(per_family: int) -> None:
    """The synthetic curves of the full run, each taken as a population's best, forecast towards a
    target as `convergence_report` forecasts a best (`recent max`: the recent maximum, but the
    learning curve for a best without noise or one that climbs steadily), beside the ensemble and
    the recent maximum for every such best (`recent max, always`) on the same targets: what a user
    whose best is a smooth curve rather than a noisy maximum gets."""

    def methods(curve: Curve) -> dict[str, Callable[[int], ScoreForecast]]:
        def recent_max_always(n: int) -> ScoreForecast:
            best = pd.DataFrame({"best": curve.scores[:n]}, index=range(1, n + 1))
            towards_target = forecast_best(best)
            return towards_target if towards_target.noise > 0 else best_target_forecast(best)

        return {**_forecasters(curve), "recent max, always": recent_max_always}

    curves = [replace(curve, member="best") for curve in synthetic_curves(per_family, seed=1)]
    cases = run(curves, seed=1, methods=methods)
    cases["set"] = "synthetic"
    print(f"synthetic curves as a population's best: {per_family} per family, seed 1\n")
    for group in ("set", "family"):
        print(table(cases, group).to_string(index=False), end="\n\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run for a smoke test")
    parser.add_argument(
        "--synthetic-best",
        action="store_true",
        help="score the synthetic curves taken as a population's best, forecast towards a target as the report does",
    )
    parser.add_argument("--calibrate", action="store_true", help="print the calibration table (seed 0 curves)")
    parser.add_argument("--per-family", type=int, default=60, help="synthetic curves per family (full run)")
    parser.add_argument(
        "--pbt-seeds",
        type=int,
        nargs="+",
        default=list(EVALUATION_PBT_SEEDS),
        help="seeds of the Q-learning PBT runs evaluated on (full run)",
    )
    parser.add_argument(
        "--with-pbt",
        action="store_true",
        help="calibrate on Q-learning PBT curves too (seeds 10-13), weighted equally with the synthetic ones",
    )
    parser.add_argument(
        "--generations-truth",
        choices=("observed", "trend"),
        default="observed",
        help="when a target counts as reached: the first observed score at or above it, or the trend's crossing",
    )
    parser.add_argument(
        "--calibrate-population",
        action="store_true",
        help="print population_forecast's and best_forecast's _CALIBRATION and PASSAGE_LEVELS "
        "(Q-learning PBT seeds 10-19 and 50-75)",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    if args.calibrate_population:
        curves = qlearning_pbt_curves(seeds=POPULATION_CALIBRATION_SEEDS)
        for module, best in (("population_forecast", False), ("best_forecast", True)):
            rows = "\n".join(
                f"        [{', '.join(f'{c:.3f}' for c in row)}],  # q{quantile * 100:.0f}"
                for quantile, row in zip(QUANTILES, calibrate_population(curves, seed=0, best=best), strict=True)
            )
            print(f"{module}._CALIBRATION = np.array(\n    [\n{rows}\n    ]\n)")
            levels = ", ".join(f"{level:.3f}" for level in calibrate_passage(curves, seed=0, best=best))
            print(f"{module}.PASSAGE_LEVELS = ({levels})  # with its current _CALIBRATION: paste the one above first")
        print(f"({time.perf_counter() - started:.0f} s)")
        return
    if args.calibrate:
        sets = {"synthetic": synthetic_curves(args.per_family, seed=0)}
        if args.with_pbt:
            sets["Q-learning PBT"] = qlearning_pbt_curves(seeds=CALIBRATION_PBT_SEEDS)
        quantiles = calibrate(sets, seed=0)
        rows = "\n".join(
            f"        [{h:g}, {low:.3f}, {middle:.3f}, {high:.3f}],  # {count:.0f} forecasts"
            for h, low, middle, high, count in quantiles
        )
        print(f"_CALIBRATION = np.array(\n    [\n{rows}\n    ]\n)")
        print(f"({time.perf_counter() - started:.0f} s; horizons beyond {MAX_RELATIVE_HORIZON:g} are refused)")
        return
    per_family = 8 if args.quick else args.per_family
    if args.synthetic_best:
        print_synthetic_best(per_family)
        print(f"({time.perf_counter() - started:.0f} s)")
        return
    synthetic = run(synthetic_curves(per_family, seed=1), seed=1, generations_truth=args.generations_truth)
    synthetic["set"] = "synthetic"
    results = [synthetic]
    if not args.quick:
        real = run(qlearning_pbt_curves(seeds=tuple(args.pbt_seeds)), seed=2, generations_truth=args.generations_truth)
        real["kind"] = real["family"].str.split(" ").str[-1]
        real["environment"] = real["family"].str.split(" ").str[0]
        real["set"] = "Q-learning PBT"
        results.append(real)
    cases = pd.concat(results, ignore_index=True)
    pd.set_option("display.width", 200)
    pd.set_option("display.float_format", lambda v: f"{v:.3f}")
    print(f"synthetic curves: {per_family} per family ({', '.join(FAMILIES)}), seed 1")
    print(f"a target counts as reached when the {args.generations_truth} score reaches it\n")
    print(table(cases, "set").to_string(index=False), end="\n\n")
    print("90% intervals by a bootstrap over runs (a real curve's run; a synthetic curve is its own):")
    print(intervals(cases, "set").to_string(index=False), end="\n\n")
    print(table(synthetic, "family").to_string(index=False), end="\n\n")
    if not args.quick:
        print(table(real, "kind").to_string(index=False), end="\n\n")
        print(intervals(real, "kind").to_string(index=False), end="\n\n")
        print(table(real, "environment").to_string(index=False), end="\n\n")
        print(intervals(real, "environment").to_string(index=False), end="\n\n")
    print(
        f"CPU seconds per fit + forecast: median {cases['seconds'].median():.3f}, max {cases['seconds'].max():.3f}; "
        f"whole run {time.perf_counter() - started:.0f} s wall, {time.process_time():.0f} s CPU"
    )


if __name__ == "__main__":
    main()
