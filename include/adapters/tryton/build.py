"""Build a Tryton ERP database behind the contract — runs in the bridge's venv, drives Tryton's venv.

1. Tryton's own installer and the demo company (`.venv-tryton/bin/python -m include.adapters.tryton install`);
2. the contract: `sql/erp_api.sql` (read views over Tryton's tables) and the inbound tables, which are the
   reference ERP's own file (include/sandbox/erp/sql/40_inbound.sql) unchanged: the contract is one;
3. the two integration roles, exactly as for the reference ERP (the reader sees erp_api, the writer erp_inbound).

Installing Tryton takes about 100 s, so a built database is kept as a template named after a hash of everything
that shapes it (adapter code, SQL, pins, seed sizes): the next build with the same inputs is a file copy.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import subprocess
import time
from pathlib import Path

import psycopg2
from psycopg2 import sql

from include.sandbox.erp import db as erp_db

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[3]
ADAPTER_DIR = Path(__file__).resolve().parent
# the inbound tables first: the forecast views read the import job's answers
CONTRACT_SQL = (erp_db.SQL_DIR / "40_inbound.sql", ADAPTER_DIR / "sql" / "erp_api.sql")
TRYTON_PYTHON = ROOT / ".venv-tryton" / "bin" / "python"
DEFAULT_SIZES = {"customers": 60, "skus": 80, "seed": 42, "history_sales": 12}


@functools.cache
def _ensure_venv() -> None:
    """.venv-tryton exists and matches requirements-tryton.txt (a no-op once installed)."""
    subprocess.run([str(ROOT / "scripts" / "ensure_tryton_venv.sh")], check=True)


def tryton(command: str, dbname: str, *args: str, timeout: float = 900) -> dict:
    """Run a command of the adapter's Tryton side (in .venv-tryton); returns the JSON it prints last."""
    _ensure_venv()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([str(TRYTON_PYTHON), "-m", "include.adapters.tryton", command, "--db", dbname, *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"Tryton {command} on {dbname} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def template_name(sizes: dict) -> str:
    digest = hashlib.sha256(json.dumps(sizes, sort_keys=True).encode())
    # what shapes the installed database (not the import job, fulfilment or demo code, which run against it)
    for path in [ADAPTER_DIR / n for n in ("build.py", "company.py", "server.py", "__main__.py")] + sorted(
            ADAPTER_DIR.rglob("*.sql")) + list(CONTRACT_SQL) + [
            ROOT / "constraints-tryton.txt", ROOT / "include" / "sandbox" / "demo_company.py"]:
        digest.update(path.read_bytes())
    return f"tryton_tpl_{digest.hexdigest()[:12]}"


def _exists(dbname: str) -> bool:
    conn = psycopg2.connect(dbname="postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            return cur.fetchone() is not None
    finally:
        conn.close()


def _install(dbname: str, sizes: dict) -> dict:
    erp_db.create_database(dbname, drop=True)
    counts = tryton("install", dbname, "--customers", str(sizes["customers"]), "--skus", str(sizes["skus"]),
                    "--seed", str(sizes["seed"]), "--history-sales", str(sizes["history_sales"]))
    conn = erp_db.connect(dbname)
    try:
        with conn.cursor() as cur:
            for path in CONTRACT_SQL:
                cur.execute(path.read_text(encoding="utf-8"))
        conn.commit()
    finally:
        conn.close()
    return counts


def build(dbname: str, sizes: dict | None = None) -> dict:
    """A fresh Tryton ERP database `dbname` with the demo company, the contract and the roles."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    started = time.monotonic()
    template = template_name(sizes)
    conn = psycopg2.connect(dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:  # one builder per template at a time (parallel test workers)
            cur.execute("SELECT pg_advisory_lock(hashtext(%s))", (template,))
            if not _exists(template):
                log.warning("installing Tryton into %s (about 100 s, once per change of the adapter)", template)
                _install(template + "_new", sizes)
                cur.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(template + "_new"), sql.Identifier(template)))
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)))
            cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(dbname),
                                                                         sql.Identifier(template)))
            cur.execute("SELECT pg_advisory_unlock(hashtext(%s))", (template,))
    finally:
        conn.close()
    conn = erp_db.connect(dbname)
    try:
        erp_db.setup_roles(conn, dbname, os.environ.get("ERP_READ_PASSWORD"), os.environ.get("ERP_WRITE_PASSWORD"),
                           private_schema="public")
    finally:
        conn.close()
    return {"database": dbname, "template": template, "seconds": round(time.monotonic() - started, 1)}
