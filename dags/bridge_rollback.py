"""
### Roll back one run of a flow (operations)

Manual. Restores what one run changed, from the audit log's before-images: CRM fields get the values they had
before the run (records the run created are deleted); ERP documents are reversed through the inbound contract —
orders the run created are cancelled, amendments amended back — never deleted. What cannot be reversed through the
contract (a customer created, a forecast version) is listed in `bridge.rollback_log` for the ERP team. The run's
ledger row becomes `rolled_back`; rolling back twice changes nothing more.

Params: `batch_id` (from `bridge.run_ledger`), or `flow` + `run_id` (the Airflow run id of the run to undo):

    airflow dags trigger bridge_rollback \\
        --conf '{"flow": "erp_credit_to_crm", "run_id": "scheduled__2026-12-01T02:00:00+00:00"}'
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task
from bridge_flows.defaults import task_defaults


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    tags=["operations", "rollback"],
    doc_md=__doc__,
    params={"batch_id": Param(None, type=["null", "string"], description="bridge.run_ledger batch id of the run"),
            "flow": Param(None, type=["null", "string"], description="or: the flow ..."),
            "run_id": Param(None, type=["null", "string"], description="... and the Airflow run id to undo")},
    default_args=task_defaults("operations", 0),
)
def bridge_rollback():
    @task
    def rollback(params: dict | None = None, dag_run=None) -> dict:
        from include.bridge import rollback as undo
        from include.bridge.runtime import Systems
        from include.flows import erp_reversals

        with Systems() as systems:
            return undo.run(systems, dag_run.run_id, reversals=erp_reversals(), batch_id=params["batch_id"],
                            flow=params["flow"], run_id=params["run_id"])

    rollback()


bridge_rollback()
