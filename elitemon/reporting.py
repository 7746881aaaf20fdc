"""`elitemon.report()` and `elitemon.report_exploit()`: monitoring for custom PBT loops.

    @ray.remote
    class Agent:
        def train(self, generation):
            ...
            elitemon.report(self.agent_id, generation, {"return": mean_return}, config=self.hparams)

Each call converts its rows and hands them to a Producer, which batches and sends them in the
background: no network round trip, cheap enough for every step. The producer is created on first
use in each process (every Ray worker has its own) and sends to the aggregator named `aggregator`;
a `Reporter` can be built explicitly instead, with any Producer.
"""

from __future__ import annotations

import json
import math
import socket
import threading
from collections.abc import Mapping
from decimal import Decimal
from numbers import Real
from typing import Any

from elitemon.producer import Producer, RaySink


class Reporter:
    """Turns PBT observations into rows of `samples`, `configs` and `events`."""

    def __init__(self, producer: Producer, *, node: str | None = None) -> None:
        self._producer = producer
        self._node = node or _this_node()

    @property
    def producer(self) -> Producer:
        return self._producer

    def report(
        self,
        agent_id: str,
        generation: int,
        metrics: Mapping[str, Any],
        config: Mapping[str, Any] | None = None,
        node: str | None = None,
    ) -> int:
        """Queue every finite numeric metric as a sample (and `config` as configs rows); returns how
        many samples were queued. Non-numeric metrics are skipped: they are not time series. Rows
        are checked when their batch is cut (`Producer.append_rows`: this runs on every step), so a
        rejected one (an over-long agent id, say) shows in `producer.stats().rejects`."""
        node = node or self._node
        samples = [
            {"kind": "agent", "node": node, "source": agent_id, "generation": generation, "metric": k, "value": v}
            for k, v in numeric_items(metrics)
        ]
        if samples:
            self._producer.append_rows("samples", samples)
        if config:
            self._producer.append_rows("configs", config_rows(agent_id, generation, config))
        return len(samples)

    def report_exploit(
        self,
        target: str,
        source: str,
        *,
        generation: int | None = None,
        source_generation: int | None = None,
        target_node: str | None = None,
        source_node: str | None = None,
        old_config: Mapping[str, Any] | None = None,
        source_config: Mapping[str, Any] | None = None,
        new_config: Mapping[str, Any] | None = None,
        operations: Mapping[str, Any] | None = None,
        trigger_generation: int | None = None,
        **details: Any,
    ) -> None:
        """Record that `target` copied `source` (exploit) and perturbed the copy (explore).

        `generation` is the target's generation before the exploit; `trigger_generation`, where it
        differs (Tune logs the target's previous result), the generation whose result triggered it,
        which becomes the event's `generation`. Extra keyword details (e.g. Tune's experiment tags)
        go into the payload as they are. The generations are stored as Python ints (a NumPy int
        would be written to the JSON payload as text); one that is not a whole number >= 0 (or None)
        is a ValueError naming it: the analytics could not place the copy."""
        generation, source_generation, trigger_generation = (
            _generation(name, value)
            for name, value in (
                ("generation", generation),
                ("source_generation", source_generation),
                ("trigger_generation", trigger_generation),
            )
        )
        payload = {
            "target_generation": generation,
            "source_generation": source_generation,
            "old_config": old_config,
            "source_config": source_config,
            "new_config": new_config,
            "operations": operations,
            "trigger_generation": generation if trigger_generation is None else trigger_generation,
            **details,
        }
        row = {
            "type": "exploit",
            "agent": target,
            "source_agent": source,
            "node": target_node or self._node,
            "source_node": source_node,
            "generation": payload["trigger_generation"],
            "payload": json.dumps(payload, default=str),
        }
        # Queued as the results and the other events are: rows of one process keep their order
        # in the store even where two carry the same microsecond.
        self._producer.append_rows("events", [row])


def _generation(name: str, value: Any) -> int | None:
    """`value` as a Python int when it is a whole number >= 0 (3, np.int64(3), 3.0), None for None."""
    if value is None:
        return None
    number = _real(value)
    if number is not None and number.is_integer() and number >= 0:
        return int(number)
    raise ValueError(f"{name} must be a whole number >= 0 or None, but got {value!r}.")


def numeric_items(metrics: Mapping[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    """The finite numeric (non-bool) entries of `metrics`, as floats. Nested mappings are walked and
    their keys joined with "/", as Tune names them (RLlib reports `env_runners/episode_return_mean`
    as `{"env_runners": {"episode_return_mean": ...}}`, and that is what a PBT `metric` names)."""
    items = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            items += numeric_items(value, f"{name}/")
        elif (number := _real(value)) is not None and math.isfinite(number):
            items.append((name, number))
    return items


def config_rows(agent_id: str, generation: int | None, config: Mapping[str, Any]) -> list[dict]:
    """One configs row per hyperparameter: `value` when numeric, `text` always."""
    rows = []
    for param, value in config.items():
        number = _real(value)
        rows.append(
            {
                "agent": agent_id,
                "generation": generation,
                "param": str(param),
                "value": number if number is not None and math.isfinite(number) else None,
                "text": str(value),
            }
        )
    return rows


def _real(value: Any) -> float | None:
    """`value` as a float when it is a real number, Python's, NumPy's or a Decimal; None for anything else: a
    bool (an int to Python, and no quantity), a complex number, text."""
    return float(value) if isinstance(value, Real | Decimal) and not isinstance(value, bool) else None


def _this_node() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except Exception:  # not in Ray, or Ray not reachable: fall back to the host name
        pass
    return socket.gethostname()


_default: Reporter | None = None
_default_lock = threading.Lock()


def default_reporter() -> Reporter:
    """This process's Reporter, created on first use (one per Ray worker process)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Reporter(Producer(RaySink(), name="report", when_full="drop"))
        return _default


def report(
    agent_id: str,
    generation: int,
    metrics: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
    node: str | None = None,
) -> int:
    """Report an agent's metrics (and hyperparameters) for one generation. Non-blocking."""
    return default_reporter().report(agent_id, generation, metrics, config, node)


def report_exploit(target: str, source: str, **details: Any) -> None:
    """Report that `target` copied `source`; see Reporter.report_exploit for the details."""
    default_reporter().report_exploit(target, source, **details)


def flush(timeout: float | None = 30.0) -> bool:
    """Wait until everything this process reported is stored (call before a worker exits)."""
    return default_reporter().producer.flush(timeout)
