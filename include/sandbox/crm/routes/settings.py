"""Metadata (modules, fields, layouts, users, org) and COQL queries."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from include.sandbox.crm import meta
from include.sandbox.crm.query import TIME_FIRST_MAX, QueryError, compile_coql
from include.sandbox.crm.state import ORG_ID, ZGID, Sandbox, body_json, error, module_or_error, project, too_many
from include.sandbox.crm.store import USERS

router = APIRouter()


@router.get("/crm/v8/settings/modules")
async def settings_modules(st: Sandbox):
    st.charge(1)
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
    if f.decimals is not None:  # crm-oas v8.0/fields.json: decimal_place; currency {rounding_option, precision}
        out["decimal_place"] = f.decimals
        if f.type == "currency":
            out["currency"] = {"rounding_option": "normal", "precision": f.decimals}
    if f.type == "textarea":
        out["textarea"] = {"type": "small" if out["length"] <= meta.SMALL_TEXTAREA else "large"}
    if f.picklist:
        out["pick_list_values"] = [{"display_value": v, "actual_value": v, "id": str(5843104000000004000 + i)}
                                   for i, v in enumerate(f.picklist)]
    if f.lookup:
        out["lookup"] = {"module": {"api_name": f.lookup, "id": str(5843104000000002000)},
                         "display_label": f.lookup, "api_name": f.api_name, "id": out["id"]}
    if f.type == "subform":
        out["subform"] = {"module": f.api_name, "id": out["id"]}
    return out

@router.get("/crm/v8/settings/fields")
async def settings_fields(st: Sandbox, module: str = ""):
    mod = module_or_error(module)
    if isinstance(mod, JSONResponse):
        return mod
    st.charge(1)
    fields = [field_json(f, n) for n, f in enumerate(mod.fields.values())]
    fields += [{"api_name": s, "field_label": s.replace("_", " "), "display_label": s.replace("_", " "),
                "data_type": "datetime" if s.endswith("Time") else "ownerlookup", "json_type":
                "string" if s.endswith("Time") else "jsonobject", "id": str(5843104000000005000 + i),
                "system_mandatory": False, "custom_field": False, "read_only": s != "Owner",
                "field_read_only": s != "Owner", "visible": True, "length": 120, "pick_list_values": [],
                "lookup": {}, "subform": None}
               for i, s in enumerate(("Created_Time", "Modified_Time", "Created_By", "Modified_By", "Owner"))]
    return {"fields": fields}

@router.get("/crm/v8/settings/layouts")
async def settings_layouts(module: str = ""):
    mod = module_or_error(module)
    if isinstance(mod, JSONResponse):
        return mod
    return {"layouts": [{"id": "5843104000000091055", "name": "Standard", "status": "active",
                         "sections": [{"api_name": "Info", "fields": [field_json(f, n) for n, f in
                                                                       enumerate(mod.fields.values())]}]}]}

@router.get("/crm/v8/settings/related_lists")
async def related_lists(module: str = ""):
    return {"related_lists": []}

@router.get("/crm/v8/users")
async def users(request: Request, st: Sandbox, type: str = "AllUsers"):
    """The org's users; type=CurrentUser: the user whose token this is."""
    st.charge(1)
    me = (request.scope.get("zoho_user") or USERS[0])["id"]
    users = [{"id": u["id"], "email": u["email"], "full_name": u["name"], "status": "active",
              "time_zone": "Asia/Shanghai", "role": {"name": u.get("role", "CEO")},
              "profile": {"name": u.get("profile", "Administrator")}}
             for u in USERS if type != "CurrentUser" or u["id"] == me]
    return {"users": users, "info": {"per_page": 200, "count": len(users), "page": 1, "more_records": False}}

@router.get("/crm/v8/org")
async def org(st: Sandbox):
    st.charge(1)
    return {"org": [{"id": ORG_ID, "zgid": ZGID, "company_name": "上海华东智能装备有限公司 (demo)",
                     "currency": "Chinese Yuan - CNY", "currency_symbol": "¥", "iso_code": "CNY",
                     "time_zone": "Asia/Shanghai", "country_code": "CN", "primary_email": "admin@demo-company.cn",
                     "mc_status": True, "type": "Sandbox",  # one of Bigin, Production, Developer, Sandbox
                     # zoho/crm-oas v8.0/org.json License_Details: paid_type is the edition (limits by edition)
                     "license_details": {"paid": True, "paid_type": st.config.edition, "paid_expiry": None,
                                         "users_license_purchased": 10, "trial_type": None, "trial_expiry": None,
                                         "trial_action": None}}]}

@router.post("/crm/v8/coql")
async def coql(request: Request, st: Sandbox):
    body = await body_json(request)
    if isinstance(body, JSONResponse):
        return body
    try:
        q = compile_coql(body.get("select_query"))
    except QueryError as exc:
        return error(400, exc.code, exc.message, exc.details)
    if not st.charge(coql_credits(q["limit"])):
        return too_many()
    sql, params = q["sql"], q["params"]
    if q.get("probe") and st.store.query(*q["probe"])[0][0] <= TIME_FIRST_MAX:
        sql, params = q["time_sql"], q["time_params"]
    rows = st.store.query(sql, params)
    more = len(rows) > q["limit"]
    data = [project(json.loads(d), q["columns"]) for _, d in rows[:q["limit"]]]
    if not data:
        return Response(status_code=204)
    return {"data": data, "info": {"count": len(data), "more_records": more}}


def coql_credits(limit: int) -> int:
    """Zoho's COQL credits by the query's LIMIT: up to 200 records 1, up to 1,000 2, up to 2,000 3."""
    return 1 if limit <= 200 else 2 if limit <= 1000 else 3
