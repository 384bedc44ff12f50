"""Sending alerts: `send_alert()` for flows (gate failures, business events) and `BridgeFailureNotifier`
for task-failure callbacks. E-mail goes through the smtp provider's connection, IM through ImWebhookHook.
With a bridge DB connection, an event is sent once per run (bridge.alert_log); without one, every time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from airflow.sdk import BaseNotifier

from include.bridge import alerts
from include.bridge.alerts import Alert

log = logging.getLogger(__name__)


def send_alert(alert: Alert, *, email_to: str | Iterable[str] | None = None, smtp_conn_id: str = "smtp_default",
               im_conn_ids: Iterable[str] = ("im_webhook",), bridge_conn=None) -> list[str]:
    """Send on every configured channel; returns the channels used ([] when already sent in this run).

    A failing channel does not stop the others; if every channel fails the last error is raised."""
    channels = ([f"email:{smtp_conn_id}"] if email_to else []) + [f"im:{c}" for c in im_conn_ids]
    if bridge_conn is not None and not alerts.claim(bridge_conn, alert, channels):
        log.info("alert %s/%s/%s already sent in this run", alert.flow, alert.run_id, alert.event_key)
        return []
    sent, errors = [], []
    if email_to:
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        subject, body = alerts.email(alert)
        try:
            with SmtpHook(smtp_conn_id=smtp_conn_id) as smtp:
                smtp.send_email_smtp(to=email_to, subject=subject, html_content=body)
            sent.append(f"email:{smtp_conn_id}")
        except Exception as exc:  # one broken channel must not silence the others
            errors.append(exc)
            log.error("alert e-mail via %s failed: %s", smtp_conn_id, type(exc).__name__)
    from bridge_alerts.im_webhook import ImWebhookHook

    for conn_id in im_conn_ids:
        if not _configured(conn_id):
            log.info("alert channel %s is not configured; skipped", conn_id)
            continue
        try:
            fmt = ImWebhookHook(conn_id).send(lambda f: alerts.im_payload(alert, f))
            sent.append(f"im:{conn_id}:{fmt}")
        except Exception as exc:
            errors.append(exc)
            log.error("alert via %s failed: %s", conn_id, exc)
    if errors and not sent:
        raise errors[-1]
    return sent


def _configured(conn_id: str) -> bool:
    from airflow.sdk import BaseHook

    try:
        BaseHook.get_connection(conn_id)
    except Exception:  # AirflowNotFoundException and friends: no such connection
        return False
    return True


def alert_sender(bridge_conn, email_variable: str = "bridge_alert_email", im_conn_ids: Iterable[str] = ("im_webhook",)):
    """A send function for flows: e-mail to the addresses in an Airflow Variable (if set), IM on the given
    connections (if defined), deduplicated per run through the bridge DB."""
    from airflow.sdk import Variable

    email_to = Variable.get(email_variable, default=None) or None

    def send(alert: Alert) -> list[str]:
        return send_alert(alert, email_to=email_to, im_conn_ids=im_conn_ids, bridge_conn=bridge_conn)

    return send


class BridgeFailureNotifier(BaseNotifier):
    """on_failure_callback: one alert per failed task per run, on e-mail and IM."""

    template_fields = ("email_to",)
    # an empty rendered address list means: no e-mail, IM only

    def __init__(self, *, email_to: str | list[str] | None = None, smtp_conn_id: str = "smtp_default",
                 im_conn_ids: Iterable[str] = ("im_webhook",), bridge_conn_id: str | None = "bridge_db"):
        super().__init__()
        self.email_to, self.smtp_conn_id = email_to, smtp_conn_id
        self.im_conn_ids, self.bridge_conn_id = tuple(im_conn_ids), bridge_conn_id

    def notify(self, context) -> None:
        ti = context["ti"]
        exception = context.get("exception")
        if getattr(exception, "alert_sent", False):  # e.g. a gate block: its own alert already went out
            return
        alert = Alert(
            kind="task_failure", flow=ti.dag_id, run_id=ti.run_id, event_key=f"task_failure:{ti.task_id}",
            title=f"task {ti.task_id} failed (try {getattr(ti, 'try_number', '?')})",
            lines=([f"{type(exception).__name__}: {str(exception)[:300]}"] if exception else [])
            + ([f"records: {', '.join(map(str, exception.record_keys[:20]))}"]
               if getattr(exception, "record_keys", None) else []),
            link=getattr(ti, "log_url", None), link_label="Task log")
        bridge_conn = None
        if self.bridge_conn_id:
            try:
                from include.bridge.runtime import pg_connect

                bridge_conn = pg_connect(self.bridge_conn_id)
            except Exception as exc:  # better a duplicate alert than none
                log.warning("bridge DB unavailable for alert dedup: %s", type(exc).__name__)
        try:
            if bridge_conn is not None:  # the run's ledger rows must not stay "running" for ever
                from include.bridge import engine

                why = alert.lines[0] if alert.lines else "see its log"
                engine.fail_open_runs(bridge_conn, ti.run_id, {ti.dag_id, ti.task_id.split(".", 1)[0]},
                                      f"task {ti.task_id} failed: {why}")
            send_alert(alert, email_to=self.email_to or None, smtp_conn_id=self.smtp_conn_id,
                       im_conn_ids=self.im_conn_ids,
                       bridge_conn=bridge_conn)
        finally:
            if bridge_conn is not None:
                bridge_conn.close()
