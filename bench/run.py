"""Benchmark smsworker against limits measured on the same machine in the same run.

Usage: `make bench`, or `.venv/bin/python bench/run.py`. Writes bench/results.md
and prints it. Runs against an embedded PostgreSQL in a temporary folder, or
against BENCH_DATABASE_URL when set: a scratch database whose smsworker and
twilio schemas it DROPS. DATABASE_URL is ignored, so a shell set up for the
worker cannot point the benchmark at production data. Sizes come from the
environment so a quick run is possible:

    BENCH_DRAIN_MESSAGES   backlog drained in the catch-up measurement (100000)
    BENCH_LIVE_RATE        messages per second in the live measurement (200)
    BENCH_LIVE_SECONDS     how long the live measurement runs (30)
    BENCH_REPLIES          replies sent through a slow fake Twilio (1000)
    BENCH_MEMORY_MESSAGES  backlog drained by a worker process for peak RSS (1000000)
"""

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from smsworker import __version__, db  # noqa: E402
from smsworker.settings import Settings  # noqa: E402
from tests.fake_twilio import FakeTwilio  # noqa: E402

RESULTS = REPO / "bench" / "results.md"
ALICE = "+12135550101"
BOT_NUMBER = "+12135550100"
LIMIT_SAMPLE_S = 5.0
POLL_S = 0.05


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def reset_database(url: str) -> None:
    """Drop smsworker's schema and the message table, then migrate afresh."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS smsworker CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS twilio CASCADE")
        conn.execute("DROP TABLE IF EXISTS bench_insert, bench_notify")
    db.migrate(url, open_list=True)


def insert_backlog(url: str, count: int) -> None:
    """Insert `count` inbound messages at once: mostly additions, 2% ls, 3% del."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO twilio.message (id, account_id, api_version, body, date_created,
                deleted, direction, "from", "to", status, num_media, num_segments)
            SELECT 'SM' || md5(n::text), 'AC' || repeat('5', 32), '2010-04-01',
                   CASE WHEN n %% 50 = 0 THEN 'ls' WHEN n %% 33 = 0 THEN 'del 1'
                        ELSE 'bench item ' || n END,
                   timestamp '2026-01-01' + (n / 10) * interval '1 second',
                   false, 'inbound', %s, %s, 'received', 0, 1
            FROM generate_series(1, %s) AS n
            """,
            [ALICE, BOT_NUMBER, count],
        )
        conn.execute("ANALYZE twilio.message")


def handled_count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM smsworker.handled_message").fetchone()
    return int(row[0]) if row else 0


def wait_for(
    condition: Callable[[], bool],
    timeout_s: float,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout_s:.0f} s")
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the worker exited with code {process.returncode}")
        time.sleep(POLL_S)


def measure_insert_limit(url: str) -> float:
    """Return bare single-row INSERT + COMMIT per second on one connection."""
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE bench_insert (id bigserial PRIMARY KEY, body text)")
        conn.commit()
        count = 0
        started = time.monotonic()
        while time.monotonic() - started < LIMIT_SAMPLE_S:
            conn.execute("INSERT INTO bench_insert (body) VALUES ('x')")
            conn.commit()
            count += 1
        return count / (time.monotonic() - started)


def start_worker_process(url: str, fake: FakeTwilio) -> subprocess.Popen[bytes]:
    """Start `smsworker run` with its defaults, replying through the fake Twilio.

    The worker runs in its own process, as in production, so the fake Twilio
    server in this one does not compete with it for the interpreter.
    """
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "TWILIO_ACCOUNT_SID": fake.account_sid,
        "TWILIO_AUTH_TOKEN": fake.auth_token,
        "TWILIO_API_BASE_URL": fake.url,
    }
    command = [str(Path(sys.executable).parent / "smsworker"), "--log-level", "WARNING", "run"]
    # The benchmark's senders belong to no group, so the worker runs the open
    # list, which measures the list itself.
    command += ["--metrics-port", "0", "--open"]
    return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)


def stop_worker_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(30)


def measure_drain(url: str, fake: FakeTwilio, count: int) -> tuple[float, float]:
    """Drain a backlog of `count` messages with a worker process.

    Returns messages per second, timed from the process's start until the
    cursor reaches the newest message, and the process's peak RSS in MB.
    """
    reset_database(url)
    insert_backlog(url, count)
    with psycopg.connect(url, autocommit=True) as conn:
        newest = conn.execute(
            "SELECT id FROM twilio.message ORDER BY date_created DESC, id DESC LIMIT 1"
        ).fetchone()
        started = time.monotonic()
        process = start_worker_process(url, fake)
        try:
            wait_for(lambda: cursor_at(conn) == newest, timeout_s=7200, process=process)
            elapsed = time.monotonic() - started
            status = Path(f"/proc/{process.pid}/status").read_text()
        finally:
            stop_worker_process(process)
        if handled_count(conn) != count:
            raise RuntimeError(f"the worker handled {handled_count(conn)} messages, not {count}")
    peak_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    return count / elapsed, peak_kb / 1024


def worker_listening(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'smsworker-listener'"
    ).fetchone()
    return row is not None and row[0] > 0


def cursor_at(conn: psycopg.Connection) -> tuple[str] | None:
    return conn.execute(
        "SELECT message_id FROM smsworker.processor_cursor WHERE name = 'todo'"
    ).fetchone()


def measure_notify_limit(url: str) -> float:
    """Return the median seconds from sending an INSERT to a listener hearing its trigger.

    Timed from before the INSERT: by the time an autocommit INSERT returns,
    the notification has often arrived already.
    """
    with (
        psycopg.connect(url, autocommit=True) as writer,
        psycopg.connect(url, autocommit=True) as listener,
    ):
        writer.execute(
            """
            CREATE TABLE bench_notify (id bigserial PRIMARY KEY);
            CREATE FUNCTION bench_notify() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_notify('bench', NEW.id::text); RETURN NULL; END $$;
            CREATE TRIGGER bench_notify AFTER INSERT ON bench_notify
                FOR EACH ROW EXECUTE FUNCTION bench_notify();
            """
        )
        listener.execute("LISTEN bench")
        samples = []
        for _ in range(500):
            started = time.monotonic()
            writer.execute("INSERT INTO bench_notify DEFAULT VALUES")
            next(listener.notifies(timeout=5, stop_after=1))
            samples.append(time.monotonic() - started)
        return statistics.median(samples)


def measure_live(url: str, fake: FakeTwilio, rate: int, seconds: int) -> dict[str, float]:
    """Insert `rate` messages a second and time each to its list change and its reply.

    A trigger added for the benchmark notifies when a handled_message row is
    inserted. PostgreSQL delivers a notification when its transaction
    commits, so hearing it times the list change's commit.
    """
    reset_database(url)
    fake.clear()
    committed_at: dict[str, float] = {}
    handled_at: dict[str, float] = {}
    body_to_id: dict[str, str] = {}
    total = rate * seconds
    with (
        psycopg.connect(url, autocommit=True) as conn,
        psycopg.connect(url, autocommit=True) as listener,
    ):
        conn.execute(
            """
            CREATE FUNCTION smsworker.bench_handled() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_notify('bench_handled', NEW.message_id); RETURN NULL; END $$;
            CREATE TRIGGER bench_handled AFTER INSERT ON smsworker.handled_message
                FOR EACH ROW EXECUTE FUNCTION smsworker.bench_handled();
            """
        )
        listener.execute("LISTEN bench_handled")

        def listen() -> None:
            for notification in listener.notifies(timeout=seconds + 120):
                handled_at[notification.payload] = time.monotonic()
                if len(handled_at) >= total:
                    break

        listening = threading.Thread(target=listen, name="bench-listener")
        listening.start()
        process = start_worker_process(url, fake)
        try:
            wait_for(lambda: worker_listening(conn), timeout_s=60, process=process)
            interval = 1.0 / rate
            next_at = time.monotonic()
            for number in range(total):
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += interval
                message_id = f"SM{number:032x}"
                body = f"live item {number}"
                created = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
                conn.execute(
                    'INSERT INTO twilio.message (id, body, date_created, direction, "from", "to")'
                    " VALUES (%s, %s, %s, 'inbound', %s, %s)",
                    [message_id, body, created, ALICE, BOT_NUMBER],
                )
                committed_at[message_id] = time.monotonic()
                body_to_id[body] = message_id
            listening.join()
            fake.wait_for_messages(total, timeout=120)
        finally:
            stop_worker_process(process)

    to_change = [handled_at[i] - committed_at[i] for i in committed_at]
    to_reply = []
    for sent in fake.messages:
        body = sent.body.split(". ", 1)[1]
        if body in body_to_id:
            to_reply.append(sent.received_at - committed_at[body_to_id[body]])
    return {
        "change_p50": percentile(to_change, 0.5),
        "change_p99": percentile(to_change, 0.99),
        "change_max": max(to_change),
        "reply_p50": percentile(to_reply, 0.5),
        "reply_p99": percentile(to_reply, 0.99),
        "reply_max": max(to_reply),
    }


def measure_replies(url: str, fake: FakeTwilio, count: int) -> float:
    """Return seconds to send `count` queued replies through a fake Twilio 200 ms away."""
    reset_database(url)
    fake.clear()
    fake.set_delay(0.2)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO smsworker.outbox (message_id, part, to_number, from_number, body)
            SELECT 'SM' || md5(n::text), 1, %s, %s, 'reply ' || n
            FROM generate_series(1, %s) AS n
            """,
            [ALICE, BOT_NUMBER, count],
        )
    started = time.monotonic()
    process = start_worker_process(url, fake)
    try:
        fake.wait_for_messages(count, timeout=1800)
        elapsed = time.monotonic() - started
    finally:
        stop_worker_process(process)
        fake.set_delay(0)
    return elapsed


def measure_pgqueuer(url: str, count: int) -> float:
    """Return jobs per second for PgQueuer draining `count` jobs that each add an item.

    PgQueuer 1.6 with its psycopg driver, in drain mode, batches of 100; the
    handler inserts the item on a second autocommit connection.
    """
    import asyncio

    from pgqueuer import PsycopgDriver, Queries, QueueManager
    from pgqueuer.domain.types import QueueExecutionMode

    async def drain() -> float:
        async with (
            await psycopg.AsyncConnection.connect(url, autocommit=True) as queue_conn,
            await psycopg.AsyncConnection.connect(url, autocommit=True) as work_conn,
        ):
            await work_conn.execute(
                "CREATE TABLE bench_pgq_item (id bigserial PRIMARY KEY, job_id bigint UNIQUE,"
                " body text)"
            )
            queries = Queries(PsycopgDriver(queue_conn))
            await queries.install()
            for start in range(0, count, 1000):
                size = min(1000, count - start)
                payloads: list[bytes | None] = [
                    f"bench item {start + offset}".encode() for offset in range(size)
                ]
                await queries.enqueue(["add"] * size, payloads, [0] * size)
            manager = QueueManager(queries)

            @manager.entrypoint("add")
            async def add(job: Any) -> None:
                await work_conn.execute(
                    "INSERT INTO bench_pgq_item (job_id, body) VALUES (%s, %s)",
                    [job.id, job.payload.decode()],
                )

            started = time.monotonic()
            await manager.run(mode=QueueExecutionMode.drain, batch_size=100)
            elapsed = time.monotonic() - started
            cursor = await work_conn.execute("SELECT count(*) FROM bench_pgq_item")
            row = await cursor.fetchone()
            if row is None or row[0] != count:
                raise RuntimeError(f"PgQueuer handled {row} jobs, not {count}")
            return count / elapsed

    return asyncio.run(drain())


def main() -> None:
    drain_messages = env_int("BENCH_DRAIN_MESSAGES", 100_000)
    live_rate = env_int("BENCH_LIVE_RATE", 200)
    live_seconds = env_int("BENCH_LIVE_SECONDS", 30)
    reply_count = env_int("BENCH_REPLIES", 1000)
    memory_messages = env_int("BENCH_MEMORY_MESSAGES", 1_000_000)

    server = None
    url = os.environ.get("BENCH_DATABASE_URL")
    if not url:
        import pgserver

        data_dir = Path(tempfile.mkdtemp(prefix="smsworker-bench-"))
        data_dir.chmod(0o755)
        server = pgserver.get_server(data_dir, cleanup_mode="delete")
        url = server.get_uri()

    rows: list[tuple[str, str, str, str]] = []
    try:
        with FakeTwilio() as fake:
            with psycopg.connect(url) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                server_version = row[0] if row else "?"
            reset_database(url)
            insert_limit = measure_insert_limit(url)
            print(f"bare INSERT + COMMIT: {insert_limit:.0f}/s", flush=True)
            drain, _ = measure_drain(url, fake, drain_messages)
            print(f"drain of {drain_messages}: {drain:.0f}/s", flush=True)
            rows.append(
                (
                    f"Catch-up drain, {drain_messages:,} messages",
                    f"{drain:,.0f} msg/s",
                    f"{insert_limit:,.0f} INSERT+COMMIT/s",
                    f"{drain / insert_limit:.2f}",
                )
            )

            try:
                import pgqueuer  # noqa: F401
            except ImportError:
                print("PgQueuer is not installed; `make bench` installs it.", flush=True)
            else:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("DROP SCHEMA IF EXISTS pgqueuer CASCADE")
                    conn.execute("DROP TABLE IF EXISTS bench_pgq_item")
                peer = measure_pgqueuer(url, drain_messages)
                print(f"PgQueuer drain of {drain_messages}: {peer:.0f}/s", flush=True)
                rows.append(
                    (
                        f"PgQueuer drain, {drain_messages:,} jobs adding an item",
                        f"{peer:,.0f} jobs/s",
                        f"smsworker {drain:,.0f} msg/s",
                        f"{drain / peer:.2f} (smsworker / PgQueuer)",
                    )
                )

            reset_database(url)
            notify_limit = measure_notify_limit(url)
            live = measure_live(url, fake, live_rate, live_seconds)
            print(f"live: {live}", flush=True)
            for key, label in (("change", "list change"), ("reply", "reply at Twilio")):
                rows.append(
                    (
                        f"Live {live_rate}/s for {live_seconds} s, commit to {label}",
                        f"p50 {live[key + '_p50'] * 1000:.1f} ms, "
                        f"p99 {live[key + '_p99'] * 1000:.1f} ms, "
                        f"max {live[key + '_max'] * 1000:.1f} ms",
                        f"{notify_limit * 1000:.2f} ms, INSERT sent to NOTIFY heard",
                        f"{live[key + '_p50'] / notify_limit:.1f}",
                    )
                )

            replies_s = measure_replies(url, fake, reply_count)
            print(f"{reply_count} slow replies: {replies_s:.1f} s", flush=True)
            floor_s = reply_count * 0.2 / Settings(database_url=url).send_concurrency
            rows.append(
                (
                    f"{reply_count:,} replies, Twilio 200 ms away",
                    f"{replies_s:.1f} s",
                    f"{floor_s:.1f} s at this concurrency",
                    f"{replies_s / floor_s:.2f}",
                )
            )

            if memory_messages:
                rate, peak_mb = measure_drain(url, fake, memory_messages)
                print(f"memory: {peak_mb:.0f} MB peak, {rate:.0f}/s", flush=True)
                rows.append(
                    (
                        f"Peak RSS draining {memory_messages:,} messages",
                        f"{peak_mb:.0f} MB",
                        "150 MB target",
                        f"{peak_mb / 150:.2f}",
                    )
                )
    finally:
        if server is not None:
            server.cleanup()

    write_results(rows, server_version)


def write_results(rows: list[tuple[str, str, str, str]], server_version: str) -> None:
    lines = [
        "# Benchmark results",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        f"- PostgreSQL {server_version}, Python {platform.python_version()}, "
        f"psycopg {psycopg.__version__}, smsworker {__version__}",
        "- Script: `make bench` (bench/run.py); sizes in the table.",
        "",
        "| Measurement | Result | Limit, same run | Ratio |",
        "| --- | --- | --- | --- |",
        *(f"| {name} | {result} | {limit} | {ratio} |" for name, result, limit, ratio in rows),
        "",
    ]
    text = "\n".join(lines)
    RESULTS.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
