"""Tests of phone number masking in text and in log records."""

import io
import logging
import sys
from collections.abc import Iterator

import pytest

from smsworker.logs import (
    PhoneNumberMaskingFilter,
    configure_logging,
    mask_phone_number,
    mask_phone_numbers,
)

# Fictional numbers in the 555-01xx range, reserved for examples.
ALICE = "+12135550101"
BOB = "+12135550102"
MESSAGE_ID = "SM0123456789abcdef0123456789abcdef"
ACCOUNT_SID = "AC" + "5" * 32


# Masking one number.


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        (ALICE, "+*******0101"),
        ("12135550101", "*******0101"),
        ("(213) 555-0101", "(***) ***-0101"),
        ("+1 213 555 0101", "+* *** *** 0101"),
        ("0101", "0101"),
        (None, "<none>"),
        ("", "<none>"),
    ],
    ids=["e164", "bare", "parentheses", "spaced", "four-digits", "none", "empty"],
)
def test_mask_phone_number_keeps_last_four(number: str | None, masked: str) -> None:
    assert mask_phone_number(number) == masked


# Masking numbers in free text.


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"reply to {ALICE} queued", "reply to +*******0101 queued"),
        (f"reply to {ALICE}.", "reply to +*******0101."),
        (f"to={ALICE}, from={BOB}", "to=+*******0101, from=+*******0102"),
        ("from whatsapp:+12135550101", "from whatsapp:+*******0101"),
        ("call 12345678 now", "call ****5678 now"),
        ("call 123456789012345 now", "call ***********2345 now"),
        ("call (213) 555-0101 now", "call (***) ***-0101 now"),
        ("call (213)555-0101 now", "call (***)***-0101 now"),
        ("call 213.555.0101 now", "call ***.***.0101 now"),
        ("call 213-555-0101 now", "call ***-***-0101 now"),
        ("call 213 555 0101 now", "call *** *** 0101 now"),
        ("call +1 213 555 0101 now", "call +* *** *** 0101 now"),
        ("call 1-213-555-0101 now", "call *-***-***-0101 now"),
        ("call +1 (213) 555-0101 now", "call +* (***) ***-0101 now"),
    ],
    ids=[
        "e164",
        "e164-before-period",
        "two-numbers",
        "channel-prefix",
        "bare-8-digits",
        "bare-15-digits",
        "parentheses",
        "parentheses-no-space",
        "dots",
        "dashes",
        "spaces",
        "country-code-spaces",
        "country-code-dashes",
        "country-code-parentheses",
    ],
)
def test_mask_phone_numbers_in_text(text: str, masked: str) -> None:
    assert mask_phone_numbers(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        f"Handled message {MESSAGE_ID}",
        "Handled message SM12345678901234567890123456789012",
        f"account {ACCOUNT_SID}",
        f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{MESSAGE_ID}.json",
        "cursor at (2026-12-04 20:00:17, -)",
        "2026-12-04 20:00:17,123 INFO smsworker.worker: started",
        "2026-12-04T20:00:17Z",
        "del 3",
        "replies=2 in 12.5 ms",
        "1234567",
    ],
    ids=[
        "message-id",
        "message-id-all-digits",
        "account-sid",
        "resource-uri",
        "date-time",
        "log-timestamp",
        "iso-timestamp",
        "short-number",
        "metrics",
        "seven-digits",
    ],
)
def test_mask_phone_numbers_leaves_non_numbers(text: str) -> None:
    assert mask_phone_numbers(text) == text


def test_mask_phone_numbers_mixed_log_line() -> None:
    text = f"2026-12-04 20:00:17 Handled message {MESSAGE_ID} from {ALICE}: command=add"

    masked = mask_phone_numbers(text)

    expected = f"2026-12-04 20:00:17 Handled message {MESSAGE_ID} from +*******0101: command=add"
    assert masked == expected


# The logging filter on a real logger.


@pytest.fixture
def log_output() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose records go through the filter to a string buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(PhoneNumberMaskingFilter())
    logger = logging.getLogger("smsworker.test_logs")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def test_filter_masks_number_in_message(log_output: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log_output

    logger.info(f"reply to {ALICE} queued")

    assert stream.getvalue() == "INFO reply to +*******0101 queued\n"


def test_filter_masks_number_in_args(log_output: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log_output

    logger.info("Handled message %s from %s: replies=%d", MESSAGE_ID, ALICE, 2)

    output = stream.getvalue()
    assert ALICE not in output
    assert output == f"INFO Handled message {MESSAGE_ID} from +*******0101: replies=2\n"


def test_filter_masks_number_in_mapping_args(
    log_output: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = log_output

    logger.warning("reply to %(to)s failed", {"to": BOB})

    assert stream.getvalue() == "WARNING reply to +*******0102 failed\n"


def test_filter_masks_number_in_error_arg(
    log_output: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = log_output
    error = RuntimeError(f"The 'To' number {ALICE} is not a valid phone number.")

    logger.warning("Sending failed: %r", error)

    output = stream.getvalue()
    assert ALICE not in output
    assert "+*******0101" in output


def test_filter_keeps_percent_after_masking(
    log_output: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = log_output

    logger.info("%s sent 100%% of parts", ALICE)

    assert stream.getvalue() == "INFO +*******0101 sent 100% of parts\n"


def test_filter_passes_record_without_number(
    log_output: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = log_output

    logger.info("Handled message %s: replies=%d", MESSAGE_ID, 1)

    assert stream.getvalue() == f"INFO Handled message {MESSAGE_ID}: replies=1\n"


def test_filter_on_logger_masks_args() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("smsworker.test_logs.logger_filter")
    handler = logging.StreamHandler(stream)
    masking = PhoneNumberMaskingFilter()
    logger.addFilter(masking)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("reply to %s failed", ALICE)
    finally:
        logger.removeHandler(handler)
        logger.removeFilter(masking)
        logger.propagate = True

    assert stream.getvalue() == "reply to +*******0101 failed\n"


def test_filter_masks_number_in_traceback(
    log_output: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = log_output

    try:
        raise ValueError(f"The 'To' number {ALICE} is not a valid phone number.")
    except ValueError:
        logger.exception("Sending failed")

    output = stream.getvalue()
    assert "Traceback" in output
    assert ALICE not in output


# The CLI's logging set-up.


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put back the root logger and the levels that configure_logging changes."""
    root = logging.getLogger()
    handlers = root.handlers[:]
    level = root.level
    quiet_levels = {name: logging.getLogger(name).level for name in ("twilio", "pgserver")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, quiet_level in quiet_levels.items():
        logging.getLogger(name).setLevel(quiet_level)


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_masks_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)

    configure_logging("INFO")
    logging.getLogger("smsworker.worker").info("Handled message from %s.", ALICE)

    output = stream.getvalue()
    assert ALICE not in output
    assert "Handled message from +*******0101." in output


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_quiets_twilio(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)

    configure_logging("DEBUG")
    logging.getLogger("twilio.http_client").info("POST /Messages.json To=%s", ALICE)

    assert stream.getvalue() == ""
