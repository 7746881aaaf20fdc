"""The forecast evaluation's truth for real curves: the exact expected return of a greedy policy."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from scipy.stats import binom

from benchmarks._curves import GreedyReturn, qlearning_pbt_curves
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


def _best_of_binomial_means(probabilities: list[float], episodes: int) -> tuple[float, float]:
    """Mean and standard deviation of max_i B_i / episodes, B_i ~ Binomial(episodes, p_i) independent,
    exactly: P(max <= k) is the product of the binomial distribution functions."""
    score = np.arange(episodes + 1) / episodes
    at_most = np.prod([binom.cdf(np.arange(episodes + 1), episodes, p) for p in probabilities], axis=0)
    chance = np.diff(at_most, prepend=0.0)
    mean = float(chance @ score)
    return mean, float(np.sqrt(chance @ (score - mean) ** 2))


def test_expected_best_score_of_frozen_lake_policies_is_the_exact_binomial_maximum() -> None:
    # FrozenLake episodes return 1 (goal) or 0, so a policy's 20-episode mean is Binomial(20, p) / 20
    # with p its expected return from the start; only V at the start (state 0) matters.
    greedy_return = GreedyReturn("FrozenLake-v1")
    probabilities = [0.3, 0.5, 0.55]
    values = [np.full(16, p) for p in probabilities]
    estimate = greedy_return.expected_best_score(values, 20, np.random.default_rng(0))
    mean, sd = _best_of_binomial_means(probabilities, 20)
    assert abs(estimate - mean) < 4.0 * sd / np.sqrt(GreedyReturn.BEST_SCORE_DRAWS), (estimate, mean)
    assert mean > max(probabilities) + 0.02  # the maximum picks lucky draws: above the best expected return


def test_expected_best_score_of_taxi_policies_draws_each_policys_first_states_on_its_own() -> None:
    # Taxi is deterministic: an episode returns V(first state). With V = 1 on 120 of the 300 first
    # states and 0 elsewhere, a 20-episode mean is Binomial(20, 0.4) / 20, and two policies with the
    # same V evaluated independently have the binomial maximum; first states shared between the
    # two would make the maximum equal the mean, 0.4.
    greedy_return = GreedyReturn("Taxi-v4")
    first_states = np.flatnonzero(gymnasium.make("Taxi-v4").unwrapped.initial_state_distrib)
    value = np.zeros(500)
    value[first_states[:120]] = 1.0
    estimate = greedy_return.expected_best_score([value, value.copy()], 20, np.random.default_rng(1))
    mean, sd = _best_of_binomial_means([0.4, 0.4], 20)
    assert mean > 0.45
    assert abs(estimate - mean) < 4.0 * sd / np.sqrt(GreedyReturn.BEST_SCORE_DRAWS), (estimate, mean)


def test_expected_best_score_refuses_an_environment_whose_episode_returns_it_cannot_know() -> None:
    slippery_cliff = GreedyReturn("CliffWalkingSlippery-v1")  # stochastic, returns -1 and -100 per step
    with pytest.raises(ValueError, match="neither deterministic nor returns 0 or 1"):
        slippery_cliff.expected_best_score([np.zeros(48)], 20, np.random.default_rng(0))


def test_a_pbt_run_is_the_same_whether_it_runs_alone_or_beside_others_in_worker_processes() -> None:
    small = dict(env_ids=("FrozenLake-v1",), agents=4, iterations=10, episodes_per_iteration=5, eval_episodes=5)
    together = qlearning_pbt_curves(seeds=(3, 4), **small)
    alone = qlearning_pbt_curves(seeds=(4,), **small)

    assert [curve.run for curve in together] == ["FrozenLake-v1 seed 3"] * 6 + ["FrozenLake-v1 seed 4"] * 6
    for mine, its in zip(together[6:], alone, strict=True):
        assert (mine.family, mine.member, mine.run) == (its.family, its.member, its.run)
        np.testing.assert_array_equal(mine.scores, its.scores)
        np.testing.assert_array_equal(mine.trend(np.arange(1, 11)), its.trend(np.arange(1, 11)))
    # Two seeds, two runs: the mean's expected return (the scores of so short a run may all be 0).
    assert not np.array_equal(together[1].trend(np.arange(1, 11)), together[7].trend(np.arange(1, 11)))
