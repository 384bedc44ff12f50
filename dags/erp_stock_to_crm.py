"""
### ERP stock → CRM Products (stage 1)

Every 15 minutes: reads the ERP stock availability (`erp_api.stock_availability`, through the read-only
`erp_read` connection) for every SKU that changed since the last run, validates the batch with the Great
Expectations suite `expectations/erp_stock_to_crm.json`, quarantines bad rows with the reason, and updates
the CRM product (`zoho_crm`): Qty_in_Stock, Available_Qty, Reserved_Qty, Incoming_Qty, Projected_14d (never
beyond 14 days), First_Shortage_Date, Below_Safety_Stock, per-warehouse detail, Stock_Synced_At — only for
products whose figures changed. Products falling below safety stock raise one alert per run.

Run ledger, quarantine and audit: schema `bridge` of `bridge_db`. Param `replay_quarantine` re-reads the
quarantined SKUs and marks them replayed once they load. Backfill (`airflow backfill create`) re-reads the
SKUs changed in the given interval without moving the watermark.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, Param, dag, task
from bridge_alerts.notifier import BridgeFailureNotifier

STOCK_ASSET = Asset("bridge://erp_stock_to_crm")
ALERTS = {"email_to": "{{ var.value.get('bridge_alert_email', '') }}", "im_conn_ids": ["im_webhook"]}


@dag(
    dag_id="erp_stock_to_crm",
    schedule="*/15 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    tags=["stage-1", "erp-to-crm"],
    doc_md=__doc__,
    params={"replay_quarantine": Param(False, type="boolean", description="re-submit quarantined SKUs")},
    # retry delay: Airflow's [core] default_task_retry_delay (300 s unless configured)
    default_args={"owner": "integration", "retries": 2, "on_failure_callback": BridgeFailureNotifier(**ALERTS)},
)
def erp_stock_to_crm():
    @task
    def extract(params: dict | None = None, dag_run=None, data_interval_start=None, data_interval_end=None) -> dict:
        from include.bridge.runtime import Systems
        from include.flows import erp_stock_to_crm as flow

        backfill = (data_interval_start, data_interval_end) if dag_run.run_type == "backfill" else None
        with Systems() as systems:
            return flow.run_extract(systems, dag_run.run_id, backfill, bool(params["replay_quarantine"]))

    @task(retries=0)
    def validate(info: dict) -> dict:
        from bridge_alerts.notifier import alert_sender

        from include.bridge.runtime import Systems
        from include.flows import erp_stock_to_crm as flow

        with Systems() as systems:
            return flow.run_validate(systems, info, alert_sender(systems.bridge()))

    @task
    def chunks(planned: dict) -> list[int]:
        return planned["chunks"]

    @task(pool="zoho_crm")
    def load(info: dict, chunk_no: int) -> dict:
        from include.bridge.runtime import Systems
        from include.flows import erp_stock_to_crm as flow

        with Systems() as systems:
            return flow.run_load(systems, info, chunk_no)

    @task(outlets=[STOCK_ASSET], trigger_rule="none_failed")
    def finish(info: dict, loads: list | None = None) -> dict:
        from bridge_alerts.notifier import alert_sender

        from include.bridge.runtime import Systems
        from include.flows import erp_stock_to_crm as flow

        with Systems() as systems:
            return flow.run_finish(systems, info, alert_sender(systems.bridge()))

    info = extract()
    planned = validate(info)
    loads = load.partial(info=planned).expand(chunk_no=chunks(planned))
    finish(planned, loads)


erp_stock_to_crm()
