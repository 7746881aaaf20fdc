"""Frames, correctness checks and timings of the holomorphic kernel, shared by the benchmark script
(`benchmarks/holomorphic.py`), the workers and the suite. No Ray here.

- `make_frames(kind, frames, n, rng)`: float32 test frames of one kind (random, chirp, multi-tone),
  never zeros; `sample_frames` makes all three.
- `check(process, n)`: the worst relative error ‖out − ref‖/‖ref‖ of the analytic signal, envelope
  and frequency against the float64 `scipy.signal.hilbert` reference; raises AccuracyError above 1e-5.
- `cpu_figures` / `gpu_figures`: the kernel timed beside its peer (`scipy.signal.hilbert`) on the
  CPU, and resident and from pinned host memory on the GPU.
- `host_copy_bandwidth` / `device_copy_bandwidth`: what a large copy achieves, counted as bytes read
  plus bytes written (2 × the array), the yardstick of `memory_efficiency`.

Bytes a sample moves: `MIN_BYTES_PER_SAMPLE` = 20, the compulsory traffic of the kernel's inputs and
outputs as the program sees them (4 B float32 read; 8 B complex64 + 4 B + 4 B float32 written), counted
like the copy (no write-allocate traffic on either side). Intermediates (the spectrum and H[x]) are
not counted: on the CPU they stay in the L2 cache (16-frame chunks), on the GPU they are extra traffic
the figure leaves out, so the GPU's efficiency is understated rather than flattered.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import scipy.fft
import scipy.signal

from elitemon.bench.holomorphic import CpuHolomorphic, GpuHolomorphic, reference

MIN_BYTES_PER_SAMPLE = 20  # float32 in; complex64 + float32 + float32 out
#: The kinds of test frame; each is non-zero everywhere that matters (a zero frame has no relative error).
SIGNALS = ("random", "chirp", "multi-tone")
#: The worst relative error the kernel may have against the float64 reference.
MAX_RELATIVE_ERROR = 1e-5


class AccuracyError(RuntimeError):
    """The kernel's output differs from the float64 reference by more than MAX_RELATIVE_ERROR."""


def make_frames(kind: str, frames: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """`frames` float32 frames of `n` samples of one kind: white noise, a linear chirp (random gain
    per frame), or three tones (random gains and phases per frame)."""
    if kind not in SIGNALS:
        raise ValueError(f"kind must be one of {SIGNALS}, but got {kind=}.")
    if kind == "random":
        return rng.standard_normal((frames, n), dtype=np.float32)
    t = np.arange(n)
    if kind == "chirp":
        chirp = np.sin(2 * np.pi * (0.01 * t + 0.4 * t**2 / (2 * n))).astype(np.float32)
        return chirp[None] * rng.uniform(0.5, 2, (frames, 1)).astype(np.float32)
    tones = np.zeros((frames, n), np.float32)
    for f in (37, 410, 1333 % (n // 2)):
        gain, phase = rng.uniform(0.2, 1, (frames, 1)), rng.uniform(0, 6, (frames, 1))
        tones += (gain * np.cos(2 * np.pi * f * t / n + phase)).astype(np.float32)
    return tones


def sample_frames(frames: int, n: int, seed: int) -> dict[str, np.ndarray]:
    """One array of each kind in SIGNALS."""
    rng = np.random.default_rng(seed)
    return {kind: make_frames(kind, frames, n, rng) for kind in SIGNALS}


def relative_errors(got, want) -> dict[str, float]:
    def rel(a, b) -> float:
        return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))

    return {
        "signal": rel(got.signal, want.signal),
        "envelope": rel(got.envelope, want.envelope),
        "frequency": rel(got.frequency, want.frequency),
    }


def check(process: Callable[[np.ndarray], object], n: int, to_host: Callable = np.asarray) -> float:
    """The worst relative error over the three inputs (8 frames each) and three outputs; raises
    AccuracyError above MAX_RELATIVE_ERROR."""
    worst = 0.0
    for name, frames in sample_frames(8, n, seed=int(time.time())).items():
        result = process(frames)
        got = type(result)(*(to_host(part) for part in (result.signal, result.envelope, result.frequency)))
        errors = relative_errors(got, reference(frames))
        worst = max(worst, *errors.values())
        if max(errors.values()) > MAX_RELATIVE_ERROR:
            raise AccuracyError(f"{name}: relative error {errors} over {MAX_RELATIVE_ERROR:g}")
    return worst


def median_seconds(run: Callable[[], None], repeat: int) -> float:
    """The median wall time of `repeat` runs after one warm-up run."""
    run()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def interleaved_seconds(runs: dict[str, Callable[[], None]], rounds: int, burst: int = 4) -> dict[str, list[float]]:
    """Per round, the median wall time of each of `runs`, over `rounds` rounds that give each a burst
    of `burst` consecutive calls in turn; the first call of a burst warms up (after the others have
    filled the caches and freed their memory) and is not timed. Taking turns puts a shared machine's
    slow spells on all runs alike, so that ratios within a round hold even when absolute figures
    drift between rounds; the bursts time each in the steady state it would have alone."""
    if burst < 2:
        raise ValueError(f"burst: at least 2 (one warm-up call and one timed), got {burst}")
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            times[name].append(median_seconds(run, burst - 1))
    return times


def host_copy_bandwidth(nbytes: int, threads: int = 1, repeat: int = 5) -> float:
    """Bytes/s (read + written) of `np.copyto` between two `nbytes` arrays, split over `threads`
    threads (NumPy releases the GIL for the copy). Make `nbytes` several times the last-level cache."""
    source = np.ones(nbytes, np.uint8)  # written, so that reads hit real pages, not the zero page
    target = np.empty_like(source)
    bounds = np.linspace(0, nbytes, threads + 1).astype(np.int64)
    spans = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    with ThreadPoolExecutor(threads) as pool:
        seconds = median_seconds(lambda: list(pool.map(lambda s: np.copyto(target[s], source[s]), spans)), repeat)
    return 2 * nbytes / seconds


def device_copy_bandwidth(nbytes: int = 256 * 2**20, repeat: int = 10) -> float:
    """Bytes/s (read + written) of a device-to-device copy on the current GPU, CUDA-event timed."""
    import cupy as cp

    source = cp.ones(nbytes, cp.uint8)
    target = cp.empty_like(source)
    return 2 * nbytes / event_median_seconds(lambda: cp.copyto(target, source), repeat)


def event_median_seconds(run: Callable[[], None], repeat: int) -> float:
    """The median GPU time of `repeat` runs (CUDA events on the current stream) after one warm-up."""
    import cupy as cp

    run()
    cp.cuda.Device().synchronize()
    start, stop, times = cp.cuda.Event(), cp.cuda.Event(), []
    for _ in range(repeat):
        start.record()
        run()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
    return statistics.median(times)


def cpu_figures(n: int, frames: int, repeat: int, cores: int | None = None) -> dict:
    """elitemon's CPU kernel on `cores` threads beside scipy.signal.hilbert (1 thread, and `cores`
    workers) on the same random frames; samples/s of each and the worst relative error."""
    cores = cores or os.cpu_count() or 1
    x = np.random.default_rng(0).standard_normal((frames, n)).astype(np.float32)
    ours = CpuHolomorphic(n, frames, workers=cores)
    worst = check(lambda f: CpuHolomorphic(n, len(f), workers=cores).process(f), n)
    samples = frames * n

    def peer_on_all_cores() -> None:
        with scipy.fft.set_workers(cores):
            scipy.signal.hilbert(x, axis=-1)

    seconds = interleaved_seconds(
        {
            "ours": lambda: ours.process(x),
            "peer": lambda: scipy.signal.hilbert(x, axis=-1),
            "peer_threads": peer_on_all_cores,
        },
        rounds=max(1, repeat // 3),
    )
    ours.close()
    # Ours over the peer within each round (same machine state), then the median over rounds.
    speedups = [p / o for p, o in zip(seconds["peer"], seconds["ours"], strict=True)]
    threads_speedups = [p / o for p, o in zip(seconds["peer_threads"], seconds["ours"], strict=True)]
    return {
        "cores": cores,
        "max_relative_error": worst,
        "samples_per_s": samples / statistics.median(seconds["ours"]),
        "scipy_hilbert_samples_per_s": samples / statistics.median(seconds["peer"]),
        "scipy_hilbert_threads_samples_per_s": samples / statistics.median(seconds["peer_threads"]),
        "speedup_over_scipy": statistics.median(speedups),
        "speedup_over_scipy_min_max": [min(speedups), max(speedups)],
        "speedup_over_scipy_threads": statistics.median(threads_speedups),
    }


def gpu_figures(n: int, frames: int, repeat: int) -> dict:
    """The CuPy kernel on the current GPU: resident data (CUDA events), pinned host data (two
    streams), the device's copy bandwidth and the kernel's share of it."""
    import cupy as cp

    from elitemon.bench.holomorphic import pinned_empty

    gpu = GpuHolomorphic(n, frames)
    worst = check(lambda f: GpuHolomorphic(n, len(f)).process(cp.asarray(f)), n, to_host=cp.asnumpy)
    x = cp.random.default_rng(0).standard_normal((frames, n), dtype=cp.float32)
    samples = frames * n
    resident_s = event_median_seconds(lambda: gpu.process(x), repeat)
    copy_bandwidth = device_copy_bandwidth(256 * 2**20, repeat)  # 256 MiB, far beyond the L2
    host = pinned_empty((frames, n), np.float32)
    host[...] = cp.asnumpy(x)
    host_s = median_seconds(lambda: gpu.process_host(host), repeat)
    return {
        "device": device_name(),
        "max_relative_error": worst,
        "samples_per_s": samples / resident_s,
        "bytes_per_s": samples * MIN_BYTES_PER_SAMPLE / resident_s,
        "copy_bandwidth_bytes_per_s": copy_bandwidth,
        "memory_efficiency": samples * MIN_BYTES_PER_SAMPLE / resident_s / copy_bandwidth,
        "host_samples_per_s": samples / host_s,
    }


def device_name(device: int = 0) -> str:
    """The CUDA device's name, as CuPy reports it."""
    import cupy as cp

    name: Any = cp.cuda.runtime.getDeviceProperties(device)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)
