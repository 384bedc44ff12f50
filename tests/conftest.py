"""Shared fixtures: a real PostgreSQL (PG* environment, as set by scripts/env.sh) and fresh ERP sandboxes."""

from __future__ import annotations

import datetime as dt
import functools
import os
import secrets
import shutil
import uuid

import psycopg2
import psycopg2.extras
import pytest

from include.sandbox.crm.process import CrmSandboxProcess

os.environ.setdefault("PGHOST", "127.0.0.1")
os.environ.setdefault("PGPORT", "5432")
os.environ.setdefault("PGUSER", "postgres")
os.environ.setdefault("ERP_READ_PASSWORD", secrets.token_urlsafe(12))
os.environ.setdefault("ERP_WRITE_PASSWORD", secrets.token_urlsafe(12))
# (without scripts/env.sh: roles of this test session's own, never another checkout's)
os.environ.setdefault("ERP_READ_ROLE", f"erp_reader_{os.getpid()}")
os.environ.setdefault("ERP_WRITE_ROLE", f"erp_writer_{os.getpid()}")

from include.sandbox.erp import db as erp_db  # noqa: E402 - reads the role names set above

START_DATE = dt.date(2026, 6, 15)  # fixed business date: tests do not depend on the calendar


class ErpSandbox:
    """A freshly built and seeded sandbox ERP database, dropped after use."""

    def __init__(self, customers: int = 60, skus: int = 300, history_days: int = 40, seed: int = 7,
                 template: str | None = None):
        from include.sandbox.erp import db
        from include.sandbox.erp import seed as seeding

        self.dbname = f"erp_test_{uuid.uuid4().hex[:10]}"
        if template:
            db.clone(template, self.dbname)
            self.admin = db.connect(self.dbname)
            return
        db.build(self.dbname)
        self.admin = db.connect(self.dbname)
        seeding.seed(self.admin, customers=customers, skus=skus, seed=seed, start_date=START_DATE,
                     history_days=history_days, progress=lambda *_: None)

    @classmethod
    def cloned(cls) -> ErpSandbox:
        """A sandbox with the default demo company, copied from one built and seeded once per test session."""
        return cls(template=_seeded_erp_template())

    def connect_as(self, role: str):
        """As the reader ("erp_reader") or the writer ("erp_writer"): this checkout's roles (ERP_READ_ROLE / ...)."""
        from include.sandbox.erp.db import READ_ROLE, WRITE_ROLE

        reader = role == "erp_reader"
        return psycopg2.connect(dbname=self.dbname, user=READ_ROLE if reader else WRITE_ROLE,
                                password=os.environ["ERP_READ_PASSWORD" if reader else "ERP_WRITE_PASSWORD"])

    def query(self, sql: str, params=None) -> list[dict]:
        with self.admin.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(sql, params)
            rows = cur.fetchall() if cur.description else []
        self.admin.commit()
        return rows

    def scalar(self, sql: str, params=None):
        row = self.query(sql, params)[0]
        return next(iter(row.values()))

    def drop(self) -> None:
        self.admin.close()
        conn = psycopg2.connect(dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (self.dbname,))
            cur.execute(f'DROP DATABASE IF EXISTS "{self.dbname}"')
        conn.close()


def new_database(prefix: str) -> str:
    """A new empty database on the test server, named prefix_<random>."""
    return create_database(f"{prefix}_{uuid.uuid4().hex[:8]}")


def create_database(name: str) -> str:
    """A new empty database `name` on the test server."""
    admin = psycopg2.connect(dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return name


def drop_database(name: str) -> None:
    admin = psycopg2.connect(dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="module")
def bridge():
    """A fresh integration state DB with schema bridge: (database name, psycopg2 connection)."""
    from include.bridge import db as bridge_db

    name = new_database("bridge_test")
    conn = psycopg2.connect(dbname=name)
    bridge_db.install_schema(conn)
    bridge_db.install_schema(conn)  # idempotent
    yield name, conn
    conn.close()
    drop_database(name)


def bridge_rows(bridge, sql: str, params=None) -> list[tuple]:
    """Rows of a query on the test bridge DB (the `bridge` fixture: name, connection); committed."""
    with bridge[1].cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall() if cur.description else []
    bridge[1].commit()
    return rows


@functools.cache
def _seeded_erp_template() -> str:
    """The default demo ERP, built and seeded once per test session (per xdist worker); dropped at exit."""
    import atexit

    template = ErpSandbox()
    template.admin.close()
    atexit.register(drop_database, template.dbname)
    return template.dbname


@pytest.fixture(scope="module")
def erp():
    """A fresh demo ERP per test module (a copy of the session's seeded template)."""
    sandbox = ErpSandbox.cloned()
    yield sandbox
    sandbox.drop()


# ----------------------------------------------------------------------------------------- CRM sandbox
CRM_CREDENTIALS = {"ZOHO_CLIENT_ID": "1000.TESTCLIENT", "ZOHO_CLIENT_SECRET": "test-client-secret-Xq9",
                   "ZOHO_REFRESH_TOKEN": "1000.test.refresh.token.Zk3"}


SALESPERSON, CREDIT_CONTROLLER = "5843104000000424011", "5843104000000424021"  # CRM sandbox users (store.USERS)


class CrmSandbox(CrmSandboxProcess):
    """A running CRM sandbox server process (real HTTP) with the test OAuth client."""

    def __init__(self, data_dir, port: int | None = None, env: dict | None = None):
        super().__init__(data_dir, port, env=CRM_CREDENTIALS | (env or {}))

    def reset(self, **body) -> dict:
        return super().reset(**({"customers": 30, "skus": 120} | body))

    def client(self, user: str | None = None, **kw):
        """A client with fresh token caches (in-process and on disk): tests count token mints. `user`: act as that
        CRM user of the sandbox (SALESPERSON, CREDIT_CONTROLLER) instead of the integration user."""
        import tempfile

        from include.sandbox.crm.state import user_refresh_token
        from include.zoho.client import _TOKEN_CACHE, ZohoCrmClient

        _TOKEN_CACHE.clear()
        refresh = CRM_CREDENTIALS["ZOHO_REFRESH_TOKEN"]
        kw.setdefault("token_cache_dir", os.path.join(tempfile.gettempdir(), f"zoho-token-test-{uuid.uuid4().hex}"))
        return ZohoCrmClient(api_url=self.url, accounts_url=self.url, file_upload_url=self.url,
                             client_id=CRM_CREDENTIALS["ZOHO_CLIENT_ID"],
                             client_secret=CRM_CREDENTIALS["ZOHO_CLIENT_SECRET"],
                             refresh_token=user_refresh_token(refresh, user) if user else refresh,
                             backoff_base=kw.pop("backoff_base", 0.01), backoff_max=kw.pop("backoff_max", 0.2), **kw)


@pytest.fixture(scope="session")
def crm_server(tmp_path_factory):
    server = CrmSandbox(tmp_path_factory.mktemp("crm"))
    yield server
    server.stop()


@pytest.fixture
def crm(crm_server):
    """The running sandbox, reset to the small demo company with default limits and no faults."""
    crm_server.reset()
    return crm_server


# ------------------------------------------------------------------ running DAGs through Airflow in tests
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def airflow_env_for(home, erp, bridge, crm, **overrides: str) -> dict:
    """Environment of an Airflow (own AIRFLOW_HOME, SQLite metadata unless `overrides` say otherwise) wired to the
    test ERP, bridge DB and CRM; its metadata DB is migrated and the zoho_crm pool set."""
    import json

    env = os.environ | {
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": os.path.join(ROOT, "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "1",
        "AIRFLOW_VAR_BRIDGE_CREDIT_APPROVERS": json.dumps([CREDIT_CONTROLLER]),
        "BRIDGE_DATA_DOCS_DIR": str(home / "data_docs"), "BRIDGE_REPORTS_DIR": str(home / "reports"),
        "AIRFLOW_CONN_ERP_READ": f"postgresql://{erp_db.READ_ROLE}:{os.environ['ERP_READ_PASSWORD']}@"
                                 f"{os.environ['PGHOST']}:{os.environ['PGPORT']}/{erp.dbname}",
        "AIRFLOW_CONN_ERP_WRITE": f"postgresql://{erp_db.WRITE_ROLE}:"
                                  f"{os.environ['ERP_WRITE_PASSWORD']}@"
                                  f"{os.environ['PGHOST']}:{os.environ['PGPORT']}/{erp.dbname}",
        "AIRFLOW_CONN_BRIDGE_DB": f"postgresql://{os.environ['PGUSER']}@{os.environ['PGHOST']}:"
                                  f"{os.environ['PGPORT']}/{bridge[0]}",
        "AIRFLOW_CONN_ZOHO_CRM": json.dumps({
            "conn_type": "zoho_crm", "host": crm.url, "login": CRM_CREDENTIALS["ZOHO_CLIENT_ID"],
            "password": CRM_CREDENTIALS["ZOHO_CLIENT_SECRET"],
            "extra": {"accounts_url": crm.url, "file_upload_url": crm.url,
                      "refresh_token": CRM_CREDENTIALS["ZOHO_REFRESH_TOKEN"], "max_retries": 12,
                      "backoff_base": 0.02, "backoff_max": 0.3}}),
    }
    env = {k: v for k, v in env.items() if not k.startswith("AIRFLOW_CONN_IM")} | overrides
    if "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" in overrides:
        migrate_airflow_db(env)
    else:  # the embedded default: a copy of one SQLite metadata DB migrated once per test session
        os.makedirs(home, exist_ok=True)
        shutil.copyfile(_migrated_sqlite(), os.path.join(home, "airflow.db"))
    return env


def linked_airflow_env(home, erp, bridge, crm, **overrides: str) -> dict:
    """airflow_env_for, with the master data linked and the credit figures in the CRM (what the CRM -> ERP flows
    start from): master_data_match and erp_credit_to_crm have run."""
    env = airflow_env_for(home, erp, bridge, crm, **overrides)
    for dag_id in ("master_data_match", "erp_credit_to_crm"):
        assert run_dag(env, dag_id) == "success"
    return env


def migrate_airflow_db(env: dict) -> None:
    """`airflow db migrate` and the zoho_crm pool, as a deployment's setup does."""
    import subprocess
    import sys

    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    subprocess.run([airflow, "pools", "set", "zoho_crm", "5", "Zoho CRM concurrent requests"], env=env, check=True,
                   capture_output=True, timeout=120)


@functools.cache
def _migrated_sqlite() -> str:
    """A SQLite Airflow metadata DB, migrated (and its pool set) once per test session (per xdist worker)."""
    import tempfile

    home = tempfile.mkdtemp(prefix="airflow-template-")
    migrate_airflow_db(os.environ | {"AIRFLOW_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                                     "AIRFLOW__CORE__DAGS_FOLDER": os.path.join(ROOT, "dags")})
    return os.path.join(home, "airflow.db")


def kill_dag_run_when(env, dag_id: str, conf: dict, ready, log_name: str, timeout: float = 240) -> None:
    """Start one DAG run (dag.test) in its own process group and SIGKILL it as soon as `ready()` is true."""
    import signal
    import time

    from tests import dagruns

    pid = dagruns.start_dag_run(env, dag_id, conf, os.path.join(env["AIRFLOW_HOME"], log_name))
    deadline = time.monotonic() + timeout
    while not ready():
        assert dagruns.alive(pid) and time.monotonic() < deadline, f"the {dag_id} run ended before the kill point"
        time.sleep(0.05)
    os.killpg(pid, signal.SIGKILL)
    dagruns.wait(pid, 30)


@pytest.fixture(scope="module")
def crm_demo(crm_server, erp):
    """The CRM sandbox seeded with the ERP fixture's demo company (same seed and size)."""
    crm_server.reset(customers=60, skus=300, seed_value=7)
    return crm_server


def run_dag(env, dag_id: str, **conf) -> str:
    """One DAG run through Airflow (dag.test) in a process of its own; output in AIRFLOW_HOME/last_run_output.txt."""
    from tests import dagruns

    out_path = os.path.join(env["AIRFLOW_HOME"], "last_run_output.txt")
    dagruns.wait(dagruns.start_dag_run(env, dag_id, conf, out_path), 300)
    states = dagruns.states(out_path)
    if not states:
        with open(out_path) as out:
            raise AssertionError(out.read()[-6000:])
    return states[0]


# ------------------------------------------------------------------ a real IM webhook receiver (WeCom format)
class Webhook:
    """A real HTTP server playing IM group robots: every message lands in `calls` ({path, query, body}); `reply`
    maps a path to the answer to give (default: WeCom's / DingTalk's success). State is per receiver, so one test
    module never sees another's messages."""

    def __init__(self):
        import http.server
        import json
        import threading
        from urllib.parse import parse_qs, urlparse

        self.calls: list = []
        self.reply: dict = {}
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                url = urlparse(self.path)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.calls.append({"path": url.path, "query": parse_qs(url.query), "body": body})
                answer = receiver.reply.get(url.path, {"errcode": 0, "errmsg": "ok"})
                data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def env(self) -> dict:
        """The im_webhook connection of an Airflow that alerts here."""
        import json

        return {"AIRFLOW_CONN_IM_WEBHOOK": json.dumps({"conn_type": "http", "host": self.url + "/cgi-bin/webhook/send",
                                                       "password": "wecom-key", "extra": {"format": "wecom"}})}

    def texts(self, containing: str = "") -> list[str]:
        """The WeCom markdown messages received that contain `containing`."""
        texts = [c["body"].get("markdown", {}).get("content", "") for c in self.calls]
        return [t for t in texts if t and containing in t]


@pytest.fixture(scope="module")
def webhook():
    receiver = Webhook()
    yield receiver
    receiver.server.shutdown()


# ------------------------------------------------------------------ order: the longest modules start first
# With two workers (make test: pytest-xdist, one module per worker at a time) the suite ends soonest when the
# modules that take minutes start first and the many short ones fill in around them.
LONGEST_FIRST = ["test_stage2_write_back", "test_tryton_erp", "test_operations", "test_celery_scheduler",
                 "test_stage3_forecast", "test_erp_stock_to_crm", "test_airflow_ui", "test_stage1_flows"]


# Tiers, all on the same real systems (make test runs every tier; `pytest -m unit` or `-m "unit or systems"` for a
# quick loop): unit = no server; systems = real PostgreSQL / CRM sandbox / SMTP, flow steps called in-process;
# airflow = DAG runs through Airflow (dag.test), SIGKILL, clear and retry; stack = scheduler, Celery workers, browser.
TIERS = {"unit": {"test_architecture", "test_flow_contract", "test_dag_integrity", "test_project_files",
                  "test_matching", "test_order_rows", "test_uscc_and_demo_company", "test_values_and_approvals",
                  "test_zoho_endpoints", "test_drop_folder_format", "test_console_pages"},
         "airflow": {"test_stage1_flows", "test_stage2_write_back", "test_stage3_forecast", "test_erp_stock_to_crm",
                     "test_operations", "test_alerts", "test_crm_events", "test_hostile_input",
                     "test_faults_through_airflow", "test_drop_folder"},
         "stack": {"test_celery_scheduler", "test_airflow_ui", "test_tryton_erp"}}


def tier_of(module: str) -> str:
    return next((tier for tier, modules in TIERS.items() if module in modules), "systems")


def pytest_collection_modifyitems(items):
    rank = {name: n for n, name in enumerate(LONGEST_FIRST)}
    for item in items:
        item.add_marker(getattr(pytest.mark, tier_of(item.module.__name__.rsplit(".", 1)[-1])))
    items.sort(key=lambda item: rank.get(item.module.__name__.rsplit(".", 1)[-1], len(rank)))
