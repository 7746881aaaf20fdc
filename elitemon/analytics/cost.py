"""Cost and return on investment of a PBT run: what the machines cost so far and per hour, what each
point of score improvement and each million samples cost, and how fast the budget burns.

Prices come from a `PriceTable` (per CPU-hour, per GPU-hour by GPU model, optionally per node-hour).
Its defaults are EXAMPLE on-demand prices, there only so that the numbers have a plausible scale:
override them with your provider's prices (`PriceTable.from_mapping`, e.g. from a YAML file).

Machines are found in the `samples` table: rows of kind "node" (host metrics, `source` = the node
monitor's id, `node` = the node's IP) and "gpu" (`source` = "<ip>/gpu<index>"). Inputs are pandas
DataFrames with the tables' columns; timestamps are timezone-aware datetimes. Agent values that are
NaN or infinite are left out; for machines only the timestamps of their rows matter.

`CostSummary.hourly_cost` is the figure the alert rule `cost_spike: hourly_cost > budget_threshold *
1.5` reads: the price per hour of the machines running now.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from elitemon.analytics._frames import is_number, is_whole_number, require_columns, require_datetime_ts
from elitemon.analytics.migration import payload_source_generation

SAMPLE_COLUMNS = ("ts", "kind", "node", "source", "generation", "metric", "value")
EVENT_COLUMNS = ("ts", "type", "agent", "source_agent", "generation", "payload")
USAGE_COLUMNS = ("node", "hours", "cpus", "gpus", "gpu_model", "hourly_price", "cost", "active")
SECONDS_PER_HOUR = 3600.0
#: A machine whose last sample is older than this (before the newest sample) counts as no longer running;
#: the same 300 s as the `node_failure` alert rule's missing heartbeat.
DEFAULT_STALE_AFTER_S = 300.0
_CPU_CORE_METRIC = re.compile(r"cpu_percent_core_\d+")

#: EXAMPLE on-demand prices in USD per GPU-hour, of the order of public cloud list prices; not a quote.
EXAMPLE_GPU_HOUR_PRICES: Mapping[str, float] = MappingProxyType(
    {"T4": 0.35, "L4": 0.80, "A10G": 1.00, "V100": 2.50, "A100": 3.00, "H100": 5.00, "H200": 6.00}
)


# --------------------------------------------------------------------------------------------
# Prices


@dataclass(frozen=True, kw_only=True)
class PriceTable:
    """Prices per resource-hour. THE DEFAULTS ARE EXAMPLES: override them with what you pay.

    A node costs `node_hour + cpus * cpu_hour + gpus * gpu_hour_for(model)` per hour. `gpu_hour` maps
    a GPU model to its price; a reported model name such as "NVIDIA A100-SXM4-80GB" matches the
    longest key it contains as a whole word (case-insensitive; not next to another letter or digit,
    so that "L4" does not price an "L40S", nor "A100" an "RTX A1000"), and a GPU of unknown model
    costs `default_gpu_hour`.
    """

    cpu_hour: float = 0.04
    gpu_hour: Mapping[str, float] = field(default_factory=lambda: EXAMPLE_GPU_HOUR_PRICES)
    default_gpu_hour: float = 3.00
    node_hour: float = 0.0
    currency: str = "USD"

    def __post_init__(self) -> None:
        for name in ("cpu_hour", "default_gpu_hour", "node_hour"):
            _check_non_negative(name, getattr(self, name), what="price")
        if not isinstance(self.gpu_hour, Mapping):
            raise ValueError(f"gpu_hour must be a mapping of GPU model to price, but got {self.gpu_hour!r}.")
        for model, price in self.gpu_hour.items():
            if not isinstance(model, str) or not model:
                raise ValueError(f"gpu_hour: GPU models must be non-empty strings, but got {model!r}.")
            _check_non_negative(f"gpu_hour[{model!r}]", price, what="price")
        if not isinstance(self.currency, str) or not self.currency:
            raise ValueError(f"currency must be a non-empty string, but got {self.currency!r}.")
        object.__setattr__(self, "gpu_hour", MappingProxyType({k: float(v) for k, v in self.gpu_hour.items()}))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> PriceTable:
        """A table from a plain mapping (as loaded from YAML or JSON), e.g. `{"cpu_hour": 0.05,
        "gpu_hour": {"A100": 2.9}, "currency": "EUR"}`. Keys left out keep their example default;
        `gpu_hour`, when given, replaces the whole example GPU table. Unknown keys are an error."""
        if not isinstance(mapping, Mapping):
            raise ValueError(f"mapping must be a mapping, but got {type(mapping).__name__}.")
        known = {"cpu_hour", "gpu_hour", "default_gpu_hour", "node_hour", "currency"}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ValueError(f"mapping: unknown price keys {unknown}; expected some of {sorted(known)}.")
        return cls(**mapping)

    def gpu_hour_for(self, model: str | None) -> float:
        """The price per hour of one GPU of `model` (see the class docstring for the matching)."""
        if model:
            matches = [key for key in self.gpu_hour if _contains_word(model, key)]
            if matches:
                return self.gpu_hour[max(matches, key=len)]
        return self.default_gpu_hour

    def node_hour_for(self, cpus: int, gpus: int, gpu_model: str | None) -> float:
        """The price per hour of one node with `cpus` CPUs and `gpus` GPUs of `gpu_model`."""
        return self.node_hour + cpus * self.cpu_hour + gpus * self.gpu_hour_for(gpu_model)


def _contains_word(text: str, word: str) -> bool:
    """Whether `word` is in `text` (case-insensitive) with no letter or digit right before or after it."""
    return re.search(rf"(?<![a-z0-9]){re.escape(word.lower())}(?![a-z0-9])", text.lower()) is not None


# --------------------------------------------------------------------------------------------
# Resource usage and cost so far


def node_usage(
    samples: pd.DataFrame,
    prices: PriceTable,
    *,
    cpus_per_node: int | Mapping[str, int] | None = None,
    gpu_model: str | Mapping[str, str] | None = None,
    now: pd.Timestamp | None = None,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
) -> pd.DataFrame:
    """One row per machine (node IP) seen in the node and GPU samples, with what it cost.

    Columns: node, hours, cpus, gpus, gpu_model, hourly_price, cost, active.
    - hours: the time covered by the node's monitors (`source` of its node rows), each from its first
      to its last sample, overlaps counted once. A node that comes back gets a new monitor id, so its
      downtime is not billed; two Ray nodes on one host are one machine. A node with GPU rows only is
      billed over the spans of its GPUs.
    - cpus: the number of distinct `cpu_percent_core_<i>` metrics the monitor reported, unless
      `cpus_per_node` (one count, or IP -> count) says otherwise.
    - gpus: the number of distinct GPU sources on the node; `gpu_model` (one name, or IP -> name)
      prices them, and without it they cost the table's `default_gpu_hour`.
    - hourly_price = PriceTable.node_hour_for(cpus, gpus, gpu_model); cost = hourly_price * hours.
    - active: the node's last sample is at most `stale_after_s` older than `now` (default: the
      newest sample).
    Raises ValueError when there are no node or GPU rows (use `usage_from_counts`), or when CPUs are
    priced and a node's CPU count is unknown.
    """
    require_columns(samples, "samples", SAMPLE_COLUMNS)
    require_datetime_ts(samples, "samples")
    _check_positive("stale_after_s", stale_after_s)
    if now is not None and (not isinstance(now, pd.Timestamp) or now.tz is None):
        raise ValueError(f"now must be a timezone-aware pandas Timestamp, as the samples' ts are, but got {now!r}.")
    machines = samples[samples["kind"].isin(["node", "gpu"]) & samples["node"].notna()]
    if machines.empty:
        raise ValueError("samples: no rows of kind 'node' or 'gpu' to find machines in; use usage_from_counts.")
    # Grouped as they come (the store's string columns arrive as categoricals, costly to convert).
    newest = machines["ts"].max() if now is None else now
    spans = machines.groupby(["node", "kind", "source"], sort=True, observed=True)["ts"].agg(["min", "max"])
    host = machines[machines["kind"] == "node"]
    core_metrics = [m for m in host["metric"].unique() if isinstance(m, str) and _CPU_CORE_METRIC.fullmatch(m)]
    cores = host[host["metric"].isin(core_metrics)].groupby(["node", "source"], observed=True)["metric"].nunique()
    cores_counted = cores.groupby(level="node", observed=True).max()
    gpus_counted = machines[machines["kind"] == "gpu"].groupby("node", observed=True)["source"].nunique()
    last_seen = machines.groupby("node", observed=True)["ts"].max()
    rows = []
    for node, node_spans in spans.groupby(level="node", sort=True, observed=True):
        kinds = node_spans.index.get_level_values("kind")
        billed = node_spans[kinds == "node"] if (kinds == "node").any() else node_spans
        hours = _covered_seconds(billed["min"], billed["max"]) / SECONDS_PER_HOUR
        cpus = _cpu_count(node, int(cores_counted.get(node, 0)), cpus_per_node, needed=prices.cpu_hour > 0)
        gpus = int(gpus_counted.get(node, 0))
        model = gpu_model.get(node) if isinstance(gpu_model, Mapping) else gpu_model
        hourly = prices.node_hour_for(cpus, gpus, model)
        active = (newest - last_seen[node]).total_seconds() <= stale_after_s
        rows.append((str(node), hours, cpus, gpus, model, hourly, hourly * hours, bool(active)))
    return pd.DataFrame(rows, columns=list(USAGE_COLUMNS))


def gpu_models(events: pd.DataFrame) -> dict[str, str]:
    """Node IP -> the model of its GPUs, for `node_usage(gpu_model=...)`: from the node monitors'
    `gpu_info` events (payload `{"models": {index: name}}`), the newest of each node. A node with
    several models is priced as its commonest (ties: the lowest index); a board that gave no name
    is left out, and an event that cannot be read is skipped."""
    require_columns(events, "events", ("ts", "type", "node", "payload"))
    info = events[(events["type"] == "gpu_info") & events["node"].notna()].sort_values("ts", kind="stable")
    models: dict[str, str] = {}
    for node, payload in zip(info["node"], info["payload"], strict=True):
        try:
            named = json.loads(payload)["models"]
            names = [str(named[index]) for index in sorted(named, key=int) if named[index]]
        except (TypeError, ValueError, KeyError, AttributeError):
            continue
        if names:
            models[str(node)] = max(names, key=names.count)  # max keeps the first of equals
    return models


def usage_from_counts(
    prices: PriceTable,
    *,
    nodes: int,
    hours: float,
    cpus_per_node: int,
    gpus_per_node: int = 0,
    gpu_model: str | None = None,
) -> pd.DataFrame:
    """The same table as `node_usage` for `nodes` identical machines that ran for `hours` and still
    run (all active), when the samples hold no host metrics or the run is planned rather than done."""
    _check_count("nodes", nodes, minimum=1)
    _check_count("cpus_per_node", cpus_per_node, minimum=0)
    _check_count("gpus_per_node", gpus_per_node, minimum=0)
    _check_non_negative("hours", hours)
    hourly = prices.node_hour_for(cpus_per_node, gpus_per_node, gpu_model)
    row = (hours, cpus_per_node, gpus_per_node, gpu_model, hourly, hourly * hours, True)
    return pd.DataFrame([(f"node{i}", *row) for i in range(nodes)], columns=list(USAGE_COLUMNS))


def _covered_seconds(starts: pd.Series, ends: pd.Series) -> float:
    """Length of the union of the intervals [start, end], in seconds."""
    total, covered_until = 0.0, None
    for start, end in sorted(zip(starts, ends, strict=True)):
        if covered_until is not None and start < covered_until:
            start = covered_until
        if end > start:
            total += (end - start).total_seconds()
        covered_until = end if covered_until is None else max(covered_until, end)
    return total


def _cpu_count(node: str, counted: int, cpus_per_node: int | Mapping[str, int] | None, *, needed: bool) -> int:
    """`cpus_per_node`'s count for `node` if it gives one, else the count of core metrics `counted`."""
    given = cpus_per_node.get(node) if isinstance(cpus_per_node, Mapping) else cpus_per_node
    if given is not None:
        _check_count(f"cpus_per_node for {node}", given, minimum=0)
        return int(given)
    if counted == 0 and needed:
        raise ValueError(f"cpus_per_node: node {node} reported no cpu_percent_core_<i> metrics; give its CPU count.")
    return counted


@dataclass(frozen=True)
class CostSummary:
    """The cost of a run so far, in `currency`.

    total_cost = Σ over nodes of hourly_price * hours; hourly_cost = Σ hourly_price over the nodes
    running now (what the run costs per hour from here on; read by the `cost_spike` alert);
    node_hours, cpu_hours, gpu_hours = Σ hours, Σ cpus * hours, Σ gpus * hours.
    """

    currency: str
    total_cost: float
    hourly_cost: float
    active_nodes: int
    node_hours: float
    cpu_hours: float
    gpu_hours: float


def summarise_cost(usage: pd.DataFrame, prices: PriceTable) -> CostSummary:
    """Add up a `node_usage` (or `usage_from_counts`) table; `prices` gives the currency."""
    if not isinstance(usage, pd.DataFrame) or any(c not in usage.columns for c in USAGE_COLUMNS):
        raise ValueError(f"usage must be a DataFrame with columns {list(USAGE_COLUMNS)} (from node_usage).")
    active = usage[usage["active"]]
    return CostSummary(
        currency=prices.currency,
        total_cost=float(usage["cost"].sum()),
        hourly_cost=float(active["hourly_price"].sum()),
        active_nodes=len(active),
        node_hours=float(usage["hours"].sum()),
        cpu_hours=float((usage["cpus"] * usage["hours"]).sum()),
        gpu_hours=float((usage["gpus"] * usage["hours"]).sum()),
    )


# --------------------------------------------------------------------------------------------
# Return on investment


@dataclass(frozen=True)
class ScoreChange:
    """The population's best score at the start and now. `start` is the best of each agent's first
    report, `now` the best of each agent's latest report (what the population holds now, not a past
    peak that may have been a lucky evaluation); improvement = now - start."""

    start: float
    now: float
    improvement: float


def best_score_change(samples: pd.DataFrame, *, score_metric: str = "mean_return") -> ScoreChange:
    """ScoreChange of `score_metric` (higher is better). Raises ValueError when no agent reported it."""
    rows = _agent_rows(samples, score_metric)
    by_agent = rows.groupby("agent", sort=False)["value"]
    start, now = float(by_agent.first().max()), float(by_agent.last().max())
    return ScoreChange(start=start, now=now, improvement=now - start)


@dataclass(frozen=True)
class WorkDone:
    """Samples (episodes, steps) processed, from a cumulative counter; see `samples_processed`."""

    metric: str
    total: float
    restores: int  # restores whose restored counter was taken from the source agent
    unresolved: int  # counter drops not explained by an exploit event, counted as no work


def samples_processed(
    samples: pd.DataFrame, events: pd.DataFrame | None = None, *, counter_metric: str = "episodes_total"
) -> WorkDone:
    """Total work the population did, from a cumulative per-agent counter (episodes_total, steps).

    Per agent, in ts order, a report did `counter - base` work, where base is:
    - for an agent's first report: 0 if it is generation 1 (the trial started here), else its own
      value (work before the data begins is not counted);
    - for the first report after an exploit (a restore): the source's counter at the exploit's source
      generation (its latest report at or before the exploit), because the target continues from the
      source's checkpoint, counter included. The exploit ends at the report that triggered it: the
      target's report at the exploit's generation closest in time (Tune writes the exploit just before
      that report, a custom loop just after);
    - otherwise: the agent's previous counter value.
    Without `events`, a restore looks like a counter jump: a drop counts as no work (`unresolved`), a
    rise as work. Summing per-agent last values instead would count copied work again at every exploit.
    """
    rows = _agent_rows(samples, counter_metric)
    values = rows["value"]
    previous = values.groupby(rows["agent"], sort=False).shift(1)
    starting = pd.Series(np.where(rows["generation"] == 1, 0.0, values), index=rows.index)
    bases = previous.where(previous.notna(), starting)
    restored = _restored_bases(rows, _exploits(events)) if events is not None else pd.Series(dtype=np.float64)
    bases[restored.index] = restored
    work = (values - bases).to_numpy()
    return WorkDone(
        metric=counter_metric,
        total=float(work[work > 0].sum()),
        restores=len(restored),
        unresolved=int((work < 0).sum()),
    )


def _restored_bases(rows: pd.DataFrame, exploits: pd.DataFrame) -> pd.Series:
    """Row index of each restored report (the target's report after the one that triggered the
    exploit) -> the source's counter at the source generation, its latest at or before the exploit."""
    ts, generation, values = _nanoseconds(rows["ts"]), rows["generation"].to_numpy(), rows["value"].to_numpy()
    by_agent = rows.groupby("agent", sort=False).indices  # agent -> its row positions, in ts order
    bases: dict[int, float] = {}
    for exploit, exploit_ts in zip(exploits.itertuples(index=False), _nanoseconds(exploits["ts"]), strict=True):
        mine, theirs = by_agent.get(exploit.agent), by_agent.get(exploit.source_agent)
        if mine is None or theirs is None:
            continue
        at_generation = np.flatnonzero(generation[mine] == exploit.generation)
        source = theirs[generation[theirs] == exploit.source_generation]
        if at_generation.size == 0 or source.size == 0:
            continue
        trigger = at_generation[np.argmin(np.abs(ts[mine[at_generation]] - exploit_ts))]
        if trigger + 1 < mine.size:
            at_or_before = source[ts[source] <= exploit_ts]
            bases[int(mine[trigger + 1])] = float(values[(at_or_before if at_or_before.size else source)[-1]])
    return pd.Series(bases, dtype=np.float64)


def _nanoseconds(ts: pd.Series) -> np.ndarray:
    """Epoch nanoseconds of timezone-aware (or UTC-naive) timestamps, whatever their unit."""
    return pd.to_datetime(ts, utc=True).dt.as_unit("ns").astype("int64").to_numpy()


def _exploits(events: pd.DataFrame) -> pd.DataFrame:
    """Exploit events with their source generation (from the payload), in ts order."""
    require_columns(events, "events", EVENT_COLUMNS)
    table = events[(events["type"] == "exploit") & events["agent"].notna() & events["source_agent"].notna()]
    source_generation = [payload_source_generation(text) for text in table["payload"]]
    return pd.DataFrame(
        {
            "ts": table["ts"],
            "agent": table["agent"].astype(str),
            "source_agent": table["source_agent"].astype(str),
            "generation": pd.to_numeric(table["generation"]).astype(np.float64),
            "source_generation": pd.Series(source_generation, index=table.index, dtype=np.float64),
        }
    ).sort_values("ts", kind="stable")


@dataclass(frozen=True)
class ReturnOnInvestment:
    """cost_per_improvement_point = total_cost / (best score now - best score at start), None when the
    best score did not improve; cost_per_million_samples = total_cost / (samples processed / 1e6),
    None when nothing was processed."""

    currency: str
    total_cost: float
    improvement: float
    cost_per_improvement_point: float | None
    samples_processed: float
    cost_per_million_samples: float | None


def return_on_investment(summary: CostSummary, score: ScoreChange, work: WorkDone) -> ReturnOnInvestment:
    """Put the cost so far against what it bought (see ReturnOnInvestment for the formulas)."""
    total = summary.total_cost
    return ReturnOnInvestment(
        currency=summary.currency,
        total_cost=total,
        improvement=score.improvement,
        cost_per_improvement_point=total / score.improvement if score.improvement > 0 else None,
        samples_processed=work.total,
        cost_per_million_samples=total / (work.total / 1e6) if work.total > 0 else None,
    )


# --------------------------------------------------------------------------------------------
# Budget


@dataclass(frozen=True)
class BudgetBurn:
    """Spending against a total budget (`budget_threshold`, in the currency).

    share_spent = spent / budget; projected_spend = spent + hourly_cost * hours_ahead (the spend at
    the end or forecast horizon if the current rate holds) and projected_share = projected_spend /
    budget; hours_until_exhausted = (budget - spent) / hourly_cost (0 when already spent, inf when
    nothing is running); sustainable_hourly_cost = (budget - spent) / hours_ahead, the rate that
    spends exactly the rest of the budget by the horizon (None when hours_ahead is 0);
    exhausted_before_horizon = hours_until_exhausted <= hours_ahead (a budget already spent is
    exhausted at any horizon, 0 included).
    """

    budget: float
    spent: float
    hourly_cost: float
    share_spent: float
    hours_ahead: float
    projected_spend: float
    projected_share: float
    hours_until_exhausted: float
    sustainable_hourly_cost: float | None
    exhausted_before_horizon: bool


def budget_burn(*, spent: float, hourly_cost: float, budget_threshold: float, hours_ahead: float) -> BudgetBurn:
    """BudgetBurn for `spent` so far at `hourly_cost` now, over the next `hours_ahead` hours (until
    the run's planned end, or a convergence forecast)."""
    _check_positive("budget_threshold", budget_threshold)
    for name, value in (("spent", spent), ("hourly_cost", hourly_cost), ("hours_ahead", hours_ahead)):
        _check_non_negative(name, value)
    left = budget_threshold - spent
    if left <= 0:
        until_exhausted = 0.0
    else:
        until_exhausted = left / hourly_cost if hourly_cost > 0 else math.inf
    projected = spent + hourly_cost * hours_ahead
    return BudgetBurn(
        budget=budget_threshold,
        spent=spent,
        hourly_cost=hourly_cost,
        share_spent=spent / budget_threshold,
        hours_ahead=hours_ahead,
        projected_spend=projected,
        projected_share=projected / budget_threshold,
        hours_until_exhausted=until_exhausted,
        sustainable_hourly_cost=max(left, 0.0) / hours_ahead if hours_ahead > 0 else None,
        exhausted_before_horizon=until_exhausted <= hours_ahead,
    )


# --------------------------------------------------------------------------------------------
# Input checks


def _agent_rows(samples: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Finite reports of `metric` by agents (columns ts, agent, generation, value), in ts order."""
    require_columns(samples, "samples", SAMPLE_COLUMNS)
    selected = samples[(samples["kind"] == "agent") & (samples["metric"] == metric)]
    rows = pd.DataFrame(
        {
            "ts": selected["ts"],
            "agent": selected["source"].astype(str),
            "generation": pd.to_numeric(selected["generation"]).astype(np.float64),
            "value": pd.to_numeric(selected["value"]).astype(np.float64),
        }
    )
    rows = rows[np.isfinite(rows["value"].to_numpy())].sort_values("ts", kind="stable").reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"samples: no agent reported a finite {metric!r}.")
    return rows


def _check_positive(name: str, value: float) -> None:
    if not is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, but got {value!r}.")


def _check_non_negative(name: str, value: Any, *, what: str = "number") -> None:
    if not is_number(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite {what} >= 0, but got {value!r}.")


def _check_count(name: str, value: Any, *, minimum: int) -> None:
    if not is_whole_number(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, but got {value!r}.")
