"""Migration effectiveness of a PBT run: its exploits, how they ended, what they gained, and the lineage.

PBT "migrates" a model when an exploit copies a source agent's checkpoint and hyperparameters into a
target agent (which then perturbs them). These functions read the `events` table (exploit,
migration_completed, migration_failed) and the score samples, and answer: how often was each agent
replaced or copied, did the copies arrive (success rate, synchronisation latency), did exploits
cross nodes, did the targets improve more often than agents left alone, and who descends from whom.

The result that triggered an exploit (the target's last result before it was replaced) is the
target's score at the exploit's `generation` or the next one, whichever was written closest in time to
the exploit event. A custom loop reports that result at `generation` just before calling
`report_exploit`. The Tune callback records the exploit at the triggering result's generation and
writes that result a millisecond after the event: Ray Tune 2.60 runs the scheduler before it updates
`trial.last_result`, so Tune's own record of an asynchronous PBT exploit names the target's
*previous* iteration, which the payload keeps as `target_generation`. An event whose `generation`
is that previous iteration (from a writer that takes Tune's figure) has its triggering result at
`generation` + 1, hence the next one too. An event whose payload has `trigger_generation` (every
`report_exploit` writes it) names that result exactly, and only `generation` is read: under
`synch=True` a paused target's triggering result can be written long before the exploit, and its
first result after the restore, at `generation` + 1, closer to it. A restored target's results
come a restore and a training step later, from the source's generation on, so it may report a
generation twice: nothing here relies on "the last score before the event" or on generations
being unique.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from enum import StrEnum

import numpy as np
import pandas as pd

from elitemon.analytics._frames import is_number, plain_copy

SCORE_METRIC = "mean_return"
EVENT_COLUMNS = ("ts", "type", "agent", "source_agent", "node", "source_node", "generation", "payload")
SAMPLE_COLUMNS = ("ts", "kind", "source", "generation", "metric", "value")
LATENCY_QUANTILES = (0.50, 0.95)


class MigrationOutcome(StrEnum):
    """How the copy made by one exploit ended."""

    COMPLETED = "completed"  # the target reported a result after restoring (migration_completed)
    FAILED = "failed"  # the target errored before that (migration_failed)
    PENDING = "pending"  # neither yet (or the target was exploited again before either was written)


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Synchronisation latency of completed migrations in seconds: the `latency_s` their writer measured
    from the exploit to the target's first result after the restore. Quantiles are numpy's default
    (linear interpolation); all None when nothing completed."""

    count: int
    p50_s: float | None
    p95_s: float | None
    max_s: float | None


@dataclasses.dataclass(frozen=True)
class MigrationStats:
    """Counts and rates over all exploits in `events`; a rate is None when its denominator is 0."""

    exploits: int
    exploits_with_nodes: int  # exploits whose target and source node are both known
    cross_node_exploits: int  # of those, the ones with node != source_node
    cross_node_share: float | None  # cross_node_exploits / exploits_with_nodes
    completed: int
    failed: int
    pending: int
    success_rate: float | None  # completed / (completed + failed): pending ones are not judged yet
    latency: LatencyStats


@dataclasses.dataclass(frozen=True)
class ExploitEffectiveness:
    """Did exploited agents improve within k generations more often than agents left alone?

    An exploit *improved* its target when any of the target's first k scores after the restore beats
    its score at the exploit (the bottom-quantile score that triggered it). The control is every
    window of k generations in which an agent was not exploited: it *improved* when any of the next k
    scores beats the score at the window's start. `lift` = improved_share - control_improved_share.
    Exploit targets are by construction bottom-quantile agents that receive a better agent's weights,
    so a large lift is expected: a lift near 0 or below says the copies are not paying off (perturbation
    too strong, or checkpoints lost). A share or mean is None when nothing could be evaluated.
    """

    k: int
    exploits: int
    evaluated: int  # exploits with a score at the exploit and one k generations after the restore
    improved: int
    improved_share: float | None
    mean_gain: float | None  # of score(k generations after the restore) - score at the exploit
    median_gain: float | None
    control_windows: int
    control_improved: int
    control_improved_share: float | None
    lift: float | None


@dataclasses.dataclass(frozen=True)
class LineageNode:
    """One life of an agent: its training between two exploits. `id` is "<agent>#<index>"; index 0 is
    the agent as it started (start_generation None: the start of its run), index i the copy made by its
    i-th exploit, which starts from the source's checkpoint at `start_generation`. `end_generation` is
    the generation at which the next exploit replaced this life, None while it lives."""

    id: str
    agent: str
    index: int
    start_generation: int | None
    end_generation: int | None


@dataclasses.dataclass(frozen=True)
class LineageEdge:
    """An exploit: the `child` life began as a copy of the `parent` life at `source_generation`; the
    target had reached `target_generation` when it was replaced. `ts` is epoch seconds."""

    parent: str
    child: str
    source_agent: str
    target_agent: str
    source_generation: int | None
    target_generation: int | None
    ts: float


@dataclasses.dataclass(frozen=True)
class Lineage:
    """Who descends from whom, as nodes (lives of agents) and edges (exploits), in exploit order.

    Nodes are lives rather than (agent, generation) points because a restored agent reuses generation
    numbers (it continues from the source's generation), so (agent, generation) does not name one
    state; each edge still carries both (agent, generation) points. Every life has at most one parent,
    the source's life at the time of the copy, which started earlier, so the graph is a forest even
    when agents copy each other back and forth (A copies B, later B copies A: A#1 <- B#0, B#1 <- A#1).
    `dataclasses.asdict(lineage)` gives plain nested dicts (JSON-ready) for a tree view.
    """

    nodes: tuple[LineageNode, ...]
    edges: tuple[LineageEdge, ...]

    def copies(self, agent: str) -> tuple[LineageEdge, ...]:
        """The sources `agent` copied, in order, with the generations of each copy."""
        return tuple(edge for edge in self.edges if edge.target_agent == agent)

    def ancestry(self, agent: str) -> tuple[LineageEdge, ...]:
        """The chain of copies that made `agent`'s current life, oldest first (empty for an original)."""
        parent_edge = {edge.child: edge for edge in self.edges}
        lives = [node for node in self.nodes if node.agent == agent]
        if not lives:
            raise ValueError(f"agent: {agent!r} is not in the lineage")
        chain: list[LineageEdge] = []
        current = max(lives, key=lambda node: node.index).id
        while current in parent_edge:
            chain.append(parent_edge[current])
            current = parent_edge[current].parent
        return tuple(reversed(chain))


def exploits(events: pd.DataFrame) -> pd.DataFrame:
    """One row per exploit event, oldest first: ts, agent (the target), source_agent, node, source_node,
    generation (the target's, at the exploit), source_generation (from the payload), cross_node
    (node != source_node; <NA> when either is unknown), trigger_exact (the payload names the
    triggering result's generation: `generation` is it, not possibly the one before)."""
    events = plain_copy(events, "events", EVENT_COLUMNS)
    rows = events[events["type"] == "exploit"].sort_values("ts", kind="stable")
    payloads = [_payload(text) for text in rows["payload"]]
    known = rows["node"].notna() & rows["source_node"].notna()
    cross = pd.array(np.where(known, rows["node"] != rows["source_node"], False), dtype="boolean")
    cross[~known.to_numpy()] = pd.NA
    table = rows[["ts", "agent", "source_agent", "node", "source_node"]].reset_index(drop=True)
    return table.assign(
        generation=pd.array(rows["generation"], dtype="Int64"),
        source_generation=pd.array([_source_generation(p) for p in payloads], dtype="Int64"),
        cross_node=cross,
        trigger_exact=np.array([p.get("trigger_generation") is not None for p in payloads], dtype=bool),
    )


def exploit_counts(events: pd.DataFrame, agents: Iterable[str] = ()) -> pd.DataFrame:
    """Per agent (index, sorted): `exploited` = times it was the target of an exploit (replaced by a
    copy), `copied` = times it was the source. `agents` adds agents with no exploits as zero rows."""
    table = exploits(events)
    counts = pd.DataFrame(
        {
            "exploited": table["agent"].value_counts(),
            "copied": table["source_agent"].value_counts(),
        }
    )
    everyone = sorted(set(counts.index) | set(agents))
    counts = counts.reindex(everyone).fillna(0).astype("int64")
    counts.index.name = "agent"
    return counts


def migration_outcomes(events: pd.DataFrame) -> pd.DataFrame:
    """exploits(events) plus `outcome` (a MigrationOutcome value) and `latency_s` (completed only).

    An exploit's outcome is the target's first migration_completed or migration_failed event at or
    after the exploit and before the target's next exploit; an outcome event with no exploit before it
    in `events` (its exploit fell outside the queried range) is not counted.
    """
    table = exploits(events)
    events = plain_copy(events, "events", EVENT_COLUMNS)
    ends = events[events["type"].isin(["migration_completed", "migration_failed"])].sort_values("ts", kind="stable")
    starts = pd.DataFrame({"agent": table["agent"], "exploit_ts": table["ts"], "exploit": np.arange(len(table))})
    matched = pd.merge_asof(
        ends[["ts", "agent", "type", "payload"]],
        starts,
        left_on="ts",
        right_on="exploit_ts",
        by="agent",
    )
    # Whole rows: groupby().first() would take each column's first non-null value on its own, and
    # pair one event's type with a later event's latency.
    first = matched.dropna(subset=["exploit"]).drop_duplicates("exploit", keep="first").set_index("exploit")
    first.index = first.index.astype("int64")
    outcome = np.full(len(table), MigrationOutcome.PENDING.value, dtype=object)
    latency = np.full(len(table), np.nan)
    completed = first.index[first["type"] == "migration_completed"]
    outcome[completed] = MigrationOutcome.COMPLETED.value
    outcome[first.index[first["type"] == "migration_failed"]] = MigrationOutcome.FAILED.value
    latency[completed] = [_latency(_payload(text)) for text in first.loc[completed, "payload"]]
    return table.assign(outcome=outcome, latency_s=latency)


def migration_stats(events: pd.DataFrame) -> MigrationStats:
    """Exploit count, cross-node share, migration success rate and synchronisation latency.

    success_rate = completed / (completed + failed): the share of judged migrations that arrived.
    cross_node_share = exploits with node != source_node / exploits with both nodes known: how often
    PBT moves a checkpoint between machines (those pay the transfer in the latency).
    """
    table = migration_outcomes(events)
    outcomes = table["outcome"].value_counts()
    completed = int(outcomes.get(MigrationOutcome.COMPLETED.value, 0))
    failed = int(outcomes.get(MigrationOutcome.FAILED.value, 0))
    with_nodes = int(table["cross_node"].notna().sum())
    cross = int(table["cross_node"].sum())
    latencies = table["latency_s"].dropna().to_numpy()
    if latencies.size:
        p50, p95 = (float(q) for q in np.quantile(latencies, LATENCY_QUANTILES))
        latency = LatencyStats(int(latencies.size), p50, p95, float(latencies.max()))
    else:
        latency = LatencyStats(0, None, None, None)
    return MigrationStats(
        exploits=len(table),
        exploits_with_nodes=with_nodes,
        cross_node_exploits=cross,
        cross_node_share=cross / with_nodes if with_nodes else None,
        completed=completed,
        failed=failed,
        pending=len(table) - completed - failed,
        success_rate=completed / (completed + failed) if completed + failed else None,
        latency=latency,
    )


def exploit_effects(
    samples: pd.DataFrame, events: pd.DataFrame, *, k: int = 3, score_metric: str = SCORE_METRIC
) -> pd.DataFrame:
    """exploits(events) plus, per exploit: `score_before` (the target's score at the exploit),
    `score_after` (its score k generations after the restore), `gain` = score_after - score_before, and
    `improved` (any of the k scores after the restore that are observed > score_before; <NA> when the
    score k generations after the restore is not observed, e.g. the run is still going or the target
    was exploited again, or there is no score at the exploit).

    The score at the exploit is the score of the result that triggered it (see the module docstring).
    The k generations after the restore are source_generation + 1 .. + k (without a source_generation:
    from the first generation the target reported after the exploit), among the results it reported
    before its next exploit.
    """
    _check_k(k)
    return _effects(_lives(samples, events, score_metric), k)


def exploit_effectiveness(
    samples: pd.DataFrame, events: pd.DataFrame, *, k: int = 3, score_metric: str = SCORE_METRIC
) -> ExploitEffectiveness:
    """The improvement rate of exploited targets against the control of non-exploited agent-generations,
    and the score gain per exploit; see ExploitEffectiveness for the definitions."""
    _check_k(k)
    lives = _lives(samples, events, score_metric)
    evaluated = _effects(lives, k).dropna(subset=["improved"])
    improved = int(evaluated["improved"].sum())
    control_improved, control_windows = _control(lives, k)
    improved_share = improved / len(evaluated) if len(evaluated) else None
    control_share = control_improved / control_windows if control_windows else None
    return ExploitEffectiveness(
        k=k,
        exploits=len(lives.exploits),
        evaluated=len(evaluated),
        improved=improved,
        improved_share=improved_share,
        mean_gain=float(evaluated["gain"].mean()) if len(evaluated) else None,
        median_gain=float(evaluated["gain"].median()) if len(evaluated) else None,
        control_windows=control_windows,
        control_improved=control_improved,
        control_improved_share=control_share,
        lift=improved_share - control_share if improved_share is not None and control_share is not None else None,
    )


def lineage(events: pd.DataFrame, agents: Iterable[str] = ()) -> Lineage:
    """The lineage DAG of the run from its exploit events (see Lineage); `agents` adds the original
    lives of agents that never took part in an exploit, so a tree view can show every agent.

    An exploit whose source agent is unknown (null `source_agent`) still starts a new life of its
    target, with no edge into it: the target was replaced, by whom is not known. One whose target is
    unknown (null `agent`) has no life to start and is left out."""
    table = exploits(events)
    table = table[table["agent"].notna()]
    lives: dict[str, list[LineageNode]] = {}

    def current(agent: str) -> LineageNode:
        if agent not in lives:
            lives[agent] = [LineageNode(f"{agent}#0", agent, 0, None, None)]
        return lives[agent][-1]

    edges: list[LineageEdge] = []
    for row in table.itertuples(index=False):
        parent = None if pd.isna(row.source_agent) else current(row.source_agent)
        replaced = current(row.agent)
        target_generation = None if pd.isna(row.generation) else int(row.generation)
        source_generation = None if pd.isna(row.source_generation) else int(row.source_generation)
        lives[row.agent][-1] = dataclasses.replace(replaced, end_generation=target_generation)
        child = LineageNode(f"{row.agent}#{replaced.index + 1}", row.agent, replaced.index + 1, source_generation, None)
        lives[row.agent].append(child)
        if parent is None:
            continue
        edges.append(
            LineageEdge(
                parent.id,
                child.id,
                row.source_agent,
                row.agent,
                source_generation,
                target_generation,
                row.ts.timestamp(),
            )
        )
    for agent in agents:
        current(agent)
    nodes = tuple(node for agent in sorted(lives) for node in lives[agent])
    return Lineage(nodes=nodes, edges=tuple(edges))


# --------------------------------------------------------------------------------------------
# Scores split into lives: each agent's results between two exploits.


@dataclasses.dataclass(frozen=True)
class _Lives:
    """exploits() plus `score_before` (score at the exploit), `life_after` (the index of the life the
    exploit started) and `base_generation` (the generation the restored copy continues from); and every
    score as a Series indexed by (agent, life, generation), the latest report of each."""

    exploits: pd.DataFrame
    scores: pd.Series


def _lives(samples: pd.DataFrame, events: pd.DataFrame, score_metric: str) -> _Lives:
    """Split each agent's scores into lives. A life ends with the result that triggered an exploit
    (see the module docstring) or, when no such result is found, at the exploit's time."""
    table = exploits(events)
    rows = _score_rows(samples, score_metric)
    score_before = np.full(len(table), np.nan)
    life_after = np.zeros(len(table), dtype="int64")
    life = np.zeros(len(rows), dtype="int64")
    for agent, mine in table.groupby("agent", sort=False):
        agent_rows = rows[rows["agent"] == agent]
        ends = []
        for position, exploit in zip(mine.index, mine.itertuples(index=False), strict=True):
            candidates = agent_rows.iloc[0:0]
            if not pd.isna(exploit.generation):
                triggers = (
                    [exploit.generation] if exploit.trigger_exact else [exploit.generation, exploit.generation + 1]
                )
                candidates = agent_rows[agent_rows["generation"].isin(triggers)]
            if candidates.empty:
                ends.append(exploit.ts)
                continue
            closest = (candidates["ts"] - exploit.ts).abs().idxmin()
            score_before[position] = candidates.at[closest, "value"]
            ends.append(candidates.at[closest, "ts"])
        ends_us = np.array([end.to_datetime64() for end in ends], dtype="datetime64[us]")
        order = np.argsort(ends_us, kind="stable")
        life_after[mine.index[order]] = np.arange(1, len(order) + 1)
        row_ts = agent_rows["ts"].to_numpy(dtype="datetime64[us]")
        life[agent_rows.index] = np.searchsorted(ends_us[order], row_ts, side="left")
    scores = rows.assign(life=life).groupby(["agent", "life", "generation"], sort=True)["value"].last()
    first_generation = scores.reset_index().groupby(["agent", "life"])["generation"].min()
    fallback = first_generation.reindex(pd.MultiIndex.from_arrays([table["agent"], life_after])).to_numpy() - 1
    base = np.where(
        table["source_generation"].isna(), fallback, table["source_generation"].to_numpy(dtype=float, na_value=np.nan)
    )
    table = table.assign(score_before=score_before, life_after=life_after, base_generation=base)
    return _Lives(table, scores)


def _effects(lives: _Lives, k: int) -> pd.DataFrame:
    table = lives.exploits
    before = table["score_before"].to_numpy(dtype=float)
    after, improved = _window_outcomes(
        lives.scores,
        table["agent"].to_numpy(),
        table["life_after"].to_numpy(),
        table["base_generation"].to_numpy(dtype=float),
        before,
        k,
    )
    return table.drop(columns=["life_after", "base_generation"]).assign(
        score_after=after,
        gain=after - before,
        improved=pd.array(np.where(np.isnan(improved), None, improved == 1.0), dtype="boolean"),
    )


def _control(lives: _Lives, k: int) -> tuple[int, int]:
    """(improved, windows) over every agent-generation g whose next k generations lie in the same life
    (no exploit in between) and whose score at g + k is observed."""
    index = lives.scores.index
    _, improved = _window_outcomes(
        lives.scores,
        index.get_level_values("agent").to_numpy(),
        index.get_level_values("life").to_numpy(),
        index.get_level_values("generation").to_numpy(dtype=float),
        lives.scores.to_numpy(dtype=float),
        k,
    )
    judged = improved[~np.isnan(improved)]
    return int(judged.sum()), int(judged.size)


def _score_rows(samples: pd.DataFrame, score_metric: str) -> pd.DataFrame:
    """Every reported score (agent, generation, ts, value), oldest first; rows without a generation or
    with a NaN or infinite score are left out (a missing score is not a zero score), as
    population.py leaves them out."""
    samples = plain_copy(samples, "samples", SAMPLE_COLUMNS)
    rows = samples[(samples["kind"] == "agent") & (samples["metric"] == score_metric)]
    rows = rows.dropna(subset=["generation", "value"])
    rows = rows[np.isfinite(rows["value"].to_numpy(dtype=float))]
    return (
        pd.DataFrame(
            {
                "agent": rows["source"].to_numpy(dtype=object),
                "generation": rows["generation"].to_numpy(dtype="int64"),
                "ts": rows["ts"].to_numpy(),
                "value": rows["value"].to_numpy(dtype=float),
            }
        )
        .sort_values("ts", kind="stable")
        .reset_index(drop=True)
    )


def _window_outcomes(
    scores: pd.Series, agents: np.ndarray, lives: np.ndarray, starts: np.ndarray, reference: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """For windows (agent, life, generations start+1 .. start+k) judged against `reference`: the score
    at start+k and 1.0/0.0 for improved (any score in the window > reference), both NaN when the
    reference, the start or the score at start+k is missing."""
    window = np.full((len(agents), k), np.nan)
    known_start = ~np.isnan(starts)
    for step in range(1, k + 1):
        generations = np.where(known_start, starts + step, -1).astype("int64")
        keys = pd.MultiIndex.from_arrays([agents, lives, generations])
        window[:, step - 1] = scores.reindex(keys).to_numpy(dtype=float)
    complete = known_start & ~np.isnan(window[:, -1]) & ~np.isnan(reference)
    after = np.where(complete, window[:, -1], np.nan)
    best = np.max(np.where(np.isnan(window), -np.inf, window), axis=1, initial=-np.inf)
    improved = np.where(complete, (best > reference).astype(float), np.nan)
    return after, improved


# --------------------------------------------------------------------------------------------
# Input checks.


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a whole number of generations >= 1, but got {k=}")


def _latency(payload: dict) -> float:
    """A migration_completed payload's latency_s, NaN when it is missing or not a number."""
    value = payload.get("latency_s")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else np.nan


def payload_source_generation(text: object) -> int | None:
    """An exploit event's source_generation, read from its JSON payload text (None when the payload
    is missing or does not say); a ValueError names a payload that is not a JSON object or a
    source_generation that is not a whole number."""
    return _source_generation(_payload(text))


def _source_generation(payload: dict) -> int | None:
    """The payload's source_generation: a whole number or None. JSON may hold it as 3.0, and as the
    text "3" where an older `report_exploit` wrote a NumPy int (json.dumps' default=str)."""
    value = payload.get("source_generation")
    if value is None:
        return None
    if isinstance(value, str) and value.isdecimal():
        return int(value)
    if not is_number(value) or not float(value).is_integer():
        raise ValueError(f"events: an exploit payload's source_generation must be a whole number, but got {value!r}.")
    return int(value)


def _payload(text: object) -> dict:
    """An event payload as a dict; a missing payload is an empty one."""
    if text is None or (isinstance(text, float) and np.isnan(text)) or text == "":
        return {}
    try:
        value = json.loads(text)
    except (TypeError, json.JSONDecodeError) as error:
        raise ValueError(f"events: payload is not JSON: {str(text)[:80]!r}") from error
    if not isinstance(value, dict):
        raise ValueError(f"events: payload is not a JSON object: {str(text)[:80]!r}")
    return value
