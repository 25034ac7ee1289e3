-- The number of items on the list, kept by triggers so that confirming an
-- addition does not count the whole list. The triggers also follow changes
-- that operators make by hand, a TRUNCATE included.
CREATE TABLE IF NOT EXISTS smsworker.list_size (
    name text PRIMARY KEY,
    item_count bigint NOT NULL
);

INSERT INTO smsworker.list_size (name, item_count)
SELECT 'todo', count(*) FROM smsworker.list_item
ON CONFLICT (name) DO NOTHING;

-- The triggers run once per statement, not once per row: a batch that adds
-- hundreds of items updates the size once.
CREATE OR REPLACE FUNCTION smsworker.count_added_items() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE smsworker.list_size
    SET item_count = item_count + (SELECT count(*) FROM added_items)
    WHERE name = 'todo';
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION smsworker.count_deleted_items() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE smsworker.list_size
    SET item_count = item_count - (SELECT count(*) FROM deleted_items)
    WHERE name = 'todo';
    RETURN NULL;
END;
$$;

-- Earlier versions counted with one trigger per row.
DROP TRIGGER IF EXISTS smsworker_count_list_items ON smsworker.list_item;
DROP FUNCTION IF EXISTS smsworker.count_list_items();

CREATE OR REPLACE TRIGGER smsworker_count_added_items
    AFTER INSERT ON smsworker.list_item
    REFERENCING NEW TABLE AS added_items
    FOR EACH STATEMENT
    EXECUTE FUNCTION smsworker.count_added_items();

CREATE OR REPLACE TRIGGER smsworker_count_deleted_items
    AFTER DELETE ON smsworker.list_item
    REFERENCING OLD TABLE AS deleted_items
    FOR EACH STATEMENT
    EXECUTE FUNCTION smsworker.count_deleted_items();

CREATE OR REPLACE FUNCTION smsworker.reset_list_size() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE smsworker.list_size SET item_count = 0 WHERE name = 'todo';
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER smsworker_reset_list_size
    AFTER TRUNCATE ON smsworker.list_item
    FOR EACH STATEMENT
    EXECUTE FUNCTION smsworker.reset_list_size();
