"""Tryton behind the ERP contract (docs/erp-tryton.md).

Two halves, because Tryton and Airflow do not share a virtualenv (`requirements-tryton.txt` goes into
`.venv-tryton`, so the bridge's own requirements stay lean):
- run in Tryton's venv (`python -m include.adapters.tryton ...`): set up the company, seed the demo company, and the
  import job that drains `erp_inbound` into Tryton through its own model API (proteus), never by writing its tables;
- run in the bridge's venv (`build.py`): create the database, install the contract's SQL (`sql/erp_api.sql`: the read
  views over Tryton's tables; the inbound tables are the reference ERP's own file) and the two integration roles.
"""
