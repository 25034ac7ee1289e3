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


def list_size(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT item_count FROM smsworker.list_size WHERE name = 'todo'").fetchone()
    assert row is not None
    return int(row[0])


def test_list_size_follows_every_kind_of_change(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO smsworker.list_item (body)"
            " SELECT 'item ' || n FROM generate_series(1, 5) AS n"
        )
        assert list_size(conn) == 5
        conn.execute("DELETE FROM smsworker.list_item WHERE body IN ('item 1', 'item 2')")
        assert list_size(conn) == 3
        conn.execute("TRUNCATE smsworker.list_item")
        assert list_size(conn) == 0


def test_migrate_replaces_the_per_row_size_trigger(database_url):
    """A database migrated by an earlier version counted items with a per-row trigger."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """
            CREATE FUNCTION smsworker.count_list_items() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE smsworker.list_size
                SET item_count = item_count + CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END
                WHERE name = 'todo';
                RETURN NULL;
            END;
            $$;
            CREATE TRIGGER smsworker_count_list_items
                AFTER INSERT OR DELETE ON smsworker.list_item
                FOR EACH ROW EXECUTE FUNCTION smsworker.count_list_items();
            """
        )
        db.migrate(database_url)
        conn.execute("INSERT INTO smsworker.list_item (body) VALUES ('one'), ('two')")

        assert list_size(conn) == 2


def test_describe_database_names_host_or_socket():
    from smsworker.worker import describe_database

    assert describe_database("postgresql://w:secret@db.example.com:6432/twilio") == (
        "twilio on db.example.com:6432"
    )
    assert describe_database("postgresql://postgres@/postgres?host=/tmp/pg") == (
        "postgres on the Unix socket in /tmp/pg"
    )
