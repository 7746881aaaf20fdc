"""SequenceTracker: the exactly-once bookkeeping of (producer_id, seq) pairs."""

from __future__ import annotations

import json

import pytest

from elitemon.store._sequences import SequenceTracker


def tracker_with(max_producers: int, applied: dict[str, list[int]]) -> SequenceTracker:
    """A tracker that has applied `applied[producer]` seqs, producers in dict order."""
    tracker = SequenceTracker(max_producers)
    for producer_id, seqs in applied.items():
        for seq in seqs:
            tracker.add(producer_id, seq)
    return tracker


def seen_set(tracker: SequenceTracker, producer_id: str, upto: int) -> set[int]:
    return {seq for seq in range(upto) if tracker.seen(producer_id, seq)}


def test_unknown_producer_has_seen_nothing():
    tracker = SequenceTracker(10)
    assert not tracker.seen("p", 0)
    assert len(tracker) == 0


def test_in_order_seqs_are_each_seen_once_added():
    tracker = SequenceTracker(10)
    for seq in range(5):
        assert not tracker.seen("p", seq)
        tracker.add("p", seq)
        assert tracker.seen("p", seq)
    assert seen_set(tracker, "p", 20) == {0, 1, 2, 3, 4}
    assert tracker.snapshot() == {"p": [4, []]}


def test_out_of_order_seqs_leave_gaps_unseen_until_filled():
    tracker = tracker_with(10, {"p": [3, 5, 0]})
    assert seen_set(tracker, "p", 10) == {0, 3, 5}
    # The gaps (1, 2, 4) are not mistaken for applied: a high-water mark would get this wrong.
    assert not tracker.seen("p", 1)
    assert not tracker.seen("p", 4)
    assert tracker.snapshot() == {"p": [0, [3, 5]]}

    tracker.add("p", 2)
    tracker.add("p", 1)
    assert seen_set(tracker, "p", 10) == {0, 1, 2, 3, 5}
    assert tracker.snapshot() == {"p": [3, [5]]}

    tracker.add("p", 4)
    assert seen_set(tracker, "p", 10) == {0, 1, 2, 3, 4, 5}
    assert tracker.snapshot() == {"p": [5, []]}


def test_adding_twice_is_idempotent():
    tracker = tracker_with(10, {"p": [0, 2, 2, 0]})
    assert seen_set(tracker, "p", 10) == {0, 2}
    # `above` holds only seqs beyond the first gap; a re-added seq <= contiguous must not linger
    # there (it would bloat every manifest snapshot forever).
    assert tracker.snapshot() == {"p": [0, [2]]}


def test_producers_are_independent():
    tracker = tracker_with(10, {"a": [0, 1], "b": [5]})
    assert tracker.seen("a", 1)
    assert not tracker.seen("b", 1)
    assert tracker.seen("b", 5)
    assert not tracker.seen("a", 5)
    assert len(tracker) == 2


def test_bound_evicts_least_recently_added_producer():
    tracker = tracker_with(2, {"a": [0], "b": [0]})
    tracker.add("a", 1)  # "a" is now more recent than "b"
    tracker.add("c", 0)  # over the bound: "b" goes
    assert len(tracker) == 2
    assert not tracker.seen("b", 0)
    assert tracker.seen("a", 0) and tracker.seen("a", 1)
    assert tracker.seen("c", 0)


def test_bound_without_refresh_evicts_oldest_first():
    tracker = tracker_with(3, {"a": [0], "b": [0], "c": [0]})
    tracker.add("d", 0)
    assert set(tracker.snapshot()) == {"b", "c", "d"}
    tracker.add("e", 0)
    assert set(tracker.snapshot()) == {"c", "d", "e"}


def test_bound_of_one_keeps_only_latest_producer():
    tracker = tracker_with(1, {"a": [0, 1]})
    tracker.add("b", 0)
    assert len(tracker) == 1
    assert not tracker.seen("a", 0)
    assert tracker.seen("b", 0)


def test_snapshot_is_json_ready_and_restores_the_same_answers():
    tracker = tracker_with(10, {"a": [0, 1, 2, 7, 9], "b": [4], "c": [0]})
    snapshot = json.loads(json.dumps(tracker.snapshot()))  # as it travels through the manifest
    restored = SequenceTracker.restore(snapshot, 10)
    assert restored.snapshot() == tracker.snapshot()
    assert len(restored) == 3
    for producer_id in ("a", "b", "c", "unknown"):
        assert seen_set(restored, producer_id, 20) == seen_set(tracker, producer_id, 20)


def test_restored_tracker_keeps_filling_gaps():
    restored = SequenceTracker.restore({"p": [1, [3]]}, 10)
    restored.add("p", 2)
    assert restored.snapshot() == {"p": [3, []]}


def test_restore_keeps_recency_order_for_eviction():
    tracker = tracker_with(3, {"a": [0], "b": [0], "c": [0]})
    tracker.add("a", 1)  # recency now b, c, a
    restored = SequenceTracker.restore(json.loads(json.dumps(tracker.snapshot())), 3)
    restored.add("d", 0)
    assert set(restored.snapshot()) == {"c", "a", "d"}


@pytest.mark.parametrize("max_producers", [1, 5])
def test_len_never_exceeds_bound(max_producers):
    tracker = SequenceTracker(max_producers)
    for index in range(20):
        tracker.add(f"p{index}", index)
        assert len(tracker) <= max_producers
    assert len(tracker) == max_producers


def test_a_gap_never_filled_does_not_grow_the_window_forever():
    """A batch its producer gave up on leaves a gap; the window closes it past MAX_GAP_WINDOW."""
    from elitemon.store._sequences import MAX_GAP_WINDOW

    tracker = SequenceTracker(max_producers=4)
    tracker.add("p", 0)
    for seq in range(2, MAX_GAP_WINDOW + 100):  # seq 1 never arrives
        tracker.add("p", seq)
    contiguous, above = tracker.snapshot()["p"]
    assert len(above) <= MAX_GAP_WINDOW
    assert contiguous == MAX_GAP_WINDOW + 99
    assert tracker.seen("p", MAX_GAP_WINDOW + 50) and not tracker.seen("p", MAX_GAP_WINDOW + 100)
