"""Stage 2, orders: confirmed CRM orders reach the ERP exactly once — under a SIGKILL between the ERP insert
and the CRM write-back, two runs at once, a backfill of an old interval, CRM 429/500 storms and a lost ERP
connection — held orders do not, bad orders are quarantined with a reason the CRM order shows, changes become
amendments, and fulfilment comes back. All DAG runs go through Airflow (dag.test)."""

import datetime as dt
import os
import pathlib

import pytest

from include.sandbox.erp import importer, simulator
from tests import dagruns
from tests.conftest import CREDIT_CONTROLLER, bridge_rows, kill_dag_run_when, linked_airflow_env, run_dag

pytestmark = pytest.mark.slow
ORDERS = "crm_orders_to_erp"


@pytest.fixture(scope="module")
def client(crm_demo):
    return crm_demo.client()


@pytest.fixture(scope="module")
def env(tmp_path_factory, erp, bridge, crm_demo):
    return linked_airflow_env(tmp_path_factory.mktemp("airflow"), erp, bridge, crm_demo)


def orders(env, **conf) -> str:
    return run_dag(env, ORDERS, wait_for_erp_seconds=0, **conf)


def erp_orders(erp) -> dict[str, list[str]]:
    """CRM id -> ERP order numbers (must be exactly one each)."""
    out: dict[str, list[str]] = {}
    for r in erp.query("SELECT source_id, so_no FROM erp.sales_order WHERE source_system = 'zoho_crm'"):
        out.setdefault(r["source_id"], []).append(r["so_no"])
    return out


def crm_orders(client) -> dict[str, dict]:
    return {r["id"]: r for r in client.iter_records(
        "Sales_Orders", ["Subject", "Status", "ERP_Order_No", "Credit_Check", "Integration_Message", "Account_Name",
                         "Fulfilment_Status"])}


def assert_exactly_once(erp, client, bridge):
    """Every order the bridge sent is in the ERP once, and its CRM record shows that ERP number."""
    in_erp, in_crm = erp_orders(erp), crm_orders(client)
    assert all(len(v) == 1 for v in in_erp.values()), {k: v for k, v in in_erp.items() if len(v) > 1}
    with bridge[1].cursor() as cur:
        cur.execute("SELECT DISTINCT crm_id FROM bridge.order_outbox WHERE source_module = 'Sales_Orders' "
                    "AND action = 'CREATE' AND sent_at IS NOT NULL")
        sent = {r[0] for r in cur.fetchall()}
    bridge[1].commit()
    assert sent and sent <= set(in_erp)
    for crm_id in sent:
        assert in_crm[crm_id]["ERP_Order_No"] == in_erp[crm_id][0], crm_id
    return sent


def confirm(client, n: int, exclude=()) -> list[str]:
    """A salesperson confirms n more orders (of linked customers, with ERP products)."""
    ids = [r["id"] for r in client.iter_records("Sales_Orders", ["Status"]) if r["Status"] in ("Created", "Approved")
           and r["id"] not in exclude][:n]
    client.update("Sales_Orders", [{"id": i, "Status": "Confirmed"} for i in ids])
    return ids


def test_confirmed_orders_reach_the_erp_once_and_the_number_comes_back(env, erp, bridge, client):
    before = {k for k, v in crm_orders(client).items() if v["Status"] == "Confirmed"}
    assert orders(env) == "success"
    importer.process_inbound(erp.admin)
    assert orders(env) == "success"  # the write-back of what the ERP processed meanwhile
    sent = assert_exactly_once(erp, client, bridge)
    now = crm_orders(client)
    held = {k for k in before if now[k]["Status"] == "Credit Hold"}
    assert sent | held | {k for k in before if "Not sent" in (now[k]["Integration_Message"] or "")} >= before
    for k in held:
        assert k not in erp_orders(erp) and now[k]["Credit_Check"] in ("Hold", "Prepaid Only")
    assert all(now[k]["Integration_Message"].startswith(now[k]["ERP_Order_No"]) for k in sent)
    # nothing new: a rerun sends nothing
    assert orders(env) == "success"
    assert_exactly_once(erp, client, bridge)


def test_sigkill_between_erp_insert_and_crm_write_back_then_a_clear(env, erp, bridge, client, crm_demo):
    new = confirm(client, 6)
    before = erp.scalar("SELECT count(*) FROM erp_inbound.sales_order_in")
    crm_demo.configure(latency_ms=1500, fault_methods=["PUT"])  # slow write-back: the kill lands before it
    when = "2026-04-01T09:00:00+00:00"
    try:
        kill_dag_run_when(env, ORDERS, {"logical_date": when, "wait_for_erp_seconds": 0}, lambda: erp.scalar(
            "SELECT count(*) FROM erp_inbound.sales_order_in") > before, "killed.txt")
    finally:
        crm_demo.configure(latency_ms=0, fault_methods=["GET", "POST", "PUT", "DELETE"])
    importer.process_inbound(erp.admin)
    assert not any(crm_orders(client)[i]["ERP_Order_No"] for i in new if i in erp_orders(erp))  # not written back
    assert run_dag(env, ORDERS, logical_date=when, wait_for_erp_seconds=0) == "success"  # cleared, same run id
    importer.process_inbound(erp.admin)
    assert orders(env) == "success"
    sent = assert_exactly_once(erp, client, bridge)
    assert set(new) & sent


def test_two_runs_at_once_a_backfill_and_a_storm_with_a_lost_erp_connection(env, erp, bridge, client, crm_demo):
    confirm(client, 6)
    outs = {d: os.path.join(env["AIRFLOW_HOME"], f"at_once_{d}.txt") for d in (2, 3)}
    pids = [dagruns.start_dag_run(env, ORDERS, {"logical_date": f"2026-04-0{d}T09:00:00+00:00",
                                                "wait_for_erp_seconds": 0}, out) for d, out in outs.items()]
    for pid in pids:
        dagruns.wait(pid, 300)
    # both dag.test() calls returned, and neither run failed for the other (their gates share one Data Docs site)
    assert [dagruns.states(out) for out in outs.values()] == [["success"], ["success"]], \
        {d: pathlib.Path(out).read_text()[-3000:] for d, out in outs.items()}
    importer.process_inbound(erp.admin)
    assert orders(env) == "success"
    assert_exactly_once(erp, client, bridge)

    # a backfill of an old interval re-reads those orders and finds every one already sent
    from include.bridge.runtime import Systems
    from include.flows.crm_orders_to_erp import ORDERS as orders_flow

    systems = Systems.from_connections(bridge[1], _url(bridge), erp=erp.connect_as("erp_reader"), crm=client,
                                       erp_write=erp.connect_as("erp_writer"))
    run = orders_flow.extract(systems, "backfill__old", backfill=(dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
                                                                  dt.datetime.now(dt.UTC)))
    assert orders_flow.send(systems, orders_flow.validate(systems, run)).counts["sent"] == 0
    assert_exactly_once(erp, client, bridge)

    # the ERP connection is lost: the run fails and sends nothing; then a CRM storm while it catches up
    confirm(client, 4)
    broken = env | {"AIRFLOW_CONN_ERP_WRITE": "postgresql://nobody:x@127.0.0.1:1/nowhere"}
    assert orders(broken) == "failed"
    crm_demo.configure(error_rate=0.5, burst_429=3, fault_seed=5)
    try:
        assert orders(env) == "success"
    finally:
        crm_demo.configure(error_rate=0.0, burst_429=0)
    importer.process_inbound(erp.admin)
    assert orders(env) == "success"
    assert_exactly_once(erp, client, bridge)


def test_bad_orders_are_quarantined_with_a_readable_reason_and_the_rest_proceeds(env, erp, bridge, client):
    products = {r["Product_Code"]: r["id"] for r in client.iter_coql("Products", ["Product_Code"])}
    with bridge[1].cursor() as cur:
        cur.execute("SELECT crm_id FROM bridge.id_map WHERE entity = 'customer' ORDER BY erp_key LIMIT 1")
        account = cur.fetchone()[0]
    bridge[1].commit()
    good_sku = sorted(k for k in products if k.startswith("SNS-"))[0]

    def order(subject, lines, **header):
        rows = [{"Product_Name": {"id": products[sku]}, "Quantity": q, "List_Price": 100.0, "Sequence_Number": n,
                 "Line_Tax": [{"name": "VAT", "percentage": tax}]} for n, (sku, q, tax) in enumerate(lines, 1)]
        rec = {"Subject": subject, "Status": "Confirmed", "Account_Name": {"id": account}, "Currency": "CNY",
               "Ordered_Items": rows, "Is_Prepaid": True} | header
        return client.insert("Sales_Orders", [rec])[0].id

    bad = {order("bad: CRM-only product", [("CRM-ONLY-001", 1, 13)]): "not an ERP item",
           order("bad: no currency", [(good_sku, 1, 13)], Currency=None): "currency is missing",
           order("bad: zero qty", [(good_sku, 0, 13)]): "quantity is 0 or negative",
           order("bad: tax 17%", [(good_sku, 1, 17)]): "tax rate the ERP does not allow",
           order("bad: USD without rate", [(good_sku, 1, 13)], Currency="USD"): "needs its exchange rate",
           order("bad: account not in the ERP", [(good_sku, 1, 13)], Account_Name={"id": client.insert(
               "Accounts", [{"Account_Name": "未建档客户有限公司"}])[0].id}): "not linked to an ERP customer"}
    # enough good orders beside them that the bad share stays under the flow's 50% gate threshold
    goods = [order(f"good one #{n}", [(good_sku, 2, 13)]) for n in range(8)]
    assert orders(env) == "success"
    now = crm_orders(client)
    for crm_id, words in bad.items():
        assert words in (now[crm_id]["Integration_Message"] or ""), (words, now[crm_id])
    with bridge[1].cursor() as cur:
        cur.execute(f"SELECT business_key FROM bridge.quarantine WHERE flow = '{ORDERS}' AND status = 'open'")
        assert set(bad) <= {r[0] for r in cur.fetchall()}
    bridge[1].commit()
    importer.process_inbound(erp.admin)
    assert orders(env) == "success"
    assert set(goods) <= set(erp_orders(erp)) and not set(bad) & set(erp_orders(erp))
    for good in goods:
        assert crm_orders(client)[good]["ERP_Order_No"] == erp_orders(erp)[good][0]


def test_a_change_is_an_amendment_a_cancel_a_cancellation_and_fulfilment_comes_back(env, erp, bridge, client):
    assert orders(env) == "success"  # whatever earlier tests left confirmed (this test also runs alone)
    importer.process_inbound(erp.admin)
    assert orders(env) == "success"
    sent = assert_exactly_once(erp, client, bridge)
    crm_id = sorted(sent)[0]
    rec = client.get_record("Sales_Orders", crm_id)
    so_no = rec["ERP_Order_No"]
    if erp.scalar("SELECT count(*) FROM erp.delivery_note WHERE so_no = %s", (so_no,)) == 0:
        # one more of each line, now prepaid (so the larger amount passes the credit check)
        items = [{"id": i["id"], "Quantity": i["Quantity"] + 1} for i in rec["Ordered_Items"]]
        client.update("Sales_Orders", [{"id": crm_id, "Ordered_Items": items, "Is_Prepaid": True}])
        assert orders(env) == "success"
        importer.process_inbound(erp.admin)
        assert orders(env) == "success"
        assert erp_orders(erp)[crm_id] == [so_no]  # amended in place, not a second order
        qty = erp.scalar("SELECT sum(qty) FROM erp.sales_order_line WHERE so_no = %s", (so_no,))
        assert float(qty) == sum(i["Quantity"] + 1 for i in rec["Ordered_Items"]), \
            client.get_record("Sales_Orders", crm_id)["Integration_Message"]
    other = sorted(sent)[-1]
    client.update("Sales_Orders", [{"id": other, "Status": "Cancelled"}])
    assert orders(env) == "success"
    importer.process_inbound(erp.admin)
    assert orders(env) == "success"
    status = erp.scalar("SELECT status FROM erp.sales_order WHERE source_id = %s", (other,))
    message = client.get_record("Sales_Orders", other)["Integration_Message"]
    assert status == "Cancelled" or "rejected" in message  # shipped goods cannot be cancelled: a person decides

    # the planner pulls the CRM orders in to today (the test ERP's calendar is months behind the CRM's)
    erp.query("""UPDATE erp.sales_order_line SET delivery_date = erp.today()
                 WHERE so_no IN (SELECT so_no FROM erp.sales_order WHERE source_system = 'zoho_crm')""")
    simulator.simulate(erp.admin, 3)  # the ERP ships, invoices, collects
    assert run_dag(env, "erp_fulfilment_to_crm") == "success"
    shipped = erp.query("""SELECT external_ref, per_delivered FROM erp_api.sales_order_status
                           WHERE source_system = 'zoho_crm' AND per_delivered > 0""")
    assert shipped
    now = crm_orders(client)
    for r in shipped:
        assert now[r["external_ref"]]["Fulfilment_Status"] in ("Partially Shipped", "Shipped")


def test_a_held_order_is_released_by_an_approval_recorded_in_the_crm(env, erp, bridge, client, crm_demo):
    assert orders(env) == "success"
    held = [k for k, v in crm_orders(client).items() if v["Status"] == "Credit Hold"]
    if not held:  # make one: a non-prepaid order far above any customer's available credit
        products = {r["Product_Code"]: r["id"] for r in client.iter_coql("Products", ["Product_Code"])}
        account = _linked_account(bridge)
        sku = sorted(k for k in products if k.startswith("SNS-"))[0]
        big = client.insert("Sales_Orders", [{
            "Subject": "too big", "Status": "Confirmed", "Account_Name": {"id": account}, "Currency": "CNY",
            "Ordered_Items": [{"Product_Name": {"id": products[sku]}, "Quantity": 1, "List_Price": 9.9e8,
                               "Line_Tax": [{"name": "VAT", "percentage": 13}]}]}])[0].id
        assert orders(env) == "success"
        assert crm_orders(client)[big]["Status"] == "Credit Hold"
        held = [big]
    crm_id = held[0]
    assert crm_id not in erp_orders(erp)
    controller = crm_demo.client(user=CREDIT_CONTROLLER)  # a credit approver (Variable bridge_credit_approvers)
    controller.update("Sales_Orders", [{"id": crm_id, "Credit_Check": "Approved", "Approved_By": "Finance Manager"}])
    assert orders(env) == "success"
    importer.process_inbound(erp.admin)
    assert orders(env) == "success"
    assert len(erp_orders(erp)[crm_id]) == 1
    assert client.get_record("Sales_Orders", crm_id)["ERP_Order_No"] == erp_orders(erp)[crm_id][0]
    # the ERP is told who approved as the CRM recorded it, not what the order's free text says
    assert erp.scalar("SELECT credit_approved_by FROM erp_inbound.sales_order_in WHERE source_id = %s "
                      "AND credit_approved_by IS NOT NULL", (crm_id,)) == f"李会计 ({CREDIT_CONTROLLER})"
    assert orders(env) == "success"  # and it stays once
    assert len(erp_orders(erp)[crm_id]) == 1


def test_an_accepted_quote_becomes_one_erp_order(env, erp, bridge, client):
    products = {r["Product_Code"]: r["id"] for r in client.iter_coql("Products", ["Product_Code"])}
    sku = sorted(k for k in products if k.startswith("SNS-"))[1]
    quote = client.insert("Quotes", [{
        "Subject": "quote for 3", "Quote_Stage": "Negotiation", "Account_Name": {"id": _linked_account(bridge)},
        "Currency": "CNY", "Quoted_Items": [{"Product_Name": {"id": products[sku]}, "Quantity": 3, "List_Price": 10.0,
                                             "Line_Tax": [{"name": "VAT", "percentage": 13}]}]}])[0].id
    assert orders(env) == "success"
    assert quote not in erp_orders(erp)  # still negotiated: nothing goes
    client.update("Quotes", [{"id": quote, "Quote_Stage": "Accepted"}])
    assert orders(env) == "success"
    importer.process_inbound(erp.admin)
    assert orders(env) == "success"
    assert orders(env) == "success"
    [so_no] = erp_orders(erp)[quote]
    assert client.get_record("Quotes", quote)["ERP_Order_No"] == so_no
    assert float(erp.scalar("SELECT sum(qty) FROM erp.sales_order_line WHERE so_no = %s", (so_no,))) == 3


def test_ready_accounts_become_erp_customers_once_or_are_linked_to_the_existing_one(env, erp, bridge, client):
    from include.bridge.uscc import check_char

    # an ERP customer the CRM does not know yet (someone creates its account by hand)
    known_uscc = "91330100MA2KNWN07" + check_char("91330100MA2KNWN07")
    erp.query("""INSERT INTO erp.customer (customer_code, customer_name, uscc, customer_group, region, city, currency)
                 SELECT 'C-KNOWN-01', '杭州已有客户五金有限公司', %s, customer_group, region, '杭州', currency
                 FROM erp.customer WHERE currency = 'CNY' ORDER BY customer_code LIMIT 1""", (known_uscc,))
    known = {"customer_code": "C-KNOWN-01", "customer_name": "杭州已有客户五金有限公司", "uscc": known_uscc}
    new_uscc = "91320500MA1XYB7K3" + check_char("91320500MA1XYB7K3")
    ids = client.insert("Accounts", [
        {"Account_Name": "苏州新客户精密机械有限公司", "Unified_Social_Credit_Code": new_uscc, "Currency": "CNY",
         "Billing_City": "苏州", "Phone": "0512-1234567", "ERP_Sync_Ready": True},
        {"Account_Name": known["customer_name"], "Unified_Social_Credit_Code": known["uscc"], "ERP_Sync_Ready": True},
        {"Account_Name": "坏代码有限公司", "Unified_Social_Credit_Code": "91310000XXXXXXXXX1", "ERP_Sync_Ready": True},
        {"Account_Name": "not ready yet Ltd", "ERP_Sync_Ready": False}])
    new, link, bad, not_ready = (o.id for o in ids)
    customers = lambda **conf: run_dag(env, "crm_customers_to_erp", wait_for_erp_seconds=0, **conf)  # noqa: E731
    assert customers() == "success"
    # edited while the ERP has not created it yet: still one customer, never a second
    client.update("Accounts", [{"id": new, "Phone": "0512-7654321"}])
    assert customers() == "success"
    importer.process_inbound(erp.admin)
    assert customers() == "success"
    assert customers() == "success"
    created = erp.query("SELECT customer_code FROM erp.customer WHERE source_id = %s", (new,))
    assert len(created) == 1
    # only the new account made a customer (the seeded CRM may hold other ready accounts: not counted here)
    assert erp.scalar("SELECT count(*) FROM erp.customer WHERE source_id = ANY (%s)", ([new, link, bad],)) == 1
    assert erp.scalar("SELECT count(*) FROM erp.customer WHERE customer_name = %s", (known["customer_name"],)) == 1
    accounts = {r["id"]: r for r in client.iter_records("Accounts", ["Account_Number", "Integration_Message"])}
    assert accounts[new]["Account_Number"] == created[0]["customer_code"]
    assert accounts[link]["Account_Number"] == known["customer_code"]
    assert "linked to existing ERP customer" in accounts[link]["Integration_Message"]
    assert "credit code is not valid" in (accounts[bad]["Integration_Message"] or "")
    assert not accounts[not_ready]["Account_Number"]
    with bridge[1].cursor() as cur:
        cur.execute("SELECT erp_key, crm_id FROM bridge.id_map WHERE entity = 'customer' AND crm_id = ANY (%s)",
                    ([new, link],))
        assert dict((c, k) for k, c in cur.fetchall()) == {new: created[0]["customer_code"],
                                                            link: known["customer_code"]}
    bridge[1].commit()


def _linked_account(bridge) -> str:
    with bridge[1].cursor() as cur:
        cur.execute("SELECT crm_id FROM bridge.id_map WHERE entity = 'customer' ORDER BY erp_key LIMIT 1")
        account = cur.fetchone()[0]
    bridge[1].commit()
    return account


def _url(bridge):
    info = bridge[1].info
    return f"postgresql+psycopg2://{info.user}@{info.host}:{info.port}/{bridge[0]}"


def test_an_order_the_erp_holds_but_the_bridge_did_not_record_is_not_judged_again(env, erp, bridge, client):
    """The ERP insert committed, the bridge's sent_at did not (the task died in between, the bridge DB was lost):
    the next normal run starts from the ERP's inbound keys, marks it handed over, never credit-checks it again, and
    writes its ERP number back."""
    products = {r["Product_Code"]: r["id"] for r in client.iter_coql("Products", ["Product_Code"])}
    sku = sorted(k for k in products if k.startswith("SNS-"))[2]
    crm_id = client.insert("Sales_Orders", [{
        "Subject": "handed over, not recorded", "Status": "Confirmed", "Account_Name": {"id": _linked_account(bridge)},
        "Currency": "CNY", "Is_Prepaid": True,
        "Ordered_Items": [{"Product_Name": {"id": products[sku]}, "Quantity": 2, "List_Price": 50.0,
                           "Line_Tax": [{"name": "VAT", "percentage": 13}]}]}])[0].id
    assert orders(env) == "success"
    [(key,)] = bridge_rows(bridge, "SELECT idempotency_key FROM bridge.order_outbox WHERE crm_id = %s "
                                   "AND action = 'CREATE'", (crm_id,))
    assert erp.scalar("SELECT count(*) FROM erp_inbound.sales_order_in WHERE idempotency_key = %s", (key,)) == 1
    bridge_rows(bridge, "UPDATE bridge.order_outbox SET sent_at = NULL, written_back_at = NULL "
                        "WHERE idempotency_key = %s", (key,))  # the bookkeeping that was lost
    importer.process_inbound(erp.admin)
    assert orders(env) == "success"
    assert bridge_rows(bridge, "SELECT sent_at IS NOT NULL, written_back_at IS NOT NULL FROM bridge.order_outbox "
                               "WHERE idempotency_key = %s", (key,)) == [(True, True)]
    latest = bridge_rows(bridge, "SELECT batch_id FROM bridge.run_ledger WHERE flow = %s ORDER BY started_at DESC "
                                 "LIMIT 1", (ORDERS,))[0][0]
    assert not bridge_rows(bridge, "SELECT 1 FROM bridge.stg_crm_orders_to_erp WHERE batch_id = %s AND crm_id = %s",
                           (latest, crm_id))  # not staged, not credit-checked again
    assert len(erp_orders(erp)[crm_id]) == 1
    assert client.get_record("Sales_Orders", crm_id)["ERP_Order_No"] == erp_orders(erp)[crm_id][0]
    assert bridge_rows(bridge, "SELECT count(*) FROM bridge.audit_log WHERE record_id = %s "
                               "AND after ? 'recovered'", (key,)) == [(1,)]
