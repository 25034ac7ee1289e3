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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.conninfo import conninfo_to_dict
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_not_exception_type,
    stop_after_attempt,
    stop_when_event_set,
    wait_exponential_jitter,
)

from smsworker import db, queries, todo
from smsworker.commands import parse, split_reply
from smsworker.errors import DatabaseUnavailable
from smsworker.logs import mask_phone_number
from smsworker.metrics import Metrics
from smsworker.outbox import ReplyDelivery
from smsworker.sender import Sender
from smsworker.settings import Settings

logger = logging.getLogger(__name__)

# Maximum time the loop waits for a notification before it checks for a stop
# request.
WAIT_SLICE_S = 0.5
# Metrics that need a query are refreshed at most this often.
STATS_INTERVAL_S = 1.0
# Backoff between reconnects to the database.
RECONNECT_INITIAL_S = 0.5
RECONNECT_MAX_S = 10.0
# Backoff between attempts of a failing handler.
HANDLER_RETRY_INITIAL_S = 0.1
HANDLER_RETRY_MAX_S = 2.0


@dataclass(frozen=True)
class _Handled:
    """One message handled in a batch, reported once the batch commits."""

    message: todo.InboundMessage
    command: str
    outcome: str
    duration_s: float
    replies: int


class _Interrupted(Exception):
    """The worker was stopped while a failing handler waited for its next attempt."""


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
        self._stats_due = 0.0

    def stop(self) -> None:
        """Ask the worker to finish the message in hand and return from run()."""
        self.stop_event.set()
        self.delivery.wake()

    def run(self) -> None:
        """Handle messages until stopped; reconnect when the database goes away.

        Raises DatabaseUnavailable when the database stays unreachable for
        longer than settings.database_retry_limit_s.
        """
        db.check_schema(self.settings.database_url, self.settings.cursor_name)
        self.delivery.start()
        try:
            self._run_with_reconnects()
        finally:
            self.stop_event.set()
            self.delivery.join()
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
            db.connect(settings.database_url, autocommit=True) as listener,
            db.connect(settings.database_url, autocommit=True) as conn,
            db.database_errors(),
        ):
            listener.execute(f"LISTEN {db.NOTIFY_CHANNEL}")
            on_connected()
            self._log_start(conn)

            self._catch_up(conn)
            next_poll = time.monotonic() + settings.poll_interval_s
            while not self.stop_event.is_set():
                timeout = min(WAIT_SLICE_S, max(0.0, next_poll - time.monotonic()))
                ids = self._wait_for_notifications(listener, timeout)
                if ids:
                    self._handle_notified(conn, ids)
                if time.monotonic() >= next_poll:
                    self._catch_up(conn)
                    next_poll = time.monotonic() + settings.poll_interval_s
                self._refresh_stats(conn)

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

    def _catch_up(self, conn: db.Connection) -> None:
        """Handle rows that arrived late behind the cursor, then every row after it.

        Late rows go first: they all sort before the rows after the cursor, so
        messages visible together are handled in (date_created, id) order.
        """
        self._drain(conn, queries.FETCH_LATE_ROWS, {"window_s": self.settings.late_row_window_s})
        self._drain(conn, queries.FETCH_AFTER_CURSOR, {})

    def _handle_notified(self, conn: db.Connection, ids: list[str]) -> None:
        """Handle the late rows among the notified ids, then every row after the cursor."""
        late_candidates = [id_ for id_ in set(ids) if id_]
        if late_candidates:
            self._drain(conn, queries.FETCH_LATE_BY_ID, {"ids": late_candidates})
        self._drain(conn, queries.FETCH_AFTER_CURSOR, {})

    def _drain(self, conn: db.Connection, query: str, params: dict[str, Any]) -> None:
        """Handle batches from `query` until it returns a short batch or the worker stops."""
        limit = self.settings.batch_size
        while not self.stop_event.is_set():
            rows = conn.execute(
                query, {**params, "cursor": self.settings.cursor_name, "limit": limit}
            ).fetchall()
            messages = [todo.InboundMessage(*row) for row in rows]
            self._handle_batch(conn, messages)
            self._refresh_stats(conn)
            if len(rows) < limit:
                break

    def _handle_batch(self, conn: db.Connection, messages: Sequence[todo.InboundMessage]) -> None:
        """Apply messages in one transaction, each in a savepoint of its own."""
        if not messages:
            return
        done: list[_Handled] = []
        last: todo.InboundMessage | None = None
        with conn.transaction():
            for message in messages:
                if last is not None and self.stop_event.is_set():
                    break
                try:
                    handled = self._handle_one(conn, message)
                except _Interrupted:
                    # Stopped while retrying a failing handler: the message
                    # stays unhandled, and the cursor stays before it.
                    break
                if handled is not None:
                    done.append(handled)
                last = message
            if last is not None:
                conn.execute(
                    queries.ADVANCE_CURSOR,
                    {
                        "cursor": self.settings.cursor_name,
                        "date_created": last.date_created,
                        "message_id": last.id,
                    },
                )

        for handled in done:
            self._report(handled)
        if any(handled.replies for handled in done):
            self.delivery.wake()

    def _handle_one(self, conn: db.Connection, message: todo.InboundMessage) -> _Handled | None:
        """Apply one message in a savepoint, retrying a failing handler.

        Returns None when the message was handled before. A handler that keeps
        failing is recorded as failed in handled_message, so the message is
        not retried forever and the stream goes on.
        """
        started = time.monotonic()
        attempts = 0
        command = "unknown"

        def attempt() -> tuple[todo.Result, int] | None:
            nonlocal attempts, command
            attempts += 1
            parsed = parse(message.body)
            command = parsed.command.value
            with db.database_errors(), conn.transaction():
                params = {
                    "message_id": message.id,
                    "date_created": message.date_created,
                    "command": command,
                }
                if conn.execute(queries.CLAIM_MESSAGE, params).fetchone() is None:
                    return None
                result = todo.apply(conn, message, parsed)
                replies = self._queue_replies(conn, message, result.reply)
                conn.execute(
                    queries.RECORD_OUTCOME,
                    {
                        "message_id": message.id,
                        "outcome": result.outcome,
                        "error": None,
                        "attempts": attempts,
                    },
                )
                return result, replies

        retrying = Retrying(
            retry=retry_if_not_exception_type(DatabaseUnavailable),
            stop=stop_after_attempt(self.settings.handler_max_attempts)
            | stop_when_event_set(self.stop_event),
            wait=wait_exponential_jitter(
                multiplier=HANDLER_RETRY_INITIAL_S,
                max=HANDLER_RETRY_MAX_S,
                jitter=HANDLER_RETRY_INITIAL_S,
            ),
            sleep=self._sleep,
            before_sleep=self._log_handler_retry(message),
        )
        try:
            outcome = retrying(attempt)
        except RetryError as error:
            if self.stop_event.is_set() and attempts < self.settings.handler_max_attempts:
                raise _Interrupted from error
            cause = error.last_attempt.exception()
            return self._record_failure(conn, message, command, attempts, cause, started)

        if outcome is None:
            logger.debug("Message %s was handled before; skipped.", message.id)
            return None
        result, replies = outcome
        return _Handled(
            message,
            command,
            result.outcome,
            time.monotonic() - started,
            replies,
        )

    def _sleep(self, seconds: float) -> None:
        """Sleep between retries, waking at once when the worker is stopped."""
        self.stop_event.wait(seconds)

    def _queue_replies(
        self, conn: db.Connection, message: todo.InboundMessage, reply: str | None
    ) -> int:
        if reply is None:
            return 0
        if not message.from_number or not message.to_number:
            logger.warning(
                "Message %s has no sender or recipient number; its reply is dropped.",
                message.id,
            )
            return 0
        parts = split_reply(reply)
        for number, body in enumerate(parts, 1):
            conn.execute(
                queries.QUEUE_REPLY,
                {
                    "message_id": message.id,
                    "part": number,
                    # The reply goes back to the sender, from the number they texted.
                    "to_number": message.from_number,
                    "from_number": message.to_number,
                    "body": body,
                },
            )
        return len(parts)

    def _log_handler_retry(self, message: todo.InboundMessage) -> Callable[[RetryCallState], None]:
        def log(retry_state: RetryCallState) -> None:
            self.metrics.handler_retries.inc()
            outcome = retry_state.outcome
            logger.warning(
                "Handling message %s failed (attempt %d), retrying: %r",
                message.id,
                retry_state.attempt_number,
                outcome.exception() if outcome is not None else None,
            )

        return log

    def _record_failure(
        self,
        conn: db.Connection,
        message: todo.InboundMessage,
        command: str,
        attempts: int,
        error: BaseException | None,
        started: float,
    ) -> _Handled:
        with db.database_errors(), conn.transaction():
            conn.execute(
                queries.RECORD_FAILURE,
                {
                    "message_id": message.id,
                    "date_created": message.date_created,
                    "command": command,
                    "error": repr(error),
                    "attempts": attempts,
                },
            )
        logger.error(
            "Giving up on message %s after %d attempts; recorded as failed: %r",
            message.id,
            attempts,
            error,
        )
        return _Handled(message, command, "failed", time.monotonic() - started, 0)

    def _report(self, handled: _Handled) -> None:
        self.metrics.messages_handled.labels(command=handled.command, outcome=handled.outcome).inc()
        self.metrics.handler_duration.observe(handled.duration_s)
        logger.info(
            "Handled message %s from %s: command=%s outcome=%s replies=%d in %.1f ms.",
            handled.message.id,
            mask_phone_number(handled.message.from_number),
            handled.command,
            handled.outcome,
            handled.replies,
            handled.duration_s * 1000,
        )

    def _refresh_stats(self, conn: db.Connection) -> None:
        now = time.monotonic()
        if now < self._stats_due:
            return
        self._stats_due = now + STATS_INTERVAL_S
        row = conn.execute(queries.BACKLOG, {"cursor": self.settings.cursor_name}).fetchone()
        if row is not None:
            self.metrics.backlog.set(row[0])
            self.metrics.lag.set(max(0.0, float(row[1])))


def describe_database(database_url: str) -> str:
    """Describe a database for logs: host, port and name, never the password."""
    params = conninfo_to_dict(database_url)
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    return f"{params.get('dbname') or params.get('user') or '?'} on {host}:{port}"
