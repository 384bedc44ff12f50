"""What a flow's first task settles with Airflow before it opens its run: the ledger rows that earlier runs left
`running` (killed tasks, runs marked failed by hand), and the interval a backfill run covers.

Airflow-side on purpose: only Airflow knows whether a run is still running and what its schedule slot is; the
bookkeeping itself is include/bridge/engine.py.
"""

from __future__ import annotations

import datetime as dt
import logging

log = logging.getLogger(__name__)

RUNNING_STATES = ("queued", "running")


def sweep_ledger(flow: str, current_run_id: str, dag_id: str | None = None) -> list[str]:
    """Close this flow's ledger rows whose Airflow run is no longer running (the failure callback closes the rows
    of a task that failed; a killed task or a run marked failed by hand never calls it). Never fails the task:
    a sweep that cannot ask Airflow leaves the rows for the next one."""
    from include.bridge import db, engine
    from include.bridge.runtime import Systems

    if dag_id is None:
        from airflow.sdk import get_current_context

        dag_id = get_current_context()["dag"].dag_id

    def is_running(run_id: str | None) -> bool | None:
        if not run_id:
            return None
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        try:
            return str(RuntimeTaskInstance.get_dagrun_state(dag_id, run_id)).lower() in RUNNING_STATES
        except Exception as exc:  # the API cannot say (run deleted, API away): leave the row open
            log.info("ledger sweep: cannot read the state of run %s of %s (%s)", run_id, dag_id, exc)
            return None

    with Systems() as systems:
        db.ensure_schema(systems.bridge())
        closed = engine.sweep_abandoned(systems.bridge(), flow, is_running, keep_run_id=current_run_id)
    if closed:
        log.warning("ledger sweep: %d row(s) of %s left running by runs that ended were closed as failed: %s",
                    len(closed), flow, ", ".join(closed))
    return closed


def covered_interval(dag_run, dag, start: dt.datetime | None, end: dt.datetime | None):
    """(start, end) a backfill run re-reads, or None for any other run. Its data interval when it has width; a
    cron schedule (CronTriggerTimetable) gives zero-width intervals, and then it is the schedule slot ending at the
    run's tick — from the previous tick to this one — so consecutive backfill runs cover their range without gaps."""
    if dag_run.run_type != "backfill":
        return None
    if start is not None and end is not None and start < end:
        return start, end
    end = end or dag_run.logical_date
    return previous_tick(dag.timetable, end), end


def previous_tick(timetable, at: dt.datetime) -> dt.datetime:
    """The schedule's tick before `at` (the cron part of an asset-or-time schedule)."""
    import pendulum
    from croniter import croniter

    cron = getattr(timetable, "timetable", timetable)  # AssetOrTimeSchedule wraps the cron timetable
    expression, tz = getattr(cron, "expression", None), getattr(cron, "timezone", None) or "UTC"
    if not isinstance(expression, str):
        raise ValueError(f"backfill: cannot tell the schedule slot of a {type(cron).__name__} run ending {at}; "
                         "give the backfill a schedule with data intervals")
    local = pendulum.instance(at).in_timezone(pendulum.timezone(str(tz)) if isinstance(tz, str) else tz)
    return pendulum.instance(croniter(expression, local).get_prev(dt.datetime)).in_timezone("UTC")
