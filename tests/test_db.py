"""Connection settings and migrations against a real PostgreSQL."""

import psycopg
from psycopg.conninfo import conninfo_to_dict

from smsworker import db


def test_connection_options_tcp_keepalives():
    options = conninfo_to_dict(
        db.connection_options("postgresql://worker@db.example.com/twilio", "smsworker")
    )

    assert options["keepalives"] == "1"
    assert options["keepalives_idle"] == "30"
    assert options["keepalives_interval"] == "10"
    assert options["keepalives_count"] == "3"
    assert options["tcp_user_timeout"] == "60000"
    assert options["application_name"] == "smsworker"
    assert options["host"] == "db.example.com"


def test_connection_options_unix_socket_no_keepalives():
    options = conninfo_to_dict(
        db.connection_options("postgresql://postgres@/postgres?host=/tmp/pg", "smsworker-listener")
    )

    assert "keepalives" not in options
    assert "tcp_user_timeout" not in options
    assert options["application_name"] == "smsworker-listener"


def test_connect_sets_application_name(database_url):
    with db.connect(database_url, application_name="smsworker-listener") as conn:
        row = conn.execute("SHOW application_name").fetchone()

    assert row == ("smsworker-listener",)


def test_migrate_twice_same_schema(database_url):
    def schema(conn: psycopg.Connection) -> list[tuple[str, str]]:
        return conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema IN ('smsworker', 'twilio') ORDER BY 1, 2"
        ).fetchall()

    with psycopg.connect(database_url, autocommit=True) as conn:
        before = schema(conn)
        applied = db.migrate(database_url)
        after = schema(conn)

    assert applied == [path.name for path in db.migration_files()]
    assert after == before
