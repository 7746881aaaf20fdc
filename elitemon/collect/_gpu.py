"""GPU metrics through NVML (the `nvidia-ml-py` package), as sample rows.

`GpuSampler.open` returns the sampler, or None and the reason when there is no NVML library or no
GPU, so a node without GPUs says so once and carries on with host metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]


@dataclass
class GpuSampler:
    node: str
    _nvml: Any
    _handles: list[Any]

    @classmethod
    def open(cls, node: str) -> tuple[GpuSampler | None, str]:
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
        except Exception as error:  # no library, no driver, no permission: all mean "no GPU metrics"
            return None, f"NVML unavailable ({type(error).__name__}: {error}); GPU metrics off"
        if count == 0:
            return None, "NVML found no GPU; GPU metrics off"
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        return cls(node, pynvml, handles), f"NVML: {count} GPU(s)"

    def sample(self, now: float, agents_by_pid: Mapping[int, str] | None = None) -> list[Row]:
        nvml, rows = self._nvml, []
        for index, handle in enumerate(self._handles):
            source = f"{self.node}/gpu{index}"
            readings = {
                "gpu_utilization_percent": lambda h=handle: nvml.nvmlDeviceGetUtilizationRates(h).gpu,
                "gpu_memory_used_bytes": lambda h=handle: nvml.nvmlDeviceGetMemoryInfo(h).used,
                "gpu_memory_total_bytes": lambda h=handle: nvml.nvmlDeviceGetMemoryInfo(h).total,
                "gpu_temperature_c": lambda h=handle: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU),
                "gpu_power_w": lambda h=handle: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0,
                "gpu_sm_clock_mhz": lambda h=handle: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM),
            }
            for metric, read in readings.items():
                try:
                    value = float(read())
                except nvml.NVMLError:  # not supported on this board: skip that reading
                    continue
                rows.append(
                    {"ts": now, "kind": "gpu", "node": self.node, "source": source, "metric": metric, "value": value}
                )
            rows += self._process_rows(handle, now, agents_by_pid or {})
        return rows

    def _process_rows(self, handle: Any, now: float, agents_by_pid: Mapping[int, str]) -> list[Row]:
        try:
            processes = self._nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except self._nvml.NVMLError:
            return []
        rows = []
        for process in processes:
            agent = agents_by_pid.get(process.pid)
            if agent is not None and process.usedGpuMemory is not None:
                rows.append(
                    {
                        "ts": now,
                        "kind": "agent",
                        "node": self.node,
                        "source": agent,
                        "metric": "process_gpu_memory_bytes",
                        "value": float(process.usedGpuMemory),
                    }
                )
        return rows
