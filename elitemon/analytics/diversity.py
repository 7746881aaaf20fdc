"""How diverse the population's hyperparameters are, from the `configs` table, and when it collapses.

The seed design used the coefficient of variation (std / mean), which is meaningless for a parameter
centred at zero (the mean is near 0), changes sign with negative parameters, and for a log-distributed
one (a learning rate from 1e-4 to 1) is dominated by the few largest values. Instead each parameter
gets an index in [0, 1] on a scale that suits it:

- numeric, linear scale: values mapped to [0, 1] by the range [low, high], u = (v - low)/(high - low);
- numeric, log scale: the same on ln v, u = (ln v - ln low)/(ln high - ln low), so that 1e-4..1e-3
  counts as much spread as 0.1..1;
- categorical: the Shannon entropy of the category shares, H = -Σ p·ln p, divided by ln K for K
  possible categories.

For numeric parameters the index is min(1, √12·σ(u)), σ the population std (ddof=0: the agents are
the whole population, not a sample of it). A uniform spread over the whole range has σ = 1/√12, so
1 means "at least as spread as a uniform draw from the range" (two clusters at the bounds are capped at
1), the same meaning 1 has for categorical entropy (every category equally used), which makes the
two kinds comparable and their mean meaningful. 0 means every agent has the same value.

The overall index is the plain mean of the parameters' indices. Ratings: HIGH at or above 0.5 (as
spread as a uniform draw over half the range; two of four categories evenly used gives ln2/ln4 =
0.5), MEDIUM at or above 0.2 (uniform over a fifth of the range), LOW below.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from elitemon.analytics._frames import column_as, is_number, require_columns, require_datetime_ts

CONFIG_COLUMNS = ("ts", "agent", "generation", "param", "value", "text")
HIGH_DIVERSITY = 0.5
MEDIUM_DIVERSITY = 0.2
#: Inference: an all-positive numeric parameter whose largest value is more than this many times its
#: smallest spans orders of magnitude and is read on the log scale.
LOG_SCALE_RATIO = 100.0
#: Collapse defaults: the index fell into LOW, or lost more than half of its peak.
DEFAULT_COLLAPSE_BELOW = MEDIUM_DIVERSITY
DEFAULT_MAX_DROP_FROM_PEAK = 0.5
PARAM_COLUMN_PREFIX = "param:"


class ParamScale(enum.StrEnum):
    """How a parameter's spread is measured."""

    LOG = "log"
    LINEAR = "linear"
    CATEGORICAL = "categorical"


class DiversityRating(enum.StrEnum):
    """A diversity index in words; the thresholds are in `rate_diversity`."""

    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"


@dataclass(frozen=True, kw_only=True)
class ParamSpec:
    """A parameter's scale and range. Numeric bounds left None are taken from the values observed;
    categories left None are the distinct values observed. Values outside given bounds are clipped to
    them. low == high (an observed range of a parameter that never changed) gives index 0."""

    kind: ParamScale
    low: float | None = None
    high: float | None = None
    categories: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", ParamScale(self.kind))
        except ValueError:
            raise ValueError(f"kind must be one of {[k.value for k in ParamScale]}, but got {self.kind=}.") from None
        if self.kind is ParamScale.CATEGORICAL:
            self._check_categorical()
        else:
            self._check_numeric()

    def _check_categorical(self) -> None:
        if self.low is not None or self.high is not None:
            raise ValueError(f"a categorical parameter has no low or high, but got {self.low=} and {self.high=}.")
        if self.categories is None:
            return
        categories = tuple(str(c) for c in self.categories)
        if not categories or len(set(categories)) != len(categories):
            raise ValueError(f"categories must be non-empty and distinct, but got {self.categories=}.")
        object.__setattr__(self, "categories", categories)

    def _check_numeric(self) -> None:
        if self.categories is not None:
            raise ValueError(f"a {self.kind} parameter has no categories, but got {self.categories=}.")
        for name in ("low", "high"):
            bound = getattr(self, name)
            if bound is not None and (not is_number(bound) or not math.isfinite(bound)):
                raise ValueError(f"{name} must be a finite number, but got {bound!r}.")
            if bound is not None and self.kind is ParamScale.LOG and bound <= 0:
                raise ValueError(f"a log-scale parameter needs a positive {name}, but got {bound!r}.")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"low must not exceed high, but got {self.low=} and {self.high=}.")


@dataclass(frozen=True)
class ParamDiversity:
    """One parameter's diversity across the agents that have it."""

    spec: ParamSpec  # as resolved: bounds and categories filled in
    agents: int  # agents with a value for the parameter
    index: float
    rating: DiversityRating


@dataclass(frozen=True)
class DiversityReport:
    """Diversity of the population's configs at `generation` (None: each agent's current config).
    `overall` and `rating` are None when no agent has a config yet."""

    generation: int | None
    agents: int
    parameters: Mapping[str, ParamDiversity]
    overall: float | None
    rating: DiversityRating | None


def rate_diversity(index: float) -> DiversityRating:
    """HIGH at or above HIGH_DIVERSITY (0.5), MEDIUM at or above MEDIUM_DIVERSITY (0.2), else LOW."""
    if not 0 <= index <= 1:
        raise ValueError(f"index must be in [0, 1], but got {index=}.")
    if index >= HIGH_DIVERSITY:
        return DiversityRating.HIGH
    return DiversityRating.MEDIUM if index >= MEDIUM_DIVERSITY else DiversityRating.LOW


def parameter_index(values: npt.ArrayLike, spec: ParamSpec) -> float:
    """The diversity index in [0, 1] of one parameter's values across agents (see the module docstring).

    Bounds or categories missing from `spec` come from `values` themselves, which makes any two
    distinct values look fully diverse: give them, or let `diversity_index` infer them from the whole
    history. Raises ValueError for no values, non-finite numeric values, non-positive values on the log
    scale, or values outside the given categories.
    """
    array = np.asarray(values, dtype=object if spec.kind is ParamScale.CATEGORICAL else np.float64).ravel()
    if array.size == 0:
        raise ValueError("values must not be empty.")
    if spec.kind is ParamScale.CATEGORICAL:
        return _entropy_index(array.astype(str), spec.categories)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"values must be finite numbers for a {spec.kind} parameter, but got {array.tolist()}.")
    if spec.kind is ParamScale.LOG:
        if np.any(array <= 0):
            raise ValueError(f"values must be positive on the log scale, but got {array.tolist()}.")
        array = np.log(array)
        low, high = (None if b is None else math.log(b) for b in (spec.low, spec.high))
    else:
        low, high = spec.low, spec.high
    low = float(array.min()) if low is None else low
    high = float(array.max()) if high is None else high
    if high <= low:
        return 0.0
    unit = np.clip((array - low) / (high - low), 0.0, 1.0)
    return float(min(1.0, math.sqrt(12.0) * unit.std(ddof=0)))


def _entropy_index(labels: np.ndarray, categories: tuple[str, ...] | None) -> float:
    observed, counts = np.unique(labels, return_counts=True)
    if categories is not None:
        unknown = sorted(str(label) for label in set(observed) - set(categories))
        if unknown:
            raise ValueError(f"values {unknown} are not among the categories {list(categories)}.")
    possible = len(categories) if categories is not None else len(observed)
    if possible < 2:
        return 0.0
    shares = counts / counts.sum()
    return float(min(1.0, -(shares * np.log(shares)).sum() / math.log(possible)))


def infer_specs(
    configs: pd.DataFrame, *, specs: Mapping[str, ParamSpec] | None = None, params: Iterable[str] | None = None
) -> dict[str, ParamSpec]:
    """Every selected parameter's spec, resolved over *all* rows of `configs` (every agent and generation).

    The caller's `specs` come first, with missing bounds or categories filled in from the rows. The
    rest are inferred: a parameter with a non-numeric value (null `value`) is categorical; an
    all-positive numeric one whose max/min exceeds LOG_SCALE_RATIO (100) is log-scale; any other
    numeric one is linear. Bounds are the observed min and max, and categories the observed `text`s,
    over the whole history, so that a collapse shows against the range the search once covered.
    `params` selects parameters (default: all); leave out fixed settings that are not searched.
    """
    rows = _config_rows(configs)
    return _resolve_specs(rows, specs or {}, params)


def diversity_index(
    configs: pd.DataFrame,
    *,
    generation: int | None = None,
    specs: Mapping[str, ParamSpec] | None = None,
    params: Iterable[str] | None = None,
) -> DiversityReport:
    """Per-parameter and overall diversity of each agent's config at `generation` (default: current).

    An agent's config at generation g is, for each parameter, its latest row (by ts) with generation
    <= g (a row without a generation counts as 0): configs rows say what an agent trains with from
    their generation on. Agents with no row at or before g are not in the population yet. Specs are
    resolved over all of `configs` (see infer_specs), so pass the whole history, not a snapshot.
    """
    rows = _config_rows(configs)
    resolved = _resolve_specs(rows, specs or {}, params)
    return _report(_snapshot(rows, generation), resolved, generation)


def diversity_over_generations(
    configs: pd.DataFrame,
    *,
    generations: Iterable[int] | None = None,
    specs: Mapping[str, ParamSpec] | None = None,
    params: Iterable[str] | None = None,
    collapse_below: float = DEFAULT_COLLAPSE_BELOW,
    max_drop_from_peak: float = DEFAULT_MAX_DROP_FROM_PEAK,
) -> pd.DataFrame:
    """Diversity at each generation, with collapse detection.

    `generations` defaults to the distinct generations of `configs`: the only ones at which a config
    changes. One row per generation (index `generation`): `overall`, `rating`, `peak` (the highest
    overall so far), `drop_from_peak` = (peak - overall)/peak (0 when peak is 0), `collapsed` = overall
    < `collapse_below` (default 0.2, the LOW rating) or drop_from_peak > `max_drop_from_peak` (default
    0.5: half of the diversity once there is gone), then one column "param:<name>" per parameter.
    Generations before any agent has a config have NaN figures and are not collapsed.
    """
    for name, bound in (("collapse_below", collapse_below), ("max_drop_from_peak", max_drop_from_peak)):
        if not 0 <= bound <= 1:
            raise ValueError(f"{name} must be in [0, 1], but got {bound!r}.")
    rows = _config_rows(configs)
    resolved = _resolve_specs(rows, specs or {}, params)
    chosen = sorted(set(rows["generation"])) if generations is None else sorted({_generation(g) for g in generations})
    reports = [_report(_snapshot(rows, g), resolved, g) for g in chosen]
    index = pd.Index(chosen, dtype=np.int64, name="generation")
    frame = pd.DataFrame({"overall": [np.nan if r.overall is None else r.overall for r in reports]}, index=index)
    frame["rating"] = pd.Series([r.rating for r in reports], index=index, dtype=object)  # enums, None before any
    frame["peak"] = frame["overall"].cummax()
    frame["drop_from_peak"] = ((frame["peak"] - frame["overall"]) / frame["peak"]).where(frame["peak"] > 0, 0.0)
    frame.loc[frame["overall"].isna(), "drop_from_peak"] = np.nan
    frame["collapsed"] = (frame["overall"] < collapse_below) | (frame["drop_from_peak"] > max_drop_from_peak)
    for param in resolved:
        frame[PARAM_COLUMN_PREFIX + param] = [
            r.parameters[param].index if param in r.parameters else np.nan for r in reports
        ]
    return frame


def _report(snapshot: pd.DataFrame, specs: Mapping[str, ParamSpec], generation: int | None) -> DiversityReport:
    parameters: dict[str, ParamDiversity] = {}
    for param, rows in snapshot.groupby("param", sort=True):
        spec = specs.get(param)
        if spec is None:
            continue
        values = rows["label"] if spec.kind is ParamScale.CATEGORICAL else rows["value"]
        try:
            index = parameter_index(values.to_numpy(), spec)
        except ValueError as error:
            raise ValueError(f"configs: parameter {param!r}: {error}") from None
        parameters[param] = ParamDiversity(spec=spec, agents=len(rows), index=index, rating=rate_diversity(index))
    overall = float(np.mean([p.index for p in parameters.values()])) if parameters else None
    agents = snapshot.loc[snapshot["param"].isin(list(parameters)), "agent"].nunique()
    return DiversityReport(
        generation=generation,
        agents=int(agents),
        parameters=parameters,
        overall=overall,
        rating=None if overall is None else rate_diversity(overall),
    )


def _snapshot(rows: pd.DataFrame, generation: int | None) -> pd.DataFrame:
    """Each agent's latest row per parameter, among rows at or before `generation` (all when None)."""
    if generation is not None:
        rows = rows[rows["generation"] <= _generation(generation)]
    return rows.drop_duplicates(["agent", "param"], keep="last")


def _resolve_specs(
    rows: pd.DataFrame, specs: Mapping[str, ParamSpec], params: Iterable[str] | None
) -> dict[str, ParamSpec]:
    known = sorted(set(rows["param"]))
    selected = known if params is None else list(dict.fromkeys(params))
    if known:
        for argument, names in (("params", selected), ("specs", list(specs))):
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ValueError(f"{argument}: no configs rows for parameters {unknown} (parameters: {known}).")
    for param, spec in specs.items():
        if not isinstance(spec, ParamSpec):
            raise ValueError(f"specs[{param!r}] must be a ParamSpec, but got {type(spec).__name__}.")
    by_param = dict(tuple(rows.groupby("param", sort=True)))
    return {p: _resolve(p, by_param[p], specs.get(p)) for p in selected if p in by_param}


def _resolve(param: str, rows: pd.DataFrame, spec: ParamSpec | None) -> ParamSpec:
    values = rows["value"].to_numpy(dtype=np.float64)
    numeric = bool(np.all(np.isfinite(values)))
    if spec is None:
        if not numeric:
            kind = ParamScale.CATEGORICAL
        elif values.min() > 0 and values.max() / values.min() > LOG_SCALE_RATIO:
            kind = ParamScale.LOG
        else:
            kind = ParamScale.LINEAR
        spec = ParamSpec(kind=kind)
    if spec.kind is ParamScale.CATEGORICAL:
        categories = spec.categories or tuple(sorted(set(rows["label"])))
        return ParamSpec(kind=spec.kind, categories=categories)
    if not numeric:
        example = rows.loc[~np.isfinite(values), "label"].iloc[0]
        raise ValueError(
            f"configs: parameter {param!r} is declared {spec.kind} but has a non-numeric value {example!r}."
        )
    low = float(values.min()) if spec.low is None else spec.low
    high = float(values.max()) if spec.high is None else spec.high
    try:
        return ParamSpec(kind=spec.kind, low=low, high=high)
    except ValueError as error:
        raise ValueError(f"configs: parameter {param!r}: {error}") from None


def _config_rows(configs: pd.DataFrame) -> pd.DataFrame:
    """agent, param (str), generation (int, a missing one as 0), value (float, NaN if not numeric), label
    (the text form) and ts, in ts order (stable: of two rows with the same ts the later one wins). A
    row with neither a value nor a text sets nothing and is left out."""
    require_columns(configs, "configs", CONFIG_COLUMNS)
    require_datetime_ts(configs, "configs")
    configs = configs[configs["value"].notna() | configs["text"].notna()]
    values = column_as(configs, "configs", "value", np.float64, "numbers")
    generations = column_as(configs, "configs", "generation", "Int64", "whole numbers").fillna(0)
    rows = pd.DataFrame(
        {
            "ts": configs["ts"],
            "agent": configs["agent"].astype(str),
            "param": configs["param"].astype(str),
            "generation": generations.astype(np.int64),
            "value": values,
            "label": configs["text"].astype(object).where(configs["text"].notna(), values.astype(str)).astype(str),
        }
    )
    return rows.sort_values("ts", kind="stable").reset_index(drop=True)


def _generation(generation: int) -> int:
    if isinstance(generation, bool) or not isinstance(generation, (int, np.integer)) or generation < 0:
        raise ValueError(f"generation must be a non-negative integer, but got {generation!r}.")
    return int(generation)
