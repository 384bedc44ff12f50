"""
### CRM accounts → ERP customers, ERP customer code back (stage 2)

Every 15 minutes: CRM Accounts marked **ERP_Sync_Ready** that no ERP customer is linked to yet go through
master-data matching first — an account that already is an ERP customer (same code, credit code or a confident
name match) is linked, not created again; a doubtful one waits on the review list (`bridge.match_review`).
The rest pass the gate `expectations/crm_customers_to_erp.json` (name present, valid unified social credit
code, known currency) and are sent once to the ERP inbound table `erp_inbound.customer_in` (`erp_write`,
idempotency key = account id + content). The ERP customer code comes back into the account's Account_Number
and the link into `bridge.id_map`. The CRM is master for the customer profile, the ERP for the code.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, Param, dag, task
from bridge_flows.defaults import task_defaults
from bridge_flows.rollout import ROLLOUT_PARAMS


@dag(
    schedule="*/15 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    tags=["stage-2", "crm-to-erp"],
    doc_md=__doc__,
    params={"wait_for_erp_seconds": Param(30, type="integer", minimum=0, description="wait for the ERP's answer"),
            **ROLLOUT_PARAMS},
    default_args=task_defaults("integration", 2),
)
def crm_customers_to_erp():
    @task(outlets=[Asset("bridge://crm_customers_to_erp")])
    def sync(params: dict | None = None, dag_run=None) -> dict:
        from bridge_alerts.notifier import alert_sender
        from bridge_flows.rollout import rollout_for

        from include.bridge.runtime import Systems
        from include.flows.crm_customers_to_erp import CUSTOMERS

        plan = rollout_for(CUSTOMERS.name, params, dag_run.run_id)
        with Systems() as systems:
            return CUSTOMERS.run(systems, dag_run.run_id, wait_seconds=int(params["wait_for_erp_seconds"]), plan=plan,
                            send_alert=alert_sender(systems.bridge()))

    sync()


crm_customers_to_erp()
