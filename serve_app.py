"""The Ray Serve application (`serve run serve_app:app`).

Placeholder until the HTTP API issue: it already binds a deployment that answers the aggregator's
health as JSON on `/healthz`, so the import path and the Serve wiring exist and are tested.
"""

from __future__ import annotations

import dataclasses

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from elitemon.aggregator import AggregatorNotFound, get_aggregator


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
class ElitemonAPI:
    async def __call__(self, request: Request) -> JSONResponse:
        if request.url.path.rstrip("/") != "/healthz":
            return JSONResponse({"error": f"unknown path {request.url.path}; only /healthz exists yet"}, 404)
        try:
            health = await get_aggregator().health.remote()
        except AggregatorNotFound as error:  # not started yet, or stopped: the service is unavailable
            return JSONResponse({"error": str(error)}, 503)
        return JSONResponse(dataclasses.asdict(health))


app = ElitemonAPI.bind()
