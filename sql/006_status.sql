-- Counting failed replies for `smsworker status` reads only the failed rows.
CREATE INDEX IF NOT EXISTS outbox_failed_idx
    ON smsworker.outbox (finished_at)
    WHERE status = 'failed';
