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
s [q10, q90]; quantiles in between follow the split normal through the three. When the best first
reaches a target is the first passage of `learning_curves.first_passage` over the quantile paths,
each observed best scattering by s, read at PASSAGE_LEVELS (recalibrated through the probability
integral transform on the calibration runs, as population_forecast.PASSAGE_LEVELS are).

Limits, from the evaluation (README, Known limits): the interval is calibrated pooled over Taxi and
FrozenLake and is too wide on the one and too narrow on the other (the spread of the best's last
scores and the population's spread did no better as the scale). Generations-to-target are level
with a straight line through the last 10 scores. A best score whose robust noise is 0 (a straight
line, a staircase, a long plateau) has nothing to size this interval by, and would get one of no
width: `convergence.fit_best_curve` gives such a best the learning curve instead, whose
uncertainty has parts that do not vanish with the noise; it does the same for a best that climbs
more than one noise a generation (`BestForecast.climbs_steadily`): a shape, which the damped trend
would cut short and the calibration never saw. Where the best is a smooth curve, the learning
curve is still the better forecast of when it reaches a target (`--synthetic-best`: 0.76 / 0.70 of
a straight line's error against 0.98 / 0.94); below one noise a generation the trend alone does not tell the
two kinds apart (the PBT bests there, most of them under half a noise, had a better final value
from the recent maximum). One that has never moved is refused (`NothingToExtrapolate`), as the
ensemble refuses it: nothing says when an exploit or a late discovery will lift it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.stats import theilslopes

from elitemon.analytics._frames import require_columns
from elitemon.analytics.learning_curves import (
    CalibratedForecast,
    ObservedSpan,
    generations_ahead,
    observed_curve,
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
        [-3.386, 0.879],  # q10
        [-0.620, 0.813],  # q50
        [0.639, 2.797],  # q90
    ]
)
#: A best whose trend is more than this many noise units a generation climbs, rather than scatters as
#: a maximum of noisy agents does (`BestForecast.climbs_steadily`).
STEADY_CLIMB_IN_NOISE = 1.0
#: The passage probabilities at which a generations-to-target forecast starts its 80% interval, puts
#: its median and ends it: on the calibration runs, the 10%, 50% and 90% quantiles of the
#: probability the forecast gave to a passage by the generation the best first reached the target,
#: from `python benchmarks/forecast_eval.py --calibrate-population`.
PASSAGE_LEVELS = (0.002, 0.420, 0.724)


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
    def climbs_steadily(self) -> bool:
        """Whether the trend is more than STEADY_CLIMB_IN_NOISE noise units a generation (for a rising
        best without noise, always). Such a best is a shape, not the luck of a maximum, and
        `convergence.best_target_forecast` gives it the learning curve: at the calibration's cuts the
        PBT bests never rose faster than 1.31 noise units a generation, so this forecast has not
        been calibrated there. On the synthetic curves taken as bests (`python
        benchmarks/forecast_eval.py --synthetic-best`, 30% / 50% observed), this forecast for
        every best had 1.29 / 1.01 of a straight line's error in generations-to-target and an
        interval covering the final value 0.38 / 0.41 of the time; with the steady climbers given
        the learning curve, 0.98 / 0.94 and 0.58 / 0.52 (the ensemble for every curve: 0.76 /
        0.70 and 0.83 / 0.79)."""
        return self.trend > STEADY_CLIMB_IN_NOISE * self.noise

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


def forecast_best(progress: pd.DataFrame) -> BestForecast:
    """The forecast of the best score from `population_progress` (its index the generation, its
    `best` column the best score there; NaN scores are left out).

    Raises as `learning_curves.observed_curve` does: a ValueError naming `progress` for repeated or
    non-finite generations, infinite scores or fewer than MIN_POINTS scored generations, and
    NothingToExtrapolate when the best score has never moved.
    """
    require_columns(progress, "progress", ("best",))
    generations, scores = observed_curve(
        progress.index.to_numpy(dtype=float),
        progress["best"].to_numpy(dtype=float),
        generations_name="progress: generations (the index)",
        scores_name="progress: best scores",
    )
    recent = slice(-RECENT_GENERATIONS, None)
    return BestForecast(
        first_generation=float(generations[0]),
        last_generation=float(generations[-1]),
        recent_max=float(scores[recent].max()),
        trend=float(theilslopes(scores[recent], generations[recent])[0]),
        noise=robust_noise(scores),
        best_score=float(scores.max()),
    )
