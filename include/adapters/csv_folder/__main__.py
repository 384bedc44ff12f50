"""python -m include.adapters.csv_folder build --db NAME [--drop]: create the exchange database and its roles."""

from __future__ import annotations

import argparse
import sys

from include.adapters.csv_folder import exchange


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.adapters.csv_folder")
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="create the exchange database (kept if it exists, unless --drop)")
    p_build.add_argument("--db", default="erp_exchange")
    p_build.add_argument("--drop", action="store_true", help="drop and recreate it (its ledger is lost)")
    args = parser.parse_args(argv)
    exchange.build(args.db, drop=args.drop)
    print(f"exchange database '{args.db}' ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
