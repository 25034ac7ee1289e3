"""A fake Twilio REST API for tests and benchmarks.

It serves the endpoints smsworker uses, Message create and Message list, on
127.0.0.1 so the real ``twilio`` library can be exercised over HTTP without
reaching Twilio::

    client = twilio.rest.Client(fake.account_sid, fake.auth_token, environment={})
    client.api.base_url = fake.url
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import functools
import json
import re
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlencode, urlsplit

API_VERSION = "2010-04-01"
MAX_BODY_UTF16_UNITS = 1600
_MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages\.json$")
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_JsonResponse = tuple[int, dict[str, Any]]
# Where a message sorts in the list endpoint's order, which is descending:
# (date_sent is null, date_sent in whole seconds since the epoch, sid).
_SortKey = tuple[bool, int, str]
_ERRORS = {  # Twilio error code: (HTTP status, message template)
    20001: (400, "Invalid {}"),
    20003: (401, "Authenticate"),
    20004: (405, "Method not allowed"),
    20404: (404, "The requested resource {} was not found"),
    21211: (400, "The 'To' number {} is not a valid phone number."),
    21602: (400, "Message body is required."),
    21603: (400, "A 'From' phone number is required."),
    21604: (400, "A 'To' phone number is required."),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21617: (400, "The concatenated message body exceeds the 1600 character limit."),
}
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
# Twilio filters DateSent at day granularity, so only the date part counts.
_DATE_FILTER = re.compile(r"(\d{4}-\d{2}-\d{2})(?:T\d{2}:\d{2}:\d{2}Z)?")
_DATE_FILTERS: dict[str, Callable[[date, date], bool]] = {  # parameter: test(sent, day)
    "DateSent": lambda sent, day: sent == day,
    "DateSent<": lambda sent, day: sent <= day,
    "DateSent>": lambda sent, day: sent >= day,
}
_LIST_FILTERS = ("To", "From", *_DATE_FILTERS)


@dataclass(frozen=True)
class SentMessage:
    """A message the fake accepted, as a test would want to check it."""

    sid: str
    account_sid: str
    to: str
    from_: str
    body: str
    # time.monotonic() when the fake accepted it, for latency measurements.
    received_at: float = field(default=0.0, compare=False)


@dataclass(eq=False)
class _ApiError(Exception):
    """An error response, raised while handling a request and sent as Twilio's JSON."""

    status: int
    code: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_code(cls, code: int, *args: str, headers: dict[str, str] | None = None) -> Self:
        """Build Twilio's error for `code`, filling `args` into its message."""
        status, template = _ERRORS[code]
        return cls(status, code, template.format(*args), headers or {})


@dataclass(frozen=True)
class _Logged:
    """A message in the log: its JSON record, never changed in place, and date_sent."""

    record: dict[str, Any]
    sent: datetime | None

    @property
    def key(self) -> _SortKey:
        """Return the sort key of this message. The list endpoint shows higher keys first."""
        sent = self.sent
        return (sent is None, 0 if sent is None else int(sent.timestamp()), self.record["sid"])


def _segments(body: str) -> int:
    """Estimate the SMS segment count: ASCII as GSM-7, anything else as UCS-2.

    NOTE: GSM-7 extension characters such as `{` count double on real networks and
    some ASCII (backtick) is not GSM-7 at all, so this can be off by a segment.
    """
    units = len(body.encode("utf-16-le")) // 2
    single, multi = (160, 153) if body.isascii() else (70, 67)
    return 1 if units <= single else -(-units // multi)


class _Handler(BaseHTTPRequestHandler):
    """Serves one connection on behalf of a FakeTwilio."""

    # Keep connections open between requests, as the pooled twilio client expects.
    protocol_version = "HTTP/1.1"
    # Headers and body are written separately, so with Nagle's algorithm each
    # response waited for a delayed ACK (about 40 ms per request when measured).
    disable_nagle_algorithm = True

    def __init__(self, fake: FakeTwilio, *args: Any, **kwargs: Any) -> None:
        self.fake = fake
        super().__init__(*args, **kwargs)

    def setup(self) -> None:
        super().setup()
        self.fake._track(self.connection, opened=True)

    def finish(self) -> None:
        self.fake._track(self.connection, opened=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Print nothing, so test and benchmark output stays readable."""

    def _read_body(self) -> str:
        """Read the whole request body so the keep-alive connection stays in step."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return body.decode(errors="replace")

    def do_POST(self) -> None:
        form = parse_qs(self._read_body(), keep_blank_values=True)
        auth = self.headers.get("Authorization", "")
        self._respond(lambda: self.fake._create(self.path, auth, form))

    def do_GET(self) -> None:
        self._read_body()
        split = urlsplit(self.path)
        if _MESSAGES_PATH.match(split.path) is None:
            self._respond(_raising(_ApiError.for_code(20404, split.path)))
            return
        auth = self.headers.get("Authorization", "")
        if not self.fake._list_arrived(_single_values(split.query)):
            self.close_connection = True  # stop() was called while the request was held.
            return
        self._respond(lambda: self.fake._list(self.path, auth))

    def _not_allowed(self) -> None:
        self._read_body()
        self._respond(_raising(_ApiError.for_code(20004, headers={"Allow": "GET, POST"})))

    do_PUT = do_PATCH = do_DELETE = do_HEAD = _not_allowed

    def _respond(self, produce: Callable[[], _JsonResponse]) -> None:
        """Wait out the configured delay, then send what `produce` returns as JSON."""
        if not self.fake._pause():
            self.close_connection = True  # stop() was called during the delay.
            return
        extra: dict[str, str] = {}
        try:
            status, payload = produce()
        except _ApiError as error:
            status, extra = error.status, error.headers
            more_info = f"https://www.twilio.com/docs/errors/{error.code}"
            payload = {"code": error.code, "message": error.message}
            payload |= {"more_info": more_info, "status": error.status}
        data = json.dumps(payload).encode()
        self.send_response(status)
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data))}
        for name, value in (headers | extra).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that hung up, and report any other error as usual."""
        if not isinstance(sys.exception(), OSError):
            super().handle_error(request, client_address)


class FakeTwilio:
    """An in-process stand-in for api.twilio.com's Messages endpoint."""

    def __init__(
        self, account_sid: str = "AC" + "0" * 32, auth_token: str = "test-auth-token"
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.url = ""
        # Recipients that opted out, so sending to them fails with error 21610.
        self.opted_out: set[str] = set()
        # Guards the fields below, and is notified when a message is accepted.
        self._changed = threading.Condition()
        self._messages: list[SentMessage] = []
        self._failures: deque[Callable[[], _ApiError]] = deque()
        self._requests = 0
        # The message log the list endpoint shows, by sid.
        self._log: dict[str, _Logged] = {}
        self._list_failures: deque[Callable[[], _ApiError]] = deque()
        self._list_requests: list[dict[str, str]] = []
        # While holding, list GETs after the first `_passes` wait for a release.
        # Each release increments `_releases`, which held requests wait for.
        self._holding = False
        self._passes = 0
        self._releases = 0
        self._delay = 0.0
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Listen on an OS-picked port of 127.0.0.1 and serve in a daemon thread."""
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", 0), functools.partial(_Handler, self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() waits up to this long.
            name="fake-twilio",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open keep-alive connections and free the port."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            with self._changed:
                self._changed.notify_all()  # Held list requests give up.
                for connection in self._connections:
                    # The client may already have hung up.
                    with contextlib.suppress(OSError):
                        connection.shutdown(socket.SHUT_RDWR)
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def messages(self) -> list[SentMessage]:
        """Accepted messages in arrival order (a copy)."""
        with self._changed:
            return list(self._messages)

    @property
    def requests_count(self) -> int:
        """Number of Messages POSTs received, failed ones included."""
        with self._changed:
            return self._requests

    def fail_next(
        self,
        count: int,
        status: int = 503,
        code: int | None = None,
        retry_after: float | None = None,
        message: str = "",
    ) -> None:
        """Fail the next `count` Messages POSTs, after any failures already queued.

        `code` defaults to 20000 + status (Twilio's 20429, 20500, 20503) and
        `message` to the HTTP reason phrase. `retry_after` (seconds) adds a
        Retry-After header. Failures come before auth and validation checks.
        """
        error = _failure(status, code, retry_after, message)
        with self._changed:
            self._failures.extend([error] * count)

    def fail_next_lists(
        self,
        count: int,
        status: int = 503,
        code: int | None = None,
        retry_after: float | None = None,
        message: str = "",
    ) -> None:
        """Fail the next `count` Messages list GETs, as fail_next does for POSTs.

        The two queues are separate: these failures apply only to list GETs, and
        fail_next's only to POSTs. Failures come before the auth check.
        """
        error = _failure(status, code, retry_after, message)
        with self._changed:
            self._list_failures.extend([error] * count)

    def set_delay(self, seconds: float) -> None:
        """Wait this long before answering each request, like a distant API."""
        with self._changed:
            self._delay = seconds

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[SentMessage]:
        """Block until at least `count` messages were accepted, then return all."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._messages) >= count, timeout):
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {count} messages, "
                    f"{len(self._messages)} arrived: {self._messages!r}"
                )
            return list(self._messages)

    def clear(self) -> None:
        """Forget accepted messages, the message log and pending failures.

        requests_count and list_requests stay as they are.
        """
        with self._changed:
            self._messages.clear()
            self._log.clear()
            self._failures.clear()
            self._list_failures.clear()

    def clear_failures(self) -> None:
        """Forget the failures queued for POSTs and for list requests."""
        with self._changed:
            self._failures.clear()
            self._list_failures.clear()

    def add_inbound(
        self,
        from_: str,
        to: str,
        body: str,
        *,
        date_sent: datetime | None = None,
        sid: str | None = None,
        num_media: int = 0,
    ) -> dict[str, Any]:
        """Log a message received from `from_`, as Twilio lists it, and return a copy.

        `date_sent` must be timezone-aware and defaults to now. It is truncated to
        whole seconds and also used as date_created and date_updated.
        """
        sent = _whole_seconds(datetime.now(UTC) if date_sent is None else date_sent)
        record = self._record(
            sid=sid or "SM" + uuid.uuid4().hex,
            to=to,
            from_=from_,
            body=body,
            direction="inbound",
            status="received",
            created=sent,
            sent=sent,
            num_media=num_media,
        )
        with self._changed:
            self._log[record["sid"]] = _Logged(record, sent)
            self._changed.notify_all()
            return copy.deepcopy(record)

    def update_message(self, sid: str, **fields: Any) -> dict[str, Any]:
        """Change fields of a logged message, as Twilio would, and return a copy.

        Keys are the record's JSON keys (status="delivered", error_code=30003,
        price="-0.00750", and "from_" for "from"). Datetimes given for date_*
        keys become RFC 2822 strings. date_updated becomes now unless given.
        Raises KeyError for an unknown sid or field.
        """
        changes = {("from" if name == "from_" else name): value for name, value in fields.items()}
        if "sid" in changes:
            raise KeyError("the sid of a logged message cannot change")
        changes.setdefault("date_updated", datetime.now(UTC))
        for name, value in changes.items():
            if name.startswith("date_") and isinstance(value, datetime):
                changes[name] = format_datetime(_whole_seconds(value))
        with self._changed:
            logged = self._log[sid]
            unknown = changes.keys() - logged.record.keys()
            if unknown:
                raise KeyError(f"unknown message fields: {sorted(unknown)}")
            record = logged.record | changes
            sent = logged.sent
            if "date_sent" in changes:
                sent = None if record["date_sent"] is None else _parse_rfc2822(record["date_sent"])
            self._log[sid] = _Logged(record, sent)
            self._changed.notify_all()
            return copy.deepcopy(record)

    def delete_message(self, sid: str) -> None:
        """Remove a message from the log, as deleting it at Twilio does."""
        with self._changed:
            del self._log[sid]
            self._changed.notify_all()

    def logged_messages(self) -> list[dict[str, Any]]:
        """Copies of all logged messages, in the list endpoint's order."""
        with self._changed:
            ordered = sorted(self._log.values(), key=lambda logged: logged.key, reverse=True)
            return [copy.deepcopy(logged.record) for logged in ordered]

    @property
    def list_requests(self) -> list[dict[str, str]]:
        """Query parameters of every list GET received, in arrival order (a copy).

        Failed and held requests are included. Each parameter keeps its first value.
        """
        with self._changed:
            return [dict(query) for query in self._list_requests]

    def wait_for_list_requests(self, count: int, timeout: float = 10.0) -> list[dict[str, str]]:
        """Block until at least `count` list GETs arrived, then return list_requests."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._list_requests) >= count, timeout):
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {count} list requests, "
                    f"{len(self._list_requests)} arrived: {self._list_requests!r}"
                )
            return [dict(query) for query in self._list_requests]

    def hold_list_requests(self, after: int = 0) -> None:
        """Let the next `after` list GETs through, then hold later ones without a response.

        A held request waits in its handler thread until release_list_requests()
        lets it through, or until stop() closes its connection without a response.
        """
        with self._changed:
            self._holding = True
            self._passes = after

    def release_list_requests(self) -> None:
        """Respond to the held list GETs and stop holding new ones."""
        with self._changed:
            self._holding = False
            self._releases += 1
            self._changed.notify_all()

    def _track(self, connection: socket.socket, *, opened: bool) -> None:
        """Record a connection as open or closed, so stop() can cut open ones."""
        with self._changed:
            if opened:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _list_arrived(self, query: dict[str, str]) -> bool:
        """Record a list GET and wait while it is held. Return False if stop() was called."""
        with self._changed:
            self._list_requests.append(query)
            self._changed.notify_all()
            if not self._holding:
                return True
            if self._passes > 0:
                self._passes -= 1
                return True
            releases = self._releases
            self._changed.wait_for(lambda: self._releases != releases or self._stopping.is_set())
            return not self._stopping.is_set()

    def _pause(self) -> bool:
        """Sleep for the configured delay, and return False if stop() cut it short."""
        with self._changed:
            delay = self._delay
        return delay <= 0 or not self._stopping.wait(delay)

    def _create(self, path: str, auth: str, form: dict[str, list[str]]) -> _JsonResponse:
        """Validate a Messages POST and record the message if it passes.

        NOTE: Twilio does not document the order of its checks. This order is a guess.
        """
        path = urlsplit(path).path
        match = _MESSAGES_PATH.match(path)
        if match is None:
            raise _ApiError.for_code(20404, path)
        with self._changed:
            self._requests += 1
            if self._failures:
                raise self._failures.popleft()()
        self._authorize(auth, match.group(1), path)
        to, from_, body, service = (
            form.get(name, [""])[0] for name in ("To", "From", "Body", "MessagingServiceSid")
        )
        if not to:
            raise _ApiError.for_code(21604)
        if not from_ and not service:
            raise _ApiError.for_code(21603)
        if not body:
            raise _ApiError.for_code(21602)
        if not _E164.match(to):
            raise _ApiError.for_code(21211, to)
        if len(body.encode("utf-16-le")) // 2 > MAX_BODY_UTF16_UNITS:
            raise _ApiError.for_code(21617)
        if to in self.opted_out:
            raise _ApiError.for_code(21610)

        sent = SentMessage(
            "SM" + uuid.uuid4().hex, self.account_sid, to, from_, body, time.monotonic()
        )
        now = _whole_seconds(datetime.now(UTC))
        response = self._record(
            sid=sent.sid,
            to=to,
            from_=from_,
            body=body,
            direction="outbound-api",
            status="queued" if from_ else "accepted",
            created=now,
            sent=None,
            service=service,
        )
        # The log shows the message as Twilio lists it once it went out.
        logged = _Logged(response | {"status": "sent", "date_sent": format_datetime(now)}, now)
        with self._changed:
            self._messages.append(sent)
            self._log[sent.sid] = logged
            self._changed.notify_all()
        return 201, response

    def _list(self, path: str, auth: str) -> _JsonResponse:
        """Respond to a Messages GET with one page of the log, newest first.

        Pages are keyset-paginated: next_page_uri carries a PageToken naming the
        last message on the page, so the next page starts right after it even if that
        message was deleted or newer ones arrived in the meantime.
        """
        split = urlsplit(path)
        match = _MESSAGES_PATH.match(split.path)
        assert match is not None, "do_GET routes only Messages paths here"
        with self._changed:
            if self._list_failures:
                raise self._list_failures.popleft()()
        self._authorize(auth, match.group(1), split.path)
        query = _single_values(split.query)
        size = _whole_number(query, "PageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        # Page only numbers the response (page, start, end). PageToken selects the records.
        page = _whole_number(query, "Page", 0, 0, sys.maxsize)
        filters = {name: query[name] for name in _LIST_FILTERS if name in query}
        matches = _list_filter(filters)
        after = _token_key(query["PageToken"]) if "PageToken" in query else None
        with self._changed:
            rest = sorted(
                (
                    logged
                    for logged in self._log.values()
                    if matches(logged) and (after is None or logged.key < after)
                ),
                key=lambda logged: logged.key,
                reverse=True,
            )
        page_records = rest[:size]
        # NOTE: next_page_uri is null as soon as no message follows this page, even a
        # full one. Whether Twilio does the same for a full last page is not confirmed.
        next_page_uri = None
        if len(rest) > size:
            token = _page_token(page_records[-1].key)
            more = {"PageSize": size, "Page": page + 1, "PageToken": token}
            next_page_uri = f"{split.path}?{urlencode(filters | more)}"
        start = page * size
        first = {"Page": 0, "PageSize": size}
        return 200, {
            "end": start + len(page_records) - 1,
            "first_page_uri": f"{split.path}?{urlencode(filters | first)}",
            "messages": [logged.record for logged in page_records],
            "next_page_uri": next_page_uri,
            "page": page,
            "page_size": size,
            "previous_page_uri": None,
            "start": start,
            "uri": path,
        }

    def _authorize(self, auth: str, account: str, path: str) -> None:
        """Check the Basic credentials, then that the path names this account."""
        if _basic_auth(auth) != (self.account_sid, self.auth_token):
            challenge = {"WWW-Authenticate": 'Basic realm="Twilio API"'}
            raise _ApiError.for_code(20003, headers=challenge)
        if account != self.account_sid:
            raise _ApiError.for_code(20404, path)

    def _record(
        self,
        *,
        sid: str,
        to: str,
        from_: str,
        body: str,
        direction: str,
        status: str,
        created: datetime,
        sent: datetime | None,
        service: str = "",
        num_media: int = 0,
    ) -> dict[str, Any]:
        """Build a Message resource as Twilio's JSON shows it."""
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": format_datetime(created),
            "date_sent": None if sent is None else format_datetime(sent),
            "date_updated": format_datetime(created),
            "direction": direction,
            "error_code": None,
            "error_message": None,
            "from": from_ or None,
            "messaging_service_sid": service or None,
            "num_media": str(num_media),
            "num_segments": str(_segments(body)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": status,
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": to,
            "uri": f"{uri}.json",
        }


def _basic_auth(header: str) -> tuple[str, str] | None:
    """Decode an HTTP Basic Authorization header into (username, password)."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    return (username, password) if colon else None


def _raising(error: _ApiError) -> Callable[[], _JsonResponse]:
    """Return a response producer that raises `error`."""

    def produce() -> _JsonResponse:
        raise error

    return produce


def _failure(
    status: int, code: int | None, retry_after: float | None, message: str
) -> Callable[[], _ApiError]:
    """Build a queued failure for fail_next and fail_next_lists.

    `code` defaults to 20000 + status and `message` to the HTTP reason phrase.
    """
    headers = {}
    if retry_after is not None:
        whole = float(retry_after).is_integer()
        headers["Retry-After"] = str(int(retry_after) if whole else retry_after)
    code = 20000 + status if code is None else code
    message = message or HTTPStatus(status).phrase
    return functools.partial(_ApiError, status, code, message, headers)


def _whole_seconds(moment: datetime) -> datetime:
    """Convert an aware datetime to UTC and drop its fraction of a second."""
    if moment.tzinfo is None:
        raise ValueError(f"expected a timezone-aware datetime, got {moment!r}")
    return moment.astimezone(UTC).replace(microsecond=0)


def _parse_rfc2822(text: str) -> datetime:
    """Parse an RFC 2822 timestamp, such as a record's date_sent, into UTC."""
    moment = parsedate_to_datetime(text)
    if moment.tzinfo is None:  # "-0000" means UTC with no zone information.
        moment = moment.replace(tzinfo=UTC)
    return _whole_seconds(moment)


def _single_values(query: str) -> dict[str, str]:
    """Parse a query string, keeping the first value of each parameter."""
    return {name: values[0] for name, values in parse_qs(query, keep_blank_values=True).items()}


def _whole_number(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    """Read a decimal integer parameter from low to high, or raise Twilio's 20001."""
    text = query.get(name)
    if text is None:
        return default
    if not re.fullmatch(r"[0-9]{1,9}", text) or not low <= int(text) <= high:
        raise _ApiError.for_code(20001, name)
    return int(text)


def _list_filter(filters: dict[str, str]) -> Callable[[_Logged], bool]:
    """Turn the list filters of a query into a test of logged messages.

    DateSent filters compare days only, and exclude messages never sent.
    """
    days: list[tuple[Callable[[date, date], bool], date]] = []
    for name, compare in _DATE_FILTERS.items():
        if name in filters:
            match = _DATE_FILTER.fullmatch(filters[name])
            try:
                if match is None:
                    raise ValueError(filters[name])
                days.append((compare, date.fromisoformat(match.group(1))))
            except ValueError:
                raise _ApiError.for_code(20001, name) from None

    def matches(logged: _Logged) -> bool:
        record = logged.record
        if "To" in filters and record["to"] != filters["To"]:
            return False
        if "From" in filters and record["from"] != filters["From"]:
            return False
        if not days:
            return True
        sent = logged.sent
        return sent is not None and all(compare(sent.date(), day) for compare, day in days)

    return matches


def _page_token(key: _SortKey) -> str:
    """Encode a sort key as a PageToken: "PA" and base64 of [seconds or null, sid]."""
    never_sent, seconds, sid = key
    raw = json.dumps([None if never_sent else seconds, sid]).encode()
    return "PA" + base64.urlsafe_b64encode(raw).decode()


def _token_key(token: str) -> _SortKey:
    """Decode a PageToken made by _page_token, or raise Twilio's 20001."""
    try:
        if not token.startswith("PA"):
            raise ValueError(token)
        seconds, sid = json.loads(base64.b64decode(token[2:], altchars=b"-_", validate=True))
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int)):
            raise ValueError(token)
        if not isinstance(sid, str):
            raise ValueError(token)
    except (ValueError, TypeError, binascii.Error):
        raise _ApiError.for_code(20001, "PageToken") from None
    return (seconds is None, seconds or 0, sid)
