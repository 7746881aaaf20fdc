"""Learning-curve extrapolation: a weighted ensemble of saturating curves with calibrated quantiles.

`fit_learning_curve(generations, scores)` fits six curve families (after Domhan, Springenberg and
Hutter, 2015, "Speeding up automatic hyperparameter optimization of deep neural networks by
extrapolation of learning curves"), each with bounded parameters, to a score curve where higher is
better (pass minus a loss):

    linear     a + b t
    exp3       a - b exp(-c t)                       saturating exponential
    pow3       a - b t^-c                            power law, slow to flatten
    weibull    a - (a - b) exp(-(k t)^d)             Weibull (covers Janoschek)
    mmf        a - (a - b) / (1 + (k t)^d)           Morgan-Mercer-Flodin
    logistic   b + (a - b) / (1 + exp(-k (t - m)))   a plateau, then a rise (possibly still to come)

Time is t = (generation - first + 1) / span, so the observed part is t in (0, 1], and scores are
scaled to [0, 1] over the observed range: one set of bounds then suits every curve. Asymptotes may
lie at most 3 observed ranges above the best score seen, so that no member runs off to infinity.
Each family is fitted by `scipy.optimize.least_squares` with a soft-L1 loss (scale: twice the noise),
which lets an outlier or a PBT jump pull less than squared error would.

Weights: Akaike weights, exp(-AICc / 2 / T) normalised, with temperature T = 3. Plain Akaike weights
(T = 1) assume independent Gaussian residuals; learning-curve residuals are autocorrelated (plateaus,
jumps), so the evidence is worth fewer independent points and T = 3 keeps the ensemble from betting
everything on one family. T was chosen on a pilot run (150 synthetic curves of seed 1, 30% observed:
final-value error 0.305 of the curve's range with T = 1, 0.280 with T = 3, 0.276 with T = 10).

Uncertainty at relative horizon h = (generation - last) / span has four parts, added in quadrature:

    s(h)^2 = spread(h)^2 + noise^2 + (backtest * h)^2 + (DRIFT * range * h)^2

- spread: the weighted standard deviation of the members' predictions (model uncertainty);
- noise: the curve's noise, 1.4826 MAD(second differences) / sqrt(6), robust to trends and jumps;
- backtest: how well the members, refitted on the first 75% of the points, predicted the last 25%
  (root of the weighted mean squared error): how hard this particular curve is to extrapolate;
- drift: change the past does not show (a rise still to come, a jump), a tenth of the observed
  range per observed span. Without it the calibrated intervals at h >= 1.5 come out twice as wide
  at the same coverage: a few flat-looking curves that later rose would set the scale for all.

s(h) ranks forecasts by difficulty but is not itself a probability. The calibration turns it into one
by split conformal prediction (Vovk et al. 2005; Lei et al. 2018): on synthetic calibration curves
(benchmarks/forecast_eval.py --calibrate, seed 0) the normalised errors (truth - expected) / s(h)
were collected per horizon, and their 10%, 50% and 90% quantiles are `_CALIBRATION` below. The 80%
interval at h is expected + s(h) [q10(h), q90(h)], and the distribution used for quantiles and
probabilities is the split normal through those three quantiles. The evaluation (seed 1, other
curves, plus real Q-learning PBT curves) checks the coverage; the calibration never sees its curves.
Calibrated on synthetic curves, the coverage holds for them on average over the families (smooth
ones are over-covered, late rises and jumps under-covered); on the real curves it is about as good
at 30% observed and lower at 50% overall, but too wide on Taxi and too narrow on FrozenLake (the
README's performance table has the figures).

When a reported score first reaches a target (what a stop condition reacts to) is a first passage:
`LearningCurve.probability_reached` averages it over calibrated trend paths with the scores' own
scatter around them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import least_squares
from scipy.special import ndtr, ndtri

#: Fewer points than this cannot pin down a four-parameter curve and its 75% backtest.
MIN_POINTS = 8
#: Forecasts further ahead than this many observed spans are refused: the calibration stops here.
MAX_RELATIVE_HORIZON = 4.0
AKAIKE_TEMPERATURE = 3.0
BACKTEST_FRACTION = 0.25
#: Quantile paths averaged over by `LearningCurve.probability_reached`.
PASSAGE_PATHS = 400
DRIFT = 0.1

_Z90 = float(ndtri(0.9))
#: The PASSAGE_PATHS quantile paths' positions in units of the 90% point: midpoints of (0, 1).
PASSAGE_Z = ndtri((np.arange(PASSAGE_PATHS) + 0.5) / PASSAGE_PATHS)[:, None] / _Z90
#: (relative horizon h, q10, q50, q90) of (truth - expected) / s(h), from
#: `python benchmarks/forecast_eval.py --calibrate --per-family 100` (600 synthetic curves of seed 0,
#: each cut at 4 random points, forecast at the horizons that stay within the curve).
_CALIBRATION = np.array(
    [
        [0.05, -0.825, 0.071, 1.243],  # 2395 forecasts
        [0.1, -0.861, 0.067, 1.429],  # 2395 forecasts
        [0.25, -1.130, 0.068, 1.875],  # 2229 forecasts
        [0.5, -1.153, 0.092, 2.212],  # 1776 forecasts
        [1, -1.056, 0.121, 2.770],  # 1228 forecasts
        [1.5, -1.010, 0.134, 2.833],  # 861 forecasts
        [2, -1.048, 0.142, 2.875],  # 631 forecasts
        [3, -0.767, 0.123, 4.092],  # 359 forecasts
        [4, -0.719, 0.118, 4.357],  # 171 forecasts
    ]
)


@dataclass(frozen=True)
class _Family:
    name: str
    function: Callable[..., np.ndarray]
    initial: Callable[[np.ndarray], list[float]]
    lower: tuple[float, ...]
    upper: tuple[float, ...]


def _linear(t: np.ndarray, a: float, b: float) -> np.ndarray:
    return a + b * t


def _exp3(t: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a - b * np.exp(-c * t)


def _pow3(t: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a - b * t ** (-c)


def _weibull(t: np.ndarray, a: float, b: float, k: float, d: float) -> np.ndarray:
    return a - (a - b) * np.exp(-((k * t) ** d))


def _mmf(t: np.ndarray, a: float, b: float, k: float, d: float) -> np.ndarray:
    return a - (a - b) / (1.0 + (k * t) ** d)


def _logistic(t: np.ndarray, a: float, b: float, k: float, m: float) -> np.ndarray:
    return b + (a - b) / (1.0 + np.exp(-k * (t - m)))


# Scaled units: the observed scores span [0, 1] and the observed generations t in (0, 1].
_ASYMPTOTE = (-1.0, 4.0)
_START = (-2.0, 3.0)


def _plateau_guess(z: np.ndarray) -> float:
    return float(z[-1]) + 0.1


_FAMILIES = (
    _Family("linear", _linear, lambda z: [float(z[0]), float(z[-1] - z[0])], (-10.0, -20.0), (10.0, 20.0)),
    _Family(
        "exp3", _exp3, lambda z: [_plateau_guess(z), 1.0, 3.0], (_ASYMPTOTE[0], 0.0, 0.01), (_ASYMPTOTE[1], 50.0, 100.0)
    ),
    _Family(
        "pow3", _pow3, lambda z: [_plateau_guess(z), 0.1, 0.5], (_ASYMPTOTE[0], 0.0, 0.01), (_ASYMPTOTE[1], 10.0, 3.0)
    ),
    _Family(
        "weibull",
        _weibull,
        lambda z: [_plateau_guess(z), float(z[0]), 3.0, 1.0],
        (_ASYMPTOTE[0], _START[0], 0.01, 0.2),
        (_ASYMPTOTE[1], _START[1], 100.0, 5.0),
    ),
    _Family(
        "mmf",
        _mmf,
        lambda z: [_plateau_guess(z), float(z[0]), 3.0, 1.0],
        (_ASYMPTOTE[0], _START[0], 0.01, 0.2),
        (_ASYMPTOTE[1], _START[1], 100.0, 5.0),
    ),
    _Family(
        "logistic",
        _logistic,
        lambda z: [_plateau_guess(z), float(z[0]), 10.0, 0.5],
        (_ASYMPTOTE[0], _START[0], 0.5, -1.0),
        (_ASYMPTOTE[1], _START[1], 200.0, 10.0),
    ),
)


class NothingToExtrapolate(ValueError):
    """The observed scores are all equal, so no forecast is made.

    Such a curve has no scale of its own: no range, no noise, no trend. Forecasting it to stay put
    with no uncertainty was confidently wrong where it mattered (a population that has not scored
    yet, lifted later by an exploit or a late discovery: 4 of the 13 misses of the 80% interval on
    40 real PBT curves seen half-way), and borrowing a scale from elsewhere would be a guess dressed
    as a forecast.
    """

    @classmethod
    def constant(cls, score: float, first_generation: float, last_generation: float) -> NothingToExtrapolate:
        """The refusal of scores that were all `score` from `first_generation` to `last_generation`."""
        return cls(
            f"scores are all {score:g} over generations {first_generation:g} to {last_generation:g}: a curve that "
            "has not moved says nothing about how far or how soon it will"
        )


class CalibratedForecast(ABC):
    """Quantiles, intervals and probabilities of a score from a calibrated split normal around its
    expected value: what `LearningCurve`, `population_forecast.AgentForecast` and
    `best_forecast.BestForecast` share.

    A subclass gives the expected score, its scale s (`uncertainty`), the calibrated 10%, 50% and
    90% quantiles of (truth - expected) / s at each generation (`_calibration`), and the scatter of
    single observed scores around the trend (`_observation_noise`). The distribution is the split
    normal through expected + s (q10, q50, q90). All methods take generations (scalars or arrays)
    and return arrays of the same shape, in score units.
    """

    @abstractmethod
    def expected(self, generations: ArrayLike) -> np.ndarray: ...

    @abstractmethod
    def uncertainty(self, generations: ArrayLike) -> np.ndarray: ...

    @abstractmethod
    def _calibration(self, generations: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    @abstractmethod
    def _observation_noise(self) -> float: ...

    def quantile(self, generations: ArrayLike, probability: float) -> np.ndarray:
        """The calibrated `probability` quantile of the expected score at `generations`."""
        if not 0.0 < probability < 1.0:
            raise ValueError(f"probability must be in (0, 1), but got {probability=}.")
        return self._split_normal_at(generations, float(ndtri(probability)) / _Z90)

    def interval(self, generations: ArrayLike, level: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
        """The central `level` interval (calibrated at 0.8; other levels follow the split normal)."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), but got {level=}.")
        return self.quantile(generations, (1 - level) / 2), self.quantile(generations, (1 + level) / 2)

    def probability_at_least(self, value: float, generations: ArrayLike) -> np.ndarray:
        """P(expected score at `generations` >= value), from the calibrated split normal."""
        low, middle, high = self._calibration(generations)
        s = self.uncertainty(generations)
        gap = (value - self.expected(generations)) / np.where(s > 0, s, np.inf) - middle
        width = np.where(gap < 0, middle - low, high - middle) / _Z90
        with np.errstate(divide="ignore", invalid="ignore"):
            above = 1.0 - ndtr(np.where(width > 0, gap / width, np.sign(gap) * np.inf))
        # A zero uncertainty (at the last generation, of a curve the members fit exactly) is a step.
        return np.where(s > 0, above, (self.expected(generations) >= value).astype(float))

    def probability_reached(self, value: float, generations: ArrayLike) -> np.ndarray:
        """P(a score observed at one of `generations`, up to and including each, reaches `value`).

        This is what a stop condition such as Tune's `stop={metric: value}` reacts to: the first
        reported score at or above the target, not the trend's crossing. A noisy score can reach a
        target its trend is still short of, and often does within a few generations.

        Model: the trend follows one calibrated quantile path, q_p(g) = quantile(g, p), the same p at
        every generation (a curve that runs high runs high throughout), and each observed score adds
        independent noise of standard deviation `_observation_noise()`; `first_passage` averages the
        chance of a passage over PASSAGE_PATHS equally likely p.
        """
        g = np.asarray(generations, dtype=float)
        if g.ndim != 1 or np.any(np.diff(g) <= 0):
            raise ValueError("generations must be a one-dimensional, increasing grid.")
        return first_passage(self._split_normal_at(g, PASSAGE_Z), value, self._observation_noise())

    def _split_normal_at(self, generations: ArrayLike, z: float | np.ndarray) -> np.ndarray:
        """The score at `generations` where the calibrated split normal stands z of its 90% points
        (z = ndtri(p) / ndtri(0.9) gives the p-quantile); an array z of shape (k, 1) gives k rows."""
        low, middle, high = self._calibration(generations)
        normalised = middle + z * np.where(z < 0, middle - low, high - middle)
        return self.expected(generations) + self.uncertainty(generations) * normalised


class ObservedSpan:
    """The generations a forecast saw, `first_generation` to `last_generation` (fields of the
    dataclass that mixes this in), and the furthest it forecasts from them."""

    first_generation: float
    last_generation: float

    @property
    def span(self) -> float:
        """The generations observed, first to last."""
        return self.last_generation - self.first_generation + 1.0

    @property
    def max_generation(self) -> float:
        """The furthest generation forecast: MAX_RELATIVE_HORIZON observed spans ahead."""
        return self.last_generation + MAX_RELATIVE_HORIZON * self.span


@dataclass(frozen=True, eq=False)
class LearningCurve(ObservedSpan, CalibratedForecast):
    """A fitted ensemble: expected score, calibrated quantiles and probabilities at any generation.

    All methods take generations (scalars or arrays) and return arrays of the same shape, in score
    units. Generations past `last_generation + MAX_RELATIVE_HORIZON * span` raise a ValueError.
    """

    first_generation: float
    last_generation: float
    points: int
    offset: float
    observed_range: float  # max - min of the observed scores: the unit of the members' curves
    noise: float
    scatter: float  # standard deviation of the residuals, observed scores minus the fitted curve
    backtest_error: float
    families: tuple[str, ...]
    parameters: tuple[tuple[float, ...], ...]
    weights: tuple[float, ...]
    #: The passage probabilities (`probability_reached`) at which a generations-to-target forecast
    #: starts its 80% interval, puts its median and ends it (`convergence.forecast_target`): the
    #: passage probability is calibrated on the synthetic curves, so 0.1, 0.5 and 0.9.
    passage_levels: ClassVar[tuple[float, float, float]] = (0.1, 0.5, 0.9)

    @property
    def best_score(self) -> float:
        """The highest observed score: a target at or below it has been reached."""
        return self.offset + self.observed_range

    def expected(self, generations: ArrayLike) -> np.ndarray:
        """The weighted mean of the members' curves."""
        members = self._members(generations)
        return self.offset + self.observed_range * np.tensordot(np.asarray(self.weights), members, axes=1)

    def spread(self, generations: ArrayLike) -> np.ndarray:
        """The weighted standard deviation of the members' curves (model uncertainty)."""
        members = self._members(generations)
        weights = np.asarray(self.weights)
        mean = np.tensordot(weights, members, axes=1)
        return self.observed_range * np.sqrt(np.tensordot(weights, (members - mean) ** 2, axes=1))

    def uncertainty(self, generations: ArrayLike) -> np.ndarray:
        """s(h): spread, noise, backtest error and drift (those two times h) in quadrature."""
        horizon = self._relative_horizon(generations)
        drift = DRIFT * self.observed_range * horizon
        return np.sqrt(self.spread(generations) ** 2 + self.noise**2 + (self.backtest_error * horizon) ** 2 + drift**2)

    def _observation_noise(self) -> float:
        """max(noise, scatter): the scatter of single scores around the trend, for first passages.

        Why the scatter: `noise` is robust on purpose, blind to jumps and outliers, because it sizes
        the trend's uncertainty. But a score that jumps reaches a target as surely as a noisy one,
        and with the robust noise alone the observed scores of the Q-learning PBT curves crossed
        before the forecast's 80% interval began in 28% (30% observed) and 39% (50%) of the cases.
        """
        return max(self.noise, self.scatter)

    def member_curves(self, generations: ArrayLike) -> np.ndarray:
        """Each member's curve in score units, one row per member (in `families` order)."""
        return self.offset + self.observed_range * self._members(generations)

    def _relative_horizon(self, generations: ArrayLike) -> np.ndarray:
        return generations_ahead(generations, self.last_generation, self.max_generation) / self.span

    def _calibration(self, generations: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        horizon = self._relative_horizon(generations)
        grid = _CALIBRATION[:, 0]
        return tuple(np.interp(horizon, grid, _CALIBRATION[:, column]) for column in (1, 2, 3))  # type: ignore[return-value]

    def _members(self, generations: ArrayLike) -> np.ndarray:
        t = (np.asarray(generations, dtype=float) - self.first_generation + 1.0) / self.span
        by_name = {family.name: family for family in _FAMILIES}
        with np.errstate(all="ignore"):
            return np.stack(
                [by_name[name].function(t, *p) for name, p in zip(self.families, self.parameters, strict=True)]
            )


def generations_ahead(generations: ArrayLike, last_generation: float, max_generation: float) -> np.ndarray:
    """Generations past `last_generation` (0 for those before it); a ValueError for any past
    `max_generation`, the end of a forecast's range (MAX_RELATIVE_HORIZON observed spans ahead)."""
    g = np.asarray(generations, dtype=float)
    if np.any(g > max_generation):
        raise ValueError(
            f"generations past {max_generation:g} ({MAX_RELATIVE_HORIZON:g} observed spans ahead) "
            f"are not forecast, but got max(generations)={float(np.max(g)):g}."
        )
    return np.maximum(g - last_generation, 0.0)


def first_passage(paths: np.ndarray, value: float, sd: float) -> np.ndarray:
    """P(a score observed at one of the columns' generations, up to and including each, reaches `value`).

    `paths` holds equally likely trend paths, one per row (quantile paths at PASSAGE_Z); each observed
    score is its path's value plus independent noise of standard deviation `sd`. Given a path, the
    chance that no score reaches the value by column j is the product over columns up to j of
    Phi((value - path) / sd); one minus that, averaged over the paths, is the probability. With
    sd = 0 a path reaches the value when it does, and the probability is the share of paths that have.
    """
    if sd > 0:
        stays_below = ndtr((value - paths) / sd)
    else:
        stays_below = (paths < value).astype(float)
    return (1.0 - np.cumprod(stays_below, axis=1)).mean(axis=0)


def observed_curve(
    generations: ArrayLike,
    scores: ArrayLike,
    *,
    generations_name: str = "generations",
    scores_name: str = "scores",
) -> tuple[np.ndarray, np.ndarray]:
    """The generations and scores a forecast extrapolates, as floats in generation order, NaN scores
    (a generation without a score) dropped: what every forecast of one curve checks first.

    Raises ValueError, naming the argument (by the names given), when the two differ in length, a
    generation repeats or is not finite, a score is infinite, or fewer than MIN_POINTS scores
    remain; NothingToExtrapolate when the remaining scores are all equal.
    """
    g = np.asarray(generations, dtype=float).ravel()
    y = np.asarray(scores, dtype=float).ravel()
    if g.shape != y.shape:
        raise ValueError(f"{generations_name} and {scores_name} differ in length: {g.size} and {y.size}.")
    if not np.all(np.isfinite(g)):
        raise ValueError(f"{generations_name} must be finite numbers.")
    if np.unique(g).size != g.size:
        raise ValueError(f"{generations_name} must not repeat; give one score per generation.")
    if np.any(np.isinf(y)):
        raise ValueError(f"{scores_name} must not be infinite.")
    keep = ~np.isnan(y)
    order = np.argsort(g[keep])
    g, y = g[keep][order], y[keep][order]
    if y.size < MIN_POINTS:
        raise ValueError(
            f"{scores_name}: a forecast needs at least {MIN_POINTS} scores that are not NaN, but there are {y.size}."
        )
    if y.min() == y.max():
        raise NothingToExtrapolate.constant(float(y[0]), g[0], g[-1])
    return g, y


def fit_learning_curve(generations: ArrayLike, scores: ArrayLike) -> LearningCurve:
    """Fit the ensemble to `scores` (higher is better) observed at `generations`, checked and
    ordered by `observed_curve` (which names what it refuses)."""
    g, y = observed_curve(generations, scores)
    offset = float(y.min())
    scale = float(y.max() - offset)
    z = (y - offset) / scale
    t = (g - g[0] + 1.0) / (g[-1] - g[0] + 1.0)
    noise = robust_noise(z)
    cut = int(round(y.size * (1.0 - BACKTEST_FRACTION)))

    names, parameters, criteria, backtests, fitted_values = [], [], [], [], []
    for family in _FAMILIES:
        fitted = _fit(family, t, z, noise)
        if fitted is None:
            continue
        early = _fit(family, t[:cut], z[:cut], noise)
        if early is None:
            continue
        names.append(family.name)
        parameters.append(tuple(float(p) for p in fitted))
        fitted_values.append(family.function(t, *fitted))
        criteria.append(_aicc(fitted_values[-1] - z, len(family.lower)))
        backtests.append(float(np.mean((family.function(t[cut:], *early) - z[cut:]) ** 2)))
    criteria_array = np.asarray(criteria)
    weights = np.exp(-(criteria_array - criteria_array.min()) / (2.0 * AKAIKE_TEMPERATURE))
    weights /= weights.sum()
    return LearningCurve(
        first_generation=float(g[0]),
        last_generation=float(g[-1]),
        points=int(y.size),
        offset=offset,
        observed_range=scale,
        noise=scale * noise,
        scatter=scale * float(np.std(z - weights @ np.asarray(fitted_values))),
        backtest_error=scale * float(np.sqrt(weights @ np.asarray(backtests))),
        families=tuple(names),
        parameters=tuple(parameters),
        weights=tuple(float(w) for w in weights),
    )


def robust_noise(values: ArrayLike) -> float:
    """The noise standard deviation of a curve: 1.4826 * MAD(second differences) / sqrt(6).

    Second differences remove a locally linear trend; for white noise of variance v they have
    variance 6v; the MAD (times 1.4826, its ratio to the sd of a normal) ignores jumps and outliers.
    Curves of fewer than three points have no estimate: 0.
    """
    v = np.asarray(values, dtype=float)
    if v.size < 3:
        return 0.0
    second = np.diff(v, 2)
    return float(1.4826 * np.median(np.abs(second - np.median(second))) / np.sqrt(6.0))


def _fit(family: _Family, t: np.ndarray, z: np.ndarray, noise: float) -> np.ndarray | None:
    lower, upper = np.asarray(family.lower), np.asarray(family.upper)
    start = np.clip(family.initial(z), lower + 1e-6, upper - 1e-6)
    try:
        with np.errstate(all="ignore"):
            result = least_squares(
                lambda p: family.function(t, *p) - z,
                start,
                bounds=(lower, upper),
                loss="soft_l1",
                f_scale=max(2.0 * noise, 1e-3),
                max_nfev=200,
            )
    except ValueError:  # a non-finite residual at the start (overflow in t^-c, exp): skip the family
        return None
    return result.x if np.all(np.isfinite(result.fun)) else None


def _aicc(residuals: np.ndarray, parameters: int) -> float:
    """Corrected Akaike information criterion of a least-squares fit with Gaussian residuals."""
    n = residuals.size
    rss = float(residuals @ residuals) + 1e-12 * n
    return n * np.log(rss / n) + 2 * parameters + 2 * parameters * (parameters + 1) / max(n - parameters - 1, 1)
