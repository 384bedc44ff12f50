"""Stage 3 through Airflow (dag.test) against both sandboxes: the CRM pipeline becomes one ERP forecast version
that the ERP plans from; a version is replaced atomically even when the send is SIGKILLed halfway; bad deals are
quarantined with reasons the deal shows; a production slip in the ERP simulator moves the CRM order's expected ship
date and alerts its owner exactly once (a real HTTP webhook receiver); capacity warnings reach the CRM products
with one alert per product."""

import datetime as dt
import json

import pytest

from include.sandbox.erp import importer, simulator
from tests.conftest import bridge_rows, kill_dag_run_when, linked_airflow_env, run_dag

pytestmark = pytest.mark.slow
FORECAST, PRODUCTION = "crm_forecast_to_erp", "erp_production_to_crm"
OWNER_IM_ID = "zhang.wei"


@pytest.fixture(scope="module")
def client(crm_demo):
    return crm_demo.client()


@pytest.fixture(scope="module")
def env(tmp_path_factory, erp, bridge, crm_demo, webhook):
    env = linked_airflow_env(tmp_path_factory.mktemp("airflow"), erp, bridge, crm_demo, **webhook.env(),
                             AIRFLOW_VAR_CRM_OWNER_IM_IDS=json.dumps({"integration@demo-company.cn": OWNER_IM_ID}))
    assert run_dag(env, "crm_orders_to_erp", wait_for_erp_seconds=0) == "success"
    importer.process_inbound(erp.admin)
    return env



def active_versions(erp) -> list[dict]:
    return erp.query("""SELECT v.version_no, v.batch_id, v.row_count, v.total_qty, v.production_orders_planned,
                               v.purchase_requests_raised, (SELECT count(*) FROM erp.demand_forecast f
                                                            WHERE f.version_no = v.version_no) AS rows_in
                        FROM erp.forecast_version v WHERE v.status = 'Active'""")


def test_the_pipeline_becomes_one_erp_forecast_version_that_the_erp_plans(env, erp, bridge, client):
    assert run_dag(env, FORECAST, wait_for_erp_seconds=0) == "success"
    [(erp_batch, row_count, total)] = bridge_rows(bridge, "SELECT erp_batch_id, row_count, total_qty "
                                                          "FROM bridge.forecast_version")
    assert erp.scalar("SELECT count(*) FROM erp_inbound.demand_forecast_in WHERE batch_id = %s", (erp_batch,)) \
        == row_count > 0
    importer.process_inbound(erp.admin)
    [version] = active_versions(erp)
    assert version["batch_id"] == erp_batch and version["rows_in"] == version["row_count"] == row_count
    assert version["total_qty"] == total  # the ERP holds exactly what the deals and orders add up to
    assert version["production_orders_planned"] > 0 and version["purchase_requests_raised"] > 0
    assert erp.scalar("SELECT count(*) FROM erp_api.production_schedule WHERE forecast_version = %s",
                      (version["version_no"],)) == version["production_orders_planned"]
    # the pipeline did not change: the next run records the ERP's answer and sends nothing
    assert run_dag(env, FORECAST, wait_for_erp_seconds=0) == "success"
    assert bridge_rows(bridge, "SELECT count(*), max(erp_version_no) FROM bridge.forecast_version") == \
        [(1, version["version_no"])]
    [(message,)] = bridge_rows(bridge, "SELECT message FROM bridge.run_ledger WHERE flow = %s "
                                       "ORDER BY started_at DESC LIMIT 1", (FORECAST,))
    assert message.startswith(f"forecast unchanged: ERP version {version['version_no']} stays active")


def test_bad_deals_are_quarantined_with_reasons_the_deal_shows(env, bridge, client):
    reasons = dict(bridge_rows(bridge, "SELECT business_key, reasons FROM bridge.quarantine "
                                       "WHERE flow = %s AND status = 'open'", (FORECAST,)))
    deals = {d["id"]: d for d in client.iter_records("Deals", ["Deal_Name", "Integration_Message"])}
    by_name = {deals[k]["Deal_Name"]: v for k, v in reasons.items()}
    assert by_name == {
        "坏数据: 概率 150": ["the probability must be between 0 and 100"],
        "坏数据: 过期的关闭日期": ["the closing date is missing or before the forecast horizon: update it or close "
                             "the deal"],
        "坏数据: CRM-only product": ["line 1: a product on the deal is not an ERP item (check its Product_Code)"],
        "坏数据: no products": ["the deal has no products (add Deal_Items or a quote)"]}
    for crm_id, why in reasons.items():
        assert deals[crm_id]["Integration_Message"].endswith("; ".join(why))
    # the deal whose products are on its quote is in the forecast
    quote_deal = next(k for k, d in deals.items() if d["Deal_Name"].startswith("备件框架协议"))
    assert bridge_rows(bridge, "SELECT DISTINCT item_source FROM bridge.stg_crm_forecast_to_erp WHERE deal_id = %s "
                               "AND gate_ok", (quote_deal,)) == [("quote",)]
    # fixed in the CRM: the next version takes the deal, its quarantine entry is replayed and the message cleared
    bad = next(k for k, d in deals.items() if d["Deal_Name"] == "坏数据: 概率 150")
    client.update("Deals", [{"id": bad, "Probability": 50}])
    assert run_dag(env, FORECAST, wait_for_erp_seconds=0) == "success"
    assert bridge_rows(bridge, "SELECT status FROM bridge.quarantine WHERE flow = %s AND business_key = %s",
                       (FORECAST, bad)) == [("replayed",)]
    assert client.get_record("Deals", bad)["Integration_Message"].startswith("In the ERP demand forecast")


def test_version_replacement_is_atomic_under_a_task_kill(env, erp, bridge, client):
    importer.process_inbound(erp.admin)  # the version of the previous test is active
    [old] = active_versions(erp)
    deal = next(d for d in client.iter_records("Deals", ["Deal_Name", "Probability"])
                if d["Deal_Name"].startswith("产线扩建项目 A"))
    client.update("Deals", [{"id": deal["id"], "Probability": 90}])  # a new forecast version is due
    # a slow ERP: every inbound forecast row takes 30 ms, so the kill lands between two committed chunks
    erp.query("""CREATE FUNCTION erp_inbound.slow_row() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN PERFORM pg_sleep(0.03); RETURN NEW; END $$;
                 CREATE TRIGGER slow_row BEFORE INSERT ON erp_inbound.demand_forecast_in
                 FOR EACH ROW EXECUTE FUNCTION erp_inbound.slow_row()""")
    when = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    last_id = erp.scalar("SELECT coalesce(max(id), 0) FROM erp_inbound.demand_forecast_in")
    new_rows = "SELECT count(*) FROM erp_inbound.demand_forecast_in WHERE id > %s"
    try:
        kill_dag_run_when(env, FORECAST, {"logical_date": when, "wait_for_erp_seconds": 0, "send_chunk_rows": 1},
                          lambda: erp.scalar(new_rows, (last_id,)) >= 5, "killed_forecast.txt")
    finally:
        erp.query("DROP TRIGGER slow_row ON erp_inbound.demand_forecast_in; DROP FUNCTION erp_inbound.slow_row()")
    [(erp_batch, row_count)] = bridge_rows(bridge, "SELECT erp_batch_id, row_count FROM bridge.forecast_version "
                                                   "WHERE sent_at IS NULL")
    arrived = erp.scalar("SELECT count(*) FROM erp_inbound.demand_forecast_in WHERE batch_id = %s", (erp_batch,))
    assert 0 < arrived < row_count, "the kill must land in the middle of the send"
    importer.process_inbound(erp.admin)  # the ERP's import job runs meanwhile: a half batch is not applied
    assert active_versions(erp) == [old]
    assert erp.scalar("SELECT count(*) FROM erp_inbound.demand_forecast_in WHERE batch_id = %s AND status = 'NEW'",
                      (erp_batch,)) == arrived
    # the run is cleared and runs again: the same keys, the rest of the rows, then one swap
    assert run_dag(env, FORECAST, logical_date=when, wait_for_erp_seconds=0) == "success"
    assert erp.scalar("SELECT count(*) FROM erp_inbound.demand_forecast_in WHERE batch_id = %s", (erp_batch,)) \
        == row_count
    importer.process_inbound(erp.admin)
    [new] = active_versions(erp)
    assert new["batch_id"] == erp_batch and new["rows_in"] == new["row_count"] == row_count
    assert erp.query("SELECT status FROM erp.forecast_version WHERE version_no = %s", (old["version_no"],)) == \
        [{"status": "Superseded"}]
    # the old plan was withdrawn where nothing had started, the new one made
    assert erp.scalar("SELECT count(*) FROM erp.production_order WHERE forecast_version = %s AND status = "
                      "'Not Started'", (old["version_no"],)) == 0
    assert new["production_orders_planned"] > 0


def test_capacity_warnings_reach_the_products_with_one_alert_each(env, erp, bridge, client, webhook):
    importer.process_inbound(erp.admin)
    webhook.calls.clear()
    assert run_dag(env, PRODUCTION) == "success"
    warned = {r["Product_Code"]: r["Capacity_Warning"] for r in client.iter_coql(
        "Products", ["Product_Code", "Capacity_Warning"], where="Capacity_Warning is not null")}
    assert warned and any("capacity" in w for w in warned.values())
    alerts = webhook.texts("capacity / material warning")
    assert len(alerts) == min(len(warned), 20) + (len(warned) > 20)
    webhook.calls.clear()
    assert run_dag(env, PRODUCTION) == "success"  # the same warnings: updated if needed, never alerted again
    assert not webhook.texts("capacity / material warning")


def test_a_production_slip_moves_the_ship_date_and_alerts_the_owner_once(env, erp, bridge, client, webhook):
    # a confirmed CRM order for more of a manufactured product than the ERP has: production is planned for it
    [(account,)] = bridge_rows(bridge, "SELECT crm_id FROM bridge.id_map WHERE entity = 'customer' "
                                       "ORDER BY erp_key LIMIT 1")
    made = {r["sku"] for r in erp.query("SELECT sku FROM erp.item WHERE is_manufactured")}
    product = next(p for p in client.iter_records("Products", ["Product_Code"]) if p["Product_Code"] in made)
    [created] = client.insert("Sales_Orders", [{
        "Subject": "大批量电机订单 (slip test)", "Status": "Confirmed", "Account_Name": {"id": account},
        "Currency": "CNY", "Is_Prepaid": True, "Due_Date": (dt.date.today() + dt.timedelta(days=20)).isoformat(),
        "Ordered_Items": [{"Product_Name": {"id": product["id"]}, "Quantity": 5000.0, "List_Price": 1.0,
                           "Sequence_Number": 1, "Line_Tax": [{"name": "VAT", "percentage": 13}]}]}])
    assert run_dag(env, "crm_orders_to_erp", wait_for_erp_seconds=0) == "success"
    importer.process_inbound(erp.admin)
    assert run_dag(env, "crm_orders_to_erp", wait_for_erp_seconds=0) == "success"
    so_no = client.get_record("Sales_Orders", created.id)["ERP_Order_No"]
    assert so_no
    mo = "SELECT mo_no, status, planned_finish, slip_days FROM erp_api.production_schedule WHERE erp_order_no = %s"
    for _ in range(30):  # the ERP plans production for the shortfall, then starts it
        simulator.simulate(erp.admin, 1, mo_slip_rate=0)
        if any(m["status"] == "IN_PROGRESS" for m in erp.query(mo, (so_no,))):
            break
    webhook.calls.clear()
    assert run_dag(env, PRODUCTION) == "success"
    first = client.get_record("Sales_Orders", created.id)["Expected_Ship_Date"]
    assert first and not slip_alerts(webhook)
    for _ in range(30):  # the factory slips every production order due
        simulator.simulate(erp.admin, 1, mo_slip_rate=1)
        if any(m["slip_days"] > 0 for m in erp.query(mo, (so_no,))):
            break
    expected = max(m["planned_finish"] for m in erp.query(mo, (so_no,)) if m["status"] != "CANCELLED") \
        + dt.timedelta(days=1)
    assert run_dag(env, PRODUCTION) == "success"
    moved = client.get_record("Sales_Orders", created.id)["Expected_Ship_Date"]
    assert moved == expected.isoformat() and moved > first
    [alert] = slip_alerts(webhook)
    assert f"moved from {first} to {moved}" in alert and f"<@{OWNER_IM_ID}>" in alert
    assert run_dag(env, PRODUCTION) == "success"  # nothing new: no second alert
    assert len(slip_alerts(webhook)) == 1
    assert bridge_rows(bridge, "SELECT count(*) FROM bridge.alert_log WHERE flow = %s AND event_key LIKE 'slip:%%' "
                               "AND event_key LIKE %s", (PRODUCTION, f"%{created.id}%")) == [(1,)]


def slip_alerts(webhook) -> list[str]:
    return webhook.texts("ships later")
