"""What monitoring costs the training: the demo's PBT job with and without elitemon.

    python benchmarks/overhead.py              # 5 rounds of 3 runs, about 8 minutes on 2 cores
    python benchmarks/overhead.py --quick      # one small round, a smoke test
    python benchmarks/overhead.py --idle 40    # no job: what elitemon's processes cost, and add to Ray's

Three variants of the very same job (8 Q-learning agents on Taxi under Tune's PBT, a fixed number
of iterations), run in rounds, alternating, so that drift of the machine hits them all alike:
- `bare`: no callbacks at all (Tune's automatic JSON/CSV/TensorBoard loggers are switched off with
  TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1);
- `tune-loggers`: Tune's own JsonLoggerCallback and CSVLoggerCallback, the peer: what a user
  already pays for result logging;
- `elitemon`: MonitorCallback with node monitors sampling every second, streaming every result,
  config, trial event and exploit into an aggregator.
The aggregator (with its monitor controller) and the node monitors are started, and running (a heartbeat
from every node), before the clock starts, as `elitemon start` would have done once before a user's
runs; they are stopped after it stops. Everything they do during the run is inside the measurement.

Training throughput is measured two ways, and medians over the rounds are printed with the ratio
to `bare`: episodes per wall-clock second of the whole fit (end to end: scheduling, checkpoints,
callbacks), and the trainers' own `episodes_per_s` (CPU left to training while monitoring runs).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # read by Tune when a run starts

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback  # noqa: E402
from ray.tune.schedulers import PopulationBasedTraining  # noqa: E402
from ray.tune.search.basic_variant import BasicVariantGenerator  # noqa: E402

from elitemon.aggregator import NAMESPACE, start_aggregator  # noqa: E402
from elitemon.collect import start_monitoring  # noqa: E402
from elitemon.config import StoreConfig  # noqa: E402
from elitemon.demo import AgentSettings, QLearningTrainable  # noqa: E402
from elitemon.demo._qlearning import clip  # noqa: E402
from elitemon.demo._run import SCORE, SEARCH_SPACE  # noqa: E402
from elitemon.tune import MonitorCallback  # noqa: E402

VARIANTS = ("bare", "tune-loggers", "elitemon")


@dataclass(frozen=True)
class Run:
    variant: str
    wall_s: float
    episodes: int
    trainer_episodes_per_s: float  # mean over every result of the trainers' own rate
    driver_cpu_s: float  # CPU time of this process (Tune's driver, and the callback in it) during the fit
    actors_cpu_s: float  # CPU time of elitemon's actors (the aggregator with its controller, monitors) during the fit
    ray_cpu_s: float  # CPU time of Ray's own processes (GCS, raylet, agents, log monitor) during the fit

    @property
    def episodes_per_s(self) -> float:
        return self.episodes / self.wall_s


class _Results(tune.Callback):
    """Counts results and collects the trainers' rates: the same bookkeeping in every variant."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        self.rates.append(result["episodes_per_s"])


def run_once(variant: str, args: argparse.Namespace, workdir: Path, seed: int) -> Run:
    random.seed(seed)  # PBT's exploit and explore draws: the same sequence for every variant
    np.random.seed(seed)
    results = _Results()
    callbacks: list[tune.Callback] = [results]
    handles: list = []
    name = f"overhead-{uuid.uuid4().hex[:8]}"
    if variant == "tune-loggers":
        callbacks += [JsonLoggerCallback(), CSVLoggerCallback()]
    elif variant == "elitemon":
        data_dir = workdir / name / "elitemon"
        handles.append(start_aggregator(StoreConfig(data_dir=data_dir), name=name))
        start_monitoring(aggregator_name=name)  # the callback finds it running
        _wait_for_heartbeats(handles[-1])
        callbacks.append(MonitorCallback(aggregator_name=name, data_dir=str(data_dir)))
    settings = AgentSettings("Taxi-v4", args.episodes, eval_episodes=10, target=7.0)
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration",
        metric=SCORE,
        mode="max",
        perturbation_interval=5,
        hyperparam_mutations=SEARCH_SPACE,
        custom_explore_fn=clip,
    )
    tuner = tune.Tuner(
        tune.with_resources(
            tune.with_parameters(QLearningTrainable, settings=settings), {"cpu": args.cpus / args.agents}
        ),
        param_space={**SEARCH_SPACE, "seed": tune.randint(0, 2**31 - 1)},
        tune_config=tune.TuneConfig(
            scheduler=scheduler,
            num_samples=args.agents,
            reuse_actors=True,
            search_alg=BasicVariantGenerator(random_state=seed),
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(workdir),
            stop={"training_iteration": args.iterations},
            callbacks=callbacks,
            verbose=0,
        ),
    )
    actors = _actor_processes(handles[0]) if handles else []
    driver, system = psutil.Process(), _ray_system_processes()
    cpu_before = _cpu_seconds([driver]), _cpu_seconds(actors), _cpu_seconds(system)
    started = time.perf_counter()
    grid = tuner.fit()
    wall_s = time.perf_counter() - started
    driver_cpu_s, actors_cpu_s = _cpu_seconds([driver]) - cpu_before[0], _cpu_seconds(actors) - cpu_before[1]
    ray_cpu_s = _cpu_seconds(system) - cpu_before[2]
    monitors = list(ray.get(handles[0].monitored_nodes.remote())) if handles else []
    for handle in handles:
        ray.kill(handle, no_restart=True)  # its node monitors end with it (it owns them)
    for node in monitors:
        _wait_until_gone(f"node-monitor-{name}-{node}")
    if grid.errors:
        raise SystemExit(f"{variant}: {len(grid.errors)} trials failed: {grid.errors[0]}")
    if not results.rates:  # (fewer than agents x iterations is normal: a restore can jump ahead)
        raise SystemExit(f"{variant}: no results")
    episodes = len(results.rates) * args.episodes
    return Run(variant, wall_s, episodes, statistics.fmean(results.rates), driver_cpu_s, actors_cpu_s, ray_cpu_s)


def _actor_processes(aggregator) -> list[psutil.Process]:
    """The processes of the aggregator (with the monitor controller in it) and every node monitor
    (all local here)."""
    own = ray.get(aggregator.__ray_call__.remote(lambda self: os.getpid()))
    monitors = [seen["pid"] for seen in ray.get(aggregator.monitored_nodes.remote()).values()]
    return [psutil.Process(pid) for pid in [own, *monitors]]


def _ray_system_processes() -> list[psutil.Process]:
    """Ray's own processes under this driver (GCS, raylet, their agents, the log monitor): what
    elitemon's calls make them do (named-actor lookups, node lists, task events) counts too. Worker
    processes are left out: their titles start with `ray::` (trainers, elitemon's actors, idle ones)."""
    agents = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
    children = psutil.Process().children(recursive=True)
    return [p for p in children if not p.name().startswith("ray::") or p.name() in agents]


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def _wait_for_heartbeats(aggregator, timeout_s: float = 60.0) -> None:
    """Start the clock on a running monitor: actor start-up (a Python worker importing Ray and
    pyarrow, seconds of CPU here) happens once per cluster, not per run, and is not training cost."""
    alive = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        nodes = ray.get(aggregator.monitored_nodes.remote())
        if alive <= {node for node, seen in nodes.items() if seen["pid"] is not None}:
            return
        time.sleep(0.1)
    raise SystemExit(f"no heartbeat from every node's monitor within {timeout_s}s")


def _wait_until_gone(name: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            return
        time.sleep(0.1)
    raise SystemExit(f"actor {name} still alive {timeout_s}s after it was killed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small round (a smoke test)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=100, help="training episodes per iteration")
    parser.add_argument(
        "--idle",
        type=float,
        metavar="SECONDS",
        help="instead: measure, with no job running, the CPU of Ray's own processes without and then with "
        "elitemon's aggregator and node monitor, and of those two processes, over SECONDS each",
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.agents, args.iterations, args.episodes = 1, 4, 6, 20
    ray.init(address="local", include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    if args.idle:
        measure_idle(args.idle)
        return
    args.cpus = ray.cluster_resources()["CPU"]
    print(
        f"{args.agents} agents, {args.iterations} iterations of {args.episodes} episodes, "
        f"{args.rounds} rounds, {args.cpus:g} CPUs, Ray {ray.__version__}"
    )
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="elitemon-overhead-") as workdir:
        for round_ in range(args.rounds):
            order = VARIANTS[round_ % 3 :] + VARIANTS[: round_ % 3]  # who goes first rotates too
            for variant in order:
                run = run_once(variant, args, Path(workdir), seed=round_)
                runs.append(run)
                print(
                    f"  round {round_ + 1} {variant:13s} {run.wall_s:6.1f} s  {run.episodes_per_s:8.1f} episodes/s "
                    f"(trainers: {run.trainer_episodes_per_s:8.1f})",
                    flush=True,
                )
    ray.shutdown()
    report(runs, args.cpus)


def measure_idle(seconds: float, repeats: int = 2) -> None:
    """The idle cost of monitoring: what elitemon's processes use, and what they add to Ray's own
    (windows without and with elitemon, alternating `repeats` times: the machine drifts)."""
    system = _ray_system_processes()

    def rates(*groups: list[psutil.Process]) -> list[float]:
        before = [_cpu_seconds(group) for group in groups]
        time.sleep(seconds)  # the measurement window itself, not a synchronisation
        return [(_cpu_seconds(group) - b) / seconds * 1000 for group, b in zip(groups, before, strict=True)]

    for repeat in range(repeats):
        (bare,) = rates(system)
        with tempfile.TemporaryDirectory(prefix="elitemon-overhead-") as workdir:
            name = f"overhead-idle-{repeat}"
            aggregator = start_aggregator(StoreConfig(data_dir=Path(workdir)), name=name)
            start_monitoring(aggregator_name=name)
            _wait_for_heartbeats(aggregator)
            with_elitemon, own = rates(system, _actor_processes(aggregator))
            ray.kill(aggregator, no_restart=True)  # its node monitor ends with it
            _wait_until_gone(name)
        print(
            f"idle, ms of CPU a second: Ray's processes {bare:.2f} without elitemon, {with_elitemon:.2f} with it "
            f"({with_elitemon - bare:+.2f}); elitemon's aggregator and node monitor {own:.2f}"
        )


def report(runs: list[Run], cpus: float) -> None:
    def median(variant: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in runs if r.variant == variant)

    header = ("variant", "episodes/s (end to end)", "vs bare", "trainers episodes/s", "vs bare")
    print("\n{:13s} {:>24s} {:>8s} {:>20s} {:>8s}".format(*header))
    base_e2e, base_trainer = median("bare", "episodes_per_s"), median("bare", "trainer_episodes_per_s")
    for variant in VARIANTS:
        e2e, trainer = median(variant, "episodes_per_s"), median(variant, "trainer_episodes_per_s")
        print(f"{variant:13s} {e2e:24.1f} {e2e / base_e2e:8.3f} {trainer:20.1f} {trainer / base_trainer:8.3f}")
    e2e_cost = 1 - median("elitemon", "episodes_per_s") / base_e2e
    trainer_cost = 1 - median("elitemon", "trainer_episodes_per_s") / base_trainer
    print(f"monitoring cost: {e2e_cost:+.1%} end to end, {trainer_cost:+.1%} in the trainers (target: under 1%)")
    # The same cost counted in CPU time, which PBT's scheduling noise does not blur: what elitemon's
    # actors used, plus what the driver used beyond the bare runs' driver (the callback), as a share
    # of the CPU time the machine had during the fit. On a job that keeps every CPU busy, the
    # trainers lose about this share.
    capacity = median("elitemon", "wall_s") * cpus
    actors = median("elitemon", "actors_cpu_s")
    callback = median("elitemon", "driver_cpu_s") - median("bare", "driver_cpu_s")
    system = median("elitemon", "ray_cpu_s") - median("bare", "ray_cpu_s")
    print(
        f"CPU share: elitemon's actors {actors:.2f} s + the driver's extra {callback:.2f} s + Ray's processes' "
        f"extra {system:.2f} s over {capacity:.1f} CPU-seconds = {(actors + callback + system) / capacity:.2%} "
        f"(Tune's loggers: {(median('tune-loggers', 'driver_cpu_s') - median('bare', 'driver_cpu_s')) / capacity:.2%})"
    )
    bare_driver, bare_system = median("bare", "driver_cpu_s"), median("bare", "ray_cpu_s")
    shares = sorted(
        (r.actors_cpu_s + r.driver_cpu_s - bare_driver + r.ray_cpu_s - bare_system) / (r.wall_s * cpus)
        for r in runs
        if r.variant == "elitemon"
    )
    print(f"  per round (against the bare runs' medians): {', '.join(f'{share:.2%}' for share in shares)}")


if __name__ == "__main__":
    main()
