"""What the benchmarks measure with: seconds and each step's own peak memory (Linux's VmHWM, reset before the step:
an Airflow task is a process of its own, so its peak is the step's, not the peak of what ran before it)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import re
import time


def peak_mb() -> float:
    """This process's peak resident memory since the last reset_peak() (Linux's VmHWM), in MB."""
    with open("/proc/self/status") as status:
        return int(re.search(r"VmHWM:\s+(\d+)", status.read()).group(1)) / 1024


def reset_peak() -> None:
    """Start a new peak at the current resident size (Linux: clear_refs 5): each step's peak is its own. What the
    steps before freed goes back to the system first (glibc keeps freed heap otherwise, and the next step's peak
    would start at the previous step's high-water mark)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+)", status.read()).group(1)) / 1024


def timed(seconds: dict, peaks: dict, step: str, fn, *args, **kw):
    """fn(*args, **kw), its seconds in seconds[step] and its own peak MB in peaks[step]."""
    reset_peak()
    t = time.monotonic()
    result = fn(*args, **kw)
    seconds[step], peaks[step] = time.monotonic() - t, peak_mb()
    return result


def gx_import_seconds() -> float:
    """Great Expectations' import and first context, which every fresh process pays once (an Airflow task too):
    measured before the runs, so the gate's figures below are its own work."""
    t = time.monotonic()
    import great_expectations as gx

    gx.get_context(mode="ephemeral")
    return time.monotonic() - t


def run_mirror(mirror, systems, run_id: str, crm) -> dict:
    """A mirror flow's four steps in turn, as its DAG's tasks call them (no scheduler): seconds and own peak MB per
    step, the gate's and Data Docs' seconds from the run ledger, the rows staged and loaded, and the Zoho API
    credits spent (charged by the CRM sandbox per call type as Zoho lists them; `counted`: as the client counted)."""
    seconds, peaks, credits_before, counted_before = {}, {}, crm.credits_used(), systems.crm_credits()
    gc.collect()
    baseline = resident_mb()
    run = timed(seconds, peaks, "extract", mirror.extract, systems, run_id)
    timed(seconds, peaks, "gate+plan", mirror.validate, systems, run)
    timed(seconds, peaks, "load", lambda: [mirror.load(systems, run, chunk) for chunk in run.facts.get("chunks", [])])
    result = timed(seconds, peaks, "finish", mirror.finish, systems, run)
    with systems.bridge().cursor() as cur:
        cur.execute("SELECT step_seconds FROM bridge.run_ledger WHERE batch_id = %s", (run.batch_id,))
        steps = cur.fetchone()[0]
    systems.bridge().rollback()
    return {"rows": run.counts["rows"], "loaded": result["loaded"], "quarantined": run.counts.get("quarantined", 0),
            "failed": result["failed"], "not_linked": run.counts.get("not_linked", 0), "bulk": run.facts.get("bulk"),
            "credits": crm.credits_used() - credits_before,
            "counted": systems.crm_credits() - counted_before, "seconds": seconds, "peaks": peaks,
            "total": sum(seconds.values()), "steps": steps, "gate": steps.get("gate", 0.0),
            "docs": steps.get("data_docs", 0.0), "baseline": baseline}


def seed_apart(target, args: tuple, what: str) -> None:
    """target(*args) in a process of its own (spawned): the seeder's memory is not the flows'."""
    import multiprocessing

    seeder = multiprocessing.get_context("spawn").Process(target=target, args=args)
    seeder.start()
    seeder.join()
    if seeder.exitcode:
        raise SystemExit(f"seeding {what} failed: exit code {seeder.exitcode}")


def new_bridge(name: str):
    """A fresh bridge database `name` with the bridge's schema; its connection."""
    import psycopg2

    from include.bridge import db as bridge_db
    from tests.conftest import create_database

    bridge = psycopg2.connect(dbname=create_database(name))
    bridge_db.install_schema(bridge)
    return bridge
