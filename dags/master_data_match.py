"""
### Master-data matching: CRM Accounts ↔ ERP customers, CRM Products ↔ ERP SKUs (stage 1)

Hourly, and before the other stage-1 flows in `make demo`: links each CRM account to its ERP customer in
`bridge.id_map` — exact keys first (ERP customer code in Account_Number, unified social credit code), then
normalized names (full-/half-width, case, punctuation, 有限公司 / 股份有限公司 / Co., Ltd., city prefixes) with a
similarity score (settings: `include/mappings/master_data.yaml`). Confident matches are linked; ambiguous ones,
conflicts, invalid credit codes and duplicates inside either system go to the review list (`bridge.match_review`
and `master_data_review.csv` under `$BRIDGE_REPORTS_DIR`) — never merged silently. A person decides by adding a
link with match_rule `manual`. Products are linked by SKU; unit and tax-rate disagreements are listed too.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, task
from bridge_flows.defaults import task_defaults


@dag(
    schedule="0 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    tags=["stage-1", "master-data"],
    doc_md=__doc__,
    default_args=task_defaults("integration", 2),
)
def master_data_match():
    @task(outlets=[Asset("bridge://master_data_match")])
    def match(dag_run=None) -> dict:
        from bridge_alerts.notifier import alert_sender

        from include.bridge.runtime import Systems
        from include.flows.master_data_match import MATCH

        with Systems() as systems:
            return MATCH.run(systems, dag_run.run_id, alert_sender(systems.bridge()))

    match()


master_data_match()
