"""Send: the exchange database's new inbound documents become batch files in `to_erp/`.

Two steps, each its own transaction, so a crash anywhere converges:
1. claim: NEW rows not yet in a batch are assigned to one (erp_files.outbound_batch 'writing' + outbound_row);
2. write: every 'writing' batch's files are (re)written from the database — same rows, same order, same bytes, same
   names — then its manifest, then the batch is 'written'. A crash between 1 and 2, or in the middle of 2, rewrites
   the identical files on the next run: the ERP sees one batch, whole, once.
A row the configured encoding cannot hold (a GBK ERP and a customer named with 𠀀) is not sent: the adapter answers
it ERROR with the reason, as the ERP would, so the flow shows it to its owner instead of waiting forever.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

import psycopg2.extras
import yaml
from psycopg2 import sql

from include.adapters.csv_folder import fileformat
from include.adapters.csv_folder.folders import TO_ERP, Folder
from include.bridge import config
from include.sandbox.erp.db import ERP_ANSWER_COLUMNS

log = logging.getLogger(__name__)
FILES_YAML = Path(__file__).resolve().parent / "files.yaml"
SCHEMA = {"to_erp": config.Map({"flow": str, "lines": config.Opt(str), "whole": config.Opt(str),
                                 "count": config.Opt(str)})}


@cache
def file_types() -> dict:
    spec = yaml.safe_load(FILES_YAML.read_text(encoding="utf-8"))
    config.check(str(FILES_YAML), spec, SCHEMA)
    return spec


def columns_sent(cur, table: str) -> list[str]:
    """The columns of an inbound table the bridge inserts: what travels to the ERP."""
    cur.execute("""SELECT column_name FROM information_schema.columns WHERE table_schema = 'erp_inbound'
                   AND table_name = %s AND NOT (column_name = ANY (%s)) ORDER BY ordinal_position""",
                (table, list(ERP_ANSWER_COLUMNS)))
    return [r[0] for r in cur.fetchall()]


def send(conn, folder: Folder, encoding: str, batch_rows: int = 10000) -> dict:
    """Claim and write; {"batches": n, "rows": n, "refused": n (rows the encoding cannot hold)}."""
    refused = claimed = 0
    for table, spec in file_types()["to_erp"].items():
        while True:
            got, bad = _claim(conn, table, spec, encoding, batch_rows)
            claimed, refused = claimed + got, refused + bad
            if not got and not bad:
                break
    batches, rows = _write_pending(conn, folder, encoding)
    return {"batches": batches, "rows": rows, "claimed": claimed, "refused_encoding": refused}


def _claim(conn, table: str, spec: dict, encoding: str, batch_rows: int) -> tuple[int, int]:
    """One batch of a table's unsent NEW rows claimed (committed); how many, and how many were answered ERROR."""
    t = sql.Identifier(table)
    lines = spec.get("lines")
    complete = sql.SQL("")
    if lines:  # the header's lines are all there (the bridge inserts both in one transaction; a real peer may not)
        complete = sql.SQL(" AND t.line_count IS NOT DISTINCT FROM (SELECT count(*) FROM erp_inbound.{} l "
                           "WHERE l.idempotency_key = t.idempotency_key)").format(sql.Identifier(lines))
    unsent = sql.SQL("""t.status = 'NEW' AND NOT EXISTS (SELECT 1 FROM erp_files.outbound_row o
                        WHERE o.table_name = {name} AND o.row_id = t.id)""").format(name=sql.Literal(table))
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('erp_files.claim'))")  # one claimer at a time
        if spec.get("whole"):
            # the first group whose rows are all in (the bridge may insert a large version in several commits)
            group = sql.Identifier(spec["whole"])
            whole = sql.SQL("count(*) >= max(t.{})").format(sql.Identifier(spec["count"])) if spec.get(
                "count") else sql.SQL("true")
            cur.execute(sql.SQL("""SELECT t.id FROM erp_inbound.{t} t WHERE t.{g} = (
                                       SELECT t.{g} FROM erp_inbound.{t} t WHERE {unsent} GROUP BY t.{g}
                                       HAVING {whole} ORDER BY min(t.id) LIMIT 1)
                                   AND {unsent} ORDER BY t.id""").format(t=t, g=group, whole=whole, unsent=unsent))
        else:
            cur.execute(sql.SQL("SELECT t.id FROM erp_inbound.{t} t WHERE {unsent}{complete} ORDER BY t.id LIMIT %s")
                        .format(t=t, unsent=unsent, complete=complete), (batch_rows,))
        ids = [r[0] for r in cur.fetchall()]
        if not ids:
            conn.rollback()
            return 0, 0
        bad = _unencodable(cur, table, spec, ids, encoding)
        if bad:
            psycopg2.extras.execute_batch(cur, sql.SQL(
                "UPDATE erp_inbound.{t} SET status = 'ERROR', processed_at = now(), error_message = %s "
                "WHERE id = %s").format(t=t), [(message, row_id) for row_id, message in bad.items()])
            ids = [i for i in ids if i not in bad]
        if ids:
            cur.execute("SELECT nextval('erp_files.batch_no')")
            batch = f"{spec['flow']}__{cur.fetchone()[0]:06d}"
            cur.execute("INSERT INTO erp_files.outbound_batch (batch, flow, row_count) VALUES (%s, %s, %s)",
                        (batch, spec["flow"], len(ids)))
            psycopg2.extras.execute_values(cur, "INSERT INTO erp_files.outbound_row (table_name, row_id, batch) "
                                                "VALUES %s", [(table, i, batch) for i in ids], page_size=5000)
    conn.commit()
    if bad:
        log.warning("%s: %d row(s) answered ERROR: the %s encoding cannot hold them", table, len(bad), encoding)
    return len(ids), len(bad)


def _unencodable(cur, table: str, spec: dict, ids: list[int], encoding: str) -> dict[int, str]:
    """Row id -> why it cannot be written in `encoding` (a whole forecast version goes with one of its rows)."""
    bad: dict[int, str] = {}
    columns = columns_sent(cur, table)
    cur.execute(sql.SQL("SELECT id, {} FROM erp_inbound.{} WHERE id = ANY (%s) ORDER BY id").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(table)), (ids,))
    rows = cur.fetchall()
    for u in fileformat.unencodable(columns, [r[1:] for r in rows], encoding):
        bad[rows[u.index][0]] = (f"cannot be written for the ERP in {encoding}: {u.column} holds "
                                 f"{u.text!r}, which {encoding} has no code for")
    if lines := spec.get("lines"):
        line_columns = columns_sent(cur, lines)
        cur.execute(sql.SQL("""SELECT h.id, {} FROM erp_inbound.{} l JOIN erp_inbound.{} h USING (idempotency_key)
                               WHERE h.id = ANY (%s) ORDER BY l.id""").format(
            sql.SQL(", ").join(sql.SQL("l.{}").format(sql.Identifier(c)) for c in line_columns),
            sql.Identifier(lines), sql.Identifier(table)), (ids,))
        line_rows = cur.fetchall()
        for u in fileformat.unencodable(line_columns, [r[1:] for r in line_rows], encoding):
            bad.setdefault(line_rows[u.index][0], f"cannot be written for the ERP in {encoding}: a line's "
                                                  f"{u.column} holds {u.text!r}, which {encoding} has no code for")
    if bad and spec.get("whole"):
        reason = next(iter(bad.values()))
        return {i: bad.get(i, f"the version is not sent: another of its rows {reason}") for i in ids}
    return bad


def _write_pending(conn, folder: Folder, encoding: str) -> tuple[int, int]:
    """Write every claimed batch not written yet (also one a crash interrupted)."""
    types = {spec["flow"]: (table, spec) for table, spec in file_types()["to_erp"].items()}
    with conn.cursor() as cur:
        cur.execute("SELECT batch, flow FROM erp_files.outbound_batch WHERE status = 'writing' ORDER BY batch")
        pending = cur.fetchall()
    conn.rollback()
    rows_written = 0
    for batch, flow in pending:
        table, spec = types[flow]
        with conn.cursor() as cur:
            entries = []
            for name, select in _selects(cur, table, spec, batch):
                columns = [d.name for d in select.description] if select.description else []
                rows = select.fetchall()
                data = fileformat.encode_csv(columns, rows, encoding)
                entry = fileformat.FileEntry(f"{batch}__{name}.csv", name, len(rows), len(data),
                                             fileformat.sha256(data))
                folder.write_atomic(f"{TO_ERP}/{entry.name}", data)
                entries.append(entry)
            cur.execute("SELECT created_at FROM erp_files.outbound_batch WHERE batch = %s", (batch,))
            created = cur.fetchone()[0].isoformat(timespec="seconds")
            manifest = fileformat.Manifest(batch=batch, encoding=encoding, files=entries, flow=flow,
                                           created_at=created)
            folder.write_atomic(f"{TO_ERP}/{manifest.name}", manifest.dump())  # last: the batch is whole now
            cur.execute("UPDATE erp_files.outbound_batch SET status = 'written', written_at = now(), manifest = %s "
                        "WHERE batch = %s", (manifest.dump().decode(), batch))
        conn.commit()
        rows_written += entries[0].rows
        log.info("%s: %s", batch, ", ".join(f"{e.name} ({e.rows} rows, {e.bytes:,} bytes)" for e in entries))
    return len(pending), rows_written


def _selects(cur, table: str, spec: dict, batch: str):
    """(table, cursor with its rows) for each file of a batch, in a fixed order: the same batch, the same bytes."""
    columns = columns_sent(cur, table)
    cur.execute(sql.SQL("""SELECT {} FROM erp_inbound.{} t JOIN erp_files.outbound_row o
                               ON o.table_name = %s AND o.row_id = t.id WHERE o.batch = %s ORDER BY t.id""").format(
        sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in columns), sql.Identifier(table)),
        (table, batch))
    yield table, cur
    if lines := spec.get("lines"):
        line_columns = columns_sent(cur, lines)
        cur.execute(sql.SQL("""SELECT {} FROM erp_inbound.{} l JOIN erp_inbound.{} t USING (idempotency_key)
                               JOIN erp_files.outbound_row o ON o.table_name = %s AND o.row_id = t.id
                               WHERE o.batch = %s ORDER BY t.id, l.line_no""").format(
            sql.SQL(", ").join(sql.SQL("l.{}").format(sql.Identifier(c)) for c in line_columns),
            sql.Identifier(lines), sql.Identifier(table)), (table, batch))
        yield lines, cur
