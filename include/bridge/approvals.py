"""Credit approvals recorded in the CRM, and who may give them.

An order on credit hold is released when Credit_Check is set to Approved — but only by a credit approver: a CRM
user whose id is in the Airflow Variable `bridge_credit_approvers` (a JSON list of CRM user ids). Who set it is
read from the record's timeline (Zoho's field history: the latest change of Credit_Check to Approved and the user
who made it), never from the free-text Approved_By field, which anyone who can edit the order can type. An
approval that cannot be attributed to an approver is ignored and the order says why (fail closed): it is
credit-checked like any other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

VARIABLE = "bridge_credit_approvers"
APPROVED = "Approved"


@dataclass(frozen=True)
class Approvers:
    ids: frozenset[str]
    problem: str | None = None      # why no approval can count (the Variable is malformed)


@dataclass(frozen=True)
class Approval:
    valid: bool
    approver: str | None = None     # "name (CRM user id)" of who approved
    reason: str | None = None       # why it does not count


def parse_approvers(text: str | None) -> Approvers:
    """The allowlist from the Variable's text. Unset: nobody may approve. Anything but a JSON list of CRM user ids
    (digits) makes every approval void until it is fixed, and says so."""
    if text is None or not str(text).strip():
        return Approvers(frozenset(), f"no credit approvers are configured (Airflow Variable {VARIABLE})")
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str | int) and str(v).isdigit() for v in value):
        return Approvers(frozenset(), f"the Airflow Variable {VARIABLE} is not a JSON list of CRM user ids")
    return Approvers(frozenset(str(v) for v in value))


def who_approved(timeline: list[dict], field: str = "Credit_Check") -> dict | None:
    """The user of the latest timeline entry (newest first) that set `field` to Approved, or None."""
    for entry in timeline:
        for change in entry.get("field_history") or []:
            if isinstance(change, dict) and change.get("api_name") == field and \
                    (change.get("_value") or {}).get("new") == APPROVED:
                done_by = entry.get("done_by")
                return done_by if isinstance(done_by, dict) else {}
    return None


def check(crm, module: str, record_id: str, approvers: Approvers) -> Approval:
    """Whether the order's Approved counts: set by a user on the allowlist, as the CRM's timeline records."""
    if approvers.problem:
        return Approval(False, reason=approvers.problem)
    try:
        done_by = who_approved(list(crm.timeline(module, record_id)))
    except Exception as exc:  # noqa: BLE001 - an approval that cannot be attributed does not count
        return Approval(False, reason=f"who approved cannot be read from the CRM ({type(exc).__name__})")
    if done_by is None:
        return Approval(False, reason="the CRM has no record of who set Credit_Check to Approved")
    user_id, name = str(done_by.get("id") or ""), str(done_by.get("name") or "?")[:60]
    if user_id not in approvers.ids:
        return Approval(False, reason=f"Credit_Check was set to Approved by {name} ({user_id or 'unknown user'}), "
                                      f"who is not a credit approver")
    return Approval(True, approver=f"{name} ({user_id})")
