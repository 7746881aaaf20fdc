"""The demo: its Q-learning agent (without Ray), the agent's checkpoints, and a small real PBT run
whose population improves and whose data can be queried afterwards, also from a reopened store."""

from __future__ import annotations

from pathlib import Path

import gymnasium
import numpy as np
import pyarrow.compute as pc
import pytest
import ray
from ray import tune

from elitemon.aggregator import start_aggregator
from elitemon.cli import main
from elitemon.client import Client
from elitemon.config import StoreConfig
from elitemon.demo import (
    AgentSettings,
    DemoSettings,
    Hyperparameters,
    QLearner,
    QLearningTrainable,
    best_by_generation,
    run_demo,
)
from elitemon.demo._qlearning import BOUNDS, clip, potential

HYPERPARAMETERS = {"epsilon", "lr", "discount", "reward_shaping"}


def random_policy_return(env_id: str, episodes: int, seed: int) -> float:
    env = gymnasium.make(env_id)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    returns = []
    for _ in range(episodes):
        env.reset()
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total, done = total + float(reward), terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


# ------------------------------------------------------------------------ the agent, without Ray


@pytest.mark.parametrize(
    ("env_id", "hp", "episodes", "solved"),
    [
        ("Taxi-v4", Hyperparameters(epsilon=0.1, lr=0.5, discount=0.95, reward_shaping=0.5), 1000, 0.0),
        ("FrozenLake-v1", Hyperparameters(epsilon=0.3, lr=0.05, discount=0.99, reward_shaping=0.0), 5000, 0.5),
    ],
)
def test_q_learning_beats_a_random_policy(env_id: str, hp: Hyperparameters, episodes: int, solved: float) -> None:
    agent = QLearner(env_id, seed=0)
    untrained = agent.evaluate(100)
    agent.train(hp, episodes)
    trained = agent.evaluate(100)
    assert trained.mean_return > solved > random_policy_return(env_id, 100, seed=0)
    assert trained.mean_return > untrained.mean_return
    assert trained.success_rate > 0.5
    assert agent.episodes == episodes and agent.steps >= episodes


def test_shaping_potential_is_zero_only_when_nothing_is_left_to_do() -> None:
    lake = gymnasium.make("FrozenLake-v1").unwrapped
    phi = potential(lake)
    assert phi[0] == -6 and phi[15] == 0 and phi.max() == 0  # start and goal of the 4x4 map
    taxi = gymnasium.make("Taxi-v4").unwrapped
    phi = potential(taxi)
    at_goal_with_passenger = taxi.encode(4, 3, 4, 3)  # in the taxi, at destination 3 = (4, 3)
    assert phi[at_goal_with_passenger] == 0 and phi.max() == 0
    assert phi[taxi.encode(0, 0, 0, 3)] == -(0 + 4 + 3)  # at the passenger, 7 cells from the destination


def test_hyperparameters_are_checked_and_explored_values_clipped() -> None:
    with pytest.raises(ValueError, match="discount"):
        Hyperparameters.from_config({"epsilon": 0.1, "lr": 0.5, "discount": 1.2, "reward_shaping": 0.0})
    explored = clip({"epsilon": 1.3, "lr": 1.2, "discount": 1.08, "reward_shaping": -0.1, "seed": 7})
    assert explored == {"epsilon": 1.0, "lr": 1.0, "discount": BOUNDS["discount"][1], "reward_shaping": 0.0, "seed": 7}
    Hyperparameters.from_config(explored)
    with pytest.raises(ValueError, match="agents"):
        DemoSettings(agents=1)
    with pytest.raises(ValueError, match="env_id"):
        DemoSettings(env_id="CartPole-v1")
    with pytest.raises(ValueError, match="target must be a finite number"):
        DemoSettings(target=float("nan"))
    with pytest.raises(ValueError, match="seed must be >= 0"):
        DemoSettings(seed=-1)


def test_cli_demo_rejects_bad_settings_before_starting_ray(capsys) -> None:
    assert main(["demo", "--agents", "1"]) == 2
    assert "at least 2 agents" in capsys.readouterr().err
    assert main(["demo", "--env", "CartPole-v1"]) == 2
    assert "env_id" in capsys.readouterr().err


# ------------------------------------------------------------------------ checkpoints, on Ray


def test_checkpoint_round_trip_resumes_at_its_iteration(ray_session, tmp_path: Path) -> None:
    settings = AgentSettings("Taxi-v4", episodes_per_iteration=20, eval_episodes=5, target=8.0)
    trainable = tune.with_parameters(QLearningTrainable, settings=settings)
    config = {"epsilon": 0.1, "lr": 0.5, "discount": 0.95, "reward_shaping": 0.5, "seed": 3}
    source = trainable(config=config)
    for _ in range(3):
        source.train()
    source.save(str(tmp_path / "checkpoint"))
    saved_q = source._agent.q.copy()

    # A reused actor, as PBT's exploit uses it: new hyperparameters, then the source's checkpoint
    # restored by path (so without Tune's saved result, which would also carry the iteration).
    target = trainable(config={**config, "seed": 4})
    target.train()
    assert target.reset({**config, "lr": 0.25, "seed": 4})
    assert target.iteration == 0 and target._agent.episodes == 0, "reset starts a fresh agent"
    target.restore(str(tmp_path / "checkpoint"))
    assert target.iteration == 3
    assert np.array_equal(target._agent.q, saved_q)
    assert target._agent.episodes == 60 and target._agent.steps == source._agent.steps
    result = target.train()
    assert result["training_iteration"] == 4 and result["episodes_total"] == 80
    assert target._hp.lr == 0.25, "the new hyperparameters stay"
    for metric in ("episodes_per_s", "mean_return", "success_rate", "target_achieved"):
        assert np.isfinite(result[metric])
    source.stop()
    target.stop()


# ------------------------------------------------------------------------ a small real demo run

AGENTS, ITERATIONS, EPISODES = 4, 20, 100


def test_demo_population_improves_and_its_data_is_queryable(ray_session, tmp_path: Path, aggregator_name: str) -> None:
    # Held here, so that the store outlives the run and the test can query it (see test_callback).
    handle = start_aggregator(StoreConfig(data_dir=tmp_path / "data"), name=aggregator_name)
    lines: list[str] = []
    settings = DemoSettings(
        agents=AGENTS,
        iterations=ITERATIONS,
        episodes_per_iteration=EPISODES,
        perturbation_interval=4,
        cpus_per_agent=0.25,
        progress_interval_s=1.0,
        sample_interval_s=0.2,
    )
    summary = run_demo(
        settings,
        storage_path=tmp_path / "tune",
        aggregator_name=aggregator_name,
        data_dir=tmp_path / "data",
        out=lines.append,
    )
    client = Client(handle, name=aggregator_name)
    agents = summary.agents
    assert len(agents) == AGENTS

    # PBT improved the population: the best score of the last generations beats the first ones'.
    scores = client.samples(metric="mean_return", source=agents)
    curve = best_by_generation(scores)
    assert curve == summary.best_by_generation
    early = max(curve[g] for g in (1, 2, 3))
    late = max(curve[g] for g in (ITERATIONS - 2, ITERATIONS - 1, ITERATIONS))
    assert late > early + 50, f"best score did not rise: {curve}"

    # Exploits happened and were recorded; the summary counts the same ones.
    exploits = client.events(type="exploit", agent=agents)
    assert exploits.num_rows == summary.exploits >= 1
    assert set(exploits.column("source_agent").to_pylist()) <= set(agents)

    # Every agent's four demo metrics are stored, up to the last iteration.
    latest = client.latest(
        source=agents, metric=["episodes_per_s", "mean_return", "success_rate", "target_achieved"]
    ).to_pylist()
    assert len(latest) == 4 * AGENTS
    assert {row["generation"] for row in latest} == {ITERATIONS}
    assert all(row["value"] > 0 for row in latest if row["metric"] == "episodes_per_s")

    # The summary agrees with the store.
    final = {row["source"]: row["value"] for row in latest if row["metric"] == "mean_return"}
    assert summary.best_score == max(final.values()) == final[summary.best_agent]
    assert summary.agents_at_target == sum(v >= summary.target for v in final.values())
    assert summary.target == 8.0  # Gymnasium's reward_threshold for Taxi
    configs = client.configs(agent=summary.best_agent).to_pylist()
    assert set(summary.best_config) == HYPERPARAMETERS
    assert all(summary.best_config[p] == [r["value"] for r in configs if r["param"] == p][-1] for p in HYPERPARAMETERS)
    reached = client.samples(metric="target_achieved", source=agents).filter(pc.field("value") >= 1.0)
    if summary.time_to_target_s is None:
        assert reached.num_rows == 0
    else:
        first = pc.min(reached.column("ts")).as_py().timestamp()
        assert summary.time_to_target_s == pytest.approx(first - summary.started_at)
    # Episode counters survive exploits: each agent ends with exactly its iterations' episodes.
    assert summary.episodes == AGENTS * ITERATIONS * EPISODES
    assert summary.best_agent in summary.render()

    # It printed progress as it ran, and the node monitors ran beside it.
    assert any(line.startswith("[") and "exploits" in line for line in lines), lines
    assert client.latest(kind="node", metric="heartbeat").num_rows >= 1

    # The data stays in the data directory: a new aggregator over it answers the same.
    ray.kill(handle, no_restart=True)
    second = start_aggregator(StoreConfig(data_dir=tmp_path / "data"), name=f"{aggregator_name}-reopened")
    reopened = Client(second, name=f"{aggregator_name}-reopened")
    assert reopened.samples(metric="mean_return", source=agents).num_rows == scores.num_rows  # recovered on start
    assert reopened.events(type="exploit", agent=agents).num_rows == summary.exploits
    ray.kill(second, no_restart=True)


def test_the_progress_printer_pickles_while_print_is_replaced(monkeypatch, capsys) -> None:
    """Tune pickles the demo's callbacks; with `builtins.print` replaced (as Ray's tqdm or Serve
    logging do), pickling the original `print` by reference failed and the demo could not start."""
    import builtins

    from ray import cloudpickle

    from elitemon.demo._run import _Progress

    progress = _Progress(DemoSettings(), target=8.0, client=None, out=print)
    monkeypatch.setattr(builtins, "print", lambda *args, **kwargs: None)
    restored = cloudpickle.loads(cloudpickle.dumps(progress))
    monkeypatch.undo()
    restored._out("printed")
    assert capsys.readouterr().out == "printed\n"
