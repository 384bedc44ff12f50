"""What the console shows, read from the bridge DB (role `bridge_console`: SELECT on schema bridge). Every function
takes the flows the caller may see and returns nothing of any other flow."""

from __future__ import annotations

import datetime as dt

import psycopg2.extras

from include.flows import reconcile_crm_erp

ROW_LIMIT = 500  # rows a page lists; the count beside it says how many there are


def _rows(conn, sql: str, params: dict) -> list[dict]:
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(sql, params)
        rows = [dict(r) for r in cur.fetchall()]
    conn.rollback()
    return rows


def known_flows(conn) -> list[str]:
    """Every flow with a run or a quarantine entry."""
    return [r["flow"] for r in _rows(conn, """SELECT flow FROM bridge.run_ledger UNION
                                             SELECT flow FROM bridge.quarantine ORDER BY 1""", {})]


def overview(conn, flows: list[str]) -> list[dict]:
    """Per flow: its last run (status, rows extracted / loaded / quarantined), open quarantine, the last successful
    live load, and the Zoho API credits its runs spent today (since midnight, server time)."""
    return _rows(conn, """
        WITH last AS (SELECT DISTINCT ON (flow) flow, batch_id, airflow_run_id, status, mode, rows_extracted,
                             rows_loaded, rows_quarantined, started_at, finished_at, message
                      FROM bridge.run_ledger WHERE flow = ANY (%(flows)s) ORDER BY flow, started_at DESC),
             ok AS (SELECT flow, max(finished_at) AS last_success FROM bridge.run_ledger
                    WHERE flow = ANY (%(flows)s) AND status IN ('success', 'partial') AND mode <> 'dry_run'
                    GROUP BY flow),
             today AS (SELECT flow, sum(crm_credits) AS credits_today, count(*) AS runs_today FROM bridge.run_ledger
                       WHERE flow = ANY (%(flows)s) AND started_at >= date_trunc('day', now()) GROUP BY flow),
             q AS (SELECT flow, count(*) AS open_quarantine FROM bridge.quarantine
                   WHERE flow = ANY (%(flows)s) AND status = 'open' GROUP BY flow)
        SELECT f.flow, last.batch_id, last.airflow_run_id, last.status, last.mode, last.rows_extracted,
               last.rows_loaded, last.rows_quarantined, last.started_at, last.finished_at, last.message,
               ok.last_success, coalesce(today.credits_today, 0) AS credits_today,
               coalesce(today.runs_today, 0) AS runs_today, coalesce(q.open_quarantine, 0) AS open_quarantine
        FROM unnest(%(flows)s::text[]) AS f(flow)
        LEFT JOIN last USING (flow) LEFT JOIN ok USING (flow) LEFT JOIN today USING (flow) LEFT JOIN q USING (flow)
        WHERE last.flow IS NOT NULL OR q.flow IS NOT NULL
        ORDER BY f.flow""", {"flows": flows})


def daily(conn, flows: list[str], days: int = 14) -> dict[str, list[tuple[dt.date, dict]]]:
    """Rows loaded and rows quarantined per day and flow over the last `days` days (every day listed)."""
    rows = _rows(conn, """
        SELECT d::date AS day, l.flow, coalesce(sum(l.rows_loaded), 0) AS loaded,
               coalesce(sum(l.rows_quarantined), 0) AS quarantined
        FROM generate_series(current_date - (%(days)s - 1), current_date, interval '1 day') AS d
        LEFT JOIN bridge.run_ledger l ON l.started_at >= d AND l.started_at < d + interval '1 day'
                                     AND l.flow = ANY (%(flows)s) AND l.mode <> 'dry_run'
        GROUP BY 1, 2 ORDER BY 1, 2""", {"flows": flows, "days": days})
    out: dict[str, dict[dt.date, dict]] = {"loaded": {}, "quarantined": {}}
    for r in rows:
        for kind in out:
            out[kind].setdefault(r["day"], {})
            if r["flow"] and r[kind]:
                out[kind][r["day"]][r["flow"]] = int(r[kind])
    return {kind: sorted(by_day.items()) for kind, by_day in out.items()}


def run_detail(conn, run_id: str, flows: list[str]) -> dict:
    """One Airflow run of a DAG: its ledger rows (one per flow it ran), the records each wrote (audit, with before
    and after), their quarantined records, and what a dry run would have written."""
    ledger = _rows(conn, """SELECT * FROM bridge.run_ledger WHERE airflow_run_id = %(run)s AND flow = ANY (%(flows)s)
                            ORDER BY started_at""", {"run": run_id, "flows": flows})
    batches = [r["batch_id"] for r in ledger]
    params = {"batches": batches, "limit": ROW_LIMIT}
    return {
        "ledger": ledger,
        "written": _rows(conn, """SELECT flow, target_system, entity, business_key, record_id, before, after, at
                                  FROM bridge.audit_log WHERE batch_id = ANY (%(batches)s)
                                  ORDER BY id LIMIT %(limit)s""", params),
        "written_total": _rows(conn, "SELECT count(*) AS n FROM bridge.audit_log WHERE batch_id = ANY (%(batches)s)",
                               params)[0]["n"],
        "quarantined": _rows(conn, """SELECT id, flow, business_key, reasons, status, created_at, resolved_by,
                                             resolution_comment
                                      FROM bridge.quarantine WHERE batch_id = ANY (%(batches)s)
                                      ORDER BY id LIMIT %(limit)s""", params),
        "previews": _rows(conn, """SELECT flow, target_system, entity, business_key, record_id, action, before, after
                                   FROM bridge.dry_run_preview WHERE batch_id = ANY (%(batches)s)
                                   ORDER BY id LIMIT %(limit)s""", params),
    }


def quarantine(conn, flows: list[str], *, reason: str | None = None, older_than_days: int | None = None,
               status: str = "open") -> dict:
    """Quarantine entries of `flows` with `status`, filtered by a word of their reasons and their age."""
    params = {"flows": flows, "status": status, "reason": f"%{reason}%" if reason else None,
              "days": older_than_days, "limit": ROW_LIMIT}
    where = """flow = ANY (%(flows)s) AND status = %(status)s
               AND (%(reason)s::text IS NULL OR array_to_string(reasons, ' ') ILIKE %(reason)s)
               AND (%(days)s::int IS NULL OR created_at < now() - make_interval(days => %(days)s::int))"""
    return {"entries": _rows(conn, f"""SELECT id, flow, batch_id, business_key, payload, reasons, status, created_at,
                                              resolved_at, resolved_by, resolution_comment
                                       FROM bridge.quarantine WHERE {where}
                                       ORDER BY created_at DESC, id DESC LIMIT %(limit)s""", params),
            "total": _rows(conn, f"SELECT count(*) AS n FROM bridge.quarantine WHERE {where}", params)[0]["n"]}


def entries(conn, ids: list[int]) -> list[dict]:
    """Quarantine entries by id (what an action was asked to act on)."""
    return _rows(conn, "SELECT id, flow, business_key, status FROM bridge.quarantine WHERE id = ANY (%(ids)s) "
                       "ORDER BY id", {"ids": ids})


def previews(conn, flows: list[str], batch_id: str | None = None) -> dict:
    """The latest dry runs of `flows`, and what one of them (the newest unless `batch_id`) would have written."""
    runs = _rows(conn, """SELECT l.batch_id, l.flow, l.airflow_run_id, l.started_at, count(p.id) AS rows
                          FROM bridge.run_ledger l JOIN bridge.dry_run_preview p ON p.batch_id = l.batch_id
                          WHERE l.flow = ANY (%(flows)s) GROUP BY 1, 2, 3, 4 ORDER BY l.started_at DESC LIMIT 30""",
                 {"flows": flows})
    chosen = batch_id if batch_id in {r["batch_id"] for r in runs} else (runs[0]["batch_id"] if runs else None)
    rows = _rows(conn, """SELECT flow, target_system, entity, business_key, record_id, action, before, after
                          FROM bridge.dry_run_preview WHERE batch_id = %(batch)s ORDER BY id LIMIT %(limit)s""",
                 {"batch": chosen, "limit": ROW_LIMIT}) if chosen else []
    return {"runs": runs, "batch_id": chosen, "rows": rows}


def reconciliation(conn, batch_id: str | None = None) -> dict:
    """A reconciliation run (the newest unless `batch_id`), its differences, and the totals per day before it."""
    runs = _rows(conn, """SELECT batch_id, run_id, run_date, counts, total, compared, threshold, alerted, created_at
                          FROM bridge.reconciliation_run ORDER BY created_at DESC LIMIT 60""", {})
    chosen = next((r for r in runs if r["batch_id"] == batch_id), runs[0] if runs else None)
    if not chosen:
        return {"runs": [], "run": None, "differences": [], "history": []}
    differences = _rows(conn, """SELECT * FROM bridge.reconciliation_difference WHERE batch_id = %(batch)s
                                 ORDER BY kind, row_no LIMIT %(limit)s""",
                        {"batch": chosen["batch_id"], "limit": ROW_LIMIT})
    return {"runs": runs, "run": chosen, "differences": differences,
            "history": reconcile_crm_erp.history(conn, chosen["run_date"])}


def reconciliation_trend(conn) -> list[tuple[dt.date, dict]]:
    """The reconciliation's differences per day up to today (the overview's chart)."""
    return reconcile_crm_erp.history(conn, dt.date.today())


def actions(conn, flows: list[str], limit: int = 100) -> list[dict]:
    """The console's own audit: who did what, when, why, on which entries, and the run it started."""
    return _rows(conn, """SELECT * FROM bridge.console_action WHERE flow = ANY (%(flows)s)
                          ORDER BY at DESC, id DESC LIMIT %(limit)s""", {"flows": flows, "limit": limit})
