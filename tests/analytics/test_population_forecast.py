"""The population-aware forecast against hand-computed values.

The population of most tests: four agents whose scores rise in straight lines, 0.1 g, 0.2 g, 0.3 g
and 0.4 g at generations g = 1..10. At generation 10 the latest scores are 1, 2, 3, 4: their mean is
U = 2.5; their upper half is {3, 4}, whose standard deviation is 0.5. The best score per
generation, 0.4 g, is a straight line, whose robust noise is 0; so an agent's scale is s = 0.5, and each
agent's own noise is 0 too. The upper half's mean at every generation is 0.35 g: its trend is
b = 0.35 per generation, damped with tau = 0.25 * 10 = 2.5 generations, so it adds
0.35 * 2.5 (1 - exp(-h / 2.5)) = 0.875 (1 - exp(-h / 2.5)) by h generations ahead.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from elitemon.analytics.convergence import forecast_target
from elitemon.analytics.learning_curves import MAX_RELATIVE_HORIZON
from elitemon.analytics.population_forecast import (
    _CALIBRATION,
    PASSAGE_LEVELS,
    exploit_rate,
    forecast_population,
)
from tests.conftest import store_frame


def lines(slopes: dict[str, float], generations: int = 10) -> pd.DataFrame:
    """The agent_scores table of agents scoring slope * g at generations 1..`generations`."""
    return pd.DataFrame(
        [
            {"agent": agent, "generation": g, "score": slope * g}
            for agent, slope in slopes.items()
            for g in range(1, generations + 1)
        ]
    )


FOUR = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}


def test_the_forecast_starts_from_the_latest_scores_their_mean_and_the_upper_halfs_spread() -> None:
    forecast = forecast_population(lines(FOUR), exploit_rate=0.05)

    assert forecast.last_generation == 10
    assert {name: f.latest for name, f in forecast.agents.items()} == pytest.approx({"a": 1, "b": 2, "c": 3, "d": 4})
    assert forecast.agents["a"].population_level == pytest.approx(2.5)
    assert forecast.agents["a"].scale == pytest.approx(0.5)
    assert forecast.agents["a"].best_score == pytest.approx(1.0)
    assert forecast.agents["a"].max_generation == 50  # 4 observed spans of 10 generations ahead


def test_an_agent_closes_its_gap_to_a_population_that_has_stopped_rising_as_exploits_arrive() -> None:
    flat = pd.DataFrame(
        [
            {"agent": agent, "generation": g, "score": level}
            for agent, level in zip("abcd", (1, 2, 3, 4), strict=True)
            for g in range(1, 11)
        ]
    )
    agents = forecast_population(flat, exploit_rate=0.05).agents

    assert agents["a"].population_trend == 0.0
    # h = 10 generations at 0.05 exploits per agent per generation: w = 1 - exp(-2 * 0.05 * 10) = 0.6321206.
    assert agents["a"].expected(20) == pytest.approx(1 + 0.6321206 * 1.5, abs=1e-6)  # 1.948181
    assert agents["d"].expected(20) == pytest.approx(4 - 0.6321206 * 1.5, abs=1e-6)  # a lucky top score falls back
    assert agents["a"].expected(10) == pytest.approx(1.0)  # no time, no exploit
    assert agents["a"].expected(50) == pytest.approx(2.5 - 1.5 * math.exp(-4), abs=1e-9)


def test_an_agent_whose_evaluation_collapsed_does_not_drag_the_populations_level() -> None:
    levels = (-100, 1, 2, 3, 4, 5, 6, 7)
    flat = pd.DataFrame(
        [{"agent": f"a{i}", "generation": g, "score": level} for i, level in enumerate(levels) for g in range(1, 11)]
    )
    forecast = forecast_population(flat, exploit_rate=0.05)

    # One of eight left out at each end: U = mean(1..6) = 3.5, where the mean of all is -9.
    assert forecast.mean.population_level == pytest.approx(3.5)
    assert forecast.mean.latest == pytest.approx(-9.0)
    # The mean rises as exploits replace the collapsed agent: w = 0.6321206 ten generations ahead.
    assert float(forecast.mean.expected(20)) == pytest.approx(-9 + 0.6321206 * 12.5, abs=1e-6)
    assert float(forecast.agents["a7"].expected(20)) == pytest.approx(7 - 0.6321206 * 3.5, abs=1e-6)


def test_every_agent_shares_the_upper_halfs_damped_trend() -> None:
    agents = forecast_population(lines(FOUR), exploit_rate=0.05).agents

    assert agents["a"].population_trend == pytest.approx(0.35)
    assert agents["a"].trend_memory == pytest.approx(2.5)
    # h = 10: the gap closes by 0.6321206 and the trend adds 0.875 (1 - exp(-4)) = 0.858973.
    assert agents["a"].expected(20) == pytest.approx(1 + 0.6321206 * 1.5 + 0.858973, abs=1e-6)
    assert agents["d"].expected(20) == pytest.approx(4 - 0.6321206 * 1.5 + 0.858973, abs=1e-6)
    # Far ahead the trend has added all it will, b tau = 0.875.
    assert agents["a"].expected(50) == pytest.approx(2.5 - 1.5 * math.exp(-4) + 0.875 * (1 - math.exp(-16)))


def test_without_exploits_every_agent_only_follows_the_trend() -> None:
    agents = forecast_population(lines(FOUR), exploit_rate=0.0).agents

    trend = 0.875 * (1 - math.exp(-30 / 2.5))
    assert [float(f.expected(40)) for f in agents.values()] == pytest.approx(
        [1 + trend, 2 + trend, 3 + trend, 4 + trend]
    )


def test_the_mean_is_forecast_as_the_mean_of_the_agents() -> None:
    forecast = forecast_population(lines(FOUR), exploit_rate=0.05)
    generations = np.array([10, 13, 25, 50])

    by_agent = np.mean([f.expected(generations) for f in forecast.agents.values()], axis=0)
    assert forecast.mean.latest == pytest.approx(2.5)
    np.testing.assert_allclose(forecast.mean.expected(generations), by_agent)


def test_the_means_scale_is_the_standard_error_of_the_upper_halfs_mean() -> None:
    # The upper half {3, 4} has a spread of 0.5 over 2 agents, and the best score no noise.
    forecast = forecast_population(lines(FOUR), exploit_rate=0.05)

    assert forecast.mean.scale == pytest.approx(0.5 / math.sqrt(2))
    assert forecast.agents["d"].scale == pytest.approx(0.5)
    low, high = forecast.mean.interval(20)
    q10, _, q90 = _CALIBRATION @ [1.0, 0.5, 1.0]  # rho h = 0.5 and h / span = 1, as below
    assert float(high - low) == pytest.approx(0.5 / math.sqrt(2) * (q90 - q10))


def test_the_80_percent_interval_is_the_calibrated_quantiles_times_the_scale() -> None:
    agent = forecast_population(lines(FOUR), exploit_rate=0.05).agents["a"]
    # Ten generations ahead of ten observed: rho h = 0.5 expected exploits, h / span = 1.
    q10, q50, q90 = _CALIBRATION @ [1.0, 0.5, 1.0]

    low, high = agent.interval(20)
    expected = float(agent.expected(20))
    assert (float(low), float(high)) == pytest.approx((expected + 0.5 * q10, expected + 0.5 * q90))
    assert float(agent.quantile(20, 0.5)) == pytest.approx(expected + 0.5 * q50)


def test_the_calibrated_quantiles_stay_in_order_over_the_whole_forecast_range() -> None:
    # Linear in rho h >= 0 and h / span in [0, MAX_RELATIVE_HORIZON]: in order at the range's two
    # ends with rho h = 0, and not drawing together as rho h grows, means in order everywhere.
    gaps = np.diff(_CALIBRATION, axis=0)  # rows q50 - q10, q90 - q50
    for relative in (0.0, MAX_RELATIVE_HORIZON):
        assert np.all(gaps @ [1.0, 0.0, relative] > 0)
    assert np.all(gaps[:, 1] >= 0)
    # Nor does the 80% interval narrow as the horizon grows, with exploits or without.
    assert np.all(gaps.sum(axis=0)[1:] >= 0)


def test_a_weak_agent_likely_reaches_a_target_above_it_only_through_exploits() -> None:
    exploited = forecast_population(lines(FOUR), exploit_rate=0.05).agents["a"]
    alone = forecast_population(lines(FOUR), exploit_rate=0.0).agents["a"]

    # 20 generations ahead: w = 1 - exp(-2) = 0.865 and the trend adds 0.875 (1 - exp(-8)), so agent
    # a is expected at 1 + 0.865 * 1.5 + 0.875 = 3.17 with exploits; without, at 1 + 0.875 = 1.87,
    # where only its highest paths, above the top of the 80% interval (3.27), reach 3.5.
    assert float(exploited.expected(30)) == pytest.approx(3.171704, abs=1e-6)
    assert float(alone.expected(30)) == pytest.approx(1.874706, abs=1e-6)
    assert forecast_target(exploited, 3.5, horizon_generations=20).probability_within_horizon > 0.5
    assert forecast_target(alone, 3.5, horizon_generations=20).probability_within_horizon < 0.1
    assert forecast_target(alone, 0.9).generations_remaining == 0  # agent a's own best, 1.0, reached it


def test_generations_to_a_target_are_read_at_the_calibrated_passage_levels() -> None:
    agent = forecast_population(lines(FOUR), exploit_rate=0.05).agents["a"]
    reached = agent.probability_reached(3.5, np.arange(11.0, 51.0))  # P(a score >= 3.5 by 11 .. 50)

    forecast = forecast_target(agent, 3.5)

    def first(level: float) -> int:  # generations after 10 at which the probability first reaches it
        return int(np.flatnonzero(reached >= level)[0]) + 1

    low, middle, high = PASSAGE_LEVELS
    assert (low, middle, high) != (0.1, 0.5, 0.9)
    assert forecast.generations_remaining_low == first(low)
    assert forecast.generations_remaining == first(middle)
    assert forecast.generations_remaining_high == first(high)
    # Levels below 0.1 and 0.5 start the interval and put the median earlier than 0.1 and 0.5 of the
    # model's passage probability would: here 3 generations ahead against 6, and 11 against 16.
    assert (first(low), first(0.1), first(middle), first(0.5)) == (3, 6, 11, 16)
    # The probability itself is the model's, unrecalibrated.
    assert forecast_target(agent, 3.5, horizon_generations=20).probability_within_horizon == pytest.approx(reached[19])


def test_the_expected_share_of_agents_at_a_score_counts_those_whose_forecast_reaches_it() -> None:
    # Latest 1, 2, 4, 4: U = 2.75; the upper half is {4, 4}, with no spread, so the scale is 0. The
    # upper half's mean is 0.4 g: b tau = 0.4 * 2.5 = 1, so the trend adds 1 - exp(-h / 2.5).
    slopes = {"a": 0.1, "b": 0.2, "c": 0.4, "d": 0.4}

    # 5 generations ahead without exploits: + 0.865, so b stays below 3 (2.865) and c, d are above.
    assert forecast_population(lines(slopes), exploit_rate=0.0).expected_share_at_least(3.0, 15) == 0.5
    # 40 generations of 0.05 exploits: w = 1 - exp(-4) = 0.982; the lowest, agent a, is then at
    # 1 + 0.982 * 1.75 + 1 = 3.72, and c and d, falling back, at 4 - 0.982 * 1.25 + 1 = 3.77.
    assert forecast_population(lines(slopes), exploit_rate=0.05).expected_share_at_least(3.0, 50) == 1.0


def test_with_no_scale_a_forecast_at_the_value_counts_as_reaching_it() -> None:
    settled = pd.DataFrame([{"agent": agent, "generation": g, "score": 5.0} for agent in "abcd" for g in range(1, 11)])

    assert forecast_population(settled, exploit_rate=0.05).expected_share_at_least(5.0, 20) == 1.0


def test_the_probability_of_a_score_at_least_a_quantile_is_its_complement() -> None:
    agent = forecast_population(lines(FOUR), exploit_rate=0.05).agents["a"]  # scale 0.5

    for probability in (0.1, 0.5, 0.9):
        quantile = float(agent.quantile(20, probability))
        assert float(agent.probability_at_least(quantile, 20)) == pytest.approx(1 - probability, abs=1e-9)


def test_the_mean_starts_from_every_agents_latest_score_when_one_has_not_reported_the_last_generation() -> None:
    scores = lines(FOUR)
    scores = scores[(scores["agent"] != "d") | (scores["generation"] <= 8)]  # d's latest: 3.2, at 8

    forecast = forecast_population(scores, exploit_rate=0.05)

    assert forecast.last_generation == 10  # 3 of 4 agents reported generations 9 and 10
    assert forecast.agents["d"].latest == pytest.approx(3.2)
    assert forecast.mean.latest == pytest.approx((1 + 2 + 3 + 3.2) / 4)
    generations = np.array([10, 15, 30])
    by_agent = np.mean([f.expected(generations) for f in forecast.agents.values()], axis=0)
    np.testing.assert_allclose(forecast.mean.expected(generations), by_agent)


def test_an_agents_report_of_a_generation_too_few_agents_have_reached_is_not_its_latest() -> None:
    scores = pd.concat([lines(FOUR), pd.DataFrame([{"agent": "d", "generation": 11, "score": 9.0}])])

    forecast = forecast_population(scores, exploit_rate=0.05)

    assert forecast.last_generation == 10
    assert forecast.agents["d"].latest == pytest.approx(4.0)


def test_exploit_rate_is_exploits_per_reported_agent_generation() -> None:
    def exploit(generation: int) -> dict:
        payload = json.dumps({"target_generation": generation, "source_generation": generation})
        return {
            "ts": 1e9 + generation,
            "type": "exploit",
            "agent": "a",
            "source_agent": "d",
            "generation": generation,
            "payload": payload,
        }

    completed = {"ts": 1e9 + 6, "type": "migration_completed", "agent": "a", "generation": 6, "payload": "{}"}
    events = store_frame("events", [exploit(5), exploit(5), completed, exploit(10)])

    assert exploit_rate(lines(FOUR), events) == pytest.approx(3 / 40)
    assert exploit_rate(lines(FOUR), events, up_to_generation=5) == pytest.approx(2 / 20)


@pytest.mark.parametrize(
    ("scores", "rate", "message"),
    [
        (lines(FOUR), -0.1, "exploit_rate must be a finite number >= 0"),
        (lines(FOUR), float("nan"), "exploit_rate must be a finite number >= 0"),
        (lines(FOUR, generations=7), 0.05, "needs 8 complete generations, but there are 7"),
        (lines(FOUR).drop(columns="score"), 0.05, "scores is missing columns"),
    ],
)
def test_bad_input_is_refused_with_the_reason(scores: pd.DataFrame, rate: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        forecast_population(scores, exploit_rate=rate)


def test_generations_past_the_forecast_range_are_refused() -> None:
    agent = forecast_population(lines(FOUR), exploit_rate=0.05).agents["a"]

    with pytest.raises(ValueError, match="generations past 50"):
        agent.expected(51)
