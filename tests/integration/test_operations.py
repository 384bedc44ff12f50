"""Operations through Airflow (dag.test) against both sandboxes: reconciliation finds one planted difference of
each kind and nothing on a clean pair; a dry run writes nothing to either system (counted before and after); a
pilot touches only its subset; a rollback restores the exact before-values of a run (CRM) and reverses its ERP
documents through the inbound contract."""

import pytest

from include.sandbox.erp import importer, simulator
from tests.conftest import airflow_env_for, run_dag
from tests.conftest import bridge_rows as q  # a query on the test bridge DB

pytestmark = pytest.mark.slow
CREDIT_FIELDS = ["Credit_Limit", "Credit_Used", "Credit_Available", "Overdue_Amount", "Overdue_Days", "AR_0_30",
                 "AR_31_60", "AR_61_90", "AR_90_Plus", "YTD_Sales", "MTD_Sales", "Last_Payment_Date", "Credit_Status"]


@pytest.fixture(scope="module")
def client(crm_demo):
    return crm_demo.client()


@pytest.fixture(scope="module")
def env(tmp_path_factory, erp, bridge, crm_demo, webhook):
    env = airflow_env_for(tmp_path_factory.mktemp("airflow"), erp, bridge, crm_demo) | webhook.env()
    assert run_dag(env, "master_data_match") == "success"
    assert run_dag(env, "erp_credit_to_crm") == "success"
    assert run_dag(env, "crm_orders_to_erp", wait_for_erp_seconds=0) == "success"
    importer.process_inbound(erp.admin)
    for dag_id in ("crm_orders_to_erp", "erp_stock_to_crm", "erp_credit_to_crm", "erp_prices_to_crm",
                   "erp_history_to_crm", "erp_fulfilment_to_crm", "erp_production_to_crm"):
        assert run_dag(env, dag_id, **({"wait_for_erp_seconds": 0} if dag_id == "crm_orders_to_erp" else {})) \
            == "success", dag_id
    return env


def reconcile(env, bridge, **conf) -> dict[str, list[tuple]]:
    assert run_dag(env, "reconcile_crm_erp", order_grace_minutes=0, **conf) == "success"
    [(batch,)] = q(bridge, "SELECT batch_id FROM bridge.reconciliation_run ORDER BY created_at DESC LIMIT 1")
    found: dict[str, list[tuple]] = {}
    for kind, key, crm_id, sor, by in q(bridge, """SELECT kind, business_key, crm_id, system_of_record, corrected_by
                                                   FROM bridge.reconciliation_difference WHERE batch_id = %s""",
                                        (batch,)):
        found.setdefault(kind, []).append((key, crm_id, sor, by))
    return found


def crm_state(client, module: str, fields: list[str]) -> dict[str, dict]:
    return {r["id"]: r for r in client.iter_records(module, [*fields, "Modified_Time"])}


def test_reconciliation_finds_one_planted_difference_of_each_kind_and_nothing_on_a_clean_pair(env, erp, bridge,
                                                                                              client, webhook):
    # the demo company's CRM has accounts entered twice: found, and once merged (deleted) the pair is clean
    seeded = reconcile(env, bridge)
    assert set(seeded) == {"duplicate_customer_crm"} and len(seeded["duplicate_customer_crm"]) == 3, seeded
    twins = []
    for (_key, _crm, _sor, _by), (detail,) in zip(seeded["duplicate_customer_crm"], q(bridge, """
            SELECT crm_value FROM bridge.reconciliation_difference WHERE kind = 'duplicate_customer_crm'
            AND batch_id = (SELECT batch_id FROM bridge.reconciliation_run ORDER BY created_at DESC LIMIT 1)
            ORDER BY row_no"""), strict=True):
        twins += [a["id"] for a in detail if not a["Account_Number"]]
    assert len(twins) == 3
    client.delete("Accounts", twins)
    assert reconcile(env, bridge) == {}

    # one of each kind
    linked = dict(q(bridge, "SELECT erp_key, crm_id FROM bridge.id_map WHERE entity = 'product' ORDER BY 1 LIMIT 1"))
    [(sku, product)] = linked.items()
    row = client.get_record("Products", product)
    # a field the quantity-only comparison never looked at: every field the stock mirror writes is compared now
    client.update("Products", [{"id": product, "Projected_14d": (row["Projected_14d"] or 0) + 5}])
    [(priced_sku, priced)] = q(bridge, "SELECT erp_key, crm_id FROM bridge.id_map WHERE entity = 'product' "
                                       "AND crm_id <> %s ORDER BY 1 LIMIT 1", (product,))
    client.update("Products", [{"id": priced, "Unit_Price": (client.get_record("Products", priced)["Unit_Price"]
                                                             or 0) + 1}])
    [(code, account)] = q(bridge, "SELECT erp_key, crm_id FROM bridge.id_map WHERE entity = 'customer' ORDER BY 1 "
                                  "LIMIT 1")
    client.update("Accounts", [{"id": account, "Credit_Limit": (client.get_record("Accounts", account)
                                                                 ["Credit_Limit"] or 0) + 1000}])
    copies = dict(q(bridge, "SELECT erp_key, crm_id FROM bridge.id_map WHERE entity = 'sales_order'"))
    open_orders = [r["erp_order_no"] for r in erp.query(
        "SELECT erp_order_no FROM erp_api.sales_order_status WHERE per_delivered < 100 AND status <> 'CANCELLED' "
        "AND erp_order_no = ANY (%s) ORDER BY 1", (list(copies),))]
    shipped_in_crm, deleted_copy = open_orders[0], open_orders[1]
    client.update("Sales_Orders", [{"id": copies[shipped_in_crm], "Fulfilment_Status": "Shipped"}])
    client.delete("Sales_Orders", [copies[deleted_copy]])
    [new_order] = client.insert("Sales_Orders", [{"Subject": "确认但未进 ERP 的订单", "Status": "Confirmed",
                                                  "Account_Name": {"id": account}, "Ordered_Items": [
                                                      {"Product_Name": {"id": product}, "Quantity": 1.0,
                                                       "List_Price": 10.0}]}])
    number = client.get_record("Accounts", account)["Account_Number"]
    [twin] = client.insert("Accounts", [{"Account_Name": "另一个名字的同一客户", "Account_Number": number}])
    original = erp.query("SELECT customer_name, city FROM erp.customer WHERE uscc IS NULL LIMIT 1") or \
        erp.query("SELECT customer_name, city FROM erp.customer LIMIT 1")
    erp.query("""INSERT INTO erp.customer (customer_code, customer_name, customer_group, region, city, currency)
                 VALUES ('C99999', %s, 'SME', 'East', %s, 'CNY')""",
              (original[0]["customer_name"], original[0]["city"]))

    found = reconcile(env, bridge, alert_threshold=100)
    assert {k: len(v) for k, v in found.items()} == {
        "stock_mismatch": 1, "credit_mismatch": 1, "price_mismatch": 1, "order_status_mismatch": 1,
        "order_copy_mismatch": 1, "order_missing_in_erp": 1,
        "order_missing_in_crm": 1, "duplicate_customer_crm": 1, "duplicate_customer_erp": 1}, found
    assert found["stock_mismatch"][0][:3] == (sku, product, "erp")
    assert found["credit_mismatch"][0][:3] == (code, account, "erp")
    assert found["price_mismatch"][0][:4] == (priced_sku, priced, "erp", "erp_prices_to_crm")
    assert found["order_status_mismatch"][0][:2] == (shipped_in_crm, copies[shipped_in_crm])
    # the same edit, seen by the check of every field the history copy holds
    assert found["order_copy_mismatch"][0][:2] == (shipped_in_crm, copies[shipped_in_crm])
    assert found["order_missing_in_erp"][0][:3] == (new_order.id, new_order.id, "crm")
    assert found["order_missing_in_erp"][0][3] == "crm_orders_to_erp"
    assert found["order_missing_in_crm"][0][:2] == (deleted_copy, copies[deleted_copy])
    details = dict(q(bridge, """SELECT kind, detail FROM bridge.reconciliation_difference WHERE batch_id = (
                                SELECT batch_id FROM bridge.reconciliation_run ORDER BY created_at DESC LIMIT 1)"""))
    assert found["duplicate_customer_crm"][0][2] == "crm" and twin.id in details["duplicate_customer_crm"]
    assert details["stock_mismatch"].startswith("Projected_14d: CRM ") and "ERP" in details["stock_mismatch"]
    assert found["duplicate_customer_erp"][0][2] == "erp" and "C99999" in details["duplicate_customer_erp"]
    # every difference says who corrects it; the report has the charts and the rows
    [(path, counts, alerted)] = q(bridge, "SELECT report_path, counts, alerted FROM bridge.reconciliation_run "
                                          "ORDER BY created_at DESC LIMIT 1")
    with open(path, encoding="utf-8") as report:
        text = report.read()
    assert text.count("<svg") == 2 and "erp_stock_to_crm" in text and new_order.id in text
    assert sum(counts.values()) == 9 and not alerted
    assert not webhook.texts("differences between the CRM and the ERP")
    # above the threshold: one alert (and the run records it)
    reconcile(env, bridge, alert_threshold=3)
    assert q(bridge, "SELECT alerted FROM bridge.reconciliation_run ORDER BY created_at DESC LIMIT 1") == [(True,)]
    [alert] = webhook.texts("differences between the CRM and the ERP")
    assert "9 differences" in alert and "stock figures: 1" in alert
    # undo the planted ones for the next tests
    erp.query("DELETE FROM erp.customer WHERE customer_code = 'C99999'")
    client.delete("Sales_Orders", [new_order.id])
    client.delete("Accounts", [twin.id])


def pending_orders(bridge, client) -> list[str]:
    """CRM orders not confirmed yet, of accounts linked to ERP customers."""
    linked = {v for (v,) in q(bridge, "SELECT crm_id FROM bridge.id_map WHERE entity = 'customer'")}
    return [r["id"] for r in client.iter_records("Sales_Orders", ["Status", "Account_Name"])
            if r["Status"] in ("Created", "Approved") and (r.get("Account_Name") or {}).get("id") in linked]


def bridge_sync_state(bridge) -> tuple:
    return tuple(q(bridge, f"SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {t} t")
                 [0] for t in ("bridge.synced_state", "bridge.quarantine", "bridge.order_outbox", "bridge.watermark",
                               "bridge.id_map"))


def erp_inbound_counts(erp) -> tuple:
    return tuple(erp.scalar(f"SELECT count(*) FROM erp_inbound.{t}") for t in
                 ("customer_in", "sales_order_in", "sales_order_line_in", "demand_forecast_in"))


def test_a_dry_run_writes_nothing_to_either_system(env, erp, bridge, client):
    simulator.simulate(erp.admin, 1)  # stock and credit moved in the ERP
    confirmed = pending_orders(bridge, client)[:4]
    client.update("Sales_Orders", [{"id": i, "Status": "Confirmed", "Is_Prepaid": True} for i in confirmed])
    before = {m: crm_state(client, m, ["id"]) for m in ("Products", "Accounts", "Sales_Orders", "Deals")}
    erp_before, bridge_before = erp_inbound_counts(erp), bridge_sync_state(bridge)
    for dag_id in ("erp_stock_to_crm", "erp_credit_to_crm", "crm_orders_to_erp", "crm_customers_to_erp",
                   "crm_forecast_to_erp"):
        waits = {"wait_for_erp_seconds": 0} if dag_id.startswith("crm_") else {}
        assert run_dag(env, dag_id, dry_run=True, **waits) == "success", dag_id
    after = {m: crm_state(client, m, ["id"]) for m in before}
    assert {m: {k: v["Modified_Time"] for k, v in recs.items()} for m, recs in after.items()} == \
        {m: {k: v["Modified_Time"] for k, v in recs.items()} for m, recs in before.items()}
    assert erp_inbound_counts(erp) == erp_before and bridge_sync_state(bridge) == bridge_before
    runs = dict(q(bridge, """SELECT DISTINCT ON (flow) flow, batch_id FROM bridge.run_ledger WHERE mode = 'dry_run'
                             AND status = 'dry_run' ORDER BY flow, started_at DESC"""))
    assert set(runs) >= {"erp_stock_to_crm", "erp_credit_to_crm", "crm_orders_to_erp", "crm_forecast_to_erp"}
    preview = {flow: dict(q(bridge, "SELECT target_system || ' ' || action, count(*) FROM bridge.dry_run_preview "
                                    "WHERE batch_id = %s GROUP BY 1", (batch,))) for flow, batch in runs.items()}
    assert preview["erp_stock_to_crm"].get("crm update") and preview["erp_credit_to_crm"].get("crm update")
    assert preview["crm_orders_to_erp"].get("erp create") and preview["crm_forecast_to_erp"].get("erp insert")
    # the live run then writes exactly what the dry run previewed
    assert run_dag(env, "erp_credit_to_crm") == "success"
    [(loaded,)] = q(bridge, "SELECT rows_loaded FROM bridge.run_ledger WHERE flow = 'erp_credit_to_crm' AND mode = "
                            "'live' ORDER BY started_at DESC LIMIT 1")
    assert loaded == preview["erp_credit_to_crm"]["crm update"]


def test_a_pilot_touches_only_its_subset(env, erp, bridge, client):
    simulator.simulate(erp.admin, 3)
    [(mark,)] = q(bridge, "SELECT value FROM bridge.watermark WHERE flow = 'erp_credit_to_crm' AND source = 'default'")
    pending = {r["customer_code"] for r in erp.query(  # credit that changed since the last sync
        "SELECT customer_code FROM erp_api.customer_credit WHERE updated_at > %s", (mark,))}
    linked = dict(q(bridge, "SELECT erp_key, crm_id FROM bridge.id_map WHERE entity = 'customer'"))
    pilot = sorted(pending & set(linked))[0]
    before = crm_state(client, "Accounts", CREDIT_FIELDS)
    assert run_dag(env, "erp_credit_to_crm", pilot_customers=[pilot]) == "success"
    after = crm_state(client, "Accounts", CREDIT_FIELDS)
    changed = {k for k in after if after[k]["Modified_Time"] != before[k]["Modified_Time"]}
    assert changed == {linked[pilot]}
    # the watermark waited: the next full run still brings every other change
    assert run_dag(env, "erp_credit_to_crm") == "success"
    later = crm_state(client, "Accounts", CREDIT_FIELDS)
    assert {k for k in later if later[k]["Modified_Time"] != after[k]["Modified_Time"]} >= \
        {linked[c] for c in pending & set(linked) if c != pilot} - {linked[pilot]}

    # orders: a pilot region sends only that region's orders
    regions = {r["customer_code"]: r["region"] for r in erp.query("SELECT customer_code, region FROM erp.customer")}
    accounts = {v: k for k, v in linked.items()}
    candidates = [r for r in client.iter_records("Sales_Orders", ["Status", "Account_Name"])
                  if r["Status"] in ("Created", "Approved") and (r.get("Account_Name") or {}).get("id") in accounts]
    region = regions[accounts[candidates[0]["Account_Name"]["id"]]]
    client.update("Sales_Orders", [{"id": r["id"], "Status": "Confirmed", "Is_Prepaid": True} for r in candidates[:6]])
    sent_before = erp.scalar("SELECT coalesce(max(id), 0) FROM erp_inbound.sales_order_in")
    assert run_dag(env, "crm_orders_to_erp", pilot_regions=[region], wait_for_erp_seconds=0) == "success"
    sent = erp.query("SELECT customer_code FROM erp_inbound.sales_order_in WHERE id > %s", (sent_before,))
    assert sent and {regions[r["customer_code"]] for r in sent} == {region}


def test_a_rollback_restores_the_exact_before_values_of_a_run(env, erp, bridge, client):
    simulator.simulate(erp.admin, 2)
    before = crm_state(client, "Accounts", CREDIT_FIELDS)
    when = "2026-11-20T08:00:00+00:00"
    assert run_dag(env, "erp_credit_to_crm", logical_date=when) == "success"
    [(batch, run_id, loaded)] = q(bridge, "SELECT batch_id, airflow_run_id, rows_loaded FROM bridge.run_ledger "
                                          "WHERE flow = 'erp_credit_to_crm' ORDER BY started_at DESC LIMIT 1")
    changed = crm_state(client, "Accounts", CREDIT_FIELDS)
    touched = {k for k in changed if changed[k]["Modified_Time"] != before[k]["Modified_Time"]}
    assert loaded > 0 and len(touched) == loaded
    assert run_dag(env, "bridge_rollback", flow="erp_credit_to_crm", run_id=run_id) == "success"
    restored = crm_state(client, "Accounts", CREDIT_FIELDS)
    for k in touched:
        assert {f: restored[k].get(f) for f in CREDIT_FIELDS} == {f: before[k].get(f) for f in CREDIT_FIELDS}, k
    assert q(bridge, "SELECT status FROM bridge.run_ledger WHERE batch_id = %s", (batch,)) == [("rolled_back",)]
    assert q(bridge, "SELECT count(*) FROM bridge.rollback_log WHERE rolled_back = %s AND action = 'restored'",
             (batch,)) == [(loaded,)]
    # twice: nothing more is changed
    assert run_dag(env, "bridge_rollback", batch_id=batch) == "success"
    assert q(bridge, "SELECT count(*) FROM bridge.rollback_log WHERE rolled_back = %s", (batch,)) == [(loaded,)]
    # the next sync sees the CRM as it is and writes the ERP's figures again
    assert run_dag(env, "erp_credit_to_crm") == "success"
    again = crm_state(client, "Accounts", CREDIT_FIELDS)
    assert all({f: again[k].get(f) for f in CREDIT_FIELDS} == {f: changed[k].get(f) for f in CREDIT_FIELDS}
               for k in touched)


def test_a_rollback_of_an_orders_run_cancels_its_erp_orders_and_restores_the_crm(env, erp, bridge, client):
    assert run_dag(env, "crm_orders_to_erp", wait_for_erp_seconds=0) == "success"  # what earlier tests left
    importer.process_inbound(erp.admin)
    assert run_dag(env, "crm_orders_to_erp", wait_for_erp_seconds=0) == "success"
    ids = pending_orders(bridge, client)[:3]
    client.update("Sales_Orders", [{"id": i, "Status": "Confirmed", "Is_Prepaid": True} for i in ids])
    fields = ["Status", "ERP_Order_No", "ERP_Status", "Credit_Check", "Integration_Message", "ERP_Synced_At"]
    before = {i: client.get_record("Sales_Orders", i) for i in ids}
    assert run_dag(env, "crm_orders_to_erp", logical_date="2026-11-21T08:00:00+00:00",
                   wait_for_erp_seconds=0) == "success"
    importer.process_inbound(erp.admin)
    assert run_dag(env, "crm_orders_to_erp", logical_date="2026-11-21T08:05:00+00:00",
                   wait_for_erp_seconds=0) == "success"
    sent = {r["source_id"]: r["so_no"] for r in erp.query(
        "SELECT source_id, so_no FROM erp.sales_order WHERE source_id = ANY (%s)", (ids,))}
    assert set(sent) == set(ids) and all(client.get_record("Sales_Orders", i)["ERP_Order_No"] for i in ids)
    for minute in ("05", "00"):  # the write-back run, then the sending run
        [(run_id,)] = q(bridge, "SELECT airflow_run_id FROM bridge.run_ledger WHERE flow = 'crm_orders_to_erp' AND "
                                "airflow_run_id LIKE %s", (f"%2026-11-21T08:{minute}%",))
        assert run_dag(env, "bridge_rollback", flow="crm_orders_to_erp", run_id=run_id) == "success"
    for i in ids:
        now = client.get_record("Sales_Orders", i)
        assert {f: now.get(f) for f in fields} == {f: before[i].get(f) for f in fields}, i
    importer.process_inbound(erp.admin)  # the cancellations, through the inbound contract
    assert {r["status"] for r in erp.query("SELECT status FROM erp.sales_order WHERE so_no = ANY (%s)",
                                           (list(sent.values()),))} == {"Cancelled"}
    assert erp.scalar("SELECT count(*) FROM erp_inbound.sales_order_in WHERE action = 'CANCEL' AND "
                      "idempotency_key LIKE '%%rollback%%' AND status = 'PROCESSED' AND source_id = ANY (%s)",
                      (ids,)) == len(ids)
