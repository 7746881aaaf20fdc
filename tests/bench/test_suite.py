"""The benchmark suite: scoring and rating against hand values, then a tiny run end to end on the CPU."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from elitemon.bench.suite import (
    QUICK,
    SPECS,
    BenchmarkResult,
    Rating,
    SuiteResult,
    SuiteSettings,
    add_arguments,
    overall,
    rating_of,
    render,
    score,
    settings_from_args,
    store_rows,
)
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("actual", "target", "expected"),
    [
        (25e6, 50e6, 50.0),
        (50e6, 50e6, 100.0),
        (400e6, 50e6, 100.0),  # capped
        (0.76, 0.95, 80.0),
        (2.0, 8.0, 25.0),
        (0.0, 0.9, 0.0),
        (-1.0, 8.0, 0.0),  # floored
    ],
)
def test_score_is_the_percentage_of_the_target_capped_at_100(actual: float, target: float, expected: float) -> None:
    assert score(actual, target) == pytest.approx(expected)


def test_score_refuses_a_target_it_cannot_divide_by() -> None:
    for target in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="target"):
            score(1.0, target)
    with pytest.raises(ValueError, match="actual"):
        score(float("nan"), 1.0)


@pytest.mark.parametrize(
    ("mean", "rating"),
    [
        (100.0, Rating.EXCELLENT),
        (90.0, Rating.EXCELLENT),
        (89.99, Rating.GOOD),
        (75.0, Rating.GOOD),
        (74.99, Rating.FAIR),
        (50.0, Rating.FAIR),
        (49.99, Rating.POOR),
        (0.0, Rating.POOR),
    ],
)
def test_rating_thresholds(mean: float, rating: Rating) -> None:
    assert rating_of(mean) is rating


def _results() -> tuple[BenchmarkResult, ...]:
    return (
        BenchmarkResult.measured("holomorphic_processing", 100e6, workers=[]),  # 200% of target: 100
        BenchmarkResult.skip("gpu_acceleration", "no GPU in the Ray cluster"),
        BenchmarkResult.measured("distributed_scaling", 0.57),  # 60
        BenchmarkResult.skip("pbt_evolution", "--skip-pbt"),
    )


def test_the_rating_averages_the_benchmarks_that_ran_and_leaves_skipped_ones_out() -> None:
    mean, rating = overall(_results())
    assert mean == pytest.approx(80.0) and rating is Rating.GOOD
    assert overall([BenchmarkResult.skip("gpu_acceleration", "no GPU")]) == (None, None)
    skipped = _results()[1]
    assert (skipped.value, skipped.score, skipped.metric, skipped.target) == (None, None, "speedup", 8.0)


def test_the_table_json_and_store_rows_carry_every_result() -> None:
    suite = SuiteResult(_results(), peer={}, environment={"nodes": 1})
    table = render(suite)
    assert table.splitlines()[0].split() == ["benchmark", "metric", "value", "target", "score"]
    assert "100.0M samples/s" in table and "50.0M samples/s" in table and "57.0%" in table
    assert "skipped: no GPU in the Ray cluster" in table
    assert "overall: GOOD, mean score 80.0 over 2 of 4 benchmarks" in table
    document = suite.to_json()
    assert document["rating"] == "GOOD" and document["average_score"] == pytest.approx(80.0)
    assert [b["name"] for b in document["benchmarks"]][:2] == ["holomorphic_processing", "gpu_acceleration"]

    samples, events = store_rows(suite, ts=1_000.0, node="10.0.0.5")
    assert {(r["source"], r["metric"]) for r in samples} == {
        ("holomorphic_processing", "samples_per_s"),
        ("holomorphic_processing", "score"),
        ("distributed_scaling", "scaling_efficiency"),
        ("distributed_scaling", "score"),
    }
    assert all(r["kind"] == "bench" and r["node"] == "10.0.0.5" for r in samples)
    (event,) = events
    assert event["type"] == "bench_result" and json.loads(event["payload"]) == document


def test_nothing_measured_is_not_rated() -> None:
    suite = SuiteResult((BenchmarkResult.skip("gpu_acceleration", "no GPU"),), peer={}, environment={})
    assert suite.rating is None and "not rated" in render(suite)
    assert suite.to_json()["rating"] is None


def test_settings_are_checked_naming_the_value() -> None:
    for values, message in (
        ({"duration_s": 0}, "duration_s"),
        ({"frame_size": 63}, "frame_size"),
        ({"pbt_agents": 1}, "pbt_agents"),
        ({"scaling_workers": 1}, "scaling_workers"),
        ({"use_gpu": "sometimes"}, "use_gpu"),
        ({"copy_bytes": 10}, "copy_bytes"),
    ):
        with pytest.raises(ValueError, match=message):
            SuiteSettings(**values)


def test_options_start_from_quick_and_override_it() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    settings = settings_from_args(parser.parse_args(["--quick", "--duration-s", "2", "--skip-pbt", "--no-gpu"]))
    assert settings.frame_size == QUICK["frame_size"] and settings.duration_s == 2.0
    assert settings.pbt is False and settings.use_gpu is False
    assert settings_from_args(parser.parse_args([])) == SuiteSettings()


def test_the_script_refuses_bad_settings_before_starting_ray() -> None:
    env = {**os.environ, "RAY_ADDRESS": ""}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run_suite.py"), "--duration-s", "-1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "duration_s" in done.stderr and "ray" not in done.stdout.lower()


def test_the_suite_runs_end_to_end_on_the_cpu(ray_session, aggregator_name: str, tmp_path: Path, capsys) -> None:
    import ray

    from elitemon import cli
    from elitemon.aggregator import start_aggregator
    from elitemon.client import Client
    from elitemon.config import StoreConfig

    # Held here, so that the store outlives the command (which attaches to it) and can be queried.
    handle = start_aggregator(StoreConfig(data_dir=tmp_path / "data"), name=aggregator_name)
    out = tmp_path / "suite.json"
    status = cli.main(
        [
            "bench",
            "--quick",
            "--no-gpu",
            "--worker-cpus",
            "0.25",
            "--aggregator-name",
            aggregator_name,
            "--data-dir",
            str(tmp_path / "data"),
            "--pbt-storage-path",
            str(tmp_path / "tune"),
            "--json",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    try:
        assert status == 0, printed
        for name in SPECS:
            assert any(line.startswith(name) for line in printed.splitlines()), f"no {name} row in:\n{printed}"
        assert "skipped: GPUs not used (--no-gpu)" in printed and "overall: " in printed
        assert "elitemon / scipy" in printed

        document = json.loads(out.read_text())
        results = {b["name"]: b for b in document["benchmarks"]}
        assert list(results) == list(SPECS)
        assert results["holomorphic_processing"]["value"] > 0
        assert results["gpu_acceleration"]["skipped"] == "GPUs not used (--no-gpu)"
        assert results["distributed_scaling"]["details"]["workers"] == 2
        assert 0 < results["memory_efficiency"]["value"]
        assert 0 <= results["pbt_evolution"]["value"] <= 1 and results["pbt_evolution"]["details"]["agents"] == 2
        assert document["rating"] in {r.value for r in Rating}

        client = Client(handle, name=aggregator_name)
        measured = [name for name, b in results.items() if b["value"] is not None]
        (samples,) = wait_for(
            lambda: [t] if (t := client.samples(kind="bench", source=measured)).num_rows == 2 * len(measured) else None,
            what="the suite's bench samples",
        )
        rows = samples.to_pylist()
        stored = {(row["source"], row["metric"]): row["value"] for row in rows}
        assert stored[("holomorphic_processing", "samples_per_s")] == results["holomorphic_processing"]["value"]
        assert stored[("pbt_evolution", "score")] == results["pbt_evolution"]["score"]
        (event,) = client.events(type="bench_result").to_pylist()
        assert json.loads(event["payload"]) == document
        workers = client.samples(kind="bench", metric="holomorphic_throughput").column("source").to_pylist()
        assert "holomorphic-cpu0" in workers, "the workers reported while they ran"
    finally:
        ray.kill(handle, no_restart=True)


def test_a_json_path_in_a_missing_directory_is_refused_before_the_suite_runs(tmp_path) -> None:
    """It failed after the whole suite, and took the results with it (they were stored after)."""
    from elitemon.bench.suite import execute

    with pytest.raises(FileNotFoundError, match="--json: no directory .*missing"):
        execute(SuiteSettings(), json_path=tmp_path / "missing" / "suite.json")  # nothing started: no Ray needed
