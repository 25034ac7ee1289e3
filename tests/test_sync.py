"""`smsworker sync`: Twilio's message list polled into twilio.message.

The fake Twilio serves the list with keyset pagination. Each test adds,
changes and deletes messages there and checks what the sync stored, through
the real twilio library and a real PostgreSQL.
"""

import signal
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from smsworker import webhook
from smsworker.metrics import SyncMetrics
from smsworker.settings import TwilioSettings
from smsworker.sync import PollResult, Syncer, SyncError, SyncSettings
from tests.cli_helpers import CliProcess, cli_env, free_port, run_cli, scrape_metrics
from tests.conftest import ALICE, BOB, BOT_NUMBER, RunningWorker, wait_until
from tests.fake_twilio import FakeTwilio
from tests.test_bot import replies_to
from tests.test_webhook import inbound_fields, post, sign

WEBHOOK_TOKEN = "sync-webhook-token"


def twilio_now() -> datetime:
    """Now as Twilio stamps messages: aware UTC, whole seconds."""
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def make_syncer(database_url: str, fake_twilio: FakeTwilio) -> Iterator[Callable[..., Syncer]]:
    """Build Syncers on the test database and the fake Twilio; each is closed at the end."""
    built: list[Syncer] = []

    def make(**overrides: Any) -> Syncer:
        values: dict[str, Any] = {
            "database_url": database_url,
            "twilio": TwilioSettings(
                fake_twilio.account_sid, fake_twilio.auth_token, fake_twilio.url
            ),
            "interval_s": 0.2,
            "retry_budget_s": 5.0,
        }
        values.update(overrides)
        syncer = Syncer(SyncSettings(**values), metrics=SyncMetrics())
        built.append(syncer)
        return syncer

    yield make
    for syncer in built:
        syncer.close()


def poll(syncer: Syncer) -> PollResult:
    result = syncer.poll()
    assert result is not None, "the syncer is a standby"
    assert result.complete
    return result


def stored(conn: psycopg.Connection[Any], message_id: str) -> dict[str, Any] | None:
    cursor = conn.execute("SELECT * FROM twilio.message WHERE id = %s", [message_id])
    row = cursor.fetchone()
    if row is None:
        return None
    assert cursor.description is not None
    return {column.name: value for column, value in zip(cursor.description, row, strict=True)}


def count_rows(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM twilio.message").fetchone()
    assert row is not None
    return int(row[0])


def staged_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM smsworker.sync_staged").fetchone()
    assert row is not None
    return int(row[0])


def naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def test_new_messages_inserted_with_twilio_columns(
    conn: psycopg.Connection[Any], fake_twilio: FakeTwilio, make_syncer: Callable[..., Syncer]
) -> None:
    sent_at = twilio_now() - timedelta(minutes=2)
    record = fake_twilio.add_inbound(ALICE, BOT_NUMBER, "buy milk", date_sent=sent_at)
    syncer = make_syncer()

    first = poll(syncer)
    again = poll(syncer)

    assert (first.fetched, first.inserted, first.updated, first.deleted) == (1, 1, 0, 0)
    assert (again.fetched, again.inserted, again.updated) == (1, 0, 0)
    row = stored(conn, record["sid"])
    assert row is not None
    assert row["body"] == "buy milk"
    assert (row["from"], row["to"]) == (ALICE, BOT_NUMBER)
    assert (row["direction"], row["status"], row["deleted"]) == ("inbound", "received", False)
    assert row["date_created"] == row["date_sent"] == naive(sent_at)
    assert row["account_id"] == fake_twilio.account_sid
    assert row["num_segments"] == 1


def test_nul_character_in_body_dropped(
    conn: psycopg.Connection[Any], fake_twilio: FakeTwilio, make_syncer: Callable[..., Syncer]
) -> None:
    record = fake_twilio.add_inbound(ALICE, BOT_NUMBER, "milk\x00eggs", date_sent=twilio_now())

    assert poll(make_syncer()).inserted == 1

    row = stored(conn, record["sid"])
    assert row is not None
    assert row["body"] == "milkeggs"


def test_follows_pages_and_reads_only_the_window(
    conn: psycopg.Connection[Any], fake_twilio: FakeTwilio, make_syncer: Callable[..., Syncer]
) -> None:
    # Two hours before `now` must fall on the same day, so that Twilio's day
    # filter includes it. Shortly after midnight the messages are dated a
    # little ahead.
    now = max(twilio_now(), twilio_now().replace(hour=3, minute=0, second=0))
    recent = [
        fake_twilio.add_inbound(
            ALICE, BOT_NUMBER, f"recent {n}", date_sent=now - timedelta(seconds=n)
        )
        for n in range(7)
    ]
    syncer = make_syncer(page_size=2, overlap_s=60)

    first = poll(syncer)
    assert first.inserted == 7
    assert first.pages == 4
    requests_before = len(fake_twilio.list_requests)
    # Older messages of the same day, which a later poll's window does not reach.
    for n in range(10):
        fake_twilio.add_inbound(
            BOB, BOT_NUMBER, f"old {n}", date_sent=now - timedelta(hours=2, seconds=n)
        )

    second = poll(syncer)

    queries = fake_twilio.list_requests
    assert "PageToken" not in queries[0]
    assert all("PageToken" in query for query in queries[1:requests_before])
    # The fourth page reaches past the window (the newest minus 60 s), so
    # the poll stops there instead of reading the older messages of the day.
    assert (second.pages, second.fetched, second.inserted) == (4, 8, 1)
    assert count_rows(conn) == 8
    assert all(stored(conn, r["sid"]) is not None for r in recent)


def test_message_behind_the_newest_found_in_the_overlap(
    conn: psycopg.Connection[Any], fake_twilio: FakeTwilio, make_syncer: Callable[..., Syncer]
) -> None:
    now = twilio_now()
    fake_twilio.add_inbound(ALICE, BOT_NUMBER, "newest", date_sent=now)
    syncer = make_syncer(overlap_s=600, page_size=1)
    poll(syncer)
    # Twilio lists a message sent five minutes before the newest one only now.
    late = fake_twilio.add_inbound(BOB, BOT_NUMBER, "late", date_sent=now - timedelta(minutes=5))

    result = poll(syncer)

    assert result.inserted == 1
    assert stored(conn, late["sid"]) is not None


def test_status_error_and_price_changes_updated(
    conn: psycopg.Connection[Any], fake_twilio: FakeTwilio, make_syncer: Callable[..., Syncer]
) -> None:
    sent_at = twilio_now() - timedelta(minutes=3)
    record = fake_twilio.add_inbound(ALICE, BOT_NUMBER, "hello", date_sent=sent_at)
    syncer = make_syncer()
    poll(syncer)
    fake_twilio.update_message(
        record["sid"], status="failed", error_code=30008, price="-0.00790", error_message="Unknown"
    )

    result = poll(syncer)

    assert (result.inserted, result.updated) == (0, 1)
    row = stored(conn, record["sid"])
    assert row is not None
    assert (row["status"], row["error_code"], str(row["price"])) == ("failed", 30008, "-0.00790")
    assert row["date_created"] == naive(sent_at)


def test_message_deleted_at_twilio_becomes_tombstone(
    conn: psycopg.Connection[Any], fake_twilio: FakeTwilio, make_syncer: Callable[..., Syncer]
) -> None:
    sent_at = twilio_now() - timedelta(minutes=5)
    kept_record = fake_twilio.add_inbound(ALICE, BOT_NUMBER, "keep me", date_sent=sent_at)
    deleted_record = fake_twilio.add_inbound(BOB, BOT_NUMBER, "private", date_sent=sent_at)
    syncer = make_syncer()
    poll(syncer)
    fake_twilio.delete_message(deleted_record["sid"])

    result = poll(syncer)

    assert result.deleted == 1
    tombstone = stored(conn, deleted_record["sid"])
    assert tombstone is not None
    assert tombstone["deleted"] is True
    assert {k for k, v in tombstone.items() if v is not None} == {"id", "deleted"}
    survivor = stored(conn, kept_record["sid"])
    assert survivor is not None
    assert survivor["deleted"] is False


def test_newest_unlisted_message_not_deleted(
    conn: psycopg.Connection[Any], fake_twilio: FakeTwilio, make_syncer: Callable[..., Syncer]
) -> None:
    syncer = make_syncer()
    poll(syncer)
    # A message the webhook stored a moment ago, which Twilio's list does not show yet.
    fields = inbound_fields("just arrived")
    conn.execute(
        "INSERT INTO twilio.message (id, account_id, body, date_created, date_sent, deleted,"
        " direction) VALUES (%s, %s, %s, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC',"
        " false, 'inbound')",
        [fields["MessageSid"], fake_twilio.account_sid, "just arrived"],
    )

    result = poll(syncer)

    assert result.deleted == 0
    row = stored(conn, fields["MessageSid"])
    assert row is not None
    assert row["deleted"] is False


def test_rate_limited_pages_retried_after_retry_after(
    conn: psycopg.Connection[Any], fake_twilio: FakeTwilio, make_syncer: Callable[..., Syncer]
) -> None:
    record = fake_twilio.add_inbound(ALICE, BOT_NUMBER, "rate limited", date_sent=twilio_now())
    fake_twilio.fail_next_lists(2, status=429, retry_after=0.1)
    syncer = make_syncer()

    result = poll(syncer)

    assert result.inserted == 1
    assert len(fake_twilio.list_requests) == 3
    assert syncer.metrics.errors.labels(kind="twilio_retried")._value.get() == 2
    assert stored(conn, record["sid"]) is not None


def test_failed_page_resumed_next_poll(
    conn: psycopg.Connection[Any], fake_twilio: FakeTwilio, make_syncer: Callable[..., Syncer]
) -> None:
    now = twilio_now()
    for n in range(6):
        fake_twilio.add_inbound(
            ALICE, BOT_NUMBER, f"item {n}", date_sent=now - timedelta(seconds=n)
        )
    syncer = make_syncer(page_size=2, retry_budget_s=0.3)
    # Serve the first page, then fail every request until the budget runs out.
    fake_twilio.hold_list_requests(after=1)
    failure: list[BaseException] = []

    def first_poll() -> None:
        try:
            syncer.poll()
        except SyncError as error:
            failure.append(error)

    thread = threading.Thread(target=first_poll)
    thread.start()
    fake_twilio.wait_for_list_requests(2)
    fake_twilio.fail_next_lists(100, status=503)
    fake_twilio.release_list_requests()
    thread.join(30)

    assert failure, "the poll should fail once Twilio keeps failing"
    # The first page waits for the end of the run, and the run goes on from the
    # second page.
    assert count_rows(conn) == 0
    assert staged_count(conn) == 2
    fake_twilio.clear_failures()
    result = poll(syncer)
    assert result.pages == 2
    assert result.inserted == 6
    assert count_rows(conn) == 6
    assert staged_count(conn) == 0


def test_rejected_saved_page_restarts_the_run(
    conn: psycopg.Connection[Any], fake_twilio: FakeTwilio, make_syncer: Callable[..., Syncer]
) -> None:
    now = twilio_now()
    records = [
        fake_twilio.add_inbound(ALICE, BOT_NUMBER, f"n{n}", date_sent=now - timedelta(seconds=n))
        for n in range(3)
    ]
    syncer = make_syncer()
    poll(syncer)
    conn.execute(
        "UPDATE smsworker.sync_state SET run_window_start = %s, run_next_page = %s",
        [
            naive(now) - timedelta(minutes=10),
            f"/2010-04-01/Accounts/{fake_twilio.account_sid}/Messages.json?PageSize=2&PageToken=PAexpired",
        ],
    )

    with pytest.raises(SyncError, match="HTTP 400"):
        syncer.poll()
    result = poll(syncer)

    assert result.fetched == 3
    assert all(stored(conn, r["sid"]) is not None for r in records)


def test_wrong_credentials_fail_the_poll_clearly(
    database_url: str, fake_twilio: FakeTwilio, make_syncer: Callable[..., Syncer]
) -> None:
    syncer = make_syncer(
        twilio=TwilioSettings(fake_twilio.account_sid, "wrong-token", fake_twilio.url)
    )

    with pytest.raises(SyncError, match=r"HTTP 401.*TWILIO_AUTH_TOKEN"):
        syncer.poll()


def test_one_syncer_per_account_others_wait(
    fake_twilio: FakeTwilio, make_syncer: Callable[..., Syncer]
) -> None:
    fake_twilio.add_inbound(ALICE, BOT_NUMBER, "once", date_sent=twilio_now())
    active, standby = make_syncer(), make_syncer()

    assert poll(active).inserted == 1
    assert standby.poll() is None
    active.close()
    assert standby.poll() is not None


def test_backfill_loads_history_once_without_replies(
    conn: psycopg.Connection[Any],
    fake_twilio: FakeTwilio,
    make_syncer: Callable[..., Syncer],
    start_worker: Callable[..., RunningWorker],
) -> None:
    now = twilio_now()
    old = [
        fake_twilio.add_inbound(
            ALICE, BOT_NUMBER, f"old {days}", date_sent=now - timedelta(days=days)
        )
        for days in (2, 3, 6)
    ]
    too_old = fake_twilio.add_inbound(
        ALICE, BOT_NUMBER, "too old", date_sent=now - timedelta(days=9)
    )
    fresh = fake_twilio.add_inbound(BOB, BOT_NUMBER, "fresh", date_sent=now - timedelta(minutes=1))
    start_worker()

    backfilling = make_syncer(backfill_s=7 * 86400)
    result = poll(backfilling)

    assert result.inserted == 4
    assert stored(conn, too_old["sid"]) is None
    [reply] = fake_twilio.wait_for_messages(1)
    assert (reply.to, reply.body) == (BOB, "Added 1. fresh")
    history = conn.execute(
        "SELECT message_id FROM smsworker.handled_message WHERE command = 'history'"
    ).fetchall()
    assert {row[0] for row in history} == {record["sid"] for record in old}
    assert stored(conn, fresh["sid"]) is not None

    # A restart with the same option does not load the week again.
    backfilling.close()
    requests_before = len(fake_twilio.list_requests)
    poll(make_syncer(backfill_s=7 * 86400))
    [query] = fake_twilio.list_requests[requests_before:]
    assert query["DateSent>"].startswith((now - timedelta(minutes=11)).date().isoformat())


@pytest.fixture
def webhook_url(database_url: str) -> Iterator[str]:
    """Serve the webhook in this process on an OS-picked port of 127.0.0.1."""
    server = webhook.WebhookServer(
        ("127.0.0.1", 0),
        database_url=database_url,
        auth_token=WEBHOOK_TOKEN,
        public_url="http://127.0.0.1/twilio/inbound",
    )
    # Twilio signs the URL it calls, so the public URL needs the real port.
    server.public_url = f"http://127.0.0.1:{server.server_port}/twilio/inbound"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.public_url
    server.shutdown()
    server.server_close()
    thread.join(5)


def deliver(url: str, record: dict[str, Any]) -> int:
    """POST a fake Twilio message to the webhook, signed; return the HTTP status."""
    fields = {
        **inbound_fields(record["body"], record["sid"]),
        "From": record["from"],
        "AccountSid": record["account_sid"],
    }
    return post(url, fields, sign(url, fields, WEBHOOK_TOKEN))[0]


def handled(conn: psycopg.Connection[Any]) -> dict[str, str]:
    rows = conn.execute("SELECT message_id, command FROM smsworker.handled_message").fetchall()
    return {message_id: command for message_id, command in rows}


def test_sync_and_webhook_store_and_answer_once(
    conn: psycopg.Connection[Any],
    fake_twilio: FakeTwilio,
    make_syncer: Callable[..., Syncer],
    start_worker: Callable[..., RunningWorker],
    webhook_url: str,
) -> None:
    start_worker()
    syncer = make_syncer()
    now = twilio_now()
    # Twilio called the webhook for this one; the sync lists it later.
    webhook_first = fake_twilio.add_inbound(BOB, BOT_NUMBER, "webhook first", date_sent=now)
    # The webhook missed this one, which is older than what the worker handled.
    missed = fake_twilio.add_inbound(
        ALICE, BOT_NUMBER, "missed", date_sent=now - timedelta(seconds=30)
    )
    assert deliver(webhook_url, webhook_first) == 200
    fake_twilio.wait_for_messages(1)
    webhook_created = conn.execute(
        "SELECT date_created FROM twilio.message WHERE id = %s", [webhook_first["sid"]]
    ).fetchone()

    poll(syncer)
    fake_twilio.wait_for_messages(2)
    # Twilio calls the webhook late for a message the sync stored first, and
    # sends the first webhook request again.
    sync_first = fake_twilio.add_inbound(ALICE, BOT_NUMBER, "sync first", date_sent=twilio_now())
    poll(syncer)
    fake_twilio.wait_for_messages(3)
    assert deliver(webhook_url, sync_first) == 200
    assert deliver(webhook_url, webhook_first) == 200
    poll(syncer)

    bodies = sorted(reply.body for reply in fake_twilio.messages)
    assert bodies == ["Added 1. webhook first", "Added 2. missed", "Added 3. sync first"]
    inbound = [webhook_first["sid"], missed["sid"], sync_first["sid"]]
    assert {handled(conn)[sid] for sid in inbound} == {"add"}
    row = conn.execute("SELECT count(*) FROM twilio.message WHERE direction = 'inbound'").fetchone()
    assert row == (3,)
    # The sync keeps the time the webhook stored for a message it had.
    assert (
        conn.execute(
            "SELECT date_created FROM twilio.message WHERE id = %s", [webhook_first["sid"]]
        ).fetchone()
        == webhook_created
    )


def test_restart_mid_paging_resumes(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    start_cli: Callable[..., CliProcess],
) -> None:
    now = twilio_now()
    records = [
        fake_twilio.add_inbound(
            ALICE, BOT_NUMBER, f"page item {n}", date_sent=now - timedelta(seconds=n)
        )
        for n in range(9)
    ]
    env = cli_env(database_url, fake_twilio)
    options = ["--metrics-port", "0", "--page-size", "2", "--interval", "0.5"]
    fake_twilio.hold_list_requests(after=2)
    first = start_cli("sync", *options, env=env)
    fake_twilio.wait_for_list_requests(3)
    first.send_signal(signal.SIGKILL)
    first.wait_exit()

    assert staged_count(conn) == 4
    assert count_rows(conn) == 0
    state = conn.execute(
        "SELECT run_next_page FROM smsworker.sync_state WHERE account_sid = %s",
        [fake_twilio.account_sid],
    ).fetchone()
    assert state is not None
    assert state[0] is not None
    resumed_from = len(fake_twilio.list_requests)
    fake_twilio.release_list_requests()

    second = start_cli("sync", *options, env=env)
    second.wait_for_output("stderr", "Sync poll: fetched")

    assert "Continuing the sync run" in second.stderr
    assert "PageToken" in fake_twilio.list_requests[resumed_from]
    rows = conn.execute(
        "SELECT count(*), count(DISTINCT id) FROM twilio.message WHERE id = ANY(%s)",
        [[r["sid"] for r in records]],
    ).fetchone()
    assert rows == (9, 9)


def test_run_sync_answers_listed_message(
    database_url: str,
    fake_twilio: FakeTwilio,
    start_run: Callable[..., CliProcess],
) -> None:
    port = free_port()
    process = start_run(
        cli_env(database_url, fake_twilio), "--sync", "--sync-interval", "0.5s", metrics_port=port
    )
    fake_twilio.add_inbound(ALICE, BOT_NUMBER, "walk the dog", date_sent=twilio_now())

    replies = fake_twilio.wait_for_messages(1)

    assert replies[0].body == "Added 1. walk the dog"
    process.wait_for_output("stderr", "Sync poll: fetched")
    wait_until(
        lambda: scrape_metrics(port).get("smsworker_sync_messages_fetched_total", 0) >= 1,
        message="the fetched counter",
    )
    samples = scrape_metrics(port)
    assert samples["smsworker_sync_last_success_timestamp_seconds"] > 0
    assert samples['smsworker_sync_messages_written_total{change="inserted"}'] >= 1
    assert samples["smsworker_sync_active"] == 1
    assert "smsworker_lag_seconds" in samples


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backfill", "7x"], "is not a duration"),
        (["--interval", "0"], "--interval"),
        (["--overlap", "0"], "--overlap"),
        (["--page-size", "5000"], "--page-size"),
    ],
)
def test_sync_usage_errors_exit_2(
    database_url: str, fake_twilio: FakeTwilio, tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_cli("sync", *args, env=cli_env(database_url, fake_twilio), cwd=tmp_path)

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_sync_without_credentials_exits_2(database_url: str, tmp_path: Path) -> None:
    result = run_cli("sync", env=cli_env(database_url), cwd=tmp_path)

    assert result.returncode == 2
    assert "TWILIO_ACCOUNT_SID" in result.stderr


def test_sync_on_unmigrated_database_exits_1(
    empty_database_url: str, fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    result = run_cli(
        "sync", "--metrics-port", "0", env=cli_env(empty_database_url, fake_twilio), cwd=tmp_path
    )

    assert result.returncode == 1
    assert "smsworker migrate" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_sync_without_credentials_exits_2(database_url: str, tmp_path: Path) -> None:
    result = run_cli("run", "--sync", env=cli_env(database_url), cwd=tmp_path)

    assert result.returncode == 2
    assert "the sync reads" in result.stderr


def test_sync_survives_database_outage(
    restartable_server: Any, fake_twilio: FakeTwilio, start_cli: Callable[..., CliProcess]
) -> None:
    url = restartable_server.url
    env = cli_env(url, fake_twilio)
    process = start_cli("sync", "--metrics-port", "0", "--interval", "0.5", env=env)
    before = fake_twilio.add_inbound(ALICE, BOT_NUMBER, "before", date_sent=twilio_now())
    with psycopg.connect(url, autocommit=True) as conn:
        wait_until(lambda: stored(conn, before["sid"]) is not None, message="the first message")

    restartable_server.stop()
    during = fake_twilio.add_inbound(BOB, BOT_NUMBER, "during", date_sent=twilio_now())
    process.wait_for_output("stderr", "Sync poll failed")
    restartable_server.start()

    with psycopg.connect(url, autocommit=True) as conn:
        wait_until(lambda: stored(conn, during["sid"]) is not None, message="the missed message")
        assert count_rows(conn) == 2
    assert process.popen.poll() is None


def test_run_of_several_pages_handled_oldest_first(
    conn: psycopg.Connection[Any],
    fake_twilio: FakeTwilio,
    make_syncer: Callable[..., Syncer],
    start_worker: Callable[..., RunningWorker],
) -> None:
    start_worker()
    now = twilio_now()
    bodies = ["first", "second", "third", "ls"]
    records = [
        fake_twilio.add_inbound(ALICE, BOT_NUMBER, body, date_sent=now - timedelta(seconds=5 - n))
        for n, body in enumerate(bodies)
    ]

    assert poll(make_syncer(page_size=2)).pages == 2

    fake_twilio.wait_for_messages(4)
    assert [replies_to(conn, record["sid"]) for record in records] == [
        ["Added 1. first"],
        ["Added 2. second"],
        ["Added 3. third"],
        ["1. first\n2. second\n3. third"],
    ]


def test_webhook_row_outside_the_window_not_deleted(
    conn: psycopg.Connection[Any],
    fake_twilio: FakeTwilio,
    make_syncer: Callable[..., Syncer],
    webhook_url: str,
) -> None:
    now = twilio_now()
    fake_twilio.add_inbound(BOB, BOT_NUMBER, "inside", date_sent=now - timedelta(seconds=650))
    # Twilio calls the webhook for this message late, after the sync's window moved on.
    late = fake_twilio.add_inbound(
        ALICE, BOT_NUMBER, "late", date_sent=now - timedelta(seconds=700)
    )
    syncer = make_syncer(page_size=1, overlap_s=600)
    poll(syncer)
    assert deliver(webhook_url, late) == 200
    # The webhook does not know when Twilio sent the message, and the window
    # check for deletions skips a row without date_sent.
    webhook_row = stored(conn, late["sid"])
    assert webhook_row is not None
    assert webhook_row["date_sent"] is None

    result = poll(syncer)

    assert result.deleted == 0
    row = stored(conn, late["sid"])
    assert row is not None
    assert row["deleted"] is False
    assert row["body"] == "late"


def test_stopped_run_continues_at_another_base_url(
    conn: psycopg.Connection[Any], fake_twilio: FakeTwilio, make_syncer: Callable[..., Syncer]
) -> None:
    now = twilio_now()
    records = [
        fake_twilio.add_inbound(ALICE, BOT_NUMBER, f"n{n}", date_sent=now - timedelta(seconds=n))
        for n in range(5)
    ]
    first = make_syncer(page_size=2)
    fake_twilio.hold_list_requests(after=1)
    thread = threading.Thread(target=first.poll)
    thread.start()
    fake_twilio.wait_for_list_requests(2)
    first.stop_event.set()
    fake_twilio.release_list_requests()
    thread.join(30)
    first.close()
    assert staged_count(conn) == 4

    with FakeTwilio(fake_twilio.account_sid, fake_twilio.auth_token) as moved:
        for record in records:
            moved.add_inbound(
                record["from"], record["to"], record["body"],
                sid=record["sid"], date_sent=parsedate_to_datetime(record["date_sent"]),
            )  # fmt: skip
        second = make_syncer(
            page_size=2,
            twilio=TwilioSettings(moved.account_sid, moved.auth_token, moved.url),
        )
        result = poll(second)

        assert "PageToken" in moved.list_requests[0]
    assert (result.pages, result.inserted) == (1, 5)


def test_run_stops_when_its_sync_cannot_run(
    conn: psycopg.Connection[Any], database_url: str, fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    # A database whose sync tables are missing, as a partial restore might leave it.
    conn.execute("DROP TABLE smsworker.sync_state")

    result = run_cli(
        "run", "--sync", "--metrics-port", "0", env=cli_env(database_url, fake_twilio),
        cwd=tmp_path, timeout=60,
    )  # fmt: skip

    assert result.returncode == 1
    assert "the sync stopped" in result.stderr
    assert "smsworker migrate" in result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TWILIO_ACCOUNT_SID": "AC" + "1" * 32}, "set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"),
        ({"TWILIO_ACCOUNT_SID": "foo", "TWILIO_AUTH_TOKEN": "x"}, "is not an account SID"),
    ],
    ids=["token-missing", "invalid-sid"],
)
def test_sync_credentials_checked(
    database_url: str, tmp_path: Path, env: dict[str, str], message: str
) -> None:
    result = run_cli("sync", env=cli_env(database_url, **env), cwd=tmp_path)

    assert result.returncode == 2
    assert message in result.stderr
    assert "console" not in result.stderr


def test_sync_refuses_older_schema(
    conn: psycopg.Connection[Any], database_url: str, fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    conn.execute("DELETE FROM smsworker.schema_migration WHERE name = '007_sync.sql'")

    result = run_cli(
        "sync", "--metrics-port", "0", env=cli_env(database_url, fake_twilio), cwd=tmp_path
    )

    assert result.returncode == 1
    assert "007_sync.sql not applied" in result.stderr
