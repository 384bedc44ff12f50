"""Rollout controls in the DAGs: the params every flow DAG takes, and the check each run starts with.

The settings themselves (Variable `bridge_rollout`, precedence, what dry run and pilot mean) live in
include/bridge/rollout.py; this module only brings them into Airflow: Params for the trigger form, and a run
of a switched-off flow ends as *skipped* (one ledger row says why) instead of doing anything.
"""

from __future__ import annotations

from airflow.sdk import Param

ROLLOUT_PARAMS = {
    "dry_run": Param(None, type=["null", "boolean"],
                     description="validate and report what would be written, write nothing (default: bridge_rollout)"),
    "pilot_regions": Param([], type="array", description="pilot: only customers of these sales regions"),
    "pilot_customers": Param([], type="array", description="pilot: only these ERP customer codes"),
    "pilot_skus": Param([], type="array", description="pilot: only these SKUs (product flows)"),
}


def rollout_for(flow: str, params: dict | None, run_id: str):
    """The run's rollout (Variable bridge_rollout + params); raises AirflowSkipException when the flow is off.
    First the ledger rows earlier runs of the flow left `running` are swept (bridge_flows/runs.py)."""
    from airflow.sdk import Variable
    from airflow.sdk.exceptions import AirflowSkipException

    from bridge_flows.runs import sweep_ledger
    from include.bridge import engine, rollout
    from include.bridge.runtime import Systems

    sweep_ledger(flow, run_id)

    plan = rollout.resolve(flow, params, Variable.get("bridge_rollout", default=None))
    if not plan.enabled:
        with Systems() as systems:
            from include.bridge import db

            db.ensure_schema(systems.bridge())
            engine.skip_run(systems.bridge(), flow, run_id, "switched off in the Airflow Variable bridge_rollout")
        raise AirflowSkipException(f"{flow} is switched off (Variable bridge_rollout: enabled false)")
    preflight(flow)
    return plan


def preflight(flow: str) -> None:
    """The CRM org checked for what this flow needs of its fields, once a day (include/bridge/doctor.py); a problem
    fails the task at once with the table of changes (no retry: an admin has to change the org)."""
    from airflow.sdk.exceptions import AirflowFailException

    from include.bridge import doctor
    from include.bridge.runtime import Systems
    from include.flows import flow as registered

    with Systems() as systems:
        try:
            doctor.preflight(systems, flow, registered(flow).crm_fields())
        except doctor.PreflightFailed as exc:
            raise AirflowFailException(str(exc)) from None
