-- State of `smsworker sync`, which lists Twilio's messages and upserts them
-- into twilio.message. One row per Twilio account.
--
-- A run lists the messages sent since run_window_start, newest first, one
-- page per transaction: each page's rows go to sync_staged together with the
-- next page's path, so a run stopped between pages continues from
-- run_next_page. When a run ends, its rows are written to twilio.message in
-- one transaction, and synced_until moves to the newest date_sent it saw. The
-- next run starts an overlap before that.
CREATE TABLE IF NOT EXISTS smsworker.sync_state (
    account_sid text PRIMARY KEY,
    -- Every message sent between synced_from and synced_until was listed.
    synced_from timestamp without time zone,
    synced_until timestamp without time zone,
    -- Inbound messages stored by the sync that were created before this are
    -- history, recorded as handled: a backfill loads them but the worker
    -- does not act on them.
    history_before timestamp without time zone NOT NULL,
    run_window_start timestamp without time zone,
    run_head timestamp without time zone,
    run_next_page text,
    run_started_at timestamptz,
    last_success_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The messages a run in progress has listed, as twilio.message rows in
-- JSON. They become visible together when the run ends, so the worker reads
-- the run's new messages at once and handles them in order, not newest page
-- first. The run then marks every stored message of its window that it did
-- not list as deleted at Twilio.
CREATE TABLE IF NOT EXISTS smsworker.sync_staged (
    account_sid text NOT NULL,
    message_id text NOT NULL,
    row jsonb NOT NULL,
    PRIMARY KEY (account_sid, message_id)
);

-- The end of each run looks for messages of its window that Twilio no longer
-- lists.
CREATE INDEX IF NOT EXISTS message_account_date_sent_idx
    ON twilio.message (account_id, date_sent);
