"""MonitorCallback on real Tune PBT and PB2 runs: captured exploits match pbt_global.txt one for one."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray
from ray import tune
from ray.tune.schedulers import PopulationBasedTraining

from elitemon.aggregator import get_aggregator, start_aggregator
from elitemon.analytics.migration import MigrationOutcome, migration_outcomes
from elitemon.client import Client
from elitemon.collect import start_monitoring
from elitemon.config import StoreConfig
from elitemon.query import select
from elitemon.tune import MonitorCallback, _exploits
from tests.conftest import wait_for

ITERATIONS = 12


class Climber(tune.Trainable):
    """Score rises at a rate set by `lr`; the state (and iteration) survive checkpoints."""

    def setup(self, config: dict) -> None:
        self.position = 0.0

    def step(self) -> dict:
        self.position += self.config["lr"] * (1.0 - self.position) * self.config.get("shaping", 1.0)
        if self.iteration + 1 == ITERATIONS and "hold_until_sampled_by" in self.config:
            self._hold_until_sampled(self.config["hold_until_sampled_by"])
        return {"score": self.position, "episodes_per_s": 100.0 + self.iteration}  # Tune adds pid, node_ip

    def _hold_until_sampled(self, aggregator_name: str) -> None:
        """Keep this process alive until a node monitor has sampled it as this trial's trainer.

        A short run can end before its first result (which carries the pid) has travelled from the
        callback to the aggregator and on to the node monitor's next check-in; the trial's end then
        forgets the mapping before any sample is taken.
        """
        client = Client(get_aggregator(name=aggregator_name))
        wait_for(
            lambda: client.latest(kind="agent", metric="process_rss_bytes", source=self.trial_id).num_rows > 0,
            timeout_s=60,
            what=f"a sample of trial {self.trial_id}'s process",
            poll_s=0.1,  # four trainers share two cores with the monitor and the aggregator they wait on
        )

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        Path(checkpoint_dir, "state.json").write_text(json.dumps({"position": self.position}))

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        self.position = json.loads(Path(checkpoint_dir, "state.json").read_text())["position"]

    def reset_config(self, new_config: dict) -> bool:
        self.config = new_config
        return True


class ResultLog(tune.Callback):
    """Tune's own account of the results it delivered: the reference the stored samples must match."""

    def __init__(self) -> None:
        self.scores: list[tuple[str, int, float]] = []

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        self.scores.append((trial.trial_id, result["training_iteration"], result["score"]))


def run(
    tmp_path: Path, name: str, scheduler, param_space: dict, aggregator_name: str, *, monitor_nodes: bool = False
) -> tuple[Path, object, list[tuple[str, int, float]]]:
    # Started (and held) here so that it outlives the run: Ray ends a non-detached actor when its
    # creator's handle goes, and one the callback starts ends with the callback.
    handle = start_aggregator(StoreConfig(data_dir=tmp_path / "data"), name=aggregator_name)
    if monitor_nodes:
        # Running before the run starts, as after `elitemon start`: on a cold machine a monitor's
        # worker process can take longer to start than this whole short run lasts. The callback
        # finds this aggregator monitoring its nodes already.
        start_monitoring(sample_interval_s=0.2, checkin_interval_s=0.2, aggregator_name=aggregator_name)
        wait_for(
            lambda: any(n["last_heartbeat"] for n in ray.get(handle.monitored_nodes.remote()).values()),
            timeout_s=120,
            what="the node monitor's first heartbeat",
        )
    log = ResultLog()
    tuner = tune.Tuner(
        tune.with_resources(Climber, {"cpu": 0.25}),
        param_space=param_space,
        tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=4, reuse_actors=True),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(tmp_path / "ray_results"),
            stop={"training_iteration": ITERATIONS},
            callbacks=[
                log,
                MonitorCallback(
                    aggregator_name=aggregator_name,
                    data_dir=str(tmp_path / "data"),
                    monitor_nodes=monitor_nodes,
                    sample_interval_s=0.2,
                ),
            ],
            verbose=0,
        ),
    )
    results = tuner.fit()
    if monitor_nodes:
        assert ray.get(handle.stop_monitoring.remote())
    assert not results.errors
    assert log.scores, "the reference callback saw the results"
    return tmp_path / "ray_results" / name, handle, log.scores


def pbt_global_lines(experiment: Path) -> list[tuple]:
    lines = (experiment / "pbt_global.txt").read_text().splitlines()
    return [tuple(json.dumps(field, sort_keys=True) for field in json.loads(line)) for line in lines]


def captured(client: Client) -> list[tuple]:
    events = client.events(type="exploit").to_pylist()
    records = []
    for event in events:
        p = json.loads(event["payload"])
        fields = [
            p["target_tag"],
            p["source_tag"],
            p["target_generation"],
            p["source_last_generation"],  # Tune logs the source's newest result; the restore is older
            p["source_config"],
            p["new_config"],
        ]
        records.append(tuple(json.dumps(field, sort_keys=True) for field in fields))
    return records


def check_run(experiment: Path, handle: object, reported: list[tuple[str, int, float]]) -> Client:
    client = Client(handle)
    expected = pbt_global_lines(experiment)
    assert expected, "the run should have exploited at least once"
    assert sorted(captured(client)) == sorted(expected)
    exploits = client.events(type="exploit").to_pylist()
    for event in exploits:
        payload = json.loads(event["payload"])
        assert event["agent"] != event["source_agent"] and event["node"] and event["source_node"]
        assert set(payload["operations"]) <= set(payload["new_config"])
        # Async PBT exploits on the result that reached the perturbation point, which Tune has not
        # yet recorded on the trial: its log (pbt_global.txt) names the iteration before.
        assert event["generation"] == payload["trigger_generation"] == payload["target_generation"] + 1
        for param, operation in payload["operations"].items():
            if operation.startswith("* "):  # PBT's perturbation: the source's value times the factor
                factor = float(operation[2:])
                assert payload["new_config"][param] == pytest.approx(payload["source_config"][param] * factor)
    # Each migration ends at the trial's first result after the restore: one step past the
    # checkpoint restored (`source_generation`), on the trial's node then. Every exploit ends so,
    # once (Tune stops a trial at its final result without asking the scheduler: no exploit there).
    completed = client.events(type="migration_completed").to_pylist()
    unmatched = [(e["agent"], e["source_agent"], json.loads(e["payload"])["source_generation"] + 1) for e in exploits]
    for done in completed:
        payload = json.loads(done["payload"])
        unmatched.remove((done["agent"], payload["source"], done["generation"]))  # ValueError: no such exploit
        assert payload["latency_s"] > 0 and done["node"]
    assert unmatched == [], f"exploits without their migration's end: {unmatched}"
    # ... and in the order the analytics read them: each end after its exploit, before the next.
    outcomes = migration_outcomes(client.events(as_pandas=True))
    assert list(outcomes["outcome"]) == [MigrationOutcome.COMPLETED] * len(exploits)
    scores = client.samples(metric="score")
    stored = zip(*(scores.column(c).to_pylist() for c in ("source", "generation", "value")), strict=True)
    assert sorted(stored) == sorted(reported), "one score sample per result (exploited trials repeat iterations)"
    final = client.latest(metric="score").column("generation").to_pylist()
    assert final == [ITERATIONS] * 4
    assert client.events(type="trial_complete").num_rows == 4
    assert set(client.configs().column("param").to_pylist()) >= {"lr"}
    return client


def test_pbt_exploits_match_pbt_global_txt(ray_session, tmp_path: Path, aggregator_name: str) -> None:
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration",
        metric="score",
        mode="max",
        perturbation_interval=2,
        resample_probability=0.5,
        quantile_fraction=0.5,
        hyperparam_mutations={"lr": tune.uniform(0.01, 0.5), "shaping": [0.25, 0.5, 1.0]},
    )
    space = {
        "lr": tune.uniform(0.01, 0.5),
        "shaping": tune.choice([0.25, 0.5, 1.0]),
        "hold_until_sampled_by": aggregator_name,
    }
    experiment, handle, reported = run(tmp_path, "pbt", scheduler, space, aggregator_name, monitor_nodes=True)
    client = check_run(experiment, handle, reported)
    assert client.latest(kind="node", metric="heartbeat").num_rows == 1, "the callback started node monitoring"
    trials = set(client.latest(metric="score").column("source").to_pylist())
    trainers = client.samples(kind="agent", metric="process_rss_bytes")
    assert trainers.num_rows > 0, "trainer processes were mapped to their trials"
    assert set(trainers.column("source").to_pylist()) <= trials
    operations = [json.loads(e["payload"])["operations"] for e in client.events(type="exploit").to_pylist()]
    assert any(operations), "explore operations are recorded"
    ray.kill(handle, no_restart=True)


def test_pb2_exploits_match_pbt_global_txt_even_past_a_failing_listener(
    ray_session, tmp_path: Path, aggregator_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    from ray.tune.schedulers.pb2 import PB2

    scheduler = PB2(
        time_attr="training_iteration",
        metric="score",
        mode="max",
        # At 1, the first result after a restore can trigger the next exploit: it must end the
        # earlier migration, not the one it triggers.
        perturbation_interval=1,
        quantile_fraction=0.5,
        hyperparam_bounds={"lr": [0.01, 0.5]},
    )
    failed: list[str] = []

    def failing_listener(exploit: _exploits.Exploit) -> None:
        failed.append(exploit.target)
        raise RuntimeError("a listener that fails")

    _exploits.add_listener(failing_listener)  # before the callback's own: it must still run, and the trials too
    try:
        with caplog.at_level(logging.ERROR, logger=_exploits.__name__):
            experiment, handle, reported = run(
                tmp_path, "pb2", scheduler, {"lr": tune.uniform(0.01, 0.5)}, aggregator_name
            )
    finally:
        _exploits.remove_listener(failing_listener)
    client = check_run(experiment, handle, reported)
    assert len(failed) == len(pbt_global_lines(experiment))
    assert sum("training goes on" in r.getMessage() for r in caplog.records) == len(failed)
    for event in client.events(type="exploit").to_pylist():
        lr = json.loads(event["payload"])["new_config"]["lr"]
        assert 0.01 - 1e-6 <= lr <= 0.5 + 1e-6, "PB2 stays inside its bounds (it rounds through float32)"
    ray.kill(handle, no_restart=True)


def test_an_exploit_that_could_not_be_recorded_awaits_no_migration(aggregator_handle, aggregator_name: str) -> None:
    """Were the target marked migrating before its exploit was recorded, a failed record would leave
    a migration_completed with no exploit before it."""
    callback = MonitorCallback(aggregator_name=aggregator_name, monitor_nodes=False)
    callback.setup()
    trial = SimpleNamespace(trial_id="t1", last_result={})  # what the hooks read of a Tune Trial
    unplaceable = _exploits.Exploit(
        target="t1", source="t2", target_tag="1_lr=0.1", source_tag="2_lr=0.2", target_node=None,
        source_node=None, target_iteration=-1, source_iteration=3, source_last_iteration=3, trigger_iteration=4,
        trigger_delivered=False, trigger_since_restore=3, trigger_node=None,
        old_config={}, source_config={}, new_config={}, operations={},
    )  # fmt: skip
    try:
        with pytest.raises(ValueError, match="generation"):
            callback._on_exploit(unplaceable)
        callback.on_trial_result(0, [], trial, {"training_iteration": 5, "iterations_since_restore": 1})
    finally:
        callback.on_experiment_end([])
    events = Client(aggregator_handle).events(as_pandas=True)
    assert list(events["type"]) == [], "an event was recorded for an exploit that was refused"
    assert Client(aggregator_handle).samples(source="t1").num_rows > 0  # the result itself was kept


def _exploit(target: str, source: str, *, source_iteration: int, trigger: int, since_restore: int, **rest):
    fields = dict(
        target=target, source=source, target_tag=target, source_tag=source, target_node="n1", source_node="n2",
        target_iteration=trigger - 1, source_iteration=source_iteration, source_last_iteration=source_iteration,
        trigger_iteration=trigger, trigger_delivered=False, trigger_since_restore=since_restore, trigger_node="n1",
        old_config={}, source_config={}, new_config={}, operations={},
    )  # fmt: skip
    return _exploits.Exploit(**{**fields, **rest})


def test_a_migration_ends_at_the_first_result_after_its_restore_not_at_its_trigger(tmp_path: Path) -> None:
    """In Tune's order (the scheduler, then callbacks). With perturbation_interval=1 the first result
    after a restore can trigger the next exploit: it ended that new migration at once (latency ~0),
    and left the earlier one pending. With synch=True, the trigger reached the callbacks earlier."""
    from elitemon.producer import Producer, StoreSink
    from elitemon.reporting import Reporter
    from elitemon.store import Store

    store = Store(StoreConfig(data_dir=tmp_path / "data"))
    callback = MonitorCallback(monitor_nodes=False)
    callback._reporter = Reporter(Producer(StoreSink(store)), node="driver")
    trial = SimpleNamespace(trial_id="a", last_result={})

    def result(iteration: int, since_restore: int, node: str = "n1") -> None:
        reported = {"training_iteration": iteration, "iterations_since_restore": since_restore, "node_ip": node}
        callback.on_trial_result(0, [], trial, {**reported, "score": 1.0})
        trial.last_result = {"node_ip": node}

    result(2, 2)
    callback._on_exploit(_exploit("a", "b", source_iteration=3, trigger=3, since_restore=3))
    result(3, 3)  # the trigger itself: no end
    callback._on_exploit(_exploit("a", "c", source_iteration=4, trigger=4, since_restore=1, trigger_node="n3"))
    result(4, 1, node="n3")  # first after the restore from b, and the trigger of the copy from c
    result(5, 1, node="n3")  # first after the restore from c
    callback._on_exploit(_exploit("a", "b", source_iteration=6, trigger=5, since_restore=1, trigger_delivered=True))
    result(7, 1, node="n4")  # synch=True: the trigger (5) came before the barrier's exploit
    assert callback.producer.flush(timeout=10)

    events = store.scan(select("events")).to_pandas().sort_values("ts", kind="stable")  # as queries give them
    shown = [
        (kind, generation, json.loads(payload)["source"] if kind != "exploit" else source, node)
        for kind, generation, payload, source, node in zip(
            events["type"], events["generation"], events["payload"], events["source_agent"], events["node"], strict=True
        )
    ]
    assert shown == [
        ("exploit", 3, "b", "n1"),
        ("migration_completed", 4, "b", "n3"),  # on the node it restored to, before the next exploit
        ("exploit", 4, "c", "n1"),
        ("migration_completed", 5, "c", "n3"),
        ("exploit", 5, "b", "n1"),
        ("migration_completed", 7, "b", "n4"),
    ]
    assert list(migration_outcomes(events)["outcome"]) == [MigrationOutcome.COMPLETED] * 3
    store.close()
