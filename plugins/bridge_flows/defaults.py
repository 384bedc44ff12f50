"""Task defaults every flow DAG shares: its owner, its retries, one retry delay, and the failure alert.

The retry delay is one setting, Airflow's own `[core] default_task_retry_delay` (seconds; environment
AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY). It is written on every task explicitly: left implicit, a mapped task's
copy in the scheduler can fall back to the scheduler's built-in 300 seconds instead of the configured value.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk.configuration import conf
from bridge_alerts.notifier import BridgeFailureNotifier

# alerts: e-mail to the Airflow Variable bridge_alert_email (if set) and the im_webhook connection (if set)
ALERTS = {"email_to": "{{ var.value.get('bridge_alert_email', '') }}", "im_conn_ids": ["im_webhook"]}


def retry_delay() -> dt.timedelta:
    return dt.timedelta(seconds=conf.getint("core", "default_task_retry_delay", fallback=300))


def task_defaults(owner: str = "integration", retries: int = 2, alerts: bool = True) -> dict:
    """default_args of a flow DAG; the failure alert also closes the run's ledger rows."""
    defaults = {"owner": owner, "retries": retries, "retry_delay": retry_delay()}
    if alerts:
        defaults["on_failure_callback"] = BridgeFailureNotifier(**ALERTS)
    return defaults
