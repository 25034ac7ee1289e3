"""Connections to PostgreSQL and the schema migrations.

This module and `sender` are the only ones that talk to outside clients;
psycopg's connection errors leave here as DatabaseUnavailable.
"""

import hashlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.rows import TupleRow

from smsworker import queries
from smsworker.errors import ConfigurationError, DatabaseUnavailable

logger = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent / "sql"
NOTIFY_CHANNEL = "smsworker_message"
CONNECT_TIMEOUT_S = 10
# libpq keepalives and TCP_USER_TIMEOUT (milliseconds): a server that vanished
# without a reset is noticed within about a minute, not the kernel's hours.
KEEPALIVE_OPTIONS: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,
}
# Serialises concurrent `smsworker migrate` runs against one database.
MIGRATION_LOCK_KEY = 0x736D7377  # "smsw"

Connection = psycopg.Connection[TupleRow]


def connection_options(database_url: str, application_name: str) -> str:
    """Return the connection string with smsworker's timeouts and keepalives added.

    Keepalives matter only over TCP; a Unix socket has no peer to lose.
    """
    options: dict[str, int | str] = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "application_name": application_name,
    }
    if not _is_unix_socket(database_url):
        options.update(KEEPALIVE_OPTIONS)
    return psycopg.conninfo.make_conninfo(database_url, **options)


def connect(
    database_url: str, *, autocommit: bool = False, application_name: str = "smsworker"
) -> Connection:
    """Open a connection, translating failure into DatabaseUnavailable."""
    conninfo = connection_options(database_url, application_name)
    try:
        return psycopg.connect(conninfo, autocommit=autocommit)
    except psycopg.OperationalError as error:
        raise DatabaseUnavailable(f"cannot connect to the database: {error}") from error


def _is_unix_socket(database_url: str) -> bool:
    host = psycopg.conninfo.conninfo_to_dict(database_url).get("host")
    return isinstance(host, str) and host.startswith("/")


@contextmanager
def database_errors() -> Iterator[None]:
    """Translate psycopg's connection errors into DatabaseUnavailable."""
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError) as error:
        # The server's CONTEXT lines would make a multi-line log record.
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise DatabaseUnavailable(f"lost the database connection: {first_line}") from error


def migration_files() -> list[Path]:
    """Return the schema files in the order they are applied."""
    return sorted(SQL_DIR.glob("[0-9]*.sql"))


def migrate(
    database_url: str, *, open_list: bool = False, on_notice: Callable[[str], None] | None = None
) -> list[str]:
    """Apply every file under sql/ in order, in one transaction.

    Every file is written to be idempotent, so running this again changes
    nothing but re-attaching the trigger (which a syncer that recreated its
    table would have lost). With `open_list`, the shared list stays as it is
    instead of moving into groups. The notices a file raises to say what it
    changed go to `on_notice`. Returns the names of the files applied.
    """
    applied = []
    with connect(database_url) as conn, database_errors():
        if on_notice is not None:
            conn.add_notice_handler(lambda notice: _forward_notice(notice, on_notice))
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK_KEY])
        conn.execute(
            "SELECT set_config('smsworker.open_mode', %s, true)", ["on" if open_list else "off"]
        )
        conn.execute("CREATE SCHEMA IF NOT EXISTS smsworker")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS smsworker.schema_migration ("
            " name text PRIMARY KEY, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for path in migration_files():
            sql = path.read_text(encoding="utf-8")
            conn.execute(sql.encode("utf-8"))
            conn.execute(
                "INSERT INTO smsworker.schema_migration (name, checksum)"
                " VALUES (%s, %s) ON CONFLICT (name) DO UPDATE"
                " SET checksum = excluded.checksum, applied_at = now()",
                [path.name, hashlib.sha256(sql.encode("utf-8")).hexdigest()],
            )
            applied.append(path.name)
    logger.info("Applied %d schema files: %s.", len(applied), ", ".join(applied))
    return applied


# The prefix of the notices that report what a migration changed. PostgreSQL's
# own notices ("relation ... already exists, skipping") are not passed on.
NOTICE_PREFIX = "smsworker: "


def _forward_notice(notice: psycopg.errors.Diagnostic, on_notice: Callable[[str], None]) -> None:
    message = str(notice.message_primary or "")
    if message.startswith(NOTICE_PREFIX):
        on_notice(message.removeprefix(NOTICE_PREFIX))


def check_schema(conn: Connection, cursor_name: str) -> None:
    """Raise ConfigurationError unless `smsworker migrate` has run on this database."""
    row = conn.execute("SELECT to_regclass('smsworker.processor_cursor') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        raise ConfigurationError(
            "the database has no smsworker tables; run `smsworker migrate` first"
        )
    row = conn.execute(
        "SELECT 1 FROM smsworker.processor_cursor WHERE name = %s", [cursor_name]
    ).fetchone()
    if row is None:
        raise ConfigurationError(
            f"the database has no cursor named {cursor_name!r}; "
            "run `smsworker migrate` to create it"
        )
    # A database that an older release migrated lacks the newer files' tables.
    applied = {name for (name,) in conn.execute("SELECT name FROM smsworker.schema_migration")}
    missing = [path.name for path in migration_files() if path.name not in applied]
    if missing:
        raise ConfigurationError(
            f"the database's schema is older than this smsworker ({', '.join(missing)} not "
            "applied); stop the workers of the older release and run `smsworker migrate`"
        )


def insert_inbound(database_url: str, row: dict[str, object]) -> None:
    """Insert one inbound row into twilio.message, as the syncer would."""
    with connect(database_url) as conn, database_errors():
        try:
            conn.execute(queries.INSERT_INBOUND, row)
        except psycopg.errors.UndefinedTable as error:
            raise ConfigurationError(
                "the database has no twilio.message table; run `smsworker migrate` first"
            ) from error
