CREATE SCHEMA IF NOT EXISTS smsworker;

-- The position of the last handled inbound message, in (date_created, id)
-- order. Rows at or before the floor are history: they were in the table
-- when smsworker was installed and are never handled as commands.
CREATE TABLE IF NOT EXISTS smsworker.processor_cursor (
    name text PRIMARY KEY,
    date_created timestamp without time zone NOT NULL,
    message_id text NOT NULL,
    floor_date_created timestamp without time zone NOT NULL,
    floor_message_id text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per inbound message whose effects are committed. The primary key
-- is what makes handling exactly-once: a second attempt conflicts here.
CREATE TABLE IF NOT EXISTS smsworker.handled_message (
    message_id text PRIMARY KEY,
    date_created timestamp without time zone,
    command text NOT NULL,
    outcome text NOT NULL,
    error text,
    attempts integer NOT NULL DEFAULT 1,
    handled_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS smsworker.list_item (
    id bigserial PRIMARY KEY,
    -- The message the item came from; NULL once a syncer prunes that message.
    message_id text UNIQUE REFERENCES twilio.message (id) ON DELETE SET NULL,
    body text NOT NULL,
    added_at timestamptz NOT NULL DEFAULT now()
);

-- Replies waiting to be sent, written in the same transaction as the
-- message that caused them. Status moves pending -> sent or failed.
CREATE TABLE IF NOT EXISTS smsworker.outbox (
    id bigserial PRIMARY KEY,
    message_id text NOT NULL,
    part integer NOT NULL,
    to_number text NOT NULL,
    from_number text NOT NULL,
    body text NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    twilio_sid text,
    error_code integer,
    error_message text,
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    UNIQUE (message_id, part)
);

CREATE INDEX IF NOT EXISTS outbox_pending_idx
    ON smsworker.outbox (next_attempt_at, id)
    WHERE status = 'pending';

-- On the first migration, inbound messages already in the table are history.
-- The cursor and the floor start at the beginning of the newest message's
-- second, and the messages of that second are recorded as handled, so a new
-- row that shares that second is still handled.
WITH newest AS (
    SELECT coalesce(max(date_created), '-infinity') AS date_created
    FROM twilio.message WHERE direction = 'inbound'
), cursor_created AS (
    INSERT INTO smsworker.processor_cursor
        (name, date_created, message_id, floor_date_created, floor_message_id)
    SELECT 'todo', newest.date_created, '', newest.date_created, '' FROM newest
    ON CONFLICT (name) DO NOTHING
    RETURNING date_created
)
INSERT INTO smsworker.handled_message (message_id, date_created, command, outcome)
SELECT m.id, m.date_created, 'history', 'history'
FROM twilio.message AS m JOIN cursor_created AS c ON m.date_created = c.date_created
WHERE m.direction = 'inbound'
ON CONFLICT (message_id) DO NOTHING;
