"""A tabular Q-learning agent on Gymnasium's toy-text environments, and its Tune Trainable.

The agent is plain numpy (no Ray), so it can be tested in milliseconds; `QLearningTrainable` wraps
it for Tune. Four hyperparameters, all of which PBT may change between iterations:

- `epsilon`: the chance of a random action while training (evaluation is greedy);
- `lr`: the Q-learning step size;
- `discount`: how much future reward counts;
- `reward_shaping`: the weight of a potential-based bonus for moving towards the current sub-goal
  (Ng, Harada and Russell, 1999: it speeds learning and leaves the optimal policy unchanged).

The score that PBT ranks by is the greedy policy's mean return on the environment's own, unshaped
rewards, so shaping can only help through what the agent learns, never by inflating the score.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from ray import tune

#: The environments the demo knows a shaping potential for.
ENVIRONMENTS = ("Taxi-v4", "FrozenLake-v1", "FrozenLake8x8-v1")
HYPERPARAMETERS = ("epsilon", "lr", "discount", "reward_shaping")
#: The range each hyperparameter must stay in; PBT's explore multiplies by 0.8 or 1.2 and would
#: otherwise push epsilon, lr or discount past 1.
BOUNDS = {"epsilon": (0.0, 1.0), "lr": (1e-4, 1.0), "discount": (0.0, 0.999), "reward_shaping": (0.0, 10.0)}


@dataclass(frozen=True)
class Hyperparameters:
    epsilon: float
    lr: float
    discount: float
    reward_shaping: float

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Hyperparameters:
        values = {name: float(config[name]) for name in HYPERPARAMETERS}
        if not 0.0 <= values["epsilon"] <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], but got {values['epsilon']=}.")
        if not 0.0 < values["lr"] <= 1.0:
            raise ValueError(f"lr must be in (0, 1], but got {values['lr']=}.")
        if not 0.0 <= values["discount"] <= 1.0:
            raise ValueError(f"discount must be in [0, 1], but got {values['discount']=}.")
        return cls(**values)


@dataclass(frozen=True)
class Evaluation:
    """Greedy episodes: mean unshaped return, and the fraction that reached the goal."""

    mean_return: float
    success_rate: float


def reward_threshold(env_id: str) -> float:
    """Gymnasium's own bar for 'solved' (Taxi: 8; FrozenLake: 0.70, 8x8: 0.85): the demo's default target."""
    return float(gymnasium.spec(env_id).reward_threshold)  # type: ignore[arg-type]


def clip(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with each hyperparameter moved into its BOUNDS (PBT's `custom_explore_fn`)."""
    return {
        key: min(max(value, BOUNDS[key][0]), BOUNDS[key][1]) if key in BOUNDS else value
        for key, value in config.items()
    }


class QLearner:
    """Q-learning with an epsilon-greedy behaviour policy over one Gymnasium environment."""

    def __init__(self, env_id: str, *, seed: int) -> None:
        if env_id not in ENVIRONMENTS:
            raise ValueError(f"env_id must be one of {ENVIRONMENTS}, but got {env_id=}.")
        self.env_id = env_id
        self._env = gymnasium.make(env_id)
        self._env.reset(seed=seed)
        self._rng = np.random.default_rng(seed)
        self._max_steps: int = self._env.spec.max_episode_steps  # type: ignore[union-attr]
        self._potential = potential(self._env.unwrapped)
        shape = (self._env.observation_space.n, self._env.action_space.n)  # type: ignore[attr-defined]
        # Not zeros: argmax over a row of ties always picks action 0, which on FrozenLake walks into
        # the wall until epsilon happens to lead to the goal. Tiny random values break ties per state.
        self.q = self._rng.uniform(0.0, 1e-6, size=shape)
        self.episodes = 0
        self.steps = 0

    def train(self, hp: Hyperparameters, episodes: int) -> None:
        """Run `episodes` episodes, updating Q after every step."""
        q, phi, actions = self.q, self._potential, self.q.shape[1]
        for _ in range(episodes):
            state, _ = self._env.reset()
            explore = self._rng.random(self._max_steps) < hp.epsilon  # drawn per episode: cheaper than per step
            random_actions = self._rng.integers(actions, size=self._max_steps)
            for step in range(self._max_steps):
                action = int(random_actions[step]) if explore[step] else int(q[state].argmax())
                following, reward, terminated, truncated, _ = self._env.step(action)
                shaped = reward + hp.reward_shaping * (
                    (0.0 if terminated else hp.discount * phi[following]) - phi[state]
                )
                target = shaped if terminated else shaped + hp.discount * q[following].max()
                q[state, action] += hp.lr * (target - q[state, action])
                state = following
                if terminated or truncated:
                    break
            self.steps += step + 1
        self.episodes += episodes

    def evaluate(self, episodes: int) -> Evaluation:
        """Greedy episodes on unshaped rewards; Q is not changed."""
        returns, successes = [], 0
        for _ in range(episodes):
            state, _ = self._env.reset()
            total, terminated, truncated = 0.0, False, False
            while not (terminated or truncated):
                state, reward, terminated, truncated, _ = self._env.step(int(self.q[state].argmax()))
                total += float(reward)
            returns.append(total)
            successes += int(terminated and reward > 0)  # FrozenLake's holes end with 0, Taxi's goal with +20
        return Evaluation(mean_return=float(np.mean(returns)), success_rate=successes / episodes)

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps: the Q-table and the counters (not the random stream: a copy that
        took its source's stream would retrace its source's exploration)."""
        return {"env_id": self.env_id, "q": self.q.tolist(), "episodes": self.episodes, "steps": self.steps}

    def load(self, state: dict[str, Any]) -> None:
        if state["env_id"] != self.env_id:
            raise ValueError(f"a checkpoint of {state['env_id']} cannot be loaded into {self.env_id}")
        self.q = np.asarray(state["q"], dtype=np.float64)
        self.episodes = int(state["episodes"])
        self.steps = int(state["steps"])


def potential(env: Any) -> np.ndarray:
    """Φ(state) = minus the Manhattan distance (walls ignored) still to cover to finish the task."""
    states = env.observation_space.n
    if hasattr(env, "locs"):  # Taxi: to the passenger, then on to the destination
        phi = np.empty(states)
        for s in range(states):
            row, col, passenger, destination = env.decode(s)
            dest = env.locs[destination]
            if passenger == 4:  # in the taxi
                phi[s] = -(abs(row - dest[0]) + abs(col - dest[1]))
            else:
                pick = env.locs[passenger]
                phi[s] = -(abs(row - pick[0]) + abs(col - pick[1]) + abs(pick[0] - dest[0]) + abs(pick[1] - dest[1]))
        return phi
    goal_row, goal_col = (int(v[0]) for v in np.nonzero(env.desc == b"G"))  # FrozenLake: to the goal tile
    rows, cols = np.divmod(np.arange(states), env.ncol)
    return -(np.abs(rows - goal_row) + np.abs(cols - goal_col)).astype(np.float64)


@dataclass(frozen=True)
class AgentSettings:
    """What every agent of a run shares; passed with `tune.with_parameters`, so that `config` (and so
    elitemon's `configs` table) holds only what differs between agents."""

    env_id: str
    episodes_per_iteration: int
    eval_episodes: int
    target: float  # the mean return that counts as achieved


class QLearningTrainable(tune.Trainable):
    """One PBT agent. An iteration trains `episodes_per_iteration` episodes, then evaluates greedily.

    Reports `episodes_per_s` (training throughput), `mean_return` and `success_rate` (greedy),
    `target_achieved` (1 while `mean_return` is at or above the target), and the episode and step
    counters. Its checkpoint holds the Q-table, the counters and the iteration, so a restored agent
    (an exploit, or a restart) goes on from where its source was.
    """

    def setup(self, config: dict[str, Any], settings: AgentSettings) -> None:
        self._settings = settings
        self._start(config)

    def _start(self, config: dict[str, Any]) -> None:
        self._hp = Hyperparameters.from_config(config)
        self._agent = QLearner(self._settings.env_id, seed=int(config["seed"]))

    def step(self) -> dict[str, Any]:
        episodes = self._settings.episodes_per_iteration
        started = time.perf_counter()
        self._agent.train(self._hp, episodes)
        elapsed = time.perf_counter() - started
        evaluation = self._agent.evaluate(self._settings.eval_episodes)
        return {
            "episodes_per_s": episodes / elapsed,
            "mean_return": evaluation.mean_return,
            "success_rate": evaluation.success_rate,
            "target_achieved": float(evaluation.mean_return >= self._settings.target),
            "episodes_total": self._agent.episodes,
            "steps_total": self._agent.steps,
        }

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        state = {**self._agent.state(), "iteration": self.iteration}
        Path(checkpoint_dir, "agent.json").write_text(json.dumps(state))

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        state = json.loads(Path(checkpoint_dir, "agent.json").read_text())
        self._agent.load(state)
        # Tune restores the iteration from the checkpoint's result when it has one; a checkpoint
        # restored by path has none, and the agent must still resume at its own iteration.
        self._iteration = int(state["iteration"])

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """A reused actor: new hyperparameters and a fresh agent; for an exploit Tune then calls
        `load_checkpoint`, which replaces the fresh Q-table with the source's."""
        self._start(new_config)
        self.config = new_config
        return True
