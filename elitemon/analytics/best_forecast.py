"""Forecast of a PBT population's best score: its recent maximum, moving on at its own damped pace.

Why not the learning-curve ensemble (learning_curves.py), which fits the best score's own curve: the
best score of a PBT population is a maximum over agents whose evaluations are noisy, and its curve
is that maximum's luck as much as a shape. On the Q-learning PBT runs of
benchmarks/forecast_eval.py the ensemble's final value was no better than the last score's (1.18,
1.33, 1.03, 1.19 times its error at cuts of 20%, 30%, 50% and 60% of the calibration runs), and the
change it forecast ranked negatively with the change that came. What the best score has reached in
its last few generations is where the strong lineage has shown it stands, and the best returns
there: the highest best score of the last 10 generations had 0.83, 0.77, 0.81, 0.75 of the last
score's error on the same runs.

Model. With the best score b_g at each complete generation g (`convergence.population_progress`),
the last at generation n, over a span of generations observed:

    L   = the highest b_g over the last RECENT_GENERATIONS complete generations
    m   = the Theil-Sen slope of b_g over those generations (scipy.stats.theilslopes)
    tau = TREND_MEMORY * span
    expected(n + h) = L + m tau (1 - exp(-h / tau))

a damped trend (Gardner and McKenzie, 1985) from the recent maximum: at most m tau more in all. On
the calibration runs the trend helped a little (0.79, 0.74, 0.76, 0.80 of the last score's error
with TREND_MEMORY = 0.1; 0.79, 0.73, 0.74, 0.92 with 0.25), and it lets a forecast reach a target
above everything seen. Moving the level down by the best's noise (a maximum of noisy draws runs
high) made it worse (0.85 and 0.81 at 30% and 50% with one noise, against 0.74 and 0.76).

Uncertainty. The scale is s = the best score's robust noise (`learning_curves.robust_noise`), made
a probability by split conformal calibration as in population_forecast.py: the 10%, 50% and 90%
quantiles of (truth - expected) / s on the calibration runs' best curves, fitted by linear quantile
regression on the relative horizon h / span (`_CALIBRATION`). The interval at n + h is expected +
s [q10, q90]; quantiles in between follow the split normal through the three.

When the best first reaches a target. The generations T until a reported best first reaches it are
log-logistic, ln T = mu + sigma e (e standard logistic), an accelerated failure time model whose
location mu moves with the gap to the target and the trend, both in noise units
(`BestForecast.probability_reached`), fitted by maximum likelihood, targets never reached counting
as censored, to when the calibration runs' best curves did reach theirs (`_PASSAGE_TIME`). It is
read at PASSAGE_LEVELS, recalibrated through the probability integral transform on the same runs,
as population_forecast.PASSAGE_LEVELS are: their 50% level is 0.31, not 0.5, because the forecast
is judged on the targets reached within the run, which are the sooner ones. The quantile paths
(`CalibratedForecast.probability_reached`) it replaces gave generations level with a straight
line's; a discrete-time hazard logistic in ln h did better on the calibration runs, but its fitted
chance for a far target passed a near one's some tens of generations out, which cannot be.

Limits, from the evaluation (README, Known limits): the interval is calibrated pooled over Taxi and
FrozenLake and is too wide on the one and too narrow on the other (the spread of the best's last
scores and the population's spread did no better as the scale). Generations-to-target beat a
straight line through the last 10 scores with half the run observed, but not with 30%, where
their interval covers too little (0.58 of the targets reached). A best score whose robust noise is 0 (a straight
line, a staircase, a long plateau) has nothing to size this interval by, and would get one of no
width: `convergence.fit_best_curve` gives such a best the learning curve instead, whose
uncertainty has parts that do not vanish with the noise. One that has never moved is refused
(`NothingToExtrapolate`), as the ensemble refuses it: nothing says when an exploit or a late
discovery will lift it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.special import expit
from scipy.stats import theilslopes

from elitemon.analytics._frames import require_columns
from elitemon.analytics.learning_curves import (
    MIN_POINTS,
    CalibratedForecast,
    NothingToExtrapolate,
    ObservedSpan,
    generations_ahead,
    robust_noise,
)

#: The level is the highest best score of this many complete generations, and the trend their slope.
RECENT_GENERATIONS = 10
#: The trend is damped with a time constant of TREND_MEMORY times the generations observed.
TREND_MEMORY = 0.1
#: Rows q10, q50, q90 of (truth - expected) / s = intercept + c * h / span, from
#: `python benchmarks/forecast_eval.py --calibrate-population`.
_CALIBRATION = np.array(
    [
        [-3.431, 0.907],  # q10
        [-0.670, 0.934],  # q50
        [0.704, 2.737],  # q90
    ]
)
#: The log-logistic generations-to-target: c0, c1, c2 of mu = c0 + c1 ln(1 + z) + c2 r, then ln sigma
#: (`BestForecast.probability_reached`), by maximum likelihood on the calibration runs' best curves,
#: from `python benchmarks/forecast_eval.py --calibrate-population`.
_PASSAGE_TIME = np.array([2.981, 0.122, -1.007, -0.208])
#: The gap to the target in noise units is read up to this many (beyond, the best is as far as can be).
MAX_GAP_IN_NOISE = 30.0
#: The trend in noise units per generation is read between these (a best that barely scatters has
#: a trend of many noise units, which says nothing more).
TREND_IN_NOISE_RANGE = (-1.0, 2.0)
#: The passage probabilities at which a generations-to-target forecast starts its 80% interval, puts
#: its median and ends it: on the calibration runs, the 10%, 50% and 90% quantiles of the
#: probability the forecast gave to a passage by the generation the best first reached the target,
#: from `python benchmarks/forecast_eval.py --calibrate-population`.
PASSAGE_LEVELS = (0.089, 0.311, 0.569)


@dataclass(frozen=True, eq=False)
class BestForecast(ObservedSpan, CalibratedForecast):
    """The population's best score ahead: expected, calibrated quantiles, and the probability that a
    reported best reaches a value (`CalibratedForecast`). Generations past `max_generation` raise a
    ValueError."""

    first_generation: float
    last_generation: float
    recent_max: float  # L
    trend: float  # m, per generation
    noise: float  # s, the best score's robust noise
    best_score: float  # the highest best score so far: a target at or below it has been reached

    passage_levels: ClassVar[tuple[float, float, float]] = PASSAGE_LEVELS

    @property
    def trend_memory(self) -> float:
        """tau, in generations."""
        return TREND_MEMORY * self.span

    def expected(self, generations: ArrayLike) -> np.ndarray:
        """L + m tau (1 - exp(-h / tau))."""
        ahead = generations_ahead(generations, self.last_generation, self.max_generation)
        return self.recent_max + self.trend * self.trend_memory * -np.expm1(-ahead / self.trend_memory)

    def uncertainty(self, generations: ArrayLike) -> np.ndarray:
        """s, the same at every generation: the calibration widens the interval with h / span."""
        return np.full(np.shape(generations), self.noise)

    def calibration_variables(self, generations: ArrayLike) -> np.ndarray:
        """What `_CALIBRATION` is linear in, along the last axis: 1 and h / span."""
        ahead = generations_ahead(generations, self.last_generation, self.max_generation)
        return np.stack([np.ones_like(ahead), ahead / self.span], axis=-1)

    def _calibration(self, generations: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        q10, q50, q90 = np.moveaxis(self.calibration_variables(generations) @ _CALIBRATION.T, -1, 0)
        return q10, q50, q90

    def _observation_noise(self) -> float:
        return self.noise

    def probability_reached(self, value: float, generations: ArrayLike) -> np.ndarray:
        """P(the best score reported at some generation after the last, up to and including each of
        `generations`, reaches `value`). Every whole generation counts, whatever the grid; those at
        or before the last have none left.

        The generations T until the best first reaches `value` are log-logistic (an accelerated
        failure time model): ln T = mu + sigma e, e standard logistic, mu = `passage_variables` @
        _PASSAGE_TIME[:3], sigma = exp(_PASSAGE_TIME[3]), so P(T <= h) = expit((ln h - mu) / sigma).
        A farther target has a later mu (its coefficient is positive) and the same sigma, so it is
        never more likely than a nearer one. Why not the quantile paths
        (`CalibratedForecast.probability_reached`): on the evaluation runs the generations they gave
        were level with a straight line's (1.03 and 0.96 of its error at 30% and 50% observed), and
        their probability of a passage within the run had a Brier score of 0.41 and 0.45.
        """
        g = np.asarray(generations, dtype=float)
        if g.ndim != 1 or np.any(np.diff(g) <= 0):
            raise ValueError("generations must be a one-dimensional, increasing grid.")
        ahead = np.floor(g - self.last_generation)
        location = float(self.passage_variables(value) @ _PASSAGE_TIME[:3])
        scale = float(np.exp(_PASSAGE_TIME[3]))
        return np.where(ahead >= 1, expit((np.log(np.maximum(ahead, 1.0)) - location) / scale), 0.0)

    def passage_variables(self, value: float) -> np.ndarray:
        """What mu, the location of ln T, is linear in: 1, ln(1 + z) and r, where z = (value - L) / s
        is the gap to the target in noise units (read from 0 to MAX_GAP_IN_NOISE) and r = m / s the
        trend in noise units per generation (read within TREND_IN_NOISE_RANGE). A best without
        noise reads both at the ends of their ranges."""
        with np.errstate(divide="ignore", invalid="ignore"):
            gap, trend = np.divide([value - self.recent_max, self.trend], self.noise)
        gap = np.clip(np.nan_to_num(gap, nan=0.0), 0.0, MAX_GAP_IN_NOISE)
        trend = np.clip(np.nan_to_num(trend, nan=0.0), *TREND_IN_NOISE_RANGE)
        return np.array([1.0, np.log1p(gap), trend])


def forecast_best(progress: pd.DataFrame) -> BestForecast:
    """The forecast of the best score from `population_progress` (its index the generation, its
    `best` column the best score there; NaN scores are left out).

    Raises ValueError, naming the problem, for repeated or non-finite generations, infinite scores
    or fewer than MIN_POINTS generations, and NothingToExtrapolate (a ValueError) when the best
    score has never moved.
    """
    require_columns(progress, "progress", ("best",))
    best = progress["best"].astype(float).dropna()
    generations = best.index.to_numpy(dtype=float)
    if not np.all(np.isfinite(generations)):
        raise ValueError("progress: generations (the index) must be finite numbers.")
    if best.index.has_duplicates:
        raise ValueError("progress: generations (the index) must not repeat; give one best score per generation.")
    if np.any(np.isinf(best.to_numpy())):
        raise ValueError("progress: best scores must not be infinite.")
    if len(best) < MIN_POINTS:
        raise ValueError(f"a forecast needs {MIN_POINTS} complete generations; there are {len(best)}")
    best = best.sort_index()
    scores, generations = best.to_numpy(), best.index.to_numpy(dtype=float)
    if scores.min() == scores.max():
        raise NothingToExtrapolate.constant(scores[0], generations[0], generations[-1])
    recent = slice(-RECENT_GENERATIONS, None)
    return BestForecast(
        first_generation=float(generations[0]),
        last_generation=float(generations[-1]),
        recent_max=float(scores[recent].max()),
        trend=float(theilslopes(scores[recent], generations[recent])[0]),
        noise=robust_noise(scores),
        best_score=float(scores.max()),
    )
