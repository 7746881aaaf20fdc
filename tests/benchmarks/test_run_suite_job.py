"""benchmarks/run_suite.py under `ray job submit`, against a Ray head started for the test: the
suite's table comes back in the job's output and its results are in the job's store."""

from __future__ import annotations

from pathlib import Path

from elitemon.query import select
from tests.conftest import open_store, submit_job


def test_suite_runs_under_ray_job_submit(ray_head: tuple[str, dict], tmp_path: Path) -> None:
    address, env = ray_head
    data_dir = tmp_path / "data"
    command = ["python", "benchmarks/run_suite.py", "--address", "auto", "--quick", "--skip-pbt"]
    done = submit_job(address, env, [*command, "--data-dir", str(data_dir), "--json", str(tmp_path / "suite.json")])
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "holomorphic_processing" in done.stdout and "succeeded" in done.stdout
    assert (tmp_path / "suite.json").exists()
    store = open_store(data_dir)  # the job's aggregator ends with the job
    try:
        events = store.scan(select("events", type="bench_result"))
        assert events.num_rows == 1
        assert store.scan(select("samples", kind="bench", source="holomorphic_processing")).num_rows >= 2
    finally:
        store.close()
