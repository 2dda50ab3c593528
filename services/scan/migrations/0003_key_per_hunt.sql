-- The idempotency key is scoped to one player in one hunt: a device that
-- numbers its scans per hunt reuses client_scan_id across hunts, and each
-- hunt's scan must be recorded. Every pair unique before is unique now.
--
-- Deploying it: stop every scan process of the old version before the first
-- new one starts (scan runs these migrations at start-up). Old processes insert
-- with ON CONFLICT (player_id, client_scan_id), which fails once that
-- constraint is gone. The new unique index is built, and the outcome check
-- re-validated, under an ACCESS EXCLUSIVE lock on scan.scans: scans wait for
-- the length of one index build (the runner applies each file in one
-- transaction, so CREATE INDEX CONCURRENTLY is not available to it).
ALTER TABLE scan.scans
    ADD CONSTRAINT scans_player_hunt_client_scan UNIQUE (player_id, hunt_id, client_scan_id);
ALTER TABLE scan.scans DROP CONSTRAINT scans_player_client_scan;

-- A scan for a hunt that does not exist is recorded with its own outcome.
ALTER TABLE scan.scans DROP CONSTRAINT scans_outcome_check;
ALTER TABLE scan.scans ADD CONSTRAINT scans_outcome_check
    CHECK (outcome IN ('unlocked', 'already_unlocked', 'out_of_range', 'unknown_tag',
                       'hunt_not_active', 'implausible_speed', 'unknown_hunt'));
