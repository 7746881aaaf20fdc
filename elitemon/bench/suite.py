"""The benchmark suite: the holomorphic workers, scaling, memory efficiency and the demo PBT, scored.

    python benchmarks/run_suite.py [--skip-pbt] [--json out.json]        # or: elitemon bench ...
    ray job submit --working-dir . -- python benchmarks/run_suite.py --address auto

Each benchmark has a primary metric, a target and a score, `min(100, actual / target · 100)` (at
least 0). The overall rating is on the mean score of the benchmarks that ran (a skipped one, with its
reason, is left out): EXCELLENT ≥ 90, GOOD ≥ 75, FAIR ≥ 50, POOR below; unrated if none ran.

- `holomorphic_processing`: `samples_per_s`, target 50 M. The workers of `start_workers` (one per
  GPU; else one CPU worker per node using all of its cores) run together, started at one instant,
  for `duration_s`; the sum of their samples/s.
- `gpu_acceleration`: `speedup`, target 8×. The first GPU worker's samples/s in that run over a CPU
  worker's (all cores of the same node, same frame size and signal, run alone). Skipped without a GPU.
- `distributed_scaling`: `scaling_efficiency`, target 0.95. k workers together over k × one of them
  alone, same duration: k = the cluster's GPUs, or on the CPU k = min(2, the cluster's CPUs) workers
  of 1 thread each, spread over the nodes by Ray (on one node: cores, not machines). Skipped if k < 2.
- `memory_efficiency`: `memory_efficiency`, target 0.85. Each `holomorphic_processing` worker's
  bytes/s (20 B a sample: 4 read, 16 written; see elitemon.bench.measure) over the bytes/s (read +
  written) of a large copy on its own device, measured by the same worker after its run; the mean
  over the workers. CPU batches are 8192 frames by default (640 MiB moved a batch) and the copy's
  arrays 1 GiB, both well beyond the last-level cache, so both figures are memory traffic.
- `pbt_evolution`: `target_share`, target 0.90. The demo PBT (Q-learning agents on Taxi-v4,
  `pbt_agents` × `pbt_generations`): the share of agents whose score met the environment's target at
  some generation ≤ `pbt_generations` (`analytics.population.target_achievement` on the stored
  samples).

Beside them, not scored, the peer: the CPU kernel against `scipy.signal.hilbert` on the same frames,
in the driver's process (`peer_frames` frames of `frame_size`), after a correctness check.

Results are printed as a table, written as JSON (`--json`), and stored: one `bench` sample per
benchmark that ran with `source` = its name and `metric` = its primary metric, one with `metric` =
`score`, and one `bench_result` event whose payload is the whole JSON. (The primary metric of
`holomorphic_processing` is `samples_per_s`, not `holomorphic_throughput`: the alert signal of that
name sums every bench source's latest `holomorphic_throughput`, and would count the run twice.)
The workers report their own `holomorphic_throughput` samples while they run.

At module level only the standard library and elitemon.aggregator (which the CLI imports anyway) are
imported, so that `elitemon --help` stays fast; the workers, the kernel and the demo load when used.
"""

from __future__ import annotations

import argparse
import enum
import json
import logging
import math
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from elitemon.aggregator import NAME, NAMESPACE

Out = Callable[[str], None]


class Rating(enum.StrEnum):
    EXCELLENT = "EXCELLENT"
    GOOD = "GOOD"
    FAIR = "FAIR"
    POOR = "POOR"


#: (lowest mean score, rating), best first; below the last, POOR.
RATING_THRESHOLDS: tuple[tuple[float, Rating], ...] = (
    (90.0, Rating.EXCELLENT),
    (75.0, Rating.GOOD),
    (50.0, Rating.FAIR),
)


@dataclass(frozen=True)
class Spec:
    """A benchmark's primary metric and target, and how to print a value of it."""

    name: str
    metric: str
    target: float
    unit: str  # "samples/s", "x" or "share"

    def format(self, value: float) -> str:
        if self.unit == "samples/s":
            return f"{value / 1e6:,.1f}M samples/s"
        if self.unit == "x":
            return f"{value:.2f}x"
        return f"{value:.1%}"


SPECS: dict[str, Spec] = {
    spec.name: spec
    for spec in (
        Spec("holomorphic_processing", "samples_per_s", 50e6, "samples/s"),
        Spec("gpu_acceleration", "speedup", 8.0, "x"),
        Spec("distributed_scaling", "scaling_efficiency", 0.95, "share"),
        Spec("memory_efficiency", "memory_efficiency", 0.85, "share"),
        Spec("pbt_evolution", "target_share", 0.90, "share"),
    )
}


def score(actual: float, target: float) -> float:
    """The spec's 0–100 score: min(100, actual / target · 100), and 0 for a negative actual."""
    if not math.isfinite(target) or target <= 0:
        raise ValueError(f"target must be a positive finite number, but got {target=}.")
    if not math.isfinite(actual):
        raise ValueError(f"actual must be finite, but got {actual=}.")
    return max(0.0, min(100.0, actual / target * 100.0))


def rating_of(mean_score: float) -> Rating:
    for lowest, rating in RATING_THRESHOLDS:
        if mean_score >= lowest:
            return rating
    return Rating.POOR


@dataclass(frozen=True)
class BenchmarkResult:
    """One benchmark: its value and score, or why it was skipped (then both are None)."""

    name: str
    metric: str
    target: float
    value: float | None
    score: float | None
    skipped: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def measured(cls, name: str, value: float, **details: Any) -> BenchmarkResult:
        spec = SPECS[name]
        return cls(name, spec.metric, spec.target, float(value), score(value, spec.target), None, details)

    @classmethod
    def skip(cls, name: str, reason: str, **details: Any) -> BenchmarkResult:
        spec = SPECS[name]
        return cls(name, spec.metric, spec.target, None, None, reason, details)


def overall(results: Iterable[BenchmarkResult]) -> tuple[float | None, Rating | None]:
    """The mean score of the benchmarks that ran, and its rating; (None, None) if none ran."""
    scores = [r.score for r in results if r.score is not None]
    if not scores:
        return None, None
    mean = sum(scores) / len(scores)
    return mean, rating_of(mean)


@dataclass(frozen=True)
class SuiteResult:
    results: tuple[BenchmarkResult, ...]
    peer: Mapping[str, Any]
    environment: Mapping[str, Any]

    @property
    def average_score(self) -> float | None:
        return overall(self.results)[0]

    @property
    def rating(self) -> Rating | None:
        return overall(self.results)[1]

    def to_json(self) -> dict[str, Any]:
        return _finite(
            {
                "benchmarks": [asdict(r) | {"details": dict(r.details)} for r in self.results],
                "average_score": self.average_score,
                "rating": None if self.rating is None else self.rating.value,
                "rating_thresholds": {rating.value: lowest for lowest, rating in RATING_THRESHOLDS},
                "peer": dict(self.peer),
                "environment": dict(self.environment),
            }
        )


def render(suite: SuiteResult) -> str:
    """The results as a text table, the overall rating, and the peer ratio."""
    lines = [f"{'benchmark':<24}{'metric':<20}{'value':>22}{'target':>18}{'score':>8}"]
    for result in suite.results:
        spec = SPECS[result.name]
        head = f"{result.name:<24}{result.metric:<20}"
        if result.value is None:
            lines.append(f"{head}skipped: {result.skipped}")
        else:
            lines.append(f"{head}{spec.format(result.value):>22}{spec.format(spec.target):>18}{result.score:>8.1f}")
    thresholds = ", ".join(f"{rating.value} >= {lowest:g}" for lowest, rating in RATING_THRESHOLDS)
    ran = sum(r.score is not None for r in suite.results)
    if suite.rating is None:
        lines.append("overall: not rated (no benchmark ran)")
    else:
        lines.append(
            f"overall: {suite.rating.value}, mean score {suite.average_score:.1f} over {ran} of "
            f"{len(suite.results)} benchmarks ({thresholds}, POOR below; skipped ones left out)"
        )
    if "samples_per_s" in suite.peer:
        peer = suite.peer
        lines.append(
            f"peer: elitemon CPU kernel {peer['samples_per_s'] / 1e6:,.1f}M samples/s on {peer['cores']} threads; "
            f"scipy.signal.hilbert {peer['scipy_hilbert_samples_per_s'] / 1e6:,.1f}M (1 thread), "
            f"{peer['scipy_hilbert_threads_samples_per_s'] / 1e6:,.1f}M ({peer['cores']} workers); "
            f"elitemon / scipy {peer['speedup_over_scipy']:.2f}x (1 thread), "
            f"{peer['speedup_over_scipy_threads']:.2f}x (same workers)"
        )
    return "\n".join(lines)


def store_rows(suite: SuiteResult, *, ts: float, node: str) -> tuple[list[dict], list[dict]]:
    """The `bench` samples (primary metric and score of each benchmark that ran) and the
    `bench_result` event (payload: the whole JSON) that record the suite in the store."""
    samples = []
    for result in suite.results:
        if result.value is None:
            continue
        for metric, value in ((result.metric, result.value), ("score", result.score)):
            samples.append(
                {"ts": ts, "kind": "bench", "node": node, "source": result.name, "metric": metric, "value": value}
            )
    event = {"ts": ts, "type": "bench_result", "node": node, "payload": json.dumps(suite.to_json(), allow_nan=False)}
    return samples, [event]


# --------------------------------------------------------------------------------------------
# Running it


@dataclass(frozen=True, kw_only=True)
class SuiteSettings:
    """Sizes and switches of a run; `QUICK` are the small ones of `--quick` (a smoke test: its figures
    mean nothing, its copies fit in caches)."""

    frame_size: int = 4096
    cpu_batch_frames: int = 8192
    gpu_batch_frames: int = 16384
    duration_s: float = 5.0
    report_interval_s: float = 1.0
    worker_cpus: float = 1.0  # Ray CPUs each worker reserves (its kernel threads are separate)
    scaling_workers: int | None = None  # None: all GPUs, or min(2, CPUs) on the CPU
    copy_bytes: int | None = None  # None: the worker's default (1 GiB host, 256 MiB device)
    use_gpu: bool | str = "auto"
    peer_frames: int = 512
    peer_repeat: int = 10
    pbt: bool = True
    pbt_generations: int = 100
    pbt_agents: int = 8
    pbt_episodes: int | None = None  # episodes per generation; None: the demo's default
    pbt_eval_episodes: int | None = None  # None: the demo's default
    pbt_storage_path: str | None = None  # Tune's files; None: Tune's default (~/ray_results)

    def __post_init__(self) -> None:
        positive_ints = ("frame_size", "cpu_batch_frames", "gpu_batch_frames", "peer_frames", "peer_repeat")
        for name in (*positive_ints, "pbt_generations", "pbt_agents"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, but got {value!r}.")
        if self.frame_size < 4 or self.frame_size % 2:
            raise ValueError(f"frame_size must be even and at least 4, but got {self.frame_size=}.")
        for name in ("duration_s", "report_interval_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a positive finite number, but got {value!r}.")
        if not isinstance(self.worker_cpus, int | float) or not 0 <= self.worker_cpus < math.inf:
            raise ValueError(f"worker_cpus must be a finite number >= 0, but got {self.worker_cpus=}.")
        for name in ("scaling_workers", "pbt_episodes", "pbt_eval_episodes"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be None or an integer >= 1, but got {value!r}.")
        if self.scaling_workers == 1:
            raise ValueError(f"scaling_workers must be at least 2 to measure scaling, but got {self.scaling_workers=}.")
        if self.copy_bytes is not None and (not isinstance(self.copy_bytes, int) or self.copy_bytes < 1 << 20):
            raise ValueError(f"copy_bytes must be None or at least 1 MiB, but got {self.copy_bytes=}.")
        if self.use_gpu not in ("auto", True, False):
            raise ValueError(f"use_gpu must be 'auto', True or False, but got {self.use_gpu=}.")
        if self.pbt_agents < 2:
            raise ValueError(f"pbt_agents must be at least 2 (PBT needs a population), but got {self.pbt_agents=}.")


QUICK = {
    "frame_size": 256,
    "cpu_batch_frames": 64,
    "gpu_batch_frames": 1024,
    "duration_s": 0.5,
    "report_interval_s": 0.2,
    "copy_bytes": 8 << 20,
    "peer_frames": 16,
    "peer_repeat": 2,
    "pbt_generations": 2,
    "pbt_agents": 2,
    "pbt_episodes": 5,
    "pbt_eval_episodes": 2,
}
#: Seconds between dispatching a synchronised run and its start: every worker has the call by then.
START_MARGIN_S = 1.0
#: How long workers may take to be placed, start and warm up.
WORKER_START_TIMEOUT_S = 300.0


def run_suite(
    settings: SuiteSettings,
    *,
    aggregator_name: str = NAME,
    namespace: str = NAMESPACE,
    data_dir: Path | None = None,
    out: Out = print,
) -> SuiteResult:
    """Run every benchmark on the connected Ray cluster; the aggregator must be running."""
    import ray

    from elitemon.bench.measure import cpu_figures

    started = time.time()
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    cpus = sum(node["Resources"].get("CPU", 0.0) for node in nodes)
    gpus = int(sum(node["Resources"].get("GPU", 0.0) for node in nodes))
    out(f"benchmark suite: {len(nodes)} node(s), {cpus:g} CPUs, {gpus} GPUs; N={settings.frame_size}")
    peer = cpu_figures(settings.frame_size, settings.peer_frames, settings.peer_repeat)
    peer["frames"] = settings.peer_frames
    out(
        f"peer: elitemon / scipy.signal.hilbert {peer['speedup_over_scipy']:.2f}x (1 thread), max rel. error "
        f"{peer['max_relative_error']:.1e}"
    )
    run = _Run(settings, aggregator_name, namespace, nodes, out)
    results = run.holomorphic(gpus)
    if settings.pbt:
        results.append(_pbt(settings, aggregator_name, data_dir, out))
    else:
        results.append(BenchmarkResult.skip("pbt_evolution", "--skip-pbt"))
    order = list(SPECS)
    environment = {
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
        "elapsed_s": time.time() - started,
        "nodes": len(nodes),
        "cpus": cpus,
        "gpus": gpus,
        "driver": platform.node(),
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "settings": asdict(settings),
    }
    return SuiteResult(tuple(sorted(results, key=lambda r: order.index(r.name))), peer, environment)


class _Run:
    """The worker benchmarks of one suite run, which share workers between them."""

    def __init__(self, settings: SuiteSettings, aggregator_name: str, namespace: str, nodes: list, out: Out) -> None:
        self.settings, self.out, self.nodes = settings, out, nodes
        self.names = {"aggregator_name": aggregator_name, "namespace": namespace}

    def holomorphic(self, gpus: int) -> list[BenchmarkResult]:
        from elitemon.bench.holomorphic import gpu_unavailable_reason

        if self.settings.use_gpu is False:
            reason = "GPUs not used (--no-gpu)"
        elif gpus == 0:
            reason = f"no GPU in the Ray cluster (here: {gpu_unavailable_reason() or 'CuPy sees a GPU'})"
        else:
            reason, results = self._gpu()
            if reason is None:
                return results
        self.out(f"GPU: not measured ({reason})")
        return [*self._cpu(), BenchmarkResult.skip("gpu_acceleration", reason)]

    def _gpu(self) -> tuple[str | None, list[BenchmarkResult]]:
        import ray

        from elitemon.bench.workers import start_workers

        config = self._config(batch_frames=self.settings.gpu_batch_frames)
        handles = start_workers(use_gpu=True, num_cpus=self.settings.worker_cpus, config=config, **self.names)
        try:
            infos = ray.get([h.info.remote() for h in handles], timeout=WORKER_START_TIMEOUT_S)
            unavailable = [info["unavailable"] for info in infos if info["unavailable"]]
            if unavailable:
                return f"the GPU workers cannot run: {unavailable[0]}", []
            together = self._together(handles, "holomorphic_processing", f"{len(handles)} GPU worker(s)")
            memory = self._memory(handles, together)
            k = min(len(handles), self.settings.scaling_workers or len(handles))
            scaling = self._scaling(handles, "GPU workers (one per GPU)", k)
        finally:
            _kill(handles)
        node = next(n for n in self.nodes if n["NodeManagerAddress"] == together[0].node)
        cpu_handles = start_workers(
            use_gpu=False,
            num_cpus=self.settings.worker_cpus,
            config=replace(config, backend="cpu", threads=0, batch_frames=self.settings.cpu_batch_frames),
            nodes=[node],
            **self.names,
        )
        try:
            (cpu,) = self._together(cpu_handles, "gpu_acceleration", "CPU reference (all cores of the GPU's node)")
        finally:
            _kill(cpu_handles)
        gpu = together[0]
        speedup = BenchmarkResult.measured(
            "gpu_acceleration", gpu.samples_per_s / cpu.samples_per_s, gpu=gpu.to_json(), cpu=cpu.to_json()
        )
        processing = _processing(together)
        return None, [processing, speedup, scaling, memory]

    def _cpu(self) -> list[BenchmarkResult]:
        from elitemon.bench.workers import start_workers

        config = self._config(batch_frames=self.settings.cpu_batch_frames, threads=0, backend="cpu")
        handles = start_workers(use_gpu=False, num_cpus=self.settings.worker_cpus, config=config, **self.names)
        try:
            together = self._together(handles, "holomorphic_processing", f"{len(handles)} CPU worker(s), all cores")
            memory = self._memory(handles, together)
        finally:
            _kill(handles)
        cpus = sum(node["Resources"].get("CPU", 0.0) for node in self.nodes)
        k = self.settings.scaling_workers or min(2, int(cpus))
        if k < 2:
            scaling = BenchmarkResult.skip("distributed_scaling", f"the cluster has {cpus:g} CPU: nothing to scale")
        elif k * self.settings.worker_cpus > cpus:
            reason = f"{k} workers x {self.settings.worker_cpus:g} CPUs each exceed the cluster's {cpus:g} CPUs"
            scaling = BenchmarkResult.skip("distributed_scaling", reason)
        else:
            scaling_config = replace(config, threads=1)
            handles = start_workers(
                k, use_gpu=False, num_cpus=self.settings.worker_cpus, config=scaling_config, **self.names
            )
            try:
                scaling = self._scaling(handles, "CPU workers of 1 thread", k)
            finally:
                _kill(handles)
        return [_processing(together), scaling, memory]

    def _config(self, **overrides: Any) -> Any:
        from elitemon.bench.workers import WorkerConfig

        base = {"frame_size": self.settings.frame_size, "report_interval_s": self.settings.report_interval_s}
        return WorkerConfig(**(base | overrides))

    def _together(self, handles: Sequence[Any], what: str | None = None, label: str = "") -> list[Any]:
        """Warm the workers up, then run them all from one instant for duration_s."""
        import ray

        if what is not None:
            self.out(f"{what}: {label}, {self.settings.duration_s:g} s")
        self._warm_up(handles)
        start_at = time.time() + START_MARGIN_S
        return ray.get([h.run.remote(duration_s=self.settings.duration_s, start_at=start_at) for h in handles])

    def _warm_up(self, handles: Sequence[Any]) -> None:
        """Wait for the workers to start and check their kernels; a worker that cannot be placed (not
        enough CPUs or GPUs left) fails the run after WORKER_START_TIMEOUT_S instead of waiting forever."""
        import ray

        try:
            ray.get([h.warm_up.remote() for h in handles], timeout=WORKER_START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise RuntimeError(
                f"{len(handles)} benchmark workers were not all running after {WORKER_START_TIMEOUT_S:g} s: "
                f"does the cluster have {self.settings.worker_cpus:g} free CPUs per worker (--worker-cpus)?"
            ) from None

    def _memory(self, handles: Sequence[Any], runs: Sequence[Any]) -> BenchmarkResult:
        import ray

        from elitemon.bench.measure import MIN_BYTES_PER_SAMPLE

        bandwidths = ray.get([h.copy_bandwidth.remote(self.settings.copy_bytes) for h in handles])
        shares = [run.bytes_per_s / bandwidth for run, bandwidth in zip(runs, bandwidths, strict=True)]
        per_worker = [
            {"worker": run.worker_id, "device": run.device, "bytes_per_s": run.bytes_per_s, "copy_bytes_per_s": bw}
            for run, bw in zip(runs, bandwidths, strict=True)
        ]
        return BenchmarkResult.measured(
            "memory_efficiency", sum(shares) / len(shares), bytes_per_sample=MIN_BYTES_PER_SAMPLE, workers=per_worker
        )

    def _scaling(self, handles: Sequence[Any], unit: str, k: int) -> BenchmarkResult:
        import ray

        if k < 2:
            return BenchmarkResult.skip("distributed_scaling", f"k = {k} {unit}: scaling needs at least 2")
        self.out(f"distributed_scaling: 1 alone, then {k} together ({unit}), {self.settings.duration_s:g} s each")
        self._warm_up(handles[:k])
        single = ray.get(handles[0].run.remote(duration_s=self.settings.duration_s))
        together = self._together(handles[:k])
        total = sum(run.samples_per_s for run in together)
        return BenchmarkResult.measured(
            "distributed_scaling",
            total / (k * single.samples_per_s),
            workers=k,
            single_samples_per_s=single.samples_per_s,
            together_samples_per_s=total,
            nodes=sorted({run.node for run in together}),
        )


def _processing(runs: Sequence[Any]) -> BenchmarkResult:
    return BenchmarkResult.measured(
        "holomorphic_processing", sum(run.samples_per_s for run in runs), workers=[run.to_json() for run in runs]
    )


def _kill(handles: Iterable[Any]) -> None:
    import ray

    for handle in handles:
        ray.kill(handle, no_restart=True)


def _pbt(settings: SuiteSettings, aggregator_name: str, data_dir: Path | None, out: Out) -> BenchmarkResult:
    from elitemon.aggregator import get_aggregator
    from elitemon.analytics.population import Target, target_achievement
    from elitemon.client import Client
    from elitemon.demo import DemoSettings, run_demo
    from elitemon.demo._run import SCORE

    optional = {"episodes_per_iteration": settings.pbt_episodes, "eval_episodes": settings.pbt_eval_episodes}
    demo = DemoSettings(
        agents=settings.pbt_agents,
        iterations=settings.pbt_generations,
        **{key: value for key, value in optional.items() if value is not None},
    )
    out(f"pbt_evolution: the demo PBT, {demo.agents} agents x {demo.iterations} generations on {demo.env_id}")
    # Tune warns "Remote file not found" when a paused trial resumes before its log was synced: harmless.
    logging.getLogger("ray.tune.logger.logger").setLevel(logging.ERROR)
    storage = None if settings.pbt_storage_path is None else Path(settings.pbt_storage_path)
    summary = run_demo(demo, storage_path=storage, aggregator_name=aggregator_name, data_dir=data_dir, out=out)
    client = Client(get_aggregator(name=aggregator_name), name=aggregator_name)
    samples = client.samples(kind="agent", source=summary.agents, start=summary.started_at, as_pandas=True)
    achievement = target_achievement(samples, Target(metric=SCORE, threshold=summary.target))
    reached = {a: g for a, g in achievement.generations_to_target.items() if g is not None and g <= demo.iterations}
    return BenchmarkResult.measured(
        "pbt_evolution",
        len(reached) / achievement.agents,
        env=summary.env_id,
        target=summary.target,
        agents=achievement.agents,
        meeting_at_end=len(achievement.agents_meeting),
        generations=demo.iterations,
        generations_to_target=dict(achievement.generations_to_target),
        best_score=summary.best_score,
        wall_s=summary.wall_s,
    )


def execute(
    settings: SuiteSettings,
    *,
    aggregator_name: str = NAME,
    namespace: str = NAMESPACE,
    data_dir: Path | None = None,
    json_path: Path | None = None,
    out: Out = print,
) -> SuiteResult:
    """Start (or attach to) the aggregator, run the suite, print it, write the JSON and store it."""
    import ray

    from elitemon.aggregator import start_aggregator
    from elitemon.client import Client
    from elitemon.config import StoreConfig

    if json_path is not None and not json_path.parent.is_dir():  # before minutes of benchmarks, not after
        raise FileNotFoundError(f"--json: no directory {str(json_path.parent)!r} to write {json_path.name} in")
    store = StoreConfig(data_dir=data_dir) if data_dir else StoreConfig()
    handle = start_aggregator(store, name=aggregator_name, namespace=namespace)  # held: lives through the run
    suite = run_suite(settings, aggregator_name=aggregator_name, namespace=namespace, data_dir=data_dir, out=out)
    out(render(suite))
    # Stored first: a JSON file that cannot be written must not cost the stored results.
    producer = Client(handle, name=aggregator_name).producer(name="bench-suite")
    samples, events = store_rows(suite, ts=time.time(), node=ray.util.get_node_ip_address())
    producer.write_rows("samples", samples)
    producer.write_rows("events", events)
    if not producer.close(timeout=60):
        raise RuntimeError(f"the results were not all stored: {producer.stats().last_error}")
    if json_path is not None:
        json_path.write_text(json.dumps(suite.to_json(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        out(f"JSON written to {json_path}")
    out(f"stored: {len(samples)} bench samples and a bench_result event (aggregator {aggregator_name!r})")
    return suite


# --------------------------------------------------------------------------------------------
# The command line: `benchmarks/run_suite.py` and `elitemon bench`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The suite's options, shared by `elitemon bench` and benchmarks/run_suite.py."""
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster to use (default: the running one, else a local Ray for the run; 'local': a new one)",
    )
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray this command starts")
    parser.add_argument("--data-dir", help="store data directory, if the aggregator is started here")
    parser.add_argument("--aggregator-name", default=NAME, help=f"the aggregator to write to (default: {NAME})")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test, its figures mean nothing")
    parser.add_argument("--no-gpu", action="store_true", help="CPU workers only, even where there are GPUs")
    parser.add_argument("--skip-pbt", action="store_true", help="leave out pbt_evolution (the demo PBT, ~2 minutes)")
    for flag, kind, text in (
        ("--duration-s", float, "seconds each throughput measurement runs (default 5)"),
        ("--frame-size", int, "samples per frame (default 4096)"),
        ("--cpu-batch-frames", int, "frames per batch of a CPU worker (default 8192)"),
        ("--gpu-batch-frames", int, "frames per batch of a GPU worker (default 16384)"),
        ("--worker-cpus", float, "Ray CPUs each worker reserves (default 1)"),
        ("--scaling-workers", int, "k of distributed_scaling (default: all GPUs, or min(2, CPUs))"),
        ("--copy-bytes", int, "bytes of each array of the copy-bandwidth measurement"),
        ("--peer-frames", int, "frames of the scipy peer comparison (default 512)"),
        ("--pbt-generations", int, "generations of the demo PBT (default 100)"),
        ("--pbt-agents", int, "agents of the demo PBT (default 8)"),
        ("--pbt-episodes", int, "training episodes per generation (default: the demo's, 100)"),
        ("--pbt-storage-path", str, "where Tune keeps the demo's files (default: ~/ray_results)"),
    ):
        parser.add_argument(flag, type=kind, default=None, help=text)


def settings_from_args(args: argparse.Namespace) -> SuiteSettings:
    """SuiteSettings from parsed options: the defaults, or QUICK's with --quick, then every given option."""
    values: dict[str, Any] = dict(QUICK) if args.quick else {}
    for name in (f.name for f in fields(SuiteSettings)):
        given = getattr(args, name, None)
        if given is not None:
            values[name] = given
    if args.no_gpu:
        values["use_gpu"] = False
    if args.skip_pbt:
        values["pbt"] = False
    return SuiteSettings(**values)


def run_from_args(args: argparse.Namespace, out: Out = print) -> int:
    """Check the settings, connect to (or start) Ray, run and record the suite."""
    import ray

    settings = settings_from_args(args)  # checked before Ray starts
    from elitemon.client import attach_or_start_local_ray

    started_ray = attach_or_start_local_ray(args.address, args.num_cpus, purpose="for the suite", say=out)
    try:
        data_dir = Path(args.data_dir) if args.data_dir else None
        execute(settings, aggregator_name=args.aggregator_name, data_dir=data_dir, json_path=args.json, out=out)
    finally:
        if started_ray:
            ray.shutdown()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python benchmarks/run_suite.py`: exit status 0, or 2 with the reason on stderr."""
    import ray

    parser = argparse.ArgumentParser(prog="run_suite.py", description="elitemon's benchmark suite, scored.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_from_args(args)
    except (ConnectionError, ValueError, RuntimeError, ray.exceptions.RayError) as error:
        print(f"run_suite: {error}", file=sys.stderr)
        return 2


def _finite(value: Any) -> Any:
    """Non-finite floats as None, recursively: JSON has no NaN or infinity."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
