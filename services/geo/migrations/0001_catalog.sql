-- The geo catalog (hunts, checkpoints), map tiles and the tile view.
-- Applied by libs.pg.migrate in one transaction with search_path = geo.

-- Every catalog write takes a number from this sequence: cached copies carry it,
-- and a copy never replaces a newer one (hunts.version, checkpoints.version,
-- hunts.cp_version for the hunt's set of checkpoints).
CREATE SEQUENCE geo.catalog_version;

CREATE TABLE geo.hunts (
    hunt_id      text PRIMARY KEY,
    name         text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz NOT NULL,
    status       text NOT NULL CHECK (status IN ('draft', 'published', 'cancelled')),
    origin_lat   double precision NOT NULL CHECK (origin_lat BETWEEN -90 AND 90),
    origin_lon   double precision NOT NULL CHECK (origin_lon BETWEEN -180 AND 180),
    tile_size_m  double precision NOT NULL CHECK (tile_size_m BETWEEN 10 AND 10000),
    grid_columns integer NOT NULL CHECK (grid_columns BETWEEN 1 AND 1000),
    grid_rows    integer NOT NULL CHECK (grid_rows BETWEEN 1 AND 1000),
    version      bigint NOT NULL,
    -- Bumped by every write to one of the hunt's checkpoints (the geo set's version).
    cp_version   bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT hunts_window CHECK (ends_at > starts_at)
);

CREATE TABLE geo.checkpoints (
    hunt_id            text NOT NULL REFERENCES geo.hunts (hunt_id),
    checkpoint_id      text NOT NULL,
    tag_id             text NOT NULL,
    name               text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    lat                double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon                double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    radius_m           double precision NOT NULL CHECK (radius_m BETWEEN 1 AND 1000),
    points             integer NOT NULL CHECK (points >= 0),
    first_finder_bonus integer NOT NULL CHECK (first_finder_bonus >= 0),
    active             boolean NOT NULL DEFAULT true,
    version            bigint NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (hunt_id, checkpoint_id),
    -- Tag ids are unique across all hunts (CheckIn resolves a tag by itself).
    CONSTRAINT checkpoints_tag_id_key UNIQUE (tag_id)
);

-- Map tiles from the content system, hash-partitioned by hunt.
CREATE TABLE geo.hunt_tiles (
    hunt_id      text NOT NULL REFERENCES geo.hunts (hunt_id),
    x            integer NOT NULL CHECK (x >= 0),
    y            integer NOT NULL CHECK (y >= 0),
    version      bigint NOT NULL CHECK (version >= 1),
    content_type text NOT NULL,
    data         bytea NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (hunt_id, x, y)
) PARTITION BY HASH (hunt_id);

CREATE TABLE geo.hunt_tiles_p0 PARTITION OF geo.hunt_tiles FOR VALUES WITH (MODULUS 8, REMAINDER 0);
CREATE TABLE geo.hunt_tiles_p1 PARTITION OF geo.hunt_tiles FOR VALUES WITH (MODULUS 8, REMAINDER 1);
CREATE TABLE geo.hunt_tiles_p2 PARTITION OF geo.hunt_tiles FOR VALUES WITH (MODULUS 8, REMAINDER 2);
CREATE TABLE geo.hunt_tiles_p3 PARTITION OF geo.hunt_tiles FOR VALUES WITH (MODULUS 8, REMAINDER 3);
CREATE TABLE geo.hunt_tiles_p4 PARTITION OF geo.hunt_tiles FOR VALUES WITH (MODULUS 8, REMAINDER 4);
CREATE TABLE geo.hunt_tiles_p5 PARTITION OF geo.hunt_tiles FOR VALUES WITH (MODULUS 8, REMAINDER 5);
CREATE TABLE geo.hunt_tiles_p6 PARTITION OF geo.hunt_tiles FOR VALUES WITH (MODULUS 8, REMAINDER 6);
CREATE TABLE geo.hunt_tiles_p7 PARTITION OF geo.hunt_tiles FOR VALUES WITH (MODULUS 8, REMAINDER 7);

-- What GetTile reads: refreshed CONCURRENTLY (needs the unique index) so reads
-- never wait for a refresh.
CREATE MATERIALIZED VIEW geo.hunt_tile_mv AS
    SELECT hunt_id, x, y, version, content_type, data FROM geo.hunt_tiles;

CREATE UNIQUE INDEX hunt_tile_mv_key ON geo.hunt_tile_mv (hunt_id, x, y);

-- When each view was last refreshed, so every replica reports the same time.
CREATE TABLE geo.tile_refreshes (
    view_name    text PRIMARY KEY,
    refreshed_at timestamptz NOT NULL
);

INSERT INTO geo.tile_refreshes (view_name, refreshed_at) VALUES ('hunt_tile_mv', now());
