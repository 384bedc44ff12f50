"""Seeds the CRM sandbox from the same demo company as the ERP sandbox (include/sandbox/demo_company.py).

What a real CRM of that company looks like: most accounts carry the ERP customer code in
Account_Number, some do not yet (new or never linked); names are spelled as sales typed them
(English name, full-width brackets, city left out); a few companies were entered twice; a few
records are dirty (bad credit code, a product code with stray spaces, a CRM-only product). Products
carry the ERP SKU in Product_Code with a list price that may be stale. Open deals with line items,
quotes, and sales orders in several statuses feed the later stages. Deterministic by seed.
"""

from __future__ import annotations

import datetime as dt
import random

from include.sandbox import demo_company
from include.sandbox.crm.records import RecordWriter

VAT_TAG = {13: "VAT 13%", 9: "VAT 9%", 6: "VAT 6%", 0: "VAT 0%"}
STAGES = [("Qualification", 10), ("Needs Analysis", 20), ("Proposal", 40), ("Negotiation", 70),
          ("Closed Won", 100), ("Closed Lost", 0)]


def _batches(items: list, size: int = 100):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _insert(writer: RecordWriter, module: str, items: list[dict]) -> list[str]:
    ids = []
    for batch in _batches(items):
        for r in writer.write(module, batch, "insert"):
            if r["status"] != "success":
                raise RuntimeError(f"seeding {module} failed: {r}")
            ids.append(r["details"]["id"])
    return ids


def account_name_variant(c: demo_company.Customer, rng: random.Random) -> str:
    """How sales may have typed the company name; still the same company."""
    roll = rng.random()
    if c.currency != "CNY" or roll < 0.7:
        return c.name
    if roll < 0.8:
        return c.name_en
    if roll < 0.9 and c.name.startswith(c.city):
        return c.name[len(c.city):].replace("有限公司", f"（{c.city}）有限公司", 1)  # city moved into brackets
    return c.name.replace("有限公司", " 有限公司")  # stray space


def seed_demo_company(writer: RecordWriter, customers: int = 200, skus: int = 1000, seed: int = 42,
                      today: dt.date | None = None) -> dict[str, int]:
    rng = random.Random(f"crm:{seed}")
    today = today or dt.date.today()
    products = list(demo_company.products(skus, seed))
    product_rows = []
    for p in products:
        code = p.sku
        if p.sku.endswith("000007"):
            code = f" {p.sku.lower()} "  # dirty: typed by hand
        product_rows.append({
            "Product_Name": p.name, "Product_Code": code, "Product_Category": p.family,
            "Unit_Price": round(p.price * rng.choice([1, 1, 1, 0.95, 1.05]), 2), "Usage_Unit": p.uom,
            "Tax": [VAT_TAG[p.vat]], "Product_Active": True, "Description": p.name_en})
    product_rows.append({"Product_Name": "定制方案咨询 (CRM only)", "Product_Code": "CRM-ONLY-001",
                         "Unit_Price": 5000.0, "Usage_Unit": "SET", "Product_Active": True})
    product_ids = _insert(writer, "Products", product_rows)
    sellable = [(pid, p) for pid, p in zip(product_ids, products, strict=False) if p.is_stock_item][:300]

    custs = list(demo_company.customers(customers, seed))
    account_rows, linked = [], []
    for c in custs:
        has_code = rng.random() < 0.85
        row = {"Account_Name": account_name_variant(c, rng), "Account_Type": "Customer", "Phone": c.phone,
               "Billing_City": c.city, "Billing_Country": "China" if c.currency == "CNY" else "",
               "Currency": c.currency, "Sales_Region": c.region, "Industry": "Manufacturing"}
        if has_code:
            row["Account_Number"] = c.code
        if c.uscc and rng.random() < 0.75:
            row["Unified_Social_Credit_Code"] = c.uscc
        account_rows.append(row)
        linked.append(c)
    # deliberate duplicates: the same company entered twice by two salespeople
    for c in custs[1:4]:
        account_rows.append({"Account_Name": c.name.replace("有限公司", "有限责任公司"), "Account_Type": "Customer",
                             "Billing_City": c.city, "Currency": c.currency, "Sales_Region": c.region,
                             "Unified_Social_Credit_Code": c.uscc} if c.uscc else
                            {"Account_Name": c.name + " ", "Currency": c.currency, "Sales_Region": c.region})
    # new prospects the ERP does not know yet, one marked ready to be created in the ERP
    prospects = [("苏州新纪元精密机械有限公司", "320505"), ("杭州云帆智能装备有限公司", "330106"),
                 ("Shenzhen Bright Robotics Co., Ltd.", "440305")]
    for n, (name, division) in enumerate(prospects):
        row = {"Account_Name": name, "Account_Type": "Prospect", "Currency": "CNY", "Sales_Region":
               "South" if division.startswith("44") else "East", "ERP_Sync_Ready": n == 0}
        if n < 2:
            row["Unified_Social_Credit_Code"] = demo_company.make_uscc(rng, division)
        account_rows.append(row)
    account_rows.append({"Account_Name": "坏数据贸易有限公司", "Unified_Social_Credit_Code": "913101151234567890",
                         "Currency": "CNY", "Sales_Region": "East"})  # dirty: check digit wrong
    account_ids = _insert(writer, "Accounts", account_rows)

    contact_rows = [{"Last_Name": rng.choice("王李张刘陈杨黄赵周吴"),
                     "First_Name": rng.choice(["伟", "芳", "娜", "敏", "强"]),
                     "Email": f"buyer{n}@{c.code.lower()}.example.cn", "Account_Name": {"id": aid}}
                    for n, (aid, c) in enumerate(zip(account_ids, linked, strict=False))]
    _insert(writer, "Contacts", contact_rows)

    deal_rows = []
    for n, (aid, c) in enumerate(zip(account_ids, linked, strict=False)):
        if rng.random() > 0.4 or not sellable:
            continue
        stage, prob = rng.choice(STAGES[:4])
        items = [{"Product": {"id": pid}, "Quantity": float(rng.randint(1, 50))}
                 for pid, _ in rng.sample(sellable, rng.randint(1, 3))]
        deal_rows.append({"Deal_Name": f"{c.name} 2027 采购项目 {n}", "Stage": stage, "Probability": prob,
                          "Closing_Date": (today + dt.timedelta(days=rng.randint(5, 120))).isoformat(),
                          "Account_Name": {"id": aid}, "Currency": c.currency, "Sales_Region": c.region,
                          "Amount": float(rng.randint(20, 900) * 1000), "Deal_Items": items})
    deal_ids = _insert(writer, "Deals", deal_rows) if deal_rows else []

    order_rows = []
    statuses = ["Created", "Approved", "Confirmed", "Confirmed", "Delivered", "Cancelled"]
    for n, (aid, c) in enumerate(zip(account_ids, linked, strict=False)):
        if rng.random() > 0.5 or not sellable:
            continue
        lines = []
        for seq, (pid, p) in enumerate(rng.sample(sellable, rng.randint(1, 3)), 1):
            lines.append({"Product_Name": {"id": pid}, "Quantity": float(rng.randint(1, 20)),
                          "List_Price": p.price, "Discount": 0.0, "Sequence_Number": seq,
                          "Line_Tax": [{"name": "VAT", "percentage": p.vat}]})
        order_rows.append({"Subject": f"{c.code} 订单 {today:%Y%m}-{n:04d}", "SO_Number": f"CRM-SO-{n:05d}",
                           "Status": rng.choice(statuses), "Account_Name": {"id": aid}, "Currency": c.currency,
                           "Exchange_Rate": 1.0 if c.currency == "CNY" else 7.12,
                           "Due_Date": (today + dt.timedelta(days=rng.randint(7, 45))).isoformat(),
                           "Ordered_Items": lines})
    order_ids = _insert(writer, "Sales_Orders", order_rows) if order_rows else []

    quote_rows = []
    for n, did in enumerate(deal_ids[:20]):
        pid, p = sellable[n % len(sellable)]
        quote_rows.append({"Subject": f"报价单 Q-{n:04d}", "Quote_Stage": "Accepted" if n % 4 == 0 else "Delivered",
                           "Deal_Name": {"id": did}, "Valid_Till": (today + dt.timedelta(days=30)).isoformat(),
                           "Quoted_Items": [{"Product_Name": {"id": pid}, "Quantity": 5.0, "List_Price": p.price,
                                             "Line_Tax": [{"name": "VAT", "percentage": p.vat}]}]})
    quote_ids = _insert(writer, "Quotes", quote_rows) if quote_rows else []

    # stage 3: two large projects for manufactured products (weekly capacity), a deal whose products are on its
    # quote only, and deals the forecast gate refuses: a probability typed as 150, a closing date long past, a
    # CRM-only product, no products at all
    made = [(pid, p) for pid, p in sellable if p.is_manufactured]
    # one assembly cell (5 a week) and one motor or gearbox (200 a week), in more than the ERP has in stock
    made = [m for m in made if m[1].family == "ASM"][:1] + [m for m in made if m[1].family != "ASM"][:1]
    if made and account_ids and len(product_ids) > len(products):
        aid, region = account_ids[0], custs[0].region if custs else "East"
        big = [{"Product": {"id": pid}, "Quantity": float(150 if p.family == "ASM" else 1500)} for pid, p in made]

        def day(n: int) -> str:
            return (today + dt.timedelta(days=n)).isoformat()

        project = {"Account_Name": {"id": aid}, "Sales_Region": region, "Currency": "CNY", "Amount": 2_000_000.0}
        extra = [
            project | {"Deal_Name": "产线扩建项目 A (large project)", "Stage": "Negotiation", "Probability": 80,
                       "Closing_Date": day(25), "Deal_Items": big},
            project | {"Deal_Name": "产线扩建项目 B (large project)", "Stage": "Proposal", "Closing_Date": day(50),
                       "Deal_Items": big[:1]},
            project | {"Deal_Name": "备件框架协议 (products on the quote)", "Stage": "Proposal", "Probability": 40,
                       "Closing_Date": day(35)},
            project | {"Deal_Name": "坏数据: 概率 150", "Stage": "Negotiation", "Probability": 150,
                       "Closing_Date": day(30), "Deal_Items": big[:1]},
            project | {"Deal_Name": "坏数据: 过期的关闭日期", "Stage": "Proposal", "Probability": 40,
                       "Closing_Date": day(-90), "Deal_Items": big[:1]},
            project | {"Deal_Name": "坏数据: CRM-only product", "Stage": "Proposal", "Probability": 40,
                       "Closing_Date": day(30), "Deal_Items": [{"Product": {"id": product_ids[-1]}, "Quantity": 2.0}]},
            project | {"Deal_Name": "坏数据: no products", "Stage": "Qualification", "Closing_Date": day(60)},
        ]
        extra_ids = _insert(writer, "Deals", extra)
        deal_ids += extra_ids
        pid, p = made[0]
        quote_ids += _insert(writer, "Quotes", [{
            "Subject": "报价单 Q-9001 备件框架", "Quote_Stage": "Delivered", "Deal_Name": {"id": extra_ids[2]},
            "Valid_Till": day(30), "Quoted_Items": [{"Product_Name": {"id": pid}, "Quantity": 30.0,
                                                     "List_Price": p.price,
                                                     "Line_Tax": [{"name": "VAT", "percentage": p.vat}]}]}])
    return {"Products": len(product_ids), "Accounts": len(account_ids), "Contacts": len(contact_rows),
            "Deals": len(deal_ids), "Sales_Orders": len(order_ids), "Quotes": len(quote_ids)}
