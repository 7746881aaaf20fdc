"""Hyperparameter importance: the config/score join by hand, Spearman by hand, and forests on synthetic
populations whose true drivers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from elitemon.analytics.importance import (
    ConfigScores,
    Encoding,
    config_scores,
    hyperparameter_importance,
    spearman_matrix,
)
from tests.conftest import store_frame

T0 = 1_700_000_000.0


def score(agent: str, generation: int, value: float, at: float, metric: str = "mean_return") -> dict:
    return {
        "ts": T0 + at,
        "kind": "agent",
        "node": "n1",
        "source": agent,
        "generation": generation,
        "metric": metric,
        "value": value,
    }


def config(agent: str, generation: int, at: float, **params: object) -> list[dict]:
    return [
        {
            "ts": T0 + at,
            "agent": agent,
            "generation": generation,
            "param": name,
            "value": float(value) if isinstance(value, int | float) else None,
            "text": str(value),
        }
        for name, value in params.items()
    ]


def table(params: dict[str, np.ndarray], score_values: np.ndarray, generations: np.ndarray | None = None):
    """A ConfigScores built directly: one agent per row unless `generations` groups them."""
    n = len(score_values)
    generation = np.zeros(n, dtype="int64") if generations is None else generations
    data = pd.DataFrame({"agent": [f"a{i}" for i in range(n)], "generation": generation, **params})
    data["mean_return"] = score_values
    categorical = tuple(name for name, values in params.items() if np.asarray(values).dtype.kind in "OU")
    return ConfigScores(data, tuple(params), categorical, ("mean_return",), 0)


# --------------------------------------------------------------------------------------------
# The join.


def test_join_follows_tune_write_order() -> None:
    """Agent x: trial start config (lr 0.1, adam); scores 1 and 2 at generations 1 and 2; Tune then
    exploits it at generation 2 from a source at generation 1: the new config (lr 0.2, sgd) is written
    at ts 1.9, just before the score of the result that triggered it (generation 2, ts 2.0). The restored
    x reports generation 2 again (3.0, ts 3) and 3 (4.0, ts 4). Agent y's first score comes before its
    config: it cannot be matched."""
    configs = config("x", 0, 0.0, lr=0.1, opt="adam") + config("x", 2, 1.9, lr=0.2, opt="sgd")
    configs += config("y", 1, 1.5, lr=0.3, opt="adam")
    samples = [score("x", 1, 1.0, 1.0), score("x", 2, 2.0, 2.0), score("x", 2, 3.0, 3.0), score("x", 3, 4.0, 4.0)]
    samples += [score("y", 1, 5.0, 1.0), score("y", 2, 6.0, 2.0), score("x", 1, 99.0, 1.0, metric="loss")]
    samples += [score("x", 3, 7.0, 4.0, metric="episodes_per_s")]
    joined = config_scores(store_frame("samples", samples), store_frame("configs", configs), metrics=["episodes_per_s"])
    assert joined.params == ("lr", "opt") and joined.categorical == ("opt",)
    assert joined.metrics == ("mean_return", "episodes_per_s")
    assert joined.unmatched == 1  # y at generation 1
    rows = joined.frame.to_dict("records")
    assert [(r["agent"], r["generation"], r["lr"], r["opt"], r["mean_return"]) for r in rows] == [
        ("x", 1, 0.1, "adam", 1.0),
        ("x", 2, 0.2, "sgd", 3.0),  # the latest report at generation 2, after the restore: new config
        ("x", 3, 0.2, "sgd", 4.0),
        ("y", 2, 0.3, "adam", 6.0),
    ]
    assert np.isnan(rows[0]["episodes_per_s"]) and rows[2]["episodes_per_s"] == 7.0


def test_triggering_result_keeps_the_old_config() -> None:
    """Same as above but the exploit's source is at generation 2: x never reports generation 2 again,
    so its score at generation 2 is the triggering one, trained with the old config."""
    configs = config("x", 0, 0.0, lr=0.1) + config("x", 2, 1.9, lr=0.2)
    samples = [score("x", 1, 1.0, 1.0), score("x", 2, 2.0, 2.0), score("x", 3, 4.0, 3.0)]
    joined = config_scores(store_frame("samples", samples), store_frame("configs", configs))
    assert joined.frame[["generation", "lr"]].to_numpy().tolist() == [[1, 0.1], [2, 0.1], [3, 0.2]]


def test_triggering_results_of_several_agents_in_any_order() -> None:
    """y's exploit config is written before x's, but x's triggering result comes first."""
    configs = config("x", 0, 0.0, lr=0.1) + config("y", 0, 0.0, lr=0.3)
    configs += config("y", 2, 1.90, lr=0.4) + config("x", 2, 1.95, lr=0.2)
    samples = [score("x", 2, 1.0, 2.0), score("y", 2, 2.0, 2.1), score("x", 3, 3.0, 3.0), score("y", 3, 4.0, 3.1)]
    joined = config_scores(store_frame("samples", samples), store_frame("configs", configs))
    assert joined.frame[["agent", "generation", "lr"]].to_numpy().tolist() == [
        ["x", 2, 0.1],
        ["x", 3, 0.2],
        ["y", 2, 0.3],
        ["y", 3, 0.4],
    ]


def test_custom_loop_config_counts_from_the_next_result() -> None:
    """elitemon.report(agent, g, metrics, config=...) writes the config just after the result."""
    configs = config("x", 1, 1.1, lr=0.1) + config("x", 2, 2.1, lr=0.5)
    samples = [score("x", 1, 1.0, 1.0), score("x", 2, 2.0, 2.0), score("x", 3, 3.0, 3.0)]
    joined = config_scores(store_frame("samples", samples), store_frame("configs", configs))
    assert joined.unmatched == 1
    assert joined.frame[["generation", "lr"]].to_numpy().tolist() == [[2, 0.1], [3, 0.5]]


def test_param_with_a_text_value_is_categorical_and_missing_params_are_nan() -> None:
    configs = config("x", 0, 0.0, batch=32, act="relu") + config("y", 0, 0.0, batch="auto")
    samples = [score("x", 1, 1.0, 1.0), score("y", 1, 2.0, 1.0)]
    joined = config_scores(store_frame("samples", samples), store_frame("configs", configs))
    assert joined.categorical == ("act", "batch")
    assert joined.frame["batch"].tolist() == ["32", "auto"]  # the stored text of each
    assert joined.frame["act"].isna().tolist() == [False, True]


def test_join_checks_its_arguments() -> None:
    configs = store_frame("configs", config("x", 0, 0.0, lr=0.1))
    samples = store_frame("samples", [score("x", 1, 1.0, 1.0)])
    with pytest.raises(ValueError, match="configs is missing columns \\['text'\\]"):
        config_scores(samples, configs.drop(columns=["text"]))
    with pytest.raises(ValueError, match="samples is missing columns"):
        config_scores(samples.drop(columns=["source"]), configs)
    with pytest.raises(ValueError, match="metrics: \\['lr'\\] are also hyperparameter names"):
        config_scores(samples, configs, metrics=["lr"])
    with pytest.raises(ValueError, match="not one string: use metrics=\\('loss',\\)"):
        config_scores(samples, configs, metrics="loss")  # would be 'l', 'o', 's', 's'
    with pytest.raises(ValueError, match="samples: column 'ts' must hold times"):
        config_scores(samples.assign(ts="yesterday"), configs)


def test_tables_with_times_in_other_units_join() -> None:
    """The store gives microseconds; a table built by hand often holds nanoseconds."""
    configs = store_frame("configs", config("x", 0, 0.0, lr=0.1) + config("x", 2, 1.9, lr=0.2))
    samples = store_frame("samples", [score("x", 1, 1.0, 1.0), score("x", 2, 2.0, 2.0), score("x", 3, 4.0, 3.0)])
    in_nanoseconds = configs.assign(ts=configs["ts"].dt.as_unit("ns"))
    joined = config_scores(samples, in_nanoseconds)
    assert joined.frame[["generation", "lr"]].to_numpy().tolist() == [[1, 0.1], [2, 0.1], [3, 0.2]]


def test_empty_input_gives_an_empty_table_that_importance_refuses() -> None:
    joined = config_scores(store_frame("samples", [])[:0], store_frame("configs", [])[:0])
    assert joined.frame.empty and joined.params == () and joined.unmatched == 0
    with pytest.raises(ValueError, match="table: no hyperparameters"):
        hyperparameter_importance(joined)
    with pytest.raises(ValueError, match="table: 0 samples"):
        spearman_matrix(joined)


# --------------------------------------------------------------------------------------------
# Spearman.


def test_spearman_matrix_by_hand() -> None:
    data = table(
        {"lr": np.array([1.0, 2.0, 3.0, 4.0]), "seed": np.full(4, 7.0), "opt": np.array(["a", "b", "a", "b"])},
        np.array([10.0, 30.0, 20.0, 40.0]),
    )
    matrix = spearman_matrix(data, relative_to_generation=False)
    assert list(matrix.columns) == ["lr", "seed", "mean_return"]  # categorical opt has no order: left out
    # ranks of the score: 1 3 2 4; d = 0 -1 1 0, sum d^2 = 2: rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8
    assert matrix.loc["lr", "mean_return"] == pytest.approx(0.8)
    assert np.isnan(matrix.loc["seed", "mean_return"])  # constant: undefined


def test_spearman_relative_to_generation_by_hand() -> None:
    # generation 1: scores 1, 2; generation 2: 11, 12; lr 2, 1, 2, 1
    data = table({"lr": np.array([2.0, 1.0, 2.0, 1.0])}, np.array([1.0, 2.0, 11.0, 12.0]), np.array([1, 1, 2, 2]))
    # relative: -0.5, 0.5, -0.5, 0.5: exactly opposite to lr, rho = -1
    assert spearman_matrix(data).loc["lr", "mean_return"] == pytest.approx(-1.0)
    # raw: score ranks 1 2 3 4, lr ranks 3.5 1.5 3.5 1.5; deviations (1, -1, 1, -1) and (-1.5, -.5, .5, 1.5):
    # rho = -2 / (2 * sqrt(5)) = -0.4472
    raw = spearman_matrix(data, relative_to_generation=False)
    assert raw.loc["lr", "mean_return"] == pytest.approx(-1 / np.sqrt(5))


# --------------------------------------------------------------------------------------------
# Importance on synthetic populations with known drivers.


def uniform(n: int, seed: int) -> tuple[np.random.Generator, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return rng, {name: rng.uniform(0.0, 1.0, n) for name in ("lr", "momentum", "clip")}


def test_monotonic_driver_comes_first_for_both_methods() -> None:
    rng, params = uniform(300, 1)
    values = 2.0 * params["lr"] + 0.5 * params["momentum"] + rng.normal(0, 0.1, 300)
    result = hyperparameter_importance(table(params, values))
    assert [p.param for p in result.params] == ["lr", "momentum", "clip"]
    assert [p.param for p in result.by_spearman()][0] == "lr"
    assert result.params[0].spearman > 0.8 and result.params[0].encoding is Encoding.NUMERIC
    assert result.test_r2 > 0.8
    assert (result.n_samples, result.n_train, result.n_test) == (300, 225, 75)


def test_non_monotonic_driver_misleads_spearman_but_not_the_forest() -> None:
    """lr has an optimum at 0.5: its variance contribution (8^2 * Var((lr-.5)^2) = 64/180 = 0.36) is far
    above momentum's (0.5^2 / 12 = 0.02), yet its rank correlation is about 0."""
    rng, params = uniform(400, 2)
    values = -8.0 * (params["lr"] - 0.5) ** 2 + 0.5 * params["momentum"] + rng.normal(0, 0.05, 400)
    result = hyperparameter_importance(table(params, values))
    assert result.params[0].param == "lr"
    assert result.by_spearman()[0].param == "momentum"
    assert abs(result.params[0].spearman) < 0.2


def test_categorical_driver_is_ordinal_encoded() -> None:
    rng, params = uniform(300, 3)
    optimizer = rng.choice(np.array(["adam", "rmsprop", "sgd"]), 300)
    effect = {"adam": 0.0, "rmsprop": 1.5, "sgd": -1.5}
    values = np.array([effect[o] for o in optimizer]) + 0.3 * params["lr"] + rng.normal(0, 0.1, 300)
    result = hyperparameter_importance(table({**params, "optimizer": optimizer}, values))
    top = result.params[0]
    assert (top.param, top.encoding, top.spearman) == ("optimizer", Encoding.ORDINAL, None)


def test_constant_param_has_no_importance_and_no_spearman() -> None:
    rng, params = uniform(100, 4)
    values = params["lr"] + rng.normal(0, 0.05, 100)
    result = hyperparameter_importance(table({**params, "seed": np.full(100, 3.0)}, values))
    seed = next(p for p in result.params if p.param == "seed")
    assert (seed.permutation_mean, seed.permutation_std, seed.spearman) == (0.0, 0.0, None)
    assert result.params[0].param == "lr"  # (a useless non-constant one may score slightly below 0)


def test_relative_score_removes_a_drifting_parameter() -> None:
    """Scores grow 5 per generation; `decay` drifts with the generation (as PBT populations drift) but
    does nothing; lr is the true driver. Raw scores credit decay, relative ones lr."""
    rng = np.random.default_rng(5)
    generations = np.repeat(np.arange(1, 21), 16)
    lr = rng.uniform(0, 1, generations.size)
    decay = generations / 20 + rng.normal(0, 0.02, generations.size)
    values = 5.0 * generations + lr + rng.normal(0, 0.1, generations.size)
    data = table({"lr": lr, "decay": decay}, values, generations)
    assert hyperparameter_importance(data).params[0].param == "lr"
    raw = hyperparameter_importance(data, relative_to_generation=False)
    assert raw.params[0].param == "decay" and raw.by_spearman()[0].param == "decay"


def test_rows_missing_a_param_are_left_out() -> None:
    rng, params = uniform(40, 6)
    params["clip"][:10] = np.nan
    result = hyperparameter_importance(table(params, params["lr"] + rng.normal(0, 0.05, 40)))
    assert result.n_samples == 30 and result.n_train + result.n_test == 30


def test_importance_refuses_what_it_cannot_rank() -> None:
    rng, params = uniform(9, 7)
    with pytest.raises(ValueError, match="table: 9 complete samples; at least 10"):
        hyperparameter_importance(table(params, rng.normal(size=9)))
    _, params = uniform(20, 8)
    with pytest.raises(ValueError, match="table: 'mean_return' does not vary"):
        hyperparameter_importance(table(params, np.full(20, 1.0)))
    with pytest.raises(ValueError, match="test_fraction"):
        hyperparameter_importance(table(params, np.arange(20.0)), test_fraction=1.0)
    # R^2 on one held-out sample is undefined, and so would be every importance
    with pytest.raises(ValueError, match="test_fraction=0.01 holds out 1 of 20 samples; between 2 and 19"):
        hyperparameter_importance(table(params, np.arange(20.0)), test_fraction=0.01)
    with pytest.raises(ValueError, match="test_fraction=0.99 holds out 20 of 20 samples"):
        hyperparameter_importance(table(params, np.arange(20.0)), test_fraction=0.99)
    with pytest.raises(ValueError, match="n_repeats=0"):
        hyperparameter_importance(table(params, np.arange(20.0)), n_repeats=0)


def test_one_agent_has_nothing_to_compare_within_a_generation() -> None:
    configs = config("x", 0, 0.0, lr=0.1)
    samples = [score("x", g, float(g), float(g)) for g in range(1, 13)]
    joined = config_scores(store_frame("samples", samples), store_frame("configs", configs))
    with pytest.raises(ValueError, match="does not vary within generations"):
        hyperparameter_importance(joined)
