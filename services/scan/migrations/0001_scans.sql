-- The scan log: one row per scan, written before anything else happens.
-- A row stays 'received' until applied; the relay re-drives received rows
-- whose lease (next_attempt_at) has passed.
CREATE TABLE scan.scans (
    scan_id          text PRIMARY KEY,              -- time-ordered: newest sorts last
    player_id        text NOT NULL,
    client_scan_id   text NOT NULL,
    hunt_id          text NOT NULL,
    tag_id           text NOT NULL,
    lat              double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon              double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    accuracy_m       double precision NOT NULL CHECK (accuracy_m >= 0),
    scanned_at       timestamptz NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    status           text NOT NULL DEFAULT 'received' CHECK (status IN ('received', 'applied')),
    outcome          text CHECK (outcome IN ('unlocked', 'already_unlocked', 'out_of_range', 'unknown_tag',
                                             'hunt_not_active', 'implausible_speed')),
    points_awarded   integer NOT NULL DEFAULT 0,
    total_points     bigint NOT NULL DEFAULT 0,
    checkpoint_id    text NOT NULL DEFAULT '',
    checkpoint_name  text NOT NULL DEFAULT '',
    first_finder     boolean NOT NULL DEFAULT false,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text NOT NULL DEFAULT '',
    applied_at       timestamptz,
    traceparent      text NOT NULL DEFAULT '',
    CONSTRAINT scans_player_client_scan UNIQUE (player_id, client_scan_id),
    CONSTRAINT scans_applied_has_outcome CHECK ((status = 'applied') = (outcome IS NOT NULL))
);

-- The relay's queue: only the rows still to apply.
CREATE INDEX scans_received ON scan.scans (next_attempt_at) WHERE status = 'received';
-- ListPlayerScans (newest first) and the previous position of a player.
CREATE INDEX scans_player ON scan.scans (player_id, scan_id DESC);
