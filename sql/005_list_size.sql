-- The number of items on the list, kept by a trigger so that confirming an
-- addition does not count the whole list. The trigger also follows changes
-- that operators make by hand.
CREATE TABLE IF NOT EXISTS smsworker.list_size (
    name text PRIMARY KEY,
    item_count bigint NOT NULL
);

INSERT INTO smsworker.list_size (name, item_count)
SELECT 'todo', count(*) FROM smsworker.list_item
ON CONFLICT (name) DO NOTHING;

CREATE OR REPLACE FUNCTION smsworker.count_list_items() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE smsworker.list_size
    SET item_count = item_count + CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END
    WHERE name = 'todo';
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER smsworker_count_list_items
    AFTER INSERT OR DELETE ON smsworker.list_item
    FOR EACH ROW
    EXECUTE FUNCTION smsworker.count_list_items();
