"""OAuth: the refresh-token grant of Zoho's accounts server (per-refresh-token mint limit, scopes)."""

from __future__ import annotations

import secrets
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from include.sandbox.crm.state import Sandbox

router = APIRouter()


@router.post("/oauth/v2/token")
async def token(request: Request, st: Sandbox):
    form = dict(request.query_params)
    if "application/x-www-form-urlencoded" in request.headers.get("content-type", ""):
        form |= {k: str(v) for k, v in (await request.form()).items()}
    if form.get("grant_type") != "refresh_token":
        return {"error": "unsupported_grant_type"}
    if form.get("client_id") != st.client_id or form.get("client_secret") != st.client_secret:
        return {"error": "invalid_client"}
    refresh = form.get("refresh_token", "")
    scope = st.refresh_tokens.get(refresh)
    if scope is None:
        return {"error": "invalid_code"}
    now = time.time()
    minted = st.store.query("SELECT count(*) FROM token_mints WHERE refresh_token = ? AND ts > ?",
                         [refresh, now - 600])
    if minted[0][0] >= st.config.token_mints_per_10min:
        return JSONResponse({"error": "Access Denied", "error_description":
                             "You have made too many requests continuously. Please try again after some time."},
                            400)
    access = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
    with st.store.transaction():
        st.store.db.execute("INSERT INTO tokens VALUES (?, ?, ?, ?)",
                         (access, refresh, scope, now + st.config.token_ttl_seconds))
        st.store.db.execute("INSERT INTO token_mints VALUES (?, ?)", (refresh, now))
    st.stats["tokens_minted"] += 1
    return {"access_token": access, "scope": scope, "api_domain": str(request.base_url).rstrip("/"),
            "token_type": "Bearer", "expires_in": st.config.token_ttl_seconds}
