"""The DAG of an ERP -> CRM mirror flow: extract -> validate (gate + plan) -> load chunks -> finish.

Every stage-1 flow has this shape; its DAG file only names the flow, its schedule, its assets and its docs.
The tasks look the flow up in the registry (include/flows) when they run, never at parse time; a Run crosses
the tasks as XCom (include/bridge/flow.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import pendulum
from airflow.sdk import DAG, Asset, Param, TaskGroup, task

from bridge_flows.defaults import task_defaults
from bridge_flows.rollout import ROLLOUT_PARAMS


def mirror_dag(dag_id: str, *, schedule, doc_md: str, tags: Sequence[str], outlets: Sequence[Asset] = (),
               parts: Sequence[str] | None = None, retries: int = 2) -> DAG:
    """One mirror flow (include/flows/<dag_id>.py), or several run in order as task groups (`parts`)."""
    with DAG(
        dag_id=dag_id,
        schedule=schedule,
        start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
        catchup=False,
        max_active_runs=1,
        tags=list(tags),
        doc_md=doc_md,
        params={"replay_quarantine": Param(False, type="boolean", description="re-submit this flow's quarantined "
                                                                               "records (after a fix at the source)"),
                **ROLLOUT_PARAMS},
        default_args=task_defaults("integration", retries),
    ) as dag:
        if not parts:
            mirror_tasks(dag_id, outlets)
        else:
            previous = None
            for n, flow in enumerate(parts):
                with TaskGroup(group_id=flow) as group:
                    mirror_tasks(flow, outlets if n == len(parts) - 1 else ())
                if previous is not None:
                    previous >> group
                previous = group
    return dag


def mirror_tasks(flow: str, outlets: Sequence[Asset]) -> None:
    """extract -> validate (gate + plan) -> load (one mapped task per chunk, in the zoho_crm pool) -> finish."""

    @task(trigger_rule="none_failed")  # a part switched off (skipped) does not stop the next part
    def extract(params: dict | None = None, dag_run=None, dag=None, data_interval_start=None,
                data_interval_end=None) -> dict:
        from bridge_flows.rollout import rollout_for
        from bridge_flows.runs import covered_interval
        from include.bridge.runtime import Systems

        plan = rollout_for(flow, params, dag_run.run_id)
        backfill = covered_interval(dag_run, dag, data_interval_start, data_interval_end)
        with Systems() as systems:
            return _flow(flow).extract(systems, dag_run.run_id, backfill, bool(params["replay_quarantine"]),
                                       plan=plan).to_xcom()

    @task(retries=0)
    def validate(run: dict) -> dict:
        from bridge_alerts.notifier import alert_sender

        from include.bridge.flow import Run
        from include.bridge.runtime import Systems

        with Systems() as systems:
            return _flow(flow).validate(systems, Run.from_xcom(run), alert_sender(systems.bridge())).to_xcom()

    @task
    def chunks(planned: dict) -> list[int]:
        return planned["facts"]["chunks"]

    @task(pool="zoho_crm")
    def load(run: dict, chunk_no: int) -> dict:
        from include.bridge.flow import Run
        from include.bridge.runtime import Systems

        with Systems() as systems:
            return _flow(flow).load(systems, Run.from_xcom(run), chunk_no)

    @task(outlets=list(outlets), trigger_rule="none_failed_min_one_success")
    def finish(run: dict, loads: list | None = None) -> dict:
        from bridge_alerts.notifier import alert_sender

        from include.bridge.flow import Run
        from include.bridge.runtime import Systems

        with Systems() as systems:
            return _flow(flow).finish(systems, Run.from_xcom(run), alert_sender(systems.bridge()))

    planned = validate(extract())
    loads = load.partial(run=planned).expand(chunk_no=chunks(planned))
    finish(planned, loads)


def _flow(flow: str):
    """The flow's MirrorFlow, from the registry (include/flows)."""
    from include.flows import flow as registered

    return registered(flow)
