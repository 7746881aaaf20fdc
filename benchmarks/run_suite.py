"""elitemon's benchmark suite, scored: holomorphic processing, GPU acceleration, distributed scaling,
memory efficiency and the demo PBT's target achievement, with the scipy peer beside them.

    python benchmarks/run_suite.py                      # local Ray (or the running cluster); ~3 minutes
    python benchmarks/run_suite.py --skip-pbt --json suite.json
    python benchmarks/run_suite.py --quick --skip-pbt   # small sizes, a smoke test
    ray job submit --working-dir . -- python benchmarks/run_suite.py --address auto

The same code runs as `elitemon bench`; what each benchmark measures and how it is scored is in
`elitemon/bench/suite.py`.
"""

from __future__ import annotations

import sys

from elitemon.bench.suite import main

if __name__ == "__main__":
    sys.exit(main())
