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

from include.bridge import engine, rollout, values
from include.bridge.engine import AuditRow
from include.bridge.flow import Flow, PreviewRow, QuarantineRow, Run
from include.bridge.gate import GateResult, column_of
from include.bridge.matching import Account, match_customers
from include.bridge.mirror import erp_values
from include.bridge.uscc import is_valid_uscc, normalize_uscc

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


def link_existing(bridge, erp, accounts: list[dict], record: bool = True) -> tuple[list[dict], dict, list[dict]]:
    """(accounts to create, {crm_id: ERP code} linked to existing customers, accounts waiting for review); a dry run
    (record=False) finds the links without recording them."""
    from include.flows.master_data_match import read_customers, settings

    candidates = [Account(a["id"], a.get("Account_Name") or "", a.get("Account_Number"),
                          a.get("Unified_Social_Credit_Code"), a.get("Billing_City")) for a in accounts]
    links, reviews = match_customers(candidates, read_customers(erp), settings()["customers"])
    with bridge.cursor() as cur:  # only ERP customers not linked to another account yet
        cur.execute("SELECT erp_key FROM bridge.id_map WHERE entity = 'customer'")
        taken = {r[0] for r in cur.fetchall()}
        linked = {link.crm_id: link.erp_key for link in links if link.erp_key not in taken}
        if record:
            psycopg2.extras.execute_values(cur, """INSERT INTO bridge.id_map (entity, erp_key, crm_id, match_rule)
                                                   VALUES %s ON CONFLICT DO NOTHING""",
                                           [("customer", link.erp_key, link.crm_id, link.rule) for link in links
                                            if link.erp_key not in taken])
    bridge.commit()
    doubtful = {r.crm_id for r in reviews if r.issue in ("ambiguous", "conflict", "duplicate_in_crm")}
    waiting = [a for a in accounts if a["id"] in doubtful and a["id"] not in linked]
    create = [a for a in accounts if a["id"] not in linked and a["id"] not in doubtful]
    return create, linked, waiting


def profile_rows(accounts: list[dict]) -> list[tuple]:
    """One staged row (COLUMNS order) per account; the hash covers what the ERP would receive."""
    rows = []
    for a in accounts:
        text = {k: values.text(a.get(k)) for k in FIELDS}  # a planted non-text is missing, never a crash
        uscc = normalize_uscc(text["Unified_Social_Credit_Code"]) or None
        profile = [text["Account_Name"], uscc, text["Currency"] or "CNY", text["Sales_Region"],
                   text["Billing_City"], text["Phone"], text["Billing_Street"]]
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


def bad_accounts(bridge, batch_id: str, result: GateResult) -> list[QuarantineRow]:
    """The accounts the gate stopped, with readable reasons; the rest of the batch is marked to go."""
    bad: dict[str, list[str]] = {}
    hashes: dict[str, str] = {}
    with bridge.cursor() as cur:
        cur.execute(f"SELECT row_no, crm_id, payload_hash FROM {STAGING} WHERE batch_id = %s AND row_no = ANY (%s)",
                    (batch_id, list(result.bad_rows)))
        for row_no, crm_id, phash in cur.fetchall():
            hashes[crm_id] = phash
            for reason in result.bad_rows[row_no]:
                bad.setdefault(crm_id, []).append(MESSAGES.get(column_of(reason), reason))
        cur.execute(f"UPDATE {STAGING} SET gate_ok = NOT (crm_id = ANY (%s)) WHERE batch_id = %s",
                    (list(bad), batch_id))
    bridge.commit()
    return [QuarantineRow(k, {"crm_id": k, "payload_hash": hashes[k]}, v) for k, v in bad.items()]


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
                     [AuditRow(r["crm_id"], None, payload | {"idempotency_key": key, "action": "CREATE"}, key)], run_id,
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


# What the flow reads and writes in the CRM (the preflight checks it: include/bridge/doctor.py)
CRM_FIELDS = {"Accounts": {"Account_Name": {"type": "text"}, "Account_Number": {"type": "text"},
                           "Unified_Social_Credit_Code": {"type": "text"}, "Sales_Region": {"type": "picklist"},
                           "ERP_Sync_Ready": {"type": "boolean"}, "Integration_Message": {"type": "textarea"}}}

class CustomersToErp(Flow):
    """The whole flow in one task: small volumes (the accounts marked ready since the last run)."""
    name, source, target = FLOW, "crm", "erp"
    pilot_dimensions = ("regions",)
    pilot_hint = "it creates new customers, which have no ERP code yet: pilot it with pilot_regions"

    def crm_fields(self) -> list:
        from include.bridge.doctor import needs_from

        return needs_from(CRM_FIELDS)
    suites = {FLOW: COLUMNS}
    not_reversible = ("an ERP customer cannot be removed through the inbound contract: deactivate it in the ERP if "
                      "it should not exist")

    def run(self, systems, run_id: str, wait_seconds: float = 0, plan: rollout.Rollout | None = None,
            send_alert=None) -> dict:
        run = self.open(systems, run_id, plan)
        bridge, crm, writer = systems.bridge(), systems.crm(), run.writer(systems.bridge())
        with self.step(systems, run, "extract") as counts:
            if writer.live:  # an account the ERP already received is never sent or judged again
                engine.recover_handed_over(bridge, systems.erp_write(), FLOW, "customer", run_id, run.batch_id)
            accounts = [a for a in ready_accounts(bridge, crm)
                        if not run.rollout.regions or a.get("Sales_Region") in run.rollout.regions]
            create, linked, waiting = link_existing(bridge, systems.erp(), accounts, record=writer.live)
            stamp = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
            writer.update_crm(crm, "customer", "Accounts", [  # linked: the code comes back, nothing is created
                {"id": crm_id, "Account_Number": code, "Integration_Message":
                 f"linked to existing ERP customer {code} ({stamp})"} for crm_id, code in linked.items()] + [
                {"id": a["id"], "Integration_Message": "not created: it may be an existing ERP customer; master data "
                 "review decides (bridge.match_review)"} for a in waiting])
            rows = profile_rows(create)
            skip = nothing_new(bridge, rows)
            staged = engine.stage_rows(bridge, STAGING, run.batch_id, COLUMNS, [r for r in rows if r[0] not in skip])
            counts["rows_extracted"] = len(accounts)
        bad = self.checked(systems, run, send_alert) if staged else []
        writer.quarantine("customer", bad)
        bridge.commit()
        writer.update_crm(crm, "customer", "Accounts", [
            {"id": b.key, "Integration_Message": "Not sent to the ERP: " + "; ".join(b.reasons)} for b in bad])
        with self.step(systems, run, "load") as counts:
            sent = writer.send_erp(lambda: send(bridge, systems.erp_write(), run.batch_id, run_id), lambda: (
                PreviewRow("erp", "customer", r["crm_id"], key, "create", None, payload)
                for r in accounts_to_send(bridge, run.batch_id) for key, payload in [customer_document(r)]))
            answers = self.wait_for_erp(systems, run, sent, wait_seconds) if writer.live else {}
            counts["rows_quarantined"] = len(bad)
            if writer.live:
                counts["rows_loaded"] = sent + len(linked)
        done = {"linked": len(linked), "sent": sent, "review": len(waiting), "quarantined": len(bad)}
        if not writer.live:
            self.close(systems, run, "dry_run", "")
            return done | {"dry_run": True}
        self.close(systems, run, "partial" if bad else "success",
                   f"{len(linked)} linked to existing ERP customers, {sent} sent to be created, {len(waiting)} waiting "
                   f"for review, {len(bad)} quarantined, {answers['written_back']} codes written back, "
                   f"{answers['waiting']} waiting for the ERP")
        return done | answers

    def checked(self, systems, run: Run, send_alert=None) -> list[QuarantineRow]:
        """The gate; the accounts it stops."""
        currencies = erp_values(systems, "SELECT code FROM erp_api.currencies")
        result = self.gate(systems, run, table=STAGING, columns=COLUMNS, send_alert=send_alert,
                           parameters={"min_rows": 0, "max_rows": 10**7, "currencies": currencies},
                           title="{rows} accounts not sent")
        return bad_accounts(systems.bridge(), run.batch_id, result)

    def wait_for_erp(self, systems, run: Run, sent: int, wait_seconds: float) -> dict:
        """The ERP's answers written back; waits up to wait_seconds while accounts sent now are unanswered."""
        started = time.monotonic()
        counts = write_back(systems.bridge(), systems.erp_write(), systems.crm(), run.run_id, run.batch_id)
        while counts["waiting"] and sent and time.monotonic() - started < wait_seconds:
            time.sleep(2)
            counts = write_back(systems.bridge(), systems.erp_write(), systems.crm(), run.run_id, run.batch_id)
        return counts


CUSTOMERS = CustomersToErp()
