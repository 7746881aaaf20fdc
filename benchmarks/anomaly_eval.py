"""Anomaly detectors on labelled synthetic throughput streams, against two baselines.

    python benchmarks/anomaly_eval.py            # 10 test streams x 20,000 points (about 65 s of CPU)
    python benchmarks/anomaly_eval.py --quick    # 2 test streams x 8,000 points (about 7 s of CPU)

The streams: throughput of one agent, one point a minute (the numbers are in points, so the
cadence only names the period): 1000 units/s falling 15 % over the stream (a slow trend), a
daily-like seasonality (period 1440 points, +-10 % plus a +-3 % harmonic), multiplicative AR(1)
noise (phi 0.4, Student-t innovations with 6 degrees of freedom, 3 % standard deviation). The first
1440 points (one period) are clean: the static baseline trains on them and every detector warms
up in them; scoring starts after them. Then, every 150 to 400 points, one anomaly of a random type
(sizes in sigma = the 3 % noise):
- spike: one point up 6-12 sigma;
- dip: 1-3 points down to 30-75 % of the expected value (a stall);
- level_shift: the rest of the stream moves 6-10 sigma up or down (labelled: its first 10 points;
  after that the new level is normal, so a detector that never re-baselines pays in false alarms);
- variance: 50-120 points with the noise 3-5 times larger (labelled: the whole segment);
- drift: 100-250 points sliding down linearly to 6-10 sigma below normal, then snapping back
  (a leak and a restart; labelled: the whole segment).
Tuning streams use seed 0; test streams use seeds 1, 2, ... (fixed: the run is reproducible).

Scoring, micro-averaged over the test streams (counts summed, then ratios):
- point level: every labelled point is a positive; precision, recall and F1 over points.
- event level: an event is detected when a flag falls in [onset, end + 5); a run of flags (flags
  at most 5 points apart form one run) that touches no event window is one false alarm; precision
  = detected / (detected + false alarms), recall = detected / events. This is what an alert
  engine feels: one alert per incident, each spurious run is one page.
- detection delay: points from onset to the first flag in the window, for detected segment events
  (level_shift, variance, drift); spikes and dips are single points (delay 0 or missed).

Methods: the two detectors of ``elitemon.analytics.anomaly`` with their defaults (chosen while
developing on the seed-0 tuning streams), a static threshold (mean +- k std of the clean prefix),
and a plain rolling z-score (mean and std of the previous points, |z| >= k). The baselines are
shown at the textbook k = 3 (rolling window 120) and at the k from {2.5, 3, ..., 6} (and, for the
rolling z-score, the window from {60, 120, 240, 480}) that maximises their event F1 on the tuning
streams. Speed: the detectors' CPU time over all test points, single-threaded, one point at a time
through ``update`` (the alert engine's path).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from elitemon.analytics.anomaly import IsolationForestDetector, RobustDetector, StreamingDetector

PERIOD = 1440
PREFIX = PERIOD
NOISE = 0.03
ROLLING_WINDOWS = (60, 120, 240, 480)
TOLERANCE = 5
MERGE_GAP = 5
LEVEL_SHIFT_LABEL = 10
KINDS = ("spike", "dip", "level_shift", "variance", "drift")
SEGMENT_KINDS = ("level_shift", "variance", "drift")
BASELINE_KS = tuple(np.arange(2.5, 6.01, 0.5))


@dataclass(frozen=True)
class Event:
    kind: str
    onset: int
    end: int  # exclusive


@dataclass(frozen=True)
class LabelledStream:
    values: np.ndarray
    labels: np.ndarray
    events: tuple[Event, ...]


def make_stream(seed: int, length: int) -> LabelledStream:
    """One labelled throughput stream (see the module docstring for its recipe)."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    phase, harmonic_phase = rng.uniform(0, 2 * np.pi, 2)
    expected = (
        1000.0
        * (1.0 - 0.15 * t / length)
        * (1.0 + 0.10 * np.sin(2 * np.pi * t / PERIOD + phase) + 0.03 * np.sin(4 * np.pi * t / PERIOD + harmonic_phase))
    )
    innovations = rng.standard_t(6, length) / np.sqrt(6 / 4)  # unit variance
    noise = np.empty(length)
    noise[0] = innovations[0]
    for i in range(1, length):
        noise[i] = 0.4 * noise[i - 1] + np.sqrt(1 - 0.4**2) * innovations[i]
    factor = 1.0 + NOISE * noise
    labels = np.zeros(length, dtype=bool)
    events: list[Event] = []
    position = PREFIX + int(rng.integers(150, 400))
    while position < length - 300:
        kind = KINDS[int(rng.integers(len(KINDS)))]
        size = rng.uniform(6, 10) * NOISE
        if kind == "spike":
            end = position + 1
            factor[position] += rng.uniform(6, 12) * NOISE
        elif kind == "dip":
            end = position + int(rng.integers(1, 4))
            factor[position:end] *= rng.uniform(0.30, 0.75)
        elif kind == "level_shift":
            end = position + LEVEL_SHIFT_LABEL
            expected[position:] *= 1.0 + size * rng.choice([-1.0, 1.0])
        elif kind == "variance":
            end = position + int(rng.integers(50, 121))
            factor[position:end] += (rng.uniform(3, 5) - 1.0) * NOISE * noise[position:end]
        else:
            end = position + int(rng.integers(100, 251))
            factor[position:end] -= size * np.arange(1, end - position + 1) / (end - position)
        labels[position:end] = True
        events.append(Event(kind, position, end))
        position = end + int(rng.integers(150, 400))
    return LabelledStream(expected * factor, labels, tuple(events))


# --------------------------------------------------------------------------------------------
# Methods: each returns one flag per point.


def static_threshold_flags(values: np.ndarray, k: float) -> np.ndarray:
    prefix = values[:PREFIX]
    return np.abs(values - prefix.mean()) >= k * prefix.std()


def rolling_zscore_flags(values: np.ndarray, k: float, window: int) -> np.ndarray:
    series = pd.Series(values)
    previous = series.shift(1).rolling(window, min_periods=window)
    z = (series - previous.mean()) / previous.std()
    return (z.abs() >= k).to_numpy()


def detector_flags(values: np.ndarray, detector: StreamingDetector) -> tuple[np.ndarray, float]:
    """Flags from `detector`, fed one point at a time, and the CPU seconds that took.

    CPU time of this process, not wall time: the figure should not depend on what else the machine runs.
    """
    flags = np.zeros(len(values), dtype=bool)
    started = time.process_time()
    for i, value in enumerate(values):
        flags[i] = detector.update(float(i), value).is_anomaly
    return flags, time.process_time() - started


# --------------------------------------------------------------------------------------------
# Scoring.


@dataclass
class Tally:
    """Counts summed over streams; ratios are computed from the sums (micro-average)."""

    point_tp: int = 0
    point_fp: int = 0
    point_fn: int = 0
    detected: int = 0
    false_alarms: int = 0
    missed: int = 0
    detected_by_kind: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    events_by_kind: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    delays_by_kind: dict[str, list[int]] = field(default_factory=lambda: {k: [] for k in KINDS})

    def add(self, stream: LabelledStream, flags: np.ndarray) -> None:
        flags, labels = flags[PREFIX:], stream.labels[PREFIX:]
        self.point_tp += int((flags & labels).sum())
        self.point_fp += int((flags & ~labels).sum())
        self.point_fn += int((~flags & labels).sum())
        windows = np.zeros(len(flags), dtype=bool)
        for event in stream.events:
            start, stop = event.onset - PREFIX, min(event.end + TOLERANCE, len(stream.values)) - PREFIX
            windows[start:stop] = True
            hits = np.flatnonzero(flags[start:stop])
            self.events_by_kind[event.kind] += 1
            if len(hits):
                self.detected += 1
                self.detected_by_kind[event.kind] += 1
                self.delays_by_kind[event.kind].append(int(hits[0]))
            else:
                self.missed += 1
        for run_start, run_stop in _alarm_runs(flags):
            if not windows[run_start:run_stop].any():
                self.false_alarms += 1

    def point_prf(self) -> tuple[float, float, float]:
        return _prf(self.point_tp, self.point_fp, self.point_fn)

    def event_prf(self) -> tuple[float, float, float]:
        return _prf(self.detected, self.false_alarms, self.missed)

    def median_delay(self, kinds: tuple[str, ...] = SEGMENT_KINDS) -> float:
        delays = [d for kind in kinds for d in self.delays_by_kind[kind]]
        return float(np.median(delays)) if delays else float("nan")


def _alarm_runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of runs of flags, merging flags at most MERGE_GAP points apart."""
    indices = np.flatnonzero(flags)
    if not len(indices):
        return []
    breaks = np.flatnonzero(np.diff(indices) > MERGE_GAP + 1)
    starts = np.concatenate([[indices[0]], indices[breaks + 1]])
    stops = np.concatenate([indices[breaks], [indices[-1]]]) + 1
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


# --------------------------------------------------------------------------------------------
# The run.


def best_setting(streams: list[LabelledStream], flag: Callable[..., np.ndarray], settings: list[tuple]) -> tuple:
    """The baseline's setting (arguments after the values) with the best event F1 on `streams`; ties: the first."""
    scores = []
    for setting in settings:
        tally = Tally()
        for stream in streams:
            tally.add(stream, flag(stream.values, *setting))
        scores.append(tally.event_prf()[2])
    return settings[int(np.argmax(scores))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 test streams of 8,000 points (< 30 s)")
    args = parser.parse_args()
    streams, length = (2, 8_000) if args.quick else (10, 20_000)
    tuning = [make_stream(0, length)]
    tests = [make_stream(seed, length) for seed in range(1, streams + 1)]
    n_events = sum(len(s.events) for s in tests)
    print(f"{streams} test streams x {length:,} points, {n_events} anomalies; tuning: seed 0 ({len(tuning[0].events)})")

    (static_k,) = best_setting(tuning, static_threshold_flags, [(k,) for k in BASELINE_KS])
    rolling_k, rolling_window = best_setting(
        tuning, rolling_zscore_flags, [(k, w) for k in BASELINE_KS for w in ROLLING_WINDOWS]
    )
    baselines: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "static mean+-3std (prefix)": lambda v: static_threshold_flags(v, 3.0),
        f"static mean+-{static_k:g}std (tuned)": lambda v: static_threshold_flags(v, static_k),
        "rolling z-score |z|>=3, 120 points": lambda v: rolling_zscore_flags(v, 3.0, 120),
        f"rolling z-score |z|>={rolling_k:g}, {rolling_window} (tuned)": lambda v: rolling_zscore_flags(
            v, rolling_k, rolling_window
        ),
    }
    detectors: dict[str, Callable[[], StreamingDetector]] = {
        "RobustDetector": RobustDetector,
        "IsolationForestDetector": IsolationForestDetector,
    }
    tallies: dict[str, Tally] = {}
    speeds: dict[str, float] = {}
    for name, flag in baselines.items():
        tallies[name] = Tally()
        for stream in tests:
            tallies[name].add(stream, flag(stream.values))
    for name, make in detectors.items():
        tallies[name] = Tally()
        seconds = 0.0
        for stream in tests:
            flags, elapsed = detector_flags(stream.values, make())
            seconds += elapsed
            tallies[name].add(stream, flags)
        speeds[name] = streams * length / seconds

    print()
    print(f"{'method':<40} {'point P':>7} {'R':>5} {'F1':>5}   {'event P':>7} {'R':>5} {'F1':>5}  {'delay':>5}")
    for name, tally in tallies.items():
        (pp, pr, pf), (ep, er, ef) = tally.point_prf(), tally.event_prf()
        delay = tally.median_delay()
        print(f"{name:<40} {pp:>7.3f} {pr:>5.3f} {pf:>5.3f}   {ep:>7.3f} {er:>5.3f} {ef:>5.3f}  {delay:>5.1f}")
    print("(delay: median points from onset to the first flag, detected level shifts, variance changes and drifts)")
    print()
    print(f"{'event recall / median delay by kind':<40} " + " ".join(f"{kind:>13}" for kind in KINDS))
    for name, tally in tallies.items():
        cells = [
            f"{tally.detected_by_kind[k] / max(tally.events_by_kind[k], 1):.2f} / {tally.median_delay((k,)):>4.0f}"
            for k in KINDS
        ]
        print(f"{name:<40} " + " ".join(f"{cell:>13}" for cell in cells))
    print("events: " + ", ".join(f"{k} {tallies[next(iter(tallies))].events_by_kind[k]}" for k in KINDS))
    print()
    for name in detectors:
        pf, ef = tallies[name].point_prf()[2], tallies[name].event_prf()[2]
        for baseline in baselines:
            bpf, bef = tallies[baseline].point_prf()[2], tallies[baseline].event_prf()[2]
            print(
                f"{name} / {baseline}: point F1 x{pf / bpf if bpf else float('inf'):.2f}, "
                f"event F1 x{ef / bef if bef else float('inf'):.2f}"
            )
    print()
    for name, rate in speeds.items():
        print(f"{name}: {rate:,.0f} points/s ({1e6 / rate:.1f} us/point), one point at a time, one thread, CPU time")


if __name__ == "__main__":
    main()
