"""The exchange database (build) and the two jobs the erp_file_exchange DAG runs (send_files, receive_files), from
Airflow connections: `erp_exchange` (the exchange database, as its owner), `erp_files` (the drop folder, see
folders.py) and `bridge_db` (for the quarantine)."""

from __future__ import annotations

import os
from pathlib import Path

from include.adapters.csv_folder import inbound, outbound
from include.sandbox.erp import db as erp_db

SQL = (Path(__file__).resolve().parent / "sql" / "exchange.sql", erp_db.SQL_DIR / "40_inbound.sql")
EXCHANGE_CONN, FILES_CONN = "erp_exchange", "erp_files"


def build(dbname: str, drop: bool = False) -> None:
    """Create the exchange database: the contract's tables (the reader sees erp_api, the writer erp_inbound,
    exactly as on any ERP) and the adapter's ledger. An existing database is left as it is unless `drop`."""
    erp_db.create_database(dbname, drop=drop)
    conn = erp_db.connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('erp_files.inbound_file') IS NOT NULL")
            if not cur.fetchone()[0]:
                for path in SQL:
                    cur.execute(path.read_text(encoding="utf-8"))
        conn.commit()
        erp_db.setup_roles(conn, dbname, os.environ.get("ERP_READ_PASSWORD"), os.environ.get("ERP_WRITE_PASSWORD"),
                           private_schema="erp_files")
    finally:
        conn.close()


def _folder():
    from include.adapters.csv_folder.folders import folder_from_connection
    from include.bridge.runtime import connection

    return folder_from_connection(connection(FILES_CONN))


def send_files() -> dict:
    """New inbound documents of the exchange database into to_erp/ (the DAG's send task)."""
    from include.bridge.runtime import pg_connect

    folder, settings = _folder()
    conn = pg_connect(EXCHANGE_CONN)
    try:
        return outbound.send(conn, folder, settings["encoding"], settings["batch_rows"]) | {"folder": repr(folder)}
    finally:
        conn.close()
        folder.close()


def receive_files() -> dict:
    """The ERP's export files from from_erp/ into the exchange database (the DAG's receive task). Raises when a
    batch was rejected or is stuck, after loading every other: the operator must look (the message says where)."""
    from include.bridge.runtime import pg_connect

    folder, settings = _folder()
    conn, bridge = pg_connect(EXCHANGE_CONN), pg_connect("bridge_db")
    try:
        from include.bridge import db as bridge_db

        bridge_db.ensure_schema(bridge)
        result = inbound.receive(conn, bridge, folder, timezone=settings["timezone"],
                                 stale_minutes=settings["stale_minutes"]) | {"folder": repr(folder)}
    finally:
        conn.close()
        bridge.close()
        folder.close()
    if result["rejected"] or result["stuck"] or result["set_aside"]:
        raise RuntimeError(f"drop folder {result['folder']}: " + "; ".join(
            [f"rejected (moved to from_erp/rejected/): {r}" for r in result["rejected"]]
            + [f"stuck (incomplete for over {settings['stale_minutes']} min): {s}" for s in result["stuck"]]
            + ([f"in from_erp/rejected/ until fixed or removed: {', '.join(result['set_aside'])}"]
               if result["set_aside"] else [])))
    return result
