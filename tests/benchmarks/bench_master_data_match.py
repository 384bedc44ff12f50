"""Benchmark (not a test): master_data_match's name matching, the hard case — CRM accounts without an ERP code or a
credit code, so every account is matched by its name.

    .venv/bin/python -m tests.benchmarks.bench_master_data_match [--accounts 1000 10000 100000]

Per size N: the demo company's N ERP customers and N CRM accounts carrying the same names (no Account_Number, no
credit code), matched by include/bridge/matching.py with include/mappings/master_data.yaml, as the flow's match step
calls it. At larger N most names are numbered branches of the same few hundred companies (第12分公司): many close
names, the matcher's worst case. Prints seconds, accounts/s, the links made and the reviews raised, the peak
memory of the step, and how time grew from the previous size (linear growth: x10 for x10 accounts). The matcher
spends no Zoho API credits; the flow's reads of the accounts (COQL) do — `bench_erp_mirrors_to_crm --match` runs the
whole flow.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from include.bridge.matching import Account, Customer, match_customers
from include.flows.master_data_match import settings
from include.sandbox import demo_company
from tests.benchmarks.measure import peak_mb, reset_peak


def company(size: int) -> tuple[list[Account], list[Customer]]:
    customers = [Customer(c.code, c.name, c.name_en, c.uscc, c.city) for c in demo_company.customers(size, 42)]
    accounts = [Account(f"A{n:07d}", c.name, None, None, c.city) for n, c in enumerate(customers)]
    return accounts, customers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    sizes = parser.parse_args().accounts
    cfg = settings()["customers"]
    print(f"{'accounts':>9} {'seconds':>8} {'accounts/s':>10} {'links':>7} {'ambiguous':>9} {'ERP dups':>8} "
          f"{'peak MB':>7} {'time x':>6}", flush=True)
    previous = None
    for size in sizes:
        accounts, customers = company(size)
        reset_peak()
        started = time.monotonic()
        links, reviews = match_customers(accounts, customers, cfg)
        seconds, peak = time.monotonic() - started, peak_mb()
        issues = Counter(r.issue for r in reviews)
        growth = f"{seconds / previous:6.1f}" if previous else f"{'':>6}"
        print(f"{size:>9,} {seconds:>8.1f} {size / seconds:>10,.0f} {len(links):>7,} {issues['ambiguous']:>9,} "
              f"{issues['duplicate_in_erp']:>8,} {peak:>7,.0f} {growth}", flush=True)
        previous = seconds


if __name__ == "__main__":
    main()
