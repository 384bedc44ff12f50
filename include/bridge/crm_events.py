"""CRM change notifications (Zoho's watch API) as a wake-up call for the CRM → ERP flows.

Zoho POSTs `{channel_id, token, module, operation, ids, ...}` to a notify URL when a watched record is
created or edited. The receiver here checks the channel token, keeps the notification in
`bridge.crm_event` (durable: Airflow may be down) and answers at once; the Airflow trigger
`bridge_flows.crm_events.CrmChangeEventTrigger` claims unclaimed events and updates an Asset, which starts
`crm_orders_to_erp` within seconds instead of at the next 5-minute tick.

A notification is only a hint: the flow still reads by Modified_Time from its watermark, so a lost, late or
duplicated notification changes when an order moves, never whether it moves or how often.

    python -m include.bridge.crm_events serve --port 8095    # the receiver (see docs/flows.md, "Event trigger")
"""

from __future__ import annotations

import hmac
import json
import logging

log = logging.getLogger(__name__)

WATCHED_EVENTS = ["Sales_Orders.create", "Sales_Orders.edit", "Quotes.create", "Quotes.edit"]
CHANNEL_ID = "1000000068001"  # Zoho channel ids are numeric; one channel per bridge installation


class BadNotification(ValueError):
    """The request is not a notification of ours (wrong token, not JSON, no module)."""


def record_notification(bridge, body: bytes, token: str) -> int:
    """Keep one notification; returns how many record ids it named. Raises BadNotification."""
    try:
        payload = json.loads(body or b"{}")
    except ValueError as exc:
        raise BadNotification(f"not JSON: {exc}") from None
    if not isinstance(payload, dict) or not payload.get("module"):
        raise BadNotification("no module in the notification")
    if not token or not hmac.compare_digest(str(payload.get("token") or ""), token):
        raise BadNotification(f"wrong token for channel {payload.get('channel_id')}")
    ids = [str(i) for i in payload.get("ids") or []]
    with bridge.cursor() as cur:
        cur.execute("""INSERT INTO bridge.crm_event (channel_id, module, operation, record_ids)
                       VALUES (%s, %s, %s, %s)""",
                    (str(payload.get("channel_id") or ""), payload["module"], payload.get("operation"), ids))
    bridge.commit()
    return len(ids)


def claim_events(bridge) -> dict:
    """Mark every unclaimed event claimed; {events, records, modules} of what was claimed (0 when none)."""
    with bridge.cursor() as cur:
        cur.execute("""UPDATE bridge.crm_event SET claimed_at = now() WHERE claimed_at IS NULL
                       RETURNING module, cardinality(record_ids)""")
        rows = cur.fetchall()
        cur.execute("DELETE FROM bridge.crm_event WHERE claimed_at < now() - interval '7 days'")
    bridge.commit()
    return {"events": len(rows), "records": sum(r[1] for r in rows), "modules": sorted({r[0] for r in rows})}


def subscribe(crm, notify_url: str, token: str, days: int = 7) -> dict:
    """(Re)subscribe the watch channel; Zoho channels expire after at most a week, so a daily task renews it."""
    import datetime as dt

    expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).replace(microsecond=0)
    body = {"watch": [{"channel_id": CHANNEL_ID, "events": WATCHED_EVENTS, "notify_url": notify_url,
                       "token": token, "channel_expiry": expiry.isoformat()}]}
    answer = crm.request("POST", "/crm/v8/actions/watch", json=body, idempotent=True).json()
    result = (answer.get("watch") or [{}])[0]
    if result.get("status") != "success":
        raise RuntimeError(f"the CRM refused the watch subscription: {result}")
    return {"channel_id": CHANNEL_ID, "events": WATCHED_EVENTS, "expires": expiry.isoformat()}


def app(connect, token: str):
    """The receiver as an ASGI app; `connect()` opens a bridge DB connection."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def keep(body: bytes) -> int:
        conn = connect()
        try:
            return record_notification(conn, body, token)
        finally:
            conn.close()

    async def notification(request):
        try:
            n = await run_in_threadpool(keep, await request.body())
        except BadNotification as exc:
            log.warning("refused a notification: %s", exc)
            return JSONResponse({"status": "refused", "reason": str(exc)}, status_code=401)
        return JSONResponse({"status": "kept", "records": n})

    async def health(_request):
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/zoho/notifications", notification, methods=["POST"]),
                             Route("/health", health)])


def main(argv: list[str] | None = None) -> None:
    import argparse
    import os

    import psycopg2
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m include.bridge.crm_events",
                                     description="Receive Zoho CRM watch notifications into bridge.crm_event")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--host", default=os.environ.get("CRM_EVENTS_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("CRM_EVENTS_PORT", "8095")))
    args = parser.parse_args(argv)
    # the bridge DB as libpq settings (PG* variables or BRIDGE_DB_DSN) and the channel token from the
    # environment — the same secret the crm_watch_renewal DAG reads from its connection
    dsn = os.environ.get("BRIDGE_DB_DSN", f"dbname={os.environ.get('BRIDGE_DB', 'bridge')}")
    token = os.environ.get("CRM_NOTIFY_TOKEN", "")
    if not token:
        raise SystemExit("CRM_NOTIFY_TOKEN is not set: the receiver cannot tell our notifications from others")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    uvicorn.run(app(lambda: psycopg2.connect(dsn), token), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
