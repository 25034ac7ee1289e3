"""Exactly-once handling across restarts, races, late rows and duplicate notifications."""

import threading
from datetime import timedelta
from typing import Any

import psycopg

from tests.conftest import (
    BOB,
    create_item_trigger,
    handled_count,
    insert_inbound,
    list_items,
    next_date_created,
    utc_now,
    wait_until,
    wait_until_handled,
)


def item_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute("SELECT body, count(*) FROM smsworker.list_item GROUP BY body")
    return {body: count for body, count in rows}


def cursor_position(conn: psycopg.Connection[Any]) -> tuple[Any, str]:
    row = conn.execute(
        "SELECT date_created, message_id FROM smsworker.processor_cursor WHERE name = 'todo'"
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_backlog_drained_on_start(conn, start_worker):
    bodies = [f"missed while down {index}" for index in range(250)]
    for body in bodies:
        insert_inbound(conn, body)

    start_worker(batch_size=40)
    wait_until_handled(conn, 250)

    assert list_items(conn) == bodies


def test_rows_inserted_during_startup_handled_once(conn, database_url, start_worker):
    inserted: list[str] = []
    started = threading.Event()
    stop = threading.Event()

    def insert_continuously() -> None:
        with psycopg.connect(database_url, autocommit=True) as writer:
            while not stop.is_set() and len(inserted) < 400:
                inserted.append(f"race {len(inserted)}")
                insert_inbound(writer, inserted[-1])
                if len(inserted) == 20:
                    started.set()

    writer = threading.Thread(target=insert_continuously)
    writer.start()
    try:
        started.wait(10)
        worker = start_worker(batch_size=7)
        wait_until(lambda: handled_count(conn) >= 50, message="50 handled messages")
    finally:
        stop.set()
        writer.join()
    wait_until_handled(conn, len(inserted))
    worker.stop()

    assert list_items(conn) == inserted


def test_same_second_rows_across_restart(conn, start_worker):
    second = utc_now() - timedelta(minutes=5)
    first_ids = ["SM" + digit * 32 for digit in "246"]
    for message_id in first_ids:
        insert_inbound(conn, f"first {message_id[2]}", date_created=second, message_id=message_id)
    worker = start_worker()
    wait_until_handled(conn, 3)
    worker.stop()

    # Two more rows of the same second arrive while the worker is down, with
    # ids on both sides of the cursor's.
    for message_id in ("SM" + "1" * 32, "SM" + "5" * 32):
        insert_inbound(conn, f"late {message_id[2]}", date_created=second, message_id=message_id)
    start_worker()
    wait_until_handled(conn, 5)

    assert sorted(item_counts(conn).items()) == [
        ("first 2", 1),
        ("first 4", 1),
        ("first 6", 1),
        ("late 1", 1),
        ("late 5", 1),
    ]


def test_late_commit_with_older_date_handled(conn, database_url, start_worker):
    start_worker()
    older = next_date_created()
    newer = next_date_created()
    with psycopg.connect(database_url) as slow_syncer:
        insert_inbound(slow_syncer, "committed late", date_created=older)
        insert_inbound(conn, "committed first", date_created=newer)
        wait_until_handled(conn, 1)
        slow_syncer.commit()
    wait_until_handled(conn, 2)

    assert list_items(conn) == ["committed first", "committed late"]
    assert cursor_position(conn)[0] == newer


def test_late_row_while_stopped_handled(conn, start_worker):
    insert_inbound(conn, "recent")
    worker = start_worker()
    wait_until_handled(conn, 1)
    cursor_before = cursor_position(conn)
    worker.stop()

    insert_inbound(conn, "hours late", date_created=utc_now() - timedelta(hours=3))
    start_worker()
    wait_until_handled(conn, 2)

    assert list_items(conn) == ["recent", "hours late"]
    assert cursor_position(conn) == cursor_before


def test_late_row_without_notification_found_by_rescan(conn, start_worker):
    """A row far behind the cursor whose notification was lost waits for a full rescan."""
    start_worker(poll_interval_s=0.2, late_row_rescan_interval_s=1.0)
    insert_inbound(conn, "recent")
    wait_until_handled(conn, 1)
    cursor_before = cursor_position(conn)

    conn.execute("ALTER TABLE twilio.message DISABLE TRIGGER smsworker_notify_inbound_message")
    insert_inbound(conn, "an hour late", date_created=cursor_before[0] - timedelta(hours=1))
    wait_until_handled(conn, 2)

    assert list_items(conn) == ["recent", "an hour late"]
    assert cursor_position(conn) == cursor_before


def test_row_older_than_window_not_handled(conn, start_worker):
    insert_inbound(conn, "recent")
    worker = start_worker()
    wait_until_handled(conn, 1)
    worker.stop()

    insert_inbound(conn, "far too late", date_created=utc_now() - timedelta(days=3))
    insert_inbound(conn, "after")
    start_worker(late_row_window_s=3600.0)
    wait_until_handled(conn, 2)

    assert list_items(conn) == ["recent", "after"]


def test_duplicate_notifications_apply_once(conn, start_worker):
    start_worker()
    ids = [insert_inbound(conn, f"once {index}") for index in range(5)]
    wait_until_handled(conn, 5)

    for message_id in ids * 3:
        conn.execute("SELECT pg_notify('smsworker_message', %s)", [message_id])
    conn.execute("SELECT pg_notify('smsworker_message', 'not an id')")
    conn.execute("SELECT pg_notify('smsworker_message', '')")
    insert_inbound(conn, "sentinel")
    wait_until_handled(conn, 6)

    assert list_items(conn) == [f"once {index}" for index in range(5)] + ["sentinel"]
    row = conn.execute("SELECT count(*) FROM smsworker.outbox").fetchone()
    assert row == (6,)


def test_notification_without_payload_still_handled(conn, start_worker):
    start_worker()
    # An id too long for the trigger's payload is notified with an empty one.
    long_id = "SM" + "a" * 100
    insert_inbound(conn, "long id", message_id=long_id)
    wait_until_handled(conn, 1)

    assert list_items(conn) == ["long id"]


def test_row_without_notification_found_by_poll(conn, start_worker):
    start_worker(poll_interval_s=0.3)
    conn.execute("ALTER TABLE twilio.message DISABLE TRIGGER smsworker_notify_inbound_message")
    insert_inbound(conn, "silent insert")
    wait_until_handled(conn, 1)

    assert list_items(conn) == ["silent insert"]


def test_failing_handler_recorded_and_skipped(conn, start_worker):
    create_item_trigger(
        conn,
        "reject_poison",
        "IF NEW.body = 'poison' THEN RAISE EXCEPTION 'poison item rejected'; END IF;",
    )
    insert_inbound(conn, "before")
    poison = insert_inbound(conn, "poison")
    insert_inbound(conn, "after", from_number=BOB)
    start_worker(handler_max_attempts=3)
    wait_until_handled(conn, 3)

    assert list_items(conn) == ["before", "after"]
    row = conn.execute(
        "SELECT outcome, attempts, error FROM smsworker.handled_message WHERE message_id = %s",
        [poison],
    ).fetchone()
    assert row is not None
    outcome, attempts, error = row
    assert outcome == "dead-letter"
    assert attempts == 3
    assert "poison item rejected" in error
    replies = conn.execute("SELECT count(*) FROM smsworker.outbox WHERE message_id = %s", [poison])
    assert replies.fetchone() == (0,)


def test_session_time_zone_changes_nothing(conn, database_url, start_worker):
    conn.execute(f"ALTER DATABASE {conn.info.dbname} SET timezone TO 'Pacific/Kiritimati'")
    insert_inbound(conn, "late", date_created=utc_now() - timedelta(hours=2))
    insert_inbound(conn, "now")
    start_worker()
    wait_until_handled(conn, 2)

    assert sorted(list_items(conn)) == ["late", "now"]


def test_metrics_report_caught_up(conn, start_worker):
    for index in range(30):
        insert_inbound(conn, f"metric {index}")
    worker = start_worker(batch_size=10)
    wait_until_handled(conn, 30)
    insert_inbound(conn, "one more")
    wait_until_handled(conn, 31)

    registry = worker.metrics.registry
    wait_until(
        lambda: registry.get_sample_value("smsworker_backlog_messages") == 0,
        message="a backlog of 0",
    )
    assert registry.get_sample_value("smsworker_lag_seconds") == 0
    added = registry.get_sample_value(
        "smsworker_messages_handled_total", {"command": "add", "outcome": "added"}
    )
    assert added == 31


def test_failure_inside_batch_others_applied_once(conn, start_worker):
    create_item_trigger(
        conn,
        "reject_poison",
        "IF NEW.body = 'poison' THEN RAISE EXCEPTION 'poison item rejected'; END IF;",
    )
    bodies = [f"batch item {index}" for index in range(49)]
    for body in bodies[:20]:
        insert_inbound(conn, body)
    poison = insert_inbound(conn, "poison")
    for body in bodies[20:]:
        insert_inbound(conn, body)

    start_worker(batch_size=50, handler_max_attempts=2)
    wait_until_handled(conn, 50)

    assert list_items(conn) == bodies
    assert item_counts(conn) == dict.fromkeys(bodies, 1)
    replies = conn.execute(
        "SELECT message_id, count(*) FROM smsworker.outbox GROUP BY message_id"
    ).fetchall()
    assert len(replies) == 49
    assert all(count == 1 for _, count in replies)
    outcome = conn.execute(
        "SELECT outcome FROM smsworker.handled_message WHERE message_id = %s", [poison]
    ).fetchone()
    assert outcome == ("dead-letter",)
