"""Operating smsworker: metrics of a running worker, status, replay and JSON logs.

Each test runs the smsworker command as an operator would, against a real
PostgreSQL and the fake Twilio server, and reads the metrics over HTTP.
"""

import json
import os
import pty
import signal
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import psycopg
import pytest

from smsworker.cli import TimeParam
from smsworker.logs import mask_phone_number
from tests.cli_helpers import (
    SMSWORKER,
    CliProcess,
    cli_env,
    free_port,
    run_cli,
    scrape_metrics,
)
from tests.conftest import (
    ALICE,
    create_item_trigger,
    handled_count,
    insert_inbound,
    list_items,
    utc_now,
    wait_until,
)
from tests.fake_twilio import FakeTwilio

LAG = "smsworker_lag_seconds"
BACKLOG = "smsworker_backlog_messages"
OUTBOX_PENDING = "smsworker_outbox_pending_replies"


def status_json(database_url: str, tmp_path: Path, *options: str) -> tuple[int, dict[str, Any]]:
    result = run_cli("status", "--json", *options, env=cli_env(database_url), cwd=tmp_path)
    assert result.returncode in (0, 3), result.stderr
    return result.returncode, json.loads(result.stdout)


def item_count(conn: psycopg.Connection[Any], body: str) -> int:
    return list_items(conn).count(body)


# Metrics of a running worker


def test_metrics_lag_and_backlog_while_handler_blocked(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
) -> None:
    port = free_port()
    start_run(cli_env(database_url, fake_twilio), metrics_port=port)
    insert_inbound(conn, "first")
    wait_until(lambda: handled_count(conn) == 1, message="the first message handled")

    # Hold the list's size row, so the worker stops at its first list change.
    with psycopg.connect(database_url) as blocker:
        blocker.execute("SELECT 1 FROM smsworker.list_size FOR UPDATE")
        for body in ("second", "third", "fourth"):
            insert_inbound(conn, body, date_created=utc_now() - timedelta(seconds=30))
        wait_until(lambda: scrape_metrics(port)[BACKLOG] == 3.0, message="a backlog of 3 messages")
        lag = scrape_metrics(port)[LAG]
        assert lag >= 30.0
        wait_until(lambda: scrape_metrics(port)[LAG] > lag, message="the lag to grow")

    wait_until(lambda: scrape_metrics(port)[BACKLOG] == 0.0, message="the backlog to drain")
    samples = scrape_metrics(port)
    assert samples[LAG] == 0.0
    assert samples["smsworker_message_latency_seconds_count"] == 4.0
    row = conn.execute(
        "SELECT extract(epoch FROM date_created AT TIME ZONE 'UTC')"
        " FROM smsworker.processor_cursor WHERE name = 'todo'"
    ).fetchone()
    assert row is not None
    assert samples["smsworker_cursor_timestamp_seconds"] == pytest.approx(float(row[0]))
    last_poll = samples["smsworker_last_poll_timestamp_seconds"]
    assert abs(last_poll - datetime.now(UTC).timestamp()) < 60


def test_metrics_outbox_pending_while_twilio_fails(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
) -> None:
    port = free_port()
    start_run(cli_env(database_url, fake_twilio), metrics_port=port)
    fake_twilio.fail_next(3, status=503)
    insert_inbound(conn, "buy milk")

    wait_until(lambda: scrape_metrics(port)[OUTBOX_PENDING] == 1.0, message="a pending reply")
    fake_twilio.wait_for_messages(1, timeout=30)
    wait_until(lambda: scrape_metrics(port)[OUTBOX_PENDING] == 0.0, message="an empty outbox")
    samples = scrape_metrics(port)
    assert samples["smsworker_send_retries_total"] == 3.0
    assert samples['smsworker_replies_total{outcome="sent"}'] == 1.0


# smsworker status


def test_status_stopped_worker_reports_backlog(
    conn: psycopg.Connection[Any], database_url: str, tmp_path: Path
) -> None:
    for body in ("one", "two"):
        insert_inbound(conn, body, date_created=utc_now() - timedelta(hours=1))

    code, status = status_json(database_url, tmp_path, "--max-lag", "600")

    assert code == 3
    assert status["backlog"] == 2
    assert status["lag_seconds"] >= 3600
    assert status["lag_exceeded"] is True
    assert status["active_worker"] is None
    assert status["outbox_pending"] == 0
    assert status["dead_letters"] == 0


def test_status_running_worker_healthy(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
    tmp_path: Path,
) -> None:
    start_run(cli_env(database_url, fake_twilio))
    message_id = insert_inbound(conn, "one")
    wait_until(lambda: handled_count(conn) == 1, message="the message handled")

    code, status = status_json(database_url, tmp_path, "--max-lag", "600")
    text = run_cli("status", env=cli_env(database_url), cwd=tmp_path)

    assert code == 0
    assert status["backlog"] == 0
    assert status["lag_seconds"] == 0
    assert status["cursor_message_id"] == message_id
    assert status["active_worker"]["application_name"] == "smsworker"
    assert text.returncode == 0
    assert "Backlog" in text.stdout
    assert f"message {message_id}" in text.stdout


def test_status_unmigrated_database_exits_1(empty_database_url: str, tmp_path: Path) -> None:
    result = run_cli("status", env=cli_env(empty_database_url), cwd=tmp_path)

    assert result.returncode == 1
    assert "smsworker migrate" in result.stderr
    assert "Traceback" not in result.stderr


# smsworker replay


def test_replay_fills_gap_once_and_keeps_cursor(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
    tmp_path: Path,
) -> None:
    worker = start_run(cli_env(database_url, fake_twilio))
    ids = [insert_inbound(conn, body) for body in ("alpha", "beta", "gamma")]
    wait_until(lambda: handled_count(conn) == 3, message="three messages handled")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait_exit() == 0
    cursor = conn.execute("SELECT date_created, message_id FROM smsworker.processor_cursor")
    before = cursor.fetchone()
    # A bug lost beta's effects: no item, no reply and no record of handling.
    conn.execute("DELETE FROM smsworker.list_item WHERE body = 'beta'")
    conn.execute("DELETE FROM smsworker.outbox WHERE message_id = %s", [ids[1]])
    conn.execute("DELETE FROM smsworker.handled_message WHERE message_id = %s", [ids[1]])

    dry = run_cli("replay", "--since", "2h", "--dry-run", env=cli_env(database_url), cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert f"{ids[1]}  from {mask_phone_number(ALICE)}  add: handle" in dry.stdout
    assert "2 to skip, 1 to handle. Nothing was changed." in dry.stdout
    assert item_count(conn, "beta") == 0

    for _ in range(2):
        result = run_cli("replay", "--since", "2h", env=cli_env(database_url), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert "Replayed 3 messages" in result.stdout
    assert "0 handled, 3 skipped, 0 failed" in result.stdout
    assert item_count(conn, "beta") == 1
    after = conn.execute("SELECT date_created, message_id FROM smsworker.processor_cursor")
    assert after.fetchone() == before


def test_replay_retries_dead_letter(
    conn: psycopg.Connection[Any], database_url: str, fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    create_item_trigger(conn, "poison", "RAISE EXCEPTION 'handler bug';")
    env = cli_env(database_url, fake_twilio)
    message_id = insert_inbound(conn, "poison pill", date_created=utc_now() - timedelta(minutes=5))
    failed = run_cli(
        "replay", "--since", "1h", "--handler-max-attempts", "1", env=env, cwd=tmp_path
    )
    assert failed.returncode == 1
    assert "0 handled, 0 skipped, 1 failed" in failed.stdout
    assert "dead-letters list" in failed.stderr

    conn.execute("DROP TRIGGER poison ON smsworker.list_item")
    result = run_cli("replay", "--since", "1h", env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "1 handled, 0 skipped, 0 failed" in result.stdout
    assert item_count(conn, "poison pill") == 1
    row = conn.execute(
        "SELECT outcome FROM smsworker.handled_message WHERE message_id = %s", [message_id]
    ).fetchone()
    assert row == ("added",)


def test_replay_beside_running_worker_applies_once(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
    tmp_path: Path,
) -> None:
    start_run(cli_env(database_url, fake_twilio))
    bodies = [f"item {number}" for number in range(200)]
    for body in bodies:
        insert_inbound(conn, body, date_created=utc_now())
    result = run_cli("replay", "--since", "10m", env=cli_env(database_url), cwd=tmp_path)
    wait_until(lambda: handled_count(conn) == 200, message="every message handled")

    assert result.returncode == 0, result.stderr
    assert sorted(list_items(conn)) == sorted(bodies)


def test_replay_progress_bar_on_terminal(
    conn: psycopg.Connection[Any], database_url: str, tmp_path: Path
) -> None:
    for body in ("one", "two"):
        insert_inbound(conn, body, date_created=utc_now() - timedelta(minutes=5))
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [str(SMSWORKER), "replay", "--since", "1h"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=cli_env(database_url),
        cwd=tmp_path,
    )
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the process closed the terminal.
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)

    assert process.wait(30) == 0
    assert "Replaying" in output.decode()
    assert "2 handled, 0 skipped, 0 failed" in output.decode()


@pytest.mark.parametrize(
    "arguments",
    [
        ["--since", "yesterday"],
        ["--since", "10 minutes"],
        ["--since", "2h", "--until", "3h"],
        ["--since", "1h", "--until", "1h"],
        ["--since", "99999999999d"],
    ],
    ids=["word", "spaced-duration", "until-before-since", "empty-window", "huge-duration"],
)
def test_replay_invalid_time_exits_2(
    database_url: str, tmp_path: Path, arguments: list[str]
) -> None:
    result = run_cli("replay", *arguments, env=cli_env(database_url), cwd=tmp_path)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--since" in result.stderr or "--until" in result.stderr


def test_time_param_forms() -> None:
    param = TimeParam()
    now = datetime.now(UTC).replace(tzinfo=None)

    assert param.convert("2026-12-04T09:30", None, None) == datetime(2026, 12, 4, 9, 30)
    assert param.convert("2026-12-04T09:30+01:00", None, None) == datetime(2026, 12, 4, 8, 30)
    assert param.convert("2026-12-04T09:30Z", None, None) == datetime(2026, 12, 4, 9, 30)
    assert abs(param.convert("30m", None, None) - (now - timedelta(minutes=30))) < timedelta(
        seconds=5
    )
    assert abs(param.convert("1d", None, None) - (now - timedelta(days=1))) < timedelta(seconds=5)
    with pytest.raises(click.BadParameter, match="30m, 2h, 1d"):
        param.convert("last week", None, None)


# Logs


def test_json_logs_one_object_per_line_numbers_masked(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    start_cli: Callable[..., CliProcess],
) -> None:
    worker = start_cli(
        "--log-format", "json", "run", "--metrics-port", "0", env=cli_env(database_url, fake_twilio)
    )
    worker.wait_for_output("stderr", "smsworker started")
    insert_inbound(conn, "buy milk")
    worker.wait_for_output("stderr", "Handled message")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait_exit() == 0

    records = [json.loads(line) for line in worker.output("stderr").splitlines()]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    handled = [record for record in records if "Handled message" in record["message"]]
    assert handled[0]["level"] == "INFO"
    assert ALICE not in worker.output("stderr")
    assert ALICE[-4:] in handled[0]["message"]
