-- Wake the worker when an inbound row is inserted. The payload is only the
-- id, and only when it is short: NOTIFY payloads are limited to 8000 bytes,
-- and a longer payload would make the syncer's INSERT fail. The worker treats
-- a notification as "look now", so an empty payload loses nothing.
CREATE OR REPLACE FUNCTION smsworker.notify_inbound_message() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'smsworker_message',
        CASE WHEN octet_length(NEW.id) <= 64 THEN NEW.id ELSE '' END
    );
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER smsworker_notify_inbound_message
    AFTER INSERT ON twilio.message
    FOR EACH ROW
    WHEN (NEW.direction = 'inbound')
    EXECUTE FUNCTION smsworker.notify_inbound_message();
