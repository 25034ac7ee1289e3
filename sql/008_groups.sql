-- Private lists. A group owns one list and is reached through one of our
-- Twilio numbers. A phone number belongs to at most one group per number of
-- ours, so the sender and the number texted identify the list. Items with no
-- group belong to the open list, which everyone shares in open mode.
CREATE TABLE IF NOT EXISTS smsworker.list_group (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    our_number text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (our_number, name),
    -- The target of group_member's foreign key, which keeps its our_number
    -- equal to the group's.
    UNIQUE (id, our_number)
);

CREATE TABLE IF NOT EXISTS smsworker.group_member (
    our_number text NOT NULL,
    phone_number text NOT NULL,
    group_id bigint NOT NULL,
    -- The member who sent the invitation; NULL when an operator added them.
    invited_by text,
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (our_number, phone_number),
    FOREIGN KEY (group_id, our_number)
        REFERENCES smsworker.list_group (id, our_number) ON DELETE CASCADE
);

CREATE INDEX IF NOT EXISTS group_member_group_idx ON smsworker.group_member (group_id);

-- The day a stranger last got the "this list is private" reply from one of
-- our numbers, so they get it at most once a day.
CREATE TABLE IF NOT EXISTS smsworker.stranger_notice (
    our_number text NOT NULL,
    phone_number text NOT NULL,
    notified_on date NOT NULL,
    PRIMARY KEY (our_number, phone_number)
);

ALTER TABLE smsworker.list_item
    ADD COLUMN IF NOT EXISTS group_id bigint
        REFERENCES smsworker.list_group (id) ON DELETE CASCADE;

-- Each list is read in id order. The open list has no group, and 0 stands
-- for it, since bigserial ids start at 1.
CREATE INDEX IF NOT EXISTS list_item_list_idx
    ON smsworker.list_item ((coalesce(group_id, 0)), id);

-- The size of each list: 'todo' for the open list, 'group:ID' for a group's.
-- The functions below replace those of 005_list_size.sql, which counted one
-- list.
CREATE OR REPLACE FUNCTION smsworker.list_size_name(group_id bigint) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce('group:' || group_id, 'todo')
$$;

CREATE OR REPLACE FUNCTION smsworker.count_added_items() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO smsworker.list_size AS s (name, item_count)
    SELECT smsworker.list_size_name(a.group_id), count(*)
    FROM added_items AS a
    GROUP BY 1
    ON CONFLICT (name) DO UPDATE SET item_count = s.item_count + excluded.item_count;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION smsworker.count_deleted_items() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE smsworker.list_size AS s
    SET item_count = s.item_count - d.removed
    FROM (
        SELECT smsworker.list_size_name(group_id) AS name, count(*) AS removed
        FROM deleted_items
        GROUP BY 1
    ) AS d
    WHERE s.name = d.name;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION smsworker.reset_list_size() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE smsworker.list_size SET item_count = 0;
    RETURN NULL;
END;
$$;

-- A deleted group's size row goes with it (its items go by the cascade).
CREATE OR REPLACE FUNCTION smsworker.forget_group_list_size() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM smsworker.list_size AS s
    USING deleted_groups AS g
    WHERE s.name = smsworker.list_size_name(g.id);
    RETURN NULL;
END;
$$;

-- A new group's list starts empty, with a size row to lock.
CREATE OR REPLACE FUNCTION smsworker.create_group_list_size() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO smsworker.list_size (name, item_count)
    SELECT smsworker.list_size_name(g.id), 0 FROM created_groups AS g
    ON CONFLICT (name) DO NOTHING;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER smsworker_create_group_list_size
    AFTER INSERT ON smsworker.list_group
    REFERENCING NEW TABLE AS created_groups
    FOR EACH STATEMENT
    EXECUTE FUNCTION smsworker.create_group_list_size();

CREATE OR REPLACE TRIGGER smsworker_forget_group_list_size
    AFTER DELETE ON smsworker.list_group
    REFERENCING OLD TABLE AS deleted_groups
    FOR EACH STATEMENT
    EXECUTE FUNCTION smsworker.forget_group_list_size();

-- Data changes that must happen once, however often `smsworker migrate` runs.
CREATE TABLE IF NOT EXISTS smsworker.data_migration (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Before groups, there was one list shared by everyone. Its items move into
-- one group per number they were sent to, whose members are the senders of
-- those items. Items whose message is gone stay on the open list. The
-- notices report what moved; `smsworker migrate` prints those that start with
-- "smsworker: ".
DO $$
DECLARE
    moved bigint;
    groups_created bigint;
    members_added bigint;
    left_open bigint;
BEGIN
    -- `smsworker migrate --open` keeps the shared list as it is; a later
    -- migration without it moves the items.
    IF current_setting('smsworker.open_mode', true) = 'on'
        OR EXISTS (SELECT 1 FROM smsworker.data_migration WHERE name = 'open-list-to-groups')
    THEN
        RETURN;
    END IF;

    WITH sources AS (
        SELECT DISTINCT m."to" AS our_number
        FROM smsworker.list_item AS i
        JOIN twilio.message AS m ON m.id = i.message_id
        WHERE i.group_id IS NULL AND m."to" IS NOT NULL
    ), created AS (
        INSERT INTO smsworker.list_group (name, our_number)
        SELECT 'list of ' || our_number, our_number FROM sources
        ON CONFLICT (our_number, name) DO NOTHING
        RETURNING id
    )
    SELECT count(*) INTO groups_created FROM created;

    WITH senders AS (
        SELECT DISTINCT ON (m."to", m."from") m."to" AS our_number, m."from" AS phone_number,
               g.id AS group_id
        FROM smsworker.list_item AS i
        JOIN twilio.message AS m ON m.id = i.message_id
        JOIN smsworker.list_group AS g
          ON g.our_number = m."to" AND g.name = 'list of ' || m."to"
        WHERE i.group_id IS NULL AND m."from" IS NOT NULL
    ), added AS (
        INSERT INTO smsworker.group_member (our_number, phone_number, group_id)
        SELECT our_number, phone_number, group_id FROM senders
        ON CONFLICT (our_number, phone_number) DO NOTHING
        RETURNING 1
    )
    SELECT count(*) INTO members_added FROM added;

    UPDATE smsworker.list_item AS i
    SET group_id = g.id
    FROM twilio.message AS m, smsworker.list_group AS g
    WHERE m.id = i.message_id AND i.group_id IS NULL
      AND g.our_number = m."to" AND g.name = 'list of ' || m."to";
    GET DIAGNOSTICS moved = ROW_COUNT;

    -- The size triggers count inserts and deletes, not this update.
    INSERT INTO smsworker.list_size AS s (name, item_count)
    SELECT smsworker.list_size_name(group_id), count(*)
    FROM smsworker.list_item
    GROUP BY 1
    ON CONFLICT (name) DO UPDATE SET item_count = excluded.item_count;
    UPDATE smsworker.list_size SET item_count = 0
    WHERE name = 'todo' AND NOT EXISTS (
        SELECT 1 FROM smsworker.list_item WHERE group_id IS NULL
    );

    SELECT count(*) INTO left_open FROM smsworker.list_item WHERE group_id IS NULL;

    INSERT INTO smsworker.data_migration (name) VALUES ('open-list-to-groups');
    IF moved > 0 OR left_open > 0 THEN
        RAISE NOTICE 'smsworker: Moved % items of the shared list into % new groups with % members; % items stay on the open list.',
            moved, groups_created, members_added, left_open;
    END IF;
END;
$$;
