-- Location retention (services/scan/purge.py): a scan's location is purged a
-- set time after its hunt ends. The hunt's end is recorded when the scan is
-- applied (geo's CheckIn answers with the hunt); it stays NULL when geo did not
-- know the tag or the hunt, and while the scan is still 'received'.
-- A purged row keeps everything but its location: lat, lon and accuracy_m are
-- NULL exactly when location_purged_at is set.
ALTER TABLE scan.scans
    ADD COLUMN hunt_ends_at timestamptz,
    ADD COLUMN location_purged_at timestamptz,
    ALTER COLUMN lat DROP NOT NULL,
    ALTER COLUMN lon DROP NOT NULL,
    ALTER COLUMN accuracy_m DROP NOT NULL,
    ADD CONSTRAINT scans_location_or_purged
        CHECK (num_nulls(lat, lon, accuracy_m) = CASE WHEN location_purged_at IS NULL THEN 0 ELSE 3 END);

-- The purge's queue: rows that still hold a location, by the time their
-- retention starts (the hunt's end, or the scan's time when the end is not
-- known). The purge query repeats this expression exactly.
CREATE INDEX scans_location_due ON scan.scans ((coalesce(hunt_ends_at, greatest(scanned_at, received_at))))
    WHERE location_purged_at IS NULL;
