"""Private lists: groups, members, invitations and strangers, through the running worker."""

from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from smsworker import bot, db, groups, replay
from smsworker.commands import MEMBER_HELP_TEXT
from smsworker.logs import mask_phone_number
from tests.cli_helpers import cli_env, run_cli
from tests.conftest import (
    ALICE,
    BOB,
    BOT_NUMBER,
    insert_inbound,
    utc_now,
    wait_until_handled,
)
from tests.fake_twilio import FakeTwilio
from tests.test_bot import outcome_of, replies_to

# A second number of ours, and numbers that belong to no group.
SECOND_BOT = "+12135550199"
CAROL = "+12135550103"
DAVE = "+12135550104"


def create_group(
    conn: psycopg.Connection[Any], name: str, our_number: str, *members: str
) -> groups.Group:
    return groups.create_group(conn, name, our_number, list(members))


def group_items(conn: psycopg.Connection[Any], group: groups.Group) -> list[str]:
    rows = conn.execute(
        "SELECT body FROM smsworker.list_item WHERE group_id = %s ORDER BY id", [group.id]
    )
    return [row[0] for row in rows]


def member_numbers(conn: psycopg.Connection[Any], group: groups.Group) -> set[str]:
    rows = conn.execute(
        "SELECT phone_number FROM smsworker.group_member WHERE group_id = %s", [group.id]
    )
    return {row[0] for row in rows}


@pytest.fixture
def private_worker(start_worker: Any) -> Any:
    return start_worker(open_list=False)


def test_two_groups_on_two_numbers_keep_separate_lists(
    conn: psycopg.Connection[Any], private_worker: Any
) -> None:
    tennis = create_group(conn, "tennis", BOT_NUMBER, ALICE, BOB)
    house = create_group(conn, "house", SECOND_BOT, BOB)

    insert_inbound(conn, "balls", from_number=ALICE)
    insert_inbound(conn, "milk", from_number=BOB, to_number=SECOND_BOT)
    insert_inbound(conn, "net", from_number=BOB)
    wait_until_handled(conn, 3)
    tennis_list = insert_inbound(conn, "ls", from_number=ALICE)
    house_list = insert_inbound(conn, "ls", from_number=BOB, to_number=SECOND_BOT)
    house_delete = insert_inbound(conn, "del 2", from_number=BOB, to_number=SECOND_BOT)
    wait_until_handled(conn, 6)

    assert group_items(conn, tennis) == ["balls", "net"]
    assert group_items(conn, house) == ["milk"]
    assert replies_to(conn, tennis_list) == ["1. balls\n2. net"]
    assert replies_to(conn, house_list) == ["1. milk"]
    assert replies_to(conn, house_delete) == [
        "There is no item 2: the list has 1 item. Send ls to see them."
    ]


def test_member_of_one_number_is_stranger_at_another(
    conn: psycopg.Connection[Any], private_worker: Any
) -> None:
    create_group(conn, "tennis", BOT_NUMBER, ALICE)

    message = insert_inbound(conn, "ls", from_number=ALICE, to_number=SECOND_BOT)
    wait_until_handled(conn, 1)

    assert replies_to(conn, message) == [groups.STRANGER_TEXT]
    assert outcome_of(conn, message) == ("list", "stranger")


@pytest.mark.parametrize(
    "bodies",
    [
        ["ls", "1", "del 1", "members", "invite +12135550104", "leave", "leave and delete"],
        ["buy milk", "HELP", "'; DROP TABLE smsworker.list_item; --", "+12135550101", "del"],
    ],
    ids=["commands", "text-and-numbers"],
)
def test_stranger_learns_nothing_and_stores_nothing(
    conn: psycopg.Connection[Any],
    private_worker: Any,
    fake_twilio: FakeTwilio,
    bodies: list[str],
) -> None:
    tennis = create_group(conn, "tennis", BOT_NUMBER, ALICE, BOB)
    insert_inbound(conn, "secret plan", from_number=ALICE)
    wait_until_handled(conn, 1)
    before = fake_twilio.wait_for_messages(1)

    ids = [insert_inbound(conn, body, from_number=CAROL) for body in bodies]
    wait_until_handled(conn, 1 + len(bodies))

    replies = [reply for message_id in ids for reply in replies_to(conn, message_id)]
    assert replies == [groups.STRANGER_TEXT]
    assert {outcome_of(conn, message_id)[1] for message_id in ids} == {"stranger"}
    assert group_items(conn, tennis) == ["secret plan"]
    assert member_numbers(conn, tennis) == {ALICE, BOB}
    sent = fake_twilio.wait_for_messages(len(before) + 1)
    assert [message.to for message in sent[len(before) :]] == [CAROL]
    assert "secret" not in sent[-1].body
    assert "tennis" not in sent[-1].body


def test_stranger_notice_once_a_day(conn: psycopg.Connection[Any], private_worker: Any) -> None:
    yesterday = utc_now() - timedelta(days=1)
    first = insert_inbound(conn, "hello", from_number=CAROL, date_created=yesterday)
    second = insert_inbound(
        conn, "hello?", from_number=CAROL, date_created=yesterday + timedelta(seconds=1)
    )
    today = insert_inbound(conn, "anyone?", from_number=CAROL, date_created=utc_now())
    wait_until_handled(conn, 3)

    assert replies_to(conn, first) == [groups.STRANGER_TEXT]
    assert replies_to(conn, second) == []
    assert replies_to(conn, today) == [groups.STRANGER_TEXT]


@pytest.mark.parametrize(
    ("typed", "normalized"),
    [
        ("(213) 555-0104", "+12135550104"),
        ("213.555.0104", "+12135550104"),
        ("+1 213 555 0104", "+12135550104"),
        ("+44 20 7946 0958", "+442079460958"),
    ],
)
def test_invite_normalizes_number_and_welcomes(
    conn: psycopg.Connection[Any],
    private_worker: Any,
    fake_twilio: FakeTwilio,
    typed: str,
    normalized: str,
) -> None:
    tennis = create_group(conn, "tennis", BOT_NUMBER, ALICE)

    invite = insert_inbound(conn, f"invite {typed}", from_number=ALICE)
    wait_until_handled(conn, 1)
    added = insert_inbound(conn, "rackets", from_number=normalized)
    wait_until_handled(conn, 2)

    assert member_numbers(conn, tennis) == {ALICE, normalized}
    sent = fake_twilio.wait_for_messages(3)
    [welcome] = [
        message for message in sent if message.to == normalized and "invited" in message.body
    ]
    assert welcome.from_ == BOT_NUMBER
    assert ALICE in welcome.body
    assert "'tennis'" in welcome.body
    [confirmation] = replies_to(conn, invite)[:1]
    assert confirmation.startswith(f"Invited {mask_phone_number(normalized)} ")
    assert replies_to(conn, added) == ["Added 1. rackets"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("invite 12", "12 is not a valid phone number."),
        ("invite", "Say whom to invite"),
        ("invite +12135550102", "+*******0102 is a member already."),
        ("invite +12135550104", "+*******0104 cannot be invited"),
    ],
    ids=["invalid", "missing", "member", "other-group"],
)
def test_invite_refused_with_reason(
    conn: psycopg.Connection[Any], private_worker: Any, body: str, expected: str
) -> None:
    tennis = create_group(conn, "tennis", BOT_NUMBER, ALICE, BOB)
    create_group(conn, "chess", BOT_NUMBER, DAVE)

    message = insert_inbound(conn, body, from_number=ALICE)
    wait_until_handled(conn, 1)

    [reply] = replies_to(conn, message)
    assert reply.startswith(expected)
    assert member_numbers(conn, tennis) == {ALICE, BOB}


def test_members_masked_and_help(conn: psycopg.Connection[Any], private_worker: Any) -> None:
    create_group(conn, "tennis", BOT_NUMBER, ALICE, BOB)

    listing = insert_inbound(conn, "members", from_number=BOB)
    help_ = insert_inbound(conn, "help", from_number=BOB)
    wait_until_handled(conn, 2)

    assert replies_to(conn, listing) == ["2 members:\n+*******0101\n+*******0102 (you)"]
    assert replies_to(conn, help_) == [MEMBER_HELP_TEXT]


def test_leave_then_last_member_must_delete(
    conn: psycopg.Connection[Any], private_worker: Any
) -> None:
    tennis = create_group(conn, "tennis", BOT_NUMBER, ALICE, BOB)
    insert_inbound(conn, "balls", from_number=ALICE)
    bob_leaves = insert_inbound(conn, "leave", from_number=BOB)
    wait_until_handled(conn, 2)
    alice_leaves = insert_inbound(conn, "LEAVE", from_number=ALICE)
    wait_until_handled(conn, 3)

    assert member_numbers(conn, tennis) == {ALICE}
    assert replies_to(conn, bob_leaves) == ["You left 'tennis'. Its list stays with the others."]
    assert "Send 'leave and delete'" in replies_to(conn, alice_leaves)[0]
    assert group_items(conn, tennis) == ["balls"]

    deleted = insert_inbound(conn, "leave and delete", from_number=ALICE)
    after = insert_inbound(conn, "ls", from_number=ALICE)
    wait_until_handled(conn, 5)

    assert replies_to(conn, deleted) == ["You left 'tennis' and deleted its list."]
    assert replies_to(conn, after) == [groups.STRANGER_TEXT]
    assert conn.execute("SELECT count(*) FROM smsworker.list_item").fetchone() == (0,)
    assert conn.execute(
        "SELECT count(*) FROM smsworker.list_size WHERE name = %s", [f"group:{tennis.id}"]
    ).fetchone() == (0,)


def test_open_mode_group_words_are_items(conn: psycopg.Connection[Any], start_worker: Any) -> None:
    start_worker(open_list=True)

    insert_inbound(conn, "invite +12135550104", from_number=CAROL)
    insert_inbound(conn, "members", from_number=DAVE, to_number=SECOND_BOT)
    listing = insert_inbound(conn, "ls", from_number=ALICE)
    wait_until_handled(conn, 3)

    assert replies_to(conn, listing) == ["1. invite +12135550104\n2. members"]


def test_replay_never_sends_an_invitation_twice(
    conn: psycopg.Connection[Any], database_url: str, private_worker: Any, fake_twilio: FakeTwilio
) -> None:
    create_group(conn, "tennis", BOT_NUMBER, ALICE)
    insert_inbound(conn, "invite +12135550104", from_number=ALICE, date_created=utc_now())
    wait_until_handled(conn, 1)
    sent = len(fake_twilio.wait_for_messages(2))

    summary = replay.replay(
        database_url,
        cursor_name="todo",
        since=utc_now() - timedelta(hours=1),
        until=utc_now() + timedelta(minutes=1),
        max_attempts=1,
        mode=bot.Mode(open_list=False),
    )

    assert (summary.handled, summary.skipped) == (0, 1)
    assert conn.execute("SELECT count(*) FROM smsworker.outbox").fetchone() == (sent,)


# Operators' commands.


def test_cli_creates_lists_and_changes_groups(
    conn: psycopg.Connection[Any], database_url: str, tmp_path: Path
) -> None:
    env = cli_env(database_url, open_list=False)

    created = run_cli(
        "groups", "create", "tennis", "--number", "(213) 555-0100",
        "--member", "213.555.0101", "--member", "+1 213 555 0102", env=env, cwd=tmp_path,
    )  # fmt: skip
    added = run_cli("members", "add", "tennis", "(213) 555-0103", env=env, cwd=tmp_path)
    removed = run_cli("members", "remove", "tennis", "+12135550101", env=env, cwd=tmp_path)
    listed = run_cli("members", "list", "tennis", env=env, cwd=tmp_path)
    all_groups = run_cli("groups", "list", env=env, cwd=tmp_path)

    assert created.returncode == 0, created.stderr
    assert "Created group 'tennis'" in created.stdout
    assert added.stdout.strip() == "Added +12135550103 to 'tennis'."
    assert removed.stdout.strip() == "Removed +12135550101 from 'tennis'."
    assert listed.stdout.splitlines()[1:] == [BOB, CAROL]
    assert "tennis  at +12135550100  2 members, 0 items" in all_groups.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["groups", "create", "x", "--number", "12", "--member", ALICE], 2, "not a valid phone"),
        (["groups", "create", "x", "--number", BOT_NUMBER], 2, "--member"),
        (["groups", "create", "x", "--number", BOT_NUMBER, "--member", BOB], 1, "another group"),
        (["groups", "create", "tennis", "--number", BOT_NUMBER, "--member", DAVE], 1, "exists"),
        (["members", "add", "nosuch", DAVE], 1, "no group is named 'nosuch'"),
        (["members", "add", "tennis", BOB], 1, "another group"),
        (["members", "remove", "tennis", DAVE], 1, "is not a member"),
        (["members", "add", "tennis", DAVE, "--default-region", "XX"], 2, "not a region"),
        (["members", "add", "tennis", BOT_NUMBER], 1, "one of our Twilio numbers"),
        (["groups", "create", "x", "--number", DAVE, "--member", DAVE], 1, "our Twilio numbers"),
        (["groups", "create", "12", "--number", DAVE, "--member", CAROL], 2, "digits only"),
        (["groups", "create", "x", "--number", ALICE, "--member", CAROL], 1, "is a member of a"),
        (["groups", "create", "x" * 61, "--number", DAVE, "--member", CAROL], 2, "1 to 60"),
    ],
)
def test_cli_group_errors(
    conn: psycopg.Connection[Any],
    database_url: str,
    tmp_path: Path,
    args: list[str],
    code: int,
    message: str,
) -> None:
    create_group(conn, "tennis", BOT_NUMBER, ALICE)
    create_group(conn, "chess", BOT_NUMBER, BOB)

    result = run_cli(*args, env=cli_env(database_url, open_list=False), cwd=tmp_path)

    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    groups_now = conn.execute("SELECT count(*) FROM smsworker.list_group").fetchone()
    assert groups_now == (2,)


def test_migration_moves_shared_list_into_groups(empty_database_url: str, tmp_path: Path) -> None:
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        # A database that the release before groups migrated.
        for path in db.migration_files():
            if path.name < "008":
                conn.execute(path.read_text().encode())
        for sender, ours, body in [
            (ALICE, BOT_NUMBER, "balls"),
            (BOB, BOT_NUMBER, "net"),
            (ALICE, SECOND_BOT, "milk"),
            (ALICE, BOT_NUMBER, "rackets"),
        ]:
            message_id = insert_inbound(conn, body, from_number=sender, to_number=ours)
            conn.execute(
                "INSERT INTO smsworker.list_item (message_id, body) VALUES (%s, %s)",
                [message_id, body],
            )
        # An item whose message a syncer pruned, so its sender is unknown.
        conn.execute("INSERT INTO smsworker.list_item (message_id, body) VALUES (NULL, 'old')")

        open_migration = run_cli("migrate", env=cli_env(empty_database_url), cwd=tmp_path)
        moved = run_cli("migrate", env=cli_env(empty_database_url, open_list=False), cwd=tmp_path)
        again = run_cli("migrate", env=cli_env(empty_database_url, open_list=False), cwd=tmp_path)

        assert "Moved" not in open_migration.stdout
        assert (
            "Moved 4 items of the shared list into 2 new groups with 3 members; "
            "1 items stay on the open list."
        ) in moved.stdout
        assert "Moved" not in again.stdout
        summaries = {s.group.our_number: s for s in groups.list_groups(conn)}
        tennis, house = summaries[BOT_NUMBER], summaries[SECOND_BOT]
        assert group_items(conn, tennis.group) == ["balls", "net", "rackets"]
        assert member_numbers(conn, tennis.group) == {ALICE, BOB}
        assert (tennis.member_count, tennis.item_count) == (2, 3)
        assert group_items(conn, house.group) == ["milk"]
        assert member_numbers(conn, house.group) == {ALICE}
        sizes = conn.execute("SELECT item_count FROM smsworker.list_size WHERE name = 'todo'")
        assert sizes.fetchone() == (1,)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("invite +12135550100", "+*******0100 is a number of this service"),
        ("invite +12135550199", "+*******0199 is a number of this service"),
    ],
    ids=["this-number", "other-number"],
)
def test_invite_refuses_our_numbers(
    conn: psycopg.Connection[Any], private_worker: Any, body: str, expected: str
) -> None:
    tennis = create_group(conn, "tennis", BOT_NUMBER, ALICE)
    create_group(conn, "house", SECOND_BOT, BOB)

    message = insert_inbound(conn, body, from_number=ALICE)
    wait_until_handled(conn, 1)

    [reply] = replies_to(conn, message)
    assert reply.startswith(expected)
    assert member_numbers(conn, tennis) == {ALICE}


def test_our_other_number_gets_no_reply(conn: psycopg.Connection[Any], private_worker: Any) -> None:
    create_group(conn, "tennis", BOT_NUMBER, ALICE)
    create_group(conn, "house", SECOND_BOT, BOB)

    # A stranger notice from one number of ours, received by the other.
    message = insert_inbound(conn, groups.STRANGER_TEXT, from_number=SECOND_BOT)
    wait_until_handled(conn, 1)

    assert replies_to(conn, message) == []
    assert outcome_of(conn, message) == ("add", "ignored")


def test_invite_without_digits_is_an_item(
    conn: psycopg.Connection[Any], private_worker: Any
) -> None:
    tennis = create_group(conn, "tennis", BOT_NUMBER, ALICE)

    message = insert_inbound(conn, "invite Bob for dinner", from_number=ALICE)
    wait_until_handled(conn, 1)

    assert replies_to(conn, message) == ["Added 1. invite Bob for dinner"]
    assert group_items(conn, tennis) == ["invite Bob for dinner"]


def test_worker_refuses_database_of_older_release(
    conn: psycopg.Connection[Any], database_url: str, tmp_path: Path
) -> None:
    conn.execute("DELETE FROM smsworker.schema_migration WHERE name = '008_groups.sql'")
    env = cli_env(database_url, open_list=False)

    worker = run_cli("run", "--metrics-port", "0", env=env, cwd=tmp_path, timeout=60)
    listing = run_cli("groups", "list", env=env, cwd=tmp_path)

    for result in (worker, listing):
        assert result.returncode == 1
        assert "008_groups.sql not applied" in result.stderr
        assert "Traceback" not in result.stderr


def test_migrate_prints_only_its_own_lines(database_url: str, tmp_path: Path) -> None:
    result = run_cli("migrate", env=cli_env(database_url, open_list=False), cwd=tmp_path)

    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        f"Schema is up to date ({len(db.migration_files())} files applied)."
    ]
