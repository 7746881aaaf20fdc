"""`serve_app` (what `serve run serve_app:app` imports) builds a Ray Serve Application. Serve is not started."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from types import SimpleNamespace

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from ray import serve  # noqa: E402

import serve_app  # noqa: E402


def test_app_is_a_serve_application() -> None:
    assert isinstance(serve_app.app, serve.Application)


def test_the_deployment_is_one_replica_without_cpus() -> None:
    deployment = serve_app.ElitemonAPI
    assert isinstance(deployment, serve.Deployment)
    assert deployment.name == "ElitemonAPI"
    assert deployment.num_replicas == 1
    assert deployment.ray_actor_options["num_cpus"] == 0


def test_unknown_paths_get_an_error_naming_healthz() -> None:
    api = serve_app.ElitemonAPI.func_or_class()  # the plain class: no Serve, no Ray needed here
    request = SimpleNamespace(url=SimpleNamespace(path="/metrics"))
    answer = asyncio.run(api(request))
    assert answer.status_code == 404
    error = json.loads(answer.body)["error"]
    assert "/metrics" in error and "/healthz" in error


def test_healthz_without_an_aggregator_is_a_503_saying_so(monkeypatch) -> None:
    """It was an unhandled exception: a 500 with no body a health check could read."""
    from elitemon.aggregator import AggregatorNotFound

    def no_aggregator():
        raise AggregatorNotFound("no elitemon aggregator named 'aggregator' is running")  # what the lookup raises

    monkeypatch.setattr(serve_app, "get_aggregator", no_aggregator)
    api = serve_app.ElitemonAPI.func_or_class()
    answer = asyncio.run(api(SimpleNamespace(url=SimpleNamespace(path="/healthz"))))
    assert answer.status_code == 503
    assert "no elitemon aggregator" in json.loads(answer.body)["error"]
