"""bridge.id_map: which CRM record is which ERP customer / product / document.

Products link by SKU (Product_Code, exact after trimming and upper-casing) — cheap enough to refresh at
the start of every flow that writes to products. Customers link through master_data_match (codes, credit
codes, names), which also fills the review list.
"""

from __future__ import annotations

import datetime as dt
import unicodedata

import psycopg2.extras

from include.bridge import engine
from include.zoho.client import zoho_datetime

PRODUCT_LINKS = "crm_product_map"  # watermark name


def normalize_sku(code) -> str | None:
    """A Product_Code as the SKU it names: width-folded (NFKC), trimmed, upper case; None for no code."""
    if not isinstance(code, str):
        return None
    code = unicodedata.normalize("NFKC", code).strip().upper()
    return code or None


def lookalike(code: str | None) -> bool:
    """A code that is not plain ASCII after folding (Cyrillic А, Greek Ο, invisible characters): it would only look
    like an ERP SKU. Such a product is never linked; it goes to review."""
    return bool(code) and not (code.isascii() and code.isprintable())


def crm_id_for(conn, entity: str, erp_key: str) -> str | None:
    with conn.cursor() as cur:
        cur.execute("SELECT crm_id FROM bridge.id_map WHERE entity = %s AND erp_key = %s", (entity, erp_key))
        row = cur.fetchone()
    return row[0] if row else None


def erp_order_copies(conn) -> set[str]:
    """CRM ids of the read-only copies of ERP orders the history mirror created (never to be sent back)."""
    with conn.cursor() as cur:
        cur.execute("SELECT crm_id FROM bridge.id_map WHERE entity = 'sales_order' "
                    "AND match_rule LIKE 'created by erp%%'")
        return {r[0] for r in cur.fetchall()}


def refresh_product_links(bridge, crm, full: bool = False, full_refresh_hours: float = 24,
                          run_id: str = "product-map") -> dict:
    """Link CRM Products to ERP SKUs by Product_Code; {products_read, links_added, links_removed, conflicts}.

    Each call reads only products created since the last refresh; all products are re-read when
    `full_refresh_hours` have passed (or when asked, e.g. on quarantine replay), which also picks up
    edited codes and deleted products. Not Modified_Time: the stock and price flows update every product
    they write, so that filter would re-read them all on the next run.
    A link never moves by itself: a product whose code names a SKU already linked to another product (the same
    code after trimming, width or case folding), several new products with one code, or a look-alike code are
    not linked — they go to bridge.match_review (issue product_code_conflict) for a person to decide. Every link
    added or removed is audited (entity product_link)."""
    started = dt.datetime.now(dt.UTC)
    last_full = engine.get_watermark(bridge, PRODUCT_LINKS, "full")
    full = full or last_full is None or started - last_full > dt.timedelta(hours=full_refresh_hours)
    since = None if full else engine.get_watermark(bridge, PRODUCT_LINKS)
    with bridge.cursor() as cur:
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS product_codes (entity text, erp_key text, crm_id text, "
                    "match_rule text, code text) ON COMMIT DROP; TRUNCATE product_codes")
        seen, newest = _stage_product_codes(cur, crm, since)
        engine.analyze_if_large(cur, seen, "product_codes", at_least=1000)
        removed = _drop_stale_product_links(cur) if full else []
        conflicts = _product_code_conflicts(cur, run_id, full)
        # every product link added or removed leaves an audit row: a link decides where stock and orders go
        cur.execute("""
            WITH added AS (
                INSERT INTO bridge.id_map (entity, erp_key, crm_id, match_rule)
                SELECT c.entity, c.erp_key, c.crm_id, c.match_rule FROM product_codes c
                WHERE c.erp_key IN (SELECT erp_key FROM product_codes GROUP BY erp_key HAVING count(*) = 1)
                  -- two probes, one per unique index (an OR of both would compare every pair of rows)
                  AND NOT EXISTS (SELECT 1 FROM bridge.id_map o WHERE o.entity = 'product' AND o.crm_id = c.crm_id)
                  AND NOT EXISTS (SELECT 1 FROM bridge.id_map o WHERE o.entity = 'product' AND o.erp_key = c.erp_key)
                  AND c.match_rule <> 'lookalike'
                ON CONFLICT (entity, erp_key) DO NOTHING
                RETURNING erp_key, crm_id, match_rule)
            INSERT INTO bridge.audit_log (flow, target_system, entity, business_key, before, after, run_id, batch_id,
                                          record_id)
            SELECT 'master_data_match', 'bridge', 'product_link', erp_key, NULL,
                   jsonb_build_object('crm_id', crm_id, 'match_rule', match_rule), %(run)s, %(run)s, crm_id
            FROM added""", {"run": run_id})
        added = cur.rowcount  # (in SQL: a first sync links a million products)
        engine.analyze_if_large(cur, added + len(removed), "bridge.id_map", at_least=1000)
        engine.audit(bridge, "master_data_match", "bridge", "product_link",
                     [engine.AuditRow(k, {"crm_id": c, "match_rule": r}, None, c) for k, c, r in removed], run_id,
                     run_id)
        if full:
            engine.advance_watermark(bridge, PRODUCT_LINKS, started, "product-map", source="full")
    if newest:
        engine.advance_watermark(bridge, PRODUCT_LINKS, newest, "product-map")
    bridge.commit()
    return {"products_read": seen, "links_added": added, "links_removed": len(removed), "conflicts": conflicts}


def _stage_product_codes(cur, crm, since: dt.datetime | None) -> tuple[int, dt.datetime | None]:
    """The CRM products (created since `since`, or all) into the temp table product_codes, 50,000 at a time."""
    # COQL paged by id: the records list stops at 100,000 records even with page tokens
    where = f"Created_Time >= '{zoho_datetime(since - dt.timedelta(seconds=1))}'" if since else None
    newest, seen, rows = since, 0, []
    for rec in crm.iter_coql("Products", ["Product_Code", "Created_Time"], where=where):
        sku = normalize_sku(rec.get("Product_Code"))
        if sku:
            rule = "lookalike" if lookalike(sku) else "sku" if rec["Product_Code"] == sku else "sku_normalized"
            rows.append(("product", sku, rec["id"], rule, str(rec["Product_Code"])[:100]))
        stamp = dt.datetime.fromisoformat(rec["Created_Time"])
        newest = stamp if newest is None or stamp > newest else newest
        if len(rows) >= 50_000:  # bounded memory at a million products
            psycopg2.extras.execute_values(cur, "INSERT INTO product_codes VALUES %s", rows, page_size=5000)
            seen, rows = seen + len(rows), []
    psycopg2.extras.execute_values(cur, "INSERT INTO product_codes VALUES %s", rows, page_size=5000)
    return seen + len(rows), newest


def _drop_stale_product_links(cur) -> list[tuple]:
    """A full read: links of products deleted in the CRM, or whose code was edited, go (and are returned)."""
    cur.execute("""DELETE FROM bridge.id_map m WHERE m.entity = 'product'
                     AND m.match_rule IN ('sku', 'sku_normalized')
                     AND NOT EXISTS (SELECT 1 FROM product_codes c WHERE c.erp_key = m.erp_key
                                     AND c.crm_id = m.crm_id)
                   RETURNING erp_key, crm_id, match_rule""")
    return cur.fetchall()


def _product_code_conflicts(cur, run_id: str, full: bool) -> list[dict]:
    """Products that are not linked because their code is ambiguous: into bridge.match_review (a full read
    keeps what is still open); the ones not listed before are returned as {crm_id, code, sku, why}."""
    # the link of each code's SKU: a full read joins all links at once (hash), an incremental one probes the index
    # per new code (hashing a million links to check a few thousand codes was most of an incremental run)
    linked = ("LEFT JOIN bridge.id_map o ON o.entity = 'product' AND o.erp_key = c.erp_key AND o.crm_id <> c.crm_id"
              if full else
              """LEFT JOIN LATERAL (SELECT o.crm_id FROM bridge.id_map o WHERE o.entity = 'product'
                                    AND o.erp_key = c.erp_key AND o.crm_id <> c.crm_id LIMIT 1) o ON true""")
    cur.execute(f"""
        SELECT c.crm_id, c.code, c.erp_key,
               CASE WHEN c.match_rule = 'lookalike' THEN 'the code has characters that only look like an ERP SKU'
                    WHEN o.crm_id IS NOT NULL THEN 'SKU ' || c.erp_key || ' is already linked to CRM product '
                                                   || o.crm_id
                    ELSE 'several CRM products have the code ' || c.erp_key END
        FROM product_codes c
        {linked}
        WHERE c.match_rule = 'lookalike' OR o.crm_id IS NOT NULL
           OR (c.erp_key IN (SELECT erp_key FROM product_codes GROUP BY erp_key HAVING count(*) > 1)
               AND NOT EXISTS (SELECT 1 FROM bridge.id_map m WHERE m.entity = 'product' AND m.crm_id = c.crm_id))
        ORDER BY c.erp_key, c.crm_id""")
    found = [{"crm_id": r[0], "code": r[1], "sku": r[2], "why": r[3]} for r in cur.fetchall()]
    if full:  # a full read knows every conflict: the ones resolved since leave the review list
        cur.execute("""DELETE FROM bridge.match_review WHERE issue = 'product_code_conflict' AND status = 'open'
                         AND NOT (crm_id = ANY (%s))""", ([f["crm_id"] for f in found],))
    cur.execute("""SELECT crm_id FROM bridge.match_review WHERE issue = 'product_code_conflict' AND status = 'open'""")
    listed = {r[0] for r in cur.fetchall()}
    new = [f for f in found if f["crm_id"] not in listed]
    if new:
        psycopg2.extras.execute_values(cur, """
            INSERT INTO bridge.match_review (entity, issue, crm_id, crm_label, erp_key, detail, run_id) VALUES %s""",
            [("product", "product_code_conflict", f["crm_id"], f["code"], f["sku"],
              f"not linked: {f['why']}; link it by hand (bridge.id_map, match_rule manual) if it is that SKU", run_id)
             for f in new])
    return new


def conflict_alert(flow: str, run_id: str, conflicts: int):
    """One alert for the product codes a run found ambiguous (not linked; listed in bridge.match_review)."""
    from include.bridge.alerts import Alert

    if not conflicts:
        return None
    return Alert(kind="business", flow=flow, run_id=run_id, event_key="product_code_conflict",
                 title=f"{conflicts} CRM products not linked: their code is ambiguous",
                 lines=["A CRM product's code names an ERP SKU already linked to another product, is shared by "
                        "several new products, or only looks like a SKU. Links never move by themselves: decide in "
                        "bridge.match_review (issue product_code_conflict) / master_data_review.csv."])
