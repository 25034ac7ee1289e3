"""The to-do list: applies one parsed message to the database.

The caller runs this inside the message's transaction, so the list change and
the reply queued here commit together with the cursor advance, or not at all.
"""

from dataclasses import dataclass

from smsworker import queries
from smsworker.commands import (
    HELP_TEXT,
    MAX_LIST_ITEMS,
    Command,
    ParsedMessage,
    format_list,
    preview,
)
from smsworker.db import Connection


@dataclass(frozen=True)
class InboundMessage:
    """The columns of a twilio.message row that the worker reads."""

    id: str
    date_created: object
    body: str | None
    from_number: str | None
    to_number: str | None


@dataclass(frozen=True)
class Result:
    """The outcome of handling a message, and the reply to send (None for no reply)."""

    outcome: str
    reply: str | None


def apply(conn: Connection, message: InboundMessage, parsed: ParsedMessage) -> Result:
    """Apply one command to the list and return the reply it calls for."""
    match parsed.command:
        case Command.ADD:
            return _add(conn, message, parsed.text)
        case Command.LIST:
            return Result("listed", format_list(_first_items(conn), _count_items(conn)))
        case Command.DELETE:
            return _delete(conn, parsed)
        case Command.HELP:
            return Result("helped", HELP_TEXT)
        case Command.OPT_OUT | Command.OPT_IN:
            # Twilio replies to these keywords itself and blocks or unblocks the
            # sender; a reply from us to an opted-out number would fail (21610).
            return Result("ignored", None)
        case Command.EMPTY:
            return Result("ignored", None)
    raise AssertionError(f"unhandled command {parsed.command}")


def _add(conn: Connection, message: InboundMessage, text: str) -> Result:
    row = conn.execute(queries.ADD_ITEM, {"message_id": message.id, "body": text}).fetchone()
    number = int(row[0]) if row else 0
    return Result("added", f"Added {number}. {preview(text)}")


def _delete(conn: Connection, parsed: ParsedMessage) -> Result:
    if parsed.error is not None or parsed.position is None:
        return Result("invalid", parsed.error)

    row = conn.execute(queries.DELETE_ITEM_AT, {"offset": parsed.position - 1}).fetchone()
    if row is None:
        count = _count_items(conn)
        if count == 0:
            return Result("invalid", f"There is no item {parsed.position}: the list is empty.")
        return Result(
            "invalid",
            f"There is no item {parsed.position}: the list has {count} "
            f"item{'s' if count != 1 else ''}. Send ls to see them.",
        )
    return Result("deleted", f"Deleted {parsed.position}. {preview(row[0])}")


def _first_items(conn: Connection) -> list[str]:
    rows = conn.execute(queries.LIST_ITEMS, {"limit": MAX_LIST_ITEMS})
    return [body for (body,) in rows]


def _count_items(conn: Connection) -> int:
    row = conn.execute(queries.COUNT_ITEMS).fetchone()
    return int(row[0]) if row else 0
