"""What the console may change, each audited in bridge.console_action (who, when, why, which entries, which run).

Dismiss marks open quarantine entries dismissed, with the person and their reason (engine.resolve_quarantine, as
every other resolution). Replay writes nothing itself: the plugin triggers the flow's DAG with its
`replay_quarantine` param — the same run an operator starts by hand — and this records who asked for it."""

from __future__ import annotations

from include.bridge import engine
from include.console import queries
from include.console.catalog import dag_of

MAX_COMMENT = 2000


class ActionRefused(ValueError):
    """The action cannot be taken as asked (the message says why); nothing was changed. `forbidden`: the person
    may not act on what was selected (an HTTP 403), rather than a selection that is stale or incomplete (409)."""

    def __init__(self, message: str, forbidden: bool = False):
        super().__init__(message)
        self.forbidden = forbidden


def selected(conn, ids: list[int], flows_allowed: list[str]) -> dict[str, list[dict]]:
    """The open entries `ids` name, by flow. Refused when an id is unknown, not open any more, or of a flow the
    person may not act on — all or nothing, so a stale page never acts on part of what it showed."""
    if not ids:
        raise ActionRefused("no quarantine entries selected")
    found = {e["id"]: e for e in queries.entries(conn, ids)}
    missing = sorted(set(ids) - set(found))
    if missing:
        raise ActionRefused(f"no quarantine entries {missing}")
    closed = sorted(i for i, e in found.items() if e["status"] != "open")
    if closed:
        raise ActionRefused(f"entries {closed} are not open any more (reload the page)")
    denied = sorted({e["flow"] for e in found.values()} - set(flows_allowed))
    if denied:
        raise ActionRefused(f"not allowed to act on flows {denied}", forbidden=True)
    by_flow: dict[str, list[dict]] = {}
    for e in found.values():
        by_flow.setdefault(e["flow"], []).append(e)
    return by_flow


def clean_comment(comment: str | None, required: bool) -> str | None:
    text = (comment or "").strip()
    if required and not text:
        raise ActionRefused("a dismissal needs a comment: why is the record not to be loaded?")
    if len(text) > MAX_COMMENT:
        raise ActionRefused(f"the comment is longer than {MAX_COMMENT} characters")
    return text or None


def record(conn, action: str, actor: str, flow: str, chosen: list[dict], comment: str | None,
           dag_run_id: str | None = None) -> int:
    """One audit row of a console action; the caller commits."""
    with conn.cursor() as cur:
        cur.execute("""INSERT INTO bridge.console_action (action, actor, flow, dag_id, quarantine_ids, business_keys,
                                                          comment, dag_run_id)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
                    (action, actor, flow, dag_of(flow), [e["id"] for e in chosen],
                     [e["business_key"] for e in chosen], comment, dag_run_id))
        return cur.fetchone()[0]


def dismiss(conn, ids: list[int], actor: str, comment: str | None, flows_allowed: list[str]) -> dict:
    """Dismiss open entries with the person's reason: one transaction for all of them and their audit rows."""
    reason = clean_comment(comment, required=True)
    by_flow = selected(conn, ids, flows_allowed)
    dismissed = 0
    for flow, chosen in by_flow.items():  # a failure leaves all of it uncommitted: the caller's connection closes
        dismissed += engine.resolve_quarantine(conn, flow, [e["business_key"] for e in chosen], "dismissed",
                                               by=actor, comment=reason)
        record(conn, "dismiss", actor, flow, chosen, reason)
    conn.commit()
    return {"dismissed": dismissed, "flows": sorted(by_flow)}
