"""Holomorphic workers: the kernel run on generated frames inside Ray actors, reporting as it runs.

    handles = start_workers(aggregator_name="aggregator")      # one per GPU, else one CPU worker per node
    ray.get([h.warm_up.remote() for h in handles])
    results = ray.get([h.run.remote(duration_s=30) for h in handles])

`HolomorphicWorker` is a plain class (tested without Ray); `start_workers` makes it an actor at the
edge: `num_gpus=1` each, pinned to its node, one per GPU of every alive node, or CPU workers
(`num_cpus` reserved each, `WorkerConfig.threads` kernel threads) where there is no GPU.

What a worker does. It generates one batch of frames (`WorkerConfig.signal`: random, chirp or
multi-tone float32, `frame_size` samples, default 4096) once, keeps it where the kernel reads it (host
memory; on a GPU, resident on the device: a block of at most 1024 frames generated on the host and
tiled, which leaves the FFT's work unchanged), and runs the kernel over it again and again, for a
duration or a number of batches; on a GPU each batch is synchronised before the clock is read. About
every `report_interval_s` (default 1 s) it writes, through its own Producer, `bench` samples with
`source` = the worker id and `node` = the node's IP:
- `holomorphic_throughput`: samples/s over the interval (the `holomorphic_throughput` alert signal
  sums the latest of these over all workers);
- `bytes_per_s`: `MIN_BYTES_PER_SAMPLE` (20: 4 B read, 16 B written; see elitemon.bench.measure)
  times that rate;
- on a GPU, `gpu_memory_used_bytes` (CuPy's default memory pool: this worker's buffers) and, where
  NVML is present, `gpu_utilization_percent` of its device.
A `HolomorphicProcessingMonitor` runs a `RobustDetector` (analytics.anomaly) over the worker's own
throughput points and writes an `anomaly` event for every flagged one (payload: worker, metric,
value, expected, band [lower, upper], score, severity). The detector lives as long as the actor, so
it watches across runs; it scores each point after the first `anomaly_min_history`.

Bad arguments never crash the actor: `WorkerConfig` and `start_workers` check theirs in the caller's
process (ValueError naming the value) before any actor exists; `run` and `copy_bandwidth` check theirs
on entry and raise ValueError, which reaches the caller while the actor stays up. A GPU worker whose
CuPy cannot run keeps running too, and says why on every call that needs the kernel.
"""

from __future__ import annotations

import enum
import json
import math
import os
import platform
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, NamedTuple

import numpy as np

from elitemon import aggregator
from elitemon.analytics._frames import is_number, is_whole_number
from elitemon.analytics.anomaly import AnomalyPoint, RobustDetector, StreamingDetector
from elitemon.bench.holomorphic import CpuHolomorphic, gpu_unavailable_reason, make_processor
from elitemon.bench.measure import (
    MIN_BYTES_PER_SAMPLE,
    SIGNALS,
    check,
    device_copy_bandwidth,
    device_name,
    host_copy_bandwidth,
    make_frames,
)

THROUGHPUT_METRIC = "holomorphic_throughput"
BYTES_METRIC = "bytes_per_s"
GPU_MEMORY_METRIC = "gpu_memory_used_bytes"
GPU_UTILIZATION_METRIC = "gpu_utilization_percent"
ANOMALY_EVENT = "anomaly"
#: Frames per batch when WorkerConfig.batch_frames is None: 1 M samples on the CPU (20 MiB moved a
#: batch); 64 M on a GPU (a batch long enough that launch gaps are noise; about 1.8 GiB of buffers).
DEFAULT_BATCH_FRAMES = {"cpu": 256, "gpu": 16384}
#: Copy sizes of `copy_bandwidth`: each of the two arrays. 1 GiB is several times the largest CPU
#: last-level caches (260 MiB on the development machine); 256 MiB is far beyond a GPU's L2.
DEFAULT_COPY_BYTES = {"cpu": 1 << 30, "gpu": 256 << 20}
#: A run longer than a day is a unit mistake (milliseconds given as seconds).
MAX_RUN_S = 86_400.0
#: How far ahead a synchronised start may be scheduled.
MAX_START_DELAY_S = 300.0

Row = dict[str, Any]


class Backend(enum.StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    GPU = "gpu"


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """What a worker runs; checked here, in the caller's process, so a bad value never reaches an actor.

    - `frame_size`: samples per frame, even, at least 4 (default 4096).
    - `batch_frames`: frames per kernel call (None: DEFAULT_BATCH_FRAMES of the backend).
    - `signal`: one of SIGNALS.
    - `backend`: "auto" (the GPU when CuPy sees one), "cpu" or "gpu".
    - `threads`: kernel threads of a CPU worker (default 1; 0: as many as the node's usable CPUs).
    - `report_interval_s`: seconds between reports (default 1).
    - `seed`: of the generated frames.
    - `anomaly_window`, `anomaly_min_history`: the RobustDetector's window and warm-up, in reports.
    """

    frame_size: int = 4096
    batch_frames: int | None = None
    signal: str = "random"
    backend: Backend = Backend.AUTO
    threads: int = 1
    report_interval_s: float = 1.0
    seed: int = 0
    anomaly_window: int = 120
    anomaly_min_history: int = 10

    def __post_init__(self) -> None:
        if not is_whole_number(self.frame_size) or self.frame_size < 4 or self.frame_size % 2:
            raise ValueError(f"frame_size must be an even integer >= 4, but got {self.frame_size=}.")
        if self.batch_frames is not None and (not is_whole_number(self.batch_frames) or self.batch_frames < 1):
            raise ValueError(f"batch_frames must be None or an integer >= 1, but got {self.batch_frames=}.")
        if self.signal not in SIGNALS:
            raise ValueError(f"signal must be one of {SIGNALS}, but got {self.signal=}.")
        try:
            object.__setattr__(self, "backend", Backend(self.backend))
        except ValueError:
            raise ValueError(f"backend must be one of {[b.value for b in Backend]}, but got {self.backend=}.") from None
        if not is_whole_number(self.threads) or self.threads < 0:
            raise ValueError(f"threads must be an integer >= 0 (0: all CPUs), but got {self.threads=}.")
        if not is_number(self.report_interval_s) or not 0 < self.report_interval_s < math.inf:
            raise ValueError(f"report_interval_s must be a positive finite number, but got {self.report_interval_s=}.")
        if not is_whole_number(self.seed):
            raise ValueError(f"seed must be an integer, but got {self.seed=}.")
        if not is_whole_number(self.anomaly_window) or self.anomaly_window < 4:
            raise ValueError(f"anomaly_window must be an integer >= 4, but got {self.anomaly_window=}.")
        if not is_whole_number(self.anomaly_min_history) or not 2 <= self.anomaly_min_history <= self.anomaly_window:
            raise ValueError(
                f"anomaly_min_history must be an integer in [2, anomaly_window], but got {self.anomaly_min_history=}."
            )

    def frames_for(self, backend: str) -> int:
        """Frames per batch on `backend` ("cpu" or "gpu")."""
        return self.batch_frames or DEFAULT_BATCH_FRAMES[backend]


@dataclass(frozen=True)
class WorkerResult:
    """One run of one worker. Rates are over the run's whole wall time (first batch to last)."""

    worker_id: str
    node: str
    backend: str
    device: str
    frame_size: int
    batch_frames: int
    batches: int
    samples: int
    seconds: float
    samples_per_s: float
    bytes_per_s: float
    reports: int
    anomalies: int
    stored: bool  # every report acknowledged by the aggregator when the run returned

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Report(NamedTuple):
    """The rows of one observation: samples always, an anomaly event when the point was flagged."""

    samples: list[Row]
    events: list[Row]
    point: AnomalyPoint


class HolomorphicProcessingMonitor:
    """Turns a worker's throughput observations into `bench` samples, and anomaly events from its
    detector (a RobustDetector unless given). Pure: no Ray, no clock of its own."""

    def __init__(
        self,
        worker_id: str,
        node: str,
        *,
        detector: StreamingDetector | None = None,
        bytes_per_sample: float = MIN_BYTES_PER_SAMPLE,
    ) -> None:
        if not isinstance(worker_id, str) or not worker_id:
            raise ValueError(f"worker_id must be a non-empty string, but got {worker_id=}.")
        self.worker_id, self.node = worker_id, node
        self.bytes_per_sample = bytes_per_sample
        self._detector = detector or RobustDetector()

    def observe(self, ts: float, samples: int, seconds: float, readings: Mapping[str, float] | None = None) -> Report:
        """`samples` processed over the last `seconds`, at `ts` (epoch seconds); `readings` are
        further metrics of the same moment (GPU memory and utilisation)."""
        if not is_number(seconds) or not 0 < seconds < math.inf:
            raise ValueError(f"seconds must be a positive finite number, but got {seconds=}.")
        if not is_number(samples) or samples < 0:
            raise ValueError(f"samples must be a number >= 0, but got {samples=}.")
        rate = samples / seconds
        metrics = {THROUGHPUT_METRIC: rate, BYTES_METRIC: rate * self.bytes_per_sample, **(readings or {})}
        rows = [self._sample(ts, metric, value) for metric, value in metrics.items()]
        point = self._detector.update(ts, rate)
        return Report(rows, [self._anomaly(point)] if point.is_anomaly else [], point)

    def _sample(self, ts: float, metric: str, value: float) -> Row:
        return {
            "ts": ts,
            "kind": "bench",
            "node": self.node,
            "source": self.worker_id,
            "metric": metric,
            "value": value,
        }

    def _anomaly(self, point: AnomalyPoint) -> Row:
        payload = {
            "worker": self.worker_id,
            "metric": THROUGHPUT_METRIC,
            "value": point.value,
            "expected": point.expected,
            "band": [point.lower, point.upper],
            "score": point.score,
            "severity": point.severity.name.lower(),
        }
        return {"ts": point.ts, "type": ANOMALY_EVENT, "node": self.node, "payload": json.dumps(_finite(payload))}


class HolomorphicWorker:
    """Runs the kernel on generated frames and reports while it runs. Make it an actor with
    `start_workers` (or `ray.remote(HolomorphicWorker)`); give it a checked WorkerConfig.

    `producer`: where reports go (default: a Producer to the aggregator `aggregator_name`)."""

    def __init__(
        self,
        worker_id: str,
        config: WorkerConfig,
        *,
        aggregator_name: str = aggregator.NAME,
        namespace: str = aggregator.NAMESPACE,
        producer: Any = None,
    ) -> None:
        from elitemon.producer import Producer, RaySink

        self.worker_id, self.config = worker_id, config
        self.node = _node_ip()
        self._producer = producer or Producer(
            RaySink(name=aggregator_name, namespace=namespace), name=f"bench-{worker_id}"
        )
        detector = RobustDetector(window=config.anomaly_window, min_history=config.anomaly_min_history)
        self._monitor = HolomorphicProcessingMonitor(worker_id, self.node, detector=detector)
        self._unavailable: str | None = None
        self.backend = _resolve(config.backend)
        self.batch_frames = config.frames_for(self.backend)
        self.threads = config.threads or _usable_cpus()
        try:
            self._processor = self._make_processor()
            self._frames = self._make_frames()
        except Exception as error:  # no CuPy, no device, out of memory: report it on every call
            self._unavailable = f"{type(error).__name__}: {error}"
        self._nvml = _nvml_handle() if self.backend == "gpu" and self._unavailable is None else None

    # --- the actor's methods ---

    def info(self) -> dict[str, Any]:
        """Who and where this worker is, and why it cannot run (None when it can)."""
        return {
            "worker_id": self.worker_id,
            "node": self.node,
            "backend": self.backend,
            "device": self._device(),
            "frame_size": self.config.frame_size,
            "batch_frames": self.batch_frames,
            "threads": self.threads,
            "unavailable": self._unavailable,
        }

    def warm_up(self) -> float:
        """Check the kernel against the float64 reference (AccuracyError above 1e-5), then run two
        batches (plans, thread pool, first touch of the buffers). Returns the worst relative error."""
        self._require_backend()
        if self.backend == "gpu":
            import cupy as cp

            small = make_processor(self.config.frame_size, 8, prefer="gpu")
            worst = check(lambda f: small.process(cp.asarray(f)), self.config.frame_size, to_host=cp.asnumpy)
        else:
            small = CpuHolomorphic(self.config.frame_size, 8, workers=self.threads)
            worst = check(small.process, self.config.frame_size)
            small.close()
        for _ in range(2):
            self._process()
        return worst

    def run(
        self, *, duration_s: float | None = None, batches: int | None = None, start_at: float | None = None
    ) -> WorkerResult:
        """Process batches for `duration_s` seconds or `batches` batches (give one), reporting every
        `report_interval_s`; with `start_at` (epoch seconds), begin then (a synchronised start of
        several workers). Waits until the reports are stored (at most 30 s) before returning."""
        _check_run(duration_s, batches, start_at)
        self._require_backend()
        if start_at is not None:
            time.sleep(max(0.0, start_at - time.time()))
        done, seconds, reports, anomalies = self._loop(duration_s, batches)
        stored = self._producer.flush(timeout=30)
        samples = done * self.batch_frames * self.config.frame_size
        return WorkerResult(
            worker_id=self.worker_id,
            node=self.node,
            backend=self.backend,
            device=self._device(),
            frame_size=self.config.frame_size,
            batch_frames=self.batch_frames,
            batches=done,
            samples=samples,
            seconds=seconds,
            samples_per_s=samples / seconds,
            bytes_per_s=samples / seconds * MIN_BYTES_PER_SAMPLE,
            reports=reports,
            anomalies=anomalies,
            stored=stored,
        )

    def copy_bandwidth(self, nbytes: int | None = None, repeat: int = 5) -> float:
        """Bytes/s (read + written) of a large copy on this worker's device: a device-to-device copy
        on a GPU; on the CPU `np.copyto` with 1 and with the kernel's threads, the faster of the two."""
        if nbytes is not None and (not is_whole_number(nbytes) or nbytes < 1 << 20):
            raise ValueError(f"nbytes must be None or an integer of at least 1 MiB, but got {nbytes=}.")
        if not is_whole_number(repeat) or repeat < 1:
            raise ValueError(f"repeat must be an integer >= 1, but got {repeat=}.")
        self._require_backend()
        nbytes = nbytes or DEFAULT_COPY_BYTES[self.backend]
        if self.backend == "gpu":
            return device_copy_bandwidth(nbytes, repeat)
        return max(host_copy_bandwidth(nbytes, threads, repeat) for threads in {1, self.threads})

    def close(self, timeout: float = 30.0) -> bool:
        """Flush the reports and stop the producer; True when everything was stored."""
        return self._producer.close(timeout)

    # --- internals ---

    def _make_processor(self) -> Any:
        n, frames = self.config.frame_size, self.batch_frames
        if self.backend == "gpu":
            return make_processor(n, frames, prefer="gpu")
        return CpuHolomorphic(n, frames, workers=self.threads)

    def _make_frames(self) -> Any:
        rng = np.random.default_rng(self.config.seed)
        if self.backend == "cpu":
            return make_frames(self.config.signal, self.batch_frames, self.config.frame_size, rng)
        import cupy as cp

        block = cp.asarray(make_frames(self.config.signal, min(self.batch_frames, 1024), self.config.frame_size, rng))
        repeats = -(-self.batch_frames // block.shape[0])
        return cp.ascontiguousarray(cp.tile(block, (repeats, 1))[: self.batch_frames])

    def _loop(self, duration_s: float | None, batches: int | None) -> tuple[int, float, int, int]:
        """Batches until the duration or count is reached, reporting every interval; returns
        (batches, seconds, reports, anomalies)."""
        per_batch = self.batch_frames * self.config.frame_size
        interval = self.config.report_interval_s
        started = tick = time.monotonic()
        done = since_tick = reports = anomalies = 0
        while True:
            self._process()
            done, since_tick = done + 1, since_tick + per_batch
            now = time.monotonic()
            finished = done == batches or (duration_s is not None and now - started >= duration_s)
            # A short remainder at the end would be a noisy point: report it only if it is the only one.
            if now - tick >= interval or (finished and (reports == 0 or now - tick >= interval / 2)):
                anomalies += self._report(since_tick, now - tick)
                reports, tick, since_tick = reports + 1, now, 0
            if finished:
                return done, now - started, reports, anomalies

    def _process(self) -> None:
        self._processor.process(self._frames)
        if self.backend == "gpu":
            import cupy as cp

            cp.cuda.get_current_stream().synchronize()

    def _report(self, samples: int, seconds: float) -> int:
        report = self._monitor.observe(time.time(), samples, seconds, self._gpu_readings())
        self._producer.write_rows("samples", report.samples)
        if report.events:
            self._producer.write_rows("events", report.events)
        return len(report.events)

    def _gpu_readings(self) -> dict[str, float]:
        if self.backend != "gpu":
            return {}
        import cupy as cp

        readings = {GPU_MEMORY_METRIC: float(cp.get_default_memory_pool().used_bytes())}
        if self._nvml is not None:
            nvml, handle = self._nvml
            try:
                readings[GPU_UTILIZATION_METRIC] = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except nvml.NVMLError:
                pass
        return readings

    def _device(self) -> str:
        if self.backend == "gpu" and self._unavailable is None:
            return device_name()
        return _cpu_name()

    def _require_backend(self) -> None:
        if self._unavailable is not None:
            raise RuntimeError(f"worker {self.worker_id} ({self.backend}) cannot run: {self._unavailable}")


def start_workers(
    count: int | None = None,
    *,
    aggregator_name: str = aggregator.NAME,
    namespace: str = aggregator.NAMESPACE,
    use_gpu: bool | str = "auto",
    num_cpus: float = 1.0,
    config: WorkerConfig | None = None,
    prefix: str = "holomorphic",
    nodes: list[dict] | None = None,
) -> list[Any]:
    """Start HolomorphicWorker actors and return their handles (not yet warmed up). Needs Ray.

    With GPUs (`use_gpu` True, or "auto" and the cluster has any): one worker per GPU of every alive
    node, in node order, `num_gpus=1` each and pinned to its node; `count` takes the first `count`
    of those slots. Without: `count` CPU workers spread over the nodes (Ray's SPREAD), or with
    `count` None one per alive node that has `num_cpus` CPUs, pinned. Each reserves `num_cpus`
    (fractions allowed). Worker ids are `{prefix}-gpu{i}` / `{prefix}-cpu{i}`, stable from run to
    run, so the alert signal's latest value per worker is the newest run's. `nodes` defaults to
    `ray.nodes()`.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if count is not None and (not is_whole_number(count) or count < 1):
        raise ValueError(f"count must be None or an integer >= 1, but got {count=}.")
    if use_gpu not in ("auto", True, False):
        raise ValueError(f"use_gpu must be 'auto', True or False, but got {use_gpu=}.")
    if not is_number(num_cpus) or not 0 <= num_cpus < math.inf:
        raise ValueError(f"num_cpus must be a finite number >= 0, but got {num_cpus=}.")
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"prefix must be a non-empty string, but got {prefix=}.")
    config = config or WorkerConfig()
    alive = [node for node in (ray.nodes() if nodes is None else nodes) if node.get("Alive")]
    slots = [node["NodeID"] for node in alive for _ in range(int(node.get("Resources", {}).get("GPU", 0)))]
    if use_gpu is True and not slots:
        raise ValueError("use_gpu=True, but no alive node of the cluster has a GPU.")
    gpu = use_gpu is not False and bool(slots)
    if gpu and count is not None and count > len(slots):
        raise ValueError(f"count={count} GPU workers asked for, but the cluster has {len(slots)} GPUs.")
    actor = ray.remote(HolomorphicWorker)
    worker_config = replace(config, backend=Backend.GPU if gpu else Backend.CPU)
    if gpu:
        placements: list[str | None] = list(slots[:count])
    elif count is None:  # one a node, on the nodes that can hold one (a head started with 0 CPUs cannot)
        placements = [node["NodeID"] for node in alive if node.get("Resources", {}).get("CPU", 0) >= num_cpus]
        if not placements:
            raise ValueError(f"no alive node of the cluster has {num_cpus} CPU(s) for a worker.")
    else:
        placements = [None] * count
    handles = []
    for index, node in enumerate(placements):
        strategy = "SPREAD" if node is None else NodeAffinitySchedulingStrategy(node, soft=False)
        options = {
            "num_cpus": num_cpus,
            "num_gpus": 1 if gpu else 0,
            "scheduling_strategy": strategy,
            "max_restarts": 0,
        }
        worker_id = f"{prefix}-{'gpu' if gpu else 'cpu'}{index}"
        handles.append(
            actor.options(**options).remote(
                worker_id, worker_config, aggregator_name=aggregator_name, namespace=namespace
            )
        )
    return handles


def _check_run(duration_s: Any, batches: Any, start_at: Any) -> None:
    if (duration_s is None) == (batches is None):
        raise ValueError(f"give exactly one of duration_s and batches, but got {duration_s=} and {batches=}.")
    if duration_s is not None and (not is_number(duration_s) or not 0 < duration_s <= MAX_RUN_S):
        raise ValueError(f"duration_s must be a number in (0, {MAX_RUN_S:g}], but got {duration_s=}.")
    if batches is not None and (not is_whole_number(batches) or batches < 1):
        raise ValueError(f"batches must be an integer >= 1, but got {batches=}.")
    if start_at is not None:
        if not is_number(start_at) or not math.isfinite(start_at):
            raise ValueError(f"start_at must be epoch seconds, but got {start_at=}.")
        if start_at - time.time() > MAX_START_DELAY_S:
            raise ValueError(f"start_at is more than {MAX_START_DELAY_S:g} s ahead, but got {start_at=}.")


def _resolve(backend: Backend) -> str:
    if backend is Backend.AUTO:
        return "gpu" if gpu_unavailable_reason() is None else "cpu"
    return backend.value


def _nvml_handle() -> tuple[Any, Any] | None:
    """NVML and the handle of CuPy's current device (found by PCI bus id, so CUDA_VISIBLE_DEVICES
    renumbering does not matter), or None without NVML."""
    try:
        import cupy as cp
        import pynvml

        pynvml.nvmlInit()
        return pynvml, pynvml.nvmlDeviceGetHandleByPciBusId(cp.cuda.Device().pci_bus_id)
    except Exception:  # no library, no driver, no permission: utilisation is simply not reported
        return None


def _cpu_name() -> str:
    """The CPU's model name (Linux), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers narrow), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _node_ip() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except Exception:  # outside Ray: the host name stands for the node
        pass
    return platform.node() or "localhost"


def _finite(payload: dict[str, Any]) -> dict[str, Any]:
    """Non-finite floats as None: JSON has no NaN or infinity."""

    def clean(value: Any) -> Any:
        if isinstance(value, list):
            return [clean(v) for v in value]
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return {key: clean(value) for key, value in payload.items()}
