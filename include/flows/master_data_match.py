"""Flow master_data_match: link CRM Accounts to ERP customers and CRM Products to ERP SKUs (bridge.id_map).

extract   CRM accounts (COQL, all) and ERP customers (erp_api.customers); CRM products are linked by SKU
match     include/bridge/matching.py with include/mappings/master_data.yaml: exact keys first (ERP code in
          Account_Number, unified social credit code), then normalized names with a similarity score
load      confident links -> bridge.id_map (manual links are never touched; an automatic link that no longer
          holds is removed); everything doubtful -> bridge.match_review + a CSV export, never merged
record    run ledger with counts; products whose unit or tax rate disagrees with the ERP go to review too
"""

from __future__ import annotations

import csv
import json
import os

import psycopg2.extras

from include.bridge import config, engine, idmap, values
from include.bridge.alerts import Alert
from include.bridge.engine import AuditRow
from include.bridge.flow import Flow
from include.bridge.matching import Account, Customer, match_customers

FLOW = "master_data_match"


def settings() -> dict:
    return config.mapping("master_data")  # strict: an unknown key or a wrong type names the file


def review_csv_path() -> str:
    from include.bridge.mirror import reports_dir

    return os.path.join(reports_dir(), "master_data_review.csv")


def read_accounts(crm) -> list[Account]:
    fields = ["Account_Name", "Account_Number", "Unified_Social_Credit_Code", "Billing_City"]
    return [Account(r["id"], values.text(r.get("Account_Name")) or "", values.text(r.get("Account_Number")),
                    values.text(r.get("Unified_Social_Credit_Code")), values.text(r.get("Billing_City")))
            for r in crm.iter_coql("Accounts", fields)]


def read_customers(erp) -> list[Customer]:
    with erp.cursor() as cur:
        cur.execute("SELECT customer_code, customer_name, customer_name_en, uscc, city FROM erp_api.customers "
                    "WHERE is_active")
        rows = [Customer(*r) for r in cur.fetchall()]
    erp.rollback()
    return rows


def apply_customer_links(bridge, links, accounts: set[str], customers: set[str], run_id: str
                         ) -> tuple[dict, list[tuple]]:
    """The matcher's links into bridge.id_map — but a link never moves by itself: a proposal that would re-point an
    existing link (either side already linked elsewhere) is not applied and goes to review (issue link_change).
    A link goes only when its CRM account or ERP customer no longer exists. Every link added or removed is audited
    (entity customer_link). Returns the counts and the review rows."""
    with bridge.cursor() as cur:
        cur.execute("SELECT erp_key, crm_id, match_rule FROM bridge.id_map WHERE entity = 'customer'")
        existing = cur.fetchall()
    by_erp = {e: (c, r) for e, c, r in existing}
    by_crm = {c: (e, r) for e, c, r in existing}
    added, reviews, reruled = [], [], []
    for x in links:
        linked_crm, linked_erp = by_erp.get(x.erp_key), by_crm.get(x.crm_id)
        if linked_crm and linked_crm[0] == x.crm_id:
            if linked_crm[1] != x.rule and linked_crm[1] != "manual":
                reruled.append((x.rule, x.erp_key, x.crm_id))
        elif linked_crm or linked_erp:
            now = (f"ERP customer {x.erp_key} is linked to CRM account {linked_crm[0]}" if linked_crm else
                   f"CRM account {x.crm_id} is linked to ERP customer {linked_erp[0]}")
            reviews.append(("customer", "link_change", x.crm_id, None, x.erp_key, x.score, [],
                            f"matching ({x.rule}) now pairs CRM account {x.crm_id} with ERP customer {x.erp_key}, "
                            f"but {now}: links never move by themselves; change it by hand (match_rule manual)"))
        else:
            added.append(x)
    removed = [(e, c, r) for e, c, r in existing if r != "manual" and (c not in accounts or e not in customers)]
    with bridge.cursor() as cur:
        psycopg2.extras.execute_values(cur, "INSERT INTO bridge.id_map (entity, erp_key, crm_id, match_rule) VALUES %s "
                                            "ON CONFLICT DO NOTHING",
                                       [("customer", x.erp_key, x.crm_id, x.rule) for x in added], page_size=5000)
        cur.execute("DELETE FROM bridge.id_map WHERE entity = 'customer' AND (erp_key, crm_id) IN "
                    "(SELECT * FROM unnest(%s::text[], %s::text[]))",
                    ([e for e, _c, _r in removed], [c for _e, c, _r in removed]))
        psycopg2.extras.execute_batch(cur, "UPDATE bridge.id_map SET match_rule = %s, updated_at = now() "
                                           "WHERE entity = 'customer' AND erp_key = %s AND crm_id = %s", reruled)
        cur.execute("SELECT count(*) FROM bridge.id_map WHERE entity = 'customer'")
        total = cur.fetchone()[0]
        # the flows join their rows to these links next; statistics from before a first linking say there are none
        # (a plan that scans every link per row: 400 s for 85,000 credit rows)
        engine.analyze_if_large(cur, len(added) + len(removed), "bridge.id_map", at_least=1000)
    engine.audit(bridge, FLOW, "bridge", "customer_link",
                 [AuditRow(x.erp_key, None, {"crm_id": x.crm_id, "match_rule": x.rule}, x.crm_id) for x in added]
                 + [AuditRow(e, {"crm_id": c, "match_rule": r}, None, c) for e, c, r in removed], run_id, run_id)
    return {"customers_linked": total, "links_added": len(added), "links_removed": len(removed),
            "links_refused": len(reviews)}, reviews


def link_alert(run_id: str, linked: dict, products: dict):
    """One alert when links changed or were refused: links decide whose credit an order uses."""
    lines = []
    if linked["links_removed"]:
        lines.append(f"{linked['links_removed']} customer links removed (the account or customer no longer exists)")
    if linked["links_refused"]:
        lines.append(f"{linked['links_refused']} customer links NOT moved although matching now points elsewhere "
                     "(review: link_change)")
    if products["links_removed"]:
        lines.append(f"{products['links_removed']} product links removed (code edited or product deleted)")
    if products["conflicts"]:
        lines.append(f"{len(products['conflicts'])} CRM products not linked: ambiguous code (review: "
                     "product_code_conflict)")
    if not lines:
        return None
    return Alert(kind="business", flow=FLOW, run_id=run_id, event_key="link_change",
                 title="master data links need a look", lines=lines)


def product_reviews(bridge, erp, crm) -> list[tuple]:
    """CRM products without an ERP item, or whose unit / tax rate disagree with it (mappings as data)."""
    cfg = settings()["products"]
    crm_rows = list(crm.iter_coql("Products", ["Product_Code", "Product_Name", "Usage_Unit", "Tax"]))
    with erp.cursor() as cur:
        cur.execute("SELECT sku, uom, tax_rate FROM erp_api.items WHERE sku = ANY (%s)",
                    ([idmap.normalize_sku(r.get("Product_Code")) for r in crm_rows if r.get("Product_Code")],))
        items = {sku: (uom, float(rate)) for sku, uom, rate in cur.fetchall()}
    erp.rollback()
    out = []
    for r in crm_rows:
        sku = idmap.normalize_sku(r.get("Product_Code"))
        label = r.get("Product_Name")
        if not sku or sku not in items:
            out.append(("product", "no_erp_item", r["id"], label, sku, None, [],
                        f"Product_Code {r.get('Product_Code')!r} is not an ERP item"))
            continue
        uom, rate = items[sku]
        if r.get("Usage_Unit") and cfg["uom"].get(r["Usage_Unit"]) != uom:
            out.append(("product", "unit_mismatch", r["id"], label, sku, None, [],
                        f"CRM unit {r['Usage_Unit']} vs ERP stock unit {uom}"))
        crm_rates = {cfg["tax"].get(t) for t in (r.get("Tax") or [])}
        if crm_rates and crm_rates != {rate}:
            out.append(("product", "tax_mismatch", r["id"], label, sku, None, [],
                        f"CRM tax {r.get('Tax')} vs ERP VAT {rate:g}%"))
    return out


def write_reviews(bridge, rows: list[tuple], run_id: str) -> str:
    with bridge.cursor() as cur:
        # (product code conflicts are the product-link refresh's own list: idmap.refresh_product_links)
        cur.execute("DELETE FROM bridge.match_review WHERE status = 'open' AND issue <> 'product_code_conflict'")
        psycopg2.extras.execute_values(cur, """
            INSERT INTO bridge.match_review (entity, issue, crm_id, crm_label, erp_key, score, candidates, detail,
                                             run_id) VALUES %s""",
            [(*r[:5], r[5], json.dumps(r[6], ensure_ascii=False), r[7], run_id) for r in rows], page_size=2000)
    path = review_csv_path()
    with open(path, "w", newline="", encoding="utf-8-sig") as f:  # BOM: Excel opens Chinese names correctly
        w = csv.writer(f)
        w.writerow(["entity", "issue", "crm_id", "crm_name", "erp_key", "score", "candidates", "detail"])
        for r in rows:
            cands = "; ".join(f"{c.get('erp_key')} {c.get('name', '')} {c.get('score', '')}".strip() for c in r[6])
            w.writerow([spreadsheet_safe(c) for c in (*r[:5], r[5], cands, r[7])])
    return path


def spreadsheet_safe(cell):
    """A CSV cell a spreadsheet shows as text: CRM names are typed by anyone, and one starting with = + - @ (or a
    tab / carriage return before one) would be run as a formula (=HYPERLINK(...)) in the reviewer's Excel."""
    if isinstance(cell, str) and cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + cell
    return cell


# What matching reads in the CRM (the preflight checks it: include/bridge/doctor.py): a product is linked by its
# code, so the code must be unique in the CRM
CRM_FIELDS = {"Products": {"Product_Code": {"type": "text", "unique": True}},
              "Accounts": {"Account_Name": {"type": "text"}, "Account_Number": {"type": "text"},
                           "Unified_Social_Credit_Code": {"type": "text"}, "Billing_City": {"type": "text"}}}

class MasterDataMatch(Flow):
    """One task: link CRM Accounts <-> ERP customers and Products <-> SKUs (bridge.id_map), list the doubtful ones."""
    name, source, target = FLOW, "crm+erp", "bridge"
    pilot_dimensions = ()
    pilot_hint = "matching compares every account with every customer: run it in full"

    def crm_fields(self) -> list:
        from include.bridge.doctor import needs_from

        return needs_from(CRM_FIELDS)
    suites = {}  # it links records and lists doubtful ones for review; it loads nothing into either system

    def run(self, systems, run_id: str, send_alert=None) -> dict:
        run = self.open(systems, run_id)
        bridge = systems.bridge()
        with self.step(systems, run, "extract") as counts:
            product_links = idmap.refresh_product_links(bridge, systems.crm(), full=True, run_id=run_id)
            products = product_links["products_read"]
            accounts, customers = read_accounts(systems.crm()), read_customers(systems.erp())
            counts["rows_extracted"] = len(accounts) + len(customers)
        with self.step(systems, run, "match") as counts:
            links, reviews = match_customers(accounts, customers, settings()["customers"])
            linked, refused = apply_customer_links(bridge, links, {a.crm_id for a in accounts},
                                                   {c.code for c in customers}, run_id)
            rows = [("customer", r.issue, r.crm_id, r.crm_label, r.erp_key, r.score, r.candidates, r.detail)
                    for r in reviews] + refused
            rows += product_reviews(bridge, systems.erp(), systems.crm())
            path = write_reviews(bridge, rows, run_id)
            bridge.commit()
            counts |= {"rows_loaded": linked["links_added"], "rows_quarantined": len(rows)}
        alert = link_alert(run_id, linked, product_links)
        if alert and send_alert:
            send_alert(alert)
        by_rule: dict[str, int] = {}
        for x in links:
            by_rule[x.rule] = by_rule.get(x.rule, 0) + 1
        rules = ", ".join(f"{k} {v}" for k, v in sorted(by_rule.items()))
        self.close(systems, run, "success", f"{linked['customers_linked']} customers linked ({rules}), {products} "
                                            f"products by SKU, {len(rows)} items to review ({path})")
        return linked | {"products_linked": products, "review_items": len(rows), "review_csv": path,
                         "accounts": len(accounts), "erp_customers": len(customers)}


MATCH = MasterDataMatch()
