"""Zoho's limits by edition and what a load costs in API credits (to choose batches or a bulk-write job by cost,
not by row count, and to size the Airflow pool `zoho_crm` from the org's edition).

Zoho's API-limits page (developer docs v8, "API Limits": credits per call type) charges insert / update / upsert
1 credit per 10 records (a batch of 100 costs 10), a bulk-write job 500 credits and each of its status polls 1, a
bulk-read job 50, a COQL query 1 up to LIMIT 200. The CRM sandbox charges the same (include/sandbox/crm/routes).
So writing 1,000 changed records costs at least 100 credits by batches; a bulk job costs 500 however few rows it
holds, and pays off from about 5,000 records.

Concurrency (same page, "Concurrency limit"): API calls in flight per org by edition, and a sub-concurrency of 10
in every edition for "complex" calls (COQL, bulk, writes of more than 10 records) — what every load task makes.
The edition comes from GET /crm/v8/org `license_details.paid_type` (zoho/crm-oas v8.0/org.json, a free string).
"""

from __future__ import annotations

import math

RECORDS_PER_WRITE_CREDIT = 10
BATCH_RECORDS = 100                  # records per insert / update / upsert / delete call (the client's MAX_BATCH)
BULK_WRITE_JOB = 500
BULK_WRITE_ROWS_PER_JOB = 25_000     # rows per job file (include/zoho/client.py bulk_write splits by it)
BULK_READ_JOB = 50
BULK_READ_ROWS_PER_JOB = 200_000
# status polls per bulk job, an estimate: the client waits 1, 1.5, 2.25 … then 10 s between polls (a minute's job)
POLLS_PER_JOB = 12
COQL_IDS_PER_QUERY = 50              # before-images of first writes: one COQL query per 50 record ids


EDITION_CONCURRENCY = {"free": 5, "standard": 10, "starter": 10, "professional": 15, "enterprise": 20,
                       "zoho one": 20, "ultimate": 25, "crm plus": 25}
SUB_CONCURRENCY = 10


def concurrency(edition: str | None) -> int | None:
    """Calls in flight the edition allows; None when the name is not one Zoho's page lists."""
    return EDITION_CONCURRENCY.get(" ".join((edition or "").lower().replace("_", " ").split()))


def pool_slots(edition: str | None) -> int:
    """Slots for the Airflow pool `zoho_crm` (one CRM call in flight per load task): the edition's concurrency,
    at most the sub-concurrency of complex calls; an unknown edition gets the smallest (Free's 5)."""
    return min(concurrency(edition) or min(EDITION_CONCURRENCY.values()), SUB_CONCURRENCY)


def batch_write(records: int, first_writes: int = 0) -> int:
    """Credits to write `records` in batches of 100, plus the COQL reads of the first writes' before-images."""
    full, rest = divmod(records, BATCH_RECORDS)
    writes = full * math.ceil(BATCH_RECORDS / RECORDS_PER_WRITE_CREDIT) + math.ceil(rest / RECORDS_PER_WRITE_CREDIT)
    return writes + math.ceil(first_writes / COQL_IDS_PER_QUERY)


def bulk_write(records: int, first_writes: int = 0) -> int:
    """Credits to write `records` by bulk-write jobs, plus one bulk-read export for the first writes'
    before-images (its size is the module's, at least the records written)."""
    if records <= 0:
        return 0
    jobs = math.ceil(records / BULK_WRITE_ROWS_PER_JOB)
    reads = math.ceil(records / BULK_READ_ROWS_PER_JOB) * (BULK_READ_JOB + POLLS_PER_JOB) if first_writes else 0
    return jobs * (BULK_WRITE_JOB + POLLS_PER_JOB) + reads


def bulk_is_cheaper(records: int, first_writes: int = 0) -> bool:
    return bulk_write(records, first_writes) < batch_write(records, first_writes)


def call_credits(method: str, path: str, json: dict | None = None) -> int:
    """What one API call costs by Zoho's price list: a bulk-write job 500, a bulk-read job 50 (their status polls
    and file downloads 1), a record write 1 per 10 records, any other call (a page of records, a COQL query,
    metadata) 1. What the org is charged is Zoho's to say; this is what the bridge counts in its ledger."""
    if "/bulk/" in path and method == "POST":
        return BULK_WRITE_JOB if path.rstrip("/").endswith("/write") else BULK_READ_JOB
    data = (json or {}).get("data") if method in ("POST", "PUT", "PATCH") else None
    if isinstance(data, list) and data:
        return math.ceil(len(data) / RECORDS_PER_WRITE_CREDIT)
    return 1
