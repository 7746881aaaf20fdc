"""Draws a ReportInfo as one self-contained HTML page: inline CSS, inline SVG plots, no script.

Nothing here computes analytics: every figure and table comes from the info tuples of `_sections`.
Plots are matplotlib `Figure`s rendered by the SVG backend into a string (no pyplot, so no global
figure registry and no backend switch; only `svg.fonttype` and `svg.hashsalt` are set, inside an
rc_context, so that text stays text (smaller, searchable) and ids are the same on every run; rcParams
are process-wide, so two threads should not render at once).
Each SVG is embedded without its XML prolog, DOCTYPE and namespace URLs (an HTML parser puts inline
`<svg>` in the SVG namespace by itself), and its ids get a per-plot prefix, since several plots share
one document. Every text from the data is escaped: html.escape in the page, and for matplotlib,
which XML-escapes what it writes, `$` (its mathtext switch) and a leading `_` (which hides a legend
entry) are neutralised first.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Iterable, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from elitemon import __version__
from elitemon.analytics.best_forecast import RECENT_GENERATIONS
from elitemon.htmlreport._sections import (
    AnomalyInfo,
    AnomalyStream,
    DiversityInfo,
    HeaderInfo,
    ImportanceInfo,
    LineageInfo,
    ReportInfo,
    ScoreInfo,
)

#: Section ids and headings, in page order.
SECTIONS = (
    ("score", "Score over generations"),
    ("diversity", "Hyperparameter diversity"),
    ("lineage", "Lineage"),
    ("importance", "Hyperparameter importance"),
    ("anomalies", "Throughput anomalies"),
)
_RC = {"svg.fonttype": "none", "svg.hashsalt": "elitemon"}
_WIDTH = 9.0  # inches
_BEST, _MEAN, _BAND, _FORECAST, _TARGET, _ALERT = "#1f5fa8", "#4a9a5b", "#9cc3e6", "#d9822b", "#7b3fa0", "#c62828"
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d232a;margin:0;background:#f5f6f8}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:0 0 10px;border-bottom:1px solid #dde1e6;padding-bottom:4px}
section,header{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:16px 20px;margin:0 0 18px}
.source{color:#5b6570;margin:0 0 12px}
dl.figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:10px;margin:0}
dl.figures div{background:#f5f6f8;border-radius:4px;padding:8px 10px}
dt{color:#5b6570;font-size:12px}dd{margin:0;font-size:17px;font-weight:600;overflow-wrap:anywhere}
svg{max-width:100%;height:auto;display:block;margin:6px 0}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{padding:3px 10px;text-align:right;border-bottom:1px solid #eceef1}
th:first-child,td:first-child{text-align:left}th{background:#f5f6f8}
.note{color:#8a5a00;background:#fff7e0;border-radius:4px;padding:6px 10px}
details summary{cursor:pointer;color:#1f5fa8}footer{color:#5b6570;font-size:12px;text-align:center}
"""


def render_report(info: ReportInfo) -> str:
    """The whole page."""
    sections = {
        "score": _score_section(info.score),
        "diversity": _diversity_section(info.diversity),
        "lineage": _lineage_section(info.lineage),
        "importance": _importance_section(info.importance),
        "anomalies": _anomaly_section(info.anomalies),
    }
    body = "\n".join(f'<section id="{key}"><h2>{_e(title)}</h2>\n{sections[key]}</section>' for key, title in SECTIONS)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(info.header.title)}</title><style>{_CSS}</style></head>\n<body><main>\n"
        f"{_header(info.header)}\n{body}\n"
        f"<footer>elitemon {_e(__version__)}: a self-contained report; it loads nothing from anywhere.</footer>"
        "\n</main></body></html>\n"
    )


# --------------------------------------------------------------------------------------------
# Sections


def _header(info: HeaderInfo) -> str:
    figures = [
        ("agents", str(info.agents)),
        ("generations", _generations(info)),
        (f"best agent ({info.score_metric}, latest)", "—" if info.best_agent is None else info.best_agent),
        ("best score", _num(info.best_score)),
        ("exploits", str(info.exploits)),
        ("migrations completed", _percent(info.migration_success_rate)),
        ("time span", _span(info)),
    ]
    if info.target is not None:
        reached = info.target.first_generation_reached
        figures += [
            (
                f"target {info.score_metric} ≥ {_num(info.target.threshold)}",
                f"{info.target.agents_meeting}/{info.target.agents} agents",
            ),
            ("first reached", "not yet" if reached is None else f"generation {reached}"),
        ]
    cells = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in figures)
    source = f'<p class="source">{_e(info.source)}</p>' if info.source else ""
    return f'<header><h1>{_e(info.title)}</h1>{source}<dl class="figures">{cells}</dl></header>'


def _score_section(info: ScoreInfo) -> str:
    if not info.generations:
        return _note(f"no agent reported {info.metric} with a generation")
    parts = [_svg(_score_figure(info), "score")]
    forecast = info.forecast
    if forecast is None:
        parts.append(_note(f"no forecast: {info.note}"))
    else:
        parts.append(f"<p>{_e(_forecast_sentence(info))}</p>")
    if info.agents_forecast is None:
        parts.append(_note(f"no forecast of the agents: {info.agents_note}"))
    else:
        parts.append(f"<p>{_e(_agents_sentence(info))}</p>")
    rows = zip(info.generations, info.agents, info.best, info.mean, info.p10, info.p90, strict=True)
    table = _table(("generation", "agents", "best", "mean", "p10", "p90"), ([g, a, *map(_num, r)] for g, a, *r in rows))
    parts.append(f"<details><summary>per generation</summary>{table}</details>")
    return "\n".join(parts)


def _forecast_sentence(info: ScoreInfo) -> str:
    f = info.forecast
    assert f is not None
    last = f.generations[0]
    if f.remaining == 0 and f.goal == "target":
        reached = f"a reported best {info.metric} has already reached the target {_num(f.level)}"
        return f"Forecast from generation {last}: {reached}."
    if f.remaining == 0:
        return f"Forecast from generation {last}: the best {info.metric} has stopped improving (near {_num(f.level)})."
    if f.goal == "target":
        what = f"a reported best {info.metric} first reaches the target {_num(f.level)}"
    else:
        what = f"the best {info.metric} stops improving" + ("" if f.level is None else f" (near {_num(f.level)})")
    if f.remaining is None:
        when = f"not within the forecast range ({f.generations[-1] - last} generations ahead)"
    else:
        low = "?" if f.remaining_low is None else f.remaining_low
        high = "beyond range" if f.remaining_high is None else f.remaining_high
        generations = "generation" if f.remaining == 1 else "generations"
        when = f"in {f.remaining} {generations} (80% interval {low} to {high}), at generation {last + f.remaining}"
    band = "The shaded band is the 80% interval of the best score's trend"
    if f.recent_max is not None:
        band += (
            f", which starts from the highest best of the last {RECENT_GENERATIONS} generations, "
            f"{_num(f.recent_max)}, where the best has recently been"
        )
    if f.goal == "target":
        band += "; single scores scatter around it, so one may reach the target before the band does"
    return f"Forecast from generation {last}: {what} {when}. {band}."


def _agents_sentence(info: ScoreInfo) -> str:
    f = info.agents_forecast
    assert f is not None
    end = f.generations[-1]
    interval = f"80% interval {_num(f.low[-1])} to {_num(f.high[-1])}"
    rate = f"{100 * f.exploit_rate:.1f} per 100 agent-generations so far"
    sentence = (
        f"The mean {info.metric} is expected at {_num(f.expected[-1])} by generation {end} ({interval}), "
        f"with exploits ({rate}) drawing the agents towards it."
    )
    if f.share_at_target is not None:
        share = f"{f.share_at_target:.0%}"
        sentence += f" Expected share of agents at or above the target {_num(info.target)} then: {share}."
    return sentence


def _diversity_section(info: DiversityInfo) -> str:
    if info.note is not None:
        return _note(info.note)
    parts = [_svg(_diversity_figure(info), "diversity")]
    if info.collapsed:
        parts.append(_note(f"diversity collapsed at generation(s) {', '.join(map(str, info.collapsed))}"))
    names = [p.name for p in info.parameters]
    header = ("generation", "overall", *names)
    rows = (
        [g, _num(o), *(_num(p.values[i]) for p in info.parameters)]
        for i, (g, o) in enumerate(zip(info.generations, info.overall, strict=True))
    )
    parts.append(f"<details><summary>per generation</summary>{_table(header, rows)}</details>")
    return "\n".join(parts)


def _lineage_section(info: LineageInfo) -> str:
    if not info.agents:
        return _note("no agents")
    table = _table(
        ("agent", "exploited", "copied", "current life descends from", "copies in its chain"),
        ([r.agent, r.exploited, r.copied, r.founder, r.copies_in_chain] for r in info.rows),
    )
    caption = (
        "Each row is an agent, each bar one of its lives (its training between two exploits), coloured by "
        "the agent its weights originally come from; an arrow is an exploit, from the copied agent to the "
        "one it replaced, at the generation of the copy."
    )
    return f"{_svg(_lineage_figure(info), 'lineage')}\n<p>{_e(caption)}</p>\n{table}"


def _importance_section(info: ImportanceInfo) -> str:
    if info.note is not None:
        return _note(f"{info.note} ({info.n_samples} samples of {info.score_metric})")
    summary = (
        f"{info.n_samples} samples (agent × generation, score relative to its generation's mean); the forest's "
        f"held-out R² is {_num(info.test_r2)} on {info.n_test} samples"
        + (": at or below 0 it explains nothing, and neither do its ranks." if (info.test_r2 or 0) <= 0 else ".")
    )
    table = _table(
        ("parameter", "permutation importance", "± std", "Spearman ρ"),
        ([r.param, _num(r.permutation_mean), _num(r.permutation_std), _num(r.spearman)] for r in info.rows),
    )
    return f"{_svg(_importance_figure(info), 'importance')}\n<p>{_e(summary)}</p>\n{table}"


def _anomaly_section(info: AnomalyInfo) -> str:
    if info.note is not None:
        return _note(info.note)
    flagged = sum(r.flagged for r in info.rows)
    text = (
        f"{info.metric} of each agent through the robust detector: {flagged} point(s) flagged over "
        f"{len(info.rows)} agent(s). Drawn: {', '.join(s.agent for s in info.streams)}."
    )
    plots = "\n".join(_svg(_anomaly_figure(s, info.metric or ""), f"anomaly{i}") for i, s in enumerate(info.streams))
    table = _table(
        ("agent", "points", "scored", "flagged"), ([r.agent, r.points, r.scored, r.flagged] for r in info.rows)
    )
    return f"<p>{_e(text)}</p>\n{plots}\n{table}"


# --------------------------------------------------------------------------------------------
# Figures


def _score_figure(info: ScoreInfo) -> Figure:
    fig, ax = _figure(4.2)
    g = np.asarray(info.generations)
    ax.fill_between(g, info.p10, info.p90, color=_BAND, alpha=0.5, lw=0, label="p10–p90 of agents")
    ax.plot(g, info.mean, color=_MEAN, lw=1.4, label="mean")
    ax.plot(g, info.best, color=_BEST, lw=2.0, label="best")
    if info.forecast is not None:
        f = info.forecast
        ax.fill_between(f.generations, f.low, f.high, color=_FORECAST, alpha=0.2, lw=0, label="forecast, 80% band")
        ax.plot(f.generations, f.expected, color=_FORECAST, lw=1.6, ls="--", label="forecast (expected)")
        ax.axvline(f.generations[0], color="#888888", lw=0.8, ls=":")
    if info.agents_forecast is not None:
        a = info.agents_forecast
        ax.fill_between(a.generations, a.low, a.high, color=_MEAN, alpha=0.12, lw=0, label="mean forecast, 80% band")
        ax.plot(a.generations, a.expected, color=_MEAN, lw=1.2, ls="--", label="mean forecast (expected)")
    if info.target is not None:
        ax.axhline(info.target, color=_TARGET, lw=1.0, ls="-.", label=f"target {_num(info.target)}")
    ax.set_xlabel("generation")
    ax.set_ylabel(_t(info.metric))
    ax.legend(loc="best", fontsize=8)
    return fig


def _diversity_figure(info: DiversityInfo) -> Figure:
    fig, ax = _figure(3.8)
    g = np.asarray(info.generations)
    ax.axhspan(0.0, 0.2, color=_ALERT, alpha=0.06, lw=0, label="LOW (< 0.2)")
    for series in info.parameters:
        ax.step(g, series.values, where="post", lw=1.1, alpha=0.8, label=_t(f"{series.name} ({series.scale})"))
    ax.step(g, info.overall, where="post", color="black", lw=2.2, label="overall")
    collapsed = np.isin(g, info.collapsed)
    if collapsed.any():
        ax.plot(g[collapsed], np.asarray(info.overall)[collapsed], "x", color=_ALERT, ms=8, mew=2, label="collapsed")
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlabel("generation")
    ax.set_ylabel("diversity index")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    return fig


def _lineage_figure(info: LineageInfo) -> Figure:
    rows = {agent: i for i, agent in enumerate(info.agents)}
    fig, ax = _figure(min(18.0, max(2.6, 0.32 * len(rows) + 1.3)))
    palette = matplotlib.colormaps["tab10" if len(info.founders) <= 10 else "tab20"]
    colour = {f: palette(i % palette.N) for i, f in enumerate(info.founders)}
    ax.barh(
        [rows[life.agent] for life in info.lives],
        [life.end - life.start + 0.8 for life in info.lives],
        left=[life.start - 0.4 for life in info.lives],
        height=0.55,
        color=[colour[life.founder] for life in info.lives],
        edgecolor="white",
        linewidth=0.6,
    )
    for arrow in info.arrows:
        x = arrow.source_generation
        ax.annotate(
            "",
            xy=(x, rows[arrow.target_agent]),
            xytext=(x, rows[arrow.source_agent]),
            arrowprops={"arrowstyle": "-|>", "color": "#333333", "lw": 0.9, "shrinkA": 3, "shrinkB": 3},
        )
    ax.set_yticks(range(len(rows)), [_t(a) for a in info.agents], fontsize=8 if len(rows) <= 40 else 6)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("generation")
    if len(info.founders) <= 20:
        handles = [Patch(color=colour[f], label=_t(f)) for f in info.founders]
        ax.legend(handles=handles, title="descends from", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    return fig


def _importance_figure(info: ImportanceInfo) -> Figure:
    fig = Figure(figsize=(_WIDTH, max(2.2, 0.4 * len(info.rows) + 1.2)), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(info.rows))
    left.barh(y, [r.permutation_mean for r in info.rows], xerr=[r.permutation_std for r in info.rows], color=_BEST)
    left.axvline(0, color="#555555", lw=0.8)
    left.set_xlabel("permutation importance (drop in held-out R²)")
    left.set_yticks(y, [_t(r.param) for r in info.rows])
    left.set_ylim(len(y) - 0.5, -0.5)
    rho = [np.nan if r.spearman is None else r.spearman for r in info.rows]
    right.barh(y, rho, color=[_MEAN if (v or 0) >= 0 else _ALERT for v in rho])
    for i, value in enumerate(rho):
        if math.isnan(value):
            right.text(0, i, "n/a", ha="center", va="center", fontsize=8, color="#555555")
    right.axvline(0, color="#555555", lw=0.8)
    right.set_xlim(-1, 1)
    right.set_xlabel("Spearman rank correlation with the score")
    for ax in (left, right):
        ax.grid(axis="x", alpha=0.3)
    return fig


def _anomaly_figure(stream: AnomalyStream, metric: str) -> Figure:
    fig, ax = _figure(2.8)
    seconds = np.asarray(stream.seconds)
    minutes = seconds.size > 0 and np.nanmax(seconds) > 600
    x = seconds / 60.0 if minutes else seconds
    ax.fill_between(x, stream.lower, stream.upper, color=_BAND, alpha=0.5, lw=0, label="expected band")
    ax.plot(x, stream.expected, color=_MEAN, lw=1.0, ls="--", label="expected")
    ax.plot(x, stream.value, color=_BEST, lw=1.2, label=_t(metric))
    if stream.flagged:
        flagged = np.asarray(stream.flagged)
        ax.plot(x[flagged], np.asarray(stream.value)[flagged], "o", color=_ALERT, ms=5, label="flagged")
    ax.set_title(_t(f"agent {stream.agent}"), fontsize=9, loc="left")
    ax.set_xlabel("minutes since the first report" if minutes else "seconds since the first report")
    ax.legend(loc="best", fontsize=8)
    return fig


# --------------------------------------------------------------------------------------------
# Helpers


def _figure(height: float) -> tuple[Figure, matplotlib.axes.Axes]:
    fig = Figure(figsize=(_WIDTH, height), layout="constrained")
    ax = fig.subplots()
    ax.grid(alpha=0.3)
    return fig, ax


def _svg(fig: Figure, prefix: str) -> str:
    """`fig` as an inline <svg> element: no prolog, no namespace URLs, ids prefixed with `prefix`."""
    buffer = io.StringIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buffer, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", text)
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", text)
    return f'<figure class="plot" id="{prefix}-plot">{text}</figure>'


def _t(text: str) -> str:
    """Text for matplotlib: `$` would start mathtext, a leading `_` would hide a legend entry."""
    text = str(text).replace("$", r"\$")
    return f" {text}" if text.startswith("_") else text


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.4g}"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def _generations(info: HeaderInfo) -> str:
    if info.first_generation is None:
        return "0"
    return f"{info.generations} ({info.first_generation}–{info.last_generation})"


def _span(info: HeaderInfo) -> str:
    if info.start is None or info.end is None:
        return "—"
    seconds = (info.end - info.start).total_seconds()
    length = (
        f"{seconds:.0f} s"
        if seconds < 120
        else f"{seconds / 60:.1f} min"
        if seconds < 7200
        else f"{seconds / 3600:.1f} h"
    )
    return f"{info.start:%Y-%m-%d %H:%M} UTC, {length}"
