"""Delivery of the replies queued in smsworker.outbox.

Replies are committed to the outbox together with the message that caused
them, and sent from here by a few threads, so a slow or failing Twilio never
holds back list changes. A reply leaves the outbox as sent, or as failed with
Twilio's error code when retrying cannot help. A crash after Twilio accepted a
reply but before it was marked sent makes it go out again on restart: delivery
is at least once.
"""

import logging
import threading
import time
from collections.abc import Callable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential_jitter,
)

from smsworker import db, queries
from smsworker.errors import DatabaseUnavailable, PermanentSendError, TransientSendError
from smsworker.logs import mask_phone_number
from smsworker.metrics import Metrics
from smsworker.sender import Sender, wait_for_retry_after

logger = logging.getLogger(__name__)

# Backoff between sends of one reply while Twilio fails transiently.
SEND_RETRY_INITIAL_S = 1.0
SEND_RETRY_MAX_S = 30.0
# How long a reply rests in the outbox after a retry budget ran out.
POSTPONE_S = 30.0
# Upper bound on an idle sender's sleep, so replies whose next attempt falls
# due are picked up without a wake-up.
IDLE_WAIT_S = 1.0
# Backoff after the sender's database connection failed, doubling up to the
# maximum, so an outage logs a few warnings rather than one a second.
DATABASE_RETRY_INITIAL_S = 1.0
DATABASE_RETRY_MAX_S = 30.0


class ReplyDelivery:
    """A pool of threads that send pending replies until stopped."""

    def __init__(
        self,
        *,
        database_url: str,
        sender_factory: Callable[[], Sender],
        metrics: Metrics,
        concurrency: int,
        retry_budget_s: float,
        stop_event: threading.Event,
    ) -> None:
        self.database_url = database_url
        self.sender_factory = sender_factory
        self.metrics = metrics
        self.concurrency = concurrency
        self.retry_budget_s = retry_budget_s
        self.stop_event = stop_event
        self._wakeup = threading.Condition()
        self._wait = wait_for_retry_after(
            wait_exponential_jitter(
                multiplier=SEND_RETRY_INITIAL_S, max=SEND_RETRY_MAX_S, jitter=SEND_RETRY_INITIAL_S
            ),
            max_s=retry_budget_s,
        )
        self._threads: list[threading.Thread] = []
        # Cleared while the worker catches up on a backlog; see pause().
        self._may_send = threading.Event()
        self._may_send.set()

    def start(self) -> None:
        """Start the sender threads; does nothing when they are running."""
        if self._threads:
            return
        for number in range(1, self.concurrency + 1):
            thread = threading.Thread(
                target=self._run, name=f"smsworker-sender-{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def pause(self) -> None:
        """Hold back new sends while the worker catches up on a backlog.

        Sending a reply costs more of the interpreter than handling a message,
        so senders running beside a catch-up slow it several times over. The
        list is brought up to date first; a reply already in hand is finished.
        """
        self._may_send.clear()

    def resume(self) -> None:
        """Let the senders go on after pause()."""
        self._may_send.set()
        self.wake()

    def wake(self, replies: int | None = None) -> None:
        """Tell idle senders that replies were committed: as many senders as replies, or all."""
        with self._wakeup:
            if replies is None:
                self._wakeup.notify_all()
            else:
                self._wakeup.notify(replies)

    def join(self, timeout_s: float) -> None:
        """Wait up to timeout_s in all for the senders to finish the reply in hand."""
        self.wake()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        busy = sum(thread.is_alive() for thread in self._threads)
        if busy:
            logger.warning(
                "%d reply senders still waiting on Twilio after %.0f s; their replies stay "
                "pending and are sent again on restart.",
                busy,
                timeout_s,
            )

    def _run(self) -> None:
        sender = self.sender_factory()
        conn: db.Connection | None = None
        retry_delay_s = DATABASE_RETRY_INITIAL_S
        while not self.stop_event.is_set():
            if not self._may_send.is_set():
                self._may_send.wait(IDLE_WAIT_S)
                continue
            try:
                if conn is None or conn.closed:
                    conn = db.connect(
                        self.database_url, autocommit=True, application_name="smsworker-sender"
                    )
                with db.database_errors():
                    sent = self._deliver_next(conn, sender)
            except DatabaseUnavailable as error:
                logger.warning(
                    "Reply sender lost the database, retrying in %.0f s: %s", retry_delay_s, error
                )
                if conn is not None:
                    conn.close()
                conn = None
                self.stop_event.wait(retry_delay_s)
                retry_delay_s = min(retry_delay_s * 2, DATABASE_RETRY_MAX_S)
                continue
            except Exception:
                # A bug must not silently end this thread and leave replies
                # unsent; the reply in hand stays pending and is tried again.
                logger.exception("Reply sender failed unexpectedly, retrying.")
                self.stop_event.wait(DATABASE_RETRY_MAX_S)
                continue
            retry_delay_s = DATABASE_RETRY_INITIAL_S
            if not sent:
                with self._wakeup:
                    self._wakeup.wait(IDLE_WAIT_S)
        if conn is not None:
            conn.close()

    def _deliver_next(self, conn: db.Connection, sender: Sender) -> bool:
        """Send the next due reply; return False when there is none."""
        with conn.transaction():
            row = conn.execute(queries.CLAIM_REPLY).fetchone()
            if row is None:
                return False
            reply_id, message_id, part, to_number, from_number, body = row
            attempts = 0

            def send() -> str:
                nonlocal attempts
                # The claim is a row lock. If this connection died during a
                # backoff, the lock is gone and another sender may have sent
                # the reply already: this query then fails and nothing is sent.
                conn.execute(queries.CHECK_REPLY_CLAIM, {"id": reply_id})
                attempts += 1
                started = time.monotonic()
                try:
                    return sender.send(to=to_number, from_=from_number, body=body)
                finally:
                    self.metrics.send_duration.observe(time.monotonic() - started)

            try:
                sid = self._retrying()(send)
            except PermanentSendError as error:
                self._record_failure(conn, reply_id, message_id, to_number, attempts, error)
            except TransientSendError as error:
                self._postpone(conn, reply_id, message_id, attempts, error)
            else:
                conn.execute(
                    queries.MARK_REPLY_SENT,
                    {"id": reply_id, "twilio_sid": sid, "attempts": attempts},
                )
                self.metrics.replies.labels(outcome="sent").inc()
                logger.info(
                    "Sent reply %s part %d to %s as %s.",
                    message_id,
                    part,
                    mask_phone_number(to_number),
                    sid,
                )
        return True

    def _sleep(self, seconds: float) -> None:
        """Sleep between retries, waking at once when the worker is stopped."""
        self.stop_event.wait(seconds)

    def _retrying(self) -> Retrying:
        return Retrying(
            retry=retry_if_exception_type(TransientSendError),
            wait=self._wait,
            stop=stop_after_delay(self.retry_budget_s) | stop_when_event_set(self.stop_event),
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )

    def _log_retry(self, retry_state: RetryCallState) -> None:
        self.metrics.send_retries.inc()
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        sleep_s = retry_state.next_action.sleep if retry_state.next_action else 0.0
        logger.warning(
            "Sending a reply failed (attempt %d), retrying in %.1f s: %s",
            retry_state.attempt_number,
            sleep_s,
            error,
        )

    def _record_failure(
        self,
        conn: db.Connection,
        reply_id: int,
        message_id: str,
        to_number: str,
        attempts: int,
        error: PermanentSendError,
    ) -> None:
        conn.execute(
            queries.MARK_REPLY_FAILED,
            {
                "id": reply_id,
                "error_code": error.code,
                "error_message": str(error),
                "attempts": attempts,
            },
        )
        self.metrics.replies.labels(outcome="failed").inc()
        self.metrics.reply_failures.labels(code=str(error.code)).inc()
        logger.error(
            "Giving up on the reply to message %s for %s: %s",
            message_id,
            mask_phone_number(to_number),
            error,
        )

    def _postpone(
        self,
        conn: db.Connection,
        reply_id: int,
        message_id: str,
        attempts: int,
        error: TransientSendError,
    ) -> None:
        delay_s = 0.0 if self.stop_event.is_set() else POSTPONE_S
        conn.execute(
            queries.POSTPONE_REPLY,
            {
                "id": reply_id,
                "attempts": attempts,
                "error_code": error.code,
                "error_message": str(error),
                "delay_s": delay_s,
            },
        )
        logger.warning(
            "Reply to message %s still failing after %d attempts, next try in %.0f s: %s",
            message_id,
            attempts,
            delay_s,
            error,
        )
