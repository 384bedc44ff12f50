"""`make demo ERP=files`: the demo's flows, mappings and suites against the reference ERP in file mode — a legacy ERP
that only reads and writes GB18030 CSV files in a drop folder.

The flows' `erp_read` / `erp_write` connections point at the exchange database ($EXCHANGE_DB, default
erp_exchange); `erp_files` is the local folder .local/drop_folder (the tests run the same through a real SFTP
server). Where the reference demo runs the ERP's own jobs, this runs them on the ERP's side of the folder, with the
bridge's erp_file_exchange DAG before (our files out) and after (its export in).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from include.adapters.csv_folder import exchange
from include.adapters.csv_folder.folders import LocalFolder
from include.sandbox.erp import db as erp_db
from include.sandbox.erp import file_mode

ROOT = Path(__file__).resolve().parents[3]
ERP_ENCODING = "gb18030"


def exchange_db_name() -> str:
    return os.environ.get("EXCHANGE_DB", "erp_exchange")


def folder_root() -> Path:
    return ROOT / ".local" / "drop_folder"


def prepare(erp_dbname: str, run_dag: Callable[[str, dict], str]) -> None:
    """A fresh exchange database and folder, the connections pointed at them, the ERP's first export loaded."""
    name = exchange_db_name()
    if name == erp_dbname:
        raise SystemExit(f"EXCHANGE_DB is '{name}', the ERP's own database: give the exchange database its own name")
    print(f"==> drop folder: exchange database '{name}', folder {folder_root()} ({ERP_ENCODING} files)")
    exchange.build(name, drop=True)
    shutil.rmtree(folder_root(), ignore_errors=True)
    for conn in ("AIRFLOW_CONN_ERP_READ", "AIRFLOW_CONN_ERP_WRITE"):  # same roles, the exchange database
        os.environ[conn] = os.environ[conn].rsplit("/", 1)[0] + f"/{name}"
    pg = f"{os.environ['PGHOST']}:{os.environ['PGPORT']}"
    os.environ["AIRFLOW_CONN_ERP_EXCHANGE"] = f"postgresql://{os.environ.get('PGUSER', 'postgres')}@{pg}/{name}"
    os.environ["AIRFLOW_CONN_ERP_FILES"] = json.dumps({"conn_type": "fs", "extra": {
        "path": str(folder_root()), "encoding": ERP_ENCODING}})
    with erp_db.connect(erp_dbname) as conn:
        file_mode.export_files(conn, LocalFolder(folder_root()), ERP_ENCODING)
    _exchange_dag(run_dag)


def run_erp_job(dag_id: str, conf: dict, erp_dbname: str, run_dag: Callable[[str, dict], str]) -> None:
    """The ERP's job `dag_id` on its side of the folder. The import job: our files out, the ERP imports and
    processes them and exports; a business day: the ERP's own DAG, then its export. Raises on failure."""
    started = time.monotonic()
    if dag_id == "erp_sandbox_import_job":
        _exchange_dag(run_dag)
        with erp_db.connect(erp_dbname) as conn:
            done = file_mode.exchange(conn, LocalFolder(folder_root()), ERP_ENCODING)
        what = f"imported {done['imported']['rows']} rows in {done['imported']['batches']} batch(es)"
    else:
        if run_dag(dag_id, conf) != "success":
            raise RuntimeError(f"{dag_id} failed")
        with erp_db.connect(erp_dbname) as conn:
            file_mode.export_files(conn, LocalFolder(folder_root()), ERP_ENCODING)
        what = "exported"
    _exchange_dag(run_dag)
    label = "erp side: " + dag_id.removeprefix("erp_sandbox_")
    print(f"    {label:<32} done     {time.monotonic() - started:5.1f} s  {what}")


def _exchange_dag(run_dag: Callable[[str, dict], str]) -> None:
    if (state := run_dag("erp_file_exchange", {})) != "success":
        raise RuntimeError(f"erp_file_exchange {state}")


def print_files() -> None:
    """What crossed the folder, from the adapter's ledger."""
    with erp_db.connect(exchange_db_name()) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), coalesce(sum(row_count), 0) FROM erp_files.outbound_batch "
                    "WHERE status = 'written'")
        batches, rows = cur.fetchone()
        cur.execute("SELECT count(*), coalesce(sum(rows_loaded), 0), coalesce(sum(rows_quarantined), 0) "
                    "FROM erp_files.inbound_file")
        files, loaded, quarantined = cur.fetchone()
    print(f"Drop folder ({folder_root()}):\n  to the ERP: {batches} batches, {rows} documents; from the ERP: "
          f"{files} files, {loaded} rows loaded, {quarantined} lines quarantined")
