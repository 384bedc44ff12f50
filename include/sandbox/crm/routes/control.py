"""Sandbox control under /__sandbox/ (health, config and faults, reset, token expiry, stats), and the catch-all
that answers unknown /crm/ paths as Zoho does (`fallback`, mounted last)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from include.sandbox.crm import meta
from include.sandbox.crm.state import Config, Sandbox, body_json, error

router = APIRouter()
fallback = APIRouter()


@router.get("/__sandbox/health")
async def health(st: Sandbox):
    return {"status": "ok", "records": st.store.count()}

@router.get("/__sandbox/config")
async def get_config(st: Sandbox):
    return asdict(st.config)

@router.put("/__sandbox/config")
async def put_config(request: Request, st: Sandbox):
    body = await body_json(request)
    if isinstance(body, JSONResponse):
        return body
    try:
        return asdict(st.set_config(body))
    except (TypeError, ValueError) as exc:
        return error(400, "INVALID_DATA", str(exc))

@router.post("/__sandbox/reset")
async def reset(request: Request, st: Sandbox):
    """Wipe all data, restore default limits and no faults; reseed from the demo company unless empty."""
    body = await body_json(request)
    if isinstance(body, JSONResponse):
        return body
    st.store.reset()
    st.set_config(asdict(Config()))
    st.credits.clear()
    st.stats.clear()
    counts = {}
    if body.get("seed", True):
        from include.sandbox.crm.seed import seed_demo_company
        counts = seed_demo_company(st.writer, customers=int(body.get("customers", 200)),
                                   skus=int(body.get("skus", 1000)), seed=int(body.get("seed_value", 42)))
    return {"status": "reset", "records": counts}

@router.post("/__sandbox/plant")
async def plant(request: Request, st: Sandbox):
    """Hostile-input tests: merge raw values into a record without the field checks the API applies (text in a
    number field, a date that does not exist, a lookup that is not one) — what another integration, a data import
    or a CRM quirk could leave behind. Body: {module, id, fields: {...}, rows: {subform: [{...}, ...]}} (rows are
    merged into the subform's rows by position). The record's Modified_Time moves, as on any edit."""
    body = await body_json(request)
    if isinstance(body, JSONResponse):
        return body
    module, rid = body.get("module"), str(body.get("id") or "")
    record = st.store.get(module, int(rid)) if module in meta.modules() and rid.isdigit() else None
    if record is None:
        return error(400, "INVALID_DATA", "no such record", {"module": module, "id": rid})
    record.update(body.get("fields") or {})
    for name, rows in (body.get("rows") or {}).items():
        current = record.get(name) or []
        for n, row in enumerate(rows):
            if n < len(current):
                current[n] = {**current[n], **row}
        record[name] = current
    ts = st.writer._stamp()
    record["Modified_Time"] = meta.now_iso(ts)
    with st.store.transaction():
        st.store.put(module, record, st.store.created_ts(int(rid)), ts)
    return {"status": "planted", "id": rid}

@router.post("/__sandbox/tokens/expire")
async def expire_tokens(st: Sandbox):
    with st.store.transaction():
        n = st.store.db.execute("UPDATE tokens SET expires_ts = 0").rowcount
    return {"expired": n}

@router.get("/__sandbox/stats")
async def stats(st: Sandbox):
    return {"stats": dict(st.stats), "in_flight": st.in_flight,
            "credits_used_24h": st.credits.used(),
            "records": {m: st.store.count(m) for m in meta.modules()}}

@fallback.api_route("/crm/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
async def unknown(rest: str):
    return error(404, "INVALID_URL_PATTERN", "Please check if the URL trying to access is a correct one")
