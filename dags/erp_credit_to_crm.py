"""
### ERP customer credit & receivables → CRM Accounts (stage 1)

Every 30 minutes: reads `erp_api.customer_credit` (read-only `erp_read` connection) for customers whose figures
changed since the last run, gates the batch with `expectations/erp_credit_to_crm.json`, and writes to the linked
CRM account (`zoho_crm`): Credit_Limit, Credit_Used (open AR + open confirmed orders), Credit_Available,
Overdue_Amount, Overdue_Days, AR_0_30 / AR_31_60 / AR_61_90 / AR_90_Plus, YTD_Sales, MTD_Sales,
Last_Payment_Date, Credit_Status (OK / Near Limit / Over Limit / Overdue Block) and ERP_Amount_Currency — amounts
in the ERP's home currency. The ERP is master: a CRM-side edit of these fields is overwritten (and audited).

Customers are linked to accounts by `master_data_match`; unlinked ERP customers are skipped and counted.
Param `replay_quarantine` re-reads quarantined customers. Backfill re-reads an old interval without moving
the watermark.
"""

from __future__ import annotations

from airflow.sdk import Asset
from bridge_flows.mirror_dag import mirror_dag

dag = mirror_dag("erp_credit_to_crm", schedule="*/30 * * * *", doc_md=__doc__, tags=["stage-1", "erp-to-crm"],
                 outlets=[Asset("bridge://erp_credit_to_crm")])
