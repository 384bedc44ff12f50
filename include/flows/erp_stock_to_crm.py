"""Flow erp_stock_to_crm: ERP stock availability -> CRM Products (stage 1).

extract   every warehouse row of each SKU that changed since the watermark (minus a lookback, so
          late-committed ERP rows are never missed), streamed ERP -> staging with COPY
validate  the GX gate (expectations/erp_stock_to_crm.json); bad rows -> quarantine, the rest may load
plan      per SKU, the CRM fields of include/mappings/erp_stock_to_crm.yaml; only SKUs whose values
          differ from what was last pushed go to the load queue, split into chunks
load      one chunk: update CRM Products by record id (idempotent: a retry writes the same values),
          batches of 100, or bulk write above the threshold; outcome per record
finish    synced state + audit (before / after), CRM rejections -> quarantine, ledger, watermark,
          one business alert for products that fell below safety stock
Everything a step needs lives in the bridge DB, keyed by batch id: XCom carries ids and counts only.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from functools import cache
from pathlib import Path

import psycopg2.extras
import yaml

from include.bridge import engine
from include.bridge.alerts import Alert
from include.bridge.gate import GateResult, run_gate

FLOW = "erp_stock_to_crm"
STAGING = "bridge.stg_erp_stock_to_crm"
STAGED_COLUMNS = ["sku", "warehouse", "uom", "on_hand", "reserved", "available", "incoming_po", "incoming_mo",
                  "projected_14d", "first_shortage_date", "safety_stock", "updated_at"]
GATED_COLUMNS = [c for c in STAGED_COLUMNS if c != "first_shortage_date"] + ["known_sku"]
PRODUCT_MAP_FLOW = "crm_product_map"


@cache
def mapping() -> dict:
    return yaml.safe_load((Path(__file__).resolve().parents[1] / "mappings" / f"{FLOW}.yaml").read_text("utf-8"))


def normalize_sku(code: str | None) -> str | None:
    return code.strip().upper() if code and code.strip() else None


# ------------------------------------------------------------------------------------------- products
def refresh_product_map(bridge, crm) -> int:
    """Link CRM Products to ERP SKUs by Product_Code (exact after trimming and upper-casing), incrementally."""
    since = engine.get_watermark(bridge, PRODUCT_MAP_FLOW)
    # COQL paged by id: the records list stops at 100,000 records even with page tokens
    where = f"Modified_Time >= '{(since - dt.timedelta(seconds=1)).isoformat()}'" if since else None
    rows, newest = [], since
    for rec in crm.iter_coql("Products", ["Product_Code", "Modified_Time"], where=where):
        sku = normalize_sku(rec.get("Product_Code"))
        if sku:
            rule = "sku" if rec["Product_Code"] == sku else "sku_normalized"
            rows.append(("product", sku, rec["id"], rule))
        stamp = dt.datetime.fromisoformat(rec["Modified_Time"])
        newest = stamp if newest is None or stamp > newest else newest
    with bridge.cursor() as cur:
        psycopg2.extras.execute_values(cur, """
            INSERT INTO bridge.id_map (entity, erp_key, crm_id, match_rule) VALUES %s
            ON CONFLICT (entity, erp_key) DO UPDATE SET crm_id = excluded.crm_id, match_rule = excluded.match_rule,
                updated_at = now()
            WHERE bridge.id_map.crm_id IS DISTINCT FROM excluded.crm_id""", rows, page_size=5000)
    if newest:
        engine.advance_watermark(bridge, PRODUCT_MAP_FLOW, newest, "product-map")
    bridge.commit()
    return len(rows)


# ------------------------------------------------------------------------------------------- extract
def window(bridge, erp, *, backfill_start: dt.datetime | None = None, backfill_end: dt.datetime | None = None):
    """(since, until): the watermark (minus lookback) to the ERP's clock, or a backfill interval."""
    lookback = dt.timedelta(minutes=mapping()["settings"]["lookback_minutes"])
    if backfill_start and backfill_end:
        return backfill_start - lookback, backfill_end
    with erp.cursor() as cur:
        cur.execute("SELECT now()")
        until = cur.fetchone()[0]
    erp.rollback()
    watermark = engine.get_watermark(bridge, FLOW)
    return (watermark - lookback if watermark else dt.datetime(1970, 1, 1, tzinfo=dt.UTC)), until


def extract(erp, bridge, batch_id: str, since: dt.datetime, until: dt.datetime,
            replay_keys: list[str] | None = None) -> int:
    """Stream every warehouse row of each changed (or replayed) SKU from the ERP into staging with COPY."""
    cols = ", ".join(STAGED_COLUMNS)
    source_cols = ", ".join("s." + c for c in STAGED_COLUMNS)
    with erp.cursor() as ecur:
        select = ecur.mogrify(
            f"""SELECT %s, row_number() OVER (ORDER BY s.sku, s.warehouse), {source_cols}
                FROM erp_api.stock_availability s
                WHERE s.sku IN (SELECT sku FROM erp_api.stock_availability WHERE updated_at > %s AND updated_at <= %s
                                UNION SELECT unnest(%s::text[]))""",
            (batch_id, since, until, replay_keys or [])).decode()
    with bridge.cursor() as bcur:
        bcur.execute(f"DELETE FROM {STAGING} WHERE batch_id = %s", (batch_id,))  # a retry restages from scratch
    bridge.commit()
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def export() -> None:  # ERP -> pipe, while the bridge reads the other end: bounded memory at any size
        try:
            with os.fdopen(write_fd, "wb") as sink, erp.cursor() as cur:
                cur.copy_expert(f"COPY ({select}) TO STDOUT", sink)
        except BaseException as exc:  # reported after the import side finished
            failure.append(exc)
        finally:
            erp.rollback()

    worker = threading.Thread(target=export, name="erp-export")
    worker.start()
    with os.fdopen(read_fd, "rb") as source, bridge.cursor() as bcur:
        bcur.copy_expert(f"COPY {STAGING} (batch_id, row_no, {cols}) FROM STDIN", source)
    worker.join()
    if failure:
        bridge.rollback()
        raise failure[0]
    with bridge.cursor() as bcur:
        bcur.execute(f"""UPDATE {STAGING} s SET known_sku = EXISTS (
                             SELECT 1 FROM bridge.id_map m WHERE m.entity = 'product' AND m.erp_key = s.sku)
                         WHERE s.batch_id = %s""", (batch_id,))
        bcur.execute(f"SELECT count(*) FROM {STAGING} WHERE batch_id = %s", (batch_id,))
        n = bcur.fetchone()[0]
    bridge.commit()
    return n


# ------------------------------------------------------------------------------------------ validate
def data_docs_dir() -> str:
    """Where the gate's GX Data Docs go: $BRIDGE_DATA_DOCS_DIR/<flow> (default under .local or the temp dir)."""
    import tempfile

    base = os.environ.get("BRIDGE_DATA_DOCS_DIR") or os.path.join(
        os.environ.get("LOCAL_DIR") or tempfile.gettempdir(), "data_docs")
    return os.path.join(base, FLOW)


def validate(bridge, sqlalchemy_url: str, batch_id: str, warehouses: list[str], rows: int) -> GateResult:
    """Run the gate; quarantine the bad rows' SKUs (all warehouses of a SKU move together) if it may load."""
    previous = engine.previous_count(bridge, FLOW, batch_id)
    # incremental batches vary a lot: only a sudden jump far above the last batch blocks the load;
    # the first run (nothing to compare with) is the initial full load
    max_rows = max(50_000, previous * 50) if previous is not None else 10**12
    result = run_gate(bridge, sqlalchemy_url, flow=FLOW, table=STAGING, batch_id=batch_id, columns=GATED_COLUMNS,
                      parameters={"min_rows": 0, "max_rows": max_rows, "warehouses": warehouses},
                      docs_dir=data_docs_dir())
    if not result.may_load:
        return result
    bad_skus: dict[str, list[str]] = {}
    with bridge.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        if result.bad_rows:
            cur.execute(f"SELECT * FROM {STAGING} WHERE batch_id = %s AND row_no = ANY (%s)",
                        (batch_id, list(result.bad_rows)))
            staged = cur.fetchall()
            payloads: dict[str, list[dict]] = {}
            for row in staged:
                key = row["sku"] or f"(row {row['row_no']}: no SKU)"
                bad_skus.setdefault(key, []).extend(f"{row['warehouse']}: {r}" for r in result.bad_rows[row["row_no"]])
                payloads.setdefault(key, []).append({k: v for k, v in row.items() if k not in ("batch_id", "gate_ok")})
            engine.quarantine(bridge, FLOW, batch_id, [(k, {"rows": payloads[k]}, reasons)
                                                       for k, reasons in bad_skus.items()])
        cur.execute(f"UPDATE {STAGING} SET gate_ok = NOT (coalesce(sku, '') = ANY (%s) OR row_no = ANY (%s)) "
                    "WHERE batch_id = %s", (list(bad_skus), list(result.bad_rows), batch_id))
    bridge.commit()
    return result


# ---------------------------------------------------------------------------------------------- plan
def plan(bridge, batch_id: str) -> dict:
    """Compute CRM values per SKU and queue only those that differ from what was last pushed."""
    m = mapping()
    chunks = int(m["settings"]["load_chunks"])
    values_sql = ", ".join(f"'{name}', {spec['sql']}" for name, spec in m["fields"].items())
    with bridge.cursor() as cur:
        cur.execute("DELETE FROM bridge.load_queue WHERE batch_id = %s", (batch_id,))
        cur.execute(f"""
            WITH per_sku AS (
                SELECT sku, jsonb_build_object({values_sql}) AS values
                FROM {STAGING} WHERE batch_id = %s AND gate_ok GROUP BY sku
            )
            INSERT INTO bridge.load_queue (flow, batch_id, business_key, chunk_no, crm_id, values, values_hash)
            SELECT %s, %s, p.sku, abs(hashtext(p.sku)) %% %s, m.crm_id, p.values, md5(p.values::text)
            FROM per_sku p
            JOIN bridge.id_map m ON m.entity = 'product' AND m.erp_key = p.sku
            LEFT JOIN bridge.synced_state s ON s.flow = %s AND s.business_key = p.sku
            WHERE s.values_hash IS DISTINCT FROM md5(p.values::text) OR s.crm_id IS DISTINCT FROM m.crm_id""",
                    (batch_id, FLOW, batch_id, chunks, FLOW))
        queued = cur.rowcount
    bridge.commit()
    bulk = queued > int(m["settings"]["bulk_threshold"])
    return {"queued": queued, "chunks": [0] if bulk else list(range(chunks)), "bulk": bulk}


# ---------------------------------------------------------------------------------------------- load
def load_chunk(bridge, crm, batch_id: str, chunk_no: int, bulk: bool = False) -> dict:
    """Write one chunk's pending records to the CRM (by record id) and record each outcome."""
    m = mapping()
    with bridge.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("""SELECT business_key, crm_id, values FROM bridge.load_queue
                       WHERE batch_id = %s AND status = 'pending' AND (%s OR chunk_no = %s)
                       ORDER BY business_key""", (batch_id, bulk, chunk_no))
        pending = cur.fetchall()
    bridge.rollback()
    if not pending:
        return {"loaded": 0, "failed": 0}
    stamp = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    records = [{"id": r["crm_id"], **r["values"], m["stamp_field"]: stamp} for r in pending]
    if bulk:
        result = crm.bulk_write(m["target"]["module"], records, find_by="id", operation="update")
        outcomes = [(r["business_key"], row.get("STATUS") in ("UPDATED", "ADDED"), row.get("ERRORS") or None)
                    for r, row in zip(pending, result.rows, strict=True)]
    else:
        outcomes = [(r["business_key"], o.ok, None if o.ok else f"{o.code} {o.api_name or ''}".strip())
                    for r, o in zip(pending, crm.update(m["target"]["module"], records), strict=True)]
    with bridge.cursor() as cur:
        psycopg2.extras.execute_values(cur, """
            UPDATE bridge.load_queue q SET status = v.status, error = v.error
            FROM (VALUES %s) AS v(batch_id, business_key, status, error)
            WHERE q.batch_id = v.batch_id AND q.business_key = v.business_key""",
            [(batch_id, key, "loaded" if ok else "failed", err) for key, ok, err in outcomes], page_size=5000)
    bridge.commit()
    loaded = sum(ok for _, ok, _ in outcomes)
    return {"loaded": loaded, "failed": len(outcomes) - loaded}


# -------------------------------------------------------------------------------------------- finish
def finish(bridge, batch_id: str, run_id: str, until: dt.datetime | None) -> dict:
    """Synced state, audit, CRM rejections to quarantine, replayed quarantine entries, watermark."""
    m = mapping()
    with bridge.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("""INSERT INTO bridge.audit_log (flow, target_system, entity, business_key, before, after,
                                                     run_id, batch_id)
                       SELECT q.flow, 'crm', %s, q.business_key, s.values, q.values, %s, q.batch_id
                       FROM bridge.load_queue q
                       LEFT JOIN bridge.synced_state s ON s.flow = q.flow AND s.business_key = q.business_key
                       WHERE q.batch_id = %s AND q.status = 'loaded'""", (m["target"]["entity"], run_id, batch_id))
        cur.execute("""SELECT q.business_key FROM bridge.load_queue q
                       LEFT JOIN bridge.synced_state s ON s.flow = q.flow AND s.business_key = q.business_key
                       WHERE q.batch_id = %s AND q.status = 'loaded' AND (q.values ->> 'Below_Safety_Stock')::boolean
                         AND NOT coalesce((s.values ->> 'Below_Safety_Stock')::boolean, false)
                       ORDER BY 1""", (batch_id,))
        fell_below = [r["business_key"] for r in cur.fetchall()]
        cur.execute("""INSERT INTO bridge.synced_state (flow, business_key, crm_id, values, values_hash, batch_id)
                       SELECT flow, business_key, crm_id, values, values_hash, batch_id FROM bridge.load_queue
                       WHERE batch_id = %s AND status = 'loaded'
                       ON CONFLICT (flow, business_key) DO UPDATE SET crm_id = excluded.crm_id,
                           values = excluded.values, values_hash = excluded.values_hash,
                           batch_id = excluded.batch_id, synced_at = now()""", (batch_id,))
        cur.execute("""SELECT business_key, values, error FROM bridge.load_queue
                       WHERE batch_id = %s AND status = 'failed'""", (batch_id,))
        rejected = cur.fetchall()
        engine.quarantine(bridge, FLOW, batch_id, [(r["business_key"], r["values"], [f"CRM rejected: {r['error']}"])
                                                   for r in rejected])
        cur.execute(f"""SELECT DISTINCT s.sku FROM {STAGING} s WHERE s.batch_id = %s AND s.gate_ok
                        AND NOT EXISTS (SELECT 1 FROM bridge.load_queue q WHERE q.batch_id = s.batch_id
                                        AND q.business_key = s.sku AND q.status = 'failed')""", (batch_id,))
        passed = [r["sku"] for r in cur.fetchall()]
        replayed = engine.resolve_quarantine(bridge, FLOW, passed, "replayed", run_id)
        cur.execute("""SELECT count(*) FILTER (WHERE status = 'loaded') AS loaded,
                              count(*) FILTER (WHERE status = 'failed') AS failed,
                              count(*) FILTER (WHERE status = 'pending') AS pending
                       FROM bridge.load_queue WHERE batch_id = %s""", (batch_id,))
        counts = dict(cur.fetchone())
        if counts["pending"]:
            raise RuntimeError(f"{counts['pending']} records of batch {batch_id} were not loaded; retry the load")
        if until is not None:
            engine.advance_watermark(bridge, FLOW, until, run_id)
    bridge.commit()
    return counts | {"rejected": len(rejected), "replayed": replayed, "fell_below_safety": fell_below}


def safety_alert(run_id: str, skus: list[str]) -> Alert | None:
    if not skus or not mapping()["settings"].get("alert_below_safety_stock"):
        return None
    shown = ", ".join(skus[:20]) + (f" and {len(skus) - 20} more" if len(skus) > 20 else "")
    return Alert(kind="business", flow=FLOW, run_id=run_id, event_key="below_safety_stock",
                 title=f"{len(skus)} products fell below safety stock", lines=[shown])



# ------------------------------------------------------------------------------ task entry points
class GateBlocked(Exception):
    """The gate refused the batch; operators were alerted (task-failure alerts skip it: alert_sent)."""

    alert_sent = True


def run_extract(systems, run_id: str, backfill: tuple[dt.datetime, dt.datetime] | None = None,
                replay_quarantine: bool = False) -> dict:
    from include.bridge import db

    bridge = systems.bridge()
    db.install_schema(bridge)
    batch_id = engine.start_run(bridge, FLOW, run_id)
    started = time.monotonic()
    linked = refresh_product_map(bridge, systems.crm())
    since, until = window(bridge, systems.erp(), backfill_start=backfill[0] if backfill else None,
                          backfill_end=backfill[1] if backfill else None)
    replay = [q["business_key"] for q in engine.open_quarantine(bridge, FLOW)] if replay_quarantine else []
    rows = extract(systems.erp(), bridge, batch_id, since, until, replay)
    engine.record_step(bridge, batch_id, "extract", time.monotonic() - started, rows_extracted=rows)
    return {"batch_id": batch_id, "run_id": run_id, "since": since.isoformat(), "until": until.isoformat(),
            "rows": rows, "products_linked": linked, "replayed_keys": len(replay), "backfill": bool(backfill)}


def run_validate(systems, info: dict, send_alert=None) -> dict:
    """Gate + plan. Returns the load plan; raises GateBlocked (after one alert) when nothing may load."""
    bridge = systems.bridge()
    if info["rows"] == 0:
        return info | {"queued": 0, "chunks": [], "bulk": False}
    started = time.monotonic()
    with systems.erp().cursor() as cur:
        cur.execute("SELECT code FROM erp_api.warehouses WHERE is_active")
        warehouses = [r[0] for r in cur.fetchall()]
    systems.erp().rollback()
    result = validate(bridge, systems.bridge_url(), info["batch_id"], warehouses, info["rows"])
    engine.record_step(bridge, info["batch_id"], "gate", time.monotonic() - started,
                       rows_passed=result.rows - len(result.bad_rows), rows_quarantined=len(result.bad_rows))
    if not result.may_load:
        message = "; ".join(result.summary()) + (f" (Data Docs: {result.docs_url})" if result.docs_url else "")
        engine.finish_run(bridge, info["batch_id"], "gate_failed", message)
        if send_alert:
            send_alert(Alert(kind="gate_failure", flow=FLOW, run_id=info["run_id"], event_key="gate",
                             title=f"batch {info['batch_id']} not loaded ({result.rows:,} rows)",
                             lines=result.summary(), link=result.docs_url, link_label="Data Docs"))
        raise GateBlocked(f"gate refused batch {info['batch_id']}: {message}")
    started = time.monotonic()
    planned = plan(bridge, info["batch_id"])
    engine.record_step(bridge, info["batch_id"], "plan", time.monotonic() - started)
    return info | planned | {"quarantined": len(result.bad_rows)}


def run_load(systems, info: dict, chunk_no: int) -> dict:
    started = time.monotonic()
    counts = load_chunk(systems.bridge(), systems.crm(), info["batch_id"], chunk_no, info.get("bulk", False))
    engine.record_step(systems.bridge(), info["batch_id"], f"load_{chunk_no}", time.monotonic() - started)
    return counts


def run_finish(systems, info: dict, send_alert=None) -> dict:
    bridge = systems.bridge()
    started = time.monotonic()
    # a backfill replays an old interval: it never moves the watermark
    until = None if info.get("backfill") else dt.datetime.fromisoformat(info["until"])
    counts = finish(bridge, info["batch_id"], info["run_id"], until)
    engine.record_step(bridge, info["batch_id"], "finish", time.monotonic() - started,
                       rows_loaded=counts["loaded"], rows_failed=counts["failed"],
                       rows_quarantined=info.get("quarantined", 0) + counts["rejected"])
    status = "partial" if counts["failed"] or info.get("quarantined") else "success"
    ledger = engine.finish_run(bridge, info["batch_id"], status,
                               f"{counts['loaded']} products updated, {counts['failed']} rejected by the CRM")
    alert = safety_alert(info["run_id"], counts["fell_below_safety"])
    if alert and send_alert:
        send_alert(alert)
    return {"status": ledger["status"], "loaded": counts["loaded"], "failed": counts["failed"],
            "replayed": counts["replayed"], "below_safety": len(counts["fell_below_safety"])}
