"""Prometheus metrics (GET /metrics) with prometheus_client, in a registry of the daemon's own.

Counters and histograms are fed as things happen (the read model's status listener, the API
middleware); gauges that describe the present (queue, workers, memory) are read at scrape.
"""

from __future__ import annotations


from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from contract.status import seconds_between

disable_created_metrics()  # no *_created series: they double the output and say nothing here

DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, float("inf"))
API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, float("inf"))


def _seconds_between(start: str | None, end: str | None) -> float | None:
    seconds = seconds_between(start, end)
    return None if seconds is None else max(0.0, seconds)


class Metrics:
    def __init__(self, view):
        self.registry = CollectorRegistry()
        self.jobs_total = Counter("vidspool_jobs", "Jobs that ended, by kind and end state", ["kind", "state"], registry=self.registry)
        self.job_seconds = Histogram("vidspool_job_duration_seconds", "Run time of ended jobs (start to end)", ["kind"],
                                     buckets=DURATION_BUCKETS, registry=self.registry)
        self.queue_wait = Histogram("vidspool_queue_wait_seconds", "Time from queued to started", ["kind"],
                                    buckets=DURATION_BUCKETS, registry=self.registry)
        self.requests = Counter("vidspool_api_requests", "API requests", ["method", "route", "status"], registry=self.registry)
        self.request_seconds = Histogram("vidspool_api_request_seconds", "API request time", ["route"],
                                         buckets=API_BUCKETS, registry=self.registry)
        self.refused = Counter("vidspool_api_connections_refused", "Connections answered 503 over [api] max_connections",
                               registry=self.registry)
        self.deliveries = Counter("vidspool_deliveries", "Delivery attempts to presets' deliver_to folders, by outcome",
                                  ["outcome"], registry=self.registry)
        self.webhooks = Counter("vidspool_webhook_deliveries", "Webhook delivery attempts, by result (delivered, retry, given_up, refused)",
                                ["result"], registry=self.registry)
        # Called back from the webhook sender's threads (Counter is thread-safe).
        view.on_webhook_attempt(lambda result: self.webhooks.labels(result).inc())
        self.registry.register(_PresentState(view))
        view.on_status(self.on_status)
        self._request_children: dict[tuple, tuple] = {}

    def on_status(self, doc: dict) -> None:
        """Called with every status this daemon writes."""
        kind, state = doc.get("kind") or "unknown", doc.get("state")
        if state == "running" and doc.get("stage") == "starting":
            waited = _seconds_between(doc.get("created_at"), doc.get("started_at"))
            if waited is not None:
                self.queue_wait.labels(kind).observe(waited)
        elif state in ("completed", "failed", "canceled"):
            result = doc.get("result") or {}
            if result.get("delivered") is not None or result.get("delivery_error") is not None:
                # a delivery's rewrite of an ended job's status (daemon/delivery/service.py), not another end
                self.deliveries.labels("failed" if result.get("delivery_error") else "delivered").inc()
                return
            self.jobs_total.labels(kind, state).inc()
            ran = _seconds_between(doc.get("started_at"), doc.get("finished_at"))
            if ran is not None:
                self.job_seconds.labels(kind).observe(ran)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:  # labels() costs a lock and a dict build: once per key
            children = self._request_children[key] = (self.requests.labels(method, route, str(status)),
                                                       self.request_seconds.labels(route))
        children[0].inc()
        children[1].observe(seconds)

    def connection_refused(self) -> None:
        self.refused.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _PresentState:
    """Gauges read from the read model at scrape time."""

    def __init__(self, view):
        self.view = view

    def collect(self):
        devices = self.view.devices()
        jobs = GaugeMetricFamily("vidspool_jobs_now", "Jobs queued (whole spool) and running (this daemon)", labels=["state"])
        jobs.add_metric(["queued"], self.view.queued_count())
        jobs.add_metric(["running"], sum(1 for d in devices if d["busy"]))
        yield jobs
        corrupt = self.view.corrupt()
        if corrupt is not None:  # unknown while the spool cannot be read
            yield GaugeMetricFamily("vidspool_corrupt_entries", "Spool entries moved to corrupt/ (never deleted)", value=corrupt)
        restarts = GaugeMetricFamily("vidspool_worker_restarts", "Worker process restarts since the daemon started", labels=["device"])
        memory = GaugeMetricFamily("vidspool_device_memory_bytes", "Device memory (GPU; RAM of the worker on CPU)", labels=["device", "type"])
        models = GaugeMetricFamily("vidspool_models_loaded", "Models a worker holds", labels=["device"])
        loads = GaugeMetricFamily("vidspool_model_loads", "Model loads since the worker started", labels=["device"])
        busy = GaugeMetricFamily("vidspool_worker_busy", "1 while a worker runs a job", labels=["device"])
        for d in devices:
            restarts.add_metric([d["device"]], d["restarts"])
            for key in ("used", "total"):
                if key in (d["memory"] or {}):
                    memory.add_metric([d["device"], key], d["memory"][key])
            models.add_metric([d["device"]], len(d["models"]))
            loads.add_metric([d["device"]], d["model_loads"])
            busy.add_metric([d["device"]], 1 if d["busy"] else 0)
        yield from (restarts, memory, models, loads, busy)
        removed, freed_bytes = self.view.retention_totals()  # this daemon's sweeps
        yield CounterMetricFamily("vidspool_retention_removed", "Ended jobs' outbox folders removed past [outbox] keep_days",
                                  value=removed)
        yield CounterMetricFamily("vidspool_retention_freed_bytes", "Bytes freed by removing outbox folders past keep_days",
                                  value=freed_bytes)
