"""Command line of the Zoho CRM sandbox.

    python -m include.sandbox.crm serve [--host 127.0.0.1] [--port 8765] [--data-dir .local/crm] [--reset]
    python -m include.sandbox.crm reset [--data-dir .local/crm] [--customers 200] [--skus 1000] [--seed 42]
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    default_dir = os.path.join(os.environ.get("LOCAL_DIR", ".local"), "crm")
    parser = argparse.ArgumentParser(prog="python -m include.sandbox.crm", description="Zoho CRM v8 sandbox")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", default=os.environ.get("CRM_SANDBOX_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("CRM_SANDBOX_PORT", "8765")))
    serve.add_argument("--data-dir", default=default_dir)
    serve.add_argument("--reset", action="store_true", help="wipe and reseed the demo company before serving")
    reset = sub.add_parser("reset", help="wipe the data folder and seed the demo company")
    reset.add_argument("--data-dir", default=default_dir)
    for p in (serve, reset):
        p.add_argument("--customers", type=int, default=200)
        p.add_argument("--skus", type=int, default=1000)
        p.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    from include.sandbox.crm.records import RecordWriter
    from include.sandbox.crm.seed import seed_demo_company
    from include.sandbox.crm.store import Store

    if args.command == "reset" or args.reset:
        store = Store(args.data_dir)
        store.reset()
        counts = seed_demo_company(RecordWriter(store), args.customers, args.skus, args.seed)
        store.db.close()
        print(f"CRM sandbox reset in {args.data_dir}: {json.dumps(counts)}")
        if args.command == "reset":
            return 0

    import uvicorn

    from include.sandbox.crm.app import create_app

    print(f"CRM sandbox serving http://{args.host}:{args.port} (data: {args.data_dir})", flush=True)
    uvicorn.run(create_app(args.data_dir), host=args.host, port=args.port, log_level="warning",
                timeout_graceful_shutdown=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
