"""Holomorphic kernel throughput, checked against scipy.signal.hilbert, on the CPU and (if any) the GPU.

    python benchmarks/holomorphic.py                 # N=4096, CPU here; GPU too where CuPy sees one
    python benchmarks/holomorphic.py --quick         # small sizes, a smoke test
    python benchmarks/holomorphic.py --json out.json

Every path is first checked against the float64 reference (relative error ‖out − ref‖/‖ref‖ of the
analytic signal, envelope and frequency on random, chirp and multi-tone frames, never zeros), then
timed, about `--repeat` calls of each (the functions live in `elitemon.bench.measure`, shared with
the benchmark suite, `benchmarks/run_suite.py`):
- CPU: elitemon's kernel on all cores, beside the peer `scipy.signal.hilbert` on the same frames,
  single-threaded (as users call it) and with `scipy.fft.set_workers(cores)`, taking turns in short
  bursts; the speedups are medians of the ratios within each round, which a shared machine's
  drifting speed leaves alone;
- GPU, data resident on the device: CUDA events around `process`, frames several times the L2;
- GPU, data in pinned host memory: copies overlapped with compute on two streams;
- the device's copy bandwidth (a large device-to-device copy, bytes read + written), so that the
  kernel's bytes per second (20 bytes a sample: 4 read, 16 written) can be set against it.
"""

from __future__ import annotations

import argparse
import json
import platform

from elitemon.bench.holomorphic import gpu_unavailable_reason
from elitemon.bench.measure import (  # noqa: F401 (re-exported: the kernel's tests import these from here)
    MIN_BYTES_PER_SAMPLE,
    check,
    cpu_figures,
    gpu_figures,
    median_seconds,
    relative_errors,
    sample_frames,
)


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
        low, high = cpu["speedup_over_scipy_min_max"]
        print(
            f"  elitemon / scipy, median of per-round ratios: {cpu['speedup_over_scipy']:.2f}x (1 thread; "
            f"rounds {low:.2f}-{high:.2f}x), {cpu['speedup_over_scipy_threads']:.2f}x (same workers)"
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
