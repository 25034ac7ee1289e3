"""What an inbound message does: find its list, apply its command, write the replies.

With private lists (the default), the sender and the number they texted
identify a group, and only its members reach its list. A stranger gets a
short notice at most once a day and learns nothing about any list. In open
mode everyone shares one list and the group commands are ordinary items.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime

from smsworker import groups, phones, todo
from smsworker.commands import MEMBER_HELP_TEXT, Command, ParsedMessage, parse, preview
from smsworker.logs import mask_phone_number


@dataclass(frozen=True)
class Mode:
    """The bot's treatment of senders: private lists per group, or one open list."""

    open_list: bool = False
    # The region whose national format typed numbers without a country code use.
    region: str = phones.DEFAULT_REGION


def parse_for(message: todo.InboundMessage, mode: Mode) -> ParsedMessage:
    """Read a message's body as a command of the given mode."""
    return parse(message.body, groups=not mode.open_list)


def handle(
    lists: todo.Lists, message: todo.InboundMessage, parsed: ParsedMessage, mode: Mode
) -> todo.Result:
    """Apply a parsed message to its list or group and return the replies it calls for."""
    sender, ours = message.from_number, message.to_number
    if sender is not None and sender == ours:
        return todo.Result("ignored", None)
    if mode.open_list:
        return todo.apply(lists.get(None), message, parsed)
    if parsed.command in (Command.OPT_OUT, Command.OPT_IN, Command.EMPTY):
        return todo.apply(lists.get(None), message, parsed)

    group = groups.group_of(lists.conn, ours, sender) if sender and ours else None
    if group is None:
        return _stranger(lists, message)
    match parsed.command:
        case Command.INVITE:
            return _invite(lists, group, message, parsed, mode)
        case Command.MEMBERS:
            numbers = groups.members(lists.conn, group)
            return todo.Result("listed", groups.describe_members(numbers, you=str(sender)))
        case Command.LEAVE | Command.LEAVE_AND_DELETE:
            return _leave(lists, group, str(sender), parsed)
        case Command.HELP:
            return todo.Result("helped", MEMBER_HELP_TEXT)
    return todo.apply(lists.get(group.id), message, parsed)


def _stranger(lists: todo.Lists, message: todo.InboundMessage) -> todo.Result:
    """Tell a sender who is in no group that the lists are private, once a day.

    Another of our numbers gets no notice, so that two of them cannot text
    each other without end. Our numbers never become members: invitations
    and the operators' commands refuse them.
    """
    if not message.from_number or not message.to_number:
        return todo.Result("stranger", None)
    if groups.is_our_number(lists.conn, message.from_number):
        return todo.Result("ignored", None)
    if groups.stranger_notice_due(
        lists.conn, message.to_number, message.from_number, _day_of(message)
    ):
        return todo.Result("stranger", groups.STRANGER_TEXT)
    return todo.Result("stranger", None)


def _day_of(message: todo.InboundMessage) -> date:
    # The message's own day, so that handling it again decides the same way.
    created = message.date_created
    if isinstance(created, datetime):
        return created.date()
    return datetime.now(UTC).date()


def _invite(
    lists: todo.Lists,
    group: groups.Group,
    message: todo.InboundMessage,
    parsed: ParsedMessage,
    mode: Mode,
) -> todo.Result:
    if parsed.error is not None:
        return todo.Result("invalid", parsed.error)
    number = phones.normalize(parsed.text, mode.region)
    if number is None:
        return todo.Result(
            "invalid",
            f"{preview(parsed.text)} is not a valid phone number. "
            "Write it with its country code, for example: invite +12135550123",
        )
    inviter = str(message.from_number)
    masked = mask_phone_number(number)
    if number == message.to_number or groups.is_our_number(lists.conn, number):
        return todo.Result("invalid", f"{masked} is a number of this service, not a person's.")
    outcome = groups.add_member(lists.conn, group, number, invited_by=inviter)
    if outcome == "member already":
        return todo.Result("invalid", f"{masked} is a member already.")
    if outcome == "in another group":
        return todo.Result("invalid", f"{masked} cannot be invited to this list.")
    return todo.Result(
        "invited",
        f"Invited {masked} and sent them a welcome text.",
        others=((number, groups.welcome_text(group, inviter)),),
    )


def _leave(
    lists: todo.Lists, group: groups.Group, sender: str, parsed: ParsedMessage
) -> todo.Result:
    numbers = groups.members(lists.conn, group)
    if len(numbers) > 1:
        groups.remove_member(lists.conn, group, sender)
        return todo.Result("left", f"You left {group.name!r}. Its list stays with the others.")
    if parsed.command is Command.LEAVE_AND_DELETE:
        groups.delete_group(lists.conn, group)
        lists.forget(group.id)
        return todo.Result("deleted-group", f"You left {group.name!r} and deleted its list.")
    return todo.Result(
        "invalid",
        f"You are the last member of {group.name!r}, so leaving deletes its list. "
        "Send 'leave and delete' to do that.",
    )
