"""Command line of the sandbox ERP.

    python -m include.sandbox.erp reset [--customers N] [--skus N] [--seed S] [--history-days D]
    python -m include.sandbox.erp simulate [--days N]
    python -m include.sandbox.erp process-inbound
    python -m include.sandbox.erp summary
    python -m include.sandbox.erp file-exchange --folder DIR [--encoding gb18030]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys

from include.sandbox.erp import db, importer, seed, simulator
from include.sandbox.erp.report import print_summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.sandbox.erp", description="Reference ERP sandbox")
    parser.add_argument("--db", default=None, help="database name (default: $ERP_DB or erp_sandbox)")
    sub = parser.add_subparsers(dest="command", required=True)
    p_reset = sub.add_parser("reset", help="drop and rebuild the sandbox with fresh demo data")
    p_reset.add_argument("--customers", type=int, default=200)
    p_reset.add_argument("--skus", type=int, default=1000)
    p_reset.add_argument("--seed", type=int, default=42)
    p_reset.add_argument("--start-date", type=dt.date.fromisoformat, default=None,
                         help="business date after seeding (default: today)")
    p_reset.add_argument("--history-days", type=int, default=100,
                         help="business days simulated to build order/invoice history")
    p_sim = sub.add_parser("simulate", help="advance the ERP by N business days")
    p_sim.add_argument("--days", type=int, default=1)
    sub.add_parser("process-inbound", help="run the ERP's import job over erp_inbound once")
    sub.add_parser("summary", help="print what the sandbox holds")
    p_files = sub.add_parser("file-exchange", help="file mode: import the bridge's CSV batches from DIR/to_erp, "
                                                   "process them, export views and answers to DIR/from_erp")
    p_files.add_argument("--folder", required=True, help="the drop folder's root")
    p_files.add_argument("--encoding", default="gb18030", help="of the files it writes (gb18030, gbk, utf-8-sig)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dbname = args.db or db.erp_db_name()

    if args.command == "reset":
        print(f"==> building ERP sandbox database '{dbname}'")
        db.build(dbname)
        with db.connect(dbname) as conn:
            timings = seed.seed(conn, customers=args.customers, skus=args.skus, seed=args.seed,
                                start_date=args.start_date, history_days=args.history_days)
            print(f"    seeded in {sum(timings.values()):.1f} s: {json.dumps(timings)}")
            print_summary(conn)
        return 0
    with db.connect(dbname) as conn:
        if args.command == "simulate":
            for day in simulator.simulate(conn, args.days):
                print(json.dumps(day, ensure_ascii=False))
        elif args.command == "process-inbound":
            print(json.dumps(importer.process_inbound(conn)))
        elif args.command == "summary":
            print_summary(conn)
        elif args.command == "file-exchange":
            from include.adapters.csv_folder.folders import LocalFolder
            from include.sandbox.erp import file_mode

            print(json.dumps(file_mode.exchange(conn, LocalFolder(args.folder), args.encoding), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
