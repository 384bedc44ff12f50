"""Flow crm_orders_to_erp: confirmed CRM orders (and accepted quotes) -> ERP inbound sales orders (stage 2).

extract     CRM Sales_Orders / Quotes modified since the watermark (minus a lookback) whose status says
            "send" (Confirmed / Accepted), "approved" (a credit approval recorded in the CRM) or "cancel";
            every line staged with the ERP customer and SKU it maps to (bridge.id_map)
validate    the GX gate (expectations/crm_orders_to_erp.json): a failing line quarantines its whole order with a
            reason a salesperson can read, shown on the CRM order; the other orders proceed
credit      on the latest ERP figures (erp_api.customer_credit): over the available credit -> hold; items overdue
            beyond overdue_block_days -> only prepaid orders pass; an approval in the CRM releases the hold;
            held orders are not sent, the CRM order shows "Credit Hold", finance and sales get one alert
send        one ERP inbound sales order per order and version, idempotency key = module:crm id:action:payload
            hash; a changed order already in the ERP goes as AMEND, a cancelled one as CANCEL — never re-sent as new
write_back  the ERP's answer (order number, status, hold, shortage) -> the CRM order; bridge.id_map links the two
Exactly once: the outbox row is written before the ERP insert, the ERP insert is ON CONFLICT DO NOTHING on its
unique key, and write-back is an update by record id — a retry, a clear, a second run at the same time or a
backfill re-does each step with the same keys and finds it done.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal

import psycopg2.extras

from include.bridge import approvals, config, crm_events, engine, idmap, rollout, values
from include.bridge.alerts import Alert
from include.bridge.engine import AuditRow
from include.bridge.flow import Flow, PreviewRow, QuarantineRow, Run
from include.bridge.gate import GateResult, column_of
from include.bridge.mirror import erp_values
from include.bridge.rollback import FLOW as ROLLBACK_FLOW
from include.bridge.rollback import Reversal

FLOW = "crm_orders_to_erp"
CENT = Decimal("0.01")
STAGING = "bridge.stg_crm_orders_to_erp"
COLUMNS = ["crm_id", "source_module", "subject", "crm_status", "customer_crm_id", "customer_code", "known_customer",
           "currency", "exchange_rate", "home_currency", "rate_ok", "grand_total", "is_prepaid", "credit_check",
           "approved_by", "due_date", "unreadable", "line_no", "product_crm_id", "sku", "known_sku", "qty",
           "list_price", "discount", "line_net", "discount_ok", "total_ok", "tax_rate", "payload_hash"]
HEADER_FIELDS = {"Sales_Orders": ["Subject", "Status", "Account_Name", "Currency", "Exchange_Rate", "Grand_Total",
                                  "Is_Prepaid", "Credit_Check", "Approved_By", "Due_Date", "ERP_Order_No"],
                 "Quotes": ["Subject", "Quote_Stage", "Account_Name", "Currency", "Exchange_Rate", "Grand_Total",
                            "Valid_Till", "ERP_Order_No"]}


def spec() -> dict:
    return config.mapping("crm_orders_to_erp")  # strict: an unknown key or a wrong type names the file


def status_of(module: str, rec: dict) -> str | None:
    """send / cancel / None for a CRM record, by the rules of the mapping."""
    src = spec()["sources"][module]
    value = rec.get(src["send_when"]["field"])
    if value in src["send_when"]["values"]:
        return "send"
    cancel = src.get("cancel_when")
    if cancel and rec.get(cancel["field"]) in cancel["values"]:
        return "cancel"
    if module == "Sales_Orders" and rec.get("Status") == "Credit Hold" and rec.get("Credit_Check") == "Approved":
        return "send"  # an approval recorded in the CRM releases the order
    return None


# ------------------------------------------------------------------------------------------- extract
def order_rows(module: str, rec: dict, customers: dict[str, str], skus: dict[str, str]) -> list[list]:
    """The staged rows (COLUMNS order) of one CRM order: one per line, header fields repeated.

    A value that cannot be read (text in a number field, NaN, a date that does not exist) is staged as None and
    named in `unreadable`: the gate quarantines the order with that reason, and the rest of the batch goes on.
    Lines are numbered 1..n in the CRM's sequence order (an odd or repeated Sequence_Number orders, never breaks).
    The payload hash covers exactly what the ERP would receive (customer, currency, rate, prepaid, dates and
    each line's SKU, qty, price, discount, tax): a resend of the same content has the same hash."""
    src, home = spec()["sources"][module], spec()["settings"]["home_currency"]
    bad: list[str] = []
    account = values.ref(rec.get("Account_Name"))
    code = customers.get(account)
    currency = values.text(rec.get("Currency"))
    rate = values.number(rec.get("Exchange_Rate"), "Exchange_Rate", bad)
    grand_total = values.number(rec.get("Grand_Total"), "Grand_Total", bad)
    due = values.day(rec.get("Due_Date") or rec.get("Valid_Till"), "Due_Date", bad)
    listed = values.items(rec.get(src["items"]))
    ordered = sorted(range(len(listed)), key=lambda i: (values.whole(listed[i].get("Sequence_Number")) or 2**31, i))
    lines = [line_values(n, listed[i], skus, bad) for n, i in enumerate(ordered, 1)]
    content = {"customer": code, "currency": currency, "rate": rec.get("Exchange_Rate"),
               "prepaid": values.flag(rec.get("Is_Prepaid")), "date": due,
               "lines": [[str(x) for x in (ln[0], ln[2], ln[4], ln[5], ln[6], ln[10])] for ln in lines]}
    phash = hashlib.sha1(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]
    header = [values.text(rec.get("id")), module, values.text(rec.get("Subject")),
              values.text(rec.get(src["send_when"]["field"])), account, code, code is not None, currency, rate, home,
              currency == home or bool(rate), grand_total, values.flag(rec.get("Is_Prepaid")),
              values.text(rec.get("Credit_Check")), values.text(rec.get("Approved_By")), due, values.reason(bad)]
    if not lines:  # an order without lines still gets a row, so the gate can say so
        return [header + [None] * 11 + [phash]]
    return [header + ln + [phash] for ln in lines]


def staged_rows(module: str, rec: dict, customers: dict[str, str], skus: dict[str, str]) -> list[list]:
    """order_rows, or for a record that cannot be read at all one row that names why (the gate quarantines it)."""
    try:
        return order_rows(module, rec, customers, skus)
    except Exception as exc:  # noqa: BLE001 - one unreadable record must not stop the batch
        row: list = [None] * (len(COLUMNS) - 1) + [f"unreadable-{type(exc).__name__}"]
        row[COLUMNS.index("crm_id")], row[COLUMNS.index("source_module")] = values.text(rec.get("id")) or None, module
        row[COLUMNS.index("unreadable")] = f"the order could not be read ({type(exc).__name__})"
        return [row]


def line_values(n: int, item: dict, skus: dict[str, str], bad: list[str]) -> list:
    """One line's staged values (line_no .. tax_rate in COLUMNS order); what cannot be read goes to `bad`."""
    where = f"line {n} "
    product = values.ref(item.get("Product_Name"))
    qty = values.number(item.get("Quantity"), where + "Quantity", bad)
    price = values.number(item.get("List_Price"), where + "List_Price", bad)
    discount = values.number(item.get("Discount"), where + "Discount", bad) or Decimal(0)
    taxes = [values.number(t.get("percentage"), where + "Line_Tax", bad) for t in values.items(item.get("Line_Tax"))]
    tax = taxes[0] if taxes else None
    gross = (qty or 0) * (price or 0)
    total = values.number(item.get("Total"), where + "Total", bad)
    net_total = values.number(item.get("Net_Total"), where + "Net_Total", bad)
    total = gross if total is None else total
    total_ok = abs(total - gross) <= CENT and (
        net_total is None or tax is None
        or abs(net_total - (gross - discount) * (1 + tax / 100)) <= CENT * (1 + len(taxes)))
    return [n, product, skus.get(product), skus.get(product) is not None, qty if qty is not None else Decimal(0),
            price if price is not None else Decimal(0), discount, gross - discount, 0 <= discount <= gross, total_ok,
            tax]


def extract(bridge, crm, erp, batch_id: str, since: dt.datetime | None, until: dt.datetime,
            pilot: list[str] | None = None) -> dict:
    """Stage every line of each CRM order / quote that is to be sent (or cancelled) in the window (a pilot run:
    only the orders of its customers, `pilot` = ERP customer codes)."""
    with bridge.cursor() as cur:
        cur.execute("SELECT crm_id, erp_key FROM bridge.id_map WHERE entity = 'customer'")
        customers = dict(cur.fetchall())
        cur.execute("SELECT crm_id, erp_key FROM bridge.id_map WHERE entity = 'product'")
        skus = dict(cur.fetchall())
    with erp.cursor() as cur:  # a CRM product code is only a SKU if the ERP sells that item
        cur.execute("SELECT sku FROM erp_api.items WHERE is_active AND sku = ANY (%s)", (list(set(skus.values())),))
        sellable = {r[0] for r in cur.fetchall()}
    erp.rollback()
    skus = {crm_id: sku for crm_id, sku in skus.items() if sku in sellable}
    with bridge.cursor() as cur:  # versions already handled: sent, or quarantined and not changed since
        cur.execute("""SELECT DISTINCT ON (crm_id) crm_id, payload_hash FROM bridge.order_outbox
                       WHERE action <> 'CANCEL' AND sent_at IS NOT NULL ORDER BY crm_id, created_at DESC""")
        handled = {(c, h) for c, h in cur.fetchall()}
        cur.execute("SELECT business_key, payload ->> 'payload_hash' FROM bridge.quarantine "
                    "WHERE flow = %s AND status = 'open'", (FLOW,))
        handled |= {(c, h) for c, h in cur.fetchall()}
    mirrored = idmap.erp_order_copies(bridge)  # the ERP's own orders, copied by erp_history_to_crm
    bridge.rollback()
    rows, cancels, seen = [], [], 0
    modified_since = since  # the client sends it as Zoho's date-time (seconds, offset)
    for module in spec()["sources"]:
        fields = HEADER_FIELDS[module] + [spec()["sources"][module]["items"], "Modified_Time"]
        for rec in crm.iter_records(module, fields, modified_since=modified_since):
            seen += 1
            if dt.datetime.fromisoformat(rec["Modified_Time"]) > until or rec["id"] in mirrored:
                continue  # the next run's window, or an ERP order's copy
            what = status_of(module, rec)
            if pilot is not None and customers.get(values.ref(rec.get("Account_Name"))) not in pilot:
                continue  # outside the pilot: left for the run that covers it (the watermark waits)
            if what == "cancel":
                cancels.append((module, rec["id"]))
            elif what == "send":
                staged = staged_rows(module, rec, customers, skus)
                if (rec["id"], staged[0][-1]) not in handled:  # our own write-backs bring them back: skip
                    rows.extend(staged)
    engine.stage_rows(bridge, STAGING, batch_id, COLUMNS, rows)
    return {"rows": len(rows), "orders_read": seen, "cancels": cancels}


# ------------------------------------------------------------------------------------------ validate
def bad_orders(bridge, batch_id: str, result: GateResult) -> tuple[list[QuarantineRow], dict[str, str]]:
    """The orders the gate stopped (a failing line stops its whole order) with reasons a salesperson can read, and
    the CRM module of each; the rest of the batch is marked to go."""
    messages = spec()["messages"]
    bad: dict[str, list[str]] = {}
    modules: dict[str, str] = {}
    shown: dict[str, dict] = {}
    with bridge.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        if result.bad_rows:
            cur.execute(f"SELECT * FROM {STAGING} WHERE batch_id = %s AND row_no = ANY (%s)",
                        (batch_id, list(result.bad_rows)))
            for row in cur.fetchall():
                for reason in result.bad_rows[row["row_no"]]:
                    text = messages.get(column_of(reason), reason)
                    if column_of(reason) == "unreadable":
                        text = f"{text}: {row['unreadable']}"
                    whole_order = row["line_no"] is None or column_of(reason) == "unreadable"  # names its lines
                    line = text if whole_order else f"line {row['line_no']}: {text}"
                    modules[row["crm_id"] or "?"] = row["source_module"]
                    if line not in bad.setdefault(row["crm_id"] or "?", []):
                        bad[row["crm_id"] or "?"].append(line)
            # what a person reads beside the reasons (the console, the SQL): which document, whose
            cur.execute(f"""SELECT DISTINCT ON (crm_id) crm_id, payload_hash, source_module AS module, subject,
                                   customer_code FROM {STAGING}
                            WHERE batch_id = %s AND crm_id = ANY (%s) ORDER BY crm_id, row_no""",
                        (batch_id, list(bad)))
            shown = {r["crm_id"]: dict(r) for r in cur.fetchall()}
        cur.execute(f"UPDATE {STAGING} SET gate_ok = NOT (coalesce(crm_id, '') = ANY (%s)) WHERE batch_id = %s",
                    (list(bad), batch_id))
    bridge.commit()
    return [QuarantineRow(k, shown.get(k) or {"crm_id": k, "payload_hash": None}, v) for k, v in bad.items()], modules


MESSAGE_CHARS = 2000  # Integration_Message is a multi-line text field: Zoho refuses a longer value


def message(text: str) -> str:
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 1] + "…"


def crm_messages(bad: list[QuarantineRow], modules: dict[str, str], held: list[dict]) -> dict[str, list[dict]]:
    """What the gate and the credit check decided, per CRM module: the updates of the orders they stopped."""
    stamp = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    shown: dict[str, list[dict]] = {}
    for b in bad:
        shown.setdefault(modules.get(b.key) or "Sales_Orders", []).append({
            "id": b.key, "ERP_Synced_At": stamp,
            "Integration_Message": message("Not sent to the ERP: " + "; ".join(b.reasons))})
    for o in held:
        record = {"id": o["crm_id"], "ERP_Synced_At": stamp,
                  "Integration_Message": message("Credit hold: " + o["reason"])}
        if o["source_module"] == "Sales_Orders":
            record |= {"Status": "Credit Hold", "Credit_Check": o["decision"]}
        shown.setdefault(o["source_module"], []).append(record)
    return shown


# -------------------------------------------------------------------------------------------- credit
def orders_to_send(bridge, batch_id: str, decided: bool = False) -> list[dict]:
    """One dict per gated order of the batch that the ERP has not received in this version yet (decided: only
    those the credit check passed — the decision is kept in the staging table, not handed over in XCom)."""
    with bridge.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(f"""
            SELECT s.crm_id, s.source_module, min(s.subject) AS subject, min(s.customer_code) AS customer_code,
                   min(s.currency) AS currency, min(s.exchange_rate) AS exchange_rate,
                   min(s.grand_total) AS grand_total, bool_or(s.is_prepaid) AS is_prepaid,
                   min(s.credit_check) AS credit_check, min(s.approved_by) AS approved_by,
                   min(s.due_date) AS due_date, min(s.payload_hash) AS payload_hash,
                   min(s.decision) AS decision, min(s.amount_home) AS amount_home,
                   (SELECT o.payload_hash FROM bridge.order_outbox o WHERE o.crm_id = s.crm_id
                      AND o.action <> 'CANCEL' AND o.sent_at IS NOT NULL
                    ORDER BY o.created_at DESC LIMIT 1) AS sent_hash,
                   (SELECT o.payload ->> 'amount_home' FROM bridge.order_outbox o WHERE o.crm_id = s.crm_id
                      AND o.action <> 'CANCEL' AND o.sent_at IS NOT NULL
                    ORDER BY o.created_at DESC LIMIT 1) AS sent_amount
            FROM {STAGING} s WHERE s.batch_id = %s AND s.gate_ok GROUP BY s.crm_id, s.source_module
            ORDER BY s.crm_id""", (batch_id,))
        return [dict(r) for r in cur.fetchall() if r["sent_hash"] != r["payload_hash"]
                and (not decided or r["decision"] in ("Passed", "Approved"))]


def keep_decisions(bridge, batch_id: str, orders: list[dict]) -> None:
    """The credit decisions, and who approved (the verified approver, never the order's free text), in staging."""
    with bridge.cursor() as cur:
        psycopg2.extras.execute_values(cur, f"""
            UPDATE {STAGING} s SET decision = d.decision, amount_home = d.amount_home::numeric,
                                   approved_by = d.approved_by
            FROM (VALUES %s) AS d (batch_id, crm_id, decision, amount_home, approved_by)
            WHERE s.batch_id = d.batch_id AND s.crm_id = d.crm_id""",
            [(batch_id, o["crm_id"], o["decision"], str(o["amount_home"]),
              o["approved_by"] if o["decision"] == "Approved" else None) for o in orders], page_size=1000)
    bridge.commit()


def verify_approvals(crm, orders: list[dict], approvers: approvals.Approvers) -> None:
    """An order's Credit_Check = Approved counts only if a credit approver set it (the CRM's timeline says who);
    otherwise it is ignored (the order is credit-checked like any other) and `approval_ignored` says why."""
    for o in orders:
        if o["credit_check"] != approvals.APPROVED:
            continue
        verdict = approvals.check(crm, o["source_module"], o["crm_id"], approvers)
        o["approved_by"] = verdict.approver
        if not verdict.valid:
            o["credit_check"], o["approval_ignored"] = None, verdict.reason


def credit_check(erp, orders: list[dict]) -> tuple[list[dict], list[dict]]:
    """(passed, held): on the ERP's latest credit figures, orders of one customer taken in turn."""
    settings = spec()["settings"]
    codes = sorted({o["customer_code"] for o in orders})
    with erp.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("SELECT * FROM erp_api.customer_credit WHERE customer_code = ANY (%s)", (codes,))
        credit = {r["customer_code"]: r for r in cur.fetchall()}
        cur.execute("SELECT code, rate_to_home FROM erp_api.currencies")
        rates = {r["code"]: Decimal(str(r["rate_to_home"] or 1)) for r in cur.fetchall()}
    erp.rollback()
    passed, held = [], []
    for o in orders:
        c = credit.get(o["customer_code"])
        rate = Decimal(str(o["exchange_rate"] or rates.get(o["currency"], 1)))
        amount = (Decimal(str(o["grand_total"] or 0)) * rate).quantize(Decimal("0.01"))
        o["amount_home"] = amount
        if o["credit_check"] == approvals.APPROVED and o["approved_by"]:  # verified: verify_approvals
            o["decision"] = "Approved"
            passed.append(o)
        elif c and c["max_overdue_days"] > settings["overdue_block_days"] and not o["is_prepaid"]:
            o["decision"] = "Prepaid Only"
            o["reason"] = (f"items overdue {c['max_overdue_days']} days (limit {settings['overdue_block_days']}): "
                           f"only prepaid orders pass until they are paid or a credit controller approves")
            held.append(o)
        elif c and not c["bypass_credit_check"] and not o["is_prepaid"] and \
                amount > c["credit_available"] + Decimal(o.get("sent_amount") or 0):  # an amendment replaces its own
            o["decision"] = "Hold"
            o["reason"] = (f"order {amount:,.2f} {settings['home_currency']} exceeds the available credit "
                           f"{c['credit_available']:,.2f} (limit {c['credit_limit']:,.2f}); approval needed")
            held.append(o)
        else:
            o["decision"] = "Passed"
            if c:  # the next order of the same customer sees this one
                c["credit_available"] -= amount - Decimal(o.get("sent_amount") or 0)
            passed.append(o)
        if o.get("approval_ignored") and o["decision"] != "Passed":
            o["reason"] += f"; the approval was ignored: {o['approval_ignored']}"
    return passed, held


# ---------------------------------------------------------------------------------------------- send
def documents(bridge, orders: list[dict], cancels: list[tuple[str, str]]) -> list[tuple[dict, str]]:
    """(order, action) of every document to send: CREATE, AMEND (an earlier version reached the ERP) or CANCEL."""
    with bridge.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("""SELECT DISTINCT crm_id FROM bridge.order_outbox
                       WHERE crm_id = ANY (%s) AND action IN ('CREATE', 'AMEND') AND sent_at IS NOT NULL""",
                    ([o["crm_id"] for o in orders],))
        in_erp = {r["crm_id"] for r in cur.fetchall()}
        docs = [(o, "AMEND" if o["crm_id"] in in_erp else "CREATE") for o in orders]
        cur.execute("""SELECT DISTINCT ON (crm_id) crm_id, payload_hash, payload FROM bridge.order_outbox
                       WHERE crm_id = ANY (%s) ORDER BY crm_id, created_at DESC""", ([c[1] for c in cancels],))
        last = {r["crm_id"]: r for r in cur.fetchall()}
    bridge.rollback()
    for module, crm_id in cancels:
        if crm_id in last and not last[crm_id]["payload"].get("cancel"):  # sent before, not cancelled yet
            docs.append(({"crm_id": crm_id, "source_module": module, "payload_hash": last[crm_id]["payload_hash"],
                          "cancel": True}, "CANCEL"))
    return docs


def document_rows(bridge, batch_id: str, part: list[tuple[dict, str]]) -> list[tuple[str, dict, str, dict]]:
    """(idempotency key, order, action, ERP document) of a chunk of documents."""
    payloads = payloads_of(bridge, batch_id, [o for o, action in part if action != "CANCEL"])
    return [(f"{o['source_module']}:{o['crm_id']}:{action}:{o['payload_hash']}", o, action,
             payloads.get(o["crm_id"]) if action != "CANCEL" else {"cancel": True}) for o, action in part]


def send(bridge, erp_write, orders: list[dict], cancels: list[tuple[str, str]], batch_id: str, run_id: str,
         chunk: int = 500, refused: list[QuarantineRow] | None = None) -> int:
    """Insert inbound documents (CREATE / AMEND / CANCEL); a key the ERP already has is a no-op.

    In chunks, each in three commits: the keys into the outbox, the documents into the ERP (one transaction),
    then sent_at + audit. A kill between any two leaves keys a retry re-derives identically: nothing is lost,
    nothing doubled. A document the ERP's tables refuse (a value its columns cannot hold) is found by splitting
    its chunk, quarantined with the database's reason (and added to `refused`), and its outbox key removed: the
    other documents of the chunk go."""
    docs = documents(bridge, orders, cancels)
    for i in range(0, len(docs), chunk):
        rows = document_rows(bridge, batch_id, docs[i:i + chunk])
        with bridge.cursor() as cur:  # outbox first: a crash after the ERP insert still knows the keys
            psycopg2.extras.execute_values(cur, """
                INSERT INTO bridge.order_outbox (idempotency_key, crm_id, source_module, action, payload_hash, payload,
                                                 batch_id, run_id)
                VALUES %s ON CONFLICT (idempotency_key) DO NOTHING""",
                [(key, o["crm_id"], o["source_module"], action, o["payload_hash"],
                  json.dumps(payload, default=str, ensure_ascii=False), batch_id, run_id)
                 for key, o, action, payload in rows])
        bridge.commit()
        bad = insert_isolated(erp_write, rows)
        if bad:
            forget_refused(bridge, batch_id, bad)
            refused is not None and refused.extend(q for _row, q in bad)
            rows = [r for r in rows if r[0] not in {row[0] for row, _q in bad}]
        with bridge.cursor() as cur:
            cur.execute("""UPDATE bridge.order_outbox SET sent_at = coalesce(sent_at, now())
                           WHERE idempotency_key = ANY (%s)""", ([r[0] for r in rows],))
        engine.audit(bridge, FLOW, "erp", "sales_order", [
            AuditRow(o["crm_id"], None, {"idempotency_key": key, "action": action, **payload}, key)
            for key, o, action, payload in rows], run_id, batch_id)
        # an order quarantined before (a bad line, an ERP rejection) and fixed since is not bad any more
        engine.resolve_quarantine(bridge, FLOW, [o["crm_id"] for _k, o, action, _p in rows if action != "CANCEL"],
                                  by=f"sent by {run_id}")
        bridge.commit()
    return len(docs)


def insert_isolated(erp_write, rows: list[tuple[str, dict, str, dict]]) -> list[tuple[tuple, QuarantineRow]]:
    """insert_inbound; when the ERP refuses the chunk for what is in it (a value its columns cannot hold, a
    constraint), the chunk is split until the documents it refuses are found. Those come back with the reason;
    a lost connection is not a document's fault and still fails the task (the retry resends)."""
    try:
        insert_inbound(erp_write, rows)
        return []
    except (psycopg2.DataError, psycopg2.IntegrityError) as exc:
        erp_write.rollback()
        if len(rows) == 1:
            key, o, _action, _payload = rows[0]
            reason = (exc.pgerror or str(exc)).strip().splitlines()[0].removeprefix("ERROR:").strip()
            return [(rows[0], QuarantineRow(o["crm_id"], {"crm_id": o["crm_id"], "payload_hash": o["payload_hash"],
                                                         "idempotency_key": key},
                                            [f"the ERP's inbound tables refused the document: {reason}"]))]
        half = len(rows) // 2
        return insert_isolated(erp_write, rows[:half]) + insert_isolated(erp_write, rows[half:])


def forget_refused(bridge, batch_id: str, bad: list[tuple[tuple, QuarantineRow]]) -> None:
    """The refused documents never reached the ERP: their outbox keys go, the orders are quarantined (skipped
    until the salesperson changes them)."""
    with bridge.cursor() as cur:
        cur.execute("DELETE FROM bridge.order_outbox WHERE idempotency_key = ANY (%s) AND sent_at IS NULL",
                    ([row[0] for row, _q in bad],))
    engine.quarantine(bridge, FLOW, batch_id, [tuple(q) for _row, q in bad])
    bridge.commit()


def payloads_of(bridge, batch_id: str, orders: list[dict]) -> dict[str, dict]:
    """The ERP document of each order (header from the order, lines from the staged rows)."""
    with bridge.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(f"""SELECT crm_id, line_no, sku, qty, list_price, discount, tax_rate, line_net FROM {STAGING}
                        WHERE batch_id = %s AND crm_id = ANY (%s) AND line_no IS NOT NULL ORDER BY crm_id, line_no""",
                    (batch_id, [o["crm_id"] for o in orders]))
        lines: dict[str, list] = {}
        for ln in cur.fetchall():
            lines.setdefault(ln["crm_id"], []).append(erp_line(ln))
    bridge.rollback()
    return {o["crm_id"]: {
        "customer_code": o["customer_code"], "currency": o["currency"], "exchange_rate": o["exchange_rate"],
        "is_prepaid": bool(o["is_prepaid"]), "delivery_date": o["due_date"], "customer_po_no": o["subject"],
        "credit_approved_by": o.get("approved_by") if o.get("decision") == "Approved" else None,
        "amount_home": str(o.get("amount_home") or ""), "lines": lines.get(o["crm_id"], [])} for o in orders}


def erp_line(ln: dict) -> dict:
    """A staged line as the ERP receives it. The CRM's discount is an amount and goes as one (discount_amount): the
    ERP takes the line as exactly qty x price - discount, rounded half up to the cent, which is what line_total
    says; discount_pct is the same discount as a % for people reading the document (the ERP does not recompute
    the line from it)."""
    gross = ln["qty"] * ln["list_price"]
    return {"line_no": ln["line_no"], "sku": ln["sku"], "qty": ln["qty"], "unit_price": ln["list_price"],
            "discount_amount": ln["discount"].quantize(CENT, ROUND_HALF_UP),
            "discount_pct": (ln["discount"] / gross * 100).quantize(CENT, ROUND_HALF_UP) if gross else Decimal(0),
            "tax_rate": ln["tax_rate"], "line_total": (gross - ln["discount"].quantize(CENT, ROUND_HALF_UP))
            .quantize(CENT, ROUND_HALF_UP)}


def insert_inbound(erp_write, rows: list[tuple[str, dict, str, dict]]) -> None:
    """Headers and lines of (key, order, action, payload) in one ERP transaction; ON CONFLICT DO NOTHING makes a
    resend a no-op."""
    warehouse = spec()["settings"]["default_warehouse"]
    with erp_write.cursor() as cur:
        psycopg2.extras.execute_values(cur, """
            INSERT INTO erp_inbound.sales_order_in (source_system, source_id, idempotency_key, action, customer_code,
                customer_po_no, order_date, delivery_date, currency, exchange_rate, is_prepaid, credit_approved_by,
                line_count)
            VALUES %s ON CONFLICT (idempotency_key) DO NOTHING""",
            [(o["crm_id"], key, action, p.get("customer_code"), p.get("customer_po_no"), p.get("delivery_date"),
              p.get("currency"), p.get("exchange_rate"), bool(p.get("is_prepaid")), p.get("credit_approved_by"),
              len(p.get("lines", [])) if action != "CANCEL" else 0) for key, o, action, p in rows],
            template="('zoho_crm', %s, %s, %s, %s, %s, current_date, %s, %s, %s, %s, %s, %s)")
        lines = [(key, ln["line_no"], ln["sku"], ln["qty"], ln["unit_price"], ln["discount_pct"],
                  ln.get("discount_amount"), ln["tax_rate"], ln["line_total"], warehouse)
                 for key, _o, action, p in rows if action != "CANCEL" for ln in p.get("lines", [])]
        if lines:
            psycopg2.extras.execute_values(cur, """
                INSERT INTO erp_inbound.sales_order_line_in (idempotency_key, line_no, sku, qty, unit_price,
                                                             discount_pct, discount_amount, tax_rate, line_total,
                                                             warehouse)
                VALUES %s ON CONFLICT (idempotency_key, line_no) DO NOTHING""", lines, page_size=2000)
    erp_write.commit()


def reverse_erp(bridge, erp_write, batch_id: str, run_id: str, changes: list[dict]) -> list[Reversal]:
    """Rollback (include/bridge/rollback.py) of this flow's ERP documents in run `batch_id`: an order it created is
    cancelled, an amendment amended back to the version sent before; both through the inbound contract, outbox
    first, audited as flow bridge_rollback."""
    docs, notes = [], []
    for c in changes:
        after = c["after"] or {}
        action, crm_id = after.get("action"), c["business_key"]
        module = after.get("idempotency_key", "Sales_Orders:").split(":")[0]
        if c["entity"] != "sales_order" or action not in ("CREATE", "AMEND"):
            notes.append(Reversal(c, "not_reversible", f"{action or 'this'} cannot be reversed"))
            continue
        payload = {"cancel": True} if action == "CREATE" else previous_payload(bridge, crm_id, after["idempotency_key"])
        if payload is None:
            notes.append(Reversal(c, "not_reversible", "no earlier version of the order was sent"))
            continue
        reverse_action = "CANCEL" if action == "CREATE" else "AMEND"
        key = f"{module}:{crm_id}:{reverse_action}:rollback-{batch_id[-12:]}"
        docs.append((key, {"crm_id": crm_id, "source_module": module, "payload_hash": "rollback"}, reverse_action,
                     payload, c))
    if docs:
        with bridge.cursor() as cur:  # outbox first; written back already: the rollback restores the CRM itself
            psycopg2.extras.execute_values(cur, """
                INSERT INTO bridge.order_outbox (idempotency_key, crm_id, source_module, action, payload_hash, payload,
                                                 batch_id, run_id, written_back_at)
                VALUES %s ON CONFLICT (idempotency_key) DO NOTHING""",
                [(k, o["crm_id"], o["source_module"], a, "rollback", json.dumps(p, default=str), f"rollback:{batch_id}",
                  run_id) for k, o, a, p, _ in docs],
                template="(%s, %s, %s, %s, %s, %s, %s, %s, now())")
        bridge.commit()
        insert_inbound(erp_write, [(k, o, a, p) for k, o, a, p, _ in docs])
        with bridge.cursor() as cur:
            cur.execute("UPDATE bridge.order_outbox SET sent_at = coalesce(sent_at, now()) WHERE idempotency_key = "
                        "ANY (%s)", ([d[0] for d in docs],))
        engine.audit(bridge, ROLLBACK_FLOW, "erp", "sales_order", [
            AuditRow(o["crm_id"], c["after"], {"idempotency_key": k, "action": a} | (p if a == "AMEND" else {}), k)
            for k, o, a, p, c in docs], run_id, f"rollback:{batch_id}")
        bridge.commit()
    return [Reversal(c, "cancel_sent" if a == "CANCEL" else "amend_sent", k) for k, _o, a, _p, c in docs] + notes


def previous_payload(bridge, crm_id: str, key: str) -> dict | None:
    """The order document sent before `key` (the version an amendment is rolled back to)."""
    with bridge.cursor() as cur:
        cur.execute("""SELECT payload FROM bridge.order_outbox WHERE crm_id = %s AND action IN ('CREATE', 'AMEND')
                         AND sent_at IS NOT NULL AND created_at < (SELECT created_at FROM bridge.order_outbox
                                                                   WHERE idempotency_key = %s)
                       ORDER BY created_at DESC LIMIT 1""", (crm_id, key))
        row = cur.fetchone()
    bridge.rollback()
    return row[0] if row else None


# ---------------------------------------------------------------------------------------- write back
def write_back(bridge, erp_write, crm, run_id: str, batch_id: str) -> dict:
    """The ERP's answer for every sent document not yet shown in the CRM (from this run or an earlier one)."""
    with bridge.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("""SELECT idempotency_key, crm_id, source_module, action FROM bridge.order_outbox
                       WHERE sent_at IS NOT NULL AND written_back_at IS NULL AND entity = 'sales_order'
                       ORDER BY created_at""")
        pending = cur.fetchall()
    bridge.rollback()
    if not pending:
        return {"written_back": 0, "waiting": 0, "erp_errors": 0}
    with erp_write.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("""SELECT idempotency_key, status, erp_doc_no, erp_status, hold_reason, shortage_qty,
                              error_message, result_message
                       FROM erp_inbound.sales_order_in WHERE idempotency_key = ANY (%s)""",
                    ([p["idempotency_key"] for p in pending],))
        answers = {r["idempotency_key"]: r for r in cur.fetchall()}
    erp_write.rollback()
    done, errors, waiting = [], [], 0
    stamp = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    updates: dict[str, list[dict]] = {}
    for p in pending:
        a = answers.get(p["idempotency_key"])
        if not a or a["status"] == "NEW":
            waiting += 1
            continue
        record: dict = {"id": p["crm_id"], "ERP_Synced_At": stamp}
        if a["status"] == "ERROR":
            record["Integration_Message"] = f"ERP rejected the {p['action'].lower()}: {a['error_message']}"
            errors.append((p, a))
        else:
            record["ERP_Order_No"] = a["erp_doc_no"]
            record["ERP_Status"] = a["erp_status"]
            message = a["result_message"] or "in the ERP"
            if a["shortage_qty"]:
                message += f"; {a['shortage_qty']:g} units not in stock: production / purchase demand raised"
            if p["source_module"] == "Sales_Orders":
                if a["hold_reason"]:
                    record |= {"Status": "Credit Hold", "Credit_Check": "Hold"}
                    message += f"; held in the ERP ({a['hold_reason']})"
                elif p["action"] == "CANCEL":
                    record |= {"Status": "Cancelled"}
                else:
                    record |= {"Status": "Confirmed", "Credit_Check": "Passed"}
            record["Integration_Message"] = f"{a['erp_doc_no']}: {message}"
        updates.setdefault(p["source_module"], []).append(record)
        done.append((p, a))
    outcomes = {}
    for module, records in updates.items():
        crm_events.expect_echoes(bridge, module, [r["id"] for r in records])  # not a change to start a run for
        written = engine.audited_update(bridge, crm, FLOW, "sales_order", module, records, run_id, batch_id)
        for r, o in zip(records, written, strict=True):
            outcomes[r["id"]] = o
    with bridge.cursor() as cur:
        written = [(p, a) for p, a in done if outcomes[p["crm_id"]].ok]
        for p, a in written:
            cur.execute("""UPDATE bridge.order_outbox SET written_back_at = now(), erp_status = %s, erp_doc_no = %s,
                               erp_message = coalesce(%s, %s) WHERE idempotency_key = %s""",
                        (a["status"], a["erp_doc_no"], a["error_message"], a["result_message"], p["idempotency_key"]))
            if a["erp_doc_no"] and a["status"] == "PROCESSED":
                cur.execute("""INSERT INTO bridge.id_map (entity, erp_key, crm_id, match_rule)
                               VALUES ('sales_order', %s, %s, 'created by crm_orders_to_erp')
                               ON CONFLICT (entity, erp_key) DO NOTHING""", (a["erp_doc_no"], p["crm_id"]))
        engine.quarantine(bridge, FLOW, batch_id, [(p["crm_id"], {"idempotency_key": p["idempotency_key"]},
                                                    [f"ERP rejected: {a['error_message']}"]) for p, a in errors])
    bridge.commit()
    return {"written_back": len(written), "waiting": waiting, "erp_errors": len(errors)}




# ---------------------------------------------------------------------------------------------- flow
# What the flow reads and writes in the CRM (the preflight checks it: include/bridge/doctor.py)
CRM_FIELDS = {
    "Sales_Orders": {"Ordered_Items": {"type": "subform"}, "Account_Name": {"type": "lookup"},
                     "Status": {"type": "picklist", "values": ["Confirmed", "Credit Hold"]},
                     "Credit_Check": {"type": "picklist", "values": ["Passed", "Hold", "Approved", "Prepaid Only"]},
                     "ERP_Order_No": {"type": "text", "unique": True}, "ERP_Status": {"type": "text"},
                     "ERP_Synced_At": {"type": "datetime"}, "Integration_Message": {"type": "textarea"},
                     "Is_Prepaid": {"type": "boolean"}, "Approved_By": {"type": "text"}, "Due_Date": {"type": "date"},
                     "Exchange_Rate": {}, "Grand_Total": {"type": "currency"}},
    "Quotes": {"Quoted_Items": {"type": "subform"}, "Account_Name": {"type": "lookup"},
               "Quote_Stage": {"type": "picklist"}, "ERP_Order_No": {"type": "text", "unique": True},
               "ERP_Status": {"type": "text"}, "ERP_Synced_At": {"type": "datetime"},
               "Integration_Message": {"type": "textarea"}}}

class OrdersToErp(Flow):
    """extract -> validate (gate + credit) -> send -> write_back, one Airflow task each (dags/crm_orders_to_erp.py)."""
    name, source, target = FLOW, "crm", "erp"
    pilot_dimensions = ("regions", "customers")
    pilot_hint = "it works on customers' orders: pilot it with pilot_regions or pilot_customers"

    def crm_fields(self) -> list:
        from include.bridge.doctor import needs_from

        return needs_from(CRM_FIELDS)
    suites = {FLOW: COLUMNS}
    reverse_erp = staticmethod(reverse_erp)

    def extract(self, systems, run_id: str, backfill: tuple[dt.datetime, dt.datetime] | None = None,
                replay_quarantine: bool = False, plan: rollout.Rollout | None = None) -> Run:
        run = self.open(systems, run_id, plan, backfill=bool(backfill))
        bridge = systems.bridge()
        pilot = rollout.pilot_keys(systems.erp(), run.rollout, "customer")
        lookback = dt.timedelta(minutes=spec()["settings"]["lookback_minutes"])
        if backfill:
            since, until = backfill[0] - lookback, backfill[1]
        else:
            mark = engine.get_watermark(bridge, FLOW)
            since, until = (mark - lookback if mark else None), dt.datetime.now(dt.UTC)
        if replay_quarantine and engine.open_quarantine(bridge, FLOW):
            since = None  # re-read every order: a fixed one passes now
        with self.step(systems, run, "extract") as counts:
            if run.writer(bridge).live:  # the ERP's inbound keys first: a document handed over is never re-judged
                run.counts["recovered"] = engine.recover_handed_over(bridge, systems.erp_write(), FLOW, "sales_order",
                                                                     run_id, run.batch_id)
            found = extract(bridge, systems.crm(), systems.erp(), run.batch_id, since, until, pilot)
            counts["rows_extracted"] = found["rows"]
        self.covers(systems, run, since, until)
        run.counts["orders_read"] = found["orders_read"]
        run.facts["cancels"] = found["cancels"]
        return run

    def validate(self, systems, run: Run, send_alert=None, approvers: approvals.Approvers | None = None) -> Run:
        """Gate + credit check. Held and bad orders are shown in the CRM; the decisions stay in staging.
        `approvers`: who may release a credit hold in the CRM (approvals.parse_approvers; None: nobody)."""
        bridge, writer = systems.bridge(), run.writer(systems.bridge())
        with self.step(systems, run, "gate") as counts:
            bad, modules = self.checked(systems, run, send_alert) if run.counts["rows_extracted"] else ([], {})
            writer.quarantine("sales_order", bad)
            bridge.commit()
            candidates = orders_to_send(bridge, run.batch_id)
            verify_approvals(systems.crm(), candidates, approvers or approvals.parse_approvers(None))
            passed, held = credit_check(systems.erp(), candidates)
            for module, records in crm_messages(bad, modules, held).items():
                writer.update_crm(systems.crm(), "sales_order", module, records)
            counts |= {"rows_passed": len(passed), "rows_quarantined": len(bad)}
        if held and send_alert and spec()["settings"].get("alert_credit_holds") and writer.live:
            send_alert(Alert(kind="business", flow=FLOW, run_id=run.run_id, event_key="credit_hold",
                             title=f"{len(held)} orders on credit hold",
                             lines=[f"{o['subject']} ({o['customer_code']}): {o['reason']}" for o in held[:20]]))
        keep_decisions(bridge, run.batch_id, passed + held)
        run.counts |= {"to_send": len(passed), "held": len(held), "quarantined": len(bad)}
        return run

    def checked(self, systems, run: Run, send_alert=None) -> tuple[list[QuarantineRow], dict[str, str]]:
        """The gate; the orders it stops and their CRM modules."""
        tax_rates = [float(r) for r in erp_values(systems, "SELECT rate FROM erp_api.tax_rates")]
        result = self.gate(systems, run, table=STAGING, columns=COLUMNS, send_alert=send_alert,
                           parameters={"min_rows": 0, "max_rows": 10**9, "tax_rates": tax_rates},
                           title="{rows} order lines not sent", unit_column="crm_id")
        return bad_orders(systems.bridge(), run.batch_id, result)

    def send(self, systems, run: Run) -> Run:
        bridge, writer = systems.bridge(), run.writer(systems.bridge())
        refused: list[QuarantineRow] = []
        with self.step(systems, run, "send") as counts:
            orders = orders_to_send(bridge, run.batch_id, decided=True)
            cancels = [tuple(c) for c in run.facts["cancels"]]
            sent = writer.send_erp(lambda: send(bridge, systems.erp_write(), orders, cancels, run.batch_id,
                                                run.run_id, refused=refused),
                                   lambda: self.documents(bridge, run.batch_id, documents(bridge, orders, cancels)))
            if refused:  # shown on the CRM orders like the gate's findings
                modules = {o["crm_id"]: o["source_module"] for o in orders}
                for module, records in crm_messages(refused, modules, []).items():
                    writer.update_crm(systems.crm(), "sales_order", module, records)
                counts["rows_quarantined"] = len(refused)
        run.counts["sent"] = sent - len(refused)
        run.counts["quarantined"] = run.counts.get("quarantined", 0) + len(refused)
        return run

    @staticmethod
    def documents(bridge, batch_id: str, docs: list[tuple[dict, str]]) -> Iterator[PreviewRow]:
        """The ERP documents a dry run would send, 500 at a time."""
        for i in range(0, len(docs), 500):
            for key, o, action, payload in document_rows(bridge, batch_id, docs[i:i + 500]):
                yield PreviewRow("erp", "sales_order", o["crm_id"], key, action.lower(), None, payload)

    def write_back(self, systems, run: Run, wait_seconds: float = 0) -> dict:
        """Write back the ERP's answers; waits up to wait_seconds while documents of this run are unprocessed."""
        bridge, writer = systems.bridge(), run.writer(systems.bridge())
        quarantined = run.counts.get("quarantined", 0)
        if not writer.live:  # nothing was sent; answers of earlier live runs wait for the next live run
            with self.step(systems, run, "write_back") as counts:
                counts["rows_quarantined"] = quarantined
            self.close(systems, run, "dry_run", "")
            return {"written_back": 0, "waiting": 0, "erp_errors": 0, "dry_run": True}
        started = time.monotonic()
        with self.step(systems, run, "write_back") as ledger:
            counts = write_back(bridge, systems.erp_write(), systems.crm(), run.run_id, run.batch_id)
            pause = 0.25  # an ERP that answers in a second is seen within a quarter of one; a slow one is polled
            while counts["waiting"] and run.counts.get("sent") and time.monotonic() - started < wait_seconds:
                time.sleep(pause)  # at most every 2 s
                pause = min(2.0, pause * 1.5)
                more = write_back(bridge, systems.erp_write(), systems.crm(), run.run_id, run.batch_id)
                counts = more | {k: counts[k] + more[k] for k in ("written_back", "erp_errors")}
            ledger |= {"rows_loaded": run.counts.get("sent", 0), "rows_failed": counts["erp_errors"],
                       "rows_quarantined": quarantined + counts["erp_errors"]}
        if not run.backfill and not run.rollout.pilot:  # a pilot saw a subset: the others are still to come
            engine.advance_watermark(bridge, FLOW, dt.datetime.fromisoformat(run.until), run.run_id)
        self.close(systems, run, "partial" if quarantined or counts["erp_errors"] else "success",
                   f"{run.counts.get('sent', 0)} sent to the ERP, {run.counts.get('held', 0)} on credit hold, "
                   f"{quarantined} quarantined, {counts['written_back']} written back to the CRM, "
                   f"{counts['waiting']} waiting for the ERP")
        bridge.commit()
        return counts


ORDERS = OrdersToErp()
