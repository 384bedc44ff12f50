"""Zoho CRM v8-compatible sandbox server (FastAPI). See docs/sandboxes.md and specs/zoho-crm-v8.md.

One process plays the three Zoho hosts (accounts, API, file upload): paths differ, so one base URL can
serve as all three. Non-Zoho control endpoints live under /__sandbox/ (config, faults, reset, stats).
Request handlers run on the event loop (SQLite is used from one thread); injected latency is awaited,
so concurrent requests overlap and the concurrency limit can be exceeded as on the real service.
The routes live in include/sandbox/crm/routes/, one module per part of Zoho's API.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from include.sandbox.crm.routes import bulk, control, oauth, records, settings, watch
from include.sandbox.crm.state import SandboxState, concurrency_refused, error


def scope_for(path: str) -> str:
    if path.startswith("/crm/bulk/") or path.startswith("/crm/v8/upload"):
        return "ZohoCRM.bulk"
    for part, scope in (("/settings/", "ZohoCRM.settings"), ("/users", "ZohoCRM.users"), ("/org", "ZohoCRM.org"),
                        ("/coql", "ZohoCRM.coql"), ("/actions/watch", "ZohoCRM.notifications")):
        if part in path:
            return scope
    return "ZohoCRM.modules"


class ZohoGate:
    """ASGI middleware for /crm/ paths: injected faults, concurrency limit, OAuth token check."""

    def __init__(self, app, state: SandboxState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/crm/"):
            return await self.app(scope, receive, send)
        st, cfg = self.state, self.state.config
        faulty = scope["method"] in cfg.fault_methods
        st.stats["requests"] += 1
        if st.in_flight >= cfg.concurrency_limit:  # counted from arrival to reply, like Zoho's limit
            st.stats["concurrency_429"] += 1
            return await concurrency_refused()(scope, receive, send)
        complex_call = scope["path"] == "/crm/v8/coql" or scope["path"].startswith("/crm/bulk/")
        if complex_call and st.complex_in_flight >= cfg.sub_concurrency_limit:
            st.stats["sub_concurrency_429"] += 1
            return await concurrency_refused()(scope, receive, send)
        st.in_flight += 1
        st.complex_in_flight += complex_call
        try:
            if cfg.latency_ms:
                await asyncio.sleep(cfg.latency_ms / 1000 * (0.5 + st.rng.random()))
            if faulty and cfg.burst_429 > 0:
                cfg.burst_429 -= 1
                st.stats["injected_429"] += 1
                return await concurrency_refused()(scope, receive, send)
            denied = self.check_token(scope)
            if denied is not None:
                return await denied(scope, receive, send)
            if faulty and cfg.error_rate and st.rng.random() < cfg.error_rate:
                st.stats["injected_500"] += 1
                return await error(500, "INTERNAL_ERROR", "Internal Server Error")(scope, receive, send)
            drop = faulty and cfg.drop_rate and st.rng.random() < cfg.drop_rate
            if not drop:
                await self.app(scope, receive, send)
                st.stats[f"handled_{scope['method']}"] += 1  # the request was processed and answered
                return
            # Process the request completely (a write is committed), then lose the reply: the client
            # cannot tell whether its write happened, which is exactly what retries must survive.
            async def swallow(_message):
                return None
            await self.app(scope, receive, swallow)
            st.stats["dropped"] += 1
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")]})
            await send({"type": "http.response.body", "body": b'{"data":[', "more_body": True})
            raise ConnectionAbortedError("sandbox fault injection: connection dropped")
        finally:
            st.in_flight -= 1
            st.complex_in_flight -= complex_call

    def check_token(self, scope) -> JSONResponse | None:
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        auth = headers.get("authorization", "")
        if not auth.startswith("Zoho-oauthtoken "):
            return error(401, "AUTHENTICATION_FAILURE", "Authentication failed")
        row = self.state.store.query("SELECT scope, expires_ts, refresh_token FROM tokens WHERE token = ?",
                                     [auth[16:].strip()])
        if not row or row[0][1] < time.time():
            self.state.stats["invalid_token"] += 1
            return error(401, "INVALID_TOKEN", "invalid oauth token")
        needed = scope_for(scope["path"])
        if not any(s.startswith(needed) for s in row[0][0].split(",")):
            return error(401, "OAUTH_SCOPE_MISMATCH", "invalid oauth scope to access this URL")
        scope["zoho_user"] = self.state.user_of(row[0][2])  # who this request acts as (the routes read it)
        return None


def create_app(data_dir: str):
    """The sandbox as an ASGI app: the routes behind ZohoGate (faults, concurrency limit, OAuth check)."""
    app = FastAPI(title="Zoho CRM v8 sandbox", docs_url="/__sandbox/docs", openapi_url="/__sandbox/openapi.json")
    state = SandboxState(data_dir)
    app.state.sandbox = state
    # order matters: fixed paths (/crm/v8/coql, /crm/v8/upload, /crm/v8/actions/watch, /crm/v8/settings/...) before
    # the /crm/v8/{module}/... patterns, and the catch-all last
    for part in (oauth, settings, bulk, watch, records, control):
        app.include_router(part.router)
    app.include_router(control.fallback)
    return ZohoGate(app, state)
