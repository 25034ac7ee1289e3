"""The to-do list: applies one parsed message to the database.

The caller runs this inside the message's transaction, so the list change and
the reply queued here commit together with the cursor advance, or not at all.
"""

from collections.abc import Iterator
from dataclasses import dataclass

from smsworker import queries
from smsworker.commands import (
    HELP_TEXT,
    Command,
    ParsedMessage,
    format_list,
    preview,
)
from smsworker.db import Connection

# Items read by the first query of an `ls`, and the most read by one query.
FIRST_PAGE_SIZE = 100
MAX_PAGE_SIZE = 800


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
    # Texts to other numbers, as (to, body), sent from the number the message
    # was sent to: an invitation's welcome.
    others: tuple[tuple[str, str], ...] = ()


class TodoList:
    """The list as one transaction changes it.

    Additions stay in memory, after the items already stored, until flush()
    writes them all in one statement; reads and deletions see them in place.
    The list size is read once, under a row lock that keeps other writers out
    until the transaction ends, so the numbers in replies match the list.
    """

    def __init__(self, conn: Connection, group_id: int | None = None) -> None:
        """Open a group's list, or the open list when `group_id` is None."""
        self.conn = conn
        self.group_id = group_id
        self._stored: int | None = None
        self._added_ids: list[str] = []
        self._added_bodies: list[str] = []

    def size(self) -> int:
        return self._stored_count() + len(self._added_ids)

    def add(self, message_id: str, body: str) -> int:
        """Add an item and return its number."""
        self._added_ids.append(message_id)
        self._added_bodies.append(body)
        return self.size()

    def items(self) -> Iterator[str]:
        """Yield the items in list order, reading them a page at a time.

        An `ls` reply stops after a few SMS, so a long list is not read whole:
        pages start small and double while the caller keeps reading.
        """
        remaining = self._stored_count()
        after: int | None = None
        page = FIRST_PAGE_SIZE
        while remaining > 0:
            rows = self.conn.execute(
                queries.LIST_ITEMS, {"group_id": self.group_id, "after": after, "limit": page}
            ).fetchall()
            for _, body in rows:
                yield body
            if len(rows) < page:
                break
            after = rows[-1][0]
            remaining -= len(rows)
            page = min(page * 2, MAX_PAGE_SIZE)
        yield from list(self._added_bodies)

    def delete_at(self, position: int) -> str | None:
        """Delete the item at a 1-based position; return its text, None if there is none."""
        stored = self._stored_count()
        if position > stored:
            index = position - stored - 1
            if index >= len(self._added_ids):
                return None
            # Added in this transaction and not written yet: it never will be.
            del self._added_ids[index]
            return self._added_bodies.pop(index)
        row = self.conn.execute(
            queries.DELETE_ITEM_AT, {"group_id": self.group_id, "offset": position - 1}
        ).fetchone()
        if row is None:
            return None
        self._stored = stored - 1
        return str(row[0])

    def flush(self) -> None:
        """Write the additions made since the last flush."""
        if not self._added_ids:
            return
        self.conn.execute(
            queries.ADD_ITEMS,
            {
                "group_id": self.group_id,
                "message_ids": self._added_ids,
                "bodies": self._added_bodies,
            },
        )
        self._stored = self._stored_count() + len(self._added_ids)
        self._added_ids = []
        self._added_bodies = []

    def _stored_count(self) -> int:
        if self._stored is None:
            row = self.conn.execute(queries.LOCK_LIST_SIZE, {"group_id": self.group_id}).fetchone()
            self._stored = int(row[0]) if row else 0
        return self._stored


class Lists:
    """The lists one transaction changes, each opened when a message first needs it."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lists: dict[int | None, TodoList] = {}

    def get(self, group_id: int | None) -> TodoList:
        """Return a group's list, or the open list for None."""
        if group_id not in self._lists:
            self._lists[group_id] = TodoList(self.conn, group_id)
        return self._lists[group_id]

    def forget(self, group_id: int) -> None:
        """Drop a deleted group's list, with the additions not written yet."""
        self._lists.pop(group_id, None)

    def flush(self) -> None:
        """Write every list's additions."""
        for items in self._lists.values():
            items.flush()


def apply(items: TodoList, message: InboundMessage, parsed: ParsedMessage) -> Result:
    """Apply one command to the list and return the reply it calls for."""
    match parsed.command:
        case Command.ADD:
            number = items.add(message.id, parsed.text)
            return Result("added", f"Added {number}. {preview(parsed.text)}")
        case Command.LIST:
            return Result("listed", format_list(items.items(), items.size()))
        case Command.DELETE:
            return _delete(items, parsed)
        case Command.HELP:
            return Result("helped", HELP_TEXT)
        case Command.OPT_OUT | Command.OPT_IN:
            # Twilio replies to these keywords itself and blocks or unblocks the
            # sender; a reply from us to an opted-out number would fail (21610).
            return Result("ignored", None)
        case Command.EMPTY:
            return Result("ignored", None)
    raise AssertionError(f"unhandled command {parsed.command}")


def _delete(items: TodoList, parsed: ParsedMessage) -> Result:
    if parsed.error is not None or parsed.position is None:
        return Result("invalid", parsed.error)

    body = items.delete_at(parsed.position)
    if body is None:
        count = items.size()
        if count == 0:
            return Result("invalid", f"There is no item {parsed.position}: the list is empty.")
        return Result(
            "invalid",
            f"There is no item {parsed.position}: the list has {count} "
            f"item{'s' if count != 1 else ''}. Send ls to see them.",
        )
    return Result("deleted", f"Deleted {parsed.position}. {preview(body)}")
