"""Zoho CRM hook and client (plugins/ is on Airflow's sys.path)."""
