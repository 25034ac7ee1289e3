"""The embedded PostgreSQL used when no DATABASE_URL is given."""

import logging
import warnings
from pathlib import Path

from smsworker.errors import DatabaseUnavailable

logger = logging.getLogger(__name__)


def embedded_database_url(data_dir: Path) -> str:
    """Start (or join) the embedded server keeping its data in data_dir.

    Several smsworker processes may share one data folder: the server keeps
    running until the last of them exits.
    """
    with warnings.catch_warnings():
        # pgserver's platformdirs warns when XDG_RUNTIME_DIR is unset, as it is
        # under cron, systemd services and containers; the fallback is fine.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver  # type: ignore[attr-defined,unused-ignore]  # Slow to import.

    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DatabaseUnavailable(
            f"cannot create the embedded PostgreSQL's folder {data_dir}: {error.strerror}"
        ) from error
    try:
        server = pgserver.get_server(data_dir.resolve(), cleanup_mode="stop")
    except Exception as error:  # pgserver raises plain exceptions of many kinds.
        raise DatabaseUnavailable(
            f"cannot start the embedded PostgreSQL in {data_dir}: {error}"
        ) from error
    url: str = server.get_uri()
    logger.info("Using the embedded PostgreSQL in %s.", data_dir)
    return url
