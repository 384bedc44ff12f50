"""Demo data for the sandbox ERP: master data by COPY, then history by running the business simulator.

Master data (customers, items, BOMs, bins, prices) is streamed to PostgreSQL with COPY, so a
1,000,000-SKU catalogue (3,000,000 bins) loads in seconds without holding it in memory. History
(orders, shipments, invoices, payments, purchase and production orders) is produced by simulating
`history_days` business days up to `start_date`, so it follows the same rules as later days.
Deterministic: the same seed, sizes and start date give the same master data.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import random
import time
from collections.abc import Iterable, Iterator

from include.sandbox import demo_company
from include.sandbox.erp import simulator

log = logging.getLogger(__name__)

HOME_CURRENCY = "CNY"
RATES = {"USD": 7.12, "EUR": 7.75}


class _RowStream(io.RawIOBase):
    """File-like view of an iterator of tuples as COPY text, read in chunks (bounded memory)."""

    def __init__(self, rows: Iterable[tuple]):
        self._rows = iter(rows)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while len(self._buf) < len(target):
            chunk = []
            for row in self._rows:
                chunk.append("\t".join(r"\N" if v is None else str(v) for v in row))
                if len(chunk) >= 5000:
                    break
            if not chunk:
                break
            self._buf += ("\n".join(chunk) + "\n").encode()
        n = min(len(target), len(self._buf))
        target[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def copy_rows(cur, table: str, columns: tuple[str, ...], rows: Iterable[tuple]) -> None:
    cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", io.BufferedReader(_RowStream(rows), 1 << 20))


def seed(conn, customers: int = 200, skus: int = 1000, seed: int = 42, start_date: dt.date | None = None,
         history_days: int = 100, progress=print) -> dict:
    """Load a fresh (empty) sandbox ERP; returns timings per step."""
    start_date = start_date or dt.date.today()
    opening = start_date - dt.timedelta(days=history_days)
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    with conn.cursor() as cur:
        # Bulk load of generated, consistent-by-construction master data: skip per-row FK triggers
        # (the largest cost of COPY here). Superuser only; ends with this transaction.
        cur.execute("SET LOCAL session_replication_role = replica")
        _reference_data(cur, opening, seed)
        custs = list(demo_company.customers(customers, seed))
        copy_rows(cur, "erp.customer",
                  ("customer_code", "customer_name", "customer_name_en", "uscc", "customer_group", "region", "city",
                   "phone", "currency", "credit_limit", "payment_terms_days"),
                  ((c.code, c.name, c.name_en, c.uscc, c.group, c.region, c.city, c.phone, c.currency,
                    c.credit_limit, c.payment_terms_days) for c in custs))
        cur.execute("SELECT setval('erp.customer_seq', %s)", (customers,))
        timings["customers"] = time.monotonic() - t0

        t1 = time.monotonic()
        products = list(demo_company.products(skus, seed))
        suppliers = [f"S{n:03d}" for n in range(1, 21)]
        copy_rows(cur, "erp.item",
                  ("sku", "item_name", "item_group", "stock_uom", "tax_rate_code", "is_stock_item", "is_manufactured",
                   "lead_time_days", "weekly_capacity", "default_supplier"),
                  ((p.sku, p.name, p.family, p.uom, f"VAT{p.vat}", p.is_stock_item, p.is_manufactured,
                    p.lead_time_days, (200 if p.family != "ASM" else 5) if p.is_manufactured else None,
                    None if p.is_manufactured or not p.is_stock_item else suppliers[i % len(suppliers)])
                   for i, p in enumerate(products)))
        # bearings also sell by the box of 12, cable by the 100 m reel
        copy_rows(cur, "erp.uom_conversion", ("sku", "uom", "factor"),
                  [(p.sku, "BOX", 12) for p in products if p.family == "BRG"]
                  + [(p.sku, "ROLL", 100) for p in products if p.family == "CBL"])
        copy_rows(cur, "erp.item_price",
                  ("price_list", "sku", "uom", "currency", "unit_price", "tax_included", "valid_from"),
                  (("Standard Selling", p.sku, p.uom, HOME_CURRENCY, p.price, False, opening) for p in products))
        _boms(cur, products, seed)
        timings["items"] = time.monotonic() - t1

        t2 = time.monotonic()
        copy_rows(cur, "erp.bin", ("sku", "warehouse", "actual_qty", "safety_stock", "projected_14d"),
                  _bins(products, seed))
        timings["bins"] = time.monotonic() - t2
        cur.execute("SELECT erp.refresh_customer_credit(NULL)")
    conn.commit()
    with conn.cursor() as cur:
        cur.execute("ANALYZE")
    conn.commit()
    progress(f"    master data: {customers} customers, {skus} SKUs, {3 * sum(p.is_stock_item for p in products)} "
             f"bins in {time.monotonic() - t0:.1f} s")

    t3 = time.monotonic()
    for day in range(history_days):
        simulator.simulate_day(conn)
        if progress and (day + 1) % 25 == 0:
            progress(f"    simulated {day + 1}/{history_days} business days")
    timings["history"] = time.monotonic() - t3
    return {k: round(v, 2) for k, v in timings.items()}


def _reference_data(cur, opening: dt.date, seed: int) -> None:
    settings = {"business_date": opening.isoformat(), "seed": str(seed), "home_currency": HOME_CURRENCY,
                "default_warehouse": "SH01", "production_warehouse": "SZ01", "default_customer_group": "SME",
                "overdue_block_days": "60"}
    cur.executemany("INSERT INTO erp.setting VALUES (%s, %s)", list(settings.items()))
    cur.executemany("INSERT INTO erp.currency VALUES (%s, %s, %s, %s)",
                    [("CNY", "人民币 Chinese Yuan", "¥", True), ("USD", "US Dollar", "$", False),
                     ("EUR", "Euro", "€", False)])
    cur.executemany("INSERT INTO erp.exchange_rate VALUES (%s, %s, %s)",
                    [(c, opening, r) for c, r in RATES.items()])
    cur.executemany("INSERT INTO erp.uom VALUES (%s, %s)",
                    [("PCS", "个"), ("BOX", "箱"), ("SET", "套"), ("M", "米"), ("ROLL", "卷"), ("H", "小时"),
                     ("KG", "千克")])
    cur.executemany("INSERT INTO erp.tax_rate VALUES (%s, %s, %s)",
                    [("VAT13", 13, "增值税 13% goods"), ("VAT9", 9, "增值税 9% transport"),
                     ("VAT6", 6, "增值税 6% services"), ("VAT0", 0, "零税率 export")])
    cur.executemany("INSERT INTO erp.warehouse (code, name, city) VALUES (%s, %s, %s)", demo_company.WAREHOUSES)
    cur.executemany("INSERT INTO erp.customer_group VALUES (%s, %s, %s)",
                    [(k, {"KA": "重点客户 Key accounts", "DIST": "经销商 Distributors", "SME": "中小客户 SME",
                          "EXPORT": "出口客户 Export"}[k], v) for k, v in demo_company.GROUPS.items()])
    rng = random.Random(f"suppliers:{seed}")
    cur.executemany("INSERT INTO erp.supplier VALUES (%s, %s)",
                    [(f"S{n:03d}", f"{rng.choice(demo_company.CITIES)[0]}{rng.choice(demo_company.CORES)[0]}"
                                   f"零部件有限公司") for n in range(1, 21)])


def _boms(cur, products: list, seed: int) -> None:
    rng = random.Random(f"boms:{seed}")
    parts = [p.sku for p in products if p.is_stock_item and not p.is_manufactured][:5000]
    if not parts:
        return
    made = [p for p in products if p.is_manufactured]
    copy_rows(cur, "erp.bom", ("bom_no", "sku", "qty"), ((f"BOM-{p.sku}", p.sku, 1) for p in made))

    def items() -> Iterator[tuple]:
        for p in made:
            for comp in rng.sample(parts, min(len(parts), rng.randint(2, 4))):
                yield f"BOM-{p.sku}", comp, rng.choice([1, 1, 2, 4])
    copy_rows(cur, "erp.bom_item", ("bom_no", "component_sku", "qty"), items())


def _bins(products: list, seed: int) -> Iterator[tuple]:
    rng = random.Random(f"bins:{seed}")
    for p in products:
        if not p.is_stock_item:
            continue
        scale = 10 if p.price < 100 else 1  # cheap parts are stocked in larger numbers
        for wh, _, _ in demo_company.WAREHOUSES:
            safety = rng.choice([0, 5, 10, 20]) * scale
            roll = rng.random()
            if roll < 0.03:
                on_hand = 0                                   # out of stock
            elif roll < 0.08:
                on_hand = rng.randint(0, safety)              # below safety stock
            else:
                on_hand = rng.randint(safety, safety * 6 + 12 * scale)
            yield p.sku, wh, on_hand, safety, on_hand
