"""Parsing of inbound texts into to-do list commands, and the reply texts.

Everything here is pure: no database, no network, so it is tested on its own.
"""

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

# Twilio rejects outbound bodies longer than this (error 21617). Twilio counts
# UTF-16 code units, so an emoji counts as two.
MAX_REPLY_LENGTH = 1600
# Item numbers longer than this cannot exist; checked before int() so that a
# huge number is an ordinary invalid command.
MAX_POSITION_DIGITS = 9
# The longest `ls` reply, in UTF-16 code units: five SMS bodies at most.
MAX_LIST_REPLY_LENGTH = 5 * MAX_REPLY_LENGTH
# How much of an item's text the add and delete confirmations repeat.
PREVIEW_LENGTH = 60

# Twilio's reserved keywords. On long codes Twilio replies to them itself and
# blocks or unblocks the sender, so they are never list items. REVOKE and
# OPTOUT joined the opt-out defaults in 2025.
OPT_OUT_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
OPT_IN_KEYWORDS = frozenset({"START", "UNSTOP", "YES"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})

HELP_TEXT = (
    "Shared to-do list: text anything to add it, 1 or ls to see the list, del N to delete item N."
)
MEMBER_HELP_TEXT = (
    "Your group's to-do list: text anything to add it, 1 or ls to see the list, del N to "
    "delete item N, invite NUMBER to add a member, members to see who is in, leave to leave."
)

_NEWLINES = re.compile(r"\s*[\r\n]+\s*")
_DELETE = re.compile(r"del(?:\s+(?P<argument>.*))?", re.IGNORECASE | re.DOTALL)
_INVITE = re.compile(r"invite(?:\s+(?P<argument>.*))?", re.IGNORECASE | re.DOTALL)


class Command(enum.StrEnum):
    """The command an inbound text contains. The value is its label in logs and metrics."""

    ADD = "add"
    LIST = "list"
    DELETE = "delete"
    HELP = "help"
    OPT_OUT = "opt-out"
    OPT_IN = "opt-in"
    EMPTY = "empty"
    # Group commands, understood only when lists are private.
    INVITE = "invite"
    MEMBERS = "members"
    LEAVE = "leave"
    LEAVE_AND_DELETE = "leave-and-delete"


@dataclass(frozen=True)
class ParsedMessage:
    """An inbound text read as a command.

    `text` is the item to add for ADD and the number as typed for INVITE;
    `position` is the item number for a valid DELETE, and `error` the reply
    for an invalid DELETE or INVITE.
    """

    command: Command
    text: str = ""
    position: int | None = None
    error: str | None = None


def parse(body: str | None, *, groups: bool = False) -> ParsedMessage:
    """Read an inbound message body as a command.

    With `groups`, the group commands (invite, members, leave) are commands;
    without, they are items like any other text.
    """
    text = (body or "").strip()
    if not text:
        return ParsedMessage(Command.EMPTY)

    # Only ASCII text can be a keyword: str.upper() maps lookalikes such as
    # the dotless i (U+0131) onto ASCII letters.
    keyword = text.upper() if text.isascii() else ""
    if keyword in OPT_OUT_KEYWORDS:
        return ParsedMessage(Command.OPT_OUT)
    if keyword in OPT_IN_KEYWORDS:
        return ParsedMessage(Command.OPT_IN)
    if keyword in HELP_KEYWORDS:
        return ParsedMessage(Command.HELP)
    if keyword in {"1", "LS"}:
        return ParsedMessage(Command.LIST)

    match = _DELETE.fullmatch(text)
    if match:
        return _parse_delete(match.group("argument"))

    if groups:
        if keyword == "MEMBERS":
            return ParsedMessage(Command.MEMBERS)
        if keyword == "LEAVE":
            return ParsedMessage(Command.LEAVE)
        if " ".join(keyword.split()) == "LEAVE AND DELETE":
            return ParsedMessage(Command.LEAVE_AND_DELETE)
        match = _INVITE.fullmatch(text)
        if match:
            argument = (match.group("argument") or "").strip()
            if not argument:
                return ParsedMessage(
                    Command.INVITE,
                    error="Say whom to invite, for example: invite +12135550123",
                )
            # "invite Bob for dinner" is an item, not a number.
            if any(char.isdigit() for char in argument):
                return ParsedMessage(Command.INVITE, text=argument)

    return ParsedMessage(Command.ADD, text=text)


def _parse_delete(argument: str | None) -> ParsedMessage:
    argument = (argument or "").strip()
    if not argument:
        return ParsedMessage(Command.DELETE, error="Say which item to delete, for example: del 2")
    if not argument.isascii() or not argument.isdigit():
        return ParsedMessage(
            Command.DELETE,
            error=f"{preview(argument)} is not an item number. "
            "Send del and a number from the list, for example: del 2",
        )
    digits = argument.lstrip("0")
    if len(digits) > MAX_POSITION_DIGITS:
        return ParsedMessage(
            Command.DELETE,
            error=f"There is no item {preview(digits)}. Send ls to see the list.",
        )
    position = int(digits or "0")
    if position == 0:
        return ParsedMessage(
            Command.DELETE, error="Items are numbered from 1. Send ls to see them."
        )
    return ParsedMessage(Command.DELETE, position=position)


def preview(text: str) -> str:
    """Shorten text to PREVIEW_LENGTH characters for a confirmation."""
    if len(text) <= PREVIEW_LENGTH:
        return text
    return text[: PREVIEW_LENGTH - 1].rstrip() + "…"


def format_list(items: Iterable[str], total: int | None = None) -> str:
    """Render the list as one `N. text` line per item, numbered from 1.

    `total` is the list's size when `items` yields only its first items, and
    `items` is read only until the reply is full. The reply stops after
    MAX_LIST_REPLY_LENGTH characters with a line saying how many items were
    left out, so a long list costs a bounded number of SMS.
    """
    if total is None:
        items = list(items)
        total = len(items)
    if total == 0:
        return "The list is empty. Text anything to add it."

    lines: list[str] = []
    length = 0
    for number, text in enumerate(items, 1):
        # An item typed over several lines is shown on one, so each line is one item.
        line = f"{number}. {_NEWLINES.sub(' ', text)}"
        if lines and length + reply_length(line) + 1 > MAX_LIST_REPLY_LENGTH:
            break
        lines.append(line)
        length += reply_length(line) + 1
    if len(lines) < total:
        lines.append(f"…and {total - len(lines)} more. Send del N to remove done items.")
    return "\n".join(lines)


def reply_length(text: str) -> int:
    """Return the length Twilio counts: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def split_reply(text: str, max_length: int = MAX_REPLY_LENGTH) -> list[str]:
    """Split a reply into bodies Twilio accepts, at line boundaries.

    A single line longer than the limit is cut at the last space that fits,
    or between two characters when there is none. A cut never falls inside a
    character.
    """
    if max_length < 2:
        raise ValueError(f"max_length must fit any character (2 UTF-16 units), not {max_length}")
    parts: list[str] = []
    current = ""
    for line in text.split("\n"):
        candidate = f"{current}\n{line}" if current else line
        if reply_length(candidate) <= max_length:
            current = candidate
            continue
        if current:
            parts.append(current)
        current = ""
        for piece in _split_line(line, max_length):
            if current:
                parts.append(current)
            current = piece
    if current or not parts:
        parts.append(current)
    return parts


def _split_line(line: str, max_length: int) -> list[str]:
    pieces = []
    while reply_length(line) > max_length:
        cut = _longest_prefix(line, max_length)
        space = line.rfind(" ", 0, cut + 1)
        # Cutting at a space far back would leave a stub such as "4." alone.
        if space > cut // 2:
            cut = space
        pieces.append(line[:cut].rstrip())
        line = line[cut:].lstrip()
    pieces.append(line)
    return pieces


def _longest_prefix(line: str, max_length: int) -> int:
    """Return how many characters of line fit in max_length UTF-16 code units."""
    length = 0
    for index, char in enumerate(line):
        length += 2 if ord(char) > 0xFFFF else 1
        if length > max_length:
            return index
    return len(line)
