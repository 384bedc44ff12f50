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

import contextlib
import hmac
import json
import logging
import select
from dataclasses import dataclass

log = logging.getLogger(__name__)

WATCHED_EVENTS = ["Sales_Orders.create", "Sales_Orders.edit", "Quotes.create", "Quotes.edit"]
CHANNEL_ID = "1000000068001"  # Zoho channel ids are numeric; one channel per bridge installation
WAKE_CHANNEL = "bridge_crm_event"  # PostgreSQL NOTIFY channel: a stored notification wakes the trigger at once


MAX_BODY = 64 * 1024          # a notification is a few hundred bytes: anything bigger is refused unread
MAX_IDS = 1000
OPERATIONS = {"create", "edit", "delete", "all"}


class BadNotification(ValueError):
    """The request is not a notification of ours. The reason names what was wrong, never echoes what was sent."""


@dataclass(frozen=True)
class Notification:
    channel_id: str
    module: str
    operation: str | None
    ids: list[str]


def parse_notification(body: bytes, token: str) -> Notification:
    """Check a request body before anything else is touched (no database connection for a stranger): size, JSON,
    the channel token (compared as bytes, in constant time), our channel, a watched module, record ids."""
    if not token:
        raise BadNotification("the receiver has no channel token configured")
    if len(body) > MAX_BODY:
        raise BadNotification(f"body larger than {MAX_BODY} bytes")
    try:
        payload = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        raise BadNotification("body is not JSON") from None
    if not isinstance(payload, dict):
        raise BadNotification("body is not a JSON object")
    sent = payload.get("token")
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode("utf-8", "replace"), token.encode()):
        raise BadNotification("wrong or missing channel token")
    if str(payload.get("channel_id")) != CHANNEL_ID:
        raise BadNotification("not our watch channel")
    module, operation, ids = payload.get("module"), payload.get("operation"), payload.get("ids") or []
    if module not in {e.split(".")[0] for e in WATCHED_EVENTS}:
        raise BadNotification("not a watched module")
    if operation is not None and operation not in OPERATIONS:
        raise BadNotification("unknown operation")
    if not isinstance(ids, list) or len(ids) > MAX_IDS or not all(isinstance(i, str | int) and str(i).isdigit()
                                                                   for i in ids):
        raise BadNotification(f"ids must be a list of at most {MAX_IDS} record ids")
    return Notification(CHANNEL_ID, module, operation, [str(i) for i in ids])


def record_notification(bridge, note: Notification) -> int:
    """Keep one checked notification; returns how many record ids it named."""
    with bridge.cursor() as cur:
        cur.execute("""INSERT INTO bridge.crm_event (channel_id, module, operation, record_ids)
                       VALUES (%s, %s, %s, %s)""", (note.channel_id, note.module, note.operation, note.ids))
        cur.execute(f"NOTIFY {WAKE_CHANNEL}")  # delivered on commit, with the row
    bridge.commit()
    return len(note.ids)


ECHO_SECONDS = 60  # how long a noted write of the bridge's own waits for its notification


def expect_echoes(bridge, module: str, record_ids: list[str]) -> None:
    """Note (and commit) that the bridge is about to update these records: their notifications are its own echo."""
    with bridge.cursor() as cur:
        cur.execute("""INSERT INTO bridge.crm_echo (module, record_id, expires_at)
                       SELECT %s, unnest(%s::text[]), now() + interval '1 second' * %s
                       ON CONFLICT (module, record_id) DO UPDATE SET expires_at = excluded.expires_at""",
                    (module, [str(i) for i in record_ids], ECHO_SECONDS))
    bridge.commit()


def claim_events(bridge) -> dict:
    """Mark every unclaimed event claimed; {events, records, modules} of the claimed events that are not the echo of a
    write of the bridge's own (their notes consumed, counted in `echoes`); events 0 when there is nothing to start."""
    with bridge.cursor() as cur:
        cur.execute("""UPDATE bridge.crm_event SET claimed_at = now() WHERE claimed_at IS NULL
                       RETURNING id, module, record_ids""")
        claimed = cur.fetchall()
        cur.execute("""DELETE FROM bridge.crm_echo e USING (SELECT DISTINCT module, unnest(record_ids) AS record_id
                                                           FROM bridge.crm_event WHERE id = ANY (%s)) c
                       WHERE e.module = c.module AND e.record_id = c.record_id AND e.expires_at > now()
                       RETURNING e.module, e.record_id""", ([r[0] for r in claimed],))
        echoed = set(cur.fetchall())
        cur.execute("DELETE FROM bridge.crm_echo WHERE expires_at <= now()")
        cur.execute("DELETE FROM bridge.crm_event WHERE claimed_at < now() - interval '7 days'")
    bridge.commit()
    real = [(module, ids) for _, module, ids in claimed if not ids or any((module, i) not in echoed for i in ids)]
    return {"events": len(real), "records": sum(len(ids) for _, ids in real), "modules": sorted({m for m, _ in real}),
            "echoes": len(claimed) - len(real)}


def listen(bridge) -> None:
    """Ask for the receiver's wake-ups on this connection (see wait_for_wake)."""
    with bridge.cursor() as cur:
        cur.execute(f"LISTEN {WAKE_CHANNEL}")
    bridge.commit()


def wait_for_wake(bridge, seconds: float) -> bool:
    """Block until the receiver stored a notification (its NOTIFY) or `seconds` passed; True when woken. The caller
    claims events either way: a NOTIFY lost with a dropped connection costs one poll interval, never an event."""
    if not select.select([bridge], [], [], seconds)[0]:
        return False
    bridge.poll()
    woken = bool(bridge.notifies)
    bridge.notifies.clear()
    return woken


MAX_CHANNEL_TOKEN = 50  # Zoho: a watch channel's token is at most 50 characters


def subscribe(crm, notify_url: str, token: str, hours: float = 6 * 24) -> dict:
    """(Re)subscribe the watch channel; a daily task renews it. Zoho channels live at most a week, and an expiry
    beyond that silently becomes one hour, so it asks for less than a week and checks what the CRM set."""
    import datetime as dt

    if not token or len(token) > MAX_CHANNEL_TOKEN:
        raise ValueError(f"the crm_notify token must be 1 to {MAX_CHANNEL_TOKEN} characters (Zoho's limit for a "
                         f"watch channel's token), not {len(token or '')}")
    if hours > 7 * 24:
        raise ValueError(f"a Zoho watch channel lives at most 168 hours, not {hours}")
    expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)).replace(microsecond=0)
    body = {"watch": [{"channel_id": CHANNEL_ID, "events": WATCHED_EVENTS, "notify_url": notify_url,
                       "token": token, "channel_expiry": expiry.isoformat()}]}
    answer = crm.request("POST", "/crm/v8/actions/watch", json=body, idempotent=True).json()
    result = (answer.get("watch") or [{}])[0]
    if result.get("status") != "success":
        raise RuntimeError(f"the CRM refused the watch subscription: {result}")
    granted = [dt.datetime.fromisoformat(e["channel_expiry"]) for e in result.get("details", {}).get("events", [])
               if e.get("channel_expiry")]
    if not granted:
        raise RuntimeError(f"the CRM's answer to the watch subscription names no channel_expiry: {result}")
    soonest = min(granted)
    if soonest < expiry - dt.timedelta(minutes=5):
        raise RuntimeError(f"the CRM set the watch channel to expire at {soonest.isoformat()}, not "
                           f"{expiry.isoformat()} as asked: events stop then unless the channel is renewed")
    return {"channel_id": CHANNEL_ID, "events": WATCHED_EVENTS, "expires": soonest.isoformat()}


def app(connect, token: str):
    """The receiver as an ASGI app; `connect()` opens a bridge DB connection."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def keep(note: Notification) -> int:
        conn = connect()
        try:
            return record_notification(conn, note)
        finally:
            conn.close()

    async def notification(request):
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            return JSONResponse({"status": "refused", "reason": "body too large"}, status_code=413)
        body = b""
        async for part in request.stream():  # never more than the cap in memory, whatever the header said
            body += part
            if len(body) > MAX_BODY:
                return JSONResponse({"status": "refused", "reason": "body too large"}, status_code=413)
        try:
            note = parse_notification(body, token)
        except BadNotification as exc:
            log.warning("refused a notification from %s: %s", request.client.host if request.client else "?", exc)
            return JSONResponse({"status": "refused", "reason": str(exc)}, status_code=401)
        n = await run_in_threadpool(keep, note)
        return JSONResponse({"status": "kept", "records": n})

    async def health(_request):
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/zoho/notifications", notification, methods=["POST"]),
                             Route("/health", health)])


def main(argv: list[str] | None = None) -> None:
    import argparse
    import os

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
    uvicorn.run(app(Pool(dsn), token), host=args.host, port=args.port, log_level="warning")


class Pool:
    """A few pooled connections (it runs as the receiver role: INSERT into bridge.crm_event only), with timeouts:
    a slow or lost database makes a notification fail fast (Zoho retries it), never piles up requests."""

    def __init__(self, dsn: str, size: int = 4):
        import psycopg2.pool

        self.pool = psycopg2.pool.ThreadedConnectionPool(
            0, size, dsn, connect_timeout=5, application_name="crm-erp-bridge:crm-events",
            options="-c statement_timeout=5000 -c idle_in_transaction_session_timeout=10000")

    def __call__(self):
        return PooledConnection(self.pool)


class PooledConnection:
    """One connection borrowed from the pool; close() gives it back (a broken one is discarded)."""

    def __init__(self, pool):
        self.pool, self.conn = pool, pool.getconn()

    def cursor(self, *args, **kw):
        return self.conn.cursor(*args, **kw)

    def commit(self):
        self.conn.commit()

    def close(self):
        if not self.conn.closed:
            with contextlib.suppress(Exception):  # a broken connection is discarded below
                self.conn.rollback()  # nothing half-done goes back into the pool
        self.pool.putconn(self.conn, close=bool(self.conn.closed))


if __name__ == "__main__":
    main()
