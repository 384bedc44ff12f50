"""
### ERP sandbox: import job

The **sandbox ERP's own** scheduled job, not an integration flow: it drains the inbound interface
tables (`erp_inbound.customer_in`, `sales_order_in` + lines, `demand_forecast_in`) the way a real
ERP's 中间表 import job would — validate, create the customer / sales order (reserving stock, turning
shortfalls into production or purchase demand), apply forecast versions — and marks each row
PROCESSED with the ERP document number or ERROR with a reason.

Against a real ERP this DAG is switched off: the ERP runs its own import job.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task
from bridge_flows.defaults import task_defaults


@dag(
    dag_id="erp_sandbox_import_job",
    schedule="* * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    tags=["sandbox", "erp"],
    doc_md=__doc__,
    default_args=task_defaults("erp-sandbox", 2, alerts=False),
)
def erp_sandbox_import_job():
    @task
    def process_inbound() -> dict:
        from include.sandbox.erp import db, importer

        with db.connect() as conn:
            return importer.process_inbound(conn)

    process_inbound()


erp_sandbox_import_job()
