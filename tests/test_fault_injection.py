"""Fault injection: the real worker keeps the shared list exact while the world around it fails.

A syncer thread feeds a few hundred messages from several senders into
twilio.message, one second of date_created apart. Meanwhile a seeded chaos
loop SIGKILLs and restarts the `smsworker run` process, restarts PostgreSQL,
terminates the worker's database connections and makes the fake Twilio fail
requests with 503, 500 and 429. When the feed is done and the faults stop, a
model of the list replays the same messages in (date_created, id) order. The
final state must match it: the list, one handled record per message and the
replies queued for each message. Twilio must receive each reply at least once
and at most three times: a fault between a send and its record in the outbox
repeats the reply once, and two faults a moment apart (a database restart and
a terminated connection, say) can each hit the same reply.

Two environment variables control a run:

- SMSWORKER_FAULT_SEED (default 20251204) picks the messages and the fault
  schedule. Every assertion message prints it, so a failure can be replayed.
- SMSWORKER_FAULT_MESSAGES (default 300, well under a minute) sets how many
  messages are fed. Raise it for a longer soak.

For example:

    SMSWORKER_FAULT_SEED=7 SMSWORKER_FAULT_MESSAGES=2000 \\
        .venv/bin/python -m pytest tests/test_fault_injection.py

Only processes that the test starts are touched: the worker subprocesses, the
test's own embedded PostgreSQL (reached over its Unix socket) and the fake
Twilio API on 127.0.0.1.
"""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.cli_helpers import cli_env
from tests.conftest import BOT_NUMBER, RestartableServer, insert_inbound, utc_now, wait_until
from tests.fake_twilio import FakeTwilio

SEED = int(os.environ.get("SMSWORKER_FAULT_SEED", "20251204"))
MESSAGE_COUNT = int(os.environ.get("SMSWORKER_FAULT_MESSAGES", "300"))
# The maximum number of copies of one reply that Twilio may receive (see the
# module docstring).
MAX_COPIES = 3

SMSWORKER = Path(sys.executable).parent / "smsworker"
STARTED_LINE = "smsworker started"
# Short, so that the final catch-up does not wait long for a poll.
POLL_INTERVAL_S = "2"
# Every connection of the worker has an application_name starting with this.
WORKER_APPLICATION_NAME = "smsworker%"

# Fictional numbers in the 555-01xx range, reserved for examples.
SENDERS = tuple(f"+1213555010{digit}" for digit in range(1, 6))
BOT_NUMBERS = (BOT_NUMBER, "+12135550109")

# Maximum random pause of the feed between two inserts.
MAX_FEED_PAUSE_S = 0.1
# How long the syncer keeps reconnecting before it gives up on the database.
SYNCER_RECONNECT_TIMEOUT_S = 60.0
# Bounds of the random pause between two faults, and of an outage's length.
FAULT_PAUSE_S = (0.2, 1.2)
OUTAGE_S = (0.3, 2.0)
# Time for the final catch-up after the last fault. It covers the reconnect
# backoffs of the worker and its senders (30 s at most), send retries and polls.
SETTLE_TIMEOUT_S = 120.0
# Above this many items, the feed deletes more than it adds, so that list
# replies stay a few SMS long however many messages are fed.
LIST_SOFT_LIMIT = 50

# The product's reply texts and limits, from smsworker/commands.py and todo.py.
EMPTY_LIST_REPLY = "The list is empty. Text anything to add it."
MISSING_POSITION_REPLY = "Say which item to delete, for example: del 2"
ZERO_POSITION_REPLY = "Items are numbered from 1. Send ls to see them."
MAX_REPLY_UTF16_UNITS = 1600
PREVIEW_LENGTH = 60
MAX_POSITION_DIGITS = 9

TASKS = (
    "buy milk",
    "call the plumber",
    "water the plants",
    "pay the electricity bill",
    "book the dentist",
    "return the library books",
    "fix the bike tyre",
    "pick up the dry cleaning",
    "renew the car insurance",
    "bake bread for Sunday",
    "stop at the bakery",
    "1 more bag of rice",
    "delete old photos from the laptop",
)
LONG_TASKS = (
    "ask the landlord about the leaking kitchen tap and the broken window latch",
    "collect the parcel from the post office before it goes back to the sender",
    "find the warranty card for the washing machine that stopped spinning last week",
)
NON_ASCII_TASKS = (
    "café crème for the office",
    "crème brûlée ramekins",
    "\U0001f382 birthday cake for Dana",
    "piñata for the party \U0001f389",
)
INVALID_DELETES = ("del", "del abc", "del 0", "DEL 00", "del two", "del -1", "del 1234567890123")
LIST_COMMANDS = ("ls", "1", "LS", " ls ", "Ls")


@dataclass(frozen=True)
class Message:
    """One row the syncer inserts into twilio.message."""

    id: str
    date_created: datetime
    body: str
    from_number: str
    to_number: str
    direction: str = "inbound"


@dataclass(frozen=True)
class ExpectedHandling:
    """What handling one inbound message must record and send."""

    command: str
    outcome: str
    # (to, from, body) of each reply part, in part order.
    replies: tuple[tuple[str, str, str], ...]


@dataclass
class FaultReport:
    """What happened in a run, printed with every assertion so a failure can be replayed."""

    seed: int
    message_count: int
    log_dir: Path
    faults: Counter[str] = field(default_factory=Counter)
    unknown_inserts: int = 0
    unknown_inserts_committed: int = 0
    unexpected_exits: list[str] = field(default_factory=list)
    # One line per fault: seconds since the feed started, how long it took, its name.
    timeline: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        faults = ", ".join(f"{name} x{count}" for name, count in sorted(self.faults.items()))
        return (
            f"seed {self.seed}, {self.message_count} messages; faults: {faults or 'none'}; "
            f"inserts with an unknown outcome: {self.unknown_inserts} "
            f"({self.unknown_inserts_committed} had committed); worker logs and faults.log "
            f"in {self.log_dir}. "
            f"Replay with SMSWORKER_FAULT_SEED={self.seed} "
            f"SMSWORKER_FAULT_MESSAGES={self.message_count} "
            ".venv/bin/python -m pytest tests/test_fault_injection.py"
        )


# The messages


def plan_messages(rng: random.Random, count: int) -> list[Message]:
    """Return `count` messages with strictly increasing date_created, one second apart.

    Mostly adds with unique bodies, some list commands, deletes of existing
    and missing items, malformed deletes, and the bot's own outbound replies,
    which a syncer copies too and the worker must ignore.
    """
    start = utc_now() - timedelta(hours=1, seconds=count)
    messages = []
    size = 0  # Items on the list, so that `del N` can aim at real items.
    for index in range(count):
        message_id = f"SM{rng.getrandbits(128):032x}"
        date_created = start + timedelta(seconds=index)
        sender = rng.choice(SENDERS)
        bot = rng.choice(BOT_NUMBERS)
        roll = rng.random()
        add_share = 0.6 if size < LIST_SOFT_LIMIT else 0.25
        if roll < 0.05:
            body = f"Added {rng.randint(1, 9)}. {rng.choice(TASKS)}"
            messages.append(
                Message(message_id, date_created, body, bot, sender, direction="outbound-api")
            )
            continue
        if roll < 0.05 + add_share:
            body = plan_add(rng, index)
            size += 1
        elif roll < 0.15 + add_share:
            body = rng.choice(LIST_COMMANDS)
        elif roll < 0.22 + add_share:
            body = rng.choice(INVALID_DELETES)
        else:
            position = rng.randint(1, size + 3)
            if position <= size:
                size -= 1
            body = rng.choice(("del {}", "Del {}", "del  {} ", "del 0{}")).format(position)
        messages.append(Message(message_id, date_created, body, sender, bot))
    return messages


def plan_add(rng: random.Random, index: int) -> str:
    """Return a unique item text: short, longer than a preview, or not ASCII."""
    roll = rng.random()
    if roll < 0.1:
        text = f"{rng.choice(LONG_TASKS)} (#{index})"
    elif roll < 0.2:
        text = f"{rng.choice(NON_ASCII_TASKS)} #{index}"
    else:
        text = f"{rng.choice(TASKS)} #{index}"
    if rng.random() < 0.05:
        text = f"  {text} "  # Surrounding whitespace is not part of the item.
    return text


# The model of the list, written from the spec of the commands


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def shorten(text: str) -> str:
    """Return the text as confirmations repeat it: at most 60 characters, with an ellipsis."""
    if len(text) <= PREVIEW_LENGTH:
        return text
    return text[: PREVIEW_LENGTH - 1].rstrip() + "…"


def split_at_lines(text: str) -> list[str]:
    """Split a reply whose every line fits one SMS into the fewest SMS, at line boundaries."""
    parts: list[str] = []
    lines: list[str] = []
    for line in text.split("\n"):
        assert utf16_units(line) <= MAX_REPLY_UTF16_UNITS, "the model cannot split a line"
        if lines and utf16_units("\n".join([*lines, line])) > MAX_REPLY_UTF16_UNITS:
            parts.append("\n".join(lines))
            lines = []
        lines.append(line)
    parts.append("\n".join(lines))
    return parts


class ListModel:
    """The shared list as the bot's spec describes it, without a database."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def handle(self, body: str) -> tuple[str, str, str]:
        """Apply one inbound body and return (command, outcome, reply)."""
        text = body.strip()
        if text.isascii() and text.lower() in {"ls", "1"}:
            return "list", "listed", self.render()
        lowered = text.lower()
        if lowered == "del" or (lowered.startswith("del") and lowered[3].isspace()):
            outcome, reply = self.delete(text[3:].strip())
            return "delete", outcome, reply
        self.items.append(text)
        return "add", "added", f"Added {len(self.items)}. {shorten(text)}"

    def render(self) -> str:
        if not self.items:
            return EMPTY_LIST_REPLY
        return "\n".join(f"{number}. {text}" for number, text in enumerate(self.items, 1))

    def delete(self, argument: str) -> tuple[str, str]:
        """Delete the item whose number the argument gives, and return (outcome, reply)."""
        if not argument:
            return "invalid", MISSING_POSITION_REPLY
        if not (argument.isascii() and argument.isdigit()):
            return "invalid", (
                f"{shorten(argument)} is not an item number. "
                "Send del and a number from the list, for example: del 2"
            )
        digits = argument.lstrip("0")
        if len(digits) > MAX_POSITION_DIGITS:
            return "invalid", f"There is no item {shorten(digits)}. Send ls to see the list."
        position = int(digits or "0")
        if position == 0:
            return "invalid", ZERO_POSITION_REPLY
        count = len(self.items)
        if position > count:
            if count == 0:
                return "invalid", f"There is no item {position}: the list is empty."
            items = "item" if count == 1 else "items"
            return "invalid", (
                f"There is no item {position}: the list has {count} {items}. Send ls to see them."
            )
        text = self.items.pop(position - 1)
        return "deleted", f"Deleted {position}. {shorten(text)}"


def replay(messages: list[Message]) -> tuple[list[str], dict[str, ExpectedHandling]]:
    """Replay the inbound messages in (date_created, id) order.

    Returns the final list and, by message id, how each message must be handled.
    """
    model = ListModel()
    expected = {}
    inbound = [message for message in messages if message.direction == "inbound"]
    for message in sorted(inbound, key=lambda message: (message.date_created, message.id)):
        command, outcome, reply = model.handle(message.body)
        replies = tuple(
            (message.from_number, message.to_number, part) for part in split_at_lines(reply)
        )
        expected[message.id] = ExpectedHandling(command, outcome, replies)
    return model.items, expected


# The worker processes


def worker_env(database_url: str, twilio: FakeTwilio) -> dict[str, str]:
    """Build the worker's environment: this one without its settings, plus the test's.

    The model is one list shared by every sender, so the worker runs the open list.
    """
    return cli_env(database_url, twilio)


class WorkerProcesses:
    """`smsworker run` processes started one after another, each logging to a file of its own."""

    def __init__(self, env: dict[str, str], log_dir: Path, report: FaultReport) -> None:
        self.env = env
        self.log_dir = log_dir
        self.report = report
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    @property
    def current(self) -> subprocess.Popen[bytes] | None:
        return self.started[-1][0] if self.started else None

    def start(self) -> None:
        log_path = self.log_dir / f"worker-{len(self.started) + 1}.log"
        args = ["run", "--metrics-port", "0", "--poll-interval", POLL_INTERVAL_S]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(SMSWORKER), *args],
                env=self.env,
                cwd=self.log_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # A session of its own keeps Ctrl-C in the test runner away from the worker.
                start_new_session=True,
            )
        self.started.append((process, log_path))

    def wait_started(self) -> None:
        log_path = self.started[-1][1]
        wait_until(
            lambda: STARTED_LINE in log_path.read_text(errors="replace"),
            timeout=30,
            message=f"{STARTED_LINE!r} in {log_path}",
        )

    def ensure_running(self) -> None:
        """Start a worker unless one runs."""
        process = self.current
        if process is not None and process.poll() is None:
            return
        self._record_unexpected_exit()
        self.start()

    def kill_current(self) -> None:
        """SIGKILL the running worker, or record it if it had exited by itself."""
        process = self.current
        if process is None:
            return
        if process.poll() is not None:
            self._record_unexpected_exit()
            return
        process.kill()
        process.wait()

    def _record_unexpected_exit(self) -> None:
        """Record the last worker if it exited although the test did not kill it."""
        if not self.started:
            return
        process, log_path = self.started[-1]
        if process.returncode in {None, -signal.SIGKILL}:
            return
        if any(line.startswith(f"{log_path.name} ") for line in self.report.unexpected_exits):
            return
        tail = log_path.read_text(errors="replace").splitlines(keepends=True)[-20:]
        self.report.unexpected_exits.append(
            f"{log_path.name} exited with code {process.returncode}:\n{''.join(tail)}"
        )

    def terminate_current(self, timeout: float = 30.0) -> int | None:
        """Stop the running worker with SIGTERM and return its exit code."""
        process = self.current
        if process is None:
            return None
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout)

    def close(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                process.kill()
            process.wait()


# The syncer


class Syncer:
    """Stand-in for the syncer: inserts the planned messages in order, across restarts.

    An insert whose commit outcome is unknown (the connection broke before
    the result arrived) is looked up by id before it is tried again, so every
    message is inserted exactly once.
    """

    def __init__(
        self,
        database_url: str,
        messages: list[Message],
        rng: random.Random,
        report: FaultReport,
    ) -> None:
        self.database_url = database_url
        self.messages = messages
        self.rng = rng
        self.report = report
        self.done = threading.Event()
        self.abort = threading.Event()
        self.error: BaseException | None = None
        self.inserted = 0
        self._conn: psycopg.Connection[Any] | None = None
        self._thread = threading.Thread(target=self._run, name="fault-injection-syncer")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.abort.set()
        self._thread.join(SYNCER_RECONNECT_TIMEOUT_S + 10)

    def _run(self) -> None:
        try:
            for message in self.messages:
                self._insert_once(message)
                self.inserted += 1
                if self.abort.wait(self.rng.uniform(0, MAX_FEED_PAUSE_S)):
                    return
        except BaseException as error:  # Reported by the test.
            self.error = error
        finally:
            self._disconnect()
            self.done.set()

    def _insert_once(self, message: Message) -> None:
        # True after an INSERT was sent on a connection that broke before its
        # result arrived. The row may or may not have committed then.
        outcome_unknown = False
        deadline = time.monotonic() + SYNCER_RECONNECT_TIMEOUT_S
        while True:
            try:
                conn = self._connection()
                if outcome_unknown:
                    committed = self._exists(conn, message.id)
                    self.report.unknown_inserts += 1
                    self.report.unknown_inserts_committed += int(committed)
                    if committed:
                        return
                outcome_unknown = True
                insert_inbound(
                    conn,
                    message.body,
                    from_number=message.from_number,
                    to_number=message.to_number,
                    date_created=message.date_created,
                    message_id=message.id,
                    direction=message.direction,
                )
                return
            except (psycopg.OperationalError, psycopg.InterfaceError) as error:
                self._disconnect()
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"the syncer could not insert {message.id} within "
                        f"{SYNCER_RECONNECT_TIMEOUT_S} s: {error}"
                    ) from error
                if self.abort.wait(0.05):
                    raise AssertionError("the syncer was stopped") from error

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            # Not named smsworker*, so terminating the worker's connections spares it.
            self._conn = psycopg.connect(
                self.database_url,
                autocommit=True,
                application_name="fault-injection-syncer",
                connect_timeout=5,
            )
        return self._conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @staticmethod
    def _exists(conn: psycopg.Connection[Any], message_id: str) -> bool:
        row = conn.execute("SELECT 1 FROM twilio.message WHERE id = %s", [message_id]).fetchone()
        return row is not None


# The faults


# Each fault, a method of Chaos, and how often it is picked relative to the others.
FAULT_WEIGHTS = {
    "kill_worker": 3,
    "kill_worker_for_a_while": 2,
    "restart_database": 2,
    "stop_database_for_a_while": 1,
    "terminate_worker_connections": 3,
    "fail_twilio_503": 1,
    "fail_twilio_500": 1,
    "fail_twilio_429": 1,
}


class Chaos:
    """Fault injector that works through a seeded schedule of faults until the feed is done."""

    def __init__(
        self,
        rng: random.Random,
        server: RestartableServer,
        twilio: FakeTwilio,
        workers: WorkerProcesses,
        report: FaultReport,
        feed_done: threading.Event,
    ) -> None:
        self.rng = rng
        self.server = server
        self.twilio = twilio
        self.workers = workers
        self.report = report
        self.feed_done = feed_done

    def run(self) -> None:
        names = list(FAULT_WEIGHTS)
        weights = list(FAULT_WEIGHTS.values())
        started = time.monotonic()
        try:
            while not self.feed_done.wait(self.rng.uniform(*FAULT_PAUSE_S)):
                self.workers.ensure_running()
                fault = self.rng.choices(names, weights)[0]
                self.report.faults[fault] += 1
                fault_started = time.monotonic()
                getattr(self, fault)()
                self.report.timeline.append(
                    f"{fault_started - started:8.3f} s  {time.monotonic() - fault_started:6.3f} s"
                    f"  {fault}"
                )
        finally:
            timeline = "".join(f"{line}\n" for line in self.report.timeline)
            (self.report.log_dir / "faults.log").write_text(timeline)

    def outage(self) -> None:
        """Pause for a random outage length, or less when the feed ends first."""
        self.feed_done.wait(self.rng.uniform(*OUTAGE_S))

    def kill_worker(self) -> None:
        self.workers.kill_current()
        self.workers.start()

    def kill_worker_for_a_while(self) -> None:
        self.workers.kill_current()
        self.outage()
        self.workers.start()

    def restart_database(self) -> None:
        self.server.restart()

    def stop_database_for_a_while(self) -> None:
        self.server.stop()
        try:
            self.outage()
        finally:
            self.server.start()

    def terminate_worker_connections(self) -> None:
        with psycopg.connect(
            self.server.url, autocommit=True, application_name="fault-injection-chaos"
        ) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name LIKE %s",
                [WORKER_APPLICATION_NAME],
            )

    def fail_twilio_503(self) -> None:
        self.twilio.fail_next(self.rng.randint(1, 3), 503)

    def fail_twilio_500(self) -> None:
        self.twilio.fail_next(self.rng.randint(1, 3), 500)

    def fail_twilio_429(self) -> None:
        self.twilio.fail_next(self.rng.randint(1, 3), 429, retry_after=1)


# Reading the final state


def count_of(conn: psycopg.Connection[Any], sql: str) -> int:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def outbox_by_message(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[str, str, str]]]:
    replies: dict[str, list[tuple[str, str, str]]] = {}
    for message_id, to_number, from_number, body in conn.execute(
        "SELECT message_id, to_number, from_number, body FROM smsworker.outbox"
        " ORDER BY message_id, part"
    ):
        replies.setdefault(message_id, []).append((to_number, from_number, body))
    return replies


@pytest.fixture
def workers(
    restartable_server: RestartableServer, fake_twilio: FakeTwilio, tmp_path: Path
) -> Iterator[WorkerProcesses]:
    report = FaultReport(SEED, MESSAGE_COUNT, tmp_path)
    processes = WorkerProcesses(worker_env(restartable_server.url, fake_twilio), tmp_path, report)
    try:
        yield processes
    finally:
        processes.close()


@pytest.mark.timeout(180 + MESSAGE_COUNT // 2)
def test_list_exact_under_faults(
    restartable_server: RestartableServer, fake_twilio: FakeTwilio, workers: WorkerProcesses
) -> None:
    report = workers.report
    rng = random.Random(SEED)
    messages = plan_messages(rng, MESSAGE_COUNT)
    expected_items, expected = replay(messages)
    inbound_ids = set(expected)

    workers.start()
    workers.wait_started()
    syncer = Syncer(restartable_server.url, messages, random.Random(rng.random()), report)
    chaos = Chaos(
        random.Random(rng.random()),
        restartable_server,
        fake_twilio,
        workers,
        report,
        syncer.done,
    )
    syncer.start()
    try:
        chaos.run()
    finally:
        syncer.stop()
    assert syncer.error is None, f"{report}: the syncer failed: {syncer.error!r}"
    assert syncer.inserted == len(messages), report

    # The faults are over, so one worker can finish the backlog and the outbox.
    with psycopg.connect(restartable_server.url, autocommit=True) as conn:

        def settled() -> bool:
            workers.ensure_running()
            handled = count_of(conn, "SELECT count(*) FROM smsworker.handled_message")
            pending = count_of(
                conn, "SELECT count(*) FROM smsworker.outbox WHERE status = 'pending'"
            )
            return handled >= len(inbound_ids) and pending == 0

        wait_until(
            settled,
            timeout=SETTLE_TIMEOUT_S,
            message=f"every message handled and an empty outbox ({report})",
        )
        # A SIGTERM before the start line could end the process before it
        # installs its signal handlers.
        workers.wait_started()
        exit_code = workers.terminate_current()

        items = [row[0] for row in conn.execute("SELECT body FROM smsworker.list_item ORDER BY id")]
        handled_rows = conn.execute(
            "SELECT message_id, command, outcome FROM smsworker.handled_message"
        ).fetchall()
        replies = outbox_by_message(conn)
        statuses = Counter(
            status for (status,) in conn.execute("SELECT status FROM smsworker.outbox")
        )
    received = Counter((sent.to, sent.from_, sent.body) for sent in fake_twilio.messages)

    assert not report.unexpected_exits, f"{report}: " + "\n".join(report.unexpected_exits)

    assert items == expected_items, f"{report}: the list differs from the model's"

    handled_ids = Counter(message_id for message_id, _, _ in handled_rows)
    assert set(handled_ids) == inbound_ids, (
        f"{report}: handled but not inbound: {sorted(set(handled_ids) - inbound_ids)[:5]}, "
        f"inbound but not handled: {sorted(inbound_ids - set(handled_ids))[:5]}"
    )
    assert all(count == 1 for count in handled_ids.values()), report
    wrong_outcomes = [
        (
            message_id,
            (command, outcome),
            (expected[message_id].command, expected[message_id].outcome),
        )
        for message_id, command, outcome in handled_rows
        if (command, outcome) != (expected[message_id].command, expected[message_id].outcome)
    ]
    assert not wrong_outcomes, f"{report}: (id, recorded, expected): {wrong_outcomes[:5]}"

    wrong_replies = [
        (message_id, replies.get(message_id, []), list(handling.replies))
        for message_id, handling in expected.items()
        if replies.get(message_id, []) != list(handling.replies)
    ]
    assert not wrong_replies, f"{report}: (id, queued, expected): {wrong_replies[:3]}"
    assert set(replies) <= inbound_ids, f"{report}: replies queued for non-inbound messages"
    assert statuses == {"sent": sum(statuses.values())}, f"{report}: outbox {dict(statuses)}"

    queued = Counter(part for handling in expected.values() for part in handling.replies)
    unexpected = set(received) - set(queued)
    assert not unexpected, f"{report}: Twilio received replies never queued: {unexpected}"
    missing = [(part, count) for part, count in queued.items() if received[part] < count]
    assert not missing, f"{report}: (reply, times queued) not received: {missing[:5]}"
    repeated = [
        (part, received[part], count)
        for part, count in queued.items()
        if received[part] > MAX_COPIES * count
    ]
    repeated_parts = {part for part, _, _ in repeated}
    repeated_ids = sorted(
        message_id
        for message_id, handling in expected.items()
        if repeated_parts.intersection(handling.replies)
    )
    assert not repeated, (
        f"{report}: (reply, received, queued) sent more than {MAX_COPIES} times: {repeated[:5]}, "
        f"for messages {repeated_ids[:5]}"
    )

    assert exit_code == 0, f"{report}: the last worker exited with {exit_code} on SIGTERM"

    extra_copies = sum(received.values()) - sum(queued.values())
    print(f"{report}; {sum(queued.values())} replies, {extra_copies} extra copies sent.")
