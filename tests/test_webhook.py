"""`smsworker webhook`: Twilio's signed inbound-message webhook, over real HTTP."""

import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from twilio.request_validator import RequestValidator

from smsworker import webhook
from tests.cli_helpers import CliProcess, cli_env, free_port, run_cli
from tests.conftest import ALICE, BOT_NUMBER, new_message_id, wait_until
from tests.fake_twilio import FakeTwilio

TOKEN = "webhook-test-token"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def post(url: str, fields: dict[str, str], signature: str | None) -> tuple[int, str]:
    """POST a form the way Twilio does; return the status and the body."""
    data = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(url, data=data, method="POST")
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    if signature is not None:
        request.add_header("X-Twilio-Signature", signature)
    # The request bypasses any proxy, because it must reach 127.0.0.1.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def inbound_fields(body: str, message_id: str | None = None) -> dict[str, str]:
    return {
        "MessageSid": message_id or new_message_id(),
        "AccountSid": "AC" + "5" * 32,
        "From": ALICE,
        "To": BOT_NUMBER,
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "ApiVersion": "2010-04-01",
    }


def sign(url: str, fields: dict[str, str], token: str = TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(url, fields))


def stored(conn: psycopg.Connection[Any], message_id: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        'SELECT body, "from", "to", direction, date_created IS NOT NULL'
        " FROM twilio.message WHERE id = %s",
        [message_id],
    ).fetchall()


@pytest.fixture
def webhook_url(database_url: str, start_cli: Callable[..., CliProcess]) -> str:
    port = free_port()
    url = f"http://127.0.0.1:{port}/twilio/inbound"
    env = cli_env(database_url, TWILIO_AUTH_TOKEN=TOKEN)
    process = start_cli("webhook", "--public-url", url, "--port", str(port), env=env)
    process.wait_for_output("stderr", "smsworker webhook listening")
    return url


def test_signed_message_stored_once(conn: psycopg.Connection[Any], webhook_url: str) -> None:
    fields = inbound_fields("buy milk")

    first = post(webhook_url, fields, sign(webhook_url, fields))
    again = post(webhook_url, fields, sign(webhook_url, fields))

    assert first == (200, EMPTY_TWIML)
    assert again == (200, EMPTY_TWIML)
    assert stored(conn, fields["MessageSid"]) == [("buy milk", ALICE, BOT_NUMBER, "inbound", True)]


@pytest.mark.parametrize(
    "signature",
    [None, "", "bm90IGEgc2lnbmF0dXJl", "wrong-token"],
    ids=["missing", "empty", "garbage", "other-token"],
)
def test_bad_signature_rejected_403(
    conn: psycopg.Connection[Any], webhook_url: str, signature: str | None
) -> None:
    fields = inbound_fields("let me in")
    if signature == "wrong-token":
        signature = sign(webhook_url, fields, token="another-token")

    status, _ = post(webhook_url, fields, signature)

    assert status == 403
    assert stored(conn, fields["MessageSid"]) == []


def test_signature_over_other_fields_rejected(
    conn: psycopg.Connection[Any], webhook_url: str
) -> None:
    fields = inbound_fields("original")
    signature = sign(webhook_url, fields)

    status, _ = post(webhook_url, {**fields, "Body": "tampered"}, signature)

    assert status == 403
    assert stored(conn, fields["MessageSid"]) == []


def test_oversized_request_rejected_413(webhook_url: str) -> None:
    fields = inbound_fields("x" * 70_000)

    status, _ = post(webhook_url, fields, sign(webhook_url, fields))

    assert status == 413


def test_health_and_unknown_path(webhook_url: str) -> None:
    base = webhook_url.rsplit("/twilio", 1)[0]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    with opener.open(f"{base}/healthz", timeout=5) as response:
        assert response.status == 200
    with pytest.raises(urllib.error.HTTPError) as error:
        opener.open(f"{base}/elsewhere", timeout=5)
    error.value.close()
    assert error.value.code == 404


def test_webhook_message_gets_reply(
    conn: psycopg.Connection[Any],
    database_url: str,
    fake_twilio: FakeTwilio,
    webhook_url: str,
    start_run: Callable[..., CliProcess],
) -> None:
    start_run(cli_env(database_url, fake_twilio))
    fields = inbound_fields("call the plumber")

    assert post(webhook_url, fields, sign(webhook_url, fields))[0] == 200

    [sent] = fake_twilio.wait_for_messages(1)
    assert sent.body == "Added 1. call the plumber"
    assert sent.to == ALICE
    wait_until(
        lambda: conn.execute("SELECT count(*) FROM smsworker.handled_message").fetchone() == (1,),
        message="the message handled once",
    )


def test_webhook_invalid_public_url_exits_2(database_url: str, tmp_path: Any) -> None:
    env = cli_env(database_url, TWILIO_AUTH_TOKEN=TOKEN)
    result = run_cli("webhook", "--public-url", "sms.example.com/in", env=env, cwd=tmp_path)

    assert result.returncode == 2
    assert "--public-url" in result.stderr
    assert "Traceback" not in result.stderr


def webhook_connections(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
        [webhook.CONNECTION_NAME],
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_connections_bounded_in_a_burst(
    conn: psycopg.Connection[Any], database_url: str, webhook_url: str
) -> None:
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        with psycopg.connect(database_url, autocommit=True) as sampler:
            while not done.is_set():
                peak = max(peak, webhook_connections(sampler))
                done.wait(0.005)

    def deliver(number: int) -> int:
        fields = inbound_fields(f"item {number}")
        return post(webhook_url, fields, sign(webhook_url, fields))[0]

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(max_workers=40) as pool:
            statuses = list(pool.map(deliver, range(120)))
    finally:
        done.set()
        sampler.join()

    assert statuses == [200] * 120
    assert 1 <= peak <= webhook.POOL_SIZE
    assert conn.execute("SELECT count(*) FROM twilio.message").fetchone() == (120,)


def test_closed_pooled_connections_replaced(
    conn: psycopg.Connection[Any], webhook_url: str
) -> None:
    first = inbound_fields("before")
    assert post(webhook_url, first, sign(webhook_url, first))[0] == 200
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        [webhook.CONNECTION_NAME],
    )
    wait_until(lambda: webhook_connections(conn) == 0, message="the pooled connections closed")

    fields = inbound_fields("after")

    assert post(webhook_url, fields, sign(webhook_url, fields))[0] == 200
    assert stored(conn, fields["MessageSid"]) == [("after", ALICE, BOT_NUMBER, "inbound", True)]
