"""The alerting benchmark runs end to end in its --quick form, beside VictoriaMetrics and vmalert.

As for the other benchmarks, speed is not asserted: what is asserted is that it completes, that its
crossings were all notified (it fails otherwise), and that the table shows every figure, with
latencies that are positive and below a bound no working system comes near (the interval is 1 s).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchmarks.test_benchmarks import _run
from tests.conftest import require_tool

BOUND_S = 15.0


def _latency_rows(out: str) -> dict[str, tuple[float, float, float]]:
    """'elitemon, every 1 s, 3 crossings, firing' -> (mean, p50, p99, max) in seconds."""
    rows = {}
    for line in map(str.strip, out.splitlines()):
        if line.startswith(("elitemon, every", "vmalert, every")):
            label, *numbers = line.rsplit(None, 4)
            rows[label] = tuple(float(number) for number in numbers)
    return rows


def test_alerts_benchmark_times_crossings_and_evaluation_beside_vmalert(tmp_path: Path) -> None:
    require_tool("victoria-metrics")
    require_tool("vmalert")
    figures_file = tmp_path / "alerts.json"
    out = _run("alerts.py", "--quick", "--json", str(figures_file))

    rows = _latency_rows(out)
    for system in ("elitemon", "vmalert"):
        for kind in ("firing", "resolve"):
            mean, p50, p99, worst = rows[f"{system}, every 1 s, 3 crossings, {kind}"]
            assert 0 < p50 <= p99 <= worst < BOUND_S, f"{system} {kind}: {p50=}, {p99=}, {worst=}"
            assert 0 < mean <= worst
    assert "of which producer batch -> queryable" in out and "of which import -> queryable" in out
    for figure in ("compute_snapshot", "AlertEngine.evaluate", "full evaluator round", "vmalert iteration"):
        assert figure in out, f"no {figure} row in:\n{out}"
    assert "scaling exponent" in out and "machine:" in out

    figures = json.loads(figures_file.read_text())
    assert {run["system"] for run in figures["latency"]} == {"elitemon", "vmalert"}
    assert figures["cost"]["rules"] == 100 and figures["cost"]["series"] == 100
    assert figures["vmalert_cost"]["firing"] == figures["cost"]["firing"]  # the benchmark checks it too
