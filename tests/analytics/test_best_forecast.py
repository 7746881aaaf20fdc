"""The recent-maximum forecast of the population's best score against hand-computed values.

The best score of most tests rises by 2 a generation with a zigzag: b_g = 2g + 0.3 (-1)^g at
generations g = 1..12 (1.7, 4.3, 5.7, ..., 21.7, 24.3). Its last 10 (g = 3..12) peak at 24.3, the
last. Their Theil-Sen slope is 2: of the 45 pairwise slopes, the 20 between generations of the same
parity are exactly 2, 15 are above and 10 below. The second differences are +-1.2 around a median of
0, so the robust noise is s = 1.4826 * 1.2 / sqrt(6) = 0.7263. The trend is damped with
tau = 0.1 * 12 = 1.2 generations: expected(12 + h) = 24.3 + 2.4 (1 - exp(-h / 1.2)).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from elitemon.analytics.best_forecast import _CALIBRATION, PASSAGE_LEVELS, forecast_best
from elitemon.analytics.convergence import forecast_target
from elitemon.analytics.learning_curves import NothingToExtrapolate

ZIGZAG = pd.DataFrame({"best": [2.0 * g + 0.3 * (-1) ** g for g in range(1, 13)]}, index=range(1, 13))
NOISE = 1.4826 * 1.2 / math.sqrt(6.0)


def test_the_level_is_the_recent_maximum_and_the_trend_its_theil_sen_slope() -> None:
    forecast = forecast_best(ZIGZAG)

    assert (forecast.recent_max, forecast.trend, forecast.best_score) == pytest.approx((24.3, 2.0, 24.3))
    assert forecast.noise == pytest.approx(NOISE)
    assert (forecast.span, forecast.max_generation) == (12, 60)  # 4 observed spans ahead


def test_the_trend_is_damped_from_the_recent_maximum() -> None:
    forecast = forecast_best(ZIGZAG)
    h = np.array([0.0, 1.0, 3.0, 48.0])

    np.testing.assert_allclose(forecast.expected(12 + h), 24.3 + 2.4 * (1 - np.exp(-h / 1.2)))
    assert float(forecast.expected(60)) == pytest.approx(24.3 + 2.4)  # m tau more at most: all of it by then


def test_an_early_lucky_best_is_reached_but_is_not_the_level() -> None:
    lucky = ZIGZAG.copy()
    lucky.loc[2, "best"] = 30.0  # two generations before the last ten
    forecast = forecast_best(lucky)

    assert (forecast.recent_max, forecast.best_score) == pytest.approx((24.3, 30.0))
    assert forecast_target(forecast, 29.0).generations_remaining == 0  # a stop condition would have fired


def test_the_80_percent_interval_is_the_calibrated_quantiles_times_the_noise() -> None:
    forecast = forecast_best(ZIGZAG)
    q10, q50, q90 = _CALIBRATION @ [1.0, 0.5]  # six generations ahead of twelve observed

    low, high = forecast.interval(18)
    expected = float(forecast.expected(18))
    assert (float(low), float(high)) == pytest.approx((expected + NOISE * q10, expected + NOISE * q90))
    assert float(forecast.quantile(18, 0.5)) == pytest.approx(expected + NOISE * q50)


def test_generations_to_a_target_are_read_at_the_calibrated_passage_levels() -> None:
    forecast = forecast_best(ZIGZAG)
    reached = forecast.probability_reached(26.0, np.arange(13.0, 61.0))  # P(a best >= 26 by 13 .. 60)

    def first(level: float) -> int | None:  # generations after 12 at which the probability first reaches it
        hits = np.flatnonzero(reached >= level)
        return int(hits[0]) + 1 if hits.size else None

    result = forecast_target(forecast, 26.0)
    low, middle, high = PASSAGE_LEVELS
    assert (result.generations_remaining_low, result.generations_remaining) == (first(low), first(middle))
    assert result.generations_remaining_high == first(high)
    # Computed, not by hand (400 passage paths): here 1, 2 and 5 generations ahead.
    assert (first(low), first(middle), first(high)) == (1, 2, 5)


def test_a_best_climbs_steadily_when_its_trend_is_more_than_one_noise_a_generation() -> None:
    scattering = pd.DataFrame({"best": [2.0 * g + 3.0 * (-1) ** g for g in range(1, 13)]}, index=range(1, 13))
    falling = pd.DataFrame({"best": -ZIGZAG["best"].to_numpy()}, index=ZIGZAG.index)

    assert forecast_best(ZIGZAG).climbs_steadily  # 2 a generation, noise 0.73: 2.75 noise units
    assert not forecast_best(scattering).climbs_steadily  # 2 a generation, noise 7.26: 0.28
    assert not forecast_best(falling).climbs_steadily


def test_fewer_than_ten_generations_are_all_recent_and_missing_scores_are_left_out() -> None:
    short = ZIGZAG.head(9).copy()  # 1.7, 4.3, ..., 17.7 at generations 1..9
    short.loc[10, "best"] = np.nan  # a generation without a best score yet
    forecast = forecast_best(short)

    assert (forecast.last_generation, forecast.recent_max, forecast.trend) == pytest.approx((9, 17.7, 2.0))


def test_a_shuffled_index_is_read_in_generation_order() -> None:
    forecast = forecast_best(ZIGZAG.iloc[::-1])

    assert (forecast.last_generation, forecast.recent_max, forecast.trend) == pytest.approx((12, 24.3, 2.0))


def test_a_falling_best_is_forecast_to_keep_falling_for_a_while() -> None:
    falling = pd.DataFrame({"best": -ZIGZAG["best"].to_numpy()}, index=ZIGZAG.index)  # -1.7, -4.3, ..., -24.3
    forecast = forecast_best(falling)

    # The level is the best of the last ten, -5.7 at generation 3, and the trend -2 a generation.
    assert (forecast.recent_max, forecast.trend) == pytest.approx((-5.7, -2.0))
    assert float(forecast.expected(60)) == pytest.approx(-5.7 - 2.4)


def test_the_generation_numbers_set_the_span_and_the_slope() -> None:
    every_other = pd.DataFrame({"best": ZIGZAG["best"].to_numpy()}, index=range(2, 26, 2))
    forecast = forecast_best(every_other)

    assert (forecast.first_generation, forecast.last_generation, forecast.span) == (2, 24, 23)
    assert forecast.trend == pytest.approx(1.0)  # 2 a report, one report every 2 generations


@pytest.mark.parametrize(
    ("progress", "error", "message"),
    [
        (
            ZIGZAG.head(7),
            ValueError,
            "progress: best scores: a forecast needs at least 8 scores that are not NaN, but there are 7",
        ),
        (
            pd.DataFrame({"best": [0.0] * 10}, index=range(1, 11)),
            NothingToExtrapolate,
            "scores are all 0 over generations 1 to 10",
        ),
        (pd.DataFrame({"mean": [1.0] * 10}), ValueError, "best"),
        (
            pd.DataFrame({"best": np.arange(10.0)}, index=[1, 1, *range(2, 10)]),
            ValueError,
            r"progress: generations \(the index\) must not repeat",
        ),
        (pd.DataFrame({"best": [*np.arange(9.0), np.inf]}), ValueError, "progress: best scores must not be infinite"),
    ],
)
def test_what_cannot_be_forecast_is_refused_with_the_reason(progress: pd.DataFrame, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        forecast_best(progress)


def test_generations_past_the_forecast_range_are_refused() -> None:
    with pytest.raises(ValueError, match="generations past 60"):
        forecast_best(ZIGZAG).expected(61)
