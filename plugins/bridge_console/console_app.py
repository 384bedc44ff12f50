"""The console's FastAPI app, mounted by Airflow's API server at /bridge-console.

Who may see what is Airflow's to say: every request carries Airflow's own JWT (the UI's cookie, or a bearer token),
resolved by Airflow's `get_user`; a flow is shown only when the auth manager lets the person read its DAG, a run
page needs read access to that DAG's runs, and replay / dismiss need the right to trigger that DAG — a 403
otherwise. The bridge DB is read through connection `bridge_console_db` (role `bridge_console`: SELECT, plus the
resolution of quarantine entries and the console's own audit rows).

The app is built on its first request (LazyApp): the plugin module is imported by every Airflow component, and
only the API server ever calls it."""

from __future__ import annotations

import contextlib
import logging
import mimetypes
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
PREFIX = "/bridge-console"
CONN_ID = "bridge_console_db"
CRM_CONN_ID, ERP_CONN_ID = "zoho_crm", "erp_read"


class LazyApp:
    """An ASGI app that builds the console on its first call."""

    def __init__(self):
        self._app = None

    async def __call__(self, scope, receive, send):
        if self._app is None:
            self._app = create_app()
        await self._app(scope, receive, send)


@contextlib.contextmanager
def bridge_db():
    """A connection to the bridge DB as the console's role; closed after the request. A connection that is not
    defined, a role that cannot log in, a schema older than the console: a 503 that says which and what to do."""
    import psycopg2
    from airflow.exceptions import AirflowNotFoundException
    from fastapi import HTTPException

    from include.bridge.runtime import pg_connect

    try:
        conn = pg_connect(CONN_ID)
    except psycopg2.Error as exc:
        raise HTTPException(503, f"the console cannot reach the bridge DB through connection {CONN_ID}: "
                                 f"{str(exc).strip()}") from None
    except AirflowNotFoundException:
        raise HTTPException(503, f"connection {CONN_ID} is not defined: the bridge DB as role bridge_console "
                                 "(docs/configuration.md)") from None
    try:
        yield conn
    except (psycopg2.errors.UndefinedTable, psycopg2.errors.UndefinedColumn) as exc:
        raise HTTPException(503, f"the bridge schema is older than the console ({str(exc).strip()}): run "
                                 "`python -m include.bridge.db migrate` as its owner") from None
    except psycopg2.errors.InsufficientPrivilege as exc:
        raise HTTPException(503, f"connection {CONN_ID}'s role lacks a grant ({str(exc).strip()}): run "
                                 "`python -m include.bridge.db migrate --roles` as the owner") from None
    finally:
        conn.close()


def links():
    """CRM record / ERP document links where the connections give a URL pattern (extra `record_url`,
    `document_url`); none where they do not, or where the connection is not there."""
    from airflow.exceptions import AirflowNotFoundException

    from include.bridge.runtime import connection
    from include.console.pages import Links

    patterns = []
    for conn_id, key in ((CRM_CONN_ID, "record_url"), (ERP_CONN_ID, "document_url")):
        try:
            patterns.append((connection(conn_id).extra_dejson or {}).get(key))
        except AirflowNotFoundException:  # not defined here: the pages show the keys without links
            log.info("connection %s is not defined: the console shows its records without links", conn_id)
            patterns.append(None)
    return Links(*patterns)


def schedule_seconds(dag_models: list) -> dict[str, int | None]:
    """Each DAG's interval between two scheduled runs, from its cron expression (None: asset-only, manual). Airflow
    summarises presets as cron too (@daily: "0 0 * * *")."""
    import datetime as dt

    from croniter import croniter

    out = {}
    for dm in dag_models:
        expression = " ".join((dm.timetable_summary or "").split()[-5:])  # "Asset or */5 * * * *": the cron part
        if croniter.is_valid(expression):
            it = croniter(expression, dt.datetime(2026, 1, 5, 12, 0))
            first = it.get_next(dt.datetime)
            out[dm.dag_id] = int((it.get_next(dt.datetime) - first).total_seconds())
        else:
            out[dm.dag_id] = None
    return out


def create_app():
    from fastapi import FastAPI

    from bridge_console import console_routes

    app = FastAPI(title="Integration console", docs_url=None, redoc_url=None)
    from airflow.api_fastapi.common.dagbag import create_dag_bag

    app.state.dag_bag = create_dag_bag()  # Airflow's trigger code looks it up on the app that serves the request
    app.include_router(console_routes.router())
    return app


def file_response(root: str, relative: str) -> Any:
    """A file of the Data Docs tree; a path leaving it is a 404."""
    from fastapi import HTTPException
    from fastapi.responses import FileResponse

    base = Path(root).resolve()
    target = (base / relative).resolve()
    if base not in target.parents or not target.is_file():
        raise HTTPException(404, f"no Data Docs page {relative}")
    return FileResponse(target, media_type=mimetypes.guess_type(target.name)[0] or "application/octet-stream")


def data_docs_root() -> str:
    from include.bridge.mirror import output_dir

    return output_dir("BRIDGE_DATA_DOCS_DIR", "data_docs")

