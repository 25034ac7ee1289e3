"""The to-do list bot, end to end: inbound rows in, replies out through the fake Twilio."""

from typing import Any

import psycopg
import pytest

from smsworker.commands import HELP_TEXT, MAX_REPLY_LENGTH, reply_length
from tests.conftest import (
    ALICE,
    BOB,
    BOT_NUMBER,
    insert_inbound,
    list_items,
    wait_until_handled,
)
from tests.fake_twilio import FakeTwilio


def replies_to(conn: psycopg.Connection[Any], message_id: str) -> list[str]:
    """Return the reply parts queued for one inbound message, in order."""
    rows = conn.execute(
        "SELECT body FROM smsworker.outbox WHERE message_id = %s ORDER BY part", [message_id]
    )
    return [row[0] for row in rows]


def outcome_of(conn: psycopg.Connection[Any], message_id: str) -> tuple[str, str]:
    row = conn.execute(
        "SELECT command, outcome FROM smsworker.handled_message WHERE message_id = %s",
        [message_id],
    ).fetchone()
    assert row is not None, f"message {message_id} was not handled"
    return row[0], row[1]


def test_conversation_add_list_delete(conn, start_worker, fake_twilio: FakeTwilio):
    start_worker()
    first = insert_inbound(conn, "buy milk")
    wait_until_handled(conn, 1)
    insert_inbound(conn, "  call the plumber ", from_number=BOB)
    wait_until_handled(conn, 2)
    listing = insert_inbound(conn, " LS ")
    wait_until_handled(conn, 3)
    deletion = insert_inbound(conn, "del 1")
    wait_until_handled(conn, 4)
    second_listing = insert_inbound(conn, "1")
    wait_until_handled(conn, 5)

    assert replies_to(conn, first) == ["Added 1. buy milk"]
    assert replies_to(conn, listing) == ["1. buy milk\n2. call the plumber"]
    assert replies_to(conn, deletion) == ["Deleted 1. buy milk"]
    assert replies_to(conn, second_listing) == ["1. call the plumber"]
    assert list_items(conn) == ["call the plumber"]

    sent = fake_twilio.wait_for_messages(5)
    assert [message.to for message in sent] == [ALICE, BOB, ALICE, ALICE, ALICE]
    assert {message.from_ for message in sent} == {BOT_NUMBER}
    assert sent[1].body == "Added 2. call the plumber"


def test_list_empty_says_so(conn, start_worker):
    start_worker()
    listing = insert_inbound(conn, "ls")
    wait_until_handled(conn, 1)

    assert replies_to(conn, listing) == ["The list is empty. Text anything to add it."]


@pytest.mark.parametrize(
    ("body", "expected_reply"),
    [
        ("del abc", "abc is not an item number"),
        ("del 0", "Items are numbered from 1"),
        ("del 99", "There is no item 99: the list has 2 items"),
        ("del", "Say which item to delete"),
        ("del -1", "-1 is not an item number"),
    ],
    ids=["letters", "zero", "past-the-end", "no-number", "negative"],
)
def test_delete_invalid_changes_nothing(conn, start_worker, body, expected_reply):
    start_worker()
    insert_inbound(conn, "bread")
    insert_inbound(conn, "eggs")
    bad = insert_inbound(conn, body)
    wait_until_handled(conn, 3)

    assert list_items(conn) == ["bread", "eggs"]
    assert outcome_of(conn, bad) == ("delete", "invalid")
    [reply] = replies_to(conn, bad)
    assert expected_reply in reply


def test_delete_on_empty_list_says_so(conn, start_worker):
    start_worker()
    bad = insert_inbound(conn, "del 1")
    wait_until_handled(conn, 1)

    [reply] = replies_to(conn, bad)
    assert "the list is empty" in reply


@pytest.mark.parametrize(
    "keyword",
    ["STOP", "stop", " Quit ", "STOPALL", "unsubscribe", "Cancel", "END", "START", "unstop", "YES"],
)
def test_reserved_keyword_no_item_no_reply(conn, start_worker, keyword):
    start_worker()
    message_id = insert_inbound(conn, keyword)
    wait_until_handled(conn, 1)

    assert list_items(conn) == []
    assert replies_to(conn, message_id) == []
    assert outcome_of(conn, message_id)[1] == "ignored"


@pytest.mark.parametrize("keyword", ["HELP", "help", " Info "])
def test_help_keyword_replies_usage(conn, start_worker, keyword):
    start_worker()
    message_id = insert_inbound(conn, keyword)
    wait_until_handled(conn, 1)

    assert list_items(conn) == []
    assert replies_to(conn, message_id) == [HELP_TEXT]


def test_sentence_with_keyword_is_item(conn, start_worker):
    start_worker()
    insert_inbound(conn, "stop at the bakery")
    insert_inbound(conn, "help mom move")
    wait_until_handled(conn, 2)

    assert list_items(conn) == ["stop at the bakery", "help mom move"]


@pytest.mark.parametrize("body", ["", "   \n\t ", None], ids=["empty", "blank", "null"])
def test_body_without_text_adds_nothing(conn, start_worker, body):
    start_worker()
    message_id = insert_inbound(conn, body)
    wait_until_handled(conn, 1)

    assert list_items(conn) == []
    assert replies_to(conn, message_id) == []


def test_non_inbound_rows_ignored(conn, start_worker):
    start_worker()
    insert_inbound(conn, "outbound text", direction="outbound-api")
    insert_inbound(conn, "a reply", direction="outbound-reply")
    conn.execute("INSERT INTO twilio.message (id, deleted) VALUES (%s, true)", ["SM" + "f" * 32])
    item = insert_inbound(conn, "real item")
    wait_until_handled(conn, 1)

    # A status update and a tombstone of a handled row change nothing.
    conn.execute("UPDATE twilio.message SET status = 'read' WHERE id = %s", [item])
    conn.execute(
        "INSERT INTO twilio.message (id, deleted) VALUES (%s, true)"
        " ON CONFLICT (id) DO UPDATE SET deleted = true, body = NULL, direction = NULL",
        [item],
    )
    last = insert_inbound(conn, "ls")
    wait_until_handled(conn, 2)

    assert list_items(conn) == ["real item"]
    assert replies_to(conn, last) == ["1. real item"]
    row = conn.execute("SELECT count(*) FROM smsworker.handled_message").fetchone()
    assert row == (2,)


def test_long_list_split_into_replies(conn, start_worker, fake_twilio: FakeTwilio):
    items = [f"item number {index:02d} with some words to make it longer" for index in range(60)]
    for text in items:
        insert_inbound(conn, text)
    start_worker(batch_size=25)
    wait_until_handled(conn, 60)
    listing = insert_inbound(conn, "ls")
    wait_until_handled(conn, 61)

    parts = replies_to(conn, listing)
    expected = "\n".join(f"{number}. {text}" for number, text in enumerate(items, 1))
    assert len(parts) > 1
    assert all(reply_length(part) <= MAX_REPLY_LENGTH for part in parts)
    assert "\n".join(parts) == expected
    sent_bodies = [message.body for message in fake_twilio.wait_for_messages(60 + len(parts))]
    assert [body for body in sent_bodies if body in parts] == parts


def test_long_body_added_and_listed(conn, start_worker, fake_twilio: FakeTwilio):
    start_worker()
    text = "word " * 2000  # 10,000 bytes
    added = insert_inbound(conn, text)
    wait_until_handled(conn, 1)
    listing = insert_inbound(conn, "ls")
    wait_until_handled(conn, 2)

    assert list_items(conn) == [text.strip()]
    [confirmation] = replies_to(conn, added)
    assert confirmation.startswith("Added 1. word word")
    assert len(confirmation) < 100
    parts = replies_to(conn, listing)
    assert len(parts) == 7
    assert all(reply_length(part) <= MAX_REPLY_LENGTH for part in parts)
    assert " ".join(parts) == "1. " + text.strip()
    fake_twilio.wait_for_messages(1 + len(parts))


def test_long_list_reply_capped(conn, start_worker):
    conn.execute(
        """
        INSERT INTO twilio.message (id, body, date_created, direction, "from", "to")
        SELECT 'SM' || md5(n::text), 'bulk item ' || n,
               timestamp '2026-01-01' + n * interval '1 second', 'inbound', %s, %s
        FROM generate_series(1, 600) AS n
        """,
        [ALICE, BOT_NUMBER],
    )
    start_worker(batch_size=200)
    wait_until_handled(conn, 600, timeout=60)
    listing = insert_inbound(conn, "ls")
    wait_until_handled(conn, 601)

    parts = replies_to(conn, listing)
    shown = "\n".join(parts).split("\n")
    assert len(parts) <= 6
    # The list is read in pages of 100, 200 and more: no item is lost or
    # repeated where one page ends.
    assert len(shown) > 301
    assert shown[:-1] == [f"{number}. bulk item {number}" for number in range(1, len(shown))]
    assert shown[-1] == f"…and {600 - (len(shown) - 1)} more. Send del N to remove done items."


def test_list_size_follows_manual_delete(conn, start_worker):
    start_worker()
    for body in ("one", "two", "three"):
        insert_inbound(conn, body)
    wait_until_handled(conn, 3)
    conn.execute("DELETE FROM smsworker.list_item WHERE body = 'two'")
    added = insert_inbound(conn, "four")
    wait_until_handled(conn, 4)

    assert replies_to(conn, added) == ["Added 3. four"]


def test_one_batch_adds_deletes_and_lists_in_order(conn, start_worker):
    """Messages fetched together are applied as if handled one by one.

    The worker is stopped while they arrive, so one catch-up query fetches
    them all and they are applied in one batch, where additions are written
    together at the end.
    """
    first = start_worker()
    insert_inbound(conn, "stored")
    wait_until_handled(conn, 1)
    first.stop()

    bodies = ["b", "c", "del 3", "d", "del 1", "ls", "del 3", "e"]
    ids = [insert_inbound(conn, body) for body in bodies]
    start_worker()
    wait_until_handled(conn, 1 + len(bodies))

    assert [replies_to(conn, message_id) for message_id in ids] == [
        ["Added 2. b"],
        ["Added 3. c"],
        ["Deleted 3. c"],
        ["Added 3. d"],
        ["Deleted 1. stored"],
        ["1. b\n2. d"],
        ["There is no item 3: the list has 2 items. Send ls to see them."],
        ["Added 3. e"],
    ]
    assert list_items(conn) == ["b", "d", "e"]
    row = conn.execute("SELECT item_count FROM smsworker.list_size WHERE name = 'todo'").fetchone()
    assert row == (3,)
