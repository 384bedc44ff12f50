"""
### CRM watch subscription (stage 2, event trigger)

Daily: (re)subscribes the Zoho CRM watch channel (`zoho_crm`) for Sales_Orders and Quotes changes, so the
CRM notifies the bridge's receiver (`python -m include.bridge.crm_events serve`) within seconds and
`crm_orders_to_erp` starts at once instead of at its next 5-minute tick. Zoho channels expire after at most
a week; renewing daily keeps a missed run harmless.

Variable `crm_notify_url`: the receiver's address as the CRM can reach it (e.g.
`https://bridge.example.com/zoho/notifications`); unset → the task is skipped and the flows run on their
schedule only. Connection `crm_notify`: its password is the channel token the receiver checks.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task
from bridge_flows.defaults import task_defaults


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    tags=["stage-2", "crm-to-erp"],
    doc_md=__doc__,
    default_args=task_defaults("integration", 2),
)
def crm_watch_renewal():
    @task
    def renew() -> dict:
        from airflow.sdk import BaseHook, Variable
        from airflow.sdk.exceptions import AirflowSkipException

        from include.bridge.crm_events import subscribe
        from include.bridge.runtime import Systems

        url = Variable.get("crm_notify_url", default="")
        if not url:
            raise AirflowSkipException("Variable crm_notify_url is not set: the CRM flows run on their schedule only")
        token = BaseHook.get_connection("crm_notify").password
        with Systems() as systems:
            return subscribe(systems.crm(), url, token)

    renew()


crm_watch_renewal()
