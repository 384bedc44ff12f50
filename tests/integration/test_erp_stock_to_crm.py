"""erp_stock_to_crm end to end: the real DAG run by Airflow (dag.test) against both sandboxes and a bridge DB."""

import datetime as dt
import json
import os
import subprocess
import sys
from decimal import Decimal

import pytest

from include.sandbox.erp import simulator
from tests.conftest import CRM_CREDENTIALS

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN_DAG = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
run = DagBag().get_dag("erp_stock_to_crm").test(run_conf=json.loads(sys.argv[1]))
print("STATE", run.state)
"""


@pytest.fixture(scope="module")
def crm_for_erp(crm_server, erp):
    crm_server.reset(customers=60, skus=300, seed_value=7)  # the ERP fixture's demo company
    return crm_server


@pytest.fixture(scope="module")
def crm_client(crm_for_erp):
    return crm_for_erp.client()


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory, erp, bridge, crm_for_erp):
    home = tmp_path_factory.mktemp("airflow")
    crm = crm_for_erp
    env = os.environ | {
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": os.path.join(ROOT, "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "1",
        "BRIDGE_DATA_DOCS_DIR": str(home / "data_docs"),
        "AIRFLOW_CONN_ERP_READ": f"postgresql://erp_reader:{os.environ['ERP_READ_PASSWORD']}@"
                                 f"{os.environ['PGHOST']}:{os.environ['PGPORT']}/{erp.dbname}",
        "AIRFLOW_CONN_BRIDGE_DB": f"postgresql://{os.environ['PGUSER']}@{os.environ['PGHOST']}:"
                                  f"{os.environ['PGPORT']}/{bridge[0]}",
        "AIRFLOW_CONN_ZOHO_CRM": json.dumps({
            "conn_type": "zoho_crm", "host": crm.url, "login": CRM_CREDENTIALS["ZOHO_CLIENT_ID"],
            "password": CRM_CREDENTIALS["ZOHO_CLIENT_SECRET"],
            "extra": {"accounts_url": crm.url, "file_upload_url": crm.url, "org_id": "60012345678",
                      "refresh_token": CRM_CREDENTIALS["ZOHO_REFRESH_TOKEN"], "max_retries": 12,
                      "backoff_base": 0.02, "backoff_max": 0.3}}),
    }
    env = {k: v for k, v in env.items() if not k.startswith("AIRFLOW_CONN_IM")}
    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    subprocess.run([airflow, "pools", "set", "zoho_crm", "5", "Zoho CRM concurrent requests"], env=env, check=True,
                   capture_output=True, timeout=120)
    return env


def run_flow(env, **conf) -> str:
    """One DAG run through Airflow in a subprocess; its output goes to AIRFLOW_HOME/last_run_output.txt."""
    out_path = os.path.join(env["AIRFLOW_HOME"], "last_run_output.txt")
    with open(out_path, "w") as out:
        subprocess.run([sys.executable, "-c", RUN_DAG, json.dumps(conf)], env=env, stdout=out,
                       stderr=subprocess.STDOUT, timeout=300, cwd=ROOT)
    with open(out_path) as out:
        text = out.read()
    states = [ln.split()[1] for ln in text.splitlines() if ln.startswith("STATE")]
    assert states, text[-6000:]
    return states[0]


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
    assert open_rows[sku] == ["SZ01: expect_column_values_to_be_between(on_hand, min_value=0)"]
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


def test_a_load_killed_midway_then_a_storm_leave_no_gap_and_no_duplicate(airflow_env, erp, bridge, crm_for_erp,
                                                                         crm_client):
    import psycopg2

    from include.bridge.runtime import Systems
    from include.flows import erp_stock_to_crm as flow

    count_before = crm_for_erp.admin("GET", "stats")["records"]["Products"]
    simulator.simulate(erp.admin, 1)
    # a run that dies after loading its first chunk: no finish, no watermark, no synced state
    erp_conn = psycopg2.connect(dbname=erp.dbname, user="erp_reader", password=os.environ["ERP_READ_PASSWORD"])
    url = f"postgresql+psycopg2://{bridge[1].info.user}@{bridge[1].info.host}:{bridge[1].info.port}/{bridge[0]}"
    systems = Systems.from_connections(bridge[1], url, erp=erp_conn, crm=crm_client)
    info = flow.run_extract(systems, "manual__killed-midway")
    planned = flow.run_validate(systems, info)
    assert planned["queued"] > 0
    loaded_before_crash = flow.run_load(systems, planned, planned["chunks"][0])["loaded"]
    erp_conn.close()
    assert 0 < loaded_before_crash < planned["queued"]
    # the next run, under a storm of 500s and 429s, finds what the dead run did not write
    crm_for_erp.configure(error_rate=0.6, burst_429=2, fault_seed=3)
    try:
        assert run_flow(airflow_env) == "success"
    finally:
        crm_for_erp.configure(error_rate=0.0, burst_429=0)
    storm = crm_for_erp.admin("GET", "stats")["stats"]
    assert storm.get("injected_500", 0) > 0 and storm.get("injected_429", 0) == 2
    assert_crm_matches_erp(erp, crm_client, skip={"ERP-ONLY-1"})  # still quarantined: not in the CRM
    assert crm_for_erp.admin("GET", "stats")["records"]["Products"] == count_before  # updates only, no duplicate


def test_large_changes_go_through_bulk_write(erp, bridge, crm_for_erp, crm_client, monkeypatch):
    import psycopg2

    from include.bridge.runtime import Systems
    from include.flows import erp_stock_to_crm as flow

    monkeypatch.setitem(flow.mapping()["settings"], "bulk_threshold", 50)
    with bridge[1].cursor() as cur:  # forget what was pushed: every product counts as changed
        cur.execute("DELETE FROM bridge.synced_state WHERE flow = 'erp_stock_to_crm'")
    bridge[1].commit()
    erp_conn = psycopg2.connect(dbname=erp.dbname, user="erp_reader", password=os.environ["ERP_READ_PASSWORD"])
    url = f"postgresql+psycopg2://{bridge[1].info.user}@{bridge[1].info.host}:{bridge[1].info.port}/{bridge[0]}"
    systems = Systems.from_connections(bridge[1], url, erp=erp_conn, crm=crm_client)
    info = flow.run_extract(systems, "manual__bulk", backfill=(dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
                                                               dt.datetime(2100, 1, 1, tzinfo=dt.UTC)))
    planned = flow.run_validate(systems, info)
    assert planned["bulk"] and planned["chunks"] == [0] and planned["queued"] > 250
    loaded = flow.run_load(systems, planned, 0)
    result = flow.run_finish(systems, planned)
    erp_conn.close()
    assert loaded == {"loaded": planned["queued"], "failed": 0} and result["loaded"] == planned["queued"]
    assert_crm_matches_erp(erp, crm_client, skip={"ERP-ONLY-1"})
