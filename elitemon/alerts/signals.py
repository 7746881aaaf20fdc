"""The names a rule's threshold can use, and their values, computed from the stored tables.

A signal is a set of series: a value per label set, such as `cpu_usage` per `node` or
`gpu_memory_usage` per (`node`, `gpu`). A rule evaluates once per *instance*: without `per`, once
for the whole cluster; with `per: node`, once per node, and so on. For an instance, a name's value
is the reduction (its `Reduce`: max, min or sum) of every series of that name whose labels agree
with the instance's labels on the label names they share. So, under `per: node`, `gpu_memory_usage`
is the fullest GPU of that node, `cpu_usage` is that node's own value, and a cluster-wide signal
(no labels) such as `hourly_cost` is the same for every node; without `per`, `cpu_usage` is the
busiest node and `holomorphic_throughput` the sum over all benchmark workers.

Built-in signals (units: ratios are 0–1, so `cpu_usage > 95%` compares with 0.95; times in seconds):

| name | labels | reduce | from |
|---|---|---|---|
| `cpu_usage` | node | max | node samples `cpu_percent` / 100 |
| `memory_usage` | node | max | node samples `memory_percent` / 100 |
| `gpu_memory_usage` | node, gpu | max | gpu samples `gpu_memory_used_bytes` / `gpu_memory_total_bytes` |
| `gpu_utilization` | node, gpu | max | gpu samples `gpu_utilization_percent` / 100 |
| `node_heartbeat_missing` | node | max | now - the node's newest `heartbeat` sample (any of its monitors) |
| `holomorphic_throughput` | node, worker | sum | bench samples `holomorphic_throughput` (samples/s) |
| `no_improvement_for_generations` | – | max | `analytics.convergence.stall_generations` of the best score |
| `hourly_cost` | – | sum | `analytics.cost`: the hourly price of the machines running now |

Besides these, `agent.<metric>`, `node.<metric>`, `gpu.<metric>` and `bench.<metric>` name the
latest value of any stored metric of that kind (labels agent+node, node, node+gpu, node+worker;
reduce max), and the rule file's `values` (such as `budget_threshold`) are constants.

Only samples newer than the lookback (300 s by default, Prometheus' staleness window) count as
"latest", so a series that stopped reporting drops out instead of alerting on an old value forever;
heartbeats are the exception, since their absence is the signal.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import pandas as pd

from elitemon.analytics.convergence import DEFAULT_METRIC, population_progress, stall_generations
from elitemon.analytics.cost import PriceTable, node_usage, summarise_cost

#: A series' labels, sorted by name: `(("gpu", "0"), ("node", "10.0.0.5"))`.
Labels = tuple[tuple[str, str], ...]

DEFAULT_LOOKBACK_S = 300.0


class Reduce(enum.Enum):
    """How the series of one signal that match an instance become one value."""

    MAX = "max"
    MIN = "min"
    SUM = "sum"

    def __call__(self, values: list[float]) -> float:
        return {Reduce.MAX: max, Reduce.MIN: min, Reduce.SUM: math.fsum}[self](values)


@dataclass(frozen=True)
class Signal:
    """One signal's series (labels → value) and how to reduce them for an instance."""

    series: Mapping[Labels, float]
    reduce: Reduce = Reduce.MAX


#: The built-in signals and their reduction (see the module docstring for where each comes from).
BUILTIN: Mapping[str, Reduce] = MappingProxyType(
    {
        "cpu_usage": Reduce.MAX,
        "memory_usage": Reduce.MAX,
        "gpu_memory_usage": Reduce.MAX,
        "gpu_utilization": Reduce.MAX,
        "node_heartbeat_missing": Reduce.MAX,
        "holomorphic_throughput": Reduce.SUM,
        "no_improvement_for_generations": Reduce.MAX,
        "hourly_cost": Reduce.SUM,
    }
)
#: Prefixes naming the latest value of any stored metric of that sample kind.
METRIC_PREFIXES = ("agent.", "node.", "gpu.", "bench.")


class KnownNames(Collection[str]):
    """The names a rule file may use: the built-ins, `kind.<metric>` names, and the file's values.

    Iterating yields the fixed names only (for "did you mean" suggestions); membership also accepts
    any `<kind>.<metric>` name, since metrics appear in the store only once something reports them.
    """

    def __init__(self, values: Collection[str] = ()) -> None:
        self._fixed = tuple(BUILTIN) + tuple(values)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (
            name in self._fixed or any(name.startswith(p) and len(name) > len(p) for p in METRIC_PREFIXES)
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._fixed)

    def __len__(self) -> int:
        return len(self._fixed)


@dataclass(frozen=True)
class Snapshot:
    """Every signal's series at one evaluation time `now` (epoch seconds)."""

    now: float
    signals: Mapping[str, Signal] = field(default_factory=dict)
    #: Signals that could not be computed, with the reason (their rules see no data, not a crash).
    errors: Mapping[str, str] = field(default_factory=dict)

    #: Memos of `instances` and of each signal's series grouped for `value` (see there): a snapshot
    #: is immutable, and a thousand rules reading ten signals share them.
    _instances: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _groups: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def instances(self, names: Collection[str], per: tuple[str, ...]) -> Mapping[Labels, Mapping[str, float | None]]:
        """For a rule using `names` and evaluated per the label names `per` (empty: once overall):
        each instance's labels and the value of each name there (None where no series matches).

        The instances are the label sets (restricted to `per`) of the series of `names` that carry
        every label of `per`; a rule whose signals have no such series has no instance, so it can
        neither fire nor resolve by accident (as a Prometheus query with an empty result).
        """
        memo_key = (frozenset(names), tuple(per))
        if memo_key not in self._instances:
            keys: set[Labels] = {()} if not per else set()
            if per:
                for name in names:
                    for labels in self._series(name):
                        as_dict = dict(labels)
                        if all(label in as_dict for label in per):
                            keys.add(tuple((label, as_dict[label]) for label in sorted(per)))
            instances = {key: MappingProxyType({name: self.value(name, key) for name in names}) for key in keys}
            self._instances[memo_key] = MappingProxyType(instances)
        return self._instances[memo_key]

    def value(self, name: str, instance: Labels) -> float | None:
        """The reduced value of `name` over its series that agree with `instance` on shared labels.

        The series are grouped once per (signal, instance label names) by their values of the labels
        they share with the instance, so each instance looks its series up instead of scanning all:
        evaluating a rule is linear in its series, not quadratic (benchmarks/alerts.py measured 88 ms
        a rule at 400 series before)."""
        signal = self.signals.get(name)
        if signal is None:
            return None
        wanted = dict(instance)
        matching: list[float] = []
        for shared, by_values in self._grouped(name, signal, tuple(sorted(wanted))).items():
            matching += by_values.get(tuple(wanted[label] for label in shared), ())
        return signal.reduce(matching) if matching else None

    def _grouped(self, name: str, signal: Signal, instance_names: tuple[str, ...]) -> dict:
        """{labels shared with the instance: {their values: [series values]}} for one signal."""
        key = (name, instance_names)
        if key not in self._groups:
            names, groups = set(instance_names), {}
            for labels, value in signal.series.items():
                shared = tuple(label for label, _ in labels if label in names)
                values = tuple(label_value for label, label_value in labels if label in names)
                groups.setdefault(shared, {}).setdefault(values, []).append(value)
            self._groups[key] = groups
        return self._groups[key]

    def _series(self, name: str) -> Collection[Labels]:
        signal = self.signals.get(name)
        return signal.series.keys() if signal is not None else ()


@dataclass(frozen=True, kw_only=True)
class SignalSettings:
    """What the computation needs beyond the data: the score metric, the tolerance that counts as
    an improvement, prices, the rule file's constants and the staleness lookback."""

    score_metric: str = DEFAULT_METRIC
    improvement_tolerance: float = 0.0
    prices: PriceTable = field(default_factory=PriceTable)
    values: Mapping[str, float] = field(default_factory=dict)
    lookback_s: float = DEFAULT_LOOKBACK_S


def compute_snapshot(
    recent: pd.DataFrame,
    heartbeats: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    now: float,
    settings: SignalSettings,
    wanted: Collection[str] | None = None,
    gpu_models: Mapping[str, str] | None = None,
) -> Snapshot:
    """The signals at `now` from three frames of the `samples` table:

    - `recent`: samples of the lookback window (any kind), for the latest values and the cost;
    - `heartbeats`: the newest `heartbeat` sample of each monitor, whatever its age;
    - `scores`: the score metric's agent samples over the whole store, for the stall length (of
      the agents that reported a score inside the lookback: the run training now).

    `wanted` limits the work to the names the rules use (None: all built-ins). `gpu_models` (node IP
    -> model, `analytics.cost.gpu_models` of the monitors' `gpu_info` events) prices GPU hours by
    model for `hourly_cost`; without it, every GPU costs the table's `default_gpu_hour`.
    """
    wanted = set(BUILTIN) if wanted is None else set(wanted)
    recent = _fresh(recent, now - settings.lookback_s)
    latest = _latest(recent)
    signals: dict[str, Signal] = {}
    errors: dict[str, str] = {}
    for name in sorted(wanted):
        try:
            series = _builtin(name, latest, heartbeats, scores, recent, now, settings, gpu_models)
        except ValueError as error:  # e.g. a node whose CPU count the price needs is unknown
            errors[name] = str(error)
            continue
        if series is None and name.startswith(METRIC_PREFIXES):
            kind, metric = name.split(".", 1)
            series = _metric_series(latest, kind, metric)
        if series is not None:
            signals[name] = Signal(MappingProxyType(series), BUILTIN.get(name, Reduce.MAX))
    for name, value in settings.values.items():
        signals[name] = Signal(MappingProxyType({(): float(value)}))
    return Snapshot(now=now, signals=MappingProxyType(signals), errors=MappingProxyType(errors))


def _builtin(
    name: str,
    latest: pd.DataFrame,
    heartbeats: pd.DataFrame,
    scores: pd.DataFrame,
    recent: pd.DataFrame,
    now: float,
    settings: SignalSettings,
    gpu_models: Mapping[str, str] | None,
) -> dict[Labels, float] | None:
    if name == "cpu_usage":
        return _scaled(_metric_series(latest, "node", "cpu_percent"), 0.01)
    if name == "memory_usage":
        return _scaled(_metric_series(latest, "node", "memory_percent"), 0.01)
    if name == "gpu_utilization":
        return _scaled(_metric_series(latest, "gpu", "gpu_utilization_percent"), 0.01)
    if name == "gpu_memory_usage":
        return _gpu_memory_usage(latest)
    if name == "node_heartbeat_missing":
        return _heartbeat_missing(heartbeats, now)
    if name == "holomorphic_throughput":
        return _metric_series(latest, "bench", "holomorphic_throughput")
    if name == "no_improvement_for_generations":
        return _stall(scores, recent, settings)
    if name == "hourly_cost":
        return _hourly_cost(recent, settings.prices, now, gpu_models)
    return None


def _fresh(samples: pd.DataFrame, since: float) -> pd.DataFrame:
    if samples.empty:
        return samples
    return samples[_epoch(samples["ts"]) >= since]


def _latest(samples: pd.DataFrame) -> pd.DataFrame:
    """The newest row of each (kind, node, source, metric) series with a finite value; for agents,
    of each (agent, metric), on whichever node it came from. A PBT trial that restarts on another
    node is one agent: the series it left on the old node would otherwise stay fresh for the
    lookback, and `per: agent` would read the larger of an old and a new value."""
    if samples.empty:
        return samples
    finite = samples[np.isfinite(samples["value"].astype(float))].sort_values("ts", kind="stable")
    agents = finite["kind"] == "agent"
    by_series = finite[~agents].groupby(["kind", "node", "source", "metric"], dropna=False).tail(1)
    by_agent = finite[agents].groupby(["source", "metric"], dropna=False).tail(1)
    return pd.concat([by_series, by_agent]).sort_values("ts", kind="stable")


def _labels(kind: str, node: object, source: str) -> Labels:
    node = "" if node is None or (isinstance(node, float) and math.isnan(node)) else str(node)
    if kind == "agent":
        return (("agent", source), ("node", node))
    if kind == "gpu":
        return (("gpu", source.rsplit("/gpu", 1)[-1]), ("node", node))
    if kind == "bench":
        return (("node", node), ("worker", source))
    return (("node", node),)


def _metric_series(latest: pd.DataFrame, kind: str, metric: str) -> dict[Labels, float]:
    if latest.empty:
        return {}
    rows = latest[(latest["kind"] == kind) & (latest["metric"] == metric)]
    return {
        _labels(kind, node, str(source)): float(value)
        for node, source, value in zip(rows["node"], rows["source"], rows["value"], strict=True)
    }


def _scaled(series: dict[Labels, float], factor: float) -> dict[Labels, float]:
    return {labels: value * factor for labels, value in series.items()}


def _gpu_memory_usage(latest: pd.DataFrame) -> dict[Labels, float]:
    used = _metric_series(latest, "gpu", "gpu_memory_used_bytes")
    total = _metric_series(latest, "gpu", "gpu_memory_total_bytes")
    return {labels: used[labels] / total[labels] for labels in used.keys() & total.keys() if total[labels] > 0}


def _heartbeat_missing(heartbeats: pd.DataFrame, now: float) -> dict[Labels, float]:
    """Seconds since each node's newest heartbeat. A node (IP) counts as alive while any of its
    monitors beats, so a Ray node that restarted on the same host resolves the alert."""
    if heartbeats.empty:
        return {}
    newest = heartbeats.assign(at=_epoch(heartbeats["ts"])).groupby("node")["at"].max()
    return {(("node", str(node)),): max(0.0, now - float(at)) for node, at in newest.items()}


def _stall(scores: pd.DataFrame, recent: pd.DataFrame, settings: SignalSettings) -> dict[Labels, float]:
    """The stall of the population that is training now: the agents with a score inside the
    lookback, over their whole history. A data directory keeps earlier runs, whose stall would
    otherwise count (and fire on a healthy new run); once a run ends, the signal goes stale."""
    active = recent.loc[(recent["kind"] == "agent") & (recent["metric"] == settings.score_metric), "source"]
    scores = scores[scores["source"].isin(set(active))] if not scores.empty else scores
    if scores.empty:
        return {}
    progress = population_progress(scores, metric=settings.score_metric)
    if progress.empty:
        return {}
    return {(): float(stall_generations(progress["best"], tolerance=settings.improvement_tolerance))}


def _hourly_cost(
    recent: pd.DataFrame, prices: PriceTable, now: float, gpu_models: Mapping[str, str] | None
) -> dict[Labels, float]:
    machines = recent[recent["kind"].isin(["node", "gpu"])] if not recent.empty else recent
    if machines.empty:
        return {}
    usage = node_usage(machines, prices, gpu_model=gpu_models, now=pd.Timestamp(now, unit="s", tz="UTC"))
    return {(): summarise_cost(usage, prices).hourly_cost}


def _epoch(ts: pd.Series) -> np.ndarray:
    """Epoch seconds of a timestamp column (timezone-aware datetimes)."""
    return pd.to_datetime(ts, utc=True).to_numpy(dtype="datetime64[us]").astype(np.int64) / 1e6
