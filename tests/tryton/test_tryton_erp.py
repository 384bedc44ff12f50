"""A real ERP behind the contract: Tryton 8.2 (from PyPI, in .venv-tryton) with the same flows, mappings and suites
as the reference ERP. Stage 1 (master data, stock, credit, prices, history) and the order write-back with its
fulfilment coming back run through Airflow (dag.test); what reached Tryton is checked through Tryton's own API
(proteus, in Tryton's venv), not in bridge tables. Module-scoped: Tryton installs once per change of the adapter
(about 100 s, then kept as a template database) and each module run copies it.
"""

from __future__ import annotations

import os
import uuid

import psycopg2
import psycopg2.extras
import pytest

from include.adapters.tryton import build
from tests.conftest import airflow_env_for, drop_database, kill_dag_run_when, run_dag

pytestmark = pytest.mark.slow
SIZES = {"customers": 60, "skus": 80, "seed": 7, "history_sales": 12}


class TrytonErp:
    def __init__(self):
        self.dbname = f"tryton_test_{uuid.uuid4().hex[:10]}"
        build.build(self.dbname, SIZES)

    def query(self, sql: str, params=None) -> list[dict]:
        with psycopg2.connect(dbname=self.dbname) as conn, conn.cursor(
                cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def run(self, command: str, *args: str) -> dict:
        return build.tryton(command, self.dbname, *args)


@pytest.fixture(scope="module")
def tryton():
    erp = TrytonErp()
    yield erp
    drop_database(erp.dbname)


@pytest.fixture(scope="module")
def crm_tryton(crm_server, tryton):
    crm_server.reset(customers=SIZES["customers"], skus=SIZES["skus"], seed_value=SIZES["seed"])
    return crm_server


@pytest.fixture(scope="module")
def env(tmp_path_factory, tryton, bridge, crm_tryton):
    return airflow_env_for(tmp_path_factory.mktemp("airflow"), tryton, bridge, crm_tryton)


def test_the_views_have_the_reference_contracts_columns(tryton, erp):
    def columns(dbname):
        with psycopg2.connect(dbname=dbname) as conn, conn.cursor() as cur:
            # Tryton's Char fields are varchar: to every reader the same as the reference's text
            cur.execute("""SELECT table_schema, table_name, column_name,
                                  replace(data_type, 'character varying', 'text')
                           FROM information_schema.columns
                           WHERE table_schema IN ('erp_api', 'erp_inbound') ORDER BY 1, 2, ordinal_position""")
            return cur.fetchall()

    assert columns(tryton.dbname) == columns(erp.dbname)


def test_stage_1_mirrors_tryton_into_the_crm(env, tryton, crm_tryton):
    for dag_id in ("master_data_match", "erp_stock_to_crm", "erp_credit_to_crm", "erp_prices_to_crm",
                   "erp_history_to_crm"):
        assert run_dag(env, dag_id) == "success", dag_id
    client = crm_tryton.client()
    products = {r["Product_Code"]: r for r in client.iter_records("Products", ["Product_Code", "Qty_in_Stock"])}
    stock = tryton.query("SELECT sku, sum(available) AS available FROM erp_api.stock_availability GROUP BY sku")
    assert stock
    for row in stock:
        if row["sku"] in products:
            assert float(products[row["sku"]]["Qty_in_Stock"] or 0) == float(row["available"]), row["sku"]
    prices = {r["Product_Code"]: r["Unit_Price"] for r in client.iter_records("Products", ["Product_Code",
                                                                                          "Unit_Price"])}
    listed = tryton.query("SELECT sku, unit_price FROM erp_api.price_list WHERE price_list = 'Standard Selling'")
    assert listed and all(round(float(prices[r["sku"]]), 2) == round(float(r["unit_price"]), 2)
                          for r in listed if r["sku"] in prices)


def test_confirmed_orders_reach_tryton_once_and_fulfilment_comes_back(env, tryton, crm_tryton):
    client = crm_tryton.client()
    assert run_dag(env, "crm_customers_to_erp", wait_for_erp_seconds=0) == "success"
    ids = [r["id"] for r in client.iter_records("Sales_Orders", ["Status"]) if r["Status"] in ("Created", "Approved")]
    client.update("Sales_Orders", [{"id": i, "Status": "Confirmed"} for i in ids[:5]])
    assert run_dag(env, "crm_orders_to_erp", wait_for_erp_seconds=0) == "success"
    tryton.run("import")
    tryton.run("import")  # a second pass finds nothing new
    assert run_dag(env, "crm_orders_to_erp", wait_for_erp_seconds=0) == "success"  # numbers back to the CRM
    assert run_dag(env, "crm_orders_to_erp", wait_for_erp_seconds=0) == "success"  # nothing sent twice
    tryton.run("import")
    sales = tryton.run("sales")
    assert sales and all(len(v) == 1 for v in sales.values()), sales
    crm = {r["id"]: r for r in client.iter_records("Sales_Orders", ["ERP_Order_No", "Fulfilment_Status"])}
    for ref, (sale,) in sales.items():
        assert crm[ref]["ERP_Order_No"] == sale["number"]

    # confirmed again, amended (one more of each line), cancelled: still one sale each, in its final state
    amended, cancelled = sorted(sales)[0], sorted(sales)[-1]
    record = client.get_record("Sales_Orders", amended)
    items = [{"id": i["id"], "Quantity": i["Quantity"] + 1} for i in record["Ordered_Items"]]
    client.update("Sales_Orders", [{"id": amended, "Ordered_Items": items, "Is_Prepaid": True},
                                   {"id": cancelled, "Status": "Cancelled"}])
    client.update("Sales_Orders", [{"id": sorted(sales)[1], "Status": "Confirmed"}])
    for _ in range(2):
        assert run_dag(env, "crm_orders_to_erp", wait_for_erp_seconds=0) == "success"
        tryton.run("import")
    now = tryton.run("sales")
    assert set(now) == set(sales) and all(len(v) == 1 for v in now.values()), now
    assert sum(ln["quantity"] for ln in now[amended][0]["lines"]) == sum(i["Quantity"] + 1
                                                                          for i in record["Ordered_Items"]), \
        client.get_record("Sales_Orders", amended)["Integration_Message"]
    assert now[amended][0]["number"] == sales[amended][0]["number"]  # amended in place
    assert now[cancelled][0]["state"] == "cancelled"

    tryton.run("fulfil")
    assert run_dag(env, "erp_fulfilment_to_crm") == "success"
    crm = {r["id"]: r for r in client.iter_records("Sales_Orders", ["ERP_Order_No", "Fulfilment_Status"])}
    shipped = [ref for ref, (sale,) in tryton.run("sales").items() if sale["shipment_state"] == "sent"]
    assert shipped
    assert all(crm[ref]["Fulfilment_Status"] for ref in shipped)


def test_orders_sent_during_killed_runs_reach_tryton_exactly_once(env, tryton, crm_tryton):
    """Two kills: the bridge's run after its insert into erp_inbound committed (before the CRM heard back), then
    Tryton's import job after Tryton confirmed a sale and before the inbound row's answer was committed. After a
    clear and the next import each order is one sale in Tryton, confirmed, with its number on the CRM order."""
    import signal
    import subprocess
    import time

    client = crm_tryton.client()
    before = set(tryton.run("sales"))
    new = [r["id"] for r in client.iter_records("Sales_Orders", ["Status"])
           if r["Status"] in ("Created", "Approved") and r["id"] not in before][:4]
    assert len(new) == 4
    client.update("Sales_Orders", [{"id": i, "Status": "Confirmed"} for i in new])
    inbound = "SELECT count(*) AS n FROM erp_inbound.sales_order_in"
    sent_before = tryton.query(inbound)[0]["n"]
    crm_tryton.configure(latency_ms=1500, fault_methods=["PUT"])  # slow write-back: the kill lands before it
    when = "2026-06-01T09:00:00+00:00"
    try:
        kill_dag_run_when(env, "crm_orders_to_erp", {"logical_date": when, "wait_for_erp_seconds": 0},
                          lambda: tryton.query(inbound)[0]["n"] > sent_before, "killed_orders.txt")
    finally:
        crm_tryton.configure(latency_ms=0, fault_methods=["GET", "POST", "PUT", "DELETE"])
    assert run_dag(env, "crm_orders_to_erp", logical_date=when, wait_for_erp_seconds=0) == "success"  # the clear

    # Tryton's import: a SHARE lock lets it claim the rows (FOR UPDATE) and confirm a sale in Tryton (its own
    # transaction), then holds its first answer (UPDATE); the job is SIGKILLed there and its answers are lost
    lock = psycopg2.connect(dbname=tryton.dbname)
    lock.cursor().execute("LOCK TABLE erp_inbound.sales_order_in IN SHARE MODE")
    job = subprocess.Popen([str(build.TRYTON_PYTHON), "-m", "include.adapters.tryton", "import", "--db",
                            tryton.dbname], cwd=build.ROOT, env={**os.environ, "PYTHONPATH": str(build.ROOT)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not tryton.query("""SELECT 1 FROM pg_stat_activity WHERE application_name = 'tryton-import-job'
                                  AND wait_event_type = 'Lock'"""):
            assert job.poll() is None and time.monotonic() < deadline, "the import job ended before the kill point"
            time.sleep(0.05)
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(30)
    finally:
        lock.close()
    in_tryton = tryton.run("sales")
    answered = tryton.query("SELECT source_id FROM erp_inbound.sales_order_in WHERE status <> 'NEW'")
    assert set(new) & set(in_tryton), "Tryton confirmed a sale before the kill"
    assert not set(new) & {r["source_id"] for r in answered}, "the killed job's answers were lost"

    tryton.run("import")
    assert run_dag(env, "crm_orders_to_erp", wait_for_erp_seconds=0) == "success"  # answers back to the CRM
    sales = tryton.run("sales")
    crm = {r["id"]: r for r in client.iter_records("Sales_Orders", ["ERP_Order_No"])}
    sent = {r["source_id"] for r in tryton.query("SELECT source_id FROM erp_inbound.sales_order_in")} & set(new)
    assert sent  # (an order the gate quarantined, e.g. its account not linked yet, is not sent at all)
    for ref in sent:
        assert len(sales.get(ref, [])) == 1, (ref, sales.get(ref))
        assert sales[ref][0]["state"] in ("confirmed", "quotation"), sales[ref]
        assert crm[ref]["ERP_Order_No"] == sales[ref][0]["number"], ref


def test_the_pipeline_becomes_tryton_stock_forecasts_once(env, tryton, crm_tryton):
    """The forecast version is active in Tryton as its stock forecasts; the same pipeline again sends nothing."""
    assert run_dag(env, "crm_forecast_to_erp", wait_for_erp_seconds=0) == "success"
    tryton.run("import")
    assert run_dag(env, "crm_forecast_to_erp", wait_for_erp_seconds=0) == "success"  # answer read, nothing new
    tryton.run("import")
    versions = tryton.query("SELECT version_no, status, total_qty FROM erp_api.forecast_versions")
    assert [v["status"] for v in versions] == ["Active"], versions
    summary = tryton.run("summary")
    assert summary["forecasts"].get("done") and summary["forecast_lines_active"] > 0, summary
    assert not summary["forecasts"].get("cancelled"), summary  # unchanged: not replaced by a copy of itself
