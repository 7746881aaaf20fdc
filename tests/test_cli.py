"""`elitemon` on the command line, run in-process against the session's Ray.

The CLI always uses the default aggregator (`aggregator` in namespace `elitemon`), so this module
starts one for all its tests (with the smoke data set written into it) and stops it at the end.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray

import elitemon
from elitemon import cli
from elitemon.cli import main, parse_duration, parse_generations, parse_size, parse_time
from tests.conftest import wait_for

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOKE_AGENTS, SMOKE_METRICS, SMOKE_STEPS = 64, 16, 50  # the sizes `_smoke` writes


def _run_main(argv: list[str]) -> SimpleNamespace:
    """main(argv) with stdout and stderr captured (for module-scoped fixtures, where capsys is not)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return SimpleNamespace(code=code, out=out.getvalue(), err=err.getvalue())


@pytest.fixture(scope="module")
def cli_aggregator(ray_session, tmp_path_factory) -> Iterator[SimpleNamespace]:
    """The default aggregator, started by `elitemon start`, then filled by `elitemon start --smoke`."""
    data_dir = tmp_path_factory.mktemp("cli-data")
    started = _run_main(["start", "--data-dir", str(data_dir)])
    assert started.code == 0, started.err
    smoke = _run_main(["start", "--data-dir", str(data_dir), "--smoke"])
    yield SimpleNamespace(data_dir=data_dir, started=started, smoke=smoke)
    stopped = _run_main(["stop"])
    assert stopped.code == 0, stopped.err
    assert "stopped" in stopped.out
    # Once it is gone, status says so (exit 2 and a hint) instead of hanging or raising.
    wait_for(lambda: _run_main(["status"]).code == 2, what="the stopped aggregator's name to be released")
    gone = _run_main(["status"])
    assert "elitemon start" in gone.err and gone.out == ""


# ------------------------------------------------------------------------ commands, in-process


def test_start_runs_the_aggregator_and_the_smoke_check_passes(cli_aggregator) -> None:
    assert f"data dir: {cli_aggregator.data_dir}" in cli_aggregator.started.out
    assert "rows: 0" in cli_aggregator.started.out
    smoke = cli_aggregator.smoke
    assert smoke.code == 0, smoke.err
    assert "smoke: OK" in smoke.out
    assert f"read back {SMOKE_AGENTS * SMOKE_METRICS * SMOKE_STEPS}" in smoke.out
    assert "FAILED" not in smoke.err
    # Kept apart from the agents that reports, the dashboard and alerts read.
    client = elitemon.connect()
    assert client.samples(kind="smoke").num_rows == SMOKE_AGENTS * SMOKE_METRICS * SMOKE_STEPS
    assert client.samples(kind="agent", node="smoke").num_rows == 0


def test_start_again_attaches_to_the_running_aggregator(cli_aggregator, capsys) -> None:
    assert main(["start", "--data-dir", str(cli_aggregator.data_dir)]) == 0
    out = capsys.readouterr().out
    assert f"data dir: {cli_aggregator.data_dir}" in out
    assert f"rows: {SMOKE_AGENTS * SMOKE_METRICS * SMOKE_STEPS}" in out


def test_status_prints_the_row_count(cli_aggregator, capsys) -> None:
    assert main(["status"]) == 0
    fields = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines() if line.strip())
    assert int(fields["rows"]) == SMOKE_AGENTS * SMOKE_METRICS * SMOKE_STEPS
    assert fields["data_dir"].strip() == str(cli_aggregator.data_dir)


def test_status_json_is_valid_json(cli_aggregator, capsys) -> None:
    assert main(["status", "--json"]) == 0
    health = json.loads(capsys.readouterr().out)
    assert health["rows"] == SMOKE_AGENTS * SMOKE_METRICS * SMOKE_STEPS
    assert health["data_dir"] == str(cli_aggregator.data_dir)
    assert health["rejected_rows"] == 0 and health["duplicates"] == 0


def test_query_samples_downsampled_as_csv(cli_aggregator, capsys) -> None:
    argv = ["query", "samples", "--metric", "metric_0", "--step", "10s", "--agg", "mean", "--format", "csv"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = list(csv.DictReader(lines))
    assert next(csv.reader(lines[:1])) == ["ts", "kind", "node", "source", "metric", "value"]
    # SMOKE_STEPS one-second samples per series fall into 5 or 6 ten-second buckets.
    assert SMOKE_AGENTS * 5 <= len(rows) <= SMOKE_AGENTS * 6
    assert {row["metric"] for row in rows} == {"metric_0"}
    assert {row["kind"] for row in rows} == {"smoke"} and {row["node"] for row in rows} == {"smoke"}
    assert len({row["source"] for row in rows}) == SMOKE_AGENTS
    assert all(math.isfinite(float(row["value"])) for row in rows)


def test_query_limit_keeps_the_last_rows(cli_aggregator, capsys) -> None:
    assert main(["query", "samples", "--metric", "metric_3", "--limit", "3", "--format", "csv"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert len(rows) == 3
    assert {row["metric"] for row in rows} == {"metric_3"}


def test_query_filters_by_generation_range_and_source(cli_aggregator, capsys) -> None:
    assert main(["query", "samples", "--metric", "metric_0", "--generation", "10:12", "--format", "csv"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert len(rows) == SMOKE_AGENTS * 3
    assert {int(row["generation"]) for row in rows} == {10, 11, 12}
    source = rows[0]["source"]
    assert main(["query", "samples", "--source", source, "--metric", "metric_1", "--format", "json"]) == 0
    picked = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(picked) == SMOKE_STEPS and {(r["source"], r["metric"]) for r in picked} == {(source, "metric_1")}


def test_query_since_a_day_keeps_every_recent_row(cli_aggregator, capsys) -> None:
    assert main(["query", "samples", "--metric", "metric_2", "--since", "1d", "--format", "csv"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + SMOKE_AGENTS * SMOKE_STEPS


def test_query_since_zero_keeps_no_rows(cli_aggregator, capsys) -> None:
    """`--since 0s` asks for the last zero seconds: no stored row is that recent."""
    assert main(["query", "samples", "--metric", "metric_2", "--since", "0s", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) <= 1, f"--since 0s returned {len(lines) - 1} rows (the whole history)"


def test_query_latest_as_json_lines(cli_aggregator, capsys) -> None:
    assert main(["query", "latest", "--format", "json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == SMOKE_AGENTS * SMOKE_METRICS  # one per series
    assert {row["generation"] for row in rows} == {SMOKE_STEPS - 1}  # the newest step of each
    assert len({(row["source"], row["metric"]) for row in rows}) == len(rows)


def test_query_events_prints_no_rows(cli_aggregator, capsys) -> None:
    assert main(["query", "events"]) == 0
    assert capsys.readouterr().out.strip() == "(no rows)"


def test_query_with_a_filter_the_table_lacks_fails_naming_it(cli_aggregator, capsys) -> None:
    assert main(["query", "samples", "--param", "x"]) == 2
    captured = capsys.readouterr()
    assert "param" in captured.err and captured.err.startswith("elitemon:")
    assert captured.out == ""


def test_query_step_outside_samples_fails(cli_aggregator, capsys) -> None:
    assert main(["query", "events", "--step", "10s"]) == 2
    assert "--step" in capsys.readouterr().err


def test_agg_without_step_fails_instead_of_being_ignored(cli_aggregator, capsys) -> None:
    assert main(["query", "samples", "--agg", "p99"]) == 2
    assert "--agg needs --step" in capsys.readouterr().err


def test_a_data_dir_that_cannot_be_made_is_refused_before_a_cluster_is_started(monkeypatch, tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    # No cluster to attach to here, so the next step would be `ray start --head`. Should it come
    # first, this stand-in fails it without starting anything (the test fails, nothing is left).
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(cli, "ensure_ray", _no_cluster)
    monkeypatch.setattr(cli, "_RAY_CLI", [sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(NotADirectoryError, match=f"data dir {blocker / 'data'} cannot be created: Not a directory"):
        cli._connect_or_start_ray(None, None, blocker / "data")


def test_stop_ray_with_an_address_is_refused_before_anything_is_stopped(monkeypatch, capsys) -> None:
    """It connected and killed the cluster's aggregator first, then refused."""
    monkeypatch.setattr(cli, "ensure_ray", _no_cluster)  # reached only by a stop that goes ahead
    assert main(["stop", "--ray", "--address", "10.0.0.5:6379"]) == 2
    err = capsys.readouterr().err
    assert "--ray stops the local Ray only" in err and "no Ray cluster" not in err


def _no_cluster(address: str | None) -> None:
    raise ConnectionError(f"no Ray cluster at {address!r}")


def test_a_bad_duration_is_an_argparse_error(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["query", "samples", "--since", "soon"])
    assert exited.value.code == 2
    assert "not a duration: 'soon'" in capsys.readouterr().err


def test_a_memory_budget_too_small_is_an_argparse_error_naming_the_flag(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["start", "--memory-budget", "8MiB"])
    assert exited.value.code == 2
    assert "argument --memory-budget: '8MiB' is below the smallest memory budget, 16MiB" in capsys.readouterr().err


def test_a_missing_command_is_an_argparse_error(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert "required" in capsys.readouterr().err


# -------------------------------------------------------------------------------- parsers


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("90", 90.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
        (" 10s ", 10.0),
        ("1h30m", 5400.0),  # Prometheus' compound durations, as in the rule file
        ("5w", 5 * 7 * 86400.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["soon", "", "-5s", "5 m", "1h30", "s", "1.s", "5%"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    "text, size",
    [
        ("1048576", 1 << 20),
        ("512MiB", 512 << 20),
        ("1GiB", 1 << 30),
        ("1gib", 1 << 30),
        ("1.5KiB", 1536),
        ("2 TiB", 2 << 40),
        ("10B", 10),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "", "-1MiB", "1GB", "MiB", "1 MB"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
        parse_size(text)


@pytest.mark.parametrize(
    "text, epoch",
    [
        ("1700000000", 1_700_000_000.0),
        ("1700000000.5", 1_700_000_000.5),
        ("2024-01-01T00:00:00", datetime(2024, 1, 1, tzinfo=UTC).timestamp()),
        ("2024-01-01", datetime(2024, 1, 1, tzinfo=UTC).timestamp()),
        ("2024-01-01T01:00:00+01:00", datetime(2024, 1, 1, tzinfo=UTC).timestamp()),
    ],
)
def test_parse_time(text: str, epoch: float) -> None:
    assert parse_time(text) == pytest.approx(epoch)


@pytest.mark.parametrize("text", ["yesterday", "", "2024-13-01", "12:00 tomorrow"])
def test_parse_time_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a time"):
        parse_time(text)


@pytest.mark.parametrize(
    "text, bounds",
    [("5", (5, 5)), ("3:9", (3, 9)), (":9", (None, 9)), ("3:", (3, None)), ("0", (0, 0))],
)
def test_parse_generations(text: str, bounds: tuple) -> None:
    assert parse_generations(text) == bounds


@pytest.mark.parametrize("text", ["x", "3:x", "1:2:3", "", "1.5"])
def test_parse_generations_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a generation"):
        parse_generations(text)


# ----------------------------------------------------------------------------- subprocesses


def test_module_entry_point_prints_the_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "elitemon.cli", "--version"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"elitemon {elitemon.__version__}"


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "elitemon"
    assert script.is_file(), f"no console script at {script}; is the package installed in this venv?"
    result = subprocess.run([str(script), "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: elitemon")
    for command in ("start", "status", "stop", "query"):
        assert command in result.stdout


@pytest.mark.parametrize(("command", "flags"), [(["query", "samples"], 2), (["report"], 1)])
def test_time_flags_say_how_a_time_without_an_offset_is_read(command: list[str], flags: int, capsys) -> None:
    """ISO 8601 reads such a time as local; these flags read it as UTC, and now say so."""
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    assert " ".join(capsys.readouterr().out.split()).count("without an offset, UTC") == flags
