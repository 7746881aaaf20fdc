"""MonitorCallback: streams a Tune PBT run into elitemon.

    tuner = tune.Tuner(trainable, tune_config=..., run_config=tune.RunConfig(callbacks=[MonitorCallback()]))

Per result: every numeric metric as a sample of the trial (`generation` = `training_iteration`,
`node` = the result's `node_ip`). Per trial start: its hyperparameters to `configs` and a
`trial_start` event; `trial_complete` and `trial_error` events at the end. Per exploit (PBT, PB2): an
`exploit` event with both trials, their nodes and iterations, the target's old config, the source's
config, the new config and the explore operations; then `migration_completed` when the exploited
trial reports its first result after the restore (with the latency), or `migration_failed` if it
errors first. The node monitors learn which process trains which trial from the results' `pid`
and `node_ip` samples (and forget it at trial_complete or trial_error), so no hook calls them.

Everything heavy happens in `setup`, on the driver, not in `__init__`: Tune pickles callbacks. Rows go
through a Producer, so no hook waits for the network.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import ray
from ray.tune import Callback

from elitemon import aggregator
from elitemon.config import StoreConfig
from elitemon.producer import Producer, RaySink
from elitemon.reporting import Reporter, config_rows
from elitemon.tune import _exploits

TRAINING_ITERATION = "training_iteration"


class MonitorCallback(Callback):
    """Attach elitemon to a Tune run. Starts (or attaches to) the aggregator and node monitors;
    node monitoring that this callback starts ends with the run (an aggregator it starts ends with
    the driver, one that was running goes on)."""

    def __init__(
        self,
        *,
        aggregator_name: str = aggregator.NAME,
        data_dir: str | None = None,
        monitor_nodes: bool = True,
        sample_interval_s: float = 1.0,
    ) -> None:
        self._aggregator_name = aggregator_name
        self._data_dir = data_dir
        self._monitor_nodes = monitor_nodes
        self._sample_interval_s = sample_interval_s
        self._reporter: Reporter | None = None
        self._aggregator: Any = None  # an aggregator this callback starts lives as long as this handle
        self._migrating: dict[str, list[_Migration]] = {}  # target trial -> its exploits awaiting a restore
        self._started_monitoring = False  # then it ends with the run, as it began with it

    def setup(self, **info: Any) -> None:
        config = StoreConfig(data_dir=self._data_dir) if self._data_dir else StoreConfig()
        self._aggregator = aggregator.start_aggregator(config, name=self._aggregator_name)
        if self._monitor_nodes:
            from elitemon.collect.controller import MonitorSettings

            settings = MonitorSettings(sample_interval_s=self._sample_interval_s)
            self._started_monitoring, _ = ray.get(self._aggregator.start_monitoring.remote(settings))
        # A send per table every 2 s at most: each Ray call costs about 2 ms of the driver's CPU and
        # 1.5 ms of the aggregator's here, which on a busy node is the trainers' (measured for
        # benchmarks/overhead.py); 2 s is inside any dashboard refresh. Rows refused while the
        # aggregator is away past the producer's budgets are dropped and counted: an OSError here
        # would fail the user's training run.
        producer = Producer(RaySink(name=self._aggregator_name), name="tune", max_delay_s=2.0, when_full="drop")
        self._reporter = Reporter(producer)
        _exploits.add_listener(self._on_exploit)

    @property
    def producer(self) -> Producer:
        assert self._reporter is not None, "setup() has not run"
        return self._reporter.producer

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        generation = trial.last_result.get(TRAINING_ITERATION, 0) if trial.last_result else 0
        self.producer.append_rows("configs", config_rows(trial.trial_id, generation, _flat(trial.config)))
        self._event("trial_start", trial, generation, {"experiment_tag": trial.experiment_tag})

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        assert self._reporter is not None
        generation = int(result.get(TRAINING_ITERATION, 0))
        metrics = {k: v for k, v in result.items() if k not in (TRAINING_ITERATION, "config")}
        self._reporter.report(trial.trial_id, generation, metrics, node=result.get("node_ip"))
        # The first result after the restore ends a migration; not the result that triggered it,
        # which Tune hands to callbacks after the scheduler exploited (`_on_exploit` ended any
        # migration that triggering result ended in turn).
        if result.get("iterations_since_restore", 1) == 1:
            self._complete(trial.trial_id, generation, result.get("node_ip"))
        for migration in self._migrating.get(trial.trial_id, []):
            migration.awaiting_trigger = False

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._event("trial_complete", trial, _generation(trial), {})

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for migration in self._migrating.pop(trial.trial_id, []):
            self._event("migration_failed", trial, _generation(trial), {"source": migration.source})
        self._event("trial_error", trial, _generation(trial), {"error": str(getattr(trial, "error_file", ""))})

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Flush everything: the trial rows, the node monitors' rows and node events. Node monitoring
        that this callback started ends here; monitoring that was running before goes on."""
        _exploits.remove_listener(self._on_exploit)
        self.producer.flush(timeout=30)
        if self._monitor_nodes and self._aggregator is not None:
            if self._started_monitoring:
                ray.get(self._aggregator.stop_monitoring.remote(), timeout=60)  # stores their rows first
            else:
                ray.get(self._aggregator.flush_monitors.remote(), timeout=30)

    def _on_exploit(self, exploit: _exploits.Exploit) -> None:
        assert self._reporter is not None
        if not exploit.trigger_delivered and exploit.trigger_since_restore == 1:
            # The result that triggered this exploit is the first after an earlier one's restore: it
            # ends that migration, recorded before this exploit so that the events read in order.
            self._complete(exploit.target, exploit.trigger_iteration, exploit.trigger_node)
        exploited_at = time.time()
        self._reporter.report_exploit(
            exploit.target,
            exploit.source,
            generation=exploit.target_iteration,
            source_generation=exploit.source_iteration,
            source_last_generation=exploit.source_last_iteration,
            target_node=exploit.target_node,
            source_node=exploit.source_node,
            old_config=exploit.old_config,
            source_config=exploit.source_config,
            new_config=exploit.new_config,
            operations=exploit.operations,
            trigger_generation=exploit.trigger_iteration,
            target_tag=exploit.target_tag,
            source_tag=exploit.source_tag,
        )
        # Only a recorded exploit awaits its migration's end: else a completion with no exploit.
        migration = _Migration(exploited_at, exploit.source, awaiting_trigger=not exploit.trigger_delivered)
        self._migrating.setdefault(exploit.target, []).append(migration)
        self.producer.append_rows(
            "configs", config_rows(exploit.target, exploit.trigger_iteration, _flat(exploit.new_config))
        )

    def _complete(self, trial_id: str, generation: int, node: str | None) -> None:
        """End the trial's migrations whose triggering result has been handled (at most one: a trial
        restores once between results) with a `migration_completed` at `generation`, on `node`."""
        pending = self._migrating.pop(trial_id, [])
        restored = [m for m in pending if not m.awaiting_trigger]
        if restored:
            payload = {"latency_s": time.time() - restored[-1].exploited_at, "source": restored[-1].source}
            self._write_event("migration_completed", trial_id, node, generation, payload)
        waiting = [m for m in pending if m.awaiting_trigger]
        if waiting:
            self._migrating[trial_id] = waiting

    def _event(self, kind: str, trial: Any, generation: int | None, payload: dict) -> None:
        """An event of `trial` on its last result's node."""
        node = trial.last_result.get("node_ip") if trial.last_result else None
        self._write_event(kind, trial.trial_id, node, generation, payload)

    def _write_event(self, kind: str, trial_id: str, node: str | None, generation: int | None, payload: dict) -> None:
        row = {
            "type": kind,
            "agent": trial_id,
            "node": node,
            "generation": generation,
            "payload": json.dumps(payload, default=str),
        }
        self.producer.append_rows("events", [row])

    def __getstate__(self) -> dict:
        """Tune pickles callbacks (experiment checkpoints): keep the settings, drop live handles."""
        state = dict(self.__dict__)
        state.update(
            _reporter=None,
            _aggregator=None,
            _migrating={},
            _started_monitoring=False,
        )
        return state


@dataclass
class _Migration:
    """An exploit of a trial, until the trial's first result after the restore ends it."""

    exploited_at: float
    source: str
    awaiting_trigger: bool  # the result that triggered it has not reached the callbacks yet


def _generation(trial: Any) -> int | None:
    return trial.last_result.get(TRAINING_ITERATION) if trial.last_result else None


def _flat(config: dict, prefix: str = "") -> dict:
    """Nested search spaces flattened to dotted names (`optimizer.lr`)."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, f"{name}."))
        else:
            flat[name] = value
    return flat
