"""
### CRM pipeline → ERP demand forecast (stage 3)

After the stage-1 master data and the stage-2 orders are fresh (Assets `bridge://master_data_match` and
`bridge://crm_orders_to_erp`), and at 06:00 daily as a safety net: every open CRM Deal (`zoho_crm`) with its
products (Deal_Items, else its latest quote) weighted by its probability, bucketed by product × sales region ×
month over the horizon (param `horizon_months`, default 6, from the first of this month), plus the confirmed
CRM orders the ERP holds and has not shipped yet — sent to the ERP inbound forecast (`erp_write`) as one new
version that replaces the previous one for the horizon as a whole. The ERP plans production and purchasing from it.

Gates: `expectations/crm_forecast_to_erp.json` on the deal lines (probability 0–100, closing date inside the
horizon, known products, quantity > 0 — a bad deal is quarantined and shows why in its Integration_Message) and
`crm_forecast_to_erp.totals.json` on the buckets (they add up to the deals exactly). An unchanged pipeline sends
nothing. Backfill runs validate but do not send (a forecast is a snapshot of today's pipeline).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from bridge_flows.defaults import task_defaults
from bridge_flows.rollout import ROLLOUT_PARAMS

TZ = "Asia/Shanghai"


@dag(
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 6 * * *", timezone=TZ),
                                 assets=Asset("bridge://master_data_match") & Asset("bridge://crm_orders_to_erp")),
    start_date=pendulum.datetime(2026, 1, 1, tz=TZ),
    catchup=False,
    max_active_runs=1,
    tags=["stage-3", "crm-to-erp"],
    doc_md=__doc__,
    params={"horizon_months": Param(6, type="integer", minimum=1, maximum=24, description="months forecast"),
            "wait_for_erp_seconds": Param(30, type="integer", minimum=0, description="wait for the ERP's answer"),
            "send_chunk_rows": Param(5000, type="integer", minimum=1, description="forecast rows per ERP commit"),
            **ROLLOUT_PARAMS},
    default_args=task_defaults("integration", 2),
)
def crm_forecast_to_erp():
    @task
    def extract(params: dict | None = None, dag_run=None) -> dict:
        from bridge_flows.rollout import rollout_for

        from include.bridge.runtime import Systems
        from include.flows.crm_forecast_to_erp import FORECAST

        plan = rollout_for(FORECAST.name, params, dag_run.run_id)
        as_of = pendulum.instance(dag_run.run_after).in_timezone(TZ).date()
        with Systems() as systems:
            return FORECAST.extract(systems, dag_run.run_id, as_of, dag_run.run_type == "backfill",
                                    int(params["horizon_months"]), plan).to_xcom()

    @task(retries=0)
    def validate(run: dict) -> dict:
        from bridge_alerts.notifier import alert_sender

        from include.bridge.flow import Run
        from include.bridge.runtime import Systems
        from include.flows.crm_forecast_to_erp import FORECAST

        with Systems() as systems:
            return FORECAST.validate(systems, Run.from_xcom(run), alert_sender(systems.bridge())).to_xcom()

    @task
    def send(run: dict, params: dict | None = None) -> dict:
        from include.bridge.flow import Run
        from include.bridge.runtime import Systems
        from include.flows.crm_forecast_to_erp import FORECAST

        with Systems() as systems:
            return FORECAST.send(systems, Run.from_xcom(run), int(params["send_chunk_rows"])).to_xcom()

    @task(pool="zoho_crm", outlets=[Asset("bridge://crm_forecast_to_erp")])
    def record(run: dict, params: dict | None = None) -> dict:
        from bridge_alerts.notifier import alert_sender

        from include.bridge.flow import Run
        from include.bridge.runtime import Systems
        from include.flows.crm_forecast_to_erp import FORECAST

        with Systems() as systems:
            return FORECAST.record(systems, Run.from_xcom(run), alert_sender(systems.bridge()),
                                   wait_seconds=int(params["wait_for_erp_seconds"]))

    record(send(validate(extract())))


crm_forecast_to_erp()
