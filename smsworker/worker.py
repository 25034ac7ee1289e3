"""The worker loop: catch up from the cursor, then handle what notifications announce.

The listening connection issues LISTEN before the catch-up query runs, so a
row committed at any moment is either found by that query or announced
afterwards. Notifications only wake the worker: what to handle always comes
from a query, and the handled_message table decides whether a message was
handled already.
"""

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from smsworker import bot, db, queries, status, todo
from smsworker.errors import DatabaseUnavailable
from smsworker.handling import MessageHandler
from smsworker.metrics import Metrics
from smsworker.outbox import ReplyDelivery
from smsworker.sender import Sender
from smsworker.settings import Settings

logger = logging.getLogger(__name__)

# Maximum time the loop waits for a notification before it checks for a stop
# request.
WAIT_SLICE_S = 0.5
# How long a stop waits for senders to finish the reply in hand. A sender
# still waiting on Twilio then is abandoned: its reply stays pending and is
# sent again after a restart, possibly twice if Twilio did receive it.
SHUTDOWN_GRACE_S = 5.0
# How often a standby tries to take over the active role.
STANDBY_POLL_S = 1.0
LISTENER_NAME = "smsworker-listener"
# How often the metrics read from the database are refreshed.
STATS_INTERVAL_S = 1.0
STATS_CONNECTION_NAME = "smsworker-stats"
# Backoff between reconnects to the database.
RECONNECT_INITIAL_S = 0.5
RECONNECT_MAX_S = 10.0


class Worker:
    """Handles inbound messages until `stop_event` is set."""

    def __init__(
        self,
        settings: Settings,
        *,
        sender_factory: Callable[[], Sender],
        metrics: Metrics | None = None,
        stop_event: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.stop_event = stop_event or threading.Event()
        self.sender_description = sender_factory().description
        self.delivery = ReplyDelivery(
            database_url=settings.database_url,
            sender_factory=sender_factory,
            metrics=self.metrics,
            concurrency=settings.send_concurrency,
            retry_budget_s=settings.send_retry_budget_s,
            stop_event=self.stop_event,
        )
        self.handler = MessageHandler(
            cursor_name=settings.cursor_name,
            max_attempts=settings.handler_max_attempts,
            metrics=self.metrics,
            stop_event=self.stop_event,
            mode=bot.Mode(open_list=settings.open_list, region=settings.default_region),
        )
        self._stats_thread = threading.Thread(
            target=self._refresh_stats_until_stopped, name="smsworker-stats", daemon=True
        )

    def stop(self) -> None:
        """Ask the worker to finish the message in hand and return from run()."""
        self.stop_event.set()
        self.delivery.wake()

    def run(self) -> None:
        """Handle messages until stopped; reconnect when the database goes away.

        Raises DatabaseUnavailable when the database stays unreachable for
        longer than settings.database_retry_limit_s.
        """
        self._stats_thread.start()
        try:
            self._run_with_reconnects()
        finally:
            self.stop_event.set()
            self.delivery.join(SHUTDOWN_GRACE_S)
        logger.info("smsworker stopped.")

    def _run_with_reconnects(self) -> None:
        delay_s = RECONNECT_INITIAL_S
        unreachable_since: float | None = None

        def connected() -> None:
            nonlocal delay_s, unreachable_since
            delay_s = RECONNECT_INITIAL_S
            unreachable_since = None

        while not self.stop_event.is_set():
            try:
                self._run_connected(on_connected=connected)
                return
            except DatabaseUnavailable as error:
                if self.stop_event.is_set():
                    return
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > self.settings.database_retry_limit_s:
                    raise DatabaseUnavailable(
                        f"the database was unreachable for more than "
                        f"{self.settings.database_retry_limit_s:.0f} s: {error}"
                    ) from error
                self.metrics.reconnects.inc()
                logger.warning("Lost the database, reconnecting in %.1f s: %s", delay_s, error)
                self.stop_event.wait(delay_s)
                delay_s = min(delay_s * 2, RECONNECT_MAX_S)

    def _run_connected(self, on_connected: Callable[[], None]) -> None:
        settings = self.settings
        with (
            db.connect(settings.database_url, autocommit=True) as conn,
            db.database_errors(),
        ):
            on_connected()
            db.check_schema(conn, settings.cursor_name)
            if not self._acquire_active_role(conn):
                return
            # The listener stays in autocommit and never runs a transaction, so
            # it never holds back the server's notification queue.
            with db.connect(
                settings.database_url, autocommit=True, application_name=LISTENER_NAME
            ) as listener:
                listener.execute(f"LISTEN {db.NOTIFY_CHANNEL}")
                self.delivery.start()
                self._log_start(conn)
                self._listen_and_handle(conn, listener)

    def _acquire_active_role(self, conn: db.Connection) -> bool:
        """Wait until this process holds the active role; False when stopped first.

        The role is a session advisory lock on the connection that writes the
        list, so it is released exactly when that connection ends, whether the
        process stopped, died or lost the database.
        """
        waiting = False
        while not self.stop_event.is_set():
            row = conn.execute(queries.TRY_ACTIVE_ROLE, {"cursor": self.settings.cursor_name})
            if row.fetchone() == (True,):
                self._set_role("active")
                if waiting:
                    logger.info("Took over the active role from a stopped worker.")
                return True
            if not waiting:
                self._set_role("standby")
                logger.info("Another worker holds the active role; waiting as a standby.")
                waiting = True
            self.stop_event.wait(STANDBY_POLL_S)
        return False

    def _set_role(self, role: str) -> None:
        for name in ("active", "standby"):
            self.metrics.role.labels(role=name).set(1 if name == role else 0)

    def _listen_and_handle(self, conn: db.Connection, listener: db.Connection) -> None:
        """Catch up, then handle what notifications and periodic polls find."""
        settings = self.settings
        self._catch_up(conn, settings.late_row_window_s)
        next_poll = time.monotonic() + settings.poll_interval_s
        next_rescan = time.monotonic() + settings.late_row_rescan_interval_s
        while not self.stop_event.is_set():
            timeout = min(WAIT_SLICE_S, max(0.0, next_poll - time.monotonic()))
            ids = self._wait_for_notifications(listener, timeout)
            if ids:
                self._handle_notified(conn, ids)
            now = time.monotonic()
            if now >= next_rescan:
                # Searching for late rows checks every row in the window
                # against handled_message, so it runs far less often than
                # the poll. A late row whose notification arrives is handled
                # at once.
                self._catch_up(conn, settings.late_row_window_s)
                next_rescan = now + settings.late_row_rescan_interval_s
                next_poll = time.monotonic() + settings.poll_interval_s
            elif now >= next_poll:
                self._drain(conn, queries.FETCH_AFTER_CURSOR, {})
                next_poll = time.monotonic() + settings.poll_interval_s

    def _log_start(self, conn: db.Connection) -> None:
        row = conn.execute(
            queries.SHOW_CURSOR, {"cursor": self.settings.cursor_name}
        ).fetchone() or ("?", "?")
        logger.info(
            "smsworker started: database %s, cursor at (%s, %s), replies via %s.",
            describe_database(self.settings.database_url),
            row[0],
            row[1] or "-",
            self.sender_description,
        )

    def _wait_for_notifications(self, listener: db.Connection, timeout: float) -> list[str]:
        """Wait up to `timeout` seconds for notifications; return the ids they name."""
        ids = [n.payload for n in listener.notifies(timeout=timeout, stop_after=1)]
        if ids:
            # Take whatever else is already queued without waiting.
            ids.extend(n.payload for n in listener.notifies(timeout=0))
        return ids

    def _catch_up(self, conn: db.Connection, late_row_window_s: float) -> None:
        """Handle rows that arrived late behind the cursor, then every row after it.

        Late rows go first: they all sort before the rows after the cursor, so
        messages visible together are handled in (date_created, id) order.
        """
        self._drain(conn, queries.FETCH_LATE_ROWS, {"window_s": late_row_window_s})
        self._drain(conn, queries.FETCH_AFTER_CURSOR, {})

    def _handle_notified(self, conn: db.Connection, ids: list[str]) -> None:
        """Handle the late rows among the notified ids, then every row after the cursor."""
        late_candidates = [id_ for id_ in set(ids) if id_]
        if late_candidates:
            self._drain(conn, queries.FETCH_LATE_BY_ID, {"ids": late_candidates})
        self._drain(conn, queries.FETCH_AFTER_CURSOR, {})

    def _drain(self, conn: db.Connection, query: str, params: dict[str, Any]) -> None:
        """Handle batches from `query` until it returns a short batch or the worker stops.

        Reply sending pauses after the first full batch, until the backlog is
        gone.
        """
        limit = self.settings.batch_size
        paused = False
        try:
            while not self.stop_event.is_set():
                rows = conn.execute(
                    query, {**params, "cursor": self.settings.cursor_name, "limit": limit}
                ).fetchall()
                self.metrics.last_poll.set_to_current_time()
                messages = [todo.InboundMessage(*row) for row in rows]
                done = self.handler.handle_batch(conn, messages)
                replies = sum(handled.replies for handled in done)
                if replies and not paused:
                    self.delivery.wake(replies)
                if len(rows) < limit:
                    break
                if not paused:
                    self.delivery.pause()
                    paused = True
        finally:
            if paused:
                self.delivery.resume()

    def _refresh_stats_until_stopped(self) -> None:
        """Refresh the gauges read from the database, on a connection of their own.

        A thread of its own keeps lag and backlog current while the handler is
        stuck or this process is a standby.
        """
        conn: db.Connection | None = None
        last_error = ""
        while not self.stop_event.wait(STATS_INTERVAL_S):
            try:
                if conn is None or conn.closed:
                    conn = db.connect(
                        self.settings.database_url,
                        autocommit=True,
                        application_name=STATS_CONNECTION_NAME,
                    )
                with db.database_errors():
                    self._refresh_stats(conn)
                last_error = ""
            except Exception as error:
                # The worker's own loop reports outages; log each new error once.
                if str(error) != last_error:
                    logger.warning("Could not refresh the metrics: %s", error)
                last_error = str(error)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def _refresh_stats(self, conn: db.Connection) -> None:
        stats = status.read_stats(conn, self.settings.cursor_name)
        if stats is None:
            return
        if stats.cursor_timestamp is not None:
            self.metrics.cursor_timestamp.set(stats.cursor_timestamp)
        self.metrics.backlog.set(stats.backlog)
        self.metrics.lag.set(stats.lag_s)
        self.metrics.outbox_pending.set(stats.outbox_pending)
        self.metrics.dead_letters_pending.set(stats.dead_letters)


def describe_database(database_url: str) -> str:
    """Describe a database for logs: host, port and name, never the password."""
    params = conninfo_to_dict(database_url)
    name = params.get("dbname") or params.get("user") or "?"
    host = str(params.get("host") or "localhost")
    if host.startswith("/"):
        return f"{name} on the Unix socket in {host}"
    port = params.get("port") or "5432"
    return f"{name} on {host}:{port}"
