"""
### ERP production dates → CRM order ship dates; capacity and material warnings (stage 3)

When the ERP has a new forecast plan or new fulfilment figures (Assets `bridge://crm_forecast_to_erp`,
`bridge://erp_fulfilment_to_crm`), and hourly at :20: two mirrors through the read-only `erp_read` connection.

1. `erp_production_to_crm` — the production orders behind each CRM sales order (`erp_api.production_schedule`):
   planned / actual start and finish and material availability → the CRM order's Expected_Ship_Date,
   Production_Status and a material warning (Capacity_Warning). A slip (the date moving later than the one the
   owner last saw) alerts the order's owner once, by IM (@-mention via the Variable `crm_owner_im_ids`).
2. `erp_capacity_warnings_to_crm` — per manufactured product and week: firm demand (open orders) + forecast
   demand (the ERP's active forecast) and planned production against `weekly_capacity`, and production orders
   waiting for late material → the CRM product's Capacity_Warning; one alert per product per run.

Gates: `expectations/erp_production_to_crm.json`, `expectations/erp_capacity_warnings_to_crm.json`. Only changed
values are written; param `replay_quarantine` re-reads quarantined keys.
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable
from bridge_flows.mirror_dag import mirror_dag

dag = mirror_dag(
    "erp_production_to_crm",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("20 * * * *", timezone="Asia/Shanghai"),
                                 assets=Asset("bridge://crm_forecast_to_erp") | Asset("bridge://erp_fulfilment_to_crm")),
    doc_md=__doc__, tags=["stage-3", "erp-to-crm"], outlets=[Asset("bridge://erp_production_to_crm")],
    parts=["erp_production_to_crm", "erp_capacity_warnings_to_crm"])
