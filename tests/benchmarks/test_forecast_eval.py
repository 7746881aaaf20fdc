"""The forecast evaluation's columns that say how much room there is to beat the last value."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from benchmarks._curves import Curve, Population
from elitemon.analytics.best_forecast import BestForecast, forecast_best
from elitemon.analytics.learning_curves import fit_learning_curve

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def forecast_eval(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The script imports its sibling `_curves` as a top-level module, as it does when run."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import forecast_eval

    return forecast_eval


def case_row(forecast_eval: ModuleType, *, run: str = "run", **fields: object) -> dict[str, object]:
    """One row of `forecast_eval.run`'s frame: a case forecast (not abstained) in `run`, with
    `fields` and 0 in every other field."""
    zeros = {field.name: 0.0 for field in dataclasses.fields(forecast_eval.Case)}
    return {**dataclasses.asdict(forecast_eval.Case(**{**zeros, **fields})), "abstained": False, "run": run}


def test_a_case_carries_the_nowcast_error_and_both_changes_in_units_of_the_truths_range(
    forecast_eval: ModuleType,
) -> None:
    length = 40
    generations = np.arange(1, length + 1, dtype=float)

    def trend(g: np.ndarray) -> np.ndarray:
        return 10.0 - 8.0 * np.exp(-np.asarray(g, dtype=float) / 15.0)

    wiggle = 0.05 * np.where(generations % 2 == 0, 1.0, -1.0)
    curve = Curve("exponential", trend(generations) + wiggle, trend)

    (case,) = forecast_eval.evaluate(curve, 0.5, np.random.default_rng(0))  # no population: the ensemble only

    # By hand: 20 of 40 generations observed; the truth runs from 10 - 8 e^(-1/15) to 10 - 8 e^(-40/15),
    # a range of 8 (e^(-1/15) - e^(-40/15)) = 6.92819, and rises 8 (e^(-20/15) - e^(-40/15)) = 1.55291
    # after generation 20: 0.224144 of the range.
    assert case.final_error_nowcast == pytest.approx(0.224144, abs=1e-6)
    assert case.true_change == pytest.approx(0.224144, abs=1e-6)
    fit = fit_learning_curve(generations[:20], curve.scores[:20])
    assert case.predicted_change == pytest.approx(float(fit.expected(40.0) - fit.expected(20.0)) / 6.92819, rel=1e-5)
    assert case.predicted_change > 0.1  # the fit sees the rise go on


def test_the_table_divides_the_nowcast_error_by_the_last_values_and_rank_correlates_the_changes(
    forecast_eval: ModuleType,
) -> None:
    cases = pd.DataFrame(
        [
            case_row(
                forecast_eval,
                family="f",
                method="ensemble",
                fraction=0.3,
                final_error=0.1,
                final_error_linear=0.2,
                final_error_nowcast=nowcast,
                final_error_last=0.4,
                predicted_change=predicted,
                true_change=true,
                target_reached=False,
            )
            for nowcast, predicted, true in [(0.1, 0.0, 0.0), (0.2, 1.0, 0.1), (0.3, 2.0, 1.0), (0.4, 3.0, 10.0)]
        ]
    )

    row = forecast_eval.table(cases, "family").iloc[0]

    assert row["now/last"] == pytest.approx(0.25 / 0.4)
    # The changes rise together, though not in proportion: the rank correlation is 1 (Pearson's is 0.82).
    assert row["change rho"] == pytest.approx(1.0)


def test_a_curve_from_a_population_is_also_forecast_by_the_population_on_the_same_target(
    forecast_eval: ModuleType,
) -> None:
    # Four agents 0.1 g .. 0.4 g over 40 generations, one exploit per 10 agent-generations, agent
    # a's truth rising to 3.5. Cut at 20: the latest scores are 2, 4, 6, 8, their mean U = 5.
    generations = np.arange(1, 41, dtype=float)
    scores = np.outer(generations, [0.1, 0.2, 0.3, 0.4])
    population = Population(scores, exploit_generations=np.repeat([5, 10, 15, 20, 25], 2))

    def trend(g: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(g, dtype=float), [1, 40], [0.1, 3.5])

    curve = Curve("toy agent", scores[:, 0], trend, population, "agent0")

    ensemble, aware = forecast_eval.evaluate(curve, 0.5, np.random.default_rng(0))

    assert (ensemble.method, aware.method) == ("ensemble", "population")
    assert population.exploit_rate(20) == pytest.approx(8 / 80)
    # The same target for both: the same truth of generations to it and the same baselines.
    assert aware.generations_error_last == ensemble.generations_error_last
    assert aware.final_error_last == ensemble.final_error_last
    # w = 1 - exp(-2 * 0.1 * 20) = 0.981684 closes agent a's gap (3) to 4.945052 at 40, and the upper
    # half's trend (0.35 g: b = 0.35, tau = 20 / 4 = 5) adds 0.35 * 5 (1 - exp(-4)) = 1.717948: 6.663000,
    # where the truth is 3.5, over a range of 3.4.
    assert aware.final_error == pytest.approx((6.663000 - 3.5) / 3.4, abs=1e-5)


def test_a_steadily_climbing_best_is_scored_as_the_report_forecasts_it_and_by_the_recent_maximum(
    forecast_eval: ModuleType,
) -> None:
    # 0.5 g -+ 0.05 over 40 generations: a best that climbs 0.5 a generation with a noise of 0.12,
    # a steady climber (more than one noise a generation), taken as a population's best.
    generations = np.arange(1, 41, dtype=float)
    curve = Curve(
        "toy best", 0.5 * generations + 0.05 * (-1) ** generations, lambda g: 0.5 * np.asarray(g), member="best"
    )

    def methods(curve: Curve) -> dict[str, object]:
        def recent_max_always(n: int) -> BestForecast:
            return forecast_best(pd.DataFrame({"best": curve.scores[:n]}, index=range(1, n + 1)))

        return {**forecast_eval._forecasters(curve), "recent max, always": recent_max_always}

    cases = forecast_eval.run([curve], seed=0, methods=methods).set_index(["method", "fraction"])

    # The report's forecast of such a best is its learning curve: the ensemble's, to the last digit.
    for column in ("final_error", "generations_error", "final_covered"):
        assert (cases.loc[("recent max", 0.5), column] == cases.loc[("ensemble", 0.5), column]).all()
    # Its recent maximum's damped trend stops the climb short: at 50%, 20 generations ahead, it
    # adds at most m tau = 0.5 * 2 = 1 to 10.05, where the line is at 20.
    assert cases.loc[("recent max, always", 0.5), "final_error"] > 0.4
    assert cases.loc[("ensemble", 0.5), "final_error"] < 0.05
    # Every method on the same target: the same baselines.
    assert cases.xs(0.5, level="fraction")["generations_error_linear"].nunique() == 1


def test_the_bootstrap_intervals_resample_whole_runs_not_single_forecasts(forecast_eval: ModuleType) -> None:
    # Run a: 9 forecasts, all covered; run b: 1, not covered. Coverage 9 / 10 = 0.90. Resampling runs,
    # a draw of b twice (probability 1/4, above the 5% tail) covers none: the interval reaches 0.
    # Resampling the 10 forecasts one by one would have put the lower end near 0.8.
    cases = pd.DataFrame(
        [
            case_row(
                forecast_eval,
                run=run,
                family="f",
                method="population",
                fraction=0.5,
                final_error=1.0,
                final_error_last=2.0,
                final_error_linear=4.0,
                final_covered=covered,
                target_reached=False,
            )
            for run, covered in [("a", True)] * 9 + [("b", False)]
        ]
    )

    row = forecast_eval.intervals(cases, "family").iloc[0]

    assert row["runs"] == 2
    assert row["final cover80"] == "0.90 [0.00, 1.00]"
    assert row["/last"] == "0.50 [0.50, 0.50]"  # every run's ratio is 1/2, however they are drawn
    assert row["gens cover80"] == "-"  # no target was reached
    assert forecast_eval.table(cases, "family").iloc[0]["final cover80"] == pytest.approx(0.9)


def test_every_case_names_its_run_and_a_curve_without_one_is_its_own(forecast_eval: ModuleType) -> None:
    generations = np.arange(1, 41, dtype=float)
    scores = np.outer(generations, [0.1, 0.2, 0.3, 0.4])
    population = Population(scores, exploit_generations=np.repeat([5, 10, 15, 20, 25], 2))
    curves = [
        Curve("toy agent", scores[:, 0], lambda g: 0.1 * np.asarray(g), population, "agent0", "toy seed 0"),
        Curve("toy agent", scores[:, 1], lambda g: 0.2 * np.asarray(g), population, "agent1", "toy seed 0"),
        Curve("exponential", 10.0 - 8.0 * np.exp(-generations / 15.0), lambda g: 10.0 - 8.0 * np.exp(-g / 15.0)),
    ]

    cases = forecast_eval.run(curves, seed=0)

    assert set(cases["run"]) == {"toy seed 0", "curve 2"}
    assert (cases["run"] == "toy seed 0").sum() == 2 * 2 * len(forecast_eval.FRACTIONS)  # 2 curves, 2 methods
