-- The score schema: unlocks, first finds, totals per (hunt, player) and the
-- outbox to the leaderboard, plus score.unlock(), the whole Unlock in one call.
-- Ids use the "C" collation: byte order (StreamScores is ordered by player_id)
-- and cheaper comparisons.

CREATE TABLE score.player_scores (
    hunt_id    text COLLATE "C" NOT NULL,
    player_id  text COLLATE "C" NOT NULL,
    total      bigint NOT NULL,
    found      integer NOT NULL,
    -- When the player reached `total` (the latest `at` of a scoring unlock).
    reached_at timestamptz NOT NULL,
    -- +1 with every new unlock; the hot tier and the leaderboard keep the newest.
    version    bigint NOT NULL,
    PRIMARY KEY (hunt_id, player_id)
) WITH (fillfactor = 80);

CREATE TABLE score.unlocks (
    hunt_id        text COLLATE "C" NOT NULL,
    player_id      text COLLATE "C" NOT NULL,
    checkpoint_id  text COLLATE "C" NOT NULL,
    scan_id        text COLLATE "C" NOT NULL,
    unlocked_at    timestamptz NOT NULL,
    points_awarded integer NOT NULL,
    first_finder   boolean NOT NULL,
    -- The player's score right after this unlock: a repeated scan_id gets the
    -- first answer back.
    total_after    bigint NOT NULL,
    found_after    integer NOT NULL,
    reached_after  timestamptz NOT NULL,
    version_after  bigint NOT NULL,
    PRIMARY KEY (hunt_id, player_id, checkpoint_id),
    CONSTRAINT unlocks_scan_id_key UNIQUE (scan_id)
) WITH (fillfactor = 80);

CREATE TABLE score.first_finds (
    hunt_id       text COLLATE "C" NOT NULL,
    checkpoint_id text COLLATE "C" NOT NULL,
    player_id     text COLLATE "C" NOT NULL,
    scan_id       text COLLATE "C" NOT NULL,
    found_at      timestamptz NOT NULL,
    PRIMARY KEY (hunt_id, checkpoint_id)
);

-- Totals waiting for the leaderboard; deleted once it acknowledged them.
-- Insert/delete churn: vacuum early so relay scans stay short.
CREATE TABLE score.outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hunt_id     text COLLATE "C" NOT NULL,
    player_id   text COLLATE "C" NOT NULL,
    total       bigint NOT NULL,
    reached_at  timestamptz NOT NULL,
    version     bigint NOT NULL,
    -- W3C trace context of the Unlock that wrote the row.
    traceparent text NOT NULL DEFAULT '',
    tracestate  text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
) WITH (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 5000);

-- One Unlock, one round trip. Returns one row:
--   o_kind 1 = unlocked now, 2 = the same scan_id again (the first answer),
--          3 = the player had unlocked the checkpoint with another scan;
--   the points and first-finder flag of this unlock (0/false for 3), and the
--   player's score after it.
-- A scan_id already used for another (hunt, player, checkpoint) raises SC001.
-- Locks are taken in one order (unlock row, first find, player total), so
-- concurrent unlocks never deadlock; racing copies wait on the unique indexes.
CREATE FUNCTION score.unlock(
    p_scan_id text, p_hunt_id text, p_player_id text, p_checkpoint_id text,
    p_points integer, p_bonus integer, p_at timestamptz,
    p_traceparent text, p_tracestate text)
RETURNS TABLE (
    o_kind smallint, o_points integer, o_first_finder boolean, o_total bigint,
    o_found integer, o_reached_at timestamptz, o_version bigint, o_unlock_scan_id text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_first   boolean;
    v_awarded integer;
    v_total   bigint;
    v_found   integer;
    v_reached timestamptz;
    v_version bigint;
    r         record;
BEGIN
    INSERT INTO score.unlocks AS u (
        hunt_id, player_id, checkpoint_id, scan_id, unlocked_at, points_awarded,
        first_finder, total_after, found_after, reached_after, version_after)
    VALUES (p_hunt_id, p_player_id, p_checkpoint_id, p_scan_id, p_at, 0, false, 0, 0, p_at, 0)
    ON CONFLICT DO NOTHING;

    IF NOT FOUND THEN
        SELECT u.hunt_id, u.player_id, u.checkpoint_id, u.points_awarded, u.first_finder,
               u.total_after, u.found_after, u.reached_after, u.version_after
          INTO r FROM score.unlocks u WHERE u.scan_id = p_scan_id;
        IF FOUND THEN
            IF r.hunt_id <> p_hunt_id OR r.player_id <> p_player_id
               OR r.checkpoint_id <> p_checkpoint_id THEN
                RAISE EXCEPTION 'scan_id % already unlocked another checkpoint', p_scan_id
                    USING ERRCODE = 'SC001';
            END IF;
            RETURN QUERY SELECT 2::smallint, r.points_awarded, r.first_finder, r.total_after,
                r.found_after, r.reached_after, r.version_after, p_scan_id;
            RETURN;
        END IF;
        RETURN QUERY
            SELECT 3::smallint, 0, false, s.total, s.found, s.reached_at, s.version, u.scan_id
              FROM score.unlocks u
              JOIN score.player_scores s USING (hunt_id, player_id)
             WHERE u.hunt_id = p_hunt_id AND u.player_id = p_player_id
               AND u.checkpoint_id = p_checkpoint_id;
        IF NOT FOUND THEN  -- the conflicting row went away: the caller retries
            RAISE EXCEPTION 'unlock of % raced a delete', p_scan_id USING ERRCODE = '40001';
        END IF;
        RETURN;
    END IF;

    INSERT INTO score.first_finds (hunt_id, checkpoint_id, player_id, scan_id, found_at)
    VALUES (p_hunt_id, p_checkpoint_id, p_player_id, p_scan_id, p_at)
    ON CONFLICT DO NOTHING;
    v_first := FOUND;
    v_awarded := p_points + CASE WHEN v_first THEN p_bonus ELSE 0 END;

    INSERT INTO score.player_scores AS s (hunt_id, player_id, total, found, reached_at, version)
    VALUES (p_hunt_id, p_player_id, v_awarded, 1, p_at, 1)
    ON CONFLICT (hunt_id, player_id) DO UPDATE
       SET total = s.total + EXCLUDED.total,
           found = s.found + 1,
           reached_at = CASE WHEN EXCLUDED.total > 0
                             THEN GREATEST(s.reached_at, EXCLUDED.reached_at)
                             ELSE s.reached_at END,
           version = s.version + 1
    RETURNING s.total, s.found, s.reached_at, s.version
         INTO v_total, v_found, v_reached, v_version;

    UPDATE score.unlocks u
       SET points_awarded = v_awarded, first_finder = v_first, total_after = v_total,
           found_after = v_found, reached_after = v_reached, version_after = v_version
     WHERE u.hunt_id = p_hunt_id AND u.player_id = p_player_id
       AND u.checkpoint_id = p_checkpoint_id;

    INSERT INTO score.outbox (hunt_id, player_id, total, reached_at, version, traceparent, tracestate)
    VALUES (p_hunt_id, p_player_id, v_total, v_reached, v_version,
            coalesce(p_traceparent, ''), coalesce(p_tracestate, ''));

    RETURN QUERY SELECT 1::smallint, v_awarded, v_first, v_total, v_found, v_reached,
        v_version, p_scan_id;
END;
$$;
