"""Operator commands on dead letters: messages whose handler kept failing."""

import enum
import logging
from dataclasses import dataclass, field
from datetime import datetime

from smsworker import bot, db, queries, todo
from smsworker.handling import DEAD_LETTER_OUTCOME, MessageHandler
from smsworker.settings import DEFAULT_CURSOR_NAME

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadLetter:
    """A message that was moved to the dead letters, with why and when."""

    message_id: str
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime
    retried_at: datetime | None
    error: str


@dataclass
class RetrySummary:
    """The outcome of `retry_dead_letters` for each message id it was given."""

    handled: list[str] = field(default_factory=list)
    failed_again: list[str] = field(default_factory=list)
    not_dead: list[str] = field(default_factory=list)


def list_dead_letters(database_url: str, *, include_retried: bool = False) -> list[DeadLetter]:
    """Return the dead letters, oldest failure first."""
    with db.connect(database_url, autocommit=True) as conn, db.database_errors():
        db.check_schema(conn, DEFAULT_CURSOR_NAME)
        rows = conn.execute(queries.LIST_DEAD_LETTERS, {"include_retried": include_retried})
        return [DeadLetter(*row) for row in rows]


def retry_dead_letters(
    database_url: str,
    message_ids: list[str],
    *,
    cursor_name: str,
    max_attempts: int,
    mode: bot.Mode,
) -> RetrySummary:
    """Handle dead-lettered messages again, each in a transaction of its own.

    A message handled in the meantime (by an earlier retry, say) is left
    alone, so running this twice applies nothing twice. Replies go to the
    outbox, where a running worker sends them.
    """
    summary = RetrySummary()
    handler = MessageHandler(cursor_name=cursor_name, max_attempts=max_attempts, mode=mode)
    with db.connect(database_url, autocommit=True) as conn, db.database_errors():
        db.check_schema(conn, cursor_name)
        for message_id in message_ids:
            result = retry_one(conn, handler, message_id)
            if result is RetryResult.HANDLED:
                summary.handled.append(message_id)
            elif result is RetryResult.FAILED_AGAIN:
                summary.failed_again.append(message_id)
            else:
                summary.not_dead.append(message_id)
    return summary


class RetryResult(enum.Enum):
    """The outcome of handling one dead letter again."""

    HANDLED = "handled"
    FAILED_AGAIN = "failed again"
    NOT_DEAD = "not a dead letter"


def retry_one(conn: db.Connection, handler: MessageHandler, message_id: str) -> RetryResult:
    """Handle one dead-lettered message again, in a transaction of its own."""
    with conn.transaction():
        row = conn.execute(queries.LOCK_DEAD_LETTER, {"message_id": message_id}).fetchone()
        if row is None:
            return RetryResult.NOT_DEAD
        conn.execute(queries.RELEASE_DEAD_LETTER, {"message_id": message_id})
        done = handler.handle_batch(conn, [todo.InboundMessage(*row)])
        if not done:
            return RetryResult.NOT_DEAD
        if done[0].outcome == DEAD_LETTER_OUTCOME:
            return RetryResult.FAILED_AGAIN
        conn.execute(queries.MARK_DEAD_LETTER_RETRIED, {"message_id": message_id})
        return RetryResult.HANDLED
