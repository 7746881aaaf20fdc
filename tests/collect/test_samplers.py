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


def test_network_rates_survive_an_interface_going_away_and_a_wall_clock_step(monkeypatch):
    """A container's virtual interface that disappears took the summed counter down, so the whole
    node's rate read 0; rates were divided by wall-clock time, so an NTP step inflated them. (The
    interfaces are stood in: removing one needs root.)"""
    from collections import namedtuple

    from elitemon.collect import _system

    nic = namedtuple("nic", "bytes_sent bytes_recv")
    readings = iter(
        [
            {"eth0": nic(0, 0), "veth1": nic(50 * 10**9, 50 * 10**9)},
            {"eth0": nic(100 * 10**6, 20 * 10**6), "veth2": nic(5, 5)},  # veth1 gone, veth2 new
        ]
    )
    monkeypatch.setattr(_system.psutil, "net_io_counters", lambda pernic=False: next(readings))
    wall = iter([1_800_000_000.0, 1_800_000_000.0 - 3600])  # stepped back an hour
    ticks = iter([500.0, 510.0])  # 10 s apart, monotonic
    sampler = SystemSampler("10.0.0.1", "node-a", lambda: next(wall), elapsed_clock=lambda: next(ticks))
    sampler.sample()
    second = metrics(sampler.sample())
    assert second["net_sent_bytes_per_s"] == 10 * 10**6 and second["net_recv_bytes_per_s"] == 2 * 10**6


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


class FakeNvml:
    """NVML as the sampler calls it, for what no GPU here can show: a lost GPU, a process on two.
    `lost` are the indices whose handle cannot be opened; `processes` maps a GPU index to
    (pid, bytes) pairs."""

    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1

    class NVMLError(Exception):
        pass

    def __init__(self, count: int, lost: set[int], processes: dict[int, list[tuple[int, int]]]) -> None:
        self.count, self.lost, self.processes = count, lost, processes

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if index in self.lost:
            raise self.NVMLError("GPU is lost")
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int):
        from types import SimpleNamespace

        return SimpleNamespace(gpu=50)

    def nvmlDeviceGetMemoryInfo(self, handle: int, *kind: int):
        raise self.NVMLError("not supported")  # a reading a board lacks is skipped

    nvmlDeviceGetTemperature = nvmlDeviceGetPowerUsage = nvmlDeviceGetClockInfo = nvmlDeviceGetMemoryInfo

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return b"NVIDIA A100-SXM4-80GB"  # older bindings give bytes

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int):
        from types import SimpleNamespace

        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self.processes.get(handle, [])]


def test_a_gpu_that_cannot_be_opened_is_left_out_and_the_others_sampled(monkeypatch):
    """It raised out of `open`, and the node monitor, host metrics and heartbeat with it, never started."""
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(count=3, lost={1}, processes={}))
    sampler, status = GpuSampler.open("10.0.0.1")
    assert sampler is not None and status == "NVML: 2 GPU(s); left out: GPU 1 (NVMLError)"
    assert sampler.models == {0: "NVIDIA A100-SXM4-80GB", 2: "NVIDIA A100-SXM4-80GB"}
    rows = sampler.sample(1_800_000_000.0)
    assert [(r["source"], r["metric"]) for r in rows] == [
        ("10.0.0.1/gpu0", "gpu_utilization_percent"),
        ("10.0.0.1/gpu2", "gpu_utilization_percent"),
    ]
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(count=1, lost={0}, processes={}))
    assert GpuSampler.open("10.0.0.1") == (None, "NVML could open none of 1 GPU(s): GPU 0 (NVMLError); GPU metrics off")


def test_an_agent_on_two_gpus_reports_its_memory_on_both_as_one_value(monkeypatch):
    import sys

    on_both = FakeNvml(count=2, lost=set(), processes={0: [(4242, 2**30)], 1: [(4242, 2 * 2**30), (7, 5)]})
    monkeypatch.setitem(sys.modules, "pynvml", on_both)
    sampler, _ = GpuSampler.open("10.0.0.1")
    rows = [r for r in sampler.sample(1_800_000_000.0, {4242: "trial_1"}) if r["kind"] == "agent"]
    assert [(r["source"], r["metric"], r["value"]) for r in rows] == [
        ("trial_1", "process_gpu_memory_bytes", 3.0 * 2**30)
    ]
