"""The demo PBT run: a population of Q-learning agents under Tune's PBT, monitored by elitemon.

`run_demo` needs a running Ray (the CLI starts one; tests use theirs). It starts or attaches to the
aggregator, runs the Tuner with `MonitorCallback` (which also starts the node monitors) and a
progress printer, then computes the summary by querying the store, the way a user would afterwards.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray import tune
from ray.tune import Callback
from ray.tune.schedulers import PopulationBasedTraining
from ray.tune.search.basic_variant import BasicVariantGenerator

from elitemon import aggregator
from elitemon.client import Client
from elitemon.config import StoreConfig
from elitemon.demo._qlearning import ENVIRONMENTS, AgentSettings, QLearningTrainable, clip, reward_threshold
from elitemon.tune import MonitorCallback

SCORE = "mean_return"
#: Where each hyperparameter starts, and what PBT resamples from. Wide on purpose: part of the
#: population starts with settings that learn slowly or not at all, which is what PBT repairs.
SEARCH_SPACE = {
    "epsilon": tune.uniform(0.01, 0.5),
    "lr": tune.loguniform(0.01, 1.0),
    "discount": tune.uniform(0.5, 0.999),
    "reward_shaping": tune.uniform(0.0, 2.0),
}


@dataclass(frozen=True)
class DemoSettings:
    """The demo's knobs; the defaults take about two minutes on a 2-core machine."""

    agents: int = 8
    iterations: int = 100
    env_id: str = "Taxi-v4"
    episodes_per_iteration: int = 100
    eval_episodes: int = 20
    perturbation_interval: int = 5
    target: float | None = None  # None: Gymnasium's reward_threshold for the environment
    time_budget_s: float | None = None
    cpus_per_agent: float | None = None  # None: the cluster's CPUs shared by all agents, at most 1 each
    seed: int = 0
    progress_interval_s: float = 5.0
    sample_interval_s: float = 1.0  # of the node monitors

    def __post_init__(self) -> None:
        if self.agents < 2:
            raise ValueError(f"PBT needs at least 2 agents, but got {self.agents=}.")
        if self.env_id not in ENVIRONMENTS:
            raise ValueError(f"env_id must be one of {ENVIRONMENTS}, but got {self.env_id=}.")
        for name in ("iterations", "episodes_per_iteration", "eval_episodes", "perturbation_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, but got {getattr(self, name)}.")
        if self.cpus_per_agent is not None and not 0 < self.cpus_per_agent <= 1:
            raise ValueError(f"cpus_per_agent must be in (0, 1], but got {self.cpus_per_agent=}.")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"time_budget_s must be positive, but got {self.time_budget_s=}.")
        if self.target is not None and not math.isfinite(self.target):
            raise ValueError(f"target must be a finite number, but got {self.target=}.")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0 (NumPy's seeds are), but got {self.seed=}.")


@dataclass(frozen=True)
class Summary:
    """What the demo found, every figure read back from the store."""

    env_id: str
    target: float
    agents: list[str]
    best_agent: str
    best_score: float
    best_config: dict[str, float]
    best_by_generation: dict[int, float]  # generation -> the best score any agent reported at it
    exploits: int
    time_to_target_s: float | None  # from the start of the run to the first agent at the target
    agents_at_target: int  # agents whose latest score is at or above the target
    episodes: int  # trained by the whole population
    episodes_per_s: float  # the population's mean training throughput, latest iteration
    wall_s: float
    data_dir: str
    started_at: float  # epoch seconds, for queries of this run's data

    def render(self) -> str:
        config = ", ".join(f"{k}={v:.3g}" for k, v in sorted(self.best_config.items()))
        reached = "not reached" if self.time_to_target_s is None else f"{self.time_to_target_s:.1f}s"
        generations = sorted(self.best_by_generation)
        shown = generations[:: max(1, math.ceil(len(generations) / 8))] + generations[-1:]
        curve = ", ".join(f"{g}: {self.best_by_generation[g]:.1f}" for g in dict.fromkeys(shown))
        return "\n".join(
            [
                f"summary ({self.env_id}, {len(self.agents)} agents, {self.wall_s:.0f}s):",
                f"  best agent      {self.best_agent}  {SCORE} {self.best_score:.2f}  ({config})",
                f"  best by generation  {curve}",
                f"  exploits        {self.exploits}",
                f"  time to target  {reached} (target {SCORE} >= {self.target:g}; "
                f"{self.agents_at_target}/{len(self.agents)} agents there at the end)",
                f"  episodes        {self.episodes:,} trained, {self.episodes_per_s:,.0f}/s per agent at the end",
                f"  data            {self.data_dir}",
                f"  query it: elitemon start --data-dir {self.data_dir} && elitemon query events --type exploit",
            ]
        )


def run_demo(
    settings: DemoSettings,
    *,
    storage_path: Path | None = None,
    aggregator_name: str = aggregator.NAME,
    data_dir: Path | None = None,
    out: Callable[[str], None] = print,
) -> Summary:
    """Run the population to the end and return its summary. Needs Ray to be initialised.

    Starts the aggregator unless one runs under `aggregator_name` (then its own data directory is
    used, whatever `data_dir` says). Tune's own files (checkpoints, `pbt_global.txt`) go to
    `storage_path`, by default where Tune puts them (~/ray_results)."""
    store = StoreConfig(data_dir=data_dir) if data_dir else StoreConfig()
    handle = aggregator.start_aggregator(store, name=aggregator_name)  # held: the store outlives the run
    client = Client(handle, name=aggregator_name)
    target = settings.target if settings.target is not None else reward_threshold(settings.env_id)
    agent_settings = AgentSettings(settings.env_id, settings.episodes_per_iteration, settings.eval_episodes, target)
    cpus = settings.cpus_per_agent or _share(ray.cluster_resources().get("CPU", 1.0), settings.agents)
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration",
        metric=SCORE,
        mode="max",
        perturbation_interval=settings.perturbation_interval,
        hyperparam_mutations=SEARCH_SPACE,
        custom_explore_fn=clip,
    )
    progress = _Progress(settings, target, client, out)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(QLearningTrainable, settings=agent_settings), {"cpu": cpus}),
        param_space={**SEARCH_SPACE, "seed": tune.randint(0, 2**31 - 1)},
        tune_config=tune.TuneConfig(
            scheduler=scheduler,
            num_samples=settings.agents,
            reuse_actors=True,
            search_alg=BasicVariantGenerator(random_state=settings.seed),
            time_budget_s=settings.time_budget_s,
        ),
        run_config=tune.RunConfig(
            name=time.strftime("elitemon-demo_%Y-%m-%d_%H-%M-%S"),  # a new experiment directory per run
            storage_path=None if storage_path is None else str(storage_path),
            stop={"training_iteration": settings.iterations},
            callbacks=[
                MonitorCallback(
                    aggregator_name=aggregator_name,
                    data_dir=str(store.data_dir),
                    sample_interval_s=settings.sample_interval_s,
                ),
                progress,
            ],
            verbose=0,
        ),
    )
    out(
        f"elitemon demo: {settings.agents} Q-learning agents on {settings.env_id}, PBT every "
        f"{settings.perturbation_interval} iterations, {settings.iterations} iterations, {cpus:g} CPU each"
    )
    started_at = time.time()
    results = tuner.fit()
    if results.errors:
        raise RuntimeError(f"{len(results.errors)} agents failed; the first: {results.errors[0]}")
    agents = sorted(result.metrics["trial_id"] for result in results)
    return summarize(client, agents, started_at, target, settings.env_id)


def summarize(client: Client, agents: list[str], started_at: float, target: float, env_id: str) -> Summary:
    """The run's summary from the store: only rows of these agents written since `started_at`."""
    scope = {"source": agents, "start": started_at}
    scores = client.samples(metric=SCORE, **scope)
    latest = client.latest(metric=[SCORE, "episodes_total", "episodes_per_s"], **scope).to_pylist()
    final = {row["source"]: row["value"] for row in latest if row["metric"] == SCORE}
    best_agent = max(final, key=final.__getitem__)
    reached = client.samples(metric="target_achieved", **scope).filter(pc.field("value") >= 1.0)
    first = pc.min(reached.column("ts")).as_py() if reached.num_rows else None
    throughput = [row["value"] for row in latest if row["metric"] == "episodes_per_s"]
    return Summary(
        env_id=env_id,
        target=target,
        agents=agents,
        best_agent=best_agent,
        best_score=final[best_agent],
        best_config=_latest_config(client, best_agent, started_at),
        best_by_generation=best_by_generation(scores),
        exploits=client.events(type="exploit", agent=agents, start=started_at).num_rows,
        time_to_target_s=None if first is None else first.timestamp() - started_at,
        agents_at_target=sum(value >= target for value in final.values()),
        episodes=int(sum(row["value"] for row in latest if row["metric"] == "episodes_total")),
        episodes_per_s=float(np.mean(throughput)) if throughput else 0.0,
        wall_s=time.time() - started_at,
        data_dir=client.health().data_dir,
        started_at=started_at,
    )


def best_by_generation(scores: pa.Table) -> dict[int, float]:
    """Generation -> the highest score reported at it (exploited agents repeat generations)."""
    grouped = scores.group_by("generation").aggregate([("value", "max")]).sort_by("generation")
    return dict(zip(grouped.column("generation").to_pylist(), grouped.column("value_max").to_pylist(), strict=True))


def _latest_config(client: Client, agent: str, started_at: float) -> dict[str, float]:
    """The agent's hyperparameters now: the newest row of each (exploits write the new config)."""
    config: dict[str, float] = {}
    for row in client.configs(agent=agent, start=started_at).to_pylist():  # oldest first
        if row["value"] is not None and row["param"] in SEARCH_SPACE:
            config[row["param"]] = row["value"]
    return config


def _share(cpus: float, agents: int) -> float:
    """Each agent's CPU share so that the whole population runs at once (Ray counts in 1e-4 units)."""
    return min(1.0, math.floor(cpus / agents * 1e4) / 1e4)


def _print_line(line: str) -> None:
    """`print`, looked up when called: whatever `builtins.print` is then."""
    print(line)


class _Progress(Callback):
    """Prints a line every `progress_interval_s`: the population's state from Tune's results, and
    the number of exploits from the store (so the line also shows that monitoring keeps up)."""

    def __init__(self, settings: DemoSettings, target: float, client: Client, out: Callable[[str], None]) -> None:
        self._settings = settings
        self._target = target
        self._client: Client | None = client
        self._out = out
        self._latest: dict[str, dict[str, Any]] = {}  # trial id -> its latest result
        self._started_at = time.time()
        self._started = self._printed = time.monotonic()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._latest[trial.trial_id] = result
        now = time.monotonic()
        if now - self._printed >= self._settings.progress_interval_s:
            self._printed = now
            self._out(self.line(now - self._started))

    def line(self, elapsed_s: float) -> str:
        best_id, best = max(self._latest.items(), key=lambda item: item[1][SCORE])
        results = list(self._latest.values())
        scores = [r[SCORE] for r in results]
        exploits = self._exploits()
        return (
            f"[{elapsed_s:4.0f}s] iteration {max(r['training_iteration'] for r in results):>3}/"
            f"{self._settings.iterations}  best {SCORE} {best[SCORE]:7.2f} ({best_id})"
            f" success {best['success_rate']:.2f}  median {float(np.median(scores)):7.2f}"
            f"  {sum(r['episodes_per_s'] for r in results):,.0f} episodes/s"
            f"  at target {sum(s >= self._target for s in scores)}/{self._settings.agents}  exploits {exploits}"
        )

    def _exploits(self) -> int | str:
        if self._client is None:  # unpickled from an experiment checkpoint
            return "?"
        return self._client.events(type="exploit", agent=list(self._latest), start=self._started_at).num_rows

    def __getstate__(self) -> dict:
        """Tune pickles callbacks (experiment checkpoints): keep the settings, drop the live client
        and the output function. A function such as `print` pickles by reference, which fails once
        something (Ray's tqdm or Serve logging, a notebook) has replaced `builtins.print`."""
        return {**self.__dict__, "_client": None, "_out": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _out=_print_line)  # an unpickled copy prints to stdout
