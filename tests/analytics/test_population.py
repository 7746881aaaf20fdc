"""Population KPIs against hand-computed values; the arithmetic is in the comments."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elitemon import schema
from elitemon.analytics.population import (
    SUMMARY_COLUMNS,
    AgentThroughput,
    Direction,
    ScoreSummary,
    Target,
    ThroughputMethod,
    latest_per_agent,
    score_distribution,
    score_distribution_by_generation,
    summarize,
    target_achievement,
    throughput_from_counter,
    throughput_from_rate,
)

T0 = pd.Timestamp("2026-01-01", tz="UTC")


def make_samples(rows: list[tuple]) -> pd.DataFrame:
    """rows: (seconds after T0, agent, generation, metric, value[, kind])."""
    return pd.DataFrame(
        {
            "ts": pd.Series([T0 + pd.Timedelta(seconds=r[0]) for r in rows], dtype="datetime64[us, UTC]"),
            "kind": [r[5] if len(r) > 5 else "agent" for r in rows],
            "node": "10.0.0.1",
            "source": [r[1] for r in rows],
            "generation": pd.array([r[2] for r in rows], dtype="Int64"),
            "metric": [r[3] for r in rows],
            "value": np.array([r[4] for r in rows], dtype=np.float64),
        }
    )


def make_events(rows: list[tuple]) -> pd.DataFrame:
    """rows: (seconds after T0, type, agent)."""
    return pd.DataFrame(
        {
            "ts": pd.Series([T0 + pd.Timedelta(seconds=r[0]) for r in rows], dtype="datetime64[us, UTC]"),
            "type": [r[1] for r in rows],
            "agent": [r[2] for r in rows],
        }
    )


EMPTY = make_samples([])
R = "mean_return"

# b reports generation 3, is exploited from a source at generation 1, and reports generation 2 again.
HISTORY = make_samples(
    [
        (1, "a", 1, R, 1.0),
        (1, "b", 1, R, 3.0),
        (1, "c", 1, R, 5.0),
        (2, "a", 2, R, 2.0),
        (2, "b", 2, R, 4.0),
        (3, "b", 3, R, 7.0),
        (4, "b", 2, R, 10.0),
        (4, "a", 3, "episodes_per_s", 99.0),  # another metric
        (4, "10.0.0.1", None, R, 1e9, "node"),  # not an agent
    ]
)


# --------------------------------------------------------------------------------------------
# summarize and the score distribution


def test_summarize_by_hand():
    # [1, 2, 3, 4, 10]: mean 20/5 = 4; deviations -3 -2 -1 0 6, squares sum 50, ddof=1: 50/4 = 12.5.
    # Linear percentiles at h = 4q: p10 h=0.4 -> 1 + 0.4*1 = 1.4; p25 h=1 -> 2; p50 -> 3; p75 -> 4;
    # p90 h=3.6 -> 4 + 0.6*6 = 7.6; p99 h=3.96 -> 4 + 0.96*6 = 9.76.
    summary = summarize([10, 2, 4, 1, 3])
    expected = ScoreSummary(
        count=5, mean=4.0, std=math.sqrt(12.5), min=1.0, p10=1.4, p25=2.0, p50=3.0, p75=4.0, p90=7.6, p99=9.76, max=10.0
    )
    for name in SUMMARY_COLUMNS:
        assert getattr(summary, name) == pytest.approx(getattr(expected, name)), name


def test_summarize_edge_cases():
    assert summarize([]) == ScoreSummary(count=0, **dict.fromkeys(SUMMARY_COLUMNS[1:]))
    one = summarize([7.0])
    assert (one.count, one.mean, one.std, one.p10, one.p99, one.max) == (1, 7.0, None, 7.0, 7.0, 7.0)
    constant = summarize([3.0, 3.0, 3.0])
    assert (constant.std, constant.p10, constant.p90) == (0.0, 3.0, 3.0)
    # NaN and infinities are missing values: [2, 4] remain, mean 3.
    assert summarize([2.0, np.nan, 4.0, np.inf]) == summarize([2.0, 4.0])
    assert summarize([2.0, np.nan, 4.0]).count == 2


def test_score_distribution_now_uses_each_agents_latest_report():
    # Latest by ts: a = 2 (gen 2), b = 10 (gen 2 again, after its gen-3 report), c = 5.
    assert latest_per_agent(HISTORY).to_dict() == {"a": 2.0, "b": 10.0, "c": 5.0}
    # [2, 5, 10]: mean 17/3; deviations -11/3, -2/3, 13/3: squares (121 + 4 + 169)/9 = 294/9, /2 = 49/3.
    now = score_distribution(HISTORY)
    assert now.count == 3
    assert now.mean == pytest.approx(17 / 3)
    assert now.std == pytest.approx(math.sqrt(49 / 3))
    assert (now.min, now.p50, now.max) == (2.0, 5.0, 10.0)


def test_score_distribution_by_generation_by_hand():
    frame = score_distribution_by_generation(HISTORY)
    assert list(frame.columns) == list(SUMMARY_COLUMNS)
    assert list(frame.index) == [1, 2, 3]
    # gen 1: [1, 3, 5]: mean 3, std sqrt((4+0+4)/2) = 2; h = 2q: p10 1.4, p25 2, p75 4, p90 4.6, p99 4.96.
    assert frame.loc[1].to_dict() == pytest.approx(
        dict(count=3, mean=3, std=2, min=1, p10=1.4, p25=2, p50=3, p75=4, p90=4.6, p99=4.96, max=5)
    )
    # gen 2: b's latest report at gen 2 (10) replaces its first (4): [2, 10], mean 6, std sqrt(16+16) = sqrt(32);
    # h = q: p10 2 + 0.1*8 = 2.8, p25 4, p50 6, p75 8, p90 9.2, p99 9.92.
    assert frame.loc[2].to_dict() == pytest.approx(
        dict(count=2, mean=6, std=math.sqrt(32), min=2, p10=2.8, p25=4, p50=6, p75=8, p90=9.2, p99=9.92, max=10)
    )
    # gen 3: one agent: std undefined (NaN), every percentile is the value.
    assert frame.loc[3, "count"] == 1 and math.isnan(frame.loc[3, "std"])
    assert frame.loc[3, ["min", "p10", "p99", "max"]].tolist() == [7.0, 7.0, 7.0, 7.0]


def test_score_distribution_agrees_with_summarize_per_generation():
    frame = score_distribution_by_generation(HISTORY)
    assert frame.loc[1, "p90"] == pytest.approx(summarize([1, 3, 5]).p90)
    assert frame.loc[2, "std"] == pytest.approx(summarize([2, 10]).std)


def test_score_distribution_empty_and_missing():
    assert score_distribution(EMPTY).count == 0
    assert score_distribution(HISTORY, metric="no_such_metric").mean is None
    frame = score_distribution_by_generation(EMPTY)
    assert frame.empty and list(frame.columns) == list(SUMMARY_COLUMNS)
    # A NaN report is missing: c's only report is NaN, so gen 1 has a and b.
    frame = score_distribution_by_generation(
        make_samples([(1, "a", 1, R, 1.0), (1, "b", 1, R, 3.0), (1, "c", 1, R, np.nan)])
    )
    assert frame.loc[1, "count"] == 2 and frame.loc[1, "mean"] == 2.0


def test_rows_without_generation_count_now_but_not_per_generation():
    samples = make_samples([(1, "a", 1, R, 1.0), (2, "a", None, R, 5.0)])
    assert score_distribution(samples).mean == 5.0
    assert score_distribution_by_generation(samples)["mean"].tolist() == [1.0]


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match=r"samples is missing columns \['metric'\]"):
        score_distribution(HISTORY.drop(columns="metric"))
    with pytest.raises(ValueError, match="samples: column 'ts' must hold datetimes"):
        score_distribution(HISTORY.assign(ts=1.0))
    with pytest.raises(ValueError, match="samples must be a pandas DataFrame"):
        score_distribution([1, 2, 3])
    with pytest.raises(ValueError, match="metric must be a non-empty string"):
        score_distribution(HISTORY, metric="")
    with pytest.raises(ValueError, match="samples: column 'generation' must hold whole numbers"):
        score_distribution(HISTORY.assign(generation=1.5))
    with pytest.raises(ValueError, match="samples: column 'value' must hold numbers"):
        score_distribution(HISTORY.assign(value="abc"))


def test_accepts_frames_as_the_store_returns_them():
    # Dictionary-encoded columns arrive as pandas categoricals, with the node ids in `source` too.
    rows = HISTORY.assign(ts=HISTORY["ts"].astype("int64") / 1e6).to_dict("records")
    for row in rows:
        row["generation"] = None if pd.isna(row["generation"]) else int(row["generation"])
    stored = schema.batch_from_rows("samples", rows).to_pandas()
    assert isinstance(stored["source"].dtype, pd.CategoricalDtype)
    assert score_distribution(stored) == score_distribution(HISTORY)
    pd.testing.assert_frame_equal(score_distribution_by_generation(stored), score_distribution_by_generation(HISTORY))
    assert target_achievement(stored, Target(threshold=5)).agents == 3


# --------------------------------------------------------------------------------------------
# Target achievement

TARGET_HISTORY = make_samples(
    [
        (1, "a", 1, R, 5.0),
        (2, "a", 2, R, 12.0),
        (3, "a", 3, R, 15.0),
        (1, "b", 1, R, 8.0),
        (2, "b", 2, R, 9.0),
        (3, "b", 3, R, 11.0),
        (1, "c", 1, R, 0.0),
        (2, "c", 2, R, 20.0),  # reached, then fell back
        (3, "c", 3, R, 3.0),
        (1, "e", 1, R, 0.0),
        (1, "d", 1, "episodes_per_s", 50.0),  # d never reports the score: unset
    ]
)


def test_target_with_a_fixed_threshold():
    result = target_achievement(TARGET_HISTORY, Target(metric=R, threshold=10.0))
    # Current: a 15, b 11, c 3, e 0, d unset. Meeting >= 10: a, b -> 2/5.
    assert result.threshold == 10.0
    assert result.agents == 5
    assert result.agents_meeting == ("a", "b")
    assert result.success_rate == pytest.approx(0.4)
    # Mean over the four with a value: (15 + 11 + 3 + 0)/4 = 7.25.
    assert result.mean_value == pytest.approx(7.25)
    # Zero or unset: e (0) and d (unset) -> 2/5.
    assert result.zero_rate == pytest.approx(0.4)
    # First generation at or above 10: a at 2 (12), b at 3 (11), c at 2 (20, though it fell back).
    assert result.generations_to_target == {"a": 2, "b": 3, "c": 2, "d": None, "e": None}
    assert all(type(g) is int for g in result.generations_to_target.values() if g is not None)


def test_target_within_percent_of_best():
    result = target_achievement(TARGET_HISTORY, Target(metric=R, within_percent_of_best=10))
    # Best current 15; threshold 15 - 15*0.10 = 13.5: a only (1/5); c's 20 at gen 2 clears it too.
    assert result.threshold == pytest.approx(13.5)
    assert result.agents_meeting == ("a",)
    assert result.success_rate == pytest.approx(0.2)
    assert result.generations_to_target == {"a": 3, "b": None, "c": 2, "d": None, "e": None}


def test_within_percent_of_best_for_negative_scores_and_lower_is_better():
    samples = make_samples(
        [(1, "a", 1, R, -200.0), (1, "b", 1, R, -150.0), (1, "c", 1, R, -105.0), (1, "d", 1, R, -100.0)]
    )
    # Higher is better: best -100, threshold -100 - |-100|*0.10 = -110: c and d.
    assert target_achievement(samples, Target(within_percent_of_best=10)).agents_meeting == ("c", "d")
    # Lower is better: best -200, threshold -200 + 200*0.30 = -140: a and b.
    lower = Target(within_percent_of_best=30, direction="lower")
    assert lower.direction is Direction.LOWER_IS_BETTER
    result = target_achievement(samples, lower)
    assert result.threshold == pytest.approx(-140.0)
    assert result.agents_meeting == ("a", "b")


def test_generations_to_target_is_the_earliest_report_in_time():
    # x meets 10 first at gen 5 (t=2), then restores a gen-2 checkpoint and meets it at gen 3 (t=3).
    samples = make_samples([(1, "x", 4, R, 1.0), (2, "x", 5, R, 12.0), (3, "x", 3, R, 13.0)])
    assert target_achievement(samples, Target(threshold=10)).generations_to_target == {"x": 5}


def test_target_edge_cases():
    empty = target_achievement(EMPTY, Target(threshold=1.0))
    assert (empty.agents, empty.success_rate, empty.zero_rate, empty.mean_value) == (0, None, None, None)
    assert empty.agents_meeting == () and empty.generations_to_target == {}
    # Relative target with no values: no threshold, nobody meets it, everyone is unset.
    unset = target_achievement(make_samples([(1, "a", 1, "episodes_per_s", 5.0)]), Target(within_percent_of_best=5))
    assert (unset.threshold, unset.success_rate, unset.zero_rate) == (None, 0.0, 1.0)
    # One agent, constant: within 0% of best is the best itself, which it meets.
    one = target_achievement(make_samples([(1, "a", 1, R, 4.0), (2, "a", 2, R, 4.0)]), Target(within_percent_of_best=0))
    assert (one.agents_meeting, one.success_rate, one.generations_to_target) == (("a",), 1.0, {"a": 1})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give exactly one of threshold and within_percent_of_best"),
        ({"threshold": 1.0, "within_percent_of_best": 5.0}, "give exactly one"),
        ({"threshold": math.nan}, "threshold must be a finite number"),
        ({"threshold": "5"}, "threshold must be a finite number, but got self.threshold='5'"),
        ({"threshold": True}, "threshold must be a finite number"),
        ({"within_percent_of_best": -1.0}, "within_percent_of_best must be a finite number >= 0"),
        ({"within_percent_of_best": "5"}, "within_percent_of_best must be a finite number >= 0"),
        ({"threshold": 1.0, "direction": "up"}, r"direction must be one of \['higher', 'lower'\]"),
        ({"threshold": 1.0, "metric": ""}, "metric must be a non-empty string"),
    ],
)
def test_target_rejects_bad_definitions(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Target(**kwargs)


def test_target_achievement_rejects_a_non_target():
    with pytest.raises(ValueError, match="target must be a Target"):
        target_achievement(TARGET_HISTORY, 10.0)


# --------------------------------------------------------------------------------------------
# Throughput

E = "episodes_total"


def test_throughput_from_rate_by_hand():
    samples = make_samples(
        [
            (1, "a", 1, "episodes_per_s", 100.0),
            (2, "a", 2, "episodes_per_s", 200.0),
            (3, "a", 3, "episodes_per_s", 300.0),
            (1, "b", 1, "episodes_per_s", 50.0),
            (2, "b", 2, "episodes_per_s", 70.0),
            (2, "b", 2, R, 1e6),
        ]
    )
    result = throughput_from_rate(samples)
    assert result.method is ThroughputMethod.RATE
    # a: latest 300, mean (100+200+300)/3 = 200; b: latest 70, mean 60.
    assert result.per_agent == {
        "a": AgentThroughput(latest=300.0, mean=200.0, intervals=3, skipped=0),
        "b": AgentThroughput(latest=70.0, mean=60.0, intervals=2, skipped=0),
    }
    # Totals: 300 + 70 = 370; 200 + 60 = 260; mean latest (300 + 70)/2 = 185.
    assert (result.total_latest, result.total_mean, result.mean_latest_per_agent) == (370.0, 260.0, 185.0)


def test_throughput_from_rate_edge_cases():
    empty = throughput_from_rate(EMPTY)
    assert (empty.per_agent, empty.total_latest, empty.total_mean, empty.mean_latest_per_agent) == ({}, 0.0, 0.0, None)
    with pytest.raises(ValueError, match="metric 'episodes_per_s' has negative values"):
        throughput_from_rate(make_samples([(1, "a", 1, "episodes_per_s", -1.0)]))


# a: 10 episodes/s for 20 s; exploited at t=25 (restores a counter of 1000 at the same generation),
# then 5/s. b: 5/s, then restores a gen-1 checkpoint (generation and counter go back), then 3/s.
# c: a single report, so no interval.
COUNTERS = make_samples(
    [
        (0, "a", 1, E, 100.0),
        (10, "a", 2, E, 200.0),
        (20, "a", 3, E, 300.0),
        (30, "a", 4, E, 1100.0),
        (40, "a", 5, E, 1150.0),
        (0, "b", 1, E, 100.0),
        (10, "b", 2, E, 150.0),
        (20, "b", 3, E, 200.0),
        (30, "b", 2, E, 60.0),
        (40, "b", 3, E, 90.0),
        (5, "c", 1, E, 10.0),
    ]
)
EXPLOITS = make_events([(25, "exploit", "a"), (25, "migration_completed", "b"), (35, "exploit", "c")])


def test_throughput_from_counter_with_exploit_events():
    result = throughput_from_counter(COUNTERS, events=EXPLOITS)
    assert result.method is ThroughputMethod.COUNTER
    # a: intervals 0-10 (100/10), 10-20 (100/10); 20-30 holds the exploit and 30-40 follows it: both
    # skipped (the rule covers either order of exploit and triggering report). mean = 200/20.
    assert result.per_agent["a"] == AgentThroughput(latest=10.0, mean=pytest.approx(10.0), intervals=2, skipped=2)
    # b: 0-10 (50), 10-20 (50), [20-30: generation 3 -> 2 and counter down: skipped], 30-40 (30/10 = 3).
    # mean = (50 + 50 + 30)/30 = 130/30.
    assert result.per_agent["b"] == AgentThroughput(latest=3.0, mean=pytest.approx(130 / 30), intervals=3, skipped=1)
    # c: no interval; its exploit at t=35 does not touch a or b.
    assert result.per_agent["c"] == AgentThroughput(latest=None, mean=None, intervals=0, skipped=0)
    # Totals over a and b: latest 10 + 3 = 13; mean 10 + 130/30; mean latest (10 + 3)/2 = 6.5.
    assert result.total_latest == 13.0
    assert result.total_mean == pytest.approx(10 + 130 / 30)
    assert result.mean_latest_per_agent == 6.5


def test_throughput_from_counter_without_events_misses_a_same_generation_exploit():
    # Without events a's 20-30 interval (generation 3 -> 4, counter 300 -> 1100) looks like 80/s:
    # mean = (100 + 100 + 800 + 50)/40 = 26.25.
    a = throughput_from_counter(COUNTERS).per_agent["a"]
    assert (a.latest, a.mean, a.intervals, a.skipped) == (5.0, 26.25, 4, 0)
    no_events = pd.DataFrame(columns=["ts", "type", "agent"])  # built empty by hand: an untyped ts
    assert throughput_from_counter(COUNTERS, events=no_events).per_agent["a"] == a


def test_throughput_from_counter_skips_repeated_timestamps_and_generation_jumps():
    samples = make_samples(
        [
            (0, "a", 1, E, 0.0),
            (0, "a", 2, E, 10.0),
            (10, "a", 3, E, 20.0),
            (20, "a", 9, E, 90.0),
            (30, "a", 10, E, 95.0),
        ]
    )
    # 0-0: Δts 0, skipped; 0-10: 10/10 = 1; 10-20: generation 3 -> 9, skipped; 20-30: 5/10 = 0.5.
    a = throughput_from_counter(samples).per_agent["a"]
    assert (a.latest, a.mean, a.intervals, a.skipped) == (0.5, 0.75, 2, 2)


def test_throughput_from_counter_rejects_bad_events():
    with pytest.raises(ValueError, match=r"events is missing columns \['agent'\]"):
        throughput_from_counter(COUNTERS, events=EXPLOITS.drop(columns="agent"))


def test_an_exploit_stamped_with_its_triggering_report_skips_the_next_interval():
    # The exploit at t=20 follows the report at t=20 that triggered it (a custom loop's order): the
    # restore jump 20-30 and the interval after it are skipped, 10-20 kept.
    a = throughput_from_counter(COUNTERS, events=make_events([(20, "exploit", "a")])).per_agent["a"]
    # Used: 0-10, 10-20 -> (100 + 100)/20.
    assert (a.intervals, a.skipped, a.mean) == (2, 2, pytest.approx(10.0))


def test_an_exploit_written_before_its_triggering_report_still_skips_the_restore_jump():
    # Tune's order: the scheduler exploits (t=15) before the triggering report (t=20) is written, so
    # the exploit lands in 10-20 while the counter jumps (300 -> 1100) in 20-30: both are skipped.
    a = throughput_from_counter(COUNTERS, events=make_events([(15, "exploit", "a")])).per_agent["a"]
    # Used: 0-10 (100) and 30-40 (50) -> 150/20.
    assert (a.intervals, a.skipped, a.mean) == (2, 2, pytest.approx(7.5))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=40))
def test_summary_is_ordered_and_matches_numpy(values):
    summary = summarize(values)
    ordered = [summary.min, summary.p10, summary.p25, summary.p50, summary.p75, summary.p90, summary.p99, summary.max]
    assert all(a <= b + 1e-9 * (1 + abs(b)) for a, b in zip(ordered, ordered[1:], strict=False))
    assert summary.p50 == pytest.approx(float(np.median(values)), abs=1e-6)
    assert summary.count == len(values)
