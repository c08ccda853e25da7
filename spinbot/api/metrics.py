"""Prometheus metrics of one API app (own registry, so several apps can live in one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from spinbot.state.events import Event


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "spinbot_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.jobs_created = Counter("spinbot_jobs_created_total", "Jobs created", registry=self.registry)
        self.jobs_replayed = Counter(
            "spinbot_jobs_replayed_total",
            "Job requests answered by the job their Idempotency-Key made",
            registry=self.registry,
        )
        self.jobs_finished = Counter("spinbot_jobs_finished_total", "Jobs finished", ["status"], registry=self.registry)
        self.node_finished = Counter(
            "spinbot_nodes_finished_total", "Nodes finished", ["node", "status"], registry=self.registry
        )
        self.upload_bytes = Histogram(
            "spinbot_upload_bytes",
            "Accepted upload sizes",
            buckets=(1e4, 1e5, 1e6, 1e7, 5e7, 1e8),
            registry=self.registry,
        )

    def on_event(self, event: Event) -> None:
        if event.kind == "job" and event.status in ("succeeded", "failed", "cancelled"):
            self.jobs_finished.labels(event.status).inc()
        elif event.kind == "node" and event.status in ("succeeded", "failed", "cancelled"):
            self.node_finished.labels(event.node_id or "", event.status).inc()


# The methods counted by name; any other is "other". A label per method a client invents was a new series kept for
# the process's life: requests without a key, each with a new method of up to 64 KiB, grew memory without bound.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestCounter:
    """Counts answers by method, route and status (pure ASGI: an open event stream costs no task here)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message) -> None:
            if message["type"] == "http.response.start":
                route = getattr(scope.get("route"), "path", "unmatched")
                method = scope["method"] if scope["method"] in METHODS else "other"
                self.metrics.requests.labels(method, route, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)
