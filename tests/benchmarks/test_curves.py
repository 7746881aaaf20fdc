"""The forecast evaluation's truth for real curves: the exact expected return of a greedy policy."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

from benchmarks._curves import GreedyReturn
from elitemon.demo._qlearning import QLearner

DROPOFF = 5  # Taxi's action 5: illegal until the passenger is in the taxi, -10 and no move


def test_a_taxi_policy_that_only_drops_off_earns_minus_ten_for_every_step_of_the_time_limit() -> None:
    q = np.zeros((500, 6))
    q[:, DROPOFF] = 1.0
    assert GreedyReturn("Taxi-v4")(q) == pytest.approx(-10.0 * 200)


def test_frozen_lake_expected_return_agrees_with_many_greedy_episodes() -> None:
    learner = QLearner("FrozenLake-v1", seed=1)  # untrained: a greedy policy of random ties, 7% success
    episodes = 4000
    sampled = learner.evaluate(episodes).mean_return
    exact = GreedyReturn("FrozenLake-v1")(learner.q)
    assert 0.0 < exact < 1.0
    standard_error = np.sqrt(exact * (1.0 - exact) / episodes)
    assert abs(sampled - exact) < 4.0 * standard_error, (sampled, exact, standard_error)


def test_taxi_expected_return_of_a_policy_that_delivers_agrees_with_greedy_episodes() -> None:
    # Optimal Q by value iteration on Taxi's own model: episodes end at the drop-off (+20), so a
    # mistake in how ended episodes are handled would show as a gap to the sampled returns.
    model = gymnasium.make("Taxi-v4").unwrapped
    q = np.zeros((500, 6))
    for _ in range(100):
        best = q.max(axis=1)
        q = np.array(
            [
                [sum(p * (r + (not done) * 0.99 * best[s2]) for p, s2, r, done in model.P[s][a]) for a in range(6)]
                for s in range(500)
            ]
        )
    learner = QLearner("Taxi-v4", seed=0)
    learner.q = q
    episodes = 300
    returns = [learner.evaluate(1).mean_return for _ in range(episodes)]
    exact = GreedyReturn("Taxi-v4")(q)
    assert 5.0 < exact < 10.0  # about 13 moves to pick up and deliver, then +20
    assert abs(np.mean(returns) - exact) < 4.0 * np.std(returns) / np.sqrt(episodes), (np.mean(returns), exact)
