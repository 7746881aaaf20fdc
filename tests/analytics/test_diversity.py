"""Hyperparameter diversity against hand-computed values; the arithmetic is in the comments."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elitemon import schema
from elitemon.analytics.diversity import (
    DiversityRating,
    ParamScale,
    ParamSpec,
    diversity_index,
    diversity_over_generations,
    infer_specs,
    parameter_index,
    rate_diversity,
)

T0 = pd.Timestamp("2026-01-01", tz="UTC")
SQRT12 = math.sqrt(12)


def make_configs(rows: list[tuple]) -> pd.DataFrame:
    """rows: (seconds after T0, agent, generation, param, value); a str value is non-numeric."""
    return pd.DataFrame(
        {
            "ts": pd.Series([T0 + pd.Timedelta(seconds=r[0]) for r in rows], dtype="datetime64[us, UTC]"),
            "agent": [r[1] for r in rows],
            "generation": pd.array([r[2] for r in rows], dtype="Int64"),
            "param": [r[3] for r in rows],
            "value": np.array([np.nan if isinstance(r[4], str) else r[4] for r in rows], dtype=np.float64),
            "text": [str(r[4]) for r in rows],
        }
    )


def config(seconds: float, agent: str, generation: int, lr: float, gamma: float, optimizer: str) -> list[tuple]:
    return [
        (seconds, agent, generation, "lr", lr),
        (seconds, agent, generation, "gamma", gamma),
        (seconds, agent, generation, "optimizer", optimizer),
        (seconds, agent, generation, "env", "Taxi-v4"),  # a fixed setting, not searched
    ]


# Generation 0: two configs, each held by two agents (c = a, d = b). At generation 3 d copies a, and at
# generation 5 b copies a too: the population has collapsed onto a's config.
HISTORY = make_configs(
    config(0, "a", 0, 1e-3, 0.94, "adam")
    + config(0, "b", 0, 1e-2, 0.96, "sgd")
    + config(0, "c", 0, 1e-3, 0.94, "adam")
    + config(0, "d", 0, 1e-2, 0.96, "sgd")
    + config(5, "d", 3, 1e-3, 0.94, "adam")
    + config(10, "b", 5, 1e-3, 0.94, "adam")
)
SPECS = {
    "lr": ParamSpec(kind="log", low=1e-4, high=1.0),
    "gamma": ParamSpec(kind="linear", low=0.9, high=1.0),
    "optimizer": ParamSpec(kind="categorical", categories=("adam", "sgd", "rmsprop", "adagrad")),
}
SEARCHED = ["lr", "gamma", "optimizer"]

# Generation 0 by hand:
#   lr on ln [1e-4, 1]: 1e-3 -> u = 1/4, 1e-2 -> 1/2; u = [.25, .5, .25, .5], σ = .125, √12·σ = 0.4330127.
#   gamma on [0.9, 1]: u = [.4, .6, .4, .6], σ = .1, √12·σ = 0.3464102.
#   optimizer: adam/sgd half each, H = ln 2, over ln 4 categories = 0.5.
GEN0 = {"lr": math.sqrt(12) * 0.125, "gamma": math.sqrt(12) * 0.1, "optimizer": 0.5}
GEN0_OVERALL = sum(GEN0.values()) / 3  # 1.2794229 / 3 = 0.4264743
# Generation 3 (d = a): lr u = [.25, .5, .25, .25], mean .3125, σ² = (3·.0625² + .1875²)/4 = .01171875,
#   √12·σ = √.140625 = .375; gamma u = [.4, .6, .4, .4], σ² = (3·.05² + .15²)/4 = .0075, √(12·.0075) = .3;
#   optimizer shares .75/.25: H = -(.75 ln .75 + .25 ln .25) = 0.5623351, / ln 4 = 0.4056391.
GEN3 = {"lr": 0.375, "gamma": 0.3, "optimizer": 0.5623351446188083 / math.log(4)}
GEN3_OVERALL = sum(GEN3.values()) / 3  # 1.0806391 / 3 = 0.3602130


# --------------------------------------------------------------------------------------------
# One parameter


def test_linear_index_by_hand():
    # u = [.25, .5, .75]: σ² = (.0625 + 0 + .0625)/3 = 1/24, √12·σ = √(1/2) = 0.7071068.
    assert parameter_index([0.25, 0.5, 0.75], ParamSpec(kind="linear", low=0, high=1)) == pytest.approx(math.sqrt(0.5))
    # [4, 6] on [0, 10]: u = [.4, .6], σ = .1, √12·σ = 0.3464102.
    assert parameter_index([4, 6], ParamSpec(kind="linear", low=0, high=10)) == pytest.approx(SQRT12 * 0.1)


def test_centred_and_negative_parameters_work_where_the_coefficient_of_variation_fails():
    # Mean 0: std/mean is undefined. On [-1, 1]: u = [.25, .75], σ = .25, √12·σ = 0.8660254.
    assert parameter_index([-0.5, 0.5], ParamSpec(kind="linear", low=-1, high=1)) == pytest.approx(SQRT12 * 0.25)
    # All negative: std/mean would be negative. On [-10, 0]: u = [.4, .6], as [4, 6] on [0, 10].
    assert parameter_index([-6, -4], ParamSpec(kind="linear", low=-10, high=0)) == pytest.approx(SQRT12 * 0.1)


def test_log_index_counts_decades_equally():
    # On ln [1e-4, 1]: 1e-3, 1e-2, 1e-1 -> u = [.25, .5, .75], the same spread as the linear case: 0.7071068.
    spec = ParamSpec(kind="log", low=1e-4, high=1)
    assert parameter_index([1e-3, 1e-2, 1e-1], spec) == pytest.approx(math.sqrt(0.5))
    # Multiplying every value by 10 keeps the spread (u = [.5, .75, 1]).
    assert parameter_index([1e-2, 1e-1, 1], spec) == pytest.approx(math.sqrt(0.5))


def test_index_bounds_constants_and_clipping():
    spec = ParamSpec(kind="linear", low=0, high=1)
    assert parameter_index([0.3, 0.3, 0.3], spec) == 0.0
    assert parameter_index([0.7], spec) == 0.0  # one agent
    # Two clusters at the bounds: σ = .5, √12·σ = 1.73, capped at 1.
    assert parameter_index([0, 0, 1, 1], spec) == 1.0
    # Outside the bounds is clipped: [0.5, 3] -> u = [.5, 1], σ = .25, 0.8660254.
    assert parameter_index([0.5, 3.0], spec) == pytest.approx(SQRT12 * 0.25)
    # No bounds: the values' own range, so two distinct values are fully spread.
    assert parameter_index([0.001, 0.0011], ParamSpec(kind="linear")) == 1.0


def test_categorical_index_is_normalised_entropy():
    # adam 3, sgd 1 over 2 observed categories: H = 0.5623351 / ln 2 = 0.8112781.
    assert parameter_index(["adam", "adam", "adam", "sgd"], ParamSpec(kind="categorical")) == pytest.approx(
        0.5623351446188083 / math.log(2)
    )
    # Half and half over 4 possible categories: ln 2 / ln 4 = 0.5; over the 2 observed: 1.
    four = ParamSpec(kind="categorical", categories=("adam", "sgd", "rmsprop", "adagrad"))
    assert parameter_index(["adam", "sgd"], four) == pytest.approx(0.5)
    assert parameter_index(["adam", "sgd"], ParamSpec(kind="categorical")) == pytest.approx(1.0)
    assert parameter_index(["adam", "adam"], four) == 0.0
    assert parameter_index(["x"], ParamSpec(kind="categorical")) == 0.0  # one category: no diversity possible


def test_parameter_index_rejects_bad_values():
    with pytest.raises(ValueError, match="values must not be empty"):
        parameter_index([], ParamSpec(kind="linear"))
    with pytest.raises(ValueError, match="values must be finite"):
        parameter_index([1.0, np.nan], ParamSpec(kind="linear"))
    with pytest.raises(ValueError, match="values must be positive on the log scale"):
        parameter_index([0.0, 1.0], ParamSpec(kind="log"))
    with pytest.raises(ValueError, match=r"values \['nadam'\] are not among the categories"):
        parameter_index(["adam", "nadam"], ParamSpec(kind="categorical", categories=("adam", "sgd")))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "cubic"}, r"kind must be one of \['log', 'linear', 'categorical'\]"),
        ({"kind": "categorical", "low": 0}, "a categorical parameter has no low or high"),
        ({"kind": "categorical", "categories": ()}, "categories must be non-empty and distinct"),
        ({"kind": "categorical", "categories": ("a", "a")}, "categories must be non-empty and distinct"),
        ({"kind": "linear", "categories": ("a",)}, "a linear parameter has no categories"),
        ({"kind": "log", "low": 0.0}, "a log-scale parameter needs a positive low"),
        ({"kind": "linear", "low": 1, "high": 0}, "low must not exceed high"),
        ({"kind": "linear", "high": math.inf}, "high must be a finite number"),
        ({"kind": "linear", "low": "0.1"}, "low must be a finite number, but got '0.1'"),
    ],
)
def test_param_spec_rejects_bad_definitions(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ParamSpec(**kwargs)


def test_ratings_and_their_thresholds():
    assert rate_diversity(0.5) is DiversityRating.HIGH
    assert rate_diversity(0.4999) is DiversityRating.MEDIUM
    assert rate_diversity(0.2) is DiversityRating.MEDIUM
    assert rate_diversity(0.1999) is DiversityRating.LOW
    assert rate_diversity(0.0) is DiversityRating.LOW
    for bad in (1.5, -0.1, math.nan):
        with pytest.raises(ValueError, match="index must be in"):
            rate_diversity(bad)


# --------------------------------------------------------------------------------------------
# Inference


def test_inference_rules():
    configs = make_configs(
        [
            (0, "a", 0, "lr", 1e-4),
            (0, "b", 0, "lr", 1e-1),  # positive, max/min = 1000 > 100: log
            (0, "a", 0, "batch", 1.0),
            (0, "b", 0, "batch", 100.0),  # max/min = 100, not above: linear
            (0, "a", 0, "bias", -1.0),
            (0, "b", 0, "bias", 2.0),  # not all positive: linear
            (0, "a", 0, "use_gae", "True"),
            (0, "b", 0, "use_gae", "False"),  # non-numeric: categorical
        ]
    )
    assert infer_specs(configs) == {
        "batch": ParamSpec(kind="linear", low=1.0, high=100.0),
        "bias": ParamSpec(kind="linear", low=-1.0, high=2.0),
        "lr": ParamSpec(kind="log", low=1e-4, high=1e-1),
        "use_gae": ParamSpec(kind="categorical", categories=("False", "True")),
    }


def test_given_specs_win_and_missing_bounds_are_observed():
    specs = {"gamma": ParamSpec(kind="log"), "lr": ParamSpec(kind="linear", high=1.0)}
    resolved = infer_specs(HISTORY, specs=specs, params=["lr", "gamma"])
    assert resolved == {
        "lr": ParamSpec(kind="linear", low=1e-3, high=1.0),
        "gamma": ParamSpec(kind="log", low=0.94, high=0.96),
    }


def test_ranges_are_inferred_over_the_whole_history():
    # Every agent now holds a's config, so the current range would be a point; over all rows it is
    # lr 1e-3..1e-2 (ratio 10: linear) and gamma 0.94..0.96.
    resolved = infer_specs(HISTORY, params=["lr", "gamma"])
    assert resolved == {
        "lr": ParamSpec(kind="linear", low=1e-3, high=1e-2),
        "gamma": ParamSpec(kind="linear", low=0.94, high=0.96),
    }
    # Generation 0 against that range: lr u = [0, 1, 0, 1], σ = .5 -> capped at 1.
    assert diversity_index(HISTORY, generation=0, params=["lr"]).parameters["lr"].index == 1.0


def test_bad_specs_and_params_name_the_argument():
    with pytest.raises(ValueError, match=r"params: no configs rows for parameters \['learning_rate'\]"):
        diversity_index(HISTORY, params=["learning_rate"])
    with pytest.raises(ValueError, match=r"specs: no configs rows for parameters \['lrr'\]"):
        diversity_index(HISTORY, specs={"lrr": ParamSpec(kind="log")})
    with pytest.raises(ValueError, match=r"specs\['lr'\] must be a ParamSpec"):
        diversity_index(HISTORY, specs={"lr": "log"})
    with pytest.raises(ValueError, match="parameter 'env' is declared linear but has a non-numeric value 'Taxi-v4'"):
        diversity_index(HISTORY, specs={"env": ParamSpec(kind="linear")})
    negative = make_configs([(0, "a", 0, "x", -1.0), (0, "b", 0, "x", 1.0)])
    with pytest.raises(ValueError, match="parameter 'x': a log-scale parameter needs a positive low"):
        diversity_index(negative, specs={"x": ParamSpec(kind="log")})
    with pytest.raises(ValueError, match=r"configs is missing columns \['text'\]"):
        diversity_index(HISTORY.drop(columns="text"))
    with pytest.raises(ValueError, match="configs: column 'ts' must hold datetimes"):
        diversity_index(HISTORY.assign(ts=0))
    with pytest.raises(ValueError, match="configs: column 'value' must hold numbers"):
        diversity_index(HISTORY.assign(value=HISTORY["value"].astype(object).where(HISTORY["value"].isna(), "abc")))
    with pytest.raises(ValueError, match="configs: column 'generation' must hold whole numbers"):
        diversity_index(HISTORY.assign(generation=HISTORY["generation"] + 0.5))  # was cut to the generation below
    with pytest.raises(ValueError, match="generation must be a non-negative integer"):
        diversity_index(HISTORY, generation=-1)


# --------------------------------------------------------------------------------------------
# The population's index


def test_diversity_at_generation_zero_by_hand():
    report = diversity_index(HISTORY, generation=0, specs=SPECS, params=SEARCHED)
    assert report.agents == 4
    assert {p: d.index for p, d in report.parameters.items()} == pytest.approx(GEN0)
    assert report.parameters["optimizer"].rating is DiversityRating.HIGH  # 0.5
    assert report.parameters["gamma"].rating is DiversityRating.MEDIUM  # 0.346
    assert report.overall == pytest.approx(GEN0_OVERALL)  # 0.4264743
    assert report.rating is DiversityRating.MEDIUM


def test_a_fixed_setting_drags_the_index_down_unless_left_out():
    report = diversity_index(HISTORY, generation=0, specs=SPECS)
    # env is one category: index 0. (1.2794229 + 0)/4 = 0.3198557.
    assert report.parameters["env"].index == 0.0
    assert report.overall == pytest.approx(sum(GEN0.values()) / 4)


def test_config_at_a_generation_is_the_latest_row_at_or_before_it():
    # Generation 4 has no rows of its own: d's generation-3 config holds, as at generation 3.
    at3 = diversity_index(HISTORY, generation=3, specs=SPECS, params=SEARCHED)
    at4 = diversity_index(HISTORY, generation=4, specs=SPECS, params=SEARCHED)
    assert {p: d.index for p, d in at4.parameters.items()} == pytest.approx(GEN3)
    assert at3 == dataclasses.replace(at4, generation=3)
    # Current: every agent holds a's config: no diversity left.
    now = diversity_index(HISTORY, specs=SPECS, params=SEARCHED)
    assert (now.generation, now.overall, now.rating) == (None, 0.0, DiversityRating.LOW)


def test_latest_row_wins_even_at_a_lower_generation():
    # a restores a generation-1 checkpoint after having a generation-3 config: its latest row counts.
    configs = make_configs([(0, "a", 3, "x", 0.0), (1, "a", 1, "x", 1.0), (0, "b", 0, "x", 1.0)])
    spec = {"x": ParamSpec(kind="linear", low=0, high=1)}
    assert diversity_index(configs, specs=spec).overall == 0.0  # a = 1, b = 1
    assert diversity_index(configs, generation=2, specs=spec).overall == 0.0  # a's gen-1 row, b
    # At generation 0 only b has a config.
    assert diversity_index(configs, generation=0, specs=spec).agents == 1


def test_diversity_edge_cases():
    empty = diversity_index(make_configs([]))
    assert (empty.agents, empty.parameters, empty.overall, empty.rating) == (0, {}, None, None)
    # Before any agent has a config.
    assert diversity_index(HISTORY.assign(generation=7), generation=2).overall is None
    one = diversity_index(make_configs(config(0, "a", 0, 1e-3, 0.9, "adam")))
    assert (one.agents, one.overall, one.rating) == (1, 0.0, DiversityRating.LOW)
    # A null text falls back to the value; a null generation counts as 0.
    configs = make_configs([(0, "a", None, "x", 1.0), (0, "b", None, "x", 2.0)]).assign(text=None)
    report = diversity_index(configs, generation=0, specs={"x": ParamSpec(kind="categorical")})
    assert report.parameters["x"].index == 1.0  # "1.0" and "2.0", half each, of 2 categories
    # A row with neither a value nor a text sets nothing: c keeps x = 3.0 and x stays numeric.
    unset = make_configs([(0, "a", 0, "x", 1.0), (0, "b", 0, "x", 2.0), (0, "c", 0, "x", 3.0), (1, "c", 0, "x", 0.0)])
    unset.loc[3, ["value", "text"]] = [np.nan, None]
    report = diversity_index(unset, generation=0)
    assert report.parameters["x"].spec.kind is ParamScale.LINEAR
    assert report.parameters["x"].index == diversity_index(unset.iloc[:3], generation=0).parameters["x"].index


def test_accepts_frames_as_the_store_returns_them():
    rows = HISTORY.assign(ts=HISTORY["ts"].astype("int64") / 1e6).to_dict("records")
    for row in rows:
        row["generation"] = int(row["generation"])
        row["value"] = None if math.isnan(row["value"]) else row["value"]
    stored = schema.batch_from_rows("configs", rows).to_pandas()
    assert isinstance(stored["param"].dtype, pd.CategoricalDtype)
    assert diversity_index(stored, generation=3, specs=SPECS, params=SEARCHED) == diversity_index(
        HISTORY, generation=3, specs=SPECS, params=SEARCHED
    )


# --------------------------------------------------------------------------------------------
# Over generations and collapse


def test_diversity_over_generations_and_collapse():
    frame = diversity_over_generations(HISTORY, specs=SPECS, params=SEARCHED)
    assert list(frame.index) == [0, 3, 5]
    assert list(frame.columns) == [
        "overall",
        "rating",
        "peak",
        "drop_from_peak",
        "collapsed",
        "param:lr",
        "param:gamma",
        "param:optimizer",
    ]
    assert frame["overall"].tolist() == pytest.approx([GEN0_OVERALL, GEN3_OVERALL, 0.0])
    assert frame["rating"].tolist() == [DiversityRating.MEDIUM, DiversityRating.MEDIUM, DiversityRating.LOW]
    assert frame["peak"].tolist() == pytest.approx([GEN0_OVERALL] * 3)
    # Generation 3: (0.4264743 - 0.3602130)/0.4264743 = 0.1553700; generation 5: all of it.
    assert frame["drop_from_peak"].tolist() == pytest.approx([0.0, 1 - GEN3_OVERALL / GEN0_OVERALL, 1.0])
    assert frame["collapsed"].tolist() == [False, False, True]
    assert frame["param:optimizer"].tolist() == pytest.approx([0.5, GEN3["optimizer"], 0.0])


def test_collapse_by_drop_from_peak_alone():
    # With collapse_below 0 only the drop counts: 15.5% at generation 3 exceeds a limit of 10%.
    frame = diversity_over_generations(
        HISTORY, specs=SPECS, params=SEARCHED, collapse_below=0.0, max_drop_from_peak=0.1
    )
    assert frame["collapsed"].tolist() == [False, True, True]
    # Below-threshold alone: 0.36 < 0.4 at generation 3.
    frame = diversity_over_generations(
        HISTORY, specs=SPECS, params=SEARCHED, collapse_below=0.4, max_drop_from_peak=1.0
    )
    assert frame["collapsed"].tolist() == [False, True, True]


def test_diversity_over_chosen_generations_before_the_first_config():
    frame = diversity_over_generations(HISTORY.assign(generation=2), generations=[1, 2], specs=SPECS, params=SEARCHED)
    # Generation 1: nobody yet, NaN and not collapsed.
    assert math.isnan(frame.loc[1, "overall"]) and math.isnan(frame.loc[1, "drop_from_peak"])
    assert frame.loc[1, "rating"] is None and not frame.loc[1, "collapsed"]
    # Generation 2: every row, the latest config per agent: the current population, collapsed.
    assert frame.loc[2, "overall"] == 0.0 and frame.loc[2, "collapsed"]


def test_diversity_over_generations_edge_cases():
    frame = diversity_over_generations(make_configs([]))
    assert frame.empty and list(frame.columns) == ["overall", "rating", "peak", "drop_from_peak", "collapsed"]
    with pytest.raises(ValueError, match="collapse_below must be in"):
        diversity_over_generations(HISTORY, collapse_below=2)
    with pytest.raises(ValueError, match="max_drop_from_peak must be in"):
        diversity_over_generations(HISTORY, max_drop_from_peak=-0.5)
    with pytest.raises(ValueError, match="generation must be a non-negative integer"):
        diversity_over_generations(HISTORY, generations=[1.5])


def test_param_scale_is_an_enum():
    assert ParamSpec(kind="log").kind is ParamScale.LOG


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30),
    st.floats(-1e3, 1e3),
    st.floats(1e-3, 1e3),
)
def test_linear_index_is_in_unit_range_and_ignores_units(unit_values, shift, scale):
    # Moving and stretching values and bounds together (a change of units) keeps the index.
    index = parameter_index(unit_values, ParamSpec(kind="linear", low=0, high=1))
    moved = [shift + scale * v for v in unit_values]
    assert 0.0 <= index <= 1.0
    assert parameter_index(moved, ParamSpec(kind="linear", low=shift, high=shift + scale)) == pytest.approx(
        index, abs=1e-6
    )


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-4.0, 0.0), min_size=1, max_size=30), st.integers(-3, 3))
def test_log_index_ignores_a_common_factor(exponents, decades):
    # lr values and bounds times 10^k: the same spread on the log scale.
    values = [10.0**e for e in exponents]
    index = parameter_index(values, ParamSpec(kind="log", low=1e-4, high=1.0))
    factor = 10.0**decades
    shifted = parameter_index([v * factor for v in values], ParamSpec(kind="log", low=1e-4 * factor, high=factor))
    assert 0.0 <= index <= 1.0
    assert shifted == pytest.approx(index, abs=1e-6)
