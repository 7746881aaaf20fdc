"""Host and GPU samplers, without Ray: real psutil readings of this machine."""

from __future__ import annotations

import os

from elitemon.collect._gpu import GpuSampler
from elitemon.collect._system import SystemSampler
from elitemon.schema import TableName, batch_from_rows, validate


class SteppingClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def metrics(rows: list[dict]) -> dict[str, float]:
    return {row["metric"]: row["value"] for row in rows}


def test_first_sample_has_levels_and_the_second_adds_rates():
    sampler = SystemSampler("10.0.0.1", "node-a", SteppingClock())
    first = metrics(sampler.sample())
    assert {"cpu_percent", "load_1m", "memory_used_bytes", "memory_available_bytes", "swap_used_bytes"} <= set(first)
    assert f"cpu_percent_core_{os.cpu_count() - 1}" in first
    assert "net_sent_bytes_per_s" not in first  # a rate needs two readings
    second = metrics(sampler.sample())
    assert second["net_sent_bytes_per_s"] >= 0 and second["disk_read_bytes_per_s"] >= 0
    assert 0 < first["memory_available_bytes"]


def test_rows_are_valid_samples_labelled_with_node_and_source():
    rows = SystemSampler("10.0.0.1", "node-a", SteppingClock()).sample()
    checked = validate(TableName.SAMPLES, batch_from_rows("samples", rows), now_us=2_000_000_000 * 10**6)
    assert checked.rejected == 0 and checked.good.num_rows == len(rows)
    assert {(r["kind"], r["node"], r["source"]) for r in rows} == {("node", "10.0.0.1", "node-a")}


def test_a_mapped_trainer_process_reports_rss_then_cpu_under_its_agent():
    sampler = SystemSampler("10.0.0.1", "node-a", SteppingClock())
    agents = {os.getpid(): "trial_0001", 2**22 + 12345: "trial_gone"}  # the second pid does not exist
    first = [r for r in sampler.sample(agents) if r["kind"] == "agent"]
    assert [(r["source"], r["metric"]) for r in first] == [("trial_0001", "process_rss_bytes")]
    assert first[0]["value"] > 10 * 2**20  # this test process holds well over 10 MiB
    second = {r["metric"] for r in sampler.sample(agents) if r["kind"] == "agent"}
    assert second == {"process_rss_bytes", "process_cpu_percent"}


def test_without_nvml_the_gpu_sampler_says_why_once():
    sampler, status = GpuSampler.open("10.0.0.1")
    if sampler is None:  # this machine: no GPU, no NVML library
        assert "GPU metrics off" in status
    else:
        rows = sampler.sample(1_800_000_000.0)
        assert {r["metric"] for r in rows} >= {"gpu_utilization_percent", "gpu_memory_total_bytes"}
