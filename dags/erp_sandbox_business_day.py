"""
### ERP sandbox: business day

Advances the **sandbox ERP** by one business day: purchase receipts, production progress (with some
slips), new orders, stock allocation, shipments, invoices, payments, overdue items, replenishment and
a few price changes — so the integration's incremental flows always have real changes to pick up.
Param `days` simulates several days in one run; `mo_slip_rate` makes production slip more (or less) for those
days (a bad week in the factory). Not used against a real ERP.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task
from bridge_flows.defaults import task_defaults


@dag(
    dag_id="erp_sandbox_business_day",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    tags=["sandbox", "erp"],
    doc_md=__doc__,
    params={"days": Param(1, type="integer", minimum=1, maximum=365, description="business days to simulate"),
            "mo_slip_rate": Param(None, type=["null", "number"], minimum=0, maximum=1,
                                  description="share of production orders due that slip (default: the ERP's)")},
    default_args=task_defaults("erp-sandbox", 0, alerts=False),
)
def erp_sandbox_business_day():
    @task
    def process_inbound() -> dict:
        from include.sandbox.erp import db, importer

        with db.connect() as conn:
            return importer.process_inbound(conn)

    @task
    def simulate(params: dict | None = None) -> list[dict]:
        from include.sandbox.erp import db, simulator

        with db.connect() as conn:
            rate = params.get("mo_slip_rate")
            return simulator.simulate(conn, int(params["days"]), mo_slip_rate=None if rate is None else float(rate))

    process_inbound() >> simulate()


erp_sandbox_business_day()
