"""Benchmarks that elitemon runs on the user's hardware.

- `holomorphic`: the analytic-signal kernel (envelope and instantaneous frequency) on NumPy/SciPy
  and on CuPy, and `make_processor`, which picks the backend;
- `measure`: frames, correctness checks against `scipy.signal.hilbert`, timing, copy bandwidth;
- `workers`: `HolomorphicWorker` actors (one per GPU, or CPU workers) reporting
  `holomorphic_throughput` to the store while they run;
- `suite`: the five scored benchmarks behind `elitemon bench` and `benchmarks/run_suite.py`.
"""
