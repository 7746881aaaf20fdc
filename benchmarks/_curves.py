"""Score curves for the forecast evaluation: synthetic families with a known trend, and real ones.

Synthetic: every curve is `trend(generation) + noise`, where the trend is known exactly (also past the
curve's end), so a forecast of the trend can be scored without noise in the truth. Six families:

- `exponential`: a saturating exponential, A - (A - y0) exp(-g / tau);
- `power_law`: A - B (g + g0)^-c, slow to flatten;
- `sigmoid`: a plateau, then a rise to a second plateau (the rise may start after the observed part);
- `pbt_jumps`: a saturating curve plus upward steps at random generations (an exploit copying a much
  better agent, or a new best agent taking over the population's best score);
- `setbacks`: a saturating curve with drops at random generations, each recovering at its own pace
  (from quickly to hardly within the run): an explore step that made an agent worse, or a collapse.
  Real PBT agents do fall; a set without falls calibrated intervals whose lower side was too tight
  for them (on the Q-learning curves below, at half observed, a fifth of the agents ended under it);
- `noisy`: any of the above with heavy-tailed noise (Student t, 3 degrees of freedom) at a high level.

Scale and offset are random (scores may be negative, as Taxi returns are), and so is the noise level.

Real: `qlearning_pbt_curves` runs small Population-Based Training loops over the demo's tabular
Q-learning agent (`elitemon.demo._qlearning.QLearner`), without Ray or Tune: every `interval`
iterations the bottom quarter copies the Q-table and hyperparameters of a random agent of the top
quarter and perturbs each hyperparameter (x0.8 or x1.2, or a fresh draw with probability 0.25), as
Tune's PBT does. The population's best and mean score per iteration, and each agent's score (with
the jumps of its exploits), are the curves. They are real
training curves (nothing about them is made up), but from this loop, not from a Tune run. A mean or
agent curve carries its run (`Population`: every agent's scores and the generations of the
exploits) for the population-aware forecast.

A real curve's trend is exact too: the expected return of each agent's greedy policy at each
iteration, by finite-horizon policy evaluation on the environment's own transition table
(`GreedyReturn`). The scores the forecaster sees are, as in the demo, the mean return of 20 greedy
episodes, so they carry evaluation noise the trend does not; the mean curve's trend is the mean of
the agents' expected returns. The best curve's trend is the expected best *reported* score,
E[max over agents of the mean of 20 episodes] (`GreedyReturn.expected_best_score`): what the
forecaster sees and a stop condition reacts to. The best expected return would sit below it, by
up to a noise standard deviation on FrozenLake, because the maximum picks the lucky draws.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

FAMILIES = ("exponential", "power_law", "sigmoid", "pbt_jumps", "setbacks", "noisy")


@dataclass(frozen=True)
class Population:
    """The PBT run a real curve comes from: every agent's score per generation (one row per
    generation 1..T, one column per agent) and the generation of each exploit, for the
    population-aware forecast (elitemon.analytics.population_forecast)."""

    scores: np.ndarray
    exploit_generations: np.ndarray

    def scores_frame(self, generations: int) -> pd.DataFrame:
        """The `agent_scores` table of generations 1..`generations`: agent, generation, score."""
        observed = self.scores[:generations]
        agents, steps = observed.shape[1], observed.shape[0]
        return pd.DataFrame(
            {
                "agent": np.tile([f"agent{i}" for i in range(agents)], steps),
                "generation": np.repeat(np.arange(1, steps + 1), agents),
                "score": observed.ravel(),
            }
        )

    def exploit_rate(self, generations: int) -> float:
        """Exploits per agent per generation over generations 1..`generations`, as
        `population_forecast.exploit_rate` counts them."""
        exploited = int(np.count_nonzero(self.exploit_generations <= generations))
        return exploited / (self.scores.shape[1] * generations)


@dataclass(frozen=True)
class Curve:
    """One curve: its observed scores per generation 1..len(scores), and its noise-free trend.

    `trend` maps generations to the noise-free score: for synthetic curves any generation, also past
    the end; for real ones generations 1..len(scores), interpolated linearly between them. A real
    agent's or mean curve also has its `population` and `member` (the agent's name in
    `Population.scores_frame`, or "mean"); a best curve is member "best". Every real curve names
    its `run` (environment and seed): the curves of one run share its luck, so the evaluation
    resamples whole runs.
    """

    family: str
    scores: np.ndarray
    trend: Callable[[np.ndarray], np.ndarray]
    population: Population | None = None
    member: str | None = None
    run: str | None = None  # the PBT run a real curve comes from; None for a curve that is its own run


def synthetic_curves(count_per_family: int, *, seed: int) -> list[Curve]:
    """`count_per_family` curves of each family, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    return [_synthetic(family, rng) for family in FAMILIES for _ in range(count_per_family)]


def _synthetic(family: str, rng: np.random.Generator) -> Curve:
    length = int(rng.integers(40, 151))
    offset, amplitude = rng.normal(0.0, 50.0), float(np.exp(rng.uniform(np.log(0.5), np.log(200.0))))
    heavy_tailed = family == "noisy"
    shape = str(rng.choice(FAMILIES[:5])) if heavy_tailed else family
    unit_trend = _unit_trend(shape, length, rng)
    noise_level = float(np.exp(rng.uniform(np.log(0.05), np.log(0.25)))) if heavy_tailed else _quiet_noise(rng)
    generations = np.arange(1, length + 1, dtype=float)
    noise = rng.standard_t(3, size=length) / np.sqrt(3.0) if heavy_tailed else rng.normal(size=length)

    def trend(g: np.ndarray) -> np.ndarray:
        return offset + amplitude * unit_trend(np.asarray(g, dtype=float))

    scores = trend(generations) + amplitude * noise_level * noise
    return Curve(family=family, scores=scores, trend=trend)


def _quiet_noise(rng: np.random.Generator) -> float:
    """Noise as a fraction of the curve's amplitude: from nearly none to a tenth."""
    return float(np.exp(rng.uniform(np.log(0.002), np.log(0.1))))


def _unit_trend(shape: str, length: int, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """A trend from about 0 towards about 1 over `length` generations (or later); non-decreasing
    except for `setbacks`."""
    if shape == "exponential":
        tau = float(np.exp(rng.uniform(np.log(length / 12), np.log(length * 1.5))))
        return lambda g: 1.0 - np.exp(-g / tau)
    if shape == "power_law":
        shift, power = float(rng.uniform(0.5, 5.0)), float(rng.uniform(0.3, 1.5))
        return lambda g: 1.0 - ((g + shift) / (1.0 + shift)) ** -power
    if shape == "sigmoid":
        middle, width = float(rng.uniform(0.1, 0.8) * length), float(rng.uniform(0.02, 0.15) * length)
        return lambda g: 1.0 / (1.0 + np.exp(-(g - middle) / width))
    if shape == "pbt_jumps":
        base = _unit_trend(str(rng.choice(["exponential", "power_law"])), length, rng)
        at = np.sort(rng.uniform(1, length, size=rng.poisson(2.0) + 1))
        sizes = rng.uniform(0.05, 0.3, size=at.size)
        return lambda g: (base(g) + (sizes * (g[..., None] >= at)).sum(axis=-1)) / (1.0 + sizes.sum())
    if shape == "setbacks":
        base = _unit_trend(str(rng.choice(["exponential", "power_law"])), length, rng)
        at = np.sort(rng.uniform(1, length, size=rng.poisson(1.5) + 1))
        sizes = rng.uniform(0.05, 0.4, size=at.size)
        recovery = np.exp(rng.uniform(np.log(length / 20), np.log(length * 2), size=at.size))

        def setback(g: np.ndarray) -> np.ndarray:
            since = np.maximum(g[..., None] - at, 0.0)
            return (sizes * (g[..., None] >= at) * np.exp(-since / recovery)).sum(axis=-1)

        return lambda g: base(g) - setback(g)
    raise ValueError(f"unknown shape {shape!r}")


def qlearning_pbt_curves(
    *,
    env_ids: tuple[str, ...] = ("Taxi-v4", "FrozenLake-v1"),
    seeds: tuple[int, ...] = (0, 1),
    agents: int = 8,
    iterations: int = 60,
    episodes_per_iteration: int = 25,
    eval_episodes: int = 20,
    interval: int = 5,
) -> list[Curve]:
    """The best, the mean and each agent's score per iteration of one PBT run per (environment, seed).

    The runs are independent, so they run in worker processes, one per core; each run is
    reproducible from its seed alone, whichever process runs it."""
    one_run = partial(
        _pbt_run,
        agents=agents,
        iterations=iterations,
        episodes_per_iteration=episodes_per_iteration,
        eval_episodes=eval_episodes,
        interval=interval,
    )
    runs = [(env_id, seed) for env_id in env_ids for seed in seeds]
    workers = min(len(runs), os.cpu_count() or 1)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(one_run, *zip(*runs, strict=True)))
    curves = []
    for (env_id, seed), (history, expected, expected_best, exploit_generations) in zip(runs, results, strict=True):
        run = f"{env_id} seed {seed}"
        population = Population(history, exploit_generations)
        curves.append(
            Curve(f"{env_id} best", history.max(axis=1), _interpolated(expected_best), member="best", run=run)
        )
        curves.append(
            Curve(f"{env_id} mean", history.mean(axis=1), _interpolated(expected.mean(axis=1)), population, "mean", run)
        )
        curves.extend(
            Curve(f"{env_id} agent", history[:, i], _interpolated(expected[:, i]), population, f"agent{i}", run)
            for i in range(agents)
        )
    return curves


def _pbt_run(
    env_id: str, seed: int, agents: int, iterations: int, episodes_per_iteration: int, eval_episodes: int, interval: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One PBT run: every agent's score and expected return per iteration (iterations x agents), the
    expected best reported score per iteration, and the iteration of each exploit."""
    from elitemon.demo._qlearning import BOUNDS, Hyperparameters, QLearner

    greedy_return = GreedyReturn(env_id)
    rng = np.random.default_rng(seed)
    learners = [QLearner(env_id, seed=seed * 1000 + i) for i in range(agents)]
    settings = [_draw_hyperparameters(rng) for _ in range(agents)]
    draws = np.random.default_rng([seed, 1])  # the Monte Carlo of the best score's expectation
    history = np.empty((iterations, agents))
    expected = np.empty((iterations, agents))
    expected_best = np.empty(iterations)
    exploit_generations: list[int] = []
    for iteration in range(iterations):
        values = []
        for i, learner in enumerate(learners):
            learner.train(Hyperparameters(**settings[i]), episodes_per_iteration)
            history[iteration, i] = learner.evaluate(eval_episodes).mean_return
            values.append(greedy_return.values(learner.q))
            expected[iteration, i] = greedy_return.from_start(values[-1])
        expected_best[iteration] = greedy_return.expected_best_score(values, eval_episodes, draws)
        if (iteration + 1) % interval == 0:
            copied = _exploit_and_explore(history[iteration], learners, settings, rng, BOUNDS)
            exploit_generations.extend([iteration + 1] * copied)
    return history, expected, expected_best, np.array(exploit_generations)


class GreedyReturn:
    """The exact expected return of the greedy policy of a Q-table, within the episode's time limit.

    For a toy-text environment (Taxi, FrozenLake) Gymnasium exposes the full model: `P[s][a]` lists
    (probability, next state, reward, terminated). For the greedy policy pi(s) = argmax_a Q(s, a),
    ties to the first action as `QLearner.evaluate` breaks them, the expected return with k steps
    left is V_k = r_pi + C_pi V_(k-1), V_0 = 0, where r_pi(s) is the expected reward of one step and
    C_pi(s, s') the probability of moving to s' without the episode ending. The answer is
    start . V_H, H the time limit and start the distribution of the first state: what the mean
    return of infinitely many evaluation episodes would be.

    The return of one episode from a first state s is known exactly in two cases, and
    `expected_best_score` handles those: a deterministic environment (Taxi), where it is V_H(s), and
    one whose episodes return 0 or 1 (FrozenLake: the only reward is 1 on reaching the goal, which
    ends the episode), where it is 1 with probability V_H(s).
    """

    #: Monte Carlo draws of a population's evaluation in `expected_best_score`.
    BEST_SCORE_DRAWS = 4000

    def __init__(self, env_id: str) -> None:
        import gymnasium

        env = gymnasium.make(env_id)
        model = env.unwrapped
        states, actions = model.observation_space.n, model.action_space.n
        self.env_id = env_id
        self._continue = np.zeros((states, actions, states))
        self._reward = np.zeros((states, actions))
        self._deterministic, self._returns_zero_or_one = True, True
        for state in range(states):
            for action in range(actions):
                outcomes = model.P[state][action]
                self._deterministic &= len(outcomes) == 1
                for probability, following, reward, terminated in outcomes:
                    self._reward[state, action] += probability * reward
                    self._returns_zero_or_one &= reward == 0 or (reward == 1 and terminated)
                    if not terminated:
                        self._continue[state, action, following] += probability
        self._start = np.asarray(model.initial_state_distrib, dtype=float)
        self._horizon: int = env.spec.max_episode_steps  # type: ignore[union-attr]

    def __call__(self, q: np.ndarray) -> float:
        return self.from_start(self.values(q))

    def values(self, q: np.ndarray) -> np.ndarray:
        """V_H: the expected return of the greedy policy of `q` from each first state."""
        states = np.arange(q.shape[0])
        policy = q.argmax(axis=1)
        step_reward, moves = self._reward[states, policy], self._continue[states, policy]
        value = np.zeros(q.shape[0])
        for _ in range(self._horizon):
            value = step_reward + moves @ value
        return value

    def from_start(self, values: np.ndarray) -> float:
        """The expected return of an episode, over the distribution of the first state."""
        return float(self._start @ values)

    def expected_best_score(self, values: list[np.ndarray], episodes: int, rng: np.random.Generator) -> float:
        """E[max over policies of the mean return of `episodes` greedy episodes], one `values`
        (`GreedyReturn.values`) per policy: the expected best score a population reports.

        Monte Carlo over BEST_SCORE_DRAWS evaluations of the whole population (a standard error of
        1 / sqrt(4000) = 1.6% of the maximum's standard deviation). Raises ValueError for an environment whose
        episode returns are not known exactly from V (see the class docstring).
        """
        if not (self._deterministic or self._returns_zero_or_one):
            raise ValueError(
                f"{self.env_id} is neither deterministic nor returns 0 or 1 per episode: the distribution "
                "of an episode's return is not known from its expected value"
            )
        means = []
        for value in values:  # each policy's evaluation episodes are its own: independent first states
            returns = value[rng.choice(self._start.size, size=(self.BEST_SCORE_DRAWS, episodes), p=self._start)]
            if not self._deterministic:
                returns = (rng.random(returns.shape) < returns).astype(float)
            means.append(returns.mean(axis=1))
        return float(np.max(means, axis=0).mean())


def _interpolated(values: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The trend of a real curve: `values` at generations 1..len(values), linear in between."""
    generations = np.arange(1, values.size + 1, dtype=float)
    return lambda g: np.interp(np.asarray(g, dtype=float), generations, values)


def _draw_hyperparameters(rng: np.random.Generator) -> dict[str, float]:
    """The demo's search space (elitemon.demo._run.SEARCH_SPACE)."""
    return {
        "epsilon": float(rng.uniform(0.01, 0.5)),
        "lr": float(np.exp(rng.uniform(np.log(0.01), np.log(1.0)))),
        "discount": float(rng.uniform(0.5, 0.999)),
        "reward_shaping": float(rng.uniform(0.0, 2.0)),
    }


def _exploit_and_explore(
    scores: np.ndarray,
    learners: list,
    settings: list[dict[str, float]],
    rng: np.random.Generator,
    bounds: dict[str, tuple[float, float]],
) -> int:
    """The bottom quarter copies a random agent of the top quarter; returns how many agents copied."""
    order = np.argsort(scores)
    quarter = max(1, len(scores) // 4)
    for loser in order[:quarter]:
        winner = int(rng.choice(order[-quarter:]))
        learners[loser].load(learners[winner].state())
        fresh = _draw_hyperparameters(rng)
        settings[loser] = {
            name: float(np.clip(fresh[name] if rng.random() < 0.25 else value * rng.choice([0.8, 1.2]), *bounds[name]))
            for name, value in settings[winner].items()
        }
    return quarter
