"""Event-driven start of the CRM → ERP flows: an Airflow event trigger over `bridge.crm_event`.

The receiver (`include/bridge/crm_events.py`) stores Zoho watch notifications; this trigger, run by the
triggerer as the watcher of the Asset `bridge://crm_order_events`, claims them and fires an event per claim, which
starts the DAGs scheduled on that Asset. Kept import-light: DAG files import it at parse time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent


class CrmChangeEventTrigger(BaseEventTrigger):
    """Fires whenever CRM change notifications are waiting (one event per claim, and keeps watching): woken by the
    receiver's NOTIFY, and polling the bridge DB every `poll_seconds` besides (a NOTIFY does not survive a dropped
    connection; the rows do)."""

    def __init__(self, bridge_conn_id: str = "bridge_db", poll_seconds: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.bridge_conn_id = bridge_conn_id
        self.poll_seconds = poll_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("bridge_flows.crm_events.CrmChangeEventTrigger",
                {"bridge_conn_id": self.bridge_conn_id, "poll_seconds": self.poll_seconds})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import psycopg2
        from asgiref.sync import sync_to_async

        from include.bridge.crm_events import claim_events, listen, wait_for_wake
        from include.bridge.runtime import pg_connect

        connect = sync_to_async(pg_connect)  # connection lookup goes through the triggerer's supervisor
        conn = None
        try:
            while True:
                try:
                    if conn is None or conn.closed:
                        conn = await connect(self.bridge_conn_id)
                        await asyncio.to_thread(listen, conn)
                    claimed = await asyncio.to_thread(claim_events, conn)
                except Exception as exc:  # the bridge DB is away: keep watching, the schedule still covers us
                    self.log.warning("cannot read CRM change events (%s); retrying", exc)
                    conn, claimed = None, {"events": 0}
                if claimed.get("echoes"):
                    self.log.info("%d CRM change event(s) were the bridge's own write-back: no run for them",
                                  claimed["echoes"])
                if claimed["events"]:
                    self.log.info("CRM change events claimed: %s", claimed)
                    # and keeps watching: a trigger that returned after its event was started again only at the
                    # triggerer's next round (up to ~13 s measured), and notifications in between waited for it
                    yield TriggerEvent(claimed)
                    continue
                if conn is None:
                    await asyncio.sleep(self.poll_seconds)
                    continue
                try:
                    await asyncio.to_thread(wait_for_wake, conn, self.poll_seconds)
                except (psycopg2.Error, OSError) as exc:  # the connection broke: reconnect on the next round
                    self.log.warning("lost the bridge DB while waiting for CRM change events (%s)", exc)
                    conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()
