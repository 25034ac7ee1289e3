CREATE SCHEMA IF NOT EXISTS smsworker;

-- The position of the last handled inbound message, in (date_created, id)
-- order. The floor is the position when smsworker was installed: messages at
-- or before it are history and never handled as commands.
CREATE TABLE IF NOT EXISTS smsworker.processor_cursor (
    name text PRIMARY KEY,
    date_created timestamp without time zone NOT NULL,
    message_id text NOT NULL,
    floor_date_created timestamp without time zone NOT NULL,
    floor_message_id text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO smsworker.processor_cursor
    (name, date_created, message_id, floor_date_created, floor_message_id)
SELECT 'todo', position.date_created, position.id,
       position.date_created, position.id
FROM (
    SELECT date_created, id FROM twilio.message
    WHERE direction = 'inbound' AND date_created IS NOT NULL
    UNION ALL
    SELECT '-infinity'::timestamp, ''
    ORDER BY 1 DESC, 2 DESC
    LIMIT 1
) AS position
ON CONFLICT (name) DO NOTHING;

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
    message_id text NOT NULL UNIQUE REFERENCES twilio.message (id),
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
