"""How often does each importance method rank the true top driver first, on synthetic PBT populations?

    python benchmarks/importance_eval.py            # the full run (20 populations per cell)
    python benchmarks/importance_eval.py --quick    # a smoke run, < 30 s

Each population is a synchronous PBT run simulated with a fixed seed and written as elitemon stores it
(samples and configs tables, in Ray Tune's write order), then analysed through the public API:
config_scores -> hyperparameter_importance (random forest permutation importance, and Spearman).

A population: `agents` agents for `generations` generations with four hyperparameters, lr
(log-uniform 1e-4..1e-1), gamma and entropy (uniform 0..1) and optimizer (adam/rmsprop/sgd). One of
them, drawn at random, is the true top driver (its effect has standard deviation 1 over the initial
sampling distribution); a second one has std 0.5, a third 0.25, the last none. The shape of the top
driver is the cell's: `monotonic` (linear in the parameter's position in its range; for optimizer
a random effect per category), `peaked` (an optimum in the middle of the range: (1 - 4 (z - 0.5)^2),
rank correlation near 0; optimizer as for monotonic), or `categorical` (the top driver is always
optimizer). The score of an agent at generation g = 3 log(1 + g) + the effects of the config it
trained with + an offset it inherits (the weights: copied on exploit, drifting by N(0, 0.1) a
generation) + N(0, noise). Every 4 generations the bottom quarter copies the top quarter (config,
offset) and perturbs it (numeric: x0.8 or x1.2, clipped to the range, or resampled with p 0.25;
optimizer resampled with p 0.25), so configs concentrate over time as in a real run.

Success = the method's first-ranked parameter is the true top driver. Chance is 1/4. Spearman cannot
rank a categorical parameter (it has no order), so it never wins the categorical cells: that row shows
what a tracker that reports only correlations misses.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from elitemon.analytics.importance import config_scores, hyperparameter_importance

T0 = 1_700_000_000.0
PARAMS = ("lr", "gamma", "entropy", "optimizer")
OPTIMIZERS = ("adam", "rmsprop", "sgd")
LR_RANGE = (1e-4, 1e-1)
SHAPES = ("monotonic", "peaked", "categorical")
SIZES = ((8, 8), (16, 16), (32, 24))  # (agents, generations)
NOISES = (0.5, 2.0)
INTERVAL = 4
QUANTILE = 0.25


@dataclass(frozen=True)
class Cell:
    shape: str
    agents: int
    generations: int
    noise: float


def position(param: str, value: float | str) -> float:
    """Where a value sits in its parameter's range, 0..1 (lr on the log scale)."""
    if param == "lr":
        low, high = np.log10(LR_RANGE)
        return (np.log10(value) - low) / (high - low)
    return float(value)


def sample_param(param: str, rng: np.random.Generator) -> float | str:
    if param == "lr":
        return float(10 ** rng.uniform(*np.log10(LR_RANGE)))
    if param == "optimizer":
        return str(rng.choice(OPTIMIZERS))
    return float(rng.uniform(0.0, 1.0))


def perturb(param: str, value: float | str, rng: np.random.Generator) -> float | str:
    """PBT's explore step: resample with p 0.25, else scale a numeric value by 0.8 or 1.2 in its range."""
    if rng.uniform() < 0.25:
        return sample_param(param, rng)
    if param == "optimizer":
        return value
    low, high = LR_RANGE if param == "lr" else (0.0, 1.0)
    return float(np.clip(value * rng.choice((0.8, 1.2)), low, high))


def effect_function(param: str, shape: str, std: float, rng: np.random.Generator):
    """value -> effect on the score, scaled so its std over the initial sampling distribution is `std`."""
    if param == "optimizer":
        levels = rng.normal(size=len(OPTIMIZERS))
        levels = (levels - levels.mean()) / levels.std() * std
        return lambda value: levels[OPTIMIZERS.index(value)]
    if shape == "peaked":
        # Var(1 - 4 (z - .5)^2) for z ~ U(0, 1) is 16 / 180
        return lambda value: std * (1 - 4 * (position(param, value) - 0.5) ** 2) / np.sqrt(16 / 180)
    sign = rng.choice((-1.0, 1.0))
    return lambda value: sign * std * position(param, value) / np.sqrt(1 / 12)


def population(cell: Cell, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Simulate one PBT run; returns (samples, configs, the true top driver)."""
    order = list(rng.permutation(PARAMS))
    if cell.shape == "categorical":
        order.remove("optimizer")
        order.insert(0, "optimizer")
    effects = {
        param: effect_function(param, cell.shape if rank == 0 else "monotonic", std, rng)
        for rank, (param, std) in enumerate(zip(order, (1.0, 0.5, 0.25, 0.0), strict=True))
    }
    agents = [f"agent{i:02d}" for i in range(cell.agents)]
    config = {a: {p: sample_param(p, rng) for p in PARAMS} for a in agents}
    offset = dict.fromkeys(agents, 0.0)
    samples: list[dict] = []
    configs: list[dict] = []
    clock = 0.0

    def write_config(agent: str, generation: int) -> None:
        for param, value in config[agent].items():
            numeric = not isinstance(value, str)
            configs.append((T0 + clock, agent, generation, param, value if numeric else None, str(value)))

    for agent in agents:
        write_config(agent, 0)
    for generation in range(1, cell.generations + 1):
        clock += 1.0
        scores = {}
        for agent in agents:
            offset[agent] += rng.normal(0, 0.1)
            scores[agent] = (
                3 * np.log1p(generation)
                + sum(effects[p](v) for p, v in config[agent].items())
                + offset[agent]
                + rng.normal(0, cell.noise)
            )
        if generation % INTERVAL == 0 and generation < cell.generations:
            ranked = sorted(agents, key=scores.__getitem__)
            cut = max(1, int(len(agents) * QUANTILE))
            for target, source in zip(ranked[:cut], rng.permutation(ranked[-cut:]), strict=True):
                config[target] = {p: perturb(p, v, rng) for p, v in config[source].items()}
                offset[target] = offset[source]
                clock += 0.001
                write_config(target, generation)  # Tune writes the exploit before the triggering result
        for agent in agents:
            clock += 0.0001
            samples.append((T0 + clock, "agent", "n1", agent, generation, "mean_return", scores[agent]))
    return (
        to_frame(samples, ("ts", "kind", "node", "source", "generation", "metric", "value")),
        to_frame(configs, ("ts", "agent", "generation", "param", "value", "text")),
        order[0],
    )


def to_frame(rows: list[tuple], columns: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(columns))
    frame["ts"] = pd.to_datetime(frame["ts"], unit="s", utc=True).astype("datetime64[us, UTC]")
    return frame


def evaluate(cell: Cell, runs: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    forest = spearman = 0
    r2 = []
    for run in range(runs):
        samples, configs, top = population(cell, rng)
        result = hyperparameter_importance(config_scores(samples, configs), seed=run)
        forest += result.params[0].param == top
        spearman += result.by_spearman()[0].param == top
        r2.append(result.test_r2)
    return {"forest": forest / runs, "spearman": spearman / runs, "r2": float(np.median(r2))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few small populations per cell (< 30 s)")
    parser.add_argument("--runs", type=int, default=None, help="populations per cell (default 20, quick 3)")
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 20)
    sizes = SIZES[:2] if args.quick else SIZES
    started = time.perf_counter()
    print(f"populations per cell: {runs}; top-1 rate = share of populations whose true top driver is ranked first")
    header = ("top driver", "agents x gens", "samples", "noise", "forest", "spearman", "R2")
    print("{:<12} {:>13} {:>7} {:>5} {:>7} {:>8} {:>6}".format(*header))
    totals: dict[str, list[float]] = {}
    for index, (shape, (agents, generations), noise) in enumerate(
        (s, z, n) for s in SHAPES for z in sizes for n in NOISES
    ):
        cell = Cell(shape, agents, generations, noise)
        rates = evaluate(cell, runs, seed=index)
        for method in ("forest", "spearman"):
            totals.setdefault(f"{shape} {method}", []).append(rates[method])
            totals.setdefault(f"all {method}", []).append(rates[method])
        print(
            f"{shape:<12} {f'{agents} x {generations}':>13} {agents * generations:>7} {noise:>5.1f} "
            f"{rates['forest']:>7.0%} {rates['spearman']:>8.0%} {rates['r2']:>6.2f}"
        )
    print()
    for group in (*SHAPES, "all"):
        forest, spearman = np.mean(totals[f"{group} forest"]), np.mean(totals[f"{group} spearman"])
        print(f"{group:<12} forest {forest:>4.0%}  spearman {spearman:>4.0%}  (chance 25%)")
    print(f"\n{runs * len(totals['all forest'])} populations in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
