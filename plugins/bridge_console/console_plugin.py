"""Registers the operator console with Airflow 3's UI: a FastAPI app under /bridge-console (Airflow's own auth:
its JWT cookie, its auth manager per DAG), a nav entry and a tab on every DAG run. No Flask, no FAB."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from bridge_console.console_app import PREFIX, LazyApp


class BridgeConsolePlugin(AirflowPlugin):
    name = "bridge_console"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": PREFIX, "name": "Integration console"}]
    external_views = [
        {"name": "Integration console", "href": f"{PREFIX}/overview", "destination": "nav",
         "url_route": "integration-console", "category": "browse"},
        {"name": "Integration records", "href": f"{PREFIX}/runs/{{DAG_ID}}/{{RUN_ID}}", "destination": "dag_run",
         "url_route": "integration-run"},
    ]
