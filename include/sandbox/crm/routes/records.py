"""Records: list (page / page_token, If-Modified-Since), get, search, insert / update / upsert (per-record
outcomes), delete and the deleted list."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from include.sandbox.crm import meta
from include.sandbox.crm.query import QueryError, compile_criteria
from include.sandbox.crm.records import overall_status
from include.sandbox.crm.routes.watch import notify
from include.sandbox.crm.state import (
    DISCRETE_LIMIT,
    MAX_FIELDS,
    MAX_WRITE,
    Sandbox,
    SandboxState,
    body_json,
    error,
    module_or_error,
    project,
    too_many,
)
from include.sandbox.crm.store import USERS

router = APIRouter()


def write_response(st: SandboxState, module: str, mode: str, body: dict, request: Request,
                   unmodified_since: float | None = None):
    items = body.get("data")
    if not isinstance(items, list) or not items:
        return error(400, "REQUIRED_PARAM_MISSING", "data is missing", {"param_name": "data"})
    if len(items) > MAX_WRITE:
        return error(400, "LIMIT_EXCEEDED", f"the maximum number of records is {MAX_WRITE}",
                     {"limit": MAX_WRITE})
    if not st.charge(max(1, math.ceil(len(items) / 10))):
        return too_many()
    dup = body.get("duplicate_check_fields")
    if dup is not None:
        mod = meta.modules()[module]
        if not isinstance(dup, list) or any(d not in mod.fields for d in dup):
            return error(400, "INVALID_DATA", "invalid duplicate_check_fields",
                         {"api_name": "duplicate_check_fields"})
        # Zoho: duplicate_check_fields are the module's system duplicate-check fields or fields marked unique
        not_unique = [d for d in dup if not mod.fields[d].unique and d not in mod.duplicate_check]
        if not_unique:
            return error(400, "INVALID_DATA", f"duplicate_check_fields must be unique fields; {', '.join(not_unique)} "
                         "is not", {"api_name": "duplicate_check_fields"})
    results = st.writer.write(module, items, mode, dup, unmodified_since, user=request.scope.get("zoho_user"))
    inserted = [r["details"]["id"] for r in results if r["status"] == "success" and
                r["message"] == "record added"]
    updated = [r["details"]["id"] for r in results if r["status"] == "success" and
               r["message"] == "record updated"]
    for op, ids in (("create", inserted), ("edit", updated)):
        if ids:
            asyncio.get_running_loop().create_task(notify(st, module, op, ids, request))
    return JSONResponse({"data": results}, overall_status(mode, results))

@router.get("/crm/v8/{module}/deleted")
async def deleted(module: str, st: Sandbox, type: str = "all", page: int = 1, per_page: int = 200):
    mod = module_or_error(module)
    if isinstance(mod, JSONResponse):
        return mod
    st.charge(1)
    rows = st.store.deleted(module, type, (page - 1) * per_page, per_page + 1)
    if not rows:
        return Response(status_code=204)
    return {"data": rows[:per_page], "info": {"per_page": per_page, "count": min(len(rows), per_page),
                                               "page": page, "more_records": len(rows) > per_page}}

@router.get("/crm/v8/{module}/search")
async def search(module: str, request: Request, st: Sandbox, criteria: str | None = None, email: str | None = None,
                 phone: str | None = None, word: str | None = None, page: int = 1, per_page: int = 200):
    mod = module_or_error(module)
    if isinstance(mod, JSONResponse):
        return mod
    if not st.charge(1):
        return too_many()
    try:
        if criteria:
            cond, params = compile_criteria(criteria, mod)
        elif email or phone:
            name = "Email" if email else "Phone"
            cond, params = f"json_extract(data, '$.{name}') = ?", [email or phone]
        elif word:
            texts = [f for f, fd in mod.fields.items() if fd.type in ("text", "textarea", "email", "phone")]
            cond = "(" + " OR ".join(f"json_extract(data, '$.{t}') LIKE ?" for t in texts) + ")"
            params = [f"%{word}%"] * len(texts)
        else:
            return error(400, "REQUIRED_PARAM_MISSING", "one of criteria, email, phone, word is required",
                         {"param_name": "criteria"})
    except QueryError as exc:
        return error(400, exc.code, exc.message, exc.details)
    rows = st.store.query(f"SELECT data FROM records WHERE module = ? AND {cond} ORDER BY id LIMIT ? OFFSET ?",
                       [module, *params, per_page + 1, (page - 1) * per_page])
    if not rows:
        return Response(status_code=204)
    fields = [f for f in (request.query_params.get("fields") or "").split(",") if f]
    data = [project(json.loads(d), fields) if fields else json.loads(d) for (d,) in rows[:per_page]]
    return {"data": data, "info": {"per_page": per_page, "count": len(data), "page": page,
                                   "more_records": len(rows) > per_page}}

async def handle_write(st: SandboxState, module: str, mode: str, request: Request, record_id: str | None = None):
    """Insert / update / upsert routes: module check, body, then the per-record write."""
    mod = module_or_error(module)
    if isinstance(mod, JSONResponse):
        return mod
    body = await body_json(request)
    if isinstance(body, JSONResponse):
        return body
    if record_id is not None:  # PUT /{module}/{id}: the id (or external id) comes from the path
        rid = external_id(st, module, record_id, request)
        if isinstance(rid, JSONResponse):
            return rid
        items = body.get("data")
        if isinstance(items, list) and len(items) == 1 and isinstance(items[0], dict):
            items[0]["id"] = str(rid or record_id)
    since = unmodified_since(request) if mode == "update" else None
    return write_response(st, module, mode, body, request, since)

@router.post("/crm/v8/{module}/upsert")
async def upsert(module: str, request: Request, st: Sandbox):
    return await handle_write(st, module, "upsert", request)

def external_id(st: SandboxState, module: str, value: str, request: Request) -> int | None | JSONResponse:
    ext = request.headers.get("X-EXTERNAL")
    if not ext:
        return int(value) if value.isdigit() else None
    mod_name, _, field_name = ext.partition(".")
    if mod_name != module or field_name not in meta.modules()[module].fields:
        return error(400, "INVALID_DATA", "the X-EXTERNAL header names an unknown field", {"header": "X-EXTERNAL"})
    ids = st.store.find_ids(module, field_name, value)
    return ids[0] if ids else None

@router.get("/crm/v8/{module}/{record_id}/__timeline")
async def timeline(module: str, record_id: str, request: Request, st: Sandbox):
    """The record's history of field updates (who, when, old -> new), newest first by default."""
    mod = module_or_error(module)
    if isinstance(mod, JSONResponse):
        return mod
    if not record_id.isdigit() or st.store.get(module, int(record_id)) is None:
        return error(400, "INVALID_DATA", "the related id given seems to be invalid", {"resource_path_index": 1})
    q = request.query_params
    if q.get("sort_by", "audited_time") != "audited_time" or q.get("sort_order", "desc") not in ("asc", "desc"):
        return error(400, "INVALID_DATA", "invalid sort_by or sort_order", {"param_name": "sort_by"})
    try:
        per_page, page = min(int(q.get("per_page", 200)), 200), max(int(q.get("page", 1)), 1)
    except ValueError:
        return error(400, "INVALID_DATA", "per_page and page must be numbers", {"param_name": "per_page"})
    st.charge(1)
    rows = st.store.timeline(module, int(record_id), q.get("sort_order", "desc") == "desc", per_page + 1,
                             (page - 1) * per_page)
    entries = [{"id": str(rid), "audited_time": meta.now_iso(ts), "action": action, "source": "crm_api",
                "type": "audit", "done_by": {"id": done_by, "name": USER_NAMES.get(done_by, "")},
                "record": {"id": record_id, "module": {"api_name": module, "id": None}},
                "field_history": field_history(mod, history)}
               for rid, ts, action, done_by, history in rows[:per_page]]
    if not entries:
        return Response(status_code=204)
    return {"__timeline": entries, "info": {"per_page": per_page, "page": page, "count": len(entries),
                                            "more_records": len(rows) > per_page}}

USER_NAMES = {u["id"]: u["name"] for u in USERS}


def field_history(mod: meta.Module, stored: str | None) -> list[dict] | None:
    """The store's compact (field, new, old) list in Zoho's field_history shape (values as text)."""
    if not stored:
        return None
    return [{"api_name": name, "field_label": name.replace("_", " "), "data_type": mod.fields[name].type,
             "_value": {"new": shown(new), "old": shown(old)}} for name, new, old in json.loads(stored)]


def shown(value):
    """A field value as the timeline shows it (Zoho: text; a lookup by its name)."""
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get("name") or value.get("id")
    if isinstance(value, bool):
        return "true" if value else "false"
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)

@router.get("/crm/v8/{module}/{record_id}")
async def get_record(module: str, record_id: str, request: Request, st: Sandbox):
    mod = module_or_error(module)
    if isinstance(mod, JSONResponse):
        return mod
    st.charge(1)
    rid = external_id(st, module, record_id, request)
    if isinstance(rid, JSONResponse):
        return rid
    record = st.store.get(module, rid) if rid else None
    if record is None:
        return Response(status_code=204)
    fields = [f for f in (request.query_params.get("fields") or "").split(",") if f]
    return {"data": [project(record, fields) if fields else record]}

@router.put("/crm/v8/{module}/{record_id}")
async def update_one(module: str, record_id: str, request: Request, st: Sandbox):
    return await handle_write(st, module, "update", request, record_id)

@router.delete("/crm/v8/{module}/{record_id}")
async def delete_one(module: str, record_id: str, st: Sandbox):
    return await delete_records(module, st, record_id)

@router.get("/crm/v8/{module}")
async def list_records(module: str, request: Request, st: Sandbox):
    mod = module_or_error(module)
    if isinstance(mod, JSONResponse):
        return mod
    q = request.query_params
    fields = [f for f in (q.get("fields") or "").split(",") if f]
    if not fields:
        return error(400, "REQUIRED_PARAM_MISSING", "One of the expected parameter is missing",
                     {"param_name": "fields"})
    if len(fields) > MAX_FIELDS:
        return error(400, "LIMIT_EXCEEDED", f"more than {MAX_FIELDS} fields", {"limit": MAX_FIELDS})
    try:
        per_page = int(q.get("per_page", 200))
        page = int(q.get("page", 1))
    except ValueError:
        return error(400, "INVALID_DATA", "page and per_page must be numbers", {"param_name": "per_page"})
    if not 1 <= per_page <= 200 or page < 1:
        return error(400, "INVALID_DATA", "per_page must be 1 to 200 and page at least 1",
                     {"param_name": "per_page"})
    sort_by = q.get("sort_by", "id")
    sort_order = q.get("sort_order", "desc")
    columns = {"id": "id", "Created_Time": "created_ts", "Modified_Time": "modified_ts"}
    if sort_by not in columns or sort_order not in ("asc", "desc"):
        return error(400, "INVALID_DATA", "sort_by must be id, Created_Time or Modified_Time; sort_order asc "
                     "or desc", {"param_name": "sort_by"})
    since = request.headers.get("If-Modified-Since")
    since_ts = None
    if since:
        parsed = meta.parse_datetime(since)
        if parsed is None:
            return error(400, "INVALID_DATA", "If-Modified-Since must be yyyy-MM-ddTHH:mm:ss+HH:mm (seconds, offset)",
                         {"header": "If-Modified-Since"})
        since_ts = math.floor(parsed.timestamp()) + 1  # Zoho's times have second resolution
    if not st.charge(1):
        return too_many()
    token = q.get("page_token")
    delivered, after = 0, None
    if token:
        if "page" in q:
            return error(400, "INVALID_DATA", "page and page_token cannot be used together",
                         {"param_name": "page"})
        try:
            t = json.loads(base64.urlsafe_b64decode(token.encode()))
        except ValueError:
            return error(400, "INVALID_DATA", "invalid page_token", {"param_name": "page_token"})
        if t.get("m") != module or t.get("s") != sort_by or t.get("o") != sort_order:
            return error(400, "INVALID_DATA", "page_token does not belong to this request",
                         {"param_name": "page_token"})
        if t["x"] < time.time():
            return error(400, "INVALID_DATA", "page_token has expired", {"param_name": "page_token"})
        delivered, after, since_ts = t["n"], tuple(t["a"]), t.get("i")
        if delivered >= (limit := st.config.page_token_limit):
            return error(400, "PAGINATION_LIMIT_EXCEEDED",
                         f"cannot fetch more than {limit} records with page_token", {"limit": limit})
        rows = st.store.page(module, columns[sort_by], sort_order == "desc", per_page + 1, after=after,
                          since_ts=since_ts)
    else:
        if page * per_page > DISCRETE_LIMIT:
            return error(400, "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
                         f"cannot fetch more than {DISCRETE_LIMIT} records with page; use page_token",
                         {"limit": DISCRETE_LIMIT})
        delivered = (page - 1) * per_page
        rows = st.store.page(module, columns[sort_by], sort_order == "desc", per_page + 1, offset=delivered,
                          since_ts=since_ts)
    more = len(rows) > per_page
    rows = rows[:per_page]
    if not rows:
        return Response(status_code=304 if since and not token else 204)
    expiry = time.time() + 86400
    next_token = None
    if more:
        last = rows[-1]
        next_token = base64.urlsafe_b64encode(json.dumps(
            {"m": module, "s": sort_by, "o": sort_order, "a": [last[1], last[0]], "n": delivered + len(rows),
             "i": since_ts, "x": expiry}).encode()).decode()
    data = [project(json.loads(r[2]), listed_fields(st, mod, fields)) for r in rows]
    return {"data": data, "info": {"per_page": per_page, "count": len(data), "page": page if not token else None,
                                   "sort_by": sort_by, "sort_order": sort_order, "more_records": more,
                                   "next_page_token": next_token, "previous_page_token": token,
                                   "page_token_expiry": meta.now_iso(expiry) if next_token else None}}

def listed_fields(st: SandboxState, mod: meta.Module, fields: list[str]) -> list[str]:
    """Zoho documents subform rows through GET /{module}/{id} (v8 Subform API) and says nothing of list calls: the
    sandbox takes the stricter reading and leaves them out of lists (config subforms_in_lists: true serves them)."""
    return fields if st.config.subforms_in_lists else [f for f in fields if f not in mod.subform_fields()]

@router.post("/crm/v8/{module}")
async def insert(module: str, request: Request, st: Sandbox):
    return await handle_write(st, module, "insert", request)

def unmodified_since(request: Request) -> float | None:
    header = request.headers.get("If-Unmodified-Since")
    parsed = meta.parse_datetime(header) if header else None
    return parsed.timestamp() if parsed else None

@router.put("/crm/v8/{module}")
async def update(module: str, request: Request, st: Sandbox):
    return await handle_write(st, module, "update", request)

@router.delete("/crm/v8/{module}")
async def delete_records(module: str, st: Sandbox, ids: str = ""):
    mod = module_or_error(module)
    if isinstance(mod, JSONResponse):
        return mod
    id_list = [i for i in ids.split(",") if i]
    if not id_list:
        return error(400, "REQUIRED_PARAM_MISSING", "ids is missing", {"param_name": "ids"})
    if len(id_list) > MAX_WRITE:
        return error(400, "LIMIT_EXCEEDED", f"the maximum number of records is {MAX_WRITE}", {"limit": MAX_WRITE})
    st.charge(max(1, math.ceil(len(id_list) / 10)))
    results = []
    with st.store.transaction():
        for rid in id_list:
            if rid.isdigit() and st.store.delete(module, int(rid)):
                results.append({"code": "SUCCESS", "details": {"id": rid}, "message": "record deleted",
                                "status": "success"})
            else:
                results.append({"code": "INVALID_DATA", "details": {"id": rid},
                                "message": "the related id given seems to be invalid", "status": "error"})
    return JSONResponse({"data": results}, overall_status("delete", results))
