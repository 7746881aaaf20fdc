"""Which hyperparameters drive the score: Spearman correlations and random-forest permutation importance.

The samples are one row per (agent, generation): the hyperparameters the agent trained with to reach
that generation, and the score (and any other metrics) it reported there. Two views, as experiment
trackers (W&B's parameter importance panel) show them side by side:

- Spearman rank correlation with the score: monotonic effects only, and its sign says which way.
- Permutation importance of a RandomForestRegressor on held-out rows: how much the forest's held-out
  R^2 drops when one hyperparameter's column is shuffled. It catches non-monotonic drivers (an
  optimum in the middle of the range, where Spearman is near 0) and interactions.

By default the score is taken relative to its generation (minus the population's mean score at that
generation): in PBT the score rises with training time whatever the config, and the population's
configs drift over the generations, so raw scores would credit whichever parameter happened to drift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor
from sklearn.inspection import permutation_importance
from sklearn.model_selection import train_test_split

from elitemon.analytics._frames import plain_copy

SCORE_METRIC = "mean_return"
SAMPLE_COLUMNS = ("ts", "kind", "source", "generation", "metric", "value")
CONFIG_COLUMNS = ("ts", "agent", "generation", "param", "value", "text")
#: Fewer rows than this cannot be split into a training and a held-out part worth scoring.
MIN_SAMPLES = 10
#: Held-out samples needed to score the forest: R^2 (and so every permutation importance) is
#: undefined on one.
MIN_HELD_OUT = 2
MIN_CORRELATION_SAMPLES = 3


class Encoding(StrEnum):
    """How a hyperparameter enters the forest."""

    NUMERIC = "numeric"  # its value
    ORDINAL = "ordinal"  # a categorical one: the index of its text in sorted order (no order implied
    #                      for Spearman, which is not computed for it; the forest splits on codes)


@dataclass(frozen=True)
class ConfigScores:
    """The importance samples: `frame` has one row per (agent, generation) with columns agent,
    generation, then each of `params` (float for numeric ones, str for `categorical` ones; NaN when the
    agent's config lacks it), then each of `metrics` (the score first). `unmatched` counts the score
    points left out because no config of their agent was written before them."""

    frame: pd.DataFrame
    params: tuple[str, ...]
    categorical: tuple[str, ...]
    metrics: tuple[str, ...]
    unmatched: int


@dataclass(frozen=True)
class ParamImportance:
    """One hyperparameter's importance for the score.

    permutation_mean/std: drop of the forest's held-out R^2 when the column is shuffled (mean and std
    over the repeats; about 0 for a parameter the forest does not use, may be slightly negative).
    spearman: rank correlation with the score over all samples; None for a categorical parameter (its
    codes have no order) or a constant one (undefined).
    """

    param: str
    encoding: Encoding
    permutation_mean: float
    permutation_std: float
    spearman: float | None


@dataclass(frozen=True)
class ImportanceResult:
    """`params` is ranked by permutation importance, highest first (ties by name). Read it with
    `test_r2`: at or below 0 the forest explains nothing on held-out rows, and neither do its ranks."""

    score_metric: str
    relative_to_generation: bool
    n_samples: int  # (agent, generation) rows used: complete configs and a score
    n_train: int
    n_test: int
    test_r2: float
    params: tuple[ParamImportance, ...]

    def by_spearman(self) -> tuple[ParamImportance, ...]:
        """The same parameters ranked by |Spearman|, highest first; those without one come last."""
        return tuple(sorted(self.params, key=lambda p: (p.spearman is None, -abs(p.spearman or 0.0), p.param)))


def config_scores(
    samples: pd.DataFrame,
    configs: pd.DataFrame,
    *,
    score_metric: str = SCORE_METRIC,
    metrics: Sequence[str] = (),
) -> ConfigScores:
    """Join each agent's score at every generation to the config it trained with to get there.

    `metrics` are further metric names to join (a sequence: one name is `metrics=("name",)`).

    The score at (agent, generation) is the agent's latest report of `score_metric` at that generation
    (a restored agent reports some generations twice); `metrics` are joined the same way. A param is
    numeric when every one of its config rows has a value, else categorical (by its text).

    Which config produced a result: "a config row applies from its generation on", made exact for PBT.
    A result was produced by the agent's latest config written before it, except that the first result
    written after a config row, when it is at that row's generation, is the result that triggered the
    row (an exploit's new config is written just before the result that triggered the exploit) and
    keeps the config before. Ordering by write time is what places the results a restored agent
    reports again (generations source_generation + 1 ..) after its new config; the Tune callback
    writes both from one process, so one clock, and writes an exploit's new config at the generation
    of the result that triggered it, just before that result. One writer does not follow this yet:
    `elitemon.report(..., config=)` writes the config after the result it came with, so a custom
    loop's config counts from its next result on.
    """
    if isinstance(metrics, str):
        raise ValueError(f"metrics must be a sequence of metric names, not one string: use metrics=({metrics!r},)")
    metrics = (score_metric, *(m for m in metrics if m != score_metric))
    samples = plain_copy(samples, "samples", SAMPLE_COLUMNS)
    configs = plain_copy(configs, "configs", CONFIG_COLUMNS)
    categorical = tuple(sorted(configs.loc[configs["value"].isna(), "param"].unique()))
    params = tuple(sorted(configs["param"].unique()))
    clash = sorted(set(params) & set(metrics))
    if clash:
        raise ValueError(f"metrics: {clash} are also hyperparameter names")
    if "agent" in params or "generation" in params:
        raise ValueError("configs: a hyperparameter may not be named 'agent' or 'generation'")
    rows = samples[(samples["kind"] == "agent") & samples["metric"].isin(metrics)].dropna(
        subset=["generation", "value"]
    )
    rows = rows.rename(columns={"source": "agent"}).sort_values("ts", kind="stable")
    scores = rows[rows["metric"] == score_metric][["agent", "generation", "ts", "value"]]
    states = _config_states(configs, categorical)
    scored = _attach_configs(scores, states)
    unmatched = int(scored["write_ts"].isna().sum())
    scored = scored.dropna(subset=["write_ts"]).drop_duplicates(["agent", "generation"], keep="last")
    frame = scored.merge(states, on=["agent", "write_ts"], how="left")
    latest = rows.drop_duplicates(["agent", "generation", "metric"], keep="last")
    values = latest.pivot(index=["agent", "generation"], columns="metric", values="value")
    frame = frame[["agent", "generation", *params]].merge(
        values.reindex(columns=list(metrics)).reset_index(), on=["agent", "generation"], how="left"
    )
    frame = frame.sort_values(["agent", "generation"], kind="stable").reset_index(drop=True)
    frame["generation"] = frame["generation"].astype("int64")
    return ConfigScores(frame, params, categorical, metrics, unmatched)


def spearman_matrix(table: ConfigScores, *, relative_to_generation: bool = True) -> pd.DataFrame:
    """Spearman rank correlations between the numeric hyperparameters and the metrics, pairwise over
    the rows where both are known (NaN for a constant column). With `relative_to_generation`, each
    metric first has its generation's mean subtracted (see the module docstring); parameters are used
    as they are. Categorical parameters are left out: their categories have no order."""
    columns = [p for p in table.params if p not in table.categorical] + list(table.metrics)
    if len(table.frame) < MIN_CORRELATION_SAMPLES:
        raise ValueError(f"table: {len(table.frame)} samples; a correlation needs at least {MIN_CORRELATION_SAMPLES}")
    frame = _relative(table, table.metrics) if relative_to_generation else table.frame
    return frame[columns].astype(float).corr(method="spearman")


def hyperparameter_importance(
    table: ConfigScores,
    *,
    relative_to_generation: bool = True,
    test_fraction: float = 0.25,
    n_estimators: int = 100,
    n_repeats: int = 10,
    seed: int = 0,
) -> ImportanceResult:
    """Rank the hyperparameters by how much the score depends on them (see ImportanceResult).

    Rows lacking a parameter value are left out (n_samples counts the rows used). They are split at
    random (`test_fraction` held out, rounded up as scikit-learn's train_test_split does; `seed`); a
    RandomForestRegressor(n_estimators, n_jobs=1) is fitted on the rest, and sklearn's
    permutation_importance shuffles each column of the held-out rows `n_repeats` times and reports
    the mean and std drop of R^2. Categorical parameters are ordinal-encoded (code = index in the
    sorted list of their texts): a forest splits codes into any groups in a few splits, and
    permuting one column keeps one importance per parameter (one-hot would spread it over several
    columns). Raises ValueError when the score does not vary, there are fewer than MIN_SAMPLES
    complete rows, or `test_fraction` holds out fewer than MIN_HELD_OUT of them or all of them.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, but got {test_fraction=}")
    if n_estimators < 1 or n_repeats < 1:
        raise ValueError(f"n_estimators and n_repeats must be >= 1, but got {n_estimators=}, {n_repeats=}")
    if not table.params:
        raise ValueError("table: no hyperparameters (are there configs rows?)")
    score = table.metrics[0]
    frame = _relative(table, (score,)) if relative_to_generation else table.frame
    frame = frame.dropna(subset=[*table.params, score])
    if len(frame) < MIN_SAMPLES:
        raise ValueError(f"table: {len(frame)} complete samples; at least {MIN_SAMPLES} are needed")
    held_out = math.ceil(test_fraction * len(frame))
    if not MIN_HELD_OUT <= held_out < len(frame):
        raise ValueError(
            f"test_fraction={test_fraction} holds out {held_out} of {len(frame)} samples; "
            f"between {MIN_HELD_OUT} and {len(frame) - 1} are needed"
        )
    target = frame[score].to_numpy(dtype=float)
    if np.ptp(target) == 0.0:
        raise ValueError(f"table: {score!r} does not vary{' within generations' * relative_to_generation}")
    features = np.column_stack([_encoded(frame[p], p in table.categorical) for p in table.params])
    x_train, x_test, y_train, y_test = train_test_split(
        features, target, test_size=test_fraction, random_state=seed, shuffle=True
    )
    forest = RandomForestRegressor(n_estimators=n_estimators, random_state=seed, n_jobs=1).fit(x_train, y_train)
    permuted = permutation_importance(forest, x_test, y_test, n_repeats=n_repeats, random_state=seed, n_jobs=1)
    ranked = []
    for column, param in enumerate(table.params):
        categorical = param in table.categorical
        ranked.append(
            ParamImportance(
                param=param,
                encoding=Encoding.ORDINAL if categorical else Encoding.NUMERIC,
                permutation_mean=float(permuted.importances_mean[column]),
                permutation_std=float(permuted.importances_std[column]),
                spearman=None if categorical else _spearman(features[:, column], target),
            )
        )
    ranked.sort(key=lambda p: (-p.permutation_mean, p.param))
    return ImportanceResult(
        score_metric=score,
        relative_to_generation=relative_to_generation,
        n_samples=len(frame),
        n_train=len(y_train),
        n_test=len(y_test),
        test_r2=float(forest.score(x_test, y_test)),
        params=tuple(ranked),
    )


# --------------------------------------------------------------------------------------------


def _config_states(configs: pd.DataFrame, categorical: tuple[str, ...]) -> pd.DataFrame:
    """Each agent's full config after each write: one row per (agent, write_ts) with write_generation
    and one column per param holding its latest value (text for categorical params) so far."""
    configs = configs.sort_values("ts", kind="stable")
    configs = configs.assign(setting=configs["value"].astype(object))
    is_categorical = configs["param"].isin(categorical)
    configs.loc[is_categorical, "setting"] = configs.loc[is_categorical, "text"]
    wide = configs.pivot_table(index=["agent", "ts"], columns="param", values="setting", aggfunc="last", sort=True)
    wide = wide.groupby(level="agent").ffill()
    generation = configs.groupby(["agent", "ts"])["generation"].max()
    states = wide.assign(write_generation=generation).reset_index().rename(columns={"ts": "write_ts"})
    states["agent"] = states["agent"].astype(object)  # as in the samples, so that they can be joined
    for param in wide.columns:
        if param not in categorical:
            states[param] = states[param].astype(float)
    return states


def _attach_configs(scores: pd.DataFrame, states: pd.DataFrame) -> pd.DataFrame:
    """`scores` (sorted by ts) plus `write_ts`, the config write each score was produced with (NaT when
    none): the agent's latest write at or before the score, except the trigger rule (config_scores)."""
    writes = states[["agent", "write_ts", "write_generation"]].sort_values("write_ts", kind="stable")
    scored = pd.merge_asof(scores, writes, left_on="ts", right_on="write_ts", by="agent")
    first_after = scored.groupby(["agent", "write_ts"])["ts"].transform("min") == scored["ts"]
    trigger = first_after & (scored["generation"] == scored["write_generation"])
    if trigger.any():
        triggers = scored.loc[trigger, ["agent", "write_ts"]].rename(columns={"write_ts": "at"}).reset_index()
        earlier = pd.merge_asof(
            triggers.sort_values("at", kind="stable"),
            writes.rename(columns={"write_ts": "earlier_ts"}).drop(columns="write_generation"),
            left_on="at",
            right_on="earlier_ts",
            by="agent",
            allow_exact_matches=False,
        ).set_index("index")
        scored.loc[trigger, "write_ts"] = earlier["earlier_ts"]
    return scored.drop(columns="write_generation")


def _relative(table: ConfigScores, columns: Sequence[str]) -> pd.DataFrame:
    """table.frame with each of `columns` minus its mean over the rows of the same generation."""
    frame = table.frame.copy()
    for column in columns:
        frame[column] = frame[column] - frame.groupby("generation")[column].transform("mean")
    return frame


def _encoded(column: pd.Series, categorical: bool) -> np.ndarray:
    if not categorical:
        return column.to_numpy(dtype=float)
    categories = sorted(column.unique())
    return column.map({text: code for code, text in enumerate(categories)}).to_numpy(dtype=float)


def _spearman(values: np.ndarray, target: np.ndarray) -> float | None:
    """Spearman's rho (Pearson of average ranks); None when either side is constant."""
    if np.ptp(values) == 0.0:
        return None
    rho = pd.Series(values).corr(pd.Series(target), method="spearman")
    return None if np.isnan(rho) else float(rho)
