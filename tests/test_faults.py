"""Faults provoked for real against `smsworker run` processes.

Each test starts the installed console script against a database of its own
and the fake Twilio API, then breaks one thing for real. It restarts or stops
PostgreSQL, terminates the worker's connections, disables the trigger, makes
the handler or Twilio fail, or signals or kills the process. Nothing listens
anywhere but on 127.0.0.1 and the embedded servers' Unix sockets, and every
process a test starts is killed when the test ends.
"""

import functools
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.cli_helpers import (
    STARTED_LINE,
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
    create_item_trigger,
    handled_count,
    insert_inbound,
    list_items,
    pending_replies,
    utc_now,
    wait_until,
)
from tests.fake_twilio import FakeTwilio

STANDBY_LINE = "waiting as a standby"
RECONNECT_WARNING = re.compile(r"WARNING smsworker\.worker: Lost the database, reconnecting")
ADDED_REPLY = re.compile(r"Added (\d+)\. (.*)", re.DOTALL)
ROLE_ACTIVE = 'smsworker_role{role="active"}'
ROLE_STANDBY = 'smsworker_role{role="standby"}'
NOTIFY_TRIGGER = "smsworker_notify_inbound_message"
# A stopped worker must exit within this many seconds of SIGTERM.
STOP_LIMIT_S = 10.0
# A trigger body that makes adding an item slow, so faults land mid-batch.
SLOW_ITEM = "PERFORM pg_sleep(0.05);"
# Seconds between the worker's catch-up queries in these tests.
POLL_INTERVAL = "1"


# Running the command line


@pytest.fixture
def start_run(start_run: Callable[..., CliProcess]) -> Callable[..., CliProcess]:
    """Start `smsworker run` as cli_helpers.start_run does, polling every POLL_INTERVAL seconds."""
    return functools.partial(start_run, poll_interval=POLL_INTERVAL)


# Reading and changing the database


def handled_ids(conn: psycopg.Connection[Any]) -> set[str]:
    return {row[0] for row in conn.execute("SELECT message_id FROM smsworker.handled_message")}


def item_message_ids(conn: psycopg.Connection[Any]) -> set[str]:
    return {row[0] for row in conn.execute("SELECT message_id FROM smsworker.list_item")}


def replies_per_body(twilio: FakeTwilio) -> Counter[str]:
    """Count the "Added N. body" replies Twilio accepted, by item body."""
    counts: Counter[str] = Counter()
    for reply in twilio.messages:
        match = ADDED_REPLY.fullmatch(reply.body)
        assert match is not None, reply.body
        counts[match.group(2)] += 1
    return counts


def outbox_rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Return (message_id, status, twilio_sid) of every queued reply."""
    return [
        tuple(row)
        for row in conn.execute(
            "SELECT message_id, status, twilio_sid FROM smsworker.outbox ORDER BY id"
        )
    ]


def handler_busy(conn: psycopg.Connection[Any]) -> bool:
    """Return whether the worker's handling connection is adding an item at this moment."""
    row = conn.execute(
        """
        SELECT count(*) FROM pg_stat_activity
        WHERE application_name = 'smsworker' AND datname = current_database()
          AND state = 'active' AND query LIKE '%INSERT INTO smsworker.list_item%'
        """
    ).fetchone()
    return row is not None and row[0] > 0


def wait_until_settled(conn: psycopg.Connection[Any], count: int, timeout: float = WAIT_S) -> None:
    """Wait until exactly `count` messages are handled and no reply is pending."""
    wait_until(
        lambda: handled_count(conn) == count and pending_replies(conn) == 0,
        timeout=timeout,
        message=f"{count} handled messages and an empty outbox",
    )


def assert_consistent(
    conn: psycopg.Connection[Any], twilio: FakeTwilio, *, database_stayed: bool = True
) -> list[str]:
    """Check that nothing is half-applied after a stop, and return the list items.

    Every handled add has its item and the other way round, each body is on
    the list once, and a reply is marked sent only if Twilio accepted it.
    While the database stayed up, every reply Twilio accepted is marked sent
    too; without it, an accepted reply may stay pending, to go out again.
    """
    items = list_items(conn)
    assert [body for body, count in Counter(items).items() if count > 1] == []
    assert item_message_ids(conn) == handled_ids(conn)
    outbox = outbox_rows(conn)
    assert sorted(row[0] for row in outbox) == sorted(handled_ids(conn))
    assert {row[1] for row in outbox} <= {"pending", "sent"}
    sent_sids = {row[2] for row in outbox if row[1] == "sent"}
    accepted_sids = {message.sid for message in twilio.messages}
    assert sent_sids <= accepted_sids
    if database_stayed:
        assert sent_sids == accepted_sids
    return items


# The database goes away


def test_database_restart_worker_reconnects(
    restartable_server: Any, fake_twilio: FakeTwilio, start_run: Callable[..., CliProcess]
) -> None:
    url = restartable_server.url
    before = [f"before restart {number}" for number in range(10)]
    after = [f"after restart {number}" for number in range(5)]
    with psycopg.connect(url, autocommit=True) as conn:
        create_item_trigger(conn, "slow_item", SLOW_ITEM)
    worker = start_run(cli_env(url, fake_twilio))
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            for body in before:
                insert_inbound(conn, body)
        # The restart lands in the middle of the batch.
        wait_until(lambda: handler_busy(conn), message="the worker busy with the batch")

    restartable_server.restart()

    with psycopg.connect(url, autocommit=True) as conn:
        for body in after:
            insert_inbound(conn, body)
        wait_until_settled(conn, len(before) + len(after))
        assert list_items(conn) == before + after
        assert handled_count(conn) == len(before) + len(after)

    assert set(replies_per_body(fake_twilio)) == set(before + after)
    assert RECONNECT_WARNING.search(worker.stderr), worker.stderr
    assert "Traceback" not in worker.stderr
    assert worker.popen.poll() is None


def test_database_unreachable_past_limit_exits_1(
    restartable_server: Any, fake_twilio: FakeTwilio, start_run: Callable[..., CliProcess]
) -> None:
    worker = start_run(cli_env(restartable_server.url, fake_twilio), "--database-retry-limit", "2")
    try:
        restartable_server.stop()
        stopped = time.monotonic()
        code = worker.wait_exit(timeout=30)
        elapsed = time.monotonic() - stopped
    finally:
        restartable_server.start()

    assert code == 1
    # The 2 s retry limit, plus the reconnect backoff in progress when it ran out.
    assert elapsed < 15
    assert "Error: the database was unreachable for more than 2 s" in worker.stderr
    assert "Traceback" not in worker.stderr


def test_killed_connections_each_message_once(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
) -> None:
    create_item_trigger(conn, "slow_item", SLOW_ITEM)
    worker = start_run(cli_env(database_url, fake_twilio))
    bodies: list[str] = []
    ids: list[str] = []

    def listener_pids() -> set[int]:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE application_name = 'smsworker-listener' AND datname = current_database()"
        )
        return {row[0] for row in rows}

    for round_number in range(3):
        with conn.transaction():
            for number in range(8):
                bodies.append(f"round {round_number} item {number}")
                ids.append(insert_inbound(conn, bodies[-1], from_number=(ALICE, BOB)[number % 2]))
        wait_until(lambda: handler_busy(conn), message="the worker busy with a batch")
        killed = {
            pid
            for pid, terminated in conn.execute(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name LIKE 'smsworker%' AND datname = current_database()"
            )
            if terminated
        }
        assert killed, "no connection of the worker was terminated"
        wait_until(
            lambda: bool(listener_pids() - killed),  # noqa: B023 - called before the next round.
            message="the worker to reconnect",
        )

    wait_until_settled(conn, len(bodies), timeout=30)
    assert list_items(conn) == bodies
    assert handled_ids(conn) == set(ids)
    assert set(replies_per_body(fake_twilio)) == set(bodies)
    assert RECONNECT_WARNING.search(worker.stderr), worker.stderr
    assert worker.popen.poll() is None


def test_poll_finds_row_without_notification(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
) -> None:
    conn.execute(f"ALTER TABLE twilio.message DISABLE TRIGGER {NOTIFY_TRIGGER}")
    start_run(cli_env(database_url, fake_twilio))

    insert_inbound(conn, "silent insert")

    # Within the poll interval of 1 s, with room for the process to be slow.
    wait_until(lambda: handled_count(conn) == 1, timeout=5, message="the silent row handled")
    assert list_items(conn) == ["silent insert"]
    assert [reply.body for reply in fake_twilio.wait_for_messages(1)] == ["Added 1. silent insert"]


# The handler fails


def test_poison_message_dead_letter_retried(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
    tmp_path: Path,
) -> None:
    create_item_trigger(
        conn,
        "reject_poison",
        "IF NEW.body = 'poison' THEN RAISE EXCEPTION 'poison item rejected'; END IF;",
    )
    env = cli_env(database_url, fake_twilio)
    start_run(env, "--handler-max-attempts", "2")
    insert_inbound(conn, "before")
    poison = insert_inbound(conn, "poison")
    insert_inbound(conn, "after", from_number=BOB)

    wait_until_settled(conn, 3)
    assert list_items(conn) == ["before", "after"]
    assert replies_per_body(fake_twilio) == Counter(["before", "after"])
    letter = conn.execute(
        "SELECT error, attempts, first_failed_at, last_failed_at, retried_at"
        " FROM smsworker.dead_letter WHERE message_id = %s",
        [poison],
    ).fetchone()
    assert letter is not None
    error, attempts, first_failed_at, last_failed_at, retried_at = letter
    assert "poison item rejected" in error
    assert attempts == 2
    assert first_failed_at is not None
    assert first_failed_at <= last_failed_at
    assert retried_at is None

    listed = run_cli("dead-letters", "list", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert poison in listed.stdout
    assert "2 attempts" in listed.stdout
    assert "poison item rejected" in listed.stdout

    conn.execute("DROP TRIGGER reject_poison ON smsworker.list_item")
    retried = run_cli("dead-letters", "retry", "--all", env=env, cwd=tmp_path)
    assert retried.returncode == 0, retried.stderr
    assert "Retried 1 dead letters: 1 handled, 0 failed again, 0 skipped." in retried.stdout
    # The running worker sends the reply the retry queued.
    wait_until_settled(conn, 3)
    assert list_items(conn) == ["before", "after", "poison"]
    assert replies_per_body(fake_twilio) == Counter(["before", "after", "poison"])

    def state() -> list[list[tuple[Any, ...]]]:
        return [
            [tuple(row) for row in conn.execute(sql)]
            for sql in (
                "SELECT * FROM smsworker.list_item ORDER BY id",
                "SELECT * FROM smsworker.handled_message ORDER BY message_id",
                "SELECT * FROM smsworker.dead_letter ORDER BY message_id",
                "SELECT * FROM smsworker.outbox ORDER BY id",
            )
        ]

    before_again = state()
    again = run_cli("dead-letters", "retry", "--all", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "No dead letters to retry." in again.stdout
    assert state() == before_again

    unknown_id = "SM" + "f" * 32
    unknown = run_cli("dead-letters", "retry", unknown_id, env=env, cwd=tmp_path)
    assert unknown.returncode == 0, unknown.stderr
    assert f"{unknown_id}: not a dead letter" in unknown.stdout
    assert "1 skipped" in unknown.stdout
    assert state() == before_again

    neither = run_cli("dead-letters", "retry", env=env, cwd=tmp_path)
    assert neither.returncode == 2
    assert "--all" in neither.stderr
    both = run_cli("dead-letters", "retry", "--all", poison, env=env, cwd=tmp_path)
    assert both.returncode == 2
    assert state() == before_again


def test_poison_message_pruned_retry_changes_nothing(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
    tmp_path: Path,
) -> None:
    create_item_trigger(
        conn,
        "reject_poison",
        "IF NEW.body = 'poison' THEN RAISE EXCEPTION 'poison item rejected'; END IF;",
    )
    env = cli_env(database_url, fake_twilio)
    start_run(env, "--handler-max-attempts", "1")
    poison = insert_inbound(conn, "poison")
    wait_until(lambda: handled_count(conn) == 1, message="the poison message dead-lettered")
    # A syncer that prunes old messages deletes the dead letter's message.
    conn.execute("DELETE FROM twilio.message WHERE id = %s", [poison])

    retried = run_cli("dead-letters", "retry", poison, env=env, cwd=tmp_path)

    assert retried.returncode == 0, retried.stderr
    assert "1 skipped" in retried.stdout
    outcome = conn.execute(
        "SELECT outcome FROM smsworker.handled_message WHERE message_id = %s", [poison]
    ).fetchone()
    assert outcome == ("dead-letter",)


# Twilio fails


def test_twilio_outage_replies_sent_once(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
) -> None:
    fake_twilio.fail_next(10_000, status=503)
    start_run(cli_env(database_url, fake_twilio), "--send-concurrency", "2")
    bodies = [f"during outage {number}" for number in range(4)]
    for body in bodies:
        insert_inbound(conn, body)

    # The list changes while Twilio is down, and the replies wait in the outbox.
    wait_until(lambda: handled_count(conn) == len(bodies), message="messages handled")
    assert list_items(conn) == bodies
    wait_until(lambda: fake_twilio.requests_count >= 4, message="sends that fail")
    assert fake_twilio.messages == []
    assert pending_replies(conn) == len(bodies)

    fake_twilio.clear()

    wait_until(lambda: pending_replies(conn) == 0, timeout=30, message="an empty outbox")
    assert replies_per_body(fake_twilio) == Counter(bodies)
    statuses = conn.execute("SELECT status, attempts FROM smsworker.outbox").fetchall()
    assert {status for status, _ in statuses} == {"sent"}
    assert max(attempts for _, attempts in statuses) > 1


def test_twilio_rate_limit_waits_retry_after(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
) -> None:
    worker = start_run(cli_env(database_url, fake_twilio), "--send-concurrency", "1")
    fake_twilio.fail_next(1, status=429, retry_after=2.5)

    insert_inbound(conn, "rate limited")
    wait_until(lambda: fake_twilio.requests_count >= 1, message="the rate-limited send")
    rejected_at = time.monotonic()
    replies = fake_twilio.wait_for_messages(1, timeout=WAIT_S)
    waited = time.monotonic() - rejected_at

    assert [reply.body for reply in replies] == ["Added 1. rate limited"]
    # The exponential backoff alone would retry within 2 s.
    assert waited >= 2.2
    assert "retrying in 2.5 s: Twilio returned HTTP 429" in worker.stderr
    wait_until(lambda: pending_replies(conn) == 0, message="the reply marked sent")
    row = conn.execute("SELECT status, attempts FROM smsworker.outbox").fetchone()
    assert row == ("sent", 2)


# The connections the worker keeps


def test_listener_never_idle_in_transaction(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
) -> None:
    create_item_trigger(conn, "slow_item", "PERFORM pg_sleep(1);")
    start_run(cli_env(database_url, fake_twilio))
    listener_states: list[str] = []
    samples_while_busy = 0

    with conn.transaction():
        insert_inbound(conn, "slow 1")
        insert_inbound(conn, "slow 2")
    deadline = time.monotonic() + WAIT_S
    while handled_count(conn) < 3:
        assert time.monotonic() < deadline, "the slow messages were not handled in time"
        busy = handler_busy(conn)
        rows = conn.execute(
            "SELECT state FROM pg_stat_activity"
            " WHERE application_name = 'smsworker-listener' AND datname = current_database()"
        )
        listener_states += [row[0] for row in rows]
        if busy:
            samples_while_busy += 1
            if samples_while_busy == 5:
                # A notification arrives while the handler is busy.
                insert_inbound(conn, "slow 3")

    assert samples_while_busy >= 10
    assert listener_states
    assert "idle in transaction" not in listener_states
    assert set(listener_states) <= {"idle", "active"}
    assert list_items(conn) == ["slow 1", "slow 2", "slow 3"]


@pytest.mark.parametrize("pgtz", ["Pacific/Kiritimati", None], ids=["PGTZ", "database-zone"])
def test_time_zone_late_rows_handled(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
    pgtz: str | None,
) -> None:
    conn.execute(f"ALTER DATABASE {conn.info.dbname} SET timezone TO 'Asia/Kathmandu'")
    zones = {"TZ": "America/Los_Angeles"}
    if pgtz is not None:
        zones["PGTZ"] = pgtz
    now = utc_now()
    insert_inbound(conn, "two hours ago", date_created=now - timedelta(hours=2))
    insert_inbound(conn, "a minute ago", date_created=now - timedelta(minutes=1))
    port = free_port()
    start_run(
        cli_env(database_url, fake_twilio, **zones),
        "--late-row-rescan-interval",
        "1",
        metrics_port=port,
    )
    wait_until(lambda: handled_count(conn) == 2, message="the past rows handled")

    # Rows behind the cursor: one announced by its notification, one found by a poll.
    insert_inbound(conn, "late notified", date_created=now - timedelta(minutes=30))
    wait_until(lambda: handled_count(conn) == 3, message="the notified late row handled")
    conn.execute(f"ALTER TABLE twilio.message DISABLE TRIGGER {NOTIFY_TRIGGER}")
    insert_inbound(conn, "late polled", date_created=now - timedelta(minutes=20))
    insert_inbound(conn, "newest polled", date_created=utc_now())
    wait_until_settled(conn, 5)

    assert list_items(conn) == [
        "two hours ago",
        "a minute ago",
        "late notified",
        "late polled",
        "newest polled",
    ]
    assert len(fake_twilio.messages) == 5
    wait_until(
        lambda: scrape_metrics(port).get("smsworker_backlog_messages") == 0.0,
        message="the backlog gauge at 0",
    )
    assert scrape_metrics(port)["smsworker_lag_seconds"] == 0.0


# Shutdown


def test_shutdown_during_burst_exits_0(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
) -> None:
    # Slow items and replies, so the signal finds work in hand of both kinds.
    create_item_trigger(conn, "slow_item", "PERFORM pg_sleep(0.01);")
    fake_twilio.set_delay(0.02)
    worker = start_run(cli_env(database_url, fake_twilio), "--batch-size", "10")
    bodies = [f"burst {number:03d}" for number in range(200)]
    with conn.transaction():
        for body in bodies:
            insert_inbound(conn, body)
    wait_until(lambda: handled_count(conn) >= 20, message="the first batches handled")

    code, elapsed = worker.stop(signal.SIGTERM)

    assert code == 0, worker.stderr
    assert elapsed < STOP_LIMIT_S
    assert "Traceback" not in worker.stderr
    items = assert_consistent(conn, fake_twilio)
    assert 20 <= len(items) < len(bodies)
    assert items == bodies[: len(items)]


def test_shutdown_database_down_exits_0(
    restartable_server: Any, fake_twilio: FakeTwilio, start_run: Callable[..., CliProcess]
) -> None:
    url = restartable_server.url
    worker = start_run(cli_env(url, fake_twilio))
    with psycopg.connect(url, autocommit=True) as conn:
        for number in range(3):
            insert_inbound(conn, f"before the outage {number}")
        wait_until(lambda: handled_count(conn) == 3, message="messages handled")

    try:
        restartable_server.stop()
        worker.wait_for_stderr("Lost the database")
        code, elapsed = worker.stop(signal.SIGTERM)
    finally:
        restartable_server.start()

    assert code == 0, worker.stderr
    assert elapsed < STOP_LIMIT_S
    assert "Traceback" not in worker.stderr
    with psycopg.connect(url, autocommit=True) as conn:
        items = assert_consistent(conn, fake_twilio, database_stayed=False)
    assert items == [f"before the outage {number}" for number in range(3)]


def sends_in_flight(conn: psycopg.Connection[Any]) -> int:
    """Count the reply senders that hold a claimed reply while they wait for Twilio."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE application_name = 'smsworker-sender' AND datname = current_database()"
        " AND state = 'idle in transaction'"
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(
    "failure",
    [
        "errors",
        "no-answer",
    ],
)
def test_shutdown_twilio_failing_exits_0(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
    failure: str,
) -> None:
    if failure == "errors":
        fake_twilio.fail_next(10_000, status=503)
    else:
        fake_twilio.set_delay(60)
    worker = start_run(cli_env(database_url, fake_twilio))
    bodies = [f"unsent {number}" for number in range(3)]
    for body in bodies:
        insert_inbound(conn, body)
    wait_until(lambda: handled_count(conn) == 3, message="messages handled")
    if failure == "errors":
        wait_until(lambda: fake_twilio.requests_count >= 3, message="sends that fail")
    else:
        wait_until(lambda: sends_in_flight(conn) == 3, message="sends waiting for Twilio")

    code, elapsed = worker.stop(signal.SIGTERM)

    assert code == 0, worker.stderr
    assert elapsed < STOP_LIMIT_S
    assert "Traceback" not in worker.stderr
    assert assert_consistent(conn, fake_twilio) == bodies
    assert fake_twilio.messages == []
    assert pending_replies(conn) == 3


# Several workers


def test_workers_standby_takes_over_after_kill(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
) -> None:
    env = cli_env(database_url, fake_twilio)
    first_port, second_port = free_port(), free_port()
    first = start_run(env, metrics_port=first_port)
    second = start_run(env, metrics_port=second_port, wait_for=STANDBY_LINE)

    def roles(port: int) -> tuple[float | None, float | None]:
        samples = scrape_metrics(port)
        return samples.get(ROLE_ACTIVE), samples.get(ROLE_STANDBY)

    assert roles(first_port) == (1.0, 0.0)
    assert roles(second_port) == (0.0, 1.0)
    assert STARTED_LINE not in second.stderr

    bodies = [f"first worker {number}" for number in range(10)]
    ids = [insert_inbound(conn, body) for body in bodies]
    wait_until_settled(conn, len(bodies))
    assert "Handled message" not in second.stderr

    first.popen.kill()
    first.wait_exit()
    killed = time.monotonic()
    wait_until(
        lambda: roles(second_port) == (1.0, 0.0), timeout=10, message="the standby to take over"
    )
    assert time.monotonic() - killed < 5
    second.wait_for_stderr("Took over the active role")

    later = [f"second worker {number}" for number in range(10)]
    ids += [insert_inbound(conn, body) for body in later]
    wait_until_settled(conn, len(bodies) + len(later))

    assert list_items(conn) == bodies + later
    assert handled_ids(conn) == set(ids)
    assert replies_per_body(fake_twilio) == Counter(bodies + later)
    assert second.stderr.count("Handled message") == len(later)
