-- Messages whose handler kept failing. The message is recorded as handled
-- (outcome 'dead-letter') so the stream goes on; `smsworker dead-letters
-- retry` handles it again. attempts counts every attempt, retries included.
CREATE TABLE IF NOT EXISTS smsworker.dead_letter (
    message_id text PRIMARY KEY,
    error text NOT NULL,
    attempts integer NOT NULL,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at timestamptz NOT NULL DEFAULT now(),
    retried_at timestamptz
);
