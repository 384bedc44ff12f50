"""
### Reconciliation: CRM ⇄ ERP differences (operations)

Daily at 07:00, after the night's syncs: a snapshot of both systems (`zoho_crm`; `erp_read`) is compared in the
bridge DB — stock figures of every linked product, credit figures of every linked customer, order status (the CRM
says shipped, the ERP says not), orders in one system missing from the other, duplicate customers on either side.
Each difference names its **system of record** and the **flow that should correct it**; nothing is fixed silently.

Output: `bridge.reconciliation_difference` and `bridge.reconciliation_run`, and an HTML report with charts (by kind,
trend over recent days) under `$BRIDGE_REPORTS_DIR/reconciliation/` (`latest.html`). One alert when the differences
exceed `alert_threshold` (param, default from `include/mappings/reconcile_crm_erp.yaml`: 25). Param
`order_grace_minutes`: orders changed more recently than this are still on their way and not counted (default 60).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, Param, dag, task
from bridge_flows.defaults import task_defaults

TZ = "Asia/Shanghai"


@dag(
    schedule="0 7 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz=TZ),
    catchup=False,
    max_active_runs=1,
    tags=["operations", "reconciliation"],
    doc_md=__doc__,
    params={"order_grace_minutes": Param(None, type=["null", "integer"], minimum=0,
                                         description="orders changed more recently are not counted missing"),
            "alert_threshold": Param(None, type=["null", "integer"], minimum=0,
                                     description="alert above this many differences (default: the mapping's)")},
    default_args=task_defaults("operations", 1),
)
def reconcile_crm_erp():
    @task
    def snapshot(dag_run=None) -> dict:
        from include.bridge.runtime import Systems
        from include.flows.reconcile_crm_erp import RECONCILIATION

        run_date = pendulum.instance(dag_run.run_after).in_timezone(TZ).date()
        with Systems() as systems:
            return RECONCILIATION.snapshot(systems, dag_run.run_id, run_date).to_xcom()

    @task(outlets=[Asset("bridge://reconcile_crm_erp")])
    def compare(run: dict, params: dict | None = None) -> dict:
        from bridge_alerts.notifier import alert_sender

        from include.bridge.flow import Run
        from include.bridge.runtime import Systems
        from include.flows.reconcile_crm_erp import RECONCILIATION

        with Systems() as systems:
            return RECONCILIATION.compare(systems, Run.from_xcom(run), alert_sender(systems.bridge()),
                                          params["order_grace_minutes"], params["alert_threshold"])

    compare(snapshot())


reconcile_crm_erp()
