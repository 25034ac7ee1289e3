"""The `smsworker` command line. It parses options, builds settings and hands off."""

import functools
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click
import psycopg
from psycopg.conninfo import conninfo_to_dict

from smsworker import (
    __version__,
    bot,
    db,
    deadletters,
    groups,
    phones,
    replay,
    status,
    sync,
    webhook,
)
from smsworker.embedded import embedded_database_url
from smsworker.errors import SmsWorkerError
from smsworker.logs import configure_logging, mask_phone_number, mask_phone_numbers
from smsworker.metrics import Metrics, SyncMetrics
from smsworker.sender import ConsoleSender, Sender, TwilioSender
from smsworker.settings import (
    BATCH_SIZE,
    DATABASE_RETRY_LIMIT_S,
    DEFAULT_CURSOR_NAME,
    DEFAULT_EMBEDDED_DATA_DIR,
    DEFAULT_METRICS_PORT,
    DEFAULT_TWILIO_API_BASE_URL,
    HANDLER_MAX_ATTEMPTS,
    LATE_ROW_RESCAN_INTERVAL_S,
    LATE_ROW_WINDOW_S,
    POLL_INTERVAL_S,
    SEND_CONCURRENCY,
    Settings,
    TwilioSettings,
)
from smsworker.worker import SHUTDOWN_GRACE_S, Worker

logger = logging.getLogger(__name__)

E164 = re.compile(r"\+[1-9]\d{1,14}")
# The number `smsworker inbound` texts when --to is not given: a fictional
# number in the 555-01xx range, reserved for examples.
DEFAULT_BOT_NUMBER = "+12135550100"
DEMO_ACCOUNT_SID = "AC" + "0" * 32
# Seconds in each unit of a duration such as 30m or 2h.
DURATION_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that also rejects nan and infinity, which pass its comparisons."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


if TYPE_CHECKING:
    # click 8.5 made ParamType generic; older releases cannot subscript it.
    _TimeParamBase = click.ParamType[datetime]
    _DurationParamBase = click.ParamType[float]
else:
    _TimeParamBase = _DurationParamBase = click.ParamType


class TimeParam(_TimeParamBase):
    """A point in time: ISO 8601 (naive means UTC) or a duration ago (30m, 2h, 1d).

    Converts to a naive UTC datetime, the form of twilio.message's timestamps.
    """

    name = "time"
    _DURATION = re.compile(r"(\d+)([smhdw])")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        duration = self._DURATION.fullmatch(text)
        if duration:
            seconds = int(duration.group(1)) * DURATION_UNITS_S[duration.group(2)]
            if seconds > 100 * 366 * 86400:
                self.fail(f"{value!r} reaches back more than 100 years.", param, ctx)
            # Every duration of one command counts back from the same moment.
            now = datetime.now(UTC).replace(tzinfo=None)
            if ctx is not None:
                now = ctx.meta.setdefault("smsworker.now", now)
            return now - timedelta(seconds=seconds)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"{value!r} is neither an ISO 8601 time nor a duration. Examples: "
                "2026-12-04T09:30 (UTC), 2026-12-04T09:30+01:00, 30m, 2h, 1d.",
                param,
                ctx,
            )
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        return moment


class DurationParam(_DurationParamBase):
    """A length of time: seconds (600) or a number with a unit (30s, 10m, 2h, 7d, 1w)."""

    name = "duration"
    _DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")

    def __init__(self, min_s: float = 0.0, max_s: float = 10 * 366 * 86400.0) -> None:
        self.min_s = min_s
        self.max_s = max_s

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        match = self._DURATION.fullmatch(str(value).strip())
        if match is None:
            self.fail(
                f"{value!r} is not a duration. Examples: 600 (seconds), 10m, 2h, 7d.", param, ctx
            )
        seconds = float(match.group(1)) * DURATION_UNITS_S[match.group(2) or "s"]
        if not self.min_s <= seconds <= self.max_s:
            self.fail(
                f"{value!r} is not between {self.min_s:g} and {self.max_s:g} seconds.", param, ctx
            )
        return seconds


# The password of a postgresql:// URL, and of a key=value connection string.
_URL_PASSWORD = re.compile(r"://[^:/@]*:([^@]*)@")
_KEY_VALUE_PASSWORD = re.compile(r"password\s*=\s*'?([^'\s]+)")


def check_database_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Reject a database URL that libpq cannot parse, before anything connects."""
    if value:
        try:
            conninfo_to_dict(value)
        except psycopg.ProgrammingError as error:
            # libpq quotes the string it could not parse, password included.
            detail = str(error)
            passwords = _URL_PASSWORD.findall(value) + _KEY_VALUE_PASSWORD.findall(value)
            for password in filter(None, passwords):
                detail = detail.replace(password, "***")
            raise click.BadParameter(f"invalid connection string: {detail}") from error
    return value


database_url_option = click.option(
    "--database-url",
    envvar="DATABASE_URL",
    callback=check_database_url,
    show_envvar=True,
    help="PostgreSQL connection URL. "
    "Without it, an embedded PostgreSQL keeps its data under --data-dir.",
)
data_dir_option = click.option(
    "--data-dir",
    envvar="SMSWORKER_DATA_DIR",
    show_envvar=True,
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_EMBEDDED_DATA_DIR,
    show_default=True,
    help="Folder of the embedded PostgreSQL, used when no database URL is set.",
)


def resolve_database_url(database_url: str | None, data_dir: Path) -> str:
    """Return the given URL, or start the embedded PostgreSQL and return its URL."""
    if database_url:
        return database_url
    return embedded_database_url(data_dir)


def _check_region(ctx: click.Context, param: click.Parameter, value: str) -> str:
    region = value.strip().upper()
    if not phones.is_region(region):
        raise click.BadParameter(
            f"{value!r} is not a region code; use two letters such as US, GB or DE"
        )
    return region


open_option = click.option(
    "--open",
    "open_list",
    envvar="SMSWORKER_OPEN",
    show_envvar=True,
    is_flag=True,
    help="Keep one list shared by everyone who texts our numbers, instead of private "
    "lists per group.",
)
region_option = click.option(
    "--default-region",
    envvar="SMSWORKER_DEFAULT_REGION",
    show_envvar=True,
    default=phones.DEFAULT_REGION,
    show_default=True,
    callback=_check_region,
    help="Region of phone numbers typed without a country code, as two letters.",
)


def mode_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --open and --default-region, passed to the command as one `mode`."""

    @functools.wraps(command)
    def with_mode(*args: Any, open_list: bool, default_region: str, **kwargs: Any) -> Any:
        return command(*args, mode=bot.Mode(open_list, default_region), **kwargs)

    return open_option(region_option(with_mode))


@click.group()
@click.version_option(__version__, prog_name="smsworker")
@click.option(
    "--log-level",
    envvar="SMSWORKER_LOG_LEVEL",
    show_envvar=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
    help="Lowest level of log records written to stderr.",
)
@click.option(
    "--log-format",
    envvar="SMSWORKER_LOG_FORMAT",
    show_envvar=True,
    type=click.Choice(["text", "json"], case_sensitive=False),
    default="text",
    show_default=True,
    help="text: one readable line a record. json: one JSON object a line, for log shippers.",
)
def main(log_level: str, log_format: str) -> None:
    """Run a shared to-do list over SMS from Twilio messages stored in PostgreSQL."""
    configure_logging(log_level.upper(), log_format.lower())


@main.command()
@database_url_option
@data_dir_option
@open_option
def migrate(database_url: str | None, data_dir: Path, open_list: bool) -> None:
    """Create or update smsworker's tables and attach its trigger.

    Safe to run any number of times. Creates twilio.message when no syncer
    has created it yet. The first migration without --open moves the items
    of the shared list into one group per number of ours, whose members are
    the items' senders, and prints what it moved.
    """
    try:
        url = resolve_database_url(database_url, data_dir)
        applied = db.migrate(url, open_list=open_list, on_notice=click.echo)
    except SmsWorkerError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"Schema is up to date ({len(applied)} files applied).")


def twilio_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the Twilio account SID, auth token and API base URL options."""
    for option in reversed(
        [
            click.option(
                "--twilio-account-sid",
                envvar="TWILIO_ACCOUNT_SID",
                show_envvar=True,
                help="Twilio account SID.",
            ),
            click.option(
                "--twilio-auth-token",
                envvar="TWILIO_AUTH_TOKEN",
                show_envvar=True,
                help="Twilio auth token.",
            ),
            click.option(
                "--twilio-api-base-url",
                envvar="TWILIO_API_BASE_URL",
                show_envvar=True,
                default=DEFAULT_TWILIO_API_BASE_URL,
                show_default=True,
                help="Base URL of Twilio's REST API.",
            ),
        ]
    ):
        command = option(command)
    return command


ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")


def check_sync_credentials(account_sid: str | None, auth_token: str | None) -> None:
    """Reject missing credentials and an account SID that cannot be one, before syncing."""
    if not account_sid or not auth_token:
        raise click.UsageError(
            "the sync reads Twilio's message list: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
        )
    if not ACCOUNT_SID.fullmatch(account_sid):
        raise click.BadParameter(
            f"{account_sid!r} is not an account SID, which is AC and 32 hexadecimal digits",
            param_hint="--twilio-account-sid",
        )


def twilio_settings(
    account_sid: str | None, auth_token: str | None, api_base_url: str
) -> TwilioSettings | None:
    """Build the Twilio settings; None when neither credential is set."""
    if bool(account_sid) != bool(auth_token):
        raise click.UsageError(
            "set both TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN, or neither to print "
            "replies to the console"
        )
    if not api_base_url.startswith(("http://", "https://")):
        raise click.BadParameter(
            f"{api_base_url!r} is not an http:// or https:// URL",
            param_hint="--twilio-api-base-url",
        )
    if account_sid and auth_token:
        return TwilioSettings(account_sid, auth_token, api_base_url)
    return None


def metrics_options(default_port: int, port_envvar: str) -> Callable[..., Any]:
    """Add --metrics-port (0 disables the endpoint) and --metrics-address."""

    def add(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option(
            "--metrics-address",
            envvar="SMSWORKER_METRICS_ADDRESS",
            show_envvar=True,
            default="0.0.0.0",
            show_default=True,
            help="Address the metrics endpoint listens on.",
        )(command)
        return click.option(
            "--metrics-port",
            envvar=port_envvar,
            show_envvar=True,
            type=click.IntRange(0, 65535),
            default=default_port,
            show_default=True,
            help="TCP port of the Prometheus metrics endpoint; 0 disables it.",
        )(command)

    return add


def serve_metrics(metrics: Metrics | SyncMetrics, port: int, address: str) -> None:
    """Serve `metrics` unless the port is 0; a port in use is a clear error."""
    if not port:
        return
    try:
        metrics.serve(port, address)
    except OSError as error:
        raise click.ClickException(
            f"cannot serve metrics on {address}:{port}: "
            f"{error.strerror}. Check --metrics-address, choose another "
            "--metrics-port, or set it to 0 to disable the endpoint."
        ) from error


def sync_options(prefix: str) -> Callable[..., Any]:
    """Add the sync's interval, overlap, backfill and page size, named with `prefix`."""

    def add(command: Callable[..., Any]) -> Callable[..., Any]:
        options = [
            click.option(
                f"--{prefix}interval",
                "sync_interval",
                envvar="SMSWORKER_SYNC_INTERVAL",
                show_envvar=True,
                type=DurationParam(min_s=0.5, max_s=3600),
                default="5s",
                show_default=True,
                help="Time between polls of Twilio's message list (5, 5s, 1m).",
            ),
            click.option(
                f"--{prefix}overlap",
                "sync_overlap",
                envvar="SMSWORKER_SYNC_OVERLAP",
                show_envvar=True,
                type=DurationParam(min_s=10, max_s=7 * 86400),
                default="10m",
                show_default=True,
                help="How far before the newest message of the last poll each poll "
                "lists again, to see late status, error and price changes (600, 10m, 1h).",
            ),
            click.option(
                f"--{prefix}backfill",
                "sync_backfill",
                envvar="SMSWORKER_SYNC_BACKFILL",
                show_envvar=True,
                type=DurationParam(min_s=60),
                help="Load the messages of this period once (7d). The worker does not act "
                "on messages older than the sync's first poll.",
            ),
            click.option(
                f"--{prefix}page-size",
                "sync_page_size",
                envvar="SMSWORKER_SYNC_PAGE_SIZE",
                show_envvar=True,
                type=click.IntRange(min=1, max=1000),
                default=sync.SYNC_PAGE_SIZE,
                show_default=True,
                help="Messages per page of Twilio's list.",
            ),
        ]
        for option in reversed(options):
            command = option(command)
        return command

    return add


@main.command()
@database_url_option
@data_dir_option
@twilio_options
@metrics_options(DEFAULT_METRICS_PORT, "SMSWORKER_METRICS_PORT")
@click.option(
    "--poll-interval",
    envvar="SMSWORKER_POLL_INTERVAL",
    show_envvar=True,
    type=FiniteFloatRange(min=0.1, max=3600),
    default=POLL_INTERVAL_S,
    show_default=True,
    help="Seconds between catch-up queries when no notification arrives.",
)
@click.option(
    "--batch-size",
    envvar="SMSWORKER_BATCH_SIZE",
    show_envvar=True,
    type=click.IntRange(min=1, max=10_000),
    default=BATCH_SIZE,
    show_default=True,
    help="Messages handled per transaction during catch-up.",
)
@click.option(
    "--late-row-window",
    envvar="SMSWORKER_LATE_ROW_WINDOW",
    show_envvar=True,
    type=FiniteFloatRange(min=0, max=366 * 24 * 3600),
    default=LATE_ROW_WINDOW_S,
    show_default=True,
    help="Seconds before the cursor in which rows that arrive late are still handled.",
)
@click.option(
    "--late-row-rescan-interval",
    envvar="SMSWORKER_LATE_ROW_RESCAN_INTERVAL",
    show_envvar=True,
    type=FiniteFloatRange(min=1, max=7 * 24 * 3600),
    default=LATE_ROW_RESCAN_INTERVAL_S,
    show_default=True,
    help="Seconds between searches of the whole late-row window for rows whose "
    "notification was missed.",
)
@click.option(
    "--handler-max-attempts",
    envvar="SMSWORKER_HANDLER_MAX_ATTEMPTS",
    show_envvar=True,
    type=click.IntRange(min=1, max=100),
    default=HANDLER_MAX_ATTEMPTS,
    show_default=True,
    help="Attempts of a failing handler before its message goes to the dead letters.",
)
@click.option(
    "--database-retry-limit",
    envvar="SMSWORKER_DATABASE_RETRY_LIMIT",
    show_envvar=True,
    type=FiniteFloatRange(min=0, max=7 * 24 * 3600),
    default=DATABASE_RETRY_LIMIT_S,
    show_default=True,
    help="Seconds the worker keeps reconnecting to an unreachable database before it exits.",
)
@click.option(
    "--send-concurrency",
    envvar="SMSWORKER_SEND_CONCURRENCY",
    show_envvar=True,
    type=click.IntRange(min=1, max=100),
    default=SEND_CONCURRENCY,
    show_default=True,
    help="Replies sent to Twilio at the same time.",
)
@click.option(
    "--sync",
    "with_sync",
    envvar="SMSWORKER_SYNC",
    show_envvar=True,
    is_flag=True,
    help="Also poll Twilio's message list into twilio.message, as `smsworker sync` does.",
)
@sync_options("sync-")
@mode_options
def run(
    database_url: str | None,
    data_dir: Path,
    twilio_account_sid: str | None,
    twilio_auth_token: str | None,
    twilio_api_base_url: str,
    metrics_port: int,
    metrics_address: str,
    poll_interval: float,
    batch_size: int,
    late_row_window: float,
    late_row_rescan_interval: float,
    handler_max_attempts: int,
    database_retry_limit: float,
    send_concurrency: int,
    with_sync: bool,
    sync_interval: float,
    sync_overlap: float,
    sync_backfill: float | None,
    sync_page_size: int,
    mode: bot.Mode,
) -> None:
    """Handle inbound messages until stopped with SIGTERM or Ctrl-C.

    With --sync, the same process also polls Twilio's message list.
    """
    if with_sync:
        check_sync_credentials(twilio_account_sid, twilio_auth_token)
    twilio = twilio_settings(twilio_account_sid, twilio_auth_token, twilio_api_base_url)

    # Signals are handled from here on, so one that arrives while the embedded
    # database starts still means a clean stop and exit 0.
    stop_event = threading.Event()
    _stop_on_signals(stop_event.set)

    metrics = Metrics()
    serve_metrics(metrics, metrics_port, metrics_address)

    syncer_thread: threading.Thread | None = None
    sync_failures: list[SmsWorkerError] = []
    try:
        url = resolve_database_url(database_url, data_dir)
        if with_sync and twilio is not None:
            syncer = sync.Syncer(
                sync.SyncSettings(
                    url, twilio, sync_interval, sync_overlap, sync_backfill, sync_page_size
                ),
                metrics=SyncMetrics(metrics.registry),
                stop_event=stop_event,
            )
            syncer_thread = threading.Thread(
                target=_run_syncer,
                args=(syncer, sync_failures),
                name="smsworker-sync",
                daemon=True,
            )
        settings = Settings(
            database_url=url,
            twilio=twilio,
            metrics_port=metrics_port,
            poll_interval_s=poll_interval,
            batch_size=batch_size,
            late_row_window_s=late_row_window,
            late_row_rescan_interval_s=late_row_rescan_interval,
            handler_max_attempts=handler_max_attempts,
            database_retry_limit_s=database_retry_limit,
            send_concurrency=send_concurrency,
            open_list=mode.open_list,
            default_region=mode.region,
        )
        worker = Worker(
            settings,
            sender_factory=_sender_factory(twilio),
            metrics=metrics,
            stop_event=stop_event,
        )
        _stop_on_signals(worker.stop)
        if syncer_thread is not None:
            syncer_thread.start()
        worker.run()
        if sync_failures:
            raise click.ClickException(f"the sync stopped: {sync_failures[0]}")
    except SmsWorkerError as error:
        raise click.ClickException(str(error)) from error
    finally:
        stop_event.set()
        if syncer_thread is not None and syncer_thread.is_alive():
            syncer_thread.join(SHUTDOWN_GRACE_S)


def _run_syncer(syncer: sync.Syncer, failures: list[SmsWorkerError]) -> None:
    """Run the sync inside `smsworker run`; an error that stops it stops the worker too."""
    try:
        syncer.run()
    except SmsWorkerError as error:
        logger.error("The sync stopped, so the worker stops too: %s", error)
        failures.append(error)
        syncer.stop_event.set()


def _sender_factory(twilio: TwilioSettings | None) -> Callable[[], Sender]:
    if twilio is None:
        console = ConsoleSender(sys.stdout)
        return lambda: console
    return lambda: TwilioSender(twilio)


def _stop_on_signals(stop: Callable[[], None]) -> None:
    """Stop gracefully on the first SIGTERM or SIGINT, at once on the second."""
    received: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if received:
            # Uncommitted work is rolled back by PostgreSQL, so nothing is
            # half-applied; the message in hand is handled again on restart.
            logger.warning("Received %s again, exiting without waiting.", name)
            os._exit(128 + signum)
        received.append(signum)
        logger.info("Received %s, finishing the work in hand and stopping.", name)
        stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


@main.command()
@database_url_option
@data_dir_option
@click.option(
    "--from",
    "from_number",
    required=True,
    help="Sender's phone number, in E.164 form (+12135550101).",
)
@click.option(
    "--to",
    "to_number",
    default=DEFAULT_BOT_NUMBER,
    show_default=True,
    help="The bot's number the message was sent to, in E.164 form.",
)
@click.argument("text", nargs=-1, required=True)
def inbound(
    database_url: str | None,
    data_dir: Path,
    from_number: str,
    to_number: str,
    text: tuple[str, ...],
) -> None:
    """Insert an inbound message into twilio.message, as the syncer would.

    TEXT is the message body; several words are joined with spaces. Pass ""
    for a message without text, like a picture.
    """
    for name, number in (("--from", from_number), ("--to", to_number)):
        if not E164.fullmatch(number):
            raise click.BadParameter(
                f"{number!r} is not an E.164 phone number; write it like +12135550101",
                param_hint=name,
            )
    body = " ".join(text)
    message_id = "SM" + uuid.uuid4().hex
    account_sid = DEMO_ACCOUNT_SID
    date_created = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    try:
        url = resolve_database_url(database_url, data_dir)
        db.insert_inbound(
            url,
            {
                "id": message_id,
                "account_id": account_sid,
                "body": body,
                "date_created": date_created,
                "from": from_number,
                "to": to_number,
                "num_segments": 1,
                "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{message_id}.json",
            },
        )
    except SmsWorkerError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"Inserted inbound message {message_id} from {mask_phone_number(from_number)}.")


@main.group("dead-letters")
def dead_letters() -> None:
    """Inspect and retry messages whose handler kept failing."""


@dead_letters.command("list")
@database_url_option
@data_dir_option
@click.option(
    "--all", "include_retried", is_flag=True, help="Include dead letters already retried."
)
def dead_letters_list(database_url: str | None, data_dir: Path, include_retried: bool) -> None:
    """List dead letters, oldest failure first."""
    try:
        url = resolve_database_url(database_url, data_dir)
        letters = deadletters.list_dead_letters(url, include_retried=include_retried)
    except SmsWorkerError as error:
        raise click.ClickException(str(error)) from error
    if not letters:
        click.echo("No dead letters.")
        return
    for letter in letters:
        retried = f", retried {letter.retried_at:%Y-%m-%d %H:%M:%S%z}" if letter.retried_at else ""
        click.echo(
            f"{letter.message_id}  {letter.attempts} attempts, "
            f"first failed {letter.first_failed_at:%Y-%m-%d %H:%M:%S%z}, "
            f"last failed {letter.last_failed_at:%Y-%m-%d %H:%M:%S%z}{retried}\n"
            f"    {mask_phone_numbers(letter.error)}"
        )


@dead_letters.command("retry")
@database_url_option
@data_dir_option
@click.option("--all", "retry_all", is_flag=True, help="Retry every dead letter not yet retried.")
@click.option(
    "--handler-max-attempts",
    type=click.IntRange(min=1, max=100),
    default=HANDLER_MAX_ATTEMPTS,
    show_default=True,
    help="Attempts per message before it goes back to the dead letters.",
)
@click.argument("message_ids", nargs=-1)
@mode_options
def dead_letters_retry(
    database_url: str | None,
    data_dir: Path,
    retry_all: bool,
    handler_max_attempts: int,
    message_ids: tuple[str, ...],
    mode: bot.Mode,
) -> None:
    """Handle dead-lettered messages again: MESSAGE_IDS, or --all.

    Safe to run while a worker is running, and any number of times: a message
    handled in the meantime is skipped. Exits 1 when a message fails again.
    """
    if bool(message_ids) == retry_all:
        raise click.UsageError("give message ids or --all, not both and not neither")
    try:
        url = resolve_database_url(database_url, data_dir)
        ids = list(message_ids) or [
            letter.message_id for letter in deadletters.list_dead_letters(url)
        ]
        summary = deadletters.retry_dead_letters(
            url,
            ids,
            cursor_name=DEFAULT_CURSOR_NAME,
            max_attempts=handler_max_attempts,
            mode=mode,
        )
    except SmsWorkerError as error:
        raise click.ClickException(str(error)) from error
    if not ids:
        click.echo("No dead letters to retry.")
        return
    for message_id in summary.not_dead:
        click.echo(
            f"{message_id}: not a dead letter (unknown, handled already, or its message "
            "is no longer in twilio.message); skipped."
        )
    click.echo(
        f"Retried {len(ids)} dead letters: {len(summary.handled)} handled, "
        f"{len(summary.failed_again)} failed again, {len(summary.not_dead)} skipped."
    )
    if summary.failed_again:
        sys.exit(1)


@main.command("status")
@database_url_option
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, for scripts.")
@click.option(
    "--max-lag",
    type=FiniteFloatRange(min=0),
    help="Exit with code 3 when the lag is above this many seconds, for health checks.",
)
def status_command(
    database_url: str | None, data_dir: Path, as_json: bool, max_lag: float | None
) -> None:
    """Show the cursor, lag, backlog, outbox, dead letters and the active worker.

    Reads the database only, so it works while the worker is stopped. Exits 0,
    1 when the database cannot be read, or 3 when the lag is above --max-lag.
    """
    try:
        url = resolve_database_url(database_url, data_dir)
        current = status.read_status(url, DEFAULT_CURSOR_NAME)
    except SmsWorkerError as error:
        raise click.ClickException(str(error)) from error
    lagging = max_lag is not None and current.lag_s > max_lag
    if as_json:
        click.echo(json.dumps({**current.to_json(), "lag_exceeded": lagging}))
    else:
        click.echo(status.format_status(current))
    if lagging:
        click.echo(f"The lag of {current.lag_s:.1f} s is above --max-lag {max_lag:g} s.", err=True)
        sys.exit(3)


@main.command("replay")
@database_url_option
@data_dir_option
@click.option(
    "--since",
    required=True,
    type=TimeParam(),
    help="Start of the window (date_created): ISO 8601, naive means UTC, or a duration "
    "ago such as 30m, 2h, 1d.",
)
@click.option(
    "--until",
    type=TimeParam(),
    help="End of the window, excluded, in the same forms as --since. Default: now.",
)
@click.option("--dry-run", is_flag=True, help="List what would be done and change nothing.")
@click.option(
    "--handler-max-attempts",
    type=click.IntRange(min=1, max=100),
    default=HANDLER_MAX_ATTEMPTS,
    show_default=True,
    help="Attempts per message before it goes to the dead letters.",
)
@mode_options
def replay_command(
    database_url: str | None,
    data_dir: Path,
    since: datetime,
    until: datetime | None,
    dry_run: bool,
    handler_max_attempts: int,
    mode: bot.Mode,
) -> None:
    """Handle the inbound messages of a time window again, in order.

    A message whose effects are recorded is skipped and a dead letter is
    retried, so a replay fills gaps and is safe to run any number of times,
    also while a worker runs. The worker's cursor never moves back. Messages
    that were already in the table when smsworker was installed are left
    alone. Exits 1 when a message fails again.
    """
    now = datetime.now(UTC).replace(tzinfo=None)
    if until is None and since >= now:
        raise click.UsageError(f"--since ({since:%Y-%m-%d %H:%M:%S} UTC) is in the future")
    until = until or now
    if until <= since:
        raise click.UsageError(
            f"--until ({until:%Y-%m-%d %H:%M:%S}) must be after --since "
            f"({since:%Y-%m-%d %H:%M:%S}); both are UTC"
        )
    window = f"{since:%Y-%m-%d %H:%M:%S} to {until:%Y-%m-%d %H:%M:%S} UTC"
    try:
        url = resolve_database_url(database_url, data_dir)
        if dry_run:
            _print_replay_plan(url, since, until, window)
            return
        total = replay.count_messages(url, DEFAULT_CURSOR_NAME, since, until)
        summary = _replay_with_progress(url, since, until, total, handler_max_attempts, mode)
    except SmsWorkerError as error:
        raise click.ClickException(str(error)) from error
    click.echo(
        f"Replayed {total} messages from {window}: {summary.handled} handled, "
        f"{summary.skipped} skipped, {summary.failed} failed."
    )
    if summary.failed:
        click.echo("Failed messages are in the dead letters: smsworker dead-letters list", err=True)
        sys.exit(1)


def _print_replay_plan(url: str, since: datetime, until: datetime, window: str) -> None:
    counts: dict[str, int] = {}
    for candidate in replay.list_candidates(url, DEFAULT_CURSOR_NAME, since, until):
        message = candidate.message
        click.echo(
            f"{message.date_created:%Y-%m-%d %H:%M:%S}  {message.id}  "
            f"from {mask_phone_number(message.from_number)}  {candidate.command}: "
            f"{candidate.action}"
        )
        counts[candidate.kind] = counts.get(candidate.kind, 0) + 1
    done = ", ".join(f"{count} to {kind}" for kind, count in counts.items()) or "nothing to do"
    click.echo(f"Dry run, {window}: {done}. Nothing was changed.")


def _replay_with_progress(
    url: str, since: datetime, until: datetime, total: int, max_attempts: int, mode: bot.Mode
) -> replay.ReplaySummary:
    def run(on_progress: Callable[[int], None]) -> replay.ReplaySummary:
        return replay.replay(
            url,
            cursor_name=DEFAULT_CURSOR_NAME,
            since=since,
            until=until,
            max_attempts=max_attempts,
            mode=mode,
            on_progress=on_progress,
        )

    if not sys.stderr.isatty():
        return run(lambda count: None)
    with click.progressbar(length=total, label="Replaying", file=sys.stderr) as bar:
        return run(bar.update)


@main.command("webhook")
@database_url_option
@data_dir_option
@click.option(
    "--public-url",
    envvar="SMSWORKER_WEBHOOK_PUBLIC_URL",
    show_envvar=True,
    required=True,
    help="The URL Twilio calls, exactly as set on the phone number: Twilio signs it, so "
    "the signature check needs it. Its path is the path served.",
)
@click.option(
    "--twilio-auth-token",
    envvar="TWILIO_AUTH_TOKEN",
    show_envvar=True,
    required=True,
    help="Twilio auth token, which signs the webhook requests.",
)
@click.option(
    "--address",
    envvar="SMSWORKER_WEBHOOK_ADDRESS",
    show_envvar=True,
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; put a TLS reverse proxy in front for Twilio.",
)
@click.option(
    "--port",
    envvar="SMSWORKER_WEBHOOK_PORT",
    show_envvar=True,
    type=click.IntRange(min=1, max=65535),
    default=8080,
    show_default=True,
    help="TCP port to listen on.",
)
def webhook_command(
    database_url: str | None,
    data_dir: Path,
    public_url: str,
    twilio_auth_token: str,
    address: str,
    port: int,
) -> None:
    """Receive Twilio's inbound-message webhook and store each message at once.

    Requests without a valid X-Twilio-Signature get 403. A message Twilio
    sends twice is stored once. GET /healthz returns 200 while the database
    is reachable. Stops on SIGTERM or Ctrl-C.
    """
    if not public_url.startswith(("http://", "https://")):
        raise click.BadParameter(
            f"{public_url!r} is not an http(s) URL; for example "
            "https://sms.example.com/twilio/inbound",
            param_hint="--public-url",
        )
    try:
        url = resolve_database_url(database_url, data_dir)
        with db.connect(url, autocommit=True) as conn, db.database_errors():
            db.check_schema(conn, DEFAULT_CURSOR_NAME)
        server = webhook.WebhookServer(
            (address, port), database_url=url, auth_token=twilio_auth_token, public_url=public_url
        )
    except SmsWorkerError as error:
        raise click.ClickException(str(error)) from error
    except OSError as error:
        raise click.ClickException(
            f"cannot listen on {address}:{port} (--port): {error.strerror}"
        ) from error
    _stop_on_signals(lambda: threading.Thread(target=server.shutdown).start())
    logger.info(
        "smsworker webhook listening on %s:%d for %s.", address, server.server_port, public_url
    )
    with server:
        server.serve_forever()
    logger.info("smsworker webhook stopped.")


@main.command("sync")
@database_url_option
@data_dir_option
@twilio_options
@metrics_options(sync.DEFAULT_SYNC_METRICS_PORT, "SMSWORKER_SYNC_METRICS_PORT")
@sync_options("")
def sync_command(
    database_url: str | None,
    data_dir: Path,
    twilio_account_sid: str | None,
    twilio_auth_token: str | None,
    twilio_api_base_url: str,
    metrics_port: int,
    metrics_address: str,
    sync_interval: float,
    sync_overlap: float,
    sync_backfill: float | None,
    sync_page_size: int,
) -> None:
    """Poll Twilio's message list into twilio.message until stopped.

    New messages are inserted, which wakes `smsworker run`; changed ones are
    updated, and ones deleted at Twilio become tombstones. One process per
    Twilio account syncs at a time; others wait as standbys. Stops on
    SIGTERM or Ctrl-C.
    """
    check_sync_credentials(twilio_account_sid, twilio_auth_token)
    twilio = twilio_settings(twilio_account_sid, twilio_auth_token, twilio_api_base_url)
    assert twilio is not None, "check_sync_credentials requires both"
    stop_event = threading.Event()
    _stop_on_signals(stop_event.set)
    metrics = SyncMetrics()
    serve_metrics(metrics, metrics_port, metrics_address)
    try:
        url = resolve_database_url(database_url, data_dir)
        with db.connect(url, autocommit=True) as conn, db.database_errors():
            db.check_schema(conn, DEFAULT_CURSOR_NAME)
            sync.check_schema(conn)
        syncer = sync.Syncer(
            sync.SyncSettings(
                url, twilio, sync_interval, sync_overlap, sync_backfill, sync_page_size
            ),
            metrics=metrics,
            stop_event=stop_event,
        )
        syncer.run()
    except SmsWorkerError as error:
        raise click.ClickException(str(error)) from error


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _phone_number(value: str, region: str, param_hint: str) -> str:
    number = phones.normalize(value, region)
    if number is None:
        raise click.BadParameter(
            f"{value!r} is not a valid phone number; write it with its country code, "
            "like +12135550101",
            param_hint=param_hint,
        )
    return number


@main.group("groups")
def groups_command() -> None:
    """Create and list the groups that own private lists."""


@groups_command.command("create")
@database_url_option
@data_dir_option
@region_option
@click.option(
    "--number",
    "our_number",
    required=True,
    help="Our Twilio number that reaches the group's list.",
)
@click.option(
    "--member",
    "member_numbers",
    multiple=True,
    required=True,
    help="A member's phone number; repeat for more members.",
)
@click.argument("name")
def groups_create(
    database_url: str | None,
    data_dir: Path,
    default_region: str,
    our_number: str,
    member_numbers: tuple[str, ...],
    name: str,
) -> None:
    """Create group NAME, reached through --number, with its first members."""
    try:
        groups.check_name(name.strip())
    except groups.GroupError as error:
        raise click.BadParameter(str(error), param_hint="NAME") from error
    ours = _phone_number(our_number, default_region, "--number")
    numbers = list(
        dict.fromkeys(_phone_number(n, default_region, "--member") for n in member_numbers)
    )
    try:
        url = resolve_database_url(database_url, data_dir)
        with db.connect(url, autocommit=True) as conn, db.database_errors():
            db.check_schema(conn, DEFAULT_CURSOR_NAME)
            group = groups.create_group(conn, name.strip(), ours, numbers)
    except SmsWorkerError as error:
        raise click.ClickException(str(error)) from error
    click.echo(
        f"Created group {group.name!r} (id {group.id}) at {group.our_number} "
        f"with {len(numbers)} member{'s' if len(numbers) != 1 else ''}."
    )


@groups_command.command("list")
@database_url_option
@data_dir_option
def groups_list(database_url: str | None, data_dir: Path) -> None:
    """List the groups with their numbers, members and items."""
    try:
        url = resolve_database_url(database_url, data_dir)
        with db.connect(url, autocommit=True) as conn, db.database_errors():
            db.check_schema(conn, DEFAULT_CURSOR_NAME)
            summaries = groups.list_groups(conn)
    except SmsWorkerError as error:
        raise click.ClickException(str(error)) from error
    if not summaries:
        click.echo("No groups yet: smsworker groups create NAME --number OURS --member NUMBER")
        return
    for summary in summaries:
        group = summary.group
        click.echo(
            f"{group.id:>4}  {group.name}  at {group.our_number}  "
            f"{_count(summary.member_count, 'member')}, {_count(summary.item_count, 'item')}"
        )


@main.group("members")
def members_command() -> None:
    """Add, remove and list the members of a group (by name or id)."""


def _change_members(
    database_url: str | None,
    data_dir: Path,
    group_text: str,
    change: Callable[[db.Connection, groups.Group], str],
) -> str:
    """Run `change` on the group in one transaction and return what it reports."""
    try:
        url = resolve_database_url(database_url, data_dir)
        with db.connect(url, autocommit=True) as conn, db.database_errors():
            db.check_schema(conn, DEFAULT_CURSOR_NAME)
            with conn.transaction():
                group = groups.find_group(conn, group_text)
                return change(conn, group)
    except SmsWorkerError as error:
        raise click.ClickException(str(error)) from error


@members_command.command("add")
@database_url_option
@data_dir_option
@region_option
@click.argument("group")
@click.argument("number")
def members_add(
    database_url: str | None, data_dir: Path, default_region: str, group: str, number: str
) -> None:
    """Add NUMBER to GROUP. No welcome text is sent."""
    phone = _phone_number(number, default_region, "NUMBER")

    def add(conn: db.Connection, found: groups.Group) -> str:
        groups.check_not_ours(conn, phone, found.our_number)
        outcome = groups.add_member(conn, found, phone, invited_by=None)
        if outcome == "in another group":
            raise groups.GroupError(
                f"{phone} is a member of another group at {found.our_number}; "
                "remove them there first"
            )
        if outcome == "member already":
            return f"{phone} is a member of {found.name!r} already."
        return f"Added {phone} to {found.name!r}."

    click.echo(_change_members(database_url, data_dir, group, add))


@members_command.command("remove")
@database_url_option
@data_dir_option
@region_option
@click.argument("group")
@click.argument("number")
def members_remove(
    database_url: str | None, data_dir: Path, default_region: str, group: str, number: str
) -> None:
    """Remove NUMBER from GROUP. The group and its list stay, even without members."""
    phone = _phone_number(number, default_region, "NUMBER")

    def remove(conn: db.Connection, found: groups.Group) -> str:
        if not groups.remove_member(conn, found, phone):
            raise groups.GroupError(f"{phone} is not a member of {found.name!r}")
        return f"Removed {phone} from {found.name!r}."

    click.echo(_change_members(database_url, data_dir, group, remove))


@members_command.command("list")
@database_url_option
@data_dir_option
@click.argument("group")
def members_list(database_url: str | None, data_dir: Path, group: str) -> None:
    """List the members of GROUP, oldest first."""

    def read(conn: db.Connection, found: groups.Group) -> str:
        numbers = groups.members(conn, found)
        header = f"{found.name!r} at {found.our_number}: {len(numbers)} members"
        return "\n".join([header, *numbers])

    click.echo(_change_members(database_url, data_dir, group, read))
