"""Migration effectiveness and lineage, against a small run worked out by hand.

The run (ts in seconds after T0), written in the order Ray Tune writes it: the scheduler's exploit
event comes just before the score of the result that triggered it.

    agent b (node n2): scores 5 6 7 8 9 10 at generations 1-6 (ts 10g + 1), exploited at 6
    agent c (node n1): scores 3 5 4 4 at generations 1-4 (ts 10g + 2.6); exploited at 4 copying a
                       at generation 3, it reports generation 4 again: 8 (ts 50.2), 9 (60.2), 9.2 (70.2)
    agent a (node n1): scores 1, 0 at generations 1, 2 (ts 10.6, 20.6); exploited at 2 copying b at
                       generation 2: then 7, 8.5, 9, 9.5 at generations 3-6 (ts 30, 40, 50, 60)

    exploit 1  ts 20.5  a <- b  generation 2, source_generation 2, n1 <- n2 (cross-node)  completed, 9.5 s
    exploit 2  ts 42.5  c <- a  generation 4, source_generation 3, n1 <- n1                completed, 7.6 s
    exploit 3  ts 62.5  b <- a  generation 6, source_generation 6, n2 <- n1 (cross-node)  failed
"""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from elitemon.analytics.migration import (
    Lineage,
    MigrationOutcome,
    exploit_counts,
    exploit_effectiveness,
    exploit_effects,
    exploits,
    lineage,
    migration_outcomes,
    migration_stats,
)
from tests.conftest import store_frame

T0 = 1_700_000_000.0


def score(agent: str, generation: int, value: float, at: float, node: str = "n1") -> dict:
    return {
        "ts": T0 + at,
        "kind": "agent",
        "node": node,
        "source": agent,
        "generation": generation,
        "metric": "mean_return",
        "value": value,
    }


def event(kind: str, at: float, agent: str, generation: int | None, payload: dict) -> dict:
    return {"ts": T0 + at, "type": kind, "agent": agent, "generation": generation, "payload": json.dumps(payload)}


def exploit(
    at: float, target: str, source: str, generation: int | None, source_generation: int | None, **nodes: str
) -> dict:
    return {
        "ts": T0 + at,
        "type": "exploit",
        "agent": target,
        "source_agent": source,
        "node": nodes.get("node", "n1"),
        "source_node": nodes.get("source_node", "n1"),
        "generation": generation,
        "payload": json.dumps({"target_generation": generation, "source_generation": source_generation}),
    }


@pytest.fixture
def run() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = [score("b", g, 4 + g, 10 * g + 1, node="n2") for g in range(1, 7)]
    rows += [score("c", g, v, 10 * g + 2.6) for g, v in zip(range(1, 5), (3, 5, 4, 4), strict=True)]
    rows += [score("c", 4, 8.0, 50.2), score("c", 5, 9.0, 60.2), score("c", 6, 9.2, 70.2)]
    rows += [score("a", 1, 1.0, 10.6), score("a", 2, 0.0, 20.6)]
    rows += [score("a", g, v, 10 * g) for g, v in zip(range(3, 7), (7.0, 8.5, 9.0, 9.5), strict=True)]
    events = [
        exploit(20.5, "a", "b", 2, 2, node="n1", source_node="n2"),
        event("migration_completed", 30.0, "a", 3, {"latency_s": 9.5, "source": "b"}),
        exploit(42.5, "c", "a", 4, 3, node="n1", source_node="n1"),
        event("migration_completed", 50.1, "c", 4, {"latency_s": 7.6, "source": "a"}),
        exploit(62.5, "b", "a", 6, 6, node="n2", source_node="n1"),
        event("migration_failed", 63.0, "b", 6, {"source": "a"}),
        event("trial_complete", 70.0, "a", 6, {}),
    ]
    return store_frame("samples", rows), store_frame("events", events)


def test_exploits_reads_payload_and_cross_node(run) -> None:
    _, events = run
    table = exploits(events)
    assert table["agent"].tolist() == ["a", "c", "b"]
    assert table["source_agent"].tolist() == ["b", "a", "a"]
    assert table["generation"].tolist() == [2, 4, 6]
    assert table["source_generation"].tolist() == [2, 3, 6]
    assert table["cross_node"].tolist() == [True, False, True]


def test_exploit_counts_per_agent(run) -> None:
    _, events = run
    counts = exploit_counts(events, agents=["a", "d"])
    # exploited: a once (exploit 1), c once (2), b once (3); copied: b once (1), a twice (2, 3)
    assert counts.to_dict("index") == {
        "a": {"exploited": 1, "copied": 2},
        "b": {"exploited": 1, "copied": 1},
        "c": {"exploited": 1, "copied": 0},
        "d": {"exploited": 0, "copied": 0},
    }


def test_migration_stats_by_hand(run) -> None:
    _, events = run
    stats = migration_stats(events)
    assert (stats.exploits, stats.completed, stats.failed, stats.pending) == (3, 2, 1, 0)
    assert stats.success_rate == pytest.approx(2 / 3)  # completed / (completed + failed)
    assert (stats.exploits_with_nodes, stats.cross_node_exploits) == (3, 2)
    assert stats.cross_node_share == pytest.approx(2 / 3)
    # latencies [7.6, 9.5]: p50 = (7.6 + 9.5) / 2 = 8.55; p95 = 7.6 + 0.95 * (9.5 - 7.6) = 9.405
    assert stats.latency.count == 2
    assert stats.latency.p50_s == pytest.approx(8.55)
    assert stats.latency.p95_s == pytest.approx(9.405)
    assert stats.latency.max_s == pytest.approx(9.5)


def test_outcome_belongs_to_the_latest_exploit_before_it() -> None:
    events = store_frame(
        "events",
        [
            event("migration_completed", 1.0, "x", 1, {"latency_s": 3.0, "source": "old"}),  # its exploit: unseen
            exploit(10.0, "x", "y", 2, 2),
            exploit(20.0, "x", "z", 3, 3),  # x exploited again before the first copy reported
            event("migration_completed", 25.0, "x", 4, {"latency_s": 5.0, "source": "z"}),
            exploit(30.0, "w", "y", 3, 3),
        ],
    )
    table = migration_outcomes(events)
    assert table["outcome"].tolist() == [MigrationOutcome.PENDING, MigrationOutcome.COMPLETED, MigrationOutcome.PENDING]
    stats = migration_stats(events)
    assert (stats.completed, stats.failed, stats.pending) == (1, 0, 2)
    assert stats.success_rate == 1.0  # 1 / (1 + 0): pending ones are not judged
    assert stats.latency.count == 1 and stats.latency.max_s == 5.0  # the orphan 3.0 s is not counted


def test_an_outcome_is_the_first_end_event_whole() -> None:
    """The first completion after the exploit decides both the outcome and the latency: a later
    completion's latency does not fill in a first one that has none."""
    first_completion = event("migration_completed", 11.0, "x", 2, {}) | {"payload": None}
    events = store_frame(
        "events",
        [
            exploit(10.0, "x", "y", 1, 1),
            first_completion,
            event("migration_completed", 12.0, "x", 2, {"latency_s": 99.0}),
        ],
    )
    table = migration_outcomes(events)
    assert table["outcome"].tolist() == [MigrationOutcome.COMPLETED]
    assert table["latency_s"].isna().tolist() == [True]


def test_unknown_nodes_leave_the_cross_node_share() -> None:
    events = store_frame(
        "events",
        [exploit(1.0, "x", "y", 1, 1, node="n1", source_node=None), exploit(2.0, "y", "x", 1, 1, source_node="n2")],
    )
    stats = migration_stats(events)
    assert exploits(events)["cross_node"].isna().tolist() == [True, False]
    assert (stats.exploits_with_nodes, stats.cross_node_exploits, stats.cross_node_share) == (1, 1, 1.0)


def test_exploit_effects_by_hand(run) -> None:
    samples, events = run
    effects = exploit_effects(samples, events, k=2)
    # exploit 1: a's score at generation 2 is 0 (the result right after the exploit); after the
    #   restore at b's generation 2 it reports 7 and 8.5 at generations 3, 4: gain 8.5 - 0 = 8.5
    # exploit 2: c has two scores at generation 4; the one closest to the exploit (ts 42.6) is 4. After
    #   the restore at a's generation 3 it reports 8 and 9 at generations 4, 5: gain 9 - 4 = 5
    # exploit 3: b's score at 6 is 10, and nothing after the restore: not evaluated
    assert effects["score_before"].tolist() == [0.0, 4.0, 10.0]
    assert effects["score_after"].tolist()[:2] == [8.5, 9.0]
    assert effects["gain"].tolist()[:2] == [8.5, 5.0]
    assert effects["improved"].tolist()[:2] == [True, True]
    assert effects["improved"].isna().tolist() == [False, False, True]


def test_exploit_effectiveness_against_the_control(run) -> None:
    samples, events = run
    result = exploit_effectiveness(samples, events, k=2)
    assert (result.exploits, result.evaluated, result.improved) == (3, 2, 2)
    assert result.improved_share == 1.0
    assert result.mean_gain == pytest.approx((8.5 + 5.0) / 2)
    assert result.median_gain == pytest.approx(6.75)
    # Control windows (g -> g+1, g+2 in one life, score at g+2 observed):
    #   a life 0 (gens 1, 2): none. a life 1 (gens 3-6): from 3 (8.5, 9 > 7) and 4 (9, 9.5 > 8.5): 2 of 2
    #   b life 0 (gens 1-6, its score at 6 triggered exploit 3): from 1, 2, 3, 4, all rising: 4 of 4
    #   c life 0 (3, 5, 4, 4): from 1 (max(5, 4) > 3 yes), from 2 (max(4, 4) > 5 no): 1 of 2
    #   c life 1 (gens 4, 5, 6: 8, 9, 9.2): from 4: 1 of 1
    assert (result.control_windows, result.control_improved) == (9, 8)
    assert result.control_improved_share == pytest.approx(8 / 9)
    assert result.lift == pytest.approx(1 - 8 / 9)


def test_longer_window_than_observed_is_not_evaluated(run) -> None:
    samples, events = run
    result = exploit_effectiveness(samples, events, k=10)
    assert (result.evaluated, result.improved_share, result.mean_gain) == (0, None, None)
    assert (result.control_windows, result.control_improved_share, result.lift) == (0, None, None)


def test_ray_tune_2_60_order_with_the_previous_iteration() -> None:
    """One trial of a real asynchronous Tune 2.60 PBT run, as stored: the exploit event says generation 3
    (Tune had not yet recorded the result that triggered it), the triggering result (generation 4) is
    written 1 ms after the event, and the trial restored from its source's generation 2 reports
    generations 3 and 4 again."""
    samples = store_frame(
        "samples",
        [score("x", 1, 0.411, 0.255), score("x", 2, 0.653, 0.641), score("x", 3, 0.796, 2.462)]
        + [score("x", 4, 0.880, 2.711), score("x", 3, 0.985, 3.142), score("x", 4, 0.993, 3.558)]
        + [score("x", 5, 0.996, 4.697), score("x", 6, 0.998, 4.938)]
        + [score("y", g, 1.0, g) for g in range(1, 7)],
    )
    events = store_frame("events", [exploit(2.710, "x", "y", 3, 2)])
    effects = exploit_effects(samples, events, k=2)
    # the triggering result: generation 3 or 4, closest in time to 2.710: 0.880 (ts 2.711), not 0.796
    # after the restore at 2: generations 3, 4 = 0.985, 0.993: gain 0.993 - 0.880 = 0.113
    assert effects["score_before"].tolist() == [0.880]
    assert effects["score_after"].tolist() == [0.993]
    assert effects["gain"].tolist() == [pytest.approx(0.113)]
    result = exploit_effectiveness(samples, events, k=2)
    # control: x's old life (1, 2, 3, 4): from 1 and 2, rising; x's new life (3, 4, 5, 6): from 3 and 4,
    # rising; y (constant): from 1, 2, 3, 4, never rising. 4 of 8
    assert (result.control_windows, result.control_improved) == (8, 4)


def test_an_exact_trigger_generation_is_read_exactly_under_synch() -> None:
    """synch=True: the paused target's triggering result (generation 4, score 1.0) came long before
    the barrier's exploit; its first result after the restore (generation 5, 9.0) came just after
    it. Closest in time took 9.0 as the score before (gain 1.0 where 9.0 - 1.0 was gained)."""
    samples = store_frame(
        "samples",
        [score("x", g, 1.0, g) for g in range(1, 5)]
        + [score("x", 5, 9.0, 20.1), score("x", 6, 10.0, 21.0)]
        + [score("y", g, 9.0 + g / 10, g) for g in range(1, 7)],
    )
    synch = exploit(20.0, "x", "y", 3, 4)
    synch["generation"] = 4
    synch["payload"] = json.dumps({**json.loads(synch["payload"]), "trigger_generation": 4})
    effects = exploit_effects(samples, store_frame("events", [synch]), k=1)
    assert effects["score_before"].tolist() == [1.0] and effects["gain"].tolist() == [pytest.approx(8.0)]


def test_custom_loop_order_and_missing_source_generation() -> None:
    """A custom loop reports the score before calling report_exploit; without a source_generation the
    copy's first reported generation - 1 is taken as where it continues from."""
    samples = store_frame(
        "samples",
        [score("x", 1, 2.0, 1), score("x", 2, 1.0, 2), score("x", 5, 6.0, 4), score("x", 6, 3.0, 5)]
        + [score("y", g, 5.0, g) for g in range(1, 7)],
    )
    events = store_frame("events", [exploit(3.0, "x", "y", 2, None)])
    effects = exploit_effects(samples, events, k=2)
    # before: x's score at generation 2, written at ts 2 (before the exploit at ts 3): 1.0
    # after the restore x reports generations 5, 6, so it continues from 4: window 5, 6; after = 3.0
    assert effects["score_before"].tolist() == [1.0]
    assert effects["score_after"].tolist() == [3.0]
    assert effects["gain"].tolist() == [2.0]
    assert effects["improved"].tolist() == [True]  # max(6, 3) > 1


def test_nan_score_and_exploit_without_generation() -> None:
    samples = store_frame(
        "samples",
        [score("x", 1, 1.0, 1), score("x", 2, float("nan"), 5), score("x", 3, 4.0, 6)]
        + [score("y", g, 5.0, g) for g in range(1, 4)],
    )
    events = store_frame("events", [exploit(2.0, "x", "y", None, 1)])
    effects = exploit_effects(samples, events, k=2)
    # no generation: no score at the exploit can be found, so it is not evaluated
    assert effects["score_before"].isna().all() and effects["improved"].isna().all()
    result = exploit_effectiveness(samples, events, k=1)
    # x's life 1 holds generation 3 only (the NaN at 2 is dropped); y: windows 1->2, 2->3, not rising
    assert (result.control_windows, result.control_improved) == (2, 0)


def test_an_unknown_score_is_missing_and_a_window_needs_only_its_last_generation() -> None:
    """An infinite score is missing, as in population.py; a window is judged when the score k
    generations after the restore is there, even with one inside it missing."""
    samples = store_frame(
        "samples",
        [score("x", 1, 1.0, 1), score("x", 2, float("inf"), 2), score("x", 3, 2.0, 3)]
        + [score("x", 4, 5.0, 5), score("x", 6, 0.5, 6)]
        + [score("y", g, 5.0, g) for g in range(1, 7)],
    )
    events = store_frame("events", [exploit(2.5, "x", "y", 3, 3)])
    effects = exploit_effects(samples, events, k=3)
    # before: generation 3 (2.0; the inf at 2 is not a score); after the restore at 3: 4 = 5.0, 5
    # missing, 6 = 0.5: judged on the scores there are, max(5.0, 0.5) > 2.0
    assert effects["score_before"].tolist() == [2.0]
    assert effects["score_after"].tolist() == [0.5]
    assert effects["improved"].tolist() == [True]
    result = exploit_effectiveness(samples, events, k=1)
    # x's old life holds generations 1 and 3 only (the inf at 2 is dropped): no window of 1 in it
    assert (result.control_windows, result.control_improved) == (5, 0)  # y: 1..5, constant


def test_lineage_starts_a_life_for_an_exploit_from_an_unknown_source() -> None:
    events = store_frame(
        "events",
        [exploit(1.0, "x", "y", 2, 2), exploit(2.0, "y", None, 3, None), exploit(3.0, None, "x", 4, 4)],
    )
    tree = lineage(events)
    assert [(n.id, n.start_generation, n.end_generation) for n in tree.nodes] == [
        ("x#0", None, 2),
        ("x#1", 2, None),
        ("y#0", None, 3),
        ("y#1", None, None),  # replaced, by whom is not known: a new root
    ]
    assert [(e.parent, e.child) for e in tree.edges] == [("y#0", "x#1")]


def test_lineage_is_a_forest_of_lives_even_with_cycles(run) -> None:
    _, events = run
    tree = lineage(events, agents=["d"])
    assert [(n.id, n.start_generation, n.end_generation) for n in tree.nodes] == [
        ("a#0", None, 2),
        ("a#1", 2, None),
        ("b#0", None, 6),
        ("b#1", 6, None),
        ("c#0", None, 4),
        ("c#1", 3, None),
        ("d#0", None, None),
    ]
    assert [(e.parent, e.child, e.source_generation, e.target_generation) for e in tree.edges] == [
        ("b#0", "a#1", 2, 2),
        ("a#1", "c#1", 3, 4),
        ("a#1", "b#1", 6, 6),  # b copies a, which had copied b: a cycle of agents, not of lives
    ]
    assert [e.child for e in tree.ancestry("b")] == ["a#1", "b#1"]
    assert [e.child for e in tree.ancestry("c")] == ["a#1", "c#1"]
    assert tree.ancestry("d") == ()
    assert [e.source_agent for e in tree.copies("a")] == ["b"]
    assert tree.edges[0].ts == pytest.approx(T0 + 20.5)
    plain = json.loads(json.dumps(dataclasses.asdict(tree)))  # plain values only, JSON-ready
    assert plain["edges"][0] == {
        "parent": "b#0",
        "child": "a#1",
        "source_agent": "b",
        "target_agent": "a",
        "source_generation": 2,
        "target_generation": 2,
        "ts": T0 + 20.5,
    }
    with pytest.raises(ValueError, match="agent: 'zz'"):
        tree.ancestry("zz")


def test_empty_inputs_give_empty_results(run) -> None:
    samples, events = run
    no_events, no_samples = events.iloc[0:0], samples.iloc[0:0]
    stats = migration_stats(no_events)
    assert (stats.exploits, stats.success_rate, stats.cross_node_share, stats.latency.p50_s) == (0, None, None, None)
    assert exploit_counts(no_events).empty
    assert lineage(no_events) == Lineage((), ())
    result = exploit_effectiveness(no_samples, events, k=2)
    assert (result.exploits, result.evaluated, result.control_windows) == (3, 0, 0)


def test_one_agent_without_exploits_is_all_control() -> None:
    samples = store_frame("samples", [score("x", g, v, g) for g, v in enumerate((1.0, 1.0, 2.0, 2.0), start=1)])
    no_events = store_frame("events", [event("trial_start", 0.0, "x", 0, {})])
    result = exploit_effectiveness(samples, no_events, k=1)
    # windows 1->2 (1 > 1 no), 2->3 (2 > 1 yes), 3->4 (2 > 2 no): constant scores never count as improving
    assert (result.exploits, result.control_windows, result.control_improved) == (0, 3, 1)
    assert result.improved_share is None and result.lift is None


def test_bad_input_names_the_argument(run) -> None:
    samples, events = run
    with pytest.raises(ValueError, match="events is missing columns \\['payload'\\]"):
        migration_stats(events.drop(columns=["payload"]))
    with pytest.raises(ValueError, match="samples is missing columns"):
        exploit_effects(samples.drop(columns=["metric"]), events)
    with pytest.raises(ValueError, match="k=0"):
        exploit_effectiveness(samples, events, k=0)
    # Epoch seconds by hand: pandas would read them as nanoseconds, one instant for the whole run.
    with pytest.raises(ValueError, match="events: column 'ts' must hold times, but holds numbers"):
        lineage(events.assign(ts=events["ts"].astype("int64") / 1e6))
    broken = events.assign(payload=events["payload"].where(events["type"] != "exploit", "{not json"))
    with pytest.raises(ValueError, match="events: payload is not JSON"):
        exploits(broken)
    for bad in (2.5, "three"):
        halfway = store_frame("events", [exploit(1.0, "a", "b", 2, bad)])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=f"source_generation must be a whole number, but got {bad!r}"):
            exploits(halfway)
    written_as_float = store_frame("events", [exploit(1.0, "a", "b", 2, 3.0)])  # type: ignore[arg-type]
    assert exploits(written_as_float)["source_generation"].tolist() == [3]
    written_as_text = store_frame("events", [exploit(1.0, "a", "b", 2, "3")])  # type: ignore[arg-type]
    assert exploits(written_as_text)["source_generation"].tolist() == [3]  # a NumPy int, by an older report_exploit
