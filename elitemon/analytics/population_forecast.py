"""Population-aware forecast of each agent's score under PBT, and of the population's mean score.

Why not each agent's own learning curve: under PBT an agent's future is set by the population. An
exploit replaces a weak agent by a copy of a strong one, so a weak agent's score jumps up at a time
its own curve does not show, while a strong agent's last score is partly luck and falls back. On the
Q-learning PBT curves of benchmarks/forecast_eval.py, the change that the single-curve ensemble
(learning_curves.py) predicted for an agent ranked *negatively* with the change that came, and its
final values were no better than the last score. What predicts it better on those runs is where the
population stands: exploits copy the better agents over the worse, and a lucky score falls back, so
every agent regresses towards the population's level while the population moves on.

Model. At the last complete generation n (see `convergence.progress_from_scores`) each agent has a
latest score x (its score at n, or its last before n). Then

    U    = the trimmed mean of the latest scores, without the LEVEL_TRIM share at each end (the
           population's level; scipy.stats.trim_mean)
    rho  = the exploit rate: exploits per agent per generation, over the run so far (`exploit_rate`)
    w(h) = 1 - exp(-GAP_CLOSING * rho * h)
    b    = the Theil-Sen slope of the upper half's mean score (the mean of the scores at or above
           the median) per generation over the last TREND_POINTS complete generations;
           tau = TREND_MEMORY * the generations observed
    expected(n + h) = x + w(h) (U - x) + b tau (1 - exp(-h / tau))

so the agent closes its gap to the population's level as exploits arrive (rho h is the expected
number of exploits per agent by then), and every agent shares the population's progress, at its recent
pace at first and slowing (a damped trend, as in Gardner and McKenzie's damped-trend smoothing,
1985): it adds at most b tau in all. Without exploits (rho = 0) an agent only follows that trend.
The population's mean score is forecast the same way, as an agent whose latest score is the mean
of the latest scores, so it is exactly the mean of the agents' expected scores.

The choices were made on the calibration runs (36 seeds, 72 runs, none evaluated on), by the error
of the final value over the last score's at cuts of 20%, 30%, 50% and 60% of the run:
- the level: the trimmed mean of the latest scores gave 0.92, 0.82, 0.86, 0.97; their mean 0.89,
  0.79, 0.86, 0.99; their median 0.97, 0.89, 0.89, 0.99; the mean of their upper half (the agents
  exploits copy from, the first version) 0.91, 0.83, 0.99, 1.23. The upper half is the luckier draws
  (a maximum of noisy evaluations), and a copy keeps training with perturbed hyperparameters, so the
  agents settle nearer the mean. The trim keeps an agent whose evaluation collapsed from dragging
  the level: in a demo run (`elitemon demo`), one exploring Taxi agent at -22 while the seven others
  scored 7.6 to 8.4 put the mean at 4.3, and the plain mean then forecast the seven falling back
  towards it. Smoothing the latest score over the last three generations was mixed (0.91, 0.83,
  0.74, 0.80 with TREND_MEMORY = 0.1), and it lags across an exploit.
- the trend of the upper half rather than of the mean (with the mean as the level: 0.89, 0.79,
  0.86, 0.99, against 0.86, 0.80, 0.80, 0.89 with the mean's trend). The mean's trend is a little
  better on those runs, but it follows the agents at the bottom: in the same demo run, that agent
  recovering from -179 lifted the mean from -44 to +4 over the last ten generations, and its trend
  forecast the mean at 118 fifty generations on, where no agent had scored above 9.1.
- TREND_MEMORY = 0.25: 0.1 gave 0.90, 0.85, 0.78, 0.86 (better late, worse early); in the first
  version 0.5 and 1 were worse at every cut (0.5: 0.92, 0.87, 1.18, 1.42). Without the trend, a
  population still rising steeply is forecast flat.
- GAP_CLOSING = 2: 1 and 4 were within 0.01 at every cut.

Uncertainty. An agent's scale is s = sqrt(sd_upper^2 + noise^2): the spread of the upper half of the latest
scores (how far apart the better lineages the population may converge to are) and the robust noise
of the population's best score per generation (`learning_curves.robust_noise`: evaluation noise). As
in learning_curves.py, the scale is made a probability by split conformal calibration, here
conditional on two things a forecast knows: on the calibration runs, the 10%, 50% and 90% quantiles
of the normalised errors (truth - expected) / s were fitted by linear quantile regression on the
expected exploits per agent rho h and the relative horizon h / (the generations observed), and
`_CALIBRATION` holds the coefficients. The 80% interval at n + h is expected + s [q10, q90], and
quantiles in between follow the split normal through the three. The relative horizon is there
because the errors grow with how far ahead a forecast looks compared with how much of the run it has
seen. The two were chosen by 4-fold cross-validation over the calibration runs (folds of whole
runs), by the coverage of the final value of forecasts made at 30% and 50% of a run: 0.83 and 0.82
with both, 0.80 and 0.78 with rho h alone, 0.78 and 0.74 with the relative horizon alone.
The population's mean averages over its agents' lineages, so its scale takes the standard error of
the upper half's mean, sd_upper / sqrt(the upper half's size), in place of their spread. With the
agents' s the mean's interval was too wide: in the same cross-validation it covered 0.92 and 0.86
of the mean's final values at 30% and 50%, and with this scale 0.86 and 0.79 (half the agents' s
gave 0.75 and 0.69). The calibration pools the agents and the mean, one forecast in nine.

When a score first reaches a target is the first passage of `learning_curves.first_passage` over
the quantile paths, each observed score scattering around its path by the agent's own robust noise.
That probability rises too slowly at first on PBT runs: an exploit lifts an agent in one step where
the model draws it up gradually, and on the calibration runs the passage came before the 80%
interval began in about a quarter of the cases (the interval covered 0.71). So the generations are
read off the passage probability at PASSAGE_LEVELS, not at 0.1, 0.5 and 0.9: the 10%, 50% and 90%
quantiles of the probability the forecast had given to a passage by the generation at which it came,
over the calibration forecasts whose target was reached within the run (recalibration by the
probability integral transform, as in Kuleshov, Fenner and Ermon, 2018). Conditioning on a reached
target is what the evaluation's coverage counts; the probability of reaching a target within a
horizon (`forecast_target`'s `probability_within_horizon`) stays the model's own.

Limits: the calibration comes from small Q-learning PBT runs (8 agents, an exploit round every 5
generations, Taxi and FrozenLake); README's Known limits gives the coverage per environment. All of
them exploit at about the same rate (4-5 exploits per 100 agent-generations), so the calibration
cannot well tell exploits ahead from the horizon. Without exploits (rho = 0: before the first
exploit round, or a run that is not PBT) the interval is an extrapolation, and it widens only
slowly with the horizon (from 2.5 s one generation ahead to 3.5 s four observed spans ahead).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.stats import theilslopes, trim_mean

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

#: How fast an agent closes its gap to the population's level, per expected exploit per agent.
GAP_CLOSING = 2.0
#: The share of the latest scores left out at each end of the population's level (1 of 8 agents).
LEVEL_TRIM = 0.125
#: The upper half's trend: its slope over this many complete generations, damped with a time
#: constant of TREND_MEMORY times the generations observed.
TREND_POINTS = 10
TREND_MEMORY = 0.25
#: Rows q10, q50, q90 of (truth - expected) / s = intercept + a * rho h + c * h / span, where span is
#: the generations observed, from `python benchmarks/forecast_eval.py --calibrate-population`.
_CALIBRATION = np.array(
    [
        [-1.356, -0.308, 0.625],  # q10
        [-0.161, 0.376, 0.495],  # q50
        [1.118, 1.764, 0.879],  # q90
    ]
)

#: The passage probabilities at which a generations-to-target forecast starts its 80% interval, puts
#: its median and ends the interval: on the calibration runs, the 10%, 50% and 90% quantiles of the
#: probability the forecast gave to a passage by the generation the target was first reached, from
#: `python benchmarks/forecast_eval.py --calibrate-population`.
PASSAGE_LEVELS = (0.010, 0.357, 0.846)


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
    population_level: float  # U: the trimmed mean of the latest scores
    population_trend: float  # b: the upper half's recent gain per generation
    span: float  # the generations observed, first to last complete
    scale: float  # s
    noise: float  # the scatter of this agent's observed scores around their trend
    exploit_rate: float  # rho

    passage_levels: ClassVar[tuple[float, float, float]] = PASSAGE_LEVELS

    def expected(self, generations: ArrayLike) -> np.ndarray:
        """x + w(h) (U - x) + b tau (1 - exp(-h / tau)), with w(h) = 1 - exp(-GAP_CLOSING rho h)."""
        ahead = generations_ahead(generations, self.last_generation, self.max_generation)
        closed = 1.0 - np.exp(-GAP_CLOSING * self.exploit_rate * ahead)
        progress = self.population_trend * self.trend_memory * -np.expm1(-ahead / self.trend_memory)
        return self.latest + closed * (self.population_level - self.latest) + progress

    @property
    def trend_memory(self) -> float:
        """tau, in generations."""
        return TREND_MEMORY * self.span

    def uncertainty(self, generations: ArrayLike) -> np.ndarray:
        """s, the same at every generation: the calibration makes the interval grow with rho h and h / span."""
        return np.full(np.shape(generations), self.scale)

    def calibration_variables(self, generations: ArrayLike) -> np.ndarray:
        """What `_CALIBRATION` is linear in, along the last axis: 1, rho h and h / span. The
        benchmark's calibration fits its coefficients on these same variables."""
        ahead = generations_ahead(generations, self.last_generation, self.max_generation)
        return np.stack([np.ones_like(ahead), self.exploit_rate * ahead, ahead / self.span], axis=-1)

    def _calibration(self, generations: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        q10, q50, q90 = np.moveaxis(self.calibration_variables(generations) @ _CALIBRATION.T, -1, 0)
        return q10, q50, q90

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
    level = float(trim_mean(latest, LEVEL_TRIM))
    upper = latest[latest >= np.median(latest)]
    upper_by_generation = observed.groupby("generation")["score"].agg(_upper_half_mean).loc[progress.index]
    recent = upper_by_generation.iloc[-TREND_POINTS:]
    trend = float(theilslopes(recent.to_numpy(), recent.index.to_numpy(dtype=float))[0])
    best_noise = robust_noise(progress["best"].to_numpy())
    scale = float(np.hypot(upper.std(), best_noise))
    mean_scale = float(np.hypot(upper.std() / np.sqrt(upper.size), best_noise))

    def forecast(name: str, values: np.ndarray) -> AgentForecast:
        return AgentForecast(
            name=name,
            last_generation=float(last),
            max_generation=float(max_generation),
            latest=float(values[-1]),
            best_score=float(values.max()),
            population_level=level,
            population_trend=trend,
            span=float(span),
            scale=scale,
            noise=robust_noise(values),
            exploit_rate=float(exploit_rate),
        )

    # The mean starts from the mean of the latest scores, as the agents do, so that it stays the
    # mean of their forecasts when some have not reported the last complete generation.
    mean = replace(
        forecast("mean", progress["mean"].to_numpy(dtype=float)), latest=float(latest.mean()), scale=mean_scale
    )
    return PopulationForecast(agents={name: forecast(name, values) for name, values in by_agent.items()}, mean=mean)


def _upper_half_mean(scores: pd.Series) -> float:
    return float(scores[scores >= scores.median()].mean())
