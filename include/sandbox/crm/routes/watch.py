"""Notifications: the actions/watch subscription, and the notifications a record write sends its channels."""

from __future__ import annotations

import json
import logging
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from include.sandbox.crm import meta
from include.sandbox.crm.state import Sandbox, SandboxState, body_json

log = logging.getLogger("crm_sandbox")
router = APIRouter()
# Zoho's Notification API: a channel lives at most a week (a later channel_expiry falls back to one hour) and its
# token is at most 50 characters
MAX_EXPIRY = 7 * 86400
MAX_TOKEN = 50


@router.post("/crm/v8/actions/watch")
async def watch(request: Request, st: Sandbox):
    body = await body_json(request)
    if isinstance(body, JSONResponse):
        return body
    results = []
    with st.store.transaction():
        for i, ch in enumerate(body.get("watch") or []):
            token = ch.get("token")
            if token is not None and (not isinstance(token, str) or len(token) > MAX_TOKEN):
                results.append(meta.invalid("token", f"$.watch[{i}].token", "string", maximum_length=MAX_TOKEN))
                continue
            # Zoho: channel_expiry at most one week ahead; later, or missing, the channel expires in one hour
            expiry = meta.parse_datetime(ch.get("channel_expiry") or "")
            now = time.time()
            expiry_ts = expiry.timestamp() if expiry and expiry.timestamp() <= now + MAX_EXPIRY else now + 3600
            st.store.db.execute("INSERT OR REPLACE INTO watch_channels VALUES (?, ?, ?, ?, ?)",
                             (str(ch.get("channel_id")), json.dumps(ch.get("events") or []), ch.get("notify_url"),
                              token, expiry_ts))
            results.append({"code": "SUCCESS", "status": "success",
                            "message": "Successfully subscribed for actions-watch of the given module",
                            "details": {"events": [{"channel_expiry": meta.now_iso(expiry_ts), "resource_uri":
                                        f"{str(request.base_url).rstrip('/')}/crm/v8/{e.split('.')[0]}",
                                        "resource_id": None, "resource_name": e.split(".")[0],
                                        "channel_id": str(ch.get("channel_id"))} for e in ch.get("events") or []]}})
    return {"watch": results}

async def notify(st: SandboxState, module: str, operation: str, ids: list[str], request: Request) -> None:
    """Zoho's notification to every watch channel subscribed to the module's operation."""
    import httpx

    rows = st.store.query("SELECT channel_id, events, notify_url, token FROM watch_channels "
                       "WHERE expiry_ts > ?", [time.time()])
    wanted = {f"{module}.{operation}", f"{module}.all"}
    targets = [r for r in rows if wanted & set(json.loads(r[1]))]
    if not targets or not ids:
        return
    async with httpx.AsyncClient(timeout=5) as client:
        for channel_id, _, url, tok in targets:
            payload = {"server_time": int(time.time() * 1000), "module": module, "resource_uri":
                       f"{str(request.base_url).rstrip('/')}/crm/v8/{module}", "ids": ids,
                       "affected_fields": [], "operation": operation, "channel_id": channel_id, "token": tok}
            try:
                await client.post(url, json=payload)
                st.stats["notifications_sent"] += 1
            except httpx.HTTPError as exc:
                log.warning("notification to %s failed: %s", url, exc)
