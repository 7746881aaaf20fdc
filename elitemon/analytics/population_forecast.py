"""Population-aware forecast of each agent's score under PBT, and of the population's mean score.

Why not each agent's own learning curve: under PBT an agent's future is set by the population. An
exploit replaces a weak agent by a copy of a strong one, so a weak agent's score jumps up at a time
its own curve does not show, while a strong agent's last score is partly luck and falls back. On the
Q-learning PBT curves of benchmarks/forecast_eval.py, the change that the single-curve ensemble
(learning_curves.py) predicted for an agent ranked *negatively* with the change that came, and its
final values were no better than the last score. What predicts it better on those runs is where the
population stands: the agents copy the better half, and the population converges towards it.

Model. At the last complete generation n (see `convergence.progress_from_scores`) each agent has a
latest score x (its score at n, or its last before n). Then

    U    = the mean of the latest scores at or above their median (the upper half of the population)
    rho  = the exploit rate: exploits per agent per generation, over the run so far (`exploit_rate`)
    w(h) = 1 - exp(-GAP_CLOSING * rho * h)
    b    = the Theil-Sen slope of the upper half's mean per generation over the last TREND_POINTS
           complete generations; tau = TREND_MEMORY * the generations observed
    expected(n + h) = x + w(h) (U - x) + b tau (1 - exp(-h / tau))

so the agent closes its gap to the upper half as exploits arrive (rho h is the expected number of
exploits per agent by then), and every agent shares the upper half's progress, at its recent pace
at first and slowing (a damped trend, as in Gardner and McKenzie's damped-trend smoothing, 1985):
it adds at most b tau in all. Without exploits (rho = 0) an agent only follows that trend. The
population's mean score is forecast the same way, as an agent whose latest score is the mean of the
latest scores (w and the trend are the same for every agent, so this is exactly the mean of the
agents' expected scores).

Why the upper half and not the top quantile that exploits copy from: the top scores are the
luckiest draws (a maximum of noisy evaluations), and a copy keeps training with perturbed
hyperparameters, so the agents settle lower than the top quantile's latest scores. GAP_CLOSING and
the upper half were chosen on the calibration runs (seeds 10-13, not evaluated on), without the
trend: the error of the final value over the last score's, over cuts at 20-60% and every horizon,
was 0.83, 0.76, 0.75, 0.76, 0.79 for GAP_CLOSING = 0.5, 1, 2, 4, 100. As the level every agent ends
at (the final value, gap fully closed), the upper half's mean was level with the top quarter's and
the top three's at 30% observed (0.57, 0.57 and 0.56 of the last score's error) and better at 50%
(0.77, 0.98, 0.86). The trend was added after a population still rising steeply was forecast flat;
on the calibration runs it took the final value's error from 0.65 and 0.73 of the last score's
(30% and 50% observed) to 0.55 and 0.68 with TREND_MEMORY = 0.25 (0.56 and 0.67 with 0.5; with 1,
tried only as a rise of the level the gap closes to, 0.75 and 0.68: the trend runs on too long).

Uncertainty. The scale is s = sqrt(sd_upper^2 + noise^2): the spread of the upper half's latest
scores (how far apart the lineages the population may converge to are) and the robust noise of the
population's best score per generation (`learning_curves.robust_noise`: evaluation noise). As in
learning_curves.py, the scale is made a probability by split conformal calibration: on the
calibration runs the normalised errors (truth - expected) / s were collected by the expected
exploits per agent rho h, and `_CALIBRATION` holds their 10%, 50% and 90% quantiles. The 80%
interval at n + h is expected + s [q10, q90] at rho h, and quantiles in between follow the split
normal through the three. When a score first reaches a target is the first passage of
`learning_curves.first_passage` over those quantile paths, each observed score scattering around its
path by the agent's own robust noise.

Limits: the calibration comes from small Q-learning PBT runs (8 agents, an exploit round every 5
generations, Taxi and FrozenLake); README's Known limits gives the coverage per environment. It is
indexed by rho h alone, so without exploits (rho = 0: before the first exploit round, or a run that
is not PBT) the interval stays as narrow as one generation ahead however far ahead it looks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.stats import theilslopes

from elitemon.analytics._frames import require_columns
from elitemon.analytics.convergence import MIN_REPORTING_FRACTION, progress_from_scores
from elitemon.analytics.learning_curves import (
    MAX_RELATIVE_HORIZON,
    MIN_POINTS,
    CalibratedForecast,
    generations_ahead,
    robust_noise,
)
from elitemon.analytics.migration import exploits

#: How fast an agent closes its gap to the upper half, per expected exploit per agent.
GAP_CLOSING = 2.0
#: The upper half's trend: its slope over this many complete generations, damped with a time
#: constant of TREND_MEMORY times the generations observed.
TREND_POINTS = 10
TREND_MEMORY = 0.25
#: (expected exploits per agent rho h, q10, q50, q90) of (truth - expected) / s, from
#: `python benchmarks/forecast_eval.py --calibrate-population`.
_CALIBRATION = np.array(
    [
        [0.050, -1.224, -0.081, 0.916],  # 513 forecasts
        [0.182, -1.502, -0.199, 1.118],  # 891 forecasts
        [0.367, -1.684, -0.190, 1.300],  # 1531 forecasts
        [0.607, -1.559, 0.001, 1.632],  # 1411 forecasts
        [0.857, -1.431, 0.097, 1.893],  # 1152 forecasts
        [1.204, -1.167, 0.209, 2.444],  # 1652 forecasts
        [1.676, -0.517, 0.963, 3.663],  # 827 forecasts
    ]
)


@dataclass(frozen=True, eq=False)
class AgentForecast(CalibratedForecast):
    """One agent's (or the population mean's) forecast score: expected, calibrated quantiles, and
    the probability that a reported score reaches a value (`CalibratedForecast`). Generations past
    `max_generation` raise a ValueError."""

    name: str
    last_generation: float
    max_generation: float
    latest: float  # x: the latest score at or before last_generation
    best_score: float  # the highest score observed so far: a target at or below it has been reached
    population_level: float  # U: the mean of the upper half of the latest scores
    population_trend: float  # b: the upper half's recent gain per generation
    trend_memory: float  # tau, in generations
    scale: float  # s
    noise: float  # the scatter of this agent's observed scores around their trend
    exploit_rate: float  # rho

    def expected(self, generations: ArrayLike) -> np.ndarray:
        """x + w(h) (U - x) + b tau (1 - exp(-h / tau)), with w(h) = 1 - exp(-GAP_CLOSING rho h)."""
        ahead = generations_ahead(generations, self.last_generation, self.max_generation)
        closed = 1.0 - np.exp(-GAP_CLOSING * self.exploit_rate * ahead)
        progress = self.population_trend * self.trend_memory * -np.expm1(-ahead / self.trend_memory)
        return self.latest + closed * (self.population_level - self.latest) + progress

    def uncertainty(self, generations: ArrayLike) -> np.ndarray:
        """s, the same at every generation: the calibration makes the interval grow with rho h."""
        return np.full(np.shape(generations), self.scale)

    def _calibration(self, generations: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ahead = generations_ahead(generations, self.last_generation, self.max_generation)
        exploits_by_then = self.exploit_rate * ahead
        return tuple(np.interp(exploits_by_then, _CALIBRATION[:, 0], _CALIBRATION[:, c]) for c in (1, 2, 3))  # type: ignore[return-value]

    def _observation_noise(self) -> float:
        return self.noise


@dataclass(frozen=True)
class PopulationForecast:
    """Every agent's forecast and the population mean's, from the last complete generation on."""

    agents: Mapping[str, AgentForecast]
    mean: AgentForecast

    @property
    def last_generation(self) -> int:
        return int(self.mean.last_generation)

    @property
    def exploit_rate(self) -> float:
        """rho, the same for every agent and the mean."""
        return self.mean.exploit_rate

    def expected_share_at_least(self, value: float, generation: float) -> float:
        """The expected share of agents whose expected score at `generation` is at least `value`:
        the mean over agents of `probability_at_least`."""
        return float(np.mean([f.probability_at_least(value, generation) for f in self.agents.values()]))


def exploit_rate(scores: pd.DataFrame, events: pd.DataFrame, *, up_to_generation: int | None = None) -> float:
    """rho: exploits per agent per generation, = the exploit events at a generation up to
    `up_to_generation` (default all) / the (agent, generation) scores up to it: the agent-generations
    reported, which is agents x generations when every agent reports every generation. An exploit
    event without a generation counts (it happened; only its time is unknown). 0 without scores."""
    require_columns(scores, "scores", ("agent", "generation", "score"))
    table = exploits(events)
    generations = scores["generation"]
    exploit_generations = table["generation"]
    if up_to_generation is not None:
        generations = generations[generations <= up_to_generation]
        exploit_generations = exploit_generations[exploit_generations.fillna(up_to_generation) <= up_to_generation]
    return float(len(exploit_generations) / len(generations)) if len(generations) else 0.0


def forecast_population(
    scores: pd.DataFrame, *, exploit_rate: float, min_reporting_fraction: float = MIN_REPORTING_FRACTION
) -> PopulationForecast:
    """The forecast of every agent and of the mean, from the `agent_scores` table (agent, generation,
    score) as of its last complete generation (`progress_from_scores`), with `exploit_rate` rho.

    Raises ValueError, naming the argument, for a negative or non-finite exploit rate or fewer than
    MIN_POINTS complete generations (the noise of the best score needs a curve to measure it on).
    """
    if not np.isfinite(exploit_rate) or exploit_rate < 0:
        raise ValueError(f"exploit_rate must be a finite number >= 0, but got {exploit_rate=}.")
    progress = progress_from_scores(scores, min_reporting_fraction=min_reporting_fraction)
    if len(progress) < MIN_POINTS:
        raise ValueError(f"scores: a forecast needs {MIN_POINTS} complete generations, but there are {len(progress)}.")
    last = int(progress.index[-1])
    span = last - int(progress.index[0]) + 1
    max_generation = last + MAX_RELATIVE_HORIZON * span
    observed = scores[scores["generation"] <= last].sort_values(["agent", "generation"])
    by_agent = {str(agent): rows["score"].to_numpy(dtype=float) for agent, rows in observed.groupby("agent")}
    latest = np.array([values[-1] for values in by_agent.values()])
    upper = latest[latest >= np.median(latest)]
    level = float(upper.mean())
    upper_by_generation = observed.groupby("generation")["score"].agg(_upper_half_mean).loc[progress.index]
    recent = upper_by_generation.iloc[-TREND_POINTS:]
    trend = float(theilslopes(recent.to_numpy(), recent.index.to_numpy(dtype=float))[0])
    scale = float(np.hypot(upper.std(), robust_noise(progress["best"].to_numpy())))

    def forecast(name: str, values: np.ndarray) -> AgentForecast:
        return AgentForecast(
            name=name,
            last_generation=float(last),
            max_generation=float(max_generation),
            latest=float(values[-1]),
            best_score=float(values.max()),
            population_level=level,
            population_trend=trend,
            trend_memory=TREND_MEMORY * span,
            scale=scale,
            noise=robust_noise(values),
            exploit_rate=float(exploit_rate),
        )

    # The mean starts from the mean of the latest scores, as the agents do, so that it stays the
    # mean of their forecasts when some have not reported the last complete generation.
    mean = replace(forecast("mean", progress["mean"].to_numpy(dtype=float)), latest=float(latest.mean()))
    return PopulationForecast(agents={name: forecast(name, values) for name, values in by_agent.items()}, mean=mean)


def _upper_half_mean(scores: pd.Series) -> float:
    return float(scores[scores >= scores.median()].mean())
