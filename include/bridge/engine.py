"""Sync-engine bookkeeping in the bridge DB: run ledger, watermarks, quarantine, audit.

Plain functions over a psycopg2 connection (the caller commits where a step ends), so a flow's steps
can be unit-tested without a scheduler. The batch id is derived from flow + Airflow run id: a retry or
a clear of the same run reuses its batch (restaged from scratch), which keeps re-runs idempotent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import re
from collections.abc import Iterable
from typing import NamedTuple

import psycopg2.extras

_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(value):
    """The one rule for text that comes from people (CRM fields), applied wherever it is stored: NUL characters are
    dropped (PostgreSQL text and jsonb cannot hold them) and unpaired surrogates become U+FFFD (they cannot be
    encoded). Containers are cleaned through; anything else is returned as it is."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value.replace("\x00", "")) if not value.isascii() or "\x00" in value \
            else value
    if isinstance(value, dict):
        return {clean_text(k): clean_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(clean_text(v) for v in value)
    return value


def jsonb(value) -> str | None:
    """A value as JSON text for a jsonb column, cleaned by clean_text."""
    return json.dumps(clean_text(value), default=str, ensure_ascii=False) if value is not None else None


def batch_id_for(flow: str, run_id: str) -> str:
    return f"{flow}-{hashlib.sha1(f'{flow}|{run_id}'.encode()).hexdigest()[:12]}"


# ------------------------------------------------------------------------------------------- run ledger
def start_run(conn, flow: str, run_id: str, mode: str = "live", backfill: bool = False) -> str:
    """Open (or reopen, on retry or clear) the ledger row of this run; returns its batch id. mode: live, dry_run,
    pilot. A reopened row is a new attempt: the one it ends is first kept in bridge.run_attempt with the status it
    had (a failure's history is never overwritten)."""
    batch_id = batch_id_for(flow, run_id)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (batch_id,))  # two tasks reopening at once
        cur.execute(
            """INSERT INTO bridge.run_attempt (batch_id, attempt, flow, airflow_run_id, status, mode, rows_extracted,
                   rows_loaded, rows_quarantined, rows_failed, step_seconds, message, interval_start, interval_end,
                   backfill, started_at, finished_at, ended_by)
               SELECT batch_id, attempt, flow, airflow_run_id, status, mode, rows_extracted, rows_loaded,
                      rows_quarantined, rows_failed, step_seconds, message, interval_start, interval_end, backfill,
                      started_at, finished_at,
                      CASE WHEN status = 'running' THEN 'a new attempt started while it was running'
                           ELSE 'ended ' || status END
               FROM bridge.run_ledger WHERE batch_id = %s
               ON CONFLICT (batch_id, attempt) DO NOTHING""", (batch_id,))
        cur.execute(
            """INSERT INTO bridge.run_ledger (batch_id, flow, airflow_run_id, mode, backfill)
               VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (batch_id) DO UPDATE SET status = 'running', started_at = now(), finished_at = NULL,
                   message = NULL, rows_extracted = 0, rows_passed = 0, rows_loaded = 0, rows_quarantined = 0,
                   rows_failed = 0, step_seconds = '{}', mode = excluded.mode, backfill = excluded.backfill,
                   interval_start = NULL, interval_end = NULL, attempt = bridge.run_ledger.attempt + 1""",
            (batch_id, flow, run_id, mode, backfill),
        )
    conn.commit()
    return batch_id


def record_interval(conn, batch_id: str, since: dt.datetime | None, until: dt.datetime | None) -> None:
    """What the run read: changes after `since` up to `until` (a backfill: its interval plus the lookback)."""
    with conn.cursor() as cur:
        cur.execute("UPDATE bridge.run_ledger SET interval_start = %s, interval_end = %s WHERE batch_id = %s",
                    (since, until, batch_id))
    conn.commit()


def sweep_abandoned(conn, flow: str, is_running, keep_run_id: str | None = None) -> list[str]:
    """Ledger rows of `flow` still `running` whose Airflow run is no longer running (killed, marked failed, deleted):
    closed as `failed` with why. `is_running(run_id)` answers from Airflow: True, False, or None when it cannot tell
    (then the row is left as it is: a sweep never closes a run it is not sure about)."""
    with conn.cursor() as cur:
        cur.execute("SELECT batch_id, airflow_run_id FROM bridge.run_ledger WHERE flow = %s AND status = 'running' "
                    "AND airflow_run_id IS DISTINCT FROM %s", (flow, keep_run_id))
        open_rows = cur.fetchall()
    conn.rollback()
    closed = []
    for batch_id, run_id in open_rows:
        state = is_running(run_id)
        if state is False:
            with conn.cursor() as cur:
                cur.execute("""UPDATE bridge.run_ledger SET status = 'failed', finished_at = now(),
                                   message = 'closed by the sweep: its Airflow run ' || %s || ' is no longer running '
                                             || '(killed or ended without closing this row)'
                               WHERE batch_id = %s AND status = 'running'""", (run_id or "(none)", batch_id))
            closed.append(batch_id)
    conn.commit()
    return closed


def record_step(conn, batch_id: str, step: str, seconds: float, credits: int = 0, **counts: int) -> None:
    """Add a step's duration and the Zoho API credits it spent, and set counts (rows_extracted=…, rows_loaded=…) on
    the ledger row."""
    sets = "".join(f", {name} = %s" for name in counts)
    with conn.cursor() as cur:
        cur.execute(f"""UPDATE bridge.run_ledger SET step_seconds = step_seconds || jsonb_build_object(%s, %s),
                               crm_credits = crm_credits + %s{sets}
                        WHERE batch_id = %s""", (step, round(seconds, 3), credits, *counts.values(), batch_id))
    conn.commit()


def finish_run(conn, batch_id: str, status: str, message: str | None = None) -> dict:
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("""UPDATE bridge.run_ledger SET status = %s, message = %s, finished_at = now()
                       WHERE batch_id = %s RETURNING *""", (status, message, batch_id))
        row = dict(cur.fetchone())
    conn.commit()
    return row


def fail_open_runs(conn, run_id: str, flows: set[str], message: str) -> int:
    """A task of Airflow run `run_id` failed for good: the ledger rows of these flows still `running` in that run
    say `failed`, with why (a retry or a clear reopens them)."""
    with conn.cursor() as cur:
        cur.execute("""UPDATE bridge.run_ledger SET status = 'failed', finished_at = now(), message = %s
                       WHERE airflow_run_id = %s AND flow = ANY (%s) AND status = 'running'""",
                    (message[:1000], run_id, sorted(flows)))
        closed = cur.rowcount
    conn.commit()
    return closed


def previous_count(conn, flow: str, batch_id: str) -> int | None:
    """Rows extracted by the flow's last successful run (for the gate's row-count bounds)."""
    with conn.cursor() as cur:
        cur.execute("""SELECT rows_extracted FROM bridge.run_ledger
                       WHERE flow = %s AND batch_id <> %s AND status IN ('success', 'partial')
                       ORDER BY finished_at DESC LIMIT 1""", (flow, batch_id))
        row = cur.fetchone()
    return row[0] if row else None


# -------------------------------------------------------------------------------------------- staging
class RecordError(Exception):
    """A failure that one or more records caused; `record_keys` names them (the failure alert shows them)."""

    def __init__(self, message: str, record_keys: list[str]):
        super().__init__(message)
        self.record_keys = record_keys


STAGE_CHUNK_ROWS = 5_000  # rows held in memory at once while staging: a flow streams its rows through


def stage_rows(conn, table: str, batch_id: str, columns: list[str], rows: Iterable) -> int:
    """The batch's rows (any iterable: a flow streams them, so memory holds one chunk) into its staging table,
    numbered from 1 (row_no: what the gate names). A retried or cleared run stages its batch afresh; one commit for
    the delete and the insert. Rows that staging cannot hold (the flows read values so that this does not happen)
    fail the step with RecordError naming every one of them (the first column: the record's key)."""
    sql = f"INSERT INTO {table} (batch_id, row_no, {', '.join(columns)}) VALUES %s"
    staged, refused, first_error = 0, [], ""
    numbered = ((batch_id, n, *clean_text(tuple(r))) for n, r in enumerate(rows, 1))
    with conn.cursor() as cur:
        cur.execute(f"DELETE FROM {table} WHERE batch_id = %s", (batch_id,))
        while chunk := list(itertools.islice(numbered, STAGE_CHUNK_ROWS)):
            cur.execute("SAVEPOINT stage_chunk")
            try:
                psycopg2.extras.execute_values(cur, sql, chunk, page_size=2000)
            except (psycopg2.DataError, psycopg2.IntegrityError) as exc:
                cur.execute("ROLLBACK TO SAVEPOINT stage_chunk")
                first_error = first_error or str(exc).splitlines()[0]
                refused += _rows_refused(conn, sql, chunk)
            staged += len(chunk)
    if refused or first_error:
        conn.rollback()
        raise RecordError(f"{table}: {len(refused)} record(s) could not be staged ({first_error}): "
                          f"{', '.join(map(str, refused[:20]))}", [str(k) for k in refused])
    conn.commit()
    return staged


def _rows_refused(conn, sql: str, rows: list[tuple]) -> list:
    """The keys (first staged column) of the rows an insert refuses, found by halving inside savepoints."""
    if not rows:
        return []
    with conn.cursor() as cur:
        cur.execute("SAVEPOINT probe")
        try:
            psycopg2.extras.execute_values(cur, sql, rows, page_size=2000)
            refused = None
        except (psycopg2.DataError, psycopg2.IntegrityError):
            refused = True
        cur.execute("ROLLBACK TO SAVEPOINT probe")
    if not refused:
        return []
    if len(rows) == 1:
        return [rows[0][2]]
    half = len(rows) // 2
    return _rows_refused(conn, sql, rows[:half]) + _rows_refused(conn, sql, rows[half:])


# ------------------------------------------------------------------------------------------- watermarks
# A step that changed at least this many rows of a table refreshes its planner statistics itself: autovacuum may be
# off or minutes behind, and plans made on the statistics of an empty table (a hashed scan of a million links to
# check 1,000 rows) made an incremental run on a 1,000,000-SKU ERP 4x the cost of one on 10,000.
ANALYZE_AFTER_ROWS = 50_000


def analyze_if_large(cur, rows: int, *tables: str, at_least: int = ANALYZE_AFTER_ROWS) -> None:
    """ANALYZE `tables` when `rows` (what the step just wrote) reach `at_least`; it takes no lock that blocks reads or
    writes. Temporary tables are never analyzed by autovacuum: theirs is a lower bar."""
    if rows >= at_least:
        cur.execute("ANALYZE " + ", ".join(tables))


def get_watermark(conn, flow: str, source: str = "default") -> dt.datetime | None:
    with conn.cursor() as cur:
        cur.execute("SELECT value FROM bridge.watermark WHERE flow = %s AND source = %s", (flow, source))
        row = cur.fetchone()
    return row[0] if row else None


def advance_watermark(conn, flow: str, value: dt.datetime, run_id: str, source: str = "default") -> None:
    """Move forward only: a backfill of an old interval never moves the watermark back."""
    with conn.cursor() as cur:
        cur.execute(
            """INSERT INTO bridge.watermark (flow, source, value, run_id) VALUES (%s, %s, %s, %s)
               ON CONFLICT (flow, source) DO UPDATE SET value = excluded.value, run_id = excluded.run_id,
                   updated_at = now()
               WHERE bridge.watermark.value < excluded.value""",
            (flow, source, value, run_id),
        )


# ------------------------------------------------------------------------------------------- quarantine
def quarantine(conn, flow: str, batch_id: str, rows: list[tuple[str, dict, list[str]]]) -> int:
    """(business key, payload, reasons) per bad record. An open entry for the same key is refreshed, not
    duplicated, so a record that keeps failing run after run is one row with the latest reasons."""
    if not rows:
        return 0
    with conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS q_in (business_key text, payload jsonb, reasons text[]) "
                    "ON COMMIT DROP; TRUNCATE q_in")
        psycopg2.extras.execute_values(
            cur, "INSERT INTO q_in VALUES %s",
            [(clean_text(key), jsonb(payload), clean_text(list(reasons))) for key, payload, reasons in rows],
            page_size=5000)
        cur.execute("""UPDATE bridge.quarantine q SET payload = i.payload, reasons = i.reasons, batch_id = %s,
                           created_at = now()
                       FROM q_in i WHERE q.flow = %s AND q.status = 'open' AND q.business_key = i.business_key""",
                    (batch_id, flow))
        cur.execute("""INSERT INTO bridge.quarantine (flow, batch_id, business_key, payload, reasons)
                       SELECT %s, %s, i.business_key, i.payload, i.reasons FROM q_in i
                       WHERE NOT EXISTS (SELECT 1 FROM bridge.quarantine q WHERE q.flow = %s AND q.status = 'open'
                                         AND q.business_key = i.business_key)""", (flow, batch_id, flow))
    return len(rows)


def open_quarantine(conn, flow: str) -> list[dict]:
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("SELECT * FROM bridge.quarantine WHERE flow = %s AND status = 'open' ORDER BY business_key",
                    (flow,))
        return [dict(r) for r in cur.fetchall()]


def resolve_quarantine(conn, flow: str, business_keys: list[str], status: str = "replayed",
                       by: str | None = None, comment: str | None = None) -> int:
    """Mark open entries replayed (their records passed the gate and loaded) or dismissed (by a person, why in
    `comment`)."""
    return resolve_quarantine_in(conn, flow, "SELECT unnest(%(keys)s::text[])", {"keys": business_keys}, status, by,
                                 comment)


def resolve_quarantine_in(conn, flow: str, keys_sql: str, params: dict, status: str = "replayed",
                          by: str | None = None, comment: str | None = None) -> int:
    """resolve_quarantine for the keys a query selects (`keys_sql` with `params`): a first sync passes a million
    keys, which are better left in the database than listed."""
    with conn.cursor() as cur:
        cur.execute(f"""UPDATE bridge.quarantine SET status = %(status)s, resolved_at = now(), resolved_by = %(by)s,
                               resolution_comment = %(comment)s
                        WHERE flow = %(flow)s AND status = 'open' AND business_key IN ({keys_sql})""",
                    params | {"status": status, "by": by, "comment": comment, "flow": flow})
        return cur.rowcount


# ------------------------------------------------------------------------------------------------ audit
class AuditRow(NamedTuple):
    """One written record: its business key, the values before and after the write, and the CRM record
    ("<Module>:<id>") or ERP document key the write went to (rollback restores it from `before`)."""
    business_key: str
    before: dict | None
    after: dict | None
    record_id: str | None = None


def audit(conn, flow: str, target_system: str, entity: str, changes: list[AuditRow], run_id: str,
          batch_id: str) -> int:
    """One audit row per written record."""
    if not changes:
        return 0
    rows = [AuditRow(*c) for c in changes]  # plain (key, before, after[, record id]) tuples are taken too
    with conn.cursor() as cur:
        psycopg2.extras.execute_values(cur, """
            INSERT INTO bridge.audit_log (flow, target_system, entity, business_key, before, after, run_id, batch_id,
                                          record_id)
            VALUES %s""", [(flow, target_system, entity, clean_text(c.business_key), jsonb(c.before), jsonb(c.after),
                            run_id, batch_id, clean_text(c.record_id)) for c in rows], page_size=5000)
    return len(changes)


def crm_values(crm, module: str, ids: list[str], fields: list[str]) -> dict[str, dict]:
    """What the CRM holds now in `fields` of the records `ids` (COQL, 50 ids a query): the before-image of a write
    whose previous values the bridge does not know yet."""
    out: dict[str, dict] = {}
    fields = list(dict.fromkeys(fields))
    for start in range(0, len(ids), 50):
        chunk = ", ".join(str(int(i)) for i in ids[start:start + 50])
        for rec in crm.iter_coql(module, fields, where=f"id in ({chunk})"):
            out[str(rec["id"])] = {f: rec.get(f) for f in fields}
    return out


def kept_before_images(bridge, batch_id: str, module: str, now_held: dict[str, dict]) -> dict[str, dict]:
    """The before-images of a batch's writes: what its first attempt found in the CRM, field by field, else what the
    CRM holds now (`now_held`, CRM id -> values), which is kept from here on. Committed before the write they are
    for: a retry or a clear of the batch (same batch id) after a write landed audits against the value before it,
    never against what its own earlier attempt wrote."""
    if not now_held:
        return {}
    with bridge.cursor() as cur:
        rows = psycopg2.extras.execute_values(cur, """
            INSERT INTO bridge.before_image AS b (batch_id, record_id, before) VALUES %s
            ON CONFLICT (batch_id, record_id) DO UPDATE SET before = excluded.before || b.before
            RETURNING record_id, before""",
            [(batch_id, f"{module}:{crm_id}", jsonb(values)) for crm_id, values in now_held.items()],
            page_size=5000, fetch=True)
    bridge.commit()
    return {record_id.split(":", 1)[1]: before for record_id, before in rows}


def audited_update(bridge, crm, flow: str, entity: str, module: str, records: list[dict], run_id: str,
                   batch_id: str) -> list:
    """Update CRM records by id and audit every write that succeeded, with the values the written fields had
    before (read just before): the before-image a rollback restores. Returns the outcomes in input order."""
    if not records:
        return []
    fields = sorted({k for r in records for k in r if k != "id"})
    before = kept_before_images(bridge, batch_id, module, crm_values(crm, module, [r["id"] for r in records], fields))
    outcomes = crm.update(module, records)
    audit(bridge, flow, "crm", entity, [AuditRow(r["id"], before.get(str(r["id"])),
                                                 {k: v for k, v in r.items() if k != "id"}, f"{module}:{r['id']}")
                                        for r, o in zip(records, outcomes, strict=True) if o.ok], run_id, batch_id)
    bridge.commit()
    return outcomes


def skip_run(conn, flow: str, run_id: str, reason: str) -> str:
    """A run the rollout switched off: one ledger row that says so."""
    batch_id = start_run(conn, flow, run_id)
    finish_run(conn, batch_id, "skipped", reason)
    return batch_id


# --------------------------------------------------------------------------------------- outbox recovery
INBOUND_TABLES = {"sales_order": "erp_inbound.sales_order_in", "customer": "erp_inbound.customer_in"}


def recover_handed_over(bridge, erp_write, flow: str, entity: str, run_id: str, batch_id: str) -> int:
    """Outbox keys whose hand-over was never recorded (the task died, or the bridge DB was lost, between the ERP
    insert and the bookkeeping after it): the target's truth decides. A key the ERP's inbound table holds was
    handed over — it is marked sent (and audited) so the next run only writes the ERP's answer back and never
    judges that document again (a credit check against figures that already include it would hold it). A key the
    ERP does not hold stays unsent: the document is decided and sent again under the same key."""
    with bridge.cursor() as cur:
        cur.execute("SELECT idempotency_key, crm_id, action, payload FROM bridge.order_outbox "
                    "WHERE sent_at IS NULL AND entity = %s", (entity,))
        pending = {r[0]: r for r in cur.fetchall()}
    bridge.rollback()
    if not pending:
        return 0
    with erp_write.cursor() as cur:
        cur.execute(f"SELECT idempotency_key FROM {INBOUND_TABLES[entity]} WHERE idempotency_key = ANY (%s)",
                    (list(pending),))
        found = [r[0] for r in cur.fetchall()]
    erp_write.rollback()
    if found:
        with bridge.cursor() as cur:
            cur.execute("UPDATE bridge.order_outbox SET sent_at = now() WHERE idempotency_key = ANY (%s) "
                        "AND sent_at IS NULL", (found,))
        audit(bridge, flow, "erp", entity, [
            AuditRow(pending[k][1], None, {"idempotency_key": k, "action": pending[k][2], **pending[k][3],
                                           "recovered": "found in the ERP's inbound table"}, k) for k in found],
            run_id, batch_id)
        bridge.commit()
    return len(found)
