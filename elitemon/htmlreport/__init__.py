"""`elitemon report`: one self-contained HTML report of a PBT run, readable offline.

    from elitemon.htmlreport import build_report, read_data_dir
    run = read_data_dir("~/.elitemon/data")
    Path("report.html").write_text(build_report(run.samples, run.events, run.configs, target=8.0))

Three parts, one job each: `_load` reads the tables (a running aggregator, or a data directory read
in place without taking the store's lock), `_sections` turns them into small typed tuples with the
analytics functions (pure, compared with hand-computed values in the tests), `_render` draws the
tuples as HTML with inline CSS and inline SVG (matplotlib), with no script and no external resource.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from elitemon.htmlreport._load import RunTables, load_run, query_aggregator, read_data_dir
from elitemon.htmlreport._render import SECTIONS, render_report
from elitemon.htmlreport._sections import ReportInfo, choose_score_metric, get_report_info

__all__ = [
    "SECTIONS",
    "ReportInfo",
    "RunTables",
    "build_report",
    "choose_score_metric",
    "get_report_info",
    "load_run",
    "query_aggregator",
    "read_data_dir",
    "render_report",
]


def build_report(
    samples: pd.DataFrame,
    events: pd.DataFrame,
    configs: pd.DataFrame,
    *,
    score_metric: str | None = None,
    target: float | None = None,
    throughput_metric: str | None = None,
    params: Sequence[str] | None = None,
    title: str = "PBT run report",
    source: str = "",
) -> str:
    """The report as one HTML string. The tables are pandas frames with the store's columns (as
    `RunTables` or `Client.samples(as_pandas=True)` give them). `score_metric` defaults to
    `mean_return` when agents report it (else the one plausible agent metric; a ValueError lists the
    candidates when several are); `target` adds target achievement and a forecast to the target;
    `throughput_metric` (default `episodes_per_s`, else a `*_per_s` metric) is the anomaly stream;
    `params` (default: the parameters PBT's explore step changed) selects the hyperparameters for
    diversity and importance. See `_sections.get_report_info`."""
    info = get_report_info(
        samples,
        events,
        configs,
        score_metric=score_metric,
        target=target,
        throughput_metric=throughput_metric,
        params=params,
        title=title,
        source=source,
    )
    return render_report(info)
