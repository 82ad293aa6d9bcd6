"""Prometheus metrics for one invocation, written when it ends.

A node_exporter textfile (written atomically by prometheus-client: a
temporary file renamed into place) and/or a Pushgateway. A fresh registry
per invocation: a cron job's metrics describe its own pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

from syncflow.models import Entity
from syncflow.records import RunResult

JOB = "syncflow"
PUSH_TIMEOUT = 10.0  # seconds; a cron job must not hang on an unreachable Pushgateway


def build_registry(results: Iterable[RunResult], entities: dict[str, Entity]) -> CollectorRegistry:
    """Gauges per entity (and per connector for HTTP), labelled for alerting."""
    reg = CollectorRegistry()
    duration = Gauge(
        "syncflow_run_duration_seconds", "Duration of the entity's last run in this pass", ["entity"], registry=reg
    )
    rows = Gauge("syncflow_rows", "Rows of the entity's last run by outcome", ["entity", "outcome"], registry=reg)
    failed = Gauge(
        "syncflow_run_failed",
        "1 when the entity's last run failed, was partial or cancelled",
        ["entity", "status"],
        registry=reg,
    )
    last_success = Gauge(
        "syncflow_last_success_timestamp_seconds",
        "Unix time of the entity's last successful run",
        ["entity"],
        registry=reg,
    )
    consecutive = Gauge(
        "syncflow_consecutive_failures", "Failed runs in a row for the entity", ["entity"], registry=reg
    )
    retries = Gauge("syncflow_http_retries", "HTTP retries during this pass", ["connector"], registry=reg)
    latency = Gauge(
        "syncflow_apismith_latency_seconds", "Mean APISmith response time during this pass", ["connector"], registry=reg
    )
    throttled = Gauge(
        "syncflow_http_throttled",
        "Requests the source pushed back on (429, 503, 504, timeouts) during this pass",
        ["connector"],
        registry=reg,
    )
    limit_max = Gauge(
        "syncflow_concurrency_limit_max",
        "Highest adaptive concurrency limit the connector's requests were admitted at during this pass",
        ["connector"],
        registry=reg,
    )
    limit_avg = Gauge(
        "syncflow_concurrency_limit_avg",
        "Mean adaptive concurrency limit over the connector's requests during this pass",
        ["connector"],
        registry=reg,
    )
    in_flight = Gauge(
        "syncflow_http_in_flight_max",
        "Most requests to the connector in flight at once during this pass",
        ["connector"],
        registry=reg,
    )
    held = Gauge(
        "syncflow_delete_guard_held",
        "Soft-deletes the delete guard held back in the entity's last run (0: none)",
        ["entity"],
        registry=reg,
    )
    per_connector: dict[str, tuple[int, int, float]] = {}
    concurrency: dict[str, _Concurrency] = {}
    for r in results:
        c = r.counts
        duration.labels(r.entity).set(r.duration)
        for outcome, n in (
            ("fetched", c.fetched),
            ("inserted", c.inserted),
            ("updated", c.updated),
            ("unchanged", c.unchanged),
            ("deleted", c.deleted),
            ("rejected", c.rejected),
        ):
            rows.labels(r.entity, outcome).set(n)
        failed.labels(r.entity, r.status).set(0 if r.status == "success" else 1)
        guard = r.error_details.get("delete_guard")
        held.labels(r.entity).set(int(guard.get("would_delete", 0)) if isinstance(guard, dict) else 0)
        connector = r.entity.split(".", 1)[0]
        req, ret, secs = per_connector.get(connector, (0, 0, 0.0))
        per_connector[connector] = (req + r.http_requests, ret + r.http_retries, secs + r.http_seconds)
        concurrency.setdefault(connector, _Concurrency()).add(r)
    for ref, e in entities.items():
        consecutive.labels(ref).set(e.consecutive_failures)
        if e.last_success_at is not None:
            last_success.labels(ref).set(e.last_success_at.timestamp())
    for connector, (req, ret, secs) in per_connector.items():
        retries.labels(connector).set(ret)
        if req:
            latency.labels(connector).set(secs / req)
    for connector, conc in concurrency.items():
        throttled.labels(connector).set(conc.throttled)
        if conc.weight:
            limit_max.labels(connector).set(conc.limit_max)
            limit_avg.labels(connector).set(conc.limit_sum / conc.weight)
            in_flight.labels(connector).set(conc.in_flight_max)
    return reg


class _Concurrency:
    """One connector's concurrency over the pass's runs: the mean weighted by each run's requests."""

    def __init__(self) -> None:
        self.throttled = self.limit_max = self.in_flight_max = self.weight = 0
        self.limit_sum = 0.0

    def add(self, r: RunResult) -> None:
        self.throttled += r.http_throttled
        if r.concurrency_max is None or r.concurrency_avg is None or not r.http_requests:
            return
        self.limit_max = max(self.limit_max, r.concurrency_max)
        self.in_flight_max = max(self.in_flight_max, r.in_flight_max or 0)
        self.limit_sum += r.concurrency_avg * r.http_requests
        self.weight += r.http_requests


def publish(reg: CollectorRegistry, *, textfile: Path | None, pushgateway: str | None) -> list[str]:
    """Write and/or push; returns what failed, one line each, instead of raising.

    Metrics describe a pass; they must never turn a good pass into a failed one:
    a textfile that cannot be written (OSError) or a push that fails (any
    exception) becomes a line here, which the CLI logs as a warning
    (``metrics_failed``) without touching the runs or the exit code.
    """
    problems: list[str] = []
    if textfile is not None:
        try:
            write_to_textfile(str(textfile), reg)
        except OSError as exc:
            problems.append(f"--metrics-file {textfile}: cannot write: {exc.strerror or exc}")
    if pushgateway:
        try:
            push_to_gateway(pushgateway, job=JOB, registry=reg, timeout=PUSH_TIMEOUT)
        except Exception as exc:  # URLError, HTTPError, ValueError for a bad URL: all just a failed push
            problems.append(f"--pushgateway {pushgateway}: push failed: {exc}")
    return problems
