"""Zoho CRM v8-compatible sandbox server (FastAPI). See README "CRM sandbox" and specs/zoho-crm-v8.md.

One process plays the three Zoho hosts (accounts, API, file upload): paths differ, so one base URL can
serve as all three. Non-Zoho control endpoints live under /__sandbox/ (config, faults, reset, stats).
Request handlers run on the event loop (SQLite is used from one thread); injected latency is awaited,
so concurrent requests overlap and the concurrency limit can be exceeded as on the real service.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import csv
import io
import json
import logging
import math
import os
import random
import secrets
import time
import zipfile
from dataclasses import asdict, dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from include.sandbox.crm import meta
from include.sandbox.crm.query import QueryError, compile_coql, compile_criteria
from include.sandbox.crm.records import RecordWriter, overall_status
from include.sandbox.crm.store import USER, Store

log = logging.getLogger("crm_sandbox")
ORG_ID = "60012345678"
MAX_WRITE = 100
MAX_FIELDS = 50
DISCRETE_LIMIT = 2000
TOKEN_LIMIT = 100_000
FULL_SCOPE = ("ZohoCRM.modules.ALL,ZohoCRM.settings.ALL,ZohoCRM.users.READ,ZohoCRM.org.READ,ZohoCRM.coql.READ,"
              "ZohoCRM.bulk.ALL,ZohoCRM.notifications.ALL,ZohoFiles.files.ALL")


@dataclass
class Config:
    """Runtime settings: limits like Zoho's and fault injection, changeable through PUT /__sandbox/config."""
    concurrency_limit: int = 10          # concurrent API requests per org (Zoho Standard edition)
    credits_per_day: int = 200_000       # API credits per rolling 24 h
    token_ttl_seconds: int = 3600
    token_mints_per_10min: int = 10      # access tokens one refresh token may mint per 10 minutes
    latency_ms: int = 0                  # added to every API request
    error_rate: float = 0.0              # share of API requests answered 500 before processing
    drop_rate: float = 0.0               # share of API requests processed, then the connection dropped
    burst_429: int = 0                   # the next N API requests get 429
    fault_methods: list[str] = field(default_factory=lambda: ["GET", "POST", "PUT", "DELETE"])
    fault_seed: int | None = None


class SandboxState:
    def __init__(self, data_dir: str):
        self.store = Store(data_dir)
        self.writer = RecordWriter(self.store)
        self.config = Config(**json.loads(self.store.kv_get("config", "{}")))
        self.rng = random.Random(self.config.fault_seed)
        self.in_flight = 0
        self.credits: collections.deque[tuple[float, int]] = collections.deque()
        self.stats: collections.Counter = collections.Counter()
        self.client_id = os.environ.get("ZOHO_CLIENT_ID", "1000.SANDBOXCLIENT")
        self.client_secret = os.environ.get("ZOHO_CLIENT_SECRET", "sandbox-secret")
        self.refresh_tokens = {os.environ.get("ZOHO_REFRESH_TOKEN", "1000.sandbox.refresh"): FULL_SCOPE,
                               "1000.sandbox.readonly": "ZohoCRM.modules.READ,ZohoCRM.settings.READ"}

    def set_config(self, changes: dict) -> Config:
        unknown = set(changes) - set(asdict(self.config))
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        self.config = Config(**(asdict(self.config) | changes))
        self.rng = random.Random(self.config.fault_seed)
        self.store.kv_set("config", json.dumps(asdict(self.config)))
        return self.config

    def charge(self, cost: int) -> bool:
        now = time.time()
        while self.credits and self.credits[0][0] < now - 86400:
            self.credits.popleft()
        if sum(c for _, c in self.credits) + cost > self.config.credits_per_day:
            return False
        self.credits.append((now, cost))
        return True


def error(status: int, code: str, message: str, details: dict | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "details": details or {}, "message": message, "status": "error"}, status)


def too_many() -> JSONResponse:
    return error(429, "TOO_MANY_REQUESTS", "too many requests continuously, please try again after some time")


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
            return await too_many()(scope, receive, send)
        st.in_flight += 1
        try:
            if cfg.latency_ms:
                await asyncio.sleep(cfg.latency_ms / 1000 * (0.5 + st.rng.random()))
            if faulty and cfg.burst_429 > 0:
                cfg.burst_429 -= 1
                st.stats["injected_429"] += 1
                return await too_many()(scope, receive, send)
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

    def check_token(self, scope) -> JSONResponse | None:
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        auth = headers.get("authorization", "")
        if not auth.startswith("Zoho-oauthtoken "):
            return error(401, "AUTHENTICATION_FAILURE", "Authentication failed")
        row = self.state.store.query("SELECT scope, expires_ts FROM tokens WHERE token = ?", [auth[16:].strip()])
        if not row or row[0][1] < time.time():
            self.state.stats["invalid_token"] += 1
            return error(401, "INVALID_TOKEN", "invalid oauth token")
        needed = scope_for(scope["path"])
        if not any(s.startswith(needed) for s in row[0][0].split(",")):
            return error(401, "OAUTH_SCOPE_MISMATCH", "invalid oauth scope to access this URL")
        return None


def create_app(data_dir: str) -> FastAPI:
    state = SandboxState(data_dir)
    app = FastAPI(title="Zoho CRM v8 sandbox", docs_url="/__sandbox/docs", openapi_url="/__sandbox/openapi.json")
    app.state.sandbox = state
    store, writer = state.store, state.writer

    def module_or_error(name: str) -> meta.Module | JSONResponse:
        mod = meta.modules().get(name)
        return mod if mod else error(400, "INVALID_MODULE", "the module name given seems to be invalid",
                                     {"resource_path_index": 0})

    async def body_json(request: Request) -> dict | JSONResponse:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return error(400, "INVALID_DATA", "body is not valid JSON")
        return body if isinstance(body, dict) else error(400, "INVALID_DATA", "body must be a JSON object")

    # ------------------------------------------------------------------------------------------ OAuth
    @app.post("/oauth/v2/token")
    async def token(request: Request):
        form = dict(request.query_params)
        if "application/x-www-form-urlencoded" in request.headers.get("content-type", ""):
            form |= {k: str(v) for k, v in (await request.form()).items()}
        if form.get("grant_type") != "refresh_token":
            return {"error": "unsupported_grant_type"}
        if form.get("client_id") != state.client_id or form.get("client_secret") != state.client_secret:
            return {"error": "invalid_client"}
        refresh = form.get("refresh_token", "")
        scope = state.refresh_tokens.get(refresh)
        if scope is None:
            return {"error": "invalid_code"}
        now = time.time()
        minted = store.query("SELECT count(*) FROM token_mints WHERE refresh_token = ? AND ts > ?",
                             [refresh, now - 600])
        if minted[0][0] >= state.config.token_mints_per_10min:
            return JSONResponse({"error": "Access Denied", "error_description":
                                 "You have made too many requests continuously. Please try again after some time."},
                                400)
        access = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
        with store.transaction():
            store.db.execute("INSERT INTO tokens VALUES (?, ?, ?, ?)",
                             (access, refresh, scope, now + state.config.token_ttl_seconds))
            store.db.execute("INSERT INTO token_mints VALUES (?, ?)", (refresh, now))
        state.stats["tokens_minted"] += 1
        return {"access_token": access, "scope": scope, "api_domain": str(request.base_url).rstrip("/"),
                "token_type": "Bearer", "expires_in": state.config.token_ttl_seconds}

    # --------------------------------------------------------------------------------------- metadata
    @app.get("/crm/v8/settings/modules")
    async def settings_modules():
        state.charge(1)
        return {"modules": [{"api_name": m.api_name, "module_name": m.api_name,
                             "plural_label": m.api_name.replace("_", " "),
                             "singular_label": m.singular, "api_supported": True, "generated_type": "default",
                             "modified_time": "2026-01-01T00:00:00+08:00", "id": str(5843104000000002000 + n),
                             "status": "visible", "creatable": True, "editable": True, "deletable": True,
                             "viewable": True}
                            for n, m in enumerate(meta.modules().values())]}

    def field_json(f: meta.Field, n: int) -> dict:
        out = {"api_name": f.api_name, "field_label": f.api_name.replace("_", " "),
               "display_label": f.api_name.replace("_", " "), "data_type": f.type,
               "json_type": meta.JSON_TYPES.get(f.type, "string"), "id": str(5843104000000003000 + n),
               "system_mandatory": f.mandatory, "custom_field": f.custom, "read_only": f.read_only,
               "field_read_only": f.read_only, "visible": True, "length": f.length or meta.TEXT_TYPES.get(f.type, 255),
               "unique": {"casesensitive": "false"} if f.unique else {}, "pick_list_values": [], "lookup": {},
               "subform": None}
        if f.picklist:
            out["pick_list_values"] = [{"display_value": v, "actual_value": v, "id": str(5843104000000004000 + i)}
                                       for i, v in enumerate(f.picklist)]
        if f.lookup:
            out["lookup"] = {"module": {"api_name": f.lookup, "id": str(5843104000000002000)},
                             "display_label": f.lookup, "api_name": f.api_name, "id": out["id"]}
        if f.type == "subform":
            out["subform"] = {"module": f.api_name, "id": out["id"]}
        return out

    @app.get("/crm/v8/settings/fields")
    async def settings_fields(module: str = ""):
        mod = module_or_error(module)
        if isinstance(mod, JSONResponse):
            return mod
        state.charge(1)
        fields = [field_json(f, n) for n, f in enumerate(mod.fields.values())]
        fields += [{"api_name": s, "field_label": s.replace("_", " "), "display_label": s.replace("_", " "),
                    "data_type": "datetime" if s.endswith("Time") else "ownerlookup", "json_type":
                    "string" if s.endswith("Time") else "jsonobject", "id": str(5843104000000005000 + i),
                    "system_mandatory": False, "custom_field": False, "read_only": s != "Owner",
                    "field_read_only": s != "Owner", "visible": True, "length": 120, "pick_list_values": [],
                    "lookup": {}, "subform": None}
                   for i, s in enumerate(("Created_Time", "Modified_Time", "Created_By", "Modified_By", "Owner"))]
        return {"fields": fields}

    @app.get("/crm/v8/settings/layouts")
    async def settings_layouts(module: str = ""):
        mod = module_or_error(module)
        if isinstance(mod, JSONResponse):
            return mod
        return {"layouts": [{"id": "5843104000000091055", "name": "Standard", "status": "active",
                             "sections": [{"api_name": "Info", "fields": [field_json(f, n) for n, f in
                                                                           enumerate(mod.fields.values())]}]}]}

    @app.get("/crm/v8/settings/related_lists")
    async def related_lists(module: str = ""):
        return {"related_lists": []}

    @app.get("/crm/v8/users")
    async def users(type: str = "AllUsers"):
        state.charge(1)
        return {"users": [{"id": USER["id"], "email": USER["email"], "full_name": USER["name"],
                           "first_name": "Integration", "last_name": "User", "status": "active",
                           "time_zone": "Asia/Shanghai", "role": {"name": "CEO", "id": "5843104000000026005"},
                           "profile": {"name": "Administrator", "id": "5843104000000026011"}}],
                "info": {"per_page": 200, "count": 1, "page": 1, "more_records": False}}

    @app.get("/crm/v8/org")
    async def org():
        state.charge(1)
        return {"org": [{"id": ORG_ID, "zgid": ORG_ID, "company_name": "上海华东智能装备有限公司 (demo)",
                         "currency": "Chinese Yuan - CNY", "currency_symbol": "¥", "iso_code": "CNY",
                         "time_zone": "Asia/Shanghai", "country_code": "CN", "primary_email": "admin@demo-company.cn",
                         "mc_status": True, "type": "sandbox"}]}

    # ------------------------------------------------------------------------------------------ COQL
    @app.post("/crm/v8/coql")
    async def coql(request: Request):
        body = await body_json(request)
        if isinstance(body, JSONResponse):
            return body
        if not state.charge(1):
            return too_many()
        try:
            q = compile_coql(body.get("select_query"))
        except QueryError as exc:
            return error(400, exc.code, exc.message, exc.details)
        rows = store.query(q["sql"], q["params"])
        more = len(rows) > q["limit"]
        data = [project(json.loads(d), q["columns"]) for _, d in rows[:q["limit"]]]
        if not data:
            return Response(status_code=204)
        return {"data": data, "info": {"count": len(data), "more_records": more}}

    def project(record: dict, fields: list[str]) -> dict:
        out = {name: record.get(name) for name in fields}
        out["id"] = record["id"]
        return out

    # ---------------------------------------------------------------------------------- bulk + upload
    @app.post("/crm/v8/upload")
    async def upload(request: Request):
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
        file_id = str(store.new_id())
        (store.data_dir / "files" / f"{file_id}.zip").write_bytes(content)
        with store.transaction():
            store.db.execute("INSERT INTO files VALUES (?, ?, ?)", (file_id, upload_file.filename, time.time()))
        return JSONResponse({"status": "success", "code": "FILE_UPLOAD_SUCCESS", "message": "file uploaded.",
                             "details": {"file_id": file_id, "created_time": meta.now_iso()}}, 200)

    def job_row(job_id: str, kind: str) -> dict | None:
        rows = store.query("SELECT state, request, result, created_ts FROM jobs WHERE id = ? AND kind = ?",
                           [job_id, kind])
        if not rows:
            return None
        state_, req, result, created = rows[0]
        return {"state": state_, "request": json.loads(req), "result": json.loads(result) if result else None,
                "created_time": meta.now_iso(created)}

    def save_job(job_id: str, kind: str, state_: str, request_: dict, result: dict | None = None) -> None:
        with store.transaction():
            store.db.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, coalesce((SELECT created_ts FROM "
                             "jobs WHERE id = ?), ?))", (job_id, kind, state_, json.dumps(request_),
                                                         json.dumps(result) if result else None, job_id, time.time()))

    @app.post("/crm/bulk/v8/write")
    async def bulk_write_create(request: Request):
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
            if not (store.data_dir / "files" / f"{res.get('file_id')}.zip").exists():
                return error(400, "INVALID_DATA", "file_id is invalid", {"api_name": "file_id"})
            if op in ("update", "upsert") and not res.get("find_by"):
                return error(400, "MANDATORY_NOT_FOUND", "find_by is required", {"api_name": "find_by"})
        if not state.charge(50):
            return too_many()
        job_id = str(store.new_id())
        save_job(job_id, "write", "ADDED", body)
        asyncio.get_running_loop().create_task(run_bulk_write(job_id, body))
        return JSONResponse({"status": "success", "code": "SUCCESS", "message": "success",
                             "details": {"id": job_id, "created_by": USER}}, 201)

    async def run_bulk_write(job_id: str, body: dict) -> None:
        await asyncio.sleep(0.05)
        save_job(job_id, "write", "IN PROGRESS", body)
        summaries, outcome_rows = [], []
        try:
            for res in body["resource"]:
                summary, rows = await bulk_write_resource(body["operation"], res)
                summaries.append(summary)
                outcome_rows.extend(rows)
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
                buf = io.StringIO()
                csv.writer(buf).writerows(outcome_rows)
                zf.writestr(f"{job_id}.csv", buf.getvalue())
            (store.data_dir / "bulk" / f"write-{job_id}.zip").write_bytes(out.getvalue())
            save_job(job_id, "write", "COMPLETED", body, {"resource": summaries})
        except Exception as exc:  # a job failure is reported in the job, like Zoho's FAILED state
            log.exception("bulk write %s failed", job_id)
            save_job(job_id, "write", "FAILED", body, {"resource": summaries, "error": str(exc)})

    async def bulk_write_resource(op: str, res: dict) -> tuple[dict, list[list]]:
        module = meta.modules()[res["module"]["api_name"]]
        with zipfile.ZipFile(store.data_dir / "files" / f"{res['file_id']}.zip") as zf:
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
                    ids = store.find_ids(module.api_name, res["find_by"], item.get(res["find_by"]))
                    if ids:
                        item["id"] = str(ids[0])
            results = writer.write(module.api_name, items, mode, [res["find_by"]] if res.get("find_by") else None)
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

    @app.get("/crm/bulk/v8/write/{job_id}")
    async def bulk_write_status(job_id: str):
        job = job_row(job_id, "write")
        if job is None:
            return error(404, "RESOURCE_NOT_FOUND", "the requested job does not exist")
        data = {"id": job_id, "operation": job["request"]["operation"], "status": job["state"],
                "character_encoding": "UTF-8", "created_by": USER, "created_time": job["created_time"],
                "resource": (job["result"] or {}).get("resource") or
                [{"status": job["state"], "type": "data", "module": r["module"]} for r in job["request"]["resource"]]}
        if job["state"] == "COMPLETED":
            data["result"] = {"download_url": f"/crm/bulk/v8/write/{job_id}/result"}
        return {"data": [data]}

    @app.get("/crm/bulk/v8/{kind}/{job_id}/result")
    async def bulk_result(kind: str, job_id: str):
        path = store.data_dir / "bulk" / f"{kind}-{job_id}.zip"
        if kind not in ("read", "write") or not path.exists():
            return error(404, "RESOURCE_NOT_FOUND", "the result is not available")
        return Response(path.read_bytes(), media_type="application/zip")

    @app.post("/crm/bulk/v8/read")
    async def bulk_read_create(request: Request):
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
        if not state.charge(50):
            return too_many()
        job_id = str(store.new_id())
        save_job(job_id, "read", "ADDED", body)
        asyncio.get_running_loop().create_task(run_bulk_read(job_id, body, mod))
        return JSONResponse({"data": [{"status": "success", "code": "ADDED_SUCCESSFULLY",
                                       "message": "Added successfully.",
                                       "details": {"id": job_id, "operation": "read", "state": "ADDED",
                                                   "created_by": USER, "created_time": meta.now_iso()}}],
                             "info": {}}, 201)

    def bulk_criteria_sql(mod: meta.Module, criteria: dict | None) -> tuple[str, list]:
        from include.sandbox.crm.query import Columns
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

    async def run_bulk_read(job_id: str, body: dict, mod: meta.Module) -> None:
        await asyncio.sleep(0.05)
        save_job(job_id, "read", "IN PROGRESS", body)
        query = body["query"]
        fields = query.get("fields") or ["id"] + list(mod.fields)
        page = int(query.get("page") or 1)
        cond, params = bulk_criteria_sql(mod, query.get("criteria"))
        rows = store.query(f"SELECT data FROM records WHERE module = ? AND {cond} ORDER BY id LIMIT ? OFFSET ?",
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
        (store.data_dir / "bulk" / f"read-{job_id}.zip").write_bytes(blob.getvalue())
        save_job(job_id, "read", "COMPLETED", body,
                 {"page": page, "count": min(len(rows), 200_000), "per_page": 200_000, "more_records": more,
                  "download_url": f"/crm/bulk/v8/read/{job_id}/result"})

    @app.get("/crm/bulk/v8/read/{job_id}")
    async def bulk_read_status(job_id: str):
        job = job_row(job_id, "read")
        if job is None:
            return error(404, "RESOURCE_NOT_FOUND", "the requested job does not exist")
        data = {"id": job_id, "operation": "read", "state": job["state"], "query": job["request"]["query"],
                "created_by": USER, "created_time": job["created_time"], "file_type": "csv"}
        if job["result"]:
            data["result"] = job["result"]
        return {"data": [data]}

    # ------------------------------------------------------------------------------ watch (notifications)
    @app.post("/crm/v8/actions/watch")
    async def watch(request: Request):
        body = await body_json(request)
        if isinstance(body, JSONResponse):
            return body
        results = []
        with store.transaction():
            for ch in body.get("watch") or []:
                expiry = meta.parse_datetime(ch.get("channel_expiry") or "")
                expiry_ts = expiry.timestamp() if expiry else time.time() + 86400
                store.db.execute("INSERT OR REPLACE INTO watch_channels VALUES (?, ?, ?, ?, ?)",
                                 (str(ch.get("channel_id")), json.dumps(ch.get("events") or []), ch.get("notify_url"),
                                  ch.get("token"), min(expiry_ts, time.time() + 7 * 86400)))
                results.append({"code": "SUCCESS", "status": "success",
                                "message": "Successfully subscribed for actions-watch of the given module",
                                "details": {"events": [{"channel_expiry": meta.now_iso(expiry_ts), "resource_uri":
                                            f"{str(request.base_url).rstrip('/')}/crm/v8/{e.split('.')[0]}",
                                            "resource_id": None, "resource_name": e.split(".")[0],
                                            "channel_id": str(ch.get("channel_id"))} for e in ch.get("events") or []]}})
        return {"watch": results}

    async def notify(module: str, operation: str, ids: list[str], request: Request) -> None:
        import httpx

        rows = store.query("SELECT channel_id, events, notify_url, token FROM watch_channels "
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
                    state.stats["notifications_sent"] += 1
                except httpx.HTTPError as exc:
                    log.warning("notification to %s failed: %s", url, exc)

    # ------------------------------------------------------------------------------------------ records
    def write_response(module: str, mode: str, body: dict, request: Request, unmodified_since: float | None = None):
        items = body.get("data")
        if not isinstance(items, list) or not items:
            return error(400, "REQUIRED_PARAM_MISSING", "data is missing", {"param_name": "data"})
        if len(items) > MAX_WRITE:
            return error(400, "LIMIT_EXCEEDED", f"the maximum number of records is {MAX_WRITE}",
                         {"limit": MAX_WRITE})
        if not state.charge(max(1, math.ceil(len(items) / 10))):
            return too_many()
        dup = body.get("duplicate_check_fields")
        if dup is not None:
            mod = meta.modules()[module]
            if not isinstance(dup, list) or any(d not in mod.fields for d in dup):
                return error(400, "INVALID_DATA", "invalid duplicate_check_fields",
                             {"api_name": "duplicate_check_fields"})
        results = writer.write(module, items, mode, dup, unmodified_since)
        inserted = [r["details"]["id"] for r in results if r["status"] == "success" and
                    r["message"] == "record added"]
        updated = [r["details"]["id"] for r in results if r["status"] == "success" and
                   r["message"] == "record updated"]
        for op, ids in (("create", inserted), ("edit", updated)):
            if ids:
                asyncio.get_running_loop().create_task(notify(module, op, ids, request))
        return JSONResponse({"data": results}, overall_status(mode, results))

    @app.get("/crm/v8/{module}/deleted")
    async def deleted(module: str, type: str = "all", page: int = 1, per_page: int = 200):
        mod = module_or_error(module)
        if isinstance(mod, JSONResponse):
            return mod
        state.charge(1)
        rows = store.deleted(module, type, (page - 1) * per_page, per_page + 1)
        if not rows:
            return Response(status_code=204)
        return {"data": rows[:per_page], "info": {"per_page": per_page, "count": min(len(rows), per_page),
                                                   "page": page, "more_records": len(rows) > per_page}}

    @app.get("/crm/v8/{module}/search")
    async def search(module: str, request: Request, criteria: str | None = None, email: str | None = None,
                     phone: str | None = None, word: str | None = None, page: int = 1, per_page: int = 200):
        mod = module_or_error(module)
        if isinstance(mod, JSONResponse):
            return mod
        if not state.charge(1):
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
        rows = store.query(f"SELECT data FROM records WHERE module = ? AND {cond} ORDER BY id LIMIT ? OFFSET ?",
                           [module, *params, per_page + 1, (page - 1) * per_page])
        if not rows:
            return Response(status_code=204)
        fields = [f for f in (request.query_params.get("fields") or "").split(",") if f]
        data = [project(json.loads(d), fields) if fields else json.loads(d) for (d,) in rows[:per_page]]
        return {"data": data, "info": {"per_page": per_page, "count": len(data), "page": page,
                                       "more_records": len(rows) > per_page}}

    async def handle_write(module: str, mode: str, request: Request, record_id: str | None = None):
        """Insert / update / upsert routes: module check, body, then the per-record write."""
        mod = module_or_error(module)
        if isinstance(mod, JSONResponse):
            return mod
        body = await body_json(request)
        if isinstance(body, JSONResponse):
            return body
        if record_id is not None:  # PUT /{module}/{id}: the id (or external id) comes from the path
            rid = external_id(module, record_id, request)
            if isinstance(rid, JSONResponse):
                return rid
            items = body.get("data")
            if isinstance(items, list) and len(items) == 1 and isinstance(items[0], dict):
                items[0]["id"] = str(rid or record_id)
        since = unmodified_since(request) if mode == "update" else None
        return write_response(module, mode, body, request, since)

    @app.post("/crm/v8/{module}/upsert")
    async def upsert(module: str, request: Request):
        return await handle_write(module, "upsert", request)

    def external_id(module: str, value: str, request: Request) -> int | None | JSONResponse:
        ext = request.headers.get("X-EXTERNAL")
        if not ext:
            return int(value) if value.isdigit() else None
        mod_name, _, field_name = ext.partition(".")
        if mod_name != module or field_name not in meta.modules()[module].fields:
            return error(400, "INVALID_DATA", "the X-EXTERNAL header names an unknown field", {"header": "X-EXTERNAL"})
        ids = store.find_ids(module, field_name, value)
        return ids[0] if ids else None

    @app.get("/crm/v8/{module}/{record_id}")
    async def get_record(module: str, record_id: str, request: Request):
        mod = module_or_error(module)
        if isinstance(mod, JSONResponse):
            return mod
        state.charge(1)
        rid = external_id(module, record_id, request)
        if isinstance(rid, JSONResponse):
            return rid
        record = store.get(module, rid) if rid else None
        if record is None:
            return Response(status_code=204)
        fields = [f for f in (request.query_params.get("fields") or "").split(",") if f]
        return {"data": [project(record, fields) if fields else record]}

    @app.put("/crm/v8/{module}/{record_id}")
    async def update_one(module: str, record_id: str, request: Request):
        return await handle_write(module, "update", request, record_id)

    @app.delete("/crm/v8/{module}/{record_id}")
    async def delete_one(module: str, record_id: str):
        return await delete_records(module, record_id)

    @app.get("/crm/v8/{module}")
    async def list_records(module: str, request: Request):
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
                return error(400, "INVALID_DATA", "If-Modified-Since must be an ISO 8601 datetime with offset",
                             {"header": "If-Modified-Since"})
            since_ts = math.floor(parsed.timestamp()) + 1  # Zoho's times have second resolution
        if not state.charge(1):
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
            if delivered >= TOKEN_LIMIT:
                return error(400, "PAGINATION_LIMIT_EXCEEDED",
                             f"cannot fetch more than {TOKEN_LIMIT} records with page_token", {"limit": TOKEN_LIMIT})
            rows = store.page(module, columns[sort_by], sort_order == "desc", per_page + 1, after=after,
                              since_ts=since_ts)
        else:
            if page * per_page > DISCRETE_LIMIT:
                return error(400, "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
                             f"cannot fetch more than {DISCRETE_LIMIT} records with page; use page_token",
                             {"limit": DISCRETE_LIMIT})
            delivered = (page - 1) * per_page
            rows = store.page(module, columns[sort_by], sort_order == "desc", per_page + 1, offset=delivered,
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
        data = [project(json.loads(r[2]), fields) for r in rows]
        return {"data": data, "info": {"per_page": per_page, "count": len(data), "page": page if not token else None,
                                       "sort_by": sort_by, "sort_order": sort_order, "more_records": more,
                                       "next_page_token": next_token, "previous_page_token": token,
                                       "page_token_expiry": meta.now_iso(expiry) if next_token else None}}

    @app.post("/crm/v8/{module}")
    async def insert(module: str, request: Request):
        return await handle_write(module, "insert", request)

    def unmodified_since(request: Request) -> float | None:
        header = request.headers.get("If-Unmodified-Since")
        parsed = meta.parse_datetime(header) if header else None
        return parsed.timestamp() if parsed else None

    @app.put("/crm/v8/{module}")
    async def update(module: str, request: Request):
        return await handle_write(module, "update", request)

    @app.delete("/crm/v8/{module}")
    async def delete_records(module: str, ids: str = ""):
        mod = module_or_error(module)
        if isinstance(mod, JSONResponse):
            return mod
        id_list = [i for i in ids.split(",") if i]
        if not id_list:
            return error(400, "REQUIRED_PARAM_MISSING", "ids is missing", {"param_name": "ids"})
        if len(id_list) > MAX_WRITE:
            return error(400, "LIMIT_EXCEEDED", f"the maximum number of records is {MAX_WRITE}", {"limit": MAX_WRITE})
        state.charge(max(1, math.ceil(len(id_list) / 10)))
        results = []
        with store.transaction():
            for rid in id_list:
                if rid.isdigit() and store.delete(module, int(rid)):
                    results.append({"code": "SUCCESS", "details": {"id": rid}, "message": "record deleted",
                                    "status": "success"})
                else:
                    results.append({"code": "INVALID_DATA", "details": {"id": rid},
                                    "message": "the related id given seems to be invalid", "status": "error"})
        return JSONResponse({"data": results}, overall_status("delete", results))

    # --------------------------------------------------------------------------------- sandbox control
    @app.get("/__sandbox/health")
    async def health():
        return {"status": "ok", "records": store.count()}

    @app.get("/__sandbox/config")
    async def get_config():
        return asdict(state.config)

    @app.put("/__sandbox/config")
    async def put_config(request: Request):
        body = await body_json(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            return asdict(state.set_config(body))
        except (TypeError, ValueError) as exc:
            return error(400, "INVALID_DATA", str(exc))

    @app.post("/__sandbox/reset")
    async def reset(request: Request):
        """Wipe all data, restore default limits and no faults; reseed from the demo company unless empty."""
        body = await body_json(request)
        if isinstance(body, JSONResponse):
            return body
        store.reset()
        state.set_config(asdict(Config()))
        state.credits.clear()
        state.stats.clear()
        counts = {}
        if body.get("seed", True):
            from include.sandbox.crm.seed import seed_demo_company
            counts = seed_demo_company(writer, customers=int(body.get("customers", 200)),
                                       skus=int(body.get("skus", 1000)), seed=int(body.get("seed_value", 42)))
        return {"status": "reset", "records": counts}

    @app.post("/__sandbox/tokens/expire")
    async def expire_tokens():
        with store.transaction():
            n = store.db.execute("UPDATE tokens SET expires_ts = 0").rowcount
        return {"expired": n}

    @app.get("/__sandbox/stats")
    async def stats():
        return {"stats": dict(state.stats), "in_flight": state.in_flight,
                "credits_used_24h": sum(c for _, c in state.credits),
                "records": {m: store.count(m) for m in meta.modules()}}

    @app.api_route("/crm/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    async def unknown(rest: str):
        return error(404, "INVALID_URL_PATTERN", "Please check if the URL trying to access is a correct one")

    return ZohoGate(app, state)


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
