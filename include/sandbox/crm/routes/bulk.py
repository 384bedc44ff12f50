"""Bulk APIs: file upload, bulk write (insert / update / upsert from a zipped CSV) and bulk read (CSV export), as
jobs that run beside the API like Zoho's."""

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
from include.sandbox.crm.state import ORG_ID, Sandbox, SandboxState, body_json, error, too_many
from include.sandbox.crm.store import USER

log = logging.getLogger("crm_sandbox")
router = APIRouter()


@router.post("/crm/v8/upload")
async def upload(request: Request, st: Sandbox):
    if request.headers.get("feature") != "bulk-write":
        return error(400, "INVALID_REQUEST", "the feature header must be bulk-write", {"header": "feature"})
    if request.headers.get("X-CRM-ORG") != ORG_ID:
        return error(400, "INVALID_REQUEST", "X-CRM-ORG header is missing or wrong", {"header": "X-CRM-ORG"})
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
    if not st.charge(50):
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
            summary, rows = await bulk_write_resource(st, body["operation"], res)
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

async def bulk_write_resource(st: SandboxState, op: str, res: dict) -> tuple[dict, list[list]]:
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
        items = [csv_record(module, row, mapping) for row in chunk]
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
    return {"status": "COMPLETED", "type": "data", "module": {"api_name": module.api_name},
            "file": {"status": "COMPLETED", "name": name, "added_count": counts["added"],
                     "updated_count": counts["updated"], "skipped_count": counts["skipped"],
                     "total_count": len(data)}}, outcome

def csv_record(module: meta.Module, row: list[str], mapping: dict[int, str]) -> dict:
    item = {}
    for index, api_name in mapping.items():
        if index >= len(row) or row[index] == "":
            continue
        raw, f = row[index], module.fields.get(api_name)
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
async def bulk_write_status(job_id: str, st: Sandbox):
    job = job_row(st, job_id, "write")
    if job is None:
        return error(404, "RESOURCE_NOT_FOUND", "the requested job does not exist")
    data = {"id": job_id, "operation": job["request"]["operation"], "status": job["state"],
            "character_encoding": "UTF-8", "created_by": USER, "created_time": job["created_time"],
            "resource": (job["result"] or {}).get("resource") or
            [{"status": job["state"], "type": "data", "module": r["module"]} for r in job["request"]["resource"]]}
    if job["state"] == "COMPLETED":
        data["result"] = {"download_url": f"/crm/bulk/v8/write/{job_id}/result"}
    return {"data": [data]}

@router.get("/crm/bulk/v8/{kind}/{job_id}/result")
async def bulk_result(kind: str, job_id: str, st: Sandbox):
    path = st.store.data_dir / "bulk" / f"{kind}-{job_id}.zip"
    if kind not in ("read", "write") or not path.exists():
        return error(404, "RESOURCE_NOT_FOUND", "the result is not available")
    return Response(path.read_bytes(), media_type="application/zip")

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
    if not st.charge(50):
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
        expr, ftype = cols.sql(node.get("api_name", ""))
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
