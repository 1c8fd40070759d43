"""Prometheus metrics of one `serve` process, served at `GET /metrics`.

Counters and histograms count what this process did since it started; with several instances
each serves its own, and Prometheus sums them. The gauges read from the store at each scrape
(companies by state, events pending, failed commands, worker lag) describe the whole store,
the same from every instance: their help text says so, so that nobody sums them.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

PREFIX = "codat_expenses"
CONTENT_TYPE = CONTENT_TYPE_LATEST
SHARED = "Read from the store at scrape time: the whole store, the same from every instance."
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class StoreFigures:
    """What the store says at a scrape."""

    companies: dict[str, int]
    events_pending: int
    commands_failed: int
    oldest_pending_seconds: float


class Metrics:
    """Every metric of a process, in a registry of its own (apps in one process never mix)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.webhooks = Counter(
            f"{PREFIX}_webhooks_received",
            "Webhooks received, by outcome (stored, duplicate, requeued, rejected) and, for a "
            "rejection, its reason (signature, timestamp, malformed, too_large, "
            "store_unavailable).",
            ["outcome", "reason"],
            registry=r,
        )
        self.intake_seconds = Histogram(
            f"{PREFIX}_intake_seconds",
            "Time from a webhook request's start to its answer (stored ones: after the commit).",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.codat_calls = Counter(
            f"{PREFIX}_codat_calls",
            "Calls to Codat's API, by operation (method and path template) and status (the HTTP "
            "status, or timeout / connection_error).",
            ["operation", "status"],
            registry=r,
        )
        self.codat_seconds = Histogram(
            f"{PREFIX}_codat_call_seconds",
            "Duration of calls to Codat's API, by operation.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.command_attempts = Counter(
            f"{PREFIX}_command_attempts",
            "Attempts at commands to Codat, by kind and what became of the command "
            "(done, retry, failed, cancelled).",
            ["kind", "result"],
            registry=r,
        )
        self.partner_connections = Counter(
            f"{PREFIX}_partner_expense_connections",
            "Partner expense connections this process recorded, created by its POST or adopted "
            "(Codat already had one).",
            ["how"],
            registry=r,
        )
        self.transitions = Counter(
            f"{PREFIX}_state_transitions",
            "Companies moved from one onboarding state to another by this process's folds.",
            ["from_state", "to_state"],
            registry=r,
        )
        self.reconciliations = Counter(
            f"{PREFIX}_reconciliation_runs",
            "Reconciliation sweeps run by this process (a sweep another instance held is not "
            "counted).",
            registry=r,
        )
        self.corrections = Counter(
            f"{PREFIX}_reconciliation_corrections",
            "Companies a reconciliation sweep of this process corrected from what Codat says.",
            registry=r,
        )
        self.syncs = Counter(
            f"{PREFIX}_expense_syncs",
            "Expense syncs whose outcome this process's folds recorded (or changed), by outcome "
            "(successful, failed).",
            ["outcome"],
            registry=r,
        )
        self.failing_transactions = Counter(
            f"{PREFIX}_sync_failing_transactions",
            "Failing transactions of failed expense syncs, as this process's folds recorded "
            "them (listed by a webhook or fetched from Codat).",
            registry=r,
        )
        self.sync_health = Gauge(
            f"{PREFIX}_companies_by_sync_health",
            "Companies by the verdict on their expense syncs (healthy, failing, silent), as of "
            "the last reconciliation sweep this process ran (only the instance that sweeps "
            "sets it).",
            ["health"],
            registry=r,
        )
        self.rate_limit_paused = Gauge(
            f"{PREFIX}_rate_limit_paused",
            "1 while Codat's rate limit pauses the non-urgent calls (reconciliation, option "
            "refreshes, sync look-ups), else 0; as this process's worker last read the store.",
            registry=r,
        )
        self.rate_limit_paused_until = Gauge(
            f"{PREFIX}_rate_limit_paused_until_timestamp_seconds",
            "When the current rate-limit pause ends (Unix seconds; 0 when there is none).",
            registry=r,
        )
        self.codat_quota_remaining = Gauge(
            f"{PREFIX}_codat_quota_remaining",
            "Requests left in Codat's daily quota, from the X-Rate-Limit-Remaining header of "
            "the latest answer that had one (NaN until then).",
            registry=r,
        )
        self.codat_quota_limit = Gauge(
            f"{PREFIX}_codat_quota_limit",
            "Codat's daily quota, from the X-Rate-Limit-Limit header of the latest answer that "
            "had one (NaN until then).",
            registry=r,
        )
        # Not 0 before any answer said so: an alert on a low quota must not fire at start-up.
        self.codat_quota_remaining.set(float("nan"))
        self.codat_quota_limit.set(float("nan"))
        self.rate_limit_paused_seconds = Counter(
            f"{PREFIX}_rate_limit_paused_seconds",
            "Seconds this process's worker spent with the non-urgent Codat calls paused by "
            "Codat's rate limit.",
            registry=r,
        )
        self.companies = Gauge(
            f"{PREFIX}_companies", f"Companies by onboarding state. {SHARED}", ["state"], registry=r
        )
        self.events_pending = Gauge(
            f"{PREFIX}_events_pending", f"Events not yet folded. {SHARED}", registry=r
        )
        self.commands_failed = Gauge(
            f"{PREFIX}_commands_failed",
            f"Commands to Codat that failed for good (dead letters). {SHARED}",
            registry=r,
        )
        self.worker_lag = Gauge(
            f"{PREFIX}_worker_lag_seconds",
            f"Age of the oldest event not yet folded (0 when none is waiting). {SHARED}",
            registry=r,
        )

    def observe_store(self, figures: StoreFigures) -> None:
        for state, count in figures.companies.items():
            self.companies.labels(state).set(count)
        self.events_pending.set(figures.events_pending)
        self.commands_failed.set(figures.commands_failed)
        self.worker_lag.set(figures.oldest_pending_seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
