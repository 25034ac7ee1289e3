"""Applying inbound messages exactly once, a batch at a time.

A batch is applied with a few statements in all. When a message in it fails,
the batch runs again one message at a time, each in a savepoint, retried, and
dead-lettered when it keeps failing. The worker and the `dead-letters retry`
command both handle messages through MessageHandler, so both give the same
guarantee: a message's handled_message row, whose primary key allows one,
commits in the same transaction as its effects.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_not_exception_type,
    stop_after_attempt,
    stop_when_event_set,
    wait_exponential_jitter,
)

from smsworker import bot, db, queries, todo
from smsworker.commands import ParsedMessage, split_reply
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


class ReplyRows:
    """The outbox rows of a batch's replies, to be queued in one statement."""

    def __init__(self) -> None:
        self._rows: list[tuple[str, int, str, str, str]] = []
        # The outbox numbers every message's texts from 1, across recipients.
        self._parts: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self._rows)

    def add(self, message: todo.InboundMessage, result: todo.Result) -> int:
        """Queue a result's texts, split into SMS parts; return the number of parts.

        The reply goes back to the sender and the other texts to their
        numbers, all from the number the message was sent to.
        """
        texts = [(message.from_number, result.reply)] if result.reply is not None else []
        texts.extend(result.others)
        if not texts:
            return 0
        if not message.from_number or not message.to_number:
            logger.warning(
                "Message %s has no sender or recipient number; its reply is dropped.",
                message.id,
            )
            return 0
        count = 0
        for to_number, text in texts:
            for body in split_reply(text):
                part = self._parts.get(message.id, 0) + 1
                self._parts[message.id] = part
                self._rows.append((message.id, part, str(to_number), message.to_number, body))
                count += 1
        return count

    def params(self) -> dict[str, list[Any]]:
        columns = ("message_ids", "parts", "to_numbers", "from_numbers", "bodies")
        return {name: [row[i] for row in self._rows] for i, name in enumerate(columns)}


class MessageHandler:
    """Applies inbound messages to the to-do list inside the caller's connection."""

    def __init__(
        self,
        *,
        cursor_name: str | None,
        max_attempts: int,
        metrics: Metrics | None = None,
        stop_event: threading.Event | None = None,
        mode: bot.Mode | None = None,
    ) -> None:
        """Without a cursor name, handled messages never move a cursor.

        Operator commands pass no metrics and no stop event: theirs are
        private to the command and never set. The mode defaults to private
        lists.
        """
        self.mode = mode or bot.Mode()
        self.cursor_name = cursor_name
        self.max_attempts = max_attempts
        self.metrics = metrics or Metrics()
        self.stop_event = stop_event or threading.Event()

    def handle_batch(
        self, conn: db.Connection, messages: Sequence[todo.InboundMessage]
    ) -> list[Handled]:
        """Apply messages in one transaction and return those handled now.

        Messages handled before are skipped. The batch is first applied as a
        whole: one lookup of the messages handled before, then one statement
        for each kind of write. If any message fails, or another process
        handled one of them meanwhile, that attempt rolls back whole, and the
        batch runs again with a savepoint, retries and a dead letter for each
        message. Stops early, committing what is done, when the stop event is
        set.
        """
        if not messages:
            return []
        try:
            with db.database_errors(), conn.transaction():
                done = self._apply_together(conn, messages)
        except DatabaseUnavailable:
            raise
        except Exception as error:
            logger.warning(
                "A batch of %d messages failed (%r); handling them one at a time.",
                len(messages),
                error,
            )
            with db.database_errors(), conn.transaction():
                done = self._apply_one_by_one(conn, messages)

        # date_created is UTC without a time zone.
        now = datetime.now(UTC).replace(tzinfo=None)
        for handled in done:
            self._report(handled, now)
        return done

    def _apply_together(
        self, conn: db.Connection, messages: Sequence[todo.InboundMessage]
    ) -> list[Handled]:
        """Apply a batch with a few statements in all, not a few per message."""
        started = time.monotonic()
        ids = [message.id for message in messages]
        handled_before = {row[0] for row in conn.execute(queries.HANDLED_AMONG, {"ids": ids})}
        lists = todo.Lists(conn)
        applied: list[tuple[todo.InboundMessage, str, str, int]] = []
        replies = ReplyRows()
        last: todo.InboundMessage | None = None
        for message in self._until_stopped(messages):
            last = message
            if message.id in handled_before:
                logger.debug("Message %s was handled before; skipped.", message.id)
                continue
            parsed = bot.parse_for(message, self.mode)
            result = bot.handle(lists, message, parsed, self.mode)
            parts = replies.add(message, result)
            applied.append((message, parsed.command.value, result.outcome, parts))
        with conn.pipeline():
            lists.flush()
            if replies:
                conn.execute(queries.QUEUE_REPLIES, replies.params())
            if applied:
                conn.execute(
                    queries.RECORD_HANDLED,
                    {
                        "message_ids": [message.id for message, *_ in applied],
                        "dates": [message.date_created for message, *_ in applied],
                        "commands": [command for _, command, _, _ in applied],
                        "outcomes": [outcome for _, _, outcome, _ in applied],
                    },
                )
            self._advance_cursor(conn, last)
        # Messages applied together share the batch's time equally.
        share_s = (time.monotonic() - started) / max(1, len(applied))
        return [
            Handled(message, command, outcome, share_s, parts)
            for message, command, outcome, parts in applied
        ]

    def _apply_one_by_one(
        self, conn: db.Connection, messages: Sequence[todo.InboundMessage]
    ) -> list[Handled]:
        """Apply a batch one message at a time, each in its own savepoint."""
        done: list[Handled] = []
        last: todo.InboundMessage | None = None
        for message in self._until_stopped(messages):
            try:
                handled = self.handle_one(conn, message)
            except Interrupted:
                # Stopped while retrying a failing handler: the message
                # stays unhandled, and the cursor stays before it.
                break
            if handled is not None:
                done.append(handled)
            last = message
        self._advance_cursor(conn, last)
        return done

    def _until_stopped(
        self, messages: Sequence[todo.InboundMessage]
    ) -> Iterator[todo.InboundMessage]:
        """Yield the messages, stopping early once the stop event is set."""
        for position, message in enumerate(messages):
            if position and self.stop_event.is_set():
                return
            yield message

    def _advance_cursor(self, conn: db.Connection, last: todo.InboundMessage | None) -> None:
        """Move the cursor past `last`; a handler without a cursor name leaves it alone."""
        if last is not None and self.cursor_name is not None:
            conn.execute(
                queries.ADVANCE_CURSOR,
                {
                    "cursor": self.cursor_name,
                    "date_created": last.date_created,
                    "message_id": last.id,
                },
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
        lists = todo.Lists(conn)
        result = bot.handle(lists, message, parsed, self.mode)
        lists.flush()
        replies = ReplyRows()
        parts = replies.add(message, result)
        if replies:
            conn.execute(queries.QUEUE_REPLIES, replies.params())
        conn.execute(
            queries.RECORD_OUTCOME,
            {
                "message_id": message.id,
                "outcome": result.outcome,
                "error": None,
                "attempts": attempts,
            },
        )
        return result, parts

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
            parsed = bot.parse_for(message, self.mode)
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

    def _report(self, handled: Handled, now: datetime) -> None:
        self.metrics.messages_handled.labels(command=handled.command, outcome=handled.outcome).inc()
        self.metrics.handler_duration.observe(handled.duration_s)
        created = handled.message.date_created
        if isinstance(created, datetime):
            self.metrics.message_latency.observe(max(0.0, (now - created).total_seconds()))
        logger.info(
            "Handled message %s from %s: command=%s outcome=%s replies=%d in %.1f ms.",
            handled.message.id,
            mask_phone_number(handled.message.from_number),
            handled.command,
            handled.outcome,
            handled.replies,
            handled.duration_s * 1000,
        )
