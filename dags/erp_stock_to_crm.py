"""
### ERP stock → CRM Products (stage 1)

Every 15 minutes: reads the ERP stock availability (`erp_api.stock_availability`, through the read-only
`erp_read` connection) for every SKU that changed since the last run, validates the batch with the Great
Expectations suite `expectations/erp_stock_to_crm.json`, quarantines bad rows with the reason, and updates
the CRM product (`zoho_crm`): Qty_in_Stock, Available_Qty, Reserved_Qty, Incoming_Qty, Projected_14d (never
beyond 14 days), First_Shortage_Date, Below_Safety_Stock, per-warehouse detail, Stock_Synced_At — only for
products whose figures changed. Products falling below safety stock raise one alert per run.

Run ledger, quarantine and audit: schema `bridge` of `bridge_db`. Param `replay_quarantine` re-reads the
quarantined SKUs and marks them replayed once they load. Backfill (`airflow backfill create`) re-reads the
SKUs changed in the given interval without moving the watermark.
"""

from __future__ import annotations

from airflow.sdk import Asset
from bridge_flows.mirror_dag import mirror_dag

STOCK_ASSET = Asset("bridge://erp_stock_to_crm")

dag = mirror_dag("erp_stock_to_crm", schedule="*/15 * * * *", doc_md=__doc__, tags=["stage-1", "erp-to-crm"],
                 outlets=[STOCK_ASSET])
