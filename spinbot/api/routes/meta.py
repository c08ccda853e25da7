"""Health, readiness, metrics, and what the server offers: pipelines and the params of each task."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from spinbot import __version__
from spinbot.api.auth import metrics_access
from spinbot.api.deps import Owner, ServicesDep
from spinbot.api.errors import error, error_responses
from spinbot.api.readiness import ping_database
from spinbot.api.schemas import HealthOut, PipelineOut, PipelinesOut, ReadyOut
from spinbot.pipelines.spec import load_pipelines

router = APIRouter(tags=["meta"])


@router.get("/healthz", response_model=HealthOut, responses=error_responses(503))
async def healthz(services: ServicesDep) -> HealthOut | JSONResponse:
    """Liveness, no key: the process answers and its database does."""
    try:
        await anyio.to_thread.run_sync(ping_database, services.runner)
    except Exception:  # noqa: BLE001 - whatever the driver raised, the database does not answer
        return error(503, "the database is unavailable")
    return HealthOut(status="ok", version=__version__)


@router.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut, "description": "not ready"}})
async def readyz(services: ServicesDep) -> JSONResponse:
    """Readiness, no key: each dependency's state (database, Redis, storage); 503 while one is down."""
    state = await services.readiness.check()
    return JSONResponse(state.model_dump(), status_code=200 if state.status == "ready" else 503)


@router.get(
    "/metrics",
    dependencies=[Depends(metrics_access)],
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"},
        **error_responses(401),
    },
)
async def prometheus(services: ServicesDep) -> Response:
    """Prometheus metrics: an API key or SPINBOT_METRICS_KEY."""
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/pipelines", response_model=PipelinesOut, responses=error_responses(401))
def pipelines(services: ServicesDep, owner: Owner) -> PipelinesOut:
    return PipelinesOut(
        pipelines=[
            PipelineOut(
                name=name,
                nodes=[n.model_dump() for n in spec.nodes],
                edges=[e.model_dump(by_alias=True) for e in spec.edges],
            )
            for name, spec in load_pipelines(services.settings.pipelines).items()
        ]
    )


@router.get("/v1/params", response_model=dict[str, dict[str, Any]], responses=error_responses(401))
def params_schema(owner: Owner) -> dict[str, dict[str, Any]]:
    """JSON schemas of every task's params, so clients can build forms with the seed's names and defaults."""
    from spinbot.tasks.catalog import TASK_PLANES, load_task

    return {name: load_task(name).params_model.model_json_schema() for name in TASK_PLANES}
