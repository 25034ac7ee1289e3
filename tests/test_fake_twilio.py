"""Tests for tests/fake_twilio.py, driven through the real twilio library over HTTP."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from tests.fake_twilio import FakeTwilio, SentMessage

SENDER = "+12135550100"
RECIPIENT = "+12135550101"
OTHER_RECIPIENT = "+12135550102"
# An emoji outside the Basic Multilingual Plane: two UTF-16 code units.
GRINNING_FACE = "\N{GRINNING FACE}"


def make_client(
    fake: FakeTwilio, auth_token: str | None = None, account_sid: str | None = None
) -> Client:
    """Build a real twilio Client whose API calls all go to `fake`.

    environment={} keeps TWILIO_EDGE/TWILIO_REGION from rewriting the host, and
    trust_env=False keeps proxy variables from diverting 127.0.0.1 traffic.
    """
    http_client = TwilioHttpClient()
    assert http_client.session is not None
    http_client.session.trust_env = False
    client = Client(
        fake.account_sid,
        auth_token or fake.auth_token,
        account_sid=account_sid,
        http_client=http_client,
        environment={},
    )
    client.api.base_url = fake.url
    return client


def close_client(client: Client) -> None:
    """Close the client's pooled connections.

    A socket left for garbage collection emits ResourceWarning, which the
    filterwarnings=error setting for pytest turns into a test failure.
    """
    http_client = client.http_client
    assert isinstance(http_client, TwilioHttpClient)
    assert http_client.session is not None
    http_client.session.close()


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio() as server:
        yield server


@pytest.fixture
def client(fake: FakeTwilio) -> Iterator[Client]:
    client = make_client(fake)
    yield client
    close_client(client)


def send(client: Client, body: str = "buy milk", to: str = RECIPIENT) -> str:
    """Send one message through the real library and return its sid."""
    sid: str | None = client.messages.create(to=to, from_=SENDER, body=body).sid
    assert sid is not None
    return sid


def rest_error(client: Client, **kwargs: str) -> TwilioRestException:
    """Return the TwilioRestException that a create with these arguments raises."""
    kwargs = {"to": RECIPIENT, "from_": SENDER, "body": "hello"} | kwargs
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(**kwargs)
    return caught.value


def last_headers(client: Client) -> dict[str, str]:
    """Return the headers of the last response the client received."""
    response = client.http_client._test_only_last_response
    assert response is not None
    return dict(response.headers)


def test_fake_twilio_create_returns_message_instance(fake: FakeTwilio, client: Client) -> None:
    message = client.messages.create(to=RECIPIENT, from_=SENDER, body="buy milk")

    assert message.sid is not None
    assert re.fullmatch(r"SM[0-9a-f]{32}", message.sid)
    assert fake.messages == [
        SentMessage(message.sid, fake.account_sid, RECIPIENT, SENDER, "buy milk")
    ]
    assert message.account_sid == fake.account_sid
    assert (message.to, message.from_, message.body) == (RECIPIENT, SENDER, "buy milk")
    assert (message.status, message.direction) == ("queued", "outbound-api")
    assert (message.num_segments, message.num_media) == ("1", "0")
    assert message.price is None
    assert message.error_code is None
    assert message.date_created is not None and message.date_created.tzinfo is not None
    assert message.uri == (f"/2010-04-01/Accounts/{fake.account_sid}/Messages/{message.sid}.json")
    assert fake.requests_count == 1


def test_fake_twilio_messaging_service_without_from(fake: FakeTwilio, client: Client) -> None:
    service_sid = "MG" + "0" * 32
    message = client.messages.create(to=RECIPIENT, messaging_service_sid=service_sid, body="hi")

    assert message.messaging_service_sid == service_sid
    assert message.from_ is None
    assert message.status == "accepted"
    assert fake.messages[0].from_ == ""


def test_fake_twilio_counts_segments(client: Client) -> None:
    ascii_text = client.messages.create(to=RECIPIENT, from_=SENDER, body="a" * 161)
    emoji = client.messages.create(to=RECIPIENT, from_=SENDER, body=GRINNING_FACE * 36)
    assert ascii_text.num_segments == "2"
    # 72 UTF-16 code units exceed the 70 that fit in one UCS-2 segment.
    assert emoji.num_segments == "2"


def test_fake_twilio_wrong_token_is_401(fake: FakeTwilio) -> None:
    client = make_client(fake, auth_token="wrong-token")
    try:
        error = rest_error(client)
    finally:
        close_client(client)

    assert (error.status, error.code) == (401, 20003)
    assert fake.messages == []


def test_fake_twilio_other_account_in_path_is_404(fake: FakeTwilio) -> None:
    other_account = "AC" + "1" * 32
    client = make_client(fake, account_sid=other_account)
    try:
        error = rest_error(client)
    finally:
        close_client(client)

    assert (error.status, error.code) == (404, 20404)
    assert other_account in error.msg


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"to": ""}, 21604),
        ({"from_": ""}, 21603),
        ({"body": ""}, 21602),
        ({"to": "2135550101"}, 21211),
        ({"to": "+02135550101"}, 21211),
    ],
)
def test_fake_twilio_rejects_invalid_requests(
    fake: FakeTwilio, client: Client, kwargs: dict[str, str], code: int
) -> None:
    error = rest_error(client, **kwargs)

    assert (error.status, error.code) == (400, code)
    assert fake.messages == []
    assert fake.requests_count == 1


def test_fake_twilio_invalid_to_message(client: Client) -> None:
    error = rest_error(client, to="not-a-number")

    assert "The 'To' number not-a-number is not a valid phone number." in error.msg


def test_fake_twilio_body_limit_is_1600_characters(fake: FakeTwilio, client: Client) -> None:
    send(client, body="x" * 1600)
    error = rest_error(client, body="x" * 1601)

    assert (error.status, error.code) == (400, 21617)
    assert "1600 character limit" in error.msg
    assert len(fake.messages) == 1


def test_fake_twilio_body_limit_counts_utf16_units(fake: FakeTwilio, client: Client) -> None:
    send(client, body=GRINNING_FACE * 800)
    error = rest_error(client, body=GRINNING_FACE * 801)

    assert error.code == 21617
    assert [m.body for m in fake.messages] == [GRINNING_FACE * 800]


def test_fake_twilio_opted_out_recipient_is_21610(fake: FakeTwilio, client: Client) -> None:
    fake.opted_out.add(RECIPIENT)

    error = rest_error(client)
    send(client, to=OTHER_RECIPIENT)

    assert (error.status, error.code) == (400, 21610)
    assert "unsubscribed recipient" in error.msg
    assert [m.to for m in fake.messages] == [OTHER_RECIPIENT]


def test_fake_twilio_fail_next_queues_in_order(fake: FakeTwilio, client: Client) -> None:
    fake.fail_next(2, 503, retry_after=1.5)
    fake.fail_next(1, 429, 20429, retry_after=2.0, message="Too many requests")

    first, second = rest_error(client), rest_error(client)
    assert (first.status, first.code) == (503, 20503)
    assert (second.status, second.code) == (503, 20503)
    assert last_headers(client)["Retry-After"] == "1.5"

    third = rest_error(client)
    assert (third.status, third.code) == (429, 20429)
    assert "Too many requests" in third.msg
    assert last_headers(client)["Retry-After"] == "2"

    sid = send(client)
    assert "Retry-After" not in last_headers(client)
    assert [m.sid for m in fake.messages] == [sid]
    assert fake.requests_count == 4


def test_fake_twilio_clear_forgets_messages_and_failures(fake: FakeTwilio, client: Client) -> None:
    send(client)
    fake.fail_next(3)

    fake.clear()
    send(client)

    assert len(fake.messages) == 1
    assert fake.requests_count == 2


def test_fake_twilio_set_delay_slows_each_answer(fake: FakeTwilio, client: Client) -> None:
    fake.set_delay(0.2)

    started = time.monotonic()
    send(client)

    assert time.monotonic() - started >= 0.2


def test_fake_twilio_wait_for_messages_returns(fake: FakeTwilio, client: Client) -> None:
    sender = threading.Thread(target=send, args=(client,))
    sender.start()
    try:
        arrived = fake.wait_for_messages(1, timeout=10)
    finally:
        sender.join()

    assert [m.body for m in arrived] == ["buy milk"]


def test_fake_twilio_wait_for_messages_times_out(fake: FakeTwilio, client: Client) -> None:
    send(client)

    with pytest.raises(AssertionError, match="waiting for 2 messages, 1 arrived"):
        fake.wait_for_messages(2, timeout=0.05)


def test_fake_twilio_handles_concurrent_clients(fake: FakeTwilio) -> None:
    def send_batch(batch: int) -> list[str]:
        client = make_client(fake)
        try:
            return [send(client, body=f"{batch}-{i}") for i in range(10)]
        finally:
            close_client(client)

    with ThreadPoolExecutor(max_workers=4) as pool:
        sids = [sid for batch in pool.map(send_batch, range(4)) for sid in batch]

    arrived = fake.wait_for_messages(40)
    assert sorted(m.sid for m in arrived) == sorted(sids)
    assert len(set(sids)) == 40
    assert fake.requests_count == 40


def test_fake_twilio_unknown_path_is_404(fake: FakeTwilio, client: Client) -> None:
    url = f"{fake.url}/2010-04-01/Accounts/{fake.account_sid}/Calls.json"

    response = client.request("POST", url, data={"To": RECIPIENT})

    assert response.status_code == 404
    assert '"code": 20404' in response.text
    assert fake.requests_count == 0


def test_fake_twilio_get_is_405(fake: FakeTwilio, client: Client) -> None:
    url = f"{fake.url}/2010-04-01/Accounts/{fake.account_sid}/Messages.json"

    response = client.request("GET", url)

    assert response.status_code == 405
    assert '"code": 20004' in response.text
    assert response.headers["Allow"] == "POST"
    assert fake.requests_count == 0


def test_fake_twilio_stop_closes_connections() -> None:
    fake = FakeTwilio().start()
    client = make_client(fake)
    try:
        send(client)
    finally:
        fake.stop()  # The client still keeps a keep-alive connection open.
    try:
        with pytest.raises(requests.ConnectionError):
            send(client)
    finally:
        close_client(client)
