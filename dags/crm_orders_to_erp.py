"""
### CRM confirmed orders → ERP sales orders, ERP number back (stage 2)

Every 5 minutes, and within seconds of a CRM change notification (Asset `bridge://crm_order_events`, see
`crm_watch_renewal`): CRM Sales_Orders whose Status
became **Confirmed** and Quotes that became **Accepted** (connection `zoho_crm`) are validated by the gate
`expectations/crm_orders_to_erp.json` (known customer, known SKUs, qty > 0, allowed tax rate, line totals,
currency and rate), credit-checked on the ERP's latest figures (over available credit → "Credit Hold"; items
overdue beyond 60 days → only prepaid orders pass; Credit_Check = Approved releases the order when a credit
approver set it — a CRM user listed in the Variable `bridge_credit_approvers`, as the record's timeline shows),
and sent once to the ERP inbound tables (`erp_write`) with an
idempotency key derived from the CRM id and the order's content. A changed order already in the ERP goes as an
amendment, a cancelled one as a cancellation — never as a second order. The ERP order number, status, holds
and stock shortfalls come back to the CRM order (Integration_Message tells the salesperson).

Bad orders are quarantined with a reason the CRM order shows; the rest proceed. Param `wait_for_erp_seconds`:
how long write-back waits for the ERP's import job before leaving the answer to the next run.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, AssetOrTimeSchedule, AssetWatcher, CronTriggerTimetable, Param, dag, task
from bridge_flows.crm_events import CrmChangeEventTrigger
from bridge_flows.defaults import task_defaults
from bridge_flows.rollout import ROLLOUT_PARAMS

# CRM change notifications (crm_watch_renewal subscribes them) wake the flow within seconds; the 5-minute
# schedule stays as the safety net, so nothing depends on a notification arriving.
CRM_ORDER_EVENTS = Asset("bridge://crm_order_events", watchers=[
    AssetWatcher(name="crm_order_events", trigger=CrmChangeEventTrigger(bridge_conn_id="bridge_db"))])


@dag(
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("*/5 * * * *", timezone="Asia/Shanghai"),
                                 assets=CRM_ORDER_EVENTS),
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    tags=["stage-2", "crm-to-erp"],
    doc_md=__doc__,
    params={"replay_quarantine": Param(False, type="boolean", description="re-read every order (after fixes)"),
            "wait_for_erp_seconds": Param(30, type="integer", minimum=0, description="wait for the ERP's answer"),
            **ROLLOUT_PARAMS},
    default_args=task_defaults("integration", 2),
)
def crm_orders_to_erp():
    @task
    def extract(params: dict | None = None, dag_run=None, dag=None, data_interval_start=None,
                data_interval_end=None) -> dict:
        from bridge_flows.rollout import rollout_for
        from bridge_flows.runs import covered_interval

        from include.bridge.runtime import Systems
        from include.flows.crm_orders_to_erp import ORDERS

        plan = rollout_for(ORDERS.name, params, dag_run.run_id)
        backfill = covered_interval(dag_run, dag, data_interval_start, data_interval_end)
        with Systems() as systems:
            return ORDERS.extract(systems, dag_run.run_id, backfill, bool(params["replay_quarantine"]), plan).to_xcom()

    @task(retries=0)
    def validate(run: dict) -> dict:
        from bridge_alerts.notifier import alert_sender

        from include.bridge import approvals
        from include.bridge.flow import Run
        from include.bridge.runtime import Systems, variable
        from include.flows.crm_orders_to_erp import ORDERS

        approvers = approvals.parse_approvers(variable(approvals.VARIABLE))
        with Systems() as systems:
            return ORDERS.validate(systems, Run.from_xcom(run), alert_sender(systems.bridge()), approvers).to_xcom()

    @task(pool="zoho_crm")
    def send(run: dict) -> dict:
        from include.bridge.flow import Run
        from include.bridge.runtime import Systems
        from include.flows.crm_orders_to_erp import ORDERS

        with Systems() as systems:
            return ORDERS.send(systems, Run.from_xcom(run)).to_xcom()

    @task(pool="zoho_crm", outlets=[Asset("bridge://crm_orders_to_erp")])
    def write_back(run: dict, params: dict | None = None) -> dict:
        from include.bridge.flow import Run
        from include.bridge.runtime import Systems
        from include.flows.crm_orders_to_erp import ORDERS

        with Systems() as systems:
            return ORDERS.write_back(systems, Run.from_xcom(run), wait_seconds=int(params["wait_for_erp_seconds"]))

    write_back(send(validate(extract())))


crm_orders_to_erp()
