"""Flow crm_customers_to_erp: CRM accounts marked ready -> ERP customers, the ERP code back (stage 2).

extract     CRM Accounts with ERP_Sync_Ready = true that no ERP customer is linked to (bridge.id_map)
match       master-data matching first (include/bridge/matching.py): an account that is an existing ERP
            customer is linked, not created again; a doubtful one goes to the review list and waits
validate    the GX gate (expectations/crm_customers_to_erp.json): name present, credit code valid, known currency
send        ERP inbound customer (erp_inbound.customer_in), idempotency key = account id + content hash, through
            the same outbox as orders: a retry or a second run never creates a second customer
write_back  the ERP customer code -> CRM Account_Number, the link -> bridge.id_map
The CRM is master for the customer profile, the ERP for its code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time

import psycopg2.extras

from include.bridge import engine, rollout
from include.bridge.gate import column_of, run_gate
from include.bridge.matching import Account, match_customers
from include.bridge.mirror import data_docs_dir, erp_values
from include.bridge.uscc import is_valid_uscc

FLOW = "crm_customers_to_erp"
STAGING = "bridge.stg_crm_customers_to_erp"
COLUMNS = ["crm_id", "account_name", "uscc", "uscc_ok", "currency", "region", "city", "phone", "address",
           "payload_hash"]
FIELDS = ["Account_Name", "Account_Number", "Unified_Social_Credit_Code", "Currency", "Sales_Region", "Billing_City",
          "Billing_Street", "Phone"]
MESSAGES = {"account_name": "the account name is missing", "uscc_ok": "the unified social credit code is not valid",
            "currency": "a currency the ERP does not know"}


def ready_accounts(bridge, crm) -> list[dict]:
    with bridge.cursor() as cur:
        cur.execute("SELECT crm_id FROM bridge.id_map WHERE entity = 'customer'")
        linked = {r[0] for r in cur.fetchall()}
    bridge.rollback()
    return [r for r in crm.iter_coql("Accounts", FIELDS, where="ERP_Sync_Ready = true") if r["id"] not in linked]


def link_existing(bridge, erp, accounts: list[dict], run_id: str, dry_run: bool = False
                  ) -> tuple[list[dict], dict, list[dict]]:
    """(accounts to create, {crm_id: ERP code} linked to existing customers, accounts waiting for review); a dry run
    finds the links without recording them."""
    from include.flows.master_data_match import read_customers, settings

    candidates = [Account(a["id"], a.get("Account_Name") or "", a.get("Account_Number"),
                          a.get("Unified_Social_Credit_Code"), a.get("Billing_City")) for a in accounts]
    links, reviews = match_customers(candidates, read_customers(erp), settings()["customers"])
    with bridge.cursor() as cur:  # only ERP customers not linked to another account yet
        cur.execute("SELECT erp_key FROM bridge.id_map WHERE entity = 'customer'")
        taken = {r[0] for r in cur.fetchall()}
        linked = {}
        for link in links:
            if link.erp_key not in taken and dry_run:
                linked[link.crm_id] = link.erp_key
            elif link.erp_key not in taken:
                cur.execute("""INSERT INTO bridge.id_map (entity, erp_key, crm_id, match_rule)
                               VALUES ('customer', %s, %s, %s) ON CONFLICT DO NOTHING""",
                            (link.erp_key, link.crm_id, link.rule))
                linked[link.crm_id] = link.erp_key
    bridge.commit()
    doubtful = {r.crm_id for r in reviews if r.issue in ("ambiguous", "conflict", "duplicate_in_crm")}
    waiting = [a for a in accounts if a["id"] in doubtful and a["id"] not in linked]
    create = [a for a in accounts if a["id"] not in linked and a["id"] not in doubtful]
    return create, linked, waiting


def profile_rows(accounts: list[dict]) -> list[tuple]:
    """One staged row (COLUMNS order) per account; the hash covers what the ERP would receive."""
    rows = []
    for a in accounts:
        uscc = (a.get("Unified_Social_Credit_Code") or "").strip().upper() or None
        profile = [a.get("Account_Name"), uscc, a.get("Currency") or "CNY", a.get("Sales_Region"),
                   a.get("Billing_City"), a.get("Phone"), a.get("Billing_Street")]
        phash = hashlib.sha1(json.dumps(profile, ensure_ascii=False).encode()).hexdigest()[:16]
        rows.append((a["id"], profile[0], uscc, uscc is None or is_valid_uscc(uscc), *profile[2:], phash))
    return rows


def nothing_new(bridge, rows: list[tuple]) -> set[str]:
    """Accounts with nothing new to do: already sent (and not rejected by the ERP), or quarantined unchanged —
    they come back when the salesperson edits them, not on every run."""
    with bridge.cursor() as cur:
        cur.execute("""SELECT crm_id FROM bridge.order_outbox WHERE entity = 'customer' AND sent_at IS NOT NULL
                         AND coalesce(erp_status, '') <> 'ERROR'
                       UNION
                       SELECT business_key FROM bridge.quarantine
                       WHERE flow = %s AND status = 'open' AND business_key || ':' || (payload ->> 'payload_hash')
                             = ANY (%s)""", (FLOW, [f"{r[0]}:{r[-1]}" for r in rows]))
        done = {r[0] for r in cur.fetchall()}
    bridge.rollback()
    return done


def gate(bridge, url: str, batch_id: str, currencies: list[str], dry_run: bool = False) -> dict[str, list[str]]:
    """{crm_id: readable reasons} of the accounts that may not go; raises if the batch may not load at all."""
    result = run_gate(bridge, url, flow=FLOW, table=STAGING, batch_id=batch_id, columns=COLUMNS,
                      parameters={"min_rows": 0, "max_rows": 10**7, "currencies": currencies},
                      docs_dir=data_docs_dir(FLOW))
    if not result.may_load:
        raise RuntimeError(f"gate refused batch {batch_id}: {'; '.join(result.summary())}")
    bad: dict[str, list[str]] = {}
    with bridge.cursor() as cur:
        cur.execute(f"SELECT row_no, crm_id, payload_hash FROM {STAGING} WHERE batch_id = %s AND row_no = ANY (%s)",
                    (batch_id, list(result.bad_rows)))
        hashes = {}
        for row_no, crm_id, phash in cur.fetchall():
            hashes[crm_id] = phash
            for reason in result.bad_rows[row_no]:
                bad.setdefault(crm_id, []).append(MESSAGES.get(column_of(reason), reason))
        cur.execute(f"UPDATE {STAGING} SET gate_ok = NOT (crm_id = ANY (%s)) WHERE batch_id = %s",
                    (list(bad), batch_id))
    if not dry_run:
        engine.quarantine(bridge, FLOW, batch_id, [(k, {"crm_id": k, "payload_hash": hashes[k]}, v)
                                                   for k, v in bad.items()])
    bridge.commit()
    return bad


def accounts_to_send(bridge, batch_id: str) -> list[dict]:
    with bridge.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(f"""SELECT * FROM {STAGING} s WHERE batch_id = %s AND gate_ok AND NOT EXISTS (
                            SELECT 1 FROM bridge.order_outbox o WHERE o.crm_id = s.crm_id AND o.entity = 'customer'
                              AND o.sent_at IS NOT NULL AND coalesce(o.erp_status, '') <> 'ERROR')""", (batch_id,))
        rows = cur.fetchall()
    bridge.rollback()
    return rows


def customer_document(r: dict) -> tuple[str, dict]:
    return (f"Accounts:{r['crm_id']}:CREATE:{r['payload_hash']}",
            {k: r[k] for k in ("account_name", "uscc", "currency", "region", "city", "phone", "address")})


def send(bridge, erp_write, batch_id: str, run_id: str) -> int:
    """Send each passed account once: an account sent before is never sent again (even with an edited profile)
    unless the ERP rejected it — a profile edit while the ERP is still creating it must not make a second one."""
    rows = accounts_to_send(bridge, batch_id)
    for r in rows:
        key, payload = customer_document(r)
        with bridge.cursor() as cur:  # outbox first, as for orders
            cur.execute("""INSERT INTO bridge.order_outbox (idempotency_key, crm_id, source_module, entity, action,
                                                            payload_hash, payload, batch_id, run_id)
                           VALUES (%s, %s, 'Accounts', 'customer', 'CREATE', %s, %s, %s, %s)
                           ON CONFLICT (idempotency_key) DO NOTHING""",
                        (key, r["crm_id"], r["payload_hash"], json.dumps(payload, ensure_ascii=False), batch_id,
                         run_id))
        bridge.commit()
        with erp_write.cursor() as cur:
            cur.execute("""INSERT INTO erp_inbound.customer_in (source_system, source_id, idempotency_key,
                               customer_name, uscc, region, city, address, phone, currency)
                           VALUES ('zoho_crm', %s, %s, %s, %s, %s, %s, %s, %s, %s)
                           ON CONFLICT (idempotency_key) DO NOTHING""",
                        (r["crm_id"], key, r["account_name"], r["uscc"], r["region"], r["city"], r["address"],
                         r["phone"], r["currency"]))
        erp_write.commit()
        with bridge.cursor() as cur:
            cur.execute("UPDATE bridge.order_outbox SET sent_at = coalesce(sent_at, now()) WHERE idempotency_key = %s",
                        (key,))
        engine.audit(bridge, FLOW, "erp", "customer",
                     [(r["crm_id"], None, payload | {"idempotency_key": key, "action": "CREATE"}, key)], run_id,
                     batch_id)
        engine.resolve_quarantine(bridge, FLOW, [r["crm_id"]])  # fixed in the CRM since it was quarantined
        bridge.commit()
    return len(rows)


def write_back(bridge, erp_write, crm, run_id: str, batch_id: str) -> dict:
    with bridge.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("""SELECT idempotency_key, crm_id FROM bridge.order_outbox
                       WHERE entity = 'customer' AND sent_at IS NOT NULL AND written_back_at IS NULL""")
        pending = cur.fetchall()
    bridge.rollback()
    with erp_write.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("""SELECT idempotency_key, status, erp_doc_no, error_message, result_message
                       FROM erp_inbound.customer_in WHERE idempotency_key = ANY (%s)""",
                    ([p["idempotency_key"] for p in pending],))
        answers = {r["idempotency_key"]: r for r in cur.fetchall()}
    erp_write.rollback()
    done = [(p, answers[p["idempotency_key"]]) for p in pending
            if answers.get(p["idempotency_key"]) and answers[p["idempotency_key"]]["status"] != "NEW"]
    records = [{"id": p["crm_id"], "Account_Number": a["erp_doc_no"], "Integration_Message":
                f"ERP customer {a['erp_doc_no']}: {a['result_message']}"} if a["status"] == "PROCESSED" else
               {"id": p["crm_id"], "Integration_Message": f"ERP rejected the customer: {a['error_message']}"}
               for p, a in done]
    outcomes = engine.audited_update(bridge, crm, FLOW, "customer", "Accounts", records, run_id, batch_id)
    written = [(p, a) for (p, a), o in zip(done, outcomes, strict=True) if o.ok]
    with bridge.cursor() as cur:
        for p, a in written:
            cur.execute("""UPDATE bridge.order_outbox SET written_back_at = now(), erp_status = %s, erp_doc_no = %s,
                               erp_message = coalesce(%s, %s) WHERE idempotency_key = %s""",
                        (a["status"], a["erp_doc_no"], a["error_message"], a["result_message"], p["idempotency_key"]))
            if a["status"] == "PROCESSED":
                cur.execute("""INSERT INTO bridge.id_map (entity, erp_key, crm_id, match_rule)
                               VALUES ('customer', %s, %s, 'created') ON CONFLICT DO NOTHING""",
                            (a["erp_doc_no"], p["crm_id"]))
    bridge.commit()
    return {"written_back": len(written), "waiting": len(pending) - len(done)}


def show(bridge, crm, records: list[dict], run_id: str, batch_id: str, dry_run: bool) -> None:
    """Account updates (codes, messages), audited; a dry run previews them."""
    rollout.update_crm(bridge, crm, FLOW, "customer", "Accounts", records, run_id, batch_id, dry_run)


def run(systems, run_id: str, wait_seconds: float = 0, plan: rollout.Rollout | None = None) -> dict:
    """The whole flow (small volumes: accounts marked ready since the last run) in one task.

    Rollout: a pilot takes the accounts of its sales regions only (new accounts have no ERP code yet, so a pilot
    by customer code does not apply); a dry run links, gates and previews, writing nothing anywhere."""
    from include.bridge import db

    plan = plan or rollout.Rollout(FLOW)
    if plan.customers or plan.skus:
        raise rollout.PilotNotApplicable(f"{FLOW} creates new customers: pilot it with pilot_regions only")
    bridge, crm = systems.bridge(), systems.crm()
    db.install_schema(bridge)
    batch_id = engine.start_run(bridge, FLOW, run_id, mode=plan.mode)
    rollout.clear_preview(bridge, batch_id)
    started = time.monotonic()
    accounts = [a for a in ready_accounts(bridge, crm) if not plan.regions or a.get("Sales_Region") in plan.regions]
    create, linked, waiting = link_existing(bridge, systems.erp(), accounts, run_id, plan.dry_run)
    stamp = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    # linked to an existing ERP customer: its code comes back, nothing is created
    show(bridge, crm, [{"id": crm_id, "Account_Number": code, "Integration_Message":
                        f"linked to existing ERP customer {code} ({stamp})"} for crm_id, code in linked.items()],
         run_id, batch_id, plan.dry_run)
    show(bridge, crm, [{"id": a["id"], "Integration_Message": "not created: it may be an existing ERP customer; master "
                        "data review decides (bridge.match_review)"} for a in waiting], run_id, batch_id, plan.dry_run)
    rows = profile_rows(create)
    skip = nothing_new(bridge, rows)
    rows = [r for r in rows if r[0] not in skip]
    engine.stage_rows(bridge, STAGING, batch_id, COLUMNS, rows)
    engine.record_step(bridge, batch_id, "extract", time.monotonic() - started, rows_extracted=len(accounts))
    bad = gate(bridge, systems.bridge_url(), batch_id, erp_values(systems, "SELECT code FROM erp_api.currencies"),
               plan.dry_run) if rows else {}
    show(bridge, crm, [{"id": k, "Integration_Message": "Not sent to the ERP: " + "; ".join(v)}
                       for k, v in bad.items()], run_id, batch_id, plan.dry_run)
    if plan.dry_run:
        documents = [(r["crm_id"], *customer_document(r)) for r in accounts_to_send(bridge, batch_id)]
        rollout.preview(bridge, FLOW, batch_id, run_id, [("erp", "customer", crm_id, key, "create", None, payload)
                                                         for crm_id, key, payload in documents])
        engine.record_step(bridge, batch_id, "load", time.monotonic() - started, rows_quarantined=len(bad))
        rollout.finish_dry_run(bridge, batch_id)
        return {"linked": len(linked), "sent": 0, "review": len(waiting), "quarantined": len(bad), "dry_run": True}
    sent = send(bridge, systems.erp_write(), batch_id, run_id)
    counts = write_back(bridge, systems.erp_write(), crm, run_id, batch_id)
    while counts["waiting"] and sent and time.monotonic() - started < wait_seconds:
        time.sleep(2)
        counts = write_back(bridge, systems.erp_write(), crm, run_id, batch_id)
    engine.record_step(bridge, batch_id, "load", time.monotonic() - started, rows_loaded=sent + len(linked),
                       rows_quarantined=len(bad))
    engine.finish_run(bridge, batch_id, "partial" if bad else "success",
                      f"{len(linked)} linked to existing ERP customers, {sent} sent to be created, "
                      f"{len(waiting)} waiting for review, {len(bad)} quarantined, {counts['written_back']} codes "
                      f"written back, {counts['waiting']} waiting for the ERP")
    return {"linked": len(linked), "sent": sent, "review": len(waiting), "quarantined": len(bad)} | counts
