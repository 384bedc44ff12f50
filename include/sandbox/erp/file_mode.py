"""The reference ERP in file mode: it plays a legacy ERP that exchanges CSV files instead of tables.

Its side of the drop folder (include/adapters/csv_folder): it imports the bridge's batch files from `to_erp/`
into its own inbound tables (a batch whose manifest is missing or does not match its files waits), runs its import
job, and exports its read views and its answers to `from_erp/` — one "nightly export" per call:
`erp_export__<stamp>` (every erp_api view, full snapshots) and `erp_answers__<stamp>` (status, document number
and messages of the documents it processed, by idempotency key). The same flows and tests then run through files.
"""

from __future__ import annotations

import datetime as dt
import logging

import psycopg2.extras
from psycopg2 import sql

from include.adapters.csv_folder import fileformat
from include.adapters.csv_folder.folders import ARCHIVE, FROM_ERP, TO_ERP, Folder
from include.sandbox.erp import importer
from include.sandbox.erp.db import ERP_ANSWER_COLUMNS

log = logging.getLogger(__name__)
CONFLICT_KEYS = {"sales_order_line_in": "(idempotency_key, line_no)"}


def import_files(conn, folder: Folder) -> dict:
    """Every complete batch in to_erp/ into erp_inbound (a document already there is left as it is), archived."""
    counts = {"batches": 0, "rows": 0, "waiting": 0}
    for name in folder.list(TO_ERP):
        if not name.endswith(fileformat.MANIFEST_SUFFIX):
            continue
        manifest = fileformat.parse_manifest(name, folder.read(f"{TO_ERP}/{name}"))
        files = {e.name: folder.read(f"{TO_ERP}/{e.name}") for e in manifest.files}
        if any(fileformat.check_against(e, files[e.name]) for e in manifest.files):
            counts["waiting"] += 1
            continue
        with conn.cursor() as cur:
            for entry in manifest.files:  # headers before their lines: the manifest's order
                header, lines = fileformat.read_csv(files[entry.name], manifest.encoding, entry.name)
                rows = []
                for line in lines:
                    if line.error:
                        raise ValueError(f"the ERP refuses {entry.name}: {line.error}")
                    rows.append(tuple(v if v != "" else None for v in line.values))
                psycopg2.extras.execute_values(cur, sql.SQL("INSERT INTO erp_inbound.{} ({}) VALUES %s "
                                                            "ON CONFLICT {} DO NOTHING").format(
                    sql.Identifier(entry.table), sql.SQL(", ").join(map(sql.Identifier, header)),
                    sql.SQL(CONFLICT_KEYS.get(entry.table, "(idempotency_key)"))).as_string(cur), rows)
                counts["rows"] += len(rows)
        conn.commit()
        for entry in manifest.files:
            folder.move(f"{TO_ERP}/{entry.name}", f"{TO_ERP}/{ARCHIVE}/{entry.name}")
        folder.move(f"{TO_ERP}/{name}", f"{TO_ERP}/{ARCHIVE}/{name}")
        counts["batches"] += 1
    return counts


def export_files(conn, folder: Folder, encoding: str = "gb18030", stamp: str | None = None) -> list[str]:
    """The ERP's export: its views (full) and its answers (delta), each a batch with its manifest; the names."""
    stamp = stamp or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    with conn.cursor() as cur:
        cur.execute("""SELECT table_name FROM information_schema.tables WHERE table_schema = 'erp_api'
                       ORDER BY table_name""")
        views = [("erp_api", r[0], r[0]) for r in cur.fetchall()]
        cur.execute("""SELECT table_name, array_agg(column_name::text ORDER BY ordinal_position)
                       FROM information_schema.columns WHERE table_schema = 'erp_inbound'
                         AND table_name LIKE '%%\\_in' AND (column_name = 'idempotency_key'
                           OR column_name = ANY (%s) AND column_name NOT IN ('id', 'created_at'))
                       GROUP BY table_name HAVING bool_or(column_name = 'status') ORDER BY table_name""",
                    (list(ERP_ANSWER_COLUMNS),))
        answers = cur.fetchall()
        names = [_write_batch(cur, folder, f"erp_export__{stamp}", "full", encoding, [
            (table, sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(view)))
            for schema, view, table in views])]
        names.append(_write_batch(cur, folder, f"erp_answers__{stamp}", "delta", encoding, [
            (f"{table}_answers", sql.SQL("SELECT {} FROM erp_inbound.{} WHERE status <> 'NEW' ORDER BY id").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(table)))
            for table, columns in answers]))
    conn.rollback()
    return names


def _write_batch(cur, folder: Folder, batch: str, mode: str, encoding: str, selects) -> str:
    entries = []
    for table, query in selects:
        cur.execute(query)
        columns = [d.name for d in cur.description]
        rows = cur.fetchall()
        data = fileformat.encode_csv(columns, rows, encoding)
        entry = fileformat.FileEntry(f"{batch}__{table}.csv", table, len(rows), len(data), fileformat.sha256(data))
        folder.write_atomic(f"{FROM_ERP}/{entry.name}", data)
        entries.append(entry)
    manifest = fileformat.Manifest(batch=batch, encoding=encoding, files=entries, mode=mode, flow="erp_export")
    folder.write_atomic(f"{FROM_ERP}/{manifest.name}", manifest.dump())
    return manifest.name


def exchange(conn, folder: Folder, encoding: str = "gb18030") -> dict:
    """One round of the ERP's side: import the bridge's files, process them, export views and answers."""
    imported = import_files(conn, folder)
    processed = importer.process_inbound(conn)
    exported = export_files(conn, folder, encoding)
    return {"imported": imported, "processed": processed, "exported": exported}
