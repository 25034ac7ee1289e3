"""Prometheus metrics, owned by one object so tests can build a fresh set."""

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

from smsworker import __version__

# Twilio stamps date_created when it receives a message, and a syncer may
# store it seconds or minutes later, so end-to-end latency spans a wide range.
LATENCY_BUCKETS_S = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 21600, 86400)


class Metrics:
    """The worker's metrics, registered in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.lag = Gauge(
            "smsworker_lag_seconds",
            "Age of the oldest inbound message not yet handled; 0 when caught up.",
            registry=self.registry,
        )
        self.backlog = Gauge(
            "smsworker_backlog_messages",
            "Inbound messages after the cursor, waiting to be handled.",
            registry=self.registry,
        )
        self.cursor_timestamp = Gauge(
            "smsworker_cursor_timestamp_seconds",
            "date_created of the last message handled in order, as a Unix time.",
            registry=self.registry,
        )
        self.last_poll = Gauge(
            "smsworker_last_poll_timestamp_seconds",
            "Unix time of the last successful query for new messages, after a poll or a"
            " notification.",
            registry=self.registry,
        )
        self.outbox_pending = Gauge(
            "smsworker_outbox_pending_replies",
            "Replies in the outbox waiting to be sent.",
            registry=self.registry,
        )
        self.dead_letters_pending = Gauge(
            "smsworker_dead_letters_pending",
            "Dead letters not retried yet.",
            registry=self.registry,
        )
        self.message_latency = Histogram(
            "smsworker_message_latency_seconds",
            "Time from a message's date_created to the worker handling it.",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.messages_handled = Counter(
            "smsworker_messages_handled_total",
            "Inbound messages handled, by command and outcome.",
            ["command", "outcome"],
            registry=self.registry,
        )
        self.handler_duration = Histogram(
            "smsworker_handler_duration_seconds",
            "Time spent applying a message's effects, commit excluded; messages applied"
            " together in a batch share its time equally.",
            registry=self.registry,
        )
        self.handler_retries = Counter(
            "smsworker_handler_retries_total",
            "Handler attempts that failed and were tried again.",
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "smsworker_dead_letters_total",
            "Messages moved to the dead letters after their handler kept failing.",
            registry=self.registry,
        )
        self.role = Gauge(
            "smsworker_role",
            "1 for this process's current role: active (handling messages) or standby.",
            ["role"],
            registry=self.registry,
        )
        self.replies = Counter(
            "smsworker_replies_total",
            "Replies that left the outbox, by outcome (sent or failed).",
            ["outcome"],
            registry=self.registry,
        )
        self.reply_failures = Counter(
            "smsworker_reply_failures_total",
            "Replies Twilio rejected for good, by Twilio error code.",
            ["code"],
            registry=self.registry,
        )
        self.send_retries = Counter(
            "smsworker_send_retries_total",
            "Sends to Twilio that failed transiently and were tried again.",
            registry=self.registry,
        )
        self.send_duration = Histogram(
            "smsworker_send_duration_seconds",
            "Time one request to Twilio's Messages API took.",
            registry=self.registry,
        )
        self.reconnects = Counter(
            "smsworker_reconnects_total",
            "Times the worker reconnected to the database after losing it.",
            registry=self.registry,
        )
        self.build_info = Gauge(
            "smsworker_build_info",
            "Always 1; the version label says which smsworker is running.",
            ["version"],
            registry=self.registry,
        )
        self.build_info.labels(version=__version__).set(1)

    def serve(self, port: int, address: str) -> tuple[WSGIServer, threading.Thread]:
        """Serve the metrics over HTTP in a background thread."""
        return start_http_server(port, addr=address, registry=self.registry)


class SyncMetrics:
    """The metrics of `smsworker sync`, in their own registry or the worker's."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.last_success = Gauge(
            "smsworker_sync_last_success_timestamp_seconds",
            "Unix time of the end of the last sync poll that listed its whole window.",
            registry=self.registry,
        )
        self.fetched = Counter(
            "smsworker_sync_messages_fetched_total",
            "Messages read from Twilio's message list.",
            registry=self.registry,
        )
        self.written = Counter(
            "smsworker_sync_messages_written_total",
            "Changes the sync made to twilio.message, by change (inserted, updated, deleted).",
            ["change"],
            registry=self.registry,
        )
        self.errors = Counter(
            "smsworker_sync_errors_total",
            "Sync failures by kind: twilio_retried (a page request retried), twilio and"
            " database (a poll failed), unexpected.",
            ["kind"],
            registry=self.registry,
        )
        self.poll_duration = Histogram(
            "smsworker_sync_poll_duration_seconds",
            "Time one sync poll took, every page of its run included.",
            registry=self.registry,
        )
        # Every series exists from the start, at 0, so rate() counts the first change.
        for change in ("inserted", "updated", "deleted"):
            self.written.labels(change=change)
        for kind in ("twilio_retried", "twilio", "database", "unexpected"):
            self.errors.labels(kind=kind)
        self.active = Gauge(
            "smsworker_sync_active",
            "1 while this process syncs its account, 0 while another process does.",
            registry=self.registry,
        )

    def serve(self, port: int, address: str) -> tuple[WSGIServer, threading.Thread]:
        """Serve the metrics over HTTP in a background thread."""
        return start_http_server(port, addr=address, registry=self.registry)
