"""Logging set-up for the CLI, with phone numbers masked in every record."""

import json
import logging
import re
import sys
from datetime import UTC, datetime

# E.164 numbers, bare runs of 8 to 15 digits and North American numbers written
# with separators. Digits inside ids (SM0123...) and dates do not match. The
# last four digits stay visible so operators can tell senders apart.
_PHONE_NUMBER = re.compile(
    r"(?<![\w+])(?:\+?\d{8,15}|(?:\+?1[ .-]?)?\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4})(?!\w)"
)


def mask_phone_number(number: str | None) -> str:
    """Return the number with every digit but the last four replaced by '*'."""
    if not number:
        return "<none>"
    digits_seen = 0
    masked = []
    for char in reversed(number):
        if char.isdigit():
            digits_seen += 1
            masked.append(char if digits_seen <= 4 else "*")
        else:
            masked.append(char)
    return "".join(reversed(masked))


def mask_phone_numbers(text: str) -> str:
    """Mask every phone number found in free text."""
    return _PHONE_NUMBER.sub(lambda match: mask_phone_number(match.group()), text)


_FORMATTER = logging.Formatter()


class PhoneNumberMaskingFilter(logging.Filter):
    """Mask phone numbers in the message and traceback of every record it filters."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_phone_numbers(message)
        if masked != message:
            record.msg = masked
            record.args = None
        if record.exc_info and not record.exc_text:
            # The formatter reuses exc_text, so the traceback is masked too.
            record.exc_text = mask_phone_numbers(_FORMATTER.formatException(record.exc_info))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, for log shippers: time, level, logger and message.

    A traceback, when there is one, goes in a `traceback` field of the same line.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["traceback"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Send smsworker's log records to stderr, one line each, numbers masked.

    `log_format` is "text" or "json" (one JSON object per line).
    """
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(PhoneNumberMaskingFilter())

    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Python's warnings become log records, in the same format.
    logging.captureWarnings(True)

    # The twilio library logs every request at INFO, numbers and bodies
    # included; pgserver logs every command it runs.
    logging.getLogger("twilio").setLevel(logging.WARNING)
    logging.getLogger("pgserver").setLevel(logging.WARNING)
