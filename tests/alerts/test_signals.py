"""Signals from stored samples, and how a rule's `per` picks and reduces their series."""

from __future__ import annotations

import pandas as pd
import pytest

from elitemon.alerts.signals import (
    BUILTIN,
    KnownNames,
    Reduce,
    Signal,
    SignalSettings,
    Snapshot,
    compute_snapshot,
)
from elitemon.analytics.cost import PriceTable

NOW = 1_800_000_000.0


def _frame(rows: list[tuple]) -> pd.DataFrame:
    """Rows of (seconds before NOW, kind, node, source, generation, metric, value)."""
    columns = ["ts", "kind", "node", "source", "generation", "metric", "value"]
    frame = pd.DataFrame([(NOW - ago, *rest) for ago, *rest in rows], columns=columns)
    frame["ts"] = pd.to_datetime(frame["ts"], unit="s", utc=True)
    return frame


SCORES = _frame(
    [
        (100 - g, "agent", "n1", agent, g, "mean_return", score)
        for g, score in enumerate([1, 3, 5, 5, 5])
        for agent in "ab"
    ]
)
RECENT = pd.concat(
    [
        SCORES,
        _frame(
            [
                (20, "node", "n1", "id1", None, "cpu_percent", 50.0),
                (5, "node", "n1", "id1", None, "cpu_percent", 97.0),  # the newest n1 value counts
                (5, "node", "n2", "id2", None, "cpu_percent", 40.0),
                (5, "node", "n1", "id1", None, "cpu_percent_core_0", 97.0),
                (5, "node", "n1", "id1", None, "cpu_percent_core_1", 97.0),
                (5, "node", "n2", "id2", None, "cpu_percent_core_0", 40.0),
                (400, "node", "n3", "id3", None, "cpu_percent", 99.0),  # older than the lookback: stale
                (5, "gpu", "n1", "n1/gpu0", None, "gpu_memory_used_bytes", 30.0),
                (5, "gpu", "n1", "n1/gpu0", None, "gpu_memory_total_bytes", 100.0),
                (5, "gpu", "n1", "n1/gpu1", None, "gpu_memory_used_bytes", 95.0),
                (5, "gpu", "n1", "n1/gpu1", None, "gpu_memory_total_bytes", 100.0),
                (3, "bench", "n1", "w1", None, "holomorphic_throughput", 2e7),
                (3, "bench", "n2", "w2", None, "holomorphic_throughput", 3e7),
                (3, "agent", "n2", "trial_a", 4, "episodes_per_s", 12.5),
            ]
        ),
    ]
)  # the lookback's samples hold the scores of the agents training now
HEARTBEATS = _frame(
    [
        (2, "node", "n1", "id1", None, "heartbeat", NOW - 2),
        (600, "node", "n2", "id2", None, "heartbeat", NOW - 600),
        (900, "node", "n2", "id2-old", None, "heartbeat", NOW - 900),  # an earlier Ray node on n2
    ]
)


def _snapshot(**settings) -> Snapshot:
    return compute_snapshot(RECENT, HEARTBEATS, SCORES, now=NOW, settings=SignalSettings(**settings))


def test_latest_fresh_values_as_ratios_per_node() -> None:
    cpu = _snapshot().signals["cpu_usage"]
    assert dict(cpu.series) == {(("node", "n1"),): pytest.approx(0.97), (("node", "n2"),): pytest.approx(0.40)}


def test_gpu_memory_usage_is_used_over_total_per_gpu() -> None:
    series = dict(_snapshot().signals["gpu_memory_usage"].series)
    assert series == {(("gpu", "0"), ("node", "n1")): 0.30, (("gpu", "1"), ("node", "n1")): 0.95}


def test_heartbeat_missing_counts_from_the_newest_beat_of_any_monitor_on_the_node() -> None:
    series = dict(_snapshot().signals["node_heartbeat_missing"].series)
    assert series == {(("node", "n1"),): pytest.approx(2.0), (("node", "n2"),): pytest.approx(600.0)}


def test_stall_is_generations_since_the_best_last_improved() -> None:
    assert dict(_snapshot().signals["no_improvement_for_generations"].series) == {(): 2.0}
    assert dict(_snapshot(score_metric="other").signals["no_improvement_for_generations"].series) == {}


def test_the_stall_is_the_running_populations_not_an_earlier_runs() -> None:
    """The store keeps earlier runs: one that stalled at generation 1 of 50 made the default
    `convergence_stall` fire on a new run improving every generation (and fire on forever after)."""
    earlier = _frame([(86_400 - g, "agent", "n1", "old", g, "mean_return", min(g, 1)) for g in range(50)])
    now_running = _frame([(50 - g, "agent", "n1", "new", g, "mean_return", g) for g in range(8)])
    scores = pd.concat([earlier, now_running])
    snapshot = compute_snapshot(now_running, HEARTBEATS, scores, now=NOW, settings=SignalSettings())
    assert dict(snapshot.signals["no_improvement_for_generations"].series) == {(): 0.0}
    ended = compute_snapshot(RECENT.iloc[0:0], HEARTBEATS, scores, now=NOW, settings=SignalSettings())
    assert dict(ended.signals["no_improvement_for_generations"].series) == {}  # no run: no data, not a stall


def test_an_agent_that_moved_to_another_node_reads_its_newest_value() -> None:
    """A PBT trial restarted on another node: the series it left on the old node stayed fresh, and
    `per: agent` read the larger of the old and the new value."""
    moved = _frame(
        [(200, "agent", "n1", "t1", 3, "mean_return", 50.0), (10, "agent", "n2", "t1", 4, "mean_return", -5.0)]
    )
    snapshot = compute_snapshot(
        moved, HEARTBEATS, moved, now=NOW, settings=SignalSettings(), wanted={"agent.mean_return"}
    )
    assert dict(snapshot.signals["agent.mean_return"].series) == {(("agent", "t1"), ("node", "n2")): -5.0}


def test_hourly_cost_prices_the_machines_running_now() -> None:
    prices = PriceTable(cpu_hour=1.0, gpu_hour={"X": 5.0}, default_gpu_hour=2.0)
    # n1: 2 cores + 2 GPUs of unknown model; n2: 1 core; n3's samples are older than the lookback.
    assert dict(_snapshot(prices=prices).signals["hourly_cost"].series) == {(): 2 * 1.0 + 2 * 2.0 + 1 * 1.0}
    # With the monitors' gpu_info (analytics.cost.gpu_models), n1's GPUs are priced by their model.
    settings = SignalSettings(prices=prices)
    priced = compute_snapshot(RECENT, HEARTBEATS, SCORES, now=NOW, settings=settings, gpu_models={"n1": "Board X"})
    assert dict(priced.signals["hourly_cost"].series) == {(): 2 * 1.0 + 2 * 5.0 + 1 * 1.0}


def test_a_signal_that_cannot_be_computed_is_absent_with_its_reason() -> None:
    recent = RECENT[~RECENT["metric"].str.startswith("cpu_percent_core")]  # no CPU count for the price
    snapshot = compute_snapshot(recent, HEARTBEATS, SCORES, now=NOW, settings=SignalSettings())
    assert "hourly_cost" not in snapshot.signals and "cpu_percent_core" in snapshot.errors["hourly_cost"]
    assert "cpu_usage" in snapshot.signals


def test_values_become_constants_and_kind_prefixes_read_any_metric() -> None:
    snapshot = compute_snapshot(
        RECENT,
        HEARTBEATS,
        SCORES,
        now=NOW,
        settings=SignalSettings(values={"budget_threshold": 10.0}),
        wanted={"agent.episodes_per_s", "cpu_usage"},
    )
    assert set(snapshot.signals) == {"agent.episodes_per_s", "cpu_usage", "budget_threshold"}
    assert dict(snapshot.signals["agent.episodes_per_s"].series) == {(("agent", "trial_a"), ("node", "n2")): 12.5}
    assert snapshot.value("budget_threshold", (("node", "n1"),)) == 10.0


def test_per_node_instances_reduce_finer_series_and_broadcast_global_ones() -> None:
    snapshot = _snapshot(values={"budget_threshold": 10.0})
    instances = snapshot.instances({"gpu_memory_usage", "cpu_usage", "budget_threshold"}, ("node",))
    assert instances == {
        (("node", "n1"),): {"gpu_memory_usage": 0.95, "cpu_usage": pytest.approx(0.97), "budget_threshold": 10.0},
        (("node", "n2"),): {"gpu_memory_usage": None, "cpu_usage": pytest.approx(0.40), "budget_threshold": 10.0},
    }


def test_without_per_one_instance_reduced_over_everything() -> None:
    instances = _snapshot().instances({"cpu_usage", "holomorphic_throughput"}, ())
    assert instances == {(): {"cpu_usage": pytest.approx(0.97), "holomorphic_throughput": 5e7}}


def test_per_gpu_takes_the_node_value_of_coarser_signals() -> None:
    instances = _snapshot().instances({"gpu_memory_usage", "cpu_usage"}, ("gpu", "node"))
    assert instances[(("gpu", "1"), ("node", "n1"))] == {"gpu_memory_usage": 0.95, "cpu_usage": pytest.approx(0.97)}
    assert len(instances) == 2


def test_a_rule_with_no_matching_series_has_no_instance() -> None:
    snapshot = Snapshot(now=NOW, signals={"cpu_usage": Signal({})})
    assert snapshot.instances({"cpu_usage"}, ("node",)) == {}


def test_reductions() -> None:
    assert Reduce.MAX([1.0, 3.0]) == 3.0 and Reduce.MIN([1.0, 3.0]) == 1.0 and Reduce.SUM([1.0, 3.0]) == 4.0


def test_known_names_accept_builtins_values_and_metric_prefixes_only() -> None:
    known = KnownNames({"budget_threshold"})
    assert all(name in known for name in BUILTIN)
    assert "budget_threshold" in known and "agent.mean_return" in known and "gpu.gpu_power_w" in known
    assert "agent." not in known and "cpu_usag" not in known and "job.x" not in known
    assert set(known) == set(BUILTIN) | {"budget_threshold"}
