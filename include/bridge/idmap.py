"""bridge.id_map: which CRM record is which ERP customer / product / document.

Products link by SKU (Product_Code, exact after trimming and upper-casing) — cheap enough to refresh at
the start of every flow that writes to products. Customers link through master_data_match (codes, credit
codes, names), which also fills the review list.
"""

from __future__ import annotations

import datetime as dt

import psycopg2.extras

from include.bridge import engine

PRODUCT_LINKS = "crm_product_map"  # watermark name


def normalize_sku(code: str | None) -> str | None:
    return code.strip().upper() if code and code.strip() else None


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


def refresh_product_links(bridge, crm, full: bool = False, full_refresh_hours: float = 24) -> int:
    """Link CRM Products to ERP SKUs by Product_Code.

    Each call reads only products created since the last refresh; all products are re-read when
    `full_refresh_hours` have passed (or when asked, e.g. on quarantine replay), which also picks up
    edited codes and deleted products. Not Modified_Time: the stock and price flows update every product
    they write, so that filter would re-read them all on the next run.
    """
    started = dt.datetime.now(dt.UTC)
    last_full = engine.get_watermark(bridge, PRODUCT_LINKS, "full")
    full = full or last_full is None or started - last_full > dt.timedelta(hours=full_refresh_hours)
    since = None if full else engine.get_watermark(bridge, PRODUCT_LINKS)
    # COQL paged by id: the records list stops at 100,000 records even with page tokens
    where = f"Created_Time >= '{(since - dt.timedelta(seconds=1)).isoformat()}'" if since else None
    newest, seen, rows = since, 0, []
    with bridge.cursor() as cur:
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS product_codes (entity text, erp_key text, crm_id text, "
                    "match_rule text) ON COMMIT DROP; TRUNCATE product_codes")
        for rec in crm.iter_coql("Products", ["Product_Code", "Created_Time"], where=where):
            sku = normalize_sku(rec.get("Product_Code"))
            if sku:
                rows.append(("product", sku, rec["id"], "sku" if rec["Product_Code"] == sku else "sku_normalized"))
            stamp = dt.datetime.fromisoformat(rec["Created_Time"])
            newest = stamp if newest is None or stamp > newest else newest
            if len(rows) >= 50_000:  # bounded memory at a million products
                psycopg2.extras.execute_values(cur, "INSERT INTO product_codes VALUES %s", rows, page_size=5000)
                seen, rows = seen + len(rows), []
        psycopg2.extras.execute_values(cur, "INSERT INTO product_codes VALUES %s", rows, page_size=5000)
        seen += len(rows)
        if full:  # a code edited or a product deleted in the CRM: its old link goes
            cur.execute("""DELETE FROM bridge.id_map m WHERE m.entity = 'product'
                             AND m.match_rule IN ('sku', 'sku_normalized')
                             AND NOT EXISTS (SELECT 1 FROM product_codes c WHERE c.erp_key = m.erp_key
                                             AND c.crm_id = m.crm_id)""")
        # one CRM record per SKU (a duplicated code links the exact spelling, then the oldest record)
        cur.execute("""
            INSERT INTO bridge.id_map (entity, erp_key, crm_id, match_rule)
            SELECT * FROM (SELECT DISTINCT ON (erp_key) * FROM product_codes
                           ORDER BY erp_key, match_rule, length(crm_id), crm_id) c
            WHERE NOT EXISTS (SELECT 1 FROM bridge.id_map o WHERE o.entity = 'product' AND o.crm_id = c.crm_id
                              AND o.erp_key <> c.erp_key)
            ON CONFLICT (entity, erp_key) DO UPDATE SET crm_id = excluded.crm_id, match_rule = excluded.match_rule,
                updated_at = now()
            WHERE bridge.id_map.crm_id IS DISTINCT FROM excluded.crm_id""")
        if full:
            engine.advance_watermark(bridge, PRODUCT_LINKS, started, "product-map", source="full")
    if newest:
        engine.advance_watermark(bridge, PRODUCT_LINKS, newest, "product-map")
    bridge.commit()
    return seen
