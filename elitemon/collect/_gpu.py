"""GPU metrics through NVML (the `nvidia-ml-py` package), as sample rows.

`GpuSampler.open` returns the sampler, or None and the reason when there is no NVML library or no
GPU, so a node without GPUs says so once and carries on with host metrics. A GPU whose handle
cannot be opened (lost, or fallen off the bus) is left out and named in the reason; the others are
sampled. A GPU keeps its NVML index as its name (`<node>/gpu<index>`), whichever others are missing.
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
    _handles: dict[int, Any]  # NVML index -> handle
    models: dict[int, str]  # NVML index -> the board's name ("NVIDIA H100 80GB HBM3"), what GPU prices match

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
        handles, lost = {}, []
        for index in range(count):
            try:
                handles[index] = pynvml.nvmlDeviceGetHandleByIndex(index)
            except pynvml.NVMLError as error:
                lost.append(f"GPU {index} ({type(error).__name__})")
        if not handles:
            return None, f"NVML could open none of {count} GPU(s): {', '.join(lost)}; GPU metrics off"
        status = f"NVML: {len(handles)} GPU(s)" + (f"; left out: {', '.join(lost)}" if lost else "")
        return cls(node, pynvml, handles, {index: _name(pynvml, handle) for index, handle in handles.items()}), status

    def sample(self, now: float, agents_by_pid: Mapping[int, str] | None = None) -> list[Row]:
        nvml, rows = self._nvml, []
        gpu_memory_by_agent: dict[str, float] = {}
        for index, handle in self._handles.items():
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
            self._add_process_memory(handle, agents_by_pid or {}, gpu_memory_by_agent)
        # One row per agent, over all its GPUs: one row per GPU would give the series several values
        # at one time (the latest would be one GPU's, a mean half the total).
        rows += [
            {"ts": now, "kind": "agent", "node": self.node, "source": agent, "metric": "process_gpu_memory_bytes",
             "value": used}
            for agent, used in gpu_memory_by_agent.items()
        ]  # fmt: skip
        return rows

    def _add_process_memory(self, handle: Any, agents_by_pid: Mapping[int, str], totals: dict[str, float]) -> None:
        """Add the GPU memory each mapped trainer process holds on this GPU to its agent's total."""
        try:
            processes = self._nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except self._nvml.NVMLError:
            return
        for process in processes:
            agent = agents_by_pid.get(process.pid)
            if agent is not None and process.usedGpuMemory is not None:
                totals[agent] = totals.get(agent, 0.0) + float(process.usedGpuMemory)


def _name(nvml: Any, handle: Any) -> str:
    """The board's name; older NVML bindings return bytes, and a board may not say ("")."""
    try:
        name = nvml.nvmlDeviceGetName(handle)
    except nvml.NVMLError:
        return ""
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)
