"""`smsworker sync`: list Twilio's messages and upsert them into twilio.message.

Each poll runs a listing of the messages sent since an overlap before the
last poll's newest one, newest first, following Twilio's pages. Every page
commits in one transaction to a staging table, with the path of the next
page, so a sync stopped in the middle of a run continues from the page it
had reached. When the run ends, its rows reach twilio.message in one
transaction. New messages are inserted, which wakes the worker through the
insert trigger, and changed ones (status, error, price) are updated. A
stored message that a complete run no longer lists was deleted at Twilio,
so it becomes a tombstone.

Twilio filters the list by the day a message was sent, not the second, so a
run asks for every message since midnight of its window's start and stops
paging at the first page that reaches past the window.

NOTE: the stop rule takes the list as sorted by date_sent, newest first.
Twilio documents newest first without naming the field; if it were
date_created, a message queued long before it was sent could sit on a page
after the one where a run stops, and that run would not see it.
"""

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import requests
from psycopg.types.json import Jsonb
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential_jitter,
)
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.response import Response
from twilio.rest import Client
from twilio.rest.api.v2010.account.message import MessageInstance

from smsworker import db, queries
from smsworker.errors import ConfigurationError, DatabaseUnavailable, SmsWorkerError
from smsworker.metrics import SyncMetrics
from smsworker.sender import (
    REQUEST_TIMEOUT_S,
    HeaderKeepingHttpClient,
    parse_retry_after,
    wait_for_retry_after,
)
from smsworker.settings import DEFAULT_CURSOR_NAME, TwilioSettings, repr_without_database_url

logger = logging.getLogger(__name__)

SYNC_CONNECTION_NAME = "smsworker-sync"
# The metrics port of `smsworker sync`, next to the worker's.
DEFAULT_SYNC_METRICS_PORT = 9109
# Seconds between polls.
SYNC_INTERVAL_S = 5.0
# How far before the newest message of the last poll a poll starts listing.
# Delivery status, error code and price change in the minutes after a
# message is sent; changes made later than this are not seen.
SYNC_OVERLAP_S = 600.0
# Messages per page, at most 1,000 (Twilio's limit).
SYNC_PAGE_SIZE = 1000
# How long one page request is retried (429, 5xx, network) before the poll
# gives up and the next poll continues from the same page.
SYNC_RETRY_BUDGET_S = 60.0
# Stored messages sent in the last seconds before a run began are not turned
# into tombstones when the run does not list them: Twilio's list may not show
# a message that just arrived. The next run lists them again.
TOMBSTONE_GRACE_S = 60.0


class SyncError(SmsWorkerError):
    """Twilio's message list could not be read; the next poll tries again."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class InvalidPageError(SyncError):
    """Twilio rejected a page's URL (400 or 404): asking for it again cannot succeed."""


class TransientSyncError(SyncError):
    """Twilio is rate limiting, failing or unreachable: the same request may succeed later."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class SyncSettings:
    """Everything `smsworker sync` needs; every duration is in seconds."""

    database_url: str
    twilio: TwilioSettings
    interval_s: float = SYNC_INTERVAL_S
    overlap_s: float = SYNC_OVERLAP_S
    # Load the messages of this many seconds before the first poll, once.
    backfill_s: float | None = None
    page_size: int = SYNC_PAGE_SIZE
    retry_budget_s: float = SYNC_RETRY_BUDGET_S

    def __repr__(self) -> str:
        return repr_without_database_url(self)


@dataclass(frozen=True)
class ListedPage:
    """One page of Twilio's message list, as rows of twilio.message."""

    rows: list[dict[str, Any]]
    # The next page's path and query, without the API's base URL, which may
    # change before a stopped run continues.
    next_url: str | None


class MessageLister:
    """Reads Twilio's Messages list with the real twilio library."""

    def __init__(self, settings: TwilioSettings, page_size: int) -> None:
        self.http_client = HeaderKeepingHttpClient(timeout=REQUEST_TIMEOUT_S)
        self.client = Client(
            settings.account_sid, settings.auth_token, http_client=self.http_client
        )
        self.client.api.base_url = settings.api_base_url.rstrip("/")
        self.page_size = page_size

    def first_page(self, since: datetime) -> ListedPage:
        """Return the newest messages sent on or after the day of `since` (UTC)."""
        return self._read(
            lambda: self.client.messages.page(
                date_sent_after=since.date().isoformat(), page_size=self.page_size
            )
        )

    def page_at(self, uri: str) -> ListedPage:
        """Return the page at `uri`, the next-page path of an earlier page."""
        return self._read(lambda: self.client.messages.get_page(self.client.api.absolute_url(uri)))

    def _read(self, fetch: Callable[[], Any]) -> ListedPage:
        try:
            page = fetch()
            rows = [message_row(message) for message in page]
        except TwilioRestException as error:
            raise self._translate(error.status, error.code, error.msg) from error
        except (requests.ConnectionError, requests.Timeout) as error:
            raise TransientSyncError(f"Twilio is unreachable: {error}") from error
        except TwilioException as error:
            # The library reports a list page that is not 200 as a plain
            # TwilioException whose second argument is the response.
            response = error.args[1] if len(error.args) > 1 else None
            if isinstance(response, Response):
                raise self._translate(*_error_details(response)) from error
            raise SyncError(f"reading Twilio's message list failed: {error}") from error
        except requests.RequestException as error:
            raise SyncError(f"reading Twilio's message list failed: {error}") from error
        next_url = page.next_page_url
        if next_url:
            parts = urlsplit(next_url)
            next_url = f"{parts.path}?{parts.query}" if parts.query else parts.path
        return ListedPage(rows, next_url or None)

    def _translate(self, status: int, code: int | None, message: str) -> SyncError:
        description = f"Twilio returned HTTP {status}, error {code}: {message}"
        if status == 429 or status >= 500:
            headers = {key.lower(): value for key, value in self.http_client.last_headers.items()}
            return TransientSyncError(
                description,
                status=status,
                retry_after_s=parse_retry_after(headers.get("retry-after")),
            )
        if status == 401:
            description += "; check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
        if status in (400, 404):
            return InvalidPageError(description, status=status)
        return SyncError(description, status=status)


def _error_details(response: Response) -> tuple[int, int | None, str]:
    """Return the status, Twilio error code and message of an error response."""
    try:
        body = json.loads(response.text)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return response.status_code, None, response.text[:200]
    code = body.get("code")
    return (
        response.status_code,
        code if isinstance(code, int) else None,
        str(body.get("message", ""))[:200],
    )


def message_row(message: MessageInstance) -> dict[str, Any]:
    """Map a listed message to twilio.message's columns, as JSON values."""
    return {
        "id": message.sid,
        "account_id": message.account_sid,
        "api_version": message.api_version,
        "body": _without_nul(message.body),
        "date_created": _utc_text(message.date_created),
        "date_sent": _utc_text(message.date_sent),
        "date_updated": _utc_text(message.date_updated),
        "direction": _text(message.direction),
        "error_code": message.error_code,
        "error_message": message.error_message,
        "from": message.from_,
        "messaging_service_id": message.messaging_service_sid,
        "num_media": _integer(message.num_media),
        "num_segments": _integer(message.num_segments),
        "price": _decimal(message.price),
        "price_unit": message.price_unit,
        "status": _text(message.status),
        "to": message.to,
        "uri": message.uri,
    }


def _without_nul(text: str | None) -> str | None:
    # PostgreSQL's text and jsonb cannot store U+0000, which would stop the
    # sync at that message on every poll.
    return None if text is None else text.replace("\x00", "")


def _utc(moment: datetime | None) -> datetime | None:
    """Return `moment` as naive UTC, the form of twilio.message's timestamps."""
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _utc_text(moment: datetime | None) -> str | None:
    naive = _utc(moment)
    return None if naive is None else naive.isoformat()


def _text(value: object) -> str | None:
    # The library's enums are str subclasses, so store their plain value.
    return None if value is None else str(getattr(value, "value", value))


def _integer(value: object) -> int | None:
    try:
        return None if value is None else int(str(value))
    except ValueError:
        return None


def _decimal(value: object) -> str | None:
    try:
        return None if value is None else str(Decimal(str(value)))
    except InvalidOperation:
        return None


@dataclass
class PollResult:
    """Counts of the pages read and rows written by one poll."""

    pages: int = 0
    fetched: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    # False when the poll stopped before the end of its run: the next poll
    # continues from the page it reached.
    complete: bool = False


@dataclass(frozen=True)
class _State:
    synced_from: datetime | None
    synced_until: datetime | None
    history_before: datetime
    run_window_start: datetime | None
    run_head: datetime | None
    run_next_page: str | None
    run_started_at: datetime | None


class Syncer:
    """Polls Twilio's message list into twilio.message until `stop_event` is set."""

    def __init__(
        self,
        settings: SyncSettings,
        *,
        metrics: SyncMetrics | None = None,
        stop_event: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.account = settings.twilio.account_sid
        self.metrics = metrics or SyncMetrics()
        self.stop_event = stop_event or threading.Event()
        self.lister = MessageLister(settings.twilio, settings.page_size)
        self._conn: db.Connection | None = None
        self._active = False
        self._standby_logged = False
        # The role is taken again after each lost connection; it is logged
        # when it changes, not each time.
        self._active_logged = False
        self._wait = wait_for_retry_after(
            wait_exponential_jitter(initial=1, max=30, jitter=1), max_s=settings.retry_budget_s
        )

    def run(self) -> None:
        """Poll every settings.interval_s seconds until stopped.

        A poll that fails is logged and counted, and the next one tries
        again: outages of Twilio or the database delay the sync, they do not
        stop it.
        """
        logger.info(
            "smsworker sync started: account %s, %s, every %.0f s with %.0f s of overlap.",
            self.account,
            self.settings.twilio.api_base_url,
            self.settings.interval_s,
            self.settings.overlap_s,
        )
        try:
            while not self.stop_event.is_set():
                started = time.monotonic()
                self._poll_and_report()
                elapsed = time.monotonic() - started
                self.stop_event.wait(max(0.0, self.settings.interval_s - elapsed))
        finally:
            self.close()
        logger.info("smsworker sync stopped.")

    def close(self) -> None:
        """Close the database connection, which gives up the active role."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._active = False

    def _poll_and_report(self) -> None:
        started = time.monotonic()
        try:
            result = self.poll()
        except SyncError as error:
            self.metrics.errors.labels(kind="twilio").inc()
            logger.warning("Sync poll failed, trying again next poll: %s", error)
            return
        except DatabaseUnavailable as error:
            self.metrics.errors.labels(kind="database").inc()
            logger.warning("Sync poll failed, trying again next poll: %s", error)
            self.close()
            return
        except ConfigurationError:
            raise
        except Exception:
            self.metrics.errors.labels(kind="unexpected").inc()
            logger.exception("Sync poll failed unexpectedly, trying again next poll.")
            self.close()
            return
        if result is None:
            return
        duration_s = time.monotonic() - started
        self.metrics.poll_duration.observe(duration_s)
        if result.complete:
            self.metrics.last_success.set_to_current_time()
        logger.info(
            "Sync poll%s: fetched %d messages in %d pages, inserted %d, updated %d, "
            "deleted %d, %.2f s.",
            "" if result.complete else " (stopped mid-run)",
            result.fetched,
            result.pages,
            result.inserted,
            result.updated,
            result.deleted,
            duration_s,
        )

    def poll(self) -> PollResult | None:
        """List what changed since the last poll and store it; None as a standby.

        Raises SyncError when Twilio's list cannot be read within the retry
        budget, DatabaseUnavailable when the database is lost.
        """
        with db.database_errors():
            conn = self._connection()
            if not self._take_active_role(conn):
                return None
            now = datetime.now(UTC).replace(tzinfo=None)
            state = self._load_state(conn, now)
            result = PollResult()
            if state.run_next_page is None or state.run_window_start is None:
                window_start = self._window_start(state, now)
                with conn.transaction():
                    conn.execute(queries.FORGET_SYNC_STAGED, {"account": self.account})
                    conn.execute(
                        queries.START_SYNC_RUN,
                        {"account": self.account, "window_start": window_start},
                    )
                run_started = now
                head = None
                next_url = None
            else:
                window_start = state.run_window_start
                run_started = state.run_started_at or now
                head = state.run_head
                next_url = state.run_next_page
                logger.info("Continuing the sync run from the page it had reached.")

        while not self.stop_event.is_set():
            if next_url is None:
                page = self._fetch(functools.partial(self.lister.first_page, window_start))
            else:
                try:
                    page = self._fetch(functools.partial(self.lister.page_at, next_url))
                except InvalidPageError:
                    # An expired page token, for example. The next poll starts
                    # the run again from its window, which it lists anew.
                    with db.database_errors():
                        conn.execute(queries.ABANDON_SYNC_RUN, {"account": self.account})
                    raise
            result.pages += 1
            result.fetched += len(page.rows)
            self.metrics.fetched.inc(len(page.rows))
            sent = [datetime.fromisoformat(r["date_sent"]) for r in page.rows if r["date_sent"]]
            head = max([*sent, *([head] if head else [])], default=None)
            done = page.next_url is None or (bool(sent) and min(sent) < window_start)
            with db.database_errors(), conn.transaction():
                self._stage(conn, page.rows)
                inserted = updated = deleted = 0
                if done:
                    inserted, updated, deleted = self._finish_run(
                        conn, window_start, run_started, head, state.history_before
                    )
                else:
                    conn.execute(
                        queries.ADVANCE_SYNC_RUN,
                        {"account": self.account, "run_head": head, "next_page": page.next_url},
                    )
            result.inserted += inserted
            result.updated += updated
            result.deleted += deleted
            self.metrics.written.labels(change="inserted").inc(inserted)
            self.metrics.written.labels(change="updated").inc(updated)
            self.metrics.written.labels(change="deleted").inc(deleted)
            if done:
                result.complete = True
                break
            next_url = page.next_url
        return result

    def _connection(self) -> db.Connection:
        if self._conn is None or self._conn.closed:
            self._active = False
            self._conn = db.connect(
                self.settings.database_url, autocommit=True, application_name=SYNC_CONNECTION_NAME
            )
            db.check_schema(self._conn, DEFAULT_CURSOR_NAME)
            check_schema(self._conn)
        return self._conn

    def _take_active_role(self, conn: db.Connection) -> bool:
        """Hold the account's sync lock, so one process per account writes its messages."""
        if self._active:
            return True
        row = conn.execute(queries.TRY_SYNC_ROLE, {"account": self.account}).fetchone()
        self._active = row == (True,)
        self.metrics.active.set(1 if self._active else 0)
        if self._active and not self._active_logged:
            logger.info("This process syncs account %s.", self.account)
            self._active_logged = True
            self._standby_logged = False
        elif not self._active and not self._standby_logged:
            logger.info("Another process syncs account %s; waiting as a standby.", self.account)
            self._standby_logged = True
        return self._active

    def _load_state(self, conn: db.Connection, now: datetime) -> _State:
        history_before = now - timedelta(seconds=self.settings.overlap_s)
        conn.execute(
            queries.ENSURE_SYNC_STATE, {"account": self.account, "history_before": history_before}
        )
        row = conn.execute(queries.LOAD_SYNC_STATE, {"account": self.account}).fetchone()
        assert row is not None, "ENSURE_SYNC_STATE created the row"
        synced_from, synced_until, history_before, window_start, head, next_page, started = row
        return _State(
            synced_from, synced_until, history_before, window_start, head, next_page, _utc(started)
        )

    def _window_start(self, state: _State, now: datetime) -> datetime:
        """Return where a new run starts: an overlap before what is synced, or the backfill."""
        overlap = timedelta(seconds=self.settings.overlap_s)
        start = (state.synced_until or now) - overlap
        if self.settings.backfill_s is not None:
            reach = now - timedelta(seconds=self.settings.backfill_s)
            if state.synced_from is None or reach < state.synced_from:
                logger.info(
                    "Backfilling the messages sent since %s UTC.", f"{reach:%Y-%m-%d %H:%M}"
                )
                start = min(start, reach)
        return start

    def _fetch(self, fetch: Callable[[], ListedPage]) -> ListedPage:
        retrying = Retrying(
            retry=retry_if_exception_type(TransientSyncError),
            wait=self._wait,
            stop=stop_after_delay(self.settings.retry_budget_s)
            | stop_when_event_set(self.stop_event),
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        return retrying(fetch)

    def _sleep(self, seconds: float) -> None:
        """Sleep between retries, waking at once when stopped."""
        self.stop_event.wait(seconds)

    def _log_retry(self, retry_state: RetryCallState) -> None:
        self.metrics.errors.labels(kind="twilio_retried").inc()
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        sleep_s = retry_state.next_action.sleep if retry_state.next_action else 0.0
        logger.warning(
            "Reading Twilio's message list failed (attempt %d), retrying in %.1f s: %s",
            retry_state.attempt_number,
            sleep_s,
            error,
        )

    def _stage(self, conn: db.Connection, rows: list[dict[str, Any]]) -> None:
        """Keep one page's rows until the run ends."""
        if rows:
            conn.execute(queries.STAGE_SYNC_ROWS, {"account": self.account, "rows": Jsonb(rows)})

    def _finish_run(
        self,
        conn: db.Connection,
        window_start: datetime,
        run_started: datetime,
        head: datetime | None,
        history_before: datetime,
    ) -> tuple[int, int, int]:
        """Write the run's rows, turn unlisted ones into tombstones and close the run.

        Returns how many rows were inserted, updated and deleted.
        """
        written = conn.execute(queries.UPSERT_MESSAGES, {"account": self.account}).fetchall()
        history = [
            (id_, created)
            for id_, direction, created, inserted in written
            if inserted and direction == "inbound" and created and created < history_before
        ]
        if history:
            conn.execute(
                queries.RECORD_SYNC_HISTORY,
                {"message_ids": [h[0] for h in history], "dates": [h[1] for h in history]},
            )
        inserted = sum(1 for row in written if row[3])
        listed_until = run_started - timedelta(seconds=TOMBSTONE_GRACE_S)
        deleted = conn.execute(
            queries.TOMBSTONE_UNLISTED,
            {"account": self.account, "window_start": window_start, "listed_until": listed_until},
        ).rowcount
        conn.execute(queries.FORGET_SYNC_STAGED, {"account": self.account})
        conn.execute(queries.FINISH_SYNC_RUN, {"account": self.account, "run_head": head})
        return inserted, len(written) - inserted, deleted


def check_schema(conn: db.Connection) -> None:
    """Raise ConfigurationError unless the database has the sync's tables."""
    row = conn.execute("SELECT to_regclass('smsworker.sync_state') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        raise ConfigurationError(
            "the database has no smsworker sync tables; run `smsworker migrate` first"
        )
