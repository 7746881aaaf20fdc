"""The benchmarks run end to end in their --quick form, so they cannot rot between measurements.

Figures are not asserted here (speed is measured by running the benchmarks, not by tests); what is
asserted is that each one completes, checks its own results and prints its figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "RAY_ADDRESS": ""}  # a Ray of its own, never the test session's
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_ingest_benchmark_runs_beside_victoria_metrics() -> None:
    require_tool("victoria-metrics")
    out = _run("ingest.py", "--quick")
    assert "samples/s" in out
    assert "ingest-to-queryable" in out
    assert "elitemon / VictoriaMetrics" in out
    stored = next(line for line in out.splitlines() if "samples it stored" in line).split()
    assert stored[3] == stored[5], f"VictoriaMetrics did not store every sample: {stored}"


def test_query_benchmark_agrees_with_duckdb() -> None:
    out = _run("query.py", "--quick")
    assert "DuckDB/elitemon-hot" in out
    assert "through the aggregator actor" in out


def test_overhead_benchmark_runs_all_three_variants() -> None:
    out = _run("overhead.py", "--quick")
    for variant in ("bare", "tune-loggers", "elitemon"):
        assert any(line.startswith(variant) for line in out.splitlines()), f"no {variant} row in:\n{out}"
    assert "monitoring cost:" in out and "CPU share:" in out


def test_anomaly_evaluation_scores_every_method() -> None:
    out = _run("anomaly_eval.py", "--quick")
    for method in ("RobustDetector", "IsolationForestDetector", "static", "rolling z"):
        assert method in out, f"no {method} row in:\n{out}"
    assert "points/s" in out


def test_importance_evaluation_compares_forest_and_spearman() -> None:
    out = _run("importance_eval.py", "--quick")
    assert "forest" in out and "spearman" in out and "populations in" in out


def test_forecast_evaluation_compares_with_both_baselines() -> None:
    out = _run("forecast_eval.py", "--quick")
    assert "/last" in out and "/linear" in out and "cover80" in out and "abstained" in out
