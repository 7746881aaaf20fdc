"""Cost and ROI, against hand-computed values (the arithmetic is in the comments)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from elitemon.analytics.cost import (
    EXAMPLE_GPU_HOUR_PRICES,
    PriceTable,
    best_score_change,
    budget_burn,
    gpu_models,
    node_usage,
    return_on_investment,
    samples_processed,
    summarise_cost,
    usage_from_counts,
)
from elitemon.schema import SCHEMAS, TableName
from tests.analytics._samples import at, frame, sample

HOUR = 3600.0


def exploit(seconds: float, target: str, source: str, generation: int, source_generation: int | None) -> dict:
    payload = json.dumps({"target_generation": generation, "source_generation": source_generation})
    return {
        "ts": at(seconds),
        "type": "exploit",
        "agent": target,
        "source_agent": source,
        "generation": generation,
        "payload": payload,
    }


def events_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["ts", "type", "agent", "source_agent", "generation", "payload"])


# --------------------------------------------------------------------------------------------
# PriceTable


def test_gpu_price_matches_the_longest_model_name_contained_case_insensitively() -> None:
    prices = PriceTable(gpu_hour={"A10": 1.0, "A100": 3.0}, default_gpu_hour=2.0)
    assert prices.gpu_hour_for("NVIDIA A100-SXM4-80GB") == 3.0
    assert prices.gpu_hour_for("nvidia a10") == 1.0
    assert prices.gpu_hour_for("Tesla K80") == 2.0  # unknown model: the default
    assert prices.gpu_hour_for(None) == 2.0


def test_gpu_price_matches_whole_model_names_only() -> None:
    prices = PriceTable(gpu_hour={"L4": 0.8, "A100": 3.0, "A100-80GB": 3.5}, default_gpu_hour=2.0)
    assert prices.gpu_hour_for("NVIDIA L4") == 0.8
    assert prices.gpu_hour_for("NVIDIA L40S") == 2.0  # not an L4
    assert prices.gpu_hour_for("NVIDIA RTX A1000") == 2.0  # not an A100
    assert prices.gpu_hour_for("NVIDIA A100-80GB PCIe") == 3.5  # both match: the longer


def test_node_price_adds_node_cpu_and_gpu_prices() -> None:
    prices = PriceTable(node_hour=0.10, cpu_hour=0.05, gpu_hour={"H100": 5.0})
    # 0.10 + 8 * 0.05 + 2 * 5.0 = 10.50
    assert prices.node_hour_for(8, 2, "H100") == pytest.approx(10.50)


def test_defaults_are_the_labelled_example_prices() -> None:
    prices = PriceTable()
    assert prices.gpu_hour == EXAMPLE_GPU_HOUR_PRICES
    assert prices.currency == "USD"


def test_from_mapping_overrides_and_replaces_the_gpu_table() -> None:
    prices = PriceTable.from_mapping({"cpu_hour": 0.02, "gpu_hour": {"A100": 2.5}, "currency": "EUR"})
    assert (prices.cpu_hour, prices.currency, dict(prices.gpu_hour)) == (0.02, "EUR", {"A100": 2.5})
    assert prices.gpu_hour_for("H100") == prices.default_gpu_hour  # the example H100 price is gone


@pytest.mark.parametrize(
    ("mapping", "named"),
    [
        ({"cpu_hours": 0.1}, "cpu_hours"),
        ({"cpu_hour": -1.0}, "cpu_hour"),
        ({"node_hour": math.nan}, "node_hour"),
        ({"gpu_hour": {"A100": "3"}}, "gpu_hour['A100']"),
        ({"default_gpu_hour": True}, "default_gpu_hour"),
        ({"currency": ""}, "currency"),
    ],
)
def test_bad_prices_are_rejected_naming_the_key(mapping: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named.replace("[", r"\[")):
        PriceTable.from_mapping(mapping)


def test_price_table_is_immutable() -> None:
    prices = PriceTable()
    with pytest.raises(TypeError):
        prices.gpu_hour["A100"] = 0.0  # type: ignore[index]


# --------------------------------------------------------------------------------------------
# Usage and cost so far


def two_nodes() -> pd.DataFrame:
    """10.0.0.1: monitor n1 from 0 h to 2 h, 4 cores, one GPU. 10.0.0.2: monitor n2 from 0 h to 0.5 h,
    then (after a restart) n3 from 1 h to 1.5 h, 2 cores, no GPU. Newest sample: 2 h."""
    rows = []
    for seconds in (0.0, HOUR, 2 * HOUR):
        rows += [sample(seconds, "node", "10.0.0.1", "n1", f"cpu_percent_core_{c}", 50.0) for c in range(4)]
        rows.append(sample(seconds, "gpu", "10.0.0.1", "10.0.0.1/gpu0", "gpu_utilization_percent", 90.0))
    for source, seconds in (("n2", 0.0), ("n2", 0.5 * HOUR), ("n3", HOUR), ("n3", 1.5 * HOUR)):
        rows += [sample(seconds, "node", "10.0.0.2", source, f"cpu_percent_core_{c}", 10.0) for c in range(2)]
    rows.append(sample(2 * HOUR, "agent", "10.0.0.2", "trial_1", "mean_return", 1.0, generation=1))  # not a machine
    return frame(rows)


PRICES = PriceTable(node_hour=0.10, cpu_hour=0.05, gpu_hour={"A100": 3.0}, default_gpu_hour=2.0)


def test_node_usage_bills_each_monitor_span_and_counts_cores_and_gpus() -> None:
    usage = node_usage(two_nodes(), PRICES, gpu_model="NVIDIA A100-PCIE-40GB").set_index("node")
    first, second = usage.loc["10.0.0.1"], usage.loc["10.0.0.2"]
    # 10.0.0.1: 2 h; 4 cores; 1 GPU; 0.10 + 4 * 0.05 + 1 * 3.0 = 3.30 /h; 3.30 * 2 = 6.60
    assert (first.hours, first.cpus, first.gpus) == (pytest.approx(2.0), 4, 1)
    assert (first.hourly_price, first.cost) == (pytest.approx(3.30), pytest.approx(6.60))
    assert bool(first.active)
    # 10.0.0.2: 0.5 h (n2) + 0.5 h (n3) = 1 h, the down hour in between not billed; 0.10 + 2 * 0.05 = 0.20
    assert (second.hours, second.cpus, second.gpus) == (pytest.approx(1.0), 2, 0)
    assert (second.hourly_price, second.cost) == (pytest.approx(0.20), pytest.approx(0.20))
    assert not bool(second.active)  # last sample at 1.5 h, 1800 s before the newest > 300 s


def test_summary_adds_up_and_hourly_cost_counts_running_nodes_only() -> None:
    summary = summarise_cost(node_usage(two_nodes(), PRICES, gpu_model="A100"), PRICES)
    assert summary.total_cost == pytest.approx(6.80)  # 6.60 + 0.20
    assert summary.hourly_cost == pytest.approx(3.30)  # only 10.0.0.1 still runs
    assert summary.active_nodes == 1
    assert summary.node_hours == pytest.approx(3.0)  # 2 + 1
    assert summary.cpu_hours == pytest.approx(10.0)  # 4 * 2 + 2 * 1
    assert summary.gpu_hours == pytest.approx(2.0)  # 1 * 2


def test_a_later_now_marks_every_node_stopped() -> None:
    usage = node_usage(two_nodes(), PRICES, now=at(3 * HOUR))
    assert not usage["active"].any()
    assert summarise_cost(usage, PRICES).hourly_cost == 0.0


def test_explicit_cpu_counts_and_gpu_models_per_node_override_the_samples() -> None:
    usage = node_usage(
        two_nodes(), PRICES, cpus_per_node={"10.0.0.1": 16}, gpu_model={"10.0.0.1": "Tesla K80"}
    ).set_index("node")
    # 10.0.0.1: 0.10 + 16 * 0.05 + 1 * 2.0 (unknown model: default) = 2.90; 10.0.0.2 still counted: 2 cores
    assert usage.loc["10.0.0.1", "hourly_price"] == pytest.approx(2.90)
    assert usage.loc["10.0.0.2", "cpus"] == 2


def test_overlapping_monitors_on_one_host_are_billed_once() -> None:
    """Two Ray nodes on one host: monitors m1 (0 h to 2 h) and m2 (1 h to 3 h), and m3 (4 h to 5 h)."""
    spans = (("m1", 0.0, 2.0), ("m2", 1.0, 3.0), ("m3", 4.0, 5.0))
    rows = frame(
        [sample(h * HOUR, "node", "10.0.0.5", m, "cpu_percent_core_0", 1.0) for m, *hours in spans for h in hours]
    )
    # union of [0, 2], [1, 3], [4, 5] = [0, 3] + [4, 5] = 4 h
    assert node_usage(rows, PRICES)["hours"].iloc[0] == pytest.approx(4.0)


def test_unknown_cpu_count_is_an_error_only_when_cpus_are_priced() -> None:
    rows = frame([sample(s, "node", "10.0.0.9", "n9", "cpu_percent", 50.0) for s in (0.0, HOUR)])
    with pytest.raises(ValueError, match="cpus_per_node"):
        node_usage(rows, PRICES)
    per_node = PriceTable(node_hour=1.5, cpu_hour=0.0)
    assert node_usage(rows, per_node)["cost"].iloc[0] == pytest.approx(1.5)  # 1 h * 1.5


def test_gpu_only_node_is_billed_over_its_gpu_rows() -> None:
    rows = frame([sample(s, "gpu", "10.0.0.3", "10.0.0.3/gpu0", "gpu_utilization_percent", 1.0) for s in (0, HOUR)])
    usage = node_usage(rows, PriceTable(cpu_hour=0.0, default_gpu_hour=2.0))
    assert (usage["hours"].iloc[0], usage["cost"].iloc[0]) == (pytest.approx(1.0), pytest.approx(2.0))


def test_node_usage_rejects_samples_without_machines_and_bad_arguments() -> None:
    with pytest.raises(ValueError, match="usage_from_counts"):
        node_usage(frame([]), PRICES)
    with pytest.raises(ValueError, match="samples is missing columns"):
        node_usage(pd.DataFrame({"ts": []}), PRICES)
    with pytest.raises(ValueError, match="stale_after_s"):
        node_usage(two_nodes(), PRICES, stale_after_s=0)
    with pytest.raises(ValueError, match="samples: column 'ts' must hold datetimes"):
        node_usage(two_nodes().assign(ts="2026-01-01"), PRICES)
    with pytest.raises(ValueError, match="now must be a timezone-aware pandas Timestamp"):
        node_usage(two_nodes(), PRICES, now=pd.Timestamp("2026-01-01"))


def test_usage_from_counts() -> None:
    prices = PriceTable(cpu_hour=0.04, gpu_hour={"H100": 5.0})
    usage = usage_from_counts(prices, nodes=3, hours=10, cpus_per_node=8, gpus_per_node=1, gpu_model="H100")
    summary = summarise_cost(usage, PriceTable())
    # per node 8 * 0.04 + 5.0 = 5.32 /h; 3 nodes: 15.96 /h; 10 h: 159.6
    assert summary.hourly_cost == pytest.approx(15.96)
    assert summary.total_cost == pytest.approx(159.6)
    assert (summary.node_hours, summary.cpu_hours, summary.gpu_hours) == (30.0, 240.0, 30.0)
    with pytest.raises(ValueError, match="nodes"):
        usage_from_counts(PRICES, nodes=0, hours=1, cpus_per_node=1)
    with pytest.raises(ValueError, match="hours"):
        usage_from_counts(PRICES, nodes=1, hours=math.inf, cpus_per_node=1)
    with pytest.raises(ValueError, match="hours must be a finite number >= 0, but got '2'"):
        usage_from_counts(PRICES, nodes=1, hours="2", cpus_per_node=1)


# --------------------------------------------------------------------------------------------
# Return on investment


def test_best_score_change_uses_first_and_latest_reports() -> None:
    rows = frame(
        [
            sample(0, "agent", "n", "a", "mean_return", 1.0, 1),
            sample(1, "agent", "n", "b", "mean_return", 2.0, 1),
            sample(2, "agent", "n", "a", "mean_return", 9.0, 2),  # a past peak, not held now
            sample(3, "agent", "n", "a", "mean_return", 5.0, 3),
            sample(4, "agent", "n", "b", "mean_return", 3.0, 2),
            sample(5, "agent", "n", "b", "mean_return", math.nan, 3),  # left out
        ]
    )
    change = best_score_change(rows)
    # start = max(a: 1.0, b: 2.0) = 2.0; now = max(a: 5.0, b: 3.0) = 5.0
    assert (change.start, change.now, change.improvement) == (2.0, 5.0, 3.0)


def test_best_score_change_without_scores_is_an_error() -> None:
    with pytest.raises(ValueError, match="mean_return"):
        best_score_change(frame([sample(0, "node", "n", "n1", "cpu_percent", 1.0)]))


def counters_with_a_restore() -> pd.DataFrame:
    """Counter episodes_total. B trains 150 episodes per iteration, A 100. A's report at generation 3
    (ts 5) triggers an exploit from B at generation 3 (counter 450); A restores and reports generation 4
    at ts 7 with 450 + 100 = 550."""
    a = [(1, 1, 100.0), (3, 2, 200.0), (5, 3, 300.0), (7, 4, 550.0)]
    b = [(2, 1, 150.0), (4, 2, 300.0), (4.5, 3, 450.0), (6, 4, 600.0)]
    return frame(
        [sample(s, "agent", "n", "A", "episodes_total", v, g) for s, g, v in a]
        + [sample(s, "agent", "n", "B", "episodes_total", v, g) for s, g, v in b]
    )


@pytest.mark.parametrize("exploit_seconds", [4.9, 5.1])  # Tune writes it before the trigger, custom loops after
def test_samples_processed_takes_a_restore_from_the_source_counter(exploit_seconds: float) -> None:
    events = events_frame([exploit(exploit_seconds, "A", "B", 3, 3)])
    work = samples_processed(counters_with_a_restore(), events)
    # A: 100 + 100 + 100 + (550 - 450) = 400; B: 150 * 4 = 600; total 1000 (the sum of last values is 1150)
    assert work.total == pytest.approx(1000.0)
    assert (work.restores, work.unresolved) == (1, 0)


def test_samples_processed_without_events_counts_the_jump_as_work() -> None:
    work = samples_processed(counters_with_a_restore())
    # A: 100 + 100 + 100 + (550 - 300) = 550; B: 600
    assert work.total == pytest.approx(1150.0)
    assert work.restores == 0


def test_unexplained_counter_drop_is_unresolved_and_late_start_counts_from_itself() -> None:
    rows = frame(
        [
            sample(1, "agent", "n", "C", "episodes_total", 100.0, 1),
            sample(2, "agent", "n", "C", "episodes_total", 200.0, 2),
            sample(3, "agent", "n", "C", "episodes_total", 150.0, 2),  # restored, no event: -50
            sample(4, "agent", "n", "C", "episodes_total", 250.0, 3),
            sample(1, "agent", "n", "D", "episodes_total", 5000.0, 50),  # data starts at generation 50
            sample(2, "agent", "n", "D", "episodes_total", 5100.0, 51),
        ]
    )
    work = samples_processed(rows, events_frame([]))
    # C: 100 + 100 + 0 + 100 = 300; D: 0 + 100 = 100
    assert work.total == pytest.approx(400.0)
    assert work.unresolved == 1


def test_exploit_whose_source_is_not_in_the_samples_falls_back_to_the_previous_value() -> None:
    events = events_frame([exploit(4.9, "A", "Z", 3, 3)])
    work = samples_processed(counters_with_a_restore(), events)
    assert (work.total, work.restores) == (pytest.approx(1150.0), 0)


def test_malformed_exploit_payload_is_an_error_naming_events() -> None:
    events = events_frame([{**exploit(4.9, "A", "B", 3, 3), "payload": "[1, 2"}])
    with pytest.raises(ValueError, match="events"):
        samples_processed(counters_with_a_restore(), events)


def test_a_source_generation_is_read_as_migration_reads_it() -> None:
    # An older report_exploit stored a NumPy generation as the text "3": still the restore of 1000.
    as_text = events_frame([{**exploit(4.9, "A", "B", 3, 3), "payload": json.dumps({"source_generation": "3"})}])
    work = samples_processed(counters_with_a_restore(), as_text)
    assert (work.total, work.restores) == (pytest.approx(1000.0), 1)
    half = events_frame([{**exploit(4.9, "A", "B", 3, 3), "payload": json.dumps({"source_generation": 2.5})}])
    with pytest.raises(ValueError, match="source_generation must be a whole number, but got 2.5"):
        samples_processed(counters_with_a_restore(), half)


def test_return_on_investment() -> None:
    summary = summarise_cost(node_usage(two_nodes(), PRICES, gpu_model="A100"), PRICES)  # total 6.80
    score = best_score_change(frame([sample(0, "agent", "n", "a", "mean_return", v, g) for g, v in ((1, 2), (2, 5))]))
    work = samples_processed(counters_with_a_restore(), events_frame([exploit(4.9, "A", "B", 3, 3)]))
    roi = return_on_investment(summary, score, work)
    assert roi.cost_per_improvement_point == pytest.approx(6.80 / 3.0)  # improvement 5 - 2 = 3
    assert roi.cost_per_million_samples == pytest.approx(6800.0)  # 6.80 / (1000 / 1e6)
    flat = best_score_change(frame([sample(0, "agent", "n", "a", "mean_return", 2.0, 1)]))
    assert return_on_investment(summary, flat, work).cost_per_improvement_point is None  # no improvement


# --------------------------------------------------------------------------------------------
# Budget


def test_budget_burn() -> None:
    burn = budget_burn(spent=40.0, hourly_cost=5.0, budget_threshold=100.0, hours_ahead=10.0)
    assert burn.share_spent == pytest.approx(0.40)  # 40 / 100
    assert burn.projected_spend == pytest.approx(90.0)  # 40 + 5 * 10
    assert burn.projected_share == pytest.approx(0.90)
    assert burn.hours_until_exhausted == pytest.approx(12.0)  # (100 - 40) / 5
    assert burn.sustainable_hourly_cost == pytest.approx(6.0)  # (100 - 40) / 10
    assert not burn.exhausted_before_horizon
    from_numpy = budget_burn(
        spent=np.int64(40), hourly_cost=np.float32(5.0), budget_threshold=np.int64(100), hours_ahead=np.float32(10)
    )
    assert from_numpy.projected_spend == pytest.approx(90.0)  # NumPy scalars are numbers too


def test_budget_burn_over_budget_idle_and_no_horizon() -> None:
    over = budget_burn(spent=120.0, hourly_cost=5.0, budget_threshold=100.0, hours_ahead=2.0)
    assert (over.hours_until_exhausted, over.sustainable_hourly_cost, over.exhausted_before_horizon) == (0.0, 0.0, True)
    idle = budget_burn(spent=10.0, hourly_cost=0.0, budget_threshold=100.0, hours_ahead=0.0)
    assert idle.hours_until_exhausted == math.inf
    assert idle.sustainable_hourly_cost is None
    spent = budget_burn(spent=100.0, hourly_cost=5.0, budget_threshold=100.0, hours_ahead=0.0)
    assert (spent.hours_until_exhausted, spent.exhausted_before_horizon) == (0.0, True)  # was 0 h left, "not exhausted"
    exactly = budget_burn(spent=40.0, hourly_cost=5.0, budget_threshold=100.0, hours_ahead=12.0)
    assert (exactly.hours_until_exhausted, exactly.exhausted_before_horizon) == (12.0, True)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"budget_threshold": 0.0}, "budget_threshold"),
        ({"spent": -1.0}, "spent"),
        ({"hourly_cost": math.nan}, "hourly_cost"),
        ({"hours_ahead": -2.0}, "hours_ahead"),
        ({"spent": "1"}, "spent must be a finite number >= 0, but got '1'"),
        ({"spent": True}, "spent"),
    ],
)
def test_budget_burn_rejects_bad_numbers_naming_them(arguments: dict, named: str) -> None:
    good = {"spent": 1.0, "hourly_cost": 1.0, "budget_threshold": 10.0, "hours_ahead": 1.0}
    with pytest.raises(ValueError, match=named):
        budget_burn(**{**good, **arguments})


def test_works_on_samples_as_the_store_returns_them() -> None:
    """Arrow dictionary columns arrive in pandas as categoricals, nullable generations as floats."""
    stored = pa.Table.from_pandas(two_nodes(), preserve_index=False).cast(SCHEMAS[TableName.SAMPLES]).to_pandas()
    assert isinstance(stored["node"].dtype, pd.CategoricalDtype)
    summary = summarise_cost(node_usage(stored, PRICES, gpu_model="A100"), PRICES)
    assert (summary.total_cost, summary.hourly_cost) == (pytest.approx(6.80), pytest.approx(3.30))
    counters = pa.Table.from_pandas(counters_with_a_restore(), preserve_index=False)
    counters = counters.cast(SCHEMAS[TableName.SAMPLES]).to_pandas()
    assert samples_processed(counters, events_frame([exploit(4.9, "A", "B", 3, 3)])).total == pytest.approx(1000.0)


def test_gpu_models_are_the_newest_announcement_of_each_node_by_its_commonest_board() -> None:
    def info(seconds: float, node: str | None, payload: str) -> dict:
        return {"ts": at(seconds), "type": "gpu_info", "node": node, "payload": payload}

    def named(*models: str) -> str:
        return json.dumps({"models": {str(i): m for i, m in enumerate(models)}})

    events = pd.DataFrame(
        [
            info(10, "n1", named("NVIDIA A10G")),
            info(20, "n1", named("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3")),
            info(5, "n2", named("", "Tesla T4")),  # a board without a name is left out
            info(30, "n2", "{not json"),  # unreadable: the newest readable one stands
            info(40, None, named("NVIDIA L4")),  # no node: no machine to price
            {"ts": at(50), "type": "exploit", "node": "n3", "payload": named("NVIDIA L4")},
        ]
    )
    models = gpu_models(events)
    assert models == {"n1": "NVIDIA H100 80GB HBM3", "n2": "Tesla T4"}
    assert PriceTable(gpu_hour={"H100": 4.0, "T4": 0.5}).gpu_hour_for(models["n1"]) == 4.0  # what they are for
