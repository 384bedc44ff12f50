"""Bulk APIs: file upload, bulk write (insert / update / upsert from a zipped CSV) and bulk read (CSV export), as
jobs that run beside the API like Zoho's.

Shapes follow Zoho's OpenAPI files (zoho/crm-oas, v8.0/bulk_write.json and v8.0/bulk_read.json) and the official SDK's
models: the bulk-write job details are one top-level object (`Bulk_Write_Response`: status, resource[], result, ...),
while bulk-read job details are wrapped in `data[]` (`Response_Wrapper` of `Job_Detail`). The upload wants the org's
zgid in X-CRM-ORG. `find_by` must name a unique field (or id). `ignore_empty: false` (the default) means an empty
cell clears the field; `true` leaves it as it is."""

from __future__ import annotations

import asyncio
import collections
import csv
import io
import json
import logging
import time
import zipfile

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from include.sandbox.crm import meta
from include.sandbox.crm.query import Columns, QueryError
from include.sandbox.crm.state import ZGID, Sandbox, SandboxState, body_json, error, too_many
from include.sandbox.crm.store import USER

log = logging.getLogger("crm_sandbox")
router = APIRouter()
BULK_WRITE_CREDITS = 500   # Zoho's API limits page: a bulk write job costs 500 credits (its status polls 1 each)
BULK_READ_CREDITS = 50


@router.post("/crm/v8/upload")
async def upload(request: Request, st: Sandbox):
    if request.headers.get("feature") != "bulk-write":
        return error(400, "INVALID_REQUEST", "the feature header must be bulk-write", {"header": "feature"})
    if request.headers.get("X-CRM-ORG") != ZGID:
        return error(400, "INVALID_REQUEST", "X-CRM-ORG must be the org's zgid (GET /crm/v8/org: zgid, not id)",
                     {"header": "X-CRM-ORG"})
    form = await request.form()
    upload_file = form.get("file")
    if upload_file is None or not hasattr(upload_file, "read"):
        return error(400, "REQUIRED_PARAM_MISSING", "file is missing", {"param_name": "file"})
    content = await upload_file.read()
    if len(content) > 25 * 2**20:
        return error(413, "FILE_SIZE_EXCEEDED", "the file is larger than 25 MB")
    if not zipfile.is_zipfile(io.BytesIO(content)):
        return error(400, "INVALID_FILE_FORMAT", "upload a zip file with one CSV file")
    file_id = str(st.store.new_id())
    (st.store.data_dir / "files" / f"{file_id}.zip").write_bytes(content)
    with st.store.transaction():
        st.store.db.execute("INSERT INTO files VALUES (?, ?, ?)", (file_id, upload_file.filename, time.time()))
    return JSONResponse({"status": "success", "code": "FILE_UPLOAD_SUCCESS", "message": "file uploaded.",
                         "details": {"file_id": file_id, "created_time": meta.now_iso()}}, 200)

def job_row(st: SandboxState, job_id: str, kind: str) -> dict | None:
    rows = st.store.query("SELECT state, request, result, created_ts FROM jobs WHERE id = ? AND kind = ?",
                       [job_id, kind])
    if not rows:
        return None
    state_, req, result, created = rows[0]
    return {"state": state_, "request": json.loads(req), "result": json.loads(result) if result else None,
            "created_time": meta.now_iso(created)}

def save_job(st: SandboxState, job_id: str, kind: str, state_: str, request_: dict, result: dict | None = None
             ) -> None:
    with st.store.transaction():
        st.store.db.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, coalesce((SELECT created_ts FROM "
                         "jobs WHERE id = ?), ?))", (job_id, kind, state_, json.dumps(request_),
                                                     json.dumps(result) if result else None, job_id, time.time()))

@router.post("/crm/bulk/v8/write")
async def bulk_write_create(request: Request, st: Sandbox):
    body = await body_json(request)
    if isinstance(body, JSONResponse):
        return body
    op = body.get("operation")
    resources = body.get("resource")
    if op not in ("insert", "update", "upsert") or not isinstance(resources, list) or not resources:
        return error(400, "INVALID_DATA", "operation must be insert, update or upsert, with a resource",
                     {"api_name": "operation"})
    for res in resources:
        mod = meta.modules().get((res.get("module") or {}).get("api_name", ""))
        if mod is None:
            return error(400, "INVALID_MODULE", "the module name given seems to be invalid")
        if not (st.store.data_dir / "files" / f"{res.get('file_id')}.zip").exists():
            return error(400, "INVALID_DATA", "file_id is invalid", {"api_name": "file_id"})
        if op in ("update", "upsert") and not res.get("find_by"):
            return error(400, "MANDATORY_NOT_FOUND", "find_by is required", {"api_name": "find_by"})
        find_by = res.get("find_by")
        if find_by and find_by != "id" and not (find_by in mod.fields and mod.fields[find_by].unique):
            # Zoho: find_by is the record id or a field marked unique in the org (bulk write "find_by")
            return error(400, "INVALID_DATA", f"find_by must be id or a unique field; {find_by} is not unique",
                         {"api_name": "find_by"})
    if not st.charge(BULK_WRITE_CREDITS):
        return too_many()
    job_id = str(st.store.new_id())
    save_job(st, job_id, "write", "ADDED", body)
    asyncio.get_running_loop().create_task(run_bulk_write(st, job_id, body))
    return JSONResponse({"status": "success", "code": "SUCCESS", "message": "success",
                         "details": {"id": job_id, "created_by": USER}}, 201)

async def run_bulk_write(st: SandboxState, job_id: str, body: dict) -> None:
    await asyncio.sleep(0.05)
    save_job(st, job_id, "write", "IN PROGRESS", body)
    summaries, outcome_rows = [], []
    try:
        for res in body["resource"]:
            summary, rows = await bulk_write_resource(st, body["operation"], res,
                                                      bool(res.get("ignore_empty", body.get("ignore_empty", False))))
            summaries.append(summary)
            outcome_rows.extend(rows)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            buf = io.StringIO()
            csv.writer(buf).writerows(outcome_rows)
            zf.writestr(f"{job_id}.csv", buf.getvalue())
        (st.store.data_dir / "bulk" / f"write-{job_id}.zip").write_bytes(out.getvalue())
        save_job(st, job_id, "write", "COMPLETED", body, {"resource": summaries})
    except Exception as exc:  # a job failure is reported in the job, like Zoho's FAILED state
        log.exception("bulk write %s failed", job_id)
        save_job(st, job_id, "write", "FAILED", body, {"resource": summaries, "error": str(exc)})

async def bulk_write_resource(st: SandboxState, op: str, res: dict, ignore_empty: bool) -> tuple[dict, list[list]]:
    module = meta.modules()[res["module"]["api_name"]]
    with zipfile.ZipFile(st.store.data_dir / "files" / f"{res['file_id']}.zip") as zf:
        name = zf.namelist()[0]
        rows = list(csv.reader(io.TextIOWrapper(zf.open(name), encoding="utf-8-sig")))
    header, data = rows[0], rows[1:]
    mapping = {m["index"]: m["api_name"] for m in res.get("field_mappings") or []} or dict(enumerate(header))
    counts = collections.Counter()
    outcome = [header + ["STATUS", "RECORD_ID", "ERRORS"]]
    for start in range(0, len(data), 1000):
        chunk = data[start:start + 1000]
        items = [csv_record(module, row, mapping, ignore_empty) for row in chunk]
        mode = "upsert" if op == "upsert" else op
        if op == "update" and res["find_by"] != "id":  # find by the field (by id: the key itself)
            for item in items:
                ids = st.store.find_ids(module.api_name, res["find_by"], item.get(res["find_by"]))
                if ids:
                    item["id"] = str(ids[0])
        results = st.writer.write(module.api_name, items, mode, [res["find_by"]] if res.get("find_by") else None)
        for row, r in zip(chunk, results, strict=True):
            if r["status"] == "success":
                status = "ADDED" if r.get("action", "insert") == "insert" and r["message"] == "record added" \
                    else "UPDATED"
                counts["added" if status == "ADDED" else "updated"] += 1
                outcome.append(row + [status, r["details"]["id"], ""])
            else:
                counts["skipped"] += 1
                outcome.append(row + ["SKIPPED", "", f"{r['code']}: {r['details'].get('api_name', '')}"])
        await asyncio.sleep(0)  # let API requests in between chunks
    return {"status": "COMPLETED", "type": "data", "module": module_ref(module.api_name),
            "file_id": res["file_id"], "ignore_empty": ignore_empty, "find_by": res.get("find_by"),
            "field_mappings": res.get("field_mappings") or [],
            "file": {"status": "COMPLETED", "name": name, "added_count": counts["added"],
                     "updated_count": counts["updated"], "skipped_count": counts["skipped"],
                     "total_count": len(data)}}, outcome

def module_ref(api_name: str) -> dict:
    """A module as Zoho's Minified_Module: api_name and id (the sandbox's module ids are stable per name)."""
    return {"api_name": api_name, "id": str(5_000_000 + sorted(meta.modules()).index(api_name))}


def csv_record(module: meta.Module, row: list[str], mapping: dict[int, str], ignore_empty: bool = False) -> dict:
    item = {}
    for index, api_name in mapping.items():
        if index >= len(row):
            continue
        raw, f = row[index], module.fields.get(api_name)
        if raw == "":
            if not ignore_empty and f is not None and api_name != "id" and not f.read_only:
                item[api_name] = None  # an empty cell clears the field unless the job says ignore_empty
            continue
        if api_name == "id":
            item["id"] = raw
        elif f is None:
            continue
        elif f.type in meta.NUMBER_TYPES:
            item[api_name] = _number(raw)
        elif f.type in meta.INTEGER_TYPES:
            item[api_name] = int(raw) if raw.lstrip("-").isdigit() else raw
        elif f.type == "boolean":
            item[api_name] = {"true": True, "false": False}.get(raw.lower(), raw)
        elif f.type in ("lookup", "ownerlookup"):
            item[api_name] = {"id": raw}
        elif f.type == "multiselectpicklist":
            item[api_name] = raw.split(";")
        else:
            item[api_name] = raw
    return item

@router.get("/crm/bulk/v8/write/{job_id}")
async def bulk_write_status(job_id: str, request: Request, st: Sandbox):
    """Zoho's Get Bulk Write Job Details: one top-level object, not wrapped in data[] (crm-oas v8.0/bulk_write.json,
    Bulk_Write_Response); the result's download_url is an absolute URL on Zoho's download host."""
    job = job_row(st, job_id, "write")
    if job is None:
        return error(400, "RESOURCE_NOT_FOUND", "the requested job does not exist", {"resource": job_id})
    st.charge(1)
    req = job["request"]
    data = {"status": job["state"], "character_encoding": req.get("character_encoding") or "UTF-8",
            "id": job_id, "operation": req["operation"], "created_by": {"id": USER["id"], "name": USER["name"]},
            "created_time": job["created_time"],
            "resource": (job["result"] or {}).get("resource") or
            [{"status": job["state"], "type": "data", "module": module_ref(r["module"]["api_name"]),
              "file_id": r.get("file_id"), "find_by": r.get("find_by"), "field_mappings": r.get("field_mappings") or []}
             for r in req["resource"]]}
    if req.get("callback"):
        data["callback"] = req["callback"]
    if job["state"] == "COMPLETED":
        base = str(request.base_url).rstrip("/")
        data["result"] = {"download_url": f"{base}/v2/crm/{ZGID}/bulk-write/{job_id}/{job_id}.zip"}
    return data


@router.get("/v2/crm/{zgid}/bulk-write/{job_id}/{name}")
async def bulk_write_download(zgid: str, job_id: str, name: str, st: Sandbox):
    """The result file as Zoho's download host serves it (download-accl.zoho.com/v2/crm/<zgid>/bulk-write/...)."""
    path = st.store.data_dir / "bulk" / f"write-{job_id}.zip"
    if zgid != ZGID or name != f"{job_id}.zip" or not path.exists():
        return error(404, "RESOURCE_NOT_FOUND", "the result is not available")
    return Response(path.read_bytes(), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{job_id}.zip"'})

@router.get("/crm/bulk/v8/{kind}/{job_id}/result")
async def bulk_result(kind: str, job_id: str, st: Sandbox):
    path = st.store.data_dir / "bulk" / f"{kind}-{job_id}.zip"
    if kind not in ("read", "write") or not path.exists():
        return error(404, "RESOURCE_NOT_FOUND", "the result is not available")
    return Response(path.read_bytes(), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{job_id}.zip"'})

@router.post("/crm/bulk/v8/read")
async def bulk_read_create(request: Request, st: Sandbox):
    body = await body_json(request)
    if isinstance(body, JSONResponse):
        return body
    query = body.get("query") or {}
    mod = meta.modules().get((query.get("module") or {}).get("api_name", ""))
    if mod is None:
        return error(400, "INVALID_MODULE", "the module name given seems to be invalid")
    try:
        bulk_criteria_sql(mod, query.get("criteria"))
    except QueryError as exc:
        return error(400, exc.code, exc.message, exc.details)
    if not st.charge(BULK_READ_CREDITS):
        return too_many()
    job_id = str(st.store.new_id())
    save_job(st, job_id, "read", "ADDED", body)
    asyncio.get_running_loop().create_task(run_bulk_read(st, job_id, body, mod))
    return JSONResponse({"data": [{"status": "success", "code": "ADDED_SUCCESSFULLY",
                                   "message": "Added successfully.",
                                   "details": {"id": job_id, "operation": "read", "state": "ADDED",
                                               "created_by": USER, "created_time": meta.now_iso()}}],
                         "info": {}}, 201)

def bulk_criteria_sql(mod: meta.Module, criteria: dict | None) -> tuple[str, list]:
    cols = Columns(mod)
    ops = {"equal": "=", "not_equal": "<>", "greater_than": ">", "greater_equal": ">=", "less_than": "<",
           "less_equal": "<=", "in": "IN", "between": "BETWEEN"}

    def walk(node) -> str:
        if "group" in node:
            joiner = f" {node.get('group_operator', 'and').upper()} "
            return "(" + joiner.join(walk(g) for g in node["group"]) + ")"
        # v8 names the field as {"field": {"api_name": ...}} (crm-oas bulk_read.json Criteria, the SDK's
        # MinifiedField); older versions as "api_name": both are read
        expr, ftype = cols.sql((node.get("field") or {}).get("api_name") or node.get("api_name", ""))
        comparator = node.get("comparator", "equal")
        if comparator not in ops:
            raise QueryError("INVALID_QUERY", f"invalid comparator {comparator}", {"comparator": comparator})
        value = node.get("value")
        if comparator == "in":
            params.extend(cols.param(ftype, v) for v in value)
            return f"{expr} IN ({', '.join('?' * len(value))})"
        if comparator == "between":
            params.extend(cols.param(ftype, v) for v in value)
            return f"{expr} BETWEEN ? AND ?"
        params.append(cols.param(ftype, value))
        return f"{expr} {ops[comparator]} ?"

    params: list = []
    return (walk(criteria) if criteria else "1 = 1"), params

async def run_bulk_read(st: SandboxState, job_id: str, body: dict, mod: meta.Module) -> None:
    await asyncio.sleep(0.05)
    save_job(st, job_id, "read", "IN PROGRESS", body)
    query = body["query"]
    fields = query.get("fields") or ["id"] + list(mod.fields)
    page = int(query.get("page") or 1)
    cond, params = bulk_criteria_sql(mod, query.get("criteria"))
    rows = st.store.query(f"SELECT data FROM records WHERE module = ? AND {cond} ORDER BY id LIMIT ? OFFSET ?",
                       [mod.api_name, *params, 200_001, (page - 1) * 200_000])
    more = len(rows) > 200_000
    buf = io.StringIO()
    out = csv.writer(buf)
    out.writerow(fields)
    for (data,) in rows[:200_000]:
        rec = json.loads(data)
        out.writerow([_csv_value(rec.get(f)) for f in fields])
    blob = io.BytesIO()
    with zipfile.ZipFile(blob, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{job_id}.csv", buf.getvalue())
    (st.store.data_dir / "bulk" / f"read-{job_id}.zip").write_bytes(blob.getvalue())
    save_job(st, job_id, "read", "COMPLETED", body,
             {"page": page, "count": min(len(rows), 200_000), "per_page": 200_000, "more_records": more,
              "download_url": f"/crm/bulk/v8/read/{job_id}/result"})

@router.get("/crm/bulk/v8/read/{job_id}")
async def bulk_read_status(job_id: str, st: Sandbox):
    job = job_row(st, job_id, "read")
    if job is None:
        return error(404, "RESOURCE_NOT_FOUND", "the requested job does not exist")
    st.charge(1)
    data = {"id": job_id, "operation": "read", "state": job["state"], "query": job["request"]["query"],
            "created_by": USER, "created_time": job["created_time"], "file_type": "csv"}
    if job["result"]:
        data["result"] = job["result"]
    return {"data": [data]}


def _number(raw: str):
    try:
        return float(raw) if any(c in raw for c in ".eE") else int(raw)
    except ValueError:
        return raw


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return str(value.get("id", ""))
    if isinstance(value, list):
        return ";".join(str(v.get("id", v)) if isinstance(v, dict) else str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
