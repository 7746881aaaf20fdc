"""Scaling recommendation: which resource limits the run, how many nodes a target throughput needs at
the scaling efficiency actually measured, what that costs, and whether tuning the current nodes is the
better move.

Inputs are the `samples` table as a pandas DataFrame (columns ts, kind, node, source, generation,
metric, value): host rows (kind "node": cpu_percent, memory_used_bytes, memory_available_bytes,
net_sent/recv_bytes_per_s, disk_read/write_bytes_per_s), GPU rows (kind "gpu", one `source` per GPU:
gpu_utilization_percent, gpu_memory_used_bytes, gpu_memory_total_bytes) and the agents' throughput
reports (kind "agent", default metric episodes_per_s, with the `node` they ran on). NaN and infinite
values are left out. Pass the time range you want judged: every mean is over the rows given.

Formulas (the docstrings below repeat the one they implement):
- utilisation of a resource on a node = the mean over its rows, as a share of capacity (below);
  the cluster's utilisation is the mean over nodes, and its peak the most utilised node.
- pressure = utilisation / saturation threshold; the bottleneck is the resource of highest pressure.
- throughput T(n) on n nodes follows Amdahl's law T(n) = T1 * n / (1 + s * (n - 1)), whose
  efficiency(n) = T(n) / (n * T1) = 1 / (1 + s * (n - 1)); s, the serial fraction, is fitted by
  least squares to the throughput observed at different node counts.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar

from elitemon.analytics import cost
from elitemon.analytics._frames import is_number, is_whole_number, require_columns, require_datetime_ts

SAMPLE_COLUMNS = ("ts", "kind", "node", "source", "generation", "metric", "value")
OBSERVATION_COLUMNS = ("nodes", "throughput")


class Resource(enum.StrEnum):
    """A resource that can limit throughput."""

    CPU = "cpu"
    MEMORY = "memory"
    GPU = "gpu"
    GPU_MEMORY = "gpu_memory"
    NETWORK = "network"
    DISK = "disk"


class ScalingAction(enum.StrEnum):
    """What the recommendation says to do."""

    NO_CHANGE = "no_change"  # the target is already met
    OPTIMISE_CURRENT = "optimise_current"  # the current nodes have the headroom for the target
    SCALE_OUT = "scale_out"  # add nodes
    UNREACHABLE = "unreachable"  # no node count up to max_nodes reaches the target at the measured efficiency


#: Utilisation at which a resource counts as saturated. CPU 95% and GPU memory 90% are the product
#: spec's `resource_exhaustion` alert; links and disks queue well before 100%, hence 80%.
DEFAULT_SATURATION: Mapping[Resource, float] = MappingProxyType(
    {
        Resource.CPU: 0.95,
        Resource.MEMORY: 0.90,
        Resource.GPU: 0.90,
        Resource.GPU_MEMORY: 0.90,
        Resource.NETWORK: 0.80,
        Resource.DISK: 0.80,
    }
)
#: Used only when throughput was seen at a single node count (flagged `efficiency_measured=False`):
#: efficiency 95% at 2 nodes, 87% at 4, 74% at 8.
DEFAULT_SERIAL_FRACTION = 0.05


@dataclass(frozen=True, kw_only=True)
class ScalingSettings:
    """How to read the samples and judge the result. Capacities are per node and per direction (links
    are full duplex): the defaults, a 10 Gbit/s link and a 500 MB/s disk, are assumptions; give your
    hardware's. A target that needs more than `max_nodes` nodes counts as unreachable."""

    throughput_metric: str = "episodes_per_s"
    window_s: float = 300.0
    saturation: Mapping[Resource, float] = field(default_factory=lambda: DEFAULT_SATURATION)
    network_bytes_per_s: float = 1.25e9
    disk_bytes_per_s: float = 5e8
    default_serial_fraction: float = DEFAULT_SERIAL_FRACTION
    max_nodes: int = 1000

    def __post_init__(self) -> None:
        if not isinstance(self.throughput_metric, str) or not self.throughput_metric:
            raise ValueError(f"throughput_metric must be a non-empty string, but got {self.throughput_metric!r}.")
        for name in ("window_s", "network_bytes_per_s", "disk_bytes_per_s"):
            value = getattr(self, name)
            if not is_number(value) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be finite and > 0, but got {value!r}.")
        if not is_whole_number(self.max_nodes) or self.max_nodes < 1:
            raise ValueError(f"max_nodes must be an integer >= 1, but got {self.max_nodes!r}.")
        _check_serial_fraction(self.default_serial_fraction)
        unknown = [key for key in self.saturation if key not in set(Resource)]
        missing = [r.value for r in Resource if r not in self.saturation]
        if unknown or missing:
            raise ValueError(f"saturation must have one threshold per resource: unknown {unknown}, missing {missing}.")
        for resource, threshold in self.saturation.items():
            if not is_number(threshold) or not 0 < threshold <= 1:
                raise ValueError(f"saturation[{resource}] must be in (0, 1], but got {threshold!r}.")
        thresholds = {Resource(key): float(value) for key, value in self.saturation.items()}
        object.__setattr__(self, "saturation", MappingProxyType(thresholds))


# --------------------------------------------------------------------------------------------
# Resource utilisation


@dataclass(frozen=True)
class ResourceUtilisation:
    """One resource across the cluster: `mean` over nodes of each node's mean utilisation (0..1),
    the most utilised node and its value, the saturation threshold, and pressure = mean / threshold."""

    resource: Resource
    mean: float
    peak: float
    peak_node: str
    threshold: float
    pressure: float
    saturated: bool  # mean >= threshold


def resource_utilisation(samples: pd.DataFrame, settings: ScalingSettings) -> tuple[ResourceUtilisation, ...]:
    """Utilisation of every resource the samples measure, highest pressure first.

    Per node (by IP), as a share of capacity:
    CPU = mean(cpu_percent) / 100; memory = mean(used) / (mean(used) + mean(available)) (psutil's
    used + available is the memory in use or reclaimable, close to the total); network =
    max(mean(sent), mean(received)) / network_bytes_per_s; disk = (mean(read) + mean(write)) /
    disk_bytes_per_s; GPU = mean(gpu_utilization_percent) / 100 over the node's GPUs; GPU memory =
    the mean over the node's GPUs of mean(used) / mean(total). A resource without rows is left out.
    Raises ValueError when no resource is measured.
    """
    per_node = _node_utilisation(samples, settings)
    results = []
    for resource in per_node.columns:
        values = per_node[resource].dropna()
        if values.empty:
            continue
        threshold = settings.saturation[resource]
        mean = float(values.mean())
        results.append(
            ResourceUtilisation(
                resource=Resource(resource),
                mean=mean,
                peak=float(values.max()),
                peak_node=str(values.idxmax()),
                threshold=threshold,
                pressure=mean / threshold,
                saturated=mean >= threshold,
            )
        )
    if not results:
        raise ValueError("samples: no node or GPU utilisation rows (cpu_percent, gpu_utilization_percent, ...).")
    return tuple(sorted(results, key=lambda r: r.pressure, reverse=True))


def _node_utilisation(samples: pd.DataFrame, settings: ScalingSettings) -> pd.DataFrame:
    """Nodes (index) x resources (columns) of utilisation, NaN where a node does not measure one."""
    rows = _finite(samples)
    host = _metric_means(rows[rows["kind"] == "node"], ["node"])
    gpu = _metric_means(rows[rows["kind"] == "gpu"], ["node", "source"])
    columns: dict[Resource, pd.Series] = {}
    if "cpu_percent" in host:
        columns[Resource.CPU] = host["cpu_percent"] / 100
    if {"memory_used_bytes", "memory_available_bytes"} <= set(host.columns):
        used = host["memory_used_bytes"]
        columns[Resource.MEMORY] = used / (used + host["memory_available_bytes"])
    if {"net_sent_bytes_per_s", "net_recv_bytes_per_s"} <= set(host.columns):
        busiest_direction = host[["net_sent_bytes_per_s", "net_recv_bytes_per_s"]].max(axis=1)
        columns[Resource.NETWORK] = busiest_direction / settings.network_bytes_per_s
    if {"disk_read_bytes_per_s", "disk_write_bytes_per_s"} <= set(host.columns):
        disk = host["disk_read_bytes_per_s"] + host["disk_write_bytes_per_s"]
        columns[Resource.DISK] = disk / settings.disk_bytes_per_s
    if "gpu_utilization_percent" in gpu:
        columns[Resource.GPU] = gpu["gpu_utilization_percent"].groupby(level="node").mean() / 100
    if {"gpu_memory_used_bytes", "gpu_memory_total_bytes"} <= set(gpu.columns):
        total = gpu["gpu_memory_total_bytes"].where(gpu["gpu_memory_total_bytes"] > 0)
        columns[Resource.GPU_MEMORY] = (gpu["gpu_memory_used_bytes"] / total).groupby(level="node").mean()
    return pd.DataFrame(columns)


def _metric_means(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The mean value of each metric (columns) per key (index: node, or node and GPU source)."""
    if rows.empty:
        return pd.DataFrame()
    grouping = [rows[key] for key in [*keys, "metric"]]  # as they come: categoricals are costly to convert
    return rows["value"].groupby(grouping, observed=True).mean().unstack("metric")


# --------------------------------------------------------------------------------------------
# Throughput and scaling efficiency


def throughput_by_node_count(samples: pd.DataFrame, settings: ScalingSettings) -> pd.DataFrame:
    """The population's throughput in consecutive windows, and how many nodes produced it.

    Windows of `window_s` seconds end at the newest report and go back in time; the oldest window is
    left out unless it is the only one, since the data usually starts inside it. In a window,
    throughput = Σ over agents of the mean of their `throughput_metric` reports, and nodes = the
    number of distinct nodes those reports came from. Choose window_s longer than an iteration, or
    agents that did not report inside a window are missed. Columns: window_end, nodes, agents,
    throughput; newest window first. Raises ValueError when no agent reported the metric with a node.
    """
    rows = _finite(samples)
    rows = rows[(rows["kind"] == "agent") & (rows["metric"] == settings.throughput_metric) & rows["node"].notna()]
    if rows.empty:
        raise ValueError(f"samples: no agent reported {settings.throughput_metric!r} with its node.")
    newest = rows["ts"].max()
    window = ((newest - rows["ts"]).dt.total_seconds() // settings.window_s).astype(int)
    if window.max() > 0:
        rows, window = rows[window < window.max()], window[window < window.max()]
    per_agent = rows.groupby([window, rows["source"].astype(str)])["value"].mean()
    table = pd.DataFrame(
        {
            "nodes": rows.groupby(window)["node"].nunique(),
            "agents": per_agent.groupby(level=0).size(),
            "throughput": per_agent.groupby(level=0).sum(),
        }
    ).sort_index()
    table.insert(0, "window_end", newest - pd.to_timedelta(table.index * settings.window_s, unit="s"))
    return table.reset_index(drop=True)


@dataclass(frozen=True)
class AmdahlFit:
    """T(n) = single_node_throughput * n / (1 + serial_fraction * (n - 1)).

    `measured` is False when the observations cover a single node count: then serial_fraction is the
    stated default and single_node_throughput = T(n0) * (1 + s * (n0 - 1)) / n0 from that count."""

    serial_fraction: float
    single_node_throughput: float
    measured: bool
    node_counts: tuple[int, ...]

    def throughput(self, nodes: float) -> float:
        return self.single_node_throughput * nodes * self.efficiency(nodes)

    def efficiency(self, nodes: float) -> float:
        """T(n) / (n * T(1)) = 1 / (1 + s * (n - 1))."""
        return 1.0 / (1.0 + self.serial_fraction * (nodes - 1))

    @property
    def ceiling(self) -> float:
        """The limit of T(n) as n grows: T1 / s (infinite when s = 0)."""
        return self.single_node_throughput / self.serial_fraction if self.serial_fraction > 0 else math.inf

    def nodes_for(self, target_throughput: float) -> float | None:
        """The (fractional) n with T(n) = target: n = target * (1 - s) / (T1 - target * s); None when
        the target is at or above the ceiling T1 / s that no node count reaches."""
        s, t1 = self.serial_fraction, self.single_node_throughput
        denominator = t1 - target_throughput * s
        return target_throughput * (1 - s) / denominator if denominator > 0 else None


def fit_amdahl(observations: pd.DataFrame, *, default_serial_fraction: float = DEFAULT_SERIAL_FRACTION) -> AmdahlFit:
    """Fit Amdahl's law to (nodes, throughput) observations by least squares, s within [0, 1].

    For a given s the best T1 is closed-form: with g_i = n_i / (1 + s (n_i - 1)), T1 = Σ T_i g_i / Σ
    g_i²; s then minimises Σ (T_i - T1 g_i)² (bounded scalar search). s = 0 is linear scaling; a
    super-linear observation fits as s = 0. With one node count there is nothing to fit: see AmdahlFit.
    """
    if not isinstance(observations, pd.DataFrame) or any(c not in observations for c in OBSERVATION_COLUMNS):
        raise ValueError(f"observations must be a DataFrame with columns {list(OBSERVATION_COLUMNS)}.")
    _check_serial_fraction(default_serial_fraction)
    nodes = observations["nodes"].to_numpy(dtype=np.float64)
    throughput = observations["throughput"].to_numpy(dtype=np.float64)
    usable = np.isfinite(nodes) & np.isfinite(throughput)
    nodes, throughput = nodes[usable], throughput[usable]
    if nodes.size == 0:
        raise ValueError("observations: no finite (nodes, throughput) pair.")
    if (nodes < 1).any() or (nodes != np.round(nodes)).any() or (throughput < 0).any():
        raise ValueError("observations: nodes must be whole numbers >= 1 and throughput >= 0.")
    if not throughput.any():
        raise ValueError("observations: throughput is 0 at every node count, which says nothing about how it scales.")
    counts = tuple(sorted({int(n) for n in nodes}))

    def level(s: float) -> float:
        gain = nodes / (1 + s * (nodes - 1))
        return float(throughput @ gain / (gain @ gain))

    def residual(s: float) -> float:
        return float(np.sum((throughput - level(s) * nodes / (1 + s * (nodes - 1))) ** 2))

    if len(counts) == 1:
        return AmdahlFit(default_serial_fraction, level(default_serial_fraction), measured=False, node_counts=counts)
    best = minimize_scalar(residual, bounds=(0.0, 1.0), method="bounded", options={"xatol": 1e-10})
    s = min((float(best.x), 0.0, 1.0), key=residual)  # the search never evaluates the bounds themselves
    return AmdahlFit(s, level(s), measured=True, node_counts=counts)


# --------------------------------------------------------------------------------------------
# The recommendation


@dataclass(frozen=True)
class ScalingRecommendation:
    """What to do to reach `target_throughput`, and the numbers behind it (see recommend_scaling)."""

    action: ScalingAction
    explanation: str
    bottleneck: ResourceUtilisation
    utilisation: tuple[ResourceUtilisation, ...]
    current_nodes: int
    current_throughput: float
    target_throughput: float
    throughput_factor: float  # target / current throughput
    headroom_factor: float  # bottleneck threshold / bottleneck utilisation
    serial_fraction: float
    efficiency_measured: bool
    node_counts_observed: tuple[int, ...]
    nodes_for_target: int | None  # None when unreachable
    scaling_factor: float | None  # nodes_for_target / current_nodes
    expected_throughput: float | None  # T(nodes_for_target)
    expected_efficiency: float | None  # efficiency(nodes_for_target)
    currency: str
    current_hourly_cost: float
    node_hourly_price: float
    added_hourly_cost: float | None  # (nodes_for_target - current_nodes) * node_hourly_price


def recommend_scaling(
    samples: pd.DataFrame,
    *,
    target_throughput: float,
    prices: cost.PriceTable,
    settings: ScalingSettings | None = None,
    observations: pd.DataFrame | None = None,
    cpus_per_node: int | Mapping[str, int] | None = None,
    gpu_model: str | Mapping[str, str] | None = None,
) -> ScalingRecommendation:
    """Recommend how to reach `target_throughput` (in units of settings.throughput_metric, population total).

    - Current: the nodes and throughput of the newest window of `throughput_by_node_count`.
    - Efficiency: Amdahl's law fitted to `observations` (columns nodes, throughput; e.g. benchmark
      runs at 1, 2, 4 nodes), by default to the windows of this run. The fit's serial fraction s sets
      the shape, the current measurement the level: T1 = T_now * (1 + s (n_now - 1)) / n_now, so the
      model passes through what runs now. nodes_for_target = ceil(n) for T(n) = target. Windows from a
      warm-up (agents still starting) read as poor scaling: pass benchmark `observations` if you have them.
    - Cost: node_hourly_price = the mean price of the running nodes (cost.node_usage with `prices`,
      `cpus_per_node`, `gpu_model`); added_hourly_cost = (nodes_for_target - n_now) * that price.
    - Action, first rule that holds: NO_CHANGE if T_now >= target; OPTIMISE_CURRENT if target / T_now
      <= headroom_factor = threshold / utilisation of the bottleneck, i.e. the target is within reach
      by raising the busiest resource to its saturation threshold on the nodes already paid for
      (assuming throughput grows in proportion; e.g. CPU at 40% of a 95% threshold allows 2.4x);
      UNREACHABLE if no node count up to settings.max_nodes reaches the target; else SCALE_OUT.
    """
    settings = settings or ScalingSettings()
    if not is_number(target_throughput) or not math.isfinite(target_throughput) or target_throughput <= 0:
        raise ValueError(f"target_throughput must be finite and > 0, but got {target_throughput!r}.")
    require_columns(samples, "samples", SAMPLE_COLUMNS)
    utilisation = resource_utilisation(samples, settings)
    windows = throughput_by_node_count(samples, settings)
    current_nodes, current = int(windows["nodes"].iloc[0]), float(windows["throughput"].iloc[0])
    if current <= 0:
        raise ValueError(f"samples: the current {settings.throughput_metric} is 0; there is nothing to scale.")
    fitted = fit_amdahl(
        windows if observations is None else observations, default_serial_fraction=settings.default_serial_fraction
    )
    s = fitted.serial_fraction
    model = AmdahlFit(s, current * (1 + s * (current_nodes - 1)) / current_nodes, fitted.measured, fitted.node_counts)
    exact_nodes = model.nodes_for(target_throughput)
    # A count within one part in a million of a whole number is that number, not one node more: the
    # fitted serial fraction is only that precise.
    reachable = exact_nodes is not None and exact_nodes <= settings.max_nodes
    nodes = max(current_nodes, math.ceil(exact_nodes * (1 - 1e-6))) if reachable else None
    usage = cost.node_usage(samples, prices, cpus_per_node=cpus_per_node, gpu_model=gpu_model)
    running = usage[usage["active"]]
    node_price = float(running["hourly_price"].mean()) if not running.empty else 0.0
    bottleneck = utilisation[0]
    headroom = bottleneck.threshold / bottleneck.mean if bottleneck.mean > 0 else math.inf
    factor = target_throughput / current
    if current >= target_throughput:
        action = ScalingAction.NO_CHANGE
    elif factor <= headroom:
        action = ScalingAction.OPTIMISE_CURRENT
    elif nodes is None:
        action = ScalingAction.UNREACHABLE
    else:
        action = ScalingAction.SCALE_OUT
    recommendation = ScalingRecommendation(
        action=action,
        explanation="",
        bottleneck=bottleneck,
        utilisation=utilisation,
        current_nodes=current_nodes,
        current_throughput=current,
        target_throughput=float(target_throughput),
        throughput_factor=factor,
        headroom_factor=headroom,
        serial_fraction=s,
        efficiency_measured=fitted.measured,
        node_counts_observed=fitted.node_counts,
        nodes_for_target=nodes,
        scaling_factor=nodes / current_nodes if nodes is not None else None,
        expected_throughput=model.throughput(nodes) if nodes is not None else None,
        expected_efficiency=model.efficiency(nodes) if nodes is not None else None,
        currency=prices.currency,
        current_hourly_cost=float(running["hourly_price"].sum()),
        node_hourly_price=node_price,
        added_hourly_cost=(nodes - current_nodes) * node_price if nodes is not None else None,
    )
    return _with_explanation(recommendation, settings, model.ceiling)


def _with_explanation(r: ScalingRecommendation, settings: ScalingSettings, ceiling: float) -> ScalingRecommendation:
    """The recommendation with its one-line explanation filled in."""
    metric = settings.throughput_metric
    b = r.bottleneck
    where = f"bottleneck {b.resource} at {b.mean:.0%} (saturates at {b.threshold:.0%})"
    efficiency = (
        f"serial fraction {r.serial_fraction:.3f} measured over {_counts(r.node_counts_observed)} nodes"
        if r.efficiency_measured
        else f"serial fraction {r.serial_fraction:.3f} ASSUMED (only {_counts(r.node_counts_observed)} node(s) seen)"
    )
    now = f"{r.current_throughput:,.4g} {metric} on {r.current_nodes} node(s)"
    match r.action:
        case ScalingAction.NO_CHANGE:
            text = f"no change: {now} already meets the target {r.target_throughput:,.4g}; {where}"
        case ScalingAction.OPTIMISE_CURRENT:
            text = (
                f"optimise the current nodes: the target needs {r.throughput_factor:.2f}x the {now}, and the "
                f"{where} leaves {r.headroom_factor:.2f}x headroom"
            )
        case ScalingAction.UNREACHABLE:
            text = (
                f"unreachable: {r.target_throughput:,.4g} {metric} needs more than {settings.max_nodes} nodes "
                f"(ceiling {ceiling:,.4g} as nodes grow, {efficiency}; now {r.current_throughput:,.4g}); {where}"
            )
        case ScalingAction.SCALE_OUT:
            text = (
                f"scale out {r.current_nodes} -> {r.nodes_for_target} nodes for {r.target_throughput:,.4g} {metric} "
                f"(now {r.current_throughput:,.4g}; {efficiency}; {where}; "
                f"+{r.added_hourly_cost:,.2f} {r.currency}/h)"
            )
    return replace(r, explanation=text)


def _check_serial_fraction(value: float) -> None:
    if not is_number(value) or not 0 <= value <= 1:
        raise ValueError(f"default_serial_fraction must be a number in [0, 1], but got {value!r}.")


def _counts(counts: tuple[int, ...]) -> str:
    return ", ".join(str(n) for n in counts)


def _finite(samples: pd.DataFrame) -> pd.DataFrame:
    require_columns(samples, "samples", SAMPLE_COLUMNS)
    require_datetime_ts(samples, "samples")
    values = pd.to_numeric(samples["value"], errors="coerce").astype(np.float64)
    return samples.assign(value=values)[np.isfinite(values.to_numpy())]
