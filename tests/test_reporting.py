"""elitemon.report() / report_exploit(): rows land in the store with the right shape."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import ray

import elitemon
from elitemon.aggregator import start_aggregator
from elitemon.analytics.migration import exploits
from elitemon.client import Client
from elitemon.config import StoreConfig
from elitemon.producer import Producer, StoreSink
from elitemon.query import select
from elitemon.reporting import Reporter
from elitemon.store import Store


def test_report_writes_numeric_metrics_and_the_config(tmp_path: Path) -> None:
    store = Store(StoreConfig(data_dir=tmp_path))
    reporter = Reporter(Producer(StoreSink(store)), node="10.0.0.9")
    accepted = reporter.report(
        "agent-3",
        7,
        {
            "return": 12.5,
            "episodes": 40,
            "done": True,
            "note": "text",
            "bad": float("nan"),
            "env_runners": {"episode_return_mean": 5.0, "module": {"loss": 0.25, "name": "x"}},
            "phase": np.complex64(1 + 2j),  # not a real number: skipped (float() of it raised TypeError)
            "tokens": Decimal("2.5"),
        },
        config={"lr": 0.01, "optimizer": "adam"},
    )
    assert accepted == 5  # bools, strings and NaN are not samples; nested results are, named as Tune names them
    assert reporter.producer.flush(timeout=10)
    samples = store.scan(select("samples")).to_pylist()
    assert {(r["source"], r["generation"], r["metric"], r["value"], r["node"]) for r in samples} == {
        ("agent-3", 7, "return", 12.5, "10.0.0.9"),
        ("agent-3", 7, "episodes", 40.0, "10.0.0.9"),
        ("agent-3", 7, "env_runners/episode_return_mean", 5.0, "10.0.0.9"),
        ("agent-3", 7, "env_runners/module/loss", 0.25, "10.0.0.9"),
        ("agent-3", 7, "tokens", 2.5, "10.0.0.9"),
    }
    configs = {r["param"]: (r["value"], r["text"]) for r in store.scan(select("configs")).to_pylist()}
    assert configs == {"lr": (0.01, "0.01"), "optimizer": (None, "adam")}
    store.close()


def test_report_exploit_is_an_event_with_both_agents_and_the_configs(tmp_path: Path) -> None:
    store = Store(StoreConfig(data_dir=tmp_path))
    reporter = Reporter(Producer(StoreSink(store)), node="10.0.0.9")
    reporter.report_exploit(
        "agent-1",
        "agent-4",
        generation=10,
        source_generation=12,
        source_node="10.0.0.2",
        old_config={"lr": 0.1},
        source_config={"lr": 0.01},
        new_config={"lr": 0.012},
        operations={"lr": "* 1.2"},
    )
    assert reporter.producer.flush(timeout=10)
    [event] = store.scan(select("events", type="exploit")).to_pylist()
    assert (event["agent"], event["source_agent"], event["node"], event["source_node"]) == (
        "agent-1",
        "agent-4",
        "10.0.0.9",
        "10.0.0.2",
    )
    payload = json.loads(event["payload"])
    assert payload["operations"] == {"lr": "* 1.2"} and payload["new_config"] == {"lr": 0.012}
    assert payload["source_generation"] == 12
    store.close()


def test_report_exploit_refuses_a_generation_that_is_not_whole_and_writes_nothing(tmp_path: Path) -> None:
    store = Store(StoreConfig(data_dir=tmp_path))
    reporter = Reporter(Producer(StoreSink(store)), node="10.0.0.9")
    for name, bad in (("source_generation", 2.5), ("generation", "10"), ("trigger_generation", -1)):
        with pytest.raises(ValueError, match=f"{name} must be a whole number >= 0 or None, but got {bad!r}"):
            reporter.report_exploit("agent-1", "agent-4", **{name: bad})
    reporter.report_exploit("agent-1", "agent-4", generation=np.int64(3), source_generation=np.int64(2))
    reporter.report_exploit("agent-2", "agent-4", generation=4.0, source_generation=None)
    assert reporter.producer.flush(timeout=10)
    events = store.scan(select("events", type="exploit")).to_pandas()
    payloads = [json.loads(text) for text in events["payload"]]
    assert [(p["target_generation"], p["source_generation"]) for p in payloads] == [(3, 2), (4, None)]  # not "3"
    table = exploits(events)
    assert table["generation"].tolist() == [3, 4]
    assert table["source_generation"].tolist()[0] == 2 and table["source_generation"].isna().tolist() == [False, True]
    store.close()


@ray.remote(num_cpus=0.25)
class _Agent:
    def train(self, agent_id: str, generations: int) -> bool:
        for generation in range(generations):
            elitemon.report(agent_id, generation, {"score": float(generation)}, config={"lr": 0.1})
        return elitemon.flush(timeout=30)


def test_report_from_ray_actors_reaches_the_default_aggregator(ray_session, tmp_path: Path) -> None:
    handle = start_aggregator(StoreConfig(data_dir=tmp_path / "data"))  # the default name
    try:
        agents = [_Agent.remote() for _ in range(3)]
        assert all(ray.get([a.train.remote(f"agent-{i}", 20) for i, a in enumerate(agents)], timeout=120))
        scores = Client(handle).samples(metric="score")
        assert scores.num_rows == 60
        assert sorted(set(scores.column("source").to_pylist())) == ["agent-0", "agent-1", "agent-2"]
        assert Client(handle).configs(param="lr").num_rows == 60
    finally:
        ray.kill(handle, no_restart=True)
