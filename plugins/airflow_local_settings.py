"""Airflow local settings of the bridge: Airflow imports this module (found on PYTHONPATH) in every component.

Preloading. A LocalExecutor's workers are forked from the scheduler, and a Celery worker's pool processes from the
worker, and every task process is forked from those: a library imported here once, in those two components, is
already imported in every task. Great Expectations takes ~2.5 s to import (2 cores), which every gate task paid
before its first check — a quarter to a half of the confirm → ERP-number path of an order. Other components
(api-server, dag-processor, triggerer) import nothing more: DAG parsing stays light.

    BRIDGE_PRELOAD_MODULES   comma-separated modules (default: great_expectations; empty: preload nothing)
"""

from __future__ import annotations

import importlib
import os
import sys

DEFAULT_PRELOAD = "great_expectations"


def forks_tasks(argv: list[str]) -> bool:
    """This process is one tasks are forked from: `airflow scheduler` (LocalExecutor) or `airflow celery worker`."""
    program = (argv[0] if argv else "").replace(os.sep, "/")
    words = [a for a in argv[1:] if not a.startswith("-")]
    return (program.rsplit("/", 1)[-1] == "airflow" or program.endswith("airflow/__main__.py")) and (
        words[:1] == ["scheduler"] or words[:2] == ["celery", "worker"])


def preload(argv: list[str]) -> list[str]:
    """Import the configured modules when this process forks tasks; the names imported. An unknown module stops the
    component with its ImportError: a preload that silently did nothing would look like a slow gate."""
    if not forks_tasks(argv):
        return []
    names = [n.strip() for n in os.environ.get("BRIDGE_PRELOAD_MODULES", DEFAULT_PRELOAD).split(",") if n.strip()]
    for name in names:
        importlib.import_module(name)
    return names


preload(sys.argv)
