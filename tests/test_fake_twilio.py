"""Tests for tests/fake_twilio.py, driven through the real twilio library over HTTP."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from twilio.rest.api.v2010.account.message import MessageInstance, MessagePage

from tests.fake_twilio import FakeTwilio, SentMessage

SENDER = "+12135550100"
RECIPIENT = "+12135550101"
OTHER_RECIPIENT = "+12135550102"
# An emoji outside the Basic Multilingual Plane: two UTF-16 code units.
GRINNING_FACE = "\N{GRINNING FACE}"
# When the listed test messages were sent: one a minute, from noon on.
NOON = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


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


def test_fake_twilio_put_is_405(fake: FakeTwilio, client: Client) -> None:
    url = f"{fake.url}/2010-04-01/Accounts/{fake.account_sid}/Messages.json"

    response = client.request("PUT", url)

    assert response.status_code == 405
    assert '"code": 20004' in response.text
    assert response.headers["Allow"] == "GET, POST"
    assert fake.requests_count == 0
    assert fake.list_requests == []


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


def add_minutely(fake: FakeTwilio, count: int) -> list[str]:
    """Log `count` inbound messages sent a minute apart from NOON; return their sids."""
    return [
        fake.add_inbound(RECIPIENT, SENDER, f"in {i}", date_sent=NOON + timedelta(minutes=i))["sid"]
        for i in range(count)
    ]


def sids(page: MessagePage) -> list[str]:
    """Return the sids of the messages on a page, in order."""
    return [message.sid for message in page if message.sid is not None]


def list_failure(call: Callable[[], object]) -> Response:
    """Return the HTTP response behind the error that a list call raises.

    For a page that is not 200, twilio 9.13 raises a bare TwilioException
    ("Unable to fetch page", response), not a TwilioRestException.
    """
    with pytest.raises(TwilioException) as caught:
        call()
    assert not isinstance(caught.value, TwilioRestException)
    message, response = caught.value.args
    assert message == "Unable to fetch page"
    assert isinstance(response, Response)
    return response


def error_body(response: Response) -> dict[str, Any]:
    """Decode Twilio's JSON error body."""
    body: dict[str, Any] = json.loads(response.text)
    return body


def test_fake_twilio_list_newest_first_with_all_fields(fake: FakeTwilio, client: Client) -> None:
    older = fake.add_inbound(
        SENDER, RECIPIENT, "older", date_sent=NOON + timedelta(microseconds=700_000)
    )
    tie_low = fake.add_inbound(
        SENDER, RECIPIENT, "tie a", date_sent=NOON + timedelta(hours=1), sid="SM" + "a" * 32
    )
    tie_high = fake.add_inbound(
        SENDER, RECIPIENT, "tie b", date_sent=NOON + timedelta(hours=1), sid="SM" + "b" * 32
    )
    unsent = fake.add_inbound(SENDER, RECIPIENT, GRINNING_FACE * 71, num_media=2)
    fake.update_message(unsent["sid"], date_sent=None)

    messages = client.messages.list()

    expected = [unsent["sid"], tie_high["sid"], tie_low["sid"], older["sid"]]
    assert [m.sid for m in messages] == expected
    assert [m["sid"] for m in fake.logged_messages()] == expected
    assert fake.logged_messages()[-1] == older
    oldest = messages[-1]
    assert isinstance(oldest, MessageInstance)
    assert oldest.date_sent == NOON
    assert oldest.date_created == NOON
    assert oldest.date_updated == NOON
    assert older["date_sent"] == format_datetime(NOON)
    assert (oldest.from_, oldest.to, oldest.body) == (SENDER, RECIPIENT, "older")
    assert (oldest.direction, oldest.status) == ("inbound", "received")
    assert oldest.account_sid == fake.account_sid
    assert oldest.messaging_service_sid is None
    assert (oldest.num_media, oldest.num_segments) == ("0", "1")
    assert (oldest.price, oldest.price_unit) == (None, "USD")
    assert (oldest.error_code, oldest.error_message) == (None, None)
    uri = f"/2010-04-01/Accounts/{fake.account_sid}/Messages/{older['sid']}"
    assert oldest.uri == f"{uri}.json"
    assert oldest.subresource_uris == {"media": f"{uri}/Media.json"}
    assert messages[0].date_sent is None
    assert (messages[0].num_media, messages[0].num_segments) == ("2", "3")


def test_fake_twilio_list_pages_each_message_once(fake: FakeTwilio, client: Client) -> None:
    added = add_minutely(fake, 5)

    pages = [client.messages.page(page_size=2)]
    # Bounded, so a fake that never ends the listing fails instead of looping.
    while (url := pages[-1].next_page_url) is not None and len(pages) < 10:
        pages.append(client.messages.get_page(url))

    listed = [sids(page) for page in pages]
    assert [len(chunk) for chunk in listed] == [2, 2, 1]
    assert [sid for chunk in listed for sid in chunk] == added[::-1]
    assert [query.get("Page") for query in fake.list_requests] == [None, "1", "2"]
    assert all(query["PageSize"] == "2" for query in fake.list_requests)


def test_fake_twilio_list_page_numbers_and_uris(fake: FakeTwilio, client: Client) -> None:
    add_minutely(fake, 4)

    first = client.messages.page(page_size=2, to=SENDER)
    second = client.messages.get_page(first.next_page_url)

    path = f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json"
    assert first._payload["first_page_uri"] == f"{path}?To=%2B12135550100&Page=0&PageSize=2"
    assert first.next_page_url is not None
    assert first.next_page_url.startswith(
        f"{fake.url}{path}?To=%2B12135550100&PageSize=2&Page=1&PageToken=PA"
    )
    assert (first._payload["page"], first._payload["start"], first._payload["end"]) == (0, 0, 1)
    assert (second._payload["page"], second._payload["start"], second._payload["end"]) == (1, 2, 3)
    assert second._payload["uri"] == first.next_page_url.removeprefix(fake.url)
    assert len(sids(second)) == 2
    assert second.next_page_url is None


def test_fake_twilio_list_head_insert_keeps_pages(fake: FakeTwilio, client: Client) -> None:
    added = add_minutely(fake, 5)[::-1]

    first = client.messages.page(page_size=2)
    newest = fake.add_inbound(RECIPIENT, SENDER, "late", date_sent=NOON + timedelta(hours=1))
    second = client.messages.get_page(first.next_page_url)
    third = client.messages.get_page(second.next_page_url)

    assert sids(first) == added[:2]
    assert sids(second) == added[2:4]
    assert sids(third) == added[4:]
    assert third.next_page_url is None
    assert sids(client.messages.page(page_size=2))[0] == newest["sid"]


def test_fake_twilio_list_survives_deleted_messages(fake: FakeTwilio, client: Client) -> None:
    added = add_minutely(fake, 6)[::-1]

    first = client.messages.page(page_size=2)
    fake.delete_message(added[1])  # The last message on the first page.
    fake.delete_message(added[3])
    second = client.messages.get_page(first.next_page_url)
    third = client.messages.get_page(second.next_page_url)

    assert sids(first) == added[:2]
    assert sids(second) == [added[2], added[4]]
    assert sids(third) == [added[5]]
    assert [m.sid for m in client.messages.list()] == [added[0], added[2], added[4], added[5]]
    assert added[1] not in [m["sid"] for m in fake.logged_messages()]


def test_fake_twilio_list_date_filters_whole_days(fake: FakeTwilio, client: Client) -> None:
    day = datetime(2026, 12, 4, tzinfo=UTC)
    before = fake.add_inbound(SENDER, RECIPIENT, "eve", date_sent=day - timedelta(minutes=1))
    midnight = fake.add_inbound(SENDER, RECIPIENT, "midnight", date_sent=day)
    afternoon = fake.add_inbound(SENDER, RECIPIENT, "3 pm", date_sent=day + timedelta(hours=15))
    unsent = fake.add_inbound(SENDER, RECIPIENT, "unsent", date_sent=day)
    fake.update_message(unsent["sid"], date_sent=None)

    after = client.messages.list(date_sent_after=day + timedelta(hours=15))
    until = client.messages.list(date_sent_before=day - timedelta(seconds=1))
    on_day = client.messages.list(date_sent=day + timedelta(hours=23))

    assert [m.sid for m in after] == [afternoon["sid"], midnight["sid"]]
    assert [m.sid for m in until] == [before["sid"]]
    assert [m.sid for m in on_day] == [afternoon["sid"], midnight["sid"]]
    assert fake.list_requests[0] == {"DateSent>": "2026-12-04T15:00:00Z"}
    assert len(client.messages.list()) == 4


def test_fake_twilio_list_filters_by_to_and_from(fake: FakeTwilio, client: Client) -> None:
    incoming = fake.add_inbound(RECIPIENT, SENDER, "from a customer")
    fake.add_inbound(OTHER_RECIPIENT, SENDER, "from another customer")
    reply = send(client, to=RECIPIENT)

    from_customer = client.messages.list(from_=RECIPIENT)
    to_customer = client.messages.list(to=RECIPIENT, from_=SENDER)

    assert [m.sid for m in from_customer] == [incoming["sid"]]
    assert [m.sid for m in to_customer] == [reply]


def test_fake_twilio_list_shows_updates(fake: FakeTwilio, client: Client) -> None:
    sid = send(client)
    created = fake.logged_messages()[0]

    updated = fake.update_message(sid, status="undelivered", error_code=30003, price="-0.00750")
    [message] = client.messages.list()

    assert (message.status, message.error_code, message.price) == ("undelivered", 30003, "-0.00750")
    assert updated["status"] == "undelivered"
    assert message.date_updated is not None
    assert message.date_sent is not None
    assert message.date_updated >= message.date_sent
    assert updated["date_sent"] == created["date_sent"]
    assert updated == fake.logged_messages()[0]
    with pytest.raises(KeyError):
        fake.update_message("SM" + "f" * 32, status="delivered")
    with pytest.raises(KeyError):
        fake.update_message(sid, colour="blue")


def test_fake_twilio_update_message_sets_dates(fake: FakeTwilio) -> None:
    sid = fake.add_inbound(SENDER, RECIPIENT, "hi", date_sent=NOON)["sid"]
    later = NOON + timedelta(days=1, microseconds=5)

    updated = fake.update_message(sid, date_sent=later, date_updated=later)

    assert (
        updated["date_sent"]
        == updated["date_updated"]
        == format_datetime(later.replace(microsecond=0))
    )
    assert updated["date_created"] == format_datetime(NOON)
    with pytest.raises(ValueError, match="timezone-aware"):
        fake.add_inbound(SENDER, RECIPIENT, "naive", date_sent=datetime(2026, 12, 4))


def test_fake_twilio_list_shows_sent_messages(fake: FakeTwilio, client: Client) -> None:
    created = client.messages.create(to=RECIPIENT, from_=SENDER, body="buy milk")

    [listed] = client.messages.list()

    assert listed.sid == created.sid
    assert (created.status, created.date_sent) == ("queued", None)
    assert (listed.direction, listed.status) == ("outbound-api", "sent")
    assert (listed.to, listed.from_, listed.body) == (RECIPIENT, SENDER, "buy milk")
    assert listed.date_sent is not None
    assert listed.date_sent == listed.date_created
    assert listed.date_created == created.date_created


def test_fake_twilio_list_post_failures_separate(fake: FakeTwilio, client: Client) -> None:
    fake.fail_next_lists(1, 429, retry_after=3)
    fake.fail_next(1, 503)

    throttled = list_failure(client.messages.page)
    unavailable = rest_error(client)
    sid = send(client)
    [listed] = client.messages.list()

    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "3"
    assert error_body(throttled)["code"] == 20429
    assert (unavailable.status, unavailable.code) == (503, 20503)
    assert listed.sid == sid
    assert len(fake.list_requests) == 2
    assert fake.requests_count == 2


def test_fake_twilio_fail_next_lists_skips_posts(fake: FakeTwilio, client: Client) -> None:
    fake.fail_next_lists(2, 500, code=20500, message="Internal error")

    send(client)
    first = list_failure(client.messages.page)
    second = list_failure(client.messages.page)

    assert [first.status_code, second.status_code] == [500, 500]
    assert error_body(second)["message"] == "Internal error"
    assert "Retry-After" not in second.headers
    assert len(client.messages.list()) == 1


def test_fake_twilio_clear_forgets_log_and_list_failures(fake: FakeTwilio, client: Client) -> None:
    send(client)
    fake.add_inbound(RECIPIENT, SENDER, "hello")
    fake.fail_next_lists(1)

    fake.clear()

    assert client.messages.list() == []
    assert fake.logged_messages() == []
    assert len(fake.list_requests) == 1


def test_fake_twilio_list_wrong_token_is_401(fake: FakeTwilio) -> None:
    fake.add_inbound(RECIPIENT, SENDER, "hello")
    client = make_client(fake, auth_token="wrong-token")
    try:
        response = list_failure(client.messages.page)
    finally:
        close_client(client)

    assert response.status_code == 401
    assert error_body(response)["code"] == 20003
    assert response.headers["WWW-Authenticate"] == 'Basic realm="Twilio API"'
    assert len(fake.list_requests) == 1


def test_fake_twilio_list_other_account_is_404(fake: FakeTwilio) -> None:
    client = make_client(fake, account_sid="AC" + "1" * 32)
    try:
        response = list_failure(client.messages.page)
    finally:
        close_client(client)

    assert response.status_code == 404
    assert error_body(response)["code"] == 20404


@pytest.mark.parametrize("page_size", [0, 1001, "ten"])
def test_fake_twilio_list_invalid_page_size_is_400(
    fake: FakeTwilio, client: Client, page_size: int | str
) -> None:
    response = list_failure(lambda: client.messages.page(page_size=page_size))

    assert response.status_code == 400
    assert error_body(response)["code"] == 20001
    assert error_body(response)["message"] == "Invalid PageSize"


def test_fake_twilio_list_page_size_bounds(fake: FakeTwilio, client: Client) -> None:
    add_minutely(fake, 51)

    assert len(sids(client.messages.page(page_size=1))) == 1
    assert len(sids(client.messages.page(page_size=1000))) == 51
    default = client.messages.get_page(
        f"{fake.url}/2010-04-01/Accounts/{fake.account_sid}/Messages.json"
    )
    assert len(sids(default)) == 50
    assert default.next_page_url is not None
    assert [query.get("PageSize") for query in fake.list_requests] == ["1", "1000", None]


@pytest.mark.parametrize("token", ["PAnot-base64!", "XX" + "A" * 8, "PA" + "W10="])
def test_fake_twilio_list_invalid_page_token_is_400(
    fake: FakeTwilio, client: Client, token: str
) -> None:
    response = list_failure(lambda: client.messages.page(page_token=token))

    assert response.status_code == 400
    assert error_body(response)["message"] == "Invalid PageToken"


def test_fake_twilio_list_requests_records_queries(fake: FakeTwilio, client: Client) -> None:
    client.messages.page(to=RECIPIENT, from_=SENDER, page_size=3)

    assert fake.wait_for_list_requests(1) == [{"To": RECIPIENT, "From": SENDER, "PageSize": "3"}]
    with pytest.raises(AssertionError, match="waiting for 2 list requests, 1 arrived"):
        fake.wait_for_list_requests(2, timeout=0.05)


def test_fake_twilio_get_other_path_is_404(fake: FakeTwilio, client: Client) -> None:
    url = f"{fake.url}/2010-04-01/Accounts/{fake.account_sid}/Messages/SM{'0' * 32}.json"

    response = client.request("GET", url)

    assert response.status_code == 404
    assert '"code": 20404' in response.text
    assert fake.list_requests == []


def test_fake_twilio_set_delay_slows_lists(fake: FakeTwilio, client: Client) -> None:
    fake.set_delay(0.2)

    started = time.monotonic()
    client.messages.page()

    assert time.monotonic() - started >= 0.2


def test_fake_twilio_hold_list_requests_until_release(fake: FakeTwilio, client: Client) -> None:
    added = add_minutely(fake, 3)[::-1]
    fake.hold_list_requests(after=1)
    first_page_done = threading.Event()
    pages: list[MessagePage] = []

    def read_all() -> None:
        pages.append(client.messages.page(page_size=2))
        first_page_done.set()
        pages.append(client.messages.get_page(pages[0].next_page_url))

    reader = threading.Thread(target=read_all)
    reader.start()
    try:
        assert first_page_done.wait(10)
        arrived = fake.wait_for_list_requests(2)
        # The second request has arrived but stays unanswered until the release.
        assert len(pages) == 1
        assert arrived[1]["Page"] == "1"
    finally:
        fake.release_list_requests()
        reader.join(10)

    assert not reader.is_alive()
    assert [sids(page) for page in pages] == [added[:2], added[2:]]
    assert len(client.messages.list()) == 3  # No longer holding.


def test_fake_twilio_stop_closes_held_list_requests() -> None:
    fake = FakeTwilio().start()
    client = make_client(fake)
    fake.hold_list_requests()
    errors: list[Exception] = []

    def read() -> None:
        try:
            client.messages.page()
        except Exception as error:
            errors.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        fake.wait_for_list_requests(1)
        assert reader.is_alive()
    finally:
        fake.stop()
        reader.join(10)
        close_client(client)

    assert not reader.is_alive()
    assert [type(error) for error in errors] == [requests.ConnectionError]
