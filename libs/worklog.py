"""Background work counted in Postgres: how often each task ran and how many
units of work it did, per process (`<schema>.background_work`).

The count is part of the statement that does the work (a data-modifying
CTE), so it commits or rolls back with it: two replicas that did one unit
twice would count it twice. That is how the tests (and operators) see that
the re-drive, the outbox delivery, the location purge and the tile refresh
each do a unit once across replicas.

    WITH work AS (UPDATE ... RETURNING ...), {counted(...)} SELECT * FROM work

A worker is this process: its host name (a pod's name on Kubernetes) and pid.
"""

from __future__ import annotations

import os
import socket

#: This process, as it appears in the `worker` column.
WORKER = f"{socket.gethostname()}:{os.getpid()}"


def counted(schema: str, rows: str, task_param: str, worker_param: str) -> str:
    """A CTE (`counted AS (...)`) adding one run and one unit per row of the
    CTE `rows` to (task, worker), given as query parameters such as "$3";
    nothing when `rows` is empty."""
    return f"""counted AS (
    INSERT INTO {schema}.background_work AS w (task, worker, runs, units)
    SELECT {task_param}, {worker_param}, 1, count(*) FROM {rows} HAVING count(*) > 0
    ON CONFLICT (task, worker) DO UPDATE
    SET runs = w.runs + 1, units = w.units + EXCLUDED.units, last_run_at = now())"""
