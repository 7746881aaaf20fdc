"""Anomaly detection on one metric stream (throughput, GPU utilisation, any series of floats).

Two detectors share one contract, ``update(ts, value) -> AnomalyPoint``, with memory bounded by
their window lengths, and one batch entry point, :func:`detect_anomalies`, which runs a detector
over an array or Series and returns one row per point (what a plot of value, expected value and band
needs, plus score, severity and is_anomaly).

:class:`RobustDetector` (the default; about 25 us a point, so it can run every 15 s over thousands of streams)
    Predicts each point from the last ``window`` values with a robust local line, and
    scores the point by its residual in robust standard deviations::

        slope    = (median(newer half) - median(older half)) / (distance between the halves' centres)
        d_i      = w_i - slope * (i - centre)                    # the window, detrended
        expected = median(d) + slope * (distance from the centre to the new point)
        scale    = IQR(d) / 1.349                                # = sigma for Gaussian noise
        score    = |value - expected| / scale                    # a robust z-score

    Why these choices: medians and the inter-quartile range ignore up to a quarter of the window
    being outliers, so a spike neither drags the expectation nor widens the band (a rolling mean
    and standard deviation do both, and then miss the next anomaly); the slope term removes the
    lag of a plain rolling median under a trend or a slow seasonal swing, and detrending keeps the
    trend out of the scale. A point whose |z| reaches the warning threshold enters the window
    clipped to the band's edge, so one outlier moves the baseline by at most one band-edge value,
    yet a lasting change of variance still widens the band within about half a window.
    Level shifts: after ``confirm`` consecutive points outside the band on the same side, the shift
    is taken as real; the window restarts from those points (the noise scale carries over until
    ``min_history`` points have been seen) and the point is marked ``rebaselined``. The detector
    therefore flags a shift ``confirm`` times, then follows the new level instead of flagging forever.
    Variance changes: a burst of larger noise can stay inside the band point by point, so a CUSUM
    of the clipped robust z (``S = max(0, S + min(|z|, warning) - spread_allowance)``, capped at
    twice ``spread_limit``) accumulates the excess; the point's score is
    ``max(|z|, warning * S / spread_limit)``, so S reaching ``spread_limit`` is a warning. For
    Gaussian noise E|z| is 0.8, below the allowance of 1.5, so S stays near 0; noise three times
    larger (E|z| 2.4) reaches the limit in about 13 points.

:class:`IsolationForestDetector`
    An :class:`sklearn.ensemble.IsolationForest` over windowed features of the robust baseline
    (signed robust z, jump from the previous value, recent volatility, recent mean z), fitted on
    the trailing ``train_window`` feature rows, refitted every ``refit_every`` points, and used
    only to score points that arrive after each fit. Score = the forest's anomaly score
    ``2 ** (-mean path length / c(max_samples))`` in (0, 1), about 0.5 or less for ordinary points
    and near 1 for points isolated in a few splits. The fitted forest is compiled into flat arrays
    and walked for all trees at once (scores equal scikit-learn's ``score_samples``, negated), since
    scikit-learn's own call costs milliseconds for a single point.

Severity comes from the score alone (:class:`SeverityThresholds`), so scoring and deciding can be
tested and tuned apart; ``is_anomaly`` means severity WARNING or CRITICAL. Measured precision,
recall, F1, detection delay and points/s are in ``benchmarks/anomaly_eval.py``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from elitemon.analytics._frames import is_number, is_whole_number
from elitemon.schema import to_timestamp_us

#: Inter-quartile range of a standard normal distribution: IQR / 1.349 estimates sigma.
IQR_PER_SIGMA = 1.3490
#: E|X - median| of a normal variable is sigma * sqrt(2 / pi): the fallback scale when IQR is 0.
MEAN_ABS_DEV_PER_SIGMA = math.sqrt(2.0 / math.pi)
#: E|X1 - X2| for independent normal X1, X2 is 2 sigma / sqrt(pi): steady noise has volatility 1.
MEAN_ABS_DIFF_PER_SIGMA = 2.0 / math.sqrt(math.pi)
#: Features per point of the IsolationForestDetector: z, jump, volatility, mean recent z.
FEATURES = 4


class Severity(IntEnum):
    """How unusual a point is; ordered, so ``severity >= Severity.WARNING`` reads naturally."""

    OK = 0
    INFO = 1
    WARNING = 2
    CRITICAL = 3


@dataclass(frozen=True)
class SeverityThresholds:
    """Score cut-offs: a score at or above ``warning`` is an anomaly, at or above ``critical`` a critical one.

    ``info`` marks points worth a look on a plot but not an alert.
    """

    info: float
    warning: float
    critical: float

    def __post_init__(self) -> None:
        if not all(math.isfinite(t) for t in (self.info, self.warning, self.critical)):
            raise ValueError(f"thresholds must be finite, but got {self}.")
        if not self.info <= self.warning <= self.critical:
            raise ValueError(f"thresholds must satisfy info <= warning <= critical, but got {self}.")

    def classify(self, score: float) -> Severity:
        """The severity of `score`; a NaN score (no judgement yet) is OK."""
        if score >= self.critical:
            return Severity.CRITICAL
        if score >= self.warning:
            return Severity.WARNING
        if score >= self.info:
            return Severity.INFO
        return Severity.OK


@dataclass(frozen=True)
class AnomalyPoint:
    """One scored point: the value, what was expected, the band, the score and its severity.

    While a detector warms up, ``score``, ``lower`` and ``upper`` are NaN and the severity is OK
    (``expected`` is the running median where known); for a missing (NaN) value all of them are NaN.
    ``rebaselined`` marks the point at which a level shift was confirmed and the baseline restarted.
    """

    ts: float
    value: float
    expected: float
    lower: float
    upper: float
    score: float
    severity: Severity
    rebaselined: bool = False

    @property
    def is_anomaly(self) -> bool:
        return self.severity >= Severity.WARNING


class StreamingDetector(Protocol):
    """Anything that scores a stream one point at a time, in time order, with bounded memory."""

    def update(self, ts: Any, value: float) -> AnomalyPoint: ...


# --------------------------------------------------------------------------------------------
# The robust rolling baseline.


class _Window:
    """The last `capacity` values as one contiguous numpy view: a buffer of twice the capacity,
    compacted when its end is reached, so appending is O(1) amortised and reading copies nothing."""

    def __init__(self, capacity: int) -> None:
        self._buffer = np.empty(2 * capacity)
        self._capacity = capacity
        self._start = 0
        self._end = 0

    def __len__(self) -> int:
        return self._end - self._start

    def append(self, value: float) -> None:
        if self._end == len(self._buffer):
            kept = self._end - self._start
            self._buffer[:kept] = self._buffer[self._start : self._end]
            self._start, self._end = 0, kept
        self._buffer[self._end] = value
        self._end += 1
        if self._end - self._start > self._capacity:
            self._start += 1

    def reset(self, values: Iterable[float]) -> None:
        self._start = self._end = 0
        for value in values:
            self.append(value)

    def values(self) -> np.ndarray:
        return self._buffer[self._start : self._end]


def _median(values: np.ndarray) -> float:
    """Median via one partial sort (np.median's overhead is several times the work on short windows)."""
    n = len(values)
    middle = n // 2
    if n % 2:
        return float(np.partition(values, middle)[middle])
    part = np.partition(values, (middle - 1, middle))
    return float(part[middle - 1] + part[middle]) / 2.0


@dataclass(frozen=True)
class Baseline:
    """The robust local line through a window: where the next point is expected and how noisy the window is.

    ``expected = level + slope * (n + 1) / 2`` with ``level`` the median of the detrended window
    (its value at the window's centre, index (n - 1) / 2), and ``scale = IQR / 1.349`` of the
    detrended values, falling back to ``1.2533 * mean |d - level|`` when more than half the values
    are equal (IQR 0), and to 0 for a constant window.
    """

    expected: float
    slope: float
    scale: float


def robust_baseline(window: np.ndarray, *, with_slope: bool) -> Baseline:
    """Fit :class:`Baseline` to `window` (oldest first); the slope is fitted only when `with_slope`.

    Slope: the difference of the medians of the newer and the older half over the distance between
    the halves' centres (a two-group resistant line), robust like the medians themselves; it needs
    at least 4 values. Quartiles are nearest-rank: indices ``floor(0.25 (n - 1) + 0.5)`` and
    ``floor(0.75 (n - 1) + 0.5)`` of the sorted values.
    """
    n = len(window)
    if n == 0:
        raise ValueError("window: empty; a baseline needs at least one value.")
    slope = 0.0
    detrended = window
    if with_slope and n >= 4:
        half = n // 2
        slope = (_median(window[n - half :]) - _median(window[:half])) / (n - half)
        detrended = window - slope * (np.arange(n) - (n - 1) / 2.0)
    lower_rank, upper_rank = int(0.25 * (n - 1) + 0.5), int(0.75 * (n - 1) + 0.5)
    middle = n // 2
    ranks = sorted({lower_rank, upper_rank, middle, middle - 1 if n % 2 == 0 else middle})
    part = np.partition(detrended, ranks)
    level = float(part[middle]) if n % 2 else float(part[middle - 1] + part[middle]) / 2.0
    scale = float(part[upper_rank] - part[lower_rank]) / IQR_PER_SIGMA
    if scale == 0.0:
        scale = float(np.mean(np.abs(detrended - level))) / MEAN_ABS_DEV_PER_SIGMA
    return Baseline(expected=level + slope * (n + 1) / 2.0, slope=slope, scale=scale)


def _checked_value(value: float | None) -> float:
    """`value` as a float: None is a missing point (NaN), as in `detect_anomalies`."""
    if value is None:
        return math.nan
    if not is_number(value):
        raise ValueError(f"value: {value!r} is not a number; give a float, or NaN or None for a missing point.")
    value = float(value)
    if math.isinf(value):
        raise ValueError(f"value: infinite ({value!r}); give a finite float, or NaN for a missing point.")
    return value


def _check_whole(name: str, value: Any, minimum: int, maximum: int | None = None, maximum_name: str = "") -> None:
    """A ValueError naming `name` unless `value` is a whole number in [minimum, maximum]."""
    if not is_whole_number(value) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, but got {name}={value!r}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum_name} ({maximum}), but got {name}={value!r}.")


def _check_thresholds(thresholds: Any) -> None:
    if not isinstance(thresholds, SeverityThresholds):
        raise ValueError(f"thresholds must be a SeverityThresholds, but got {thresholds!r}.")


def _unscored(ts: float, value: float, expected: float = math.nan) -> AnomalyPoint:
    return AnomalyPoint(ts, value, expected, math.nan, math.nan, math.nan, Severity.OK)


class RobustDetector:
    """Streaming robust z-score against a rolling median line; see the module docstring for the formulas.

    Memory: ``2 * window`` floats and ``confirm`` pending values, whatever the stream's length.
    Keyword arguments (all checked here):

    - ``window``: values the baseline is fitted on (default 240: four hours at one point a minute).
    - ``min_history``: points seen before the first score (default 30); earlier points score NaN.
    - ``confirm``: consecutive same-side anomalies that confirm a level shift (default 6).
    - ``trend``: fit the slope (default True); without it the expectation is the window's median.
    - ``thresholds``: on the score (default info 4, warning 6, critical 10).
    - ``min_scale``: a floor for the scale, for quantised metrics (default 0: a constant stream
      scores 0, and any change from it scores infinity).
    - ``spread_allowance``, ``spread_limit``: the volatility CUSUM's allowance and decision limit
      (defaults 1.5 and 12).

    Defaults were chosen on the tuning stream (seed 0) of ``benchmarks/anomaly_eval.py``.
    """

    def __init__(
        self,
        *,
        window: int = 240,
        min_history: int = 30,
        confirm: int = 6,
        trend: bool = True,
        thresholds: SeverityThresholds = SeverityThresholds(info=4.0, warning=6.0, critical=10.0),
        min_scale: float = 0.0,
        spread_allowance: float = 1.5,
        spread_limit: float = 12.0,
    ) -> None:
        _check_whole("window", window, 4)
        _check_whole("min_history", min_history, 2, window, "window")
        _check_whole("confirm", confirm, 1)
        _check_thresholds(thresholds)
        if not (math.isfinite(min_scale) and min_scale >= 0.0):
            raise ValueError(f"min_scale must be a finite number >= 0, but got {min_scale=}.")
        if not (math.isfinite(spread_allowance) and spread_allowance > 0.0):
            raise ValueError(f"spread_allowance must be a finite number > 0, but got {spread_allowance=}.")
        if not (math.isfinite(spread_limit) and spread_limit > 0.0):
            raise ValueError(f"spread_limit must be a finite number > 0, but got {spread_limit=}.")
        self.window = window
        self.min_history = min_history
        self.confirm = confirm
        self.trend = trend
        self.thresholds = thresholds
        self.min_scale = min_scale
        self.spread_allowance = spread_allowance
        self.spread_limit = spread_limit
        self._spread = 0.0
        self._values = _Window(window)
        self._pending: deque[float] = deque(maxlen=confirm)
        self._pending_side = 0
        self._carried_scale = math.nan
        self._last_ts = -math.inf

    def update(self, ts: Any, value: float) -> AnomalyPoint:
        """Score `value` observed at `ts` (epoch seconds, datetime or datetime64), then learn from it.

        `ts` must not go backwards (ValueError naming ts). A NaN value is a missing point: it is
        returned unscored and leaves the state untouched; an infinite one raises ValueError.
        """
        seconds = to_timestamp_us(ts) / 1e6  # its ValueErrors name ts
        if seconds < self._last_ts:
            raise ValueError(f"ts: {seconds} is before the previous point at {self._last_ts}; give points in order.")
        self._last_ts = seconds
        value = _checked_value(value)
        if math.isnan(value):
            return _unscored(seconds, value)
        seen = len(self._values)
        if seen < self.min_history and math.isnan(self._carried_scale):
            self._values.append(value)
            return _unscored(seconds, value, expected=_median(self._values.values()))
        baseline = self.baseline()
        residual = value - baseline.expected
        z = (
            residual / baseline.scale
            if baseline.scale > 0.0
            else (0.0 if residual == 0.0 else math.copysign(math.inf, residual))
        )
        score = max(abs(z), self._spread_score(z))
        severity = self.thresholds.classify(score)
        half_band = self.thresholds.warning * baseline.scale
        lower, upper = baseline.expected - half_band, baseline.expected + half_band
        rebaselined = self._learn(value, abs(z) >= self.thresholds.warning, residual, lower, upper, baseline.scale)
        return AnomalyPoint(seconds, value, baseline.expected, lower, upper, score, severity, rebaselined)

    def _spread_score(self, z: float) -> float:
        """The volatility CUSUM in score units: ``warning * S / spread_limit``."""
        limit = self.thresholds.warning
        self._spread = min(max(0.0, self._spread + min(abs(z), limit) - self.spread_allowance), 2 * self.spread_limit)
        return limit * self._spread / self.spread_limit

    def baseline(self) -> Baseline:
        """The current expectation for the next point (valid once ``min_history`` points were seen)."""
        window = self._values.values()
        full = len(window) >= self.min_history
        fitted = robust_baseline(window, with_slope=self.trend and len(window) == self.window)
        scale = fitted.scale if full else self._carried_scale
        return Baseline(fitted.expected, fitted.slope, max(scale, self.min_scale))

    def _learn(self, value: float, anomalous: bool, residual: float, lower: float, upper: float, scale: float) -> bool:
        """Add `value` to the window (clipped to the band when anomalous); True when a level shift was confirmed."""
        if not anomalous:
            self._pending.clear()
            self._values.append(value)
            return False
        side = 1 if residual > 0 else -1
        if side != self._pending_side:
            self._pending.clear()
            self._pending_side = side
        self._pending.append(value)
        if len(self._pending) < self.confirm:
            self._values.append(min(max(value, lower), upper))
            return False
        self._carried_scale = scale
        self._values.reset(self._pending)
        self._pending.clear()
        self._spread = 0.0
        return True


# --------------------------------------------------------------------------------------------
# Isolation forest on windowed features.


def average_path_length(n_samples: np.ndarray) -> np.ndarray:
    """c(n): the mean depth at which a random isolation tree separates one of `n` points.

    ``c(n) = 2 (ln(n - 1) + 0.5772...) - 2 (n - 1) / n`` for n > 2, 1 for n = 2, 0 for n <= 1
    (Liu, Ting and Zhou 2008; the unsuccessful-search length of a binary search tree). A leaf
    holding n training points adds c(n) to the path of a point ending there.
    """
    n = np.asarray(n_samples, dtype=np.float64)
    safe = np.maximum(n, 3.0)
    length = 2.0 * (np.log(safe - 1.0) + np.euler_gamma) - 2.0 * (safe - 1.0) / safe
    return np.where(n <= 1.0, 0.0, np.where(n == 2.0, 1.0, length))


class CompiledForest:
    """A fitted IsolationForest as flat node arrays, walked for every tree at once.

    Leaves loop to themselves, so ``depth`` vectorised steps of ``node = left if x[feature] <=
    threshold else right`` take every tree to its leaf. The score is scikit-learn's: with
    ``h = edges to the leaf + c(training points in the leaf)``, ``score = 2 ** (-sum(h) / (trees *
    c(max_samples)))``, i.e. ``-forest.score_samples(x)``. Inputs are rounded to float32 first, as
    scikit-learn does before comparing with its thresholds.
    """

    def __init__(self, forest: IsolationForest) -> None:
        lefts, rights, features, thresholds, leaf_lengths, roots = [], [], [], [], [], []
        offset = 0
        depth = 0
        for tree, used_features in zip(forest.estimators_, forest.estimators_features_, strict=True):
            nodes = tree.tree_
            count = nodes.node_count
            is_leaf = nodes.children_left < 0
            own = np.arange(count)
            edges = nodes.compute_node_depths() - 1  # the root has depth 1
            depth = max(depth, int(edges.max()))
            lefts.append(np.where(is_leaf, own, nodes.children_left) + offset)
            rights.append(np.where(is_leaf, own, nodes.children_right) + offset)
            features.append(np.where(is_leaf, 0, np.asarray(used_features)[np.maximum(nodes.feature, 0)]))
            thresholds.append(np.where(is_leaf, 0.0, nodes.threshold))
            leaf_lengths.append(edges + average_path_length(nodes.n_node_samples))
            roots.append(offset)
            offset += count
        self._left = np.concatenate(lefts)
        self._right = np.concatenate(rights)
        self._feature = np.concatenate(features)
        self._threshold = np.concatenate(thresholds)
        self._leaf_length = np.concatenate(leaf_lengths)
        self._roots = np.asarray(roots)
        self._depth = depth
        self._normaliser = len(roots) * float(average_path_length(np.array(forest.max_samples_)))

    def score(self, features: np.ndarray) -> np.ndarray:
        """Anomaly scores in (0, 1] for rows of `features` (shape (points, features) or (features,))."""
        points = np.atleast_2d(np.asarray(features, dtype=np.float32).astype(np.float64))
        rows = np.arange(len(points))[:, None]
        nodes = np.broadcast_to(self._roots, (len(points), len(self._roots)))
        for _ in range(self._depth):
            go_left = points[rows, self._feature[nodes]] <= self._threshold[nodes]
            nodes = np.where(go_left, self._left[nodes], self._right[nodes])
        lengths = self._leaf_length[nodes].sum(axis=1)
        return 2.0 ** (-lengths / self._normaliser)


class IsolationForestDetector:
    """Streaming IsolationForest over windowed features of a :class:`RobustDetector`'s residuals.

    Features of each point (all in units of the baseline's robust scale s, so that they keep one
    distribution through trends and level shifts): the signed robust z ``(x - expected) / s``; the
    jump ``(x - previous x) / s``; the volatility ``mean |diff x| / (1.128 s)`` over the last
    ``feature_window`` points (about 1 for steady Gaussian noise); the mean signed z over the same
    points (a persistent offset: drift or a shift). The forest is fitted on the trailing
    ``train_window`` feature rows once ``min_train`` exist and refitted every ``refit_every`` points;
    a point is always scored by a forest fitted before it arrived, then joins the training window.

    Band: ``expected + s * [q_0.5%, q_99.5%]`` of the training rows' z, the range of deviations the
    forest last learnt as ordinary (the forest decides on all four features, so a point can be
    flagged inside the band, e.g. for volatility). Memory: the baseline's, ``train_window x 4`` floats
    and the compiled forest, 40 bytes a node, ``n_estimators`` trees of at most ``2 * max_samples - 1``
    nodes: about 0.3 MB with the defaults (1 MB at most), against 4 KB for the RobustDetector alone.
    Default thresholds on the forest score (chosen on the tuning stream of ``benchmarks/anomaly_eval.py``):
    info 0.62, warning 0.68, critical 0.75.
    """

    def __init__(
        self,
        *,
        baseline: RobustDetector | None = None,
        feature_window: int = 8,
        train_window: int = 512,
        min_train: int = 128,
        refit_every: int = 256,
        n_estimators: int = 50,
        max_samples: int = 256,
        thresholds: SeverityThresholds = SeverityThresholds(info=0.62, warning=0.68, critical=0.75),
        seed: int = 0,
    ) -> None:
        _check_whole("feature_window", feature_window, 2)
        _check_whole("train_window", train_window, 2)
        _check_whole("min_train", min_train, 2, train_window, "train_window")
        _check_whole("refit_every", refit_every, 1)
        _check_whole("n_estimators", n_estimators, 1)
        _check_whole("max_samples", max_samples, 2)
        _check_thresholds(thresholds)
        self.baseline = baseline if baseline is not None else RobustDetector()
        self.feature_window = feature_window
        self.train_window = train_window
        self.min_train = min_train
        self.refit_every = refit_every
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.thresholds = thresholds
        self._seeds = np.random.default_rng(seed)
        self._rows = np.empty((train_window, FEATURES))  # a ring: the forest ignores row order
        self._rows_seen = 0
        self._recent_values: deque[float] = deque(maxlen=feature_window + 1)
        self._recent_z: deque[float] = deque(maxlen=feature_window)
        self._forest: CompiledForest | None = None
        self._z_range = (math.nan, math.nan)
        self._since_fit = 0
        self._fits = 0

    @property
    def fits(self) -> int:
        """How many times the forest was fitted so far."""
        return self._fits

    def update(self, ts: Any, value: float) -> AnomalyPoint:
        """Score `value` at `ts`; same conventions as :meth:`RobustDetector.update`.

        Points score NaN until the baseline has ``min_history`` points and ``min_train`` feature rows exist.
        """
        base = self.baseline.update(ts, value)
        if math.isnan(base.score):
            return base
        row = self._features(base)
        if self._forest is None or self._since_fit >= self.refit_every:
            self._fit()
        self._rows[self._rows_seen % self.train_window] = row
        self._rows_seen += 1
        if self._forest is None:
            return _unscored(base.ts, base.value, base.expected)
        self._since_fit += 1
        score = float(self._forest.score(row)[0])
        scale = (base.upper - base.expected) / self.baseline.thresholds.warning
        low_z, high_z = self._z_range
        return AnomalyPoint(
            base.ts,
            base.value,
            base.expected,
            base.expected + low_z * scale,
            base.expected + high_z * scale,
            score,
            self.thresholds.classify(score),
            base.rebaselined,
        )

    def _features(self, base: AnomalyPoint) -> np.ndarray:
        scale = (base.upper - base.expected) / self.baseline.thresholds.warning
        previous = self._recent_values[-1] if self._recent_values else base.value
        self._recent_values.append(base.value)
        steps = np.abs(np.diff(np.fromiter(self._recent_values, float)))
        volatility = float(steps.mean()) / MEAN_ABS_DIFF_PER_SIGMA if len(steps) else 0.0
        raw = np.array([base.value - base.expected, base.value - previous, volatility])
        z, jump, volatility = np.clip(_safe_divide(raw, scale), -1e6, 1e6)
        self._recent_z.append(z)
        return np.array([z, jump, volatility, sum(self._recent_z) / len(self._recent_z)])

    def _fit(self) -> None:
        if self._rows_seen < self.min_train:
            return
        rows = self._rows[: min(self._rows_seen, self.train_window)]
        forest = IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=min(self.max_samples, len(rows)),
            random_state=int(self._seeds.integers(2**31)),
        ).fit(rows)
        self._forest = CompiledForest(forest)
        low, high = np.quantile(rows[:, 0], [0.005, 0.995])
        self._z_range = (float(low), float(high))
        self._since_fit = 0
        self._fits += 1


def _safe_divide(numerator: np.ndarray, scale: float) -> np.ndarray:
    """numerator / scale, where a zero scale gives 0 for 0 and +-inf (later clipped) otherwise."""
    if scale > 0.0:
        return numerator / scale
    return np.where(numerator == 0.0, 0.0, np.copysign(np.inf, numerator))


# --------------------------------------------------------------------------------------------
# Batch entry point.

#: The DataFrame columns :func:`detect_anomalies` returns, in order.
RESULT_COLUMNS = ("ts", "value", "expected", "lower", "upper", "score", "severity", "is_anomaly", "rebaselined")


def detect_anomalies(
    values: pd.Series | np.ndarray | Sequence[float],
    *,
    ts: Sequence[Any] | np.ndarray | pd.Index | None = None,
    detector: StreamingDetector | None = None,
) -> pd.DataFrame:
    """Run `detector` (default: a fresh :class:`RobustDetector`) over `values`; one row per value.

    Timestamps: `ts` if given, else the Series' DatetimeIndex, else positions 0, 1, 2, ... as
    seconds. The result keeps the input's index and has :data:`RESULT_COLUMNS`: ``ts`` (epoch
    seconds), the value, expected value and band, score, ``severity`` (ordered categorical of
    ok < info < warning < critical), ``is_anomaly`` and ``rebaselined``. The detector is advanced
    over the values, so a detector passed in carries its state on (or pass a fresh one). Same
    results as calling ``update`` point by point; NaN values are missing points, infinite ones a
    ValueError naming `values`.
    """
    if np.ndim(values) != 1:
        raise ValueError(f"values: expected one-dimensional data, got shape {np.shape(values)}.")
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    try:
        numbers = series.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as error:
        raise ValueError(f"values: not all numbers ({error}).") from None
    if np.isinf(numbers).any():
        raise ValueError(f"values: {int(np.isinf(numbers).sum())} infinite value(s); use NaN for missing points.")
    if ts is None:
        stamps = series.index if isinstance(series.index, pd.DatetimeIndex) else np.arange(len(series), dtype=float)
    else:
        stamps = ts
    if len(stamps) != len(numbers):
        raise ValueError(f"ts: {len(stamps)} timestamps for {len(numbers)} values.")
    if isinstance(stamps, pd.DatetimeIndex):
        if stamps.tz is None:
            raise ValueError("ts: naive DatetimeIndex; localise it (e.g. to UTC) first.")
        if stamps.hasnans:  # NaT would be read as the year -290,000
            raise ValueError(f"ts: {int(stamps.isna().sum())} missing timestamp(s) (NaT).")
        stamps = stamps.asi8 / _index_units_per_second(stamps)
    detector = detector if detector is not None else RobustDetector()
    points = [detector.update(stamp, number) for stamp, number in zip(stamps, numbers, strict=True)]
    return points_frame(points, index=series.index)


def _index_units_per_second(index: pd.DatetimeIndex) -> float:
    return float(np.timedelta64(1, "s") / np.timedelta64(1, index.unit))


def points_frame(points: Sequence[AnomalyPoint], *, index: pd.Index | None = None) -> pd.DataFrame:
    """A DataFrame of :data:`RESULT_COLUMNS` from scored points (e.g. a streaming detector's output)."""
    severities = pd.Categorical(
        [p.severity.name.lower() for p in points], categories=[s.name.lower() for s in Severity], ordered=True
    )
    return pd.DataFrame(
        {
            "ts": np.array([p.ts for p in points], dtype=np.float64),
            "value": np.array([p.value for p in points], dtype=np.float64),
            "expected": np.array([p.expected for p in points], dtype=np.float64),
            "lower": np.array([p.lower for p in points], dtype=np.float64),
            "upper": np.array([p.upper for p in points], dtype=np.float64),
            "score": np.array([p.score for p in points], dtype=np.float64),
            "severity": severities,
            "is_anomaly": np.array([p.is_anomaly for p in points], dtype=bool),
            "rebaselined": np.array([p.rebaselined for p in points], dtype=bool),
        },
        index=index,
    )
