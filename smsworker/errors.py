"""Exceptions raised by smsworker, translated from the libraries at the border."""


class SmsWorkerError(Exception):
    """Base class of every error smsworker raises on purpose."""


class ConfigurationError(SmsWorkerError):
    """A setting is missing or invalid. The message names it and how to fix it."""


class DatabaseUnavailable(SmsWorkerError):
    """The database cannot be reached or the connection was lost. Retrying may help."""


class SendError(SmsWorkerError):
    """A reply could not be delivered to Twilio."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class TransientSendError(SendError):
    """Twilio is overloaded, down or unreachable: the same request may succeed later."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after_s = retry_after_s


class PermanentSendError(SendError):
    """Twilio rejected the request; sending it again cannot succeed."""
