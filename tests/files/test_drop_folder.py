"""The CSV drop folder end to end: the reference ERP in file mode (a legacy ERP that reads and writes GBK CSV files)
behind a real SFTP server, the bridge's flows unchanged on the exchange database, every DAG run through Airflow.
Stage 1 and the order write-back run through files exactly once (confirmed twice, amended, cancelled, a crash
between claiming a batch and writing it); the ERP's files are checked the way they arrive in real life: cut in
half, delivered twice, in GBK, with malformed lines, for a table the bridge does not know."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from types import SimpleNamespace

import psycopg2
import psycopg2.extras
import pytest

from include.adapters.csv_folder import exchange, fileformat, outbound
from include.adapters.csv_folder.folders import FROM_ERP, TO_ERP, LocalFolder
from include.sandbox.erp import file_mode
from tests.conftest import airflow_env_for, bridge_rows, drop_database, run_dag
from tests.integration.test_stage2_write_back import assert_exactly_once, confirm, erp_orders
from tests.sftp_server import SftpServer

pytestmark = pytest.mark.slow
ORDERS, FILES = "crm_orders_to_erp", "erp_file_exchange"
ERP_ENCODING = "gbk"


class Exchange(SimpleNamespace):
    def query(self, sql: str, params=None) -> list[dict]:
        with psycopg2.connect(dbname=self.dbname) as conn, conn.cursor(
                cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []


@pytest.fixture(scope="module")
def exchange_db():
    db = Exchange(dbname=f"exchange_test_{uuid.uuid4().hex[:8]}")
    exchange.build(db.dbname, drop=True)
    exchange.build(db.dbname)  # again: an existing exchange database is kept
    yield db
    drop_database(db.dbname)


@pytest.fixture(scope="module")
def sftp(tmp_path_factory):
    server = SftpServer(str(tmp_path_factory.mktemp("drop_folder")))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def erp_folder(sftp):
    """The ERP's side of the folder: the SFTP server's directory, seen locally (as the ERP host would)."""
    return LocalFolder(sftp.root)


@pytest.fixture(scope="module")
def client(crm_demo):
    return crm_demo.client()


@pytest.fixture(scope="module")
def env(tmp_path_factory, erp, exchange_db, bridge, crm_demo, sftp, erp_folder):
    pg = f"{os.environ['PGHOST']}:{os.environ['PGPORT']}"
    env = airflow_env_for(tmp_path_factory.mktemp("airflow"), exchange_db, bridge, crm_demo, **{
        "AIRFLOW_CONN_ERP_FILES": json.dumps(sftp.connection(encoding=ERP_ENCODING)),
        "AIRFLOW_CONN_ERP_EXCHANGE": f"postgresql://{os.environ['PGUSER']}@{pg}/{exchange_db.dbname}"})
    file_mode.export_files(erp.admin, erp_folder, ERP_ENCODING)  # the ERP's first nightly export
    assert run_dag(env, FILES) == "success"
    for dag_id in ("master_data_match", "erp_credit_to_crm"):
        assert run_dag(env, dag_id) == "success"
    return env


def erp_round(env, erp, erp_folder) -> dict:
    """Our files out, the ERP's import job, its export back in."""
    assert run_dag(env, FILES) == "success"
    done = file_mode.exchange(erp.admin, erp_folder, ERP_ENCODING)
    assert run_dag(env, FILES) == "success"
    return done


def orders(env) -> str:
    return run_dag(env, ORDERS, wait_for_erp_seconds=0)


def test_the_exchange_database_has_the_reference_contracts_columns(exchange_db, erp):
    def columns(dbname):
        with psycopg2.connect(dbname=dbname) as conn, conn.cursor() as cur:
            cur.execute("""SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns
                           WHERE table_schema IN ('erp_api', 'erp_inbound') ORDER BY 1, 2, ordinal_position""")
            return cur.fetchall()

    assert columns(exchange_db.dbname) == columns(erp.dbname)


def test_stage_1_reads_the_erp_through_its_gbk_files(env, erp, exchange_db, sftp, client):
    assert run_dag(env, "erp_stock_to_crm") == "success"
    products = {r["Product_Code"]: r for r in client.iter_records("Products", ["Product_Code", "Available_Qty"])}
    stock = erp.query("SELECT sku, sum(available) AS available FROM erp_api.stock_availability GROUP BY sku")
    assert stock and all(float(products[r["sku"]]["Available_Qty"] or 0) == float(r["available"])
                         for r in stock if r["sku"] in products)
    assert exchange_db.query("SELECT count(*) AS n FROM erp_api.customer_credit")[0]["n"] == erp.scalar(
        "SELECT count(*) FROM erp_api.customer_credit")
    # what arrived is archived as it came: GBK, with the customers' Chinese names
    archived = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(sftp.root, FROM_ERP, "archive"))
                for f in fs if f.endswith("__customers.csv")]
    raw = Path(archived[0]).read_bytes()
    assert "有限公司" in raw.decode("gbk")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")


def test_orders_reach_the_erp_through_files_exactly_once_in_their_final_state(env, erp, bridge, client,
                                                                               erp_folder, sftp):
    confirm(client, 5)
    assert orders(env) == "success"
    erp_round(env, erp, erp_folder)
    assert orders(env) == "success"  # the ERP's numbers back to the CRM
    sent = assert_exactly_once(erp, client, bridge)
    written = sorted(os.listdir(os.path.join(sftp.root, TO_ERP, "archive")))
    assert any(n.startswith(f"{ORDERS}__") and n.endswith("__sales_order_line_in.csv") for n in written), written

    # confirmed again (no change), amended, cancelled: one ERP order each, in its final state
    amended, cancelled = sorted(sent)[0], sorted(sent)[-1]
    record = client.get_record("Sales_Orders", amended)
    items = [{"id": i["id"], "Quantity": i["Quantity"] + 1} for i in record["Ordered_Items"]]
    client.update("Sales_Orders", [{"id": amended, "Ordered_Items": items, "Is_Prepaid": True},
                                   {"id": cancelled, "Status": "Cancelled"},
                                   {"id": sorted(sent)[1], "Status": "Confirmed"}])
    for _ in range(2):
        assert orders(env) == "success"
        erp_round(env, erp, erp_folder)
    assert orders(env) == "success"
    assert_exactly_once(erp, client, bridge)
    so_no = erp_orders(erp)[amended][0]
    qty = erp.scalar("SELECT sum(qty) FROM erp.sales_order_line WHERE so_no = %s", (so_no,))
    assert float(qty) == sum(i["Quantity"] + 1 for i in record["Ordered_Items"]), \
        client.get_record("Sales_Orders", amended)["Integration_Message"]
    assert erp.scalar("SELECT status FROM erp.sales_order WHERE source_id = %s", (cancelled,)) == "Cancelled"


def test_a_crash_between_claiming_a_batch_and_writing_it_sends_it_once(env, erp, bridge, client, exchange_db,
                                                                        erp_folder, sftp):
    new = confirm(client, 3)
    assert orders(env) == "success"
    conn = psycopg2.connect(dbname=exchange_db.dbname)
    try:  # the claim commits, then the process dies before any file is written
        claimed, _ = outbound._claim(conn, "sales_order_in", outbound.file_types()["to_erp"]["sales_order_in"],
                                     ERP_ENCODING, 10000)
    finally:
        conn.close()
    assert claimed
    batch = exchange_db.query("SELECT batch FROM erp_files.outbound_batch WHERE status = 'writing'")[0]["batch"]
    erp_round(env, erp, erp_folder)  # the next run writes that batch, under its name
    assert orders(env) == "success"
    sent = assert_exactly_once(erp, client, bridge)
    assert set(new) & sent
    first = Path(os.path.join(sftp.root, TO_ERP, "archive", f"{batch}__sales_order_in.csv")).read_bytes()

    # written again (as after a crash between the files and the 'written' mark): the same bytes, and the ERP,
    # which has read it once, adds nothing
    exchange_db.query("UPDATE erp_files.outbound_batch SET status = 'writing' WHERE batch = %s", (batch,))
    assert run_dag(env, FILES) == "success"
    assert Path(os.path.join(sftp.root, TO_ERP, f"{batch}__sales_order_in.csv")).read_bytes() == first
    erp_round(env, erp, erp_folder)
    assert orders(env) == "success"
    assert_exactly_once(erp, client, bridge)


def test_a_name_gbk_cannot_hold_is_answered_not_sent(exchange_db, erp_folder):
    conn = psycopg2.connect(dbname=exchange_db.dbname)
    try:
        with conn.cursor() as cur:
            cur.execute("""INSERT INTO erp_inbound.customer_in (source_system, source_id, idempotency_key,
                               customer_name) VALUES ('zoho_crm', 'gbk-test', 'gbk-test:1', '𠀀科技有限公司')""")
        conn.commit()
        outbound.send(conn, erp_folder, ERP_ENCODING)
    finally:
        conn.close()
    row = exchange_db.query("SELECT status, error_message FROM erp_inbound.customer_in WHERE source_id = 'gbk-test'")
    assert row[0]["status"] == "ERROR" and "gbk" in row[0]["error_message"] and "𠀀" in row[0]["error_message"]


def _erp_stock_file(erp, erp_folder) -> tuple[str, str]:
    """A fresh export from the ERP; the (manifest, stock file) names it wrote."""
    manifest = file_mode.export_files(erp.admin, erp_folder, ERP_ENCODING)[0]
    return manifest, manifest.replace(fileformat.MANIFEST_SUFFIX, "__stock_availability.csv")


def test_a_file_cut_in_half_waits_and_a_redelivered_one_loads_once(env, erp, exchange_db, erp_folder, sftp):
    erp.query("UPDATE erp.bin SET actual_qty = actual_qty + 7 WHERE sku = (SELECT min(sku) FROM erp.bin)")
    manifest, stock_file = _erp_stock_file(erp, erp_folder)
    path = os.path.join(sftp.root, FROM_ERP, stock_file)
    whole = Path(path).read_bytes()
    with open(path, "wb") as f:
        f.write(whole[: len(whole) // 2])  # the transfer broke off half-way
    assert run_dag(env, FILES) == "success"  # waits, loads nothing of the batch
    assert os.path.exists(os.path.join(sftp.root, FROM_ERP, manifest))
    assert not exchange_db.query("SELECT 1 FROM erp_files.inbound_file WHERE file_name = %s", (stock_file,))
    with open(path, "wb") as f:
        f.write(whole)  # the rest arrives
    assert run_dag(env, FILES) == "success"
    assert exchange_db.query("SELECT rows_loaded FROM erp_files.inbound_file WHERE file_name = %s", (stock_file,))
    sku = erp.scalar("SELECT min(sku) FROM erp.bin")
    assert exchange_db.query("SELECT sum(on_hand) AS q FROM erp_api.stock_availability WHERE sku = %s",
                             (sku,))[0]["q"] == erp.scalar(
        "SELECT sum(on_hand) FROM erp_api.stock_availability WHERE sku = %s", (sku,))

    # the ERP's scheduler delivers the same batch again, under a new name: nothing loads twice
    archived = os.path.join(sftp.root, FROM_ERP, "archive", manifest[: -len(fileformat.MANIFEST_SUFFIX)])
    again = "erp_export__again"
    spec = json.loads(Path(archived, manifest).read_text()) | {"batch": again}
    for entry in spec["files"]:
        shutil.copy(os.path.join(archived, entry["name"]), os.path.join(sftp.root, FROM_ERP, entry["name"]))
    erp_folder.write_atomic(f"{FROM_ERP}/{again}{fileformat.MANIFEST_SUFFIX}", json.dumps(spec).encode())
    before = exchange_db.query("SELECT count(*) AS n FROM erp_files.inbound_file")[0]["n"]
    assert run_dag(env, FILES) == "success"
    assert exchange_db.query("SELECT count(*) AS n FROM erp_files.inbound_file")[0]["n"] == before
    assert not [n for n in os.listdir(os.path.join(sftp.root, FROM_ERP)) if n.endswith(".csv")]  # all archived


def test_malformed_lines_are_quarantined_with_file_and_line_and_the_rest_loads(env, erp, exchange_db, bridge,
                                                                               erp_folder, sftp, client):
    sku, warehouse = erp.query("SELECT sku, warehouse FROM erp_api.stock_availability ORDER BY sku LIMIT 1")[0].values()
    other = erp.query("SELECT sku, warehouse FROM erp_api.stock_availability ORDER BY sku LIMIT 1 OFFSET 1")[0]
    header = "sku,warehouse,on_hand,reserved,available,updated_at"
    lines = [header, f"{sku},{warehouse},4242,0,4242,2026-12-07 10:00:00",        # 2: good
             f"{other['sku']},{other['warehouse']},lots,0,1,2026-12-07 10:00:00",  # 3: not a number
             f"{other['sku']},{other['warehouse']},1,0",                           # 4: too few fields
             f"{sku},{warehouse},1,0,1,2026-12-07 10:00:00",                       # 5: the same key as line 2
             ",WH-X,1,0,1,2026-12-07 10:00:00"]                                    # 6: no sku
    data = ("\r\n".join(lines) + "\r\n").encode("gbk") + "仓库,".encode("gbk")[:3] + b"\xff,1,0,1,\r\n"  # 7: not GBK
    name = "erp_stock_delta__001"
    entry = fileformat.FileEntry(f"{name}__stock_availability.csv", "stock_availability", 6, len(data),
                                 fileformat.sha256(data))
    erp_folder.write_atomic(f"{FROM_ERP}/{entry.name}", data)
    erp_folder.write_atomic(f"{FROM_ERP}/{name}{fileformat.MANIFEST_SUFFIX}", fileformat.Manifest(
        batch=name, encoding=ERP_ENCODING, files=[entry], mode="delta").dump())
    assert run_dag(env, FILES) == "success"
    assert exchange_db.query("SELECT available FROM erp_api.stock_availability WHERE sku = %s AND warehouse = %s",
                             (sku, warehouse))[0]["available"] == 4242
    quarantined = dict(bridge_rows(bridge, "SELECT business_key, reasons FROM bridge.quarantine "
                                           "WHERE flow = 'erp_file_exchange' AND status = 'open'"))
    for line, words in ((3, "not a number"), (4, "4 fields, the header has 6"), (5, "the same sku, warehouse as "
                                                                                    "line 2"),
                        (6, "sku is empty"), (7, "not valid gbk")):
        reasons = " ".join(quarantined[f"{entry.name}:{line}"])
        assert words in reasons and f"line {line}" in reasons, (line, reasons)
    assert f"{entry.name}:2" not in quarantined

    # a batch for a table the exchange database does not have: nothing of it loads, it is set aside, the run fails
    bad = fileformat.encode_csv(["sku"], [("X",)], "utf-8")
    name = "erp_misc__001"
    erp_folder.write_atomic(f"{FROM_ERP}/{name}__stock_ledger.csv", bad)
    erp_folder.write_atomic(f"{FROM_ERP}/{name}{fileformat.MANIFEST_SUFFIX}", fileformat.Manifest(
        batch=name, encoding="utf-8", files=[fileformat.FileEntry(f"{name}__stock_ledger.csv", "stock_ledger", 1,
                                                                  len(bad), fileformat.sha256(bad))]).dump())
    assert run_dag(env, FILES) == "failed"
    assert os.path.exists(os.path.join(sftp.root, FROM_ERP, "rejected", f"{name}__stock_ledger.csv"))
    assert run_dag(env, FILES) == "failed"  # and so on, until the operator has dealt with it
    shutil.rmtree(os.path.join(sftp.root, FROM_ERP, "rejected"))
    assert run_dag(env, FILES) == "success"
