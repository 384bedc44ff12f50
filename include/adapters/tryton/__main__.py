"""Tryton side of the adapter (runs in .venv-tryton): `python -m include.adapters.tryton COMMAND --db NAME`.

  install   Tryton's tables and modules, the company and the seeded demo company (on an empty database)
  import    the import job: drain erp_inbound into Tryton (one pass; --loop SECONDS to keep going)
  fulfil    ship and invoice what is open (--pay: and collect it); the demo's "business days" on a real ERP
  sales     the sales that carry a CRM reference, as Tryton reports them (JSON)
  summary   counts of what the CRM put into Tryton (parties, sales by state, forecasts), through Tryton's API
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.adapters.tryton")
    parser.add_argument("command", choices=["install", "seed", "import", "fulfil", "sales", "summary"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--customers", type=int, default=60)
    parser.add_argument("--skus", type=int, default=80)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--history-sales", type=int, default=12)
    parser.add_argument("--pay", action="store_true", help="fulfil: also collect the invoices")
    parser.add_argument("--loop", type=float, default=0, help="import: keep draining every N seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from include.adapters.tryton import server

    if args.command == "install":
        started = time.monotonic()
        server.admin(args.db, "--all", "--email", "admin@example.com")
        server.admin(args.db, "-u", *server.MODULES, "--activate-dependencies")
        server.connect(args.db)
        from include.adapters.tryton import company

        company.set_up_company()
        counts = company.seed_master_data(args.customers, args.skus, args.seed, args.history_sales)
        print(json.dumps({"installed_in_s": round(time.monotonic() - started, 1), **counts}))
        return 0

    if args.command == "import":
        # Tryton processes a confirmed sale (shipments, invoices) through its queue; the import job leaves that to
        # the ERP's own processing run (`fulfil` here, Tryton's queue worker in production), so an order confirmed
        # today can still be amended or cancelled from the CRM until the warehouse starts on it
        os.environ["TRYTOND_QUEUE__WORKER"] = "True"
    server.connect(args.db)
    if args.command == "seed":  # the demo company again on an installed company (development)
        from include.adapters.tryton import company

        print(json.dumps(company.seed_master_data(args.customers, args.skus, args.seed, args.history_sales)))
        return 0
    if args.command in ("fulfil", "sales", "summary"):
        from include.adapters.tryton import fulfil

        report = {"fulfil": lambda: fulfil.fulfil_open_sales(args.pay), "sales": fulfil.sales_by_reference,
                  "summary": fulfil.crm_summary}[args.command]
        print(json.dumps(report(), ensure_ascii=False))
        return 0

    from include.adapters.tryton import importer

    while True:
        print(json.dumps(importer.process_inbound(args.db)), flush=True)
        if not args.loop:
            return 0
        time.sleep(args.loop)


if __name__ == "__main__":
    sys.exit(main())
