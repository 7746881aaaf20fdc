"""`elitemon alerts ...` in-process: `check` without Ray; the rest against the session's Ray with the
default aggregator (started and stopped by this module, as tests/test_cli.py does)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from elitemon.cli import main
from elitemon.producer import Producer, RaySink
from tests.alerts.test_evaluator import RULES as LOSS_RULE
from tests.conftest import wait_for
from tests.test_cli import _run_main

RULES = LOSS_RULE + "route:\n  receiver: default\n  group_wait: 0s\n"  # the evaluator tests' rule, routed


def test_check_accepts_the_shipped_rules(capsys) -> None:
    assert main(["alerts", "check"]) == 0
    assert "5 rules OK (performance_degradation, convergence_stall" in capsys.readouterr().out


def test_check_points_at_every_problem_by_line_and_column(tmp_path: Path, capsys) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text('alert_rules:\n  x:\n    threshold: "cpu_usag > 2"\n    severity: BAD\n    action: a\n')
    assert main(["alerts", "check", str(rules)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{rules}:3:17: rule 'x': threshold: at column 1: unknown name 'cpu_usag'; did you mean 'cpu_usage'?",
        f"{rules}:4:15: rule 'x': severity: unknown severity 'BAD': expected one of INFO, LOW, MEDIUM, HIGH, CRITICAL",
    ]


def test_check_reports_section_problems_at_their_line(tmp_path: Path, capsys) -> None:
    rules = tmp_path / "rules.yaml"
    text = RULES.replace("receiver: default", "receiver: nobody").replace("200ms", "soon")
    rules.write_text(text)
    assert main(["alerts", "check", str(rules)]) == 1
    err = capsys.readouterr().err
    assert f"{rules}:3:3: settings.evaluation_interval: " in err  # at the key, not its section
    assert f"{rules}:11:3: route.receiver: unknown receiver 'nobody' (receivers: default)" in err


def test_a_receiver_with_a_problem_is_not_also_called_unknown(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("ELITEMON_TEST_UNSET_URL", raising=False)
    rules = tmp_path / "rules.yaml"
    ops = "receivers:\n  - name: ops\n    slack_configs: [{api_url: '${ELITEMON_TEST_UNSET_URL}'}]\n"
    rules.write_text(RULES.replace("receiver: default", "receiver: ops") + ops)
    assert main(["alerts", "check", str(rules)]) == 1
    err = capsys.readouterr().err.splitlines()
    # At the receiver's entry (line 14, column 5), which names it.
    assert err == [f"{rules}:14:5: receiver 'ops': environment variable ELITEMON_TEST_UNSET_URL is not set"]


def test_check_of_a_missing_file_fails_clearly(tmp_path: Path, capsys) -> None:
    assert main(["alerts", "check", str(tmp_path / "none.yaml")]) == 1
    assert "No such file" in capsys.readouterr().err


def test_commands_against_a_running_evaluator(ray_session, tmp_path: Path, capsys) -> None:
    assert _run_main(["start", "--data-dir", str(tmp_path / "data")]).code == 0
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    try:
        started = _run_main(["alerts", "start", str(rules)])
        assert started.code == 0 and "1 rules every 0.2 s" in started.out, started.err
        producer = Producer(RaySink(), name="test-cli-alerts")
        producer.write_rows(
            "samples",
            [{"ts": time.time(), "kind": "agent", "node": "n1", "source": "a1", "metric": "loss", "value": 9}],
        )
        assert producer.close(timeout=30)

        def firing() -> list[dict]:
            listed = _run_main(["alerts", "list", "--json"])
            return [a for a in json.loads(listed.out) if a["state"] == "firing"]

        (alert,) = wait_for(firing, timeout_s=30, what="the alert to fire")
        assert alert["labels"] == {"agent": "a1", "alertname": "loss_high", "node": "n1", "severity": "MEDIUM"}

        silenced = _run_main(
            ["alerts", "silence", 'agent="a1"', "--author", "me", "--comment", "known", "--duration", "1h"]
        )
        assert silenced.code == 0, silenced.err
        silence_id = silenced.out.strip()
        (listed,) = json.loads(_run_main(["alerts", "silence", "--list", "--json"]).out)
        assert listed["id"] == silence_id and listed["state"] == "active" and listed["matchers"] == ['agent="a1"']
        assert firing()[0]["silenced_by"] == [silence_id]
        assert _run_main(["alerts", "silence", "--expire", silence_id]).code == 0
        assert firing()[0]["silenced_by"] == []

        assert _run_main(["alerts", "ack", alert["fingerprint"], "--author", "me", "--comment", "on it"]).code == 0
        history = wait_for(
            lambda: json.loads(_run_main(["alerts", "list", "--history", "--json"]).out), what="the alert's event"
        )
        assert [(h["type"], h["fingerprint"]) for h in history] == [("alert_firing", alert["fingerprint"])]
        assert json.loads(_run_main(["alerts", "deliveries", "--json"]).out) == []  # no integrations
        missing = _run_main(["alerts", "silence", 'agent="a1"'])
        assert missing.code == 2 and "--author and --comment" in missing.err
    finally:
        stopped = _run_main(["alerts", "stop", "--address", "auto"])  # it takes --address as the others do
        assert stopped.code == 0, stopped.err
        # The history is the store's: it is listed without an evaluator (it needed one).
        after = _run_main(["alerts", "list", "--history", "--json"])
        assert after.code == 0 and [h["type"] for h in json.loads(after.out)] == ["alert_firing"], after.err
        assert _run_main(["stop"]).code == 0
    gone = _run_main(["alerts", "list"])
    assert gone.code == 2 and "elitemon alerts start" in gone.err


def test_listed_times_read_as_times_and_values_as_values(capsys) -> None:
    """A value over 1e9 (free memory in bytes, say) was printed as a date."""
    from argparse import Namespace

    from elitemon.alerts.commands import _print

    _print(Namespace(json=False), [{"alertname": "low_memory", "value": 1.5e9, "active_since": 1.5e9}])
    printed = capsys.readouterr().out.strip()
    assert printed == "alertname=low_memory  value=1500000000.0  active_since=2017-07-14T02:40:00Z"


@pytest.mark.parametrize("command", [["alerts"], ["alerts", "silence", "--duration", "later"]])
def test_argument_errors_are_argparse_errors(command: list[str]) -> None:
    with pytest.raises(SystemExit):
        main(command)


def test_the_readme_rule_file_example_checks(tmp_path: Path, monkeypatch, capsys) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = readme.split("## Alerts", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    for name in ("SLACK_WEBHOOK_URL", "SMTP_PASSWORD", "PAGERDUTY_KEY"):
        monkeypatch.setenv(name, "https://hooks.example/secret")
    rules = tmp_path / "rules.yaml"
    rules.write_text(example)
    assert main(["alerts", "check", str(rules)]) == 0, capsys.readouterr().err
