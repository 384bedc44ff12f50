"""The CRM sandbox's routes, one module per part of Zoho's API (include/sandbox/crm/app.py mounts them)."""
