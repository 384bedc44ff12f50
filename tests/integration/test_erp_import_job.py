"""The ERP's import job over erp_inbound: valid documents are posted once, bad ones become ERROR rows."""

import threading
import uuid
from decimal import Decimal

import psycopg2
import pytest

from include.bridge.uscc import check_char
from include.sandbox.erp import importer


def send_order(erp, lines, customer=None, key=None, source_id=None, **header):
    """Insert an order into erp_inbound as the integration's writer role would (one transaction)."""
    key = key or f"test-{uuid.uuid4().hex[:12]}"
    hdr = {"source_system": "ZOHO_CRM", "source_id": source_id or key, "idempotency_key": key,
           "customer_code": customer, "currency": "CNY", "line_count": len(lines)} | header
    with erp.connect_as("erp_writer") as conn, conn.cursor() as cur:
        cur.execute(f"INSERT INTO erp_inbound.sales_order_in ({', '.join(hdr)}) VALUES ({', '.join(['%s'] * len(hdr))})"
                    " ON CONFLICT (idempotency_key) DO NOTHING", list(hdr.values()))
        for n, line in enumerate(lines, 1):
            row = {"idempotency_key": key, "line_no": n, "tax_rate": 13} | line
            cur.execute(f"INSERT INTO erp_inbound.sales_order_line_in ({', '.join(row)}) "
                        f"VALUES ({', '.join(['%s'] * len(row))}) ON CONFLICT DO NOTHING", list(row.values()))
    return key


def inbound(erp, key):
    return erp.query("SELECT * FROM erp_inbound.sales_order_in WHERE idempotency_key = %s", (key,))[0]


def run_job(erp):
    return importer.process_inbound(erp.admin)


@pytest.fixture(scope="module")
def good_customer(erp):
    """A domestic customer with no credit trouble (lifted limit, nothing overdue)."""
    code = erp.scalar("""SELECT customer_code FROM erp_api.customer_credit
                         WHERE NOT credit_hold AND customer_currency = 'CNY' ORDER BY customer_code LIMIT 1""")
    erp.query("UPDATE erp.customer SET credit_limit = 1e9 WHERE customer_code = %s", (code,))
    erp.query("SELECT erp.refresh_customer_credit(ARRAY[%s])", (code,))
    return code


def stock_item(erp, min_available=20, warehouse="SH01"):
    return erp.query("""SELECT s.sku, s.available, p.unit_price FROM erp_api.stock_availability s
                        JOIN erp_api.price_list p USING (sku)
                        WHERE s.warehouse = %s AND s.available >= %s AND s.sku LIKE 'SNS-%%'
                        ORDER BY s.sku LIMIT 1""", (warehouse, min_available))[0]


def test_valid_order_is_created_once_with_stock_reserved(erp, good_customer):
    item = stock_item(erp)
    reserved_sql = "SELECT reserved FROM erp_api.stock_availability WHERE sku = %s AND warehouse = 'SH01'"
    reserved_before = erp.scalar(reserved_sql, (item["sku"],))
    key = send_order(erp, [{"sku": item["sku"], "qty": 5, "unit_price": item["unit_price"], "warehouse": "SH01",
                            "line_total": (5 * item["unit_price"]).quantize(Decimal("0.01"))}], good_customer)
    counts = run_job(erp)
    assert counts["sales_order_in"]["processed"] >= 1
    row = inbound(erp, key)
    assert row["status"] == "PROCESSED", row["error_message"]
    assert row["erp_doc_no"].startswith("SO2026-")
    assert row["erp_status"] == "OPEN" and row["hold_reason"] is None and row["shortage_qty"] == 0
    order = erp.query("SELECT * FROM erp_api.sales_order_status WHERE erp_order_no = %s", (row["erp_doc_no"],))[0]
    assert order["external_ref"] == key and order["customer_code"] == good_customer
    assert order["reserved_qty"] == 5
    reserved_after = erp.scalar(reserved_sql, (item["sku"],))
    assert reserved_after == reserved_before + 5
    # running the job again changes nothing
    run_job(erp)
    assert erp.scalar("SELECT count(*) FROM erp.sales_order WHERE source_id = %s", (key,)) == 1


def test_shortfall_becomes_demand(erp, good_customer):
    item = stock_item(erp, min_available=1)
    qty = item["available"] + 7
    key = send_order(erp, [{"sku": item["sku"], "qty": qty, "unit_price": 10, "warehouse": "SH01"}], good_customer)
    run_job(erp)
    row = inbound(erp, key)
    assert row["status"] == "PROCESSED" and row["shortage_qty"] == 7
    mr = erp.query("SELECT * FROM erp.material_request WHERE so_no = %s", (row["erp_doc_no"],))
    assert len(mr) == 1 and mr[0]["qty"] == 7 and mr[0]["reason"] == "SO_SHORTAGE"
    assert erp.scalar("SELECT available FROM erp_api.stock_availability WHERE sku = %s AND warehouse = 'SH01'",
                      (item["sku"],)) == 0


@pytest.mark.parametrize("header, line, reason", [
    ({"customer_code": "NOPE-1"}, {}, "unknown customer 'NOPE-1'"),
    ({}, {"sku": "NO-SUCH-SKU"}, "line 1: unknown SKU 'NO-SUCH-SKU'"),
    ({}, {"qty": 0}, "line 1: quantity must be greater than 0"),
    ({}, {"qty": -3}, "line 1: quantity must be greater than 0"),
    ({}, {"tax_rate": 17}, "line 1: tax rate 17.00 is not allowed"),
    ({}, {"line_total": 1}, "does not match quantity x price x (1 - discount)"),
    ({"currency": None}, {}, "currency is missing"),
    ({"currency": "USD"}, {}, "exchange rate to CNY is missing"),
    ({}, {"warehouse": "XX9"}, "line 1: unknown warehouse 'XX9'"),
    ({}, {"uom": "KG"}, "line 1: unit 'KG' is not defined"),
])
def test_invalid_orders_become_error_rows_with_reason(erp, good_customer, header, line, reason):
    item = stock_item(erp)
    ln = {"sku": item["sku"], "qty": 2, "unit_price": 100, "line_total": 200} | line
    hdr = {"customer": good_customer} | {("customer" if k == "customer_code" else k): v for k, v in header.items()}
    key = send_order(erp, [ln], **hdr)
    run_job(erp)
    row = inbound(erp, key)
    assert row["status"] == "ERROR" and row["erp_doc_no"] is None
    assert reason in row["error_message"]
    assert erp.scalar("SELECT count(*) FROM erp.sales_order WHERE source_id = %s", (key,)) == 0


def test_all_problems_are_reported_together(erp):
    key = send_order(erp, [{"sku": "NOPE", "qty": 0, "unit_price": 1}, {"sku": "NOPE2", "qty": 1, "unit_price": 1,
                                                                       "tax_rate": 5}], "NOPE-C")
    run_job(erp)
    msg = inbound(erp, key)["error_message"]
    for part in ("unknown customer", "line 1: unknown SKU 'NOPE'", "line 1: quantity", "line 2: unknown SKU",
                 "line 2: tax rate"):
        assert part in msg


def test_resend_never_creates_a_second_order(erp, good_customer):
    item = stock_item(erp)
    lines = [{"sku": item["sku"], "qty": 1, "unit_price": 50}]
    source = f"crm-{uuid.uuid4().hex[:8]}"
    k1 = send_order(erp, lines, good_customer, source_id=source, key=f"{source}:v1")
    send_order(erp, lines, good_customer, source_id=source, key=f"{source}:v1")  # same key: no-op
    k2 = send_order(erp, lines, good_customer, source_id=source, key=f"{source}:v1-retry")  # same content
    k3 = send_order(erp, [lines[0] | {"qty": 2}], good_customer, source_id=source, key=f"{source}:v2")
    run_job(erp)
    assert erp.scalar("SELECT count(*) FROM erp_inbound.sales_order_in WHERE source_id = %s", (source,)) == 3
    assert erp.scalar("SELECT count(*) FROM erp.sales_order WHERE source_id = %s", (source,)) == 1
    r1, r2, r3 = inbound(erp, k1), inbound(erp, k2), inbound(erp, k3)
    assert r1["status"] == r2["status"] == "PROCESSED" and r1["erp_doc_no"] == r2["erp_doc_no"]
    assert "not created again" in r2["result_message"]
    assert r3["status"] == "ERROR" and "amendment" in r3["error_message"]


def test_amend_and_cancel_go_through_the_contract(erp, good_customer):
    item = stock_item(erp)
    source = f"crm-{uuid.uuid4().hex[:8]}"
    send_order(erp, [{"sku": item["sku"], "qty": 3, "unit_price": 50}], good_customer, source_id=source,
               key=f"{source}:v1")
    run_job(erp)
    k2 = send_order(erp, [{"sku": item["sku"], "qty": 4, "unit_price": 50}], good_customer, source_id=source,
                    key=f"{source}:v2", action="AMEND")
    run_job(erp)
    so_no = inbound(erp, k2)["erp_doc_no"]
    assert inbound(erp, k2)["result_message"] == "order amended"
    assert erp.scalar("SELECT ordered_qty FROM erp_api.sales_order_status WHERE erp_order_no = %s", (so_no,)) == 4
    k3 = send_order(erp, [], good_customer, source_id=source, key=f"{source}:cancel", action="CANCEL", line_count=0)
    run_job(erp)
    assert inbound(erp, k3)["status"] == "PROCESSED"
    st = erp.query("SELECT status, reserved_qty FROM erp_api.sales_order_status WHERE erp_order_no = %s", (so_no,))[0]
    assert st == {"status": "CANCELLED", "reserved_qty": 0}


def test_credit_limit_puts_order_on_hold_unless_approved(erp):
    code = erp.scalar("SELECT customer_code FROM erp_api.customer_credit WHERE customer_currency = 'CNY' "
                      "AND NOT credit_hold ORDER BY customer_code DESC LIMIT 1")
    erp.query("UPDATE erp.customer SET credit_limit = 1 WHERE customer_code = %s", (code,))
    item = stock_item(erp)
    k1 = send_order(erp, [{"sku": item["sku"], "qty": 1, "unit_price": 1000}], code)
    k2 = send_order(erp, [{"sku": item["sku"], "qty": 1, "unit_price": 1000}], code, credit_approved_by="finance.li")
    run_job(erp)
    held, approved = inbound(erp, k1), inbound(erp, k2)
    assert held["status"] == "PROCESSED" and held["erp_status"] == "ON_HOLD" and held["hold_reason"] == "LIMIT_EXCEEDED"
    assert erp.scalar("SELECT reserved_qty FROM erp_api.sales_order_status WHERE erp_order_no = %s",
                      (held["erp_doc_no"],)) == 0
    assert approved["erp_status"] == "OPEN"


def test_incomplete_order_waits_for_its_lines(erp, good_customer):
    item = stock_item(erp)
    key = send_order(erp, [{"sku": item["sku"], "qty": 1, "unit_price": 5}], good_customer, line_count=2)
    run_job(erp)
    row = inbound(erp, key)
    assert row["status"] == "NEW" and row["retry_count"] == 1 and "1 of 2 lines" in row["error_message"]


def test_two_import_jobs_at_once_post_each_order_once(erp, good_customer):
    item = stock_item(erp)
    keys = [send_order(erp, [{"sku": item["sku"], "qty": 1, "unit_price": 5}], good_customer) for _ in range(40)]
    errors = []

    def job():
        conn = psycopg2.connect(dbname=erp.dbname)
        try:
            importer.process_inbound(conn, batch_size=5)
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=job) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = erp.query("SELECT status, count(*) AS n FROM erp_inbound.sales_order_in WHERE idempotency_key = ANY (%s) "
                     "GROUP BY status", (keys,))
    assert rows == [{"status": "PROCESSED", "n": 40}]
    assert erp.scalar("SELECT count(*) FROM erp.sales_order WHERE source_id = ANY (%s)", (keys,)) == 40


def insert_customer(erp, **values):
    key = f"cust-{uuid.uuid4().hex[:10]}"
    row = {"source_system": "ZOHO_CRM", "source_id": key, "idempotency_key": key} | values
    with erp.connect_as("erp_writer") as conn, conn.cursor() as cur:
        cur.execute(f"INSERT INTO erp_inbound.customer_in ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))})",
                    list(row.values()))
    return key


def customer_in(erp, key):
    return erp.query("SELECT * FROM erp_inbound.customer_in WHERE idempotency_key = %s", (key,))[0]


def test_customers_are_created_linked_or_rejected(erp):
    body = "91310115" + "MA1K4XY2" + "7"
    new_uscc = body + check_char(body)
    existing = erp.query("SELECT customer_code, uscc FROM erp.customer WHERE uscc IS NOT NULL LIMIT 1")[0]
    k_new = insert_customer(erp, customer_name="上海新客户精密机械有限公司", uscc=new_uscc, region="East")
    k_same = insert_customer(erp, customer_name="华东机电（上海）", uscc=existing["uscc"])
    k_bad = insert_customer(erp, customer_name="坏数据有限公司", uscc="913101151234567890")
    k_noname = insert_customer(erp, customer_name=" ")
    run_job(erp)
    new, same, bad, noname = (customer_in(erp, k) for k in (k_new, k_same, k_bad, k_noname))
    assert new["status"] == "PROCESSED" and new["erp_doc_no"].startswith("C")
    assert erp.scalar("SELECT customer_name FROM erp_api.customers WHERE customer_code = %s", (new["erp_doc_no"],)) \
        == "上海新客户精密机械有限公司"
    assert same["status"] == "PROCESSED" and same["erp_doc_no"] == existing["customer_code"]
    assert "linked to existing customer" in same["result_message"]
    assert bad["status"] == "ERROR" and "unified social credit code" in bad["error_message"]
    assert noname["status"] == "ERROR" and "customer name is missing" in noname["error_message"]
    # resending the new customer's record does not create it twice
    insert_customer(erp, source_id=k_new, customer_name="上海新客户精密机械有限公司", uscc=new_uscc)
    run_job(erp)
    assert erp.scalar("SELECT count(*) FROM erp.customer WHERE uscc = %s", (new_uscc,)) == 1


def send_forecast(erp, batch, rows, count=None, horizon=("2026-07-01", "2026-09-30")):
    with erp.connect_as("erp_writer") as conn, conn.cursor() as cur:
        for n, (sku, qty, period) in enumerate(rows):
            cur.execute("""INSERT INTO erp_inbound.demand_forecast_in (source_system, source_id, idempotency_key,
                               batch_id, batch_row_count, horizon_start, horizon_end, sku, region, period_start, qty)
                           VALUES ('ZOHO_CRM', %s, %s, %s, %s, %s, %s, %s, 'East', %s, %s)""",
                        (f"{sku}:{period}", f"{batch}:{n}", batch, count or len(rows), *horizon, sku, period, qty))


def test_forecast_batches_replace_each_other_atomically(erp):
    skus = [r["sku"] for r in erp.query("SELECT sku FROM erp.item ORDER BY sku LIMIT 3")]
    send_forecast(erp, "fc-1", [(s, 10, "2026-07-01") for s in skus])
    send_forecast(erp, "fc-2", [(skus[0], 5, "2026-08-01")], count=2)  # incomplete: waits
    send_forecast(erp, "fc-bad", [(skus[0], 5, "2026-08-01"), ("NOPE", 1, "2026-08-01"), (skus[1], 1, "2027-01-01")])
    run_job(erp)
    v1 = erp.query("SELECT * FROM erp.forecast_version WHERE batch_id = 'fc-1'")[0]
    assert v1["status"] == "Active" and v1["row_count"] == 3 and v1["total_qty"] == 30
    rows_of = "SELECT * FROM erp_inbound.demand_forecast_in WHERE batch_id = %s"
    assert [r["status"] for r in erp.query(rows_of, ("fc-2",))] == ["NEW"]
    bad = {r["source_id"]: r for r in erp.query(rows_of, ("fc-bad",))}
    assert all(r["status"] == "ERROR" for r in bad.values())
    assert "unknown SKU 'NOPE'" in bad["NOPE:2026-08-01"]["error_message"]
    assert "outside the horizon" in bad[f"{skus[1]}:2027-01-01"]["error_message"]
    assert erp.scalar("SELECT count(*) FROM erp.forecast_version WHERE batch_id = 'fc-bad'") == 0
    send_forecast(erp, "fc-3", [(skus[2], 8, "2026-09-01")])
    run_job(erp)
    versions = {r["batch_id"]: r["status"] for r in erp.query("SELECT batch_id, status FROM erp.forecast_version")}
    assert versions == {"fc-1": "Superseded", "fc-3": "Active"}
