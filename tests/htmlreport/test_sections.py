"""The report's info tuples against a small run worked out by hand.

The run: four agents, generations 1-6, one report of each metric per agent and generation at
ts = 10 g + i seconds after T0 (i = 0, 1, 2, 3 for a, b, c, d). Scores (mean_return):

    a  1  2  3  4    5    6
    b  2  3  4  5    6    7
    c  0  1  2 | 5.5  6.5  8      exploited at generation 3 (ts 35), copying b at generation 3
    d  3  3  3  3    3    3

Configs at T0 (generation 0): lr a .1 b .2 c .3 d .4; gamma a .90 b .95 c .99 d .95; seed 11 22 33 44
(a fixed setting the explore step never touches). After the exploit (ts 36, generation 3) c has
lr .24 (b's x 1.2), gamma .95 and seed 22. Every agent reports episodes_per_s = 100.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from elitemon.analytics.best_forecast import forecast_best
from elitemon.analytics.convergence import agent_scores, population_progress
from elitemon.analytics.importance import config_scores, hyperparameter_importance
from elitemon.analytics.learning_curves import fit_learning_curve
from elitemon.analytics.population_forecast import forecast_population
from elitemon.htmlreport._sections import (
    AnomalyRow,
    ExploitArrow,
    LifeSpan,
    LineageRow,
    ParamSeries,
    TargetInfo,
    choose_score_metric,
    choose_throughput_metric,
    get_anomaly_info,
    get_diversity_info,
    get_header_info,
    get_importance_info,
    get_lineage_info,
    get_report_info,
    get_score_info,
    searched_params,
)
from tests.conftest import store_frame

T0 = 1_767_225_600.0  # 2026-01-01 UTC
AGENTS = ("a", "b", "c", "d")
SCORES = {
    "a": (1, 2, 3, 4, 5, 6),
    "b": (2, 3, 4, 5, 6, 7),
    "c": (0, 1, 2, 5.5, 6.5, 8),
    "d": (3, 3, 3, 3, 3, 3),
}
OPERATIONS = {"lr": "* 1.2", "gamma": "resample"}


def sample(agent: str, generation: int, metric: str, value: float) -> dict:
    at = T0 + 10 * generation + AGENTS.index(agent)
    return {
        "ts": at,
        "kind": "agent",
        "node": "n1",
        "source": agent,
        "generation": generation,
        "metric": metric,
        "value": value,
    }


def configs_rows(at: float, agent: str, generation: int, lr: float, gamma: float, seed: float) -> list[dict]:
    return [
        {"ts": at, "agent": agent, "generation": generation, "param": p, "value": v, "text": str(v)}
        for p, v in (("lr", lr), ("gamma", gamma), ("seed", seed))
    ]


def run(generations: int = 6, operations: dict | None = OPERATIONS) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    samples = [
        sample(agent, g, metric, value)
        for agent in AGENTS
        for g in range(1, generations + 1)
        for metric, value in (("mean_return", SCORES[agent][g - 1]), ("episodes_per_s", 100.0))
    ]
    payload = {"source_generation": 3, "target_generation": 3, "operations": operations}
    events = [
        {
            "ts": T0 + 35,
            "type": "exploit",
            "agent": "c",
            "source_agent": "b",
            "node": "n1",
            "source_node": "n1",
            "generation": 3,
            "payload": json.dumps(payload),
        },
        {
            "ts": T0 + 42,
            "type": "migration_completed",
            "agent": "c",
            "generation": 4,
            "payload": json.dumps({"latency_s": 7.0}),
        },
    ]
    configs = (
        configs_rows(T0, "a", 0, 0.1, 0.90, 11)
        + configs_rows(T0, "b", 0, 0.2, 0.95, 22)
        + configs_rows(T0, "c", 0, 0.3, 0.99, 33)
        + configs_rows(T0, "d", 0, 0.4, 0.95, 44)
        + configs_rows(T0 + 36, "c", 3, 0.24, 0.95, 22)
    )
    return store_frame("samples", samples), store_frame("events", events), store_frame("configs", configs)


NO_EVENTS = store_frame("events", [])


@pytest.fixture(scope="module")
def tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return run()


def test_header_counts_agents_generations_best_exploits_and_target(tables):
    samples, events, _ = tables
    header = get_header_info(samples, events, metric="mean_return", target=6.5, title="t")
    assert (header.agents, header.generations, header.first_generation, header.last_generation) == (4, 6, 1, 6)
    assert (header.best_agent, header.best_score) == ("c", 8.0)
    assert (header.exploits, header.migration_success_rate) == (1, 1.0)
    assert header.start == pd.Timestamp(T0 + 10, unit="s", tz="UTC")  # a's generation 1
    assert header.end == pd.Timestamp(T0 + 63, unit="s", tz="UTC")  # d's generation 6
    # Now: a 6, b 7, c 8, d 3 -> b and c meet 6.5; c first did at generation 5 (6.5), b at 6 (7).
    assert header.target == TargetInfo(threshold=6.5, agents_meeting=2, agents=4, first_generation_reached=5)
    assert get_header_info(samples, events, metric="mean_return").target is None


def test_score_per_generation_best_mean_and_p10_p90_band(tables):
    samples, events, _ = tables
    score = get_score_info(samples, events, metric="mean_return", target=7.0)
    assert score.generations == (1, 2, 3, 4, 5, 6)
    assert score.agents == (4,) * 6
    assert score.best == (3, 3, 4, 5.5, 6.5, 8)
    assert score.mean == pytest.approx((1.5, 2.25, 3, 4.375, 5.125, 6))
    # Four values x0 <= .. <= x3, linear percentiles: p10 = x0 + 0.3 (x1 - x0), p90 = x2 + 0.7 (x3 - x2).
    assert score.p10 == pytest.approx((0.3, 1.3, 2.3, 3.3, 3.6, 3.9))
    assert score.p90 == pytest.approx((2.7, 3.0, 3.7, 5.35, 6.35, 7.7))
    assert score.target == 7.0
    assert score.forecast is None
    assert score.note == "a forecast needs 8 complete generations; there are 6"
    assert score.agents_forecast is None
    assert score.agents_note == "a forecast needs 8 complete generations, but there are 6."


def test_forecast_starts_at_the_last_generation_and_runs_past_it():
    # Every agent zigzags by 0.3 around a rise that slows: the best scatters as a maximum does,
    # rather than climbs steadily (which would get the learning curve).
    rows = [
        sample(agent, g, "mean_return", 10 - 9 * 0.8**g + 0.1 * AGENTS.index(agent) + 0.3 * (-1) ** g)
        for agent in AGENTS
        for g in range(1, 13)
    ]
    # The best at generation 12 is 9.98 (agent d's): a target of 10.5 lies ahead.
    score = get_score_info(store_frame("samples", rows), NO_EVENTS, metric="mean_return", target=10.5)
    forecast = score.forecast
    assert forecast is not None and score.note is None
    assert forecast.generations[0] == 12
    assert forecast.generations[-1] >= 12 + 6  # half the observed span (12) ahead, at least
    assert forecast.generations == tuple(range(12, forecast.generations[-1] + 1))
    assert all(lo <= m <= hi for lo, m, hi in zip(forecast.low, forecast.expected, forecast.high, strict=True))
    assert forecast.goal == "target" and forecast.level == 10.5
    assert forecast.remaining is not None and forecast.remaining_high is not None
    assert 0 < forecast.remaining <= forecast.remaining_high
    assert forecast.generations[-1] >= 12 + forecast.remaining_high  # the drawn range covers the crossing
    # Towards a target the drawn forecast is the best's recent maximum's; without one, the learning
    # curve's, which says when the best flattens.
    progress = population_progress(store_frame("samples", rows))
    generations = np.array(forecast.generations, dtype=float)
    assert forecast.expected == pytest.approx(tuple(forecast_best(progress).expected(generations)))
    assert forecast.recent_max == pytest.approx(progress["best"].iloc[-10:].max())
    flat = get_score_info(store_frame("samples", rows), NO_EVENTS, metric="mean_return").forecast
    assert flat is not None and flat.goal == "flat" and flat.recent_max is None
    curve = fit_learning_curve(progress.index.to_numpy(), progress["best"].to_numpy())
    assert flat.expected == pytest.approx(tuple(curve.expected(np.array(flat.generations, dtype=float))))


def test_a_target_met_in_a_generation_not_yet_complete_is_reached_in_the_forecast_too():
    """One agent of a live run reported generation 13 above the target: the header said it was
    reached, the forecast (of the complete generations, up to 12) that it was still ahead."""
    rows = [
        sample(agent, g, "mean_return", 10 - 9 * 0.8**g + 0.1 * AGENTS.index(agent) + 0.3 * (-1) ** g)
        for agent in AGENTS
        for g in range(1, 13)
    ]
    rows.append(sample(AGENTS[0], 13, "mean_return", 10.6))
    score = get_score_info(store_frame("samples", rows), NO_EVENTS, metric="mean_return", target=10.5)
    assert score.forecast is not None and score.forecast.generations[0] == 12
    assert (score.forecast.remaining, score.forecast.remaining_low, score.forecast.remaining_high) == (0, 0, 0)


def test_the_mean_forecast_follows_the_mean_scores_trend_and_exploits_draw_the_agents_to_it():
    rows = [
        sample(agent, g, "mean_return", 10 - 9 * 0.8**g + AGENTS.index(agent)) for agent in AGENTS for g in range(1, 13)
    ]
    exploits = [
        {"ts": T0 + 10 * g, "type": "exploit", "agent": "a", "source_agent": "d", "generation": g, "payload": "{}"}
        for g in (4, 8, 12)
    ]
    samples = store_frame("samples", rows)

    pulled = get_score_info(samples, store_frame("events", exploits), metric="mean_return", target=11.0)
    alone = get_score_info(samples, NO_EVENTS, metric="mean_return", target=11.0)

    forecast = pulled.agents_forecast
    assert forecast is not None and pulled.agents_note is None
    assert forecast.exploit_rate == pytest.approx(3 / 48)  # 3 exploits over 4 agents x 12 generations
    assert pulled.forecast is not None and forecast.generations == pulled.forecast.generations
    assert all(lo <= m <= hi for lo, m, hi in zip(forecast.low, forecast.expected, forecast.high, strict=True))
    assert forecast.expected[-1] > forecast.expected[0]
    # The line is the expected score, the point forecast benchmarks/forecast_eval.py scores; the
    # band's median sits apart from it wherever the calibration's median is not 0.
    direct = forecast_population(agent_scores(samples), exploit_rate=3 / 48).mean
    generations = np.array(forecast.generations, dtype=float)
    assert forecast.expected == pytest.approx(tuple(direct.expected(generations)))
    assert abs(forecast.expected[-1] - float(direct.quantile(generations[-1], 0.5))) > 0.01
    # Latest scores 9.37 + 0, 1, 2, 3, whose mean (10.87) the trend lifts above the target 11: d
    # (12.37) and c (11.37) are above it, a (9.37) far below, and b (10.37) below by less than the
    # trend and the spread may lift it. Without exploits each agent only shares the trend; with
    # them, all are drawn towards the rising mean, a and b up across the target.
    assert alone.agents_forecast is not None and alone.agents_forecast.exploit_rate == 0.0
    assert 0.4 < alone.agents_forecast.share_at_target < 0.85
    assert forecast.share_at_target > alone.agents_forecast.share_at_target


def test_a_best_score_that_has_not_moved_gets_a_note_instead_of_a_forecast():
    rows = [sample(agent, g, "mean_return", 0.0) for agent in AGENTS for g in range(1, 13)]
    score = get_score_info(store_frame("samples", rows), NO_EVENTS, metric="mean_return", target=0.7)
    assert score.forecast is None
    assert score.note is not None and score.note.startswith("scores are all 0 over generations 1 to 12")


def test_diversity_overall_and_per_parameter_at_each_config_generation(tables):
    _, events, configs = tables
    params = searched_params(configs, events)
    assert params == ("gamma", "lr")  # seed is carried in the config but never explored
    diversity = get_diversity_info(configs, params=params)
    assert diversity.generations == (0, 3)
    # gamma over its range [.90, .99]: generation 0, u = (0, 5/9, 1, 5/9): sqrt(12) std = 1.23, capped
    # to 1; generation 3, u = (0, 5/9, 5/9, 5/9): sqrt(12 * 300/5184) = 5/6. lr is spread enough to stay 1.
    assert diversity.parameters == (
        ParamSeries("gamma", "linear", pytest.approx((1.0, 5 / 6))),
        ParamSeries("lr", "linear", pytest.approx((1.0, 1.0))),
    )
    assert diversity.overall == pytest.approx((1.0, 11 / 12))
    assert diversity.collapsed == ()
    assert diversity.note is None


def test_without_explore_operations_every_parameter_counts():
    _, events, configs = run(operations=None)
    assert searched_params(configs, events) == ("gamma", "lr", "seed")


def test_diversity_without_configs_has_a_note(tables):
    _, _, configs = tables
    info = get_diversity_info(configs.iloc[0:0], params=())
    assert info.generations == () and "no hyperparameters" in info.note


def test_lineage_lives_arrows_and_founders(tables):
    samples, events, _ = tables
    info = get_lineage_info(samples, events, metric="mean_return")
    assert info.agents == AGENTS
    assert info.founders == AGENTS  # c's original life is still drawn, until generation 3
    assert info.lives == (
        LifeSpan("a", 0, 1, 6, "a"),
        LifeSpan("b", 0, 1, 6, "b"),
        LifeSpan("c", 0, 1, 3, "c"),
        LifeSpan("c", 1, 3, 6, "b"),
        LifeSpan("d", 0, 1, 6, "d"),
    )
    assert info.arrows == (ExploitArrow("b", "c", source_generation=3, target_generation=3),)
    assert info.rows == (
        LineageRow("a", exploited=0, copied=0, founder="a", copies_in_chain=0),
        LineageRow("b", exploited=0, copied=1, founder="b", copies_in_chain=0),
        LineageRow("c", exploited=1, copied=0, founder="b", copies_in_chain=1),
        LineageRow("d", exploited=0, copied=0, founder="d", copies_in_chain=0),
    )


def test_importance_uses_the_searched_parameters_and_every_sample(tables):
    samples, _, configs = tables
    info = get_importance_info(samples, configs, metric="mean_return", params=("gamma", "lr"))
    assert info.note is None
    assert info.n_samples == 24  # 4 agents x 6 generations, each matched to the config it trained with
    expected = hyperparameter_importance(
        config_scores(samples, configs[configs["param"].isin(["gamma", "lr"])], score_metric="mean_return")
    )
    assert [(r.param, r.permutation_mean, r.spearman) for r in info.rows] == [
        (p.param, p.permutation_mean, p.spearman) for p in expected.params
    ]
    assert [r.permutation_mean for r in info.rows] == sorted((r.permutation_mean for r in info.rows), reverse=True)
    assert info.test_r2 == expected.test_r2 and info.n_test == expected.n_test


def test_importance_with_too_few_samples_has_a_note():
    samples, _, configs = run(generations=2)
    info = get_importance_info(samples, configs, metric="mean_return", params=("gamma", "lr"))
    assert info.rows == () and info.n_samples == 8
    assert "at least 10" in info.note


def test_anomaly_flags_the_dip_and_keeps_its_stream():
    values = [100.0 + i % 3 for i in range(60)]
    values[45] = 20.0
    rows = [sample("a", g + 1, "episodes_per_s", v) for g, v in enumerate(values)]
    rows += [sample("b", g + 1, "episodes_per_s", 100.0 + g % 2) for g in range(60)]
    info = get_anomaly_info(store_frame("samples", rows), metric="episodes_per_s")
    # A warm-up of min(30, max(10, 60 // 3)) = 20 points, so 40 are scored.
    assert info.rows == (AnomalyRow("a", 60, 40, 1), AnomalyRow("b", 60, 40, 0))
    (stream,) = info.streams  # only streams with flagged points are drawn
    assert stream.agent == "a" and stream.flagged == (45,)
    assert stream.value == tuple(values)
    assert stream.seconds == tuple(10.0 * g for g in range(60))
    assert stream.lower[45] <= stream.expected[45] <= stream.upper[45]


def test_anomaly_on_short_streams_draws_one_unscored_stream(tables):
    samples, _, _ = tables
    info = get_anomaly_info(samples, metric="episodes_per_s")
    assert info.rows == tuple(AnomalyRow(agent, 6, 0, 0) for agent in AGENTS)
    assert [s.agent for s in info.streams] == ["a"]
    assert info.streams[0].seconds == (0.0, 10.0, 20.0, 30.0, 40.0, 50.0)
    assert get_anomaly_info(samples, metric=None).note.startswith("no throughput metric")


def test_score_metric_choice():
    def agent_metrics(*names: str) -> pd.DataFrame:
        return store_frame("samples", [sample("a", 1, name, 1.0) for name in names])

    assert choose_score_metric(agent_metrics("mean_return", "reward")) == "mean_return"
    assert choose_score_metric(agent_metrics("reward", "time_this_iter_s", "episodes_total", "steps_per_s")) == "reward"
    assert choose_score_metric(agent_metrics("reward", "accuracy"), "accuracy") == "accuracy"
    with pytest.raises(ValueError, match=r"--metric.*\['accuracy', 'reward'\]"):
        choose_score_metric(agent_metrics("reward", "accuracy", "time_this_iter_s"))
    with pytest.raises(ValueError, match="'loss' was not reported"):
        choose_score_metric(agent_metrics("reward"), "loss")
    with pytest.raises(ValueError, match="no agent metrics"):
        choose_score_metric(agent_metrics("reward").iloc[0:0])
    assert choose_throughput_metric(agent_metrics("reward", "steps_per_s")) == "steps_per_s"
    assert choose_throughput_metric(agent_metrics("reward")) is None


def test_report_info_ties_the_sections_together(tables):
    samples, events, configs = tables
    info = get_report_info(samples, events, configs, target=6.5, title="run", source="here")
    assert info.header.title == "run" and info.header.source == "here"
    assert info.header.score_metric == info.score.metric == info.importance.score_metric == "mean_return"
    assert info.anomalies.metric == "episodes_per_s"
    assert [p.name for p in info.diversity.parameters] == ["gamma", "lr"]
    with pytest.raises(ValueError, match="target must be a finite number"):
        get_report_info(samples, events, configs, target=float("nan"))
