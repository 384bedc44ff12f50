"""Zoho CRM REST API v8 client (no Airflow here: plugins/zoho_crm's hook only turns a connection into one)."""
