"""Hostile and careless input, planted through the real CRM sandbox (its API, and /__sandbox/plant for values the
API's own checks would stop — what another integration or an import could leave) and run through the real DAGs
(dag.test). For each class: the bad record is quarantined (or refused) with a reason a person understands, no good
record of the same run is held back, and the run succeeds.

| class                                               | outcome                                                  |
|-----------------------------------------------------|----------------------------------------------------------|
| text in a number field, a date that does not exist  | order quarantined, reason names the field and the value  |
| a lookup that is not a lookup                       | order quarantined (account not linked)                   |
| quantity beyond what the ERP holds                  | order quarantined ("larger than the ERP holds")          |
| discount above the line's amount                    | order quarantined                                        |
| odd / repeated sequence numbers, NUL in the subject | sent: lines renumbered, text cleaned                     |
| a discount given as an amount                       | sent; the ERP's total equals the CRM's to the cent        |
| Credit_Check = Approved set by a salesperson        | ignored, the order stays on hold and says who set it     |
| ... set by a credit approver                        | released, the ERP is told who approved                   |
| an account typing another company's ERP code        | not linked, review key_name_mismatch                     |
| matching that would move an existing link           | link kept, review link_change                            |
| a look-alike product code (case, space, Cyrillic)   | not linked, existing link and stock untouched, review    |
| a deal with text in Probability                     | deal quarantined, the rest of the forecast goes          |
| bridge_rollout {"enabled": "false"}                 | the run refuses (fails, alerts) naming the key           |
| a document the ERP's tables cannot hold             | that document quarantined, the rest of the chunk inserted |
"""

import datetime as dt
import json
from decimal import Decimal

import pytest

from include.sandbox.erp import importer
from tests.conftest import CREDIT_CONTROLLER, SALESPERSON, bridge_rows, linked_airflow_env, run_dag

pytestmark = pytest.mark.slow
ORDERS = "crm_orders_to_erp"


@pytest.fixture(scope="module")
def client(crm_demo):
    return crm_demo.client()


@pytest.fixture(scope="module")
def env(tmp_path_factory, erp, bridge, crm_demo):
    return linked_airflow_env(tmp_path_factory.mktemp("airflow"), erp, bridge, crm_demo)


@pytest.fixture(scope="module")
def catalog(client, bridge):
    products = {r["Product_Code"]: r["id"] for r in client.iter_coql("Products", ["Product_Code"])}
    [(account,)] = bridge_rows(bridge, "SELECT crm_id FROM bridge.id_map WHERE entity = 'customer' "
                                       "ORDER BY erp_key LIMIT 1")
    return {"products": products, "sku": sorted(k for k in products if k.startswith("SNS-"))[0], "account": account}


def new_order(client, catalog, subject, lines, **header) -> str:
    """A confirmed order; lines: (quantity, list price, discount amount[, sequence number])."""
    rows = [{"Product_Name": {"id": catalog["products"][catalog["sku"]]}, "Quantity": q, "List_Price": p,
             "Discount": d, "Sequence_Number": rest[0] if rest else n, "Line_Tax": [{"name": "VAT", "percentage": 13}]}
            for n, (q, p, d, *rest) in enumerate(lines, 1)]
    rec = {"Subject": subject, "Status": "Confirmed", "Account_Name": {"id": catalog["account"]}, "Currency": "CNY",
           "Ordered_Items": rows, "Is_Prepaid": True} | header
    [outcome] = client.insert("Sales_Orders", [rec])
    assert outcome.ok, outcome
    return outcome.id


def erp_order(erp, crm_id) -> list[dict]:
    return erp.query("SELECT so_no, grand_total, net_total, customer_po_no FROM erp.sales_order "
                     "WHERE source_system = 'zoho_crm' AND source_id = %s", (crm_id,))


def open_reasons(bridge, flow: str) -> dict[str, list[str]]:
    return dict(bridge_rows(bridge, "SELECT business_key, reasons FROM bridge.quarantine "
                                    "WHERE flow = %s AND status = 'open'", (flow,)))


def orders_round(env, erp):
    """A run, the ERP's import job, a run that writes the answers back."""
    assert run_dag(env, ORDERS, wait_for_erp_seconds=0) == "success"
    importer.process_inbound(erp.admin)
    assert run_dag(env, ORDERS, wait_for_erp_seconds=0) == "success"


def test_bad_orders_are_quarantined_and_the_good_ones_of_the_same_run_go(env, erp, bridge, client, crm_demo,
                                                                         catalog):
    good = [new_order(client, catalog, f"good {n}", [(1 + n, 100.0, 0)]) for n in range(3)]
    money = new_order(client, catalog, "discount as an amount", [(1, 12345.67, 1234.00), (3, 33.33, 0.01)])
    odd = new_order(client, catalog, "odd sequence", [(1, 10.0, 0, 7), (2, 10.0, 0, 7), (3, 10.0, 0, 1)])
    crm_demo.plant("Sales_Orders", odd, rows={"Ordered_Items": [{"Sequence_Number": "1.5"}]})
    nul = new_order(client, catalog, "PO 4711\x00 with a NUL", [(1, 10.0, 0)])
    bad = {
        new_order(client, catalog, "text quantity", [(1, 10.0, 0)]): (
            "Quantity 'abc' is not a number", {"rows": {"Ordered_Items": [{"Quantity": "abc"}]}}),
        new_order(client, catalog, "bad date", [(1, 10.0, 0)]): ("Due_Date '2026-13-45' is not a date",
                                                                 {"fields": {"Due_Date": "2026-13-45"}}),
        new_order(client, catalog, "not a lookup", [(1, 10.0, 0)]): ("not linked to an ERP customer",
                                                                     {"fields": {"Account_Name": "ACME"}}),
        new_order(client, catalog, "huge quantity", [(1e15, 1.0, 0)]): ("larger than the ERP holds", {}),
        new_order(client, catalog, "discount above gross", [(1, 10.0, 25.0)]): ("discount is negative or larger", {}),
    }
    for crm_id, (_why, plant) in bad.items():
        if plant:
            crm_demo.plant("Sales_Orders", crm_id, **plant)
    orders_round(env, erp)

    reasons = open_reasons(bridge, ORDERS)
    for crm_id, (why, _plant) in bad.items():
        assert crm_id in reasons and any(why in r for r in reasons[crm_id]), (why, reasons.get(crm_id))
        assert not erp_order(erp, crm_id)
        assert client.get_record("Sales_Orders", crm_id)["Integration_Message"].startswith("Not sent to the ERP")
    for crm_id in [*good, money, odd, nul]:  # nobody held back by the bad ones
        [doc] = erp_order(erp, crm_id)
        assert client.get_record("Sales_Orders", crm_id)["ERP_Order_No"] == doc["so_no"], crm_id
    # money to the cent: 12345.67 - 1234.00 + 99.99 - 0.01, the ERP's order total is the CRM's
    crm_total = Decimal(str(client.get_record("Sales_Orders", money)["Grand_Total"]))
    [doc] = erp_order(erp, money)
    assert doc["net_total"] == Decimal("11211.65") and doc["grand_total"] == crm_total
    lines = erp.query("SELECT line_no, qty FROM erp.sales_order_line l JOIN erp.sales_order o USING (so_no) "
                      "WHERE o.source_id = %s ORDER BY line_no", (odd,))
    assert [(r["line_no"], float(r["qty"])) for r in lines] == [(1, 3.0), (2, 2.0), (3, 1.0)]  # "1.5" sorts last
    [doc] = erp_order(erp, nul)
    assert "\x00" not in doc["customer_po_no"] and doc["customer_po_no"].startswith("PO 4711")


def test_a_credit_approval_counts_only_from_an_approver(env, erp, bridge, client, crm_demo, catalog):
    held = new_order(client, catalog, "far above the credit", [(1, 9.9e8, 0)], Is_Prepaid=False)
    assert run_dag(env, ORDERS, wait_for_erp_seconds=0) == "success"
    assert client.get_record("Sales_Orders", held)["Status"] == "Credit Hold"
    crm_demo.client(user=SALESPERSON).update("Sales_Orders", [
        {"id": held, "Credit_Check": "Approved", "Approved_By": "Finance Director"}])  # typed by the salesperson
    orders_round(env, erp)
    record = client.get_record("Sales_Orders", held)
    assert not erp_order(erp, held) and record["Status"] == "Credit Hold"
    assert "approval was ignored" in record["Integration_Message"] and "王小明" in record["Integration_Message"]
    crm_demo.client(user=CREDIT_CONTROLLER).update("Sales_Orders", [{"id": held, "Credit_Check": "Approved"}])
    orders_round(env, erp)
    assert len(erp_order(erp, held)) == 1
    assert erp.scalar("SELECT credit_approved_by FROM erp_inbound.sales_order_in WHERE source_id = %s "
                      "AND credit_approved_by IS NOT NULL", (held,)) == f"李会计 ({CREDIT_CONTROLLER})"


def test_links_never_move_by_themselves(env, erp, bridge, client):
    links = dict(bridge_rows(bridge, "SELECT erp_key, crm_id FROM bridge.id_map WHERE entity = 'customer'"))
    victim_code, victim_account = sorted(links.items())[1]
    # a new account that types another company's ERP code
    [impostor] = client.insert("Accounts", [{"Account_Name": "冒名顶替贸易有限公司",
                                                                "Account_Number": victim_code}])
    # an account already linked elsewhere now looks like the victim (its number edited)
    mover_code, mover_account = sorted(links.items())[2]
    victim_name = erp.scalar("SELECT customer_name FROM erp.customer WHERE customer_code = %s", (victim_code,))
    client.update("Accounts", [{"id": mover_account, "Account_Number": victim_code, "Account_Name": victim_name}])
    assert run_dag(env, "master_data_match") == "success"
    now = dict(bridge_rows(bridge, "SELECT erp_key, crm_id FROM bridge.id_map WHERE entity = 'customer'"))
    assert now[victim_code] == victim_account and now[mover_code] == mover_account
    assert impostor.id not in now.values()
    issues = {(i, c) for i, c in bridge_rows(bridge, "SELECT issue, crm_id FROM bridge.match_review "
                                                     "WHERE status = 'open'")}
    assert ("key_name_mismatch", impostor.id) in issues
    assert any(c == mover_account for _i, c in issues), sorted(issues)


def test_a_look_alike_product_code_never_takes_a_link(env, erp, bridge, client, catalog):
    sku = catalog["sku"]
    original = catalog["products"][sku]
    assert run_dag(env, "erp_stock_to_crm") == "success"
    copies = [o.id for o in client.insert("Products", [
        {"Product_Name": "copy, lower case", "Product_Code": f" {sku.lower()} "},
        {"Product_Name": "copy, Cyrillic", "Product_Code": sku.replace("S", "\u0405", 1)},
        {"Product_Name": "copy, full width", "Product_Code": "".join(chr(ord(c) + 0xFEE0) for c in sku)}])]
    erp.query("UPDATE erp.bin SET actual_qty = actual_qty + 7, updated_at = now() WHERE sku = %s", (sku,))
    assert run_dag(env, "erp_stock_to_crm") == "success"
    assert bridge_rows(bridge, "SELECT crm_id FROM bridge.id_map WHERE entity = 'product' AND erp_key = %s",
                       (sku,)) == [(original,)]
    on_hand = erp.scalar("SELECT sum(on_hand) FROM erp_api.stock_availability WHERE sku = %s", (sku,))
    assert float(client.get_record("Products", original)["Qty_in_Stock"]) == float(on_hand)
    for copy in copies:
        assert client.get_record("Products", copy).get("Qty_in_Stock") in (None, 0)
    listed = {c for (c,) in bridge_rows(bridge, "SELECT crm_id FROM bridge.match_review WHERE issue = "
                                                "'product_code_conflict' AND status = 'open'")}
    assert set(copies) <= listed


def test_an_unreadable_deal_is_quarantined_and_the_forecast_goes(env, erp, bridge, client, crm_demo):
    assert run_dag(env, "crm_forecast_to_erp", wait_for_erp_seconds=0) == "success"
    [(victim,), *others] = bridge_rows(bridge, "SELECT DISTINCT deal_id FROM bridge.stg_crm_forecast_to_erp "
                                               "WHERE gate_ok AND demand_type = 'PIPELINE' ORDER BY 1")
    assert others
    crm_demo.plant("Deals", victim, fields={"Probability": "abc"})
    assert run_dag(env, "crm_forecast_to_erp", wait_for_erp_seconds=0) == "success"
    reasons = open_reasons(bridge, "crm_forecast_to_erp")
    assert any("Probability 'abc' is not a number" in r for r in reasons[victim])
    sent = bridge_rows(bridge, "SELECT count(DISTINCT deal_id) FROM bridge.stg_crm_forecast_to_erp WHERE gate_ok "
                               "AND demand_type = 'PIPELINE'")[0][0]
    assert sent > 0


def test_a_malformed_rollout_setting_refuses_the_run(env, bridge):
    bad = env | {"AIRFLOW_VAR_BRIDGE_ROLLOUT": json.dumps({ORDERS: {"enabled": "false"}})}
    before = bridge_rows(bridge, "SELECT count(*) FROM bridge.run_ledger WHERE flow = %s", (ORDERS,))[0][0]
    assert run_dag(bad, ORDERS, wait_for_erp_seconds=0) == "failed"
    assert bridge_rows(bridge, "SELECT count(*) FROM bridge.run_ledger WHERE flow = %s", (ORDERS,))[0][0] == before
    with open(f"{bad['AIRFLOW_HOME']}/last_run_output.txt") as out:
        assert "enabled must be true or false, not 'false'" in out.read()


def test_a_document_the_erp_cannot_hold_is_found_and_the_rest_of_its_chunk_goes(erp, catalog):
    from include.flows.crm_orders_to_erp import insert_isolated

    def doc(n, qty):
        key = f"Sales_Orders:hostile-{n}:CREATE:{dt.datetime.now().timestamp()}"
        lines = [{"line_no": 1, "sku": catalog["sku"], "qty": qty, "unit_price": Decimal(1), "discount_pct": 0,
                  "discount_amount": Decimal(0), "tax_rate": Decimal(13), "line_total": Decimal(1)}]
        return key, {"crm_id": f"hostile-{n}", "payload_hash": "h"}, "CREATE", {"customer_code": "C00001",
                                                                                "lines": lines}
    rows = [doc(n, Decimal(10) ** 20 if n == 3 else Decimal(1)) for n in range(7)]
    conn = erp.connect_as("erp_writer")
    try:
        refused = insert_isolated(conn, rows)
    finally:
        conn.close()
    assert [q.key for _row, q in refused] == ["hostile-3"]
    assert "numeric field overflow" in refused[0][1].reasons[0]
    keys = {r["idempotency_key"] for r in erp.query("SELECT idempotency_key FROM erp_inbound.sales_order_in")}
    assert {r[0] for r in rows} - keys == {rows[3][0]}
