"""An ordinary Ray Tune PBT job, monitored by elitemon: the only elitemon line is the callback.

    python examples/attach_to_tune.py
    ray job submit --working-dir . -- python examples/attach_to_tune.py

Each trial fits y = 3x - 1 by gradient descent on noisy batches; PBT tunes the step size and the
momentum. elitemon stores every result, each trial's hyperparameters, every exploit (matching
`pbt_global.txt`) and the nodes' CPU, memory and GPU figures in its data directory; query them
afterwards with `elitemon query samples --metric score` against a running aggregator, or open the
Parquet segments there.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from ray import tune
from ray.tune.schedulers import PopulationBasedTraining

from elitemon.tune import MonitorCallback

STATE = "state.json"


def fit_line(config: dict) -> None:
    """A function trainable that checkpoints its parameters *and* its step, so that a trial PBT
    restores from another trial's checkpoint carries on from there rather than starting over."""
    weights, velocity, step = np.zeros(2), np.zeros(2), 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = json.loads(Path(directory, STATE).read_text())
        weights, velocity, step = np.array(state["weights"]), np.array(state["velocity"]), state["step"]
    rng = np.random.default_rng(step)
    while True:
        x = rng.uniform(-1, 1, 256)
        y = 3.0 * x - 1.0 + rng.normal(0, 0.1, x.size)
        error = weights[0] * x + weights[1] - y
        gradient = np.array([np.mean(error * x), np.mean(error)]) * 2
        velocity = config["momentum"] * velocity - config["lr"] * gradient
        weights = weights + velocity
        step += 1
        with tempfile.TemporaryDirectory() as directory:
            state = {"weights": weights.tolist(), "velocity": velocity.tolist(), "step": step}
            Path(directory, STATE).write_text(json.dumps(state))
            tune.report({"score": -float(np.mean(error**2))}, checkpoint=tune.Checkpoint.from_directory(directory))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8, help="population size (default 8)")
    parser.add_argument("--iterations", type=int, default=30, help="training iterations per trial (default 30)")
    parser.add_argument("--data-dir", default=None, help="elitemon's data directory (default ~/.elitemon/data)")
    parser.add_argument("--storage-path", default=None, help="Tune's results directory (default ~/ray_results)")
    args = parser.parse_args()

    scheduler = PopulationBasedTraining(
        time_attr="training_iteration",
        metric="score",
        mode="max",
        perturbation_interval=3,
        quantile_fraction=0.5,  # the weaker half copies the stronger half at each perturbation
        hyperparam_mutations={"lr": tune.loguniform(1e-4, 0.3), "momentum": [0.0, 0.5, 0.9, 0.95]},
    )
    tuner = tune.Tuner(
        tune.with_resources(fit_line, {"cpu": 0.25}),
        param_space={"lr": tune.loguniform(1e-4, 0.3), "momentum": tune.choice([0.0, 0.5, 0.9, 0.95])},
        tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=args.samples),
        run_config=tune.RunConfig(
            name="attach_to_tune",
            storage_path=args.storage_path,
            stop={"training_iteration": args.iterations},
            callbacks=[MonitorCallback(data_dir=args.data_dir)],  # the one line that adds elitemon
            verbose=1,
        ),
    )
    results = tuner.fit()
    best = results.get_best_result(metric="score", mode="max")
    print(f"best trial: {best.metrics['trial_id']} score {best.metrics['score']:.4f} config {best.config}")


if __name__ == "__main__":
    main()
