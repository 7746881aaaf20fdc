"""Scaling recommendation, against hand-computed values (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from elitemon.analytics.cost import PriceTable
from elitemon.analytics.scaling import (
    AmdahlFit,
    Resource,
    ScalingAction,
    ScalingSettings,
    fit_amdahl,
    recommend_scaling,
    resource_utilisation,
    throughput_by_node_count,
)
from elitemon.schema import SCHEMAS, TableName
from tests.analytics._samples import T0, frame, sample

SETTINGS = ScalingSettings(window_s=100.0)
PRICES = PriceTable(node_hour=0.10, cpu_hour=0.05)


# --------------------------------------------------------------------------------------------
# Utilisation


def utilisation_samples() -> pd.DataFrame:
    a, b = "10.0.0.1", "10.0.0.2"
    rows = [
        sample(0, "node", a, "na", "cpu_percent", 40.0),
        sample(1, "node", a, "na", "cpu_percent", 60.0),
        sample(0, "node", a, "na", "memory_used_bytes", 6e9),
        sample(0, "node", a, "na", "memory_available_bytes", 2e9),
        sample(0, "node", a, "na", "net_sent_bytes_per_s", 1.25e8),
        sample(0, "node", a, "na", "net_recv_bytes_per_s", 2.5e8),
        sample(0, "node", a, "na", "disk_read_bytes_per_s", 1e8),
        sample(0, "node", a, "na", "disk_write_bytes_per_s", 1e8),
        sample(0, "gpu", a, f"{a}/gpu0", "gpu_utilization_percent", 80.0),
        sample(0, "gpu", a, f"{a}/gpu1", "gpu_utilization_percent", 60.0),
        sample(0, "gpu", a, f"{a}/gpu0", "gpu_memory_used_bytes", 36e9),
        sample(0, "gpu", a, f"{a}/gpu0", "gpu_memory_total_bytes", 40e9),
        sample(0, "gpu", a, f"{a}/gpu1", "gpu_memory_used_bytes", 24e9),
        sample(0, "gpu", a, f"{a}/gpu1", "gpu_memory_total_bytes", 40e9),
        sample(0, "node", b, "nb", "cpu_percent", 90.0),
        sample(1, "node", b, "nb", "cpu_percent", math.nan),  # left out
        sample(0, "node", b, "nb", "memory_used_bytes", 2e9),
        sample(0, "node", b, "nb", "memory_available_bytes", 6e9),
    ]
    return frame(rows)


def test_resource_utilisation_per_resource_and_bottleneck() -> None:
    found = {u.resource: u for u in resource_utilisation(utilisation_samples(), ScalingSettings())}
    # CPU: a = mean(40, 60) / 100 = 0.5, b = 0.9 -> mean 0.7, peak 0.9 on b; pressure 0.7 / 0.95
    cpu = found[Resource.CPU]
    assert (cpu.mean, cpu.peak, cpu.peak_node) == (pytest.approx(0.7), pytest.approx(0.9), "10.0.0.2")
    assert cpu.pressure == pytest.approx(0.7 / 0.95)
    # memory: a = 6 / (6 + 2) = 0.75, b = 2 / (2 + 6) = 0.25 -> 0.5
    assert found[Resource.MEMORY].mean == pytest.approx(0.5)
    # network: max(1.25e8, 2.5e8) / 1.25e9 = 0.2 (a only); disk: (1e8 + 1e8) / 5e8 = 0.4
    assert found[Resource.NETWORK].mean == pytest.approx(0.2)
    assert found[Resource.DISK].mean == pytest.approx(0.4)
    # GPU: mean(0.8, 0.6) = 0.7; GPU memory: mean(36/40, 24/40) = mean(0.9, 0.6) = 0.75
    assert found[Resource.GPU].mean == pytest.approx(0.7)
    assert found[Resource.GPU_MEMORY].mean == pytest.approx(0.75)
    # pressures: gpu_memory 0.75/0.9 = 0.833 > gpu 0.7/0.9 = 0.778 > cpu 0.737 > memory 0.556 > disk 0.5 > network 0.25
    order = [u.resource for u in resource_utilisation(utilisation_samples(), ScalingSettings())]
    assert order == [Resource.GPU_MEMORY, Resource.GPU, Resource.CPU, Resource.MEMORY, Resource.DISK, Resource.NETWORK]
    assert not any(u.saturated for u in found.values())


def test_a_resource_at_its_threshold_is_saturated_and_unmeasured_ones_are_left_out() -> None:
    rows = frame([sample(0, "node", "n", "n1", "cpu_percent", 96.0)])
    (cpu,) = resource_utilisation(rows, ScalingSettings())
    assert cpu.resource is Resource.CPU and cpu.saturated  # 0.96 >= 0.95
    stricter = ScalingSettings(saturation={**{r.value: 0.99 for r in Resource}})  # plain strings as keys work too
    (cpu,) = resource_utilisation(rows, stricter)
    assert not cpu.saturated and cpu.threshold == 0.99


def test_resource_utilisation_without_system_rows_is_an_error() -> None:
    with pytest.raises(ValueError, match="samples: no node or GPU utilisation"):
        resource_utilisation(frame([sample(0, "agent", "n", "a", "episodes_per_s", 1.0, 1)]), ScalingSettings())
    with pytest.raises(ValueError, match="samples is missing columns"):
        resource_utilisation(pd.DataFrame({"ts": []}), ScalingSettings())


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"window_s": 0.0}, "window_s"),
        ({"network_bytes_per_s": math.inf}, "network_bytes_per_s"),
        ({"window_s": "300"}, "window_s must be finite and > 0, but got '300'"),
        ({"default_serial_fraction": 1.5}, "default_serial_fraction"),
        ({"saturation": {Resource.CPU: 0.9}}, "saturation must have one threshold per resource"),
        ({"saturation": {**{r: 0.9 for r in Resource}, "tpu": 0.9}}, r"unknown \['tpu'\]"),
        ({"saturation": {r: 0.0 for r in Resource}}, "saturation"),
        ({"throughput_metric": ""}, "throughput_metric"),
        ({"max_nodes": 0}, "max_nodes"),
    ],
)
def test_settings_reject_bad_values_naming_them(arguments: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        ScalingSettings(**arguments)


def test_settings_take_numpy_scalars() -> None:
    settings = ScalingSettings(
        max_nodes=np.int64(10),
        default_serial_fraction=np.float32(0.25),
        saturation={r: np.float32(0.5) for r in Resource},
    )
    assert settings.max_nodes == 10 and settings.saturation[Resource.CPU] == 0.5


# --------------------------------------------------------------------------------------------
# Throughput and Amdahl's law


def run_samples(*, cpu_percent: float = 90.0, second_node: bool = True) -> pd.DataFrame:
    """Reports every 50 s from 0 to 550 s. Until 300 s: one node (10.0.0.1), agents a1, a2 at 10 episodes/s
    each (20 in all). From 300 s (if second_node): a3 and a4 join on 10.0.0.2, all four at 9 (36 in all).
    Both nodes: 2 cores (cpu_percent_core_0/1), `cpu_percent` busy, monitored until 550 s."""
    rows = []
    for seconds in range(0, 600, 50):
        later = second_node and seconds >= 300
        agents = [("a1", "10.0.0.1"), ("a2", "10.0.0.1")] + ([("a3", "10.0.0.2"), ("a4", "10.0.0.2")] if later else [])
        for agent, node in agents:
            rows.append(sample(seconds, "agent", node, agent, "episodes_per_s", 9.0 if later else 10.0, seconds // 50))
        for node, monitor in (("10.0.0.1", "m1"), ("10.0.0.2", "m2")):
            rows += [sample(seconds, "node", node, monitor, f"cpu_percent_core_{c}", cpu_percent) for c in (0, 1)]
            rows.append(sample(seconds, "node", node, monitor, "cpu_percent", cpu_percent))
    return frame(rows)


def test_throughput_by_node_count_windows_back_from_the_newest_report() -> None:
    table = throughput_by_node_count(run_samples(), SETTINGS)
    # window k = floor((550 - ts) / 100): {550, 500} -> 0, {450, 400} -> 1, ... {50, 0} -> 5 (oldest, dropped)
    assert list(table["window_end"]) == [T0 + pd.Timedelta(seconds=s) for s in (550, 450, 350, 250, 150)]
    assert list(table["nodes"]) == [2, 2, 2, 1, 1]
    assert list(table["agents"]) == [4, 4, 4, 2, 2]
    assert list(table["throughput"]) == pytest.approx([36, 36, 36, 20, 20])  # 4 * 9; 2 * 10


def test_throughput_needs_agent_reports_with_a_node() -> None:
    with pytest.raises(ValueError, match="episodes_per_s"):
        throughput_by_node_count(frame([sample(0, "node", "n", "m", "cpu_percent", 1.0)]), SETTINGS)


def test_fit_amdahl_recovers_the_serial_fraction() -> None:
    # T1 = 10, s = 0.1: T(1) = 10, T(2) = 20 / 1.1, T(4) = 40 / 1.3
    observations = pd.DataFrame({"nodes": [1, 2, 4], "throughput": [10.0, 20 / 1.1, 40 / 1.3]})
    fit = fit_amdahl(observations)
    assert fit.measured and fit.node_counts == (1, 2, 4)
    assert (fit.serial_fraction, fit.single_node_throughput) == (pytest.approx(0.1, abs=1e-5), pytest.approx(10.0))
    assert fit.efficiency(4) == pytest.approx(1 / 1.3, rel=1e-4)


@pytest.mark.parametrize("throughput", [[10.0, 20.0, 40.0], [10.0, 25.0, 60.0]])  # linear; super-linear
def test_fit_amdahl_never_goes_below_zero_serial_fraction(throughput: list[float]) -> None:
    fit = fit_amdahl(pd.DataFrame({"nodes": [1, 2, 4], "throughput": throughput}))
    assert fit.serial_fraction == 0.0
    assert fit.ceiling == math.inf


def test_fit_amdahl_with_one_node_count_uses_the_stated_default() -> None:
    fit = fit_amdahl(pd.DataFrame({"nodes": [2, 2], "throughput": [36.0, 36.0]}), default_serial_fraction=0.05)
    assert not fit.measured
    assert fit.serial_fraction == 0.05
    assert fit.single_node_throughput == pytest.approx(18.9)  # 36 * (1 + 0.05 * 1) / 2


def test_amdahl_nodes_for_a_target_and_its_ceiling() -> None:
    fit = AmdahlFit(serial_fraction=0.1, single_node_throughput=10.0, measured=True, node_counts=(1, 2))
    assert fit.nodes_for(30.0) == pytest.approx(27 / 7)  # 30 * 0.9 / (10 - 3)
    assert fit.throughput(27 / 7) == pytest.approx(30.0)
    assert fit.ceiling == pytest.approx(100.0)  # 10 / 0.1
    assert fit.nodes_for(100.0) is None


def test_fit_amdahl_rejects_bad_observations() -> None:
    with pytest.raises(ValueError, match="observations"):
        fit_amdahl(pd.DataFrame({"nodes": [0, 1], "throughput": [1.0, 2.0]}))
    with pytest.raises(ValueError, match="observations"):
        fit_amdahl(pd.DataFrame({"nodes": [math.nan], "throughput": [1.0]}))
    with pytest.raises(ValueError, match="observations"):
        fit_amdahl(pd.DataFrame({"n": [1]}))
    with pytest.raises(ValueError, match="default_serial_fraction must be a number in \\[0, 1\\], but got 2.0"):
        fit_amdahl(pd.DataFrame({"nodes": [2], "throughput": [10.0]}), default_serial_fraction=2.0)
    with pytest.raises(ValueError, match="observations: throughput is 0 at every node count"):
        fit_amdahl(pd.DataFrame({"nodes": [1, 2, 4], "throughput": [0.0, 0.0, 0.0]}))


# --------------------------------------------------------------------------------------------
# The recommendation


def test_scale_out_with_the_measured_efficiency() -> None:
    r = recommend_scaling(run_samples(), target_throughput=60.0, prices=PRICES, settings=SETTINGS)
    # fit: T(1) = 20, T(2) = 40 / (1 + s) = 36 -> s = 1/9 exactly; level from now: T1 = 36 * (10/9) / 2 = 20
    assert r.efficiency_measured and r.node_counts_observed == (1, 2)
    assert r.serial_fraction == pytest.approx(1 / 9, abs=1e-5)
    assert (r.current_nodes, r.current_throughput) == (2, pytest.approx(36.0))
    # n = 60 * (8/9) / (20 - 60/9) = 53.33 / 13.33 = 4; T(4) = 80 / (1 + 3/9) = 60; efficiency 0.75
    assert r.nodes_for_target == 4
    assert r.scaling_factor == pytest.approx(2.0)
    assert r.expected_throughput == pytest.approx(60.0, rel=1e-4)
    assert r.expected_efficiency == pytest.approx(0.75, rel=1e-4)
    # CPU at 90% of 95%: headroom 0.95 / 0.9 = 1.056 < 60 / 36 = 1.667 needed
    assert r.bottleneck.resource is Resource.CPU
    assert r.headroom_factor == pytest.approx(0.95 / 0.9)
    assert r.action is ScalingAction.SCALE_OUT
    # a node: 0.10 + 2 cores * 0.05 = 0.20 /h; 2 running: 0.40 /h; 2 more nodes: +0.40 /h
    assert (r.node_hourly_price, r.current_hourly_cost) == (pytest.approx(0.20), pytest.approx(0.40))
    assert r.added_hourly_cost == pytest.approx(0.40)
    assert r.explanation.startswith("scale out 2 -> 4 nodes")
    assert "measured over 1, 2 nodes" in r.explanation


def test_optimise_current_when_the_bottleneck_has_headroom() -> None:
    r = recommend_scaling(run_samples(cpu_percent=40.0), target_throughput=60.0, prices=PRICES, settings=SETTINGS)
    # CPU at 40%: headroom 0.95 / 0.40 = 2.375 >= 1.667 needed
    assert r.headroom_factor == pytest.approx(2.375)
    assert r.action is ScalingAction.OPTIMISE_CURRENT
    assert r.nodes_for_target == 4  # what scaling out would take, for comparison
    assert r.explanation.startswith("optimise the current nodes")


def test_no_change_when_the_target_is_met() -> None:
    r = recommend_scaling(run_samples(), target_throughput=30.0, prices=PRICES, settings=SETTINGS)
    assert r.action is ScalingAction.NO_CHANGE
    assert r.nodes_for_target == 2  # never fewer than now
    assert r.added_hourly_cost == 0.0


def test_unreachable_beyond_the_amdahl_ceiling_or_max_nodes() -> None:
    r = recommend_scaling(run_samples(), target_throughput=200.0, prices=PRICES, settings=SETTINGS)
    # ceiling T1 / s = 20 / (1/9) = 180 < 200: no node count reaches it
    assert r.action is ScalingAction.UNREACHABLE
    assert (r.nodes_for_target, r.scaling_factor, r.added_hourly_cost) == (None, None, None)
    assert "ceiling 180" in r.explanation
    # 179 * (8/9) / (20 - 179/9) = 159.1 / 0.1111 = 1432 nodes > max_nodes 1000
    assert recommend_scaling(run_samples(), target_throughput=179.0, prices=PRICES, settings=SETTINGS).action is (
        ScalingAction.UNREACHABLE
    )
    far = recommend_scaling(run_samples(), target_throughput=150.0, prices=PRICES, settings=SETTINGS)
    assert far.nodes_for_target == 40  # 150 * (8/9) / (20 - 150/9) = 133.3 / 3.333
    assert far.action is ScalingAction.SCALE_OUT


def test_one_node_count_is_flagged_and_uses_the_default_serial_fraction() -> None:
    r = recommend_scaling(run_samples(second_node=False), target_throughput=60.0, prices=PRICES, settings=SETTINGS)
    assert not r.efficiency_measured
    assert r.serial_fraction == 0.05
    # now 20 on 1 node: T1 = 20; n = 60 * 0.95 / (20 - 3) = 3.35 -> 4
    assert r.nodes_for_target == 4
    assert "ASSUMED" in r.explanation


def test_benchmark_observations_replace_the_run_windows() -> None:
    benchmark = pd.DataFrame({"nodes": [1, 2, 4], "throughput": [10.0, 20.0, 40.0]})  # linear: s = 0
    r = recommend_scaling(
        run_samples(), target_throughput=72.0, prices=PRICES, settings=SETTINGS, observations=benchmark
    )
    # s = 0, T1 = 36 / 2 = 18: n = 72 / 18 = 4
    assert (r.serial_fraction, r.nodes_for_target, r.node_counts_observed) == (0.0, 4, (1, 2, 4))


def test_recommendation_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="target_throughput"):
        recommend_scaling(run_samples(), target_throughput=0.0, prices=PRICES, settings=SETTINGS)
    with pytest.raises(ValueError, match="target_throughput must be finite and > 0, but got '72'"):
        recommend_scaling(run_samples(), target_throughput="72", prices=PRICES, settings=SETTINGS)
    with pytest.raises(ValueError, match="samples"):
        recommend_scaling(frame([]), target_throughput=1.0, prices=PRICES)
    with pytest.raises(ValueError, match="samples: column 'ts' must hold datetimes"):
        recommend_scaling(run_samples().assign(ts="2026-01-01"), target_throughput=1.0, prices=PRICES)
    idle = run_samples()
    idle.loc[idle["metric"] == "episodes_per_s", "value"] = 0.0
    with pytest.raises(ValueError, match="current episodes_per_s is 0"):
        recommend_scaling(idle, target_throughput=1.0, prices=PRICES, settings=SETTINGS)


def test_works_on_samples_as_the_store_returns_them() -> None:
    """Arrow dictionary columns arrive in pandas as categoricals, nullable generations as floats."""
    stored = pa.Table.from_pandas(run_samples(), preserve_index=False).cast(SCHEMAS[TableName.SAMPLES]).to_pandas()
    assert isinstance(stored["metric"].dtype, pd.CategoricalDtype)
    r = recommend_scaling(stored, target_throughput=60.0, prices=PRICES, settings=SETTINGS)
    assert (r.action, r.nodes_for_target) == (ScalingAction.SCALE_OUT, 4)
