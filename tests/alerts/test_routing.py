"""Routing tree, matchers, durations and the aggregation groups' timing, on a fake clock."""

from __future__ import annotations

from dataclasses import replace

import pytest

from elitemon.alerts._model import Alert, Status
from elitemon.alerts.routing import Matcher, MatchType, Route, Router

T0 = 1_700_000_000.0


class FakeClock:
    """A wall clock that moves only when told to."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def alert(name: str = "node_failure", severity: str = "CRITICAL", starts_at: float = T0, **labels: str) -> Alert:
    return Alert({"alertname": name, "severity": severity, **labels}, {}, Status.FIRING, starts_at)


def resolved(firing: Alert, at: float) -> Alert:
    return replace(firing, status=Status.RESOLVED, ends_at=at)


def route(**config) -> Route:
    return Route.from_config({"receiver": "default", **config})


def names(notification) -> list[tuple[str, str, Status]]:
    return [(a.name, a.labels.get("node", ""), a.status) for a in notification.alerts]


# ------------------------------------------------------------------------------------ matchers


@pytest.mark.parametrize(
    "text, name, type_, value",
    [
        ('severity="CRITICAL"', "severity", MatchType.EQUAL, "CRITICAL"),
        ('alertname!="x"', "alertname", MatchType.NOT_EQUAL, "x"),
        (r'node=~"10\\..*"', "node", MatchType.REGEX, r"10\..*"),
        (r'node=~"10\..*"', "node", MatchType.REGEX, r"10\..*"),  # a spurious escape stays literal
        ('a!~"re"', "a", MatchType.NOT_REGEX, "re"),
        ("  job = api  ", "job", MatchType.EQUAL, "api"),  # unquoted, spaces around
        (r'msg="say \"hi\"\n"', "msg", MatchType.EQUAL, 'say "hi"\n'),
        ('team=""', "team", MatchType.EQUAL, ""),
        ("x:y=1", "x:y", MatchType.EQUAL, "1"),
    ],
)
def test_matcher_parse(text, name, type_, value):
    matcher = Matcher.parse(text)
    assert (matcher.name, matcher.type, matcher.value) == (name, type_, value)
    assert Matcher.parse(str(matcher)) == matcher


@pytest.mark.parametrize(
    "text, message",
    [
        ("severity", "bad matcher format"),
        ('="x"', "bad matcher format"),
        ('1a="x"', "bad matcher format"),
        ('a="b"c"', "unescaped double quote"),
        ('a="b', "unescaped double quote"),
        ('a=b"', "unescaped double quote"),
        ('a=~"("', "invalid regex"),
    ],
)
def test_matcher_parse_errors(text, message):
    with pytest.raises(ValueError, match=message):
        Matcher.parse(text)


def test_matchers_are_anchored_and_read_missing_labels_as_empty():
    assert Matcher.parse('node=~"10\\..*"').matches({"node": "10.0.0.1"})
    assert not Matcher.parse('node=~"10\\..*"').matches({"node": "100.0.0.1"})
    assert not Matcher.parse('node=~"n1"').matches({"node": "n10"})
    assert Matcher.parse('node!~"n1|n2"').matches({"node": "n3"})
    assert Matcher.parse('team=""').matches({})
    assert Matcher.parse('team!="ops"').matches({})
    assert not Matcher.parse('team!=""').matches({})
    assert not Matcher.parse('node=~"n1|n2"').matches({"node": "n1x"})  # each alternative anchored
    assert Matcher.parse('node=~"(?i)N1"').matches({"node": "n1"})  # a flag group, as RE2 takes it


# ------------------------------------------------------------------------------------ route config


def test_durations_and_defaults():
    tree = route(
        group_wait="10s",
        routes=[{"matchers": ['a="1"'], "group_interval": "1h30m", "repeat_interval": "1d"}, {"group_wait": 2.5}],
    )
    assert (tree.group_wait, tree.group_interval, tree.repeat_interval) == (10.0, 300.0, 14400.0)
    assert (tree.routes[0].group_wait, tree.routes[0].group_interval, tree.routes[0].repeat_interval) == (
        10.0,
        5400.0,
        86400.0,
    )
    assert tree.routes[1].group_wait == 2.5
    assert route(group_wait=0).group_wait == 0.0
    assert route(group_wait="500ms").group_wait == 0.5
    assert route(group_wait="1m30s").group_wait == 90.0


@pytest.mark.parametrize(
    "config, message",
    [
        ({"routes": [{}, {"group_wait": "abc"}]}, "route.routes[1].group_wait: not a duration: 'abc'"),
        ({"group_wait": -1}, "route.group_wait: not a duration: -1"),
        ({"group_wait": True}, "route.group_wait: not a duration: True"),
        ({"repeat_interval": "5"}, "route.repeat_interval: not a duration: '5'"),
        ({"group_interval": "0s"}, "route.group_interval: must be positive"),
        ({"routes": [{"recevier": "x"}]}, "route.routes[0].recevier: unknown key"),
        ({"routes": [{"matchers": ['a="1"', "oops"]}]}, "route.routes[0].matchers[1]: bad matcher format"),
        ({"matchers": ['a="1"']}, "route.matchers: the root route"),
        ({"continue": True}, "route.continue: the root route cannot continue"),
        ({"routes": [{"continue": "yes"}]}, "route.routes[0].continue: expected true or false"),
        ({"group_by": ["...", "node"]}, "route.group_by: '...' cannot be combined"),
        ({"group_by": ["node", "node"]}, "route.group_by: duplicated label 'node'"),
        ({"group_by": "node"}, "route.group_by: expected a list"),
        ({"routes": {"receiver": "x"}}, "route.routes: expected a list"),
        ({"routes": [{"receiver": ""}]}, "route.routes[0].receiver: expected a non-empty string"),
    ],
)
def test_config_errors_name_the_key_path(config, message):
    with pytest.raises(ValueError) as raised:
        route(**config)
    assert str(raised.value).startswith(message)


def test_root_needs_a_receiver():
    with pytest.raises(ValueError, match="route.receiver"):
        Route.from_config({"group_by": ["node"]})


def test_children_inherit_and_override():
    tree = route(
        group_by=["alertname"],
        repeat_interval="1h",
        routes=[
            {"matchers": ['severity="CRITICAL"'], "receiver": "pager", "routes": [{"matchers": ['node="n1"']}]},
            {"matchers": ['severity="HIGH"'], "group_by": ["..."]},
        ],
    )
    critical, high = tree.routes
    grandchild = critical.routes[0]
    assert (grandchild.receiver, grandchild.group_by, grandchild.repeat_interval) == ("pager", ("alertname",), 3600.0)
    assert (high.receiver, high.group_by_all) == ("default", True)
    assert grandchild.key == '{}/{severity="CRITICAL"}/{node="n1"}'
    assert high.group_labels({"a": "1", "b": "2"}) == {"a": "1", "b": "2"}
    assert tree.group_labels({"alertname": "x", "node": "n1"}) == {"alertname": "x"}


def test_first_matching_child_takes_the_alert_unless_it_continues():
    tree = route(
        routes=[
            {"matchers": ['severity="CRITICAL"'], "receiver": "audit", "continue": True},
            {"matchers": ['severity=~"CRITICAL|HIGH"'], "receiver": "pager"},
            {"matchers": ['severity="CRITICAL"'], "receiver": "never"},
        ]
    )
    receivers = lambda labels: [r.receiver for r in tree.match(labels)]  # noqa: E731
    assert receivers({"severity": "CRITICAL"}) == ["audit", "pager"]
    assert receivers({"severity": "HIGH"}) == ["pager"]
    assert receivers({"severity": "LOW"}) == ["default"]


def test_a_child_without_matching_grandchildren_keeps_the_alert():
    tree = route(routes=[{"matchers": ['team="ml"'], "receiver": "ml", "routes": [{"matchers": ['node="n1"']}]}])
    assert [r.key for r in tree.match({"team": "ml", "node": "n2"})] == ['{}/{team="ml"}']
    assert [r.key for r in tree.match({"team": "ml", "node": "n1"})] == ['{}/{team="ml"}/{node="n1"}']


def test_siblings_with_equal_matchers_get_distinct_keys():
    tree = route(routes=[{"matchers": ['a="1"'], "continue": True}, {"matchers": ['a="1"']}, {}])
    assert [r.key for r in tree.routes] == ['{}/{a="1"}/0', '{}/{a="1"}/1', "{}/{}"]


# ------------------------------------------------------------------------------------ grouping and timing


def make_router(clock: FakeClock, **config) -> Router:
    settings = {"group_by": ["alertname"], "group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h"}
    return Router(route(**{**settings, **config}), clock=clock)


def test_group_wait_batches_alerts_into_one_notification():
    clock = FakeClock()
    router = make_router(clock)
    router.ingest([alert(node="n1")])
    clock.now = T0 + 10
    router.ingest([alert(node="n2"), alert(node="n3")])
    assert router.next_due() == T0 + 30
    clock.now = T0 + 29
    assert router.flush_due() == []
    clock.now = T0 + 30
    (notification,) = router.flush_due()
    assert notification.receiver == "default"
    assert notification.group_key == '{}:{alertname="node_failure"}'
    assert dict(notification.group_labels) == {"alertname": "node_failure"}
    assert [a.labels["node"] for a in notification.alerts] == ["n1", "n2", "n3"]
    assert notification.status is Status.FIRING
    assert router.flush_due() == []  # one notification per group per flush


def test_group_key_reads_like_alertmanagers():
    clock = FakeClock()
    router = Router(
        route(group_by=["alertname", "node"], routes=[{"matchers": ['severity="CRITICAL"'], "receiver": "pager"}]),
        clock=clock,
    )
    router.ingest([alert(node="n1"), alert(node="n2")])
    clock.now = T0 + 30
    keys = [(n.receiver, n.group_key) for n in router.flush_due()]
    assert keys == [
        ("pager", '{}/{severity="CRITICAL"}:{alertname="node_failure", node="n1"}'),
        ("pager", '{}/{severity="CRITICAL"}:{alertname="node_failure", node="n2"}'),
    ]


def test_continue_sends_one_notification_per_route_even_to_the_same_receiver():
    clock = FakeClock()
    config = {"routes": [{"matchers": ['severity="CRITICAL"'], "continue": True}, {"matchers": ['node="n1"']}]}
    router = make_router(clock, **config)
    router.ingest([alert(node="n1"), alert(node="n1", name="gpu_hot")])
    clock.now = T0 + 30
    keys = sorted(n.group_key for n in router.flush_due())
    assert keys == [
        '{}/{node="n1"}:{alertname="gpu_hot"}',
        '{}/{node="n1"}:{alertname="node_failure"}',
        '{}/{severity="CRITICAL"}:{alertname="gpu_hot"}',
        '{}/{severity="CRITICAL"}:{alertname="node_failure"}',
    ]


def test_changes_wait_for_group_interval():
    clock = FakeClock()
    router = make_router(clock)
    router.ingest([alert(node="n1")])
    clock.now = T0 + 30
    assert len(router.flush_due()) == 1
    clock.now = T0 + 40
    router.ingest([alert(node="n2")])
    assert router.next_due() == T0 + 330
    clock.now = T0 + 329
    assert router.flush_due() == []
    clock.now = T0 + 330
    (notification,) = router.flush_due()
    assert [a.labels["node"] for a in notification.alerts] == ["n1", "n2"]


def test_unchanged_groups_repeat_every_repeat_interval():
    clock = FakeClock()
    router = make_router(clock)
    router.ingest([alert(node="n1")])
    clock.now = T0 + 30
    assert len(router.flush_due()) == 1
    sent = []
    while clock.now < T0 + 30 + 8 * 3600:
        clock.now = router.next_due()
        sent += [clock.now - T0 for _ in router.flush_due()]
    assert sent == [30 + 4 * 3600, 30 + 8 * 3600]


def test_a_group_restored_as_notified_sends_only_changes_or_its_repeat():
    """After a restart (Alertmanager's notification log): what the receiver was told before is not
    sent again at group_wait; a new alert is, and so is the repeat once repeat_interval has passed."""
    clock = FakeClock()
    before = make_router(clock)
    n1, n2 = alert(node="n1"), alert(node="n2")
    before.ingest([n1])
    clock.now = T0 + 30
    (told,) = before.flush_due()

    clock.now = T0 + 600  # the restart
    after = make_router(clock)
    after.ingest([n1])
    after.restore_notified(told.group_key, [n1.fingerprint, "gone-since"], at=T0 + 30)
    after.restore_notified("no such group", [n1.fingerprint], at=T0 + 30)  # nothing to do
    clock.now = T0 + 630
    assert after.flush_due() == []
    after.ingest([n2])
    clock.now = after.next_due()
    (changed,) = after.flush_due()
    assert [a.labels["node"] for a in changed.alerts] == ["n1", "n2"]

    again = make_router(clock)
    again.ingest([n1])
    again.restore_notified(told.group_key, [n1.fingerprint], at=T0 + 30)
    clock.now = T0 + 30 + 4 * 3600
    assert len(again.flush_due()) == 1  # the repeat, due from the recorded send


def test_a_newer_ingest_replaces_the_stored_state():
    clock = FakeClock()
    router = make_router(clock)
    router.ingest([alert(node="n1")])
    router.ingest([replace(alert(node="n1"), value=7.0)])
    clock.now = T0 + 30
    (notification,) = router.flush_due()
    assert [a.value for a in notification.alerts] == [7.0]


def test_a_resolve_is_sent_once_and_the_empty_group_is_deleted():
    clock = FakeClock()
    router = make_router(clock)
    n1, n2 = alert(node="n1"), alert(node="n2")
    router.ingest([n1, n2])
    clock.now = T0 + 30
    router.flush_due()
    clock.now = T0 + 100
    router.ingest([resolved(n1, T0 + 100)])
    clock.now = T0 + 330
    (notification,) = router.flush_due()
    assert names(notification) == [("node_failure", "n2", Status.FIRING), ("node_failure", "n1", Status.RESOLVED)]
    assert notification.status is Status.FIRING
    router.ingest([resolved(n1, T0 + 100)])  # sources resend resolved alerts for a while
    clock.now = T0 + 630
    assert router.flush_due() == []
    router.ingest([resolved(n2, T0 + 700)])
    clock.now = T0 + 930
    (notification,) = router.flush_due()
    assert names(notification) == [("node_failure", "n2", Status.RESOLVED)]
    assert notification.status is Status.RESOLVED
    assert router.next_due() is None


def test_an_alert_resolved_before_its_first_notification_is_never_sent():
    clock = FakeClock()
    router = make_router(clock)
    router.ingest([alert(node="n1")])
    clock.now = T0 + 10
    router.ingest([resolved(alert(node="n1"), T0 + 10)])
    clock.now = T0 + 30
    assert router.flush_due() == []
    assert router.next_due() is None


def test_a_resolved_alert_alone_creates_no_group():
    router = make_router(FakeClock())
    router.ingest([resolved(alert(), T0)])
    assert router.next_due() is None


def test_an_alert_firing_again_after_its_resolve_is_a_change():
    clock = FakeClock()
    router = make_router(clock)
    n1, n2 = alert(node="n1"), alert(node="n2")
    router.ingest([n1, n2])
    clock.now = T0 + 30
    router.flush_due()
    router.ingest([resolved(n1, T0 + 30)])
    clock.now = T0 + 330
    router.flush_due()
    router.ingest([alert(node="n1", starts_at=T0 + 400)])
    clock.now = T0 + 630
    (notification,) = router.flush_due()
    assert names(notification) == [("node_failure", "n1", Status.FIRING), ("node_failure", "n2", Status.FIRING)]


def test_mute_is_asked_at_each_evaluation():
    clock = FakeClock()
    muted = {"n1"}
    seen_firing = []

    def mute(firing):
        seen_firing.append(len(firing))
        return lambda candidate: candidate.labels.get("node") in muted

    router = Router(route(group_by=["alertname"]), clock=clock, mute=mute)
    router.ingest([alert(node="n1")])
    clock.now = T0 + 30
    assert router.flush_due() == []
    muted.clear()
    clock.now = T0 + 330
    (notification,) = router.flush_due()
    assert names(notification) == [("node_failure", "n1", Status.FIRING)]
    assert seen_firing == [1, 1]


def test_a_resolve_whose_firing_was_muted_is_not_sent():
    clock = FakeClock()
    router = Router(route(group_by=["alertname"]), clock=clock, mute=lambda firing: lambda a: a.labels["node"] == "n1")
    n1, n2 = alert(node="n1"), alert(node="n2")
    router.ingest([n1, n2])
    clock.now = T0 + 30
    assert [names(n) for n in router.flush_due()] == [[("node_failure", "n2", Status.FIRING)]]
    router.ingest([resolved(n1, T0 + 40)])
    clock.now = T0 + 330
    assert router.flush_due() == []


def test_a_resolve_is_sent_when_the_alert_was_muted_after_its_firing_was_sent():
    clock = FakeClock()
    muted: set[str] = set()
    router = Router(route(group_by=["alertname"]), clock=clock, mute=lambda firing: lambda a: a.fingerprint in muted)
    n1 = alert(node="n1")
    router.ingest([n1])
    clock.now = T0 + 30
    assert len(router.flush_due()) == 1
    muted.add(n1.fingerprint)
    router.ingest([resolved(n1, T0 + 40)])
    clock.now = T0 + 330
    (notification,) = router.flush_due()
    assert names(notification) == [("node_failure", "n1", Status.RESOLVED)]


def test_suppress_repeat_stops_repeats_but_not_changes_or_resolves():
    clock = FakeClock()
    quiet: set[str] = set()
    router = Router(
        route(group_by=["alertname"], repeat_interval="1h"),
        clock=clock,
        suppress_repeat=lambda a: a.fingerprint in quiet,
    )
    n1 = alert(node="n1")
    router.ingest([n1])
    clock.now = T0 + 30
    router.flush_due()
    quiet.add(n1.fingerprint)
    clock.now = T0 + 30 + 3 * 3600
    assert router.flush_due() == []
    router.ingest([alert(node="n2")])
    clock.now = router.next_due()
    (notification,) = router.flush_due()  # a change shows the whole group, acknowledged alerts too
    assert [a.labels["node"] for a in notification.alerts] == ["n1", "n2"]
    router.ingest([resolved(n1, clock.now)])
    clock.now = router.next_due()
    (notification,) = router.flush_due()
    assert names(notification) == [("node_failure", "n2", Status.FIRING), ("node_failure", "n1", Status.RESOLVED)]
