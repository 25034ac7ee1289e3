"""Private lists: groups of phone numbers, their members and invitations.

A group owns one list and is reached through one of our Twilio numbers. A
phone number belongs to at most one group per number of ours, so the sender
and the number they texted identify the list. Everything here runs inside
the caller's transaction.
"""

from dataclasses import dataclass
from datetime import date

from smsworker import queries
from smsworker.db import Connection
from smsworker.errors import SmsWorkerError
from smsworker.logs import mask_phone_number

STRANGER_TEXT = (
    "The lists at this number are private. A member can add you by texting: invite and your number."
)


@dataclass(frozen=True)
class Group:
    """A group and the number of ours that reaches it."""

    id: int
    name: str
    our_number: str


def group_of(conn: Connection, our_number: str, phone_number: str) -> Group | None:
    """Return the group `phone_number` belongs to at `our_number`, or None."""
    row = conn.execute(
        queries.GROUP_OF_MEMBER, {"our_number": our_number, "phone_number": phone_number}
    ).fetchone()
    return None if row is None else Group(*row)


def add_member(conn: Connection, group: Group, phone_number: str, invited_by: str | None) -> str:
    """Add a member; return 'added', 'member already' or 'in another group'."""
    row = conn.execute(
        queries.ADD_MEMBER,
        {
            "our_number": group.our_number,
            "phone_number": phone_number,
            "group_id": group.id,
            "invited_by": invited_by,
        },
    ).fetchone()
    assert row is not None, "ADD_MEMBER returns the membership"
    group_id, added = row
    if added:
        return "added"
    return "member already" if group_id == group.id else "in another group"


def is_our_number(conn: Connection, number: str) -> bool:
    """Return whether `number` reaches a group: one of our Twilio numbers."""
    row = conn.execute(queries.IS_OUR_NUMBER, {"number": number}).fetchone()
    return bool(row and row[0])


def members(conn: Connection, group: Group) -> list[str]:
    """Return the group's members, oldest first, locked until the transaction ends."""
    rows = conn.execute(queries.LOCK_MEMBERS, {"group_id": group.id}).fetchall()
    return [row[0] for row in rows]


def remove_member(conn: Connection, group: Group, phone_number: str) -> bool:
    """Remove a member; return False when the number was not one."""
    cursor = conn.execute(
        queries.REMOVE_MEMBER, {"group_id": group.id, "phone_number": phone_number}
    )
    return cursor.rowcount == 1


def delete_group(conn: Connection, group: Group) -> None:
    """Delete a group with its members and its list."""
    conn.execute(queries.DELETE_GROUP, {"group_id": group.id})


def stranger_notice_due(conn: Connection, our_number: str, phone_number: str, day: date) -> bool:
    """Record that a stranger gets the private-list notice on `day`, at most once a day."""
    row = conn.execute(
        queries.NOTE_STRANGER,
        {"our_number": our_number, "phone_number": phone_number, "day": day},
    ).fetchone()
    return row is not None


def describe_members(numbers: list[str], you: str) -> str:
    """Render the member list with every number masked but its last four digits."""
    lines = [
        f"{mask_phone_number(number)}{' (you)' if number == you else ''}" for number in numbers
    ]
    return f"{len(numbers)} member{'s' if len(numbers) != 1 else ''}:\n" + "\n".join(lines)


def welcome_text(group: Group, inviter: str) -> str:
    """Return the text an invited number receives."""
    return (
        f"{inviter} invited you to the shared to-do list {group.name!r}. Text anything to "
        "add it, ls to see the list, del N to delete item N, members to see who is in, "
        "leave to leave."
    )


class GroupError(SmsWorkerError):
    """An operator's group command is invalid here; the message gives the reason."""


def create_group(conn: Connection, name: str, our_number: str, member_numbers: list[str]) -> Group:
    """Create a group with its first members, all or nothing."""
    check_name(name)
    with conn.transaction():
        row = conn.execute(queries.IS_MEMBER, {"number": our_number}).fetchone()
        if row and row[0]:
            raise GroupError(
                f"{our_number} is a member of a group, so it cannot be one of our numbers"
            )
        for number in member_numbers:
            check_not_ours(conn, number, our_number)
        row = conn.execute(
            queries.CREATE_GROUP, {"name": name, "our_number": our_number}
        ).fetchone()
        if row is None:
            raise GroupError(f"a group named {name!r} exists at {our_number} already")
        group = Group(row[0], name, our_number)
        for number in member_numbers:
            if add_member(conn, group, number, invited_by=None) == "in another group":
                raise GroupError(
                    f"{number} is a member of another group at {our_number}; "
                    "a number belongs to one group per number of ours. Nothing was created."
                )
    return group


# Group names appear in welcome texts and in `groups list`, one per line.
MAX_NAME_LENGTH = 60


def check_name(name: str) -> None:
    """Raise GroupError for a name that welcome texts and `groups list` cannot show."""
    if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise GroupError(
            f"a group name has 1 to {MAX_NAME_LENGTH} printable characters, on one line"
        )
    if name.isdigit():
        raise GroupError("a group name of digits only would read as a group id")


def check_not_ours(conn: Connection, number: str, our_number: str) -> None:
    """Raise GroupError when `number` is one of ours: our numbers would text each other."""
    if number == our_number or is_our_number(conn, number):
        raise GroupError(f"{number} is one of our Twilio numbers, so it cannot be a member")


def find_group(conn: Connection, text: str) -> Group:
    """Return the group named `text`, or whose id it is."""
    rows = conn.execute(queries.FIND_GROUPS, {"text": text}).fetchall()
    if not rows:
        raise GroupError(f"no group is named {text!r}; `smsworker groups list` shows them")
    if len(rows) > 1:
        ids = ", ".join(str(row[0]) for row in rows)
        raise GroupError(
            f"several groups are named {text!r}, at different numbers (ids {ids}); "
            "give the id instead"
        )
    return Group(*rows[0])


@dataclass(frozen=True)
class GroupSummary:
    """A group with its member and item counts, for `smsworker groups list`."""

    group: Group
    member_count: int
    item_count: int


def list_groups(conn: Connection) -> list[GroupSummary]:
    """Return every group, by number of ours and name."""
    rows = conn.execute(queries.LIST_GROUPS).fetchall()
    return [
        GroupSummary(Group(id_, name, number), members_, items)
        for id_, name, number, members_, items in rows
    ]
