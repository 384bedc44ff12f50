"""
### ERP drop folder: CSV files to and from an ERP that exchanges files, not tables

For ERPs without database or API access (older Yonyou U8 / Kingdee installs, "CSV export every night"). The
flows read and write the contract's tables in the **exchange database** (connection `erp_exchange`; point
`erp_read` / `erp_write` at it too); every 5 minutes this DAG moves them through the drop folder (connection
`erp_files`: a local folder or SFTP):

1. `receive_files` — the ERP's export files in `from_erp/` (stock, credit, order status, the answers to our
   documents, ...) into the exchange database, a manifest at a time, exactly once (by sha256); malformed lines
   are quarantined (flow `erp_file_exchange`) with file name and line number; a batch that cannot be trusted
   moves to `from_erp/rejected/` and fails the task with the reason (alert) on every run until dealt with.
2. `send_files` (beside it: a failed receive does not hold it back) — new inbound documents (customers, orders
   with their lines, forecast versions) as one CSV file per table and batch plus a manifest (rows, bytes, sha256)
   into `to_erp/`, written atomically, in the connection's encoding (GB18030 / GBK / UTF-8 with BOM).

Without an `erp_files` connection the ERP exchanges tables and both tasks skip, saying so.
docs/erp-contract.md, "CSV drop folder".
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task
from bridge_flows.defaults import task_defaults


@dag(
    dag_id="erp_file_exchange",
    schedule="*/5 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    tags=["erp", "drop-folder"],
    doc_md=__doc__,
    default_args=task_defaults("integration", 2),
)
def erp_file_exchange():
    @task
    def receive_files() -> dict:
        from erp_files.hook import skip_unless_configured

        from include.adapters.csv_folder import exchange

        skip_unless_configured()
        return exchange.receive_files()

    @task
    def send_files() -> dict:
        from erp_files.hook import skip_unless_configured

        from include.adapters.csv_folder import exchange

        skip_unless_configured()
        return exchange.send_files()

    # side by side, not one after the other: a batch the ERP got wrong never holds back our documents, and a
    # failed side still fails the run
    receive_files()
    send_files()


erp_file_exchange()
