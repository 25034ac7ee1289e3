"""Reply delivery through the real twilio library to the fake Twilio API."""

import socket
from typing import Any

import psycopg

from smsworker.settings import TwilioSettings
from tests.conftest import (
    ACCOUNT_SID,
    ALICE,
    insert_inbound,
    pending_replies,
    wait_until,
    wait_until_handled,
)
from tests.fake_twilio import FakeTwilio


def outbox_rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT status, attempts, error_code, twilio_sid FROM smsworker.outbox ORDER BY id"
    ).fetchall()


def test_reply_retried_after_server_errors(conn, start_worker, fake_twilio: FakeTwilio):
    fake_twilio.fail_next(2, status=503)
    start_worker()
    insert_inbound(conn, "milk")
    wait_until_handled(conn, 1)

    [sent] = fake_twilio.messages
    assert sent.body == "Added 1. milk"
    assert fake_twilio.requests_count == 3
    assert outbox_rows(conn) == [("sent", 3, None, sent.sid)]


def test_reply_honours_retry_after(conn, start_worker, fake_twilio: FakeTwilio):
    fake_twilio.fail_next(1, status=429, code=20429, retry_after=1)
    start_worker()
    insert_inbound(conn, "milk")
    wait_until_handled(conn, 1)

    assert len(fake_twilio.messages) == 1
    assert outbox_rows(conn)[0][:2] == ("sent", 2)


def test_opted_out_recipient_fails_without_retry(conn, start_worker, fake_twilio: FakeTwilio):
    fake_twilio.opted_out.add(ALICE)
    start_worker()
    insert_inbound(conn, "milk")
    wait_until_handled(conn, 1)

    assert fake_twilio.messages == []
    assert fake_twilio.requests_count == 1
    assert outbox_rows(conn) == [("failed", 1, 21610, None)]


def test_invalid_number_fails_without_retry(conn, start_worker, fake_twilio: FakeTwilio):
    start_worker()
    insert_inbound(conn, "milk", from_number="+1")
    wait_until_handled(conn, 1)

    assert fake_twilio.requests_count == 1
    assert outbox_rows(conn) == [("failed", 1, 21211, None)]


def test_failed_reply_does_not_block_others(conn, start_worker, fake_twilio: FakeTwilio):
    fake_twilio.opted_out.add(ALICE)
    start_worker()
    insert_inbound(conn, "from alice")
    insert_inbound(conn, "from bob", from_number="+12135550102")
    wait_until_handled(conn, 2)

    assert [message.body for message in fake_twilio.messages] == ["Added 2. from bob"]


def test_reply_survives_outage_and_restart(conn, start_worker, fake_twilio: FakeTwilio):
    fake_twilio.fail_next(10_000, status=500)
    worker = start_worker(send_retry_budget_s=60.0)
    insert_inbound(conn, "milk")
    wait_until(lambda: fake_twilio.requests_count >= 2, message="two failed attempts to send")
    worker.stop()
    assert pending_replies(conn) == 1

    fake_twilio.clear()
    start_worker()
    wait_until_handled(conn, 1)

    assert [message.body for message in fake_twilio.messages] == ["Added 1. milk"]
    status, attempts, _, _ = outbox_rows(conn)[0]
    assert status == "sent"
    assert attempts >= 3


def test_list_changes_not_held_back_by_twilio(conn, start_worker, fake_twilio: FakeTwilio):
    fake_twilio.fail_next(10_000, status=503)
    start_worker(send_concurrency=1)
    for index in range(20):
        insert_inbound(conn, f"item {index}")

    wait_until(lambda: len(_items(conn)) == 20, message="20 items while Twilio is down")
    assert fake_twilio.messages == []


def _items(conn: psycopg.Connection[Any]) -> list[str]:
    return [row[0] for row in conn.execute("SELECT body FROM smsworker.list_item")]


def test_unreachable_twilio_retried_not_failed(conn, start_worker):
    # Nothing listens on this port: bind it, note it, and close it.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    worker = start_worker(
        twilio=TwilioSettings(ACCOUNT_SID, "token", f"http://127.0.0.1:{port}"),
        send_retry_budget_s=0.3,
    )
    insert_inbound(conn, "milk")

    def postponed() -> bool:
        row = conn.execute("SELECT attempts, error_message FROM smsworker.outbox").fetchone()
        return row is not None and row[0] >= 1

    wait_until(postponed, message="a postponed reply")
    worker.stop()
    status, attempts, _, _ = outbox_rows(conn)[0]
    row = conn.execute("SELECT error_message FROM smsworker.outbox").fetchone()
    assert status == "pending"
    assert attempts >= 1
    assert row is not None
    assert "unreachable" in row[0]


def test_wrong_credentials_keep_replies_pending(conn, start_worker, fake_twilio: FakeTwilio):
    """A wrong auth token fails every reply alike: they wait until it is fixed."""
    wrong = TwilioSettings(fake_twilio.account_sid, "wrong-token", fake_twilio.url)
    worker = start_worker(twilio=wrong, send_retry_budget_s=0.5)
    insert_inbound(conn, "milk")
    wait_until(
        lambda: (
            conn.execute(
                "SELECT error_code FROM smsworker.outbox WHERE status = 'pending'"
            ).fetchone()
            == (20003,)
        ),
        message="the reply pending after an authentication error",
    )
    worker.stop()
    assert fake_twilio.messages == []

    start_worker()
    conn.execute("UPDATE smsworker.outbox SET next_attempt_at = now()")
    wait_until(lambda: pending_replies(conn) == 0, message="the reply sent")

    assert [sent.body for sent in fake_twilio.messages] == ["Added 1. milk"]
    assert outbox_rows(conn)[0][0] == "sent"
