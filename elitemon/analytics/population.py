"""Population performance KPIs over the `samples` table: score distribution, target achievement and
training throughput.

Every function takes the samples as a pandas DataFrame with the table's columns (`ts`, `kind`,
`source`, `generation`, `metric`, `value`; others are ignored) and reads only rows of kind "agent",
whose `source` is the agent id. A NaN or infinite value counts as missing. An exploited agent restores
its source's checkpoint and may report the same generation twice, so an agent's value *at generation
g* is its latest report (by `ts`) at g, and its *current* value is its latest report at any generation.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt
import pandas as pd

from elitemon.analytics._frames import column_as, is_number, require_columns, require_datetime_ts

AGENT_KIND = "agent"
DEFAULT_SCORE_METRIC = "mean_return"
DEFAULT_RATE_METRIC = "episodes_per_s"
DEFAULT_COUNTER_METRIC = "episodes_total"
SAMPLE_COLUMNS = ("ts", "kind", "source", "generation", "metric", "value")
EVENT_COLUMNS = ("ts", "type", "agent")
#: The percentiles every distribution reports: (field name, quantile).
PERCENTILES = (("p10", 0.10), ("p25", 0.25), ("p50", 0.50), ("p75", 0.75), ("p90", 0.90), ("p99", 0.99))


# --------------------------------------------------------------------------------------------
# Score distribution


@dataclass(frozen=True)
class ScoreSummary:
    """The distribution of one value per agent. Every statistic is None when `count` is 0, and `std`
    also when `count` is 1."""

    count: int
    mean: float | None
    std: float | None
    min: float | None
    p10: float | None
    p25: float | None
    p50: float | None
    p75: float | None
    p90: float | None
    p99: float | None
    max: float | None


#: The columns of `score_distribution_by_generation`, in the order of ScoreSummary's fields.
SUMMARY_COLUMNS = tuple(f.name for f in fields(ScoreSummary))


def summarize(values: npt.ArrayLike) -> ScoreSummary:
    """Count, mean, std, min, percentiles and max of `values`, NaN and infinities left out.

    std is the sample standard deviation (ddof=1, pandas' default): the population is read as a sample
    of what the search produces, and it stays comparable with `score_distribution_by_generation`.
    Percentiles interpolate linearly between the closest ranks (numpy's "linear", Hyndman-Fan type 7,
    the default of numpy and pandas): the q-quantile of the sorted x_0..x_{n-1} is
    x_i + (h - i)(x_{i+1} - x_i) with h = (n-1)q and i = floor(h).
    """
    array = np.asarray(values, dtype=np.float64).ravel()
    array = array[np.isfinite(array)]
    if array.size == 0:
        return ScoreSummary(count=0, **dict.fromkeys(SUMMARY_COLUMNS[1:]))
    percentiles = np.quantile(array, [q for _, q in PERCENTILES], method="linear")
    return ScoreSummary(
        count=int(array.size),
        mean=float(array.mean()),
        std=float(array.std(ddof=1)) if array.size > 1 else None,
        min=float(array.min()),
        **{name: float(value) for (name, _), value in zip(PERCENTILES, percentiles, strict=True)},
        max=float(array.max()),
    )


def latest_per_agent(samples: pd.DataFrame, *, metric: str = DEFAULT_SCORE_METRIC) -> pd.Series:
    """Each agent's current value of `metric` (its latest report by `ts`), indexed by agent id, sorted."""
    rows = _agent_rows(samples, metric).drop_duplicates("agent", keep="last")
    return rows.set_index("agent")["value"].sort_index()


def score_distribution(samples: pd.DataFrame, *, metric: str = DEFAULT_SCORE_METRIC) -> ScoreSummary:
    """The distribution of the agents' current scores ("now"): one value per agent, its latest report."""
    return summarize(latest_per_agent(samples, metric=metric).to_numpy())


def score_distribution_by_generation(samples: pd.DataFrame, *, metric: str = DEFAULT_SCORE_METRIC) -> pd.DataFrame:
    """The distribution of the score at every generation, across the agents that reported it there.

    One row per generation (index `generation`, ascending) and the columns of ScoreSummary, with the
    same conventions as `summarize` (std with ddof=1, NaN for one agent; linear percentiles). An agent
    that reported generation g twice (after an exploit) counts once, with its latest report. Rows
    without a generation are left out.
    """
    rows = _agent_rows(samples, metric)
    rows = rows[rows["generation"].notna()].drop_duplicates(["agent", "generation"], keep="last")
    if rows.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS), index=pd.Index([], dtype=np.int64, name="generation"))
    grouped = rows.astype({"generation": np.int64}).groupby("generation", sort=True)["value"]
    frame = grouped.agg(["count", "mean", "std", "min", "max"])
    for name, q in PERCENTILES:
        frame[name] = grouped.quantile(q, interpolation="linear")
    return frame[list(SUMMARY_COLUMNS)]


# --------------------------------------------------------------------------------------------
# Target achievement


class Direction(enum.StrEnum):
    """Which way a metric improves."""

    HIGHER_IS_BETTER = "higher"
    LOWER_IS_BETTER = "lower"


@dataclass(frozen=True, kw_only=True)
class Target:
    """What counts as achieved: `metric` at or beyond a fixed `threshold`, or within
    `within_percent_of_best` percent of the best current value (give exactly one of the two).

    "Within x% of best" becomes the threshold best - |best|·x/100 (higher is better) or
    best + |best|·x/100 (lower is better): the magnitude keeps the band on the right side for
    negative scores (returns of -200) too; a best of exactly 0 leaves a band of width 0.
    """

    metric: str = DEFAULT_SCORE_METRIC
    threshold: float | None = None
    within_percent_of_best: float | None = None
    direction: Direction = Direction.HIGHER_IS_BETTER

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise ValueError(f"metric must be a non-empty string, but got {self.metric=}.")
        try:
            object.__setattr__(self, "direction", Direction(self.direction))
        except ValueError:
            valid = [d.value for d in Direction]
            raise ValueError(f"direction must be one of {valid}, but got {self.direction=}.") from None
        if (self.threshold is None) == (self.within_percent_of_best is None):
            raise ValueError(
                "give exactly one of threshold and within_percent_of_best, "
                f"but got {self.threshold=} and {self.within_percent_of_best=}."
            )
        if self.threshold is not None and not (is_number(self.threshold) and math.isfinite(self.threshold)):
            raise ValueError(f"threshold must be a finite number, but got {self.threshold=}.")
        percent = self.within_percent_of_best
        if percent is not None and not (is_number(percent) and 0 <= percent < math.inf):
            raise ValueError(f"within_percent_of_best must be a finite number >= 0, but got {percent=}.")

    def threshold_for(self, current_values: npt.ArrayLike) -> float | None:
        """The threshold in force given the agents' current values (None if relative and there are none)."""
        if self.threshold is not None:
            return float(self.threshold)
        values = np.asarray(current_values, dtype=np.float64)
        if values.size == 0:
            return None
        higher = self.direction is Direction.HIGHER_IS_BETTER
        best = float(values.max() if higher else values.min())
        margin = abs(best) * float(self.within_percent_of_best) / 100.0
        return best - margin if higher else best + margin

    def is_met(self, values: npt.ArrayLike, threshold: float) -> np.ndarray:
        """Elementwise: `values` at or beyond `threshold` in the target's direction."""
        values = np.asarray(values, dtype=np.float64)
        return values >= threshold if self.direction is Direction.HIGHER_IS_BETTER else values <= threshold


@dataclass(frozen=True)
class TargetAchievement:
    """How the population stands against a Target. Rates are shares of `agents` (None when 0)."""

    target: Target
    threshold: float | None  # the threshold in force (resolved for "within x% of best")
    agents: int  # every agent with any sample of kind "agent"
    agents_meeting: tuple[str, ...]  # current value meets the threshold, sorted
    success_rate: float | None  # len(agents_meeting) / agents
    mean_value: float | None  # mean current value over the agents that have one
    zero_rate: float | None  # share of agents whose current value is exactly 0 or missing
    generations_to_target: Mapping[str, int | None]  # first generation each agent met it; None if never


def target_achievement(samples: pd.DataFrame, target: Target) -> TargetAchievement:
    """Which agents meet `target` now, and when each first met it.

    The population is every agent with any sample of kind "agent" (so an agent that never reported
    `target.metric` is counted, as unset). An agent's current value is its latest report. Its
    generations-to-target is the generation of its earliest report (by `ts`) that meets the threshold
    in force: the threshold resolved from the *current* best for "within x% of best", so that every
    agent is measured against one fixed bar. Reports without a generation are not counted for it.
    """
    if not isinstance(target, Target):
        raise ValueError(f"target must be a Target, but got {type(target).__name__}.")
    population = _agents(samples)
    rows = _agent_rows(samples, target.metric)
    current = rows.drop_duplicates("agent", keep="last").set_index("agent")["value"]
    threshold = target.threshold_for(current.to_numpy())
    agents = len(population)
    if threshold is None or agents == 0:
        meeting: tuple[str, ...] = ()
        reached: dict[str, int] = {}
    else:
        meeting = tuple(sorted(current.index[target.is_met(current.to_numpy(), threshold)]))
        hits = rows[rows["generation"].notna() & target.is_met(rows["value"].to_numpy(), threshold)]
        first_hits = hits.drop_duplicates("agent", keep="first")
        reached = {agent: int(g) for agent, g in zip(first_hits["agent"], first_hits["generation"], strict=True)}
    zeros = agents - len(current) + int((current == 0).sum())
    return TargetAchievement(
        target=target,
        threshold=threshold,
        agents=agents,
        agents_meeting=meeting,
        success_rate=len(meeting) / agents if agents else None,
        mean_value=float(current.mean()) if len(current) else None,
        zero_rate=zeros / agents if agents else None,
        generations_to_target={agent: reached.get(agent) for agent in population},
    )


# --------------------------------------------------------------------------------------------
# Training throughput


class ThroughputMethod(enum.StrEnum):
    """Where a throughput figure comes from."""

    RATE = "rate"  # a per-iteration rate the trainable reports (episodes_per_s)
    COUNTER = "counter"  # a cumulative counter (episodes_total) differentiated over ts


@dataclass(frozen=True)
class AgentThroughput:
    """One agent's throughput in units of the metric per second; None when no interval was usable."""

    latest: float | None
    mean: float | None
    intervals: int  # rate reports, or counter intervals used
    skipped: int  # counter intervals left out as restores or resets (always 0 for RATE)


@dataclass(frozen=True)
class Throughput:
    """Per-agent and population throughput. Totals add the agents up, as they train concurrently."""

    metric: str
    method: ThroughputMethod
    per_agent: Mapping[str, AgentThroughput]
    total_latest: float  # sum of the agents' latest rates (0.0 with no agent)
    total_mean: float  # sum of the agents' mean rates
    mean_latest_per_agent: float | None  # mean of the agents' latest rates


def throughput_from_rate(samples: pd.DataFrame, *, metric: str = DEFAULT_RATE_METRIC) -> Throughput:
    """Throughput from a rate metric the trainable reports each iteration (episodes/s or samples/s).

    Per agent, `latest` is its latest report and `mean` the plain mean of its reports, one per
    iteration. The rate is what the trainable measured (usually its training time only), so it leaves
    out evaluation, checkpointing and time paused by the scheduler; an exploit needs no special care,
    since each report describes one iteration. Negative rates are an error.
    """
    rows = _agent_rows(samples, metric)
    if (rows["value"] < 0).any():
        raise ValueError(f"samples: metric {metric!r} has negative values, which no rate can have.")
    per_agent = {
        agent: AgentThroughput(
            latest=float(group["value"].iloc[-1]), mean=float(group["value"].mean()), intervals=len(group), skipped=0
        )
        for agent, group in rows.groupby("agent", sort=True)
    }
    return _throughput(metric, ThroughputMethod.RATE, per_agent)


def throughput_from_counter(
    samples: pd.DataFrame, *, metric: str = DEFAULT_COUNTER_METRIC, events: pd.DataFrame | None = None
) -> Throughput:
    """Throughput from a cumulative counter (episodes_total, timesteps_total), differentiated over ts.

    Per agent, consecutive reports (by ts) make intervals of rate Δvalue/Δts. An exploit restores the
    source's checkpoint, counter included, so the counter jumps (up or down) without work being done.
    An interval is used only if the generation advanced by exactly 1, the counter did not decrease, Δts
    is positive, and (when `events` is given) no "exploit" event targets the agent in [previous ts,
    ts) or in the interval before it (Tune writes the exploit before its triggering report); the
    others are counted in `skipped`. Pass `events` (columns ts, type, agent): a synchronous exploit
    between agents at the same generation is invisible in the samples alone.

    `latest` is the rate of the last used interval; `mean` is Σ Δvalue / Σ Δts over the used intervals,
    the work actually done per second. Being wall-clock time between reports, it includes evaluation,
    checkpointing and time paused by the scheduler, unlike throughput_from_rate.
    """
    rows = _agent_rows(samples, metric)
    exploits = _exploit_times(events)
    no_exploits = np.empty(0, dtype=np.float64)
    per_agent = {
        agent: _counter_throughput(group, exploits.get(agent, no_exploits))
        for agent, group in rows.groupby("agent", sort=True)
    }
    return _throughput(metric, ThroughputMethod.COUNTER, per_agent)


def _counter_throughput(rows: pd.DataFrame, exploit_seconds: np.ndarray) -> AgentThroughput:
    seconds = _epoch_seconds(rows["ts"])
    values = rows["value"].to_numpy(dtype=np.float64)
    generations = rows["generation"].to_numpy(dtype=np.float64, na_value=np.nan)
    elapsed, work = np.diff(seconds), np.diff(values)
    # The restore jump is the interval after the exploit. Custom loops write the exploit after the
    # report that triggered it, so it falls in that very interval; Tune's scheduler exploits before
    # the triggering report is written, so it falls in the interval before. Skip both.
    in_interval = np.searchsorted(exploit_seconds, seconds[1:]) > np.searchsorted(exploit_seconds, seconds[:-1])
    exploited = in_interval | np.concatenate(([False], in_interval[:-1]))
    used = (elapsed > 0) & (work >= 0) & (np.diff(generations) == 1) & ~exploited
    intervals = int(used.sum())
    if not intervals:
        return AgentThroughput(latest=None, mean=None, intervals=0, skipped=len(elapsed))
    last = np.flatnonzero(used)[-1]
    return AgentThroughput(
        latest=float(work[last] / elapsed[last]),
        mean=float(work[used].sum() / elapsed[used].sum()),
        intervals=intervals,
        skipped=len(elapsed) - intervals,
    )


def _throughput(metric: str, method: ThroughputMethod, per_agent: dict[str, AgentThroughput]) -> Throughput:
    latest = [a.latest for a in per_agent.values() if a.latest is not None]
    return Throughput(
        metric=metric,
        method=method,
        per_agent=per_agent,
        total_latest=float(sum(latest)),
        total_mean=float(sum(a.mean for a in per_agent.values() if a.mean is not None)),
        mean_latest_per_agent=float(np.mean(latest)) if latest else None,
    )


def _exploit_times(events: pd.DataFrame | None) -> dict[str, np.ndarray]:
    """Target agent -> sorted epoch seconds of its exploit events."""
    if events is None:
        return {}
    _require_columns(events, "events", EVENT_COLUMNS)
    exploits = events[(events["type"] == "exploit") & events["agent"].notna()]
    if exploits.empty:  # a table built empty by hand has an untyped ts
        return {}
    seconds = pd.Series(_epoch_seconds(exploits["ts"]), index=exploits.index)
    return {
        str(agent): np.sort(group.to_numpy())
        for agent, group in seconds.groupby(exploits["agent"].astype(str), sort=False)
    }


# --------------------------------------------------------------------------------------------
# Input checks and shared selections


def _require_columns(frame: pd.DataFrame, argument: str, columns: tuple[str, ...]) -> None:
    require_columns(frame, argument, columns)
    require_datetime_ts(frame, argument)


def _agents(samples: pd.DataFrame) -> list[str]:
    _require_columns(samples, "samples", SAMPLE_COLUMNS)
    return sorted({str(agent) for agent in samples.loc[samples["kind"] == AGENT_KIND, "source"].unique()})


def _agent_rows(samples: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The finite reports of `metric` by agents: columns ts, agent (str), generation (Int64), value
    (float), in ts order (stable, so that of two reports with the same ts the later row wins)."""
    _require_columns(samples, "samples", SAMPLE_COLUMNS)
    if not isinstance(metric, str) or not metric:
        raise ValueError(f"metric must be a non-empty string, but got {metric=}.")
    selected = samples[(samples["kind"] == AGENT_KIND) & (samples["metric"] == metric)]
    rows = pd.DataFrame(
        {
            "ts": selected["ts"],
            "agent": selected["source"].astype(str),
            "generation": column_as(selected, "samples", "generation", "Int64", "whole numbers"),
            "value": column_as(selected, "samples", "value", np.float64, "numbers"),
        }
    )
    rows = rows[np.isfinite(rows["value"].to_numpy())]
    return rows.sort_values("ts", kind="stable").reset_index(drop=True)


def _epoch_seconds(ts: pd.Series) -> np.ndarray:
    if ts.dt.tz is None:
        ts = ts.dt.tz_localize("UTC")
    return (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)
