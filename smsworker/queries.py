"""Every SQL statement the worker runs, each named and with its purpose.

Timestamps in twilio.message are UTC without a time zone. Queries compare
them with each other or with naive UTC values only, so the session's time
zone never changes which rows are found.
"""

# The queries below join the cursor LATERAL, so its values become parameters
# of an index scan on (date_created, id). With a plain join the planner reads
# the whole index and filters it.

# The inbound rows after the cursor, oldest first: the catch-up query.
FETCH_AFTER_CURSOR = """
SELECT m.id, m.date_created, m.body, m."from", m."to"
FROM smsworker.processor_cursor AS c
CROSS JOIN LATERAL (
    SELECT * FROM twilio.message AS m
    WHERE (m.date_created, m.id) > (c.date_created, c.message_id)
      AND m.direction = 'inbound'
      AND m.deleted IS NOT TRUE
    ORDER BY m.date_created, m.id
    LIMIT %(limit)s
) AS m
WHERE c.name = %(cursor)s
ORDER BY m.date_created, m.id
"""

# Unhandled inbound rows at or before the cursor that arrived late: older
# than rows already handled, but inside the late-row window and after the
# floor (the messages that were there when smsworker was installed).
FETCH_LATE_ROWS = """
SELECT m.id, m.date_created, m.body, m."from", m."to"
FROM smsworker.processor_cursor AS c
CROSS JOIN LATERAL (
    SELECT * FROM twilio.message AS m
    WHERE (m.date_created, m.id) <= (c.date_created, c.message_id)
      AND (m.date_created, m.id) > (c.floor_date_created, c.floor_message_id)
      AND m.date_created >= c.date_created - make_interval(secs => %(window_s)s)
      AND m.direction = 'inbound'
      AND m.deleted IS NOT TRUE
      AND NOT EXISTS (
          SELECT 1 FROM smsworker.handled_message AS h WHERE h.message_id = m.id
      )
    ORDER BY m.date_created, m.id
    LIMIT %(limit)s
) AS m
WHERE c.name = %(cursor)s
ORDER BY m.date_created, m.id
"""

# Unhandled inbound rows at or before the cursor among the ids named by
# notifications: rows that committed after newer rows had been handled.
FETCH_LATE_BY_ID = """
SELECT m.id, m.date_created, m.body, m."from", m."to"
FROM smsworker.processor_cursor AS c
JOIN twilio.message AS m
  ON (m.date_created, m.id) > (c.floor_date_created, c.floor_message_id)
 AND (m.date_created, m.id) <= (c.date_created, c.message_id)
WHERE c.name = %(cursor)s
  AND m.id = ANY(%(ids)s)
  AND m.direction = 'inbound'
  AND m.deleted IS NOT TRUE
  AND NOT EXISTS (
      SELECT 1 FROM smsworker.handled_message AS h WHERE h.message_id = m.id
  )
ORDER BY m.date_created, m.id
LIMIT %(limit)s
"""

# Claim a message for handling. No row comes back when it was handled before:
# this primary key is what makes each message's effects apply once.
CLAIM_MESSAGE = """
INSERT INTO smsworker.handled_message (message_id, date_created, command, outcome)
VALUES (%(message_id)s, %(date_created)s, %(command)s, 'pending')
ON CONFLICT (message_id) DO NOTHING
RETURNING message_id
"""

# The messages among those given that were handled before. The LATERAL
# lookup keeps this an index probe per id: `message_id = ANY(...)` gets a
# cached plan that scans the whole table once the connection has prepared it
# while the table was small.
HANDLED_AMONG = """
SELECT i.id
FROM unnest(%(ids)s::text[]) AS i (id)
CROSS JOIN LATERAL (
    SELECT 1 FROM smsworker.handled_message AS h WHERE h.message_id = i.id LIMIT 1
) AS h
"""

# Record a batch of messages as handled, with their outcomes. Without ON
# CONFLICT: if another process claimed one of them meanwhile, the statement
# fails and the batch's transaction rolls back whole.
RECORD_HANDLED = """
INSERT INTO smsworker.handled_message (message_id, date_created, command, outcome)
SELECT * FROM unnest(
    %(message_ids)s::text[], %(dates)s::timestamp[], %(commands)s::text[],
    %(outcomes)s::text[]
)
"""

# Record how handling a claimed message ended.
RECORD_OUTCOME = """
UPDATE smsworker.handled_message
SET outcome = %(outcome)s, error = %(error)s, attempts = %(attempts)s
WHERE message_id = %(message_id)s
"""

# Record a message whose handler kept failing as handled, so it is not
# retried forever; RECORD_DEAD_LETTER keeps the details for operators.
RECORD_FAILURE = """
INSERT INTO smsworker.handled_message
    (message_id, date_created, command, outcome, error, attempts)
VALUES (%(message_id)s, %(date_created)s, %(command)s, 'dead-letter', %(error)s, %(attempts)s)
ON CONFLICT (message_id) DO NOTHING
"""

RECORD_DEAD_LETTER = """
INSERT INTO smsworker.dead_letter (message_id, error, attempts)
VALUES (%(message_id)s, %(error)s, %(attempts)s)
ON CONFLICT (message_id) DO UPDATE
SET error = excluded.error,
    attempts = smsworker.dead_letter.attempts + excluded.attempts,
    last_failed_at = now(),
    retried_at = NULL
"""

# Dead letters for operators, oldest failure first.
LIST_DEAD_LETTERS = """
SELECT d.message_id, d.attempts, d.first_failed_at, d.last_failed_at, d.retried_at, d.error
FROM smsworker.dead_letter AS d
WHERE %(include_retried)s OR d.retried_at IS NULL
ORDER BY d.first_failed_at, d.message_id
"""

# Lock a dead letter whose message is still dead-lettered and still in
# twilio.message, and return that message.
LOCK_DEAD_LETTER = """
SELECT m.id, m.date_created, m.body, m."from", m."to"
FROM smsworker.dead_letter AS d
JOIN smsworker.handled_message AS h
  ON h.message_id = d.message_id AND h.outcome = 'dead-letter'
JOIN twilio.message AS m ON m.id = d.message_id
WHERE d.message_id = %(message_id)s
FOR UPDATE OF d, h
"""

# Release a locked dead letter's message: without its handled record, the
# handler can claim it once more.
RELEASE_DEAD_LETTER = """
DELETE FROM smsworker.handled_message
WHERE message_id = %(message_id)s AND outcome = 'dead-letter'
"""

MARK_DEAD_LETTER_RETRIED = """
UPDATE smsworker.dead_letter SET retried_at = now() WHERE message_id = %(message_id)s
"""

# Move the cursor forward; it never moves back, whatever order rows come in.
ADVANCE_CURSOR = """
UPDATE smsworker.processor_cursor
SET date_created = %(date_created)s, message_id = %(message_id)s, updated_at = now()
WHERE name = %(cursor)s
  AND (date_created, message_id) < (%(date_created)s, %(message_id)s)
"""

# Take the active role for a cursor without waiting: a session advisory lock,
# released when the connection ends. The first key is constant ("smsw").
TRY_ACTIVE_ROLE = """
SELECT pg_try_advisory_lock(1936552823, hashtext(%(cursor)s))
"""

# The cursor position as text, for logs ('-infinity' before the first message).
SHOW_CURSOR = """
SELECT date_created::text, message_id
FROM smsworker.processor_cursor WHERE name = %(cursor)s
"""

# The worker's health for metrics: the cursor position, lag (age in seconds
# of the oldest unhandled message after the cursor) and backlog (how many
# there are), the replies waiting to be sent and the dead letters not yet
# retried. Each count reads a partial index or a small table.
STATS = """
SELECT extract(epoch FROM c.date_created AT TIME ZONE 'UTC'),
       b.backlog,
       coalesce(extract(epoch FROM (now() AT TIME ZONE 'UTC') - b.oldest), 0),
       (SELECT count(*) FROM smsworker.outbox WHERE status = 'pending'),
       (SELECT count(*) FROM smsworker.dead_letter WHERE retried_at IS NULL)
FROM smsworker.processor_cursor AS c
CROSS JOIN LATERAL (
    SELECT count(*) AS backlog, min(m.date_created) AS oldest
    FROM twilio.message AS m
    WHERE (m.date_created, m.id) > (c.date_created, c.message_id)
      AND m.direction = 'inbound'
      AND m.deleted IS NOT TRUE
) AS b
WHERE c.name = %(cursor)s
"""

# Replies that failed for good, for `smsworker status`.
COUNT_FAILED_REPLIES = """
SELECT count(*) FROM smsworker.outbox WHERE status = 'failed'
"""

# The connection that has the active role's lock (see TRY_ACTIVE_ROLE), if any.
# pg_locks shows the two int4 keys as unsigned oids.
ACTIVE_WORKER = """
SELECT a.pid, a.application_name, a.client_addr::text, a.backend_start
FROM pg_locks AS l
JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory'
  AND l.granted
  AND l.objsubid = 2
  AND l.classid::bigint = 1936552823
  AND l.objid::bigint = (hashtext(%(cursor)s)::bigint + 4294967296) %% 4294967296
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""

# How many inbound messages a replay of a time window reads.
REPLAY_COUNT = """
SELECT count(*)
FROM smsworker.processor_cursor AS c
JOIN twilio.message AS m
  ON (m.date_created, m.id) > (c.floor_date_created, c.floor_message_id)
WHERE c.name = %(cursor)s
  AND m.date_created >= %(since)s
  AND m.date_created < %(until)s
  AND m.direction = 'inbound'
  AND m.deleted IS NOT TRUE
"""

# Inbound messages in a time window, oldest first, from the position after
# (after_date, after_id), with the outcome recorded for each one (NULL when
# not handled). Messages at or before the floor were history when smsworker
# was installed and are never handled.
REPLAY_CANDIDATES = """
SELECT m.id, m.date_created, m.body, m."from", m."to", h.outcome
FROM smsworker.processor_cursor AS c
CROSS JOIN LATERAL (
    SELECT * FROM twilio.message AS m
    WHERE (m.date_created, m.id) > (c.floor_date_created, c.floor_message_id)
      AND (m.date_created, m.id) > (%(after_date)s, %(after_id)s)
      AND m.date_created < %(until)s
      AND m.direction = 'inbound'
      AND m.deleted IS NOT TRUE
    ORDER BY m.date_created, m.id
    LIMIT %(limit)s
) AS m
LEFT JOIN LATERAL (
    SELECT outcome FROM smsworker.handled_message AS h WHERE h.message_id = m.id
) AS h ON true
WHERE c.name = %(cursor)s
ORDER BY m.date_created, m.id
"""

# The list queries take a group id, NULL for the open list. They compare
# coalesce(group_id, 0), which list_item_list_idx indexes, because group ids
# start at 1.

# A page of a list, in the order items were added: the items after the given
# id, or from the start when it is NULL.
LIST_ITEMS = """
SELECT id, body FROM smsworker.list_item
WHERE coalesce(group_id, 0) = coalesce(%(group_id)s::bigint, 0)
  AND id > coalesce(%(after)s::bigint, -9223372036854775808)
ORDER BY coalesce(group_id, 0), id
LIMIT %(limit)s
"""

# The list size, locked until the transaction ends: the handler numbers the
# items it adds from it, so no other writer may change the list meanwhile.
LOCK_LIST_SIZE = """
SELECT item_count FROM smsworker.list_size
WHERE name = smsworker.list_size_name(%(group_id)s::bigint)
FOR UPDATE
"""

# Add items in the order given: the ids that number them follow that order.
ADD_ITEMS = """
INSERT INTO smsworker.list_item (message_id, body, group_id)
SELECT a.message_id, a.body, %(group_id)s::bigint
FROM unnest(%(message_ids)s::text[], %(bodies)s::text[]) WITH ORDINALITY
    AS a (message_id, body, position)
ORDER BY a.position
"""

# Delete the item at a 1-based position in the list's order.
DELETE_ITEM_AT = """
DELETE FROM smsworker.list_item
WHERE id = (
    SELECT id FROM smsworker.list_item
    WHERE coalesce(group_id, 0) = coalesce(%(group_id)s::bigint, 0)
    ORDER BY coalesce(group_id, 0), id
    OFFSET %(offset)s LIMIT 1
)
RETURNING body
"""

QUEUE_REPLIES = """
INSERT INTO smsworker.outbox (message_id, part, to_number, from_number, body)
SELECT * FROM unnest(
    %(message_ids)s::text[], %(parts)s::integer[], %(to_numbers)s::text[],
    %(from_numbers)s::text[], %(bodies)s::text[]
)
"""

# Take the oldest reply that is due, skipping rows another sender holds. A
# later part of a split reply waits until the earlier parts have left, so the
# parts go out in order.
CLAIM_REPLY = """
SELECT o.id, o.message_id, o.part, o.to_number, o.from_number, o.body
FROM smsworker.outbox AS o
WHERE o.status = 'pending' AND o.next_attempt_at <= now()
  AND NOT EXISTS (
      SELECT 1 FROM smsworker.outbox AS earlier
      WHERE earlier.message_id = o.message_id
        AND earlier.part < o.part
        AND earlier.status = 'pending'
  )
ORDER BY o.next_attempt_at, o.id
LIMIT 1
FOR UPDATE SKIP LOCKED
"""

# Fails when the claiming connection is gone; used before each send attempt.
CHECK_REPLY_CLAIM = """
SELECT 1 FROM smsworker.outbox WHERE id = %(id)s
"""

MARK_REPLY_SENT = """
UPDATE smsworker.outbox
SET status = 'sent', twilio_sid = %(twilio_sid)s, attempts = attempts + %(attempts)s,
    finished_at = now()
WHERE id = %(id)s
"""

MARK_REPLY_FAILED = """
UPDATE smsworker.outbox
SET status = 'failed', error_code = %(error_code)s, error_message = %(error_message)s,
    attempts = attempts + %(attempts)s, finished_at = now()
WHERE id = %(id)s
"""

# Put a reply back for later after a run of transient failures.
POSTPONE_REPLY = """
UPDATE smsworker.outbox
SET attempts = attempts + %(attempts)s, error_code = %(error_code)s,
    error_message = %(error_message)s,
    next_attempt_at = now() + make_interval(secs => %(delay_s)s)
WHERE id = %(id)s
"""

INSERT_INBOUND = """
INSERT INTO twilio.message (
    id, account_id, api_version, body, date_created, date_sent, date_updated,
    deleted, direction, error_code, error_message, "from", messaging_service_id,
    num_media, num_segments, price, price_unit, status, "to", uri
) VALUES (
    %(id)s, %(account_id)s, '2010-04-01', %(body)s, %(date_created)s,
    %(date_created)s, %(date_created)s, false, 'inbound', NULL, NULL, %(from)s,
    NULL, 0, %(num_segments)s, NULL, 'USD', 'received', %(to)s, %(uri)s
)
"""

# A message from Twilio's inbound-message webhook. The same message may
# arrive twice (a request sent again, or a syncer that stored it first): the
# second insert changes nothing. date_sent stays NULL until the sync lists
# the message with Twilio's own: the sync's deletion check compares it with
# the window it listed.
INSERT_WEBHOOK_MESSAGE = """
INSERT INTO twilio.message (
    id, account_id, api_version, body, date_created, date_sent, date_updated,
    deleted, direction, "from", messaging_service_id, num_media, num_segments,
    price_unit, status, "to", uri
) VALUES (
    %(id)s, %(account_id)s, %(api_version)s, %(body)s, %(date_created)s,
    NULL, %(date_created)s, false, 'inbound', %(from)s,
    %(messaging_service_id)s, %(num_media)s, %(num_segments)s, 'USD', 'received',
    %(to)s, %(uri)s
)
ON CONFLICT (id) DO NOTHING
"""

# --- smsworker sync ---------------------------------------------------------

# The sync's state for one account, created on its first start. Messages
# created before history_before are history (see 007_sync.sql).
ENSURE_SYNC_STATE = """
INSERT INTO smsworker.sync_state (account_sid, history_before)
VALUES (%(account)s, %(history_before)s)
ON CONFLICT (account_sid) DO NOTHING
"""

LOAD_SYNC_STATE = """
SELECT synced_from, synced_until, history_before, run_window_start, run_head, run_next_page,
    run_started_at
FROM smsworker.sync_state
WHERE account_sid = %(account)s
"""

START_SYNC_RUN = """
UPDATE smsworker.sync_state
SET run_window_start = %(window_start)s, run_head = NULL, run_next_page = NULL,
    run_started_at = now(), updated_at = now()
WHERE account_sid = %(account)s
"""

FORGET_SYNC_STAGED = """
DELETE FROM smsworker.sync_staged WHERE account_sid = %(account)s
"""

# Keep one page's rows until the run ends.
STAGE_SYNC_ROWS = """
INSERT INTO smsworker.sync_staged (account_sid, message_id, row)
SELECT %(account)s, r.row ->> 'id', r.row
FROM jsonb_array_elements(%(rows)s) AS r (row)
ON CONFLICT (account_sid, message_id) DO UPDATE SET row = excluded.row
"""

# Insert the messages a run listed that are new and update those that
# changed, in one statement. A stored row keeps its date_created: the worker orders
# by it, and a row from the webhook may have been handled already. A
# tombstone stays a tombstone. Returns one row per message written.
UPSERT_MESSAGES = """
INSERT INTO twilio.message AS m (
    id, account_id, api_version, body, date_created, date_sent, date_updated,
    deleted, direction, error_code, error_message, "from", messaging_service_id,
    num_media, num_segments, price, price_unit, status, "to", uri
)
SELECT
    r.id, r.account_id, r.api_version, r.body, r.date_created, r.date_sent,
    r.date_updated, false, r.direction, r.error_code, r.error_message, r."from",
    r.messaging_service_id, r.num_media, r.num_segments, r.price, r.price_unit,
    r.status, r."to", r.uri
FROM smsworker.sync_staged AS s
CROSS JOIN LATERAL jsonb_to_record(s.row) AS r (
    id text, account_id text, api_version text, body text,
    date_created timestamp, date_sent timestamp, date_updated timestamp,
    direction text, error_code integer, error_message text, "from" text,
    messaging_service_id text, num_media integer, num_segments integer,
    price numeric, price_unit text, status text, "to" text, uri text
)
WHERE s.account_sid = %(account)s
ON CONFLICT (id) DO UPDATE SET
    account_id = excluded.account_id,
    api_version = excluded.api_version,
    body = excluded.body,
    date_created = coalesce(m.date_created, excluded.date_created),
    date_sent = excluded.date_sent,
    date_updated = excluded.date_updated,
    direction = excluded.direction,
    error_code = excluded.error_code,
    error_message = excluded.error_message,
    "from" = excluded."from",
    messaging_service_id = excluded.messaging_service_id,
    num_media = excluded.num_media,
    num_segments = excluded.num_segments,
    price = excluded.price,
    price_unit = excluded.price_unit,
    status = excluded.status,
    "to" = excluded."to",
    uri = excluded.uri
WHERE m.deleted IS NOT TRUE
  AND (
      m.account_id, m.body, m.date_sent, m.direction, m.error_code, m.error_message,
      m."from", m.messaging_service_id, m.num_media, m.num_segments, m.price,
      m.price_unit, m.status, m."to"
  ) IS DISTINCT FROM (
      excluded.account_id, excluded.body, excluded.date_sent, excluded.direction,
      excluded.error_code, excluded.error_message, excluded."from",
      excluded.messaging_service_id, excluded.num_media, excluded.num_segments,
      excluded.price, excluded.price_unit, excluded.status, excluded."to"
  )
RETURNING m.id, m.direction, m.date_created, (m.xmax = 0) AS inserted
"""

# Record inbound messages created before the sync's history_before as
# handled history, in the transaction that inserts them: the worker skips
# them.
RECORD_SYNC_HISTORY = """
INSERT INTO smsworker.handled_message (message_id, date_created, command, outcome)
SELECT i.id, i.date_created, 'history', 'history'
FROM unnest(%(message_ids)s::text[], %(dates)s::timestamp[]) AS i (id, date_created)
ON CONFLICT (message_id) DO NOTHING
"""

# After a page that is not the last: remember where the run goes on.
ADVANCE_SYNC_RUN = """
UPDATE smsworker.sync_state
SET run_head = %(run_head)s, run_next_page = %(next_page)s, updated_at = now()
WHERE account_sid = %(account)s
"""

# Give up the page a run had reached, when Twilio rejects its URL. The next
# poll starts a new run and lists its window from the newest message again.
ABANDON_SYNC_RUN = """
UPDATE smsworker.sync_state
SET run_window_start = NULL, run_head = NULL, run_next_page = NULL, updated_at = now()
WHERE account_sid = %(account)s
"""

# At the end of a run: a stored message of the run's window that the run did
# not list was deleted at Twilio, and becomes a tombstone (only id and
# deleted = true). Messages of the newest seconds are left for the next run,
# which lists them again: a list read just after a message arrived may not
# show it yet.
TOMBSTONE_UNLISTED = """
UPDATE twilio.message AS m
SET account_id = NULL, api_version = NULL, body = NULL, date_created = NULL,
    date_sent = NULL, date_updated = NULL, deleted = true, direction = NULL,
    error_code = NULL, error_message = NULL, "from" = NULL,
    messaging_service_id = NULL, num_media = NULL, num_segments = NULL, price = NULL,
    price_unit = NULL, status = NULL, "to" = NULL, uri = NULL
WHERE m.account_id = %(account)s
  AND m.date_sent >= %(window_start)s
  AND m.date_sent < %(listed_until)s
  AND m.deleted IS NOT TRUE
  AND NOT EXISTS (
      SELECT 1 FROM smsworker.sync_staged AS s
      WHERE s.account_sid = %(account)s AND s.message_id = m.id
  )
"""

FINISH_SYNC_RUN = """
UPDATE smsworker.sync_state
SET synced_from = least(synced_from, run_window_start),
    synced_until = greatest(synced_until, %(run_head)s),
    run_window_start = NULL, run_head = NULL, run_next_page = NULL,
    run_started_at = NULL, last_success_at = now(), updated_at = now()
WHERE account_sid = %(account)s
"""

# One sync process per account is active: the one holding this session lock.
TRY_SYNC_ROLE = """
SELECT pg_try_advisory_lock(hashtextextended('smsworker.sync:' || %(account)s, 0))
"""

# --- Groups ------------------------------------------------------------------

# The group a phone number belongs to among those reached through one of our
# numbers.
GROUP_OF_MEMBER = """
SELECT g.id, g.name, g.our_number
FROM smsworker.group_member AS m
JOIN smsworker.list_group AS g ON g.id = m.group_id
WHERE m.our_number = %(our_number)s AND m.phone_number = %(phone_number)s
"""

# Add a member. Returns the group the number belongs to at that number of
# ours afterwards, which differs from the given group when the number was a
# member of another group there already.
ADD_MEMBER = """
WITH added AS (
    INSERT INTO smsworker.group_member (our_number, phone_number, group_id, invited_by)
    VALUES (%(our_number)s, %(phone_number)s, %(group_id)s, %(invited_by)s)
    ON CONFLICT (our_number, phone_number) DO NOTHING
    RETURNING group_id, true AS added
)
SELECT group_id, added FROM added
UNION ALL
SELECT group_id, false FROM smsworker.group_member
WHERE our_number = %(our_number)s AND phone_number = %(phone_number)s
  AND NOT EXISTS (SELECT 1 FROM added)
"""

REMOVE_MEMBER = """
DELETE FROM smsworker.group_member
WHERE group_id = %(group_id)s AND phone_number = %(phone_number)s
"""

# Members of a group, oldest first, locked so that two `leave` commands
# cannot both see another member left.
LOCK_MEMBERS = """
SELECT phone_number FROM smsworker.group_member
WHERE group_id = %(group_id)s
ORDER BY added_at, phone_number
FOR UPDATE
"""

DELETE_GROUP = """
DELETE FROM smsworker.list_group WHERE id = %(group_id)s
"""

CREATE_GROUP = """
INSERT INTO smsworker.list_group (name, our_number)
VALUES (%(name)s, %(our_number)s)
ON CONFLICT (our_number, name) DO NOTHING
RETURNING id
"""

# Groups for `smsworker groups list`, with their member and item counts.
LIST_GROUPS = """
SELECT g.id, g.name, g.our_number,
       (SELECT count(*) FROM smsworker.group_member AS m WHERE m.group_id = g.id),
       coalesce(s.item_count, 0)
FROM smsworker.list_group AS g
LEFT JOIN smsworker.list_size AS s ON s.name = smsworker.list_size_name(g.id)
ORDER BY g.our_number, g.name
"""

# A group by id (when the text is digits) or by name.
FIND_GROUPS = """
SELECT id, name, our_number FROM smsworker.list_group
WHERE CASE WHEN %(text)s ~ '^[0-9]+$' THEN id::text = %(text)s ELSE name = %(text)s END
ORDER BY id
"""

# Whether a number is a member of any group, at any number of ours.
IS_MEMBER = """
SELECT EXISTS (SELECT 1 FROM smsworker.group_member WHERE phone_number = %(number)s)
"""

# Whether a number is one of ours: one that reaches a group.
IS_OUR_NUMBER = """
SELECT EXISTS (SELECT 1 FROM smsworker.list_group WHERE our_number = %(number)s)
"""

# Record the private-list notice for a stranger at most once a day; returns
# a row only when the notice is due.
NOTE_STRANGER = """
INSERT INTO smsworker.stranger_notice AS s (our_number, phone_number, notified_on)
VALUES (%(our_number)s, %(phone_number)s, %(day)s)
ON CONFLICT (our_number, phone_number) DO UPDATE SET notified_on = excluded.notified_on
WHERE s.notified_on < excluded.notified_on
RETURNING 1
"""
