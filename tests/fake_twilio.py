"""A fake Twilio REST API for tests and benchmarks.

It serves the one endpoint smsworker uses, Message create, on 127.0.0.1 so the
real ``twilio`` library can be exercised over HTTP without reaching Twilio::

    client = twilio.rest.Client(fake.account_sid, fake.auth_token, environment={})
    client.api.base_url = fake.url
"""

from __future__ import annotations

import base64
import binascii
import contextlib
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
from datetime import UTC, datetime
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

API_VERSION = "2010-04-01"
MAX_BODY_UTF16_UNITS = 1600
_MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages\.json$")
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_JsonResponse = tuple[int, dict[str, Any]]
_ERRORS = {  # Twilio error code: (HTTP status, message template)
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

    def _not_allowed(self) -> None:
        self._read_body()

        def reject() -> _JsonResponse:
            raise _ApiError.for_code(20004, headers={"Allow": "POST"})

        self._respond(reject)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = _not_allowed

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
        headers = {}
        if retry_after is not None:
            whole = float(retry_after).is_integer()
            headers["Retry-After"] = str(int(retry_after) if whole else retry_after)
        code = 20000 + status if code is None else code
        message = message or HTTPStatus(status).phrase
        error = functools.partial(_ApiError, status, code, message, headers)
        with self._changed:
            self._failures.extend([error] * count)

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
        """Forget accepted messages and pending failures (not requests_count)."""
        with self._changed:
            self._messages.clear()
            self._failures.clear()

    def _track(self, connection: socket.socket, *, opened: bool) -> None:
        """Record a connection as open or closed, so stop() can cut open ones."""
        with self._changed:
            if opened:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

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
        if _basic_auth(auth) != (self.account_sid, self.auth_token):
            challenge = {"WWW-Authenticate": 'Basic realm="Twilio API"'}
            raise _ApiError.for_code(20003, headers=challenge)
        if match.group(1) != self.account_sid:
            raise _ApiError.for_code(20404, path)
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
        with self._changed:
            self._messages.append(sent)
            self._changed.notify_all()
        now = format_datetime(datetime.now(UTC))
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sent.sid}"
        return 201, {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": from_ or None,
            "messaging_service_sid": service or None,
            "num_media": "0",
            "num_segments": str(_segments(body)),
            "price": None,
            "price_unit": "USD",
            "sid": sent.sid,
            "status": "queued" if from_ else "accepted",
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
