"""Delivery of one SMS: through Twilio's REST API, or to the console.

Twilio's errors leave here as TransientSendError (worth retrying) or
PermanentSendError (not). The sync module reads Twilio's message list with the
same HTTP client.
"""

import itertools
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol, TextIO

import requests
from tenacity import RetryCallState
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from smsworker.errors import PermanentSendError, TransientSendError
from smsworker.logs import mask_phone_number
from smsworker.settings import TwilioSettings

logger = logging.getLogger(__name__)

# How long one HTTP request to Twilio may take before it counts as failed.
REQUEST_TIMEOUT_S = 15.0
# Twilio's error code for "too many requests".
RATE_LIMIT_CODE = 20429


class Sender(Protocol):
    """Sends one SMS and returns the provider's id for it."""

    description: str

    def send(self, *, to: str, from_: str, body: str) -> str: ...


class HeaderKeepingHttpClient(TwilioHttpClient):
    """The library's HTTP client, keeping the last response's headers.

    TwilioRestException carries no headers, and Retry-After is in them.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.last_headers: dict[str, str] = {}

    def request(self, *args: object, **kwargs: object) -> Response:
        self.last_headers = {}
        response = super().request(*args, **kwargs)
        self.last_headers = dict(response.headers or {})
        return response


class TwilioSender:
    """Sends through Twilio's Messages API with the real twilio library.

    One instance per thread: the library's HTTP client is not shared safely.
    """

    def __init__(self, settings: TwilioSettings) -> None:
        self.http_client = HeaderKeepingHttpClient(timeout=REQUEST_TIMEOUT_S)
        self.client = Client(
            settings.account_sid, settings.auth_token, http_client=self.http_client
        )
        self.client.api.base_url = settings.api_base_url.rstrip("/")
        self.description = f"Twilio at {settings.api_base_url}"

    def send(self, *, to: str, from_: str, body: str) -> str:
        try:
            message = self.client.messages.create(to=to, from_=from_, body=body)
        except TwilioRestException as error:
            raise self._translate(error) from error
        except (requests.ConnectionError, requests.Timeout) as error:
            raise TransientSendError(f"Twilio is unreachable: {error}") from error
        except requests.RequestException as error:
            raise PermanentSendError(f"invalid request to Twilio: {error}") from error
        except TwilioException as error:
            raise PermanentSendError(f"Twilio request failed: {error}") from error
        sid: str = message.sid or ""
        return sid

    def _translate(self, error: TwilioRestException) -> Exception:
        description = f"Twilio returned HTTP {error.status}, error {error.code}: {error.msg}"
        # 401 means the credentials are wrong or revoked. Every reply fails
        # alike until an operator fixes them, so the replies wait for that.
        if error.status in (401, 429) or error.status >= 500:
            return TransientSendError(
                description,
                status=error.status,
                code=error.code,
                retry_after_s=self._retry_after_s(),
            )
        return PermanentSendError(description, status=error.status, code=error.code)

    def _retry_after_s(self) -> float | None:
        headers = {key.lower(): value for key, value in self.http_client.last_headers.items()}
        return parse_retry_after(headers.get("retry-after"))


def parse_retry_after(value: str | None) -> float | None:
    """Read a Retry-After header: seconds, or an HTTP date. None when absent or invalid."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def wait_for_retry_after(
    backoff: Callable[[RetryCallState], float], max_s: float
) -> Callable[[RetryCallState], float]:
    """Return a tenacity wait: the Retry-After delay the failure carries, else `backoff`.

    The failure's `retry_after_s` (TransientSendError, TransientSyncError)
    comes from Twilio's Retry-After header, and the delay is capped at `max_s`.
    """

    def wait(retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        retry_after_s = getattr(error, "retry_after_s", None)
        if retry_after_s is not None:
            return min(float(retry_after_s), max_s)
        return float(backoff(retry_state))

    return wait


class ConsoleSender:
    """Prints replies instead of sending them, for running without Twilio credentials."""

    description = "the console (no Twilio credentials set)"

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def send(self, *, to: str, from_: str, body: str) -> str:
        with self._lock:
            print(
                f"--- reply to {mask_phone_number(to)} ---\n{body}\n",
                file=self.stream,
                flush=True,
            )
            return f"console-{next(self._ids)}"
