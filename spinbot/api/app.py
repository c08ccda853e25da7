"""The HTTP API (FastAPI): the app, its services and middleware; the routes live in spinbot/api/routes/, one module
per resource."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from spinbot import __version__
from spinbot.api import form, live
from spinbot.api.auth import redact_access_log
from spinbot.api.deps import Services
from spinbot.api.errors import install_error_handlers
from spinbot.api.executor import JobExecutor
from spinbot.api.head import HeadAsGet
from spinbot.api.headers import ResponseHeaders
from spinbot.api.limits import RequestBodyLimit, SlowReaderLimit
from spinbot.api.loopback import LoopbackHostOnly
from spinbot.api.metrics import Metrics, RequestCounter
from spinbot.api.readiness import Readiness
from spinbot.api.routes import artifacts, jobs, meta, uploads
from spinbot.api.schemas import JobOut
from spinbot.control.callbacks import CallbackSender
from spinbot.control.runner import Runner
from spinbot.media.sandbox import warm_shared
from spinbot.settings import Settings, get_settings
from spinbot.state.event_feed import make_event_feed


def create_app(settings: Settings | None = None, runner: Runner | None = None) -> FastAPI:
    settings = settings or get_settings()
    runner = runner or Runner(settings)
    metrics = Metrics()
    if runner.callbacks is None:  # this process sends the webhooks of the jobs it ends, and those left due
        runner.callbacks = CallbackSender(runner.jobs, settings, render=_webhook_job)
    services = Services(
        settings,
        runner,
        JobExecutor(runner, settings.api_job_threads, runner.callbacks),
        metrics,
        make_event_feed(runner.events, settings.redis_url),
        Readiness(settings, runner),
    )
    unsubscribe = runner.events.subscribe(metrics.on_event)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        services.readiness.start()  # the native backends' imports, in a thread: /readyz says when they are done
        warm_shared(settings)  # the upload checkers' processes start now, not at the first upload
        services.executor.resume_unfinished()
        yield
        unsubscribe()
        services.executor.shutdown()
        services.readiness.close()
        await services.feed.close()

    # /docs with Swagger UI's files from the fastapi-offline package: it works with no internet. No redirects of a
    # path with (or without) a trailing slash: Starlette's answered `GET /healthz/` with a 307 to the Host header's
    # site (`Host: evil.com` -> http://evil.com/healthz) and no JSON body; such a path is the API's JSON 404.
    app = FastAPIOffline(
        title="SpinBot",
        version=__version__,
        lifespan=lifespan,
        redoc_url=None,
        static_url="/docs/assets",
        redirect_slashes=False,
    )
    app.state.settings, app.state.services = settings, services
    app.state.runner = runner  # a shortcut that tests and route modules use
    install_error_handlers(app)
    for router in (meta.router, uploads.router, jobs.router, artifacts.router, form.router, live.router):
        app.include_router(router)
    from spinbot.api.web import mount_web

    mount_web(app)
    app.add_middleware(HeadAsGet)  # innermost: the others see the HEAD request as it came
    app.add_middleware(RequestBodyLimit, max_bytes=settings.max_request_bytes, timeout_s=settings.api_request_timeout)
    app.add_middleware(RequestCounter, metrics=metrics)
    if not settings.api_key_list:  # loopback only: and only requests addressed to it (DNS rebinding)
        app.add_middleware(LoopbackHostOnly)
    app.add_middleware(ResponseHeaders)  # its headers go on every answer, the limits' ones too
    app.add_middleware(SlowReaderLimit, timeout_s=settings.api_send_timeout)  # outermost: every write bounded
    redact_access_log()
    return app


def _webhook_job(job) -> dict:
    """The job in a webhook's body: as GET /v1/jobs/{id} answers it, less the webhook's own delivery state."""
    return JobOut.of(job).model_dump(mode="json", exclude={"callback"})
