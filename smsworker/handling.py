"""Applying inbound messages: one savepoint each, retried, dead-lettered when they keep failing.

The worker and the `dead-letters retry` command both handle messages through
MessageHandler, so both give the same exactly-once guarantee: the
handled_message primary key, claimed in the message's own savepoint.
"""

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
from smsworker.commands import ParsedMessage, parse, split_reply
from smsworker.errors import DatabaseUnavailable
from smsworker.logs import mask_phone_number
from smsworker.metrics import Metrics

logger = logging.getLogger(__name__)

# Backoff between attempts of a failing handler.
HANDLER_RETRY_INITIAL_S = 0.1
HANDLER_RETRY_MAX_S = 2.0
# The handled_message outcome of a message whose handler kept failing.
DEAD_LETTER_OUTCOME = "dead-letter"


@dataclass(frozen=True)
class Handled:
    """One message handled in a batch, reported once the batch commits."""

    message: todo.InboundMessage
    command: str
    outcome: str
    duration_s: float
    replies: int


class Interrupted(Exception):
    """The stop event was set while a failing handler waited for its next attempt."""


class MessageHandler:
    """Applies inbound messages to the to-do list inside the caller's connection."""

    def __init__(
        self,
        *,
        cursor_name: str,
        max_attempts: int,
        metrics: Metrics,
        stop_event: threading.Event,
    ) -> None:
        self.cursor_name = cursor_name
        self.max_attempts = max_attempts
        self.metrics = metrics
        self.stop_event = stop_event

    def handle_batch(
        self, conn: db.Connection, messages: Sequence[todo.InboundMessage]
    ) -> list[Handled]:
        """Apply messages in one transaction and return those handled now.

        Messages handled before are skipped. The batch first runs without
        savepoints, which saves two round trips a message. If any message
        fails, that attempt rolls back whole, and the batch runs again with a
        savepoint, retries and a dead letter for each message. Stops early,
        committing what is done, when the stop event is set.
        """
        if not messages:
            return []
        try:
            done = self._apply_batch(conn, messages, self._apply_without_savepoint)
        except DatabaseUnavailable:
            raise
        except Exception as error:
            logger.warning(
                "A message in a batch of %d failed (%r); handling them one at a time.",
                len(messages),
                error,
            )
            done = self._apply_batch(conn, messages, self.handle_one)

        for handled in done:
            self._report(handled)
        return done

    def _apply_batch(
        self,
        conn: db.Connection,
        messages: Sequence[todo.InboundMessage],
        apply: Callable[[db.Connection, todo.InboundMessage], Handled | None],
    ) -> list[Handled]:
        done: list[Handled] = []
        last: todo.InboundMessage | None = None
        with db.database_errors(), conn.transaction():
            for message in messages:
                if last is not None and self.stop_event.is_set():
                    break
                try:
                    handled = apply(conn, message)
                except Interrupted:
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
                        "cursor": self.cursor_name,
                        "date_created": last.date_created,
                        "message_id": last.id,
                    },
                )
        return done

    def _apply_without_savepoint(
        self, conn: db.Connection, message: todo.InboundMessage
    ) -> Handled | None:
        started = time.monotonic()
        parsed = parse(message.body)
        outcome = self._apply(conn, message, parsed, attempts=1)
        if outcome is None:
            logger.debug("Message %s was handled before; skipped.", message.id)
            return None
        result, replies = outcome
        return Handled(
            message, parsed.command.value, result.outcome, time.monotonic() - started, replies
        )

    def _apply(
        self,
        conn: db.Connection,
        message: todo.InboundMessage,
        parsed: ParsedMessage,
        *,
        attempts: int,
    ) -> tuple[todo.Result, int] | None:
        """Claim one message and apply it; None when it was handled before."""
        params = {
            "message_id": message.id,
            "date_created": message.date_created,
            "command": parsed.command.value,
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

    def handle_one(self, conn: db.Connection, message: todo.InboundMessage) -> Handled | None:
        """Apply one message in a savepoint, retrying a failing handler.

        Returns None when the message was handled before. A handler that keeps
        failing goes to the dead letters, so the message is not retried
        forever and the stream goes on. Raises Interrupted when the stop event
        is set between two attempts.
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
                return self._apply(conn, message, parsed, attempts=attempts)

        retrying = Retrying(
            retry=retry_if_not_exception_type(DatabaseUnavailable),
            stop=stop_after_attempt(self.max_attempts) | stop_when_event_set(self.stop_event),
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
            if self.stop_event.is_set() and attempts < self.max_attempts:
                raise Interrupted from error
            cause = error.last_attempt.exception()
            return self._record_failure(conn, message, command, attempts, cause, started)

        if outcome is None:
            logger.debug("Message %s was handled before; skipped.", message.id)
            return None
        result, replies = outcome
        return Handled(
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
    ) -> Handled:
        params = {
            "message_id": message.id,
            "date_created": message.date_created,
            "command": command,
            "error": repr(error),
            "attempts": attempts,
        }
        with db.database_errors(), conn.transaction():
            conn.execute(queries.RECORD_FAILURE, params)
            conn.execute(queries.RECORD_DEAD_LETTER, params)
        self.metrics.dead_letters.inc()
        logger.error(
            "Giving up on message %s after %d attempts; moved to the dead letters: %r",
            message.id,
            attempts,
            error,
        )
        return Handled(message, command, DEAD_LETTER_OUTCOME, time.monotonic() - started, 0)

    def _report(self, handled: Handled) -> None:
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
