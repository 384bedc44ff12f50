"""A real ERP behind the contract: Tryton 8.2 (from PyPI, in .venv-tryton) with the same flows, mappings and suites
as the reference ERP. Stage 1 (master data, stock, credit, prices, history) and the order write-back with its
fulfilment coming back run through Airflow (dag.test); what reached Tryton is checked through Tryton's own API
(proteus, in Tryton's venv), not in bridge tables. Module-scoped: Tryton installs once per change of the adapter
(about 100 s, then kept as a template database) and each module run copies it.
"""

from __future__ import annotations

import uuid

import psycopg2
import psycopg2.extras
import pytest

from include.adapters.tryton import build
from tests.conftest import airflow_env_for, drop_database, run_dag

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
