"""Holomorphic kernel throughput, checked against scipy.signal.hilbert, on the CPU and (if any) the GPU.

    python benchmarks/holomorphic.py                 # N=4096, CPU here; GPU too where CuPy sees one
    python benchmarks/holomorphic.py --quick         # small sizes, a smoke test
    python benchmarks/holomorphic.py --json out.json

Every path is first checked against the float64 reference (relative error ‖out − ref‖/‖ref‖ of the
analytic signal, envelope and frequency on random, chirp and multi-tone frames, never zeros), then
timed, median of `--repeat` runs after a warm-up:
- CPU: elitemon's kernel on all cores, beside the peer `scipy.signal.hilbert` on the same frames,
  single-threaded (as users call it) and with `scipy.fft.set_workers(cores)`;
- GPU, data resident on the device: CUDA events around `process`, frames several times the L2;
- GPU, data in pinned host memory: copies overlapped with compute on two streams;
- the device's copy bandwidth (a large device-to-device copy, bytes read + written), so that the
  kernel's bytes per second (20 bytes a sample: 4 read, 16 written) can be set against it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import scipy.fft
import scipy.signal

from elitemon.bench.holomorphic import CpuHolomorphic, GpuHolomorphic, gpu_unavailable_reason, reference

MIN_BYTES_PER_SAMPLE = 20  # float32 in; complex64 + float32 + float32 out


def sample_frames(frames: int, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    chirp = np.sin(2 * np.pi * (0.01 * t + 0.4 * t**2 / (2 * n)))
    tones = sum(
        rng.uniform(0.2, 1, (frames, 1)) * np.cos(2 * np.pi * f * t / n + rng.uniform(0, 6, (frames, 1)))
        for f in (37, 410, 1333 % (n // 2))
    )
    return {
        "random": rng.standard_normal((frames, n)).astype(np.float32),
        "chirp": (chirp[None] * rng.uniform(0.5, 2, (frames, 1))).astype(np.float32),
        "multi-tone": tones.astype(np.float32),
    }


def relative_errors(got, want) -> dict[str, float]:
    def rel(a, b) -> float:
        return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))

    return {
        "signal": rel(got.signal, want.signal),
        "envelope": rel(got.envelope, want.envelope),
        "frequency": rel(got.frequency, want.frequency),
    }


def check(process: Callable[[np.ndarray], object], n: int, to_host: Callable = np.asarray) -> float:
    """The worst relative error over the three inputs and three outputs; raises above 1e-5."""
    worst = 0.0
    for name, frames in sample_frames(8, n, seed=int(time.time())).items():
        result = process(frames)
        got = type(result)(*(to_host(part) for part in (result.signal, result.envelope, result.frequency)))
        errors = relative_errors(got, reference(frames))
        worst = max(worst, *errors.values())
        if max(errors.values()) > 1e-5:
            raise SystemExit(f"{name}: relative error {errors} over 1e-5")
    return worst


def median_seconds(run: Callable[[], None], repeat: int) -> float:
    run()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cpu_figures(n: int, frames: int, repeat: int) -> dict:
    cores = os.cpu_count() or 1
    x = np.random.default_rng(0).standard_normal((frames, n)).astype(np.float32)
    ours = CpuHolomorphic(n, frames, workers=cores)
    worst = check(lambda f: CpuHolomorphic(n, len(f), workers=cores).process(f), n)
    samples = frames * n
    ours_s = median_seconds(lambda: ours.process(x), repeat)
    peer_s = median_seconds(lambda: scipy.signal.hilbert(x, axis=-1), repeat)
    with scipy.fft.set_workers(cores):
        peer_threads_s = median_seconds(lambda: scipy.signal.hilbert(x, axis=-1), repeat)
    return {
        "cores": cores,
        "max_relative_error": worst,
        "samples_per_s": samples / ours_s,
        "scipy_hilbert_samples_per_s": samples / peer_s,
        "scipy_hilbert_threads_samples_per_s": samples / peer_threads_s,
    }


def gpu_figures(n: int, frames: int, repeat: int) -> dict:
    import cupy as cp

    gpu = GpuHolomorphic(n, frames)
    worst = check(lambda f: GpuHolomorphic(n, len(f)).process(cp.asarray(f)), n, to_host=cp.asnumpy)
    x = cp.random.default_rng(0).standard_normal((frames, n), dtype=cp.float32)

    def event_median(run: Callable[[], None]) -> float:
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

    samples = frames * n
    resident_s = event_median(lambda: gpu.process(x))
    source = cp.empty(256 * 2**20, cp.uint8)  # 256 MiB, far beyond the L2
    target = cp.empty_like(source)
    copy_s = event_median(lambda: cp.copyto(target, source))
    copy_bandwidth = 2 * source.nbytes / copy_s  # read + written
    from elitemon.bench.holomorphic import pinned_empty

    host = pinned_empty((frames, n), np.float32)
    host[...] = cp.asnumpy(x)
    host_s = median_seconds(lambda: gpu.process_host(host), repeat)
    props = cp.cuda.runtime.getDeviceProperties(0)
    return {
        "device": props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"]),
        "max_relative_error": worst,
        "samples_per_s": samples / resident_s,
        "bytes_per_s": samples * MIN_BYTES_PER_SAMPLE / resident_s,
        "copy_bandwidth_bytes_per_s": copy_bandwidth,
        "memory_efficiency": samples * MIN_BYTES_PER_SAMPLE / resident_s / copy_bandwidth,
        "host_samples_per_s": samples / host_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frame-size", type=int, default=4096)
    parser.add_argument("--cpu-frames", type=int, default=512)
    parser.add_argument("--gpu-frames", type=int, default=65536, help="65536 x 4096 samples: 1 GiB in")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--no-cpu", action="store_true", help="GPU figures only")
    args = parser.parse_args()
    if args.quick:
        args.cpu_frames, args.gpu_frames, args.repeat = 32, 256, 3
    n = args.frame_size
    figures: dict = {"frame_size": n, "machine": platform.processor() or platform.machine()}
    if not args.no_cpu:
        cpu = figures["cpu"] = cpu_figures(n, args.cpu_frames, args.repeat)
        error = cpu["max_relative_error"]
        print(f"CPU ({cpu['cores']} cores), N={n}, {args.cpu_frames} frames, max rel. error {error:.1e}")
        print(f"  elitemon                          {cpu['samples_per_s'] / 1e6:10.1f} M samples/s")
        print(f"  scipy.signal.hilbert, 1 thread    {cpu['scipy_hilbert_samples_per_s'] / 1e6:10.1f} M samples/s")
        threads = cpu["scipy_hilbert_threads_samples_per_s"]
        print(f"  scipy.signal.hilbert, {cpu['cores']} workers  {threads / 1e6:10.1f} M samples/s")
        print(
            f"  elitemon / scipy: {cpu['samples_per_s'] / cpu['scipy_hilbert_samples_per_s']:.2f}x "
            f"(1 thread), {cpu['samples_per_s'] / cpu['scipy_hilbert_threads_samples_per_s']:.2f}x (same workers)"
        )
    reason = gpu_unavailable_reason()
    if reason is None:
        gpu = figures["gpu"] = gpu_figures(n, args.gpu_frames, args.repeat)
        print(f"GPU {gpu['device']}, N={n}, {args.gpu_frames} frames, max rel. error {gpu['max_relative_error']:.1e}")
        print(f"  resident on the device   {gpu['samples_per_s'] / 1e9:8.1f} G samples/s")
        print(f"  from pinned host memory  {gpu['host_samples_per_s'] / 1e9:8.1f} G samples/s")
        print(f"  device copy bandwidth    {gpu['copy_bandwidth_bytes_per_s'] / 1e12:8.2f} TB/s (read + written)")
        print(
            f"  kernel at 20 B/sample    {gpu['bytes_per_s'] / 1e12:8.2f} TB/s = {gpu['memory_efficiency']:.0%} of it"
        )
        if "cpu" in figures:
            print(f"  GPU / CPU: {gpu['samples_per_s'] / figures['cpu']['samples_per_s']:.1f}x")
    else:
        figures["gpu"] = {"skipped": reason}
        print(f"GPU: not measured ({reason})")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)


if __name__ == "__main__":
    main()
