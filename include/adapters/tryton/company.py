"""The Tryton demo company, built through proteus (Tryton's client API) — runs in Tryton's venv.

The same demo company the reference ERP and the CRM sandbox are seeded from (include/sandbox/demo_company.py), so
master-data matching, stock and credit have something to agree on: customers with Chinese names and unified social
credit codes (Tryton files them as identifiers of type `cn_vat`, China's tax number, checked by python-stdnum),
products by SKU with their VAT rate as customer tax, manufactured products with a bill of materials, stock in two
warehouses (SH01, SZ01) and a little history: sales that were shipped, invoiced and partly paid.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from decimal import Decimal

from proteus import Model, Wizard

from include.sandbox import demo_company

log = logging.getLogger(__name__)

USCC_TYPE = "cn_vat"  # Tryton maps stdnum's cn.uscc to the tax-identifier type cn_vat
COMPANY_NAME = "苏州精工传动设备有限公司"
UOM_NAMES = {"PCS": "Unit", "SET": "Unit", "M": "Meter", "H": "Hour"}
CUSTOMER_GROUPS = ("KA", "DIST", "SME", "EXPORT")
# payment terms by days net (the demo company's customers use these)
TERM_DAYS = (30, 45, 60)


def set_up_company(config=None) -> None:
    """Company, currencies, chart of accounts, fiscal year, taxes, payment terms, the second warehouse."""
    from trytond.modules.account.tests.tools import create_chart, create_fiscalyear, create_tax, get_accounts
    from trytond.modules.account_invoice.tests.tools import set_fiscalyear_invoice_sequences
    from trytond.modules.company.tests.tools import create_company
    from trytond.modules.currency.tests.tools import get_currency

    Party = Model.get("party.party")
    cny = get_currency("CNY")
    usd = get_currency("USD")
    rate = Model.get("currency.currency.rate")
    for currency, value in ((cny, Decimal(1)), (usd, Decimal("0.1390"))):  # Tryton: units per unit of the base
        rate(currency=currency, date=dt.date.today() - dt.timedelta(days=400), rate=value).save()
    create_company(party=Party(name=COMPANY_NAME), currency=cny)
    create_chart()
    fiscalyear = set_fiscalyear_invoice_sequences(create_fiscalyear())
    fiscalyear.click("create_period")
    # document numbers as the reference ERP writes them: SO000001, INV000001, MO000001
    for prefix, sequence in (("INV", fiscalyear.invoice_sequences[0].out_invoice_sequence),
                             ("SO", Model.get("sale.configuration")(1).sale_sequence),
                             ("MO", Model.get("production.configuration")(1).production_sequence)):
        sequence.prefix, sequence.padding = prefix, 6
        sequence.save()
    accounts = get_accounts()

    Category = Model.get("product.category")
    for vat in (13, 9, 6):
        tax = create_tax(Decimal(vat) / 100)
        tax.name = tax.description = f"VAT {vat}%"
        tax.save()
        category = Category(name=f"VAT {vat}%", accounting=True)
        category.account_revenue = accounts["revenue"]
        category.account_expense = accounts["expense"]
        category.customer_taxes.append(tax)
        category.save()
    # a customer without a limit of its own gets the company's default (the reference ERP: its SME group's limit)
    account_config = Model.get("account.configuration")(1)
    account_config.default_credit_limit_amount = Decimal(demo_company.GROUPS["SME"])
    account_config.save()
    PartyCategory = Model.get("party.category")
    for group in CUSTOMER_GROUPS:
        PartyCategory(name=group).save()

    PaymentTerm = Model.get("account.invoice.payment_term")
    for days in TERM_DAYS:
        term = PaymentTerm(name=f"Net {days}")
        term.lines.new(type="remainder", relativedeltas=[Model.get("account.invoice.payment_term.line.delta")(
            days=days)])
        term.save()

    # customer codes C00001... as in the reference ERP: the seeded ones are given, new ones come from the sequence
    party_sequence = Model.get("party.configuration")(1).party_sequence
    party_sequence.prefix, party_sequence.padding = "C", 5
    party_sequence.save()

    Location = Model.get("stock.location")
    main, = Location.find([("type", "=", "warehouse")])
    main.name, main.code = "上海中心仓", "SH01"
    main.save()
    second, = main.duplicate(default={"name": "苏州工厂仓", "code": "SZ01"})  # its zones are copied with it
    zones = {z.code: z for z in Location.find([("parent", "=", second.id)])}
    second.input_location, second.output_location, second.storage_location = zones["IN"], zones["OUT"], zones["STO"]
    second.save()


def seed_master_data(customers: int, skus: int, seed: int, history_sales: int) -> dict[str, int]:
    """Parties, products with BOMs, stock in both warehouses and some shipped / invoiced history."""
    uoms = {name: Model.get("product.uom").find([("name", "=", tryton_name)])[0]
            for name, tryton_name in UOM_NAMES.items()}
    categories = {int(c.name.split()[1].rstrip("%")): c for c in Model.get("product.category").find(
        [("name", "like", "VAT %")])}
    groups = {c.name: c for c in Model.get("party.category").find([])}
    terms = {int(t.name.split()[1]): t for t in Model.get("account.invoice.payment_term").find(
        [("name", "like", "Net %")])}
    usd, = Model.get("currency.currency").find([("code", "=", "USD")])

    Party = Model.get("party.party")
    parties = []
    for c in demo_company.customers(customers, seed):
        party = Party(name=c.name, code=c.code)
        if c.uscc:
            party.identifiers.new(type=USCC_TYPE, code=c.uscc)
        party.addresses[0].city = c.city
        party.contact_mechanisms.new(type="phone", value=c.phone)
        party.categories.append(Model.get("party.category")(groups[c.group].id))
        party.customer_payment_term = terms[min(TERM_DAYS, key=lambda d: abs(d - c.payment_terms_days))]
        if c.currency == "USD":
            party.customer_currency = usd
        if c.credit_limit is not None:
            party.credit_limit_amount = Decimal(c.credit_limit)
        parties.append(party)
    Party.save(parties)
    # the seeded customers came with their codes: the sequence continues after them, or the next customer
    # created from the CRM would be given a code that is taken
    sequence = Model.get("party.configuration")(1).party_sequence
    sequence.number_next = max([int(p.code[1:]) for p in parties if p.code[1:].isdigit()], default=0) + 1
    sequence.save()

    Template = Model.get("product.template")
    templates = []
    products = list(demo_company.products(skus, seed))
    for p in products:
        template = Template(name=p.name, code=p.sku, default_uom=uoms[p.uom], salable=True,
                            type="goods" if p.is_stock_item else "service",
                            list_price=Decimal(str(p.price)).quantize(Decimal("0.0001")),
                            account_category=categories[p.vat])
        template.producible = p.is_manufactured
        template.lead_time = dt.timedelta(days=p.lead_time_days)
        templates.append(template)
    Template.save(templates)
    by_sku = {t.code: t.products[0] for t in Template.find([])}
    _boms(products, by_sku)
    _stock(products, by_sku, seed)
    sales = _history(parties, products, by_sku, seed, history_sales)
    return {"customers": len(parties), "products": len(templates), "history_sales": sales}


def _boms(products, by_sku) -> None:
    """Each manufactured product is assembled from two bought components (bearings, sensors, cable...)."""
    BOM = Model.get("production.bom")
    ProductBom = Model.get("product.product-production.bom")
    components = [p for p in products if p.is_stock_item and not p.is_manufactured]
    if not components:
        return
    for i, p in enumerate(p for p in products if p.is_manufactured):
        product = by_sku[p.sku]
        bom = BOM(name=f"BOM {p.sku}")
        for j in range(2):
            part = by_sku[components[(i * 2 + j) % len(components)].sku]
            bom.inputs.new(product=part, quantity=float(j + 1), unit=part.default_uom)
        bom.outputs.new(product=product, quantity=1.0, unit=product.default_uom)
        bom.save()
        ProductBom(product=product, bom=bom).save()


def _stock(products, by_sku, seed: int) -> None:
    """Opening stock by inventory in both warehouses' storage locations."""
    rng = random.Random(f"tryton-stock:{seed}")
    Inventory = Model.get("stock.inventory")
    for warehouse in Model.get("stock.location").find([("type", "=", "warehouse")], order=[("code", "ASC")]):
        main = warehouse.code == "SH01"  # the central warehouse stocks everything; the factory some of it
        inventory = Inventory(location=warehouse.storage_location)
        for p in products:
            if p.is_stock_item and (main or rng.random() < 0.6):
                inventory.lines.new(product=by_sku[p.sku],
                                    quantity=float(rng.choice([20, 50, 200] if main else [0, 5, 20])))
        inventory.click("confirm")


def _history(parties, products, by_sku, seed: int, n: int) -> int:
    """n past sales: confirmed, shipped, invoiced; some invoices paid, some overdue (invoice date in the past)."""
    from trytond.modules.account.tests.tools import get_accounts

    rng = random.Random(f"tryton-history:{seed}")
    Sale = Model.get("sale.sale")
    Journal = Model.get("account.journal")
    PaymentMethod = Model.get("account.invoice.payment.method")
    cash = get_accounts()["cash"]
    journal, = Journal.find([("type", "=", "cash")])
    method = PaymentMethod(name="Bank transfer", journal=journal, credit_account=cash, debit_account=cash)
    method.save()
    goods = [p for p in products if p.is_stock_item]
    main_warehouse, = Model.get("stock.location").find([("code", "=", "SH01")])
    domestic = [p for p in parties if not p.customer_currency]
    today = dt.date.today()
    # oldest first: Tryton numbers invoices from a strict sequence and refuses an invoice dated before the last one
    for i, sale_date in enumerate(sorted(today - dt.timedelta(days=rng.randint(5, 95)) for _ in range(n))):
        sale = Sale()
        sale.party = rng.choice(domestic)
        sale.warehouse = main_warehouse
        sale.sale_date, sale.reference = sale_date, f"HIST-{i + 1:04d}"
        sale.invoice_method = sale.shipment_method = "order"
        for p in rng.sample(goods, min(2, len(goods))):
            line = sale.lines.new()  # attribute by attribute: each runs Tryton's on_change (price, unit, taxes)
            line.product = by_sku[p.sku]
            line.quantity = float(rng.randint(1, 3))
        sale.click("quote")
        sale.click("confirm")
        for shipment in sale.shipments:
            shipment.effective_date = sale_date + dt.timedelta(days=2)
            shipment.save()
            shipment.click("assign_try")
            shipment.click("pick")
            shipment.click("pack")
            shipment.click("do")
        for invoice in sale.invoices:
            invoice.invoice_date = sale_date + dt.timedelta(days=2)
            invoice.click("post")
            if rng.random() < 0.5:
                pay = invoice.click("pay")
                pay.form.payment_method = method
                pay.form.date = min(today, invoice.invoice_date + dt.timedelta(days=20))
                pay.execute("choice")
    return n


def post_payment(invoice, amount: Decimal | None = None, date: dt.date | None = None):
    """Pay an invoice (in full, or `amount`) by bank transfer."""
    method, = Model.get("account.invoice.payment.method").find([], limit=1)
    pay = Wizard("account.invoice.pay", [invoice])
    pay.form.payment_method = method
    pay.form.date = date or dt.date.today()
    if amount is not None:
        pay.form.amount = amount
    pay.execute("choice")
    return invoice
