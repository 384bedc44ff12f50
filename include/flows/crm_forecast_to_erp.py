"""Flow crm_forecast_to_erp: the CRM pipeline as the ERP's demand forecast (stage 3).

extract   every open CRM deal (stage not closed, closing date up to the horizon's end) with its products — its
          Deal_Items, else the items of its latest quote that is not lost — one staged row per product line,
          weighted by the deal's probability (or its stage's); plus the lines of confirmed CRM orders the ERP holds
          and has not shipped yet (demand type ORDERS, by delivery month). Deals that already became orders (an
          accepted quote, a confirmed order) are not counted twice. The forecast is a snapshot: each run reads
          the whole open pipeline, and a version replaces the previous one as a whole.
validate  the gate on the lines (expectations/crm_forecast_to_erp.json): probability 0..100, closing date inside
          the horizon, known products, quantity > 0. A failing line quarantines its deal (the deal shows why);
          the rest go on. The passed lines are summed per product x region x month x demand type, and a second
          gate (crm_forecast_to_erp.totals.json) checks the buckets: they add up exactly to the deals and orders
          they come from, one bucket per key, quantities >= 0. Any failure there sends nothing.
send      one ERP forecast batch per version: batch id = this run's batch + a hash of the content, so a retry
          re-sends the same rows under the same keys (ON CONFLICT DO NOTHING) and a changed pipeline is a new
          version. Rows go in chunks; the ERP applies a batch only once every row is in, and then swaps the active
          version of the horizon in one transaction — a killed send leaves the previous version active, never a
          half-replaced forecast. An unchanged forecast (same content as the version active in the ERP) is not
          sent again. Audit: one row per bucket, before = the previous version's quantity.
record    the ERP's answer (version number or errors) for every version sent and not answered yet; reasons of
          quarantined deals go to the CRM deals (Integration_Message), fixed deals get their message cleared.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import time
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal

import psycopg2.extras

from include.bridge import config, engine, rollout, values
from include.bridge.alerts import Alert
from include.bridge.engine import AuditRow
from include.bridge.flow import Flow, PreviewRow, QuarantineRow, Run, Writer
from include.bridge.gate import column_of, load_suite, run_gate
from include.bridge.mirror import data_docs_dir

FLOW = "crm_forecast_to_erp"
STAGING = "bridge.stg_crm_forecast_to_erp"
BUCKETS = "bridge.stg_crm_forecast_buckets"
COLUMNS = ["demand_type", "deal_id", "deal_name", "stage", "probability", "closing_date", "period_start", "region",
           "item_source", "line_no", "product_crm_id", "sku", "known_sku", "qty", "weighted_qty", "horizon_start",
           "horizon_end", "in_horizon", "unreadable"]
GATED = [c for c in COLUMNS if c not in ("horizon_start", "horizon_end")]
BUCKET_COLUMNS = ["sku", "region", "period_start", "demand_type", "qty", "deals", "in_horizon"]
MILLI = Decimal("0.001")


def spec() -> dict:
    return config.mapping("crm_forecast_to_erp")  # strict: an unknown key or a wrong type names the file


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def horizon(as_of: dt.date, months: int) -> tuple[dt.date, dt.date]:
    """First day of as_of's month .. last day of the month `months` - 1 later."""
    start = month_start(as_of)
    y, m = divmod(start.month - 1 + months, 12)
    return start, dt.date(start.year + y, m + 1, 1) - dt.timedelta(days=1)


# ------------------------------------------------------------------------------------------- extract
def deal_rows(deal: dict, *, skus: dict[str, str], regions: dict[str, str], quote_items: dict[str, list],
              window: tuple[dt.date, dt.date]) -> list[list]:
    """The staged rows (COLUMNS order) of one open deal: one per product line, weighted by its probability.

    Pure, so the arithmetic is testable by hand: weighted_qty = qty x probability / 100, rounded to 0.001;
    the month is the closing date's; the region the deal's, else its account's, else the default. A value that
    cannot be read (text in Probability, a date that does not exist) is None and named in `unreadable`: the gate
    quarantines the deal with that reason, the rest of the pipeline goes on."""
    cfg, settings = spec()["deals"], spec()["settings"]
    bad: list[str] = []
    stage = values.text(deal.get("Stage"))
    probability = values.number(deal.get("Probability"), "Probability", bad)
    if probability is None and deal.get("Probability") in (None, ""):
        probability = cfg["stage_probability"].get(stage)
    closing = values.day(deal.get("Closing_Date"), "Closing_Date", bad)
    period = month_start(closing) if closing else None
    in_horizon = period is not None and window[0] <= period <= window[1]
    account = values.ref(deal.get("Account_Name"))
    region = values.text(deal.get("Sales_Region")) or regions.get(account) or settings["default_region"]
    if values.items(deal.get("Deal_Items")):
        source, items = "deal_items", [(values.ref(i.get("Product")), i.get("Quantity"))
                                       for i in values.items(deal["Deal_Items"])]
    else:
        source, items = "quote", quote_items.get(deal["id"], [])
    lines = []
    for n, (product, quantity) in enumerate(items, 1):
        qty = values.number(quantity, f"line {n} Quantity", bad)
        qty = Decimal(0) if qty is None and quantity in (None, "") else qty  # missing: the gate's qty > 0 says so
        weighted = (qty * Decimal(str(probability)) / 100).quantize(MILLI, ROUND_HALF_UP) \
            if qty is not None and probability is not None else None
        lines.append([n, product, skus.get(product), skus.get(product) is not None, qty, weighted])
    head = ["PIPELINE", values.text(deal["id"]), values.text(deal.get("Deal_Name")), stage, probability, closing,
            period, region, source]
    tail = [*window, in_horizon, values.reason(bad)]
    if not lines:  # a deal without products still gets a row, so the gate can say so
        return [head + [None, None, None, None, None, None] + tail]
    return [head + line + tail for line in lines]


def staged_deal_rows(deal: dict, **context) -> list[list]:
    """deal_rows, or for a deal that cannot be read at all one row that names why (the gate quarantines it)."""
    try:
        return deal_rows(deal, **context)
    except Exception as exc:  # noqa: BLE001 - one unreadable deal must not stop the forecast
        row: list = [None] * len(COLUMNS)
        row[COLUMNS.index("demand_type")], row[COLUMNS.index("deal_id")] = "PIPELINE", values.text(deal.get("id"))
        row[COLUMNS.index("unreadable")] = f"the deal could not be read ({type(exc).__name__})"
        return [row]


def erp_order_rows(erp, window: tuple[dt.date, dt.date]) -> list[list]:
    """Unshipped lines of the confirmed CRM orders the ERP holds (ORDERS), by delivery month; overdue lines
    count in the horizon's first month, lines due after the horizon are out of scope."""
    settings = spec()["settings"]
    with erp.cursor() as cur:
        cur.execute("""SELECT l.erp_order_no, s.status, l.line_no, l.sku, l.qty - l.shipped_qty, l.delivery_date,
                              c.region
                       FROM erp_api.sales_order_lines l
                       JOIN erp_api.sales_order_status s USING (erp_order_no)
                       LEFT JOIN erp_api.customers c ON c.customer_code = s.customer_code
                       WHERE s.source_system = %s AND s.status = ANY (%s) AND l.qty > l.shipped_qty
                         AND l.delivery_date <= %s
                       ORDER BY 1, 3""", (settings["source_system"], spec()["orders"]["statuses"], window[1]))
        lines = cur.fetchall()
    erp.rollback()
    rows = []
    for order_no, status, line_no, sku, qty, delivery, region in lines:
        period = max(month_start(delivery), window[0])
        rows.append(["ORDERS", order_no, order_no, status, Decimal(100), delivery, period,
                     region or settings["default_region"], "erp_order", line_no, None, sku, True, qty,
                     Decimal(qty).quantize(MILLI, ROUND_HALF_UP), *window, True, None])
    return rows


def pipeline_context(crm) -> dict:
    """What deals are read against: account regions, quote items per deal, deals that are orders already."""
    cfg = spec()["deals"]
    regions = {r["id"]: r.get("Sales_Region") for r in crm.iter_records("Accounts", ["Sales_Region"])}
    quotes: dict[str, tuple[str, list]] = {}
    ordered: set[str] = set()
    for q in crm.iter_records("Quotes", ["Deal_Name", "Quote_Stage", "Quoted_Items", "Modified_Time"]):
        deal = values.ref(q.get("Deal_Name"))
        if not deal:
            continue
        if q.get("Quote_Stage") in cfg["quote_stages_ordered"]:
            ordered.add(deal)
        elif q.get("Quote_Stage") not in cfg["quote_stages_excluded"] and \
                q["Modified_Time"] >= quotes.get(deal, ("", []))[0]:
            quotes[deal] = (q["Modified_Time"], [(values.ref(i.get("Product_Name")), i.get("Quantity"))
                                                 for i in values.items(q.get("Quoted_Items"))])
    for o in crm.iter_records("Sales_Orders", ["Deal_Name", "Status"]):
        if values.ref(o.get("Deal_Name")) and o.get("Status") in cfg["order_statuses_ordered"]:
            ordered.add(values.ref(o["Deal_Name"]))
    return {"regions": regions, "quote_items": {d: items for d, (_, items) in quotes.items()}, "ordered": ordered}


def sellable_skus(bridge, erp) -> dict[str, str]:
    """CRM product id -> SKU, for products linked to an active ERP item."""
    with bridge.cursor() as cur:
        cur.execute("SELECT crm_id, erp_key FROM bridge.id_map WHERE entity = 'product'")
        linked = dict(cur.fetchall())
    bridge.rollback()
    with erp.cursor() as cur:
        cur.execute("SELECT sku FROM erp_api.items WHERE is_active AND sku = ANY (%s)", (list(set(linked.values())),))
        active = {r[0] for r in cur.fetchall()}
    erp.rollback()
    return {crm_id: sku for crm_id, sku in linked.items() if sku in active}


def extract(bridge, crm, erp, batch_id: str, window: tuple[dt.date, dt.date], regions: list[str] | None = None
            ) -> dict:
    """Stage the open deals' lines and the ERP's unshipped order lines, streamed page by page (memory holds a
    page of deals and a chunk of rows, not the pipeline); a pilot keeps the lines of its sales regions."""
    skus = sellable_skus(bridge, erp)
    context = pipeline_context(crm)
    closed = set(spec()["deals"]["closed_stages"])
    counts = {"deals_read": 0, "open_deals": 0, "beyond_horizon": 0, "already_ordered": 0, "order_lines": 0}
    region_at = COLUMNS.index("region")

    def deal_lines() -> Iterator[list]:
        for deal in crm.iter_records("Deals", spec()["deals"]["fields"]):
            counts["deals_read"] += 1
            if values.text(deal.get("Stage")) in closed:
                continue
            if deal["id"] in context["ordered"]:
                counts["already_ordered"] += 1
                continue
            closing = values.day(deal.get("Closing_Date"), "Closing_Date", [])  # unreadable: deal_rows says so
            if closing and closing > window[1]:  # after the horizon: not in this forecast, not an error
                counts["beyond_horizon"] += 1
                continue
            counts["open_deals"] += 1
            yield from staged_deal_rows(deal, skus=skus, regions=context["regions"],
                                        quote_items=context["quote_items"], window=window)

    def order_lines() -> Iterator[list]:
        for row in erp_order_rows(erp, window):
            if not regions or row[region_at] in regions:
                counts["order_lines"] += 1
                yield row

    lines = itertools.chain((r for r in deal_lines() if not regions or r[region_at] in regions), order_lines())
    staged = engine.stage_rows(bridge, STAGING, batch_id, COLUMNS, lines)
    return counts | {"rows": staged}


# ------------------------------------------------------------------------------------------ validate
def bad_deals(bridge, batch_id: str, bad_rows: dict[int, list[str]]) -> list[QuarantineRow]:
    """A failing line stops its whole deal, with reasons a salesperson reads; the rest of the batch is marked to go.

    The entry remembers whether the deal shows these reasons already (`shown`), so a deal that stays wrong is
    not rewritten in the CRM every run."""
    messages = spec()["messages"]
    bad: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    before: dict[str, dict] = {}
    with bridge.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        if bad_rows:
            cur.execute(f"SELECT row_no, deal_id, deal_name, line_no, demand_type, unreadable FROM {STAGING} "
                        "WHERE batch_id = %s AND row_no = ANY (%s)", (batch_id, list(bad_rows)))
            for row in cur.fetchall():
                kinds[row["deal_id"] or "?"] = row["demand_type"]
                for reason in bad_rows[row["row_no"]]:
                    text = messages.get(column_of(reason), reason)
                    if column_of(reason) == "unreadable":
                        text = f"{text}: {row['unreadable']}"
                    line = f"line {row['line_no']}: {text}" if row["line_no"] is not None and \
                        column_of(reason) in ("known_sku", "qty") else text
                    if line not in bad.setdefault(row["deal_id"] or "?", []):
                        bad[row["deal_id"] or "?"].append(line)
            cur.execute("""SELECT business_key, reasons, coalesce((payload ->> 'shown')::boolean, false) AS shown
                           FROM bridge.quarantine WHERE flow = %s AND status = 'open' AND business_key = ANY (%s)""",
                        (FLOW, list(bad)))
            before = {r["business_key"]: r for r in cur.fetchall()}
        cur.execute(f"UPDATE {STAGING} SET gate_ok = NOT (coalesce(deal_id, '') = ANY (%s)) WHERE batch_id = %s",
                    (list(bad), batch_id))
    bridge.commit()
    return [QuarantineRow(k, {"deal_id": k, "demand_type": kinds.get(k),
                              "shown": k in before and before[k]["shown"] and list(before[k]["reasons"]) == v}, v)
            for k, v in bad.items()]


def build_buckets(bridge, batch_id: str) -> dict:
    """Sum the passed lines per product x region x month x demand type; returns the expected total."""
    with bridge.cursor() as cur:
        cur.execute(f"DELETE FROM {BUCKETS} WHERE batch_id = %s", (batch_id,))
        cur.execute(f"""
            INSERT INTO {BUCKETS} (batch_id, row_no, sku, region, period_start, demand_type, qty, deals,
                                   horizon_start, horizon_end, in_horizon)
            SELECT %(batch)s, row_number() OVER (ORDER BY sku, region, period_start, demand_type), sku, region,
                   period_start, demand_type, sum(weighted_qty), count(DISTINCT deal_id), min(horizon_start),
                   min(horizon_end), period_start BETWEEN min(horizon_start) AND min(horizon_end)
            FROM {STAGING} WHERE batch_id = %(batch)s AND gate_ok
            GROUP BY sku, region, period_start, demand_type""", {"batch": batch_id})
        buckets = cur.rowcount
        cur.execute(f"""SELECT coalesce(sum(weighted_qty), 0), count(DISTINCT deal_id) FILTER (WHERE demand_type =
                        'PIPELINE'), count(*) FROM {STAGING} WHERE batch_id = %s AND gate_ok""", (batch_id,))
        total, deals, lines = cur.fetchone()
    bridge.commit()
    return {"buckets": buckets, "total_qty": total, "deals_passed": deals, "lines_passed": lines}


def validate(bridge, url: str, batch_id: str, writer: Writer) -> dict:
    """Gate the lines (bad deals quarantined through `writer`), bucket the rest, gate the buckets' totals.
    {"blocked": the refusing GateResult or None, "bad": the deals stopped, and the totals}."""
    result = run_gate(bridge, url, flow=FLOW, table=STAGING, batch_id=batch_id, columns=GATED,
                      parameters={"min_rows": 0, "max_rows": 10**9}, docs_dir=data_docs_dir(FLOW),
                      unit_column="deal_id")
    if not result.may_load:
        return {"blocked": result}
    bad = bad_deals(bridge, batch_id, result.bad_rows)
    writer.quarantine("deal", bad)
    bridge.commit()
    totals = build_buckets(bridge, batch_id)
    # the buckets must add up to the lines exactly (both are sums of 0.001 units: half a unit of tolerance is none)
    total = float(totals["total_qty"])
    checked = run_gate(bridge, url, flow=f"{FLOW}.totals", table=BUCKETS, batch_id=batch_id, columns=BUCKET_COLUMNS,
                       parameters={"min_rows": 0, "max_rows": 10**9, "min_total": total - 0.0005,
                                   "max_total": total + 0.0005},
                       suite=load_suite(f"{FLOW}.totals"), docs_dir=data_docs_dir(f"{FLOW}.totals"))
    if not checked.may_load:
        return {"blocked": checked}
    return {"blocked": None, "bad": bad, "gate": result} | totals


# ---------------------------------------------------------------------------------------------- send
def content_hash(bridge, batch_id: str) -> str:
    with bridge.cursor() as cur:
        cur.execute(f"""SELECT md5(min(horizon_start) || '..' || min(horizon_end) || ':' || coalesce(string_agg(
                            sku || '|' || region || '|' || period_start || '|' || demand_type || '|' || qty, ';'
                            ORDER BY row_no), ''))
                        FROM {BUCKETS} WHERE batch_id = %s""", (batch_id,))
        digest = cur.fetchone()[0]
    bridge.rollback()
    return digest or hashlib.md5(b"empty").hexdigest()


def active_version(bridge, erp, window: tuple[dt.date, dt.date]) -> dict | None:
    """The version this bridge last had activated for the horizon, if the ERP still has it active."""
    with bridge.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("""SELECT * FROM bridge.forecast_version WHERE erp_status = 'PROCESSED' AND horizon_start = %s
                       AND horizon_end = %s ORDER BY answered_at DESC LIMIT 1""", window)
        last = cur.fetchone()
    bridge.rollback()
    if not last:
        return None
    with erp.cursor() as cur:
        cur.execute("SELECT status FROM erp_api.forecast_versions WHERE version_no = %s", (last["erp_version_no"],))
        row = cur.fetchone()
    erp.rollback()
    return dict(last) if row and row[0] == "Active" else None


def send(bridge, erp, erp_write, batch_id: str, run_id: str, window: tuple[dt.date, dt.date],
         chunk_rows: int | None = None) -> dict:
    settings = spec()["settings"]
    digest = content_hash(bridge, batch_id)
    record_answers(bridge, erp_write)  # answers the ERP gave since the last run tell what is active now
    current = active_version(bridge, erp, window)
    if current and current["content_hash"] == digest:
        return {"sent": 0, "unchanged": current["erp_version_no"]}
    erp_batch = f"{batch_id}:{digest[:12]}"
    with bridge.cursor() as cur:
        cur.execute(f"SELECT count(*), coalesce(sum(qty), 0) FROM {BUCKETS} WHERE batch_id = %s", (batch_id,))
        rows, total = cur.fetchone()
        # outbox first: a kill after the ERP insert still knows which batch is on its way
        cur.execute("""INSERT INTO bridge.forecast_version (erp_batch_id, batch_id, run_id, horizon_start, horizon_end,
                                                            content_hash, row_count, total_qty)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (erp_batch_id) DO NOTHING""",
                    (erp_batch, batch_id, run_id, *window, digest, rows, total))
    bridge.commit()
    chunk = int(chunk_rows or settings["send_chunk_rows"])
    # the buckets with the quantity the active version had for each (the audit's before-image), a chunk at a time:
    # memory holds one chunk at any size; the audit rows commit with sent_at, after the last chunk is in the ERP
    with bridge.cursor(name=f"forecast_send_{batch_id}") as buckets:
        buckets.itersize = chunk
        buckets.execute(f"""
            SELECT b.sku || '|' || b.region || '|' || b.period_start || '|' || b.demand_type AS key, b.sku, b.region,
                   b.period_start, b.demand_type, b.qty, b.row_no, p.qty AS before_qty, p.qty IS NOT NULL AS was_active
            FROM {BUCKETS} b
            LEFT JOIN (SELECT pb.sku, pb.region, pb.period_start, pb.demand_type, pb.qty FROM {BUCKETS} pb
                       JOIN bridge.forecast_version v ON v.batch_id = pb.batch_id WHERE v.erp_batch_id = %s) p
                   USING (sku, region, period_start, demand_type)
            WHERE b.batch_id = %s ORDER BY b.row_no""", (current["erp_batch_id"] if current else "", batch_id))
        while part := buckets.fetchmany(chunk):  # the ERP takes the batch only when every row is in
            with erp_write.cursor() as cur:
                psycopg2.extras.execute_values(cur, """
                    INSERT INTO erp_inbound.demand_forecast_in (source_system, source_id, idempotency_key, batch_id,
                        batch_row_count, horizon_start, horizon_end, sku, region, period_start, demand_type, qty)
                    VALUES %s ON CONFLICT (idempotency_key) DO NOTHING""",
                    [(settings["source_system"], key, f"{erp_batch}:{row_no}", erp_batch, rows, *window, sku, region,
                      period, demand_type, qty) for key, sku, region, period, demand_type, qty, row_no, _, _ in part],
                    page_size=1000)
            erp_write.commit()
            engine.audit(bridge, FLOW, "erp", "demand_forecast",
                         [AuditRow(key, {"qty": before} if was_active else None, {"qty": qty, "batch": erp_batch},
                                   f"{erp_batch}:{row_no}")
                          for key, _, _, _, _, qty, row_no, before, was_active in part], run_id, batch_id)
    with bridge.cursor() as cur:
        cur.execute("UPDATE bridge.forecast_version SET sent_at = coalesce(sent_at, now()) WHERE erp_batch_id = %s",
                    (erp_batch,))
    bridge.commit()
    return {"sent": rows, "erp_batch_id": erp_batch}


# -------------------------------------------------------------------------------------------- record
def record_answers(bridge, erp_write) -> dict:
    """The ERP's answer for every version sent and not answered yet (this run's or an earlier one's)."""
    with bridge.cursor() as cur:
        cur.execute("SELECT erp_batch_id FROM bridge.forecast_version "
                    "WHERE sent_at IS NOT NULL AND answered_at IS NULL")
        pending = [r[0] for r in cur.fetchall()]
    bridge.rollback()
    if not pending:
        return {"activated": [], "rejected": [], "waiting": 0}
    with erp_write.cursor() as cur:
        cur.execute("""SELECT batch_id, count(*) FILTER (WHERE status = 'NEW'),
                              count(*) FILTER (WHERE status = 'ERROR'), min(erp_doc_no),
                              (array_agg(error_message ORDER BY id) FILTER (WHERE status = 'ERROR'))[1:5]
                       FROM erp_inbound.demand_forecast_in WHERE batch_id = ANY (%s) GROUP BY batch_id""", (pending,))
        answers = {r[0]: r[1:] for r in cur.fetchall()}
    erp_write.rollback()
    activated, rejected, waiting = [], [], 0
    with bridge.cursor() as cur:
        for erp_batch in pending:
            new, errors, version, messages = answers.get(erp_batch, (1, 0, None, None))
            if new:
                waiting += 1
                continue
            status = "ERROR" if errors else "PROCESSED"
            cur.execute("""UPDATE bridge.forecast_version SET erp_status = %s, erp_version_no = %s, erp_message = %s,
                               answered_at = now() WHERE erp_batch_id = %s""",
                        (status, version, "; ".join(messages or []) or None, erp_batch))
            (rejected if errors else activated).append((erp_batch, version, messages))
    bridge.commit()
    return {"activated": activated, "rejected": rejected, "waiting": waiting}


def show_on_deals(bridge, crm, batch_id: str, run_id: str, version: str | None) -> int:
    """Deals quarantined with new reasons show them; deals quarantined before that pass now get the message
    cleared (their entries are replayed); entries of deals no longer open (closed, lost) are dismissed."""
    with bridge.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("""SELECT business_key, reasons FROM bridge.quarantine WHERE flow = %s AND status = 'open'
                       AND batch_id = %s AND payload ->> 'demand_type' = 'PIPELINE'
                       AND NOT coalesce((payload ->> 'shown')::boolean, false) AND business_key <> '?'""",
                    (FLOW, batch_id))
        bad = cur.fetchall()
        cur.execute(f"""SELECT DISTINCT s.deal_id FROM {STAGING} s JOIN bridge.quarantine q
                            ON q.flow = %s AND q.status = 'open' AND q.business_key = s.deal_id
                        WHERE s.batch_id = %s AND s.gate_ok AND s.demand_type = 'PIPELINE'""", (FLOW, batch_id))
        fixed = [r["deal_id"] for r in cur.fetchall()]
        cur.execute(f"""SELECT q.business_key FROM bridge.quarantine q WHERE q.flow = %s AND q.status = 'open'
                        AND NOT EXISTS (SELECT 1 FROM {STAGING} s WHERE s.batch_id = %s
                                        AND s.deal_id = q.business_key)""", (FLOW, batch_id))
        gone = [r["business_key"] for r in cur.fetchall()]
    bridge.rollback()
    stamp = dt.date.today().isoformat()
    records = [{"id": r["business_key"], "Integration_Message": f"Not in the ERP demand forecast ({stamp}): "
                + "; ".join(r["reasons"])} for r in bad]
    records += [{"id": d, "Integration_Message": f"In the ERP demand forecast{' ' + version if version else ''}"}
                for d in fixed]
    outcomes = engine.audited_update(bridge, crm, FLOW, "deal", "Deals", records, run_id, batch_id)
    written = [r for r, o in zip(records, outcomes, strict=True) if o.ok]
    with bridge.cursor() as cur:
        cur.execute("""UPDATE bridge.quarantine SET payload = payload || '{"shown": true}' WHERE flow = %s
                       AND status = 'open' AND business_key = ANY (%s)""", (FLOW, [r["id"] for r in written]))
    engine.resolve_quarantine(bridge, FLOW, fixed, "replayed", run_id)
    engine.resolve_quarantine(bridge, FLOW, gone, "dismissed", "crm_forecast_to_erp: the deal is no longer open")
    bridge.commit()
    return len(written)


# ---------------------------------------------------------------------------------------------- flow
# What the flow reads and writes in the CRM (the preflight checks it: include/bridge/doctor.py)
CRM_FIELDS = {"Deals": {"Deal_Items": {"type": "subform"}, "Stage": {"type": "picklist"},
                        "Probability": {}, "Closing_Date": {"type": "date"}, "Account_Name": {"type": "lookup"},
                        "Integration_Message": {"type": "textarea"}},
              "Quotes": {"Quoted_Items": {"type": "subform"}, "Deal_Name": {"type": "lookup"}},
              "Accounts": {"Sales_Region": {"type": "picklist"}}}

class ForecastToErp(Flow):
    """extract -> validate (lines gate, buckets, totals gate) -> send -> record, one Airflow task each."""
    name, source, target = FLOW, "crm", "erp"
    pilot_dimensions = ("regions",)
    pilot_hint = "it forecasts by sales region: pilot it with pilot_regions"

    def crm_fields(self) -> list:
        from include.bridge.doctor import needs_from

        return needs_from(CRM_FIELDS)
    suites = {FLOW: GATED, f"{FLOW}.totals": BUCKET_COLUMNS}
    not_reversible = ("a forecast version is replaced, not reversed: run crm_forecast_to_erp again after the fix "
                      "(erp_api.forecast_versions lists the versions)")

    def extract(self, systems, run_id: str, as_of: dt.date, backfill: bool = False, horizon_months: int | None = None,
                plan: rollout.Rollout | None = None) -> Run:
        run = self.open(systems, run_id, plan, backfill=backfill)
        window = horizon(as_of, int(horizon_months or spec()["settings"]["horizon_months"]))
        with self.step(systems, run, "extract") as counts:
            found = extract(systems.bridge(), systems.crm(), systems.erp(), run.batch_id, window, run.rollout.regions)
            counts["rows_extracted"] = found["rows"]
        run.since, run.until = window[0].isoformat(), window[1].isoformat()
        run.counts |= {k: v for k, v in found.items() if k != "rows"}
        return run

    def validate(self, systems, run: Run, send_alert=None) -> Run:
        with self.step(systems, run, "gate") as counts:
            checked = validate(systems.bridge(), systems.bridge_url(), run.batch_id, run.writer(systems.bridge()))
            if checked["blocked"] is not None:
                result = checked["blocked"]
                self.refuse(systems, run, result, send_alert, f"forecast not sent ({result.rows} rows checked); the "
                            "ERP keeps its version", event_key=f"gate:{result.flow}")
            counts |= {"rows_passed": checked["lines_passed"], "rows_quarantined": len(checked["bad"])}
        run.gate = "passed"
        run.counts |= {"quarantined": len(checked["bad"]), "buckets": checked["buckets"],
                       "deals_passed": checked["deals_passed"]}
        run.facts["total_qty"] = str(checked["total_qty"])
        return run

    def send(self, systems, run: Run, chunk_rows: int | None = None) -> Run:
        if run.backfill:  # a forecast is today's pipeline: an old interval has nothing to resend
            run.facts["skipped"] = "backfill run: the forecast is a snapshot of the current pipeline"
            return run
        window = (dt.date.fromisoformat(run.since), dt.date.fromisoformat(run.until))
        outcome: dict = {}

        def send_version() -> int:
            outcome.update(send(systems.bridge(), systems.erp(), systems.erp_write(), run.batch_id, run.run_id, window,
                                chunk_rows))
            return outcome["sent"]

        with self.step(systems, run, "send"):
            run.counts["sent"] = run.writer(systems.bridge()).send_erp(send_version, lambda: self.version_rows(
                systems.bridge(), run))
        run.facts |= {k: outcome[k] for k in ("erp_batch_id", "unchanged") if k in outcome}
        return run

    @staticmethod
    def version_rows(bridge, run: Run) -> Iterator[PreviewRow]:
        """The forecast rows a dry run would send."""
        with bridge.cursor() as cur:
            cur.execute(f"SELECT sku, region, period_start, demand_type, qty FROM {BUCKETS} WHERE batch_id = %s "
                        "ORDER BY row_no", (run.batch_id,))
            buckets = cur.fetchall()
        bridge.rollback()
        for s, r, p, t, q in buckets:
            yield PreviewRow("erp", "demand_forecast", f"{s}|{r}|{p}|{t}", None, "insert", None,
                             {"qty": q, "horizon": [run.since, run.until]})

    def record(self, systems, run: Run, send_alert=None, wait_seconds: float | None = None) -> dict:
        bridge = systems.bridge()
        if run.rollout.dry_run:
            with self.step(systems, run, "record"):
                pass
            self.close(systems, run, "dry_run", "")
            return {"status": "dry_run", "version": None, "sent": 0, "deals_shown": 0, "waiting": 0}
        with self.step(systems, run, "record") as counts:
            answers = self.wait_for_erp(systems, run, wait_seconds)
            mine = [a for a in answers["activated"] if a[0] == run.facts.get("erp_batch_id")]
            version = mine[0][1] if mine else run.facts.get("unchanged")
            shown = show_on_deals(bridge, systems.crm(), run.batch_id, run.run_id, version)
            for erp_batch, _, messages in answers["rejected"]:
                if send_alert:
                    send_alert(Alert(kind="business", flow=FLOW, run_id=run.run_id,
                                     event_key=f"erp_rejected:{erp_batch}", lines=list(messages or []),
                                     title=f"the ERP rejected forecast batch {erp_batch}; it keeps the previous "
                                           "version"))
            counts |= {"rows_loaded": run.counts.get("sent", 0), "rows_failed": len(answers["rejected"])}
        status = "failed" if any(a[0] == run.facts.get("erp_batch_id") for a in answers["rejected"]) else \
            "partial" if run.counts.get("quarantined") else "success"
        self.close(systems, run, status, f"{self.outcome(run, version, bool(mine))}; "
                   f"{run.counts.get('deals_passed', 0)} deals, {run.counts.get('order_lines', 0)} order lines, "
                   f"{run.counts.get('quarantined', 0)} deals quarantined, total {run.facts.get('total_qty')}")
        return {"status": status, "version": version, "sent": run.counts.get("sent", 0), "deals_shown": shown,
                "waiting": answers["waiting"]}

    def wait_for_erp(self, systems, run: Run, wait_seconds: float | None) -> dict:
        """The ERP's answers (activated and rejected batches); waits while the batch sent now is unanswered."""
        started = time.monotonic()
        wait = spec()["settings"]["wait_for_erp_seconds"] if wait_seconds is None else wait_seconds
        answers = record_answers(systems.bridge(), systems.erp_write())
        while run.facts.get("erp_batch_id") and answers["waiting"] and time.monotonic() - started < wait:
            time.sleep(2)
            more = record_answers(systems.bridge(), systems.erp_write())
            answers = more | {k: answers[k] + more[k] for k in ("activated", "rejected")}
        return answers

    @staticmethod
    def outcome(run: Run, version: str | None, activated: bool) -> str:
        if run.facts.get("unchanged"):
            return f"forecast unchanged: ERP version {run.facts['unchanged']} stays active"
        if run.facts.get("skipped"):
            return run.facts["skipped"]
        if activated:
            return f"{run.counts['sent']} forecast rows sent, active in the ERP as {version}"
        return f"{run.counts.get('sent', 0)} forecast rows sent, waiting for the ERP to apply them"


FORECAST = ForecastToErp()
