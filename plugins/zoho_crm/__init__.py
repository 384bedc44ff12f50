"""Zoho CRM hook: an Airflow connection in, an include.zoho.client.ZohoCrmClient out (plugins/ is on sys.path)."""
