"""Benchmark (not a test): raw upsert throughput of the CRM sandbox — the ceiling later flows are measured against.

    .venv/bin/python -m tests.benchmarks.bench_crm_upsert [--records 20000] [--concurrency 1 5 10]

Starts a sandbox server process on a free port with a fresh data folder, then for each concurrency
level upserts `records` new products (batches of 100, duplicate check on Product_Code) and then the
same products again (all updates), each client thread with its own HTTP session. Prints records/s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.conftest import CRM_CREDENTIALS, CrmSandbox


def run(server: CrmSandbox, tag: str, records: int, concurrency: int) -> tuple[float, int]:
    token = requests.post(f"{server.url}/oauth/v2/token", data={
        "grant_type": "refresh_token", "client_id": CRM_CREDENTIALS["ZOHO_CLIENT_ID"],
        "client_secret": CRM_CREDENTIALS["ZOHO_CLIENT_SECRET"],
        "refresh_token": CRM_CREDENTIALS["ZOHO_REFRESH_TOKEN"]}).json()["access_token"]
    batches = [[{"Product_Code": f"{tag}-{i:07d}", "Product_Name": f"bench {i}", "Qty_in_Stock": float(i),
                 "Available_Qty": float(i), "Stock_Synced_At": "2026-11-24T10:00:00+08:00"}
                for i in range(start, min(start + 100, records))] for start in range(0, records, 100)]
    sessions = {}
    errors = 0

    def send(batch):
        nonlocal errors
        import threading
        s = sessions.setdefault(threading.get_ident(), requests.Session())
        r = s.post(f"{server.url}/crm/v8/Products/upsert", headers={"Authorization": f"Zoho-oauthtoken {token}"},
                   json={"data": batch, "duplicate_check_fields": ["Product_Code"], "trigger": []}, timeout=60)
        if r.status_code != 200:
            errors += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(send, batches))
    return records / (time.perf_counter() - started), errors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 5, 10])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        server = CrmSandbox(data_dir)
        try:
            server.reset(customers=10, skus=100)
            server.configure(concurrency_limit=25, credits_per_day=10**9)  # measure throughput, not limits
            print(f"{'concurrency':>11} {'insert rec/s':>13} {'update rec/s':>13} {'errors':>7}")
            for c in args.concurrency:
                inserted, e1 = run(server, f"C{c}", args.records, c)
                updated, e2 = run(server, f"C{c}", args.records, c)
                print(f"{c:>11} {inserted:>13,.0f} {updated:>13,.0f} {e1 + e2:>7}", flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
