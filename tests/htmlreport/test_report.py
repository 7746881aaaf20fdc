"""The whole report on a synthetic PBT run: valid, self-contained, escaped; and the CLI end to end
against a data directory written by a real Store."""

from __future__ import annotations

import json
import math
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from elitemon.cli import main
from elitemon.config import StoreConfig
from elitemon.htmlreport import SECTIONS, build_report, load_run, query_aggregator, read_data_dir
from elitemon.htmlreport._render import _agents_sentence, _forecast_sentence
from elitemon.htmlreport._sections import AgentsForecastInfo, ForecastInfo, ScoreInfo
from elitemon.schema import batch_from_rows
from elitemon.store import Store
from tests.conftest import store_frame

T0 = time.time() - 3600.0  # recent: the store refuses rows from the future and expires old ones
OPERATIONS = {"lr": "* 1.2", "gamma": "resample"}


def synthetic_run(
    *, agents: int = 6, generations: int = 24, interval: int = 4, seed: int = 0, names: list[str] | None = None
) -> dict[str, list[dict]]:
    """Rows of a PBT run: each agent's score climbs at a rate set by its lr (best near 0.03) and gamma;
    every `interval` generations the worst agent copies the best (with lr perturbed); agent 0's
    episodes_per_s dips to a third at 3/4 of the run."""
    rng = np.random.default_rng(seed)
    names = names or [f"trial_{i:05d}" for i in range(agents)]
    lr = 10 ** rng.uniform(-3, 0, len(names))
    gamma = rng.uniform(0.9, 0.999, len(names))
    level = np.zeros(len(names))
    rows: dict[str, list[dict]] = {"samples": [], "events": [], "configs": []}

    def config(i: int, generation: int, at: float) -> None:
        for param, value in (("lr", lr[i]), ("gamma", gamma[i]), ("seed", 1000.0 + i)):
            rows["configs"].append(
                {
                    "ts": at,
                    "agent": names[i],
                    "generation": generation,
                    "param": param,
                    "value": value,
                    "text": str(value),
                }
            )

    for i in range(len(names)):
        config(i, 0, T0)
    for g in range(1, generations + 1):
        quality = np.exp(-((np.log10(lr) + 1.5) ** 2)) * (gamma - 0.85) * 10
        level += quality + rng.normal(0, 0.05, len(names))
        for i, name in enumerate(names):
            at = T0 + 10 * g + 0.1 * i
            rate = 1000 + 30 * math.sin(g / 3) + rng.normal(0, 5)
            if i == 0 and g == (3 * generations) // 4:
                rate /= 3
            for metric, value in (("mean_return", level[i]), ("episodes_per_s", rate), ("time_this_iter_s", 0.1)):
                rows["samples"].append(
                    {
                        "ts": at,
                        "kind": "agent",
                        "node": "n1",
                        "source": name,
                        "generation": g,
                        "metric": metric,
                        "value": value,
                    }
                )
        if g % interval == 0 and g < generations:
            worst, best = int(np.argmin(level)), int(np.argmax(level))
            at = T0 + 10 * g + 5
            payload = {"source_generation": g, "target_generation": g, "operations": OPERATIONS}
            rows["events"].append(
                {
                    "ts": at,
                    "type": "exploit",
                    "agent": names[worst],
                    "source_agent": names[best],
                    "node": "n1",
                    "source_node": "n1",
                    "generation": g,
                    "payload": json.dumps(payload),
                }
            )
            rows["events"].append(
                {
                    "ts": at + 1,
                    "type": "migration_completed",
                    "agent": names[worst],
                    "source_agent": None,
                    "node": "n1",
                    "source_node": None,
                    "generation": g,
                    "payload": json.dumps({"latency_s": 1.0}),
                }
            )
            level[worst], lr[worst], gamma[worst] = level[best], lr[best] * 1.2, gamma[best]
            config(worst, g, at + 0.5)
    return rows


def frames(rows: dict[str, list[dict]]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The rows as the store hands them out (categorical ids, UTC microsecond timestamps)."""
    return tuple(store_frame(t, rows[t]) for t in ("samples", "events", "configs"))


class _Page(HTMLParser):
    """Collects what the tests check: unclosed tags, headings, svg count, and every URL-bearing attribute."""

    VOID = {"meta", "link", "br", "hr", "img", "input", "col", "area", "base", "embed", "source", "track", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.errors: list[str] = []
        self.headings: list[str] = []
        self.tags: list[str] = []
        self.urls: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [value or "" for name, value in attrs if name in ("src", "href", "xlink:href", "action", "srcset")]
        self._in_h2 = tag == "h2"
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [value or "" for name, value in attrs if name in ("src", "href", "xlink:href", "action", "srcset")]

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.open[-1] if self.open else None}>")
            return
        self.open.pop()
        self._in_h2 = False

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.headings.append(data)


def parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert not parser.errors and not parser.open, (parser.errors, parser.open)
    return parser


@pytest.fixture(scope="module")
def page() -> str:
    samples, events, configs = frames(synthetic_run())
    return build_report(samples, events, configs, target=2.0, title="Synthetic run")


def test_report_is_valid_html_with_every_section_and_a_plot_each(page):
    parsed = parse(page)
    assert parsed.headings == [title for _, title in SECTIONS]
    # score, diversity, lineage, importance, and the one throughput stream with its dip flagged
    assert parsed.tags.count("svg") == 5
    assert parsed.tags.count("figure") == 5
    assert "<h1>Synthetic run</h1>" in page
    assert "trial_00000" in page and "episodes_per_s" in page


def test_report_says_a_target_a_reported_best_score_has_reached_is_reached():
    samples, events, configs = frames(synthetic_run())
    best = samples[samples["metric"] == "mean_return"]["value"].max()
    page = build_report(samples, events, configs, target=float(best) - 0.01, title="Reached")
    assert "has already reached the target" in page


def test_a_forecast_flat_from_the_last_generation_says_the_best_score_has_stopped_improving():
    flat = ForecastInfo(
        generations=(12, 13),
        expected=(5.0, 5.0),
        low=(4.5, 4.5),
        high=(5.5, 5.5),
        goal="flat",
        level=5.0,
        remaining=0,
        remaining_low=0,
        remaining_high=0,
    )
    info = ScoreInfo(
        "mean_return", (11, 12), (4, 4), (5.0, 5.0), (4.0, 4.0), (3.0, 3.0), (5.0, 5.0), None, flat, None, None, "-"
    )
    sentence = _forecast_sentence(info)
    assert sentence == "Forecast from generation 12: the best mean_return has stopped improving (near 5)."


def test_a_target_one_generation_away_is_said_in_the_singular():
    soon = ForecastInfo(
        generations=(12, 13, 14, 15, 16),
        expected=(9.0, 9.2, 9.3, 9.4, 9.4),
        low=(8.5, 8.6, 8.6, 8.7, 8.7),
        high=(9.5, 9.8, 10.0, 10.1, 10.1),
        goal="target",
        level=9.5,
        remaining=1,
        remaining_low=1,
        remaining_high=4,
    )
    info = ScoreInfo(
        "mean_return", (11, 12), (4, 4), (9.0, 9.0), (8.0, 8.0), (7.0, 7.0), (9.0, 9.0), 9.5, soon, None, None, "-"
    )
    assert _forecast_sentence(info).startswith(
        "Forecast from generation 12: a reported best mean_return first reaches the target 9.5 in 1 generation "
        "(80% interval 1 to 4), at generation 13."
    )


def test_a_recent_maximum_forecast_says_where_its_band_starts():
    info = ScoreInfo(
        "mean_return", (11, 12), (4, 4), (9.0, 8.7), (8.0, 8.0), (7.0, 7.0), (9.0, 9.0), 9.5, None, None, None, "-"
    )
    curve_forecast = ForecastInfo(
        generations=(12, 13), expected=(9.0, 9.1), low=(8.5, 8.6), high=(9.5, 9.8),
        goal="target", level=9.5, remaining=3, remaining_low=1, remaining_high=9,
    )  # fmt: skip
    from_recent_max = curve_forecast._replace(recent_max=9.0)

    assert "starts from" not in _forecast_sentence(info._replace(forecast=curve_forecast))
    assert _forecast_sentence(info._replace(forecast=from_recent_max)).endswith(
        "The shaded band is the 80% interval of the best score's trend, which starts from the highest best of the "
        "last 10 generations, 9, where the best has recently been; single scores scatter around it, so one may "
        "reach the target before the band does."
    )


def test_the_agents_sentence_gives_the_exploit_rate_the_mean_forecast_and_the_share_at_target():
    agents = AgentsForecastInfo(
        generations=(12, 13, 14), expected=(4.0, 4.5, 4.8), low=(3.5, 3.9, 4.1), high=(4.4, 5.0, 5.6),
        exploit_rate=0.0625, share_at_target=0.7,
    )  # fmt: skip
    info = ScoreInfo(
        "mean_return", (11, 12), (4, 4), (5.0, 5.0), (4.0, 4.0), (3.0, 3.0), (5.0, 5.0), 5.0, None, "-", agents, None
    )
    assert _agents_sentence(info) == (
        "The mean mean_return is expected at 4.8 by generation 14 (80% interval 4.1 to 5.6), "
        "with exploits (6.2 per 100 agent-generations so far) drawing the agents towards it. "
        "Expected share of agents at or above the target 5 then: 70%."
    )


def test_report_is_the_same_on_every_build(page):
    samples, events, configs = frames(synthetic_run())
    assert build_report(samples, events, configs, target=2.0, title="Synthetic run") == page


def test_report_fetches_nothing(page):
    parsed = parse(page)
    assert "script" not in parsed.tags and "link" not in parsed.tags and "img" not in parsed.tags
    assert all(url.startswith("#") for url in parsed.urls), [u for u in parsed.urls if not u.startswith("#")]
    assert "http://" not in page and "https://" not in page and "@import" not in page
    assert not [u for u in re.findall(r"url\(([^)]*)\)", page) if not u.startswith("#")]
    assert len(page.encode()) < 2_000_000


def test_report_escapes_agent_ids_and_metric_text():
    names = ["<script>alert(1)</script>", "$x$_y", "_hidden", "a&b", 'q"uote', "plain"]
    samples, events, configs = frames(synthetic_run(names=names))
    page = build_report(samples, events, configs, title="<b>title</b>")
    parsed = parse(page)
    assert "script" not in parsed.tags and "b" not in parsed.tags
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;title&lt;/b&gt;" in page


def write_store(data_dir: Path, rows: dict[str, list[dict]], *, seal_after: int) -> Store:
    """Ingest `rows` through a real Store: the first `seal_after` batches of each table sealed into
    Parquet segments, the rest only in the write-ahead log. Returns the store, still open."""
    store = Store(StoreConfig(data_dir=data_dir))
    seq = 0
    for table in ("samples", "events", "configs"):
        chunks = [rows[table][i : i + 50] for i in range(0, len(rows[table]), 50)]
        for i, chunk in enumerate(chunks):
            ack = store.ingest(table, batch_from_rows(table, chunk), producer_id="test", seq=seq)
            assert ack.accepted == len(chunk)
            seq += 1
            if i + 1 == seal_after:
                store.seal()
    return store


def test_cli_report_from_a_data_directory(tmp_path, capsys):
    rows = synthetic_run(agents=4, generations=16)
    write_store(tmp_path / "data", rows, seal_after=2).close()
    out = tmp_path / "report.html"
    assert main(["report", "--data-dir", str(tmp_path / "data"), "--out", str(out), "--target", "3"]) == 0
    assert "report written to" in capsys.readouterr().out
    page = out.read_text(encoding="utf-8")
    parsed = parse(page)
    assert parsed.headings == [title for _, title in SECTIONS]
    assert f"data directory {tmp_path / 'data'}" in page
    assert "target mean_return ≥ 3" in page


def test_data_directory_is_read_in_place_while_a_store_holds_it(tmp_path):
    rows = synthetic_run(agents=3, generations=8)
    store = write_store(tmp_path, rows, seal_after=1)  # left open: it holds the directory's lock
    try:
        files = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
        run = read_data_dir(tmp_path)
        assert (len(run.samples), len(run.events), len(run.configs)) == tuple(
            len(rows[t]) for t in ("samples", "events", "configs")
        )
        assert set(run.samples["kind"]) == {"agent"}
        later = read_data_dir(tmp_path, start=T0 + 35)  # generations 4 on (ts 10 g + 0.1 i)
        assert sorted(set(later.samples["generation"])) == [4, 5, 6, 7, 8]
        # Configs are state, written at a trial's start: each agent's are kept from before the start.
        assert set(later.configs["agent"]) == set(later.samples["source"]) == set(run.configs["agent"])
        assert (later.configs["ts"] < pd.Timestamp(T0 + 35, unit="s", tz="UTC")).any()
        assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == files  # nothing written
    finally:
        store.close()


def test_cli_lists_the_candidates_when_the_score_is_ambiguous(tmp_path, capsys):
    rows = synthetic_run(agents=2, generations=2)
    for row in rows["samples"]:
        row["metric"] = {"mean_return": "reward"}.get(row["metric"], row["metric"])
    rows["samples"] += [{**row, "metric": "accuracy"} for row in rows["samples"] if row["metric"] == "reward"]
    write_store(tmp_path, rows, seal_after=1).close()
    assert main(["report", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    error = capsys.readouterr().err
    assert "--metric" in error and "['accuracy', 'reward']" in error
    assert main(["report", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r.html"), "--metric", "reward"]) == 0


def test_cli_refuses_an_out_path_in_a_missing_directory_before_computing(tmp_path, capsys):
    missing = tmp_path / "missing" / "r.html"
    assert main(["report", "--data-dir", str(tmp_path), "--out", str(missing)]) == 2
    assert f"--out: no directory '{missing.parent}'" in capsys.readouterr().err  # not 'no elitemon data'


def test_an_empty_directory_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no elitemon data"):
        read_data_dir(tmp_path)


def test_without_a_reachable_aggregator_the_default_data_directory_is_read(tmp_path, monkeypatch):
    import elitemon.client

    def unreachable(address: str) -> None:
        raise ConnectionError(f"no Ray cluster at {address!r}")

    monkeypatch.setattr(elitemon.client, "connect", unreachable)
    monkeypatch.setenv("ELITEMON_DATA_DIR", str(tmp_path))
    write_store(tmp_path, synthetic_run(agents=2, generations=3), seal_after=1).close()
    run = load_run()
    assert run.source == f"data directory {tmp_path}" and len(run.samples) == 2 * 3 * 3
    with pytest.raises(ConnectionError, match="'ray://elsewhere:10001'"):  # an address given is not second-guessed
        load_run(address="ray://elsewhere:10001")


def test_an_aggregator_is_asked_for_agent_samples_only():
    class Client:
        def __init__(self) -> None:
            self.calls: list[tuple[str, dict]] = []

        def __getattr__(self, table: str):
            def query(**filters):
                self.calls.append((table, filters))
                return pd.DataFrame()

            return query

    client = Client()
    run = query_aggregator(client, start=5.0)
    assert run.source == "the running aggregator"
    assert client.calls == [
        ("samples", {"kind": "agent", "start": 5.0, "as_pandas": True}),
        ("events", {"start": 5.0, "as_pandas": True}),
        ("configs", {"as_pandas": True}),  # state: from before the start too, then the run's agents
    ]
