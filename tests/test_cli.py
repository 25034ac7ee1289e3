"""End-to-end tests of the `smsworker` command line, run as subprocesses.

Each test starts the installed console script against its own database and,
where replies matter, the fake Twilio API. Nothing listens anywhere but on
127.0.0.1, and every process a test starts is killed when the test ends.
"""

import re
import signal
import socket
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from smsworker.db import migration_files
from tests.cli_helpers import (
    WAIT_S,
    CliProcess,
    cli_env,
    free_port,
    run_cli,
    scrape_metrics,
)
from tests.conftest import (
    ALICE,
    BOB,
    BOT_NUMBER,
    handled_count,
    insert_inbound,
    list_items,
    new_message_id,
    pending_replies,
    utc_now,
    wait_until,
)
from tests.fake_twilio import FakeTwilio

CAROL = "+12135550103"
DAVE = "+12135550104"
ADDED_REPLY = re.compile(r"Added (\d+)\. (.*)", re.DOTALL)

# The twilio.message table as a syncer creates it, before smsworker is installed.
SYNCER_TABLE_DDL = """
CREATE TABLE twilio.message (
    id text PRIMARY KEY,
    account_id text,
    api_version text,
    body text,
    date_created timestamp without time zone,
    date_sent timestamp without time zone,
    date_updated timestamp without time zone,
    deleted boolean,
    direction text,
    error_code integer,
    error_message text,
    "from" text,
    messaging_service_id text,
    num_media integer,
    num_segments integer,
    price numeric,
    price_unit text,
    status text,
    "to" text,
    uri text
)
"""


# Reading the database


def table_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [name]).fetchone()
    assert row is not None
    return bool(row[0])


def notify_trigger_attached(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        """
        SELECT count(*) FROM pg_trigger
        WHERE tgrelid = 'twilio.message'::regclass
          AND tgname = 'smsworker_notify_inbound_message'
          AND tgenabled <> 'D'
        """
    ).fetchone()
    assert row is not None
    return int(row[0]) == 1


def cursor_position(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    row = conn.execute(
        """
        SELECT date_created::text, message_id, floor_date_created::text, floor_message_id
        FROM smsworker.processor_cursor WHERE name = 'todo'
        """
    ).fetchone()
    assert row is not None
    return tuple(row)


def worker_state(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Return the worker's state: cursors, list items, handled messages and replies."""
    queries = {
        "cursor": "SELECT name, date_created::text, message_id, floor_date_created::text,"
        " floor_message_id, updated_at FROM smsworker.processor_cursor ORDER BY name",
        "items": "SELECT id, message_id, body FROM smsworker.list_item ORDER BY id",
        "handled": "SELECT message_id, command, outcome, attempts"
        " FROM smsworker.handled_message ORDER BY message_id",
        "outbox": "SELECT id, message_id, part, to_number, from_number, body"
        " FROM smsworker.outbox ORDER BY id",
    }
    return {name: [tuple(row) for row in conn.execute(sql)] for name, sql in queries.items()}


def create_syncer_table(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as syncer:
        syncer.execute("CREATE SCHEMA twilio")
        syncer.execute(SYNCER_TABLE_DDL)


# Metrics


HANDLED_ADDS = 'smsworker_messages_handled_total{command="add",outcome="added"}'
HANDLED_LISTS = 'smsworker_messages_handled_total{command="list",outcome="listed"}'


# migrate


def test_migrate_empty_database_creates_schema(empty_database_url: str, tmp_path: Path) -> None:
    result = run_cli("migrate", env=cli_env(empty_database_url), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    expected_files = len(migration_files())
    assert f"Schema is up to date ({expected_files} files applied)." in result.stdout
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        for table in (
            "twilio.message",
            "smsworker.processor_cursor",
            "smsworker.handled_message",
            "smsworker.list_item",
            "smsworker.outbox",
            "smsworker.dead_letter",
            "smsworker.schema_migration",
        ):
            assert table_exists(conn, table), table
        assert notify_trigger_attached(conn)
        cursor = conn.execute(
            "SELECT date_created::text, message_id, floor_date_created::text, floor_message_id"
            " FROM smsworker.processor_cursor WHERE name = 'todo'"
        ).fetchone()
        assert cursor == ("-infinity", "", "-infinity", "")


def test_migrate_rerun_changes_nothing(
    empty_database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
    tmp_path: Path,
) -> None:
    env = cli_env(empty_database_url, fake_twilio)
    assert run_cli("migrate", env=env, cwd=tmp_path).returncode == 0
    start_run(env)
    for text in ("buy milk", "walk the dog"):
        inserted = run_cli("inbound", "--from", ALICE, text, env=env, cwd=tmp_path)
        assert inserted.returncode == 0, inserted.stderr
    fake_twilio.wait_for_messages(2)

    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        before = worker_state(conn)
        again = run_cli("migrate", env=env, cwd=tmp_path)

        assert again.returncode == 0, again.stderr
        assert worker_state(conn) == before
        assert list_items(conn) == ["buy milk", "walk the dog"]
        assert notify_trigger_attached(conn)

        # The running worker is still woken by the trigger that migrate replaced.
        inserted = run_cli("inbound", "--from", BOB, "call mum", env=env, cwd=tmp_path)
        assert inserted.returncode == 0, inserted.stderr
        replies = fake_twilio.wait_for_messages(3)
        assert replies[2].body == "Added 3. call mum"
        assert list_items(conn) == ["buy milk", "walk the dog", "call mum"]


def test_migrate_existing_table_skips_history(
    empty_database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
    tmp_path: Path,
) -> None:
    create_syncer_table(empty_database_url)
    long_ago = utc_now() - timedelta(days=30)
    with psycopg.connect(empty_database_url, autocommit=True) as syncer:
        for offset, (body, sender) in enumerate(
            [("eggs", ALICE), ("ls", BOB), ("flour", BOB), ("del 1", ALICE), ("help", CAROL)]
        ):
            insert_inbound(
                syncer, body, from_number=sender, date_created=long_ago + timedelta(hours=offset)
            )
        insert_inbound(
            syncer,
            "Added 1. eggs",
            from_number=BOT_NUMBER,
            to_number=ALICE,
            date_created=long_ago,
            direction="outbound-reply",
        )
        newest_history = insert_inbound(
            syncer, "butter", date_created=utc_now() - timedelta(minutes=1)
        )
    env = cli_env(empty_database_url, fake_twilio)

    migrated = run_cli("migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        assert notify_trigger_attached(conn)
        newest_second = conn.execute(
            "SELECT date_created::text FROM twilio.message WHERE id = %s", [newest_history]
        ).fetchone()
        assert newest_second is not None
        assert cursor_position(conn)[:2] == (newest_second[0], "")
        history = conn.execute(
            "SELECT outcome FROM smsworker.handled_message WHERE message_id = %s",
            [newest_history],
        ).fetchone()
        assert history == ("history",)

        worker = start_run(env)
        assert newest_second[0] in worker.output("stderr")
        insert_inbound(conn, "buy milk", from_number=BOB, date_created=utc_now())

        replies = fake_twilio.wait_for_messages(1)
        wait_until(lambda: handled_count(conn) >= 2, message="the new message to be handled")
        assert [(reply.to, reply.body) for reply in replies] == [(BOB, "Added 1. buy milk")]
        assert list_items(conn) == ["buy milk"]
        assert handled_count(conn) == 2


def test_migrate_existing_table_accepts_long_rows(
    empty_database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
    tmp_path: Path,
) -> None:
    create_syncer_table(empty_database_url)
    env = cli_env(empty_database_url, fake_twilio)
    assert run_cli("migrate", env=env, cwd=tmp_path).returncode == 0
    long_body = "x" * 10_000
    # The id is repetitive, so PostgreSQL compresses it below the B-tree entry limit
    # of the syncer's own primary key. A NOTIFY payload this long would be rejected.
    long_id = "SM" + "0123456789abcdef" * 510
    assert len(long_id.encode()) > 8000

    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        start_run(env)
        # Each INSERT succeeds: the trigger never makes the syncer's INSERT fail.
        insert_inbound(conn, long_body, from_number=ALICE)
        insert_inbound(conn, "long id", from_number=BOB, message_id=long_id)

        wait_until(lambda: handled_count(conn) == 2, message="both long rows to be handled")
        assert list_items(conn) == [long_body, "long id"]
        replies = fake_twilio.wait_for_messages(2)
        assert {(reply.to, reply.body) for reply in replies} == {
            (ALICE, "Added 1. " + "x" * 59 + "…"),
            (BOB, "Added 2. long id"),
        }


def test_migrate_same_second_new_row_is_handled(
    empty_database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
    tmp_path: Path,
) -> None:
    create_syncer_table(empty_database_url)
    second = utc_now()
    env = cli_env(empty_database_url, fake_twilio)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        insert_inbound(conn, "history", date_created=second, message_id="SM" + "f" * 32)
        assert run_cli("migrate", env=env, cwd=tmp_path).returncode == 0
        start_run(env)

        insert_inbound(conn, "buy milk", from_number=ALICE, date_created=second)
        insert_inbound(
            conn, "walk the dog", from_number=BOB, date_created=second + timedelta(seconds=1)
        )

        wait_until(
            lambda: "walk the dog" in list_items(conn), message="the later row to be handled"
        )
        assert list_items(conn) == ["buy milk", "walk the dog"]


def test_migrate_syncer_may_prune_handled_rows(
    empty_database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
    tmp_path: Path,
) -> None:
    create_syncer_table(empty_database_url)
    env = cli_env(empty_database_url, fake_twilio)
    assert run_cli("migrate", env=env, cwd=tmp_path).returncode == 0
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        start_run(env)
        old_message = insert_inbound(conn, "buy milk", from_number=ALICE)
        fake_twilio.wait_for_messages(1)

        # A syncer that prunes old messages deletes a row an item came from;
        # the item stays on the list.
        conn.execute("DELETE FROM twilio.message WHERE id = %s", [old_message])
        migrated = run_cli("migrate", env=env, cwd=tmp_path)
        assert migrated.returncode == 0, migrated.stderr
        assert notify_trigger_attached(conn)
        insert_inbound(conn, "walk the dog", from_number=BOB)

        replies = fake_twilio.wait_for_messages(2)
        assert replies[1].body == "Added 2. walk the dog"
        assert list_items(conn) == ["buy milk", "walk the dog"]


# inbound


def test_inbound_inserts_syncer_shaped_row(database_url: str, tmp_path: Path) -> None:
    # A local time zone far from UTC in both the process and the session must not
    # leak into date_created.
    env = cli_env(database_url, TZ="Pacific/Auckland", PGTZ="America/Los_Angeles")
    before = utc_now()

    result = run_cli("inbound", "--from", ALICE, "buy", "milk", env=env, cwd=tmp_path)

    after = datetime.now(UTC).replace(tzinfo=None)
    assert result.returncode == 0, result.stderr
    assert "Inserted inbound message SM" in result.stdout
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            """
            SELECT id, body, direction, status, date_created, "from", "to", uri
            FROM twilio.message
            """
        ).fetchall()
    assert len(rows) == 1
    message_id, body, direction, status, date_created, from_number, to_number, uri = rows[0]
    assert re.fullmatch(r"SM[0-9a-f]{32}", message_id)
    assert body == "buy milk"
    assert direction == "inbound"
    assert status == "received"
    assert date_created.microsecond == 0
    assert before <= date_created <= after
    assert from_number == ALICE
    assert to_number == BOT_NUMBER
    assert uri.endswith(f"/Messages/{message_id}.json")
    assert message_id in result.stdout


@pytest.mark.parametrize(
    ("options", "named_option"),
    [
        (["--from", "12345"], "--from"),
        (["--from", ALICE, "--to", "abc"], "--to"),
    ],
    ids=["from", "to"],
)
def test_inbound_invalid_number_exits_2(
    database_url: str, tmp_path: Path, options: list[str], named_option: str
) -> None:
    result = run_cli("inbound", *options, "buy milk", env=cli_env(database_url), cwd=tmp_path)

    assert result.returncode == 2
    assert named_option in result.stderr
    assert "E.164" in result.stderr
    assert "Traceback" not in result.stderr
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM twilio.message").fetchone() == (0,)


def test_inbound_missing_text_exits_2(database_url: str, tmp_path: Path) -> None:
    result = run_cli("inbound", "--from", ALICE, env=cli_env(database_url), cwd=tmp_path)

    assert result.returncode == 2
    assert "TEXT" in result.stderr
    assert "Traceback" not in result.stderr


def test_inbound_unmigrated_database_exits_1(empty_database_url: str, tmp_path: Path) -> None:
    result = run_cli(
        "inbound", "--from", ALICE, "buy milk", env=cli_env(empty_database_url), cwd=tmp_path
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "smsworker migrate" in result.stderr


# run: start-up errors


def test_run_unmigrated_database_exits_1(empty_database_url: str, tmp_path: Path) -> None:
    result = run_cli(
        "run",
        "--metrics-address",
        "127.0.0.1",
        "--metrics-port",
        "0",
        env=cli_env(empty_database_url),
        cwd=tmp_path,
    )

    assert result.returncode == 1
    assert "smsworker migrate" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_metrics_port_taken_exits_1(
    database_url: str, fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]

        result = run_cli(
            "run",
            "--metrics-address",
            "127.0.0.1",
            "--metrics-port",
            str(port),
            env=cli_env(database_url, fake_twilio),
            cwd=tmp_path,
        )

    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr
    assert "--metrics-port" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "arguments",
    [
        ["--poll-interval", "nan"],
        ["--late-row-window", "inf"],
        ["--late-row-window", "1e300"],
        ["--late-row-rescan-interval", "0"],
        ["--batch-size", "99999999999999999999"],
        ["--send-concurrency", "100000"],
        ["--database-retry-limit", "-1"],
        ["--database-url", "garbage"],
    ],
    ids=[
        "nan-poll",
        "inf-window",
        "huge-window",
        "zero-rescan",
        "huge-batch",
        "huge-concurrency",
        "negative-limit",
        "garbage-url",
    ],
)
def test_run_invalid_option_exits_2(
    database_url: str, tmp_path: Path, arguments: list[str]
) -> None:
    result = run_cli(
        "run", "--metrics-port", "0", *arguments, env=cli_env(database_url), cwd=tmp_path
    )

    assert result.returncode == 2, result.stderr
    assert arguments[0] in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("present", ["TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"])
def test_run_half_twilio_credentials_exits_2(
    database_url: str, fake_twilio: FakeTwilio, tmp_path: Path, present: str
) -> None:
    env = cli_env(database_url, fake_twilio)
    missing = ({"TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"} - {present}).pop()
    del env[missing]

    result = run_cli(
        "run", "--metrics-address", "127.0.0.1", "--metrics-port", "0", env=env, cwd=tmp_path
    )

    assert result.returncode == 2
    assert "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


# run: handling messages


def test_run_without_credentials_prints_replies(
    conn: psycopg.Connection[Any], database_url: str, start_run: Callable[..., CliProcess]
) -> None:
    worker = start_run(cli_env(database_url))

    assert "replies via the console" in worker.output("stderr")
    insert_inbound(conn, "buy milk", from_number=ALICE)
    worker.wait_for_output("stdout", "Added 1. buy milk")
    assert "--- reply to +*******0101 ---\nAdded 1. buy milk\n" in worker.output("stdout")
    assert ALICE not in worker.output("stdout")


def test_run_metrics_count_handled_adds(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
) -> None:
    port = free_port()
    start_run(cli_env(database_url, fake_twilio), metrics_port=port)

    for body in ("buy milk", "walk the dog", "call mum"):
        insert_inbound(conn, body)
    insert_inbound(conn, "ls", from_number=BOB)
    fake_twilio.wait_for_messages(4)

    wait_until(
        lambda: scrape_metrics(port).get(HANDLED_LISTS) == 1.0,
        message="the list command to be counted",
    )
    samples = scrape_metrics(port)
    assert samples[HANDLED_ADDS] == 3.0
    assert "smsworker_lag_seconds" in samples
    assert "smsworker_backlog_messages" in samples
    wait_until(
        lambda: scrape_metrics(port)["smsworker_backlog_messages"] == 0.0,
        message="the backlog gauge to show the worker caught up",
    )
    assert scrape_metrics(port)["smsworker_lag_seconds"] == 0.0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_signal_stops_cleanly(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
    signum: signal.Signals,
) -> None:
    env = cli_env(database_url, fake_twilio)
    # Slow replies and small batches, so the signal finds work in hand.
    fake_twilio.set_delay(0.02)
    bodies = [f"item {number:03d}" for number in range(100)]
    worker = start_run(env, "--batch-size", "5")
    with conn.transaction():
        for body in bodies:
            insert_inbound(conn, body)
    wait_until(lambda: handled_count(conn) >= 5, message="the first batch to be handled")

    worker.send_signal(signum)

    assert worker.wait_exit(timeout=5) == 0
    stderr = worker.output("stderr")
    assert f"Received {signum.name}, finishing the work in hand and stopping." in stderr
    assert "smsworker stopped." in stderr
    assert "Traceback" not in stderr
    state = worker_state(conn)
    handled_ids = [row[0] for row in state["handled"]]
    item_ids = [row[1] for row in state["items"]]
    assert sorted(item_ids) == sorted(handled_ids)
    assert [row[2] for row in state["items"]] == bodies[: len(item_ids)]
    assert sorted(row[1] for row in state["outbox"]) == sorted(handled_ids)
    # Every reply Twilio accepted was recorded as sent before the worker exited.
    sent = conn.execute("SELECT count(*) FROM smsworker.outbox WHERE status = 'sent'").fetchone()
    assert sent == (len(fake_twilio.messages),)

    # A restarted worker picks up where the stopped one left off.
    start_run(env)
    wait_until(lambda: handled_count(conn) == len(bodies), message="every message to be handled")
    assert list_items(conn) == bodies


@dataclass(frozen=True)
class Inbound:
    """An inbound message of the burst, before the syncer inserts it."""

    message_id: str
    date_created: datetime
    body: str
    sender: str


def insert_page(conn: psycopg.Connection[Any], page: Sequence[Inbound]) -> None:
    """Insert messages in one transaction, as a syncer stores one page of Twilio's list."""
    with conn.transaction():
        for message in page:
            insert_inbound(
                conn,
                message.body,
                from_number=message.sender,
                date_created=message.date_created,
                message_id=message.message_id,
            )


def test_run_sigkill_mid_burst_loses_nothing(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
) -> None:
    env = cli_env(database_url, fake_twilio)
    senders = [ALICE, BOB, CAROL, DAVE]
    total, page_size, per_second = 300, 10, 2
    # Each page covers whole seconds, so pages committed one after another are
    # also in (date_created, id) order. Ids within a second are random.
    start = utc_now() - timedelta(minutes=10)
    burst = [
        Inbound(
            new_message_id(),
            start + timedelta(seconds=number // per_second),
            f"item {number:03d}",
            senders[number % len(senders)],
        )
        for number in range(total)
    ]
    pages = [burst[offset : offset + page_size] for offset in range(0, total, page_size)]
    killed = threading.Event()
    syncer_errors: list[BaseException] = []

    def sync() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as syncer:
                for number, page in enumerate(pages):
                    # The second half waits for the kill, so it lands mid-burst.
                    if number == len(pages) // 2 and not killed.wait(WAIT_S):
                        raise AssertionError("the worker was not killed in time")
                    insert_page(syncer, page)
        except BaseException as error:
            syncer_errors.append(error)

    # Replies take a while, so some are in flight at the kill.
    fake_twilio.set_delay(0.01)
    first = start_run(env)
    syncer = threading.Thread(target=sync, name="test-syncer")
    syncer.start()
    try:
        wait_until(lambda: handled_count(conn) >= 50, message="50 messages to be handled")
        first.popen.kill()
        first.wait_exit()
        handled_at_kill = handled_count(conn)
        unsent_at_kill = {
            row[0]
            for row in conn.execute(
                "SELECT message_id FROM smsworker.outbox WHERE status = 'pending'"
            )
        }
        killed.set()

        start_run(env)
        syncer.join(WAIT_S)
        assert not syncer.is_alive()
        assert syncer_errors == []
        wait_until(
            lambda: handled_count(conn) == total, timeout=30, message="every message handled"
        )
        wait_until(lambda: pending_replies(conn) == 0, timeout=30, message="every reply sent")
    finally:
        killed.set()
        syncer.join()

    assert 50 <= handled_at_kill < total
    expected_order = sorted(burst, key=lambda message: (message.date_created, message.message_id))
    state = worker_state(conn)

    # The list contains every body exactly once, in (date_created, id) order.
    item_bodies = [row[2] for row in state["items"]]
    assert [count for count in Counter(item_bodies).values() if count > 1] == []
    assert item_bodies == [message.body for message in expected_order]
    assert [row[1] for row in state["items"]] == [m.message_id for m in expected_order]

    # Each message was handled once, as an add, and queued exactly one reply.
    assert sorted(row[0] for row in state["handled"]) == sorted(m.message_id for m in burst)
    assert {(row[1], row[2]) for row in state["handled"]} == {("add", "added")}
    assert Counter(row[1] for row in state["outbox"]) == Counter(m.message_id for m in burst)

    # Twilio got at least one reply per message, numbered by the item's position.
    # Only a reply not yet marked sent at the kill may have gone out twice.
    position = {message.body: number for number, message in enumerate(expected_order, 1)}
    by_body = {message.body: message for message in burst}
    replies_per_body: Counter[str] = Counter()
    for reply in fake_twilio.messages:
        match = ADDED_REPLY.fullmatch(reply.body)
        assert match is not None, reply.body
        number, body = int(match.group(1)), match.group(2)
        assert number == position[body], reply.body
        assert (reply.to, reply.from_) == (by_body[body].sender, BOT_NUMBER)
        replies_per_body[body] += 1
    assert set(replies_per_body) == set(position)
    assert max(replies_per_body.values()) <= 2
    twice = {by_body[body].message_id for body, count in replies_per_body.items() if count == 2}
    assert twice <= unsent_at_kill


def test_run_concurrent_syncers_each_message_once(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
) -> None:
    start_run(cli_env(database_url, fake_twilio))
    senders = [ALICE, BOB, CAROL, DAVE]
    per_sender = 25
    errors: list[BaseException] = []

    def sync(sender: str) -> None:
        # Like several syncers, each thread commits one row per transaction with the
        # current second, so rows of one second commit in no particular id order.
        try:
            with psycopg.connect(database_url, autocommit=True) as syncer:
                for number in range(per_sender):
                    insert_inbound(
                        syncer,
                        f"{sender[-4:]} item {number:02d}",
                        from_number=sender,
                        date_created=utc_now(),
                    )
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=sync, args=(sender,)) for sender in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert errors == []
    total = per_sender * len(senders)

    wait_until(lambda: handled_count(conn) == total, message="every message to be handled")
    wait_until(lambda: pending_replies(conn) == 0, message="every reply to be sent")
    items = list_items(conn)
    assert len(items) == total
    assert set(items) == {
        f"{sender[-4:]} item {number:02d}" for sender in senders for number in range(per_sender)
    }
    replied: Counter[str] = Counter()
    for reply in fake_twilio.messages:
        match = ADDED_REPLY.fullmatch(reply.body)
        assert match is not None, reply.body
        replied[match.group(2)] += 1
    assert replied == Counter(items)


@pytest.mark.parametrize("arrival", ["notified", "restart"])
def test_run_late_row_keeps_message_order(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
    arrival: str,
) -> None:
    env = cli_env(database_url, fake_twilio)
    second = utc_now()
    worker = start_run(env)
    insert_inbound(conn, "first", from_number=BOB, date_created=second, message_id="SM" + "f" * 32)
    wait_until(lambda: handled_count(conn) == 1, message="the first message to be handled")

    def insert_alices_texts() -> None:
        # Alice adds an item and then deletes it. Her first text shares its second
        # with the handled one but sorts before it by id, so it arrives late.
        late_id = "SM" + "0" * 32
        insert_inbound(conn, "buy milk", from_number=ALICE, date_created=second, message_id=late_id)
        newer = second + timedelta(seconds=1)
        insert_inbound(conn, "del 2", from_number=ALICE, date_created=newer)

    if arrival == "restart":
        worker.send_signal(signal.SIGTERM)
        assert worker.wait_exit() == 0
        insert_alices_texts()
        start_run(env)
    else:
        with conn.transaction():
            insert_alices_texts()

    wait_until(lambda: handled_count(conn) == 3, message="Alice's messages to be handled")
    replies = fake_twilio.wait_for_messages(3)
    assert [reply.body for reply in replies if reply.to == ALICE] == [
        "Added 2. buy milk",
        "Deleted 2. buy milk",
    ]
    assert list_items(conn) == ["first"]


def test_run_logs_mask_phone_numbers(
    database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
    tmp_path: Path,
) -> None:
    env = cli_env(database_url, fake_twilio, SMSWORKER_LOG_LEVEL="DEBUG")
    worker = start_run(env, "--send-concurrency", "1")
    # A rejection whose message repeats the number, and an opted-out recipient.
    fake_twilio.fail_next(
        1, status=400, code=21211, message=f"The 'To' number {BOB} is not a valid phone number."
    )
    fake_twilio.opted_out.add(CAROL)

    for sender, text in ((BOB, "first"), (CAROL, "second"), (ALICE, "third")):
        inserted = run_cli("inbound", "--from", sender, text, env=env, cwd=tmp_path)
        assert inserted.returncode == 0, inserted.stderr
        assert sender not in inserted.stdout + inserted.stderr
    fake_twilio.wait_for_messages(1)
    worker.wait_for_output("stderr", "Sent reply")
    worker.wait_for_output("stderr", "error 21211")
    worker.wait_for_output("stderr", "error 21610")

    stderr = worker.output("stderr")
    for number in (ALICE, BOB, CAROL, BOT_NUMBER):
        assert number not in stderr
        assert number[2:] not in stderr
    assert "+*******0101" in stderr
    assert "+*******0102" in stderr
    assert "+*******0103" in stderr


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://worker:S3cretPW@[::1/db",
        "postgresql://worker:S3cret PW@db.example.com/db",
        "postgresql://worker:S3cret%zzPW@db.example.com/db",
    ],
    ids=["bad-host", "space", "bad-escape"],
)
def test_invalid_database_url_hides_password(tmp_path: Path, url: str) -> None:
    result = run_cli("status", env=cli_env(url), cwd=tmp_path)

    assert result.returncode == 2
    assert "invalid connection string" in result.stderr
    assert "S3cret" not in result.stderr


@pytest.mark.parametrize(
    "arguments",
    [["dead-letters", "list"], ["dead-letters", "retry", "--all"], ["status"]],
    ids=["dead-letters-list", "dead-letters-retry", "status"],
)
def test_operator_command_unmigrated_database_exits_1(
    empty_database_url: str, tmp_path: Path, arguments: list[str]
) -> None:
    result = run_cli(*arguments, env=cli_env(empty_database_url), cwd=tmp_path)

    assert result.returncode == 1
    assert "smsworker migrate" in result.stderr
    assert "Traceback" not in result.stderr


def test_data_dir_that_cannot_be_created_exits_1(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")

    result = run_cli(
        "status", "--data-dir", str(blocker / "pgdata"), env=cli_env(None), cwd=tmp_path
    )

    assert result.returncode == 1
    assert "cannot create the embedded PostgreSQL's folder" in result.stderr
    assert "Traceback" not in result.stderr
