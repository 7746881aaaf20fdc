"""The report's sections as data: the store's tables in, small typed tuples out, nothing drawn.

Each `get_*_info` takes the tables as pandas frames (as the store or `Client(..., as_pandas=True)`
gives them), calls the analytics functions, and keeps only what its section shows. The renderer
draws these tuples and computes nothing, and the tests compare them with hand-computed values
(optuna's split of a plot into `_get_..._info` and a backend). A section the data cannot support (too
few generations for a forecast, too few samples for importance, no configs) carries a `note` saying
why instead of failing: one thin part must not sink the whole report.

Conventions: the score is higher-is-better (as in `analytics.convergence`); an agent's value at a
generation is its latest report there; series are tuples of floats with NaN for "no value".
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from elitemon.analytics.anomaly import RobustDetector, detect_anomalies
from elitemon.analytics.best_forecast import BestForecast
from elitemon.analytics.convergence import (
    agent_scores,
    fit_best_curve,
    forecast_convergence,
    progress_from_scores,
)
from elitemon.analytics.diversity import PARAM_COLUMN_PREFIX, diversity_over_generations, infer_specs
from elitemon.analytics.importance import config_scores, hyperparameter_importance
from elitemon.analytics.migration import Lineage, exploit_counts, lineage, migration_stats
from elitemon.analytics.population import (
    DEFAULT_RATE_METRIC,
    DEFAULT_SCORE_METRIC,
    Target,
    latest_per_agent,
    score_distribution_by_generation,
    target_achievement,
)
from elitemon.analytics.population_forecast import exploit_rate, forecast_population

#: Results Tune adds to every report, and counters: bookkeeping, never the score.
NOT_SCORES = frozenset(
    {
        "done",
        "episodes_this_iter",
        "episodes_total",
        "iterations_since_restore",
        "pid",
        "steps_total",
        "time_since_restore",
        "time_this_iter_s",
        "time_total_s",
        "timestamp",
        "timesteps_since_restore",
        "timesteps_this_iter",
        "timesteps_total",
        "training_iteration",
    }
)
#: A metric with this suffix is a rate: a throughput stream, not a score.
RATE_SUFFIXES = ("_per_s", "_per_sec", "_per_second")
#: The forecast is drawn at least this many generations, and this share of the observed span, ahead.
FORECAST_MIN_AHEAD = 5
FORECAST_AHEAD_FRACTION = 0.5
FORECAST_LEVEL = 0.8
#: Throughput streams drawn: those with the most flagged points, at most this many.
MAX_ANOMALY_PLOTS = 4
#: The detector's warm-up: its default (30 points) for long streams, a third of a short one, at least 10.
ANOMALY_HISTORY = 30
MIN_ANOMALY_HISTORY = 10


# --------------------------------------------------------------------------------------------
# The typed tuples


class TargetInfo(NamedTuple):
    threshold: float
    agents_meeting: int
    agents: int
    first_generation_reached: int | None  # the earliest generation at which any agent met it


class HeaderInfo(NamedTuple):
    title: str
    source: str
    score_metric: str
    agents: int
    generations: int  # distinct generations with a score
    first_generation: int | None
    last_generation: int | None
    best_agent: str | None  # by its current (latest) score
    best_score: float | None
    exploits: int
    migration_success_rate: float | None
    start: pd.Timestamp | None
    end: pd.Timestamp | None
    target: TargetInfo | None


class ForecastInfo(NamedTuple):
    """The convergence forecast of the population's best score, drawn from `generations[0]` (the last
    observed generation) on. `remaining*` count generations from there (None: not within range)."""

    generations: tuple[int, ...]
    expected: tuple[float, ...]  # the point forecast the benchmark scores (not the band's median)
    low: tuple[float, ...]  # the 80% band
    high: tuple[float, ...]
    goal: str  # "target" or "flat" (analytics.convergence.Goal)
    level: float | None  # the target, or the level at which the curve flattens
    remaining: int | None
    remaining_low: int | None
    remaining_high: int | None
    recent_max: float | None = None  # where a recent-maximum forecast starts (best_forecast); None for a curve


class AgentsForecastInfo(NamedTuple):
    """The population-aware forecast (analytics.population_forecast) of the mean score, drawn from
    `generations[0]` (the last complete generation) on, and the expected share of agents at or above
    the target at `generations[-1]` (None without a target)."""

    generations: tuple[int, ...]
    expected: tuple[float, ...]  # the point forecast the benchmark scores (not the band's median)
    low: tuple[float, ...]  # the 80% band
    high: tuple[float, ...]
    exploit_rate: float  # exploits per agent per generation
    share_at_target: float | None


class ScoreInfo(NamedTuple):
    metric: str
    generations: tuple[int, ...]
    agents: tuple[int, ...]  # agents with a score at each generation
    best: tuple[float, ...]
    mean: tuple[float, ...]
    p10: tuple[float, ...]
    p90: tuple[float, ...]
    target: float | None
    forecast: ForecastInfo | None
    note: str | None  # why there is no forecast
    agents_forecast: AgentsForecastInfo | None
    agents_note: str | None  # why there is no population-aware forecast


class ParamSeries(NamedTuple):
    name: str
    scale: str  # linear, log or categorical (analytics.diversity.ParamScale)
    values: tuple[float, ...]


class DiversityInfo(NamedTuple):
    generations: tuple[int, ...]
    overall: tuple[float, ...]
    parameters: tuple[ParamSeries, ...]
    collapsed: tuple[int, ...]  # generations at which diversity counts as collapsed
    note: str | None


class LifeSpan(NamedTuple):
    """One life of an agent (see analytics.migration.LineageNode) as a bar from `start` to `end`,
    coloured by the `founder`: the agent whose original life it descends from."""

    agent: str
    index: int
    start: int
    end: int
    founder: str


class ExploitArrow(NamedTuple):
    source_agent: str
    target_agent: str
    source_generation: int  # where the copy starts (the target's generation when the source's is unknown)
    target_generation: int | None


class LineageRow(NamedTuple):
    agent: str
    exploited: int  # times it was replaced by a copy
    copied: int  # times it was copied
    founder: str  # whose original life its current life descends from
    copies_in_chain: int  # exploits between that original life and its current one


class LineageInfo(NamedTuple):
    agents: tuple[str, ...]  # row order, top to bottom
    founders: tuple[str, ...]  # colour order
    lives: tuple[LifeSpan, ...]
    arrows: tuple[ExploitArrow, ...]
    rows: tuple[LineageRow, ...]


class ImportanceRow(NamedTuple):
    param: str
    permutation_mean: float
    permutation_std: float
    spearman: float | None


class ImportanceInfo(NamedTuple):
    score_metric: str
    n_samples: int
    n_test: int
    test_r2: float | None
    rows: tuple[ImportanceRow, ...]  # ranked by permutation importance, highest first
    note: str | None


class AnomalyStream(NamedTuple):
    agent: str
    seconds: tuple[float, ...]  # since the first point of the metric, over all agents
    value: tuple[float, ...]
    expected: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    flagged: tuple[int, ...]  # positions of the points the detector flagged


class AnomalyRow(NamedTuple):
    agent: str
    points: int
    scored: int  # points past the detector's warm-up
    flagged: int


class AnomalyInfo(NamedTuple):
    metric: str | None
    streams: tuple[AnomalyStream, ...]  # the ones drawn
    rows: tuple[AnomalyRow, ...]  # every agent
    note: str | None


class ReportInfo(NamedTuple):
    header: HeaderInfo
    score: ScoreInfo
    diversity: DiversityInfo
    lineage: LineageInfo
    importance: ImportanceInfo
    anomalies: AnomalyInfo


# --------------------------------------------------------------------------------------------
# The whole report


def get_report_info(
    samples: pd.DataFrame,
    events: pd.DataFrame,
    configs: pd.DataFrame,
    *,
    score_metric: str | None = None,
    target: float | None = None,
    throughput_metric: str | None = None,
    params: Sequence[str] | None = None,
    title: str = "PBT run report",
    source: str = "",
) -> ReportInfo:
    """Every section's info. `score_metric` and `throughput_metric` default to `choose_score_metric`
    and `choose_throughput_metric`; `params` (the searched hyperparameters) to `searched_params`."""
    if target is not None and not math.isfinite(target):
        raise ValueError(f"target must be a finite number, but got {target=}.")
    samples, events, configs = (_plain(f) for f in (samples, events, configs))
    metric = choose_score_metric(samples, score_metric)
    chosen = searched_params(configs, events) if params is None else tuple(params)
    return ReportInfo(
        header=get_header_info(samples, events, metric=metric, target=target, title=title, source=source),
        score=get_score_info(samples, events, metric=metric, target=target),
        diversity=get_diversity_info(configs, params=chosen),
        lineage=get_lineage_info(samples, events, metric=metric),
        importance=get_importance_info(samples, configs, metric=metric, params=chosen),
        anomalies=get_anomaly_info(samples, metric=choose_throughput_metric(samples, throughput_metric)),
    )


def agent_metrics(samples: pd.DataFrame) -> tuple[str, ...]:
    """The metrics that agents reported, sorted."""
    return tuple(sorted({str(m) for m in samples.loc[samples["kind"] == "agent", "metric"].unique()}))


def choose_score_metric(samples: pd.DataFrame, requested: str | None = None) -> str:
    """The metric the report calls the score.

    `requested` if given (it must be an agent metric); else `mean_return` (what the demo and the
    analytics default to) when agents report it; else the one agent metric left after Tune's
    bookkeeping (NOT_SCORES), counters (`*_total`) and rates (RATE_SUFFIXES) are set aside. Several
    left is ambiguous: a ValueError lists them, to pick one with `--metric` (`score_metric=`).
    """
    metrics = agent_metrics(samples)
    if not metrics:
        raise ValueError("samples: no agent metrics; nothing to report (is this the right data directory?)")
    if requested is not None:
        if requested not in metrics:
            raise ValueError(
                f"score metric {requested!r} was not reported by any agent; agent metrics: {list(metrics)}"
            )
        return requested
    if DEFAULT_SCORE_METRIC in metrics:
        return DEFAULT_SCORE_METRIC
    candidates = [m for m in metrics if m not in NOT_SCORES and not m.endswith("_total") and not _is_rate(m)]
    if len(candidates) == 1:
        return candidates[0]
    choices = candidates or list(metrics)
    raise ValueError(
        f"cannot tell which agent metric is the score; pick one with --metric (score_metric=) from {choices}"
    )


def choose_throughput_metric(samples: pd.DataFrame, requested: str | None = None) -> str | None:
    """`requested`, else `episodes_per_s` (the demo's), else the first agent metric named like a rate
    (RATE_SUFFIXES); None when there is none."""
    metrics = agent_metrics(samples)
    if requested is not None:
        if requested not in metrics:
            raise ValueError(
                f"throughput metric {requested!r} was not reported by any agent; agent metrics: {list(metrics)}"
            )
        return requested
    if DEFAULT_RATE_METRIC in metrics:
        return DEFAULT_RATE_METRIC
    return next((m for m in metrics if _is_rate(m)), None)


def searched_params(configs: pd.DataFrame, events: pd.DataFrame) -> tuple[str, ...]:
    """The hyperparameters PBT searched: those its explore step changed (the keys of the exploit events'
    `operations`, nested ones dotted as the Tune callback names them), when any exploit recorded
    operations; else every parameter in `configs`. Fixed settings carried in the config (Tune's
    `seed`, an environment name) would otherwise count as "diversity" and as candidate drivers."""
    known = sorted({str(p) for p in configs["param"].unique()})
    exploits = events.loc[events["type"] == "exploit", "payload"]
    operated: set[str] = set()
    for text in exploits.dropna():
        operations = _json_object(text).get("operations")
        if isinstance(operations, dict):
            operated.update(_dotted_keys(operations))
    chosen = [p for p in known if p in operated]
    return tuple(chosen or known)


# --------------------------------------------------------------------------------------------
# Sections


def get_header_info(
    samples: pd.DataFrame,
    events: pd.DataFrame,
    *,
    metric: str,
    target: float | None = None,
    title: str = "PBT run report",
    source: str = "",
) -> HeaderInfo:
    """The headline figures: population, generations, best agent now, exploits, time span, target."""
    agents = sorted({str(a) for a in samples.loc[samples["kind"] == "agent", "source"].unique()})
    scores = agent_scores(samples, metric=metric)
    generations = sorted(set(scores["generation"]))
    current = latest_per_agent(samples, metric=metric)
    best_agent = str(current.idxmax()) if len(current) else None
    stats = migration_stats(events)
    stamps = pd.concat([samples["ts"], events["ts"]]).dropna()
    target_info = None
    if target is not None:
        achieved = target_achievement(samples, Target(metric=metric, threshold=target))
        reached = [g for g in achieved.generations_to_target.values() if g is not None]
        target_info = TargetInfo(
            threshold=float(target),
            agents_meeting=len(achieved.agents_meeting),
            agents=achieved.agents,
            first_generation_reached=min(reached) if reached else None,
        )
    return HeaderInfo(
        title=title,
        source=source,
        score_metric=metric,
        agents=len(agents),
        generations=len(generations),
        first_generation=int(generations[0]) if generations else None,
        last_generation=int(generations[-1]) if generations else None,
        best_agent=best_agent,
        best_score=float(current[best_agent]) if best_agent is not None else None,
        exploits=stats.exploits,
        migration_success_rate=stats.success_rate,
        start=stamps.min() if len(stamps) else None,
        end=stamps.max() if len(stamps) else None,
        target=target_info,
    )


def get_score_info(
    samples: pd.DataFrame, events: pd.DataFrame, *, metric: str, target: float | None = None
) -> ScoreInfo:
    """Best, mean and the p10–p90 band per generation (analytics.population), the convergence
    forecast of the best score with its 80% band (analytics.convergence: best_forecast towards a
    target, learning_curves until it flattens), and
    the population-aware forecast of the mean over the same generations (population_forecast)."""
    by_generation = score_distribution_by_generation(samples, metric=metric)
    scores = agent_scores(samples, metric=metric)
    progress = progress_from_scores(scores)  # the complete generations, which both forecasts start from
    forecast, note = _forecast(progress, target)
    if forecast is not None and forecast.goal == "target" and len(scores) and scores["score"].max() >= target:
        # A reported score has met it, in a generation not every agent has reached yet: the
        # forecast of the complete generations would put the crossing still ahead, and the
        # header says it was reached.
        forecast = forecast._replace(remaining=0, remaining_low=0, remaining_high=0)
    agents_forecast, agents_note = _agents_forecast(scores, progress, events, target, forecast)
    return ScoreInfo(
        metric=metric,
        generations=tuple(int(g) for g in by_generation.index),
        agents=tuple(int(c) for c in by_generation["count"]),
        best=_floats(by_generation["max"]),
        mean=_floats(by_generation["mean"]),
        p10=_floats(by_generation["p10"]),
        p90=_floats(by_generation["p90"]),
        target=None if target is None else float(target),
        forecast=forecast,
        note=note,
        agents_forecast=agents_forecast,
        agents_note=agents_note,
    )


def _forecast(progress: pd.DataFrame, target: float | None) -> tuple[ForecastInfo | None, str | None]:
    """The forecast from the last complete generation on: at least FORECAST_MIN_AHEAD generations and
    FORECAST_AHEAD_FRACTION of the observed span ahead, further to show the forecast crossing of the
    target (its 80% interval's late end included), never past the fit's forecast range."""
    curve, reason = fit_best_curve(progress, target=target)
    if curve is None:
        return None, reason
    result = forecast_convergence(curve, target=target)
    last = int(curve.last_generation)
    ahead = max(FORECAST_MIN_AHEAD, math.ceil(FORECAST_AHEAD_FRACTION * curve.span))
    crossings = [r for r in (result.generations_remaining, result.generations_remaining_high) if r is not None]
    end = min(last + max([ahead, *(c + 1 for c in crossings)]), math.floor(curve.max_generation))
    future = np.arange(last, end + 1)
    low, high = curve.interval(future, FORECAST_LEVEL)
    forecast = ForecastInfo(
        generations=tuple(int(g) for g in future),
        expected=_floats(curve.expected(future)),
        low=_floats(low),
        high=_floats(high),
        goal=str(result.goal.value),
        level=result.level,
        remaining=result.generations_remaining,
        remaining_low=result.generations_remaining_low,
        remaining_high=result.generations_remaining_high,
        recent_max=curve.recent_max if isinstance(curve, BestForecast) else None,
    )
    return forecast, None


def _agents_forecast(
    scores: pd.DataFrame,
    progress: pd.DataFrame,
    events: pd.DataFrame,
    target: float | None,
    best: ForecastInfo | None,
) -> tuple[AgentsForecastInfo | None, str | None]:
    """The mean's forecast over the best score's forecast generations (or FORECAST_MIN_AHEAD and
    FORECAST_AHEAD_FRACTION of the span ahead, without one), at the run's exploit rate up to the last
    complete generation of `progress`."""
    complete = progress.index
    try:
        rate = exploit_rate(scores, events, up_to_generation=int(complete.max()) if len(complete) else None)
        forecast = forecast_population(scores, exploit_rate=rate)
    except ValueError as refused:
        return None, str(refused).removeprefix("scores: ")
    last = forecast.last_generation
    if best is not None and best.generations[0] == last:
        future = np.asarray(best.generations)
    else:
        span = last - int(scores["generation"].min()) + 1
        ahead = max(FORECAST_MIN_AHEAD, math.ceil(FORECAST_AHEAD_FRACTION * span))
        future = np.arange(last, min(last + ahead, math.floor(forecast.mean.max_generation)) + 1)
    low, high = forecast.mean.interval(future, FORECAST_LEVEL)
    share = None if target is None else forecast.expected_share_at_least(target, float(future[-1]))
    info = AgentsForecastInfo(
        generations=tuple(int(g) for g in future),
        expected=_floats(forecast.mean.expected(future)),
        low=_floats(low),
        high=_floats(high),
        exploit_rate=forecast.exploit_rate,
        share_at_target=share,
    )
    return info, None


def get_diversity_info(configs: pd.DataFrame, *, params: Sequence[str]) -> DiversityInfo:
    """Overall and per-parameter diversity at each generation a config changed, and the generations
    flagged as collapsed (analytics.diversity)."""
    if configs.empty or not params:
        return DiversityInfo((), (), (), (), "no hyperparameters recorded (configs table is empty)")
    frame = diversity_over_generations(configs, params=params)
    specs = infer_specs(configs, params=params)
    parameters = tuple(
        ParamSeries(name, str(spec.kind.value), _floats(frame[PARAM_COLUMN_PREFIX + name]))
        for name, spec in specs.items()
    )
    return DiversityInfo(
        generations=tuple(int(g) for g in frame.index),
        overall=_floats(frame["overall"]),
        parameters=parameters,
        collapsed=tuple(int(g) for g in frame.index[frame["collapsed"].to_numpy(dtype=bool)]),
        note=None,
    )


def get_lineage_info(samples: pd.DataFrame, events: pd.DataFrame, *, metric: str) -> LineageInfo:
    """Every agent's lives (bars over generations, coloured by founder) and the exploits between
    them (arrows), from analytics.migration.lineage."""
    scores = agent_scores(samples, metric=metric)
    agents = sorted({str(a) for a in samples.loc[samples["kind"] == "agent", "source"].unique()})
    tree = lineage(events, agents)
    everyone = sorted({node.agent for node in tree.nodes})
    lives = _life_spans(tree, scores)
    last_overall = int(scores["generation"].max()) if len(scores) else 0
    arrows = tuple(
        ExploitArrow(
            source_agent=edge.source_agent,
            target_agent=edge.target_agent,
            source_generation=_first_known(edge.source_generation, edge.target_generation, last_overall),
            target_generation=edge.target_generation,
        )
        for edge in tree.edges
    )
    counts = exploit_counts(events, everyone)
    current = {life.agent: life for life in lives}  # lives are in order: each agent's last one wins
    rows = tuple(
        LineageRow(
            agent=agent,
            exploited=int(counts.at[agent, "exploited"]),
            copied=int(counts.at[agent, "copied"]),
            founder=current[agent].founder,
            copies_in_chain=len(tree.ancestry(agent)),
        )
        for agent in everyone
    )
    founders = tuple(sorted({life.founder for life in lives}))
    return LineageInfo(tuple(everyone), founders, lives, arrows, rows)


def _life_spans(tree: Lineage, scores: pd.DataFrame) -> tuple[LifeSpan, ...]:
    """The lineage's lives as bars: an original life starts at its agent's first scored generation, a
    copy at the source generation it continues from; a life ends where the next exploit replaced it,
    or at its agent's last scored generation while it lives. The founder is the agent of the root of
    the life's chain of copies."""
    spans = scores.groupby("agent")["generation"].agg(["min", "max"])
    overall = (int(scores["generation"].min()), int(scores["generation"].max())) if len(scores) else (0, 0)
    parent = {edge.child: edge.parent for edge in tree.edges}
    agent_of = {node.id: node.agent for node in tree.nodes}

    def founder(node_id: str) -> str:
        while node_id in parent:
            node_id = parent[node_id]
        return agent_of[node_id]

    lives = []
    for node in tree.nodes:
        first, last = (int(g) for g in spans.loc[node.agent]) if node.agent in spans.index else overall
        start = first if node.start_generation is None else node.start_generation
        end = max(start, last if node.end_generation is None else node.end_generation)
        lives.append(LifeSpan(node.agent, node.index, start, end, founder(node.id)))
    return tuple(lives)


def get_importance_info(
    samples: pd.DataFrame, configs: pd.DataFrame, *, metric: str, params: Sequence[str]
) -> ImportanceInfo:
    """Forest permutation importance beside Spearman rank correlation (analytics.importance), over the
    (agent, generation) samples of the score and the config that produced it, `params` only."""
    selected = configs[configs["param"].isin(list(params))]
    if selected.empty:
        return ImportanceInfo(metric, 0, 0, None, (), "no hyperparameters recorded (configs table is empty)")
    table = config_scores(samples, selected, score_metric=metric)
    try:
        result = hyperparameter_importance(table)
    except ValueError as error:  # too few samples, or a score that does not vary
        return ImportanceInfo(metric, len(table.frame), 0, None, (), f"not computed: {error}")
    rows = tuple(ImportanceRow(p.param, p.permutation_mean, p.permutation_std, p.spearman) for p in result.params)
    return ImportanceInfo(metric, result.n_samples, result.n_test, result.test_r2, rows, None)


def get_anomaly_info(samples: pd.DataFrame, *, metric: str | None) -> AnomalyInfo:
    """Each agent's `metric` stream (in time order) through a RobustDetector (analytics.anomaly), whose
    warm-up is shortened for short streams (a PBT run reports once per generation); the streams with
    the most flagged points are kept for drawing (at least one, to show the band)."""
    if metric is None:
        return AnomalyInfo(None, (), (), "no throughput metric (an agent metric named *_per_s)")
    rows = samples[(samples["kind"] == "agent") & (samples["metric"] == metric)].sort_values("ts", kind="stable")
    origin = rows["ts"].min()
    streams, table = [], []
    for agent, group in rows.groupby(rows["source"].astype(str), sort=True):
        history = min(ANOMALY_HISTORY, max(MIN_ANOMALY_HISTORY, len(group) // 3))
        result = detect_anomalies(
            group["value"].to_numpy(dtype=float),
            ts=(group["ts"] - origin).dt.total_seconds().to_numpy(),
            detector=RobustDetector(min_history=history),
        )
        flagged = tuple(int(i) for i in np.flatnonzero(result["is_anomaly"].to_numpy()))
        scored = int(result["score"].notna().sum())
        table.append(AnomalyRow(str(agent), len(result), scored, len(flagged)))
        streams.append(
            AnomalyStream(
                agent=str(agent),
                seconds=_floats(result["ts"]),
                value=_floats(result["value"]),
                expected=_floats(result["expected"]),
                lower=_floats(result["lower"]),
                upper=_floats(result["upper"]),
                flagged=flagged,
            )
        )
    if not streams:
        return AnomalyInfo(metric, (), (), f"no agent reported {metric}")
    ranked = sorted(streams, key=lambda s: (-len(s.flagged), s.agent))
    shown = [s for s in ranked if s.flagged][:MAX_ANOMALY_PLOTS] or ranked[:1]
    return AnomalyInfo(metric, tuple(shown), tuple(table), None)


# --------------------------------------------------------------------------------------------
# Helpers


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as plain objects (the store gives categoricals, whose groupby and comparisons
    differ) and `ts` as UTC datetimes."""
    frame = frame.copy()
    for column in frame.columns:
        if isinstance(frame[column].dtype, pd.CategoricalDtype | pd.StringDtype):
            frame[column] = frame[column].astype(object)
    if "ts" in frame.columns:
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def _floats(values: Iterable[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(values, dtype=float).ravel())


def _first_known(*values: int | None) -> int:
    return next(int(v) for v in values if v is not None)


def _is_rate(metric: str) -> bool:
    return metric.endswith(RATE_SUFFIXES)


def _json_object(text: object) -> dict:
    try:
        value = json.loads(str(text))
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _dotted_keys(mapping: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        keys.extend(_dotted_keys(value, f"{name}.") if isinstance(value, dict) else [name])
    return keys
