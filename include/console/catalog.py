"""Which DAG runs a flow: the flow's name, but for the parts of a DAG that runs several flows in order
(dags/erp_history_to_crm.py, dags/erp_production_to_crm.py). A test holds this against the DAG files."""

from __future__ import annotations

DAG_OF_PART = {
    "erp_order_history_to_crm": "erp_history_to_crm",
    "erp_invoice_history_to_crm": "erp_history_to_crm",
    "erp_capacity_warnings_to_crm": "erp_production_to_crm",
}
# the DAG param that re-submits a flow's open quarantine (the console's replay triggers it, nothing else)
REPLAY_PARAM = "replay_quarantine"


def dag_of(flow: str) -> str:
    """The DAG that runs `flow` (its ledger rows, its quarantine, its permissions)."""
    base = flow.split(".", 1)[0]  # a flow's second suite (crm_forecast_to_erp.totals) is the flow's
    return DAG_OF_PART.get(base, base)

