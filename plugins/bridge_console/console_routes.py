"""The console's routes: pages (HTML) and their JSON twins under /api, all behind Airflow's auth.

Imported by console_app.create_app in the API server only (plugins/.airflowignore keeps the plugin manager from
executing it elsewhere)."""

from __future__ import annotations

from typing import Annotated

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.common.dagbag import DagBagDep
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from airflow.models.dag import DagModel
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from bridge_console.console_app import PREFIX, bridge_db, data_docs_root, file_response, links, schedule_seconds
from include.console import actions, pages, queries
from include.console.catalog import REPLAY_PARAM, dag_of

RECONCILIATION_DAG = "reconcile_crm_erp"


class Selection(BaseModel):
    ids: list[int] = Field(min_length=1, max_length=1000)
    comment: str | None = Field(default=None, max_length=actions.MAX_COMMENT)


def visible_flows(user, session, conn) -> list[str]:
    """The flows whose DAG the person may read."""
    allowed = get_auth_manager().get_authorized_dag_ids(user=user, method="GET", session=session)
    return [f for f in queries.known_flows(conn) if dag_of(f) in allowed]


def readable_flow(user, flow: str) -> list[str]:
    """One flow asked for by name: a 403 unless the person may read its DAG's runs."""
    if not may(user, dag_of(flow)):
        raise HTTPException(403, f"no access to DAG {dag_of(flow)} (flow {flow})")
    return [flow]


def may(user, dag_id: str, method: str = "GET", entity=DagAccessEntity.RUN) -> bool:
    return get_auth_manager().is_authorized_dag(method=method, access_entity=entity, user=user,
                                                details=DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id)))


def actionable_flows(user, session, conn) -> list[str]:
    """The flows whose DAG the person may trigger: who may start the flow may replay or dismiss its records."""
    return [f for f in visible_flows(user, session, conn) if may(user, dag_of(f), "POST")]


def page(html: str) -> HTMLResponse:
    return HTMLResponse(html, headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


def common(user) -> dict:
    return {"base": PREFIX, "user": user.get_name(), "links": links()}


def overview_data(user, session) -> dict:
    with bridge_db() as conn:
        flows = visible_flows(user, session, conn)
        rows = queries.overview(conn, flows)
        series = queries.daily(conn, flows)
        trend = queries.reconciliation_trend(conn) if may(user, RECONCILIATION_DAG) else []
    dag_models = session.scalars(select(DagModel).where(DagModel.dag_id.in_({dag_of(f) for f in flows}))).all()
    return {"rows": rows, "every": schedule_seconds(dag_models), "series": series, "recon_history": trend}


def router() -> APIRouter:
    r = APIRouter()
    for register in (register_overview, register_runs, register_quarantine, register_reports, register_actions):
        register(r)
    return r


def register_overview(r: APIRouter) -> None:
    @r.get("/overview", response_class=HTMLResponse)
    def overview_page(user: GetUserDep, session: SessionDep):
        return page(pages.overview_page(**overview_data(user, session), **common(user)))

    @r.get("/api/overview")
    def overview_api(user: GetUserDep, session: SessionDep):
        data = overview_data(user, session)
        return jsonable_encoder({"flows": data["rows"], "schedule_seconds": data["every"]})


def register_runs(r: APIRouter) -> None:
    run_access = [Depends(requires_access_dag("GET", DagAccessEntity.RUN))]

    def detail(user, session, dag_id: str, run_id: str) -> dict:
        with bridge_db() as conn:
            flows = [f for f in visible_flows(user, session, conn) if dag_of(f) == dag_id]
            return queries.run_detail(conn, run_id, flows)

    @r.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse, dependencies=run_access)
    def run_page(dag_id: str, run_id: str, user: GetUserDep, session: SessionDep):
        return page(pages.render("run.html", title=f"{dag_id}: what run {run_id} did", dag_id=dag_id, run_id=run_id,
                                 detail=detail(user, session, dag_id, run_id), **common(user)))

    @r.get("/api/runs/{dag_id}/{run_id}", dependencies=run_access)
    def run_api(dag_id: str, run_id: str, user: GetUserDep, session: SessionDep):
        return jsonable_encoder(detail(user, session, dag_id, run_id))

    @r.get("/docs/{path:path}")
    def data_docs(path: str, user: GetUserDep):
        """A gate's GX Data Docs page (or its CSS / images): readable by who may read the flow's DAG."""
        flow = path.split("/", 1)[0]
        if not flow or not may(user, dag_of(flow)):
            raise HTTPException(403, f"no access to the Data Docs of {flow!r}")
        return file_response(data_docs_root(), path)


def register_quarantine(r: APIRouter) -> None:
    def listing(user, session, flow, reason, older_than_days, status) -> tuple[list[str], dict]:
        if status not in ("open", "replayed", "dismissed"):
            raise HTTPException(422, f"status must be open, replayed or dismissed, not {status!r}")
        with bridge_db() as conn:
            all_flows = visible_flows(user, session, conn)
            flows = readable_flow(user, flow) if flow else all_flows
            return all_flows, queries.quarantine(conn, flows, reason=reason or None, older_than_days=older_than_days,
                                                 status=status)

    @r.get("/quarantine", response_class=HTMLResponse)
    def quarantine_page(user: GetUserDep, session: SessionDep, flow: str | None = None, reason: str | None = None,
                        older_than_days: Annotated[int | None, Query(ge=0)] = None, status: str = "open"):
        all_flows, data = listing(user, session, flow, reason, older_than_days, status)
        return page(pages.render("quarantine.html", title="Quarantine", flows=all_flows, flow=flow, reason=reason,
                                 older_than_days=older_than_days, status=status, **data, **common(user)))

    @r.get("/api/quarantine")
    def quarantine_api(user: GetUserDep, session: SessionDep, flow: str | None = None, reason: str | None = None,
                       older_than_days: Annotated[int | None, Query(ge=0)] = None, status: str = "open"):
        return jsonable_encoder(listing(user, session, flow, reason, older_than_days, status)[1])


def register_reports(r: APIRouter) -> None:
    @r.get("/previews", response_class=HTMLResponse)
    def previews_page(user: GetUserDep, session: SessionDep, batch: str | None = None):
        with bridge_db() as conn:
            data = queries.previews(conn, visible_flows(user, session, conn), batch)
        return page(pages.render("previews.html", title="Dry runs", data=data, **common(user)))

    recon_access = [Depends(requires_access_dag("GET", DagAccessEntity.RUN, RECONCILIATION_DAG))]

    @r.get("/reconciliation", response_class=HTMLResponse, dependencies=recon_access)
    def reconciliation_page(user: GetUserDep, batch: str | None = None):
        with bridge_db() as conn:
            data = queries.reconciliation(conn, batch)
        return page(pages.reconciliation_page(data, **common(user)))

    @r.get("/api/reconciliation", dependencies=recon_access)
    def reconciliation_api(batch: str | None = None):
        with bridge_db() as conn:
            return jsonable_encoder(queries.reconciliation(conn, batch))


def json_only(request: Request) -> None:
    """Actions come from the console's script as JSON: a form another site posts cannot be one (no CORS here)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise HTTPException(415, "send the selection as application/json")


def register_actions(r: APIRouter) -> None:
    @r.get("/actions", response_class=HTMLResponse)
    def actions_page(user: GetUserDep, session: SessionDep):
        with bridge_db() as conn:
            rows = queries.actions(conn, visible_flows(user, session, conn))
        return page(pages.render("actions.html", title="Console actions", rows=rows, **common(user)))

    @r.get("/api/actions")
    def actions_api(user: GetUserDep, session: SessionDep):
        with bridge_db() as conn:
            return jsonable_encoder(queries.actions(conn, visible_flows(user, session, conn)))

    @r.post("/api/quarantine/dismiss", dependencies=[Depends(json_only)])
    def dismiss(body: Selection, user: GetUserDep, session: SessionDep):
        with bridge_db() as conn:
            try:
                done = actions.dismiss(conn, body.ids, user.get_name(), body.comment,
                                       actionable_flows(user, session, conn))
            except actions.ActionRefused as exc:
                raise HTTPException(403 if exc.forbidden else 409, str(exc)) from None
        return {"message": f"{done['dismissed']} entries dismissed ({', '.join(done['flows'])})"} | done

    @r.post("/api/quarantine/replay", dependencies=[Depends(json_only)])
    def replay(body: Selection, user: GetUserDep, session: SessionDep, dag_bag: DagBagDep, request: Request):
        return JSONResponse(replay_entries(body, user, session, dag_bag, request))


def replay_entries(body: Selection, user, session, dag_bag, request: Request) -> dict:
    """One DAG run per flow of the selection, started as Airflow's own trigger endpoint starts it, with
    `replay_quarantine` set; the console's audit row names the run. Refused (nothing started) when a DAG cannot
    replay, or the person may not trigger it."""
    from airflow.api_fastapi.core_api.datamodels.dag_run import TriggerDAGRunPostBody
    from airflow.api_fastapi.core_api.routes.public.dag_run import trigger_dag_run

    with bridge_db() as conn:
        try:
            comment = actions.clean_comment(body.comment, required=False)
            by_flow = actions.selected(conn, body.ids, actionable_flows(user, session, conn))
        except actions.ActionRefused as exc:
            raise HTTPException(403 if exc.forbidden else 409, str(exc)) from None
        started, paused = [], []
        for flow, chosen in by_flow.items():
            dag_id = dag_of(flow)
            dag = dag_bag.get_latest_version_of_dag(dag_id, session=session)
            if dag is None or REPLAY_PARAM not in dag.params:
                raise HTTPException(409, f"DAG {dag_id} has no {REPLAY_PARAM} param: flow {flow}'s records come "
                                         "back with its source's next full export, or are dismissed")
            note = f"replay of {len(chosen)} quarantined records from the integration console by {user.get_name()}"
            run = trigger_dag_run(dag_id, TriggerDAGRunPostBody(logical_date=None, conf={REPLAY_PARAM: True},
                                                                note=(note + (f": {comment}" if comment else ""))),
                                  dag_bag, user, session, request)
            actions.record(conn, "replay", user.get_name(), flow, chosen, comment, run.run_id)
            started.append(f"{dag_id} run {run.run_id}")
            if session.scalar(select(DagModel.is_paused).where(DagModel.dag_id == dag_id)):
                paused.append(dag_id)
        conn.commit()
    message = "replay started: " + "; ".join(started)
    if paused:
        message += f" — {', '.join(paused)} paused: the run waits until it is unpaused"
    return {"message": message, "runs": started, "paused": paused}
