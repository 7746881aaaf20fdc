"""Host metrics from psutil, as sample rows: CPU, load, memory, swap, disk and network rates, and the
RSS and CPU share of the trainer processes mapped to agents.

Counters (disk and network bytes) become rates between two consecutive calls, so the first call
reports levels only. The rates divide by the time between the calls on a monotonic clock (a wall
clock that steps, as NTP makes it, would inflate or shrink them). Network rates are summed over the
interfaces present at both calls, each never below 0: a container's virtual interface that goes
away (or one whose counters reset) would otherwise take the whole node's rate to 0 for that
interval. Pure apart from psutil itself: the clocks are passed in, nothing global is kept.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil

Row = dict[str, Any]


@dataclass
class SystemSampler:
    """Samples one host; keep one per process (rates and per-process CPU need the previous call).

    Host rows carry `node` (the address trainers report) and `source` (a unique id of the node)."""

    node: str
    source: str
    clock: Callable[[], float]  # the rows' timestamps (epoch seconds)
    elapsed_clock: Callable[[], float] = time.monotonic  # what the rates divide by
    _last: tuple[float, Any, Mapping[str, Any]] | None = None
    _processes: dict[int, psutil.Process] = field(default_factory=dict)

    def sample(self, agents_by_pid: Mapping[int, str] | None = None) -> list[Row]:
        now = self.clock()
        rows = [self._row("cpu_percent", psutil.cpu_percent(None), now)]
        for core, percent in enumerate(psutil.cpu_percent(None, percpu=True)):
            rows.append(self._row(f"cpu_percent_core_{core}", percent, now))
        for minutes, load in zip((1, 5, 15), os.getloadavg(), strict=True):
            rows.append(self._row(f"load_{minutes}m", load, now))
        memory, swap = psutil.virtual_memory(), psutil.swap_memory()
        rows += [
            self._row("memory_used_bytes", memory.used, now),
            self._row("memory_available_bytes", memory.available, now),
            self._row("memory_percent", memory.percent, now),
            self._row("swap_used_bytes", swap.used, now),
        ]
        rows += self._rates(now, self.elapsed_clock())
        rows += self._processes_rows(agents_by_pid or {}, now)
        return rows

    def _rates(self, now: float, tick: float) -> list[Row]:
        disk, nics = psutil.disk_io_counters(), psutil.net_io_counters(pernic=True) or {}
        previous, self._last = self._last, (tick, disk, nics)
        if previous is None or tick <= previous[0]:
            return []
        elapsed, (_, old_disk, old_nics) = tick - previous[0], previous
        rates = []
        if disk is not None and old_disk is not None:
            rates.append(("disk_read_bytes_per_s", max(0, disk.read_bytes - old_disk.read_bytes)))
            rates.append(("disk_write_bytes_per_s", max(0, disk.write_bytes - old_disk.write_bytes)))
        both = [name for name in nics if name in old_nics]
        rates.append(("net_sent_bytes_per_s", sum(max(0, nics[n].bytes_sent - old_nics[n].bytes_sent) for n in both)))
        rates.append(("net_recv_bytes_per_s", sum(max(0, nics[n].bytes_recv - old_nics[n].bytes_recv) for n in both)))
        return [self._row(name, delta / elapsed, now) for name, delta in rates]

    def _processes_rows(self, agents_by_pid: Mapping[int, str], now: float) -> list[Row]:
        """RSS and CPU % of each mapped trainer process (the first CPU reading of a new process is
        skipped: psutil needs two)."""
        for pid in list(self._processes):
            if pid not in agents_by_pid:
                del self._processes[pid]
        rows = []
        for pid, agent in agents_by_pid.items():
            try:
                process = self._processes.get(pid)
                first = process is None
                if first:
                    process = self._processes[pid] = psutil.Process(pid)
                rss = process.memory_info().rss
                cpu = process.cpu_percent(None)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                self._processes.pop(pid, None)
                continue
            rows.append(_agent_row(agent, self.node, "process_rss_bytes", rss, now))
            if not first:
                rows.append(_agent_row(agent, self.node, "process_cpu_percent", cpu, now))
        return rows

    def _row(self, metric: str, value: float, now: float) -> Row:
        return {"ts": now, "kind": "node", "node": self.node, "source": self.source, "metric": metric, "value": value}


def _agent_row(agent: str, node: str, metric: str, value: float, now: float) -> Row:
    return {"ts": now, "kind": "agent", "node": node, "source": agent, "metric": metric, "value": float(value)}
