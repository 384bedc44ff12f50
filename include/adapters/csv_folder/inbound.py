"""Receive: the ERP's export files in `from_erp/` load into the exchange database.

A manifest at a time, in one transaction with the ledger (erp_files.inbound_file, by sha256), so a file loads
exactly once however often it is delivered and whatever crashes:
- no manifest yet, or a file that does not match it (size, sha256): still being written or cut short — it waits
  (after `stale_minutes` it is reported as stuck);
- a file already loaded (same sha256): skipped and archived;
- a manifest or a file that cannot be trusted (unreadable manifest, unknown table or column, row count different
  from the manifest's): nothing of its batch loads; it moves to `from_erp/rejected/` and every run fails, saying
  why and which, until the operator has fixed it (dropped again into from_erp/) or removed it;
- a malformed line (does not decode, does not parse, wrong number of fields, a value of the wrong type, a key
  missing, a key twice): quarantined in the bridge with file name, line number and the line itself; the lines
  around it load.
A full export of a table marks the quarantined lines of its earlier files replayed: the table now holds the ERP's
whole truth. Tables: any of erp_api (mode full: the file is the whole table; delta: rows replace those with the
same key), business_date, and `<inbound table>_answers`: the ERP's answers (status, document number, messages) to
documents the bridge sent, matched by idempotency_key.
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import psycopg2.extras
from psycopg2 import sql

from include.adapters.csv_folder import fileformat
from include.adapters.csv_folder.folders import ARCHIVE, FROM_ERP, REJECTED, Folder
from include.bridge import engine
from include.sandbox.erp.db import ERP_ANSWER_COLUMNS

log = logging.getLogger(__name__)
FLOW = "erp_file_exchange"      # the quarantine's flow name for lines of the ERP's files
ANSWER_STATUSES = ("PROCESSED", "ERROR")
TRUE, FALSE = {"true", "t", "1", "y", "yes", "是"}, {"false", "f", "0", "n", "no", "否"}


class Refused(ValueError):
    """A batch that cannot be trusted as a whole."""


@dataclass(frozen=True)
class Target:
    """Where a file type loads: its table, its columns and their types, its key, which key columns may be empty."""
    name: str
    table: str               # schema-qualified
    types: dict[str, tuple[str, int | None]]
    key: tuple[str, ...]
    required: frozenset[str]
    answers: bool = False


def targets(cur) -> dict[str, Target]:
    """Every file type the exchange database can take, read from the database itself (its tables and keys)."""
    cur.execute("""SELECT c.table_schema, c.table_name, c.column_name, c.data_type, c.character_maximum_length,
                          c.is_nullable = 'NO'
                   FROM information_schema.columns c JOIN information_schema.tables t
                     ON t.table_schema = c.table_schema AND t.table_name = c.table_name
                   WHERE (c.table_schema = 'erp_api' AND t.table_type = 'BASE TABLE')
                      OR (c.table_schema = 'erp_files' AND c.table_name = 'business_date')
                      OR (c.table_schema = 'erp_inbound' AND c.table_name LIKE '%%\\_in')
                   ORDER BY c.table_schema, c.table_name, c.ordinal_position""")
    columns: dict[tuple[str, str], list] = {}
    for schema, table, column, kind, length, not_null in cur.fetchall():
        columns.setdefault((schema, table), []).append((column, kind, length, not_null))
    cur.execute("""SELECT n.nspname, r.relname, array_agg(a.attname::text ORDER BY k.ord)
                   FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid
                   JOIN pg_namespace n ON n.oid = r.relnamespace
                   CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum = k.attnum
                   WHERE c.contype = 'u' AND n.nspname IN ('erp_api', 'erp_files')
                   GROUP BY n.nspname, r.relname, c.oid""")
    keys = {(schema, table): tuple(cols) for schema, table, cols in cur.fetchall()}
    out = {}
    for (schema, table), cols in columns.items():
        if schema == "erp_inbound":
            if not any(c[0] == "status" for c in cols):
                continue  # order lines: answered through their header
            answer = [c for c in cols if c[0] in ERP_ANSWER_COLUMNS and c[0] not in ("id", "created_at")]
            types = {c[0]: (c[1], c[2]) for c in cols if c[0] == "idempotency_key"} | {
                c[0]: (c[1], c[2]) for c in answer}
            name = f"{table}_answers"
            out[name] = Target(name, f"erp_inbound.{table}", types, ("idempotency_key",),
                               frozenset({"idempotency_key", "status"}), answers=True)
        else:
            out[table] = Target(table, f"{schema}.{table}", {c[0]: (c[1], c[2]) for c in cols}, keys[(schema, table)],
                                frozenset(c[0] for c in cols if c[3]))
    return out


def receive(conn, bridge, folder: Folder, timezone: str = "Asia/Shanghai", stale_minutes: int = 30) -> dict:
    """Load every complete batch in from_erp/; counts, and the batches waiting, stuck or rejected (with why)."""
    with conn.cursor() as cur:
        kinds = targets(cur)
    conn.rollback()
    tz = zoneinfo.ZoneInfo(timezone)
    counts: Counter = Counter()
    report: dict[str, list[str]] = {"waiting": [], "stuck": [], "rejected": []}
    for name in folder.list(FROM_ERP):
        if not name.endswith(fileformat.MANIFEST_SUFFIX):
            continue
        data = folder.read(f"{FROM_ERP}/{name}")
        if data is None:
            continue  # archived meanwhile by a concurrent run
        try:
            manifest = fileformat.parse_manifest(name, data)
            files = {e.name: folder.read(f"{FROM_ERP}/{e.name}") for e in manifest.files}
            waits = [why for e in manifest.files if (why := fileformat.check_against(e, files[e.name]))]
            if waits:
                age = _age_minutes(manifest.created_at)
                (report["stuck"] if age is not None and age > stale_minutes else report["waiting"]).append(
                    f"{name}: {'; '.join(waits)}")
                continue
            loaded = _load(conn, bridge, kinds, manifest, files, tz)
        except (fileformat.ManifestError, Refused, psycopg2.DataError, psycopg2.IntegrityError) as exc:
            conn.rollback()
            bridge.rollback()
            # a value the database refuses (a number too large for its column, ...) rejects the batch, not the run
            report["rejected"].append(str(exc) if not isinstance(exc, psycopg2.Error) else
                                      f"{name}: the exchange database refused a value: {str(exc).strip()}")
            _move_batch(folder, name, data, REJECTED)
            continue
        counts.update(loaded)
        _move_batch(folder, name, data, ARCHIVE)
    for kind in ("waiting", "stuck", "rejected"):
        for why in report[kind]:
            log.warning("%s: %s", kind, why)
    # rejected earlier and not yet dealt with: every run says so until the operator fixes or removes them
    report["set_aside"] = [n for n in folder.list(f"{FROM_ERP}/{REJECTED}") if n.endswith(fileformat.MANIFEST_SUFFIX)]
    return dict(counts) | report


def _age_minutes(created_at: str) -> float | None:
    try:
        created = dt.datetime.fromisoformat(created_at)
    except ValueError:
        return None
    if created.tzinfo is None:
        return None
    return (dt.datetime.now(dt.UTC) - created).total_seconds() / 60


def _move_batch(folder: Folder, name: str, data: bytes, to: str) -> None:
    """The manifest and its files into from_erp/archive/<batch>/, or flat into from_erp/rejected/ (where the
    operator finds them; a file already moved is left alone)."""
    try:
        entries = fileformat.parse_manifest(name, data).files
    except fileformat.ManifestError:
        entries = []
    where = f"{FROM_ERP}/{to}/{name[: -len(fileformat.MANIFEST_SUFFIX)]}" if to == ARCHIVE else f"{FROM_ERP}/{to}"
    for entry in entries:
        if folder.read(f"{FROM_ERP}/{entry.name}") is not None:
            folder.move(f"{FROM_ERP}/{entry.name}", f"{where}/{entry.name}")
    folder.move(f"{FROM_ERP}/{name}", f"{where}/{name}")  # last: until then it is retried


def _load(conn, bridge, kinds: dict[str, Target], manifest: fileformat.Manifest, files: dict[str, bytes],
          tz) -> Counter:
    counts: Counter = Counter()
    with conn.cursor() as cur:
        for entry in manifest.files:
            target = kinds.get(entry.table)
            if target is None:
                raise Refused(f"{manifest.name}: {entry.name} is for table {entry.table!r}, which the exchange "
                              f"database does not have (known: {', '.join(sorted(kinds))})")
            data = files[entry.name]
            cur.execute("SELECT file_name, loaded_at FROM erp_files.inbound_file WHERE sha256 = %s", (entry.sha256,))
            if seen := cur.fetchone():
                log.info("%s: already loaded as %s on %s; skipped", entry.name, seen[0], seen[1])
                counts["files_already_seen"] += 1
                continue
            good, bad = _parse(target, entry, data, manifest.encoding, tz)
            if len(good) + len(bad) != entry.rows:
                raise Refused(f"{manifest.name}: {entry.name} holds {len(good) + len(bad)} rows, its manifest "
                              f"says {entry.rows}")
            loaded = _store(cur, target, good, manifest.mode, bad, entry.name)
            if manifest.mode == "full" and not target.answers:
                counts["quarantine_replayed"] += _replayed(bridge, entry.table, entry.name)
            engine.quarantine(bridge, FLOW, manifest.batch, bad)
            cur.execute("""INSERT INTO erp_files.inbound_file (sha256, file_name, manifest, table_name, rows_loaded,
                               rows_quarantined) VALUES (%s, %s, %s, %s, %s, %s)""",
                        (entry.sha256, entry.name, manifest.name, entry.table, loaded, len(bad)))
            counts["files"] += 1
            counts["rows"] += loaded
            counts["quarantined"] += len(bad)
            log.info("%s -> %s: %d rows loaded, %d quarantined", entry.name, target.table, loaded, len(bad))
    # the quarantine first: a crash between the two commits quarantines twice (refreshed, not duplicated) rather
    # than loading a file whose bad lines nobody hears of
    bridge.commit()
    conn.commit()
    return counts


def _replayed(bridge, table: str, file_name: str) -> int:
    """A full export of a table is its whole truth: lines of earlier files for it that were quarantined are now
    replaced by what the ERP holds (replayed)."""
    with bridge.cursor() as cur:
        cur.execute("""UPDATE bridge.quarantine SET status = 'replayed', resolved_at = now(), resolved_by = %s
                       WHERE flow = %s AND status = 'open' AND payload ->> 'table' = %s
                         AND payload ->> 'file' <> %s""", (f"{FLOW}: full export {file_name}", FLOW, table, file_name))
        return cur.rowcount


def _parse(target: Target, entry, data: bytes, encoding: str, tz):
    """(good rows as {column: value}, bad lines as quarantine rows (key, payload, reasons))."""
    try:
        header, lines = fileformat.read_csv(data, encoding, entry.name)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    if unknown := [h for h in header if h not in target.types]:
        raise Refused(f"{entry.name}: column(s) {', '.join(unknown)} are not in {target.table} "
                      f"(its columns: {', '.join(target.types)})")
    if len(set(header)) != len(header):
        raise Refused(f"{entry.name}: a column appears twice in the header")
    if missing := [k for k in target.key if k not in header]:
        raise Refused(f"{entry.name}: key column(s) {', '.join(missing)} missing: rows could not be matched")
    good: list[dict] = []
    bad: list[tuple[str, dict, list[str]]] = []
    first_line: dict[tuple, int] = {}
    for line in lines:
        reasons = [line.error] if line.error else []
        row: dict = {}
        if not reasons:
            for column, text in zip(header, line.values, strict=True):
                try:
                    row[column] = _value(text, *target.types[column], tz)
                except ValueError as exc:
                    reasons.append(f"{entry.name} line {line.line_no}: {column} {text!r}: {exc}")
            reasons += [f"{entry.name} line {line.line_no}: {c} is empty (it is required)"
                        for c in sorted(target.required) if c in header and row.get(c) is None]
            if target.answers and row.get("status") not in (None, *ANSWER_STATUSES):
                reasons.append(f"{entry.name} line {line.line_no}: status {row['status']!r} is not an answer "
                               f"({' or '.join(ANSWER_STATUSES)})")
        if not reasons:
            key = tuple(row[k] for k in target.key)
            if key in first_line:
                reasons.append(f"{entry.name} line {line.line_no}: the same {', '.join(target.key)} as line "
                               f"{first_line[key]}")
            else:
                first_line[key] = line.line_no
        if reasons:
            bad.append((f"{entry.name}:{line.line_no}", {"file": entry.name, "line": line.line_no,
                                                          "table": target.name, "text": line.raw}, reasons))
        else:
            good.append(row)
    return good, bad


def _value(text: str, kind: str, length: int | None, tz):
    text = text.strip()
    if text == "":
        return None
    if kind in ("text", "character varying", "character"):
        if length and len(text) > length:
            raise ValueError(f"longer than {length} characters")
        return text
    if kind == "numeric":
        try:
            value = Decimal(text.replace(",", ""))
        except InvalidOperation:
            raise ValueError("not a number") from None
        if not value.is_finite():
            raise ValueError("not a finite number")
        return value
    if kind in ("integer", "bigint", "smallint"):
        try:
            return int(text)
        except ValueError:
            raise ValueError("not a whole number") from None
    if kind == "boolean":
        if text.lower() in TRUE:
            return True
        if text.lower() in FALSE:
            return False
        raise ValueError("not true / false")
    if kind == "date":
        try:
            return dt.date.fromisoformat(text.replace("/", "-"))
        except ValueError:
            raise ValueError("not a date (YYYY-MM-DD)") from None
    if kind.startswith("timestamp"):
        try:
            value = dt.datetime.fromisoformat(text.replace("/", "-"))
        except ValueError:
            raise ValueError("not a timestamp (YYYY-MM-DD HH:MM:SS[+08:00])") from None
        return value if value.tzinfo else value.replace(tzinfo=tz)  # the ERP's local time
    raise ValueError(f"type {kind} has no reader")


def _store(cur, target: Target, rows: list[dict], mode: str, bad: list, file_name: str) -> int:
    """Set-based: one statement a page. full: the table becomes the file's rows; delta: upsert by key; answers:
    update the inbound rows the bridge sent (an answer older than the one held is ignored)."""
    columns = list(target.types) if not rows else [c for c in target.types if c in rows[0]]
    values = [tuple(r.get(c) for c in columns) for r in rows]
    ident = sql.SQL(".").join(map(sql.Identifier, target.table.split(".")))
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    if target.answers:
        if not rows:
            return 0
        sets = sql.SQL(", ").join(sql.SQL("{c} = v.{c}").format(c=sql.Identifier(c)) for c in columns
                                  if c != "idempotency_key")
        casts = sql.SQL(", ").join(sql.SQL("{}::{}").format(sql.Placeholder(), sql.SQL(
            _pg_type(*target.types[c]))) for c in columns)
        updated = psycopg2.extras.execute_values(cur, sql.SQL("""
            UPDATE {t} t SET {sets} FROM (VALUES %s) AS v({cols})
            WHERE t.idempotency_key = v.idempotency_key
              AND (t.processed_at IS NULL OR v.processed_at IS NULL OR v.processed_at >= t.processed_at)
            RETURNING t.idempotency_key""").format(t=ident, sets=sets, cols=cols).as_string(cur), values,
            template=f"({casts.as_string(cur)})", page_size=2000, fetch=True)
        known = {r[0] for r in updated}
        cur.execute(sql.SQL("SELECT idempotency_key FROM {} WHERE idempotency_key = ANY (%s)").format(ident),
                    ([r["idempotency_key"] for r in rows],))
        sent = {r[0] for r in cur.fetchall()}
        for n, row in enumerate(rows):
            if row["idempotency_key"] not in sent:
                bad.append((f"{file_name}:answer:{row['idempotency_key']}", {"file": file_name, "row": n + 1,
                            "table": target.name, "idempotency_key": row["idempotency_key"]},
                            [f"{file_name}: answers {row['idempotency_key']!r}, a document the bridge never sent"]))
        return len(known)
    if mode == "full":
        cur.execute(sql.SQL("DELETE FROM {}").format(ident))
    if not rows:
        return 0
    update = sql.SQL(", ").join(sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in columns
                                if c not in target.key)
    conflict = sql.SQL("ON CONFLICT ({}) DO {}").format(
        sql.SQL(", ").join(map(sql.Identifier, target.key)),
        sql.SQL("UPDATE SET ") + update if update.seq else sql.SQL("NOTHING"))
    psycopg2.extras.execute_values(cur, sql.SQL("INSERT INTO {} ({}) VALUES %s {}").format(
        ident, cols, conflict).as_string(cur), values, page_size=2000)
    return len(rows)


def _pg_type(kind: str, length: int | None) -> str:
    return {"character varying": "text", "character": "text", "timestamp with time zone": "timestamptz",
            "timestamp without time zone": "timestamp"}.get(kind, kind)
