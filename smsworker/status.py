"""`smsworker status`: the worker's health, read from the database alone."""

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from smsworker import db, queries


@dataclass(frozen=True)
class ActiveWorker:
    """The database connection that has the active role's lock."""

    backend_pid: int
    application_name: str
    client_address: str | None
    connected_at: datetime


@dataclass(frozen=True)
class Status:
    """The cursor position and the work waiting for the worker."""

    cursor_date_created: datetime | None
    cursor_message_id: str
    lag_s: float
    backlog: int
    outbox_pending: int
    outbox_failed: int
    dead_letters: int
    active_worker: ActiveWorker | None

    def to_json(self) -> dict[str, Any]:
        """Return the status as JSON-ready values: ISO 8601 times, seconds as numbers."""
        values = asdict(self)
        values["lag_seconds"] = round(values.pop("lag_s"), 3)
        for key, value in list(values.items()):
            if isinstance(value, datetime):
                values[key] = value.isoformat()
        worker = values["active_worker"]
        if worker is not None:
            worker["connected_at"] = worker["connected_at"].isoformat()
        return values


@dataclass(frozen=True)
class Stats:
    """The figures the worker's gauges and `smsworker status` share."""

    cursor_timestamp: float | None
    backlog: int
    lag_s: float
    outbox_pending: int
    dead_letters: int


def read_stats(conn: db.Connection, cursor_name: str) -> Stats | None:
    """Run the STATS query; None when the cursor does not exist."""
    row = conn.execute(queries.STATS, {"cursor": cursor_name}).fetchone()
    if row is None:
        return None
    cursor_epoch, backlog, lag_s, outbox_pending, dead_letters = row
    # The cursor starts at -infinity, before the first message.
    finite = cursor_epoch is not None and math.isfinite(cursor_epoch)
    return Stats(
        cursor_timestamp=float(cursor_epoch) if finite else None,
        backlog=int(backlog),
        lag_s=max(0.0, float(lag_s)),
        outbox_pending=int(outbox_pending),
        dead_letters=int(dead_letters),
    )


def read_status(database_url: str, cursor_name: str) -> Status:
    """Read the status in one read-only transaction; no worker needs to run."""
    params = {"cursor": cursor_name}
    with (
        db.connect(database_url, application_name="smsworker-status") as conn,
        db.database_errors(),
    ):
        conn.read_only = True
        db.check_schema(conn, cursor_name)
        stats = read_stats(conn, cursor_name)
        cursor = conn.execute(queries.SHOW_CURSOR, params).fetchone()
        failed = conn.execute(queries.COUNT_FAILED_REPLIES).fetchone()
        worker = conn.execute(queries.ACTIVE_WORKER, params).fetchone()
    assert stats is not None
    assert cursor is not None
    assert failed is not None
    cursor_date_created = None
    if stats.cursor_timestamp is not None:
        cursor_date_created = datetime.fromtimestamp(stats.cursor_timestamp, UTC)
    return Status(
        cursor_date_created=cursor_date_created,
        cursor_message_id=cursor[1],
        lag_s=stats.lag_s,
        backlog=stats.backlog,
        outbox_pending=stats.outbox_pending,
        outbox_failed=int(failed[0]),
        dead_letters=stats.dead_letters,
        active_worker=ActiveWorker(*worker) if worker is not None else None,
    )


def format_status(status: Status) -> str:
    """Render the status as a two-column table for a terminal."""
    if status.cursor_date_created is None:
        cursor = "before the first message"
    else:
        cursor = (
            f"{status.cursor_date_created:%Y-%m-%d %H:%M:%S} UTC, "
            f"message {status.cursor_message_id}"
        )
    worker = status.active_worker
    if worker is None:
        active = "none"
    else:
        active = (
            f"{worker.application_name} (server pid {worker.backend_pid}, "
            f"from {worker.client_address or 'a local socket'}, "
            f"connected {worker.connected_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC)"
        )
    rows = [
        ("Cursor", cursor),
        ("Lag", f"{status.lag_s:.1f} s"),
        ("Backlog", f"{status.backlog} message{'s' if status.backlog != 1 else ''}"),
        ("Outbox", f"{status.outbox_pending} pending, {status.outbox_failed} failed"),
        ("Dead letters", f"{status.dead_letters} not retried"),
        ("Active worker", active),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
