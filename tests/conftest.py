"""Fixtures: a real PostgreSQL (embedded unless TEST_DATABASE_URL is set), a fresh
database per test copied from a migrated template, the fake Twilio API, a
worker running in a thread, and smsworker processes (from cli_helpers)."""

import itertools
import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from smsworker import db
from smsworker.metrics import Metrics
from smsworker.sender import TwilioSender
from smsworker.settings import Settings, TwilioSettings
from smsworker.worker import Worker
from tests.cli_helpers import start_cli, start_run  # noqa: F401 (fixtures for every module)
from tests.fake_twilio import FakeTwilio

TEMPLATE_DATABASE = "smsworker_test_template"
ACCOUNT_SID = "AC" + "5" * 32
# Fictional numbers in the 555-01xx range, reserved for examples.
BOT_NUMBER = "+12135550100"
ALICE = "+12135550101"
BOB = "+12135550102"


def utc_now() -> datetime:
    """Return the current UTC time as twilio.message stores it: naive, whole seconds."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """The URL of a PostgreSQL server the tests may create databases on."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return

    import pgserver  # type: ignore[import-untyped]

    # pgserver runs PostgreSQL as an unprivileged user when started as root,
    # so the data folder must be reachable by that user.
    data_dir = Path(tempfile.mkdtemp(prefix="smsworker-test-pg-"))
    data_dir.chmod(0o755)
    server = pgserver.get_server(data_dir, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def template_database(server_url: str) -> str:
    """Create a database with smsworker's schema that each test database copies."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {TEMPLATE_DATABASE}")
    db.migrate(make_conninfo(server_url, dbname=TEMPLATE_DATABASE))
    return TEMPLATE_DATABASE


@contextmanager
def fresh_database(server_url: str, template: str | None = None) -> Iterator[str]:
    """Create a database (a copy of `template` when given), yield its URL, drop it."""
    name = f"smsworker_test_{uuid.uuid4().hex[:12]}"
    template_clause = f" TEMPLATE {template}" if template else ""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}{template_clause}")
    yield make_conninfo(server_url, dbname=name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def database_url(server_url: str, template_database: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    with fresh_database(server_url, template_database) as url:
        yield url


@pytest.fixture
def empty_database_url(server_url: str) -> Iterator[str]:
    """A fresh database without smsworker's schema, as a syncer's database looks."""
    with fresh_database(server_url) as url:
        yield url


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the test database, standing in for the syncer."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio(account_sid=ACCOUNT_SID) as fake:
        yield fake


# Rows inserted without an explicit date_created get consecutive seconds from
# an hour ago, so tests that add several items know the order they are handled
# in. Real rows of one second are ordered by their random ids.
_next_second = itertools.count()
_CLOCK_START = utc_now() - timedelta(hours=1)


def next_date_created() -> datetime:
    return _CLOCK_START + timedelta(seconds=next(_next_second))


def new_message_id() -> str:
    return "SM" + uuid.uuid4().hex


def insert_inbound(
    conn: psycopg.Connection[Any],
    body: str | None,
    *,
    from_number: str = ALICE,
    to_number: str = BOT_NUMBER,
    date_created: datetime | None = None,
    message_id: str | None = None,
    direction: str = "inbound",
) -> str:
    """Insert a row shaped like the syncer's and return its id."""
    message_id = message_id or new_message_id()
    created = date_created or next_date_created()
    conn.execute(
        """
        INSERT INTO twilio.message (
            id, account_id, api_version, body, date_created, date_sent, date_updated,
            deleted, direction, "from", num_media, num_segments, price, price_unit,
            status, "to", uri)
        VALUES (%s, %s, '2010-04-01', %s, %s, %s, %s, false, %s, %s, 0, 1,
                NULL, 'USD', 'received', %s, %s)
        """,
        [
            message_id,
            ACCOUNT_SID,
            body,
            created,
            created,
            created,
            direction,
            from_number,
            to_number,
            f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{message_id}.json",
        ],
    )
    return message_id


def list_items(conn: psycopg.Connection[Any]) -> list[str]:
    return [row[0] for row in conn.execute("SELECT body FROM smsworker.list_item ORDER BY id")]


def handled_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM smsworker.handled_message").fetchone()
    assert row is not None
    return int(row[0])


def wait_until(
    condition: Callable[[], bool], *, timeout: float = 15.0, message: str = "condition"
) -> None:
    """Wait for a condition that another thread or process makes true."""
    event = threading.Event()
    deadline = datetime.now() + timedelta(seconds=timeout)
    while not condition():
        if datetime.now() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        event.wait(0.02)


class RunningWorker:
    """A Worker running in a background thread, stopped by the fixture."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.error: BaseException | None = None
        twilio = settings.twilio
        assert twilio is not None
        self.worker = Worker(
            settings, sender_factory=lambda: TwilioSender(twilio), metrics=self.metrics
        )
        self.thread = threading.Thread(target=self._run, name="test-worker")

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as error:  # Reported by stop().
            self.error = error

    def start(self) -> "RunningWorker":
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop the worker and re-raise whatever made its thread fail."""
        self.worker.stop()
        if self.thread.ident is not None:
            self.thread.join(30)
        assert not self.thread.is_alive(), "worker did not stop within 30 s"
        if self.error is not None:
            raise self.error


@pytest.fixture
def make_settings(database_url: str, fake_twilio: FakeTwilio) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "twilio": TwilioSettings(
                fake_twilio.account_sid, fake_twilio.auth_token, fake_twilio.url
            ),
            "metrics_port": 0,
            # The tests of the to-do list itself share one list; test_groups.py
            # runs the private lists.
            "open_list": True,
            "poll_interval_s": 5.0,
            "send_retry_budget_s": 5.0,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def start_worker(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., RunningWorker]]:
    """Start a worker thread; every worker started is stopped at the end of the test."""
    running: list[RunningWorker] = []

    def start(**overrides: Any) -> RunningWorker:
        worker = RunningWorker(make_settings(**overrides)).start()
        running.append(worker)
        return worker

    yield start
    for worker in running:
        worker.stop()


def pending_replies(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM smsworker.outbox WHERE status = 'pending'").fetchone()
    assert row is not None
    return int(row[0])


def wait_until_handled(conn: psycopg.Connection[Any], count: int, timeout: float = 15.0) -> None:
    """Wait until `count` messages are handled and no reply is waiting to be sent."""
    wait_until(
        lambda: handled_count(conn) >= count and pending_replies(conn) == 0,
        timeout=timeout,
        message=f"{count} handled messages and an empty outbox",
    )


class RestartableServer:
    """An embedded PostgreSQL of one test's own, which the test may stop and restart."""

    def __init__(self, data_dir: Path) -> None:
        import pgserver

        self.server = pgserver.get_server(data_dir, cleanup_mode="delete")
        self.data_dir = data_dir
        self.url = self.server.get_uri()

    def stop(self) -> None:
        """Stop the server with a fast shutdown, as an operator's restart does."""
        from pgserver import _commands

        _commands.pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=self.data_dir, user=self.server.system_user
        )

    def start(self) -> None:
        self.server.ensure_postgres_running()

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def restartable_server() -> Iterator[RestartableServer]:
    """A migrated embedded PostgreSQL that the test may stop and start.

    Skipped with TEST_DATABASE_URL, since the tests must not restart a
    server they did not start.
    """
    if os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("restarting PostgreSQL needs the embedded server")
    data_dir = Path(tempfile.mkdtemp(prefix="smsworker-test-restart-"))
    data_dir.chmod(0o755)
    server = RestartableServer(data_dir)
    db.migrate(server.url)
    try:
        yield server
    finally:
        server.start()
        server.server.cleanup()


def create_item_trigger(conn: psycopg.Connection[Any], name: str, body: str) -> None:
    """Run `body` (PL/pgSQL) before each insert into smsworker.list_item."""
    conn.execute(
        f"""
        CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            {body}
            RETURN NEW;
        END $$;
        CREATE TRIGGER {name} BEFORE INSERT ON smsworker.list_item
            FOR EACH ROW EXECUTE FUNCTION {name}();
        """
    )
