"""`smsworker webhook`: receive Twilio's inbound-message webhook and store the message.

Twilio signs each webhook request with the account's auth token over the URL
it called and the form fields (the X-Twilio-Signature header). A request
whose signature does not match is rejected with 403 and nothing of its body
is logged. A valid message is inserted into twilio.message at once, which
wakes the worker through its trigger.
"""

import logging
import threading
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from twilio.request_validator import RequestValidator

from smsworker import db, queries
from smsworker.errors import DatabaseUnavailable, SmsWorkerError
from smsworker.logs import mask_phone_number

logger = logging.getLogger(__name__)

# Twilio's webhook bodies are a few kilobytes; an SMS body is at most 1,600
# characters.
MAX_BODY_BYTES = 64 * 1024
EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
HEALTH_PATH = "/healthz"
# Database connections the webhook opens at most, and how long a request
# waits for one before it gets 503.
POOL_SIZE = 4
POOL_WAIT_S = 10.0
CONNECTION_NAME = "smsworker-webhook"


class WebhookServer(ThreadingHTTPServer):
    """An HTTP server for Twilio's webhook, writing to one database."""

    daemon_threads = True
    # Twilio may open many connections at once; the default backlog of 5
    # resets the others.
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], *, database_url: str, auth_token: str, public_url: str
    ) -> None:
        super().__init__(address, WebhookHandler)
        self.database_url = database_url
        self.validator = RequestValidator(auth_token)
        self.public_url = public_url
        self.path = urlsplit(public_url).path or "/"
        self._idle: list[db.Connection] = []
        self._idle_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(POOL_SIZE)

    def execute(self, query: str, params: dict[str, Any] | None = None) -> int:
        """Run one statement on a pooled connection and return its row count.

        At most POOL_SIZE connections exist, idle or in use; a request waits
        up to POOL_WAIT_S for one. A pooled connection that the server closed
        meanwhile (a restart, say) is replaced once before the error counts.
        Raises DatabaseUnavailable.
        """
        if not self._slots.acquire(timeout=POOL_WAIT_S):
            raise DatabaseUnavailable(
                f"all {POOL_SIZE} database connections stayed busy for {POOL_WAIT_S:.0f} s"
            )
        try:
            with self._idle_lock:
                conn = self._idle.pop() if self._idle else None
            for fresh in (conn is None, True):
                if conn is None or conn.closed:
                    conn = db.connect(
                        self.database_url, autocommit=True, application_name=CONNECTION_NAME
                    )
                try:
                    with db.database_errors():
                        rowcount = conn.execute(query.encode(), params).rowcount
                    break
                except DatabaseUnavailable:
                    conn.close()
                    if fresh:
                        raise
                except Exception:
                    conn.close()
                    raise
            assert conn is not None, "the loop ends with a working connection"
            with self._idle_lock:
                self._idle.append(conn)
            return rowcount
        finally:
            self._slots.release()

    def server_close(self) -> None:
        """Stop listening and close the idle database connections."""
        super().server_close()
        with self._idle_lock:
            for conn in self._idle:
                conn.close()
            self._idle.clear()


class WebhookHandler(BaseHTTPRequestHandler):
    """Serves POST on the public URL's path and GET on /healthz."""

    server: WebhookServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if urlsplit(self.path).path != HEALTH_PATH:
            self._reply(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
            return
        try:
            self.server.execute("SELECT 1")
        except SmsWorkerError as error:
            logger.warning("Health check failed: %s", error)
            self._reply(HTTPStatus.SERVICE_UNAVAILABLE, b"database unavailable\n", "text/plain")
            return
        self._reply(HTTPStatus.OK, b"ok\n", "text/plain")

    def do_POST(self) -> None:
        if urlsplit(self.path).path != self.server.path:
            self._reply(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
            return
        length = self._content_length()
        if length is None:
            self._reply(HTTPStatus.LENGTH_REQUIRED, b"Content-Length required\n", "text/plain")
            return
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"too large\n", "text/plain")
            return

        raw = self.rfile.read(length)
        try:
            fields = dict(
                parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
            )
        except UnicodeDecodeError:
            self._reply(HTTPStatus.BAD_REQUEST, b"invalid form body\n", "text/plain")
            return

        signature = self.headers.get("X-Twilio-Signature", "")
        if not signature or not self.server.validator.validate(
            self.server.public_url, fields, signature
        ):
            logger.warning(
                "Rejected a webhook request from %s: %s X-Twilio-Signature.",
                self.client_address[0],
                "invalid" if signature else "missing",
            )
            self._reply(HTTPStatus.FORBIDDEN, b"invalid signature\n", "text/plain")
            return

        if not fields.get("MessageSid"):
            self._reply(HTTPStatus.BAD_REQUEST, b"MessageSid missing\n", "text/plain")
            return
        try:
            inserted = self._store(fields)
        except SmsWorkerError as error:
            # NOTE: whether Twilio sends the request again depends on the
            # number's fallback URL and connection overrides. Without them, the
            # message stays only in Twilio's message log.
            logger.error("Could not store message %s: %s", fields["MessageSid"], error)
            self._reply(HTTPStatus.SERVICE_UNAVAILABLE, b"try again\n", "text/plain")
            return
        logger.info(
            "Webhook message %s from %s %s.",
            fields["MessageSid"],
            mask_phone_number(fields.get("From")),
            "stored" if inserted else "was stored before",
        )
        self._reply(HTTPStatus.OK, EMPTY_TWIML, "text/xml")

    def _content_length(self) -> int | None:
        try:
            return max(0, int(self.headers.get("Content-Length", "")))
        except ValueError:
            return None

    def _store(self, fields: dict[str, str]) -> bool:
        account = fields.get("AccountSid", "")
        sid = fields["MessageSid"]
        row: dict[str, Any] = {
            "id": sid,
            "account_id": account,
            "api_version": fields.get("ApiVersion", "2010-04-01"),
            "body": fields.get("Body", ""),
            # The webhook carries no timestamp: Twilio sent it just now.
            "date_created": datetime.now(UTC).replace(tzinfo=None, microsecond=0),
            "from": fields.get("From"),
            "to": fields.get("To"),
            "messaging_service_id": fields.get("MessagingServiceSid") or None,
            "num_media": _int_or_zero(fields.get("NumMedia")),
            "num_segments": _int_or_zero(fields.get("NumSegments")) or 1,
            "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json",
        }
        return self.server.execute(queries.INSERT_WEBHOOK_MESSAGE, row) == 1

    def _reply(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines carry no personal data, but they would repeat each webhook line.
        logger.debug("%s %s", self.client_address[0], format % args)


def _int_or_zero(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
