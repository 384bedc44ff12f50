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
from functools import cache
from pathlib import Path

import psycopg2.extras
import yaml

from include.bridge import idmap
from include.bridge.flow import Flow
from include.bridge.matching import Account, Customer, match_customers

FLOW = "master_data_match"
AUTO_RULES = ["erp_code", "uscc", "name"]


@cache
def settings() -> dict:
    return yaml.safe_load((Path(__file__).resolve().parents[1] / "mappings" / "master_data.yaml").read_text("utf-8"))


def review_csv_path() -> str:
    from include.bridge.mirror import reports_dir

    return os.path.join(reports_dir(), "master_data_review.csv")


def read_accounts(crm) -> list[Account]:
    fields = ["Account_Name", "Account_Number", "Unified_Social_Credit_Code", "Billing_City"]
    return [Account(r["id"], r.get("Account_Name") or "", r.get("Account_Number"), r.get("Unified_Social_Credit_Code"),
                    r.get("Billing_City")) for r in crm.iter_coql("Accounts", fields)]


def read_customers(erp) -> list[Customer]:
    with erp.cursor() as cur:
        cur.execute("SELECT customer_code, customer_name, customer_name_en, uscc, city FROM erp_api.customers "
                    "WHERE is_active")
        rows = [Customer(*r) for r in cur.fetchall()]
    erp.rollback()
    return rows


def apply_customer_links(bridge, links) -> dict:
    """Automatic links become exactly the matcher's; manual links (match_rule 'manual') stay as they are."""
    with bridge.cursor() as cur:
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS new_links (erp_key text, crm_id text, rule text, score numeric) "
                    "ON COMMIT DROP; TRUNCATE new_links")
        psycopg2.extras.execute_values(cur, "INSERT INTO new_links VALUES %s",
                                       [(x.erp_key, x.crm_id, x.rule, x.score) for x in links], page_size=5000)
        cur.execute("""DELETE FROM bridge.id_map m WHERE m.entity = 'customer' AND m.match_rule = ANY (%s)
                         AND NOT EXISTS (SELECT 1 FROM new_links n
                                         WHERE n.erp_key = m.erp_key AND n.crm_id = m.crm_id)""", (AUTO_RULES,))
        removed = cur.rowcount
        cur.execute("""INSERT INTO bridge.id_map (entity, erp_key, crm_id, match_rule)
                       SELECT 'customer', n.erp_key, n.crm_id, n.rule FROM new_links n
                       WHERE NOT EXISTS (SELECT 1 FROM bridge.id_map m WHERE m.entity = 'customer'
                                         AND (m.erp_key = n.erp_key OR m.crm_id = n.crm_id))""")
        added = cur.rowcount
        cur.execute("""UPDATE bridge.id_map m SET match_rule = n.rule, updated_at = now() FROM new_links n
                       WHERE m.entity = 'customer' AND m.erp_key = n.erp_key AND m.crm_id = n.crm_id
                         AND m.match_rule <> n.rule AND m.match_rule <> 'manual'""")
        cur.execute("SELECT count(*) FROM bridge.id_map WHERE entity = 'customer'")
        total = cur.fetchone()[0]
    return {"customers_linked": total, "links_added": added, "links_removed": removed}


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
        cur.execute("DELETE FROM bridge.match_review WHERE status = 'open'")
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


class MasterDataMatch(Flow):
    """One task: link CRM Accounts <-> ERP customers and Products <-> SKUs (bridge.id_map), list the doubtful ones."""
    name, source, target = FLOW, "crm+erp", "bridge"
    pilot_dimensions = ()
    pilot_hint = "matching compares every account with every customer: run it in full"
    suites = {}  # it links records and lists doubtful ones for review; it loads nothing into either system

    def run(self, systems, run_id: str) -> dict:
        run = self.open(systems, run_id)
        bridge = systems.bridge()
        with self.step(systems, run, "extract") as counts:
            products = idmap.refresh_product_links(bridge, systems.crm(), full=True)
            accounts, customers = read_accounts(systems.crm()), read_customers(systems.erp())
            counts["rows_extracted"] = len(accounts) + len(customers)
        with self.step(systems, run, "match") as counts:
            links, reviews = match_customers(accounts, customers, settings()["customers"])
            linked = apply_customer_links(bridge, links)
            rows = [("customer", r.issue, r.crm_id, r.crm_label, r.erp_key, r.score, r.candidates, r.detail)
                    for r in reviews]
            rows += product_reviews(bridge, systems.erp(), systems.crm())
            path = write_reviews(bridge, rows, run_id)
            bridge.commit()
            counts |= {"rows_loaded": linked["links_added"], "rows_quarantined": len(rows)}
        by_rule: dict[str, int] = {}
        for x in links:
            by_rule[x.rule] = by_rule.get(x.rule, 0) + 1
        rules = ", ".join(f"{k} {v}" for k, v in sorted(by_rule.items()))
        self.close(systems, run, "success", f"{linked['customers_linked']} customers linked ({rules}), {products} "
                                            f"products by SKU, {len(rows)} items to review ({path})")
        return linked | {"products_linked": products, "review_items": len(rows), "review_csv": path,
                         "accounts": len(accounts), "erp_customers": len(customers)}


MATCH = MasterDataMatch()
