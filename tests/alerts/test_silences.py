"""Silences, acknowledgements and inhibition, alone and through the router, on a fake clock."""

from __future__ import annotations

from dataclasses import replace

import pytest

from elitemon.alerts._model import Alert, Status
from elitemon.alerts.routing import Route, Router
from elitemon.alerts.silences import (
    DEFAULT_INHIBIT_RULES,
    Acknowledgement,
    AckStore,
    Inhibitor,
    InhibitRule,
    Silence,
    SilenceState,
    SilenceStore,
    muter,
)

T0 = 1_700_000_000.0
ROUTE = Route.from_config({"receiver": "default", "group_by": ["alertname"], "repeat_interval": "1h"})


class FakeClock:
    """A wall clock that moves only when told to."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def alert(name: str = "gpu_hot", severity: str = "HIGH", starts_at: float = T0, **labels: str) -> Alert:
    return Alert({"alertname": name, "severity": severity, **labels}, {}, Status.FIRING, starts_at)


def resolved(firing: Alert, at: float) -> Alert:
    return replace(firing, status=Status.RESOLVED, ends_at=at)


def node_failure(node: str) -> Alert:
    return alert("node_failure", "CRITICAL", node=node)


def nodes(notifications) -> list[list[tuple[str, Status]]]:
    return [[(a.labels.get("node", ""), a.status) for a in n.alerts] for n in notifications]


def step(router: Router, clock: FakeClock) -> list:
    """Move the clock to the router's next evaluation and flush."""
    clock.now = router.next_due()
    return router.flush_due()


# ------------------------------------------------------------------------------------ silences


def silence(**overrides) -> Silence:
    fields = dict(
        id="s1", matchers=('node="n1"',), starts_at=T0, ends_at=T0 + 60, created_by="ana", comment="maintenance"
    )
    return Silence(**{**fields, **overrides})


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"matchers": ()}, "at least one matcher is needed"),
        ({"matchers": ('node=~".*"', 'team=""')}, "at least one matcher must not match the empty string"),
        ({"matchers": ("node",)}, r"matchers\[0\]: bad matcher format"),
        ({"matchers": 'node="n1"'}, "expected a list of matchers"),
        ({"ends_at": T0 - 1}, "cannot end before it starts"),
        ({"created_by": " "}, "non-empty created_by"),
        ({"comment": ""}, "non-empty comment"),
        ({"id": ""}, "needs an id"),
    ],
)
def test_silence_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        silence(**overrides)


def test_silence_window_is_half_open():
    window = silence()
    assert [window.state(t) for t in (T0 - 1, T0, T0 + 59, T0 + 60)] == [
        SilenceState.PENDING,
        SilenceState.ACTIVE,
        SilenceState.ACTIVE,
        SilenceState.EXPIRED,
    ]
    assert window.matches({"node": "n1"}) and not window.matches({"node": "n2"})


def test_store_silences_only_inside_the_window():
    clock = FakeClock()
    store = SilenceStore(clock)
    sid = store.add(['node="n1"'], starts_at=T0 + 10, ends_at=T0 + 20, created_by="ana", comment="reboot")
    n1 = alert(node="n1")
    assert store.get(sid).state(clock()) is SilenceState.PENDING
    assert store.is_silenced(n1) == []
    clock.now = T0 + 10
    assert store.is_silenced(n1) == [sid]
    assert store.is_silenced(alert(node="n2")) == []
    assert store.list(active_only=True) == [store.get(sid)]
    clock.now = T0 + 20
    assert store.is_silenced(n1) == []
    assert store.list(active_only=True) == []
    assert store.list() == [store.get(sid)]


def test_store_add_rejects_silences_that_end_in_the_past_or_before_they_start():
    store = SilenceStore(FakeClock())
    with pytest.raises(ValueError, match="must end after it starts and in the future"):
        store.add(['node="n1"'], ends_at=T0, created_by="ana", comment="x")
    with pytest.raises(ValueError, match="must end after it starts"):
        store.add(['node="n1"'], starts_at=T0 + 50, ends_at=T0 + 40, created_by="ana", comment="x")


def test_expired_silences_are_forgotten_after_the_retention_and_their_number_is_bounded():
    clock = FakeClock()
    store = SilenceStore(clock, retention_s=100, max_silences=2)
    old = store.add(['node="n1"'], ends_at=T0 + 10, created_by="ana", comment="x")
    store.add(['node="n2"'], ends_at=T0 + 500, created_by="ana", comment="x")
    with pytest.raises(ValueError, match="max_silences=2"):
        store.add(['node="n3"'], ends_at=T0 + 500, created_by="ana", comment="x")
    clock.now = T0 + 111  # `old` ended 101 s ago: past the retention, so it makes room
    store.add(['node="n3"'], ends_at=T0 + 500, created_by="ana", comment="x")
    assert old not in {s.id for s in store.list()} and len(store.list()) == 2


def test_old_acknowledgements_are_forgotten():
    clock = FakeClock()
    acks = AckStore(clock, retention_s=100)
    acks.acknowledge("f1", "ana", "x")
    acks.acknowledge("f2", "ana", "x", until=T0 + 10)
    clock.now = T0 + 50
    acks.acknowledge("f3", "ana", "x")  # f2's `until` has passed
    assert len(acks) == 2
    clock.now = T0 + 120
    acks.acknowledge("f4", "ana", "x")  # f1 is older than the retention
    assert len(acks) == 2  # f3 and f4


def test_a_new_silences_texts_are_bounded_and_a_stored_ones_are_not():
    """Its event must fit the store's payload: a longer comment was in force and yet lost at a
    restart. One stored before the bound (an older version) is read back, not lost now."""
    store = SilenceStore(FakeClock())
    with pytest.raises(ValueError, match="comment is 10,001 characters, over 10,000"):
        store.add(['node="n1"'], ends_at=T0 + 60, created_by="ana", comment="x" * 10_001)
    long = silence(comment="x" * 20_000)
    store.restore(long)
    assert store.get("s1") == long


def test_restored_silences_are_kept_as_recorded_unless_long_expired():
    clock = FakeClock()
    store = SilenceStore(clock, retention_s=100)
    recorded = Silence("s1", ('node="n1"',), T0 - 50, T0 + 60, "ana", "maintenance")
    store.restore(recorded)
    assert store.get("s1") == recorded and store.is_silenced(alert(node="n1")) == ["s1"]
    store.restore(replace(recorded, ends_at=T0))  # its expiry, recorded later, wins
    assert store.is_silenced(alert(node="n1")) == [] and store.get("s1").state(T0) is SilenceState.EXPIRED
    store.restore(recorded)  # read out of order, the creation does not undo the expiry
    assert store.get("s1").ends_at == T0
    store.restore(Silence("s0", ('node="n2"',), T0 - 500, T0 - 101, "ana", "x"))  # past the retention
    assert [s.id for s in store.list()] == ["s1"]


def test_restored_acknowledgements_are_kept_unless_run_out():
    clock = FakeClock()
    acks = AckStore(clock, retention_s=100)
    firing = alert(starts_at=T0 - 30)
    kept = Acknowledgement(firing.fingerprint, "ana", "on it", at=T0 - 10)
    acks.restore(kept)
    acks.restore(Acknowledgement("f2", "ana", "x", at=T0 - 20, until=T0 - 5))  # its `until` has passed
    acks.restore(Acknowledgement("f3", "ana", "x", at=T0 - 101))  # older than the retention
    assert acks.list() == [kept] and acks.suppress_repeat(firing)
    acks.restore(replace(kept, by="bo", at=T0 - 15))  # an earlier one, read after: the later stays
    assert acks.list() == [kept]


def test_expire():
    clock = FakeClock()
    store = SilenceStore(clock)
    active = store.add(['node="n1"'], ends_at=T0 + 60, created_by="ana", comment="x")
    pending = store.add(['node="n1"'], starts_at=T0 + 30, ends_at=T0 + 60, created_by="ana", comment="x")
    clock.now = T0 + 5
    store.expire(active)
    store.expire(pending)
    assert store.get(active).ends_at == T0 + 5
    assert store.is_silenced(alert(node="n1")) == []
    clock.now = T0 + 40
    assert store.is_silenced(alert(node="n1")) == []  # the pending one never opens
    assert {s.state(clock()) for s in store.list()} == {SilenceState.EXPIRED}
    with pytest.raises(ValueError, match="already expired"):
        store.expire(active)
    with pytest.raises(ValueError, match="no silence with id 'nope'"):
        store.expire("nope")


def test_a_silenced_alert_is_notified_once_its_silence_is_expired():
    clock = FakeClock()
    store = SilenceStore(clock)
    sid = store.add(['node="n1"'], ends_at=T0 + 3600, created_by="ana", comment="reboot")
    router = Router(ROUTE, clock=clock, mute=muter(silences=store))
    router.ingest([alert(node="n1"), alert(node="n2")])
    assert nodes(step(router, clock)) == [[("n2", Status.FIRING)]]
    store.expire(sid)
    assert nodes(step(router, clock)) == [[("n1", Status.FIRING), ("n2", Status.FIRING)]]


def test_a_silence_ending_by_itself_unmutes_at_the_next_evaluation():
    clock = FakeClock()
    store = SilenceStore(clock)
    store.add(['alertname="gpu_hot"'], ends_at=T0 + 100, created_by="ana", comment="known")
    router = Router(ROUTE, clock=clock, mute=muter(silences=store))
    router.ingest([alert(node="n1")])
    assert step(router, clock) == []  # T0 + 30
    assert clock.now + 300 > T0 + 100
    assert nodes(step(router, clock)) == [[("n1", Status.FIRING)]]


def test_an_alert_silenced_while_firing_and_resolved_is_never_sent():
    clock = FakeClock()
    store = SilenceStore(clock)
    store.add(['node="n1"'], ends_at=T0 + 3600, created_by="ana", comment="reboot")
    router = Router(ROUTE, clock=clock, mute=muter(silences=store))
    n1 = alert(node="n1")
    router.ingest([n1])
    assert step(router, clock) == []
    router.ingest([resolved(n1, clock.now)])
    assert step(router, clock) == []
    assert router.next_due() is None


# ------------------------------------------------------------------------------------ acknowledgements


def test_acknowledgement_validation():
    acks = AckStore(FakeClock())
    with pytest.raises(ValueError, match="non-empty by"):
        acks.acknowledge("abc", "", "on it")
    with pytest.raises(ValueError, match="non-empty comment"):
        acks.acknowledge("abc", "ana", " ")
    with pytest.raises(ValueError, match="by is 20,000 characters"):
        acks.acknowledge("abc", "a" * 20_000, "on it")
    with pytest.raises(ValueError, match="must last past its time"):
        acks.acknowledge("abc", "ana", "on it", until=T0)


def test_an_acknowledged_alert_is_not_repeated_but_its_resolve_is_sent():
    clock = FakeClock()
    acks = AckStore(clock)
    router = Router(ROUTE, clock=clock, suppress_repeat=acks.suppress_repeat)
    n1 = alert(node="n1")
    router.ingest([n1])
    assert len(step(router, clock)) == 1
    acks.acknowledge(n1.fingerprint, "ana", "on it")
    while clock.now < T0 + 3 * 3600:
        assert step(router, clock) == []
    router.ingest([resolved(n1, clock.now)])
    assert nodes(step(router, clock)) == [[("n1", Status.RESOLVED)]]


def test_repeats_resume_when_the_acknowledgement_runs_out():
    clock = FakeClock()
    acks = AckStore(clock)
    router = Router(ROUTE, clock=clock, suppress_repeat=acks.suppress_repeat)
    n1 = alert(node="n1")
    router.ingest([n1])
    step(router, clock)
    acks.acknowledge(n1.fingerprint, "ana", "looking", until=T0 + 2 * 3600)
    sent = []
    while clock.now < T0 + 3 * 3600:
        sent += [clock.now - T0 for _ in step(router, clock)]
    assert sent == [2 * 3600 + 30, 3 * 3600 + 30]  # the first evaluation after `until`, then hourly


def test_an_acknowledgement_does_not_cover_the_next_firing_episode():
    clock = FakeClock()
    acks = AckStore(clock)
    first = alert(node="n1")
    acks.acknowledge(first.fingerprint, "ana", "on it")
    assert acks.suppress_repeat(first)
    assert not acks.suppress_repeat(alert(node="n1", starts_at=T0 + 500))
    assert not acks.suppress_repeat(alert(node="n2"))


def test_an_unacknowledged_alert_keeps_its_group_repeating():
    clock = FakeClock()
    acks = AckStore(clock)
    router = Router(ROUTE, clock=clock, suppress_repeat=acks.suppress_repeat)
    n1, n2 = alert(node="n1"), alert(node="n2")
    router.ingest([n1, n2])
    step(router, clock)
    acks.acknowledge(n1.fingerprint, "ana", "on it")
    clock.now = T0 + 30 + 3600
    assert nodes(router.flush_due()) == [[("n1", Status.FIRING), ("n2", Status.FIRING)]]


# ------------------------------------------------------------------------------------ inhibition


def test_default_rule_mutes_less_severe_alerts_of_the_failed_node():
    inhibitor = Inhibitor(DEFAULT_INHIBIT_RULES)
    firing = [node_failure("n1")]
    assert inhibitor.inhibited(alert(node="n1"), firing)
    assert inhibitor.inhibited(alert(severity="INFO", node="n1"), firing)
    assert not inhibitor.inhibited(alert(node="n2"), firing)
    assert not inhibitor.inhibited(alert(severity="CRITICAL", node="n1"), firing)
    assert not inhibitor.inhibited(alert(), firing)  # no node label: not equal to n1
    assert not inhibitor.inhibited(alert(node="n1"), [alert("node_failure", "HIGH", node="n1")])


def test_the_source_must_be_firing():
    inhibitor = Inhibitor(DEFAULT_INHIBIT_RULES)
    assert not inhibitor.inhibited(alert(node="n1"), [resolved(node_failure("n1"), T0)])


def test_an_alert_never_inhibits_itself_nor_a_peer_matching_both_sides():
    rule = InhibitRule(['alertname="gpu_hot"'], ['severity="HIGH"'], equal=["cluster"])
    inhibitor = Inhibitor([rule])
    n1, n2 = alert(node="n1"), alert(node="n2")
    assert not inhibitor.inhibited(n1, [n1])
    assert not inhibitor.inhibited(n1, [n1, n2])
    assert inhibitor.inhibited(alert("disk_full", node="n1"), [n1])  # a one-sided target
    assert inhibitor.inhibited(n1, [alert(severity="CRITICAL")])  # a one-sided source


def test_labels_missing_on_both_sides_count_as_equal():
    inhibitor = Inhibitor([InhibitRule(['alertname="cluster_down"'], ['severity="HIGH"'], equal=["cluster"])])
    assert inhibitor.inhibited(alert(), [alert("cluster_down", "CRITICAL")])
    assert not inhibitor.inhibited(alert(cluster="a"), [alert("cluster_down", "CRITICAL")])


def test_inhibitor_from_config():
    inhibitor = Inhibitor.from_config(
        [{"source_matchers": ['severity="CRITICAL"'], "target_matchers": ['severity="LOW"'], "equal": ["node"]}]
    )
    (rule,) = inhibitor.rules
    assert [str(m) for m in rule.source_matchers] == ['severity="CRITICAL"']
    assert rule.equal == ("node",)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"source_matchers": ['a="1"'], "target_matchers": ['b="1"'], "equals": []}, r"inhibit_rules\[0\]\.equals"),
        ({"source_matchers": [], "target_matchers": ['b="1"']}, r"inhibit_rules\[0\]\.source_matchers: at least one"),
        ({"source_matchers": ['a="1"']}, r"inhibit_rules\[0\]\.target_matchers: at least one"),
        ({"source_matchers": ['a="1"'], "target_matchers": ["b"]}, r"target_matchers\[0\]: bad matcher format"),
        ({"source_matchers": ['a="1"'], "target_matchers": ['b="1"'], "equal": ["n-1"]}, r"equal: invalid label"),
        ("rule", r"inhibit_rules\[0\]: expected a mapping"),
    ],
)
def test_inhibitor_config_errors_name_the_key_path(config, message):
    with pytest.raises(ValueError, match=message):
        Inhibitor.from_config([config])


def test_inhibited_alerts_are_notified_once_the_source_resolves():
    clock = FakeClock()
    router = Router(ROUTE, clock=clock, mute=muter(inhibitor=Inhibitor()))
    failure = node_failure("n1")
    router.ingest([failure, alert(node="n1"), alert(node="n2")])
    sent = sorted(nodes(step(router, clock)))
    assert sent == [[("n1", Status.FIRING)], [("n2", Status.FIRING)]]  # node_failure group, gpu_hot group
    router.ingest([resolved(failure, clock.now)])
    sent = sorted(nodes(step(router, clock)))
    assert sent == [[("n1", Status.FIRING), ("n2", Status.FIRING)], [("n1", Status.RESOLVED)]]


def test_muter_combines_silences_and_inhibition():
    clock = FakeClock()
    store = SilenceStore(clock)
    store.add(['node="n3"'], ends_at=T0 + 60, created_by="ana", comment="x")
    muted = muter(silences=store, inhibitor=Inhibitor())([node_failure("n1")])
    assert muted(alert(node="n1"))
    assert muted(alert(node="n3"))
    assert not muted(alert(node="n2"))
    assert not muter()([node_failure("n1")])(alert(node="n1"))
