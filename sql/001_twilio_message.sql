-- The table the syncer keeps, created here only when it does not exist yet,
-- so that a new install and the tests can run without a syncer.
CREATE SCHEMA IF NOT EXISTS twilio;

CREATE TABLE IF NOT EXISTS twilio.message (
    id text PRIMARY KEY,
    account_id text,
    api_version text,
    body text,
    date_created timestamp without time zone,
    date_sent timestamp without time zone,
    date_updated timestamp without time zone,
    deleted boolean,
    direction text,
    error_code integer,
    error_message text,
    "from" text,
    messaging_service_id text,
    num_media integer,
    num_segments integer,
    price numeric,
    price_unit text,
    status text,
    "to" text,
    uri text
);

-- The worker reads inbound rows in (date_created, id) order; without this
-- index every catch-up query scans the whole table.
CREATE INDEX IF NOT EXISTS message_inbound_date_created_id_idx
    ON twilio.message (date_created, id)
    WHERE direction = 'inbound';
