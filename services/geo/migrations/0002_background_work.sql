-- Background work done, by task and by the process that did it
-- (libs/worklog.py): counted in the statement that does the work, so the
-- counts say exactly how often each unit was done and by whom, across
-- replicas. One row per (task, worker); a restarted process is a new worker.
CREATE TABLE geo.background_work (
    task         text COLLATE "C" NOT NULL,
    worker       text COLLATE "C" NOT NULL,
    runs         bigint NOT NULL,
    units        bigint NOT NULL,
    first_run_at timestamptz NOT NULL DEFAULT now(),
    last_run_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task, worker)
);
