"""erp_stock_to_crm end to end: the real DAG run by Airflow (dag.test) against both sandboxes and a bridge DB."""

import datetime as dt
import os
from decimal import Decimal

import pytest

from include.sandbox.erp import db as erp_db
from include.sandbox.erp import simulator
from tests.conftest import airflow_env_for, bridge_rows, kill_dag_run_when, run_dag

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def crm_for_erp(crm_server, erp):
    crm_server.reset(customers=60, skus=300, seed_value=7)  # the ERP fixture's demo company
    return crm_server


@pytest.fixture(scope="module")
def crm_client(crm_for_erp):
    return crm_for_erp.client()


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory, erp, bridge, crm_for_erp):
    return airflow_env_for(tmp_path_factory.mktemp("airflow"), erp, bridge, crm_for_erp)


def run_flow(env, **conf) -> str:
    return run_dag(env, "erp_stock_to_crm", **conf)


def last_run(bridge) -> dict:
    with bridge[1].cursor() as cur:
        cur.execute("""SELECT status, rows_extracted, rows_loaded, rows_quarantined, rows_failed, message
                       FROM bridge.run_ledger WHERE flow = 'erp_stock_to_crm' ORDER BY started_at DESC LIMIT 1""")
        row = cur.fetchone()
    bridge[1].commit()
    return dict(zip(["status", "extracted", "loaded", "quarantined", "failed", "message"], row, strict=True))


def erp_totals(erp) -> dict[str, Decimal]:
    return {r["sku"]: r["on_hand"] for r in erp.query(
        "SELECT sku, sum(on_hand) AS on_hand FROM erp_api.stock_availability GROUP BY sku")}


def crm_totals(client) -> dict[str, float]:
    return {r["Product_Code"].strip().upper(): r["Qty_in_Stock"]
            for r in client.iter_coql("Products", ["Product_Code", "Qty_in_Stock"], where="Qty_in_Stock is not null")}


def assert_crm_matches_erp(erp, client, skip=()):
    want, have = erp_totals(erp), crm_totals(client)
    for sku, qty in want.items():
        if sku not in skip:
            assert have.get(sku) == float(qty), sku


def test_first_run_loads_every_linked_product_and_the_second_pushes_nothing(airflow_env, erp, bridge, crm_client):
    assert run_flow(airflow_env) == "success"
    first = last_run(bridge)
    assert first["status"] == "success" and first["loaded"] > 250 and first["failed"] == 0
    assert_crm_matches_erp(erp, crm_client)
    product = crm_client.get_record("Products", "MTR-000001", external_field="Product_Code")
    assert product["Stock_Synced_At"] and "SH01:" in product["Stock_By_Warehouse"]
    assert run_flow(airflow_env) == "success"
    assert last_run(bridge)["loaded"] == 0


def test_after_a_business_day_only_changed_skus_move(airflow_env, erp, bridge, crm_for_erp, crm_client):
    before = erp_totals(erp)
    simulator.simulate(erp.admin, 2)
    after = erp_totals(erp)
    changed = {sku for sku in after if after[sku] != before.get(sku)}
    assert changed
    assert run_flow(airflow_env) == "success"
    run = last_run(bridge)
    assert len(changed) <= run["loaded"] < len(after)  # other figures (reserved, incoming) may move too
    assert_crm_matches_erp(erp, crm_client)


def test_dirty_rows_are_quarantined_and_the_rest_loads(airflow_env, erp, bridge, crm_for_erp, crm_client):
    sku = erp.scalar("SELECT sku FROM erp.bin WHERE warehouse = 'SZ01' ORDER BY sku DESC LIMIT 1")
    erp.query("UPDATE erp.bin SET actual_qty = -5, updated_at = now() WHERE sku = %s AND warehouse = 'SZ01'", (sku,))
    erp.query("""INSERT INTO erp.item (sku, item_name, item_group, stock_uom, tax_rate_code)
                 VALUES ('ERP-ONLY-1', 'ERP 新品', 'MTR', 'PCS', 'VAT13')""")
    erp.query("INSERT INTO erp.bin (sku, warehouse, actual_qty) VALUES ('ERP-ONLY-1', 'SH01', 3)")
    other = erp.scalar("SELECT sku FROM erp.bin WHERE warehouse = 'SH01' AND sku <> %s ORDER BY sku LIMIT 1", (sku,))
    erp.query("UPDATE erp.bin SET actual_qty = actual_qty + 1, updated_at = now() "
              "WHERE sku = %s AND warehouse = 'SH01'", (other,))
    assert run_flow(airflow_env) == "success"
    run = last_run(bridge)
    assert run["status"] == "partial" and run["loaded"] >= 1
    with bridge[1].cursor() as cur:
        cur.execute("""SELECT business_key, reasons FROM bridge.quarantine
                       WHERE flow = 'erp_stock_to_crm' AND status = 'open' ORDER BY 1""")
        open_rows = dict(cur.fetchall())
    bridge[1].commit()
    assert set(open_rows) == {sku, "ERP-ONLY-1"}
    assert open_rows[sku] == ["SZ01: expect_column_values_to_be_between(on_hand, min_value=0, max_value=1e+15)"]
    assert open_rows["ERP-ONLY-1"] == ["SH01: expect_column_values_to_be_in_set(known_sku, value_set=[True])"]
    assert crm_totals(crm_client)[other] == float(erp_totals(erp)[other])  # the clean change loaded

    # fixed at the source, then replayed: the quarantine entry closes and the CRM shows the fix
    erp.query("UPDATE erp.bin SET actual_qty = 4, updated_at = now() WHERE sku = %s AND warehouse = 'SZ01'", (sku,))
    assert run_flow(airflow_env, replay_quarantine=True) == "success"
    with bridge[1].cursor() as cur:
        cur.execute("SELECT business_key, status FROM bridge.quarantine WHERE flow = 'erp_stock_to_crm' ORDER BY 1")
        assert dict(cur.fetchall()) == {sku: "replayed", "ERP-ONLY-1": "open"}
    bridge[1].commit()
    assert crm_totals(crm_client)[sku] == float(erp_totals(erp)[sku])


def test_over_threshold_batch_loads_nothing(airflow_env, erp, bridge, crm_for_erp, crm_client):
    crm_before = crm_totals(crm_client)
    erp.query("""UPDATE erp.bin SET actual_qty = -1, updated_at = now()
                 WHERE warehouse = 'SH01' AND sku IN (SELECT sku FROM erp.bin WHERE warehouse = 'SH01'
                                                      ORDER BY sku LIMIT 150)""")  # half the SKUs
    assert run_flow(airflow_env) == "failed"
    run = last_run(bridge)
    assert run["status"] == "gate_failed" and run["loaded"] == 0
    assert "rows failed" in run["message"] and "Data Docs: file://" in run["message"]
    assert crm_totals(crm_client) == crm_before
    erp.query("UPDATE erp.bin SET actual_qty = 1, updated_at = now() WHERE actual_qty = -1")


def test_a_load_killed_midway_then_cleared_under_a_storm_leaves_no_gap_and_no_duplicate(
        airflow_env, erp, bridge, crm_for_erp, crm_client):
    count_before = crm_for_erp.admin("GET", "stats")["records"]["Products"]
    simulator.simulate(erp.admin, 1)
    # slow CRM writes, then SIGKILL the Airflow process right after the first update batch was committed
    crm_for_erp.configure(latency_ms=600, fault_methods=["PUT"])
    puts = crm_for_erp.admin("GET", "stats")["stats"].get("handled_PUT", 0)
    logical_date = "2026-03-02T08:00:00+00:00"
    try:
        kill_dag_run_when(airflow_env, "erp_stock_to_crm", {"logical_date": logical_date}, lambda: crm_for_erp.admin(
            "GET", "stats")["stats"].get("handled_PUT", 0) > puts, "killed_run_output.txt")
    finally:
        crm_for_erp.configure(latency_ms=0, fault_methods=["GET", "POST", "PUT", "DELETE"])
    killed = last_run(bridge)
    assert killed["status"] == "running" and killed["loaded"] == 0  # died mid-load: no finish, no watermark
    with bridge[1].cursor() as cur:
        cur.execute("""SELECT count(*) FILTER (WHERE q.status = 'pending'), count(*) FROM bridge.load_queue q
                       JOIN bridge.run_ledger l USING (batch_id)
                       WHERE l.status = 'running' AND l.flow = 'erp_stock_to_crm'""")
        pending, queued = cur.fetchone()
    bridge[1].commit()
    assert queued > 100 and 0 < pending < queued + 1  # the CRM holds part of it (recorded or not)
    erp_now, crm_now = erp_totals(erp), crm_totals(crm_client)
    assert any(crm_now.get(k) != float(v) for k, v in erp_now.items() if k != "ERP-ONLY-1")  # a gap, for now

    # the operator clears the run (same run id, next try) while the CRM throws 500s and 429s
    crm_for_erp.configure(error_rate=0.6, burst_429=2, fault_seed=3)
    try:
        assert run_flow(airflow_env, logical_date=logical_date) == "success"
    finally:
        crm_for_erp.configure(error_rate=0.0, burst_429=0)
    storm = crm_for_erp.admin("GET", "stats")["stats"]
    assert storm.get("injected_500", 0) > 0 and storm.get("injected_429", 0) == 2
    retried = last_run(bridge)
    assert retried["status"] in ("success", "partial") and retried["loaded"] == queued and retried["failed"] == 0
    assert_crm_matches_erp(erp, crm_client, skip={"ERP-ONLY-1"})  # still quarantined: not in the CRM
    assert crm_for_erp.admin("GET", "stats")["records"]["Products"] == count_before  # updates only, no duplicate
    with bridge[1].cursor() as cur:  # one ledger row and one audit row per product for the killed-and-cleared run
        cur.execute("""SELECT count(*), count(DISTINCT business_key) FROM bridge.audit_log a
                       JOIN bridge.run_ledger l USING (batch_id) WHERE l.airflow_run_id LIKE %s""",
                    (f"%{logical_date[:10]}%",))
        audits, keys = cur.fetchone()
    bridge[1].commit()
    assert audits == keys == queued


def test_large_changes_go_through_bulk_write(erp, bridge, crm_for_erp, crm_client, monkeypatch):
    import psycopg2

    from include.bridge import rollback
    from include.bridge.runtime import Systems
    from include.flows import erp_reversals
    from include.flows import erp_stock_to_crm as flow

    monkeypatch.setitem(flow.mapping()["settings"], "load_mode", "bulk")
    # pages of 100: the next page's job starts before the last one's result is recorded (on a second connection)
    monkeypatch.setitem(flow.mapping()["settings"], "load_page_rows", 100)
    with bridge[1].cursor() as cur:  # forget what was pushed: every product counts as changed
        cur.execute("DELETE FROM bridge.synced_state WHERE flow = 'erp_stock_to_crm'")
    bridge[1].commit()
    erp_skus = set(erp_totals(erp))
    edited = [r["id"] for r in crm_client.iter_coql("Products", ["Product_Code"], where="Product_Code is not null")
              if r["Product_Code"].strip().upper() in erp_skus][:3]
    # what users typed into three products (odd characters included) is what a rollback of the bulk load restores
    typed = [{"Qty_in_Stock": 12345.5, "Available_Qty": None, "Below_Safety_Stock": True, "First_Shortage_Date": None,
              "Stock_By_Warehouse": 'WH1: 盘点中 \\ "tab"\there'},
             {"Reserved_Qty": 7.0, "First_Shortage_Date": "2026-01-31"},
             {"Below_Safety_Stock": False, "Stock_By_Warehouse": None}]
    edits = [{"id": i, **t} for i, t in zip(edited, typed, strict=True)]
    assert all(o.ok for o in crm_client.update("Products", edits))
    fields = list(flow.mapping()["fields"])
    held = {i: {f: crm_client.get_record("Products", i).get(f) for f in fields} for i in edited}
    erp_conn = psycopg2.connect(dbname=erp.dbname, user=erp_db.READ_ROLE, password=os.environ["ERP_READ_PASSWORD"])
    url = f"postgresql+psycopg2://{bridge[1].info.user}@{bridge[1].info.host}:{bridge[1].info.port}/{bridge[0]}"
    systems = Systems.from_connections(bridge[1], url, erp=erp_conn, crm=crm_client)
    run = flow.MIRROR.extract(systems, "manual__bulk", backfill=(dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
                                                                 dt.datetime(2100, 1, 1, tzinfo=dt.UTC)))
    flow.MIRROR.validate(systems, run)
    queued = run.counts["queued"]
    assert run.facts["bulk"] and run.facts["chunks"] == [0] and queued > 250
    loaded = flow.MIRROR.load(systems, run, 0)
    result = flow.MIRROR.finish(systems, run)
    erp_conn.close()
    assert loaded == {"loaded": queued, "failed": 0} and result["loaded"] == queued
    assert systems.bridge_spare().closed == 0 and systems.bridge_spare() is not bridge[1]
    jobs = bridge_rows(bridge, "SELECT count(*) FROM bridge.key_version WHERE batch_id = %s", (run.batch_id,))
    assert jobs == [(queued,)]  # every page claimed its keys and committed them with its outcomes
    assert_crm_matches_erp(erp, crm_client, skip={"ERP-ONLY-1"})

    # one bulk read kept every first write's before-image, typed as the API's
    audited = dict(bridge_rows(bridge, "SELECT record_id, before FROM bridge.audit_log WHERE batch_id = %s",
                               (run.batch_id,)))
    assert len(audited) == queued and all(b is not None for b in audited.values())
    assert {i: audited[f"Products:{i}"] for i in edited} == held
    undone = rollback.run(systems, "manual__rollback_bulk", reversals=erp_reversals(), batch_id=run.batch_id)
    assert undone["records"] == queued
    assert {i: {f: crm_client.get_record("Products", i).get(f) for f in fields} for i in edited} == held
