"""Settings of the worker, built once from the CLI options and the environment."""

from dataclasses import dataclass
from pathlib import Path

DEFAULT_METRICS_PORT = 9108
# The processor_cursor row the to-do list worker reads and advances.
DEFAULT_CURSOR_NAME = "todo"
DEFAULT_TWILIO_API_BASE_URL = "https://api.twilio.com"
# The data folder of the embedded PostgreSQL, used when DATABASE_URL is not set,
# relative to the working directory.
DEFAULT_EMBEDDED_DATA_DIR = Path(".smsworker/pgdata")

# How often the worker looks for unhandled rows even without a notification,
# which bounds the delay for a row whose notification was lost.
POLL_INTERVAL_S = 10.0
# How many messages one transaction handles during catch-up.
BATCH_SIZE = 500
# How far back (in date_created) the worker looks for rows that arrived late,
# after newer rows had already been handled.
LATE_ROW_WINDOW_S = 24 * 3600.0
# How often the worker searches the late-row window for rows whose
# notification it missed. Polls in between look only after the cursor.
LATE_ROW_RESCAN_INTERVAL_S = 600.0
# How many replies are sent to Twilio at the same time.
SEND_CONCURRENCY = 16
# How long a reply keeps being retried in one go before it goes back to the
# outbox to be picked up again later.
SEND_RETRY_BUDGET_S = 60.0
# How often a failing handler is tried for one message before the failure is
# recorded and the worker moves on.
HANDLER_MAX_ATTEMPTS = 3
# How long the worker keeps trying to reach the database before it exits.
DATABASE_RETRY_LIMIT_S = 300.0


@dataclass(frozen=True)
class TwilioSettings:
    """Credentials and endpoint of the Twilio REST API."""

    account_sid: str
    auth_token: str
    api_base_url: str = DEFAULT_TWILIO_API_BASE_URL

    def __repr__(self) -> str:
        # The auth token is a secret: keep it out of logs and tracebacks.
        return (
            f"TwilioSettings(account_sid={self.account_sid!r}, api_base_url={self.api_base_url!r})"
        )


@dataclass(frozen=True)
class Settings:
    """Everything `smsworker run` needs; every duration is in seconds."""

    database_url: str
    twilio: TwilioSettings | None = None
    metrics_port: int = DEFAULT_METRICS_PORT
    poll_interval_s: float = POLL_INTERVAL_S
    batch_size: int = BATCH_SIZE
    late_row_window_s: float = LATE_ROW_WINDOW_S
    late_row_rescan_interval_s: float = LATE_ROW_RESCAN_INTERVAL_S
    send_concurrency: int = SEND_CONCURRENCY
    send_retry_budget_s: float = SEND_RETRY_BUDGET_S
    handler_max_attempts: int = HANDLER_MAX_ATTEMPTS
    database_retry_limit_s: float = DATABASE_RETRY_LIMIT_S
    cursor_name: str = DEFAULT_CURSOR_NAME
    # Everyone shares one list, instead of private lists per group.
    open_list: bool = False
    # The region of typed phone numbers without a country code.
    default_region: str = "US"

    def __repr__(self) -> str:
        return repr_without_database_url(self)


def repr_without_database_url(settings: object) -> str:
    """Return a settings object's repr without its database URL, which may carry a password."""
    fields = ", ".join(
        f"{name}={value!r}" for name, value in vars(settings).items() if name != "database_url"
    )
    return f"{type(settings).__name__}({fields})"
