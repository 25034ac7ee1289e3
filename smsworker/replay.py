"""`smsworker replay`: handle the inbound messages of a time window again.

A message whose effects are recorded is skipped, and a dead letter is
retried, so a replay fills gaps and can run any number of times, also while
a worker runs. It never moves the worker's cursor.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from smsworker import bot, db, queries, todo
from smsworker.commands import parse
from smsworker.deadletters import RetryResult, retry_one
from smsworker.handling import DEAD_LETTER_OUTCOME, MessageHandler

# Messages read and handled per transaction.
REPLAY_BATCH_SIZE = 500


@dataclass(frozen=True)
class Candidate:
    """A message in the window and the outcome recorded for it (None: not handled)."""

    message: todo.InboundMessage
    outcome: str | None

    @property
    def kind(self) -> str:
        """Return what a replay does with the message: handle, retry or skip."""
        if self.outcome is None:
            return "handle"
        if self.outcome == DEAD_LETTER_OUTCOME:
            return "retry"
        return "skip"

    @property
    def action(self) -> str:
        """Describe what a replay does with the message, for --dry-run."""
        if self.kind == "retry":
            return "retry dead letter"
        if self.kind == "skip":
            return f"skip, handled before ({self.outcome})"
        return self.kind

    @property
    def command(self) -> str:
        return parse(self.message.body).command.value


@dataclass
class ReplaySummary:
    """How many messages of the window a replay handled, skipped and failed."""

    handled: int = 0
    skipped: int = 0
    failed: int = 0


def count_messages(database_url: str, cursor_name: str, since: datetime, until: datetime) -> int:
    """Return how many inbound messages the window holds."""
    with db.connect(database_url, autocommit=True) as conn, db.database_errors():
        db.check_schema(conn, cursor_name)
        params = {"cursor": cursor_name, "since": since, "until": until}
        row = conn.execute(queries.REPLAY_COUNT, params).fetchone()
    return int(row[0]) if row else 0


def list_candidates(
    database_url: str, cursor_name: str, since: datetime, until: datetime
) -> Iterator[Candidate]:
    """Yield the window's messages in order, with what a replay would do with each."""
    with db.connect(database_url, autocommit=True) as conn, db.database_errors():
        db.check_schema(conn, cursor_name)
        for page in _pages(conn, cursor_name, since, until):
            yield from page


def replay(
    database_url: str,
    *,
    cursor_name: str,
    since: datetime,
    until: datetime,
    max_attempts: int,
    mode: bot.Mode,
    on_progress: Callable[[int], None] = lambda count: None,
) -> ReplaySummary:
    """Handle the window's messages in order; return what was handled, skipped and failed."""
    summary = ReplaySummary()
    # Without a cursor name the handler never moves the worker's cursor.
    handler = MessageHandler(cursor_name=None, max_attempts=max_attempts, mode=mode)
    with db.connect(database_url, autocommit=True) as conn, db.database_errors():
        db.check_schema(conn, cursor_name)
        for page in _pages(conn, cursor_name, since, until):
            _replay_page(conn, handler, page, summary)
            on_progress(len(page))
    return summary


def _replay_page(
    conn: db.Connection, handler: MessageHandler, page: list[Candidate], summary: ReplaySummary
) -> None:
    """Handle a page in order: runs of unhandled messages in one batch, dead letters alone."""
    run: list[todo.InboundMessage] = []

    def handle_run() -> None:
        if not run:
            return
        done = handler.handle_batch(conn, run)
        failed = sum(handled.outcome == DEAD_LETTER_OUTCOME for handled in done)
        summary.failed += failed
        summary.handled += len(done) - failed
        # Handled by a worker between the page's query and now.
        summary.skipped += len(run) - len(done)
        run.clear()

    for candidate in page:
        if candidate.outcome is None:
            run.append(candidate.message)
            continue
        handle_run()
        if candidate.outcome != DEAD_LETTER_OUTCOME:
            summary.skipped += 1
            continue
        result = retry_one(conn, handler, candidate.message.id)
        if result is RetryResult.HANDLED:
            summary.handled += 1
        elif result is RetryResult.FAILED_AGAIN:
            summary.failed += 1
        else:
            summary.skipped += 1
    handle_run()


def _pages(
    conn: db.Connection, cursor_name: str, since: datetime, until: datetime
) -> Iterator[list[Candidate]]:
    after_date, after_id = since, ""
    while True:
        rows = conn.execute(
            queries.REPLAY_CANDIDATES,
            {
                "cursor": cursor_name,
                "after_date": after_date,
                "after_id": after_id,
                "until": until,
                "limit": REPLAY_BATCH_SIZE,
            },
        ).fetchall()
        if not rows:
            return
        yield [Candidate(todo.InboundMessage(*row[:5]), row[5]) for row in rows]
        if len(rows) < REPLAY_BATCH_SIZE:
            return
        after_date, after_id = rows[-1][1], rows[-1][0]
